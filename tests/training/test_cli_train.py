import json
from pathlib import Path

from astrogen.cli import main
from astrogen.models.flowvae import load_flowvae

TINY = str(Path(__file__).resolve().parents[2] / "configs" / "flowvae_tiny.yaml")


def test_astrogen_train_tiny_config(tmp_path, capsys):
    out = tmp_path / "model.keras"
    argv = ["train", TINY, f"output={out}", f"run_dir={tmp_path / 'run'}",
            f"dataset.path={tmp_path / 'data'}"]
    assert main(argv) == 0
    assert out.is_file() and out.with_suffix(".json").is_file()
    model = load_flowvae(out)
    assert model is not None
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["complete"] is True
    # a typo'd key is one clear line, exit 2
    assert main(["train", TINY, "training.vae_step=3"]) == 2
    assert "vae_step" in capsys.readouterr().err


def test_train_logs_losses_resumes_and_extends_a_finished_run(tmp_path, capsys):
    """Without a terminal the losses go to the log; ``--resume`` says where it continues;
    a finished run is trained longer by raising a step count; lowering one is refused."""
    base = ["train", TINY, f"output={tmp_path / 'm.keras'}", f"run_dir={tmp_path / 'run'}",
            f"dataset.path={tmp_path / 'data'}", "training.progress=false"]
    assert main(base) == 0
    cap = capsys.readouterr()
    assert "flowvae: step 1 / 30 (vae): loss" in cap.err
    assert "flowvae: step 30 / 30 (flow): loss" in cap.err
    assert "last step: loss" in cap.out
    assert main([*base, "--resume", "training.flow_steps=14"]) == 0
    assert "resuming from step 30" in capsys.readouterr().err
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["complete"] is True and result["steps_done"] == 34
    capsys.readouterr()
    assert main([*base, "--resume", "training.flow_steps=12"]) == 2
    err = capsys.readouterr().err
    assert "training.flow_steps" in err and "may only increase" in err
    # a step count that is not growable stays fixed
    assert main([*base, "--resume", "training.flow_steps=14", "training.vae_steps=40"]) == 2
    assert "differs" in capsys.readouterr().err

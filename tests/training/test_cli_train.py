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

"""The CLI keeps TensorFlow's oneDNN kernels on and still prints no TensorFlow start-up noise."""
import os
import subprocess
import sys

SCRIPT = """
import os, sys
os.environ.pop("TF_ENABLE_ONEDNN_OPTS", None)
from astrogen.cli import main
rc = main(["-v", "0", "stages"])
import tensorflow as tf  # what a stage or a trainer would import next
tf.constant(1.0) + 1.0
print("ONEDNN=" + repr(os.environ.get("TF_ENABLE_ONEDNN_OPTS")), "RC=" + str(rc))
"""


def test_cli_leaves_onednn_on_and_quiet():
    env = {k: v for k, v in os.environ.items() if not k.startswith("TF_")}
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                         env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    last = out.stdout.strip().splitlines()[-1]
    assert last == "ONEDNN=None RC=0", last
    assert "oneDNN" not in out.stderr


def test_no_module_turns_onednn_off():
    """Nothing in the package sets TF_ENABLE_ONEDNN_OPTS (it would slow every run)."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "astrogen"
    hits = []
    for f in root.rglob("*.py"):
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Constant) and node.value == "TF_ENABLE_ONEDNN_OPTS":
                hits.append(str(f))
    assert hits == []


# ------------------------------------------------------------------ habits of a command line
PIPE = """name: t
seed: 1
output: {out}
stages:
  - name: catalog
    type: catalog.cosmos
    n_objects: 20
    chunk_size: 5
  - name: render
    type: galsim.parametric
    inputs: [catalog]
    stamp_size: 24
  - name: out
    type: output.catalog
    inputs: [render]
"""


def _pipeline(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text(PIPE.format(out=tmp_path / "out"))
    return str(f)


def test_global_options_are_accepted_after_the_subcommand(tmp_path, capsys):
    from astrogen.cli import main

    assert main(["stages", "-v", "0", "observe"]) == 0
    assert main(["-v", "0", "validate", _pipeline(tmp_path)]) == 0
    capsys.readouterr()
    # given after the subcommand it wins (``-v 0``: nothing printed)
    assert main(["-v", "1", "validate", _pipeline(tmp_path), "-v", "0"]) == 0
    assert main(["validate", _pipeline(tmp_path), "-v", "1"]) == 0
    out = capsys.readouterr().out
    assert out.count("is valid") == 2  # validate's report is its result, printed at any -v


def test_stages_type_describes_parameters_and_refuses_unknown_types(capsys):
    from astrogen.cli import main

    assert main(["stages", "blend.generate"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("blend.generate  [map]")
    assert '{"sersic", "bulge_disk"}' in out           # allowed values
    assert "Add the survey's sky-subtracted CCD noise." in out
    # "a, b, c" entries of the docstring document each of their parameters
    assert out.split("    margin = 28")[1].split("\n")[1].strip().startswith("Scene geometry")
    assert "catalog.cosmos" not in out                  # only the type asked for
    assert main(["stages", "blend.generat"]) == 2
    err = capsys.readouterr().err
    assert "TYPE" in err and "blend.generat" in err and "Did you mean 'blend.generate'" in err


def test_every_stage_parameter_is_documented():
    import astrogen.stages  # noqa: F401
    from astrogen.registry import STAGES

    missing = [f"{name}.{k}" for name, cls in STAGES.items()
               if cls.__module__.startswith("astrogen.")  # not other tests' plug-ins
               for k in cls.parameters() if k not in cls.parameter_docs()]
    assert missing == []


def test_finished_runs_are_not_overwritten_by_default(tmp_path, capsys):
    from astrogen.cli import main

    f = _pipeline(tmp_path)
    assert main(["run", f, "-v", "0"]) == 0
    prov = tmp_path / "out" / "provenance.json"
    first = prov.read_text()
    capsys.readouterr()
    assert main(["run", f]) == 2
    err = capsys.readouterr().err
    assert "OutputError" in err and "output" in err and "--overwrite" in err
    assert prov.read_text() == first
    assert main(["run", f, "--skip-existing"]) == 0
    assert prov.read_text() == first
    assert main(["run", f, "--overwrite", "-v", "0"]) == 0
    assert prov.read_text() != first                    # a new run (new finish time)
    import pytest

    with pytest.raises(SystemExit) as e:  # argparse: the two options exclude each other
        main(["run", f, "--overwrite", "--skip-existing"])
    assert e.value.code == 2


def test_batch_log_gets_progress_lines_and_the_log_file_everything(tmp_path):
    """stderr to a file (a SLURM log): per-chunk lines; ``--log-file`` gets them with times,
    and a failing run's error."""
    f = _pipeline(tmp_path)
    log = tmp_path / "run.log"
    r = subprocess.run([sys.executable, "-m", "astrogen", "run", f, "--log-file", str(log)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "chunk 1 / 4 done (25 %)" in r.stderr and "chunk 4 / 4 done (100 %)" in r.stderr
    text = log.read_text()
    assert "INFO astrogen: t: chunk 4 / 4 done" in text
    assert text.splitlines()[0].endswith(f"run {f} --log-file {log}")
    r = subprocess.run([sys.executable, "-m", "astrogen", "run", f, "--log-file", str(log)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2
    assert "ERROR astrogen: error: OutputError: output" in log.read_text()


def test_overrides_accept_the_key_paths_errors_print(tmp_path):
    from astrogen.pipeline.config import apply_overrides, load_config

    cfg = load_config(_pipeline(tmp_path))
    by_name = apply_overrides(cfg, ["stages.render.stamp_size=32"]).data
    by_path = apply_overrides(cfg, ["stages[1].stamp_size=32"]).data
    by_index = apply_overrides(cfg, ["stages.1.stamp_size=32"]).data
    assert by_name == by_path == by_index
    assert by_path["stages"][1]["stamp_size"] == 32
    assert apply_overrides(cfg, ["stages[render].stamp_size=40"]).data["stages"][1][
        "stamp_size"] == 40


def test_bad_override_key_paths_name_the_key(tmp_path):
    import pytest

    from astrogen.errors import AstrogenError
    from astrogen.pipeline.config import apply_overrides, load_config

    cfg = load_config(_pipeline(tmp_path))
    cases = {"stages[7].x=1": "stages[7]", "stages[1]x=1": "override",
             "stages..x=1": "override", "[1].x=1": "override", "seed[0]=1": "seed[0]"}
    for item, key in cases.items():
        with pytest.raises(AstrogenError) as e:
            apply_overrides(cfg, [item])
        assert e.value.key == key, (item, e.value)

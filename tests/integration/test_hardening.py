"""Issue 14 (and issue 13 item 3): what the bad-input corpus cannot show by one error line.

* GalSim evaluation is refused by default and accepted with ``--allow-eval`` / ``allow_eval``;
* the same pipeline written to two output folders gives byte-identical FITS files
  (``AG_CHASH`` and the HISTORY cards no longer hold the output path);
* ``validate`` finds a column a later stage needs, naming the stage, its line, the column
  and what provides it, before anything runs;
* the runner is the one error boundary in Python too: a bug in a stage becomes a
  ``StageError`` naming the stage, a full disk an ``EnvironmentFailure``, and the output
  folder is removed in both cases;
* a "billion laughs" YAML is refused at once (it took 43 s and a MemoryError before).
"""
from __future__ import annotations

import errno
import textwrap
import time
from pathlib import Path

import pytest
from astropy.io import fits
from astropy.table import Table

from astrogen.cli import main
from astrogen.errors import (AstrogenError, ConfigError, EnvironmentFailure,
                             PipelineGraphError, StageError)
from astrogen.pipeline.build import build_pipeline
from astrogen.pipeline.config import load_config
from astrogen.pipeline.runner import run_pipeline


def _pipeline(out, psf="", n_objects=6):
    return textwrap.dedent(f"""\
    name: hardening
    seed: 11
    output: {out}
    stages:
      - name: catalog
        type: catalog.cosmos
        n_objects: {n_objects}
        chunk_size: 3
      - name: positions
        type: catalog.positions
        inputs: [catalog]
        survey: lsst_i
        size: 64
      - name: render
        type: galsim.parametric
        inputs: [positions]
        stamp_size: 16
      - name: observe
        type: observe
        inputs: [render]
        survey: lsst_i
        stamp_size: 8{psf}
      - name: scene
        type: scene
        inputs: [render]
        survey: lsst_i
        stamp_size: 8
      - name: stamps
        type: output.stamps
        inputs: [observe]
      - name: truth
        type: output.catalog
        inputs: [observe]
    """)


EVAL_PSF = "\n        psf: {type: Gaussian, fwhm: '$0.35 * 2'}"


def test_eval_is_off_by_default_and_allowed_on_request(tmp_path, capsys):
    path = tmp_path / "p.yaml"
    path.write_text(_pipeline(tmp_path / "out", psf=EVAL_PSF))
    assert main(["validate", str(path)]) == 2
    assert "--allow-eval" in capsys.readouterr().err
    assert main(["validate", str(path), "--allow-eval"]) == 0
    with pytest.raises(ConfigError, match="GalSim evaluation"):
        build_pipeline(load_config(path))
    p = build_pipeline(load_config(path), allow_eval=True)
    psf = p.node("observe").stage.psf
    assert psf.fwhm == pytest.approx(0.7)  # GalSim evaluated '$0.35 * 2'
    # the permission does not leak out of the call that gave it
    with pytest.raises(ConfigError):
        build_pipeline(load_config(path))


def test_the_pwned_file_of_the_issue_is_not_created(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    psf = "\n        psf: {type: Gaussian, fwhm: \"$__import__('os').system('touch PWNED') or 0.7\"}"
    path = tmp_path / "p.yaml"
    path.write_text(_pipeline(tmp_path / "out", psf=psf))
    for cmd in (["validate", str(path)], ["run", str(path), "--no-progress"]):
        assert main(cmd) == 2
        assert not (tmp_path / "PWNED").exists()
    assert not (tmp_path / "out").exists()


def test_same_pipeline_in_two_folders_gives_byte_identical_fits(tmp_path):
    outs = [tmp_path / "first", tmp_path / "elsewhere" / "second"]
    results = []
    for out in outs:
        path = tmp_path / f"{out.name}.yaml"
        path.write_text(_pipeline(out))
        results.append(run_pipeline(build_pipeline(load_config(path)), progress=False))
    names = sorted(f.name for f in results[0].files if f.suffix == ".fits")
    assert names == ["scene.fits", "stamps.fits", "truth_catalog.fits"]
    for name in names:
        a, b = ((out / name).read_bytes() for out in outs)
        assert a == b, name
        header = fits.getheader(outs[0] / name)
        assert str(outs[0]) not in repr(header)
    assert results[0].files and fits.getheader(outs[0] / "stamps.fits")["AG_CHASH"] == \
        fits.getheader(outs[1] / "stamps.fits")["AG_CHASH"]


def test_validate_finds_a_column_a_later_stage_needs(tmp_path, capsys):
    cat = tmp_path / "cat.fits"
    Table({"mag": [22.0, 23.0], "hlr": [0.2, 0.3], "beta": [0.0, 1.0],
           "sersic_n": [1.0, 2.0]}).write(cat)
    text = textwrap.dedent(f"""\
    name: columns
    seed: 1
    output: {tmp_path / 'out'}
    stages:
      - name: catalog
        type: catalog.read
        file_name: {cat}
      - name: positions
        type: catalog.positions
        inputs: [catalog]
        size: 64
      - name: my_render
        type: galsim.parametric
        inputs: [positions]
        stamp_size: 16
      - name: truth
        type: output.catalog
        inputs: [my_render]
    """)
    path = tmp_path / "p.yaml"
    path.write_text(text)
    with pytest.raises(PipelineGraphError) as e:
        build_pipeline(load_config(path))
    msg = str(e.value)
    for frag in ("stages[2] (line 12)", "stage 'my_render'", "galsim.parametric",
                 "column 'q'", "positions (catalog.positions) <- catalog (catalog.read)",
                 "defaults: {q:"):
        assert frag in msg, (frag, msg)
    # the fix it suggests works
    path.write_text(text.replace(f"file_name: {cat}", f"file_name: {cat}\n    defaults: {{q: 0.7}}"))
    assert main(["validate", str(path)]) == 0
    assert not (tmp_path / "out").exists()


def test_a_bug_or_a_full_disk_in_a_stage_names_the_stage_and_cleans_up(tmp_path, monkeypatch):
    from astrogen.stages.galsim_stages import ParametricGalaxies
    from astrogen.stages.output import CatalogOutput

    path = tmp_path / "p.yaml"
    out = tmp_path / "out"
    path.write_text(_pipeline(out))

    def bug(self, table):
        return table["no such column"]

    monkeypatch.setattr(ParametricGalaxies, "process", bug)
    with pytest.raises(StageError) as e:
        run_pipeline(build_pipeline(load_config(path)), progress=False)
    assert "stage 'render'" in str(e.value) and "KeyError" in str(e.value)
    assert isinstance(e.value, RuntimeError) and e.value.exit_status == 2
    assert not out.exists()
    monkeypatch.undo()

    def full(self, index, batch):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(CatalogOutput, "consume", full)
    with pytest.raises(EnvironmentFailure) as e:
        run_pipeline(build_pipeline(load_config(path)), progress=False)
    assert "stage 'truth'" in str(e.value) and e.value.exit_status == 3
    assert not out.exists()


def test_error_in_an_existing_output_folder_keeps_what_was_there(tmp_path, monkeypatch):
    from astrogen.stages.output import StampsOutput

    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    path = tmp_path / "p.yaml"
    path.write_text(_pipeline(out))
    monkeypatch.setattr(StampsOutput, "finalize", lambda self: 1 / 0)
    with pytest.raises(AstrogenError):
        run_pipeline(build_pipeline(load_config(path)), progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["mine.txt"]


def test_alias_bomb_is_refused_quickly(tmp_path):
    lines = ["a: &a [" + ", ".join(['"lol"'] * 10) + "]"]
    for prev, cur in zip("abcdefg", "bcdefgh"):
        lines.append(f"{cur}: &{cur} [" + ", ".join([f"*{prev}"] * 10) + "]")
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(lines) + "\n")
    assert len(path.read_bytes()) < 600
    t0 = time.perf_counter()
    with pytest.raises(ConfigError, match="expands to more than"):
        load_config(path)
    assert time.perf_counter() - t0 < 5.0


def test_shipped_pipelines_still_validate(capsys):
    root = Path(__file__).resolve().parents[2] / "pipelines"
    for path in sorted(root.glob("*.yaml")):
        assert main(["validate", str(path)]) == 0, (path, capsys.readouterr().err)


def test_python_api_constructors_check_their_arguments_too():
    from astrogen.stages.ddpm import DDPMGenerate
    from astrogen.stages.galsim_stages import ParametricGalaxies

    with pytest.raises(ConfigError, match=r"^guidance: must be a number in \[0, 100\]"):
        DDPMGenerate(guidance=-2.0)
    with pytest.raises(ConfigError, match=r"^stamp_size: .*Received: stamp_size=200000"):
        ParametricGalaxies(stamp_size=200000)
    assert ParametricGalaxies(stamp_size=16).stamp_size == 16


def test_a_sink_that_hides_its_file_name_cannot_overwrite_another(tmp_path):
    """Build refuses two sinks declaring the same file; a sink that does not declare its
    files is caught when it writes one another sink wrote, and the run is removed."""
    from astrogen.batch import StampBatch
    from astrogen.registry import STAGES
    from astrogen.stages.base import Stage

    class Copycat(Stage):
        """Writes stamps.fits without saying so."""

        kind = "sink"
        input_types = (StampBatch,)

        def __init__(self):
            pass

        def output_files(self, params):
            return []

        def consume(self, index, batch):
            pass

        def finalize(self):
            path = self.ctx.output_dir / "stamps.fits"
            path.write_bytes(b"not what the stamps sink wrote")
            return [path]

    STAGES.register("hardening.copycat", Copycat, replace=True)
    out = tmp_path / "out"
    path = tmp_path / "p.yaml"
    path.write_text(_pipeline(out) + "  - name: copycat\n    type: hardening.copycat\n"
                                     "    inputs: [observe]\n")
    with pytest.raises(AstrogenError) as e:
        run_pipeline(build_pipeline(load_config(path)), progress=False)
    assert "stage 'copycat'" in str(e.value) and "stage 'stamps'" in str(e.value)
    assert not out.exists()

"""A table of bad pipelines and bad catalogs: each gives its clear one-line error (naming the
key or column, with the received value) through the CLI, exit status 2, and leaves no output."""
import os

import numpy as np
import pytest
from astropy.table import Table

from astrogen.cli import main
from pipeline_text import small_pipeline


def _edit(text, old, new):
    assert old in text, old
    return text.replace(old, new, 1)


def _catalog_pipeline(out, cat):
    return f"""\
name: readcat
seed: 1
output: {out}
stages:
  - name: catalog
    type: catalog.read
    file_name: {cat}
    chunk_size: 4
  - name: render
    type: galsim.parametric
    inputs: [catalog]
    stamp_size: 16
  - name: truth
    type: output.catalog
    inputs: [render]
"""


def _bad_catalog(tmp_path, **cols):
    base = {"mag": [22.0, 23.0, 24.0], "hlr": [0.2, 0.3, 0.4], "q": [0.5, 0.6, 0.7],
            "beta": [0.0, 10.0, 20.0], "sersic_n": [1.0, 2.0, 3.0]}
    base.update(cols)
    base = {k: v for k, v in base.items() if v is not None}
    path = tmp_path / "cat.fits"
    Table(base).write(path, overwrite=True)
    return path


# (id, edit(text, tmp_path) -> text, expected fragments of the error line)
PIPELINE_CASES = [
    ("unknown_stage_type", lambda t, p: _edit(t, "type: observe", "type: obsreve"),
     ["stages[3].type", "Did you mean 'observe'", "type='obsreve'"]),
    ("typo_key", lambda t, p: _edit(t, "stamp_size: 32", "stamp_sise: 32"),
     ["stages[2].stamp_sise", "Did you mean 'stamp_size'", "line"]),
    ("wrong_type_value", lambda t, p: _edit(t, "stamp_size: 32", "stamp_size: big"),
     ["stages[2].stamp_size", "integer", "stamp_size='big'"]),
    ("odd_stamp", lambda t, p: _edit(t, "stamp_size: 32", "stamp_size: 33"),
     ["stages[2].stamp_size", "even"]),
    ("negative_size", lambda t, p: _edit(t, "size: 128", "size: -5"),
     ["stages[1].size", "size=-5"]),
    ("missing_input", lambda t, p: _edit(t, "inputs: [render]\n    survey: lsst_i\n    stamp_size: 16",
                                         "inputs: [rendr]\n    survey: lsst_i\n    stamp_size: 16"),
     ["stages[3].inputs[0]", "'rendr'", "Did you mean 'render'"]),
    ("cyclic_inputs", lambda t, p: _edit(t, "inputs: [catalog]", "inputs: [render]"),
     ["cyclic", "render", "positions"]),
    ("self_input", lambda t, p: _edit(t, "inputs: [catalog]", "inputs: [positions]"),
     ["cyclic", "positions -> positions"]),
    ("wrong_input_kind", lambda t, p: _edit(t, "inputs: [render]\n    survey: lsst_i\n    stamp_size: 16",
                                            "inputs: [catalog]\n    survey: lsst_i\n    stamp_size: 16"),
     ["stages[3].inputs[0]", "produces Table", "expects StampBatch"]),
    ("sink_as_input", lambda t, p: _edit(t, "inputs: [observe]\n  - name: truth",
                                         "inputs: [observe]\n  - name: truth2\n    type: output.catalog\n    inputs: [stamps]\n  - name: truth"),
     ["produces nothing", "output stage"]),
    ("unknown_top_key", lambda t, p: "sed: 3\n" + t, ["sed", "Did you mean 'seed'"]),
    ("missing_seed", lambda t, p: t.replace("seed: 7\n", ""), ["needs the key 'seed'"]),
    ("seed_not_int", lambda t, p: _edit(t, "seed: 7", "seed: seven"), ["seed", "int"]),
    ("duplicate_stage_name", lambda t, p: _edit(t, "name: truth", "name: stamps"),
     ["stages[6].name", "already used"]),
    ("unknown_survey", lambda t, p: _edit(t, "survey: lsst_i\n    stamp_size: 16", "survey: lsst_q\n    stamp_size: 16"),
     ["stages[3].survey", "lsst_i"]),
    ("bad_psf", lambda t, p: _edit(t, "survey: lsst_i\n    stamp_size: 16",
                                   "survey: lsst_i\n    psf: {type: Kolmogorov, fwhm: -1}\n    stamp_size: 16"),
     ["stages[3].psf", "GalSim"]),
    ("unknown_module", lambda t, p: "modules: [no_such_plugin]\n" + t, ["modules[0]", "no_such_plugin"]),
    ("bad_yaml", lambda t, p: t + "  - name: [unclosed\n", ["not valid YAML", "line"]),
    ("missing_required_param", lambda t, p: _edit(t, "    n_objects: 24\n", ""),
     ["stages[0]", "needs the key 'n_objects'"]),
    ("unwritable_output", lambda t, p: t.replace(f"output: {p / 'out'}", "output: /proc/astrogen_out"),
     ["output", "cannot be written"]),
    ("output_is_file", lambda t, p: (p / "afile").write_text("x") and t.replace(f"output: {p / 'out'}", f"output: {p / 'afile'}"),
     ["output", "not a folder"]),
    ("bad_file_name", lambda t, p: _edit(t, "n_max: 9", "n_max: 9\n    file_name: ../escape.png"),
     ["stages[7].file_name", "relative file name"]),
    ("bad_mag_range", lambda t, p: _edit(t, "n_objects: 24", "n_objects: 24\n    mag_range: [26, 20]"),
     ["mag_range", "low < high"]),
]

CATALOG_CASES = [
    ("nan_magnitude", {"mag": [22.0, np.nan, 24.0]}, ["column 'mag'", "row=1", "finite"]),
    ("negative_size", {"hlr": [0.2, -0.3, 0.4]}, ["column 'hlr'", "row=1", "hlr=-0.3"]),
    ("axis_ratio_above_one", {"q": [0.5, 1.5, 0.7]}, ["column 'q'", "q=1.5"]),
    ("missing_column", {"sersic_n": None}, ["column 'sersic_n'", "missing"]),
]


def _run_cli(argv, capsys):
    status = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    return status, err


@pytest.mark.parametrize("case,edit,fragments", PIPELINE_CASES, ids=[c[0] for c in PIPELINE_CASES])
def test_bad_pipeline(tmp_path, capsys, case, edit, fragments):
    out = tmp_path / "out"
    text = edit(small_pipeline(out), tmp_path)
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    before = sorted(os.listdir(tmp_path))
    status, err = _run_cli(["run", str(path), "--no-progress"], capsys)
    assert status == 2
    assert len(err) == 1 and err[0].startswith("astrogen: error:"), err
    for frag in fragments:
        assert frag in err[0], (frag, err[0])
    assert "Traceback" not in err[0]
    assert not out.exists()
    assert sorted(os.listdir(tmp_path)) == before


@pytest.mark.parametrize("case,cols,fragments", CATALOG_CASES, ids=[c[0] for c in CATALOG_CASES])
def test_bad_catalog(tmp_path, capsys, case, cols, fragments):
    out = tmp_path / "out"
    cat = _bad_catalog(tmp_path, **cols)
    path = tmp_path / "bad.yaml"
    path.write_text(_catalog_pipeline(out, cat))
    status, err = _run_cli(["run", str(path), "--no-progress"], capsys)
    assert status == 2 and len(err) == 1, err
    for frag in fragments:
        assert frag in err[0], (frag, err[0])
    assert not out.exists()


def test_validate_names_the_problem_without_writing(tmp_path, capsys):
    out = tmp_path / "out"
    path = tmp_path / "p.yaml"
    path.write_text(small_pipeline(out).replace("stamp_size: 32", "stamp_sise: 32"))
    status, err = _run_cli(["validate", str(path)], capsys)
    assert status == 2 and "stamp_sise" in err[0]
    assert not out.exists()

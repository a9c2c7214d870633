"""The bad-input corpus (issue 14): every family of bad input gives one clear line.

Each case builds its input files in a fresh folder, runs ``astrogen validate`` or ``astrogen
run`` (in process through :func:`astrogen.cli.main`; a few in a subprocess, where the real
process boundary matters) and asserts:

* the exit status (2 for bad input, 3 when the environment failed);
* exactly one line on stderr, ``astrogen: error: ...``, and no traceback;
* the YAML key, catalog column or file named in that line (and the value where known);
* nothing left on disk: the folder holds exactly the input files it held before, no output
  folder, no work folder, no temporary file.

Families: YAML structure and hostile YAML (alias bombs, recursion, non-string keys, non-UTF-8),
names (path traversal, non-ASCII, FITS header limits), GalSim evaluation (code execution),
plug-in modules, every stage type's parameters (types, ranges, upper bounds), the memory a
chunk or a scene would need, catalogs (empty, corrupt, truncated, bad values, bad units),
model files (missing, corrupt, truncated, sidecar not JSON), overrides, sinks writing the
same file, silent wrong results (gain 0, negative guidance, tiny hlr, unparsable TUNIT),
and file-system and stage faults injected at each step of a run (disk full, permission
denied, out of memory, a bug in a stage, a truncated ledger on ``--resume``).
"""
from __future__ import annotations

import errno
import inspect
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from astropy.table import Table

from astrogen.cli import main

REPO = Path(__file__).resolve().parents[2]
MODELS = REPO / "astrogen" / "data" / "models"


# ---------------------------------------------------------------------------------- pipelines
def base_pipeline(out, extra_top="", n_objects=6, chunk_size=3):
    """A fast valid pipeline: COSMOS catalog -> positions -> GalSim -> observe -> sinks."""
    return extra_top + textwrap.dedent(f"""\
    name: corpus
    seed: 5
    output: {out}
    stages:
      - name: catalog
        type: catalog.cosmos
        n_objects: {n_objects}
        chunk_size: {chunk_size}
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
        stamp_size: 8
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


def read_pipeline(out, cat, extra=""):
    return textwrap.dedent(f"""\
    name: readcat
    seed: 1
    output: {out}
    stages:
      - name: catalog
        type: catalog.read
        file_name: {cat}
        chunk_size: 4
    """) + extra + (
        "  - name: render\n"
        "    type: galsim.parametric\n"
        "    inputs: [catalog]\n"
        "    stamp_size: 16\n"
        "  - name: truth\n"
        "    type: output.catalog\n"
        "    inputs: [render]\n")


def one_stage_pipeline(out, stage_yaml, after=""):
    """The stage under test, first (its constructor runs before any other stage is built and
    before any graph check, so any stage type can be tested here, and fast), then the COSMOS
    catalog it reads."""
    return textwrap.dedent(f"""\
    name: params
    seed: 1
    output: {out}
    stages:
      - name: probe
    """) + textwrap.indent(stage_yaml, "    ") + "\n" + (
        "  - name: catalog\n"
        "    type: catalog.cosmos\n"
        "    n_objects: 4\n") + after


def _sub(text, old, new):
    assert old in text, old
    return text.replace(old, new, 1)


GOOD_CATALOG = {"mag": [22.0, 23.0, 24.0], "hlr": [0.2, 0.3, 0.4], "q": [0.5, 0.6, 0.7],
                "beta": [0.0, 10.0, 20.0], "sersic_n": [1.0, 2.0, 3.0]}


def write_catalog(d: Path, name="cat.fits", **cols):
    base = dict(GOOD_CATALOG)
    base.update(cols)
    base = {k: v for k, v in base.items() if v is not None}
    path = d / name
    Table(base).write(path, overwrite=True)
    return path


# ---------------------------------------------------------------------------------- the cases
# Every case is ``(id, make)``; ``make(d)`` writes what the case needs into folder ``d`` and
# returns ``(argv, fragments, status)`` or ``(argv, fragments, status, options)`` where
# ``options`` may hold ``subprocess=True`` or ``patch=callable(monkeypatch)``.
CASES: list = []


def case(cid):
    def deco(fn):
        CASES.append((cid, fn))
        return fn
    return deco


def add(cid, make):
    CASES.append((cid, make))


def _pipe(d: Path, text: str) -> Path:
    p = d / "pipe.yaml"
    p.write_text(text)
    return p


def validate_text(edit, frags, status=2, command="validate", extra_args=()):
    """A case that edits the base pipeline text and runs validate (or run)."""
    def make(d):
        text = edit(base_pipeline(d / "out"), d)
        return [command, str(_pipe(d, text)), *extra_args], frags, status
    return make


def run_text(edit, frags, status=2):
    return validate_text(edit, frags, status, command="run", extra_args=("--no-progress",))


def raw_file(data: bytes, frags, status=2):
    def make(d):
        p = d / "pipe.yaml"
        p.write_bytes(data)
        return ["validate", str(p)], frags, status
    return make


# --- YAML structure and hostile YAML --------------------------------------------------------
BOMB = b"".join(
    [b"a: &a [" + b",".join([b'"lol"'] * 10) + b"]\n"]
    + [f"{c}: &{c} [{','.join(['*' + p] * 10)}]\n".encode()
       for p, c in zip("abcdefg", "bcdefgh")])
add("yaml_alias_bomb", raw_file(BOMB, ["expands to more than", "line"]))
add("yaml_alias_bomb_in_stage", lambda d: (
    ["validate", str(_pipe(d, _sub(base_pipeline(d / "out"), "size: 64", "size: 64\n    ra: " + (
        BOMB.decode().replace("\n", ", ").replace(": &", ": &").rstrip(", ")
        .join(["{", "}"])))))],
    ["expands to more than", "stages[1].ra"], 2))
add("yaml_recursive_list", raw_file(b"a: &s [*s]\nname: x\n", ["recursive alias", "line 1"]))
add("yaml_recursive_map", raw_file(b"name: x\nb: &m {c: *m}\n", ["recursive alias", "line 2"]))
add("yaml_recursive_in_stage", lambda d: (
    ["validate", str(_pipe(d, _sub(base_pipeline(d / "out"), "size: 64", "size: &z [*z]")))],
    ["recursive alias", "stages[1].size"], 2))
add("yaml_list_key", raw_file(b"? [a, b]\n: 1\nname: x\n", ["mapping key", "line 1"]))
add("yaml_map_key", raw_file(b"? {a: 1}\n: 1\n", ["mapping key", "line 1"]))
add("yaml_int_key", raw_file(b"name: x\n1: 2\n", ["mapping key must be a string", "line 2"]))
add("yaml_bool_key", raw_file(b"name: x\nyes: 2\n", ["mapping key must be a string", "line 2"]))
add("yaml_null_key", raw_file(b"name: x\n~: 2\n", ["mapping key must be a string"]))
add("yaml_float_key", raw_file(b"name: x\n1.5: 2\n", ["mapping key must be a string"]))
add("yaml_key_in_stage_not_string", lambda d: (
    ["validate", str(_pipe(d, _sub(base_pipeline(d / "out"), "stamp_size: 16", "16: 16")))],
    ["mapping key must be a string", "stages[2]", "line 17"], 2))
add("yaml_not_utf8_latin1", raw_file("name: caf\u00e9\nseed: 1\n".encode("latin-1"),
                                     ["not UTF-8", "line 1", "0xe9"]))
add("yaml_not_utf8_line3", raw_file(b"name: x\nseed: 1\n# \xff\xfe\n", ["not UTF-8", "line 3"]))
add("yaml_utf16", raw_file("name: x\n".encode("utf-16"), ["not UTF-8"]))
add("yaml_invalid_syntax", raw_file(b"name: x\nstages: [\n", ["not valid YAML", "line"]))
add("yaml_bad_indent", raw_file(b"name: x\n  seed: 1\n seed: 2\n", ["not valid YAML", "line"]))
add("yaml_tab_indent", raw_file(b"name: x\nstages:\n\t- a\n", ["not valid YAML", "line 3"]))
add("yaml_empty_file", raw_file(b"", ["empty"]))
add("yaml_only_comment", raw_file(b"# nothing\n", ["empty"]))
add("yaml_top_level_list", raw_file(b"- a\n- b\n", ["must be a YAML mapping", "list"]))
add("yaml_top_level_scalar", raw_file(b"hello\n", ["must be a YAML mapping", "str"]))
add("yaml_deep_nesting", raw_file(b"name: x\na: " + b"[" * 100 + b"]" * 100 + b"\n",
                                  ["nested more than", "line 2"]))
add("yaml_very_deep_nesting", raw_file(b"a: " + b"[" * 5000 + b"]" * 5000 + b"\n",
                                       ["nested"]))
add("yaml_duplicate_top_key", validate_text(lambda t, d: t + "seed: 6\n",
                                            ["seed", "duplicate key"]))
add("yaml_duplicate_stage_key", validate_text(
    lambda t, d: _sub(t, "stamp_size: 16", "stamp_size: 16\n    stamp_size: 18"),
    ["stages[2].stamp_size", "duplicate key", "line 18"]))
add("yaml_python_tag", raw_file(b"name: !!python/object/apply:os.system ['touch PWNED']\n",
                                ["tag", "python/object/apply", "line 1"]))
add("yaml_python_scalar_tag", raw_file(b"name: !!python/name:os.system\n",
                                       ["not valid YAML", "line 1"]))
add("file_missing", lambda d: (["validate", str(d / "nope.yaml")], ["file", "not found"], 2))
add("file_is_folder", lambda d: (["validate", str(d)], ["not found"], 2))

# --- top-level keys ---------------------------------------------------------------------------
add("top_unknown_key", validate_text(lambda t, d: "sed: 3\n" + t, ["sed", "Did you mean 'seed'"]))
add("top_missing_name", validate_text(lambda t, d: t.replace("name: corpus\n", ""),
                                      ["needs the key 'name'"]))
add("top_missing_seed", validate_text(lambda t, d: t.replace("seed: 5\n", ""),
                                      ["needs the key 'seed'"]))
add("top_missing_output", validate_text(lambda t, d: "\n".join(
    x for x in t.splitlines() if not x.startswith("output:")) + "\n", ["needs the key 'output'"]))
add("top_missing_stages", validate_text(lambda t, d: t.split("stages:")[0],
                                        ["needs the key 'stages'"]))
add("top_seed_string", validate_text(lambda t, d: _sub(t, "seed: 5", "seed: five"),
                                     ["seed", "five"]))
add("top_seed_float", validate_text(lambda t, d: _sub(t, "seed: 5", "seed: 5.5"), ["seed", "5.5"]))
add("top_seed_negative", validate_text(lambda t, d: _sub(t, "seed: 5", "seed: -1"), ["seed", "-1"]))
add("top_seed_huge", validate_text(lambda t, d: _sub(t, "seed: 5", "seed: " + "9" * 40),
                                   ["seed", "2**63"]))
add("top_seed_bool", validate_text(lambda t, d: _sub(t, "seed: 5", "seed: true"), ["seed"]))
add("top_stages_not_list", validate_text(lambda t, d: t.split("stages:")[0] + "stages: 3\n",
                                         ["stages", "list"]))
add("top_stages_empty", validate_text(lambda t, d: t.split("stages:")[0] + "stages: []\n",
                                      ["stages", "no stages"]))
add("top_stage_not_mapping", validate_text(lambda t, d: t + "  - just a string\n",
                                           ["stages[7]", "mapping"]))
add("top_modules_not_list", validate_text(lambda t, d: "modules: os\n" + t, ["modules", "list"]))
add("top_name_not_string", validate_text(lambda t, d: _sub(t, "name: corpus", "name: [a]"),
                                         ["name", "str"]))
add("top_output_is_file", validate_text(
    lambda t, d: ((d / "afile").write_text("x"), t.replace(f"output: {d / 'out'}",
                                                           f"output: {d / 'afile'}"))[1],
    ["output", "not a folder"]))
add("top_output_unwritable", validate_text(
    lambda t, d: t.replace(f"output: {d / 'out'}", "output: /proc/astrogen_out"),
    ["output", "cannot be written"]))
add("top_output_empty", validate_text(
    lambda t, d: t.replace(f"output: {d / 'out'}", "output: ' '"), ["output", "folder path"]))
add("top_executor_unknown", validate_text(lambda t, d: "executor: cloud\n" + t,
                                          ["executor", "cloud"]))

# --- names --------------------------------------------------------------------------------------
for cid, bad in [("traversal_parent", "../../x"), ("traversal_dotdot", ".."),
                 ("traversal_abs", "/tmp/astrogen_escape"), ("traversal_slash", "a/b"),
                 ("traversal_backslash", "a\\\\b"), ("hidden_dot", ".work"),
                 ("non_ascii", "r\u00e9nder"), ("space", "'my stage'"),
                 ("empty", "''"), ("too_long", "s" * 100), ("control_char", '"a\\tb"'),
                 ("leading_dash", "-x"), ("emoji", "\U0001F600")]:
    add(f"stage_name_{cid}", validate_text(
        lambda t, d, bad=bad: _sub(t, "name: truth", f"name: {bad}"),
        ["stages[6].name", "line 31", "letters, digits"]))
add("stage_name_not_string", validate_text(lambda t, d: _sub(t, "name: truth", "name: 7"),
                                           ["stages[6].name", "string"]))
add("stage_name_duplicate", validate_text(lambda t, d: _sub(t, "name: truth", "name: stamps"),
                                          ["stages[6].name", "already used"]))
add("stage_missing_type", validate_text(lambda t, d: _sub(t, "    type: output.catalog\n", ""),
                                        ["stages[6]", "needs a 'type'"]))
add("stage_unknown_type", validate_text(lambda t, d: _sub(t, "type: observe", "type: obsreve"),
                                        ["stages[3].type", "Did you mean 'observe'"]))
add("pipeline_name_non_ascii", validate_text(lambda t, d: _sub(t, "name: corpus", "name: c\u00f6rpus"),
                                             ["name", "line 1", "ASCII"]))
add("pipeline_name_too_long", validate_text(lambda t, d: _sub(t, "name: corpus", "name: " + "p" * 90),
                                            ["name", "68"]))
add("header_band_non_ascii", validate_text(
    lambda t, d: _sub(t, "survey: lsst_i\n    stamp_size: 8\n  - name: stamps",
                      "survey: {base: lsst_i, band: \"\u00ef\"}\n    stamp_size: 8\n  - name: stamps"),
    ["stages[4].survey.band", "ASCII"]))
add("header_survey_name_too_long", validate_text(
    lambda t, d: _sub(t, "survey: lsst_i\n    stamp_size: 8\n  - name: stamps",
                      "survey: {base: lsst_i, name: " + "n" * 80 + "}\n    stamp_size: 8\n  - name: stamps"),
    ["stages[4].survey.name", "68"]))
add("pipeline_name_newline", validate_text(lambda t, d: _sub(t, "name: corpus", 'name: "a\\nb"'),
                                           ["name", "ASCII"]))

# --- graph ---------------------------------------------------------------------------------------
add("graph_missing_input", validate_text(
    lambda t, d: _sub(t, "inputs: [observe]\n  - name: truth", "inputs: [obsrve]\n  - name: truth"),
    ["stages[5].inputs[0]", "Did you mean 'observe'"]))
add("graph_cycle", validate_text(lambda t, d: _sub(t, "inputs: [catalog]", "inputs: [render]"),
                                 ["cyclic", "positions"]))
add("graph_inputs_not_list", validate_text(lambda t, d: _sub(t, "inputs: [catalog]", "inputs: {a: 1}"),
                                           ["stages[1].inputs", "list of stage names"]))
add("graph_wrong_kind", validate_text(lambda t, d: _sub(t, "inputs: [render]\n    survey: lsst_i\n    stamp_size: 8\n  - name: scene",
                                                        "inputs: [catalog]\n    survey: lsst_i\n    stamp_size: 8\n  - name: scene"),
                                      ["stages[3].inputs[0]", "expects StampBatch"]))
add("graph_no_source", validate_text(
    lambda t, d: "name: x\nseed: 1\noutput: " + str(d / "out") + "\nstages:\n  - name: t\n    type: output.catalog\n",
    ["stages[0]", "takes 1 input"]))
add("graph_missing_column_downstream", lambda d: (
    ["validate", str(_pipe(d, read_pipeline(d / "out", write_catalog(d, q=None))))],
    ["stage 'render'", "galsim.parametric", "line 9", "column 'q'", "catalog.read",
     "defaults: {q:"], 2))
add("graph_missing_column_bulge", lambda d: (
    ["validate", str(_pipe(d, _sub(read_pipeline(d / "out", write_catalog(d)), "stamp_size: 16",
                                   "stamp_size: 16\n    profile: bulge_disk")))],
    ["stage 'render'", "column 'bulge_frac'"], 2))
add("graph_missing_xy_for_scene", validate_text(
    lambda t, d: _sub(t, "inputs: [positions]", "inputs: [catalog]"),
    ["stage 'scene'", "column 'x'", "catalog.positions"]))
add("graph_missing_radec_from_sky", lambda d: (
    ["validate", str(_pipe(d, read_pipeline(d / "out", write_catalog(d), extra=(
        "  - name: pos\n    type: catalog.positions\n    inputs: [catalog]\n    from_sky: true\n"
        "    size: 64\n"))))],
    ["stage 'pos'", "column 'ra'"], 2))

# --- GalSim evaluation (code execution) -----------------------------------------------------------
PWN = "\"$__import__('os').system('touch PWNED') or 0.7\""
for cid, psf in [("dollar_fwhm", f"{{type: Gaussian, fwhm: {PWN}}}"),
                 ("dollar_type", "{type: \"$'Gaussian'\", fwhm: 0.7}"),
                 ("eval_type", "{type: Gaussian, fwhm: {type: Eval, str: '0.7'}}"),
                 ("at_reference", "{type: Gaussian, fwhm: '@image.pixel_scale'}"),
                 ("nested_convolve", f"{{type: Convolve, items: [{{type: Gaussian, fwhm: 0.5}}, "
                                     f"{{type: Moffat, beta: 3, fwhm: {PWN}}}]}}"),
                 ("spaced_dollar", "{type: Gaussian, fwhm: ' $0.7'}")]:
    add(f"eval_{cid}", validate_text(
        lambda t, d, psf=psf: _sub(t, "survey: lsst_i\n    stamp_size: 8\n  - name: scene",
                                   f"survey: lsst_i\n    psf: {psf}\n    stamp_size: 8\n  - name: scene"),
        ["stages[3].psf", "GalSim evaluation", "--allow-eval"]))
add("eval_in_survey_psf", validate_text(
    lambda t, d: _sub(t, "survey: lsst_i\n    stamp_size: 8\n  - name: stamps",
                      f"survey: {{base: lsst_i, psf: {{type: Gaussian, fwhm: {PWN}}}}}\n    stamp_size: 8\n  - name: stamps"),
    ["stages[4].survey.psf.fwhm", "GalSim evaluation"]))
add("eval_in_run", run_text(
    lambda t, d: _sub(t, "survey: lsst_i\n    stamp_size: 8\n  - name: scene",
                      f"survey: lsst_i\n    psf: {{type: Gaussian, fwhm: {PWN}}}\n    stamp_size: 8\n  - name: scene"),
    ["stages[3].psf.fwhm", "GalSim evaluation"]))
add("eval_in_override", lambda d: (
    ["validate", str(_pipe(d, base_pipeline(d / "out"))),
     "stages.observe.psf={type: Gaussian, fwhm: '$0.7'}"], ["psf.fwhm", "GalSim evaluation"], 2))
add("eval_subprocess", lambda d: (
    ["validate", str(_pipe(d, _sub(base_pipeline(d / "out"), "survey: lsst_i\n    stamp_size: 8\n  - name: scene",
                                   f"survey: lsst_i\n    psf: {{type: Gaussian, fwhm: {PWN}}}\n    stamp_size: 8\n  - name: scene")))],
    ["GalSim evaluation"], 2, {"subprocess": True}))


# --- plug-in modules ------------------------------------------------------------------------------
def module_case(source, frags, modname="corpus_plugin"):
    def make(d):
        plug = d / "plug"
        plug.mkdir()
        if source is not None:
            (plug / f"{modname}.py").write_text(source)

        def patch(mp):
            mp.syspath_prepend(str(plug))
            mp.delitem(sys.modules, modname, raising=False)
        text = f"modules: [{modname!r}]\n" + base_pipeline(d / "out")
        return ["validate", str(_pipe(d, text))], frags, 2, {"patch": patch,
                                                            "pythonpath": str(plug)}
    return make


add("module_raises_on_import", module_case("raise RuntimeError('boom at import')\n",
                                           ["modules[0]", "line 1", "boom at import"]))
add("module_syntax_error", module_case("def f(:\n", ["modules[0]", "SyntaxError"]))
add("module_system_exit", module_case("raise SystemExit(5)\n", ["modules[0]", "SystemExit"]))
add("module_missing", module_case(None, ["modules[0]", "cannot import"]))
add("module_keyboard_like_error", module_case("import nonexistent_dependency_xyz\n",
                                              ["modules[0]", "nonexistent_dependency_xyz"]))
add("module_raises_subprocess", lambda d: (lambda r: (r[0], r[1], r[2], {**r[3], "subprocess": True}))(
    module_case("raise ValueError('plugin broken')\n", ["modules[0]", "plugin broken"])(d)))
for cid, mod in [("empty", "''"), ("dotdot", "'..x'"), ("relative", "'.x'"),
                 ("path", "'/tmp/x'"), ("semicolon", "'os;rm'"), ("number", "3")]:
    add(f"module_name_{cid}", validate_text(lambda t, d, mod=mod: f"modules: [{mod}]\n" + t,
                                            ["modules[0]", "line 1"]))


# --- every stage type's parameters ----------------------------------------------------------------
def _stage_types():
    import astrogen.stages  # noqa: F401
    from astrogen.registry import STAGES

    return [(n, c) for n, c in STAGES.items() if c.__module__.startswith("astrogen.")]


def _required_yaml(cls):
    """Valid values of a stage type's required parameters (so only the bad key fails)."""
    fill = {"n_objects": 4, "file_name": "cat.fits", "n_grid": 8, "box_size": 64.0,
            "catalog_file": str(Path(__file__).resolve().parents[2] / "examples" / "catsim"
                                / "catsim_example.fits")}
    return {k: fill[k] for k, p in cls.parameters().items()
            if p.default is inspect.Parameter.empty}


def param_case(cls_name, key, value, frags):
    def make(d):
        from astrogen.registry import STAGES

        cls = STAGES.get(cls_name)
        params = _required_yaml(cls)
        if "file_name" in params and cls_name == "catalog.read":
            params["file_name"] = str(write_catalog(d))
        params[key] = value
        body = f"type: {cls_name}\ninputs: [catalog]\n" + "".join(
            f"{k}: {json.dumps(v)}\n" for k, v in params.items())
        return ["validate", str(_pipe(d, one_stage_pipeline(d / "out", body)))], frags, 2
    return make


def _wrong_value(types):
    """A YAML value of none of the annotated types."""
    from astrogen.stages.base import _type_ok

    return next(v for v in ("abc", 12345, [1, 2], {"a": 1}, True) if not _type_ok(v, types))


for _name, _cls in _stage_types():
    for _key, _prm in _cls.parameters().items():
        from astrogen.stages.base import _annotation_types

        _types = _annotation_types(_prm.annotation)
        if not _types:
            continue
        add(f"param_type_{_name}_{_key}", param_case(
            _name, _key, _wrong_value(_types), [f"stages[0].{_key}", "line", f"{_key}="]))
    add(f"param_unknown_key_{_name}", param_case(_name, "no_such_key", 1,
                                                 ["stages[0].no_such_key", "is not a parameter"]))

for _name, _key, _value in [
        ("galsim.parametric", "stamp_size", 200000), ("galsim.parametric", "stamp_size", 2),
        ("galsim.parametric", "pixel_scale", 0), ("galsim.parametric", "pixel_scale", -0.1),
        ("galsim.parametric", "zero_point", 1e9), ("observe", "stamp_size", 10 ** 6),
        ("catalog.cosmos", "n_objects", 10 ** 30), ("catalog.cosmos", "n_objects", 0),
        ("catalog.cosmos", "chunk_size", 10 ** 9), ("catalog.cosmos", "mag_range", [26, 20]),
        ("catalog.cosmos", "mag_range", [20]), ("catalog.cosmos", "mag_range", [0, 100]),
        ("catalog.positions", "size", [300]), ("catalog.positions", "size", [10 ** 6, 10]),
        ("catalog.positions", "size", 0), ("catalog.positions", "dec", 95),
        ("ddpm.generate", "guidance", -2.0), ("ddpm.generate", "num_steps", 10 ** 7),
        ("ddpm.generate", "batch_size", 0), ("flowvae.generate", "temperature", -1),
        ("flowvae.generate", "batch_size", 10 ** 6), ("deblend.prob_unet", "n_samples", 10 ** 5),
        ("deblend.sep", "deblend_cont", 2.0), ("blend.generate", "max_objects", 1000),
        ("cosmology.initial_field", "n_grid", 7), ("cosmology.initial_field", "n_boxes", 10 ** 9),
        ("nbody.pm", "n_steps", 0), ("nbody.fof", "linking_length", 1.5),
        ("output.preview", "n_max", 10 ** 6), ("output.stamps", "file_name", "../up.fits"),
        ("output.catalog", "file_name", "/abs/truth.fits"), ("scene", "preview", "scene.jpg"),
        ("nbody.emulate", "axis", 5), ("nbody.halo_map", "threshold", 1.5)]:
    add(f"param_bound_{_name}_{_key}_{str(_value).replace(' ', '')[:12]}",
        param_case(_name, _key, _value, [f"stages[0].{_key}", "line"]))

add("param_missing_required", lambda d: (
    ["validate", str(_pipe(d, one_stage_pipeline(d / "out", "type: catalog.read\n")))],
    ["stages[0]", "needs the key 'file_name'"], 2))
add("param_float_nan", validate_text(lambda t, d: _sub(t, "stamp_size: 16", "stamp_size: 16\n    pixel_scale: .nan"),
                                     ["stages[2].pixel_scale", "nan"]))
add("param_float_inf", validate_text(lambda t, d: _sub(t, "stamp_size: 16", "stamp_size: 16\n    zero_point: .inf"),
                                     ["stages[2].zero_point", "inf"]))
add("param_survey_unknown_field", validate_text(
    lambda t, d: _sub(t, "survey: lsst_i\n    size: 64", "survey: {base: lsst_i, pixscale: 1}\n    size: 64"),
    ["stages[1].survey.pixscale", "Did you mean 'pixel_scale'"]))
add("param_survey_pixel_scale_string", validate_text(
    lambda t, d: _sub(t, "survey: lsst_i\n    size: 64", "survey: {base: lsst_i, pixel_scale: abc}\n    size: 64"),
    ["stages[1].survey.pixel_scale", "abc"]))
add("param_survey_unknown_preset", validate_text(
    lambda t, d: _sub(t, "survey: lsst_i\n    size: 64", "survey: lsst_q\n    size: 64"),
    ["stages[1].survey", "lsst_q"]))
add("param_psf_negative_fwhm", validate_text(
    lambda t, d: _sub(t, "survey: lsst_i\n    stamp_size: 8\n  - name: scene",
                      "survey: lsst_i\n    psf: {type: Kolmogorov, fwhm: -1}\n    stamp_size: 8\n  - name: scene"),
    ["stages[3].psf", "GalSim"]))
add("param_psf_not_mapping", validate_text(
    lambda t, d: _sub(t, "survey: lsst_i\n    stamp_size: 8\n  - name: scene",
                      "survey: lsst_i\n    psf: 0.7\n    stamp_size: 8\n  - name: scene"),
    ["stages[3].psf"]))

# --- silent wrong results -------------------------------------------------------------------------
for cid, field, value in [("gain_zero", "gain", 0), ("gain_negative", "gain", -1),
                          ("read_noise_negative", "read_noise", -3),
                          ("exposure_zero", "exposure_time", 0),
                          ("sky_nan", "sky_brightness", ".nan")]:
    add(f"silent_{cid}", validate_text(
        lambda t, d, f=field, v=value: _sub(t, "survey: lsst_i\n    stamp_size: 8\n  - name: scene",
                                            f"survey: {{base: lsst_i, {f}: {v}}}\n    stamp_size: 8\n  - name: scene"),
        [f"stages[3].survey.{field}"]))
add("silent_guidance_negative", param_case("ddpm.generate", "guidance", -2.0,
                                           ["stages[0].guidance", "-2.0"]))

# --- memory -----------------------------------------------------------------------------------------
def memory_case(edit, frags):
    """On a machine with 16 GiB (whatever this one has)."""
    def make(d):
        argv, frags_, status = validate_text(edit, frags)(d)

        def patch(mp):
            mp.setattr("astrogen.pipeline.build._physical_memory", lambda: 16 * 2 ** 30)
        return argv, frags_, status, {"patch": patch}
    return make


add("memory_chunk_of_stamps", memory_case(
    lambda t, d: _sub(_sub(t, "stamp_size: 16", "stamp_size: 2048"), "chunk_size: 3", "chunk_size: 1000"),
    ["stages[2].stamp_size", "31.2 GiB", "16.0 GiB"]))
add("memory_scene", memory_case(lambda t, d: _sub(t, "size: 64", "size: [40000, 40000]"),
                                ["stages[1].size", "23.8 GiB"]))
add("memory_n_objects", validate_text(lambda t, d: _sub(t, "n_objects: 6", "n_objects: 1e30"),
                                      ["stages[0].n_objects", "integer"]))

# --- sinks writing the same file ----------------------------------------------------------------------
add("sinks_same_file", validate_text(
    lambda t, d: _sub(t, "type: output.catalog\n    inputs: [observe]",
                      "type: output.catalog\n    inputs: [observe]\n    file_name: stamps.fits"),
    ["stages[6].file_name", "stage 'stamps'", "stamps.fits"]))
add("sinks_same_file_case", validate_text(
    lambda t, d: _sub(_sub(t, "type: output.catalog\n    inputs: [observe]",
                           "type: output.catalog\n    inputs: [observe]\n    file_name: x.fits"),
                      "type: output.stamps\n    inputs: [observe]",
                      "type: output.stamps\n    inputs: [observe]\n    file_name: ./x.fits"),
    ["stages[6].file_name", "x.fits"]))
add("sinks_scene_vs_stamps", validate_text(
    lambda t, d: _sub(t, "type: output.stamps\n    inputs: [observe]",
                      "type: output.stamps\n    inputs: [observe]\n    file_name: scene.fits"),
    ["stages[5].file_name", "stage 'scene'"]))
add("sinks_provenance_name", lambda d: (
    ["validate", str(_pipe(d, one_stage_pipeline(
        d / "out", "type: blend.generate\ninputs: [catalog]\n",
        after="  - name: report\n    type: deblend.report\n    inputs: [probe]\n"
              "    metrics_file: provenance.json\n")))],
    ["stages[2].metrics_file", "provenance.json"], 2))
add("sinks_same_file_run", run_text(
    lambda t, d: _sub(t, "type: output.catalog\n    inputs: [observe]",
                      "type: output.catalog\n    inputs: [observe]\n    file_name: stamps.fits"),
    ["stamps.fits"]))


# --- overrides ---------------------------------------------------------------------------------------
def override_case(item, frags):
    return lambda d: (["validate", str(_pipe(d, base_pipeline(d / "out"))), item], frags, 2)


add("override_unknown_stage", override_case("stages.rendr.stamp_size=8", ["rendr", "Did you mean"]))
add("override_bad_value", override_case("stages.render.stamp_size=abc", ["stages[2].stamp_size", "abc"]))
add("override_recursive_alias", override_case("stages.render.stamp_size=&x [*x]",
                                              ["stages[2].stamp_size"]))
add("override_empty_part", override_case("stages..stamp_size=8", ["override", "dotted"]))
add("override_seed", override_case("seed=-3", ["seed", "-3"]))
add("override_scalar_descent", override_case("seed.x=3", ["seed.x", "not a mapping"]))
add("override_stage_name", override_case("stages.truth.name=../../x", ["stages[6].name"]))
add("override_eval", override_case("stages.render.pixel_scale=$0.03", ["stages[2].pixel_scale",
                                                                       "GalSim evaluation"]))


# --- catalogs ----------------------------------------------------------------------------------------------
def catalog_case(writer, frags, command="validate", extra=""):
    def make(d):
        cat = writer(d)
        args = ["--no-progress"] if command == "run" else []
        return [command, str(_pipe(d, read_pipeline(d / "out", cat, extra=extra))), *args], frags, 2
    return make


def _empty_fits(d):
    p = d / "empty.fits"
    Table({k: np.zeros(0) for k in GOOD_CATALOG}).write(p)
    return p


def _csv(text, name="cat.csv"):
    def w(d):
        p = d / name
        p.write_text(text)
        return p
    return w


def _truncated(d):
    good = write_catalog(d, name="good.fits")
    p = d / "trunc.fits"
    p.write_bytes(good.read_bytes()[:4000])
    good.unlink()
    return p


def _garbage(d):
    p = d / "garbage.fits"
    p.write_bytes(b"\x00\x01 not fits at all" * 100)
    return p


def _bad_tunit(d):
    from astropy.io import fits

    p = write_catalog(d)
    with fits.open(p, mode="update") as hl:
        hl[1].header["TUNIT2"] = "furlongs per fortnight squared"
    return p


def _unit(col, unit):
    def w(d):
        from astropy.io import fits

        p = write_catalog(d)
        with fits.open(p, mode="update") as hl:
            i = hl[1].columns.names.index(col) + 1
            hl[1].header[f"TUNIT{i}"] = unit
        return p
    return w


HEADER = "mag,hlr,q,beta,sersic_n\n"
add("catalog_empty_fits", catalog_case(_empty_fits, ["stages[0]", "no rows"]))
add("catalog_empty_csv_header_only", catalog_case(_csv(HEADER), ["stages[0]", "no rows"]))
add("catalog_empty_file", catalog_case(_csv("", "empty.csv"), ["stages[0]", "no rows"]))
add("catalog_missing_file", catalog_case(lambda d: d / "nope.fits", ["stages[0].file_name", "not found"]))
add("catalog_garbage", catalog_case(_garbage, ["stages[0].file_name", "cannot be read"]))
add("catalog_truncated", catalog_case(_truncated, ["stages[0]", "trunc.fits"]))
add("catalog_hdu_out_of_range", catalog_case(write_catalog, ["stages[0].hdu", "hdu=7"], extra="    hdu: 7\n"))
add("catalog_hdu_primary", catalog_case(write_catalog, ["stages[0].hdu", "not a table"], extra="    hdu: 0\n"))
add("catalog_string_in_numeric_csv", catalog_case(
    _csv(HEADER + "22,0.2,0.5,0,1\n23,abc,0.6,10,2\n"), ["column 'hlr'", "stages[0]"]))
add("catalog_nan_mag", catalog_case(lambda d: write_catalog(d, mag=[22.0, np.nan, 24.0]),
                                    ["column 'mag'", "row"]))
add("catalog_inf_hlr", catalog_case(lambda d: write_catalog(d, hlr=[0.2, np.inf, 0.4]),
                                    ["column 'hlr'", "inf"]))
add("catalog_negative_hlr", catalog_case(lambda d: write_catalog(d, hlr=[0.2, -0.3, 0.4]),
                                         ["column 'hlr'", "hlr=-0.3"]))
add("catalog_tiny_hlr", catalog_case(lambda d: write_catalog(d, hlr=[0.2, 1e-9, 0.4]),
                                     ["column 'hlr'", "1e-09", "0.001"]))
add("catalog_q_above_one", catalog_case(lambda d: write_catalog(d, q=[0.5, 1.5, 0.7]),
                                        ["column 'q'", "q=1.5"]))
add("catalog_q_zero", catalog_case(lambda d: write_catalog(d, q=[0.5, 0.0, 0.7]), ["column 'q'"]))
add("catalog_sersic_too_high", catalog_case(lambda d: write_catalog(d, sersic_n=[1.0, 9.0, 2.0]),
                                            ["column 'sersic_n'"]))
add("catalog_beta_huge", catalog_case(lambda d: write_catalog(d, beta=[0.0, 1e5, 1.0]),
                                      ["column 'beta'"]))
add("catalog_z_negative", catalog_case(lambda d: write_catalog(d, z=[0.5, -1.0, 1.0]),
                                       ["column 'z'"]))
add("catalog_dec_out_of_range", catalog_case(lambda d: write_catalog(d, dec=[0.0, 100.0, 1.0],
                                                                     ra=[1.0, 2.0, 3.0]),
                                             ["column 'dec'"]))
add("catalog_bad_tunit", catalog_case(_bad_tunit, ["column 'hlr'", "furlongs per fortnight"]))
add("catalog_unit_not_convertible", catalog_case(_unit("hlr", "kg"), ["column 'hlr'", "kg"]))
add("catalog_pixel_unit_without_scale", catalog_case(_unit("hlr", "pix"), ["pixel_scale"]))
add("catalog_mapping_to_missing_column", catalog_case(
    write_catalog, ["stages[0].columns.mag", "MAG_AUTO"], extra="    columns: {mag: MAG_AUTO}\n"))
add("catalog_mapping_not_canonical", catalog_case(
    write_catalog, ["stages[0].columns.magnitude", "canonical"], extra="    columns: {magnitude: mag}\n"))
add("catalog_units_unparsable", catalog_case(
    lambda d: write_catalog(d, hlr=None, r50=[0.2, 0.3, 0.4]), ["stages[0].units.hlr"],
    extra="    columns: {hlr: r50}\n    units: {hlr: parsecs of joy}\n"))
add("catalog_defaults_not_number", catalog_case(
    lambda d: write_catalog(d, q=None), ["stages[0]", "q"], extra="    defaults: {q: round}\n"))
add("catalog_format_unknown", catalog_case(_csv(HEADER + "22,0.2,0.5,0,1\n"), ["stages[0]"],
                                           extra="    format: no-such-format\n"))
add("catalog_bad_row_found_in_run", catalog_case(lambda d: write_catalog(d, mag=[22.0, 23.0, np.nan]),
                                                 ["column 'mag'"], command="run"))
add("catalog_masked_values", catalog_case(_csv(HEADER + "22,0.2,0.5,0,1\n23,,0.6,10,2\n"),
                                          ["column 'hlr'"]))


# --- model files -------------------------------------------------------------------------------------------
MODEL_STAGES = [("deblend.unet", "unet_blends"), ("deblend.prob_unet", "prob_unet_blends"),
                ("ddpm.generate", "ddpm_cosmos64"), ("flowvae.generate", "flowvae_cosmos64"),
                ("nbody.emulate", "nbody_gan_32"), ("nbody.halo_map", "halo_unet_32")]


def model_case(stage_type, shipped, kind):
    def make(d):
        src = MODELS / f"{shipped}.keras"
        model = d / "model.keras"
        side = d / "model.json"
        if kind == "missing":
            model = d / "absent.keras"
        elif kind == "corrupt":
            model.write_bytes(os.urandom(4096))
            side.write_text("{}")
        elif kind == "truncated":
            model.write_bytes(src.read_bytes()[: src.stat().st_size // 2])
            side.write_text("{}")
        elif kind == "sidecar_not_json":
            shutil.copy(src, model)
            side.write_text("{this is: not json")
        elif kind == "not_keras_zip":
            import zipfile

            with zipfile.ZipFile(model, "w") as z:
                z.writestr("hello.txt", "hi")
            side.write_text("{}")
        body = f"type: {stage_type}\ninputs: [catalog]\nmodel: {json.dumps(str(model))}\n"
        return ["validate", str(_pipe(d, one_stage_pipeline(d / "out", body)))], \
            ["stages[0].model", model.name], 2
    return make


for _stype, _shipped in MODEL_STAGES:
    for _kind in ("missing", "corrupt", "truncated", "not_keras_zip"):
        add(f"model_{_kind}_{_stype}", model_case(_stype, _shipped, _kind))
for _stype, _shipped in MODEL_STAGES:
    if _stype in ("ddpm.generate", "deblend.unet"):
        add(f"model_sidecar_not_json_{_stype}", model_case(_stype, _shipped, "sidecar_not_json"))


# --- faults injected at each step of a run --------------------------------------------------------------------
def _raiser(exc):
    def f(*a, **k):
        raise exc
    return f


def _nth(orig, n, exc):
    """``orig`` that raises ``exc`` on its ``n``-th call (1-based)."""
    calls = {"n": 0}

    def f(*a, **k):
        calls["n"] += 1
        if calls["n"] == n:
            raise exc
        return orig(*a, **k)
    return f


def ENOSPC():
    return OSError(errno.ENOSPC, "No space left on device", "part.fits")


def EACCES():
    return PermissionError(errno.EACCES, "Permission denied", "part.fits")


def fault_case(target, attr, make_exc, frags, status, nth=None):
    def make(d):
        import importlib

        def patch(mp):
            mod_name, _, cls_name = target.partition(":")
            owner = importlib.import_module(mod_name)
            if cls_name:
                owner = getattr(owner, cls_name)
            orig = getattr(owner, attr)
            mp.setattr(owner, attr, _nth(orig, nth, make_exc()) if nth else _raiser(make_exc()))
        return ["run", str(_pipe(d, base_pipeline(d / "out"))), "--no-progress"], frags, status, \
            {"patch": patch}
    return make


GS = "astrogen.stages.galsim_stages"
OUT = "astrogen.stages.output"
CAT = "astrogen.stages.catalog"
RUN = "astrogen.pipeline.runner"
for _where, _target, _attr, _frags, _nthc in [
        ("source_read", f"{CAT}:CosmosCatalog", "read_chunk", ["stage 'catalog'"], None),
        ("map_process", f"{GS}:ParametricGalaxies", "process", ["stage 'render'"], None),
        ("map_setup", f"{GS}:Observe", "setup", ["stage 'observe'"], None),
        ("sink_setup", f"{OUT}:StampsOutput", "setup", ["stage 'stamps'"], None),
        ("sink_consume", f"{OUT}:CatalogOutput", "consume", ["stage 'truth'"], None),
        ("sink_consume_2nd_chunk", f"{OUT}:CatalogOutput", "consume", ["stage 'truth'"], 2),
        ("sink_get_state", f"{GS}:Scene", "get_state", ["stage 'scene'"], None),
        ("sink_finalize", f"{OUT}:StampsOutput", "finalize", ["stage 'stamps'"], None),
        ("last_sink_finalize", f"{OUT}:CatalogOutput", "finalize", ["stage 'truth'"], None)]:
    add(f"fault_disk_full_{_where}", fault_case(_target, _attr, ENOSPC, _frags + ["No space left"], 3, _nthc))
    add(f"fault_bug_{_where}", fault_case(_target, _attr, lambda: ZeroDivisionError("bug here"),
                                          _frags + ["ZeroDivisionError", "bug here"], 2, _nthc))
for _where, _attr, _nthc, _what in [
        ("ledger_first", "write_json", 1, "run (writing the run ledger)"),
        ("ledger_chunk", "write_json", 3, "run (writing the run ledger)"),
        ("provenance", "write_json", 4, "run (writing provenance.json)"),  # after 2 chunks
        ("checkpoint", "save_npz", 2, "stage 'scene'")]:
    add(f"fault_disk_full_{_where}", fault_case(RUN, _attr, ENOSPC, ["No space left", _what],
                                                3, _nthc))
add("fault_permission_finalize", fault_case(f"{OUT}:StampsOutput", "finalize", EACCES,
                                            ["stage 'stamps'", "Permission denied"], 3))
add("fault_memory_error_process", fault_case(f"{GS}:ParametricGalaxies", "process",
                                             lambda: MemoryError(), ["stage 'render'", "memory"], 3))
add("fault_disk_full_streaming_write", fault_case("astropy.io.fits:StreamingHDU", "write",
                                                  ENOSPC, ["stage 'stamps'", "No space left"], 3))
add("fault_disk_full_after_close_error", fault_case(
    "astropy.io.fits:StreamingHDU", "close",
    lambda: ValueError("seek of closed file"), ["stage 'stamps'", "seek of closed file"], 2))
add("fault_recursion_in_stage", fault_case(f"{GS}:ParametricGalaxies", "process",
                                           lambda: RecursionError("deep"),
                                           ["stage 'render'", "recursion"], 2))
add("fault_keyerror_in_stage", fault_case(f"{GS}:Observe", "process", lambda: KeyError("mag"),
                                          ["stage 'observe'", "KeyError"], 2))


def _plugin_stage_case(exc_src, frags, status):
    """A plug-in stage that raises, run as a real subprocess (the console boundary)."""
    def make(d):
        plug = d / "plug"
        plug.mkdir()
        (plug / "corpus_faulty.py").write_text(textwrap.dedent(f"""\
            import errno
            from astropy.table import Table
            from astrogen.registry import register_stage
            from astrogen.stages.base import Stage

            @register_stage("corpus.faulty")
            class Faulty(Stage):
                kind = "map"
                input_types = (Table,)
                output_type = Table
                def process(self, table):
                    raise {exc_src}
            """))
        text = base_pipeline(d / "out", extra_top="modules: [corpus_faulty]\n")
        text = _sub(text, "  - name: positions", "  - name: faulty\n    type: corpus.faulty\n"
                                                 "    inputs: [catalog]\n  - name: positions")
        text = _sub(text, "inputs: [catalog]\n    survey", "inputs: [faulty]\n    survey")
        return ["run", str(_pipe(d, text)), "--no-progress"], frags, status, \
            {"subprocess": True, "pythonpath": str(plug)}
    return make


add("fault_real_file_size_limit_subprocess", lambda d: (
    ["run", str(_pipe(d, base_pipeline(d / "out"))), "--no-progress"],
    ["the environment failed", "File too large"], 3, {"subprocess": True, "fsize": 3000}))
add("fault_plugin_bug_subprocess", _plugin_stage_case(
    "RuntimeError('plugin bug')", ["stage 'faulty'", "corpus.faulty", "plugin bug"], 2))
add("fault_plugin_disk_full_subprocess", _plugin_stage_case(
    "OSError(errno.ENOSPC, 'No space left on device')", ["stage 'faulty'", "No space left"], 3))
add("fault_plugin_permission_subprocess", _plugin_stage_case(
    "PermissionError(errno.EACCES, 'Permission denied', '/x')", ["Permission denied"], 3))


# --- --resume with a broken ledger ---------------------------------------------------------------------------
def ledger_case(content, frags):
    def make(d):
        out = d / "out"
        work = out / ".astrogen-work"
        work.mkdir(parents=True)
        (work / "ledger.json").write_text(content)
        return ["run", str(_pipe(d, base_pipeline(out))), "--resume", "--no-progress"], frags, 2
    return make


add("resume_truncated_ledger", ledger_case('{"config_hash": "ab', ["output", "ledger", "unreadable"]))
add("resume_ledger_list", ledger_case("[1, 2]", ["ledger", "unreadable"]))
add("resume_ledger_bad_done", ledger_case('{"config_hash": "x", "done": "many"}',
                                          ["ledger", "unreadable"]))
add("resume_ledger_other_config", ledger_case('{"config_hash": "x", "done": 1}',
                                              ["output", "different configuration"]))


# ---------------------------------------------------------------------------------- the test
def _listing(d: Path) -> list[str]:
    return sorted(str(p.relative_to(d)) for p in d.rglob("*"))


def _run_subprocess(argv, d, pythonpath=None, fsize=None):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONDONTWRITEBYTECODE="1")
    env["PYTHONPATH"] = os.pathsep.join(x for x in (pythonpath, str(REPO),
                                                    env.get("PYTHONPATH")) if x)

    def limit():  # in the child only
        import resource
        import signal

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))

    r = subprocess.run([sys.executable, "-m", "astrogen.cli", *argv], capture_output=True,
                       text=True, cwd=d, env=env, timeout=300,
                       preexec_fn=limit if fsize else None)
    return r.returncode, r.stderr


@pytest.mark.parametrize("cid,make", CASES, ids=[c[0] for c in CASES])
def test_bad_input(cid, make, tmp_path, capsys, monkeypatch):
    d = tmp_path / "case"
    d.mkdir()
    monkeypatch.chdir(d)
    spec = make(d)
    argv, frags, status = spec[:3]
    opts = spec[3] if len(spec) > 3 else {}
    before = _listing(d)
    if opts.get("subprocess"):
        code, err = _run_subprocess(argv, d, opts.get("pythonpath"), opts.get("fsize"))
    else:
        if "patch" in opts:
            opts["patch"](monkeypatch)
        code = main(argv)
        err = capsys.readouterr().err
    lines = err.strip().splitlines()
    if os.environ.get("ASTROGEN_CORPUS_DUMP"):  # the lines themselves, to read them all
        with open(os.environ["ASTROGEN_CORPUS_DUMP"], "a") as fh:
            fh.write(f"{cid}\t{code}\t{err.strip()}\n")
    assert code == status, (code, err)
    # the error is one line, the last; lines before it may only be the run's own log records
    # (e.g. a stage warning that a tiny test stamp cuts a galaxy), never a traceback or a
    # Python warning
    errors = [x for x in lines if x.startswith("astrogen: error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], err
    assert all(x.startswith("astrogen: ") for x in lines), err
    assert "Traceback" not in err and "Warning:" not in err
    for frag in frags:
        assert frag in errors[0], (frag, errors[0])
    after = _listing(d)
    assert set(after) <= set(before), sorted(set(after) - set(before))  # nothing new
    if "--resume" not in argv:  # (a failed --resume also removes the broken work folder)
        assert after == before
    assert not (d / "PWNED").exists()


def test_corpus_size():
    """The README states the size of this corpus (at least 150 bad inputs)."""
    assert len(CASES) >= 150
    assert len({c[0] for c in CASES}) == len(CASES)
    families = {c[0].split("_")[0] for c in CASES}
    assert {"yaml", "top", "stage", "graph", "eval", "module", "param", "silent", "memory",
            "sinks", "override", "catalog", "model", "fault", "resume"} <= families

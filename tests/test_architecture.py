"""Architecture rules of the package, checked on its source (AST) and in fresh processes.

* Every Keras object the package registers has its own ``package>name``; registering one
  name twice made the last imported class win (``astrogen>ResidualBlock`` of the FlowVAE
  and of the diffusion U-Net: a FlowVAE config then rebuilt diffusion blocks).
* Every shipped model loads in a process that has imported every astrogen module first.
* Layering: ``models/`` imports no data set, catalog, stage or pipeline module;
  ``physics/``, ``cosmology/`` and ``nbody/`` import no model, trainer or stage, and
  ``physics/`` imports no TensorFlow at module level; no module imports another module's
  private (``_name``) names; reading a training YAML loads no stage and no TensorFlow.
* Test layout (``tests/README.md``): the tests mirror the package, so every test file sits
  where the module it tests sits; cross-cutting end-to-end tests are in ``tests/integration``.
"""
from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "astrogen"


def _modules() -> dict[str, Path]:
    """``{dotted module name: file}`` of every module of the package."""
    out = {}
    for p in sorted(PKG.rglob("*.py")):
        parts = list(p.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


MODULES = _modules()
#: every module that can be imported (``astrogen.__main__`` runs the command line)
IMPORTABLE = sorted(m for m in MODULES if not m.endswith(".__main__"))


def _imports(path: Path, top_level_only: bool = False):
    """``(line, imported module, [names])`` of every import of a file (relative imports
    resolved); ``top_level_only``: only those executed when the module is imported (not in
    functions)."""
    tree = ast.parse(path.read_text(), str(path))
    mod = [k for k, v in MODULES.items() if v == path][0]
    pkg = mod if path.name == "__init__.py" else mod.rsplit(".", 1)[0]
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    if top_level_only:  # module-level statements, including those inside if/try blocks
        stack, nodes = list(tree.body), []
        while stack:
            n = stack.pop()
            nodes.append(n)
            if isinstance(n, (ast.If, ast.Try, ast.With)):
                stack.extend(ast.iter_child_nodes(n))
    for n in nodes:
        if isinstance(n, ast.Import):
            for a in n.names:
                yield n.lineno, a.name, []
        elif isinstance(n, ast.ImportFrom):
            base = n.module or ""
            if n.level:
                parent = pkg.split(".")[:len(pkg.split(".")) - (n.level - 1)]
                base = ".".join(parent + ([base] if base else []))
            yield n.lineno, base, [a.name for a in n.names]


def _rel(path: Path) -> str:
    return os.path.relpath(path, ROOT)


def _files_under(*packages: str) -> list[Path]:
    return [p for m, p in MODULES.items()
            if any(m == f"astrogen.{q}" or m.startswith(f"astrogen.{q}.") for q in packages)]


# ------------------------------------------------------------------- registered names
def _registrations() -> list[tuple[str, str, str, bool]]:
    """``(registered name, module, class, nested)`` of every class decorated with
    ``keras.saving.register_keras_serializable`` in the package source."""
    out = []
    for mod, path in MODULES.items():
        tree = ast.parse(path.read_text(), str(path))
        top = {id(n) for n in tree.body}
        for node in ast.walk(tree):
            if not isinstance(node, ast.ClassDef):
                continue
            for dec in node.decorator_list:
                if not (isinstance(dec, ast.Call) and getattr(dec.func, "attr", getattr(
                        dec.func, "id", "")) == "register_keras_serializable"):
                    continue
                kw = {k.arg: k.value.value for k in dec.keywords
                      if isinstance(k.value, ast.Constant)}
                args = [a.value for a in dec.args if isinstance(a, ast.Constant)]
                package = kw.get("package", args[0] if args else "Custom")
                name = kw.get("name", args[1] if len(args) > 1 else node.name)
                out.append((f"{package}>{name}", mod, node.name, id(node) not in top))
    return out


def test_every_registered_keras_name_is_unique():
    regs = _registrations()
    assert len(regs) >= 20, regs  # the scan finds the package's layers and models
    seen: dict[str, str] = {}
    dupes = []
    for name, mod, cls, _ in regs:
        if name in seen:
            dupes.append(f"{name}: {seen[name]} and {mod}.{cls}")
        seen[name] = f"{mod}.{cls}"
    assert not dupes, "Keras names registered twice (the last import wins): " + "; ".join(dupes)


def test_registered_names_resolve_to_their_class_after_importing_everything():
    """In one process that imports every astrogen module, each registered name gives back
    the class that registered it (fails when two classes share a name)."""
    regs = [(n, m, c) for n, m, c, nested in _registrations() if not nested]
    code = (
        "import importlib, json, sys, keras\n"
        f"mods = {IMPORTABLE!r}\n"
        "for m in mods: importlib.import_module(m)\n"
        f"regs = {regs!r}\n"
        "bad = [n for n, m, c in regs\n"
        "       if keras.saving.get_registered_object(n) is not getattr(sys.modules[m], c)]\n"
        "print(json.dumps(bad))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}, cwd=ROOT,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


SHIPPED_LOADERS = """
import importlib, json, sys
import numpy as np
mods = {mods!r}
for m in mods:
    importlib.import_module(m)
from astrogen.models.pretrained import models_dir
from astrogen.models.flowvae import load_flowvae
from astrogen.models.ddpm_galaxy import load_ddpm
from astrogen.models.halo_unet import load_halo_unet
from astrogen.models.nbody_gan import load_nbody_gan
from astrogen.deblend.segment import load_segmenter
d = models_dir()
out = {{}}
vae = load_flowvae(d / "flowvae_cosmos64.keras")
out["flowvae"] = list(np.shape(vae.decode(np.zeros((1, vae.latent_dim), "float32"))))
ddpm = load_ddpm(d / "ddpm_cosmos64.keras")
out["ddpm"] = int(ddpm.network.count_params())
out["halo_unet"] = int(load_halo_unet(d / "halo_unet_32.keras").network.count_params())
out["nbody_gan"] = int(load_nbody_gan(d / "nbody_gan_32.keras").generator.count_params())
out["unet"] = int(load_segmenter("shipped", "unet").count_params())
out["prob_unet"] = int(load_segmenter("shipped", "prob_unet").count_params())
from astrogen.deblend.survey import load_scene_model
out["scene_deblender"] = int(load_scene_model("shipped").network.count_params())
print(json.dumps(out))
"""


def test_every_shipped_model_loads_after_importing_every_module():
    code = SHIPPED_LOADERS.format(mods=IMPORTABLE)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}, cwd=ROOT,
                         timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["flowvae"] == [1, 64, 64]
    for k in ("ddpm", "halo_unet", "nbody_gan", "unet", "prob_unet", "scene_deblender"):
        assert got[k] > 1000, (k, got)


# ------------------------------------------------------------------------ import rules
def _violations(packages, forbidden, top_level_only=False):
    bad = []
    for path in _files_under(*packages):
        for line, mod, _ in _imports(path, top_level_only):
            if any(mod == f or mod.startswith(f + ".") for f in forbidden):
                bad.append(f"{_rel(path)}:{line} imports {mod}")
    return bad


def test_models_import_no_data_catalog_stage_or_pipeline():
    assert not _violations(["models"], ["astrogen.datasets", "astrogen.catalog",
                                        "astrogen.stages", "astrogen.pipeline"])


def test_physics_cosmology_nbody_import_no_model_trainer_or_stage():
    assert not _violations(["physics", "cosmology", "nbody"],
                           ["astrogen.models", "astrogen.training", "astrogen.stages"])


def test_physics_imports_no_tensorflow_at_module_level():
    assert not _violations(["physics"], ["tensorflow", "keras"], top_level_only=True)


def test_no_module_imports_another_modules_private_names():
    bad = []
    for mod, path in MODULES.items():
        tree = ast.parse(path.read_text(), str(path))
        aliases = set()  # local names bound to astrogen modules
        for line, imported, names in _imports(path):
            if not imported.startswith("astrogen"):
                continue
            for name in names:
                if name.startswith("_") and not name.startswith("__"):
                    bad.append(f"{_rel(path)}:{line} from {imported} "
                               f"import {name}")
                if f"{imported}.{name}" in MODULES:
                    aliases.add(name)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for a in node.names:
                    if a.name.startswith("astrogen") and a.asname:
                        aliases.add(a.asname)
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.value.id in aliases and node.attr.startswith("_")
                    and not node.attr.startswith("__")):
                bad.append(f"{_rel(path)}:{node.lineno} uses "
                           f"{node.value.id}.{node.attr}")
    assert not bad, "\n".join(bad)


def test_reading_a_training_yaml_loads_no_stage_pipeline_or_tensorflow():
    """``astrogen train`` reads its YAML with the pipeline's YAML reader only (the stage
    registry, the pipeline builder and TensorFlow are loaded by training, not by reading).
    GalSim may be loaded: the stamp data set's profile names live in physics.render."""
    code = ("import sys, json\n"
            "from astrogen.training.config import load_training_config\n"
            "load_training_config('configs/flowvae_tiny.yaml')\n"
            "load_training_config('configs/nbody_gan_tiny.yaml')\n"
            "print(json.dumps(sorted(m for m in sys.modules if "
            "m == 'tensorflow' or m.startswith('astrogen.stages') or "
            "m.startswith('astrogen.pipeline.build'))))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


@pytest.mark.parametrize("rule", ["models", "physics", "private"])
def test_the_checks_catch_a_violation(tmp_path, rule, monkeypatch):
    """The AST checks above are not vacuous: a planted violation is found."""
    src = {"models": "from astrogen.datasets.blends import read_blend_scenes\n",
           "physics": "import tensorflow as tf\n",
           "private": "from astrogen.seeds import _private\n"}[rule]
    fake = tmp_path / "astrogen" / rule / "planted.py"
    fake.parent.mkdir(parents=True)
    fake.write_text(src)
    monkeypatch.setitem(MODULES, f"astrogen.{rule}.planted", fake)
    if rule == "models":
        assert _violations(["models"], ["astrogen.datasets"]) != []
    elif rule == "physics":
        assert _violations(["physics"], ["tensorflow"], top_level_only=True) != []
    else:
        with pytest.raises(AssertionError, match="_private"):
            test_no_module_imports_another_modules_private_names()


#: test files that test no one module: this file (the package's architecture) and the
#: package-wide docstring coverage
LAYOUT_EXEMPT = {"test_architecture.py", "test_docstrings.py", "test_docs.py"}
#: the folder of cross-cutting end-to-end tests (shipped pipelines, bad-input corpus)
INTEGRATION = "integration"


def _layout_violations(tests_root: Path, pkg_root: Path) -> list[str]:
    """Test files (``test_*.py``) of ``tests_root`` whose place mirrors no part of ``pkg_root``.

    ``tests/test_<m>.py`` needs a module ``<m>.py`` or subpackage ``<m>/`` of the package;
    ``tests/<sub>/.../test_*.py`` needs the subpackage ``<sub>/...`` (or ``<sub>`` is
    ``integration``). Two test files of one base name are refused too: the test folders have
    no ``__init__.py``, so pytest imports test files by base name.
    """
    bad, seen = [], {}
    for path in sorted(tests_root.rglob("test_*.py")):
        rel = path.relative_to(tests_root)
        seen.setdefault(path.name, []).append(str(rel))
        folders = rel.parts[:-1]
        if not folders:
            stem = path.stem[len("test_"):]
            exists = ((pkg_root / f"{stem}.py").is_file()
                      or (pkg_root / stem / "__init__.py").is_file())
            if path.name not in LAYOUT_EXEMPT and not exists:
                bad.append(f"{rel}: no module astrogen/{stem}.py nor subpackage astrogen/{stem}/")
        elif (folders[0] != INTEGRATION
              and not (pkg_root.joinpath(*folders) / "__init__.py").is_file()):
            bad.append(f"{rel}: no subpackage astrogen/{'/'.join(folders)}/")
    bad += [f"{name}: one base name for {paths}" for name, paths in seen.items() if len(paths) > 1]
    return bad


def test_tests_mirror_the_package_modules():
    """Every test file's place names an existing module or subpackage (or is integration)."""
    assert _layout_violations(ROOT / "tests", PKG) == []


@pytest.mark.parametrize("planted", ["tests/test_nosuchmodule.py", "tests/foundation/test_x.py",
                                     "tests/physics/deep/test_y.py", "tests/models/test_seeds.py"])
def test_the_layout_check_catches_a_misplaced_test(tmp_path, planted):
    """A test file placed by anything but its module is found (copy of the real layout)."""
    import shutil

    tests = tmp_path / "tests"
    shutil.copytree(ROOT / "tests", tests, ignore=shutil.ignore_patterns("__pycache__"))
    assert _layout_violations(tests, PKG) == []
    (tmp_path / planted).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / planted).write_text("def test_nothing():\n    pass\n")
    found = _layout_violations(tests, PKG)
    assert len(found) == 1 and Path(planted).name in found[0], found

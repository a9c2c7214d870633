"""Pretrained weights shipped inside the package (no download, ever).

Each entry names a file in ``astrogen/data/models/`` and the exact command that retrains it
from scratch. Stages and the GalSim plug-in accept either such a name or a path to a
``.keras`` file saved by the model's ``save`` method.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from astrogen.errors import ModelError

__all__ = ["Pretrained", "PRETRAINED", "models_dir", "resolve_model_path", "cached_model",
           "save_network"]

# One loaded model per (file, modification time, size) per process: stages built several
# times (validation, Dask workers running many tasks) and GalSim's per-object builders share it.
_CACHE: dict = {}


@dataclass(frozen=True)
class Pretrained:
    """A shipped model: its file, what it is and the command that made it."""

    file: str
    kind: str
    description: str
    command: str


#: Shipped models by name.
PRETRAINED: dict[str, Pretrained] = {
    "flowvae_cosmos64": Pretrained(
        file="flowvae_cosmos64.keras",
        kind="flowvae",
        description="Conditional FlowVAE on 64x64 HST/COSMOS-like stamps at 0.03 arcsec/pixel "
                    "(F814W, count/s, zero point 25.94), conditioned on mag, hlr [arcsec], z.",
        command="astrogen train configs/flowvae.yaml",
    ),
    "baryon_painter_64": Pretrained(
        file="baryon_painter_64.keras",
        kind="baryon_painter",
        description="3-D conditional VAE painting baryonified total matter, gas density, "
                    "temperature and electron pressure onto 1 Mpc/h dark-matter boxes at "
                    "z = 0, trained on BaryonForge (Schneider+19) baryonification.",
        command="astrogen train configs/baryon_painter.yaml "
                "output=astrogen/data/models/baryon_painter_64.keras",
    ),
}


def models_dir() -> Path:
    """Folder of the shipped weights (``astrogen/data/models``)."""
    return Path(__file__).resolve().parents[1] / "data" / "models"


def resolve_model_path(model: str, kind: str, key: str = "model") -> Path:
    """Path of a shipped model name or of a user's ``.keras`` file.

    Parameters
    ----------
    model : str
        A name of :data:`PRETRAINED` or a path to a ``.keras`` file.
    kind : str
        The model kind the caller needs (``"flowvae"``...).
    key : str
        Configuration key reported in errors.

    Raises
    ------
    ModelError
        Unknown name, a shipped model of another kind, or a missing file.
    """
    name = str(model)
    if name in PRETRAINED:
        entry = PRETRAINED[name]
        if entry.kind != kind:
            raise ModelError(f"is a {entry.kind} model, not a {kind} model.", key=key,
                             received={key: name})
        path = models_dir() / entry.file
        if not path.is_file():
            raise ModelError(f"the shipped weights are missing from the installation; "
                             f"retrain them with: {entry.command}", key=key,
                             received={key: name, "expected file": str(path)})
        return path
    path = Path(name).expanduser()
    if path.suffix in (".keras", ".json") and path.is_file():
        return path
    names = sorted(n for n, e in PRETRAINED.items() if e.kind == kind)
    raise ModelError(f"is neither a shipped {kind} model ({', '.join(names)}) nor an "
                     f"existing .keras file.", key=key, received={key: name})


def cached_model(path: Path, loader):
    """``loader(path)``, loaded once per process and file version.

    Parameters
    ----------
    path : pathlib.Path
        Model file (``.keras``; a ``.json`` sidecar path is mapped to its ``.keras``).
    loader : callable
        Function that loads a model from a path, e.g.
        :func:`astrogen.models.flowvae.load_flowvae`.
    """
    path = Path(path).resolve()
    if path.suffix == ".json":
        path = path.with_suffix(".keras")
    stat = path.stat()
    key = (str(path), stat.st_mtime_ns, stat.st_size, loader)
    if key not in _CACHE:
        _CACHE[key] = loader(path)
    return _CACHE[key]


def save_network(network, path, sidecar: dict) -> Path:
    """Write a Keras ``network`` to ``path`` (``.keras``; parent folders created) and
    ``sidecar`` as JSON next to it (``path`` with suffix ``.json``); returns ``path``.

    Raises
    ------
    ModelError
        ``path`` does not end in ``.keras`` (key ``path``).
    """
    import json

    path = Path(path)
    if path.suffix != ".keras":
        raise ModelError("the file name must end in .keras.", key="path",
                         received={"path": str(path)})
    path.parent.mkdir(parents=True, exist_ok=True)
    network.save(path)
    path.with_suffix(".json").write_text(json.dumps(sidecar, indent=2) + "\n")
    return path

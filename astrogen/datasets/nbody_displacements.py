"""Training set of the displacement emulator (D3M, He et al. 2019): many small PM boxes, each
stored as the Zel'dovich displacement of its particles (the input) and the displacement the
particle-mesh code gives them at ``redshift`` (the target), both on the particle lattice.

Each box ``box_id`` is a Gaussian linear field (Eisenstein & Hu, seed
``derive_seed(seed, "nbody_displacements", split, box_id)``) evolved by
:class:`astrogen.nbody.pm.ParticleMesh` (2LPT at ``z_init``, ``n_steps`` FastPM steps, force
mesh ``force_resolution`` times finer). The ``split`` (``"train"`` or ``"test"``) enters the
seed, so a held-out (``test``) box never shares its initial field with a training box, whatever
the box ids.

Arrays of a shard (lengths in Mpc/h, float32, channel-first ``(3, n, n, n)`` on the particle
lattice ``q = (i + shift) L / n``, ``shift`` = the PM's half force-mesh cell):

``zeldovich``
    ``D1(a) Psi1(q)``, the first-order (Zel'dovich) displacement at the output time;
``target``
    ``x_PM - q`` wrapped to the minimal periodic image (``[-L/2, L/2)``) — the PM
    displacement (a particle never moves more than ``L/2`` in these boxes);
``linear3d``
    the linear density contrast at a = 1 (``(n, n, n)``), so any other approximation
    (2LPT, another PM step count) can be recomputed on the same initial conditions.

Why 1LPT as the input and not 2LPT: the Zel'dovich displacement is linear in the initial
field (one FFT pair), so the emulator's input is exactly Gaussian, scales with ``D1`` and is
the cheapest possible; the network learns every non-linear correction itself (as He et al.
2019). 2LPT is kept as the baseline the benchmark compares with.

Storage: one ``box_<split>_<id>.npz`` per box, written atomically, plus ``manifest.json``
(the configuration). :func:`build_displacement_dataset` skips finished shards, so an
interrupted build resumes where it stopped and a box is the same whatever the build order.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from astrogen.datasets.base import DatasetConfig, boxes_complete, claim_folder
from astrogen.datasets.base import read_manifest as read_manifest_file
from astrogen.errors import ConfigError
from astrogen.io.atomic import save_npz
from astrogen.seeds import derive_seed

__all__ = ["DisplacementDatasetConfig", "build_displacement_dataset", "simulate_box",
           "make_pm", "minimal_image", "zeldovich_displacement_field", "read_boxes",
           "dataset_is_complete", "read_manifest", "SPLITS", "write_synthetic_dataset"]

#: the two splits; their seeds never coincide
SPLITS = ("train", "test")


@dataclass
class DisplacementDatasetConfig(DatasetConfig):
    """Settings of a displacement dataset (see the module docstring). Lengths in Mpc/h."""

    SHARD_FIELDS = ()  # one shard per box

    n_boxes: int = 64
    first_box: int = 0
    split: str = "train"
    seed: int = 0
    n_particles: int = 32
    box_size: float = 64.0
    redshift: float = 0.0
    z_init: float = 9.0
    n_steps: int = 20
    force_resolution: int = 2
    Om0: float = 0.30966
    Ob0: float = 0.04897
    h: float = 0.6766
    sigma8: float = 0.8102
    n_s: float = 0.9665

    def check(self) -> None:
        """Check every field (positive integers, physical cosmology); ConfigError names the key."""
        for k in ("n_boxes", "n_particles", "n_steps", "force_resolution"):
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError("must be a positive integer.", key=k, received={k: v})
        if isinstance(self.first_box, bool) or not isinstance(self.first_box, int) \
                or self.first_box < 0:
            raise ConfigError("must be an integer >= 0.", key="first_box",
                              received={"first_box": self.first_box})
        if self.split not in SPLITS:
            raise ConfigError(f"must be one of {list(SPLITS)}.", key="split",
                              received={"split": self.split})
        if self.n_particles % 2 or self.n_particles < 8:
            raise ConfigError("must be even and >= 8.", key="n_particles",
                              received={"n_particles": self.n_particles})
        for k in ("box_size", "Om0", "h", "sigma8", "n_s"):
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
                raise ConfigError("must be a positive number.", key=k, received={k: v})
        if not (0 <= self.redshift < self.z_init):
            raise ConfigError("must satisfy 0 <= redshift < z_init.", key="redshift",
                              received={"redshift": self.redshift, "z_init": self.z_init})

    @property
    def cell_size(self) -> float:
        """Lattice spacing in Mpc/h."""
        return float(self.box_size) / int(self.n_particles)

    def cosmology(self):
        """The data set's :class:`~astrogen.cosmology.background.Cosmology`."""
        from astrogen.cosmology.background import Cosmology

        return Cosmology(Om0=float(self.Om0), Ob0=float(self.Ob0), h=float(self.h),
                         sigma8=float(self.sigma8), n_s=float(self.n_s))

    def box_seed(self, box_id: int) -> int:
        """Seed of the linear field of box ``box_id`` of this split."""
        return derive_seed(self.seed, "nbody_displacements", self.split, int(box_id))


def minimal_image(d: np.ndarray, box_size: float) -> np.ndarray:
    """Periodic differences wrapped into ``[-L/2, L/2)`` (same unit as ``box_size``)."""
    L = float(box_size)
    return np.mod(np.asarray(d) + 0.5 * L, L) - 0.5 * L


def zeldovich_displacement_field(delta_linear: np.ndarray, box_size: float, cosmology,
                                 a: float, shift: float) -> np.ndarray:
    """``D1(a) Psi1`` on the (shifted) lattice, shape ``(3, n, n, n)``, float32, Mpc/h."""
    from astrogen.cosmology.initial import lpt_displacements

    psi1 = lpt_displacements(np.asarray(delta_linear, float), float(box_size), order=1,
                             shift=shift)[0]
    return (float(cosmology.D1(a)) * psi1).astype(np.float32)


def make_pm(cfg: DisplacementDatasetConfig, n_steps: int | None = None, lpt_order: int = 2,
            workers: int | None = 1):
    """The :class:`~astrogen.nbody.pm.ParticleMesh` of a dataset configuration (the linear
    field is always passed to ``run``)."""
    from astrogen.nbody.pm import ParticleMesh

    return ParticleMesh(int(cfg.n_particles), float(cfg.box_size), cfg.cosmology(),
                        power=_no_power, mesh_factor=int(cfg.force_resolution),
                        a_init=1.0 / (1.0 + cfg.z_init),
                        n_steps=int(cfg.n_steps if n_steps is None else n_steps),
                        lpt_order=lpt_order, gradient="fd4", workers=workers)


def _no_power(k):  # pragma: no cover - the linear field is always passed
    raise RuntimeError("the linear field is passed explicitly")


def linear_field(cfg: DisplacementDatasetConfig, box_id: int) -> np.ndarray:
    """The linear density contrast at a = 1 of box ``box_id`` (``(n, n, n)``)."""
    from astrogen.cosmology.initial import gaussian_field
    from astrogen.cosmology.power import LinearPower

    return gaussian_field(int(cfg.n_particles), float(cfg.box_size),
                          LinearPower(cfg.cosmology()), cfg.box_seed(box_id), ndim=3)


def simulate_box(cfg: DisplacementDatasetConfig, box_id: int, pm=None,
                 delta_linear: np.ndarray | None = None) -> dict:
    """Run one PM box; returns the arrays of its shard (see the module docstring)."""
    from astrogen.cosmology.initial import lattice

    n, L = int(cfg.n_particles), float(cfg.box_size)
    if delta_linear is None:
        delta_linear = linear_field(cfg, box_id)
    pm = make_pm(cfg) if pm is None else pm
    a = 1.0 / (1.0 + float(cfg.redshift))
    t0 = time.perf_counter()
    snap = pm.run(a_out=[a], box_id=int(box_id), delta_linear=delta_linear).snapshots[-1]
    t_pm = time.perf_counter() - t0
    q = lattice(n, L, 3, shift=pm.lattice_shift)
    disp = minimal_image(snap.positions - q, L)          # (n^3, 3)
    target = disp.T.reshape(3, n, n, n).astype(np.float32)
    zel = zeldovich_displacement_field(delta_linear, L, pm.cosmology, a, pm.lattice_shift)
    return {"zeldovich": zel, "target": target,
            "linear3d": np.asarray(delta_linear, np.float32),
            "timing": np.array([t_pm]), "box_id": np.array(int(box_id))}


def _shard(path: Path, split: str, box_id: int) -> Path:
    return Path(path) / f"box_{split}_{int(box_id):05d}.npz"


def read_manifest(path) -> dict:
    """The manifest of data set folder ``path`` (:func:`astrogen.datasets.base.read_manifest`)."""
    return read_manifest_file(path)


def _box_ids(cfg: DisplacementDatasetConfig) -> list[int]:
    return list(range(cfg.first_box, cfg.first_box + cfg.n_boxes))


def init_dataset(path, cfg: DisplacementDatasetConfig) -> dict:
    """Create the folder and its manifest, or check that the existing manifest has the same
    configuration (ConfigError naming ``dataset.path`` otherwise)."""
    cfg.check()
    path = Path(path)
    manifest = {"format": "astrogen.nbody_displacements/1", "config": cfg.to_dict(),
                "cell_size": cfg.cell_size, "split": cfg.split, "box_ids": _box_ids(cfg),
                "arrays": {"zeldovich": "Mpc/h (3, n, n, n)", "target": "Mpc/h (3, n, n, n)",
                           "linear3d": "dimensionless (n, n, n), a = 1"}}
    claim_folder(path, manifest)
    return manifest


def build_displacement_dataset(path, cfg: DisplacementDatasetConfig, log=print,
                               max_boxes: int | None = None) -> dict:
    """Build (or finish) the dataset in folder ``path``; returns the manifest.

    Finished shards are skipped (resume). ``max_boxes`` stops after simulating that many
    boxes in this call (for tests of the resume)."""
    path = Path(path)
    manifest = init_dataset(path, cfg)
    pm, done = None, 0
    for box_id in manifest["box_ids"]:
        out = _shard(path, cfg.split, box_id)
        if out.is_file():
            continue
        if max_boxes is not None and done >= max_boxes:
            break
        pm = make_pm(cfg) if pm is None else pm
        shard = simulate_box(cfg, box_id, pm=pm)
        save_npz(out, **shard)
        done += 1
        log(f"nbody_displacements: {cfg.split} box {box_id} done "
            f"(PM {shard['timing'][0]:.2f} s)")
    return manifest


def dataset_is_complete(path) -> bool:
    """True when folder ``path`` holds a manifest and the shard of every box it lists."""
    return boxes_complete(path, lambda p, m, b: _shard(p, m["split"], b))


def read_boxes(path, box_ids=None, keys=("zeldovich", "target")) -> dict:
    """Stack the arrays ``keys`` of the shards of ``box_ids`` (default all):
    ``(n_boxes, ...)`` each, plus ``box_id``."""
    path = Path(path)
    m = read_manifest(path)
    ids = m["box_ids"] if box_ids is None else list(box_ids)
    out = {k: [] for k in keys}
    for b in ids:
        with np.load(_shard(path, m["split"], b)) as z:
            for k in keys:
                out[k].append(z[k])
    res = {k: np.stack(v) for k, v in out.items()}
    res["box_id"] = np.asarray(ids, int)
    return res


def write_synthetic_dataset(path, cfg: DisplacementDatasetConfig, seed: int = 0) -> dict:
    """A dataset with the layout of :func:`build_displacement_dataset` but no PM run: the
    target is the Zel'dovich displacement plus a smooth random correction. For tests and
    smoke runs of the trainer only (no TensorFlow)."""
    path = Path(path)
    manifest = init_dataset(path, cfg)
    n = int(cfg.n_particles)
    for b in manifest["box_ids"]:
        rng = np.random.default_rng(derive_seed(seed, "synthetic_disp", b))
        zel = rng.standard_normal((3, n, n, n)).astype(np.float32)
        tgt = (1.2 * zel + 0.1 * rng.standard_normal(zel.shape)).astype(np.float32)
        save_npz(_shard(path, cfg.split, b), zeldovich=zel, target=tgt,
                 linear3d=rng.standard_normal((n, n, n)).astype(np.float32),
                 timing=np.zeros(1), box_id=np.array(int(b)))
    return manifest

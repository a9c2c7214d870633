"""Training set of the 3-D halo network (Berger & Stein 2019): linear fields and protohalo
masks on the particle lattice of small PM boxes.

Each box ``box_id`` is a Gaussian linear field (Eisenstein & Hu,
``derive_seed(seed, "protohalos", box_id)``) evolved to ``redshift`` by
:class:`astrogen.nbody.pm.ParticleMesh` (numpy backend, 2LPT at ``z_init``, ``n_steps``
steps, force mesh ``force_resolution`` times finer), and its FoF haloes
(:func:`astrogen.nbody.fof.friends_of_friends`, ``linking_length``, groups of
``min_members`` particles or more). Particle ``p`` starts on lattice cell
``numpy.unravel_index(p, (n, n, n))``, so every per-particle quantity is a 3-D grid on the
lattice. One shard per box holds:

``linear``
    linear density contrast at z = 0 on the lattice, float32 (n, n, n) (dimensionless);
``mask``
    protohalo mask, uint8 (n, n, n): 1 on the initial cell of every particle that ends in a
    FoF halo of at least ``mask_min_particles`` particles;
``halo_id``
    int32 (n, n, n): the FoF halo of each particle (``-1``: in no halo of ``min_members``),
    halo ids by decreasing mass;
``halo_n``, ``halo_mass``, ``halo_x``, ``halo_y``, ``halo_z``
    FoF catalogue: particles, mass (Msun/h), periodic centre of mass (Mpc/h, Eulerian, at
    ``redshift``);
``timing``
    seconds of PM and FoF.

Storage: ``box_<id>.npz`` shards written atomically next to ``manifest.json`` (the
configuration); :func:`build_protohalo_dataset` skips finished shards, so an interrupted
build resumes where it stopped, and a box is the same whatever the order of the build.
Held-out boxes are another folder with the same settings and other ``first_box``: box ids,
and so seeds, never overlap.
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

__all__ = ["ProtoHaloDatasetConfig", "build_protohalo_dataset", "simulate_protohalo_box",
           "read_protohalo_boxes", "read_protohalo_manifest", "protohalo_dataset_is_complete",
           "make_protohalo_pm"]


@dataclass
class ProtoHaloDatasetConfig(DatasetConfig):
    """Settings of a protohalo dataset (see the module docstring). Lengths in Mpc/h."""

    SHARD_FIELDS = ()  # one shard per box

    n_boxes: int = 48
    first_box: int = 0
    seed: int = 0
    n_grid: int = 32
    box_size: float = 32.0
    redshift: float = 0.0
    z_init: float = 9.0
    n_steps: int = 10
    force_resolution: int = 2
    linking_length: float = 0.2
    min_members: int = 20
    mask_min_particles: int = 40
    Om0: float = 0.30966
    Ob0: float = 0.04897
    h: float = 0.6766
    sigma8: float = 0.8102
    n_s: float = 0.9665

    def check(self) -> None:
        """Check every field (positive integers, physical cosmology); ConfigError names the key."""
        for k in ("n_boxes", "n_grid", "n_steps", "force_resolution", "min_members",
                  "mask_min_particles"):
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError("must be a positive integer.", key=k, received={k: v})
        if isinstance(self.first_box, bool) or not isinstance(self.first_box, int) \
                or self.first_box < 0:
            raise ConfigError("must be an integer >= 0.", key="first_box",
                              received={"first_box": self.first_box})
        if self.n_grid % 8:
            raise ConfigError("must be a multiple of 8.", key="n_grid",
                              received={"n_grid": self.n_grid})
        if self.min_members < 2 or self.mask_min_particles < self.min_members:
            raise ConfigError("must satisfy 2 <= min_members <= mask_min_particles.",
                              key="mask_min_particles",
                              received={"min_members": self.min_members,
                                        "mask_min_particles": self.mask_min_particles})
        for k in ("box_size", "Om0", "h", "sigma8", "n_s", "linking_length"):
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
                raise ConfigError("must be a positive number.", key=k, received={k: v})
        if not (0 <= self.redshift < self.z_init):
            raise ConfigError("must satisfy 0 <= redshift < z_init.", key="redshift",
                              received={"redshift": self.redshift, "z_init": self.z_init})

    def cosmology(self):
        """The data set's :class:`~astrogen.cosmology.background.Cosmology`."""
        from astrogen.cosmology.background import Cosmology

        return Cosmology(Om0=float(self.Om0), Ob0=float(self.Ob0), h=float(self.h),
                         sigma8=float(self.sigma8), n_s=float(self.n_s))

    def particle_mass(self) -> float:
        """Mass of one particle, Msun/h."""
        from astrogen.nbody.fof import particle_mass

        return particle_mass(float(self.Om0), float(self.box_size), int(self.n_grid) ** 3)


def make_protohalo_pm(cfg: ProtoHaloDatasetConfig):
    """The :class:`~astrogen.nbody.pm.ParticleMesh` (numpy backend) of a configuration."""
    from astrogen.nbody.pm import ParticleMesh

    return ParticleMesh(int(cfg.n_grid), float(cfg.box_size), cfg.cosmology(),
                        power=_no_power, mesh_factor=int(cfg.force_resolution),
                        a_init=1.0 / (1.0 + cfg.z_init), n_steps=int(cfg.n_steps),
                        lpt_order=2, gradient="fd4")


def _no_power(k):  # pragma: no cover - the linear field is always passed
    raise RuntimeError("the linear field is passed explicitly")


def box_linear_field(cfg: ProtoHaloDatasetConfig, box_id: int) -> np.ndarray:
    """The seeded z = 0 linear density contrast of box ``box_id`` (n, n, n)."""
    from astrogen.cosmology.initial import gaussian_field
    from astrogen.cosmology.power import LinearPower

    return gaussian_field(int(cfg.n_grid), float(cfg.box_size), LinearPower(cfg.cosmology()),
                          derive_seed(cfg.seed, "protohalos", int(box_id)), ndim=3)


def simulate_protohalo_box(cfg: ProtoHaloDatasetConfig, box_id: int,
                           delta_linear: np.ndarray | None = None, pm=None) -> dict:
    """Run one PM box + FoF; returns its shard (a dict of arrays, see the module docstring).

    ``delta_linear`` (z = 0 linear field on the lattice) defaults to the box's seeded draw;
    ``pm`` is a reusable :class:`~astrogen.nbody.pm.ParticleMesh` for these settings.
    """
    from astrogen.nbody.fof import friends_of_friends

    n, L = int(cfg.n_grid), float(cfg.box_size)
    if delta_linear is None:
        delta_linear = box_linear_field(cfg, box_id)
    delta_linear = np.asarray(delta_linear, float)
    if delta_linear.shape != (n, n, n):
        raise ConfigError("must have shape (n_grid,)*3.", key="delta_linear",
                          received={"shape": delta_linear.shape, "n_grid": n})
    if pm is None:
        pm = make_protohalo_pm(cfg)
    t0 = time.perf_counter()
    res = pm.run(a_out=[1.0 / (1.0 + cfg.redshift)], box_id=int(box_id),
                 delta_linear=delta_linear)
    t_pm = time.perf_counter() - t0
    snap = res.snapshots[-1]
    t1 = time.perf_counter()
    tab, labels = friends_of_friends(snap.positions, L, linking_length=cfg.linking_length,
                                     min_members=cfg.min_members,
                                     particle_mass_msun_h=cfg.particle_mass(),
                                     return_labels=True)
    t_fof = time.perf_counter() - t1
    counts = np.asarray(tab["n_particles"], np.int64)
    big = np.flatnonzero(counts >= cfg.mask_min_particles)
    mask = np.isin(labels, big).reshape(n, n, n).astype(np.uint8)
    return {"linear": delta_linear.astype(np.float32), "mask": mask,
            "halo_id": labels.reshape(n, n, n).astype(np.int32),
            "halo_n": counts, "halo_mass": np.asarray(tab["mass"], np.float64),
            "halo_x": np.asarray(tab["x"], np.float64),
            "halo_y": np.asarray(tab["y"], np.float64),
            "halo_z": np.asarray(tab["z"], np.float64),
            "timing": np.array([t_pm, t_fof]), "box_id": np.array(int(box_id))}


def _shard(path: Path, box_id: int) -> Path:
    return Path(path) / f"box_{int(box_id):05d}.npz"


def read_protohalo_manifest(path) -> dict:
    """The manifest of data set folder ``path`` (:func:`astrogen.datasets.base.read_manifest`)."""
    return read_manifest_file(path)


def init_protohalo_dataset(path, cfg: ProtoHaloDatasetConfig) -> dict:
    """Create the folder and its manifest (or check that an existing manifest has the same
    configuration); returns the manifest."""
    cfg.check()
    path = Path(path)
    manifest = {"format": "astrogen.protohalos/1", "config": cfg.to_dict(),
                "cell_size": float(cfg.box_size) / int(cfg.n_grid),
                "particle_mass_msun_h": cfg.particle_mass(),
                "box_ids": list(range(cfg.first_box, cfg.first_box + cfg.n_boxes))}
    claim_folder(path, manifest)
    return manifest


def build_protohalo_dataset(path, cfg: ProtoHaloDatasetConfig, log=print) -> dict:
    """Build (or finish) the dataset in folder ``path``; returns the manifest.

    A folder holding a manifest of another configuration is refused (ConfigError)."""
    path = Path(path)
    manifest = init_protohalo_dataset(path, cfg)
    pm = None
    for box_id in manifest["box_ids"]:
        out = _shard(path, box_id)
        if out.is_file():
            continue
        if pm is None:
            pm = make_protohalo_pm(cfg)
        t0 = time.perf_counter()
        shard = simulate_protohalo_box(cfg, box_id, pm=pm)
        save_npz(out, **shard)
        log(f"protohalos: box {box_id} done in {time.perf_counter() - t0:.1f} s "
            f"({int((shard['halo_n'] >= cfg.mask_min_particles).sum())} haloes >= "
            f"{cfg.mask_min_particles} particles, mask fraction {shard['mask'].mean():.3f})")
    return manifest


def protohalo_dataset_is_complete(path) -> bool:
    """True when folder ``path`` holds a manifest and the shard of every box it lists."""
    return boxes_complete(path, lambda p, m, b: _shard(p, b))


def read_protohalo_boxes(path, box_ids=None, keys=("linear", "mask")) -> dict:
    """Stack the 3-D arrays ``keys`` of the shards of ``box_ids`` (default all) along a new
    first axis; ``box_id`` is added."""
    path = Path(path)
    m = read_protohalo_manifest(path)
    ids = m["box_ids"] if box_ids is None else list(box_ids)
    out = {k: [] for k in keys}
    for b in ids:
        with np.load(_shard(path, b)) as z:
            for k in keys:
                out[k].append(z[k])
    res = {k: np.stack(v) for k, v in out.items()}
    res["box_id"] = np.asarray(ids, np.int64)
    return res


def read_protohalo_box(path, box_id: int) -> dict:
    """Every array of one shard."""
    with np.load(_shard(path, box_id)) as z:
        return {k: z[k] for k in z.files}

"""Training set of the N-body emulator and the halo-map network: many small PM boxes, cut
into projected slabs.

Each box ``box_id`` is a Gaussian linear field (Eisenstein & Hu, ``derive_seed(seed,
"nbody_slices", box_id)``) evolved to ``redshift`` by :class:`astrogen.nbody.pm.ParticleMesh`
with the settings of ``pipelines/nbody_pm.yaml`` (2LPT at ``z_init``, ``n_steps`` steps, force
mesh ``force_resolution`` times finer), and its FoF haloes (:func:`friends_of_friends`).
The box is then projected along each of the 3 axes into ``n_grid / slab_thickness`` slabs of
``slab_thickness`` cells (mean over the cells, so ``1 + delta`` keeps mean 1), giving
``3 n_grid / slab_thickness`` square images per box of:

``linear``
    projected linear density contrast at z = 0 (the emulator's condition);
``evolved``
    projected ``1 + delta`` of the PM particles (CIC), at ``redshift``;
``mask``
    1 on pixels within ``halo_radius`` pixels of a FoF halo whose centre lies in the slab;
``log_mass``
    log10(M / (Msun/h)) of that halo on its mask pixels (the most massive if two overlap),
    0 elsewhere.

The box's 3-D linear and evolved fields (float32) and its halo table are stored too.
Storage: one ``box_<id>.npz`` shard per box, written atomically, plus ``manifest.json``
(the configuration). :func:`build_slice_dataset` skips finished shards, so an interrupted
build resumes where it stopped, and a box is the same whatever the order of the build.

Image convention: slab ``s`` along axis ``a`` is image ``a * n_slabs + s``; its pixel
``[i, j]`` is the cell ``(i, j)`` of the two remaining axes in increasing order (for
axis 2: ``x = i * cell``, ``y = j * cell``), cell ``i`` centred at ``i * cell_size``.
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
from astrogen.nbody.slabs import project_slabs, slab_geometry  # noqa: F401 (re-export)
from astrogen.seeds import derive_seed

__all__ = ["SliceDatasetConfig", "build_slice_dataset", "project_slabs", "halo_slab_maps",
           "read_slices", "read_manifest", "simulate_box", "slab_geometry", "init_dataset",
           "dataset_is_complete", "read_box", "make_pm", "write_synthetic_dataset"]



@dataclass
class SliceDatasetConfig(DatasetConfig):
    """Settings of a slice dataset (see the module docstring). Lengths in Mpc/h."""

    SHARD_FIELDS = ()  # one shard per box

    n_boxes: int = 24
    first_box: int = 0
    seed: int = 0
    n_grid: int = 64
    box_size: float = 128.0
    redshift: float = 0.0
    z_init: float = 9.0
    n_steps: int = 10
    force_resolution: int = 2
    slab_thickness: int = 8
    linking_length: float = 0.2
    min_members: int = 20
    halo_radius: float = 1.0
    Om0: float = 0.30966
    Ob0: float = 0.04897
    h: float = 0.6766
    sigma8: float = 0.8102
    n_s: float = 0.9665

    def check(self) -> None:
        """Check every parameter.

        Raises
        ------
        astrogen.errors.ConfigError
            Naming the key and value: counts must be positive integers, ``first_box`` an
            integer >= 0, ``n_grid`` even and a multiple of ``slab_thickness``, ``box_size``
            (Mpc/h), ``halo_radius`` and the cosmological parameters positive, and
            ``0 <= redshift < z_init``.
        """
        for k in ("n_boxes", "n_grid", "n_steps", "force_resolution", "slab_thickness",
                  "min_members"):
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError("must be a positive integer.", key=k, received={k: v})
        if isinstance(self.first_box, bool) or not isinstance(self.first_box, int) \
                or self.first_box < 0:
            raise ConfigError("must be an integer >= 0.", key="first_box",
                              received={"first_box": self.first_box})
        if self.n_grid % 2 or self.n_grid % self.slab_thickness:
            raise ConfigError("n_grid must be even and a multiple of slab_thickness.",
                              key="slab_thickness",
                              received={"n_grid": self.n_grid,
                                        "slab_thickness": self.slab_thickness})
        for k in ("box_size", "halo_radius", "Om0", "h", "sigma8", "n_s"):
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
                raise ConfigError("must be a positive number.", key=k, received={k: v})
        if not (0 <= self.redshift < self.z_init):
            raise ConfigError("must satisfy 0 <= redshift < z_init.", key="redshift",
                              received={"redshift": self.redshift, "z_init": self.z_init})

    @property
    def n_slabs(self) -> int:
        """Slabs per axis."""
        return self.n_grid // self.slab_thickness

    @property
    def images_per_box(self) -> int:
        """Projected slab images per box: ``n_slabs`` along each of the three axes."""
        return 3 * self.n_slabs

    def cosmology(self):
        """The background cosmology of the simulations.

        Returns
        -------
        astrogen.cosmology.background.Cosmology
            Built from ``Om0``, ``Ob0``, ``h``, ``sigma8`` and ``n_s``.
        """
        from astrogen.cosmology.background import Cosmology

        return Cosmology(Om0=float(self.Om0), Ob0=float(self.Ob0), h=float(self.h),
                         sigma8=float(self.sigma8), n_s=float(self.n_s))


def halo_slab_maps(halos: dict, n_grid: int, box_size: float, thickness: int,
                   radius: float, axes=(0, 1, 2)) -> tuple[np.ndarray, np.ndarray]:
    """Halo mask and log10-mass maps of the projected slabs (see the module docstring).

    Parameters
    ----------
    halos : dict with ``x``, ``y``, ``z`` (Mpc/h) and ``mass`` (Msun/h) arrays
    radius : float
        Mask radius in pixels (cells) around each halo centre (periodic).
    """
    cell = float(box_size) / n_grid
    ns = n_grid // thickness
    pos = np.column_stack([np.asarray(halos[c], float) for c in ("x", "y", "z")]) / cell
    mass = np.asarray(halos["mass"], float)
    order = np.argsort(mass)  # most massive painted last, so it wins overlaps
    mask = np.zeros((len(axes) * ns, n_grid, n_grid), np.uint8)
    logm = np.zeros(mask.shape, np.float32)
    r = int(np.ceil(radius))
    offs = np.arange(-r, r + 1)
    for ai, a in enumerate(axes):
        other = [b for b in (0, 1, 2) if b != a]
        for h in order:
            p = pos[h]
            s = int(np.floor(np.mod(p[a], n_grid) / thickness)) % ns
            u, v = p[other[0]], p[other[1]]
            iu, iv = int(np.rint(u)), int(np.rint(v))
            for du in offs:
                for dv in offs:
                    i, j = iu + du, iv + dv
                    if (i - u) ** 2 + (j - v) ** 2 <= radius ** 2 + 1e-9:
                        mask[ai * ns + s, i % n_grid, j % n_grid] = 1
                        logm[ai * ns + s, i % n_grid, j % n_grid] = np.log10(mass[h])
    return mask, logm


def simulate_box(cfg: SliceDatasetConfig, box_id: int, delta_linear: np.ndarray | None = None,
                 pm=None) -> dict:
    """Run one PM box + FoF and cut it into slabs. Returns a dict of arrays (a shard).

    ``delta_linear`` (z = 0 linear field on the lattice) defaults to the box's seeded draw;
    ``pm`` is a reusable :class:`~astrogen.nbody.pm.ParticleMesh` for these settings.
    """
    from astrogen.cosmology.initial import gaussian_field
    from astrogen.cosmology.power import LinearPower
    from astrogen.nbody.fof import friends_of_friends, particle_mass

    cosmo = cfg.cosmology()
    n, L = int(cfg.n_grid), float(cfg.box_size)
    if delta_linear is None:
        delta_linear = gaussian_field(n, L, LinearPower(cosmo),
                                      derive_seed(cfg.seed, "nbody_slices", int(box_id)), ndim=3)
    if pm is None:
        pm = make_pm(cfg)
    t0 = time.perf_counter()
    res = pm.run(a_out=[1.0 / (1.0 + cfg.redshift)], box_id=int(box_id),
                 delta_linear=np.asarray(delta_linear, float))
    t_pm = time.perf_counter() - t0
    snap = res.snapshots[-1]
    t1 = time.perf_counter()
    mp = particle_mass(cosmo.Om0, L, n ** 3)
    tab = friends_of_friends(snap.positions, L, linking_length=cfg.linking_length,
                             min_members=cfg.min_members, particle_mass_msun_h=mp)
    t_fof = time.perf_counter() - t1
    halos = {c: np.asarray(tab[c], np.float64) for c in ("x", "y", "z", "mass")}
    evolved = 1.0 + np.asarray(snap.density.delta, np.float64)
    mask, logm = halo_slab_maps(halos, n, L, cfg.slab_thickness, cfg.halo_radius)
    return {"linear": project_slabs(delta_linear, cfg.slab_thickness),
            "evolved": project_slabs(evolved, cfg.slab_thickness),
            "mask": mask, "log_mass": logm,
            "linear3d": np.asarray(delta_linear, np.float32),
            "evolved3d": evolved.astype(np.float32),
            "halo_x": halos["x"], "halo_y": halos["y"], "halo_z": halos["z"],
            "halo_mass": halos["mass"],
            "timing": np.array([t_pm, t_fof]), "box_id": np.array(int(box_id))}


def make_pm(cfg: SliceDatasetConfig):
    """The :class:`~astrogen.nbody.pm.ParticleMesh` of a dataset configuration."""
    from astrogen.nbody.pm import ParticleMesh

    cosmo = cfg.cosmology()
    return ParticleMesh(int(cfg.n_grid), float(cfg.box_size), cosmo, power=_no_power,
                        mesh_factor=int(cfg.force_resolution), a_init=1.0 / (1.0 + cfg.z_init),
                        n_steps=int(cfg.n_steps), lpt_order=2, gradient="fd4")


def _no_power(k):  # pragma: no cover - the linear field is always passed
    raise RuntimeError("the linear field is passed explicitly")


def _shard(path: Path, box_id: int) -> Path:
    return Path(path) / f"box_{int(box_id):05d}.npz"


def read_manifest(path) -> dict:
    """The manifest of data set folder ``path`` (:func:`astrogen.datasets.base.read_manifest`)."""
    return read_manifest_file(path)


def init_dataset(path, cfg: SliceDatasetConfig) -> dict:
    """Create the folder and its manifest (or check that an existing manifest has the same
    configuration); returns the manifest. Shards are then ``box_<id>.npz`` (see
    :func:`simulate_box` for their arrays)."""
    cfg.check()
    path = Path(path)
    manifest = {"format": "astrogen.nbody_slices/1", "config": cfg.to_dict(),
                **slab_geometry(cfg.n_grid, cfg.box_size, cfg.slab_thickness),
                "images_per_box": cfg.images_per_box,
                "box_ids": list(range(cfg.first_box, cfg.first_box + cfg.n_boxes))}
    claim_folder(path, manifest)
    return manifest


def build_slice_dataset(path, cfg: SliceDatasetConfig, log=print) -> dict:
    """Build (or finish) the dataset in folder ``path``; returns the manifest.

    A folder holding a manifest of another configuration is refused (ConfigError).
    """
    path = Path(path)
    manifest = init_dataset(path, cfg)
    pm = None
    for box_id in manifest["box_ids"]:
        out = _shard(path, box_id)
        if out.is_file():
            continue
        if pm is None:
            pm = make_pm(cfg)
        t0 = time.perf_counter()
        shard = simulate_box(cfg, box_id, pm=pm)
        save_npz(out, **shard)
        log(f"nbody_slices: box {box_id} done in {time.perf_counter() - t0:.1f} s "
            f"(PM {shard['timing'][0]:.1f} s, {len(shard['halo_mass'])} haloes)")
    return manifest


def dataset_is_complete(path) -> bool:
    """True when folder ``path`` holds a manifest and the shard of every box it lists."""
    return boxes_complete(path, lambda p, m, b: _shard(p, b))


def read_slices(path, box_ids=None, keys=("linear", "evolved", "mask", "log_mass")) -> dict:
    """Concatenate the per-image arrays of the shards of ``box_ids`` (default all)."""
    path = Path(path)
    m = read_manifest(path)
    ids = m["box_ids"] if box_ids is None else list(box_ids)
    out = {k: [] for k in keys}
    out["box_id"] = []
    for b in ids:
        with np.load(_shard(path, b)) as z:
            for k in keys:
                out[k].append(z[k])
            out["box_id"].append(np.full(len(z[keys[0]]), int(b)))
    return {k: np.concatenate(v, axis=0) for k, v in out.items()}


def read_box(path, box_id: int, keys=None) -> dict:
    """The arrays ``keys`` (default every array) of one shard."""
    with np.load(_shard(path, box_id)) as z:
        return {k: z[k] for k in (z.files if keys is None else keys)}


def write_synthetic_dataset(path, cfg: SliceDatasetConfig, seed: int = 0,
                            n_halos: int = 5) -> dict:
    """A dataset with the layout of :func:`build_slice_dataset` but no simulation: lognormal
    "evolved" fields ``exp(g - 1/2)`` of white-noise "linear" fields ``g`` and random haloes.
    For tests and smoke runs of the trainers only (seconds, no TensorFlow)."""
    path = Path(path)
    manifest = init_dataset(path, cfg)
    n, L = int(cfg.n_grid), float(cfg.box_size)
    for b in manifest["box_ids"]:
        rng = np.random.default_rng(derive_seed(seed, "synthetic", b))
        lin = rng.standard_normal((n, n, n))
        evo = np.exp(lin - 0.5)
        halos = {c: rng.uniform(0, L, n_halos) for c in ("x", "y", "z")}
        halos["mass"] = 10 ** rng.uniform(13, 14, n_halos)
        mask, logm = halo_slab_maps(halos, n, L, cfg.slab_thickness, cfg.halo_radius)
        save_npz(_shard(path, b), linear=project_slabs(lin, cfg.slab_thickness),
                 evolved=project_slabs(evo, cfg.slab_thickness), mask=mask, log_mass=logm,
                 linear3d=lin.astype(np.float32), evolved3d=evo.astype(np.float32),
                 halo_x=halos["x"], halo_y=halos["y"], halo_z=halos["z"],
                 halo_mass=halos["mass"], timing=np.zeros(2), box_id=np.array(int(b)))
    return manifest

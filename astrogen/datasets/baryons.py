r"""Paired dark-matter -> gas training fields for the baryon painter (HyPhy-like).

Each box ``box_id`` is a Gaussian linear field (``derive_seed(seed, "baryon_pairs", box_id)``)
evolved to ``redshift`` by :class:`astrogen.nbody.pm.ParticleMesh` (2LPT at ``z_init``,
``n_steps`` kick-drift-kick steps, force mesh ``force_resolution`` times finer), its
friends-of-friends haloes (:func:`astrogen.nbody.fof.friends_of_friends`), and a **backend**
that turns (dark-matter density, haloes) into gas fields on the same grid:

``baryonforge`` (the reference; needs the separate environment of ``make baryons-env``)
    BaryonForge 1.0.0 (Anbajagane et al. 2024) with the Schneider et al. (2019) profiles:
    ``BaryonifyGrid`` displaces the dark-matter-only mass grid into the baryonified total
    matter; ``PaintProfilesGrid`` paints the halo gas density and gas pressure; the gas
    outside haloes follows the matter that the painted truncated NFW haloes leave over
    (``(Ob0/Om0) max(rho_dmo - rho_NFW, 0)``), at the photo-ionised IGM temperature
    ``T_igm (rho_gas / rho_b)^(2/3)``. This is a **baryonification model, not
    hydrodynamics**: the painter learns what BaryonForge paints.
``analytic`` (no dependency; tests and smoke runs)
    gas = ``(Ob0/Om0)`` x the dark matter smoothed by a Gaussian of ``smoothing`` Mpc/h
    (pressure smoothing), ``T = T_igm (rho_gas/rho_b)^(2/3)``, total = dark matter.

Any callable ``backend(dm, halos, cfg) -> dict`` of the four arrays below can be passed to
:func:`build_baryon_dataset` (the pluggable path the tests use).

Paired-field format (``astrogen.baryon_pairs/1``): a folder with ``manifest.json`` (the
configuration, units, the backend, the BaryonForge parameters) and one ``box_<id>.npz`` per
box (written atomically, so an interrupted build resumes at the first missing box):

============== ============== =====================================================
array          shape, dtype   meaning (unit)
============== ============== =====================================================
``dm``         (n,n,n) f4     dark-matter-only ``1 + delta`` (CIC; mean 1)
``total``      (n,n,n) f4     baryonified total matter ``1 + delta`` (mean 1)
``gas``        (n,n,n) f4     gas density / mean cosmic baryon density ``Ob0 rho_crit``
``temperature`` (n,n,n) f4    gas temperature (K)
``pressure``   (n,n,n) f4     electron pressure ``n_e k T`` (keV cm^-3, physical)
``halo_*``     (n_h,) f8      FoF haloes: ``x, y, z`` (Mpc/h), ``mass`` (Msun/h)
============== ============== =====================================================

Cell ``[i, j, k]`` is centred at ``(i, j, k) * cell_size`` (the CIC convention of
:func:`astrogen.nbody.mesh.paint_density`).
A hydro box (CAMELS, IllustrisTNG) converts to this format by depositing its dark matter and
gas on the grid (``dm``: dark matter of the matching N-body run, or the hydro run's own total
matter; ``gas``, ``temperature``, ``pressure`` from the gas cells) and writing the same npz
keys and manifest with ``backend: "external"``; ``astrogen train configs/baryon_painter.yaml``
then retrains on it unchanged.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from astrogen.datasets.base import DatasetConfig, boxes_complete, claim_folder
from astrogen.datasets.base import read_manifest as read_manifest_file
from astrogen.errors import ConfigError, suggest
from astrogen.io.atomic import save_npz
from astrogen.seeds import derive_seed

__all__ = ["BaryonDatasetConfig", "build_baryon_dataset", "read_baryon_box", "read_manifest",
           "dataset_is_complete", "simulate_dm_box", "analytic_backend", "BACKENDS",
           "FIELDS", "FIELD_UNITS", "FORMAT", "K_B_KEV", "MU_E", "MU", "T_IGM",
           "mean_gas_density_cgs"]

#: format string of the manifest
FORMAT = "astrogen.baryon_pairs/1"

#: the gas-side fields of a box, in storage order
FIELDS = ("total", "gas", "temperature", "pressure")

#: units of every stored array
FIELD_UNITS = {"dm": "1 + delta (dimensionless)", "total": "1 + delta (dimensionless)",
               "gas": "rho_gas / (Ob0 rho_crit0) (dimensionless)", "temperature": "K",
               "pressure": "keV cm^-3 (physical electron pressure n_e k T)",
               "halo_x": "Mpc/h", "halo_y": "Mpc/h", "halo_z": "Mpc/h",
               "halo_mass": "Msun/h"}

#: Boltzmann constant in keV/K
K_B_KEV = 8.617333262e-8
#: mean molecular weight per free electron and per particle of a fully ionised H+He plasma
#: with hydrogen mass fraction X = 0.76
MU_E = 2.0 / (1.0 + 0.76)
MU = 4.0 / (3.0 + 5.0 * 0.76)
#: temperature of the photo-ionised intergalactic gas at the mean density (K)
T_IGM = 1.0e4
#: proton mass (g), critical density today per h^2 (g cm^-3)
_M_P = 1.67262192e-24
_RHO_CRIT_H2 = 1.87834e-29


def mean_gas_density_cgs(Ob0: float, h: float, redshift: float) -> float:
    """Mean cosmic baryon density ``Ob0 rho_crit0 (1+z)^3`` in g cm^-3 (physical)."""
    return float(Ob0 * _RHO_CRIT_H2 * h * h * (1.0 + redshift) ** 3)


@dataclass
class BaryonDatasetConfig(DatasetConfig):
    """Settings of a paired-field data set (see the module docstring). Lengths in Mpc/h.

    ``bf_params`` overrides BaryonForge's Schneider et al. (2019) parameters (``M_c`` in
    Msun/h, ``theta_ej``, ``beta``, ``eta``, ...); ``smoothing`` (Mpc/h) is the analytic
    backend's pressure smoothing; ``epsilon_max`` the BaryonForge cut-out radius in units
    of R200c."""

    SHARD_FIELDS = ()  # one shard per box

    n_boxes: int = 16
    first_box: int = 0
    seed: int = 0
    n_grid: int = 64
    box_size: float = 64.0
    redshift: float = 0.0
    z_init: float = 9.0
    n_steps: int = 10
    force_resolution: int = 2
    linking_length: float = 0.2
    min_members: int = 20
    backend: str = "baryonforge"
    epsilon_max: float = 8.0
    smoothing: float = 1.0
    bf_params: dict = field(default_factory=dict)
    Om0: float = 0.30966
    Ob0: float = 0.04897
    h: float = 0.6766
    sigma8: float = 0.8102
    n_s: float = 0.9665

    def check(self) -> None:
        """Check every field (positive integers, physical cosmology); ConfigError names the key."""
        for k in ("n_boxes", "n_grid", "n_steps", "force_resolution", "min_members"):
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError("must be a positive integer.", key=k, received={k: v})
        if isinstance(self.first_box, bool) or not isinstance(self.first_box, int) \
                or self.first_box < 0:
            raise ConfigError("must be an integer >= 0.", key="first_box",
                              received={"first_box": self.first_box})
        if self.n_grid % 2 or self.n_grid < 8:
            raise ConfigError("must be even and >= 8.", key="n_grid",
                              received={"n_grid": self.n_grid})
        for k in ("box_size", "epsilon_max", "smoothing", "Om0", "h", "sigma8", "n_s",
                  "linking_length"):
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
                raise ConfigError("must be a positive number.", key=k, received={k: v})
        if not (0 < self.Ob0 < self.Om0):
            raise ConfigError("must satisfy 0 < Ob0 < Om0.", key="Ob0",
                              received={"Ob0": self.Ob0, "Om0": self.Om0})
        if not (0 <= self.redshift < self.z_init):
            raise ConfigError("must satisfy 0 <= redshift < z_init.", key="redshift",
                              received={"redshift": self.redshift, "z_init": self.z_init})
        if self.backend not in BACKENDS:
            raise ConfigError(f"unknown backend; expected one of {sorted(BACKENDS)}."
                              + suggest(str(self.backend), list(BACKENDS)), key="backend",
                              received={"backend": self.backend})
        if not isinstance(self.bf_params, dict):
            raise ConfigError("must be a mapping of BaryonForge parameters.", key="bf_params",
                              received={"bf_params": self.bf_params})

    @property
    def cell_size(self) -> float:
        """Grid cell side (Mpc/h)."""
        return float(self.box_size) / int(self.n_grid)

    @property
    def baryon_fraction(self) -> float:
        """Cosmic baryon fraction ``Ob0 / Om0``."""
        return float(self.Ob0) / float(self.Om0)

    def cosmology(self):
        """The data set's :class:`~astrogen.cosmology.background.Cosmology`."""
        from astrogen.cosmology.background import Cosmology

        return Cosmology(Om0=float(self.Om0), Ob0=float(self.Ob0), h=float(self.h),
                         sigma8=float(self.sigma8), n_s=float(self.n_s))


# ---------------------------------------------------------------------- dark matter
def simulate_dm_box(cfg: BaryonDatasetConfig, box_id: int, pm=None) -> dict:
    """One PM box + FoF haloes: ``{"dm": 1 + delta (n,n,n) float32, "halos": {x, y, z
    (Mpc/h), mass (Msun/h)}, "timing": {pm, fof} (s)}``."""
    from astrogen.cosmology.initial import gaussian_field
    from astrogen.cosmology.power import LinearPower
    from astrogen.nbody.fof import friends_of_friends, particle_mass
    from astrogen.nbody.pm import ParticleMesh

    cosmo = cfg.cosmology()
    n, L = int(cfg.n_grid), float(cfg.box_size)
    lin = gaussian_field(n, L, LinearPower(cosmo),
                         derive_seed(cfg.seed, "baryon_pairs", int(box_id)), ndim=3)
    if pm is None:
        pm = ParticleMesh(n, L, cosmo, power=LinearPower(cosmo),
                          mesh_factor=int(cfg.force_resolution),
                          a_init=1.0 / (1.0 + cfg.z_init), n_steps=int(cfg.n_steps))
    t0 = time.perf_counter()
    snap = pm.run(a_out=[1.0 / (1.0 + cfg.redshift)], box_id=int(box_id),
                  delta_linear=lin).snapshots[-1]
    t1 = time.perf_counter()
    tab = friends_of_friends(snap.positions, L, linking_length=cfg.linking_length,
                             min_members=cfg.min_members,
                             particle_mass_msun_h=particle_mass(cosmo.Om0, L, n ** 3))
    t2 = time.perf_counter()
    halos = {c: np.asarray(tab[c], np.float64) for c in ("x", "y", "z", "mass")}
    return {"dm": (1.0 + np.asarray(snap.density.delta)).astype(np.float32), "halos": halos,
            "timing": {"pm": t1 - t0, "fof": t2 - t1}}


# ---------------------------------------------------------------------- backends
def _igm(gas: np.ndarray, cfg: BaryonDatasetConfig) -> tuple[np.ndarray, np.ndarray]:
    """Temperature (K) and electron pressure (keV cm^-3) of photo-ionised gas of density
    ``gas`` (in units of the mean baryon density): ``T = T_igm gas^(2/3)``."""
    g = np.maximum(gas, 1e-6)
    temp = T_IGM * g ** (2.0 / 3.0)
    n_e = g * mean_gas_density_cgs(cfg.Ob0, cfg.h, cfg.redshift) / (MU_E * _M_P)
    return temp, n_e * K_B_KEV * temp


def _gaussian_smooth(field: np.ndarray, sigma_cells: float) -> np.ndarray:
    n = field.shape[0]
    k = 2.0 * np.pi * np.fft.fftfreq(n)
    kr = 2.0 * np.pi * np.fft.rfftfreq(n)
    k2 = k[:, None, None] ** 2 + k[None, :, None] ** 2 + kr[None, None, :] ** 2
    return np.fft.irfftn(np.fft.rfftn(field) * np.exp(-0.5 * k2 * sigma_cells ** 2),
                         s=field.shape, axes=(0, 1, 2))


def analytic_backend(dm: np.ndarray, halos: dict, cfg: BaryonDatasetConfig) -> dict:
    """The dependency-free backend (see the module docstring): gas = dark matter smoothed by
    a Gaussian of ``cfg.smoothing`` Mpc/h, in units of the mean baryon density."""
    gas = np.maximum(_gaussian_smooth(np.asarray(dm, np.float64),
                                      cfg.smoothing / cfg.cell_size), 0.0)
    gas *= np.mean(dm) / max(np.mean(gas), 1e-30)
    temp, pe = _igm(gas, cfg)
    return {"total": np.asarray(dm, np.float64), "gas": gas, "temperature": temp,
            "pressure": pe}


def _baryonforge_backend(dm: np.ndarray, halos: dict, cfg: BaryonDatasetConfig) -> dict:
    from astrogen.datasets import baryonforge_backend

    return baryonforge_backend.paint(dm, halos, cfg)


#: backend name -> callable(dm, halos, cfg) -> {"total", "gas", "temperature", "pressure"}
BACKENDS: dict[str, Callable] = {"baryonforge": _baryonforge_backend,
                                 "analytic": analytic_backend}


# ---------------------------------------------------------------------- build / read
def _shard(path: Path, box_id: int) -> Path:
    return Path(path) / f"box_{int(box_id):05d}.npz"


def read_manifest(path) -> dict:
    """The manifest of data set folder ``path`` (:func:`astrogen.datasets.base.read_manifest`)."""
    return read_manifest_file(path)


def _init(path: Path, cfg: BaryonDatasetConfig, backend_name: str) -> dict:
    cfg.check()
    path.mkdir(parents=True, exist_ok=True)
    manifest = {"format": FORMAT, "config": cfg.to_dict(), "backend": backend_name,
                "units": FIELD_UNITS, "cell_size": cfg.cell_size,
                "baryon_fraction": cfg.baryon_fraction,
                "box_ids": list(range(cfg.first_box, cfg.first_box + cfg.n_boxes))}
    return claim_folder(path, manifest, same=("config", "backend"))


def build_baryon_dataset(path, cfg: BaryonDatasetConfig, backend: Callable | None = None,
                         log=print, max_boxes: int | None = None) -> dict:
    """Build (or finish) the paired data set in folder ``path``; returns the manifest.

    Parameters
    ----------
    path : str or Path
    cfg : BaryonDatasetConfig
    backend : callable, optional
        ``backend(dm, halos, cfg) -> {"total", "gas", "temperature", "pressure"}``; default
        ``BACKENDS[cfg.backend]``.
    max_boxes : int, optional
        Stop after building this many new boxes (the rest is built by the next call).

    Finished boxes are skipped, so a killed build resumes; a box is the same whatever the
    order of the build (its seed is ``derive_seed(seed, "baryon_pairs", box_id)``).
    """
    path = Path(path)
    name = cfg.backend if backend is None else getattr(backend, "__name__", "custom")
    fn = BACKENDS[cfg.backend] if backend is None else backend
    manifest = _init(path, cfg, name)
    pm, built = None, 0
    for box_id in manifest["box_ids"]:
        out = _shard(path, box_id)
        if out.is_file():
            continue
        if max_boxes is not None and built >= max_boxes:
            break
        if pm is None:
            from astrogen.cosmology.power import LinearPower
            from astrogen.nbody.pm import ParticleMesh

            cosmo = cfg.cosmology()
            pm = ParticleMesh(int(cfg.n_grid), float(cfg.box_size), cosmo,
                              power=LinearPower(cosmo), mesh_factor=int(cfg.force_resolution),
                              a_init=1.0 / (1.0 + cfg.z_init), n_steps=int(cfg.n_steps))
        t0 = time.perf_counter()
        box = simulate_dm_box(cfg, box_id, pm=pm)
        t1 = time.perf_counter()
        fields = fn(box["dm"], box["halos"], cfg)
        t2 = time.perf_counter()
        missing = [k for k in FIELDS if k not in fields]
        if missing:
            raise ConfigError(f"the backend returned no {missing}.", key="backend",
                              received={"keys": sorted(fields)})
        h = box["halos"]
        save_npz(out, dm=box["dm"], **{k: np.asarray(fields[k], np.float32) for k in FIELDS},
                 halo_x=h["x"], halo_y=h["y"], halo_z=h["z"], halo_mass=h["mass"],
                 timing=np.array([box["timing"]["pm"], box["timing"]["fof"], t2 - t1]),
                 box_id=np.array(int(box_id)))
        built += 1
        log(f"baryon_pairs: box {box_id} in {time.perf_counter() - t0:.1f} s (PM+FoF "
            f"{t1 - t0:.1f} s, {name} {t2 - t1:.1f} s, {len(h['mass'])} haloes)")
    return manifest


def dataset_is_complete(path) -> bool:
    """True when folder ``path`` holds a manifest and the shard of every box it lists."""
    return boxes_complete(path, lambda p, m, b: _shard(p, b))


def read_baryon_box(path, box_id: int, keys=None) -> dict:
    """The arrays ``keys`` (default all) of one box."""
    with np.load(_shard(path, box_id)) as z:
        return {k: z[k] for k in (z.files if keys is None else keys)}


def main(argv=None) -> int:
    """``python -m astrogen.datasets.baryons OUT [key=value ...]``: build a data set."""
    import argparse

    import yaml

    ap = argparse.ArgumentParser(prog="python -m astrogen.datasets.baryons",
                                 description=__doc__.split("\n")[0])
    ap.add_argument("path")
    ap.add_argument("settings", nargs="*", help="BaryonDatasetConfig fields as key=value "
                    "(YAML values)")
    ap.add_argument("--max-boxes", type=int, default=None)
    a = ap.parse_args(argv)
    d = {}
    for s in a.settings:
        k, _, v = s.partition("=")
        d[k] = yaml.safe_load(v)
    cfg = BaryonDatasetConfig.from_dict(d)
    build_baryon_dataset(a.path, cfg, max_boxes=a.max_boxes,
                         log=lambda m: print(m, flush=True))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())

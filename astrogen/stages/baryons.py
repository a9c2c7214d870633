r"""Baryon stages: paint gas fields onto dark-matter boxes, write them as FITS cubes and maps.

A typical chain (``pipelines/baryons.yaml``)::

    cosmology.initial_field -> nbody.pm -> baryons.paint -> output.baryons

``baryons.paint`` (:class:`BaryonPaint`) runs the baryon painter
(:mod:`astrogen.models.baryon_painter`, a conditional VAE trained on BaryonForge
baryonification) on each box: input a 3-D :class:`~astrogen.batch.DensityField` (or an
N-body snapshot) whose cell size is the model's (1 Mpc/h for the shipped
``baryon_painter_64``); output a :class:`BaryonFields`: the baryonified total matter (its
``delta``), gas density (in units of the mean baryon density), gas temperature (K) and
electron pressure (keV cm^-3), ``n_samples`` realisations each (latent draws seeded by
``derive_seed(stage seed, box_id)``).

``output.baryons`` (:class:`BaryonOutput`) writes one FITS file of 3-D cubes (HDU per box and
field, with a linear WCS in Mpc and an alternate one in Mpc/h, ``BUNIT``), one FITS file of
projected maps along z (Compton-y ``y = sigma_T / (m_e c^2) int P_e dl`` and the gas surface
density in Msun/h per (Mpc/h)^2, same WCS conventions), and PNG figures (log stretch).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field as dc_field

import numpy as np
from astropy.io import fits

from astrogen.batch import DensityField
from astrogen.errors import ConfigError
from astrogen.registry import register_stage
from astrogen.seeds import derive_seed
from astrogen.stages.base import (Stage, check_file_name, check_int, check_model_file,
                                  check_positive)

__all__ = ["BaryonFields", "BaryonPaint", "BaryonOutput", "compton_y_map", "SIGMA_T_CM2",
           "ME_C2_KEV", "MPC_CM"]

#: Thomson cross-section (cm^2), electron rest energy (keV), cm per Mpc
SIGMA_T_CM2 = 6.6524587e-25
ME_C2_KEV = 510.99895
MPC_CM = 3.0856775814913673e24
#: critical density today, (Msun/h) / (Mpc/h)^3
_RHO_CRIT_H = 2.77536627e11


@dataclass
class BaryonFields(DensityField):
    """Painted gas fields of one box (a :class:`~astrogen.batch.DensityField` whose ``delta``
    is the first sample's baryonified total matter contrast).

    Attributes
    ----------
    total, gas, temperature, pressure : numpy.ndarray, shape (n_samples, n, n, n)
        ``1 + delta`` of the total matter; gas density / mean baryon density; temperature
        (K); electron pressure (keV cm^-3, physical).
    dm : numpy.ndarray, shape (n, n, n)
        The input dark matter ``1 + delta``.
    """

    total: np.ndarray | None = None
    gas: np.ndarray | None = None
    temperature: np.ndarray | None = None
    pressure: np.ndarray | None = None
    dm: np.ndarray | None = None
    model: dict = dc_field(default_factory=dict)

    @property
    def n_samples(self) -> int:
        """Number of painted realisations per box."""
        return int(self.total.shape[0])


def compton_y_map(pressure: np.ndarray, cell_size: float, h: float, redshift: float = 0.0,
                  axis: int = 2) -> np.ndarray:
    """Compton-y of a box projected along ``axis``: ``sigma_T / (m_e c^2) sum P_e dl``.

    Parameters
    ----------
    pressure : numpy.ndarray, shape (n, n, n)
        Electron pressure in keV cm^-3 (physical).
    cell_size : float
        Comoving cell side in Mpc/h.
    h : float
        Hubble parameter ``H0 / (100 km/s/Mpc)``.
    redshift : float
        Redshift of the box (the physical path is the comoving one times ``1/(1+z)``).

    Returns
    -------
    numpy.ndarray, shape (n, n)
        Dimensionless Compton-y.
    """
    dl = cell_size / h * MPC_CM / (1.0 + redshift)
    return SIGMA_T_CM2 / ME_C2_KEV * np.sum(np.asarray(pressure, np.float64), axis=axis) * dl


@register_stage("baryons.paint")
class BaryonPaint(Stage):
    """Paint gas fields onto a dark-matter box with the baryon painter (conditional VAE).

    Parameters
    ----------
    model : str
        A shipped painter (``baryon_painter_64``: 1 Mpc/h cells, z = 0, trained on
        BaryonForge) or a ``.keras`` file saved by ``BaryonPainter.save``.
    n_samples : int
        Realisations per box (one latent draw each).
    conserve : bool
        Rescale the total matter to the input's mean and the gas to the model's mean gas
        fraction (mass and mean gas fraction conserved exactly).
    temperature : float
        Scale of the latent draws (0: the latent mean, no sampling).
    """

    input_types = (DensityField,)
    output_type = BaryonFields
    uses_tensorflow = True
    units = {"temperature": "latent standard deviations"}

    def __init__(self, model: str = "baryon_painter_64", n_samples: int = 1,
                 conserve: bool = True, temperature: float = 1.0):
        from astrogen.models.pretrained import resolve_model_path

        self.model = str(model)
        self.model_path = resolve_model_path(self.model, "baryon_painter")
        check_model_file("model", self.model_path)  # TensorFlow-free: before anything runs
        self.n_samples = check_int("n_samples", n_samples)
        if self.n_samples > 64:
            raise ConfigError("must be at most 64.", key="n_samples",
                              received={"n_samples": n_samples})
        if not isinstance(conserve, bool):
            raise ConfigError("must be true or false.", key="conserve",
                              received={"conserve": conserve})
        self.conserve = conserve
        self.temperature = check_positive("temperature", temperature, allow_zero=True)
        self._painter = None

    def setup(self, ctx) -> None:
        super().setup(ctx)
        self.painter()

    def painter(self):
        """The painter model (loaded once per process, cached)."""
        from astrogen.models.baryon_painter import load_baryon_painter
        from astrogen.models.pretrained import cached_model

        if self._painter is None:
            self._painter = cached_model(self.model_path, load_baryon_painter)
        return self._painter

    def process(self, field: DensityField) -> BaryonFields:
        p = self.painter()
        if field.delta.ndim != 3:
            raise ConfigError("baryons.paint needs a 3-D box.", key="inputs",
                              received={"shape": field.delta.shape})
        cell = float(p.meta.get("cell_size", field.cell_size))
        if abs(field.cell_size - cell) > 0.02 * cell:
            raise ConfigError(f"the painter was trained on {cell:g} Mpc/h cells; the input "
                              f"box has {field.cell_size:g} Mpc/h (set n_grid = box_size / "
                              f"{cell:g}).", key="inputs",
                              received={"cell_size": field.cell_size, "model": self.model})
        if field.n_grid % 4:
            raise ConfigError("the box side must be a multiple of 4 cells.", key="inputs",
                              received={"n_grid": field.n_grid})
        dm = 1.0 + np.asarray(field.delta, np.float64)
        seed = derive_seed(self.ctx.seed, int(field.box_id))
        out = p.paint(dm, n_samples=self.n_samples, seed=seed, conserve=self.conserve,
                      temperature=self.temperature)
        meta = {**{k: v for k, v in field.meta.items()
                   if isinstance(v, (str, int, float, bool)) or v is None},
                "source": self.type_name, "field": "baryons", "painter": self.model,
                "paint_seed": int(seed), "n_samples": self.n_samples,
                "conserve": self.conserve, "latent_temperature": self.temperature}
        return BaryonFields(delta=out["total"][0] - 1.0, box_size=float(field.box_size),
                            redshift=float(field.redshift), box_id=int(field.box_id),
                            cosmology=dict(field.cosmology), meta=meta, total=out["total"],
                            gas=out["gas"], temperature=out["temperature"],
                            pressure=out["pressure"], dm=dm.astype(np.float32),
                            model={"name": self.model, "training": p.meta.get("training", {}),
                                   "dataset": p.meta.get("dataset", {})})


_FIELD_CARDS = {"TOTAL": ("total", "rho_m/rho_m_mean", "baryonified total matter 1+delta"),
                "GAS": ("gas", "rho_gas/rho_b_mean", "gas density / mean baryon density"),
                "TEMP": ("temperature", "K", "gas temperature"),
                "PE": ("pressure", "keV cm-3", "electron pressure (physical)")}


@register_stage("output.baryons")
class BaryonOutput(Stage):
    """Write painted gas fields: FITS cubes, projected Compton-y and gas maps, PNG figures.

    ``cubes_file``: primary HDU without data, then per box and field an image HDU
    ``BOX<id>_<FIELD>`` (``TOTAL``, ``GAS``, ``TEMP``, ``PE``; first sample; float32,
    data transposed so FITS axes 1, 2, 3 are x, y, z) with ``BUNIT``, a linear WCS in Mpc
    (alternate ``H`` in Mpc/h), cosmology and provenance cards. ``maps_file``: per box
    ``BOX<id>_YMAP`` (Compton-y, dimensionless) and ``BOX<id>_SIGMAGAS`` (gas surface
    density, Msun/h per (Mpc/h)^2), projected through the whole box along z, 2-D WCS.
    ``preview``: PNG of box 0 (dark matter, gas, temperature slabs and the y map, log
    stretch).

    Parameters
    ----------
    cubes_file, maps_file : str
        FITS file names in the output folder.
    preview : str or None
        PNG file name (``null``: none).
    preview_slab : int
        Cells along z averaged in the slab panels.
    """

    kind = "sink"
    input_types = (BaryonFields,)
    units = {"preview_slab": "cells"}

    def __init__(self, cubes_file: str = "gas_cubes.fits", maps_file: str = "gas_maps.fits",
                 preview: str | None = "baryons.png", preview_slab: int = 4):
        self.cubes_file = check_file_name("cubes_file", cubes_file, (".fits",))
        self.maps_file = check_file_name("maps_file", maps_file, (".fits",))
        if self.cubes_file == self.maps_file:
            raise ConfigError("must differ from cubes_file.", key="maps_file",
                              received={"maps_file": maps_file})
        self.preview = None if preview is None else check_file_name("preview", preview,
                                                                    (".png",))
        self.preview_slab = check_int("preview_slab", preview_slab)

    def consume(self, index: int, f: BaryonFields) -> None:
        from astrogen.io.atomic import save_npz

        hub = f.cosmology.get("h")
        if not hub:
            raise ConfigError("the box has no Hubble parameter h in its cosmology.",
                              key="inputs", received={"box_id": f.box_id})
        cell = f.cell_size
        ymap = compton_y_map(f.pressure[0], cell, hub, f.redshift)
        fb_rho = f.cosmology.get("Ob0", 0.049) * _RHO_CRIT_H  # (Msun/h) / (Mpc/h)^3
        sigma = np.sum(f.gas[0].astype(np.float64), axis=2) * fb_rho * cell
        m = {"box_id": int(f.box_id), "box_size": float(f.box_size), "n_grid": f.n_grid,
             "redshift": float(f.redshift), "cosmology": dict(f.cosmology),
             "meta": f.meta, "model": f.model}
        save_npz(self.ctx.work_dir / f"part_{index:06d}.npz",
                 **{k: np.ascontiguousarray(getattr(f, v)[0].T, dtype=np.float32)
                    for k, (v, _, _) in _FIELD_CARDS.items()},
                 dm=np.ascontiguousarray(f.dm.T, dtype=np.float32),
                 ymap=np.ascontiguousarray(ymap.T), sigma=np.ascontiguousarray(sigma.T),
                 meta=np.array(json.dumps(m, default=str)))

    def _header(self, m: dict, nd: int) -> fits.Header:
        from astrogen.io.fits_out import comoving_wcs_cards

        h = fits.Header()
        hub = m["cosmology"].get("h")
        h["BOXID"] = (m["box_id"], "index of the box")
        h["BOXSIZE"] = (m["box_size"], "comoving box side, Mpc/h")
        h["NGRID"] = (m["n_grid"], "grid cells per side")
        h["CELLSIZE"] = (m["box_size"] / m["n_grid"], "grid spacing, Mpc/h")
        h["REDSHIFT"] = (m["redshift"], "redshift of the box")
        for key, card in (("Om0", "OMEGAM"), ("Ob0", "OMEGAB"), ("h", "HUBBLE"),
                          ("sigma8", "SIGMA8"), ("n_s", "NS")):
            if key in m["cosmology"]:
                h[card] = (m["cosmology"][key], key)
        h["PAINTER"] = (str(m["meta"].get("painter", ""))[:60], "baryons.paint model")
        h["PSEED"] = (int(m["meta"].get("paint_seed", 0)), "seed of the latent draws")
        h["CONSERVE"] = (bool(m["meta"].get("conserve", True)), "mass/gas fraction rescaled")
        comoving_wcs_cards(h, nd, m["box_size"] / m["n_grid"], hub)
        return h

    def finalize(self):
        from astrogen.io.atomic import atomic_path
        from astrogen.io.fits_out import provenance_cards

        parts = sorted(self.ctx.work_dir.glob("part_*.npz"))
        if not parts:
            return []
        metas = []
        for p in parts:
            with np.load(p) as z:
                metas.append(json.loads(str(z["meta"])))
        prim = fits.Header()
        prim["NBOXES"] = (len(parts), "number of boxes")
        prim["COMMENT"] = ("Gas fields painted by astrogen baryons.paint: a conditional VAE "
                           "trained on BaryonForge baryonification, not hydrodynamics.")
        provenance_cards(prim, self.ctx.provenance, self.ctx.history)
        cubes = self.ctx.output_dir / self.cubes_file
        maps = self.ctx.output_dir / self.maps_file
        with atomic_path(cubes) as tmp:
            fits.PrimaryHDU(header=prim).writeto(tmp, output_verify="exception")
            for p, m in zip(parts, metas):
                with np.load(p) as z:
                    for key, (_, unit, what) in _FIELD_CARDS.items():
                        h = self._header(m, 3)
                        h["EXTNAME"] = f"BOX{m['box_id']}_{key}"
                        h["BUNIT"] = (unit, what)
                        provenance_cards(h, self.ctx.provenance)
                        fits.append(tmp, z[key], h, output_verify="exception")
        with atomic_path(maps) as tmp:
            fits.PrimaryHDU(header=prim).writeto(tmp, output_verify="exception")
            for p, m in zip(parts, metas):
                with np.load(p) as z:
                    for ext, arr, unit, what in (
                            ("YMAP", z["ymap"], "", "Compton-y projected along z"),
                            ("SIGMAGAS", z["sigma"], "Msun/h / (Mpc/h)^2",
                             "gas surface density projected along z")):
                        h = self._header(m, 2)
                        h["EXTNAME"] = f"BOX{m['box_id']}_{ext}"
                        h["BUNIT"] = (unit, what)
                        h["PROJAXIS"] = ("Z", "projection axis (whole box)")
                        provenance_cards(h, self.ctx.provenance)
                        fits.append(tmp, np.asarray(arr, np.float32), h,
                                    output_verify="exception")
        written = [cubes, maps]
        if self.preview:
            written.append(self._save_preview(parts[0], metas[0]))
        return written

    def _save_preview(self, part, m):
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        from astrogen.io.atomic import atomic_path

        n, L = m["n_grid"], m["box_size"]
        s = min(self.preview_slab, n)
        with np.load(part) as z:  # FITS order (z, y, x): average s cells of z
            slab = {k: np.asarray(z[k][:s], np.float64).mean(axis=0)
                    for k in ("dm", "GAS", "TEMP", "PE")}
            ymap = np.asarray(z["ymap"], np.float64)
        panels = [("dark matter log10(1+delta)", np.log10(np.maximum(slab["dm"], 1e-2)),
                   "magma"),
                  ("gas log10(rho/rho_b)", np.log10(np.maximum(slab["GAS"], 1e-2)), "viridis"),
                  ("log10 T [K]", np.log10(np.maximum(slab["TEMP"], 1e2)), "inferno"),
                  ("log10 Compton-y (projected)", np.log10(np.maximum(ymap, 1e-12)),
                   "cividis")]
        fig, axes = plt.subplots(1, 4, figsize=(16, 4.2))
        for ax, (title, img, cmap) in zip(axes, panels):
            im = ax.imshow(img, origin="lower", extent=(0, L, 0, L), cmap=cmap)
            fig.colorbar(im, ax=ax, fraction=0.046)
            ax.set_title(title, fontsize=9)
            ax.set_xlabel("x [Mpc/h]")
        axes[0].set_ylabel("y [Mpc/h]")
        fig.suptitle(f"{self.ctx.name}: box {m['box_id']}, z = {m['redshift']:.2f}, "
                     f"slabs of {s} cells, painter {m['meta'].get('painter')}", fontsize=9)
        fig.tight_layout()
        path = self.ctx.output_dir / self.preview
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=90, format="png")
        plt.close(fig)
        return path

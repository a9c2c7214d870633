"""3-D halo finding in the linear field (Berger & Stein 2019): ``nbody.halos3d``.

    cosmology.initial_field (3-D, the network's grid and box) -> nbody.halos3d -> output.catalog

The 3-D halo network (:mod:`astrogen.models.halo_vnet`) predicts, on the particle lattice of
the linear field, the protohalo mask (particles that end in FoF haloes of at least the
model's ``mask_min_particles``) and the size of the halo each particle ends in; the
catalogue step (:mod:`astrogen.nbody.protohalo_catalog`) cuts the mask into haloes. No
N-body run is made.

Units: masses in Msun/h and lengths in comoving Mpc/h, carried as astropy ``littleh`` units
(``Msun / littleh``, ``Mpc / littleh``) like ``nbody.fof``; ``output.catalog`` writes them in
Msun and Mpc with the table's h.
"""
from __future__ import annotations

import numpy as np
from astropy.table import Table

from astrogen.batch import DensityField
from astrogen.errors import ConfigError
from astrogen.registry import register_stage
from astrogen.stages.base import Stage, check_choice, check_int, check_positive

__all__ = ["Halos3D"]

_METHODS = ("watershed", "grow", "components")

_DESC = {
    "box_id": "index of the box",
    "halo_id": "halo index within its box, by decreasing mass",
    "n_particles": "lattice cells (particles) of the predicted protohalo",
    "mass": "n_particles * particle mass",
    "x": "comoving x: mean 2LPT position of the protohalo's particles at the redshift",
    "y": "comoving y: mean 2LPT position of the protohalo's particles at the redshift",
    "z": "comoving z: mean 2LPT position of the protohalo's particles at the redshift",
    "x_lag": "Lagrangian x: periodic centroid of the protohalo's lattice cells",
    "y_lag": "Lagrangian y: periodic centroid of the protohalo's lattice cells",
    "z_lag": "Lagrangian z: periodic centroid of the protohalo's lattice cells",
    "score": "mean halo probability over the protohalo",
    "redshift": "redshift of the Eulerian positions",
}


@register_stage("nbody.halos3d")
class Halos3D(Stage):
    """3-D halo network: linear 3-D field -> protohalo mask -> halo catalogue (one row per
    halo).

    Input: a linear 3-D field (``cosmology.initial_field``, ``ndim: 3``) with the network's
    grid and box size; it is scaled to z = 0 with the linear growth factor. Columns:
    ``box_id``, ``halo_id``, ``n_particles``, ``mass`` (Msun/h), ``x``, ``y``, ``z`` (Mpc/h,
    Eulerian estimate: 2LPT to ``redshift``), ``x_lag``, ``y_lag``, ``z_lag`` (Mpc/h,
    Lagrangian centre), ``score``, ``redshift``.

    Parameters
    ----------
    model : str
        Shipped model name (``halo_vnet_32``) or a ``.keras`` file with its ``.json``.
    threshold : float
        Probability threshold of the protohalo mask (0..1).
    method : {"watershed", "grow", "components"}
        Mask-to-catalogue method (:func:`astrogen.nbody.protohalo_catalog.protohalo_regions`);
        ``watershed`` had the best completeness x purity of the three on the held-out boxes
        of ``benchmarks/nbody_halo3d_benchmark.py`` with the shipped network.
    min_particles : int, optional
        Smallest halo kept, particles (default: the model's ``mask_min_particles``).
    redshift : float
        Redshift of the Eulerian positions (>= 0).
    min_distance : int
        Watershed marker separation, cells (``method: watershed``).
    """

    input_types = (DensityField,)
    output_type = Table
    uses_tensorflow = True
    units = {"min_particles": "particles", "redshift": "dimensionless",
             "min_distance": "lattice cells"}

    def __init__(self, model: str = "halo_vnet_32", threshold: float = 0.5,
                 method: str = "watershed", min_particles: int | None = None,
                 redshift: float = 0.0, min_distance: int = 2):
        if not isinstance(model, str) or not model:
            raise ConfigError("must be a shipped model name or a .keras file.", key="model",
                              received={"model": model})
        self.model_name = model
        self.threshold = check_positive("threshold", threshold)
        if self.threshold >= 1:
            raise ConfigError("must be within (0, 1).", key="threshold",
                              received={"threshold": threshold})
        self.method = check_choice("method", method, _METHODS)
        self.min_particles = (None if min_particles is None
                              else check_int("min_particles", min_particles, minimum=1))
        self.redshift = check_positive("redshift", redshift, allow_zero=True)
        self.min_distance = check_int("min_distance", min_distance, minimum=1)
        self._model = None

    def setup(self, ctx) -> None:
        from astrogen.models.halo_vnet import load_halo_vnet
        from astrogen.models.pretrained import cached_model
        from astrogen.stages.nbody_emulate import resolve_nbody_model

        super().setup(ctx)
        self._model = cached_model(resolve_nbody_model(self.model_name, "halo_vnet"),
                                   load_halo_vnet)

    def process(self, field: DensityField) -> Table:
        from astrogen.cosmology.background import Cosmology
        from astrogen.nbody.fof import MPC_H, MSUN_H
        from astrogen.nbody.protohalo_catalog import protohalo_regions, regions_to_catalog

        m = self._model.meta
        if field.meta.get("field") != "linear":
            raise ConfigError("nbody.halos3d reads a linear density field (from "
                              "cosmology.initial_field).", key="inputs",
                              received={"field": field.meta.get("field"),
                                        "box_id": field.box_id})
        if field.delta.ndim != 3 or field.n_grid != self._model.size:
            raise ConfigError(f"the 3-D halo network takes {self._model.size}^3 lattices "
                              "(set ndim: 3 and n_grid in the initial field).", key="inputs",
                              received={"shape": field.delta.shape})
        if not np.isclose(field.box_size, float(m["box_size"])):
            raise ConfigError(f"the 3-D halo network was trained on boxes of "
                              f"{m['box_size']} Mpc/h.", key="inputs",
                              received={"box_size": field.box_size})
        cosmo_d = dict(field.cosmology) or dict(m.get("cosmology", {}))
        try:
            cosmo = Cosmology.from_dict(cosmo_d)
        except (TypeError, ValueError, KeyError) as exc:
            raise ConfigError(f"the input field's cosmology is unusable ({exc}).",
                              key="inputs") from None
        lin0 = np.asarray(field.delta, float) / float(cosmo.growth_D1(field.redshift))
        prob, npred = self._model.predict(lin0)
        labels, _ = protohalo_regions(prob, self.threshold, self.method, self.min_distance,
                                      n_pred=npred)
        L, n = float(field.box_size), field.n_grid
        mp = _particle_mass(cosmo, L, n)
        mmin = int(self.min_particles or m.get("mask_min_particles", 1))
        shift = 0.5 / float(m.get("force_resolution", 2))
        cat = regions_to_catalog(labels, L, mp, mmin, delta_linear=lin0, cosmology=cosmo,
                                 redshift=self.redshift, lattice_shift=shift, prob=prob)
        k = len(cat["mass"])
        t = Table()
        t["box_id"] = np.full(k, int(field.box_id), np.int64)
        t["halo_id"] = np.arange(k, dtype=np.int64)
        t["n_particles"] = cat["n_particles"]
        t["mass"] = cat["mass"] * MSUN_H
        for c in ("x", "y", "z", "x_lag", "y_lag", "z_lag"):
            t[c] = cat[c] * MPC_H
        t["score"] = cat["score"]
        t["redshift"] = np.full(k, float(self.redshift))
        for name, text in _DESC.items():
            t[name].description = text
        t.meta.update({"box_id": int(field.box_id), "redshift": float(self.redshift),
                       "cosmology": cosmo.to_dict(), "source": self.type_name,
                       "model": self.model_name, "method": self.method,
                       "threshold": self.threshold, "min_particles": mmin,
                       "particle_mass_msun_h": mp, "box_size_mpc_h": L,
                       "units_note": "Msun/h, Mpc/h (astropy littleh units; convert: with_H0)"})
        return t


def _particle_mass(cosmo, box_size: float, n: int) -> float:
    from astrogen.nbody.fof import particle_mass

    return particle_mass(cosmo.Om0, box_size, n ** 3)

r"""Displacement-emulator stage: linear field -> Zel'dovich displacement -> D3M-emulated
particles -> density field (``pipelines/nbody_displace.yaml``)::

    cosmology.initial_field -> nbody.displace -> nbody.fof -> output.catalog
                                              \-> output.field

``nbody.displace`` returns an :class:`~astrogen.nbody.snapshot.NBodySnapshot`, like
``nbody.pm``, so its particles go to ``nbody.fof``, its density to ``output.field`` and to
``nbody.halo_map``. The network (:mod:`astrogen.models.d3m`) is fully convolutional and
periodic: it runs on any ``n_grid`` that is a multiple of its coarsest stride, provided the
lattice spacing (``box_size / n_grid``), the cosmology and the redshift are those of its
training set (checked).

Weights ship in ``astrogen/data/models/`` and are loaded in ``setup`` (TensorFlow is imported
there, not at module import).
"""
from __future__ import annotations

import numpy as np

from astrogen.batch import DensityField
from astrogen.errors import ConfigError
from astrogen.nbody.snapshot import NBodySnapshot
from astrogen.registry import register_stage
from astrogen.stages.base import Stage, check_int
from astrogen.stages.nbody_emulate import resolve_nbody_model

__all__ = ["NBodyDisplace", "emulate_particles", "lattice_shift_of"]


def lattice_shift_of(meta: dict) -> float:
    """The particle lattice offset (lattice spacings) of a model's training set: half a
    force-mesh cell, as :attr:`astrogen.nbody.pm.ParticleMesh.lattice_shift`."""
    return 0.5 / int(meta["force_resolution"])


def emulate_particles(model, delta_linear: np.ndarray, box_size: float, cosmology,
                      a: float, batch_size: int = 1) -> dict:
    """Particles of a box moved by the emulator.

    Parameters
    ----------
    model : astrogen.models.d3m.D3M
    delta_linear : numpy.ndarray, shape (n, n, n)
        Linear density contrast at a = 1 on the lattice (dimensionless).
    box_size : float
        Mpc/h.
    cosmology : astrogen.cosmology.background.Cosmology
    a : float
        Output scale factor (the model's).

    Returns
    -------
    dict
        ``positions`` (n^3, 3) Mpc/h in ``[0, box_size)``; ``displacement`` (3, n, n, n) Mpc/h
        (emulated); ``zeldovich`` (3, n, n, n) Mpc/h (the input); ``velocities`` (n^3, 3)
        km/s, the Zel'dovich (linear) velocities ``100 gp(a) Psi1 / a`` — the emulator
        predicts displacements only; ``lattice`` (n^3, 3) Mpc/h.
    """
    from astrogen.cosmology.initial import lattice
    from astrogen.datasets.nbody_displacements import zeldovich_displacement_field
    from astrogen.nbody.pm import VELOCITY_UNIT

    n = int(np.asarray(delta_linear).shape[0])
    shift = lattice_shift_of(model.meta)
    zel = zeldovich_displacement_field(delta_linear, box_size, cosmology, a, shift)
    disp = model.predict(zel, batch_size=batch_size)
    q = lattice(n, float(box_size), 3, shift=shift)
    pos = np.mod(q + disp.reshape(3, -1).T.astype(np.float64), float(box_size))
    psi1 = zel.reshape(3, -1).T.astype(np.float64) / float(cosmology.D1(a))
    vel = VELOCITY_UNIT * float(cosmology.gp(a)) * psi1 / a
    return {"positions": pos, "displacement": disp, "zeldovich": zel, "velocities": vel,
            "lattice": q}


@register_stage("nbody.displace")
class NBodyDisplace(Stage):
    """D3M displacement emulator (He et al. 2019): linear 3-D field -> emulated N-body
    particles and their density, one box per chunk.

    The particles of the ``n_grid^3`` lattice of the input field (as in ``nbody.pm``) get
    the Zel'dovich displacement ``D1(a) Psi1`` at the model's redshift, which the network
    maps to the displacement the PM code of its training set gives at that redshift.
    Output: an :class:`~astrogen.nbody.snapshot.NBodySnapshot` (CIC density contrast on a
    ``density_grid^3`` mesh, positions in Mpc/h, Zel'dovich velocities in km/s, particle mass
    in Msun/h).

    Parameters
    ----------
    model : str
        Shipped model name (``d3m_64``, the default: ``d3m_32`` continued on 64^3 particles
        in 128 Mpc/h; ``d3m_32``: trained on 32^3 particles in 64 Mpc/h; both 2 Mpc/h
        spacing, z = 0, Planck 2018) or a ``.keras`` file written by
        :meth:`astrogen.models.d3m.D3M.save` (with its ``.json``).
    density_grid : int, optional
        Cells per side of the output density field (default: the particle grid).
    batch_size : int
        Boxes per network call (memory only; results do not depend on it).
    """

    input_types = (DensityField,)
    output_type = NBodySnapshot
    uses_tensorflow = True
    units = {"density_grid": "cells per side"}

    def __init__(self, model: str = "d3m_64", density_grid: int | None = None,
                 batch_size: int = 1):
        if not isinstance(model, str) or not model:
            raise ConfigError("must be a shipped model name or a .keras file.", key="model",
                              received={"model": model})
        self.model_name = model
        self.density_grid = (None if density_grid is None
                             else check_int("density_grid", density_grid, minimum=2))
        self.batch_size = check_int("batch_size", batch_size)
        self._model = None

    def setup(self, ctx) -> None:
        from astrogen.models.d3m import load_d3m
        from astrogen.models.pretrained import cached_model

        super().setup(ctx)
        self._model = cached_model(resolve_nbody_model(self.model_name, "d3m"), load_d3m)

    def check_field(self, field: DensityField):
        """The input's cosmology, or a ConfigError naming ``inputs`` when the field is not a
        3-D linear field on the model's lattice spacing and cosmology."""
        from astrogen.cosmology.background import Cosmology

        m = self._model.meta
        if field.meta.get("field") != "linear" or field.delta.ndim != 3:
            raise ConfigError("nbody.displace takes a 3-D linear field (cosmology.initial_field "
                              "with ndim: 3).", key="inputs",
                              received={"field": field.meta.get("field"),
                                        "shape": field.delta.shape})
        n, L = field.n_grid, float(field.box_size)
        if not np.isclose(L / n, float(m["cell_size"]), rtol=1e-6) or n % self._model.multiple:
            raise ConfigError(f"the model was trained with a lattice spacing of "
                              f"{m['cell_size']} Mpc/h; n_grid must make box_size / n_grid "
                              f"equal to it and be a multiple of {self._model.multiple}.",
                              key="inputs", received={"n_grid": n, "box_size": L})
        cosmo = Cosmology.from_dict(field.cosmology)
        mc = m["cosmology"]
        mine = cosmo.to_dict()
        off = {k: (mine.get(k), v) for k, v in mc.items()
               if not np.isclose(float(mine.get(k, np.nan)), float(v), rtol=1e-4)}
        if off:
            raise ConfigError("the input field's cosmology differs from the model's "
                              "(field, model).", key="inputs", received=off)
        return cosmo

    def process(self, field: DensityField) -> NBodySnapshot:
        from astrogen.nbody.fof import particle_mass
        from astrogen.nbody.mesh import paint_density

        cosmo = self.check_field(field)
        m = self._model.meta
        z = float(m["redshift"])
        a = 1.0 / (1.0 + z)
        n, L = field.n_grid, float(field.box_size)
        d1 = float(cosmo.growth_D1(field.redshift))
        out = emulate_particles(self._model, np.asarray(field.delta, float) / d1, L, cosmo, a,
                                batch_size=self.batch_size)
        delta = paint_density(out["positions"], L, self.density_grid or n)
        meta = {"source": self.type_name, "field": "nbody", "emulator": "d3m",
                "model": self.model_name, "a": a, "n_particles": n,
                "seed": field.meta.get("seed"), "transfer": field.meta.get("transfer"),
                "linear_redshift": float(field.redshift), "assignment": "cic",
                "lattice_shift": lattice_shift_of(m),
                "velocities": "Zel'dovich (linear theory); the emulator predicts positions",
                "pm_reference": {"n_steps": m.get("pm_n_steps"), "z_init": m.get("z_init"),
                                 "force_resolution": m.get("force_resolution")}}
        return NBodySnapshot(delta=np.asarray(delta, np.float64), box_size=L, redshift=z,
                             box_id=field.box_id, cosmology=cosmo.to_dict(), meta=meta,
                             positions=out["positions"], velocities=out["velocities"],
                             particle_mass=particle_mass(cosmo.Om0, L, n ** 3))

"""The N-body snapshot exchanged between pipeline stages (``nbody.pm`` -> ``nbody.fof``...).

:class:`NBodySnapshot` *is a* :class:`~astrogen.batch.DensityField` (the evolved density
contrast on a mesh, with its box size, redshift, box id and cosmology) that also carries the
particles: any stage that accepts a ``DensityField`` (``output.field``, a power-spectrum or
emulator stage) accepts a snapshot too, and stages that need particles (``nbody.fof``) ask
for an ``NBodySnapshot``.

Units: positions in comoving Mpc/h, wrapped into ``[0, box_size)``; peculiar velocities
``a dx/dt`` in km/s; particle mass in Msun/h.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from astrogen.batch import DensityField
from astrogen.errors import ConfigError

__all__ = ["NBodySnapshot"]


@dataclass
class NBodySnapshot(DensityField):
    """An evolved N-body box: density field plus particles.

    Parameters
    ----------
    delta, box_size, redshift, box_id, cosmology, meta
        As for :class:`~astrogen.batch.DensityField` (``delta`` is the CIC density contrast
        of the particles, 3-D).
    positions : numpy.ndarray, shape (n_particles, 3)
        Comoving positions in Mpc/h, in ``[0, box_size)``.
    velocities : numpy.ndarray, shape (n_particles, 3)
        Peculiar velocities ``a dx/dt`` in km/s.
    particle_mass : float
        Mass of one particle in Msun/h (``Om0 rho_crit box_size^3 / n_particles``).

    Notes
    -----
    ``positions``, ``velocities`` and ``particle_mass`` have defaults only because dataclass
    inheritance demands it; they are required (``None`` or a non-positive mass is refused).
    """

    positions: np.ndarray | None = None
    velocities: np.ndarray | None = None
    particle_mass: float = 0.0

    def __post_init__(self):
        super().__post_init__()
        if self.delta.ndim != 3:
            raise ConfigError("NBodySnapshot.delta must be a 3-D grid.",
                              received={"shape": self.delta.shape})
        if self.positions is None or self.velocities is None:
            raise ConfigError("NBodySnapshot needs positions and velocities.")
        self.positions = np.asarray(self.positions)
        self.velocities = np.asarray(self.velocities)
        if self.positions.ndim != 2 or self.positions.shape[1] != 3 \
                or self.positions.shape[0] == 0:
            raise ConfigError("NBodySnapshot.positions must have shape (n_particles, 3).",
                              received={"shape": self.positions.shape})
        if self.velocities.shape != self.positions.shape:
            raise ConfigError("NBodySnapshot.velocities must have the shape of positions.",
                              received={"velocities": self.velocities.shape,
                                        "positions": self.positions.shape})
        if not (float(self.particle_mass) > 0):
            raise ConfigError("NBodySnapshot.particle_mass must be > 0 Msun/h.",
                              received={"particle_mass": self.particle_mass})
        self.particle_mass = float(self.particle_mass)

    @property
    def n_particles(self) -> int:
        """Total number of particles."""
        return int(self.positions.shape[0])

    @property
    def a(self) -> float:
        """Scale factor, ``1 / (1 + redshift)``."""
        return 1.0 / (1.0 + float(self.redshift))

    def to_field(self) -> DensityField:
        """The density field alone (a plain :class:`~astrogen.batch.DensityField`)."""
        return DensityField(delta=self.delta, box_size=self.box_size, redshift=self.redshift,
                            box_id=self.box_id, cosmology=dict(self.cosmology),
                            meta=dict(self.meta))

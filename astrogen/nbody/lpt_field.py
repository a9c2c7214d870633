"""Density of particles moved by Lagrangian perturbation theory: the cheap approximation of
the evolved field that the N-body emulator can take as its condition.

He et al. (2019, arXiv:1811.06533) emulate an N-body run by correcting the Zel'dovich (1LPT)
displacement rather than by mapping the linear field: the LPT field already carries the
large-scale structure at the output time, so a network only has to sharpen the collapsed
regions. :func:`lpt_density` places the particles of the PM lattice at
``q + D1(a) Psi1 + D2(a) Psi2`` (:func:`astrogen.cosmology.initial.lpt_particles`, as the PM
initial conditions, :meth:`astrogen.nbody.pm.ParticleMesh.initial_conditions`, but at the
output time) and paints them with CIC on the particle grid, like the PM snapshots.

Cost: 2LPT needs about a dozen FFTs of the grid and one CIC paint, a small fraction of a PM
run (which does one paint, FFTs and a readout per step).
"""
from __future__ import annotations

import numpy as np

from astrogen.cosmology.initial import lpt_particles
from astrogen.errors import ConfigError

__all__ = ["lpt_density"]


def lpt_density(delta_linear: np.ndarray, box_size: float, cosmology, redshift: float = 0.0,
                order: int = 2, lattice_shift: float = 0.25) -> np.ndarray:
    """``1 + delta`` of LPT-displaced particles, CIC-painted on the particle grid.

    Parameters
    ----------
    delta_linear : numpy.ndarray, shape (n, n, n)
        Linear density contrast at a = 1 on the particle lattice (dimensionless).
    box_size : float
        Box side in Mpc/h.
    cosmology : astrogen.cosmology.background.Cosmology
        Gives the growth factors ``D1(a)``, ``D2(a)``.
    redshift : float
        Output redshift (>= 0).
    order : int
        1 (Zel'dovich) or 2 (2LPT).
    lattice_shift : float
        Offset of the particle lattice in grid spacings (the PM code's half force-mesh cell:
        0.25 for a force mesh twice finer, see
        :attr:`astrogen.nbody.pm.ParticleMesh.lattice_shift`).

    Returns
    -------
    numpy.ndarray, shape (n, n, n), float64
        ``rho / rho_mean`` (dimensionless, mean 1, >= 0).

    Raises
    ------
    ConfigError
        For a field that is not a cube, a negative redshift or an order other than 1 or 2.

    References
    ----------
    Crocce, Pueblas & Scoccimarro 2006 (arXiv:astro-ph/0606505); He et al. 2019
    (arXiv:1811.06533).
    """
    from astrogen.nbody.mesh import paint_density

    d = np.asarray(delta_linear, dtype=float)
    if d.ndim != 3 or len(set(d.shape)) != 1:
        raise ConfigError("must be a cubic 3-D grid.", key="delta_linear",
                          received={"shape": d.shape})
    if not (float(redshift) >= 0):
        raise ConfigError("must be >= 0.", key="redshift", received={"redshift": redshift})
    if order not in (1, 2):
        raise ConfigError("must be 1 or 2.", key="order", received={"order": order})
    pos, _ = lpt_particles(d, box_size, cosmology, 1.0 / (1.0 + float(redshift)), order=order,
                           shift=lattice_shift)
    return 1.0 + paint_density(pos, box_size, d.shape[0])

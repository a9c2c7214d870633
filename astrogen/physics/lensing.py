"""Weak lensing of a light profile: reduced shear and convergence, applied before the PSF.

A catalog row may carry the reduced shear ``g1``, ``g2`` and the convergence ``kappa``
(dimensionless; absent columns mean 0). The lensed profile is GalSim's
``obj.lens(g1, g2, mu)`` with the magnification

.. math:: \\mu = 1 / [(1 - \\kappa)^2 - |\\gamma|^2], \\quad \\gamma = g (1 - \\kappa),

so surface brightness is conserved and the total flux grows by ``mu``.
"""
from __future__ import annotations

import galsim
import numpy as np

from astrogen.errors import CatalogError

__all__ = ["magnification", "apply_lensing", "lensing_columns"]

#: The catalog columns of the lensing fields (dimensionless; 0 when a column is absent).
LENSING_COLUMNS = ("g1", "g2", "kappa")


def magnification(g1, g2, kappa):
    """Magnification ``mu`` for reduced shear ``(g1, g2)`` and convergence ``kappa``.

    Raises
    ------
    CatalogError
        Where ``|g| >= 1`` or the lens is critical (``mu`` not finite and positive).
    """
    g1, g2, kappa = (np.asarray(v, dtype=float) for v in (g1, g2, kappa))
    gsq = g1 ** 2 + g2 ** 2
    if np.any(gsq >= 1.0):
        raise CatalogError("reduced shear must have |g| < 1.", key="column 'g1'/'g2'",
                           received={"max |g|": float(np.sqrt(gsq.max()))})
    det = (1.0 - kappa) ** 2 * (1.0 - gsq)
    with np.errstate(divide="ignore"):
        mu = 1.0 / det
    if np.any(~np.isfinite(mu) | (mu <= 0)):
        raise CatalogError("the lens is critical here (kappa too close to 1).",
                           key="column 'kappa'", received={"max kappa": float(np.max(kappa))})
    return mu


def lensing_columns(table):
    """``(g1, g2, kappa)`` arrays of a catalog chunk, zeros for absent columns."""
    n = len(table)
    return tuple(np.asarray(table[c], dtype=float) if c in table.colnames else np.zeros(n)
                 for c in LENSING_COLUMNS)


def apply_lensing(obj: galsim.GSObject, g1: float, g2: float, kappa: float) -> galsim.GSObject:
    """The lensed profile (before the PSF); the object itself when there is no lensing."""
    if g1 == 0.0 and g2 == 0.0 and kappa == 0.0:
        return obj
    mu = float(magnification(g1, g2, kappa))
    return obj.lens(float(g1), float(g2), mu)


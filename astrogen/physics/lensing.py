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

__all__ = ["magnification", "apply_lensing", "lensing_columns", "gaussian_shear_field"]

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


def gaussian_shear_field(x, y, seed: int, rms_shear: float, correlation_length: float,
                         field_size: float, center=(0.0, 0.0)):
    """Reduced shear and convergence of a Gaussian random lensing field at positions.

    A stated simple model for simulations that need a spatially varying shear: an E-mode
    convergence power spectrum

    .. math:: P_\\kappa(k) = 2 \\pi \\theta^2 \\sigma^2 \\exp(-k^2 \\theta^2 / 2),

    whose shear has ``<|gamma|^2> = sigma^2`` (before the finite field removes the modes
    larger than it), realised on a grid by GalSim's :class:`galsim.PowerSpectrum` (shear and
    convergence from the same Fourier modes, Kaiser-Squires) and interpolated at the
    positions. The field depends only on ``seed`` and the geometry, not on which positions
    are asked for, so chunks of a catalog see the same field.

    Parameters
    ----------
    x, y : array_like
        Positions in arcsec (e.g. ``(x_pix - x0) * pixel_scale``).
    seed : int
        Seed of the field realisation.
    rms_shear : float
        ``sigma``: rms of ``|gamma|`` (both components), dimensionless.
    correlation_length : float
        ``theta`` in arcsec.
    field_size : float
        Side of the square field in arcsec, centred on ``center`` (arcsec); positions must
        lie inside.

    Returns
    -------
    g1, g2, kappa : numpy.ndarray
        Reduced shear and convergence at the positions (dimensionless).
    """
    from astrogen.errors import ConfigError

    for name, v in (("rms_shear", rms_shear), ("correlation_length", correlation_length),
                    ("field_size", field_size)):
        if not (np.isfinite(v) and v > 0):
            raise ConfigError("must be > 0.", key=name, received={name: v})
    x = np.atleast_1d(np.asarray(x, dtype=float))
    y = np.atleast_1d(np.asarray(y, dtype=float))
    half = 0.5 * field_size
    if np.any(np.abs(x - center[0]) > half) or np.any(np.abs(y - center[1]) > half):
        raise ConfigError("positions lie outside the shear field.", key="field_size",
                          received={"field_size": field_size,
                                    "max offset": float(max(np.abs(x - center[0]).max(),
                                                            np.abs(y - center[1]).max()))})
    theta, sig = float(correlation_length), float(rms_shear)
    amp = 2.0 * np.pi * theta ** 2 * sig ** 2
    ps = galsim.PowerSpectrum(e_power_function=lambda k: amp * np.exp(-0.5 * (k * theta) ** 2),
                              units=galsim.arcsec)
    spacing = theta / 4.0
    ngrid = int(np.ceil(field_size / spacing)) + 2
    ps.buildGrid(grid_spacing=spacing, ngrid=ngrid, rng=galsim.BaseDeviate(int(seed) % 2**31 + 1),
                 center=galsim.PositionD(*center), interpolant="linear")
    g1, g2, _ = ps.getLensing(pos=(x, y))
    kappa = ps.getConvergence(pos=(x, y))
    return tuple(np.atleast_1d(np.asarray(v, dtype=float)) for v in (g1, g2, kappa))

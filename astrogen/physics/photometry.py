"""Flux calibration, decided once: AB magnitudes <-> fluxes for a zero point and exposure.

Every module of the package that turns a magnitude into a flux (or back) calls these
functions; ``tests/physics/test_photometry.py`` fails on a ``10**(-0.4 ...)`` or
``zero_point - 2.5 log10(...)`` written anywhere else in ``astrogen/``.

Conventions
-----------
* Magnitudes are AB magnitudes (mag).
* ``zero_point`` is the AB magnitude of a source giving 1 flux unit per second (1 e-/s for a
  survey band, 1 count/s for the COSMOS F814W stamps: :data:`astrogen.constants.
  COSMOS_ZERO_POINT`); a source of magnitude ``m`` gives
  ``10**(-0.4 (m - zero_point)) * exposure_time`` flux units.
* Scalars stay scalars and arrays keep their floating dtype (integers become float64): the
  arithmetic is exactly the one the stages always did, so every output is unchanged to the bit.

This module imports numpy only, so every layer (``models/``, ``datasets/``, ``stages/``) may
use it.
"""
from __future__ import annotations

from numbers import Real

import numpy as np

__all__ = ["flux_from_mag", "mag_from_flux", "image_zero_point", "sky_level_per_pixel"]


def _values(x):
    """``x`` unchanged if a real scalar, else a floating array (integers -> float64)."""
    if isinstance(x, Real) and not isinstance(x, bool):
        return x
    a = np.asarray(x)
    return a if a.dtype.kind == "f" else a.astype(np.float64)


def flux_from_mag(mag, zero_point, exposure_time=1.0):
    """Flux of a source of AB magnitude ``mag``.

    Parameters
    ----------
    mag : float or array_like
        AB magnitude(s), mag.
    zero_point : float
        AB magnitude giving 1 flux unit per second (mag).
    exposure_time : float
        Exposure time, s (default 1: the flux per second, e.g. count/s).

    Returns
    -------
    float or numpy.ndarray
        ``10**(-0.4 (mag - zero_point)) * exposure_time`` in flux units (e-, or count/s for
        ``exposure_time=1``); the shape of ``mag``. A NaN magnitude gives NaN, ``+inf`` gives
        0 and ``-inf`` gives ``inf`` (no warning, no error).

    Examples
    --------
    >>> flux_from_mag(25.94, 25.94)        # a source at the zero point gives 1 unit
    1.0
    >>> float(flux_from_mag(20.0, 25.0, exposure_time=30.0))   # 100 e-/s for 30 s
    3000.0
    """
    return 10.0 ** (-0.4 * (_values(mag) - zero_point)) * exposure_time


def mag_from_flux(flux, zero_point, exposure_time=1.0, nonpositive=np.nan):
    """AB magnitude of a source giving ``flux``; the inverse of :func:`flux_from_mag`.

    Parameters
    ----------
    flux : float or array_like
        Flux(es) in flux units collected over ``exposure_time`` (e-, or count/s for
        ``exposure_time=1``).
    zero_point : float
        AB magnitude giving 1 flux unit per second (mag).
    exposure_time : float
        Exposure time, s.
    nonpositive : float
        Magnitude given to a flux that is zero or negative (default NaN; generators use
        ``inf``: no light). A NaN flux gives ``nonpositive`` too.

    Returns
    -------
    numpy.ndarray or numpy.float64
        ``zero_point - 2.5 log10(flux / exposure_time)`` mag where ``flux > 0``, else
        ``nonpositive``; the shape of ``flux`` (no warning for non-positive values).
    """
    f = _values(flux) / exposure_time
    pos = f > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(pos, zero_point - 2.5 * np.log10(np.where(pos, f, 1.0)), nonpositive)


def image_zero_point(zero_point, exposure_time):
    """AB magnitude of a source giving 1 flux unit in the whole exposure (``MAGZERO``).

    Parameters
    ----------
    zero_point : float
        AB magnitude giving 1 flux unit per second (mag).
    exposure_time : float
        Exposure time, s (> 0).

    Returns
    -------
    float
        ``zero_point + 2.5 log10(exposure_time)`` mag: :func:`flux_from_mag` of a source at
        this magnitude with ``exposure_time`` is 1.
    """
    return zero_point + 2.5 * np.log10(exposure_time)


def sky_level_per_pixel(sky_brightness, zero_point, exposure_time, pixel_scale):
    """Sky background collected per pixel.

    Parameters
    ----------
    sky_brightness : float
        Sky surface brightness, AB mag / arcsec^2.
    zero_point : float
        AB magnitude giving 1 flux unit per second (mag).
    exposure_time : float
        Exposure time, s.
    pixel_scale : float
        arcsec / pixel.

    Returns
    -------
    float
        ``flux_from_mag(sky_brightness, zero_point, exposure_time) * pixel_scale**2`` in flux
        units per pixel (e- / pixel for a survey band).
    """
    return float(flux_from_mag(sky_brightness, zero_point, exposure_time) * pixel_scale ** 2)

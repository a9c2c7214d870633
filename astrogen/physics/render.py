"""Parametric galaxy profiles (Sersic or bulge + disk) with GalSim.

Intrinsic stamps are PSF-free surface-brightness samples (``method='no_pixel'``: pixel value =
surface brightness at the pixel centre x pixel area), so that :mod:`astrogen.physics.observe`
can interpolate them and apply any survey PSF and pixel afterwards, the same way as for
images made by the generative models.
"""
from __future__ import annotations

import galsim
import numpy as np
from astropy.table import Table

from astrogen.errors import ConfigError

__all__ = ["galaxy_profile", "draw_intrinsic", "SERSIC_N_STEP", "PROFILES"]

#: Sersic indices are rounded to this step so GalSim can reuse its per-index Hankel tables
#: (building one costs tens of ms); the change of the profile is below 1 % in the
#: half-light radius.
SERSIC_N_STEP = 0.05
PROFILES = ("sersic", "bulge_disk")
_GSPARAMS = galsim.GSParams(maximum_fft_size=16384)


def galaxy_profile(row, flux: float, profile: str = "sersic") -> galsim.GSObject:
    """GalSim profile of one catalog row (canonical columns).

    Parameters
    ----------
    row : mapping
        Needs ``hlr`` [arcsec], ``q``, ``beta`` [deg], and ``sersic_n`` (``profile='sersic'``)
        or ``bulge_frac`` (``profile='bulge_disk'``).
    flux : float
        Total flux in the caller's units.
    profile : {"sersic", "bulge_disk"}
        Single Sersic, or exponential disk + de Vaucouleurs bulge with the same half-light
        radius and ellipticity (the sum then has exactly that half-light radius).
    """
    hlr = float(row["hlr"])
    shear = galsim.Shear(q=float(row["q"]), beta=float(row["beta"]) * galsim.degrees)
    if profile == "sersic":
        n = float(np.clip(np.round(float(row["sersic_n"]) / SERSIC_N_STEP) * SERSIC_N_STEP,
                          0.3, 6.2))
        gal = galsim.Sersic(n=n, half_light_radius=hlr, flux=flux, gsparams=_GSPARAMS)
    elif profile == "bulge_disk":
        bf = float(row["bulge_frac"])
        gal = galsim.Add([
            galsim.Exponential(half_light_radius=hlr, flux=(1 - bf) * flux, gsparams=_GSPARAMS),
            galsim.DeVaucouleurs(half_light_radius=hlr, flux=bf * flux, gsparams=_GSPARAMS)])
    else:
        raise ConfigError(f"must be one of {PROFILES}.", key="profile",
                          received={"profile": profile})
    return gal.shear(shear)


def draw_intrinsic(rows: Table, fluxes: np.ndarray, stamp_size: int, pixel_scale: float,
                   profile: str = "sersic") -> np.ndarray:
    """Draw PSF-free stamps, one per row.

    Parameters
    ----------
    rows : astropy.table.Table
        Canonical columns (see :func:`galaxy_profile`).
    fluxes : numpy.ndarray
        Total flux per row (any unit; the stamps are in that unit per pixel).
    stamp_size : int
        Stamp side in pixels.
    pixel_scale : float
        arcsec / pixel.

    Returns
    -------
    numpy.ndarray, shape (n, stamp_size, stamp_size), float32
    """
    out = np.zeros((len(rows), stamp_size, stamp_size), dtype=np.float32)
    for i, row in enumerate(rows):
        img = galsim.ImageF(stamp_size, stamp_size, scale=pixel_scale)
        galaxy_profile(row, float(fluxes[i]), profile).drawImage(img, method="no_pixel")
        out[i] = img.array
    return out

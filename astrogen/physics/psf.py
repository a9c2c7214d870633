"""PSFs from GalSim config dicts.

A PSF is written exactly as in a GalSim config file: ``{type: Kolmogorov, fwhm: 0.7}``,
``{type: Moffat, beta: 3.5, fwhm: 0.6}``, ``{type: Airy, lam: 800, diam: 2.4}``, or an image
``{type: InterpolatedImage, image: psf.fits, scale: 0.03}`` (arcsec, nm, m). GalSim's own
config machinery builds it, so every GalSim object type and its validation are available.
"""
from __future__ import annotations

import copy

import galsim

from astrogen.errors import ConfigError
from astrogen.security import refuse_eval

__all__ = ["build_psf", "describe_psf", "psf_fwhm"]


def build_psf(spec: dict, key: str = "psf") -> galsim.GSObject:
    """Build a GalSim object from a GalSim config dict; errors name ``key``."""
    if not isinstance(spec, dict) or "type" not in spec:
        raise ConfigError("must be a GalSim config mapping with a 'type' "
                          "(e.g. {type: Kolmogorov, fwhm: 0.7}).", key=key, received={key: spec})
    refuse_eval(spec, key)  # GalSim runs '$...' strings as Python: off unless allowed
    try:
        obj, _ = galsim.config.BuildGSObject({"psf": copy.deepcopy(spec)}, "psf")
    except (galsim.GalSimError, TypeError, ValueError, KeyError, AttributeError, OSError) as exc:
        raise ConfigError(f"GalSim cannot build this PSF: {exc}", key=key,
                          received={key: spec}) from None
    if obj is None:
        raise ConfigError("GalSim built no PSF from this mapping.", key=key, received={key: spec})
    # GalSim accepts some nonsense silently (e.g. a negative Kolmogorov fwhm)
    if not (obj.maxk > 0 and obj.stepk > 0 and obj.flux > 0):
        raise ConfigError("GalSim built an invalid PSF (non-positive size or flux).", key=key,
                          received={key: spec})
    return obj


def describe_psf(spec: dict) -> str:
    """Short one-line description for FITS headers: ``Kolmogorov(fwhm=0.79)``."""
    if spec.get("type") == "Convolve":
        return "*".join(describe_psf(i) for i in spec.get("items", []))
    args = ",".join(f"{k}={v}" for k, v in spec.items() if k != "type")
    return f"{spec.get('type')}({args})"


def psf_fwhm(psf: galsim.GSObject, scale: float = 0.005) -> float:
    """FWHM in arcsec of any GalSim PSF, measured on a fine image."""
    img = psf.drawImage(nx=512, ny=512, scale=scale, method="no_pixel")
    return float(img.calculateFWHM())

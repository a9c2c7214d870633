"""Take PSF-free stamps (from any generator) to a survey: PSF, pixel, flux, noise.

A stamp is turned into a :class:`galsim.InterpolatedImage` (quintic interpolant), rescaled
to the requested flux, convolved with the survey PSF and drawn at the survey pixel scale
with GalSim's ``method='auto'`` (which integrates over the survey pixel).
"""
from __future__ import annotations

import galsim
import numpy as np

__all__ = ["observed_profile", "draw_observed", "add_noise"]


def observed_profile(stamp: np.ndarray, pixel_scale: float, flux: float,
                     psf: galsim.GSObject) -> galsim.GSObject:
    """PSF-convolved profile of a PSF-free stamp, rescaled to ``flux`` (e-).

    Returns ``None`` for an all-zero stamp (nothing to draw).
    """
    total = float(np.sum(stamp, dtype=np.float64))
    if not np.isfinite(total) or total <= 0:
        return None
    ii = galsim.InterpolatedImage(galsim.Image(np.ascontiguousarray(stamp, dtype=np.float64),
                                               scale=pixel_scale),
                                  flux=flux, x_interpolant="quintic")
    return galsim.Convolve(ii, psf)


def draw_observed(stamps: np.ndarray, pixel_scale: float, fluxes: np.ndarray,
                  psf: galsim.GSObject, out_scale: float, out_size: int,
                  method: str = "auto") -> np.ndarray:
    """Noiseless survey stamps (e- per pixel), shape (n, out_size, out_size), float32."""
    out = np.zeros((len(stamps), out_size, out_size), dtype=np.float32)
    for i, stamp in enumerate(stamps):
        prof = observed_profile(stamp, pixel_scale, float(fluxes[i]), psf)
        if prof is None:
            continue
        img = galsim.ImageF(out_size, out_size, scale=out_scale)
        prof.drawImage(img, method=method)
        out[i] = img.array
    return out


def add_noise(image: np.ndarray, seed: int, sky_level: float, read_noise: float,
              gain: float = 1.0) -> np.ndarray:
    """Sky-subtracted CCD noise: Poisson on (image + sky) minus sky, plus Gaussian read noise.

    Parameters
    ----------
    image : numpy.ndarray
        Noiseless image in e- per pixel.
    seed : int
        Seed of the ``galsim.BaseDeviate``.
    sky_level : float
        Sky in e- per pixel.
    read_noise : float
        e- per pixel.
    gain : float
        e- / ADU of the output.
    """
    img = galsim.ImageF(np.array(image, dtype=np.float32, copy=True))
    noise = galsim.CCDNoise(galsim.BaseDeviate(int(seed)), sky_level=sky_level, gain=gain,
                            read_noise=read_noise)
    img.addNoise(noise)
    return img.array

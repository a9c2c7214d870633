"""PSF stamps and noise power spectra of postage stamps (numpy, GalSim): what the PSF-aware
likelihood (:mod:`astrogen.models.psf_likelihood`) takes as its PSF and noise.

Convention of the noise power spectrum: ``noise_power[k] = E|DFT(n)_k|^2 / (ny * nx)`` in
(flux per pixel)^2, ``sigma**2`` at every frequency for white noise of standard deviation
``sigma``.
"""
from __future__ import annotations

import numpy as np

from astrogen.constants import COSMOS_PIXEL_SCALE  # arcsec / pixel of the COSMOS stamps

__all__ = ["psf_stamp", "noise_power_from_correlation", "estimate_noise_power",
           "POWER_FLOOR", "COSMOS_PIXEL_SCALE"]

#: relative floor of a noise power spectrum computed from a correlation function (keeps it > 0)
POWER_FLOOR = 1e-6


def psf_stamp(psf_image: np.ndarray, stamp_size: int, pixel_scale: float = COSMOS_PIXEL_SCALE,
              native_scale: float = COSMOS_PIXEL_SCALE, recenter: bool = True):
    """A pixelated PSF image as an ``N x N`` stamp centred on pixel ``N // 2``, sum 1.

    Parameters
    ----------
    psf_image : 2-d array
        Pixelated PSF (pixel response included) at ``native_scale`` arcsec/pixel.
    stamp_size : int
        ``N``.
    pixel_scale : float
        Scale of the output grid.
    recenter : bool
        Move the adaptive-moment centroid to the centre pixel.

    Returns
    -------
    stamp : numpy.ndarray, float64, (N, N)
    offset : (float, float)
        Centroid of the input relative to its true centre (x, y), in native pixels.
    """
    import galsim

    img = galsim.Image(np.ascontiguousarray(psf_image, dtype=np.float64), scale=native_scale)
    dx = dy = 0.0
    if recenter:
        try:
            mom = img.FindAdaptiveMom()
            dx = mom.moments_centroid.x - img.true_center.x
            dy = mom.moments_centroid.y - img.true_center.y
        except (galsim.GalSimHSMError, RuntimeError):  # pragma: no cover - robust fallback
            a = img.array
            yy, xx = np.indices(a.shape)
            dx = float((xx * a).sum() / a.sum() - (a.shape[1] - 1) / 2)
            dy = float((yy * a).sum() / a.sum() - (a.shape[0] - 1) / 2)
    obj = galsim.InterpolatedImage(img, flux=1.0).shift(-dx * native_scale, -dy * native_scale)
    out = galsim.ImageD(stamp_size, stamp_size, scale=pixel_scale)
    obj.drawImage(out, method="no_pixel", use_true_center=False)
    arr = out.array / out.array.sum()
    return arr, (float(dx), float(dy))


def noise_power_from_correlation(noise, stamp_size: int, pixel_scale: float) -> np.ndarray:
    """Power spectrum ``(N, N//2+1)`` of a ``galsim`` correlated noise on the periodic
    ``N x N`` grid (convention of :mod:`astrogen.models.psf_likelihood`).

    It is the DFT of the correlation function sampled at the lags ``-N/2 .. N/2-1``; values
    are floored at ``1e-6`` of their mean so the spectrum stays positive.
    """
    import galsim

    n = int(stamp_size)
    cf = galsim.ImageD(n + 1, n + 1, scale=pixel_scale)
    noise.drawImage(cf)  # zero lag at the true centre = pixel (n/2, n/2)
    xi = cf.array[:n, :n]
    power = np.fft.rfft2(np.fft.ifftshift(xi)).real
    return np.maximum(power, POWER_FLOOR * power.mean())


def estimate_noise_power(noise_images, full_plane: bool = False) -> np.ndarray:
    """Noise power spectrum measured from noise-only images (average periodogram).

    Parameters
    ----------
    noise_images : array-like, shape (n, ny, nx) or (ny, nx)
        Independent realisations of the noise (for example blank-sky cut-outs or
        ``galsim.CorrelatedNoise`` draws), flux per pixel.
    full_plane : bool
        Return the full ``(ny, nx)`` plane instead of the ``rfft2`` half plane.

    Returns
    -------
    numpy.ndarray, shape (ny, nx // 2 + 1) or (ny, nx)
        ``mean |DFT(n)|^2 / (ny * nx)`` in (flux per pixel)^2: ``sigma**2`` for white noise.
    """
    n = np.asarray(noise_images, dtype=np.float64)
    if n.ndim == 2:
        n = n[None]
    ny, nx = n.shape[-2:]
    k = np.fft.fft2(n) if full_plane else np.fft.rfft2(n)
    return (np.abs(k) ** 2).mean(axis=0) / (ny * nx)

"""Simple, stated weak-lensing fields evaluated at galaxy positions.

Two models:

``constant``
    the same reduced shear ``(g1, g2)`` and convergence ``kappa`` everywhere (a shear test).
``grf``
    a Gaussian random convergence field: white noise on a grid, smoothed by a Gaussian of
    standard deviation ``smoothing`` [arcmin], scaled to the rms ``sigma_kappa``; the shear
    follows from the convergence by the Kaiser & Squires (1993) relation in Fourier space,
    ``gamma_hat = [(l1^2 - l2^2) + 2 i l1 l2] / l^2 * kappa_hat``, and the reduced shear is
    ``g = gamma / (1 - kappa)``. It is a toy field with a Gaussian power spectrum, not a
    cosmological one: it makes spatially coherent shear of a chosen amplitude and scale.

The grid covers the scene with a margin of 3 ``smoothing`` on each side (so the periodic
FFT does not wrap the field across the image), spacing ``smoothing / 4``; values at galaxy
positions are bilinear interpolations. The field depends only on the seed and the scene
geometry, so a row's shear does not depend on chunking.
"""
from __future__ import annotations

import numpy as np
from scipy.ndimage import map_coordinates

from astrogen.errors import ConfigError

__all__ = ["GaussianLensingField", "lensing_at"]


class GaussianLensingField:
    """Gaussian random convergence field and its shear on a grid (arcmin coordinates).

    Parameters
    ----------
    width, height : float
        Size of the area to cover, arcmin (centred on the origin).
    sigma_kappa : float
        rms of the convergence (dimensionless).
    smoothing : float
        Gaussian smoothing scale, arcmin (the correlation length).
    seed : int
        Seed of the white noise (numpy ``default_rng``).
    """

    def __init__(self, width: float, height: float, sigma_kappa: float, smoothing: float,
                 seed: int):
        if not (smoothing > 0 and sigma_kappa >= 0):
            raise ConfigError("needs smoothing > 0 arcmin and sigma_kappa >= 0.",
                              key="smoothing", received={"smoothing": smoothing,
                                                         "sigma_kappa": sigma_kappa})
        self.step = smoothing / 4.0
        pad = 3.0 * smoothing
        nx = int(np.ceil((width + 2 * pad) / self.step)) + 1
        ny = int(np.ceil((height + 2 * pad) / self.step)) + 1
        nx, ny = nx + nx % 2, ny + ny % 2
        self.x0 = -(nx - 1) / 2 * self.step
        self.y0 = -(ny - 1) / 2 * self.step
        rng = np.random.default_rng(int(seed))
        white = rng.standard_normal((ny, nx))
        ky = 2 * np.pi * np.fft.fftfreq(ny, d=self.step)[:, None]
        kx = 2 * np.pi * np.fft.fftfreq(nx, d=self.step)[None, :]
        k2 = kx ** 2 + ky ** 2
        kappa_hat = np.fft.fft2(white) * np.exp(-0.5 * k2 * smoothing ** 2)
        kappa = np.fft.ifft2(kappa_hat).real
        norm = sigma_kappa / kappa.std() if kappa.std() > 0 else 0.0
        kappa_hat *= norm
        with np.errstate(invalid="ignore", divide="ignore"):
            d = np.where(k2 > 0, ((kx ** 2 - ky ** 2) + 2j * kx * ky) / k2, 0.0)
        gamma = np.fft.ifft2(d * kappa_hat)
        self.kappa = kappa * norm
        self.gamma1, self.gamma2 = gamma.real, gamma.imag

    def __call__(self, x_arcmin, y_arcmin):
        """``(g1, g2, kappa)`` at positions in arcmin from the centre (reduced shear)."""
        coords = np.array([(np.asarray(y_arcmin, float) - self.y0) / self.step,
                           (np.asarray(x_arcmin, float) - self.x0) / self.step])
        k = map_coordinates(self.kappa, coords, order=1, mode="nearest")
        g1 = map_coordinates(self.gamma1, coords, order=1, mode="nearest") / (1 - k)
        g2 = map_coordinates(self.gamma2, coords, order=1, mode="nearest") / (1 - k)
        return g1, g2, k


def lensing_at(x_arcmin, y_arcmin, model: str, seed: int, extent: tuple[float, float],
               g1: float = 0.0, g2: float = 0.0, kappa: float = 0.0,
               sigma_kappa: float = 0.02, smoothing: float = 1.0):
    """``(g1, g2, kappa)`` arrays at positions [arcmin from the scene centre] for ``model``.

    Parameters
    ----------
    model : {"constant", "grf"}
    extent : (float, float)
        Scene width and height in arcmin (grf).
    g1, g2, kappa : float
        The constant model's values.
    sigma_kappa, smoothing : float
        The grf model's rms convergence and smoothing scale [arcmin].
    """
    n = len(np.atleast_1d(x_arcmin))
    if model == "constant":
        return np.full(n, float(g1)), np.full(n, float(g2)), np.full(n, float(kappa))
    if model == "grf":
        field = GaussianLensingField(extent[0], extent[1], sigma_kappa, smoothing, seed)
        return field(x_arcmin, y_arcmin)
    raise ConfigError("must be 'constant' or 'grf'.", key="model", received={"model": model})

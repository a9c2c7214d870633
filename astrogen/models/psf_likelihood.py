"""PSF-aware Gaussian likelihood of postage stamps, in TensorFlow: the loss of the models
that generate unconvolved galaxies (FlowVAE).

A generative model of galaxies (the FlowVAE decoder of Lanusse et al. 2021, MNRAS 504, 5543)
produces *unconvolved* light profiles. To compare them with an observed stamp, each model
image is convolved with that stamp's PSF and compared with the data under that stamp's noise:

.. math::

    \\log p(x \\mid g) = \\log \\mathcal{N}\\left(x;\\ \\Pi * g,\\ \\Sigma\\right),

with :math:`\\Pi` the PSF and :math:`\\Sigma` either white noise (:math:`\\sigma^2 I`) or
stationary correlated noise, diagonal in Fourier space with power spectrum :math:`P(k)`, as
for the COSMOS HST/ACS stamps of Lanusse et al. (2021).

Conventions
-----------
Images
    Arrays of shape ``(B, ny, nx)``, pixel values in flux per pixel (for example ``count/s``
    at the COSMOS zero point, or ``electron``); the model, observed image and noise must use
    the same unit. The pixel scale (arcsec/pixel) of the model, PSF and observed images must
    be the same: it never enters the formulas, which are in pixel units.
PSF images
    Shape ``(B, my, mx)``, ``(1, my, mx)`` or ``(my, mx)`` (one PSF for the whole batch),
    of any size (at most ``(ny, nx)`` when ``pad=False``), normalised to a sum of 1 (the
    pixel values are the fraction of flux per pixel; they are *not* renormalised here).
    The PSF centre is pixel ``(my // 2, mx // 2)`` (0-based), the convention of
    :func:`numpy.fft.fftshift` and of ``galsim.GSObject.drawImage(...,
    use_true_center=False)``: convolution by a PSF symmetric about that pixel does not
    shift the image.
PSF in Fourier space
    The complex output of :func:`psf_fourier` (shape ``(B|1, py, px // 2 + 1)``, the
    ``rfft2`` of the zero-padded PSF with its centre moved to pixel ``(0, 0)``). Precompute it
    once per stamp to save an FFT per training step. Any complex tensor passed as ``psf`` is
    taken to be of this form.
Zero padding
    With ``pad=True`` (default) the model image and the PSF are zero-padded to
    ``(ny + my, nx + mx)`` (rounded up to even sizes) before the FFT, so the product of
    transforms is the *linear* convolution of the stamp with the PSF, without wrap-around:
    flux that the PSF scatters out of the stamp is lost, as on a real detector of that size.
    ``pad=False`` gives the circular (periodic) convolution on the ``ny x nx`` grid.
Noise power spectrum
    ``noise_power[k] = E|DFT(n)_k|^2 / (ny * nx)`` for a noise field ``n`` on the ``ny x nx``
    stamp, with ``DFT`` the unnormalised discrete Fourier transform (numpy's ``fft2``). It has
    units of (flux per pixel)^2, and white noise of standard deviation ``sigma`` has
    ``noise_power = sigma**2`` at every frequency. Shape ``(B|1, ny, nx // 2 + 1)`` (the
    ``rfft2`` half plane) or ``(B|1, ny, nx)`` (full plane, only its ``rfft2`` half is used),
    all values > 0. :func:`estimate_noise_power` measures it from noise images. The
    likelihood is then exact for noise that is stationary and periodic on the stamp.
"""
from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from astrogen.errors import ConfigError
from astrogen.physics.noise_power import estimate_noise_power  # noqa: F401 (re-export)

__all__ = [
    "padded_shape",
    "psf_fourier",
    "convolve",
    "gaussian_log_likelihood",
    "psf_log_likelihood",
    "estimate_noise_power",
]


def _as_batch(x, name: str, dtype=None) -> tf.Tensor:
    """A real tensor of rank 3 ``(B|1, ny, nx)`` (rank-2 input gets a batch axis of 1)."""
    x = tf.convert_to_tensor(x, dtype=dtype)
    if x.dtype.is_complex:
        return x if x.shape.rank == 3 else x[None]
    if x.shape.rank == 2:
        x = x[None]
    if x.shape.rank != 3:
        raise ConfigError(f"{name} must have shape (B, ny, nx) or (ny, nx).",
                          key=name, received={"shape": tuple(x.shape)})
    return x


def _even(n: int) -> int:
    return n + (n % 2)


def padded_shape(image_shape, psf_shape, pad: bool = True) -> tuple[int, int]:
    """Shape ``(py, px)`` of the FFT grid used to convolve images by a PSF.

    Parameters
    ----------
    image_shape, psf_shape : tuple of int
        ``(..., ny, nx)`` of the images and ``(..., my, mx)`` of the PSF.
    pad : bool
        ``True``: ``(ny + my, nx + mx)`` rounded up to even sizes (linear convolution, no
        wrap-around). ``False``: ``(ny, nx)`` (circular convolution; the PSF must not be
        larger than the images).
    """
    ny, nx = int(image_shape[-2]), int(image_shape[-1])
    my, mx = int(psf_shape[-2]), int(psf_shape[-1])
    if pad:
        return _even(ny + my), _even(nx + mx)
    if my > ny or mx > nx:
        raise ConfigError("with pad=False the PSF must not be larger than the images.",
                          key="psf", received={"psf_shape": (my, mx), "image_shape": (ny, nx)})
    return ny, nx


def psf_fourier(psf, image_shape, pad: bool = True) -> tf.Tensor:
    """Transform of PSF images for :func:`convolve` (compute it once per stamp).

    Parameters
    ----------
    psf : array-like, shape (B, my, mx), (1, my, mx) or (my, mx)
        PSF images, centre at pixel ``(my // 2, mx // 2)``, sum 1 (fraction of flux per pixel).
    image_shape : tuple of int
        ``(..., ny, nx)`` of the images the PSF will be applied to.
    pad : bool
        Zero padding for a linear convolution (see :func:`padded_shape`).

    Returns
    -------
    tf.Tensor, complex64 (complex128 for float64 input), shape (B|1, py, px // 2 + 1)
        ``rfft2`` of the PSF zero-padded to ``(py, px)`` with its centre rolled to ``(0, 0)``.
    """
    psf = _as_batch(psf, "psf")
    if psf.dtype.is_complex:
        return psf
    if not psf.dtype.is_floating:
        psf = tf.cast(psf, tf.float32)
    my, mx = int(psf.shape[-2]), int(psf.shape[-1])
    py, px = padded_shape(image_shape, (my, mx), pad)
    padded = tf.pad(psf, [[0, 0], [0, py - my], [0, px - mx]])
    padded = tf.roll(padded, shift=[-(my // 2), -(mx // 2)], axis=[1, 2])
    return tf.signal.rfft2d(padded)


def _fourier_grid_width(n_freq: int, nx: int) -> int:
    """Width ``px`` of the real grid whose ``rfft2`` has ``n_freq`` columns."""
    if nx // 2 + 1 == n_freq:  # unpadded grid (odd or even nx)
        return nx
    return 2 * (n_freq - 1)  # padded grids are always even


def convolve(images, psf, pad: bool = True) -> tf.Tensor:
    """Convolve images with PSFs by FFT.

    Parameters
    ----------
    images : array-like, shape (B, ny, nx)
        Unconvolved images (flux per pixel, any unit).
    psf : array-like
        Real PSF images, shape ``(B|1, my, mx)`` or ``(my, mx)``, centre at pixel
        ``(my // 2, mx // 2)``, normalised to sum 1; or their complex transform from
        :func:`psf_fourier` (computed with the same ``pad``).
    pad : bool
        ``True`` for a linear convolution (zero padding, no wrap-around), ``False`` for a
        circular one on the ``ny x nx`` grid.

    Returns
    -------
    tf.Tensor, shape (B, ny, nx), dtype of ``images``
        ``images * psf``, in the unit of ``images`` (flux is conserved when the PSF sums
        to 1, up to the light scattered out of the stamp).
    """
    images = _as_batch(images, "images")
    if not images.dtype.is_floating:
        images = tf.cast(images, tf.float32)
    ny, nx = int(images.shape[-2]), int(images.shape[-1])
    psf_k = psf_fourier(psf, images.shape, pad=pad)
    py = int(psf_k.shape[-2])
    px = _fourier_grid_width(int(psf_k.shape[-1]), nx)
    if py < ny or px < nx:
        raise ConfigError("the PSF transform is on a grid smaller than the images.",
                          key="psf", received={"grid": (py, px), "image_shape": (ny, nx)})
    complex_dtype = tf.complex128 if images.dtype == tf.float64 else tf.complex64
    psf_k = tf.cast(psf_k, complex_dtype)
    padded = tf.pad(images, [[0, 0], [0, py - ny], [0, px - nx]])
    image_k = tf.signal.rfft2d(padded)
    out = tf.signal.irfft2d(image_k * psf_k, fft_length=[py, px])
    return tf.cast(out[:, :ny, :nx], images.dtype)


def _rfft_weights(ny: int, nx: int, dtype) -> tf.Tensor:
    """Multiplicity of each ``rfft2`` column in the full Fourier plane, shape (1, 1, nx//2+1)."""
    w = np.full(nx // 2 + 1, 2.0)
    w[0] = 1.0
    if nx % 2 == 0:
        w[-1] = 1.0
    return tf.constant(w[None, None, :], dtype=dtype)


def gaussian_log_likelihood(observed, model, sigma=None, noise_power=None,
                            include_constant: bool = True) -> tf.Tensor:
    """Gaussian log-likelihood of observed stamps given model (already convolved) stamps.

    Parameters
    ----------
    observed, model : array-like, shape (B, ny, nx)
        Observed and predicted images, in the same flux-per-pixel unit.
    sigma : float or array-like, shape (B,)
        White-noise standard deviation per pixel, in the unit of the images.
    noise_power : array-like, shape (B|1, ny, nx // 2 + 1) or (B|1, ny, nx)
        Noise power spectrum (see the module docstring: ``sigma**2`` for white noise), in
        (flux per pixel)^2. Give exactly one of ``sigma`` and ``noise_power``.
    include_constant : bool
        Include the normalisation terms (``log det`` of the covariance and ``2 pi``), so the
        result is a proper log density of the ``ny * nx`` pixel values. Drop them for a
        loss whose gradients are the same.

    Returns
    -------
    tf.Tensor, shape (B,)
        ``log p(observed | model)`` of each stamp, in nats.
    """
    if (sigma is None) == (noise_power is None):
        raise ConfigError("give exactly one of sigma (white noise) and noise_power.",
                          key="noise", received={"sigma": sigma is not None,
                                                 "noise_power": noise_power is not None})
    model = _as_batch(model, "model")
    if not model.dtype.is_floating:
        model = tf.cast(model, tf.float32)
    dtype = model.dtype
    observed = _as_batch(observed, "observed", dtype=None)
    observed = tf.cast(observed, dtype)
    ny, nx = int(model.shape[-2]), int(model.shape[-1])
    n_pix = ny * nx
    resid = observed - model
    log2pi = math.log(2.0 * math.pi)
    if sigma is not None:
        sigma = tf.cast(tf.convert_to_tensor(sigma), dtype)
        sigma = tf.reshape(sigma, [-1])  # scalar -> (1,), (B,) stays
        chi2 = tf.reduce_sum(tf.square(resid), axis=[1, 2]) / tf.square(sigma)
        out = -0.5 * chi2
        if include_constant:
            out = out - n_pix * tf.math.log(sigma) - 0.5 * n_pix * log2pi
        return out
    power = _as_batch(noise_power, "noise_power")
    power = tf.cast(power, dtype)
    if int(power.shape[-1]) == nx and nx // 2 + 1 != nx:
        power = power[..., : nx // 2 + 1]
    if int(power.shape[-2]) != ny or int(power.shape[-1]) != nx // 2 + 1:
        raise ConfigError("noise_power must have shape (B, ny, nx//2+1) or (B, ny, nx).",
                          key="noise_power",
                          received={"shape": tuple(power.shape), "image_shape": (ny, nx)})
    weights = _rfft_weights(ny, nx, dtype)
    resid_k = tf.signal.rfft2d(resid)
    abs2 = tf.square(tf.math.real(resid_k)) + tf.square(tf.math.imag(resid_k))
    chi2 = tf.reduce_sum(weights * abs2 / power, axis=[1, 2]) / n_pix
    out = -0.5 * chi2
    if include_constant:
        log_det = tf.reduce_sum(weights * tf.math.log(power), axis=[1, 2])
        out = out - 0.5 * log_det - 0.5 * n_pix * log2pi
    return out


def psf_log_likelihood(observed, images, psf, sigma=None, noise_power=None, pad: bool = True,
                       include_constant: bool = True) -> tf.Tensor:
    """Log-likelihood of observed stamps given unconvolved model images and PSFs.

    ``log p(observed | images) = log N(observed; convolve(images, psf), noise)``.

    Parameters
    ----------
    observed : array-like, shape (B, ny, nx)
        Observed (PSF-convolved, noisy) stamps, flux per pixel.
    images : array-like, shape (B, ny, nx)
        Unconvolved model light profiles on the same pixel grid (same arcsec/pixel and unit).
    psf : array-like
        PSF images or their transforms, see :func:`convolve`.
    sigma, noise_power
        Noise of each stamp, see :func:`gaussian_log_likelihood`.
    pad : bool
        Linear (``True``) or circular (``False``) convolution.
    include_constant : bool
        Include the normalisation terms.

    Returns
    -------
    tf.Tensor, shape (B,)
        Log-likelihood of each stamp in nats.
    """
    model = convolve(images, psf, pad=pad)
    return gaussian_log_likelihood(observed, model, sigma=sigma, noise_power=noise_power,
                                   include_constant=include_constant)

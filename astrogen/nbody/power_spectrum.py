"""Power-spectrum estimator of a periodic 2-D or 3-D density field, in spherical k-bins.

``P(k) = <|delta_k|^2> V / N^2`` averaged over the modes of each bin (numpy's unnormalised
DFT, ``N`` grid points, volume ``V``), the same convention as
:func:`astrogen.cosmology.initial.gaussian_field`. For a Gaussian field the relative error of
a bin is ``sqrt(2 / n_modes)`` where ``n_modes`` counts the modes ``k`` and ``-k`` separately
(only half of them are independent).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from astrogen.errors import ConfigError

__all__ = ["PowerSpectrum", "measure_power", "binned_model", "cic_window"]


@dataclass
class PowerSpectrum:
    """Binned power spectrum.

    Attributes
    ----------
    k : numpy.ndarray
        Mean wavenumber of the modes in each bin, h/Mpc.
    power : numpy.ndarray
        Mean power of the bin, (Mpc/h)^3 in 3-D, (Mpc/h)^2 in 2-D.
    n_modes : numpy.ndarray of int
        Number of Fourier modes in the bin (``k`` and ``-k`` counted separately).
    k_edges : numpy.ndarray
        Bin edges, h/Mpc.
    """

    k: np.ndarray
    power: np.ndarray
    n_modes: np.ndarray
    k_edges: np.ndarray

    @property
    def sigma(self) -> np.ndarray:
        """Gaussian (cosmic-variance) error of ``power``, ``power * sqrt(2 / n_modes)``."""
        with np.errstate(divide="ignore", invalid="ignore"):
            return self.power * np.sqrt(2.0 / self.n_modes)


def cic_window(n: int, ndim: int = 3) -> np.ndarray:
    """CIC assignment window ``prod_i sinc^2(k_i dx / 2)`` on the real-FFT grid (dimensionless).

    Parameters
    ----------
    n : int
        Mesh points per side.
    ndim : int
        2 or 3.

    Returns
    -------
    numpy.ndarray, shape (n,)*(ndim-1) + (n//2+1,)
    """
    w = 1.0
    for i in range(ndim):
        f = np.fft.rfftfreq(n) if i == ndim - 1 else np.fft.fftfreq(n)  # cycles per cell
        shape = [1] * ndim
        shape[i] = -1
        w = w * (np.sinc(f) ** 2).reshape(shape)  # np.sinc(x) = sin(pi x)/(pi x)
    return w


def mode_grid(n: int, ndim: int, kf: float):
    """Wavenumber modulus ``|k|`` (h/Mpc) on the real-FFT grid and the number of full-space modes each entry stands for."""
    kk = 0.0
    for i in range(ndim):
        f = np.fft.rfftfreq(n, 1.0 / n) if i == ndim - 1 else np.fft.fftfreq(n, 1.0 / n)
        shape = [1] * ndim
        shape[i] = -1
        kk = kk + ((f * kf).reshape(shape)) ** 2
    kk = np.sqrt(kk)
    # half-complex storage: planes kz = 0 and kz = Nyquist stand for one mode, others for two
    wz = np.full(n // 2 + 1, 2.0)
    wz[0] = 1.0
    if n % 2 == 0:
        wz[-1] = 1.0
    wgt = np.broadcast_to(wz.reshape([1] * (ndim - 1) + [-1]), kk.shape)
    return kk, wgt


def bin_modes(kk, wgt, values, k_edges):
    which = np.digitize(kk.ravel(), k_edges) - 1
    nb = k_edges.size - 1
    ok = (which >= 0) & (which < nb) & (kk.ravel() > 0)
    wv = wgt.ravel()[ok]
    b = which[ok]
    nmodes = np.bincount(b, weights=wv, minlength=nb)
    ksum = np.bincount(b, weights=wv * kk.ravel()[ok], minlength=nb)
    psum = np.bincount(b, weights=wv * np.ravel(values)[ok], minlength=nb)
    return nmodes, ksum, psum


def binned_model(power, n: int, box_size: float, k_edges: Any, ndim: int = 3) -> np.ndarray:
    """Average of a model ``P(|k|)`` over the grid modes of each bin.

    Compare this, not ``P(k_mean)``, with :func:`measure_power` when bins are wide compared
    with the curvature of ``P`` (large scales, BAO).

    Parameters
    ----------
    power : callable
        ``P(k)`` in (Mpc/h)^d for ``k`` in h/Mpc.
    n : int
        Grid points per side of the measured field.
    box_size : float
        Box side in Mpc/h.
    k_edges : array_like
        Bin edges in h/Mpc (e.g. ``PowerSpectrum.k_edges``).
    ndim : int
        2 or 3.

    Returns
    -------
    numpy.ndarray
        Mode-averaged model in (Mpc/h)^d for the non-empty bins (same bins as
        :func:`measure_power` returns).
    """
    k_edges = np.asarray(k_edges, dtype=float)
    kk, wgt = mode_grid(int(n), int(ndim), 2.0 * np.pi / float(box_size))
    model = np.zeros(kk.shape)
    pos = kk > 0
    model[pos] = np.asarray(power(kk[pos]), dtype=float)
    nmodes, _, psum = bin_modes(kk, wgt, model, k_edges)
    keep = nmodes > 0
    return psum[keep] / nmodes[keep]


def measure_power(field: Any, box_size: float, k_edges: Any = None, dk: float | None = None,
                  deconvolve_cic: bool = False, shot_noise: float = 0.0) -> PowerSpectrum:
    """Spherically averaged power spectrum of a periodic field.

    Parameters
    ----------
    field : array_like or tf.Tensor, shape (n,)*d, d = 2 or 3
        Density contrast (dimensionless).
    box_size : float
        Box side in Mpc/h.
    k_edges : array_like, optional
        Bin edges in h/Mpc. Default: width ``dk`` starting at ``k_f / 2`` up to the Nyquist
        wavenumber ``pi n / L``.
    dk : float, optional
        Bin width in h/Mpc for the default edges (default the fundamental ``k_f = 2 pi / L``).
    deconvolve_cic : bool
        Divide each mode by the CIC window (for fields painted with
        :func:`astrogen.nbody.mesh.cic_paint`).
    shot_noise : float
        Constant subtracted from the power, in (Mpc/h)^d (``1 / nbar`` for Poisson samples).

    Returns
    -------
    PowerSpectrum
        ``k`` in h/Mpc, ``power`` in (Mpc/h)^d, ``n_modes``; empty bins are dropped.
    """
    delta = np.asarray(field.numpy() if hasattr(field, "numpy") else field, dtype=float)
    if delta.ndim not in (2, 3) or len(set(delta.shape)) != 1:
        raise ConfigError("must be a square 2-D or cubic 3-D grid.", key="field",
                          received={"shape": delta.shape})
    try:
        L = float(box_size)
    except (TypeError, ValueError):
        L = float("nan")
    if not (np.isfinite(L) and L > 0):
        raise ConfigError("must be > 0 Mpc/h.", key="box_size", received={"box_size": box_size})
    n, ndim = delta.shape[0], delta.ndim
    kf = 2.0 * np.pi / L
    knyq = np.pi * n / L
    if k_edges is None:
        step = kf if dk is None else float(dk)
        if not (step > 0):
            raise ConfigError("must be > 0 h/Mpc.", key="dk", received={"dk": dk})
        k_edges = np.arange(0.5 * kf, knyq + step, step)
    k_edges = np.asarray(k_edges, dtype=float)
    if k_edges.ndim != 1 or k_edges.size < 2 or np.any(np.diff(k_edges) <= 0):
        raise ConfigError("must be an increasing 1-D array of >= 2 edges (h/Mpc).",
                          key="k_edges", received={"k_edges": k_edges[:5]})

    dkf = np.fft.rfftn(delta)
    if deconvolve_cic:
        dkf = dkf / cic_window(n, ndim)
    p3 = np.abs(dkf) ** 2 * (L**ndim / float(n) ** (2 * ndim))

    kk, wgt = mode_grid(n, ndim, kf)
    nmodes, ksum, psum = bin_modes(kk, wgt, p3, k_edges)
    keep = nmodes > 0
    return PowerSpectrum(k=ksum[keep] / nmodes[keep],
                         power=psum[keep] / nmodes[keep] - shot_noise,
                         n_modes=nmodes[keep].astype(int), k_edges=k_edges)

"""Gaussian initial conditions and Lagrangian perturbation theory displacements.

Grid conventions (shared with :mod:`astrogen.nbody`): a periodic box of side ``L`` (Mpc/h)
sampled on ``n`` points per side, point ``i`` at ``q = i L / n``; the discrete Fourier
transform is numpy's unnormalised ``rfftn`` (``delta_k = sum_x delta_x exp(-i k.x)``), so the
continuous-normalised power is ``P(k) = |delta_k|^2 V / N^2`` with ``N = n^d``, ``V = L^d``.

Displacements follow ``x = q - D1 grad(phi1) + D2 grad(phi2)`` with
``nabla^2 phi1 = delta_L`` (linear density at a = 1) and
``nabla^2 phi2 = sum_{i>j} [phi1_ii phi1_jj - phi1_ij^2]`` (Scoccimarro 1998,
arXiv:astro-ph/9711187; Crocce, Pueblas & Scoccimarro 2006, arXiv:astro-ph/0606505), with
``D2 ~ -3/7 D1^2`` from :meth:`astrogen.cosmology.Cosmology.D2`.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from astrogen.errors import ConfigError

__all__ = [
    "fourier_modes",
    "gaussian_field",
    "lpt_displacements",
    "lpt_particles",
    "zeldovich_displacement",
    "lattice",
]


def _check_grid(n: Any, box_size: Any, ndim: Any = 3) -> tuple[int, float, int]:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 2 or n % 2:
        raise ConfigError("must be an even integer >= 2.", key="n", received={"n": n})
    try:
        L = float(box_size)
    except (TypeError, ValueError):
        L = float("nan")
    if not (np.isfinite(L) and L > 0):
        raise ConfigError("must be > 0 Mpc/h.", key="box_size", received={"box_size": box_size})
    if ndim not in (2, 3):
        raise ConfigError("must be 2 or 3.", key="ndim", received={"ndim": ndim})
    return int(n), L, int(ndim)


def fourier_modes(n: int, box_size: float, ndim: int = 3) -> list[np.ndarray]:
    """Wavevector components of the real-FFT grid, broadcastable to shape ``(n,)*(d-1)+(n//2+1,)``.

    Parameters
    ----------
    n : int
        Grid points per side.
    box_size : float
        Box side in Mpc/h.
    ndim : int
        2 or 3.

    Returns
    -------
    list of numpy.ndarray
        ``ndim`` arrays ``k_i`` in h/Mpc (last axis is the half-complex one).
    """
    n, L, ndim = _check_grid(n, box_size, ndim)
    kf = 2.0 * np.pi / L
    full = np.fft.fftfreq(n, d=1.0 / n) * kf
    half = np.fft.rfftfreq(n, d=1.0 / n) * kf
    out = []
    for i in range(ndim):
        shape = [1] * ndim
        shape[i] = -1
        out.append((half if i == ndim - 1 else full).reshape(shape))
    return out


def gaussian_field(n: int, box_size: float, power: Callable[[np.ndarray], np.ndarray],
                   seed: int, ndim: int = 3, fixed_amplitude: bool = False,
                   inverted_phase: bool = False, return_fourier: bool = False):
    """Gaussian random field with power spectrum ``P(k)`` in a periodic box.

    White noise is drawn in real space (so the field is real and its transform Hermitian
    by construction), transformed with a real FFT and multiplied by ``sqrt(N P(k) / V)``.

    Parameters
    ----------
    n : int
        Grid points per side (even).
    box_size : float
        Box side ``L`` in Mpc/h.
    power : callable
        ``P(k)`` in (Mpc/h)^d for ``k`` in h/Mpc (e.g. a
        :class:`~astrogen.cosmology.power.LinearPower`); in 2-D it is the 2-D spectrum in
        (Mpc/h)^2.
    seed : int
        Seed of the :class:`numpy.random.Generator` (use
        :func:`astrogen.seeds.derive_seed` to get one per box).
    ndim : int
        2 or 3.
    fixed_amplitude : bool
        Set every ``|delta_k|`` to its expectation ``sqrt(N^2 P / V)`` and keep only random
        phases ("fixed" fields, Angulo & Pontzen 2016, arXiv:1603.05253): removes most of
        the cosmic variance of the measured power spectrum.
    inverted_phase : bool
        Multiply the field by -1 (the partner of a "paired" simulation).
    return_fourier : bool
        Also return the half-complex transform ``delta_k``.

    Returns
    -------
    delta : numpy.ndarray, shape (n,)*ndim
        Density contrast, dimensionless, mean exactly 0.
    delta_k : numpy.ndarray, complex, shape (n,)*(ndim-1) + (n//2+1,)
        Only if ``return_fourier``: numpy's unnormalised ``rfftn`` of ``delta``.
    """
    n, L, ndim = _check_grid(n, box_size, ndim)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError("must be a non-negative integer.", key="seed", received={"seed": seed})
    if not callable(power):
        raise ConfigError("must be a callable P(k).", key="power",
                          received={"power": type(power).__name__})
    rng = np.random.default_rng(int(seed))
    white = rng.standard_normal((n,) * ndim)
    wk = np.fft.rfftn(white)
    ntot = float(n) ** ndim
    if fixed_amplitude:
        amp = np.abs(wk)
        wk = np.where(amp > 0, wk / np.where(amp > 0, amp, 1.0), 0.0) * np.sqrt(ntot)
    ks = fourier_modes(n, L, ndim)
    k = np.sqrt(sum(ki**2 for ki in ks))
    pk = np.zeros(k.shape)
    pos = k > 0  # the k = 0 mode is set to zero below; P(0) is never evaluated
    pk[pos] = np.asarray(power(k[pos]), dtype=float)
    if not np.all(np.isfinite(pk)) or np.any(pk < 0):
        raise ConfigError("P(k) must be finite and >= 0.", key="power")
    dk = wk * np.sqrt(ntot * pk / L**ndim)
    dk.flat[0] = 0.0
    if inverted_phase:
        dk = -dk
    delta = np.fft.irfftn(dk, s=(n,) * ndim, axes=tuple(range(ndim)))
    if return_fourier:
        return delta, dk
    return delta


def lattice(n: int, box_size: float, ndim: int = 3, shift: float = 0.0) -> np.ndarray:
    """Lagrangian positions ``q = (i + shift) L / n`` of the ``n^d`` grid points.

    Parameters
    ----------
    n : int
        Points per side.
    box_size : float
        Box side in Mpc/h.
    ndim : int
        2 or 3.
    shift : float
        Offset of the lattice along every axis, in units of the spacing ``L / n``.

    Returns
    -------
    numpy.ndarray, shape (n^d, ndim)
        Positions in Mpc/h, C order (last axis fastest), matching ``field.reshape(-1)``.
    """
    n, L, ndim = _check_grid(n, box_size, ndim)
    axes = [(np.arange(n) + float(shift)) * (L / n)] * ndim
    grids = np.meshgrid(*axes, indexing="ij")
    return np.stack([g.ravel() for g in grids], axis=-1)


def _field_to_k(delta: np.ndarray):
    delta = np.asarray(delta, dtype=float)
    if delta.ndim not in (2, 3) or len(set(delta.shape)) != 1 or delta.shape[0] % 2:
        raise ConfigError("must be a square 2-D or cubic 3-D grid with an even side.",
                          key="delta", received={"shape": delta.shape})
    return delta, np.fft.rfftn(delta)


def zeldovich_displacement(delta: np.ndarray, box_size: float) -> np.ndarray:
    """First-order (Zel'dovich) displacement ``Psi1 = -grad(phi1)``, ``nabla^2 phi1 = delta``.

    Parameters
    ----------
    delta : numpy.ndarray, shape (n,)*d
        Linear density contrast (dimensionless), usually at a = 1.
    box_size : float
        Box side in Mpc/h.

    Returns
    -------
    numpy.ndarray, shape (d,) + (n,)*d
        ``Psi1`` in Mpc/h at each grid point; ``div Psi1 = -delta``. Multiply by ``D1(a)``.
    """
    return lpt_displacements(delta, box_size, order=1)[0]


def lpt_displacements(delta: np.ndarray, box_size: float, order: int = 2,
                      shift: float = 0.0) -> list[np.ndarray]:
    """First- and second-order LPT displacement fields of a linear density field.

    Gradients use the exact Fourier kernel ``i k`` (Nyquist planes set to zero for the
    gradient so that the result stays real).

    Parameters
    ----------
    delta : numpy.ndarray, shape (n,)*d
        Linear density contrast (dimensionless) at the time where ``D1 = 1``.
    box_size : float
        Box side in Mpc/h.
    order : int
        1 or 2.
    shift : float
        Evaluate the displacements at ``q = (i + shift) L / n`` instead of the grid points
        (Fourier phase shift; the Nyquist modes of ``delta`` are then dropped). Use the same
        ``shift`` as :func:`lattice`.

    Returns
    -------
    list of numpy.ndarray, each of shape (d,) + (n,)*d
        ``[Psi1]`` or ``[Psi1, Psi2]`` in Mpc/h at the (shifted) lattice points, where
        ``Psi1 = -grad(phi1)`` and
        ``Psi2 = grad(phi2)``; the particle position is ``q + D1 Psi1 + D2 Psi2``.

    References
    ----------
    Crocce, Pueblas & Scoccimarro 2006, arXiv:astro-ph/0606505, eqs. (3)-(6).
    """
    if order not in (1, 2):
        raise ConfigError("must be 1 or 2.", key="order", received={"order": order})
    delta, dk = _field_to_k(delta)
    n, ndim = delta.shape[0], delta.ndim
    _, L, _ = _check_grid(n, box_size, ndim)
    ks = fourier_modes(n, L, ndim)
    k2 = sum(ki**2 for ki in ks)
    k2.flat[0] = 1.0
    nyq = np.pi * n / L
    if shift:
        phase = np.exp(1j * sum(ki * (float(shift) * L / n) for ki in ks))
        onnyq = sum(np.isclose(np.abs(ki), nyq) for ki in ks) > 0
        dk = np.where(onnyq, 0.0, dk * phase)
    phi1 = -dk / k2
    phi1.flat[0] = 0.0
    # gradient kernel with Nyquist components zeroed (their i*k is not Hermitian)
    kg = [np.where(np.isclose(np.abs(ki), nyq), 0.0, ki) for ki in ks]
    shape = (n,) * ndim
    axes = tuple(range(ndim))
    psi1 = np.stack([np.fft.irfftn(-1j * kg[i] * phi1, s=shape, axes=axes)
                     for i in range(ndim)])
    out = [psi1]
    if order == 2:
        # phi1_ij in real space; second derivatives use -k_i k_j (Nyquist kept on the diagonal)
        dd = {}
        for i in range(ndim):
            for j in range(i, ndim):
                ki = ks[i] if i == j else kg[i]
                kj = ks[j] if i == j else kg[j]
                dd[i, j] = np.fft.irfftn(-ki * kj * phi1, s=shape, axes=axes)
        src = np.zeros(shape)
        for i in range(ndim):
            for j in range(i):
                src += dd[i, i] * dd[j, j] - dd[j, i] ** 2
        sk = np.fft.rfftn(src)
        phi2 = -sk / k2
        phi2.flat[0] = 0.0
        psi2 = np.stack([np.fft.irfftn(1j * kg[i] * phi2, s=shape, axes=axes)
                         for i in range(ndim)])
        out.append(psi2)
    return out


def lpt_particles(delta: np.ndarray, box_size: float, cosmology, a: float, order: int = 2,
                  shift: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Positions and momenta of the lattice particles moved by LPT to scale factor ``a``.

    Parameters
    ----------
    delta : numpy.ndarray, shape (n, n, n)
        Linear density contrast at the time where ``D1 = 1``.
    box_size : float
        Box side in Mpc/h.
    cosmology : astrogen.cosmology.background.Cosmology
        Gives ``D1``, ``D2`` and the momentum factors ``gp``, ``gp2`` at ``a``.
    a : float
        Scale factor.
    order : int
        1 (Zel'dovich) or 2 (2LPT).
    shift : float
        Lattice offset in grid spacings (:func:`lattice`).

    Returns
    -------
    positions : numpy.ndarray, shape (n^3, 3)
        ``q + D1 Psi1 (+ D2 Psi2)`` in Mpc/h, wrapped into the box.
    momenta : numpy.ndarray, shape (n^3, 3)
        ``gp Psi1 (+ gp2 Psi2)`` in Mpc/h (``p = a^3 E dx/da``).
    """
    n = np.asarray(delta).shape[0]
    psis = lpt_displacements(delta, box_size, order=order, shift=shift)
    q = lattice(n, box_size, 3, shift=shift)
    flat = [p.reshape(3, -1).T for p in psis]
    disp = float(cosmology.D1(a)) * flat[0]
    mom = float(cosmology.gp(a)) * flat[0]
    if order == 2:
        disp = disp + float(cosmology.D2(a)) * flat[1]
        mom = mom + float(cosmology.gp2(a)) * flat[1]
    return np.mod(q + disp, float(box_size)), mom

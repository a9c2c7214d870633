"""Linear matter power spectrum: Eisenstein & Hu (1998) transfer functions, sigma8 normalisation.

Conventions: wavenumbers ``k`` in h/Mpc, power ``P(k)`` in (Mpc/h)^3, with
``<delta(k) delta*(k')> = (2 pi)^3 delta_D(k - k') P(k)`` and
``sigma^2(R) = 1/(2 pi^2) int k^2 P(k) W^2(kR) dk``.

References
----------
Eisenstein & Hu 1998, ApJ 496, 605, arXiv:astro-ph/9709112 (transfer functions; equation
numbers below refer to it).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from astrogen.cosmology.background import Cosmology
from astrogen.errors import ConfigError

__all__ = [
    "eisenstein_hu_transfer",
    "eisenstein_hu_nowiggle_transfer",
    "tophat_window",
    "sigma_r",
    "LinearPower",
]

_TRANSFERS = ("eisenstein_hu", "eisenstein_hu_nowiggle", "table")


def _check_k(k: Any) -> np.ndarray:
    k = np.asarray(k, dtype=float)
    if not np.all(np.isfinite(k)) or np.any(k < 0):
        raise ConfigError("must be finite and >= 0 h/Mpc.", key="k",
                          received={"min": float(np.min(k)) if k.size else None})
    return k


def _eh_common(cosmo: Cosmology):
    h = cosmo.h
    wm = cosmo.Om0 * h * h
    wb = cosmo.Ob0 * h * h
    theta = cosmo.Tcmb0 / 2.7
    return h, wm, wb, theta


def eisenstein_hu_transfer(k: Any, cosmo: Cosmology) -> np.ndarray:
    """Eisenstein & Hu (1998) CDM + baryon transfer function, with acoustic oscillations.

    Parameters
    ----------
    k : float or array_like
        Wavenumber in h/Mpc.
    cosmo : Cosmology
        Uses ``Om0``, ``Ob0``, ``h`` and ``Tcmb0`` (K).

    Returns
    -------
    numpy.ndarray
        ``T(k)``, dimensionless, normalised to ``T(k -> 0) = 1``.

    References
    ----------
    Eisenstein & Hu 1998, arXiv:astro-ph/9709112, eqs. (2)-(24).
    """
    k = _check_k(k)
    h, wm, wb, theta = _eh_common(cosmo)
    fb = cosmo.Ob0 / cosmo.Om0
    fc = 1.0 - fb
    kk = np.maximum(k * h, 1e-12)  # Mpc^-1

    z_eq = 2.50e4 * wm * theta**-4                                     # eq. 2
    k_eq = 7.46e-2 * wm * theta**-2                                    # eq. 3, Mpc^-1
    b1 = 0.313 * wm**-0.419 * (1.0 + 0.607 * wm**0.674)                # eq. 4
    b2 = 0.238 * wm**0.223
    z_d = 1291.0 * wm**0.251 / (1.0 + 0.659 * wm**0.828) * (1.0 + b1 * wb**b2)
    R_d = 31.5 * wb * theta**-4 * (1.0e3 / z_d)                        # eq. 5
    R_eq = 31.5 * wb * theta**-4 * (1.0e3 / z_eq)
    s = (2.0 / (3.0 * k_eq) * np.sqrt(6.0 / R_eq)                      # eq. 6, Mpc
         * np.log((np.sqrt(1.0 + R_d) + np.sqrt(R_d + R_eq)) / (1.0 + np.sqrt(R_eq))))
    k_silk = 1.6 * wb**0.52 * wm**0.73 * (1.0 + (10.4 * wm) ** -0.95)  # eq. 7, Mpc^-1
    q = kk / (13.41 * k_eq)                                            # eq. 10

    a1 = (46.9 * wm) ** 0.670 * (1.0 + (32.1 * wm) ** -0.532)          # eq. 11
    a2 = (12.0 * wm) ** 0.424 * (1.0 + (45.0 * wm) ** -0.582)
    alpha_c = a1**-fb * a2 ** (-fb**3)
    bb1 = 0.944 / (1.0 + (458.0 * wm) ** -0.708)                       # eq. 12
    bb2 = (0.395 * wm) ** -0.0266
    beta_c = 1.0 / (1.0 + bb1 * (fc**bb2 - 1.0))

    def t0(alpha, beta):                                               # eqs. 19-20
        lg = np.log(np.e + 1.8 * beta * q)
        c = 14.2 / alpha + 386.0 / (1.0 + 69.9 * q**1.08)
        return lg / (lg + c * q * q)

    ks = kk * s
    f = 1.0 / (1.0 + (ks / 5.4) ** 4)                                  # eq. 18
    t_c = f * t0(1.0, beta_c) + (1.0 - f) * t0(alpha_c, beta_c)        # eq. 17

    y = (1.0 + z_eq) / (1.0 + z_d)                                     # eq. 15
    sq = np.sqrt(1.0 + y)
    G = y * (-6.0 * sq + (2.0 + 3.0 * y) * np.log((sq + 1.0) / (sq - 1.0)))
    alpha_b = 2.07 * k_eq * s * (1.0 + R_d) ** -0.75 * G               # eq. 14
    beta_node = 8.41 * wm**0.435                                       # eq. 23
    beta_b = 0.5 + fb + (3.0 - 2.0 * fb) * np.sqrt((17.2 * wm) ** 2 + 1.0)  # eq. 24
    s_tilde = s / (1.0 + (beta_node / ks) ** 3) ** (1.0 / 3.0)         # eq. 22
    x = kk * s_tilde
    j0 = np.sinc(x / np.pi)
    t_b = (t0(1.0, 1.0) / (1.0 + (ks / 5.2) ** 2)                      # eq. 21
           + alpha_b / (1.0 + (beta_b / ks) ** 3) * np.exp(-((kk / k_silk) ** 1.4))) * j0
    return fb * t_b + fc * t_c                                          # eq. 16


def eisenstein_hu_nowiggle_transfer(k: Any, cosmo: Cosmology) -> np.ndarray:
    """Eisenstein & Hu (1998) "no-wiggle" transfer function (baryon suppression, no BAO).

    Parameters
    ----------
    k : float or array_like
        Wavenumber in h/Mpc.
    cosmo : Cosmology
        Uses ``Om0``, ``Ob0``, ``h`` and ``Tcmb0`` (K).

    Returns
    -------
    numpy.ndarray
        ``T(k)``, dimensionless, with ``T(k -> 0) = 1``.

    References
    ----------
    Eisenstein & Hu 1998, arXiv:astro-ph/9709112, eqs. (26), (28)-(31).
    """
    k = _check_k(k)
    h, wm, wb, theta = _eh_common(cosmo)
    fb = cosmo.Ob0 / cosmo.Om0
    kk = k * h  # Mpc^-1
    s = 44.5 * np.log(9.83 / wm) / np.sqrt(1.0 + 10.0 * wb**0.75)      # eq. 26, Mpc
    alpha_g = 1.0 - 0.328 * np.log(431.0 * wm) * fb + 0.38 * np.log(22.3 * wm) * fb**2  # eq. 31
    gamma_eff = cosmo.Om0 * h * (alpha_g + (1.0 - alpha_g) / (1.0 + (0.43 * kk * s) ** 4))  # eq. 30
    q = k * theta**2 / gamma_eff                                        # eq. 28
    L0 = np.log(2.0 * np.e + 1.8 * q)                                   # eq. 29
    C0 = 14.2 + 731.0 / (1.0 + 62.5 * q)
    return L0 / (L0 + C0 * q * q)


def tophat_window(x: Any) -> np.ndarray:
    """Fourier transform of a 3-D spherical top-hat, ``3 (sin x - x cos x) / x^3``.

    Parameters
    ----------
    x : array_like
        ``k R`` (dimensionless).

    Returns
    -------
    numpy.ndarray
        ``W(x)``, dimensionless, ``W(0) = 1`` (series used below ``x = 1e-3``).
    """
    x = np.asarray(x, dtype=float)
    small = np.abs(x) < 1e-3
    xs = np.where(small, 1.0, x)
    w = 3.0 * (np.sin(xs) - xs * np.cos(xs)) / xs**3
    return np.where(small, 1.0 - x * x / 10.0, w)


def sigma_r(power, R: float = 8.0, kmin: float = 1e-5, kmax: float = 1e3,
            n: int = 8193) -> float:
    """RMS density contrast in top-hat spheres, ``sigma(R)``.

    Parameters
    ----------
    power : callable
        ``P(k)`` in (Mpc/h)^3 for ``k`` in h/Mpc.
    R : float
        Top-hat radius in Mpc/h.
    kmin, kmax : float
        Integration range in h/Mpc.
    n : int
        Number of points of the Simpson rule in ``ln k``.

    Returns
    -------
    float
        ``sigma(R)``, dimensionless.
    """
    from scipy.integrate import simpson

    if not (R > 0):
        raise ConfigError("must be > 0 Mpc/h.", key="R", received={"R": R})
    lnk = np.linspace(np.log(kmin), np.log(kmax), n)
    k = np.exp(lnk)
    integrand = k**3 * np.asarray(power(k)) * tophat_window(k * R) ** 2 / (2.0 * np.pi**2)
    return float(np.sqrt(simpson(integrand, x=lnk)))


class LinearPower:
    """Linear matter power spectrum ``P(k, a) = D1(a)^2 P(k, 1)``, normalised to sigma8.

    Parameters
    ----------
    cosmo : Cosmology
        Cosmological parameters (``sigma8``, ``n_s`` and those of the transfer function).
    transfer : {"eisenstein_hu", "eisenstein_hu_nowiggle"}
        Transfer function. Use :meth:`from_table` or :meth:`from_arrays` for a CAMB/CLASS
        spectrum.

    Notes
    -----
    ``P(k, 1) = A k^n_s T(k)^2`` with ``A`` set so that :func:`sigma_r` at 8 Mpc/h equals
    ``cosmo.sigma8``. Calling the object returns (Mpc/h)^3 for ``k`` in h/Mpc.

    References
    ----------
    Eisenstein & Hu 1998, arXiv:astro-ph/9709112.
    """

    def __init__(self, cosmo: Cosmology | None = None, transfer: str = "eisenstein_hu"):
        self.cosmo = cosmo if cosmo is not None else Cosmology()
        if not isinstance(self.cosmo, Cosmology):
            raise ConfigError("must be an astrogen.cosmology.Cosmology.", key="cosmo",
                              received={"cosmo": type(cosmo).__name__})
        if transfer not in _TRANSFERS[:2]:
            from astrogen.errors import suggest

            raise ConfigError("unknown transfer function." + suggest(transfer, _TRANSFERS[:2]),
                              key="transfer", received={"transfer": transfer})
        self.transfer = transfer
        self._table = None
        self.amplitude = 1.0
        self.amplitude = (self.cosmo.sigma8 / sigma_r(self._shape, 8.0)) ** 2

    # -- construction from a table
    @classmethod
    def from_arrays(cls, k: Any, pk: Any, cosmo: Cosmology | None = None,
                    normalize_sigma8: bool = False) -> "LinearPower":
        """Spectrum interpolated (log-log) from arrays, e.g. CAMB or CLASS output at z = 0.

        Parameters
        ----------
        k : array_like
            Increasing wavenumbers in h/Mpc (at least 4, all > 0).
        pk : array_like
            Linear power at z = 0 in (Mpc/h)^3, all > 0.
        cosmo : Cosmology, optional
            Used for the growth factor (and sigma8 if ``normalize_sigma8``).
        normalize_sigma8 : bool
            Rescale the table so that sigma(8 Mpc/h) equals ``cosmo.sigma8``.

        Returns
        -------
        LinearPower
            Power-law extrapolation outside the table: slope ``n_s`` below, the last log-log
            slope above.
        """
        k = np.asarray(k, dtype=float)
        pk = np.asarray(pk, dtype=float)
        if k.ndim != 1 or k.shape != pk.shape or k.size < 4:
            raise ConfigError("needs two 1-D columns of equal length >= 4.", key="pk_table",
                              received={"k_shape": k.shape, "pk_shape": pk.shape})
        if np.any(k <= 0) or np.any(pk <= 0) or np.any(np.diff(k) <= 0):
            raise ConfigError("k must be > 0 and increasing, P(k) > 0.", key="pk_table")
        self = cls.__new__(cls)
        self.cosmo = cosmo if cosmo is not None else Cosmology()
        self.transfer = "table"
        self._table = (np.log(k), np.log(pk))
        self.amplitude = 1.0
        if normalize_sigma8:
            self.amplitude = (self.cosmo.sigma8 / sigma_r(self._shape, 8.0)) ** 2
        return self

    @classmethod
    def from_table(cls, path: str | Path, cosmo: Cosmology | None = None,
                   normalize_sigma8: bool = False) -> "LinearPower":
        """Read a two-column text table ``k [h/Mpc]  P(k) [(Mpc/h)^3]`` (z = 0, ``#`` comments).

        Parameters
        ----------
        path : str or pathlib.Path
            Text file (CAMB ``*_matterpower.dat`` or CLASS ``*_pk.dat`` with h units).
        cosmo : Cosmology, optional
            Used for the growth factor.
        normalize_sigma8 : bool
            Rescale to ``cosmo.sigma8``.

        Returns
        -------
        LinearPower
        """
        path = Path(path)
        if not path.is_file():
            raise ConfigError("power-spectrum table not found.", key=str(path))
        try:
            data = np.loadtxt(path, comments="#", ndmin=2)
        except ValueError as exc:
            raise ConfigError(f"cannot parse as numbers ({exc}).", key=str(path)) from exc
        if data.shape[1] < 2:
            raise ConfigError("needs two columns: k [h/Mpc], P [(Mpc/h)^3].", key=str(path),
                              received={"columns": data.shape[1]})
        return cls.from_arrays(data[:, 0], data[:, 1], cosmo, normalize_sigma8)

    # -- evaluation
    def transfer_function(self, k: Any) -> np.ndarray:
        """``T(k)`` (dimensionless) of the analytic transfer function; ``k`` in h/Mpc."""
        if self.transfer == "eisenstein_hu":
            return eisenstein_hu_transfer(k, self.cosmo)
        if self.transfer == "eisenstein_hu_nowiggle":
            return eisenstein_hu_nowiggle_transfer(k, self.cosmo)
        raise ConfigError("a tabulated spectrum has no transfer function.", key="transfer")

    def _shape(self, k: Any) -> np.ndarray:
        k = _check_k(k)
        if self._table is None:
            with np.errstate(divide="ignore"):
                return self.amplitude * np.where(
                    k > 0, k**self.cosmo.n_s * self.transfer_function(k) ** 2, 0.0)
        lk, lp = self._table
        kpos = np.where(k > 0, k, 1.0)
        x = np.log(kpos)
        out = np.interp(x, lk, lp)
        lo = x < lk[0]
        hi = x > lk[-1]
        slope_hi = (lp[-1] - lp[-2]) / (lk[-1] - lk[-2])
        out = np.where(lo, lp[0] + self.cosmo.n_s * (x - lk[0]), out)
        out = np.where(hi, lp[-1] + slope_hi * (x - lk[-1]), out)
        return np.where(k > 0, self.amplitude * np.exp(out), 0.0)

    def __call__(self, k: Any, a: float = 1.0) -> np.ndarray:
        """Linear power spectrum.

        Parameters
        ----------
        k : float or array_like
            Wavenumber in h/Mpc (``P(0) = 0``).
        a : float
            Scale factor, dimensionless; ``P`` scales as ``D1(a)^2``.

        Returns
        -------
        numpy.ndarray
            ``P(k, a)`` in (Mpc/h)^3.
        """
        p = self._shape(k)
        if a != 1.0:
            p = p * float(self.cosmo.D1(a)) ** 2
        return p

    def sigma(self, R: float = 8.0, a: float = 1.0) -> float:
        """``sigma(R)`` (dimensionless) for a top-hat of radius ``R`` in Mpc/h at scale factor a."""
        return sigma_r(lambda k: self(k, a), R)

"""Background cosmology and linear / second-order growth for flat LambdaCDM.

:class:`Cosmology` holds the five parameters every other module needs (``Om0``, ``Ob0``,
``h``, ``sigma8``, ``n_s``), wraps :class:`astropy.cosmology.FlatLambdaCDM` for distances and
the expansion rate, and solves the growth equations once (cached tables, cubic splines in
``ln a``):

* first order, ``D1'' + (2 + dlnE/dlna) D1' - 3/2 Om(a) D1 = 0`` (primes are d/dlna),
  normalised to ``D1(a=1) = 1``;
* second order, ``D2'' + (2 + dlnE/dlna) D2' - 3/2 Om(a) D2 = -3/2 Om(a) D1^2``, with the
  growing-mode start ``D2 = -3/7 D1^2`` deep in matter domination. This is the sign
  convention of the 2LPT displacement ``x = q - D1 grad(phi1) + D2 grad(phi2)`` (Bouchet et al.
  1995; Scoccimarro 1998, arXiv:astro-ph/9711187), for which ``D2 ~ -3/7 D1^2 Om(a)^(-1/143)``
  (:meth:`Cosmology.D2_approx`).

The background is matter + cosmological constant only (no radiation, no massive
neutrinos), as in FastPM and FlowPM: the growth ODE is then exact and ``D1`` equals the
Heath (1977) integral. The CMB temperature ``Tcmb0`` is used by the Eisenstein & Hu transfer
function only.

It also gives the FastPM time-stepping factors (Feng et al. 2016, arXiv:1603.00476): with the
momentum ``p = a^3 E(a) dx/da`` (Mpc/h, time in units of 1/H0), the Zel'dovich solution has
``x = q + D1 Psi`` and ``p = G_p(a) Psi`` with ``G_p = a^3 E dD1/da``, so the drift
``x += p (D1(a1) - D1(a0)) / G_p(ac)`` and the kick ``p += g (G_p(a1) - G_p(a0)) / D1(ac)``
(``g = -grad nabla^-2 delta`` evaluated at ``ac``) are exact for linear growth whatever the
step size.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import cached_property
from typing import Any

import numpy as np

from astrogen.errors import ConfigError

__all__ = ["Cosmology", "PLANCK18"]

# Growth tables span this range of scale factor; below A_MIN the universe is matter dominated
# to better than 1e-10 for any Om0 > 0.01, so D1 = a and D2 = -3/7 a^2 there (up to norm).
_A_MIN = 1e-5
_A_MAX = 4.0
_N_TABLE = 4096


def _as_array(a: Any, name: str = "a") -> np.ndarray:
    arr = np.asarray(a, dtype=float)
    if not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        raise ConfigError("scale factor must be finite and > 0.", key=name,
                          received={name: a if arr.size < 6 else f"array{arr.shape}"})
    if np.any(arr < _A_MIN) or np.any(arr > _A_MAX):
        raise ConfigError(f"scale factor must be within [{_A_MIN}, {_A_MAX}].", key=name,
                          received={"min": float(arr.min()), "max": float(arr.max())})
    return arr


@dataclass(frozen=True)
class Cosmology:
    """Flat LambdaCDM cosmology with its linear and second-order growth.

    Parameters
    ----------
    Om0 : float
        Matter density parameter today (CDM + baryons), dimensionless, in (0, 1].
    Ob0 : float
        Baryon density parameter today, dimensionless, ``0 <= Ob0 < Om0``.
    h : float
        Dimensionless Hubble parameter, ``H0 = 100 h km/s/Mpc``.
    sigma8 : float
        RMS linear density contrast in top-hat spheres of radius 8 Mpc/h at z = 0.
    n_s : float
        Primordial scalar spectral index, dimensionless.
    Tcmb0 : float
        CMB temperature today in K; enters only the Eisenstein & Hu transfer function.

    Notes
    -----
    The defaults are Planck 2018 (TT,TE,EE+lowE+lensing+BAO; Planck Collaboration 2020,
    arXiv:1807.06209, table 2 last column), as in :data:`astropy.cosmology.Planck18`.

    References
    ----------
    Heath 1977, MNRAS 179, 351 (growth integral). Bouchet et al. 1995,
    arXiv:astro-ph/9406013 (second-order growth, D2 ~ -3/7 Om^(-1/143) D1^2).
    Feng et al. 2016, arXiv:1603.00476 (FastPM kick and drift factors).
    """

    Om0: float = 0.30966
    Ob0: float = 0.04897
    h: float = 0.6766
    sigma8: float = 0.8102
    n_s: float = 0.9665
    Tcmb0: float = 2.7255

    def __post_init__(self):
        for name in ("Om0", "Ob0", "h", "sigma8", "n_s", "Tcmb0"):
            v = getattr(self, name)
            if not isinstance(v, (int, float, np.floating, np.integer)) or not np.isfinite(v):
                raise ConfigError("must be a finite number.", key=name, received={name: v})
        if not (0.01 <= self.Om0 <= 1.0):
            raise ConfigError("must be within [0.01, 1] (flat LambdaCDM).", key="Om0",
                              received={"Om0": self.Om0})
        if not (0.0 <= self.Ob0 < self.Om0):
            raise ConfigError("must satisfy 0 <= Ob0 < Om0.", key="Ob0",
                              received={"Ob0": self.Ob0, "Om0": self.Om0})
        if not (0.2 < self.h < 1.5):
            raise ConfigError("must be within (0.2, 1.5).", key="h", received={"h": self.h})
        if not (self.sigma8 > 0):
            raise ConfigError("must be > 0.", key="sigma8", received={"sigma8": self.sigma8})
        if not (0.5 < self.n_s < 1.5):
            raise ConfigError("must be within (0.5, 1.5).", key="n_s", received={"n_s": self.n_s})
        if not (self.Tcmb0 > 0):
            raise ConfigError("must be > 0 K.", key="Tcmb0", received={"Tcmb0": self.Tcmb0})

    # ------------------------------------------------------------------ conversions
    def to_dict(self) -> dict[str, float]:
        """The parameters as a plain dict (for :class:`astrogen.batch.DensityField`)."""
        return {k: float(v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Cosmology":
        """Build from a dict with (a subset of) the field names; unknown keys are refused."""
        from astrogen.errors import UnknownKeyError, suggest

        fields = set(cls.__dataclass_fields__)
        for k in d:
            if k not in fields:
                raise UnknownKeyError("is not a cosmological parameter." + suggest(k, fields),
                                      key=str(k), received={"allowed": sorted(fields)})
        return cls(**{k: float(v) for k, v in d.items()})

    @property
    def Oc0(self) -> float:
        """Cold dark matter density parameter today, dimensionless."""
        return self.Om0 - self.Ob0

    @property
    def Ode0(self) -> float:
        """Cosmological-constant density parameter today, ``1 - Om0``."""
        return 1.0 - self.Om0

    @cached_property
    def astropy(self):
        """The matching :class:`astropy.cosmology.FlatLambdaCDM` (no radiation, no neutrinos)."""
        from astropy.cosmology import FlatLambdaCDM

        return FlatLambdaCDM(H0=100.0 * self.h, Om0=self.Om0, Ob0=self.Ob0, Tcmb0=0.0)

    @property
    def rho_crit0(self) -> float:
        """Critical density today in (Msun/h) / (Mpc/h)^3 (``3 H0^2 / 8 pi G`` with h = 1)."""
        import astropy.units as u
        from astropy.constants import G

        H0 = 100.0 * u.km / u.s / u.Mpc
        rho = 3.0 * H0**2 / (8.0 * np.pi * G)
        return float(rho.to(u.Msun / u.Mpc**3).value)

    # ------------------------------------------------------------------ expansion
    def E(self, a: Any) -> np.ndarray:
        """Dimensionless expansion rate ``H(a) / H0``.

        Parameters
        ----------
        a : float or array_like
            Scale factor, dimensionless.

        Returns
        -------
        numpy.ndarray
            ``E(a)``, dimensionless (computed by astropy's ``efunc``).
        """
        a = _as_array(a)
        return np.asarray(self.astropy.efunc(1.0 / a - 1.0), dtype=float)

    def dlnE_dlna(self, a: Any) -> np.ndarray:
        """Logarithmic derivative ``d ln E / d ln a`` (dimensionless) for matter + Lambda."""
        a = _as_array(a)
        return -1.5 * self.Om(a)

    def Om(self, a: Any) -> np.ndarray:
        """Matter density parameter ``Om(a) = Om0 a^-3 / E(a)^2``, dimensionless."""
        a = _as_array(a)
        return self.Om0 * a**-3 / self.E(a) ** 2

    # ------------------------------------------------------------------ growth tables
    @cached_property
    def _growth(self):
        from scipy.integrate import solve_ivp
        from scipy.interpolate import CubicSpline

        Om0, Ol = self.Om0, self.Ode0

        def om_of(lna):
            a3 = np.exp(3.0 * lna)
            return Om0 / (Om0 + Ol * a3)

        def rhs(lna, y):
            d1, v1, d2, v2 = y
            om = om_of(lna)
            fric = 2.0 - 1.5 * om  # 2 + dlnE/dlna
            return [v1, -fric * v1 + 1.5 * om * d1,
                    v2, -fric * v2 + 1.5 * om * (d2 - d1 * d1)]

        a0 = _A_MIN
        y0 = [a0, a0, -3.0 / 7.0 * a0**2, -6.0 / 7.0 * a0**2]
        lna = np.linspace(np.log(_A_MIN), np.log(_A_MAX), _N_TABLE)
        sol = solve_ivp(rhs, (lna[0], lna[-1]), y0, t_eval=lna, method="DOP853",
                        rtol=1e-11, atol=1e-30)
        if not sol.success:  # pragma: no cover - would be a scipy failure
            raise ConfigError("growth ODE failed: " + sol.message, key="cosmology")
        d1, v1, d2, v2 = sol.y
        # Normalise D1(a=1) = 1; D2 scales as D1^2 so that D2 ~ -3/7 D1^2 holds with the norm.
        i1 = CubicSpline(lna, d1)(0.0)
        d1n, v1n = d1 / i1, v1 / i1
        d2n, v2n = d2 / i1**2, v2 / i1**2
        return {
            "D1": CubicSpline(lna, np.log(d1n)),
            "f1": CubicSpline(lna, v1n / d1n),
            "D2": CubicSpline(lna, np.log(-d2n)),
            "f2": CubicSpline(lna, v2n / d2n),
        }

    def D1(self, a: Any) -> np.ndarray:
        """Linear growth factor normalised to ``D1(a=1) = 1``.

        Parameters
        ----------
        a : float or array_like
            Scale factor, dimensionless, within [1e-5, 4].

        Returns
        -------
        numpy.ndarray
            ``D1(a)``, dimensionless (equals ``a`` when ``Om0 = 1``).
        """
        a = _as_array(a)
        return np.exp(self._growth["D1"](np.log(a)))

    def f1(self, a: Any) -> np.ndarray:
        """Linear growth rate ``f = d ln D1 / d ln a`` (dimensionless)."""
        a = _as_array(a)
        return self._growth["f1"](np.log(a))

    def D2(self, a: Any) -> np.ndarray:
        """Second-order growth factor from the ODE (negative, ``~ -3/7 D1^2``), dimensionless.

        Parameters
        ----------
        a : float or array_like
            Scale factor, dimensionless.

        Returns
        -------
        numpy.ndarray
            ``D2(a)`` in the convention ``x = q - D1 grad(phi1) + D2 grad(phi2)``, with
            ``D1`` normalised to 1 today.
        """
        a = _as_array(a)
        return -np.exp(self._growth["D2"](np.log(a)))

    def f2(self, a: Any) -> np.ndarray:
        """Second-order growth rate ``d ln D2 / d ln a`` (dimensionless, ``~ 2 Om(a)^(6/11)``)."""
        a = _as_array(a)
        return self._growth["f2"](np.log(a))

    def D2_approx(self, a: Any) -> np.ndarray:
        """Approximation ``D2 = -3/7 D1^2 Om(a)^(-1/143)`` (Bouchet et al. 1995), dimensionless."""
        a = _as_array(a)
        return -3.0 / 7.0 * self.D1(a) ** 2 * self.Om(a) ** (-1.0 / 143.0)

    def growth_D1(self, z: Any) -> np.ndarray:
        """``D1`` as a function of redshift ``z`` (dimensionless)."""
        return self.D1(1.0 / (1.0 + np.asarray(z, dtype=float)))

    # ------------------------------------------------------------------ FastPM factors
    def gp(self, a: Any) -> np.ndarray:
        """Momentum growth ``G_p(a) = a^3 E(a) dD1/da = a^2 E f1 D1`` (dimensionless).

        In linear theory the FastPM momentum ``p = a^3 E dx/da`` (Mpc/h) is ``G_p(a) Psi``.
        """
        a = _as_array(a)
        return a**2 * self.E(a) * self.f1(a) * self.D1(a)

    def gf(self, a: Any) -> np.ndarray:
        """``dG_p/da = 3/2 Om0 D1 / (a^2 E)`` (dimensionless), from the growth equation."""
        a = _as_array(a)
        return 1.5 * self.Om0 * self.D1(a) / (a**2 * self.E(a))

    def gp2(self, a: Any) -> np.ndarray:
        """Second-order momentum growth ``a^2 E f2 D2`` (dimensionless); ``p2 = gp2 Psi2``."""
        a = _as_array(a)
        return a**2 * self.E(a) * self.f2(a) * self.D2(a)

    def drift_factor(self, a0: float, a1: float, ac: float) -> float:
        """FastPM drift factor ``(D1(a1) - D1(a0)) / G_p(ac)`` (dimensionless).

        Multiplies the momentum ``p`` (Mpc/h) evaluated at ``ac`` to give the displacement in
        Mpc/h from ``a0`` to ``a1``.
        """
        return float((self.D1(a1) - self.D1(a0)) / self.gp(ac))

    def kick_factor(self, a0: float, a1: float, ac: float) -> float:
        """FastPM kick factor ``(G_p(a1) - G_p(a0)) / D1(ac)`` (dimensionless).

        Multiplies ``g = -grad nabla^-2 delta`` (Mpc/h) computed at ``ac`` to give the change of
        momentum from ``a0`` to ``a1``; the ``3/2 Om0 / a`` of the Poisson equation is absorbed
        in it.
        """
        return float((self.gp(a1) - self.gp(a0)) / self.D1(ac))


#: Planck 2018 parameters (the defaults of :class:`Cosmology`).
PLANCK18 = Cosmology()

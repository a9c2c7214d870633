"""Stars: a star-count model with magnitude, blackbody colours in every band, row ids.

Model
-----
* **Counts.** The number of stars per deg^2 per magnitude in the reference band (``mag``,
  HST ACS F814W AB, the band the galaxy catalogs use) is a power law

  .. math:: \\frac{dN}{dm} = A \\, 10^{\\alpha (m - m_{\\rm max})}, \\qquad
            m_{\\rm min} \\le m \\le m_{\\rm max},

  normalised by the surface density ``density`` (stars per arcmin^2 over the whole range).
  The number of stars in a field is Poisson with mean ``density x area``.
  Default numbers, all **assumptions** to be replaced by the user's own calibration:
  ``density = 2 arcmin^-2`` for ``16 < mag < 25`` is the lowest stellar density the LSST DESC
  shear simulations draw from their LSST stellar-density map (descwl-shear-sims,
  ``DEFAULT_MIN_STAR_DENSITY = 2`` per arcmin^2, ``stars.py``), i.e. a high-Galactic-latitude
  field; ``alpha = 0.15 mag^-1`` is a typical logarithmic slope of faint high-latitude
  counts, where the halo dominates and counts flatten (assumed, not fitted here).
* **Colours.** Gilmore (1981, MNRAS 195, 183) finds that at faint magnitudes almost all
  stars are either G type (spheroid) or M type (disc). Each star is therefore given an
  effective temperature from one of two populations, G (uniform 5,000-6,500 K) with
  probability ``g_fraction`` (default 0.5, assumed) or M (uniform 3,000-4,000 K), and its
  colours are those of a **blackbody** at that temperature evaluated at each band's
  effective wavelength from ``surveycodex``:
  ``mag_<band> = mag - 2.5 log10(B_nu(nu_band, T) / B_nu(nu_F814W, T))``. This is a
  stated approximation of the stellar locus, not a fit to it: real M dwarfs are redder in
  g - r and bluer in the near-infrared than blackbodies, ``u`` is affected by metal-line
  blanketing, and a broad band (Euclid VIS) is represented by its effective wavelength only.
* **Positions** are uniform in the scene field, drawn exactly like ``catalog.positions``
  draws random galaxy positions (per-row counter-based uniforms, same margin convention).
* **Row ids** are ``STAR_ROW_ID_OFFSET + j`` for the j-th star (``2**62``), so they cannot
  collide with galaxy row ids, which are row numbers or user ids below ``2**62``.

Every property of star ``j`` depends only on ``(seed, j)``, and the number of stars only on
``(seed, model, field)``, so the star catalog does not depend on chunking.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from astropy.table import Table

from astrogen.catalog.bands import BAND_FILTERS, REFERENCE_BAND, effective_wavelength
from astrogen.errors import ConfigError
from astrogen.seeds import derive_seed, row_seeds, uniforms

__all__ = ["StarModel", "BAND_FILTERS", "STAR_ROW_ID_OFFSET", "band_wavelength",
           "blackbody_colour", "star_row_ids"]

#: First row id of stars (2**62): galaxy row ids must stay below it.
STAR_ROW_ID_OFFSET = 2 ** 62
#: Reference band of ``mag`` (what the galaxy catalogs and generative models use).

_H_OVER_K = 6.62607015e-34 / 1.380649e-23  # s K
_C = 2.99792458e8  # m / s


def band_wavelength(band: str, key: str = "bands") -> float:
    """Effective wavelength (nm) of a band (:func:`astrogen.catalog.bands.effective_wavelength`).

    Raises
    ------
    ConfigError
        Unknown band, naming ``key`` and the known bands.
    """
    return float(effective_wavelength(band, key=key).to_value("nm"))


def blackbody_colour(teff, band: str, reference: str = REFERENCE_BAND) -> np.ndarray:
    """AB colour ``m_band - m_reference`` (mag) of blackbodies at ``teff`` (K).

    Uses ``f_nu ~ B_nu(T) ~ nu^3 / (exp(h nu / k T) - 1)`` at the bands' effective wavelengths.
    """
    t = np.asarray(teff, dtype=float)

    def log_bnu(wl_nm):
        nu = _C / (wl_nm * 1e-9)
        return 3 * np.log10(nu) - np.log10(np.expm1(_H_OVER_K * nu / t))

    return -2.5 * (log_bnu(band_wavelength(band)) - log_bnu(band_wavelength(reference)))


def star_row_ids(n: int, start: int = 0) -> np.ndarray:
    """Row ids of stars ``start .. start + n - 1`` (int64, from :data:`STAR_ROW_ID_OFFSET`)."""
    return STAR_ROW_ID_OFFSET + np.arange(start, start + n, dtype=np.int64)


@dataclass(frozen=True)
class StarModel:
    """Star counts with magnitude and two-population blackbody colours (module docstring).

    Parameters
    ----------
    density : float
        Stars per arcmin^2 with ``mag_range[0] <= mag <= mag_range[1]``.
    mag_range : (float, float)
        Reference-band (F814W AB) magnitude range, mag.
    slope : float
        ``alpha = d log10(dN/dm) / dm`` in mag^-1.
    g_fraction : float
        Fraction of G-type (spheroid) stars; the rest are M-type (disc).
    """

    density: float = 2.0
    mag_range: tuple[float, float] = (16.0, 25.0)
    slope: float = 0.15
    g_fraction: float = 0.5

    #: effective temperature ranges (K) of the two populations
    G_TEFF = (5000.0, 6500.0)
    M_TEFF = (3000.0, 4000.0)

    def __post_init__(self):
        if not (np.isfinite(self.density) and self.density >= 0):
            raise ConfigError("must be >= 0 stars per arcmin^2.", key="density",
                              received={"density": self.density})
        lo, hi = (float(v) for v in self.mag_range)
        if not lo < hi:
            raise ConfigError("must be [low, high] with low < high (AB mag).", key="mag_range",
                              received={"mag_range": list(self.mag_range)})
        if not np.isfinite(self.slope):
            raise ConfigError("must be a finite number (mag^-1).", key="slope",
                              received={"slope": self.slope})
        if not 0.0 <= self.g_fraction <= 1.0:
            raise ConfigError("must be in [0, 1].", key="g_fraction",
                              received={"g_fraction": self.g_fraction})

    def expected_count(self, area_arcmin2: float) -> float:
        """Mean number of stars in ``area_arcmin2`` (arcmin^2)."""
        return float(self.density * area_arcmin2)

    def dn_dm(self, mag) -> np.ndarray:
        """Stars per arcmin^2 per mag at reference magnitude ``mag`` (0 outside the range)."""
        lo, hi = self.mag_range
        m = np.asarray(mag, dtype=float)
        a = self.slope * np.log(10.0)
        if abs(a) < 1e-12:
            norm = 1.0 / (hi - lo)
        else:
            norm = a / (1.0 - np.exp(-a * (hi - lo)))  # pdf = norm exp(a (m - hi))
        pdf = norm * np.exp(a * (m - hi))
        return np.where((m >= lo) & (m <= hi), self.density * pdf, 0.0)

    def count(self, seed: int, area_arcmin2: float) -> int:
        """Poisson number of stars in the field, a function of ``seed`` only."""
        rng = np.random.default_rng(derive_seed(seed, "star-count"))
        return int(rng.poisson(self.expected_count(area_arcmin2)))

    def magnitudes(self, u: np.ndarray) -> np.ndarray:
        """Inverse CDF of the magnitude distribution at uniforms ``u``."""
        lo, hi = self.mag_range
        a = self.slope * np.log(10.0)
        if abs(a) < 1e-12:
            return lo + u * (hi - lo)
        # CDF(m) = (exp(a (m - lo)) - 1) / (exp(a (hi - lo)) - 1)
        return lo + np.log1p(u * np.expm1(a * (hi - lo))) / a

    def sample(self, seed: int, index: np.ndarray, bands=()) -> Table:
        """Properties of stars number ``index`` (0-based within the field).

        Returns
        -------
        astropy.table.Table
            ``row_id``, ``is_star`` (True), ``mag`` [mag, F814W AB], ``teff`` [K],
            ``star_type`` ("G" or "M"), ``mag_<band>`` [mag, AB] for each band, and
            ``z = 0``.
        """
        idx = np.asarray(index, dtype=np.int64)
        ids = STAR_ROW_ID_OFFSET + idx
        u = uniforms(row_seeds(derive_seed(seed, "star-properties"), ids), 3)
        out = Table()
        out["row_id"] = ids
        out["is_star"] = np.ones(len(ids), dtype=bool)
        out["mag"] = self.magnitudes(u[:, 0])
        out["mag"].unit = "mag"
        out["mag"].description = "AB magnitude in the reference band (HST F814W)"
        is_g = u[:, 1] < self.g_fraction
        lo = np.where(is_g, self.G_TEFF[0], self.M_TEFF[0])
        hi = np.where(is_g, self.G_TEFF[1], self.M_TEFF[1])
        out["teff"] = lo + u[:, 2] * (hi - lo)
        out["teff"].unit = "K"
        out["teff"].description = "effective temperature of the blackbody colours"
        out["star_type"] = np.where(is_g, "G", "M")
        for band in bands:
            col = f"mag_{band}"
            out[col] = np.asarray(out["mag"]) + blackbody_colour(np.asarray(out["teff"]), band)
            out[col].unit = "mag"
            out[col].description = f"AB magnitude in {band} (blackbody colour)"
        out["z"] = np.zeros(len(ids))
        out["z"].description = "redshift (0 for stars)"
        return out

"""Realistic galaxy properties drawn from the real COSMOS catalogs shipped with astrogen.

The sampler is a Gaussian copula (e.g. Nelsen 2006, *An Introduction to Copulas*) fitted to
the two COSMOS samples shipped in :func:`astrogen.data.cosmos_dir`:

* the I < 26 extension sample (100 galaxies: F814W magnitude, flux radius, photo-z, HSC
  g r i z y magnitudes), which is a fair sample of the faint population and sets the
  magnitude distribution and the colours;
* the I < 23.5 sample (100 galaxies) with GalSim's Sersic and bulge + disk fits, which gives
  the Sersic index, axis ratio and bulge fraction and their correlations with magnitude,
  size and redshift.

Variables: ``mag``, ``log10(hlr / arcsec)``, ``z``, ``sersic_n``, ``q``, ``bulge_frac`` and
the HSC photometry as ``HSC_i - mag`` and the colours ``g-r``, ``r-i``, ``i-z``, ``z-y``
(only the I < 26 sample has HSC magnitudes; their dependence on mag, size and redshift is
estimated on its 100 galaxies).
The magnitude marginal is the weighted empirical distribution (linearly interpolated, so no
galaxy is drawn beyond the samples' I < 26 limit); the others are kernel density estimates
(Scott's bandwidth) in a transformed space where the variable is unbounded (logit for
bounded ones), inverted on a fine grid; dependence is
the correlation matrix of normal scores, estimated pairwise on the rows where both variables
are measured and projected onto the nearest positive-definite matrix.

Limitation: the Sersic index, axis ratio and bulge fraction are measured only for I < 23.5.
Their correlation with magnitude, size and redshift cannot be estimated for the whole
I < 26 population from these data (extrapolating it made bright draws far more
bulge-dominated than the real bright galaxies), so they are drawn independently of those
three, keeping their joint distribution with each other. Bright galaxies
(I < 23.5) are down-weighted so that the two samples together follow the I < 26 number
counts. The half-light radius of the I < 26 sample (SExtractor flux radius, PSF-convolved)
is mapped to the PSF-free Sersic half-light radius by a log-linear relation fitted on the
I < 23.5 galaxies, which have both.

Magnitude range: ``mag_range`` truncates the magnitude marginal and draws every other
variable *conditionally* on the drawn magnitude. The copula's normal vector is
``g = L z`` with ``L`` the lower Cholesky factor of the correlation matrix and ``mag`` its
first variable, so ``g_mag = z_0``: drawing ``z_0`` from the standard normal truncated to the
range's CDF interval (inverse CDF of a uniform in ``[F(lo), F(hi)]``) and the other ``z_k``
unchanged is an exact draw from the copula conditioned on ``lo <= mag <= hi``. The
distribution of (hlr, z, shape, colours) at a fixed magnitude is therefore the same with and
without a range (before this fix the range only rescaled the magnitude's rank, which paired
faint-range magnitudes with the size and redshift of brighter ranks).

Other bands (``bands=``): ``mag_<band>`` for any band of :mod:`astrogen.catalog.bands` is the
AB magnitude interpolated linearly in log(effective wavelength) between the drawn HSC
g r i z y magnitudes (effective wavelengths from surveycodex); ``hst_f814w`` is the reference
``mag`` itself. Outside HSC g to y (u, Euclid NISP Y/J/H) the magnitude is *extrapolated
flat in AB* (f_nu constant from the nearest HSC band): the data have no information there,
so those magnitudes are a stated approximation, not a measurement.

Every row is drawn from its own counter-based seed (:mod:`astrogen.seeds`), so a catalog
of N rows is the same whatever the chunking.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from astropy.table import Table
from scipy.special import expit, logit, ndtr, ndtri

from astrogen.catalog.columns import column_spec
from astrogen.constants import COSMOS_PIXEL_SCALE  # arcsec / pixel of the COSMOS stamps and fits
from astrogen.data import cosmos_dir
from astrogen.errors import ConfigError
from astrogen.seeds import normals, row_seeds, uniforms

__all__ = ["CosmosSampler", "load_cosmos_properties", "flux_radius_to_hlr", "VARIABLES"]

#: copula variables; ``mag`` must stay first (the range truncation relies on it)
VARIABLES = ("mag", "hlr", "z", "sersic_n", "q", "bulge_frac",
             "hsc_i_minus_mag", "hsc_g_r", "hsc_r_i", "hsc_i_z", "hsc_z_y")
HSC_BANDS = ("hsc_g", "hsc_r", "hsc_i", "hsc_z", "hsc_y")
_BRIGHT = 23.5
#: measured only in the I < 23.5 sample
_BRIGHT_ONLY = ("sersic_n", "q", "bulge_frac")

# (transform to unbounded space, inverse) per variable; bounds are GalSim's / physical.
_TRANSFORMS = {
    "mag": (lambda x: x, lambda y: y),
    "hlr": (np.log10, lambda y: 10.0 ** y),
    "z": (lambda x: np.log(np.clip(x, 1e-3, None)), np.exp),
    "sersic_n": (lambda x: logit((np.clip(x, 0.31, 6.19) - 0.3) / 5.9),
                 lambda y: 0.3 + 5.9 * expit(y)),
    "q": (lambda x: logit(np.clip(x, 0.051, 0.999) / 1.0),
          lambda y: np.clip(expit(y), 0.05, 1.0)),
    "bulge_frac": (lambda x: logit(np.clip(x, 0.005, 0.995)), expit),
    **{c: (lambda x: x, lambda y: y) for c in ("hsc_i_minus_mag", "hsc_g_r", "hsc_r_i",
                                               "hsc_i_z", "hsc_z_y")},
}


def _bulge_fraction(bulgefit: np.ndarray) -> np.ndarray:
    """Bulge flux fraction from GalSim's COSMOS bulge+disk fit parameters.

    ``bulgefit[:8]`` is the n=1 disk and ``bulgefit[8:]`` the n=4 bulge, each
    (I_e, r_e [pix, major axis], n, q, boxiness, x0, y0, phi). The flux of a Sersic profile
    is ``2 pi n Gamma(2n) e^b / b^(2n) I_e r_e^2 q`` with the constants 1.901 (n=1) and
    3.607 (n=4) (GalSim COSMOSCatalog).
    """
    disk = 1.901 * bulgefit[:, 0] * bulgefit[:, 1] ** 2 * bulgefit[:, 3]
    bulge = 3.607 * bulgefit[:, 8] * bulgefit[:, 9] ** 2 * bulgefit[:, 11]
    with np.errstate(invalid="ignore", divide="ignore"):
        return bulge / (bulge + disk)


def _sersic_hlr(fits_table) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(circularised Sersic hlr [arcsec], usable, Sersic fit) of a GalSim ``_fits`` table."""
    s = np.asarray(fits_table["sersicfit"], dtype=float)
    viable = np.asarray(fits_table["viable_sersic"]).astype(bool)
    q = s[:, 3]
    hlr = COSMOS_PIXEL_SCALE * s[:, 1] * np.sqrt(np.clip(q, 0, None))  # as GalSim does
    ok = viable & (hlr > 0) & (s[:, 2] >= 0.3) & (s[:, 2] <= 6.2) & (q > 0) & (q <= 1)
    return hlr, ok, s


def flux_radius_to_hlr(flux_radius_arcsec) -> np.ndarray:
    """PSF-free Sersic half-light radius [arcsec] from the SExtractor ``flux_radius``
    [arcsec] (a PSF-convolved size): the log-linear relation fitted on the shipped
    I < 23.5 COSMOS sample's viable Sersic fits (the mapping :func:`load_cosmos_properties`
    applies to the I < 26 sample)."""
    bright_fits = Table.read(cosmos_dir() / "real_galaxy_catalog_23.5_example_fits.fits")
    hlr_b, ok, _ = _sersic_hlr(bright_fits)
    fr_b = COSMOS_PIXEL_SCALE * np.asarray(bright_fits["flux_radius"], dtype=float)
    slope, icpt = np.polyfit(np.log10(fr_b[ok]), np.log10(hlr_b[ok]), 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return 10 ** (icpt + slope * np.log10(np.asarray(flux_radius_arcsec, dtype=float)))


def load_cosmos_properties() -> tuple[Table, np.ndarray]:
    """The two COSMOS samples as one table of :data:`VARIABLES` (NaN where unmeasured).

    Returns
    -------
    table : astropy.table.Table
        200 rows: mag [mag], hlr [arcsec], z, sersic_n, q, bulge_frac, the HSC columns
        ``hsc_i_minus_mag`` and colours ``hsc_g_r`` ... [mag] (NaN for the I < 23.5
        sample), the HSC magnitudes ``mag_hsc_g`` ... [mag], and ``sample``.
    weights : numpy.ndarray
        Per-row weights making the union follow the I < 26 number counts.
    """
    d = cosmos_dir()
    ext = Table.read(d / "real_galaxy_catalog_26_extension_example.fits")
    ext_fits = Table.read(d / "real_galaxy_catalog_26_extension_example_fits.fits")
    bright = Table.read(d / "real_galaxy_catalog_23.5_example.fits")
    bright_fits = Table.read(d / "real_galaxy_catalog_23.5_example_fits.fits")

    hlr_b, ok, s = _sersic_hlr(bright_fits)
    q_b = s[:, 3]
    fr_b = COSMOS_PIXEL_SCALE * np.asarray(bright_fits["flux_radius"], dtype=float)

    use_b = np.asarray(bright_fits["use_bulgefit"]).astype(bool)
    bf = np.where(use_b, _bulge_fraction(np.asarray(bright_fits["bulgefit"], dtype=float)), np.nan)
    bf = np.where(np.isfinite(bf), bf, np.nan)

    nb, ne = len(bright), len(ext)
    tab = Table()
    tab["mag"] = np.concatenate([np.asarray(bright["MAG"], float), np.asarray(ext["MAG"], float)])
    fr_e = COSMOS_PIXEL_SCALE * np.asarray(ext_fits["flux_radius"], dtype=float)
    # log-linear map from flux radius (PSF-convolved) to the Sersic half-light radius
    tab["hlr"] = np.concatenate([np.where(ok, hlr_b, flux_radius_to_hlr(fr_b)),
                                 flux_radius_to_hlr(fr_e)])
    tab["z"] = np.concatenate([np.asarray(bright_fits["zphot"], float),
                               np.asarray(ext_fits["ZPHOT"], float)])
    tab["sersic_n"] = np.concatenate([np.where(ok, s[:, 2], np.nan), np.full(ne, np.nan)])
    tab["q"] = np.concatenate([np.where(ok, q_b, np.nan), np.full(ne, np.nan)])
    tab["bulge_frac"] = np.concatenate([bf, np.full(ne, np.nan)])
    hsc = {b: np.asarray(ext_fits["HSC_" + b[-1]], float) for b in HSC_BANDS}
    bad = ~np.all([np.isfinite(v) & (v > 0) & (v < 40) for v in hsc.values()], axis=0)
    for b in HSC_BANDS:
        hsc[b][bad] = np.nan
        tab["mag_" + b] = np.concatenate([np.full(nb, np.nan), hsc[b]])
    tab["hsc_i_minus_mag"] = tab["mag_hsc_i"] - tab["mag"]
    for a, b in zip("griz", "rizy"):
        tab[f"hsc_{a}_{b}"] = tab[f"mag_hsc_{a}"] - tab[f"mag_hsc_{b}"]
    tab["sample"] = ["I<23.5"] * nb + ["I<26"] * ne
    tab["z"][~(tab["z"] > 0)] = np.nan
    # weights: bright galaxies of both samples share the weight the I<26 sample gives them
    is_bright = tab["mag"] < _BRIGHT
    k = int(np.sum(is_bright[nb:]))
    w = np.ones(len(tab))
    w[is_bright] = k / max(int(is_bright.sum()), 1)
    return tab, w


@dataclass
class _Marginal:
    grid_y: np.ndarray   # transformed-space grid
    cdf: np.ndarray      # CDF on the grid

    def ppf(self, u: np.ndarray) -> np.ndarray:
        return np.interp(u, self.cdf, self.grid_y)


def _fit_marginal(y: np.ndarray, w: np.ndarray, n_grid: int = 4096) -> _Marginal:
    w = w / w.sum()
    mean = np.sum(w * y)
    std = np.sqrt(np.sum(w * (y - mean) ** 2))
    n_eff = 1.0 / np.sum(w ** 2)
    bw = 1.06 * std * n_eff ** (-0.2)  # Scott / Silverman rule
    grid = np.linspace(y.min() - 4 * bw, y.max() + 4 * bw, n_grid)
    cdf = np.sum(w[None, :] * ndtr((grid[:, None] - y[None, :]) / bw), axis=1)
    cdf = (cdf - cdf[0]) / (cdf[-1] - cdf[0])
    cdf = np.maximum.accumulate(cdf + np.linspace(0, 1e-12, n_grid))  # strictly increasing
    return _Marginal(grid, cdf)


def _empirical_marginal(y: np.ndarray, w: np.ndarray) -> _Marginal:
    """Weighted empirical CDF, linearly interpolated between the data points (no kernel
    tails beyond the selection limits of the sample)."""
    order = np.argsort(y, kind="stable")
    ys, ws = y[order], w[order] / w.sum()
    cdf = np.cumsum(ws) - 0.5 * ws
    cdf = np.concatenate([[0.0], cdf, [1.0]])
    grid = np.concatenate([[ys[0]], ys, [ys[-1]]])
    cdf = np.maximum.accumulate(cdf + np.linspace(0, 1e-12, cdf.size))
    return _Marginal(grid, cdf)


def _normal_scores(y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Weighted mid-rank normal scores of the finite entries (NaN elsewhere)."""
    from scipy.special import ndtri

    out = np.full_like(y, np.nan)
    m = np.isfinite(y)
    order = np.argsort(y[m], kind="stable")
    ww = w[m][order] / w[m].sum()
    mid = np.cumsum(ww) - 0.5 * ww
    scores = np.empty(m.sum())
    scores[order] = ndtri(mid)
    out[m] = scores
    return out


def _nearest_correlation(c: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    vals, vecs = np.linalg.eigh((c + c.T) / 2)
    c2 = (vecs * np.clip(vals, eps, None)) @ vecs.T
    d = np.sqrt(np.diag(c2))
    return c2 / np.outer(d, d)


class CosmosSampler:
    """Gaussian-copula sampler of galaxy properties fitted on the shipped COSMOS catalogs.

    Parameters
    ----------
    mag_range : (float, float)
        Magnitude range (F814W AB, mag). The default (16.5, 26.0) is the range of the
        COSMOS samples (I < 26 selection). A narrower range truncates the magnitude
        distribution; the other variables are drawn conditionally on the magnitude, so
        their distribution at fixed magnitude does not depend on the range.
    bands : list of str, optional
        Extra bands (contract names, e.g. ``lsst_r``, ``euclid_vis``) for which a column
        ``mag_<band>`` [mag, AB] is added, interpolated from the drawn HSC magnitudes (see
        the module docstring for the approximation). ``mag_hsc_g`` ... ``mag_hsc_y`` are
        always drawn.

    Examples
    --------
    >>> s = CosmosSampler()
    >>> t = s.sample(seed=1, row_ids=range(5))
    >>> sorted(t.colnames)[:3]
    ['beta', 'bulge_frac', 'hlr']
    """

    #: version of the draws: 2 = ``mag_range`` conditions the other variables on the
    #: magnitude (1, before that fix, rescaled the magnitude's rank only, which made faint
    #: galaxies of a range too small and too distant). Data sets built from the sampler
    #: record it so that one built by version 1 is not reused.
    VERSION = 2

    def __init__(self, mag_range=(16.5, 26.0), bands=None):
        from astrogen.catalog.bands import interpolation_weights

        self.bands = [] if bands is None else list(bands)
        self._band_weights = {b: interpolation_weights(b, HSC_BANDS, key=f"bands[{i}]")
                              for i, b in enumerate(self.bands)}
        data, w = load_cosmos_properties()
        self.data = data
        self.marginals: dict[str, _Marginal] = {}
        scores = []
        for name in VARIABLES:
            fwd, _ = _TRANSFORMS[name]
            y = fwd(np.asarray(data[name], float))
            m = np.isfinite(y)
            fit = _empirical_marginal if name == "mag" else _fit_marginal
            self.marginals[name] = fit(y[m], w[m])
            scores.append(_normal_scores(y, w))
        scores = np.array(scores)
        k = len(VARIABLES)
        corr = np.eye(k)
        for i in range(k):
            for j in range(i + 1, k):
                if (VARIABLES[i] in _BRIGHT_ONLY) != (VARIABLES[j] in _BRIGHT_ONLY):
                    continue  # not estimable for the whole population: independent
                m = np.isfinite(scores[i]) & np.isfinite(scores[j])
                if m.sum() < 10:
                    continue  # never measured together (HSC colours vs bulge+disk fits)
                corr[i, j] = corr[j, i] = np.corrcoef(scores[i][m], scores[j][m])[0, 1]
        self.correlation = _nearest_correlation(corr)
        self._chol = np.linalg.cholesky(self.correlation)
        self.mag_range = None
        if mag_range is not None:
            lo, hi = (float(v) for v in mag_range)
            if not lo < hi:
                raise ConfigError("must be [low, high] with low < high (AB mag).",
                                  key="mag_range", received={"mag_range": list(mag_range)})
            mm = self.marginals["mag"]
            self._u_lo, self._u_hi = np.clip(np.interp([lo, hi], mm.grid_y, mm.cdf),
                                             1e-15, 1 - 1e-15)
            if self._u_hi - self._u_lo < 1e-6:
                raise ConfigError("selects no galaxy of the COSMOS magnitude distribution.",
                                  key="mag_range", received={"mag_range": [lo, hi]})
            self.mag_range = (lo, hi)

    def sample(self, seed: int, row_ids) -> Table:
        """Draw one galaxy per row id.

        Parameters
        ----------
        seed : int
            Stage seed.
        row_ids : array-like of int
            Row ids; each row's properties depend only on ``(seed, row_id)``.

        Returns
        -------
        astropy.table.Table
            Columns ``row_id``, ``mag`` [mag], ``hlr`` [arcsec], ``z``, ``sersic_n``, ``q``,
            ``beta`` [deg], ``bulge_frac``, ``mag_hsc_g`` ... ``mag_hsc_y`` [mag] and
            ``mag_<band>`` [mag] for each extra band.
        """
        ids = np.asarray(list(row_ids) if not isinstance(row_ids, np.ndarray) else row_ids,
                         dtype=np.int64)
        seeds = row_seeds(seed, ids)
        z = normals(seeds, len(VARIABLES))
        if self.mag_range is not None:
            # truncated normal for the magnitude's score (exact conditioning, see module doc)
            z[:, 0] = ndtri(self._u_lo + ndtr(z[:, 0]) * (self._u_hi - self._u_lo))
        # g = z L^T as explicit element-wise sums: a BLAS product may round differently
        # for different numbers of rows, which would make draws depend on the chunking
        g = np.zeros_like(z)
        for j in range(len(VARIABLES)):
            for k in range(j + 1):
                g[:, j] += self._chol[j, k] * z[:, k]
        uu = ndtr(g)
        draws = {}
        for j, name in enumerate(VARIABLES):
            _, inv = _TRANSFORMS[name]
            draws[name] = inv(self.marginals[name].ppf(uu[:, j]))
        if self.mag_range is not None:  # guard the last ulp of the inverse-CDF round trip
            draws["mag"] = np.clip(draws["mag"], *self.mag_range)
        out = Table()
        out["row_id"] = ids
        for name in ("mag", "hlr", "z", "sersic_n", "q"):
            out[name] = draws[name]
        out["beta"] = 180.0 * uniforms(seeds ^ np.uint64(0xBE7A), 1)[:, 0]
        out["bulge_frac"] = draws["bulge_frac"]
        hsc = {"hsc_i": draws["mag"] + draws["hsc_i_minus_mag"]}
        hsc["hsc_r"] = hsc["hsc_i"] + draws["hsc_r_i"]
        hsc["hsc_g"] = hsc["hsc_r"] + draws["hsc_g_r"]
        hsc["hsc_z"] = hsc["hsc_i"] - draws["hsc_i_z"]
        hsc["hsc_y"] = hsc["hsc_z"] - draws["hsc_z_y"]
        for b in HSC_BANDS:
            out["mag_" + b] = hsc[b]
        for b, weights in self._band_weights.items():
            if b in HSC_BANDS:
                continue
            if weights is None:  # the reference band itself
                out["mag_" + b] = draws["mag"]
            else:
                out["mag_" + b] = sum(w * hsc[n] for n, w in weights.items())
        for name in out.colnames:
            spec = column_spec(name)
            if spec.unit is not None:
                out[name].unit = spec.unit
            out[name].description = spec.description
        return out

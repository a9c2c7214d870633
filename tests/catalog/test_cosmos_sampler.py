"""COSMOS sampler: mag_range draws conditionally; HSC colours and extra bands."""
import astropy.units as u
import numpy as np
import pytest
from scipy.stats import ks_2samp

from astrogen.catalog.cosmos import CosmosSampler
from astrogen.errors import ConfigError

N = 20_000


@pytest.fixture(scope="module")
def full():
    return CosmosSampler().sample(1, np.arange(N))


@pytest.mark.parametrize("mag_range", [(18.0, 24.0), (17.0, 23.5)])
def test_mag_range_keeps_the_conditional_distributions(full, mag_range):
    """At fixed magnitude, size, redshift, shape and colours do not depend on the range.

    The old sampler rescaled the magnitude's rank into the range: with [18, 24] the
    galaxies of 23 < I < 23.5 had median hlr 0.17" instead of 0.28" (KS p ~ 1e-36).
    """
    t = CosmosSampler(mag_range=mag_range).sample(1, np.arange(N))
    assert t["mag"].min() >= mag_range[0] and t["mag"].max() <= mag_range[1]
    lo, hi = 23.0, 23.5
    m = (t["mag"] > lo) & (t["mag"] < hi)
    mf = (full["mag"] > lo) & (full["mag"] < hi)
    assert m.sum() > 300 and mf.sum() > 100
    for name in ("hlr", "z", "q", "sersic_n", "bulge_frac"):
        p = ks_2samp(np.asarray(t[name][m]), np.asarray(full[name][mf])).pvalue
        assert p > 0.01, (name, p)
    gi = lambda x: np.asarray(x["mag_hsc_g"] - x["mag_hsc_i"])  # noqa: E731
    assert ks_2samp(gi(t)[m], gi(full)[mf]).pvalue > 0.01
    # and the size-magnitude relation survives inside the range
    assert np.corrcoef(t["mag"], np.log10(t["hlr"]))[0, 1] < -0.3


def test_mag_range_selects_the_right_fraction(full):
    """The truncated draw keeps the marginal's shape: the fraction of 23 < I < 24 among
    18 < I < 24 equals the full sample's, within binomial noise."""
    t = CosmosSampler(mag_range=(18.0, 24.0)).sample(2, np.arange(N))
    inr = (full["mag"] > 18) & (full["mag"] < 24)
    f_full = np.mean(full["mag"][inr] > 23)
    f_rng = np.mean(t["mag"] > 23)
    sigma = np.sqrt(f_full * (1 - f_full) / inr.sum())
    assert abs(f_rng - f_full) < 5 * sigma


def test_colours_follow_the_cosmos_hsc_photometry():
    s = CosmosSampler()
    t = s.sample(3, np.arange(N))
    d = s.data
    ext = d["sample"] == "I<26"
    for lo, hi in ((24.0, 25.0), (25.0, 26.0)):
        m = (t["mag"] > lo) & (t["mag"] < hi)
        md = ext & (d["mag"] > lo) & (d["mag"] < hi)
        assert md.sum() >= 25
        for a, b in (("g", "i"), ("r", "i"), ("i", "y")):
            drawn = np.asarray(t[f"mag_hsc_{a}"] - t[f"mag_hsc_{b}"])[m]
            data = np.asarray(d[f"mag_hsc_{a}"] - d[f"mag_hsc_{b}"])[md]
            assert ks_2samp(drawn, data).pvalue > 0.01, (lo, a, b)
    # HSC i follows the F814W magnitude (same band, different photometry)
    di = np.asarray(t["mag_hsc_i"] - t["mag"])
    assert abs(np.median(di) - np.nanmedian(d["hsc_i_minus_mag"][ext])) < 0.1
    for b in ("g", "r", "i", "z", "y"):
        assert t[f"mag_hsc_{b}"].unit == u.mag and np.isfinite(t[f"mag_hsc_{b}"]).all()


def test_extra_bands_interpolate_between_hsc_bands():
    s = CosmosSampler(bands=["lsst_i", "lsst_u", "euclid_h", "hst_f814w", "euclid_vis"])
    t = s.sample(4, np.arange(2000))
    d = np.abs(np.asarray(t["mag_lsst_i"] - t["mag_hsc_i"]))
    assert np.median(d) < 0.06 and d.max() < 0.5
    # LSST i (756 nm) lies between HSC r (626 nm) and HSC i (773 nm)
    lo = np.minimum(t["mag_hsc_r"], t["mag_hsc_i"])
    hi = np.maximum(t["mag_hsc_r"], t["mag_hsc_i"])
    assert np.all((t["mag_lsst_i"] >= lo - 1e-9) & (t["mag_lsst_i"] <= hi + 1e-9))
    # outside HSC g..y: flat extrapolation from the nearest band (stated approximation)
    np.testing.assert_array_equal(t["mag_lsst_u"], t["mag_hsc_g"])
    np.testing.assert_array_equal(t["mag_euclid_h"], t["mag_hsc_y"])
    np.testing.assert_array_equal(t["mag_hst_f814w"], t["mag"])
    # adding bands does not change the other columns
    base = CosmosSampler().sample(4, np.arange(2000))
    for c in base.colnames:
        np.testing.assert_array_equal(base[c], t[c])


def test_unknown_band_names_the_key():
    with pytest.raises(ConfigError, match=r"bands\[1\].*Did you mean.*lsst_x"):
        CosmosSampler(bands=["lsst_r", "lsst_x"])


def test_sampler_chunk_independent_with_range():
    s = CosmosSampler(mag_range=(18, 24), bands=["des_r"])
    a = s.sample(5, np.arange(300))
    b = s.sample(5, np.arange(100, 160))
    for c in a.colnames:
        np.testing.assert_array_equal(a[c][100:160], b[c])


def test_sampler_bit_identical_for_any_chunking():
    """Rows drawn alone, in small or in large chunks are bit-identical (no BLAS rounding
    that depends on the number of rows)."""
    s = CosmosSampler(mag_range=(18, 24))
    whole = s.sample(7, np.arange(24))
    for size in (1, 5, 8):
        parts = [s.sample(7, np.arange(a, min(a + size, 24))) for a in range(0, 24, size)]
        for c in whole.colnames:
            got = np.concatenate([np.asarray(p[c]) for p in parts])
            assert got.tobytes() == np.asarray(whole[c]).tobytes(), (size, c)

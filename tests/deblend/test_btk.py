"""BlendingToolKit interoperability: BTK's types out of the adapter, BTK batches read and
deblended close to BTK's isolated-image truth, BTK's metrics equal to ours.

Needs the ``btk`` extra (``pip install 'astrogen[btk]'``); skipped with the reason otherwise.
"""
from pathlib import Path

import numpy as np
import pytest

btk = pytest.importorskip("btk", reason="BlendingToolKit not installed: pip install "
                                         "'astrogen[btk]'")
import btk.draw_blends  # noqa: E402
import btk.sampling_functions  # noqa: E402
import btk.survey  # noqa: E402

from astrogen.deblend import btk as ab  # noqa: E402
from astrogen.deblend.result import SceneResult  # noqa: E402
from astrogen.deblend.sep_scene import sep_scene  # noqa: E402
from astrogen.errors import ConfigError  # noqa: E402

CATSIM = Path(__file__).resolve().parents[2] / "examples" / "catsim" / "catsim_example.fits"
MAX_N = 6


def _batch(min_number, max_number, batch_size, seed, max_shift=None, stamp=24.0):
    catalog = ab.catsim_catalog(CATSIM)
    sampling = btk.sampling_functions.DefaultSampling(
        stamp_size=stamp, max_number=max_number, min_number=min_number, max_shift=max_shift,
        max_mag=24.0, seed=seed)
    survey = btk.survey.get_surveys("LSST")
    gen = btk.draw_blends.CatsimGenerator(catalog, sampling, survey, batch_size=batch_size,
                                          njobs=1, add_noise="all", seed=seed)
    return next(gen)


@pytest.fixture(scope="module")
def isolated_batch():
    """One galaxy per stamp, i < 24, near the centre: blendedness 0."""
    return _batch(1, 1, 6, seed=3, max_shift=1.0)


@pytest.fixture(scope="module")
def blended_batch():
    """2 to 5 galaxies within 3 arcsec of the stamp centre."""
    return _batch(2, 5, 6, seed=5, max_shift=3.0)


def test_reader_gives_bands_first_lsst_scene_inputs(isolated_batch):
    inp = ab.read_blend(isolated_batch, 0)
    assert inp["image"].shape == (6, 120, 120)
    assert inp["bands"] == tuple(f"lsst_{b}" for b in "ugrizy")
    assert inp["pixel_scale"] == pytest.approx(0.2)
    assert inp["psf"].shape == (6, 120, 120)
    np.testing.assert_allclose(inp["psf"].sum(axis=(1, 2)), 1.0, atol=1e-3)
    # BTK's noise is Poisson with variance = sky level: the empty corners show it
    corner = inp["image"][:, :20, :20].reshape(6, -1)
    np.testing.assert_allclose(corner.std(axis=1), inp["noise_sigma"], rtol=0.15)
    with pytest.raises(ConfigError, match="index"):
        ab.read_blend(isolated_batch, 6)


def test_adapter_returns_btks_types(blended_batch):
    deblender = ab.as_btk_deblender(sep_scene, MAX_N)
    assert isinstance(deblender, btk.deblend.Deblender)
    out = deblender(blended_batch)
    assert isinstance(out, btk.blend_batch.DeblendBatch)
    assert out.segmentation.shape == (6, MAX_N, 120, 120) and out.segmentation.dtype == bool
    assert out.deblended_images.shape == (6, MAX_N, 6, 120, 120)
    one = deblender.deblend(0, blended_batch)
    assert isinstance(one, btk.blend_batch.DeblendExample)
    res = one.extra_data["scene_result"]
    assert isinstance(res, SceneResult) and res.bands[3] == "lsst_i"
    # BTK's sky convention: arcsec of the batch WCS
    ra, dec = blended_batch.wcs.pixel_to_world_values(res.catalog["x"], res.catalog["y"])
    np.testing.assert_allclose(one.catalog["ra"], np.asarray(ra) * 3600)
    np.testing.assert_allclose(one.catalog["dec"], np.asarray(dec) * 3600)
    # deblended images are the scene shared by the (one-hot) fractions, clipped at zero
    n = res.n_objects
    img = blended_batch.blend_images[0]
    expect = np.clip(res.fractions[:, None] * img[None], 0, None)
    np.testing.assert_allclose(one.deblended_images[:n], expect)
    assert not one.deblended_images[n:].any() and not one.segmentation[n:].any()


def test_too_many_objects_is_refused_like_btk(blended_batch):
    with pytest.raises(ValueError, match="max_n_sources"):
        ab.as_btk_deblender(sep_scene, 1)(blended_batch)
    with pytest.raises(ConfigError, match="max_n_sources"):
        ab.as_btk_deblender(sep_scene, 0)


def test_isolated_fluxes_match_btks_isolated_image_truth(isolated_batch):
    results = ab.deblend_blend_batch(isolated_batch, sep_scene)
    for i, res in enumerate(results):
        truth = ab.truth_table(isolated_batch, i)
        assert len(truth) == 1 and res.n_objects >= 1
        d = np.hypot(res.catalog["x"] - truth["x"][0], res.catalog["y"] - truth["y"][0])
        k = int(np.argmin(d))
        assert d[k] < 1.0
        inside = res.segmentation == k + 1
        for b, band in ((2, "lsst_r"), (3, "lsst_i")):
            meas = res.catalog[f"flux_{band}"][k]
            err = res.catalog[f"flux_err_{band}"][k]
            # SEP's flux is isophotal: it equals BTK's noiseless isolated light inside the
            # segment within the noise (BTK's galaxy Poisson noise is included in 5 sigma) ...
            iso_in_segment = isolated_batch.isolated_images[i, 0, b][inside].sum()
            assert abs(meas - iso_in_segment) < 5 * err, (i, band, meas, iso_in_segment, err)
            # ... and misses the wings below 1.5 sigma: 2-20 % of i = 20-24 galaxies at LSST
            # 10-year depth
            assert 0.75 < meas / truth[f"flux_{band}"][0] < 1.0 + 5 * err / meas


def test_btk_metrics_equal_ours_on_the_same_inputs(blended_batch):
    results = ab.deblend_blend_batch(blended_batch, sep_scene)
    examples = [ab.to_deblend_example(r, blended_batch.blend_images[i], MAX_N)
                for i, r in enumerate(results)]
    deblend_batch = btk.blend_batch.DeblendBatch(
        6, MAX_N, [e.catalog for e in examples], 6, 120,
        np.array([e.segmentation for e in examples]),
        np.array([e.deblended_images for e in examples]))
    theirs = ab.btk_metrics(blended_batch, deblend_batch, max_sep=5.0)
    ours = ab.our_metrics(blended_batch, results, max_sep=5.0)
    assert ours["n_true"].sum() >= 12 and ours["n_matched"].sum() >= 6
    for i in range(6):
        t_pairs = set(zip(theirs["true_index"][i].tolist(), theirs["pred_index"][i].tolist()))
        o_pairs = set(zip(ours["true_index"][i].tolist(), ours["pred_index"][i].tolist()))
        assert t_pairs == o_pairs
    assert ours["completeness"] == pytest.approx(theirs["recall"], abs=1e-12)
    assert ours["purity"] == pytest.approx(theirs["precision"], abs=1e-12)
    assert ours["iou"] == pytest.approx(theirs["iou"], abs=1e-12)
    assert np.isfinite(theirs["ssim"]) and theirs["rmse"] > 0

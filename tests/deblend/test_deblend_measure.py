"""Tests of astrogen.deblend.measure: targets, flux redistribution and the SEP baseline."""
import numpy as np
import pytest
from astropy.table import Table

from astrogen.deblend.measure import (
    fractions_from_segmap,
    labels_from_fractions,
    light_fractions,
    measure_fractions,
    ownership_labels,
    segmentation_classes,
    sep_deblend,
)
from astrogen.deblend.metrics import iou_per_object
from astrogen.errors import ConfigError

H = W = 64


def gaussian(x0, y0, sigma, flux):
    yy, xx = np.indices((H, W), dtype=np.float64)
    return flux * np.exp(-((xx - x0) ** 2 + (yy - y0) ** 2) / (2 * sigma**2)) / (
        2 * np.pi * sigma**2)


@pytest.fixture
def two_blobs():
    models = np.stack([gaussian(20, 30, 2.0, 5000.0), gaussian(45, 32, 2.5, 3000.0)])
    noise = np.random.default_rng(1).normal(0, 1.0, (H, W))
    return models, models.sum(0) + noise


def test_light_fractions_sum_to_one_and_order(two_blobs):
    models, _ = two_blobs
    f, order = light_fractions(models[::-1], 0.05, max_objects=3, return_order=True)
    assert f.shape == (H, W, 4)
    np.testing.assert_allclose(f.sum(-1), 1.0, atol=1e-12)
    assert order.tolist() == [1, 0, -1]  # brightest first, empty third slot
    assert np.all(f[..., 3] == 0) and f[30, 20, 1] > 0.99 and f[0, 0, 0] > 0.99
    classes = segmentation_classes(models, 1.0)
    assert set(np.unique(classes)) <= {0, 1, 2} and classes[30, 20] == 1
    own = ownership_labels(models, 1.0)
    assert own[30, 20] == 1 and own[32, 45] == 2 and own[0, 0] == 0
    with pytest.raises(ConfigError):
        light_fractions(models, 0.0)


def test_flux_redistribution_conserves_total_flux(two_blobs):
    models, image = two_blobs
    rng = np.random.default_rng(3)
    f = rng.dirichlet(np.ones(4), size=(H, W))  # arbitrary fractions summing to one
    t = measure_fractions(image, f)
    total = image.sum()
    assert t["flux"].sum() + t.meta["background_flux"] == pytest.approx(total, rel=1e-10)
    assert t.meta["total_flux"] == pytest.approx(total)
    # multi-band: conserved band by band
    cube = np.stack([image, 2 * image, -image], axis=-1)
    tb = measure_fractions(cube, f, noise_sigma=np.ones((H, W, 3)))
    assert tb["flux"].shape == (3, 3)
    np.testing.assert_allclose(tb["flux"].sum(0) + tb.meta["background_flux"], cube.sum((0, 1)))


def test_redistribution_with_true_fractions(two_blobs):
    models, image = two_blobs
    t = measure_fractions(image, light_fractions(models, 0.05), noise_sigma=1.0,
                          zero_point=25.0, flux_unit="nJy")
    assert isinstance(t, Table) and len(t) == 2
    np.testing.assert_allclose(t["flux"], [5000, 3000], rtol=0.02)
    np.testing.assert_allclose(t["x"], [20, 45], atol=0.2)
    np.testing.assert_allclose(t["y"], [30, 32], atol=0.2)
    assert np.all(t["detected"]) and np.all(t["flux_err"] > 0)
    assert str(t["flux"].unit) == "nJy" and str(t["x"].unit) == "pix"
    assert "image" in t["flux"].description or "nJy" in t["flux"].description
    assert t["mag"][0] == pytest.approx(25 - 2.5 * np.log10(t["flux"][0]))


def test_measure_empty_and_single_galaxy():
    rng = np.random.default_rng(4)
    noise = rng.normal(0, 1.0, (H, W))
    # empty scene: truth fractions put everything in the background
    f = light_fractions(np.zeros((2, H, W)), 0.05)
    t = measure_fractions(noise, f, noise_sigma=1.0)
    assert len(t) == 2 and np.all(t["flux"] == 0) and not np.any(t["detected"])
    assert np.all(np.isnan(t["x"]))
    cat, seg = sep_deblend(noise, 1.0, thresh=5.0)
    assert len(cat) == 0 and "flux" in cat.colnames and not seg.any()
    # single isolated galaxy
    gal = gaussian(31.3, 28.7, 2.2, 4000.0)
    img = gal + noise
    t = measure_fractions(img, light_fractions(gal[None], 0.05), noise_sigma=1.0)
    assert len(t) == 1 and t["flux"][0] == pytest.approx(4000, rel=0.03)
    cat, seg = sep_deblend(img, 1.0)
    assert len(cat) == 1
    assert cat["flux"][0] == pytest.approx(4000, rel=0.03)
    assert (cat["x"][0], cat["y"][0]) == pytest.approx((31.3, 28.7), abs=0.2)
    # SEP segmentation measured by redistribution gives the same segment sums
    tf = measure_fractions(img, fractions_from_segmap(seg))
    assert tf["flux"][0] == pytest.approx(cat["flux"][0])


def test_sep_two_separated_blobs(two_blobs):
    models, image = two_blobs
    cat, seg = sep_deblend(image, 1.0, aperture_radius=8.0, zero_point=25.0)
    assert len(cat) == 2
    order = np.argsort(cat["x"])
    np.testing.assert_allclose(np.asarray(cat["flux"])[order], [5000, 3000], rtol=0.05)
    np.testing.assert_allclose(np.asarray(cat["flux_aper"])[order], [5000, 3000], rtol=0.05)
    np.testing.assert_allclose(np.asarray(cat["x"])[order], [20, 45], atol=0.3)
    assert seg.shape == image.shape and set(np.unique(seg)) == {0, 1, 2}
    assert cat.meta["deblend_nthresh"] == 32 and str(cat["x"].unit) == "pix"
    assert all(cat[c].description for c in cat.colnames)
    # the SEP segments overlap the truth ownership well
    ious = iou_per_object(ownership_labels(models, 1.0), seg)
    assert np.all(ious["iou"] > 0.8)
    assert labels_from_fractions(fractions_from_segmap(seg)).tolist() == seg.tolist()


def test_sep_bad_arguments():
    img = np.zeros((16, 16))
    with pytest.raises(ConfigError, match="noise_sigma"):
        sep_deblend(img, 0.0)
    with pytest.raises(ConfigError, match="deblend_cont"):
        sep_deblend(img, 1.0, deblend_cont=2.0)
    with pytest.raises(ConfigError, match="image"):
        sep_deblend(np.zeros((4, 4, 2)), 1.0)

"""Survey-aware scene deblending (astrogen.deblend.survey, astrogen.api.deblend): the image's
pixel scale, bands and PSF are checked against the model card, never silently ignored."""
import numpy as np
import pytest

import astrogen
from astrogen.deblend.survey import check_image_survey, deblend_survey_scene
from astrogen.errors import ConfigError

CARD = {"survey": "lsst", "bands": ["lsst_g", "lsst_r", "lsst_i"], "pixel_scale": 0.2,
        "pixel_scale_tolerance": 0.05, "psf_fwhm": [0.8, 0.8, 0.8]}


def test_pixel_scale_outside_the_model_range_is_refused_naming_the_key():
    assert check_image_survey(CARD, 0.205, ["lsst_g", "lsst_r", "lsst_i"]) == [0, 1, 2]
    with pytest.raises(ConfigError, match=r"^pixel_scale: .*trained at 0.2") as e:
        check_image_survey(CARD, 0.06, ["lsst_g", "lsst_r", "lsst_i"])
    assert e.value.received["pixel_scale"] == 0.06


def test_bands_are_matched_by_name_in_any_order_or_refused():
    assert check_image_survey(CARD, 0.2, ["i", "g", "r"]) == [1, 2, 0]
    with pytest.raises(ConfigError, match=r"^bands: .*band lsst_i is missing"):
        check_image_survey(CARD, 0.2, ["g", "r"])
    with pytest.raises(ConfigError, match=r"^bands: .*not the model's"):
        check_image_survey(CARD, 0.2, ["g", "r", "i", "z"])


def test_psf_far_from_the_model_is_refused():
    check_image_survey(CARD, 0.2, ["g", "r", "i"], psf_fwhm=1.0)
    with pytest.raises(ConfigError, match=r"^psf:"):
        check_image_survey(CARD, 0.2, ["g", "r", "i"], psf_fwhm=0.1)


@pytest.fixture(scope="module")
def tiny_model_file(tmp_path_factory):
    import keras

    from astrogen.models.scene_deblender import SceneDeblender

    keras.utils.set_random_seed(0)
    m = SceneDeblender(size=16, n_bands=3, filters=(4, 8), card=dict(CARD, temperature=1.0))
    return m.save(tmp_path_factory.mktemp("scene") / "tiny.keras")


def _blobs(hwc=True):
    yy, xx = np.mgrid[0:40, 0:48]
    img = np.zeros((3, 40, 48))
    for x, y in ((12.3, 14.1), (30.6, 22.4)):
        img += 500 * np.exp(-0.5 * ((xx - x) ** 2 + (yy - y) ** 2) / 2.0 ** 2)[None]
    img += np.random.default_rng(0).normal(0, 1, img.shape)
    return np.moveaxis(img, 0, -1) if hwc else img


def test_multiband_array_is_read_as_bands_with_the_network(tiny_model_file):
    hwc = _blobs()
    for method in ("unet", "prob_unet"):
        res = deblend_survey_scene(hwc, pixel_scale=0.2, bands=["g", "r", "i"], method=method,
                                   model=str(tiny_model_file), noise_sigma=1.0, n_samples=3)
        assert res.segmentation.shape == (40, 48)
        assert res.n_objects == 2
        assert res.model["survey"] == "lsst"
        assert {"flux_g", "flux_err_g", "flux_i"} <= set(res.catalog.colnames)
        if method == "prob_unet":
            assert res.uncertainty.shape == (40, 48)
            inside = res.segmentation > 0  # defined on the segmented pixels only
            assert inside.any() and np.all(np.isnan(res.uncertainty[~inside]))
            u = res.uncertainty[inside]
            assert 0 <= u.min() and u.max() <= 1
    # the same scene given (C, H, W) gives the same catalog
    a = deblend_survey_scene(_blobs(False), pixel_scale=0.2, bands=["g", "r", "i"],
                             method="unet", model=str(tiny_model_file), noise_sigma=1.0)
    assert np.allclose(a.catalog["flux_g"], res.catalog["flux_g"])


def test_network_refuses_another_pixel_scale(tiny_model_file):
    with pytest.raises(ConfigError, match=r"^pixel_scale:"):
        deblend_survey_scene(_blobs(), pixel_scale=0.06, bands=["g", "r", "i"], method="unet",
                             model=str(tiny_model_file), noise_sigma=1.0)


def test_api_requires_pixel_scale_and_bands():
    img = _blobs()
    with pytest.raises(ConfigError, match=r"^pixel_scale: is required"):
        astrogen.deblend(img, method="sep", bands=["g", "r", "i"])
    with pytest.raises(ConfigError, match=r"^bands: is required"):
        astrogen.deblend(img, method="sep", pixel_scale=0.2)
    res = astrogen.deblend(img, method="sep", pixel_scale=0.2, bands=["g", "r", "i"],
                           psf=0.8)
    assert res.n_objects == 2 and res.segmentation.shape == (40, 48)
    # a (H, W, C) array whose C matches nothing is refused, never read as a stack of scenes
    with pytest.raises(ConfigError, match=r"^bands:"):
        astrogen.deblend(img, method="sep", pixel_scale=0.2, bands=["g", "r"])

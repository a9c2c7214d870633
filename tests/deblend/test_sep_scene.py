"""sep_scene: the SEP baseline with the scene-deblender signature, returning SceneResult."""
import galsim
import numpy as np
import pytest
from astropy.wcs import WCS

from astrogen.deblend.result import SceneResult
from astrogen.deblend.sep_scene import sep_scene
from astrogen.errors import ConfigError

H = W = 80
SIGMA = 2.0


def _scene(positions, sed=(1.0,), flux=4000.0, noise=SIGMA, seed=0):
    """(C, H, W) scene of round Gaussians (sigma 1.5 pix) and the per-band true fluxes."""
    img = np.zeros((len(sed), H, W))
    for x, y in positions:
        g = galsim.Gaussian(sigma=1.5, flux=flux).drawImage(
            nx=W, ny=H, scale=1.0, offset=(x - (W - 1) / 2, y - (H - 1) / 2)).array
        img += np.asarray(sed)[:, None, None] * g
    rng = np.random.default_rng(seed)
    return img + rng.normal(0.0, noise, img.shape)


def _grid(n):
    xs = [12 + 18 * (k % 4) for k in range(n)]
    ys = [12 + 18 * (k // 4) for k in range(n)]
    return list(zip(xs, ys))


@pytest.mark.parametrize("n", [0, 1, 2, 7])
def test_every_separated_object_is_found_where_it_is(n):
    pos = _grid(n)
    res = sep_scene(_scene(pos), pixel_scale=0.2, bands=("lsst_i",), noise_sigma=SIGMA)
    assert isinstance(res, SceneResult) and res.n_objects == n
    assert res.fractions.shape == (n, H, W)
    if n:
        found = np.column_stack([res.catalog["x"], res.catalog["y"]])
        for x, y in pos:
            assert np.min(np.hypot(found[:, 0] - x, found[:, 1] - y)) < 0.3
        # the peak pixel is the pixel of the centre
        assert set(zip(res.catalog["peak_x"], res.catalog["peak_y"])) == set(pos)
        assert np.all(np.asarray(res.catalog["flux_lsst_i"]) > 0.95 * 4000)


def test_bands_axis_is_read_as_bands_with_their_colours():
    sed = (0.5, 1.0, 2.0)
    res = sep_scene(_scene(_grid(3), sed=sed), pixel_scale=0.2,
                    bands=("lsst_g", "lsst_r", "lsst_i"), noise_sigma=[SIGMA] * 3)
    assert res.n_objects == 3 and res.bands == ("lsst_g", "lsst_r", "lsst_i")
    g, r, i = (np.asarray(res.catalog[f"flux_lsst_{b}"]) for b in "gri")
    np.testing.assert_allclose(i / r, 2.0, rtol=0.02)
    np.testing.assert_allclose(g / r, 0.5, rtol=0.03)


def test_noiseless_segment_fluxes_add_up_to_the_light_in_the_segments():
    img = _scene(_grid(4), sed=(1.0, 0.3), noise=0.0)
    res = sep_scene(img, pixel_scale=0.2, bands=("a", "b"), noise_sigma=[SIGMA, SIGMA])
    inside = res.segmentation > 0
    for b, name in enumerate(("a", "b")):
        assert np.isclose(np.sum(res.catalog[f"flux_{name}"]), img[b][inside].sum())
    # one-hot fractions cover exactly the segments
    assert np.array_equal(res.fractions.sum(axis=0) > 0, inside)


def test_sky_positions_follow_the_wcs():
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crpix = [40.5, 40.5]
    w.wcs.crval = [150.0, 2.0]
    w.wcs.cdelt = [-0.2 / 3600, 0.2 / 3600]
    res = sep_scene(_scene(_grid(2)), pixel_scale=0.2, bands="i", wcs=w, noise_sigma=SIGMA)
    ra, dec = w.pixel_to_world_values(res.catalog["x"], res.catalog["y"])
    np.testing.assert_allclose(res.catalog["ra"], ra)
    np.testing.assert_allclose(res.catalog["dec"], dec)
    no_wcs = sep_scene(_scene(_grid(2)), pixel_scale=0.2, bands="i", noise_sigma=SIGMA)
    assert np.all(np.isnan(no_wcs.catalog["ra"]))


def test_noise_is_estimated_when_not_given():
    res = sep_scene(_scene(_grid(3)), pixel_scale=0.2, bands=("i",))
    assert res.n_objects == 3
    np.testing.assert_allclose(res.catalog["flux_err_i"],
                               SIGMA * np.sqrt(res.catalog["npix"]), rtol=0.1)


@pytest.mark.parametrize("kwargs, key", [
    ({"bands": ("g", "r")}, "bands"),
    ({"pixel_scale": 0.0}, "pixel_scale"),
    ({"pixel_scale": "fine"}, "pixel_scale"),
    ({"noise_sigma": -1.0}, "noise_sigma"),
    ({"noise_sigma": np.ones((3, 3))}, "noise_sigma"),
])
def test_bad_inputs_name_the_key(kwargs, key):
    args = {"pixel_scale": 0.2, "bands": ("i",), "noise_sigma": SIGMA} | kwargs
    with pytest.raises(ConfigError, match=key):
        sep_scene(_scene(_grid(1)), **args)


def test_a_stack_of_four_dimensions_is_refused():
    with pytest.raises(ConfigError, match="image"):
        sep_scene(np.zeros((2, 3, H, W)), pixel_scale=0.2, bands=("a", "b"))

"""Scene deblending (astrogen.deblend.scene): any number of objects, bands read as bands,
fluxes conserved, sky positions from the WCS."""
import numpy as np
import pytest

from astrogen.deblend.result import SceneResult
from astrogen.deblend.scene import (assemble_fractions, cutout_inputs, deblend_scene,
                                    detection_image, read_bands, true_labels)
from astrogen.errors import ConfigError
from astrogen.physics.scene import Field

PS = 0.2
FWHM = 0.8  # arcsec, 4 pixels
BANDS = ["lsst_g", "lsst_r", "lsst_i"]


def _scene(positions, size=64, fluxes=None, sigma_pix=1.6, bands=3, noise=0.0, seed=0):
    """(C, H, W) image of round Gaussians at ``positions`` (x, y) and per-object models."""
    yy, xx = np.mgrid[0:size, 0:size]
    n = len(positions)
    fluxes = np.full(n, 3000.0) if fluxes is None else np.asarray(fluxes, float)
    models = np.zeros((n, bands, size, size))
    for i, (x, y) in enumerate(positions):
        g = np.exp(-0.5 * ((xx - x) ** 2 + (yy - y) ** 2) / sigma_pix ** 2)
        g /= g.sum()
        for b in range(bands):
            models[i, b] = fluxes[i] * (1.0 + 0.2 * b) * g
    img = models.sum(axis=0) if n else np.zeros((bands, size, size))
    if noise:
        img = img + np.random.default_rng(seed).normal(0, noise, img.shape)
    return img, models


def _grid(k, size=64, step=14):
    pts = [(10 + step * (i % 4), 10 + step * (i // 4)) for i in range(k)]
    return np.array(pts, float) + 0.3


def _mark_predictor(inputs, n_samples):
    """Fraction = the target's share of the marks (target + neighbours), smoothed: a
    deterministic stand-in for a network that owns the pixels nearest its detection."""
    c = inputs.shape[-1] - 2
    tgt, nb = inputs[..., c], inputs[..., c + 1]
    from scipy.ndimage import gaussian_filter

    t = np.stack([gaussian_filter(a, 3.0) for a in tgt])
    o = np.stack([gaussian_filter(a, 3.0) for a in nb])
    f = t / (t + o + 1e-12)
    return np.repeat(f[None], n_samples, axis=0)


@pytest.mark.parametrize("k", [0, 1, 2, 7])
@pytest.mark.parametrize("method", ["sep", "unet"])
def test_any_number_of_objects(k, method):
    pos = _grid(k)
    img, _ = _scene(pos, noise=1.0)
    res = deblend_scene(img, pixel_scale=PS, bands=BANDS, noise_sigma=1.0, psf_fwhm=FWHM,
                        method=method, predictor=_mark_predictor)
    assert isinstance(res, SceneResult)
    assert res.n_objects == k
    assert res.segmentation.shape == (64, 64)
    assert set(np.unique(res.segmentation)) <= set(range(k + 1))
    if k:
        d = np.hypot(res.catalog["x"][:, None] - pos[None, :, 0],
                     res.catalog["y"][:, None] - pos[None, :, 1])
        assert np.all(d.min(axis=1) < 1.0)  # every object found where it is
        assert len(set(np.argmin(d, axis=1))) == k  # one detection per object
    if method == "unet":
        assert res.fractions.shape == (k, 64, 64)
        assert np.all(res.fractions.sum(axis=0) <= 1 + 1e-5)


def test_fifty_objects_and_crowding():
    rng = np.random.default_rng(4)
    gx, gy = np.meshgrid(np.arange(10), np.arange(5))
    pos = np.c_[8 + 12 * gx.ravel(), 8 + 12 * gy.ravel()] + rng.uniform(-2, 2, (50, 2))
    img, _ = _scene(pos, size=128, noise=1.0, fluxes=rng.uniform(2e3, 2e4, 50))
    res = deblend_scene(img, pixel_scale=PS, bands=BANDS, noise_sigma=1.0, psf_fwhm=FWHM,
                        method="unet", predictor=_mark_predictor)
    assert res.n_objects == 50
    d = np.hypot(res.catalog["x"][:, None] - pos[None, :, 0],
                 res.catalog["y"][:, None] - pos[None, :, 1])
    assert len(set(np.argmin(d, axis=1))) == 50 and np.all(d.min(axis=1) < 1.0)
    assert np.all(res.fractions.sum(axis=0) <= 1 + 1e-5)


def test_noiseless_fluxes_sum_to_the_scene_flux():
    pos = np.array([[30.2, 31.1], [35.4, 33.0], [20.0, 44.7]])  # a blended pair + one
    img, models = _scene(pos, fluxes=[5000.0, 3000.0, 2000.0])
    res = deblend_scene(img, pixel_scale=PS, bands=BANDS, noise_sigma=1e-3, psf_fwhm=FWHM,
                        method="unet", predictor=_mark_predictor)
    cat = res.catalog
    total = img.sum(axis=(1, 2))
    for j, b in enumerate(BANDS):
        s = float(np.sum(cat[f"flux_{b}"]))
        # exact bookkeeping: objects + unassigned = image
        assert s + cat.meta["unassigned_flux"][j] == pytest.approx(total[j], rel=1e-6)
        # in a noiseless scene the whole footprint is shared out: nothing is lost
        assert s == pytest.approx(total[j], rel=1e-3)


def test_read_as_bands_never_as_a_stack():
    img, _ = _scene(_grid(2, size=64), size=64)
    hwc = np.moveaxis(img, 0, -1)[:69, :57]  # (H, W, 3)
    a = read_bands(hwc, BANDS)
    assert a.shape == (3, 64, 57)
    res = deblend_scene(hwc, pixel_scale=PS, bands=BANDS, noise_sigma=1.0, psf_fwhm=FWHM,
                        method="sep")
    assert res.segmentation.shape == (64, 57)
    assert res.n_objects == 2
    assert read_bands(img, BANDS).shape == (3, 64, 64)
    with pytest.raises(ConfigError, match="^bands:.*both the first and the last"):
        read_bands(np.zeros((3, 8, 3)), BANDS)
    with pytest.raises(ConfigError, match="^bands:.*never a stack"):
        read_bands(np.zeros((5, 8, 8)), BANDS)
    with pytest.raises(ConfigError, match="^bands:"):
        read_bands(np.zeros((8, 8)), BANDS)


def test_ra_dec_agree_with_the_wcs():
    wcs = Field(64, 64, PS, ra=53.1, dec=-28.1).wcs()
    pos = _grid(3)
    img, _ = _scene(pos, noise=1.0)
    for method in ("sep", "unet"):
        res = deblend_scene(img, pixel_scale=PS, bands=BANDS, noise_sigma=1.0, psf_fwhm=FWHM,
                            method=method, predictor=_mark_predictor, wcs=wcs)
        ra, dec = wcs.all_pix2world(res.catalog["x"], res.catalog["y"], 0)
        assert np.allclose(res.catalog["ra"], ra) and np.allclose(res.catalog["dec"], dec)
        # and the true objects' sky positions within 1 pixel
        tra, tdec = wcs.all_pix2world(pos[:, 0], pos[:, 1], 0)
        d = np.hypot((np.asarray(res.catalog["ra"])[:, None] - tra[None]) * np.cos(
            np.radians(-28.1)), np.asarray(res.catalog["dec"])[:, None] - tdec[None]) * 3600
        assert np.all(d.min(axis=1) < PS)
        assert res.catalog["ra"].unit == "deg"


def test_detection_image_has_unit_noise_and_weights_bands():
    rng = np.random.default_rng(1)
    sig = np.array([1.0, 2.0, 4.0])
    img = rng.normal(0, 1, (3, 200, 200)) * sig[:, None, None]
    det = detection_image(img, sig)
    assert det.std() == pytest.approx(1.0, rel=0.02)


def test_cutouts_and_assembly_are_inverse_on_the_cutout():
    pos = np.array([[10.3, 10.3], [50.3, 50.3]])  # cut-outs that do not overlap
    img, _ = _scene(pos)
    x, origins = cutout_inputs(img, 1.0, pos, 16)
    assert x.shape == (2, 16, 16, 5)
    # the target mark peaks at the detection, the neighbour mark at the other one
    assert np.unravel_index(np.argmax(x[0, ..., 3]), (16, 16)) == (8, 8)
    f = np.full((2, 16, 16), 0.8)
    sc = assemble_fractions(f, origins, (64, 64))
    assert sc.shape == (2, 64, 64)
    r0, c0 = origins[0]
    assert np.allclose(sc[0, r0:r0 + 16, c0:c0 + 16], 0.8)
    # overlapping cut-outs are normalised to at most 1
    sc2 = assemble_fractions(np.full((2, 16, 16), 0.9), np.array([[0, 0], [4, 4]]), (32, 32))
    assert sc2.sum(axis=0).max() == pytest.approx(1.0)


def test_true_labels_follow_the_dominant_object_and_the_matching():
    m = np.zeros((2, 4, 4))
    m[0, :, :2] = 5.0
    m[1, :, 2:] = 3.0
    m[1, 0, 0] = 9.0
    lab = true_labels(m, np.array([1, -1]))  # detection 0 is true object 1; object 0 missed
    assert lab[0, 0] == 1 and lab[1, 0] == 0 and lab[1, 3] == 1


def test_owner_correct_scores_segmented_pixels_against_the_light_owner():
    from astrogen.deblend.scene import owner_correct

    m = np.zeros((2, 4, 4))
    m[0, :, :2] = 5.0
    m[1, :, 2:] = 3.0
    seg = np.zeros((4, 4), np.int32)
    seg[:, :3] = 1  # detection 1 takes column 2, owned by true object 1
    seg[0, 0] = 0
    ok = owner_correct(m, np.array([0, 1]), seg)
    assert ok[1, 0] and ok[1, 1] and not ok[1, 2] and not ok[0, 0] and not ok[1, 3]
    assert not owner_correct(m, np.array([-1, 1]), seg).any()  # spurious detection 1


def test_assigned_confidence_is_the_tempered_mean_of_the_assigned_class():
    from astrogen.deblend.calibration import tempered_exact
    from astrogen.deblend.scene import assigned_confidence

    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(3), size=(5, 6, 6))  # (ns, H, W, K)
    probs = np.moveaxis(p, -1, 1)  # (ns, K, H, W)
    seg = np.argmax(probs.mean(0), axis=0)
    c = assigned_confidence(probs, seg, 2.0)
    inside = seg > 0
    assert np.all(np.isnan(c[~inside]))
    want = np.take_along_axis(tempered_exact(p, 2.0).mean(0), seg[..., None], -1)[..., 0]
    np.testing.assert_allclose(c[inside], want[inside])
    c1 = assigned_confidence(probs, seg, 1.0)
    assert np.nanmean(c) < np.nanmean(c1)


def test_prob_unet_uncertainty_lives_on_the_segmentation():
    pos = _grid(2)
    img, _ = _scene(pos, noise=1.0)
    res = deblend_scene(img, pixel_scale=PS, bands=BANDS, noise_sigma=1.0, psf_fwhm=FWHM,
                        method="prob_unet", predictor=_mark_predictor, n_samples=2)
    inside = res.segmentation > 0
    assert inside.any() and np.all(np.isnan(res.uncertainty[~inside]))
    u = res.uncertainty[inside]
    assert np.all((u >= 0) & (u <= 1))


def test_bad_inputs_name_their_key():
    img = np.zeros((3, 16, 16))
    with pytest.raises(ConfigError, match="^noise_sigma:"):
        deblend_scene(img, pixel_scale=PS, bands=BANDS, noise_sigma=[1, 2], psf_fwhm=FWHM,
                      method="sep")
    with pytest.raises(ConfigError, match="^pixel_scale:"):
        deblend_scene(img, pixel_scale=-1, bands=BANDS, noise_sigma=1, psf_fwhm=FWHM,
                      method="sep")
    with pytest.raises(ConfigError, match="^model:"):
        deblend_scene(img, pixel_scale=PS, bands=BANDS, noise_sigma=1, psf_fwhm=FWHM,
                      method="unet")
    with pytest.raises(ConfigError, match="^method:"):
        deblend_scene(img, pixel_scale=PS, bands=BANDS, noise_sigma=1, psf_fwhm=FWHM,
                      method="scarlet")


def test_an_object_larger_than_its_cutout_keeps_its_outer_light():
    """Issue 15: a galaxy much larger than the 32x32 cut-out used to get a square segment
    (the light outside its cut-out went to nobody: ~79 % of a sigma = 12 px Gaussian lies in
    the cut-out); its SEP segment now carries its fraction beyond the cut-out."""
    size, cut = 128, 32
    yy, xx = np.mgrid[0:size, 0:size]
    pos = np.array([[50.3, 60.2], [105.4, 62.7]])
    big = np.exp(-0.5 * ((xx - pos[0, 0]) ** 2 + (yy - pos[0, 1]) ** 2) / 12.0 ** 2)
    small = np.exp(-0.5 * ((xx - pos[1, 0]) ** 2 + (yy - pos[1, 1]) ** 2) / 1.6 ** 2)
    models = np.stack([2e5 * big / big.sum(), 2e3 * small / small.sum()])
    img = np.repeat(models.sum(axis=0)[None], 3, axis=0) * np.array([1.0, 1.2, 1.4])[:, None,
                                                                                   None]
    res = deblend_scene(img, pixel_scale=PS, bands=BANDS, noise_sigma=1e-2, psf_fwhm=FWHM,
                        method="unet", predictor=_mark_predictor, cutout_size=cut)
    assert res.n_objects == 2
    k = int(np.argmin(np.hypot(res.catalog["x"] - pos[0, 0], res.catalog["y"] - pos[0, 1])))
    # share of the big galaxy's true light given to its detection
    share = float((models[0] * res.fractions[k]).sum() / models[0].sum())
    assert share > 0.9
    # its segment reaches well beyond its cut-out on every side (not a square)
    rows, cols = np.nonzero(res.segmentation == k + 1)
    r0, c0 = int(np.floor(pos[0, 1] + 0.5)) - cut // 2, int(np.floor(pos[0, 0] + 0.5)) - cut // 2
    assert rows.min() < r0 - 8 and rows.max() > r0 + cut + 8
    assert cols.min() < c0 - 8 and cols.max() > c0 + cut + 8
    # the small neighbour keeps its own light, and nothing is lost in a noiseless scene
    assert float((models[1] * res.fractions[1 - k]).sum() / models[1].sum()) > 0.9
    for j, b in enumerate(BANDS):
        assert float(np.sum(res.catalog[f"flux_{b}"])) == pytest.approx(img[j].sum(), rel=1e-3)


def test_assembly_extends_fractions_by_the_sep_segment_outside_the_cutout():
    segmap = np.zeros((32, 32), np.int32)
    segmap[2:30, 2:30] = 1
    segmap[20:24, 26:30] = 2  # a neighbour whose cut-out does not cover these pixels
    f = np.stack([np.full((8, 8), 0.7), np.ones((8, 8))])
    origins = np.array([[12, 12], [24, 0]])
    sc = assemble_fractions(f, origins, (32, 32), segmap=segmap)
    assert np.allclose(sc[0, 12:20, 12:20], 0.7)  # inside its cut-out: the network's value
    assert np.allclose(sc[0, 2:12, 2:30], 1.0) and sc[0, 0, 0] == 0.0  # its segment outside
    assert np.allclose(sc[1, 20:24, 26:30], 1.0) and np.all(sc[0, 20:24, 26:30] == 0)
    # under a neighbour's cut-out the network decides, not the segment
    assert np.all(sc[0, 24:30, 2:8] == 0) and np.allclose(sc[1, 24:30, 2:8], 1.0)
    assert sc.sum(axis=0).max() <= 1 + 1e-6
    # without a segmentation the outside stays empty (the pre-issue-15 behaviour)
    sc0 = assemble_fractions(f, origins, (32, 32))
    assert sc0[0, 2:12].sum() == 0


def _greedy_predictor(inputs, n_samples):
    """A network at its worst on noise: fraction 1 on every pixel of the cut-out, the
    corners of pure noise included (the square segments of issue 15)."""
    return np.ones((n_samples,) + inputs.shape[:3])


@pytest.mark.parametrize("method,seed", [("unet", 1), ("unet", 3), ("prob_unet", 3)])
def test_instance_map_stays_on_the_galaxy_not_on_its_cutout(method, seed):
    from scipy.ndimage import binary_dilation

    img, models = _scene([(31.3, 30.6)], fluxes=[4000.0], sigma_pix=2.0, noise=1.0,
                         seed=seed)
    res = deblend_scene(img, pixel_scale=PS, bands=BANDS, noise_sigma=1.0, psf_fwhm=FWHM,
                        method=method, predictor=_greedy_predictor, n_samples=2)
    # the galaxy's isophote: its noiseless light above 1 sigma of the detection image (the
    # benchmark's true footprint); "far outside" = more than one PSF FWHM (4 pixels) beyond
    iso = detection_image(models[0], 1.0) > 1.0
    near = binary_dilation(iso, iterations=4)
    k = int(np.argmin(np.hypot(res.catalog["x"] - 31.3, res.catalog["y"] - 30.6))) + 1
    own = res.segmentation == k
    assert (own & iso).sum() >= 0.8 * iso.sum()  # the galaxy keeps its isophote
    # without the footprint the whole 32x32 cut-out was the galaxy's: 1024 pixels, 460 of
    # them far outside; a noise spur attached to the footprint may reach a few
    far = int((own & ~near).sum())
    assert far <= 0.02 * own.sum(), f"{far} of {own.sum()} pixels far outside"
    assert ((res.segmentation > 0) & ~near).sum() <= 0.02 * own.sum()
    if method == "prob_unet":  # no confidence claimed off the objects
        assert np.all(np.isnan(res.uncertainty[res.segmentation == 0]))

"""Survey-grade rendering: whole galaxies, per-band fluxes, lensing in observe, stars, bulge+disk
components, ragged stamp outputs (issue 12)."""
import logging

import galsim
import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from astrogen.batch import StampBatch
from astrogen.errors import CatalogError
from astrogen.physics.render import draw_intrinsic, enclosed_fraction, profile_components
from astrogen.physics.scene import Field
from astrogen.physics.surveys import SURVEYS
from astrogen.stages.base import StageContext
from astrogen.stages.galsim_stages import Observe, ParametricGalaxies, Scene
from astrogen.stages.output import StampsOutput


def _ctx(stage, tmp_path, name="s"):
    work = tmp_path / f"work_{name}"
    work.mkdir(parents=True, exist_ok=True)
    stage.setup(StageContext(name=name, seed=11, output_dir=tmp_path, work_dir=work))
    return stage


def _galaxies(**cols):
    n = len(next(iter(cols.values())))
    base = {"row_id": np.arange(n), "mag": np.full(n, 20.0), "hlr": np.full(n, 0.5),
            "q": np.full(n, 1.0), "beta": np.zeros(n), "sersic_n": np.full(n, 1.0),
            "bulge_frac": np.full(n, 0.3)}
    base.update(cols)
    return Table(base)


def _field(nx=400, scale=0.2):
    """The scene field a ``catalog.positions`` stage would hand the stages downstream."""
    return Field(nx, nx, scale)


# ----------------------------------------------------------------------------- whole galaxies
@pytest.mark.parametrize("profile", ["sersic", "bulge_disk"])
def test_stamps_hold_995_of_the_largest_and_most_concentrated_profiles(profile):
    # the sampler's extremes: hlr 0.046 to 3.07 arcsec, n 0.3 to 6.2, q 0.05 to 1
    rows = _galaxies(hlr=np.array([3.07, 3.07, 0.046, 1.0]), sersic_n=np.array([6.2, 6.2, 6.2, 0.3]),
                     q=np.array([1.0, 0.05, 0.05, 0.3]), beta=np.array([0.0, 30.0, 45.0, 90.0]),
                     bulge_frac=np.array([0.98, 0.98, 0.98, 0.03]))
    stamps, scales, fracs, profiles = draw_intrinsic(rows, np.ones(len(rows)), None, 0.03,
                                                     profile, max_stamp_size=512)
    assert np.all(fracs >= 0.995)
    assert max(s.shape[0] for s in stamps) <= 512 and scales.max() > 0.03  # giants resampled
    for st, sc, prof in zip(stamps, scales, profiles):
        # light on the same pixel grid in a box 3 times wider: the stamp holds >= 99.5 % of it
        n = st.shape[0]
        big = prof.drawImage(nx=3 * n, ny=3 * n, scale=sc, method="no_pixel").array
        assert st.sum() / big.sum() >= 0.995
        np.testing.assert_allclose(big[n:2 * n, n:2 * n], st, rtol=1e-5, atol=1e-12)


def test_enclosed_fraction_is_a_lower_bound():
    comps = profile_components({"hlr": 0.8, "q": 0.4, "beta": 30.0, "sersic_n": 4.0}, 1.0)
    obj = galsim.Sersic(4.0, half_light_radius=0.8).shear(q=0.4, beta=30 * galsim.degrees)
    for half in (0.5, 2.0, 8.0):
        n = int(2 * half / 0.01)
        inside = obj.drawImage(nx=n, ny=n, scale=0.01, method="no_pixel").array.sum()
        bound = enclosed_fraction(comps, half)
        assert bound <= inside + 2e-3
    assert bound > 0.95 * inside  # and not far below where the box holds most of the light


def test_fixed_stamp_size_cuts_are_flagged_and_logged(caplog):
    rows = _galaxies(hlr=np.array([2.0, 0.1]), sersic_n=np.array([4.0, 1.0]))
    with caplog.at_level(logging.WARNING, logger="astrogen"):
        b = ParametricGalaxies(stamp_size=64).process(rows)
    assert list(b.catalog["flag_truncated"]) == [True, False]
    assert b.catalog["stamp_flux_frac"][0] < 0.9
    assert "flag_truncated" in caplog.text and "1 of 2" in caplog.text


def test_scene_shows_no_stamp_edge_and_holds_the_catalog_flux(tmp_path):
    """A big bright galaxy (hlr 1.5", n=4): the scene equals GalSim's direct drawing of the
    whole profile, so no stamp border shows, and holds its flux to 0.5 %."""
    rows = _galaxies(mag=np.array([17.0]), hlr=np.array([1.5]), sersic_n=np.array([4.0]),
                     q=np.array([0.6]), beta=np.array([20.0]), x=np.array([600.5]),
                     y=np.array([600.5]))
    batch = ParametricGalaxies().process(rows)
    scene = _ctx(Scene(survey="lsst_i", add_noise=False, preview=None).bind_field(_field(1200)),
                 tmp_path)
    scene.consume(0, batch)
    img = scene.canvases["lsst_i"].image.array
    s = SURVEYS["lsst_i"]
    flux = s.electrons(17.0)
    psf = galsim.Kolmogorov(fwhm=s.psf["fwhm"])
    gal = galsim.Sersic(4.0, half_light_radius=1.5, flux=flux).shear(q=0.6, beta=20 * galsim.degrees)
    direct = galsim.Convolve(gal, psf).drawImage(nx=1200, ny=1200, scale=0.2,
                                                center=galsim.PositionD(600.5, 600.5)).array
    assert abs(img.sum() / flux - 1) < 0.005
    assert np.abs(img - direct).max() < 1e-3 * direct.max()
    # no step along any row/column: the largest jump between neighbours away from the core is
    # as smooth as the profile's own
    far = np.hypot(*np.meshgrid(np.arange(1200) - 599.5, np.arange(1200) - 599.5)) > 40
    jump = np.abs(np.diff(img, axis=1))[far[:, 1:]].max()
    assert jump <= 1.01 * np.abs(np.diff(direct, axis=1))[far[:, 1:]].max()
    # away from the core, the scene differs from the whole profile by < 1 % of the noise sigma
    # (the box grows until the light outside it is below one pixel's noise)
    assert np.abs(img - direct)[far].max() < 0.01 * s.noise_sigma


# ------------------------------------------------------------------------------------- bands
@pytest.mark.parametrize("band", ["lsst_u", "lsst_r", "hsc_i", "des_z", "euclid_vis", "euclid_h"])
def test_band_fluxes_match_magnitudes_and_surveycodex_zero_points(band):
    import surveycodex as sc

    survey, filt = {"lsst_u": ("LSST", "u"), "lsst_r": ("LSST", "r"), "hsc_i": ("HSC", "i"),
                    "des_z": ("DES", "z"), "euclid_vis": ("Euclid_VIS", "IE"),
                    "euclid_h": ("Euclid_NISP", "HE")}[band]
    f = sc.get_survey(survey).get_filter(filt)
    mags = np.array([21.0, 23.5])
    rows = _galaxies(mag=np.array([25.0, 25.0]), hlr=np.array([0.3, 0.6]))
    rows[f"mag_{band}"] = mags
    batch = ParametricGalaxies().process(rows)
    obs = Observe(survey=band, add_noise=False).process(batch)
    expected = 10 ** (-0.4 * (mags - f.zeropoint.value)) * f.full_exposure_time.value
    np.testing.assert_allclose(obs.fluxes, expected, rtol=5e-3)
    np.testing.assert_allclose(obs.catalog[f"flux_{band}"], expected, rtol=1e-12)


def test_multiband_scene_writes_one_image_per_band_and_needs_each_magnitude(tmp_path):
    rows = _galaxies(mag=np.array([22.0, 22.0]), x=np.array([100.0, 300.0]),
                     y=np.array([200.0, 150.0]))
    rows["mag_lsst_g"] = [21.0, 23.0]
    rows["mag_lsst_r"] = [22.0, 22.0]
    rows["mag_lsst_i"] = [23.0, 21.0]
    batch = ParametricGalaxies().process(rows)
    scene = _ctx(Scene(survey="lsst", bands=["g", "r", "i"], add_noise=False, preview=None,
                       file_name="sc.fits", color_preview="gri.png").bind_field(_field()),
                 tmp_path)
    scene.consume(0, batch)
    files = scene.finalize()
    assert {p.name for p in files} == {"sc_lsst_g.fits", "sc_lsst_r.fits", "sc_lsst_i.fits",
                                       "gri.png"}
    for b in ("g", "r", "i"):
        s = SURVEYS[f"lsst_{b}"]
        with fits.open(tmp_path / f"sc_lsst_{b}.fits") as hl:
            h = hl[0].header
            assert h["FILTER"] == f"lsst_{b}" and h["ZP1ES"] == s.zero_point
            assert h["CTYPE1"] == "RA---TAN" and h["BUNIT"] == "electron"
            total = hl["NOISELESS"].data.sum()
        assert total == pytest.approx(s.electrons(rows[f"mag_lsst_{b}"]).sum(), rel=5e-3)
    del rows["mag_lsst_r"]
    scene2 = _ctx(Scene(survey="lsst", bands=["g", "r"], add_noise=False,
                        preview=None).bind_field(_field()), tmp_path, "s2")
    with pytest.raises(CatalogError, match="mag_lsst_r"):
        scene2.consume(0, ParametricGalaxies().process(rows))


def test_same_morphology_in_every_band_bulge_disk_colours_optional():
    rows = _galaxies(mag=np.array([22.0]), bulge_frac=np.array([0.5]))
    rows["hlr_bulge"], rows["hlr_disk"] = [0.2], [1.0]
    rows["mag_lsst_g"], rows["mag_lsst_i"] = [22.0], [22.0]
    batch = ParametricGalaxies(profile="bulge_disk").process(rows)
    g = Observe(survey="lsst_g", add_noise=False, psf={"type": "Gaussian", "fwhm": 0.7}).process(batch)
    i = Observe(survey="lsst_i", add_noise=False, psf={"type": "Gaussian", "fwhm": 0.7}).process(batch)
    gi, ii = g.stamp(0) / g.stamp(0).sum(), i.stamp(0) / i.stamp(0).sum()
    np.testing.assert_allclose(gi, ii, atol=1e-7)  # same shape, only the flux differs
    rows["bulge_frac_lsst_g"] = [0.1]  # a bluer bulge-poor look in g
    batch = ParametricGalaxies(profile="bulge_disk").process(rows)
    g = Observe(survey="lsst_g", add_noise=False, psf={"type": "Gaussian", "fwhm": 0.7}).process(batch)
    assert g.stamp(0).max() / g.stamp(0).sum() < 0.9 * ii.max()  # less concentrated


# ----------------------------------------------------------------------- bulge+disk components
def test_catsim_like_bulge_disk_components():
    rows = _galaxies(mag=np.array([21.0, 21.0, 21.0]), bulge_frac=np.array([1.0, 0.0, 0.4]),
                     hlr=np.array([9.0, 9.0, 9.0]))  # the shared columns must not be used
    rows["hlr_bulge"] = [0.3, 0.0, 0.3]
    rows["hlr_disk"] = [0.0, 1.2, 1.2]
    rows["q_bulge"], rows["q_disk"] = [1.0, 1.0, 0.8], [1.0, 1.0, 0.3]
    rows["beta_bulge"], rows["beta_disk"] = [0.0, 0.0, 10.0], [0.0, 0.0, 70.0]
    b = ParametricGalaxies(profile="bulge_disk").process(rows)
    assert np.all(b.catalog["stamp_flux_frac"] >= 0.995)
    obs = Observe(survey="hst_cosmos", add_noise=False, psf={"type": "Gaussian", "fwhm": 1e-3},
                  max_stamp_size=2048).process(b)
    np.testing.assert_allclose(obs.fluxes, SURVEYS["hst_cosmos"].electrons(21.0), rtol=5e-3)
    # each single-component row has its component's half-light radius
    for k, hlr in ((0, 0.3), (1, 1.2)):
        assert b.profiles[k].calculateHLR(scale=0.01) == pytest.approx(hlr, rel=0.02)
    # the mixed row: disk elongated along 70 deg, bulge round-ish: second moments follow the disk
    img = obs.stamp(2)
    y, x = np.indices(img.shape) - (np.array(img.shape)[:, None, None] - 1) / 2
    ixx, iyy, ixy = ((img * x * x).sum(), (img * y * y).sum(), (img * x * y).sum())
    angle = 0.5 * np.degrees(np.arctan2(2 * ixy, ixx - iyy))
    assert angle == pytest.approx(70.0, abs=2.0)


# -------------------------------------------------------------------------- lensing in observe
@pytest.mark.parametrize("use_profile", [True, False])
def test_observe_shears_a_round_gaussian_to_the_analytic_moments(use_profile):
    sig, sig_psf, g1, g2, kappa = 0.3, 0.1, 0.15, -0.05, 0.1
    gauss = galsim.Gaussian(sigma=sig, flux=1.0)
    stamp = gauss.drawImage(nx=256, ny=256, scale=0.02, method="no_pixel").array
    rows = Table({"row_id": [0], "mag": [20.0], "g1": [g1], "g2": [g2], "kappa": [kappa]})
    batch = StampBatch([stamp], 0.02, rows, profiles=[gauss] if use_profile else None)
    obs = Observe(survey={"base": "hst_cosmos", "pixel_scale": 0.01}, add_noise=False, stamp_size=600,
                  psf={"type": "Gaussian", "sigma": sig_psf}, draw_method="no_pixel").process(batch)
    img = obs.stamp(0).astype(float)
    y, x = (np.indices(img.shape) - (np.array(img.shape)[:, None, None] - 1) / 2) * 0.01
    f = img.sum()
    m = np.array([[(img * x * x).sum(), (img * x * y).sum()],
                  [(img * x * y).sum(), (img * y * y).sum()]]) / f
    # lensed source: I(x) = I_s(A x), A = (1 - kappa) [[1 - g1, -g2], [-g2, 1 + g1]]
    a = (1 - kappa) * np.array([[1 - g1, -g2], [-g2, 1 + g1]])
    ainv = np.linalg.inv(a)
    expected = sig ** 2 * ainv @ ainv.T + sig_psf ** 2 * np.eye(2)
    np.testing.assert_allclose(m, expected, rtol=2e-3, atol=1e-6)
    mu = 1 / ((1 - kappa) ** 2 * (1 - g1 ** 2 - g2 ** 2))
    assert obs.catalog["mu"][0] == pytest.approx(mu)
    assert f == pytest.approx(SURVEYS["hst_cosmos"].electrons(20.0) * mu, rel=2e-3)


# ----------------------------------------------------------------------------------- stars
def test_stars_are_drawn_as_the_psf_in_observe_and_scene(tmp_path):
    rows = Table({"row_id": [0, 1], "is_star": [True, False], "mag": [19.0, 21.0],
                  "mag_lsst_r": [18.5, 21.0], "hlr": [np.nan, 0.4], "q": [np.nan, 0.7],
                  "beta": [np.nan, 0.0], "sersic_n": [np.nan, 1.0], "x": [100.3, 300.0],
                  "y": [120.7, 250.0], "g1": [0.1, 0.1]})
    batch = ParametricGalaxies().process(rows)
    s = SURVEYS["lsst_r"]
    psf = galsim.Kolmogorov(fwhm=s.psf["fwhm"])
    obs = Observe(survey="lsst_r", add_noise=False).process(batch)
    star = obs.stamp(0)
    direct = psf.withFlux(s.electrons(18.5)).drawImage(nx=star.shape[1], ny=star.shape[0],
                                                       scale=0.2).array
    np.testing.assert_allclose(star, direct, rtol=1e-4, atol=1e-6 * direct.max())
    assert obs.catalog["mu"][0] == 1.0  # stars are not lensed
    scene = _ctx(Scene(survey="lsst_r", add_noise=False, preview=None).bind_field(_field()),
                 tmp_path)
    scene.consume(0, batch)
    img = scene.canvases["lsst_r"].image.array
    cut = img[120 - 20:120 + 21, 99 - 20:99 + 21]
    ref = psf.withFlux(s.electrons(18.5)).drawImage(
        nx=41, ny=41, scale=0.2, center=galsim.PositionD(100.3 - 79, 120.7 - 99)).array
    np.testing.assert_allclose(cut, ref, atol=1e-4 * ref.max())
    assert scene.n_stars == 1


# ---------------------------------------------------------------------------- ragged outputs
def test_stamps_output_of_different_sizes_is_readable(tmp_path):
    rows = _galaxies(hlr=np.array([0.1, 1.5, 0.4]), sersic_n=np.array([1.0, 3.0, 1.0]))
    obs = Observe(survey="lsst_i", add_noise=False).process(ParametricGalaxies().process(rows))
    assert obs.ragged
    out = _ctx(StampsOutput(file_name="st.fits"), tmp_path)
    out.consume(0, obs)  # two parts, streamed into one table
    out.consume(1, obs)
    out.finalize()
    with fits.open(tmp_path / "st.fits") as hl:
        hl.verify("exception")
        r = hl["ROWS"].data
        assert len(r) == 6 and len(hl["STAMPS"].data) == 6
        for k in range(6):
            img = hl["STAMPS"].data["image"][k].reshape(r["stamp_ny"][k], r["stamp_nx"][k])
            np.testing.assert_array_equal(img, obs.stamp(k % 3))
        assert hl[0].header["STAMPLAY"] == "table" and hl["STAMPS"].header["TUNIT1"] == "electron"


# ------------------------------------------------------------------------ lensing field stage
def test_lensing_field_constant_and_grf(tmp_path):
    from astrogen.stages.galsim_stages import LensingField

    rng = np.random.default_rng(3)
    rows = Table({"row_id": np.arange(400), "x": rng.uniform(1, 1400, 400),
                  "y": rng.uniform(1, 1400, 400), "is_star": np.arange(400) % 10 == 0})
    const = _ctx(LensingField(model="constant", g1=0.02, g2=-0.01,
                              kappa=0.005).bind_field(_field(1400)), tmp_path, "c")
    t = const.process(rows)
    assert np.all(t["g1"][~t["is_star"]] == 0.02) and np.all(t["g1"][t["is_star"]] == 0.0)
    grf = _ctx(LensingField(model="grf", sigma_kappa=0.03,
                            smoothing=0.5).bind_field(_field(1400)), tmp_path, "g")
    whole = grf.process(rows)
    halves = [grf.process(rows[:150]), grf.process(rows[150:])]
    for c in ("g1", "g2", "kappa"):  # a row's shear does not depend on the chunking
        np.testing.assert_array_equal(np.concatenate([h[c] for h in halves]), whole[c])
    gal = ~whole["is_star"]
    assert 0.015 < np.std(whole["kappa"][gal]) < 0.05
    assert 0.01 < np.std(whole["g1"][gal]) < 0.06
    # spatially coherent: close pairs have correlated convergence
    from scipy.spatial import cKDTree

    xy = np.c_[whole["x"], whole["y"]][gal]
    k = np.asarray(whole["kappa"])[gal]
    pairs = np.array(list(cKDTree(xy).query_pairs(20.0)))
    assert np.corrcoef(k[pairs[:, 0]], k[pairs[:, 1]])[0, 1] > 0.8


@pytest.mark.parametrize("name", sorted(SURVEYS))
def test_every_band_preset_matches_surveycodex(name):
    import surveycodex as sc

    from astrogen.physics.psf import build_psf, psf_fwhm
    from astrogen.catalog.bands import BAND_FILTERS

    s = SURVEYS[name]
    survey, filt = BAND_FILTERS[s.band_name]
    sv = sc.get_survey(survey)
    f = sv.get_filter(filt)
    assert s.pixel_scale == sv.pixel_scale.to_value("arcsec")
    assert s.zero_point == f.zeropoint.value and s.exposure_time == f.full_exposure_time.value
    assert s.sky_brightness == f.sky_brightness.value
    assert psf_fwhm(build_psf(s.psf)) == pytest.approx(f.psf_fwhm.to_value("arcsec"), rel=0.05)

import galsim
import numpy as np
import pytest
from astropy.table import Table

from astrogen.physics.observe import add_noise, draw_observed
from astrogen.physics.psf import build_psf, psf_fwhm
from astrogen.physics.render import draw_intrinsic, galaxy_profile
from astrogen.physics.surveys import SURVEYS, get_survey
from astrogen.errors import ConfigError, UnknownKeyError


def _rows(n=5):
    rng = np.random.default_rng(1)
    return Table({"mag": rng.uniform(20, 24, n), "hlr": rng.uniform(0.1, 0.3, n),
                  "q": rng.uniform(0.3, 1, n), "beta": rng.uniform(0, 180, n),
                  "sersic_n": rng.uniform(0.5, 4, n), "bulge_frac": rng.uniform(0, 1, n)})


@pytest.mark.parametrize("profile", ["sersic", "bulge_disk"])
def test_intrinsic_stamps_conserve_flux(profile):
    rows = _rows()
    rows["sersic_n"] = np.linspace(0.5, 1.5, len(rows))
    rows["bulge_frac"] = np.linspace(0.0, 0.3, len(rows))
    flux = np.full(len(rows), 1000.0)
    img, _, _, _ = draw_intrinsic(rows, flux, 192, 0.03, profile)
    # 5.8 arcsec stamps of galaxies with hlr < 0.3 arcsec and low-n profiles hold the flux
    frac = np.array([im.sum() for im in img]) / flux
    np.testing.assert_allclose(frac, 1.0, atol=0.01 if profile == "sersic" else 0.03)


def test_bulge_disk_half_light_radius_is_exact():
    row = {"hlr": 0.4, "q": 1.0, "beta": 0.0, "bulge_frac": 0.4}
    gal = galaxy_profile(row, 1.0, "bulge_disk")
    img = gal.drawImage(nx=400, ny=400, scale=0.005, method="no_pixel")
    y, x = np.indices(img.array.shape)
    r = np.hypot(x - 199.5, y - 199.5) * 0.005
    # half of the (analytic, unit) flux lies inside r = hlr
    assert img.array[r < 0.4].sum() == pytest.approx(0.5, abs=0.01)


def test_observed_stamps_conserve_flux_and_match_galsim():
    rows = _rows(3)
    s = SURVEYS["lsst_i"]
    psf = build_psf(s.psf)
    flux = s.electrons(rows["mag"])
    intr, _, _, _ = draw_intrinsic(rows, np.ones(3), 128, 0.03)
    obs, frac = draw_observed(intr, 0.03, flux, psf, s.pixel_scale, 64)
    obs = np.array(obs)
    np.testing.assert_allclose(obs.sum(axis=(1, 2)), flux, rtol=0.01)
    np.testing.assert_allclose(frac, 1.0, atol=0.01)
    # same galaxy drawn directly by GalSim through the survey PSF and pixel
    direct = galsim.Convolve(galaxy_profile(rows[0], float(flux[0])), psf).drawImage(
        nx=64, ny=64, scale=s.pixel_scale).array
    assert np.max(np.abs(obs[0] - direct)) < 0.02 * direct.max()


@pytest.mark.parametrize("name,fwhm", [("hst_cosmos", 0.095), ("lsst_i", 0.79),
                                       ("euclid_vis", 0.17)])
def test_survey_psf_fwhm_matches_cited_value(name, fwhm):
    assert psf_fwhm(build_psf(SURVEYS[name].psf)) == pytest.approx(fwhm, rel=0.1)


def test_noise_has_survey_sigma():
    s = SURVEYS["lsst_i"]
    img = add_noise(np.zeros((200, 200)), 3, s.sky_level, s.read_noise)
    assert img.std() == pytest.approx(s.noise_sigma, rel=0.02)
    np.testing.assert_array_equal(img, add_noise(np.zeros((200, 200)), 3, s.sky_level,
                                                 s.read_noise))


def test_flux_calibration():
    s = SURVEYS["euclid_vis"]
    assert s.electrons(s.zero_point) == pytest.approx(s.exposure_time)
    assert s.magnitude(s.electrons(24.3)) == pytest.approx(24.3)


def test_survey_overrides_and_errors():
    s = get_survey({"base": "lsst_i", "exposure_time": 30.0})
    assert s.exposure_time == 30.0 and s.pixel_scale == 0.2
    with pytest.raises(UnknownKeyError, match="exposure_time"):
        get_survey({"base": "lsst_i", "exposure_tim": 30.0})
    with pytest.raises(ConfigError, match="lsst_i"):
        get_survey("lsst-i")

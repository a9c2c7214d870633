"""External deblenders (scarlet2) with the scene-deblender signature; optional packages."""
import sys

import galsim
import numpy as np
import pytest

from astrogen.deblend import external
from astrogen.deblend.result import SceneResult
from astrogen.errors import ConfigError

H = W = 48
SIGMA = 1.0
PSF = galsim.Gaussian(fwhm=3.0)  # pixels (scale 1)


def _scene():
    """Two-band scene of two round galaxies with different colours, noise sigma 1."""
    pos = [(15.0, 20.0, 3000.0, (1.0, 0.4)), (32.0, 28.0, 2000.0, (0.3, 1.0))]
    img = np.zeros((2, H, W))
    truth = np.zeros((2, 2))
    for k, (x, y, f, sed) in enumerate(pos):
        g = galsim.Convolve(galsim.Exponential(half_light_radius=1.5, flux=f), PSF)
        arr = g.drawImage(nx=W, ny=H, scale=1.0, offset=(x - (W - 1) / 2, y - (H - 1) / 2)).array
        for b in range(2):
            img[b] += sed[b] * arr
            truth[k, b] = sed[b] * arr.sum()
    psf = PSF.drawImage(nx=25, ny=25, scale=1.0).array
    rng = np.random.default_rng(4)
    return img + rng.normal(0, SIGMA, img.shape), np.stack([psf, psf]), pos, truth


def test_missing_scarlet2_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "scarlet2", None)
    img, psf, _, _ = _scene()
    with pytest.raises(ImportError, match=r"astrogen\[scarlet2\]"):
        external.scarlet2_scene(img, pixel_scale=0.2, bands=("g", "r"), noise_sigma=SIGMA,
                                psf=psf)


def test_scarlet2_needs_the_psf():
    img, _, _, _ = _scene()
    with pytest.raises(ConfigError, match="psf"):
        external.scarlet2_scene(img, pixel_scale=0.2, bands=("g", "r"), noise_sigma=SIGMA)


def test_scarlet2_separates_two_galaxies_with_their_colours():
    pytest.importorskip("scarlet2", reason="scarlet2 not installed: pip install "
                                           "'astrogen[scarlet2]'")
    img, psf, pos, truth = _scene()
    res = external.scarlet2_scene(img, pixel_scale=0.2, bands=("g", "r"), noise_sigma=SIGMA,
                                  psf=psf, max_iter=60)
    assert isinstance(res, SceneResult) and res.n_objects == 2
    assert np.all(res.fractions.sum(axis=0) <= 1 + 1e-6)
    for k, (x, y, _, _) in enumerate(pos):
        j = int(np.argmin(np.hypot(res.catalog["x"] - x, res.catalog["y"] - y)))
        assert np.hypot(res.catalog["x"][j] - x, res.catalog["y"][j] - y) < 1.0
        for b, band in enumerate(("g", "r")):
            # flux re-distribution shares all the observed light: within 10 % per band
            assert res.catalog[f"flux_{band}"][j] == pytest.approx(truth[k, b], rel=0.1)

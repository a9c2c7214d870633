"""Lensing of a profile: analytic moments of a sheared round Gaussian, flux magnified by mu."""
import galsim
import numpy as np
import pytest

from astrogen.errors import CatalogError, ConfigError
from astrogen.physics.lensing import apply_lensing, magnification


def test_sheared_round_gaussian_has_analytic_moments():
    sigma, g1, g2 = 0.5, 0.05, -0.03
    obj = apply_lensing(galsim.Gaussian(sigma=sigma, flux=1.0), g1, g2, 0.0)
    img = obj.drawImage(nx=512, ny=512, scale=0.02, method="no_pixel")  # +-10 sigma
    y, x = np.mgrid[:512, :512] * 0.02
    w = img.array / img.array.sum()
    xc, yc = (w * x).sum(), (w * y).sum()
    qxx = (w * (x - xc) ** 2).sum()
    qyy = (w * (y - yc) ** 2).sum()
    qxy = (w * (x - xc) * (y - yc)).sum()
    # distortion of a sheared circle: e = 2 g / (1 + |g|^2), e = (qxx - qyy, 2 qxy) / (qxx + qyy)
    gsq = g1 ** 2 + g2 ** 2
    assert (qxx - qyy) / (qxx + qyy) == pytest.approx(2 * g1 / (1 + gsq), abs=1e-6)
    assert 2 * qxy / (qxx + qyy) == pytest.approx(2 * g2 / (1 + gsq), abs=1e-6)


def test_magnification_scales_flux_and_area():
    g1, g2, kappa = 0.02, 0.01, 0.05
    mu = float(magnification(g1, g2, kappa))
    assert mu == pytest.approx(1.0 / ((1 - kappa) ** 2 * (1 - g1 ** 2 - g2 ** 2)))
    lensed = apply_lensing(galsim.Exponential(half_light_radius=0.4, flux=2.0), g1, g2, kappa)
    assert lensed.flux == pytest.approx(2.0 * mu)


def test_no_lensing_is_identity_and_bad_shear_refused():
    obj = galsim.Gaussian(sigma=1.0)
    assert apply_lensing(obj, 0.0, 0.0, 0.0) is obj
    with pytest.raises(CatalogError, match="g1"):
        magnification(0.9, 0.5, 0.0)
    with pytest.raises(CatalogError, match="kappa"):
        magnification(0.0, 0.0, 1.0)


"""Eisenstein & Hu transfer functions and sigma8 normalisation."""
import numpy as np
import pytest
from scipy.integrate import quad

from astrogen.cosmology import (Cosmology, LinearPower, eisenstein_hu_nowiggle_transfer,
                                eisenstein_hu_transfer)
from astrogen.errors import ConfigError


@pytest.mark.parametrize("tf", [eisenstein_hu_transfer, eisenstein_hu_nowiggle_transfer])
def test_transfer_tends_to_one_on_large_scales(tf):
    t = tf(np.array([1e-6, 1e-5, 1e-4]), Cosmology())
    np.testing.assert_allclose(t, 1.0, atol=2e-4)
    assert np.all(np.diff(tf(np.logspace(-3, 1, 50), Cosmology())) < 1e-3)  # ~ decreasing


def test_sigma8_normalisation_against_independent_quadrature():
    c = Cosmology(sigma8=0.75)
    p = LinearPower(c)

    def integrand(lnk):
        k = np.exp(lnk)
        x = 8.0 * k
        w = 3 * (np.sin(x) - x * np.cos(x)) / x**3
        return k**3 * float(p(k)) * w * w / (2 * np.pi**2)

    s2 = sum(quad(integrand, lo, hi, limit=400)[0]
             for lo, hi in zip(np.log([1e-5, 1e-2, 1.0, 10.0]), np.log([1e-2, 1.0, 10.0, 1e3])))
    assert np.sqrt(s2) == pytest.approx(0.75, rel=1e-3)
    # growth scaling
    assert p.sigma(8.0, a=0.5) == pytest.approx(0.75 * float(c.D1(0.5)), rel=1e-6)


def test_wiggle_and_nowiggle_agree_away_from_bao():
    c = Cosmology()
    k = np.concatenate([np.logspace(-4, -2.3, 10), np.logspace(0.0, 1.0, 10)])
    ratio = eisenstein_hu_transfer(k, c) / eisenstein_hu_nowiggle_transfer(k, c)
    np.testing.assert_allclose(ratio, 1.0, atol=0.03)
    # ... and differ by the BAO wiggles in between (a few per cent)
    kb = np.linspace(0.05, 0.3, 200)
    rb = eisenstein_hu_transfer(kb, c) / eisenstein_hu_nowiggle_transfer(kb, c)
    assert 0.01 < np.ptp(rb) < 0.15


def test_table_roundtrip(tmp_path):
    c = Cosmology()
    p = LinearPower(c)
    k = np.logspace(-4, 2, 400)
    path = tmp_path / "pk.dat"
    np.savetxt(path, np.c_[k, p(k)], header="k [h/Mpc]  P [(Mpc/h)^3]")
    q = LinearPower.from_table(path, c)
    kk = np.logspace(-3, 1, 30)
    np.testing.assert_allclose(q(kk), p(kk), rtol=2e-3)
    assert q.sigma(8.0) == pytest.approx(c.sigma8, rel=2e-3)
    with pytest.raises(ConfigError):
        LinearPower.from_table(tmp_path / "missing.dat", c)

"""Growth factors of astrogen.cosmology.background against analytic results."""
import numpy as np
import pytest
from scipy.integrate import quad

from astrogen.cosmology import Cosmology
from astrogen.errors import ConfigError


def test_eds_growth_is_scale_factor():
    c = Cosmology(Om0=1.0, Ob0=0.05)
    a = np.array([0.01, 0.1, 0.5, 1.0, 2.0])
    np.testing.assert_allclose(c.D1(a), a, rtol=1e-7)
    np.testing.assert_allclose(c.f1(a), 1.0, rtol=1e-7)
    # D2 = -3/7 D1^2 exactly in Einstein-de Sitter
    np.testing.assert_allclose(c.D2(a), -3.0 / 7.0 * a**2, rtol=1e-7)


def test_d1_normalised_today():
    assert float(Cosmology().D1(1.0)) == pytest.approx(1.0, abs=1e-12)


def test_lcdm_growth_matches_heath_integral():
    """D(a) ∝ E(a) ∫_0^a da' / (a' E(a'))^3, with E written here independently of astropy."""
    Om = 0.3
    c = Cosmology(Om0=Om, Ob0=0.045, h=0.7)
    E = lambda a: np.sqrt(Om / a**3 + 1 - Om)  # noqa: E731

    def heath(a):
        return E(a) * quad(lambda x: (x * E(x)) ** -3, 0, a, epsabs=0, epsrel=1e-12)[0]
    for a in (0.1, 0.5, 0.8):
        assert float(c.D1(a)) == pytest.approx(heath(a) / heath(1.0), rel=1e-6)
    # f = dlnD/dlna from the same integral: -3/2 Om(a) + 1 / (a^2 E^3 I(a))
    for a in (0.3, 1.0):
        integral = quad(lambda x: (x * E(x)) ** -3, 0, a, epsabs=0, epsrel=1e-12)[0]
        f = -1.5 * Om / a**3 / E(a) ** 2 + 1.0 / (a**2 * E(a) ** 3 * integral)
        assert float(c.f1(a)) == pytest.approx(f, rel=1e-6)
    # and the Linder (2005) approximation f ~ Om(a)^0.55 holds to 1 %
    assert float(c.f1(1.0)) == pytest.approx(float(c.Om(1.0)) ** 0.55, rel=1e-2)


def test_second_order_growth_matches_bouchet_approximation():
    c = Cosmology()
    a = np.array([0.1, 0.5, 1.0])
    np.testing.assert_allclose(c.D2(a), c.D2_approx(a), rtol=2e-3)
    assert np.all(c.D2(a) < 0)


def test_fastpm_factors_integrate_the_zeldovich_solution():
    c = Cosmology()
    a0, a1 = 0.3, 0.6
    # drift: p = gp Psi  ->  dx = (D1(a1) - D1(a0)) Psi
    ac = np.sqrt(a0 * a1)
    assert c.drift_factor(a0, a1, ac) * float(c.gp(ac)) == pytest.approx(
        float(c.D1(a1) - c.D1(a0)), rel=1e-12)
    # gf is the derivative of gp
    h = 1e-5
    assert float(c.gf(0.5)) == pytest.approx(float((c.gp(0.5 + h) - c.gp(0.5 - h)) / (2 * h)),
                                             rel=1e-5)


def test_bad_parameters_raise_config_error():
    with pytest.raises(ConfigError, match="Ob0"):
        Cosmology(Om0=0.3, Ob0=0.4)
    with pytest.raises(ConfigError, match="scale factor"):
        Cosmology().D1(-1.0)

"""The P(k) estimator recovers the spectrum of generated Gaussian fields."""
import numpy as np

from astrogen.cosmology import Cosmology, LinearPower, gaussian_field
from astrogen.nbody import measure_power
from astrogen.nbody.power_spectrum import binned_model


def _check_within_cosmic_variance(ps, model, nsig=4.0):
    sigma = model * np.sqrt(2.0 / ps.n_modes)
    pull = (ps.power - model) / sigma
    assert np.all(np.abs(pull) < nsig), pull
    # the pulls are consistent with unit variance
    assert 0.4 < np.mean(pull**2) < 2.0


def test_recovers_linear_spectrum_3d():
    L, n = 256.0, 48
    p = LinearPower(Cosmology())
    d = gaussian_field(n, L, p, seed=11)
    ps = measure_power(d, L)
    _check_within_cosmic_variance(ps, binned_model(p, n, L, ps.k_edges))
    assert 1.0 <= ps.k[0] / (2 * np.pi / L) <= 1.5  # first bin: |k| = k_f and sqrt(2) k_f
    # total mode count = all modes inside the last edge
    assert ps.n_modes.sum() > 0.5 * n**3 * 4 / 3 * np.pi / 8


def test_recovers_power_law_2d():
    L, n = 50.0, 128
    p = lambda k: 3.0 * k**-1.5  # noqa: E731  (Mpc/h)^2
    d = gaussian_field(n, L, p, seed=2, ndim=2)
    ps = measure_power(d, L, dk=4 * 2 * np.pi / L)
    _check_within_cosmic_variance(ps, binned_model(p, n, L, ps.k_edges, ndim=2))

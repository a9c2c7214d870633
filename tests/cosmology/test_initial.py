"""Gaussian fields and LPT displacements against analytic solutions."""
import numpy as np
import pytest

from astrogen.cosmology import gaussian_field, lattice, lpt_displacements
from astrogen.errors import ConfigError

L, N = 100.0, 32


def _grid(n=N, ndim=3):
    q = np.arange(n) * L / n
    return np.meshgrid(*([q] * ndim), indexing="ij")


@pytest.mark.parametrize("ndim", [2, 3])
def test_zeldovich_of_a_plane_wave(ndim):
    k = 2 * np.pi * 3 / L
    A = 0.1
    x = _grid(ndim=ndim)
    delta = A * np.cos(k * x[0])
    psi1, psi2 = lpt_displacements(delta, L, order=2)
    np.testing.assert_allclose(psi1[0], -A / k * np.sin(k * x[0]), atol=1e-12)
    np.testing.assert_allclose(psi1[1:], 0.0, atol=1e-12)
    # a single plane wave has a vanishing second-order source
    np.testing.assert_allclose(psi2, 0.0, atol=1e-12)


def test_second_order_of_two_orthogonal_plane_waves():
    k = 2 * np.pi * 2 / L
    A, B = 0.2, 0.3
    x, y, z = _grid()
    delta = A * np.cos(k * x) + B * np.cos(k * y)
    psi1, psi2 = lpt_displacements(delta, L, order=2)
    # source phi_xx phi_yy = AB cos(kx) cos(ky)  ->  phi2 = -AB cos cos / (2k^2), Psi2 = grad phi2
    c = A * B / (2 * k)
    np.testing.assert_allclose(psi2[0], c * np.sin(k * x) * np.cos(k * y), atol=1e-12)
    np.testing.assert_allclose(psi2[1], c * np.cos(k * x) * np.sin(k * y), atol=1e-12)
    np.testing.assert_allclose(psi2[2], 0.0, atol=1e-12)
    np.testing.assert_allclose(psi1[1], -B / k * np.sin(k * y), atol=1e-12)


def test_shifted_lattice_evaluates_displacement_off_grid():
    k = 2 * np.pi / L
    q = lattice(N, L, 3, shift=0.25)
    delta = 0.1 * np.cos(k * _grid()[0])
    psi = lpt_displacements(delta, L, order=1, shift=0.25)[0]
    np.testing.assert_allclose(psi[0].ravel(), -0.1 / k * np.sin(k * q[:, 0]), atol=1e-12)


def test_gaussian_field_is_real_seeded_and_zero_mean():
    p = lambda k: 100.0 * np.ones_like(k)  # noqa: E731
    a = gaussian_field(16, L, p, seed=3)
    b = gaussian_field(16, L, p, seed=3)
    c = gaussian_field(16, L, p, seed=4)
    assert a.dtype == np.float64 and a.shape == (16, 16, 16)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    assert abs(a.mean()) < 1e-12
    # white noise P: variance = P N / V per cell
    big = gaussian_field(64, L, p, seed=5)
    assert big.var() == pytest.approx(100.0 * 64**3 / L**3, rel=0.02)
    # fixed amplitude: every mode has |delta_k|^2 = N^2 P / V
    d, dk = gaussian_field(16, L, p, seed=3, fixed_amplitude=True, return_fourier=True)
    np.testing.assert_allclose(np.abs(dk.ravel()[1:]) ** 2, 16**6 * 100.0 / L**3, rtol=1e-10)


def test_bad_grid_raises():
    with pytest.raises(ConfigError, match="box_size"):
        gaussian_field(16, -1.0, lambda k: k, seed=1)
    with pytest.raises(ConfigError, match="n"):
        gaussian_field(15, 10.0, lambda k: k, seed=1)

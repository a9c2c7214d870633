"""LPT density field (astrogen.nbody.lpt_field): mass conservation, linear limit, errors."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from astrogen.cosmology.background import Cosmology  # noqa: E402
from astrogen.errors import ConfigError  # noqa: E402
from astrogen.nbody.lpt_field import lpt_density  # noqa: E402


def _plane_wave(n, L, amp, m=1):
    x = (np.arange(n) + 0.25) * L / n  # the lattice points (shift 0.25) carry the wave
    return np.broadcast_to(amp * np.cos(2 * np.pi * m * x / L)[:, None, None], (n, n, n)).copy()


def test_small_plane_wave_grows_as_D1_through_the_cic_window():
    """A small-amplitude mode is moved by Zel'dovich: delta(a) = D1(a) delta_lin, seen through
    the CIC window sinc^2 (painting) of its wavenumber; 2LPT adds only second order."""
    c = Cosmology()
    n, L, amp, m = 32, 64.0, 1e-3, 2
    lin = _plane_wave(n, L, amp, m)
    for z in (0.0, 1.0):
        x = lpt_density(lin, L, c, redshift=z)
        assert x.mean() == pytest.approx(1.0, abs=1e-9) and np.all(x >= 0)
        prof = x.mean(axis=(1, 2)) - 1.0
        # amplitude of the mode from a Fourier projection on the particle grid
        q = np.arange(n) * L / n
        a_meas = 2 * np.mean(prof * np.exp(-2j * np.pi * m * q / L))
        window = np.sinc(m / n) ** 2
        d1 = float(c.D1(1.0 / (1.0 + z)))
        assert abs(a_meas) == pytest.approx(amp * d1 * window, rel=0.01)
    x1 = lpt_density(lin, L, c, order=1)
    x2 = lpt_density(lin, L, c, order=2)
    assert np.max(np.abs(x2 - x1)) < 1e-5  # second order in the amplitude


def test_lpt_density_errors():
    c = Cosmology()
    with pytest.raises(ConfigError, match="delta_linear"):
        lpt_density(np.zeros((8, 8)), 16.0, c)
    with pytest.raises(ConfigError, match="redshift"):
        lpt_density(np.zeros((8, 8, 8)), 16.0, c, redshift=-1)
    with pytest.raises(ConfigError, match="order"):
        lpt_density(np.zeros((8, 8, 8)), 16.0, c, order=3)

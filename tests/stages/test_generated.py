"""astrogen.stages.generated: the shape map, the size measurement, the edge taper, checked
against GalSim profiles with known q, beta and half-light radius (independent of the networks)."""
import galsim
import numpy as np
import pytest

from astrogen.stages.generated import (edge_window, measure_stamps, reshape_stamps,
                                       ring_fraction, size_scale_factors)

SCALE = 0.03


def _draw(prof, n=96):
    return prof.drawImage(nx=n, ny=n, scale=SCALE, method="no_pixel").array.astype(np.float32)


def test_reshape_of_a_round_profile_matches_galsim_shear():
    """A round exponential mapped to q = 0.5, beta = 30 deg equals GalSim's sheared profile."""
    base = galsim.Exponential(half_light_radius=0.25, flux=100.0)
    q, beta = 0.5, 30.0
    want = _draw(base.shear(q=q, beta=beta * galsim.degrees))
    rnd = _draw(base)[None]
    g = (1 - q) / (1 + q)
    g_to = np.array([[g * np.cos(np.radians(2 * beta)), g * np.sin(np.radians(2 * beta))]])
    c = (96 - 1) / 2.0  # GalSim centres an even image between pixels
    got = reshape_stamps(rnd, np.array([c]), np.array([c]), np.zeros((1, 2)), g_to)[0]
    assert got.sum() == pytest.approx(want.sum(), rel=5e-3)
    assert np.abs(got - want).max() < 0.03 * want.max()
    m = measure_stamps(got[None], SCALE)
    assert m["q"][0] == pytest.approx(q, abs=0.01)
    assert m["beta"][0] == pytest.approx(beta, abs=0.5)


def test_reshape_from_one_shape_to_another_keeps_size_and_flux():
    prof = galsim.Sersic(n=1.5, half_light_radius=0.2, flux=50.0)
    img = _draw(prof.shear(q=0.6, beta=-40 * galsim.degrees))[None]
    m = measure_stamps(img, SCALE)
    g_to = np.array([[0.0, 0.3]])  # q = 0.538, beta = 45 deg
    out = reshape_stamps(img, m["x0"], m["y0"], np.stack([m["g1"], m["g2"]], 1), g_to)
    m2 = measure_stamps(out, SCALE)
    assert m2["q"][0] == pytest.approx(0.7 / 1.3, abs=0.01)
    assert m2["beta"][0] == pytest.approx(45.0, abs=0.5)
    # area-preserving map; the bicubic resampling broadens a 7-pixel hlr by ~3 %
    assert m2["hlr"][0] == pytest.approx(m["hlr"][0], rel=0.04)
    assert out.sum() == pytest.approx(img.sum(), rel=5e-3)


@pytest.mark.parametrize("q", [1.0, 0.4])
def test_measured_hlr_is_the_circularised_half_light_radius(q):
    prof = galsim.Exponential(half_light_radius=0.3, flux=1.0).shear(q=q, beta=0 * galsim.degrees)
    m = measure_stamps(_draw(prof, 128)[None], SCALE)
    assert m["hlr"][0] == pytest.approx(0.3, rel=0.03)
    assert m["q"][0] == pytest.approx(q, abs=0.01)


def test_size_scale_factors_and_edge_window():
    s = size_scale_factors([0.1, 0.2, 0.6, 0.3], [1.0, 1.0, 1.0, 0.25], 0.2)
    np.testing.assert_allclose(s, [1.0, 1.0, 3.0, 3.0])
    np.testing.assert_allclose(size_scale_factors([5.0], [0.5], None), [1.0])
    w = edge_window(64)
    assert w[32, 32] == 1.0 and w[0, 0] == 0.0 and w[0, 32] == 0.0
    assert np.all(w[:, :2] < 0.05)
    assert ring_fraction(w[None] * np.ones((1, 64, 64)))[0] < 0.005

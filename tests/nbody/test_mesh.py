"""CIC painting and readout conserve mass and keep a uniform lattice uniform."""
import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from astrogen.cosmology import lattice  # noqa: E402
from astrogen.nbody import cic_paint, cic_readout, paint_density  # noqa: E402


def test_paint_conserves_mass():
    rng = np.random.default_rng(0)
    pos = rng.uniform(-40, 80, size=(20000, 3))  # outside the box too: wrapped
    m = rng.uniform(0.5, 2.0, size=20000)
    mesh = cic_paint(tf.constant(pos), 16, weights=tf.constant(m)).numpy()
    assert mesh.shape == (16, 16, 16)
    assert mesh.sum() == pytest.approx(m.sum(), rel=1e-12)
    assert np.all(mesh >= 0)


@pytest.mark.parametrize("shift", [0.0, 0.25, 0.5])
def test_uniform_lattice_gives_uniform_field_and_readout(shift):
    n, L = 16, 64.0
    q = lattice(n, L, 3, shift=shift)
    delta = paint_density(q, L, n)
    np.testing.assert_allclose(delta, 0.0, atol=1e-12)
    # readout of a uniform mesh is uniform; of a linear ramp (periodic-safe) is linear
    vals = cic_readout(tf.ones((n, n, n), tf.float64), tf.constant(q * n / L)).numpy()
    np.testing.assert_allclose(vals, 1.0, atol=1e-12)


def test_readout_interpolates_linearly_and_2d():
    mesh = np.zeros((8, 8))
    mesh[2, 3] = 1.0
    pos = np.array([[2.0, 3.0], [2.5, 3.0], [2.25, 3.5], [9.0, 10.0]])  # last wraps to (1, 2)
    vals = cic_readout(tf.constant(mesh), tf.constant(pos)).numpy()
    np.testing.assert_allclose(vals, [1.0, 0.5, 0.75 * 0.5, 0.0], atol=1e-12)
    painted = cic_paint(tf.constant(pos[:1] + 8.0), 8).numpy()  # periodic wrap
    assert painted[2, 3] == pytest.approx(1.0)


@pytest.mark.parametrize("d", [2, 3])
def test_numpy_stencil_paint_and_readout_equal_tensorflow(d):
    from astrogen.nbody.mesh import cic_stencil, paint_stencil, readout_stencil

    n = 8
    rng = np.random.default_rng(3)
    cells = rng.uniform(0, n, size=(d, 500))
    cells[:, 0] = n - 1e-12  # at the upper edge: wraps onto cell 0
    idx, w = cic_stencil(np.ascontiguousarray(cells), n, dtype=np.float64)
    assert idx.shape == w.shape == (2**d, 500) and idx.min() >= 0 and idx.max() < n**d
    np.testing.assert_allclose(w.sum(axis=0), 1.0, rtol=1e-12)
    mesh = paint_stencil(idx, w, n, d)
    np.testing.assert_allclose(mesh, cic_paint(tf.constant(cells.T), n).numpy(), atol=1e-12)
    field = rng.normal(size=(n,) * d)
    np.testing.assert_allclose(readout_stencil(field, idx, w),
                               cic_readout(tf.constant(field), tf.constant(cells.T)).numpy(),
                               atol=1e-12)

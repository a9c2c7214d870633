"""Compiled CIC kernels (astrogen.nbody.cic_kernels) against the numpy stencil path."""
import numpy as np
import pytest

pytest.importorskip("numba")

from astrogen.nbody import cic_kernels  # noqa: E402
from astrogen.nbody.mesh import cic_stencil, paint_stencil, readout_stencil  # noqa: E402
from astrogen.nbody.pm import stencil_derivative  # noqa: E402


def _cells(n=16, npart=3000, seed=0):
    rng = np.random.default_rng(seed)
    cells = (rng.random((3, npart)) * n).astype(np.float32)
    cells[0, :4] = n          # the upper edge maps to 0
    cells[1, 4:8] = 0.0
    cells[2, 8:12] = np.float32(n) - np.float32(1e-4)  # upper neighbour wraps
    return cells


def test_paint_equals_bincount_paint_and_conserves_mass():
    n, cells = 16, _cells()
    got = cic_kernels.paint(cells, n)
    ref = paint_stencil(*cic_stencil(cells, n, np.float32), n)
    assert got.dtype == np.float64 and got.shape == (n,) * 3
    np.testing.assert_allclose(got, ref, rtol=1e-13, atol=1e-13)
    # the float32 contrast the force takes is the same bit for bit
    mean = cells.shape[1] / n**3
    np.testing.assert_array_equal((got - mean).astype(np.float32), (ref - mean).astype(np.float32))
    assert got.sum() == pytest.approx(cells.shape[1], rel=1e-6)  # float32 weights
    # out= is zeroed first: painting twice into one array gives the same mesh
    out = np.full((n,) * 3, 7.0)
    cic_kernels.paint(cells, n, out=out)
    np.testing.assert_array_equal(cic_kernels.paint(cells, n, out=out), got)


@pytest.mark.parametrize("gradient", ["fd4", "fd2"])
def test_gradient_mesh_equals_stencil_derivative(gradient):
    f = np.random.default_rng(1).normal(size=(12, 12, 12)).astype(np.float32)
    g = cic_kernels.gradient_mesh(f, gradient)
    assert g.shape == (12, 12, 12, 3)
    for axis in range(3):  # same operations in the same order: bit for bit
        np.testing.assert_array_equal(g[..., axis], stencil_derivative(f, axis, gradient))
    with pytest.raises(ValueError, match="gradient"):
        cic_kernels.gradient_mesh(f, "exact")


def test_readouts_equal_numpy_readout_and_interpolate_linear_fields():
    n, cells = 16, _cells(seed=2)
    idx, w = cic_stencil(cells, n, np.float32)
    g = np.random.default_rng(3).normal(size=(n, n, n, 3)).astype(np.float32)
    got = cic_kernels.readout3(g, cells)
    ref = np.stack([readout_stencil(np.ascontiguousarray(g[..., a]), idx, w) for a in range(3)])
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-6 * np.abs(ref).max())
    np.testing.assert_allclose(cic_kernels.readout(np.ascontiguousarray(g[..., 1]), cells),
                               ref[1], rtol=0, atol=1e-6 * np.abs(ref).max())
    # CIC reproduces a field linear along an axis between mesh points (away from the wrap)
    i = np.arange(n, dtype=np.float32)
    ramp = np.broadcast_to((2.0 * i - 3.0)[None, None, :], (n, n, n))
    ramp3 = np.ascontiguousarray(np.stack([ramp] * 3, axis=-1))
    inner = (cells[2] > 0.5) & (cells[2] < n - 1.5)
    r = cic_kernels.readout3(ramp3, cells)[:, inner]
    np.testing.assert_allclose(r, np.broadcast_to(2.0 * cells[2, inner] - 3.0, r.shape),
                               rtol=0, atol=1e-4)
    with pytest.raises(ValueError, match="float32"):
        cic_kernels.readout3(g, cells.astype(np.float64))


@pytest.mark.parametrize("gradient", ["fd4", "fd2"])
def test_fused_gradient_readout_equals_mesh_then_readout(gradient):
    # the PM force's kernel: differences taken at each particle's mesh points == gradient
    # mesh then one 3-component readout, bit for bit, and == three numpy readouts
    n, cells = 16, _cells(seed=4)
    f = np.random.default_rng(5).normal(size=(n, n, n)).astype(np.float32)
    fused = cic_kernels.readout_gradient(f, cells, gradient)
    np.testing.assert_array_equal(
        fused, cic_kernels.readout3(cic_kernels.gradient_mesh(f, gradient), cells))
    idx, w = cic_stencil(cells, n, np.float32)
    ref = np.stack([readout_stencil(stencil_derivative(f, a, gradient), idx, w)
                    for a in range(3)])
    np.testing.assert_allclose(fused, ref, rtol=0, atol=1e-6 * np.abs(ref).max())
    with pytest.raises(ValueError, match="gradient"):
        cic_kernels.readout_gradient(f, cells, "exact")

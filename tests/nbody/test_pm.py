"""The particle-mesh solver grows linear modes as D1 and returns DensityField outputs."""
import numpy as np
import pytest

pytest.importorskip("tensorflow")

from astrogen.batch import DensityField  # noqa: E402
from astrogen.cosmology import Cosmology, lattice  # noqa: E402
from astrogen.errors import ConfigError  # noqa: E402
from astrogen.nbody import ParticleMesh  # noqa: E402


def _mode(field, axis=0):
    idx = [0, 0, 0]
    idx[axis] = 1
    return np.fft.rfftn(field)[tuple(idx)]


def test_small_amplitude_mode_grows_as_d1():
    c = Cosmology()
    n, L = 32, 256.0
    pm = ParticleMesh(n, L, c, a_init=0.1, n_steps=5)
    x = np.arange(n) * L / n
    delta = 1e-3 * np.cos(2 * np.pi * x / L)[:, None, None] * np.ones((n, n, n))
    res = pm.run(a_out=[0.1, 0.5, 1.0], delta_linear=delta)
    m0 = _mode(res.at(0.1).density.delta)
    q = lattice(n, L, 3, shift=pm.lattice_shift)
    psi = -1e-3 * L / (2 * np.pi) * np.sin(2 * np.pi * q[:, 0] / L)
    for a in (0.5, 1.0):
        snap = res.at(a)
        growth = abs(_mode(snap.density.delta)) / abs(m0)
        expected = float(c.D1(a) / c.D1(0.1))
        assert growth == pytest.approx(expected, rel=0.02)
        # displacement and velocity of the Zel'dovich solution: x - q = D1 Psi, v = 100 a E f D1 Psi
        disp = (snap.positions[:, 0] - q[:, 0] + L / 2) % L - L / 2
        assert disp @ psi / (psi @ psi) == pytest.approx(float(c.D1(a)), rel=0.02)
        v_expected = 100.0 * a * float(c.E(a) * c.f1(a) * c.D1(a))
        assert snap.velocities[:, 0] @ psi / (psi @ psi) == pytest.approx(v_expected, rel=0.02)


def test_run_outputs_density_fields():
    pm = ParticleMesh(16, 64.0, n_steps=2, mesh_factor=1)
    res = pm.run(redshifts=[1.0, 0.0], seed=7, box_id=3)
    assert [round(s.a, 6) for s in res.snapshots] == [0.5, 1.0]
    df = res.at(1.0).density
    assert isinstance(df, DensityField)
    assert df.delta.shape == (16, 16, 16) and df.box_size == 64.0 and df.box_id == 3
    assert df.redshift == pytest.approx(0.0, abs=1e-12)
    assert df.delta.mean() == pytest.approx(0.0, abs=1e-6)
    assert df.cosmology["Om0"] == pytest.approx(0.30966)
    # structure grows
    assert res.at(1.0).density.delta.std() > res.at(0.5).density.delta.std()
    # same seed -> same initial field; other box -> other field
    np.testing.assert_array_equal(pm.linear_field(7, 3), res.linear_delta)
    assert not np.allclose(pm.linear_field(7, 4), res.linear_delta)


def test_bad_arguments():
    with pytest.raises(ConfigError, match="box_size"):
        ParticleMesh(16, 0.0)
    with pytest.raises(ConfigError, match="gradient"):
        ParticleMesh(16, 10.0, gradient="exactly")
    with pytest.raises(ConfigError, match="a_out"):
        ParticleMesh(16, 10.0, a_init=0.2).run(a_out=[0.1])


@pytest.mark.parametrize("gradient", ["fd4", "fd2", "exact"])
def test_numpy_backend_force_equals_tensorflow_force(gradient):
    # clustered particles: a short run, then the force of both backends at the same positions
    n, L = 16, 64.0
    pos = ParticleMesh(n, L, n_steps=3, gradient=gradient).run(seed=5).snapshots[-1].positions
    g_np = ParticleMesh(n, L, gradient=gradient, backend="numpy").force(pos)
    g_tf = ParticleMesh(n, L, gradient=gradient, backend="tensorflow").force(pos)
    assert g_np.shape == g_tf.shape == (n**3, 3) and g_np.dtype == np.float32
    np.testing.assert_allclose(g_np, g_tf, rtol=0, atol=2e-6 * np.abs(g_tf).max())
    # momentum is conserved: paint and readout share the stencil, the gradient is odd
    assert np.abs(g_np.sum(axis=0)).max() < 1e-4 * np.abs(g_np).sum(axis=0).max()


def test_numpy_and_tensorflow_runs_agree():
    n, L = 32, 64.0
    runs = [ParticleMesh(n, L, n_steps=5, backend=b).run(a_out=[0.5, 1.0], seed=2)
            for b in ("numpy", "tensorflow")]
    for a in (0.5, 1.0):
        x0, x1 = runs[0].at(a).positions, runs[1].at(a).positions
        d = (x0 - x1 + L / 2) % L - L / 2
        assert np.abs(d).max() < 1e-5 * L  # float32 rounding only, after the chaos of 5 steps
        p0, p1 = runs[0].at(a).momenta, runs[1].at(a).momenta
        assert np.abs(p0 - p1).max() < 1e-4 * np.sqrt(np.mean(p1**2))
        assert np.all((x0 >= 0) & (x0 < L))
    # the structure is real: the particles moved by several Mpc/h
    assert runs[0].at(1.0).density.delta.std() > 1.0


def test_bad_backend_names_the_key():
    with pytest.raises(ConfigError) as e:
        ParticleMesh(16, 10.0, backend="jax")
    assert e.value.key == "backend"


def test_numpy_force_is_thread_safe_and_picklable():
    import pickle
    from concurrent.futures import ThreadPoolExecutor

    n, L = 16, 64.0
    pm = ParticleMesh(n, L, n_steps=2)
    pos = [pm.run(seed=s).snapshots[-1].positions for s in (1, 2)]
    alone = [pm.force(p) for p in pos]
    with ThreadPoolExecutor(2) as ex:  # one solver, two boxes at once (work arrays per thread)
        both = list(ex.map(pm.force, pos * 4))
    for i, g in enumerate(both):
        np.testing.assert_array_equal(g, alone[i % 2])
    clone = pickle.loads(pickle.dumps(pm))
    np.testing.assert_array_equal(clone.force(pos[0]), alone[0])


@pytest.mark.parametrize("gradient", ["fd4", "fd2"])
def test_stencil_derivative_equals_roll_formula(gradient):
    # fast path (shifted slices, no temporaries) == reference (np.roll), bit for bit: same
    # operations in the same order; non-cubic mesh so an axis mix-up cannot pass
    from astrogen.nbody.pm import stencil_derivative

    f = np.random.default_rng(3).normal(size=(6, 8, 10)).astype(np.float32)
    for axis in range(3):
        def r(k):
            return np.roll(f, -k, axis=axis)  # r(k)[i] = f[i + k]

        ref = r(1) - r(-1)
        if gradient == "fd4":
            ref = ref * np.float32(8.0) - r(2) + r(-2)
        out = np.full_like(f, np.nan)
        got = stencil_derivative(f, axis, gradient, out=out)
        assert got is out and got.dtype == np.float32
        np.testing.assert_array_equal(got, ref)
    # a linear ramp along the axis (periodic apart from the wrap) has a constant derivative
    ramp = np.arange(16, dtype=np.float64)[:, None] * np.ones((16, 4))
    d = stencil_derivative(ramp, 0, gradient) / (12.0 if gradient == "fd4" else 2.0)
    np.testing.assert_allclose(d[2:-2], 1.0, rtol=1e-12)
    with pytest.raises(ConfigError, match="gradient"):
        stencil_derivative(f, 0, "exact")


def test_numpy_force_of_small_contrast_is_accurate():
    # the fast path paints counts and folds the mass factor into the kernel: a 1e-4 plane wave
    # must still give the exact-kernel force of the float64 reference to float32 precision
    n, L = 16, 64.0
    pm = ParticleMesh(n, L, gradient="fd4", mesh_factor=2)
    q = lattice(n, L, 3, shift=pm.lattice_shift)
    amp = 1e-4 * L / (2 * np.pi)
    pos = q.copy()
    pos[:, 0] += amp * np.sin(2 * np.pi * q[:, 0] / L)
    g = pm.force(pos)
    # float64 reference: the same float32 particle cells (their rounding is not under test),
    # then paint, Fourier kernel of fd4 and readout all in float64
    from astrogen.nbody.mesh import cic_stencil, paint_stencil, readout_stencil

    nm = pm.n_mesh
    x32 = np.mod(pos.T, L).astype(np.float32) * np.float32(nm / L)
    cells = np.ascontiguousarray(x32, dtype=np.float64)
    idx, w = cic_stencil(cells, nm, dtype=np.float64)
    delta = paint_stencil(idx, w, nm) * (nm**3 / n**3) - 1.0
    kern = pm._kernels().astype(np.complex128)
    dk = np.fft.rfftn(delta)
    ref = np.stack([readout_stencil(np.fft.irfftn(dk * kern[i], s=(nm,) * 3, axes=(0, 1, 2)),
                                    idx, w)
                    for i in range(3)], axis=1)
    scale = np.abs(ref).max()
    assert scale > 0
    # measured 7e-7; rounding the counts to float32 before subtracting the mean would give ~6e-4
    np.testing.assert_allclose(g, ref, rtol=0, atol=1e-5 * scale)


@pytest.mark.parametrize("gradient", ["fd4", "exact"])
def test_compiled_kernels_give_the_numpy_trajectories(gradient):
    # the compiled paint / gradient / fused 3-component readout (numba) against the numpy
    # stencil path: the same trajectories after 5 steps (bit-identical on this machine; held
    # to float32 rounding)
    pytest.importorskip("numba")
    n, L = 16, 32.0
    runs = [ParticleMesh(n, L, n_steps=5, gradient=gradient, kernels=k).run(seed=4)
            for k in ("numba", "numpy")]
    assert runs[0].meta == runs[1].meta
    x0, x1 = runs[0].snapshots[-1].positions, runs[1].snapshots[-1].positions
    d = (x0 - x1 + L / 2) % L - L / 2
    assert np.abs(d).max() < 1e-5 * L
    p0, p1 = runs[0].snapshots[-1].momenta, runs[1].snapshots[-1].momenta
    assert np.abs(p0 - p1).max() < 1e-4 * np.sqrt(np.mean(p1**2))
    assert runs[0].snapshots[-1].density.delta.std() > 0.5  # the particles did move
    with pytest.raises(ConfigError) as e:
        ParticleMesh(16, 10.0, kernels="cython")
    assert e.value.key == "kernels"

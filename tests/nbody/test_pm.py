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

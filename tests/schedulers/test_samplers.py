"""Samplers: exactness with the true noise, determinism, and the law of the samples for
Gaussian data, whose exact noise predictor is analytic (see conftest.py)."""
import numpy as np
import pytest

from astrogen.errors import ConfigError
from astrogen.schedulers import (DDIMSampler, DDPMSampler, DPMSolverSampler, NoiseSchedule,
                                 Sampler)

SPACINGS = ["leading", "linspace", "trailing", "logsnr"]


def _x0(shape=(3, 8, 8, 1), seed=0):
    return np.random.default_rng(seed).normal(1.0, 2.0, size=shape)


# ---- the true noise ---------------------------------------------------------------------------
@pytest.mark.parametrize("num_steps", [10, 50])
@pytest.mark.parametrize("spacing", SPACINGS)
@pytest.mark.parametrize("cls", [DDIMSampler, DPMSolverSampler])
def test_deterministic_samplers_recover_x0_with_oracle(schedule, oracles, cls, spacing,
                                                        num_steps):
    x0 = _x0()
    sampler = cls(schedule, num_steps=num_steps, timestep_spacing=spacing)
    traj = []
    out = sampler.sample(oracles.oracle(schedule, x0), x0.shape, seed=4,
                         callback=lambda i, t, x: traj.append(x))
    assert len(traj) == num_steps
    np.testing.assert_allclose(out, x0, atol=1e-5, rtol=0)
    # ... and it did start from noise, not from the answer
    assert np.abs(traj[0] - x0).mean() > 0.5


@pytest.mark.parametrize("variance", ["posterior", "beta"])
def test_ddpm_ancestral_with_oracle_ends_at_x0(schedule, oracles, variance):
    x0 = _x0((2, 4, 4, 1))
    sampler = DDPMSampler(schedule, variance=variance)
    mid = {}
    out = sampler.sample(oracles.oracle(schedule, x0), x0.shape, seed=1,
                         callback=lambda i, t, x: mid.setdefault(t, x) if t == 500 else None)
    np.testing.assert_allclose(out, x0, atol=1e-5)
    # half-way the state is the noisy x_t of the forward process (mean sqrt(abar) x0)
    a = schedule.alpha_bar[499]
    z = (mid[500] - np.sqrt(a) * x0) / np.sqrt(1 - a)
    assert 0.5 < z.std() < 1.5


def test_ddim_eta1_full_steps_is_ddpm_posterior(cosine, oracles):
    eps = oracles.gaussian(cosine, 0.3, 0.6)
    a = DDIMSampler(cosine, num_steps=1000, eta=1.0).sample(eps, (4, 5), seed=7)
    b = DDPMSampler(cosine, variance="posterior").sample(eps, (4, 5), seed=7)
    np.testing.assert_allclose(a, b, atol=1e-9)


def test_dpm_solver_order1_is_ddim(cosine, oracles):
    eps = oracles.gaussian(cosine, 0.3, 0.6)
    a = DPMSolverSampler(cosine, num_steps=12, order=1).sample(eps, (4, 5), seed=7)
    b = DDIMSampler(cosine, num_steps=12, eta=0.0).sample(eps, (4, 5), seed=7)
    np.testing.assert_allclose(a, b, atol=1e-10)


# ---- seeds ----------------------------------------------------------------------------------
@pytest.mark.parametrize("make", [
    lambda s: DDPMSampler(s, num_steps=20),
    lambda s: DDIMSampler(s, num_steps=10),
    lambda s: DDIMSampler(s, num_steps=10, eta=0.5),
    lambda s: DPMSolverSampler(s, num_steps=10),
])
def test_deterministic_under_seed_and_different_across_seeds(cosine, oracles, make):
    sampler = make(cosine)
    eps = oracles.gaussian(cosine, 0.0, 0.5)
    a = sampler.sample(eps, (3, 6), seed=11)
    b = sampler.sample(eps, (3, 6), seed=11)
    c = sampler.sample(eps, (3, 6), seed=12)
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).min() > 1e-6


def test_per_row_seeds_make_samples_independent_of_the_batch(cosine, oracles):
    from astrogen.seeds import row_seeds

    seeds = row_seeds(2024, np.arange(5))
    eps = oracles.gaussian(cosine, 0.0, 0.5)
    sampler = DDPMSampler(cosine, num_steps=25)
    full = sampler.sample(eps, (5, 3), seed=seeds)
    part = sampler.sample(eps, (2, 3), seed=seeds[[3, 1]])
    np.testing.assert_allclose(part, full[[3, 1]], rtol=0, atol=1e-12)


def test_stochastic_ddim_differs_from_deterministic(cosine, oracles):
    eps = oracles.gaussian(cosine, 0.0, 0.5)
    a = DDIMSampler(cosine, 10, eta=0.0).sample(eps, (3, 4), seed=3)
    b = DDIMSampler(cosine, 10, eta=1.0).sample(eps, (3, 4), seed=3)
    assert np.abs(a - b).max() > 1e-3


# ---- Gaussian data: the law of the samples ----------------------------------------------------
MU, S, N = 0.7, 0.5, 20_000


def _check_law(out, mu, s, extra_std_tol=0.0):
    """Mean and std within 4 Monte-Carlo sigmas (+ an allowance for known bias)."""
    n = out.size
    assert abs(out.mean() - mu) < 4 * s / np.sqrt(n), out.mean()
    assert abs(out.std() / s - 1) < 4 / np.sqrt(2 * n) + extra_std_tol, out.std()


@pytest.mark.parametrize("variance", ["posterior", "beta"])
def test_ddpm_1000_steps_samples_gaussian_data(cosine, oracles, variance):
    out = DDPMSampler(cosine, variance=variance).sample(oracles.gaussian(cosine, MU, S),
                                                        (N, 1), seed=5)
    _check_law(out, MU, S)


def test_dpm_solver_50_steps_samples_gaussian_data(cosine, oracles):
    out = DPMSolverSampler(cosine, 50).sample(oracles.gaussian(cosine, MU, S), (N, 1), seed=5)
    _check_law(out, MU, S)


def test_ddim_samples_gaussian_data(cosine, oracles):
    eps = oracles.gaussian(cosine, MU, S)
    # DDIM is a first-order solver: at 50 steps its std is ~3 % low for this narrow
    # distribution (see the convergence test below), more than the 1.4 % MC tolerance
    _check_law(DDIMSampler(cosine, 50).sample(eps, (N, 1), seed=5), MU, S, extra_std_tol=0.04)
    _check_law(DDIMSampler(cosine, 500).sample(eps, (N, 1), seed=5), MU, S)


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_convergence_orders_against_exact_flow_map(kind, oracles):
    """For Gaussian data the probability-flow ODE map x_T -> x_0 is affine and known: DDIM's
    error falls ~2x per doubling of steps (first order), DPM-Solver++(2M)'s ~4x. Steps are
    evenly spaced in log-SNR so that the step size is the only thing that changes."""
    sched = NoiseSchedule(kind=kind)
    eps = oracles.gaussian(sched, MU, S)
    x_T = np.random.default_rng(0).standard_normal((2000, 1))
    exact = oracles.flow_map(sched, x_T, MU, S)

    def err(cls, n):
        out = cls(sched, n, timestep_spacing="logsnr").sample(eps, x_T=x_T)
        return np.sqrt(np.mean((out - exact) ** 2)) / S

    e_ddim = [err(DDIMSampler, n) for n in (50, 100, 200)]
    e_dpm = [err(DPMSolverSampler, n) for n in (50, 100, 200)]
    for e in (e_ddim, e_dpm):
        assert e[0] > e[1] > e[2]
    ratios_ddim = [e_ddim[0] / e_ddim[1], e_ddim[1] / e_ddim[2]]
    ratios_dpm = [e_dpm[0] / e_dpm[1], e_dpm[1] / e_dpm[2]]
    assert all(1.6 < r < 2.5 for r in ratios_ddim), ratios_ddim
    assert all(r > 3.3 for r in ratios_dpm), ratios_dpm
    assert e_dpm[0] < e_ddim[2]          # 50 second-order steps beat 200 first-order ones


# ---- interface --------------------------------------------------------------------------------
def test_tensorflow_in_out(cosine, oracles):
    tf = pytest.importorskip("tensorflow")
    x0 = _x0((2, 4, 4, 1))
    x_T = tf.random.stateless_normal(x0.shape, seed=(1, 2), dtype=tf.float32)
    oracle = oracles.oracle(cosine, x0)
    out = DDIMSampler(cosine, 10).sample(lambda x, t, c: tf.constant(oracle(x, t, c)), x_T=x_T)
    assert tf.is_tensor(out) and out.dtype == tf.float32
    np.testing.assert_allclose(out.numpy(), x0, atol=1e-5)


def test_cond_and_timesteps_reach_the_model(cosine):
    seen = []

    def eps_model(x, t, cond):
        seen.append((t.copy(), cond))
        return np.zeros_like(x)

    s = DDIMSampler(cosine, 5)
    s.sample(eps_model, (3, 2), cond="c", seed=0)
    assert [int(t[0]) for t, _ in seen] == list(s.timesteps)
    assert all(t.shape == (3,) and t.dtype == np.int64 and c == "c" for t, c in seen)


def test_progress_bar_is_optional(cosine, oracles, capsys):
    DDIMSampler(cosine, 3).sample(oracles.gaussian(cosine, 0, 1), (1, 1), seed=0)
    assert capsys.readouterr().err == ""
    DDIMSampler(cosine, 3).sample(oracles.gaussian(cosine, 0, 1), (1, 1), seed=0,
                                  progress=True)


@pytest.mark.parametrize("make, key", [
    (lambda s: DDIMSampler(s, num_steps=0), "num_steps"),
    (lambda s: DDIMSampler(s, num_steps=1001), "num_steps"),
    (lambda s: DDIMSampler(s, eta=1.5), "eta"),
    (lambda s: DDIMSampler(s, timestep_spacing="evenly"), "timestep_spacing"),
    (lambda s: DDPMSampler(s, variance="fixed_small"), "variance"),
    (lambda s: DPMSolverSampler(s, order=3), "order"),
    (lambda s: DDIMSampler(s, clip_x0=(1, -1)), "clip_x0"),
    (lambda s: DDIMSampler("cosine"), "schedule"),
])
def test_sampler_argument_errors(cosine, make, key):
    with pytest.raises(ConfigError) as e:
        make(cosine)
    assert e.value.key == key


def test_sample_call_errors(cosine):
    s = DDIMSampler(cosine, 3)
    with pytest.raises(ConfigError, match="shape of x_t"):
        s.sample(lambda x, t, c: x[:, :1], (2, 3), seed=0)
    with pytest.raises(ConfigError) as e:
        s.sample(lambda x, t, c: x, (2, 3), seed=-1)
    assert e.value.key == "seed"
    with pytest.raises(ConfigError, match="shape or x_T"):
        s.sample(lambda x, t, c: x)
    with pytest.raises(ConfigError, match="one seed per row"):
        s.sample(lambda x, t, c: x, (2, 3), seed=np.arange(3, dtype=np.uint64))


def test_clip_x0_bounds_the_prediction(cosine):
    s = DDIMSampler(cosine, 5, clip_x0=(-1, 1))
    out = s.sample(lambda x, t, c: -10 * np.ones_like(x), (2, 3), seed=0)
    assert np.all(np.abs(out) <= 1 + 1e-12)
    assert isinstance(s, Sampler)


# ---- max_timestep: start below the near-zero-SNR end of the schedule -----------------------
@pytest.mark.parametrize("cls", [DDIMSampler, DPMSolverSampler, DDPMSampler])
def test_max_timestep_bounds_the_timesteps_and_keeps_exactness(cosine, oracles, cls):
    x0 = _x0((2, 4, 4, 1))
    tmax = int(np.nonzero(cosine.alpha_bar >= 1e-2)[0].max())
    smp = cls(cosine, num_steps=20, max_timestep=tmax)
    ts = smp.timesteps
    assert ts[0] == tmax and ts.max() <= tmax and smp.max_timestep == tmax
    # the default is unchanged: trailing starts at T - 1
    assert cls(cosine, num_steps=20).timesteps[0] == 999
    out = smp.sample(oracles.oracle(cosine, x0), x0.shape, seed=3)
    np.testing.assert_allclose(out, x0, atol=1e-5)
    # all the timesteps up to max_timestep: as many steps as there are
    assert len(cls(cosine, num_steps=None, max_timestep=tmax).timesteps) == tmax + 1


def test_max_timestep_errors(cosine):
    with pytest.raises(ConfigError, match="max_timestep") as e:
        DDIMSampler(cosine, num_steps=10, max_timestep=1000)
    assert e.value.received == {"max_timestep": 1000}
    with pytest.raises(ConfigError, match=r"\[1, 51\]") as e:
        DDIMSampler(cosine, num_steps=60, max_timestep=50)
    assert e.value.key == "num_steps"

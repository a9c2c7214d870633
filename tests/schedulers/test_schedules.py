"""Noise schedules: shapes, endpoints, monotonicity and the law of q(x_t | x_0)."""
import numpy as np
import pytest

from astrogen.errors import ConfigError
from astrogen.schedulers import (NoiseSchedule, cosine_beta_schedule, linear_beta_schedule,
                                 make_timesteps)
from astrogen.schedulers.schedules import cosine_alpha_bar


def test_betas_in_unit_interval_and_alpha_bar_monotone(schedule):
    b = schedule.betas
    assert b.shape == (1000,) and b.dtype == np.float64
    assert np.all((b > 0) & (b < 1))
    assert np.all(np.diff(schedule.alpha_bar) < 0)
    assert 0 < schedule.alpha_bar[-1] < schedule.alpha_bar[0] < 1
    np.testing.assert_allclose(schedule.alpha_bar, np.cumprod(1 - b), rtol=1e-12)
    np.testing.assert_allclose(schedule.alpha_bar_prev[1:], schedule.alpha_bar[:-1])
    assert schedule.alpha_bar_prev[0] == 1.0
    # the forward process ends (almost) at pure noise and starts (almost) at the data
    assert schedule.alpha_bar[-1] < 1e-4 and schedule.alpha_bar[0] > 0.999
    # snr is decreasing and log_snr is its log
    t = np.arange(1000)
    assert np.all(np.diff(schedule.snr(t)) < 0)
    np.testing.assert_allclose(schedule.log_snr(t), np.log(schedule.snr(t)), rtol=1e-10)


def test_linear_schedule_endpoints():
    b = linear_beta_schedule(1000, 1e-4, 0.02)
    assert b[0] == pytest.approx(1e-4) and b[-1] == pytest.approx(0.02)
    np.testing.assert_allclose(np.diff(b), (0.02 - 1e-4) / 999, rtol=1e-9)


def test_cosine_schedule_endpoints_and_formula():
    T, s = 1000, 0.008
    sched = NoiseSchedule.cosine(T, s=s, max_beta=0.999)
    ab = sched.alpha_bar
    # continuous alpha_bar(0) = 1, alpha_bar(1) = 0 exactly
    assert cosine_alpha_bar(0.0, s) == pytest.approx(1.0)
    assert cosine_alpha_bar(1.0, s) == pytest.approx(0.0, abs=1e-30)
    # discrete alpha_bar[t] = f((t+1)/T)/f(0) wherever beta is not clipped
    unclipped = sched.betas < 0.999
    assert unclipped[:-1].all() and not unclipped[-1]      # only the very last beta is clipped
    t = np.arange(T)[unclipped]
    np.testing.assert_allclose(ab[t], cosine_alpha_bar((t + 1) / T, s), rtol=1e-9)
    assert sched.betas[-1] == 0.999
    # first beta: 1 - f(1/T)/f(0), tiny
    assert sched.betas[0] == pytest.approx(1 - cosine_alpha_bar(1 / T, s), rel=1e-9)
    assert sched.betas[0] < 1e-4
    # the cosine schedule destroys information more slowly than the linear one mid-way
    assert ab[500] > NoiseSchedule.linear(T).alpha_bar[500]
    assert np.all(np.diff(cosine_beta_schedule(T)) >= 0)


def test_q_sample_mean_and_variance_monte_carlo(schedule):
    rng = np.random.default_rng(123)
    n = 200_000
    x0 = np.array([-2.0, 0.0, 0.5, 3.0])
    for t in (0, 10, 250, 600, 999):
        xs = np.broadcast_to(x0, (n, 4))
        noise = rng.standard_normal((n, 4))
        xt = schedule.q_sample(xs, np.full(n, t), noise)
        mean, var = schedule.q_mean_variance(x0[None], t)
        var = float(np.squeeze(var))
        assert var == pytest.approx(1 - schedule.alpha_bar[t])
        np.testing.assert_allclose(mean[0], np.sqrt(schedule.alpha_bar[t]) * x0)
        # 5-sigma Monte-Carlo tolerances: sd(mean) = sqrt(var/n), sd(var) = var*sqrt(2/n)
        assert np.all(np.abs(xt.mean(0) - mean[0]) < 5 * np.sqrt(var / n))
        assert np.all(np.abs(xt.var(0) - var) < 5 * var * np.sqrt(2 / n))


def test_q_sample_per_row_timesteps_and_inverses(cosine):
    rng = np.random.default_rng(0)
    x0 = rng.normal(size=(3, 4, 4, 1))
    eps = rng.normal(size=x0.shape)
    t = np.array([0, 500, 999])
    xt = cosine.q_sample(x0, t, eps)
    for i in range(3):
        np.testing.assert_allclose(xt[i], cosine.q_sample(x0[i:i + 1], t[i], eps[i:i + 1])[0])
    np.testing.assert_allclose(cosine.predict_x0(xt, t, eps), x0, atol=1e-8)
    np.testing.assert_allclose(cosine.predict_eps(xt, t, x0), eps, atol=1e-10)


def test_q_sample_tensorflow_in_out(cosine):
    tf = pytest.importorskip("tensorflow")
    rng = np.random.default_rng(0)
    x0 = rng.normal(size=(2, 3, 3, 1)).astype(np.float32)
    eps = rng.normal(size=x0.shape).astype(np.float32)
    t = np.array([3, 800])
    out = cosine.q_sample(tf.constant(x0), tf.constant(t), tf.constant(eps))
    assert tf.is_tensor(out) and out.dtype == tf.float32
    np.testing.assert_allclose(out.numpy(), cosine.q_sample(x0, t, eps), rtol=1e-5, atol=1e-6)


def test_schedule_config_round_trip():
    s = NoiseSchedule.cosine(200, s=0.01)
    s2 = NoiseSchedule.from_config(s.get_config())
    np.testing.assert_array_equal(s.betas, s2.betas)
    s3 = NoiseSchedule(np.linspace(1e-3, 0.05, 50))
    np.testing.assert_array_equal(NoiseSchedule.from_config(s3.get_config()).betas, s3.betas)


@pytest.mark.parametrize("spacing", ["leading", "linspace", "trailing", "logsnr"])
@pytest.mark.parametrize("n", [1, 7, 10, 50, 999, 1000])
def test_timesteps_decreasing_unique_in_range(spacing, n, cosine):
    ts = make_timesteps(1000, n, spacing, cosine.alpha_bar)
    assert len(ts) == n and np.all(np.diff(ts) < 0) and ts[0] <= 999 and ts[-1] >= 0
    if n == 1000:
        np.testing.assert_array_equal(ts, np.arange(999, -1, -1))
    if spacing in ("linspace", "trailing", "logsnr"):
        assert ts[0] == 999
    if spacing in ("leading", "linspace", "logsnr") and n > 1:
        assert ts[-1] == 0


@pytest.mark.parametrize("kwargs, key", [
    (dict(kind="linear", num_train_steps=0), "num_train_steps"),
    (dict(kind="linear", num_train_steps=10.5), "num_train_steps"),
    (dict(kind="linear", beta_start=0.02, beta_end=0.01), "beta_end"),
    (dict(kind="linear", beta_end=1.0), "beta_end"),
    (dict(kind="cosine", max_beta=1.5), "max_beta"),
    (dict(kind="cosin"), "kind"),
    (dict(betas=[0.1, 1.2]), "betas"),
    (dict(betas=[[0.1, 0.2]]), "betas"),
])
def test_schedule_argument_errors(kwargs, key):
    with pytest.raises(ConfigError) as e:
        NoiseSchedule(**kwargs)
    assert e.value.key == key


def test_error_messages_are_helpful(cosine):
    with pytest.raises(ConfigError, match="Did you mean 'cosine'"):
        NoiseSchedule(kind="cosin")
    with pytest.raises(ConfigError, match=r"\[0, 1000\)"):
        cosine.q_sample(np.zeros((1, 2)), 1000, np.zeros((1, 2)))
    with pytest.raises(ConfigError, match="integers"):
        cosine.snr(np.array([0.5]))
    with pytest.raises(ConfigError, match="shape of x0"):
        cosine.q_sample(np.zeros((2, 2)), 1, np.zeros((2, 3)))
    with pytest.raises(ConfigError, match="one timestep per row"):
        cosine.q_sample(np.zeros((2, 2)), np.array([1, 2, 3]), np.zeros((2, 2)))

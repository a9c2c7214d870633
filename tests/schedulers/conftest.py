"""Analytic noise models for testing samplers without a network."""
import numpy as np
import pytest

from astrogen.schedulers import NoiseSchedule


def _abar(sched, t, ndim):
    return sched.alpha_bar[np.asarray(t)].reshape((-1,) + (1,) * (ndim - 1))


def make_oracle(sched, x0):
    """The true noise for a known x0: eps = (x_t - sqrt(abar) x0) / sqrt(1 - abar)."""
    x0 = np.asarray(x0, dtype=np.float64)

    def eps_model(x, t, cond):
        a = _abar(sched, t, x.ndim)
        return (x - np.sqrt(a) * x0) / np.sqrt(1.0 - a)

    return eps_model


def make_gaussian_eps(sched, mu, s):
    """Exact eps-prediction E[eps | x_t] for data x0 ~ N(mu, s^2) (independent pixels):
    x_t ~ N(sqrt(a) mu, a s^2 + 1 - a) and E[eps|x_t] = sqrt(1-a)(x_t - sqrt(a) mu)/var."""

    def eps_model(x, t, cond):
        a = _abar(sched, t, x.ndim)
        return np.sqrt(1.0 - a) * (x - np.sqrt(a) * mu) / (a * s ** 2 + 1.0 - a)

    return eps_model


def gaussian_flow_map(sched, x_T, mu, s):
    """Exact probability-flow ODE map from t=T-1 to data for N(mu, s^2) data (affine)."""
    a = sched.alpha_bar[-1]
    return mu + (x_T - np.sqrt(a) * mu) / np.sqrt(a * s ** 2 + 1.0 - a) * s


@pytest.fixture(scope="session", params=["linear", "cosine"])
def schedule(request):
    return NoiseSchedule(kind=request.param, num_train_steps=1000)


@pytest.fixture(scope="session")
def cosine():
    return NoiseSchedule.cosine(1000)


@pytest.fixture(scope="session")
def oracles():
    """Namespace of the analytic helpers above."""
    class _O:
        oracle = staticmethod(make_oracle)
        gaussian = staticmethod(make_gaussian_eps)
        flow_map = staticmethod(gaussian_flow_map)
    return _O

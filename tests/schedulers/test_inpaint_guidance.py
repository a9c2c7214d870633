"""Inpainting (data consistency, RePaint) and classifier-free guidance."""
import numpy as np
import pytest

from astrogen.errors import ConfigError
from astrogen.schedulers import (DDIMSampler, DDPMSampler, DPMSolverSampler, guided, inpaint)


def _problem(seed=0):
    rng = np.random.default_rng(seed)
    x0 = rng.normal(0.5, 1.5, size=(2, 8, 8, 1))
    mask = np.zeros((1, 8, 8, 1))
    mask[:, :, :4] = 1.0                      # left half known
    x_known = np.where(mask > 0, x0, np.nan)  # unknown pixels may be NaN
    return x0, mask, x_known


@pytest.mark.parametrize("make", [lambda s: DDIMSampler(s, 20),
                                  lambda s: DPMSolverSampler(s, 15),
                                  lambda s: DDPMSampler(s, 100)])
def test_inpaint_with_oracle(cosine, oracles, make):
    x0, mask, x_known = _problem()
    seen = []
    oracle = oracles.oracle(cosine, x0)

    def eps_model(x, t, c):
        seen.append((int(t[0]), x.copy()))
        return oracle(x, t, c)

    out = inpaint(make(cosine), eps_model, x_known, mask, seed=3)
    m = np.broadcast_to(mask, x0.shape) > 0
    np.testing.assert_array_equal(out[m], x0[m])             # known pixels kept exactly
    np.testing.assert_allclose(out[~m], x0[~m], atol=1e-5)   # unknown ones reproduced
    # data consistency: the known pixels the model saw were draws of q(x_t | x_known)
    t, x = seen[len(seen) // 2]
    a = cosine.alpha_bar[t]
    z = (x[m] - np.sqrt(a) * x0[m]) / np.sqrt(1 - a)
    assert abs(z.mean()) < 0.5 and 0.6 < z.std() < 1.4


def test_inpaint_repaint_resampling_approaches_the_exact_conditional(cosine):
    """Two correlated pixels, x1 known: the exact conditional of x2 is Gaussian. Plain
    replacement is biased (a known limitation); RePaint resampling removes most of it."""
    s, rho, m = 0.5, 0.8, np.array([0.3, -0.2])

    def eps2(x, t, c):  # exact E[eps | x_t] for x0 ~ N(m, s^2 [[1, rho], [rho, 1]])
        a = cosine.alpha_bar[t][:, None]
        v, cv = a * s * s + 1 - a, a * s * s * rho
        r = x - np.sqrt(a) * m
        sol = np.concatenate([v * r[:, :1] - cv * r[:, 1:], -cv * r[:, :1] + v * r[:, 1:]], 1)
        return np.sqrt(1 - a) * sol / (v * v - cv * cv)

    n, x1 = 4000, 0.6
    xk = np.zeros((n, 2))
    xk[:, 0] = x1
    mask = np.array([1.0, 0.0])
    want_m, want_s = m[1] + rho * (x1 - m[0]), s * np.sqrt(1 - rho ** 2)
    sampler = DDPMSampler(cosine, 100)
    plain = inpaint(sampler, eps2, xk, mask, seed=3)[:, 1]
    repaint = inpaint(sampler, eps2, xk, mask, seed=3, resample=5)[:, 1]
    bias_plain = (plain.mean() - want_m) / want_s
    bias_repaint = (repaint.mean() - want_m) / want_s
    # Monte-Carlo sd of these biases is 1/sqrt(4000) = 0.016
    assert abs(bias_plain) > 0.2
    assert abs(bias_repaint) < 0.12 and abs(bias_repaint) < abs(bias_plain) / 3
    assert abs(repaint.std() / want_s - 1) < 0.12


def test_inpaint_is_deterministic_under_seed(cosine, oracles):
    x0, mask, x_known = _problem()
    eps = oracles.gaussian(cosine, 0.0, 1.0)
    a = inpaint(DDPMSampler(cosine, 20), eps, x_known, mask, seed=1, resample=2)
    b = inpaint(DDPMSampler(cosine, 20), eps, x_known, mask, seed=1, resample=2)
    c = inpaint(DDPMSampler(cosine, 20), eps, x_known, mask, seed=2, resample=2)
    np.testing.assert_array_equal(a, b)
    unknown = np.broadcast_to(mask, x0.shape) == 0
    assert np.all(a[unknown] != c[unknown])


def test_inpaint_argument_errors(cosine, oracles):
    x0, mask, x_known = _problem()
    eps = oracles.oracle(cosine, x0)
    s = DDIMSampler(cosine, 5)
    with pytest.raises(ConfigError) as e:
        inpaint(s, eps, x_known, mask * 2)
    assert e.value.key == "mask"
    with pytest.raises(ConfigError) as e:
        inpaint(s, eps, x_known, np.ones((3, 3)))
    assert e.value.key == "mask"
    with pytest.raises(ConfigError) as e:
        inpaint(s, eps, np.full_like(x0, np.nan), mask)
    assert e.value.key == "x_known"
    with pytest.raises(ConfigError) as e:
        inpaint(s, eps, x_known, mask, resample=0)
    assert e.value.key == "resample"
    with pytest.raises(ConfigError) as e:
        inpaint("ddim", eps, x_known, mask)
    assert e.value.key == "sampler"


# ---- classifier-free guidance ----------------------------------------------------------------
def _toy_conditional_model():
    calls = []

    def eps_model(x, t, cond):
        calls.append(cond)
        base = 0.1 * x + 1e-3 * t.reshape(-1, 1)
        return base if cond is None else base + np.asarray(cond)

    return eps_model, calls


def test_guidance_scales():
    model, calls = _toy_conditional_model()
    x, t = np.random.default_rng(0).normal(size=(3, 2)), np.array([5, 5, 5])
    c = np.array([[1.0, -1.0]] * 3)
    u, k = model(x, t, None), model(x, t, c)
    np.testing.assert_array_equal(guided(model, c, None, 0.0)(x, t), u)
    np.testing.assert_array_equal(guided(model, c, None, 1.0)(x, t), k)
    np.testing.assert_allclose(guided(model, c, None, 3.0)(x, t), u + 3 * (k - u))
    # a cond passed by the sampler replaces the bound one
    np.testing.assert_allclose(guided(model, c, None, 2.0)(x, t, 2 * c), u + 4 * c)
    calls.clear()
    guided(model, c, None, 0.0)(x, t)
    assert calls == [None]                               # w = 0: one unconditional call


def test_guided_model_drives_a_sampler(cosine):
    model, _ = _toy_conditional_model()
    c = np.full((4, 2), 0.5)
    g = guided(model, c, None, 2.0)
    a = DDIMSampler(cosine, 5).sample(g, (4, 2), seed=0)
    b = DDIMSampler(cosine, 5).sample(g, (4, 2), seed=0)
    u = DDIMSampler(cosine, 5).sample(guided(model, c, None, 0.0), (4, 2), seed=0)
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - u).max() > 1e-3


@pytest.mark.parametrize("scale", [float("nan"), "2", None, True])
def test_guidance_argument_errors(scale):
    with pytest.raises(ConfigError) as e:
        guided(lambda x, t, c: x, None, None, scale)
    assert e.value.key == "scale"
    with pytest.raises(ConfigError):
        guided("model", None, None, 1.0)

r"""Inpainting with an unconditional (or conditional) diffusion model.

At every reverse step the known pixels of :math:`x_t` are replaced by a fresh draw of
:math:`q(x_t | x_0^{\rm known})` (the "replacement" / data-consistency method of Song et al.
2021, arXiv:2011.13456, App. I), so the network sees a state consistent with the data and
fills in the rest. RePaint (Lugmayr et al. 2022, arXiv:2201.09865) improves the harmony of
the two regions by ``resample`` > 1: after a step :math:`t \to s` the sample is diffused back
with :math:`q(x_t|x_s)=N(\sqrt{\bar\alpha_t/\bar\alpha_s}x_s,(1-\bar\alpha_t/\bar\alpha_s)I)`
and the step is redone (jump length 1). The known pixels of the result are exactly
``x_known``.

Typical uses: masked pixels (cosmic rays, bad columns, blended neighbours), extending
stamps beyond their edges.
"""
from __future__ import annotations

from numbers import Integral
from typing import Any, Callable

import numpy as np

from astrogen.errors import ConfigError
from astrogen.schedulers._arrays import NoiseSource, like, to_numpy
from astrogen.schedulers.base import Sampler

__all__ = ["inpaint"]


def inpaint(sampler: Sampler, eps_model: Callable, x_known: Any, mask: Any, *,
            cond: Any = None, seed: Any = 0, x_T: Any = None, resample: int = 1,
            progress: bool = False):
    """Sample the unknown pixels given the known ones.

    Parameters
    ----------
    sampler : Sampler
        Any sampler of :mod:`astrogen.schedulers` (its timesteps and update are used).
    eps_model : callable ``(x_t, t, cond) -> eps_hat``
    x_known : array (batch, ...)
        The data; values where ``mask == 0`` are ignored (may be NaN).
    mask : array broadcastable to ``x_known``
        1 where the pixel is known, 0 where it is to be generated (values in [0, 1]).
    cond, seed, x_T, progress :
        As in :meth:`Sampler.sample`.
    resample : int
        RePaint resampling: number of times each step is done (1 = plain replacement).

    Returns
    -------
    numpy float64 array like ``x_known`` (a TF tensor if ``x_known`` was one).
    """
    if not isinstance(sampler, Sampler):
        raise ConfigError("must be an astrogen.schedulers sampler.", key="sampler",
                          received={"sampler": type(sampler).__name__})
    if isinstance(resample, bool) or not isinstance(resample, Integral) or resample < 1:
        raise ConfigError("must be an integer >= 1.", key="resample",
                          received={"resample": resample})
    xk = to_numpy(x_known)
    if xk.ndim < 1 or xk.size == 0:
        raise ConfigError("must be a non-empty array (batch, ...).", key="x_known",
                          received={"shape": xk.shape})
    m = to_numpy(mask)
    try:
        m = np.broadcast_to(m, xk.shape)
    except ValueError:
        raise ConfigError("must broadcast to the shape of x_known.", key="mask",
                          received={"mask": m.shape, "x_known": xk.shape}) from None
    if not np.all((m >= 0) & (m <= 1)):
        raise ConfigError("values must be in [0, 1] (1 = known pixel).", key="mask",
                          received={"min": float(np.nanmin(m)), "max": float(np.nanmax(m))})
    xk = np.where(m > 0, xk, 0.0)
    if not np.all(np.isfinite(xk)):
        raise ConfigError("known pixels (mask > 0) must be finite.", key="x_known",
                          received={"n_bad": int(np.sum(~np.isfinite(xk)))})

    noise = NoiseSource(seed, xk.shape[0])
    x = noise.normal(xk.shape) if x_T is None else to_numpy(x_T)
    if x.shape != xk.shape:
        raise ConfigError("must have the shape of x_known.", key="x_T",
                          received={"x_T": x.shape, "x_known": xk.shape})
    sched = sampler.schedule
    ts = sampler.timesteps
    n = sampler.num_steps
    state = sampler.init_state()
    for i in Sampler._progress(range(n), progress, "inpaint"):
        t = int(ts[i])
        rounds = resample if i < n - 1 else 1
        for u in range(rounds):
            known_t = sched.q_sample(xk, np.full(xk.shape[0], t), noise.normal(xk.shape))
            x = m * known_t + (1.0 - m) * x
            eps = Sampler.call_model(eps_model, x, t, cond)
            final = u == rounds - 1
            x_prev = sampler.step(eps, i, x, noise, state if final else dict(state))
            if not final:  # RePaint: diffuse back from prev_timestep(i) to t and redo
                r = sched.alpha_bar[t] / sched.alpha_bar[sampler.prev_timestep(i)]
                x = np.sqrt(r) * x_prev + np.sqrt(1.0 - r) * noise.normal(xk.shape)
        x = x_prev
    x = m * xk + (1.0 - m) * x
    return like(x, x_known)

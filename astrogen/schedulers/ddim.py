r"""Denoising diffusion implicit models (Song, Meng & Ermon 2021, arXiv:2010.02502, eq. 12).

.. math::
    x_s = \sqrt{\bar\alpha_s}\,\hat x_0
        + \sqrt{1-\bar\alpha_s-\sigma_t^2}\,\hat\epsilon + \sigma_t z, \qquad
    \sigma_t = \eta\sqrt{\frac{1-\bar\alpha_s}{1-\bar\alpha_t}}
               \sqrt{1-\frac{\bar\alpha_t}{\bar\alpha_s}}

for any decreasing subsequence of timesteps ``t -> s``. ``eta = 0`` is deterministic (an
Euler step of the probability-flow ODE in the variable :math:`x/\sqrt{\bar\alpha}`), and
``eta = 1`` with all ``T`` steps is the DDPM sampler with the posterior variance.
"""
from __future__ import annotations

from numbers import Real
from typing import Sequence

import numpy as np

from astrogen.errors import ConfigError
from astrogen.schedulers._arrays import NoiseSource
from astrogen.schedulers.base import Sampler
from astrogen.schedulers.schedules import NoiseSchedule

__all__ = ["DDIMSampler"]


class DDIMSampler(Sampler):
    """DDIM sampler.

    Parameters
    ----------
    schedule : NoiseSchedule
    num_steps : int
        Number of network evaluations (default 50).
    eta : float in [0, 1]
        Stochasticity; 0 (default) is deterministic given the starting noise.
    timestep_spacing : {"trailing", "leading", "linspace"}
        See :func:`~astrogen.schedulers.base.make_timesteps`; ``"leading"`` is the DDIM
        paper's uniform choice.
    clip_x0 : (float, float), optional
    max_timestep : int, optional
        See :class:`~astrogen.schedulers.base.Sampler`.
    """

    def __init__(self, schedule: NoiseSchedule, num_steps: int | None = 50, eta: float = 0.0,
                 timestep_spacing: str = "trailing", clip_x0: Sequence[float] | None = None,
                 max_timestep: int | None = None):
        if isinstance(eta, bool) or not isinstance(eta, Real) or not 0.0 <= eta <= 1.0:
            raise ConfigError("must be a number in [0, 1].", key="eta", received={"eta": eta})
        super().__init__(schedule, num_steps, timestep_spacing, clip_x0, max_timestep)
        self.eta = float(eta)
        self.stochastic = self.eta > 0
        a, ap = self._abar, self._abar_prev
        self._sigma = self.eta * np.sqrt((1.0 - ap) / (1.0 - a) * (1.0 - a / ap))
        self._dir = np.sqrt(np.maximum(1.0 - ap - self._sigma ** 2, 0.0))

    def step(self, eps: np.ndarray, i: int, x_t: np.ndarray, noise: NoiseSource,
             state: dict) -> np.ndarray:
        x0 = self.predict_x0(x_t, eps, i)
        if self.clip_x0 is not None:  # keep x0 and eps consistent after clipping
            a = self._abar[i]
            eps = (x_t - np.sqrt(a) * x0) / np.sqrt(1.0 - a)
        x = np.sqrt(self._abar_prev[i]) * x0 + self._dir[i] * eps
        if self.stochastic and i < self.num_steps - 1:
            x = x + self._sigma[i] * noise.normal(x_t.shape)
        return x

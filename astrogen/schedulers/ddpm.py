r"""Ancestral sampling of Ho et al. (2020, arXiv:2006.11239, Algorithm 2).

Each step draws :math:`x_{s} \sim N(\tilde\mu(x_t, \hat x_0), \sigma_t^2 I)` from the
Gaussian posterior :math:`q(x_s | x_t, x_0)` with the network's :math:`\hat x_0`, where
:math:`s` is the next visited timestep. With all ``T`` timesteps (the default) this is the
paper's sampler; with fewer, the betas are re-derived from the visited
:math:`\bar\alpha` (:math:`\beta'_t = 1-\bar\alpha_t/\bar\alpha_s`, "respacing", Nichol &
Dhariwal 2021), so the same model serves any number of steps.

.. math::
    \tilde\mu = \frac{\sqrt{\bar\alpha_s}\beta'_t}{1-\bar\alpha_t}\hat x_0
              + \frac{\sqrt{1-\beta'_t}(1-\bar\alpha_s)}{1-\bar\alpha_t}x_t, \qquad
    \tilde\beta_t = \frac{1-\bar\alpha_s}{1-\bar\alpha_t}\beta'_t .

``variance="posterior"`` uses :math:`\sigma_t^2=\tilde\beta_t` (the lower bound, exact when
the data is a point), ``variance="beta"`` uses :math:`\sigma_t^2=\beta'_t` (the upper bound,
exact for N(0, I) data); Ho et al. found both give similar samples. The last step returns the
mean without noise.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from astrogen.errors import ConfigError, suggest
from astrogen.schedulers._arrays import NoiseSource
from astrogen.schedulers.base import Sampler
from astrogen.schedulers.schedules import NoiseSchedule

__all__ = ["DDPMSampler", "VARIANCES"]

VARIANCES = ("posterior", "beta")


class DDPMSampler(Sampler):
    """Ancestral DDPM sampler.

    Parameters
    ----------
    schedule : NoiseSchedule
    num_steps : int, optional
        Default ``T`` (the original sampler). Fewer steps use respaced betas.
    variance : {"posterior", "beta"}
        :math:`\\tilde\\beta_t` ("fixed small") or :math:`\\beta_t` ("fixed large").
    timestep_spacing, clip_x0, max_timestep :
        See :class:`~astrogen.schedulers.base.Sampler`.
    """

    stochastic = True

    def __init__(self, schedule: NoiseSchedule, num_steps: int | None = None,
                 variance: str = "posterior", timestep_spacing: str = "trailing",
                 clip_x0: Sequence[float] | None = None,
                 max_timestep: int | None = None):
        if variance not in VARIANCES:
            raise ConfigError("must be one of " + ", ".join(map(repr, VARIANCES)) + "."
                              + suggest(variance, VARIANCES), key="variance",
                              received={"variance": variance})
        super().__init__(schedule, num_steps, timestep_spacing, clip_x0, max_timestep)
        self.variance = variance
        a, ap = self._abar, self._abar_prev
        beta = 1.0 - a / ap
        self._coef_x0 = np.sqrt(ap) * beta / (1.0 - a)
        self._coef_xt = np.sqrt(1.0 - beta) * (1.0 - ap) / (1.0 - a)
        post_var = (1.0 - ap) / (1.0 - a) * beta
        self._sigma = np.sqrt(post_var if variance == "posterior" else beta)

    def posterior_mean_variance(self, x0: np.ndarray, x_t: np.ndarray, i: int):
        """Mean and variance of :math:`q(x_s|x_t, x_0)` for step ``i`` (variance per the
        ``variance`` choice)."""
        return self._coef_x0[i] * x0 + self._coef_xt[i] * x_t, self._sigma[i] ** 2

    def step(self, eps: np.ndarray, i: int, x_t: np.ndarray, noise: NoiseSource,
             state: dict) -> np.ndarray:
        x0 = self.predict_x0(x_t, eps, i)
        mean, var = self.posterior_mean_variance(x0, x_t, i)
        if i == self.num_steps - 1:
            return mean
        return mean + np.sqrt(var) * noise.normal(x_t.shape)

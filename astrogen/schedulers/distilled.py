r"""Few-step sampling of a progressively distilled diffusion model (Salimans & Ho 2022,
arXiv:2202.00512).

Progressive distillation trains a student network so that **one** deterministic DDIM step of
the student from :math:`t` to :math:`t''` lands where **two** DDIM steps of its teacher
(:math:`t \to t' \to t''`) land; repeating it halves the number of steps each round
(``base_steps -> base_steps/2 -> ... -> 1``). The student of round ``k`` is sampled with the
same update as DDIM (eta 0, :class:`~astrogen.schedulers.ddim.DDIMSampler`) on the
sub-grid of the teacher's timesteps that it was trained on: every
``base_steps // num_steps``-th timestep of the ``base_steps``-step grid.

The target of the student's step (Salimans & Ho 2022, Algorithm 2), with
:math:`z_t = \alpha_t x + \sigma_t\epsilon`, :math:`\alpha_t = \sqrt{\bar\alpha_t}`,
:math:`\sigma_t = \sqrt{1-\bar\alpha_t}` and :math:`z_{t''}` the teacher's two-step result,

.. math::
    \tilde x = \frac{z_{t''} - (\sigma_{t''}/\sigma_t)\, z_t}
                    {\alpha_{t''} - (\sigma_{t''}/\sigma_t)\,\alpha_t},

is the clean image for which a single DDIM step from :math:`z_t` gives exactly
:math:`z_{t''}` (:func:`two_step_target`; the network's training loss is in
:mod:`astrogen.models.ddpm_distill`). Like every sampler here this module knows no network:
it is driven by any ``eps_model(x_t, t, cond)`` callable.
"""
from __future__ import annotations

from numbers import Integral
from typing import Any

import numpy as np

from astrogen.errors import ConfigError
from astrogen.schedulers.base import Sampler, make_timesteps
from astrogen.schedulers.ddim import DDIMSampler
from astrogen.schedulers.schedules import NoiseSchedule

__all__ = ["DistilledSampler", "distillation_grid", "two_step_target"]


def distillation_grid(num_train_steps: int, base_steps: int, num_steps: int,
                      spacing: str = "trailing") -> np.ndarray:
    """The ``num_steps`` decreasing training timesteps a student of ``num_steps`` steps is
    trained on: every ``base_steps // num_steps``-th of the ``base_steps``-step grid of
    :func:`~astrogen.schedulers.base.make_timesteps` (so the grids of successive rounds are
    nested and a student's step covers exactly two of its teacher's).

    Raises
    ------
    ConfigError
        ``num_steps`` not a divisor of ``base_steps`` by a power of 2.
    """
    for key, v in (("base_steps", base_steps), ("num_steps", num_steps)):
        if isinstance(v, bool) or not isinstance(v, Integral) or v < 1:
            raise ConfigError("must be an integer >= 1.", key=key, received={key: v})
    k = int(base_steps) // int(num_steps)
    if k * int(num_steps) != int(base_steps) or k & (k - 1):
        raise ConfigError("must be base_steps divided by a power of 2 (each distillation "
                          "round halves the steps).", key="num_steps",
                          received={"num_steps": num_steps, "base_steps": base_steps})
    if base_steps > num_train_steps:
        raise ConfigError(f"must be <= the schedule's {num_train_steps} training steps.",
                          key="base_steps", received={"base_steps": base_steps})
    return make_timesteps(num_train_steps, int(base_steps), spacing)[::k].copy()


def two_step_target(schedule: NoiseSchedule, eps_model, x_t: np.ndarray, t: int, t_mid: int,
                    t_end: int, cond: Any = None) -> np.ndarray:
    r"""The clean image :math:`\tilde x` a student's one DDIM step ``t -> t_end`` must
    predict to land where two teacher DDIM steps ``t -> t_mid -> t_end`` land (module
    docstring). ``t_end = -1`` is clean data. Numpy float64; ``eps_model`` is the teacher.
    """
    ab = lambda s: 1.0 if s < 0 else float(schedule.alpha_bar[s])  # noqa: E731
    if not (t > t_mid > t_end >= -1):
        raise ConfigError("needs t > t_mid > t_end >= -1.", key="t",
                          received={"t": t, "t_mid": t_mid, "t_end": t_end})
    z = np.asarray(x_t, dtype=np.float64)
    for s, s_next in ((t, t_mid), (t_mid, t_end)):
        eps = Sampler.call_model(eps_model, z, s, cond)
        a = ab(s)
        x0 = (z - np.sqrt(1.0 - a) * eps) / np.sqrt(a)
        z = np.sqrt(ab(s_next)) * x0 + np.sqrt(1.0 - ab(s_next)) * eps
    a_t, a_e = ab(t), ab(t_end)
    ratio = np.sqrt(1.0 - a_e) / np.sqrt(1.0 - a_t)
    return (z - ratio * np.asarray(x_t, np.float64)) / (np.sqrt(a_e) - ratio * np.sqrt(a_t))


class DistilledSampler(DDIMSampler):
    """Deterministic few-step sampler of a progressively distilled student.

    Parameters
    ----------
    schedule : NoiseSchedule
        The schedule the teacher was trained with.
    num_steps : int
        Student steps (network evaluations): ``base_steps`` divided by a power of 2.
    base_steps : int
        Steps of the teacher's DDIM sampler that distillation started from (the student's
        grid is every ``base_steps // num_steps``-th timestep of its grid).
    timestep_spacing : str
        Spacing of the teacher's grid (:func:`~astrogen.schedulers.base.make_timesteps`).
    clip_x0 : (float, float), optional
        See :class:`~astrogen.schedulers.base.Sampler`.
    """

    def __init__(self, schedule: NoiseSchedule, num_steps: int = 1, base_steps: int = 8,
                 timestep_spacing: str = "trailing", clip_x0=None):
        if not isinstance(schedule, NoiseSchedule):
            raise ConfigError("must be an astrogen.schedulers.NoiseSchedule.", key="schedule",
                              received={"schedule": type(schedule).__name__})
        grid = distillation_grid(schedule.num_train_steps, base_steps, num_steps,
                                 timestep_spacing)
        super().__init__(schedule, num_steps, eta=0.0, timestep_spacing=timestep_spacing,
                         clip_x0=clip_x0)
        self.base_steps = int(base_steps)
        self._timesteps = grid
        self._abar = schedule.alpha_bar[grid]
        self._abar_prev = np.concatenate([self._abar[1:], [1.0]])
        self._sigma = np.zeros_like(self._abar)
        self._dir = np.sqrt(1.0 - self._abar_prev)

    def __repr__(self) -> str:
        return (f"DistilledSampler(num_steps={self.num_steps}, base_steps={self.base_steps}, "
                f"timestep_spacing={self.timestep_spacing!r}, schedule={self.schedule!r})")

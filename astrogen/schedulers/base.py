"""Base class of the reverse-process samplers.

A sampler knows a :class:`~astrogen.schedulers.schedules.NoiseSchedule` and a sequence of
timesteps; it never knows the network. It is driven by any callable

    eps_model(x_t, t, cond) -> eps_hat

where ``x_t`` is a float64 numpy array ``(batch, ...)``, ``t`` an int64 array ``(batch,)`` of
training timesteps, ``cond`` whatever the caller passed to :meth:`Sampler.sample` (``None``
for unconditional), and ``eps_hat`` a numpy array or TF tensor of the shape of ``x_t``.

Sampling is split, like diffusers' schedulers, into :meth:`Sampler.timesteps` and a pure
update :meth:`Sampler.step` (``x_t -> x_prev`` given the model output), so that loops with
extra work at each step (:func:`astrogen.schedulers.inpaint.inpaint`) reuse the same update.
"""
from __future__ import annotations

from numbers import Integral
from typing import Any, Callable, Sequence

import numpy as np

from astrogen.errors import ConfigError, suggest
from astrogen.schedulers._arrays import NoiseSource, like, to_numpy
from astrogen.schedulers.schedules import NoiseSchedule

__all__ = ["Sampler", "make_timesteps", "SPACINGS", "EpsModel"]

EpsModel = Callable[[Any, np.ndarray, Any], Any]

SPACINGS = ("leading", "linspace", "trailing", "logsnr")


def make_timesteps(num_train_steps: int, num_steps: int, spacing: str = "trailing",
                   alpha_bar: np.ndarray | None = None,
                   max_timestep: int | None = None) -> np.ndarray:
    r"""A strictly decreasing int64 array of ``num_steps`` training timesteps in [0, T).

    With ``max_timestep`` the timesteps are chosen the same way among ``0 ... max_timestep``
    only (as if ``T = max_timestep + 1``): sampling then starts at a noise level whose
    signal-to-noise ratio is small but not ~0 (see :class:`Sampler`).

    ``"leading"``: ``0, k, 2k, ...`` with ``k = T // num_steps`` (DDIM paper; never visits
    ``T-1``); ``"linspace"``: evenly spaced from ``T-1`` down to 0; ``"trailing"``: evenly
    spaced ending at ``T-1`` (Lin et al. 2024, arXiv:2305.08891), so the first step starts
    from pure noise; ``"logsnr"``: from ``T-1`` to 0 evenly in
    :math:`\lambda = \log\sqrt{\mathrm{SNR}}` (Lu et al. 2022; needs ``alpha_bar``), which
    concentrates the steps at low noise where the samples' details form and keeps the step
    ratio of multistep solvers near 1. With ``num_steps = T`` all give ``T-1, ..., 0``.
    """
    if spacing not in SPACINGS:
        raise ConfigError("must be one of " + ", ".join(map(repr, SPACINGS)) + "."
                          + suggest(spacing, SPACINGS), key="timestep_spacing",
                          received={"timestep_spacing": spacing})
    T, n = int(num_train_steps), int(num_steps)
    if max_timestep is not None:
        T = int(max_timestep) + 1
        alpha_bar = None if alpha_bar is None else np.asarray(alpha_bar)[:T]
    if spacing == "leading":
        ts = np.arange(n, dtype=np.int64) * (T // n)
    elif spacing == "linspace":
        ts = np.floor(np.linspace(T - 1, 0, n) + 1e-6).astype(np.int64)
    elif spacing == "trailing":
        ts = np.floor(np.arange(T, 0, -T / n)[:n] - 1 + 1e-6).astype(np.int64)[::-1]
    else:
        if alpha_bar is None or len(alpha_bar) != T:
            raise ConfigError("logsnr spacing needs the schedule's alpha_bar.", key="alpha_bar",
                              received={"alpha_bar": None if alpha_bar is None else len(alpha_bar)})
        ab = np.asarray(alpha_bar, dtype=np.float64)
        lam = 0.5 * (np.log(ab) - np.log1p(-ab))  # decreasing in t
        targets = np.linspace(lam[-1], lam[0], n)
        ts = np.empty(n, dtype=np.int64)
        upper = T
        for k, target in enumerate(targets):
            j = int(np.argmin(np.abs(lam - target)))  # nearest timestep in lambda
            # strictly below the previous one, leaving room for the n-1-k remaining steps
            j = max(min(j, upper - 1), n - 1 - k)
            ts[k] = upper = j
    ts = np.sort(ts)[::-1].copy()
    assert np.all(np.diff(ts) < 0) and ts[0] < T and ts[-1] >= 0, ts
    return ts


class Sampler:
    """Base class: timesteps, randomness, the sampling loop; subclasses implement :meth:`step`.

    Parameters
    ----------
    schedule : NoiseSchedule
    num_steps : int, optional
        Number of reverse steps (network evaluations); default ``T``.
    timestep_spacing : {"leading", "linspace", "trailing"}
        How the ``num_steps`` timesteps are chosen among the ``T`` (see :func:`make_timesteps`).
    clip_x0 : (float, float), optional
        Clip the predicted clean image to this range at every step (off by default:
        astronomical images have no natural bounds).
    max_timestep : int, optional
        Noisiest timestep visited (default ``T - 1``). Sampling starts there from
        ``x ~ N(0, I)``. Schedules whose last steps have ``alpha_bar`` ~ 0 (the cosine
        schedule ends at ~1e-9) make the clean-image prediction
        ``(x_t - sqrt(1 - alpha_bar) eps) / sqrt(alpha_bar)`` multiply the network's error by
        up to ``1 / sqrt(alpha_bar)`` ~ 2e4 there; starting where ``alpha_bar`` is ~1e-3
        instead changes the starting distribution by ``sqrt(alpha_bar) x_0`` only.
    """

    #: True if :meth:`step` draws random numbers.
    stochastic: bool = False

    def __init__(self, schedule: NoiseSchedule, num_steps: int | None = None,
                 timestep_spacing: str = "trailing", clip_x0: Sequence[float] | None = None,
                 max_timestep: int | None = None):
        if not isinstance(schedule, NoiseSchedule):
            raise ConfigError("must be an astrogen.schedulers.NoiseSchedule.", key="schedule",
                              received={"schedule": type(schedule).__name__})
        T = schedule.num_train_steps
        if max_timestep is not None:
            if isinstance(max_timestep, bool) or not isinstance(max_timestep, Integral) \
                    or not 0 <= max_timestep < T:
                raise ConfigError(f"must be an integer in [0, {T - 1}].", key="max_timestep",
                                  received={"max_timestep": max_timestep})
            max_timestep = int(max_timestep)
        n_avail = T if max_timestep is None else max_timestep + 1
        if num_steps is None:
            num_steps = n_avail
        if isinstance(num_steps, bool) or not isinstance(num_steps, Integral) \
                or not 1 <= num_steps <= n_avail:
            raise ConfigError(f"must be an integer in [1, {n_avail}] (the schedule's "
                              "num_train_steps, or max_timestep + 1).", key="num_steps",
                              received={"num_steps": num_steps})
        if clip_x0 is not None:
            try:
                lo, hi = (float(v) for v in clip_x0)
            except (TypeError, ValueError):
                lo, hi = np.nan, np.nan
            if not lo < hi:
                raise ConfigError("must be a pair (low, high) with low < high.", key="clip_x0",
                                  received={"clip_x0": clip_x0})
            clip_x0 = (lo, hi)
        self.schedule = schedule
        self.num_steps = int(num_steps)
        self.timestep_spacing = timestep_spacing
        self.clip_x0 = clip_x0
        self.max_timestep = n_avail - 1
        self._timesteps = make_timesteps(T, self.num_steps, timestep_spacing,
                                         schedule.alpha_bar, max_timestep)
        # alpha_bar at every step and at its target; the last target is clean data (abar=1).
        self._abar = schedule.alpha_bar[self._timesteps]
        self._abar_prev = np.concatenate([self._abar[1:], [1.0]])

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(num_steps={self.num_steps}, "
                f"timestep_spacing={self.timestep_spacing!r}, schedule={self.schedule!r})")

    # ---- pieces ----------------------------------------------------------------------------
    @property
    def timesteps(self) -> np.ndarray:
        """The decreasing training timesteps visited, one network call each."""
        return self._timesteps.copy()

    def prev_timestep(self, i: int) -> int:
        """Target timestep of step ``i`` (``-1`` = clean data after the last step)."""
        return int(self._timesteps[i + 1]) if i + 1 < self.num_steps else -1

    def init_state(self) -> dict:
        """Per-trajectory state carried between steps (used by multistep solvers)."""
        return {}

    def predict_x0(self, x_t: np.ndarray, eps: np.ndarray, i: int) -> np.ndarray:
        """Clean-image prediction at step ``i``, clipped if ``clip_x0`` was set."""
        a = self._abar[i]
        x0 = (x_t - np.sqrt(1.0 - a) * eps) / np.sqrt(a)
        if self.clip_x0 is not None:
            x0 = np.clip(x0, *self.clip_x0)
        return x0

    def step(self, eps: np.ndarray, i: int, x_t: np.ndarray, noise: NoiseSource,
             state: dict) -> np.ndarray:
        """One reverse update from ``timesteps[i]`` to ``prev_timestep(i)``."""
        raise NotImplementedError

    # ---- the loop --------------------------------------------------------------------------
    @staticmethod
    def call_model(eps_model: EpsModel, x: np.ndarray, t: int, cond: Any) -> np.ndarray:
        """Evaluate ``eps_model`` at a batch all at timestep ``t``; float64 numpy output."""
        tt = np.full((x.shape[0],), int(t), dtype=np.int64)
        eps = to_numpy(eps_model(x, tt, cond))
        if eps.shape != x.shape:
            raise ConfigError("eps_model must return an array of the shape of x_t.",
                              key="eps_model", received={"x_t": x.shape, "eps": eps.shape})
        return eps

    @staticmethod
    def _progress(iterable, progress: bool, desc: str):
        if not progress:
            return iterable
        try:
            from tqdm.auto import tqdm
        except ImportError:  # progress bars are a nicety
            return iterable
        return tqdm(iterable, desc=desc, leave=False)

    def sample(self, eps_model: EpsModel, shape: Sequence[int] | None = None, *,
               cond: Any = None, seed: Any = 0, x_T: Any = None, progress: bool = False,
               callback: Callable[[int, int, np.ndarray], None] | None = None):
        """Run the reverse process from noise to data.

        Parameters
        ----------
        eps_model : callable ``(x_t, t, cond) -> eps_hat``
        shape : tuple, optional
            ``(batch, ...)`` of the samples; required unless ``x_T`` is given.
        cond : any, optional
            Passed unchanged to ``eps_model`` (e.g. catalog properties, ``(batch, k)``).
        seed : int, 1-D int array or numpy Generator
            All randomness (the starting noise and, for stochastic samplers, every step's
            noise) comes from ``np.random.Generator(PCG64(seed))``; an array gives one stream
            per row (``astrogen.seeds.row_seeds``), making each sample independent of the
            batch it is in.
        x_T : array, optional
            Starting noise (then ``shape`` is taken from it). A TF tensor gives a TF result.
        progress : bool
            Show a tqdm progress bar (off by default).
        callback : callable ``(i, t, x)``, optional
            Called after each step with the step index, its timestep and the new ``x``.

        Returns
        -------
        numpy float64 array of ``shape`` (a TF tensor if ``x_T`` was one).
        """
        if x_T is None:
            if shape is None:
                raise ConfigError("give shape or x_T.", key="shape", received={"shape": None})
            shape = tuple(int(s) for s in shape)
            if len(shape) < 1 or min(shape) < 1:
                raise ConfigError("must be a tuple of positive sizes (batch, ...).",
                                  key="shape", received={"shape": shape})
            noise = NoiseSource(seed, shape[0])
            x = noise.normal(shape)
        else:
            x = to_numpy(x_T)
            noise = NoiseSource(seed, x.shape[0])
        state = self.init_state()
        ts = self._timesteps
        for i in self._progress(range(self.num_steps), progress, type(self).__name__):
            eps = self.call_model(eps_model, x, ts[i], cond)
            x = self.step(eps, i, x, noise, state)
            if callback is not None:
                callback(i, int(ts[i]), x)
        return like(x, x_T)

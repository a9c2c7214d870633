r"""Variance schedules of the forward (noising) process of a DDPM.

The forward process of Ho et al. (2020, arXiv:2006.11239) adds Gaussian noise in ``T``
steps, :math:`q(x_t | x_{t-1}) = N(\sqrt{1-\beta_t}\,x_{t-1}, \beta_t I)`, so that

.. math:: q(x_t | x_0) = N(\sqrt{\bar\alpha_t}\,x_0,\ (1-\bar\alpha_t) I),
          \qquad \bar\alpha_t = \prod_{s \le t} (1 - \beta_s).

Timesteps are 0-based integers ``t = 0 .. T-1`` (``t = 0`` is already slightly noisy, as in
the reference implementation and diffusers); ``t = -1`` denotes clean data
(:math:`\bar\alpha_{-1} = 1`) and is only used as the target of a sampler's last step.

Everything is float64 numpy. :meth:`NoiseSchedule.q_sample` also accepts TensorFlow tensors
and then returns a tensor (for use inside a training step).
"""
from __future__ import annotations

import math
import sys
from numbers import Integral, Real
from typing import Any

import numpy as np

from astrogen.errors import ConfigError, suggest
from astrogen.schedulers._arrays import is_tf, to_numpy

__all__ = ["linear_beta_schedule", "cosine_beta_schedule", "NoiseSchedule", "SCHEDULES"]


def _check_steps(num_train_steps: Any) -> int:
    if isinstance(num_train_steps, bool) or not isinstance(num_train_steps, Integral) \
            or num_train_steps < 2:
        raise ConfigError("must be an integer >= 2.", key="num_train_steps",
                          received={"num_train_steps": num_train_steps})
    return int(num_train_steps)


def _check_real(name: str, value: Any, low: float, high: float, *, low_open=True,
                high_open=True) -> float:
    ok = isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = (value > low if low_open else value >= low) and \
             (value < high if high_open else value <= high)
    if not ok:
        lo, hi = ("(" if low_open else "["), (")" if high_open else "]")
        raise ConfigError(f"must be a number in {lo}{low}, {high}{hi}.", key=name,
                          received={name: value})
    return float(value)


def linear_beta_schedule(num_train_steps: int = 1000, beta_start: float = 1e-4,
                         beta_end: float = 0.02) -> np.ndarray:
    """Betas increasing linearly from ``beta_start`` to ``beta_end`` (Ho et al. 2020).

    The defaults are the paper's values for ``T = 1000``; for another ``T`` they are usually
    rescaled by ``1000 / T`` so that :math:`\\bar\\alpha_{T-1}` stays close to 0.
    """
    n = _check_steps(num_train_steps)
    b0 = _check_real("beta_start", beta_start, 0.0, 1.0)
    b1 = _check_real("beta_end", beta_end, 0.0, 1.0)
    if b1 < b0:
        raise ConfigError("must be >= beta_start.", key="beta_end",
                          received={"beta_start": beta_start, "beta_end": beta_end})
    return np.linspace(b0, b1, n, dtype=np.float64)


def cosine_alpha_bar(u: np.ndarray, s: float = 0.008) -> np.ndarray:
    r"""Nichol & Dhariwal's :math:`\bar\alpha(u) = f(u)/f(0)`, :math:`f(u) = \cos^2(\frac{u+s}{1+s}\frac{\pi}{2})`,
    for continuous time ``u = t/T`` in [0, 1]."""
    f = lambda v: np.cos((np.asarray(v, dtype=np.float64) + s) / (1 + s) * np.pi / 2) ** 2
    return f(u) / f(0.0)


def cosine_beta_schedule(num_train_steps: int = 1000, s: float = 0.008,
                         max_beta: float = 0.999) -> np.ndarray:
    r"""The cosine schedule of Nichol & Dhariwal (2021, arXiv:2102.09672, eq. 17).

    :math:`\beta_t = 1 - \bar\alpha((t+1)/T) / \bar\alpha(t/T)`, clipped at ``max_beta`` to
    avoid the singularity at the end of the diffusion. Without clipping
    :math:`\prod_{t<T}(1-\beta_t) = \bar\alpha(1) = 0` exactly.
    """
    n = _check_steps(num_train_steps)
    s = _check_real("s", s, 0.0, 1.0, low_open=False)
    max_beta = _check_real("max_beta", max_beta, 0.0, 1.0)
    u = np.arange(n + 1, dtype=np.float64) / n
    ab = cosine_alpha_bar(u, s)
    with np.errstate(divide="ignore", invalid="ignore"):
        betas = 1.0 - ab[1:] / ab[:-1]
    return np.clip(np.nan_to_num(betas, nan=max_beta), 0.0, max_beta)


SCHEDULES = {"linear": linear_beta_schedule, "cosine": cosine_beta_schedule}


class NoiseSchedule:
    r"""A discrete DDPM noise schedule and the closed forms of its forward process.

    Parameters
    ----------
    betas : array_like, optional
        The ``T`` betas, each in (0, 1). Give either ``betas`` or ``kind``.
    kind : {"linear", "cosine"}, optional
        Build the betas with :func:`linear_beta_schedule` or :func:`cosine_beta_schedule`
        (default ``"linear"`` when ``betas`` is not given).
    num_train_steps : int
        ``T`` (only with ``kind``).
    **kwargs
        Passed to the schedule function (``beta_start``, ``beta_end`` or ``s``,
        ``max_beta``).

    Attributes
    ----------
    betas, alphas, alpha_bar, alpha_bar_prev, sqrt_alpha_bar, sqrt_one_minus_alpha_bar :
        float64 arrays of length ``T``; ``alpha_bar_prev[t] = alpha_bar[t-1]`` with
        ``alpha_bar_prev[0] = 1``.
    """

    def __init__(self, betas: Any = None, *, kind: str | None = None,
                 num_train_steps: int = 1000, **kwargs):
        if betas is not None and kind is not None:
            raise ConfigError("give either betas or kind, not both.", key="kind",
                              received={"kind": kind})
        if betas is None:
            kind = "linear" if kind is None else kind
            if kind not in SCHEDULES:
                raise ConfigError("must be one of " + ", ".join(map(repr, SCHEDULES)) + "."
                                  + suggest(kind, SCHEDULES), key="kind",
                                  received={"kind": kind})
            try:
                betas = SCHEDULES[kind](num_train_steps, **kwargs)
            except TypeError as e:
                raise ConfigError(f"bad keyword for the {kind} schedule ({e}).", key="kind",
                                  received=kwargs) from None
            self._config = {"kind": kind, "num_train_steps": int(num_train_steps), **kwargs}
        else:
            if kwargs:
                raise ConfigError("schedule keywords are only used with kind=.", key="kwargs",
                                  received=kwargs)
            b = np.asarray(to_numpy(betas), dtype=np.float64)
            if b.ndim != 1 or b.size < 2:
                raise ConfigError("must be a 1-D array of at least 2 values.", key="betas",
                                  received={"shape": b.shape})
            if not np.all(np.isfinite(b)) or np.any(b <= 0) or np.any(b >= 1):
                raise ConfigError("every beta must be in (0, 1).", key="betas",
                                  received={"min": float(np.nanmin(b)),
                                            "max": float(np.nanmax(b))})
            betas = b
            self._config = {"betas": b.tolist()}
        self.kind = kind
        self.betas = np.asarray(betas, dtype=np.float64)
        self.betas.setflags(write=False)
        self.alphas = 1.0 - self.betas
        self.alpha_bar = np.cumprod(self.alphas)
        self.alpha_bar_prev = np.concatenate([[1.0], self.alpha_bar[:-1]])
        self.sqrt_alpha_bar = np.sqrt(self.alpha_bar)
        self.sqrt_one_minus_alpha_bar = np.sqrt(1.0 - self.alpha_bar)
        for a in (self.alphas, self.alpha_bar, self.alpha_bar_prev, self.sqrt_alpha_bar,
                  self.sqrt_one_minus_alpha_bar):
            a.setflags(write=False)

    # ---- construction ----------------------------------------------------------------------
    @classmethod
    def linear(cls, num_train_steps: int = 1000, beta_start: float = 1e-4,
               beta_end: float = 0.02) -> "NoiseSchedule":
        """Linear schedule of Ho et al. (2020)."""
        return cls(kind="linear", num_train_steps=num_train_steps, beta_start=beta_start,
                   beta_end=beta_end)

    @classmethod
    def cosine(cls, num_train_steps: int = 1000, s: float = 0.008,
               max_beta: float = 0.999) -> "NoiseSchedule":
        """Cosine schedule of Nichol & Dhariwal (2021)."""
        return cls(kind="cosine", num_train_steps=num_train_steps, s=s, max_beta=max_beta)

    def get_config(self) -> dict:
        """A JSON-able dict such that ``NoiseSchedule.from_config(cfg)`` rebuilds it."""
        return dict(self._config)

    @classmethod
    def from_config(cls, config: dict) -> "NoiseSchedule":
        """Rebuild a schedule from :meth:`get_config`'s output.

        Parameters
        ----------
        config : dict
            The schedule's configuration (``betas`` or the parameters that generate them).

        Returns
        -------
        NoiseSchedule
            The schedule.
        """
        cfg = dict(config)
        if "betas" in cfg:
            return cls(cfg.pop("betas"), **cfg)
        return cls(**cfg)

    def __repr__(self) -> str:
        what = f"kind={self.kind!r}" if self.kind else "custom betas"
        return f"NoiseSchedule({what}, num_train_steps={self.num_train_steps})"

    @property
    def num_train_steps(self) -> int:
        """Number of training timesteps ``T`` (length of ``betas``)."""
        return int(self.betas.size)

    def __len__(self) -> int:
        return self.num_train_steps

    # ---- lookups -------------------------------------------------------------------------
    def check_timesteps(self, t: Any, *, allow_clean: bool = False) -> np.ndarray:
        """``t`` as an int64 array, checking the range ``[0, T)`` (``[-1, T)`` if
        ``allow_clean``)."""
        arr = to_numpy(t, dtype=None) if not isinstance(t, Integral) else np.asarray(t)
        if arr.dtype.kind not in "iu":
            if arr.dtype.kind == "f" and np.all(arr == np.round(arr)):
                arr = arr.astype(np.int64)
            else:
                raise ConfigError("timesteps must be integers.", key="t",
                                  received={"dtype": str(arr.dtype)})
        arr = arr.astype(np.int64)
        low = -1 if allow_clean else 0
        if arr.size and (arr.min() < low or arr.max() >= self.num_train_steps):
            raise ConfigError(f"timesteps must be in [{low}, {self.num_train_steps}).",
                              key="t", received={"min": int(arr.min()), "max": int(arr.max())})
        return arr

    def abar(self, t: Any) -> np.ndarray:
        r""":math:`\bar\alpha_t` for integer ``t`` (``t = -1`` gives 1, clean data)."""
        t = self.check_timesteps(t, allow_clean=True)
        return np.where(t < 0, 1.0, self.alpha_bar[np.maximum(t, 0)])

    def snr(self, t: Any) -> np.ndarray:
        r"""Signal-to-noise ratio :math:`\bar\alpha_t / (1-\bar\alpha_t)` (Kingma et al. 2021)."""
        a = self.alpha_bar[self.check_timesteps(t)]
        return a / (1.0 - a)

    def log_snr(self, t: Any) -> np.ndarray:
        """``log(snr(t))``; the :math:`2\\lambda_t` of DPM-Solver."""
        a = self.alpha_bar[self.check_timesteps(t)]
        return np.log(a) - np.log1p(-a)

    # ---- forward process -----------------------------------------------------------------
    def _coef(self, table: np.ndarray, t: Any, x: Any):
        """``table[t]`` shaped to broadcast against ``x`` (batch on axis 0), numpy or TF."""
        if is_tf(x) or is_tf(t):
            tf = sys.modules["tensorflow"]
            c = tf.gather(tf.constant(table, dtype=x.dtype), tf.cast(t, tf.int32))
            rank = len(x.shape)
            if len(c.shape) == 0:
                return c
            return tf.reshape(c, tf.concat([tf.shape(c), tf.ones([rank - 1], tf.int32)], 0))
        t = self.check_timesteps(t)
        c = table[t]
        x = np.asarray(x)
        if c.ndim == 0:
            return c
        if c.shape[0] != x.shape[0]:
            raise ConfigError("needs one timestep per row (or a single timestep).", key="t",
                              received={"len(t)": c.shape[0], "batch_size": x.shape[0]})
        return c.reshape(c.shape + (1,) * (x.ndim - 1))

    def q_mean_variance(self, x0: Any, t: Any):
        r"""Mean :math:`\sqrt{\bar\alpha_t} x_0` and variance :math:`1-\bar\alpha_t` of
        :math:`q(x_t|x_0)` (variance broadcastable to ``x0``)."""
        return (self._coef(self.sqrt_alpha_bar, t, x0) * x0,
                self._coef(1.0 - self.alpha_bar, t, x0))

    def q_sample(self, x0: Any, t: Any, noise: Any):
        r"""Draw :math:`x_t \sim q(x_t|x_0)` as :math:`\sqrt{\bar\alpha_t}x_0 + \sqrt{1-\bar\alpha_t}\epsilon`.

        Parameters
        ----------
        x0 : array (batch, ...) -- numpy or TF tensor.
        t : int or int array (batch,)
        noise : array like ``x0`` of N(0, 1) variates (the caller owns the randomness).
        """
        if not is_tf(x0) and not is_tf(noise):
            x0 = np.asarray(x0, dtype=np.float64)
            noise = np.asarray(noise, dtype=np.float64)
            if x0.shape != noise.shape:
                raise ConfigError("noise must have the shape of x0.", key="noise",
                                  received={"x0": x0.shape, "noise": noise.shape})
        return (self._coef(self.sqrt_alpha_bar, t, x0) * x0
                + self._coef(self.sqrt_one_minus_alpha_bar, t, x0) * noise)

    def predict_x0(self, x_t: Any, t: Any, eps: Any):
        r""":math:`\hat x_0 = (x_t - \sqrt{1-\bar\alpha_t}\hat\epsilon)/\sqrt{\bar\alpha_t}`."""
        return ((x_t - self._coef(self.sqrt_one_minus_alpha_bar, t, x_t) * eps)
                / self._coef(self.sqrt_alpha_bar, t, x_t))

    def predict_eps(self, x_t: Any, t: Any, x0: Any):
        r""":math:`\epsilon = (x_t - \sqrt{\bar\alpha_t}x_0)/\sqrt{1-\bar\alpha_t}`."""
        return ((x_t - self._coef(self.sqrt_alpha_bar, t, x_t) * x0)
                / self._coef(self.sqrt_one_minus_alpha_bar, t, x_t))

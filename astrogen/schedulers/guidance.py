r"""Classifier-free guidance (Ho & Salimans 2022, arXiv:2207.12598).

A network trained with condition dropout predicts both :math:`\epsilon(x_t, c)` and the
unconditional :math:`\epsilon(x_t, \varnothing)`; sampling with

.. math:: \hat\epsilon = \epsilon(x_t,\varnothing) + w\,[\epsilon(x_t,c)-\epsilon(x_t,\varnothing)]

trades diversity for fidelity to ``c``. Convention (as diffusers' ``guidance_scale``):
``w = 0`` is unconditional, ``w = 1`` conditional, ``w > 1`` guided (the paper's
:math:`1+w`).
"""
from __future__ import annotations

import math
from numbers import Real
from typing import Any, Callable

from astrogen.errors import ConfigError
from astrogen.schedulers._arrays import to_numpy

__all__ = ["guided"]


def guided(eps_model: Callable, cond: Any, null_cond: Any = None,
           scale: float = 1.0) -> Callable[..., Any]:
    """Wrap ``eps_model`` into a classifier-free-guided ``eps_model``.

    Parameters
    ----------
    eps_model : callable ``(x_t, t, cond) -> eps_hat``
    cond : any
        The condition (e.g. catalog properties ``(batch, k)``).
    null_cond : any
        What ``eps_model`` takes as "no condition" (``None`` for astrogen's U-Net adapter).
    scale : float
        Guidance scale ``w`` (0 = unconditional, 1 = conditional).

    Returns
    -------
    callable ``(x_t, t, cond=None) -> eps_hat`` (numpy float64). A ``cond`` passed by the
    sampler replaces the one given here, so ``sampler.sample(guided(...), cond=c)`` works too.
    """
    if not callable(eps_model):
        raise ConfigError("must be callable (x_t, t, cond) -> eps.", key="eps_model",
                          received={"eps_model": type(eps_model).__name__})
    if isinstance(scale, bool) or not isinstance(scale, Real) or not math.isfinite(scale):
        raise ConfigError("must be a finite number.", key="scale", received={"scale": scale})
    w = float(scale)

    def guided_eps(x_t, t, c=None):
        c = cond if c is None else c
        if w == 0.0:
            return to_numpy(eps_model(x_t, t, null_cond))
        eps_c = to_numpy(eps_model(x_t, t, c))
        if w == 1.0:
            return eps_c
        eps_u = to_numpy(eps_model(x_t, t, null_cond))
        return eps_u + w * (eps_c - eps_u)

    guided_eps.scale = w
    return guided_eps

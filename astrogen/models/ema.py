"""Exponential moving average of a model's weights (Polyak averaging), as used by DDPMs.

Diffusion models are sampled with averaged weights (Ho et al. 2020 use decay 0.9999): the
averaged network is smoother and gives markedly better samples than the last iterate.
"""
from __future__ import annotations

import contextlib
from numbers import Real

import keras
from keras import ops

from astrogen.errors import ConfigError, ModelError

__all__ = ["EMA"]


class EMA:
    """Shadow copies of ``model.trainable_weights`` updated as ``s <- d s + (1 - d) w``.

    Parameters
    ----------
    model : keras.Model (or Layer), already built.
    decay : float in [0, 1)
        The decay ``d``.
    warmup : bool
        Use ``d_n = min(decay, (1 + n) / (10 + n))`` at update ``n`` (TensorFlow's
        ``ExponentialMovingAverage`` with ``num_updates``), so early averages are not
        dominated by the random initialisation.

    Examples
    --------
    ::

        ema = EMA(model, decay=0.999)
        ...  # after each optimizer step (also inside a tf.function):
        ema.update()
        with ema.apply():      # the model holds the averaged weights in this block
            samples = sampler.sample(as_eps_model(model), shape, seed=0)
        ema.copy_to(model)     # or keep them permanently (e.g. before saving)
    """

    def __init__(self, model, decay: float = 0.999, warmup: bool = True):
        if isinstance(decay, bool) or not isinstance(decay, Real) or not 0.0 <= decay < 1.0:
            raise ConfigError("must be a number in [0, 1).", key="decay",
                              received={"decay": decay})
        if not getattr(model, "built", False):
            raise ModelError("build the model (call it once) before creating its EMA.",
                             key="model", received={"model": getattr(model, "name", model)})
        self.model = model
        self.decay = float(decay)
        self.warmup = bool(warmup)
        self._vars = list(model.trainable_weights)
        # initialise from a numpy copy: a Variable initialised from another one would alias
        self.shadow = [keras.Variable(ops.convert_to_numpy(v.value), dtype=v.dtype,
                                      trainable=False, name="ema_" + v.name.replace("/", "_"))
                       for v in self._vars]
        self.num_updates = keras.Variable(0, dtype="int64", trainable=False, name="ema_count")

    def current_decay(self):
        """The decay used by the next :meth:`update` (a tensor)."""
        if not self.warmup:
            return ops.convert_to_tensor(self.decay, "float32")
        n = ops.cast(self.num_updates, "float32")
        return ops.minimum(self.decay, (1.0 + n) / (10.0 + n))

    def update(self):
        """Move the shadow weights towards the model's current weights."""
        d = self.current_decay()
        for s, v in zip(self.shadow, self._vars):
            s.assign(ops.cast(d, s.dtype) * s + ops.cast(1.0 - d, s.dtype) * v)
        self.num_updates.assign_add(1)

    def swap(self):
        """Exchange model and shadow weights (call again to swap back; eager only)."""
        for s, v in zip(self.shadow, self._vars):
            tmp = ops.convert_to_numpy(v.value)
            v.assign(s.value)
            s.assign(tmp)

    @contextlib.contextmanager
    def apply(self):
        """Context in which the model holds the averaged weights."""
        self.swap()
        try:
            yield self.model
        finally:
            self.swap()

    def copy_to(self, model=None):
        """Overwrite ``model``'s (default: the tracked model's) weights by the averages."""
        target = self._vars if model is None else list(model.trainable_weights)
        if len(target) != len(self.shadow):
            raise ModelError("the model does not have the same weights as the EMA.",
                             key="model", received={"n_weights": len(target),
                                                    "expected": len(self.shadow)})
        for s, v in zip(self.shadow, target):
            v.assign(s.value)

"""Periodic (circular) padding for convolutions on periodic boxes (Keras 3).

:class:`PeriodicPad3D` pads the three spatial axes of a channels-last 5-D tensor
``(batch, n0, n1, n2, channels)`` with the opposite faces of the box, so that a ``valid``
convolution after it is the circular convolution of the periodic field: shifting the input
by whole cells (``numpy.roll``) shifts the output by the same cells.
"""
from __future__ import annotations

from numbers import Integral

import keras
from keras import ops

from astrogen.errors import ConfigError

__all__ = ["PeriodicPad3D"]


@keras.saving.register_keras_serializable(package="astrogen")
class PeriodicPad3D(keras.layers.Layer):
    """Periodic padding of ``pad`` cells on both sides of the 3 spatial axes (NDHWC).

    Parameters
    ----------
    pad : int
        Cells added on each side of each spatial axis (>= 0; at most the axis length).
    """

    def __init__(self, pad: int = 1, **kwargs):
        super().__init__(**kwargs)
        if isinstance(pad, bool) or not isinstance(pad, Integral) or pad < 0:
            raise ConfigError("must be an integer >= 0.", key="pad", received={"pad": pad})
        self.pad = int(pad)

    def build(self, input_shape):
        if len(input_shape) != 5:
            raise ConfigError("PeriodicPad3D takes (batch, n0, n1, n2, channels) tensors.",
                              key="input_shape", received={"input_shape": input_shape})
        for n in input_shape[1:4]:
            if n is not None and n < self.pad:
                raise ConfigError("pad must not exceed the box side.", key="pad",
                                  received={"pad": self.pad, "input_shape": input_shape})
        self.built = True

    def call(self, x):
        p = self.pad
        if p == 0:
            return x
        x = ops.concatenate([x[:, -p:], x, x[:, :p]], axis=1)
        x = ops.concatenate([x[:, :, -p:], x, x[:, :, :p]], axis=2)
        return ops.concatenate([x[:, :, :, -p:], x, x[:, :, :, :p]], axis=3)

    def compute_output_shape(self, shape):
        s = list(shape)
        for i in (1, 2, 3):
            if s[i] is not None:
                s[i] += 2 * self.pad
        return tuple(s)

    def get_config(self):
        return {**super().get_config(), "pad": self.pad}

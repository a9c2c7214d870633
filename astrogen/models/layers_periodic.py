"""Keras 3 layers for fields on a periodic 3-D box (N-body particle lattices).

:class:`PeriodicPad3D` wraps a box around itself (circular padding) so that a ``valid``
convolution after it sees the box as a torus; :class:`PeriodicConv3D` is that pair (pad +
``Conv3D``). A stack of stride-1 periodic convolutions is exactly equivariant to periodic
shifts of its input (``f(roll(x, s)) = roll(f(x), s)``); with ``d`` stride-2 levels it is
equivariant to shifts by multiples of ``2**d`` cells. Layout: ``(batch, x, y, z, channels)``.

All layers check their arguments in ``__init__`` (:class:`astrogen.errors.ConfigError`),
create their sub-layers in ``build`` and round-trip through ``get_config``.
"""
from __future__ import annotations

from numbers import Integral

import keras
from keras import ops

from astrogen.errors import ConfigError

__all__ = ["PeriodicPad3D", "PeriodicConv3D"]


def _check_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral) or value < minimum:
        raise ConfigError(f"must be an integer >= {minimum}.", key=name, received={name: value})
    return int(value)


@keras.saving.register_keras_serializable(package="astrogen")
class PeriodicPad3D(keras.layers.Layer):
    """Circular padding of ``pad`` cells on both sides of the three spatial axes.

    Parameters
    ----------
    pad : int
        Cells added on each side (>= 0; at most the axis length).
    """

    def __init__(self, pad: int = 1, **kwargs):
        super().__init__(**kwargs)
        self.pad = _check_int("pad", pad, 0)

    def call(self, x):
        """Pad ``x`` periodically on its three spatial axes."""
        p = self.pad
        if p == 0:
            return x
        for axis in (1, 2, 3):
            n = x.shape[axis]
            if n is not None and p > n:
                raise ConfigError("must not exceed the axis length.", key="pad",
                                  received={"pad": p, "axis_length": n})
            lo = [slice(None)] * 5
            hi = [slice(None)] * 5
            lo[axis] = slice(-p, None)
            hi[axis] = slice(0, p)
            x = ops.concatenate([x[tuple(lo)], x, x[tuple(hi)]], axis=axis)
        return x

    def compute_output_shape(self, shape):
        """Input shape with ``2 pad`` added to each known spatial side."""
        s = list(shape)
        for i in (1, 2, 3):
            if s[i] is not None:
                s[i] += 2 * self.pad
        return tuple(s)

    def get_config(self):
        return {**super().get_config(), "pad": self.pad}


@keras.saving.register_keras_serializable(package="astrogen")
class PeriodicConv3D(keras.layers.Layer):
    """3-D convolution on a torus: :class:`PeriodicPad3D` of ``(kernel_size - 1) // 2``
    cells (odd ``kernel_size``), then a ``valid`` ``Conv3D``, then an optional LeakyReLU.

    Parameters
    ----------
    filters : int
        Output channels.
    kernel_size : int
        Odd kernel side, cells.
    strides : int
        1, or 2 to halve every spatial axis (axes must be even).
    leaky_slope : float or None
        Slope of the LeakyReLU after the convolution; ``None`` for a linear output.
    """

    def __init__(self, filters: int, kernel_size: int = 3, strides: int = 1,
                 leaky_slope: float | None = 0.2, **kwargs):
        super().__init__(**kwargs)
        self.filters = _check_int("filters", filters, 1)
        self.kernel_size = _check_int("kernel_size", kernel_size, 1)
        if self.kernel_size % 2 == 0:
            raise ConfigError("must be odd.", key="kernel_size",
                              received={"kernel_size": kernel_size})
        self.strides = _check_int("strides", strides, 1)
        if self.strides not in (1, 2):
            raise ConfigError("must be 1 or 2.", key="strides", received={"strides": strides})
        if leaky_slope is not None and (isinstance(leaky_slope, bool)
                                        or not isinstance(leaky_slope, (int, float))
                                        or not 0 <= leaky_slope < 1):
            raise ConfigError("must be None or a number in [0, 1).", key="leaky_slope",
                              received={"leaky_slope": leaky_slope})
        self.leaky_slope = None if leaky_slope is None else float(leaky_slope)

    def build(self, input_shape):
        """Create the periodic padding and the ``valid`` convolution for ``input_shape``."""
        pad = (self.kernel_size - 1) // 2
        if self.strides == 2:
            for i in (1, 2, 3):
                if input_shape[i] is not None and input_shape[i] % 2:
                    raise ConfigError("a stride-2 periodic convolution needs even axes.",
                                      key="strides", received={"shape": tuple(input_shape)})
        self.padder = PeriodicPad3D(pad, name="pad")
        self.conv = keras.layers.Conv3D(self.filters, self.kernel_size, strides=self.strides,
                                        padding="valid", name="conv")
        padded = self.padder.compute_output_shape(input_shape)
        self.conv.build(padded)
        self.built = True

    def call(self, x):
        """Periodic padding, ``valid`` convolution, optional LeakyReLU."""
        y = self.conv(self.padder(x))
        if self.leaky_slope is not None:
            y = ops.leaky_relu(y, self.leaky_slope)
        return y

    def compute_output_shape(self, shape):
        """Output shape: spatial sides divided by ``strides``, ``filters`` channels."""
        s = list(shape)
        for i in (1, 2, 3):
            if s[i] is not None:
                s[i] = s[i] // self.strides
        s[4] = self.filters
        return tuple(s)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters,
                "kernel_size": self.kernel_size, "strides": self.strides,
                "leaky_slope": self.leaky_slope}

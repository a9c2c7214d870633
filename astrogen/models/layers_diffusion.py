"""Keras 3 building blocks of the diffusion U-Net (Ho et al. 2020; Nichol & Dhariwal 2021).

All layers check their arguments in ``__init__`` (raising :class:`astrogen.errors.ConfigError`),
create their sub-layers and weights in ``build`` (when the input channels are known) and
round-trip through ``get_config`` / ``from_config``.
"""
from __future__ import annotations

import math
from numbers import Integral, Real

import keras
from keras import ops

from astrogen.errors import ConfigError

__all__ = ["SinusoidalTimeEmbedding", "ResidualBlock", "AttentionBlock", "Downsample",
           "Upsample", "group_count"]


def _check_int(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral) or value < minimum:
        raise ConfigError(f"must be an integer >= {minimum}.", key=name, received={name: value})
    return int(value)


def _check_dropout(value) -> float:
    if isinstance(value, bool) or not isinstance(value, Real) or not 0.0 <= value < 1.0:
        raise ConfigError("must be a number in [0, 1).", key="dropout",
                          received={"dropout": value})
    return float(value)


def group_count(channels: int, groups: int) -> int:
    """Number of GroupNorm groups: the largest divisor of ``channels`` that is at most
    ``groups`` and leaves at least 2 channels per group (32 for the usual widths >= 64;
    fewer for narrow test models, so any width is valid)."""
    channels, groups = int(channels), int(groups)
    limit = min(groups, max(channels // 2, 1))
    return max(d for d in range(1, limit + 1) if channels % d == 0)


@keras.saving.register_keras_serializable(package="astrogen")
class SinusoidalTimeEmbedding(keras.layers.Layer):
    r"""Transformer-style embedding of the (integer) diffusion timestep.

    ``emb[:, :d/2] = sin(t w)``, ``emb[:, d/2:] = cos(t w)`` with
    :math:`w_k = \text{max\_period}^{-k/(d/2)}` (Vaswani et al. 2017; Ho et al. 2020).

    Parameters
    ----------
    dim : int
        Even embedding size.
    max_period : float
        Longest period, in timesteps.
    """

    def __init__(self, dim: int, max_period: float = 10000.0, **kwargs):
        super().__init__(**kwargs)
        dim = _check_int("dim", dim, 2)
        if dim % 2:
            raise ConfigError("must be even.", key="dim", received={"dim": dim})
        if isinstance(max_period, bool) or not isinstance(max_period, Real) or max_period <= 1:
            raise ConfigError("must be a number > 1.", key="max_period",
                              received={"max_period": max_period})
        self.dim = dim
        self.max_period = float(max_period)

    def call(self, t):
        """Sinusoidal embedding ``[sin(t f_k), cos(t f_k)]`` of the timesteps.

        Parameters
        ----------
        t : tensor
            Timesteps, shape ``(batch,)`` or ``(batch, 1)``.

        Returns
        -------
        tensor
            Shape ``(batch, dim)``; frequencies ``f_k = max_period ** (-k / (dim / 2))``.
        """
        half = self.dim // 2
        freqs = ops.exp(-math.log(self.max_period) * ops.arange(half, dtype="float32") / half)
        args = ops.cast(ops.reshape(t, (-1, 1)), "float32") * freqs[None, :]
        return ops.concatenate([ops.sin(args), ops.cos(args)], axis=-1)

    def compute_output_shape(self, t_shape):
        """``(batch, dim)``."""
        return (t_shape[0], self.dim)

    def get_config(self):
        return {**super().get_config(), "dim": self.dim, "max_period": self.max_period}


@keras.saving.register_keras_serializable(package="astrogen")
class ResidualBlock(keras.layers.Layer):
    """Residual block conditioned on an embedding (the DDPM "ResnetBlock").

    ``h = conv(silu(norm(x)))``; ``scale, shift = dense(silu(emb))``;
    ``h = conv0(dropout(silu(norm(h) * (1 + scale) + shift)))``; ``out = skip(x) + h``.
    The embedding modulates the normalised features ("scale-shift norm", Nichol & Dhariwal
    2021), so its effect cannot be removed by the normalisation even with one channel per
    group. ``conv0`` starts at zero (the block starts as the identity) and ``skip`` is a 1x1
    convolution when the channel count changes.

    Call with ``(x, emb)``: ``x`` of shape ``(B, H, W, C_in)``, ``emb`` of shape ``(B, E)``.
    """

    def __init__(self, out_channels: int, norm_groups: int = 32, dropout: float = 0.0,
                 **kwargs):
        super().__init__(**kwargs)
        self.out_channels = _check_int("out_channels", out_channels)
        self.norm_groups = _check_int("norm_groups", norm_groups)
        self.dropout = _check_dropout(dropout)

    def build(self, x_shape, emb_shape):
        """Create the normalisations, convolutions, embedding projection and (when the channel
        count changes) the 1x1 skip convolution.

        Parameters
        ----------
        x_shape : tuple
            Image shape ``(batch, height, width, c_in)``.
        emb_shape : tuple
            Embedding shape ``(batch, emb_dim)``.
        """
        c_in, c = int(x_shape[-1]), self.out_channels
        self.norm1 = keras.layers.GroupNormalization(group_count(c_in, self.norm_groups),
                                                     epsilon=1e-5, name="norm1")
        self.conv1 = keras.layers.Conv2D(c, 3, padding="same", name="conv1")
        self.emb_proj = keras.layers.Dense(2 * c, name="emb_proj")
        self.norm2 = keras.layers.GroupNormalization(group_count(c, self.norm_groups),
                                                     epsilon=1e-5, name="norm2")
        self.drop = keras.layers.Dropout(self.dropout, name="dropout")
        self.conv2 = keras.layers.Conv2D(c, 3, padding="same", kernel_initializer="zeros",
                                         name="conv2")
        self.skip = (keras.layers.Conv2D(c, 1, name="skip") if c_in != c else None)
        self.norm1.build(x_shape)
        self.conv1.build(x_shape)
        self.emb_proj.build(emb_shape)
        h_shape = tuple(x_shape[:-1]) + (c,)
        self.norm2.build(h_shape)
        self.conv2.build(h_shape)
        if self.skip is not None:
            self.skip.build(x_shape)

    def call(self, x, emb, training=None):
        """Residual block modulated by the time/condition embedding (scale and shift).

        Parameters
        ----------
        x : tensor
            Shape ``(batch, height, width, c_in)``.
        emb : tensor
            Embedding, shape ``(batch, emb_dim)``.
        training : bool, optional
            Training mode (dropout).

        Returns
        -------
        tensor
            Shape ``(batch, height, width, out_channels)``.
        """
        h = self.conv1(ops.silu(self.norm1(x)))
        scale, shift = ops.split(self.emb_proj(ops.silu(emb))[:, None, None, :], 2, axis=-1)
        h = self.norm2(h) * (1.0 + scale) + shift
        h = self.conv2(self.drop(ops.silu(h), training=training))
        return (x if self.skip is None else self.skip(x)) + h

    def compute_output_shape(self, x_shape, emb_shape):
        """``x_shape`` with ``out_channels`` channels."""
        return tuple(x_shape[:-1]) + (self.out_channels,)

    def get_config(self):
        return {**super().get_config(), "out_channels": self.out_channels,
                "norm_groups": self.norm_groups, "dropout": self.dropout}


@keras.saving.register_keras_serializable(package="astrogen")
class AttentionBlock(keras.layers.Layer):
    """Multi-head self-attention over the pixels of a feature map, with a residual.

    ``out = x + proj0(attention(qkv(norm(x))))``; ``proj0`` starts at zero.
    """

    def __init__(self, num_heads: int = 1, norm_groups: int = 32, **kwargs):
        super().__init__(**kwargs)
        self.num_heads = _check_int("num_heads", num_heads)
        self.norm_groups = _check_int("norm_groups", norm_groups)

    def build(self, input_shape):
        """Create the normalisation and projections (channels must divide by ``num_heads``)."""
        c = int(input_shape[-1])
        if c % self.num_heads:
            raise ConfigError("the channel count must be divisible by num_heads.",
                              key="num_heads", received={"channels": c,
                                                         "num_heads": self.num_heads})
        self.norm = keras.layers.GroupNormalization(group_count(c, self.norm_groups),
                                                    epsilon=1e-5, name="norm")
        self.qkv = keras.layers.Dense(3 * c, name="qkv")
        self.proj = keras.layers.Dense(c, kernel_initializer="zeros", name="proj")
        self.norm.build(input_shape)
        self.qkv.build(input_shape)
        self.proj.build(input_shape)

    def call(self, x):
        """Multi-head self-attention over the pixels, added to the input.

        Parameters
        ----------
        x : tensor
            Shape ``(batch, height, width, channels)``.

        Returns
        -------
        tensor
            Same shape as ``x``.
        """
        shape = ops.shape(x)
        b, h, w, c = shape[0], shape[1], shape[2], x.shape[-1]
        nh, d = self.num_heads, x.shape[-1] // self.num_heads
        qkv = ops.reshape(self.qkv(self.norm(x)), (b, h * w, 3, nh, d))
        q, k, v = (ops.transpose(qkv[:, :, i], (0, 2, 1, 3)) for i in range(3))  # B,nh,N,d
        att = ops.softmax(ops.matmul(q, ops.transpose(k, (0, 1, 3, 2))) / math.sqrt(d), axis=-1)
        out = ops.reshape(ops.transpose(ops.matmul(att, v), (0, 2, 1, 3)), (b, h, w, c))
        return x + self.proj(out)

    def compute_output_shape(self, input_shape):
        """The input shape (the block is residual)."""
        return input_shape

    def get_config(self):
        return {**super().get_config(), "num_heads": self.num_heads,
                "norm_groups": self.norm_groups}


@keras.saving.register_keras_serializable(package="astrogen")
class Downsample(keras.layers.Layer):
    """Halve the resolution with a stride-2 3x3 convolution (channels unchanged)."""

    def build(self, input_shape):
        """Create the stride-2 3x3 convolution (channels kept)."""
        self.conv = keras.layers.Conv2D(int(input_shape[-1]), 3, strides=2, padding="same",
                                        name="conv")
        self.conv.build(input_shape)

    def call(self, x):
        """Halve the image size with a stride-2 convolution.

        Parameters
        ----------
        x : tensor
            Shape ``(batch, height, width, channels)``.

        Returns
        -------
        tensor
            Shape ``(batch, ceil(height / 2), ceil(width / 2), channels)``.
        """
        return self.conv(x)

    def compute_output_shape(self, input_shape):
        """``(batch, ceil(height / 2), ceil(width / 2), channels)``."""
        b, h, w, c = input_shape
        return (b, None if h is None else (h + 1) // 2, None if w is None else (w + 1) // 2, c)


@keras.saving.register_keras_serializable(package="astrogen")
class Upsample(keras.layers.Layer):
    """Double the resolution: nearest-neighbour upsampling then a 3x3 convolution."""

    def build(self, input_shape):
        """Create the nearest-neighbour upsampling and the 3x3 convolution (channels kept)."""
        self.up = keras.layers.UpSampling2D(2, interpolation="nearest", name="up")
        self.conv = keras.layers.Conv2D(int(input_shape[-1]), 3, padding="same", name="conv")
        b, h, w, c = input_shape
        self.conv.build((b, None if h is None else 2 * h, None if w is None else 2 * w, c))

    def call(self, x):
        """Double the image size (nearest neighbour) and convolve.

        Parameters
        ----------
        x : tensor
            Shape ``(batch, height, width, channels)``.

        Returns
        -------
        tensor
            Shape ``(batch, 2 height, 2 width, channels)``.
        """
        return self.conv(self.up(x))

    def compute_output_shape(self, input_shape):
        """``(batch, 2 height, 2 width, channels)``."""
        b, h, w, c = input_shape
        return (b, None if h is None else 2 * h, None if w is None else 2 * w, c)

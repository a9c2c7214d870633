"""Keras 3 building blocks of the FlowVAE: residual blocks, Gaussian posterior head,
convolutional encoder and decoder.

Images enter and leave as ``(B, N, N)`` arrays of flux per pixel (the unit of the training
stamps, for example ``count/s`` at the COSMOS zero point); the layers rescale them by a fixed
``flux_scale`` so the network works on numbers of order one.
"""
from __future__ import annotations

import keras
import numpy as np

from astrogen.errors import ConfigError

__all__ = ["ResidualBlock", "GaussianPosterior", "ReflectConv2D", "build_encoder",
           "build_decoder", "check_architecture", "OUTPUT_ACTIVATIONS", "UPSAMPLINGS",
           "PADDINGS"]

#: Decoder output activations: ``softplus`` (non-negative light profile, default) or
#: ``linear`` (unconstrained).
OUTPUT_ACTIVATIONS = ("softplus", "linear")
#: Decoder upsampling: ``nearest`` (pixel replication then convolution: the shipped model
#: of format 1; its 2**k-pixel steps survive the few convolutions after them as blocks and
#: straight streaks) or ``bilinear`` (resize-convolution without steps).
UPSAMPLINGS = ("nearest", "bilinear")
#: Border handling of the 3x3 convolutions: ``zeros`` (Keras ``same`` padding: every layer
#: sees a dark frame at the stamp border, which the decoder learns as a border frame) or
#: ``reflect`` (mirror padding: border pixels see the same statistics as interior ones).
PADDINGS = ("zeros", "reflect")


@keras.saving.register_keras_serializable(package="astrogen")
class ReflectConv2D(keras.layers.Layer):
    """2-D convolution of odd kernel size, stride 1, on a mirror-padded input.

    ``same``-sized output like ``Conv2D(padding="same")`` but the border is padded by
    reflection (``x[-1], x[-2], ...`` mirrored about the edge pixel) instead of zeros, so a
    decoder built from it has no reason to draw a frame along the stamp border.

    Parameters
    ----------
    filters : int
        Output channels.
    kernel_size : int
        Odd kernel side, pixels.
    activation : str or None
        Activation applied after the convolution.
    kernel_initializer, bias_initializer : str or dict
        Keras initialisers of the inner ``Conv2D``.
    """

    def __init__(self, filters, kernel_size=3, activation=None,
                 kernel_initializer="glorot_uniform", bias_initializer="zeros", **kwargs):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.kernel_size = int(kernel_size)
        if self.filters < 1:
            raise ConfigError("must be >= 1.", key="filters", received={"filters": filters})
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise ConfigError("must be an odd integer >= 1.", key="kernel_size",
                              received={"kernel_size": kernel_size})
        self.activation = activation
        self.kernel_initializer = keras.initializers.serialize(
            keras.initializers.get(kernel_initializer))
        self.bias_initializer = keras.initializers.serialize(
            keras.initializers.get(bias_initializer))
        self.conv = None

    def build(self, input_shape):
        """Create the ``valid`` convolution for ``input_shape``."""
        self.conv = keras.layers.Conv2D(
            self.filters, self.kernel_size, padding="valid", activation=self.activation,
            kernel_initializer=keras.initializers.deserialize(self.kernel_initializer),
            bias_initializer=keras.initializers.deserialize(self.bias_initializer),
            name="conv")
        p = self.kernel_size // 2
        self.conv.build((input_shape[0], None if input_shape[1] is None else input_shape[1] + 2 * p,
                         None if input_shape[2] is None else input_shape[2] + 2 * p,
                         input_shape[3]))

    def call(self, inputs):
        """Mirror-pad ``inputs`` by half the kernel, then convolve (output keeps the size)."""
        p = self.kernel_size // 2
        if p:
            inputs = keras.ops.pad(inputs, [[0, 0], [p, p], [p, p], [0, 0]], mode="reflect")
        return self.conv(inputs)

    def compute_output_shape(self, input_shape):
        """Same spatial size as the input, ``filters`` channels."""
        return tuple(input_shape[:-1]) + (self.filters,)

    def get_config(self):
        config = super().get_config()
        config.update({"filters": self.filters, "kernel_size": self.kernel_size,
                       "activation": self.activation,
                       "kernel_initializer": self.kernel_initializer,
                       "bias_initializer": self.bias_initializer})
        return config


def _conv(filters, kernel_size, padding, name, **kwargs):
    """``same``-sized stride-1 convolution with zero (Keras) or mirror padding."""
    if padding == "reflect" and int(kernel_size) > 1:
        return ReflectConv2D(filters, kernel_size, name=name, **kwargs)
    return keras.layers.Conv2D(filters, kernel_size, padding="same", name=name, **kwargs)


# Registered as ``astrogen>VAEResidualBlock``: ``astrogen>ResidualBlock`` is the diffusion
# U-Net's block (astrogen.models.layers_diffusion); one name for both made the last imported
# module win. No shipped file stores this name (FlowVAE rebuilds its layers from its config).
@keras.saving.register_keras_serializable(package="astrogen", name="VAEResidualBlock")
class ResidualBlock(keras.layers.Layer):
    """Pre-activation residual block: ``x + conv(act(conv(act(x))))``.

    A 1x1 convolution projects the skip connection when the number of channels changes.
    No normalisation layer, so the output of a row never depends on the other rows of the
    batch (batch-size independent generation).

    Parameters
    ----------
    filters : int
        Output channels.
    kernel_size : int
        Size of the two convolutions.
    activation : str
        Activation function.
    padding : {"zeros", "reflect"}
        Border handling of the two convolutions (see :data:`PADDINGS`).
    """

    def __init__(self, filters, kernel_size=3, activation="elu", padding="zeros", **kwargs):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.kernel_size = int(kernel_size)
        self.activation = activation
        if padding not in PADDINGS:
            raise ConfigError(f"must be one of {PADDINGS}.", key="padding",
                              received={"padding": padding})
        self.padding = padding
        self._act = keras.activations.get(activation)
        self.conv1 = _conv(self.filters, self.kernel_size, padding, name="conv1")
        # small initial residual branch: the block starts close to the identity
        self.conv2 = _conv(self.filters, self.kernel_size, padding, name="conv2",
                           kernel_initializer=keras.initializers.VarianceScaling(0.1))
        self.skip = None

    def build(self, input_shape):
        """Build the two convolutions and, when the channel count changes, a 1x1 skip convolution."""
        channels = int(input_shape[-1])
        if channels != self.filters:
            self.skip = keras.layers.Conv2D(self.filters, 1, name="skip")
            self.skip.build(input_shape)
        self.conv1.build(input_shape)
        self.conv2.build(tuple(input_shape[:-1]) + (self.filters,))

    def call(self, inputs):
        """``skip(x) + conv2(act(conv1(act(x))))``.

        Parameters
        ----------
        inputs : tensor
            Shape ``(batch, height, width, channels)``.

        Returns
        -------
        tensor
            Shape ``(batch, height, width, filters)``.
        """
        h = self.conv1(self._act(inputs))
        h = self.conv2(self._act(h))
        skip = self.skip(inputs) if self.skip is not None else inputs
        return skip + h

    def compute_output_shape(self, input_shape):
        """``input_shape`` with ``filters`` channels."""
        return tuple(input_shape[:-1]) + (self.filters,)

    def get_config(self):
        config = super().get_config()
        config.update({"filters": self.filters, "kernel_size": self.kernel_size,
                       "activation": self.activation, "padding": self.padding})
        return config


@keras.saving.register_keras_serializable(package="astrogen")
class GaussianPosterior(keras.layers.Layer):
    """Dense head giving the mean and standard deviation of a diagonal Gaussian ``q(z|x)``.

    ``std = softplus(raw) + min_std``; the raw scale starts near ``softplus(-1) ~ 0.3``.

    Parameters
    ----------
    latent_dim : int
        Dimension of ``z``.
    min_std : float
        Floor on the posterior standard deviation (numerical safety of the KL term).
    """

    def __init__(self, latent_dim, min_std=1e-4, **kwargs):
        super().__init__(**kwargs)
        self.latent_dim = int(latent_dim)
        self.min_std = float(min_std)
        self.mean_dense = keras.layers.Dense(self.latent_dim, name="mean")
        self.scale_dense = keras.layers.Dense(
            self.latent_dim, name="scale",
            kernel_initializer=keras.initializers.VarianceScaling(0.1),
            bias_initializer=keras.initializers.Constant(-1.0))

    def build(self, input_shape):
        """Build the mean and scale dense layers."""
        self.mean_dense.build(input_shape)
        self.scale_dense.build(input_shape)

    def call(self, inputs):
        """Mean and standard deviation of the diagonal Gaussian posterior.

        Parameters
        ----------
        inputs : tensor
            Features, shape ``(batch, n_features)``.

        Returns
        -------
        mean, std : tensor
            Each of shape ``(batch, latent_dim)``; ``std = softplus(.) + min_std > 0``.
        """
        mean = self.mean_dense(inputs)
        std = keras.activations.softplus(self.scale_dense(inputs)) + self.min_std
        return mean, std

    def compute_output_shape(self, input_shape):
        """Shapes of the mean and the standard deviation, ``(..., latent_dim)`` each."""
        shape = tuple(input_shape[:-1]) + (self.latent_dim,)
        return shape, shape

    def get_config(self):
        config = super().get_config()
        config.update({"latent_dim": self.latent_dim, "min_std": self.min_std})
        return config


def check_architecture(stamp_size, latent_dim, channels, blocks_per_level,
                       output_activation, flux_scale, upsampling="nearest",
                       padding="zeros", output_bias=-2.0) -> None:
    """Raise :class:`~astrogen.errors.ConfigError` on an invalid encoder/decoder setting."""
    if upsampling not in UPSAMPLINGS:
        raise ConfigError(f"must be one of {UPSAMPLINGS}.", key="upsampling",
                          received={"upsampling": upsampling})
    if padding not in PADDINGS:
        raise ConfigError(f"must be one of {PADDINGS}.", key="padding",
                          received={"padding": padding})
    channels = list(channels)
    if not channels or any(int(c) < 1 for c in channels):
        raise ConfigError("must be a non-empty list of positive integers.", key="channels",
                          received={"channels": channels})
    factor = 2 ** len(channels)
    if int(stamp_size) != stamp_size or stamp_size < factor or stamp_size % factor:
        raise ConfigError(f"must be a positive multiple of {factor} (2 ** len(channels)).",
                          key="stamp_size", received={"stamp_size": stamp_size})
    if int(latent_dim) != latent_dim or latent_dim < 1:
        raise ConfigError("must be a positive integer.", key="latent_dim",
                          received={"latent_dim": latent_dim})
    if int(blocks_per_level) != blocks_per_level or blocks_per_level < 0:
        raise ConfigError("must be an integer >= 0.", key="blocks_per_level",
                          received={"blocks_per_level": blocks_per_level})
    if output_activation not in OUTPUT_ACTIVATIONS:
        raise ConfigError(f"must be one of {OUTPUT_ACTIVATIONS}.", key="output_activation",
                          received={"output_activation": output_activation})
    if not (flux_scale > 0):
        raise ConfigError("must be > 0 (flux per pixel).", key="flux_scale",
                          received={"flux_scale": flux_scale})
    if isinstance(output_bias, bool) or not isinstance(output_bias, (int, float)) \
            or not np.isfinite(output_bias):
        raise ConfigError("must be a finite number (initial pre-activation output bias).",
                          key="output_bias", received={"output_bias": output_bias})


def build_encoder(stamp_size, latent_dim, channels, blocks_per_level=1, activation="elu",
                  flux_scale=1.0, min_std=1e-4, name="encoder",
                  padding="zeros") -> keras.Model:
    """Convolutional encoder ``(B, N, N) -> (mean, std)`` of ``q(z | x)``, each ``(B, L)``.

    Each level ``i`` applies ``blocks_per_level`` residual blocks with ``channels[i]``
    filters, then a stride-2 convolution, so ``N`` must be a multiple of
    ``2 ** len(channels)``.
    """
    n = int(stamp_size)
    inputs = keras.Input(shape=(n, n), name="images")
    h = keras.layers.Reshape((n, n, 1), name="add_channel")(inputs)
    h = keras.layers.Rescaling(1.0 / float(flux_scale), name="normalise")(h)
    h = _conv(int(channels[0]), 3, padding, name="stem")(h)
    for i, c in enumerate(channels):
        for j in range(int(blocks_per_level)):
            h = ResidualBlock(int(c), activation=activation, padding=padding,
                              name=f"res_{i}_{j}")(h)
        h = keras.layers.Conv2D(int(c), 3, strides=2, padding="same", activation=activation,
                                name=f"down_{i}")(h)
    h = keras.layers.Flatten(name="flatten")(h)
    mean, std = GaussianPosterior(int(latent_dim), min_std=min_std, name="posterior")(h)
    return keras.Model(inputs, [mean, std], name=name)


def build_decoder(stamp_size, latent_dim, channels, blocks_per_level=1, activation="elu",
                  output_activation="softplus", flux_scale=1.0, name="decoder",
                  upsampling="nearest", padding="zeros", output_bias=-2.0) -> keras.Model:
    """Convolutional decoder ``z (B, L) -> unconvolved light profile (B, N, N)``.

    Mirrors :func:`build_encoder`: a dense layer to ``(N / 2**K, N / 2**K, channels[-1])``,
    then for each level (reversed) an upsampling by 2 (``upsampling``: ``nearest`` pixel
    replication, or ``bilinear``), a convolution and residual blocks; a final 3x3
    convolution to one channel, the output activation, and the multiplication by
    ``flux_scale`` (output unit: flux per pixel). ``padding`` sets how every 3x3
    convolution sees the border (``zeros`` or ``reflect``, see :data:`PADDINGS`).

    Artefacts of ``nearest`` + ``zeros`` (the shipped model of format 1): replication makes
    steps on the 2, 4, 8 and 16-pixel grids that one convolution and one residual block per
    level cannot smooth away (blocks, straight streaks along the axes), and zero padding
    shows every layer a dark frame, which the decoder reproduces as a frame along the
    border. ``bilinear`` + ``reflect`` removes both causes.

    ``output_bias`` is the initial bias of the last convolution (before the activation;
    ignored by ``linear``, which starts at 0). ``softplus`` has no true zero: the empty sky
    sits near ``flux_scale * softplus(b)`` per pixel, and the likelihood, whose noise hides a
    pedestal that faint, hardly moves ``b``: an 800-step run from ``b = -2`` (``softplus =
    0.13``) kept a sky pedestal (light in the outer 2-pixel ring 0.035 of the stamp, truth
    0.007); from ``b = -6`` (``softplus = 0.0025``, 50x lower) the same run gave 0.010
    (``benchmarks/flowvae_artefacts.py``), but a slower-rising ELBO (README, issue 20).
    """
    n = int(stamp_size)
    k = len(channels)
    s = n // 2 ** k
    inputs = keras.Input(shape=(int(latent_dim),), name="z")
    h = keras.layers.Dense(s * s * int(channels[-1]), activation=activation, name="project")(inputs)
    h = keras.layers.Reshape((s, s, int(channels[-1])), name="to_grid")(h)
    for i in reversed(range(k)):
        c = int(channels[i])
        h = keras.layers.UpSampling2D(2, interpolation=upsampling, name=f"up_{i}")(h)
        h = _conv(c, 3, padding, name=f"up_conv_{i}", activation=activation)(h)
        for j in range(int(blocks_per_level)):
            h = ResidualBlock(c, activation=activation, padding=padding,
                              name=f"res_{i}_{j}")(h)
    softplus = output_activation == "softplus"
    h = _conv(1, 3, padding, name="to_image",
              bias_initializer=keras.initializers.Constant(
                  float(output_bias) if softplus else 0.0))(h)
    if softplus:
        h = keras.layers.Activation("softplus", name="non_negative")(h)
    h = keras.layers.Rescaling(float(flux_scale), name="flux_scale")(h)
    outputs = keras.layers.Reshape((n, n), name="drop_channel")(h)
    return keras.Model(inputs, outputs, name=name)

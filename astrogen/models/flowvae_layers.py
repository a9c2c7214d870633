"""Keras 3 building blocks of the FlowVAE: residual blocks, Gaussian posterior head,
convolutional encoder and decoder.

Images enter and leave as ``(B, N, N)`` arrays of flux per pixel (the unit of the training
stamps, for example ``count/s`` at the COSMOS zero point); the layers rescale them by a fixed
``flux_scale`` so the network works on numbers of order one.
"""
from __future__ import annotations

import keras

from astrogen.errors import ConfigError

__all__ = ["ResidualBlock", "GaussianPosterior", "build_encoder", "build_decoder",
           "check_architecture", "OUTPUT_ACTIVATIONS"]

#: Decoder output activations: ``softplus`` (non-negative light profile, default) or
#: ``linear`` (unconstrained).
OUTPUT_ACTIVATIONS = ("softplus", "linear")


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
    """

    def __init__(self, filters, kernel_size=3, activation="elu", **kwargs):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.kernel_size = int(kernel_size)
        self.activation = activation
        self._act = keras.activations.get(activation)
        self.conv1 = keras.layers.Conv2D(self.filters, self.kernel_size, padding="same",
                                         name="conv1")
        # small initial residual branch: the block starts close to the identity
        self.conv2 = keras.layers.Conv2D(
            self.filters, self.kernel_size, padding="same", name="conv2",
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
                       "activation": self.activation})
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
                       output_activation, flux_scale) -> None:
    """Raise :class:`~astrogen.errors.ConfigError` on an invalid encoder/decoder setting."""
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


def build_encoder(stamp_size, latent_dim, channels, blocks_per_level=1, activation="elu",
                  flux_scale=1.0, min_std=1e-4, name="encoder") -> keras.Model:
    """Convolutional encoder ``(B, N, N) -> (mean, std)`` of ``q(z | x)``, each ``(B, L)``.

    Each level ``i`` applies ``blocks_per_level`` residual blocks with ``channels[i]``
    filters, then a stride-2 convolution, so ``N`` must be a multiple of
    ``2 ** len(channels)``.
    """
    n = int(stamp_size)
    inputs = keras.Input(shape=(n, n), name="images")
    h = keras.layers.Reshape((n, n, 1), name="add_channel")(inputs)
    h = keras.layers.Rescaling(1.0 / float(flux_scale), name="normalise")(h)
    h = keras.layers.Conv2D(int(channels[0]), 3, padding="same", name="stem")(h)
    for i, c in enumerate(channels):
        for j in range(int(blocks_per_level)):
            h = ResidualBlock(int(c), activation=activation, name=f"res_{i}_{j}")(h)
        h = keras.layers.Conv2D(int(c), 3, strides=2, padding="same", activation=activation,
                                name=f"down_{i}")(h)
    h = keras.layers.Flatten(name="flatten")(h)
    mean, std = GaussianPosterior(int(latent_dim), min_std=min_std, name="posterior")(h)
    return keras.Model(inputs, [mean, std], name=name)


def build_decoder(stamp_size, latent_dim, channels, blocks_per_level=1, activation="elu",
                  output_activation="softplus", flux_scale=1.0, name="decoder") -> keras.Model:
    """Convolutional decoder ``z (B, L) -> unconvolved light profile (B, N, N)``.

    Mirrors :func:`build_encoder`: a dense layer to ``(N / 2**K, N / 2**K, channels[-1])``,
    then for each level (reversed) a nearest-neighbour upsampling, a convolution and residual
    blocks; a final 3x3 convolution to one channel, the output activation, and the
    multiplication by ``flux_scale`` (output unit: flux per pixel).

    ``softplus`` output starts with a bias of -2 (``softplus(-2) ~ 0.13``): close to empty
    sky but with useful gradients.
    """
    n = int(stamp_size)
    k = len(channels)
    s = n // 2 ** k
    inputs = keras.Input(shape=(int(latent_dim),), name="z")
    h = keras.layers.Dense(s * s * int(channels[-1]), activation=activation, name="project")(inputs)
    h = keras.layers.Reshape((s, s, int(channels[-1])), name="to_grid")(h)
    for i in reversed(range(k)):
        c = int(channels[i])
        h = keras.layers.UpSampling2D(2, interpolation="nearest", name=f"up_{i}")(h)
        h = keras.layers.Conv2D(c, 3, padding="same", activation=activation,
                                name=f"up_conv_{i}")(h)
        for j in range(int(blocks_per_level)):
            h = ResidualBlock(c, activation=activation, name=f"res_{i}_{j}")(h)
    softplus = output_activation == "softplus"
    h = keras.layers.Conv2D(
        1, 3, padding="same", name="to_image",
        bias_initializer=keras.initializers.Constant(-2.0 if softplus else 0.0))(h)
    if softplus:
        h = keras.layers.Activation("softplus", name="non_negative")(h)
    h = keras.layers.Rescaling(float(flux_scale), name="flux_scale")(h)
    outputs = keras.layers.Reshape((n, n), name="drop_channel")(h)
    return keras.Model(inputs, outputs, name=name)

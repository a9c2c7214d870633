"""U-Net segmenter for deblending: per-pixel classes and per-object light fractions (Keras 3).

The network is the encoder-decoder with skip connections of Ronneberger et al. (2015) as used
for galaxy deblending by Boucaud et al. (2020, MNRAS 491, 2481, arXiv:1905.01324). It has two
softmax heads on the same decoder features:

``"classes"`` -- shape ``(batch, height, width, n_classes)``
    per-pixel probabilities of *background*, *object* (one object contributes) and
    *overlap* (two or more objects contribute), the three-class segmentation of Boucaud+20.
    The truth is :func:`astrogen.deblend.measure.segmentation_classes`.

``"fractions"`` -- shape ``(batch, height, width, max_objects + 1)``, only if ``max_objects > 0``
    per-pixel *fraction of the light* that belongs to each of ``max_objects`` object slots,
    channel 0 being the background (the light that belongs to no object). Object slots are
    ordered by *distance to the stamp centre*: slot 1 is the object nearest the centre (the
    detection the stamp is centred on, Boucaud+20's central galaxy), slot 2 the next one
    (the neighbour), and so on, so the slot assignment is well defined without a
    permutation-invariant loss. The networks trained by
    :mod:`astrogen.training.unet_trainer` get a second input band holding the distance to the
    stamp centre (:func:`astrogen.deblend.segment.network_input`), which makes "the galaxy at
    the centre" visible to the convolutions. The truth is
    :func:`astrogen.physics.blends.truth_targets` (slots ordered by
    :func:`astrogen.physics.blends.order_by_centre_distance`). The evaluation
    (:mod:`astrogen.deblend.evaluate`: IoU with the best-overlapping segment, position
    matching for fluxes) does not depend on the slot order.

Why light fractions rather than per-galaxy images
-------------------------------------------------
Boucaud+20 regress each galaxy's noiseless image (their "blend2gal" network) and derive the
photometry from it; Bretonnière et al. (2021, arXiv:2111.15455) likewise measure fluxes of
generated or deblended profiles. Predicting images means regressing intensities over several
decades, so the result depends on the photometric scale of the training set and errors in the
predicted amplitude go straight into the flux. The fractions head instead predicts, for each
pixel, how the *observed* light is shared; fluxes then follow by *flux redistribution*
(as in SExtractor and scarlet): ``flux_i = sum_pixels image * fraction_i``
(:func:`astrogen.deblend.measure.measure_fractions`). This has three useful properties:

* it is invariant to the image scale (fractions of a scene multiplied by any constant are
  unchanged), so one network serves any zero point or exposure time;
* the measured fluxes of all slots plus the background share add up exactly to the flux of
  the image, because the softmax makes the fractions sum to one in every pixel: no light is
  lost or counted twice in a blend;
* the noise of the measurement is the noise of the observed pixels weighted by the fractions
  (a propagated, not a learned, uncertainty), and an isolated galaxy's fraction is just a
  soft footprint, so the network only has to learn *shapes*, not amplitudes.

With several bands the fractions are shared by all bands (they are the fractions of the
summed, detection image), so per-band fluxes of galaxies of different colours in the same
pixels are approximate; per-band fraction heads would lift this at the cost of
``n_bands`` times more outputs.

The price is a fixed maximum number of objects per stamp (``max_objects``); fainter extra
objects are counted as background by the truth builder, which is appropriate for the postage-
stamp blends (2 to 5 galaxies) of the papers above. The classes head is kept because it is the
quantity whose calibration and IoU the literature reports, and because it is cheap.

Input scaling
-------------
Galaxy images span a large dynamic range, so by default the network sees
``asinh(image / input_scale)`` (``input_transform="asinh"``); ``input_scale`` is best set to the
noise standard deviation of the images. The transform is part of the model, so a saved model
takes raw pixel values.

Example
-------
>>> import keras
>>> from astrogen.models.unet import UNet
>>> model = UNet(n_bands=1, depth=2, base_filters=8, max_objects=2)
>>> out = model(keras.ops.zeros((1, 32, 32, 1)))
>>> tuple(out["classes"].shape), tuple(out["fractions"].shape)
((1, 32, 32, 3), (1, 32, 32, 3))
"""
from __future__ import annotations

import numbers
from typing import Any

import keras
from keras import ops

from astrogen.errors import ConfigError
from astrogen.seeds import derive_seed

__all__ = [
    "CLASS_NAMES",
    "ConvBlock",
    "UNetBackbone",
    "UNet",
    "check_int",
    "check_float",
    "apply_input_transform",
]

#: Names of the channels of the ``"classes"`` head (for ``n_classes=3``).
CLASS_NAMES = ("background", "object", "overlap")

INPUT_TRANSFORMS = ("asinh", "linear", "none")


# ---------------------------------------------------------------- argument checks


def check_int(value: Any, key: str, minimum: int) -> int:
    """Return ``value`` as an int, raising :class:`ConfigError` if it is not an int >= minimum."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ConfigError(f"must be an integer >= {minimum}.", key=key, received={key: value})
    value = int(value)
    if value < minimum:
        raise ConfigError(f"must be an integer >= {minimum}.", key=key, received={key: value})
    return value


def check_float(value: Any, key: str, positive: bool = True, allow_zero: bool = False) -> float:
    """Return ``value`` as a finite float, > 0 (or >= 0 if ``allow_zero``) when ``positive``."""
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise ConfigError("must be a number.", key=key, received={key: value}) from None
    if out != out or out in (float("inf"), float("-inf")):
        raise ConfigError("must be finite.", key=key, received={key: value})
    if positive and (out < 0 or (out == 0 and not allow_zero)):
        raise ConfigError("must be >= 0." if allow_zero else "must be > 0.", key=key,
                          received={key: value})
    return out


def check_choice(value: Any, key: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        from astrogen.errors import suggest

        raise ConfigError(f"must be one of {list(choices)}.{suggest(str(value), choices)}",
                          key=key, received={key: value})
    return value


def check_seed(seed: Any) -> int | None:
    if seed is None:
        return None
    return check_int(seed, "seed", 0)


#: Activations of the ReLU family, whose hidden layers get He initialisation.
RELU_FAMILY = ("relu", "leaky_relu", "elu", "selu", "gelu", "silu", "swish", "relu6", "mish")


def layer_initializer(seed: int | None, *keys: object, activation: str | None = None):
    """Kernel initializer seeded from ``(seed, *keys)`` (global Keras seeding if ``seed`` is
    None).

    Layers followed by an activation of the ReLU family (:data:`RELU_FAMILY`) get the He
    normal initializer (variance ``2 / fan_in``, He et al. 2015, arXiv:1502.01852); the
    other layers (softmax heads, linear outputs, other activations) Glorot uniform. With
    Glorot initialisation ReLU halves the signal variance at every convolution, so in the
    ~15 convolutions of a depth-3 U-Net without normalisation the features of the deep,
    large-receptive-field levels start ~10-40 times weaker than the input (measured: feature
    std 0.03-0.1 at the bottleneck for a unit-variance input vs ~1 with He) and the network
    at first only uses the shallow skip path: the segmenters then learned the local
    footprint but not which galaxy a pixel belongs to (the object-slot assignment needs the
    whole stamp).
    """
    he = activation is not None and str(activation).lower() in RELU_FAMILY
    if seed is None:
        return "he_normal" if he else "glorot_uniform"
    s = derive_seed(seed, *keys) % (2**31 - 1)
    if he:
        return keras.initializers.HeNormal(seed=s)
    return keras.initializers.GlorotUniform(seed=s)


def apply_input_transform(x, transform: str, scale: float):
    """The input transform of the models: ``asinh(x / scale)``, ``x / scale`` or ``x``."""
    if transform == "asinh":
        return ops.arcsinh(x / scale)
    if transform == "linear":
        return x / scale
    return x


def build_layer(layer, shape) -> None:
    """Build a sub-layer for ``shape`` unless it is built already (e.g. by a traced call)."""
    if not layer.built:
        layer.build(shape)


def check_spatial(input_shape, depth: int) -> None:
    factor = 2**depth
    for dim in input_shape[1:3]:
        if dim is not None and int(dim) % factor:
            raise ConfigError(
                f"the input height and width must be multiples of 2**depth = {factor}.",
                key="depth", received={"depth": depth, "input_shape": tuple(input_shape)})


# ---------------------------------------------------------------- layers


@keras.saving.register_keras_serializable(package="astrogen")
class ConvBlock(keras.layers.Layer):
    """Two 3x3 'same' convolutions, each followed by the activation.

    Parameters
    ----------
    filters : int
        Number of output channels (>= 1).
    activation : str
        Keras activation name.
    seed : int, optional
        Seed of the kernel initializers (global Keras seeding if None).
    """

    def __init__(self, filters: int = 16, activation: str = "relu", seed: int | None = None,
                 **kwargs):
        super().__init__(**kwargs)
        self.filters = check_int(filters, "filters", 1)
        self.activation = activation
        self.seed = check_seed(seed)
        self.conv1 = keras.layers.Conv2D(self.filters, 3, padding="same", activation=activation,
                                         kernel_initializer=layer_initializer(self.seed, "conv1",
                                                                          activation=activation),
                                         name="conv1")
        self.conv2 = keras.layers.Conv2D(self.filters, 3, padding="same", activation=activation,
                                         kernel_initializer=layer_initializer(self.seed, "conv2",
                                                                          activation=activation),
                                         name="conv2")

    def build(self, input_shape):
        """Build the two convolutions."""
        build_layer(self.conv1, input_shape)
        build_layer(self.conv2, self.conv1.compute_output_shape(input_shape))

    def call(self, x):
        """Two convolutions, ``conv2(conv1(x))``.

        Parameters
        ----------
        x : tensor
            Shape ``(batch, height, width, channels)``.

        Returns
        -------
        tensor
            Shape ``(batch, height, width, filters)``.
        """
        return self.conv2(self.conv1(x))

    def compute_output_shape(self, input_shape):
        """``input_shape`` with ``filters`` channels."""
        return (*input_shape[:-1], self.filters)

    def get_config(self):
        config = super().get_config()
        config.update(filters=self.filters, activation=self.activation, seed=self.seed)
        return config


@keras.saving.register_keras_serializable(package="astrogen")
class UNetBackbone(keras.layers.Layer):
    """Encoder-decoder with skip connections; returns the last decoder features.

    Level ``l`` (0 = full resolution) has ``base_filters * 2**l`` channels; there are ``depth``
    2x2 max-poolings, a bottleneck block, and ``depth`` stride-2 transposed convolutions each
    followed by concatenation with the encoder features of the same level and a
    :class:`ConvBlock`. The output has ``base_filters`` channels at the input resolution. The
    input height and width must be multiples of ``2**depth``.

    Parameters
    ----------
    depth : int
        Number of down-sampling steps (>= 1).
    base_filters : int
        Channels at full resolution (>= 1).
    activation : str
        Keras activation name.
    seed : int, optional
        Seed of the kernel initializers.
    """

    def __init__(self, depth: int = 3, base_filters: int = 16, activation: str = "relu",
                 seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.depth = check_int(depth, "depth", 1)
        self.base_filters = check_int(base_filters, "base_filters", 1)
        self.activation = activation
        self.seed = check_seed(seed)
        sub = (lambda *k: None) if self.seed is None else (lambda *k: derive_seed(self.seed, *k))
        f = [self.base_filters * 2**level for level in range(self.depth + 1)]
        self.down_blocks = [ConvBlock(f[lv], activation, sub("down", lv), name=f"down{lv}")
                            for lv in range(self.depth)]
        self.pools = [keras.layers.MaxPooling2D(2, name=f"pool{lv}") for lv in range(self.depth)]
        self.bottleneck = ConvBlock(f[self.depth], activation, sub("bottleneck"),
                                    name="bottleneck")
        levels = list(reversed(range(self.depth)))
        self.ups = [keras.layers.Conv2DTranspose(
            f[lv], 2, strides=2, padding="same", activation=activation,
            kernel_initializer=layer_initializer(self.seed, "upconv", lv, activation=activation),
            name=f"upconv{lv}")
            for lv in levels]
        self.up_blocks = [ConvBlock(f[lv], activation, sub("up", lv), name=f"up{lv}")
                          for lv in levels]

    def build(self, input_shape):
        """Build the encoder, bottleneck and decoder; height and width must divide by
        ``2 ** depth``.
        """
        check_spatial(input_shape, self.depth)
        shape = tuple(input_shape)
        skips = []
        for block, pool in zip(self.down_blocks, self.pools):
            build_layer(block, shape)
            shape = block.compute_output_shape(shape)
            skips.append(shape)
            shape = pool.compute_output_shape(shape)
        build_layer(self.bottleneck, shape)
        shape = self.bottleneck.compute_output_shape(shape)
        for up, block, skip in zip(self.ups, self.up_blocks, reversed(skips)):
            build_layer(up, shape)
            shape = up.compute_output_shape(shape)
            shape = (*skip[:-1], shape[-1] + skip[-1])
            build_layer(block, shape)
            shape = block.compute_output_shape(shape)

    def call(self, x):
        """U-Net features: encoder with pooling, bottleneck, decoder with skip connections.

        Parameters
        ----------
        x : tensor
            Shape ``(batch, height, width, channels)``.

        Returns
        -------
        tensor
            Shape ``(batch, height, width, base_filters)``.
        """
        skips = []
        for block, pool in zip(self.down_blocks, self.pools):
            x = block(x)
            skips.append(x)
            x = pool(x)
        x = self.bottleneck(x)
        for up, block, skip in zip(self.ups, self.up_blocks, reversed(skips)):
            x = block(ops.concatenate([up(x), skip], axis=-1))
        return x

    def compute_output_shape(self, input_shape):
        """``input_shape`` with ``base_filters`` channels."""
        return (*input_shape[:-1], self.base_filters)

    def get_config(self):
        config = super().get_config()
        config.update(depth=self.depth, base_filters=self.base_filters,
                      activation=self.activation, seed=self.seed)
        return config


# ---------------------------------------------------------------- model


@keras.saving.register_keras_serializable(package="astrogen")
class UNet(keras.Model):
    """U-Net deblending segmenter with a class head and an optional light-fraction head.

    Parameters
    ----------
    n_bands : int
        Number of input bands (channels, last axis), >= 1.
    depth : int
        Number of 2x down-sampling steps (>= 1); height and width must be multiples of
        ``2**depth``.
    base_filters : int
        Convolution channels at full resolution, doubled at each level (>= 1).
    n_classes : int
        Channels of the ``"classes"`` softmax head (>= 2); 3 means
        background / object / overlap (:data:`CLASS_NAMES`).
    max_objects : int
        Number of object slots of the ``"fractions"`` head (>= 0); 0 disables the head.
        The head has ``max_objects + 1`` channels, channel 0 = background.
    input_transform : {"asinh", "linear", "none"}
        Transform applied to the pixels before the network (see module docstring).
    input_scale : float
        Scale of the transform (> 0), e.g. the noise standard deviation, in image units.
    activation : str
        Keras activation of the hidden convolutions.
    seed : int, optional
        Seed of every kernel initializer, for weights that do not depend on global state.

    Notes
    -----
    Calling the model on ``(batch, height, width, n_bands)`` images returns a dict with
    ``"classes"`` and, if ``max_objects > 0``, ``"fractions"``; both are probabilities that
    sum to one over the last axis. Train with ``categorical_crossentropy`` on both outputs
    (soft targets are fine for the fractions); a per-pixel ``sample_weight`` can weight the
    fraction loss by the pixel flux when fluxes matter most.
    """

    def __init__(self, n_bands: int = 1, depth: int = 3, base_filters: int = 16,
                 n_classes: int = 3, max_objects: int = 0, input_transform: str = "asinh",
                 input_scale: float = 1.0, activation: str = "relu", seed: int | None = None,
                 **kwargs):
        super().__init__(**kwargs)
        self.n_bands = check_int(n_bands, "n_bands", 1)
        self.depth = check_int(depth, "depth", 1)
        self.base_filters = check_int(base_filters, "base_filters", 1)
        self.n_classes = check_int(n_classes, "n_classes", 2)
        self.max_objects = check_int(max_objects, "max_objects", 0)
        self.input_transform = check_choice(input_transform, "input_transform", INPUT_TRANSFORMS)
        self.input_scale = check_float(input_scale, "input_scale")
        if not isinstance(activation, str):
            raise ConfigError("must be the name of a Keras activation.", key="activation",
                              received={"activation": activation})
        self.activation = activation
        self.seed = check_seed(seed)
        self.backbone = UNetBackbone(self.depth, self.base_filters, activation,
                                     None if self.seed is None else derive_seed(self.seed, "bb"),
                                     name="backbone")
        self.class_head = keras.layers.Conv2D(
            self.n_classes, 1, activation="softmax", name="class_head",
            kernel_initializer=layer_initializer(self.seed, "class_head"))
        self.fraction_head = None
        if self.max_objects:
            self.fraction_head = keras.layers.Conv2D(
                self.max_objects + 1, 1, activation="softmax", name="fraction_head",
                kernel_initializer=layer_initializer(self.seed, "fraction_head"))

    def build(self, input_shape):
        """Build the backbone and the class (and fraction) heads.

        Parameters
        ----------
        input_shape : tuple
            ``(batch, height, width, n_bands)``.

        Raises
        ------
        astrogen.errors.ConfigError
            When the shape is not of that form.
        """
        input_shape = tuple(input_shape)
        if len(input_shape) != 4 or (input_shape[-1] is not None
                                     and int(input_shape[-1]) != self.n_bands):
            raise ConfigError("the input must have shape (batch, height, width, n_bands).",
                              key="n_bands",
                              received={"n_bands": self.n_bands, "input_shape": input_shape})
        input_shape = (*input_shape[:-1], self.n_bands)
        build_layer(self.backbone, input_shape)
        feat = self.backbone.compute_output_shape(input_shape)
        build_layer(self.class_head, feat)
        if self.fraction_head is not None:
            build_layer(self.fraction_head, feat)

    def call(self, inputs, training=None):
        """Per-pixel class logits (and flux-fraction logits) of blended images.

        Parameters
        ----------
        inputs : tensor
            Images, shape ``(batch, height, width, n_bands)``, in the units the input transform
            expects.
        training : bool, optional
            Training mode.

        Returns
        -------
        dict
            ``"classes"``: shape ``(batch, height, width, n_classes)``; with a fraction head also
            ``"fractions"``: shape ``(batch, height, width, max_objects + 1)``.
        """
        x = apply_input_transform(ops.cast(inputs, self.compute_dtype), self.input_transform,
                                  self.input_scale)
        feats = self.backbone(x, training=training)
        out = {"classes": self.class_head(feats)}
        if self.fraction_head is not None:
            out["fractions"] = self.fraction_head(feats)
        return out

    def compute_losses(self, x, classes, fractions, weights, fraction_weight: float = 1.0,
                       order_weight: float = 0.0, permutations=None, training=False,
                       scene=None, flux=None, flux_weight: float = 0.0,
                       flux_floor: float = 10.0) -> dict:
        """The training loss of a batch and its terms (scalar tensors, nats per pixel).

        Per-pixel cross-entropy of the classes head (one-hot ``classes`` (B, h, w, 3)) plus
        ``fraction_weight`` x the soft cross-entropy of the fractions head (``fractions``
        (B, h, w, K + 1)), both averaged over pixels with the per-pixel ``weights``
        (B, h, w); the fraction term is ``(1 + order_weight)`` x the cross-entropy in slot
        order, or, with ``permutations`` (:func:`astrogen.models.losses.slot_permutations`),
        the minimum over them plus ``order_weight`` x the slot-order term.

        With ``flux_weight > 0`` (and ``scene``, ``flux`` given) the loss also has
        ``flux_weight`` x the mean relative flux error of flux redistribution in slot order,
        ``|sum_p scene_p f_pk - flux_k| / (flux_k + flux_floor)`` averaged over the batch and
        the ``K`` slots, where ``f_pk`` is the predicted fraction of slot ``k``; an empty slot
        (``flux_k = 0``) counts the light given to it relative to the scene's flux,
        ``|sum_p scene_p f_pk| / (sum_j flux_j + flux_floor)``.

        Parameters
        ----------
        scene : tensor (B, h, w), optional
            Noiseless scene (sum of the objects) in units of the noise sigma.
        flux : tensor (B, K), optional
            True flux of each slot's object in the stamp, same unit (0 for empty slots).
        flux_weight : float
            Weight of the flux term (0: not computed).
        flux_floor : float
            Added to the denominator (noise-sigma units x pixels) so that faint objects
            do not dominate.

        Returns
        -------
        dict
            ``{"loss", "classes", "fractions", "fractions_ordered"}`` and, with the flux
            term, ``"flux"`` (the mean relative error, dimensionless).
        """
        import tensorflow as tf

        from astrogen.models.losses import permutation_invariant_ce

        identity = [list(range(self.max_objects + 1))]
        out = self(x, training=training)
        eps = 1e-7
        ce_c = -tf.reduce_sum(classes * tf.math.log(out["classes"] + eps), axis=-1)
        ce_c = tf.reduce_mean(ce_c * weights, axis=(1, 2))
        logf = tf.math.log(out["fractions"] + eps)
        ce_f, _ = permutation_invariant_ce(fractions, logf, identity if permutations is None
                                           else permutations, weights)
        ce_o, _ = permutation_invariant_ce(fractions, logf, identity, weights)
        loss = tf.reduce_mean(ce_c + fraction_weight * (ce_f + order_weight * ce_o))
        terms = {"classes": tf.reduce_mean(ce_c), "fractions": tf.reduce_mean(ce_f),
                 "fractions_ordered": tf.reduce_mean(ce_o)}
        if flux_weight > 0:
            if scene is None or flux is None:
                raise ConfigError("flux_weight > 0 needs the noiseless scene and the true "
                                  "fluxes.", key="flux_weight",
                                  received={"flux_weight": flux_weight})
            pred = tf.reduce_sum(tf.cast(scene, out["fractions"].dtype)[..., None]
                                 * out["fractions"][..., 1:], axis=(1, 2))
            flux = tf.cast(flux, pred.dtype)
            total = tf.reduce_sum(flux, axis=1, keepdims=True)
            ref = tf.where(flux > 0, flux, total * tf.ones_like(flux))
            rel = tf.reduce_mean(tf.abs(pred - flux) / (ref + flux_floor))
            loss = loss + flux_weight * rel
            terms["flux"] = rel
        return {"loss": loss, **terms}

    def compute_output_shape(self, input_shape):
        """Shapes of the ``"classes"`` (and ``"fractions"``) outputs."""
        shape = tuple(input_shape[:-1])
        out = {"classes": (*shape, self.n_classes)}
        if self.max_objects:
            out["fractions"] = (*shape, self.max_objects + 1)
        return out

    def get_config(self):
        config = super().get_config()
        config.update(n_bands=self.n_bands, depth=self.depth, base_filters=self.base_filters,
                      n_classes=self.n_classes, max_objects=self.max_objects,
                      input_transform=self.input_transform, input_scale=self.input_scale,
                      activation=self.activation, seed=self.seed)
        return config

    @classmethod
    def from_config(cls, config):
        return cls(**config)

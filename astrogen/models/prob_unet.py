"""Probabilistic U-Net (Kohl et al. 2018, arXiv:1806.05034) for deblending with uncertainty.

A deterministic segmenter gives one answer even where a blend is ambiguous (two galaxies of
similar colour superposed, a faint companion in the wing of a bright one). The probabilistic
U-Net models the *distribution* of plausible segmentations: a low-dimensional latent ``z``
encodes the choice among them, and

* a **prior net** ``p(z | x) = N(mu_p(x), diag sigma_p(x)^2)`` sees only the image;
* a **posterior net** ``q(z | x, y) = N(mu_q(x, y), diag sigma_q(x, y)^2)`` also sees the
  truth ``y`` (used only in training);
* the U-Net backbone (:class:`astrogen.models.unet.UNetBackbone`) computes features of the
  image once; ``z`` is broadcast over the pixels, concatenated to the last features, and a
  head of 1x1 convolutions (**fcomb**) turns them into per-pixel logits.

Training minimises ``reconstruction + beta * KL(q || p)`` where the reconstruction term is the
cross-entropy between ``y`` and the softmax of the logits for ``z ~ q``, *summed over pixels*
and averaged over the batch (the negative ELBO for ``beta = 1``, as in Kohl+18). The target
can be the three classes (background / object / overlap) or the per-object light fractions
of :mod:`astrogen.models.unet` (soft targets; cross-entropy is then the fraction loss).

At prediction time ``z`` is drawn from the prior: :meth:`ProbUNet.sample` returns several
segmentations, :meth:`ProbUNet.predict_with_uncertainty` their mean and the per-pixel
predictive entropy and standard deviation. Calling the model (``model(x)``) uses the prior
*mean*, which makes ``predict`` deterministic and is the usual point estimate.

Randomness is explicit: sampling takes a ``seed`` (same seed -> identical samples), and the
posterior draws during training come from a :class:`keras.random.SeedGenerator` seeded by the
constructor's ``seed``, so training is reproducible too. The Gaussians are written directly
(mean and log standard deviation); their KL divergence is the closed form for diagonal
Gaussians, which is what ``tfd.kl_divergence`` of two ``MultivariateNormalDiag`` gives, without
bringing Keras-2 TFP layers into a Keras-3 model.

Training uses a custom ``train_step`` and therefore needs the TensorFlow backend; inference
(``call``, ``sample``) is backend agnostic.
"""
from __future__ import annotations

import numpy as np
import keras
from keras import ops

from astrogen.errors import ConfigError, ModelError
from astrogen.models.unet import (
    ConvBlock,
    UNetBackbone,
    INPUT_TRANSFORMS,
    build_layer,
    check_choice,
    check_seed,
    check_spatial,
    layer_initializer,
    apply_input_transform,
    check_float,
    check_int,
)
from astrogen.seeds import derive_seed

__all__ = [
    "GaussianEncoder",
    "FComb",
    "ProbUNet",
    "kl_diag_gaussians",
    "predictive_summary",
]

_LOG_SIGMA_MIN, _LOG_SIGMA_MAX = -8.0, 4.0


def _sub(seed, *keys):
    return None if seed is None else derive_seed(seed, *keys)


def kl_diag_gaussians(mu_q, log_sigma_q, mu_p, log_sigma_p):
    """KL(q || p) of diagonal Gaussians, summed over the last axis (closed form, >= 0)."""
    var_ratio = ops.exp(2.0 * (log_sigma_q - log_sigma_p))
    t = ops.square(mu_q - mu_p) * ops.exp(-2.0 * log_sigma_p)
    return 0.5 * ops.sum(var_ratio + t - 1.0 - 2.0 * (log_sigma_q - log_sigma_p), axis=-1)


def predictive_summary(samples) -> dict[str, np.ndarray]:
    """Mean map and per-pixel uncertainty of sampled probability maps.

    Parameters
    ----------
    samples : array_like, shape (n_samples, ..., n_channels)
        Probability maps (each sums to one over the last axis).

    Returns
    -------
    dict
        ``"mean"`` (..., n_channels): mean probabilities; ``"entropy"`` (...): predictive
        entropy of the mean in nats (total uncertainty); ``"expected_entropy"`` (...): mean
        entropy of the samples (the part each sample is already unsure about);
        ``"mutual_information"`` (...): their difference, the disagreement between samples;
        ``"std"`` (..., n_channels): standard deviation over samples; ``"std_max"`` (...): the
        largest standard deviation over channels.
    """
    s = np.asarray(samples, dtype=np.float64)
    if s.ndim < 2:
        raise ConfigError("must have shape (n_samples, ..., n_channels).", key="samples",
                          received={"shape": s.shape})
    eps = 1e-12
    mean = s.mean(axis=0)
    entropy = -np.sum(mean * np.log(mean + eps), axis=-1)
    expected = -np.sum(s * np.log(s + eps), axis=-1).mean(axis=0)
    std = s.std(axis=0)
    return {"mean": mean, "entropy": entropy, "expected_entropy": expected,
            "mutual_information": np.maximum(entropy - expected, 0.0), "std": std,
            "std_max": std.max(axis=-1)}


@keras.saving.register_keras_serializable(package="astrogen")
class GaussianEncoder(keras.layers.Layer):
    """Convolutional encoder to the mean and log standard deviation of a diagonal Gaussian.

    ``depth + 1`` :class:`ConvBlock` levels separated by 2x2 max-pooling (the U-Net encoder),
    a spatial mean, and a dense layer to ``2 * latent_dim`` numbers. Returns
    ``(mu, log_sigma)``, each of shape ``(batch, latent_dim)``; ``log_sigma`` is clipped to
    [-8, 4] for numerical safety. The dense layer starts at zero so that both nets start at
    N(0, 1) and the KL term starts at zero.
    """

    def __init__(self, latent_dim: int = 6, depth: int = 3, base_filters: int = 16,
                 activation: str = "relu", seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.latent_dim = check_int(latent_dim, "latent_dim", 1)
        self.depth = check_int(depth, "depth", 1)
        self.base_filters = check_int(base_filters, "base_filters", 1)
        self.activation = activation
        self.seed = check_seed(seed)
        self.blocks = [ConvBlock(self.base_filters * 2**lv, activation, _sub(self.seed, lv),
                                 name=f"block{lv}") for lv in range(self.depth + 1)]
        self.pools = [keras.layers.MaxPooling2D(2, name=f"pool{lv}") for lv in range(self.depth)]
        self.dense = keras.layers.Dense(2 * self.latent_dim, kernel_initializer="zeros",
                                        name="gaussian_params")

    def build(self, input_shape):
        """Build the convolution blocks, pools and the dense head of the encoder."""
        shape = tuple(input_shape)
        for lv, block in enumerate(self.blocks):
            build_layer(block, shape)
            shape = block.compute_output_shape(shape)
            if lv < self.depth:
                shape = self.pools[lv].compute_output_shape(shape)
        build_layer(self.dense, (shape[0], shape[-1]))

    def call(self, x):
        """Mean and clipped log standard deviation of the latent Gaussian.

        Parameters
        ----------
        x : tensor
            Shape ``(batch, height, width, channels)``.

        Returns
        -------
        mu, log_sigma : tensor
            Each of shape ``(batch, latent_dim)``.
        """
        for lv, block in enumerate(self.blocks):
            x = block(x)
            if lv < self.depth:
                x = self.pools[lv](x)
        params = self.dense(ops.mean(x, axis=(1, 2)))
        mu = params[:, : self.latent_dim]
        log_sigma = ops.clip(params[:, self.latent_dim:], _LOG_SIGMA_MIN, _LOG_SIGMA_MAX)
        return mu, log_sigma

    def compute_output_shape(self, input_shape):
        """Shapes of ``mu`` and ``log_sigma``: ``(batch, latent_dim)`` each."""
        return (input_shape[0], self.latent_dim), (input_shape[0], self.latent_dim)

    def get_config(self):
        config = super().get_config()
        config.update(latent_dim=self.latent_dim, depth=self.depth,
                      base_filters=self.base_filters, activation=self.activation, seed=self.seed)
        return config


@keras.saving.register_keras_serializable(package="astrogen")
class FComb(keras.layers.Layer):
    """Combine features and a latent: broadcast ``z``, concatenate, 1x1 convolutions to logits.

    Called as ``fcomb([features, z])`` with features ``(batch, h, w, f)`` and ``z``
    ``(batch, latent_dim)``; returns logits ``(batch, h, w, n_outputs)``.
    """

    def __init__(self, n_outputs: int = 3, n_layers: int = 3, filters: int = 16,
                 activation: str = "relu", seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.n_outputs = check_int(n_outputs, "n_outputs", 2)
        self.n_layers = check_int(n_layers, "fcomb_layers", 1)
        self.filters = check_int(filters, "filters", 1)
        self.activation = activation
        self.seed = check_seed(seed)
        self.hidden = [keras.layers.Conv2D(self.filters, 1, activation=activation,
                                           kernel_initializer=layer_initializer(self.seed, i,
                                                                           activation=activation),
                                           name=f"hidden{i}")
                       for i in range(self.n_layers - 1)]
        self.logits = keras.layers.Conv2D(self.n_outputs, 1, name="logits",
                                          kernel_initializer=layer_initializer(self.seed, "logits"))

    def build(self, input_shape):
        """Build the 1x1 layers for features concatenated with the broadcast latent sample.

        Parameters
        ----------
        input_shape : tuple of tuple
            ``(feature shape (batch, height, width, c), latent shape (batch, latent_dim))``.
        """
        feat_shape, z_shape = input_shape
        shape = (*tuple(feat_shape)[:-1], feat_shape[-1] + z_shape[-1])
        for layer in self.hidden:
            build_layer(layer, shape)
            shape = layer.compute_output_shape(shape)
        build_layer(self.logits, shape)

    def call(self, inputs):
        """Per-pixel logits from the features and a latent sample tiled over the image.

        Parameters
        ----------
        inputs : tuple of tensor
            ``(features (batch, height, width, c), z (batch, latent_dim))``.

        Returns
        -------
        tensor
            Logits, shape ``(batch, height, width, n_outputs)``.
        """
        feats, z = inputs
        z_map = ops.zeros_like(feats[..., :1]) + ops.cast(z, feats.dtype)[:, None, None, :]
        x = ops.concatenate([feats, z_map], axis=-1)
        for layer in self.hidden:
            x = layer(x)
        return self.logits(x)

    def compute_output_shape(self, input_shape):
        """The feature shape with ``n_outputs`` channels."""
        return (*tuple(input_shape[0])[:-1], self.n_outputs)

    def get_config(self):
        config = super().get_config()
        config.update(n_outputs=self.n_outputs, n_layers=self.n_layers, filters=self.filters,
                      activation=self.activation, seed=self.seed)
        return config


@keras.saving.register_keras_serializable(package="astrogen")
class ProbUNet(keras.Model):
    """Probabilistic U-Net segmenter.

    Parameters
    ----------
    n_bands : int
        Number of input bands (>= 1).
    depth, base_filters : int
        U-Net depth (2x down-samplings, >= 1) and full-resolution channels (>= 1); the prior
        and posterior encoders use the same architecture as the U-Net encoder.
    latent_dim : int
        Dimension of ``z`` (>= 1); Kohl+18 use 6.
    target : {"classes", "fractions"}
        ``"classes"``: ``n_classes`` per-pixel classes (background / object / overlap);
        ``"fractions"``: ``max_objects + 1`` per-object light fractions, channel 0 background.
    n_classes : int
        Number of classes for ``target="classes"`` (>= 2).
    max_objects : int
        Number of object slots for ``target="fractions"`` (>= 1 then).
    fcomb_layers : int
        Number of 1x1 convolutions of the fcomb head (>= 1, the last gives the logits).
    beta : float
        Weight of the KL term (>= 0).
    input_transform, input_scale
        As in :class:`astrogen.models.unet.UNet`.
    activation : str
        Keras activation of the hidden layers.
    seed : int, optional
        Seed of the initializers and of the training-time posterior draws.

    Notes
    -----
    Inputs are images ``(batch, height, width, n_bands)``; targets ``y`` for ``fit`` are
    ``(batch, height, width, n_outputs)`` one-hot classes or fractions. Compile with an
    optimizer only (``model.compile(optimizer="adam")``): the loss is built in.
    """

    def __init__(self, n_bands: int = 1, depth: int = 3, base_filters: int = 16,
                 latent_dim: int = 6, target: str = "classes", n_classes: int = 3,
                 max_objects: int = 0, fcomb_layers: int = 3, beta: float = 1.0,
                 input_transform: str = "asinh", input_scale: float = 1.0,
                 activation: str = "relu", seed: int | None = None, temperature: float = 1.0,
                 **kwargs):
        super().__init__(**kwargs)
        self.n_bands = check_int(n_bands, "n_bands", 1)
        self.temperature = check_float(temperature, "temperature")
        self.depth = check_int(depth, "depth", 1)
        self.base_filters = check_int(base_filters, "base_filters", 1)
        self.latent_dim = check_int(latent_dim, "latent_dim", 1)
        self.target = check_choice(target, "target", ("classes", "fractions"))
        self.n_classes = check_int(n_classes, "n_classes", 2)
        self.max_objects = check_int(max_objects, "max_objects",
                                     1 if self.target == "fractions" else 0)
        self.fcomb_layers = check_int(fcomb_layers, "fcomb_layers", 1)
        self.beta = check_float(beta, "beta", allow_zero=True)
        self.input_transform = check_choice(input_transform, "input_transform", INPUT_TRANSFORMS)
        self.input_scale = check_float(input_scale, "input_scale")
        if not isinstance(activation, str):
            raise ConfigError("must be the name of a Keras activation.", key="activation",
                              received={"activation": activation})
        self.activation = activation
        self.seed = check_seed(seed)
        self.n_outputs = self.n_classes if self.target == "classes" else self.max_objects + 1

        self.backbone = UNetBackbone(self.depth, self.base_filters, activation,
                                     _sub(self.seed, "backbone"), name="backbone")
        self.prior_net = GaussianEncoder(self.latent_dim, self.depth, self.base_filters,
                                         activation, _sub(self.seed, "prior"), name="prior_net")
        self.posterior_net = GaussianEncoder(self.latent_dim, self.depth, self.base_filters,
                                             activation, _sub(self.seed, "posterior"),
                                             name="posterior_net")
        self.fcomb = FComb(self.n_outputs, self.fcomb_layers, self.base_filters, activation,
                           _sub(self.seed, "fcomb"), name="fcomb")
        self.seed_generator = keras.random.SeedGenerator(
            None if self.seed is None else derive_seed(self.seed, "posterior_draws") % (2**31 - 1),
            name="posterior_draws")
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.rec_tracker = keras.metrics.Mean(name="reconstruction")
        self.kl_tracker = keras.metrics.Mean(name="kl")

    # ------------------------------------------------------------ Keras plumbing

    def build(self, input_shape):
        """Build the backbone, prior and posterior nets and the combination head.

        Parameters
        ----------
        input_shape : tuple
            ``(batch, height, width, n_bands)``; height and width must divide by ``2 ** depth``.

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
        check_spatial(input_shape, self.depth)
        shape = (*input_shape[:-1], self.n_bands)
        build_layer(self.backbone, shape)
        build_layer(self.prior_net, shape)
        build_layer(self.posterior_net, (*shape[:-1], self.n_bands + self.n_outputs))
        feats = self.backbone.compute_output_shape(shape)
        build_layer(self.fcomb, (feats, (shape[0], self.latent_dim)))

    @property
    def metrics(self):
        return [self.loss_tracker, self.rec_tracker, self.kl_tracker]

    def get_config(self):
        config = super().get_config()
        config.update(n_bands=self.n_bands, depth=self.depth, base_filters=self.base_filters,
                      latent_dim=self.latent_dim, target=self.target, n_classes=self.n_classes,
                      max_objects=self.max_objects, fcomb_layers=self.fcomb_layers,
                      beta=self.beta, input_transform=self.input_transform,
                      input_scale=self.input_scale, activation=self.activation, seed=self.seed,
                      temperature=self.temperature)
        return config

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    # ------------------------------------------------------------ forward passes

    def _ensure_built(self, x) -> None:
        """Build the model from an input batch if needed (``fit`` and ``sample`` may come first)."""
        if not self.built:
            self.build(tuple(x.shape))

    def transform_input(self, x):
        """The network input: ``x`` cast and passed through the input transform."""
        return apply_input_transform(ops.cast(x, self.compute_dtype), self.input_transform,
                                     self.input_scale)

    def _check_target(self, y):
        if y.shape[-1] is not None and int(y.shape[-1]) != self.n_outputs:
            raise ConfigError(f"the target must have {self.n_outputs} channels "
                              f"(target={self.target!r}).", key="y",
                              received={"y_shape": tuple(y.shape)})

    def prior(self, x):
        """``(mu, log_sigma)`` of the prior p(z | x), each ``(batch, latent_dim)``."""
        x = ops.convert_to_tensor(x)
        self._ensure_built(x)
        return self.prior_net(self.transform_input(x))

    def posterior(self, x, y):
        """``(mu, log_sigma)`` of the posterior q(z | x, y), each ``(batch, latent_dim)``."""
        x = ops.convert_to_tensor(x)
        self._ensure_built(x)
        y = ops.cast(y, self.compute_dtype)
        self._check_target(y)
        return self.posterior_net(ops.concatenate([self.transform_input(x), y], axis=-1))

    def call(self, inputs, training=None):
        """Probabilities ``(batch, h, w, n_outputs)`` with ``z`` at the prior mean."""
        xt = self.transform_input(inputs)
        feats = self.backbone(xt, training=training)
        mu, _ = self.prior_net(xt, training=training)
        return ops.softmax(self.fcomb([feats, mu], training=training), axis=-1)

    def compute_output_shape(self, input_shape):
        """``(batch, height, width, n_outputs)``."""
        return (*tuple(input_shape)[:-1], self.n_outputs)

    def kl_divergence(self, x, y):
        """KL(q(z|x,y) || p(z|x)) per example, shape ``(batch,)``, in nats."""
        mu_q, ls_q = self.posterior(x, y)
        mu_p, ls_p = self.prior(x)
        return kl_diag_gaussians(mu_q, ls_q, mu_p, ls_p)

    def compute_losses(self, x, y, sample_weight=None, training=False, seed=None, eps=None,
                       order_weight: float = 0.0, permutations=None):
        """The loss terms for one batch, as a dict of scalar tensors (nats).

        ``"reconstruction"``: cross-entropy summed over pixels (weighted by the per-pixel
        ``sample_weight`` ``(batch, h, w)`` if given), mean over the batch; with
        ``permutations`` (target ``"fractions"``, :func:`astrogen.models.losses.
        slot_permutations`) the minimum over the slot permutations of each example;
        ``"reconstruction_ordered"``: the same in the target's slot order; ``"kl"``: mean
        KL(q || p); ``"loss"``: reconstruction + order_weight * reconstruction_ordered +
        beta * kl (the negative ELBO for ``order_weight = 0``). ``z`` is ``mu_q +
        sigma_q * eps`` with the standard normal draws ``eps`` (batch, latent_dim) if given,
        else drawn with the model's seed generator, or with ``seed`` if given; ``seed=-1``
        uses the posterior mean instead of a draw.
        """
        from astrogen.models.losses import permutation_invariant_ce

        x = ops.convert_to_tensor(x)
        self._ensure_built(x)
        y = ops.cast(y, self.compute_dtype)
        self._check_target(y)
        xt = self.transform_input(x)
        feats = self.backbone(xt, training=training)
        mu_p, ls_p = self.prior_net(xt, training=training)
        mu_q, ls_q = self.posterior_net(ops.concatenate([xt, y], axis=-1), training=training)
        if eps is None and seed is not None and seed == -1:
            z = mu_q
        else:
            if eps is None:
                eps = keras.random.normal(ops.shape(mu_q), dtype=mu_q.dtype,
                                          seed=self.seed_generator if seed is None
                                          else int(seed))
            z = mu_q + ops.exp(ls_q) * eps
        logp = ops.log_softmax(self.fcomb([feats, z], training=training), axis=-1)
        identity = [list(range(self.n_outputs))]
        rec, _ = permutation_invariant_ce(y, logp, identity if permutations is None
                                          else permutations, sample_weight, reduce="sum")
        ordered, _ = permutation_invariant_ce(y, logp, identity, sample_weight, reduce="sum")
        rec, ordered = ops.mean(rec), ops.mean(ordered)
        kl = ops.mean(kl_diag_gaussians(mu_q, ls_q, mu_p, ls_p))
        return {"loss": rec + order_weight * ordered + self.beta * kl, "reconstruction": rec,
                "reconstruction_ordered": ordered, "kl": kl}

    # ------------------------------------------------------------ training

    def train_step(self, data):
        """One optimisation step on the model's loss (:meth:`compute_losses`), for ``fit``.

        Parameters
        ----------
        data : tuple
            ``(x, y)`` or ``(x, y, sample_weight)``: images ``(batch, height, width, n_bands)``
            and targets (one-hot classes or flux fractions).

        Returns
        -------
        dict
            Running means of the losses.

        Raises
        ------
        astrogen.errors.ModelError
            When Keras does not use the TensorFlow backend.
        astrogen.errors.ConfigError
            When no targets are given.
        """
        if keras.backend.backend() != "tensorflow":
            raise ModelError("ProbUNet.fit needs the TensorFlow backend of Keras.",
                             key="KERAS_BACKEND", received={"backend": keras.backend.backend()})
        import tensorflow as tf

        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        if y is None:
            raise ConfigError("ProbUNet.fit needs targets y (one-hot classes or fractions).",
                              key="y")
        with tf.GradientTape() as tape:
            losses = self.compute_losses(x, y, sample_weight, training=True)
        grads = tape.gradient(losses["loss"], self.trainable_variables)
        self.optimizer.apply(grads, self.trainable_variables)
        return self._update_trackers(losses)

    def test_step(self, data):
        """Losses on one validation batch (fixed seed), for ``evaluate`` and ``fit``'s validation.

        Parameters
        ----------
        data : tuple
            ``(x, y)`` or ``(x, y, sample_weight)``.

        Returns
        -------
        dict
            Running means of the losses.
        """
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        return self._update_trackers(self.compute_losses(x, y, sample_weight, seed=-1))

    def _update_trackers(self, losses):
        self.loss_tracker.update_state(losses["loss"])
        self.rec_tracker.update_state(losses["reconstruction"])
        self.kl_tracker.update_state(losses["kl"])
        return {m.name: m.result() for m in self.metrics}

    # ------------------------------------------------------------ prediction

    def sample(self, x, n_samples: int = 8, seed: int = 0, batch_size: int | None = None,
               temperature: float | None = None):
        """``n_samples`` segmentations per image with ``z ~ p(z | x)``.

        Parameters
        ----------
        x : array_like, shape (batch, h, w, n_bands)
        n_samples : int
            Number of draws (>= 1).
        seed : int
            Seed of the draws (>= 0): the same seed gives identical samples.
        batch_size : int, optional
            Images per forward pass (all at once if None).
        temperature : float, optional
            Logits are divided by it before the softmax; default the model's
            ``temperature`` (fitted after training, :mod:`astrogen.deblend.calibration`;
            1 = the raw network).

        Returns
        -------
        numpy.ndarray, shape (n_samples, batch, h, w, n_outputs)
            Probability maps.
        """
        n_samples = check_int(n_samples, "n_samples", 1)
        seed = check_int(seed, "seed", 0)
        temperature = self.temperature if temperature is None else check_float(
            temperature, "temperature")
        x = np.asarray(x, dtype=np.float32)
        if x.ndim != 4:
            raise ConfigError("must have shape (batch, height, width, n_bands).", key="x",
                              received={"shape": x.shape})
        self._ensure_built(x)
        n = len(x)
        bs = n if batch_size is None else check_int(batch_size, "batch_size", 1)
        # One draw of eps per (sample, image), independent of batch_size.
        eps = keras.random.normal((n_samples, max(n, 1), self.latent_dim),
                                  seed=derive_seed(seed, "prob_unet.sample") % (2**31 - 1))
        eps = ops.convert_to_numpy(eps)
        out = np.empty((n_samples, n, *x.shape[1:3], self.n_outputs), dtype=np.float32)
        for start in range(0, n, bs):
            xb = x[start:start + bs]
            xt = self.transform_input(xb)
            feats = self.backbone(xt)
            mu, ls = self.prior_net(xt)
            for s in range(n_samples):
                z = mu + ops.exp(ls) * eps[s, start:start + len(xb)]
                out[s, start:start + len(xb)] = ops.convert_to_numpy(
                    ops.softmax(self.fcomb([feats, z]) / temperature, axis=-1))
        return out

    def predict_with_uncertainty(self, x, n_samples: int = 16, seed: int = 0,
                                 batch_size: int | None = None) -> dict[str, np.ndarray]:
        """Mean probabilities and per-pixel uncertainty from :meth:`sample`.

        Returns :func:`predictive_summary` of the samples (``"mean"``, ``"entropy"``,
        ``"expected_entropy"``, ``"mutual_information"``, ``"std"``, ``"std_max"``).
        """
        return predictive_summary(self.sample(x, n_samples, seed, batch_size))

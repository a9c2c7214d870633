"""Conditional FlowVAE: realistic galaxy light profiles from catalog properties.

Implements the model of Lanusse, Mandelbaum, Ravanbakhsh et al. (2021), "Deep generative
models for galaxy image simulations", MNRAS 504, 5543 (arXiv:2008.03833), in Keras 3:

1. a variational auto-encoder whose decoder produces the *unconvolved* light profile of a
   galaxy; it is trained on observed stamps with the ELBO, where the likelihood convolves the
   decoder output with each stamp's PSF and compares it with the data under that stamp's
   noise (white ``sigma`` or a noise power spectrum;
   :func:`astrogen.models.psf_likelihood.psf_log_likelihood`), with an optional ``beta``
   weight of the KL term, a linear warm-up of ``beta`` and "free bits" (Kingma et al. 2016);
2. a conditional normalizing flow ``p(z | c)`` on the latent space (``flow_type``: ``maf``,
   :class:`~astrogen.models.flowvae_flow.ConditionalMAF`, or ``coupling``,
   :class:`~astrogen.models.flowvae_flow.ConditionalRealNVP`, which samples in one network
   pass per bijector instead of ``latent_dim``), trained afterwards on the encoder
   means of the training stamps, conditioned on catalog properties ``c`` (by default the
   COSMOS ``mag_auto``, ``flux_radius``, ``zphot`` of Lanusse et al. 2021), standardised with
   stored means and standard deviations.

Generation: ``c`` -> ``z = flow.forward(u, c)`` with ``u ~ N(0, I)`` drawn per row from that
row's own seed (:func:`astrogen.seeds.normals`) -> ``decoder(z)``: a noise-free, PSF-free
light profile in the flux unit and pixel scale of the training stamps.

Decoder output: ``softplus`` by default. A galaxy's light profile is non-negative, and so is
its convolution with a PSF; a linear output lets the decoder fit noise and PSF deconvolution
ringing with negative pixels, which would then show up, unconvolved, in generated stamps.
``output_activation="linear"`` is available for data with a subtracted, biased background.

Files: :meth:`FlowVAE.save` writes ``name.keras`` (configuration and all weights, condition
normalisation included) and the sidecar ``name.json`` (format, astrogen/Keras/TF versions,
configuration, condition names and normalisation); :func:`load_flowvae` reads and checks both.

Training: :func:`train_vae_step` and :func:`train_flow_step` do one optimiser step each (a
compiled ``tf.function`` per model and optimiser); the loop, data pipeline and schedules of
learning rates live in the caller. With ``strategy=`` (a ``tf.distribute`` strategy in whose
scope model and optimizer were created) the step is replicated: equal shards of the global
batch, each replica's mean loss divided by the number of replicas, gradients all-reduced;
the result equals the single-device step to floating-point rounding.
"""
from __future__ import annotations

import json
import math
import weakref
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from astrogen.constants import COSMOS_PIXEL_SCALE
from astrogen.errors import CatalogError, ConfigError, ModelError
from astrogen.models.flowvae_flow import FLOW_TYPES, build_flow
from astrogen.models.flowvae_layers import (build_decoder, build_encoder,
                                            check_architecture)
from astrogen.models.psf_likelihood import psf_log_likelihood

__all__ = [
    "FlowVAE",
    "load_flowvae",
    "train_vae_step",
    "train_flow_step",
    "DEFAULT_CONDITIONS",
    "SIDECAR_FORMAT",
    "SIDECAR_FORMAT_VERSION",
]

#: Default conditioning columns: COSMOS magnitude (F814W, AB), half-light radius proxy
#: (SExtractor FLUX_RADIUS, pixels of 0.03") and photometric redshift, as in Lanusse+21.
DEFAULT_CONDITIONS = ("mag_auto", "flux_radius", "zphot")
SIDECAR_FORMAT = "astrogen.flowvae"
SIDECAR_FORMAT_VERSION = 1

# Compiled functions per model, kept outside the Keras object (no tracking, no saving).
# The functions refer to their model through a weak reference, so the model can be freed.
_COMPILED: "weakref.WeakKeyDictionary[Any, dict]" = weakref.WeakKeyDictionary()


#: Largest micro-batch whose latent flow is sampled through XLA (FlowVAE._flow_forward_fn)
XLA_FLOW_MAX_BATCH = 8


def _compiled(model) -> dict:
    return _COMPILED.setdefault(model, {})


@keras.saving.register_keras_serializable(package="astrogen")
class FlowVAE(keras.Model):
    """Conditional FlowVAE: VAE (encoder, decoder) + conditional flow on its latent space.

    Parameters
    ----------
    stamp_size : int
        Side ``N`` of the square stamps in pixels; a multiple of ``2 ** len(channels)``
        (16 with the default 4 levels).
    latent_dim : int
        Dimension of ``z``.
    channels : list of int
        Filters of each resolution level of the encoder (the decoder mirrors it).
    blocks_per_level : int
        Residual blocks per level.
    activation : str
        Hidden activation of encoder and decoder.
    output_activation : {"softplus", "linear"}
        Decoder output activation (see module docstring).
    flux_scale : float
        Typical pixel value of the training stamps (flux per pixel): encoder inputs are
        divided by it and decoder outputs multiplied by it.
    min_posterior_std : float
        Floor of the posterior standard deviation.
    condition_names : list of str
        Catalog columns the flow is conditioned on, in order.
    flow_num_bijectors, flow_hidden_units, flow_activation, flow_permutation, flow_seed
        Flow architecture (see :class:`~astrogen.models.flowvae_flow.ConditionalFlow`).
    beta : float
        Weight of the KL term of the ELBO (1 is the true ELBO).
    free_bits : float
        Minimum KL, in nats per latent dimension and averaged over the batch, below which a
        dimension is not penalised (0: off).
    kl_warmup_steps : int
        Steps of linear warm-up of ``beta`` from 0 (0: off); see :meth:`kl_beta`.
    pad_psf : bool
        Zero-pad the PSF convolution of the likelihood (linear, not circular, convolution).
    pixel_scale : float
        Pixel scale of the training stamps in arcsec/pixel (metadata for generation).
    flux_unit : str
        Flux unit of the training stamps' pixels (metadata for generation).
    upsampling : {"nearest", "bilinear"}
        Decoder upsampling (:data:`astrogen.models.flowvae_layers.UPSAMPLINGS`); files
        without the key (format 1 models) are ``nearest``.
    padding : {"zeros", "reflect"}
        Border handling of every 3x3 convolution of encoder and decoder
        (:data:`astrogen.models.flowvae_layers.PADDINGS`); files without the key: ``zeros``.
    output_bias : float
        Initial bias of the decoder's last convolution, before the ``softplus`` (see
        :func:`astrogen.models.flowvae_layers.build_decoder`): the initial empty-sky floor
        is ``flux_scale * softplus(output_bias)`` per pixel. Only changes initialisation.
    flow_type : {"maf", "coupling"}
        Latent flow (:data:`astrogen.models.flowvae_flow.FLOW_TYPES`): masked autoregressive
        (sampling takes ``latent_dim`` sequential passes per bijector; files without the key)
        or affine coupling (RealNVP: one pass per bijector).
    condition_range : list of two lists, optional
        ``[minima, maxima]`` of each condition over the training catalog, in physical units
        (set by :meth:`adapt_conditions`); generation stages use it to refuse or clip rows
        outside the range the flow was trained on.
    """

    def __init__(self, stamp_size=64, latent_dim=32, channels=(32, 64, 128, 256),
                 blocks_per_level=1, activation="elu", output_activation="softplus",
                 flux_scale=1.0, min_posterior_std=1e-4, condition_names=DEFAULT_CONDITIONS,
                 flow_num_bijectors=4, flow_hidden_units=(128, 128), flow_activation="elu",
                 flow_permutation="random", flow_seed=0, beta=1.0, free_bits=0.0,
                 kl_warmup_steps=0, pad_psf=True, pixel_scale=COSMOS_PIXEL_SCALE, flux_unit="count/s",
                 condition_range=None, upsampling="nearest", padding="zeros",
                 output_bias=-2.0, flow_type="maf", **kwargs):
        super().__init__(**kwargs)
        check_architecture(stamp_size, latent_dim, channels, blocks_per_level,
                           output_activation, flux_scale, upsampling, padding, output_bias)
        if isinstance(condition_names, str):
            condition_names = [condition_names]
        names = [str(c) for c in condition_names]
        if len(set(names)) != len(names):
            raise ConfigError("must be distinct column names.", key="condition_names",
                              received={"condition_names": names})
        for key, value in (("beta", beta), ("free_bits", free_bits),
                           ("kl_warmup_steps", kl_warmup_steps)):
            if not (value >= 0):
                raise ConfigError("must be >= 0.", key=key, received={key: value})
        if flow_type not in FLOW_TYPES:
            raise ConfigError(f"must be one of {tuple(FLOW_TYPES)}.", key="flow_type",
                              received={"flow_type": flow_type})
        if not (pixel_scale > 0):
            raise ConfigError("must be > 0 arcsec/pixel.", key="pixel_scale",
                              received={"pixel_scale": pixel_scale})
        self.stamp_size = int(stamp_size)
        self.latent_dim = int(latent_dim)
        self.channels = [int(c) for c in channels]
        self.blocks_per_level = int(blocks_per_level)
        self.activation = activation
        self.output_activation = output_activation
        self.flux_scale = float(flux_scale)
        self.min_posterior_std = float(min_posterior_std)
        self.condition_names = names
        self.flow_num_bijectors = int(flow_num_bijectors)
        self.flow_hidden_units = [int(h) for h in flow_hidden_units]
        self.flow_activation = flow_activation
        self.flow_permutation = flow_permutation
        self.flow_seed = int(flow_seed)
        self.beta = float(beta)
        self.free_bits = float(free_bits)
        self.kl_warmup_steps = int(kl_warmup_steps)
        self.pad_psf = bool(pad_psf)
        self.pixel_scale = float(pixel_scale)
        self.flux_unit = str(flux_unit)
        self.condition_range = self._check_range(condition_range)
        self.upsampling = str(upsampling)
        self.padding = str(padding)
        self.output_bias = float(output_bias)
        self.flow_type = str(flow_type)

        self.encoder = build_encoder(self.stamp_size, self.latent_dim, self.channels,
                                     self.blocks_per_level, activation, self.flux_scale,
                                     self.min_posterior_std, padding=self.padding)
        self.decoder = build_decoder(self.stamp_size, self.latent_dim, self.channels,
                                     self.blocks_per_level, activation, output_activation,
                                     self.flux_scale, upsampling=self.upsampling,
                                     padding=self.padding, output_bias=self.output_bias)
        self.flow = build_flow(self.flow_type, self.latent_dim, len(self.condition_names),
                               num_bijectors=self.flow_num_bijectors,
                               hidden_units=self.flow_hidden_units,
                               activation=flow_activation, permutation=flow_permutation,
                               permutation_seed=self.flow_seed, name="flow")
        self.built = True  # every weight exists now; nothing to build at load time

    # ------------------------------------------------------------------ config
    def get_config(self) -> dict:
        return {
            "name": self.name,
            "trainable": self.trainable,
            "stamp_size": self.stamp_size,
            "latent_dim": self.latent_dim,
            "channels": list(self.channels),
            "blocks_per_level": self.blocks_per_level,
            "activation": self.activation,
            "output_activation": self.output_activation,
            "flux_scale": self.flux_scale,
            "min_posterior_std": self.min_posterior_std,
            "condition_names": list(self.condition_names),
            "flow_num_bijectors": self.flow_num_bijectors,
            "flow_hidden_units": list(self.flow_hidden_units),
            "flow_activation": self.flow_activation,
            "flow_permutation": self.flow_permutation,
            "flow_seed": self.flow_seed,
            "beta": self.beta,
            "free_bits": self.free_bits,
            "kl_warmup_steps": self.kl_warmup_steps,
            "pad_psf": self.pad_psf,
            "pixel_scale": self.pixel_scale,
            "flux_unit": self.flux_unit,
            "condition_range": self.condition_range,
            "upsampling": self.upsampling,
            "padding": self.padding,
            "output_bias": self.output_bias,
            "flow_type": self.flow_type,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    # ------------------------------------------------------------------ variables
    @property
    def vae_variables(self) -> list:
        """Trainable variables of the encoder and decoder."""
        return list(self.encoder.trainable_variables) + list(self.decoder.trainable_variables)

    @property
    def flow_variables(self) -> list:
        """Trainable variables of the flow."""
        return list(self.flow.trainable_variables)

    # ------------------------------------------------------------------ conditions
    def condition_array(self, conditions) -> np.ndarray:
        """Conditions as a float32 array ``(B, C)`` in physical units.

        ``conditions`` is an array ``(B, C)`` (columns in the order of
        ``condition_names``), or a table / mapping with those columns (an
        :class:`astropy.table.Table` with units is read in its stored units).
        """
        c = len(self.condition_names)
        if hasattr(conditions, "keys") or hasattr(conditions, "colnames"):
            cols = list(conditions.colnames) if hasattr(conditions, "colnames") \
                else list(conditions.keys())
            missing = [n for n in self.condition_names if n not in cols]
            if missing:
                raise CatalogError("missing conditioning column(s) of the FlowVAE.",
                                   key=missing[0],
                                   received={"missing": missing, "columns": cols})
            n_rows = len(conditions[cols[0]]) if cols else 0
            arr = np.zeros((n_rows, c))
            for j, name in enumerate(self.condition_names):
                values = conditions[name]
                values = getattr(values, "value", values)  # Quantity: its stored unit
                arr[:, j] = np.ma.filled(np.ma.asarray(values, dtype=np.float64), np.nan)
        else:
            arr = np.asarray(conditions, dtype=np.float64)
            if arr.ndim == 1 and c == 1:
                arr = arr[:, None]
            if arr.ndim != 2 or arr.shape[1] != c:
                raise ConfigError(f"conditions must have shape (B, {c}) in the order "
                                  f"{self.condition_names}.", key="cond",
                                  received={"shape": arr.shape})
        bad = ~np.all(np.isfinite(arr), axis=1)
        if bad.any():
            raise CatalogError("conditioning values must be finite.",
                               key=",".join(self.condition_names),
                               received={"bad_rows": np.flatnonzero(bad)[:5].tolist()})
        return arr.astype(np.float32)

    def _check_range(self, condition_range):
        if condition_range is None:
            return None
        lo, hi = (np.asarray(v, dtype=np.float64) for v in condition_range)
        c = len(self.condition_names)
        if lo.shape != (c,) or hi.shape != (c,) or not np.all(lo <= hi):
            raise ConfigError(f"must be [minima, maxima], two lists of {c} values with "
                              "minima <= maxima.", key="condition_range",
                              received={"condition_range": condition_range})
        return [[float(v) for v in lo], [float(v) for v in hi]]

    def adapt_conditions(self, conditions) -> None:
        """Set the condition normalisation (mean, std) and the training range (min, max)
        from the training catalog."""
        arr = self.condition_array(conditions)
        self.flow.adapt(arr)
        if len(arr):
            self.condition_range = [arr.min(axis=0).astype(float).tolist(),
                                    arr.max(axis=0).astype(float).tolist()]

    @property
    def condition_normalization(self) -> dict:
        """``{"names": [...], "mean": [...], "std": [...]}`` of the conditions."""
        return {"names": list(self.condition_names),
                "mean": [float(v) for v in np.asarray(self.flow.condition_mean)],
                "std": [float(v) for v in np.asarray(self.flow.condition_std)]}

    # ------------------------------------------------------------------ VAE
    def _check_images(self, images, name="images") -> tf.Tensor:
        x = tf.cast(tf.convert_to_tensor(images), tf.float32)
        n = self.stamp_size
        if x.shape.rank != 3 or tuple(x.shape[1:]) != (n, n):
            raise ConfigError(f"must have shape (B, {n}, {n}).", key=name,
                              received={"shape": tuple(x.shape)})
        return x

    def encode(self, images, return_std: bool = False, training: bool = False):
        """Posterior ``q(z | x)`` of stamps ``(B, N, N)``: its mean ``(B, L)``, or
        ``(mean, std)`` if ``return_std``."""
        mean, std = self.encoder(self._check_images(images), training=training)
        return (mean, std) if return_std else mean

    def decode(self, z, training: bool = False) -> tf.Tensor:
        """Unconvolved light profiles ``(B, N, N)`` (flux per pixel) from latents ``(B, L)``."""
        z = tf.cast(tf.convert_to_tensor(z), tf.float32)
        return self.decoder(z, training=training)

    def call(self, images, training=False):
        """Reconstruction ``decode(encode(images))`` (posterior mean), ``(B, N, N)``."""
        return self.decode(self.encode(images, training=training), training=training)

    def kl_beta(self, step) -> float:
        """``beta`` at a training step: ``beta * min(1, step / kl_warmup_steps)``."""
        if self.kl_warmup_steps <= 0:
            return self.beta
        return self.beta * min(1.0, max(0.0, float(step)) / self.kl_warmup_steps)

    def vae_losses(self, images, psf, noise_sigma=None, noise_power=None, seed=(0, 0),
                   beta=None, free_bits=None, training=False) -> dict:
        """Negative ELBO of a batch (single reparameterised sample of ``z``).

        Parameters
        ----------
        images : (B, N, N)
            Observed stamps (PSF-convolved, noisy), flux per pixel.
        psf : (B, N, N) real or complex ``psf_fourier`` transform
            PSF of each stamp, centred at ``(N//2, N//2)``, sum 1.
        noise_sigma : (B,) or float, optional
            White-noise standard deviation per pixel (flux per pixel).
        noise_power : (B, N, N//2+1), optional
            Noise power spectrum (see :mod:`astrogen.models.psf_likelihood`).
        seed : pair of int
            Seed of ``tf.random.stateless_normal`` for the reparameterisation noise.
        beta, free_bits : float, optional
            Override the model's settings.

        Returns
        -------
        dict of scalar tensors
            ``loss`` (to minimise: ``-E[log p] + beta * KL`` with free bits),
            ``log_likelihood`` and ``kl`` (batch means, nats per stamp), ``elbo``
            (``log_likelihood - kl``).
        """
        beta = self.beta if beta is None else beta
        free_bits = self.free_bits if free_bits is None else free_bits
        log_lik, kl_dim = self._vae_terms(images, psf, noise_sigma, noise_power, seed,
                                          training)
        kl = tf.reduce_sum(kl_dim, axis=-1)
        free_bits = tf.cast(free_bits, kl.dtype)
        kl_penalty = tf.reduce_sum(tf.maximum(tf.reduce_mean(kl_dim, axis=0), free_bits))
        mean_ll = tf.reduce_mean(log_lik)
        loss = -mean_ll + tf.cast(beta, kl.dtype) * kl_penalty
        mean_kl = tf.reduce_mean(kl)
        return {"loss": loss, "log_likelihood": mean_ll, "kl": mean_kl,
                "elbo": mean_ll - mean_kl}

    def _vae_terms(self, images, psf, noise_sigma, noise_power, seed, training,
                   noise_rows=None):
        """Per-stamp log-likelihood ``(B,)`` and per-dimension KL ``(B, L)`` (nats) of one
        reparameterised sample. ``noise_rows = (start, global_batch)``: draw the noise of a
        batch of ``global_batch`` rows with ``seed`` and use rows ``start:start + B`` (one
        replica's share of a global batch, see :func:`train_vae_step`)."""
        x = self._check_images(images)
        mean, std = self.encoder(x, training=training)
        if noise_rows is None:
            eps = tf.random.stateless_normal(tf.shape(mean), seed=seed, dtype=mean.dtype)
        else:
            start, total = noise_rows
            eps = tf.random.stateless_normal([total, self.latent_dim], seed=seed,
                                             dtype=mean.dtype)
            eps = eps[start:start + tf.shape(mean)[0]]
        z = mean + std * eps
        model_images = self.decoder(z, training=training)
        log_lik = psf_log_likelihood(x, model_images, psf, sigma=noise_sigma,
                                     noise_power=noise_power, pad=self.pad_psf)
        # KL(N(mean, std) || N(0, 1)) per dimension, nats
        kl_dim = 0.5 * (tf.square(mean) + tf.square(std) - 1.0) - tf.math.log(std)
        return log_lik, kl_dim

    # ------------------------------------------------------------------ flow
    def log_prob(self, z, conditions) -> tf.Tensor:
        """Flow density ``log p(z | c)`` (nats), shape ``(B,)``."""
        return self.flow.log_prob(z, self.condition_array(conditions) if
                                  self.condition_names else None)

    def flow_loss(self, z, conditions) -> tf.Tensor:
        """Negative mean ``log p(z | c)`` of a batch (conditions already an array)."""
        return -tf.reduce_mean(self.flow.log_prob(z, conditions))

    def _row_noise(self, n_rows, seed_per_row, temperature) -> np.ndarray:
        from astrogen import seeds as _seeds

        s = np.asarray(seed_per_row)
        if s.ndim != 1 or s.shape[0] != n_rows:
            raise ConfigError("needs one seed per row (e.g. astrogen.seeds.row_seeds).",
                              key="seed_per_row",
                              received={"shape": s.shape, "n_rows": n_rows})
        return (float(temperature) * _seeds.normals(s.astype(np.uint64),
                                                    self.latent_dim)).astype(np.float32)

    def sample_latent(self, conditions, seed_per_row, temperature: float = 1.0) -> np.ndarray:
        """Latents ``z ~ p(z | c)``, ``(B, L)``; row ``i`` uses only ``seed_per_row[i]``."""
        c = self.condition_array(conditions)
        u = self._row_noise(c.shape[0], seed_per_row, temperature)
        return np.asarray(self._flow_forward_fn()(tf.constant(u), tf.constant(c)))

    def _flow_forward_fn(self):
        """``z = flow.forward(u, c)`` as a compiled ``tf.function``: with XLA
        (``jit_compile=True``, one compile per batch shape) for batches of at most
        :data:`XLA_FLOW_MAX_BATCH` rows, without it above. Sampling a MAF is one MADE pass
        per latent dimension and bijector (128 small sequential passes here); at batch 1
        XLA fuses them, 6.6x faster on the CPU, but at batch 32 and 256 it was 0.84x and
        0.46x the plain graph (``benchmarks/flowvae_flow_speed.py``,
        ``benchmarks/results/flowvae_flow/xla/``). Equal to float rounding (max |dz| 5e-7
        at batch 1). The decoder stays outside XLA: its convolutions are slower there than
        with oneDNN."""
        fns = _compiled(self)
        if "flow_forward" not in fns:
            conditional = bool(self.condition_names)
            model_ref = weakref.ref(self)

            def forward(u, c):
                return model_ref().flow.forward(u, c if conditional else None)

            compiled = tf.function(forward, jit_compile=True)
            graph = tf.function(forward)
            shapes: set = set()

            def flow_forward(u, c):
                if int(u.shape[0]) > XLA_FLOW_MAX_BATCH:
                    return graph(u, c)
                key = (tuple(u.shape), tuple(c.shape))
                if key in shapes:
                    return compiled(u, c)
                from astrogen.tf_quiet import quiet_stderr

                with quiet_stderr():  # XLA logs its first compile on fd 2 ("Compiled
                    out = compiled(u, c)  # cluster using XLA!") whatever the log level
                shapes.add(key)
                return out

            fns["flow_forward"] = flow_forward
        return fns["flow_forward"]

    def _generate_fn(self):
        fns = _compiled(self)
        if "generate" not in fns:
            model_ref = weakref.ref(self)
            flow_forward = self._flow_forward_fn()

            @tf.function
            def decode(z):
                return model_ref().decoder(z, training=False)

            def generate(u, c):
                return decode(flow_forward(u, c))

            fns["generate"] = generate
        return fns["generate"]

    def generate(self, conditions, seed_per_row, temperature: float = 1.0,
                 batch_size: int = 16) -> np.ndarray:
        """Generate unconvolved, noise-free galaxy images from catalog properties.

        Parameters
        ----------
        conditions : array (B, C) or table with ``condition_names`` columns
            Catalog properties in physical units.
        seed_per_row : array of uint64, shape (B,)
            One seed per row (``astrogen.seeds.row_seeds(stage_seed, row_id)``): the base
            noise of row ``i`` is ``astrogen.seeds.normals(seed_per_row[i:i+1], L)``.
        temperature : float
            Scale of the base noise (1: sample the learned distribution).
        batch_size : int
            Rows are pushed through the network in micro-batches of exactly this size (the
            last one padded), so a row's image is the same whatever the caller's chunking.

        Returns
        -------
        numpy.ndarray, float32, shape (B, N, N)
            Light profiles in ``flux_unit`` per pixel at ``pixel_scale`` arcsec/pixel.
        """
        c = self.condition_array(conditions)
        u = self._row_noise(c.shape[0], seed_per_row, temperature)
        return self.generate_from_noise(u, c, batch_size=batch_size)

    def generate_from_noise(self, noise, conditions, batch_size: int = 16) -> np.ndarray:
        """Decode ``z = flow.forward(noise, c)``: generation with the caller's base noise.

        Parameters
        ----------
        noise : array (B, latent_dim)
            Standard-normal base noise (already scaled by any temperature), e.g. drawn from
            GalSim's per-object random number generator by the GalSim plug-in.
        conditions : array (B, C) or table
            As in :meth:`generate`.
        batch_size : int
            Fixed micro-batch size (the last one padded).

        Returns
        -------
        numpy.ndarray, float32, shape (B, N, N)
        """
        c = self.condition_array(conditions)
        u = np.asarray(noise, dtype=np.float32)
        n_rows = c.shape[0]
        if u.shape != (n_rows, self.latent_dim):
            raise ConfigError(f"noise must have shape ({n_rows}, {self.latent_dim}).",
                              key="noise", received={"shape": u.shape})
        n = self.stamp_size
        out = np.empty((n_rows, n, n), dtype=np.float32)
        bs = int(batch_size)
        if bs < 1:
            raise ConfigError("must be >= 1.", key="batch_size", received={"batch_size": bs})
        fn = self._generate_fn()
        fill_c = np.asarray(self.flow.condition_mean, dtype=np.float32)
        for start in range(0, n_rows, bs):
            stop = min(start + bs, n_rows)
            ub = np.zeros((bs, self.latent_dim), dtype=np.float32)
            cb = np.broadcast_to(fill_c, (bs, c.shape[1])).copy()
            ub[: stop - start] = u[start:stop]
            cb[: stop - start] = c[start:stop]
            out[start:stop] = np.asarray(fn(tf.constant(ub), tf.constant(cb)))[: stop - start]
        return out

    # ------------------------------------------------------------------ files
    def sidecar(self) -> dict:
        """Metadata written next to the ``.keras`` file."""
        from astrogen.version import __version__

        return {
            "format": SIDECAR_FORMAT,
            "format_version": SIDECAR_FORMAT_VERSION,
            "model": "FlowVAE",
            "astrogen_version": __version__,
            "keras_version": keras.__version__,
            "tensorflow_version": tf.__version__,
            "reference": "Lanusse et al. 2021, MNRAS 504, 5543 (arXiv:2008.03833)",
            "config": self.get_config(),
            "condition_normalization": self.condition_normalization,
            "stamp_size": self.stamp_size,
            "pixel_scale": self.pixel_scale,
            "flux_unit": self.flux_unit,
            "condition_range": self.condition_range,
            "upsampling": self.upsampling,
            "padding": self.padding,
            "output_bias": self.output_bias,
            "flow_type": self.flow_type,
        }

    def save(self, filepath, overwrite: bool = True, **kwargs) -> None:
        """Write ``filepath`` (must end in ``.keras``) and its sidecar ``.json`` beside it."""
        path = Path(filepath)
        if path.suffix != ".keras":
            raise ConfigError("a FlowVAE file name must end in '.keras'.", key="path",
                              received={"path": str(filepath)})
        super().save(str(path), overwrite=overwrite, **kwargs)
        path.with_suffix(".json").write_text(json.dumps(self.sidecar(), indent=2) + "\n")


def load_flowvae(path) -> FlowVAE:
    """Load a :class:`FlowVAE` saved with :meth:`FlowVAE.save`.

    Parameters
    ----------
    path : str or Path
        The ``.keras`` file, or its ``.json`` sidecar.

    Raises
    ------
    ModelError
        If a file is missing or unreadable, of another format or format version, or if the
        sidecar does not match the weights file.
    """
    p = Path(path)
    if p.suffix == ".json":
        p = p.with_suffix(".keras")
    side = p.with_suffix(".json")
    if not p.is_file():
        raise ModelError("FlowVAE model file not found.", key=str(p))
    if not side.is_file():
        raise ModelError("FlowVAE sidecar not found (written by FlowVAE.save).", key=str(side))
    try:
        meta = json.loads(side.read_text())
    except (OSError, ValueError) as exc:
        raise ModelError(f"unreadable sidecar: {exc}.", key=str(side)) from None
    if meta.get("format") != SIDECAR_FORMAT:
        raise ModelError(f"not a FlowVAE sidecar (expected format '{SIDECAR_FORMAT}').",
                         key=str(side), received={"format": meta.get("format")})
    version = meta.get("format_version")
    if not isinstance(version, int) or version > SIDECAR_FORMAT_VERSION:
        raise ModelError(f"unsupported format_version (this astrogen reads <= "
                         f"{SIDECAR_FORMAT_VERSION}).", key=str(side),
                         received={"format_version": version,
                                   "astrogen_version": meta.get("astrogen_version")})
    try:
        model = keras.saving.load_model(str(p), compile=False)
    except Exception as exc:  # noqa: BLE001 - any failure of Keras is a bad model file
        raise ModelError(f"cannot load the Keras file: {type(exc).__name__}: {exc}",
                         key=str(p)) from exc
    if not isinstance(model, FlowVAE):
        raise ModelError("the Keras file does not hold a FlowVAE.", key=str(p),
                         received={"class": type(model).__name__})
    config = meta.get("config", {})
    for key in ("stamp_size", "latent_dim", "condition_names", "channels"):
        if key in config and config[key] != model.get_config()[key]:
            raise ModelError("sidecar and model file disagree.", key=f"{side.name}:{key}",
                             received={"sidecar": config[key],
                                       "model": model.get_config()[key]})
    norm = meta.get("condition_normalization")
    if norm is not None:
        have = model.condition_normalization
        for key in ("mean", "std"):
            if not np.allclose(norm[key], have[key], rtol=1e-6, atol=0):
                raise ModelError("sidecar and model file disagree on the condition "
                                 "normalisation.", key=f"{side.name}:condition_{key}",
                                 received={"sidecar": norm[key], "model": have[key]})
    return model


# ---------------------------------------------------------------------- training steps
def _ensure_built(optimizer, variables) -> None:
    if not getattr(optimizer, "built", False):
        optimizer.build(variables)


def _as_float(x):
    return None if x is None else tf.cast(tf.convert_to_tensor(x), tf.float32)


def _as_psf(psf):
    psf = tf.convert_to_tensor(psf)
    return psf if psf.dtype.is_complex else tf.cast(psf, tf.float32)


def _replicated(strategy) -> bool:
    """``True`` for a strategy whose steps go through ``strategy.run`` (any strategy but the
    default, no-replication one, which takes the plain single-device path)."""
    if strategy is None:
        return False
    return tf.distribute.has_strategy() or strategy is not tf.distribute.get_strategy()


def _distribute_rows(strategy, tensors: dict, batch: int) -> dict:
    """Split the rows of each tensor of the global batch (``batch`` rows) into equal
    contiguous shards, replica ``r`` taking rows ``r*b:(r+1)*b`` with ``b = batch / R``;
    ``None`` and tensors without a batch axis are given whole to every replica."""
    reps = strategy.num_replicas_in_sync
    if batch % reps:
        raise ConfigError(f"the global batch size must be divisible by the number of "
                          f"replicas ({reps}).", key="batch_size",
                          received={"batch_size": batch, "replicas": reps})
    b = batch // reps
    out = {}
    for name, t in tensors.items():
        if t is None or t.shape.rank == 0 or t.shape[0] != batch:
            out[name] = t
            continue
        out[name] = strategy.experimental_distribute_values_from_function(
            lambda ctx, t=t: t[ctx.replica_id_in_sync_group * b:
                               (ctx.replica_id_in_sync_group + 1) * b])
    return out


def _apply_replica_gradients(optimizer, grads, variables, replicas: int) -> None:
    """Apply the gradients of one replica's share of the scaled loss.

    Keras sums the replicas' gradients before the update, which gives the gradient of the
    global-batch mean. Keras clips each replica's gradient *before* that sum, though, so
    with ``clipnorm``/``global_clipnorm``/``clipvalue`` the sum is formed here first
    (all-reduce), clipped by the optimizer's own rule, and handed over divided by the
    number of replicas (the optimizer's second clipping is then a no-op: the norm is below
    the threshold); the update equals the single-device one to rounding either way.
    """
    if any(getattr(optimizer, k, None) for k in ("clipnorm", "global_clipnorm", "clipvalue")):
        pairs = [(g, v) for g, v in zip(grads, variables) if g is not None]
        ctx = tf.distribute.get_replica_context()
        summed = ctx.all_reduce(tf.distribute.ReduceOp.SUM, [g for g, _ in pairs])
        grads = [g / replicas for g in optimizer._clip_gradients(summed)]
        variables = [v for _, v in pairs]
    optimizer.apply_gradients(zip(grads, variables))


def train_vae_step(model: FlowVAE, optimizer, images, psf, noise_sigma=None,
                   noise_power=None, step: int = 0, seed: int = 0, beta=None,
                   free_bits=None, strategy=None) -> dict[str, float]:
    """One optimiser step of the VAE (encoder + decoder) on the negative ELBO.

    Parameters
    ----------
    model : FlowVAE
    optimizer : keras.optimizers.Optimizer
        Used for the VAE variables only (use another one for the flow).
    images : array (B, N, N)
        Observed stamps, flux per pixel.
    psf : array (B, N, N) or complex (B, py, px//2+1)
        PSF image (centre ``(N//2, N//2)``, sum 1) or ``psf_fourier`` transform per stamp.
    noise_sigma, noise_power
        Noise of each stamp (exactly one): white ``sigma`` (B,) or power spectrum.
    step : int
        Training step: seeds the reparameterisation noise with ``(seed, step)`` and sets
        ``beta`` by :meth:`FlowVAE.kl_beta` unless ``beta`` is given.
    seed : int
        Run seed.
    beta, free_bits : float, optional
        Override the schedule / the model setting.
    strategy : tf.distribute.Strategy, optional
        Data parallelism (:func:`astrogen.pipeline.tf_distribute.make_strategy`); model and
        optimizer must have been created in its ``scope()``. The global batch of ``B``
        stamps is split into equal contiguous shards (``B`` must be divisible by the number
        of replicas ``R``); replica ``r`` minimises its shard's loss divided by ``R``, so the
        summed (all-reduced) gradient is the gradient of the global-batch loss. The noise of
        a step is drawn for the whole global batch from ``(seed, step)`` and each replica
        takes its rows: every replica has different draws, and stamp ``i`` gets the same
        draw as without a strategy. Free bits apply to the global-batch mean KL of each
        dimension (the replicas' means are all-reduced). Results therefore equal the
        single-device step's to floating-point rounding. ``None`` or the default strategy:
        the plain single-device step.

    Returns
    -------
    dict of float
        ``loss``, ``log_likelihood``, ``kl``, ``elbo`` (batch means, nats per stamp;
        with a strategy the mean over replicas of the shards' means) and the ``beta`` used.
    """
    variables = model.vae_variables
    _ensure_built(optimizer, variables)
    fns = _compiled(model)
    replicated = _replicated(strategy)
    key = ("vae", id(optimizer), id(strategy)) if replicated else ("vae", id(optimizer))
    if key not in fns:
        model_ref = weakref.ref(model)
        if not replicated:
            @tf.function(reduce_retracing=True)
            def step_fn(x, p, sigma, power, seed_pair, beta_t, free_bits_t):
                with tf.GradientTape() as tape:
                    out = model_ref().vae_losses(x, p, noise_sigma=sigma, noise_power=power,
                                                 seed=seed_pair, beta=beta_t,
                                                 free_bits=free_bits_t, training=True)
                grads = tape.gradient(out["loss"], variables)
                optimizer.apply_gradients(zip(grads, variables))
                return out
        else:
            reps = int(strategy.num_replicas_in_sync)

            def replica_fn(d, seed_pair, beta_t, free_bits_t):
                ctx = tf.distribute.get_replica_context()
                m = model_ref()
                b = tf.shape(d["x"])[0]
                with tf.GradientTape() as tape:
                    log_lik, kl_dim = m._vae_terms(
                        d["x"], d["p"], d["sigma"], d["power"], seed_pair, True,
                        noise_rows=(ctx.replica_id_in_sync_group * b, b * reps))
                    local_kl = tf.reduce_mean(kl_dim, axis=0)
                    # free bits on the global-batch mean of each dimension: the same
                    # dimensions are penalised as on one device (where(>=) is the
                    # gradient rule of tf.maximum)
                    global_kl = ctx.all_reduce(tf.distribute.ReduceOp.MEAN,
                                               tf.stop_gradient(local_kl))
                    fb = tf.cast(free_bits_t, local_kl.dtype)
                    penalty = tf.reduce_sum(tf.where(global_kl >= fb, local_kl, fb))
                    mean_ll = tf.reduce_mean(log_lik)
                    loss = -mean_ll + tf.cast(beta_t, local_kl.dtype) * penalty
                    scaled = loss / reps
                grads = tape.gradient(scaled, variables)
                _apply_replica_gradients(optimizer, grads, variables, reps)
                mean_kl = tf.reduce_mean(tf.reduce_sum(kl_dim, axis=-1))
                return {"loss": loss, "log_likelihood": mean_ll, "kl": mean_kl,
                        "elbo": mean_ll - mean_kl}

            @tf.function
            def step_fn(d, seed_pair, beta_t, free_bits_t):
                per_replica = strategy.run(replica_fn, args=(d, seed_pair, beta_t,
                                                             free_bits_t))
                return {k: strategy.reduce(tf.distribute.ReduceOp.MEAN, v, axis=None)
                        for k, v in per_replica.items()}

        fns[key] = step_fn
    beta = model.kl_beta(step) if beta is None else float(beta)
    free_bits = model.free_bits if free_bits is None else float(free_bits)
    x, p = _as_float(images), _as_psf(psf)
    sigma, power = _as_float(noise_sigma), _as_float(noise_power)
    scalars = (tf.constant([int(seed), int(step)], tf.int64), tf.constant(beta, tf.float32),
               tf.constant(free_bits, tf.float32))
    if replicated:
        d = _distribute_rows(strategy, {"x": x, "p": p, "sigma": sigma, "power": power},
                             int(x.shape[0]))
        out = fns[key](d, *scalars)
    else:
        out = fns[key](x, p, sigma, power, *scalars)
    result = {k: float(v) for k, v in out.items()}
    result["beta"] = beta
    return result


def train_flow_step(model: FlowVAE, optimizer, z, conditions,
                    strategy=None) -> dict[str, float]:
    """One optimiser step of the flow on ``-mean log p(z | c)``.

    Parameters
    ----------
    model : FlowVAE
    optimizer : keras.optimizers.Optimizer
        Used for the flow variables only.
    z : array (B, L)
        Latents, normally the encoder means ``model.encode(images)`` of training stamps
        (as in Lanusse et al. 2021); the VAE is not updated.
    conditions : array (B, C) or table
        Catalog properties in physical units (set the normalisation first with
        :meth:`FlowVAE.adapt_conditions`).
    strategy : tf.distribute.Strategy, optional
        As in :func:`train_vae_step`: equal contiguous shards of the ``B`` rows, each
        replica's mean loss divided by the number of replicas; no sampling here, so the
        step equals the single-device step to rounding.

    Returns
    -------
    dict of float
        ``loss`` (negative mean log density, nats per latent vector).
    """
    variables = model.flow_variables
    _ensure_built(optimizer, variables)
    fns = _compiled(model)
    replicated = _replicated(strategy)
    key = ("flow", id(optimizer), id(strategy)) if replicated else ("flow", id(optimizer))
    if key not in fns:
        model_ref = weakref.ref(model)
        if not replicated:
            @tf.function(reduce_retracing=True)
            def step_fn(z_t, c_t):
                with tf.GradientTape() as tape:
                    loss = model_ref().flow_loss(z_t, c_t)
                grads = tape.gradient(loss, variables)
                optimizer.apply_gradients(zip(grads, variables))
                return loss
        else:
            reps = int(strategy.num_replicas_in_sync)

            def replica_fn(d):
                with tf.GradientTape() as tape:
                    loss = model_ref().flow_loss(d["z"], d["c"])
                    scaled = loss / reps
                grads = tape.gradient(scaled, variables)
                _apply_replica_gradients(optimizer, grads, variables, reps)
                return loss

            @tf.function
            def step_fn(d):
                return strategy.reduce(tf.distribute.ReduceOp.MEAN,
                                       strategy.run(replica_fn, args=(d,)), axis=None)

        fns[key] = step_fn
    c = model.condition_array(conditions) if model.condition_names else None
    z = tf.cast(tf.convert_to_tensor(z), tf.float32)
    c = None if c is None else tf.constant(c)
    if replicated:
        loss = fns[key](_distribute_rows(strategy, {"z": z, "c": c}, int(z.shape[0])))
    else:
        loss = fns[key](z, c)
    if not math.isfinite(float(loss)):
        raise ModelError("the flow loss is not finite (check the condition normalisation "
                         "and the latents).", key="flow",
                         received={"loss": float(loss)})
    return {"loss": float(loss)}

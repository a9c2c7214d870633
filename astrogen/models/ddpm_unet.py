r"""Conditional U-Net noise predictor of the galaxy diffusion model.

The network :math:`\epsilon_\theta(x_t, t, c)` of Ho et al. (2020, arXiv:2006.11239) with the
improvements of Nichol & Dhariwal (2021): a sinusoidal embedding of ``t`` through an MLP,
residual blocks with GroupNormalization that receive the embedding, self-attention at the
lowest resolution(s), skip connections between the encoder and decoder. It is conditioned
on a vector of catalog properties ``c`` (by default magnitude, half-light radius, redshift,
as in Smith et al. 2022, arXiv:2111.01713) through an MLP embedding added to the time
embedding. A learned "null" embedding (zero at initialisation) replaces the condition with
probability ``cond_drop_prob`` during training, so the same network gives the
unconditional prediction used by classifier-free guidance
(:func:`astrogen.schedulers.guided`).

Inputs (a tuple, list or dict with these keys):

* ``x``: images ``(B, H, W, channels)``, float32;
* ``t``: integer timesteps ``(B,)`` in ``[0, T)``;
* ``cond``: optional ``(B, cond_dim)`` raw catalog values (normalised inside the model with
  ``cond_mean`` / ``cond_std``); absent or ``None`` = unconditional;
* ``cond_mask``: optional ``(B,)``: 1 uses the row's condition, 0 the null condition.

Use :func:`as_eps_model` to drive the samplers of :mod:`astrogen.schedulers` with a model,
:class:`DiffusionTrainer` to train it and :class:`~astrogen.models.ema.EMA` for weight
averaging.
"""
from __future__ import annotations

from numbers import Integral, Real
from typing import Sequence

import numpy as np
import keras
from keras import ops

from astrogen.errors import ConfigError, ModelError
from astrogen.models.ema import EMA
from astrogen.models.layers_diffusion import (AttentionBlock, Downsample, ResidualBlock,
                                              SinusoidalTimeEmbedding, Upsample, group_count)

__all__ = ["DDPMUNet", "DiffusionTrainer", "diffusion_loss", "as_eps_model", "EMA",
           "eps_from_output", "DEFAULT_COND_NAMES", "PREDICTIONS"]

#: Default conditioning columns (canonical catalog names).
DEFAULT_COND_NAMES = ("mag", "half_light_radius", "redshift")

#: What a :class:`DDPMUNet` can be trained to predict.
PREDICTIONS = ("eps", "v")


def _int(name, value, minimum=1):
    if isinstance(value, bool) or not isinstance(value, Integral) or value < minimum:
        raise ConfigError(f"must be an integer >= {minimum}.", key=name, received={name: value})
    return int(value)


def _vector(name, value, n, positive=False):
    if value is None:
        return None
    try:
        arr = np.asarray(value, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        arr = None
    if arr is None or arr.size != n or not np.all(np.isfinite(arr)) or \
            (positive and np.any(arr <= 0)):
        what = "positive " if positive else ""
        raise ConfigError(f"must be {n} finite {what}numbers (one per condition).", key=name,
                          received={name: value})
    return [float(v) for v in arr]


@keras.saving.register_keras_serializable(package="astrogen")
class DDPMUNet(keras.Model):
    """U-Net predicting the noise of a diffused image, conditional on catalog properties.

    Parameters
    ----------
    image_size : int
        Height = width of the stamps (default 64); divisible by ``2**(len(channel_mults)-1)``.
    channels : int
        Image channels (bands), default 1.
    base_channels : int
        Width of the first level (default 64).
    channel_mults : sequence of int
        Width multiplier per resolution level (default ``(1, 2, 2, 4)``: 64, 32, 16, 8 px).
    num_res_blocks : int
        Residual blocks per level in the encoder (the decoder has one more).
    attention_resolutions : sequence of int, optional
        Resolutions (pixels) with self-attention after each residual block; default the
        lowest one. The middle block always has attention.
    num_heads : int
        Attention heads.
    dropout : float
        Dropout in the residual blocks (training only).
    norm_groups : int
        GroupNormalization groups (fewer for narrow layers, see ``group_count``).
    cond_dim : int
        Number of catalog properties (0 = unconditional model).
    cond_names : sequence of str, optional
        Their catalog column names (metadata for pipelines; default
        :data:`DEFAULT_COND_NAMES` when ``cond_dim == 3``).
    cond_mean, cond_std : sequence of float, optional
        Normalisation of the raw properties, ``(c - mean) / std``, stored with the model.
    cond_drop_prob : float
        Probability that training replaces a row's condition by the null condition (for
        classifier-free guidance); used by :class:`DiffusionTrainer`.
    prediction : {"eps", "v"}
        What the output is: the noise ``eps`` (Ho et al. 2020) or the velocity
        ``v = sqrt(abar) eps - sqrt(1 - abar) x0`` (Salimans & Ho 2022, arXiv:2202.00512).
        With ``eps``, the clean image ``(x_t - sqrt(1 - abar) eps) / sqrt(abar)`` multiplies
        the network's error by ``1 / sqrt(abar)`` at high noise (up to ~2e4 with the cosine
        schedule), with ``v`` by at most 1. Samplers always receive ``eps``
        (:func:`eps_from_output`).
    """

    def __init__(self, image_size: int = 64, channels: int = 1, base_channels: int = 64,
                 channel_mults: Sequence[int] = (1, 2, 2, 4), num_res_blocks: int = 2,
                 attention_resolutions: Sequence[int] | None = None, num_heads: int = 1,
                 dropout: float = 0.0, norm_groups: int = 32, cond_dim: int = 3,
                 cond_names: Sequence[str] | None = None,
                 cond_mean: Sequence[float] | None = None,
                 cond_std: Sequence[float] | None = None, cond_drop_prob: float = 0.1,
                 max_period: float = 10000.0, prediction: str = "eps", **kwargs):
        kwargs.setdefault("name", "ddpm_unet")
        super().__init__(**kwargs)
        # ---- argument checks -------------------------------------------------------------
        self.image_size = _int("image_size", image_size, 2)
        self.channels = _int("channels", channels)
        self.base_channels = _int("base_channels", base_channels)
        if isinstance(channel_mults, (str, bytes)) or not hasattr(channel_mults, "__len__") \
                or len(channel_mults) == 0:
            raise ConfigError("must be a non-empty list of positive integers.",
                              key="channel_mults", received={"channel_mults": channel_mults})
        self.channel_mults = tuple(_int("channel_mults", m) for m in channel_mults)
        n_levels = len(self.channel_mults)
        if self.image_size % (2 ** (n_levels - 1)):
            raise ConfigError(f"must be divisible by 2**(len(channel_mults)-1) = "
                              f"{2 ** (n_levels - 1)}.", key="image_size",
                              received={"image_size": image_size,
                                        "channel_mults": list(self.channel_mults)})
        self.resolutions = tuple(self.image_size // 2 ** i for i in range(n_levels))
        self.num_res_blocks = _int("num_res_blocks", num_res_blocks)
        if attention_resolutions is None:
            attention_resolutions = (self.resolutions[-1],)
        attention_resolutions = tuple(_int("attention_resolutions", r)
                                      for r in attention_resolutions)
        bad = [r for r in attention_resolutions if r not in self.resolutions]
        if bad:
            raise ConfigError("must be among the U-Net resolutions "
                              f"{list(self.resolutions)}.", key="attention_resolutions",
                              received={"attention_resolutions": list(attention_resolutions)})
        self.attention_resolutions = attention_resolutions
        self.num_heads = _int("num_heads", num_heads)
        for m in set(self.channel_mults):
            if (self.base_channels * m) % self.num_heads:
                raise ConfigError("every level width base_channels*mult must be divisible "
                                  "by num_heads.", key="num_heads",
                                  received={"num_heads": num_heads,
                                            "width": self.base_channels * m})
        if isinstance(dropout, bool) or not isinstance(dropout, Real) or not 0 <= dropout < 1:
            raise ConfigError("must be a number in [0, 1).", key="dropout",
                              received={"dropout": dropout})
        self.dropout = float(dropout)
        self.norm_groups = _int("norm_groups", norm_groups)
        self.cond_dim = _int("cond_dim", cond_dim, 0)
        if cond_names is None:
            cond_names = DEFAULT_COND_NAMES if self.cond_dim == 3 else \
                tuple(f"cond_{i}" for i in range(self.cond_dim))
        if isinstance(cond_names, str) or len(cond_names) != self.cond_dim or \
                not all(isinstance(n, str) and n for n in cond_names):
            raise ConfigError("must be cond_dim non-empty names.", key="cond_names",
                              received={"cond_names": cond_names, "cond_dim": self.cond_dim})
        self.cond_names = tuple(cond_names)
        self.cond_mean = _vector("cond_mean", cond_mean, self.cond_dim)
        self.cond_std = _vector("cond_std", cond_std, self.cond_dim, positive=True)
        if isinstance(cond_drop_prob, bool) or not isinstance(cond_drop_prob, Real) \
                or not 0 <= cond_drop_prob <= 1:
            raise ConfigError("must be a probability in [0, 1].", key="cond_drop_prob",
                              received={"cond_drop_prob": cond_drop_prob})
        self.cond_drop_prob = float(cond_drop_prob)
        if prediction not in PREDICTIONS:
            raise ConfigError(f"must be one of {list(PREDICTIONS)}.", key="prediction",
                              received={"prediction": prediction})
        self.prediction = str(prediction)
        if isinstance(max_period, bool) or not isinstance(max_period, Real) or max_period <= 1:
            raise ConfigError("must be a number > 1.", key="max_period",
                              received={"max_period": max_period})
        self.max_period = float(max_period)

        # ---- sub-layers (their weights are created in build) ----------------------------
        base, emb = self.base_channels, 4 * self.base_channels
        self.emb_dim = emb
        kw = dict(norm_groups=self.norm_groups)
        self.time_embedding = SinusoidalTimeEmbedding(base, self.max_period, name="t_sin")
        self.time_mlp = [keras.layers.Dense(emb, activation="silu", name="t_mlp_0"),
                         keras.layers.Dense(emb, name="t_mlp_1")]
        self.cond_mlp = ([keras.layers.Dense(emb, activation="silu", name="c_mlp_0"),
                          keras.layers.Dense(emb, name="c_mlp_1")] if self.cond_dim else [])
        self.conv_in = keras.layers.Conv2D(base, 3, padding="same", name="conv_in")
        self.down_blocks, self.down_attn, self.downsamplers = [], [], []
        for lvl, m in enumerate(self.channel_mults):
            res = self.resolutions[lvl]
            for j in range(self.num_res_blocks):
                self.down_blocks.append(ResidualBlock(base * m, dropout=self.dropout,
                                                      name=f"down{lvl}_res{j}", **kw))
                self.down_attn.append(AttentionBlock(self.num_heads, name=f"down{lvl}_attn{j}",
                                                     **kw)
                                      if res in self.attention_resolutions else None)
            if lvl < n_levels - 1:
                self.downsamplers.append(Downsample(name=f"down{lvl}_downsample"))
        top = base * self.channel_mults[-1]
        self.mid = [ResidualBlock(top, dropout=self.dropout, name="mid_res0", **kw),
                    AttentionBlock(self.num_heads, name="mid_attn", **kw),
                    ResidualBlock(top, dropout=self.dropout, name="mid_res1", **kw)]
        self.up_blocks, self.up_attn, self.upsamplers = [], [], []
        for lvl in reversed(range(n_levels)):
            res, m = self.resolutions[lvl], self.channel_mults[lvl]
            for j in range(self.num_res_blocks + 1):
                self.up_blocks.append(ResidualBlock(base * m, dropout=self.dropout,
                                                    name=f"up{lvl}_res{j}", **kw))
                self.up_attn.append(AttentionBlock(self.num_heads, name=f"up{lvl}_attn{j}", **kw)
                                    if res in self.attention_resolutions else None)
            if lvl > 0:
                self.upsamplers.append(Upsample(name=f"up{lvl}_upsample"))
        self.norm_out = keras.layers.GroupNormalization(group_count(base, self.norm_groups),
                                                        epsilon=1e-5, name="norm_out")
        self.conv_out = keras.layers.Conv2D(self.channels, 3, padding="same",
                                            kernel_initializer="zeros", name="conv_out")

    # ---- Keras plumbing -------------------------------------------------------------------
    def build(self, input_shape=None):
        """Create every weight. The shapes follow from the configuration, so
        ``input_shape`` is ignored (it is accepted for Keras' automatic build)."""
        if self.built:
            return
        if self.cond_dim:
            self.null_cond_embedding = self.add_weight(
                shape=(self.emb_dim,), initializer="zeros", name="null_cond_embedding")
        hw = self.image_size
        x = np.zeros((1, hw, hw, self.channels), np.float32)
        t = np.zeros((1,), np.int32)
        cond = mask = None
        if self.cond_dim:
            cond, mask = np.zeros((1, self.cond_dim), np.float32), np.ones((1,), np.float32)
        # one pass on a single zero image builds every sub-layer with its true input shape
        self._forward(x, t, cond, mask, training=False)
        self.built = True

    def get_build_config(self):
        return {"input_shape": (None, self.image_size, self.image_size, self.channels)}

    def build_from_config(self, config):
        self.build()

    def get_config(self):
        base = super().get_config()
        base = {k: base[k] for k in ("name", "trainable", "dtype") if k in base}
        return {**base, "image_size": self.image_size, "channels": self.channels,
                "base_channels": self.base_channels, "channel_mults": list(self.channel_mults),
                "num_res_blocks": self.num_res_blocks,
                "attention_resolutions": list(self.attention_resolutions),
                "num_heads": self.num_heads, "dropout": self.dropout,
                "norm_groups": self.norm_groups, "cond_dim": self.cond_dim,
                "cond_names": list(self.cond_names), "cond_mean": self.cond_mean,
                "cond_std": self.cond_std, "cond_drop_prob": self.cond_drop_prob,
                "max_period": self.max_period, "prediction": self.prediction}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    # ---- forward --------------------------------------------------------------------------
    def _unpack(self, inputs):
        if isinstance(inputs, dict):
            unknown = set(inputs) - {"x", "t", "cond", "cond_mask"}
            if unknown or "x" not in inputs or "t" not in inputs:
                raise ConfigError("takes a dict with keys x, t and optionally cond, "
                                  "cond_mask.", key="inputs",
                                  received={"keys": sorted(inputs)})
            return inputs["x"], inputs["t"], inputs.get("cond"), inputs.get("cond_mask")
        if isinstance(inputs, (tuple, list)) and 2 <= len(inputs) <= 4:
            items = list(inputs) + [None] * (4 - len(inputs))
            return tuple(items)
        raise ConfigError("takes (x, t), (x, t, cond) or (x, t, cond, cond_mask).",
                          key="inputs", received={"inputs": type(inputs).__name__})

    def call(self, inputs, training=None):
        """Predict the noise (or the configured target) of noisy images.

        Parameters
        ----------
        inputs : tuple or dict
            ``(x, t)`` or ``(x, t, cond[, cond_mask])``: noisy images ``(batch, size, size,
            channels)``, integer timesteps ``(batch,)``, conditions ``(batch, n_cond)`` and
            their mask.
        training : bool, optional
            Training mode (dropout).

        Returns
        -------
        tensor
            Shape ``(batch, size, size, channels)``.
        """
        x, t, cond, cond_mask = self._unpack(inputs)
        return self._forward(x, t, cond, cond_mask, training=training)

    def embed(self, t, cond=None, cond_mask=None):
        """Time (+ condition) embedding ``(B, 4*base_channels)`` fed to every block."""
        emb = self.time_embedding(t)
        for layer in self.time_mlp:
            emb = layer(emb)
        if not self.cond_dim:
            return emb
        null = ops.zeros_like(emb) + ops.cast(self.null_cond_embedding, emb.dtype)[None, :]
        if cond is None:
            return emb + null
        c = ops.cast(cond, emb.dtype)
        if self.cond_mean is not None:
            c = c - ops.convert_to_tensor(np.asarray(self.cond_mean, np.float32))
        if self.cond_std is not None:
            c = c / ops.convert_to_tensor(np.asarray(self.cond_std, np.float32))
        if cond_mask is not None:  # keep NaN (unknown) conditions of dropped rows out of the MLP
            keep = ops.reshape(ops.cast(cond_mask, "bool"), (-1, 1))
            c = ops.where(keep, c, ops.zeros_like(c))
        for layer in self.cond_mlp:
            c = layer(c)
        if cond_mask is not None:
            c = ops.where(keep, c, null)
        return emb + c

    def _forward(self, x, t, cond=None, cond_mask=None, training=None):
        if cond is not None and not self.cond_dim:
            raise ConfigError("this model is unconditional (cond_dim=0); do not pass cond.",
                              key="cond")
        emb = self.embed(t, cond, cond_mask)
        h = self.conv_in(x)
        skips = [h]
        k = 0
        for lvl in range(len(self.channel_mults)):
            for _ in range(self.num_res_blocks):
                h = self.down_blocks[k](h, emb, training=training)
                if self.down_attn[k] is not None:
                    h = self.down_attn[k](h)
                skips.append(h)
                k += 1
            if lvl < len(self.channel_mults) - 1:
                h = self.downsamplers[lvl](h)
                skips.append(h)
        h = self.mid[0](h, emb, training=training)
        h = self.mid[1](h)
        h = self.mid[2](h, emb, training=training)
        k = 0
        for i, lvl in enumerate(reversed(range(len(self.channel_mults)))):
            for _ in range(self.num_res_blocks + 1):
                h = ops.concatenate([h, skips.pop()], axis=-1)
                h = self.up_blocks[k](h, emb, training=training)
                if self.up_attn[k] is not None:
                    h = self.up_attn[k](h)
                k += 1
            if lvl > 0:
                h = self.upsamplers[i](h)
        return self.conv_out(ops.silu(self.norm_out(h)))

    def compute_output_shape(self, input_shape=None):
        """Output shape ``(None, image_size, image_size, channels)``."""
        return (None, self.image_size, self.image_size, self.channels)


# ---- training ---------------------------------------------------------------------------------
def _schedule_tables(schedule):
    """``sqrt(alpha_bar)`` and ``sqrt(1 - alpha_bar)`` of a NoiseSchedule as float32 tensors."""
    ab = getattr(schedule, "alpha_bar", None)
    if ab is None:
        raise ConfigError("must be an astrogen.schedulers.NoiseSchedule.", key="schedule",
                          received={"schedule": type(schedule).__name__})
    ab = np.asarray(ab, dtype=np.float64)
    return (ops.convert_to_tensor(np.sqrt(ab).astype(np.float32)),
            ops.convert_to_tensor(np.sqrt(1.0 - ab).astype(np.float32)))


def diffusion_loss(model: DDPMUNet, schedule, x0, t, noise, cond=None, cond_mask=None,
                   training: bool = False):
    r"""The "simple" loss of Ho et al. (2020): :math:`\| \epsilon - \epsilon_\theta(
    \sqrt{\bar\alpha_t}x_0+\sqrt{1-\bar\alpha_t}\epsilon, t, c)\|^2`, averaged (a scalar
    tensor), for given ``t`` and ``noise``; with ``model.prediction == "v"`` the target is
    :math:`v = \sqrt{\bar\alpha_t}\epsilon - \sqrt{1-\bar\alpha_t}x_0` instead."""
    sa, sb = _schedule_tables(schedule)
    x0 = ops.cast(x0, "float32")
    noise = ops.cast(noise, "float32")
    t = ops.cast(t, "int32")
    a = ops.reshape(ops.take(sa, t), (-1, 1, 1, 1))
    b = ops.reshape(ops.take(sb, t), (-1, 1, 1, 1))
    x_t = a * x0 + b * noise
    out = model((x_t, t, cond, cond_mask), training=training)
    target = a * noise - b * x0 if getattr(model, "prediction", "eps") == "v" else noise
    return ops.mean(ops.square(out - target))


def eps_from_output(output, x_t, t, schedule, prediction: str = "eps"):
    """The noise prediction ``eps`` from a network output (numpy, float64).

    ``prediction="v"``: ``eps = sqrt(abar_t) v + sqrt(1 - abar_t) x_t`` (exact inverse of the
    training target given ``x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps``).
    """
    out = np.asarray(output, dtype=np.float64)
    if prediction == "eps":
        return out
    t = np.asarray(t).astype(np.int64)
    shape = (-1,) + (1,) * (out.ndim - 1)
    a = schedule.sqrt_alpha_bar[t].reshape(shape)
    b = schedule.sqrt_one_minus_alpha_bar[t].reshape(shape)
    return a * out + b * np.asarray(x_t, dtype=np.float64)


class DiffusionTrainer:
    """One optimisation step of a :class:`DDPMUNet` on a batch, with condition dropout: the
    train step of ``astrogen train`` (``model: ddpm``) and of direct use.

    Step ``g`` draws ``t ~ U{0..T-1}``, ``eps ~ N(0, I)`` and, per row, drops the condition
    with probability ``model.cond_drop_prob``, all as TensorFlow stateless draws seeded with
    ``(seed, g)`` (counter-based: a run resumed at step ``g`` continues exactly); minimises
    :func:`diffusion_loss` with ``optimizer``; updates the EMA of the weights if
    ``ema_decay`` is given.

    Parameters
    ----------
    model : DDPMUNet
    schedule : astrogen.schedulers.NoiseSchedule
    optimizer : keras optimizer, optional
        Default ``Adam(learning_rate=2e-4)`` (Ho et al. 2020).
    ema_decay : float, optional
        Keep an :class:`EMA` of the weights (``trainer.ema``).
    seed : int
        In ``[0, 2**31)``.
    jit : bool
        Compile the step with ``tf.function`` (default True).
    """

    def __init__(self, model: DDPMUNet, schedule, optimizer=None, ema_decay: float | None = None,
                 seed: int = 0, jit: bool = True):
        if not isinstance(model, DDPMUNet):
            raise ConfigError("must be a DDPMUNet.", key="model",
                              received={"model": type(model).__name__})
        if isinstance(seed, bool) or not isinstance(seed, Integral) or not 0 <= seed < 2 ** 31:
            raise ConfigError("must be an integer in [0, 2**31).", key="seed",
                              received={"seed": seed})
        self.model = model
        self.schedule = schedule
        self.num_train_steps = int(len(schedule.alpha_bar))
        _schedule_tables(schedule)  # argument check
        model.build()
        self.optimizer = optimizer or keras.optimizers.Adam(learning_rate=2e-4)
        self.optimizer.build(model.trainable_variables)
        self.ema = EMA(model, ema_decay) if ema_decay is not None else None
        self.seed = int(seed)
        self.step = 0
        self._step = self._step_impl
        if jit:
            import tensorflow as tf
            self._step = tf.function(self._step_impl, reduce_retracing=True)

    def _step_impl(self, x0, cond, has_cond: bool, g):
        import tensorflow as tf

        s = tf.stack([tf.constant(self.seed, tf.int64), tf.cast(g, tf.int64)])
        b = tf.shape(x0)[0]
        t = tf.random.stateless_uniform([b], seed=s, minval=0, maxval=self.num_train_steps,
                                        dtype=tf.int32)
        noise = tf.random.stateless_normal(tf.shape(x0), seed=s + [0, 1 << 40])
        if has_cond:
            u = tf.random.stateless_uniform([b], seed=s + [0, 2 << 40])
            mask = tf.cast(u >= self.model.cond_drop_prob, tf.float32)
        else:
            cond, mask = None, None
        with tf.GradientTape() as tape:
            loss = diffusion_loss(self.model, self.schedule, x0, t, noise, cond, mask,
                                  training=True)
        variables = self.model.trainable_variables
        grads = tape.gradient(loss, variables)
        self.optimizer.apply_gradients(zip(grads, variables))
        if self.ema is not None:
            self.ema.update()
        return loss

    def train_step(self, x0, cond=None, step: int | None = None) -> float:
        """One step on a batch ``x0`` ``(B, H, W, C)`` (and its ``cond`` ``(B, cond_dim)``)
        with the draws of step ``step`` (default: the trainer's counter, which then
        advances); returns the loss before the update."""
        import tensorflow as tf

        g = self.step if step is None else int(step)
        self.step = g + 1
        x0 = (tf.constant(np.asarray(x0, np.float32)) if isinstance(x0, np.ndarray)
              else ops.cast(x0, "float32"))
        g = tf.constant(g, tf.int64)
        if cond is None:  # unconditional batch (a placeholder keeps one trace per case)
            return float(self._step(x0, ops.zeros((1,)), False, g))
        cond = (tf.constant(np.asarray(cond, np.float32)) if isinstance(cond, np.ndarray)
                else ops.cast(cond, "float32"))
        return float(self._step(x0, cond, True, g))


# ---- sampling adapter ---------------------------------------------------------------------
def as_eps_model(model: DDPMUNet, batch_size: int | None = None, jit: bool = True,
                 schedule=None):
    """A callable ``(x_t, t, cond) -> eps_hat`` (float64 numpy) for the samplers.

    ``cond=None`` gives the unconditional (null-condition) prediction, so
    ``guided(as_eps_model(model), cond, None, scale)`` is classifier-free guidance. Inputs are
    cast to float32 and evaluated in inference mode, in chunks of ``batch_size`` rows. A
    ``prediction="v"`` network needs its training ``schedule`` to convert ``v`` to ``eps``.
    """
    if not isinstance(model, keras.Model):
        raise ConfigError("must be a keras Model.", key="model",
                          received={"model": type(model).__name__})
    prediction = getattr(model, "prediction", "eps")
    if prediction != "eps" and schedule is None:
        raise ConfigError("a v-prediction network needs its noise schedule.", key="schedule",
                          received={"prediction": prediction})
    if batch_size is not None:
        batch_size = _int("batch_size", batch_size)
    if isinstance(model, DDPMUNet):
        model.build()

    def _run(x, t, c):
        return model((x, t, c), training=False)

    def _run_uncond(x, t):
        return model((x, t), training=False)

    if jit:
        import tensorflow as tf
        _run = tf.function(_run, reduce_retracing=True)
        _run_uncond = tf.function(_run_uncond, reduce_retracing=True)

    def eps_model(x_t, t, cond=None):
        x = np.asarray(x_t.numpy() if hasattr(x_t, "numpy") else x_t, dtype=np.float32)
        tt = np.asarray(t.numpy() if hasattr(t, "numpy") else t).astype(np.int32)
        tt = np.broadcast_to(tt, (x.shape[0],))
        c = None if cond is None else np.asarray(
            cond.numpy() if hasattr(cond, "numpy") else cond, dtype=np.float32)
        if c is not None and c.shape[0] != x.shape[0]:
            raise ModelError("cond must have one row per image.", key="cond",
                             received={"cond": c.shape, "x_t": x.shape})
        n = x.shape[0]
        step = batch_size or n
        out = []
        for i in range(0, n, step):
            sl = slice(i, i + step)
            y = _run_uncond(x[sl], tt[sl]) if c is None else _run(x[sl], tt[sl], c[sl])
            out.append(np.asarray(y, dtype=np.float64))
        return eps_from_output(np.concatenate(out, axis=0), x, tt, schedule, prediction)

    return eps_model

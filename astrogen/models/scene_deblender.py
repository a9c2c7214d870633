r"""Detection-conditioned deblender: the light fraction of one detected object in a cut-out.

Input (``(S, S, C + 2)``, :func:`astrogen.deblend.scene.cutout_inputs`): the C bands in units
of their noise sigma, a unit Gaussian at the target detection and Gaussians at the other
detections. The bands are compressed by ``asinh(x / transform_a)`` before the network
(:meth:`SceneDeblender.transform`); the two mark channels pass unchanged. A small U-Net
(two 3x3 convolutions per level, He-initialised ReLU, spatial dropout after every block)
returns one logit per pixel; ``sigmoid(logit)`` is the target object's light fraction.

Loss (:meth:`SceneDeblender.losses`, the model's own): soft binary cross-entropy between the
predicted fraction and the true fraction ``m_target / (M + b)`` (b: ``fraction_background``
in detection noise units), weight ``1 + object_weight`` on pixels where the target holds more
than 5 % of the light.

Probabilistic variant: Monte-Carlo dropout (Gal & Ghahramani 2016, arXiv:1506.02142):
``n_samples`` predictions with dropout on (:meth:`SceneDeblender.predict_fractions`); the
per-pixel label probabilities of the scene are tempered by the card's ``temperature``
(fitted on a validation split, :mod:`astrogen.deblend.calibration`).

The model card (the ``.json`` sidecar) records the survey, bands, pixel scale, PSF FWHM per
band, depth and noise per band of the training scenes, and the command that trained it.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from astrogen.errors import ModelError

__all__ = ["SceneDeblender", "load_scene_deblender", "FORMAT", "build_scene_network"]

FORMAT = "astrogen.scene_deblender/1"


def build_scene_network(size: int, n_bands: int, filters=(12, 24, 48), dropout: float = 0.1):
    """The functional U-Net ``(S, S, n_bands + 2) -> (S, S, 1)`` logits."""
    import keras
    from keras import layers

    init = keras.initializers.HeNormal(seed=0)
    x_in = keras.Input((size, size, n_bands + 2), name="cutout")
    x = x_in
    skips = []
    for i, f in enumerate(filters):
        for j in range(2):
            x = layers.Conv2D(f, 3, padding="same", activation="relu", kernel_initializer=init,
                              name=f"down{i}_{j}")(x)
        if dropout > 0:
            x = layers.SpatialDropout2D(dropout, name=f"drop_down{i}")(x)
        if i < len(filters) - 1:
            skips.append(x)
            x = layers.MaxPooling2D(2, name=f"pool{i}")(x)
    for i in range(len(filters) - 2, -1, -1):
        f = filters[i]
        x = layers.UpSampling2D(2, name=f"up{i}")(x)
        x = layers.Concatenate(name=f"skip{i}")([x, skips[i]])
        for j in range(2):
            x = layers.Conv2D(f, 3, padding="same", activation="relu", kernel_initializer=init,
                              name=f"upconv{i}_{j}")(x)
        if dropout > 0:
            x = layers.SpatialDropout2D(dropout, name=f"drop_up{i}")(x)
    out = layers.Conv2D(1, 1, name="logit")(x)
    return keras.Model(x_in, out, name="scene_deblender")


class SceneDeblender:
    """The cut-out network with its card.

    Parameters
    ----------
    size : int
        Cut-out side (pixels), a multiple of ``2 ** (len(filters) - 1)``.
    n_bands : int
        Bands of the input.
    filters : sequence of int
        Filters per U-Net level.
    dropout : float
        Spatial dropout rate (MC-dropout samples need > 0).
    transform_a : float
        Band compression ``asinh(x / transform_a)`` (x in noise sigma).
    card : dict
        Survey, bands, pixel scale, PSF, depth, training command, temperature, ...
    network : keras.Model, optional
        An existing network (loaded); built otherwise.
    """

    def __init__(self, size: int = 32, n_bands: int = 4, filters=(12, 24, 48),
                 dropout: float = 0.1, transform_a: float = 3.0, card: dict | None = None,
                 network=None):
        self.size = int(size)
        self.n_bands = int(n_bands)
        self.filters = [int(f) for f in filters]
        self.dropout = float(dropout)
        self.transform_a = float(transform_a)
        self.card = dict(card or {})
        if not self.filters or any(f < 1 for f in self.filters):
            raise ModelError("must be a non-empty list of positive integers.", key="filters",
                             received={"filters": list(filters)})
        if self.size < 4 or self.size % (2 ** (len(self.filters) - 1)):
            raise ModelError("size must be a multiple of 2**(len(filters) - 1).", key="size",
                             received={"size": size, "filters": self.filters})
        if self.n_bands < 1:
            raise ModelError("must be >= 1.", key="n_bands", received={"n_bands": n_bands})
        if not 0.0 <= self.dropout < 1.0:
            raise ModelError("must be in [0, 1).", key="dropout", received={"dropout": dropout})
        if not self.transform_a > 0:
            raise ModelError("must be > 0.", key="transform_a",
                             received={"transform_a": transform_a})
        self.network = network if network is not None else build_scene_network(
            self.size, self.n_bands, self.filters, self.dropout)

    @property
    def temperature(self) -> float:
        """Calibration temperature of the MC-dropout fractions (card; 1 if uncalibrated)."""
        return float(self.card.get("temperature", 1.0))

    def config(self) -> dict:
        """The model's configuration as written to its JSON sidecar (with its card)."""
        return {"format": FORMAT, "size": self.size, "n_bands": self.n_bands,
                "filters": self.filters, "dropout": self.dropout,
                "transform_a": self.transform_a, "card": self.card}

    def transform(self, inputs: np.ndarray) -> np.ndarray:
        """Network input from :func:`~astrogen.deblend.scene.cutout_inputs` output."""
        x = np.array(inputs, np.float32, copy=True)
        if x.ndim != 4 or x.shape[1:] != (self.size, self.size, self.n_bands + 2):
            raise ModelError(f"the network takes cut-outs of shape (n, {self.size}, "
                             f"{self.size}, {self.n_bands + 2}).", key="image",
                             received={"shape": x.shape})
        x[..., :self.n_bands] = np.arcsinh(x[..., :self.n_bands] / self.transform_a)
        return x

    def predict_fractions(self, inputs: np.ndarray, n_samples: int = 1, seed: int = 0,
                          batch_size: int = 256) -> np.ndarray:
        """Light fractions ``(n_samples, N, S, S)``: one deterministic prediction (dropout
        off) if ``n_samples == 1``, else ``n_samples`` MC-dropout samples, a function of
        ``(seed, inputs)`` only (each dropout layer's seed generator is reset to
        ``(seed, layer index)``)."""
        import keras

        x = self.transform(inputs)
        ns = max(1, int(n_samples))
        if ns > 1:  # counter-based: every dropout layer restarts from (seed, layer index)
            for i, layer in enumerate(self.network.layers):
                gen = getattr(layer, "seed_generator", None)
                if gen is not None:
                    gen.state.assign(np.array([int(seed) % (2 ** 31), i],
                                              dtype=gen.state.dtype.name if hasattr(
                                                  gen.state.dtype, "name") else gen.state.dtype))
        out = np.zeros((ns, len(x), self.size, self.size), np.float32)
        for s in range(ns):
            for lo in range(0, len(x), batch_size):
                o = self.network(x[lo:lo + batch_size], training=ns > 1)
                out[s, lo:lo + batch_size] = keras.ops.convert_to_numpy(
                    keras.ops.sigmoid(o[..., 0]))
        return out

    def predictor(self, seed: int = 0):
        """``predictor(inputs, n_samples)`` for :func:`astrogen.deblend.scene.deblend_scene`."""
        return lambda inputs, n_samples: self.predict_fractions(inputs, n_samples, seed)

    def losses(self, x, target, object_weight: float = 4.0, training: bool = False) -> dict:
        """Loss terms of a batch: transformed input ``x`` (B, S, S, C+2), target fractions
        (B, S, S)."""
        import tensorflow as tf

        logit = self.network(x, training=training)[..., 0]
        w = 1.0 + object_weight * tf.cast(target > 0.05, tf.float32)
        ce = tf.nn.sigmoid_cross_entropy_with_logits(labels=target, logits=logit)
        # minus the target's own entropy: 0 for a perfect prediction
        t = tf.clip_by_value(target, 1e-6, 1 - 1e-6)
        ent = -(t * tf.math.log(t) + (1 - t) * tf.math.log(1 - t))
        loss = tf.reduce_sum(w * (ce - ent)) / tf.reduce_sum(w)
        mae = tf.reduce_mean(tf.abs(tf.sigmoid(logit) - target))
        return {"loss": loss, "mae": mae}

    def make_train_step(self, optimizer, object_weight: float = 4.0):
        """A compiled ``step(x, target) -> loss terms`` applying one optimizer update."""
        from astrogen.models.losses import compiled_step

        return compiled_step(self.network, optimizer,
                             lambda x, t: self.losses(x, t, object_weight, training=True))

    def save(self, path) -> Path:
        """Write ``path`` (``.keras``) and its ``.json`` card."""
        from astrogen.io.atomic import save_model_atomic, write_json

        path = Path(path)
        if path.suffix != ".keras":
            raise ModelError("the file name must end in .keras.", key="path",
                             received={"path": str(path)})
        path.parent.mkdir(parents=True, exist_ok=True)
        save_model_atomic(self.network, path)
        write_json(path.with_suffix(".json"), self.config())
        return path


def load_scene_deblender(path) -> SceneDeblender:
    """Load what :meth:`SceneDeblender.save` wrote (:class:`ModelError`, key ``model``, if
    the file or its card is missing or of another format)."""
    import keras

    path = Path(path)
    side = path.with_suffix(".json")
    if not (path.is_file() and side.is_file()):
        raise ModelError("missing model file or its .json card.", key="model",
                         received={"model": str(path)})
    cfg = json.loads(side.read_text())
    if cfg.get("format") != FORMAT:
        raise ModelError("not an astrogen scene deblender file.", key="model",
                         received={"format": cfg.get("format")})
    net = keras.models.load_model(path, compile=False)
    return SceneDeblender(size=cfg["size"], n_bands=cfg["n_bands"], filters=cfg["filters"],
                          dropout=cfg["dropout"], transform_a=cfg["transform_a"],
                          card=cfg.get("card", {}), network=net)

r"""Baryon painter: a 3-D conditional VAE from the dark-matter density to gas fields.

In the spirit of HyPhy (Horowitz et al. 2021, arXiv:2106.12675; Tröster et al. 2019,
arXiv:1903.12173): the condition is the dark-matter-only density ``1 + delta_dm`` of a
periodic box; the outputs are four fields on the same grid:

``total``        baryonified total matter ``1 + delta``
``gas``          gas density / mean cosmic baryon density
``temperature``  gas temperature (K)
``pressure``     electron pressure (keV cm^-3)

Network (all convolutions periodic, :class:`~astrogen.models.layers_periodic.PeriodicPad3D`,
so a periodic box of any side divisible by 4 is painted in one pass and a shift of the input
shifts the output):

* decoder ``p(y | x, z)``: a 3-D U-Net on ``x`` (two stride-2 levels) with the latent ``z``
  (``latent_channels`` per cell of the 1/4-resolution grid) concatenated at the bottleneck;
  output: the means of the four standardised targets, with one learned log-scale per field
  (Gaussian likelihood, :mod:`tensorflow_probability`);
* encoder ``q(z | x, y)``: strided convolutions of ``(x, y)`` to the bottleneck grid, a
  diagonal Gaussian;
* prior ``p(z) = N(0, I)``; loss = negative ELBO per target value, ``NLL + beta KL``.

The small-scale gas is not fixed by the dark matter, so :meth:`BaryonPainter.paint` draws
``z ~ N(0, I)`` (seeded) and returns one realisation per draw. Transforms: ``x = (ln max(dm,
floor) - m) / s``; targets ``ln`` of ``total`` and ``gas``, ``log10`` of ``temperature`` and
``pressure``, standardised with the training set's means and standard deviations
(``input_norm``, ``target_norm``, stored in the model). With ``residual=True`` each target is
the residual over what the dark matter alone implies (``log f - a log dm``, ``a`` of
:data:`DM_EXPONENTS`: ``total = gas = dm``, ``T ~ dm^(2/3)``, ``P_e ~ dm^(5/3)``), so a
painter that has learned nothing paints the dark matter itself and the matter suppression is
a learned correction of it; with ``heteroscedastic=True`` the likelihood's width is also
predicted per cell (issue 18: the absolute-field painter missed the pressure and total-matter
targets, ``benchmarks/results/baryons/``). With ``conserve=True`` (default) the
painted ``total`` is rescaled to the mean of the input dark matter (mass conservation) and
``gas`` to ``gas_fraction`` times it (the training set's mean gas density in units of the
mean baryon density).

Files: :meth:`BaryonPainter.save` writes ``name.keras`` and a sidecar ``name.json`` (format,
versions, configuration); :func:`load_baryon_painter` reads and checks both.
"""
from __future__ import annotations

import json
from numbers import Integral, Real
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from astrogen.errors import ConfigError, ModelError
from astrogen.models.layers_periodic import PeriodicPad3D

__all__ = ["BaryonPainter", "load_baryon_painter", "FIELDS", "FLOORS", "SIDECAR_FORMAT",
           "DM_EXPONENTS", "forward_targets", "inverse_targets"]

#: painted fields, in channel order
FIELDS = ("total", "gas", "temperature", "pressure")
#: floors applied before the logarithms (dimensionless densities; K; keV cm^-3)
FLOORS = {"dm": 1e-2, "total": 1e-2, "gas": 1e-2, "temperature": 1e2, "pressure": 1e-14}
_LOG10 = {"total": False, "gas": False, "temperature": True, "pressure": True}
#: exponent ``a`` of the field a box without haloes gets from its dark matter alone
#: (``total = gas = dm``; photo-ionised gas ``T ~ gas^(2/3)``, ``P_e ~ gas^(5/3)``); with
#: ``residual=True`` the painter learns ``log f - a log dm`` (same log base as the field)
DM_EXPONENTS = {"total": 1.0, "gas": 1.0, "temperature": 2.0 / 3.0, "pressure": 5.0 / 3.0}
#: bound (natural-log units) of the per-cell log-scale offset of a heteroscedastic painter
_HETERO_BOUND = 2.0

SIDECAR_FORMAT = "astrogen.baryon_painter/1"


def _dm_logs(dm, shape) -> tuple[np.ndarray, np.ndarray]:
    """``(ln, log10)`` of ``max(dm, floor)``, or zeros of ``shape`` when ``dm`` is None."""
    if dm is None:
        z = np.zeros(shape)
        return z, z
    ln = np.log(np.maximum(np.asarray(dm, np.float64), FLOORS["dm"]))
    return ln, ln / np.log(10.0)


def forward_targets(fields: dict, dm=None) -> np.ndarray:
    """Physical fields -> unstandardised targets, shape ``(..., 4)``.

    Parameters
    ----------
    fields : dict of array_like
        ``total``, ``gas`` (dimensionless), ``temperature`` (K), ``pressure`` (keV cm^-3).
    dm : array_like, optional
        Dark-matter ``1 + delta`` of the same shape: the targets are then the residuals
        ``log f - DM_EXPONENTS[f] log max(dm, floor)`` (``ln`` for the densities, ``log10``
        for temperature and pressure), zero where the gas just follows the dark matter.
    """
    out = []
    ln_dm, lg_dm = _dm_logs(dm, np.shape(fields[FIELDS[0]]))
    for f in FIELDS:
        v = np.maximum(np.asarray(fields[f], np.float64), FLOORS[f])
        if _LOG10[f]:
            out.append(np.log10(v) - DM_EXPONENTS[f] * lg_dm)
        else:
            out.append(np.log(v) - DM_EXPONENTS[f] * ln_dm)
    return np.stack(out, axis=-1)


def inverse_targets(t: np.ndarray, dm=None) -> dict:
    """Unstandardised targets ``(..., 4)`` -> physical fields (inverse of
    :func:`forward_targets` with the same ``dm``; ``dm`` broadcasts against ``t[..., 0]``)."""
    t = np.asarray(t, np.float64)
    ln_dm, lg_dm = _dm_logs(dm, t.shape[:-1])
    return {f: (10.0 ** (t[..., i] + DM_EXPONENTS[f] * lg_dm) if _LOG10[f]
                else np.exp(t[..., i] + DM_EXPONENTS[f] * ln_dm))
            for i, f in enumerate(FIELDS)}


def _pconv(x, filters: int, stride: int = 1, name: str | None = None, act: bool = True):
    x = PeriodicPad3D(1)(x)
    x = keras.layers.Conv3D(filters, 3, strides=stride, padding="valid", name=name)(x)
    return keras.layers.LeakyReLU(0.2)(x) if act else x


def _build_decoder(channels, latent_channels: int, n_out: int = len(FIELDS)) -> keras.Model:
    c0, c1, c2 = channels
    x_in = keras.Input((None, None, None, 1), name="dm")
    z_in = keras.Input((None, None, None, latent_channels), name="z")
    e1 = _pconv(_pconv(x_in, c0), c0)
    e2 = _pconv(_pconv(e1, c1, stride=2), c1)
    b = _pconv(e2, c2, stride=2)
    b = keras.layers.Concatenate()([b, z_in])
    b = _pconv(_pconv(b, c2), c2)
    u = _pconv(keras.layers.UpSampling3D(2)(b), c1)
    u = _pconv(keras.layers.Concatenate()([u, e2]), c1)
    u = _pconv(keras.layers.UpSampling3D(2)(u), c0)
    u = _pconv(keras.layers.Concatenate()([u, e1]), c0)
    out = keras.layers.Conv3D(n_out, 1, name="painter_mean")(u)
    return keras.Model([x_in, z_in], out, name="painter_decoder")


def _build_encoder(channels, latent_channels: int) -> keras.Model:
    c0, c1, c2 = channels
    inp = keras.Input((None, None, None, 1 + len(FIELDS)), name="dm_and_gas")
    h = _pconv(inp, c0)
    h = _pconv(h, c1, stride=2)
    h = _pconv(h, c2, stride=2)
    h = _pconv(h, c2)
    out = keras.layers.Conv3D(2 * latent_channels, 1, name="posterior")(h)
    return keras.Model(inp, out, name="painter_encoder")


def _norm_pair(v, key: str) -> list[float]:
    try:
        m, s = (float(a) for a in v)
    except (TypeError, ValueError):
        raise ConfigError("must be [mean, std].", key=key, received={key: v}) from None
    if not (np.isfinite(m) and s > 0):
        raise ConfigError("must be [finite mean, std > 0].", key=key, received={key: v})
    return [m, s]


@keras.saving.register_keras_serializable(package="astrogen")
class BaryonPainter(keras.Model):
    """Conditional VAE painting gas fields onto a 3-D dark-matter density (see module).

    Parameters
    ----------
    channels : list of 3 int
        Filters of the U-Net levels (full, 1/2, 1/4 resolution).
    latent_channels : int
        Latent channels per cell of the 1/4-resolution grid.
    beta : float
        Weight of the KL term (1: the ELBO).
    margin : int
        Cells excluded from the loss on each face of a training crop (crops of a periodic
        box are not periodic; their padded faces see the wrong neighbours).
    input_norm : [float, float]
        Mean and std of ``ln max(dm, floor)`` over the training set.
    target_norm : list of 4 [float, float]
        Mean and std of each transformed target.
    gas_fraction : float
        Mean painted gas density in units of the mean baryon density, per unit mean matter
        (the training set's ``mean(gas) / mean(dm)``), used by ``conserve``.
    meta : dict
        Free-form provenance (data set, cell size in Mpc/h, redshift, cosmology, training).
    residual : bool
        Learn the targets as residuals over what the dark matter alone implies
        (:data:`DM_EXPONENTS`, :func:`forward_targets` with ``dm``): the baryonified total
        matter is then ``dm`` times a learned correction, so the matter suppression is a
        small correction instead of a field painted from scratch. False: the absolute
        fields (format of the first shipped painter).
    heteroscedastic : bool
        The decoder also gives a per-cell log-scale of each field's likelihood (offset of
        the per-field ``log_sigma``, bounded to +-2 in ln units), so that cells of uncertain
        value (halo cores) get wider likelihoods and their own lognormal mean correction in
        :meth:`paint`.
    """

    def __init__(self, channels=(8, 16, 32), latent_channels: int = 2, beta: float = 1.0,
                 margin: int = 4, input_norm=(0.0, 1.0), target_norm=None,
                 gas_fraction: float = 1.0, meta: dict | None = None, residual: bool = False,
                 heteroscedastic: bool = False, **kwargs):
        super().__init__(**kwargs)
        ch = list(channels) if isinstance(channels, (list, tuple)) else None
        if ch is None or len(ch) != 3 or any(isinstance(c, bool) or not isinstance(
                c, Integral) or c < 1 for c in ch):
            raise ConfigError("must be a list of 3 positive integers.", key="channels",
                              received={"channels": channels})
        if isinstance(latent_channels, bool) or not isinstance(latent_channels, Integral) \
                or latent_channels < 1:
            raise ConfigError("must be an integer >= 1.", key="latent_channels",
                              received={"latent_channels": latent_channels})
        if isinstance(beta, bool) or not isinstance(beta, Real) or not beta >= 0:
            raise ConfigError("must be a number >= 0.", key="beta", received={"beta": beta})
        if isinstance(margin, bool) or not isinstance(margin, Integral) or margin < 0:
            raise ConfigError("must be an integer >= 0.", key="margin",
                              received={"margin": margin})
        if isinstance(gas_fraction, bool) or not isinstance(gas_fraction, Real) \
                or not gas_fraction > 0:
            raise ConfigError("must be a number > 0.", key="gas_fraction",
                              received={"gas_fraction": gas_fraction})
        for key, v in (("residual", residual), ("heteroscedastic", heteroscedastic)):
            if not isinstance(v, (bool, np.bool_)):
                raise ConfigError("must be true or false.", key=key, received={key: v})
        tn = [[0.0, 1.0]] * len(FIELDS) if target_norm is None else list(target_norm)
        if len(tn) != len(FIELDS):
            raise ConfigError(f"must hold {len(FIELDS)} [mean, std] pairs.",
                              key="target_norm", received={"target_norm": target_norm})
        self.channels = [int(c) for c in ch]
        self.latent_channels = int(latent_channels)
        self.beta = float(beta)
        self.margin = int(margin)
        self.input_norm = _norm_pair(input_norm, "input_norm")
        self.target_norm = [_norm_pair(p, "target_norm") for p in tn]
        self.gas_fraction = float(gas_fraction)
        self.meta = dict(meta or {})
        self.residual = bool(residual)
        self.heteroscedastic = bool(heteroscedastic)
        self.decoder = _build_decoder(self.channels, self.latent_channels,
                                      len(FIELDS) * (2 if self.heteroscedastic else 1))
        self.encoder = _build_encoder(self.channels, self.latent_channels)
        self.log_sigma = self.add_weight(shape=(len(FIELDS),), initializer="zeros",
                                         name="log_sigma")
        self.built = True

    def get_config(self) -> dict:
        return {"name": self.name, "trainable": self.trainable, "channels": self.channels,
                "latent_channels": self.latent_channels, "beta": self.beta,
                "margin": self.margin, "input_norm": self.input_norm,
                "target_norm": self.target_norm, "gas_fraction": self.gas_fraction,
                "meta": self.meta, "residual": self.residual,
                "heteroscedastic": self.heteroscedastic}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    # ------------------------------------------------------------------ transforms
    def standardize_input(self, dm: np.ndarray) -> np.ndarray:
        """``1 + delta_dm`` -> network input (float32, same shape)."""
        m, s = self.input_norm
        return ((np.log(np.maximum(np.asarray(dm, np.float64), FLOORS["dm"])) - m) / s
                ).astype(np.float32)

    def standardize_targets(self, fields: dict, dm=None) -> np.ndarray:
        """Physical fields -> standardised targets ``(..., 4)`` float32 (``dm``, the dark
        matter ``1 + delta`` of the same cells, is needed by a ``residual`` painter)."""
        if self.residual and dm is None:
            raise ModelError("a residual painter needs the dark matter.", key="dm")
        t = forward_targets(fields, dm if self.residual else None)
        mu = np.array([p[0] for p in self.target_norm])
        sd = np.array([p[1] for p in self.target_norm])
        return ((t - mu) / sd).astype(np.float32)

    def destandardize(self, y: np.ndarray, dm=None) -> dict:
        """Standardised network outputs ``y`` (the 4 means) -> the physical gas fields (dict
        of arrays with the data set's units; ``dm`` as in :meth:`standardize_targets`)."""
        if self.residual and dm is None:
            raise ModelError("a residual painter needs the dark matter.", key="dm")
        mu = np.array([p[0] for p in self.target_norm])
        sd = np.array([p[1] for p in self.target_norm])
        return inverse_targets(np.asarray(y, np.float64)[..., :len(FIELDS)] * sd + mu,
                               dm if self.residual else None)

    def _split(self, out):
        """Decoder output -> (means, log-scales) of the standardised targets."""
        nf = len(FIELDS)
        if self.heteroscedastic:
            raw = out[..., nf:]
            return out[..., :nf], self.log_sigma + _HETERO_BOUND * tf.tanh(
                raw / _HETERO_BOUND)
        return out, self.log_sigma + tf.zeros_like(out)

    def latent_shape(self, n: int) -> tuple[int, int, int, int]:
        """Shape of the latent cube for a box of ``n`` cells a side (``n`` a multiple of 4)."""
        if n % 4:
            raise ModelError("the box side must be a multiple of 4 cells.", key="dm",
                             received={"n_grid": n})
        return (n // 4,) * 3 + (self.latent_channels,)

    # ------------------------------------------------------------------ model
    def posterior(self, x, y, training: bool = False):
        """``q(z | x, y)``: a :class:`tfp.distributions.Normal` on the latent grid."""
        import tensorflow_probability as tfp

        h = self.encoder(tf.concat([x, y], axis=-1), training=training)
        mu, raw = tf.split(h, 2, axis=-1)
        return tfp.distributions.Normal(mu, tf.nn.softplus(raw) + 1e-4)

    def call(self, inputs, training=False):
        """``[x, z]`` -> means of the standardised targets (then, if ``heteroscedastic``,
        the raw per-cell log-scale offsets)."""
        x, z = inputs
        return self.decoder([x, z], training=training)

    def losses_of(self, x, y, eps, training: bool = False) -> dict:
        """Loss terms of a batch: ``x`` (B, n, n, n, 1) network input, ``y`` (B, n, n, n, 4)
        standardised targets, ``eps`` standard normals of the latent grid's shape.

        ``nll``: mean negative log-likelihood per target value over the crop's interior
        (``margin`` cells off each face); ``kl``: KL(q || N(0, I)) summed over the latent
        grid, per target value; ``loss = nll + beta kl``."""
        import tensorflow_probability as tfp

        tfd = tfp.distributions
        q = self.posterior(x, y, training=training)
        z = q.loc + q.scale * eps
        mean, log_scale = self._split(self.decoder([x, z], training=training))
        m = self.margin
        if m:
            mean, y = mean[:, m:-m, m:-m, m:-m], y[:, m:-m, m:-m, m:-m]
            log_scale = log_scale[:, m:-m, m:-m, m:-m]
        like = tfd.Normal(mean, tf.exp(log_scale))
        nll = -tf.reduce_mean(like.log_prob(y))
        n_out = tf.cast(tf.size(y), tf.float32)
        kl = tf.reduce_sum(tfd.kl_divergence(q, tfd.Normal(0.0, 1.0))) / n_out
        return {"loss": nll + self.beta * kl, "nll": nll, "kl": kl,
                "mse": tf.reduce_mean(tf.square(mean - y))}

    def make_train_step(self, optimizer):
        """A compiled ``step(x, y, eps) -> loss terms`` applying one optimizer update."""
        variables = self.trainable_variables

        @tf.function(reduce_retracing=True)
        def step(x, y, eps):
            with tf.GradientTape() as tape:
                out = self.losses_of(x, y, eps, training=True)
            grads = tape.gradient(out["loss"], variables)
            optimizer.apply_gradients(zip(grads, variables))
            return out

        return step

    # ------------------------------------------------------------------ painting
    def residual_scale(self, log_scale=None) -> dict:
        """The likelihood's width per field in natural-log units of the physical field
        (``exp(log_sigma) * std`` of the transformed target, times ``ln 10`` for the
        ``log10`` fields); with ``log_scale`` (per-cell log-scales ``(..., 4)`` of a
        heteroscedastic painter) arrays of those cells' widths."""
        ls = self.log_sigma.numpy() if log_scale is None else log_scale
        sig = np.exp(np.asarray(ls, np.float64))
        out = {f: sig[..., i] * self.target_norm[i][1] * (np.log(10.0) if _LOG10[f]
                                                          else 1.0)
               for i, f in enumerate(FIELDS)}
        return {f: float(v) for f, v in out.items()} if log_scale is None else out

    def paint(self, dm, n_samples: int = 1, seed: int = 0, conserve: bool = True,
              temperature: float = 1.0, eps: np.ndarray | None = None,
              mean_correct: bool = True) -> dict:
        """Paint gas fields onto a periodic dark-matter box.

        Parameters
        ----------
        dm : array_like, shape (n, n, n)
            ``1 + delta`` of the dark matter (``n`` a multiple of 4; cell size that of the
            training set, ``meta["cell_size"]`` Mpc/h).
        n_samples : int
            Realisations (one latent draw each).
        seed : int
            Seed of the latent draws (``numpy.random.default_rng(seed)``).
        conserve : bool
            Rescale ``total`` to the mean of ``dm`` and ``gas`` to ``gas_fraction`` x it.
        temperature : float
            Scale of the latent draws (0: the latent mean, one deterministic field).
        eps : numpy.ndarray, optional
            The latent standard normals, shape ``(n_samples,) + latent_shape(n)`` (instead
            of drawing them from ``seed``).
        mean_correct : bool
            Multiply ``temperature`` and ``pressure`` by ``exp(s^2 / 2)``, ``s`` the
            likelihood's width in ln units (:meth:`residual_scale`; per cell for a
            heteroscedastic painter): the decoder gives the conditional mean of the
            logarithm (a median), this is the mean of a lognormal of that width (the density
            fields are set by ``conserve`` instead).

        Returns
        -------
        dict of numpy.ndarray, each of shape (n_samples, n, n, n)
            ``total`` (1 + delta), ``gas`` (/ mean baryon density), ``temperature`` (K),
            ``pressure`` (keV cm^-3).
        """
        dm = np.asarray(dm, np.float64)
        if dm.ndim != 3 or len(set(dm.shape)) != 1:
            raise ModelError("dm must be a cubic 3-D grid.", key="dm",
                             received={"shape": dm.shape})
        if isinstance(n_samples, bool) or not isinstance(n_samples, Integral) \
                or n_samples < 1:
            raise ConfigError("must be an integer >= 1.", key="n_samples",
                              received={"n_samples": n_samples})
        shape = (int(n_samples),) + self.latent_shape(dm.shape[0])
        if eps is None:
            eps = np.random.default_rng(int(seed)).standard_normal(shape)
        eps = np.asarray(eps, np.float32) * float(temperature)
        if eps.shape != shape:
            raise ModelError("eps has the wrong shape.", key="eps",
                             received={"shape": eps.shape, "expected": shape})
        x = tf.constant(self.standardize_input(dm)[None, ..., None])
        outs, scales = [], []
        for i in range(shape[0]):
            mean, log_scale = self._split(self.decoder([x, tf.constant(eps[i:i + 1])],
                                                       training=False))
            outs.append(np.asarray(mean)[0])
            if self.heteroscedastic and mean_correct:
                scales.append(np.asarray(log_scale)[0])
        fields = self.destandardize(np.stack(outs), dm)
        if mean_correct:
            scale = self.residual_scale(np.stack(scales) if scales else None)
            for f in ("temperature", "pressure"):
                fields[f] *= np.exp(0.5 * scale[f] ** 2)
        if conserve:
            target = float(np.mean(dm))
            fields["total"] *= target / np.mean(fields["total"], axis=(1, 2, 3),
                                                keepdims=True)
            fields["gas"] *= self.gas_fraction * target / np.mean(
                fields["gas"], axis=(1, 2, 3), keepdims=True)
        return {k: v.astype(np.float32) for k, v in fields.items()}

    # ------------------------------------------------------------------ files
    def sidecar(self) -> dict:
        """The JSON sidecar written next to the ``.keras`` file (format, configuration, training card)."""
        from astrogen.version import __version__

        return {"format": SIDECAR_FORMAT, "model": "BaryonPainter",
                "astrogen_version": __version__, "keras_version": keras.__version__,
                "tensorflow_version": tf.__version__,
                "reference": "Horowitz et al. 2021 (arXiv:2106.12675), trained on "
                             "BaryonForge (Anbajagane et al. 2024) baryonification",
                "fields": list(FIELDS), "config": self.get_config()}

    def save(self, filepath, overwrite: bool = True, **kwargs) -> None:
        """Write ``filepath`` (``.keras``) and its sidecar ``.json``."""
        path = Path(filepath)
        if path.suffix != ".keras":
            raise ConfigError("a BaryonPainter file name must end in '.keras'.", key="path",
                              received={"path": str(filepath)})
        super().save(str(path), overwrite=overwrite, **kwargs)
        path.with_suffix(".json").write_text(json.dumps(self.sidecar(), indent=2) + "\n")


def load_baryon_painter(path) -> BaryonPainter:
    """Load a :class:`BaryonPainter` saved by :meth:`BaryonPainter.save` (``.keras`` or its
    ``.json``); :class:`~astrogen.errors.ModelError` on a missing, foreign or mismatched
    file."""
    p = Path(path)
    if p.suffix == ".json":
        p = p.with_suffix(".keras")
    side = p.with_suffix(".json")
    if not p.is_file() or not side.is_file():
        raise ModelError("baryon painter file or sidecar not found.", key=str(p))
    try:
        meta = json.loads(side.read_text())
    except (OSError, ValueError) as exc:
        raise ModelError(f"unreadable sidecar: {exc}.", key=str(side)) from None
    if meta.get("format") != SIDECAR_FORMAT:
        raise ModelError(f"not a baryon painter sidecar (expected '{SIDECAR_FORMAT}').",
                         key=str(side), received={"format": meta.get("format")})
    try:
        model = keras.saving.load_model(str(p), compile=False)
    except Exception as exc:  # noqa: BLE001 - any Keras failure is a bad model file
        raise ModelError(f"cannot load the Keras file: {type(exc).__name__}: {exc}",
                         key=str(p)) from exc
    if not isinstance(model, BaryonPainter):
        raise ModelError("the Keras file does not hold a BaryonPainter.", key=str(p),
                         received={"class": type(model).__name__})
    defaults = {"residual": False, "heteroscedastic": False}  # absent from format-1 files
    for key in ("channels", "latent_channels", "input_norm", "target_norm", "residual",
                "heteroscedastic"):
        if meta["config"].get(key, defaults.get(key)) != model.get_config()[key]:
            raise ModelError("sidecar and model file disagree.", key=f"{side.name}:{key}")
    return model

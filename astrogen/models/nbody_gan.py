r"""WGAN-GP emulator of projected N-body density slabs (Perraudin et al. 2019 style).

The generator maps a projected *linear* density slab (the initial conditions, same
projection) plus a white-noise channel to the projected evolved density ``1 + delta`` of the
particle-mesh simulation, in the space of the invertible pixel transform of Perraudin et al.
(2019, arXiv:1908.05519)::

    s(x) = 2 x / (x + a) - 1            x = 1 + delta >= 0  ->  s in [-1, 1)
    x(s) = a (1 + s) / (1 - s)          its inverse

which compresses the long high-density tail (``a``: the density mapped to ``s = 0``). The
critic sees ``(s, linear)`` pairs (conditional WGAN, Gulrajani et al. 2017 gradient
penalty). Both networks are small fully-convolutional nets with *periodic* padding, since
the slabs are periodic.

Modes
-----
conditional
    ``emulate(linear_slabs, seed)``: the evolved field of these initial conditions.
unconditional
    ``sample(n, seed)``: new fields. The generator's latent is the linear slab itself, whose
    distribution is known exactly (a Gaussian field with the Eisenstein & Hu spectrum, drawn
    in 3-D and projected like the training data), plus the noise channel; so sampling is
    "draw a Gaussian box, project, generate", with no separate network.

Serialization: :meth:`NBodyGAN.save` writes ``<name>.keras`` (the generator; a functional
Keras model whose custom layer is registered) and ``<name>.json`` (transform, condition
scale, geometry, training provenance); the critic goes to ``<name>_critic.keras`` if asked.

References: Rodriguez et al. 2018 (arXiv:1801.09070), He et al. 2019 (arXiv:1811.06533),
Perraudin et al. 2019 (arXiv:1908.05519), Gulrajani et al. 2017 (arXiv:1704.00028).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from astrogen.errors import ModelError

__all__ = ["PixelTransform", "PeriodicPad2D", "build_generator", "build_critic", "NBodyGAN",
           "load_nbody_gan", "gradient_penalty", "critic_loss", "generator_loss"]


class PixelTransform:
    """``s(x) = 2x/(x+a) - 1`` and its inverse (numpy or TF tensors)."""

    def __init__(self, a: float = 1.0):
        if not (float(a) > 0):
            raise ModelError("the pixel transform needs a > 0.", key="a", received={"a": a})
        self.a = float(a)

    def forward(self, x):
        """Density ``x = 1 + delta`` (>= 0) -> ``s`` in [-1, 1)."""
        if isinstance(x, np.ndarray) or np.isscalar(x):
            x = np.maximum(np.asarray(x, dtype=np.float64), 0.0)
        return 2.0 * x / (x + self.a) - 1.0

    def inverse(self, s, s_max: float = 1.0 - 1e-6):
        """``s`` -> ``x`` (``s`` clipped to ``[-1, s_max]`` so that ``x`` stays finite)."""
        if isinstance(s, np.ndarray) or np.isscalar(s):
            s = np.clip(np.asarray(s, dtype=np.float64), -1.0, s_max)
        else:
            import tensorflow as tf

            s = tf.clip_by_value(s, -1.0, s_max)
        return self.a * (1.0 + s) / (1.0 - s)


def _keras():
    import keras

    return keras


def _register():
    keras = _keras()

    @keras.saving.register_keras_serializable(package="astrogen_nbody")
    class PeriodicPad2D(keras.layers.Layer):
        """Periodic (circular) padding of ``p`` pixels on both spatial axes (NHWC)."""

        def __init__(self, pad: int = 1, **kwargs):
            super().__init__(**kwargs)
            self.pad = int(pad)

        def call(self, x):
            from keras import ops

            p = self.pad
            if p == 0:
                return x
            x = ops.concatenate([x[:, -p:], x, x[:, :p]], axis=1)
            return ops.concatenate([x[:, :, -p:], x, x[:, :, :p]], axis=2)

        def compute_output_shape(self, shape):
            s = list(shape)
            for i in (1, 2):
                if s[i] is not None:
                    s[i] += 2 * self.pad
            return tuple(s)

        def get_config(self):
            return {**super().get_config(), "pad": self.pad}

    return PeriodicPad2D


_PAD_CLASS = None


def PeriodicPad2D(pad: int = 1, **kwargs):  # noqa: N802 - a layer factory
    """The registered periodic-padding layer (class built on first use: Keras is imported
    lazily)."""
    global _PAD_CLASS
    if _PAD_CLASS is None:
        _PAD_CLASS = _register()
    return _PAD_CLASS(pad, **kwargs)


def pconv(x, filters: int, kernel: int = 3, stride: int = 1, name: str | None = None,
          activation: bool = True):
    """Periodic-padded convolution (+ LeakyReLU 0.2)."""
    keras = _keras()
    pad = kernel // 2
    if pad:
        x = PeriodicPad2D(pad)(x)
    x = keras.layers.Conv2D(filters, kernel, strides=stride, padding="valid", name=name)(x)
    if activation:
        x = keras.layers.LeakyReLU(0.2)(x)
    return x


def periodic_unet(inputs, channels, out_channels: int, out_activation: str | None,
                  name: str):
    """A small U-Net with periodic padding: two convolutions per level, strided
    convolutions down, nearest upsampling + convolution up, concatenated skips."""
    keras = _keras()
    x = inputs
    skips = []
    for i, c in enumerate(channels):
        if i > 0:
            x = pconv(x, c, 3, stride=2)
        x = pconv(x, c)
        x = pconv(x, c)
        skips.append(x)
    for c, skip in zip(reversed(channels[:-1]), reversed(skips[:-1])):
        x = keras.layers.UpSampling2D(2, interpolation="nearest")(x)
        x = pconv(x, c)
        x = keras.layers.Concatenate()([x, skip])
        x = pconv(x, c)
        x = pconv(x, c)
    return keras.layers.Conv2D(out_channels, 1, activation=out_activation, name=f"{name}_out")(x)


def build_generator(size: int, channels=(16, 32, 64), noise_channels: int = 1):
    """Generator: (linear slab / scale, noise) -> s(1 + delta). Inputs and output NHWC."""
    keras = _keras()
    cond = keras.Input((size, size, 1), name="linear")
    noise = keras.Input((size, size, noise_channels), name="noise")
    x = keras.layers.Concatenate()([cond, noise])
    out = periodic_unet(x, list(channels), 1, "tanh", "generator")
    return keras.Model([cond, noise], out, name="nbody_generator")


def build_critic(size: int, channels=(16, 32, 64, 64)):
    """Critic: (s field, linear slab / scale) -> a real number (no normalisation layers, as
    the gradient penalty requires)."""
    keras = _keras()
    field = keras.Input((size, size, 1), name="field")
    cond = keras.Input((size, size, 1), name="linear")
    x = keras.layers.Concatenate()([field, cond])
    x = pconv(x, channels[0])
    for c in channels[1:]:
        x = pconv(x, c, 3, stride=2)
        x = pconv(x, c)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(64)(x)
    x = keras.layers.LeakyReLU(0.2)(x)
    out = keras.layers.Dense(1, name="critic_out")(x)
    return keras.Model([field, cond], out, name="nbody_critic")


# ---------------------------------------------------------------------------- losses
def gradient_penalty(critic, real, fake, cond, eps):
    """Gulrajani et al. (2017): ``mean((||grad_xhat D(xhat)||_2 - 1)^2)`` on random
    interpolates ``xhat = eps real + (1 - eps) fake`` (``eps`` of shape (batch, 1, 1, 1))."""
    import tensorflow as tf

    xhat = eps * real + (1.0 - eps) * fake
    with tf.GradientTape() as tape:
        tape.watch(xhat)
        d = critic([xhat, cond], training=True)
    g = tape.gradient(d, xhat)
    norm = tf.sqrt(tf.reduce_sum(tf.square(g), axis=[1, 2, 3]) + 1e-12)
    return tf.reduce_mean(tf.square(norm - 1.0))


def critic_loss(d_real, d_fake, gp, gp_weight: float):
    """WGAN critic loss ``E[D(fake)] - E[D(real)] + lambda GP`` and the Wasserstein estimate."""
    import tensorflow as tf

    w = tf.reduce_mean(d_real) - tf.reduce_mean(d_fake)
    return -w + gp_weight * gp, w


def smooth_periodic(x, sigma: float):
    """Gaussian smoothing of periodic images ``(B, H, W, C)`` by FFT; ``sigma`` in pixels.

    ``sigma = 0`` returns ``x`` unchanged. The filter is ``exp(-k^2 sigma^2 / 2)`` on the
    discrete wavenumbers, so the mean of each image is kept.
    """
    import numpy as np
    import tensorflow as tf

    if sigma <= 0:
        return x
    h, w = int(x.shape[1]), int(x.shape[2])
    ky = 2 * np.pi * np.fft.fftfreq(h)[:, None]
    kx = 2 * np.pi * np.fft.rfftfreq(w)[None, :]
    filt = tf.constant(np.exp(-0.5 * sigma ** 2 * (ky ** 2 + kx ** 2)), tf.complex64)
    xc = tf.transpose(x, [0, 3, 1, 2])  # FFT over the last two axes
    out = tf.signal.irfft2d(tf.signal.rfft2d(xc) * filt, fft_length=[h, w])
    return tf.transpose(out, [0, 2, 3, 1])


def generator_loss(d_fake, fake, real, l1_weight: float, l1_smoothing: float = 0.0):
    """``-E[D(fake)] + l1_weight * mean|S(fake) - S(real)|``.

    The L1 term, as in pix2pix, ties the conditional output to its initial conditions. With
    ``l1_smoothing`` = sigma > 0 (pixels) both fields are first smoothed with a periodic
    Gaussian ``S``: only the large scales, which the linear field determines, are pulled to
    the N-body field, and the small scales, which it does not, are left to the adversarial
    term (a plain L1 pulls them to their conditional median, which removes small-scale power).
    """
    import tensorflow as tf

    adv = -tf.reduce_mean(d_fake)
    l1 = tf.reduce_mean(tf.abs(smooth_periodic(fake, l1_smoothing)
                               - smooth_periodic(real, l1_smoothing)))
    return adv + l1_weight * l1, adv, l1


# ---------------------------------------------------------------------------- the model
class NBodyGAN:
    """Generator (+ critic when training) with the metadata needed to use them.

    Parameters
    ----------
    size : int
        Slab side in pixels.
    transform_a : float
        ``a`` of the pixel transform.
    cond_scale : float
        Standard deviation of the projected linear slabs (the condition is divided by it).
    channels, critic_channels : sequence of int
        Widths of the generator's U-Net levels and of the critic's levels.
    meta : dict
        Geometry (``box_size``, ``n_grid``, ``slab_thickness``, ``cell_size``, ``redshift``,
        cosmology) and training provenance; saved in the JSON sidecar.
    """

    def __init__(self, size: int = 32, transform_a: float = 1.0, cond_scale: float = 1.0,
                 channels=(16, 32, 64), critic_channels=(16, 32, 64, 64), noise_channels=1,
                 meta: dict | None = None, build_critic_net: bool = True, generator=None):
        self.size = int(size)
        self.transform = PixelTransform(transform_a)
        self.cond_scale = float(cond_scale)
        self.channels = [int(c) for c in channels]
        self.critic_channels = [int(c) for c in critic_channels]
        self.noise_channels = int(noise_channels)
        self.meta = dict(meta or {})
        if self.size % (2 ** (len(self.channels) - 1)):
            raise ModelError("size must be a multiple of 2**(len(channels) - 1).",
                             key="channels", received={"size": size, "channels": channels})
        self.generator = generator if generator is not None else build_generator(
            self.size, self.channels, self.noise_channels)
        self.critic = build_critic(self.size, self.critic_channels) if build_critic_net \
            else None

    # ---- inference --------------------------------------------------------------------
    def config(self) -> dict:
        return {"format": "astrogen.nbody_gan/1", "size": self.size,
                "transform_a": self.transform.a, "cond_scale": self.cond_scale,
                "channels": self.channels, "critic_channels": self.critic_channels,
                "noise_channels": self.noise_channels, "meta": self.meta}

    def noise(self, n: int, seed: int) -> np.ndarray:
        rng = np.random.default_rng(int(seed))
        return rng.standard_normal((n, self.size, self.size, self.noise_channels)).astype(
            np.float32)

    def generate_s(self, linear: np.ndarray, noise: np.ndarray, batch_size: int = 64):
        """Generator output (transformed space) for linear slabs ``(n, size, size)``."""
        lin = np.asarray(linear, np.float32)[..., None] / self.cond_scale
        out = []
        for i in range(0, len(lin), batch_size):
            out.append(np.asarray(self.generator([lin[i:i + batch_size],
                                                  noise[i:i + batch_size]], training=False)))
        return np.concatenate(out, axis=0)[..., 0]

    def emulate(self, linear: np.ndarray, seed: int = 0, batch_size: int = 64) -> np.ndarray:
        """Conditional mode: projected ``1 + delta`` from projected linear slabs.

        Parameters
        ----------
        linear : array (n, size, size) or (size, size)
            Projected linear density contrast at z = 0 (same projection as training).
        seed : int
            Seed of the noise channel.
        """
        lin = np.asarray(linear, np.float32)
        single = lin.ndim == 2
        if single:
            lin = lin[None]
        if lin.shape[1:] != (self.size, self.size):
            raise ModelError(f"the emulator takes {self.size}x{self.size} slabs.",
                             key="linear", received={"shape": lin.shape})
        s = self.generate_s(lin, self.noise(len(lin), seed), batch_size)
        x = self.transform.inverse(s).astype(np.float32)
        return x[0] if single else x

    def draw_linear(self, n: int, seed: int) -> np.ndarray:
        """``n`` projected linear slabs drawn exactly like the training set's (Gaussian boxes
        with the Eisenstein & Hu spectrum, projected; ``n_grid / slab_thickness`` slabs along
        the last axis per box)."""
        from astrogen.cosmology.background import Cosmology
        from astrogen.cosmology.initial import gaussian_field
        from astrogen.cosmology.power import LinearPower
        from astrogen.datasets.nbody_slices import project_slabs
        from astrogen.seeds import derive_seed

        m = self.meta
        try:
            ng, L, t = int(m["n_grid"]), float(m["box_size"]), int(m["slab_thickness"])
        except KeyError as exc:
            raise ModelError(f"the model's metadata lacks {exc}; it cannot draw linear fields.",
                             key="meta") from None
        cosmo = Cosmology.from_dict(m.get("cosmology", {})) if m.get("cosmology") \
            else Cosmology()
        power = LinearPower(cosmo)
        out = []
        b = 0
        while sum(len(o) for o in out) < n:
            d = gaussian_field(ng, L, power, derive_seed(seed, "nbody_gan_sample", b), ndim=3)
            out.append(project_slabs(d, t, axes=(2,)))
            b += 1
        return np.concatenate(out)[:n]

    def sample(self, n: int, seed: int = 0) -> np.ndarray:
        """Unconditional mode: ``n`` new projected ``1 + delta`` slabs."""
        from astrogen.seeds import derive_seed

        lin = self.draw_linear(n, seed)
        return self.emulate(lin, seed=derive_seed(seed, "noise"))

    # ---- files --------------------------------------------------------------------------
    def save(self, path, with_critic: bool = False) -> Path:
        """Write ``path`` (``.keras``, the generator) and its ``.json`` sidecar."""
        path = Path(path)
        if path.suffix != ".keras":
            raise ModelError("the file name must end in .keras.", key="path",
                             received={"path": str(path)})
        path.parent.mkdir(parents=True, exist_ok=True)
        self.generator.save(path)
        path.with_suffix(".json").write_text(json.dumps(self.config(), indent=2) + "\n")
        if with_critic and self.critic is not None:
            self.critic.save(path.with_name(path.stem + "_critic.keras"))
        return path


def load_nbody_gan(path, with_critic: bool = False) -> NBodyGAN:
    """Load what :meth:`NBodyGAN.save` wrote."""
    keras = _keras()
    PeriodicPad2D(1)  # registers the custom layer before deserialising
    path = Path(path)
    side = path.with_suffix(".json")
    if not (path.is_file() and side.is_file()):
        raise ModelError("missing model file or its .json sidecar.", key="model",
                         received={"model": str(path)})
    cfg = json.loads(side.read_text())
    if cfg.get("format") != "astrogen.nbody_gan/1":
        raise ModelError("not an astrogen N-body GAN file.", key="model",
                         received={"format": cfg.get("format")})
    gen = keras.models.load_model(path, compile=False)
    model = NBodyGAN(size=cfg["size"], transform_a=cfg["transform_a"],
                     cond_scale=cfg["cond_scale"], channels=cfg["channels"],
                     critic_channels=cfg["critic_channels"],
                     noise_channels=cfg["noise_channels"], meta=cfg["meta"],
                     build_critic_net=False, generator=gen)
    crit = path.with_name(path.stem + "_critic.keras")
    if with_critic and crit.is_file():
        model.critic = keras.models.load_model(crit, compile=False)
    return model

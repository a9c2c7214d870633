r"""WGAN-GP emulator of projected N-body density slabs (Perraudin et al. 2019 style).

The generator maps a condition slab plus a white-noise channel to the projected evolved
density ``1 + delta`` of the particle-mesh simulation. The condition is either the projected
*linear* density slab (the initial conditions, same projection; ``condition="linear"``) or
the projected density of the particles moved by 2LPT to the output time
(``condition="lpt"``, after He et al. 2019: the generator is then residual and only corrects
the LPT field, see :func:`build_generator`). Fields live in the space of the invertible pixel
transform of Perraudin et al. (2019, arXiv:1908.05519)::

    s(x) = 2 x / (x + a) - 1            x = 1 + delta >= 0  ->  s in [-1, 1)
    x(s) = a (1 + s) / (1 - s)          its inverse

which compresses the long high-density tail (``a``: the density mapped to ``s = 0``). The
critic sees ``(s, condition)`` pairs (conditional WGAN, Gulrajani et al. 2017 gradient
penalty). Both networks are small fully-convolutional nets with *periodic* padding, since
the slabs are periodic.

Modes
-----
conditional
    ``emulate_field(delta_linear_3d, seed)`` (or ``emulate(condition_slabs, seed)``): the
    evolved field of these initial conditions.
unconditional
    ``sample(n, seed)``: new fields. The generator's latent is the condition itself, whose
    distribution is known exactly (a Gaussian field with the Eisenstein & Hu spectrum, drawn
    in 3-D, moved by LPT if so conditioned, and projected like the training data), plus the
    noise channel; so sampling is "draw a Gaussian box, project, generate", with no separate
    network.

Serialization: :meth:`NBodyGAN.save` writes ``<name>.keras`` (the generator; a functional
Keras model whose custom layers are registered) and ``<name>.json`` (transform, condition
kind and scale, geometry, training provenance); the critic goes to ``<name>_critic.keras`` if asked.

References: Rodriguez et al. 2018 (arXiv:1801.09070), He et al. 2019 (arXiv:1811.06533),
Perraudin et al. 2019 (arXiv:1908.05519), Gulrajani et al. 2017 (arXiv:1704.00028).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from astrogen.errors import ModelError

__all__ = ["PixelTransform", "PeriodicPad2D", "TransformedResidual", "build_generator",
           "build_critic", "NBodyGAN", "load_nbody_gan", "gradient_penalty", "critic_loss",
           "generator_loss", "power_loss", "CONDITIONS", "read_sidecar"]


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

    @keras.saving.register_keras_serializable(package="astrogen_nbody")
    class TransformedResidual(keras.layers.Layer):
        """``tanh(atanh(s_cond) + h)``: the generator's output as a correction of its
        condition ``s_cond`` (in ``[-1, 1)``, the pixel-transformed LPT field) by the
        network's head ``h``, added before the squashing so the output stays in (-1, 1)."""

        def __init__(self, clip: float = 1.0 - 1e-4, **kwargs):
            super().__init__(**kwargs)
            self.clip = float(clip)

        def call(self, inputs):
            from keras import ops

            cond, head = inputs
            c = ops.clip(cond, -self.clip, self.clip)
            return ops.tanh(0.5 * ops.log((1.0 + c) / (1.0 - c)) + head)

        def compute_output_shape(self, shapes):
            return tuple(shapes[1])

        def get_config(self):
            return {**super().get_config(), "clip": self.clip}

    return {"PeriodicPad2D": PeriodicPad2D, "TransformedResidual": TransformedResidual}


_LAYERS: dict = {}


def _layer(name: str):
    """A registered custom layer class (built on first use: Keras is imported lazily)."""
    if not _LAYERS:
        _LAYERS.update(_register())
    return _LAYERS[name]


def PeriodicPad2D(pad: int = 1, **kwargs):  # noqa: N802 - a layer factory
    """The registered periodic-padding layer."""
    return _layer("PeriodicPad2D")(pad, **kwargs)


def TransformedResidual(**kwargs):  # noqa: N802 - a layer factory
    """The registered ``tanh(atanh(condition) + head)`` output layer."""
    return _layer("TransformedResidual")(**kwargs)


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


def build_generator(size: int, channels=(16, 32, 64), noise_channels: int = 1,
                    residual: bool = False):
    """Generator: (condition, noise) -> s(1 + delta). Inputs and output NHWC.

    ``residual=False``: the condition is the linear slab / scale and the output a tanh of the
    U-Net head. ``residual=True``: the condition is the pixel-transformed LPT slab and the
    output ``tanh(atanh(condition) + head)`` (:func:`TransformedResidual`), so an untrained
    generator already returns the LPT field and the network learns the correction.
    """
    keras = _keras()
    cond = keras.Input((size, size, 1), name="lpt" if residual else "linear")
    noise = keras.Input((size, size, noise_channels), name="noise")
    x = keras.layers.Concatenate()([cond, noise])
    if residual:
        head = periodic_unet(x, list(channels), 1, None, "generator")
        out = TransformedResidual(name="generator_residual")([cond, head])
    else:
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


def power_loss(fake, real, transform: "PixelTransform", s_max: float = 0.999):
    """Mean squared difference of the log power spectra of two batches of fields.

    Both batches ``(B, H, W, 1)`` of transformed fields ``s`` are mapped back to the density
    ``x`` (``s`` clipped at ``s_max``), their 2-D power ``|FFT(x - mean x)|^2`` is averaged
    over the batch in annuli of integer ``|k|`` (in units of the fundamental mode, 1 to
    ``H/2``), and the loss is ``mean_k (ln P_fake(k) - ln P_real(k))^2``. The L1 term pulls
    each pixel to its conditional median, which removes the power of the unpredictable small
    scales; this term asks for the right amount of it (a summary-statistic loss).
    """
    import tensorflow as tf

    h, w = int(fake.shape[1]), int(fake.shape[2])
    ky = np.fft.fftfreq(h) * h
    kx = np.fft.rfftfreq(w) * w
    kk = np.rint(np.hypot(ky[:, None], kx[None, :])).astype(int)
    n_bins = h // 2
    onehot = np.zeros(kk.shape + (n_bins,), np.float32)
    for b in range(1, n_bins + 1):
        onehot[..., b - 1] = kk == b
    # rfft2d keeps half of the plane: weight the columns that stand for two modes by 2
    mult = np.full(kx.shape, 2.0)
    mult[0] = 1.0
    if w % 2 == 0:
        mult[-1] = 1.0
    onehot *= mult[None, :, None]
    onehot /= onehot.sum(axis=(0, 1), keepdims=True)
    binning = tf.constant(onehot)

    def spectrum(s):
        x = transform.inverse(tf.clip_by_value(s[..., 0], -1.0, s_max))
        x = x - tf.reduce_mean(x, axis=[1, 2], keepdims=True)
        p = tf.square(tf.abs(tf.signal.rfft2d(x)))
        return tf.einsum("bij,ijk->k", p, binning) / tf.cast(tf.shape(s)[0], tf.float32)

    d = tf.math.log(spectrum(fake) + 1e-12) - tf.math.log(spectrum(real) + 1e-12)
    return tf.reduce_mean(tf.square(d))


# ---------------------------------------------------------------------------- the model
CONDITIONS = ("linear", "lpt")


class NBodyGAN:
    """Generator (+ critic when training) with the metadata needed to use them.

    Parameters
    ----------
    size : int
        Slab side in pixels.
    transform_a : float
        ``a`` of the pixel transform.
    cond_scale : float
        Standard deviation of the projected linear slabs (``condition="linear"``: the
        condition is divided by it; unused for ``"lpt"``).
    channels, critic_channels : sequence of int
        Widths of the generator's U-Net levels and of the critic's levels.
    noise_channels : int
        White-noise input channels of the generator.
    condition : {"linear", "lpt"}
        What the generator is conditioned on. ``"linear"``: the projected linear density
        contrast at z = 0 (Rodriguez+18 / Perraudin+19 style). ``"lpt"``: the projected
        ``1 + delta`` of the particles moved by ``lpt_order`` LPT to the model's redshift
        (:func:`astrogen.nbody.lpt_field.lpt_density`), pixel-transformed; the generator
        is then residual (:func:`build_generator`), after He et al. (2019).
    lpt_order : int
        1 or 2 (``condition="lpt"``).
    meta : dict
        Geometry (``box_size``, ``n_grid``, ``slab_thickness``, ``cell_size``, ``redshift``,
        cosmology, ``lattice_shift``) and training provenance; saved in the JSON sidecar.
    """

    def __init__(self, size: int = 32, transform_a: float = 1.0, cond_scale: float = 1.0,
                 channels=(16, 32, 64), critic_channels=(16, 32, 64, 64), noise_channels=1,
                 meta: dict | None = None, build_critic_net: bool = True, generator=None,
                 condition: str = "linear", lpt_order: int = 2):
        self.size = int(size)
        self.transform = PixelTransform(transform_a)
        self.cond_scale = float(cond_scale)
        self.channels = [int(c) for c in channels]
        self.critic_channels = [int(c) for c in critic_channels]
        self.noise_channels = int(noise_channels)
        self.meta = dict(meta or {})
        if condition not in CONDITIONS:
            raise ModelError(f"must be one of {list(CONDITIONS)}.", key="condition",
                             received={"condition": condition})
        if lpt_order not in (1, 2):
            raise ModelError("must be 1 or 2.", key="lpt_order",
                             received={"lpt_order": lpt_order})
        self.condition = condition
        self.lpt_order = int(lpt_order)
        if self.size % (2 ** (len(self.channels) - 1)):
            raise ModelError("size must be a multiple of 2**(len(channels) - 1).",
                             key="channels", received={"size": size, "channels": channels})
        self.generator = generator if generator is not None else build_generator(
            self.size, self.channels, self.noise_channels, residual=condition == "lpt")
        self.critic = build_critic(self.size, self.critic_channels) if build_critic_net \
            else None

    # ---- inference --------------------------------------------------------------------
    def config(self) -> dict:
        """The JSON sidecar: format, size (pixels), pixel transform, channels, conditioning and
        metadata.
        """
        return {"format": "astrogen.nbody_gan/1", "size": self.size,
                "transform_a": self.transform.a, "cond_scale": self.cond_scale,
                "channels": self.channels, "critic_channels": self.critic_channels,
                "noise_channels": self.noise_channels, "condition": self.condition,
                "lpt_order": self.lpt_order, "meta": self.meta}

    def noise(self, n: int, seed: int) -> np.ndarray:
        """Standard-normal generator noise, reproducible from ``seed``.

        Parameters
        ----------
        n : int
            Number of samples.
        seed : int
            Seed of ``numpy.random.default_rng``.

        Returns
        -------
        numpy.ndarray
            float32, shape ``(n, size, size, noise_channels)``.
        """
        rng = np.random.default_rng(int(seed))
        return rng.standard_normal((n, self.size, self.size, self.noise_channels)).astype(
            np.float32)

    def _geometry(self) -> tuple[int, float, int]:
        m = self.meta
        try:
            return int(m["n_grid"]), float(m["box_size"]), int(m["slab_thickness"])
        except KeyError as exc:
            raise ModelError(f"the model's metadata lacks {exc}; it cannot project 3-D "
                             "fields.", key="meta") from None

    def _cosmology(self):
        from astrogen.cosmology.background import Cosmology

        c = self.meta.get("cosmology")
        return Cosmology.from_dict(c) if c else Cosmology()

    def condition_slabs(self, delta_linear: np.ndarray, axes=(0, 1, 2)) -> np.ndarray:
        """The generator's condition, in physical units, for every slab of a 3-D box.

        Parameters
        ----------
        delta_linear : numpy.ndarray, shape (n_grid,)*3
            Linear density contrast at z = 0 (dimensionless) on the model's grid.
        axes : sequence of int
            Projection axes; slabs ordered as in
            :func:`astrogen.nbody.slabs.project_slabs`.

        Returns
        -------
        numpy.ndarray, shape (len(axes) * n_grid / slab_thickness, size, size)
            Projected linear delta (``condition="linear"``) or projected ``1 + delta`` of
            the LPT field at the model's redshift (``"lpt"``).
        """
        from astrogen.nbody.slabs import project_slabs

        ng, L, t = self._geometry()
        d = np.asarray(delta_linear, dtype=float)
        if d.shape != (ng,) * 3:
            raise ModelError(f"the emulator takes {ng}^3 linear fields.", key="delta_linear",
                             received={"shape": d.shape})
        if self.condition == "lpt":
            from astrogen.nbody.lpt_field import lpt_density

            d = lpt_density(d, L, self._cosmology(), float(self.meta.get("redshift", 0.0)),
                            order=self.lpt_order,
                            lattice_shift=float(self.meta.get("lattice_shift", 0.25)))
        return project_slabs(d, t, axes=tuple(axes))

    def network_condition(self, slabs: np.ndarray) -> np.ndarray:
        """Condition slabs (physical units, see :meth:`condition_slabs`) -> network input."""
        c = np.asarray(slabs, np.float64)
        if self.condition == "lpt":
            return self.transform.forward(c).astype(np.float32)
        return (c / self.cond_scale).astype(np.float32)

    def generate_s(self, slabs: np.ndarray, noise: np.ndarray, batch_size: int = 64):
        """Generator output (transformed space) for condition slabs ``(n, size, size)``."""
        c = self.network_condition(slabs)[..., None]
        out = []
        for i in range(0, len(c), batch_size):
            out.append(np.asarray(self.generator([c[i:i + batch_size],
                                                  noise[i:i + batch_size]], training=False)))
        return np.concatenate(out, axis=0)[..., 0]

    def emulate(self, slabs: np.ndarray, seed: int = 0, batch_size: int = 64) -> np.ndarray:
        """Conditional mode: projected ``1 + delta`` from condition slabs.

        Parameters
        ----------
        slabs : array (n, size, size) or (size, size)
            The condition in physical units (:meth:`condition_slabs`): the projected linear
            density contrast at z = 0, or the projected LPT ``1 + delta``.
        seed : int
            Seed of the noise channel.
        """
        c = np.asarray(slabs, np.float32)
        single = c.ndim == 2
        if single:
            c = c[None]
        if c.shape[1:] != (self.size, self.size):
            raise ModelError(f"the emulator takes {self.size}x{self.size} slabs.",
                             key="slabs", received={"shape": c.shape})
        s = self.generate_s(c, self.noise(len(c), seed), batch_size)
        x = self.transform.inverse(s).astype(np.float32)
        return x[0] if single else x

    def emulate_field(self, delta_linear: np.ndarray, seed: int = 0, axes=(0, 1, 2),
                      batch_size: int = 64) -> np.ndarray:
        """Conditional mode from a 3-D linear field: every slab along ``axes`` (see
        :meth:`condition_slabs`), projected ``1 + delta`` at the model's redshift."""
        return self.emulate(self.condition_slabs(delta_linear, axes), seed, batch_size)

    def draw_linear_fields(self, n_boxes: int, seed: int):
        """Yield ``n_boxes`` 3-D linear fields drawn exactly like the training set's
        (Gaussian boxes with the Eisenstein & Hu spectrum of the model's cosmology)."""
        from astrogen.cosmology.initial import gaussian_field
        from astrogen.cosmology.power import LinearPower
        from astrogen.seeds import derive_seed

        ng, L, _ = self._geometry()
        power = LinearPower(self._cosmology())
        for b in range(int(n_boxes)):
            yield gaussian_field(ng, L, power, derive_seed(seed, "nbody_gan_sample", b), ndim=3)

    def sample_conditions(self, n: int, seed: int) -> np.ndarray:
        """``n`` condition slabs of fresh linear boxes (``n_grid / slab_thickness`` slabs
        along the last axis per box)."""
        ng, _, t = self._geometry()
        per_box = ng // t
        out = [self.condition_slabs(d, axes=(2,))
               for d in self.draw_linear_fields(-(-int(n) // per_box), seed)]
        return np.concatenate(out)[:n]

    def sample(self, n: int, seed: int = 0) -> np.ndarray:
        """Unconditional mode: ``n`` new projected ``1 + delta`` slabs."""
        from astrogen.seeds import derive_seed

        return self.emulate(self.sample_conditions(n, seed), seed=derive_seed(seed, "noise"))

    # ---- files --------------------------------------------------------------------------
    def make_train_steps(self, gen_optimizer, critic_optimizer, gp_weight: float,
                         l1_weight: float, l1_smoothing: float = 0.0,
                         power_weight: float = 0.0, ema=None):
        """The WGAN-GP training steps of this model, compiled: ``(critic_step, gen_step)``.

        ``critic_step(real, c, z, eps) -> (loss, wasserstein, gradient_penalty)``: one
        ``critic_optimizer`` update on :func:`critic_loss` with the gradient penalty at the
        interpolates ``eps``; ``gen_step(real, c, z) -> (loss, adversarial, l1, power)``: one
        ``gen_optimizer`` update on :func:`generator_loss` + ``power_weight`` x
        :func:`power_loss`, then ``ema.update()`` if an EMA is given. ``real`` and ``c`` are
        network-space target and condition ``(B, n, n, 1)``, ``z`` the noise.
        """
        import tensorflow as tf

        gen, crit = self.generator, self.critic
        gp_w, l1_w, l1_s, p_w = (float(gp_weight), float(l1_weight), float(l1_smoothing),
                                 float(power_weight))

        @tf.function(reduce_retracing=True)
        def critic_step(real, c, z, eps):
            fake = gen([c, z], training=True)
            with tf.GradientTape() as tape:
                d_real = crit([real, c], training=True)
                d_fake = crit([fake, c], training=True)
                gp = gradient_penalty(crit, real, fake, c, eps)
                loss, w = critic_loss(d_real, d_fake, gp, gp_w)
            grads = tape.gradient(loss, crit.trainable_variables)
            critic_optimizer.apply_gradients(zip(grads, crit.trainable_variables))
            return loss, w, gp

        @tf.function(reduce_retracing=True)
        def gen_step(real, c, z):
            with tf.GradientTape() as tape:
                fake = gen([c, z], training=True)
                d_fake = crit([fake, c], training=True)
                loss, adv, l1 = generator_loss(d_fake, fake, real, l1_w, l1_s)
                pw = power_loss(fake, real, self.transform) if p_w > 0 else tf.constant(0.0)
                loss = loss + p_w * pw
            grads = tape.gradient(loss, gen.trainable_variables)
            gen_optimizer.apply_gradients(zip(grads, gen.trainable_variables))
            if ema is not None:
                ema.update()
            return loss, adv, l1, pw

        return critic_step, gen_step

    def save(self, path, with_critic: bool = False) -> Path:
        """Write ``path`` (``.keras``, the generator) and its ``.json`` sidecar."""
        from astrogen.models.pretrained import save_network

        path = save_network(self.generator, path, self.config())
        if with_critic and self.critic is not None:
            self.critic.save(path.with_name(path.stem + "_critic.keras"))
        return path


def read_sidecar(path, fmt: str, what: str) -> tuple[Path, dict]:
    """``(path, sidecar)`` of a periodic-network model file: the ``.keras`` file and its
    ``.json`` sidecar must exist and the sidecar's ``format`` be ``fmt``; the custom layers
    are registered. :class:`ModelError` (key ``model``) otherwise."""
    PeriodicPad2D(1)  # registers the custom layers before deserialising
    path = Path(path)
    side = path.with_suffix(".json")
    if not (path.is_file() and side.is_file()):
        raise ModelError("missing model file or its .json sidecar.", key="model",
                         received={"model": str(path)})
    cfg = json.loads(side.read_text())
    if cfg.get("format") != fmt:
        raise ModelError(f"not an astrogen {what} file.", key="model",
                         received={"format": cfg.get("format")})
    return path, cfg


def load_nbody_gan(path, with_critic: bool = False) -> NBodyGAN:
    """Load what :meth:`NBodyGAN.save` wrote."""
    keras = _keras()
    path, cfg = read_sidecar(path, "astrogen.nbody_gan/1", "N-body GAN")
    gen = keras.models.load_model(path, compile=False)
    model = NBodyGAN(size=cfg["size"], transform_a=cfg["transform_a"],
                     cond_scale=cfg["cond_scale"], channels=cfg["channels"],
                     critic_channels=cfg["critic_channels"],
                     noise_channels=cfg["noise_channels"], meta=cfg["meta"],
                     build_critic_net=False, generator=gen,
                     condition=cfg.get("condition", "linear"),
                     lpt_order=cfg.get("lpt_order", 2))
    crit = path.with_name(path.stem + "_critic.keras")
    if with_critic and crit.is_file():
        model.critic = keras.models.load_model(crit, compile=False)
    return model

"""Conditional normalizing flows on the FlowVAE latent space, in Keras 3: a masked
autoregressive flow (:class:`ConditionalMAF`) and an affine coupling flow
(:class:`ConditionalRealNVP`), both on the base :class:`ConditionalFlow`.

Design
------
TFP's ``tfp.bijectors.AutoregressiveNetwork`` is a ``tf_keras`` (Keras 2) layer: it is not a
``keras.layers.Layer`` of Keras 3, so its weights would be invisible to a Keras 3 model and to
its ``.keras`` file. Here the autoregressive network (MADE, Germain et al. 2015) is written as
Keras 3 layers (:class:`MaskedDense`, :class:`MADE`), whose weights live in the Keras 3 model.
The flow itself uses TFP's bijector algebra, which is plain TensorFlow and stateless:
:meth:`ConditionalMAF.bijector` builds, for a given (standardised) condition, a
``tfb.Chain`` of ``tfb.MaskedAutoregressiveFlow(shift_and_log_scale_fn=...)`` bijectors
(the function is a closure calling a Keras 3 :class:`MADE` with that condition) separated by
``tfb.Permute`` bijectors. The chain is rebuilt at every call (it holds no variables), so the
whole model saves to one ``.keras`` file.

Directions (TFP convention): ``forward`` maps base noise ``u ~ N(0, I)`` to a latent ``z``
(sampling; sequential, ``event_size`` network passes per bijector); ``inverse`` maps ``z`` to
``u`` in one pass per bijector (density evaluation, training). Each MAF step is
``z_i = u_i * exp(log_scale_i(z_<i)) + shift_i(z_<i)`` (Papamakarios et al. 2017).

Sampling a MAF therefore costs ``event_size * num_bijectors`` sequential passes (132 for the
shipped 32-dimensional, 4-bijector flow with its permutations). The coupling flow
(:class:`ConditionalRealNVP`, ``tfb.RealNVP`` around a Keras 3 :class:`CouplingNet`) maps
half the dimensions per bijector from the other half, ``z_b = u_b * exp(log_scale(u_a, c)) +
shift(u_a, c)`` (Dinh et al. 2017, arXiv:1605.08803): one pass per bijector in both
directions, still an exact density trained by maximum likelihood.

Conditions (catalog properties such as magnitude, half-light radius, redshift) are
standardised with ``(c - mean) / std``; ``mean`` and ``std`` are non-trainable weights of the
layer, so they travel with the ``.keras`` file.
"""
from __future__ import annotations

import functools
import math

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from astrogen.errors import ConfigError

tfb = tfp.bijectors

__all__ = ["MaskedDense", "MADE", "ConditionalFlow", "ConditionalMAF", "CouplingNet",
           "ConditionalRealNVP", "FLOW_TYPES", "build_flow", "made_degrees"]


def made_degrees(event_size: int, hidden_units) -> list[np.ndarray]:
    """Degrees of the input and hidden units of a MADE (Germain et al. 2015).

    Input ``i`` (0-based) has degree ``i + 1``; hidden units cycle through ``1 .. D-1``
    (``0`` when ``D == 1``: they then see only the conditional input). A unit of degree ``d``
    may depend on inputs of degree ``<= d``; output ``i`` (degree ``i + 1``) on hidden units
    of degree ``< i + 1``, which makes the network autoregressive.
    """
    d = int(event_size)
    degrees = [np.arange(1, d + 1)]
    for h in hidden_units:
        if d > 1:
            degrees.append(np.arange(int(h)) % (d - 1) + 1)
        else:
            degrees.append(np.zeros(int(h), dtype=int))
    return degrees


@keras.saving.register_keras_serializable(package="astrogen")
class MaskedDense(keras.layers.Layer):
    """Dense layer whose kernel is multiplied by a fixed autoregressive mask.

    Parameters
    ----------
    units : int
        Number of outputs.
    in_degrees, out_degrees : list of int
        MADE degree of every input and output unit (``len(in_degrees)`` must equal the input
        size, ``len(out_degrees) == units``).
    strict : bool
        Connection rule: ``out > in`` if ``True`` (output layer), ``out >= in`` otherwise.
    activation, use_bias, kernel_initializer, bias_initializer
        As in ``keras.layers.Dense``.
    """

    def __init__(self, units, in_degrees, out_degrees, strict=False, activation=None,
                 use_bias=True, kernel_initializer="glorot_uniform", bias_initializer="zeros",
                 **kwargs):
        super().__init__(**kwargs)
        self.units = int(units)
        self.in_degrees = [int(v) for v in in_degrees]
        self.out_degrees = [int(v) for v in out_degrees]
        if len(self.out_degrees) != self.units:
            raise ConfigError("MaskedDense needs one out degree per unit.", key="out_degrees",
                              received={"units": self.units, "n_degrees": len(self.out_degrees)})
        self.strict = bool(strict)
        self.activation = keras.activations.get(activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        din = np.asarray(self.in_degrees)[:, None]
        dout = np.asarray(self.out_degrees)[None, :]
        self._mask_np = ((dout > din) if self.strict else (dout >= din)).astype("float32")

    def build(self, input_shape):
        """Create the kernel and bias; the input size must equal ``len(in_degrees)``.

        Parameters
        ----------
        input_shape : tuple
            ``(..., n_in)``.
        """
        n_in = int(input_shape[-1])
        if n_in != len(self.in_degrees):
            raise ConfigError("MaskedDense input size differs from len(in_degrees).",
                              key="in_degrees",
                              received={"input_size": n_in, "n_degrees": len(self.in_degrees)})
        self.kernel = self.add_weight(name="kernel", shape=(n_in, self.units),
                                      initializer=self.kernel_initializer)
        self.bias = (self.add_weight(name="bias", shape=(self.units,),
                                     initializer=self.bias_initializer)
                     if self.use_bias else None)

    def call(self, inputs):
        """Dense layer with its kernel multiplied by the autoregressive mask.

        Parameters
        ----------
        inputs : tensor
            Shape ``(..., n_in)``.

        Returns
        -------
        tensor
            Shape ``(..., units)``.
        """
        mask = tf.constant(self._mask_np, dtype=self.kernel.dtype)
        out = tf.matmul(inputs, self.kernel * mask)
        if self.bias is not None:
            out = out + self.bias
        return self.activation(out) if self.activation is not None else out

    def compute_output_shape(self, input_shape):
        """``input_shape`` with its last axis replaced by ``units``."""
        return tuple(input_shape[:-1]) + (self.units,)

    def get_config(self):
        config = super().get_config()
        config.update({
            "units": self.units,
            "in_degrees": list(self.in_degrees),
            "out_degrees": list(self.out_degrees),
            "strict": self.strict,
            "activation": keras.activations.serialize(self.activation)
            if self.activation is not None else None,
            "use_bias": self.use_bias,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "bias_initializer": keras.initializers.serialize(self.bias_initializer),
        })
        return config


@keras.saving.register_keras_serializable(package="astrogen")
class MADE(keras.layers.Layer):
    """Masked autoencoder for distribution estimation, conditioned on an external vector.

    ``made(z, cond)`` returns ``(shift, log_scale)``, each of shape ``(B, event_size)``, where
    output ``i`` depends only on ``z[:, :i]`` and on ``cond`` (fed, unmasked, to the first
    hidden layer). The output layer starts at zero, so a fresh flow is the identity.

    Parameters
    ----------
    event_size : int
        Dimension ``D`` of the autoregressive variable.
    hidden_units : list of int
        Width of each hidden layer.
    conditional_size : int
        Dimension of the conditional input (0: unconditional).
    activation : str
        Hidden activation.
    log_scale_clamp : float
        ``log_scale = c * tanh(raw / c)``: soft bound ``|log_scale| < c`` for stability.
    """

    def __init__(self, event_size, hidden_units=(64, 64), conditional_size=0, activation="elu",
                 log_scale_clamp=5.0, **kwargs):
        super().__init__(**kwargs)
        self.event_size = int(event_size)
        self.hidden_units = [int(h) for h in hidden_units]
        self.conditional_size = int(conditional_size)
        self.activation = activation
        self.log_scale_clamp = float(log_scale_clamp)
        if self.event_size < 1 or not self.hidden_units or min(self.hidden_units) < 1:
            raise ConfigError("MADE needs event_size >= 1 and at least one hidden layer.",
                              key="hidden_units",
                              received={"event_size": event_size, "hidden_units": hidden_units})
        degrees = made_degrees(self.event_size, self.hidden_units)
        self.hidden = []
        for i, h in enumerate(self.hidden_units):
            # the activation of the first layer comes after the conditional term is added
            self.hidden.append(MaskedDense(
                h, degrees[i], degrees[i + 1], strict=False,
                activation=None if i == 0 else activation, name=f"masked_dense_{i}"))
        out_degrees = np.repeat(np.arange(1, self.event_size + 1), 2)  # (shift, log_scale)
        self.output_layer = MaskedDense(2 * self.event_size, degrees[-1], out_degrees,
                                        strict=True, kernel_initializer="zeros",
                                        name="masked_dense_out")
        self.conditional_dense = (
            keras.layers.Dense(self.hidden_units[0], use_bias=False, name="conditional_dense")
            if self.conditional_size > 0 else None)
        self._act = keras.activations.get(activation)

    def build(self, input_shape=None):
        """Build the hidden, output and conditional layers for events of ``event_size``."""
        n = self.event_size
        for layer in self.hidden:
            layer.build((None, n))
            n = layer.units
        self.output_layer.build((None, n))
        if self.conditional_dense is not None:
            self.conditional_dense.build((None, self.conditional_size))

    def call(self, inputs, conditional_input=None):
        """Autoregressive shift and log-scale of each event dimension.

        Parameters
        ----------
        inputs : tensor
            Events, shape ``(..., event_size)``.
        conditional_input : tensor, optional
            Conditions, shape ``(..., conditional_size)``; required when the MADE is conditional.

        Returns
        -------
        shift, log_scale : tensor
            Each of shape ``(..., event_size)``; ``log_scale`` is soft-clamped to
            ``[-log_scale_clamp, log_scale_clamp]``.
        """
        h = self.hidden[0](inputs)
        if self.conditional_dense is not None:
            if conditional_input is None:
                raise ConfigError("this MADE is conditional: pass conditional_input.",
                                  key="conditional_input")
            h = h + self.conditional_dense(conditional_input)
        h = self._act(h)
        for layer in self.hidden[1:]:
            h = layer(h)
        out = self.output_layer(h)
        out = tf.reshape(out, tf.concat([tf.shape(inputs)[:-1], [self.event_size, 2]], 0))
        shift = out[..., 0]
        c = self.log_scale_clamp
        log_scale = c * tf.tanh(out[..., 1] / c)
        return shift, log_scale

    def get_config(self):
        config = super().get_config()
        config.update({
            "event_size": self.event_size,
            "hidden_units": list(self.hidden_units),
            "conditional_size": self.conditional_size,
            "activation": self.activation,
            "log_scale_clamp": self.log_scale_clamp,
        })
        return config


def _permutations(event_size: int, n: int, kind: str, seed: int) -> list[list[int]]:
    if kind == "reverse":
        return [list(range(event_size - 1, -1, -1)) for _ in range(n)]
    rng = np.random.RandomState(int(seed))  # legacy generator: stable across numpy versions
    return [rng.permutation(event_size).tolist() for _ in range(n)]


class ConditionalFlow(keras.layers.Layer):
    """Base of the conditional flows ``p(z | c)`` with a standard normal base.

    A subclass makes one network per bijector (:attr:`networks`) and returns, from
    :meth:`bijector`, the TFP bijector ``u -> z`` for standardised conditions; the base
    holds the condition normalisation and the density, sampling and configuration methods.
    It is abstract (not registered for serialisation; its subclasses are).

    Parameters
    ----------
    event_size : int
        Latent dimension ``D``.
    condition_size : int
        Number of conditions ``C`` (0: unconditional density).
    num_bijectors : int
        Number of bijectors; a permutation separates consecutive ones.
    hidden_units : list of int
        Hidden layers of each bijector's network.
    activation : str
        Hidden activation of the networks.
    permutation : {"random", "reverse"}
        Permutation between bijectors: fixed random ones drawn from ``permutation_seed``, or
        order reversal.
    permutation_seed : int
        Seed of the random permutations (part of the config, so a reloaded flow is the same).
    log_scale_clamp : float
        Soft bound on each bijector's log scale.

    Notes
    -----
    ``log_prob(z, cond)`` and ``sample(cond, ...)`` take conditions in physical units
    (shape ``(B, C)``) and standardise them with the stored ``condition_mean`` and
    ``condition_std`` (set with :meth:`set_condition_normalization` or :meth:`adapt`).
    """

    def __init__(self, event_size, condition_size=0, num_bijectors=4, hidden_units=(128, 128),
                 activation="elu", permutation="random", permutation_seed=0,
                 log_scale_clamp=5.0, **kwargs):
        super().__init__(**kwargs)
        self.event_size = int(event_size)
        self.condition_size = int(condition_size)
        self.num_bijectors = int(num_bijectors)
        self.hidden_units = [int(h) for h in hidden_units]
        self.activation = activation
        self.permutation = str(permutation)
        self.permutation_seed = int(permutation_seed)
        self.log_scale_clamp = float(log_scale_clamp)
        if self.event_size < 1:
            raise ConfigError("must be >= 1.", key="event_size",
                              received={"event_size": event_size})
        if self.condition_size < 0:
            raise ConfigError("must be >= 0.", key="condition_size",
                              received={"condition_size": condition_size})
        if self.num_bijectors < 1:
            raise ConfigError("must be >= 1.", key="num_bijectors",
                              received={"num_bijectors": num_bijectors})
        if self.permutation not in ("random", "reverse"):
            raise ConfigError("must be 'random' or 'reverse'.", key="permutation",
                              received={"permutation": permutation})
        if not self.hidden_units or min(self.hidden_units) < 1:
            raise ConfigError("needs at least one hidden layer of >= 1 unit.",
                              key="hidden_units", received={"hidden_units": hidden_units})
        if not (self.log_scale_clamp > 0):
            raise ConfigError("must be > 0.", key="log_scale_clamp",
                              received={"log_scale_clamp": log_scale_clamp})
        self.permutations = _permutations(self.event_size, self.num_bijectors - 1,
                                          self.permutation, self.permutation_seed)

    @property
    def networks(self) -> list:
        """The network of each bijector, in order (built by :meth:`build`)."""
        raise NotImplementedError

    @property
    def network_input_size(self) -> int:
        """Length of the vector each bijector network reads (the whole event here)."""
        return self.event_size

    def build(self, input_shape=None):
        """Build every bijector network and the (non-trainable) condition mean and std."""
        if self.built:
            return
        for net in self.networks:
            net.build((None, self.network_input_size))
        c = max(self.condition_size, 0)
        self.condition_mean = self.add_weight(name="condition_mean", shape=(c,),
                                              initializer="zeros", trainable=False)
        self.condition_std = self.add_weight(name="condition_std", shape=(c,),
                                             initializer="ones", trainable=False)
        self.built = True

    # ---------------------------------------------------------------- conditions
    def set_condition_normalization(self, mean, std) -> None:
        """Store the mean and standard deviation used to standardise the conditions."""
        mean = np.asarray(mean, dtype="float32").reshape(-1)
        std = np.asarray(std, dtype="float32").reshape(-1)
        if mean.shape != (self.condition_size,) or std.shape != (self.condition_size,):
            raise ConfigError("needs one mean and one std per condition.", key="condition_mean",
                              received={"condition_size": self.condition_size,
                                        "mean": mean.shape, "std": std.shape})
        if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(std)) and np.all(std > 0)):
            raise ConfigError("std must be finite and > 0, mean finite.", key="condition_std",
                              received={"mean": mean.tolist(), "std": std.tolist()})
        self.condition_mean.assign(mean)
        self.condition_std.assign(std)

    def adapt(self, conditions) -> None:
        """Set the normalisation from a sample of conditions, shape ``(n, C)``."""
        c = np.asarray(conditions, dtype="float64").reshape(-1, self.condition_size)
        std = c.std(axis=0)
        self.set_condition_normalization(c.mean(axis=0), np.where(std > 0, std, 1.0))

    def standardize(self, conditions):
        """``(c - mean) / std`` as a float32 tensor of shape ``(B, C)`` (``None`` if C == 0)."""
        if self.condition_size == 0:
            return None
        if conditions is None:
            raise ConfigError("this flow is conditional: pass the conditions.", key="cond")
        c = tf.convert_to_tensor(conditions)
        c = tf.reshape(tf.cast(c, self.condition_mean.dtype), [-1, self.condition_size])
        return (c - self.condition_mean) / self.condition_std

    # ---------------------------------------------------------------- bijector
    #: name of the TFP chain :meth:`bijector` builds
    chain_name = "conditional_flow"

    def bijector_step(self, index: int, shift_and_log_scale_fn) -> tfb.Bijector:
        """The TFP bijector of step ``index`` driven by ``shift_and_log_scale_fn``."""
        raise NotImplementedError

    def bijector(self, cond_std=None) -> tfb.Bijector:
        """TFP bijector ``u -> z`` for *standardised* conditions ``cond_std`` (B, C): the
        :meth:`bijector_step` of every bijector, separated by the fixed permutations."""
        steps = []
        for i in range(self.num_bijectors):
            if i > 0:
                steps.append(tfb.Permute(permutation=self.permutations[i - 1]))
            fn = functools.partial(self._shift_and_log_scale, i, cond_std)
            steps.append(self.bijector_step(i, fn))
        # Chain applies its last element first in the forward direction
        return tfb.Chain(steps[::-1], name=self.chain_name)

    def forward(self, u, conditions=None):
        """Base noise ``u`` (B, D) -> latent ``z`` (B, D) (sequential; used for sampling)."""
        u = tf.cast(tf.convert_to_tensor(u), self.condition_mean.dtype)
        return self.bijector(self.standardize(conditions)).forward(u)

    def inverse(self, z, conditions=None):
        """Latent ``z`` (B, D) -> base noise ``u`` (B, D) (one network pass per bijector)."""
        z = tf.cast(tf.convert_to_tensor(z), self.condition_mean.dtype)
        return self.bijector(self.standardize(conditions)).inverse(z)

    def inverse_log_det_jacobian(self, z, conditions=None):
        """``log |det du/dz|`` at ``z``, shape (B,)."""
        z = tf.cast(tf.convert_to_tensor(z), self.condition_mean.dtype)
        return self.bijector(self.standardize(conditions)).inverse_log_det_jacobian(
            z, event_ndims=1)

    def forward_log_det_jacobian(self, u, conditions=None):
        """``log |det dz/du|`` at ``u``, shape (B,)."""
        u = tf.cast(tf.convert_to_tensor(u), self.condition_mean.dtype)
        return self.bijector(self.standardize(conditions)).forward_log_det_jacobian(
            u, event_ndims=1)

    def log_prob(self, z, conditions=None):
        """``log p(z | c)`` in nats, shape (B,), for latents ``z`` (B, D), conditions (B, C)."""
        z = tf.cast(tf.convert_to_tensor(z), self.condition_mean.dtype)
        bij = self.bijector(self.standardize(conditions))
        u = bij.inverse(z)
        ildj = bij.inverse_log_det_jacobian(z, event_ndims=1)
        base = -0.5 * tf.reduce_sum(tf.square(u), axis=-1) \
            - 0.5 * self.event_size * math.log(2.0 * math.pi)
        return base + ildj

    def sample(self, conditions=None, seed=None, noise=None, n=None):
        """Draw ``z ~ p(z | c)``, shape (B, D).

        Parameters
        ----------
        conditions : array-like, shape (B, C)
            Conditions in physical units (ignored if ``condition_size == 0``).
        seed : int or array of uint64, optional
            An int seeds the call (row ``i`` uses ``astrogen.seeds.row_seeds(seed, i)``); an
            array of ``B`` uint64 gives each row its own seed. The base noise is drawn with
            :func:`astrogen.seeds.normals`, so a row's sample does not depend on the batch.
        noise : array-like, shape (B, D), optional
            Base noise to push through the flow instead of drawing it.
        n : int, optional
            Number of samples of an unconditional flow.
        """
        from astrogen import seeds as _seeds

        if noise is None:
            if self.condition_size > 0:
                b = int(np.asarray(conditions).reshape(-1, self.condition_size).shape[0])
            elif n is not None:
                b = int(n)
            else:
                raise ConfigError("give n (number of samples) for an unconditional flow.",
                                  key="n")
            if seed is None or np.ndim(seed) == 0:
                row = _seeds.row_seeds(0 if seed is None else int(seed), np.arange(b))
            else:
                row = np.asarray(seed, dtype=np.uint64).reshape(-1)
                if row.shape[0] != b:
                    raise ConfigError("needs one seed per row.", key="seed",
                                      received={"n_seeds": row.shape[0], "n_rows": b})
            noise = _seeds.normals(row, self.event_size)
        noise = np.asarray(noise, dtype="float32")
        return self.forward(noise, conditions)

    def call(self, z, conditions=None):
        """``log_prob(z, conditions)``."""
        return self.log_prob(z, conditions)

    def get_config(self):
        config = super().get_config()
        config.update({
            "event_size": self.event_size,
            "condition_size": self.condition_size,
            "num_bijectors": self.num_bijectors,
            "hidden_units": list(self.hidden_units),
            "activation": self.activation,
            "permutation": self.permutation,
            "permutation_seed": self.permutation_seed,
            "log_scale_clamp": self.log_scale_clamp,
        })
        return config


@keras.saving.register_keras_serializable(package="astrogen")
class ConditionalMAF(ConditionalFlow):
    """Conditional masked autoregressive flow ``p(z | c)`` with a standard normal base.

    Density evaluation (training) takes one MADE pass per bijector; sampling takes
    ``event_size`` sequential MADE passes per bijector (see :class:`ConditionalRealNVP` for
    a flow that samples in one pass per bijector).

    Parameters
    ----------
    event_size, condition_size, num_bijectors, hidden_units, activation, permutation, permutation_seed, log_scale_clamp
        See :class:`ConditionalFlow`; each bijector is a MAF step with a conditional
        :class:`MADE` of ``hidden_units``.
    """

    def __init__(self, event_size, condition_size=0, num_bijectors=4, hidden_units=(128, 128),
                 activation="elu", permutation="random", permutation_seed=0,
                 log_scale_clamp=5.0, **kwargs):
        super().__init__(event_size, condition_size, num_bijectors, hidden_units, activation,
                         permutation, permutation_seed, log_scale_clamp, **kwargs)
        self.mades = [
            MADE(self.event_size, self.hidden_units, self.condition_size, activation,
                 self.log_scale_clamp, name=f"made_{i}")
            for i in range(self.num_bijectors)
        ]
        self.build()

    @property
    def networks(self) -> list:
        """The :class:`MADE` of each bijector."""
        return self.mades

    def _shift_and_log_scale(self, index, cond_std, x):
        return self.mades[index](x, conditional_input=cond_std)

    chain_name = "conditional_maf"

    def bijector_step(self, index, shift_and_log_scale_fn) -> tfb.Bijector:
        """A masked autoregressive step (its MADE gives shift and log scale)."""
        return tfb.MaskedAutoregressiveFlow(shift_and_log_scale_fn=shift_and_log_scale_fn,
                                            name=f"maf_{index}")


@keras.saving.register_keras_serializable(package="astrogen")
class CouplingNet(keras.layers.Layer):
    """Shift and log scale of an affine coupling step, conditioned on an external vector.

    ``net(x_a, cond)`` returns ``(shift, log_scale)``, each of shape ``(B, out_size)``,
    computed by a dense network from the unchanged part ``x_a`` (``(B, in_size)``) of the
    event and the standardised conditions (``(B, conditional_size)``, concatenated to
    ``x_a``). The output layer starts at zero, so a fresh coupling step is the identity.

    Parameters
    ----------
    in_size : int
        Size of the conditioning part ``x_a`` of the event (>= 1).
    out_size : int
        Size of the transformed part (>= 1).
    hidden_units : list of int
        Width of each hidden layer.
    conditional_size : int
        Dimension of the conditional input (0: unconditional).
    activation : str
        Hidden activation.
    log_scale_clamp : float
        ``log_scale = c * tanh(raw / c)``: soft bound ``|log_scale| < c`` for stability.
    """

    def __init__(self, in_size, out_size, hidden_units=(64, 64), conditional_size=0,
                 activation="elu", log_scale_clamp=5.0, **kwargs):
        super().__init__(**kwargs)
        self.in_size = int(in_size)
        self.out_size = int(out_size)
        self.hidden_units = [int(h) for h in hidden_units]
        self.conditional_size = int(conditional_size)
        self.activation = activation
        self.log_scale_clamp = float(log_scale_clamp)
        if self.in_size < 1 or self.out_size < 1:
            raise ConfigError("in_size and out_size must be >= 1.", key="in_size",
                              received={"in_size": in_size, "out_size": out_size})
        if not self.hidden_units or min(self.hidden_units) < 1:
            raise ConfigError("needs at least one hidden layer of >= 1 unit.",
                              key="hidden_units", received={"hidden_units": hidden_units})
        if self.conditional_size < 0:
            raise ConfigError("must be >= 0.", key="conditional_size",
                              received={"conditional_size": conditional_size})
        if not (self.log_scale_clamp > 0):
            raise ConfigError("must be > 0.", key="log_scale_clamp",
                              received={"log_scale_clamp": log_scale_clamp})
        keras.activations.get(activation)  # unknown names fail here

    def build(self, input_shape=None):
        """Create the hidden and (zero-initialised) output dense layers.

        Parameters
        ----------
        input_shape : tuple, optional
            ``(..., in_size)``; another last axis is refused.
        """
        if input_shape is not None and input_shape[-1] is not None \
                and int(input_shape[-1]) != self.in_size:
            raise ConfigError("input size differs from in_size.", key="in_size",
                              received={"input_size": int(input_shape[-1]),
                                        "in_size": self.in_size})
        self.hidden = [keras.layers.Dense(h, activation=self.activation, name=f"dense_{i}")
                       for i, h in enumerate(self.hidden_units)]
        self.output_layer = keras.layers.Dense(2 * self.out_size, kernel_initializer="zeros",
                                               name="dense_out")
        n = self.in_size + self.conditional_size
        for layer in self.hidden:
            layer.build((None, n))
            n = layer.units
        self.output_layer.build((None, n))
        self.built = True

    def call(self, inputs, conditional_input=None):
        """Shift and log scale of the transformed part.

        Parameters
        ----------
        inputs : tensor
            The unchanged part ``x_a``, shape ``(..., in_size)``.
        conditional_input : tensor, optional
            Conditions, shape ``(..., conditional_size)``; required when conditional.

        Returns
        -------
        shift, log_scale : tensor
            Each of shape ``(..., out_size)``; ``log_scale`` soft-clamped to
            ``[-log_scale_clamp, log_scale_clamp]``.
        """
        h = inputs
        if self.conditional_size > 0:
            if conditional_input is None:
                raise ConfigError("this coupling network is conditional: pass "
                                  "conditional_input.", key="conditional_input")
            h = tf.concat([h, tf.cast(conditional_input, h.dtype)], axis=-1)
        for layer in self.hidden:
            h = layer(h)
        out = self.output_layer(h)
        shift, raw = out[..., :self.out_size], out[..., self.out_size:]
        c = self.log_scale_clamp
        return shift, c * tf.tanh(raw / c)

    def compute_output_shape(self, inputs_shape, conditional_input_shape=None):
        """Two shapes ``inputs_shape`` with the last axis replaced by ``out_size``."""
        shape = tuple(inputs_shape[:-1]) + (self.out_size,)
        return shape, shape

    def get_config(self):
        config = super().get_config()
        config.update({
            "in_size": self.in_size,
            "out_size": self.out_size,
            "hidden_units": list(self.hidden_units),
            "conditional_size": self.conditional_size,
            "activation": self.activation,
            "log_scale_clamp": self.log_scale_clamp,
        })
        return config


@keras.saving.register_keras_serializable(package="astrogen")
class ConditionalRealNVP(ConditionalFlow):
    """Conditional affine coupling flow (RealNVP, Dinh et al. 2017) ``p(z | c)``.

    Each bijector keeps the first ``num_masked = event_size // 2`` dimensions ``x_a`` and
    maps the others by ``x_b -> x_b * exp(log_scale(x_a, c)) + shift(x_a, c)`` (a
    :class:`CouplingNet`); permutations between bijectors (``random`` or ``reverse``) change
    which dimensions are kept. Both directions take **one network pass per bijector**, so
    sampling costs ``num_bijectors`` passes where :class:`ConditionalMAF` takes
    ``event_size * num_bijectors``; each step transforms half the dimensions, so about twice
    the MAF's bijectors give a comparable density. ``event_size`` must be >= 2.

    Parameters
    ----------
    event_size, condition_size, num_bijectors, hidden_units, activation, permutation, permutation_seed, log_scale_clamp
        See :class:`ConditionalFlow`.
    """

    def __init__(self, event_size, condition_size=0, num_bijectors=8, hidden_units=(128, 128),
                 activation="elu", permutation="random", permutation_seed=0,
                 log_scale_clamp=5.0, **kwargs):
        super().__init__(event_size, condition_size, num_bijectors, hidden_units, activation,
                         permutation, permutation_seed, log_scale_clamp, **kwargs)
        if self.event_size < 2:
            raise ConfigError("a coupling flow needs event_size >= 2.", key="event_size",
                              received={"event_size": event_size})
        self.num_masked = self.event_size // 2
        self.couplings = [
            CouplingNet(self.num_masked, self.event_size - self.num_masked, self.hidden_units,
                        self.condition_size, activation, self.log_scale_clamp,
                        name=f"coupling_{i}")
            for i in range(self.num_bijectors)
        ]
        self.build()

    @property
    def networks(self) -> list:
        """The :class:`CouplingNet` of each bijector."""
        return self.couplings

    @property
    def network_input_size(self) -> int:
        """Each coupling network reads the ``num_masked`` unchanged dimensions."""
        return self.num_masked

    def _shift_and_log_scale(self, index, cond_std, x, output_units, **kwargs):
        return self.couplings[index](x, conditional_input=cond_std)

    chain_name = "conditional_realnvp"

    def bijector_step(self, index, shift_and_log_scale_fn) -> tfb.Bijector:
        """An affine coupling step of the last ``event_size - num_masked`` dimensions."""
        return tfb.RealNVP(num_masked=self.num_masked,
                           shift_and_log_scale_fn=shift_and_log_scale_fn,
                           name=f"coupling_{index}")


#: ``flow_type`` of a FlowVAE -> flow class: ``maf`` (sampling: ``event_size`` sequential
#: passes per bijector) or ``coupling`` (RealNVP: one pass per bijector both ways)
FLOW_TYPES = {"maf": ConditionalMAF, "coupling": ConditionalRealNVP}


def build_flow(flow_type: str, event_size: int, condition_size: int, **kwargs) -> ConditionalFlow:
    """The conditional flow of ``flow_type`` (a key of :data:`FLOW_TYPES`).

    Parameters
    ----------
    flow_type : {"maf", "coupling"}
        Flow family.
    event_size, condition_size : int
        Latent dimension and number of conditions.
    **kwargs
        Other arguments of :class:`ConditionalFlow` (``num_bijectors``, ``hidden_units``,
        ``activation``, ``permutation``, ``permutation_seed``, ``log_scale_clamp``, ``name``).
    """
    if flow_type not in FLOW_TYPES:
        raise ConfigError(f"must be one of {tuple(FLOW_TYPES)}.", key="flow_type",
                          received={"flow_type": flow_type})
    return FLOW_TYPES[flow_type](event_size, condition_size, **kwargs)

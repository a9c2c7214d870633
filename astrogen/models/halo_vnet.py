r"""3-D halo network (Berger & Stein 2019, arXiv:1805.04537): linear density field on the
particle lattice -> protohalo mask and halo size.

A small 3-D U-Net ("V-Net") with periodic padding (:mod:`astrogen.models.layers_periodic`)
predicts, for every cell of the particle lattice, the logit of "the particle starting here
ends in a FoF halo of at least ``mask_min_particles`` particles" (the mask of
:mod:`astrogen.datasets.protohalos`), and, as a second channel, ``log10 N`` of the number
``N`` of particles of the FoF halo it ends in (trained on the cells of haloes of
``min_members`` or more; used to split and size the haloes in the catalogue step). Input: the z = 0 linear density contrast divided by
``input_scale`` (the rms of the training fields, so the input has unit variance).

Architecture: per level two 3x3x3 periodic convolutions (LeakyReLU 0.2), a stride-2 periodic
convolution down, nearest upsampling + convolution up, concatenated skips, a 1x1x1 head.
With ``L = len(channels)`` levels the network is equivariant to periodic shifts by multiples
of ``2**(L - 1)`` cells (exactly, to float rounding).

Loss (owned here): ``BCE(pos_weight) + dice_weight (1 - soft Dice) + size_weight MSE(log10 N
on halo cells)`` (:func:`halo_vnet_loss`). The catalogue step is :mod:`astrogen.nbody.protohalo_catalog`.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from astrogen.errors import ModelError

__all__ = ["HaloVNet", "build_halo_vnet", "load_halo_vnet", "halo_vnet_loss", "FORMAT"]

#: sidecar format of a saved network
FORMAT = "astrogen.halo_vnet/1"


def build_halo_vnet(size: int, channels=(8, 16, 32)):
    """The Keras network: input ``(size, size, size, 1)``, output ``(size, size, size, 2)``:
    mask logit and ``log10 N``."""
    import keras

    from astrogen.models.layers_periodic import PeriodicConv3D

    x = inp = keras.Input((size, size, size, 1), name="linear")
    skips = []
    for i, c in enumerate(channels):
        if i > 0:
            x = PeriodicConv3D(c, 3, strides=2, name=f"down{i}")(x)
        x = PeriodicConv3D(c, 3, name=f"enc{i}a")(x)
        x = PeriodicConv3D(c, 3, name=f"enc{i}b")(x)
        skips.append(x)
    for i in range(len(channels) - 2, -1, -1):
        c = channels[i]
        x = keras.layers.UpSampling3D(2, name=f"up{i}")(x)
        x = PeriodicConv3D(c, 3, name=f"dec{i}u")(x)
        x = keras.layers.Concatenate(name=f"skip{i}")([x, skips[i]])
        x = PeriodicConv3D(c, 3, name=f"dec{i}a")(x)
        x = PeriodicConv3D(c, 3, name=f"dec{i}b")(x)
    out = keras.layers.Conv3D(2, 1, name="head")(x)
    return keras.Model(inp, out, name="halo_vnet")


class HaloVNet:
    """The 3-D halo network with its metadata.

    Parameters
    ----------
    size : int
        Lattice cells per side (a multiple of ``2**(len(channels) - 1)``).
    channels : sequence of int
        Filters per level.
    input_scale : float
        The linear field is divided by this (dimensionless) before the network.
    meta : dict, optional
        Geometry (``n_grid``, ``box_size`` in Mpc/h), ``particle_mass_msun_h``,
        ``mask_min_particles``, cosmology, training provenance.
    network : keras.Model, optional
        A built network (default: a new one).
    """

    def __init__(self, size: int = 32, channels=(8, 16, 32), input_scale: float = 1.0,
                 meta: dict | None = None, network=None):
        if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
            raise ModelError("must be a positive integer.", key="size", received={"size": size})
        self.size = int(size)
        self.channels = [int(c) for c in channels]
        if not self.channels or any(c < 1 for c in self.channels):
            raise ModelError("must be a non-empty list of positive integers.", key="channels",
                             received={"channels": channels})
        if self.size % (2 ** (len(self.channels) - 1)):
            raise ModelError("size must be a multiple of 2**(len(channels) - 1).",
                             key="channels", received={"size": size, "channels": channels})
        if not (float(input_scale) > 0):
            raise ModelError("must be > 0.", key="input_scale",
                             received={"input_scale": input_scale})
        self.input_scale = float(input_scale)
        self.meta = dict(meta or {})
        self.network = network if network is not None else build_halo_vnet(self.size,
                                                                           self.channels)

    @property
    def shift_period(self) -> int:
        """Cells: the network is equivariant to periodic shifts by multiples of this."""
        return 2 ** (len(self.channels) - 1)

    def config(self) -> dict:
        """The model's configuration as written to its JSON sidecar."""
        return {"format": FORMAT, "size": self.size, "channels": self.channels,
                "input_scale": self.input_scale, "meta": self.meta}

    def inputs(self, linear: np.ndarray) -> np.ndarray:
        """Network input ``(batch, n, n, n, 1)`` float32 of linear fields ``(batch, n, n, n)``."""
        return (np.asarray(linear, np.float32) / self.input_scale)[..., None]

    def predict(self, linear: np.ndarray, batch_size: int = 4) -> tuple[np.ndarray, np.ndarray]:
        """Protohalo probability and predicted halo size of every lattice cell.

        Parameters
        ----------
        linear : numpy.ndarray, shape (n, n, n) or (batch, n, n, n)
            Linear density contrast at z = 0 (dimensionless).

        Returns
        -------
        prob : numpy.ndarray, float32, same shape
            Probability in [0, 1] that the cell's particle ends in a halo of at least
            ``meta["mask_min_particles"]`` particles.
        n_pred : numpy.ndarray, float32, same shape
            Predicted particle count of the halo the cell's particle ends in (meaningful on
            halo cells only).
        """
        x = np.asarray(linear, np.float32)
        single = x.ndim == 3
        if single:
            x = x[None]
        if x.ndim != 4 or x.shape[1:] != (self.size,) * 3:
            raise ModelError(f"the halo network takes {self.size}^3 lattices.", key="linear",
                             received={"shape": x.shape})
        s = self.inputs(x)
        outs = np.concatenate([np.asarray(self.network(s[i:i + batch_size], training=False))
                               for i in range(0, len(s), batch_size)]).astype(np.float64)
        p = (1.0 / (1.0 + np.exp(-outs[..., 0]))).astype(np.float32)
        npred = (10.0 ** np.clip(outs[..., 1], 0.0, 9.0)).astype(np.float32)
        return (p[0], npred[0]) if single else (p, npred)

    def losses(self, x, mask, log_n, pos_weight: float, dice_weight: float,
               size_weight: float, training: bool = False) -> dict:
        """Loss terms of a batch: input ``x`` (batch, n, n, n, 1) (:meth:`inputs`), targets
        ``mask`` (batch, n, n, n) in {0, 1} and ``log_n`` (``log10 N`` of the cell's FoF
        halo, 0 where none); see :func:`halo_vnet_loss`."""
        total, bce, soft_dice, mse = halo_vnet_loss(self.network(x, training=training), mask,
                                                    log_n, pos_weight, dice_weight,
                                                    size_weight)
        return {"loss": total, "bce": bce, "soft_dice": soft_dice, "size_mse": mse}

    def make_train_step(self, optimizer, pos_weight: float, dice_weight: float,
                        size_weight: float):
        """A compiled ``step(x, mask, log_n) -> loss terms`` applying one ``optimizer``
        update."""
        from astrogen.models.losses import compiled_step

        return compiled_step(self.network, optimizer,
                             lambda x, m, ln: self.losses(
                                 x, m, ln, pos_weight, dice_weight, size_weight, training=True))

    def save(self, path) -> Path:
        """Save the network to ``path`` (``.keras``) and its JSON sidecar next to it; returns ``path``."""
        from astrogen.models.pretrained import save_network

        return save_network(self.network, path, self.config())


def load_halo_vnet(path) -> HaloVNet:
    """Load a network saved by :meth:`HaloVNet.save` (``.keras`` + ``.json`` sidecar)."""
    import keras

    import astrogen.models.layers_periodic  # noqa: F401 (registers the layers)
    from astrogen.models.nbody_gan import read_sidecar

    path, cfg = read_sidecar(path, FORMAT, "3-D halo network")
    net = keras.models.load_model(path, compile=False)
    return HaloVNet(size=cfg["size"], channels=cfg["channels"],
                    input_scale=cfg["input_scale"], meta=cfg["meta"], network=net)


def halo_vnet_loss(out, mask, log_n, pos_weight: float, dice_weight: float,
                   size_weight: float):
    """``BCE(pos_weight) + dice_weight (1 - soft Dice) + size_weight MSE`` of the network
    output ``out`` (..., 2) against a {0, 1} mask and the ``log10 N`` target (the soft Dice
    over the whole batch, ``(2 sum(p m) + 1) / (sum p + sum m + 1)``; the MSE over the cells
    where ``log_n > 0``); returns ``(total, bce, soft_dice, mse)`` (dimensionless)."""
    import tensorflow as tf

    logit, size = out[..., 0], out[..., 1]
    mask = tf.cast(mask, logit.dtype)
    log_n = tf.cast(log_n, logit.dtype)
    w = tf.cast(log_n > 0, logit.dtype)
    mse = tf.reduce_sum(w * tf.square(size - log_n)) / (tf.reduce_sum(w) + 1.0)
    bce = tf.reduce_mean(tf.nn.weighted_cross_entropy_with_logits(mask, logit, pos_weight))
    p = tf.sigmoid(logit)
    soft_dice = (2.0 * tf.reduce_sum(p * mask) + 1.0) / (tf.reduce_sum(p) + tf.reduce_sum(mask)
                                                        + 1.0)
    return bce + dice_weight * (1.0 - soft_dice) + size_weight * mse, bce, soft_dice, mse

r"""Halo-map network: projected density slab -> halo mask (+ halo mass map) -> halo catalog.

After Berger & Stein (2019, arXiv:1805.04537), who segment haloes in 3-D density fields with
a V-Net; here a small 2-D U-Net with periodic padding (the building blocks of
:mod:`astrogen.models.nbody_gan`) segments projected slabs. Input: ``s(1 + delta)`` (the
emulator's pixel transform). Two outputs per pixel: the logit of "within ``halo_radius``
pixels of a FoF halo centre lying in the slab", and ``(log10 M - 13)`` of that halo.

:func:`mask_to_catalog` turns a probability map into a catalog: connected components
(periodic) of ``p > threshold``, centre = probability-weighted periodic centroid, mass =
``10 ** (p-weighted mean of the predicted log10 M)`` over the component.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from astrogen.errors import ModelError
from astrogen.nbody.halo_maps import dice, mask_to_catalog, match_catalogs  # noqa: F401
from astrogen.models.nbody_gan import PixelTransform, periodic_unet, read_sidecar

__all__ = ["HaloUNet", "load_halo_unet", "halo_loss", "mask_to_catalog", "match_catalogs",
           "dice", "LOGM_OFFSET"]

#: log10(M / (Msun/h)) subtracted from the mass target.
LOGM_OFFSET = 13.0


def build_halo_unet(size: int, channels=(16, 32, 64)):
    import keras

    x = keras.Input((size, size, 1), name="field")
    out = periodic_unet(x, list(channels), 2, None, "halo")
    return keras.Model(x, out, name="halo_unet")


class HaloUNet:
    """The halo-map network with its metadata (pixel transform, geometry, mass threshold)."""

    def __init__(self, size: int = 32, channels=(16, 32, 64), transform_a: float = 1.0,
                 meta: dict | None = None, network=None):
        self.size = int(size)
        self.channels = [int(c) for c in channels]
        self.transform = PixelTransform(transform_a)
        self.meta = dict(meta or {})
        if self.size % (2 ** (len(self.channels) - 1)):
            raise ModelError("size must be a multiple of 2**(len(channels) - 1).",
                             key="channels", received={"size": size, "channels": channels})
        self.network = network if network is not None else build_halo_unet(self.size,
                                                                            self.channels)

    def config(self) -> dict:
        """The JSON sidecar: format, size (pixels), channels, pixel transform and metadata."""
        return {"format": "astrogen.halo_unet/1", "size": self.size, "channels": self.channels,
                "transform_a": self.transform.a, "meta": self.meta}

    def predict(self, density: np.ndarray, batch_size: int = 64):
        """Probability and log10-mass maps of projected ``1 + delta`` slabs ``(n, s, s)``."""
        import tensorflow as tf

        x = np.asarray(density, np.float32)
        single = x.ndim == 2
        if single:
            x = x[None]
        if x.shape[1:] != (self.size, self.size):
            raise ModelError(f"the halo network takes {self.size}x{self.size} slabs.",
                             key="field", received={"shape": x.shape})
        s = self.transform.forward(x).astype(np.float32)[..., None]
        outs = [np.asarray(self.network(s[i:i + batch_size], training=False))
                for i in range(0, len(s), batch_size)]
        o = np.concatenate(outs)
        prob = np.asarray(tf.sigmoid(o[..., 0]))
        logm = o[..., 1] + LOGM_OFFSET
        return (prob[0], logm[0]) if single else (prob, logm)

    def losses(self, x, mask, logm, pos_weight: float, dice_weight: float,
               mass_weight: float, training: bool = False) -> dict:
        """Loss terms of a batch: network input ``x`` (batch, n, n, 1) (transformed slabs),
        targets ``mask`` and ``logm`` (``log10 M - LOGM_OFFSET`` on the mask), (batch, n, n).
        See :func:`halo_loss`."""
        total, bce, soft_dice, mse = halo_loss(self.network(x, training=training), mask, logm,
                                               pos_weight, dice_weight, mass_weight)
        return {"loss": total, "bce": bce, "soft_dice": soft_dice, "mass_mse": mse}

    def make_train_step(self, optimizer, pos_weight: float, dice_weight: float,
                        mass_weight: float):
        """A compiled ``step(x, mask, logm) -> loss terms`` that applies one ``optimizer``
        update of the network on :meth:`losses`."""
        from astrogen.models.losses import compiled_step

        return compiled_step(self.network, optimizer,
                             lambda x, m, lm: self.losses(
                                 x, m, lm, pos_weight, dice_weight, mass_weight, training=True))

    def save(self, path) -> Path:
        """Save the network to ``path`` and its sidecar to ``path`` with suffix ``.json``.

        Parameters
        ----------
        path : str or pathlib.Path
            Target file; must end in ``.keras`` (parent folders are created).

        Returns
        -------
        pathlib.Path
            The ``.keras`` file written.

        Raises
        ------
        astrogen.errors.ModelError
            When the file name does not end in ``.keras``.
        """
        from astrogen.models.pretrained import save_network

        return save_network(self.network, path, self.config())


def load_halo_unet(path) -> HaloUNet:
    """Load a halo U-Net saved by :meth:`HaloUNet.save`.

    Parameters
    ----------
    path : str or pathlib.Path
        The ``.keras`` file; its ``.json`` sidecar must sit next to it.

    Returns
    -------
    HaloUNet
        The network with its size, channels, pixel transform and metadata.

    Raises
    ------
    astrogen.errors.ModelError
        When a file is missing or the sidecar is not of format ``astrogen.halo_unet/1``.
    """
    import keras

    path, cfg = read_sidecar(path, "astrogen.halo_unet/1", "halo U-Net")
    net = keras.models.load_model(path, compile=False)
    return HaloUNet(size=cfg["size"], channels=cfg["channels"],
                    transform_a=cfg["transform_a"], meta=cfg["meta"], network=net)


def halo_loss(out, mask, logm, pos_weight: float, dice_weight: float, mass_weight: float):
    """Total loss and its terms for network output ``out`` (batch, n, n, 2): ``BCE(pos_weight)
    + dice_weight (1 - soft Dice) + mass_weight MSE(mass on true halo pixels)``; returns
    ``(total, bce, soft_dice, mse)`` (dimensionless)."""
    import tensorflow as tf

    logit, mpred = out[..., 0], out[..., 1]
    bce = tf.reduce_mean(tf.nn.weighted_cross_entropy_with_logits(mask, logit, pos_weight))
    p = tf.sigmoid(logit)
    inter = tf.reduce_sum(p * mask)
    soft_dice = (2.0 * inter + 1.0) / (tf.reduce_sum(p) + tf.reduce_sum(mask) + 1.0)
    mse = tf.reduce_sum(mask * tf.square(mpred - logm)) / (tf.reduce_sum(mask) + 1.0)
    total = bce + dice_weight * (1.0 - soft_dice) + mass_weight * mse
    return total, bce, soft_dice, mse

r"""Deep Density Displacement Model (D3M, He et al. 2019, arXiv:1811.06533): a 3-D U-Net with
periodic padding that maps the Zel'dovich (1LPT) displacement of the particles of a periodic
box to the displacement an N-body (here the package's PM) code gives them.

Fields live on the particle lattice, channels last: ``(batch, n, n, n, 3)``, the three
Cartesian components of the displacement in Mpc/h (``zeldovich = D1(a) Psi1(q)``). The
network sees ``u = zeldovich / scale`` (``scale`` in Mpc/h, stored with the model) and returns
``u + head(u)``: the output is a residual over the input, so an untrained network with a zero
head is the Zel'dovich approximation, and a zero displacement maps to a zero correction up
to the head's bias (measured in the tests).

Every convolution is preceded by :class:`PeriodicPad3D`, which wraps the field periodically,
and runs with ``'valid'`` padding: the network has no boundary, and it commutes with periodic
shifts of the input by multiples of ``2 ** (len(channels) - 1)`` lattice sites (the stride of
its coarsest level; tested).

The model owns its loss (:meth:`D3M.losses`: mean squared error of the displacement in units
of ``scale``, averaged over particles and components) and its train step
(:meth:`D3M.make_train_step`).
"""
from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np
from keras import ops

from astrogen.errors import ConfigError, ModelError
from astrogen.models.layers_periodic import PeriodicPad3D

__all__ = ["PeriodicPad3D", "build_d3m_network", "D3M", "load_d3m", "cube_symmetries",
           "apply_symmetry", "FORMAT"]

#: sidecar format of a saved model
FORMAT = "astrogen.d3m/1"


# the shipped d3m_32.keras names the padding layer "astrogen_d3m>PeriodicPad3D": the one
# periodic padding layer of the package answers to that name too
keras.saving.get_custom_objects()["astrogen_d3m>PeriodicPad3D"] = PeriodicPad3D


def _pconv(x, filters: int, kernel: int = 3, stride: int = 1, name: str | None = None,
           activation: bool = True):
    pad = kernel // 2
    if pad:
        x = PeriodicPad3D(pad)(x)
    x = keras.layers.Conv3D(filters, kernel, strides=stride, padding="valid", name=name)(x)
    if activation:
        x = keras.layers.LeakyReLU(0.1)(x)
    return x


def build_d3m_network(channels=(16, 32, 64), convs_per_level: int = 2):
    """The 3-D periodic U-Net: ``(batch, n, n, n, 3)`` -> same shape (any ``n`` divisible by
    ``2 ** (len(channels) - 1)``).

    Each level has ``convs_per_level`` periodic 3x3x3 convolutions (LeakyReLU 0.1); a
    strided periodic convolution goes down, nearest upsampling + a convolution goes up, skips
    are concatenated; a 1x1x1 convolution gives the 3-component head, added to the input.
    """
    channels = [int(c) for c in channels]
    if not channels or min(channels) < 1:
        raise ConfigError("must be a non-empty list of positive integers.", key="channels",
                          received={"channels": channels})
    x_in = keras.Input((None, None, None, 3), name="zeldovich")
    x = x_in
    skips = []
    for i, c in enumerate(channels):
        if i > 0:
            x = _pconv(x, c, 3, stride=2)
        for _ in range(int(convs_per_level)):
            x = _pconv(x, c)
        skips.append(x)
    for c, skip in zip(reversed(channels[:-1]), reversed(skips[:-1])):
        x = keras.layers.UpSampling3D(2)(x)
        x = _pconv(x, c)
        x = keras.layers.Concatenate()([x, skip])
        for _ in range(int(convs_per_level)):
            x = _pconv(x, c)
    head = keras.layers.Conv3D(3, 1, padding="valid", name="head",
                               kernel_initializer="zeros")(x)
    out = keras.layers.Add(name="residual")([x_in, head])
    return keras.Model(x_in, out, name="d3m")


def cube_symmetries() -> list[tuple[tuple[int, int, int], tuple[bool, bool, bool]]]:
    """The 48 symmetries of the cube as ``(axis permutation, flips)``."""
    import itertools

    return [(perm, flips) for perm in itertools.permutations(range(3))
            for flips in itertools.product((False, True), repeat=3)]


def apply_symmetry(field: np.ndarray, perm, flips, shift=(0, 0, 0)) -> np.ndarray:
    """Apply a cube symmetry and a periodic shift to a displacement field ``(n, n, n, 3)``
    (channels last), consistently for the vector: axis ``perm[j]`` of the input becomes axis
    ``j`` of the output and so does its component; a flipped axis reverses its sites
    (``i -> n - 1 - i``, which maps the shifted lattice onto itself) and negates its
    component; then the sites are rolled by ``shift``."""
    f = np.transpose(field, tuple(perm) + (3,))[..., list(perm)]
    sl = tuple(slice(None, None, -1) if fl else slice(None) for fl in flips)
    f = f[sl + (slice(None),)]
    sign = np.array([-1.0 if fl else 1.0 for fl in flips], f.dtype)
    f = f * sign
    if any(shift):
        f = np.roll(f, tuple(int(s) for s in shift), axis=(0, 1, 2))
    return np.ascontiguousarray(f)


class D3M:
    """The displacement emulator: network + scale + metadata.

    Parameters
    ----------
    channels : sequence of int
        Channels per U-Net level.
    convs_per_level : int
        Convolutions per level.
    scale : float
        Displacement unit of the network's input and output, Mpc/h (> 0).
    meta : dict, optional
        Geometry, cosmology, redshift and training provenance (free form, saved).
    network : keras.Model, optional
        A built network (when loading).
    """

    def __init__(self, channels=(16, 32, 64), convs_per_level: int = 2, scale: float = 4.0,
                 meta: dict | None = None, network=None):
        self.channels = [int(c) for c in channels]
        if isinstance(convs_per_level, bool) or int(convs_per_level) < 1:
            raise ConfigError("must be an integer >= 1.", key="convs_per_level",
                              received={"convs_per_level": convs_per_level})
        self.convs_per_level = int(convs_per_level)
        if not (float(scale) > 0):
            raise ConfigError("must be > 0 Mpc/h.", key="scale", received={"scale": scale})
        self.scale = float(scale)
        self.meta = dict(meta or {})
        self.network = network if network is not None else build_d3m_network(
            self.channels, self.convs_per_level)

    @property
    def multiple(self) -> int:
        """The lattice size must be a multiple of this (``2 ** (levels - 1)``)."""
        return 2 ** (len(self.channels) - 1)

    def config(self) -> dict:
        """The model's configuration as written to its JSON sidecar."""
        return {"format": FORMAT, "channels": self.channels,
                "convs_per_level": self.convs_per_level, "scale": self.scale,
                "meta": self.meta}

    def predict(self, zeldovich: np.ndarray, batch_size: int = 1) -> np.ndarray:
        """Emulated displacement (Mpc/h) from the Zel'dovich displacement (Mpc/h).

        Parameters
        ----------
        zeldovich : numpy.ndarray, shape (3, n, n, n) or (batch, 3, n, n, n)
            ``D1(a) Psi1`` on the particle lattice, channel first (the layout of
            :mod:`astrogen.datasets.nbody_displacements`), ``n`` a multiple of
            :attr:`multiple`.

        Returns
        -------
        numpy.ndarray, same shape, float32, Mpc/h.
        """
        z = np.asarray(zeldovich, np.float32)
        single = z.ndim == 4
        if single:
            z = z[None]
        if z.ndim != 5 or z.shape[1] != 3 or len(set(z.shape[2:])) != 1 \
                or z.shape[2] % self.multiple:
            raise ModelError(f"needs (batch, 3, n, n, n) with n a multiple of {self.multiple}.",
                             key="zeldovich", received={"shape": z.shape})
        u = np.moveaxis(z, 1, -1) / self.scale
        outs = [np.asarray(self.network(u[i:i + batch_size], training=False))
                for i in range(0, len(u), batch_size)]
        out = np.moveaxis(np.concatenate(outs), -1, 1) * self.scale
        return out[0] if single else out

    def losses(self, u, target, training: bool = False) -> dict:
        """Loss of a batch: ``u`` and ``target`` ``(batch, n, n, n, 3)`` in units of
        :attr:`scale`; ``loss`` = mean squared displacement error (dimensionless), ``rms``
        its square root in Mpc/h."""
        pred = self.network(u, training=training)
        mse = ops.mean(ops.square(pred - target))
        return {"loss": mse, "rms_mpc_h": ops.sqrt(mse) * self.scale}

    def make_train_step(self, optimizer):
        """A compiled ``step(u, target) -> loss terms`` applying one ``optimizer`` update."""
        from astrogen.models.losses import compiled_step

        return compiled_step(self.network, optimizer,
                             lambda u, t: self.losses(u, t, training=True))

    def save(self, path) -> Path:
        """Write ``path`` (``.keras``) and its ``.json`` sidecar (:meth:`config`)."""
        from astrogen.models.pretrained import save_network

        return save_network(self.network, path, self.config())


def load_d3m(path) -> D3M:
    """Load what :meth:`D3M.save` wrote (:class:`ModelError` naming ``model`` if the file or
    its sidecar is missing or of another kind)."""
    path = Path(path)
    side = path.with_suffix(".json")
    if not (path.is_file() and side.is_file()):
        raise ModelError("missing model file or its .json sidecar.", key="model",
                         received={"model": str(path)})
    cfg = json.loads(side.read_text())
    if cfg.get("format") != FORMAT:
        raise ModelError("not an astrogen D3M file.", key="model",
                         received={"format": cfg.get("format")})
    net = keras.models.load_model(path, compile=False)
    return D3M(channels=cfg["channels"], convs_per_level=cfg["convs_per_level"],
               scale=cfg["scale"], meta=cfg["meta"], network=net)

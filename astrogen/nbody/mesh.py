"""Cloud-in-cell (CIC) mass assignment and interpolation on a periodic mesh, in TensorFlow.

Positions are given in *mesh units* (cell index, ``x / cell_size``): mesh point ``i`` sits at
``x = i * cell_size``, so a particle exactly on a mesh point puts all its mass there. Each
particle spreads its weight over the ``2^d`` surrounding points with the tri-linear CIC
weights (Hockney & Eastwood 1988, "Computer Simulation Using Particles", ch. 5), which sum
to one: painting conserves the total weight exactly (up to float rounding).
"""
from __future__ import annotations

import itertools
from typing import Any

import numpy as np

from astrogen.errors import ConfigError

__all__ = ["cic_paint", "cic_readout", "paint_density"]


def _tf():
    import tensorflow as tf

    return tf


def _check_mesh_n(n: Any) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 2:
        raise ConfigError("must be an integer >= 2.", key="n_mesh", received={"n_mesh": n})
    return int(n)


def _check_positions(tf, positions):
    pos = tf.convert_to_tensor(positions)
    if not pos.dtype.is_floating:
        pos = tf.cast(pos, tf.float32)
    if pos.shape.rank != 2 or pos.shape[-1] not in (2, 3):
        raise ConfigError("positions must have shape (n_particles, 2 or 3).", key="positions",
                          received={"shape": tuple(pos.shape)})
    return pos


def cic_indices_weights(tf, pos, n: int):
    """Indices (n_part, 2^d, d) and weights (n_part, 2^d) of the CIC stencil."""
    d = pos.shape[-1]
    pos = tf.math.floormod(pos, tf.cast(n, pos.dtype))
    base = tf.floor(pos)
    frac = pos - base
    base = tf.cast(base, tf.int32)
    offsets = np.array(list(itertools.product((0, 1), repeat=d)), dtype=np.int32)  # (2^d, d)
    off = tf.constant(offsets)
    idx = tf.math.floormod(base[:, None, :] + off[None, :, :], n)
    offf = tf.cast(off, pos.dtype)[None, :, :]
    w = tf.reduce_prod(offf * frac[:, None, :] + (1.0 - offf) * (1.0 - frac[:, None, :]),
                       axis=-1)
    return idx, w


def cic_paint(positions, n_mesh: int, weights=None):
    """Paint particles onto a periodic mesh with cloud-in-cell weights.

    Parameters
    ----------
    positions : array_like or tf.Tensor, shape (n_particles, d)
        Positions in mesh units (cells), any real value (wrapped periodically); d = 2 or 3.
    n_mesh : int
        Mesh points per side.
    weights : array_like or tf.Tensor, shape (n_particles,), optional
        Mass of each particle (any unit; default 1).

    Returns
    -------
    tf.Tensor, shape (n_mesh,)*d
        Mass per mesh cell, same unit as ``weights``; its sum equals ``sum(weights)``.
    """
    tf = _tf()
    n = _check_mesh_n(n_mesh)
    pos = _check_positions(tf, positions)
    d = pos.shape[-1]
    idx, w = cic_indices_weights(tf, pos, n)
    if weights is not None:
        weights = tf.cast(tf.convert_to_tensor(weights), pos.dtype)
        w = w * weights[:, None]
    mesh = tf.zeros((n,) * d, dtype=pos.dtype)
    return tf.tensor_scatter_nd_add(mesh, tf.reshape(idx, (-1, d)), tf.reshape(w, (-1,)))


def cic_readout(mesh, positions):
    """Interpolate a periodic mesh at particle positions with cloud-in-cell weights.

    Parameters
    ----------
    mesh : array_like or tf.Tensor, shape (n,)*d
        Field values at the mesh points (any unit).
    positions : array_like or tf.Tensor, shape (n_particles, d)
        Positions in mesh units (cells), wrapped periodically.

    Returns
    -------
    tf.Tensor, shape (n_particles,)
        Interpolated values, same unit as ``mesh``.
    """
    tf = _tf()
    mesh = tf.convert_to_tensor(mesh)
    pos = _check_positions(tf, positions)
    d = pos.shape[-1]
    if mesh.shape.rank != d or len(set(mesh.shape.as_list())) != 1:
        raise ConfigError("mesh must be square/cubic with the positions' dimension.", key="mesh",
                          received={"mesh_shape": tuple(mesh.shape), "d": d})
    n = int(mesh.shape[0])
    pos = tf.cast(pos, mesh.dtype)
    idx, w = cic_indices_weights(tf, pos, n)
    vals = tf.gather_nd(mesh, idx)  # (n_part, 2^d)
    return tf.reduce_sum(vals * w, axis=-1)


def paint_density(positions: Any, box_size: float, n_mesh: int) -> np.ndarray:
    """Density contrast of particles of equal mass on a periodic CIC mesh.

    The same cloud-in-cell assignment as :func:`cic_paint`, done in numpy (``np.bincount``
    over the 2^d stencil offsets), which is ~10x faster than eager TensorFlow for one paint.

    Parameters
    ----------
    positions : array_like, shape (n_particles, d)
        Comoving positions in Mpc/h.
    box_size : float
        Box side in Mpc/h.
    n_mesh : int
        Mesh points per side.

    Returns
    -------
    numpy.ndarray, shape (n_mesh,)*d
        ``rho / rho_mean - 1`` (dimensionless, float64).
    """
    if not (float(box_size) > 0):
        raise ConfigError("must be > 0 Mpc/h.", key="box_size", received={"box_size": box_size})
    n = _check_mesh_n(n_mesh)
    pos = np.asarray(positions, dtype=np.float64)
    if pos.ndim != 2 or pos.shape[1] not in (2, 3) or pos.shape[0] == 0:
        raise ConfigError("positions must have shape (n_particles, 2 or 3).", key="positions",
                          received={"shape": pos.shape})
    d = pos.shape[1]
    cells = np.mod(pos * (n / float(box_size)), n)
    base = np.floor(cells)
    frac = cells - base
    base = base.astype(np.int64)
    mesh = np.zeros(n ** d)
    for off in itertools.product((0, 1), repeat=d):
        idx = np.zeros(len(pos), np.int64)
        w = np.ones(len(pos))
        for axis, o in enumerate(off):
            idx = idx * n + (base[:, axis] + o) % n
            w = w * (frac[:, axis] if o else 1.0 - frac[:, axis])
        mesh += np.bincount(idx, weights=w, minlength=n ** d)
    return mesh.reshape((n,) * d) * (n ** d / pos.shape[0]) - 1.0

"""Cloud-in-cell (CIC) mass assignment and interpolation on a periodic mesh.

TensorFlow versions (:func:`cic_paint`, :func:`cic_readout`: differentiable, any device) and
numpy versions built on one precomputed stencil (:func:`cic_stencil`, then
:func:`paint_stencil` and :func:`readout_stencil`), which the particle-mesh solver computes
once per force evaluation and uses for both the paint and the readout.

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

__all__ = ["cic_paint", "cic_readout", "paint_density", "cic_stencil", "paint_stencil",
           "readout_stencil"]


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


def cic_stencil(cells: np.ndarray, n: int, dtype=np.float32, out=None):
    """Flat mesh indices and weights of the CIC stencil of every particle (numpy).

    Parameters
    ----------
    cells : numpy.ndarray, shape (d, n_particles)
        Positions in mesh units (cells), axis-major (one contiguous row per axis), within
        ``[0, n]`` (wrap positions into the box first; ``n`` itself is mapped to 0).
    n : int
        Mesh points per side.
    dtype : numpy dtype
        Float type of the weights.
    out : (numpy.ndarray, numpy.ndarray), optional
        Arrays to write ``idx`` and ``w`` into (shapes and dtypes as returned).

    Returns
    -------
    idx : numpy.ndarray of intp, shape (2^d, n_particles)
        Index of each of the ``2^d`` neighbouring mesh points in the C-ordered flat mesh.
    w : numpy.ndarray, shape (2^d, n_particles)
        Tri-linear CIC weights (dimensionless), summing to one over the stencil.
    """
    cells = np.asarray(cells)
    d, npart = cells.shape
    base = np.floor(cells)
    frac = (cells - base).astype(dtype, copy=False)
    i0 = base.astype(np.intp)
    np.putmask(i0, i0 >= n, i0 - n)
    i1 = i0 + 1
    np.putmask(i1, i1 >= n, i1 - n)
    # per axis: (flat-index term, weight) of the lower and the upper neighbour
    terms = [((i0[a] * n ** (d - 1 - a), 1.0 - frac[a]), (i1[a] * n ** (d - 1 - a), frac[a]))
             for a in range(d)]
    if out is None:
        idx, w = np.empty((2 ** d, npart), np.intp), np.empty((2 ** d, npart), dtype)
    else:
        idx, w = out
    for c, off in enumerate(itertools.product((0, 1), repeat=d)):
        np.add(terms[0][off[0]][0], terms[1][off[1]][0], out=idx[c])
        np.multiply(terms[0][off[0]][1], terms[1][off[1]][1], out=w[c])
        for a in range(2, d):
            idx[c] += terms[a][off[a]][0]
            w[c] *= terms[a][off[a]][1]
    return idx, w


def paint_stencil(idx: np.ndarray, w: np.ndarray, n: int, d: int = 3) -> np.ndarray:
    """Paint particles of unit mass with a precomputed CIC stencil (one ``np.bincount``).

    Parameters
    ----------
    idx, w : numpy.ndarray, shape (2^d, n_particles)
        From :func:`cic_stencil`.
    n : int
        Mesh points per side.
    d : int
        Dimension (2 or 3).

    Returns
    -------
    numpy.ndarray, shape (n,)*d, float64
        Particles per mesh cell (its sum is the number of particles).
    """
    return np.bincount(idx.ravel(), weights=w.ravel(), minlength=n ** d).reshape((n,) * d)


def readout_stencil(mesh: np.ndarray, idx: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Interpolate a periodic mesh at the particles with a precomputed CIC stencil.

    Parameters
    ----------
    mesh : numpy.ndarray, shape (n,)*d
        Field values at the mesh points (any unit).
    idx, w : numpy.ndarray, shape (2^d, n_particles)
        From :func:`cic_stencil` for the same ``n``.

    Returns
    -------
    numpy.ndarray, shape (n_particles,)
        Interpolated values, same unit as ``mesh``.
    """
    return np.einsum("cn,cn->n", w, np.take(mesh.reshape(-1), idx))


def paint_density(positions: Any, box_size: float, n_mesh: int) -> np.ndarray:
    """Density contrast of particles of equal mass on a periodic CIC mesh.

    The same cloud-in-cell assignment as :func:`cic_paint`, done in numpy in float64 (one
    ``np.bincount`` over the 2^d stencil points of :func:`cic_stencil`).

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
    cells = np.ascontiguousarray(np.mod(pos * (n / float(box_size)), n).T)
    idx, w = cic_stencil(cells, n, dtype=np.float64)
    mesh = paint_stencil(idx, w, n, pos.shape[1])
    return mesh * (n ** pos.shape[1] / pos.shape[0]) - 1.0

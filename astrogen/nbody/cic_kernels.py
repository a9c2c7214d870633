"""Compiled (numba) cloud-in-cell kernels of the particle-mesh force: paint, and one fused
readout of the three components of the finite-difference gradient of the potential.

They do what the numpy path of :meth:`astrogen.nbody.pm.ParticleMesh._force_numpy` does
(:func:`astrogen.nbody.mesh.cic_stencil` + ``np.bincount``; three
:func:`astrogen.nbody.pm.stencil_derivative` meshes; three ``np.take`` + ``einsum`` readouts)
with the same floating-point operations in the same order, without the stencil arrays
(``8 x n_particles`` indices and weights, rebuilt on the fly per particle):

* :func:`paint` adds the float32 CIC weights (the same products as
  :func:`~astrogen.nbody.mesh.cic_stencil`) of each particle in turn into a float64 mesh.
  ``np.bincount`` adds them corner by corner instead; the sums differ only where float64
  rounds a sum of float32 weights (weights spanning more than 2^29 in size in one cell), and
  the float32 density contrast built from them is the same (tested bit for bit on PM boxes).
* :func:`gradient_mesh` writes the three unnormalised derivatives ``fd4``
  (``8 (f[i+1] - f[i-1]) - f[i+2] + f[i-2]``, rounded step by step as the numpy passes do) or
  ``fd2`` of a periodic mesh into one ``(n, n, n, 3)`` array, so that a particle's three force
  components at a mesh point are one contiguous 12-byte row.
* :func:`readout3` interpolates the three components at each particle with one set of CIC
  indices and weights (one gather instead of three), summing the corners in float32 in
  stencil order.
* :func:`readout_gradient` (what the PM force uses) does both at once: the three differences
  at each of a particle's 8 mesh points, from the potential's values around them, summed as
  :func:`readout3` sums them — bit for bit ``readout3(gradient_mesh(f), cells)``, without
  writing the ``(n, n, n, 3)`` gradient mesh (~20 % faster than the two passes).
* :func:`readout` is the one-component readout (the floor of a PM step's readout).

Positions come in mesh units, axis-major ``(3, n_particles)`` float32, wrapped into
``[0, n]`` (``n`` maps to 0), as for :func:`~astrogen.nbody.mesh.cic_stencil`.

Numba is a dependency of the package; if it cannot be imported (:data:`AVAILABLE` is False)
the PM solver falls back to its numpy path, which gives the same results. The kernels run on
one thread (deterministic: the paint's additions have a fixed order) and are compiled on
first use and cached on disk (``cache=True``).
"""
from __future__ import annotations

import numpy as np

try:  # pragma: no cover - exercised by whichever branch the environment has
    import numba

    AVAILABLE = True
except ImportError:  # pragma: no cover
    numba = None
    AVAILABLE = False

__all__ = ["AVAILABLE", "paint", "gradient_mesh", "readout3", "readout_gradient", "readout"]


def _jit(fn):
    if not AVAILABLE:  # pragma: no cover
        return fn
    return numba.njit(cache=True, nogil=True, boundscheck=False)(fn)


@_jit
def _axis_terms(x, n):
    """Lower index, upper index (both wrapped) and upper weight of one coordinate (cells)."""
    base = np.floor(x)
    frac = x - base
    i0 = np.intp(base)
    if i0 >= n:
        i0 -= n
    i1 = i0 + 1
    if i1 >= n:
        i1 -= n
    return i0, i1, frac


@_jit
def _paint(cells, n, out):
    npart = cells.shape[1]
    one = np.float32(1.0)
    flat = out.reshape(-1)
    n2 = n * n
    for p in range(npart):  # particle by particle: its 8 mesh points are close in memory
        a0, b0, f0 = _axis_terms(cells[0, p], n)
        a1, b1, f1 = _axis_terms(cells[1, p], n)
        a2, b2, f2 = _axis_terms(cells[2, p], n)
        g0, g1, g2 = one - f0, one - f1, one - f2
        j00, j01, j10, j11 = a0 * n2 + a1 * n, a0 * n2 + b1 * n, b0 * n2 + a1 * n, \
            b0 * n2 + b1 * n
        w00, w01, w10, w11 = g0 * g1, g0 * f1, f0 * g1, f0 * f1
        flat[j00 + a2] += np.float64(w00 * g2)
        flat[j00 + b2] += np.float64(w00 * f2)
        flat[j01 + a2] += np.float64(w01 * g2)
        flat[j01 + b2] += np.float64(w01 * f2)
        flat[j10 + a2] += np.float64(w10 * g2)
        flat[j10 + b2] += np.float64(w10 * f2)
        flat[j11 + a2] += np.float64(w11 * g2)
        flat[j11 + b2] += np.float64(w11 * f2)
    return out


@_jit
def _neighbours(n):
    """``(i + s) mod n`` for s = -2, -1, 1, 2 (rows 0..3), without a modulo per mesh point."""
    nb = np.empty((4, n), np.intp)
    for i in range(n):
        nb[0, i], nb[1, i], nb[2, i], nb[3, i] = (i - 2) % n, (i - 1) % n, (i + 1) % n, \
            (i + 2) % n
    return nb


@_jit
def _d(fd4, m2, m1, p1, p2):
    """One unnormalised derivative from the four neighbours' values, rounded as the numpy
    passes of :func:`astrogen.nbody.pm.stencil_derivative` round it."""
    d = p1 - m1
    if fd4:
        d = (d * np.float32(8.0) - p2) + m2
    return d


@_jit
def _gradient_mesh(f, fd4, out):
    n = f.shape[0]
    nb = _neighbours(n)
    for i in range(n):
        im2, im1, ip1, ip2 = nb[0, i], nb[1, i], nb[2, i], nb[3, i]
        for j in range(n):
            jm2, jm1, jp1, jp2 = nb[0, j], nb[1, j], nb[2, j], nb[3, j]
            for k in range(n):
                km2, km1, kp1, kp2 = nb[0, k], nb[1, k], nb[2, k], nb[3, k]
                out[i, j, k, 0] = _d(fd4, f[im2, j, k], f[im1, j, k], f[ip1, j, k],
                                     f[ip2, j, k])
                out[i, j, k, 1] = _d(fd4, f[i, jm2, k], f[i, jm1, k], f[i, jp1, k],
                                     f[i, jp2, k])
                out[i, j, k, 2] = _d(fd4, f[i, j, km2], f[i, j, km1], f[i, j, kp1],
                                     f[i, j, kp2])
    return out


@_jit
def _readout3(g, cells, n, out):
    npart = cells.shape[1]
    one = np.float32(1.0)
    flat = g.reshape(-1)
    n2 = n * n
    for p in range(npart):
        a0, b0, f0 = _axis_terms(cells[0, p], n)
        a1, b1, f1 = _axis_terms(cells[1, p], n)
        a2, b2, f2 = _axis_terms(cells[2, p], n)
        g0, g1, g2 = one - f0, one - f1, one - f2
        j00, j01, j10, j11 = a0 * n2 + a1 * n, a0 * n2 + b1 * n, b0 * n2 + a1 * n, \
            b0 * n2 + b1 * n
        w00, w01, w10, w11 = g0 * g1, g0 * f1, f0 * g1, f0 * f1
        s0 = np.float32(0.0)
        s1 = np.float32(0.0)
        s2 = np.float32(0.0)
        # the 8 corners in stencil order (first axis slowest), 3 contiguous values each
        for jj, ww in ((j00, w00), (j01, w01), (j10, w10), (j11, w11)):
            for kk, wk in ((a2, g2), (b2, f2)):
                w = ww * wk
                m = 3 * (jj + kk)
                s0 += w * flat[m]
                s1 += w * flat[m + 1]
                s2 += w * flat[m + 2]
        out[0, p] = s0
        out[1, p] = s1
        out[2, p] = s2
    return out


@_jit
def _readout_gradient(f, cells, fd4, nb, out):
    n = f.shape[0]
    npart = cells.shape[1]
    one = np.float32(1.0)
    for p in range(npart):
        a0, b0, f0 = _axis_terms(cells[0, p], n)
        a1, b1, f1 = _axis_terms(cells[1, p], n)
        a2, b2, f2 = _axis_terms(cells[2, p], n)
        g0, g1, g2 = one - f0, one - f1, one - f2
        s0 = np.float32(0.0)
        s1 = np.float32(0.0)
        s2 = np.float32(0.0)
        for i, wi in ((a0, g0), (b0, f0)):  # the 8 corners in stencil order
            for j, wj in ((a1, g1), (b1, f1)):
                wij = wi * wj
                for k, wk in ((a2, g2), (b2, f2)):
                    w = wij * wk
                    s0 += w * _d(fd4, f[nb[0, i], j, k], f[nb[1, i], j, k],
                                 f[nb[2, i], j, k], f[nb[3, i], j, k])
                    s1 += w * _d(fd4, f[i, nb[0, j], k], f[i, nb[1, j], k],
                                 f[i, nb[2, j], k], f[i, nb[3, j], k])
                    s2 += w * _d(fd4, f[i, j, nb[0, k]], f[i, j, nb[1, k]],
                                 f[i, j, nb[2, k]], f[i, j, nb[3, k]])
        out[0, p] = s0
        out[1, p] = s1
        out[2, p] = s2
    return out


@_jit
def _readout(mesh, cells, n, out):
    npart = cells.shape[1]
    one = np.float32(1.0)
    flat = mesh.reshape(-1)
    n2 = n * n
    for p in range(npart):
        a0, b0, f0 = _axis_terms(cells[0, p], n)
        a1, b1, f1 = _axis_terms(cells[1, p], n)
        a2, b2, f2 = _axis_terms(cells[2, p], n)
        s = np.float32(0.0)
        for c in range(8):
            if (c >> 2) & 1:
                j0, w0 = b0 * n2, f0
            else:
                j0, w0 = a0 * n2, one - f0
            if (c >> 1) & 1:
                j1, w1 = b1 * n, f1
            else:
                j1, w1 = a1 * n, one - f1
            if c & 1:
                j2, w2 = b2, f2
            else:
                j2, w2 = a2, one - f2
            s += ((w0 * w1) * w2) * flat[(j0 + j1) + j2]
        out[p] = s
    return out


def _cells(cells: np.ndarray) -> np.ndarray:
    cells = np.asarray(cells)
    if cells.dtype != np.float32 or cells.ndim != 2 or cells.shape[0] != 3:
        raise ValueError(f"cells must be float32 of shape (3, n_particles), got "
                         f"{cells.dtype} {cells.shape}")
    return np.ascontiguousarray(cells)


def paint(cells: np.ndarray, n: int, out: np.ndarray | None = None) -> np.ndarray:
    """CIC paint of particles of unit mass: particles per mesh cell.

    Parameters
    ----------
    cells : numpy.ndarray, float32, shape (3, n_particles)
        Positions in mesh units (cells), within ``[0, n]``.
    n : int
        Mesh points per side.
    out : numpy.ndarray, float64, shape (n, n, n), optional
        Mesh to write into (zeroed first).

    Returns
    -------
    numpy.ndarray, float64, shape (n, n, n)
        Particles per cell (dimensionless; sums to ``n_particles``), equal to
        ``paint_stencil(*cic_stencil(cells, n, np.float32), n)`` to float64 rounding.
    """
    cells = _cells(cells)
    out = np.zeros((n, n, n), np.float64) if out is None else out
    out.fill(0.0)
    return _paint(cells, int(n), out)


def gradient_mesh(f: np.ndarray, gradient: str = "fd4",
                  out: np.ndarray | None = None) -> np.ndarray:
    """The three unnormalised periodic finite differences of a mesh, interleaved.

    Parameters
    ----------
    f : numpy.ndarray, float32, shape (n, n, n)
        Periodic mesh (any unit).
    gradient : {"fd4", "fd2"}
        Stencil (see :func:`astrogen.nbody.pm.stencil_derivative`).
    out : numpy.ndarray, float32, shape (n, n, n, 3), optional

    Returns
    -------
    numpy.ndarray, float32, shape (n, n, n, 3)
        ``out[..., a]`` is bit-identical to ``stencil_derivative(f, a, gradient)``; same unit
        as ``f``.
    """
    if gradient not in ("fd2", "fd4"):
        raise ValueError(f"gradient must be 'fd2' or 'fd4', got {gradient!r}")
    f = np.ascontiguousarray(f, np.float32)
    out = np.empty(f.shape + (3,), np.float32) if out is None else out
    return _gradient_mesh(f, gradient == "fd4", out)


def readout3(g: np.ndarray, cells: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """CIC interpolation of a 3-component mesh at the particles, one gather for all three.

    Parameters
    ----------
    g : numpy.ndarray, float32, shape (n, n, n, 3)
        Vector mesh (e.g. from :func:`gradient_mesh`), any unit.
    cells : numpy.ndarray, float32, shape (3, n_particles)
        Positions in mesh units, within ``[0, n]``.
    out : numpy.ndarray, float32, shape (3, n_particles), optional

    Returns
    -------
    numpy.ndarray, float32, shape (3, n_particles)
        Interpolated components, same unit as ``g``.
    """
    cells = _cells(cells)
    out = np.empty((3, cells.shape[1]), np.float32) if out is None else out
    return _readout3(np.ascontiguousarray(g, np.float32), cells, int(g.shape[0]), out)


def readout_gradient(f: np.ndarray, cells: np.ndarray, gradient: str = "fd4",
                     out: np.ndarray | None = None) -> np.ndarray:
    """CIC interpolation of the three finite differences of a mesh at the particles, the
    differences taken on the fly at each particle's 8 mesh points (no gradient mesh).

    Parameters
    ----------
    f : numpy.ndarray, float32, shape (n, n, n)
        Periodic mesh (any unit), e.g. the potential.
    cells : numpy.ndarray, float32, shape (3, n_particles)
        Positions in mesh units, within ``[0, n]``.
    gradient : {"fd4", "fd2"}
        Stencil (see :func:`astrogen.nbody.pm.stencil_derivative`).
    out : numpy.ndarray, float32, shape (3, n_particles), optional

    Returns
    -------
    numpy.ndarray, float32, shape (3, n_particles)
        ``readout3(gradient_mesh(f, gradient), cells)``, bit for bit (same operations in
        the same order); same unit as ``f``.
    """
    if gradient not in ("fd2", "fd4"):
        raise ValueError(f"gradient must be 'fd2' or 'fd4', got {gradient!r}")
    cells = _cells(cells)
    f = np.ascontiguousarray(f, np.float32)
    out = np.empty((3, cells.shape[1]), np.float32) if out is None else out
    return _readout_gradient(f, cells, gradient == "fd4", _neighbours(int(f.shape[0])), out)


def readout(mesh: np.ndarray, cells: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """CIC interpolation of a scalar float32 mesh ``(n, n, n)`` at the particles.

    Parameters
    ----------
    mesh : numpy.ndarray, float32, shape (n, n, n)
        Field values at the mesh points (any unit).
    cells : numpy.ndarray, float32, shape (3, n_particles)
        Positions in mesh units, within ``[0, n]``.
    out : numpy.ndarray, float32, shape (n_particles,), optional

    Returns
    -------
    numpy.ndarray, float32, shape (n_particles,)
        Same unit as ``mesh``.
    """
    cells = _cells(cells)
    out = np.empty(cells.shape[1], np.float32) if out is None else out
    return _readout(np.ascontiguousarray(mesh, np.float32), cells, int(mesh.shape[0]), out)

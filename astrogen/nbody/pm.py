"""Particle-mesh N-body solver following the FastPM scheme (numpy/scipy or TensorFlow).

Particles start on a lattice displaced by 2LPT at ``a_init``; they are then moved with a
kick-drift-kick leapfrog whose kick and drift factors are the FastPM ones (Feng et al. 2016,
arXiv:1603.00476), built from the linear growth factor so that the growth of large-scale
modes is exact whatever the number of steps. Gravity is solved on a periodic mesh (``B``
times finer than the particle lattice) by FFT, with CIC painting and interpolation. The
design follows the public FlowPM code (Modi, Lanusse & Seljak 2020, arXiv:2010.11847).

Two backends compute the same force. ``numpy`` (default, CPU): the CIC paint and one fused
readout of the three force components (finite differences taken at the particles' mesh
points) are compiled numba kernels
(:mod:`astrogen.nbody.cic_kernels`; without numba, or with ``kernels="numpy"``, the CIC stencil
is computed once per force evaluation in numpy and used for the paint, one ``np.bincount``,
and the readouts, ``np.take``: the same forces); the potential takes one real FFT pair (``scipy.fft``, float32,
all cores) and the finite-difference gradient (``fd2``/``fd4``) is applied in real space,
which is the same linear operator as its Fourier kernel. ``tensorflow`` (the original code:
``tensor_scatter_nd_add``, ``gather_nd``, one forward and three inverse FFTs) is kept for
GPUs and as the reference of the numpy backend.

Units: positions ``x`` in comoving Mpc/h; momenta ``p = a^3 E(a) dx/da`` in Mpc/h (time in
units of 1/H0); peculiar velocities ``v = a dx/dt = 100 p / a`` in km/s; the gravitational
"acceleration" ``g = -grad(phi)``, ``nabla^2 phi = delta``, in Mpc/h (the ``3/2 Om0 / a`` of the
Poisson equation is absorbed in the kick factor, see
:meth:`astrogen.cosmology.Cosmology.kick_factor`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from astrogen.batch import DensityField
from astrogen.cosmology.background import Cosmology
from astrogen.cosmology.initial import gaussian_field, lpt_particles
from astrogen.cosmology.power import LinearPower
from astrogen.errors import ConfigError
from astrogen.seeds import derive_seed

__all__ = ["ParticleMesh", "PMSnapshot", "PMResult", "GRADIENT_KERNELS", "VELOCITY_UNIT",
           "BACKENDS", "KERNELS", "stencil_derivative"]

#: Gradient kernels: ``exact`` (``i k``), ``fd2`` (2-point central difference with the matching
#: 7-point Laplacian), ``fd4`` (4-point central difference, exact Laplacian).
GRADIENT_KERNELS = ("exact", "fd2", "fd4")

#: Force backends (see the module docstring).
BACKENDS = ("numpy", "tensorflow")

#: CIC kernels of the numpy backend (see :class:`ParticleMesh`, ``kernels``).
KERNELS = ("auto", "numba", "numpy")

#: km/s per unit of ``p / a`` (H0 = 100 h km/s/Mpc with lengths in Mpc/h).
VELOCITY_UNIT = 100.0


@dataclass
class PMSnapshot:
    """Particles and density of a PM run at one scale factor.

    Attributes
    ----------
    a : float
        Scale factor (dimensionless); ``redshift = 1/a - 1``.
    positions : numpy.ndarray, shape (n_particles, 3)
        Comoving positions in Mpc/h, wrapped into ``[0, box_size)``.
    momenta : numpy.ndarray, shape (n_particles, 3)
        FastPM momenta ``p = a^3 E dx/da`` in Mpc/h.
    density : DensityField
        CIC density contrast on the output mesh.
    """

    a: float
    positions: np.ndarray
    momenta: np.ndarray
    density: DensityField

    @property
    def redshift(self) -> float:
        """Redshift ``z = 1 / a - 1`` of the snapshot."""
        return 1.0 / self.a - 1.0

    @property
    def velocities(self) -> np.ndarray:
        """Peculiar velocities ``a dx/dt`` in km/s, shape (n_particles, 3)."""
        return VELOCITY_UNIT * self.momenta / self.a


@dataclass
class PMResult:
    """Output of :meth:`ParticleMesh.run`.

    Attributes
    ----------
    snapshots : list of PMSnapshot
        One per requested output scale factor, in increasing ``a``.
    linear_delta : numpy.ndarray, shape (n,)*3
        Linear density contrast at a = 1 on the particle lattice (the initial conditions).
    box_size : float
        Box side in Mpc/h.
    cosmology : Cosmology
    meta : dict
        Run parameters (``n_particles``, ``n_mesh``, ``n_steps``, ``a_init``...).
    """

    snapshots: list[PMSnapshot]
    linear_delta: np.ndarray
    box_size: float
    cosmology: Cosmology
    meta: dict[str, Any] = field(default_factory=dict)

    def at(self, a: float) -> PMSnapshot:
        """The snapshot closest to scale factor ``a``."""
        i = int(np.argmin([abs(s.a - a) for s in self.snapshots]))
        return self.snapshots[i]

    @property
    def fields(self) -> list[DensityField]:
        """The density field of every snapshot, in output order."""
        return [s.density for s in self.snapshots]


def _positive_int(v: Any, key: str, minimum: int = 1) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < minimum:
        raise ConfigError(f"must be an integer >= {minimum}.", key=key, received={key: v})
    return int(v)


class ParticleMesh:
    """FastPM-style particle-mesh simulation of a periodic box.

    Parameters
    ----------
    n_particles : int
        Particles per side (even, 8..512); ``n_particles^3`` particles.
    box_size : float
        Comoving box side in Mpc/h.
    cosmology : Cosmology, optional
        Default :data:`astrogen.cosmology.PLANCK18`.
    power : callable, optional
        Linear ``P(k)`` at a = 1 in (Mpc/h)^3, ``k`` in h/Mpc. Default Eisenstein & Hu with
        wiggles normalised to ``cosmology.sigma8``.
    mesh_factor : int
        Force mesh points per side per particle (``B``; 2 is FastPM's usual choice).
    a_init : float
        Scale factor of the 2LPT initial conditions.
    n_steps : int
        Number of kick-drift-kick steps from ``a_init`` to the last output, linear in ``a``.
    lpt_order : int
        1 (Zel'dovich) or 2 (2LPT) initial conditions.
    gradient : {"fd4", "fd2", "exact"}
        Fourier kernel of the force (see :data:`GRADIENT_KERNELS`). ``fd4`` (default, as in
        FlowPM) vanishes at the mesh Nyquist frequency and so suppresses the force that the
        particle lattice aliases onto large scales when ``mesh_factor > 1``; ``exact`` with
        ``mesh_factor = 2`` makes the fundamental mode's force ~7 % too strong.
    density_mesh : int, optional
        Points per side of the output density fields (default ``n_particles``).
    fixed_amplitude : bool
        Fixed-amplitude initial conditions (Angulo & Pontzen 2016, arXiv:1603.05253).
    inverted_phase : bool
        Flip the sign of the initial field (paired simulations).
    backend : {"numpy", "tensorflow"}
        Force computation (see the module docstring); both give the same trajectories to
        float32 rounding.
    workers : int, optional
        Threads of the numpy backend's FFTs (default: the CPUs this process may use). FFT
        results do not depend on it.
    kernels : {"auto", "numba", "numpy"}
        CIC paint, gradient and readout of the numpy backend: compiled
        (:mod:`astrogen.nbody.cic_kernels`, one fused readout of the three force components)
        or plain numpy; ``auto`` (default) takes numba when it imports. Same forces either way
        (tested).

    References
    ----------
    Feng, Chu, Seljak & McDonald 2016, arXiv:1603.00476 (FastPM).
    Modi, Lanusse & Seljak 2020, arXiv:2010.11847 (FlowPM).
    Crocce, Pueblas & Scoccimarro 2006, arXiv:astro-ph/0606505 (2LPT initial conditions).
    """

    def __init__(self, n_particles: int = 64, box_size: float = 128.0,
                 cosmology: Cosmology | None = None, power=None, mesh_factor: int = 2,
                 a_init: float = 0.1, n_steps: int = 10, lpt_order: int = 2,
                 gradient: str = "fd4", density_mesh: int | None = None,
                 fixed_amplitude: bool = False, inverted_phase: bool = False,
                 backend: str = "numpy", workers: int | None = None, kernels: str = "auto"):
        self.n = _positive_int(n_particles, "n_particles", 8)
        if self.n % 2 or self.n > 512:
            raise ConfigError("must be even and <= 512.", key="n_particles",
                              received={"n_particles": n_particles})
        try:
            self.box_size = float(box_size)
        except (TypeError, ValueError):
            self.box_size = float("nan")
        if not (np.isfinite(self.box_size) and self.box_size > 0):
            raise ConfigError("must be > 0 Mpc/h.", key="box_size",
                              received={"box_size": box_size})
        self.cosmology = cosmology if cosmology is not None else Cosmology()
        if not isinstance(self.cosmology, Cosmology):
            raise ConfigError("must be an astrogen.cosmology.Cosmology.", key="cosmology",
                              received={"cosmology": type(cosmology).__name__})
        self.power = power if power is not None else LinearPower(self.cosmology)
        if not callable(self.power):
            raise ConfigError("must be a callable P(k).", key="power")
        self.mesh_factor = _positive_int(mesh_factor, "mesh_factor", 1)
        if self.mesh_factor > 4:
            raise ConfigError("must be 1..4.", key="mesh_factor",
                              received={"mesh_factor": mesh_factor})
        self.n_mesh = self.n * self.mesh_factor
        if not (1e-3 <= float(a_init) < 1.0):
            raise ConfigError("must be within [0.001, 1).", key="a_init",
                              received={"a_init": a_init})
        self.a_init = float(a_init)
        self.n_steps = _positive_int(n_steps, "n_steps", 1)
        if lpt_order not in (1, 2):
            raise ConfigError("must be 1 or 2.", key="lpt_order", received={"lpt_order": lpt_order})
        self.lpt_order = int(lpt_order)
        if gradient not in GRADIENT_KERNELS:
            from astrogen.errors import suggest

            raise ConfigError("unknown gradient kernel." + suggest(gradient, GRADIENT_KERNELS),
                              key="gradient", received={"gradient": gradient})
        self.gradient = gradient
        self.density_mesh = (self.n if density_mesh is None
                             else _positive_int(density_mesh, "density_mesh", 2))
        self.fixed_amplitude = bool(fixed_amplitude)
        self.inverted_phase = bool(inverted_phase)
        if backend not in BACKENDS:
            from astrogen.errors import suggest

            raise ConfigError("unknown backend." + suggest(str(backend), BACKENDS),
                              key="backend", received={"backend": backend})
        self.backend = backend
        if workers is None:
            import os

            workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") \
                else (os.cpu_count() or 1)
        self.workers = _positive_int(workers, "workers", 1)
        if kernels not in KERNELS:
            from astrogen.errors import suggest

            raise ConfigError("unknown kernels." + suggest(str(kernels), KERNELS),
                              key="kernels", received={"kernels": kernels})
        if kernels == "numba":
            from astrogen.nbody import cic_kernels

            if not cic_kernels.AVAILABLE:
                raise ConfigError("numba is not installed (pip install numba).",
                                  key="kernels", received={"kernels": kernels})
        self.kernels = kernels
        self._force_fn = None
        self._psi_kernel = None
        self._work: dict = {}

    def __getstate__(self):
        state = dict(self.__dict__)
        state.update(_force_fn=None, _work={})  # a tf.function and work arrays: rebuilt
        return state

    @property
    def compiled(self) -> bool:
        """Whether the numpy backend uses the compiled CIC kernels (``kernels``)."""
        if self.kernels == "numpy":
            return False
        from astrogen.nbody import cic_kernels

        return cic_kernels.AVAILABLE

    @property
    def lattice_shift(self) -> float:
        """Offset of the particle lattice, in particle spacings: half a force-mesh cell.

        Particles sitting exactly on mesh points make CIC painting piecewise linear in the
        displacement (it depends on its sign), which mixes modes and biases the force and the
        measured power by up to ~10 % even for tiny displacements. Centring the particles in
        force-mesh cells makes painting linear in small displacements.
        """
        return 0.5 / self.mesh_factor

    # ------------------------------------------------------------------ initial conditions
    def linear_field(self, seed: int, box_id: int = 0) -> np.ndarray:
        """Linear density contrast at a = 1 on the particle lattice (dimensionless).

        Parameters
        ----------
        seed : int
            Run seed; the field's own seed is ``derive_seed(seed, "nbody_ic", box_id)``.
        box_id : int
            Box index.

        Returns
        -------
        numpy.ndarray, shape (n, n, n)
        """
        s = derive_seed(seed, "nbody_ic", box_id)
        return gaussian_field(self.n, self.box_size, self.power, s, ndim=3,
                              fixed_amplitude=self.fixed_amplitude,
                              inverted_phase=self.inverted_phase)

    def initial_conditions(self, delta_linear: np.ndarray, a: float | None = None):
        """LPT positions and momenta at scale factor ``a`` (default ``a_init``).

        Parameters
        ----------
        delta_linear : numpy.ndarray, shape (n, n, n)
            Linear density contrast at a = 1 on the particle lattice.
        a : float, optional
            Scale factor.

        Returns
        -------
        positions : numpy.ndarray, shape (n^3, 3)
            Mpc/h, wrapped into the box.
        momenta : numpy.ndarray, shape (n^3, 3)
            ``p = a^3 E dx/da`` in Mpc/h: ``gp(a) Psi1 + gp2(a) Psi2``.
        """
        a = self.a_init if a is None else float(a)
        delta_linear = np.asarray(delta_linear, dtype=float)
        if delta_linear.shape != (self.n,) * 3:
            raise ConfigError("must have shape (n_particles,)*3.", key="delta_linear",
                              received={"shape": delta_linear.shape, "n_particles": self.n})
        return lpt_particles(delta_linear, self.box_size, self.cosmology, a,
                             order=self.lpt_order, shift=self.lattice_shift)

    # ------------------------------------------------------------------ force
    def _kernels(self) -> np.ndarray:
        """``i G(k) / K^2(k)`` per axis, shape (3, nm, nm, nm//2+1), in Mpc/h."""
        nm, L = self.n_mesh, self.box_size
        dx = L / nm
        kf = 2.0 * np.pi / L
        k1 = [np.fft.fftfreq(nm, 1.0 / nm) * kf] * 2 + [np.fft.rfftfreq(nm, 1.0 / nm) * kf]
        ks = []
        for i, kv in enumerate(k1):
            shape = [1, 1, 1]
            shape[i] = -1
            ks.append(kv.reshape(shape))
        if self.gradient == "exact":
            g = ks
            lap = sum(k * k for k in ks)
        elif self.gradient == "fd4":
            g = [(8.0 * np.sin(k * dx) - np.sin(2.0 * k * dx)) / (6.0 * dx) for k in ks]
            lap = sum(k * k for k in ks)
        else:  # fd2
            g = [np.sin(k * dx) / dx for k in ks]
            lap = sum((2.0 * np.sin(0.5 * k * dx) / dx) ** 2 for k in ks)
        lap = np.broadcast_to(lap, (nm, nm, nm // 2 + 1)).copy()
        lap.flat[0] = 1.0
        nyq = np.pi / dx
        out = np.empty((3, nm, nm, nm // 2 + 1), dtype=np.complex64)
        for i in range(3):
            gi = np.where(np.isclose(np.abs(ks[i]), nyq), 0.0, g[i])
            kern = 1j * gi / lap
            kern = np.broadcast_to(kern, lap.shape).copy()
            kern.flat[0] = 0.0
            out[i] = kern
        return out

    def _build_force(self):
        import tensorflow as tf

        from astrogen.nbody.mesh import cic_indices_weights

        nm = self.n_mesh
        npart = self.n**3
        to_mesh = nm / self.box_size
        mass = float(nm**3) / float(npart)  # mean mesh density = 1
        kern = tf.constant(self._kernels())

        @tf.function(input_signature=[tf.TensorSpec((npart, 3), tf.float32)],
                     reduce_retracing=True)
        def force(x):
            xm = x * to_mesh
            idx, w = cic_indices_weights(tf, xm, nm)
            rho = tf.tensor_scatter_nd_add(tf.zeros((nm, nm, nm), tf.float32),
                                           tf.reshape(idx, (-1, 3)),
                                           tf.reshape(w * mass, (-1,)))
            dk = tf.signal.rfft3d(rho - 1.0)
            comps = [tf.signal.irfft3d(dk * kern[i], fft_length=[nm, nm, nm])
                     for i in range(3)]
            g = tf.stack(comps, axis=-1)            # (nm, nm, nm, 3)
            vals = tf.gather_nd(g, idx)             # (npart, 8, 3)
            return tf.reduce_sum(vals * w[:, :, None], axis=1)

        return force

    def _potential_kernel(self) -> np.ndarray:
        """Fourier multiplier from ``delta_k`` to ``psi`` with ``g = D psi`` (float32).

        ``g_k = i G(k) delta_k / K^2``; the real-space stencil ``D`` of ``fd4`` is
        ``8 (f[i+1] - f[i-1]) - (f[i+2] - f[i-2])`` (Fourier transform ``12 i dx G``), that of
        ``fd2`` is ``f[i+1] - f[i-1]`` (``2 i dx G``), so ``psi_k = delta_k / (c dx K^2)`` with
        ``c`` = 12 or 2, and 0 at k = 0. Shape (nm, nm, nm//2+1), in Mpc/h.
        """
        nm, L = self.n_mesh, self.box_size
        dx = L / nm
        kf = 2.0 * np.pi / L
        kx = (np.fft.fftfreq(nm, 1.0 / nm) * kf)[:, None, None]
        ky = (np.fft.fftfreq(nm, 1.0 / nm) * kf)[None, :, None]
        kz = (np.fft.rfftfreq(nm, 1.0 / nm) * kf)[None, None, :]
        if self.gradient == "fd4":
            lap, c = kx * kx + ky * ky + kz * kz, 12.0
        else:  # fd2 and its 7-point Laplacian
            lap = sum((2.0 * np.sin(0.5 * k * dx) / dx) ** 2 for k in (kx, ky, kz))
            c = 2.0
        lap = np.broadcast_to(lap, (nm, nm, nm // 2 + 1)).copy()
        lap.flat[0] = 1.0
        out = 1.0 / (c * dx * lap)
        out.flat[0] = 0.0
        return out.astype(np.float32)

    def _force_numpy(self, x3: np.ndarray) -> np.ndarray:
        """Numpy PM force at positions ``x3`` (3, n_part) in Mpc/h; returns (3, n_part) float32.

        With the compiled kernels (:attr:`compiled`): the paint, and one readout that takes the
        three finite differences of the potential at each particle's 8 mesh points
        (:mod:`astrogen.nbody.cic_kernels`; no stencil arrays, no gradient meshes);
        otherwise the CIC stencil is computed once in numpy and shared by the ``np.bincount``
        paint and three ``np.take`` readouts. Both give the same forces (tested)."""
        import scipy.fft as sfft

        nm = self.n_mesh
        npart = x3.shape[1]
        compiled = self.compiled
        # work arrays kept between calls (fresh ones cost page faults every step), one set
        # per thread: a stage may run boxes in several threads on one solver
        import threading

        ws = self._work.setdefault(threading.get_ident(), {})
        if ws.get("npart") != npart or ws.get("compiled") != compiled:
            ws.clear()
            ws.update(npart=npart, compiled=compiled, mesh=np.empty((nm,) * 3, np.float32))
            if compiled:
                ws.update(cells=np.empty((3, npart), np.float32),
                          rho=np.empty((nm,) * 3, np.float64))
            else:
                ws.update(idx=np.empty((8, npart), np.intp),
                          w=np.empty((8, npart), np.float32),
                          vals=np.empty((8, npart), np.float32),
                          grad=np.empty((nm,) * 3, np.float32))
        if compiled:
            from astrogen.nbody import cic_kernels

            cells = np.multiply(x3, np.float32(nm / self.box_size), out=ws["cells"])
            rho = cic_kernels.paint(cells, nm, out=ws["rho"])  # float64 particles per cell
        else:
            from astrogen.nbody.mesh import cic_stencil, paint_stencil

            idx, w = cic_stencil(x3 * np.float32(nm / self.box_size), nm, dtype=np.float32,
                                 out=(ws["idx"], ws["w"]))
            rho = paint_stencil(idx, w, nm)  # float64 particles per cell
        # one pass: rho - mean in float64 (exact for small contrasts), rounded to float32; the
        # factor nm^3 / npart from counts to density contrast is folded into the kernel
        np.subtract(rho, float(npart) / float(nm**3), out=ws["mesh"], casting="same_kind")
        dk = sfft.rfftn(ws["mesh"], workers=self.workers, overwrite_x=True)
        if self._psi_kernel is None or self._psi_kernel[0] != npart:
            kern = self._kernels() if self.gradient == "exact" else self._potential_kernel()
            kern *= kern.dtype.type(float(nm**3) / float(npart))
            self._psi_kernel = (npart, kern)
        kern = self._psi_kernel[1]
        out = np.empty((3, npart), np.float32)
        if self.gradient == "exact":
            for i in range(3):
                gi = sfft.irfftn(dk * kern[i], s=(nm,) * 3, workers=self.workers)
                if compiled:
                    cic_kernels.readout(gi, cells, out=out[i])
                else:
                    np.einsum("cn,cn->n", w, np.take(gi.reshape(-1), idx), out=out[i])
            return out
        dk *= kern
        psi = sfft.irfftn(dk, s=(nm,) * 3, workers=self.workers, overwrite_x=True)
        if compiled:  # the three differences at each particle's mesh points: one pass
            return cic_kernels.readout_gradient(psi, cells, self.gradient, out=out)
        for axis in range(3):  # one contiguous derivative mesh at a time, read out at once
            gi = stencil_derivative(psi, axis, self.gradient, out=ws["grad"])
            np.take(gi.reshape(-1), idx, out=ws["vals"], mode="clip")  # clip: no buffering
            np.einsum("cn,cn->n", w, ws["vals"], out=out[axis])
        return out

    def force(self, positions) -> np.ndarray:
        """PM acceleration ``g = -grad(phi)``, ``nabla^2 phi = delta``, at particle positions.

        Parameters
        ----------
        positions : array_like, shape (n_particles^3, 3)
            Comoving positions in Mpc/h.

        Returns
        -------
        numpy.ndarray, shape (n_particles^3, 3)
            ``g`` in Mpc/h (multiply by ``3/2 Om0 / a`` for ``d p / d t`` in H0 units).
        """
        pos = np.asarray(positions)
        if self.backend == "numpy":
            x3 = np.ascontiguousarray(np.mod(pos.T, self.box_size), dtype=np.float32)
            return self._force_numpy(x3).T.copy()
        import tensorflow as tf

        if self._force_fn is None:
            self._force_fn = self._build_force()
        return self._force_fn(tf.constant(pos, tf.float32)).numpy()

    # ------------------------------------------------------------------ time stepping
    def time_steps(self, a_out: Sequence[float]) -> np.ndarray:
        """Step boundaries: ``n_steps`` linear in a from ``a_init`` to ``max(a_out)``, plus the
        outputs (each output then falls on a boundary)."""
        a_end = max(a_out)
        grid = np.linspace(self.a_init, a_end, self.n_steps + 1)
        return np.unique(np.concatenate([grid, np.asarray(a_out, dtype=float)]))

    def run(self, a_out: Sequence[float] | None = None, redshifts: Sequence[float] | None = None,
            seed: int = 0, box_id: int = 0, delta_linear: np.ndarray | None = None) -> PMResult:
        """Evolve the box and return particles and density fields at the output times.

        Parameters
        ----------
        a_out : sequence of float, optional
            Output scale factors in ``[a_init, 4]`` (default ``[1.0]``).
        redshifts : sequence of float, optional
            Output redshifts instead of ``a_out``.
        seed : int
            Run seed (initial conditions use ``derive_seed(seed, "nbody_ic", box_id)``).
        box_id : int
            Box index, stored in the output :class:`~astrogen.batch.DensityField`.
        delta_linear : numpy.ndarray, shape (n,)*3, optional
            Use this linear field at a = 1 instead of drawing one.

        Returns
        -------
        PMResult
        """
        if a_out is not None and redshifts is not None:
            raise ConfigError("give a_out or redshifts, not both.", key="a_out")
        if redshifts is not None:
            z = np.atleast_1d(np.asarray(redshifts, dtype=float))
            if np.any(z < -0.75) or not np.all(np.isfinite(z)):
                raise ConfigError("must be finite and > -0.75.", key="redshifts",
                                  received={"redshifts": list(z)})
            a_out = 1.0 / (1.0 + z)
        a_out = np.sort(np.atleast_1d(np.asarray([1.0] if a_out is None else a_out, float)))
        if np.any(a_out < self.a_init) or np.any(a_out > 4.0):
            raise ConfigError("output scale factors must be within [a_init, 4].", key="a_out",
                              received={"a_out": list(a_out), "a_init": self.a_init})
        if delta_linear is None:
            delta_linear = self.linear_field(seed, box_id)
        c = self.cosmology
        pos, mom = self.initial_conditions(delta_linear, self.a_init)
        x, p, g = self.start(pos, mom)
        steps = self.time_steps(a_out)
        snaps: list[PMSnapshot] = []

        def save(a):
            xs, ps = self.to_numpy(x), self.to_numpy(p)
            snaps.append(self._snapshot(a, np.mod(xs, self.box_size), ps, box_id, seed))

        if np.any(np.isclose(a_out, steps[0])):
            save(steps[0])
        for ai, af in zip(steps[:-1], steps[1:]):
            x, p, g = self.kdk_step(x, p, g, float(ai), float(af))
            if np.any(np.isclose(a_out, af)):
                save(af)
        meta = {"n_particles": self.n, "n_mesh": self.n_mesh, "n_steps": self.n_steps,
                "a_init": self.a_init, "lpt_order": self.lpt_order, "gradient": self.gradient,
                "seed": int(seed), "box_id": int(box_id)}
        return PMResult(snapshots=snaps, linear_delta=delta_linear, box_size=self.box_size,
                        cosmology=c, meta=meta)

    # ---- backend-neutral state: numpy (3, n_part) float32 arrays, or TF (n_part, 3) tensors
    def start(self, positions: np.ndarray, momenta: np.ndarray):
        """Solver state ``(x, p, g)`` from positions and momenta (n_part, 3), Mpc/h.

        ``x``, ``p`` and the acceleration ``g`` are float32, in the backend's own layout
        (numpy: arrays of shape (3, n_part); tensorflow: tensors (n_part, 3)); read them
        with :meth:`to_numpy`.
        """
        if self.backend == "numpy":
            x = np.ascontiguousarray(np.mod(np.asarray(positions).T, self.box_size),
                                     dtype=np.float32)
            p = np.ascontiguousarray(np.asarray(momenta).T, dtype=np.float32)
            return x, p, self._force_numpy(x)
        import tensorflow as tf

        if self._force_fn is None:
            self._force_fn = self._build_force()
        x = tf.constant(positions, tf.float32)
        return x, tf.constant(momenta, tf.float32), self._force_fn(x)

    def to_numpy(self, v) -> np.ndarray:
        """A state array as float64 numpy, shape (n_part, 3)."""
        if self.backend == "numpy":
            return v.T.astype(np.float64)
        return v.numpy().astype(np.float64)

    def kdk_step(self, x, p, g, ai: float, af: float):
        """One FastPM kick-drift-kick step from scale factor ``ai`` to ``af``.

        Parameters
        ----------
        x, p, g : backend arrays
            State at ``ai`` (see :meth:`start`): positions (Mpc/h), momenta (Mpc/h) and the
            acceleration at ``x`` (Mpc/h).
        ai, af : float
            Scale factors.

        Returns
        -------
        x, p, g : the state at ``af`` (one force evaluation).
        """
        c = self.cosmology
        ac = float(np.sqrt(ai * af))
        p = p + c.kick_factor(ai, ac, ai) * g  # python float: keeps float32
        if self.backend == "numpy":
            x = x + c.drift_factor(ai, af, ac) * p
            _wrap(x, self.box_size)
            g = self._force_numpy(x)
        else:
            import tensorflow as tf

            x = tf.math.floormod(x + c.drift_factor(ai, af, ac) * p, self.box_size)
            g = self._force_fn(x)
        p = p + c.kick_factor(ac, af, af) * g
        return x, p, g

    def _snapshot(self, a: float, positions: np.ndarray, momenta: np.ndarray, box_id: int,
                  seed: int) -> PMSnapshot:
        from astrogen.nbody.mesh import paint_density

        delta = paint_density(positions, self.box_size, self.density_mesh)
        df = DensityField(delta=delta, box_size=self.box_size, redshift=1.0 / a - 1.0,
                          box_id=int(box_id), cosmology=self.cosmology.to_dict(),
                          meta={"source": "astrogen.nbody.pm", "a": float(a),
                                "n_particles": self.n, "n_mesh": self.n_mesh,
                                "n_steps": self.n_steps, "seed": int(seed),
                                "assignment": "cic"})
        return PMSnapshot(a=float(a), positions=positions, momenta=momenta, density=df)


def _segments(n: int, shifts: Sequence[int]):
    """Split ``[0, n)`` where ``(i + k) mod n`` wraps for any ``k`` in ``shifts``; yields
    ``(start, stop, [source start per shift])`` for each contiguous piece."""
    cuts = sorted({0, n} | {(n - k % n) % n for k in shifts})
    for a, b in zip(cuts[:-1], cuts[1:]):
        yield a, b, [(a + k) % n for k in shifts]


def _shifted_op(ufunc, f: np.ndarray, ka: int, g: np.ndarray, kb: int, axis: int,
                out: np.ndarray) -> np.ndarray:
    """``out[..., i, ...] = ufunc(f[..., i + ka, ...], g[..., i + kb, ...])`` along ``axis``,
    indices mod ``n``, without the copies of ``np.roll`` (``f`` may be ``out`` with ``ka = 0``:
    element-wise in place)."""
    n = f.shape[axis]
    pre = (slice(None),) * axis
    for a, b, (sa, sb) in _segments(n, (ka, kb)):
        m = b - a
        ufunc(f[pre + (slice(sa, sa + m),)], g[pre + (slice(sb, sb + m),)],
              out=out[pre + (slice(a, b),)])
    return out


def stencil_derivative(f: np.ndarray, axis: int, gradient: str = "fd4",
                       out: np.ndarray | None = None) -> np.ndarray:
    """Periodic finite difference of a mesh along one axis, unnormalised.

    ``f[i+1] - f[i-1]`` for ``fd2``, ``8 (f[i+1] - f[i-1]) - (f[i+2] - f[i-2])`` for ``fd4``
    (see :meth:`ParticleMesh._potential_kernel` for the normalisation: divide by ``2 dx`` or
    ``12 dx`` for the derivative). Computed with shifted slices in 2 (``fd2``) or 4 (``fd4``)
    passes over the mesh and no temporary array; the operations and their order are those of
    the ``np.roll`` formula, so the result is bit-identical to it.

    Parameters
    ----------
    f : numpy.ndarray, shape (n,)*d
        Periodic mesh (any unit).
    axis : int
        Axis of the difference.
    gradient : {"fd4", "fd2"}
        Stencil.
    out : numpy.ndarray, optional
        Array to write into (same shape and dtype as ``f``, not ``f`` itself).

    Returns
    -------
    numpy.ndarray
        Same shape, dtype and unit as ``f``.
    """
    if gradient not in ("fd2", "fd4"):
        raise ConfigError("must be 'fd2' or 'fd4'.", key="gradient",
                          received={"gradient": gradient})
    out = np.empty_like(f) if out is None else out
    _shifted_op(np.subtract, f, 1, f, -1, axis, out)
    if gradient == "fd4":
        out *= out.dtype.type(8.0)
        _shifted_op(np.subtract, out, 0, f, 2, axis, out)
        _shifted_op(np.add, out, 0, f, -2, axis, out)
    return out


def _wrap(x: np.ndarray, box_size: float) -> None:
    """Wrap positions into ``[0, box_size)`` in place (one box length at most, as a drift
    does; ``np.mod`` for anything further). Same values as ``np.mod`` (exact subtraction)."""
    L = x.dtype.type(box_size)
    np.subtract(x, L, out=x, where=x >= L)
    np.add(x, L, out=x, where=x < 0)
    if x.size and (x.min() < 0 or x.max() >= L):
        np.mod(x, L, out=x)

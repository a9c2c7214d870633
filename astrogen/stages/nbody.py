r"""N-body stages: linear initial fields, a particle-mesh simulation, FoF haloes, field FITS.

A typical chain (``pipelines/nbody_pm.yaml``)::

    cosmology.initial_field -> nbody.pm -> nbody.fof -> output.catalog
                                        \-> output.field

One chunk is one box: chunk ``i`` of ``cosmology.initial_field`` is box ``first_box + i``,
whose Gaussian field is drawn with ``derive_seed(stage seed, box_id)``, so a box is the same
whatever the number of boxes, the chunk it falls in, or a ``--resume``.

Units: lengths in comoving Mpc/h, masses in Msun/h, velocities in km/s. Halo tables carry
them as astropy ``littleh`` units (``Msun / littleh``, ``Mpc / littleh``), which
``output.catalog`` writes to FITS in Msun and Mpc with the box's h (FITS has no unit for h);
the density FITS have a primary WCS in Mpc (``CUNIT = 'Mpc'``, h applied) and an alternate
WCS ``H`` in Mpc/h. TensorFlow is imported in ``nbody.pm``'s :meth:`~NBodyPM.setup` only,
with ``backend: tensorflow``.
"""
from __future__ import annotations

import json

import numpy as np
from astropy.io import fits
from astropy.table import Table

from astrogen.batch import DensityField
from astrogen.errors import ConfigError
from astrogen.io.fits_out import comoving_wcs_cards
from astrogen.nbody.snapshot import NBodySnapshot
from astrogen.registry import register_stage
from astrogen.seeds import derive_seed
from astrogen.stages.base import Stage, check_choice, check_file_name, check_int, check_positive

__all__ = ["InitialField", "NBodyPM", "FoFHalos", "FieldOutput"]

_TRANSFERS = ("eisenstein_hu", "eisenstein_hu_nowiggle")
_GRADIENTS = ("fd4", "fd2", "exact")  # astrogen.nbody.pm.GRADIENT_KERNELS
_BACKENDS = ("numpy", "tensorflow")  # astrogen.nbody.pm.BACKENDS
#: largest grid per side: ParticleMesh's particle limit in 3-D; memory in 2-D
_MAX_GRID = {3: 512, 2: 8192}


def _cosmo_default(name: str) -> float:
    from astrogen.cosmology.background import Cosmology

    return Cosmology.__dataclass_fields__[name].default


def _check_ndim(value) -> int:
    if isinstance(value, bool) or value not in (2, 3):
        raise ConfigError("must be 2 (a slice) or 3 (a box).", key="ndim",
                          received={"ndim": value})
    return int(value)


def _check_n_grid(value, ndim: int) -> int:
    hi = _MAX_GRID[ndim]
    if isinstance(value, bool) or not isinstance(value, int) or value % 2 or not (
            8 <= value <= hi):
        raise ConfigError(f"must be an even integer in [8, {hi}] for a {ndim}-D field.",
                          key="n_grid", received={"n_grid": value})
    return value


def _check_redshift(name: str, value) -> float:
    z = check_positive(name, value, allow_zero=True)
    if z > 1000:
        raise ConfigError("must be <= 1000.", key=name, received={name: value})
    return z


class _SliceSpectrum:
    """2-D power spectrum of a one-cell-thick slice of a gridded 3-D Gaussian field.

    ``P2(k) = (1/L) sum_m P3(sqrt(k^2 + (2 pi m / L)^2))`` over the ``n`` line-of-sight modes
    ``m = -n/2 .. n/2-1`` of the grid, so a 2-D field drawn with it has the statistics of one
    plane of an ``n^3`` box of the same side: (Mpc/h)^2 for ``k`` in h/Mpc. The sum is
    tabulated on 512 log-spaced wavenumbers covering the grid and interpolated (log-log).
    """

    def __init__(self, power, n: int, box_size: float, n_table: int = 512):
        kz = 2.0 * np.pi * np.fft.fftfreq(n, 1.0 / n) / box_size
        kmin = 0.5 * 2.0 * np.pi / box_size
        kmax = 1.01 * np.sqrt(2.0) * np.pi * n / box_size
        self._lk = np.linspace(np.log(kmin), np.log(kmax), n_table)
        k = np.exp(self._lk)
        p2 = np.zeros(n_table)
        for kzi in kz:
            p2 += np.asarray(power(np.sqrt(k * k + kzi * kzi)), dtype=float)
        self._lp = np.log(p2 / box_size)

    def __call__(self, k):
        k = np.asarray(k, dtype=float)
        lk = np.log(np.clip(k, np.exp(self._lk[0]), np.exp(self._lk[-1])))
        return np.exp(np.interp(lk, self._lk, self._lp))


@register_stage("cosmology.initial_field")
class InitialField(Stage):
    """Gaussian linear density field of flat LambdaCDM, one periodic box per chunk.

    The field is ``D1(z) delta_L`` where ``delta_L`` is drawn with the linear power spectrum
    (Eisenstein & Hu, normalised to ``sigma8``) at z = 0 on the ``n_grid`` lattice points
    ``q = i box_size / n_grid``; it starts ``nbody.pm`` (``n_grid^3`` particles). A 2-D field
    (``ndim: 2``) is one plane of such a box (statistically exact, cheap) and cannot start
    a simulation.

    Parameters
    ----------
    n_grid : int
        Grid points per side (even, 8..512 in 3-D, 8..8192 in 2-D); in 3-D also the number of
        particles per side of ``nbody.pm``.
    box_size : float
        Comoving box side in Mpc/h.
    n_boxes : int
        Number of boxes (= chunks).
    redshift : float
        Redshift at which the linear field is given (growth ``D1(z)``, 1 at z = 0).
    Om0, Ob0, h, sigma8, n_s : float
        Cosmology (defaults Planck 2018).
    ndim : int
        3 (a box) or 2 (a slice).
    transfer : {"eisenstein_hu", "eisenstein_hu_nowiggle"}
        Transfer function.
    first_box : int
        ``box_id`` of the first chunk: ``n_boxes: 1, first_box: 5`` makes box 5 alone,
        identical to box 5 of a larger run with the same seed and stage name.
    fixed_amplitude : bool
        "Fixed" fields: ``|delta_k|`` set to its mean, random phases (Angulo & Pontzen 2016).
    inverted_phase : bool
        Flip the field's sign (the partner of a "paired" simulation).
    """

    kind = "source"
    output_type = DensityField
    units = {"n_grid": "cells per side", "box_size": "Mpc/h", "n_boxes": "boxes (chunks)",
             "redshift": "dimensionless", "h": "H0 / (100 km/s/Mpc)",
             "sigma8": "rms at 8 Mpc/h, z = 0"}

    def __init__(self, n_grid: int, box_size: float, n_boxes: int = 1, redshift: float = 0.0,
                 Om0: float = _cosmo_default("Om0"), Ob0: float = _cosmo_default("Ob0"),
                 h: float = _cosmo_default("h"), sigma8: float = _cosmo_default("sigma8"),
                 n_s: float = _cosmo_default("n_s"), ndim: int = 3,
                 transfer: str = "eisenstein_hu", first_box: int = 0,
                 fixed_amplitude: bool = False, inverted_phase: bool = False):
        from astrogen.cosmology.background import Cosmology

        self.ndim = _check_ndim(ndim)
        self.n_grid = _check_n_grid(n_grid, self.ndim)
        self.box_size = check_positive("box_size", box_size, unit="Mpc/h")
        self.n_boxes = check_int("n_boxes", n_boxes)
        self.first_box = check_int("first_box", first_box, minimum=0)
        self.redshift = _check_redshift("redshift", redshift)
        params = {"Om0": Om0, "Ob0": Ob0, "h": h, "sigma8": sigma8, "n_s": n_s}
        for k, v in params.items():
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise ConfigError("must be a number.", key=k, received={k: v})
        self.cosmology = Cosmology(**{k: float(v) for k, v in params.items()})
        self.transfer = check_choice("transfer", transfer, _TRANSFERS)
        self.fixed_amplitude = bool(fixed_amplitude)
        self.inverted_phase = bool(inverted_phase)
        self._power = None

    def setup(self, ctx) -> None:
        from astrogen.cosmology.power import LinearPower

        super().setup(ctx)
        p3 = LinearPower(self.cosmology, self.transfer)
        self._power = p3 if self.ndim == 3 else _SliceSpectrum(p3, self.n_grid, self.box_size)
        self._growth = float(self.cosmology.growth_D1(self.redshift))

    def n_chunks(self) -> int:
        return self.n_boxes

    def n_rows(self) -> int:
        """One "row" per box."""
        return self.n_boxes

    def box_seed(self, box_id: int) -> int:
        """Seed of the Gaussian field of box ``box_id``."""
        return derive_seed(self.ctx.seed, int(box_id))

    def read_chunk(self, index: int) -> DensityField:
        from astrogen.cosmology.initial import gaussian_field

        if self._power is None:
            raise RuntimeError("call setup() before read_chunk()")
        box_id = self.first_box + int(index)
        seed = self.box_seed(box_id)
        delta = gaussian_field(self.n_grid, self.box_size, self._power, seed, ndim=self.ndim,
                               fixed_amplitude=self.fixed_amplitude,
                               inverted_phase=self.inverted_phase)
        meta = {"source": self.type_name, "field": "linear", "growth_D1": self._growth,
                "seed": int(seed), "transfer": self.transfer,
                "fixed_amplitude": self.fixed_amplitude, "inverted_phase": self.inverted_phase}
        return DensityField(delta=self._growth * delta, box_size=self.box_size,
                            redshift=self.redshift, box_id=box_id,
                            cosmology=self.cosmology.to_dict(), meta=meta)


@register_stage("nbody.pm")
class NBodyPM(Stage):
    """FastPM-style particle-mesh simulation of a linear field (TensorFlow), one box per chunk.

    ``n_grid^3`` particles start on the lattice of the input field, displaced by 2LPT at
    ``a_init``, and are evolved with ``n_steps`` kick-drift-kick steps (linear in a) to
    ``redshift``. Output: an :class:`~astrogen.nbody.snapshot.NBodySnapshot`, the CIC density
    contrast of the particles on an ``density_grid^3`` mesh plus their positions (Mpc/h),
    velocities (km/s) and mass (Msun/h).

    Parameters
    ----------
    n_steps : int
        Number of time steps.
    redshift : float
        Output redshift.
    a_init : float, optional
        Scale factor of the initial conditions (default 0.1, i.e. z = 9).
    z_init : float, optional
        Redshift of the initial conditions instead of ``a_init``.
    force_resolution : int
        Force-mesh cells per side per particle (1..4; 2 is FastPM's usual choice).
    lpt_order : int
        1 (Zel'dovich) or 2 (2LPT) initial displacements.
    gradient : {"fd4", "fd2", "exact"}
        Fourier kernel of the force (see :class:`astrogen.nbody.pm.ParticleMesh`).
    density_grid : int, optional
        Cells per side of the output density field (default: the particle grid).
    backend : {"numpy", "tensorflow"}
        Force computation: ``numpy`` (default; scipy FFTs, ~3x faster on CPUs) or
        ``tensorflow`` (the reference code; GPUs). Same particles to float32 rounding.
    """

    input_types = (DensityField,)
    output_type = NBodySnapshot
    uses_tensorflow = True
    units = {"redshift": "dimensionless", "a_init": "scale factor",
             "force_resolution": "mesh cells per particle spacing",
             "density_grid": "cells per side"}

    def __init__(self, n_steps: int = 10, redshift: float = 0.0, a_init: float | None = None,
                 z_init: float | None = None, force_resolution: int = 2, lpt_order: int = 2,
                 gradient: str = "fd4", density_grid: int | None = None,
                 backend: str = "numpy"):
        self.n_steps = check_int("n_steps", n_steps)
        self.redshift = _check_redshift("redshift", redshift)
        if a_init is not None and z_init is not None:
            raise ConfigError("give a_init or z_init, not both.", key="z_init",
                              received={"a_init": a_init, "z_init": z_init})
        if z_init is not None:
            a0 = 1.0 / (1.0 + _check_redshift("z_init", z_init))
            key = "z_init"
        else:
            a0 = 0.1 if a_init is None else check_positive("a_init", a_init)
            key = "a_init"
        if not (1e-3 <= a0 < 1.0):
            raise ConfigError("must give a starting scale factor within [0.001, 1).", key=key,
                              received={key: z_init if key == "z_init" else a_init})
        self.a_init = a0
        self.a_out = 1.0 / (1.0 + self.redshift)
        if self.a_out <= self.a_init:
            raise ConfigError(f"must be below the starting redshift {1 / a0 - 1:g}.",
                              key="redshift", received={"redshift": redshift, key:
                                                        z_init if key == "z_init" else a_init})
        if isinstance(force_resolution, bool) or force_resolution not in (1, 2, 3, 4):
            raise ConfigError("must be an integer 1..4 (force-mesh cells per particle).",
                              key="force_resolution",
                              received={"force_resolution": force_resolution})
        self.force_resolution = int(force_resolution)
        if isinstance(lpt_order, bool) or lpt_order not in (1, 2):
            raise ConfigError("must be 1 or 2.", key="lpt_order", received={"lpt_order": lpt_order})
        self.lpt_order = int(lpt_order)
        self.gradient = check_choice("gradient", gradient, _GRADIENTS)
        self.density_grid = (None if density_grid is None
                             else check_int("density_grid", density_grid, minimum=2))
        self.backend = check_choice("backend", backend, _BACKENDS)
        self._pm = None
        self._pm_key = None

    def setup(self, ctx) -> None:
        if self.backend == "tensorflow":
            import tensorflow  # noqa: F401  (heavy import here, not at module import)

        super().setup(ctx)

    def _solver(self, n: int, box_size: float, cosmo):
        """The ParticleMesh for these inputs (kept between boxes: compiling it is the slow
        part; it holds no state that changes results)."""
        from astrogen.nbody.pm import ParticleMesh

        key = (n, box_size, cosmo)
        if self._pm_key != key:
            self._pm = ParticleMesh(
                n, box_size, cosmo, power=_unused_power, mesh_factor=self.force_resolution,
                a_init=self.a_init, n_steps=self.n_steps, lpt_order=self.lpt_order,
                gradient=self.gradient, density_mesh=self.density_grid, backend=self.backend)
            self._pm_key = key
        return self._pm

    def process(self, field: DensityField) -> NBodySnapshot:
        from astrogen.cosmology.background import Cosmology
        from astrogen.nbody.fof import particle_mass

        kind = field.meta.get("field")
        if kind != "linear":
            raise ConfigError("nbody.pm starts from a linear density field (from "
                              "cosmology.initial_field).", key="inputs",
                              received={"field": kind, "box_id": field.box_id})
        if field.delta.ndim != 3:
            raise ConfigError("nbody.pm needs a 3-D box; the input field is 2-D "
                              "(set ndim: 3 in the initial field).", key="inputs",
                              received={"shape": field.delta.shape})
        try:
            cosmo = Cosmology.from_dict(field.cosmology)
        except (TypeError, ValueError, KeyError) as exc:
            raise ConfigError(f"the input field's cosmology is unusable ({exc}).",
                              key="inputs") from None
        n, L = field.n_grid, float(field.box_size)
        pm = self._solver(n, L, cosmo)
        d1 = float(cosmo.growth_D1(field.redshift))
        res = pm.run(a_out=[self.a_out], seed=int(field.meta.get("seed", 0)),
                     box_id=field.box_id, delta_linear=np.asarray(field.delta, float) / d1)
        snap = res.snapshots[-1]
        meta = {**snap.density.meta, "source": self.type_name, "field": "nbody",
                "a_init": self.a_init, "z_init": 1.0 / self.a_init - 1.0,
                "force_resolution": self.force_resolution, "lpt_order": self.lpt_order,
                "gradient": self.gradient, "backend": self.backend,
                "linear_redshift": float(field.redshift),
                "transfer": field.meta.get("transfer")}
        return NBodySnapshot(delta=snap.density.delta, box_size=L, redshift=self.redshift,
                             box_id=field.box_id, cosmology=cosmo.to_dict(), meta=meta,
                             positions=snap.positions, velocities=snap.velocities,
                             particle_mass=particle_mass(cosmo.Om0, L, n**3))


def _unused_power(k):  # pragma: no cover - nbody.pm always passes the linear field
    raise RuntimeError("nbody.pm draws no field of its own")


@register_stage("nbody.fof")
class FoFHalos(Stage):
    """Friends-of-friends haloes of an N-body snapshot, as a catalog (one row per halo).

    Columns: ``box_id``, ``halo_id`` (by decreasing mass within the box), ``n_particles``,
    ``mass`` (Msun/h), ``x``, ``y``, ``z`` (Mpc/h, periodic centre of mass), ``vx``, ``vy``,
    ``vz`` (km/s, mean velocity) and ``redshift``. Mass and positions have astropy's
    ``littleh`` units (``Msun / littleh``, ``Mpc / littleh``): converting them to Msun or Mpc
    needs ``astropy.cosmology.units.with_H0`` and the table's ``meta["cosmology"]["h"]``;
    ``output.catalog`` does it when it writes the FITS file. ``meta`` also holds the particle
    mass (``particle_mass_msun_h``), ``box_size_mpc_h`` and a ``units_note``.

    Parameters
    ----------
    linking_length : float
        ``b`` in units of the mean inter-particle spacing (0.2: Davis et al. 1985).
    min_members : int
        Smallest number of particles of a halo.
    """

    input_types = (NBodySnapshot,)
    output_type = Table
    units = {"linking_length": "mean inter-particle spacing", "min_members": "particles"}

    def __init__(self, linking_length: float = 0.2, min_members: int = 20):
        self.linking_length = check_positive("linking_length", linking_length)
        if self.linking_length >= 1:
            raise ConfigError("must be within (0, 1) mean inter-particle spacings.",
                              key="linking_length", received={"linking_length": linking_length})
        self.min_members = check_int("min_members", min_members, minimum=2)

    def process(self, snap: NBodySnapshot) -> Table:
        from astrogen.nbody.fof import friends_of_friends

        t = friends_of_friends(snap.positions, snap.box_size, velocities=snap.velocities,
                               linking_length=self.linking_length,
                               min_members=self.min_members,
                               particle_mass_msun_h=snap.particle_mass)
        t.add_column(np.full(len(t), snap.box_id, dtype=np.int64), name="box_id", index=0)
        t["redshift"] = np.full(len(t), float(snap.redshift))
        desc = {"box_id": "index of the simulated box",
                "halo_id": "halo index within its box, by decreasing mass",
                "n_particles": "number of FoF member particles",
                "mass": "FoF mass, n_particles * particle mass",
                "x": "comoving x of the periodic centre of mass",
                "y": "comoving y of the periodic centre of mass",
                "z": "comoving z of the periodic centre of mass",
                "vx": "mean peculiar velocity along x",
                "vy": "mean peculiar velocity along y",
                "vz": "mean peculiar velocity along z",
                "redshift": "redshift of the snapshot"}
        for name, text in desc.items():
            t[name].description = text
        t.meta.update({"box_id": int(snap.box_id), "redshift": float(snap.redshift),
                       "cosmology": dict(snap.cosmology)})
        return t


# ---- field FITS ---------------------------------------------------------------------------
_COSMO_CARDS = (("Om0", "OMEGAM", "matter density parameter today"),
                ("Ob0", "OMEGAB", "baryon density parameter today"),
                ("h", "HUBBLE", "h = H0 / (100 km/s/Mpc)"),
                ("sigma8", "SIGMA8", "rms linear density in 8 Mpc/h spheres, z = 0"),
                ("n_s", "NS", "primordial spectral index"),
                ("Tcmb0", "TCMB0", "[K] CMB temperature (transfer function)"))
_AXES = "XYZ"


def _field_header(m: dict, quantity: str) -> fits.Header:
    """Cards describing one box (``m``: what ``FieldOutput.consume`` stored)."""
    h = fits.Header()
    n, nd, L = m["n_grid"], m["ndim"], m["box_size"]
    h["BUNIT"] = (quantity, "rho/rho_mean" if quantity == "1+delta" else "rho/rho_mean - 1")
    h["FIELD"] = (m["field"], "linear: Gaussian ICs; nbody: evolved particles")
    h["BOXID"] = (m["box_id"], "index of the box")
    # FITS has no unit for h: cards in h-scaled units say so in words (a bracketed "[Mpc/h]"
    # would read as Mpc per hour), the WCS below carries a real CUNIT
    hub = m["cosmology"].get("h")
    h["BOXSIZE"] = (L, "comoving box side, Mpc/h")
    h["NGRID"] = (n, "grid cells per side")
    h["CELLSIZE"] = (L / n, "grid spacing, Mpc/h")
    if hub:
        h["BOXMPC"] = (L / hub, "[Mpc] comoving box side, BOXSIZE / HUBBLE")
    h["REDSHIFT"] = (m["redshift"], "redshift of the field")
    h["SCALEFAC"] = (1.0 / (1.0 + m["redshift"]), "scale factor 1/(1+z)")
    for key, card, comment in _COSMO_CARDS:
        if key in m["cosmology"]:
            h[card] = (m["cosmology"][key], comment)
    x = m["meta"]
    if x.get("seed") is not None:
        h["ICSEED"] = (int(x["seed"]), "seed of the Gaussian initial field")
    if x.get("transfer"):
        h["TRANSFER"] = (str(x["transfer"]), "linear transfer function")
    if m["field"] == "linear":
        h["GROWTH"] = (x.get("growth_D1", 1.0), "D1(z) / D1(0) applied to the field")
        h["FIXEDAMP"] = (bool(x.get("fixed_amplitude", False)), "fixed-amplitude field")
        h["INVPHASE"] = (bool(x.get("inverted_phase", False)), "sign-flipped field")
    if m.get("n_particles"):
        h["NPART"] = (m["n_particles"], "number of particles")
        h["PARTMASS"] = (m["particle_mass"], "particle mass, Msun/h")
        if hub:
            h["PARTMSUN"] = (m["particle_mass"] / hub, "[solMass] particle mass, PARTMASS/HUBBLE")
        for key, card, comment in (("z_init", "ZINIT", "redshift of the 2LPT initial "
                                                         "conditions"),
                                   ("n_steps", "NSTEPS", "PM time steps (linear in a)"),
                                   ("n_mesh", "NMESH", "force-mesh cells per side"),
                                   ("lpt_order", "LPTORDER", "LPT order of the ICs"),
                                   ("gradient", "GRADIENT", "force gradient kernel"),
                                   ("backend", "PMBACKND", "PM force backend"),
                                   ("assignment", "ASSIGN", "mass assignment")):
            if x.get(key) is not None:
                h[card] = (x[key], comment)
    # linear WCS: FITS axis 1, 2(, 3) = comoving x, y(, z); cell i is at i * CELLSIZE.
    # Primary: Mpc with CUNIT (h applied); alternate "H": Mpc/h, no CUNIT (FITS has no h).
    # Without h (a field with no cosmology) the primary WCS is in Mpc/h, without CUNIT.
    comoving_wcs_cards(h, nd, L / n, hub)
    h["COMMENT"] = ("data[k, j, i] (numpy order) is the cell at x_i, y_j, z_k: the "
                    "transpose of DensityField.delta[i, j, k].")
    return h


@register_stage("output.field")
class FieldOutput(Stage):
    """Write every box's density field to one FITS file (one image HDU per box) + a PNG slice.

    The primary HDU has no data; HDU ``BOX<box_id>`` holds box ``box_id`` as a float32 image
    (3-D cube or 2-D slice) of ``1 + delta`` (``BUNIT = '1+delta'``) or ``delta``, with
    ``BOXSIZE`` (Mpc/h), ``REDSHIFT``, ``NGRID``, the cosmology, the N-body settings of a
    snapshot (``NPART``, ``PARTMASS`` in Msun/h and ``PARTMSUN`` in Msun...), a linear WCS in
    Mpc (``CUNIT = 'Mpc'``, h applied; in Mpc/h without CUNIT when the field has no h) with an
    alternate WCS ``H`` in Mpc/h, and the provenance cards. The data are ``delta`` transposed
    so that FITS axes 1, 2, 3 are x, y, z. The PNG shows a slab through the middle of the first box.

    Parameters
    ----------
    file_name : str
        FITS file name in the output folder.
    quantity : {"1+delta", "delta"}
        Written values: density in units of the mean, or density contrast.
    preview : str or None
        PNG file name in the output folder (``null``: none).
    preview_slab : int
        Number of cells along x averaged in the PNG (1: a one-cell slice).
    """

    kind = "sink"
    input_types = ((DensityField, NBodySnapshot),)
    units = {"preview_slab": "cells"}

    def __init__(self, file_name: str = "density_field.fits", quantity: str = "1+delta",
                 preview: str | None = "density_field.png", preview_slab: int = 1):
        self.file_name = check_file_name("file_name", file_name, (".fits",))
        self.quantity = check_choice("quantity", quantity, ("1+delta", "delta"))
        self.preview = None if preview is None else check_file_name("preview", preview, (".png",))
        self.preview_slab = check_int("preview_slab", preview_slab)

    def consume(self, index: int, field: DensityField) -> None:
        from astrogen.io.atomic import save_npz

        m = {"box_id": int(field.box_id), "box_size": float(field.box_size),
             "redshift": float(field.redshift), "n_grid": int(field.n_grid),
             "ndim": int(field.delta.ndim), "cosmology": dict(field.cosmology),
             "field": str(field.meta.get("field", "unknown")),
             "meta": {k: v for k, v in field.meta.items()
                      if isinstance(v, (str, int, float, bool)) or v is None}}
        if isinstance(field, NBodySnapshot):
            m["n_particles"] = field.n_particles
            m["particle_mass"] = field.particle_mass
        delta = np.asarray(field.delta, dtype=np.float64)
        data = (1.0 + delta) if self.quantity == "1+delta" else delta
        save_npz(self.ctx.work_dir / f"part_{index:06d}.npz",
                 data=np.ascontiguousarray(data.T, dtype=np.float32),
                 meta=np.array(json.dumps(m)))

    def _parts(self):
        return sorted(self.ctx.work_dir.glob("part_*.npz"))

    def finalize(self):
        from astrogen.io.atomic import atomic_path
        from astrogen.io.fits_out import provenance_cards

        parts = self._parts()
        if not parts:
            return []
        metas = []
        for p in parts:
            with np.load(p) as z:
                metas.append(json.loads(str(z["meta"])))
        prim = _field_header(metas[0], self.quantity)
        for k in [k for k in prim if k.startswith(("WCS", "CTYPE", "CNAME", "CRPIX", "CRVAL",
                                                    "CDELT", "CUNIT"))] + ["BOXID", "COMMENT"]:
            prim.remove(k, ignore_missing=True, remove_all=True)
        prim["NBOXES"] = (len(parts), "number of boxes (one image HDU each)")
        prim["BOXIDS"] = (",".join(str(m["box_id"]) for m in metas)[:68], "box ids, HDU order")
        prim["COMMENT"] = "One image HDU per box (EXTNAME BOX<box_id>); the cards above are"
        prim["COMMENT"] = "those of the first box, see each HDU for its own."
        provenance_cards(prim, self.ctx.provenance, self.ctx.history)
        path = self.ctx.output_dir / self.file_name
        with atomic_path(path) as tmp:
            fits.PrimaryHDU(header=prim).writeto(tmp, output_verify="exception")
            for p, m in zip(parts, metas):
                h = _field_header(m, self.quantity)
                h["EXTNAME"] = f"BOX{m['box_id']}"
                provenance_cards(h, self.ctx.provenance)
                with np.load(p) as z:
                    fits.append(tmp, z["data"], h, output_verify="exception")
        written = [path]
        if self.preview:
            written.append(self._save_preview(parts[0], metas[0]))
        return written

    def _save_preview(self, part, m):
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        from astrogen.io.atomic import atomic_path

        with np.load(part) as z:
            data = np.asarray(z["data"], dtype=np.float64)  # FITS order: (z, y, x) or (y, x)
        delta = data - 1.0 if self.quantity == "1+delta" else data
        n, L = m["n_grid"], m["box_size"]
        where = ""
        if delta.ndim == 3:  # average `preview_slab` cells along x around the middle
            s = min(self.preview_slab, n)
            i0 = n // 2 - s // 2
            img = delta[:, :, i0:i0 + s].mean(axis=2)  # (z, y)
            where = f", x = {i0 * L / n:.1f}-{(i0 + s) * L / n:.1f} Mpc/h"
            xlabel, ylabel = "y [Mpc/h]", "z [Mpc/h]"
        else:
            img = delta
            xlabel, ylabel = "x [Mpc/h]", "y [Mpc/h]"
        fig, ax = plt.subplots(figsize=(6.4, 5.4))
        if m["field"] == "linear":
            lim = float(np.max(np.abs(img))) or 1.0
            im = ax.imshow(img, origin="lower", extent=(0, L, 0, L), cmap="RdBu_r",
                           vmin=-lim, vmax=lim)
            label = "delta (linear)"
        else:
            im = ax.imshow(np.log10(np.maximum(1.0 + img, 1e-2)), origin="lower",
                           extent=(0, L, 0, L), cmap="magma")
            label = "log10(1 + delta)"
        fig.colorbar(im, ax=ax, label=label)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(f"{self.ctx.name}: box {m['box_id']}, z = {m['redshift']:.2f}, "
                     f"{n}^{m['ndim']} cells, L = {L:g} Mpc/h{where}", fontsize=8)
        fig.tight_layout()
        path = self.ctx.output_dir / self.preview
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=100, format="png")
        plt.close(fig)
        return path

"""Friends-of-friends (FoF) halo finder for periodic boxes, and the halo mass function.

Two particles are friends when closer than ``b`` times the mean inter-particle spacing
(``b = 0.2`` by default, Davis et al. 1985); haloes are the connected components of the
friendship graph with at least ``min_members`` particles. Pairs are found with
:class:`scipy.spatial.cKDTree` (``boxsize`` = periodic) and components with
:func:`scipy.sparse.csgraph.connected_components`.

Units: masses in Msun/h and lengths in Mpc/h, the simulation's own units, carried in the
halo table by astropy's ``littleh``-aware units (``Msun / littleh``, ``Mpc / littleh``):
``t["mass"].quantity.to(u.Msun)`` raises instead of being silently off by h, and
``t["mass"].quantity.to(u.Msun, astropy.cosmology.units.with_H0(H0))`` converts.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from astrogen.errors import ConfigError

__all__ = ["particle_mass", "friends_of_friends", "mass_function", "MSUN_H", "MPC_H"]


def _littleh_units():
    from astropy import units as u
    from astropy.cosmology import units as cu

    return u.Msun / cu.littleh, u.Mpc / cu.littleh


#: astropy units of the halo tables: Msun/h and (comoving) Mpc/h, with astropy's ``littleh``.
MSUN_H, MPC_H = _littleh_units()


def particle_mass(Om0: float, box_size: float, n_particles_total: int,
                  rho_crit0: float | None = None) -> float:
    """Mass of one simulation particle, ``Om0 rho_crit V / N``.

    Parameters
    ----------
    Om0 : float
        Matter density parameter today.
    box_size : float
        Box side in Mpc/h.
    n_particles_total : int
        Total number of particles ``N``.
    rho_crit0 : float, optional
        Critical density in (Msun/h)/(Mpc/h)^3 (default ``2.775e11``, from astropy constants).

    Returns
    -------
    float
        Particle mass in Msun/h.
    """
    from astrogen.cosmology.background import Cosmology

    if not (0 < Om0 <= 1):
        raise ConfigError("must be within (0, 1].", key="Om0", received={"Om0": Om0})
    if not (box_size > 0):
        raise ConfigError("must be > 0 Mpc/h.", key="box_size", received={"box_size": box_size})
    if int(n_particles_total) < 1:
        raise ConfigError("must be >= 1.", key="n_particles_total",
                          received={"n_particles_total": n_particles_total})
    rho = Cosmology().rho_crit0 if rho_crit0 is None else float(rho_crit0)
    return float(Om0 * rho * box_size**3 / int(n_particles_total))


def friends_of_friends(positions: Any, box_size: float, velocities: Any = None,
                       linking_length: float = 0.2, min_members: int = 20,
                       particle_mass_msun_h: float | None = None, Om0: float = 0.30966,
                       return_labels: bool = False):
    """Find FoF haloes in a periodic box.

    Parameters
    ----------
    positions : array_like, shape (n, 3)
        Comoving positions in Mpc/h (wrapped into ``[0, box_size)``).
    box_size : float
        Box side in Mpc/h.
    velocities : array_like, shape (n, 3), optional
        Peculiar velocities in km/s.
    linking_length : float
        ``b``, in units of the mean inter-particle spacing ``box_size / n^(1/3)``.
    min_members : int
        Smallest group kept.
    particle_mass_msun_h : float, optional
        Particle mass in Msun/h (default :func:`particle_mass` with ``Om0``).
    Om0 : float
        Matter density parameter, for the default particle mass.
    return_labels : bool
        Also return each particle's halo (see Returns).

    Returns
    -------
    astropy.table.Table
        One row per halo, sorted by decreasing mass: ``halo_id``, ``n_particles``,
        ``mass`` (Msun/h), ``x``, ``y``, ``z`` (Mpc/h, periodic centre of mass in
        ``[0, box_size)``), and ``vx``, ``vy``, ``vz`` (km/s, mean velocity) if velocities
        were given. ``mass`` has the astropy unit ``Msun / littleh`` and ``x``, ``y``, ``z``
        ``Mpc / littleh`` (:data:`MSUN_H`, :data:`MPC_H`). ``meta`` holds ``box_size_mpc_h``,
        ``linking_length_mpc_h``, ``b``, ``particle_mass_msun_h``, ``min_members`` and
        ``units_note``.
    labels : numpy.ndarray of int64, shape (n,)
        Only with ``return_labels``: the ``halo_id`` of each particle's halo, ``-1`` for
        particles in no halo of ``min_members`` or more.
    """
    from astropy import units as u
    from astropy.table import Table
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components
    from scipy.spatial import cKDTree

    pos = np.asarray(positions, dtype=float)
    if pos.ndim != 2 or pos.shape[1] != 3 or pos.shape[0] < 1:
        raise ConfigError("must have shape (n_particles, 3).", key="positions",
                          received={"shape": pos.shape})
    if not (float(box_size) > 0):
        raise ConfigError("must be > 0 Mpc/h.", key="box_size", received={"box_size": box_size})
    L = float(box_size)
    if not (0 < linking_length < 1):
        raise ConfigError("must be within (0, 1) mean spacings.", key="linking_length",
                          received={"linking_length": linking_length})
    if isinstance(min_members, bool) or not isinstance(min_members, (int, np.integer)) \
            or min_members < 2:
        raise ConfigError("must be an integer >= 2.", key="min_members",
                          received={"min_members": min_members})
    vel = None
    if velocities is not None:
        vel = np.asarray(velocities, dtype=float)
        if vel.shape != pos.shape:
            raise ConfigError("must have the shape of positions.", key="velocities",
                              received={"shape": vel.shape, "positions": pos.shape})
    npart = pos.shape[0]
    mp = (particle_mass(Om0, L, npart) if particle_mass_msun_h is None
          else float(particle_mass_msun_h))
    ll = linking_length * L / npart ** (1.0 / 3.0)

    pos = np.mod(pos, L)
    pos[pos >= L] = 0.0  # mod of tiny negatives can round to L
    tree = cKDTree(pos, boxsize=L)
    pairs = tree.query_pairs(r=ll, output_type="ndarray")
    graph = coo_matrix((np.ones(len(pairs), dtype=np.int8), (pairs[:, 0], pairs[:, 1])),
                       shape=(npart, npart))
    _, labels = connected_components(graph, directed=False)
    counts = np.bincount(labels)
    big = np.flatnonzero(counts >= min_members)
    big = big[np.argsort(-counts[big], kind="stable")]
    remap = np.full(counts.size, -1)
    remap[big] = np.arange(big.size)
    hid = remap[labels]
    sel = hid >= 0
    h = hid[sel]
    nh = big.size
    npg = np.bincount(h, minlength=nh).astype(float)

    # periodic centre of mass: unwrap each member relative to its group's first member
    first = np.full(nh, -1)
    idx_sel = np.flatnonzero(sel)
    first[h[::-1]] = idx_sel[::-1]
    ref = pos[first] if nh else np.zeros((0, 3))
    d = pos[sel] - ref[h]
    d -= L * np.round(d / L)
    centre = np.stack([np.bincount(h, weights=d[:, i], minlength=nh) for i in range(3)], 1)
    centre = np.mod(ref + centre / np.maximum(npg, 1)[:, None], L) if nh else centre

    t = Table()
    t["halo_id"] = np.arange(nh, dtype=np.int64)
    t["n_particles"] = npg.astype(np.int64)
    t["mass"] = npg * mp * MSUN_H
    for i, c in enumerate("xyz"):
        t[c] = centre[:, i] * MPC_H
    if vel is not None:
        vmean = np.stack([np.bincount(h, weights=vel[sel, i], minlength=nh) for i in range(3)],
                         1) / np.maximum(npg, 1)[:, None]
        for i, c in enumerate(("vx", "vy", "vz")):
            t[c] = vmean[:, i] * u.km / u.s
    t.meta.update({"box_size_mpc_h": L, "linking_length_mpc_h": ll, "b": linking_length,
                   "particle_mass_msun_h": mp, "min_members": int(min_members),
                   "units_note": "Msun/h, Mpc/h (astropy littleh units; convert: with_H0)"})
    return (t, hid.astype(np.int64)) if return_labels else t


def mass_function(masses: Any, box_size: float, bins: Any = 10,
                  mass_range: tuple[float, float] | None = None):
    """Halo mass function ``dn / dlnM`` from a list of halo masses.

    Parameters
    ----------
    masses : array_like or astropy.units.Quantity
        Halo masses in Msun/h (e.g. ``table["mass"]``). A quantity or a column with a unit
        is converted to Msun/h; one in Msun (no h) is refused, since converting it needs h.
    box_size : float
        Box side in Mpc/h.
    bins : int or array_like
        Number of logarithmic bins, or bin edges in Msun/h.
    mass_range : (float, float), optional
        Range of the logarithmic bins in Msun/h (default min and max mass).

    Returns
    -------
    m_centre : numpy.ndarray
        Geometric bin centres, Msun/h.
    dndlnm : numpy.ndarray
        ``dn / dlnM`` in (Mpc/h)^-3.
    error : numpy.ndarray
        Poisson error of ``dndlnm``, (Mpc/h)^-3.
    counts : numpy.ndarray of int
        Haloes per bin.
    """
    unit = getattr(masses, "unit", None)
    if unit is not None:
        from astropy import units as u

        try:
            m = (np.asarray(masses, dtype=float) * u.Unit(unit)).to_value(MSUN_H)
        except u.UnitConversionError:
            raise ConfigError("must be in Msun/h (astropy: Msun / littleh); convert masses in "
                              "Msun with astropy.cosmology.units.with_H0.", key="masses",
                              received={"unit": str(unit)}) from None
    else:
        m = np.asarray(masses, dtype=float)
    if m.ndim != 1 or m.size == 0 or np.any(m <= 0):
        raise ConfigError("must be a non-empty 1-D array of positive masses (Msun/h).",
                          key="masses", received={"size": m.size})
    if not (float(box_size) > 0):
        raise ConfigError("must be > 0 Mpc/h.", key="box_size", received={"box_size": box_size})
    if np.isscalar(bins):
        lo, hi = mass_range if mass_range is not None else (m.min(), m.max() * 1.0001)
        if not (0 < lo < hi):
            raise ConfigError("must satisfy 0 < min < max.", key="mass_range",
                              received={"mass_range": (lo, hi)})
        edges = np.geomspace(lo, hi, int(bins) + 1)
    else:
        edges = np.asarray(bins, dtype=float)
    counts, _ = np.histogram(m, bins=edges)
    dlnm = np.diff(np.log(edges))
    vol = float(box_size) ** 3
    return (np.sqrt(edges[1:] * edges[:-1]), counts / (vol * dlnm),
            np.sqrt(counts) / (vol * dlnm), counts)

"""Protohalo mask on the particle lattice -> halo catalogue (pure numpy/scipy).

The 3-D halo network (:mod:`astrogen.models.halo_vnet`) gives every lattice cell (= every
particle's initial position) the probability of ending in a halo. :func:`protohalo_regions`
cuts that map into protohaloes, two ways:

``components``
    periodic connected components (6-connectivity) of ``prob > threshold``;
``watershed``
    the same mask split by a periodic watershed of its distance transform (markers: maxima
    of the distance to the mask's edge at least ``min_distance`` cells apart), which
    separates protohaloes that touch in the Lagrangian field;
``grow``
    region growing with the network's second output, the predicted particle count ``N`` of
    the halo each cell ends in: the most interior unassigned mask cell among those of
    smallest ``N`` seeds a halo that takes the ``N`` unassigned cells of its connected
    component with a compatible ``N`` nearest (periodic Lagrangian distance) to its centre; the centre is then moved to the centroid of those
    cells and they are re-chosen (``grow_iterations`` times); repeat until every mask cell is
    assigned. This splits touching protohaloes and gathers fragmented ones.

:func:`regions_to_catalog` gives each region of at least ``min_particles`` cells a halo:
mass = cells x particle mass (Msun/h), Lagrangian centre = periodic centroid of its cells,
Eulerian position = periodic mean of its particles moved by 2LPT to the output redshift
(:func:`astrogen.cosmology.initial.lpt_particles`, the same displacement as the PM initial
conditions; the PM would move them further, so this is an estimate whose error the benchmark
measures). :func:`match_regions` matches two labelings by shared particles.

Units: Mpc/h and Msun/h, carried with astropy's ``littleh`` units in the table.
"""
from __future__ import annotations

import numpy as np

from astrogen.errors import ConfigError

__all__ = ["periodic_components", "periodic_watershed", "grow_regions", "protohalo_regions",
           "regions_to_catalog", "match_regions", "REGION_METHODS"]

#: the mask-to-region methods of :func:`protohalo_regions`
REGION_METHODS = ("components", "watershed", "grow")


def periodic_components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """Connected components (face connectivity) of an n-D boolean mask on a torus.

    Returns ``(labels, n)``: labels 1..n (0 outside the mask), numbered in order of first
    appearance in C order."""
    from scipy import ndimage

    mask = np.asarray(mask, bool)
    lab, n = ndimage.label(mask)
    if n == 0:
        return lab, 0
    parent = np.arange(n + 1)

    def find(a):
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for ax in range(mask.ndim):
        a_ = np.take(lab, 0, axis=ax).ravel()
        b_ = np.take(lab, -1, axis=ax).ravel()
        both = (a_ > 0) & (b_ > 0)
        for a, b in zip(a_[both], b_[both]):
            ra, rb = find(a), find(b)
            if ra != rb:
                parent[max(ra, rb)] = min(ra, rb)
    roots = np.array([find(i) for i in range(n + 1)])
    uniq = np.unique(roots[1:])
    remap = np.zeros(n + 1, np.int64)
    remap[1:] = np.searchsorted(uniq, roots[1:]) + 1
    return remap[lab], len(uniq)


def periodic_watershed(mask: np.ndarray, min_distance: int = 2) -> tuple[np.ndarray, int]:
    """Split a 3-D periodic mask by a watershed of its Euclidean distance transform.

    Markers are the cells where the distance to the nearest cell outside the mask is a local
    maximum within a cube of side ``2 min_distance + 1`` (periodic) — one per plateau; every
    mask cell is flooded, in order of decreasing distance, from the marker that reaches it
    first (a priority flood over periodic face neighbours). Returns ``(labels, n)`` like
    :func:`periodic_components`."""
    from scipy import ndimage

    mask = np.asarray(mask, bool)
    if mask.ndim != 3:
        raise ConfigError("must be a 3-D mask.", key="mask", received={"shape": mask.shape})
    if isinstance(min_distance, bool) or not isinstance(min_distance, (int, np.integer)) \
            or min_distance < 1:
        raise ConfigError("must be an integer >= 1 (cells).", key="min_distance",
                          received={"min_distance": min_distance})
    if not mask.any():
        return np.zeros(mask.shape, np.int64), 0
    n = mask.shape
    tiled = np.tile(mask, (3, 3, 3))
    dist = ndimage.distance_transform_edt(tiled)
    centre = tuple(slice(s, 2 * s) for s in n)
    d = dist[centre]
    peak = (d == ndimage.maximum_filter(d, size=2 * int(min_distance) + 1, mode="wrap")) & mask
    markers, n_mark = periodic_components(peak)  # one marker per plateau
    if n_mark == 0:
        return periodic_components(mask)
    ws = _priority_flood(-d, markers, mask)
    # renumber and make sure every label is one piece (a rare basin split across the mask)
    out = np.zeros(n, np.int64)
    count = 0
    for k in np.unique(ws[ws > 0]):
        comp, nc = periodic_components(ws == k)
        for c in range(1, nc + 1):
            count += 1
            out[comp == c] = count
    leftover = mask & (out == 0)
    if leftover.any():
        comp, nc = periodic_components(leftover)
        out[leftover] = comp[leftover] + count
        count += nc
    return out, count


def grow_regions(mask: np.ndarray, n_pred: np.ndarray, grow_iterations: int = 2,
                 seed_fraction: float = 0.8, smallest_first: bool = True,
                 min_fill: float = 0.5, size_tolerance: float = 2.0
                 ) -> tuple[np.ndarray, int]:
    """Seeded region growing of a 3-D periodic mask with a predicted halo size per cell.

    Parameters
    ----------
    mask : numpy.ndarray of bool, shape (n, n, n)
    n_pred : numpy.ndarray, shape (n, n, n)
        Predicted number of particles of the halo each cell ends in (>= 1 on the mask).
    grow_iterations : int
        Times a halo's centre is moved to the centroid of its cells and the cells re-chosen.
    seed_fraction : float
        The seed is the free cell farthest from the mask's edge among the free cells whose
        predicted size is within this factor of the smallest (``smallest_first``) or the
        largest free one.
    smallest_first : bool
        Grow the haloes predicted smallest first (they would be swallowed by the spheres of
        large neighbours otherwise).
    min_fill : float
        A seed that finds fewer than this fraction of its predicted size in free cells is a
        leftover of a halo already grown, and its cells join the neighbouring halo.
    size_tolerance : float
        A halo only takes cells whose predicted size is within this factor of its seed's.

    Returns
    -------
    ``(labels, n)`` like :func:`periodic_components`, halo 1 seeded first.
    """
    mask = np.asarray(mask, bool)
    if mask.ndim != 3 or len(set(mask.shape)) != 1:
        raise ConfigError("must be a cubic 3-D mask.", key="mask", received={"shape": mask.shape})
    npred = np.asarray(n_pred, float)
    if npred.shape != mask.shape:
        raise ConfigError("must have the shape of the mask.", key="n_pred",
                          received={"shape": npred.shape, "mask": mask.shape})
    n = mask.shape[0]
    comp, _ = periodic_components(mask)
    cells = np.flatnonzero(mask.ravel())
    coords = np.stack(np.unravel_index(cells, mask.shape), 1).astype(float)
    comp_c = comp.ravel()[cells]
    size = np.maximum(np.rint(np.nan_to_num(npred.ravel()[cells], nan=1.0)), 1).astype(int)
    from scipy import ndimage

    edt = ndimage.distance_transform_edt(np.tile(mask, (3, 3, 3)))[
        tuple(slice(n, 2 * n) for _ in range(3))].ravel()[cells]
    nval = npred.ravel()[cells]
    free = np.ones(len(cells), bool)
    lab = np.zeros(len(cells), np.int64)
    count = 0
    while free.any():
        # seed: the most interior free cell among those predicted within seed_fraction of
        # the largest free halo size
        fidx = np.flatnonzero(free)
        if smallest_first:
            top = fidx[nval[fidx] <= nval[fidx].min() / seed_fraction]
        else:
            top = fidx[nval[fidx] >= seed_fraction * nval[fidx].max()]
        s = top[np.argmax(edt[top])]
        cand = np.flatnonzero(free & (comp_c == comp_c[s])
                              & (np.abs(np.log(nval / nval[s])) <= np.log(size_tolerance)))
        want = min(int(size[s]), len(cand))
        centre = coords[s]
        for _ in range(int(grow_iterations) + 1):
            d = coords[cand] - centre
            d -= n * np.rint(d / n)
            r2 = (d ** 2).sum(1)
            take = cand[np.argsort(r2, kind="stable")[:want]]
            dd = coords[take] - centre
            dd -= n * np.rint(dd / n)
            centre = np.mod(centre + dd.mean(0), n)
        if s not in take:  # the seed always belongs to its own halo
            take = np.append(take[:-1], s)
        free[take] = False
        if len(take) < min_fill * size[s]:
            lab[take] = -1  # leftover of a halo already grown: merged below
            continue
        count += 1
        lab[take] = count
    out = np.zeros(mask.size, np.int64)
    out[cells] = lab
    out = out.reshape(mask.shape)
    # leftovers join the grown halo next to them (periodic face neighbours, a few passes)
    for _ in range(4):
        left = out < 0
        if not left.any():
            break
        best = np.zeros(mask.shape, np.int64)
        for ax in range(3):
            for sh in (1, -1):
                nb = np.roll(out, sh, axis=ax)
                best = np.where((best == 0) & (nb > 0), nb, best)
        out = np.where(left & (best > 0), best, out)
    out[out < 0] = 0
    return out, count


def _priority_flood(height: np.ndarray, markers: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Watershed by priority flood on a periodic 3-D grid: labelled ``markers`` grow into
    the cells of ``mask`` over face neighbours, lowest ``height`` first."""
    import heapq

    shape = mask.shape
    lab = markers.astype(np.int64).ravel().copy()
    h = np.asarray(height, float).ravel()
    m = mask.ravel()
    idx = np.indices(shape).reshape(3, -1).T
    heap = [(h[i], int(i)) for i in np.flatnonzero(lab > 0)]
    heapq.heapify(heap)
    steps = [(ax, s) for ax in range(3) for s in (1, -1)]
    while heap:
        _, i = heapq.heappop(heap)
        c = idx[i]
        for ax, s in steps:
            nb = c.copy()
            nb[ax] = (nb[ax] + s) % shape[ax]
            j = int(np.ravel_multi_index(tuple(nb), shape))
            if m[j] and lab[j] == 0:
                lab[j] = lab[i]
                heapq.heappush(heap, (h[j], j))
    return lab.reshape(shape)


def protohalo_regions(prob: np.ndarray, threshold: float = 0.5, method: str = "components",
                      min_distance: int = 2, n_pred: np.ndarray | None = None,
                      grow_iterations: int = 2) -> tuple[np.ndarray, int]:
    """Protohalo regions of a 3-D probability map (see the module docstring).

    Parameters
    ----------
    prob : numpy.ndarray, shape (n, n, n)
        Probability per lattice cell.
    threshold : float
        Cells with ``prob > threshold`` are in a protohalo (0..1).
    method : {"components", "watershed"}
    min_distance : int
        Watershed marker separation, cells.
    n_pred : numpy.ndarray, optional
        Predicted halo particle count per cell (required by ``grow``).
    grow_iterations : int
        See :func:`grow_regions`.

    Returns
    -------
    labels : numpy.ndarray of int64, shape (n, n, n)
        0 outside, 1..n_regions inside.
    n_regions : int
    """
    prob = np.asarray(prob, float)
    if prob.ndim != 3:
        raise ConfigError("must be a 3-D probability map.", key="prob",
                          received={"shape": prob.shape})
    if not (0 < float(threshold) < 1):
        raise ConfigError("must be within (0, 1).", key="threshold",
                          received={"threshold": threshold})
    if method not in REGION_METHODS:
        raise ConfigError(f"must be one of {list(REGION_METHODS)}.", key="method",
                          received={"method": method})
    mask = prob > float(threshold)
    if method == "components":
        return periodic_components(mask)
    if method == "grow":
        if n_pred is None:
            raise ConfigError("the 'grow' method needs the predicted halo sizes.",
                              key="n_pred")
        return grow_regions(mask, n_pred, grow_iterations)
    return periodic_watershed(mask, min_distance)


def _periodic_mean(values: np.ndarray, labels: np.ndarray, n_lab: int, period: float):
    """Per-label periodic mean of ``values`` (n_items,) by the circular mean."""
    ang = 2.0 * np.pi * values / period
    s = np.bincount(labels, weights=np.sin(ang), minlength=n_lab)
    c = np.bincount(labels, weights=np.cos(ang), minlength=n_lab)
    return np.mod(np.arctan2(s, c) * period / (2.0 * np.pi), period)


def regions_to_catalog(labels: np.ndarray, box_size: float, particle_mass_msun_h: float,
                       min_particles: int = 1, delta_linear: np.ndarray | None = None,
                       cosmology=None, redshift: float = 0.0, lattice_shift: float = 0.0,
                       prob: np.ndarray | None = None) -> dict:
    """Halo catalogue of labelled protohalo regions on the particle lattice.

    Parameters
    ----------
    labels : numpy.ndarray of int, shape (n, n, n)
        Regions 1..N (0 = no halo), e.g. from :func:`protohalo_regions`.
    box_size : float
        Box side, Mpc/h.
    particle_mass_msun_h : float
        Mass of one particle (one lattice cell), Msun/h.
    min_particles : int
        Regions with fewer cells are dropped.
    delta_linear : numpy.ndarray, optional
        z = 0 linear density contrast on the lattice: with ``cosmology``, gives the Eulerian
        positions (2LPT to ``redshift``). Without it ``x``, ``y``, ``z`` are ``nan``.
    cosmology : astrogen.cosmology.background.Cosmology, optional
    redshift : float
        Output redshift of the Eulerian positions.
    lattice_shift : float
        Lattice offset in cells (the PM's :attr:`~astrogen.nbody.pm.ParticleMesh.
        lattice_shift`, 0.25 for a force mesh twice finer).
    prob : numpy.ndarray, optional
        Probability map: adds each halo's mean probability (``score``).

    Returns
    -------
    dict of numpy arrays, one entry per halo, sorted by decreasing mass:
        ``region`` (label), ``n_particles``, ``mass`` (Msun/h), ``x_lag``, ``y_lag``,
        ``z_lag`` (Lagrangian centre, Mpc/h), ``x``, ``y``, ``z`` (Eulerian estimate, Mpc/h),
        ``score``.
    """
    lab = np.asarray(labels).astype(np.int64)
    if lab.ndim != 3 or len(set(lab.shape)) != 1:
        raise ConfigError("must be a cubic 3-D label grid.", key="labels",
                          received={"shape": lab.shape})
    n = lab.shape[0]
    L = float(box_size)
    flat = lab.ravel()
    n_lab = int(flat.max()) + 1 if flat.size else 1
    counts = np.bincount(flat, minlength=n_lab)
    keep = np.flatnonzero(counts >= int(min_particles))
    keep = keep[keep > 0]
    keep = keep[np.argsort(-counts[keep], kind="stable")]
    sel = flat > 0
    q = (np.indices(lab.shape).reshape(3, -1).T + float(lattice_shift)) * (L / n)
    lag = np.stack([_periodic_mean(q[sel, i], flat[sel], n_lab, L) for i in range(3)], 1)
    eul = np.full((n_lab, 3), np.nan)
    if delta_linear is not None:
        if cosmology is None:
            raise ConfigError("Eulerian positions need the cosmology.", key="cosmology")
        from astrogen.cosmology.initial import lpt_particles

        pos, _ = lpt_particles(np.asarray(delta_linear, float), L, cosmology,
                               1.0 / (1.0 + float(redshift)), order=2, shift=lattice_shift)
        eul = np.stack([_periodic_mean(pos[sel, i], flat[sel], n_lab, L) for i in range(3)], 1)
    score = np.full(n_lab, np.nan)
    if prob is not None:
        p = np.asarray(prob, float).ravel()
        score = np.bincount(flat, weights=p, minlength=n_lab) / np.maximum(counts, 1)
    out = {"region": keep, "n_particles": counts[keep].astype(np.int64),
           "mass": counts[keep] * float(particle_mass_msun_h), "score": score[keep]}
    for i, c in enumerate("xyz"):
        out[f"{c}_lag"] = lag[keep, i]
        out[c] = eul[keep, i]
    return out


def match_regions(pred: np.ndarray, true: np.ndarray, min_shared: float = 0.5
                  ) -> list[tuple[int, int, int]]:
    """One-to-one matching of two labelings of the same lattice by shared particles.

    Pairs ``(p, t)`` (labels > 0) are taken greedily by decreasing number of shared cells;
    a pair counts when the shared cells are at least ``min_shared`` of the smaller region.

    Returns
    -------
    list of ``(pred_label, true_label, shared_cells)``.
    """
    a = np.asarray(pred).ravel().astype(np.int64)
    b = np.asarray(true).ravel().astype(np.int64)
    if a.shape != b.shape:
        raise ConfigError("the two labelings must have the same shape.", key="true",
                          received={"pred": np.shape(pred), "true": np.shape(true)})
    na = np.bincount(a)
    nb = np.bincount(b)
    both = (a > 0) & (b > 0)
    if not both.any():
        return []
    pairs, shared = np.unique(np.stack([a[both], b[both]]), axis=1, return_counts=True)
    order = np.argsort(-shared, kind="stable")
    used_a, used_b, out = set(), set(), []
    for k in order:
        p, t, s = int(pairs[0, k]), int(pairs[1, k]), int(shared[k])
        if p in used_a or t in used_b:
            continue
        if s < min_shared * min(na[p], nb[t]):
            continue
        used_a.add(p)
        used_b.add(t)
        out.append((p, t, s))
    return out

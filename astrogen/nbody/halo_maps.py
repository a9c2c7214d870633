"""Halo catalogs from 2-D halo maps (pure numpy/scipy): periodic connected components of a
probability map, greedy periodic matching of two catalogs, Dice coefficient. Used by the
halo-map U-Net's stage and by the emulator metrics."""
from __future__ import annotations

import numpy as np

__all__ = ["periodic_labels", "mask_to_catalog", "match_catalogs", "dice"]


def periodic_labels(mask: np.ndarray):
    """Connected components (4-connectivity) of a 2-D mask on a torus."""
    from scipy import ndimage

    lab, n = ndimage.label(mask)
    if n == 0:
        return lab, 0
    parent = np.arange(n + 1)

    def find(a):
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for a_, b_ in ((lab[0, :], lab[-1, :]), (lab[:, 0], lab[:, -1])):
        for a, b in zip(a_, b_):
            if a and b:
                ra, rb = find(a), find(b)
                if ra != rb:
                    parent[max(ra, rb)] = min(ra, rb)
    roots = np.array([find(i) for i in range(n + 1)])
    uniq = np.unique(roots[1:])
    remap = np.zeros(n + 1, int)
    remap[1:] = np.searchsorted(uniq, roots[1:]) + 1
    return remap[lab], len(uniq)


def mask_to_catalog(prob: np.ndarray, log_mass: np.ndarray | None = None,
                    threshold: float = 0.5, cell_size: float = 1.0,
                    min_pixels: int = 1) -> dict:
    """Halo catalog of one probability map (periodic connected components).

    Returns a dict of arrays: ``u``, ``v`` (centre along the map's first and second axes,
    in the units of ``cell_size``, pixel ``i`` centred at ``i * cell_size``), ``mass``
    (Msun/h, ``nan`` without ``log_mass``), ``n_pixels``, ``score`` (max probability).
    """
    prob = np.asarray(prob, float)
    n0, n1 = prob.shape
    lab, n = periodic_labels(prob > threshold)
    us, vs, ms, npix, score = [], [], [], [], []
    ii, jj = np.indices(prob.shape)
    for k in range(1, n + 1):
        sel = lab == k
        if sel.sum() < min_pixels:
            continue
        w = prob[sel]
        cen = []
        for idx, size in ((ii[sel], n0), (jj[sel], n1)):
            ang = 2 * np.pi * idx / size
            c = np.arctan2(np.sum(w * np.sin(ang)), np.sum(w * np.cos(ang)))
            cen.append(np.mod(c * size / (2 * np.pi), size))
        us.append(cen[0] * cell_size)
        vs.append(cen[1] * cell_size)
        ms.append(10 ** (np.sum(w * log_mass[sel]) / np.sum(w)) if log_mass is not None
                  else np.nan)
        npix.append(int(sel.sum()))
        score.append(float(w.max()))
    return {"u": np.array(us), "v": np.array(vs), "mass": np.array(ms),
            "n_pixels": np.array(npix, int), "score": np.array(score)}


def match_catalogs(true_uv: np.ndarray, pred_uv: np.ndarray, period: float,
                   max_dist: float) -> tuple[np.ndarray, np.ndarray]:
    """Greedy one-to-one matching by projected periodic distance (closest pairs first).

    Returns ``(true_matched, pred_matched)`` boolean arrays.
    """
    t = np.asarray(true_uv, float).reshape(-1, 2)
    p = np.asarray(pred_uv, float).reshape(-1, 2)
    tm = np.zeros(len(t), bool)
    pm = np.zeros(len(p), bool)
    if len(t) == 0 or len(p) == 0:
        return tm, pm
    d = t[:, None, :] - p[None, :, :]
    d = d - period * np.rint(d / period)
    dist = np.sqrt((d ** 2).sum(-1))
    order = np.argsort(dist, axis=None)
    for flat in order:
        i, j = np.unravel_index(flat, dist.shape)
        if dist[i, j] > max_dist:
            break
        if not tm[i] and not pm[j]:
            tm[i] = pm[j] = True
    return tm, pm


def dice(pred_mask: np.ndarray, true_mask: np.ndarray) -> float:
    """Dice coefficient ``2 |A & B| / (|A| + |B|)`` over all pixels given."""
    a = np.asarray(pred_mask, bool)
    b = np.asarray(true_mask, bool)
    den = a.sum() + b.sum()
    return float(2.0 * np.logical_and(a, b).sum() / den) if den else 1.0

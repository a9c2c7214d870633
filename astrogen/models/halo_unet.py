r"""Halo-map network: projected density slab -> halo mask (+ halo mass map) -> halo catalog.

After Berger & Stein (2019, arXiv:1805.04537), who segment haloes in 3-D density fields with
a V-Net; here a small 2-D U-Net with periodic padding (the building blocks of
:mod:`astrogen.models.nbody_gan`) segments projected slabs. Input: ``s(1 + delta)`` (the
emulator's pixel transform). Two outputs per pixel: the logit of "within ``halo_radius``
pixels of a FoF halo centre lying in the slab", and ``(log10 M - 13) `` of that halo.

:func:`mask_to_catalog` turns a probability map into a catalog: connected components
(periodic) of ``p > threshold``, centre = probability-weighted periodic centroid, mass =
``10 ** (p-weighted mean of the predicted log10 M)`` over the component.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from astrogen.errors import ModelError
from astrogen.models.nbody_gan import PeriodicPad2D, PixelTransform, periodic_unet

__all__ = ["HaloUNet", "load_halo_unet", "mask_to_catalog", "match_catalogs", "dice",
           "LOGM_OFFSET"]

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

    def save(self, path) -> Path:
        path = Path(path)
        if path.suffix != ".keras":
            raise ModelError("the file name must end in .keras.", key="path",
                             received={"path": str(path)})
        path.parent.mkdir(parents=True, exist_ok=True)
        self.network.save(path)
        path.with_suffix(".json").write_text(json.dumps(self.config(), indent=2) + "\n")
        return path


def load_halo_unet(path) -> HaloUNet:
    import keras

    PeriodicPad2D(1)  # register the custom layer
    path = Path(path)
    side = path.with_suffix(".json")
    if not (path.is_file() and side.is_file()):
        raise ModelError("missing model file or its .json sidecar.", key="model",
                         received={"model": str(path)})
    cfg = json.loads(side.read_text())
    if cfg.get("format") != "astrogen.halo_unet/1":
        raise ModelError("not an astrogen halo U-Net file.", key="model",
                         received={"format": cfg.get("format")})
    net = keras.models.load_model(path, compile=False)
    return HaloUNet(size=cfg["size"], channels=cfg["channels"],
                    transform_a=cfg["transform_a"], meta=cfg["meta"], network=net)


# ---------------------------------------------------------------------- mask -> catalog
def _periodic_labels(mask: np.ndarray):
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
    lab, n = _periodic_labels(prob > threshold)
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

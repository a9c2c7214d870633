"""Sharded, seeded set of multi-band survey scenes with truth, and the scene deblender's
training cut-outs made from it.

Scenes come from :func:`astrogen.physics.survey_scenes.render_scene` (LSST g r i z,
0.2"/pixel, 10-year depth, seeing PSF, COSMOS galaxies at the sampler's density, stars);
scene ``s`` is a function of ``(seed, s)`` only. Shards ``scenes_00000.npz`` hold
``image`` (n, C, H, W) [e-], ``models_det`` (sum N, H, W) (each object's noiseless image
in the unit-noise detection combination of the bands,
:func:`astrogen.physics.survey_scenes.detection_weights`), ``n_objects`` (n,), ``scene_id``
and the truth columns (one entry per object, scenes concatenated). Per-band noiseless
images are not stored (their per-band fluxes are, in ``flux_scene_<band>``).

Training cut-outs (:func:`training_cutouts`) run the *same* detection and cut-out code as the
deblender (:mod:`astrogen.deblend.scene`): each detection's target is the light fraction
``m_j / (M + fraction_background)`` (detection units, unit noise) of the true object ``j``
that gives the most light at the detection's pixel among those within one PSF FWHM of it
(zero for a spurious detection).
"""
from __future__ import annotations

import dataclasses
import datetime
from pathlib import Path

import numpy as np

from astrogen.datasets.base import DatasetConfig, is_complete, load_manifest, manifest_path
from astrogen.errors import ConfigError
from astrogen.io.atomic import save_npz, write_json

__all__ = ["SceneDatasetConfig", "build_scene_dataset", "read_scene_dataset",
           "training_cutouts", "TRUTH_COLUMNS"]

SCENE_FORMAT = "astrogen.survey_scenes"
TRUTH_COLUMNS = ("x", "y", "mag", "is_star", "hlr", "blendedness", "snr", "inside")


@dataclasses.dataclass(frozen=True)
class SceneDatasetConfig(DatasetConfig):
    """What the scene set contains.

    Parameters
    ----------
    n_scenes : int
        Scenes (ids ``first_scene`` .. ``first_scene + n_scenes - 1``).
    size, bands, margin, star_density, density_scale
        :class:`astrogen.physics.survey_scenes.SceneSpec`.
    seed : int
    first_scene : int
        Id of the first scene (held-out sets use other ids and seeds).
    shard_size : int
        Scenes per file (does not change the data).
    """

    REQUIRED = ("n_scenes",)
    n_scenes: int = 0
    size: int = 64
    bands: tuple = ("lsst_g", "lsst_r", "lsst_i", "lsst_z")
    margin: int = 8
    star_density: float = 2.0
    density_scale: float = 1.0
    seed: int = 0
    first_scene: int = 0
    shard_size: int = 50

    def check(self):
        """Check every field; a ConfigError names the key and the value received."""
        for k in ("n_scenes", "shard_size", "first_scene"):
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < (
                    1 if k != "first_scene" else 0):
                raise ConfigError("must be a positive integer.", key=k, received={k: v})
        self.spec()

    def spec(self):
        """The :class:`~astrogen.physics.survey_scenes.SceneSpec` of the data set's scenes."""
        from astrogen.physics.survey_scenes import SceneSpec

        return SceneSpec(size=self.size, bands=tuple(self.bands), margin=self.margin,
                         star_density=self.star_density, density_scale=self.density_scale)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["bands"] = list(self.bands)
        return d


def _shard(cfg: SceneDatasetConfig, spec, lo: int, hi: int) -> dict:
    from astrogen.physics.survey_scenes import detection_weights, render_scene

    imgs, mdet, nobj, cols = [], [], [], {}
    for s in range(lo, hi):
        r = render_scene(spec, cfg.seed, s)
        w = detection_weights(r["noise_sigma"])
        imgs.append(r["image"])
        m = r["models"]
        mdet.append(np.tensordot(m, w, axes=([1], [0])).astype(np.float32) if len(m)
                    else np.zeros((0, spec.size, spec.size), np.float32))
        nobj.append(len(m))
        t = r["truth"]
        names = list(TRUTH_COLUMNS) + [c for c in t.colnames if c.startswith(("mag_", "flux_"))]
        for c in names:
            cols.setdefault(c, []).append(np.asarray(t[c]))
    out = {"image": np.stack(imgs), "models_det": np.concatenate(mdet),
           "n_objects": np.asarray(nobj, np.int64),
           "scene_id": np.arange(lo, hi, dtype=np.int64)}
    for c, v in cols.items():
        out["truth_" + c] = np.concatenate(v)
    return out


def build_scene_dataset(path, cfg: SceneDatasetConfig | dict, progress: bool = False) -> dict:
    """Build (or finish: shards already written are kept) the scene set in folder ``path``.

    Returns the manifest."""
    if isinstance(cfg, dict):
        cfg = SceneDatasetConfig.from_dict(cfg)
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    man = load_manifest(path)
    if man is not None and man.get("config") != cfg.identity() | {"shard_size": cfg.shard_size}:
        if {k: v for k, v in man.get("config", {}).items() if k != "shard_size"} \
                != cfg.identity():
            raise ConfigError("the folder holds another scene set; choose another folder.",
                              key="path", received={"path": str(path)})
    if man is None:
        man = {"format": SCENE_FORMAT, "version": 1, "config": cfg.to_dict(),
               "status": "building", "shards": [],
               "created": datetime.datetime.now(datetime.timezone.utc).isoformat()}
    spec = cfg.spec()
    done = {tuple(s["rows"]) for s in man["shards"]}
    first, last = cfg.first_scene, cfg.first_scene + cfg.n_scenes
    for lo in range(first, last, cfg.shard_size):
        hi = min(lo + cfg.shard_size, last)
        if (lo, hi) in done:
            continue
        name = f"scenes_{lo:07d}.npz"
        save_npz(path / name, **_shard(cfg, spec, lo, hi))
        man["shards"].append({"file": name, "rows": [lo, hi]})
        write_json(manifest_path(path), man)
        if progress:
            print(f"scenes {hi - first}/{cfg.n_scenes}", flush=True)
    man["status"] = "complete"
    man["sigma"] = spec.noise_sigma().tolist()
    man["psf_fwhm"] = spec.psf_fwhm().tolist()
    man["pixel_scale"] = spec.pixel_scale
    write_json(manifest_path(path), man)
    return man


def read_scene_dataset(path, max_shards: int | None = None) -> list[dict]:
    """The scenes of a complete set: one dict per scene with ``image`` (C, H, W),
    ``models_det`` (N, H, W), ``truth`` (dict of per-object arrays), ``scene_id``."""
    path = Path(path)
    if not is_complete(path):
        raise ConfigError("no complete scene set in this folder (build it first).",
                          key="path", received={"path": str(path)})
    man = load_manifest(path)
    scenes = []
    for s in sorted(man["shards"], key=lambda s: s["rows"][0])[:max_shards]:
        with np.load(path / s["file"]) as z:
            d = {k: z[k] for k in z.files}
        offs = np.concatenate([[0], np.cumsum(d["n_objects"])])
        tcols = [k for k in d if k.startswith("truth_")]
        for i in range(len(d["image"])):
            a, b = offs[i], offs[i + 1]
            scenes.append({"image": d["image"][i], "models_det": d["models_det"][a:b],
                           "scene_id": int(d["scene_id"][i]),
                           "truth": {k[6:]: d[k][a:b] for k in tcols}})
    return scenes


def match_detections(det_xy: np.ndarray, scene: dict, radius: float) -> np.ndarray:
    """Index of the true object of each detection (-1: spurious): the one giving the most
    light at the detection's pixel among the objects within ``radius`` pixels."""
    m = scene["models_det"]
    tx, ty = scene["truth"]["x"], scene["truth"]["y"]
    out = np.full(len(det_xy), -1, np.int64)
    h, w = scene["image"].shape[1:]
    for k, (x, y) in enumerate(det_xy):
        d = np.hypot(tx - x, ty - y)
        cand = np.flatnonzero(d <= radius)
        if len(cand) == 0:
            continue
        r = int(np.clip(np.floor(y + 0.5), 0, h - 1))
        c = int(np.clip(np.floor(x + 0.5), 0, w - 1))
        out[k] = cand[int(np.argmax(m[cand, r, c]))]
    return out


def training_cutouts(scenes: list[dict], sigma, psf_fwhm_pix: float, size: int = 32,
                     fraction_background: float = 0.1, detect_params: dict | None = None
                     ) -> dict:
    """Network inputs and target fractions of every detection of ``scenes``.

    Returns
    -------
    dict
        ``inputs`` (n, size, size, C + 2) float32, ``targets`` (n, size, size) float32,
        ``matched`` (n,) bool.
    """
    from astrogen.deblend.scene import (DETECT_DEFAULTS, cutout_inputs, detect,
                                        detection_image)

    params = {**DETECT_DEFAULTS, **(detect_params or {})}
    xs, ys, ms = [], [], []
    for sc in scenes:
        det = detection_image(sc["image"], sigma)
        objs, _ = detect(det, psf_fwhm_pix, **params)
        if len(objs) == 0:
            continue
        pos = np.c_[objs["x"], objs["y"]]
        x, origins = cutout_inputs(sc["image"], sigma, pos, size)
        j = match_detections(pos, sc, psf_fwhm_pix)
        m = sc["models_det"]
        tot = np.clip(m, 0, None).sum(axis=0) + float(fraction_background)
        frac = np.zeros((len(pos), size, size), np.float32)
        h, w = tot.shape
        for k in range(len(pos)):
            if j[k] < 0:
                continue
            full = np.clip(m[j[k]], 0, None) / tot
            r0, c0 = origins[k]
            ra, rb, ca, cb = max(r0, 0), min(r0 + size, h), max(c0, 0), min(c0 + size, w)
            frac[k, ra - r0:rb - r0, ca - c0:cb - c0] = full[ra:rb, ca:cb]
        xs.append(x)
        ys.append(frac)
        ms.append(j >= 0)
    c = len(np.atleast_1d(sigma))
    if not xs:
        return {"inputs": np.zeros((0, size, size, c + 2), np.float32),
                "targets": np.zeros((0, size, size), np.float32), "matched": np.zeros(0, bool)}
    return {"inputs": np.concatenate(xs), "targets": np.concatenate(ys),
            "matched": np.concatenate(ms)}

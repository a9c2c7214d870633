"""Scoring deblending results on scenes with known truth (the ``deblend.report`` stage and
``benchmarks/deblend_benchmark.py`` share it).

Truth: each object's ownership map above ``threshold`` sigma
(:func:`astrogen.physics.blends.ownership`, label = slot + 1), its position, its flux in the
stamp (``flux_stamp``) and its blendedness. Per true object and method:

* ``iou``: :func:`astrogen.deblend.metrics.iou_per_object` against the method's label map;
* ``detected``: matched one-to-one to a measured object within ``max_distance`` pixels
  (:func:`astrogen.deblend.metrics.match_positions`), and then ``flux_meas``;
* pixel records of a probabilistic method (per-pixel probabilities over background and the
  object slots, slots aligned to the truth per scene): top-label confidence, whether the
  top label is right, and the uncertainty, on the *object region* (pixels where the truth
  or the prediction is not background) and on all pixels.
"""
from __future__ import annotations

import itertools

import numpy as np
from astropy.table import Table

from astrogen.deblend.metrics import (expected_calibration_error, flux_error_stats,
                                      iou_per_object, match_positions, reliability_curve,
                                      roc_auc)
from astrogen.physics.blends import ownership

__all__ = ["true_labels", "object_records", "pixel_records", "summarize",
           "BLENDEDNESS_BINS"]

#: Bins of blendedness for "IoU vs overlap".
BLENDEDNESS_BINS = (0.0, 0.01, 0.03, 0.1, 0.3, 1.0)


def true_labels(batch, threshold: float = 1.0) -> np.ndarray:
    """Ownership label maps (n, h, w) above ``threshold`` x the scene's noise sigma."""
    return ownership(batch.models, threshold * batch.sigma())


def object_records(batch, method: str, max_distance: float = 3.0,
                   threshold: float = 1.0) -> Table:
    """One row per true object with the method's IoU, detection and measured flux."""
    res = batch.results[method]
    lab_t = true_labels(batch, threshold)
    lab_p = np.asarray(res["labels"])
    cat = res["catalog"]
    obj = batch.objects
    cols: dict[str, list] = {k: [] for k in ("scene_id", "slot", "blendedness", "sep_nearest",
                                             "mag", "flux_true", "iou", "detected",
                                             "flux_meas", "n_pred_scene")}
    cat_sid = np.asarray(cat["scene_id"]) if len(cat) else np.zeros(0, np.int64)
    for i, sid in enumerate(batch.scene_ids):
        rows = np.flatnonzero(np.asarray(obj["scene_id"]) == sid)
        io = iou_per_object(lab_t[i], lab_p[i])
        iou_of = {int(t): float(v) for t, v in zip(io["true_id"], io["iou"])}
        sel = np.flatnonzero(cat_sid == sid)
        pred_xy = np.c_[np.asarray(cat["x"])[sel], np.asarray(cat["y"])[sel]] if len(sel) \
            else np.zeros((0, 2))
        true_xy = np.c_[np.asarray(obj["x"])[rows], np.asarray(obj["y"])[rows]]
        m = match_positions(true_xy, pred_xy, max_distance)
        for j, r in enumerate(rows):
            slot = int(obj["slot"][r])
            cols["scene_id"].append(int(sid))
            cols["slot"].append(slot)
            cols["blendedness"].append(float(obj["blendedness"][r]))
            cols["sep_nearest"].append(float(obj["sep_nearest"][r]))
            cols["mag"].append(float(obj["mag"][r]))
            cols["flux_true"].append(float(obj["flux_stamp"][r]))
            cols["iou"].append(iou_of.get(slot + 1, 0.0))
            k = int(m["pred_of_true"][j])
            cols["detected"].append(k >= 0)
            cols["flux_meas"].append(float(np.asarray(cat["flux"])[sel][k]) if k >= 0
                                     else np.nan)
            cols["n_pred_scene"].append(len(sel))
    return Table(cols, dtype=[np.int64, np.int64, float, float, float, float, float, bool,
                              float, np.int64])


def _align_to_truth(prob: np.ndarray, truth: np.ndarray) -> np.ndarray:
    k = prob.shape[-1] - 1
    perms = [np.array((0, *[1 + p for p in perm])) for perm in itertools.permutations(range(k))]
    best, best_acc = prob, -1.0
    for p in perms:
        acc = float(np.mean(np.argmax(prob[..., p], axis=-1) == truth))
        if acc > best_acc:
            best, best_acc = prob[..., p], acc
    return best


def pixel_records(batch, method: str, threshold: float = 1.0,
                  max_pixels: int = 2_000_000) -> dict[str, np.ndarray]:
    """Per-pixel ``confidence``, ``correct``, ``uncertainty`` and ``region`` (object region
    mask) of a method with ``fractions`` and ``uncertainty`` results; slots aligned to the
    truth per scene. Returns empty arrays if the method has no probabilities."""
    res = batch.results[method]
    if "fractions" not in res or "uncertainty" not in res:
        return {}
    lab_t = true_labels(batch, threshold)
    prob = np.asarray(res["fractions"])
    unc = np.asarray(res["uncertainty"])
    conf, corr, u, reg = [], [], [], []
    for i in range(len(batch)):
        p = _align_to_truth(prob[i], lab_t[i])
        pred = np.argmax(p, axis=-1)
        conf.append(p.max(axis=-1).ravel())
        corr.append((pred == lab_t[i]).ravel())
        u.append(unc[i].ravel())
        reg.append(((lab_t[i] > 0) | (pred > 0)).ravel())
    out = {"confidence": np.concatenate(conf).astype(np.float32),
           "correct": np.concatenate(corr), "uncertainty": np.concatenate(u).astype(np.float32),
           "region": np.concatenate(reg)}
    if len(out["confidence"]) > max_pixels:  # deterministic thinning
        step = int(np.ceil(len(out["confidence"]) / max_pixels))
        out = {k: v[::step] for k, v in out.items()}
    return out


def _calibration(conf, corr, n_bins=10) -> dict:
    probs = np.asarray(conf, np.float64)
    hit = np.asarray(corr).astype(np.int64)
    # top-label calibration as a binary problem: P(top label right) = confidence
    rc = reliability_curve(probs, hit, n_bins)
    return {"ece": expected_calibration_error(probs, hit, n_bins),
            "n_pixels": int(len(probs)), "error_rate": float(1 - hit.mean()) if len(hit) else
            float("nan"),
            "reliability": {k: np.asarray(v).tolist() for k, v in rc.items()}}


def summarize(objects: Table, pixels: dict | None = None, seconds: float | None = None,
              n_scenes: int | None = None, bins=BLENDEDNESS_BINS) -> dict:
    """Summary of one method: IoU (median, mean, per blendedness bin), completeness,
    flux errors of detected objects, calibration and uncertainty ROC AUC, speed."""
    iou = np.asarray(objects["iou"], float)
    det = np.asarray(objects["detected"], bool)
    beta = np.asarray(objects["blendedness"], float)
    out: dict = {"n_objects": int(len(objects))}
    out["iou_median"] = float(np.median(iou)) if len(iou) else float("nan")
    out["iou_mean"] = float(np.mean(iou)) if len(iou) else float("nan")
    per = []
    for lo, hi in zip(bins[:-1], bins[1:]):
        s = (beta >= lo) & (beta < hi) if hi < bins[-1] else (beta >= lo) & (beta <= hi)
        okb = s & det & (np.asarray(objects["flux_true"], float) > 0) & np.isfinite(
            np.asarray(objects["flux_meas"], float))
        fb = flux_error_stats(np.asarray(objects["flux_true"], float)[okb],
                              np.asarray(objects["flux_meas"], float)[okb])
        per.append({"blendedness": [lo, hi], "n": int(s.sum()),
                    "iou_median": float(np.median(iou[s])) if s.any() else float("nan"),
                    "iou_mean": float(np.mean(iou[s])) if s.any() else float("nan"),
                    "completeness": float(det[s].mean()) if s.any() else float("nan"),
                    "flux_mape": fb["mape"], "dmag_median": fb["dmag_median"],
                    "dmag_nmad": fb["dmag_nmad"]})
    out["by_blendedness"] = per
    out["completeness"] = float(det.mean()) if len(det) else float("nan")
    sid = np.asarray(objects["scene_id"])
    scenes = np.unique(sid)
    both = [bool(det[sid == s].all()) for s in scenes]
    out["scenes_all_detected"] = float(np.mean(both)) if both else float("nan")
    ft = np.asarray(objects["flux_true"], float)
    fm = np.asarray(objects["flux_meas"], float)
    ok = det & (ft > 0) & np.isfinite(fm)
    out["flux"] = flux_error_stats(ft[ok], fm[ok])
    out["flux"]["n_detected"] = int(ok.sum())
    if pixels:
        reg = pixels["region"]
        out["calibration_region"] = _calibration(pixels["confidence"][reg],
                                                 pixels["correct"][reg])
        out["calibration_all_pixels"] = _calibration(pixels["confidence"], pixels["correct"])
        out["uncertainty_auc_region"] = roc_auc(pixels["uncertainty"][reg],
                                                ~pixels["correct"][reg])
        out["uncertainty_auc_all_pixels"] = roc_auc(pixels["uncertainty"],
                                                    ~pixels["correct"])
    if seconds is not None and n_scenes:
        out["seconds"] = float(seconds)
        out["scenes_per_second"] = float(n_scenes / seconds) if seconds > 0 else float("nan")
    return out

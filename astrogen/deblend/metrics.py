"""Deblending metrics: IoU per object, calibration, uncertainty ROC, flux errors, completeness.

All functions take numpy arrays and return plain numbers, dicts of arrays or astropy Tables;
nothing here depends on TensorFlow or scikit-learn.

Definitions
-----------
* **IoU per object** (:func:`iou_per_object`): each true object owns the pixels where it
  dominates (:func:`astrogen.deblend.measure.ownership_labels`); it is matched to the predicted
  segment that covers most of its pixels, and ``IoU = |T & P| / |T | P|``. A predicted segment
  may be matched by several true objects (an unresolved blend lowers both IoUs).
* **Calibration** (:func:`reliability_curve`, :func:`expected_calibration_error`): for class
  probabilities, the confidence of the top class against the frequency of it being right
  (Guo et al. 2017); for a binary probability, the predicted probability against the observed
  frequency of the positive label. ECE is the count-weighted mean of ``|accuracy - confidence|``
  over equal-width bins.
* **Uncertainty ROC** (:func:`uncertainty_error_auc`): how well a per-pixel uncertainty ranks the
  wrongly classified pixels above the right ones; 1 = perfect flagger, 0.5 = random.
* **Flux errors** (:func:`flux_error_stats`): ``dmag = -2.5 log10(flux_measured / flux_true)``;
  bias (median and mean), scatter (NMAD = 1.4826 x median absolute deviation, and standard
  deviation), mean absolute percentage error of the flux, and the outlier fraction.
* **Completeness** (:func:`detection_completeness`): one-to-one matching of true and detected
  positions within ``max_distance`` pixels (optimal assignment); completeness is
  matched / true, purity matched / detected.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from astropy.table import Table

from astrogen.errors import ConfigError
from astrogen.physics.photometry import mag_from_flux

__all__ = [
    "iou",
    "iou_per_object",
    "reliability_curve",
    "expected_calibration_error",
    "roc_curve",
    "roc_auc",
    "uncertainty_error_auc",
    "flux_error_stats",
    "match_positions",
    "detection_completeness",
]


def _int_map(a: Any, key: str) -> np.ndarray:
    arr = np.asarray(a)
    if not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == bool):
        raise ConfigError("must be an integer label map.", key=key,
                          received={"dtype": str(arr.dtype)})
    return arr.astype(np.int64)


def _n_bins(n_bins: Any) -> int:
    if isinstance(n_bins, bool) or not isinstance(n_bins, (int, np.integer)) or n_bins < 1:
        raise ConfigError("must be an integer >= 1.", key="n_bins", received={"n_bins": n_bins})
    return int(n_bins)


# ------------------------------------------------------------------ overlap


def iou(mask_a: Any, mask_b: Any) -> float:
    """Intersection over union of two boolean masks (NaN if both are empty)."""
    a = np.asarray(mask_a, dtype=bool)
    b = np.asarray(mask_b, dtype=bool)
    if a.shape != b.shape:
        raise ConfigError("the masks must have the same shape.", key="mask_b",
                          received={"shape_a": a.shape, "shape_b": b.shape})
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else float("nan")


def iou_per_object(true_labels: Any, pred_labels: Any) -> Table:
    """IoU of every true object with the predicted segment that covers most of it.

    Parameters
    ----------
    true_labels, pred_labels : array_like of int, same shape
        Label maps, 0 = background, ``l > 0`` = object ``l`` (e.g. truth from
        :func:`~astrogen.deblend.measure.ownership_labels`, prediction from
        :func:`~astrogen.deblend.measure.labels_from_fractions` or a SEP segmentation map).
        Extra leading axes (a batch) are allowed; labels are then matched per whole array.

    Returns
    -------
    astropy.table.Table
        One row per true label present: ``true_id``, ``pred_id`` (0 when no predicted object
        pixel overlaps it), ``iou``, ``n_true_pix``, ``n_pred_pix``.
    """
    t = _int_map(true_labels, "true_labels")
    p = _int_map(pred_labels, "pred_labels")
    if t.shape != p.shape:
        raise ConfigError("true and predicted label maps must have the same shape.",
                          key="pred_labels", received={"true": t.shape, "pred": p.shape})
    t, p = t.ravel(), p.ravel()
    true_ids = np.unique(t[t > 0])
    pred_counts = np.bincount(p[p > 0], minlength=1) if np.any(p > 0) else np.zeros(1, int)
    rows = []
    for tid in true_ids:
        in_t = t == tid
        under = p[in_t]
        under = under[under > 0]
        if under.size == 0:
            rows.append((tid, 0, 0.0, int(in_t.sum()), 0))
            continue
        counts = np.bincount(under)
        pid = int(np.argmax(counts))  # ties -> smallest label
        inter = counts[pid]
        n_pred = int(pred_counts[pid])
        union = in_t.sum() + n_pred - inter
        rows.append((tid, pid, float(inter / union), int(in_t.sum()), n_pred))
    out = Table(rows=rows or None, names=("true_id", "pred_id", "iou", "n_true_pix", "n_pred_pix"),
                dtype=(np.int64, np.int64, np.float64, np.int64, np.int64))
    out["iou"].description = "intersection over union with the matched predicted segment"
    out["pred_id"].description = "predicted label covering most of the true object (0: none)"
    out["n_true_pix"].unit = out["n_pred_pix"].unit = "pix2"
    return out


# ------------------------------------------------------------------ calibration


def _confidence_correct(probs: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(labels)
    if p.shape == y.shape:  # binary: probability of the positive label
        conf = p.ravel()
        hit = y.ravel().astype(np.float64)
        if np.any((hit != 0) & (hit != 1)):
            raise ConfigError("binary labels must be 0 or 1.", key="labels")
    elif p.shape[:-1] == y.shape:
        conf = p.max(axis=-1).ravel()
        hit = (np.argmax(p, axis=-1) == y).ravel().astype(np.float64)
    else:
        raise ConfigError("probs must have the shape of labels (binary) or labels.shape + "
                          "(n_classes,).", key="probs",
                          received={"probs_shape": p.shape, "labels_shape": y.shape})
    if conf.size and (conf.min() < 0 or conf.max() > 1 or not np.all(np.isfinite(conf))):
        raise ConfigError("probabilities must be in [0, 1].", key="probs")
    return conf, hit


def reliability_curve(probs: Any, labels: Any, n_bins: int = 10) -> dict[str, np.ndarray]:
    """Reliability diagram data in ``n_bins`` equal-width confidence bins.

    Parameters
    ----------
    probs : array_like
        Either probabilities of the positive label (same shape as ``labels``, binary case)
        or class probabilities of shape ``labels.shape + (n_classes,)`` (top-label case).
    labels : array_like
        0/1 labels (binary) or class indices.
    n_bins : int
        Number of bins on [0, 1].

    Returns
    -------
    dict
        ``bin_edges`` (n_bins + 1), ``confidence`` (mean confidence per bin, NaN if empty),
        ``accuracy`` (observed frequency per bin, NaN if empty), ``count`` (int).
    """
    n_bins = _n_bins(n_bins)
    conf, hit = _confidence_correct(probs, labels)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    idx = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, n_bins - 1)
    count = np.bincount(idx, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        confidence = np.bincount(idx, weights=conf, minlength=n_bins) / count
        accuracy = np.bincount(idx, weights=hit, minlength=n_bins) / count
    return {"bin_edges": edges, "confidence": confidence, "accuracy": accuracy, "count": count}


def expected_calibration_error(probs: Any, labels: Any, n_bins: int = 10) -> float:
    """Expected calibration error: ``sum_b (n_b / N) |accuracy_b - confidence_b|``.

    Same inputs as :func:`reliability_curve`; NaN when there are no samples.
    """
    rc = reliability_curve(probs, labels, n_bins)
    n = rc["count"].sum()
    if n == 0:
        return float("nan")
    good = rc["count"] > 0
    gap = np.abs(rc["accuracy"][good] - rc["confidence"][good])
    return float(np.sum(rc["count"][good] * gap) / n)


# ------------------------------------------------------------------ ROC


def _scores_labels(scores: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels).ravel()
    if s.shape != y.shape:
        raise ConfigError("scores and labels must have the same number of elements.",
                          key="labels", received={"scores": s.size, "labels": y.size})
    if not np.all(np.isfinite(s)):
        raise ConfigError("scores must be finite.", key="scores")
    return s, y.astype(bool)


def roc_curve(scores: Any, labels: Any) -> dict[str, np.ndarray]:
    """ROC curve of ``scores`` (higher = more likely positive) against boolean ``labels``.

    Returns ``fpr``, ``tpr`` and ``thresholds`` (decreasing; the first point is (0, 0) at
    threshold +inf). Ties in scores form a single step.
    """
    s, y = _scores_labels(scores, labels)
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(s)), s.size - 1] if s.size else np.zeros(0, int)
    tp = np.cumsum(y)[last]
    fp = (last + 1) - tp
    n_pos, n_neg = y.sum(), (~y).sum()
    with np.errstate(invalid="ignore", divide="ignore"):
        tpr = np.r_[0.0, tp / n_pos] if n_pos else np.full(last.size + 1, np.nan)
        fpr = np.r_[0.0, fp / n_neg] if n_neg else np.full(last.size + 1, np.nan)
    return {"fpr": fpr, "tpr": tpr, "thresholds": np.r_[np.inf, s[last]]}


def roc_auc(scores: Any, labels: Any) -> float:
    """Area under the ROC curve (Mann-Whitney U with mid-ranks for ties); NaN if one class."""
    s, y = _scores_labels(scores, labels)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(s.size, dtype=np.float64)
    sorted_s = s[order]
    # mid-ranks of tied groups (1-based)
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_s)) + 1]
    ends = np.r_[starts[1:], s.size]
    mid = (starts + ends + 1) / 2.0
    ranks[order] = np.repeat(mid, ends - starts)
    u_stat = ranks[y].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u_stat / (n_pos * n_neg))


def uncertainty_error_auc(uncertainty: Any, pred_labels: Any, true_labels: Any,
                          mask: Any = None) -> float:
    """ROC AUC of a per-pixel uncertainty as a detector of misclassified pixels.

    ``uncertainty`` (e.g. predictive entropy of the probabilistic U-Net), ``pred_labels`` and
    ``true_labels`` have the same shape; ``mask`` (optional boolean) selects the pixels used,
    e.g. pixels near objects. 1 = every wrong pixel is more uncertain than every right pixel.
    """
    unc = np.asarray(uncertainty, dtype=np.float64)
    err = np.asarray(pred_labels) != np.asarray(true_labels)
    if unc.shape != err.shape:
        raise ConfigError("uncertainty and label maps must have the same shape.",
                          key="uncertainty", received={"uncertainty": unc.shape,
                                                      "labels": err.shape})
    if mask is not None:
        m = np.asarray(mask, dtype=bool)
        unc, err = unc[m], err[m]
    return roc_auc(unc, err)


# ------------------------------------------------------------------ fluxes


def flux_error_stats(flux_true: Any, flux_measured: Any,
                     outlier_dmag: float = 0.3) -> dict[str, float]:
    """Summary of flux errors of matched objects.

    Parameters
    ----------
    flux_true, flux_measured : array_like, same shape
        True (> 0) and measured fluxes in the same unit.
    outlier_dmag : float
        ``|dmag|`` above which an object is an outlier.

    Returns
    -------
    dict
        ``n``; ``n_nonpositive`` (measured flux <= 0, excluded from the magnitude statistics
        but counted as outliers); ``dmag_median`` and ``dmag_mean`` (bias, mag);
        ``dmag_nmad`` and ``dmag_std`` (scatter, mag); ``mape`` (mean ``|f_m - f_t| / f_t``,
        in per cent, over all objects); ``frac_bias_median`` (median of ``f_m / f_t - 1``);
        ``outlier_fraction``.
    """
    ft = np.asarray(flux_true, dtype=np.float64).ravel()
    fm = np.asarray(flux_measured, dtype=np.float64).ravel()
    if ft.shape != fm.shape:
        raise ConfigError("flux_true and flux_measured must have the same length.",
                          key="flux_measured", received={"true": ft.size, "measured": fm.size})
    if np.any(~(ft > 0)):
        raise ConfigError("true fluxes must be > 0.", key="flux_true",
                          received={"n_bad": int(np.sum(~(ft > 0)))})
    if not np.all(np.isfinite(fm)):
        raise ConfigError("measured fluxes must be finite.", key="flux_measured")
    n = ft.size
    nan = float("nan")
    if n == 0:
        return {"n": 0, "n_nonpositive": 0, "dmag_median": nan, "dmag_mean": nan,
                "dmag_nmad": nan, "dmag_std": nan, "mape": nan, "frac_bias_median": nan,
                "outlier_fraction": nan}
    pos = fm > 0
    dmag = mag_from_flux(fm[pos] / ft[pos], 0.0)  # -2.5 log10(measured / true)
    rel = fm / ft - 1.0
    have = dmag.size > 0
    med = float(np.median(dmag)) if have else nan
    return {
        "n": int(n),
        "n_nonpositive": int(n - pos.sum()),
        "dmag_median": med,
        "dmag_mean": float(np.mean(dmag)) if have else nan,
        "dmag_nmad": float(1.4826 * np.median(np.abs(dmag - med))) if have else nan,
        "dmag_std": float(np.std(dmag)) if have else nan,
        "mape": float(100.0 * np.mean(np.abs(rel))),
        "frac_bias_median": float(np.median(rel)),
        "outlier_fraction": float((np.sum(np.abs(dmag) > outlier_dmag) + (n - pos.sum())) / n),
    }


# ------------------------------------------------------------------ detection


def _xy(a: Any, key: str) -> np.ndarray:
    arr = np.asarray(a, dtype=np.float64)
    if arr.size == 0:
        return np.zeros((0, 2))
    if arr.ndim != 2 or arr.shape[1] != 2 or not np.all(np.isfinite(arr)):
        raise ConfigError("must be finite positions of shape (n, 2) = (x, y).", key=key,
                          received={"shape": arr.shape})
    return arr


def match_positions(true_xy: Any, pred_xy: Any, max_distance: float) -> dict[str, np.ndarray]:
    """One-to-one matching of positions within ``max_distance`` minimising the total distance.

    Returns ``true_index``, ``pred_index`` and ``distance`` of the matched pairs (sorted by
    ``true_index``), plus ``pred_of_true`` (n_true, -1 if unmatched) and ``true_of_pred``.
    """
    from scipy.optimize import linear_sum_assignment

    t, p = _xy(true_xy, "true_xy"), _xy(pred_xy, "pred_xy")
    md = float(max_distance)
    if not md > 0:
        raise ConfigError("must be > 0.", key="max_distance",
                          received={"max_distance": max_distance})
    pred_of_true = np.full(len(t), -1, dtype=np.int64)
    true_of_pred = np.full(len(p), -1, dtype=np.int64)
    empty = np.zeros(0, dtype=np.int64)
    if len(t) == 0 or len(p) == 0:
        return {"true_index": empty, "pred_index": empty, "distance": np.zeros(0),
                "pred_of_true": pred_of_true, "true_of_pred": true_of_pred}
    d = np.hypot(t[:, None, 0] - p[None, :, 0], t[:, None, 1] - p[None, :, 1])
    big = md * 1e6 + d.max() * len(t) + 1.0
    cost = np.where(d <= md, d, big)
    ti, pi = linear_sum_assignment(cost)
    ok = d[ti, pi] <= md
    ti, pi = ti[ok], pi[ok]
    pred_of_true[ti] = pi
    true_of_pred[pi] = ti
    return {"true_index": ti.astype(np.int64), "pred_index": pi.astype(np.int64),
            "distance": d[ti, pi], "pred_of_true": pred_of_true, "true_of_pred": true_of_pred}


def detection_completeness(true_xy: Any, pred_xy: Any, max_distance: float,
                           values: Any = None, bins: Any = None) -> dict[str, Any]:
    """Completeness and purity of detections matched by position.

    Parameters
    ----------
    true_xy, pred_xy : array_like, shape (n, 2)
        True and detected positions (x, y) in pixels.
    max_distance : float
        Matching radius in pixels.
    values, bins : array_like, optional
        A quantity per true object (e.g. true magnitude) and bin edges: adds
        ``completeness_binned`` (NaN for empty bins) and ``n_true_binned``.

    Returns
    -------
    dict
        ``n_true``, ``n_pred``, ``n_matched``, ``completeness`` (matched / true, NaN if no
        truth), ``purity`` (matched / detected, NaN if no detection), and the
        :func:`match_positions` arrays under ``"match"``.
    """
    m = match_positions(true_xy, pred_xy, max_distance)
    n_true, n_pred = len(m["pred_of_true"]), len(m["true_of_pred"])
    n_matched = int(len(m["true_index"]))
    out: dict[str, Any] = {
        "n_true": n_true, "n_pred": n_pred, "n_matched": n_matched,
        "completeness": n_matched / n_true if n_true else float("nan"),
        "purity": n_matched / n_pred if n_pred else float("nan"),
        "match": m,
    }
    if values is not None:
        v = np.asarray(values, dtype=np.float64).ravel()
        if v.size != n_true or bins is None:
            raise ConfigError("values needs one entry per true object and bins.", key="values",
                              received={"n_values": v.size, "n_true": n_true})
        edges = np.asarray(bins, dtype=np.float64)
        idx = np.digitize(v, edges) - 1
        inside = (idx >= 0) & (idx < len(edges) - 1)
        nb = len(edges) - 1
        tot = np.bincount(idx[inside], minlength=nb)
        hit = np.bincount(idx[inside], weights=(m["pred_of_true"] >= 0)[inside].astype(float),
                          minlength=nb)
        with np.errstate(invalid="ignore", divide="ignore"):
            out["completeness_binned"] = np.where(tot > 0, hit / np.maximum(tot, 1), np.nan)
        out["n_true_binned"] = tot
        out["bin_edges"] = edges
    return out


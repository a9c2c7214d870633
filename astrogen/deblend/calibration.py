"""Temperature scaling of the probabilistic U-Net's predictive probabilities.

A network trained with a cross-entropy becomes over-confident as training goes on (its
reliability curve falls below the diagonal); temperature scaling (Guo et al. 2017,
arXiv:1706.04599) divides the logits by one number ``T`` fitted on held-out data by
minimising the negative log-likelihood of the true labels. It changes no argmax (the
segmentation and the catalog are untouched), only the confidence and the uncertainty maps.

For the probabilistic U-Net each prior sample ``s`` gives ``p_s = softmax(l_s)``; at
temperature ``T`` it gives ``softmax(l_s / T)``, which equals ``p_s^(1/T)`` renormalised, so
``T`` is fitted from samples drawn at ``T = 1`` without running the network again; the
predictive is the mean over samples, as in the stage.
"""
from __future__ import annotations

import numpy as np

from astrogen.errors import ConfigError

__all__ = ["tempered", "tempered_exact", "fit_temperature", "TEMPERATURE_GRID", "fit_isotonic_map",
           "apply_confidence_map"]

#: Temperatures tried by :func:`fit_temperature` (log-spaced, 0.02 to 8, steps of 10 %).
#: ``T < 1`` sharpens: the probabilistic U-Net is trained on light fractions softened at 1
#: sigma, which are under-confident as label probabilities.
TEMPERATURE_GRID = np.geomspace(0.02, 8.0, 64)


def tempered(samples: np.ndarray, temperature: float) -> np.ndarray:
    """Probability samples ``(..., n_classes)`` at temperature ``T``: ``p^(1/T)`` renormalised
    over the last axis (``softmax(logits / T)`` for ``p = softmax(logits)``)."""
    t = float(temperature)
    if not t > 0:
        raise ConfigError("must be > 0.", key="temperature", received={"temperature": t})
    logp = np.log(np.clip(np.asarray(samples, np.float64), 1e-30, None)) / t
    logp -= logp.max(axis=-1, keepdims=True)
    p = np.exp(logp)
    return p / p.sum(axis=-1, keepdims=True)


def tempered_exact(samples: np.ndarray, temperature: float) -> np.ndarray:
    """Like :func:`tempered` but classes of probability exactly 0 stay at 0 (``p^(1/T)``
    renormalised without a floor): for light-fraction label probabilities, where a pixel no
    cut-out covers has fraction 0 for that object whatever the number of objects."""
    t = float(temperature)
    if not t > 0:
        raise ConfigError("must be > 0.", key="temperature", received={"temperature": t})
    p = np.clip(np.asarray(samples, np.float64), 0.0, None)
    m = p.max(axis=-1, keepdims=True)
    q = np.power(np.divide(p, m, out=np.zeros_like(p), where=m > 0), 1.0 / t)
    s = q.sum(axis=-1, keepdims=True)
    return np.divide(q, s, out=np.zeros_like(q), where=s > 0)


def fit_temperature(samples: np.ndarray, labels: np.ndarray, grid=TEMPERATURE_GRID) -> dict:
    """The temperature minimising the NLL of ``labels`` under the mean tempered predictive.

    Parameters
    ----------
    samples : numpy.ndarray, shape (n_samples, ..., n_classes)
        Probability maps at ``T = 1`` (e.g. ``ProbUNet.sample`` with ``temperature = 1``).
    labels : numpy.ndarray of int, shape (...)
        True class (slot) index of each pixel.
    grid : sequence of float
        Temperatures tried.

    Returns
    -------
    dict
        ``temperature`` (the best of ``grid``), ``nll`` (per grid value, nats per pixel),
        ``nll_at_1`` and ``nll_best``.
    """
    s = np.asarray(samples)
    y = np.asarray(labels)
    if s.ndim < 2 or s.shape[1:-1] != y.shape:
        raise ConfigError("samples must have shape (n_samples,) + labels.shape + "
                          "(n_classes,).", key="samples",
                          received={"samples": s.shape, "labels": y.shape})
    if y.size == 0 or y.min() < 0 or y.max() >= s.shape[-1]:
        raise ConfigError("labels must be class indices < n_classes.", key="labels",
                          received={"min": int(y.min()) if y.size else None,
                                    "max": int(y.max()) if y.size else None,
                                    "n_classes": s.shape[-1]})
    def nll_at(t: float) -> float:
        mean = tempered(s, t).mean(axis=0)
        p_true = np.take_along_axis(mean, y[..., None], axis=-1)[..., 0]
        return float(-np.mean(np.log(np.clip(p_true, 1e-12, None))))

    grid = np.asarray(grid, np.float64)
    nll = np.array([nll_at(t) for t in grid])
    best = int(np.argmin(nll))
    return {"temperature": float(grid[best]), "nll": nll.tolist(), "grid": grid.tolist(),
            "nll_at_1": nll_at(1.0), "nll_best": float(nll[best])}


def fit_isotonic_map(confidence, correct, n_bins: int = 100) -> dict:
    """Monotone map from a confidence to the observed accuracy (isotonic regression,
    Zadrozny & Elkan 2002), for what temperature scaling cannot fix: e.g. pixels whose
    confidence is exactly 1 (one object covers them) but whose assigned object is sometimes
    wrong.

    The samples are grouped into at most ``n_bins`` bins of equal count (equal confidences
    kept together), the bins' accuracies made non-decreasing by pool-adjacent-violators
    (weighted by count); the map interpolates linearly between the bins' mean confidences
    (:func:`apply_confidence_map`), so it never reorders pixels.

    Parameters
    ----------
    confidence : array_like of float in [0, 1]
    correct : array_like of bool, same shape
    n_bins : int

    Returns
    -------
    dict
        ``confidence`` (knots, increasing) and ``accuracy`` (non-decreasing values), lists.
    """
    c = np.asarray(confidence, np.float64).ravel()
    y = np.asarray(correct, bool).ravel()
    if c.shape != y.shape or c.size == 0:
        raise ConfigError("confidence and correct must be non-empty and of equal size.",
                          key="confidence", received={"confidence": c.size, "correct": y.size})
    order = np.argsort(c, kind="stable")
    c, y = c[order], y[order].astype(np.float64)
    uniq, first = np.unique(c, return_index=True)
    edges = np.unique(np.searchsorted(uniq, np.quantile(c, np.linspace(0, 1, n_bins + 1)[1:-1])))
    starts = np.r_[0, first[edges[edges > 0]]] if len(edges) else np.array([0])
    starts = np.unique(starts)
    ends = np.r_[starts[1:], len(c)]
    w = (ends - starts).astype(np.float64)
    xs = np.array([c[a:b].mean() for a, b in zip(starts, ends)])
    ys = np.array([y[a:b].mean() for a, b in zip(starts, ends)])
    # pool adjacent violators
    vals, wts, xsum, cnt = [], [], [], []
    for xi, yi, wi in zip(xs, ys, w):
        vals.append(yi)
        wts.append(wi)
        xsum.append(xi * wi)
        cnt.append(1)
        while len(vals) > 1 and vals[-2] > vals[-1]:
            v2, w2, x2 = vals.pop(), wts.pop(), xsum.pop()
            cnt.pop()
            vals[-1] = (vals[-1] * wts[-1] + v2 * w2) / (wts[-1] + w2)
            wts[-1] += w2
            xsum[-1] += x2
    knots = [xsum[i] / wts[i] for i in range(len(vals))]
    return {"confidence": [float(v) for v in knots], "accuracy": [float(v) for v in vals]}


def apply_confidence_map(confidence, cmap: dict | None):
    """``confidence`` through a :func:`fit_isotonic_map` map (identity when ``cmap`` is None;
    NaN stays NaN; constant beyond the end knots)."""
    c = np.asarray(confidence, np.float64)
    if not cmap:
        return c
    out = np.interp(c, np.asarray(cmap["confidence"], float), np.asarray(cmap["accuracy"], float))
    return np.where(np.isnan(c), np.nan, out)

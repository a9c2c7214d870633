"""PNG figures of deblending results (matplotlib, Agg backend, atomic writes)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from astrogen.io.atomic import atomic_path
from astrogen.io.preview import asinh_stretch

__all__ = ["plot_scenes", "plot_metrics"]


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _labels_rgb(labels: np.ndarray) -> np.ndarray:
    colours = np.array([[1, 1, 1], [0.85, 0.25, 0.2], [0.2, 0.45, 0.85], [0.2, 0.7, 0.3],
                        [0.8, 0.6, 0.1], [0.5, 0.3, 0.7]])
    lab = np.asarray(labels)
    return colours[np.where(lab > 0, (lab - 1) % (len(colours) - 1) + 1, 0)]


def plot_scenes(path, images: np.ndarray, truth: np.ndarray | None,
                predictions: dict[str, np.ndarray],
                uncertainty: dict[str, np.ndarray] | None = None, titles: list[str] | None = None,
                uncertainty_max: float = float(np.log(3))) -> Path:
    """One row per scene: observed image, true ownership map, each method's label map and
    each uncertainty map (colour scale 0 to ``uncertainty_max``: ``log 3`` for the pair
    models' 3-class entropy, 1 for a probability of being wrong; NaN is left white)."""
    plt = _plt()
    uncertainty = uncertainty or {}
    cols = ["scene"] + (["truth"] if truth is not None else []) + list(predictions) + [
        f"{k} uncertainty" for k in uncertainty]
    n = len(images)
    fig, axes = plt.subplots(n, len(cols), figsize=(1.7 * len(cols), 1.7 * n + 0.3),
                             squeeze=False)
    for i in range(n):
        panels = [("img", images[i])]
        if truth is not None:
            panels.append(("lab", truth[i]))
        panels += [("lab", v[i]) for v in predictions.values()]
        panels += [("unc", v[i]) for v in uncertainty.values()]
        for j, (kind, a) in enumerate(panels):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            if kind == "img":
                ax.imshow(asinh_stretch(a), origin="lower", cmap="gray_r")
            elif kind == "lab":
                ax.imshow(_labels_rgb(a), origin="lower", interpolation="nearest")
            else:
                im = ax.imshow(a, origin="lower", cmap="magma", vmin=0, vmax=uncertainty_max)
                if i == n - 1:
                    fig.colorbar(im, ax=ax, orientation="horizontal", fraction=0.05, pad=0.04)
            if i == 0:
                ax.set_title(cols[j], fontsize=7)
        if titles:
            axes[i, 0].set_ylabel(titles[i], fontsize=6)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return Path(path)


def plot_metrics(path, summaries: dict[str, dict]) -> Path:
    """IoU vs blendedness per method, flux-error summary, and the reliability curve of the
    methods that have a calibration."""
    plt = _plt()
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    ax = axes[0]
    for name, s in summaries.items():
        bins = s["by_blendedness"]
        x = [np.sqrt(max(b["blendedness"][0], 1e-3) * b["blendedness"][1]) for b in bins]
        ax.plot(x, [b["iou_median"] for b in bins], "o-", label=name)
    ax.set_xscale("log")
    ax.set_xlabel("blendedness (Bosch+18)")
    ax.set_ylabel("median IoU per object")
    ax.axhline(0.9, color="0.6", lw=0.8, ls="--")
    ax.legend(fontsize=7)
    ax = axes[1]
    names = list(summaries)
    mape = [summaries[k]["flux"]["mape"] for k in names]
    comp = [100 * summaries[k]["completeness"] for k in names]
    xx = np.arange(len(names))
    ax.bar(xx - 0.2, mape, 0.4, label="flux MAPE (%)")
    ax.bar(xx + 0.2, comp, 0.4, label="completeness (%)")
    ax.set_xticks(xx, names, fontsize=7)
    ax.set_yscale("log")
    ax.legend(fontsize=7)
    ax = axes[2]
    ax.plot([0, 1], [0, 1], color="0.6", lw=0.8, ls="--")
    for name, s in summaries.items():
        for key, style in (("calibration_region", "o-"), ("calibration_all_pixels", "s:")):
            if key in s:
                rc = s[key]["reliability"]
                ax.plot(rc["confidence"], rc["accuracy"], style,
                        label=f"{name} ({key.split('_', 1)[1]}, ECE {s[key]['ece']:.3f})")
    ax.set_xlabel("confidence of the top label")
    ax.set_ylabel("fraction right")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=6)
    else:
        ax.text(0.5, 0.5, "no probabilistic method", ha="center", fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return Path(path)

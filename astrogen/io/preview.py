"""PNG previews: a mosaic of stamps and a scene thumbnail (matplotlib, Agg backend)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from astrogen.io.atomic import atomic_path

__all__ = ["asinh_stretch", "save_mosaic", "save_image"]


def asinh_stretch(img: np.ndarray, soft: float | None = None) -> np.ndarray:
    """Map an image to [0, 1] with an asinh stretch (Lupton et al. 2004)."""
    img = np.asarray(img, dtype=float)
    finite = img[np.isfinite(img)]
    if finite.size == 0:
        return np.zeros_like(img)
    noise = 1.4826 * np.median(np.abs(finite - np.median(finite)))
    soft = soft or max(noise, 1e-3 * (np.percentile(finite, 99.5) - np.median(finite)), 1e-30)
    y = np.arcsinh((img - np.median(finite)) / soft)
    lo, hi = np.percentile(y[np.isfinite(y)], [1, 99.8])
    return np.clip((y - lo) / max(hi - lo, 1e-30), 0, 1)


def save_mosaic(path, stamps: np.ndarray, labels: list[str] | None = None,
                title: str = "", ncols: int | None = None) -> Path:
    """Save a grid of stamps (each stretched on its own) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(stamps)
    ncols = ncols or int(np.ceil(np.sqrt(max(n, 1))))
    nrows = max(int(np.ceil(n / ncols)), 1)
    fig, axes = plt.subplots(nrows, ncols, figsize=(1.6 * ncols, 1.6 * nrows + 0.4),
                             squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if k < n:
            ax.imshow(asinh_stretch(stamps[k]), origin="lower", cmap="gray_r")
            if labels:
                ax.set_title(labels[k], fontsize=6)
    if title:
        import textwrap

        fig.suptitle("\n".join(textwrap.wrap(title, 12 * ncols)), fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return Path(path)


def _save_full_resolution(path, rgb_or_gray, title: str, cmap=None) -> Path:
    """Write an image with one PNG pixel per image pixel (nearest), with a title strip."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    h, w = rgb_or_gray.shape[:2]
    strip = 24 if title else 0
    fig = plt.figure(figsize=(w / 100, (h + strip) / 100), dpi=100)
    ax = fig.add_axes([0, 0, 1, h / (h + strip)])
    ax.imshow(rgb_or_gray, origin="lower", cmap=cmap, interpolation="nearest", aspect="auto")
    ax.set_axis_off()
    if title:
        fig.text(0.5, 1 - 0.5 * strip / (h + strip), title, ha="center", va="center",
                 fontsize=9 if w >= 500 else 6)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return Path(path)


def save_image(path, image: np.ndarray, title: str = "", max_pixels: int = 2048) -> Path:
    """Save one image as a PNG at full resolution (one PNG pixel per image pixel; images
    larger than ``max_pixels`` are block-averaged), asinh stretch, title on top."""
    img = np.asarray(image, dtype=float)
    f = int(np.ceil(max(img.shape) / max_pixels))
    if f > 1:
        ny, nx = (img.shape[0] // f) * f, (img.shape[1] // f) * f
        img = img[:ny, :nx].reshape(ny // f, f, nx // f, f).mean(axis=(1, 3))
    return _save_full_resolution(path, asinh_stretch(img), title, cmap="gray_r")


def save_color(path, images: list[np.ndarray], title: str = "", max_pixels: int = 2048,
               q: float = 8.0) -> Path:
    """Save a colour composite of three images (red, green, blue) as a PNG at full resolution.

    Asinh stretch of Lupton et al. (2004) via :func:`astropy.visualization.make_lupton_rgb`,
    with the same stretch for the three bands (so colours are true flux ratios when the
    images are in the same flux unit): linear up to 3 x the background noise (robust sigma)
    of the summed image, or up to its 99.9th percentile / sinh(Q) when noiseless; black at 0
    (sky-subtracted images). Images larger than ``max_pixels`` are
    block-averaged; images of different sizes (bands with other pixel scales) are not
    accepted.
    """
    from astropy.visualization import make_lupton_rgb

    imgs = [np.asarray(im, dtype=float) for im in images]
    if len(imgs) != 3 or len({im.shape for im in imgs}) != 1:
        raise ValueError("save_color needs three images of the same shape")
    f = int(np.ceil(max(imgs[0].shape) / max_pixels))
    if f > 1:
        ny, nx = (imgs[0].shape[0] // f) * f, (imgs[0].shape[1] // f) * f
        imgs = [im[:ny, :nx].reshape(ny // f, f, nx // f, f).mean(axis=(1, 3)) for im in imgs]
    total = sum(imgs)
    noise = 1.4826 * np.median(np.abs(total - np.median(total)))
    top = np.percentile(total, 99.9)
    stretch = max(top / np.sinh(q) if noise <= 0 else 3 * noise, 1e-30)
    with np.errstate(invalid="ignore", divide="ignore"):
        rgb = make_lupton_rgb(*imgs, minimum=0.0, stretch=stretch, Q=q)
    return _save_full_resolution(path, rgb, title)

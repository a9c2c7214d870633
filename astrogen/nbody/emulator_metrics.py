"""Fidelity statistics of emulated density slabs and halo maps (used by ``nbody.compare`` and
``benchmarks/nbody_emulator_benchmark.py``).

Slabs are projected ``x = 1 + delta`` images ``(n_images, n, n)`` of a periodic square of side
``box_size`` (Mpc/h). Statistics (Perraudin et al. 2019, arXiv:1908.05519, section 4):

* power spectrum of ``delta`` (2-D, :func:`astrogen.nbody.power_spectrum.measure_power`), its
  ratio emulated / true, and the cross-correlation coefficient
  ``r(k) = P_et / sqrt(P_ee P_tt)`` of paired images (conditional mode);
* pixel histogram, in the transformed variable ``s = 2x/(x+1) - 1`` (bins uniform in s);
* peak counts: histogram of the heights (in s) of the local maxima (8 periodic neighbours);
* Frechet distance of each statistic: every image gives a vector (log10 P(k) per bin, or a
  histogram); the two sets of vectors are summarised by their means and covariances and
  ``FD = |mu1 - mu2|^2 + Tr(C1 + C2 - 2 (C1 C2)^(1/2))``.
"""
from __future__ import annotations

import numpy as np

__all__ = ["power_matrix", "cross_correlation", "pixel_histograms", "peak_histograms",
           "frechet_distance", "compare_slabs", "halo_scores", "s_transform", "plot_comparison",
           "S_EDGES"]

#: Bin edges of the pixel and peak histograms, in s = 2x/(x+1) - 1.
S_EDGES = np.linspace(-1.0, 1.0, 41)


def s_transform(x):
    """The pixel transform ``s = 2 x / (x + 1) - 1`` (negative values clipped to 0).

    Parameters
    ----------
    x : array_like
        Non-negative values (e.g. ``1 + delta``, dimensionless).

    Returns
    -------
    numpy.ndarray
        Values in ``[-1, 1)``, same shape as ``x``.
    """
    x = np.maximum(np.asarray(x, float), 0.0)
    return 2.0 * x / (x + 1.0) - 1.0


def _k_edges(n: int, box_size: float) -> np.ndarray:
    kf = 2 * np.pi / box_size
    return np.arange(0.5 * kf, np.pi * n / box_size + kf, kf)


def power_matrix(x: np.ndarray, box_size: float, contrast: bool = False):
    """Per-image 2-D power spectra ``(k, P[n_images, n_k])`` of ``delta = x / mean(x) - 1``
    (densities ``x``), or of ``x - mean(x)`` if ``contrast`` (``x`` is already a density
    contrast, e.g. a linear field, whose image means may be near 0)."""
    from astrogen.nbody.power_spectrum import measure_power

    x = np.asarray(x, float)
    edges = _k_edges(x.shape[1], box_size)
    ps = [measure_power(im - im.mean() if contrast else im / im.mean() - 1.0, box_size,
                        k_edges=edges) for im in x]
    return ps[0].k, np.array([p.power for p in ps])


def cross_correlation(x_true: np.ndarray, x_emu: np.ndarray, box_size: float):
    """``k``, ``r(k)`` (from the summed auto and cross spectra of the pairs), and the mode
    counts."""
    from astrogen.nbody.power_spectrum import bin_modes, mode_grid

    a = np.asarray(x_true, float)
    b = np.asarray(x_emu, float)
    n = a.shape[1]
    kf = 2 * np.pi / box_size
    kk, wgt = mode_grid(n, 2, kf)
    edges = _k_edges(n, box_size)
    fa = np.fft.rfftn(a / a.mean(axis=(1, 2), keepdims=True) - 1.0, axes=(1, 2))
    fb = np.fft.rfftn(b / b.mean(axis=(1, 2), keepdims=True) - 1.0, axes=(1, 2))
    paa = (np.abs(fa) ** 2).sum(0)
    pbb = (np.abs(fb) ** 2).sum(0)
    pab = (fa * np.conj(fb)).real.sum(0)
    nm, ks, saa = bin_modes(kk, wgt, paa, edges)
    _, _, sbb = bin_modes(kk, wgt, pbb, edges)
    _, _, sab = bin_modes(kk, wgt, pab, edges)
    keep = nm > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        r = sab[keep] / np.sqrt(saa[keep] * sbb[keep])
    return ks[keep] / nm[keep], r, nm[keep].astype(int)


def pixel_histograms(x: np.ndarray) -> np.ndarray:
    """Per-image normalised histogram of ``s(x)`` on :data:`S_EDGES`."""
    s = s_transform(x)
    return np.array([np.histogram(im, bins=S_EDGES)[0] / im.size for im in s])


def peak_histograms(x: np.ndarray) -> np.ndarray:
    """Per-image histogram (counts) of the s-heights of local maxima (periodic, 8
    neighbours, strict)."""
    s = s_transform(x)
    out = []
    for im in s:
        nb = [np.roll(im, (di, dj), axis=(0, 1)) for di in (-1, 0, 1) for dj in (-1, 0, 1)
              if di or dj]
        peak = np.all([im > v for v in nb], axis=0)
        out.append(np.histogram(im[peak], bins=S_EDGES)[0])
    return np.array(out, float)


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Frechet distance between Gaussians fitted to two sets of statistic vectors
    ``(n_samples, dim)``."""
    from scipy import linalg

    a = np.asarray(a, float)
    b = np.asarray(b, float)
    mu = a.mean(0) - b.mean(0)
    ca = np.atleast_2d(np.cov(a, rowvar=False))
    cb = np.atleast_2d(np.cov(b, rowvar=False))
    cs, _ = linalg.sqrtm(ca @ cb, disp=False)
    cs = np.real(cs)
    return float(mu @ mu + np.trace(ca + cb - 2.0 * cs))


def compare_slabs(x_true: np.ndarray, x_emu: np.ndarray, box_size: float,
                  paired: bool = True) -> dict:
    """Power-spectrum ratio, r(k) (if ``paired``), mean histograms and Frechet distances."""
    n = np.asarray(x_true).shape[1]
    k, pt = power_matrix(x_true, box_size)
    _, pe = power_matrix(x_emu, box_size)
    ratio = pe.mean(0) / pt.mean(0)
    k_half = 0.5 * np.pi * n / box_size
    low = k < k_half
    out = {"k": k.tolist(), "power_true": pt.mean(0).tolist(),
           "power_emulated": pe.mean(0).tolist(), "power_ratio": ratio.tolist(),
           "k_half_nyquist": k_half,
           "max_abs_ratio_minus_1_below_half_nyquist": float(np.max(np.abs(ratio[low] - 1))),
           "mean_ratio_below_half_nyquist": float(np.mean(ratio[low])),
           "pixel_hist_true": pixel_histograms(x_true).mean(0).tolist(),
           "pixel_hist_emulated": pixel_histograms(x_emu).mean(0).tolist(),
           "peaks_per_image_true": float(peak_histograms(x_true).sum(1).mean()),
           "peaks_per_image_emulated": float(peak_histograms(x_emu).sum(1).mean())}
    if paired:
        kr, r, _ = cross_correlation(x_true, x_emu, box_size)
        out["r_k"] = r.tolist()
        out["r_mean_below_half_nyquist"] = float(np.mean(r[kr < k_half]))
    if len(np.asarray(x_true)) > 2:
        out["frechet"] = {
            "power_spectrum": frechet_distance(np.log10(pt), np.log10(pe)),
            "pixel_histogram": frechet_distance(pixel_histograms(x_true),
                                                pixel_histograms(x_emu)),
            "peak_counts": frechet_distance(peak_histograms(x_true),
                                            peak_histograms(x_emu))}
    return out


def halo_scores(true_uv, true_mass, pred_uv, pred_mass, box_size: float,
                mass_threshold: float, match_radius: float) -> dict:
    """Completeness (true haloes above the threshold matched) and purity (predicted haloes
    above the threshold matched), one-to-one matching within ``match_radius`` (Mpc/h)."""
    from astrogen.nbody.halo_maps import match_catalogs

    tm, pm = match_catalogs(true_uv, pred_uv, box_size, match_radius)
    tmass = np.asarray(true_mass, float)
    pmass = np.asarray(pred_mass, float)
    big_t = tmass >= mass_threshold
    big_p = pmass >= mass_threshold
    return {"n_true_above": int(big_t.sum()), "n_pred_above": int(big_p.sum()),
            "n_true_matched_above": int(tm[big_t].sum()),
            "n_pred_matched_above": int(pm[big_p].sum()),
            "completeness": float(tm[big_t].mean()) if big_t.any() else None,
            "purity": float(pm[big_p].mean()) if big_p.any() else None}


def plot_comparison(path, d: dict, m: dict, stats: dict, mass_threshold: float) -> None:
    """The ``nbody.compare`` figure of one box (see :class:`NBodyCompare`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    from astrogen.io.atomic import atomic_path

    L = m["box_size"]
    fig, ax = plt.subplots(2, 3, figsize=(13, 8.2))
    ext = [0, L, 0, L]
    ims = [(d["linear"], "linear slab (delta, z = 0)", "RdBu_r", None),
           (s_transform(d["true"]), "PM (s(1 + delta)) + FoF haloes", "magma", (-1, 1)),
           (s_transform(d["emulated"]), "GAN emulator + halo map", "magma", (-1, 1))]
    for a, (im, title, cmap, lim) in zip(ax[0], ims):
        kw = {} if lim is None else {"vmin": lim[0], "vmax": lim[1]}
        a.imshow(np.asarray(im).T, origin="lower", extent=ext, cmap=cmap, **kw)
        a.set_title(title, fontsize=10)
        a.set_xlabel("Mpc/h")
    for a, uv, mass, col in ((ax[0, 1], d["fof_uv"], d["fof_mass"], "cyan"),
                             (ax[0, 2], d["pred_uv"], d["pred_mass"], "lime")):
        uv = np.asarray(uv).reshape(-1, 2)
        big = np.asarray(mass) >= mass_threshold
        a.scatter(uv[big, 0], uv[big, 1], s=40, facecolors="none", edgecolors=col, lw=1.2)
        a.scatter(uv[~big, 0], uv[~big, 1], s=10, facecolors="none", edgecolors=col, lw=0.6)
    k = np.asarray(stats["k"])
    ax[1, 0].loglog(k, stats["power_true"], "k-", label="PM")
    ax[1, 0].loglog(k, stats["power_emulated"], "C1--", label="emulator")
    ax[1, 0].set_xlabel("k [h/Mpc]")
    ax[1, 0].set_ylabel("P(k) [(Mpc/h)^2]")
    ax[1, 0].legend()
    ax[1, 1].semilogx(k, stats["power_ratio"], "C1-", label="P_emu / P_PM")
    if "r_k" in stats:
        ax[1, 1].semilogx(k, stats["r_k"], "C2-", label="r(k)")
    ax[1, 1].axhline(1, color="k", lw=0.6)
    ax[1, 1].axhspan(0.95, 1.05, color="0.85")
    ax[1, 1].axvline(stats["k_half_nyquist"], color="0.5", ls=":")
    ax[1, 1].set_ylim(0, 1.6)
    ax[1, 1].set_xlabel("k [h/Mpc]")
    ax[1, 1].legend()
    c = 0.5 * (S_EDGES[1:] + S_EDGES[:-1])
    ax[1, 2].semilogy(c, stats["pixel_hist_true"], "k-", label="PM")
    ax[1, 2].semilogy(c, stats["pixel_hist_emulated"], "C1--", label="emulator")
    ax[1, 2].set_xlabel("s = 2x/(x+1) - 1,  x = 1 + delta")
    ax[1, 2].set_ylabel("pixel fraction")
    ax[1, 2].legend()
    fig.suptitle(f"box {m['box_id']}, slab {m['slab']} along axis {m['axis']}")
    for a in fig.axes:
        a.xaxis.set_minor_formatter(NullFormatter())
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)

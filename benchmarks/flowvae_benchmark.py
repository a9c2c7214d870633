"""FlowVAE benchmark: conditional accuracy, realism against real COSMOS galaxies, speed.

    python benchmarks/flowvae_benchmark.py                 # shipped model, full sizes
    python benchmarks/flowvae_benchmark.py --quick         # small sizes (smoke test)
    python benchmarks/flowvae_benchmark.py --model path/to/model.keras --out some/folder

Writes ``results.json`` and ``realism.png`` / ``conditional.png`` into ``--out``
(default ``benchmarks/results/flowvae``). What is measured (issue 3):

1. Conditional accuracy on ``--n`` (1000) galaxies whose (mag, hlr, z) are drawn from the
   package's COSMOS sampler inside the model's training range (``CosmosSampler(mag_range=...)``,
   conditional truncation): magnitude of the generated stamp's total flux vs the requested one
   (median bias, 1.4826 x MAD scatter), and the half-light radius measured on the stamp
   (circular aperture about the flux centroid holding half of the stamp's flux, at the stamp's
   own ``batch.pixel_scales[i]``) over the requested ``hlr`` (median ratio, relative
   1.4826 x MAD scatter). What is measured is what ``flowvae.generate`` outputs: 96 x 96 stamps,
   edge-tapered, large galaxies drawn in units of their size (per-stamp pixel scale), catalog
   ``q`` and ``beta`` applied. The same measurement on GalSim Sersic renderings of the same rows (the kind of
   profile the model was trained on) is reported beside, on the 64 x 64, 0.03" stamps of
   ``galsim.parametric`` and on the FlowVAE stamps' own grids (96 x 96 at each stamp's pixel
   scale, ``galsim_sersic_flowvae_grid``), because a circular-aperture radius of
   an elliptical, stamp-truncated profile is not exactly its ``hlr``.
2. Realism against the 100 real HST/COSMOS I<26 galaxies shipped in the package. For each real
   galaxy, ``--realizations`` generated galaxies with its (mag, PSF-free hlr, z) are convolved
   with that galaxy's own PSF image and given its own correlated noise
   (``galsim.RealGalaxyCatalog.getNoise``), exactly like the real stamp (generated stamps are
   first drawn onto the real stamps' 64 x 64, 0.03" grid as the quintic InterpolatedImage
   ``observe`` uses). Baselines treated the
   same way: ``galsim.parametric`` Sersic profiles with the same (mag, hlr) and Sersic index,
   axis ratio and angle from the COSMOS sampler (what ``flowvae.generate`` replaces in a
   pipeline). (The shipped I<26 sample has no Sersic fits of its own, so GalSim's
   per-galaxy parametric fits cannot serve as a second baseline.) statmorph (Rodriguez-Gomez et al. 2019)
   measures ellipticity, r50, concentration, asymmetry, smoothness, Gini and M20 on every stamp
   (segmentation: the central object detected by sep at 1.5 sigma); the distance between the
   real and each simulated distribution is the two-sample Kolmogorov-Smirnov statistic.
3. Speed in the same run: stamps per second of the ``flowvae.generate`` stage and of the
   ``galsim.parametric`` stage drawing Sersic stamps (64 x 64 at 0.03"/pixel; the FlowVAE
   stage's own stamps are 96 x 96 and include its size/shape post-processing) for the same rows (the peer the issue names), and of GalSim drawing real HST galaxies
   (``galsim.RealGalaxy``, the classical way to get realistic morphologies) on the same grid.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

STATS = ("ellipticity_asymmetry", "r50", "concentration", "asymmetry", "smoothness", "gini",
         "m20")


# ---------------------------------------------------------------------- measurements
def half_light_radius(img: np.ndarray, pixel_scale: float) -> float:
    """Radius (arcsec) of the circular aperture about the flux centroid holding half the
    stamp's flux (pixels as points; linear interpolation of the growth curve)."""
    img = np.asarray(img, np.float64)
    total = img.sum()
    if not total > 0:
        return np.nan
    y, x = np.indices(img.shape)
    cy, cx = (img * y).sum() / total, (img * x).sum() / total
    r = np.hypot(y - cy, x - cx).ravel()
    order = np.argsort(r)
    growth = np.cumsum(img.ravel()[order])
    k = int(np.searchsorted(growth, 0.5 * total))
    if k == 0:
        return float(r[order][0] * pixel_scale)
    r0, r1 = r[order][k - 1], r[order][k]
    g0, g1 = growth[k - 1], growth[k]
    frac = (0.5 * total - g0) / (g1 - g0) if g1 > g0 else 0.0
    return float((r0 + frac * (r1 - r0)) * pixel_scale)


def robust(values: np.ndarray) -> tuple[float, float]:
    v = np.asarray(values, np.float64)
    v = v[np.isfinite(v)]
    med = float(np.median(v))
    return med, float(1.4826 * np.median(np.abs(v - med)))


def morphology(images: np.ndarray, noise_sigma: np.ndarray) -> dict[str, np.ndarray]:
    """statmorph statistics of the central object of each stamp (NaN where it fails)."""
    import logging
    import warnings

    import sep
    import statmorph

    warnings.simplefilter("ignore")  # statmorph's per-stamp fit warnings
    logging.getLogger("astropy").setLevel(logging.ERROR)
    out = {k: np.full(len(images), np.nan) for k in STATS}
    for i, img in enumerate(images):
        data = np.ascontiguousarray(img, dtype=np.float64)
        sigma = float(noise_sigma[i])
        try:
            _, seg = sep.extract(data, 1.5, err=sigma, minarea=5, segmentation_map=True)
        except Exception:  # noqa: BLE001 - sep failure = no measurement for this stamp
            continue
        n = data.shape[0]
        label = seg[n // 2, n // 2]
        if label == 0:  # nothing at the centre: take the object nearest to it
            ys, xs = np.nonzero(seg)
            if len(ys) == 0:
                continue
            j = np.argmin(np.hypot(ys - n // 2, xs - n // 2))
            label = seg[ys[j], xs[j]]
        segmap = (seg == label).astype(np.int32)
        try:
            m = statmorph.source_morphology(data, segmap, weightmap=np.full_like(data, sigma))[0]
        except Exception:  # noqa: BLE001
            continue
        if m.flag > 1:
            continue
        for k in STATS:
            out[k][i] = float(getattr(m, k))
    return out


def ks_distance(a: np.ndarray, b: np.ndarray) -> dict:
    from scipy.stats import ks_2samp

    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    res = ks_2samp(a, b)
    return {"ks": float(res.statistic), "p": float(res.pvalue), "n_real": int(len(a)),
            "n_sim": int(len(b))}


# ---------------------------------------------------------------------- helpers
def _ctx(name, seed, tmp):
    from astrogen.stages.base import StageContext

    return StageContext(name=name, seed=seed, output_dir=tmp, work_dir=tmp)


def _on_grid(batch, n_pix: int, scale: float) -> np.ndarray:
    """A batch's PSF-free stamps on an ``n_pix`` x ``n_pix`` grid at ``scale`` arcsec/pixel.

    Stamps already on that grid are returned as they are; any other stamp (``flowvae.generate``
    now gives 96 x 96 stamps with per-stamp pixel scales, ``batch.pixel_scales``) is drawn as
    the quintic InterpolatedImage of the stamp at its own scale, the object ``observe`` draws
    (``method="no_pixel"``: the stamp is already pixel-integrated), so light beyond the grid is
    cut exactly as it is for the real stamps and the Sersic baseline.
    """
    from astrogen.physics.observe import intrinsic_profile

    scales = batch.pixel_scales
    out = np.empty((len(batch), n_pix, n_pix), np.float32)
    for i in range(len(batch)):
        img = np.asarray(batch.images[i], np.float64)
        if img.shape == (n_pix, n_pix) and abs(float(scales[i]) - scale) < 1e-12:
            out[i] = img
            continue
        ii = intrinsic_profile(img, float(scales[i]), float(img.sum()))  # what observe draws
        if ii is None:
            out[i] = 0.0
            continue
        out[i] = ii.drawImage(nx=n_pix, ny=n_pix, scale=scale, method="no_pixel").array
    return out


def _observe_like_real(stamps, psf, cat, indices, seed):
    """Convolve PSF-free stamps with the real galaxies' PSFs and add their noise."""
    import galsim

    from astrogen.models.psf_likelihood import convolve
    from astrogen.seeds import derive_seed, galsim_seed, row_seeds

    conv = np.asarray(convolve(stamps.astype(np.float32), psf[indices].astype(np.float32)))
    seeds = row_seeds(derive_seed(seed, "noise"), np.arange(len(stamps)))
    out = np.empty_like(conv)
    for i, k in enumerate(indices):
        im = galsim.ImageD(conv[i].astype(np.float64), scale=0.03)
        im.addNoise(cat.getNoise(int(k)).copy(rng=galsim.BaseDeviate(galsim_seed(seeds[i]))))
        out[i] = im.array
    return out


def _time_real_galaxy(n_pix: int, scale: float, n: int) -> tuple[float, int]:
    """Seconds for GalSim to draw ``n`` realistic galaxies the classical way: a real HST
    galaxy (``galsim.RealGalaxy``, deconvolved by its PSF) reconvolved by a 0.05" Gaussian
    (it cannot be drawn unconvolved) on the same ``n_pix`` grid."""
    import galsim

    from astrogen.data import cosmos_dir
    from astrogen.datasets.galaxy_stamps import REAL_CATALOG

    rgc = galsim.RealGalaxyCatalog(REAL_CATALOG, dir=str(cosmos_dir()))
    psf = galsim.Gaussian(fwhm=0.05)
    t0 = time.perf_counter()
    for i in range(n):
        gal = galsim.RealGalaxy(rgc, index=i % rgc.nobjects, noise_pad_size=0)
        galsim.Convolve(gal, psf).drawImage(nx=n_pix, ny=n_pix, scale=scale, method="no_pixel")
    return time.perf_counter() - t0, n


def _png_grid(path, rows: dict[str, np.ndarray], n_cols: int, title: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(rows), n_cols, figsize=(1.3 * n_cols, 1.4 * len(rows)))
    for r, (label, imgs) in enumerate(rows.items()):
        for c in range(n_cols):
            ax = axes[r, c]
            img = imgs[c]
            lo, hi = np.percentile(rows[next(iter(rows))][c], [1, 99.7])
            ax.imshow(np.arcsinh((img - lo) / max(hi - lo, 1e-12) * 10), origin="lower",
                      cmap="gray", vmin=0, vmax=np.arcsinh(10))
            ax.set_xticks([]), ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(label, fontsize=7)
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def realism_scores(generators: dict, real: dict, indices, reps: int, seed: int,
                   reference: str = "galsim_sersic"):
    """KS distances of statmorph statistics between real stamps ``indices`` and simulations.

    Parameters
    ----------
    generators : dict
        Label -> set-up stage with ``process(table) -> StampBatch`` (PSF-free stamps).
    real : dict
        :func:`astrogen.datasets.galaxy_stamps.load_real_cosmos` output.
    indices : array of int
        Real galaxies to compare with (their own PSF and noise are applied to the sims).
    reps : int
        Simulated galaxies per real galaxy.

    Returns
    -------
    realism : dict, sims : dict of observed-like stamps, psf_free : dict, idx : array
    """
    import galsim
    from astropy.table import Table

    from astrogen.catalog.cosmos import CosmosSampler
    from astrogen.data import cosmos_dir
    from astrogen.datasets.galaxy_stamps import REAL_CATALOG

    rcat = real["catalog"]
    rgc = galsim.RealGalaxyCatalog(REAL_CATALOG, dir=str(cosmos_dir()))
    indices = np.asarray(indices)
    idx = np.repeat(indices, reps)
    mt = Table({"row_id": np.arange(len(idx)), "mag": np.asarray(rcat["mag"])[idx],
                "hlr": np.asarray(rcat["hlr_psf_free"])[idx],
                "z": np.asarray(rcat["zphot"])[idx]})
    shape = CosmosSampler().sample(seed + 1, np.arange(len(idx)))
    for col in ("sersic_n", "q", "beta"):
        mt[col] = shape[col]
    n_pix = real["psf"].shape[-1]
    psf_free = {k: _on_grid(g.process(mt), n_pix, 0.03) for k, g in generators.items()}
    sims = {k: _observe_like_real(v, real["psf"], rgc, idx, seed) for k, v in psf_free.items()}
    sig_real = real["noise_sigma"]
    m_real = morphology(real["observed"][indices], sig_real[indices])
    out = {"n_real": int(len(indices)), "realizations": int(reps), "statistics": {}}
    for label, imgs in sims.items():
        m_sim = morphology(imgs, sig_real[idx])
        for k in STATS:
            out["statistics"].setdefault(k, {})[label] = ks_distance(m_real[k], m_sim[k])
    for label in generators:
        if label == reference or reference not in generators:
            continue
        flags = [out["statistics"][k][label]["ks"] < out["statistics"][k][reference]["ks"]
                 for k in STATS]
        out[f"{label}_closer_than_{reference}_count"] = int(sum(flags))
        for k, f in zip(STATS, flags):
            out["statistics"][k][f"{label}_closer_than_{reference}"] = bool(f)
    out["n_statistics"] = len(STATS)
    return out, sims, psf_free, idx


# ---------------------------------------------------------------------- main
def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="flowvae_cosmos64")
    ap.add_argument("--n", type=int, default=1000, help="galaxies for conditional accuracy")
    ap.add_argument("--realizations", type=int, default=3, help="per real galaxy")
    ap.add_argument("--seed", type=int, default=2024)
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "flowvae"))
    ap.add_argument("--quick", action="store_true", help="small sizes (smoke test)")
    args = ap.parse_args(argv)
    if args.quick:
        args.n, args.realizations = 64, 1
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / ".tmp"
    tmp.mkdir(exist_ok=True)

    from astrogen.tf_quiet import import_tensorflow_quietly

    tf = import_tensorflow_quietly()
    import galsim
    from astrogen.catalog.cosmos import CosmosSampler
    from astrogen.datasets.galaxy_stamps import load_real_cosmos
    from astrogen.stages.flowvae import FlowVAEGenerate
    from astrogen.stages.galsim_stages import ParametricGalaxies
    from astrogen.version import __version__

    gen = FlowVAEGenerate(model=args.model, out_of_range="clip", batch_size=64)
    gen.setup(_ctx("generate", args.seed, tmp))
    model = gen.model
    n_pix, scale = model.stamp_size, model.pixel_scale
    lo, hi = model.condition_range
    names = list(model.condition_names)
    results = {"model": args.model, "model_sha256": gen.model_sha256,
               "model_config": {k: model.get_config()[k] for k in
                                ("stamp_size", "latent_dim", "channels", "condition_names",
                                 "condition_range")},
               "astrogen_version": __version__, "tensorflow": tf.__version__,
               "galsim": galsim.__version__, "machine": platform.machine(),
               "cpu_count": os.cpu_count(), "args": vars(args)}

    # ---------------------------------------------------------------- 1. conditional accuracy
    sampler = CosmosSampler(mag_range=(lo[names.index("mag")], hi[names.index("mag")]))
    cat = sampler.sample(args.seed, np.arange(args.n))
    inside = np.ones(len(cat), bool)
    for j, name in enumerate(names):
        inside &= (np.asarray(cat[name]) >= lo[j]) & (np.asarray(cat[name]) <= hi[j])
    cat = cat[inside]
    param = ParametricGalaxies(profile="sersic", stamp_size=n_pix, pixel_scale=scale)
    param.setup(_ctx("parametric", args.seed, tmp))
    gen.process(cat[:8])  # warm-up (graph tracing) outside the timing
    t0 = time.perf_counter()
    g = gen.process(cat)
    t_gen = time.perf_counter() - t0
    t0 = time.perf_counter()
    p = param.process(cat)
    t_par = time.perf_counter() - t0

    t_real, n_realgal = _time_real_galaxy(n_pix, scale, min(len(cat), 200))
    req_mag = np.asarray(cat["mag"], float)
    req_hlr = np.asarray(cat["hlr"], float)
    acc = {"n": int(len(cat)), "n_outside_training_range_dropped": int((~inside).sum())}
    gs = np.asarray(g.pixel_scales, float)
    acc["flowvae_stage"] = {
        "stamp_shape": list(np.shape(g.images[0])),
        "pixel_scale_min_max": [float(gs.min()), float(gs.max())],
        "frac_size_scaled": float(np.mean(np.asarray(g.catalog["gen_size_scaled"], bool))),
        "frac_shape_applied": float(np.mean(np.asarray(g.catalog["gen_shape_applied"], bool))),
        "taper_loss_median": float(np.median(np.asarray(g.catalog["gen_taper_loss"], float)))}
    # Sersic peer on the FlowVAE stamps' own grids: the row's exact Sersic profile (what
    # galsim.parametric stores) drawn on 96 x 96 pixels at the FlowVAE stamp's pixel scale, so
    # the estimator's bias on elliptical, cut profiles is the same as for the FlowVAE stamps
    # (sampled at pixel centres, "no_pixel": an FFT of the exact profile at 0.4"/pixel would
    # need tens of GB)
    from astrogen.batch import StampBatch

    same_grid = StampBatch(
        images=np.stack([p.profiles[i].drawImage(
            nx=np.shape(g.images[i])[1], ny=np.shape(g.images[i])[0],
            scale=float(g.pixel_scales[i]), method="no_pixel").array.astype(np.float32)
            for i in range(len(cat))]),
        pixel_scale=np.asarray(g.pixel_scales, float), catalog=cat)
    for label, batch in (("flowvae", g), ("galsim_sersic", p),
                         ("galsim_sersic_flowvae_grid", same_grid)):
        flux = np.array([np.sum(batch.images[i], dtype=np.float64) for i in range(len(cat))])
        mag = 25.94 - 2.5 * np.log10(np.clip(flux, 1e-30, None))
        r50 = np.array([half_light_radius(batch.images[i], float(batch.pixel_scales[i]))
                        for i in range(len(cat))])
        b, s = robust(mag - req_mag)
        ratio = r50 / req_hlr
        mr, sr = robust(ratio)
        acc[label] = {"mag_bias": b, "mag_scatter": s, "mag_mean_diff": float(np.mean(mag - req_mag)),
                      "r50_over_hlr_median": mr, "r50_over_hlr_scatter_rel": sr / mr}
        acc[label + "_arrays"] = {"mag": mag, "r50": r50}
    acc["size_ratio_flowvae_over_sersic"] = (acc["flowvae"]["r50_over_hlr_median"]
                                             / acc["galsim_sersic"]["r50_over_hlr_median"])
    acc["size_ratio_flowvae_over_sersic_flowvae_grid"] = (
        acc["flowvae"]["r50_over_hlr_median"]
        / acc["galsim_sersic_flowvae_grid"]["r50_over_hlr_median"])
    results["conditional_accuracy"] = {k: v for k, v in acc.items() if not k.endswith("_arrays")}
    results["speed"] = {"n_stamps": int(len(cat)), "stamp_size": n_pix,
                        "flowvae_output_stamp_shape": list(np.shape(g.images[0])),
                        "galsim_sersic_output_stamp_shape": list(np.shape(p.images[0])),
                        "flowvae_stamps_per_s": len(cat) / t_gen,
                        "galsim_sersic_stamps_per_s": len(cat) / t_par,
                        "ratio_flowvae_over_galsim": t_par / t_gen,
                        "galsim_realgalaxy_stamps_per_s": n_realgal / t_real,
                        "ratio_flowvae_over_galsim_realgalaxy": (len(cat) / t_gen)
                        / (n_realgal / t_real),
                        "tf_threads": {"intra": tf.config.threading.get_intra_op_parallelism_threads(),
                                       "inter": tf.config.threading.get_inter_op_parallelism_threads()}}
    print(json.dumps({"conditional_accuracy": results["conditional_accuracy"],
                      "speed": results["speed"]}, indent=1), flush=True)

    # ---------------------------------------------------------------- 2. realism
    real = load_real_cosmos(n_pix, seed=args.seed)
    rcat = real["catalog"]
    realism, sims, fv, idx = realism_scores({"flowvae": gen, "galsim_sersic": param}, real,
                                            np.arange(len(rcat)), args.realizations, args.seed)
    reps = args.realizations
    results["realism"] = realism
    print(json.dumps(realism, indent=1), flush=True)

    # ---------------------------------------------------------------- 4. figures
    show = np.argsort(np.asarray(rcat["mag"]))[: 10]
    _png_grid(out / "realism.png",
              {"real COSMOS": real["observed"][show],
               "FlowVAE": sims["flowvae"][show * reps],
               "Sersic (sampler)": sims["galsim_sersic"][show * reps],
               "FlowVAE PSF-free": fv["flowvae"][show * reps]},
              len(show), "real HST/COSMOS galaxies (top) and simulations with matched mag, hlr, "
              "z, the real PSF and noise")
    _write_conditional_png(out / "conditional.png", req_mag, req_hlr, acc)
    (out / "results.json").write_text(json.dumps(results, indent=1, default=float) + "\n")
    for f in tmp.iterdir():
        f.unlink()
    tmp.rmdir()
    print(f"wrote {out / 'results.json'}")


def _write_conditional_png(path, req_mag, req_hlr, acc):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(8, 3.4))
    for label, color in (("galsim_sersic", "tab:gray"),
                         ("galsim_sersic_flowvae_grid", "tab:orange"), ("flowvae", "tab:blue")):
        a = acc[label + "_arrays"]
        ax[0].scatter(req_mag, a["mag"] - req_mag, s=3, alpha=0.5, color=color, label=label)
        ax[1].scatter(req_hlr, a["r50"] / req_hlr, s=3, alpha=0.5, color=color, label=label)
    ax[0].set_xlabel("requested mag (F814W AB)"), ax[0].set_ylabel("measured - requested mag")
    ax[1].set_xlabel("requested hlr [arcsec]"), ax[1].set_ylabel("measured r50 / hlr")
    ax[1].set_xscale("log")
    for a in ax:
        a.axhline(0 if a is ax[0] else 1, color="k", lw=0.5)
        a.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()

"""Galaxy DDPM benchmark: quality vs sampling steps, baselines, memorisation, speed (issue 6).

    python benchmarks/ddpm_benchmark.py                       # shipped model, default sizes
    python benchmarks/ddpm_benchmark.py --quick --model m.keras --out /tmp/x   # smoke test
    python benchmarks/ddpm_benchmark.py --n 100 --mem-n 200   # larger samples (slower)

Writes ``results.json`` and ``samples.png`` into ``--out`` (default
``benchmarks/results/ddpm``). Generated stamps of each sampler setting are cached in
``--out/cache/<label>.npz`` (with their timing), so an interrupted run continues where it
stopped; ``--fresh`` ignores the cache. What is measured:

1. Quality vs sampling steps. ``--n`` real HST/COSMOS I<26 galaxies (a seeded random subset
   of the 100 shipped with astrogen) give the conditions (mag, PSF-free hlr, z). For each
   setting -- DDPM ancestral 1000 steps (two seeds: a and b), DDIM 250, 50, 25 (two seeds),
   10, DPM-Solver++(2M) 10 -- one stamp is generated per galaxy, convolved with that galaxy's
   own PSF and given its own COSMOS correlated noise, exactly like the real stamp; statmorph
   (Rodriguez-Gomez et al. 2019; segmentation: central sep object at 1.5 sigma) measures
   ellipticity, r50, concentration, asymmetry, smoothness, Gini and M20; the distance to the
   real galaxies is the two-sample Kolmogorov-Smirnov statistic per statistic (same method as
   benchmarks/flowvae_benchmark.py). Run-to-run noise: the KS distance between the two DDPM
   1000-step runs (seeds a and b); the target "DDIM 25 within run-to-run noise of DDPM 1000"
   is checked as mean-over-statistics KS(DDIM 25 a, DDPM 1000 a) <= KS(DDPM 1000 b, DDPM
   1000 a). Settings a share their starting noise (the same row seeds), b uses other seeds.
   Conditional accuracy on the PSF-free stamps: magnitude of the stamp's total flux minus the
   requested one (median, 1.4826 MAD), and the circular half-light radius measured on the stamp
   over the requested hlr (median, relative scatter), with GalSim Sersic stamps of the same
   rows measured the same way beside.
2. Baselines on the same rows, treated the same way: ``galsim.parametric`` Sersic profiles
   (Sersic index, axis ratio, angle from the COSMOS sampler) and ``flowvae.generate`` if its
   weights are installed (``--flowvae``).
3. Memorisation: ``--mem-n`` held-out rows of the training set (rows the DDPM never saw,
   ``training.holdout`` of its config) are generated (DDIM 25) from their own conditions; in
   the network's data space (stamp / catalog flux, arcsinh-scaled) the L2 distance of each
   generated stamp to its nearest training stamp is compared with the distance of each
   held-out real (simulated-truth) stamp to its nearest training stamp. The same rows give a
   matched size test: r50 of the generated stamp over r50 of the row's true stamp.
4. Speed: stamps/s of the ``ddpm.generate`` stage at each setting, and of ``galsim.parametric``
   drawing the same rows (64x64 at 0.03"/pixel) in the same run; the load average is recorded
   because the machine is shared.
5. ``samples.png``: real galaxies beside DDPM (1000, 25, 10 steps), FlowVAE and Sersic
   stamps with matched properties, same PSF and noise, and the PSF-free DDIM 25 stamps.
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
sys.path.insert(0, str(REPO / "benchmarks"))

# Measurements shared with the FlowVAE benchmark (same definitions, one implementation).
from flowvae_benchmark import STATS, half_light_radius, morphology, robust  # noqa: E402,F401
from flowvae_benchmark import _observe_like_real as observe_like_real  # noqa: E402
from flowvae_benchmark import _png_grid as png_grid  # noqa: E402
#: label -> (sampler, steps, seed offset); computed in this order (cheapest first).
SETTINGS = {
    "ddim10": ("ddim", 10, 0),
    "dpm_solver10": ("dpm_solver", 10, 0),
    "ddim25_a": ("ddim", 25, 0),
    "ddim25_b": ("ddim", 25, 1),
    "ddim50": ("ddim", 50, 0),
    "ddim250": ("ddim", 250, 0),
    "ddpm1000_a": ("ddpm", 1000, 0),
    "ddpm1000_b": ("ddpm", 1000, 1),
}


# ---------------------------------------------------------------------- measurements
def ks(a, b) -> float:
    from scipy.stats import ks_2samp

    a, b = np.asarray(a), np.asarray(b)
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    if len(a) < 2 or len(b) < 2:
        return float("nan")
    return float(ks_2samp(a, b).statistic)


def _ctx(name, seed, tmp):
    from astrogen.stages.base import StageContext

    return StageContext(name=name, seed=seed, output_dir=tmp, work_dir=tmp)


def _cached(cache: Path, label: str, key: str, make, fresh: bool):
    """``make() -> (images, seconds)`` cached in ``cache/label.npz`` under ``key``."""
    f = cache / f"{label}.npz"
    if f.is_file() and not fresh:
        with np.load(f) as z:
            if str(z["key"]) == key:
                return z["images"], float(z["seconds"]), True
    images, seconds = make()
    tmp = f.with_name(f".{f.name}.tmp.npz")
    np.savez(tmp, images=images, seconds=seconds, key=key)
    os.replace(tmp, f)
    return images, seconds, False


def _accuracy(images, req_mag, req_hlr, scale) -> dict:
    flux = images.reshape(len(images), -1).sum(axis=1, dtype=np.float64)
    mag = 25.94 - 2.5 * np.log10(np.clip(flux, 1e-30, None))
    r50 = np.array([half_light_radius(im, scale) for im in images])
    b, s = robust(mag - req_mag)
    mr, sr = robust(r50 / req_hlr)
    return {"mag_bias": b, "mag_scatter": s, "r50_over_hlr_median": mr,
            "r50_over_hlr_scatter_rel": sr / mr if mr else float("nan")}, r50


# ---------------------------------------------------------------------- main
def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="ddpm_cosmos64")
    ap.add_argument("--n", type=int, default=48, help="real galaxies (conditions, PSF, noise)")
    ap.add_argument("--mem-n", type=int, default=100, help="held-out rows for memorisation")
    ap.add_argument("--settings", default=",".join(SETTINGS),
                    help="comma-separated subset of " + ",".join(SETTINGS))
    ap.add_argument("--dataset", default=None,
                    help="training set folder (default: the one in the model's sidecar)")
    ap.add_argument("--flowvae", default="flowvae_cosmos64",
                    help="FlowVAE model for the side-by-side ('none' to skip)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "ddpm"))
    ap.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
    ap.add_argument("--fresh", action="store_true", help="ignore cached samples")
    args = ap.parse_args(argv)
    if args.quick:
        args.n, args.mem_n = min(args.n, 6), min(args.mem_n, 6)
    settings = [s for s in args.settings.split(",") if s]
    bad = [s for s in settings if s not in SETTINGS]
    if bad:
        ap.error(f"unknown settings {bad}; choose among {list(SETTINGS)}")
    out = Path(args.out)
    cache = out / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    tmp = out / ".tmp"
    tmp.mkdir(exist_ok=True)

    from astrogen.tf_quiet import import_tensorflow_quietly

    tf = import_tensorflow_quietly()
    import galsim
    from astropy.table import Table

    from astrogen.catalog.cosmos import CosmosSampler
    from astrogen.data import cosmos_dir
    from astrogen.datasets.galaxy_stamps import REAL_CATALOG, load_real_cosmos, read_stamps
    from astrogen.stages.ddpm import DDPMGenerate
    from astrogen.stages.galsim_stages import ParametricGalaxies
    from astrogen.version import __version__

    t_start = time.time()
    load = [os.getloadavg()]
    gen = DDPMGenerate(model=args.model, out_of_range="clip", batch_size=args.batch_size)
    gen.setup(_ctx("generate", args.seed, tmp))
    model = gen.model
    n_pix, scale = model.stamp_size, model.pixel_scale
    sha = gen.model_sha256
    results = {"model": args.model, "model_sha256": sha,
               "model_training": {k: v for k, v in model.meta.get("training", {}).items()
                                  if k != "dataset_config"},
               "network": {k: model.network.get_config()[k] for k in
                           ("base_channels", "channel_mults", "num_res_blocks",
                            "attention_resolutions")},
               "n_parameters": int(sum(int(np.prod(v.shape)) for v in model.network.weights)),
               "model_file_bytes": int(gen.model_path.stat().st_size),
               "astrogen_version": __version__, "tensorflow": tf.__version__,
               "galsim": galsim.__version__, "machine": platform.machine(),
               "cpu_count": os.cpu_count(), "args": vars(args)}

    # ---------------------------------------------------------------- rows
    real = load_real_cosmos(n_pix, seed=args.seed)
    rcat = real["catalog"]
    rng = np.random.default_rng(args.seed)
    sub = np.sort(rng.choice(len(rcat), size=min(args.n, len(rcat)), replace=False))
    rows = Table({"row_id": np.arange(len(sub)), "mag": np.asarray(rcat["mag"])[sub],
                  "hlr": np.asarray(rcat["hlr_psf_free"])[sub],
                  "z": np.asarray(rcat["zphot"])[sub]})
    shape = CosmosSampler().sample(args.seed + 1, np.arange(len(sub)))
    for col in ("sersic_n", "q", "beta"):
        rows[col] = shape[col]
    rgc = galsim.RealGalaxyCatalog(REAL_CATALOG, dir=str(cosmos_dir()))
    req_mag, req_hlr = np.asarray(rows["mag"], float), np.asarray(rows["hlr"], float)
    # the conditions the model actually received (clipped into its training range)
    used = gen._conditions(rows)
    results["rows"] = {"real_indices": sub.tolist(), "n": int(len(sub)),
                       "n_clipped": int(np.any(used != np.stack(
                           [req_mag, req_hlr, np.asarray(rows["z"], float)], 1), axis=1).sum())}

    # warm-up: trace the network once outside every timing
    gen.process(rows[:2])

    psf_free, seconds, from_cache = {}, {}, {}
    for label in settings:
        sampler, steps, off = SETTINGS[label]
        steps = min(steps, model.schedule.num_train_steps)  # tiny test models: T < 1000
        g = DDPMGenerate(model=args.model, sampler=sampler, num_steps=steps,
                         out_of_range="clip", batch_size=args.batch_size)
        g.setup(_ctx("generate", args.seed + off, tmp))
        key = f"{sha}:{label}:{args.seed}:{sub.tolist()}:{args.batch_size}"

        def make(g=g):
            t0 = time.perf_counter()
            imgs = g.process(rows).images
            return imgs, time.perf_counter() - t0

        t0 = time.time()
        psf_free[label], seconds[label], from_cache[label] = _cached(cache, label, key, make,
                                                                     args.fresh)
        print(f"{label}: {len(rows)} stamps, {seconds[label]:.1f} s"
              f"{' (cached)' if from_cache[label] else ''}", flush=True)
    load.append(os.getloadavg())

    # baselines (same rows)
    param = ParametricGalaxies(profile="sersic", stamp_size=n_pix, pixel_scale=scale)
    param.setup(_ctx("parametric", args.seed, tmp))
    t0 = time.perf_counter()
    psf_free["galsim_sersic"] = param.process(rows).images
    seconds["galsim_sersic"] = time.perf_counter() - t0
    if args.flowvae != "none":
        try:
            from astrogen.stages.flowvae import FlowVAEGenerate

            fv = FlowVAEGenerate(model=args.flowvae, out_of_range="clip", batch_size=32)
            fv.setup(_ctx("flowvae", args.seed, tmp))
            fv.process(rows[:2])
            t0 = time.perf_counter()
            psf_free["flowvae"] = fv.process(rows).images
            seconds["flowvae"] = time.perf_counter() - t0
            results["flowvae_model_sha256"] = fv.model_sha256
        except Exception as exc:  # noqa: BLE001 - the side-by-side is optional
            results["flowvae_skipped"] = f"{type(exc).__name__}: {exc}"
            print("FlowVAE skipped:", results["flowvae_skipped"], flush=True)

    # ---------------------------------------------------------------- realism, accuracy, speed
    sig = real["noise_sigma"]
    m_real = morphology(real["observed"][sub], sig[sub])
    sims, morph, table = {}, {}, {}
    for label, imgs in psf_free.items():
        sims[label] = observe_like_real(imgs, real["psf"], rgc, sub, args.seed)
        morph[label] = morphology(sims[label], sig[sub])
        acc, _ = _accuracy(imgs, req_mag, req_hlr, scale)
        per = {k: ks(m_real[k], morph[label][k]) for k in STATS}
        entry = {"ks_to_real": per, "mean_ks_to_real": float(np.nanmean(list(per.values()))),
                 "n_measured": int(np.isfinite(morph[label]["r50"]).sum()), **acc,
                 "seconds": seconds[label], "stamps_per_s": len(sub) / seconds[label]}
        if label in SETTINGS:
            entry.update(sampler=SETTINGS[label][0], steps=SETTINGS[label][1],
                         timing_from_cache=from_cache[label])
        table[label] = entry
        print(label, json.dumps({k: v for k, v in entry.items() if k != "ks_to_real"}),
              flush=True)
    results["settings"] = table
    results["real_n_measured"] = int(np.isfinite(m_real["r50"]).sum())
    results["ks_critical_95"] = float(1.358 * np.sqrt(2.0 / len(sub)))

    noise = {}
    if "ddpm1000_a" in morph and "ddpm1000_b" in morph:
        ref = morph["ddpm1000_a"]
        rr = {k: ks(ref[k], morph["ddpm1000_b"][k]) for k in STATS}
        noise["ks_ddpm1000_b_vs_a"] = rr
        noise["mean_ks_ddpm1000_b_vs_a"] = float(np.nanmean(list(rr.values())))
        for label in morph:
            if label in ("ddpm1000_a", "ddpm1000_b"):
                continue
            d = {k: ks(ref[k], morph[label][k]) for k in STATS}
            noise[f"mean_ks_{label}_vs_ddpm1000_a"] = float(np.nanmean(list(d.values())))
        noise["mean_ks_to_real_spread_ddpm1000_a_b"] = abs(
            table["ddpm1000_a"]["mean_ks_to_real"] - table["ddpm1000_b"]["mean_ks_to_real"])
        if "ddim25_a" in morph:
            noise["target_ddim25_within_run_to_run_noise"] = bool(
                noise["mean_ks_ddim25_a_vs_ddpm1000_a"] <= noise["mean_ks_ddpm1000_b_vs_a"])
    if "ddim25_a" in morph and "ddim25_b" in morph:
        d = {k: ks(morph["ddim25_a"][k], morph["ddim25_b"][k]) for k in STATS}
        noise["mean_ks_ddim25_b_vs_a"] = float(np.nanmean(list(d.values())))
    results["run_to_run"] = noise
    print(json.dumps(noise, indent=1), flush=True)

    # ---------------------------------------------------------------- memorisation
    ds = args.dataset or model.meta.get("training", {}).get("dataset")
    tr = model.meta.get("training", {})
    if args.mem_n > 0 and ds and Path(ds).is_dir():
        lo_h, hi_h = tr.get("holdout_rows", [None, None])
        n_train = tr.get("rows_trained", [0, lo_h])[1]
        data = read_stamps(ds, fields=("truth", "conditions"))
        c = data["conditions"].astype(np.float64)
        x = model.encode(data["truth"], c[:, 0])[..., 0].reshape(len(c), -1).astype(np.float32)
        del data
        train_x = x[:n_train]
        hold = np.arange(lo_h, min(hi_h, lo_h + args.mem_n))
        ht = Table({"row_id": hold, "mag": c[hold, 0], "hlr": c[hold, 1], "z": c[hold, 2]})
        g = DDPMGenerate(model=args.model, sampler="ddim", num_steps=25, out_of_range="clip",
                         batch_size=args.batch_size)
        g.setup(_ctx("memorisation", args.seed, tmp))
        key = f"{sha}:mem:{args.seed}:{hold.tolist()}:{args.batch_size}"
        mem_imgs, _, _ = _cached(cache, "mem_ddim25", key,
                                 lambda: (lambda t0: (g.process(ht).images,
                                                      time.perf_counter() - t0))(
                                     time.perf_counter()), args.fresh)
        gx = model.encode(mem_imgs, c[hold, 0])[..., 0].reshape(len(hold), -1).astype(np.float32)
        hx = x[hold]

        def nn_dist(q):
            tn = (train_x.astype(np.float64) ** 2).sum(1)
            best = np.full(len(q), np.inf)
            for i in range(0, len(train_x), 4000):
                blk = train_x[i:i + 4000].astype(np.float64)
                d2 = (q.astype(np.float64) ** 2).sum(1)[:, None] + tn[None, i:i + 4000] \
                    - 2.0 * q.astype(np.float64) @ blk.T
                best = np.minimum(best, d2.min(1))
            return np.sqrt(np.maximum(best, 0.0))

        d_gen, d_hold = nn_dist(gx), nn_dist(hx)
        p1 = float(np.percentile(d_hold, 1))
        r50_gen = np.array([half_light_radius(im, scale) for im in mem_imgs])
        r50_true = np.array([half_light_radius(im, scale) for im in
                             read_stamps(ds, fields=("truth",), rows=slice(int(hold[0]),
                                                                          int(hold[-1]) + 1))
                             ["truth"]])
        mr, sr = robust(r50_gen / r50_true)
        flux = mem_imgs.reshape(len(hold), -1).sum(1, dtype=np.float64)
        mb, ms = robust(25.94 - 2.5 * np.log10(np.clip(flux, 1e-30, None)) - c[hold, 0])
        results["memorisation"] = {
            "n_generated": int(len(hold)), "n_training": int(n_train),
            "space": "network data space: arcsinh(stamp / (catalog flux * s)) / d, L2 over "
                     f"{n_pix}x{n_pix} pixels",
            "generated_to_train_nn": {"median": float(np.median(d_gen)),
                                      "p5": float(np.percentile(d_gen, 5)),
                                      "min": float(d_gen.min())},
            "heldout_to_train_nn": {"median": float(np.median(d_hold)),
                                    "p5": float(np.percentile(d_hold, 5)),
                                    "min": float(d_hold.min()), "p1": p1},
            "fraction_generated_below_heldout_p1": float(np.mean(d_gen < p1)),
            "ratio_of_medians_generated_over_heldout": float(np.median(d_gen)
                                                              / np.median(d_hold))}
        results["heldout_conditional_accuracy_ddim25"] = {
            "n": int(len(hold)), "mag_bias": mb, "mag_scatter": ms,
            "r50_generated_over_r50_true_median": mr,
            "r50_generated_over_r50_true_scatter_rel": sr / mr if mr else float("nan")}
        print(json.dumps({"memorisation": results["memorisation"],
                          "heldout": results["heldout_conditional_accuracy_ddim25"]}, indent=1),
              flush=True)
    else:
        results["memorisation"] = {"skipped": f"training set not found ({ds})"}

    # ---------------------------------------------------------------- figure
    show = np.argsort(req_mag)[:10]
    grid = {"real COSMOS": real["observed"][sub][show]}
    names = {"ddpm1000_a": "DDPM 1000", "ddim25_a": "DDIM 25", "ddim10": "DDIM 10",
             "flowvae": "FlowVAE", "galsim_sersic": "Sersic"}
    for k, v in names.items():
        if k in sims:
            grid[v] = sims[k][show]
    if "ddim25_a" in psf_free:
        grid["DDIM 25 PSF-free"] = psf_free["ddim25_a"][show]
    png_grid(out / "samples.png", grid, len(show),
             "real HST/COSMOS galaxies (top) and generated ones with matched mag, hlr, z, "
             "the real PSF and noise")
    load.append(os.getloadavg())
    results["load_average_1_5_15min"] = [list(map(float, x)) for x in load]
    results["wall_time_s"] = time.time() - t_start
    (out / "results.json").write_text(json.dumps(results, indent=1, default=float) + "\n")
    for f in tmp.iterdir():
        if f.is_file():
            f.unlink()
    if not any(tmp.iterdir()):
        tmp.rmdir()
    print(f"wrote {out / 'results.json'}")


if __name__ == "__main__":
    main()

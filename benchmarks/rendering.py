"""Benchmark of survey-grade rendering (issue 12, rendering core).

1. Fraction of the light inside the stamp of the parametric generator (``galsim.parametric``,
   Sersic and bulge+disk) over ``--rows`` rows (default 10,000) of the COSMOS sampler, full
   magnitude range: the per-row analytic lower bound that the stage writes as
   ``stamp_flux_frac`` (min, 0.1st percentile, median), the stamp sizes and the share of
   galaxies given a coarser pixel; and, on a ``--check`` subsample actually drawn, the
   light in the stamp over the light on the same pixel grid in a box 3 times wider.
   The same numbers for the old fixed 96-pixel stamp (the issue's parametric_mock) as the
   peer.
2. Throughput of the parametric mock (render -> observe -> scene, noiseless) in the six
   LSST bands vs one band (lsst_i), same run, same ``--mock-rows`` galaxies; the catalog's
   per-band magnitudes are ``mag`` plus fixed colours (timing only: values do not matter).

   A warm-up pass (render + observe, untimed in the comparison) first builds GalSim's
   per-Sersic-index tables, which any first run in a process pays once.

3. Light in the stamp of the generative models (``flowvae.generate``; ``ddpm.generate`` with
   DDIM-10 on ``--ddpm-rows`` rows only, ~5-10 stamps/s here) over ``--gen-rows`` rows
   (default 10,000) of the same COSMOS sampler (``out_of_range: clip``). The network draws
   each galaxy in a fixed 64 x 64 field; the stage tapers the field's border
   (``edge_window``) and applies size, q and beta. Per row: ``gen_taper_loss``, the share of
   the network's light removed by the taper (what the delivered stamp lacks of the generated
   light: the light kept is ``1 - gen_taper_loss``); ``raw_ring_frac``, the light in the
   outer 2-pixel ring of the network stamp *before* tapering (captured by wrapping
   ``finish_generated``); ``gen_ring_frac``, the same ring of the delivered stamp.

Usage:  python benchmarks/rendering.py [--rows 10000] [--check 300] [--mock-rows 300]
                                       [--gen-rows 10000] [--ddpm-rows 100]
                                       [--parts light,bands,generators] [--out DIR]
Writes ``DIR/rendering.json`` and prints the Markdown tables of the README.
"""
from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def light_fractions(rows: int, check: int, seed: int = 2024) -> dict:
    from astrogen.catalog.cosmos import CosmosSampler
    from astrogen.physics.render import (enclosed_fraction, galaxy_profile, profile_components,
                                         stamp_layout)

    t = CosmosSampler().sample(seed, np.arange(rows))
    out = {}
    for profile in ("sersic", "bulge_disk"):
        frac, size, scale, old = (np.zeros(rows) for _ in range(4))
        t0 = time.perf_counter()
        for i, row in enumerate(t):
            comps = profile_components(row, 1.0, profile)
            obj = galaxy_profile(row, 1.0, profile)
            size[i], scale[i], frac[i] = stamp_layout(obj, comps, 0.03, 512)
            old[i] = enclosed_fraction(comps, 96 * 0.03 / 2)
        sizing_s = time.perf_counter() - t0
        # numerical check on a subsample: light in the stamp / light in a 3x wider box
        rng = np.random.default_rng(seed)
        idx = np.unique(np.concatenate([rng.choice(rows, check, replace=False),
                                        np.argsort(frac)[:10], np.argsort(-size * scale)[:10]]))
        drawn = []
        for i in idx:
            obj = galaxy_profile(t[i], 1.0, profile)
            n, sc = int(size[i]), float(scale[i])
            big = obj.drawImage(nx=3 * n, ny=3 * n, scale=sc, method="no_pixel").array
            drawn.append(big[n:2 * n, n:2 * n].sum() / big.sum())
        drawn = np.array(drawn)
        out[profile] = {
            "rows": rows, "sizing_s": sizing_s,
            "frac_min": float(frac.min()), "frac_p0.1": float(np.percentile(frac, 0.1)),
            "frac_median": float(np.median(frac)),
            "n_below_0.995": int((frac < 0.995).sum()),
            "size_median_pix": float(np.median(size)), "size_max_pix": float(size.max()),
            "share_coarser_pixel": float((scale > 0.03).mean()),
            "pixel_scale_max": float(scale.max()),
            "checked_rows": int(len(idx)), "checked_frac_min": float(drawn.min()),
            "old96_frac_min": float(old.min()), "old96_frac_p0.1": float(np.percentile(old, 0.1)),
            "old96_n_below_0.995": int((old < 0.995).sum()),
        }
    return out


def band_throughput(n: int, seed: int = 7) -> dict:
    from astrogen.catalog.cosmos import CosmosSampler
    from astrogen.physics.scene import Field
    from astrogen.stages.base import StageContext
    from astrogen.stages.galsim_stages import Observe, ParametricGalaxies, Scene

    t = CosmosSampler().sample(seed, np.arange(n))
    rng = np.random.default_rng(seed)
    colours = {"u": 1.2, "g": 0.8, "r": 0.3, "i": 0.0, "z": -0.2, "y": -0.3}
    for b, c in colours.items():
        t[f"mag_lsst_{b}"] = t["mag"] + c
    side = int(np.sqrt(n / 40.0) * 60 / 0.2)  # ~40 galaxies / arcmin^2 at 0.2"/pix
    t["x"], t["y"] = rng.uniform(1, side, n), rng.uniform(1, side, n)
    field = Field(side, side, 0.2)  # what catalog.positions hands the scene stage
    res = {"rows": n, "scene_pixels": side}
    with tempfile.TemporaryDirectory() as tmp:
        def ctx(stage, name):
            (Path(tmp) / name).mkdir()
            stage.setup(StageContext(name=name, seed=1, output_dir=Path(tmp), work_dir=Path(tmp) / name))
            return stage

        # warm-up, not in the comparison: GalSim builds each Sersic index's tables once per
        # process (up to 0.5 s for n = 6), whichever run comes first would pay for them
        t0 = time.perf_counter()
        Observe(survey="lsst_i", add_noise=False).process(ParametricGalaxies().process(t))
        res["warm_up_s"] = time.perf_counter() - t0
        for label, bands in (("1_band", ["i"]), ("6_bands", list("ugrizy"))):
            t0 = time.perf_counter()
            batch = ParametricGalaxies().process(t)
            t1 = time.perf_counter()
            for b in bands:
                Observe(survey=f"lsst_{b}", add_noise=False).process(batch)
            t2 = time.perf_counter()
            sc = ctx(Scene(survey="lsst", bands=bands, add_noise=False,
                           preview=None).bind_field(field), label)
            sc.consume(0, batch)
            t3 = time.perf_counter()
            res[label] = {"render_s": t1 - t0, "observe_s": t2 - t1, "scene_s": t3 - t2,
                          "total_s": t3 - t0, "galaxies_per_s": n / (t3 - t0)}
    res["ratio_6_to_1"] = res["6_bands"]["total_s"] / res["1_band"]["total_s"]
    res["ratio_6_to_1_excl_render"] = ((res["6_bands"]["total_s"] - res["6_bands"]["render_s"])
                                       / (res["1_band"]["total_s"] - res["1_band"]["render_s"]))
    return res


def _stats(x) -> dict:
    x = np.asarray(x, float)
    return {"min": float(np.min(x)), "p0.1": float(np.percentile(x, 0.1)),
            "median": float(np.median(x)), "p99.9": float(np.percentile(x, 99.9)),
            "max": float(np.max(x))}


def generator_light(gen_rows: int, ddpm_rows: int, seed: int = 2024) -> dict:
    import astrogen.stages.ddpm as ddpm_mod
    import astrogen.stages.flowvae as flowvae_mod
    from astrogen.catalog.cosmos import CosmosSampler
    from astrogen.stages.base import StageContext
    from astrogen.stages.generated import ring_fraction

    out = {}
    runs = [("flowvae", flowvae_mod, gen_rows,
             lambda: flowvae_mod.FlowVAEGenerate(out_of_range="clip", batch_size=64))]
    if ddpm_rows > 0:
        runs.append(("ddpm_ddim10", ddpm_mod, ddpm_rows,
                     lambda: ddpm_mod.DDPMGenerate(out_of_range="clip", num_steps=10,
                                                   sampler="ddim", batch_size=32)))
    for name, mod, n, make in runs:
        t = CosmosSampler().sample(seed, np.arange(n))
        raw_ring = []
        original = mod.finish_generated

        def capture(images, *args, **kw):  # ring of the network's own stamps, before the taper
            raw_ring.append(ring_fraction(np.asarray(images, np.float64)))
            return original(images, *args, **kw)

        mod.finish_generated = capture
        try:
            with tempfile.TemporaryDirectory() as tmp:
                stage = make()
                stage.setup(StageContext(name=name, seed=seed, output_dir=Path(tmp),
                                         work_dir=Path(tmp)))
                t0 = time.perf_counter()
                cats = [stage.process(t[k:k + 500]).catalog for k in range(0, n, 500)]
                dt = time.perf_counter() - t0
        finally:
            mod.finish_generated = original
        loss = np.concatenate([np.asarray(c["gen_taper_loss"], float) for c in cats])
        ring = np.concatenate([np.asarray(c["gen_ring_frac"], float) for c in cats])
        raw = np.concatenate(raw_ring)
        mag = np.concatenate([np.asarray(c["mag"], float) for c in cats])
        edges = [-np.inf, 22.0, 24.0, 26.0, np.inf]
        by_mag = {f"{lo:g}..{hi:g}": {"rows": int(m.sum()),
                                       "median_taper_loss": float(np.median(loss[m])),
                                       "max_taper_loss": float(np.max(loss[m]))}
                  for lo, hi in zip(edges[:-1], edges[1:])
                  for m in [(mag >= lo) & (mag < hi)] if m.any()}
        worst = int(np.argmax(loss))
        out[name] = {"taper_loss_by_mag": by_mag,
                     "worst_row": {"row_id": int(cats[worst // 500]["row_id"][worst % 500]),
                                   "mag": float(mag[worst]), "hlr": float(t["hlr"][worst]),
                                   "taper_loss": float(loss[worst])},
"rows": n, "seconds": dt, "stamps_per_s": n / dt,
                     "gen_taper_loss": _stats(loss), "kept_1_minus_taper_loss": _stats(1 - loss),
                     "raw_ring_frac": _stats(raw), "gen_ring_frac": _stats(ring),
                     "n_kept_below_0.995": int((1 - loss < 0.995).sum()),
                     "n_raw_ring_above_0.005": int((raw > 0.005).sum()),
                     "n_gen_cut": int(np.sum(ring > 0.005))}
    return out


def _merge(path: Path, res: dict) -> dict:
    old = json.loads(path.read_text()) if path.is_file() else {}
    old.update(res)
    return old


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=10000)
    ap.add_argument("--check", type=int, default=300)
    ap.add_argument("--mock-rows", type=int, default=300)
    ap.add_argument("--gen-rows", type=int, default=10000)
    ap.add_argument("--ddpm-rows", type=int, default=100)
    ap.add_argument("--parts", default="light,bands,generators",
                    help="light, bands, generators; a part not run keeps its previous results")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "rendering"))
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    parts = a.parts.split(",")
    res = {"machine": platform.platform(), "python": platform.python_version()}
    if "light" in parts:
        res["light_fraction"] = light_fractions(a.rows, a.check)
    if "bands" in parts:
        res["bands"] = band_throughput(a.mock_rows)
    if "generators" in parts:
        res["generators"] = generator_light(a.gen_rows, a.ddpm_rows)
    res = _merge(out / "rendering.json", res)
    (out / "rendering.json").write_text(json.dumps(res, indent=1))
    print("| profile | rows | min light in stamp | 0.1st pct | below 0.995 | checked (drawn) min "
          "| median / max side [pix] | coarser pixel | old 96-pix: min, below 0.995 |")
    print("|---|---|---|---|---|---|---|---|---|")
    for p, r in res["light_fraction"].items():
        print(f"| {p} | {r['rows']:,} | {r['frac_min']:.4f} | {r['frac_p0.1']:.4f} | "
              f"{r['n_below_0.995']} | {r['checked_frac_min']:.4f} ({r['checked_rows']}) | "
              f"{r['size_median_pix']:.0f} / {r['size_max_pix']:.0f} | "
              f"{100 * r['share_coarser_pixel']:.1f} % (max {r['pixel_scale_max']:.3f}\") | "
              f"{r['old96_frac_min']:.3f}, {r['old96_n_below_0.995']} |")
    b = res["bands"]
    print(f"\n| LSST bands | galaxies/s (render + observe + scene) | total [s] |\n|---|---|---|")
    for k in ("1_band", "6_bands"):
        print(f"| {k.replace('_', ' ')} | {b[k]['galaxies_per_s']:.1f} | {b[k]['total_s']:.1f} |")
    print(f"\n6 bands / 1 band time: {b['ratio_6_to_1']:.2f} "
          f"(excluding the shared render: {b['ratio_6_to_1_excl_render']:.2f}), {b['rows']} galaxies, "
          f"after a {b.get('warm_up_s', float('nan')):.1f} s warm-up")
    if "generators" in res:
        print("\n| generator | rows | kept after taper (1 - gen_taper_loss): min / 0.1st pct / "
              "median | raw ring before taper: median / 99.9th pct / max | delivered ring max |"
              "\n|---|---|---|---|---|")
        for g, r in res["generators"].items():
            k, w, d = r["kept_1_minus_taper_loss"], r["raw_ring_frac"], r["gen_ring_frac"]
            print(f"| {g} | {r['rows']:,} | {k['min']:.4f} / {k['p0.1']:.4f} / {k['median']:.4f} "
                  f"| {w['median']:.4f} / {w['p99.9']:.4f} / {w['max']:.4f} | {d['max']:.2g} |")


if __name__ == "__main__":
    main()

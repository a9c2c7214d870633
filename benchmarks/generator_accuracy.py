"""Requested vs obtained magnitude, half-light radius, axis ratio and position angle of the
galaxy generators, and the light they leave at the stamp edge.

Rows come from the COSMOS sampler (``catalog.cosmos``, full magnitude range, seed 2026). Each
generator stage runs as a pipeline would run it (PSF-free, noiseless):

* ``galsim.parametric`` (Sersic, 64 x 64 at 0.03"),
* ``flowvae.generate`` (shipped weights, ``out_of_range: clip``), before (``max_native_hlr:
  null, shape: measure, edge_taper: false``: the behaviour of the previous release) and after (defaults),
* ``ddpm.generate`` (shipped weights, DDIM with ``--ddpm-steps`` steps, fewer rows: it runs at
  a few stamps/s on a CPU), before and after.

Measured on every output stamp (:func:`astrogen.stages.generated.measure_stamps`): magnitude
from the stamp's total flux (zero point 25.94), circularised half-light radius from the curve
of growth in elliptical apertures of the measured shape, q and beta from GalSim HSM adaptive
moments (beta only for rows with requested q < 0.8, where it is defined). Bias = median of
(measured - requested) (hlr: of measured / requested - 1), scatter = 1.4826 x MAD. The
parametric rows measure the method's own floor (pixelisation, stamp truncation).

``--explore`` (default on) also measures, for each network, the outer 2-pixel-ring light and
the measured size as a function of the hlr it is conditioned on: the evidence for the
``max_native_hlr`` defaults.

    python benchmarks/generator_accuracy.py                    # ~10 min on 2 CPU cores
    python benchmarks/generator_accuracy.py --rows 1000 --ddpm-rows 1000

Results: ``benchmarks/results/generator_accuracy/generator_accuracy.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
OUT = HERE / "results" / "generator_accuracy"
ZP = 25.94


def _robust(x) -> dict:
    x = np.asarray(x, np.float64)
    x = x[np.isfinite(x)]
    if len(x) == 0:
        return {"n": 0, "bias": None, "scatter": None}
    med = float(np.median(x))
    return {"n": int(len(x)), "bias": med,
            "scatter": float(1.4826 * np.median(np.abs(x - med)))}


def metrics(batch, table) -> dict:
    from astrogen.stages.generated import measure_stamps, ring_fraction

    m = measure_stamps(batch.images, batch.pixel_scales)
    flux = batch.images.reshape(len(batch), -1).sum(axis=1, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        mag = np.where(flux > 0, ZP - 2.5 * np.log10(flux), np.nan)
    q_req = np.asarray(table["q"], np.float64)
    hlr_req = np.asarray(table["hlr"], np.float64)
    dbeta = (m["beta"] - np.asarray(table["beta"], np.float64) + 90.0) % 180.0 - 90.0
    elong = q_req < 0.8
    large = hlr_req / np.sqrt(q_req) > 0.3
    ring = ring_fraction(batch.images)
    cat = batch.catalog
    return {
        "rows": len(table),
        "mag": _robust(mag - np.asarray(table["mag"], np.float64)),
        "hlr_rel": _robust(m["hlr"] / hlr_req - 1.0),
        "hlr_rel_large (hlr/sqrt(q) > 0.3 arcsec)": _robust((m["hlr"] / hlr_req - 1.0)[large]),
        "q": _robust(m["q"] - q_req),
        "beta_deg (q_req < 0.8)": _robust(dbeta[elong]),
        "hsm_failures": int((~m["ok"]).sum()),
        "ring_frac": {"median": float(np.nanmedian(ring)),
                      "p99": float(np.nanpercentile(ring, 99)),
                      "max": float(np.nanmax(ring)),
                      "frac_rows_gt_0.005": float(np.mean(~(ring <= 0.005)))},
        "taper_loss": ({"median": float(np.median(cat["gen_taper_loss"])),
                        "p99": float(np.percentile(cat["gen_taper_loss"], 99)),
                        "max": float(np.max(cat["gen_taper_loss"]))}
                       if "gen_taper_loss" in cat.colnames else None),
        "frac_rows_size_scaled": (float(np.mean(cat["gen_size_scaled"]))
                                  if "gen_size_scaled" in cat.colnames else 0.0),
        "negative_pixel_frac": float(np.mean(batch.images < 0)),
    }


def run_stage(stage, table, seed=7):
    from astrogen.stages.base import StageContext

    stage.setup(StageContext(name="gen", seed=seed, output_dir=OUT, work_dir=OUT))
    t0 = time.perf_counter()
    out = stage.process(table)
    return out, time.perf_counter() - t0


def explore(n_flow: int, n_ddpm: int, ddpm_steps: int) -> dict:
    """Outer-ring light and measured size vs the conditioned hlr (q not applied)."""
    from astrogen.models.ddpm_galaxy import load_ddpm
    from astrogen.models.flowvae import load_flowvae
    from astrogen.models.pretrained import resolve_model_path
    from astrogen.seeds import row_seeds
    from astrogen.stages.generated import measure_stamps, ring_fraction

    res = {}
    models = {"flowvae": (load_flowvae(resolve_model_path("flowvae_cosmos64", "flowvae")), n_flow),
              "ddpm": (load_ddpm(), n_ddpm)}
    for name, (model, n) in models.items():
        rows = []
        rng = np.random.default_rng(5)
        for h in (0.1, 0.15, 0.2, 0.3, 0.4, 0.6, 0.9):
            c = np.column_stack([rng.uniform(19, 25, n), np.full(n, h), rng.uniform(0.2, 2, n)])
            seeds = row_seeds(3, np.arange(n))
            if name == "ddpm":
                im = model.generate(c, seeds, sampler="ddim", num_steps=ddpm_steps, batch_size=32)
            else:
                im = model.generate(c, seeds, batch_size=64)
            r = ring_fraction(im)
            m = measure_stamps(im, 0.03)
            rows.append({"hlr_conditioned": h, "n": n,
                         "ring_median": float(np.nanmedian(r)),
                         "ring_p90": float(np.nanpercentile(r, 90)),
                         "hlr_measured_median": float(np.nanmedian(m["hlr"]))})
            print(name, rows[-1], flush=True)
        res[name] = rows
    return res


def figure(outputs: dict, rows, path: Path, n: int = 6) -> None:
    """The ``n`` largest galaxies (hlr / sqrt(q)) of the DDPM rows, every generator and mode,
    PSF-free, each stamp on its own pixel scale, log stretch (arcsinh) per panel."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    size = np.asarray(rows["hlr"]) / np.sqrt(np.asarray(rows["q"]))
    pick = np.argsort(size)[::-1][:n]
    names = list(outputs)
    fig, axes = plt.subplots(len(names), n, figsize=(2.0 * n, 2.1 * len(names)))
    for r, name in enumerate(names):
        out = outputs[name]
        for c, i in enumerate(pick):
            ax = axes[r, c]
            img = out.images[i]
            peak = max(float(np.abs(img).max()), 1e-30)
            half = 0.5 * img.shape[0] * out.pixel_scales[i]
            ax.imshow(np.arcsinh(img / (1e-3 * peak)), origin="lower", cmap="magma",
                      extent=[-half, half, -half, half])
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(f'hlr {rows["hlr"][i]:.2f}", q {rows["q"][i]:.2f}', fontsize=8)
            if c == 0:
                ax.set_ylabel(name.split(" (")[0].replace("generate ", "\n"), fontsize=7)
            ax.text(0.03, 0.03, f'{2 * half:.1f}"', color="w", fontsize=7,
                    transform=ax.transAxes)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> dict:
    from astrogen.catalog.cosmos import CosmosSampler
    from astrogen.stages.ddpm import DDPMGenerate
    from astrogen.stages.flowvae import FlowVAEGenerate
    from astrogen.stages.galsim_stages import ParametricGalaxies

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=1000)
    ap.add_argument("--ddpm-rows", type=int, default=200)
    ap.add_argument("--ddpm-steps", type=int, default=10)
    ap.add_argument("--no-explore", action="store_true")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)

    table = CosmosSampler().sample(2026, np.arange(args.rows))
    results = {"command": "python benchmarks/generator_accuracy.py " + " ".join(argv or []),
               "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
               "catalog": f"CosmosSampler().sample(2026, arange({args.rows}))",
               "generators": {}}
    runs = [
        ("galsim.parametric (sersic, 64 px)", lambda: ParametricGalaxies(), table),
        ("flowvae.generate before (max_native_hlr null, shape measure)",
         lambda: FlowVAEGenerate(out_of_range="clip", max_native_hlr=None, shape="measure",
                                 edge_taper=False),
         table),
        ("flowvae.generate after (defaults)", lambda: FlowVAEGenerate(out_of_range="clip"), table),
        (f"ddpm.generate DDIM-{args.ddpm_steps} before (max_native_hlr null, shape measure)",
         lambda: DDPMGenerate(out_of_range="clip", num_steps=args.ddpm_steps, batch_size=32,
                              max_native_hlr=None, shape="measure", edge_taper=False),
         table[:args.ddpm_rows]),
        (f"ddpm.generate DDIM-{args.ddpm_steps} after (defaults)",
         lambda: DDPMGenerate(out_of_range="clip", num_steps=args.ddpm_steps, batch_size=32),
         table[:args.ddpm_rows]),
    ]
    outputs = {}
    for name, make, rows in runs:
        out, seconds = run_stage(make(), rows)
        outputs[name] = out
        res = metrics(out, rows)
        res["seconds"] = seconds
        results["generators"][name] = res
        print(name, json.dumps(res), flush=True)
    figure(outputs, table[:args.ddpm_rows], args.out / "large_galaxies.png")
    if not args.no_explore:
        results["explore"] = explore(100, 24, args.ddpm_steps)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "generator_accuracy.json").write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()

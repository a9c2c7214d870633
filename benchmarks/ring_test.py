"""Ring test: does the simulator apply the requested shear exactly? (issue 12, item 3)

    python benchmarks/ring_test.py                          # 1,000 galaxies per generator
    python benchmarks/ring_test.py --n 200 --generators parametric,flowvae   # quicker
    python benchmarks/ring_test.py --ddpm-steps 25 --out some/folder

Writes ``results.json``, ``results.md`` and ``ring_test.png`` into ``--out`` (default
``benchmarks/results/ring_test``).

Method
------
Galaxies: ``--n`` rows of the COSMOS sampler (``astrogen.catalog.cosmos.CosmosSampler``,
the ``catalog.cosmos`` stage's sampler, full magnitude range), the same rows for every
generator. PSF-free stamps come from

* ``parametric``: the Sersic (or, with ``--parametric-profile bulge_disk``, bulge + disk)
  profile of ``galsim.parametric`` (:func:`astrogen.physics.render.galaxy_profile`)
  drawn with ``method='no_pixel'`` at 0.03"/pixel on the image size GalSim itself chooses
  for the profile (``getGoodImageSize``: the box holding ``1 - folding_threshold`` =
  99.5 % of the light), capped at ``--max-stamp`` pixels (the flux kept is recorded);
* ``flowvae``: the ``flowvae.generate`` stage (shipped ``flowvae_cosmos64``,
  ``out_of_range: clip``);
* ``ddpm``: the ``ddpm.generate`` stage (shipped ``ddpm_cosmos64``, DDIM with
  ``--ddpm-steps`` steps, ``out_of_range: clip``).

Each stamp is generated once and reused for the 2 ring orientations (the stamp array
rotated by 90 deg with ``numpy.rot90``, exact on the pixel grid) and the 4 shears
``|g| = --g`` at position angles 0, 45, 90, 135 deg. No noise anywhere.

Route under test (what ``observe`` and ``scene`` do): stamp -> ``galsim.InterpolatedImage``
(quintic x-interpolant, GalSim default padding and GSParams) ->
:func:`astrogen.physics.lensing.apply_lensing` -> convolved with the LSST i PSF
(``get_survey('lsst_i').psf``, Kolmogorov FWHM 0.79") -> ``drawImage(method='auto')`` at
0.2"/pixel (integrated over the LSST pixel).

Reference routes, which shear the same galaxy exactly up to numerical accuracy far below the
targets:

* ``stamp`` (every generator): the same stamp as a Lanczos-15 InterpolatedImage
  (a near-band-limited reconstruction of the samples) with ``pad_factor=8`` and tight
  GSParams (folding threshold 1e-3, k-value accuracy 1e-6, maxk threshold 1e-4), sheared,
  convolved and drawn on the same grid. The difference to the route under test is the
  pipeline's own error: interpolation of the stamp, its k-space table, FFT folding, pixel
  integration, as they act on the applied shear.
* ``analytic`` (parametric only): GalSim's analytic Sersic profile itself, sheared,
  convolved and drawn with the tight GSParams. This includes, in addition, the error of
  turning the profile into a stamp (sampling the cusp at 0.03", the stamp boundary), which
  changes the galaxy and hence the estimator's response even where the shear is applied
  exactly: it measures the fidelity of the parametric stamps, not of the shear.
  ``--integrated`` adds pixel-integrated stamps (the profile integrated over each 0.03"
  pixel by the midpoint rule on 5 x 5 sub-pixels; GalSim's exact ``method='auto'`` needs
  FFTs of tens of GB for the high-index profiles) compared with the analytic profile
  convolved with the 0.03" pixel.

Estimator: ``astrogen.physics.shear_measure.fixed_weight_ellipticity``, second moments
with a fixed round Gaussian weight centred on the stamp centre, of width
``sqrt(sigma_psf^2 + (hlr / 1.1774)^2)`` (the Gaussian-equivalent sigma of the galaxy
convolved with the PSF), the same for every image of a galaxy. Its response to shear is not
1 and need not be: ``m`` and ``c`` are those of the route under test relative to the
reference, ``s_test = (1 + m) s_ref + c R``, computed with the ring sums over all galaxies
(:func:`astrogen.physics.shear_measure.shear_bias`); uncertainties are bootstrap standard
deviations over galaxies. The 90-deg ring makes the unsheared ring average exactly zero for
this estimator, so the intrinsic shapes do not enter; the remaining uncertainty is the
galaxy-to-galaxy scatter of the simulator's error itself. ``--inject-m`` multiplies the shear
of the route under test by ``1 + inject_m`` to show that the measurement sees such a bias.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import galsim  # noqa: E402

from astrogen.catalog.cosmos import CosmosSampler  # noqa: E402
from astrogen.physics.lensing import apply_lensing  # noqa: E402
from astrogen.physics.psf import build_psf, psf_fwhm  # noqa: E402
from astrogen.physics.render import galaxy_profile  # noqa: E402
from astrogen.physics.shear_measure import (fixed_weight_ellipticity, ring_shears,  # noqa: E402
                                            shear_bias)
from astrogen.physics.surveys import get_survey  # noqa: E402
from astrogen.seeds import derive_seed  # noqa: E402

TIGHT = galsim.GSParams(folding_threshold=1e-3, kvalue_accuracy=1e-6, maxk_threshold=1e-4,
                        maximum_fft_size=32768)
TARGET_M, TARGET_C = 1e-3, 1e-4
GENERATORS = ("parametric", "flowvae", "ddpm")


# ------------------------------------------------------------------------ generation
def parametric_stamps(table, max_stamp: int, integrated: bool, profile: str = "sersic",
                      scale: float = 0.03):
    """Sersic stamps on GalSim's own image size (99.5 % of the light), capped at ``max_stamp``.

    Returns the point-sampled stamps (``method='no_pixel'``, what ``galsim.parametric``
    draws), the pixel-integrated stamps (5 x 5 sub-pixel midpoint rule; ``None`` unless
    ``integrated``), the pixel scales, the flux fraction kept by the no_pixel
    stamps and whether the stamp was capped.
    """
    integrated_on = integrated
    sampled, integrated, kept, capped = [], [], [], []
    for row in table:
        prof = galaxy_profile(row, 1.0, profile)
        n = prof.getGoodImageSize(scale)
        n += n % 2
        capped.append(n > max_stamp)
        n = min(n, max_stamp)
        img = prof.drawImage(nx=n, ny=n, scale=scale, method="no_pixel")
        sampled.append(img.array.astype(np.float64))
        kept.append(float(img.array.sum()))
        if integrated_on:  # pixel integral by the midpoint rule on 5 x 5 sub-pixels
            ss = 5
            fine = prof.drawImage(nx=n * ss, ny=n * ss, scale=scale / ss, method="no_pixel")
            integrated.append(fine.array.astype(np.float64).reshape(n, ss, n, ss).sum(axis=(1, 3)))
        else:
            integrated.append(None)
    return sampled, integrated, np.full(len(sampled), scale), np.array(kept), np.array(capped)


def model_stamps(kind: str, table, seed: int, ddpm_steps: int, chunk: int = 250):
    """Stamps of the flowvae.generate / ddpm.generate stage for ``table``."""
    from astrogen.stages.base import StageContext

    if kind == "flowvae":
        from astrogen.stages.flowvae import FlowVAEGenerate
        stage = FlowVAEGenerate(out_of_range="clip")
    else:
        from astrogen.stages.ddpm import DDPMGenerate
        stage = DDPMGenerate(sampler="ddim", num_steps=ddpm_steps, out_of_range="clip")
    tmp = Path(tempfile.mkdtemp(prefix="ring_test_"))
    stage.setup(StageContext(name=kind, seed=derive_seed(seed, kind), output_dir=tmp,
                             work_dir=tmp))
    stamps, scales = [], []
    for start in range(0, len(table), chunk):
        batch = stage.process(table[start:start + chunk])
        stamps.extend(np.asarray(im, np.float64) for im in batch.images)
        ps = getattr(batch, "pixel_scales", None)
        scales.extend(np.broadcast_to(ps if ps is not None else batch.pixel_scale, (len(batch),)))
    return stamps, np.asarray(scales, float)


# ------------------------------------------------------------------------ drawing
def _draw(obj, psf, shears, n_out, out_scale, inject_m=0.0, gsparams=None):
    """Images (4, n_out, n_out) of ``obj`` sheared by each shear, convolved, pixelised."""
    out = np.empty((len(shears), n_out, n_out))
    for j, (g1, g2) in enumerate(shears):
        lensed = apply_lensing(obj, g1 * (1 + inject_m), g2 * (1 + inject_m), 0.0)
        conv = galsim.Convolve(lensed, psf, gsparams=gsparams)
        out[j] = conv.drawImage(nx=n_out, ny=n_out, scale=out_scale, method="auto").array
    return out


def _pipeline_obj(arr, scale):
    """What observe does with a PSF-free stamp: quintic InterpolatedImage, default GSParams."""
    return galsim.InterpolatedImage(galsim.Image(arr, scale=scale), flux=1.0,
                                    x_interpolant="quintic")


def _reference_obj(arr, scale):
    """The same samples, reconstructed more accurately (Lanczos-15, pad 8, tight GSParams)."""
    return galsim.InterpolatedImage(galsim.Image(arr, scale=scale), flux=1.0,
                                    x_interpolant=galsim.Lanczos(15), pad_factor=8,
                                    gsparams=TIGHT)


def ring_one(stamps: dict, scale, row, shears, psf, fwhm, out_scale, analytic: dict,
             inject_m=0.0):
    """Ellipticities (n_rot=2, 4, 2) of every route for one galaxy.

    ``stamps``: name -> PSF-free stamp of a route under test (each also gets its ``stamp``
    reference, key ``<name>|stamp``); ``analytic``: key -> (test name, analytic GSObject)
    for analytic references (key ``<name>|<key>``). Test routes are keyed ``<name>|test``.
    """
    n_stamp = max(a.shape[0] for a in stamps.values())
    extent = n_stamp * scale + 4 * fwhm
    n_out = int(np.ceil(extent / out_scale)) + 8
    n_out += n_out % 2
    sigma_w = np.hypot(fwhm / 2.3548, float(row["hlr"]) / 1.1774) / out_scale
    res: dict[str, list] = {}
    for rot in (0, 1):
        for name, stamp in stamps.items():
            arr = np.ascontiguousarray(np.rot90(stamp, rot))
            res.setdefault(f"{name}|test", []).append(
                _draw(_pipeline_obj(arr, scale), psf, shears, n_out, out_scale, inject_m))
            res.setdefault(f"{name}|stamp", []).append(
                _draw(_reference_obj(arr, scale), psf, shears, n_out, out_scale,
                      gsparams=TIGHT))
        for key, (name, prof) in analytic.items():
            p = prof.withGSParams(TIGHT).rotate(90 * rot * galsim.degrees)
            res.setdefault(f"{name}|{key}", []).append(
                _draw(p, psf, shears, n_out, out_scale, gsparams=TIGHT))
    return {k: fixed_weight_ellipticity(np.concatenate(v), sigma_w).reshape(2, 4, 2)
            for k, v in res.items()}


# ------------------------------------------------------------------------ main
#: comparisons reported per generator: (test route, reference route, label)
COMPARISONS = {
    "parametric": [("sampled", "stamp", "same stamp, Lanczos-15 reference"),
                   ("sampled", "analytic", "analytic Sersic"),
                   ("integrated", "stamp", "same stamp, Lanczos-15 reference"),
                   ("integrated", "analytic_pixel", "analytic Sersic * 0.03\" pixel")],
    "flowvae": [("model", "stamp", "same stamp, Lanczos-15 reference")],
    "ddpm": [("model", "stamp", "same stamp, Lanczos-15 reference")],
}
ROUTE_NAMES = {"sampled": "point-sampled stamps (galsim.parametric today)",
               "integrated": "pixel-integrated stamps", "model": "generated stamps"}


def run(args) -> dict:
    survey = get_survey("lsst_i")
    psf = build_psf(survey.psf)
    fwhm = psf_fwhm(psf)
    shears = ring_shears(args.g)
    sampler = CosmosSampler()
    table = sampler.sample(derive_seed(args.seed, "catalog"), np.arange(args.n))
    results = {"config": vars(args) | {"survey": "lsst_i", "psf": survey.psf,
                                       "psf_fwhm_arcsec": fwhm, "shears": shears.tolist()},
               "generators": {}}
    for kind in args.generators:
        t0 = time.perf_counter()
        entry = {}
        if kind == "parametric":
            sampled, integrated, scales, kept, capped = parametric_stamps(
                table, args.max_stamp, args.integrated, args.parametric_profile)
            per_row = [{"sampled": a} | ({"integrated": b} if b is not None else {})
                       for a, b in zip(sampled, integrated)]
            sizes = [a.shape[0] for a in sampled]
            entry.update({"flux_kept_min": float(kept.min()),
                          "flux_kept_p0.1": float(np.percentile(kept, 0.1)),
                          "n_capped": int(capped.sum())})
        else:
            stamps, scales = model_stamps(kind, table, args.seed, args.ddpm_steps)
            per_row = [{"model": a} for a in stamps]
            sizes = [a.shape[0] for a in stamps]
            capped = np.zeros(len(stamps), bool)
        t_gen = time.perf_counter() - t0
        t0 = time.perf_counter()
        e: dict[str, list] = {}
        used = []
        for i, row in enumerate(table):
            if not all(a.sum() > 0 for a in per_row[i].values()):
                continue
            analytic = {}
            if kind == "parametric":
                prof = galaxy_profile(row, 1.0, args.parametric_profile)
                analytic["analytic"] = ("sampled", prof)
                if args.integrated:
                    analytic["analytic_pixel"] = ("integrated",
                                                  galsim.Convolve(prof, galsim.Pixel(0.03)))
            r = ring_one(per_row[i], float(scales[i]), row, shears, psf, fwhm,
                         survey.pixel_scale, analytic, inject_m=args.inject_m)
            used.append(i)
            for k in set(e) | set(r):
                e.setdefault(k, [np.full((2, 4, 2), np.nan)] * (len(used) - 1))
                e[k].append(r.get(k, np.full((2, 4, 2), np.nan)))
        t_draw = time.perf_counter() - t0
        e = {k: np.array(v) for k, v in e.items()}
        entry.update({"n_galaxies": len(used), "skipped_empty": len(table) - len(used),
                      "generate_s": round(t_gen, 2), "draw_and_measure_s": round(t_draw, 2),
                      "stamp_sizes_pix": [int(min(sizes)), int(max(sizes))],
                      "pixel_scales_arcsec": [float(scales.min()), float(scales.max())]})
        if kind == "parametric":
            entry["profile"] = args.parametric_profile
        if kind == "ddpm":
            entry["ddpm_sampler"] = f"ddim, {args.ddpm_steps} steps"
        entry["comparisons"] = []
        for test, ref, label in COMPARISONS[kind]:
            if f"{test}|test" not in e:
                continue
            et, er = e[f"{test}|test"], e[f"{test}|{ref}"]
            ok = np.all(np.isfinite(et), axis=(1, 2, 3)) & np.all(np.isfinite(er), axis=(1, 2, 3))
            b = shear_bias(et[ok], er[ok], shears, n_boot=args.n_boot,
                           seed=derive_seed(args.seed, kind, test, ref) % 2**32)
            b["passes"] = bool(abs(b["m1"]) <= TARGET_M and abs(b["m2"]) <= TARGET_M
                               and abs(b["c1"]) <= TARGET_C and abs(b["c2"]) <= TARGET_C)
            if kind == "parametric" and args.parametric_profile != "sersic":
                label = label.replace("Sersic", "bulge+disk")
            b.update({"test": ROUTE_NAMES[test], "reference": label})
            entry["comparisons"].append(b)
        results["generators"][kind] = entry
        (args.out / "results.partial.json").write_text(json.dumps(results, indent=1,
                                                                  default=str) + "\n")
        np.savez_compressed(args.out / f"ellipticities_{kind}.npz",
                            **{k.replace("|", "__"): v for k, v in e.items()},
                            row_index=np.array(used))
        print(f"{kind}: {json.dumps(entry, default=str)}", flush=True)
    return results


def write_md(results: dict, path: Path) -> None:
    cfg = results["config"]
    lines = [f"# Ring test, |g| = {cfg['g']}, 4 directions x 2 rotations, noiseless, "
             f"LSST i PSF ({cfg['psf']['type']} FWHM {cfg['psf_fwhm_arcsec']:.3f}\"), 0.2\"/pix",
             "", "`python benchmarks/ring_test.py " + " ".join(cfg["argv"]) + "`", "",
             "| generator | route under test | reference | n | m1 | m2 | c1 | c2 "
             "| within targets |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for kind, entry in results["generators"].items():
        name = kind + (f" ({entry['ddpm_sampler']})" if "ddpm_sampler" in entry else "")
        name += f" ({entry['profile']})" if "profile" in entry else ""
        for b in entry["comparisons"]:
            cells = [f"{b[q]:+.1e} +- {b['sigma_' + q]:.1e}" for q in ("m1", "m2", "c1", "c2")]
            lines.append(f"| {name} | {b['test']} | {b['reference']} | {b['n_gal']} | "
                         + " | ".join(cells) + f" | {'yes' if b['passes'] else 'NO'} |")
    lines += ["", f"Targets: |m| <= {TARGET_M:g}, |c| <= {TARGET_C:g}. Uncertainties: bootstrap "
              "standard deviation over galaxies. Method: docstring of benchmarks/ring_test.py."]
    path.write_text("\n".join(lines) + "\n")


def plot(results: dict, out: Path) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    labels, k = [], 0
    for kind, entry in results["generators"].items():
        for b in entry["comparisons"]:
            for ax, q, target in ((axes[0], "m", TARGET_M), (axes[1], "c", TARGET_C)):
                for comp, dx, col in ((1, -0.1, "C0"), (2, 0.1, "C1")):
                    ax.errorbar(k + dx, b[f"{q}{comp}"], yerr=b[f"sigma_{q}{comp}"], fmt="o",
                                color=col, label=f"{q}{comp}" if k == 0 else None)
            test = {"generated stamps": "", "point-sampled stamps (galsim.parametric today)":
                    "\npoint-sampled", "pixel-integrated stamps": "\npixel-integrated"}[b["test"]]
            ref = b["reference"].split(",")[0].replace(" Sersic", "").replace(" bulge+disk", "")
            labels.append(f"{kind}{test}\nvs {ref}")
            k += 1
    for ax, q, target in ((axes[0], "m", TARGET_M), (axes[1], "c", TARGET_C)):
        ax.axhspan(-target, target, color="0.9", zorder=0, label="target")
        ax.axhline(0, color="k", lw=0.5)
        ax.set_yscale("symlog", linthresh=target / (1e3 if q == "m" else 1e5))
        ax.set_xticks(range(k), labels, fontsize=7)
        ax.set_ylabel(f"{q} (test route vs reference)")
        ax.legend(fontsize=8)
    fig.suptitle(f"Ring test, |g| = {results['config']['g']}, LSST i PSF, noiseless")
    fig.tight_layout()
    path = out / "ring_test.png"
    fig.savefig(path, dpi=110)
    return path


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000, help="galaxies per generator")
    ap.add_argument("--generators", default=",".join(GENERATORS))
    ap.add_argument("--g", type=float, default=0.02, help="|g| of the applied reduced shear")
    ap.add_argument("--ddpm-steps", type=int, default=10, help="DDIM steps of ddpm.generate")
    ap.add_argument("--max-stamp", type=int, default=256,
                    help="largest parametric stamp side (pixels of 0.03\")")
    ap.add_argument("--parametric-profile", default="sersic", choices=("sersic", "bulge_disk"),
                    help="profile of the parametric generator (galsim.parametric's profile)")
    ap.add_argument("--integrated", action="store_true",
                    help="also test pixel-integrated parametric stamps (5x5 sub-pixels)")
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--inject-m", type=float, default=0.0,
                    help="multiply the tested route's shear by 1 + this (sensitivity check)")
    ap.add_argument("--seed", type=int, default=12)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "ring_test")
    argv = sys.argv[1:] if argv is None else list(argv)
    args = ap.parse_args(argv)
    args.generators = [g.strip() for g in args.generators.split(",") if g.strip()]
    for g in args.generators:
        if g not in GENERATORS:
            ap.error(f"--generators: unknown generator {g!r} (choose from {GENERATORS})")
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    results = run(args)
    results["config"]["out"] = str(args.out)
    results["config"]["argv"] = argv
    results["wall_s"] = round(time.perf_counter() - t0, 1)
    results["machine"] = {"python": platform.python_version(), "galsim": galsim.__version__,
                          "cpus": os.cpu_count()}
    (args.out / "results.json").write_text(json.dumps(results, indent=1, default=str) + "\n")
    (args.out / "results.partial.json").unlink(missing_ok=True)
    write_md(results, args.out / "results.md")
    plot(results, args.out)
    print((args.out / "results.md").read_text())


if __name__ == "__main__":
    main()

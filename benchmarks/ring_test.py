"""Ring test: does the simulator apply the requested shear exactly? (issue 12, item 3)

    python benchmarks/ring_test.py                          # 1,000 galaxies per generator
    python benchmarks/ring_test.py --n 200 --generators parametric,flowvae   # quicker
    python benchmarks/ring_test.py --ddpm-steps 25 --out some/folder
    python benchmarks/ring_test.py --generators parametric --parametric-profile bulge_disk \
        --out benchmarks/results/ring_test/bulge_disk

Writes ``results.json``, ``results.md`` and ``ring_test.png`` into ``--out`` (default
``benchmarks/results/ring_test``).

Method
------
Galaxies: ``--n`` rows of the COSMOS sampler (``astrogen.catalog.cosmos.CosmosSampler``,
the ``catalog.cosmos`` stage's sampler, full magnitude range), the same rows for every
generator, each generated once by the generator's own stage:

* ``parametric``: the ``galsim.parametric`` stage (``--parametric-profile`` sersic or
  bulge_disk), whose batch carries the exact GalSim profiles;
* ``flowvae``: the ``flowvae.generate`` stage (shipped ``flowvae_cosmos64``,
  ``out_of_range: clip``);
* ``ddpm``: the ``ddpm.generate`` stage (shipped ``ddpm_cosmos64``, DDIM with
  ``--ddpm-steps`` steps, ``out_of_range: clip``).

Each galaxy is put in a ring batch of 8 rows (:func:`ring_batch`): 2 orientations (the
stamp rotated by 90 deg with ``numpy.rot90``, exact on the pixel grid, and for parametric
rows the catalog position angles ``beta`` (``beta_bulge``, ``beta_disk``) + 90 deg, which is
what the exact profile is rebuilt from) x 4 reduced shears ``|g| = --g`` at position angles
0, 45, 90, 135 deg, written into the catalog columns ``g1``, ``g2`` (``kappa`` = 0). No noise.

Route under test: the ``observe`` stage itself (``astrogen.stages.galsim_stages.Observe``,
survey ``lsst_i``, ``add_noise: false``, ``stamp_size`` = the common grid of the galaxy)
run on the ring batch: :meth:`Observe.observed_objects` (the exact profile of a
``galsim.parametric`` row, a quintic InterpolatedImage of a generated stamp at its own pixel
scale; :func:`astrogen.physics.lensing.apply_lensing`; the LSST i PSF, Kolmogorov FWHM
0.79") drawn by :func:`astrogen.physics.observe.draw_observed_objects` (``method='auto'``,
0.2"/pixel, float32). The benchmark cannot drift from the pipeline: it calls it
(``tests/physics/test_shear_measure.py`` checks the images equal ``observe``'s for the same
rows in an ordinary batch).

Reference routes, which shear the same galaxy exactly up to numerical accuracy far below the
targets, drawn on the same grid in float64:

* ``analytic`` (parametric): GalSim's analytic profile of the row
  (:func:`astrogen.physics.render.galaxy_profile`) rotated by 0 / 90 deg, lensed by
  ``apply_lensing``, convolved with the PSF under tight GSParams (folding threshold 1e-3,
  k-value accuracy 1e-6, maxk threshold 1e-4). The difference to the route under test is
  the pipeline's own numerical error (its default GSParams: k-space tables, FFT folding,
  pixel integration) as it acts on the applied shear.
* ``stamp`` (generated stamps): the same stamp as a Lanczos-15 InterpolatedImage
  (a near-band-limited reconstruction of the samples) with ``pad_factor=8`` and the tight
  GSParams, sheared, convolved and drawn on the same grid. The difference is the pipeline's
  own error: quintic interpolation of the stamp, its k-space table, FFT folding, pixel
  integration, as they act on the applied shear.

Estimator: ``astrogen.physics.shear_measure.fixed_weight_ellipticity``, second moments
with a fixed round Gaussian weight centred on the stamp centre, of width
``sqrt(sigma_psf^2 + (hlr / 1.1774)^2)`` (the Gaussian-equivalent sigma of the galaxy
convolved with the PSF), the same for every image of a galaxy (flux units cancel: observe
draws e-, the references unit flux). Its response to shear is not
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
def _setup(stage, name: str, seed: int):
    from astrogen.stages.base import StageContext

    tmp = Path(tempfile.mkdtemp(prefix="ring_test_"))
    stage.setup(StageContext(name=name, seed=derive_seed(seed, name), output_dir=tmp,
                             work_dir=tmp))
    return stage


def generate(kind: str, table, seed: int, ddpm_steps: int, profile: str = "sersic",
             chunk: int = 250):
    """PSF-free StampBatches of the generator's own stage for ``table`` (one per chunk)."""
    if kind == "parametric":
        from astrogen.stages.galsim_stages import ParametricGalaxies
        stage = ParametricGalaxies(profile=profile)
    elif kind == "flowvae":
        from astrogen.stages.flowvae import FlowVAEGenerate
        stage = FlowVAEGenerate(out_of_range="clip")
    else:
        from astrogen.stages.ddpm import DDPMGenerate
        stage = DDPMGenerate(sampler="ddim", num_steps=ddpm_steps, out_of_range="clip")
    _setup(stage, kind, seed)
    return [stage.process(table[start:start + chunk]) for start in range(0, len(table), chunk)]


BETA_COLUMNS = ("beta", "beta_bulge", "beta_disk")


def ring_batch(batch, i: int, shears, inject_m: float = 0.0):
    """The 8-row ring batch of row ``i``: orientations 0 / 90 deg x the 4 ``shears``.

    Row ``4 * rot + j`` is row ``i`` with its stamp rotated by ``90 * rot`` deg
    (``numpy.rot90``), its position angles ``beta*`` + ``90 * rot`` deg (what a
    ``galsim.parametric`` row's exact profile is rebuilt from) and catalog shear
    ``(1 + inject_m) * shears[j]`` in ``g1``, ``g2`` (``kappa`` 0). Everything else (flux
    columns, pixel scale, meta) is the generator's.
    """
    from astrogen.batch import StampBatch

    shears = np.asarray(shears, float)
    rows = batch.catalog[[i] * (2 * len(shears))]
    stamp = batch.stamp(i)
    images = []
    for rot in (0, 1):
        images += [np.ascontiguousarray(np.rot90(stamp, rot))] * len(shears)
    for c in BETA_COLUMNS:
        if c in rows.colnames:
            rows[c] = np.asarray(rows[c], float) + np.repeat([0.0, 90.0], len(shears))
    g = np.tile(shears * (1.0 + inject_m), (2, 1))
    rows["g1"], rows["g2"], rows["kappa"] = g[:, 0], g[:, 1], np.zeros(len(g))
    return StampBatch(images=images, pixel_scale=float(batch.pixel_scales[i]), catalog=rows,
                      flux_unit=batch.flux_unit, zero_point=batch.zero_point, psf=batch.psf,
                      band=batch.band, meta=dict(batch.meta))


def observe_ring(batch, i: int, shears, n_out: int, survey: str = "lsst_i",
                 inject_m: float = 0.0) -> np.ndarray:
    """Images (2, 4, n_out, n_out) [e-] of row ``i``'s ring drawn by the ``observe`` stage
    itself (noiseless, ``stamp_size: n_out``); ``None`` where observe has nothing to draw."""
    from astrogen.stages.galsim_stages import Observe

    ring = ring_batch(batch, i, shears, inject_m)
    stage = Observe(survey=survey, stamp_size=n_out, add_noise=False)
    if any(o is None for o in stage.observed_objects(ring)):
        return None
    out = stage.process(ring)
    return np.stack([out.stamp(k) for k in range(len(out))]).astype(np.float64).reshape(
        2, len(shears), n_out, n_out)


# ------------------------------------------------------------------------ drawing
def _draw(obj, psf, shears, n_out, out_scale, gsparams=None):
    """Images (4, n_out, n_out) of ``obj`` sheared by each shear, convolved, pixelised."""
    out = np.empty((len(shears), n_out, n_out))
    for j, (g1, g2) in enumerate(shears):
        lensed = apply_lensing(obj, g1, g2, 0.0)
        conv = galsim.Convolve(lensed, psf, gsparams=gsparams)
        out[j] = conv.drawImage(nx=n_out, ny=n_out, scale=out_scale, method="auto").array
    return out


def _reference_obj(arr, scale):
    """The same samples, reconstructed more accurately (Lanczos-15, pad 8, tight GSParams)."""
    return galsim.InterpolatedImage(galsim.Image(arr, scale=scale), flux=1.0,
                                    x_interpolant=galsim.Lanczos(15), pad_factor=8,
                                    gsparams=TIGHT)


def grid_size(stamp_extent: float, fwhm: float, out_scale: float) -> int:
    """Common output grid side (even, survey pixels): the stamp's extent [arcsec] + 4 PSF
    FWHM + 8 pixels."""
    n_out = int(np.ceil((stamp_extent + 4 * fwhm) / out_scale)) + 8
    return n_out + n_out % 2


def ring_one(batch, i: int, kind: str, profile: str, shears, psf, fwhm, out_scale,
             inject_m=0.0):
    """Ellipticities {"test": (2, 4, 2), "<reference>": (2, 4, 2)} of row ``i``, or None."""
    row = batch.catalog[i]
    stamp = batch.stamp(i).astype(np.float64)
    scale = float(batch.pixel_scales[i])
    n_out = grid_size(max(stamp.shape) * scale, fwhm, out_scale)
    sigma_w = np.hypot(fwhm / 2.3548, float(row["hlr"]) / 1.1774) / out_scale
    test = observe_ring(batch, i, shears, n_out, inject_m=inject_m)
    if test is None:
        return None
    refs = []
    for rot in (0, 1):
        if kind == "parametric":
            prof = galaxy_profile(row, 1.0, profile).withGSParams(TIGHT)
            obj = prof.rotate(90 * rot * galsim.degrees)
        else:
            obj = _reference_obj(np.ascontiguousarray(np.rot90(stamp, rot)), scale)
        refs.append(_draw(obj, psf, shears, n_out, out_scale, gsparams=TIGHT))
    ref_name = "analytic" if kind == "parametric" else "stamp"
    return {"test": fixed_weight_ellipticity(test.reshape(-1, n_out, n_out),
                                             sigma_w).reshape(2, 4, 2),
            ref_name: fixed_weight_ellipticity(np.concatenate(refs), sigma_w).reshape(2, 4, 2)}


# ------------------------------------------------------------------------ main
#: comparison reported per generator: (reference route, label of the tested route, label)
COMPARISONS = {
    "parametric": ("analytic", "observe: exact GalSim profile (galsim.parametric batch)",
                   "analytic profile, tight GSParams"),
    "flowvae": ("stamp", "observe: quintic InterpolatedImage of the generated stamp",
                "same stamp, Lanczos-15, pad 8, tight GSParams"),
    "ddpm": ("stamp", "observe: quintic InterpolatedImage of the generated stamp",
             "same stamp, Lanczos-15, pad 8, tight GSParams"),
}


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
        batches = generate(kind, table, args.seed, args.ddpm_steps, args.parametric_profile)
        t_gen = time.perf_counter() - t0
        t0 = time.perf_counter()
        ref_name, test_label, ref_label = COMPARISONS[kind]
        et, er, used, sizes, scales = [], [], [], [], []
        k0 = 0
        for batch in batches:
            for i in range(len(batch)):
                r = ring_one(batch, i, kind, args.parametric_profile, shears, psf, fwhm,
                             survey.pixel_scale, args.inject_m)
                if r is not None:
                    et.append(r["test"])
                    er.append(r[ref_name])
                    used.append(k0 + i)
                    sizes.append(max(batch.stamp(i).shape))
                    scales.append(float(batch.pixel_scales[i]))
            k0 += len(batch)
        t_draw = time.perf_counter() - t0
        et, er, scales = np.array(et), np.array(er), np.array(scales)
        entry = {"n_galaxies": len(used), "skipped_empty": len(table) - len(used),
                 "generate_s": round(t_gen, 2), "draw_and_measure_s": round(t_draw, 2),
                 "stamp_sizes_pix": [int(min(sizes)), int(max(sizes))],
                 "pixel_scales_arcsec": [float(scales.min()), float(scales.max())]}
        if kind == "parametric":
            entry["profile"] = args.parametric_profile
        if kind == "ddpm":
            entry["ddpm_sampler"] = f"ddim, {args.ddpm_steps} steps"
        ok = np.all(np.isfinite(et), axis=(1, 2, 3)) & np.all(np.isfinite(er), axis=(1, 2, 3))
        b = shear_bias(et[ok], er[ok], shears, n_boot=args.n_boot,
                       seed=derive_seed(args.seed, kind, "test", ref_name) % 2**32)
        b["passes"] = bool(abs(b["m1"]) <= TARGET_M and abs(b["m2"]) <= TARGET_M
                           and abs(b["c1"]) <= TARGET_C and abs(b["c2"]) <= TARGET_C)
        b.update({"test": test_label, "reference": ref_label})
        entry["comparisons"] = [b]
        results["generators"][kind] = entry
        (args.out / "results.partial.json").write_text(json.dumps(results, indent=1,
                                                                  default=str) + "\n")
        np.savez_compressed(args.out / f"ellipticities_{kind}.npz", test=et,
                            **{ref_name: er}, row_index=np.array(used))
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
            ref = b["reference"].split(",")[0]
            name = kind + (f" ({entry['profile']})" if "profile" in entry else "")
            labels.append(f"{name}\nobserve vs {ref}")
            k += 1
    for ax, q, target in ((axes[0], "m", TARGET_M), (axes[1], "c", TARGET_C)):
        ax.axhspan(-target, target, color="0.9", zorder=0, label="target")
        ax.axhline(0, color="k", lw=0.5)
        ax.set_yscale("symlog", linthresh=target / (1e3 if q == "m" else 1e5))
        ax.set_xticks(range(k), labels, fontsize=7)
        ax.set_xlim(-0.5, k - 0.5)
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
    ap.add_argument("--parametric-profile", default="sersic", choices=("sersic", "bulge_disk"),
                    help="profile of the parametric generator (galsim.parametric's profile)")
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--inject-m", type=float, default=0.0,
                    help="multiply the catalog shear given to observe by 1 + this "
                         "(sensitivity check)")
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

"""Checks of the showcase pipeline's images: stars PSF-shaped, no negative light, crops to look at.

Runs ``pipelines/lsst_euclid_lensing.yaml`` (or reads an existing output folder) and, for the
parametric and the FlowVAE LSST i scenes (NOISELESS HDU):

* **Stars are the PSF.** For each of the ``--n-stars`` brightest stars, the band's PSF with the
  star's catalog flux is drawn at its catalog position (GalSim, as ``scene`` does) and
  compared in a 15 x 15 pixel window: ``resid`` = sum |scene - PSF model| / star flux in the
  window. Neighbouring galaxies' light counts as residual, so it is an upper bound.
* **Negative light.** Minimum pixel of the noiseless image in units of the noise sigma
  (std of image - noiseless).
* **Wings of the largest galaxy.** Noiseless profile (in noise sigma per pixel) along both
  directions of the minor axis (``beta + 90 deg``) of the largest galaxy, every 3 pixels out
  to 57 pixels: where a generator's field ends, its wings end.
* **Crops.** Log-stretch (6 decades below each crop's peak) crops, 100 x 100 survey pixels at
  3x, around the 4 largest (hlr) and 4 brightest galaxies and the 4 brightest stars, and the
  same crops in units of the noise sigma (-0.05 .. +0.05 sigma, where box edges would show),
  written as PNGs beside ``check.json`` for a person to look at (parts of a crop beyond the
  image are 0: black in the log stretch, mid-grey in the sigma one).

Usage::

    python benchmarks/lsst_euclid_lensing_check.py                      # runs the pipeline (~75 s)
    python benchmarks/lsst_euclid_lensing_check.py --output /tmp/out    # an existing run
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import galsim
import numpy as np
from astropy.io import fits
from astropy.table import Table
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "lsst_euclid_lensing"
SCENES = {"parametric": "scene_lsst_i.fits", "flowvae": "scene_flowvae_lsst_i.fits"}


def star_residuals(image, truth, n_stars, half=7):
    from astrogen.physics.surveys import get_bands
    from astrogen.stages.galsim_stages import Scene

    band = get_bands("lsst_i", None)[0]
    psf = Scene(survey="lsst_i", preview=None).psfs["lsst_i"][1]
    stars = truth[np.asarray(truth["is_star"], bool)]
    stars = stars[np.argsort(np.asarray(stars["mag_lsst_i"]))][:n_stars]
    ny, nx = image.shape
    out = []
    for r in stars:
        x, y = float(r["x"]), float(r["y"])
        ix, iy = int(np.floor(x + 0.5)), int(np.floor(y + 0.5))
        if not (half < ix <= nx - half and half < iy <= ny - half):
            continue  # window off the image
        flux = float(band.electrons(np.array([float(r["mag_lsst_i"])]))[0])
        b = galsim.BoundsI(ix - half, ix + half, iy - half, iy + half)
        model = psf.withFlux(flux).drawImage(galsim.ImageF(b, scale=band.pixel_scale),
                                             center=galsim.PositionD(x, y)).array
        cut = image[iy - half - 1:iy + half, ix - half - 1:ix + half]
        out.append({"mag_lsst_i": float(r["mag_lsst_i"]), "x": x, "y": y,
                    "flux_in_window_over_model": float(cut.sum() / model.sum()),
                    "resid": float(np.abs(cut - model).sum() / model.sum())})
    return out


def minor_axis_profile(image, sigma, row, step=3, n=20):
    """Noiseless image / sigma along +-(beta + 90 deg) from the row's centre, shape (2, n)."""
    from scipy import ndimage

    x0, y0 = float(row["x"]) - 1.0, float(row["y"]) - 1.0
    r = np.arange(n) * step
    out = []
    for sign in (1.0, -1.0):
        a = np.radians(float(row["beta"]) + 90.0)
        out.append(ndimage.map_coordinates(image, [y0 + sign * r * np.sin(a),
                                                   x0 + sign * r * np.cos(a)], order=1) / sigma)
    return r, np.array(out)


def crops(image, sigma, rows, path, half=50, zoom=3, decades=6):
    tiles, tiles_sig = [], []
    for r in rows:
        x, y = int(round(float(r["x"]))) - 1, int(round(float(r["y"]))) - 1
        c = np.zeros((2 * half, 2 * half))
        y0, x0 = max(y - half, 0), max(x - half, 0)
        part = image[y0:y + half, x0:x + half]
        c[y0 - (y - half):y0 - (y - half) + part.shape[0],
          x0 - (x - half):x0 - (x - half) + part.shape[1]] = part
        v = np.log10(np.clip(c / c.max(), 10.0 ** -decades, None)) / decades + 1
        tiles.append((np.clip(v, 0, 1) * 255).astype(np.uint8)[::-1])
        s = np.clip(c / sigma, -0.05, 0.05)
        tiles_sig.append(((s + 0.05) / 0.1 * 255).astype(np.uint8)[::-1])
    for t, suffix in ((tiles, "log6"), (tiles_sig, "sigma005")):
        a = np.concatenate(t, axis=1)
        Image.fromarray(a).resize((a.shape[1] * zoom, a.shape[0] * zoom),
                                  Image.NEAREST).save(f"{path}_{suffix}.png")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--output", help="existing output folder of the pipeline (default: run it)")
    ap.add_argument("--n-stars", type=int, default=6)
    ap.add_argument("--run-dir", default="/tmp/lsst_euclid_lensing_run",
                    help="where the pipeline writes when it is run (FITS, not committed)")
    ap.add_argument("--results", default=str(RESULTS))
    args = ap.parse_args(argv)
    res_dir = Path(args.results)
    res_dir.mkdir(parents=True, exist_ok=True)
    report = {}
    if args.output is None:
        out = Path(args.run_dir)
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "astrogen.cli", "run",
                        str(ROOT / "pipelines" / "lsst_euclid_lensing.yaml"), f"output={out}",
                        "--no-progress"], check=True)
        report["pipeline_wall_s"] = time.perf_counter() - t0
    else:
        out = Path(args.output)
    truth = Table.read(out / "truth_catalog.fits")
    gal = truth[~np.asarray(truth["is_star"], bool)]
    st = truth[np.asarray(truth["is_star"], bool)]
    groups = {"largest": gal[np.argsort(-np.asarray(gal["hlr"]))[:4]],
              "brightest": gal[np.argsort(np.asarray(gal["mag_lsst_i"]))[:4]],
              "stars": st[np.argsort(np.asarray(st["mag_lsst_i"]))[:4]]}
    for name, fname in SCENES.items():
        with fits.open(out / fname) as h:
            noisy = h[0].data.astype(np.float64)
            clean = h["NOISELESS"].data.astype(np.float64)
        sigma = float(np.std(noisy - clean))
        stars = star_residuals(clean, truth, args.n_stars)
        report[name] = {"file": fname, "noise_sigma_e": sigma,
                        "noiseless_min_over_sigma": float(clean.min() / sigma),
                        "n_negative_pixels": int((clean < 0).sum()),
                        "stars": stars,
                        "star_resid_median": float(np.median([s["resid"] for s in stars])),
                        "crops": {g: [int(r["row_id"]) for r in rows]
                                  for g, rows in groups.items()}}
        r, prof = minor_axis_profile(clean, sigma, groups["largest"][0])
        report[name]["largest_minor_axis_profile"] = {
            "row_id": int(groups["largest"][0]["row_id"]),
            "hlr_arcsec": float(groups["largest"][0]["hlr"]),
            "radius_pix": r.tolist(), "plus_sigma": prof[0].round(4).tolist(),
            "minus_sigma": prof[1].round(4).tolist()}
        for g, rows in groups.items():
            crops(clean, sigma, rows, str(res_dir / f"{name}_{g}"))
    (res_dir / "check.json").write_text(json.dumps(report, indent=1))
    for name in SCENES:
        r = report[name]
        print(f"{name}: star resid median {r['star_resid_median']:.4f} "
              f"({len(r['stars'])} stars), noiseless min {r['noiseless_min_over_sigma']:.2e} "
              f"sigma ({r['n_negative_pixels']} negative pixels)")
        p = r["largest_minor_axis_profile"]
        print(f"  largest galaxy (row {p['row_id']}, hlr {p['hlr_arcsec']:.2f}\") minor axis, "
              f"sigma/pixel at {p['radius_pix'][7:13]} pix: {p['minus_sigma'][7:13]}")
    if "pipeline_wall_s" in report:
        print(f"pipeline wall time {report['pipeline_wall_s']:.1f} s")


if __name__ == "__main__":
    main()

"""COSMOS sampler with and without ``mag_range``: size and redshift at fixed magnitude.

Measures the median half-light radius and redshift of galaxies with 23 < I < 24 (and with
23 < I < 23.5, a bin inside every range) over ``--n`` draws, for the full range and the
ranges the shipped configs use, with the sampler of this checkout ("after") and the sampler
of a git reference ("before", default ``main``: its ``astrogen/catalog/cosmos.py`` loaded
from ``git show``). Also the two-sample KS p-value of hlr and z in the bin, range vs full.

    python benchmarks/cosmos_mag_range.py                 # 20,000 draws, ~10 s
    python benchmarks/cosmos_mag_range.py --before-ref <commit> --n 100000

Writes ``benchmarks/results/cosmos_sampler/mag_range.json`` and ``.md``.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from scipy.stats import ks_2samp

ROOT = Path(__file__).resolve().parents[1]
RANGES = {"full (16.5-26)": None, "[18, 24] (deblend, unet, prob_unet)": (18.0, 24.0),
          "[17, 25] (flowvae_mock, ddpm_mock)": (17.0, 25.0), "[17, 23.5]": (17.0, 23.5)}
BINS = ((23.0, 24.0), (23.0, 23.5))


def load_sampler(ref: str | None):
    if ref is None:
        from astrogen.catalog.cosmos import CosmosSampler
        return CosmosSampler
    src = subprocess.run(["git", "-C", str(ROOT), "show", f"{ref}:astrogen/catalog/cosmos.py"],
                         check=True, capture_output=True, text=True).stdout
    tmp = Path(tempfile.mkdtemp()) / "cosmos_before.py"
    tmp.write_text(src)
    spec = importlib.util.spec_from_file_location("cosmos_before", tmp)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.CosmosSampler


def measure(cls, n: int, seed: int) -> dict:
    out = {}
    full = None
    for name, mr in RANGES.items():
        t = (cls() if mr is None else cls(mag_range=mr)).sample(seed, np.arange(n))
        mag, hlr, z = (np.asarray(t[c], float) for c in ("mag", "hlr", "z"))
        if full is None:
            full = (mag, hlr, z)
        res = {}
        for lo, hi in BINS:
            if mr is not None and (lo < mr[0] or hi > mr[1]):
                continue
            m = (mag > lo) & (mag < hi)
            mf = (full[0] > lo) & (full[0] < hi)
            res[f"{lo}-{hi}"] = {
                "n": int(m.sum()), "median_hlr_arcsec": float(np.median(hlr[m])),
                "median_z": float(np.median(z[m])),
                "ks_p_hlr_vs_full": float(ks_2samp(hlr[m], full[1][mf]).pvalue),
                "ks_p_z_vs_full": float(ks_2samp(z[m], full[2][mf]).pvalue)}
        out[name] = res
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--before-ref", default="main")
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/cosmos_sampler"))
    a = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    res = {"n": a.n, "seed": a.seed, "before_ref": a.before_ref,
           "before": measure(load_sampler(a.before_ref), a.n, a.seed),
           "after": measure(load_sampler(None), a.n, a.seed)}
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "mag_range.json").write_text(json.dumps(res, indent=1))
    lines = [f"# COSMOS sampler, {a.n} draws (seed {a.seed}); before = `{a.before_ref}`", "",
             "| sampler | mag_range | I bin | n in bin | median hlr (\") | median z | "
             "KS p hlr / z vs full |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for which in ("before", "after"):
        for name, bins in res[which].items():
            for b, r in bins.items():
                lines.append(f"| {which} | {name} | {b} | {r['n']} | "
                             f"{r['median_hlr_arcsec']:.3f} | {r['median_z']:.2f} | "
                             f"{r['ks_p_hlr_vs_full']:.2g} / {r['ks_p_z_vs_full']:.2g} |")
    (out / "mag_range.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

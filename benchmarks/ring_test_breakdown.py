"""Where the parametric stamps differ from the analytic Sersic profiles (ring test, by subset).

    python benchmarks/ring_test_breakdown.py      # after python benchmarks/ring_test.py

Reads ``ellipticities_parametric.npz`` and ``results.json`` written by
``benchmarks/ring_test.py`` in ``--out`` (default ``benchmarks/results/ring_test``),
regenerates the same catalog rows (same seed) and reports ``m`` and ``c`` of the
point-sampled stamps relative to the analytic Sersic profile by Sersic index, half-light
radius and whether GalSim's 99.5 % stamp was capped at ``--max-stamp``. Writes
``breakdown.json`` and ``breakdown.md``.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from astrogen.catalog.cosmos import CosmosSampler  # noqa: E402
from astrogen.physics.render import galaxy_profile  # noqa: E402
from astrogen.physics.shear_measure import shear_bias  # noqa: E402
from astrogen.seeds import derive_seed  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "ring_test")
    ap.add_argument("--n-boot", type=int, default=500)
    args = ap.parse_args(argv)
    res = json.loads((args.out / "results.json").read_text())
    cfg = res["config"]
    z = np.load(args.out / "ellipticities_parametric.npz")
    idx = z["row_index"]
    table = CosmosSampler().sample(derive_seed(cfg["seed"], "catalog"), np.arange(cfg["n"]))[idx]
    shears = np.asarray(cfg["shears"])
    et, ea = z["sampled__test"], z["sampled__analytic"]
    n = np.asarray(table["sersic_n"])
    hlr = np.asarray(table["hlr"])
    capped = np.array([galaxy_profile(r, 1.0).getGoodImageSize(0.03) > cfg["max_stamp"]
                       for r in table])
    subsets = {"all": np.ones(len(idx), bool),
               f"stamp capped at {cfg['max_stamp']} px": capped,
               "stamp not capped": ~capped}
    for lo, hi in ((0.3, 1.5), (1.5, 2.5), (2.5, 4.0), (4.0, 6.3)):
        subsets[f"sersic_n in [{lo}, {hi})"] = (n >= lo) & (n < hi)
    for lo, hi in ((0.0, 0.2), (0.2, 0.4), (0.4, 100.0)):
        subsets[f"hlr in [{lo}, {hi}) arcsec"] = (hlr >= lo) & (hlr < hi)
    subsets["sersic_n < 2.5 and not capped"] = (n < 2.5) & ~capped
    rows = {}
    lines = ["# Point-sampled parametric stamps vs analytic Sersic, by subset", "",
             "`python benchmarks/ring_test_breakdown.py` (from the ellipticities of "
             "`python benchmarks/ring_test.py " + " ".join(cfg.get("argv", [])) + "`)", "",
             "| subset | n | m1 | m2 |", "| --- | --- | --- | --- |"]
    for name, m in subsets.items():
        if m.sum() < 5:
            continue
        b = shear_bias(et[m], ea[m], shears, n_boot=args.n_boot)
        rows[name] = {k: b[k] for k in ("n_gal", "m1", "sigma_m1", "m2", "sigma_m2", "c1", "c2")}
        lines.append(f"| {name} | {b['n_gal']} | {b['m1']:+.1e} +- {b['sigma_m1']:.1e} | "
                     f"{b['m2']:+.1e} +- {b['sigma_m2']:.1e} |")
    (args.out / "breakdown.json").write_text(json.dumps(rows, indent=1) + "\n")
    (args.out / "breakdown.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

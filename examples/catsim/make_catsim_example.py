"""Write a small catalog in LSST DESC CatSim / BlendingToolKit format (``catsim_example.fits``).

The galaxies are drawn from astrogen's COSMOS sampler (seed 13) and written with CatSim's
columns and conventions, so that ``pipelines/catsim_mock.yaml`` can read a held-in file with
``catalog.read`` ``preset: catsim`` and no other script:

* ``galtileid`` (int64 ids, not 0..n-1), ``ra``, ``dec`` [deg] in a 0.02 x 0.02 deg field
  centred on (0, 0) (so ``ra`` crosses 0, written in [-0.01, 0.01] as in CatSim),
  ``redshift``;
* ``u_ab`` ... ``y_ab`` [AB mag]: LSST magnitudes from the sampler's ``bands``;
* bulge and disk semi-axes ``a_b, b_b, a_d, b_d`` [arcsec] (half-light radius
  ``sqrt(a b)`` as in BTK: the disk's is the sampled ``hlr``, the bulge's half of it, an
  assumption of this example), position angles ``pa_bulge``, ``pa_disk`` [deg] (the
  bulge's offset by up to 20 deg), ``fluxnorm_bulge``, ``fluxnorm_disk`` from the sampled
  bulge fraction, ``fluxnorm_agn`` 0 except every 25th galaxy;
* rows with bulge fraction < 0.2 are pure disks (``a_b = b_b = 0``, ``fluxnorm_bulge = 0``)
  and rows with bulge fraction > 0.85 pure bulges (``a_d = b_d = 0``), so the file has
  bulge-only, disk-only and two-component rows, as CatSim does.

    python examples/catsim/make_catsim_example.py [--n 200]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from astropy.table import Table

from astrogen.catalog.cosmos import CosmosSampler
from astrogen.seeds import row_seeds, uniforms

HERE = Path(__file__).resolve().parent


def make(n: int = 200, seed: int = 13) -> Table:
    bands = [f"lsst_{b}" for b in "ugrizy"]
    s = CosmosSampler(mag_range=(18.0, 25.3), bands=bands)
    d = s.sample(seed, np.arange(n))
    u = uniforms(row_seeds(seed + 1, np.arange(n)), 4)
    bf = np.asarray(d["bulge_frac"], float)
    bf = np.where(bf < 0.2, 0.0, np.where(bf > 0.85, 1.0, bf))
    hlr, q = np.asarray(d["hlr"], float), np.asarray(d["q"], float)
    hlr_d, hlr_b = hlr, 0.5 * hlr
    q_b = np.clip(q + 0.3, 0.2, 1.0)
    t = Table()
    t["galtileid"] = (2_200_000_000 + 37 * np.arange(n)).astype(np.int64)
    t["ra"] = (u[:, 0] - 0.5) * 0.02
    t["dec"] = (u[:, 1] - 0.5) * 0.02
    t["redshift"] = np.asarray(d["z"], float)
    flux = 10 ** (-0.4 * (np.asarray(d["mag_lsst_i"], float) - 22.5))
    t["fluxnorm_bulge"] = 1e-9 * flux * bf
    t["fluxnorm_disk"] = 1e-9 * flux * (1 - bf)
    t["fluxnorm_agn"] = np.where(np.arange(n) % 25 == 7, 0.02e-9 * flux, 0.0)
    t["a_b"] = np.where(bf > 0, hlr_b / np.sqrt(q_b), 0.0)
    t["b_b"] = np.where(bf > 0, hlr_b * np.sqrt(q_b), 0.0)
    t["a_d"] = np.where(bf < 1, hlr_d / np.sqrt(q), 0.0)
    t["b_d"] = np.where(bf < 1, hlr_d * np.sqrt(q), 0.0)
    t["pa_disk"] = np.asarray(d["beta"], float)
    t["pa_bulge"] = (t["pa_disk"] + 40.0 * (u[:, 2] - 0.5)) % 180.0
    for b in "ugrizy":
        t[f"{b}_ab"] = np.asarray(d[f"mag_lsst_{b}"], float)
    t.meta["COMMENT"] = ["CatSim/BTK-format example made by examples/catsim/"
                         "make_catsim_example.py from astrogen's COSMOS sampler"]
    return t


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--out", default=str(HERE / "catsim_example.fits"))
    a = ap.parse_args(argv)
    t = make(a.n)
    t.write(a.out, overwrite=True)
    print(f"wrote {a.out}: {len(t)} rows, {int((t['a_d'] == 0).sum())} bulge-only, "
          f"{int((t['a_b'] == 0).sum())} disk-only")


if __name__ == "__main__":
    main()

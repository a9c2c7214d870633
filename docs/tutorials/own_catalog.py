"""Your own catalog -> multi-band images
======================================

Write a small catalog file (any table astropy reads), map its columns to astrogen's
canonical names with ``catalog.read``, render the galaxies with GalSim and observe them in
three LSST bands in one ``observe`` stage. The pipeline is a plain dict given to
:func:`astrogen.run <astrogen.api.run>` (a YAML file works the same way).
"""
import numpy as np
from astropy.table import Table

import astrogen

# a catalog with your own column names and units (magnitudes AB, sizes in arcsec)
rng = np.random.default_rng(1)
n = 6
Table({"ID": np.arange(100, 100 + n),
       "MAG_G": rng.uniform(21.0, 22.0, n), "MAG_R": rng.uniform(20.5, 21.5, n),
       "MAG_I": rng.uniform(20.0, 21.0, n), "R_HALF": rng.uniform(0.2, 0.5, n),
       "Z": rng.uniform(0.2, 1.0, n)}).write("my_catalog.fits", overwrite=True)

pipeline = {
    "name": "own_catalog", "seed": 7, "output": "out",
    "stages": [
        {"name": "catalog", "type": "catalog.read", "file_name": "my_catalog.fits",
         "columns": {"mag": "MAG_I", "mag_lsst_g": "MAG_G", "mag_lsst_r": "MAG_R",
                     "mag_lsst_i": "MAG_I", "hlr": "R_HALF", "z": "Z"},
         "id_column": "ID", "defaults": {"sersic_n": 1.0, "q": 0.7, "beta": 30.0}},
        {"name": "render", "type": "galsim.parametric", "inputs": ["catalog"],
         "pixel_scale": 0.03, "max_stamp_size": 256},
        {"name": "observe", "type": "observe", "inputs": ["render"],
         "bands": ["lsst_g", "lsst_r", "lsst_i"], "stamp_size": 48},
        {"name": "stamps", "type": "output.stamps", "inputs": ["observe"],
         "file_name": "stamps.fits"},
    ],
}
astrogen.run(pipeline)

# one FITS file per band; plot the first galaxy in each band (log stretch)
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
from astropy.io import fits

files = [f"out/stamps_lsst_{b}.fits" for b in "gri"]
print("files written:", [f.split("/")[-1] for f in files])
fig, axes = plt.subplots(1, len(files), figsize=(3 * len(files), 3))
for ax, f in zip(np.atleast_1d(axes), files):
    with fits.open(f) as hdul:
        hdu = next(h for h in hdul if h.data is not None and h.data.ndim >= 2)
        img = hdu.data[0] if hdu.data.ndim == 3 else hdu.data
        print(f"{f.split('/')[-1]}: {hdu.data.shape}, BUNIT={hdu.header.get('BUNIT')}, "
              f"sum of first stamp = {img.sum():.1f}")
    ax.imshow(np.log10(np.clip(img - img.min(), 0, None) + 1.0), origin="lower", cmap="gray")
    ax.set_title(f.split("/")[-1])
    ax.axis("off")
fig.tight_layout()
fig.savefig("own_catalog_bands.png", dpi=80)

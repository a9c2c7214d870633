"""GalSim YAML with the astrogen plug-in
======================================

GalSim's own configuration files can use astrogen's FlowVAE galaxies: ``modules:
[astrogen.galsim]`` registers the input type ``flowvae`` and the object type
``FlowVAEGalaxy`` (conditions ``mag``, ``hlr``, ``z``; optional ``flux``). The configuration
below (a dict here; the same keys in a YAML file run with the ``galsim`` executable) tiles
2 x 2 galaxies with fixed fluxes, convolved with a Moffat PSF, into two files (two bands),
drawn by two worker processes (``output.nproc: 2``: each worker loads its own copy of the
network, the parent never runs TensorFlow). There is no noise, so the light drawn in each
tile can be checked against the flux asked for. The log stretch of the figure (4 decades)
shows, in the sharper Euclid-like band, the edge of the network's 64 x 64 field (1.9",
tapered): the FlowVAE's known soft rim (User guide, *Images* and *FlowVAE*).
"""
import logging

import galsim
import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt

fluxes = [1000.0, 2000.0, 3000.0, 4000.0]  # image units (e.g. ADU), one per tile
config = {
    "modules": ["astrogen.galsim"],
    "input": {"flowvae": {"model": "flowvae_cosmos64", "batch_size": 4}},
    "psf": {"type": "Moffat", "beta": 3.5,
            "fwhm": {"type": "List", "items": [0.7, 0.17], "index_key": "file_num"}},
    "gal": {"type": "FlowVAEGalaxy", "rng_num": 1,
            "mag": {"type": "Random", "min": 21.0, "max": 23.0},
            "hlr": {"type": "Random", "min": 0.2, "max": 0.4},
            "z": {"type": "Random", "min": 0.3, "max": 1.2},
            "flux": {"type": "List", "items": fluxes, "index_key": "obj_num_in_file"}},
    "image": {"type": "Tiled", "nx_tiles": 2, "ny_tiles": 2,
              "stamp_size": {"type": "List", "items": [40, 80], "index_key": "file_num"},
              "pixel_scale": {"type": "List", "items": [0.2, 0.1], "index_key": "file_num"},
              "random_seed": [20211, {"type": "Eval", "index_key": "obj_num",
                                      "str": "8675309 + obj_num - start_obj_num"}]},
    "output": {"dir": "out", "nfiles": 2, "nproc": 2,
               "file_name": {"type": "FormattedStr", "format": "galaxies_%s.fits",
                             "items": [{"type": "List", "items": ["lsst_i", "euclid_vis"],
                                        "index_key": "file_num"}]}},
}
logging.basicConfig(level=logging.WARNING)
galsim.config.Process(config, logger=logging.getLogger("galsim"))

fig, axes = plt.subplots(1, 2, figsize=(7, 3.5))
for ax, band, stamp in zip(axes, ["lsst_i", "euclid_vis"], [40, 80]):
    image = galsim.fits.read(f"out/galaxies_{band}.fits")
    tiles = [image.array[j * stamp:(j + 1) * stamp, i * stamp:(i + 1) * stamp].sum()
             for j in range(2) for i in range(2)]  # object k is tile k, row by row
    print(f"galaxies_{band}.fits: {image.array.shape}, scale {image.scale} arcsec/pix, "
          f"light per tile {np.round(tiles, 1).tolist()}")
    for drawn, asked in zip(tiles, fluxes):
        # all the light of each galaxy is in its tile (the PSF wings leave < 2 %)
        assert 0.98 * asked < drawn <= 1.001 * asked, (band, drawn, asked)
    ax.imshow(np.log10(np.clip(image.array / image.array.max(), 1e-4, None)),  # log stretch
              origin="lower", cmap="gray")
    ax.set_title(band)
    ax.axis("off")
fig.tight_layout()
fig.savefig("galsim_yaml.png", dpi=80)
print("every tile holds its galaxy's flux to 2 %")

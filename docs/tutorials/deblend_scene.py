"""Deblending a scene
==================

Draw a small blended 4-band scene with GalSim (two overlapping galaxies and an isolated
one, Gaussian noise), then detect and deblend it with
:func:`astrogen.deblend <astrogen.api.deblend>`. The result is a
:class:`~astrogen.deblend.result.SceneResult`: a catalog with per-band fluxes and a
segmentation map.
"""
import galsim
import matplotlib
import numpy as np

import astrogen

matplotlib.use("Agg")
import matplotlib.pyplot as plt

bands = ["g", "r", "i", "z"]
size, scale, sigma = 64, 0.2, 2.0
rng = np.random.default_rng(3)
psf = galsim.Moffat(beta=3.5, fwhm=0.75)
# (x, y) pixel, half-light radius arcsec, i-band flux (image units)
sources = [(18.0, 30.0, 0.4, 4000.0), (29.0, 37.0, 0.35, 2500.0), (46.0, 14.0, 0.3, 3000.0)]
scene = np.zeros((size, size, len(bands)), np.float32)
for b in range(len(bands)):
    img = galsim.ImageF(size, size, scale=scale)
    for x, y, hlr, flux in sources:
        gal = galsim.Exponential(half_light_radius=hlr, flux=flux * (0.6 + 0.2 * b))  # = flux in i (b = 2)
        gal = galsim.Convolve(gal, psf)
        gal.drawImage(img, add_to_image=True,
                      offset=(x - (size - 1) / 2, y - (size - 1) / 2))
    scene[..., b] = img.array + rng.normal(0.0, sigma, (size, size))

result = astrogen.deblend(scene, noise_sigma=sigma, pixel_scale=scale, bands=bands)
print(f"{len(result.catalog)} objects detected (3 drawn), method {result.method}")
print("drawn i-band fluxes:", [s[3] * 1.0 for s in sources])
print(result.catalog["id", "x", "y", "flux_i"])

fig, (a, b) = plt.subplots(1, 2, figsize=(7, 3.5))
a.imshow(np.arcsinh(scene[..., 2] / sigma), origin="lower", cmap="gray")
a.set_title("i band (asinh)")
b.imshow(result.segmentation, origin="lower", cmap="tab10", interpolation="nearest")
b.set_title("segmentation")
for ax in (a, b):
    ax.axis("off")
fig.tight_layout()
fig.savefig("deblend_scene.png", dpi=80)

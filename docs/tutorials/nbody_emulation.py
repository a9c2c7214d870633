"""N-body emulation
================

One Gaussian initial field (32^3 particles in 64 Mpc/h, the grid, box and Planck 2018
cosmology the shipped models were trained on: the smallest size they allow) is moved to
z = 0 twice in one pipeline: by the particle-mesh code (``nbody.pm``, 10 kick-drift-kick
steps from z = 9) and by the D3M displacement emulator (``nbody.displace``, shipped weights
``d3m_32``, one network call). Friends-of-friends finds the haloes of both, ``output.field``
writes both density fields as FITS cubes with a WCS. The script then measures the power
spectra of the two fields and checks the emulator against the PM code on the scales the
model resolves (k <= k_Nyquist / 2); ``benchmarks/nbody_d3m_benchmark.py`` does the same on
8 held-out boxes (see the Benchmarks page).
"""
import matplotlib
import matplotlib.ticker
import numpy as np
from astropy.io import fits
from astropy.table import Table

import astrogen
from astrogen.nbody.power_spectrum import measure_power

matplotlib.use("Agg")
import matplotlib.pyplot as plt

n, box = 32, 64.0  # particles per side, Mpc/h: 2 Mpc/h spacing, as d3m_32 was trained
pipeline = {
    "name": "nbody_emulation", "seed": 11, "output": "out",
    "stages": [
        {"name": "ic", "type": "cosmology.initial_field", "n_boxes": 1, "n_grid": n,
         "box_size": box, "redshift": 0.0, "Om0": 0.30966, "Ob0": 0.04897, "h": 0.6766,
         "sigma8": 0.8102, "n_s": 0.9665},
        {"name": "pm", "type": "nbody.pm", "inputs": ["ic"], "n_steps": 10},
        {"name": "emulated", "type": "nbody.displace", "inputs": ["ic"], "model": "d3m_32"},
        {"name": "pm_halos", "type": "nbody.fof", "inputs": ["pm"], "min_members": 20},
        {"name": "emu_halos", "type": "nbody.fof", "inputs": ["emulated"], "min_members": 20},
        {"name": "pm_field", "type": "output.field", "inputs": ["pm"],
         "file_name": "pm.fits", "quantity": "delta", "preview": None},
        {"name": "emu_field", "type": "output.field", "inputs": ["emulated"],
         "file_name": "emulated.fits", "quantity": "delta", "preview": None},
        {"name": "pm_cat", "type": "output.catalog", "inputs": ["pm_halos"],
         "file_name": "pm_halos.fits"},
        {"name": "emu_cat", "type": "output.catalog", "inputs": ["emu_halos"],
         "file_name": "emulated_halos.fits"},
    ],
}
result = astrogen.run(pipeline)
print("stage times [s]:", {k: round(v, 2) for k, v in result.timings.items()
                           if k in ("pm", "emulated")})

fields = {}
for name in ("pm", "emulated"):
    with fits.open(f"out/{name}.fits") as hdul:
        hdu = hdul["BOX0"]
        fields[name] = hdu.data.astype(float)
        print(f"{name}.fits: BOX0 {hdu.data.shape}, BUNIT={hdu.header['BUNIT']}, "
              f"CUNIT1={hdu.header['CUNIT1']}, REDSHIFT={hdu.header['REDSHIFT']}")
    halos = Table.read(f"out/{'pm' if name == 'pm' else 'emulated'}_halos.fits")
    print(f"{name}: {len(halos)} FoF haloes of >= 20 particles, "
          f"most massive {halos['mass'].max():.3g} {halos['mass'].unit}")

# P(k) of both fields on the same bins; the emulator's transfer T = sqrt(P_emu / P_pm)
k_nyq = np.pi * n / box
edges = np.linspace(2 * np.pi / box, k_nyq, 13)
p_pm = measure_power(fields["pm"], box, k_edges=edges)
p_emu = measure_power(fields["emulated"], box, k_edges=edges)
assert np.allclose(p_pm.k, p_emu.k)
ratio = p_emu.power / p_pm.power
resolved = p_pm.k <= k_nyq / 2
for k, r in zip(p_pm.k[resolved], ratio[resolved]):
    print(f"k = {k:.3f} h/Mpc: P_emulator / P_PM = {r:.3f}")
worst = np.max(np.abs(ratio[resolved] - 1))
print(f"worst |P_emulator / P_PM - 1| for k <= k_Nyq/2 = {k_nyq / 2:.3f} h/Mpc: {worst:.3f}")
# the emulator reproduces the PM spectrum to ~10-20 % in one box (benchmark: 8 boxes)
assert worst < 0.3, worst

fig, (a, b, c) = plt.subplots(1, 3, figsize=(10, 3.3))
for ax, name in ((a, "pm"), (b, "emulated")):
    slab = fields[name][:, :, :4].mean(axis=2)  # 8 Mpc/h slab
    ax.imshow(np.log10(np.clip(1 + slab, 1e-2, None)), origin="lower", cmap="magma",
              extent=[0, box, 0, box])  # log stretch of 1 + delta
    ax.set_title(f"{name}: log10(1 + delta)")
    ax.set_xlabel("Mpc/h")
c.loglog(p_pm.k, p_pm.power, "k-", label="PM, 10 steps")
c.loglog(p_emu.k, p_emu.power, "C1--", label="D3M emulator")
c.axvline(k_nyq / 2, color="0.6", lw=0.8)  # k_Nyq / 2
c.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
c.set_xlabel("k [h/Mpc]")
c.set_ylabel("P(k) [(Mpc/h)^3]")
c.legend(fontsize=8)
fig.tight_layout()
fig.savefig("nbody_emulation.png", dpi=80)

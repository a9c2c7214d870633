"""Training a model on your own data
==================================

The FlowVAE trains on any folder in GalSim's ``RealGalaxyCatalog`` format (the format of
``galsim_download_cosmos``: a catalog FITS table naming each galaxy's image, PSF and noise
correlation file): ``dataset: {source: real_galaxy_catalog, catalog_dir: <your folder>}``.
Here the 100 COSMOS galaxies shipped with astrogen stand in for your folder, and the run is
tiny (8 galaxies, 32 x 32 stamps, a small network, 2 VAE + 2 flow steps) so that it runs
in seconds: the point is the path, not the model. The training file is a dict written as
YAML and run as ``astrogen train`` runs it; the model it writes loads with
:func:`astrogen.load_model <astrogen.api.load_model>` and samples GalSim objects like the
shipped ones. A real run uses ``configs/flowvae_real.yaml`` (thousands of steps).
"""
import json
from importlib import resources

import galsim
import matplotlib
import numpy as np
import yaml

import astrogen
from astrogen.training import run_training

matplotlib.use("Agg")
import matplotlib.pyplot as plt

catalog_dir = str(resources.files("astrogen") / "data" / "cosmos")  # your folder here
config = {
    "model": "flowvae", "seed": 5,
    "output": "run/my_flowvae.keras", "run_dir": "run/checkpoints",
    "dataset": {"source": "real_galaxy_catalog", "path": "run/dataset",
                "catalog_dir": catalog_dir, "stamp_size": 32, "max_galaxies": 10,
                "holdout_fraction": 0.2, "augment": "none", "shard_size": 8, "seed": 1},
    "flowvae": {"latent_dim": 4, "channels": [8, 8, 16, 16], "blocks_per_level": 1,
                "flux_scale": "auto", "flow_num_bijectors": 2,
                "flow_hidden_units": [16, 16]},
    "training": {"batch_size": 4, "vae_steps": 2, "flow_steps": 2, "flow_batch_size": 4,
                 "latent_batch_size": 8, "shuffle_buffer": 8, "checkpoint_every": 2,
                 "log_every": 1, "monitor_size": 0, "eval_real": False,
                 "progress": False},
}
with open("my_training.yaml", "w") as fh:
    yaml.safe_dump(config, fh, sort_keys=False)
result = run_training("my_training.yaml")  # = astrogen train my_training.yaml
print("trained:", {k: result[k] for k in ("output", "steps_done", "complete")})
losses = [json.loads(line) for line in open("run/checkpoints/losses.jsonl")]
print("logged losses:", [{k: (round(v, 3) if isinstance(v, float) else v)
                          for k, v in row.items() if k in ("step", "phase", "loss")}
                         for row in losses])
assert result["complete"] and result["steps_done"] == 4
assert all(np.isfinite(row["loss"]) for row in losses)

# the trained model, loaded by path, samples GalSim objects like a shipped model
model = astrogen.load_model("run/my_flowvae.keras")
lo, hi = np.array(model.network.condition_range)  # conditions seen in training (8 galaxies)
ranges = {c: [round(float(a), 2), round(float(b), 2)] for c, a, b in zip(model.conditions, lo, hi)}
print(f"loaded: {model.name}, kind {model.kind}, trained on {ranges}")
fractions = [0.2, 0.5, 0.8]  # three galaxies inside that range
cond = [lo + f * (hi - lo) for f in fractions]
mags = [round(float(c[0]), 2) for c in cond]
galaxies = astrogen.sample(model, mag=mags, hlr=[c[1] for c in cond], z=[c[2] for c in cond],
                           seed=3, flux="catalog")
fig, axes = plt.subplots(1, len(galaxies), figsize=(7, 2.5))
for ax, gal, mag in zip(axes, galaxies, mags):
    # flux="catalog": each object's flux is exactly the catalog magnitude's (count/s,
    # zero point 25.94), whatever a 4-step network draws
    expected = 10 ** (-0.4 * (mag - 25.94))
    assert abs(gal.flux / expected - 1) < 1e-4, (gal.flux, expected)
    image = gal.drawImage(nx=32, ny=32, scale=0.03, method="no_pixel")
    print(f"mag {mag}: flux {gal.flux:.2f} count/s (catalog {expected:.2f}), "
          f"stamp {image.array.shape}")
    ax.imshow(np.arcsinh(image.array / image.array.std()), origin="lower", cmap="gray")
    ax.set_title(f"mag {mag}")
    ax.axis("off")
fig.suptitle("4 training steps: not a galaxy model yet", fontsize=9)
fig.tight_layout()
fig.savefig("train_own_data.png", dpi=80)

"""Training of the halo-map U-Net (``model: halo_unet``, ``configs/halo_unet.yaml``).

``astrogen train configs/halo_unet.yaml [--resume]``: same slice data set, run folder,
checkpoints and resume rules as :mod:`astrogen.training.gan_trainer`. Input: the
transformed PM slab ``s(1 + delta)``; targets: the halo mask and ``log10 M - 13`` on the mask.
Loss: :meth:`astrogen.models.halo_unet.HaloUNet.losses` (``BCE(pos_weight) + dice_weight
(1 - soft Dice) + mass_weight MSE(mass on true halo pixels)``). Batches are augmented with
the symmetries of the periodic square; batch ``g`` is drawn with ``derive_seed(seed,
"batch", g)``, so a resumed run continues exactly.

This is the smallest trainer: copy it to add one (its schema, its data, its step).
"""
from __future__ import annotations

import numpy as np

from astrogen.seeds import derive_seed
from astrogen.training.loop import Run
from astrogen.training.registry import Trainer, register_trainer
from astrogen.training.schema import (check_float, check_int_list, top_level)
from astrogen.training.slices import (augment, check_slice_config, dataset_meta, exporter,
                                      prepare_slices, slice_meta, slice_training_keys)

__all__ = ["HALO_SCHEMA", "HaloTrainer", "train_halo_unet"]

#: section -> key -> (default, check) of ``model: halo_unet``
HALO_SCHEMA = {
    "": top_level("halo_unet", sections=("halo_unet",)),
    "halo_unet": {
        "channels": ([16, 32, 64], check_int_list),
        "transform_a": (1.0, check_float(0.0, strict=True)),
    },
    "training": {
        **slice_training_keys(learning_rate=1e-3, beta_1=0.9, beta_2=0.999),
        "pos_weight": (3.0, check_float(0.0, strict=True)),
        "dice_weight": (1.0, check_float(0.0)),
        "mass_weight": (1.0, check_float(0.0)),
    },
}


@register_trainer("halo_unet")
class HaloTrainer(Trainer):
    """``model: halo_unet``."""

    def check(self, cfg):
        return check_slice_config(cfg, HALO_SCHEMA, "halo_unet")

    def train(self, cfg, resume: bool = False) -> dict:
        return train_halo_unet(cfg, resume)


def train_halo_unet(cfg, resume: bool = False, log=print) -> dict:
    """Train the halo-map network as configured; returns a summary."""
    import keras
    import tensorflow as tf

    from astrogen.datasets.nbody_slices import read_slices
    from astrogen.models.halo_unet import LOGM_OFFSET, HaloUNet

    t_cfg, h_cfg = cfg["training"], cfg["halo_unet"]
    seed = int(cfg["seed"])
    run = Run(cfg, resume)
    ds_path, manifest = prepare_slices(cfg, log)
    run.start()
    data = read_slices(ds_path, keys=("evolved", "mask", "log_mass"))
    n_img, n = data["evolved"].shape[:2]
    meta = {**slice_meta(manifest, "halo_radius", "min_members", "linking_length"),
            "dataset": dataset_meta(manifest, n_img),
            "training": {"config": str(cfg.source), "seed": seed}}
    keras.utils.set_random_seed(derive_seed(seed, "init") % (2 ** 31))
    model = HaloUNet(size=n, channels=h_cfg["channels"], transform_a=h_cfg["transform_a"],
                     meta=meta)
    x_all = model.transform.forward(data["evolved"]).astype(np.float32)
    mask_all = data["mask"].astype(np.float32)
    logm_all = np.where(data["mask"] > 0, data["log_mass"] - LOGM_OFFSET, 0.0).astype(np.float32)

    opt = keras.optimizers.Adam(t_cfg["learning_rate"], beta_1=t_cfg["beta_1"],
                                beta_2=t_cfg["beta_2"], name="halo_adam")
    opt.build(model.network.trainable_variables)
    step = run.restore({"network": model.network.weights, "optimizer": opt.variables},
                       model="halo_unet")
    if run.ckpt is not None:
        log(f"halo_unet: resumed from {run.ckpt.name} (step {step})")
    train_step = model.make_train_step(opt, *(float(t_cfg[k]) for k in (
        "pos_weight", "dice_weight", "mass_weight")))
    batch = min(int(t_cfg["batch_size"]), n_img)

    def step_fn(g: int) -> dict:
        rng = np.random.default_rng(derive_seed(seed, "batch", g))
        idx = rng.choice(n_img, size=batch, replace=False)
        x, m, lm = x_all[idx], mask_all[idx], logm_all[idx]
        if t_cfg["augment"]:
            x, m, lm = augment([x, m, lm], derive_seed(seed, "augment", g))
        return train_step(tf.constant(x[..., None]), tf.constant(m), tf.constant(lm))

    total = int(t_cfg["steps"])
    export = exporter(cfg, model)
    summary = run.loop(step, total, step_fn, name="halo_unet", on_checkpoint=export)
    if summary["complete"] and not run.output.is_file():
        export(summary["steps_done"])
    summary["last"] = {"step": summary["steps_done"], **summary["last"]} if summary["last"] \
        else {}
    summary["steps_per_second"] = summary["steps_per_second"].get("train")
    return run.finish({"dataset": str(ds_path), "steps_total": total, **summary,
                       "n_images": int(n_img)})

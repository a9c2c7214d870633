"""Training of the halo-map U-Net (``model: halo_unet``, ``configs/halo_unet.yaml``).

``astrogen train configs/halo_unet.yaml [--resume]``: same slice dataset, run folder,
checkpoints and resume rules as :mod:`astrogen.training.gan_trainer`. Input: the
transformed PM slab ``s(1 + delta)``; targets: the halo mask and ``log10 M - 13`` on the mask.
Loss: ``BCE(pos_weight) + dice_weight (1 - soft Dice) + mass_weight MSE(mass on true halo
pixels)``. Batches are augmented with the symmetries of the periodic square.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from astrogen.io.atomic import write_json
from astrogen.seeds import derive_seed
from astrogen.training.checkpoint import restore_run
from astrogen.training.config import TrainingConfig, _float, _int_list
from astrogen.training.gan_trainer import (_COMMON_TOP, _COMMON_TRAINING, after_step, augment,
                                           checkpointing, prepare_run)

__all__ = ["HALO_SCHEMA", "train_halo_unet", "halo_loss"]

HALO_SCHEMA = {
    "": {**_COMMON_TOP, "halo_unet": ({}, lambda v: v)},
    "halo_unet": {
        "channels": ([16, 32, 64], _int_list),
        "transform_a": (1.0, _float(0.0, strict=True)),
    },
    "training": {
        **_COMMON_TRAINING,
        "learning_rate": (1e-3, _float(0.0, strict=True)),
        "beta_1": (0.9, _float(0.0)),
        "beta_2": (0.999, _float(0.0)),
        "pos_weight": (3.0, _float(0.0, strict=True)),
        "dice_weight": (1.0, _float(0.0)),
        "mass_weight": (1.0, _float(0.0)),
    },
}


def halo_loss(out, mask, logm, pos_weight: float, dice_weight: float, mass_weight: float):
    """Total loss and its terms for network output ``out`` (batch, n, n, 2)."""
    import tensorflow as tf

    logit, mpred = out[..., 0], out[..., 1]
    bce = tf.reduce_mean(tf.nn.weighted_cross_entropy_with_logits(mask, logit, pos_weight))
    p = tf.sigmoid(logit)
    inter = tf.reduce_sum(p * mask)
    soft_dice = (2.0 * inter + 1.0) / (tf.reduce_sum(p) + tf.reduce_sum(mask) + 1.0)
    mse = tf.reduce_sum(mask * tf.square(mpred - logm)) / (tf.reduce_sum(mask) + 1.0)
    total = bce + dice_weight * (1.0 - soft_dice) + mass_weight * mse
    return total, bce, soft_dice, mse


def train_halo_unet(cfg: TrainingConfig, resume: bool = False, log=print) -> dict:
    """Train the halo-map network as configured; returns a summary."""
    import keras
    import tensorflow as tf

    from astrogen.datasets.nbody_slices import read_manifest, read_slices
    from astrogen.models.halo_unet import LOGM_OFFSET, HaloUNet

    t_cfg, h_cfg = cfg["training"], cfg["halo_unet"]
    seed = int(cfg["seed"])
    run_dir, ckpt, ds_path = prepare_run(cfg, resume, log)
    manifest = read_manifest(ds_path)
    dcfg = manifest["config"]
    data = read_slices(ds_path, keys=("evolved", "mask", "log_mass"))
    n_img, n = data["evolved"].shape[:2]
    meta = {"n_grid": dcfg["n_grid"], "box_size": dcfg["box_size"],
            "slab_thickness": dcfg["slab_thickness"], "cell_size": manifest["cell_size"],
            "slab_depth": manifest["slab_depth"], "redshift": dcfg["redshift"],
            "halo_radius": dcfg["halo_radius"], "min_members": dcfg["min_members"],
            "linking_length": dcfg["linking_length"],
            "cosmology": {k: dcfg[k] for k in ("Om0", "Ob0", "h", "sigma8", "n_s")},
            "dataset": {"seed": dcfg["seed"], "n_boxes": dcfg["n_boxes"],
                        "first_box": dcfg["first_box"], "n_images": int(n_img)},
            "training": {"config": str(cfg.source), "seed": seed}}
    keras.utils.set_random_seed(derive_seed(seed, "init") % (2 ** 31))
    model = HaloUNet(size=n, channels=h_cfg["channels"], transform_a=h_cfg["transform_a"],
                     meta=meta)
    x_all = model.transform.forward(data["evolved"]).astype(np.float32)
    mask_all = data["mask"].astype(np.float32)
    logm_all = np.where(data["mask"] > 0, data["log_mass"] - LOGM_OFFSET, 0.0).astype(np.float32)

    opt = keras.optimizers.Adam(t_cfg["learning_rate"], beta_1=t_cfg["beta_1"],
                                beta_2=t_cfg["beta_2"], name="halo_adam")
    net = model.network
    opt.build(net.trainable_variables)
    groups = {"network": net.weights, "optimizer": opt.variables}
    log_path = run_dir / "losses.jsonl"
    step = restore_run(ckpt, groups, log_path)
    if ckpt is not None:
        log(f"halo_unet: resumed from {ckpt.name} (step {step})")
    pw, dw, mw = (float(t_cfg[k]) for k in ("pos_weight", "dice_weight", "mass_weight"))

    @tf.function(reduce_retracing=True)
    def train_step(x, m, lm):
        with tf.GradientTape() as tape:
            out = net(x, training=True)
            total, bce, sd, mse = halo_loss(out, m, lm, pw, dw, mw)
        grads = tape.gradient(total, net.trainable_variables)
        opt.apply_gradients(zip(grads, net.trainable_variables))
        return total, bce, sd, mse

    batch = min(int(t_cfg["batch_size"]), n_img)
    total_steps, stop, checkpoint = checkpointing(cfg, run_dir, step, groups, model,
                                                  "halo_unet")
    output = Path(cfg["output"])

    t0 = time.perf_counter()
    start = step
    last = {}
    with open(log_path, "a") as fh:
        while step < stop:
            rng = np.random.default_rng(derive_seed(seed, "batch", step))
            idx = rng.choice(n_img, size=batch, replace=False)
            x, m, lm = x_all[idx], mask_all[idx], logm_all[idx]
            if t_cfg["augment"]:
                x, m, lm = augment([x, m, lm], derive_seed(seed, "augment", step))
            tot, bce, sd, mse = train_step(tf.constant(x[..., None]), tf.constant(m),
                                           tf.constant(lm))
            step += 1
            last = {"step": step, "loss": float(tot), "bce": float(bce),
                    "soft_dice": float(sd), "mass_mse": float(mse)}
            after_step(last, stop, t_cfg, fh, t0, checkpoint, log)
    elapsed = time.perf_counter() - t0
    if step >= total_steps and not output.is_file():
        checkpoint(step)
    result = {"output": str(output), "run_dir": str(run_dir), "dataset": str(ds_path),
              "steps_done": step, "steps_total": total_steps, "complete": step >= total_steps,
              "last": last, "steps_per_second": (step - start) / elapsed if elapsed else None,
              "n_images": int(n_img)}
    write_json(run_dir / "result.json", result)
    return result

"""Training of the 3-D halo network (``model: halo_vnet``, ``configs/halo_vnet.yaml``).

``astrogen train configs/halo_vnet.yaml [--resume]``: the protohalo data set
(:mod:`astrogen.datasets.protohalos`, built if incomplete, resumable), the one loop
(:class:`astrogen.training.loop.Run`: run folder, checkpoints, resume). Input: the z = 0
linear field on the particle lattice divided by its rms over the training boxes (stored as
the model's ``input_scale``); target: the protohalo mask. Loss:
:meth:`astrogen.models.halo_vnet.HaloVNet.losses` (``BCE(pos_weight) + dice_weight (1 - soft
Dice) + size_weight MSE(log10 N)``, ``N`` the particles of the FoF halo of each cell).
Each batch box gets one random symmetry of the periodic cube (shift, axis
permutation, flips), the same for field and mask; batch ``g`` is drawn with
``derive_seed(seed, "batch", g)``, so a resumed run continues exactly.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from astrogen.seeds import derive_seed
from astrogen.training.loop import Run
from astrogen.training.registry import Trainer, register_trainer
from astrogen.training.schema import (REQUIRED, check_bool, check_float, check_int,
                                      check_int_list, check_sections, loop_keys, top_level)

__all__ = ["HALO_VNET_SCHEMA", "HaloVNetTrainer", "train_halo_vnet", "augment_cubes"]

#: section -> key -> (default, check) of ``model: halo_vnet``
HALO_VNET_SCHEMA = {
    "": top_level("halo_vnet", sections=("halo_vnet",)),
    "halo_vnet": {
        "channels": ([8, 16, 32], check_int_list),
    },
    "training": {
        "steps": (REQUIRED, check_int(0)),
        "batch_size": (4, check_int(1)),
        "learning_rate": (1e-3, check_float(0.0, strict=True)),
        "pos_weight": (1.0, check_float(0.0, strict=True)),
        "dice_weight": (1.0, check_float(0.0)),
        "size_weight": (1.0, check_float(0.0)),
        "augment": (True, check_bool),
        "export_every_checkpoint": (True, check_bool),
        **loop_keys(checkpoint_every=50, log_every=10, progress=False),
    },
}

_RESUME_MUTABLE = ("training.steps", "training.export_every_checkpoint")


@register_trainer("halo_vnet")
class HaloVNetTrainer(Trainer):
    """``model: halo_vnet``."""

    def check(self, cfg):
        from astrogen.datasets.protohalos import ProtoHaloDatasetConfig
        from astrogen.errors import ConfigError

        out = check_sections(cfg, HALO_VNET_SCHEMA, ("halo_vnet",), ProtoHaloDatasetConfig,
                             "protohalo dataset", _RESUME_MUTABLE)
        ch, n = out["halo_vnet"]["channels"], out["dataset"]["n_grid"]
        if n % (2 ** (len(ch) - 1)):
            raise ConfigError(f"dataset.n_grid must be a multiple of 2**(len(channels)-1) = "
                              f"{2 ** (len(ch) - 1)}.", key="halo_vnet.channels",
                              line=cfg.line(("halo_vnet", "channels")),
                              received={"n_grid": n})
        return out

    def train(self, cfg, resume: bool = False) -> dict:
        return train_halo_vnet(cfg, resume)


def augment_cubes(arrays: list[np.ndarray], seed: int) -> list[np.ndarray]:
    """One random symmetry of the periodic cube per box (shift, axis permutation, flips),
    the same for every array of ``arrays`` (each ``(batch, n, n, n)``)."""
    rng = np.random.default_rng(seed)
    b, n = arrays[0].shape[0], arrays[0].shape[1]
    out = [np.empty_like(a) for a in arrays]
    for i in range(b):
        shift = tuple(int(s) for s in rng.integers(0, n, 3))
        perm = tuple(int(p) for p in rng.permutation(3))
        flips = [ax for ax in range(3) if rng.integers(0, 2)]
        for a, o in zip(arrays, out):
            x = np.transpose(np.roll(a[i], shift, axis=(0, 1, 2)), perm)
            o[i] = np.flip(x, axis=flips) if flips else x
    return out


def _prepare(cfg, log) -> tuple[Path, dict]:
    from astrogen.datasets.protohalos import (ProtoHaloDatasetConfig, build_protohalo_dataset,
                                              protohalo_dataset_is_complete,
                                              read_protohalo_manifest)

    ds = {k: v for k, v in cfg["dataset"].items() if k != "path"}
    path = Path(cfg["dataset"]["path"])
    if not protohalo_dataset_is_complete(path):
        build_protohalo_dataset(path, ProtoHaloDatasetConfig(**ds), log=log)
    return path, read_protohalo_manifest(path)


def train_halo_vnet(cfg, resume: bool = False, log=print) -> dict:
    """Train the 3-D halo network as configured; returns a summary."""
    import keras
    import tensorflow as tf

    from astrogen.datasets.protohalos import read_protohalo_box, read_protohalo_boxes
    from astrogen.io.atomic import save_model_atomic
    from astrogen.models.halo_vnet import HaloVNet

    t_cfg, v_cfg = cfg["training"], cfg["halo_vnet"]
    seed = int(cfg["seed"])
    run = Run(cfg, resume)
    ds_path, manifest = _prepare(cfg, log)
    run.start()
    data = read_protohalo_boxes(ds_path, keys=("linear", "mask", "halo_id"))
    log_n = []
    for b, hid in zip(data["box_id"], data["halo_id"]):
        counts = read_protohalo_box(ds_path, int(b))["halo_n"]
        log_n.append(np.where(hid >= 0, np.log10(counts[np.maximum(hid, 0)]), 0.0))
    n_all = np.asarray(log_n, np.float32)
    n_box, n = data["linear"].shape[:2]
    d = manifest["config"]
    meta = {"n_grid": d["n_grid"], "box_size": d["box_size"], "redshift": d["redshift"],
            "cell_size": manifest["cell_size"],
            "particle_mass_msun_h": manifest["particle_mass_msun_h"],
            "mask_min_particles": d["mask_min_particles"], "min_members": d["min_members"],
            "linking_length": d["linking_length"], "n_steps": d["n_steps"],
            "z_init": d["z_init"], "force_resolution": d["force_resolution"],
            "cosmology": {k: d[k] for k in ("Om0", "Ob0", "h", "sigma8", "n_s")},
            "dataset": {"seed": d["seed"], "first_box": d["first_box"],
                        "n_boxes": d["n_boxes"], "mask_fraction": float(data["mask"].mean())},
            "training": {"config": str(cfg.source), "seed": seed}}
    keras.utils.set_random_seed(derive_seed(seed, "init") % (2 ** 31))
    scale = float(np.std(data["linear"]))
    model = HaloVNet(size=n, channels=v_cfg["channels"], input_scale=scale, meta=meta)
    x_all = data["linear"].astype(np.float32) / np.float32(scale)
    m_all = data["mask"].astype(np.float32)

    opt = keras.optimizers.Adam(t_cfg["learning_rate"], name="halo_vnet_adam")
    opt.build(model.network.trainable_variables)
    step = run.restore({"network": model.network.weights, "optimizer": opt.variables})
    if run.ckpt is not None:
        log(f"halo_vnet: resumed from {run.ckpt.name} (step {step})")
    train_step = model.make_train_step(opt, float(t_cfg["pos_weight"]),
                                       float(t_cfg["dice_weight"]), float(t_cfg["size_weight"]))
    batch = min(int(t_cfg["batch_size"]), n_box)

    def step_fn(g: int) -> dict:
        rng = np.random.default_rng(derive_seed(seed, "batch", g))
        idx = rng.choice(n_box, size=batch, replace=False)
        x, m, ln = x_all[idx], m_all[idx], n_all[idx]
        if t_cfg["augment"]:
            x, m, ln = augment_cubes([x, m, ln], derive_seed(seed, "augment", g))
        return train_step(tf.constant(x[..., None]), tf.constant(m), tf.constant(ln))

    total = int(t_cfg["steps"])
    output = Path(cfg["output"])

    def export(s: int) -> None:
        if t_cfg["export_every_checkpoint"] or s >= total:
            model.meta["training"]["steps_done"] = int(s)
            model.meta["training"]["steps_total"] = total
            save_model_atomic(model, output)

    summary = run.loop(step, total, step_fn, name="halo_vnet", on_checkpoint=export)
    if summary["complete"] and not output.is_file():
        export(summary["steps_done"])
    summary["steps_per_second"] = summary["steps_per_second"].get("train")
    return run.finish({"dataset": str(ds_path), "steps_total": total, **summary,
                       "n_boxes": int(n_box), "input_scale": scale})

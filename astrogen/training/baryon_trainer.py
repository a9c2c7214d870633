"""Training of the baryon painter (``model: baryon_painter``, ``configs/baryon_painter.yaml``).

``astrogen train configs/baryon_painter.yaml [--resume]``. Data: the paired-field data set
of :mod:`astrogen.datasets.baryons` (dark matter in, ``total``, ``gas``, ``temperature``,
``pressure`` out), built if incomplete (the default backend, BaryonForge, needs the
environment of ``make baryons-env``; a data set built there is read here with numpy alone).
Batch ``g`` (drawn with ``derive_seed(seed, "batch", g)``): ``batch_size`` cubic crops of
``crop`` cells at random offsets of random boxes (periodic wrap), each under one random
symmetry of the cube (axis permutation and flips, the same for every field), and the
latent normals ``derive_seed(seed, "latent", g)``; so a resumed run continues exactly. Loss:
:meth:`astrogen.models.baryon_painter.BaryonPainter.losses_of` (negative ELBO on the crop's
interior).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from astrogen.seeds import derive_seed
from astrogen.training.loop import Run
from astrogen.training.registry import Trainer, register_trainer
from astrogen.training.schema import (REQUIRED, check_bool, check_float, check_int,
                                      check_int_list, check_sections, loop_keys, top_level)

__all__ = ["BARYON_SCHEMA", "BaryonPainterTrainer", "train_baryon_painter", "crop_batch"]

#: section -> key -> (default, check) of ``model: baryon_painter``
BARYON_SCHEMA = {
    "": top_level("baryon_painter", sections=("baryon_painter",)),
    "baryon_painter": {
        "channels": ([8, 16, 32], check_int_list),
        "latent_channels": (2, check_int(1)),
        "beta": (1.0, check_float(0.0)),
        "margin": (4, check_int(0)),
        "residual": (False, check_bool),
        "heteroscedastic": (False, check_bool),
    },
    "training": {
        "steps": (REQUIRED, check_int(0)),
        "batch_size": (4, check_int(1)),
        "crop": (32, check_int(8)),
        "learning_rate": (5e-4, check_float(0.0, strict=True)),
        "clipnorm": (1.0, check_float(0.0, strict=True, optional=True)),
        "augment": (True, check_bool),
        **loop_keys(checkpoint_every=50, log_every=10, progress=False),
        "export_every_checkpoint": (True, check_bool),
    },
}


@register_trainer("baryon_painter")
class BaryonPainterTrainer(Trainer):
    """``model: baryon_painter``."""

    def check(self, cfg):
        from astrogen.datasets.baryons import BaryonDatasetConfig
        from astrogen.errors import ConfigError

        out = check_sections(cfg, BARYON_SCHEMA, ("baryon_painter",), BaryonDatasetConfig,
                             "paired baryon data set",
                             ("training.steps", "training.export_every_checkpoint"))
        crop, margin = out["training"]["crop"], out["baryon_painter"]["margin"]
        if crop % 4 or crop > out["dataset"]["n_grid"] or crop <= 2 * margin:
            raise ConfigError("must be a multiple of 4, at most dataset.n_grid and more than "
                              "2 * baryon_painter.margin.", key="training.crop",
                              line=cfg.line(("training", "crop")),
                              received={"crop": crop, "n_grid": out["dataset"]["n_grid"],
                                        "margin": margin})
        if len(out["baryon_painter"]["channels"]) != 3:
            raise ConfigError("must list 3 channel counts.", key="baryon_painter.channels",
                              line=cfg.line(("baryon_painter", "channels")),
                              received={"channels": out["baryon_painter"]["channels"]})
        return out

    def train(self, cfg, resume: bool = False) -> dict:
        return train_baryon_painter(cfg, resume)


def crop_batch(arrays: list[np.ndarray], box_idx: np.ndarray, crop: int, seed: int,
               augment: bool) -> list[np.ndarray]:
    """Crops of ``crop`` cells (periodic wrap) at random offsets of boxes ``box_idx`` of
    each array of ``arrays`` (``(n_boxes, n, n, n, ...)``), each under one random symmetry
    of the cube if ``augment`` (the same for every array)."""
    rng = np.random.default_rng(seed)
    n = arrays[0].shape[1]
    out = [[] for _ in arrays]
    for b in box_idx:
        off = rng.integers(0, n, size=3)
        perm = rng.permutation(3) if augment else np.arange(3)
        flips = rng.integers(0, 2, size=3) if augment else np.zeros(3, int)
        idx = [np.arange(o, o + crop) % n for o in off]
        for a, o in zip(arrays, out):
            c = a[b][np.ix_(*idx)]
            c = np.transpose(c, tuple(perm) + tuple(range(3, c.ndim)))
            for ax in range(3):
                if flips[ax]:
                    c = np.flip(c, axis=ax)
            o.append(np.ascontiguousarray(c))
    return [np.stack(o) for o in out]


def _prepare(cfg, log) -> tuple[Path, dict]:
    from astrogen.datasets.baryons import (BaryonDatasetConfig, build_baryon_dataset,
                                           dataset_is_complete, read_manifest)

    path = Path(cfg["dataset"]["path"])
    ds = {k: v for k, v in cfg["dataset"].items() if k != "path"}
    if not dataset_is_complete(path):
        build_baryon_dataset(path, BaryonDatasetConfig(**ds), log=log)
    return path, read_manifest(path)


def train_baryon_painter(cfg, resume: bool = False, log=print) -> dict:
    """Train the painter as configured; returns a summary (also ``run_dir/result.json``)."""
    import keras
    import tensorflow as tf

    from astrogen.datasets.baryons import read_baryon_box
    from astrogen.io.atomic import save_model_atomic
    from astrogen.models.baryon_painter import FIELDS, BaryonPainter, forward_targets

    t_cfg, m_cfg = cfg["training"], cfg["baryon_painter"]
    seed = int(cfg["seed"])
    run = Run(cfg, resume)
    path, manifest = _prepare(cfg, log)
    run.start()
    boxes = [read_baryon_box(path, b) for b in manifest["box_ids"]]
    dm = np.stack([b["dm"] for b in boxes])
    tgt = forward_targets({f: np.stack([b[f] for b in boxes]) for f in FIELDS},
                          dm if m_cfg["residual"] else None)
    lx = np.log(np.maximum(dm.astype(np.float64), 1e-2))
    x_norm = [float(lx.mean()), float(lx.std())]
    t_norm = [[float(tgt[..., i].mean()), float(max(tgt[..., i].std(), 1e-6))]
              for i in range(len(FIELDS))]
    gas_fraction = float(np.mean([b["gas"].mean() / b["dm"].mean() for b in boxes]))
    d = manifest["config"]
    meta = {"dataset": {"path": str(path), "format": manifest["format"],
                        "backend": manifest["backend"], "box_ids": manifest["box_ids"],
                        "seed": d["seed"]},
            "cell_size": manifest["cell_size"], "n_grid": d["n_grid"],
            "box_size": d["box_size"], "redshift": d["redshift"],
            "cosmology": {k: d[k] for k in ("Om0", "Ob0", "h", "sigma8", "n_s")},
            "units": manifest["units"],
            "training": {"config": str(cfg.source), "seed": seed}}
    keras.utils.set_random_seed(derive_seed(seed, "init") % (2 ** 31))
    model = BaryonPainter(channels=m_cfg["channels"], latent_channels=m_cfg["latent_channels"],
                          beta=m_cfg["beta"], margin=m_cfg["margin"], input_norm=x_norm,
                          target_norm=t_norm, gas_fraction=gas_fraction, meta=meta,
                          residual=m_cfg["residual"],
                          heteroscedastic=m_cfg["heteroscedastic"])
    x_all = model.standardize_input(dm)[..., None]
    y_all = ((tgt - np.array([p[0] for p in t_norm])) / np.array([p[1] for p in t_norm])
             ).astype(np.float32)
    del tgt, lx
    opt = keras.optimizers.Adam(t_cfg["learning_rate"], clipnorm=t_cfg["clipnorm"],
                                name="baryon_adam")
    opt.build(model.trainable_variables)
    step = run.restore({"model": model.weights, "optimizer": opt.variables},
                       model="baryon_painter")
    if run.ckpt is not None:
        log(f"baryon_painter: resumed from {run.ckpt.name} (step {step})")
    train_step = model.make_train_step(opt)
    crop, batch = int(t_cfg["crop"]), int(t_cfg["batch_size"])
    lat = (batch,) + model.latent_shape(crop)

    def step_fn(g: int) -> dict:
        rng = np.random.default_rng(derive_seed(seed, "batch", g))
        idx = rng.integers(0, len(boxes), size=batch)
        x, y = crop_batch([x_all, y_all], idx, crop, derive_seed(seed, "crop", g),
                          t_cfg["augment"])
        eps = np.random.default_rng(derive_seed(seed, "latent", g)).standard_normal(lat)
        return train_step(tf.constant(x), tf.constant(y), tf.constant(eps, tf.float32))

    total = int(t_cfg["steps"])
    output = Path(cfg["output"])

    def export(s: int) -> None:
        if t_cfg["export_every_checkpoint"] or s >= total:
            model.meta["training"] = {**dict(model.meta["training"]), "steps_done": int(s),
                                      "steps_total": total}
            save_model_atomic(model, output)

    summary = run.loop(step, total, step_fn, name="baryon_painter", on_checkpoint=export)
    if summary["complete"] and not output.is_file():
        export(summary["steps_done"])
    summary["steps_per_second"] = summary["steps_per_second"].get("train")
    return run.finish({"dataset": str(path), "steps_total": total, **summary,
                       "n_boxes": len(boxes)})

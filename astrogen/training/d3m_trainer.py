"""Training of the displacement emulator (``model: d3m``, ``configs/d3m.yaml``).

``astrogen train configs/d3m.yaml [--resume]``: the displacement data set
(:mod:`astrogen.datasets.nbody_displacements`, built if incomplete, resumable), the one loop
(:class:`astrogen.training.loop.Run`: run folder, checkpoints, resume), the model's own loss
and step (:meth:`astrogen.models.d3m.D3M.make_train_step`). Batch ``g`` draws its boxes and
its augmentation (one of the 48 cube symmetries applied to the vector field, plus a random
periodic shift, the same to input and target) from ``derive_seed(seed, "batch", g)``, so a
resumed run continues exactly.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from astrogen.seeds import derive_seed
from astrogen.training.loop import Run
from astrogen.training.registry import Trainer, register_trainer
from astrogen.training.schema import (REQUIRED, check_bool, check_float, check_int,
                                      check_int_list, check_optional_str, check_sections,
                                      loop_keys, top_level)
from astrogen.training.slices import exporter

__all__ = ["D3M_SCHEMA", "D3MTrainer", "train_d3m", "augment_batch", "warm_start"]

#: section -> key -> (default, check) of ``model: d3m``
D3M_SCHEMA = {
    "": top_level("d3m", sections=("d3m",)),
    "d3m": {
        "channels": ([16, 32, 64], check_int_list),
        "convs_per_level": (1, check_int(1)),
        "scale": (4.0, check_float(0.0, strict=True)),
    },
    "training": {
        "steps": (REQUIRED, check_int(0)),
        "batch_size": (2, check_int(1)),
        "learning_rate": (1e-3, check_float(0.0, strict=True)),
        "augment": (True, check_bool),
        # warm start: a saved D3M (same channels, convs_per_level and scale) whose weights
        # start this run (a checkpoint of this run, on --resume, takes precedence)
        "init_from": (None, check_optional_str),
        **loop_keys(checkpoint_every=50, log_every=10, progress=False),
        "export_every_checkpoint": (True, check_bool),
    },
}


@register_trainer("d3m")
class D3MTrainer(Trainer):
    """``model: d3m``."""

    def check(self, cfg):
        from astrogen.datasets.nbody_displacements import DisplacementDatasetConfig
        from astrogen.errors import ConfigError

        out = check_sections(cfg, D3M_SCHEMA, ("d3m",), DisplacementDatasetConfig,
                             "displacement dataset",
                             ("training.steps", "training.export_every_checkpoint"))
        m, n = 2 ** (len(out["d3m"]["channels"]) - 1), out["dataset"]["n_particles"]
        if n % m:
            raise ConfigError(f"dataset.n_particles must be a multiple of "
                              f"2**(len(channels)-1) = {m}.", key="d3m.channels",
                              line=cfg.line(("d3m", "channels")), received={"n_particles": n})
        if out["dataset"]["split"] != "train":
            raise ConfigError("the training set must be split 'train' (held-out boxes are "
                              "split 'test').", key="dataset.split",
                              line=cfg.line(("dataset", "split")),
                              received={"split": out["dataset"]["split"]})
        return out

    def train(self, cfg, resume: bool = False) -> dict:
        return train_d3m(cfg, resume)


def augment_batch(u: np.ndarray, t: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """One random cube symmetry and periodic shift per sample, the same for input ``u`` and
    target ``t`` (``(batch, n, n, n, 3)``, channels last)."""
    from astrogen.models.d3m import apply_symmetry, cube_symmetries

    rng = np.random.default_rng(seed)
    syms = cube_symmetries()
    n = u.shape[1]
    uo, to = np.empty_like(u), np.empty_like(t)
    for i in range(len(u)):
        perm, flips = syms[int(rng.integers(len(syms)))]
        shift = tuple(int(s) for s in rng.integers(0, n, size=3))
        uo[i] = apply_symmetry(u[i], perm, flips, shift)
        to[i] = apply_symmetry(t[i], perm, flips, shift)
    return uo, to


def prepare_dataset(cfg, log=print):
    """Build the displacement data set if incomplete; ``(path, manifest)``."""
    from astrogen.datasets.nbody_displacements import (DisplacementDatasetConfig,
                                                       build_displacement_dataset,
                                                       dataset_is_complete, read_manifest)

    ds = {k: v for k, v in cfg["dataset"].items() if k != "path"}
    path = Path(cfg["dataset"]["path"])
    if not dataset_is_complete(path):
        build_displacement_dataset(path, DisplacementDatasetConfig(**ds), log=log)
    return path, read_manifest(path)


def warm_start(model, path) -> dict:
    """Copy the weights of the saved D3M at ``path`` into ``model`` (same architecture and
    scale, else :class:`~astrogen.errors.ConfigError` naming ``training.init_from``); returns
    ``{"model": path, "training": <its training record>}`` for the new model's metadata."""
    from astrogen.errors import ConfigError
    from astrogen.models.d3m import load_d3m

    src = load_d3m(path)
    if (src.channels, src.convs_per_level, src.scale) != (model.channels,
                                                          model.convs_per_level, model.scale):
        raise ConfigError("must be a D3M with the configured channels, convs_per_level and "
                          "scale.", key="training.init_from",
                          received={"init_from": str(path), "channels": src.channels,
                                    "convs_per_level": src.convs_per_level,
                                    "scale": src.scale})
    model.network.set_weights(src.network.get_weights())
    return {"model": str(path), "training": dict(src.meta.get("training", {}))}


def train_d3m(cfg, resume: bool = False, log=print) -> dict:
    """Train the displacement emulator as configured; returns a summary."""
    import keras
    import tensorflow as tf

    from astrogen.datasets.nbody_displacements import read_boxes
    from astrogen.models.d3m import D3M

    t_cfg, m_cfg = cfg["training"], cfg["d3m"]
    seed = int(cfg["seed"])
    run = Run(cfg, resume)
    ds_path, manifest = prepare_dataset(cfg, log)
    run.start()
    data = read_boxes(ds_path)
    scale = float(m_cfg["scale"])
    u_all = (np.moveaxis(data["zeldovich"], 1, -1) / scale).astype(np.float32)
    t_all = (np.moveaxis(data["target"], 1, -1) / scale).astype(np.float32)
    n_box = len(u_all)
    d = manifest["config"]
    meta = {"n_particles": d["n_particles"], "box_size": d["box_size"],
            "cell_size": manifest["cell_size"], "redshift": d["redshift"],
            "z_init": d["z_init"], "pm_n_steps": d["n_steps"],
            "force_resolution": d["force_resolution"],
            "cosmology": {k: d[k] for k in ("Om0", "Ob0", "h", "sigma8", "n_s")},
            "input": "Zel'dovich displacement D1(a) Psi1 on the PM lattice, Mpc/h",
            "dataset": {"seed": d["seed"], "split": d["split"], "n_boxes": d["n_boxes"],
                        "first_box": d["first_box"]},
            "training": {"config": str(cfg.source), "seed": seed}}
    keras.utils.set_random_seed(derive_seed(seed, "init") % (2 ** 31))
    model = D3M(channels=m_cfg["channels"], convs_per_level=m_cfg["convs_per_level"],
                scale=scale, meta=meta)
    if t_cfg["init_from"]:
        meta["training"]["init_from"] = warm_start(model, t_cfg["init_from"])
    opt = keras.optimizers.Adam(t_cfg["learning_rate"], name="d3m_adam")
    opt.build(model.network.trainable_variables)
    step = run.restore({"network": model.network.weights, "optimizer": opt.variables},
                       model="d3m")
    if run.ckpt is not None:
        log(f"d3m: resumed from {run.ckpt.name} (step {step})")
    train_step = model.make_train_step(opt)
    batch = min(int(t_cfg["batch_size"]), n_box)

    def step_fn(g: int) -> dict:
        rng = np.random.default_rng(derive_seed(seed, "batch", g))
        idx = rng.choice(n_box, size=batch, replace=False)
        u, t = u_all[idx], t_all[idx]
        if t_cfg["augment"]:
            u, t = augment_batch(u, t, derive_seed(seed, "augment", g))
        return train_step(tf.constant(u), tf.constant(t))

    total = int(t_cfg["steps"])
    export = exporter(cfg, model)
    summary = run.loop(step, total, step_fn, name="d3m", on_checkpoint=export)
    if summary["complete"] and not run.output.is_file():
        export(summary["steps_done"])
    summary["last"] = {"step": summary["steps_done"], **summary["last"]} if summary["last"] \
        else {}
    summary["steps_per_second"] = summary["steps_per_second"].get("train")
    return run.finish({"dataset": str(ds_path), "steps_total": total, **summary,
                       "n_boxes": int(n_box)})

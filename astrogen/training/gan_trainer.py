"""Training of the N-body WGAN-GP emulator (``model: nbody_gan``, ``configs/nbody_gan.yaml``).

``astrogen train configs/nbody_gan.yaml [--resume]``: builds the slice dataset
(:mod:`astrogen.datasets.nbody_slices`) if its folder is incomplete (resumable), then trains
:class:`astrogen.models.nbody_gan.NBodyGAN`. One training step = ``n_critic`` critic updates
(WGAN loss + gradient penalty, each on its own batch) + one generator update (adversarial
loss + ``l1_weight`` x L1 to the true field, both smoothed with a periodic Gaussian of
``l1_smoothing`` pixels if > 0). Batches are augmented with the symmetries of
a periodic square (random periodic shift, 90-degree rotations, flips), applied identically
to the condition and the target.

Run folder: ``checkpoints/`` (atomic ``ckpt_<step>.npz``: generator, critic and both Adam
states + the step counter; :mod:`astrogen.training.checkpoint`), ``losses.jsonl``,
``config.json``, ``result.json``. Every random draw (batch, augmentation, noise, penalty
interpolates) is a function of ``(seed, step)``, so a resumed run continues exactly. With
``training.export_every_checkpoint`` the model file is also (atomically) rewritten at every
checkpoint, so a run stopped early still leaves a usable model. With ``training.ema_decay``
> 0 the exported (and selected) generator holds the exponential moving average of its weights
(Polyak averaging, Yazici et al. 2019, arXiv:1806.04498), checkpointed as ``generator_ema``.

Conditioning (``gan.condition``): ``linear`` (the projected linear slab) or ``lpt`` (the
projected 2LPT density at the output time, computed from each box's stored 3-D linear
field; residual generator, He et al. 2019). ``training.power_weight`` adds the batch
log-power-spectrum term of :func:`astrogen.models.nbody_gan.power_loss`.

Checkpoint selection: with a ``validation:`` section (``path``, ``n_boxes``, ``seed``,
``noise_seed``) the run, once complete, scores every kept checkpoint on validation boxes
(:mod:`astrogen.training.gan_select`, scores in ``selection.json``) and exports the best
one instead of the last.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from astrogen.errors import AstrogenError, ConfigError, UnknownKeyError, suggest
from astrogen.io.atomic import save_model_atomic, write_json
from astrogen.seeds import derive_seed
from astrogen.training.checkpoint import flatten as _flatten
from astrogen.training.checkpoint import restore_run, resume_checkpoint, save_checkpoint
from astrogen.training.config import (_REQUIRED, TrainingConfig, _bool, _choice, _float,
                                      _int, _int_list, _str, check_mapping)

__all__ = ["check_nbody_config", "train_nbody_gan", "augment", "GAN_SCHEMA"]

_COMMON_TOP = {
    "model": (_REQUIRED, _str),
    "seed": (0, _int(0)),
    "output": (_REQUIRED, _str),
    "run_dir": (None, lambda v: v if v is None else _str(v)),
    "description": ("", lambda v: "" if v is None else str(v)),
    "dataset": ({}, lambda v: v),
    "training": ({}, lambda v: v),
}
_COMMON_TRAINING = {
    "steps": (_REQUIRED, _int(0)),
    "batch_size": (16, _int(1)),
    "learning_rate": (2e-4, _float(0.0, strict=True)),
    "beta_1": (0.5, _float(0.0)),
    "beta_2": (0.9, _float(0.0)),
    "augment": (True, _bool),
    "checkpoint_every": (100, _int(1)),
    "keep_checkpoints": (2, _int(1)),
    "log_every": (10, _int(1)),
    "max_steps_this_run": (None, _int(1, optional=True)),
    "export_every_checkpoint": (True, _bool),
    "progress": (False, _bool),
}

#: section -> key -> (default, check) of ``model: nbody_gan``.
GAN_SCHEMA: dict[str, dict[str, tuple[Any, Callable]]] = {
    "": {**_COMMON_TOP, "gan": ({}, lambda v: v), "validation": (None, lambda v: v)},
    "validation": {   # checkpoint selection on held-out boxes (astrogen.training.gan_select)
        "path": (_REQUIRED, _str),
        "n_boxes": (16, _int(1)),
        "seed": (5, _int(0)),
        "noise_seed": (13, _int(0)),
    },
    "gan": {
        "channels": ([16, 32, 64], _int_list),
        "critic_channels": ([16, 32, 64, 64], _int_list),
        "noise_channels": (1, _int(1)),
        "transform_a": (1.0, _float(0.0, strict=True)),
        "condition": ("linear", _choice("linear", "lpt")),
        "lpt_order": (2, _choice(1, 2)),
    },
    "training": {
        **_COMMON_TRAINING,
        "n_critic": (3, _int(1)),
        "critic_learning_rate": (None, _float(0.0, strict=True, optional=True)),
        "gp_weight": (10.0, _float(0.0)),
        "l1_weight": (10.0, _float(0.0)),
        "l1_smoothing": (0.0, _float(0.0)),   # pixels: Gaussian sigma of the L1 fields
        "power_weight": (0.0, _float(0.0)),   # weight of the batch log-power-spectrum term
        "ema_decay": (0.0, _float(0.0, below=1.0)),  # > 0: export averaged generator weights
    },
}


def _check_slice_dataset(data, cfg) -> dict:
    from astrogen.datasets.nbody_slices import SliceDatasetConfig

    if not isinstance(data, dict) or "path" not in data:
        raise ConfigError("must be a mapping with 'path' (folder of the slice dataset; built "
                          "if missing) and astrogen.datasets.nbody_slices settings.",
                          key="dataset", line=cfg.line(("dataset",)))
    allowed = ["path"] + SliceDatasetConfig.field_names()
    for key in data:
        if key not in allowed:
            raise UnknownKeyError(f"unknown key.{suggest(str(key), allowed)}",
                                  key=f"dataset.{key}", line=cfg.line(("dataset", key)),
                                  received={"allowed": allowed})
    body = {k: v for k, v in data.items() if k != "path"}
    try:
        ds = SliceDatasetConfig.from_dict(body)
    except AstrogenError as exc:
        k = exc.key or ""
        raise type(exc)(exc.message, key=f"dataset.{k}" if k else "dataset",
                        line=cfg.line(("dataset", k)), received=exc.received) from None
    return {"path": _str(data["path"]), **ds.to_dict()}


def check_nbody_config(cfg) -> TrainingConfig:
    """Check a ``model: nbody_gan`` or ``model: halo_unet`` training file
    (:class:`astrogen.pipeline.config.Config`) and fill in defaults."""
    model = cfg.data.get("model")
    if model == "nbody_gan":
        schema, section = GAN_SCHEMA, "gan"
    else:
        from astrogen.training.halo_trainer import HALO_SCHEMA

        schema, section = HALO_SCHEMA, "halo_unet"
    top = check_mapping(cfg.data, schema[""], cfg, ())
    out = TrainingConfig(top)
    out.source = cfg.source
    out[section] = check_mapping(top.get(section) or {}, schema[section], cfg, (section,))
    out["training"] = check_mapping(top["training"] or {}, schema["training"], cfg, ("training",))
    out["dataset"] = _check_slice_dataset(top["dataset"], cfg)
    if model == "nbody_gan" and top.get("validation") is not None:
        from astrogen.training.gan_select import check_validation_seed

        out["validation"] = check_mapping(top["validation"], schema["validation"], cfg,
                                          ("validation",))
        check_validation_seed(out["validation"], out["dataset"],
                              line=cfg.line(("validation", "seed")))
    if not str(out["output"]).endswith(".keras"):
        raise ConfigError("must be a file name ending in '.keras'.", key="output",
                          line=cfg.line(("output",)), received={"output": out["output"]})
    ch = out[section]["channels"]
    n = out["dataset"]["n_grid"]
    if n % (2 ** (len(ch) - 1)):
        raise ConfigError(f"dataset.n_grid must be a multiple of 2**(len(channels)-1) = "
                          f"{2 ** (len(ch) - 1)}.", key=f"{section}.channels",
                          line=cfg.line((section, "channels")), received={"n_grid": n})
    return out


# ------------------------------------------------------------------------- shared helpers
def prepare_run(cfg: TrainingConfig, resume: bool, log=print):
    """Resume checks, dataset build; returns ``(run_dir, ckpt, dataset_path)``."""
    from astrogen.datasets.nbody_slices import (SliceDatasetConfig, build_slice_dataset,
                                                dataset_is_complete)

    run_dir = cfg.run_dir
    config_file = run_dir / "config.json"

    def comparable(old):
        flat = _flatten((TrainingConfig(old) if old is not None else cfg).for_comparison())
        # the validation section only chooses among checkpoints: a finished run can be
        # resumed with one to select its best checkpoint
        return {k: v for k, v in flat.items() if not (
            (k.startswith("training.") and k.split(".")[1]
             in ("max_steps_this_run", "export_every_checkpoint", "progress", "steps"))
            or k == "validation" or k.startswith("validation."))}

    ckpt = resume_checkpoint(run_dir, resume, comparable)
    ds = {k: v for k, v in cfg["dataset"].items() if k != "path"}
    path = Path(cfg["dataset"]["path"])
    if not dataset_is_complete(path):
        build_slice_dataset(path, SliceDatasetConfig(**ds), log=log)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(config_file, cfg)
    return run_dir, ckpt, path


def augment(arrays: list[np.ndarray], seed: int) -> list[np.ndarray]:
    """Apply one random symmetry of the periodic square per image (shift, rotation, flip),
    the same to every array of ``arrays`` (each ``(batch, n, n)``)."""
    rng = np.random.default_rng(seed)
    b, n = arrays[0].shape[0], arrays[0].shape[1]
    shifts = rng.integers(0, n, size=(b, 2))
    rots = rng.integers(0, 4, size=b)
    flips = rng.integers(0, 2, size=b)
    out = [np.empty_like(a) for a in arrays]
    for i in range(b):
        for a, o in zip(arrays, out):
            x = np.roll(a[i], tuple(shifts[i]), axis=(0, 1))
            x = np.rot90(x, rots[i])
            o[i] = x[:, ::-1] if flips[i] else x
    return out




def after_step(last: dict, stop: int, t_cfg: dict, fh, t0: float, checkpoint,
               log=print) -> None:
    """Bookkeeping after training step ``last["step"]`` (GAN and halo U-Net): refuse
    non-finite losses, append ``last`` (+ elapsed seconds) to the loss log every
    ``log_every`` steps, call ``checkpoint(step)`` every ``checkpoint_every`` steps; both also
    at ``stop``."""
    step = last["step"]
    if not all(np.isfinite(v) for v in last.values()):
        raise AstrogenError(f"non-finite loss at step {step}: {last}")
    if step % int(t_cfg["log_every"]) == 0 or step == stop:
        last["elapsed_s"] = round(time.perf_counter() - t0, 2)
        fh.write(json.dumps(last) + "\n")
        fh.flush()
        if t_cfg["progress"]:
            log(json.dumps(last))
    if step % int(t_cfg["checkpoint_every"]) == 0 or step == stop:
        checkpoint(step)


# ------------------------------------------------------------------------- GAN training
def checkpointing(cfg, run_dir: Path, step: int, groups: dict, model, name: str):
    """``(total_steps, stop_step, checkpoint)`` of a run at ``step``: ``checkpoint(s)`` saves
    the variables of ``groups`` and, at the end (or every time with
    ``training.export_every_checkpoint``), exports ``model`` to ``cfg["output"]``."""
    t_cfg = cfg["training"]
    total = int(t_cfg["steps"])
    stop = total if t_cfg["max_steps_this_run"] is None else min(
        total, step + int(t_cfg["max_steps_this_run"]))
    output = Path(cfg["output"])

    def checkpoint(s):
        save_checkpoint(run_dir / "checkpoints", s, groups, {"model": name},
                        keep=t_cfg["keep_checkpoints"])
        if t_cfg["export_every_checkpoint"] or s >= total:
            model.meta["training"]["steps_done"] = int(s)
            model.meta["training"]["steps_total"] = total
            save_model_atomic(model, output)

    return total, stop, checkpoint


class _AveragedExport:
    """What ``checkpointing`` exports when ``training.ema_decay`` > 0: the GAN with its
    generator's averaged (EMA) weights swapped in for the save."""

    def __init__(self, gan, ema):
        self.gan, self.ema = gan, ema

    @property
    def meta(self) -> dict:
        return self.gan.meta

    def save(self, path, **kwargs):
        with self.ema.apply():
            return self.gan.save(path, **kwargs)


def train_nbody_gan(cfg: TrainingConfig, resume: bool = False, log=print) -> dict:
    """Train the emulator as configured (see the module docstring); returns a summary."""
    import keras
    import tensorflow as tf

    from astrogen.datasets.nbody_slices import read_manifest, read_slices
    from astrogen.models.nbody_gan import (NBodyGAN, critic_loss, generator_loss,
                                           gradient_penalty, power_loss)
    from astrogen.training.gan_select import dataset_condition_slabs

    t_cfg, g_cfg = cfg["training"], cfg["gan"]
    seed = int(cfg["seed"])
    run_dir, ckpt, ds_path = prepare_run(cfg, resume, log)
    manifest = read_manifest(ds_path)
    data = read_slices(ds_path, keys=("linear", "evolved"))
    linear = data["linear"].astype(np.float32)
    n_img, n = linear.shape[0], linear.shape[1]
    cond_scale = float(np.std(linear))
    dcfg = manifest["config"]
    meta = {"n_grid": dcfg["n_grid"], "box_size": dcfg["box_size"],
            "slab_thickness": dcfg["slab_thickness"], "cell_size": manifest["cell_size"],
            "slab_depth": manifest["slab_depth"], "redshift": dcfg["redshift"],
            "cosmology": {k: dcfg[k] for k in ("Om0", "Ob0", "h", "sigma8", "n_s")},
            "lattice_shift": 0.5 / int(dcfg["force_resolution"]),
            "pm": {k: dcfg[k] for k in ("z_init", "n_steps", "force_resolution")},
            "dataset": {"seed": dcfg["seed"], "n_boxes": dcfg["n_boxes"],
                        "first_box": dcfg["first_box"], "n_images": int(n_img)},
            "training": {"config": str(cfg.source), "seed": seed}}
    keras.utils.set_random_seed(derive_seed(seed, "init") % (2 ** 31))
    gan = NBodyGAN(size=n, transform_a=g_cfg["transform_a"], cond_scale=cond_scale,
                   channels=g_cfg["channels"], critic_channels=g_cfg["critic_channels"],
                   noise_channels=g_cfg["noise_channels"], meta=meta,
                   condition=g_cfg["condition"], lpt_order=g_cfg["lpt_order"])
    target = gan.transform.forward(data["evolved"]).astype(np.float32)
    if gan.condition == "lpt":
        log(f"nbody_gan: LPT (order {gan.lpt_order}) condition slabs of "
            f"{len(manifest['box_ids'])} boxes")
    cond = gan.network_condition(dataset_condition_slabs(gan, ds_path))

    def adam(name, lr):
        return keras.optimizers.Adam(lr, beta_1=t_cfg["beta_1"], beta_2=t_cfg["beta_2"],
                                     name=name)

    lr_c = t_cfg["critic_learning_rate"] or t_cfg["learning_rate"]
    opt_g, opt_c = adam("gen_adam", t_cfg["learning_rate"]), adam("critic_adam", lr_c)
    opt_g.build(gan.generator.trainable_variables)
    opt_c.build(gan.critic.trainable_variables)
    groups = {"generator": gan.generator.weights, "critic": gan.critic.weights,
              "gen_optimizer": opt_g.variables, "critic_optimizer": opt_c.variables}
    ema = None
    if t_cfg["ema_decay"] > 0:
        from astrogen.models.ema import EMA

        ema = EMA(gan.generator, float(t_cfg["ema_decay"]))
        groups["generator_ema"] = ema.shadow + [ema.num_updates]
    log_path = run_dir / "losses.jsonl"
    step = restore_run(ckpt, groups, log_path)
    if ckpt is not None:
        log(f"nbody_gan: resumed from {ckpt.name} (step {step})")

    gp_w, l1_w = float(t_cfg["gp_weight"]), float(t_cfg["l1_weight"])
    l1_s = float(t_cfg["l1_smoothing"])
    p_w = float(t_cfg["power_weight"])
    gen, crit = gan.generator, gan.critic

    @tf.function(reduce_retracing=True)
    def critic_step(real, c, z, eps):
        fake = gen([c, z], training=True)
        with tf.GradientTape() as tape:
            d_real = crit([real, c], training=True)
            d_fake = crit([fake, c], training=True)
            gp = gradient_penalty(crit, real, fake, c, eps)
            loss, w = critic_loss(d_real, d_fake, gp, gp_w)
        grads = tape.gradient(loss, crit.trainable_variables)
        opt_c.apply_gradients(zip(grads, crit.trainable_variables))
        return loss, w, gp

    @tf.function(reduce_retracing=True)
    def gen_step(real, c, z):
        with tf.GradientTape() as tape:
            fake = gen([c, z], training=True)
            d_fake = crit([fake, c], training=True)
            loss, adv, l1 = generator_loss(d_fake, fake, real, l1_w, l1_s)
            pw = power_loss(fake, real, gan.transform) if p_w > 0 else tf.constant(0.0)
            loss = loss + p_w * pw
        grads = tape.gradient(loss, gen.trainable_variables)
        opt_g.apply_gradients(zip(grads, gen.trainable_variables))
        if ema is not None:
            ema.update()
        return loss, adv, l1, pw

    batch = min(int(t_cfg["batch_size"]), n_img)

    def draw(s: int, k: int):
        rng = np.random.default_rng(derive_seed(seed, "batch", s, k))
        idx = rng.choice(n_img, size=batch, replace=False)
        c, t = cond[idx], target[idx]
        if t_cfg["augment"]:
            c, t = augment([c, t], derive_seed(seed, "augment", s, k))
        z = rng.standard_normal((batch, n, n, gan.noise_channels)).astype(np.float32)
        eps = rng.uniform(size=(batch, 1, 1, 1)).astype(np.float32)
        return (tf.constant(t[..., None]), tf.constant(c[..., None]), tf.constant(z),
                tf.constant(eps))

    total, stop, checkpoint = checkpointing(cfg, run_dir, step, groups,
                                            gan if ema is None else _AveragedExport(gan, ema),
                                            "nbody_gan")
    output = Path(cfg["output"])

    t0 = time.perf_counter()
    start = step
    last = {}
    with open(log_path, "a") as fh:
        while step < stop:
            for k in range(int(t_cfg["n_critic"])):
                real, c, z, eps = draw(step, k)
                lc, w, gp = critic_step(real, c, z, eps)
            real, c, z, _ = draw(step, "gen")
            lg, adv, l1, pw = gen_step(real, c, z)
            step += 1
            last = {"step": step, "critic_loss": float(lc), "wasserstein": float(w),
                    "gradient_penalty": float(gp), "generator_loss": float(lg),
                    "adversarial": float(adv), "l1": float(l1)}
            if p_w > 0:
                last["power"] = float(pw)
            after_step(last, stop, t_cfg, fh, t0, checkpoint, log)
    elapsed = time.perf_counter() - t0
    if step >= total and not output.is_file():
        checkpoint(step)
    selection = None
    if step >= total and cfg.get("validation") and not (run_dir / "selection.json").is_file():
        from astrogen.training.gan_select import select_checkpoint, validation_dataset

        val = cfg["validation"]
        val_path = validation_dataset(val, cfg["dataset"], log=log)
        selection = select_checkpoint(gan, run_dir, val_path, val["noise_seed"], log=log)
        best = selection["best"]
        gan.meta["training"].update(
            steps_done=best["step"], steps_total=total,
            selected_on_validation={"seed": val["seed"], "n_boxes": val["n_boxes"],
                                    "max_abs_power_error": best["max_abs_power_error"]})
        save_model_atomic(gan, output)
        write_json(run_dir / "selection.json", selection)
        log(f"nbody_gan: exported step {best['step']} (validation max |P ratio - 1| = "
            f"{best['max_abs_power_error']:.3f}) to {output}")
    result = {"output": str(output), "run_dir": str(run_dir), "dataset": str(ds_path),
              "steps_done": step, "steps_total": total, "complete": step >= total,
              "last": last, "steps_per_second": (step - start) / elapsed if elapsed else None,
              "n_images": int(n_img), "cond_scale": cond_scale,
              "selected_step": selection["best"]["step"] if selection else None}
    write_json(run_dir / "result.json", result)
    return result

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

import numpy as np

from astrogen.io.atomic import save_model_atomic, write_json
from astrogen.seeds import derive_seed
from astrogen.training.loop import Run
from astrogen.training.registry import Trainer, register_trainer
from astrogen.training.schema import (REQUIRED, check_choice, check_float, check_int,
                                      check_int_list, check_mapping, check_str, top_level)
from astrogen.training.slices import (augment, check_slice_config, dataset_meta, exporter,
                                      prepare_slices, slice_meta, slice_training_keys)

__all__ = ["GAN_SCHEMA", "GanTrainer", "train_nbody_gan", "augment"]

#: section -> key -> (default, check) of ``model: nbody_gan``.
GAN_SCHEMA: dict = {
    "": top_level("nbody_gan", sections=("gan",), validation=(None, lambda v: v)),
    "validation": {   # checkpoint selection on held-out boxes (astrogen.training.gan_select)
        "path": (REQUIRED, check_str),
        "n_boxes": (16, check_int(1)),
        "seed": (5, check_int(0)),
        "noise_seed": (13, check_int(0)),
    },
    "gan": {
        "channels": ([16, 32, 64], check_int_list),
        "critic_channels": ([16, 32, 64, 64], check_int_list),
        "noise_channels": (1, check_int(1)),
        "transform_a": (1.0, check_float(0.0, strict=True)),
        "condition": ("linear", check_choice("linear", "lpt")),
        "lpt_order": (2, check_choice(1, 2)),
    },
    "training": {
        **slice_training_keys(learning_rate=2e-4, beta_1=0.5, beta_2=0.9),
        "n_critic": (3, check_int(1)),
        "critic_learning_rate": (None, check_float(0.0, strict=True, optional=True)),
        "gp_weight": (10.0, check_float(0.0)),
        "l1_weight": (10.0, check_float(0.0)),
        "l1_smoothing": (0.0, check_float(0.0)),   # pixels: Gaussian sigma of the L1 fields
        "power_weight": (0.0, check_float(0.0)),   # weight of the batch log-power term
        "ema_decay": (0.0, check_float(0.0, below=1.0)),  # > 0: export averaged weights
    },
}


@register_trainer("nbody_gan")
class GanTrainer(Trainer):
    """``model: nbody_gan``."""

    def check(self, cfg):
        # the validation section only chooses among checkpoints: a finished run can be
        # resumed with one to select its best checkpoint
        out = check_slice_config(cfg, GAN_SCHEMA, "gan", resume_mutable=("validation",))
        if out.get("validation") is not None:
            from astrogen.training.gan_select import check_validation_seed

            out["validation"] = check_mapping(out["validation"], GAN_SCHEMA["validation"],
                                              cfg, ("validation",))
            check_validation_seed(out["validation"], out["dataset"],
                                  line=cfg.line(("validation", "seed")))
        return out

    def train(self, cfg, resume: bool = False) -> dict:
        return train_nbody_gan(cfg, resume)


class _AveragedExport:
    """What is exported when ``training.ema_decay`` > 0: the GAN with its generator's
    averaged (EMA) weights swapped in for the save."""

    def __init__(self, gan, ema):
        self.gan, self.ema = gan, ema

    @property
    def meta(self) -> dict:
        return self.gan.meta

    def save(self, path, **kwargs):
        with self.ema.apply():
            return self.gan.save(path, **kwargs)


def train_nbody_gan(cfg, resume: bool = False, log=print) -> dict:
    """Train the emulator as configured (see the module docstring); returns a summary."""
    import keras
    import tensorflow as tf

    from astrogen.datasets.nbody_slices import read_slices
    from astrogen.models.nbody_gan import NBodyGAN
    from astrogen.training.gan_select import dataset_condition_slabs

    t_cfg, g_cfg = cfg["training"], cfg["gan"]
    seed = int(cfg["seed"])
    run = Run(cfg, resume)
    ds_path, manifest = prepare_slices(cfg, log)
    run.start()
    data = read_slices(ds_path, keys=("linear", "evolved"))
    linear = data["linear"].astype(np.float32)
    n_img, n = linear.shape[0], linear.shape[1]
    cond_scale = float(np.std(linear))
    dcfg = manifest["config"]
    meta = {**slice_meta(manifest),
            "lattice_shift": 0.5 / int(dcfg["force_resolution"]),
            "pm": {k: dcfg[k] for k in ("z_init", "n_steps", "force_resolution")},
            "dataset": dataset_meta(manifest, n_img),
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
    step = run.restore(groups, model="nbody_gan")
    if run.ckpt is not None:
        log(f"nbody_gan: resumed from {run.ckpt.name} (step {step})")
    p_w = float(t_cfg["power_weight"])
    critic_step, gen_step = gan.make_train_steps(
        opt_g, opt_c, t_cfg["gp_weight"], t_cfg["l1_weight"], t_cfg["l1_smoothing"], p_w, ema)
    batch = min(int(t_cfg["batch_size"]), n_img)

    def draw(s: int, k):
        rng = np.random.default_rng(derive_seed(seed, "batch", s, k))
        idx = rng.choice(n_img, size=batch, replace=False)
        c, t = cond[idx], target[idx]
        if t_cfg["augment"]:
            c, t = augment([c, t], derive_seed(seed, "augment", s, k))
        z = rng.standard_normal((batch, n, n, gan.noise_channels)).astype(np.float32)
        eps = rng.uniform(size=(batch, 1, 1, 1)).astype(np.float32)
        return (tf.constant(t[..., None]), tf.constant(c[..., None]), tf.constant(z),
                tf.constant(eps))

    def step_fn(g: int) -> dict:
        for k in range(int(t_cfg["n_critic"])):
            real, c, z, eps = draw(g, k)
            lc, w, gp = critic_step(real, c, z, eps)
        real, c, z, _ = draw(g, "gen")
        lg, adv, l1, pw = gen_step(real, c, z)
        out = {"critic_loss": lc, "wasserstein": w, "gradient_penalty": gp,
               "generator_loss": lg, "adversarial": adv, "l1": l1}
        return {**out, "power": pw} if p_w > 0 else out

    total = int(t_cfg["steps"])
    export = exporter(cfg, gan if ema is None else _AveragedExport(gan, ema))
    summary = run.loop(step, total, step_fn, name="nbody_gan", on_checkpoint=export)
    if summary["complete"] and not run.output.is_file():
        export(summary["steps_done"])
    summary["last"] = {"step": summary["steps_done"], **summary["last"]} if summary["last"] \
        else {}
    summary["steps_per_second"] = summary["steps_per_second"].get("train")
    selection = None
    run_dir = run.run_dir
    if summary["complete"] and cfg.get("validation") and not (
            run_dir / "selection.json").is_file():
        from astrogen.training.gan_select import select_checkpoint, validation_dataset

        val = cfg["validation"]
        val_path = validation_dataset(val, cfg["dataset"], log=log)
        selection = select_checkpoint(gan, run_dir, val_path, val["noise_seed"], log=log)
        best = selection["best"]
        gan.meta["training"].update(
            steps_done=best["step"], steps_total=total,
            selected_on_validation={"seed": val["seed"], "n_boxes": val["n_boxes"],
                                    "max_abs_power_error": best["max_abs_power_error"]})
        save_model_atomic(gan, run.output)
        write_json(run_dir / "selection.json", selection)
        log(f"nbody_gan: exported step {best['step']} (validation max |P ratio - 1| = "
            f"{best['max_abs_power_error']:.3f}) to {run.output}")
    return run.finish({"dataset": str(ds_path), "steps_total": total, **summary,
                       "n_images": int(n_img), "cond_scale": cond_scale,
                       "selected_step": selection["best"]["step"] if selection else None})

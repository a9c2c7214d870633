r"""Training of the galaxy diffusion model (``model: ddpm`` in a training YAML).

Data: the ``truth`` field (PSF-free, noise-free stamps) of the same sharded training set as
the FlowVAE (:mod:`astrogen.datasets.galaxy_stamps`), mapped to the network space of
:class:`astrogen.models.ddpm_galaxy.DDPMGalaxyModel` (per-row flux normalisation by the
catalog magnitude, then ``arcsinh(. / s) / d``), conditioned on the features ``(mag, ln hlr,
ln(1+z))`` standardised with the training rows' mean and standard deviation. The last
``training.holdout`` rows of the dataset are not trained on (they are the held-out set of the
memorisation test of ``benchmarks/ddpm_benchmark.py``).

Loss: the "simple" loss of Ho et al. (2020) with ``t`` uniform in ``[0, T)``; the condition of
each row is replaced by the null condition with probability ``ddpm.cond_drop_prob``
(classifier-free guidance). Adam with linear warm-up then cosine decay, optional global-norm
clipping, an exponential moving average of the weights (:class:`astrogen.models.ema.EMA`)
which is what the final model holds.

Determinism and resume: step ``g`` uses rows ``perm_e[i*B:(i+1)*B]`` with ``e, i = divmod(g,
n_train // B)`` and ``perm_e`` a numpy permutation seeded with ``derive_seed(seed, "data",
e)``; its timesteps, noise and dropout mask are TensorFlow stateless draws seeded with
``(derive_seed(seed, "step") mod 2**31, g)``. A checkpoint (network weights, EMA shadow
weights and counter, optimizer variables, step) is therefore all the state there is:
``--resume`` continues exactly.

Run folder: ``config.json``, ``checkpoints/`` (``ckpt_<step>.npz`` + ``latest.json``),
``losses.jsonl`` (``loss`` per logged step; ``monitor`` lines: the loss of the EMA weights
on a fixed set of held-out rows at fixed timesteps and noise), ``result.json``. The step is
:class:`astrogen.models.ddpm_unet.DiffusionTrainer`'s; the loop is
:class:`astrogen.training.loop.Run`'s.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from astrogen.errors import ConfigError
from astrogen.io.atomic import save_model_atomic
from astrogen.seeds import derive_seed
from astrogen.training.checkpoint import load_checkpoint, restore_variables
from astrogen.training.loop import Run, checkpoint_of_run
from astrogen.training.registry import Trainer, register_trainer
from astrogen.training.schema import (REQUIRED, check_bool, check_choice, check_float,
                                      check_int, check_int_list, check_sections, loop_keys,
                                      top_level)

__all__ = ["DDPMTrainer", "train_ddpm", "export_checkpoint", "DDPM_SCHEMA", "build_network",
           "model_parts", "ddpm_learning_rate"]

#: section -> key -> (default, check) of ``model: ddpm``
DDPM_SCHEMA: dict = {
    "": top_level("ddpm", sections=("ddpm",)),
    "ddpm": {
        "base_channels": (16, check_int(1)),
        "channel_mults": ([1, 2, 4, 4], check_int_list),
        "num_res_blocks": (1, check_int(1)),
        "attention_resolutions": ([8], check_int_list),
        "num_heads": (1, check_int(1)),
        "dropout": (0.0, check_float(0.0)),
        "norm_groups": (8, check_int(1)),
        "cond_drop_prob": (0.1, check_float(0.0)),
        "schedule": ("cosine", check_choice("cosine", "linear")),
        "num_train_steps": (1000, check_int(2)),
        "flux_normalize": (True, check_bool),
        "intensity_scale": (3e-4, check_float(0.0, strict=True)),
        "intensity_divisor": (3.0, check_float(0.0, strict=True)),
        "prediction": ("eps", check_choice("eps", "v")),
    },
    "training": {
        "batch_size": (32, check_int(1)),
        "steps": (REQUIRED, check_int(0)),
        "learning_rate": (5e-4, check_float(0.0, strict=True)),
        "warmup_steps": (100, check_int(0)),
        "lr_schedule": ("cosine", check_choice("constant", "cosine")),
        "lr_final_fraction": (0.05, check_float(0.0)),
        "clipnorm": (1.0, check_float(0.0, strict=True, optional=True)),
        "ema_decay": (0.999, check_float(0.0, below=1.0)),
        "holdout": (1000, check_int(0)),
        **loop_keys(checkpoint_every=200, log_every=10, progress=True),
        "monitor_size": (128, check_int(0)),
        "monitor_every": (500, check_int(0)),
    },
}


@register_trainer("ddpm")
class DDPMTrainer(Trainer):
    """``model: ddpm``."""

    def check(self, cfg):
        from astrogen.datasets.galaxy_stamps import StampDatasetConfig

        out = check_sections(cfg, DDPM_SCHEMA, ("ddpm",), StampDatasetConfig, "stamp dataset",
                             ("training.monitor_every",))
        d, t, ds = out["ddpm"], out["training"], out["dataset"]
        n, levels = ds["stamp_size"], len(d["channel_mults"])
        if n % (2 ** (levels - 1)):
            raise ConfigError(f"dataset.stamp_size must be a multiple of "
                              f"2**(len(channel_mults)-1) = {2 ** (levels - 1)}.",
                              key="ddpm.channel_mults",
                              line=cfg.line(("ddpm", "channel_mults")),
                              received={"stamp_size": n, "channel_mults": d["channel_mults"]})
        res = [n // 2 ** i for i in range(levels)]
        bad = [r for r in d["attention_resolutions"] if r not in res]
        if bad:
            raise ConfigError(f"must be among the U-Net resolutions {res}.",
                              key="ddpm.attention_resolutions",
                              line=cfg.line(("ddpm", "attention_resolutions")),
                              received={"attention_resolutions": d["attention_resolutions"]})
        for key, hi in (("cond_drop_prob", 1.0), ("dropout", 0.999)):
            if d[key] > hi:
                raise ConfigError(f"must be <= {hi}.", key=f"ddpm.{key}",
                                  line=cfg.line(("ddpm", key)), received={key: d[key]})
        if t["holdout"] + t["batch_size"] > ds["n_galaxies"]:
            raise ConfigError("training.holdout + training.batch_size must not exceed "
                              "dataset.n_galaxies.", key="training.holdout",
                              line=cfg.line(("training", "holdout")),
                              received={"holdout": t["holdout"], "batch_size": t["batch_size"],
                                        "n_galaxies": ds["n_galaxies"]})
        return out

    def train(self, cfg, resume: bool = False) -> dict:
        return train_ddpm(cfg, resume)


# ---------------------------------------------------------------------- helpers
def build_network(d: dict, cond_mean, cond_std, image_size: int):
    """The :class:`DDPMUNet` of a ``ddpm`` config block."""
    from astrogen.models.ddpm_galaxy import FEATURE_NAMES
    from astrogen.models.ddpm_unet import DDPMUNet

    return DDPMUNet(image_size=image_size, channels=1, base_channels=d["base_channels"],
                    channel_mults=tuple(d["channel_mults"]), num_res_blocks=d["num_res_blocks"],
                    attention_resolutions=tuple(d["attention_resolutions"]),
                    num_heads=d["num_heads"], dropout=d["dropout"],
                    norm_groups=d["norm_groups"], cond_dim=3, cond_names=FEATURE_NAMES,
                    cond_mean=[float(v) for v in cond_mean],
                    cond_std=[float(v) for v in cond_std], cond_drop_prob=d["cond_drop_prob"],
                    prediction=d.get("prediction", "eps"))


def model_parts(cfg, manifest: dict, ds_path: Path, raw_c: np.ndarray, n_train: int):
    """Schedule, intensity transform and sidecar metadata of the model a config trains
    (``raw_c``: the dataset's raw conditions; rows ``n_train:`` are the held-out ones)."""
    from astrogen.datasets.galaxy_stamps import CONDITION_NAMES
    from astrogen.schedulers import NoiseSchedule

    d_cfg, t_cfg = cfg["ddpm"], cfg["training"]
    schedule = NoiseSchedule(kind=d_cfg["schedule"], num_train_steps=d_cfg["num_train_steps"])
    intensity = {"flux_normalize": d_cfg["flux_normalize"], "scale": d_cfg["intensity_scale"],
                 "divisor": d_cfg["intensity_divisor"]}
    n_gal = int(manifest["n_galaxies"])
    meta = {"stamp_size": int(manifest["stamp_size"]),
            "pixel_scale": float(manifest["pixel_scale"]),
            "flux_unit": str(manifest["flux_unit"]), "zero_point": float(manifest["zero_point"]),
            "condition_range": {k: [float(raw_c[:n_train, j].min()),
                                    float(raw_c[:n_train, j].max())]
                                for j, k in enumerate(CONDITION_NAMES)},
            "training": {"dataset": str(ds_path), "dataset_config": manifest["config"],
                         "rows_trained": [0, n_train], "holdout_rows": [n_train, n_gal],
                         "field": "truth", "seed": int(cfg["seed"]),
                         "steps": int(t_cfg["steps"]),
                         "batch_size": int(t_cfg["batch_size"]),
                         "ema_decay": t_cfg["ema_decay"]}}
    return schedule, intensity, meta


def ddpm_learning_rate(step, t_cfg):
    """Learning rate at ``step``: linear warm-up, then constant or cosine decay.

    Parameters
    ----------
    step : int
        Optimisation step, from 0.
    t_cfg : dict
        The ``training`` section: ``learning_rate``, ``warmup_steps``, ``steps``,
        ``lr_schedule`` (``"constant"`` or ``"cosine"``) and ``lr_final_fraction``.

    Returns
    -------
    float
        The learning rate; the cosine decays from ``learning_rate`` to
        ``lr_final_fraction * learning_rate`` at the last step.
    """
    base, warm, total = t_cfg["learning_rate"], t_cfg["warmup_steps"], t_cfg["steps"]
    if warm and step < warm:
        return base * (step + 1) / warm
    if t_cfg["lr_schedule"] == "constant" or total <= warm:
        return base
    u = min(1.0, (step - warm) / max(1, total - warm))
    a = t_cfg["lr_final_fraction"]
    return base * (a + (1 - a) * 0.5 * (1 + math.cos(math.pi * u)))


# ---------------------------------------------------------------------- main loop
def train_ddpm(cfg, resume: bool = False) -> dict:
    """Train the galaxy DDPM as configured (see module docstring); returns a summary dict.

    A second process on the same run folder is refused (``run_dir/.lock``)."""
    import keras
    import tensorflow as tf

    from astrogen.datasets.galaxy_stamps import (CONDITION_NAMES, prepare_stamp_dataset,
                                                 read_stamps)
    from astrogen.models.ddpm_galaxy import DDPMGalaxyModel, condition_features
    from astrogen.models.ddpm_unet import DiffusionTrainer, diffusion_loss

    t_cfg, d_cfg = cfg["training"], cfg["ddpm"]
    seed = int(cfg["seed"])
    run = Run(cfg, resume)
    run.start()
    ds_path, manifest = prepare_stamp_dataset(cfg["dataset"], progress=t_cfg["progress"])
    if list(manifest["conditions"]["names"]) != list(CONDITION_NAMES):
        raise ConfigError("unexpected condition columns in the dataset.", key="dataset.path",
                          received={"conditions": manifest["conditions"]["names"]})
    n_gal, n = int(manifest["n_galaxies"]), int(manifest["stamp_size"])

    # ---- data (held in memory: 20000 64x64 stamps are 330 MB in float32) -----------------
    data = read_stamps(ds_path, fields=("truth", "conditions"))
    n_train = n_gal - int(t_cfg["holdout"])
    raw_c = data["conditions"].astype(np.float64)
    feats = condition_features(raw_c)
    f_mean = feats[:n_train].astype(np.float64).mean(axis=0)
    f_std = feats[:n_train].astype(np.float64).std(axis=0)
    schedule, intensity, meta = model_parts(cfg, manifest, ds_path, raw_c, n_train)
    keras.utils.set_random_seed(derive_seed(seed, "init") % (2 ** 31))
    net = build_network(d_cfg, f_mean, f_std, n)
    net.build()
    gm = DDPMGalaxyModel(net, schedule, intensity, meta)
    x_all = gm.encode(data["truth"], raw_c[:, 0]).astype(np.float32)
    del data

    clip = {"global_clipnorm": t_cfg["clipnorm"]} if t_cfg["clipnorm"] else {}
    opt = keras.optimizers.Adam(learning_rate=float(ddpm_learning_rate(0, t_cfg)),
                                name="ddpm_adam", **clip)
    trainer = DiffusionTrainer(net, schedule, opt, ema_decay=float(t_cfg["ema_decay"]),
                               seed=derive_seed(seed, "step") % (2 ** 31))
    ema = trainer.ema
    step = run.restore({"model": net.weights, "optimizer": opt.variables,
                        "ema": ema.shadow + [ema.num_updates]}, seed=seed)
    (run.run_dir / "result.json").unlink(missing_ok=True)
    T = schedule.num_train_steps

    # monitor: EMA loss on fixed held-out rows, fixed t and noise
    mon = None
    m_size = min(int(t_cfg["monitor_size"]), n_gal - n_train)
    if m_size > 0:
        rng = np.random.default_rng(derive_seed(seed, "monitor"))
        mon = {"x": x_all[n_train:n_train + m_size], "c": feats[n_train:n_train + m_size],
               "t": rng.integers(0, T, m_size).astype(np.int32),
               "noise": rng.standard_normal((m_size, n, n, 1)).astype(np.float32)}

    @tf.function(reduce_retracing=True)
    def eval_loss(x0, c, t, noise):
        return diffusion_loss(net, schedule, x0, t, noise, c, None, training=False)

    def monitor(s):
        with ema.apply():
            vals = [float(eval_loss(mon["x"][i:i + 64], mon["c"][i:i + 64], mon["t"][i:i + 64],
                                    mon["noise"][i:i + 64])) * len(mon["x"][i:i + 64])
                    for i in range(0, m_size, 64)]
        run.write({"step": s, "phase": "monitor", "ema_loss_holdout": sum(vals) / m_size})

    batch = int(t_cfg["batch_size"])
    spe = n_train // batch
    data_seed = derive_seed(seed, "data")
    perms: dict = {}

    def rows(g: int) -> np.ndarray:
        e, i = divmod(g, spe)
        if e not in perms:
            perms.clear()
            perms[e] = np.random.default_rng(derive_seed(data_seed, e)).permutation(n_train)
        return perms[e][i * batch:(i + 1) * batch]

    total = int(t_cfg["steps"])

    def step_fn(g: int) -> dict:
        r = rows(g)
        opt.learning_rate = float(ddpm_learning_rate(g, t_cfg))
        loss = trainer.train_step(x_all[r], feats[r], step=g)
        return {"phase": "train", "loss": loss, "lr": float(np.asarray(opt.learning_rate))}

    def before(s: int, stop: int) -> None:
        if mon is not None and s == 0 and stop > 0:
            monitor(0)

    def after(s: int, out: dict, stop: int) -> None:
        if mon is not None and t_cfg["monitor_every"] and (
                s % t_cfg["monitor_every"] == 0 or s == total):
            monitor(s)

    result = {"dataset": str(ds_path), "steps": total, "start_step": step, "n_train": n_train,
              "holdout": n_gal - n_train}
    summary = run.loop(step, total, step_fn, name="ddpm", before=before, after=after,
                       not_finite="the diffusion loss is not finite (lower "
                                  "training.learning_rate or set clipnorm).")
    summary["steps_per_second"] = summary["steps_per_second"].get("train")
    summary["last"] = {k: v for k, v in summary["last"].items() if k != "phase"} or None
    result.update(summary)
    mons = [x for x in run.log_lines() if x.get("phase") == "monitor"]
    if mons:
        result["monitor"] = {"first": mons[0], "last": mons[-1]}
    if summary["complete"]:
        ema.copy_to(net)  # the shipped model holds the averaged weights
        gm.meta["training"].update(final_monitor=mons[-1] if mons else None,
                                   steps_done=summary["steps_done"], complete=True)
        save_model_atomic(gm, run.output)
    return run.finish(result)


def export_checkpoint(config_path, overrides: list[str] | None = None, output=None) -> Path:
    """Write the EMA weights of the newest checkpoint of a (possibly unfinished) run as a
    model file (``output``, default the config's ``output``), e.g. to use or ship the model
    of a run stopped by ``training.max_steps_this_run``. The sidecar's ``training`` block
    records ``steps_done`` and ``complete``.

    Example::

        python -c "from astrogen.training.ddpm_trainer import export_checkpoint; \\
                   export_checkpoint('configs/ddpm.yaml', ['run_dir=...'], 'm.keras')"
    """
    from astrogen.datasets.galaxy_stamps import read_manifest, read_stamps
    from astrogen.models.ddpm_galaxy import DDPMGalaxyModel, condition_features
    cfg, ckpt = checkpoint_of_run(config_path, overrides, ("ddpm",))
    t_cfg, d_cfg = cfg["training"], cfg["ddpm"]
    ds_path = Path(cfg["dataset"]["path"])
    manifest = read_manifest(ds_path)
    n_gal, n = int(manifest["n_galaxies"]), int(manifest["stamp_size"])
    n_train = n_gal - int(t_cfg["holdout"])
    raw_c = read_stamps(ds_path, fields=("conditions",))["conditions"].astype(np.float64)
    feats = condition_features(raw_c)[:n_train].astype(np.float64)
    net = build_network(d_cfg, feats.mean(axis=0), feats.std(axis=0), n)
    net.build()
    state, values = load_checkpoint(ckpt)
    restore_variables(net.weights, values["model"], "model", ckpt)
    restore_variables(net.trainable_weights, values["ema"][:-1], "ema", ckpt)
    step = int(state["step"])
    schedule, intensity, meta = model_parts(cfg, manifest, ds_path, raw_c, n_train)
    meta["training"].update(steps_done=step, complete=step >= int(t_cfg["steps"]),
                            checkpoint=ckpt.name)
    out = Path(output) if output is not None else Path(cfg["output"])
    save_model_atomic(DDPMGalaxyModel(net, schedule, intensity, meta), out)
    return out

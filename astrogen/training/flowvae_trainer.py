"""Training loop of the conditional FlowVAE (Lanusse et al. 2021, arXiv:2008.03833).

Phases (global step ``g`` counts both):

1. ``g < vae_steps``: VAE on the negative ELBO (:func:`astrogen.models.flowvae.train_vae_step`)
   with the PSF-aware likelihood of each stamp (its PSF and noise power spectrum, or white
   ``noise_sigma`` with ``noise_model: sigma``). Batch ``g`` is batch ``g % S`` of epoch
   ``g // S`` (``S = n_galaxies // batch_size``) of :func:`astrogen.datasets.stamp_dataset`
   with seed ``derive_seed(seed, "data")``; the reparameterisation noise of step ``g`` is
   seeded with ``(seed, g)``.
2. ``vae_steps <= g < vae_steps + flow_steps``: the encoder means of all training stamps are
   computed once (row order, cached in ``run_dir/latents.npz``) and the conditional flow is
   fitted on them (:func:`astrogen.models.flowvae.train_flow_step`), flow step ``f`` taking
   rows ``perm_e[i*B:(i+1)*B]`` with ``e, i = divmod(f, n // B)`` and ``perm_e`` a numpy
   permutation seeded with ``derive_seed(seed, "flow_data", e)``.

Everything random is therefore a function of ``(seed, step)``; a checkpoint (weights,
non-trainable condition normalisation, both optimizers' variables including their iteration
counters, and the step) is all the state there is, and ``--resume`` continues exactly.

Data parallelism (``training.strategy``, :mod:`astrogen.pipeline.tf_distribute`): with
``strategy: mirrored`` the model, its condition normalisation and both optimizers are
created in the scope of a ``tf.distribute.MirroredStrategy`` over ``training.devices``
(default: every GPU, else the CPU; ``logical_cpu_devices: N`` first splits the CPU into
``N`` logical devices, for tests), so every variable is mirrored on each device. Each VAE
and flow step then runs once per replica on an equal, contiguous share of the same global
batch (``batch_size`` and ``flow_batch_size`` must be divisible by the number of replicas);
each replica's loss is its shard mean divided by the number of replicas, so the
all-reduced gradient is the gradient of the global-batch loss, and the reparameterisation
noise of step ``g`` is still drawn for the whole global batch from ``(seed, g)`` (replica
``r`` uses its rows). A run is therefore the same run on 1, 2 or 8 devices, up to
floating-point rounding (see :func:`astrogen.models.flowvae.train_vae_step`), and may be
resumed on other devices. Commands do not change: the devices are configuration.
Checkpoints hold plain arrays (the mirrored variables' common value) and restore into
mirrored or ordinary variables alike.

Run folder (``run_dir``): ``config.json`` (the checked configuration), ``checkpoints/``
(``ckpt_<step>.npz`` + ``latest.json``), ``losses.jsonl`` (one JSON object per logged step;
on resume the lines after the restored checkpoint are dropped), ``latents.npz``,
``eval_real.json`` (ELBO of the 100 real COSMOS stamps after the VAE phase) and
``result.json``.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np

from astrogen.errors import ConfigError
from astrogen.io.atomic import save_npz, save_model_atomic, write_json
from astrogen.seeds import derive_seed
from astrogen.training.checkpoint import flatten as _flatten
from astrogen.training.checkpoint import restore_run, resume_checkpoint, save_checkpoint
from astrogen.training.config import TrainingConfig, check_distribution

__all__ = ["train_flowvae"]


# ---------------------------------------------------------------------- helpers
def _prepare_dataset(cfg: TrainingConfig) -> tuple[Path, dict]:
    from astrogen.datasets.galaxy_stamps import (StampDatasetConfig, build_stamp_dataset,
                                                 dataset_is_complete, read_manifest)

    ds = dict(cfg["dataset"])
    path = Path(ds.pop("path"))
    dcfg = StampDatasetConfig.from_dict(ds)
    if dataset_is_complete(path):
        manifest = read_manifest(path)
        have = StampDatasetConfig.from_dict(manifest["config"]).identity()
        if have != dcfg.identity():
            diff = {k: (v, dcfg.identity()[k]) for k, v in have.items()
                    if dcfg.identity()[k] != v}
            raise ConfigError("the dataset folder holds another dataset; change dataset.path "
                              "or delete the folder.", key="dataset.path",
                              received={"path": str(path),
                                        "differences (existing, configured)": diff})
        return path, manifest
    manifest = build_stamp_dataset(path, dcfg, progress=cfg["training"]["progress"])
    return path, manifest


def _auto_flux_scale(path: Path) -> float:
    """Median over (up to) the first 1024 stamps of their brightest observed pixel, rounded
    to two significant digits: the decoder and encoder then work on numbers of order 1."""
    from astrogen.datasets.galaxy_stamps import _Reader

    r = _Reader(path, ("observed",))
    maxima, k = [], 0
    while sum(len(m) for m in maxima) < 1024 and k < len(r.manifest["shards"]):
        maxima.append(r.shard(k)["observed"].max(axis=(1, 2)))
        k += 1
    v = float(np.median(np.concatenate(maxima)[:1024]))
    if not (v > 0):
        raise ConfigError("cannot set flux_scale automatically (non-positive stamps); give a "
                          "number.", key="flowvae.flux_scale", received={"median_max": v})
    return float(f"{v:.2g}")


def _learning_rate(kind: str, lr: float, steps: int, final_fraction: float):
    import keras

    if kind == "cosine" and steps > 0:
        return keras.optimizers.schedules.CosineDecay(lr, decay_steps=steps,
                                                      alpha=final_fraction)
    return lr


def _current_lr(optimizer) -> float:
    lr = optimizer.learning_rate
    return float(np.asarray(lr))




def _vae_eval(model, data: dict, noise_model: str, seed: int, batch: int) -> dict:
    """Negative ELBO and its terms (beta = 1, no free bits; nats per stamp, mean over
    ``data``), evaluated in fixed micro-batches with a fixed reparameterisation seed."""
    n = len(data["observed"])
    key = "noise_power" if noise_model == "power" else "noise_sigma"
    sums: dict[str, float] = {}
    for start in range(0, n, batch):
        sl = slice(start, min(start + batch, n))
        out = model.vae_losses(data["observed"][sl], data["psf"][sl], seed=(int(seed), start),
                               beta=1.0, free_bits=0.0, **{key: data[key][sl]})
        for k, v in out.items():
            sums[k] = sums.get(k, 0.0) + float(v) * (sl.stop - sl.start)
    return {k: v / n for k, v in sums.items()}


def _evaluate_real(model, stamp_size: int, noise_model: str, seed: int) -> dict:
    """Mean ELBO terms (nats per stamp) of the 100 real COSMOS stamps."""
    from astrogen.datasets.galaxy_stamps import load_real_cosmos

    real = load_real_cosmos(stamp_size, seed=seed)
    out = _vae_eval(model, real, noise_model, seed, batch=50)
    return out | {"n": len(real["observed"])}


def temper_bright_stamps(batch: dict, max_peak_snr: float) -> dict:
    """Inflate the noise of stamps whose brightest pixel exceeds ``max_peak_snr`` sigma.

    A stamp's noise variance (``noise_sigma**2`` and ``noise_power``) is multiplied by
    ``s = max(1, (peak / (max_peak_snr * sigma))**2)``, i.e. its log-likelihood is tempered by
    ``1 / s``: the VAE is asked to reproduce every galaxy to about ``1 / max_peak_snr`` of its
    peak, no better. Without it, the few galaxies with peak S/N of 10^3-10^4 make chi^2 terms
    of 10^6 that dominate the loss and its gradients (observed: loss spikes to 3e6 and no
    progress of the monitored ELBO over the first 500 steps of ``configs/flowvae.yaml``).
    This is a model-error floor, like the calibration floors of photometric fits.
    """
    import tensorflow as tf

    peak = tf.reduce_max(tf.cast(batch["observed"], tf.float32), axis=[1, 2])
    sigma = tf.cast(batch["noise_sigma"], tf.float32)
    s = tf.maximum(1.0, tf.square(peak / (float(max_peak_snr) * sigma)))
    out = dict(batch)
    out["noise_sigma"] = sigma * tf.sqrt(s)
    if "noise_power" in batch:
        out["noise_power"] = tf.cast(batch["noise_power"], tf.float32) * s[:, None, None]
    return out


_STRATEGIES: dict = {}


def setup_strategy(t_cfg: dict):
    """The ``tf.distribute`` strategy of a checked ``training`` section.

    Applies ``logical_cpu_devices`` first (it must come before TensorFlow initialises its
    runtime; a process that has already initialised TensorFlow with the same number of
    logical CPUs is accepted), checks that the ``devices`` exist and that the global batch
    sizes split evenly between the replicas.

    Returns
    -------
    tf.distribute.Strategy
        The default strategy (one device, no replication) or a ``MirroredStrategy``.

    Raises
    ------
    ConfigError
        Naming ``training.logical_cpu_devices`` (TensorFlow already initialised with another
        device configuration), ``training.devices`` (unknown device) or
        ``training.batch_size`` / ``training.flow_batch_size`` (not divisible by the
        number of replicas).
    """
    from astrogen.pipeline.tf_distribute import logical_cpu_devices, make_strategy

    check_distribution(t_cfg)
    kind, devices, n_cpu = t_cfg["strategy"], t_cfg["devices"], t_cfg["logical_cpu_devices"]
    if n_cpu is not None:
        try:
            names = logical_cpu_devices(int(n_cpu))
        except RuntimeError as exc:  # runtime already initialised
            import tensorflow as tf

            names = [d.name for d in tf.config.list_logical_devices("CPU")]
            if len(names) != int(n_cpu):
                raise ConfigError(
                    "TensorFlow is already initialised in this process with another CPU "
                    "device configuration; logical CPU devices must be set before any "
                    "TensorFlow operation (run the training in a fresh process).",
                    key="training.logical_cpu_devices",
                    received={"logical_cpu_devices": n_cpu, "existing": names,
                              "error": str(exc)}) from None
        if devices is None:
            devices = names
    if kind == "mirrored" and t_cfg["devices"] is not None:
        import tensorflow as tf

        have = {(d.device_type.upper(), int(tf.DeviceSpec.from_string(d.name).device_index))
                for d in tf.config.list_logical_devices()}
        for dev in devices:
            spec = tf.DeviceSpec.from_string(dev)
            if (str(spec.device_type).upper(), spec.device_index) not in have:
                raise ConfigError("no such device in this process.", key="training.devices",
                                  received={"device": dev, "devices": devices,
                                            "available": sorted(f"/{t.lower()}:{i}"
                                                                for t, i in have)})
    key = (kind, tuple(devices) if kind == "mirrored" and devices is not None else None)
    if key not in _STRATEGIES:
        # one strategy per device set and process: two MirroredStrategy objects over the
        # same devices number their collective operations independently, and the second
        # one's all-reduces can collide with the first one's (observed: "Shape mismatch in
        # the collective instance" when a process trains twice, as after a resume)
        _STRATEGIES[key] = make_strategy(kind, devices if kind == "mirrored" else None)
    strategy = _STRATEGIES[key]
    check_distribution(t_cfg, replicas=int(strategy.num_replicas_in_sync))
    return strategy


# ---------------------------------------------------------------------- main loop
def train_flowvae(cfg: TrainingConfig, resume: bool = False) -> dict:
    """Train a FlowVAE as configured (see module docstring); returns a summary dict.

    Note: the initial weights are drawn after ``keras.utils.set_random_seed(derive_seed(seed,
    "init"))``, which also sets Python's, numpy's and TensorFlow's global seeds.

    With ``training.strategy: mirrored`` the model and optimizers live in a
    ``tf.distribute.MirroredStrategy`` scope and every step is replicated (module
    docstring); ``training.logical_cpu_devices`` is applied before anything else runs
    TensorFlow in this call, which only works in a process that has not initialised
    TensorFlow yet.
    """
    t_cfg = cfg["training"]
    strategy = setup_strategy(t_cfg)  # before any TensorFlow op (logical devices)
    import keras

    from astrogen.datasets.galaxy_stamps import CONDITION_NAMES, read_stamps, stamp_dataset
    from astrogen.models.flowvae import FlowVAE, train_flow_step, train_vae_step

    a_cfg = cfg["flowvae"]
    seed = int(cfg["seed"])
    run_dir = cfg.run_dir
    ckpt_dir = run_dir / "checkpoints"
    output = Path(cfg["output"])
    config_file = run_dir / "config.json"
    ckpt = resume_checkpoint(run_dir, resume, lambda old: _flatten(
        (TrainingConfig(old) if old is not None else cfg).for_comparison()))

    ds_path, manifest = _prepare_dataset(cfg)
    if list(manifest["conditions"]["names"]) != list(CONDITION_NAMES):
        raise ConfigError("unexpected condition columns in the dataset.", key="dataset.path",
                          received={"conditions": manifest["conditions"]["names"]})
    n_gal = int(manifest["n_galaxies"])
    n = int(manifest["stamp_size"])
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(config_file, cfg)

    flux_scale = a_cfg["flux_scale"]
    if flux_scale == "auto":
        flux_scale = _auto_flux_scale(ds_path)
    arch = {k: v for k, v in a_cfg.items() if k != "flux_scale"}
    conditions = read_stamps(ds_path, fields=("conditions",))["conditions"]
    vae_steps, flow_steps = int(t_cfg["vae_steps"]), int(t_cfg["flow_steps"])
    total = vae_steps + flow_steps
    clip = {"global_clipnorm": t_cfg["clipnorm"]} if t_cfg["clipnorm"] else {}
    # every variable (weights, condition normalisation, optimizer slots and counters) is
    # created in the strategy's scope: mirrored on each replica's device
    with strategy.scope():
        keras.utils.set_random_seed(derive_seed(seed, "init") % (2 ** 31))
        model = FlowVAE(stamp_size=n, flux_scale=flux_scale,
                        condition_names=list(CONDITION_NAMES),
                        pixel_scale=float(manifest["pixel_scale"]),
                        flux_unit=str(manifest["flux_unit"]), **arch)
        model.adapt_conditions(conditions)
        vae_opt = keras.optimizers.Adam(
            _learning_rate(t_cfg["lr_schedule"], t_cfg["vae_learning_rate"], vae_steps,
                           t_cfg["lr_final_fraction"]), name="vae_adam", **clip)
        flow_opt = keras.optimizers.Adam(
            _learning_rate(t_cfg["lr_schedule"], t_cfg["flow_learning_rate"], flow_steps,
                           t_cfg["lr_final_fraction"]), name="flow_adam", **clip)
        vae_opt.build(model.vae_variables)
        flow_opt.build(model.flow_variables)
    groups = {"model": model.weights, "vae_optimizer": vae_opt.variables,
              "flow_optimizer": flow_opt.variables}

    log_path = run_dir / "losses.jsonl"
    step = restore_run(ckpt, groups, log_path)
    if step < vae_steps:  # files derived from a finished VAE phase cannot be current
        for stale in ("latents.npz", "eval_real.json", "result.json"):
            (run_dir / stale).unlink(missing_ok=True)

    batch = int(t_cfg["batch_size"])
    steps_per_epoch = n_gal // batch
    fields = ("observed", "psf", "noise_power" if t_cfg["noise_model"] == "power"
              else "noise_sigma")
    peak_snr_cap = t_cfg.get("max_peak_snr")
    if peak_snr_cap is not None and "noise_sigma" not in fields:
        fields = fields + ("noise_sigma",)
    data_seed = derive_seed(seed, "data")

    def vae_batches(start: int):
        epoch, skip = divmod(start, steps_per_epoch)
        while True:
            ds = stamp_dataset(ds_path, batch, fields=fields,
                               shuffle_buffer=t_cfg["shuffle_buffer"], seed=data_seed,
                               epoch=epoch, repeat=False, drop_remainder=True)
            if skip:
                ds = ds.skip(skip)
            yield from ds
            epoch, skip = epoch + 1, 0

    latents_file = run_dir / "latents.npz"
    latents: dict = {}

    def ensure_latents():
        if latents:
            return
        if latents_file.is_file():
            with np.load(latents_file) as z:
                latents.update(z=z["z"], conditions=z["conditions"])
            if len(latents["z"]) == n_gal:
                return
            latents.clear()
        zs, cs = [], []
        ds = stamp_dataset(ds_path, int(t_cfg["latent_batch_size"]),
                           fields=("observed", "conditions"), shuffle_buffer=0,
                           drop_remainder=False)
        for b in ds:
            zs.append(model.encode(b["observed"]).numpy())
            cs.append(b["conditions"].numpy())
        latents.update(z=np.concatenate(zs), conditions=np.concatenate(cs))
        save_npz(latents_file, **latents)

    flow_batch = int(t_cfg["flow_batch_size"])
    flow_spe = n_gal // flow_batch
    flow_seed = derive_seed(seed, "flow_data")

    def flow_rows(f: int) -> np.ndarray:
        e, i = divmod(f, flow_spe)
        perm = np.random.default_rng(derive_seed(flow_seed, e)).permutation(n_gal)
        return perm[i * flow_batch:(i + 1) * flow_batch]

    monitor_data = None
    if t_cfg["monitor_size"] > 0 and vae_steps > 0:
        monitor_data = read_stamps(ds_path, fields=fields,
                                   rows=slice(0, min(int(t_cfg["monitor_size"]), n_gal)))
    monitor_seed = derive_seed(seed, "monitor") % (2 ** 31)

    def monitor(s: int, log) -> None:
        ev = _vae_eval(model, monitor_data, t_cfg["noise_model"], monitor_seed,
                       int(t_cfg["latent_batch_size"]))
        log.write(json.dumps({"step": s, "phase": "monitor", **ev}) + "\n")
        log.flush()

    eval_file = run_dir / "eval_real.json"
    result: dict = {"output": str(output), "run_dir": str(run_dir), "dataset": str(ds_path),
                    "flux_scale": flux_scale, "vae_steps": vae_steps,
                    "flow_steps": flow_steps, "start_step": step,
                    "strategy": t_cfg["strategy"],
                    "replicas": int(strategy.num_replicas_in_sync)}
    max_run = t_cfg["max_steps_this_run"]
    stop_at = total if max_run is None else min(total, step + int(max_run))
    every, keep = int(t_cfg["checkpoint_every"]), int(t_cfg["keep_checkpoints"])
    log_every = int(t_cfg["log_every"])

    def checkpoint(s: int, phase: str):
        save_checkpoint(ckpt_dir, s, groups, {"phase": phase, "seed": seed}, keep=keep)

    from tqdm.auto import tqdm

    bar = tqdm(total=total, initial=step, desc="flowvae", unit="step",
               disable=not t_cfg["progress"], dynamic_ncols=True)
    last: dict = {}
    timing = {"vae": [0, 0.0], "flow": [0, 0.0]}
    seen: set = set()
    t_start = time.perf_counter()
    it = vae_batches(step) if step < vae_steps else None
    try:
        with open(log_path, "a") as log:
            if monitor_data is not None and step == 0 and stop_at > 0:
                monitor(0, log)
            while step < stop_at:
                t0 = time.perf_counter()
                if step < vae_steps:
                    phase = "vae"
                    b = next(it)
                    if peak_snr_cap is not None:
                        b = temper_bright_stamps(b, peak_snr_cap)
                    kw = ({"noise_power": b["noise_power"]} if "noise_power" in b
                          else {"noise_sigma": b["noise_sigma"]})
                    out = train_vae_step(model, vae_opt, b["observed"], b["psf"], step=step,
                                         seed=seed, strategy=strategy, **kw)
                    out["lr"] = _current_lr(vae_opt)
                    if not math.isfinite(out["loss"]):
                        raise ConfigError("the VAE loss is not finite (lower "
                                          "training.vae_learning_rate or set clipnorm).",
                                          key="training", received={"step": step, **out})
                else:
                    phase = "flow"
                    it = None
                    ensure_latents()
                    f = step - vae_steps
                    rows = flow_rows(f)
                    out = train_flow_step(model, flow_opt, latents["z"][rows],
                                          latents["conditions"][rows], strategy=strategy)
                    out["lr"] = _current_lr(flow_opt)
                dt = time.perf_counter() - t0
                if phase in seen:  # the first step of a phase includes tracing: not timed
                    timing[phase][0] += 1
                    timing[phase][1] += dt
                seen.add(phase)
                step += 1
                last = {"phase": phase, **out}
                if step % log_every == 0 or step == stop_at or step == vae_steps:
                    rec = {"step": step, "phase": phase, **{k: float(v) for k, v in out.items()},
                           "time_s": round(time.perf_counter() - t_start, 3)}
                    log.write(json.dumps(rec) + "\n")
                    log.flush()
                    bar.set_postfix(phase=phase, loss=f"{out['loss']:.4g}")
                bar.update(1)
                if monitor_data is not None and step <= vae_steps and (
                        step == vae_steps or (t_cfg["monitor_every"]
                                              and step % t_cfg["monitor_every"] == 0)):
                    monitor(step, log)
                if step == vae_steps and vae_steps > 0:
                    if t_cfg["eval_real"]:
                        ev = _evaluate_real(model, n, t_cfg["noise_model"], seed)
                        write_json(eval_file, {"step": step, **ev})
                        log.write(json.dumps({"step": step, "phase": "eval_real", **ev}) + "\n")
                        log.flush()
                    checkpoint(step, phase)
                elif step % every == 0 or step == stop_at:
                    checkpoint(step, phase)
    finally:
        bar.close()

    complete = step >= total
    result.update(steps_done=step, complete=complete, last=last,
                  steps_per_second={k: (v[0] / v[1] if v[1] > 0 else None)
                                    for k, v in timing.items()})
    mon = [json.loads(x) for x in log_path.read_text().splitlines()
           if '"monitor"' in x] if log_path.is_file() else []
    if mon:
        result["monitor"] = {"first": mon[0], "last": mon[-1]}
    if eval_file.is_file():
        result["eval_real"] = json.loads(eval_file.read_text())
    if complete:
        save_model_atomic(model, output)
    write_json(run_dir / "result.json", result)
    return result

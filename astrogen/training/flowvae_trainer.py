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

Flow-only runs (``training.init_vae_from: path/to/model.keras`` with ``vae_steps: 0``): the
encoder and decoder weights are copied from that trained FlowVAE (its architecture and
``flux_scale`` must match the ``flowvae`` section) and only phase 2 runs, with this
configuration's flow (e.g. ``flowvae.flow_type: coupling`` on a VAE trained with a MAF):
the same latents, batches and schedule as phase 2 of a full run.

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
from pathlib import Path

import numpy as np

from astrogen.errors import ConfigError
from astrogen.io.atomic import save_npz, save_model_atomic, write_json
from astrogen.seeds import derive_seed
from astrogen.training.loop import Run, current_lr, learning_rate
from astrogen.training.registry import Trainer, register_trainer
from astrogen.training.schema import (REQUIRED, check_bool, check_choice, check_devices,
                                      check_float, check_int, check_int_list, check_sections,
                                      check_optional_str, check_str, loop_keys, top_level)

__all__ = ["FlowVAETrainer", "train_flowvae", "SCHEMA", "RESUME_MUTABLE_KEYS",
           "is_real_source", "prepare_dataset",
           "check_distribution", "setup_strategy", "temper_bright_stamps", "auto_flux_scale",
           "vae_eval", "evaluate_real", "copy_vae_weights", "VAE_KEYS"]


def _flux_scale(v):
    return v if v == "auto" else check_float(0.0, strict=True)(v)


#: section -> key -> (default, check) of ``model: flowvae``. ``dataset`` keys other than
#: ``path`` are checked by :class:`astrogen.datasets.StampDatasetConfig`.
SCHEMA: dict = {
    "": top_level("flowvae", sections=("flowvae",)),
    "flowvae": {
        "latent_dim": (32, check_int(1)),
        "channels": ([32, 64, 128, 256], check_int_list),
        "blocks_per_level": (1, check_int(1)),
        "activation": ("elu", check_str),
        "output_activation": ("softplus", check_choice("softplus", "linear")),
        "flux_scale": ("auto", _flux_scale),
        "min_posterior_std": (1e-4, check_float(0.0, strict=True)),
        "flow_num_bijectors": (4, check_int(1)),
        "flow_hidden_units": ([128, 128], check_int_list),
        "flow_activation": ("elu", check_str),
        "flow_permutation": ("random", check_choice("random", "reverse")),
        "flow_seed": (0, check_int(0)),
        "beta": (1.0, check_float(0.0)),
        "free_bits": (0.0, check_float(0.0)),
        "kl_warmup_steps": (0, check_int(0)),
        "pad_psf": (True, check_bool),
        # decoder artefacts (issue 20): bilinear + reflect has no blocks, streaks or frame
        "upsampling": ("nearest", check_choice("nearest", "bilinear")),
        "padding": ("zeros", check_choice("zeros", "reflect")),
        "output_bias": (-2.0, check_float()),  # initial softplus floor (pedestal, issue 20)
        # latent flow (issue 20): maf samples in latent_dim passes per bijector, coupling in 1
        "flow_type": ("maf", check_choice("maf", "coupling")),
    },
    "training": {
        "batch_size": (32, check_int(1)),
        "vae_steps": (REQUIRED, check_int(0)),
        "flow_steps": (REQUIRED, check_int(0)),
        "vae_learning_rate": (1e-3, check_float(0.0, strict=True)),
        "flow_learning_rate": (1e-3, check_float(0.0, strict=True)),
        "lr_schedule": ("cosine", check_choice("constant", "cosine")),
        "lr_final_fraction": (0.05, check_float(0.0)),
        "clipnorm": (None, check_float(0.0, strict=True, optional=True)),
        "noise_model": ("power", check_choice("power", "sigma")),
        "max_peak_snr": (None, check_float(0.0, strict=True, optional=True)),
        "shuffle_buffer": (1024, check_int(0)),
        "flow_batch_size": (128, check_int(1)),
        "latent_batch_size": (128, check_int(1)),
        **loop_keys(checkpoint_every=500, log_every=10, progress=True),
        "monitor_size": (256, check_int(0)),
        "monitor_every": (500, check_int(0)),
        "eval_real": (True, check_bool),
        # flow-only run on a trained FlowVAE's encoder/decoder (needs vae_steps: 0)
        "init_vae_from": (None, check_optional_str),
        # tf.distribute (astrogen.pipeline.tf_distribute): data-parallel replicas
        "strategy": ("default", check_choice("default", "mirrored")),
        "devices": (None, check_devices),
        "logical_cpu_devices": (None, check_int(1, optional=True)),
    },
}

#: Keys that may differ between a run and its ``--resume`` besides the common ones: the
#: monitoring, and the hardware (a run may continue on other devices: same global batches
#: and noise; results then differ from an uninterrupted run by floating-point rounding only)
RESUME_MUTABLE_KEYS = ("training.eval_real", "training.monitor_every", "training.strategy",
                       "training.devices", "training.logical_cpu_devices")


@register_trainer("flowvae")
class FlowVAETrainer(Trainer):
    """``model: flowvae``."""

    def check(self, cfg):
        from astrogen.datasets.galaxy_stamps import StampDatasetConfig

        if is_real_source(cfg.data.get("dataset")):
            from astrogen.datasets.real_galaxies import RealGalaxyDatasetConfig

            out = check_sections(cfg, SCHEMA, ("flowvae",), RealGalaxyDatasetConfig,
                                 "real-galaxy dataset", RESUME_MUTABLE_KEYS)
            n, c = out["dataset"]["stamp_size"], out["flowvae"]["channels"]
            if n % (2 ** len(c)):
                raise ConfigError(f"dataset.stamp_size must be a multiple of 2**len(channels)"
                                  f" = {2 ** len(c)}.", key="flowvae.channels",
                                  line=cfg.line(("flowvae", "channels")),
                                  received={"stamp_size": n, "channels": c})
            check_distribution(out["training"], lambda k: cfg.line(("training", k)))
            return out
        out = check_sections(cfg, SCHEMA, ("flowvae",), StampDatasetConfig, "stamp dataset",
                             RESUME_MUTABLE_KEYS)
        n, c = out["dataset"]["stamp_size"], out["flowvae"]["channels"]
        if n % (2 ** len(c)):
            raise ConfigError(f"dataset.stamp_size must be a multiple of 2**len(channels) = "
                              f"{2 ** len(c)}.", key="flowvae.channels",
                              line=cfg.line(("flowvae", "channels")),
                              received={"stamp_size": n, "channels": c})
        t = out["training"]
        for key in ("batch_size", "flow_batch_size"):
            if t[key] > out["dataset"]["n_galaxies"]:
                raise ConfigError("must not exceed dataset.n_galaxies.", key=f"training.{key}",
                                  line=cfg.line(("training", key)),
                                  received={key: t[key],
                                            "n_galaxies": out["dataset"]["n_galaxies"]})
        check_distribution(t, lambda k: cfg.line(("training", k)))
        if t["init_vae_from"] is not None and t["vae_steps"] != 0:
            raise ConfigError("a flow-only run (training.init_vae_from) needs "
                              "training.vae_steps: 0.", key="training.init_vae_from",
                              line=cfg.line(("training", "init_vae_from")),
                              received={"init_vae_from": t["init_vae_from"],
                                        "vae_steps": t["vae_steps"]})
        return out

    def train(self, cfg, resume: bool = False) -> dict:
        return train_flowvae(cfg, resume)


def is_real_source(dataset) -> bool:
    """The ``dataset`` section (mapping, or anything) selects the real-galaxy data set
    (:mod:`astrogen.datasets.real_galaxies`: ``source: real_galaxy_catalog``)."""
    return isinstance(dataset, dict) and dataset.get("source") == "real_galaxy_catalog"


def prepare_dataset(section: dict, progress: bool = False):
    """``(path, manifest, holdout path or None)`` of a checked ``dataset`` section: the
    simulated stamp set, or the training split of a RealGalaxyCatalog."""
    if is_real_source(section):
        from astrogen.datasets.real_galaxies import prepare_real_dataset

        path, manifest = prepare_real_dataset(section)
        hold = path / manifest["split"]["holdout_path"]
        return path, manifest, (hold if manifest["split"]["holdout_galaxies"] else None)
    from astrogen.datasets.galaxy_stamps import prepare_stamp_dataset

    path, manifest = prepare_stamp_dataset(section, progress=progress)
    return path, manifest, None


def check_distribution(t: dict, line=lambda key: None, replicas: int | None = None) -> None:
    """Check the ``tf.distribute`` keys of a checked ``training`` section.

    ``devices`` and ``logical_cpu_devices`` need ``strategy: mirrored``; the global batch
    sizes (``batch_size``, ``flow_batch_size``) must split into equal shards, one per replica.
    ``replicas`` is the number of replicas when known (the trainer passes the strategy's);
    otherwise it is ``len(devices)`` or ``logical_cpu_devices`` if given (else unknown, not
    checked here).

    Raises
    ------
    ConfigError
        Naming the offending ``training.*`` key and the values received.
    """
    kind = t.get("strategy", "default")
    for key in ("devices", "logical_cpu_devices"):
        if t.get(key) is not None and kind != "mirrored":
            raise ConfigError("is only valid with training.strategy: mirrored.",
                              key=f"training.{key}", line=line(key),
                              received={key: t[key], "strategy": kind})
    if replicas is None and kind == "mirrored":
        if t.get("devices") is not None:
            replicas = len(t["devices"])
        elif t.get("logical_cpu_devices") is not None:
            replicas = int(t["logical_cpu_devices"])
    if replicas is None or replicas <= 1:
        return
    for key in ("batch_size", "flow_batch_size"):
        if t[key] % replicas:
            raise ConfigError(f"must be divisible by the number of replicas ({replicas}): "
                              "each replica takes an equal share of the global batch.",
                              key=f"training.{key}", line=line(key),
                              received={key: t[key], "replicas": replicas,
                                        "strategy": kind})


# ---------------------------------------------------------------------- helpers
def auto_flux_scale(path: Path) -> float:
    """Median over (up to) the first 1024 stamps of their brightest observed pixel, rounded
    to two significant digits: the decoder and encoder then work on numbers of order 1."""
    from astrogen.datasets.galaxy_stamps import peak_flux_median

    v = peak_flux_median(path, 1024)
    if not (v > 0):
        raise ConfigError("cannot set flux_scale automatically (non-positive stamps); give a "
                          "number.", key="flowvae.flux_scale", received={"median_max": v})
    return float(f"{v:.2g}")


def vae_eval(model, data: dict, noise_model: str, seed: int, batch: int) -> dict:
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


def evaluate_real(model, stamp_size: int, noise_model: str, seed: int) -> dict:
    """Mean ELBO terms (nats per stamp) of the 100 real COSMOS stamps."""
    from astrogen.datasets.galaxy_stamps import load_real_cosmos

    real = load_real_cosmos(stamp_size, seed=seed)
    out = vae_eval(model, real, noise_model, seed, batch=50)
    return out | {"n": len(real["observed"])}


#: FlowVAE settings that define the encoder and decoder (must match for ``init_vae_from``)
VAE_KEYS = ("stamp_size", "latent_dim", "channels", "blocks_per_level", "activation",
            "output_activation", "flux_scale", "min_posterior_std", "upsampling", "padding",
            "pixel_scale", "flux_unit")


def copy_vae_weights(model, path) -> None:
    """Copy the encoder and decoder weights of the trained FlowVAE at ``path`` into ``model``.

    Parameters
    ----------
    model : FlowVAE
        The model of a flow-only run (``training.init_vae_from``).
    path : str or Path
        A ``.keras`` file written by :meth:`FlowVAE.save`.

    Raises
    ------
    ConfigError
        If the file's encoder/decoder settings (:data:`VAE_KEYS`) differ from ``model``'s.
    """
    from astrogen.models.flowvae import load_flowvae

    src = load_flowvae(path)
    a, b = src.get_config(), model.get_config()
    diff = {k: {"init_vae_from": a.get(k), "config": b.get(k)} for k in VAE_KEYS
            if a.get(k) != b.get(k)}
    if diff:
        raise ConfigError("the encoder/decoder of training.init_vae_from differ from the "
                          "flowvae section.", key="training.init_vae_from", received=diff)
    model.encoder.set_weights(src.encoder.get_weights())
    model.decoder.set_weights(src.decoder.get_weights())


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
def train_flowvae(cfg, resume: bool = False) -> dict:
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
    run = Run(cfg, resume)
    run_dir = run.run_dir
    ds_path, manifest, holdout_path = prepare_dataset(cfg["dataset"],
                                                      progress=t_cfg["progress"])
    if list(manifest["conditions"]["names"]) != list(CONDITION_NAMES):
        raise ConfigError("unexpected condition columns in the dataset.", key="dataset.path",
                          received={"conditions": manifest["conditions"]["names"]})
    n_gal = int(manifest["n_galaxies"])
    for key in ("batch_size", "flow_batch_size"):
        if int(t_cfg[key]) > n_gal:
            raise ConfigError("must not exceed the number of training rows.",
                              key=f"training.{key}", received={key: t_cfg[key],
                                                              "rows": n_gal})
    n = int(manifest["stamp_size"])
    run.start()

    flux_scale = a_cfg["flux_scale"]
    if flux_scale == "auto":
        flux_scale = auto_flux_scale(ds_path)
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
            learning_rate(t_cfg["lr_schedule"], t_cfg["vae_learning_rate"], vae_steps,
                          t_cfg["lr_final_fraction"]), name="vae_adam", **clip)
        flow_opt = keras.optimizers.Adam(
            learning_rate(t_cfg["lr_schedule"], t_cfg["flow_learning_rate"], flow_steps,
                          t_cfg["lr_final_fraction"]), name="flow_adam", **clip)
        vae_opt.build(model.vae_variables)
        flow_opt.build(model.flow_variables)
    if t_cfg.get("init_vae_from"):
        copy_vae_weights(model, t_cfg["init_vae_from"])
    step = run.restore({"model": model.weights, "vae_optimizer": vae_opt.variables,
                        "flow_optimizer": flow_opt.variables}, seed=seed)
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

    def monitor(s: int) -> None:
        ev = vae_eval(model, monitor_data, t_cfg["noise_model"], monitor_seed,
                      int(t_cfg["latent_batch_size"]))
        run.write({"step": s, "phase": "monitor", **ev})

    eval_file = run_dir / "eval_real.json"
    batches = {"it": vae_batches(step) if step < vae_steps else None}

    def step_fn(g: int) -> dict:
        if g < vae_steps:
            b = next(batches["it"])
            if peak_snr_cap is not None:
                b = temper_bright_stamps(b, peak_snr_cap)
            kw = ({"noise_power": b["noise_power"]} if "noise_power" in b
                  else {"noise_sigma": b["noise_sigma"]})
            out = train_vae_step(model, vae_opt, b["observed"], b["psf"], step=g, seed=seed,
                                 strategy=strategy, **kw)
            return {"phase": "vae", **out, "lr": current_lr(vae_opt)}
        batches["it"] = None
        ensure_latents()
        rows = flow_rows(g - vae_steps)
        out = train_flow_step(model, flow_opt, latents["z"][rows], latents["conditions"][rows],
                              strategy=strategy)
        return {"phase": "flow", **out, "lr": current_lr(flow_opt)}

    def before(s: int, stop: int) -> None:
        if monitor_data is not None and s == 0 and stop > 0:
            monitor(0)

    def after(s: int, out: dict, stop: int) -> None:
        if monitor_data is not None and s <= vae_steps and (
                s == vae_steps or (t_cfg["monitor_every"] and s % t_cfg["monitor_every"] == 0)):
            monitor(s)
        if s == vae_steps and vae_steps > 0 and t_cfg["eval_real"]:
            if holdout_path is not None:  # real-galaxy training: its held-out galaxies
                hold = read_stamps(holdout_path, fields=("observed", "psf", "noise_power",
                                                         "noise_sigma"))
                ev = vae_eval(model, hold, t_cfg["noise_model"], seed, 50) | {
                    "n": len(hold["observed"]), "set": "holdout split of dataset.path"}
            else:
                ev = evaluate_real(model, n, t_cfg["noise_model"], seed)
            write_json(eval_file, {"step": s, **ev})
            run.write({"step": s, "phase": "eval_real", **ev})

    def at_vae_end(s: int) -> bool:
        return s == vae_steps and vae_steps > 0

    result: dict = {"dataset": str(ds_path), "flux_scale": flux_scale,
                    "vae_steps": vae_steps, "flow_steps": flow_steps, "start_step": step,
                    "strategy": t_cfg["strategy"],
                    "replicas": int(strategy.num_replicas_in_sync)}
    summary = run.loop(step, total, step_fn, name="flowvae", before=before, after=after,
                       log_at=lambda s: s == vae_steps, checkpoint_at=at_vae_end,
                       not_finite="the loss is not finite (lower training.vae_learning_rate "
                                  "or training.flow_learning_rate, or set clipnorm).")
    summary["steps_per_second"] = {k: summary["steps_per_second"].get(k)
                                   for k in ("vae", "flow")}
    result.update(summary)
    mon = [x for x in run.log_lines() if x.get("phase") == "monitor"]
    if mon:
        result["monitor"] = {"first": mon[0], "last": mon[-1]}
    if eval_file.is_file():
        result["eval_real"] = json.loads(eval_file.read_text())
    if summary["complete"]:
        save_model_atomic(model, run.output)
    return run.finish(result)

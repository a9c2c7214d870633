"""Training YAML: schema, defaults, ``key.sub=value`` overrides, checks with line numbers.

A training file is a mapping::

    model: flowvae            # the only model for now
    seed: 0                   # run seed: initial weights, data order, reparameterisation noise
    output: output/models/flowvae.keras   # final model (FlowVAE.save), .keras
    run_dir: output/runs/flowvae          # checkpoints, losses.jsonl (default: <output>_run)
    dataset: {...}            # path + astrogen.datasets.StampDatasetConfig fields
    flowvae: {...}            # architecture and loss settings of astrogen.models.FlowVAE
    training: {...}           # steps, batch sizes, learning rates, checkpoints, logging

Relative paths are relative to the current directory (as for pipelines). Every key is
checked: an unknown key raises :class:`~astrogen.errors.UnknownKeyError` naming its path and
line, with the closest valid key as suggestion.
"""
from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any, Callable

from astrogen.errors import AstrogenError, ConfigError, UnknownKeyError, suggest
from astrogen.pipeline.config import Config, apply_overrides, key_path, load_config

__all__ = ["load_training_config", "TrainingConfig", "SCHEMA", "MODELS", "check_distribution",
           "RESUME_MUTABLE_KEYS", "without_keys"]

MODELS = ("flowvae",)
#: Deblending segmenters, checked by astrogen.training.unet_trainer.load_segmenter_config.
SEGMENTER_MODELS = ("unet", "prob_unet")


# ---------------------------------------------------------------------- value checks
def _int(lo=None, optional=False) -> Callable:
    def check(v):
        if v is None and optional:
            return None
        if isinstance(v, bool) or not isinstance(v, int):
            raise ConfigError("must be an integer.", received={"value": v})
        if lo is not None and v < lo:
            raise ConfigError(f"must be >= {lo}.", received={"value": v})
        return v
    return check


def _float(lo=None, strict=False, optional=False, below=None) -> Callable:
    """A number ``>= lo`` (``> lo`` if ``strict``) and, if ``below`` is given, ``< below``."""
    def check(v):
        if v is None and optional:
            return None
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ConfigError("must be a number.", received={"value": v})
        v = float(v)
        if lo is not None and (v <= lo if strict else v < lo):
            raise ConfigError(f"must be {'>' if strict else '>='} {lo}.", received={"value": v})
        if below is not None and not v < below:
            raise ConfigError(f"must be < {below:g}.", received={"value": v})
        return v
    return check


def _choice(*choices) -> Callable:
    def check(v):
        if v not in choices:
            raise ConfigError(f"must be one of {list(choices)}.{suggest(str(v), choices)}",
                              received={"value": v})
        return v
    return check


def _bool(v):
    if not isinstance(v, bool):
        raise ConfigError("must be true or false.", received={"value": v})
    return v


def _str(v):
    if not isinstance(v, str) or not v:
        raise ConfigError("must be a non-empty string.", received={"value": v})
    return v


def _int_list(v):
    if isinstance(v, int) and not isinstance(v, bool):
        v = [v]
    if not isinstance(v, (list, tuple)) or not v or not all(
            isinstance(x, int) and not isinstance(x, bool) and x > 0 for x in v):
        raise ConfigError("must be a list of positive integers.", received={"value": v})
    return list(v)


def _flux_scale(v):
    if v == "auto":
        return v
    return _float(0.0, strict=True)(v)


def _any(v):
    return v


_DEVICE = re.compile(r"^(/job:[^/]+/replica:\d+/task:\d+)?/(device:)?(cpu|gpu):\d+$",
                     re.IGNORECASE)


def _devices(v):
    """``None`` or a non-empty list of distinct device names (``/gpu:0``, ``/cpu:1``,
    ``/job:localhost/replica:0/task:0/device:GPU:0``)."""
    if v is None:
        return None
    if isinstance(v, str):
        v = [v]
    if (not isinstance(v, (list, tuple)) or not v
            or not all(isinstance(d, str) and _DEVICE.match(d) for d in v)):
        raise ConfigError("must be a list of device names like ['/gpu:0', '/gpu:1'] or "
                          "['/cpu:0', '/cpu:1'].", received={"value": v})
    if len({d.lower() for d in v}) != len(v):
        raise ConfigError("must not repeat a device.", received={"value": v})
    return list(v)


_REQUIRED = object()

#: section -> key -> (default, check). ``dataset`` keys other than ``path`` are checked by
#: :class:`astrogen.datasets.StampDatasetConfig`.
SCHEMA: dict[str, dict[str, tuple[Any, Callable]]] = {
    "": {
        "model": (_REQUIRED, _choice(*MODELS)),
        "seed": (0, _int(0)),
        "output": (_REQUIRED, _str),
        "run_dir": (None, lambda v: v if v is None else _str(v)),
        "description": ("", lambda v: "" if v is None else str(v)),
        "dataset": ({}, _any),
        "flowvae": ({}, _any),
        "training": ({}, _any),
    },
    "flowvae": {
        "latent_dim": (32, _int(1)),
        "channels": ([32, 64, 128, 256], _int_list),
        "blocks_per_level": (1, _int(1)),
        "activation": ("elu", _str),
        "output_activation": ("softplus", _choice("softplus", "linear")),
        "flux_scale": ("auto", _flux_scale),
        "min_posterior_std": (1e-4, _float(0.0, strict=True)),
        "flow_num_bijectors": (4, _int(1)),
        "flow_hidden_units": ([128, 128], _int_list),
        "flow_activation": ("elu", _str),
        "flow_permutation": ("random", _choice("random", "reverse")),
        "flow_seed": (0, _int(0)),
        "beta": (1.0, _float(0.0)),
        "free_bits": (0.0, _float(0.0)),
        "kl_warmup_steps": (0, _int(0)),
        "pad_psf": (True, _bool),
    },
    "training": {
        "batch_size": (32, _int(1)),
        "vae_steps": (_REQUIRED, _int(0)),
        "flow_steps": (_REQUIRED, _int(0)),
        "vae_learning_rate": (1e-3, _float(0.0, strict=True)),
        "flow_learning_rate": (1e-3, _float(0.0, strict=True)),
        "lr_schedule": ("cosine", _choice("constant", "cosine")),
        "lr_final_fraction": (0.05, _float(0.0)),
        "clipnorm": (None, _float(0.0, strict=True, optional=True)),
        "noise_model": ("power", _choice("power", "sigma")),
        "max_peak_snr": (None, _float(0.0, strict=True, optional=True)),
        "shuffle_buffer": (1024, _int(0)),
        "flow_batch_size": (128, _int(1)),
        "latent_batch_size": (128, _int(1)),
        "checkpoint_every": (500, _int(1)),
        "keep_checkpoints": (2, _int(1)),
        "log_every": (10, _int(1)),
        "max_steps_this_run": (None, _int(1, optional=True)),
        "monitor_size": (256, _int(0)),
        "monitor_every": (500, _int(0)),
        "eval_real": (True, _bool),
        "progress": (True, _bool),
        # tf.distribute (astrogen.pipeline.tf_distribute): data-parallel replicas
        "strategy": ("default", _choice("default", "mirrored")),
        "devices": (None, _devices),
        "logical_cpu_devices": (None, _int(1, optional=True)),
    },
}

#: Keys that may differ between a run and its ``--resume`` (they do not change the result).
RESUME_MUTABLE_KEYS = {
    "description",
    "training.checkpoint_every", "training.keep_checkpoints", "training.log_every",
    "training.max_steps_this_run", "training.progress", "training.eval_real",
    "training.monitor_every",
    "dataset.shard_size",
    # the hardware: a run may continue on other devices (same global batches and noise;
    # results then differ from an uninterrupted run by floating-point rounding only)
    "training.strategy", "training.devices", "training.logical_cpu_devices",
}


class TrainingConfig(dict):
    """The checked configuration, defaults filled in (a plain nested ``dict``)."""

    source: str = "<string>"

    @property
    def run_dir(self) -> Path:
        if self["run_dir"]:
            return Path(self["run_dir"])
        out = Path(self["output"])
        return out.with_name(out.stem + "_run")

    def for_comparison(self) -> dict:
        """The configuration without :data:`RESUME_MUTABLE_KEYS`."""
        return without_keys(self, RESUME_MUTABLE_KEYS)


def without_keys(cfg: dict, keys) -> dict:
    """A deep copy of ``cfg`` without the dotted ``keys`` (``"training.progress"``): what a
    resumed run must share with the run it continues."""
    d = copy.deepcopy(dict(cfg))
    for key in keys:
        parts = key.split(".")
        node = d
        for p in parts[:-1]:
            node = node.get(p, {})
        node.pop(parts[-1], None)
    return d


def check_mapping(data: Any, schema: dict, cfg: Config, path: tuple) -> dict:
    """Check one mapping of a training YAML against ``schema`` (``key -> (default, check)``):
    unknown keys (with a suggestion), required keys, values; errors name the key path and
    line. Shared by every model's configuration."""
    if not isinstance(data, dict):
        raise ConfigError("must be a mapping.", key=key_path(path) or "<top level>",
                          line=cfg.line(path), received={"type": type(data).__name__})
    out = {}
    for key in data:
        if key not in schema:
            where = key_path(path + (key,))
            raise UnknownKeyError(f"unknown key.{suggest(str(key), schema)}", key=where,
                                  line=cfg.line(path + (key,)),
                                  received={"allowed": sorted(schema)})
    for key, (default, check) in schema.items():
        if key not in data:
            if default is _REQUIRED:
                raise ConfigError("is required.", key=key_path(path + (key,)),
                                  line=cfg.line(path))
            out[key] = copy.deepcopy(default)
            continue
        try:
            out[key] = check(data[key])
        except AstrogenError as exc:
            raise type(exc)(exc.message, key=key_path(path + (key,)),
                            line=cfg.line(path + (key,)), received=exc.received) from None
    return out


def _check_section(data: dict, section: str, cfg: Config, path: tuple) -> dict:
    return check_mapping(data, SCHEMA[section], cfg, path)


def _check_dataset(data: Any, cfg: Config) -> dict:
    from astrogen.datasets.galaxy_stamps import StampDatasetConfig

    if not isinstance(data, dict):
        raise ConfigError("must be a mapping.", key="dataset", line=cfg.line(("dataset",)))
    allowed = ["path"] + StampDatasetConfig.field_names()
    for key in data:
        if key not in allowed:
            raise UnknownKeyError(f"unknown key.{suggest(str(key), allowed)}",
                                  key=f"dataset.{key}", line=cfg.line(("dataset", key)),
                                  received={"allowed": allowed})
    if "path" not in data:
        raise ConfigError("is required (folder of the stamp dataset; built if missing).",
                          key="dataset.path", line=cfg.line(("dataset",)))
    body = {k: v for k, v in data.items() if k != "path"}
    try:
        ds = StampDatasetConfig.from_dict(body)
    except AstrogenError as exc:
        k = exc.key or ""
        raise type(exc)(exc.message, key=f"dataset.{k}" if k else "dataset",
                        line=cfg.line(("dataset", k)), received=exc.received) from None
    return {"path": _str(data["path"]), **ds.to_dict()}


def load_training_config(source, overrides: list[str] | None = None) -> TrainingConfig:
    """Read, override and check a training YAML (file path or YAML text).

    Raises
    ------
    UnknownKeyError
        For a key the schema does not have (with a suggestion).
    ConfigError
        For a missing required key or a bad value.
    """
    if not (isinstance(source, str) and "\n" in source):
        source = Path(source)
        if not source.is_file():
            raise ConfigError("training file not found.", key="file",
                              received={"file": str(source)})
    cfg = load_config(source)
    if overrides:
        cfg = apply_overrides(cfg, list(overrides))
    if isinstance(cfg.data, dict) and cfg.data.get("model") in SEGMENTER_MODELS:
        from astrogen.training.unet_trainer import load_segmenter_config

        return load_segmenter_config(cfg)
    if isinstance(cfg.data, dict) and cfg.data.get("model") == "ddpm":  # galaxy diffusion model
        from astrogen.training.ddpm_trainer import check_ddpm_config

        return check_ddpm_config(cfg)
    if isinstance(cfg.data, dict) and cfg.data.get("model") in ("nbody_gan", "halo_unet"):
        from astrogen.training.gan_trainer import check_nbody_config  # N-body emulator

        return check_nbody_config(cfg)
    top = _check_section(cfg.data, "", cfg, ())
    out = TrainingConfig(top)
    out.source = cfg.source
    out["flowvae"] = _check_section(top["flowvae"] or {}, "flowvae", cfg, ("flowvae",))
    out["training"] = _check_section(top["training"] or {}, "training", cfg, ("training",))
    out["dataset"] = _check_dataset(top["dataset"], cfg)
    if not str(out["output"]).endswith(".keras"):
        raise ConfigError("must be a file name ending in '.keras'.", key="output",
                          line=cfg.line(("output",)), received={"output": out["output"]})
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
                              received={key: t[key], "n_galaxies": out["dataset"]["n_galaxies"]})
    check_distribution(t, lambda k: cfg.line(("training", k)))
    return out


def check_distribution(t: dict, line: Callable = lambda key: None,
                       replicas: int | None = None) -> None:
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

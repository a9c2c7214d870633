"""Training YAML: reading, ``key.sub=value`` overrides, and the check of the trainer that
the ``model:`` key names (:mod:`astrogen.training.registry`).

A training file is a mapping::

    model: flowvae            # a registered trainer: flowvae, ddpm, unet, prob_unet,
                              # nbody_gan, halo_unet
    seed: 0                   # run seed: initial weights, data order, noise draws
    output: output/models/flowvae.keras   # final model, .keras
    run_dir: output/runs/flowvae          # checkpoints, losses.jsonl (default: <output>_run)
    dataset: {...}            # path + the data set's configuration fields
    flowvae: {...}            # the model's section (named after the model)
    training: {...}           # steps, batch sizes, learning rates, checkpoints, logging

Relative paths are relative to the current directory (as for pipelines). Every key is
checked: an unknown key raises :class:`~astrogen.errors.UnknownKeyError` naming its path and
line, with the closest valid key as suggestion. The shared sections and checks are in
:mod:`astrogen.training.schema`. Reading a file loads the YAML reader only (no stage, no
TensorFlow).
"""
from __future__ import annotations

from pathlib import Path

from astrogen.errors import ConfigError
from astrogen.pipeline.config import apply_overrides, load_config
from astrogen.training.schema import (RESUME_MUTABLE_KEYS, TrainingConfig, check_mapping,
                                      without_keys)

__all__ = ["load_training_config", "TrainingConfig", "RESUME_MUTABLE_KEYS", "without_keys",
           "check_mapping"]


def load_training_config(source, overrides: list[str] | None = None) -> TrainingConfig:
    """Read, override and check a training YAML (file path or YAML text).

    Raises
    ------
    UnknownTypeError
        For a ``model`` no trainer is registered for (with a suggestion).
    UnknownKeyError
        For a key the schema does not have (with a suggestion).
    ConfigError
        For a missing required key or a bad value.
    """
    from astrogen.training.registry import get_trainer

    if not (isinstance(source, str) and "\n" in source):
        source = Path(source)
        if not source.is_file():
            raise ConfigError("training file not found.", key="file",
                              received={"file": str(source)})
    cfg = load_config(source)
    if overrides:
        cfg = apply_overrides(cfg, list(overrides))
    if not isinstance(cfg.data, dict):
        raise ConfigError("must be a mapping.", key="<top level>", line=cfg.line(()),
                          received={"type": type(cfg.data).__name__})
    if "model" not in cfg.data:
        raise ConfigError("is required.", key="model", line=cfg.line(()))
    trainer = get_trainer(cfg.data["model"], key="model", line=cfg.line(("model",)))
    return trainer.check(cfg)

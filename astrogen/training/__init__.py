"""Training of astrogen's generative models from a YAML file.

``run_training(config_path, resume=False, overrides=None)`` is what ``astrogen train CONFIG
[--resume] [key=value ...]`` calls: it reads and checks the YAML
(:func:`~astrogen.training.config.load_training_config`), looks up the trainer of its
``model:`` (:mod:`astrogen.training.registry`) and runs it: the trainer builds the training
set if its folder is missing, and trains with the one loop of :mod:`astrogen.training.loop`
(checkpoints, resume, logs, result file). See ``configs/flowvae.yaml`` for a commented
example; ``astrogen/training/halo_trainer.py`` is the smallest trainer to copy.
"""
from __future__ import annotations

from astrogen.training.config import load_training_config
from astrogen.training.registry import get_trainer, register_trainer

__all__ = ["run_training", "load_training_config", "register_trainer", "get_trainer"]


def run_training(config_path: str, resume: bool = False,
                 overrides: list[str] | None = None) -> dict:
    """Train the model of a training YAML.

    Parameters
    ----------
    config_path : str
        Training YAML file (or YAML text).
    resume : bool
        Continue from the last checkpoint in the run folder (the configuration must be the
        same, except the keys a resume may change:
        :data:`astrogen.training.schema.RESUME_MUTABLE_KEYS` and the trainer's own).
    overrides : list of str, optional
        ``key.sub=value`` overrides (values parsed as YAML), e.g. ``training.vae_steps=100``.

    Returns
    -------
    dict
        JSON-able summary (also written to ``run_dir/result.json``): ``output``,
        ``run_dir``, ``dataset``, ``steps_done``, ``complete``, ``last`` losses,
        ``steps_per_second`` per phase, and the trainer's own fields.

    Raises
    ------
    astrogen.errors.UnknownKeyError, UnknownTypeError, ConfigError
        Bad configuration (key path, line and suggestion in the message).
    astrogen.errors.ResumeError
        Checkpoints present without ``resume``, ``resume`` with another configuration, or
        another process training in the same run folder.
    """
    cfg = load_training_config(config_path, overrides)
    try:
        return get_trainer(cfg["model"]).train(cfg, resume=resume)
    finally:
        _release_lock(cfg.run_dir)


def _release_lock(run_dir) -> None:
    """Remove ``run_dir/.lock`` if this process holds it (a run that raised)."""
    import os

    lock = run_dir / ".lock"
    try:
        if int(lock.read_text().strip()) == os.getpid():
            lock.unlink()
    except (OSError, ValueError):
        pass

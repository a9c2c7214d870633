"""Training of astrogen's generative models from a YAML file.

``run_training(config_path, resume=False, overrides=None)`` is what ``astrogen train CONFIG
[--resume] [key=value ...]`` calls: it reads and checks the YAML
(:func:`~astrogen.training.config.load_training_config`), builds the training set if its
folder is missing, trains, checkpoints atomically and writes the final model. See
``configs/flowvae.yaml`` for a commented example.
"""
from __future__ import annotations

from astrogen.training.config import load_training_config

__all__ = ["run_training", "load_training_config"]


def run_training(config_path: str, resume: bool = False,
                 overrides: list[str] | None = None) -> dict:
    """Train the model of a training YAML.

    Parameters
    ----------
    config_path : str
        Training YAML file.
    resume : bool
        Continue from the last checkpoint in the run folder (the configuration must be the
        same, except the keys of :data:`astrogen.training.config.RESUME_MUTABLE_KEYS`).
    overrides : list of str, optional
        ``key.sub=value`` overrides (values parsed as YAML), e.g. ``training.vae_steps=100``.

    Returns
    -------
    dict
        JSON-able summary (also written to ``run_dir/result.json``): ``output``,
        ``run_dir``, ``dataset``, ``steps_done``, ``complete``, ``last`` losses,
        ``steps_per_second`` per phase, ``eval_real`` (if computed), ...

    Raises
    ------
    astrogen.errors.UnknownKeyError, ConfigError
        Bad configuration (key path, line and suggestion in the message).
    astrogen.errors.ResumeError
        Checkpoints present without ``resume``, or ``resume`` with another configuration.
    """
    cfg = load_training_config(config_path, overrides)
    if cfg["model"] == "flowvae":
        from astrogen.training.flowvae_trainer import train_flowvae

        return train_flowvae(cfg, resume=resume)
    if cfg["model"] in ("unet", "prob_unet"):
        from astrogen.training.unet_trainer import train_segmenter

        return train_segmenter(cfg, resume=resume)
    if cfg["model"] == "ddpm":
        from astrogen.training.ddpm_trainer import train_ddpm

        return train_ddpm(cfg, resume=resume)
    if cfg["model"] == "nbody_gan":
        from astrogen.training.gan_trainer import train_nbody_gan

        return train_nbody_gan(cfg, resume=resume)
    if cfg["model"] == "halo_unet":
        from astrogen.training.halo_trainer import train_halo_unet

        return train_halo_unet(cfg, resume=resume)
    raise AssertionError(cfg["model"])  # pragma: no cover - the schema allows flowvae only

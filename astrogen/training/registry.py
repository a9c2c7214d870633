"""Trainer registry: the ``model:`` of a training YAML -> the trainer that checks and runs it.

A trainer is a small class registered with :func:`register_trainer` (as stages are with
:func:`astrogen.registry.register_stage`)::

    @register_trainer("halo_unet")
    class HaloTrainer(Trainer):
        def check(self, cfg): ...          # the YAML (Config) -> TrainingConfig
        def train(self, cfg, resume): ...  # data, model, step; the loop is loop.Run

The trainers of the package are imported on the first look-up (:data:`TRAINER_MODULES`);
importing them loads neither TensorFlow nor a data set module.
"""
from __future__ import annotations

import importlib
from typing import Callable

from astrogen.registry import Registry

__all__ = ["Trainer", "TRAINERS", "TRAINER_MODULES", "register_trainer", "get_trainer"]

#: model name -> Trainer instance
TRAINERS: Registry = Registry("trainer")

#: modules whose import registers the package's trainers
TRAINER_MODULES = (
    "astrogen.training.flowvae_trainer",
    "astrogen.training.ddpm_trainer",
    "astrogen.training.ddpm_distill_trainer",
    "astrogen.training.gan_trainer",
    "astrogen.training.halo_trainer",
    "astrogen.training.halo3d_trainer",
    "astrogen.training.unet_trainer",
    "astrogen.training.d3m_trainer",
    "astrogen.training.baryon_trainer",
    "astrogen.training.scene_trainer",
)


class Trainer:
    """Base class of a trainer: :meth:`check` a parsed YAML, :meth:`train` a checked one.

    ``name`` is the ``model:`` value it was registered under."""

    name: str = ""

    def check(self, cfg):  # pragma: no cover - abstract
        """``cfg`` (:class:`astrogen.pipeline.config.Config`) -> ``TrainingConfig``."""
        raise NotImplementedError

    def train(self, cfg, resume: bool = False) -> dict:  # pragma: no cover - abstract
        """Train as configured; returns the summary written to ``run_dir/result.json``."""
        raise NotImplementedError


def register_trainer(*names: str) -> Callable:
    """Class decorator: register an instance of a :class:`Trainer` subclass under each of
    ``names`` (the ``model:`` values it trains)."""
    def deco(cls):
        for name in names:
            inst = cls()
            inst.name = name
            TRAINERS.register(name, inst, replace=True)
        return cls
    return deco


_loaded = False


def _load() -> None:
    global _loaded
    if not _loaded:
        for mod in TRAINER_MODULES:
            importlib.import_module(mod)
        _loaded = True


def get_trainer(model, key: str = "model", line: int | None = None) -> Trainer:
    """The trainer of ``model``; :class:`~astrogen.errors.UnknownTypeError` (naming the key,
    the closest registered name and all of them) if there is none."""
    _load()
    return TRAINERS.get(model, key=key, line=line)


def trainer_names() -> list[str]:
    """The registered model names."""
    _load()
    return list(TRAINERS)

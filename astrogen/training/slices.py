"""What the N-body slice trainers (``nbody_gan``, ``halo_unet``) share: their ``training``
keys, the slice data set (:mod:`astrogen.datasets.nbody_slices`, built if incomplete), the
symmetries of the periodic square used to augment batches, the model metadata read from
the data set, and the export of the model at checkpoints.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from astrogen.io.atomic import save_model_atomic
from astrogen.training.schema import (REQUIRED, check_bool, check_float, check_int,
                                      check_sections, loop_keys)

__all__ = ["slice_training_keys", "check_slice_config", "prepare_slices", "augment",
           "slice_meta", "dataset_meta", "exporter", "SLICE_RESUME_MUTABLE"]

#: keys a resume of a slice trainer may change besides the common ones: ``steps`` (a
#: finished run may be extended) and the export setting
SLICE_RESUME_MUTABLE = ("training.steps", "training.export_every_checkpoint")


def slice_training_keys(learning_rate: float, beta_1: float, beta_2: float) -> dict:
    """The ``training`` keys of a slice trainer, with its optimizer defaults."""
    return {
        "steps": (REQUIRED, check_int(0)),
        "batch_size": (16, check_int(1)),
        "learning_rate": (learning_rate, check_float(0.0, strict=True)),
        "beta_1": (beta_1, check_float(0.0)),
        "beta_2": (beta_2, check_float(0.0)),
        "augment": (True, check_bool),
        **loop_keys(checkpoint_every=100, log_every=10, progress=False),
        "export_every_checkpoint": (True, check_bool),
    }


def check_slice_config(cfg, schema: dict, section: str, resume_mutable=()):
    """Check a slice trainer's file; the U-Net depth must divide ``dataset.n_grid``."""
    from astrogen.datasets.nbody_slices import SliceDatasetConfig
    from astrogen.errors import ConfigError

    out = check_sections(cfg, schema, (section,), SliceDatasetConfig, "slice dataset",
                         SLICE_RESUME_MUTABLE + tuple(resume_mutable))
    ch, n = out[section]["channels"], out["dataset"]["n_grid"]
    if n % (2 ** (len(ch) - 1)):
        raise ConfigError(f"dataset.n_grid must be a multiple of 2**(len(channels)-1) = "
                          f"{2 ** (len(ch) - 1)}.", key=f"{section}.channels",
                          line=cfg.line((section, "channels")), received={"n_grid": n})
    return out


def prepare_slices(cfg, log=print) -> tuple[Path, dict]:
    """Build the slice data set if incomplete (resumable); ``(path, manifest)``."""
    from astrogen.datasets.nbody_slices import (SliceDatasetConfig, build_slice_dataset,
                                                dataset_is_complete, read_manifest)

    ds = {k: v for k, v in cfg["dataset"].items() if k != "path"}
    path = Path(cfg["dataset"]["path"])
    if not dataset_is_complete(path):
        build_slice_dataset(path, SliceDatasetConfig(**ds), log=log)
    return path, read_manifest(path)


def slice_meta(manifest: dict, *extra: str) -> dict:
    """Model metadata from the slice data set: geometry, redshift, the data set
    configuration's ``extra`` keys, cosmology."""
    d = manifest["config"]
    return {"n_grid": d["n_grid"], "box_size": d["box_size"],
            "slab_thickness": d["slab_thickness"], "cell_size": manifest["cell_size"],
            "slab_depth": manifest["slab_depth"], "redshift": d["redshift"],
            **{k: d[k] for k in extra},
            "cosmology": {k: d[k] for k in ("Om0", "Ob0", "h", "sigma8", "n_s")}}


def dataset_meta(manifest: dict, n_images: int) -> dict:
    """The data set's identity in the model metadata."""
    d = manifest["config"]
    return {"seed": d["seed"], "n_boxes": d["n_boxes"], "first_box": d["first_box"],
            "n_images": int(n_images)}


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


def exporter(cfg, model):
    """``export(step)``: at the last step (or at every checkpoint with
    ``training.export_every_checkpoint``) write ``model`` (``meta["training"]`` records
    ``steps_done``, ``steps_total``) to ``cfg["output"]``, atomically."""
    t_cfg = cfg["training"]
    total, output = int(t_cfg["steps"]), Path(cfg["output"])

    def export(s: int) -> None:
        if t_cfg["export_every_checkpoint"] or s >= total:
            model.meta["training"]["steps_done"] = int(s)
            model.meta["training"]["steps_total"] = total
            save_model_atomic(model, output)

    return export

"""Checkpoint selection of the N-body GAN on validation boxes.

GAN training does not settle: the power spectrum of the emulated fields swings by tens of
per cent from one few-hundred-step stretch to the next (``selection.json`` of any run), so
"the last step" is an arbitrary model. With a ``validation:`` section in
``configs/nbody_gan.yaml`` the trainer, once all steps are done, scores every kept
checkpoint on PM boxes of another seed than the training set (and than the benchmark's test
set, seed 7) and exports the best one:

score
    the largest ``|P_emulated(k) / P_PM(k) - 1|`` over ``k < k_Nyquist / 2`` of the
    conditional emulation of the validation slabs (the issue's target statistic); ties are
    broken by the Frechet distance of the log power spectra.

The scores of every checkpoint go to ``<run_dir>/selection.json``; the exported model's
sidecar records the selected step and its validation score.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from astrogen.errors import ConfigError

__all__ = ["validation_dataset", "select_checkpoint", "score_generator",
           "dataset_condition_slabs"]

#: dataset seed of the held-out boxes of benchmarks/nbody_emulator_benchmark.py
TEST_SEED = 7


def check_validation_seed(val: dict, dataset: dict, line=None) -> None:
    """The validation boxes must differ from the training and the benchmark's test boxes."""
    if int(val["seed"]) in (int(dataset["seed"]), TEST_SEED):
        raise ConfigError("the validation boxes need their own seed (not the training "
                          f"set's, not the benchmark test set's {TEST_SEED}).",
                          key="validation.seed", line=line,
                          received={"validation.seed": val["seed"],
                                    "dataset.seed": dataset["seed"]})


def dataset_condition_slabs(gan, path) -> np.ndarray:
    """``gan``'s condition slabs (physical units) of every image of a slice dataset, in the
    order of :func:`astrogen.datasets.nbody_slices.read_slices`: the stored projected linear
    slabs, or the 2LPT density of each box's stored 3-D linear field, projected."""
    from astrogen.datasets.nbody_slices import read_box, read_manifest, read_slices

    if gan.condition == "linear":
        return read_slices(path, keys=("linear",))["linear"]
    return np.concatenate([gan.condition_slabs(read_box(path, b, ("linear3d",))["linear3d"])
                           for b in read_manifest(path)["box_ids"]])


def validation_dataset(val: dict, dataset: dict, log=print) -> Path:
    """Build (or reuse) the validation slice dataset: the training set's configuration with
    ``seed`` and ``n_boxes`` of the ``validation`` section."""
    from astrogen.datasets.nbody_slices import SliceDatasetConfig, build_slice_dataset

    check_validation_seed(val, dataset)
    path = Path(val["path"])
    body = {k: v for k, v in dataset.items() if k != "path"}
    body.update(seed=int(val["seed"]), n_boxes=int(val["n_boxes"]), first_box=0)
    # refuses a folder holding another configuration; builds only the missing boxes
    build_slice_dataset(path, SliceDatasetConfig(**body), log=log)
    return path


def score_generator(gan, cond: np.ndarray, true: np.ndarray, box_size: float,
                    noise_seed: int) -> dict:
    """Validation scores of ``gan``'s current generator weights (see the module docstring).

    Parameters
    ----------
    cond : numpy.ndarray, shape (n, size, size)
        Condition slabs in physical units (``gan.condition_slabs`` of the validation boxes).
    true : numpy.ndarray, shape (n, size, size)
        The PM ``1 + delta`` slabs.
    box_size : float
        Mpc/h.
    """
    from astrogen.nbody.emulator_metrics import compare_slabs

    emu = gan.emulate(cond, seed=noise_seed).astype(np.float64)
    r = compare_slabs(np.asarray(true, np.float64), emu, box_size)
    k = np.asarray(r["k"])
    low = k < r["k_half_nyquist"]
    return {"max_abs_power_error": r["max_abs_ratio_minus_1_below_half_nyquist"],
            "power_ratio": [float(x) for x in np.asarray(r["power_ratio"])[low]],
            "r_k_mean": r["r_mean_below_half_nyquist"],
            "frechet_power_spectrum": r["frechet"]["power_spectrum"]
            if "frechet" in r else float("nan")}


def _load_generator(gan, groups: dict, where) -> None:
    """The generator weights of a checkpoint: the averaged ones if the run kept an EMA
    (``generator_ema``: shadow weights + update counter), else the raw ones."""
    from astrogen.training.checkpoint import restore_variables

    if "generator_ema" in groups:
        restore_variables(gan.generator.trainable_weights, groups["generator_ema"][:-1],
                          "generator_ema", where)
    else:
        restore_variables(gan.generator.weights, groups["generator"], "generator", where)


def select_checkpoint(gan, run_dir, val_path, noise_seed: int = 13, log=print) -> dict:
    """Score every checkpoint of ``run_dir`` on the validation set and leave the best one's
    generator weights (the averaged ones if the run kept an EMA) in ``gan``.

    Returns ``{"validation_set", "noise_seed", "scores": [...], "best": {...}}``.
    """
    from astrogen.datasets.nbody_slices import read_manifest, read_slices
    from astrogen.training.checkpoint import load_checkpoint

    man = read_manifest(val_path)
    true = read_slices(val_path, keys=("evolved",))["evolved"]
    cond = dataset_condition_slabs(gan, val_path)
    L = float(man["config"]["box_size"])
    rows, best, best_weights = [], None, None
    for ck in sorted((Path(run_dir) / "checkpoints").glob("ckpt_*.npz")):
        state, groups = load_checkpoint(ck, groups=("generator", "generator_ema"))
        _load_generator(gan, groups, ck)
        row = {"checkpoint": ck.name, "step": int(state["step"]),
               **score_generator(gan, cond, true, L, noise_seed)}
        rows.append(row)
        log(f"nbody_gan: validation of step {row['step']}: max |P ratio - 1| = "
            f"{row['max_abs_power_error']:.3f}, r(k) {row['r_k_mean']:.3f}")
        key = (row["max_abs_power_error"], row["frechet_power_spectrum"])
        if best is None or key < (best["max_abs_power_error"], best["frechet_power_spectrum"]):
            best, best_weights = row, groups
    _load_generator(gan, best_weights, best["checkpoint"])
    return {"validation_set": {"path": str(val_path), "seed": man["config"]["seed"],
                               "boxes": man["box_ids"]},
            "noise_seed": int(noise_seed), "scores": rows, "best": best}

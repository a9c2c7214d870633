"""Training of the scene deblender (``model: scene_deblender``,
``configs/scene_deblender_lsst.yaml``).

Data: the survey scene set of :mod:`astrogen.datasets.survey_scenes` (built if missing);
its first ``n_scenes - validation_scenes`` scenes give the training cut-outs
(:func:`astrogen.datasets.survey_scenes.training_cutouts`: the deblender's own detection and
cut-out code, targets from the noiseless objects), the last ``validation_scenes`` are held
out for the temperature of the probabilistic (MC-dropout) variant, fitted after training on
the pixels of the validation scenes' returned segmentations: the confidence that a pixel's
assigned object is its true majority-light owner, against whether it is
(:func:`fit_scene_temperature`); stored in the model card with the fit and the validation
scene ids. With ``training.calibration_scenes: N`` (> 0) the temperature and the isotonic
map are fitted instead on ``N`` scenes rendered after the training set (ids
``first_scene + n_scenes`` onwards, same seed: never trained on); the card records them and
:func:`check_heldout` refuses them for evaluation too.

Batch ``g`` is drawn with ``derive_seed(seed, "batch", g)`` and augmented with one of the 8
symmetries of the square per cut-out (the PSFs are round), so a resumed run continues
exactly. Loss: :meth:`astrogen.models.scene_deblender.SceneDeblender.losses`.
"""
from __future__ import annotations

import numpy as np

from astrogen.seeds import derive_seed
from astrogen.training.loop import Run, adam, learning_rate
from astrogen.training.registry import Trainer, register_trainer
from astrogen.training.schema import (REQUIRED, check_bool, check_choice, check_float,
                                      check_int, check_int_list, check_str, loop_keys,
                                      top_level)

__all__ = ["SCENE_SCHEMA", "SceneDeblenderTrainer", "train_scene_deblender",
           "fit_scene_temperature", "scene_label_samples", "scene_ece", "calibrate", "fit_scene_confidence_map",
           "check_heldout", "calibration_scene_set"]

#: section -> key -> (default, check) of ``model: scene_deblender``
SCENE_SCHEMA = {
    "": top_level("scene_deblender", sections=("scene_deblender",)),
    "scene_deblender": {
        "cutout_size": (32, check_int(8)),
        "filters": ([12, 24, 48], check_int_list),
        "dropout": (0.1, check_float(0.0)),
        "transform_a": (3.0, check_float(0.0, strict=True)),
        "fraction_background": (0.1, check_float(0.0, strict=True)),
        "survey": ("lsst", check_str),
        "command": ("", check_str),
    },
    "training": {
        "batch_size": (32, check_int(1)),
        "steps": (REQUIRED, check_int(0)),
        "learning_rate": (1e-3, check_float(0.0, strict=True)),
        "lr_schedule": ("cosine", check_choice("constant", "cosine")),
        "lr_final_fraction": (0.05, check_float(0.0)),
        "object_weight": (4.0, check_float(0.0)),
        "augment": (True, check_bool),
        "validation_scenes": (50, check_int(1)),
        "calibration_samples": (8, check_int(2)),
        "calibration_scenes": (0, check_int(0)),
        **loop_keys(checkpoint_every=100, log_every=10, progress=False),
    },
}


@register_trainer("scene_deblender")
class SceneDeblenderTrainer(Trainer):
    """``model: scene_deblender``."""

    def check(self, cfg):
        from astrogen.datasets.survey_scenes import SceneDatasetConfig
        from astrogen.errors import ConfigError
        from astrogen.training.schema import check_sections

        out = check_sections(cfg, SCENE_SCHEMA, ("scene_deblender",), SceneDatasetConfig,
                             "survey scene set", ("training.calibration_samples",))
        a, t = out["scene_deblender"], out["training"]
        if a["cutout_size"] % (2 ** (len(a["filters"]) - 1)):
            raise ConfigError("must be a multiple of 2**(len(filters) - 1).",
                              key="scene_deblender.cutout_size",
                              received={"cutout_size": a["cutout_size"],
                                        "filters": a["filters"]})
        if t["validation_scenes"] >= out["dataset"]["n_scenes"]:
            raise ConfigError("must be smaller than dataset.n_scenes.",
                              key="training.validation_scenes",
                              received={"validation_scenes": t["validation_scenes"],
                                        "n_scenes": out["dataset"]["n_scenes"]})
        return out

    def train(self, cfg, resume: bool = False) -> dict:
        return train_scene_deblender(cfg, resume)


def scene_label_samples(model, scene: dict, sigma, fwhm_pix: float, n_samples: int,
                        seed: int = 0) -> dict:
    """Calibration data of one scene with truth, on the pixels the prediction segments.

    The segmentation is the one :func:`astrogen.deblend.scene.deblend_scene` returns
    (:func:`astrogen.deblend.scene.instance_map` of the mean fractions on the objects'
    footprint); on its object pixels the returned
    ``samples`` are the label probabilities of each MC-dropout sample, ``assigned`` the
    segmentation's class and ``correct`` whether that object is the pixel's true
    majority-light owner (:func:`astrogen.deblend.scene.owner_correct`, detections matched
    to truth as in training).

    Returns
    -------
    dict
        ``samples`` (n_samples, N + 1, P), ``assigned`` (P,) int, ``correct`` (P,) bool,
        ``scene_id`` (int).
    """
    from astrogen.datasets.survey_scenes import match_detections
    from astrogen.deblend.scene import (DETECT_DEFAULTS, detect, detection_image,
                                        instance_map, label_probabilities,
                                        network_fractions, object_footprint, owner_correct)

    det = detection_image(scene["image"], sigma)
    objs, segmap = detect(det, fwhm_pix, **DETECT_DEFAULTS)
    fr = network_fractions(scene["image"], sigma, det, objs, fwhm_pix,
                           model.predictor(seed), model.size, n_samples, segmap=segmap)
    probs = np.stack([label_probabilities(f) for f in fr])  # (ns, N + 1, H, W)
    seg = instance_map(fr.mean(axis=0).astype(np.float32),
                       object_footprint(det, fwhm_pix, segmap),
                       np.c_[objs["peak_x"], objs["peak_y"]])
    pos = np.c_[objs["x"], objs["y"]] if len(objs) else np.zeros((0, 2))
    ok = owner_correct(scene["models_det"], match_detections(pos, scene, fwhm_pix), seg)
    inside = seg > 0
    return {"samples": probs[:, :, inside], "assigned": seg[inside].astype(np.int64),
            "correct": ok[inside], "scene_id": int(scene.get("scene_id", -1))}


def _confidence(data: dict, t: float, cmap: dict | None = None) -> np.ndarray:
    from astrogen.deblend.calibration import apply_confidence_map, tempered_exact

    px = np.moveaxis(data["samples"], 1, -1)  # (ns, P, K)
    mean = (tempered_exact(px, t) if t != 1.0 else px).mean(axis=0)
    c = np.take_along_axis(mean, data["assigned"][:, None], axis=-1)[:, 0]
    return apply_confidence_map(c, cmap)


def fit_scene_temperature(data, grid=None, limits=(1e-3, 1e3)) -> dict:
    """Temperature minimising the binary NLL of "assigned object is the true owner" under
    the mean tempered confidence of the assigned object (:func:`scene_label_samples`
    entries), over the pixels of the validation scenes' segmentations.

    The grid (default 0.05 to 20, log steps of 10 %) is extended tenfold towards any edge
    the minimum falls on, up to ``limits``; ``at_limit`` says whether it still sits on one.
    """
    grid = np.geomspace(0.05, 20.0, 61) if grid is None else np.asarray(grid, float)
    data = [d for d in data if len(d["assigned"])]
    n = sum(len(d["assigned"]) for d in data)

    def nll(t):
        tot = 0.0
        for d in data:
            c = np.clip(_confidence(d, float(t)), 1e-12, 1 - 1e-12)
            y = d["correct"]
            tot += float(-(np.log(c[y]).sum() + np.log1p(-c[~y]).sum()))
        return tot / max(n, 1)

    vals = {float(t): nll(t) for t in grid}
    while True:
        ts = sorted(vals)
        best = min(vals, key=vals.get)
        if best == ts[0] and ts[0] > limits[0]:
            new = np.geomspace(max(ts[0] / 10, limits[0]), ts[0], 25)[:-1]
        elif best == ts[-1] and ts[-1] < limits[1]:
            new = np.geomspace(ts[-1], min(ts[-1] * 10, limits[1]), 25)[1:]
        else:
            break
        vals.update({float(t): nll(t) for t in new})
    ts = sorted(vals)
    best = min(vals, key=vals.get)
    return {"temperature": float(best), "nll_best": float(vals[best]), "nll_at_1": nll(1.0),
            "grid": ts, "nll": [vals[t] for t in ts], "pixels": int(n),
            "at_limit": bool(best in (ts[0], ts[-1])),
            "scene_ids": sorted(int(d["scene_id"]) for d in data)}


def fit_scene_confidence_map(data, temperature: float, n_bins: int = 100) -> dict:
    """Isotonic map (:func:`astrogen.deblend.calibration.fit_isotonic_map`) from the
    tempered assigned-object confidence to the observed rate of "assigned object is the true
    owner" over :func:`scene_label_samples` entries."""
    from astrogen.deblend.calibration import fit_isotonic_map

    data = [d for d in data if len(d["assigned"])]
    c = np.concatenate([_confidence(d, float(temperature)) for d in data])
    y = np.concatenate([d["correct"] for d in data])
    return fit_isotonic_map(c, y, n_bins)


def scene_ece(data, temperature: float, n_bins: int = 10, cmap: dict | None = None
              ) -> float:
    """Expected calibration error of the assigned-object confidence at ``temperature``
    (then through ``cmap``) over :func:`scene_label_samples` entries (10 equal bins of
    confidence)."""
    from astrogen.deblend.metrics import expected_calibration_error

    data = [d for d in data if len(d["assigned"])]
    if not data:
        return float("nan")
    c = np.concatenate([_confidence(d, float(temperature), cmap) for d in data])
    y = np.concatenate([d["correct"] for d in data])
    return expected_calibration_error(np.stack([1 - c, c], axis=-1), y.astype(np.int64),
                                      n_bins)


def calibrate(model, val_scenes, sigma, fwhm_pix: float, n_samples: int,
              seed: int | None = None) -> dict:
    """Fit the MC-dropout temperature on ``val_scenes``, then a monotone (isotonic) map of
    the tempered confidence (what one temperature cannot fix: pixels that only one
    detection covers have confidence 1 at any temperature), and record both in
    ``model.card`` with the validation scenes' ids (and their scene ``seed``), so an
    evaluation can prove it uses other scenes."""
    data = [scene_label_samples(model, sc, sigma, fwhm_pix, n_samples, seed=i)
            for i, sc in enumerate(val_scenes)]
    fit = fit_scene_temperature(data)
    fit["map"] = fit_scene_confidence_map(data, fit["temperature"])
    fit["ece_validation_at_1"] = scene_ece(data, 1.0)
    fit["ece_validation_temperature"] = scene_ece(data, fit["temperature"])
    fit["ece_validation"] = scene_ece(data, fit["temperature"], cmap=fit["map"])
    ids = fit["scene_ids"]
    model.card["temperature"] = fit["temperature"]
    model.card["calibration"] = {k: fit[k] for k in ("temperature", "nll_best", "nll_at_1",
                                                     "at_limit", "pixels",
                                                     "ece_validation_at_1",
                                                     "ece_validation_temperature",
                                                     "ece_validation", "map")}
    model.card["calibration"].update(
        scenes=len(val_scenes), n_samples=int(n_samples),
        scene_id_range=[int(min(ids)), int(max(ids))] if ids else None,
        **({"seed": int(seed)} if seed is not None else {}),
        target="assigned object is the pixel's true majority-light owner, over the pixels "
               "of the returned segmentation's objects")
    return fit


def check_heldout(card: dict, dataset_seed: int, scene_ids) -> None:
    """Refuse to evaluate a model's calibration on scenes it was calibrated (or trained) on:
    the scene set of ``dataset_seed`` and ``scene_ids`` must not meet the card's training
    set (same seed and scene ids ``first_scene`` to ``first_scene + n_scenes - 1``, which holds
    the validation scenes) nor its calibration scenes (``calibration.seed`` and
    ``calibration.scene_id_range``, when the card records them)."""
    from astrogen.errors import ConfigError

    ids = np.asarray(list(scene_ids), np.int64)
    tr = card.get("training", {}).get("dataset", {})
    used = []  # (name, seed, first id, last id) of scene sets the model has seen
    if tr:
        lo = int(tr.get("first_scene", 0))
        used.append(("training_scenes", int(tr.get("seed", -1)), lo,
                     lo + int(tr.get("n_scenes", 0)) - 1))
    cal = card.get("calibration") or {}
    if cal.get("scene_id_range") and "seed" in cal:
        used.append(("calibration_scenes", int(cal["seed"]), *map(int, cal["scene_id_range"])))
    for what, seed, lo, hi in used:
        if seed != int(dataset_seed):
            continue
        bad = ids[(ids >= lo) & (ids <= hi)]
        if len(bad):
            raise ConfigError("scenes used for training or calibration cannot evaluate the "
                              "model.", key="scenes",
                              received={"overlap": bad[:5].tolist(),
                                        "n_overlap": int(len(bad)), what: [lo, hi],
                                        "seed": int(dataset_seed)})


def calibration_scene_set(path, dcfg, n_val: int, n_cal: int, val_scenes=None) -> list:
    """The scenes the temperature and isotonic map are fitted on: ``n_cal`` scenes rendered
    after the training set (ids ``first_scene + n_scenes`` on, same seed; built next to
    ``path`` as ``<name>_calibration_<n_cal>``) when ``n_cal > 0``, else the training set's
    last ``n_val`` (validation) scenes: ``val_scenes`` when given, read from ``path`` when
    it is complete, or built alone (a scene is a function of (seed, scene id) only)."""
    import dataclasses
    from pathlib import Path

    from astrogen.datasets.base import is_complete
    from astrogen.datasets.survey_scenes import build_scene_dataset, read_scene_dataset

    path = Path(path)
    if n_cal:
        vcfg = dataclasses.replace(dcfg, first_scene=dcfg.first_scene + dcfg.n_scenes,
                                   n_scenes=n_cal)
        vpath = path.with_name(path.name + f"_calibration_{n_cal}")
    elif val_scenes is not None:
        return list(val_scenes)
    elif is_complete(path):
        return read_scene_dataset(path)[-n_val:]
    else:
        vcfg = dataclasses.replace(dcfg, first_scene=dcfg.first_scene + dcfg.n_scenes - n_val,
                                   n_scenes=n_val)
        vpath = path.with_name(path.name + "_validation")
    if not is_complete(vpath):
        build_scene_dataset(vpath, vcfg, progress=True)
    return read_scene_dataset(vpath)


def calibrate_trained(config_path) -> dict:
    """Fit the temperature of the model a finished run exported and rewrite its card.

    Uses the run's calibration scenes (:func:`calibration_scene_set`) and settings; command
    line: ``python -m astrogen.training.scene_trainer calibrate <config>``."""
    from pathlib import Path

    from astrogen.datasets.survey_scenes import SceneDatasetConfig
    from astrogen.models.scene_deblender import load_scene_deblender
    from astrogen.training.config import load_training_config

    cfg = load_training_config(str(config_path))
    ds = dict(cfg["dataset"])
    path = Path(ds.pop("path"))
    dcfg = SceneDatasetConfig.from_dict(ds)
    spec = dcfg.spec()
    model = load_scene_deblender(cfg["output"])
    n_val = int(cfg["training"]["validation_scenes"])
    val = calibration_scene_set(path, dcfg, n_val, int(cfg["training"]["calibration_scenes"]))
    fwhm_pix = float(np.mean(spec.psf_fwhm())) / spec.pixel_scale
    fit = calibrate(model, val, spec.noise_sigma(), fwhm_pix,
                    int(cfg["training"]["calibration_samples"]), seed=dcfg.seed)
    model.save(cfg["output"])
    return fit


def _augment(x: np.ndarray, t: np.ndarray, seed: int):
    rng = np.random.default_rng(seed)
    ks = rng.integers(0, 8, size=len(x))
    x, t = x.copy(), t.copy()
    for i, k in enumerate(ks):
        if k & 1:
            x[i], t[i] = np.swapaxes(x[i], 0, 1), t[i].T
        if k & 2:
            x[i], t[i] = x[i][:, ::-1], t[i][:, ::-1]
        if k & 4:
            x[i], t[i] = x[i][::-1], t[i][::-1]
    return x, t


def train_scene_deblender(cfg, resume: bool = False, log=print) -> dict:
    """Train the scene deblender as configured; returns the summary."""
    from pathlib import Path

    import keras
    import tensorflow as tf

    from astrogen.datasets.base import is_complete
    from astrogen.datasets.survey_scenes import (SceneDatasetConfig, build_scene_dataset,
                                                 read_scene_dataset, training_cutouts)
    from astrogen.models.scene_deblender import SceneDeblender

    t_cfg, a = cfg["training"], cfg["scene_deblender"]
    seed = int(cfg["seed"])
    run = Run(cfg, resume)
    ds = dict(cfg["dataset"])
    path = Path(ds.pop("path"))
    ds_cfg = SceneDatasetConfig.from_dict(ds)
    if not is_complete(path):
        build_scene_dataset(path, ds_cfg, progress=True)
    run.start()
    spec = ds_cfg.spec()
    sigma = spec.noise_sigma()
    fwhm = spec.psf_fwhm()
    fwhm_pix = float(np.mean(fwhm)) / spec.pixel_scale
    scenes = read_scene_dataset(path)
    n_val = int(t_cfg["validation_scenes"])
    train_scenes, val_scenes = scenes[:-n_val], scenes[-n_val:]
    data = training_cutouts(train_scenes, sigma, fwhm_pix, a["cutout_size"],
                            a["fraction_background"])
    log(f"scene_deblender: {len(data['inputs'])} training cut-outs from "
        f"{len(train_scenes)} scenes ({int(data['matched'].sum())} matched to a true object)")
    survey_bands = [s.band_name for s in spec.surveys()]
    card = {
        "survey": a["survey"], "bands": survey_bands,
        "pixel_scale": spec.pixel_scale, "pixel_scale_tolerance": 0.05,
        "psf_fwhm": fwhm.tolist(), "psf": [s.psf for s in spec.surveys()],
        "depth": "10-year co-add (surveycodex full_exposure_time)",
        "exposure_time": [s.exposure_time for s in spec.surveys()],
        "noise_sigma": sigma.tolist(), "flux_unit": "electron",
        "fraction_background": a["fraction_background"],
        "training": {"config": str(cfg.source), "seed": seed, "command": a["command"],
                     "dataset": ds_cfg.to_dict(), "n_cutouts": int(len(data["inputs"]))},
    }
    keras.utils.set_random_seed(derive_seed(seed, "init") % (2 ** 31))
    model = SceneDeblender(size=a["cutout_size"], n_bands=len(survey_bands),
                           filters=a["filters"], dropout=a["dropout"],
                           transform_a=a["transform_a"], card=card)
    x_all = model.transform(data["inputs"])
    y_all = data["targets"].astype(np.float32)
    total = int(t_cfg["steps"])
    lr = learning_rate(t_cfg["lr_schedule"], t_cfg["learning_rate"], total,
                       t_cfg["lr_final_fraction"])
    opt = adam(lr, "scene_adam")
    opt.build(model.network.trainable_variables)
    step = run.restore({"network": model.network.weights, "optimizer": opt.variables},
                       model="scene_deblender")
    train_step = model.make_train_step(opt, float(t_cfg["object_weight"]))
    batch = min(int(t_cfg["batch_size"]), len(x_all))

    def step_fn(g: int) -> dict:
        rng = np.random.default_rng(derive_seed(seed, "batch", g))
        idx = rng.choice(len(x_all), size=batch, replace=False)
        x, y = x_all[idx], y_all[idx]
        if t_cfg["augment"]:
            x, y = _augment(x, y, derive_seed(seed, "augment", g))
        return train_step(tf.constant(x), tf.constant(y))

    def export(s: int) -> None:
        model.card["training"]["steps_done"] = int(s)
        model.card["training"]["steps_total"] = total
        model.save(cfg["output"])

    summary = run.loop(step, total, step_fn, name="scene_deblender", on_checkpoint=export)
    if summary["complete"]:
        cal = calibration_scene_set(path, ds_cfg, n_val, int(t_cfg["calibration_scenes"]),
                                    val_scenes)
        fit = calibrate(model, cal, sigma, fwhm_pix, int(t_cfg["calibration_samples"]),
                        seed=ds_cfg.seed)
        export(summary["steps_done"])
        log(f"scene_deblender: temperature {fit['temperature']:.3f} (NLL {fit['nll_at_1']:.4f}"
            f" -> {fit['nll_best']:.4f})")
    summary["steps_per_second"] = summary["steps_per_second"].get("train")
    return run.finish({"dataset": str(path), "steps_total": total, **summary,
                       "n_cutouts": int(len(x_all)),
                       "temperature": model.card.get("temperature")})


if __name__ == "__main__":  # python -m astrogen.training.scene_trainer calibrate <config>
    import sys

    if len(sys.argv) != 3 or sys.argv[1] != "calibrate":
        sys.exit("usage: python -m astrogen.training.scene_trainer calibrate <config.yaml>")
    out = calibrate_trained(sys.argv[2])
    print(f"temperature {out['temperature']:.3f} (NLL {out['nll_at_1']:.4f} -> "
          f"{out['nll_best']:.4f}; validation ECE {out['ece_validation_at_1']:.3f} -> "
          f"{out['ece_validation_temperature']:.3f} (temperature) -> "
          f"{out['ece_validation']:.3f} (+ isotonic map))")

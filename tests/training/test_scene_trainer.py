"""Scene deblender training (astrogen.training.scene_trainer) and its data
(astrogen.datasets.survey_scenes)."""
import json

import numpy as np
import pytest

from astrogen.training.scene_trainer import fit_scene_temperature


TINY = """model: scene_deblender
seed: 0
output: {out}/model.keras
run_dir: {out}/run
dataset:
  path: {out}/data
  n_scenes: 4
  seed: 3
  size: 32
  bands: [lsst_r, lsst_i]
  density_scale: 3.0
  shard_size: 2
scene_deblender:
  cutout_size: 16
  filters: [4, 8]
  command: astrogen train tiny.yaml
training:
  steps: 3
  batch_size: 4
  validation_scenes: 1
  calibration_samples: 2
"""


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from astrogen.training.config import load_training_config
    from astrogen.training.registry import get_trainer

    out = tmp_path_factory.mktemp("scene_train")
    cfg = load_training_config(TINY.format(out=out))
    summary = get_trainer("scene_deblender").train(cfg)
    return out, summary


def test_tiny_training_writes_a_model_with_its_survey_card(tiny_run):
    from astrogen.models.scene_deblender import load_scene_deblender

    out, summary = tiny_run
    assert summary["steps_done"] == 3 and summary["complete"]
    m = load_scene_deblender(out / "model.keras")
    card = m.card
    assert card["survey"] == "lsst" and card["bands"] == ["lsst_r", "lsst_i"]
    assert card["pixel_scale"] == pytest.approx(0.2)
    assert len(card["psf_fwhm"]) == 2 and all(0.5 < f < 1.2 for f in card["psf_fwhm"])
    assert card["training"]["command"] == "astrogen train tiny.yaml"
    assert card["temperature"] > 0 and "calibration" in card
    assert json.loads((out / "model.json").read_text())["card"]["bands"] == card["bands"]


def test_calibrate_trained_on_scenes_after_the_training_set(tiny_run, tmp_path):
    """``training.calibration_scenes: 2`` fits the calibration on scene ids 4 and 5 (after
    the 4 training scenes, same seed), records them, and the held-out check refuses them."""
    import shutil

    from astrogen.errors import ConfigError
    from astrogen.models.scene_deblender import load_scene_deblender
    from astrogen.training.scene_trainer import calibrate_trained, check_heldout

    out, _ = tiny_run
    shutil.copytree(out / "data", tmp_path / "data")
    for f in ("model.keras", "model.json"):
        shutil.copy(out / f, tmp_path / f)
    cfg = tmp_path / "cal.yaml"
    cfg.write_text(TINY.format(out=tmp_path) + "  calibration_scenes: 2\n")
    calibrate_trained(cfg)
    card = load_scene_deblender(tmp_path / "model.keras").card
    cal = card["calibration"]
    assert cal["scenes"] == 2 and cal["scene_id_range"] == [4, 5] and cal["seed"] == 3
    assert (tmp_path / "data_calibration_2" / "manifest.json").is_file()
    check_heldout(card, 3, [6, 7])  # after training and calibration scenes: fine
    with pytest.raises(ConfigError, match="scenes") as e:
        check_heldout(card, 3, [5, 6])
    assert "calibration_scenes" in str(e.value)


def test_training_cutouts_hold_fractions_of_the_detected_object(tiny_run):
    from astrogen.datasets.survey_scenes import read_scene_dataset, training_cutouts

    out, _ = tiny_run
    scenes = read_scene_dataset(out / "data")
    assert len(scenes) == 4
    sig = json.loads((out / "data" / "manifest.json").read_text())["sigma"]
    d = training_cutouts(scenes, sig, 4.0, size=16)
    assert d["inputs"].shape[1:] == (16, 16, 4)
    assert 0 <= d["targets"].min() and d["targets"].max() <= 1
    m = d["matched"]
    if m.any():  # a matched detection's object holds most of the light at the centre
        assert np.median(d["targets"][m, 8, 8]) > 0.5
    assert np.all(d["targets"][~m] == 0)


def _synthetic_calibration_scenes(ids, true_t=4.0, seed=0):
    """Scenes whose MC samples are over-confident: each sample is softmax(5 z) while the
    assigned object is right with probability softmax(5 z / true_t)[assigned] (z: logits of
    3 classes, background + 2 objects), so the right temperature is ``true_t``."""
    rng = np.random.default_rng(seed)
    out = []
    for sid in ids:
        z = rng.normal(0.0, 1.0, (400, 3))
        z[:, 0] -= 3.0  # object pixels: the background class is rarely the top one
        samp = np.stack([5 * (z + rng.normal(0, 0.05, z.shape)) for _ in range(4)])
        p = np.exp(samp - samp.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)  # (ns, P, K)
        assigned = np.argmax(p.mean(0), axis=-1)
        q = np.exp(5 * z / true_t)
        q /= q.sum(-1, keepdims=True)
        correct = rng.random(len(z)) < np.take_along_axis(q, assigned[:, None], -1)[:, 0]
        out.append({"samples": np.moveaxis(p, -1, 1), "assigned": assigned,
                    "correct": correct, "scene_id": int(sid)})
    return out


def test_temperature_fitted_on_validation_calibrates_separate_scenes():
    from astrogen.training.scene_trainer import scene_ece

    val = _synthetic_calibration_scenes(range(0, 8), seed=1)
    held = _synthetic_calibration_scenes(range(100, 108), seed=2)
    fit = fit_scene_temperature(val)
    assert set(fit["scene_ids"]).isdisjoint(d["scene_id"] for d in held)
    assert 2.5 < fit["temperature"] < 6.5 and fit["nll_best"] < fit["nll_at_1"]
    before, after = scene_ece(held, 1.0), scene_ece(held, fit["temperature"])
    assert before > 0.1 and after < 0.04  # measured on scenes the fit never saw


def test_temperature_grid_extends_past_its_edge():
    val = _synthetic_calibration_scenes(range(4), true_t=60.0, seed=3)
    fit = fit_scene_temperature(val)
    assert fit["temperature"] > 20.0 and not fit["at_limit"]
    assert min(fit["grid"]) == pytest.approx(0.05) and max(fit["grid"]) > 20.0


def test_check_heldout_refuses_training_or_validation_scenes():
    from astrogen.errors import ConfigError
    from astrogen.training.scene_trainer import check_heldout

    card = {"training": {"dataset": {"seed": 1, "first_scene": 0, "n_scenes": 1200}}}
    check_heldout(card, 1, [1200, 5000])  # after the training set: fine
    check_heldout(card, 2, [0, 10])  # another scene seed: other scenes
    with pytest.raises(ConfigError, match="scenes"):
        check_heldout(card, 1, [1150, 1300])  # 1150 is a validation scene


def test_shipped_model_was_calibrated_off_the_benchmark_scenes():
    """The shipped card's calibration scenes and the benchmark's held-out set never meet."""
    import importlib.util
    from pathlib import Path

    from astrogen.models.scene_deblender import load_scene_deblender
    from astrogen.training.scene_trainer import check_heldout

    root = Path(__file__).resolve().parents[2]
    spec = importlib.util.spec_from_file_location(
        "scene_bench", root / "benchmarks" / "scene_deblend_benchmark.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    card = load_scene_deblender(root / "astrogen/data/models/scene_deblender_lsst.keras").card
    d = bench.DATASET
    ids = range(d["first_scene"], d["first_scene"] + d["n_scenes"])
    check_heldout(card, d["seed"], ids)
    cal = card["calibration"]
    lo, hi = cal["scene_id_range"]
    tr = card["training"]["dataset"]
    # calibrated on scenes of the training seed after the training set (never trained on)
    assert cal["seed"] == tr["seed"] and lo == tr["first_scene"] + tr["n_scenes"]
    assert hi - lo + 1 == cal["scenes"] >= 500
    assert d["seed"] != cal["seed"] or hi < d["first_scene"]


def test_isotonic_map_calibrates_what_temperature_cannot():
    """Half the pixels are covered by one object only (confidence 1 at any temperature) and
    right 80 % of the time: the map fitted on validation scenes calibrates other scenes."""
    from astrogen.training.scene_trainer import fit_scene_confidence_map, scene_ece

    def scenes(ids, seed):
        out = _synthetic_calibration_scenes(ids, seed=seed)
        rng = np.random.default_rng(seed + 10)
        for d in out:
            one = rng.random(len(d["assigned"])) < 0.5
            d["samples"][:, :, one] = 0.0
            d["samples"][:, 1, one] = 1.0
            d["assigned"][one] = 1
            d["correct"][one] = rng.random(int(one.sum())) < 0.8
        return out

    val, held = scenes(range(8), 1), scenes(range(100, 108), 2)
    t = fit_scene_temperature(val)["temperature"]
    cmap = fit_scene_confidence_map(val, t)
    assert np.all(np.diff(cmap["confidence"]) > 0) and np.all(np.diff(cmap["accuracy"]) >= 0)
    assert scene_ece(held, t) > 0.06  # temperature alone: the confidence-1 pixels stay at 1
    assert scene_ece(held, t, cmap=cmap) < 0.03

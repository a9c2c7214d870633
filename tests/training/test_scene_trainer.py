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


def test_temperature_fit_softens_overconfident_samples():
    rng = np.random.default_rng(0)
    pairs = []
    for _ in range(3):
        lab = rng.integers(0, 2, (20, 20))
        right = rng.random((20, 20)) < 0.7  # 70 % right, predicted with 99 % confidence
        pred = np.where(right, lab, 1 - lab)
        p1 = np.where(pred == 1, 0.99, 0.01)
        s = np.stack([1 - p1, p1])[None]  # (1 sample, 2 classes, H, W)
        pairs.append((s, lab))
    fit = fit_scene_temperature(pairs)
    assert fit["temperature"] > 1.5 and fit["nll_best"] < fit["nll_at_1"]

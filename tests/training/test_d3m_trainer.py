"""Tests of the displacement emulator's trainer (astrogen.training.d3m_trainer)."""
import json
from pathlib import Path

import numpy as np
import pytest

from astrogen.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "configs" / "d3m.yaml"


def _overrides(tmp_path, ds, steps):
    return [f"dataset.path={ds}", f"output={tmp_path / 'm.keras'}",
            f"run_dir={tmp_path / 'run'}", "dataset.n_boxes=3", "dataset.n_particles=8",
            "dataset.box_size=16.0", "d3m.channels=[4, 8]", f"training.steps={steps}",
            "training.checkpoint_every=1", "training.log_every=1"]


def test_tiny_model_trains_two_steps_and_resumes(tmp_path):
    pytest.importorskip("keras")
    from astrogen.datasets.nbody_displacements import (DisplacementDatasetConfig,
                                                       write_synthetic_dataset)
    from astrogen.models.d3m import load_d3m
    from astrogen.training import run_training

    ds = tmp_path / "ds"
    write_synthetic_dataset(ds, DisplacementDatasetConfig(n_boxes=3, n_particles=8,
                                                          box_size=16.0))
    res = run_training(str(CONFIG), overrides=_overrides(tmp_path, ds, 2))
    assert res["steps_done"] == 2 and res["complete"]
    assert np.isfinite(res["last"]["loss"])
    m = load_d3m(tmp_path / "m.keras")
    assert m.meta["training"]["steps_done"] == 2
    assert m.meta["cell_size"] == 2.0 and m.meta["dataset"]["split"] == "train"
    # the head started at zero: training moved it (the model is no longer the input)
    assert np.abs(m.network.get_layer("head").get_weights()[0]).max() > 0
    res = run_training(str(CONFIG), resume=True, overrides=_overrides(tmp_path, ds, 3))
    assert res["steps_done"] == 3
    steps = [json.loads(x)["step"] for x in
             (tmp_path / "run" / "losses.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3]


def test_augmentation_transforms_input_and_target_alike():
    """A target that is a fixed linear, rotation-covariant function of the input (here 1.5 u)
    keeps that relation after augmentation, and augmentation changes the fields."""
    from astrogen.training.d3m_trainer import augment_batch

    u = np.random.default_rng(0).standard_normal((4, 8, 8, 8, 3)).astype("float32")
    ua, ta = augment_batch(u, 1.5 * u, seed=3)
    np.testing.assert_allclose(ta, 1.5 * ua, rtol=1e-6)
    assert not np.allclose(ua, u)


def test_config_refuses_test_split_and_bad_depth():
    from astrogen.training.config import load_training_config

    assert load_training_config(str(CONFIG))["d3m"]["channels"] == [16, 32, 64]
    for over, key in ((["dataset.split=test"], "dataset.split"),
                      (["dataset.n_particles=10"], "d3m.channels")):
        with pytest.raises(ConfigError) as e:
            load_training_config(str(CONFIG), overrides=over)
        assert e.value.key == key


def test_warm_start_continues_from_a_saved_model(tmp_path):
    # training.init_from: a run of 0 steps exports the source weights unchanged (the
    # warm-started model IS the source model), with the source's training in the metadata;
    # a model of another architecture is refused naming the key
    pytest.importorskip("keras")
    from astrogen.datasets.nbody_displacements import (DisplacementDatasetConfig,
                                                       write_synthetic_dataset)
    from astrogen.models.d3m import load_d3m
    from astrogen.training import run_training

    ds = tmp_path / "ds"
    write_synthetic_dataset(ds, DisplacementDatasetConfig(n_boxes=3, n_particles=8,
                                                          box_size=16.0))
    run_training(str(CONFIG), overrides=_overrides(tmp_path, ds, 2))
    src = load_d3m(tmp_path / "m.keras")
    warm = tmp_path / "warm"
    warm.mkdir()
    over = _overrides(warm, ds, 0) + [f"training.init_from={tmp_path / 'm.keras'}"]
    res = run_training(str(CONFIG), overrides=over)
    assert res["steps_done"] == 0
    got = load_d3m(warm / "m.keras")
    for a, b in zip(src.network.get_weights(), got.network.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert got.meta["training"]["init_from"]["training"]["steps_done"] == 2
    # one more step from the warm start moves the weights away from the source
    res = run_training(str(CONFIG), resume=True, overrides=_overrides(warm, ds, 1) + [
        f"training.init_from={tmp_path / 'm.keras'}"])
    moved = load_d3m(warm / "m.keras").network.get_layer("head").get_weights()[0]
    assert not np.array_equal(moved, src.network.get_layer("head").get_weights()[0])
    bad = tmp_path / "bad"
    bad.mkdir()
    with pytest.raises(ConfigError) as e:
        run_training(str(CONFIG), overrides=_overrides(bad, ds, 1) + [
            "d3m.channels=[4, 8, 8]", f"training.init_from={tmp_path / 'm.keras'}"])
    assert e.value.key == "training.init_from"

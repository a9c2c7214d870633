"""Tests of the displacement emulator's training set (astrogen.datasets.nbody_displacements)."""
import numpy as np
import pytest

from astrogen.datasets.nbody_displacements import (DisplacementDatasetConfig,
                                                   build_displacement_dataset,
                                                   dataset_is_complete, linear_field,
                                                   minimal_image, read_boxes)
from astrogen.errors import ConfigError

TINY = dict(n_particles=8, box_size=32.0, n_steps=3, z_init=9.0)


def test_builder_resumes_and_gives_the_same_boxes(tmp_path):
    cfg = DisplacementDatasetConfig(n_boxes=3, **TINY)
    logs = []
    build_displacement_dataset(tmp_path / "a", cfg, log=logs.append, max_boxes=1)
    assert not dataset_is_complete(tmp_path / "a") and len(logs) == 1
    first = (tmp_path / "a" / "box_train_00000.npz").stat().st_mtime_ns
    build_displacement_dataset(tmp_path / "a", cfg, log=logs.append)  # resumes
    assert dataset_is_complete(tmp_path / "a")
    assert len(logs) == 3  # boxes 1 and 2 only were simulated on resume
    assert (tmp_path / "a" / "box_train_00000.npz").stat().st_mtime_ns == first
    build_displacement_dataset(tmp_path / "b", cfg, log=lambda s: None)  # in one go
    a, b = read_boxes(tmp_path / "a"), read_boxes(tmp_path / "b")
    for k in ("zeldovich", "target"):
        np.testing.assert_array_equal(a[k], b[k])
    assert a["zeldovich"].shape == (3, 3, 8, 8, 8)


def test_folder_with_another_configuration_is_refused(tmp_path):
    build_displacement_dataset(tmp_path, DisplacementDatasetConfig(n_boxes=1, **TINY),
                               log=lambda s: None)
    with pytest.raises(ConfigError) as e:
        build_displacement_dataset(tmp_path, DisplacementDatasetConfig(n_boxes=1, seed=1,
                                                                       **TINY))
    assert e.value.key == "dataset.path"


def test_held_out_boxes_never_share_a_training_field():
    train = DisplacementDatasetConfig(split="train", **TINY)
    test = DisplacementDatasetConfig(split="test", **TINY)
    tr = {train.box_seed(b) for b in range(200)}
    te = {test.box_seed(b) for b in range(200)}
    assert not tr & te
    assert not np.allclose(linear_field(train, 0), linear_field(test, 0))


def test_target_is_the_pm_displacement_close_to_zeldovich_at_high_redshift(tmp_path):
    """At z = 4 the PM displacement is still nearly linear: it correlates with the
    Zel'dovich input to better than 0.98, and is larger than it (2LPT and non-linear growth
    add to it); at z = 0 the correlation drops (non-linear)."""
    hi = DisplacementDatasetConfig(n_boxes=1, redshift=4.0, **{**TINY, "n_steps": 5})
    lo = DisplacementDatasetConfig(n_boxes=1, redshift=0.0, **{**TINY, "n_steps": 5})
    build_displacement_dataset(tmp_path / "hi", hi, log=lambda s: None)
    build_displacement_dataset(tmp_path / "lo", lo, log=lambda s: None)
    h, lw = read_boxes(tmp_path / "hi"), read_boxes(tmp_path / "lo")
    c_hi = np.corrcoef(h["zeldovich"].ravel(), h["target"].ravel())[0, 1]
    c_lo = np.corrcoef(lw["zeldovich"].ravel(), lw["target"].ravel())[0, 1]
    assert c_hi > 0.98 and c_lo < c_hi
    assert np.abs(h["target"]).max() < 0.5 * 32.0


def test_minimal_image():
    d = np.array([-17.0, -16.0, 0.0, 15.9, 16.0, 40.0])
    np.testing.assert_allclose(minimal_image(d, 32.0), [15.0, -16.0, 0.0, 15.9, -16.0, 8.0])


@pytest.mark.parametrize("key, value", [("n_particles", 7), ("split", "val"),
                                        ("redshift", 10.0), ("box_size", -1.0),
                                        ("first_box", -1)])
def test_bad_settings_name_the_key(key, value):
    with pytest.raises(ConfigError) as e:
        DisplacementDatasetConfig.from_dict({**TINY, key: value})
    assert e.value.key == key

"""Galaxy DDPM training from YAML (model: ddpm): config checks, tiny run, exact resume,
model file round trip, inpainting function."""
from pathlib import Path

import numpy as np
import pytest

from astrogen.errors import ConfigError, ModelError, ResumeError, UnknownKeyError
from astrogen.training import load_training_config, run_training

TINY = Path(__file__).resolve().parents[2] / "configs" / "ddpm_tiny.yaml"
FULL = Path(__file__).resolve().parents[2] / "configs" / "ddpm.yaml"


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    """The dataset of configs/ddpm_tiny.yaml (64 galaxies, 16x16), built once."""
    from astrogen.datasets import build_stamp_dataset

    cfg = load_training_config(str(TINY))
    path = tmp_path_factory.mktemp("ddpm_tiny") / "stamps"
    build_stamp_dataset(path, {k: v for k, v in cfg["dataset"].items() if k != "path"})
    return path


def _over(data, folder, *extra):
    return [f"dataset.path={data}", f"output={folder / 'model.keras'}",
            f"run_dir={folder / 'run'}", *extra]


@pytest.fixture(scope="module")
def full_run(tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("ddpm_full")
    return out, run_training(str(TINY), overrides=_over(tiny_data, out))


def test_shipped_configs_are_valid_and_keys_are_checked():
    cfg = load_training_config(str(FULL))
    assert cfg["model"] == "ddpm" and cfg["ddpm"]["channel_mults"] == [1, 2, 4, 4]
    assert cfg["dataset"]["stamp_size"] == 64 and cfg["training"]["holdout"] == 1000
    with pytest.raises(UnknownKeyError, match=r"ddpm\.base_chanels.*'base_channels'"):
        load_training_config(str(TINY), ["ddpm.base_chanels=4"])
    with pytest.raises(UnknownKeyError, match=r"training\.step\b.*'steps'"):
        load_training_config(str(TINY), ["training.step=4"])
    with pytest.raises(ConfigError, match=r"attention_resolutions.*\[16, 8\]"):
        load_training_config(str(TINY), ["ddpm.attention_resolutions=[4]"])
    with pytest.raises(ConfigError, match=r"training\.holdout"):
        load_training_config(str(TINY), ["training.holdout=60"])
    with pytest.raises(ConfigError, match=r"ddpm\.schedule.*cosine"):
        load_training_config(str(TINY), ["ddpm.schedule=cosin"])


def test_tiny_model_trains_and_loss_decreases(full_run):
    import json

    out, r = full_run
    assert r["complete"] and r["steps_done"] == 20 and r["holdout"] == 16
    lines = [json.loads(x) for x in (out / "run" / "losses.jsonl").read_text().splitlines()]
    losses = [x["loss"] for x in lines if x["phase"] == "train"]
    assert len(losses) == 20
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5])
    mon = [x["ema_loss_holdout"] for x in lines if x["phase"] == "monitor"]
    assert mon[-1] < mon[0]
    assert (out / "model.keras").is_file() and (out / "model.json").is_file()


def test_interrupted_then_resumed_run_gives_the_same_weights(full_run, tiny_data, tmp_path):
    from astrogen.models.ddpm_galaxy import load_ddpm

    out, _ = full_run
    over = _over(tiny_data, tmp_path)
    part = run_training(str(TINY), overrides=over + ["training.max_steps_this_run=8"])
    assert not part["complete"] and part["steps_done"] == 8
    assert not (tmp_path / "model.keras").exists()
    # the unfinished run's checkpoint exports as a model holding the EMA weights of step 8
    from astrogen.training.checkpoint import load_checkpoint
    from astrogen.training.ddpm_trainer import export_checkpoint

    exported = load_ddpm(export_checkpoint(str(TINY), over, tmp_path / "partial.keras"))
    assert exported.meta["training"]["steps_done"] == 8
    assert not exported.meta["training"]["complete"]
    _, values = load_checkpoint(tmp_path / "run" / "checkpoints" / "ckpt_000000008.npz")
    for w, e in zip(exported.network.trainable_weights, values["ema"][:-1]):
        np.testing.assert_array_equal(np.asarray(w), e)
    with pytest.raises(ResumeError, match="--resume"):
        run_training(str(TINY), overrides=over)
    with pytest.raises(ResumeError, match="differs"):
        run_training(str(TINY), resume=True, overrides=over + ["training.learning_rate=0.01"])
    done = run_training(str(TINY), resume=True, overrides=over)
    assert done["complete"] and done["start_step"] == 8
    a = load_ddpm(out / "model.keras").network.weights
    b = load_ddpm(tmp_path / "model.keras").network.weights
    for x, y in zip(a, b):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_model_file_round_trip_and_generation(full_run):
    from astrogen.models.ddpm_galaxy import load_ddpm
    from astrogen.seeds import row_seeds

    out, _ = full_run
    m = load_ddpm(out / "model.keras")
    assert m.stamp_size == 16 and m.pixel_scale == pytest.approx(0.1)
    assert m.schedule.num_train_steps == 100 and m.intensity["flux_normalize"] is True
    assert set(m.meta["condition_range"]) == {"mag", "hlr", "z"}
    cond = np.array([[21.0, 0.3, 0.8], [23.5, 0.5, 1.2], [19.0, 0.2, 0.4]])
    seeds = row_seeds(4, np.arange(3))
    a = m.generate(cond, seeds, sampler="ddim", num_steps=5, batch_size=2)
    assert a.shape == (3, 16, 16) and a.dtype == np.float32 and np.all(np.isfinite(a))
    # save again and reload: identical images
    m.save(out / "copy.keras")
    b = load_ddpm(out / "copy.keras").generate(cond, seeds, sampler="ddim", num_steps=5,
                                               batch_size=2)
    np.testing.assert_array_equal(a, b)
    # the intensity transform is invertible
    img = np.abs(np.random.default_rng(0).normal(size=(3, 16, 16))) * 0.3
    np.testing.assert_allclose(m.decode(m.encode(img, cond[:, 0]), cond[:, 0]), img,
                               rtol=1e-5, atol=1e-9)
    with pytest.raises(ModelError, match="not found"):
        load_ddpm(out / "missing.keras")


def test_inpainting_keeps_known_pixels_and_fills_the_mask(full_run):
    from astrogen.models.ddpm_galaxy import inpaint_stamps, load_ddpm
    from astrogen.seeds import row_seeds

    out, _ = full_run
    m = load_ddpm(out / "model.keras")
    rng = np.random.default_rng(1)
    stamps = np.abs(rng.normal(size=(2, 16, 16))).astype(np.float32) * 0.2
    mask = np.ones((2, 16, 16))
    mask[:, 6:10, 6:10] = 0
    stamps_nan = stamps.copy()
    stamps_nan[mask == 0] = np.nan
    cond = np.array([[21.0, 0.3, 0.8], [22.0, 0.4, 1.0]])
    seeds = row_seeds(9, np.arange(2))
    a = inpaint_stamps(stamps_nan, mask, cond, seeds, model=m, num_steps=5)
    assert a.shape == (2, 16, 16) and np.all(np.isfinite(a))
    np.testing.assert_array_equal(a[mask == 1], stamps[mask == 1])
    b = inpaint_stamps(stamps_nan[1:], mask[1:], cond[1:], seeds[1:], model=m, num_steps=5)
    np.testing.assert_array_equal(a[1:], b)  # a row does not depend on the others
    with pytest.raises(ConfigError, match="resample"):
        inpaint_stamps(stamps, mask, cond, seeds, model=m, resample=0)


def test_a_second_process_on_the_same_run_folder_is_refused(tmp_path):
    from astrogen.training.loop import take_lock as _take_lock

    (tmp_path / ".lock").write_text("1\n")  # pid 1 is always alive
    with pytest.raises(ResumeError, match="another training process"):
        _take_lock(tmp_path)
    (tmp_path / ".lock").write_text("999999999\n")  # no such process: a stale lock
    lock = _take_lock(tmp_path)
    assert lock.read_text().strip() == str(__import__("os").getpid())


def test_export_needs_a_checkpoint_of_the_right_model(tiny_data, tmp_path):
    from astrogen.errors import ConfigError
    from astrogen.training.ddpm_trainer import export_checkpoint
    from astrogen.training.unet_trainer import export_checkpoint as export_segmenter

    with pytest.raises(ResumeError, match="no checkpoint") as err:
        export_checkpoint(str(TINY), _over(tiny_data, tmp_path))
    assert err.value.key == "run_dir"
    with pytest.raises(ConfigError, match="unet / prob_unet") as err:
        export_segmenter(str(TINY), _over(tiny_data, tmp_path))
    assert err.value.key == "model" and err.value.received == {"model": "ddpm"}

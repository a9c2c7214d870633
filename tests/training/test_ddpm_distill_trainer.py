"""Progressive-distillation trainer (model: ddpm_distill): config checks, a tiny two-round
run (2 steps) through the one loop, student files that load and sample in their steps."""
from pathlib import Path

import numpy as np
import pytest

from astrogen.errors import ConfigError
from astrogen.training import load_training_config, run_training

REPO = Path(__file__).resolve().parents[2]
FULL = REPO / "configs" / "ddpm_distill.yaml"


def test_shipped_config_is_valid_and_checked():
    from astrogen.training.ddpm_distill_trainer import round_steps

    cfg = load_training_config(str(FULL))
    assert cfg["model"] == "ddpm_distill" and cfg["teacher"] == "ddpm_cosmos64"
    assert round_steps(cfg["distill"]["base_steps"], cfg["distill"]["final_steps"]) == [4, 2, 1]
    with pytest.raises(ConfigError, match="base_steps"):
        load_training_config(str(FULL), ["distill.base_steps=6"])
    with pytest.raises(ConfigError, match="teacher"):
        load_training_config(str(FULL), ["teacher=nowhere.keras"])


@pytest.fixture(scope="module")
def tiny_teacher(tmp_path_factory):
    """An untrained 16x16 galaxy DDPM with small random weights (a non-trivial teacher)."""
    import keras

    from astrogen.models.ddpm_galaxy import DDPMGalaxyModel
    from astrogen.models.ddpm_unet import DDPMUNet
    from astrogen.schedulers import NoiseSchedule

    keras.utils.set_random_seed(2)
    net = DDPMUNet(image_size=16, base_channels=8, channel_mults=(1, 2), num_res_blocks=1,
                   attention_resolutions=(8,), cond_dim=3, cond_names=("mag", "ln_hlr", "ln_1pz"),
                   cond_mean=[22.0, -1.0, 0.6], cond_std=[2.0, 0.7, 0.3], norm_groups=4,
                   prediction="v")
    net.build()
    rng = np.random.default_rng(0)
    for v in net.weights:
        v.assign((0.05 * rng.standard_normal(v.shape)).astype(v.dtype))
    meta = {"stamp_size": 16, "pixel_scale": 0.1, "flux_unit": "count/s", "zero_point": 25.94}
    path = tmp_path_factory.mktemp("teacher") / "teacher.keras"
    DDPMGalaxyModel(net, NoiseSchedule.cosine(50),
                    {"flux_normalize": True, "scale": 3e-3, "divisor": 3.0}, meta).save(path)
    return path


def test_tiny_two_round_run_writes_students_that_sample(tiny_teacher, tmp_path):
    import json

    from astrogen.datasets import build_stamp_dataset
    from astrogen.models.ddpm_galaxy import load_ddpm
    from astrogen.schedulers import distillation_grid

    over = [f"teacher={tiny_teacher}", f"dataset.path={tmp_path / 'stamps'}",
            "dataset.n_galaxies=32", "dataset.shard_size=32", "dataset.stamp_size=16",
            "dataset.pixel_scale=0.1", "dataset.noise=gaussian", "dataset.noise_variance=0.0001",
            "dataset.seed=1", "distill.base_steps=4", "training.steps_per_round=1", "training.log_every=1",
            "training.checkpoint_every=1", f"output={tmp_path / 'student.keras'}",
            f"run_dir={tmp_path / 'run'}"]
    cfg = load_training_config(str(FULL), over)
    build_stamp_dataset(tmp_path / "stamps",
                        {k: v for k, v in cfg["dataset"].items() if k != "path"})
    r = run_training(str(FULL), overrides=over)
    assert r["complete"] and r["steps_done"] == 2 and r["rounds"] == [2, 1]
    lines = [json.loads(x) for x in (tmp_path / "run" / "losses.jsonl").read_text().splitlines()]
    assert [x["student_steps"] for x in lines] == [2.0, 1.0]
    assert all(np.isfinite(x["loss"]) and x["loss"] > 0 for x in lines)
    teacher = load_ddpm(tiny_teacher)
    for k in (2, 1):
        m = load_ddpm(tmp_path / f"student_{k}step.keras")
        d = m.distillation
        assert d["num_steps"] == k and d["base_steps"] == 4 and d["round"] == 3 - k
        assert m.distilled_sampler().timesteps.tolist() == distillation_grid(50, 4, k).tolist()
        cond = np.array([[21.0, 0.4, 0.5], [23.0, 0.2, 1.0]])
        img = m.generate(cond, np.array([1, 2], np.uint64), sampler="distilled", num_steps=k)
        assert img.shape == (2, 16, 16) and np.all(np.isfinite(img))
        # trained: the student's weights moved away from the teacher's
        assert any(not np.array_equal(np.asarray(a), np.asarray(b))
                   for a, b in zip(m.network.weights, teacher.network.weights))

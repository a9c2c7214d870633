"""Training of the baryon painter (astrogen.training.baryon_trainer) on the committed
BaryonForge fixture: registered trainer, one loop, resume, checked configuration."""
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from astrogen.errors import ConfigError  # noqa: E402
from astrogen.training.config import load_training_config  # noqa: E402

FIXTURE = Path(__file__).resolve().parents[1] / "datasets" / "data" / "baryon_pairs_32"


def _yaml(tmp_path, steps=2, extra=""):
    return f"""
model: baryon_painter
seed: 1
output: {tmp_path / 'p.keras'}
run_dir: {tmp_path / 'run'}
dataset:
  path: {FIXTURE}
  n_boxes: 1
  seed: 7
  n_grid: 32
  box_size: 32.0
baryon_painter:
  channels: [2, 2, 2]
  latent_channels: 1
  margin: 2
training:
  steps: {steps}
  batch_size: 1
  crop: 16
  checkpoint_every: 1
  log_every: 1
{extra}"""


def test_crop_batch_is_periodic_and_consistent():
    from astrogen.training.baryon_trainer import crop_batch

    a = np.arange(8 ** 3, dtype=float).reshape(1, 8, 8, 8)
    x, y = crop_batch([a, 2 * a[..., None]], np.array([0, 0]), 4, seed=3, augment=True)
    assert x.shape == (2, 4, 4, 4) and y.shape == (2, 4, 4, 4, 1)
    np.testing.assert_array_equal(2 * x, y[..., 0])  # same crop and symmetry for every array
    vals = set(np.ravel(a))
    assert set(np.ravel(x)) <= vals


def test_train_and_resume_on_the_fixture(tmp_path):
    from astrogen.models.baryon_painter import load_baryon_painter
    from astrogen.training.registry import get_trainer

    cfg = load_training_config(_yaml(tmp_path, steps=2))
    res = get_trainer("baryon_painter").train(cfg)
    assert res["complete"] and res["steps_done"] == 2 and res["n_boxes"] == 1
    m = load_baryon_painter(tmp_path / "p.keras")
    assert m.meta["training"]["steps_done"] == 2
    assert m.meta["dataset"]["backend"] == "baryonforge"
    # the model's normalisation is the fixture's
    box = np.load(FIXTURE / "box_00000.npz")
    assert m.gas_fraction == pytest.approx(box["gas"].mean() / box["dm"].mean(), rel=1e-6)
    cfg3 = load_training_config(_yaml(tmp_path, steps=3))
    res3 = get_trainer("baryon_painter").train(cfg3, resume=True)
    assert res3["steps_done"] == 3
    lines = (tmp_path / "run" / "losses.jsonl").read_text().splitlines()
    assert len(lines) == 3 and all(np.isfinite(__import__("json").loads(x)["loss"])
                                   for x in lines)
    out = load_baryon_painter(tmp_path / "p.keras").paint(box["dm"], n_samples=1)
    assert out["gas"].shape == (1, 32, 32, 32) and np.isfinite(out["pressure"]).all()


def test_configuration_errors_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match="training.crop"):
        load_training_config(_yaml(tmp_path).replace("crop: 16", "crop: 18"))
    with pytest.raises(ConfigError, match="dataset.backend"):
        load_training_config(_yaml(tmp_path).replace("box_size: 32.0",
                                                     "box_size: 32.0\n  backend: hydro"))
    with pytest.raises(ConfigError, match="baryon_painter.residual"):
        load_training_config(_yaml(tmp_path).replace("margin: 2",
                                                     "margin: 2\n  residual: maybe"))


def test_residual_heteroscedastic_painter_trains_on_residual_targets(tmp_path):
    """``residual: true`` and ``heteroscedastic: true`` reach the model; its target
    normalisation is that of the residuals ``log f - a log dm`` of the fixture (so the mean
    total-matter residual is ~0: baryonification moves mass, it does not create it)."""
    from astrogen.models.baryon_painter import forward_targets, load_baryon_painter
    from astrogen.training.registry import get_trainer

    extra = "  residual: true\n  heteroscedastic: true\n"
    text = _yaml(tmp_path, steps=1).replace("  margin: 2\n", "  margin: 2\n" + extra)
    res = get_trainer("baryon_painter").train(load_training_config(text))
    assert res["complete"]
    m = load_baryon_painter(tmp_path / "p.keras")
    assert m.residual and m.heteroscedastic
    box = np.load(FIXTURE / "box_00000.npz")
    t = forward_targets({f: box[f] for f in ("total", "gas", "temperature", "pressure")},
                        box["dm"])
    np.testing.assert_allclose([p[0] for p in m.target_norm], t.mean(axis=(0, 1, 2)),
                               rtol=1e-6, atol=1e-9)
    assert abs(m.target_norm[0][0]) < 0.1
    out = m.paint(box["dm"], n_samples=1)
    assert np.isfinite(out["pressure"]).all()
    assert abs(out["total"].mean(dtype=np.float64) / box["dm"].mean() - 1) < 1e-5

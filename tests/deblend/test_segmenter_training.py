"""``astrogen train`` for the deblending segmenters (model: unet / prob_unet): config checks,
a tiny run whose validation loss decreases, checkpoints and resume, and the trained models'
serialization and sampling."""
import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

keras = pytest.importorskip("keras")

from astrogen.errors import ConfigError, ResumeError, UnknownKeyError  # noqa: E402
from astrogen.training import load_training_config, run_training  # noqa: E402

TINY = """
model: {model}
seed: 3
output: {out}/model.keras
run_dir: {out}/run
dataset:
  path: {data}
  n_scenes: 72
  n_library: 8
  stamp_size: 32
  central_offset: 1.0
  separation: [0.5, 2.0]
  max_separation: 8.0
  margin: 12
  mag_range: [19.0, 23.0]
  shard_size: 36
  library_shard_size: 4
  seed: 2
{model}:
  depth: 2
  base_filters: 4
{extra}
training:
  batch_size: 8
  steps: {steps}
  learning_rate: 0.01
  lr_schedule: constant
  validation_scenes: 16
  checkpoint_every: 4
  log_every: 1
  progress: false
"""


def tiny(tmp, data, model="unet", steps=16, name="run", extra=""):
    return TINY.format(model=model, out=tmp / name, data=data, steps=steps, extra=extra)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("blends") / "data"


@pytest.fixture(scope="module")
def unet_run(tmp_path_factory, data_dir):
    tmp = tmp_path_factory.mktemp("unet")
    res = run_training(tiny(tmp, data_dir))
    return tmp, res


@pytest.fixture(scope="module")
def prob_run(tmp_path_factory, data_dir, unet_run):
    tmp = tmp_path_factory.mktemp("prob")
    res = run_training(tiny(tmp, data_dir, "prob_unet", steps=8,
                            extra="  latent_dim: 3\n  fcomb_layers: 2"))
    return tmp, res


def _log(run_dir):
    return [json.loads(x) for x in (run_dir / "losses.jsonl").read_text().splitlines()]


def test_config_checks(tmp_path):
    cfg = load_training_config(tiny(tmp_path, tmp_path / "d"))
    assert cfg["model"] == "unet" and cfg["unet"]["fraction_background"] == 0.1
    assert cfg["training"]["steps"] == 16 and "prob_unet" not in cfg
    with pytest.raises(UnknownKeyError, match="depht"):
        load_training_config(tiny(tmp_path, tmp_path / "d").replace("depth:", "depht:"))
    with pytest.raises(ConfigError, match="multiple of 2"):
        load_training_config(tiny(tmp_path, tmp_path / "d").replace("depth: 2", "depth: 6"))
    with pytest.raises(UnknownKeyError):
        load_training_config(tiny(tmp_path, tmp_path / "d").replace("mag_range", "mag_rnage"))
    with pytest.raises(UnknownKeyError, match="prob_unet"):
        load_training_config(tiny(tmp_path, tmp_path / "d") + "prob_unet: {latent_dim: 2}\n")


def test_unet_trains_and_loss_decreases(unet_run):
    tmp, res = unet_run
    assert res["complete"] and res["steps_done"] == 16
    log = _log(tmp / "run" / "run")
    val = [r["val_loss"] for r in log if "val_loss" in r]
    assert val[-1] < val[0]
    assert (tmp / "run" / "model.keras").is_file()
    assert (tmp / "run" / "run" / "checkpoints" / "latest.json").is_file()


def test_resume_gives_the_same_weights(tmp_path, data_dir, unet_run):
    tmp, _ = unet_run
    text = tiny(tmp_path, data_dir, steps=16, name="again")
    r1 = run_training(text, overrides=["training.max_steps_this_run=6"])
    assert not r1["complete"] and r1["steps_done"] == 6
    assert not (tmp_path / "again" / "model.keras").exists()
    from astrogen.training.unet_trainer import export_checkpoint

    ex = export_checkpoint(text, output=tmp_path / "partial.keras")
    assert ex["step"] == 6 and (tmp_path / "partial.keras").is_file()
    with pytest.raises(ResumeError):  # checkpoints present: needs --resume
        run_training(text)
    with pytest.raises(ResumeError):  # resume with another configuration
        run_training(text, resume=True, overrides=["training.learning_rate=0.02"])
    r = run_training(text, resume=True)
    assert r["start_step"] == 6 and r["complete"]
    a = keras.models.load_model(tmp / "run" / "model.keras")
    b = keras.models.load_model(tmp_path / "again" / "model.keras")
    for va, vb in zip(a.weights, b.weights):
        np.testing.assert_allclose(np.asarray(va), np.asarray(vb), rtol=1e-5, atol=1e-6)


def test_serialization_and_deblend_api(unet_run, data_dir):
    from astrogen.datasets.blends import read_blend_scenes
    from astrogen.deblend.segment import deblend, load_segmenter, network_input

    tmp, _ = unet_run
    path = tmp / "run" / "model.keras"
    m = load_segmenter(str(path), "unet")
    assert m.n_bands == 2  # image + radial-distance channel
    x = read_blend_scenes(data_dir, ("image", "sigma"), rows=slice(0, 3))
    xin = network_input(x["image"], x["sigma"], m.input_scale, True)
    assert xin.shape == (3, 32, 32, 2)
    np.testing.assert_allclose(np.arcsinh(xin[0, 15:17, 15:17, 1] / m.input_scale),
                               np.hypot(0.5, 0.5) / 16, rtol=1e-5)
    out1 = m(xin)
    m.save(tmp / "copy.keras")
    m2 = keras.models.load_model(tmp / "copy.keras")
    out2 = m2(xin)
    for k in ("classes", "fractions"):
        np.testing.assert_allclose(np.asarray(out1[k]), np.asarray(out2[k]), atol=1e-6)
    arrays, cat = deblend(x["image"], x["sigma"], method="unet", model=str(path))
    assert arrays["labels"].shape == (3, 32, 32) and arrays["fractions"].shape == (3, 32, 32, 3)
    assert set(cat.colnames) >= {"scene_id", "id", "x", "y", "flux", "flux_err"}
    with pytest.raises(Exception):
        load_segmenter(str(path), "prob_unet")


def test_prob_unet_samples_differ_and_kl_finite(prob_run, data_dir):
    from astrogen.datasets.blends import read_blend_scenes
    from astrogen.deblend.segment import deblend, load_segmenter, predict_prob_unet
    from astrogen.physics.blends import truth_targets

    tmp, res = prob_run
    assert res["complete"]
    log = _log(tmp / "run" / "run")
    assert all(np.isfinite(r["kl"]) and r["kl"] >= 0 for r in log if "kl" in r)
    m = load_segmenter(str(tmp / "run" / "model.keras"), "prob_unet")
    d = read_blend_scenes(data_dir, ("image", "models", "sigma"), rows=slice(0, 4))
    from astrogen.deblend.segment import network_input

    xin = network_input(d["image"], d["sigma"], m.input_scale, m.n_bands == 2)
    s = m.sample(xin, n_samples=4, seed=1)
    assert s.shape == (4, 4, 32, 32, 3)
    assert np.abs(s[0] - s[1]).max() > 1e-4  # different latents -> different maps
    np.testing.assert_array_equal(s, m.sample(xin, n_samples=4, seed=1))
    y = truth_targets(d["models"], d["sigma"], 1.0)["fractions"]
    kl = np.asarray(m.kl_divergence(xin, y))
    assert kl.shape == (4,) and np.all(np.isfinite(kl)) and np.all(kl >= 0)
    p = predict_prob_unet(m, d["image"], d["sigma"], n_samples=4)
    assert p["mean"].shape == (4, 32, 32, 3) and p["entropy"].shape == (4, 32, 32)
    np.testing.assert_allclose(p["mean"].sum(-1), 1.0, atol=1e-4)
    arrays, cat = deblend(d["image"][0], float(d["sigma"][0]), method="prob_unet",
                          model=str(tmp / "run" / "model.keras"), n_samples=4)
    assert arrays["uncertainty"].shape == (32, 32)


def test_prob_unet_temperature_is_fitted_on_validation_scenes_and_saved(prob_run, data_dir):
    from astrogen.deblend.calibration import tempered
    from astrogen.deblend.segment import load_segmenter, network_input
    from astrogen.datasets.blends import read_blend_scenes

    tmp, res = prob_run
    cal = json.loads((tmp / "run" / "run" / "calibration.json").read_text())
    assert cal["n_scenes"] == 16 and cal["first_scene"] == 72 - 16
    assert cal["nll_best"] <= cal["nll_at_1"] and cal["nll_best"] == min(cal["nll"])
    m = load_segmenter(str(tmp / "run" / "model.keras"), "prob_unet")
    assert m.temperature == cal["temperature"] and m.get_config()["temperature"] == m.temperature
    d = read_blend_scenes(data_dir, ("image", "sigma"), rows=slice(0, 2))
    xin = network_input(d["image"], d["sigma"], m.input_scale, m.n_bands == 2)
    raw = m.sample(xin, n_samples=2, seed=3, temperature=1.0)
    np.testing.assert_allclose(m.sample(xin, n_samples=2, seed=3), tempered(raw, m.temperature),
                               rtol=1e-3, atol=1e-5)


def test_permutation_invariant_loss():
    import tensorflow as tf

    from astrogen.models.losses import permutation_invariant_ce as _pit_ce, slot_permutations

    assert slot_permutations(2).tolist() == [[0, 1, 2], [0, 2, 1]]
    assert len(slot_permutations(3)) == 6
    rng = np.random.default_rng(0)
    y = rng.dirichlet([1, 1, 1], size=(2, 4, 4)).astype(np.float32)
    logp = np.log(rng.dirichlet([1, 1, 1], size=(2, 4, 4))).astype(np.float32)
    perms = [list(p) for p in slot_permutations(2)]
    a, _ = _pit_ce(tf.constant(y), tf.constant(logp), perms)
    b, _ = _pit_ce(tf.constant(y[..., [0, 2, 1]]), tf.constant(logp), perms)
    np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6)


def test_align_slots():
    from astrogen.deblend.segment import align_slots

    ref = np.zeros((1, 2, 2, 3))
    ref[..., 1] = 1
    swapped = ref[..., [0, 2, 1]][None]
    np.testing.assert_array_equal(align_slots(swapped, ref)[0], ref)


def _two_blob_scene(size=32):
    yy, xx = np.indices((size, size), dtype=np.float64)

    def blob(x0, y0, s, f):
        return f * np.exp(-((xx - x0) ** 2 + (yy - y0) ** 2) / (2 * s * s)) / (2 * np.pi * s * s)

    # an asymmetric scene: object 0 off-centre (upper right), object 1 at the centre
    m = np.stack([blob(24.0, 9.0, 2.0, 4000.0), blob(15.8, 15.3, 3.0, 2000.0)])
    pos = np.array([[24.0, 9.0], [15.8, 15.3]])
    return m.astype(np.float32), pos


def test_make_batch_augmentation_keeps_image_and_targets_aligned():
    """Every one of the 8 symmetries is applied to the image and the object images together:
    the (noiseless) input image equals the light implied by the targets, pixel by pixel."""
    from astrogen.training.unet_trainer import make_batch

    m, pos = _two_blob_scene()
    n = 16
    models = np.repeat(m[None], n, axis=0)
    images = models.sum(axis=1)
    sigma = np.ones(n, np.float32)
    a = {"fraction_background": 0.1, "class_threshold": 1.0, "object_weight": 5.0,
         "radial_channel": True}
    ref = make_batch(images, models, sigma, np.arange(n), a, False, 0, 0, 1.0)
    seen = set()
    for step in range(4):
        b = make_batch(images, models, sigma, np.arange(n), a, True, 0, step, 1.0)
        s = b["fractions"][..., 1:].sum(-1)
        implied = 0.1 * s / (1.0 - s)  # M = b s / (1 - s) with s the object fractions' sum
        np.testing.assert_allclose(b["x"][..., 0], implied, rtol=2e-3, atol=2e-3)
        # the radial band is not augmented (symmetric) and each scene is a symmetry of ref
        np.testing.assert_array_equal(b["x"][..., 1], ref["x"][..., 1])
        for i in range(n):
            for k in range(8):
                t = b["fractions"][i]
                r = ref["fractions"][i]
                if k & 1:
                    r = np.swapaxes(r, 0, 1)
                if k & 2:
                    r = r[:, ::-1]
                if k & 4:
                    r = r[::-1]
                if np.array_equal(t, r):
                    seen.add(k)
                    break
            else:
                raise AssertionError("augmented targets are not a symmetry of the originals")
    assert len(seen) >= 6


def test_make_batch_orders_slots_by_centre_distance():
    """Slot 1 of the targets is the object nearest the stamp centre (whatever the dataset
    order), slot 2 the other; without positions the dataset order is kept."""
    from astrogen.physics.blends import truth_targets
    from astrogen.training.unet_trainer import make_batch

    m, pos = _two_blob_scene()
    a = {"fraction_background": 0.1, "class_threshold": 1.0, "object_weight": 5.0,
         "radial_channel": True}
    images, sig = m.sum(0)[None], np.ones(1, np.float32)
    b = make_batch(images, m[None], sig, np.arange(1), a, False, 0, 0, 1.0, pos[None])
    want = truth_targets(m[None, ::-1], sig, 0.1, 1.0)["fractions"]
    np.testing.assert_array_equal(b["fractions"], want)
    assert b["fractions"][0, 15, 16, 1] > 0.9  # slot 1 owns the stamp centre
    assert b["fractions"][0, 9, 24, 2] > 0.9   # slot 2 the off-centre object
    b0 = make_batch(images, m[None], sig, np.arange(1), a, False, 0, 0, 1.0)
    np.testing.assert_array_equal(b0["fractions"], truth_targets(m[None], sig, 0.1, 1.0)
                                  ["fractions"])


def test_make_batch_flux_targets_follow_the_slots_and_the_symmetries():
    """With ``flux_weight`` the batch holds the noiseless scene (aligned with the augmented
    input) and each slot's flux in sigma units, in slot order; the slot fluxes sum to the
    scene's flux."""
    from astrogen.training.unet_trainer import make_batch

    m, pos = _two_blob_scene()
    n = 8
    models = np.repeat(m[None], n, axis=0)
    images = models.sum(axis=1)
    sigma = np.full(n, 2.0, np.float32)
    a = {"fraction_background": 0.1, "class_threshold": 1.0, "object_weight": 5.0,
         "radial_channel": True, "flux_weight": 1.0}
    assert "flux" not in make_batch(images, models, sigma, np.arange(n), {**a, "flux_weight": 0},
                                    True, 0, 1, 1.0)
    b = make_batch(images, models, sigma, np.arange(n), a, True, 0, 1, 1.0, np.repeat(
        pos[None], n, axis=0))
    np.testing.assert_allclose(b["scene"], b["x"][..., 0] / 2.0, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(b["flux"].sum(1), b["scene"].sum((1, 2)), rtol=1e-5)
    # slot 1 is the object nearest the centre: the dataset's second one
    np.testing.assert_allclose(b["flux"][:, 0], m[1].sum() / 2.0, rtol=1e-5)
    np.testing.assert_allclose(b["flux"][:, 1], m[0].sum() / 2.0, rtol=1e-5)


def test_init_model_copies_the_weights_and_refuses_another_architecture(tmp_path, data_dir,
                                                                         unet_run):
    tmp, _ = unet_run
    src = tmp / "run" / "model.keras"
    text = tiny(tmp_path, data_dir, steps=0, name="init")
    res = run_training(text, overrides=[f"training.init_model={src}"])
    assert res["complete"]
    a = keras.models.load_model(src)
    b = keras.models.load_model(tmp_path / "init" / "model.keras")
    for va, vb in zip(a.weights, b.weights):
        np.testing.assert_array_equal(np.asarray(va), np.asarray(vb))
    with pytest.raises(ConfigError, match="init_model"):
        run_training(tiny(tmp_path, data_dir, steps=0, name="wide"),
                     overrides=[f"training.init_model={src}", "unet.base_filters=6"])
    with pytest.raises(ConfigError, match="init_model"):
        run_training(tiny(tmp_path, data_dir, steps=0, name="none"),
                     overrides=[f"training.init_model={tmp_path / 'missing.keras'}"])

"""N-body WGAN-GP emulator: pixel transform, gradient penalty, tiny training + resume,
serialization. Tiny networks (16x16 slabs, 4-8 channels) on a synthetic slice dataset keep
this module at a few seconds; model quality is measured by
benchmarks/nbody_emulator_benchmark.py, not here."""
import json
import os
import textwrap

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from astrogen.datasets.nbody_slices import SliceDatasetConfig  # noqa: E402
from astrogen.datasets.nbody_slices import write_synthetic_dataset as write_synthetic  # noqa: E402
from astrogen.models.nbody_gan import PixelTransform  # noqa: E402

TINY = dict(n_boxes=1, n_grid=16, box_size=32.0, slab_thickness=4, n_steps=3, z_init=4.0,
            min_members=8)


def write_synthetic_dataset(path, seed=0):
    """A slice dataset of the TINY configuration with lognormal fields (no PM run)."""
    cfg = SliceDatasetConfig(**TINY)
    write_synthetic(path, cfg, seed=seed)
    return cfg


def test_pixel_transform_is_invertible():
    import tensorflow as tf

    t = PixelTransform(a=1.0)
    x = np.concatenate([[0.0, 1e-4, 0.5, 1.0, 3.0], np.geomspace(1e-3, 1e3, 50)])
    s = t.forward(x)
    assert np.all(s >= -1) and np.all(s < 1)
    assert t.forward(1.0) == pytest.approx(0.0)
    np.testing.assert_allclose(t.inverse(s), x, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(t.forward(t.inverse(np.linspace(-1, 0.99, 30))),
                               np.linspace(-1, 0.99, 30), atol=1e-12)
    st = t.forward(tf.constant(x, tf.float64))
    np.testing.assert_allclose(t.inverse(st).numpy(), x, rtol=1e-6)
    assert np.all(np.diff(t.forward(np.sort(x))) >= 0)  # monotonic


def test_gradient_penalty_of_linear_critic():
    """D(x) = sum(w x): |grad D| = |w| everywhere, so GP = (|w| - 1)^2."""
    import tensorflow as tf

    from astrogen.models.nbody_gan import gradient_penalty

    w = tf.constant(np.full((1, 4, 4, 1), 0.5, np.float32))  # |w| = 0.5 * 4 = 2

    def critic(inputs, training=False):
        return tf.reduce_sum(inputs[0] * w, axis=[1, 2, 3])

    real = tf.random.normal((3, 4, 4, 1))
    fake = tf.random.normal((3, 4, 4, 1))
    gp = gradient_penalty(critic, real, fake, None, tf.random.uniform((3, 1, 1, 1)))
    assert float(gp) == pytest.approx(1.0, rel=1e-5)


def _tiny_config(tmp_path, steps, extra=""):
    text = textwrap.dedent(f"""\
        model: nbody_gan
        seed: 3
        output: {tmp_path}/gan.keras
        run_dir: {tmp_path}/run
        dataset:
          path: {tmp_path}/data
          n_boxes: 1
          n_grid: 16
          box_size: 32.0
          slab_thickness: 4
          n_steps: 3
          z_init: 4.0
          min_members: 8
        gan: {{channels: [4, 8], critic_channels: [4, 8]}}
        training:
          steps: {steps}
          n_critic: 2
          batch_size: 4
          checkpoint_every: 1
          log_every: 1
        """) + extra
    p = tmp_path / "gan.yaml"
    p.write_text(text)
    return p


def test_tiny_gan_trains_checkpoints_and_resumes(tmp_path):
    from astrogen.errors import ResumeError
    from astrogen.models.nbody_gan import load_nbody_gan
    from astrogen.training import run_training

    write_synthetic_dataset(tmp_path / "data")
    res = run_training(str(_tiny_config(tmp_path, 2)))
    assert res["steps_done"] == 2 and res["complete"]
    rows = [json.loads(x) for x in (tmp_path / "run" / "losses.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    for r in rows:
        for k in ("critic_loss", "generator_loss", "gradient_penalty", "wasserstein", "l1"):
            assert np.isfinite(r[k])
        assert r["gradient_penalty"] > 0
    with pytest.raises(ResumeError):  # checkpoints exist: --resume required
        run_training(str(_tiny_config(tmp_path, 3)))
    res = run_training(str(_tiny_config(tmp_path, 3)), resume=True)
    assert res["steps_done"] == 3
    model = load_nbody_gan(tmp_path / "gan.keras")
    assert model.meta["training"]["steps_done"] == 3
    assert model.meta["n_grid"] == 16 and model.meta["slab_thickness"] == 4
    out = model.emulate(np.zeros((2, 16, 16)), seed=1)
    assert out.shape == (2, 16, 16) and np.all(out >= 0) and np.all(np.isfinite(out))


def test_gan_config_errors(tmp_path):
    from astrogen.errors import UnknownKeyError
    from astrogen.training.config import load_training_config

    with pytest.raises(UnknownKeyError, match="n_critc"):
        load_training_config(str(_tiny_config(tmp_path, 2)), ["training.n_critc=2"])
    cfg = load_training_config(str(_tiny_config(tmp_path, 2)))
    assert cfg["training"]["gp_weight"] == 10.0 and cfg["gan"]["transform_a"] == 1.0


def test_gan_serialization_round_trip(tmp_path):
    import keras

    from astrogen.models.nbody_gan import NBodyGAN, load_nbody_gan

    keras.utils.set_random_seed(1)
    gan = NBodyGAN(size=16, channels=[4, 8], critic_channels=[4, 8], cond_scale=0.7,
                   transform_a=2.0, meta={"n_grid": 16, "box_size": 32.0, "slab_thickness": 4})
    lin = np.random.default_rng(0).standard_normal((3, 16, 16)).astype(np.float32)
    a = gan.emulate(lin, seed=5)
    gan.save(tmp_path / "g.keras", with_critic=True)
    back = load_nbody_gan(tmp_path / "g.keras", with_critic=True)
    np.testing.assert_array_equal(back.emulate(lin, seed=5), a)
    assert back.cond_scale == 0.7 and back.transform.a == 2.0
    x = [np.zeros((1, 16, 16, 1), np.float32)] * 2
    np.testing.assert_array_equal(np.asarray(back.critic(x)), np.asarray(gan.critic(x)))
    assert not np.array_equal(back.emulate(lin, seed=6), a)  # the noise channel matters
    s = back.sample(2, seed=0)  # unconditional: draws its own linear fields
    assert s.shape == (2, 16, 16) and np.all(np.isfinite(s))


def test_smoothed_l1_keeps_large_scales_and_ignores_small_ones():
    import tensorflow as tf

    from astrogen.models.nbody_gan import generator_loss, smooth_periodic

    rng = np.random.default_rng(3)
    y, x = np.mgrid[:32, :32]
    large = np.cos(2 * np.pi * x / 32)[None, :, :, None].astype("float32")
    small = (0.5 * (-1.0) ** (x + y))[None, :, :, None].astype("float32")  # Nyquist mode
    noise = rng.normal(size=(1, 32, 32, 1)).astype("float32")
    # periodic, mean-preserving, and the identity for sigma = 0
    np.testing.assert_allclose(smooth_periodic(tf.constant(noise), 0.0), noise)
    sm = smooth_periodic(tf.constant(noise), 2.0).numpy()
    assert abs(sm.mean() - noise.mean()) < 1e-5 and sm.std() < 0.3 * noise.std()
    np.testing.assert_allclose(smooth_periodic(tf.constant(large), 2.0).numpy(),
                               large * np.exp(-0.5 * 4 * (2 * np.pi / 32) ** 2), atol=1e-5)
    zero = tf.zeros((1, 1))
    # a small-scale difference costs nothing once smoothed, a large-scale one does
    _, _, l1_small = generator_loss(zero, tf.constant(large + small), tf.constant(large), 1.0,
                                    2.0)
    _, _, l1_large = generator_loss(zero, tf.constant(2 * large), tf.constant(large), 1.0, 2.0)
    _, _, l1_plain = generator_loss(zero, tf.constant(large + small), tf.constant(large), 1.0)
    assert float(l1_small) < 1e-6 and float(l1_large) > 0.5 and float(l1_plain) == 0.5


def test_power_loss_is_zero_for_equal_spectra_and_ln4_squared_for_double_amplitude():
    """Doubling every density fluctuation multiplies P(k) by 4 at every k: the loss is then
    (ln 4)^2, whatever the field; a batch against itself costs 0."""
    import tensorflow as tf

    from astrogen.models.nbody_gan import PixelTransform, power_loss

    t = PixelTransform(1.0)
    rng = np.random.default_rng(0)
    x = 1.0 + 0.1 * rng.standard_normal((4, 16, 16, 1))  # x2 stays > 0
    x2 = 1.0 + 2.0 * (x - x.mean(axis=(1, 2), keepdims=True))
    s, s2 = (tf.constant(t.forward(v), tf.float32) for v in (x, x2))
    assert float(power_loss(s, s, t)) == pytest.approx(0.0, abs=1e-10)
    assert float(power_loss(s2, s, t)) == pytest.approx(np.log(4.0) ** 2, rel=1e-3)
    # a field with the same spectrum but other phases is (nearly) as good as the truth
    x3 = 1.0 + 0.1 * rng.standard_normal((4, 16, 16, 1))
    s3 = tf.constant(t.forward(x3), tf.float32)
    assert float(power_loss(s3, s, t)) < 0.1 * np.log(4.0) ** 2


def test_residual_generator_starts_from_its_condition_and_round_trips(tmp_path):
    """condition='lpt': output = tanh(atanh(condition) + head); with the head's weights at 0
    the generator returns its condition exactly; the model file keeps the condition kind."""
    import keras

    from astrogen.models.nbody_gan import NBodyGAN, load_nbody_gan

    keras.utils.set_random_seed(2)
    meta = {"n_grid": 16, "box_size": 32.0, "slab_thickness": 4, "redshift": 0.0,
            "lattice_shift": 0.25}
    gan = NBodyGAN(size=16, channels=[4, 8], critic_channels=[4, 8], condition="lpt",
                   meta=meta)
    rng = np.random.default_rng(1)
    lin3 = 0.3 * rng.standard_normal((16, 16, 16))
    cond = gan.condition_slabs(lin3)
    assert cond.shape == (12, 16, 16) and np.all(cond >= 0)
    # mass conserved: the 4 slabs of each axis hold the whole box (mass moves between slabs)
    np.testing.assert_allclose(cond.reshape(3, 4, 16, 16).mean(axis=(1, 2, 3)), 1.0, atol=1e-5)
    head = gan.generator.get_layer("generator_out")
    head.set_weights([np.zeros_like(w) for w in head.get_weights()])
    np.testing.assert_allclose(gan.emulate(cond, seed=0), cond, rtol=2e-4, atol=1e-5)
    keras.utils.set_random_seed(3)
    head.set_weights([rng.normal(0, 0.1, w.shape) for w in head.get_weights()])
    a = gan.emulate_field(lin3, seed=4)
    gan.save(tmp_path / "lpt.keras")
    back = load_nbody_gan(tmp_path / "lpt.keras")
    assert back.condition == "lpt" and back.lpt_order == 2
    np.testing.assert_array_equal(back.emulate_field(lin3, seed=4), a)
    assert back.sample(3, seed=1).shape == (3, 16, 16)
    # a linear-conditioned model still projects the linear field itself
    lin_gan = NBodyGAN(size=16, channels=[4, 8], critic_channels=[4, 8], meta=meta,
                       build_critic_net=False)
    from astrogen.nbody.slabs import project_slabs

    np.testing.assert_allclose(lin_gan.condition_slabs(lin3), project_slabs(lin3, 4))
    from astrogen.errors import ModelError

    with pytest.raises(ModelError, match="condition"):
        NBodyGAN(size=16, channels=[4, 8], condition="zeldovich")
    with pytest.raises(ModelError, match="16\\^3"):
        gan.condition_slabs(np.zeros((8, 8, 8)))


def test_tiny_lpt_gan_with_power_term_trains(tmp_path):
    from astrogen.models.nbody_gan import load_nbody_gan
    from astrogen.training import run_training

    write_synthetic_dataset(tmp_path / "data")
    extra = "  power_weight: 1.0\n"
    cfg = _tiny_config(tmp_path, 2, extra)
    cfg.write_text(cfg.read_text().replace("gan: {channels: [4, 8], critic_channels: [4, 8]}",
                                           "gan: {channels: [4, 8], critic_channels: [4, 8], "
                                           "condition: lpt, lpt_order: 1}"))
    res = run_training(str(cfg))
    assert res["complete"]
    rows = [json.loads(x) for x in (tmp_path / "run" / "losses.jsonl").read_text().splitlines()]
    assert all(np.isfinite(r["power"]) and r["power"] > 0 for r in rows)
    model = load_nbody_gan(tmp_path / "gan.keras")
    assert model.condition == "lpt" and model.lpt_order == 1
    assert model.meta["lattice_shift"] == 0.25


def test_checkpoint_selection_on_validation_boxes_exports_the_best(tmp_path):
    from astrogen.errors import ConfigError
    from astrogen.models.nbody_gan import load_nbody_gan
    from astrogen.training import run_training
    from astrogen.training.checkpoint import load_checkpoint
    from astrogen.training.config import load_training_config

    write_synthetic_dataset(tmp_path / "data")
    write_synthetic(tmp_path / "val", SliceDatasetConfig(**TINY, seed=5), seed=9)
    extra = ("  keep_checkpoints: 10\n"
             f"validation: {{path: {tmp_path}/val, n_boxes: 1, seed: 5}}\n")
    res = run_training(str(_tiny_config(tmp_path, 3, extra)))
    sel = json.loads((tmp_path / "run" / "selection.json").read_text())
    assert [r["step"] for r in sel["scores"]] == [1, 2, 3]
    errs = [r["max_abs_power_error"] for r in sel["scores"]]
    assert sel["best"]["max_abs_power_error"] == min(errs)
    assert res["selected_step"] == sel["best"]["step"]
    model = load_nbody_gan(tmp_path / "gan.keras")
    assert model.meta["training"]["steps_done"] == sel["best"]["step"]
    _, groups = load_checkpoint(tmp_path / "run" / "checkpoints" / sel["best"]["checkpoint"])
    for w, v in zip(model.generator.weights, groups["generator"]):
        np.testing.assert_array_equal(np.asarray(w), v)
    for bad in (0, 7):  # the training seed, the benchmark's test seed
        with pytest.raises(ConfigError, match="validation.seed"):
            load_training_config(str(_tiny_config(tmp_path, 3, extra)),
                                 [f"validation.seed={bad}"])


def test_averaged_generator_is_exported_selected_and_resumed(tmp_path):
    """training.ema_decay > 0: checkpoints carry the EMA, the exported model holds the
    averaged weights (not the last iterate), a resumed run continues the same average."""
    from astrogen.errors import ConfigError
    from astrogen.models.nbody_gan import load_nbody_gan
    from astrogen.training import run_training
    from astrogen.training.checkpoint import load_checkpoint
    from astrogen.training.config import load_training_config

    write_synthetic_dataset(tmp_path / "data")
    write_synthetic(tmp_path / "val", SliceDatasetConfig(**TINY, seed=5), seed=9)
    extra = ("  keep_checkpoints: 10\n  ema_decay: 0.5\n"
             f"validation: {{path: {tmp_path}/val, n_boxes: 1, seed: 5}}\n")
    run_training(str(_tiny_config(tmp_path, 2, extra)))
    _, g2 = load_checkpoint(tmp_path / "run" / "checkpoints" / "ckpt_000000002.npz")
    assert int(g2["generator_ema"][-1]) == 2  # update counter
    sel = json.loads((tmp_path / "run" / "selection.json").read_text())
    _, best = load_checkpoint(tmp_path / "run" / "checkpoints" / sel["best"]["checkpoint"])
    model = load_nbody_gan(tmp_path / "gan.keras")
    for w, v, raw in zip(model.generator.trainable_weights, best["generator_ema"][:-1],
                         best["generator"]):
        np.testing.assert_array_equal(np.asarray(w), v)
    assert any(not np.array_equal(a, b) for a, b in zip(best["generator_ema"][:-1],
                                                        best["generator"]))
    # resume one more step: the average continues from the checkpointed one
    (tmp_path / "run" / "selection.json").unlink()
    run_training(str(_tiny_config(tmp_path, 3, extra)), resume=True)
    _, g3 = load_checkpoint(tmp_path / "run" / "checkpoints" / "ckpt_000000003.npz")
    assert int(g3["generator_ema"][-1]) == 3
    with pytest.raises(ConfigError, match="ema_decay"):
        load_training_config(str(_tiny_config(tmp_path, 3, extra)), ["training.ema_decay=1.0"])

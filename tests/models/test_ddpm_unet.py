"""The conditional U-Net noise predictor: shapes, serialisation, training, guidance, EMA."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from astrogen.errors import ConfigError, ModelError
from astrogen.models.ddpm_unet import (DDPMUNet, DiffusionTrainer, EMA, as_eps_model,
                                       diffusion_loss)
from astrogen.schedulers import DDIMSampler, NoiseSchedule, guided

TINY = dict(image_size=16, channels=1, base_channels=8, channel_mults=(1, 2),
            num_res_blocks=1, cond_dim=3, cond_mean=[22.0, 0.5, 1.0], cond_std=[2.0, 0.3, 0.5])


def _randomize(model, seed=0):
    """Random weights everywhere (the fresh model has zero output and null embedding)."""
    model.build()
    rng = np.random.default_rng(seed)
    assert len(model.weights) > 50
    for v in model.weights:
        v.assign((0.2 * rng.standard_normal(v.shape)).astype(v.dtype))
    return model


def _inputs(n=3, size=16, seed=1):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, size, size, 1)).astype(np.float32)
    t = rng.integers(0, 1000, n).astype(np.int32)
    cond = np.stack([rng.uniform(19, 25, n), rng.uniform(0.1, 1.5, n),
                     rng.uniform(0.1, 2.5, n)], 1).astype(np.float32)
    return x, t, cond


@pytest.fixture(scope="module")
def tiny():
    return _randomize(DDPMUNet(**TINY))


def test_output_shape_equals_input_shape(tiny):
    x, t, c = _inputs()
    assert tuple(tiny((x, t, c)).shape) == x.shape
    assert tuple(tiny((x, t)).shape) == x.shape
    assert tuple(tiny({"x": x, "t": t, "cond": c}).shape) == x.shape
    wide = DDPMUNet(image_size=32, channels=2, base_channels=8, channel_mults=(1, 2, 2),
                    num_res_blocks=1, attention_resolutions=(16, 8), num_heads=2, cond_dim=0)
    x2 = np.zeros((2, 32, 32, 2), np.float32)
    assert tuple(wide((x2, np.array([0, 999]))).shape) == x2.shape


def test_default_configuration_is_valid():
    m = DDPMUNet()  # 64x64, 1 channel, 4 levels, attention at 8x8, 3 catalog properties
    assert m.resolutions == (64, 32, 16, 8) and m.attention_resolutions == (8,)
    assert m.cond_names == ("mag", "half_light_radius", "redshift")
    assert m.get_config()["image_size"] == 64


def test_fresh_model_predicts_zero_and_conditions_start_null():
    m = DDPMUNet(**TINY)
    x, t, c = _inputs()
    np.testing.assert_array_equal(np.asarray(m((x, t, c))), 0.0)  # zero-initialised output
    np.testing.assert_array_equal(np.asarray(m.null_cond_embedding), 0.0)


def test_condition_and_null_condition(tiny):
    x, t, c = _inputs()
    y_c = np.asarray(tiny((x, t, c)))
    y_u = np.asarray(tiny((x, t)))
    assert np.abs(y_c - y_u).max() > 1e-4                       # the condition matters
    c2 = c.copy()
    c2[:, 1] += 0.5
    assert np.abs(np.asarray(tiny((x, t, c2))) - y_c).max() > 1e-4
    # cond_mask = 0 is the null condition (even with NaN catalog values), per row
    mask = np.array([1.0, 0.0, 1.0], np.float32)
    c_nan = c.copy()
    c_nan[1] = np.nan
    y_m = np.asarray(tiny((x, t, c_nan, mask)))
    np.testing.assert_allclose(y_m[[0, 2]], y_c[[0, 2]], atol=1e-5)
    np.testing.assert_allclose(y_m[1], y_u[1], atol=1e-5)
    # t matters
    assert np.abs(np.asarray(tiny((x, t + 1, c))) - y_c).max() > 1e-6


def test_config_round_trip_identical_outputs(tiny):
    clone = DDPMUNet.from_config(tiny.get_config())
    clone.build()
    clone.set_weights(tiny.get_weights())
    x, t, c = _inputs()
    np.testing.assert_array_equal(np.asarray(clone((x, t, c))), np.asarray(tiny((x, t, c))))
    assert clone.get_config() == tiny.get_config()


def test_save_and_load_keras_file(tiny, tmp_path):
    path = tmp_path / "unet.keras"
    tiny.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, DDPMUNet)
    x, t, c = _inputs()
    np.testing.assert_array_equal(np.asarray(loaded((x, t, c))), np.asarray(tiny((x, t, c))))
    np.testing.assert_array_equal(np.asarray(loaded((x, t))), np.asarray(tiny((x, t))))


def test_guidance_scale_zero_is_unconditional(tiny):
    eps = as_eps_model(tiny)
    x, t, c = _inputs()
    x = x.astype(np.float64)
    u = eps(x, t, None)
    np.testing.assert_array_equal(guided(eps, c, None, 0.0)(x, t), u)
    np.testing.assert_allclose(guided(eps, c, None, 1.0)(x, t), eps(x, t, c))
    np.testing.assert_allclose(u, np.asarray(tiny((x.astype(np.float32), t))), atol=1e-6)
    # chunked evaluation gives the same numbers
    np.testing.assert_allclose(as_eps_model(tiny, batch_size=2)(x, t, c), eps(x, t, c),
                               atol=1e-6)


def test_sampling_with_the_network_is_deterministic(tiny):
    sched = NoiseSchedule.cosine(1000)
    c = _inputs(2)[2]
    g = guided(as_eps_model(tiny), c, None, 2.0)
    a = DDIMSampler(sched, 3).sample(g, (2, 16, 16, 1), seed=5)
    b = DDIMSampler(sched, 3).sample(g, (2, 16, 16, 1), seed=5)
    assert a.shape == (2, 16, 16, 1) and np.all(np.isfinite(a))
    np.testing.assert_array_equal(a, b)


def _toy_data(n=16, size=16, seed=0):
    """Round Gaussian blobs whose width and flux follow the 'catalog' properties."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2
    mag = rng.uniform(20, 24, n)
    r = rng.uniform(1.5, 4.0, n)
    z = rng.uniform(0.2, 2.0, n)
    flux = 10 ** (-0.4 * (mag - 22))
    img = flux[:, None, None] * np.exp(-(xx ** 2 + yy ** 2)[None] / (2 * r[:, None, None] ** 2))
    img = img / img.std() - img.mean() / img.std()
    cond = np.stack([mag, r / 4, z], 1)
    return img[..., None].astype(np.float32), cond.astype(np.float32)


def test_training_decreases_the_loss_and_ema_tracks():
    keras.utils.set_random_seed(0)
    model = DDPMUNet(**TINY, cond_drop_prob=0.2)
    sched = NoiseSchedule.cosine(1000)
    x0, cond = _toy_data()
    trainer = DiffusionTrainer(model, sched, keras.optimizers.Adam(3e-3), ema_decay=0.9,
                               seed=3)
    rng = np.random.default_rng(9)  # a fixed evaluation batch (t, noise)
    t_eval = rng.integers(0, 1000, 16)
    n_eval = rng.standard_normal(x0.shape).astype(np.float32)

    def eval_loss():
        return float(diffusion_loss(model, sched, x0, t_eval, n_eval, cond))

    before = eval_loss()
    assert before == pytest.approx(float(np.mean(n_eval ** 2)), rel=1e-5)  # eps_hat = 0
    start = [np.array(v) for v in model.trainable_weights]
    losses = [trainer.train_step(x0, cond) for _ in range(20)]
    after = eval_loss()
    assert np.all(np.isfinite(losses))
    print(f"eval loss {before:.3f} -> {after:.3f}; train losses {np.round(losses, 3)}")
    assert after < 0.8 * before, (before, after, losses)
    assert int(trainer.ema.num_updates.numpy()) == 20
    # the averages lie between the initial and the final weights (moved, but lag behind)
    moved = [i for i, v in enumerate(model.trainable_weights)
             if np.abs(np.array(v) - start[i]).max() > 1e-3]
    assert moved
    for i in moved[:5]:
        w, s, w0 = np.array(model.trainable_weights[i]), np.array(trainer.ema.shadow[i]), start[i]
        assert 0 < np.abs(s - w0).max() and np.abs(s - w).max() > 0
    # apply() puts the averages in the model and restores the trained weights afterwards
    w_final = [np.array(v) for v in model.trainable_weights]
    averages = [np.array(v) for v in trainer.ema.shadow]
    with trainer.ema.apply():
        for v, a in zip(model.trainable_weights, averages):
            np.testing.assert_array_equal(np.array(v), a)
        with_ema = eval_loss()
    for v, w in zip(model.trainable_weights, w_final):
        np.testing.assert_array_equal(np.array(v), w)
    for s, a in zip(trainer.ema.shadow, averages):
        np.testing.assert_array_equal(np.array(s), a)
    assert np.isfinite(with_ema)


def test_ema_update_formula():
    m = keras.Sequential([keras.layers.Dense(2)])
    m.build((None, 3))
    w0 = [np.array(v) for v in m.trainable_weights]
    ema = EMA(m, decay=0.5, warmup=False)
    for v in m.trainable_weights:
        v.assign(np.ones(v.shape))
    ema.update()
    for s, w in zip(ema.shadow, w0):
        np.testing.assert_allclose(np.array(s), 0.5 * w + 0.5, rtol=1e-6)
    ema.swap()
    for v, w in zip(m.trainable_weights, w0):
        np.testing.assert_allclose(np.array(v), 0.5 * w + 0.5, rtol=1e-6)
    ema.swap()
    for v in m.trainable_weights:
        np.testing.assert_array_equal(np.array(v), 1.0)
    warm = EMA(m, decay=0.999)
    assert float(warm.current_decay()) == pytest.approx(0.1)  # (1+0)/(10+0)
    with pytest.raises(ConfigError):
        EMA(m, decay=1.0)
    with pytest.raises(ModelError):
        EMA(keras.Sequential([keras.layers.Dense(2)]))


@pytest.mark.parametrize("kwargs, key", [
    (dict(image_size=20, channel_mults=(1, 2, 2, 4)), "image_size"),
    (dict(channel_mults=()), "channel_mults"),
    (dict(channel_mults=(1, 0)), "channel_mults"),
    (dict(attention_resolutions=(12,)), "attention_resolutions"),
    (dict(base_channels=6, num_heads=4), "num_heads"),
    (dict(cond_dim=2, cond_names=("mag", "r", "z")), "cond_names"),
    (dict(cond_dim=3, cond_std=[1.0, 0.0, 1.0]), "cond_std"),
    (dict(cond_mean=[1.0, 2.0]), "cond_mean"),
    (dict(cond_drop_prob=1.5), "cond_drop_prob"),
    (dict(dropout=1.0), "dropout"),
    (dict(base_channels=0), "base_channels"),
    (dict(cond_dim=-1), "cond_dim"),
])
def test_argument_errors(kwargs, key):
    with pytest.raises(ConfigError) as e:
        DDPMUNet(**kwargs)
    assert e.value.key == key


def test_unconditional_model_rejects_cond():
    m = DDPMUNet(image_size=8, base_channels=4, channel_mults=(1,), num_res_blocks=1,
                 cond_dim=0)
    x = np.zeros((1, 8, 8, 1), np.float32)
    assert tuple(m((x, np.array([3]))).shape) == x.shape
    with pytest.raises(ConfigError):
        m((x, np.array([3]), np.zeros((1, 3), np.float32)))


def test_v_prediction_target_and_its_inverse():
    from astrogen.models.ddpm_unet import eps_from_output
    from astrogen.schedulers import NoiseSchedule

    sch = NoiseSchedule.cosine(1000)
    rng = np.random.default_rng(0)
    x0, eps = rng.normal(size=(2, 3, 4, 4, 1))
    t = np.array([5, 3, 999])
    a = sch.sqrt_alpha_bar[t][:, None, None, None]
    b = sch.sqrt_one_minus_alpha_bar[t][:, None, None, None]
    x_t, v = a * x0 + b * eps, a * eps - b * x0
    np.testing.assert_allclose(eps_from_output(v, x_t, t, sch, "v"), eps, atol=1e-12)
    np.testing.assert_array_equal(eps_from_output(eps, x_t, t, sch, "eps"), eps)
    # x0 from v stays bounded where x0 from eps is amplified by 1/sqrt(abar) ~ 2e4 (t = 999)
    err = 0.01
    x0_from_eps = (x_t - b * (eps + err)) / a
    x0_from_v = a * x_t - b * (v + err)
    assert np.abs(x0_from_eps - x0)[2].max() > 100 and np.abs(x0_from_v - x0).max() < 0.011


def test_v_prediction_network_config_loss_and_eps_adapter():
    from astrogen.models.ddpm_unet import as_eps_model, diffusion_loss
    from astrogen.schedulers import NoiseSchedule

    kw = dict(image_size=8, base_channels=8, channel_mults=(1, 2), num_res_blocks=1,
              norm_groups=4, cond_dim=3)
    with pytest.raises(ConfigError, match="prediction"):
        DDPMUNet(prediction="x0", **kw)
    net = DDPMUNet(prediction="v", **kw)
    again = DDPMUNet.from_config(net.get_config())
    assert again.prediction == "v" and DDPMUNet(**kw).prediction == "eps"
    sch = NoiseSchedule.cosine(1000)
    with pytest.raises(ConfigError, match="schedule"):
        as_eps_model(net)
    rng = np.random.default_rng(1)
    x0 = rng.normal(size=(2, 8, 8, 1)).astype("float32")
    noise = rng.normal(size=(2, 8, 8, 1)).astype("float32")
    t = np.array([10, 900], "int32")
    out = np.asarray(net((x0 * 0 + noise, t), training=False), dtype=np.float64)
    # the loss is the MSE to v; the adapter turns the output into eps with the schedule
    a = sch.sqrt_alpha_bar[t][:, None, None, None]
    b = sch.sqrt_one_minus_alpha_bar[t][:, None, None, None]
    x_t = (a * x0 + b * noise).astype("float32")
    pred = np.asarray(net((x_t, t), training=False), dtype=np.float64)
    loss = float(diffusion_loss(net, sch, x0, t, noise))
    np.testing.assert_allclose(loss, np.mean((pred - (a * noise - b * x0)) ** 2), rtol=1e-4)
    eps = as_eps_model(net, jit=False, schedule=sch)(x_t, t)
    np.testing.assert_allclose(eps, a * pred + b * x_t, rtol=1e-5, atol=1e-6)
    assert out.shape == x0.shape

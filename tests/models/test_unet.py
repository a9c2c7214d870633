"""Tests of the U-Net deblending segmenter (astrogen.models.unet)."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

keras = pytest.importorskip("keras")

from astrogen.deblend.measure import light_fractions, segmentation_classes  # noqa: E402
from astrogen.errors import ConfigError  # noqa: E402
from astrogen.models.unet import UNet  # noqa: E402

SIZE = 32


def gaussian(x0, y0, sigma, flux, size=SIZE):
    yy, xx = np.indices((size, size), dtype=np.float64)
    return flux * np.exp(-((xx - x0) ** 2 + (yy - y0) ** 2) / (2 * sigma**2)) / (
        2 * np.pi * sigma**2)


def toy_blends(n, seed=0, noise=1.0):
    """Scenes of two Gaussian blobs, with analytic light fractions and 3-class truth."""
    rng = np.random.default_rng(seed)
    x, frac, cls = [], [], []
    for _ in range(n):
        models = np.stack([
            gaussian(*rng.uniform(8, 24, 2), rng.uniform(1.5, 3.0), rng.uniform(400, 1500))
            for _ in range(2)])
        x.append(models.sum(0) + rng.normal(0, noise, (SIZE, SIZE)))
        frac.append(light_fractions(models, 0.1 * noise))
        cls.append(np.eye(3)[segmentation_classes(models, noise)])
    f32 = np.float32
    return (np.asarray(x, f32)[..., None], np.asarray(frac, f32), np.asarray(cls, f32))


@pytest.mark.parametrize("n_bands", [1, 3])
@pytest.mark.parametrize("max_objects", [0, 3])
def test_output_shapes_and_normalisation(n_bands, max_objects):
    model = UNet(n_bands=n_bands, depth=2, base_filters=4, max_objects=max_objects, seed=1)
    x = np.random.default_rng(0).normal(size=(2, SIZE, SIZE, n_bands)).astype("float32")
    out = model(x)
    assert tuple(out["classes"].shape) == (2, SIZE, SIZE, 3)
    np.testing.assert_allclose(np.sum(out["classes"], -1), 1.0, atol=1e-5)
    if max_objects:
        assert tuple(out["fractions"].shape) == (2, SIZE, SIZE, max_objects + 1)
        np.testing.assert_allclose(np.sum(out["fractions"], -1), 1.0, atol=1e-5)
    else:
        assert set(out) == {"classes"}


@pytest.mark.parametrize("kwargs, key", [
    ({"depth": 0}, "depth"), ({"base_filters": -1}, "base_filters"),
    ({"n_bands": 1.5}, "n_bands"), ({"max_objects": -2}, "max_objects"),
    ({"input_transform": "asinhh"}, "input_transform"), ({"input_scale": 0}, "input_scale"),
    ({"n_classes": 1}, "n_classes"),
])
def test_bad_arguments_raise_config_error(kwargs, key):
    with pytest.raises(ConfigError) as err:
        UNet(**kwargs)
    assert err.value.key == key


def test_bad_input_shapes():
    model = UNet(n_bands=3, depth=2, base_filters=4)
    with pytest.raises(ConfigError, match="n_bands"):
        model(np.zeros((1, SIZE, SIZE, 1), "float32"))
    with pytest.raises(ConfigError, match="multiples of 2\\*\\*depth"):
        UNet(n_bands=1, depth=3, base_filters=4)(np.zeros((1, 20, 20, 1), "float32"))


def test_config_round_trip():
    model = UNet(n_bands=3, depth=2, base_filters=4, max_objects=2, input_scale=0.5, seed=7)
    config = model.get_config()
    clone = UNet.from_config(config)
    assert clone.get_config() == config
    x = np.random.default_rng(1).normal(size=(1, SIZE, SIZE, 3)).astype("float32")
    # Same seed -> same initial weights -> same outputs, without global seeding.
    np.testing.assert_array_equal(model(x)["fractions"], clone(x)["fractions"])


def test_keras_save_load_identical(tmp_path):
    model = UNet(n_bands=1, depth=2, base_filters=4, max_objects=2, seed=3)
    x = np.random.default_rng(2).normal(size=(2, SIZE, SIZE, 1)).astype("float32")
    before = model(x)
    path = tmp_path / "unet.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, UNet)
    after = loaded(x)
    for key in ("classes", "fractions"):
        np.testing.assert_array_equal(np.asarray(before[key]), np.asarray(after[key]))


def test_tiny_unet_learns_toy_blends():
    x, frac, cls = toy_blends(8, seed=0)
    keras.utils.set_random_seed(0)
    model = UNet(n_bands=1, depth=2, base_filters=8, max_objects=2, input_scale=1.0, seed=0)
    model.compile(optimizer=keras.optimizers.Adam(3e-3),
                  loss={"classes": "categorical_crossentropy",
                        "fractions": "categorical_crossentropy"})
    y = {"classes": cls, "fractions": frac}
    before = model.evaluate(x, y, verbose=0, return_dict=True)["loss"]
    history = model.fit(x, y, batch_size=8, epochs=20, shuffle=False, verbose=0)  # 20 steps
    after = model.evaluate(x, y, verbose=0, return_dict=True)["loss"]
    losses = history.history["loss"]
    assert np.all(np.isfinite(losses))
    assert after < 0.8 * before
    assert np.mean(losses[-3:]) < np.mean(losses[:3])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_relu_layers_keep_the_signal_at_init(seed):
    """Regression: with Glorot kernels under ReLU the deep levels of the U-Net started almost
    silent (bottleneck feature std 0.03-0.1 for a unit-variance input), and the trained
    segmenters never learned which galaxy a pixel belongs to. He initialisation keeps it
    of order one."""
    from astrogen.models.unet import UNetBackbone

    x = np.random.default_rng(seed).normal(size=(4, 64, 64, 2)).astype("float32")
    bb = UNetBackbone(depth=3, base_filters=8, activation="relu", seed=seed)
    bb(x)
    h = x
    for block, pool in zip(bb.down_blocks, bb.pools):
        h = pool(block(h))
    deep = float(np.std(np.asarray(bb.bottleneck(h))))
    assert deep > 0.3
    # softmax heads keep Glorot
    from astrogen.models.unet import layer_initializer as _initializer

    assert type(_initializer(1, "head")).__name__ == "GlorotUniform"
    assert type(_initializer(1, "conv", activation="relu")).__name__ == "HeNormal"


def test_flux_term_is_the_relative_flux_error_of_redistribution():
    """The flux term of ``compute_losses`` is |sum(scene x predicted fraction) - flux| /
    (flux + floor) averaged over scenes and slots, an empty slot's light relative to the
    scene's flux (computed here with numpy from the model's own fractions), adds ``flux_weight`` x itself to the loss, and vanishes without weight."""
    import tensorflow as tf

    x, frac, cls = toy_blends(4, seed=3)
    rng = np.random.default_rng(0)
    scene = np.abs(x[..., 0]).astype(np.float32)
    flux = rng.uniform(0, 2000, (4, 2)).astype(np.float32)
    flux[0, 1] = 0.0  # an empty slot
    w = np.ones(x.shape[:3], np.float32)
    model = UNet(n_bands=1, depth=2, base_filters=4, max_objects=2, seed=1)
    base = model.compute_losses(x, cls, frac, w)
    assert "flux" not in base
    out = model.compute_losses(x, cls, frac, w, scene=scene, flux=flux, flux_weight=2.5,
                               flux_floor=7.0)
    f = np.asarray(model(x)["fractions"])
    pred = (scene[..., None] * f[..., 1:]).sum(axis=(1, 2))
    ref = np.where(flux > 0, flux, flux.sum(1, keepdims=True))  # empty: vs the scene flux
    want = np.mean(np.abs(pred - flux) / (ref + 7.0))
    np.testing.assert_allclose(float(out["flux"]), want, rtol=1e-4)
    np.testing.assert_allclose(float(out["loss"]), float(base["loss"]) + 2.5 * want, rtol=1e-4)
    # the term has gradients for the weights of the fraction head
    with tf.GradientTape() as tape:
        o = model.compute_losses(x, cls, frac, 0 * w, scene=scene, flux=flux, flux_weight=1.0)
    g = tape.gradient(o["loss"], model.fraction_head.trainable_variables)
    assert all(gg is not None and float(tf.reduce_max(tf.abs(gg))) > 0 for gg in g)
    with pytest.raises(ConfigError, match="flux_weight"):
        model.compute_losses(x, cls, frac, w, flux_weight=1.0)

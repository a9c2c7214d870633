"""Tests of the probabilistic U-Net (astrogen.models.prob_unet)."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

keras = pytest.importorskip("keras")

from astrogen.deblend.measure import light_fractions, segmentation_classes  # noqa: E402
from astrogen.errors import ConfigError  # noqa: E402
from astrogen.models.prob_unet import ProbUNet, kl_diag_gaussians, predictive_summary  # noqa: E402

SIZE = 32


def gaussian(x0, y0, sigma, flux):
    yy, xx = np.indices((SIZE, SIZE), dtype=np.float64)
    return flux * np.exp(-((xx - x0) ** 2 + (yy - y0) ** 2) / (2 * sigma**2)) / (
        2 * np.pi * sigma**2)


def toy_blends(n, seed=0, noise=1.0):
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


@pytest.fixture(scope="module")
def trained():
    """A tiny prob-U-Net trained 20 steps on toy blends (fractions target)."""
    x, frac, _ = toy_blends(8, seed=0)
    model = ProbUNet(n_bands=1, depth=2, base_filters=8, latent_dim=3, target="fractions",
                     max_objects=2, seed=0)
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    before = model.evaluate(x, frac, verbose=0, return_dict=True)
    history = model.fit(x, frac, batch_size=8, epochs=20, shuffle=False, verbose=0)
    after = model.evaluate(x, frac, verbose=0, return_dict=True)
    return model, x, frac, before, after, history.history


@pytest.mark.parametrize("n_bands", [1, 3])
def test_shapes(n_bands):
    model = ProbUNet(n_bands=n_bands, depth=2, base_filters=4, latent_dim=2, seed=1)
    x = np.random.default_rng(0).normal(size=(2, SIZE, SIZE, n_bands)).astype("float32")
    out = np.asarray(model(x))
    assert out.shape == (2, SIZE, SIZE, 3)
    np.testing.assert_allclose(out.sum(-1), 1.0, atol=1e-5)
    samples = model.sample(x, n_samples=3, seed=0)
    assert samples.shape == (3, 2, SIZE, SIZE, 3)
    np.testing.assert_allclose(samples.sum(-1), 1.0, atol=1e-5)
    mu, log_sigma = model.prior(x)
    assert tuple(mu.shape) == tuple(log_sigma.shape) == (2, 2)


@pytest.mark.parametrize("kwargs, key", [
    ({"latent_dim": 0}, "latent_dim"), ({"target": "images"}, "target"),
    ({"target": "fractions", "max_objects": 0}, "max_objects"), ({"beta": -1.0}, "beta"),
    ({"fcomb_layers": 0}, "fcomb_layers"), ({"depth": 0}, "depth"),
])
def test_bad_arguments_raise_config_error(kwargs, key):
    with pytest.raises(ConfigError) as err:
        ProbUNet(**kwargs)
    assert err.value.key == key


def test_training_loss_decreases_and_kl_nonnegative(trained):
    model, x, frac, before, after, history = trained
    assert np.all(np.isfinite(history["loss"]))
    assert after["loss"] < 0.8 * before["loss"]
    assert np.mean(history["loss"][-3:]) < np.mean(history["loss"][:3])
    kl = np.asarray(model.kl_divergence(x, frac))
    assert kl.shape == (len(x),)
    assert np.all(np.isfinite(kl)) and np.all(kl >= 0)
    losses = model.compute_losses(x, frac, seed=1)
    assert float(losses["kl"]) >= 0
    np.testing.assert_allclose(float(losses["loss"]),
                               float(losses["reconstruction"]) + model.beta * float(losses["kl"]),
                               rtol=1e-5)


def test_kl_closed_form():
    rng = np.random.default_rng(3)
    mq, lq, mp, lp = (rng.normal(size=(5, 4)).astype("float32") for _ in range(4))
    kl = np.asarray(kl_diag_gaussians(mq, lq, mp, lp))
    sq, sp = np.exp(lq), np.exp(lp)
    expected = np.sum(np.log(sp / sq) + (sq**2 + (mq - mp) ** 2) / (2 * sp**2) - 0.5, -1)
    np.testing.assert_allclose(kl, expected, rtol=1e-4, atol=1e-5)
    assert np.all(kl >= 0)
    np.testing.assert_allclose(np.asarray(kl_diag_gaussians(mq, lq, mq, lq)), 0.0, atol=1e-6)


def test_sampling_seeded(trained):
    model, x, *_ = trained
    a = model.sample(x[:2], n_samples=4, seed=11)
    b = model.sample(x[:2], n_samples=4, seed=11)
    c = model.sample(x[:2], n_samples=4, seed=12)
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).max() > 1e-4
    assert np.abs(a[0] - a[1]).max() > 1e-4  # samples differ from each other
    # batching does not change the draws
    np.testing.assert_allclose(model.sample(x[:2], n_samples=4, seed=11, batch_size=1), a,
                               atol=1e-5)


def test_uncertainty_summary(trained):
    model, x, *_ = trained
    u = model.predict_with_uncertainty(x[:2], n_samples=5, seed=0)
    assert u["mean"].shape == (2, SIZE, SIZE, 3)
    assert u["entropy"].shape == u["std_max"].shape == (2, SIZE, SIZE)
    np.testing.assert_allclose(u["mean"].sum(-1), 1.0, atol=1e-5)
    assert np.all(u["entropy"] >= 0) and np.all(u["entropy"] <= np.log(3) + 1e-6)
    assert np.all(u["mutual_information"] >= 0)
    # identical samples -> no disagreement
    same = predictive_summary(np.repeat(u["mean"][None], 3, axis=0))
    np.testing.assert_allclose(same["std"], 0.0, atol=1e-7)
    np.testing.assert_allclose(same["mutual_information"], 0.0, atol=1e-6)


def test_config_round_trip_and_save_load(trained, tmp_path):
    model, x, *_ = trained
    config = model.get_config()
    assert ProbUNet.from_config(config).get_config() == config
    path = tmp_path / "prob_unet.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, ProbUNet)
    np.testing.assert_array_equal(np.asarray(model(x[:2])), np.asarray(loaded(x[:2])))
    np.testing.assert_array_equal(model.sample(x[:2], 2, seed=5), loaded.sample(x[:2], 2, seed=5))


def test_seeded_training_is_reproducible():
    x, _, cls = toy_blends(4, seed=1)
    weights = []
    for _ in range(2):
        model = ProbUNet(n_bands=1, depth=2, base_filters=4, latent_dim=2, seed=5)
        model.compile(optimizer=keras.optimizers.Adam(1e-3), run_eagerly=True)
        model.fit(x, cls, batch_size=4, epochs=2, shuffle=False, verbose=0)
        weights.append([np.asarray(w) for w in model.get_weights()])
    for a, b in zip(*weights):
        np.testing.assert_array_equal(a, b)


def test_wrong_target_channels():
    model = ProbUNet(n_bands=1, depth=2, base_filters=4, latent_dim=2)
    x = np.zeros((1, SIZE, SIZE, 1), "float32")
    with pytest.raises(ConfigError, match="3 channels"):
        model.kl_divergence(x, np.zeros((1, SIZE, SIZE, 4), "float32"))

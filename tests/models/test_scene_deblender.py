"""The detection-conditioned cut-out network (astrogen.models.scene_deblender)."""
import numpy as np
import pytest

from astrogen.errors import ModelError
from astrogen.models.scene_deblender import SceneDeblender, load_scene_deblender


def _inputs(n=4, size=16, bands=2, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 1, (n, size, size, bands + 2)).astype(np.float32)
    x[..., bands:] = np.clip(x[..., bands:], 0, 1)
    return x


def test_save_load_round_trip_and_card(tmp_path):
    m = SceneDeblender(size=16, n_bands=2, filters=(4, 8), card={"survey": "lsst",
                                                                 "temperature": 0.7})
    x = _inputs()
    p = m.save(tmp_path / "m.keras")
    m2 = load_scene_deblender(p)
    assert m2.card["survey"] == "lsst" and m2.temperature == 0.7
    a, b = m.predict_fractions(x), m2.predict_fractions(x)
    assert a.shape == (1, 4, 16, 16) and np.allclose(a, b, atol=1e-6)
    assert 0 <= a.min() and a.max() <= 1


def test_mc_dropout_samples_differ_deterministic_prediction_does_not():
    m = SceneDeblender(size=16, n_bands=2, filters=(4, 8), dropout=0.3)
    x = _inputs()
    assert np.array_equal(m.predict_fractions(x), m.predict_fractions(x))
    s = m.predict_fractions(x, n_samples=4, seed=1)
    assert s.shape == (4, 4, 16, 16)
    assert np.abs(s[0] - s[1]).max() > 1e-4
    assert np.array_equal(s, m.predict_fractions(x, n_samples=4, seed=1))


def test_training_steps_lower_the_loss():
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    m = SceneDeblender(size=16, n_bands=2, filters=(4, 8), dropout=0.0)
    x = m.transform(_inputs(8))
    t = (x[..., 2] > 0.5).astype(np.float32)  # learn "the target mark's pixels"
    opt = keras.optimizers.Adam(1e-2)
    step = m.make_train_step(opt)
    first = float(m.losses(tf.constant(x), tf.constant(t))["loss"])
    for _ in range(40):
        step(tf.constant(x), tf.constant(t))
    assert float(m.losses(tf.constant(x), tf.constant(t))["loss"]) < 0.5 * first


@pytest.mark.parametrize("kw,key", [({"size": 18, "filters": (4, 8, 16)}, "size"),
                                    ({"dropout": 1.0}, "dropout"), ({"filters": ()}, "filters"),
                                    ({"transform_a": 0}, "transform_a")])
def test_bad_arguments_name_their_key(kw, key):
    with pytest.raises(ModelError, match=f"^{key}:"):
        SceneDeblender(**{"size": 16, "n_bands": 2, **kw})
    with pytest.raises(ModelError, match="^image:"):
        SceneDeblender(size=16, n_bands=2, filters=(4,)).transform(np.zeros((1, 16, 16, 3)))

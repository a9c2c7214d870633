"""Tests of the displacement emulator network (astrogen.models.d3m)."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

keras = pytest.importorskip("keras")

from astrogen.errors import ConfigError, ModelError  # noqa: E402
from astrogen.models.d3m import (D3M, PeriodicPad3D, apply_symmetry,  # noqa: E402
                                 build_d3m_network, cube_symmetries, load_d3m)
from astrogen.testing import run_layer_test  # noqa: E402


def _random_net(channels, seed=0):
    """A network whose head is not zero (the default head starts at zero, which would make
    every property trivially true)."""
    keras.utils.set_random_seed(seed)
    net = build_d3m_network(channels, 1)
    head = net.get_layer("head")
    rng = np.random.default_rng(seed)
    head.set_weights([0.3 * rng.standard_normal(w.shape).astype("float32")
                      for w in head.get_weights()])
    return net


def test_periodic_pad_layer():
    run_layer_test(PeriodicPad3D, {"pad": 2}, (2, 4, 5, 6, 3),
                   expected_output_shape=(2, 8, 9, 10, 3))


def test_periodic_pad_wraps_values():
    x = np.arange(4 * 4 * 4, dtype="float32").reshape(1, 4, 4, 4, 1)
    y = np.asarray(PeriodicPad3D(1)(x))
    np.testing.assert_array_equal(y[0, 0, 1:-1, 1:-1, 0], x[0, -1, :, :, 0])
    np.testing.assert_array_equal(y[0, 1:-1, -1, 1:-1, 0], x[0, :, 0, :, 0])
    np.testing.assert_array_equal(y[0, 1:-1, 1:-1, 0, 0], x[0, :, :, -1, 0])
    assert y[0, 0, 0, 0, 0] == x[0, -1, -1, -1, 0]


@pytest.mark.parametrize("pad", [-1, 1.5, True])
def test_periodic_pad_refuses_bad_pad(pad):
    with pytest.raises(ConfigError) as e:
        PeriodicPad3D(pad)
    assert e.value.key == "pad"


@pytest.mark.parametrize("channels, shift", [([4], (1, 2, 3)), ([4, 8], (2, 4, 6)),
                                             ([4, 8, 8], (4, 0, 12))])
def test_network_commutes_with_periodic_shifts(channels, shift):
    """Shifting the input periodically shifts the output the same way (exactly, for shifts
    that are multiples of the coarsest stride 2**(levels-1))."""
    net = _random_net(channels)
    x = np.random.default_rng(1).standard_normal((1, 16, 16, 16, 3)).astype("float32")
    y = np.asarray(net(x))
    ys = np.asarray(net(np.roll(x, shift, axis=(1, 2, 3))))
    np.testing.assert_allclose(ys, np.roll(y, shift, axis=(1, 2, 3)), atol=1e-5)
    assert np.abs(y - x).max() > 1e-2  # the head does something


def test_a_non_periodic_net_would_fail_the_shift_test():
    """The shift test can fail: a 'same'-padded (zero-padded) convolution breaks it."""
    layer = keras.layers.Conv3D(3, 3, padding="same")
    x = np.random.default_rng(1).standard_normal((1, 8, 8, 8, 3)).astype("float32")
    y = np.asarray(layer(x))
    ys = np.asarray(layer(np.roll(x, 1, axis=1)))
    assert np.abs(ys - np.roll(y, 1, axis=1)).max() > 1e-3


def test_residual_output_and_zero_head():
    """An untrained model is the Zel'dovich approximation: output == input."""
    m = D3M(channels=[4, 8], scale=2.0)
    z = np.random.default_rng(2).standard_normal((3, 8, 8, 8)).astype("float32")
    np.testing.assert_allclose(m.predict(z), z, atol=1e-6)


def test_48_cube_symmetries_are_distinct_and_act_on_vectors():
    syms = cube_symmetries()
    assert len(syms) == len(set(syms)) == 48
    f = np.random.default_rng(3).standard_normal((6, 6, 6, 3))
    outs = {apply_symmetry(f, p, fl).tobytes() for p, fl in syms}
    assert len(outs) == 48
    # a rotation, reflection or shift keeps the set of vector lengths
    for p, fl in syms[::7]:
        g = apply_symmetry(f, p, fl, shift=(1, 2, 3))
        np.testing.assert_allclose(np.sort(np.linalg.norm(g, axis=-1).ravel()),
                                   np.sort(np.linalg.norm(f, axis=-1).ravel()))


def test_symmetry_of_zeldovich_field_matches_symmetry_of_initial_field():
    """Applying a cube symmetry to the linear field and then computing its Zel'dovich
    displacement equals transforming the displacement as a vector field (the augmentation
    of the trainer creates valid training pairs)."""
    from astrogen.cosmology.initial import lpt_displacements

    rng = np.random.default_rng(4)
    n, L = 8, 16.0
    delta = rng.standard_normal((n, n, n))
    psi = np.moveaxis(lpt_displacements(delta, L, order=1)[0], 0, -1)
    for perm, flips in cube_symmetries()[::5]:
        d2 = np.transpose(delta, perm)
        d2 = d2[tuple(slice(None, None, -1) if f else slice(None) for f in flips)]
        psi2 = np.moveaxis(lpt_displacements(np.ascontiguousarray(d2), L, order=1)[0], 0, -1)
        np.testing.assert_allclose(apply_symmetry(psi, perm, flips), psi2, atol=1e-10)


def test_save_load_round_trip(tmp_path):
    m = D3M(channels=[4, 8], scale=3.0, meta={"cell_size": 2.0})
    m.network = _random_net([4, 8], seed=5)
    z = np.random.default_rng(6).standard_normal((2, 3, 8, 8, 8)).astype("float32")
    p = m.save(tmp_path / "d3m.keras")
    m2 = load_d3m(p)
    assert m2.config() == m.config()
    np.testing.assert_allclose(m2.predict(z), m.predict(z), atol=1e-6)
    with pytest.raises(ModelError):
        m.save(tmp_path / "d3m.h5")
    (tmp_path / "d3m.json").write_text('{"format": "other"}')
    with pytest.raises(ModelError):
        load_d3m(p)


@pytest.mark.parametrize("shape", [(3, 5, 5, 5), (2, 8, 8, 8), (3, 8, 8, 4)])
def test_predict_refuses_bad_shapes(shape):
    m = D3M(channels=[4, 8])
    with pytest.raises(ModelError) as e:
        m.predict(np.zeros(shape, "float32"))
    assert e.value.key == "zeldovich"


def test_bad_constructor_arguments():
    with pytest.raises(ConfigError) as e:
        D3M(scale=0.0)
    assert e.value.key == "scale"
    with pytest.raises(ConfigError) as e:
        D3M(channels=[])
    assert e.value.key == "channels"


def test_shipped_model_maps_zero_displacement_to_nearly_zero():
    """With no initial displacement there is no structure; the trained emulator must not
    invent one: its output stays far below the typical z = 0 displacement (~3.6 Mpc/h rms
    in its training set)."""
    from astrogen.models.pretrained import models_dir

    path = models_dir() / "d3m_32.keras"
    assert path.is_file(), "shipped D3M weights missing (astrogen train configs/d3m.yaml)"
    m = load_d3m(path)
    out = m.predict(np.zeros((3, 16, 16, 16), "float32"))
    assert np.sqrt(np.mean(out ** 2)) < 0.1 * 3.6

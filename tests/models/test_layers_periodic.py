"""Periodic 3-D layers: circular padding is exact, a periodic convolution commutes with
periodic shifts of its input (any shift at stride 1, even shifts at stride 2), and a whole
3-D halo network commutes with shifts by multiples of 2**(levels - 1)."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from astrogen.errors import ConfigError  # noqa: E402
from astrogen.models.layers_periodic import PeriodicConv3D, PeriodicPad3D  # noqa: E402


def _x(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def test_pad_wraps_the_box():
    x = _x((1, 4, 5, 6, 2))
    y = np.asarray(PeriodicPad3D(2)(x))
    np.testing.assert_array_equal(y, np.pad(x, ((0, 0), (2, 2), (2, 2), (2, 2), (0, 0)),
                                            mode="wrap"))
    with pytest.raises(ConfigError, match="pad"):
        PeriodicPad3D(-1)
    with pytest.raises(ConfigError, match="axis length"):
        PeriodicPad3D(5)(x)


@pytest.mark.parametrize("strides, shift", [(1, (1, 3, 5)), (1, (7, 0, 2)), (2, (2, 4, 6))])
def test_periodic_conv_commutes_with_periodic_shifts(strides, shift):
    layer = PeriodicConv3D(3, 3, strides=strides)
    x = _x((2, 8, 8, 8, 2))
    y = np.asarray(layer(x))
    ys = np.asarray(layer(np.roll(x, shift, axis=(1, 2, 3))))
    out_shift = tuple(s // strides for s in shift)
    np.testing.assert_allclose(ys, np.roll(y, out_shift, axis=(1, 2, 3)), atol=1e-5)
    # and a zero-padded ("same") convolution does not: the test can fail
    import keras

    conv = keras.layers.Conv3D(3, 3, padding="same")
    a = np.asarray(conv(np.roll(x, shift, axis=(1, 2, 3))))
    b = np.roll(np.asarray(conv(x)), shift, axis=(1, 2, 3))
    assert np.abs(a - b).max() > 1e-3


def test_conv_checks_its_arguments():
    for kw, key in [({"filters": 0}, "filters"), ({"filters": 2, "kernel_size": 2},
                                                   "kernel_size"),
                    ({"filters": 2, "strides": 3}, "strides"),
                    ({"filters": 2, "leaky_slope": 1.5}, "leaky_slope")]:
        with pytest.raises(ConfigError, match=key):
            PeriodicConv3D(**kw)
    with pytest.raises(ConfigError, match="even"):
        PeriodicConv3D(2, strides=2)(_x((1, 5, 6, 6, 1)))


def test_halo_network_is_shift_equivariant():
    from astrogen.models.halo_vnet import HaloVNet

    model = HaloVNet(size=16, channels=(4, 8, 8))
    assert model.shift_period == 4
    lin = _x((16, 16, 16), 3)
    p, n = model.predict(lin)
    shift = (4, 8, 12)
    ps, ns = model.predict(np.roll(lin, shift, axis=(0, 1, 2)))
    np.testing.assert_allclose(ps, np.roll(p, shift, axis=(0, 1, 2)), atol=2e-5)
    np.testing.assert_allclose(ns, np.roll(n, shift, axis=(0, 1, 2)), rtol=2e-4)

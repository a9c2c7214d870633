"""3-D halo network: the model's loss (Dice and BCE reach their limits on a perfect
prediction; the size term only counts halo cells), save/load round trip, argument checks,
and the shipped weights find the protohalo of a planted spherical overdensity."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from astrogen.errors import ModelError  # noqa: E402
from astrogen.models.halo_vnet import HaloVNet, halo_vnet_loss, load_halo_vnet  # noqa: E402


def test_loss_limits():
    import tensorflow as tf

    mask = np.zeros((1, 8, 8, 8), np.float32)
    mask[0, 2:5, 2:5, 2:5] = 1
    log_n = np.where(mask > 0, 1.5, 0.0).astype(np.float32)
    good = np.stack([np.where(mask > 0, 30.0, -30.0), log_n], -1).astype(np.float32)
    total, bce, dice, mse = halo_vnet_loss(tf.constant(good), mask, log_n, 1.0, 1.0, 1.0)
    assert float(bce) < 1e-10 and float(dice) == pytest.approx(1.0, abs=1e-12)
    assert float(mse) == 0.0 and float(total) < 1e-6
    bad = good.copy()
    bad[..., 0] *= -1  # every cell wrong
    bad[..., 1] = np.where(mask[0] > 0, 2.5, 7.0)  # size off by 1 on halo cells only
    total, bce, dice, mse = halo_vnet_loss(tf.constant(bad), mask, log_n, 1.0, 1.0, 1.0)
    assert float(dice) < 0.01 and float(bce) > 10
    assert float(mse) == pytest.approx(27 / 28, rel=1e-5)  # sum / (halo cells + 1)


def test_save_load_round_trip(tmp_path):
    m = HaloVNet(size=8, channels=(4, 4), input_scale=2.0, meta={"box_size": 8.0})
    path = m.save(tmp_path / "v.keras")
    back = load_halo_vnet(path)
    x = np.random.default_rng(0).standard_normal((8, 8, 8))
    for a, b in zip(m.predict(x), back.predict(x)):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    assert back.input_scale == 2.0 and back.meta == {"box_size": 8.0}
    with pytest.raises(ModelError, match="size"):
        HaloVNet(size=10, channels=(4, 4, 4))
    with pytest.raises(ModelError, match="lattices"):
        m.predict(np.zeros((4, 4, 4)))
    with pytest.raises(ModelError, match=".keras"):
        m.save(tmp_path / "v.h5")


def test_shipped_network_finds_a_planted_spherical_overdensity():
    from astrogen.models.pretrained import models_dir

    model = load_halo_vnet(models_dir() / "halo_vnet_32.keras")
    n = model.size
    rng = np.random.default_rng(5)
    lin = 0.3 * model.input_scale * rng.standard_normal((n, n, n))  # quiet background
    centre = np.array([3.0, 17.0, 30.0])  # near two faces: crosses the periodic boundary
    d = np.indices((n, n, n)).reshape(3, -1).T - centre
    d -= n * np.rint(d / n)
    r = np.sqrt((d ** 2).sum(1)).reshape(n, n, n)
    lin[r <= 3.5] += 3.0 * model.input_scale  # collapses well before z = 0
    p, npred = model.predict(lin)
    inside, far = p[r <= 2.0], p[r >= 8.0]
    assert inside.mean() > 0.8, inside.mean()
    assert far.mean() < 0.2, far.mean()
    # the predicted size grows with the planted mass (a bigger sphere, same contrast)
    lin2 = lin.copy()
    lin2[r <= 5.0] += 3.0 * model.input_scale
    _, n2 = model.predict(lin2)
    assert np.median(n2[r <= 2.0]) > np.median(npred[r <= 2.0])

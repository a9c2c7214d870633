"""The baryon painter (astrogen.models.baryon_painter) and its periodic padding layer
(astrogen.models.layers_periodic): periodic equivariance, sampling, conservation, files."""
from __future__ import annotations

import numpy as np
import pytest

from astrogen.errors import ConfigError, ModelError

keras = pytest.importorskip("keras")

from astrogen.models.baryon_painter import (DM_EXPONENTS, FIELDS,  # noqa: E402
                                            BaryonPainter, forward_targets,
                                            inverse_targets, load_baryon_painter)
from astrogen.models.layers_periodic import PeriodicPad3D  # noqa: E402
from astrogen.testing import run_layer_test  # noqa: E402


def tiny(**kw) -> BaryonPainter:
    keras.utils.set_random_seed(3)
    return BaryonPainter(channels=[2, 3, 4], latent_channels=1, margin=1,
                         input_norm=[-0.5, 1.2], gas_fraction=0.93, **kw)


#: the first shipped format (absolute fields, one width per field) and the residual,
#: heteroscedastic one
VARIANTS = [{}, {"residual": True, "heteroscedastic": True}]


def lognormal_box(n=16, seed=0):
    rng = np.random.default_rng(seed)
    g = rng.standard_normal((n, n, n))
    return np.exp(g - 0.5)


def test_periodic_pad_layer():
    layer = run_layer_test(PeriodicPad3D, {"pad": 2}, (2, 4, 5, 6, 3),
                           expected_output_shape=(2, 8, 9, 10, 3))
    x = np.arange(2 * 4 * 5 * 6 * 3, dtype="float32").reshape(2, 4, 5, 6, 3)
    y = np.asarray(layer(x))
    np.testing.assert_array_equal(y, np.pad(x, [(0, 0), (2, 2), (2, 2), (2, 2), (0, 0)],
                                            mode="wrap"))
    with pytest.raises(ConfigError, match="pad"):
        PeriodicPad3D(pad=-1)


def test_padded_convolution_is_shift_equivariant():
    """Periodic padding + valid convolution commutes with any periodic shift."""
    keras.utils.set_random_seed(0)
    inp = keras.Input((None, None, None, 1))
    model = keras.Model(inp, keras.layers.Conv3D(2, 3)(PeriodicPad3D(1)(inp)))
    x = np.random.default_rng(1).standard_normal((1, 8, 8, 8, 1)).astype("float32")
    shift = (3, -2, 5)
    a = np.roll(np.asarray(model(x)), shift, axis=(1, 2, 3))
    b = np.asarray(model(np.roll(x, shift, axis=(1, 2, 3))))
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kw", VARIANTS)
def test_painter_is_periodic_equivariant(kw):
    """Shifting the dark matter (and the latent grid) by a multiple of 4 cells shifts every
    painted field by the same cells: no seams at the box faces."""
    m = tiny(**kw)
    dm = lognormal_box()
    eps = np.random.default_rng(2).standard_normal((1,) + m.latent_shape(16))
    a = m.paint(dm, eps=eps, conserve=False)
    b = m.paint(np.roll(dm, (4, 8, -4), axis=(0, 1, 2)), conserve=False,
                eps=np.roll(eps, (1, 2, -1), axis=(1, 2, 3)))
    for f in FIELDS:
        np.testing.assert_allclose(np.roll(a[f][0], (4, 8, -4), axis=(0, 1, 2)), b[f][0],
                                   rtol=2e-4, atol=1e-12)


def test_samples_differ_and_their_mean_is_stable():
    """Latent draws give different fields; the mean of two disjoint sets of 16 samples
    agree far better than single samples do (the mean converges)."""
    m = tiny()
    dm = lognormal_box()
    s = np.log(m.paint(dm, n_samples=32, seed=5, conserve=False)["gas"])
    spread = np.sqrt(np.mean(np.var(s, axis=0)))
    assert spread > 1e-4
    diff = np.sqrt(np.mean((s[:16].mean(0) - s[16:].mean(0)) ** 2))
    assert diff < 0.6 * spread  # expected sqrt(2/16) = 0.35 of the spread
    again = np.log(m.paint(dm, n_samples=32, seed=5, conserve=False)["gas"])
    np.testing.assert_array_equal(s, again)  # seeded
    one = m.paint(dm, n_samples=2, seed=5, temperature=0.0, conserve=False)["gas"]
    np.testing.assert_array_equal(one[0], one[1])  # no sampling at temperature 0


@pytest.mark.parametrize("kw", VARIANTS)
def test_mass_and_mean_gas_fraction_are_conserved(kw):
    """conserve=True: the painted total matter has the mean of the input dark matter and
    the gas the model's mean gas fraction of it, to float32 rounding (1e-5 relative)."""
    m = tiny(**kw)
    dm = 1.7 * lognormal_box(seed=4)
    out = m.paint(dm, n_samples=3, seed=1)
    for i in range(3):
        assert abs(out["total"][i].mean(dtype=np.float64) / dm.mean() - 1) < 1e-5
        assert abs(out["gas"][i].mean(dtype=np.float64) / (0.93 * dm.mean()) - 1) < 1e-5


def test_target_transforms_invert():
    rng = np.random.default_rng(0)
    f = {"total": rng.uniform(0.1, 10, 50), "gas": rng.uniform(0.1, 10, 50),
         "temperature": rng.uniform(1e3, 1e8, 50), "pressure": rng.uniform(1e-12, 1e-3, 50)}
    back = inverse_targets(forward_targets(f))
    for k in FIELDS:
        np.testing.assert_allclose(back[k], f[k], rtol=1e-10)


def test_residual_targets_invert_and_vanish_where_gas_follows_the_dark_matter():
    """With ``dm`` the targets are residuals: fields that just follow the dark matter
    (total = gas = dm, T ~ dm^(2/3), P_e ~ dm^(5/3)) give the same residual in every cell,
    and the inverse with the same dm gives the fields back."""
    dm = lognormal_box(8, seed=2)
    follow = {"total": dm, "gas": 0.9 * dm, "temperature": 1e4 * dm ** (2 / 3),
              "pressure": 3e-10 * dm ** (5 / 3)}
    t = forward_targets(follow, dm)
    assert DM_EXPONENTS["pressure"] == pytest.approx(5 / 3)
    np.testing.assert_allclose(t.std(axis=(0, 1, 2)), 0.0, atol=1e-9)
    np.testing.assert_allclose(t[0, 0, 0], [0.0, np.log(0.9), 4.0, np.log10(3e-10)],
                               atol=1e-9)
    assert forward_targets(follow).std(axis=(0, 1, 2)).min() > 0.1  # absolute: not constant
    rng = np.random.default_rng(1)
    f = {"total": rng.uniform(0.1, 10, dm.shape), "gas": rng.uniform(0.1, 10, dm.shape),
         "temperature": rng.uniform(1e3, 1e8, dm.shape),
         "pressure": rng.uniform(1e-12, 1e-3, dm.shape)}
    back = inverse_targets(forward_targets(f, dm), dm)
    for k in FIELDS:
        np.testing.assert_allclose(back[k], f[k], rtol=1e-10)


def test_untrained_residual_painter_paints_the_dark_matter():
    """A residual painter whose decoder outputs the training mean of every residual (zero
    standardised output) paints total matter = dm exactly (the suppression is then 1) and
    the gas the dark matter times the mean residual."""
    m = tiny(residual=True, target_norm=[[0.0, 0.3], [-0.1, 0.3], [4.0, 0.2],
                                         [-9.5, 0.4]])
    dm = lognormal_box(8, seed=5)
    out = m.destandardize(np.zeros(dm.shape + (4,)), dm)
    np.testing.assert_allclose(out["total"], dm, rtol=1e-12)
    np.testing.assert_allclose(out["gas"], np.exp(-0.1) * dm, rtol=1e-12)
    np.testing.assert_allclose(out["pressure"], 10 ** -9.5 * dm ** (5 / 3), rtol=1e-10)
    with pytest.raises(ModelError, match="dark matter"):
        m.destandardize(np.zeros(dm.shape + (4,)))


def test_heteroscedastic_mean_correction_is_per_cell():
    """A heteroscedastic painter's lognormal mean correction of T and P_e is exp(s^2/2) with
    s its per-cell width: it varies over the cells, stays within the bound of the per-cell
    offset (+-2 in ln units around the field's width), and leaves the densities alone."""
    m = tiny(residual=True, heteroscedastic=True)
    dm = lognormal_box()
    a = m.paint(dm, seed=4, conserve=False, mean_correct=True)
    b = m.paint(dm, seed=4, conserve=False, mean_correct=False)
    np.testing.assert_allclose(a["gas"], b["gas"], rtol=1e-6)
    s_field = m.residual_scale()
    for f in ("temperature", "pressure"):
        ratio = np.log(a[f][0].astype(np.float64) / b[f][0])
        s = np.sqrt(2 * ratio)
        assert s.std() > 1e-4 * s.mean()  # a width per cell
        assert np.all(s >= s_field[f] * np.exp(-2.0) * (1 - 1e-3))
        assert np.all(s <= s_field[f] * np.exp(2.0) * (1 + 1e-3))


@pytest.mark.parametrize("kw", VARIANTS)
def test_losses_are_finite_and_kl_nonnegative(kw):
    import tensorflow as tf

    m = tiny(beta=0.5, **kw)
    x = np.random.default_rng(0).standard_normal((2, 8, 8, 8, 1)).astype("float32")
    y = np.random.default_rng(1).standard_normal((2, 8, 8, 8, 4)).astype("float32")
    eps = np.zeros((2, 2, 2, 2, 1), "float32")
    out = {k: float(v) for k, v in m.losses_of(tf.constant(x), tf.constant(y),
                                               tf.constant(eps)).items()}
    assert all(np.isfinite(v) for v in out.values()) and out["kl"] >= 0
    assert out["loss"] == pytest.approx(out["nll"] + 0.5 * out["kl"], rel=1e-5)


@pytest.mark.parametrize("kw", VARIANTS)
def test_save_load_round_trip(tmp_path, kw):
    m = tiny(meta={"cell_size": 1.0}, **kw)
    m.save(tmp_path / "p.keras")
    assert (tmp_path / "p.json").is_file()
    back = load_baryon_painter(tmp_path / "p.json")
    assert back.get_config() == m.get_config()
    dm = lognormal_box()
    a, b = m.paint(dm, seed=3), back.paint(dm, seed=3)
    for f in FIELDS:
        np.testing.assert_array_equal(a[f], b[f])
    with pytest.raises(ModelError):
        load_baryon_painter(tmp_path / "nope.keras")
    # the sidecar must agree with the file on the target transform
    import json

    side = json.loads((tmp_path / "p.json").read_text())
    side["config"]["residual"] = not m.residual
    (tmp_path / "p.json").write_text(json.dumps(side))
    with pytest.raises(ModelError, match="residual"):
        load_baryon_painter(tmp_path / "p.keras")


def test_arguments_are_checked():
    with pytest.raises(ConfigError, match="channels"):
        BaryonPainter(channels=[4, 8])
    with pytest.raises(ConfigError, match="latent_channels"):
        BaryonPainter(latent_channels=0)
    with pytest.raises(ConfigError, match="residual"):
        BaryonPainter(residual="yes")
    with pytest.raises(ModelError, match="multiple of 4"):
        tiny().paint(np.ones((10, 10, 10)))


def test_shipped_painter_gives_smooth_gas_following_a_box_without_haloes():
    """A smooth field (|delta| <= 0.3: nothing collapsed, no haloes) gets a smooth gas field
    that follows the dark matter: correlation of ln gas with ln dm > 0.85 and less than 10 %
    of the gas contrast's variance above k_Nyq / 2 (shipped baryon_painter_64)."""
    from astrogen.models.pretrained import resolve_model_path

    m = load_baryon_painter(resolve_model_path("baryon_painter_64", "baryon_painter"))
    n = 64
    x = np.arange(n) / n * 2 * np.pi
    dm = 1 + 0.3 * np.sin(x)[:, None, None] * np.cos(x)[None, :, None] * np.ones((1, 1, n))
    out = m.paint(dm, n_samples=2, seed=0)
    for g in out["gas"]:
        assert np.corrcoef(np.log(g).ravel(), np.log(dm).ravel())[0, 1] > 0.85
        f = np.abs(np.fft.rfftn(g / g.mean() - 1)) ** 2
        k = n * np.sqrt(np.fft.fftfreq(n)[:, None, None] ** 2
                        + np.fft.fftfreq(n)[None, :, None] ** 2
                        + np.fft.rfftfreq(n)[None, None, :] ** 2)
        assert f[k > n / 4].sum() < 0.1 * f.sum()
    # mass and mean gas fraction conserved (conserve=True)
    assert abs(out["total"].mean(dtype=np.float64) / dm.mean() - 1) < 1e-5
    assert abs(out["gas"].mean(dtype=np.float64) / (m.gas_fraction * dm.mean()) - 1) < 1e-5

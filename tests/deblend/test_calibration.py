"""Temperature scaling (astrogen.deblend.calibration): tempering equals softmax(logits / T),
the fit recovers a known temperature, errors name the argument."""
import numpy as np
import pytest

from astrogen.deblend.calibration import fit_temperature, tempered
from astrogen.errors import ConfigError


def _softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def test_tempered_is_softmax_of_scaled_logits():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, (5, 7, 3))
    for t in (0.5, 1.0, 2.5):
        np.testing.assert_allclose(tempered(_softmax(logits), t), _softmax(logits / t),
                                   rtol=1e-9, atol=1e-12)
    p = tempered(_softmax(logits), 4.0)
    assert np.argmax(p, -1).tolist() == np.argmax(logits, -1).tolist()  # argmax kept


def test_fit_recovers_the_temperature_of_an_overconfident_model():
    """Labels drawn from softmax(l); the 'network' reports softmax(2 l) (over-confident by
    T = 2) in 4 identical samples: the fitted temperature is 2 within the grid step."""
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 1.5, (200, 50, 3))
    p_true = _softmax(logits)
    u = rng.uniform(size=p_true.shape[:-1] + (1,))
    labels = (u > np.cumsum(p_true, axis=-1)).sum(-1)
    samples = np.repeat(_softmax(2.0 * logits)[None], 4, axis=0)
    fit = fit_temperature(samples, labels)
    assert fit["temperature"] == pytest.approx(2.0, rel=0.1)
    assert fit["nll_best"] < fit["nll_at_1"]
    # a calibrated model keeps T close to 1
    fit1 = fit_temperature(np.repeat(p_true[None], 2, axis=0), labels)
    assert fit1["temperature"] == pytest.approx(1.0, rel=0.1)


def test_calibration_errors():
    with pytest.raises(ConfigError, match="temperature"):
        tempered(np.full((2, 3), 1 / 3), 0.0)
    with pytest.raises(ConfigError, match="samples"):
        fit_temperature(np.full((2, 4, 3), 1 / 3), np.zeros(5, int))
    with pytest.raises(ConfigError, match="labels"):
        fit_temperature(np.full((2, 4, 3), 1 / 3), np.full(4, 3))


def test_isotonic_map_is_monotone_and_recovers_the_accuracy_curve():
    from astrogen.deblend.calibration import apply_confidence_map, fit_isotonic_map

    rng = np.random.default_rng(0)
    c = rng.random(20000)
    correct = rng.random(c.size) < c ** 2  # over-confident: accuracy c^2 at confidence c
    cmap = fit_isotonic_map(c, correct, n_bins=50)
    assert np.all(np.diff(cmap["confidence"]) > 0) and np.all(np.diff(cmap["accuracy"]) >= 0)
    grid = np.array([0.2, 0.5, 0.8, np.nan])
    out = apply_confidence_map(grid, cmap)
    np.testing.assert_allclose(out[:3], grid[:3] ** 2, atol=0.04)
    assert np.isnan(out[3])
    assert apply_confidence_map(grid[:3], None).tolist() == grid[:3].tolist()


def test_tempered_exact_keeps_zeros_and_matches_tempered_elsewhere():
    from astrogen.deblend.calibration import tempered_exact

    rng = np.random.default_rng(1)
    p = rng.dirichlet(np.ones(4), size=(3, 5))
    np.testing.assert_allclose(tempered_exact(p, 3.0), tempered(p, 3.0), rtol=1e-9)
    one = np.zeros((2, 6))
    one[:, 2] = 1.0  # one object covers the pixel: certain at any T, whatever the classes
    for t in (0.3, 1.0, 30.0):
        np.testing.assert_array_equal(tempered_exact(one, t), one)

"""Tests of astrogen.deblend.metrics on hand-made cases."""
import numpy as np
import pytest

from astrogen.deblend.metrics import (
    detection_completeness,
    expected_calibration_error,
    flux_error_stats,
    iou,
    iou_per_object,
    match_positions,
    reliability_curve,
    roc_auc,
    roc_curve,
    uncertainty_error_auc,
)
from astrogen.errors import ConfigError


def two_objects():
    lab = np.zeros((20, 20), dtype=int)
    lab[2:8, 2:8] = 1
    lab[10:18, 10:18] = 2
    return lab


def test_iou_identical_and_disjoint():
    lab = two_objects()
    assert iou(lab == 1, lab == 1) == 1.0
    assert iou(lab == 1, lab == 2) == 0.0
    assert np.isnan(iou(np.zeros(4, bool), np.zeros(4, bool)))
    t = iou_per_object(lab, lab)
    assert list(t["true_id"]) == [1, 2] and list(t["pred_id"]) == [1, 2]
    np.testing.assert_array_equal(t["iou"], 1.0)
    # prediction with the objects elsewhere: no overlap -> IoU 0, unmatched
    pred = np.zeros_like(lab)
    pred[2:8, 12:18] = 5
    t = iou_per_object(lab, pred)
    np.testing.assert_array_equal(t["iou"], 0.0)
    np.testing.assert_array_equal(t["pred_id"], 0)


def test_iou_per_object_partial_and_merged():
    lab = two_objects()
    pred = lab.copy()
    pred[2:8, 5:8] = 0  # half of object 1 missed
    t = iou_per_object(lab, pred)
    assert t["iou"][0] == pytest.approx(0.5)
    merged = np.where(lab > 0, 7, 0)  # both objects in one segment
    t = iou_per_object(lab, merged)
    assert list(t["pred_id"]) == [7, 7]
    np.testing.assert_allclose(t["iou"], [36 / 100, 64 / 100])
    assert len(iou_per_object(np.zeros((3, 3), int), np.zeros((3, 3), int))) == 0
    with pytest.raises(ConfigError):
        iou_per_object(lab, lab[:5])


def test_ece_calibrated_predictors_near_zero():
    rng = np.random.default_rng(0)
    p = rng.uniform(size=200_000)
    y = rng.uniform(size=p.size) < p
    assert expected_calibration_error(p, y, n_bins=10) < 0.01
    # top-label calibration of a multi-class predictor whose labels are drawn from its probs
    probs = rng.dirichlet(np.ones(3), size=100_000)
    labels = (rng.uniform(size=(len(probs), 1)) > np.cumsum(probs, axis=1)).sum(axis=1)
    assert expected_calibration_error(probs, labels, n_bins=10) < 0.01
    # an over-confident predictor is not calibrated
    assert expected_calibration_error(np.full(1000, 0.9), np.arange(1000) % 2) == pytest.approx(
        0.4)


def test_reliability_curve_bins():
    rc = reliability_curve(np.array([0.05, 0.15, 0.95, 0.95]), np.array([0, 0, 1, 1]), n_bins=10)
    assert rc["bin_edges"].shape == (11,)
    assert rc["count"].tolist() == [1, 1, 0, 0, 0, 0, 0, 0, 0, 2]
    assert np.isnan(rc["accuracy"][2])
    assert rc["accuracy"][9] == 1.0 and rc["confidence"][9] == pytest.approx(0.95)
    with pytest.raises(ConfigError):
        reliability_curve(np.array([1.5]), np.array([1]))


def test_roc_auc_perfect_random_ties():
    rng = np.random.default_rng(1)
    labels = rng.uniform(size=20_000) < 0.3
    assert roc_auc(labels.astype(float) + rng.uniform(0, 0.5, labels.size), labels) == 1.0
    assert roc_auc(-labels.astype(float), labels) == 0.0
    assert abs(roc_auc(rng.uniform(size=labels.size), labels) - 0.5) < 0.02
    assert roc_auc(np.ones(10), np.arange(10) % 2) == 0.5  # all tied
    assert np.isnan(roc_auc(np.arange(5.0), np.zeros(5)))
    curve = roc_curve(np.array([0.9, 0.8, 0.3, 0.1]), np.array([1, 0, 1, 0]))
    np.testing.assert_allclose(curve["tpr"], [0, 0.5, 0.5, 1, 1])
    np.testing.assert_allclose(curve["fpr"], [0, 0, 0.5, 0.5, 1])
    assert np.trapezoid(curve["tpr"], curve["fpr"]) == pytest.approx(
        roc_auc([0.9, 0.8, 0.3, 0.1], [1, 0, 1, 0]))


def test_uncertainty_error_auc():
    rng = np.random.default_rng(2)
    truth = rng.integers(0, 3, size=(32, 32))
    pred = truth.copy()
    wrong = rng.uniform(size=truth.shape) < 0.1
    pred[wrong] = (pred[wrong] + 1) % 3
    perfect = wrong + 0.1 * rng.uniform(size=truth.shape)
    assert uncertainty_error_auc(perfect, pred, truth) == 1.0
    assert abs(uncertainty_error_auc(rng.uniform(size=truth.shape), pred, truth) - 0.5) < 0.1


def test_flux_error_stats():
    ft = np.array([100.0, 200.0, 400.0, 800.0])
    s = flux_error_stats(ft, ft)
    assert s["dmag_median"] == 0 and s["dmag_nmad"] == 0 and s["mape"] == 0
    s = flux_error_stats(ft, 1.1 * ft)
    assert s["dmag_median"] == pytest.approx(-2.5 * np.log10(1.1))
    assert s["mape"] == pytest.approx(10.0)
    assert s["frac_bias_median"] == pytest.approx(0.1)
    s = flux_error_stats(ft, np.array([100.0, -5.0, 400.0, 800.0]))
    assert s["n_nonpositive"] == 1 and s["outlier_fraction"] == pytest.approx(0.25)
    with pytest.raises(ConfigError):
        flux_error_stats([0.0, 1.0], [1.0, 1.0])


def test_completeness_matching():
    truth = np.array([[10.0, 10.0], [20.0, 20.0], [40.0, 5.0]])
    det = np.array([[20.5, 19.6], [10.2, 9.9], [70.0, 70.0]])
    c = detection_completeness(truth, det, max_distance=2.0)
    assert c["n_matched"] == 2
    assert c["completeness"] == pytest.approx(2 / 3) and c["purity"] == pytest.approx(2 / 3)
    assert c["match"]["pred_of_true"].tolist() == [1, 0, -1]
    # one-to-one: two detections near one truth -> one match
    m = match_positions([[0.0, 0.0]], [[0.5, 0.0], [0.1, 0.0]], 1.0)
    assert m["pred_index"].tolist() == [1]
    empty = detection_completeness(np.zeros((0, 2)), det, 2.0)
    assert np.isnan(empty["completeness"]) and empty["purity"] == 0
    binned = detection_completeness(truth, det, 2.0, values=[20, 21, 25], bins=[19, 22, 26])
    np.testing.assert_allclose(binned["completeness_binned"], [1.0, 0.0])

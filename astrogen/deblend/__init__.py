"""Deblending measurements: truth targets, flux redistribution, the SEP baseline and metrics.

* :mod:`astrogen.deblend.measure` -- truth targets for the segmenters (light fractions,
  three-class maps, ownership labels), per-object fluxes and centroids by flux redistribution
  from predicted light fractions, and the SExtractor-like baseline :func:`sep_deblend`.
* :mod:`astrogen.deblend.metrics` -- IoU per object, calibration (ECE, reliability curve),
  ROC AUC of uncertainty against pixel errors, flux error statistics and detection
  completeness.

Only numpy, scipy and astropy are imported here (``sep`` when the baseline runs); no
TensorFlow, so the metrics can be used on any segmenter's outputs.
"""
from astrogen.deblend.measure import (
    fractions_from_segmap,
    labels_from_fractions,
    light_fractions,
    measure_fractions,
    ownership_labels,
    segmentation_classes,
    sep_deblend,
)
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

__all__ = [
    "fractions_from_segmap",
    "labels_from_fractions",
    "light_fractions",
    "measure_fractions",
    "ownership_labels",
    "segmentation_classes",
    "sep_deblend",
    "detection_completeness",
    "expected_calibration_error",
    "flux_error_stats",
    "iou",
    "iou_per_object",
    "match_positions",
    "reliability_curve",
    "roc_auc",
    "roc_curve",
    "uncertainty_error_auc",
]

# ``astrogen.deblend(image, ...)`` is the public deblending function (astrogen.api.deblend):
# the package module is made callable, so the function and this package share the name.
import sys as _sys  # noqa: E402

from astrogen.api import CallableModule as _CallableModule  # noqa: E402

_sys.modules[__name__].__class__ = _CallableModule

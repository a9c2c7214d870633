"""What a scene deblender returns: :class:`SceneResult`.

Every scene deblender of the package (the networks, the SEP baseline) and every adapter to
another framework (BlendingToolKit) exchanges this one type, so that metrics, writers and
figures need not know which method made it. Only numpy and astropy are imported here.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from astropy.table import Table

__all__ = ["SceneResult"]


@dataclass(frozen=True)
class SceneResult:
    """Deblended objects of one scene (one image, 1 to C bands).

    Parameters
    ----------
    catalog : astropy.table.Table
        One row per detected object, in the order of the object ids 1..N: ``id`` (1-based, the
        value of the object in ``segmentation``), ``x``, ``y`` (pixel, 0-based, centre of the
        first pixel at 0), ``peak_x``, ``peak_y`` (pixel), ``ra``, ``dec`` (deg; NaN when the
        scene has no WCS), and per band ``b``: ``flux_b`` and ``flux_err_b`` with the image's
        unit (``astropy.units`` when known).
    segmentation : numpy.ndarray, shape (H, W), int32
        Instance map: 0 is background, ``k`` the object of catalog row ``k - 1``.
    fractions : numpy.ndarray, shape (N, H, W), float32, optional
        Per-pixel light fraction of each object (sums to at most 1 over objects).
    uncertainty : numpy.ndarray, shape (H, W), float32, optional
        Per-pixel probability that the segmentation label is wrong (probabilistic methods).
        For whole scenes (:func:`astrogen.deblend.scene.deblend_scene`): inside the
        segmentation's objects, the probability that the assigned object is not the pixel's
        true majority-light owner; NaN on background pixels.
    bands : tuple of str
        Band names, in the order of the image's band axis.
    pixel_scale : float
        Pixel scale of the image (arcsec / pixel).
    wcs : astropy.wcs.WCS, optional
        Celestial WCS of the image.
    method : str
        Name of the deblender that produced the result.
    model : dict
        Card of the model used (survey, bands, pixel scale, PSF it was trained for); empty
        for methods without a trained model.
    """

    catalog: Table
    segmentation: np.ndarray
    fractions: np.ndarray | None = None
    uncertainty: np.ndarray | None = None
    bands: tuple = ()
    pixel_scale: float = float("nan")
    wcs: Any = None
    method: str = ""
    model: dict = field(default_factory=dict)

    def __post_init__(self):
        seg = np.asarray(self.segmentation)
        if seg.ndim != 2:
            raise ValueError(f"segmentation must be (H, W); got shape {seg.shape}.")
        n = len(self.catalog)
        if seg.size and int(seg.max(initial=0)) > n:
            raise ValueError(f"segmentation holds object id {int(seg.max())} but the catalog "
                             f"has {n} rows.")
        if self.fractions is not None and np.shape(self.fractions) != (n,) + seg.shape:
            raise ValueError(f"fractions must have shape {(n,) + seg.shape}; got "
                             f"{np.shape(self.fractions)}.")
        if self.uncertainty is not None and np.shape(self.uncertainty) != seg.shape:
            raise ValueError(f"uncertainty must have shape {seg.shape}; got "
                             f"{np.shape(self.uncertainty)}.")

    @property
    def n_objects(self) -> int:
        """Number of deblended objects."""
        return len(self.catalog)

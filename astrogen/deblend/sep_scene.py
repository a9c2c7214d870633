"""The SEP (SExtractor) baseline as a scene deblender returning :class:`SceneResult`.

:func:`sep_scene` has the signature every scene deblender of the package shares,
``fn(image (C, H, W), *, pixel_scale, bands, wcs=None, noise_sigma=None) -> SceneResult``, so
adapters (:mod:`astrogen.deblend.btk`), metrics and writers can take it or a network in its
place. Detection and deblending run once, on the noise-weighted sum of the bands (one
segmentation for all bands); each object's flux in band ``b`` is the sum of that band over
the object's segment (isophotal, deblended; units of the image).

Conventions: positions are 0-based pixel centres (x = column, y = row), as in
:mod:`astrogen.deblend.measure` and :class:`~astrogen.deblend.result.SceneResult`.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from astropy import units as u
from astropy.table import Column, Table

from astrogen.deblend.measure import sep_deblend
from astrogen.deblend.result import SceneResult
from astrogen.errors import ConfigError

__all__ = ["scene_inputs", "estimate_noise_sigma", "sep_scene"]


def estimate_noise_sigma(image: Any) -> np.ndarray:
    """Per-band background noise (image units): 1.4826 x MAD of each band, shape (C,)."""
    img = np.asarray(image, dtype=np.float64)
    flat = img.reshape(img.shape[0], -1)
    med = np.median(flat, axis=1, keepdims=True)
    return 1.4826 * np.median(np.abs(flat - med), axis=1)


def scene_inputs(image: Any, pixel_scale: Any, bands: Any, noise_sigma: Any = None
                 ) -> tuple[np.ndarray, float, tuple, np.ndarray]:
    """Check the shared inputs of a scene deblender.

    Parameters
    ----------
    image : array_like, shape (C, H, W) or (H, W)
        Background-subtracted image, bands first (a 2-D image is one band).
    pixel_scale : float
        Arcsec per pixel (> 0).
    bands : sequence of str
        One name per band of ``image`` (a single string for one band).
    noise_sigma : float, array_like (C,) or (C, H, W), optional
        Background noise standard deviation per band (image units); estimated from the image
        (MAD) when not given.

    Returns
    -------
    image : ndarray (C, H, W) float64
    pixel_scale : float
    bands : tuple of str
    noise_sigma : ndarray broadcastable to (C, H, W)
    """
    img = np.asarray(image, dtype=np.float64)
    if img.ndim == 2:
        img = img[None]
    if img.ndim != 3 or min(img.shape) < 1:
        raise ConfigError("must have shape (n_bands, height, width), bands first.", key="image",
                          received={"shape": np.shape(image)})
    if not np.all(np.isfinite(img)):
        raise ConfigError("must contain only finite values.", key="image")
    try:
        ps = float(pixel_scale)
    except (TypeError, ValueError):
        ps = float("nan")
    if not (np.isfinite(ps) and ps > 0):
        raise ConfigError("must be a number > 0 (arcsec / pixel).", key="pixel_scale",
                          received={"pixel_scale": pixel_scale})
    names = (bands,) if isinstance(bands, str) else tuple(bands)
    if len(names) != img.shape[0] or not all(isinstance(b, str) for b in names):
        raise ConfigError(f"must name each of the {img.shape[0]} bands of the image (axis 0).",
                          key="bands", received={"bands": bands, "image_shape": img.shape})
    if noise_sigma is None:
        sig = estimate_noise_sigma(img)[:, None, None]
    else:
        sig = np.asarray(noise_sigma, dtype=np.float64)
        if sig.ndim == 1 and sig.shape[0] == img.shape[0]:
            sig = sig[:, None, None]
        try:
            np.broadcast_to(sig, img.shape)
        except ValueError:
            raise ConfigError("must be a number, one value per band or an array of the image "
                              "shape.", key="noise_sigma",
                              received={"shape": sig.shape, "image_shape": img.shape}) from None
    if not (np.all(np.isfinite(sig)) and np.all(sig > 0)):
        raise ConfigError("must be finite and > 0 (image units).", key="noise_sigma",
                          received={"min": float(np.min(sig)) if sig.size else None})
    return img, ps, names, sig


def _sky(wcs: Any, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if wcs is None or len(x) == 0:
        nan = np.full(len(x), np.nan)
        return nan, nan.copy()
    ra, dec = wcs.celestial.pixel_to_world_values(x, y)
    return np.asarray(ra, dtype=np.float64), np.asarray(dec, dtype=np.float64)


def sep_scene(image: Any, *, pixel_scale: float, bands: Any, wcs: Any = None,
              noise_sigma: Any = None, flux_unit: Any = None, thresh: float = 1.5,
              minarea: int = 5, deblend_nthresh: int = 32, deblend_cont: float = 0.005,
              psf: Any = None) -> SceneResult:
    """Detect and deblend every object of a scene with SEP; returns a :class:`SceneResult`.

    The detection image is ``sum_b image_b / sigma_b**2`` (optimal for a flat spectrum and
    noise-dominated pixels) with per-pixel noise ``sqrt(sum_b 1 / sigma_b**2)``; SEP runs on
    it with :func:`astrogen.deblend.measure.sep_deblend` (threshold ``thresh`` sigma, SEP's
    default 3x3 filter, multi-threshold deblending). Fluxes per band are sums of the band over
    each segment; ``flux_err_b = sigma_b sqrt(n_pix)``.

    Parameters
    ----------
    image : array_like, shape (C, H, W) or (H, W)
        Background-subtracted scene, bands first.
    pixel_scale : float
        Arcsec per pixel (recorded; SEP works in pixels).
    bands : sequence of str
        Band names, one per image band.
    wcs : astropy.wcs.WCS, optional
        Celestial WCS; gives ``ra``, ``dec`` (deg), NaN without it.
    noise_sigma : float, array_like (C,) or (C, H, W), optional
        Background noise sigma per band, image units (MAD estimate if not given).
    flux_unit : str or astropy unit, optional
        Unit of the image, recorded on the flux columns.
    thresh, minarea, deblend_nthresh, deblend_cont
        SEP parameters (see :func:`~astrogen.deblend.measure.sep_deblend`).
    psf : optional
        Ignored (SEP does not model the PSF); accepted so that readers may pass it.

    Returns
    -------
    SceneResult
        Catalog ``id, x, y`` (SEP barycentres on the detection image), ``peak_x, peak_y``
        (brightest detection pixel of the segment), ``ra, dec``, ``flux_<b>``, ``flux_err_<b>``;
        the SEP segmentation; one-hot ``fractions``.
    """
    img, ps, names, sig = scene_inputs(image, pixel_scale, bands, noise_sigma)
    sig_full = np.broadcast_to(sig, img.shape)
    ivar = 1.0 / np.square(sig_full)
    det = np.sum(img * ivar, axis=0)
    det_sigma = np.sqrt(np.sum(ivar, axis=0))
    det_sigma = float(det_sigma.flat[0]) if np.all(det_sigma == det_sigma.flat[0]) else det_sigma
    sep_cat, seg = sep_deblend(det, det_sigma, thresh=thresh, minarea=minarea,
                               deblend_nthresh=deblend_nthresh, deblend_cont=deblend_cont)
    n = len(sep_cat)
    labels = seg.ravel()
    unit = None if flux_unit is None else u.Unit(flux_unit)
    x = np.asarray(sep_cat["x"], dtype=np.float64)
    y = np.asarray(sep_cat["y"], dtype=np.float64)
    # brightest pixel of each segment on the detection image
    peak_x = np.full(n, np.nan)
    peak_y = np.full(n, np.nan)
    if n:
        order = np.lexsort((-det.ravel(), labels))  # by label, then decreasing value
        first = np.searchsorted(labels[order], np.arange(1, n + 1))
        flat = order[first]
        peak_y, peak_x = np.unravel_index(flat, det.shape)
    ra, dec = _sky(wcs, x, y)
    npix = np.bincount(labels, minlength=n + 1)[1:n + 1]
    cat = Table()
    cat["id"] = Column(np.arange(1, n + 1, dtype=np.int32),
                       description="label of the object in segmentation")
    cat["x"] = Column(x, unit=u.pix, description="barycentre column, 0-based pixel centre")
    cat["y"] = Column(y, unit=u.pix, description="barycentre row, 0-based pixel centre")
    cat["peak_x"] = Column(np.asarray(peak_x, dtype=np.float64), unit=u.pix,
                           description="column of the brightest detection pixel")
    cat["peak_y"] = Column(np.asarray(peak_y, dtype=np.float64), unit=u.pix,
                           description="row of the brightest detection pixel")
    cat["ra"] = Column(ra, unit=u.deg, description="right ascension of (x, y), NaN without WCS")
    cat["dec"] = Column(dec, unit=u.deg, description="declination of (x, y), NaN without WCS")
    for b, band in enumerate(names):
        flux = np.bincount(labels, weights=img[b].ravel(), minlength=n + 1)[1:n + 1]
        var = np.bincount(labels, weights=np.square(sig_full[b]).ravel(),
                          minlength=n + 1)[1:n + 1]
        desc = "image units" if unit is None else str(unit)
        cat[f"flux_{band}"] = Column(flux, unit=unit,
                                     description=f"sum of band {band} over the segment, {desc}")
        cat[f"flux_err_{band}"] = Column(np.sqrt(var), unit=unit,
                                         description=f"1-sigma noise of flux_{band}, {desc}")
    cat["npix"] = Column(npix.astype(np.int64), unit=u.pix**2, description="segment area")
    cat.meta.update({"method": "sep", "thresh_sigma": float(thresh), "minarea": int(minarea),
                     "deblend_nthresh": int(deblend_nthresh),
                     "deblend_cont": float(deblend_cont),
                     "detection_image": "sum_b image_b / sigma_b^2",
                     "flux_unit": "image units" if unit is None else str(unit),
                     "position_convention": "0-based pixel centres, x = column, y = row"})
    fractions = (seg[None] == np.arange(1, n + 1)[:, None, None]).astype(np.float32)
    return SceneResult(catalog=cat, segmentation=seg.astype(np.int32), fractions=fractions,
                       bands=names, pixel_scale=ps, wcs=wcs, method="sep")

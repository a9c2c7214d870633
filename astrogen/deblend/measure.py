"""Truth targets, flux redistribution and the SEP (SExtractor) deblending baseline.

Conventions
-----------
* Images are ``(height, width)`` arrays (or ``(height, width, n_bands)`` where stated); pixel
  ``(row, column) = (y, x)``, and positions are 0-based with ``(0, 0)`` the *centre* of the
  first pixel (numpy and SEP convention), in pixels.
* Fluxes are sums of pixel values, so they are in the unit of the image (``"image units"``,
  e.g. ADU or nJy per pixel summed to nJy); pass ``flux_unit`` to record that unit on the
  columns. Magnitudes, when a ``zero_point`` is given, are ``zero_point - 2.5 log10(flux)``
  (NaN for non-positive fluxes).
* Light fractions are ``(height, width, n_slots + 1)`` arrays that sum to one over the last
  axis; channel 0 is the background (light that belongs to no object) and channels 1..K the
  object slots. :func:`light_fractions` orders the slots by decreasing true flux; the
  segmenters are trained with the slots ordered by distance to the stamp centre (slot 1 =
  the object nearest the centre, :func:`astrogen.physics.blends.truth_targets`,
  :mod:`astrogen.models.unet`). The measurements here (:func:`measure_fractions`) and the
  metrics (:mod:`astrogen.deblend.evaluate`) work with either order.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from astropy import units as u
from astropy.table import Column, Table

from astrogen.errors import ConfigError
from astrogen.physics.photometry import mag_from_flux

__all__ = [
    "order_by_flux",
    "light_fractions",
    "segmentation_classes",
    "ownership_labels",
    "labels_from_fractions",
    "fractions_from_segmap",
    "measure_fractions",
    "sep_deblend",
]


# ------------------------------------------------------------------ helpers


def _as_models(model_images: Any) -> np.ndarray:
    """Per-object noiseless images as ``(n_objects, h, w)`` (bands summed if 4-D)."""
    m = np.asarray(model_images, dtype=np.float64)
    if m.ndim == 4:
        m = m.sum(axis=-1)
    if m.ndim != 3:
        raise ConfigError("must have shape (n_objects, height, width[, n_bands]).",
                          key="model_images", received={"shape": m.shape})
    return m


def _check_image(image: Any, key: str = "image", allow_bands: bool = True) -> np.ndarray:
    img = np.asarray(image, dtype=np.float64)
    if img.ndim != 2 and not (allow_bands and img.ndim == 3):
        expected = "(height, width[, n_bands])" if allow_bands else "(height, width)"
        raise ConfigError(f"must have shape {expected}.", key=key, received={"shape": img.shape})
    if not np.all(np.isfinite(img)):
        raise ConfigError("must contain only finite values.", key=key,
                          received={"n_nonfinite": int(np.size(img) - np.isfinite(img).sum())})
    return img


def _positive(value: Any, key: str, allow_zero: bool = False) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ConfigError("must be a number.", key=key, received={key: value}) from None
    if not np.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        raise ConfigError("must be >= 0." if allow_zero else "must be > 0.", key=key,
                          received={key: value})
    return v


def _flux_unit(flux_unit: Any):
    if flux_unit is None:
        return None
    try:
        return u.Unit(flux_unit)
    except (ValueError, TypeError):
        raise ConfigError("must be an astropy unit or unit string.", key="flux_unit",
                          received={"flux_unit": flux_unit}) from None


def _magnitudes(flux: np.ndarray, zero_point: float) -> np.ndarray:
    return mag_from_flux(flux, zero_point)


def _flux_desc(unit) -> str:
    return "image units (sum of pixel values)" if unit is None else str(unit)


# ------------------------------------------------------------------ truth targets


def order_by_flux(model_images: Any) -> np.ndarray:
    """Indices of the objects by decreasing total flux (stable for ties)."""
    m = _as_models(model_images)
    return np.argsort(-m.sum(axis=(1, 2)), kind="stable")


def light_fractions(model_images: Any, background_level: float, max_objects: int | None = None,
                    return_order: bool = False):
    """Per-pixel fraction of the light of each object: the target of the fractions head.

    ``fraction_i = m_i / (sum_j m_j + b)`` and ``fraction_background = b / (sum_j m_j + b)``
    where ``m_i >= 0`` are the noiseless per-object images (negative values clipped) and
    ``b = background_level``. The softening ``b`` assigns pixels where the objects are far below
    ``b`` to the background; the flux an object loses to it is about
    ``b x (its area above b) + (its flux below b)``, so ``b`` of 0.05 to 0.1 noise sigma keeps
    the loss at the percent level for S/N >~ 20 while keeping empty sky in the background class.

    Parameters
    ----------
    model_images : array_like, shape (n_objects, h, w) or (n_objects, h, w, n_bands)
        Noiseless image of each object (bands are summed: one set of fractions for all bands,
        i.e. the fractions of the detection image).
    background_level : float
        Softening ``b`` (> 0) in image units.
    max_objects : int, optional
        Number of object slots K (default: n_objects). Objects are put in slots by decreasing
        total flux; objects beyond K count as background; empty slots have fraction 0.
    return_order : bool
        Also return the object index in each slot (-1 for empty slots).

    Returns
    -------
    fractions : ndarray, shape (h, w, K + 1)
        Channel 0 background, channels 1..K slots; sums to one in every pixel.
    order : ndarray of int, shape (K,), only if ``return_order``
    """
    m = np.clip(_as_models(model_images), 0.0, None)
    b = _positive(background_level, "background_level")
    n = m.shape[0]
    if max_objects is None:
        k = n
    elif isinstance(max_objects, bool) or not isinstance(max_objects, (int, np.integer)) \
            or max_objects < 1:
        raise ConfigError("must be an integer >= 1.", key="max_objects",
                          received={"max_objects": max_objects})
    else:
        k = int(max_objects)
    order = order_by_flux(m)[:k]
    kept = m[order]
    denom = m.sum(axis=0) + b  # every object, kept or not, is in the denominator
    out = np.zeros((*m.shape[1:], k + 1))
    out[..., 1:1 + len(order)] = np.moveaxis(kept, 0, -1) / denom[..., None]
    out[..., 0] = 1.0 - out[..., 1:].sum(axis=-1)
    out[..., 0] = np.clip(out[..., 0], 0.0, 1.0)
    slots = np.full(k, -1, dtype=int)
    slots[: len(order)] = order
    return (out, slots) if return_order else out


def segmentation_classes(model_images: Any, threshold: float) -> np.ndarray:
    """Three-class truth map: 0 background, 1 one object above ``threshold``, 2 overlap (>= 2).

    ``threshold`` (> 0, image units) is the level above which an object is said to contribute
    to a pixel, e.g. one noise sigma (Boucaud+20 use the noise level of the images).
    """
    m = _as_models(model_images)
    t = _positive(threshold, "threshold")
    n_above = (m > t).sum(axis=0)
    return np.minimum(n_above, 2).astype(np.int64)


def ownership_labels(model_images: Any, threshold: float) -> np.ndarray:
    """Label map of the dominant object: ``1 + argmax_i m_i`` where ``sum_i m_i > threshold``.

    Labels follow the order of ``model_images`` (object ``i`` has label ``i + 1``); 0 is
    background. This is the truth of :func:`astrogen.deblend.metrics.iou_per_object`.
    """
    m = _as_models(model_images)
    t = _positive(threshold, "threshold")
    if m.shape[0] == 0:
        return np.zeros(m.shape[1:], dtype=np.int64)
    labels = 1 + np.argmax(m, axis=0)
    return np.where(m.sum(axis=0) > t, labels, 0).astype(np.int64)


def labels_from_fractions(fractions: Any) -> np.ndarray:
    """Label map from light fractions: the channel with the largest fraction (0 = background)."""
    f = np.asarray(fractions)
    if f.ndim < 3:
        raise ConfigError("must have shape (..., height, width, n_slots + 1).", key="fractions",
                          received={"shape": f.shape})
    return np.argmax(f, axis=-1).astype(np.int64)


def fractions_from_segmap(segmap: Any, n_slots: int | None = None) -> np.ndarray:
    """One-hot light fractions ``(h, w, n_slots + 1)`` from an integer segmentation map.

    Label ``l > 0`` goes to channel ``l``, label 0 to the background channel; labels above
    ``n_slots`` (default: the largest label) go to the background. With this, the SEP
    segmentation and a network's fractions are measured by the same :func:`measure_fractions`.
    """
    seg = np.asarray(segmap)
    if seg.ndim != 2 or not np.issubdtype(seg.dtype, np.integer):
        raise ConfigError("must be a 2-D integer array.", key="segmap",
                          received={"shape": seg.shape, "dtype": str(seg.dtype)})
    k = int(seg.max(initial=0)) if n_slots is None else int(n_slots)
    lab = np.where((seg > 0) & (seg <= k), seg, 0)
    out = np.zeros((*seg.shape, k + 1))
    np.put_along_axis(out, lab[..., None], 1.0, axis=-1)
    return out


# ------------------------------------------------------------------ flux redistribution


def measure_fractions(image: Any, fractions: Any, noise_sigma: Any = None,
                      zero_point: float | None = None, flux_unit: Any = None,
                      min_area: float = 1.0, detect_nsigma: float = 3.0) -> Table:
    """Per-object fluxes and centroids by flux redistribution of an observed image.

    ``flux_i = sum_pixels image * fraction_i`` for each object slot ``i = 1..K``. Because the
    fractions sum to one in every pixel, ``sum_i flux_i + background_flux`` equals the flux of
    the image exactly (``background_flux`` is stored in ``meta``). Centroids are the first
    moments of ``max(detection_image * fraction_i, 0)``, the detection image being the image
    (summed over bands if 3-D).

    Parameters
    ----------
    image : array_like, shape (h, w) or (h, w, n_bands)
        Background-subtracted observed image.
    fractions : array_like, shape (h, w, K + 1)
        Light fractions (channel 0 background), e.g. the ``"fractions"`` output of
        :class:`astrogen.models.unet.UNet` for one image, or :func:`fractions_from_segmap`.
    noise_sigma : float or array_like (h, w[, n_bands]), optional
        Per-pixel noise standard deviation (image units); gives ``flux_err`` =
        ``sqrt(sum fraction_i**2 sigma**2)`` (NaN if not given).
    zero_point : float, optional
        Adds a ``mag`` column (AB magnitudes if the zero point is AB).
    flux_unit : str or astropy unit, optional
        Unit of the image, recorded on the flux columns.
    min_area : float
        Smallest effective area ``sum fraction_i`` (pixels) for ``detected``.
    detect_nsigma : float
        ``detected`` also needs ``flux > detect_nsigma * flux_err`` when ``noise_sigma`` is given.

    Returns
    -------
    astropy.table.Table
        One row per slot: ``slot``, ``flux``, ``flux_err``, ``x``, ``y`` (pix), ``area`` (pix),
        ``detected`` and ``mag``; ``meta`` holds ``method``, ``total_flux``,
        ``background_flux`` and the parameters. Multi-band images give ``flux`` (and
        ``flux_err``) columns of shape ``(K, n_bands)``.
    """
    img = _check_image(image)
    f = np.asarray(fractions, dtype=np.float64)
    if f.ndim != 3 or f.shape[:2] != img.shape[:2] or f.shape[-1] < 2:
        raise ConfigError("must have shape (height, width, n_slots + 1) matching the image.",
                          key="fractions",
                          received={"fractions_shape": f.shape, "image_shape": img.shape})
    if not np.all(np.isfinite(f)) or f.min() < -1e-6:
        raise ConfigError("must be finite and >= 0.", key="fractions",
                          received={"min": float(np.nanmin(f))})
    unit = _flux_unit(flux_unit)
    min_area = _positive(min_area, "min_area", allow_zero=True)
    detect_nsigma = _positive(detect_nsigma, "detect_nsigma", allow_zero=True)
    multiband = img.ndim == 3
    img3 = img if multiband else img[..., None]
    obj = f[..., 1:]  # (h, w, K)
    k = obj.shape[-1]
    flux = np.einsum("hwb,hwk->kb", img3, obj)
    if noise_sigma is None:
        flux_err = np.full_like(flux, np.nan)
    else:
        sig = np.asarray(noise_sigma, dtype=np.float64)
        if sig.ndim == 2 and multiband:
            sig = sig[..., None]
        try:
            var = np.broadcast_to(np.square(sig), img3.shape)
        except ValueError:
            raise ConfigError("must be a number or an array matching the image.",
                              key="noise_sigma",
                              received={"shape": sig.shape, "image_shape": img.shape}) from None
        if np.any(var < 0) or not np.all(np.isfinite(var)):
            raise ConfigError("must be finite and >= 0.", key="noise_sigma")
        flux_err = np.sqrt(np.einsum("hwb,hwk->kb", var, obj**2))
    det = img3.sum(axis=-1)
    w = np.clip(det[..., None] * obj, 0.0, None)  # (h, w, K)
    wsum = w.sum(axis=(0, 1))
    yy, xx = np.indices(det.shape, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        x = np.where(wsum > 0, np.einsum("hw,hwk->k", xx, w) / wsum, np.nan)
        y = np.where(wsum > 0, np.einsum("hw,hwk->k", yy, w) / wsum, np.nan)
    area = obj.sum(axis=(0, 1))
    flux_det = flux.sum(axis=-1)
    detected = (area >= min_area) & (flux_det > 0)
    if noise_sigma is not None:
        err_det = np.sqrt(np.square(flux_err).sum(axis=-1))
        detected &= flux_det > detect_nsigma * err_det
    if not multiband:
        flux, flux_err = flux[:, 0], flux_err[:, 0]
    fd = _flux_desc(unit)
    table = Table()
    table["slot"] = Column(np.arange(1, k + 1), description="object slot (channel of fractions)")
    table["flux"] = Column(flux, unit=unit,
                           description=f"flux by redistribution, sum(image * fraction) in {fd}")
    table["flux_err"] = Column(flux_err, unit=unit,
                               description=f"1-sigma noise of flux, in {fd}")
    table["x"] = Column(x, unit=u.pix, description="centroid column, 0-based pixel centre")
    table["y"] = Column(y, unit=u.pix, description="centroid row, 0-based pixel centre")
    table["area"] = Column(area, unit=u.pix**2,
                           description="effective area, sum of fractions (pixels)")
    table["detected"] = Column(detected, description="area >= min_area and flux significant")
    if zero_point is not None:
        zp = float(zero_point)
        table["mag"] = Column(_magnitudes(flux, zp), unit=u.mag,
                              description=f"zero_point - 2.5 log10(flux), zero_point={zp}")
    total = img3.sum(axis=(0, 1))
    background = np.einsum("hwb,hw->b", img3, f[..., 0])
    table.meta.update({
        "method": "flux_redistribution",
        "total_flux": total.tolist() if multiband else float(total[0]),
        "background_flux": background.tolist() if multiband else float(background[0]),
        "flux_unit": str(unit) if unit is not None else "image units",
        "position_convention": "0-based pixel centres, x = column, y = row",
        "min_area": min_area, "detect_nsigma": detect_nsigma,
        "zero_point": None if zero_point is None else float(zero_point),
    })
    return table


# ------------------------------------------------------------------ SEP baseline


def sep_deblend(image: Any, noise_sigma: Any, thresh: float = 1.5, minarea: int = 5,
                deblend_nthresh: int = 32, deblend_cont: float = 0.005,
                filter_kernel: Any = "default", clean: bool = True, clean_param: float = 1.0,
                aperture_radius: float = 5.0, mask_neighbours: bool = False,
                subtract_background: bool = False, zero_point: float | None = None,
                flux_unit: Any = None) -> tuple[Table, np.ndarray]:
    """SExtractor-style detection and deblending with SEP, the classical baseline.

    Runs ``sep.extract`` with a threshold of ``thresh`` times ``noise_sigma``, multi-threshold
    deblending (``deblend_nthresh`` levels, minimum contrast ``deblend_cont``) and
    ``segmentation_map=True``; fluxes are the sums of the image over each object's segment
    (isophotal, deblended) and, in addition, circular-aperture sums from ``sep.sum_circle``.

    Parameters
    ----------
    image : array_like, shape (h, w)
        Observed image (background subtracted unless ``subtract_background``).
    noise_sigma : float or array_like (h, w)
        Per-pixel noise standard deviation, image units (> 0).
    thresh : float
        Detection threshold in units of ``noise_sigma``.
    minarea : int
        Minimum number of pixels of an object.
    deblend_nthresh, deblend_cont
        SEP/SExtractor deblending parameters (``deblend_cont=1`` disables deblending).
    filter_kernel : "default", None or 2-D array
        Detection filter: SEP's default 3x3 kernel, none, or the given kernel.
    clean, clean_param
        SEP cleaning of spurious detections near bright objects.
    aperture_radius : float
        Radius (pixels) of the circular aperture of ``flux_aper``.
    mask_neighbours : bool
        Exclude pixels of other segments from the aperture sums.
    subtract_background : bool
        Estimate and subtract a ``sep.Background`` first.
    zero_point : float, optional
        Adds ``mag`` and ``mag_aper`` columns.
    flux_unit : str or astropy unit, optional
        Unit of the image, recorded on the flux columns.

    Returns
    -------
    catalog : astropy.table.Table
        One row per object: ``id`` (its label in ``segmap``), ``x``, ``y`` (pix, 0-based,
        SEP barycentres), ``flux`` and ``flux_err`` (segment sums), ``flux_iso`` (SEP's own
        ``flux``), ``flux_aper``, ``flux_aper_err``, ``aper_flag``, ``npix``, ``a``, ``b``
        (pix), ``theta`` (rad), ``peak``, ``flag`` and optional magnitudes. Zero rows (same
        columns) if nothing is detected.
    segmap : numpy.ndarray of int32, shape (h, w)
        0 for background, ``id`` for the pixels of each object.
    """
    import sep

    img = _check_image(image, allow_bands=False)
    sig = np.asarray(noise_sigma, dtype=np.float64)
    if sig.ndim not in (0, 2) or (sig.ndim == 2 and sig.shape != img.shape) or np.any(
            ~np.isfinite(sig)) or np.any(sig <= 0):
        raise ConfigError("must be > 0: a number or an array of the image shape.",
                          key="noise_sigma", received={"shape": sig.shape})
    thresh = _positive(thresh, "thresh")
    if isinstance(minarea, bool) or int(minarea) != minarea or minarea < 1:
        raise ConfigError("must be an integer >= 1.", key="minarea", received={"minarea": minarea})
    if isinstance(deblend_nthresh, bool) or int(deblend_nthresh) != deblend_nthresh \
            or deblend_nthresh < 1:
        raise ConfigError("must be an integer >= 1.", key="deblend_nthresh",
                          received={"deblend_nthresh": deblend_nthresh})
    deblend_cont = float(deblend_cont)
    if not 0.0 <= deblend_cont <= 1.0:
        raise ConfigError("must be in [0, 1].", key="deblend_cont",
                          received={"deblend_cont": deblend_cont})
    aperture_radius = _positive(aperture_radius, "aperture_radius")
    unit = _flux_unit(flux_unit)

    data = np.ascontiguousarray(img, dtype=np.float64)
    if subtract_background:
        data = data - sep.Background(data).back()
    err = float(sig) if sig.ndim == 0 else np.ascontiguousarray(sig, dtype=np.float64)
    kwargs = dict(err=err, minarea=int(minarea), deblend_nthresh=int(deblend_nthresh),
                  deblend_cont=deblend_cont, clean=bool(clean), clean_param=float(clean_param),
                  segmentation_map=True)
    if not (isinstance(filter_kernel, str) and filter_kernel == "default"):
        kwargs["filter_kernel"] = None if filter_kernel is None else np.ascontiguousarray(
            filter_kernel, dtype=np.float64)
    objects, segmap = sep.extract(data, thresh, **kwargs)
    segmap = np.asarray(segmap, dtype=np.int32)
    n = len(objects)
    ids = np.arange(1, n + 1, dtype=np.int32)  # SEP labels object k (0-based) as k + 1

    var = np.broadcast_to(np.square(sig), data.shape)
    flux = np.bincount(segmap.ravel(), weights=data.ravel(), minlength=n + 1)[1:n + 1]
    flux_err = np.sqrt(np.bincount(segmap.ravel(), weights=var.ravel(), minlength=n + 1)
                       [1:n + 1])
    if n:
        ap_kwargs = dict(err=err)
        if mask_neighbours:
            ap_kwargs.update(segmap=segmap, seg_id=ids)
        flux_aper, flux_aper_err, aper_flag = sep.sum_circle(
            data, objects["x"], objects["y"], aperture_radius, **ap_kwargs)
    else:
        flux_aper = flux_aper_err = np.zeros(0)
        aper_flag = np.zeros(0, dtype=np.int16)

    fd = _flux_desc(unit)
    t = Table()
    t["id"] = Column(ids, description="label of the object in the segmentation map")
    t["x"] = Column(np.asarray(objects["x"], float), unit=u.pix,
                    description="barycentre column, 0-based pixel centre")
    t["y"] = Column(np.asarray(objects["y"], float), unit=u.pix,
                    description="barycentre row, 0-based pixel centre")
    t["flux"] = Column(flux, unit=unit, description=f"sum of the image over the segment, {fd}")
    t["flux_err"] = Column(flux_err, unit=unit, description=f"1-sigma noise of flux, {fd}")
    t["flux_iso"] = Column(np.asarray(objects["flux"], float), unit=unit,
                           description=f"SEP isophotal flux (filtered footprint), {fd}")
    t["flux_aper"] = Column(np.asarray(flux_aper, float), unit=unit,
                            description=f"circular aperture sum, r={aperture_radius} pix, {fd}")
    t["flux_aper_err"] = Column(np.asarray(flux_aper_err, float), unit=unit,
                                description=f"1-sigma noise of flux_aper, {fd}")
    t["aper_flag"] = Column(np.asarray(aper_flag, dtype=np.int16),
                            description="sep.sum_circle flags")
    t["npix"] = Column(np.asarray(objects["npix"], dtype=np.int64),
                       description="pixels above threshold (SEP)")
    t["a"] = Column(np.asarray(objects["a"], float), unit=u.pix,
                    description="semi-major axis (second moments)")
    t["b"] = Column(np.asarray(objects["b"], float), unit=u.pix,
                    description="semi-minor axis (second moments)")
    t["theta"] = Column(np.asarray(objects["theta"], float), unit=u.rad,
                        description="position angle from +x towards +y")
    t["peak"] = Column(np.asarray(objects["peak"], float), unit=unit,
                       description=f"peak pixel value, {fd}")
    t["flag"] = Column(np.asarray(objects["flag"], dtype=np.int16),
                       description="SEP extraction flags")
    if zero_point is not None:
        zp = float(zero_point)
        t["mag"] = Column(_magnitudes(flux, zp), unit=u.mag,
                          description=f"zero_point - 2.5 log10(flux), zero_point={zp}")
        t["mag_aper"] = Column(_magnitudes(np.asarray(flux_aper, float), zp), unit=u.mag,
                               description=f"zero_point - 2.5 log10(flux_aper), zero_point={zp}")
    t.meta.update({
        "method": "sep", "sep_version": sep.__version__, "thresh_sigma": thresh,
        "minarea": int(minarea), "deblend_nthresh": int(deblend_nthresh),
        "deblend_cont": deblend_cont, "clean": bool(clean), "clean_param": float(clean_param),
        "aperture_radius_pix": aperture_radius, "mask_neighbours": bool(mask_neighbours),
        "subtract_background": bool(subtract_background),
        "flux_unit": str(unit) if unit is not None else "image units",
        "position_convention": "0-based pixel centres, x = column, y = row",
        "zero_point": None if zero_point is None else float(zero_point),
    })
    return t, segmap

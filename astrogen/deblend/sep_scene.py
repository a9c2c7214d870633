"""The SEP (SExtractor) baseline as a scene deblender returning :class:`SceneResult`.

:func:`sep_scene` has the signature every scene deblender of the package shares,
``fn(image (C, H, W), *, pixel_scale, bands, wcs=None, noise_sigma=None) -> SceneResult``, so
adapters (:mod:`astrogen.deblend.btk`), metrics and writers can take it or a network in its
place. It is a front end of the one SEP path of :mod:`astrogen.deblend.scene` (detection
and deblending once, on the noise-weighted sum of the bands, one segmentation for all
bands; each object's flux in band ``b`` the sum of that band over its segment).

Conventions: positions are 0-based pixel centres (x = column, y = row), as in
:mod:`astrogen.deblend.measure` and :class:`~astrogen.deblend.result.SceneResult`.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from astropy import units as u

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


def _psf_fwhm_pix(psf: Any, pixel_scale: float) -> float:
    """FWHM (pixels) of the detection filter: ``psf`` in any form
    :func:`astrogen.deblend.survey.psf_fwhm_arcsec` reads, or None
    (:data:`astrogen.deblend.survey.SEP_DEFAULT_FWHM_PIX`)."""
    from astrogen.deblend.survey import SEP_DEFAULT_FWHM_PIX, psf_fwhm_arcsec

    if psf is None:
        return SEP_DEFAULT_FWHM_PIX
    fwhm = psf_fwhm_arcsec(psf, pixel_scale) / pixel_scale
    if not (np.isfinite(fwhm) and fwhm > 0):
        raise ConfigError("must be a FWHM in arcsec or PSF images with positive flux.",
                          key="psf", received={"psf": str(psf)[:80]})
    return fwhm


def sep_scene(image: Any, *, pixel_scale: float, bands: Any, wcs: Any = None,
              noise_sigma: Any = None, flux_unit: Any = None, thresh: float = 1.5,
              minarea: int = 5, deblend_nthresh: int = 32, deblend_cont: float = 0.005,
              psf: Any = None) -> SceneResult:
    """Detect and deblend every object of a scene with SEP; returns a :class:`SceneResult`.

    The same code as ``deblend_scene(method="sep")`` (:mod:`astrogen.deblend.scene`: one
    SEP path): the detection image is the noise-weighted sum of the bands with unit noise
    (:func:`~astrogen.deblend.scene.detection_image`), filtered by a Gaussian of the PSF
    FWHM (:func:`~astrogen.deblend.scene.detect`), SEP multi-threshold deblending; fluxes
    per band are sums of the band over each segment
    (:func:`~astrogen.deblend.scene.sep_catalog`), ``flux_err_b = sqrt(sum sigma_b**2)``
    over the segment.

    Parameters
    ----------
    image : array_like, shape (C, H, W) or (H, W)
        Background-subtracted scene, bands first.
    pixel_scale : float
        Arcsec per pixel (converts a FWHM ``psf`` to pixels).
    bands : sequence of str
        Band names, one per image band.
    wcs : astropy.wcs.WCS, optional
        Celestial WCS; gives ``ra``, ``dec`` (deg), NaN without it.
    noise_sigma : float, array_like (C,) or (C, H, W), optional
        Background noise sigma per band, image units (MAD estimate if not given).
    flux_unit : str or astropy unit, optional
        Unit of the image, recorded on the flux columns.
    thresh, minarea, deblend_nthresh, deblend_cont
        SEP parameters (threshold in sigma of the filtered detection image; default
        SExtractor's, :data:`astrogen.deblend.segment.SEP_DEFAULTS`).
    psf : float or array_like, optional
        PSF FWHM in arcsec, or PSF images ``(C, h, w)`` (FWHM from their second moments),
        for the detection filter; default 3 pixels.

    Returns
    -------
    SceneResult
        Catalog ``id, x, y`` (SEP barycentres on the detection image), ``peak_x, peak_y``
        (brightest filtered detection pixel), ``ra, dec``, ``flux_<b>``, ``flux_err_<b>``,
        ``npix``; the SEP segmentation; one-hot ``fractions``.
    """
    from astrogen.deblend.scene import detect, detection_image, sep_catalog

    img, ps, names, sig = scene_inputs(image, pixel_scale, bands, noise_sigma)
    fwhm_pix = _psf_fwhm_pix(psf, ps)
    det = detection_image(img, sig)
    objects, seg = detect(det, fwhm_pix, thresh=thresh, minarea=minarea,
                          deblend_nthresh=deblend_nthresh, deblend_cont=deblend_cont)
    cat, totals = sep_catalog(img, sig, objects, seg, list(names), flux_unit, wcs)
    unit = None if flux_unit is None else u.Unit(flux_unit)
    cat.meta.update(totals)
    cat.meta.update({"method": "sep", "thresh_sigma": float(thresh), "minarea": int(minarea),
                     "deblend_nthresh": int(deblend_nthresh),
                     "deblend_cont": float(deblend_cont), "filter_fwhm_pix": fwhm_pix,
                     "detection_image": "sum_b image_b / sigma_b^2 / sqrt(sum_b sigma_b^-2)",
                     "flux_unit": "image units" if unit is None else str(unit),
                     "position_convention": "0-based pixel centres, x = column, y = row"})
    n = len(cat)
    fractions = (seg[None] == np.arange(1, n + 1)[:, None, None]).astype(np.float32)
    return SceneResult(catalog=cat, segmentation=seg.astype(np.int32), fractions=fractions,
                       bands=names, pixel_scale=ps, wcs=wcs, method="sep")

"""BlendingToolKit (BTK) interoperability: our scene deblenders as BTK ``Deblender`` s, BTK
blend batches read as our scene inputs, and BTK's metrics next to ours on the same inputs.

BTK (``pip install 'astrogen[btk]'``, ``blending-toolkit`` 1.0.x, LSST DESC) is imported
lazily: this module imports without it, and every function that needs
it raises an ``ImportError`` naming the extra.

A *scene deblender* is any callable
``fn(image (C, H, W), *, pixel_scale, bands, wcs=None, noise_sigma=None) -> SceneResult``
(e.g. :func:`astrogen.deblend.sep_scene.sep_scene`); a ``psf`` keyword (``(C, h, w)`` array,
unit sum) is passed too when ``fn`` accepts one.

BTK's conventions, as read from ``btk.blend_batch``, ``btk.draw_blends`` and ``btk.match``:

* ``BlendBatch.blend_images`` is ``(batch, C, H, W)`` in electrons per pixel, background
  subtracted (BTK adds zero-mean Poisson noise of variance ``mean_sky_level``), so the
  background noise sigma of band ``b`` is ``sqrt(mean_sky_level(survey, b))`` electrons;
  ``isolated_images`` is ``(batch, max_n_sources, C, H, W)``, the noiseless image of each
  object; truth catalogs hold ``x_peak``, ``y_peak`` (the profile centre, 0-based pixels, same
  convention as ours) and ``ra``, ``dec`` in **arcsec** offsets from the stamp centre.
* BTK's WCS (``btk.survey.make_wcs``) puts ``(ra, dec) = (0, 0)`` at the stamp centre; its
  deblenders report ``ra, dec`` as ``wcs.pixel_to_world_values(x, y) * 3600`` (arcsec), and
  the matchers use ``x_peak``, ``y_peak`` (pixels) or ``ra``, ``dec`` (arcsec).
* ``DeblendExample.segmentation`` is ``(max_n_sources, H, W)`` bool, one mask per object;
  ``deblended_images`` is ``(max_n_sources, C, H, W)``; rows beyond the detections are zero.
"""
from __future__ import annotations

import inspect
from typing import Any, Callable

import numpy as np
from astropy import units as u
from astropy.table import Column, Table

from astrogen.deblend.metrics import detection_completeness, flux_error_stats, iou
from astrogen.deblend.result import SceneResult
from astrogen.errors import ConfigError

__all__ = [
    "network_scene",
    "import_btk",
    "catsim_catalog",
    "survey_bands",
    "read_blend",
    "truth_table",
    "deblend_blend_batch",
    "to_deblend_example",
    "as_btk_deblender",
    "btk_metrics",
    "our_metrics",
    "truth_segmentation",
]

_INSTALL = ("BlendingToolKit is not installed: pip install 'astrogen[btk]' (blending-toolkit "
            ">= 1.0.9; see the docs: User guide, Deblending, 'BlendingToolKit').")


def import_btk():
    """Import and return the ``btk`` package, or raise an ``ImportError`` naming the extra."""
    try:
        import btk  # noqa: F401
        import btk.blend_batch  # noqa: F401
        import btk.catalog  # noqa: F401
        import btk.deblend  # noqa: F401
        import btk.match  # noqa: F401
        import btk.measure  # noqa: F401
        import btk.metrics  # noqa: F401
    except ImportError as err:
        raise ImportError(f"{_INSTALL} ({err})") from err
    return btk


# ------------------------------------------------------------------ reading BTK batches


def catsim_catalog(catalog: Any):
    """A BTK ``CatsimCatalog`` from a CatSim table or file (FITS / ASCII).

    BTK draws a two-component galaxy only when ``pa_bulge == pa_disk``
    (``btk.draw_blends.get_catsim_galaxy`` asserts it); rows with both components get
    ``pa_bulge = pa_disk`` (the disk's angle, which dominates the light of most CatSim
    galaxies). Files like ``examples/catsim/catsim_example.fits``, whose bulges are turned by
    up to 20 deg, are therefore drawn by BTK with aligned components.
    """
    btk = import_btk()
    table = Table.read(catalog) if not isinstance(catalog, Table) else catalog.copy()
    missing = [c for c in ("ra", "dec", "pa_bulge", "pa_disk", "fluxnorm_bulge",
                           "fluxnorm_disk") if c not in table.colnames]
    if missing:
        raise ConfigError(f"is not a CatSim catalog: missing columns {missing}.", key="catalog")
    both = (np.asarray(table["fluxnorm_bulge"]) > 0) & (np.asarray(table["fluxnorm_disk"]) > 0)
    table["pa_bulge"] = np.where(both, table["pa_disk"], table["pa_bulge"])
    return btk.catalog.CatsimCatalog(table)



def survey_bands(survey: Any) -> tuple[str, ...]:
    """Our band names for a BTK survey's filters: ``"<survey>_<filter>"`` lower case.

    ``btk.survey.get_surveys("LSST")`` gives ``("lsst_u", ..., "lsst_y")``, the names of
    :data:`astrogen.catalog.bands.BAND_FILTERS`.
    """
    return tuple(f"{survey.name.lower()}_{f.lower()}" for f in survey.available_filters)


def _sky_sigma(survey: Any) -> np.ndarray:
    """Background noise sigma per band of a BTK survey, electrons per pixel, shape (C,)."""
    from surveycodex.utilities import mean_sky_level

    return np.array([np.sqrt(mean_sky_level(survey, survey.get_filter(f)).to_value("electron"))
                     for f in survey.available_filters])


def _check_index(blend_batch: Any, index: Any) -> int:
    n = int(blend_batch.batch_size)
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)) \
            or not 0 <= index < n:
        raise ConfigError(f"must be an integer in [0, {n - 1}].", key="index",
                          received={"index": index})
    return int(index)


def read_blend(blend_batch: Any, index: int) -> dict[str, Any]:
    """Scene inputs of blend ``index`` of a BTK ``BlendBatch``.

    Returns
    -------
    dict
        ``image`` (C, H, W) float64, electrons per pixel, background subtracted;
        ``pixel_scale`` (arcsec / pixel); ``bands`` (our names, :func:`survey_bands`);
        ``wcs`` (BTK's stamp WCS, ``(0, 0)`` deg at the stamp centre); ``noise_sigma``
        (C,) background sigma in electrons; ``psf`` (C, H, W), BTK's PSF drawn at the pixel
        scale (unit sum); ``flux_unit`` ``"electron"``.
    """
    i = _check_index(blend_batch, index)
    survey = blend_batch.survey
    cache = blend_batch.__dict__.setdefault("_astrogen_cache", {})
    if "psf" not in cache:
        cache["psf"] = np.asarray(blend_batch.get_numpy_psf(), dtype=np.float64)
        cache["noise_sigma"] = _sky_sigma(survey)
    return {
        "image": np.asarray(blend_batch.blend_images[i], dtype=np.float64),
        "pixel_scale": float(survey.pixel_scale.to_value("arcsec")),
        "bands": survey_bands(survey),
        "wcs": blend_batch.wcs,
        "noise_sigma": cache["noise_sigma"],
        "psf": cache["psf"],
        "flux_unit": "electron",
    }


def truth_table(blend_batch: Any, index: int) -> Table:
    """Truth of blend ``index``: positions, per-band fluxes and blendedness of each object.

    Columns: ``x``, ``y`` (BTK's ``x_peak``, ``y_peak``: profile centre, 0-based pixels),
    ``ra``, ``dec`` (deg, BTK's arcsec offsets / 3600), ``flux_<b>`` (sum of BTK's noiseless
    isolated image in band ``b``, electrons; the flux inside the stamp) and ``blendedness``
    (BTK's ``btk.measure.get_blendedness`` on the band-summed isolated images,
    ``1 - sum(m_i^2) / sum(m_i M)``).
    """
    btk = import_btk()
    i = _check_index(blend_batch, index)
    cat = blend_batch.catalog_list[i]
    n = len(cat)
    iso = np.asarray(blend_batch.isolated_images[i, :n], dtype=np.float64)  # (n, C, H, W)
    bands = survey_bands(blend_batch.survey)
    out = Table()
    out["x"] = Column(np.asarray(cat["x_peak"], float), unit=u.pix,
                      description="profile centre column, 0-based pixel centre (BTK x_peak)")
    out["y"] = Column(np.asarray(cat["y_peak"], float), unit=u.pix,
                      description="profile centre row, 0-based pixel centre (BTK y_peak)")
    out["ra"] = Column(np.asarray(cat["ra"], float) / 3600.0, unit=u.deg,
                       description="BTK ra offset from the stamp centre")
    out["dec"] = Column(np.asarray(cat["dec"], float) / 3600.0, unit=u.deg,
                        description="BTK dec offset from the stamp centre")
    for b, band in enumerate(bands):
        out[f"flux_{band}"] = Column(iso[:, b].sum(axis=(-1, -2)), unit=u.electron,
                                     description=f"noiseless isolated flux in the stamp, {band}")
    summed = iso.sum(axis=1)
    out["blendedness"] = Column(
        btk.measure.get_blendedness(summed) if n else np.zeros(0),
        description="1 - sum(m_i^2)/sum(m_i M) (btk.measure.get_blendedness, bands summed)")
    return out


def _accepts(fn: Callable, name: str) -> bool:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == name or p.kind is p.VAR_KEYWORD for p in params)


def _call(fn: Callable, inputs: dict, fn_kwargs: dict) -> SceneResult:
    kwargs = dict(pixel_scale=inputs["pixel_scale"], bands=inputs["bands"], wcs=inputs["wcs"],
                  noise_sigma=inputs["noise_sigma"])
    for opt in ("psf", "flux_unit"):
        if _accepts(fn, opt):
            kwargs[opt] = inputs[opt]
    kwargs.update(fn_kwargs)
    res = fn(inputs["image"], **kwargs)
    if not isinstance(res, SceneResult):
        raise TypeError(f"the deblending callable must return a SceneResult; got "
                        f"{type(res).__name__}.")
    return res


def deblend_blend_batch(blend_batch: Any, fn: Callable[..., SceneResult],
                        **fn_kwargs: Any) -> list[SceneResult]:
    """Run a scene deblender on every blend of a BTK ``BlendBatch`` (inputs of
    :func:`read_blend`; ``fn_kwargs`` are passed on and override them)."""
    if not callable(fn):
        raise ConfigError("must be a callable returning a SceneResult.", key="fn",
                          received={"fn": fn})
    return [_call(fn, read_blend(blend_batch, i), fn_kwargs)
            for i in range(int(blend_batch.batch_size))]


def network_scene(image: Any, *, pixel_scale: float, bands, wcs: Any = None,
                  noise_sigma: Any = None, method: str = "unet", n_samples: int = 8,
                  seed: int = 0) -> SceneResult:
    """The shipped scene network (:func:`astrogen.api.deblend`) on a scene with more bands
    than the model's (a BTK LSST batch has u..y; the model g r i z).

    The network runs on the model's bands; every other band of ``image`` is measured with the
    same light fractions (flux redistribution), so the catalog has ``flux_<band>`` and
    ``flux_err_<band>`` for every band of ``bands``.

    Parameters
    ----------
    image : array_like, shape (C, H, W)
        Background-subtracted scene, image units (electrons for BTK).
    pixel_scale : float
        arcsec / pixel (must be the model's).
    bands : sequence of str
        Band names of the image's band axis (``lsst_g`` or ``g`` ...).
    wcs, noise_sigma
        As in :func:`astrogen.api.deblend` (``noise_sigma`` per band of ``bands``).
    method : {"unet", "prob_unet"}
        Network point estimate or its MC-dropout samples with calibrated uncertainty.
    n_samples, seed : int
        MC-dropout samples of ``prob_unet`` and their seed.

    Returns
    -------
    SceneResult
        With ``bands`` all of the image's bands.
    """
    from dataclasses import replace

    from astrogen.deblend.survey import deblend_survey_scene, load_scene_model

    img = np.asarray(image, dtype=np.float64)
    names = [str(b) for b in bands]
    if img.ndim != 3 or img.shape[0] != len(names):
        raise ConfigError("must be (C, H, W) with one entry of bands per band.", key="image",
                          received={"shape": img.shape, "bands": names})
    card = load_scene_model("shipped", "lsst").card
    short = [b.split("_")[-1] for b in names]
    keep = [short.index(mb.split("_")[-1]) for mb in card["bands"]
            if mb.split("_")[-1] in short]
    sig = (np.broadcast_to(np.asarray(noise_sigma, float).reshape(-1), (len(names),))
           if noise_sigma is not None else None)
    res = deblend_survey_scene(img[keep], pixel_scale=pixel_scale,
                               bands=[names[i] for i in keep], method=method, wcs=wcs,
                               noise_sigma=None if sig is None else sig[keep],
                               n_samples=n_samples, seed=seed)
    cat = res.catalog
    f = (np.asarray(res.fractions, np.float64) if res.fractions is not None
         else np.zeros((0,) + img.shape[1:]))
    for i, b in enumerate(names):
        if i in keep:
            continue
        cat[f"flux_{b}"] = np.einsum("hw,nhw->n", img[i], f)
        s = np.nan if sig is None else float(sig[i])
        cat[f"flux_err_{b}"] = s * np.sqrt(np.einsum("nhw->n", f ** 2))
    return replace(res, bands=tuple(names))


# ------------------------------------------------------------------ SceneResult -> BTK


def to_deblend_example(result: SceneResult, image: Any, max_n_sources: int,
                       clip: bool = True):
    """A BTK ``DeblendExample`` from a :class:`SceneResult` and the scene it deblended.

    Parameters
    ----------
    result : SceneResult
        Output of a scene deblender.
    image : array_like, shape (C, H, W)
        The scene (gives the deblended images ``image * fraction_k``).
    max_n_sources : int
        BTK's ``max_n_sources``; a result with more objects raises ``ValueError``, as BTK's
        own deblenders do.
    clip : bool
        Clip the deblended images at 0 (BTK's PSNR and SSIM metrics require non-negative
        images; BTK's ``SepSingleBand`` clips too). The catalog fluxes are never clipped.

    Returns
    -------
    btk.blend_batch.DeblendExample
        ``catalog`` with ``ra``, ``dec`` (arcsec, BTK's convention: world coordinates of the
        result's WCS x 3600), ``x_peak``, ``y_peak`` (our ``x``, ``y``: centroids, which is
        what BTK's truth ``x_peak`` is), ``id`` and the ``flux_<b>`` columns; ``segmentation``
        ``(max_n_sources, H, W)`` bool; ``deblended_images`` ``(max_n_sources, C, H, W)``;
        ``extra_data`` ``{"scene_result": result}``.
    """
    btk = import_btk()
    img = np.asarray(image, dtype=np.float64)
    if img.ndim == 2:
        img = img[None]
    c, h, w = img.shape
    if result.segmentation.shape != (h, w):
        raise ConfigError("the result's segmentation must match the image.", key="image",
                          received={"image": img.shape, "segmentation":
                                    result.segmentation.shape})
    n = result.n_objects
    if n > max_n_sources:
        raise ValueError(f"the deblender found {n} objects, more than max_n_sources="
                         f"{max_n_sources}; raise max_n_sources.")
    cat = result.catalog
    x = np.asarray(cat["x"], dtype=np.float64)
    y = np.asarray(cat["y"], dtype=np.float64)
    if result.wcs is not None and n:
        ra, dec = result.wcs.celestial.pixel_to_world_values(x, y)
        ra, dec = np.asarray(ra) * 3600.0, np.asarray(dec) * 3600.0
    elif n and "ra" in cat.colnames:
        ra = np.asarray(cat["ra"], float) * 3600.0
        dec = np.asarray(cat["dec"], float) * 3600.0
    else:
        ra = dec = np.zeros(n)
    out = Table()
    out["id"] = np.asarray(cat["id"]) if "id" in cat.colnames else np.arange(1, n + 1)
    out["ra"] = Column(ra, unit=u.arcsec)
    out["dec"] = Column(dec, unit=u.arcsec)
    out["x_peak"] = Column(x, unit=u.pix)
    out["y_peak"] = Column(y, unit=u.pix)
    for name in cat.colnames:
        if name.startswith("flux_"):
            out[name] = cat[name]
    seg = np.zeros((max_n_sources, h, w), dtype=bool)
    labels = np.asarray(result.segmentation)
    for k in range(n):
        seg[k] = labels == k + 1
    if result.fractions is not None:
        frac = np.asarray(result.fractions, dtype=np.float64)
    else:
        frac = seg[:n].astype(np.float64)
    deb = np.zeros((max_n_sources, c, h, w), dtype=np.float64)
    deb[:n] = frac[:, None] * img[None]
    if clip:
        np.clip(deb, 0.0, None, out=deb)
    return btk.blend_batch.DeblendExample(max_n_sources, out, c, h, seg, deb,
                                          {"scene_result": result})


def __getattr__(name: str):
    """``SceneDeblender`` is built on first access (it subclasses BTK's ``Deblender``)."""
    if name == "SceneDeblender":
        return _scene_deblender_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


_CLASSES: dict[str, type] = {}


def _scene_deblender_class() -> type:
    if "SceneDeblender" in _CLASSES:
        return _CLASSES["SceneDeblender"]
    btk = import_btk()

    class SceneDeblender(btk.deblend.Deblender):
        """A BTK ``Deblender`` running one of our scene deblenders on each blend.

        Parameters
        ----------
        fn : callable
            Scene deblender ``fn(image, *, pixel_scale, bands, wcs, noise_sigma) ->
            SceneResult``; a module-level function if BTK's ``njobs > 1`` is used (pickled).
        max_n_sources : int
            BTK's maximum number of objects per blend.
        clip : bool
            Clip deblended images at 0 (see :func:`to_deblend_example`).
        **fn_kwargs
            Passed to ``fn`` on every call.
        """

        def __init__(self, fn: Callable[..., SceneResult], max_n_sources: int,
                     clip: bool = True, **fn_kwargs: Any) -> None:
            if not callable(fn):
                raise ConfigError("must be a callable returning a SceneResult.", key="fn",
                                  received={"fn": fn})
            if isinstance(max_n_sources, bool) or not isinstance(max_n_sources,
                                                                 (int, np.integer)) \
                    or max_n_sources < 1:
                raise ConfigError("must be an integer >= 1.", key="max_n_sources",
                                  received={"max_n_sources": max_n_sources})
            super().__init__(int(max_n_sources))
            self.fn = fn
            self.clip = bool(clip)
            self.fn_kwargs = dict(fn_kwargs)

        def deblend(self, ii: int, blend_batch: Any):
            """Deblend blend ``ii`` of ``blend_batch``; returns a BTK ``DeblendExample``."""
            inputs = read_blend(blend_batch, ii)
            result = _call(self.fn, inputs, self.fn_kwargs)
            return to_deblend_example(result, inputs["image"], self.max_n_sources, self.clip)

    SceneDeblender.__module__ = __name__
    SceneDeblender.__qualname__ = "SceneDeblender"
    _CLASSES["SceneDeblender"] = SceneDeblender
    return SceneDeblender


def as_btk_deblender(fn: Callable[..., SceneResult], max_n_sources: int, clip: bool = True,
                     **fn_kwargs: Any):
    """Wrap a scene deblender as a BTK ``Deblender`` (an instance of ``SceneDeblender``).

    ``deblender(blend_batch)`` then returns BTK's ``DeblendBatch`` (catalogs, segmentation,
    deblended images), usable with ``btk.match`` and ``btk.metrics``.
    """
    return _scene_deblender_class()(fn, max_n_sources, clip=clip, **fn_kwargs)


# ------------------------------------------------------------------ metrics, BTK's and ours


def truth_segmentation(blend_batch: Any, band: int | None = None,
                       nsigma: float = 3.0) -> np.ndarray:
    """BTK's truth segmentation ``(batch, max_n_sources, H, W)`` bool.

    ``btk.metrics.utils.get_segmentation``: pixels where an object's noiseless isolated image
    exceeds ``nsigma * sqrt(sky_level)`` in one band (BTK takes one band: ``band``, an index
    into the survey's filters; default ``i``, else the first), empty masks for empty slots.
    """
    btk = import_btk()
    from surveycodex.utilities import mean_sky_level

    survey = blend_batch.survey
    filters = list(survey.available_filters)
    if band is None:
        band = filters.index("i") if "i" in filters else 0
    sky = mean_sky_level(survey, survey.get_filter(filters[band])).to_value("electron")
    seg = btk.metrics.utils.get_segmentation(blend_batch.isolated_images[:, :, band], sky,
                                              sigma_noise=nsigma)
    return np.nan_to_num(seg, nan=0.0).astype(bool)


def btk_metrics(blend_batch: Any, deblend_batch: Any, max_sep: float = 5.0,
                band: int | None = None) -> dict[str, Any]:
    """BTK's own metrics of a ``DeblendBatch`` against its ``BlendBatch``.

    Matching: ``btk.match.PixelHungarianMatcher(pixel_max_sep=max_sep)`` on ``x_peak``,
    ``y_peak``. Detection: ``btk.metrics.detection.Recall`` (completeness) and ``Precision``
    (purity). Segmentation: ``btk.metrics.segmentation.IoU`` of matched pairs (truth from
    :func:`truth_segmentation`). Reconstruction: ``MSE`` (BTK's is the root mean square
    error per object, electrons), ``PSNR`` and ``StructSim`` in band ``band`` of matched
    deblended vs isolated images.

    Returns
    -------
    dict
        ``matching`` (BTK's ``Matching``), ``n_true``, ``n_pred``, ``n_matched`` (per blend),
        ``recall``, ``precision``, ``iou`` (mean) and ``iou_values`` (batch, max_n_sources),
        ``rmse``, ``psnr``, ``ssim`` (means) and ``*_values`` per matched object,
        ``true_index``, ``pred_index`` (matched indices per blend).
    """
    btk = import_btk()
    bs = int(blend_batch.batch_size)
    filters = list(blend_batch.survey.available_filters)
    if band is None:
        band = filters.index("i") if "i" in filters else 0
    matcher = btk.match.PixelHungarianMatcher(pixel_max_sep=float(max_sep))
    matching = matcher(blend_batch.catalog_list, deblend_batch.catalog_list)
    out: dict[str, Any] = {"matching": matching, "n_true": np.asarray(matching.n_true),
                           "n_pred": np.asarray(matching.n_pred),
                           "n_matched": np.asarray(matching.tp),
                           "true_index": matching.true_matches,
                           "pred_index": matching.pred_matches}
    rec = btk.metrics.detection.Recall(bs)
    prec = btk.metrics.detection.Precision(bs)
    out["recall"] = float(rec(matching.tp, matching.t, matching.p))
    out["precision"] = float(prec(matching.tp, matching.t, matching.p))
    if deblend_batch.segmentation is not None:
        tseg = truth_segmentation(blend_batch, band)
        iou_metric = btk.metrics.segmentation.IoU(bs)
        t_m = matching.match_true_arrays(tseg).astype(bool)
        p_m = matching.match_pred_arrays(deblend_batch.segmentation).astype(bool)
        out["iou"] = float(iou_metric(t_m, p_m))
        out["iou_values"] = iou_metric.all_data[-1]["iou"]
    if deblend_batch.deblended_images is not None:
        iso_m = matching.match_true_arrays(blend_batch.isolated_images[:, :, band])
        deb = deblend_batch.deblended_images
        # BTK's single-band deblenders return one band (the one they ran on)
        deb_m = matching.match_pred_arrays(deb[:, :, band if deb.shape[2] > band else 0])
        for key, cls in (("rmse", btk.metrics.reconstruction.MSE),
                         ("psnr", btk.metrics.reconstruction.PSNR),
                         ("ssim", btk.metrics.reconstruction.StructSim)):
            metric = cls(bs)
            out[key] = float(metric(iso_m, deb_m))
            out[f"{key}_values"] = next(iter(metric.all_data[-1].values()))
    return out


def our_metrics(blend_batch: Any, results: list[SceneResult], max_sep: float = 5.0,
                band: int | None = None) -> dict[str, Any]:
    """Our metrics (:mod:`astrogen.deblend.metrics`) of scene results on a BTK batch.

    Matching and detection: :func:`~astrogen.deblend.metrics.detection_completeness` per
    blend (optimal one-to-one assignment within ``max_sep`` pixels), summed over the batch;
    segmentation: :func:`~astrogen.deblend.metrics.iou` of each matched pair with BTK's
    truth mask (:func:`truth_segmentation`); fluxes:
    :func:`~astrogen.deblend.metrics.flux_error_stats` per band of matched objects against
    BTK's isolated-image fluxes (:func:`truth_table`).

    Returns
    -------
    dict
        ``n_true``, ``n_pred``, ``n_matched`` (per blend), ``completeness``, ``purity``,
        ``iou`` (mean over matched pairs) and ``iou_values`` (per blend, true order),
        ``true_index``, ``pred_index`` (per blend), ``flux`` (band -> stats), ``matched``
        (Table of matched objects with true and measured fluxes and blendedness).
    """
    bs = int(blend_batch.batch_size)
    if len(results) != bs:
        raise ConfigError("needs one SceneResult per blend.", key="results",
                          received={"n_results": len(results), "batch_size": bs})
    tseg = truth_segmentation(blend_batch, band)
    bands = survey_bands(blend_batch.survey)
    n_true, n_pred, n_match, ious, ti_all, pi_all, rows = [], [], [], [], [], [], []
    for i, res in enumerate(results):
        truth = truth_table(blend_batch, i)
        t_xy = np.column_stack([truth["x"], truth["y"]]) if len(truth) else np.zeros((0, 2))
        p_xy = (np.column_stack([np.asarray(res.catalog["x"], float),
                                 np.asarray(res.catalog["y"], float)])
                if res.n_objects else np.zeros((0, 2)))
        det = detection_completeness(t_xy, p_xy, max_sep)
        m = det["match"]
        n_true.append(det["n_true"])
        n_pred.append(det["n_pred"])
        n_match.append(det["n_matched"])
        ti_all.append(m["true_index"])
        pi_all.append(m["pred_index"])
        labels = np.asarray(res.segmentation)
        iou_i = [iou(tseg[i, t], labels == p + 1) for t, p in zip(m["true_index"],
                                                                 m["pred_index"])]
        ious.append(np.asarray(iou_i, dtype=np.float64))
        for t, p in zip(m["true_index"], m["pred_index"]):
            row = {"blend": i, "true_index": int(t), "pred_index": int(p),
                   "blendedness": float(truth["blendedness"][t])}
            for band_name in bands:
                row[f"true_flux_{band_name}"] = float(truth[f"flux_{band_name}"][t])
                row[f"flux_{band_name}"] = float(res.catalog[f"flux_{band_name}"][p])
            rows.append(row)
    matched = Table(rows=rows) if rows else Table()
    n_t, n_p, n_m = np.asarray(n_true), np.asarray(n_pred), np.asarray(n_match)
    flux = {}
    for band_name in bands:
        if len(matched):
            ft = np.asarray(matched[f"true_flux_{band_name}"])
            ok = ft > 0
            flux[band_name] = flux_error_stats(ft[ok], np.asarray(matched[f"flux_{band_name}"])
                                               [ok])
    all_iou = np.concatenate(ious) if ious else np.zeros(0)
    return {
        "n_true": n_t, "n_pred": n_p, "n_matched": n_m,
        "completeness": float(n_m.sum() / n_t.sum()) if n_t.sum() else float("nan"),
        "purity": float(n_m.sum() / n_p.sum()) if n_p.sum() else float("nan"),
        "iou": float(np.nanmean(all_iou)) if all_iou.size else float("nan"),
        "iou_values": ious, "true_index": ti_all, "pred_index": pi_all,
        "flux": flux, "matched": matched,
    }

"""Survey-aware scene deblending: pick the shipped model for the image's pixel scale and
bands, refuse what no model knows, and run :func:`astrogen.deblend.scene.deblend_scene`.

Every shipped scene model has a card (its ``.json``) recording the survey, bands, pixel
scale (with its tolerance), PSF FWHM per band, depth and noise of its training scenes.
:func:`check_image_survey` compares an image with a card:

* ``pixel_scale`` must be within the card's ``pixel_scale_tolerance`` (relative, 5 % for the
  shipped LSST model) of the model's; otherwise :class:`ConfigError` with key
  ``pixel_scale`` (resample the image to the model's pixel scale first). Within the
  tolerance the image is used as it is (no resampling).
* ``bands`` must be the model's bands, in any order and spelled ``lsst_g`` or ``g``; a
  missing or unknown band is refused with key ``bands`` (the image is reordered to the
  model's order, the catalog keeps the image's names).
* ``psf`` (FWHM, arcsec), if given, must be within a factor 1.5 of the model's mean FWHM
  (key ``psf``).

The SEP baseline needs no model: its detection filter is the given PSF FWHM (default 3
pixels).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from astrogen.deblend.result import SceneResult
from astrogen.errors import ConfigError, ModelError

__all__ = ["SHIPPED_SCENE_MODELS", "SCENE_METHODS", "psf_fwhm_arcsec", "scene_model_path", "load_scene_model",
           "check_image_survey", "deblend_survey_scene", "PSF_FACTOR", "SEP_DEFAULT_FWHM_PIX"]

#: survey -> shipped model file (astrogen/data/models)
SHIPPED_SCENE_MODELS = {"lsst": "scene_deblender_lsst.keras"}
SCENE_METHODS = ("unet", "prob_unet", "sep")
#: largest ratio between the image's PSF FWHM and the model's
PSF_FACTOR = 1.5
#: PSF FWHM (pixels) assumed by the SEP baseline when none is given
SEP_DEFAULT_FWHM_PIX = 3.0
_CACHE: dict = {}


def scene_model_path(model: str = "shipped", survey: str = "lsst") -> Path:
    """Path of a shipped scene model (``"shipped"``: the survey's) or of a user file."""
    from importlib import resources

    if model in (None, "shipped"):
        if survey not in SHIPPED_SCENE_MODELS:
            raise ConfigError(f"no shipped scene model for this survey; shipped: "
                              f"{sorted(SHIPPED_SCENE_MODELS)}.", key="survey",
                              received={"survey": survey})
        model = SHIPPED_SCENE_MODELS[survey]
    if isinstance(model, str) and "/" not in model and model.endswith(".keras"):
        p = Path(str(resources.files("astrogen.data").joinpath("models", model)))
        if not p.is_file():
            raise ModelError("the shipped model file is missing from astrogen/data/models "
                             "(train it: astrogen train configs/scene_deblender_lsst.yaml).",
                             key="model", received={"model": model})
        return p
    p = Path(str(model)).expanduser()
    if not p.is_file() or p.suffix != ".keras":
        raise ModelError("must be 'shipped' or the path of a .keras file.", key="model",
                         received={"model": str(model)})
    return p


def load_scene_model(model: str = "shipped", survey: str = "lsst"):
    """The :class:`astrogen.models.scene_deblender.SceneDeblender` (cached per file)."""
    from astrogen.models.scene_deblender import load_scene_deblender

    p = scene_model_path(model, survey)
    key = (str(p.resolve()), p.stat().st_mtime_ns)
    if key not in _CACHE:
        _CACHE[key] = load_scene_deblender(p)
    return _CACHE[key]


def _short(band: str) -> str:
    return band.split("_", 1)[1] if "_" in band else band


def check_image_survey(card: dict, pixel_scale: float, bands, psf_fwhm: float | None = None
                       ) -> list[int]:
    """Check an image against a model card; returns, for each model band, the index of the
    image band holding it.

    Raises
    ------
    ConfigError
        Naming ``pixel_scale``, ``bands`` or ``psf``, the value received and the model's.
    """
    ps = float(pixel_scale)
    mps = float(card["pixel_scale"])
    tol = float(card.get("pixel_scale_tolerance", 0.05))
    if not (np.isfinite(ps) and ps > 0):
        raise ConfigError("must be > 0 (arcsec/pixel).", key="pixel_scale",
                          received={"pixel_scale": pixel_scale})
    if abs(ps / mps - 1.0) > tol:
        raise ConfigError(f"is outside the model's range: it was trained at {mps} arcsec/pixel "
                          f"(tolerance {tol:.0%}, survey {card.get('survey')}); resample the "
                          "image to the model's pixel scale or use a model trained for yours.",
                          key="pixel_scale", received={"pixel_scale": ps,
                                                       "model_pixel_scale": mps})
    model_bands = list(card["bands"])
    img = [str(b) for b in bands]
    index = []
    for mb in model_bands:
        hits = [i for i, b in enumerate(img) if b == mb or b == _short(mb)]
        if not hits:
            raise ConfigError(f"the model needs the bands {model_bands} (survey "
                              f"{card.get('survey')}); band {mb} is missing.", key="bands",
                              received={"bands": img})
        index.append(hits[0])
    extra = [b for i, b in enumerate(img) if i not in index]
    if extra:
        raise ConfigError(f"bands {extra} are not the model's {model_bands}.", key="bands",
                          received={"bands": img})
    if psf_fwhm is not None:
        mf = float(np.mean(card["psf_fwhm"]))
        r = float(psf_fwhm) / mf
        if not (1.0 / PSF_FACTOR <= r <= PSF_FACTOR):
            raise ConfigError(f"PSF FWHM {float(psf_fwhm):.3f} arcsec is outside the model's "
                              f"range ({mf / PSF_FACTOR:.3f} to {mf * PSF_FACTOR:.3f}).",
                              key="psf", received={"psf_fwhm": float(psf_fwhm)})
    return index


def psf_fwhm_arcsec(psf, pixel_scale: float | None = None) -> float | None:
    """FWHM (arcsec) of a PSF given in any of the forms the deblenders accept.

    Parameters
    ----------
    psf : float, galsim.GSObject, dict, array_like or None
        A FWHM in arcsec; a GalSim PSF or its config dict (``fwhm`` key, or built by
        :func:`astrogen.physics.psf.build_psf`); PSF images ``(C, h, w)`` or ``(h, w)`` at
        ``pixel_scale`` (FWHM of the Gaussian of the same second moments, mean over bands);
        ``None``.
    pixel_scale : float, optional
        Arcsec per pixel of PSF images (needed only for them).

    Returns
    -------
    float or None
        FWHM in arcsec (``None`` for ``psf=None``).

    Raises
    ------
    ConfigError
        Naming ``psf`` for any other value, or images without positive flux.
    """
    if psf is None:
        return None
    if isinstance(psf, (int, float, np.integer, np.floating)) or \
            (isinstance(psf, np.ndarray) and psf.ndim == 0):
        return float(psf)
    if isinstance(psf, dict):
        if "fwhm" in psf:
            return float(psf["fwhm"])
        from astrogen.physics.psf import build_psf

        psf = build_psf(psf)
    if hasattr(psf, "calculateFWHM"):
        return float(psf.calculateFWHM())
    if isinstance(psf, (list, tuple, np.ndarray)) and np.ndim(psf) >= 2 \
            and pixel_scale is not None:
        stamps = np.asarray(psf, np.float64)
        stamps = stamps.reshape((-1,) + stamps.shape[-2:])
        yy, xx = np.indices(stamps.shape[1:], dtype=np.float64)
        fw = []
        for p in stamps:
            tot = p.sum()
            if not tot > 0:
                continue
            cx, cy = (p * xx).sum() / tot, (p * yy).sum() / tot
            r2 = (p * ((xx - cx) ** 2 + (yy - cy) ** 2)).sum() / tot
            fw.append(2.3548 * np.sqrt(max(r2, 1e-12) / 2.0))
        if fw:
            return float(np.mean(fw)) * float(pixel_scale)
    raise ConfigError("must be a FWHM in arcsec, a GalSim PSF or its config dict, or PSF "
                      "images with positive flux.", key="psf",
                      received={"psf": (f"array of shape {np.shape(psf)}" if np.ndim(psf)
                                        else str(psf)[:80])})


def deblend_survey_scene(image: Any, *, pixel_scale: float, bands, method: str = "unet",
                         model: str = "shipped", survey: str = "lsst", wcs=None, psf=None,
                         noise_sigma=None, n_samples: int = 16, seed: int = 0,
                         flux_unit=None, detect_params: dict | None = None) -> SceneResult:
    """Deblend one survey scene (see :func:`astrogen.api.deblend`)."""
    from astrogen.deblend.scene import deblend_scene, read_bands

    if method not in SCENE_METHODS:
        from astrogen.errors import suggest

        raise ConfigError(f"must be one of {list(SCENE_METHODS)}."
                          f"{suggest(str(method), SCENE_METHODS)}", key="method",
                          received={"method": method})
    img = read_bands(image, bands)
    if noise_sigma is None:
        from astrogen.deblend.segment import estimate_noise

        sig = np.array([estimate_noise(b) for b in img])
    else:
        sig = np.broadcast_to(np.asarray(noise_sigma, float).reshape(-1), (len(img),)) \
            if np.size(noise_sigma) in (1, len(img)) else None
        if sig is None:
            raise ConfigError(f"must be one number or one per band ({len(img)}).",
                              key="noise_sigma", received={"noise_sigma": noise_sigma})
    fwhm = psf_fwhm_arcsec(psf, pixel_scale)
    if method == "sep":
        if fwhm is None:
            fwhm = SEP_DEFAULT_FWHM_PIX * float(pixel_scale)
        return deblend_scene(img, pixel_scale=pixel_scale, bands=list(bands), noise_sigma=sig,
                             psf_fwhm=fwhm, method="sep", wcs=wcs, flux_unit=flux_unit,
                             detect_params=detect_params)
    net = load_scene_model(model, survey)
    index = check_image_survey(net.card, pixel_scale, bands, fwhm)
    img_m = img[index]
    sig_m = np.asarray(sig)[index]
    names = [list(bands)[i] for i in index]
    if fwhm is None:
        fwhm = float(np.mean(net.card["psf_fwhm"]))
    return deblend_scene(img_m, pixel_scale=pixel_scale, bands=names, noise_sigma=sig_m,
                         psf_fwhm=fwhm, method=method, predictor=net.predictor(seed),
                         cutout_size=net.size, n_samples=n_samples,
                         temperature=net.temperature,
                         confidence_map=net.card.get("calibration", {}).get("map"),
                         wcs=wcs, flux_unit=flux_unit,
                         detect_params=detect_params, model=dict(net.card))

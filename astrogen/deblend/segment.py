"""Deblend images with the shipped segmenters or SEP: a plain function API on numpy arrays.

>>> from astrogen.deblend.segment import deblend
>>> out, catalog = deblend(image, noise_sigma=19.4, method="unet")      # doctest: +SKIP

``deblend`` takes one 2-D image (any size; padded internally to a multiple of 8) or a
stack ``(n, h, w)`` and returns a dict of arrays (``labels``, ``fractions``, ``classes``,
``uncertainty`` ...) and an :class:`astropy.table.Table` with one row per measured object.

Methods
-------
``"unet"``
    :class:`astrogen.models.unet.UNet` (``unet_blends.keras``): the classes head gives the
    footprint (pixels whose most probable class is not background), the fractions head the
    share of each object in every pixel; the label map is the dominant object slot inside the
    footprint, and fluxes are measured by *flux redistribution* of the observed image,
    ``flux_k = sum(image * fraction_k)`` (:func:`astrogen.deblend.measure.measure_fractions`).
``"prob_unet"``
    :class:`astrogen.models.prob_unet.ProbUNet` (``prob_unet_blends.keras``): ``n_samples``
    segmentations with ``z`` drawn from the prior; their object slots are aligned to the
    prior-mean prediction (a sample may swap two objects where the assignment is
    ambiguous; the networks are trained with slot 1 = the object nearest the stamp centre)
    and averaged; the uncertainty map is the predictive
    entropy of the mean (nats). Its fractions are softened at 1 sigma (they define
    the 1-sigma ownership map), so its fluxes are for reference only.
``"sep"``
    :func:`astrogen.deblend.measure.sep_deblend` (SExtractor's algorithm): detection at
    ``thresh`` sigma, multi-threshold deblending, fluxes summed over each segment.

Models are loaded from the package data (``astrogen/data/models``, via
:mod:`importlib.resources`) or from a user's ``.keras`` path, once per process.

Noise scaling: the networks were trained on images whose noise standard deviation is the
model's ``input_scale``; an image with a known ``noise_sigma`` is multiplied by
``input_scale / noise_sigma`` before the network (fractions and labels do not depend on the
image unit; fluxes are measured on the original image).
"""
from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np
from astropy.table import Column, Table, vstack

from astrogen.errors import ConfigError, ModelError

__all__ = ["SHIPPED_SEGMENTERS", "METHODS", "model_path", "load_segmenter", "predict_unet",
           "network_input", "radial_channel",
           "predict_prob_unet", "align_slots", "unet_labels", "estimate_noise", "deblend",
           "SEP_DEFAULTS"]

#: Shipped weights by method.
SHIPPED_SEGMENTERS = {"unet": "unet_blends.keras", "prob_unet": "prob_unet_blends.keras"}
METHODS = ("unet", "prob_unet", "sep")
#: SEP (SExtractor) settings of the baseline: SExtractor's default deblending
#: (DEBLEND_NTHRESH 32, DEBLEND_MINCONT 0.005), 1.5 sigma detection, 5 pixels minimum.
SEP_DEFAULTS = {"thresh": 1.5, "minarea": 5, "deblend_nthresh": 32, "deblend_cont": 0.005}
_CACHE: dict = {}


def model_path(model: str, method: str) -> Path:
    """Path of a shipped segmenter (``"shipped"`` or its file name) or of a user file."""
    from importlib import resources

    if model in ("shipped", None):
        model = SHIPPED_SEGMENTERS[method]
    if isinstance(model, str) and "/" not in model and model.endswith(".keras"):
        res = resources.files("astrogen.data").joinpath("models", model)
        p = Path(str(res))
        if not p.is_file():
            raise ModelError("the shipped model file is missing from astrogen/data/models "
                             f"(train it: astrogen train configs/{method}.yaml).", key="model",
                             received={"model": model})
        return p
    p = Path(model).expanduser()
    if not p.is_file() or p.suffix != ".keras":
        raise ModelError("must be 'shipped' or the path of a .keras file.", key="model",
                         received={"model": str(model)})
    return p


def load_segmenter(model: str = "shipped", method: str = "unet"):
    """The Keras segmenter (cached per file and modification time)."""
    import keras

    import astrogen.models.prob_unet  # noqa: F401  (registers the classes)
    import astrogen.models.unet  # noqa: F401

    p = model_path(model, method)
    key = (str(p.resolve()), p.stat().st_mtime_ns)
    if key not in _CACHE:
        _CACHE[key] = keras.models.load_model(p, compile=False)
    m = _CACHE[key]
    want = "UNet" if method == "unet" else "ProbUNet"
    if type(m).__name__ != want:
        raise ModelError(f"the file holds a {type(m).__name__}, method '{method}' needs a "
                         f"{want}.", key="model", received={"model": str(p)})
    return m


def _pad(images: np.ndarray, multiple: int) -> tuple[np.ndarray, tuple[int, int]]:
    n, h, w = images.shape
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        images = np.pad(images, ((0, 0), (0, ph), (0, pw)))
    return images, (h, w)


def radial_channel(shape: tuple[int, int], centre: tuple[float, float] | None = None
                   ) -> np.ndarray:
    """Distance to the stamp centre in units of half the stamp width (0 at the centre)."""
    h, w = shape
    cy, cx = ((h - 1) / 2.0, (w - 1) / 2.0) if centre is None else centre
    yy, xx = np.indices((h, w), dtype=np.float64)
    return (np.hypot(xx - cx, yy - cy) / (max(h, w) / 2.0)).astype(np.float32)


def network_input(images: np.ndarray, sigma, input_scale: float, radial: bool,
                  rescale: bool = True, centre=None) -> np.ndarray:
    """Network input ``(n, h, w, n_bands)``: the image, multiplied by ``input_scale / sigma``
    if ``rescale`` (noise brought to the training level), and, if ``radial``, a second band
    holding the distance to the stamp centre, encoded as ``input_scale * sinh(r)`` so that
    the networks' ``asinh(x / input_scale)`` input transform turns it back into ``r``: the
    networks learn "the object nearest the centre is object slot 1" (the detection the stamp
    is centred on; Boucaud+20's central galaxy) without having to infer absolute position
    from the zero padding.

    Parameters
    ----------
    images : array (n, h, w)
        Background-subtracted images, any flux unit.
    sigma : float or array (n,)
        Noise standard deviation of each image, same unit (used only if ``rescale``).
    input_scale : float
        The model's ``input_scale`` (noise sigma of its training images, e-).
    radial : bool
        Add the distance band (models with ``n_bands == 2``).
    rescale : bool
        Bring the noise to ``input_scale`` (False for the training images, already at it).
    centre : (float, float), optional
        (row, column) of the stamp centre, 0-based pixels; default the array centre.

    Notes
    -----
    r is in units of half the stamp width (:func:`radial_channel`)."""
    x = np.asarray(images, np.float32)
    if rescale:
        f = (float(input_scale) / np.asarray(sigma, np.float64)).reshape(-1, 1, 1)
        x = (x * f).astype(np.float32)
    x = x[..., None]
    if radial:
        r = radial_channel(x.shape[1:3], centre)
        rc = (float(input_scale) * np.sinh(r)).astype(np.float32)
        x = np.concatenate([x, np.broadcast_to(rc[None, ..., None], x.shape)], axis=-1)
    return x


def _inputs(images: np.ndarray, sigma, model, size: tuple[int, int]) -> np.ndarray:
    """Padded images -> network input; the centre is that of the unpadded ``size``."""
    h, w = size
    return network_input(images, sigma, float(model.input_scale), model.n_bands == 2,
                         centre=((h - 1) / 2.0, (w - 1) / 2.0))


def predict_unet(model, images, sigma, batch_size: int = 64) -> dict[str, np.ndarray]:
    """``fractions`` (n, h, w, K+1) and ``classes`` (n, h, w, 3) probabilities."""
    import keras

    x, (h, w) = _pad(np.asarray(images, np.float32), 2 ** model.depth)
    x = _inputs(x, sigma, model, (h, w))
    fr, cl = [], []
    for lo in range(0, len(x), batch_size):
        out = model(x[lo:lo + batch_size])
        fr.append(keras.ops.convert_to_numpy(out["fractions"]))
        cl.append(keras.ops.convert_to_numpy(out["classes"]))
    k = model.max_objects + 1
    fr = np.concatenate(fr) if fr else np.zeros((0, *x.shape[1:3], k), np.float32)
    cl = np.concatenate(cl) if cl else np.zeros((0, *x.shape[1:3], 3), np.float32)
    return {"fractions": fr[:, :h, :w], "classes": cl[:, :h, :w]}


def align_slots(maps: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Permute the object channels (1..K) of ``maps`` (..., n, h, w, K+1) to best match
    ``reference`` (n, h, w, K+1) per image (smallest summed absolute difference)."""
    maps = np.asarray(maps)
    k = maps.shape[-1] - 1
    perms = [np.array((0, *[1 + p for p in perm])) for perm in
             itertools.permutations(range(k))]
    if len(perms) == 1:
        return maps
    cost = np.stack([np.abs(maps[..., p] - reference).sum(axis=(-3, -2, -1)) for p in perms],
                    axis=-1)
    best = np.argmin(cost, axis=-1)
    out = np.empty_like(maps)
    for i, p in enumerate(perms):
        sel = best == i
        out[sel] = maps[sel][..., p]
    return out


def predict_prob_unet(model, images, sigma, n_samples: int = 16, seed: int = 0,
                      batch_size: int = 64) -> dict[str, np.ndarray]:
    """Aligned samples summarised: ``mean`` (n, h, w, K+1), ``entropy`` (n, h, w) predictive
    entropy of the mean (nats), ``std_max`` (n, h, w), ``prior_mean`` prediction."""
    import keras

    from astrogen.models.prob_unet import predictive_summary

    x, (h, w) = _pad(np.asarray(images, np.float32), 2 ** model.depth)
    x = _inputs(x, sigma, model, (h, w))
    if len(x) == 0:
        z = np.zeros((0, h, w), np.float32)
        return {"mean": np.zeros((0, h, w, model.n_outputs), np.float32), "entropy": z,
                "std_max": z, "mutual_information": z}
    ref = np.concatenate([keras.ops.convert_to_numpy(model(x[lo:lo + batch_size]))
                          for lo in range(0, len(x), batch_size)])
    samples = model.sample(x, n_samples=n_samples, seed=seed, batch_size=batch_size)
    samples = align_slots(samples, ref)
    summ = predictive_summary(samples)
    return {"mean": summ["mean"][:, :h, :w].astype(np.float32),
            "entropy": summ["entropy"][:, :h, :w].astype(np.float32),
            "std_max": summ["std_max"][:, :h, :w].astype(np.float32),
            "mutual_information": summ["mutual_information"][:, :h, :w].astype(np.float32),
            "samples": samples[:, :, :h, :w]}


def unet_labels(fractions: np.ndarray, classes: np.ndarray | None = None) -> np.ndarray:
    """Label map: inside the footprint (most probable class not background, or the largest
    fraction not the background if ``classes`` is None) the object slot with the largest
    fraction (1..K), 0 elsewhere."""
    f = np.asarray(fractions)
    owner = 1 + np.argmax(f[..., 1:], axis=-1)
    if classes is None:
        foot = np.argmax(f, axis=-1) > 0
    else:
        foot = np.argmax(classes, axis=-1) > 0
    return np.where(foot, owner, 0).astype(np.int32)


def estimate_noise(image: np.ndarray) -> float:
    """Robust background noise of an image: 1.4826 x the median absolute deviation of the
    pixels below the median + 3 MAD-sigma (galaxies excluded); 1.0 for a constant image."""
    v = np.asarray(image, np.float64).ravel()
    med = np.median(v)
    s = 1.4826 * np.median(np.abs(v - med))
    if s > 0:
        v = v[v < med + 3 * s]
        med = np.median(v)
        s = 1.4826 * np.median(np.abs(v - med))
    return float(s) if s > 0 else 1.0


def measure_scenes(images, fractions, sigma, zero_point, labels, scene_ids, method, detect_nsigma):
    from astrogen.deblend.measure import measure_fractions

    tabs = []
    for i in range(len(images)):
        t = measure_fractions(images[i], fractions[i], noise_sigma=float(sigma[i]),
                              zero_point=zero_point, detect_nsigma=detect_nsigma)
        t = t[t["detected"]]
        # keep only slots that own pixels of the label map (the measured objects)
        present = np.isin(np.asarray(t["slot"]), np.unique(labels[i][labels[i] > 0]))
        t = t[present]
        # positions: first moments of image x fraction over the object's own segment (the
        # fractions extend into the noise, where the whole-stamp moments are noisy)
        yy, xx = np.indices(labels[i].shape, dtype=np.float64)
        for r in range(len(t)):
            k = int(t["slot"][r])
            w = np.clip(images[i] * fractions[i][..., k], 0, None) * (labels[i] == k)
            if w.sum() > 0:
                t["x"][r] = float((w * xx).sum() / w.sum())
                t["y"][r] = float((w * yy).sum() / w.sum())
        t.meta = {}
        t["scene_id"] = np.full(len(t), scene_ids[i], np.int64)
        t["id"] = np.asarray(t["slot"], np.int64)
        tabs.append(t)
    return tabs


def stack_catalogs(tabs: list[Table], method: str, zero_point) -> Table:
    if not tabs or all(len(t) == 0 for t in tabs):
        cols = {"scene_id": np.int64, "id": np.int64, "x": float, "y": float, "flux": float,
                "flux_err": float}
        t = Table({k: np.zeros(0, v) for k, v in cols.items()})
        if zero_point is not None:
            t["mag"] = np.zeros(0)
    else:
        t = vstack([x for x in tabs if len(x)], metadata_conflicts="silent")
    keep = [c for c in ("scene_id", "id", "x", "y", "flux", "flux_err", "mag", "area",
                        "npix", "flux_aper") if c in t.colnames]
    t = t[keep]
    for c in ("flux", "flux_err", "flux_aper"):
        if c in t.colnames:
            t[c].unit = None  # image units (e- for astrogen scenes)
    t.meta = {"METHOD": method, "POSCONV": "0-based pixel centres, x = column"}
    return t


def deblend(image: Any, noise_sigma: Any = None, method: str = "unet", psf: Any = None,
            detections: Any = None, zero_point: float | None = None, model: str = "shipped",
            n_samples: int = 16, seed: int = 0, batch_size: int = 64,
            detect_nsigma: float = 3.0, sep_params: dict | None = None
            ) -> tuple[dict[str, np.ndarray], Table]:
    """Segment and measure one image ``(h, w)`` or a stack ``(n, h, w)``.

    Parameters
    ----------
    image : array_like
        Background-subtracted image(s) in any flux unit.
    noise_sigma : float or array (n,), optional
        Background noise standard deviation per image (estimated robustly if None).
    method : {"unet", "prob_unet", "sep"}
    psf : any, optional
        Recorded in the catalog meta only: the shipped networks were trained for the HST-like
        PSF of ``configs/unet.yaml`` (FWHM 0.087 arcsec at 0.06 arcsec/pixel); use a model
        trained for your PSF otherwise.
    detections : array (m, 2) of (x, y), optional
        Known positions (single image only): each measured object gets the index of the
        nearest detection within 3 pixels in ``detection_id`` (-1: none).
    zero_point : float, optional
        Adds AB magnitudes.
    model : str
        ``"shipped"`` or a ``.keras`` path (network methods).
    n_samples, seed : int
        Samples of the probabilistic U-Net and their seed.
    detect_nsigma : float
        An object slot of a network is kept if its redistributed flux exceeds this many
        sigma of its propagated noise.
    sep_params : dict, optional
        Overrides of :data:`SEP_DEFAULTS`.

    Returns
    -------
    arrays : dict
        ``labels`` (int32, 0 = background), ``noise_sigma``; for networks ``fractions``;
        U-Net: ``classes``; prob. U-Net: ``uncertainty`` (predictive entropy, nats),
        ``std_max``. Shapes follow the input (no leading axis for a single image).
    catalog : astropy.table.Table
        One row per measured object: ``scene_id`` (image index), ``id`` (its label),
        ``x``, ``y`` (0-based pixel centres), ``flux``, ``flux_err`` (and ``mag``); empty
        (same columns) when nothing is found.
    """
    if method not in METHODS:
        from astrogen.errors import suggest

        raise ConfigError(f"must be one of {list(METHODS)}.{suggest(str(method), METHODS)}",
                          key="method", received={"method": method})
    img = np.asarray(image, dtype=np.float64)
    single = img.ndim == 2
    if single:
        img = img[None]
    if img.ndim != 3 or min(img.shape[1:]) < 1:
        raise ConfigError("must have shape (h, w) or (n, h, w).", key="image",
                          received={"shape": np.shape(image)})
    if not np.all(np.isfinite(img)):
        raise ConfigError("must contain only finite values.", key="image")
    n = len(img)
    if noise_sigma is None:
        sigma = np.array([estimate_noise(im) for im in img])
    else:
        sigma = np.broadcast_to(np.asarray(noise_sigma, np.float64), (n,)).copy()
        if not np.all(np.isfinite(sigma)) or np.any(sigma <= 0):
            raise ConfigError("must be > 0.", key="noise_sigma",
                              received={"noise_sigma": noise_sigma})
    ids = np.arange(n, dtype=np.int64)
    arrays: dict[str, np.ndarray] = {"noise_sigma": sigma}
    if method == "sep":
        from astrogen.deblend.measure import sep_deblend

        params = {**SEP_DEFAULTS, **(sep_params or {})}
        labels = np.zeros(img.shape, np.int32)
        tabs = []
        for i in range(n):
            t, seg = sep_deblend(img[i], float(sigma[i]), zero_point=zero_point, **params)
            labels[i] = seg
            t.meta = {}
            t["scene_id"] = np.full(len(t), i, np.int64)
            t["id"] = np.asarray(t["id"], np.int64)
            tabs.append(t)
    elif method == "unet":
        net = load_segmenter(model, "unet")
        out = predict_unet(net, img, sigma, batch_size)
        labels = unet_labels(out["fractions"], out["classes"])
        arrays.update(fractions=out["fractions"], classes=out["classes"])
        tabs = measure_scenes(img, out["fractions"], sigma, zero_point, labels, ids, method,
                        detect_nsigma)
    else:
        net = load_segmenter(model, "prob_unet")
        out = predict_prob_unet(net, img, sigma, n_samples, seed, batch_size)
        labels = unet_labels(out["mean"])
        arrays.update(fractions=out["mean"], uncertainty=out["entropy"],
                      std_max=out["std_max"])
        tabs = measure_scenes(img, out["mean"], sigma, zero_point, labels, ids, method,
                        detect_nsigma)
    arrays["labels"] = labels.astype(np.int32)
    cat = stack_catalogs(tabs, method, zero_point)
    if psf is not None:
        cat.meta["psf"] = str(psf)
    if detections is not None:
        from astrogen.deblend.metrics import match_positions

        if not single:
            raise ConfigError("detections are supported for a single image.", key="detections")
        det = np.asarray(detections, np.float64).reshape(-1, 2)
        m = match_positions(det, np.c_[cat["x"], cat["y"]] if len(cat) else np.zeros((0, 2)),
                            3.0)
        cat["detection_id"] = Column(m["true_of_pred"], dtype=np.int64,
                                     description="index of the matched given detection (-1)")
    if single:
        arrays = {k: (v[0] if k != "noise_sigma" else float(v[0])) for k, v in arrays.items()}
    return arrays, cat

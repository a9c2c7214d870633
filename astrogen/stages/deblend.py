"""Deblending stages: blended scenes with truth, U-Net / probabilistic U-Net / SEP deblenders,
and a report (measured catalogs, metrics, PNG figures).

``blend.generate`` (map: Table or PSF-free StampBatch -> :class:`BlendBatch`) composes scenes
(:mod:`astrogen.physics.blends`). The deblenders are map stages ``BlendBatch -> BlendBatch``
(or observed ``StampBatch -> BlendBatch``) that add their measurement under their stage name
in ``batch.results``, so several methods run on the same scenes one after the other;
``deblend.report`` (sink) writes every method's catalog and, where there is truth, the
metrics of :mod:`astrogen.deblend.evaluate`.
"""
from __future__ import annotations

import json
import time

import numpy as np
from astropy.table import Table

from astrogen.batch import StampBatch
from astrogen.errors import ConfigError
from astrogen.physics.blends import BlendBatch
from astrogen.registry import register_stage
from astrogen.stages.base import Stage, check_choice, check_file_name, check_int, check_positive

__all__ = ["BlendGenerate", "DeblendUNet", "DeblendProbUNet", "DeblendSEP", "DeblendReport"]

_DEFAULT_SURVEY = {"base": "hst_cosmos", "pixel_scale": 0.06}


@register_stage("blend.generate")
class BlendGenerate(Stage):
    """Blended scenes of 2 to N galaxies with their truth (noiseless objects, ownership).

    Consecutive catalog rows with the same ``row_id // max_objects`` form one scene (keep
    the catalog's ``chunk_size`` a multiple of ``max_objects``); the first is the central
    galaxy. With a PSF-free ``StampBatch`` input (e.g. from a generative model), its stamps
    are drawn instead of parametric profiles (flux from the catalog ``mag``).

    Parameters
    ----------
    survey : str or dict
        Survey preset or ``{base: preset, field: value}`` (default HST F814W COSMOS depth
        with 0.06 arcsec pixels).
    psf : dict, optional
        GalSim PSF config replacing the survey's.
    stamp_size, min_objects, max_objects, central_offset, margin
        Scene geometry (:class:`astrogen.physics.blends.BlendGeometry`): ``stamp_size``,
        ``central_offset`` and ``margin`` in pixels, ``min_objects`` and ``max_objects``
        counts of galaxies per scene.
    separation, min_separation, max_separation
        Scene geometry (:class:`astrogen.physics.blends.BlendGeometry`): ``separation`` in
        units of the summed half-light radii, the others in pixels.
    profile : {"sersic", "bulge_disk"}
        Parametric profile for catalog input.
    add_noise : bool
        Add the survey's sky-subtracted CCD noise.
    """

    input_types = ((Table, StampBatch),)
    output_type = BlendBatch
    units = {"stamp_size": "pix", "central_offset": "pix", "min_separation": "pix",
             "max_separation": "pix", "margin": "pix", "separation": "sum of hlr"}

    def __init__(self, survey=None, psf: dict | None = None, stamp_size: int = 64,
                 min_objects: int = 2, max_objects: int = 2, central_offset: float = 3.0,
                 separation: list | None = None, min_separation: float = 2.5,
                 max_separation: float = 22.0, margin: int = 28, profile: str = "sersic",
                 add_noise: bool = True):
        from astrogen.physics.blends import BlendGeometry
        from astrogen.physics.psf import build_psf, describe_psf
        from astrogen.physics.render import PROFILES
        from astrogen.physics.surveys import get_survey

        self.survey = get_survey(_DEFAULT_SURVEY if survey is None else survey)
        self.psf_spec = dict(psf) if psf is not None else dict(self.survey.psf)
        self.psf = build_psf(self.psf_spec, key="psf" if psf is not None else "survey.psf")
        self.psf_name = describe_psf(self.psf_spec)
        sep = [0.5, 3.0] if separation is None else separation
        if not isinstance(sep, (list, tuple)) or len(sep) != 2:
            raise ConfigError("must be [low, high] in units of the summed half-light radii.",
                              key="separation", received={"separation": separation})
        self.geometry = BlendGeometry(stamp_size, min_objects, max_objects,
                                      check_positive("central_offset", central_offset,
                                                     allow_zero=True, unit="pix"),
                                      tuple(sep), check_positive("min_separation",
                                                                 min_separation, True, "pix"),
                                      check_positive("max_separation", max_separation, True,
                                                     "pix"), margin)
        self.profile = check_choice("profile", profile, PROFILES)
        self.add_noise = bool(add_noise)

    def process(self, data) -> BlendBatch:
        from astrogen.catalog.columns import require_columns
        from astrogen.physics.blends import make_blends

        images = scale = None
        if isinstance(data, StampBatch):
            if data.psf is not None:
                raise ConfigError("blend.generate needs PSF-free stamps; its input already has "
                                  "a PSF.", key="inputs", received={"psf": data.psf})
            rows, images, scale = data.catalog, data.images, data.pixel_scale
            require_columns(rows, ["mag", "hlr"], "blend.generate")
        else:
            rows = data
            need = ["mag", "hlr", "q", "beta",
                    "sersic_n" if self.profile == "sersic" else "bulge_frac"]
            require_columns(rows, need, f"blend.generate (profile: {self.profile})")
        return make_blends(rows, self.geometry, self.survey, self.psf, self.ctx.seed,
                           self.profile, self.add_noise, self.psf_name, images, scale)


def _as_blends(data) -> BlendBatch:
    return BlendBatch.from_stamps(data) if isinstance(data, StampBatch) else data


class _NetworkDeblender(Stage):
    input_types = ((BlendBatch, StampBatch),)
    output_type = BlendBatch
    uses_tensorflow = True
    method = "unet"

    def __init__(self, model: str = "shipped", batch_size: int = 64,
                 detect_nsigma: float = 3.0):
        if not isinstance(model, str) or not (model == "shipped" or model.endswith(".keras")):
            raise ConfigError("must be 'shipped' or the path of a .keras file.", key="model",
                              received={"model": model})
        self.model_name = model
        self.batch_size = check_int("batch_size", batch_size)
        self.detect_nsigma = check_positive("detect_nsigma", detect_nsigma, allow_zero=True)
        self.net = None

    def setup(self, ctx) -> None:
        from astrogen.deblend.segment import load_segmenter

        super().setup(ctx)
        self.net = load_segmenter(self.model_name, self.method)

    def _run(self, b: BlendBatch) -> dict:
        raise NotImplementedError

    def process(self, data) -> BlendBatch:
        b = _as_blends(data)
        t0 = time.perf_counter()
        res = self._run(b)
        res["seconds"] = time.perf_counter() - t0
        res["method"] = self.method
        results = dict(b.results)
        results[self.ctx.name] = res
        return b.replace(results=results)


def _sigma(b: BlendBatch) -> np.ndarray:
    if b.noise_sigma is not None:
        return np.asarray(b.noise_sigma, float)
    from astrogen.deblend.segment import estimate_noise

    return np.array([estimate_noise(im) for im in b.images])


@register_stage("deblend.unet")
class DeblendUNet(_NetworkDeblender):
    """U-Net segmentation (classes + light fractions) and flux-redistribution photometry.

    Parameters
    ----------
    model : str
        ``shipped`` (``astrogen/data/models/unet_blends.keras``) or a ``.keras`` path.
    batch_size : int
        Scenes per forward pass.
    detect_nsigma : float
        Keep an object slot if its flux exceeds this many sigma of its noise.
    """

    method = "unet"

    def _run(self, b):
        from astrogen.deblend.segment import (measure_scenes, predict_unet, stack_catalogs,
                                              unet_labels)

        sig = _sigma(b)
        out = predict_unet(self.net, b.images, sig, self.batch_size)
        labels = unet_labels(out["fractions"], out["classes"])
        tabs = measure_scenes(b.images, out["fractions"], sig, b.zero_point, labels, b.scene_ids,
                              self.method, self.detect_nsigma)
        return {"labels": labels, "fractions": out["fractions"], "classes": out["classes"],
                "catalog": stack_catalogs(tabs, self.method, b.zero_point)}


@register_stage("deblend.prob_unet")
class DeblendProbUNet(_NetworkDeblender):
    """Probabilistic U-Net: mean segmentation over prior samples and per-pixel uncertainty
    (predictive entropy, nats).

    Parameters
    ----------
    model, batch_size, detect_nsigma
        As for ``deblend.unet`` (shipped file ``prob_unet_blends.keras``).
    n_samples : int
        Segmentations sampled per scene.
    """

    method = "prob_unet"

    def __init__(self, model: str = "shipped", batch_size: int = 64,
                 detect_nsigma: float = 3.0, n_samples: int = 16):
        super().__init__(model, batch_size, detect_nsigma)
        self.n_samples = check_int("n_samples", n_samples)

    def _run(self, b):
        from astrogen.deblend.segment import (measure_scenes, predict_prob_unet, stack_catalogs,
                                              unet_labels)

        sig = _sigma(b)
        seed = int(self.ctx.seed % (2 ** 31)) if self.ctx else 0
        out = predict_prob_unet(self.net, b.images, sig, self.n_samples, seed,
                                self.batch_size)
        labels = unet_labels(out["mean"])
        tabs = measure_scenes(b.images, out["mean"], sig, b.zero_point, labels, b.scene_ids,
                              self.method, self.detect_nsigma)
        return {"labels": labels, "fractions": out["mean"], "uncertainty": out["entropy"],
                "std_max": out["std_max"],
                "catalog": stack_catalogs(tabs, self.method, b.zero_point)}


@register_stage("deblend.sep")
class DeblendSEP(Stage):
    """SExtractor baseline (SEP): detection, multi-threshold deblending, segment fluxes.

    Parameters
    ----------
    thresh : float
        Detection threshold in noise sigma.
    minarea : int
        Minimum pixels above threshold.
    deblend_nthresh, deblend_cont
        SExtractor's DEBLEND_NTHRESH and DEBLEND_MINCONT.
    """

    input_types = ((BlendBatch, StampBatch),)
    output_type = BlendBatch

    def __init__(self, thresh: float = 1.5, minarea: int = 5, deblend_nthresh: int = 32,
                 deblend_cont: float = 0.005):
        self.params = {"thresh": check_positive("thresh", thresh),
                       "minarea": check_int("minarea", minarea),
                       "deblend_nthresh": check_int("deblend_nthresh", deblend_nthresh),
                       "deblend_cont": check_positive("deblend_cont", deblend_cont, True)}
        if self.params["deblend_cont"] > 1:
            raise ConfigError("must be in [0, 1].", key="deblend_cont",
                              received={"deblend_cont": deblend_cont})

    def process(self, data) -> BlendBatch:
        from astrogen.deblend.segment import stack_catalogs
        from astrogen.deblend.measure import sep_deblend

        b = _as_blends(data)
        t0 = time.perf_counter()
        sig = _sigma(b)
        labels = np.zeros(b.images.shape, np.int32)
        tabs = []
        for i in range(len(b)):
            t, seg = sep_deblend(b.images[i], float(sig[i]), zero_point=b.zero_point,
                                 **self.params)
            labels[i] = seg
            t.meta = {}
            t["scene_id"] = np.full(len(t), b.scene_ids[i], np.int64)
            t["id"] = np.asarray(t["id"], np.int64)
            tabs.append(t)
        res = {"labels": labels, "catalog": stack_catalogs(tabs, "sep", b.zero_point),
               "method": "sep", "seconds": time.perf_counter() - t0}
        results = dict(b.results)
        results[self.ctx.name] = res
        return b.replace(results=results)


@register_stage("deblend.report")
class DeblendReport(Stage):
    """Measured catalogs of every deblender upstream, truth catalog, metrics and figures.

    Writes ``catalog_file`` (one FITS table HDU per method: scene_id, id, x, y [pix], flux
    [e-], flux_err, mag), ``truth_file`` (the blend truth table), ``metrics_file`` (JSON:
    per method IoU per object and vs blendedness, completeness, flux errors, calibration and
    uncertainty AUC where available, scenes per second) and PNGs ``<figure_prefix>_scenes.png``
    (scene, truth, predictions, uncertainty of the first ``n_figures`` scenes) and
    ``<figure_prefix>_metrics.png``.

    Parameters
    ----------
    catalog_file, truth_file, metrics_file : str
        File names in the output folder.
    figure_prefix : str
        PNG name prefix.
    n_figures : int
        Scenes shown (0: no scene figure).
    max_distance : float
        Matching radius (pixels) between true and measured positions.
    """

    kind = "sink"
    input_types = (BlendBatch,)
    units = {"max_distance": "pix"}

    def __init__(self, catalog_file: str = "deblend_catalog.fits",
                 truth_file: str = "blend_truth.fits", metrics_file: str = "deblend_metrics.json",
                 figure_prefix: str = "deblend", n_figures: int = 6, max_distance: float = 3.0):
        self.catalog_file = check_file_name("catalog_file", catalog_file, (".fits",))
        self.truth_file = check_file_name("truth_file", truth_file, (".fits",))
        self.metrics_file = check_file_name("metrics_file", metrics_file, (".json",))
        if not isinstance(figure_prefix, str) or not figure_prefix or "/" in figure_prefix:
            raise ConfigError("must be a plain file name prefix.", key="figure_prefix",
                              received={"figure_prefix": figure_prefix})
        self.figure_prefix = figure_prefix
        self.n_figures = check_int("n_figures", n_figures, minimum=0)
        self.max_distance = check_positive("max_distance", max_distance, unit="pix")

    def _part(self, index: int, what: str):
        return self.ctx.work_dir / f"part_{index:06d}_{what}"

    def consume(self, index: int, b: BlendBatch) -> None:
        from astrogen.deblend.evaluate import object_records, pixel_records
        from astrogen.io.atomic import atomic_path, save_npz

        info = {"n_scenes": len(b), "methods": {}}
        for name, res in b.results.items():
            with atomic_path(self._part(index, f"cat_{name}.ecsv")) as tmp:
                res["catalog"].write(tmp, format="ascii.ecsv", overwrite=True)
            info["methods"][name] = {"method": res.get("method", name),
                                     "seconds": float(res.get("seconds", 0.0))}
            if b.has_truth:
                with atomic_path(self._part(index, f"obj_{name}.ecsv")) as tmp:
                    object_records(b, name, self.max_distance).write(tmp, format="ascii.ecsv",
                                                                     overwrite=True)
                pix = pixel_records(b, name, max_pixels=200_000)
                if pix:
                    save_npz(self._part(index, f"pix_{name}.npz"), **pix)
        if b.has_truth:
            with atomic_path(self._part(index, "truth.ecsv")) as tmp:
                b.objects.write(tmp, format="ascii.ecsv", overwrite=True)
        if index == 0 and self.n_figures:
            from astrogen.deblend.evaluate import true_labels

            k = min(self.n_figures, len(b))
            arrays = {"images": b.images[:k], "scene_ids": b.scene_ids[:k]}
            if b.has_truth:
                arrays["truth"] = true_labels(b)[:k]
            for name, res in b.results.items():
                arrays[f"labels__{name}"] = np.asarray(res["labels"])[:k]
                if "uncertainty" in res:
                    arrays[f"unc__{name}"] = np.asarray(res["uncertainty"])[:k]
            save_npz(self._part(0, "figure.npz"), **arrays)
        with atomic_path(self._part(index, "info.json")) as tmp:
            tmp.write_text(json.dumps(info))

    def finalize(self):
        from astropy.io import fits
        from astropy.table import vstack

        from astrogen.deblend.evaluate import summarize
        from astrogen.deblend.figures import plot_metrics, plot_scenes
        from astrogen.io.atomic import write_json
        from astrogen.io.fits_out import provenance_cards, write_image

        wd = self.ctx.work_dir
        infos = [json.loads(p.read_text()) for p in sorted(wd.glob("part_*_info.json"))]
        if not infos:
            return []
        n_scenes = sum(i["n_scenes"] for i in infos)
        names = list(infos[0]["methods"])
        paths = []
        prim = fits.PrimaryHDU()
        provenance_cards(prim.header, self.ctx.provenance, self.ctx.history)
        hdus = [prim]
        for name in names:
            cats = [Table.read(p, format="ascii.ecsv")
                    for p in sorted(wd.glob(f"part_*_cat_{name}.ecsv"))]
            cat = vstack(cats, metadata_conflicts="silent") if cats else Table()
            h = fits.BinTableHDU(cat, name=name.upper()[:68])
            h.header["METHOD"] = (infos[0]["methods"][name]["method"], "deblending method")
            hdus.append(h)
        paths.append(write_image(self.ctx.output_dir / self.catalog_file, hdus))
        truth_parts = sorted(wd.glob("part_*_truth.ecsv"))
        metrics: dict = {"n_scenes": n_scenes, "max_distance_pix": self.max_distance,
                         "methods": {}}
        if truth_parts:
            truth = vstack([Table.read(p, format="ascii.ecsv") for p in truth_parts],
                           metadata_conflicts="silent")
            th = fits.BinTableHDU(truth, name="TRUTH")
            paths.append(write_image(self.ctx.output_dir / self.truth_file, [prim.copy(), th]))
            for name in names:
                obj = vstack([Table.read(p, format="ascii.ecsv")
                              for p in sorted(wd.glob(f"part_*_obj_{name}.ecsv"))],
                             metadata_conflicts="silent")
                pix_parts = sorted(wd.glob(f"part_*_pix_{name}.npz"))
                pix = None
                if pix_parts:
                    pix = {}
                    for p in pix_parts:
                        with np.load(p) as z:
                            for key in z.files:
                                pix.setdefault(key, []).append(z[key])
                    pix = {k: np.concatenate(v) for k, v in pix.items()}
                secs = sum(i["methods"][name]["seconds"] for i in infos)
                metrics["methods"][name] = {
                    "method": infos[0]["methods"][name]["method"],
                    **summarize(obj, pix, secs, n_scenes)}
            write_json(self.ctx.output_dir / self.metrics_file, metrics)
            paths.append(self.ctx.output_dir / self.metrics_file)
            paths.append(plot_metrics(self.ctx.output_dir / f"{self.figure_prefix}_metrics.png",
                                      metrics["methods"]))
        fig = self._part(0, "figure.npz")
        if fig.is_file():
            with np.load(fig) as z:
                preds = {k.split("__", 1)[1]: z[k] for k in z.files if k.startswith("labels__")}
                unc = {k.split("__", 1)[1]: z[k] for k in z.files if k.startswith("unc__")}
                paths.append(plot_scenes(
                    self.ctx.output_dir / f"{self.figure_prefix}_scenes.png", z["images"],
                    z["truth"] if "truth" in z.files else None, preds, unc,
                    [f"scene {s}" for s in z["scene_ids"]]))
        return paths

"""Scene-deblending stages: multi-band survey scenes with truth, the scene deblender (network,
MC-dropout network or SEP) and a report (images, catalogs, figure).

``scene.generate`` (source -> :class:`~astrogen.physics.survey_scenes.SceneBatch`) renders
scenes (:func:`astrogen.physics.survey_scenes.render_scene`); ``deblend.scene`` (map
``SceneBatch -> SceneBatch``) adds one :class:`~astrogen.deblend.result.SceneResult` per scene
under its stage name, so several methods run on the same scenes; ``deblend.scene_report``
(sink) writes every scene as FITS (one image HDU per band with its TAN WCS, ``BUNIT``,
``FILTER``, noise and PSF, then the noiseless truth per band and the true instance map),
the truth catalog, each method's catalog (units, ra/dec, peaks) and a PNG of the first
scenes (scene, truth, each method's instance map, uncertainty).
"""
from __future__ import annotations

import json
import time

import numpy as np

from astrogen.errors import ConfigError
from astrogen.physics.survey_scenes import SceneBatch
from astrogen.registry import register_stage
from astrogen.stages.base import (Stage, check_choice, check_file_name, check_int,
                                  check_model_file, check_positive)

__all__ = ["SceneGenerate", "DeblendScene", "SceneReport"]


@register_stage("scene.generate")
class SceneGenerate(Stage):
    """Multi-band survey scenes with truth (COSMOS galaxies at the sampler's density, stars).

    Parameters
    ----------
    n_scenes : int
        Number of scenes.
    size : int
        Scene side (pixels).
    bands : list of str
        Band presets of one survey (default LSST g r i z at 10-year depth).
    margin : int
        Pixels around the scene where objects are also placed.
    star_density : float
        Stars per arcmin^2.
    density_scale : float
        Multiplies the galaxy density (1 = the catalog's own counts).
    chunk_size : int
        Scenes per chunk.
    """

    kind = "source"
    output_type = SceneBatch
    units = {"size": "pix", "margin": "pix", "star_density": "1/arcmin^2"}

    def __init__(self, n_scenes: int = 8, size: int = 64, bands: list | None = None,
                 margin: int = 8, star_density: float = 2.0, density_scale: float = 1.0,
                 chunk_size: int = 8):
        from astrogen.physics.survey_scenes import SceneSpec

        self.n_scenes = check_int("n_scenes", n_scenes)
        self.chunk_size = check_int("chunk_size", chunk_size)
        size = check_int("size", size, minimum=8)
        margin = check_int("margin", margin, minimum=0)
        star_density = check_positive("star_density", star_density, allow_zero=True,
                                      unit="1/arcmin^2")
        density_scale = check_positive("density_scale", density_scale, allow_zero=True)
        if bands is None:
            bands = ["lsst_g", "lsst_r", "lsst_i", "lsst_z"]
        if not isinstance(bands, (list, tuple)) or not bands or not all(
                isinstance(b, str) for b in bands):
            raise ConfigError("must be a list of band presets such as [lsst_g, lsst_r].",
                              key="bands", received={"bands": bands})
        self.spec = SceneSpec(size=size, bands=tuple(bands), margin=margin,
                              star_density=star_density, density_scale=density_scale)

    def n_rows(self) -> int:
        return self.n_scenes

    def n_chunks(self) -> int:
        return max(1, -(-self.n_scenes // self.chunk_size))

    def read_chunk(self, index: int) -> SceneBatch:
        from astrogen.physics.survey_scenes import render_scene

        lo = index * self.chunk_size
        hi = min(lo + self.chunk_size, self.n_scenes)
        scenes = []
        for s in range(lo, hi):
            r = render_scene(self.spec, self.ctx.seed, s)
            r["scene_id"] = s
            scenes.append(r)
        return SceneBatch(scenes)


@register_stage("deblend.scene")
class DeblendScene(Stage):
    """Detect and deblend every object of each scene (:func:`astrogen.api.deblend`).

    Parameters
    ----------
    method : {"unet", "prob_unet", "sep"}
        Shipped scene network, its MC-dropout variant with calibrated uncertainty, or SEP.
    model : str
        ``"shipped"`` (the survey's shipped model) or a ``.keras`` path.
    survey : str
        Survey of the shipped model (``lsst``).
    pixel_scale : float, optional
        Pixel scale of the images (arcsec/pixel); default the scenes' own. Checked against
        the model's card (refused outside its tolerance).
    bands : list of str, optional
        Band names of the images; default the scenes' own. Checked against the model's.
    n_samples : int
        MC-dropout samples (``prob_unet``).
    """

    input_types = (SceneBatch,)
    output_type = SceneBatch
    units = {"pixel_scale": "arcsec/pix"}

    def __init__(self, method: str = "unet", model: str = "shipped", survey: str = "lsst",
                 pixel_scale: float | None = None, bands: list | None = None,
                 n_samples: int = 16):
        from astrogen.deblend.survey import SCENE_METHODS

        self.method = check_choice("method", method, SCENE_METHODS)
        if not isinstance(model, str) or not model:
            raise ConfigError("must be 'shipped' or the path of a .keras file.", key="model",
                              received={"model": model})
        if model != "shipped":
            model = str(check_model_file("model", model))
        self.model = model
        self.survey = check_choice("survey", survey, ("lsst",))
        self.pixel_scale = None if pixel_scale is None else check_positive(
            "pixel_scale", pixel_scale, unit="arcsec/pix")
        if bands is not None and (not isinstance(bands, (list, tuple)) or not bands
                                  or not all(isinstance(b, str) for b in bands)):
            raise ConfigError("must be a list of band names.", key="bands",
                              received={"bands": bands})
        self.bands = None if bands is None else list(bands)
        self.n_samples = check_int("n_samples", n_samples)

    def setup(self, ctx) -> None:
        super().setup(ctx)
        if self.method != "sep":
            from astrogen.deblend.survey import check_image_survey, load_scene_model
            from astrogen.tf_quiet import import_tensorflow_quietly

            import_tensorflow_quietly()
            net = load_scene_model(self.model, self.survey)
            if self.pixel_scale is not None and self.bands is not None:
                check_image_survey(net.card, self.pixel_scale, self.bands)

    def process(self, data: SceneBatch) -> SceneBatch:
        from astrogen.deblend.survey import deblend_survey_scene

        out = []
        t0 = time.perf_counter()
        for sc in data.scenes:
            out.append(deblend_survey_scene(
                sc["image"], pixel_scale=self.pixel_scale or sc["pixel_scale"],
                bands=self.bands or sc["bands"], method=self.method, model=self.model,
                survey=self.survey, wcs=sc["wcs"], psf=float(np.mean(sc["psf_fwhm"])),
                noise_sigma=sc["noise_sigma"], n_samples=self.n_samples,
                seed=int(sc["scene_id"]), flux_unit="electron"))
        results = dict(data.results)
        results[self.ctx.name] = {"scenes": out, "seconds": time.perf_counter() - t0,
                              "method": self.method}
        return SceneBatch(data.scenes, results)


@register_stage("deblend.scene_report")
class SceneReport(Stage):
    """Scenes as FITS, truth and measured catalogs, and a PNG.

    Writes ``scene_<id>.fits`` per scene (one HDU per band: the observed image [e-] with its
    WCS, then ``TRUTH_<band>`` noiseless images and ``TRUTH_SEG``, the true instance map),
    ``truth_file`` (true objects: scene_id, x, y [pix], ra, dec [deg], magnitudes, fluxes
    [e-], blendedness), ``catalog_file`` (one table per deblending stage: scene_id, id, x, y,
    peak_x, peak_y [pix], ra, dec [deg], flux_<band>, flux_err_<band> [e-]) and
    ``figure_file`` (first ``n_figures`` scenes: i-band image with a log stretch, true and
    predicted instance maps, uncertainty).

    Parameters
    ----------
    catalog_file, truth_file, figure_file : str
        File names in the output folder.
    n_figures : int
        Scenes shown in the figure.
    """

    kind = "sink"
    input_types = (SceneBatch,)

    def __init__(self, catalog_file: str = "scene_catalog.fits",
                 truth_file: str = "scene_truth.fits", figure_file: str = "scenes.png",
                 n_figures: int = 4):
        self.catalog_file = check_file_name("catalog_file", catalog_file, (".fits",))
        self.truth_file = check_file_name("truth_file", truth_file, (".fits",))
        self.figure_file = check_file_name("figure_file", figure_file, (".png",))
        self.n_figures = check_int("n_figures", n_figures, minimum=0)

    def _part(self, index: int, what: str):
        return self.ctx.work_dir / f"part_{index:06d}_{what}"

    def _scene_fits(self, sc: dict, truth_seg: np.ndarray):
        from astropy.io import fits

        from astrogen.io.fits_out import provenance_cards, write_image

        hdus = []
        wcs_h = sc["wcs"].to_header()
        for b, name in enumerate(sc["bands"]):
            h = wcs_h.copy()
            h["BUNIT"] = ("electron", "pixel unit (sky subtracted)")
            h["FILTER"] = (name, "band (<survey>_<filter>)")
            h["PIXSCALE"] = (float(sc["pixel_scale"]), "[arcsec/pixel]")
            h["NOISE"] = (float(sc["noise_sigma"][b]), "[e-/pixel] background noise sigma")
            h["PSFFWHM"] = (float(sc["psf_fwhm"][b]), "[arcsec] PSF FWHM")
            h["SCENEID"] = (int(sc["scene_id"]), "scene id")
            if b == 0:
                provenance_cards(h, self.ctx.provenance, self.ctx.history)
                hdus.append(fits.PrimaryHDU(sc["image"][b].astype(np.float32), header=h))
            else:
                hdus.append(fits.ImageHDU(sc["image"][b].astype(np.float32), header=h,
                                          name=name.upper()))
        truth = sc["models"].sum(axis=0) if len(sc["models"]) else np.zeros_like(sc["image"])
        for b, name in enumerate(sc["bands"]):
            h = wcs_h.copy()
            h["BUNIT"] = ("electron", "noiseless truth")
            h["FILTER"] = (name, "band")
            hdus.append(fits.ImageHDU(truth[b].astype(np.float32), header=h,
                                      name=f"TRUTH_{name.upper()}"))
        h = wcs_h.copy()
        h["COMMENT"] = "true instance map: 1 + row of the scene's truth rows, 0 background"
        hdus.append(fits.ImageHDU(truth_seg.astype(np.int32), header=h, name="TRUTH_SEG"))
        return write_image(self.ctx.output_dir / f"scene_{int(sc['scene_id']):06d}.fits", hdus)

    def consume(self, index: int, b: SceneBatch) -> None:
        from astropy.table import Table, vstack

        from astrogen.io.atomic import atomic_path, save_npz
        from astrogen.physics.survey_scenes import detection_weights

        truths, segs = [], []
        for sc in b.scenes:
            m = sc["models"]
            if len(m):
                mdet = np.tensordot(m, detection_weights(sc["noise_sigma"]), axes=([1], [0]))
                seg = np.where(mdet.sum(axis=0) > 1.0, 1 + np.argmax(mdet, axis=0), 0)
            else:
                seg = np.zeros(sc["image"].shape[1:], np.int32)
            segs.append(seg)
            self._scene_fits(sc, seg)
            t = Table(sc["truth"], copy=True)
            t.meta = {}
            t["scene_id"] = np.full(len(t), int(sc["scene_id"]), np.int64)
            if len(t):
                ra, dec = sc["wcs"].all_pix2world(np.asarray(t["x"]), np.asarray(t["y"]), 0)
            else:
                ra = dec = np.zeros(0)
            t["ra"], t["dec"] = ra, dec
            t["ra"].unit = t["dec"].unit = "deg"
            t["x"].unit = t["y"].unit = "pix"
            for c in t.colnames:
                if c.startswith("flux_"):
                    t[c].unit = "electron"
            truths.append(t)
        if truths:
            with atomic_path(self._part(index, "truth.ecsv")) as tmp:
                vstack(truths, metadata_conflicts="silent").write(tmp, format="ascii.ecsv",
                                                                  overwrite=True)
        info = {"n_scenes": len(b), "methods": {}}
        for name, res in b.results.items():
            cats = []
            for sc, r in zip(b.scenes, res["scenes"]):
                c = r.catalog.copy()
                c.meta = {}
                c["scene_id"] = np.full(len(c), int(sc["scene_id"]), np.int64)
                cats.append(c)
            if cats:
                with atomic_path(self._part(index, f"cat_{name}.ecsv")) as tmp:
                    vstack(cats, metadata_conflicts="silent").write(tmp, format="ascii.ecsv",
                                                                    overwrite=True)
            info["methods"][name] = {"method": res["method"], "seconds": res["seconds"]}
        if self.n_figures and len(b):
            # every chunk keeps its first n_figures scenes; finalize takes the first
            # n_figures over the chunks in order (chunks may end before n_figures scenes)
            k = min(self.n_figures, len(b))
            bi = [i for i, n in enumerate(b.scenes[0]["bands"]) if n.endswith("_i")]
            bi = bi[0] if bi else 0
            arrays = {"images": np.stack([sc["image"][bi] for sc in b.scenes[:k]]),
                      "truth": np.stack(segs[:k]),
                      "scene_ids": np.array([sc["scene_id"] for sc in b.scenes[:k]])}
            for name, res in b.results.items():
                arrays[f"labels__{name}"] = np.stack([r.segmentation
                                                      for r in res["scenes"][:k]])
                if res["scenes"][0].uncertainty is not None:
                    arrays[f"unc__{name}"] = np.stack([r.uncertainty
                                                       for r in res["scenes"][:k]])
            save_npz(self._part(index, "figure.npz"), **arrays)
        with atomic_path(self._part(index, "info.json")) as tmp:
            tmp.write_text(json.dumps(info))

    def finalize(self):
        from astropy.io import fits
        from astropy.table import Table, vstack

        from astrogen.deblend.figures import plot_scenes
        from astrogen.io.fits_out import provenance_cards, table_hdu, write_image

        wd = self.ctx.work_dir
        infos = [json.loads(p.read_text()) for p in sorted(wd.glob("part_*_info.json"))]
        if not infos:
            return []
        paths = []
        prim = fits.PrimaryHDU()
        provenance_cards(prim.header, self.ctx.provenance, self.ctx.history)
        tparts = sorted(wd.glob("part_*_truth.ecsv"))
        if tparts:
            truth = vstack([Table.read(p, format="ascii.ecsv") for p in tparts],
                           metadata_conflicts="silent")
            paths.append(write_image(self.ctx.output_dir / self.truth_file,
                                     [prim.copy(), table_hdu(truth, "TRUTH")]))
        hdus = [prim]
        for name, meta in infos[0]["methods"].items():
            parts = sorted(wd.glob(f"part_*_cat_{name}.ecsv"))
            cat = vstack([Table.read(p, format="ascii.ecsv") for p in parts],
                         metadata_conflicts="silent") if parts else Table()
            h = table_hdu(cat, name.upper()[:68])
            h.header["METHOD"] = (meta["method"], "deblending method")
            h.header["SECONDS"] = (sum(i["methods"][name]["seconds"] for i in infos),
                                   "[s] wall time of the stage")
            hdus.append(h)
        paths.append(write_image(self.ctx.output_dir / self.catalog_file, hdus))
        figs = sorted(wd.glob("part_*_figure.npz"))
        if figs and self.n_figures:
            parts = []
            for p in figs:
                with np.load(p) as z:
                    parts.append({k: z[k] for k in z.files})
            keys = parts[0].keys()
            z = {k: np.concatenate([q[k] for q in parts if k in q])[:self.n_figures]
                 for k in keys}
            preds = {k.split("__", 1)[1]: z[k] for k in keys if k.startswith("labels__")}
            unc = {k.split("__", 1)[1]: z[k] for k in keys if k.startswith("unc__")}
            paths.append(plot_scenes(self.ctx.output_dir / self.figure_file, z["images"],
                                     z["truth"], preds, unc,
                                     [f"scene {s}" for s in z["scene_ids"]],
                                     uncertainty_max=1.0))
        paths += sorted(self.ctx.output_dir.glob("scene_[0-9]*.fits"))
        return paths

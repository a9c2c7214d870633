"""BlendingToolKit blends deblended by the package's scene deblenders, as a pipeline source.

``deblend.btk`` (source -> Table): each chunk is one BTK ``BlendBatch`` drawn by BTK's own
``CatsimGenerator`` (``DefaultSampling`` from a CatSim catalog file, a surveycodex survey
through ``btk.survey.get_surveys``), read by :func:`astrogen.deblend.btk.read_blend`,
deblended by a scene deblender and matched to BTK's truth. BTK is imported in ``setup``
(``pip install 'astrogen[btk]'``), so the stage is listed and validated without it.
"""
from __future__ import annotations

import numpy as np
from astropy import units as u
from astropy.table import Table

from astrogen.errors import ConfigError
from astrogen.registry import register_stage
from astrogen.stages.base import Stage, check_choice, check_int, check_positive

__all__ = ["DeblendBTK", "METHODS"]

#: scene deblenders by name: module path and function (imported when the stage runs)
METHODS = {
    "sep": ("astrogen.deblend.sep_scene", "sep_scene", {}),
    "scarlet2": ("astrogen.deblend.external", "scarlet2_scene", {}),
    "unet": ("astrogen.deblend.btk", "network_scene", {"method": "unet"}),
    "prob_unet": ("astrogen.deblend.btk", "network_scene", {"method": "prob_unet"}),
}


def _method(name: str):
    import importlib

    from functools import partial

    module, attr, kwargs = METHODS[name]
    fn = getattr(importlib.import_module(module), attr)
    return partial(fn, **kwargs) if kwargs else fn


@register_stage("deblend.btk")
class DeblendBTK(Stage):
    """BTK blend batches (CatSim galaxies, a survey's bands) deblended and matched to truth.

    Every output row is a detected object (``detected``) or a true object that no detection
    matched; matched rows carry both. Columns: ``blend`` (global blend index), ``id``,
    ``x``, ``y`` (pix, 0-based), ``ra``, ``dec`` (deg offsets from the stamp centre, BTK's
    WCS), ``flux_<band>`` and ``flux_err_<band>`` (electrons), ``detected``, ``matched``,
    ``true_index``, ``true_x``, ``true_y``, ``true_flux_<band>`` (BTK's noiseless isolated
    image summed, electrons), ``blendedness``.

    Parameters
    ----------
    catalog_file : str
        CatSim catalog (FITS or ASCII) read by BTK (``ra``, ``dec``, ``<b>_ab``, bulge and
        disk columns), e.g. ``examples/catsim/catsim_example.fits``.
    n_batches, batch_size : int
        Number of chunks and blends per chunk.
    min_objects, max_objects : int
        Galaxies per blend (BTK ``DefaultSampling``).
    stamp_size : float
        Stamp side (arcsec).
    max_shift : float
        Largest offset of a galaxy from the stamp centre (arcsec).
    max_mag : float
        Faintest ``mag_name`` magnitude sampled.
    mag_name : str
        Catalog magnitude column of the cut (BTK's default ``i_ab``).
    survey : str
        surveycodex survey name (``LSST``, ``HSC``, ...).
    method : {"sep", "scarlet2"}
        Scene deblender (:data:`METHODS`): ``unet`` / ``prob_unet`` the shipped scene
        network (:func:`astrogen.deblend.btk.network_scene`: run on the model's bands, every
        other band measured with its light fractions), ``sep`` the SEP baseline, ``scarlet2``.
    max_sources : int
        Most objects a deblender may return per blend (more raises, as in BTK).
    match_radius : float, optional
        Matching radius (pix); default one PSF FWHM of the survey's ``i`` band (or its
        first band).
    add_noise : {"all", "background", "galaxy", "none"}
        BTK's noise option.
    """

    kind = "source"
    output_type = Table
    units = {"stamp_size": "arcsec", "max_shift": "arcsec", "max_mag": "mag",
             "match_radius": "pix"}

    def __init__(self, catalog_file: str, n_batches: int = 1, batch_size: int = 8,
                 min_objects: int = 1, max_objects: int = 5, stamp_size: float = 24.0,
                 max_shift: float = 4.0, max_mag: float = 25.3, mag_name: str = "i_ab",
                 survey: str = "LSST", method: str = "sep", max_sources: int = 20,
                 match_radius: float | None = None, add_noise: str = "all"):
        if not isinstance(catalog_file, str) or not catalog_file:
            raise ConfigError("must be the path of a CatSim catalog file.", key="catalog_file",
                              received={"catalog_file": catalog_file})
        self.catalog_file = catalog_file
        self.n_batches = check_int("n_batches", n_batches)
        self.batch_size = check_int("batch_size", batch_size)
        self.min_objects = check_int("min_objects", min_objects)
        self.max_objects = check_int("max_objects", max_objects)
        if self.max_objects < self.min_objects:
            raise ConfigError("must be >= min_objects.", key="max_objects",
                              received={"min_objects": min_objects, "max_objects": max_objects})
        self.stamp_size = check_positive("stamp_size", stamp_size, unit="arcsec")
        self.max_shift = check_positive("max_shift", max_shift, unit="arcsec")
        if self.max_shift >= self.stamp_size / 2:
            raise ConfigError("must be smaller than half the stamp.", key="max_shift",
                              received={"max_shift": max_shift, "stamp_size": stamp_size})
        try:
            self.max_mag = float(max_mag)
        except (TypeError, ValueError):
            raise ConfigError("must be a magnitude.", key="max_mag",
                              received={"max_mag": max_mag}) from None
        if not isinstance(mag_name, str):
            raise ConfigError("must be a column name.", key="mag_name",
                              received={"mag_name": mag_name})
        self.mag_name = mag_name
        if not isinstance(survey, str):
            raise ConfigError("must be a surveycodex survey name.", key="survey",
                              received={"survey": survey})
        import surveycodex

        known = surveycodex.available_surveys
        known = list(known() if callable(known) else known)
        if survey not in known:
            raise ConfigError(f"is not a surveycodex survey; known: {', '.join(known)}.",
                              key="survey", received={"survey": survey})
        self.survey_name = survey
        self.method = check_choice("method", method, tuple(METHODS))
        self.uses_tensorflow = self.method in ("unet", "prob_unet")
        self.max_sources = check_int("max_sources", max_sources)
        self.match_radius = (None if match_radius is None
                             else check_positive("match_radius", match_radius, unit="pix"))
        self.add_noise = check_choice("add_noise", add_noise,
                                      ("all", "background", "galaxy", "none"))
        self._catalog = None

    def n_chunks(self) -> int:
        return self.n_batches

    def setup(self, ctx) -> None:
        from astrogen.deblend import btk as ab

        super().setup(ctx)
        self._btk = ab.import_btk()
        import btk.survey

        self._ab = ab
        self._survey = btk.survey.get_surveys(self.survey_name)
        self._catalog = ab.catsim_catalog(self.catalog_file)
        if self.mag_name not in self._catalog.table.colnames:
            raise ConfigError(f"is not a column of {self.catalog_file}.", key="mag_name",
                              received={"mag_name": self.mag_name})
        self._fn = _method(self.method)
        if self.match_radius is None:
            s = self._survey
            band = "i" if "i" in s.available_filters else s.available_filters[0]
            self.match_radius = float(s.get_filter(band).psf_fwhm.to_value("arcsec")
                                      / s.pixel_scale.to_value("arcsec"))

    def _batch(self, index: int):
        import btk.draw_blends
        import btk.sampling_functions

        from astrogen.seeds import derive_seed

        seed = derive_seed(self.ctx.seed, "btk", index) % (2**32)
        sampling = btk.sampling_functions.DefaultSampling(
            stamp_size=self.stamp_size, max_number=self.max_objects,
            min_number=self.min_objects, max_shift=self.max_shift, seed=seed,
            max_mag=self.max_mag, mag_name=self.mag_name)
        gen = btk.draw_blends.CatsimGenerator(self._catalog, sampling, self._survey,
                                              batch_size=self.batch_size, njobs=1,
                                              add_noise=self.add_noise, seed=seed)
        return next(gen)

    def read_chunk(self, index: int) -> Table:
        from astrogen.deblend.metrics import match_positions

        ab = self._ab
        batch = self._batch(index)
        bands = ab.survey_bands(batch.survey)
        rows = []
        for i, res in enumerate(ab.deblend_blend_batch(batch, self._fn)):
            if res.n_objects > self.max_sources:
                raise ConfigError(f"the deblender found {res.n_objects} objects in one blend.",
                                  key="max_sources", received={"max_sources": self.max_sources})
            truth = ab.truth_table(batch, i)
            cat = res.catalog
            t_xy = np.column_stack([truth["x"], truth["y"]]) if len(truth) else np.zeros((0, 2))
            p_xy = (np.column_stack([np.asarray(cat["x"], float), np.asarray(cat["y"], float)])
                    if len(cat) else np.zeros((0, 2)))
            m = match_positions(t_xy, p_xy, self.match_radius)
            blend = index * self.batch_size + i
            nan = float("nan")
            for k in range(len(cat)):
                t = int(m["true_of_pred"][k])
                row = {"blend": blend, "id": int(cat["id"][k]), "x": float(cat["x"][k]),
                       "y": float(cat["y"][k]), "ra": float(cat["ra"][k]),
                       "dec": float(cat["dec"][k]), "detected": True, "matched": t >= 0,
                       "true_index": t, "true_x": float(truth["x"][t]) if t >= 0 else nan,
                       "true_y": float(truth["y"][t]) if t >= 0 else nan,
                       "blendedness": float(truth["blendedness"][t]) if t >= 0 else nan}
                for b in bands:
                    row[f"flux_{b}"] = float(cat[f"flux_{b}"][k])
                    row[f"flux_err_{b}"] = float(cat[f"flux_err_{b}"][k])
                    row[f"true_flux_{b}"] = float(truth[f"flux_{b}"][t]) if t >= 0 else nan
                rows.append(row)
            for t in np.flatnonzero(m["pred_of_true"] < 0):
                row = {"blend": blend, "id": 0, "x": nan, "y": nan, "ra": nan, "dec": nan,
                       "detected": False, "matched": False, "true_index": int(t),
                       "true_x": float(truth["x"][t]), "true_y": float(truth["y"][t]),
                       "blendedness": float(truth["blendedness"][t])}
                for b in bands:
                    row[f"flux_{b}"] = row[f"flux_err_{b}"] = nan
                    row[f"true_flux_{b}"] = float(truth[f"flux_{b}"][t])
                rows.append(row)
        out = Table(rows=rows) if rows else Table(names=("blend",), dtype=(np.int64,))
        for col in ("x", "y", "true_x", "true_y"):
            if col in out.colnames:
                out[col].unit = u.pix
        for col in ("ra", "dec"):
            if col in out.colnames:
                out[col].unit = u.deg
        for col in out.colnames:  # 'electron' is no FITS unit: named in the description
            if "flux" in col:
                out[col].description = "[electron] " + (
                    "BTK noiseless isolated image summed" if col.startswith("true_") else
                    f"{self.method} flux (1-sigma error)" if "_err_" in col else
                    f"{self.method} flux")
        out.meta.update({"method": self.method, "survey": self.survey_name,
                         "match_radius_pix": float(self.match_radius),
                         "btk_version": getattr(self._btk, "__version__", "?")})
        return out

"""GalSim stages: parametric rendering, observation by a survey, scene composition."""
from __future__ import annotations

import math

import numpy as np
from astropy.io import fits
from astropy.table import Table

from astrogen.batch import COSMOS_ZERO_POINT, StampBatch
from astrogen.catalog.columns import require_columns
from astrogen.errors import ConfigError
from astrogen.io.fits_out import set_card
from astrogen.physics.psf import build_psf, describe_psf, psf_fwhm
from astrogen.physics.render import PROFILES, draw_intrinsic
from astrogen.physics.scene import Field, SceneCanvas
from astrogen.physics.surveys import get_survey
from astrogen.registry import register_stage
from astrogen.seeds import derive_seed, galsim_seed, row_seeds
from astrogen.stages.base import Stage, check_choice, check_file_name, check_int, check_positive

__all__ = ["ParametricGalaxies", "Observe", "Scene"]


@register_stage("galsim.parametric")
class ParametricGalaxies(Stage):
    """Noiseless, PSF-free Sersic or bulge+disk stamps drawn by GalSim from catalog rows.

    Parameters
    ----------
    profile : {"sersic", "bulge_disk"}
        Light profile (``sersic_n`` or ``bulge_frac`` column).
    stamp_size : int
        Stamp side in pixels (even).
    pixel_scale : float
        arcsec / pixel (0.03, the COSMOS scale, by default).
    zero_point : float
        AB magnitude of 1 count/s in the stamps (25.94: HST F814W, the COSMOS convention).
    """

    input_types = (Table,)
    output_type = StampBatch
    units = {"stamp_size": "pix", "pixel_scale": "arcsec/pixel", "zero_point": "mag (AB)"}
    provides_columns = ("stamp_flux_frac",)

    def required_columns(self):  # checked by validate through the graph
        shape = "sersic_n" if self.profile == "sersic" else "bulge_frac"
        return ("mag", "hlr", "q", "beta", shape)

    def __init__(self, profile: str = "sersic", stamp_size: int = 64, pixel_scale: float = 0.03,
                 zero_point: float = COSMOS_ZERO_POINT):
        self.profile = check_choice("profile", profile, PROFILES)
        self.stamp_size = check_int("stamp_size", stamp_size, minimum=8)
        if self.stamp_size % 2:
            raise ConfigError("must be even.", key="stamp_size", received={"stamp_size": stamp_size})
        self.pixel_scale = check_positive("pixel_scale", pixel_scale, unit="arcsec/pixel")
        self.zero_point = float(zero_point)

    def process(self, table: Table) -> StampBatch:
        need = ["mag", "hlr", "q", "beta", "sersic_n" if self.profile == "sersic" else "bulge_frac"]
        require_columns(table, need, f"galsim.parametric (profile: {self.profile})")
        flux = 10.0 ** (-0.4 * (np.asarray(table["mag"], float) - self.zero_point))
        images = draw_intrinsic(table, flux, self.stamp_size, self.pixel_scale, self.profile)
        cat = table.copy(copy_data=False)
        cat["stamp_flux_frac"] = images.reshape(len(table), -1).sum(axis=1) / flux
        cat["stamp_flux_frac"].description = "fraction of the profile's flux inside the stamp"
        return StampBatch(images=images, pixel_scale=self.pixel_scale, catalog=cat,
                          flux_unit="count/s", zero_point=self.zero_point, psf=None,
                          band="F814W", meta={"generator": f"galsim.parametric/{self.profile}"})


class _SurveyStage(Stage):
    """Shared set-up of stages that observe PSF-free stamps with a survey."""

    units = {"stamp_size": "pix (survey pixels)"}
    provides_columns = ()

    def required_columns(self):  # checked by validate through the graph
        return ("mag",) if self.flux_from == "catalog" else ()

    def __init__(self, survey="lsst_i", stamp_size: int | None = None, add_noise: bool = True,
                 flux_from: str = "catalog", psf: dict | None = None, draw_method: str = "auto"):
        self.survey = get_survey(survey)
        self.psf_spec = dict(psf) if psf is not None else dict(self.survey.psf)
        self.psf = build_psf(self.psf_spec, key="psf" if psf is not None else "survey.psf")
        self.stamp_size = None if stamp_size is None else check_int("stamp_size", stamp_size, 4)
        self.add_noise = bool(add_noise)
        self.flux_from = check_choice("flux_from", flux_from, ("catalog", "stamp"))
        self.draw_method = check_choice("draw_method", draw_method,
                                        ("auto", "no_pixel", "fft", "real_space"))
        self._fwhm = None

    def _fluxes(self, batch: StampBatch) -> np.ndarray:
        """Electrons per object in the survey exposure."""
        if self.flux_from == "catalog":
            require_columns(batch.catalog, ["mag"], f"{self.type_name} (flux_from: catalog)")
            return self.survey.electrons(np.asarray(batch.catalog["mag"], float))
        return self.survey.electrons(batch.magnitudes())

    def _out_size(self, batch: StampBatch) -> int:
        if self.stamp_size is not None:
            return self.stamp_size
        if self._fwhm is None:
            self._fwhm = psf_fwhm(self.psf)
        extent = batch.images.shape[-1] * batch.pixel_scale + 4 * self._fwhm
        n = int(math.ceil(extent / self.survey.pixel_scale))
        return n + (n % 2)


@register_stage("observe")
class Observe(_SurveyStage):
    """Observe PSF-free stamps with a survey: PSF, pixel, flux calibration, sky and read noise.

    Parameters
    ----------
    survey : str or dict
        Preset (``hst_cosmos``, ``lsst_i``, ``euclid_vis``) or ``{base: preset, field: value}``.
    stamp_size : int, optional
        Output stamp side in survey pixels (default: covers the input stamp + 4 PSF FWHM).
    add_noise : bool
        Add sky-subtracted Poisson noise and read noise.
    flux_from : {"catalog", "stamp"}
        Total flux from the catalog magnitude, or from the stamp's own flux and zero point.
    psf : dict, optional
        GalSim config of a PSF replacing the survey's.
    draw_method : str
        GalSim ``drawImage`` method (``auto`` integrates over the survey pixel).
    """

    input_types = (StampBatch,)
    output_type = StampBatch

    def process(self, batch: StampBatch) -> StampBatch:
        from astrogen.physics.observe import add_noise, draw_observed

        if batch.psf is not None:
            raise ConfigError("observe needs PSF-free stamps; its input already has a PSF.",
                              key="inputs", received={"psf": batch.psf})
        flux = self._fluxes(batch)
        size = self._out_size(batch)
        images = draw_observed(batch.images, batch.pixel_scale, flux, self.psf,
                               self.survey.pixel_scale, size, self.draw_method)
        sigma = None
        if self.add_noise:
            seeds = row_seeds(self.ctx.seed, np.asarray(batch.catalog["row_id"]))
            for i in range(len(images)):
                images[i] = add_noise(images[i], galsim_seed(seeds[i]), self.survey.sky_level,
                                      self.survey.read_noise, self.survey.gain)
            sigma = np.full(len(images), self.survey.noise_sigma)
        cat = batch.catalog.copy(copy_data=False)
        col = f"flux_{self.survey.name}"
        cat[col] = flux
        cat[col].description = f"[electron] true total flux in the {self.survey.name} exposure"
        return StampBatch(images=images, pixel_scale=self.survey.pixel_scale, catalog=cat,
                          flux_unit="electron",
                          zero_point=self.survey.zero_point + 2.5 * np.log10(self.survey.exposure_time),
                          psf=describe_psf(self.psf_spec), band=self.survey.band,
                          noise_sigma=sigma, meta={**batch.meta, "survey": self.survey.name})


@register_stage("scene")
class Scene(_SurveyStage):
    """Place PSF-free stamps at their catalog positions in one survey image with a WCS.

    Needs ``x``, ``y`` from a ``catalog.positions`` stage upstream. Writes ``file_name``
    (primary HDU: the image with noise, ``NOISELESS`` HDU: the noiseless image, both in e-)
    and a PNG preview.

    Parameters
    ----------
    survey, stamp_size, add_noise, flux_from, psf, draw_method
        As for ``observe``; the survey's pixel scale must be the positions' scale.
    file_name : str
        FITS file name in the output folder.
    preview : str or None
        PNG file name in the output folder (``null``: none).
    """

    kind = "sink"
    input_types = (StampBatch,)
    units = {"stamp_size": "pix (survey pixels)"}

    def required_columns(self):  # checked by validate through the graph
        return ("x", "y") + (("mag",) if self.flux_from == "catalog" else ())

    def __init__(self, survey="lsst_i", stamp_size: int | None = None, add_noise: bool = True,
                 flux_from: str = "catalog", psf: dict | None = None, draw_method: str = "auto",
                 file_name: str = "scene.fits", preview: str | None = "scene.png"):
        super().__init__(survey, stamp_size, add_noise, flux_from, psf, draw_method)
        self.file_name = check_file_name("file_name", file_name, (".fits",))
        self.preview = None if preview is None else check_file_name("preview", preview, (".png",))
        self.canvas: SceneCanvas | None = None
        self.n_objects = 0

    def consume(self, index: int, batch: StampBatch) -> None:
        from astrogen.physics.observe import observed_profile

        require_columns(batch.catalog, ["x", "y"], "scene (add a catalog.positions stage)")
        field = Field.from_meta(batch.catalog.meta.get("scene", {}))
        xs, ys = np.asarray(batch.catalog["x"], float), np.asarray(batch.catalog["y"], float)
        if abs(field.pixel_scale - self.survey.pixel_scale) > 1e-12:
            # Positions made for another survey: same sky footprint and centre, this survey's
            # pixels; objects placed from their ra/dec through this scene's TAN WCS.
            if not {"ra", "dec"} <= set(batch.catalog.colnames):
                raise ConfigError("the positions were made for another pixel scale than this "
                                  "scene's survey, and the rows have no ra/dec to re-project.",
                                  key="survey",
                                  received={"positions_pixel_scale": field.pixel_scale,
                                            "survey_pixel_scale": self.survey.pixel_scale})
            ratio = field.pixel_scale / self.survey.pixel_scale
            field = Field(nx=int(round(field.nx * ratio)), ny=int(round(field.ny * ratio)),
                          pixel_scale=self.survey.pixel_scale, ra=field.ra, dec=field.dec)
            xs, ys = field.wcs().all_world2pix(np.asarray(batch.catalog["ra"], float),
                                               np.asarray(batch.catalog["dec"], float), 1)
        if self.canvas is None:
            self.canvas = SceneCanvas(field)
        flux = self._fluxes(batch)
        size = self._out_size(batch)
        for i in range(len(batch)):
            prof = observed_profile(batch.images[i], batch.pixel_scale, float(flux[i]), self.psf)
            if prof is not None:
                self.canvas.add(prof, float(xs[i]), float(ys[i]), size, self.draw_method)
        self.n_objects += len(batch)

    def get_state(self):
        if self.canvas is None:
            return None
        return {"image": self.canvas.image.array, "field": np.array(
            [self.canvas.field.nx, self.canvas.field.ny, self.canvas.field.pixel_scale,
             self.canvas.field.ra, self.canvas.field.dec]), "n_objects": np.array(self.n_objects)}

    def set_state(self, state) -> None:
        nx, ny, ps, ra, dec = state["field"]
        self.canvas = SceneCanvas(Field(int(nx), int(ny), float(ps), float(ra), float(dec)))
        self.canvas.image.array[:] = state["image"]
        self.n_objects = int(state["n_objects"])

    def finalize(self):
        from astrogen.io.fits_out import provenance_cards, write_image
        from astrogen.io.preview import save_image
        from astrogen.physics.observe import add_noise

        if self.canvas is None:
            return []
        clean = self.canvas.image.array.copy()
        noisy = clean
        if self.add_noise:
            noisy = add_noise(clean, galsim_seed(derive_seed(self.ctx.seed, "scene-noise")),
                              self.survey.sky_level, self.survey.read_noise, self.survey.gain)
        s = self.survey
        header = self.canvas.field.wcs().to_header()
        header["BUNIT"] = ("electron", "pixel unit (sky subtracted)")
        header["FILTER"] = (s.band, "band")
        header["SURVEY"] = (s.name, "astrogen survey preset")
        header["PIXSCALE"] = (s.pixel_scale, "[arcsec/pixel]")
        header["EXPTIME"] = (s.exposure_time, "[s] exposure time")
        header["MAGZERO"] = (s.zero_point + 2.5 * np.log10(s.exposure_time),
                             "[mag] AB magnitude of 1 e- in this image")
        header["SKYLEVEL"] = (s.sky_level, "[e-/pixel] subtracted sky level")
        header["NOISE"] = (s.noise_sigma if self.add_noise else 0.0,
                           "[e-/pixel] background noise sigma")
        set_card(header, "PSF", describe_psf(self.psf_spec)[:68], "GalSim PSF")
        header["NOBJECTS"] = (self.n_objects, "galaxies drawn")
        provenance_cards(header, self.ctx.provenance, self.ctx.history)
        prim = fits.PrimaryHDU(noisy.astype(np.float32), header=header)
        truth = fits.ImageHDU(clean.astype(np.float32), header=header.copy(), name="NOISELESS")
        paths = [write_image(self.ctx.output_dir / self.file_name, [prim, truth])]
        if self.preview:
            paths.append(save_image(self.ctx.output_dir / self.preview, noisy,
                                    title=f"{self.ctx.name}: {self.n_objects} galaxies, {s.name}"))
        return paths


"""GalSim stages: parametric rendering, observation by a survey, scene composition."""
from __future__ import annotations

import logging

import numpy as np
from astropy.io import fits
from astropy.table import Table

from astrogen.batch import COSMOS_ZERO_POINT, MultiBandStamps, StampBatch
from astrogen.constants import COSMOS_PIXEL_SCALE, NANOMAGGY_ZERO_POINT
from astrogen.catalog.columns import require_columns
from astrogen.errors import ConfigError
from astrogen.io.fits_out import set_card
from astrogen.physics.lensing import lensing_columns, magnification
from astrogen.physics.photometry import flux_from_mag, image_zero_point
from astrogen.physics.psf import build_psf, describe_psf
from astrogen.physics.render import MIN_FLUX_FRAC, PROFILES, draw_intrinsic, galaxy_profile
from astrogen.physics.scene import Field, SceneCanvas
from astrogen.physics.surveys import SURVEYS, get_bands
from astrogen.registry import register_stage
from astrogen.seeds import derive_seed, galsim_seed, row_seeds
from astrogen.stages.base import Stage, check_choice, check_file_name, check_int, check_positive

__all__ = ["ParametricGalaxies", "Observe", "Scene", "observed_object"]


def _log(stage) -> logging.Logger:
    return stage.ctx.log if stage.ctx is not None else logging.getLogger("astrogen")


def _stars(table: Table) -> np.ndarray:
    """Boolean ``is_star`` of each row (all False when the column is absent)."""
    if "is_star" not in table.colnames:
        return np.zeros(len(table), bool)
    return np.asarray(table["is_star"], bool)


@register_stage("galsim.parametric")
class ParametricGalaxies(Stage):
    """Noiseless, PSF-free Sersic or bulge+disk stamps drawn by GalSim from catalog rows, each
    in a stamp sized to hold at least 99.5 % of its light.

    Each stamp's side comes from GalSim (``getGoodImageSize``, 99.5 % of the light), checked
    against an analytic lower bound of the light inside the stamp; a galaxy that would need
    more than ``max_stamp_size`` pixels is drawn with a coarser pixel (never cut). The batch
    also carries the exact GalSim profiles, which ``observe`` and ``scene`` draw. Rows with
    ``is_star`` True get a one-pixel point-source stamp. Adds the columns ``stamp_size``
    [pix], ``stamp_pixel_scale`` [arcsec/pix], ``stamp_flux_frac`` (lower bound of the light
    inside the stamp) and ``flag_truncated`` (``stamp_flux_frac < 0.995``).

    Parameters
    ----------
    profile : {"sersic", "bulge_disk"}
        Light profile (``sersic_n`` or ``bulge_frac`` column; bulge+disk uses
        ``hlr_bulge``, ``hlr_disk``, ``q_bulge``, ``q_disk``, ``beta_bulge``, ``beta_disk``
        where present).
    stamp_size : int, optional
        Fixed stamp side in pixels (even): profiles larger than it are cut, flagged and
        logged. Default: sized per profile.
    pixel_scale : float
        arcsec / pixel (0.03, the COSMOS scale, by default; the finest scale used).
    zero_point : float
        AB magnitude of 1 count/s in the stamps (25.94: HST F814W, the COSMOS convention).
    max_stamp_size : int
        Largest stamp side in pixels when sizing per profile.
    resample_large : bool
        Beyond ``max_stamp_size``: coarser pixel (True) or a cut, flagged stamp (False).
    """

    input_types = (Table,)
    output_type = StampBatch
    units = {"stamp_size": "pix", "pixel_scale": "arcsec/pixel", "zero_point": "mag (AB)",
             "max_stamp_size": "pix"}
    provides_columns = ("stamp_flux_frac", "stamp_size", "stamp_pixel_scale", "flag_truncated")

    def required_columns(self):  # checked by validate through the graph
        shape = "sersic_n" if self.profile == "sersic" else "bulge_frac"
        return ("mag", "hlr", "q", "beta", shape)

    def __init__(self, profile: str = "sersic", stamp_size: int | None = None,
                 pixel_scale: float = COSMOS_PIXEL_SCALE, zero_point: float = COSMOS_ZERO_POINT,
                 max_stamp_size: int = 512, resample_large: bool = True):
        self.profile = check_choice("profile", profile, PROFILES)
        self.stamp_size = None if stamp_size is None else check_int("stamp_size", stamp_size,
                                                                    minimum=8)
        if self.stamp_size is not None and self.stamp_size % 2:
            raise ConfigError("must be even.", key="stamp_size", received={"stamp_size": stamp_size})
        self.pixel_scale = check_positive("pixel_scale", pixel_scale, unit="arcsec/pixel")
        self.zero_point = float(zero_point)
        self.max_stamp_size = check_int("max_stamp_size", max_stamp_size, minimum=16)
        self.resample_large = bool(resample_large)

    def process(self, table: Table) -> StampBatch:
        need = ["mag"]
        stars = _stars(table)
        if not stars.all():
            need += ["hlr", "q", "beta", "sersic_n" if self.profile == "sersic" else "bulge_frac"]
        require_columns(table, need, f"galsim.parametric (profile: {self.profile})")
        flux = flux_from_mag(np.asarray(table["mag"], float), self.zero_point)
        stamps, scales, fracs, profiles = draw_intrinsic(
            table, flux, self.stamp_size, self.pixel_scale, self.profile,
            self.max_stamp_size, self.resample_large)
        cat = table.copy(copy_data=False)
        cat["stamp_size"] = np.array([st.shape[0] for st in stamps], np.int32)
        cat["stamp_size"].unit = "pix"
        cat["stamp_pixel_scale"] = scales
        cat["stamp_pixel_scale"].unit = "arcsec/pix"
        cat["stamp_flux_frac"] = fracs
        cat["stamp_flux_frac"].description = ("lower bound of the fraction of the profile's "
                                              "light inside the stamp (analytic)")
        cat["flag_truncated"] = fracs < MIN_FLUX_FRAC
        cat["flag_truncated"].description = "stamp holds < 99.5 % of the light"
        n_cut = int(cat["flag_truncated"].sum())
        if n_cut:
            _log(self).warning("galsim.parametric: %d of %d profiles do not fit their stamp "
                               "(stamp_size=%s, max_stamp_size=%d; min light inside %.3f); "
                               "flagged in 'flag_truncated'.", n_cut, len(table),
                               self.stamp_size, self.max_stamp_size, float(fracs.min()))
        uniform = bool(np.all(scales == scales[0])) if len(scales) else True
        return StampBatch(images=stamps, pixel_scale=float(scales[0]) if uniform and len(scales)
                          else (scales if len(scales) else self.pixel_scale),
                          catalog=cat, flux_unit="count/s", zero_point=self.zero_point,
                          psf=None, band="hst_f814w", profiles=profiles,
                          meta={"generator": f"galsim.parametric/{self.profile}",
                                "parametric_profile": self.profile})


def _row_profiles(batch: StampBatch, band: str | None, rows=None):
    """Exact PSF-free profiles of a batch for ``band`` (None where there is none).

    A ``galsim.parametric`` batch's profiles are rebuilt here from its catalog rows (flux 1;
    the caller sets the band's flux), with ``bulge_frac_<band>`` for a bulge+disk with
    per-band colours: rebuilding in this process reuses its per-index Sersic tables, which
    profiles unpickled from another worker would not. Other batches' own profiles are used.
    ``rows``: indices wanted (default all); the list is aligned with them.
    """
    rows = range(len(batch)) if rows is None else rows
    kind = batch.meta.get("parametric_profile")
    if kind is None:
        return None if batch.profiles is None else [batch.profiles[i] for i in rows]
    stars = _stars(batch.catalog)
    return [None if stars[i] else galaxy_profile(batch.catalog[i], 1.0, kind, band)
            for i in rows]


class _SurveyStage(Stage):
    """Shared set-up of stages that observe PSF-free stamps with a survey (one or more bands)."""

    units = {"stamp_size": "pix (survey pixels)", "max_stamp_size": "pix (survey pixels)"}
    provides_columns = ()
    flux_key = "flux_from"

    def required_columns(self):  # checked by validate through the graph
        if self.flux_from != "catalog":
            return ()
        if self.multi:  # every band's own magnitude
            return tuple(s.mag_column for s in self.bands)
        return ("mag",)  # a single band falls back on the reference magnitude (logged)

    def __init__(self, survey=None, stamp_size: int | None = None, add_noise: bool = True,
                 flux_from: str = "catalog", psf: dict | None = None, draw_method: str = "auto",
                 bands: list | None = None, max_stamp_size: int = 1024):
        #: the survey as given (``None``: the bound field's, see :meth:`bind_field`)
        self.survey_spec = survey
        self.bands_spec = bands
        self.psf_spec = dict(psf) if psf is not None else None
        # unbound, an omitted survey is lsst_i (as before); bind_field re-resolves it
        self._set_bands(survey, bands)
        self.stamp_size = None if stamp_size is None else check_int("stamp_size", stamp_size, 4)
        self.max_stamp_size = check_int("max_stamp_size", max_stamp_size, 16)
        self.add_noise = bool(add_noise)
        self.flux_from = check_choice("flux_from", flux_from, ("catalog", "stamp"))
        self.draw_method = check_choice("draw_method", draw_method,
                                        ("auto", "no_pixel", "fft", "real_space"))

    def _set_bands(self, survey, bands) -> None:
        """Resolve the bands (presets, PSFs) of ``survey`` / ``bands`` (``survey=None``:
        ``lsst_i``, or band presets when ``bands`` is given)."""
        self.bands = get_bands(survey, bands)
        self.multi = bands is not None or len(self.bands) > 1
        self.survey = self.bands[0]
        self.psfs = {}
        for j, s in enumerate(self.bands):
            spec = self.psf_spec if self.psf_spec is not None else dict(s.psf)
            where = ("psf" if self.psf_spec is not None else
                     (f"bands[{j}].psf" if self.multi else "survey.psf"))
            self.psfs[s.name] = (spec, build_psf(spec, key=where))
        self.psf = self.psfs[self.survey.name][1]

    @staticmethod
    def field_survey(field):
        """The survey an omitted ``survey`` means under ``field``: the preset whose pixel
        scale placed the rows (``catalog.positions``' ``survey``); ``None`` (``lsst_i``, as
        unbound) for a field that names no survey.

        Raises
        ------
        ConfigError
            The field's survey is a customised preset (its pixel scale is not the preset's):
            the stage must name its survey.
        """
        name = field.survey
        if not name:
            return None
        if name not in SURVEYS or abs(SURVEYS[name].pixel_scale - field.pixel_scale) > 1e-12:
            raise ConfigError(
                f"is omitted, so it would be the scene field's survey, but that is a customised "
                f"survey ('{name}' at {field.pixel_scale:g} arcsec/pix); name this stage's "
                "survey.", key="survey",
                received={"survey": None, "field": field.describe()})
        return name

    def bind_field(self, field):
        """Give the stage its input rows' scene field; an omitted ``survey`` becomes the
        field's (:meth:`field_survey`), and the bands and PSFs are resolved again; listed
        ``bands`` (presets) stay as listed."""
        super().bind_field(field)
        if self.survey_spec is None and self.bands_spec is None:
            self._set_bands(self.field_survey(field), None)
            self._bands_changed()
        return self

    def _bands_changed(self) -> None:
        """Hook: re-derive what depends on :attr:`bands` after :meth:`bind_field`."""

    def _fluxes(self, batch: StampBatch, survey) -> np.ndarray:
        """Unlensed electrons per object in ``survey``'s exposure.

        From the row's ``mag_<band>``; a single-band stage without that column falls back on
        the reference magnitude ``mag`` (logged); a multi-band stage requires it.
        """
        if self.flux_from == "stamp":
            return survey.electrons(batch.magnitudes())
        col = survey.mag_column
        where = f"{self.type_name} (band {survey.band_name}, flux_from: catalog)"
        if col not in batch.catalog.colnames and survey.band_name == "hst_f814w":
            col = "mag"  # the reference band itself
        if col not in batch.catalog.colnames:
            if self.multi:
                require_columns(batch.catalog, [col], where)
            require_columns(batch.catalog, ["mag"], where)
            if not getattr(self, "_warned_mag", False):
                _log(self).info("%s: no column '%s': the reference magnitude 'mag' is used "
                                "for %s (no colour).", self.type_name, col, survey.name)
                self._warned_mag = True
            col = "mag"
        return survey.electrons(np.asarray(batch.catalog[col], float))

    def observed_objects(self, batch: StampBatch, survey=None, rows=None) -> list:
        """Lensed, PSF-convolved GalSim objects (e-, arcsec) of a batch's rows in one band.

        Exactly the objects this stage draws: the row's exact PSF-free profile
        (``galsim.parametric``) or a quintic InterpolatedImage of its stamp at the stamp's own
        pixel scale, with the band's flux, lensed by ``g1``, ``g2``, ``kappa``
        (:func:`astrogen.physics.lensing.apply_lensing`) and convolved with the band's PSF
        (:func:`astrogen.physics.observe.observed_profile`); stars are the PSF.

        Parameters
        ----------
        batch : StampBatch
            PSF-free stamps.
        survey : Survey, optional
            One of this stage's bands (default: the first).
        rows : sequence of int, optional
            Row indices (default: all).

        Returns
        -------
        list of galsim.GSObject or None
            One per row in ``rows`` (``None``: nothing to draw).
        """
        from astrogen.physics.observe import observed_profile

        s = self.survey if survey is None else survey
        rows = range(len(batch)) if rows is None else rows
        psf = self.psfs[s.name][1]
        flux = self._fluxes(batch, s)
        scales = batch.pixel_scales
        stars = _stars(batch.catalog)
        g1, g2, kappa = lensing_columns(batch.catalog)
        profiles = _row_profiles(batch, s.band_name, rows)
        return [observed_profile(batch.stamp(i), float(scales[i]), float(flux[i]), psf,
                                 g1[i], g2[i], kappa[i],
                                 None if profiles is None else profiles[k], stars[i])
                for k, i in enumerate(rows)]


def observed_object(batch: StampBatch, i: int, survey="lsst_i", psf: dict | None = None,
                    flux_from: str = "catalog"):
    """The lensed, PSF-convolved GalSim object (e-, arcsec) of row ``i`` of ``batch``, exactly
    as ``observe`` with these options draws it (see :meth:`Observe.observed_objects`).

    Parameters
    ----------
    batch : StampBatch
        PSF-free stamps (a generator's output); lensing from its ``g1``, ``g2``, ``kappa``.
    i : int
        Row index.
    survey : str or dict
        Band preset or ``{base: preset, field: value}``, as ``observe``'s ``survey``.
    psf : dict, optional
        GalSim config of a PSF replacing the survey's.
    flux_from : {"catalog", "stamp"}

    Returns
    -------
    galsim.GSObject or None
        ``None`` when the row has nothing to draw. Drawing it into
        ``galsim.ImageF(n, n, scale=<survey pixel scale>)`` with
        :func:`astrogen.physics.observe.draw_profile` gives ``observe``'s noiseless stamp of
        that row for ``stamp_size: n``.
    """
    stage = Observe(survey=survey, add_noise=False, flux_from=flux_from, psf=psf)
    return stage.observed_objects(batch, rows=[int(i)])[0]


@register_stage("observe")
class Observe(_SurveyStage):
    """Observe PSF-free galaxies with a survey: lensing, PSF, pixel, flux, sky and read noise.

    Each row is lensed by its ``g1``, ``g2``, ``kappa`` (0 when absent) before the PSF; stars
    (``is_star``) are drawn as the PSF. Each output stamp is sized by GalSim from the
    PSF-convolved profile (99.5 % of the light) up to ``max_stamp_size``; rows whose light
    does not fit are flagged and logged. (Scenes, where box edges could show between
    objects, also grow a box until less than one pixel's noise sigma of light is missing.) Adds ``flux_<survey>`` (true lensed flux, e-),
    ``flux_frac_<survey>`` (fraction inside the stamp), ``flag_truncated_<survey>``,
    ``g1``, ``g2``, ``kappa``, ``mu``.

    Parameters
    ----------
    survey : str or dict, optional
        A band preset (``lsst_r``, ``euclid_vis``, ``hst_cosmos``...) or
        ``{base: preset, field: value}``. Omitted: the survey of the scene field bound to
        the stage (the ``survey`` of ``catalog.positions`` / ``catalog.stars`` or of the
        pipeline's ``field:`` key), so a pipeline names it once; ``lsst_i`` when no stage
        upstream declares a field.
    stamp_size : int, optional
        Fixed output stamp side in survey pixels (cut profiles are flagged); default: per
        profile.
    add_noise : bool
        Add sky-subtracted Poisson noise and read noise.
    flux_from : {"catalog", "stamp"}
        Total flux from the catalog magnitude ``mag_<band>`` (``mag`` when absent), or from
        the stamp's own flux and zero point.
    psf : dict, optional
        GalSim config of a PSF replacing the survey's.
    draw_method : str
        GalSim ``drawImage`` method (``auto`` integrates over the survey pixel).
    max_stamp_size : int
        Largest output stamp side in survey pixels.
    bands : list of str, optional
        Several bands, as in ``scene``: band presets (``[lsst_g, lsst_r]``), or filters of
        a survey given as ``survey: lsst`` (all its bands when ``bands`` is omitted). The
        output is then a :class:`~astrogen.batch.MultiBandStamps`: the same rows, the same
        PSF-free profile (same morphology and lensing) drawn with each band's PSF, pixel
        scale, zero point, sky and magnitude ``mag_<band>`` (required with ``flux_from:
        catalog``), each band with its own noise stream; the catalog gets the per-band
        columns of every band. ``output.stamps`` then writes one file per band.
    """

    input_types = (StampBatch,)
    #: ``MultiBandStamps`` on an instance given several bands (set in ``__init__``).
    output_type = StampBatch

    def __init__(self, survey=None, stamp_size: int | None = None, add_noise: bool = True,
                 flux_from: str = "catalog", psf: dict | None = None, draw_method: str = "auto",
                 max_stamp_size: int = 1024, bands: list | None = None):
        super().__init__(survey, stamp_size, add_noise, flux_from, psf, draw_method, bands,
                         max_stamp_size)
        if self.multi:
            self.output_type = MultiBandStamps

    def _observe_band(self, batch: StampBatch, s, cat: Table, mu: np.ndarray) -> StampBatch:
        """Observe ``batch`` in band ``s``; adds that band's columns to ``cat`` (in place)."""
        from astrogen.physics.observe import add_noise, draw_observed_objects

        flux = self._fluxes(batch, s)
        images, frac = draw_observed_objects(self.observed_objects(batch, s), s.pixel_scale,
                                             self.stamp_size, self.draw_method,
                                             self.max_stamp_size)
        sigma = None
        if self.add_noise:
            # single band: the stage seed as always; several bands: one stream per band
            seed = (derive_seed(self.ctx.seed, "observe", s.name) if self.multi
                    else self.ctx.seed)
            seeds = row_seeds(seed, np.asarray(batch.catalog["row_id"]))
            for i in range(len(images)):
                images[i] = add_noise(images[i], galsim_seed(seeds[i]), s.sky_level,
                                      s.read_noise, s.gain)
            sigma = np.full(len(images), s.noise_sigma)
        cat[f"flux_{s.name}"] = flux * mu
        cat[f"flux_{s.name}"].description = (f"[electron] true total (lensed) flux in the "
                                             f"{s.name} exposure")
        cat[f"flux_frac_{s.name}"] = frac
        cat[f"flux_frac_{s.name}"].description = "fraction of the light inside the stamp"
        cat[f"flag_truncated_{s.name}"] = frac < MIN_FLUX_FRAC
        n_cut = int(np.sum(frac < MIN_FLUX_FRAC))
        if n_cut:
            _log(self).warning("observe %s: %d of %d objects keep < 99.5 %% of their light in "
                               "the stamp (min %.3f; stamp_size=%s, max_stamp_size=%d); "
                               "flagged in 'flag_truncated_%s'.", s.name, n_cut, len(frac),
                               float(frac.min()), self.stamp_size, self.max_stamp_size, s.name)
        return StampBatch(images=images, pixel_scale=s.pixel_scale, catalog=cat,
                          flux_unit="electron",
                          zero_point=image_zero_point(s.zero_point, s.exposure_time),
                          psf=describe_psf(self.psfs[s.name][0]), band=s.band,
                          noise_sigma=sigma,
                          meta={**batch.meta, "survey": s.name,
                                **({"band_name": s.band_name} if self.multi else {})})

    def process(self, batch: StampBatch) -> StampBatch | MultiBandStamps:
        if batch.psf is not None:
            raise ConfigError("observe needs PSF-free stamps; its input already has a PSF.",
                              key="inputs", received={"psf": batch.psf})
        stars, lens = _stars(batch.catalog), lensing_columns(batch.catalog)
        cat = batch.catalog.copy(copy_data=False)
        mu = np.where(stars, 1.0, magnification(*lens))
        for c, v in zip(("g1", "g2", "kappa"), lens):
            if c not in cat.colnames:
                cat[c] = v
        cat["mu"] = mu
        cat["mu"].description = "lensing magnification (1 for stars)"
        out = {s.name: self._observe_band(batch, s, cat, mu) for s in self.bands}
        if not self.multi:
            return out[self.survey.name]
        return MultiBandStamps(out, catalog=cat)


@register_stage("scene")
class Scene(_SurveyStage):
    """Place galaxies (and stars) at their catalog positions in one survey image per band.

    Needs ``x``, ``y`` (and ``ra``, ``dec`` for other pixel scales) from a
    ``catalog.positions`` stage upstream. Each object is lensed (``g1``, ``g2``, ``kappa``),
    convolved with the band's PSF and drawn in a box sized by GalSim from its own profile
    (99.5 % of the light, up to ``max_stamp_size``): no stamp edge shows. Stars
    (``is_star``) are the PSF. Writes, per band, ``file_name`` (primary HDU: the image with
    noise, ``NOISELESS`` HDU: the noiseless image, both in e-, TAN WCS, band and zero-point
    cards) and a PNG preview; with several bands, file names get ``_<band>`` before the
    suffix (or replace ``{band}``), and ``color_preview`` writes a colour composite.

    Parameters
    ----------
    survey : str or dict, optional
        A band preset, or a survey (``lsst``, ``hsc``, ``des``, ``euclid``) whose ``bands``
        are listed (all its bands when ``bands`` is omitted). Omitted: the survey of the
        scene field (the ``survey`` of ``catalog.positions`` or of the pipeline's
        ``field:``), ``lsst_i`` when none is declared; with ``bands`` omitted only (listed
        bands are then presets, ``[lsst_g, lsst_r]``).
    bands : list of str, optional
        Band presets (``[lsst_g, lsst_r]``) or filters of ``survey`` (``[g, r, i]``); each
        row's flux comes from ``mag_<band>``.
    stamp_size, add_noise, flux_from, psf, draw_method, max_stamp_size
        As for ``observe``; ``stamp_size`` fixes every drawing box (not recommended).
    file_name : str
        FITS file name in the output folder.
    preview : str or None
        PNG file name in the output folder (``null``: none).
    color_preview : str or None
        PNG colour composite (Lupton et al. 2004 asinh, ``make_lupton_rgb``) of three bands.
    color_bands : list of 3 str, optional
        Bands shown as (red, green, blue); default the i, r, g bands when present.
    """

    kind = "sink"
    input_types = (StampBatch,)
    needs_field = True

    def required_columns(self):  # checked by validate through the graph
        return ("x", "y") + (("mag",) if self.flux_from == "catalog" else ())

    def __init__(self, survey=None, stamp_size: int | None = None, add_noise: bool = True,
                 flux_from: str = "catalog", psf: dict | None = None, draw_method: str = "auto",
                 file_name: str = "scene.fits", preview: str | None = "scene.png",
                 bands: list | None = None, max_stamp_size: int = 1024,
                 color_preview: str | None = None, color_bands: list | None = None):
        super().__init__(survey, stamp_size, add_noise, flux_from, psf, draw_method, bands,
                         max_stamp_size)
        self.file_name = check_file_name("file_name", file_name, (".fits",))
        self.preview = None if preview is None else check_file_name("preview", preview, (".png",))
        self.color_preview = (None if color_preview is None else
                              check_file_name("color_preview", color_preview, (".png",)))
        self.color_bands_spec = color_bands
        self._bands_changed()
        self.canvases: dict[str, SceneCanvas] = {}
        self.n_objects = 0
        self.n_stars = 0

    def _bands_changed(self) -> None:
        names = [b.name for b in self.bands]
        color_bands = self.color_bands_spec
        if color_bands is None:
            pick = [next((n for n in names if n.endswith(f)), None) for f in ("_i", "_r", "_g")]
            color_bands = pick if all(pick) else None
        if self.color_preview is not None:
            if (not isinstance(color_bands, (list, tuple)) or len(color_bands) != 3
                    or any(b not in names for b in color_bands)):
                raise ConfigError(f"must list 3 of this scene's bands {names} (red, green, "
                                  "blue).", key="color_bands", received={"color_bands": color_bands})
        self.color_bands = color_bands
        self.band_surveys = {b.name: b for b in self.bands}

    def _name(self, template: str, band: str) -> str:
        if "{band}" in template:
            return template.replace("{band}", band)
        if not self.multi:
            return template
        stem, dot, suffix = template.rpartition(".")
        return f"{stem}_{band}.{suffix}"

    def _field(self, batch: StampBatch, survey):
        field = self.require_field()
        xs, ys = np.asarray(batch.catalog["x"], float), np.asarray(batch.catalog["y"], float)
        if abs(field.pixel_scale - survey.pixel_scale) > 1e-12:
            # Positions made for another survey: same sky footprint and centre, this survey's
            # pixels; objects placed from their ra/dec through this scene's TAN WCS.
            if not {"ra", "dec"} <= set(batch.catalog.colnames):
                raise ConfigError("the positions were made for another pixel scale than this "
                                  "scene's survey, and the rows have no ra/dec to re-project.",
                                  key="survey",
                                  received={"positions_pixel_scale": field.pixel_scale,
                                            "survey_pixel_scale": survey.pixel_scale})
            field = field.with_pixel_scale(survey.pixel_scale, survey.name)
            xs, ys = field.wcs().all_world2pix(np.asarray(batch.catalog["ra"], float),
                                               np.asarray(batch.catalog["dec"], float), 1)
        return field, xs, ys

    def consume(self, index: int, batch: StampBatch) -> None:
        from astrogen.physics.observe import observed_stamp_size

        require_columns(batch.catalog, ["x", "y"], "scene (add a catalog.positions stage)")
        n_cut = 0
        for s in self.bands:
            field, xs, ys = self._field(batch, s)
            if s.name not in self.canvases:
                self.canvases[s.name] = SceneCanvas(field)
            canvas = self.canvases[s.name]
            for i, prof in enumerate(self.observed_objects(batch, s)):
                if prof is None:
                    continue
                # +2 pixels: the box is centred on the nearest pixel, the object up to half
                # a pixel away from it
                size = self.stamp_size or observed_stamp_size(prof, s.pixel_scale,
                                                              self.max_stamp_size - 2) + 2
                drawn = canvas.add(prof, float(xs[i]), float(ys[i]), size, self.draw_method,
                                   max_missing=s.noise_sigma, max_size=self.max_stamp_size)
                if drawn and self.draw_method != "no_pixel" and drawn < MIN_FLUX_FRAC * prof.flux:
                    n_cut += 1
        if n_cut:
            _log(self).warning("scene: %d object-band drawings keep < 99.5 %% of their light in "
                               "their box (max_stamp_size=%d, stamp_size=%s).", n_cut,
                               self.max_stamp_size, self.stamp_size)
        self.n_objects += len(batch)
        self.n_stars += int(_stars(batch.catalog).sum())

    def get_state(self):
        if not self.canvases:
            return None
        state = {"n_objects": np.array(self.n_objects), "n_stars": np.array(self.n_stars)}
        for name, c in self.canvases.items():
            state[f"image__{name}"] = c.image.array
            state[f"field__{name}"] = np.array([c.field.nx, c.field.ny, c.field.pixel_scale,
                                                c.field.ra, c.field.dec])
        return state

    def set_state(self, state) -> None:
        self.canvases = {}
        for key in state:
            if key.startswith("image__"):
                name = key[len("image__"):]
                nx, ny, ps, ra, dec = state[f"field__{name}"]
                c = SceneCanvas(Field(int(nx), int(ny), float(ps), float(ra), float(dec)))
                c.image.array[:] = state[key]
                self.canvases[name] = c
        self.n_objects = int(state["n_objects"])
        self.n_stars = int(state["n_stars"]) if "n_stars" in state else 0

    def finalize(self):
        from astrogen.io.fits_out import provenance_cards, write_image
        from astrogen.io.preview import save_color, save_image
        from astrogen.physics.observe import add_noise

        if not self.canvases:
            return []
        paths, noisy_by_band = [], {}
        for s in self.bands:
            canvas = self.canvases[s.name]
            clean = canvas.image.array.copy()
            noisy = clean
            if self.add_noise:
                tag = "scene-noise" if not self.multi else f"scene-noise-{s.name}"
                noisy = add_noise(clean, galsim_seed(derive_seed(self.ctx.seed, tag)),
                                  s.sky_level, s.read_noise, s.gain)
            noisy_by_band[s.name] = noisy
            header = canvas.field.wcs().to_header()
            header["BUNIT"] = ("electron", "pixel unit (sky subtracted)")
            header["FILTER"] = (s.band_name, "band (<survey>_<filter>)")
            header["SURVEY"] = (s.name, "astrogen survey preset")
            set_card(header, "BANDSRC", s.source[:68], "source of the band's numbers")
            header["PIXSCALE"] = (s.pixel_scale, "[arcsec/pixel]")
            header["EXPTIME"] = (s.exposure_time, "[s] exposure time")
            header["ZP1ES"] = (s.zero_point, "[mag] AB magnitude giving 1 e-/s")
            header["MAGZERO"] = (image_zero_point(s.zero_point, s.exposure_time),
                                 "[mag] AB magnitude of 1 e- in this image")
            header["SKYLEVEL"] = (s.sky_level, "[e-/pixel] subtracted sky level")
            header["NOISE"] = (s.noise_sigma if self.add_noise else 0.0,
                               "[e-/pixel] background noise sigma")
            set_card(header, "PSF", describe_psf(self.psfs[s.name][0])[:68], "GalSim PSF")
            header["NOBJECTS"] = (self.n_objects, "objects drawn (galaxies and stars)")
            header["NSTARS"] = (self.n_stars, "stars drawn")
            provenance_cards(header, self.ctx.provenance, self.ctx.history)
            prim = fits.PrimaryHDU(noisy.astype(np.float32), header=header)
            truth = fits.ImageHDU(clean.astype(np.float32), header=header.copy(), name="NOISELESS")
            paths.append(write_image(self.ctx.output_dir / self._name(self.file_name, s.name),
                                     [prim, truth]))
            if self.preview:
                paths.append(save_image(self.ctx.output_dir / self._name(self.preview, s.name),
                                        noisy, title=f"{self.ctx.name}: {self.n_objects} "
                                                     f"objects, {s.name}"))
        if self.color_preview and self.color_bands:
            # in AB flux units (nanomaggies: e- of a source at NANOMAGGY_ZERO_POINT), so
            # colours are true flux ratios whatever each band's zero point and exposure
            nmgy = {b: self.band_surveys[b].electrons(NANOMAGGY_ZERO_POINT)
                    for b in self.color_bands}
            paths.append(save_color(self.ctx.output_dir / self.color_preview,
                                    [noisy_by_band[b] / nmgy[b] for b in self.color_bands],
                                    title=f"{self.ctx.name}: {' '.join(self.color_bands)} "
                                          "(R G B)"))
        return paths


@register_stage("lensing.field")
class LensingField(Stage):
    """Add a stated weak-lensing field to catalog rows: columns ``g1``, ``g2`` (reduced shear)
    and ``kappa`` (convergence), evaluated at each row's scene position.

    Models (:mod:`astrogen.physics.shear_field`): ``constant`` (``g1``, ``g2``, ``kappa``
    everywhere) or ``grf`` (a Gaussian random convergence field of rms ``sigma_kappa``
    smoothed on ``smoothing`` arcmin, with its Kaiser-Squires shear; seeded by this stage's
    seed, independent of chunking). Needs ``x``, ``y`` from ``catalog.positions``; stars
    (``is_star``) get 0. ``observe`` and ``scene`` apply the columns before the PSF.

    Parameters
    ----------
    model : {"constant", "grf"}
    g1, g2, kappa : float
        The constant model's values (dimensionless).
    sigma_kappa : float
        rms convergence of the grf model.
    smoothing : float
        Smoothing scale of the grf model, arcmin.
    """

    input_types = (Table,)
    output_type = Table
    units = {"smoothing": "arcmin"}
    needs_field = True

    def __init__(self, model: str = "constant", g1: float = 0.0, g2: float = 0.0,
                 kappa: float = 0.0, sigma_kappa: float = 0.02, smoothing: float = 1.0):
        self.model = check_choice("model", model, ("constant", "grf"))
        try:
            self.g1, self.g2, self.kappa = float(g1), float(g2), float(kappa)
        except (TypeError, ValueError):
            raise ConfigError("g1, g2 and kappa must be numbers.", key="g1",
                              received={"g1": g1, "g2": g2, "kappa": kappa}) from None
        magnification(self.g1, self.g2, self.kappa)  # |g| < 1, kappa not critical
        self.sigma_kappa = check_positive("sigma_kappa", sigma_kappa, allow_zero=True)
        self.smoothing = check_positive("smoothing", smoothing, unit="arcmin")

    def process(self, table: Table) -> Table:
        from astrogen.physics.shear_field import lensing_at

        require_columns(table, ["x", "y"], "lensing.field (add a catalog.positions stage)")
        field = self.require_field()
        to_arcmin = field.pixel_scale / 60.0
        x = (np.asarray(table["x"], float) - (field.nx + 1) / 2) * to_arcmin
        y = (np.asarray(table["y"], float) - (field.ny + 1) / 2) * to_arcmin
        g1, g2, kappa = lensing_at(x, y, self.model, derive_seed(self.ctx.seed, "field"),
                                   (field.nx * to_arcmin, field.ny * to_arcmin), self.g1,
                                   self.g2, self.kappa, self.sigma_kappa, self.smoothing)
        stars = _stars(table)
        out = table.copy(copy_data=False)
        for name, v, what in (("g1", g1, "reduced shear, component 1"),
                              ("g2", g2, "reduced shear, component 2"),
                              ("kappa", kappa, "convergence")):
            out[name] = np.where(stars, 0.0, v)
            out[name].description = f"{what} ({self.model} model)"
        magnification(out["g1"], out["g2"], out["kappa"])
        return out

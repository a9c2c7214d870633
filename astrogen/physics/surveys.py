"""Survey presets: pixel scale, photometric zero point, exposure, sky, noise and PSF.

Flux calibration: a source of AB magnitude ``m`` gives ``10**(-0.4 (m - zero_point)) *
exposure_time`` electrons, ``zero_point`` being the AB magnitude that gives 1 e-/s.
The sky gives ``10**(-0.4 (sky_brightness - zero_point)) * exposure_time * pixel_scale**2``
electrons per pixel.

Every preset is one band ``<survey>_<filter>`` built from ``surveycodex`` (LSST DESC's survey
parameter collection, github.com/LSSTDESC/surveycodex, formerly galcheat, which lists the
reference of every number): ``lsst_u .. lsst_y``, ``hsc_g .. hsc_y``, ``des_g .. des_y``,
``euclid_vis``, ``euclid_y``, ``euclid_j``, ``euclid_h``, ``hst_f814w`` (alias ``hst_cosmos``).
Numbers that are astrogen's own assumptions say so.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from astrogen.catalog.bands import BAND_FILTERS
from astrogen.errors import ConfigError, UnknownKeyError, suggest
from astrogen.physics.photometry import flux_from_mag, mag_from_flux, sky_level_per_pixel

__all__ = ["Survey", "SURVEYS", "SURVEY_BANDS", "get_survey", "get_bands"]


@dataclass(frozen=True)
class Survey:
    """Observing set-up of one band of one survey.

    Parameters
    ----------
    name : str
        Preset name (``"lsst_i"``).
    band : str
        Band name written in FITS headers (``FILTER``).
    pixel_scale : float
        arcsec / pixel.
    zero_point : float
        AB magnitude giving 1 e-/s.
    exposure_time : float
        Total exposure time in s (of the co-add for deep presets).
    sky_brightness : float
        Sky surface brightness in AB mag / arcsec^2.
    read_noise : float
        Effective read noise in e- per pixel of the final image.
    gain : float
        e- / ADU of the output images (1: images are in electrons).
    psf : dict
        GalSim config dict of the PSF (``{"type": "Kolmogorov", "fwhm": 0.79}``); any GalSim
        object type, keys are the GalSim constructor's arguments (arcsec, nm, m).
    source : str
        Where the numbers come from (``surveycodex LSST/i``).
    """

    name: str
    band: str
    pixel_scale: float
    zero_point: float
    exposure_time: float
    sky_brightness: float
    read_noise: float
    gain: float = 1.0
    psf: dict[str, Any] = field(default_factory=dict)
    source: str = ""

    @property
    def band_name(self) -> str:
        """Contract band name ``<survey>_<filter>`` (``lsst_i``), also for aliases."""
        return ALIASES.get(self.name, self.name)

    @property
    def mag_column(self) -> str:
        """Catalog column of this band's AB magnitude (``mag_lsst_i``)."""
        return f"mag_{self.band_name}"

    def electrons(self, mag) -> np.ndarray:
        """Electrons collected from a source of AB magnitude ``mag`` (mag)."""
        return flux_from_mag(np.asarray(mag, dtype=float), self.zero_point, self.exposure_time)

    def magnitude(self, electrons) -> np.ndarray:
        """AB magnitude of a source giving ``electrons`` (e-) in the exposure."""
        return mag_from_flux(np.asarray(electrons, float), self.zero_point, self.exposure_time)

    @property
    def sky_level(self) -> float:
        """Sky background in e- / pixel over the exposure."""
        return sky_level_per_pixel(self.sky_brightness, self.zero_point, self.exposure_time,
                                   self.pixel_scale)

    @property
    def noise_sigma(self) -> float:
        """Background noise standard deviation in e- / pixel (sky Poisson + read noise)."""
        return float(np.sqrt(self.sky_level + self.read_noise ** 2))

    def to_dict(self) -> dict[str, Any]:
        """The survey as a plain ``dict`` (``dataclasses.asdict``)."""
        return asdict(self)


# ---------------------------------------------------------------------------------------------
# Per-band presets built from ``surveycodex`` (the survey table BlendingToolKit uses; every
# number there carries its reference, printed by ``surveycodex.get_survey(name).references``):
# pixel scale, zero point (AB mag of 1 e-/s, computed with speclite), sky brightness
# (mag/arcsec^2), full exposure time (s), PSF FWHM (arcsec) and effective wavelength (nm) per
# filter; mirror diameter (m) and linear obscuration per telescope.
# PSF model (astrogen's choice): ground surveys (LSST, HSC, DES) a Kolmogorov profile of the
# band's FWHM (atmosphere-dominated seeing); space surveys (Euclid VIS/NISP, HST) the Airy
# pattern of the mirror (with its obscuration) at the band's effective wavelength convolved
# with a Gaussian (jitter, charge diffusion) whose FWHM adds in quadrature to the Airy FWHM to
# give the band's FWHM (the result is within 4 % of it: checked to 5 % in tests).
# Read noise is not in surveycodex: 0 e- for the ground co-adds (sky-dominated; assumed), the
# hand-set values below for space.
# Images are in electrons (gain 1), whatever the camera's gain.
# ---------------------------------------------------------------------------------------------
_SPACE = {"Euclid_VIS", "Euclid_NISP", "COSMOS"}
#: effective read noise in e- per pixel of the final image (not in surveycodex; assumed)
_READ_NOISE = {
    "COSMOS": 10.0,       # 4 ACS/WFC reads of ~5 e- in quadrature (ACS Instrument Handbook order of magnitude)
    "Euclid_VIS": 4.5,    # one VIS exposure (surveycodex gives one 565 s exposure), CCD273 class
    "Euclid_NISP": 6.0,   # one NISP exposure, up-the-ramp H2RG (assumed order of magnitude)
}
_NOTE_EXPOSURE = {
    "Euclid_VIS": "one 565 s exposure (surveycodex convention), not the 4-dither stack",
    "Euclid_NISP": "one 112 s exposure (surveycodex convention)",
}


def _airy_fwhm(lam_nm: float, diam_m: float, obscuration: float) -> float:
    """FWHM [arcsec] of an Airy pattern with a central obscuration (Born & Wolf profile)."""
    from scipy.optimize import brentq
    from scipy.special import j1

    lod = lam_nm * 1e-9 / diam_m * 206264.806
    e = obscuration

    def profile(r):
        x = np.pi * r / lod
        a = 2 * j1(x) / x - (e ** 2 * 2 * j1(e * x) / (e * x) if e > 0 else 0.0)
        return (a / (1 - e ** 2)) ** 2

    return 2 * brentq(lambda r: profile(r) - 0.5, 1e-6 * lod, lod)


def _space_psf(lam_nm: float, diam_m: float, obscuration: float, fwhm: float) -> dict:
    airy = _airy_fwhm(lam_nm, diam_m, obscuration)
    # widths added in quadrature: the total FWHM is within 4 % of the band's (tested at 5 %)
    jitter = float(np.sqrt(max(fwhm ** 2 - airy ** 2, 1e-6)))
    return {"type": "Convolve", "items": [
        {"type": "Airy", "lam": round(lam_nm, 3), "diam": diam_m, "obscuration": obscuration},
        {"type": "Gaussian", "fwhm": round(jitter, 4)}]}


def _surveycodex_presets() -> dict[str, Survey]:
    import surveycodex as sc

    out = {}
    for name, (sname, fname) in BAND_FILTERS.items():  # the contract's bands
        sv = sc.get_survey(sname)
        scale = float(sv.pixel_scale.to_value("arcsec"))
        diam = float(sv.mirror_diameter.to_value("m"))
        f = sv.get_filter(fname)
        fwhm = float(f.psf_fwhm.to_value("arcsec"))
        lam = float(f.effective_wavelength.to_value("nm"))
        psf = (_space_psf(lam, diam, float(sv.obscuration), fwhm) if sname in _SPACE
               else {"type": "Kolmogorov", "fwhm": fwhm})
        out[name] = Survey(
            name=name, band=name, pixel_scale=scale,
            zero_point=float(f.zeropoint.to_value("mag")),
            exposure_time=float(f.full_exposure_time.to_value("s")),
            sky_brightness=float(f.sky_brightness.value),
            read_noise=_READ_NOISE.get(sname, 0.0), gain=1.0, psf=psf,
            source=f"surveycodex {sc.__version__ if hasattr(sc, '__version__') else ''} "
                   f"{sname}/{fname}"
                   + (f"; exposure: {_NOTE_EXPOSURE[sname]}" if sname in _NOTE_EXPOSURE
                      else ""))
    return out


SURVEYS: dict[str, Survey] = _surveycodex_presets()
#: the bands of each survey, in wavelength order (``survey: lsst`` + ``bands: [g, r]``)
SURVEY_BANDS: dict[str, list[str]] = {}
for _name in SURVEYS:
    SURVEY_BANDS.setdefault(_name.split("_")[0], []).append(_name)
#: old preset names, kept working: the same survey set-ups under their first names
ALIASES = {"hst_cosmos": "hst_f814w"}
SURVEYS["hst_cosmos"] = replace(SURVEYS["hst_f814w"], name="hst_cosmos")

_FIELDS = {f for f in Survey.__dataclass_fields__}


def get_survey(spec, key: str = "survey") -> Survey:
    """A :class:`Survey` from a preset name or a dict ``{base: name, <field>: value...}``.

    Raises
    ------
    ConfigError, UnknownKeyError
        Unknown preset or field, naming ``key``.
    """
    if isinstance(spec, Survey):
        return spec
    if isinstance(spec, str):
        if spec not in SURVEYS:
            raise ConfigError(f"unknown survey preset.{suggest(spec, SURVEYS)} "
                              f"Presets: {', '.join(SURVEYS)}.", key=key, received={key: spec})
        return SURVEYS[spec]
    if isinstance(spec, dict):
        spec = dict(spec)
        base = spec.pop("base", None)
        for k in spec:
            if k not in _FIELDS:
                raise UnknownKeyError(f"is not a survey field.{suggest(k, _FIELDS | {'base'})}",
                                      key=f"{key}.{k}", received={k: spec[k]})
        if base is None:
            missing = _FIELDS - set(spec) - {"gain", "psf", "read_noise"}
            if missing:
                raise ConfigError(f"a custom survey needs 'base' or all of {sorted(missing)}.",
                                  key=key, received={key: spec})
            spec.setdefault("read_noise", 0.0)
            s = Survey(**spec)
        else:
            s = replace(get_survey(base, key=f"{key}.base"), **spec)
        # (field, must be > 0): gain 0 would turn the noise off silently
        for f, positive in (("pixel_scale", True), ("exposure_time", True), ("gain", True),
                            ("read_noise", False), ("zero_point", None),
                            ("sky_brightness", None)):
            v = getattr(s, f)
            ok = not isinstance(v, bool) and isinstance(v, (int, float)) and np.isfinite(v)
            if not ok or (positive and v <= 0) or (positive is False and v < 0):
                rule = {True: " > 0", False: " >= 0", None: ""}[positive]
                raise ConfigError(f"must be a finite number{rule}.", key=f"{key}.{f}",
                                  received={f: v})
        return s
    raise ConfigError("must be a preset name or a mapping.", key=key, received={key: spec})


def get_bands(survey=None, bands=None, key: str = "bands") -> list[Survey]:
    """The per-band surveys of a scene or observation.

    Parameters
    ----------
    survey : str or dict or None
        A preset or override mapping (one band), or a survey prefix (``lsst``) with ``bands``.
    bands : list of str, optional
        Band presets (``[lsst_g, lsst_r]``), or filter names of ``survey`` (``[g, r]``).
        An entry may be a mapping ``{base: preset, field: value}``.

    Raises
    ------
    ConfigError
        Naming ``key`` (or ``survey``) and the unknown value.
    """
    if bands is None:
        if isinstance(survey, str) and survey in SURVEY_BANDS and survey not in SURVEYS:
            return [SURVEYS[b] for b in SURVEY_BANDS[survey]]
        return [get_survey(survey if survey is not None else "lsst_i")]
    if isinstance(bands, str) or not isinstance(bands, (list, tuple)) or not bands:
        raise ConfigError("must be a non-empty list of bands.", key=key, received={key: bands})
    out = []
    for j, b in enumerate(bands):
        if isinstance(b, str) and b not in SURVEYS and isinstance(survey, str) \
                and f"{survey}_{b.lower()}" in SURVEYS:
            b = f"{survey}_{b.lower()}"
        out.append(get_survey(b, key=f"{key}[{j}]"))
    names = [s.name for s in out]
    if len(set(names)) != len(names):
        raise ConfigError("lists a band twice.", key=key, received={key: bands})
    return out

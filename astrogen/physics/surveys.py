"""Survey presets: pixel scale, photometric zero point, exposure, sky, noise and PSF.

Flux calibration: a source of AB magnitude ``m`` gives ``10**(-0.4 (m - zero_point)) *
exposure_time`` electrons, ``zero_point`` being the AB magnitude that gives 1 e-/s.
The sky gives ``10**(-0.4 (sky_brightness - zero_point)) * exposure_time * pixel_scale**2``
electrons per pixel.

Where a number has no primary reference it says so; ``galcheat`` is LSST DESC's survey
parameter collection (github.com/LSSTDESC/surveycodex, ``galcheat/data``), which lists its
own sources.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from astrogen.errors import ConfigError, UnknownKeyError, suggest

__all__ = ["Survey", "SURVEYS", "get_survey"]


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

    def electrons(self, mag) -> np.ndarray:
        """Electrons collected from a source of AB magnitude ``mag`` (mag)."""
        return 10.0 ** (-0.4 * (np.asarray(mag, dtype=float) - self.zero_point)) * self.exposure_time

    def magnitude(self, electrons) -> np.ndarray:
        """AB magnitude of a source giving ``electrons`` (e-) in the exposure."""
        return self.zero_point - 2.5 * np.log10(np.asarray(electrons, float) / self.exposure_time)

    @property
    def sky_level(self) -> float:
        """Sky background in e- / pixel over the exposure."""
        return float(10.0 ** (-0.4 * (self.sky_brightness - self.zero_point))
                     * self.exposure_time * self.pixel_scale ** 2)

    @property
    def noise_sigma(self) -> float:
        """Background noise standard deviation in e- / pixel (sky Poisson + read noise)."""
        return float(np.sqrt(self.sky_level + self.read_noise ** 2))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


SURVEYS: dict[str, Survey] = {
    # HST/ACS F814W, COSMOS depth (one orbit).
    "hst_cosmos": Survey(
        name="hst_cosmos", band="F814W",
        pixel_scale=0.03,        # drizzled COSMOS pixel (Koekemoer et al. 2007, ApJS 172, 196, Sec. 4)
        zero_point=25.94,        # AB mag for 1 e-/s, ACS/WFC F814W (GalSim COSMOSCatalog; Sirianni et al. 2005)
        exposure_time=2028.0,    # 4 x 507 s per COSMOS pointing (Koekemoer et al. 2007, Sec. 2.2)
        sky_brightness=22.0,     # mag/arcsec^2: galcheat COSMOS.yaml value (no primary reference given there)
        read_noise=10.0,         # e-: 4 ACS/WFC reads of ~5 e- each added in quadrature (assumed, ACS Instrument Handbook order of magnitude)
        psf={"type": "Convolve", "items": [
            # diffraction of the 2.4 m HST mirror with a 0.33 linear obscuration (galcheat HST/COSMOS)
            {"type": "Airy", "lam": 814.0, "diam": 2.4, "obscuration": 0.33},
            # jitter + detector charge diffusion, sized so the total FWHM is ~0.095 arcsec
            # (COSMOS PSF FWHM, Koekemoer et al. 2007, Sec. 5); checked in tests
            {"type": "Gaussian", "fwhm": 0.06}]},
    ),
    # Rubin/LSST i band, 10-year co-add.
    "lsst_i": Survey(
        name="lsst_i", band="i",
        pixel_scale=0.2,         # LSST camera pixel (Ivezic et al. 2019, ApJ 873, 111, arXiv:0805.2366, Sec. 2.2)
        zero_point=27.78,        # AB mag for 1 e-/s at airmass 1.2 (galcheat LSST.yaml, computed with speclite)
        exposure_time=5520.0,    # 184 visits x 30 s (Ivezic et al. 2019, Table 1)
        sky_brightness=20.48,    # mag/arcsec^2 (Ivezic et al. 2019, Table 2)
        read_noise=0.0,          # e-: neglected in the 10-year co-add (sky variance ~1.8e5 e-/pixel dominates; assumed)
        psf={"type": "Kolmogorov", "fwhm": 0.79},  # arcsec, Ivezic+19 Table 2 at airmass 1.2 (galcheat)
    ),
    # Euclid VIS, wide-survey depth.
    "euclid_vis": Survey(
        name="euclid_vis", band="VIS",
        pixel_scale=0.1,         # VIS pixel (Laureijs et al. 2011, arXiv:1110.3193, p. 3)
        zero_point=25.91,        # AB mag for 1 e-/s (galcheat Euclid_VIS.yaml, computed with speclite)
        exposure_time=2260.0,    # 4 x 565 s per field (Cropper et al. 2016, arXiv:1608.08603, Sec. 6)
        sky_brightness=22.32,    # mag/arcsec^2 (galcheat Euclid_VIS.yaml, MSSL VIS instrument page)
        read_noise=9.0,          # e-: 4 exposures of ~4.5 e- in quadrature (assumed, VIS CCD273 class)
        psf={"type": "Convolve", "items": [
            # 1.2 m mirror, obscuration 0.13 (Cropper et al. 2016, Sec. 3.1), VIS central wavelength 713.5 nm (galcheat)
            {"type": "Airy", "lam": 713.5, "diam": 1.2, "obscuration": 0.13},
            # pointing jitter + charge diffusion so that the FWHM is ~0.17 arcsec
            # (Cropper et al. 2016, Sec. 8); checked in tests
            {"type": "Gaussian", "fwhm": 0.1}]},
    ),
}

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

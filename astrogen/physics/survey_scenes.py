"""Multi-band survey scenes with per-object truth, at the catalog's own source density.

A scene of ``size`` x ``size`` pixels of one survey in several bands (LSST g r i z by
default: surveycodex 10-year co-add depth, Kolmogorov seeing PSF per band,
:mod:`astrogen.physics.surveys`) holds galaxies from the COSMOS sampler
(:class:`astrogen.catalog.cosmos.CosmosSampler`, the full I < 26 population, no
``mag_range``) and stars (:class:`astrogen.catalog.stars.StarModel`), both Poisson in number
with the mean of their surface density times the area of the scene plus a ``margin`` of
pixels on every side (objects just outside the scene put light into it), at uniform
positions.

Galaxy density: the sampler gives the *shape* of the magnitude distribution (its weighted
I < 26 sample); its normalisation is astrogen's stated assumption
``GALAXY_DENSITY_REF = 40`` galaxies per arcmin^2 to ``i < 25.3`` (the LSST "gold sample"
density of the LSST Science Book, 2009, arXiv:0912.0201, Sec. 3.7.2). The density to the
sampler's limit is that number divided by the sampler's own cumulative fraction at 25.3
(:func:`galaxy_density`).

Every object is drawn in isolation by GalSim (profile convolved with the band's PSF, pixel
integrated) into a box around its position, so the per-object noiseless images ``models``
*are* the truth: ``image - noise == models.sum(0)``. The noise is the band's sky-subtracted
CCD noise (:func:`astrogen.physics.observe.add_noise`), seeded by ``(seed, scene_id, band)``;
the number, positions and properties of the objects are functions of ``(seed, scene_id)``
(:mod:`astrogen.seeds`).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import galsim
import numpy as np
from astropy.table import Table, vstack

from astrogen.errors import ConfigError
from astrogen.seeds import derive_seed, galsim_seed

__all__ = ["GALAXY_DENSITY_REF", "SceneSpec", "SceneBatch", "galaxy_density", "render_scene",
           "scene_blendedness", "detection_weights"]

#: (galaxies per arcmin^2, limiting magnitude): LSST gold sample, i < 25.3 (astrogen's
#: stated normalisation of the COSMOS sampler's counts; LSST Science Book Sec. 3.7.2)
GALAXY_DENSITY_REF = (40.0, 25.3)


def galaxy_density(sampler, mag_limit: float | None = None) -> float:
    """Galaxies per arcmin^2 brighter than ``mag_limit`` (default: the sampler's limit)."""
    mm = sampler.marginals["mag"]
    n_ref, m_ref = GALAXY_DENSITY_REF
    f_ref = float(np.interp(m_ref, mm.grid_y, mm.cdf))
    f_lim = 1.0 if mag_limit is None else float(np.interp(mag_limit, mm.grid_y, mm.cdf))
    return n_ref * f_lim / f_ref


@dataclass(frozen=True)
class SceneSpec:
    """What a survey scene holds.

    Parameters
    ----------
    size : int
        Scene side in pixels.
    bands : tuple of str
        Band presets of one survey (``lsst_g``, ...), same pixel scale.
    margin : int
        Pixels around the scene where objects are also placed.
    star_density : float
        Stars per arcmin^2 (16 < F814W < 25; :class:`astrogen.catalog.stars.StarModel`).
    density_scale : float
        Multiplies the galaxy density (1: the realistic density).
    ra, dec : float
        Sky position of the scene centre (deg) for its TAN WCS.
    """

    size: int = 64
    bands: tuple = ("lsst_g", "lsst_r", "lsst_i", "lsst_z")
    margin: int = 8
    star_density: float = 2.0
    density_scale: float = 1.0
    ra: float = 150.1
    dec: float = 2.2
    _cache: dict = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self):
        if isinstance(self.size, bool) or int(self.size) != self.size or self.size < 8:
            raise ConfigError("must be an integer >= 8 (pixels).", key="size",
                              received={"size": self.size})
        object.__setattr__(self, "bands", tuple(self.bands))
        if not self.bands:
            raise ConfigError("must name at least one band.", key="bands")
        scales = {round(s.pixel_scale, 9) for s in self.surveys()}
        if len(scales) != 1:
            raise ConfigError("all bands must share one pixel scale.", key="bands",
                              received={"bands": list(self.bands)})

    def surveys(self):
        """The survey band preset of each band (:func:`astrogen.physics.surveys.get_survey`)."""
        from astrogen.physics.surveys import get_survey

        return [get_survey(b, key="bands") for b in self.bands]

    @property
    def pixel_scale(self) -> float:
        """Pixel scale of the scenes (arcsec / pixel; the first band's)."""
        return float(self.surveys()[0].pixel_scale)

    def field(self):
        """The scene's :class:`~astrogen.physics.scene.Field` (size, pixel scale, centre)."""
        from astrogen.physics.scene import Field

        return Field(self.size, self.size, self.pixel_scale, self.ra, self.dec)

    def sampler(self):
        """The COSMOS galaxy sampler (built once, cached)."""
        if "sampler" not in self._cache:
            from astrogen.catalog.cosmos import CosmosSampler

            self._cache["sampler"] = CosmosSampler(mag_range=None,
                                                   bands=[s.band_name for s in self.surveys()])
        return self._cache["sampler"]

    def psfs(self):
        """GalSim PSF of each band (built once, cached)."""
        if "psfs" not in self._cache:
            from astrogen.physics.psf import build_psf

            self._cache["psfs"] = [build_psf(s.psf) for s in self.surveys()]
        return self._cache["psfs"]

    def psf_fwhm(self) -> np.ndarray:
        """PSF FWHM per band (arcsec)."""
        return np.array([float(s.psf.get("fwhm", np.nan)) for s in self.surveys()])

    def noise_sigma(self) -> np.ndarray:
        """Background noise sigma per band (e- / pixel)."""
        return np.array([s.noise_sigma for s in self.surveys()])

    def to_dict(self) -> dict:
        """The specification as a JSON-able dict (the data set manifest's)."""
        return {"size": int(self.size), "bands": list(self.bands), "margin": int(self.margin),
                "star_density": float(self.star_density),
                "density_scale": float(self.density_scale), "ra": self.ra, "dec": self.dec}


def detection_weights(noise_sigma) -> np.ndarray:
    """Band weights of the unit-noise detection image: ``s_b**-2 / sqrt(sum s**-2)``."""
    w = 1.0 / np.asarray(noise_sigma, np.float64) ** 2
    return w / np.sqrt(w.sum())


def scene_blendedness(models_det: np.ndarray) -> np.ndarray:
    """Blendedness ``1 - sum(m_i**2) / sum(m_i M)`` (Bosch et al. 2018) of each object of
    ``models_det`` (N, H, W); 0 for an object without light in the scene."""
    m = np.clip(np.asarray(models_det, np.float64), 0, None)
    tot = m.sum(axis=0)
    num = (m ** 2).sum(axis=(1, 2))
    den = (m * tot[None]).sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, 1.0 - num / den, 0.0)


def _objects(spec: SceneSpec, seed: int, scene_id: int) -> Table:
    from astrogen.catalog.stars import StarModel

    rng = np.random.default_rng(derive_seed(seed, "scene-objects", int(scene_id)))
    side_arcmin = (spec.size + 2 * spec.margin) * spec.pixel_scale / 60.0
    area = side_arcmin ** 2
    sampler = spec.sampler()
    n_gal = int(rng.poisson(galaxy_density(sampler) * spec.density_scale * area))
    names = [s.band_name for s in spec.surveys()]
    gal_ids = int(scene_id) * 10_000 + np.arange(n_gal)
    gals = sampler.sample(derive_seed(seed, "galaxies"), gal_ids)
    gals["is_star"] = np.zeros(n_gal, bool)
    stars_model = StarModel(density=spec.star_density)
    n_star = int(rng.poisson(stars_model.expected_count(area)))
    stars = stars_model.sample(derive_seed(seed, "stars", int(scene_id)), np.arange(n_star),
                               bands=names)
    keep = ["row_id", "is_star", "mag"] + [f"mag_{b}" for b in names]
    gal_t = gals[keep + ["hlr", "q", "beta", "sersic_n", "bulge_frac", "z"]]
    if n_star:
        st = stars[keep + ["z"]]
        for c, v in (("hlr", 0.0), ("q", 1.0), ("beta", 0.0), ("sersic_n", 1.0),
                     ("bulge_frac", 0.0)):
            st[c] = np.full(n_star, v)
        t = vstack([gal_t, st], metadata_conflicts="silent")
    else:
        t = gal_t
    n = len(t)
    lo, hi = -spec.margin - 0.5, spec.size + spec.margin - 0.5
    t["x"] = rng.uniform(lo, hi, n)
    t["y"] = rng.uniform(lo, hi, n)
    return t


def render_scene(spec: SceneSpec, seed: int, scene_id: int, noise: bool = True) -> dict:
    """One scene and its truth.

    Returns
    -------
    dict
        ``image`` (C, H, W) float32 [e-, sky subtracted], ``models`` (N, C, H, W) float32
        noiseless per-object images [e-], ``noise_sigma`` (C,) [e-], ``truth``
        (astropy Table: ``x``, ``y`` [pix, 0-based], ``mag`` and ``mag_<band>`` [AB],
        ``flux_<band>`` (total, e-), ``flux_scene_<band>`` (inside the scene, e-),
        ``is_star``, ``hlr`` [arcsec], ``blendedness`` (detection-weighted), ``snr``
        (detection image, optimal), ``inside``), ``wcs``, ``bands``, ``pixel_scale``,
        ``psf_fwhm`` (C,) [arcsec].
    """
    from astrogen.physics.observe import add_noise, draw_profile
    from astrogen.physics.render import galaxy_profile

    t = _objects(spec, seed, scene_id)
    surveys = spec.surveys()
    psfs = spec.psfs()
    c, h = len(surveys), spec.size
    n = len(t)
    models = np.zeros((n, c, h, h), np.float32)
    names = [s.band_name for s in surveys]
    fluxes = np.zeros((n, c))
    for b, (s, psf) in enumerate(zip(surveys, psfs)):
        fluxes[:, b] = s.electrons(np.asarray(t[f"mag_{names[b]}"], float))
    for i in range(n):
        row = t[i]
        hlr_pix = float(row["hlr"]) / spec.pixel_scale
        size = int(min(128, max(24, 2 * int(np.ceil(6 * hlr_pix + 3 * 0.9 / spec.pixel_scale)))))
        x, y = float(row["x"]), float(row["y"])
        ix, iy = int(np.floor(x + 0.5)), int(np.floor(y + 0.5))
        half = size // 2
        # galsim bounds are 1-based: scene pixel (r, c) 0-based -> (c + 1, r + 1)
        bounds = galsim.BoundsI(ix - half + 1, ix - half + size, iy - half + 1, iy - half + size)
        scene_b = galsim.BoundsI(1, h, 1, h)
        overlap = bounds & scene_b
        if not overlap.isDefined():
            continue
        for b, (s, psf) in enumerate(zip(surveys, psfs)):
            f = float(fluxes[i, b])
            if not f > 0:
                continue
            prof = (psf.withFlux(f) if bool(row["is_star"])
                    else galsim.Convolve(galaxy_profile(row, f, "sersic"), psf))
            img = galsim.ImageF(bounds, scale=spec.pixel_scale)
            draw_profile(prof, img, "auto", center=galsim.PositionD(x + 1, y + 1))
            sub = img[overlap].array
            models[i, b, overlap.ymin - 1:overlap.ymax, overlap.xmin - 1:overlap.xmax] = sub
    clean = models.sum(axis=0) if n else np.zeros((c, h, h), np.float32)
    image = clean.copy()
    if noise:
        for b, s in enumerate(surveys):
            image[b] = add_noise(clean[b], galsim_seed(derive_seed(seed, "scene-noise",
                                                                   int(scene_id), b)),
                                 s.sky_level, s.read_noise, s.gain)
    sig = spec.noise_sigma()
    w = detection_weights(sig)
    mdet = np.tensordot(models, w, axes=([1], [0])) if n else np.zeros((0, h, h))
    t["blendedness"] = scene_blendedness(mdet)
    t["snr"] = np.sqrt((np.clip(np.tensordot(models, 1.0 / sig ** 2, axes=([1], [0])), 0,
                                None) * models.sum(axis=1) / max(c, 1)).sum(axis=(1, 2))) \
        if n else np.zeros(0)
    for b, nm in enumerate(names):
        t[f"flux_{nm}"] = fluxes[:, b]
        t[f"flux_scene_{nm}"] = models[:, b].sum(axis=(1, 2), dtype=np.float64) if n else \
            np.zeros(0)
    t["inside"] = (t["x"] >= -0.5) & (t["x"] < h - 0.5) & (t["y"] >= -0.5) & (t["y"] < h - 0.5)
    return {"image": image.astype(np.float32), "models": models, "noise_sigma": sig,
            "truth": t, "wcs": spec.field().wcs(), "bands": names,
            "pixel_scale": spec.pixel_scale, "psf_fwhm": spec.psf_fwhm()}


@dataclass
class SceneBatch:
    """Survey scenes and their truth, the data of the scene-deblending stages.

    Parameters
    ----------
    scenes : list of dict
        :func:`render_scene` outputs (``image`` (C, H, W) [e-], ``models``, ``truth``,
        ``noise_sigma``, ``wcs``, ``bands``, ``pixel_scale``, ``psf_fwhm``) with
        ``scene_id``.
    results : dict
        Deblending results by stage name: a list of
        :class:`astrogen.deblend.result.SceneResult` (one per scene) under ``"scenes"`` and
        the wall time under ``"seconds"``.
    """

    scenes: list
    results: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.scenes)

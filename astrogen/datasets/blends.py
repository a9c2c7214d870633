"""Training set of blended scenes for the segmenters: a GalSim galaxy library + composed scenes.

Building (:func:`build_blend_dataset`) has two resumable phases, every file written
atomically (:mod:`astrogen.io.atomic`) and recorded in ``manifest.json`` only once complete:

1. **Library**: ``n_library`` galaxies drawn from
   :class:`~astrogen.catalog.cosmos.CosmosSampler` (seed ``derive_seed(seed, "library")``,
   magnitudes in ``mag_range``, drawn conditionally: the sampler's version
   :attr:`~astrogen.catalog.cosmos.CosmosSampler.VERSION` is recorded in the manifest as
   ``sampler_version``, and a folder built by another version, or by one that predates the
   record (version 1, whose ``mag_range`` made faint galaxies too small and too distant),
   is refused rather than reused), each PSF-convolved and drawn in isolation by GalSim on a
   canvas ``2 * margin`` pixels larger than the stamp, with a sub-pixel offset
   (:func:`astrogen.physics.blends.draw_isolated`); shards ``library_00000.npz`` ...
2. **Scenes**: scene ``s`` is a pure function of ``(seed, s)`` and the library: its number
   of objects, which library galaxies (uniformly, with replacement), one of the 8 symmetries
   of the square for each (:func:`astrogen.physics.blends.dihedral`; the survey PSFs are
   circular, so a rotated/mirrored drawing is a valid drawing of a rotated galaxy), the
   positions (:func:`astrogen.physics.blends.scene_positions`) and the CCD noise. Shards
   ``scenes_00000.npz`` hold ``image`` (n, h, w), ``models`` (n, K, h, w) (the noiseless
   objects, the truth), ``sigma`` (n,), ``positions`` (n, K, 2) (NaN for empty slots),
   ``library_index`` (n, K) (-1 for empty slots) and ``scene_id``.

A galaxy library of a few thousand drawings makes hundreds of thousands of distinct scenes
for the cost of the drawings (GalSim's FFT convolution dominates: ~10-30 ms per galaxy),
which is what makes training on 2 CPU cores possible. Test scenes are made by the
``blend.generate`` stage from other catalog rows and seeds, so no test galaxy is in the
library.
"""
from __future__ import annotations

import dataclasses
import datetime
import json
import platform
from pathlib import Path
from typing import Any

import numpy as np

from astrogen.datasets.base import DatasetConfig, is_complete, manifest_path, select_rows
from astrogen.errors import ConfigError, suggest
from astrogen.io.atomic import save_npz, write_json
from astrogen.physics.photometry import image_zero_point
from astrogen.seeds import derive_seed, galsim_seed, row_seeds, uniforms

__all__ = ["BlendDatasetConfig", "build_blend_dataset", "blend_dataset_is_complete",
           "read_blend_scenes", "BLEND_FORMAT"]

BLEND_FORMAT = "astrogen.blend_scenes"
_VERSION = 1


def _sampler_version() -> int:
    from astrogen.catalog.cosmos import CosmosSampler

    return int(CosmosSampler.VERSION)


@dataclasses.dataclass(frozen=True)
class BlendDatasetConfig(DatasetConfig):
    """What the blend training set contains (everything but the shard sizes defines it).

    Parameters
    ----------
    n_scenes : int
        Number of scenes (ids 0 .. n_scenes - 1).
    n_library : int
        Number of isolated galaxies drawn with GalSim.
    survey : str or dict
        Survey preset or ``{base: preset, field: value}`` (:func:`~astrogen.physics.surveys.
        get_survey`), e.g. ``{base: hst_cosmos, pixel_scale: 0.06}``.
    psf : dict or None
        GalSim PSF config replacing the survey's (must be circular for the symmetries).
    stamp_size, min_objects, max_objects, central_offset, separation, min_separation,
    max_separation, margin
        :class:`~astrogen.physics.blends.BlendGeometry`.
    mag_range : (float, float)
        AB magnitude range of the galaxies.
    profile : {"sersic", "bulge_disk"}
    noise : {"gaussian", "poisson"}
        Sky-subtracted CCD noise: ``"poisson"`` draws Poisson(sky + image) - sky plus read
        noise with GalSim (:func:`astrogen.physics.observe.add_noise`, ~20 ms per 64x64
        scene); ``"gaussian"`` draws a normal of the same variance (sky + image + read
        noise**2) with numpy, 100 times faster and indistinguishable at the sky levels of
        the presets (>= 275 e- per pixel: Poisson skewness <= 0.06).
    seed : int
    shard_size, library_shard_size : int
        Scenes / galaxies per file (do not change the data).
    """

    n_scenes: int
    n_library: int = 4000
    survey: Any = dataclasses.field(default_factory=lambda: {"base": "hst_cosmos",
                                                             "pixel_scale": 0.06})
    psf: Any = None
    stamp_size: int = 64
    min_objects: int = 2
    max_objects: int = 2
    central_offset: float = 3.0
    separation: tuple = (0.5, 3.0)
    min_separation: float = 2.5
    max_separation: float = 22.0
    margin: int = 28
    mag_range: tuple = (18.0, 24.0)
    profile: str = "sersic"
    noise: str = "gaussian"
    seed: int = 0
    shard_size: int = 2000
    library_shard_size: int = 500

    def __post_init__(self):
        from astrogen.physics.render import PROFILES

        for k in ("n_scenes", "n_library", "seed", "shard_size", "library_shard_size"):
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < (
                    0 if k == "seed" else 1):
                raise ConfigError("must be a positive integer.", key=k, received={k: v})
        if self.profile not in PROFILES:
            raise ConfigError(f"must be one of {PROFILES}.{suggest(self.profile, PROFILES)}",
                              key="profile", received={"profile": self.profile})
        if self.noise not in ("gaussian", "poisson"):
            raise ConfigError("must be 'gaussian' or 'poisson'.", key="noise",
                              received={"noise": self.noise})
        mr = tuple(float(v) for v in self.mag_range)
        if len(mr) != 2 or not mr[0] < mr[1]:
            raise ConfigError("must be [low, high] with low < high.", key="mag_range",
                              received={"mag_range": self.mag_range})
        object.__setattr__(self, "mag_range", mr)
        object.__setattr__(self, "separation", tuple(float(v) for v in self.separation))
        self.geometry()  # checks
        self.survey_obj()

    REQUIRED = ("n_scenes",)
    SHARD_FIELDS = ("shard_size", "library_shard_size")

    def geometry(self):
        """The blend geometry these parameters describe.

        Returns
        -------
        astrogen.physics.blends.BlendGeometry
            Stamp size and margin (pixels), object counts and separations (pixels).
        """
        from astrogen.physics.blends import BlendGeometry

        return BlendGeometry(self.stamp_size, self.min_objects, self.max_objects,
                             self.central_offset, self.separation, self.min_separation,
                             self.max_separation, self.margin)

    def survey_obj(self):
        """The survey named by ``survey`` (error keyed ``dataset.survey`` when unknown).

        Returns
        -------
        astrogen.physics.surveys.Survey
            Pixel scale, zero points, sky levels and PSF of the survey's bands.
        """
        from astrogen.physics.surveys import get_survey

        return get_survey(self.survey, key="dataset.survey")

    def psf_spec(self) -> dict:
        """The PSF specification: ``psf`` when given, else the survey's default PSF.

        Returns
        -------
        dict
            PSF parameters (FWHM in arcsec).
        """
        return dict(self.psf) if self.psf is not None else dict(self.survey_obj().psf)

    def to_dict(self) -> dict:
        """The configuration as JSON-compatible plain values (tuples become lists)."""
        d = dataclasses.asdict(self)
        d["mag_range"] = list(self.mag_range)
        d["separation"] = list(self.separation)
        return json.loads(json.dumps(d))


def blend_dataset_is_complete(path) -> bool:
    """True if ``path`` holds a complete blend dataset."""
    return is_complete(path)


def _library_shard(cfg: BlendDatasetConfig, lo: int, hi: int) -> dict:
    from astrogen.catalog.cosmos import CosmosSampler
    from astrogen.physics.blends import draw_isolated
    from astrogen.physics.psf import build_psf

    survey = cfg.survey_obj()
    psf = build_psf(cfg.psf_spec(), key="dataset.psf")
    sampler = CosmosSampler(mag_range=cfg.mag_range)
    rows = sampler.sample(derive_seed(cfg.seed, "library"), np.arange(lo, hi))
    off = uniforms(row_seeds(derive_seed(cfg.seed, "library_offset"), np.arange(lo, hi)), 2) - 0.5
    flux = survey.electrons(np.asarray(rows["mag"], float))
    canv = draw_isolated(rows, flux, psf, survey.pixel_scale, cfg.geometry().canvas_size, off,
                         cfg.profile)
    return {"canvas": canv, "offset": off.astype(np.float64), "flux": flux,
            "mag": np.asarray(rows["mag"], float), "hlr": np.asarray(rows["hlr"], float),
            "index": np.arange(lo, hi, dtype=np.int64)}


def _compose_shard(cfg: BlendDatasetConfig, lib: dict, lo: int, hi: int) -> dict:
    from astrogen.physics.blends import dihedral, place, scene_positions
    from astrogen.physics.observe import add_noise

    g = cfg.geometry()
    survey = cfg.survey_obj()
    n, k, s = hi - lo, g.max_objects, g.stamp_size
    ids = np.arange(lo, hi, dtype=np.int64)
    seeds = row_seeds(derive_seed(cfg.seed, "scenes"), ids)
    u = uniforms(seeds, 1 + 2 * k)
    centre = (s - 1) / 2.0
    images = np.zeros((n, s, s), np.float32)
    models = np.zeros((n, k, s, s), np.float32)
    pos_out = np.full((n, k, 2), np.nan)
    lib_idx = np.full((n, k), -1, np.int64)
    nl = len(lib["canvas"])
    for i in range(n):
        m = g.min_objects + int(u[i, 0] * (g.max_objects - g.min_objects + 1))
        idx = np.minimum((u[i, 1:1 + m] * nl).astype(int), nl - 1)
        syms = np.minimum((u[i, 1 + k:1 + k + m] * 8).astype(int), 7)
        hlr_pix = lib["hlr"][idx] / survey.pixel_scale
        want = scene_positions(g, seeds[i:i + 1] ^ np.uint64(0xB1E4D), [hlr_pix])[0]
        for j in range(m):
            canvas, off = dihedral(lib["canvas"][idx[j]], tuple(lib["offset"][idx[j]]),
                                   int(syms[j]))
            shift = np.floor(want[j] - centre - np.asarray(off) + 0.5).astype(int)
            models[i, j] = place(canvas, shift, s)
            pos_out[i, j] = centre + shift + np.asarray(off)
            lib_idx[i, j] = idx[j]
        clean = models[i].sum(axis=0)
        if cfg.noise == "poisson":
            images[i] = add_noise(clean, galsim_seed(seeds[i]), survey.sky_level,
                                  survey.read_noise, survey.gain)
        else:
            var = survey.sky_level + np.clip(clean, 0, None) + survey.read_noise ** 2
            rng = np.random.default_rng(int(seeds[i]))
            images[i] = (clean + np.sqrt(var) * rng.standard_normal(clean.shape)
                         ) / survey.gain
    return {"image": images, "models": models, "sigma": np.full(n, survey.noise_sigma,
                                                                np.float32),
            "positions": pos_out, "library_index": lib_idx, "scene_id": ids}


def build_blend_dataset(path, cfg: BlendDatasetConfig | dict, progress: bool = False) -> dict:
    """Build (or finish building) the dataset in folder ``path``; returns the manifest.

    Raises :class:`ConfigError` if ``path`` holds a dataset of another configuration.
    """
    if isinstance(cfg, dict):
        cfg = BlendDatasetConfig.from_dict(cfg)
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    mpath = manifest_path(path)
    if mpath.is_file():
        manifest = json.loads(mpath.read_text())
        have = BlendDatasetConfig.from_dict(manifest["config"]).identity()
        if have != cfg.identity():
            raise ConfigError("the folder holds a blend dataset of another configuration; "
                              "change dataset.path or delete the folder.", key="dataset.path",
                              received={"path": str(path)})
        built_by = int(manifest.get("sampler_version", 1))
        if built_by != _sampler_version():
            raise ConfigError(
                f"the folder holds a blend dataset drawn by COSMOS sampler version {built_by}"
                f" (this astrogen's is {_sampler_version()}; version 1's mag_range made faint "
                "galaxies too small and too distant); change dataset.path or delete the "
                "folder.", key="dataset.path",
                received={"path": str(path), "sampler_version": built_by})
        if manifest.get("status") == "complete":
            return manifest
    else:
        survey = cfg.survey_obj()
        manifest = {
            "format": BLEND_FORMAT, "format_version": _VERSION, "config": cfg.to_dict(),
            "sampler": "astrogen.catalog.cosmos.CosmosSampler",
            "sampler_version": _sampler_version(),
            "status": "building", "n_scenes": cfg.n_scenes, "stamp_size": cfg.stamp_size,
            "max_objects": cfg.max_objects, "pixel_scale": survey.pixel_scale,
            "noise_sigma": survey.noise_sigma, "survey": survey.to_dict(),
            "zero_point_image": image_zero_point(survey.zero_point, survey.exposure_time),
            "flux_unit": "electron",
            "created_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(),
            "python": platform.python_version(), "library": [], "shards": []}
        write_json(mpath, manifest)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.n_library + cfg.n_scenes, desc="blend dataset", unit="item")
    # phase 1: galaxy library
    done_lib = {s["file"] for s in manifest["library"]}
    for lo in range(0, cfg.n_library, cfg.library_shard_size):
        hi = min(cfg.n_library, lo + cfg.library_shard_size)
        name = f"library_{lo // cfg.library_shard_size:05d}.npz"
        if name not in done_lib:
            save_npz(path / name, **_library_shard(cfg, lo, hi))
            manifest["library"].append({"file": name, "rows": [lo, hi]})
            write_json(mpath, manifest)
        if bar is not None:
            bar.update(hi - lo)
    lib: dict[str, list] = {}
    for s in manifest["library"]:
        with np.load(path / s["file"]) as z:
            for key in z.files:
                lib.setdefault(key, []).append(z[key])
    lib_arr = {k: np.concatenate(v) for k, v in lib.items()}
    order = np.argsort(lib_arr["index"])
    lib_arr = {k: v[order] for k, v in lib_arr.items()}
    # phase 2: scenes
    done = {s["file"] for s in manifest["shards"]}
    for lo in range(0, cfg.n_scenes, cfg.shard_size):
        hi = min(cfg.n_scenes, lo + cfg.shard_size)
        name = f"scenes_{lo // cfg.shard_size:05d}.npz"
        if name not in done:
            save_npz(path / name, **_compose_shard(cfg, lib_arr, lo, hi))
            manifest["shards"].append({"file": name, "rows": [lo, hi], "n": hi - lo})
            write_json(mpath, manifest)
        if bar is not None:
            bar.update(hi - lo)
    if bar is not None:
        bar.close()
    manifest["status"] = "complete"
    write_json(mpath, manifest)
    return manifest


def read_blend_scenes(path, fields=("image", "models", "sigma"), rows: slice | None = None
                      ) -> dict:
    """Scenes of a complete dataset in id order as numpy arrays ``{field: array}``."""
    path = Path(path)
    if not blend_dataset_is_complete(path):
        raise ConfigError("the blend dataset is missing or incomplete (build it first).",
                          key="dataset.path", received={"path": str(path)})
    manifest = json.loads(manifest_path(path).read_text())

    def load(s: dict) -> dict:
        with np.load(path / s["file"]) as z:
            return {f: z[f] for f in fields}

    return select_rows(manifest["shards"], int(manifest["n_scenes"]), rows, load, fields,
                       lambda f: np.zeros(0))

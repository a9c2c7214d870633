"""HST/COSMOS-like postage stamps for training the FlowVAE, and the real COSMOS realism set.

Simulated training set (:func:`build_stamp_dataset`)
-----------------------------------------------------
Galaxy ``i`` (row id ``i`` = 0 .. n-1) is a pure function of ``(seed, i)``:

* properties (``mag``, ``hlr``, ``z``, ``sersic_n``, ``q``, ``beta``, ``bulge_frac``) from
  :class:`~astrogen.catalog.cosmos.CosmosSampler` with the row's counter-based seed;
* profile: :func:`astrogen.physics.render.galaxy_profile` (``sersic`` or ``bulge_disk``) of
  total flux ``flux_from_mag(mag, zero_point)`` in ``count/s`` (COSMOS F814W zero point
  25.94, the unit of the real COSMOS stamps: their ``stamp_flux`` matches ``MAG`` with it);
* PSF: one of the real HST/ACS PSF images shipped in ``astrogen/data/cosmos`` (by default
  the 100 + 100 of ``real_galaxy_PSF_images_extension.fits`` and
  ``real_galaxy_PSF_images.fits``), picked uniformly per galaxy;
* noise: COSMOS correlated noise (default) or white Gaussian noise, see below.

PSF handling (pixel response)
    The shipped PSF images are *pixelated* HST PSFs: each pixel value is already the
    integral of the optical PSF over a 0.03" ACS pixel (the "effective PSF"). They must not
    be convolved with the pixel a second time, so every image that involves them is drawn
    with ``method='no_pixel'``. Each PSF image is

    1. wrapped in a ``galsim.InterpolatedImage`` normalised to flux 1,
    2. recentred: shifted so that its adaptive-moment centroid (``galsim.hsm``) is at the
       origin (the raw images are centred 0.4 to 0.6 pixel away from their central pixel,
       see ``psf_library.npz: centroid_offset``),
    3. drawn on the ``N x N`` stamp grid with ``method='no_pixel'`` and
       ``use_true_center=False``, so the PSF centre is pixel ``(N // 2, N // 2)`` (0-based),
       the convention of :mod:`astrogen.models.psf_likelihood`,
    4. renormalised to a sum of exactly 1 on the stamp (the light beyond the stamp, about
       2 % of the raw images' flux for N = 64, is dropped).

    The *stored* ``N x N`` PSF image is then the one used to make the observed image:
    ``observed = (galaxy ⊗ InterpolatedImage(psf_stamp)).drawImage(method='no_pixel') +
    noise``, with the interpolated image centred on pixel ``N // 2``. The PSF-free truth is
    ``galaxy.drawImage(method='no_pixel')`` (surface brightness at the pixel centres times
    the pixel area, as :func:`astrogen.physics.render.draw_intrinsic`), so
    ``psf_likelihood.convolve(truth, psf)`` approximates the noise-free observed image up to
    the sampling of the truth and the interpolant.
    With ``pixel_scale`` other than 0.03, the PSF is resampled from its 0.03" pixels, which is
    only approximate (the 0.03" pixel response stays in it).

Noise
    ``noise: cosmos``: ``galsim.getCOSMOSNoise`` with the shipped correlation function
    ``acs_I_unrot_sci_20_cf.fits`` (HST/ACS F814W COSMOS, 0.03"), rescaled to the galaxy's
    variance. ``noise: gaussian``: white noise of the same variance (for tests, or to ignore
    the correlations). ``noise_variance``: ``"catalog"`` (default) draws each galaxy's
    variance uniformly from the ``NOISE_VARIANCE`` column of the 100 real I < 26 COSMOS
    stamps (median 6.8e-6, sigma ~ 0.0026 count/s); ``null`` uses the variance of the
    correlation-function file (1.0e-5); a number fixes it (count/s)^2.
    Per example, ``noise_sigma`` is stored; the noise power spectrum (as defined in
    :mod:`astrogen.models.psf_likelihood`, shape ``(N, N//2+1)``) is
    ``noise_variance * noise_power_unit`` with ``noise_power_unit`` (mean 1) stored once in
    ``noise_power_unit.npy`` (computed exactly from the correlation function on the periodic
    ``N x N`` grid; GalSim generates the correlated noise on that periodic grid, so the
    likelihood is exact). The loaders return ``noise_power`` per example.

Storage
    ``path/manifest.json`` (format, configuration, seed, provenance, conditions and units,
    status, one entry per shard with its rows and count), ``path/psf_library.npz`` (the
    ``N x N`` PSF stamps; each example has a ``psf_id`` into it: storing 200 PSFs once
    instead of one copy per example saves a third of the disk), ``path/noise_power_unit.npy``,
    and ``path/shard_00000.npz`` ... with per-example arrays ``row_id``, ``observed``,
    ``truth`` (PSF-free, noise-free), ``psf_id``, ``noise_sigma``, ``conditions``
    (``mag``, ``hlr`` [arcsec], ``z``) and the other drawn properties. Every file is written
    atomically; an interrupted build resumes where it stopped (complete shards are kept),
    and the examples do not depend on the shard size.

Real COSMOS stamps (:func:`load_real_cosmos`)
---------------------------------------------
The 100 I < 26 COSMOS galaxies shipped with astrogen (``galsim.RealGalaxyCatalog``), cut or
padded to ``N x N`` around the stamp centre (padding is filled with a seeded draw of the
galaxy's own correlated noise so the noise stays stationary), with their PSF images
(processed as above), noise and conditions ``MAG``, ``flux_radius * 0.03`` [arcsec] (the
SExtractor flux radius, a PSF-convolved size: larger than the PSF-free Sersic ``hlr`` of the
training set; the catalog also gives ``hlr_psf_free`` mapped with the relation of
:mod:`astrogen.catalog.cosmos`) and ``ZPHOT``.
"""
from __future__ import annotations

import dataclasses
import datetime
import json
import platform
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from astrogen.batch import COSMOS_ZERO_POINT  # AB mag of 1 count/s, ACS/WFC F814W
from astrogen.datasets.base import DatasetConfig, select_rows
from astrogen.errors import ConfigError, UnknownKeyError, suggest
from astrogen.io.atomic import atomic_path, save_npz, write_json
from astrogen.physics.photometry import flux_from_mag
from astrogen.physics.noise_power import (  # noqa: F401 (re-exported)
    COSMOS_PIXEL_SCALE, noise_power_from_correlation, psf_stamp)
from astrogen.seeds import derive_seed, galsim_seed, row_seeds, uniforms

__all__ = [
    "StampDatasetConfig",
    "build_stamp_dataset",
    "dataset_is_complete",
    "read_manifest",
    "prepare_stamp_dataset",
    "peak_flux_median",
    "read_stamps",
    "stamp_dataset",
    "load_real_cosmos",
    "psf_stamp",
    "noise_power_from_correlation",
    "MANIFEST_FORMAT",
    "CONDITION_NAMES",
    "COSMOS_ZERO_POINT",
]

MANIFEST_FORMAT = "astrogen.galaxy_stamps"
MANIFEST_FORMAT_VERSION = 1
#: Conditions stored per example: F814W AB magnitude, PSF-free half-light radius [arcsec],
#: redshift.
CONDITION_NAMES = ("mag", "hlr", "z")
CONDITION_UNITS = ("mag(AB)", "arcsec", "")
COSMOS_NOISE_FILE = "acs_I_unrot_sci_20_cf.fits"
REAL_CATALOG = "real_galaxy_catalog_26_extension_example.fits"
REAL_CATALOG_FITS = "real_galaxy_catalog_26_extension_example_fits.fits"
DEFAULT_PSF_FILES = ("real_galaxy_PSF_images_extension.fits", "real_galaxy_PSF_images.fits")
NOISE_KINDS = ("cosmos", "gaussian")
#: Per-example fields the loaders can return.
FIELDS = ("observed", "truth", "psf", "noise_sigma", "noise_power", "conditions", "row_id",
          "psf_id")


# ---------------------------------------------------------------------- configuration
@dataclasses.dataclass(frozen=True)
class StampDatasetConfig(DatasetConfig):
    """What the simulated training set contains (everything but ``shard_size`` defines it).

    Parameters
    ----------
    n_galaxies : int
        Number of examples (row ids ``0 .. n_galaxies - 1``).
    stamp_size : int
        Side ``N`` of the square stamps (pixels, even).
    pixel_scale : float
        arcsec / pixel (0.03: native COSMOS/ACS drizzled scale).
    profile : {"sersic", "bulge_disk"}
        Parametric profile (:func:`astrogen.physics.render.galaxy_profile`).
    mag_range : (float, float)
        Magnitude range given to :class:`~astrogen.catalog.cosmos.CosmosSampler`.
    psf_files : list of str
        PSF image files in ``astrogen/data/cosmos`` (every HDU is one PSF).
    noise : {"cosmos", "gaussian"}
        Correlated COSMOS noise or white noise (see module docstring).
    noise_variance : "catalog", None or float
        Per-galaxy variance from the real catalog, the correlation file's variance, or fixed.
    zero_point : float
        AB magnitude of 1 count/s.
    seed : int
        Dataset seed.
    shard_size : int
        Examples per shard file (does not change the examples).
    """

    n_galaxies: int
    stamp_size: int = 64
    pixel_scale: float = COSMOS_PIXEL_SCALE
    profile: str = "sersic"
    mag_range: tuple = (16.5, 26.0)
    psf_files: tuple = DEFAULT_PSF_FILES
    noise: str = "cosmos"
    noise_variance: Any = "catalog"
    zero_point: float = COSMOS_ZERO_POINT
    seed: int = 0
    shard_size: int = 1000

    def __post_init__(self):
        from astrogen.physics.render import PROFILES

        set_ = object.__setattr__
        for key in ("n_galaxies", "stamp_size", "shard_size", "seed"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise ConfigError("must be an integer.", key=key, received={key: value})
            set_(self, key, int(value))
        if self.n_galaxies < 1 or self.shard_size < 1:
            raise ConfigError("n_galaxies and shard_size must be >= 1.", key="n_galaxies",
                              received={"n_galaxies": self.n_galaxies,
                                        "shard_size": self.shard_size})
        if self.stamp_size < 8 or self.stamp_size % 2:
            raise ConfigError("must be an even integer >= 8.", key="stamp_size",
                              received={"stamp_size": self.stamp_size})
        if not (float(self.pixel_scale) > 0):
            raise ConfigError("must be > 0 arcsec/pixel.", key="pixel_scale",
                              received={"pixel_scale": self.pixel_scale})
        set_(self, "pixel_scale", float(self.pixel_scale))
        set_(self, "zero_point", float(self.zero_point))
        if self.profile not in PROFILES:
            raise ConfigError(f"must be one of {PROFILES}.{suggest(self.profile, PROFILES)}",
                              key="profile", received={"profile": self.profile})
        if self.noise not in NOISE_KINDS:
            raise ConfigError(f"must be one of {NOISE_KINDS}.{suggest(self.noise, NOISE_KINDS)}",
                              key="noise", received={"noise": self.noise})
        nv = self.noise_variance
        if not (nv is None or nv == "catalog"
                or (isinstance(nv, (int, float)) and not isinstance(nv, bool) and nv > 0)):
            raise ConfigError("must be 'catalog', null (variance of the correlation file) or "
                              "a number > 0 in (count/s)^2.", key="noise_variance",
                              received={"noise_variance": nv})
        if isinstance(nv, (int, float)) and not isinstance(nv, bool):
            set_(self, "noise_variance", float(nv))
        mr = tuple(float(v) for v in self.mag_range)
        if len(mr) != 2 or not mr[0] < mr[1]:
            raise ConfigError("must be [low, high] with low < high.", key="mag_range",
                              received={"mag_range": self.mag_range})
        set_(self, "mag_range", mr)
        files = (self.psf_files,) if isinstance(self.psf_files, str) else tuple(self.psf_files)
        if not files:
            raise ConfigError("needs at least one PSF file.", key="psf_files")
        from astrogen.data import cosmos_dir

        for f in files:
            if not (cosmos_dir() / f).is_file():
                have = sorted(p.name for p in cosmos_dir().glob("*PSF*.fits"))
                raise ConfigError(f"no such PSF file in astrogen/data/cosmos.{suggest(f, have)}",
                                  key="psf_files", received={"file": f})
        set_(self, "psf_files", tuple(str(f) for f in files))

    REQUIRED = ("n_galaxies",)

    def to_dict(self) -> dict:
        """The configuration as a plain ``dict`` (tuples become lists), for the manifest."""
        d = dataclasses.asdict(self)
        d["mag_range"] = list(self.mag_range)
        d["psf_files"] = list(self.psf_files)
        return d


# ---------------------------------------------------------------------- PSF and noise
def _psf_library(cfg: StampDatasetConfig) -> dict:
    from astropy.io import fits

    from astrogen.data import cosmos_dir

    stamps, files, hdus, offsets = [], [], [], []
    for f in cfg.psf_files:
        with fits.open(cosmos_dir() / f) as hl:
            for k, hdu in enumerate(hl):
                stamp, off = psf_stamp(hdu.data, cfg.stamp_size, cfg.pixel_scale)
                stamps.append(stamp)
                files.append(f)
                hdus.append(k)
                offsets.append(off)
    return {"psf": np.asarray(stamps, dtype=np.float32), "source_file": np.asarray(files),
            "hdu": np.asarray(hdus, dtype=np.int32),
            "centroid_offset": np.asarray(offsets, dtype=np.float64)}


def _base_noise(cfg: StampDatasetConfig):
    """(galsim noise of unit variance or None, variance of the file, unit power spectrum)."""
    import galsim

    from astrogen.data import cosmos_dir

    base = galsim.getCOSMOSNoise(file_name=str(cosmos_dir() / COSMOS_NOISE_FILE),
                                 cosmos_scale=COSMOS_PIXEL_SCALE)
    file_var = float(base.getVariance())
    if cfg.noise == "gaussian":
        n = cfg.stamp_size
        return None, file_var, np.ones((n, n // 2 + 1))
    unit = base.withVariance(1.0)
    power = noise_power_from_correlation(unit, cfg.stamp_size, cfg.pixel_scale)
    return unit, file_var, power


def _catalog_variances() -> np.ndarray:
    from astropy.table import Table

    from astrogen.data import cosmos_dir

    t = Table.read(cosmos_dir() / REAL_CATALOG)
    return np.asarray(t["NOISE_VARIANCE"], dtype=np.float64)


# ---------------------------------------------------------------------- manifest
def _shard_name(k: int) -> str:
    return f"shard_{k:05d}.npz"


def read_manifest(path) -> dict:
    """The ``manifest.json`` of a stamp dataset (``ConfigError`` if absent or foreign)."""
    p = Path(path) / "manifest.json"
    if not p.is_file():
        raise ConfigError("not a stamp dataset (no manifest.json).", key=str(path))
    try:
        m = json.loads(p.read_text())
    except ValueError as exc:
        raise ConfigError(f"unreadable manifest: {exc}.", key=str(p)) from None
    if m.get("format") != MANIFEST_FORMAT:
        raise ConfigError(f"not a '{MANIFEST_FORMAT}' manifest.", key=str(p),
                          received={"format": m.get("format")})
    if int(m.get("format_version", 0)) > MANIFEST_FORMAT_VERSION:
        raise ConfigError("manifest written by a newer astrogen.", key=str(p),
                          received={"format_version": m.get("format_version")})
    return m


def dataset_is_complete(path) -> bool:
    """True if ``path`` holds a complete stamp dataset."""
    try:
        m = read_manifest(path)
    except ConfigError:
        return False
    return m.get("status") == "complete" and all(
        (Path(path) / s["file"]).is_file() for s in m["shards"])


def _provenance() -> dict:
    import galsim

    from astrogen.version import __version__

    return {
        "astrogen_version": __version__,
        "galsim_version": galsim.__version__,
        "numpy_version": np.__version__,
        "python": platform.python_version(),
        "created_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "galaxy_properties": "astrogen.catalog.cosmos.CosmosSampler (Gaussian copula fitted "
                             "on the shipped COSMOS I<26 and I<23.5 catalogs)",
        "psf": "real HST/ACS F814W PSF images shipped in astrogen/data/cosmos (see "
               "PROVENANCE.md); pixelated, drawn with method='no_pixel', recentred on their "
               "adaptive-moment centroid, normalised to sum 1 on the stamp",
        "noise_correlation": f"astrogen/data/cosmos/{COSMOS_NOISE_FILE}",
        "reference": "Lanusse et al. 2021, MNRAS 504, 5543 (arXiv:2008.03833)",
    }


# ---------------------------------------------------------------------- builder
def _render_shard(cfg: StampDatasetConfig, rows: np.ndarray, sampler, psf_lib: dict,
                  psf_objects: dict, unit_noise, file_var: float,
                  catalog_var: np.ndarray) -> dict:
    import galsim

    from astrogen.physics.render import galaxy_profile

    n, npix, scale = len(rows), cfg.stamp_size, cfg.pixel_scale
    props = sampler.sample(derive_seed(cfg.seed, "catalog"), rows)
    n_psf = len(psf_lib["psf"])
    u_psf = uniforms(row_seeds(derive_seed(cfg.seed, "psf"), rows), 1)[:, 0]
    psf_id = np.minimum((u_psf * n_psf).astype(np.int64), n_psf - 1)
    if cfg.noise_variance == "catalog":
        u_var = uniforms(row_seeds(derive_seed(cfg.seed, "noise_variance"), rows), 1)[:, 0]
        k = np.minimum((u_var * len(catalog_var)).astype(np.int64), len(catalog_var) - 1)
        variance = catalog_var[k]
    elif cfg.noise_variance is None:
        variance = np.full(n, file_var)
    else:
        variance = np.full(n, float(cfg.noise_variance))
    noise_seeds = row_seeds(derive_seed(cfg.seed, "noise"), rows)
    mag = np.asarray(props["mag"], dtype=np.float64)
    flux = flux_from_mag(mag, cfg.zero_point)

    observed = np.empty((n, npix, npix), np.float32)
    truth = np.empty((n, npix, npix), np.float32)
    for i in range(n):
        gal = galaxy_profile(props[i], float(flux[i]), cfg.profile)
        img = galsim.ImageF(npix, npix, scale=scale)
        gal.drawImage(img, method="no_pixel")
        truth[i] = img.array
        pid = int(psf_id[i])
        if pid not in psf_objects:
            psf_objects[pid] = galsim.InterpolatedImage(
                galsim.ImageD(psf_lib["psf"][pid].astype(np.float64), scale=scale),
                use_true_center=False, flux=1.0)
        img = galsim.ImageF(npix, npix, scale=scale)
        galsim.Convolve(gal, psf_objects[pid]).drawImage(img, method="no_pixel")
        rng = galsim.BaseDeviate(galsim_seed(noise_seeds[i]))
        if unit_noise is None:
            img.addNoise(galsim.GaussianNoise(rng, sigma=float(np.sqrt(variance[i]))))
        else:
            img.addNoise(unit_noise.copy(rng=rng).withVariance(float(variance[i])))
        observed[i] = img.array
    cond = np.stack([mag, np.asarray(props["hlr"], float), np.asarray(props["z"], float)],
                    axis=1)
    return {
        "row_id": rows.astype(np.int64),
        "observed": observed,
        "truth": truth,
        "psf_id": psf_id.astype(np.int32),
        "noise_sigma": np.sqrt(variance).astype(np.float32),
        "conditions": cond.astype(np.float32),
        "flux": flux,
        "sersic_n": np.asarray(props["sersic_n"], np.float32),
        "q": np.asarray(props["q"], np.float32),
        "beta": np.asarray(props["beta"], np.float32),
        "bulge_frac": np.asarray(props["bulge_frac"], np.float32),
    }


def _shard_ok(file: Path, rows: np.ndarray) -> bool:
    try:
        with np.load(file) as z:
            return np.array_equal(z["row_id"], rows)
    except Exception:  # noqa: BLE001 - unreadable shard: rebuild it
        return False


def build_stamp_dataset(path, config: StampDatasetConfig | dict, progress: bool = False,
                        max_new_shards: int | None = None) -> dict:
    """Render the simulated training set into ``path`` (resumable; see module docstring).

    Parameters
    ----------
    path : str or Path
        Dataset folder (created).
    config : StampDatasetConfig or dict
    progress : bool
        Show a tqdm progress bar.
    max_new_shards : int, optional
        Stop after writing this many new shards (the manifest stays ``incomplete``; calling
        again continues). For tests and for splitting a long build.

    Returns
    -------
    dict
        The manifest.
    """
    cfg = config if isinstance(config, StampDatasetConfig) else StampDatasetConfig.from_dict(config)
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    mpath = path / "manifest.json"
    n_shards = -(-cfg.n_galaxies // cfg.shard_size)
    shards = []
    for k in range(n_shards):
        lo, hi = k * cfg.shard_size, min((k + 1) * cfg.shard_size, cfg.n_galaxies)
        shards.append({"file": _shard_name(k), "rows": [lo, hi], "n": hi - lo})
    if mpath.is_file():
        old = read_manifest(path)
        old_cfg = StampDatasetConfig.from_dict(old["config"])
        if old_cfg.identity() != cfg.identity():
            diff = {k: (v, cfg.identity()[k]) for k, v in old_cfg.identity().items()
                    if cfg.identity()[k] != v}
            raise ConfigError("the folder holds a stamp dataset with another configuration; "
                              "use another path or delete it.", key=str(path),
                              received={"differences (existing, requested)": diff})
        if old.get("status") == "complete" and dataset_is_complete(path):
            return old
        if old_cfg.shard_size != cfg.shard_size:
            raise ConfigError("an incomplete build with another shard_size is in this folder; "
                              "resume with the same shard_size.", key="shard_size",
                              received={"existing": old_cfg.shard_size,
                                        "requested": cfg.shard_size})
        provenance = old.get("provenance") or _provenance()
    else:
        provenance = _provenance()

    import galsim

    from astrogen.catalog.cosmos import CosmosSampler

    psf_lib = _psf_library(cfg)
    unit_noise, file_var, unit_power = _base_noise(cfg)
    lib_file = path / "psf_library.npz"
    save_npz(lib_file, **psf_lib)
    with atomic_path(path / "noise_power_unit.npy") as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, unit_power.astype(np.float32))
    manifest = {
        "format": MANIFEST_FORMAT,
        "format_version": MANIFEST_FORMAT_VERSION,
        "status": "incomplete",
        "config": cfg.to_dict(),
        "seed": cfg.seed,
        "n_galaxies": cfg.n_galaxies,
        "n_shards": n_shards,
        "stamp_size": cfg.stamp_size,
        "pixel_scale": cfg.pixel_scale,
        "flux_unit": "count/s",
        "zero_point": cfg.zero_point,
        "conditions": {"names": list(CONDITION_NAMES), "units": list(CONDITION_UNITS),
                       "description": "F814W AB magnitude, PSF-free half-light radius of the "
                                      "drawn profile, photometric redshift of the sampler"},
        "psf": {"library": lib_file.name, "n": int(len(psf_lib["psf"])),
                "files": list(cfg.psf_files),
                "centre_pixel": [cfg.stamp_size // 2, cfg.stamp_size // 2],
                "handling": "pixelated HST PSFs: InterpolatedImage, recentred on the "
                            "adaptive-moment centroid, drawn with method='no_pixel' and "
                            "use_true_center=False, normalised to sum 1 on the stamp; the "
                            "observed image is galaxy x InterpolatedImage(stored PSF) drawn "
                            "with method='no_pixel'"},
        "noise": {"kind": cfg.noise, "variance": cfg.noise_variance,
                  "file_variance": file_var, "unit_power_file": "noise_power_unit.npy",
                  "correlation_file": COSMOS_NOISE_FILE if cfg.noise == "cosmos" else None,
                  "noise_power": "noise_sigma**2 * noise_power_unit, convention of "
                                 "astrogen.models.psf_likelihood"},
        "truth": "PSF-free, noise-free profile drawn with method='no_pixel'",
        "galaxy_centre": "true centre of the stamp, pixel ((N-1)/2, (N-1)/2) 0-based",
        "shards": [],
        "provenance": provenance,
    }
    write_json(mpath, manifest)

    sampler = CosmosSampler(mag_range=cfg.mag_range)
    catalog_var = _catalog_variances()
    psf_objects: dict[int, galsim.GSObject] = {}
    done = []
    written = 0
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.n_galaxies, desc="stamps", unit="gal")
    try:
        for s in shards:
            rows = np.arange(*s["rows"], dtype=np.int64)
            file = path / s["file"]
            if not (file.is_file() and _shard_ok(file, rows)):
                if max_new_shards is not None and written >= max_new_shards:
                    break
                arrays = _render_shard(cfg, rows, sampler, psf_lib, psf_objects, unit_noise,
                                       file_var, catalog_var)
                save_npz(file, **arrays)
                written += 1
            done.append(s)
            manifest["shards"] = done
            write_json(mpath, manifest)
            if bar is not None:
                bar.update(s["n"])
    finally:
        if bar is not None:
            bar.close()
    if len(done) == n_shards:
        manifest["status"] = "complete"
        write_json(mpath, manifest)
    return manifest


# ---------------------------------------------------------------------- readers
class _Reader:
    """Reads shards of a dataset and turns stored arrays into per-example fields."""

    def __init__(self, path, fields: Iterable[str]):
        self.path = Path(path)
        self.manifest = read_manifest(self.path)
        if self.manifest.get("status") != "complete":
            raise ConfigError("the stamp dataset is incomplete (resume its build).",
                              key=str(self.path))
        self.fields = tuple(fields)
        for f in self.fields:
            if f not in FIELDS:
                raise UnknownKeyError(f"unknown field.{suggest(f, FIELDS)}", key="fields",
                                      received={"field": f, "allowed": FIELDS})
        # real-galaxy data sets (datasets.real_galaxies) store psf and noise_power per row
        self.psf_lib = self.unit_power = None
        if self.manifest["psf"].get("library"):
            with np.load(self.path / self.manifest["psf"]["library"]) as z:
                self.psf_lib = z["psf"].astype(np.float32)
        if self.manifest["noise"].get("unit_power_file"):
            self.unit_power = np.load(self.path / self.manifest["noise"]["unit_power_file"])
        self.n = int(self.manifest["n_galaxies"])
        self.stamp_size = int(self.manifest["stamp_size"])

    def shard(self, k: int) -> dict:
        """Per-example fields of shard ``k`` as numpy arrays."""
        s = self.manifest["shards"][k]
        out = {}
        with np.load(self.path / s["file"]) as z:
            for f in self.fields:
                if f in ("psf", "noise_power") and f in z.files:
                    out[f] = z[f]
                elif f == "psf":
                    out[f] = self.psf_lib[z["psf_id"]]
                elif f == "noise_power":
                    var = z["noise_sigma"].astype(np.float32) ** 2
                    out[f] = var[:, None, None] * self.unit_power[None]
                else:
                    out[f] = z[f]
        return out

    def signature(self) -> dict:
        import tensorflow as tf

        n = self.stamp_size
        shapes = {"observed": (n, n), "truth": (n, n), "psf": (n, n), "noise_sigma": (),
                  "noise_power": (n, n // 2 + 1), "conditions": (len(CONDITION_NAMES),),
                  "row_id": (), "psf_id": ()}
        dtypes = {"row_id": tf.int64, "psf_id": tf.int32}
        return {f: tf.TensorSpec(shapes[f], dtypes.get(f, tf.float32)) for f in self.fields}


def prepare_stamp_dataset(section: dict, progress: bool = False) -> tuple[Path, dict]:
    """The stamp data set of a training file's ``dataset`` section (``path`` + the
    :class:`StampDatasetConfig` fields): built (or completed) if its folder is incomplete,
    checked to be the configured one otherwise. Returns ``(path, manifest)``.

    Raises
    ------
    ConfigError
        ``dataset.path`` holds another data set (the differing fields are listed).
    """
    ds = dict(section)
    path = Path(ds.pop("path"))
    dcfg = StampDatasetConfig.from_dict(ds)
    if dataset_is_complete(path):
        manifest = read_manifest(path)
        have = StampDatasetConfig.from_dict(manifest["config"]).identity()
        if have != dcfg.identity():
            diff = {k: (v, dcfg.identity()[k]) for k, v in have.items()
                    if dcfg.identity()[k] != v}
            raise ConfigError("the dataset folder holds another dataset; change dataset.path "
                              "or delete the folder.", key="dataset.path",
                              received={"path": str(path),
                                        "differences (existing, configured)": diff})
        return path, manifest
    return path, build_stamp_dataset(path, dcfg, progress=progress)


def peak_flux_median(path, n: int = 1024) -> float:
    """Median over (up to) the first ``n`` stamps of their brightest observed pixel (in the
    data set's flux unit)."""
    r = _Reader(path, ("observed",))
    maxima, k = [], 0
    while sum(len(m) for m in maxima) < n and k < len(r.manifest["shards"]):
        maxima.append(r.shard(k)["observed"].max(axis=(1, 2)))
        k += 1
    return float(np.median(np.concatenate(maxima)[:n]))


def read_stamps(path, fields: Iterable[str] = ("observed", "psf", "noise_sigma", "conditions"),
                rows: slice | None = None) -> dict:
    """Examples in row order as numpy arrays ``{field: array}``: all of them, or the rows
    ``rows`` (a slice with step 1; only the shards holding them are read)."""
    r = _Reader(path, fields)
    entries = [dict(e, k=k) for k, e in enumerate(r.manifest["shards"])]
    return select_rows(entries, r.n, rows, lambda e: r.shard(e["k"]), r.fields,
                       lambda f: np.zeros((0,) + tuple(r.signature()[f].shape)))


def _example_stream(reader: _Reader, shuffle_buffer: int, seed: int, epoch: int,
                    repeat: bool) -> Iterator[dict]:
    e = epoch
    while True:
        n_shards = len(reader.manifest["shards"])
        rng = np.random.default_rng(derive_seed(seed, "stamp_dataset", e))
        order = rng.permutation(n_shards) if shuffle_buffer > 1 else np.arange(n_shards)
        buffer: list[dict] = []
        for k in order:
            data = reader.shard(int(k))
            for j in range(len(next(iter(data.values())))):
                ex = {f: v[j] for f, v in data.items()}
                if shuffle_buffer <= 1:
                    yield ex
                    continue
                if len(buffer) < shuffle_buffer:
                    buffer.append(ex)
                    continue
                i = int(rng.integers(shuffle_buffer))
                yield buffer[i]
                buffer[i] = ex
        while buffer:  # drain in random order
            yield buffer.pop(int(rng.integers(len(buffer))))
        if not repeat:
            return
        e += 1


def stamp_dataset(path, batch_size: int,
                  fields: Iterable[str] = ("observed", "psf", "noise_power", "conditions"),
                  shuffle_buffer: int = 1024, seed: int = 0, epoch: int = 0,
                  repeat: bool = False, drop_remainder: bool = True, prefetch: int = 2):
    """``tf.data.Dataset`` streaming the shards of a stamp dataset in batches.

    Each element is a dict ``{field: tensor (B, ...)}`` (fields among ``observed``,
    ``truth``, ``psf``, ``noise_sigma``, ``noise_power``, ``conditions``, ``row_id``,
    ``psf_id``). Shards are read one at a time (memory: one shard plus the buffer).

    Shuffling: each epoch ``e`` visits the shards in a random order and passes the examples
    through a shuffle buffer of ``shuffle_buffer`` examples; both use a numpy generator
    seeded with ``derive_seed(seed, "stamp_dataset", e)``, so the order is a function of
    ``(seed, e)`` only (not of TensorFlow's global seed). ``shuffle_buffer <= 1``: row order.
    ``repeat=True`` continues with epochs ``epoch + 1``, ``epoch + 2``, ... forever.
    """
    import tensorflow as tf

    reader = _Reader(path, fields)
    if int(batch_size) < 1:
        raise ConfigError("must be >= 1.", key="batch_size", received={"batch_size": batch_size})
    ds = tf.data.Dataset.from_generator(
        lambda: _example_stream(reader, int(shuffle_buffer), int(seed), int(epoch), repeat),
        output_signature=reader.signature())
    ds = ds.batch(int(batch_size), drop_remainder=drop_remainder)
    return ds.prefetch(int(prefetch)) if prefetch else ds


# ---------------------------------------------------------------------- real COSMOS stamps
def load_real_cosmos(stamp_size: int = 64, seed: int = 0) -> dict:
    """The 100 real I < 26 COSMOS stamps shipped with astrogen, as a held-out realism set.

    Parameters
    ----------
    stamp_size : int
        ``N``: stamps are cut (centred) or padded to ``N x N``; padding is a seeded draw of
        the galaxy's own correlated noise (``RealGalaxyCatalog.getNoise``), so the noise
        stays stationary.
    seed : int
        Seed of the padding noise.

    Returns
    -------
    dict
        ``observed`` (100, N, N) float32 count/s; ``psf`` (100, N, N) float32 (centre
        ``N // 2``, sum 1, processed as the training PSFs); ``noise_sigma`` (100,);
        ``noise_power`` (100, N, N//2+1); ``conditions`` (100, 3): ``MAG``,
        ``flux_radius * 0.03`` [arcsec], ``ZPHOT``; ``condition_names``; ``catalog``
        (astropy Table: ident, mag, flux_radius [pix], size_arcsec, hlr_psf_free [arcsec,
        the sampler's mapping of flux_radius], zphot, noise_variance, original_size).
    """
    import galsim
    from astropy.table import Table

    from astrogen.catalog.cosmos import load_cosmos_properties
    from astrogen.data import cosmos_dir
    from astrogen.datasets.real_galaxies import real_stamp

    n = int(stamp_size)
    if n < 8 or n % 2:
        raise ConfigError("must be an even integer >= 8.", key="stamp_size",
                          received={"stamp_size": stamp_size})
    d = cosmos_dir()
    cat = galsim.RealGalaxyCatalog(REAL_CATALOG, dir=str(d))
    tab = Table.read(d / REAL_CATALOG)
    fits_tab = Table.read(d / REAL_CATALOG_FITS)
    if not np.array_equal(np.asarray(tab["IDENT"]), np.asarray(fits_tab["IDENT"])):
        raise ConfigError("the two COSMOS catalog files are not row-aligned.",
                          key=REAL_CATALOG_FITS)
    props, _ = load_cosmos_properties()
    hlr_mapped = np.asarray(props["hlr"][np.asarray(props["sample"]) == "I<26"], float)
    m = cat.nobjects
    observed = np.empty((m, n, n), np.float32)
    psf = np.empty((m, n, n), np.float32)
    power = np.empty((m, n, n // 2 + 1), np.float32)
    variance = np.asarray(tab["NOISE_VARIANCE"], np.float64)
    sizes = np.empty(m, np.int32)
    unit_power: dict = {}
    for i in range(m):  # one galaxy as the real-galaxy training set reads it
        one = real_stamp(cat, i, n, seed, unit_power)
        observed[i], psf[i], power[i] = one["observed"], one["psf"], one["noise_power"]
        sizes[i] = one["original_size"]
    size = COSMOS_PIXEL_SCALE * np.asarray(fits_tab["flux_radius"], np.float64)
    cond = np.stack([np.asarray(tab["MAG"], np.float64), size,
                     np.asarray(fits_tab["ZPHOT"], np.float64)], axis=1)
    catalog = Table()
    catalog["ident"] = np.asarray(tab["IDENT"])
    catalog["mag"] = cond[:, 0]
    catalog["flux_radius"] = np.asarray(fits_tab["flux_radius"], np.float64)
    catalog["size_arcsec"] = size
    catalog["hlr_psf_free"] = hlr_mapped
    catalog["zphot"] = cond[:, 2]
    catalog["noise_variance"] = variance
    catalog["original_size"] = sizes
    return {"observed": observed, "psf": psf, "noise_sigma": np.sqrt(variance).astype(np.float32),
            "noise_power": power, "conditions": cond.astype(np.float32),
            "condition_names": ["mag", "size_arcsec", "zphot"], "catalog": catalog}

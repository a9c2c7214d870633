"""Training set of real galaxies from a GalSim ``RealGalaxyCatalog`` directory.

Reads any catalog in the GalSim "RealGalaxyCatalog" format: the 100-galaxy I < 26 sample
shipped in ``astrogen/data/cosmos`` or the 87,000-galaxy COSMOS 25.2 training sample that
``galsim_download_cosmos`` installs (``real_galaxy_catalog_25.2.fits``, its
``real_galaxy_catalog_25.2_fits.fits`` and the image / PSF files they name). With
``catalog_dir: auto`` the downloaded sample is used where GalSim put it
(``galsim.meta_data.share_dir/COSMOS_25.2_training_sample``), else the shipped one, so the
same training file runs unchanged on both.

Row ``r`` of the written data set is galaxy ``g = r // A`` of the training split seen
through dihedral transformation ``a = r % A`` (``A = 8`` with ``augment: dihedral``, 1 with
``none``). Per galaxy:

* ``observed``: the HST stamp in ``count/s`` per 0.03" pixel, cut or padded to ``N x N``
  about its true centre (padding: a seeded draw of the galaxy's own correlated noise,
  ``RealGalaxyCatalog.getNoise``, so the noise stays stationary);
* ``psf``: its own PSF image processed as the simulated set's
  (:func:`astrogen.physics.noise_power.psf_stamp`: recentred, ``N x N``, centre pixel
  ``N // 2``, sum 1);
* ``noise_power``: the power spectrum ``(N, N//2+1)`` of its own correlated noise
  (correlation file ``NOISE_FILENAME`` at variance ``NOISE_VARIANCE``), in the convention of
  :mod:`astrogen.models.psf_likelihood`; ``noise_sigma`` its square root of the variance;
* ``conditions`` (``mag``, ``hlr`` [arcsec], ``z``): ``MAG``; the circularised Sersic
  half-light radius of the ``_fits`` table's viable Sersic fit, else its ``flux_radius``
  mapped by :func:`astrogen.catalog.cosmos.flux_radius_to_hlr`; ``zphot``. Galaxies with a
  non-finite or non-positive condition are left out (counted in the manifest).

Augmentation transforms image, PSF and noise power together, so the PSF-aware likelihood
stays exact: transposition, then flips of y and x (``a = t + 2 fy + 4 fx``). The galaxy is
flipped about the stamp's true centre, the PSF about pixel ``N // 2`` (flip, then a roll by
one pixel), and the noise power by the same maps of the wave-vector (``k -> -k`` per flipped
axis, ``(ky, kx) -> (kx, ky)``), applied on the full plane rebuilt from the half plane.

Split: a fraction ``holdout_fraction`` of the galaxies (chosen by ``seed``, whole galaxies,
never one of their transforms) is written, untransformed, to the data set ``path/holdout``
(same format); the trainers evaluate the ELBO there. Storage is the format of
:mod:`astrogen.datasets.galaxy_stamps` (``manifest.json`` + shards, atomic writes, a build
resumes where it stopped) with per-example ``psf`` and ``noise_power``, so
:func:`~astrogen.datasets.galaxy_stamps.stamp_dataset` and
:func:`~astrogen.datasets.galaxy_stamps.read_stamps` stream it. Disk: about 41 kB per row at
``N = 64`` (90 shipped galaxies x 8 + 10 held out: 29 MB); the 90 % training split of the
25.2 sample x 8: about 26 GB (``augment: none``: 3.3 GB).
"""
from __future__ import annotations

import dataclasses
import datetime
import platform
from pathlib import Path
from typing import Any

import numpy as np

from astrogen.constants import COSMOS_PIXEL_SCALE
from astrogen.datasets.base import DatasetConfig
from astrogen.errors import ConfigError
from astrogen.io.atomic import save_npz, write_json
from astrogen.physics.noise_power import noise_power_from_correlation, psf_stamp
from astrogen.seeds import derive_seed, galsim_seed, row_seeds

__all__ = ["RealGalaxyDatasetConfig", "build_real_dataset", "prepare_real_dataset",
           "resolve_catalog", "dihedral_image", "dihedral_psf", "dihedral_power",
           "real_stamp", "SOURCE", "FULL_SAMPLE_CATALOG", "SHIPPED_CATALOG", "AUGMENTS",
           "N_TRANSFORMS"]

#: ``dataset.source`` of a training file that selects this data set
SOURCE = "real_galaxy_catalog"
#: catalog file of the COSMOS 25.2 training sample (``galsim_download_cosmos``)
FULL_SAMPLE_CATALOG = "real_galaxy_catalog_25.2.fits"
FULL_SAMPLE_DIR = "COSMOS_25.2_training_sample"
#: the 100-galaxy I < 26 sample shipped in ``astrogen/data/cosmos``
SHIPPED_CATALOG = "real_galaxy_catalog_26_extension_example.fits"
AUGMENTS = ("dihedral", "none")
N_TRANSFORMS = {"dihedral": 8, "none": 1}
HOLDOUT = "holdout"


# ---------------------------------------------------------------------- configuration
@dataclasses.dataclass(frozen=True)
class RealGalaxyDatasetConfig(DatasetConfig):
    """What the real-galaxy training set contains (everything but ``shard_size``).

    Parameters
    ----------
    source : str
        Must be ``"real_galaxy_catalog"`` (selects this data set in a training file).
    catalog_dir : str
        Folder of the catalog; ``"auto"``: GalSim's download folder of the COSMOS 25.2
        sample if it holds ``real_galaxy_catalog_25.2.fits``, else the shipped sample.
    catalog_file : str or None
        Catalog file name in ``catalog_dir`` (``None``: ``real_galaxy_catalog_25.2.fits`` if
        present there, else the shipped sample's).
    fits_file : str or None
        Table with ``flux_radius`` / ``zphot`` / Sersic fits (``None``: the catalog name
        with ``_fits`` before ``.fits``).
    stamp_size : int
        ``N``, even, pixels of 0.03".
    max_galaxies : int or None
        Use only the first galaxies of the catalog (``None``: all).
    holdout_fraction : float
        Fraction of the galaxies held out (``0 <= f < 1``).
    augment : {"dihedral", "none"}
        The 8 rotations by 90 deg and flips of each training galaxy, or none.
    shard_size : int
        Rows per shard file.
    seed : int
        Seed of the split and of the padding noise.
    """

    source: str = SOURCE
    catalog_dir: str = "auto"
    catalog_file: Any = None
    fits_file: Any = None
    stamp_size: int = 64
    max_galaxies: Any = None
    holdout_fraction: float = 0.1
    augment: str = "dihedral"
    shard_size: int = 512
    seed: int = 0

    REQUIRED = ("source",)

    def check(self) -> None:
        """Check every field; a ConfigError names the key and the value received."""
        if self.source != SOURCE:
            raise ConfigError(f"must be '{SOURCE}'.", key="source",
                              received={"source": self.source})
        n = self.stamp_size
        if not isinstance(n, int) or isinstance(n, bool) or n < 8 or n % 2:
            raise ConfigError("must be an even integer >= 8 (pixels).", key="stamp_size",
                              received={"stamp_size": n})
        m = self.max_galaxies
        if m is not None and (not isinstance(m, int) or isinstance(m, bool) or m < 2):
            raise ConfigError("must be null or an integer >= 2.", key="max_galaxies",
                              received={"max_galaxies": m})
        f = self.holdout_fraction
        if isinstance(f, bool) or not isinstance(f, (int, float)) or not (0 <= f < 1):
            raise ConfigError("must be a number in [0, 1).", key="holdout_fraction",
                              received={"holdout_fraction": f})
        if self.augment not in AUGMENTS:
            raise ConfigError(f"must be one of {AUGMENTS}.", key="augment",
                              received={"augment": self.augment})
        s = self.shard_size
        if not isinstance(s, int) or isinstance(s, bool) or s < 1:
            raise ConfigError("must be an integer >= 1.", key="shard_size",
                              received={"shard_size": s})
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            raise ConfigError("must be an integer >= 0.", key="seed",
                              received={"seed": self.seed})
        for key in ("catalog_dir", "catalog_file", "fits_file"):
            v = getattr(self, key)
            if v is not None and not isinstance(v, str):
                raise ConfigError("must be a string (a path or file name).", key=key,
                                  received={key: v})
        if not self.catalog_dir:
            raise ConfigError("must be a folder or 'auto'.", key="catalog_dir",
                              received={"catalog_dir": self.catalog_dir})

    @property
    def n_galaxies(self) -> None:
        """Unknown before the catalog is read (the trainers check batch sizes later)."""
        return None


def resolve_catalog(cfg: RealGalaxyDatasetConfig) -> tuple[Path, str, str]:
    """``(folder, catalog file, fits file)`` the configuration designates.

    Raises
    ------
    ConfigError
        Naming ``catalog_dir`` / ``catalog_file`` / ``fits_file`` when a file is missing.
    """
    from astrogen.data import cosmos_dir

    if cfg.catalog_dir == "auto":
        import galsim

        full = Path(galsim.meta_data.share_dir) / FULL_SAMPLE_DIR
        folder = full if (full / FULL_SAMPLE_CATALOG).is_file() else cosmos_dir()
    else:
        folder = Path(cfg.catalog_dir).expanduser()
        if not folder.is_dir():
            raise ConfigError("is not a folder.", key="catalog_dir",
                              received={"catalog_dir": cfg.catalog_dir})
    name = cfg.catalog_file
    if name is None:
        name = FULL_SAMPLE_CATALOG if (folder / FULL_SAMPLE_CATALOG).is_file() \
            else SHIPPED_CATALOG
    if not (folder / name).is_file():
        raise ConfigError("no such catalog file in catalog_dir.", key="catalog_file",
                          received={"catalog_file": name, "catalog_dir": str(folder)})
    fits_name = cfg.fits_file or name.replace(".fits", "_fits.fits")
    if not (folder / fits_name).is_file():
        raise ConfigError("no such file in catalog_dir (the catalog's _fits table).",
                          key="fits_file",
                          received={"fits_file": fits_name, "catalog_dir": str(folder)})
    return folder, name, fits_name


# ---------------------------------------------------------------------- augmentation
def _parts(a: int) -> tuple[int, int, int]:
    a = int(a)
    if not 0 <= a < 8:
        raise ConfigError("must be in 0..7.", key="transform", received={"transform": a})
    return a & 1, (a >> 1) & 1, (a >> 2) & 1


def dihedral_image(img: np.ndarray, a: int) -> np.ndarray:
    """Transform ``a`` (0..7) of images ``(..., N, N)`` about their true centre:
    transpose if ``a & 1``, then flip y if ``a & 2``, flip x if ``a & 4``."""
    t, fy, fx = _parts(a)
    out = np.swapaxes(img, -1, -2) if t else img
    if fy:
        out = np.flip(out, -2)
    if fx:
        out = np.flip(out, -1)
    return np.ascontiguousarray(out)


def dihedral_psf(psf: np.ndarray, a: int) -> np.ndarray:
    """Transform ``a`` of PSF stamps ``(..., N, N)`` centred on pixel ``N // 2``: as
    :func:`dihedral_image`, each flip followed by a roll of one pixel, so the centre stays
    on pixel ``N // 2`` (the rolled-over edge row carries ~1e-4 of the light)."""
    t, fy, fx = _parts(a)
    out = np.swapaxes(psf, -1, -2) if t else psf
    if fy:
        out = np.roll(np.flip(out, -2), 1, axis=-2)
    if fx:
        out = np.roll(np.flip(out, -1), 1, axis=-1)
    return np.ascontiguousarray(out)


def dihedral_power(power: np.ndarray, a: int) -> np.ndarray:
    """Transform ``a`` of noise power spectra ``(N, N//2+1)`` (``rfft2`` half plane of an
    ``N x N`` field): the spectrum of the transformed noise field."""
    t, fy, fx = _parts(a)
    ny, nh = power.shape[-2:]
    n = ny
    if nh != n // 2 + 1:
        raise ConfigError("must have shape (N, N//2+1).", key="noise_power",
                          received={"shape": power.shape})
    ky = np.arange(n)[:, None]
    kx = np.arange(n)[None, :]
    # full plane: P(ky, kx) = P(-ky, -kx) for kx > N/2
    neg = kx > n // 2
    full = np.where(neg, power[..., (-ky) % n, np.where(neg, (n - kx) % n, 0)],
                    power[..., ky, np.minimum(kx, n // 2)])
    if t:
        full = np.swapaxes(full, -1, -2)
    if fy:
        full = full[..., (-np.arange(n)) % n, :]
    if fx:
        full = full[..., :, (-np.arange(n)) % n]
    return np.ascontiguousarray(full[..., : n // 2 + 1])


# ---------------------------------------------------------------------- one galaxy
def real_stamp(catalog, i: int, n: int, seed: int, unit_power: dict | None = None) -> dict:
    """Galaxy ``i`` of a ``galsim.RealGalaxyCatalog`` on an ``N x N`` stamp.

    Returns
    -------
    dict
        ``observed`` (N, N) float32 count/s (cut or padded about the true centre, padding a
        draw of the galaxy's own noise seeded by ``(seed, i)``), ``psf`` (N, N) float32,
        ``noise_power`` (N, N//2+1) float32, ``noise_sigma`` (float), ``original_size``
        (int, pixels) and ``flux_in_stamp`` (fraction of the original stamp's sum kept).
        ``unit_power`` caches the unit-variance spectrum of each noise file.
    """
    import galsim

    gal = catalog.getGalImage(i).array.astype(np.float64)
    noise = catalog.getNoise(i)
    variance = float(noise.getVariance())
    rng = galsim.BaseDeviate(galsim_seed(row_seeds(derive_seed(seed, "real_pad"),
                                                   np.array([i]))[0]))
    canvas = galsim.ImageD(n, n, scale=COSMOS_PIXEL_SCALE)
    canvas.addNoise(noise.copy(rng=rng))
    out = canvas.array
    gy, gx = gal.shape
    oy, ox = (n - gy) // 2, (n - gx) // 2
    sy0, sx0 = max(0, -oy), max(0, -ox)
    dy0, dx0 = max(0, oy), max(0, ox)
    hy, hx = min(gy - sy0, n - dy0), min(gx - sx0, n - dx0)
    out[dy0:dy0 + hy, dx0:dx0 + hx] = gal[sy0:sy0 + hy, sx0:sx0 + hx]
    total = gal.sum()
    kept = gal[sy0:sy0 + hy, sx0:sx0 + hx].sum() / total if total > 0 else 1.0
    key = str(catalog.noise_file_name[i]) if hasattr(catalog, "noise_file_name") else ""
    cache = unit_power if unit_power is not None else {}
    if key not in cache or not key:
        cache[key] = noise_power_from_correlation(noise.withVariance(1.0), n,
                                                  COSMOS_PIXEL_SCALE)
    return {"observed": out.astype(np.float32),
            "psf": psf_stamp(catalog.getPSFImage(i).array, n)[0].astype(np.float32),
            "noise_power": (variance * cache[key]).astype(np.float32),
            "noise_sigma": float(np.sqrt(variance)), "original_size": int(max(gy, gx)),
            "flux_in_stamp": float(kept)}


# ---------------------------------------------------------------------- builder
def _read_conditions(folder: Path, name: str, fits_name: str) -> tuple[np.ndarray, np.ndarray,
                                                                        dict]:
    """(conditions (M, 3), IDENT (M,), how hlr was obtained per source) of the catalog."""
    from astropy.table import Table

    from astrogen.catalog.cosmos import flux_radius_to_hlr

    tab = Table.read(folder / name)
    fits_tab = Table.read(folder / fits_name)
    if len(tab) != len(fits_tab) or ("IDENT" in fits_tab.colnames and not np.array_equal(
            np.asarray(tab["IDENT"]), np.asarray(fits_tab["IDENT"]))):
        raise ConfigError("the catalog and its _fits table are not row-aligned.",
                          key="fits_file", received={"catalog": name, "fits_file": fits_name})
    cols = {c.lower(): c for c in fits_tab.colnames}
    for need in ("flux_radius", "zphot"):
        if need not in cols:
            raise ConfigError(f"the _fits table has no '{need}' column.", key="fits_file",
                              received={"columns": fits_tab.colnames})
    fr = COSMOS_PIXEL_SCALE * np.asarray(fits_tab[cols["flux_radius"]], dtype=float)
    hlr = flux_radius_to_hlr(fr)
    n_sersic = 0
    if "sersicfit" in cols and "viable_sersic" in cols:
        s = np.asarray(fits_tab[cols["sersicfit"]], dtype=float)
        q = s[:, 3]
        fit = COSMOS_PIXEL_SCALE * s[:, 1] * np.sqrt(np.clip(q, 0, None))
        ok = (np.asarray(fits_tab[cols["viable_sersic"]]).astype(bool) & (fit > 0)
              & (s[:, 2] >= 0.3) & (s[:, 2] <= 6.2) & (q > 0) & (q <= 1))
        hlr = np.where(ok, fit, hlr)
        n_sersic = int(ok.sum())
    cond = np.stack([np.asarray(tab["MAG"], float), hlr,
                     np.asarray(fits_tab[cols["zphot"]], float)], axis=1)
    how = {"hlr_from_sersic_fit": n_sersic, "hlr_from_flux_radius": int(len(tab) - n_sersic)}
    return cond, np.asarray(tab["IDENT"]), how


def _provenance(folder: Path, name: str) -> dict:
    import galsim

    from astrogen.version import __version__

    return {"astrogen_version": __version__, "galsim_version": galsim.__version__,
            "numpy_version": np.__version__, "python": platform.python_version(),
            "created_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(
                timespec="seconds"),
            "catalog": str(folder / name),
            "reference": "HST/ACS COSMOS F814W (Koekemoer et al. 2007; Mandelbaum et al. "
                         "2012); GalSim RealGalaxyCatalog format"}


def _write_set(path: Path, cfg: RealGalaxyDatasetConfig, catalog, galaxies: np.ndarray,
               cond: np.ndarray, ident: np.ndarray, n_transforms: int, extra: dict,
               provenance: dict) -> dict:
    """Write galaxies x transforms as a stamp data set in ``path`` (resumable)."""
    from astrogen.datasets.galaxy_stamps import (CONDITION_NAMES, CONDITION_UNITS,
                                                 MANIFEST_FORMAT, MANIFEST_FORMAT_VERSION,
                                                 dataset_is_complete, read_manifest)

    path.mkdir(parents=True, exist_ok=True)
    n_rows = len(galaxies) * n_transforms
    ident_cfg = {"config": cfg.identity(), "galaxies": galaxies.tolist(),
                 "n_transforms": n_transforms}
    if (path / "manifest.json").is_file():
        old = read_manifest(path)
        if old.get("identity") != ident_cfg:
            raise ConfigError("the folder holds another real-galaxy data set; use another "
                              "dataset.path or delete it.", key="dataset.path",
                              received={"path": str(path)})
        if dataset_is_complete(path):
            return old
    n = cfg.stamp_size
    size = cfg.shard_size
    shards = [{"file": f"shard_{k:05d}.npz", "rows": [lo, min(lo + size, n_rows)],
               "n": min(lo + size, n_rows) - lo}
              for k, lo in enumerate(range(0, n_rows, size))]
    manifest = {
        "format": MANIFEST_FORMAT, "format_version": MANIFEST_FORMAT_VERSION,
        "source": SOURCE, "status": "incomplete", "config": cfg.to_dict(),
        "identity": ident_cfg, "seed": cfg.seed, "n_galaxies": n_rows,
        "n_unique_galaxies": int(len(galaxies)), "n_transforms": n_transforms,
        "n_shards": len(shards), "stamp_size": n, "pixel_scale": COSMOS_PIXEL_SCALE,
        "flux_unit": "count/s",
        "conditions": {"names": list(CONDITION_NAMES), "units": list(CONDITION_UNITS),
                       "description": "MAG; circularised Sersic hlr of the viable fits, else "
                                      "flux_radius mapped (catalog.cosmos."
                                      "flux_radius_to_hlr); zphot"},
        "psf": {"per_example": True, "centre_pixel": [n // 2, n // 2],
                "handling": "each galaxy's own PSF image, physics.noise_power.psf_stamp"},
        "noise": {"kind": "catalog", "per_example": True,
                  "noise_power": "each galaxy's correlation file at its NOISE_VARIANCE, "
                                 "convention of astrogen.models.psf_likelihood"},
        "row": "row r = galaxy galaxies[r // n_transforms] seen through dihedral transform "
               "r % n_transforms (datasets.real_galaxies.dihedral_*)",
        "galaxy_centre": "true centre of the stamp, pixel ((N-1)/2, (N-1)/2) 0-based",
        **extra, "shards": [], "provenance": provenance,
    }
    write_json(path / "manifest.json", manifest)
    unit_power: dict = {}
    done = []
    for s in shards:
        file = path / s["file"]
        rows = np.arange(*s["rows"], dtype=np.int64)
        ok = False
        if file.is_file():
            try:
                with np.load(file) as z:
                    ok = np.array_equal(z["row_id"], rows)
            except Exception:  # noqa: BLE001 - unreadable shard: rebuild it
                ok = False
        if not ok:
            arrays = {k: [] for k in ("observed", "psf", "noise_power", "noise_sigma",
                                      "conditions", "row_id", "galaxy_index", "ident",
                                      "transform", "original_size", "flux_in_stamp")}
            cache: dict = {}
            for r in rows:
                g, a = divmod(int(r), n_transforms)
                i = int(galaxies[g])
                if i not in cache:
                    cache = {i: real_stamp(catalog, i, n, cfg.seed, unit_power)}
                st = cache[i]
                arrays["observed"].append(dihedral_image(st["observed"], a))
                arrays["psf"].append(dihedral_psf(st["psf"], a))
                arrays["noise_power"].append(dihedral_power(st["noise_power"], a))
                arrays["noise_sigma"].append(st["noise_sigma"])
                arrays["conditions"].append(cond[i])
                arrays["row_id"].append(r)
                arrays["galaxy_index"].append(i)
                arrays["ident"].append(ident[i])
                arrays["transform"].append(a)
                arrays["original_size"].append(st["original_size"])
                arrays["flux_in_stamp"].append(st["flux_in_stamp"])
            out = {k: np.asarray(v) for k, v in arrays.items()}
            for k in ("observed", "psf", "noise_power", "noise_sigma", "conditions",
                      "flux_in_stamp"):
                out[k] = out[k].astype(np.float32)
            save_npz(file, **out)
        done.append(s)
        manifest["shards"] = done
        write_json(path / "manifest.json", manifest)
    manifest["status"] = "complete"
    write_json(path / "manifest.json", manifest)
    return manifest


def build_real_dataset(path, config: RealGalaxyDatasetConfig | dict) -> dict:
    """Write the training split of a RealGalaxyCatalog to ``path`` and its held-out split to
    ``path/holdout`` (see module docstring); resumable. Returns the training manifest."""
    import galsim

    cfg = config if isinstance(config, RealGalaxyDatasetConfig) \
        else RealGalaxyDatasetConfig.from_dict(config)
    path = Path(path)
    folder, name, fits_name = resolve_catalog(cfg)
    catalog = galsim.RealGalaxyCatalog(name, dir=str(folder))
    cond, ident, how = _read_conditions(folder, name, fits_name)
    m = len(cond) if cfg.max_galaxies is None else min(len(cond), int(cfg.max_galaxies))
    valid = np.all(np.isfinite(cond[:m]), axis=1) & (cond[:m, 1] > 0) & (cond[:m, 2] > 0)
    usable = np.flatnonzero(valid)
    rng = np.random.default_rng(derive_seed(cfg.seed, "real_split"))
    n_hold = int(round(cfg.holdout_fraction * len(usable)))
    perm = rng.permutation(len(usable))
    hold = np.sort(usable[perm[:n_hold]])
    train = np.sort(usable[perm[n_hold:]])
    if len(train) < 1:
        raise ConfigError("no training galaxy left (lower holdout_fraction).",
                          key="holdout_fraction",
                          received={"usable": int(len(usable)),
                                    "holdout_fraction": cfg.holdout_fraction})
    extra = {"catalog": {"dir": str(folder), "file": name, "fits_file": fits_name,
                         "n_catalog": int(len(cond)), "n_considered": int(m),
                         "n_invalid_conditions": int(m - len(usable)), **how},
             "split": {"train_galaxies": int(len(train)), "holdout_galaxies": int(len(hold)),
                       "holdout_fraction": cfg.holdout_fraction, "holdout_path": HOLDOUT}}
    prov = _provenance(folder, name)
    if len(hold):
        _write_set(path / HOLDOUT, cfg, catalog, hold, cond, ident, 1,
                   {**extra, "split_name": "holdout"}, prov)
    return _write_set(path, cfg, catalog, train, cond, ident, N_TRANSFORMS[cfg.augment],
                      {**extra, "split_name": "train"}, prov)


def prepare_real_dataset(section: dict) -> tuple[Path, dict]:
    """The real-galaxy data set of a training file's ``dataset`` section (``path`` + the
    :class:`RealGalaxyDatasetConfig` fields), built or completed if needed.
    Returns ``(path, manifest)``."""
    ds = dict(section)
    path = Path(ds.pop("path"))
    return path, build_real_dataset(path, RealGalaxyDatasetConfig.from_dict(ds))

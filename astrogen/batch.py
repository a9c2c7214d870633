"""The data contract between stages.

Stages exchange three kinds of objects, chunk by chunk:

* an :class:`astropy.table.Table` of catalog rows (canonical column names and units, see
  :mod:`astrogen.catalog.columns`), always with an integer ``row_id`` column that seeds
  every random draw of that row;
* a :class:`StampBatch`: one postage stamp per catalog row, with its pixel scale, flux units
  and PSF state, so that any generator (parametric, FlowVAE, DDPM) can feed ``observe``,
  ``scene`` and the output stages. Stamps may have different sizes (each sized to hold its
  own galaxy) and different pixel scales;
* a :class:`MultiBandStamps`: the observed stamps of the same rows in several bands (one
  :class:`StampBatch` per band, same rows in the same order, same morphology), produced by
  ``observe`` with ``bands:``;
* a :class:`DensityField`: a periodic density box (or 2-D slice) with its size and redshift.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from astropy.table import Table

from astrogen.constants import COSMOS_ZERO_POINT  # defined there once; re-exported here
from astrogen.errors import ConfigError

__all__ = ["StampBatch", "MultiBandStamps", "DensityField", "COSMOS_ZERO_POINT"]


@dataclass
class StampBatch:
    """A batch of postage stamps, one per catalog row.

    Parameters
    ----------
    images : numpy.ndarray, shape (n, ny, nx), or list of n 2-D arrays
        Pixel values in ``flux_unit`` per pixel. A list holds stamps of different sizes
        ("ragged"); it is kept as a list (``images`` is then a list), stored as a 3-D array
        when every stamp has the same shape. Each stamp's centre is its true centre
        (``(ny - 1) / 2, (nx - 1) / 2`` in 0-based pixel indices). Consumers read
        :meth:`stamp`, :attr:`shapes` or :meth:`padded` and work with both forms.
    pixel_scale : float or numpy.ndarray, shape (n,)
        Pixel scale in arcsec / pixel, one for the batch or one per stamp (a generator that
        draws a galaxy larger than its native field in units of the requested size gives that
        stamp a coarser scale). Consumers read :attr:`pixel_scales`.
    catalog : astropy.table.Table
        The ``n`` rows the stamps were drawn from (must contain ``row_id``).
    flux_unit : str
        Unit of the pixel values: ``"count/s"`` for intrinsic stamps (zero point
        ``zero_point``), ``"electron"`` for stamps observed by a survey.
    zero_point : float
        AB magnitude of a source whose pixels sum to 1 ``flux_unit``.
    psf : str or None
        ``None`` for PSF-free (intrinsic) light profiles; otherwise a description of the
        PSF that was applied (``"Kolmogorov(fwhm=0.79)"``).
    band : str
        Band or survey name (``"F814W"``, ``"lsst_i"``).
    noise_sigma : numpy.ndarray or None
        Per-stamp background noise standard deviation in ``flux_unit``; ``None`` if noiseless.
    meta : dict
        Free-form provenance (generator name, model version...).
    profiles : list of galsim.GSObject or None
        Optional exact PSF-free light profiles, one per row (``None`` entries allowed), in
        ``flux_unit`` and arcsec, centred on each stamp's centre. A generator that has them
        (``galsim.parametric``) sets them so that ``observe`` and ``scene`` draw the exact
        profile instead of interpolating the pixel stamp; other consumers use the stamps.
    """

    images: np.ndarray | list
    pixel_scale: float | np.ndarray
    catalog: Table
    flux_unit: str = "count/s"
    zero_point: float = COSMOS_ZERO_POINT
    psf: str | None = None
    band: str = "F814W"
    noise_sigma: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    profiles: list | None = None

    def __post_init__(self):
        if isinstance(self.images, (list, tuple)):
            stamps = [np.asarray(im) for im in self.images]
            if any(im.ndim != 2 for im in stamps):
                raise ConfigError("StampBatch.images as a list must hold 2-D stamps.",
                                  received={"ndims": sorted({im.ndim for im in stamps})})
            if stamps and len({im.shape for im in stamps}) == 1:
                self.images = np.stack(stamps)
            else:
                self.images = stamps
        else:
            self.images = np.asarray(self.images)
            if self.images.ndim != 3:
                raise ConfigError("StampBatch.images must have shape (n, ny, nx) or be a "
                                  "list of 2-D stamps.", received={"shape": self.images.shape})
        n = len(self.images)
        if len(self.catalog) != n:
            raise ConfigError("StampBatch needs one catalog row per stamp.",
                              received={"n_images": n, "n_rows": len(self.catalog)})
        if self.profiles is not None and len(self.profiles) != n:
            raise ConfigError("StampBatch.profiles needs one profile (or None) per stamp.",
                              received={"n_profiles": len(self.profiles), "n_images": n})
        if "row_id" not in self.catalog.colnames:
            raise ConfigError("StampBatch.catalog must have a 'row_id' column.",
                              received={"columns": self.catalog.colnames})
        scales = np.asarray(self.pixel_scale, dtype=float)
        if scales.ndim == 0:
            self.pixel_scale = float(scales)
        elif scales.shape != (n,):
            raise ConfigError("StampBatch.pixel_scale must be a number or one per stamp.",
                              received={"shape": scales.shape, "n_images": n})
        else:
            self.pixel_scale = scales
        if not (np.all(np.isfinite(scales)) and np.all(scales > 0)):
            raise ConfigError("pixel_scale must be > 0 arcsec/pixel.",
                              received={"pixel_scale": self.pixel_scale})

    def __len__(self) -> int:
        return len(self.images)

    @property
    def ragged(self) -> bool:
        """True when the stamps have different shapes (``images`` is a list)."""
        return isinstance(self.images, list)

    def stamp(self, i: int) -> np.ndarray:
        """Stamp ``i`` as a 2-D array (its own shape)."""
        return self.images[i]

    @property
    def shapes(self) -> np.ndarray:
        """(ny, nx) of every stamp, int array of shape (n, 2)."""
        if not self.ragged:
            return np.tile(np.array(self.images.shape[1:], dtype=int), (len(self), 1))
        return np.array([im.shape for im in self.images], dtype=int).reshape(len(self), 2)

    def padded(self, shape: tuple[int, int] | None = None) -> np.ndarray:
        """All stamps in one (n, ny, nx) float32 cube, each zero-padded around its centre.

        Parameters
        ----------
        shape : (int, int), optional
            Cube stamp shape (default: the largest stamp's). Must hold every stamp.
            A stamp whose size has the other parity than the cube's is placed half a
            pixel off the cube's centre (rounded down).
        """
        shp = self.shapes
        ny, nx = (tuple(shp.max(axis=0)) if len(self) else (0, 0)) if shape is None else shape
        if len(self) and (shp[:, 0].max() > ny or shp[:, 1].max() > nx):
            raise ConfigError("padded shape is smaller than the largest stamp.",
                              received={"shape": (ny, nx), "largest": tuple(shp.max(axis=0))})
        out = np.zeros((len(self), ny, nx), dtype=np.float32)
        for i in range(len(self)):
            h, w = shp[i]
            y0, x0 = (ny - h) // 2, (nx - w) // 2
            out[i, y0:y0 + h, x0:x0 + w] = self.images[i]
        return out

    @property
    def pixel_scales(self) -> np.ndarray:
        """Pixel scale of each stamp in arcsec / pixel, shape (n,)."""
        return np.broadcast_to(np.asarray(self.pixel_scale, dtype=float), (len(self),)).copy()

    @property
    def uniform_scale(self) -> bool:
        """True when every stamp has the same pixel scale."""
        s = self.pixel_scales
        return bool(len(s) == 0 or np.all(s == s[0]))

    @property
    def noiseless(self) -> bool:
        """True when the stamps carry no noise (``noise_sigma`` is ``None``)."""
        return self.noise_sigma is None

    @property
    def fluxes(self) -> np.ndarray:
        """Sum of each stamp, in ``flux_unit``."""
        if self.ragged:
            return np.array([float(np.sum(im, dtype=np.float64)) for im in self.images])
        return self.images.reshape(len(self), -1).sum(axis=1)

    def magnitudes(self) -> np.ndarray:
        """AB magnitude of each stamp's total flux (``nan`` where the flux is not positive)."""
        from astrogen.physics.photometry import mag_from_flux

        return mag_from_flux(self.fluxes, self.zero_point)

    def replace(self, **changes) -> "StampBatch":
        """A copy of the batch with the given fields changed (``dataclasses.replace``).

        Parameters
        ----------
        **changes
            Field names and their new values.

        Returns
        -------
        StampBatch
            The new batch (checked again by ``__post_init__``).
        """
        return replace(self, **changes)


@dataclass
class MultiBandStamps:
    """The stamps of the same catalog rows observed in several bands.

    Parameters
    ----------
    batches : dict of str to StampBatch
        One batch per band, keyed by the band name (``"lsst_r"``), in band order. Every batch
        holds the same rows in the same order (same ``row_id`` sequence); each has its own
        pixel scale, PSF, zero point, ``flux_unit`` and noise.
    catalog : astropy.table.Table, optional
        The rows with the columns of every band (``flux_<band>``, ``flux_frac_<band>``...);
        default: the first band's catalog. Must have the same ``row_id`` sequence.

    Notes
    -----
    Consumers loop over :attr:`bands` and read ``batches[band]``; ``output.stamps`` writes
    one FITS file per band, ``output.catalog`` one table with per-band stamp fluxes,
    ``output.preview`` one band.
    """

    batches: dict[str, StampBatch]
    catalog: Table | None = None

    def __post_init__(self):
        if not isinstance(self.batches, dict) or not self.batches:
            raise ConfigError("MultiBandStamps needs a non-empty dict of band -> StampBatch.",
                              received={"batches": type(self.batches).__name__})
        first = next(iter(self.batches.values()))
        if self.catalog is None:
            self.catalog = first.catalog
        ids = np.asarray(self.catalog["row_id"]) if "row_id" in self.catalog.colnames else None
        for band, b in self.batches.items():
            if not isinstance(b, StampBatch):
                raise ConfigError("MultiBandStamps.batches values must be StampBatch.",
                                  received={"band": band, "type": type(b).__name__})
            if ids is None or len(b) != len(ids) or \
                    not np.array_equal(np.asarray(b.catalog["row_id"]), ids):
                raise ConfigError("every band of a MultiBandStamps must hold the same rows "
                                  "(row_id) in the same order.",
                                  received={"band": band, "n_rows": len(b)})

    @property
    def bands(self) -> list[str]:
        """Band names, in order."""
        return list(self.batches)

    def __len__(self) -> int:
        return len(self.catalog)

    def __getitem__(self, band: str) -> StampBatch:
        return self.batches[band]


@dataclass
class DensityField:
    """A periodic matter density field (3-D box or 2-D slice).

    Parameters
    ----------
    delta : numpy.ndarray, shape (n, n, n) or (n, n)
        Density contrast ``rho / rho_mean - 1`` on a regular grid (dimensionless).
    box_size : float
        Comoving side length in Mpc/h.
    redshift : float
        Redshift of the field.
    box_id : int
        Index of the box; seeds every random draw of the box.
    cosmology : dict
        Cosmological parameters used (``Om0``, ``Ob0``, ``h``, ``sigma8``, ``n_s``...).
    meta : dict
        Free-form provenance.
    """

    delta: np.ndarray
    box_size: float
    redshift: float
    box_id: int = 0
    cosmology: dict[str, float] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        self.delta = np.asarray(self.delta)
        if self.delta.ndim not in (2, 3) or len(set(self.delta.shape)) != 1:
            raise ConfigError("DensityField.delta must be a square 2-D or cubic 3-D grid.",
                              received={"shape": self.delta.shape})
        if not (self.box_size > 0):
            raise ConfigError("box_size must be > 0 Mpc/h.", received={"box_size": self.box_size})

    @property
    def n_grid(self) -> int:
        """Number of grid cells per side."""
        return self.delta.shape[0]

    @property
    def cell_size(self) -> float:
        """Grid spacing in Mpc/h."""
        return self.box_size / self.n_grid

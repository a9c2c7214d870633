"""Catalog stages: read a file, sample COSMOS-like properties, assign scene positions."""
from __future__ import annotations

import math

import numpy as np
from astropy.table import Table

from astrogen.catalog.columns import CANONICAL, require_columns
from astrogen.errors import ConfigError
from astrogen.physics.scene import Field
from astrogen.physics.surveys import get_survey
from astrogen.registry import register_stage
from astrogen.seeds import row_seeds, uniforms
from astrogen.stages.base import Stage, check_int, check_positive

__all__ = ["CatalogRead", "CosmosCatalog", "Positions"]


class _ChunkedSource(Stage):
    kind = "source"
    output_type = Table

    def __init__(self, chunk_size: int = 1000):
        self.chunk_size = check_int("chunk_size", chunk_size)

    def n_rows(self) -> int:
        raise NotImplementedError

    def n_chunks(self) -> int:
        return max(1, math.ceil(self.n_rows() / self.chunk_size))

    def chunk_bounds(self, index: int) -> tuple[int, int]:
        start = index * self.chunk_size
        return start, min(start + self.chunk_size, self.n_rows())


@register_stage("catalog.read")
class CatalogRead(_ChunkedSource):
    """Read a catalog file (FITS, ECSV, CSV, HDF5...) and map it to canonical columns.

    Parameters
    ----------
    file_name : str
        Path of the catalog (relative to the current directory).
    columns : dict, optional
        Canonical name -> file column name, e.g. ``{mag: MAG_AUTO, hlr: FLUX_RADIUS}``.
    units : dict, optional
        Canonical name -> unit of the file column when the file states none
        (``{hlr: pix}``); columns with units in the file are converted automatically, and
        an entry that contradicts the file's unit is an error naming both. Magnitudes may
        be ``mag``, ``mag(AB)``/``ABmag`` or a flux density (``nJy``; converted to AB).
    defaults : dict, optional
        Canonical name -> constant for columns the file lacks (``{sersic_n: 1.0}``).
    pixel_scale : float, optional
        arcsec / pixel, to convert sizes in pixels.
    format : str, optional
        astropy table format if the suffix is not enough.
    hdu : int, optional
        FITS HDU of the table.
    preset : {"catsim"}, optional
        Read a foreign format natively: ``catsim`` (LSST DESC CatSim / BlendingToolKit:
        per-component semi-axes, position angles and flux normalisations ->
        ``hlr_bulge``, ``hlr_disk``, ``q_*``, ``beta_*``, ``bulge_frac``, plus one-profile
        ``hlr``, ``q``, ``beta``, ``sersic_n``, ``mag``; ``<b>_ab`` -> ``mag_lsst_<b>``;
        ``galtileid`` -> ``row_id``). See :func:`astrogen.catalog.reader.catsim_columns`.
    id_column : str, optional
        File column of unique non-negative integer ids that become ``row_id`` (and seed
        each row's random draws); default the file row index.
    rows : [int, int], optional
        File rows ``[start, stop)`` to read (``stop`` may be null).
    where : dict, optional
        ``{column: [low, high]}``, inclusive, null for an open end: keep the rows inside
        (canonical columns in canonical units, other file columns in their own).
    max_rows : int, optional
        Keep at most this many rows (the first that pass ``rows`` and ``where``).
    chunk_size : int
        Rows per chunk.

    Every file column that is not canonical (ids, e1/e2, anything) is carried through
    unchanged with its unit, to the truth tables.
    """

    units = {"pixel_scale": "arcsec/pixel", "chunk_size": "rows", "rows": "file rows",
             "max_rows": "rows"}

    def __init__(self, file_name: str, columns: dict | None = None, units: dict | None = None,
                 defaults: dict | None = None, pixel_scale: float | None = None,
                 format: str | None = None, hdu: int | None = None, preset: str | None = None,
                 id_column: str | None = None, rows: list | None = None,
                 where: dict | None = None, max_rows: int | None = None,
                 chunk_size: int = 1000):
        from astrogen.catalog.reader import CatalogFile

        super().__init__(chunk_size)
        if pixel_scale is not None:
            pixel_scale = check_positive("pixel_scale", pixel_scale, unit="arcsec/pixel")
        self.file = CatalogFile(file_name, columns=columns, units=units, defaults=defaults,
                                pixel_scale=pixel_scale, format=format, hdu=hdu, preset=preset,
                                id_column=id_column, rows=rows, where=where, max_rows=max_rows)
        self.file.check()  # every row valid before anything is written

    def n_rows(self) -> int:
        return len(self.file)

    def provided_columns(self):  # validate: the columns the file maps to
        n = min(1, len(self.file))
        return tuple(self.file.read_rows(0, n).colnames) if n else ()

    def read_chunk(self, index: int) -> Table:
        return self.file.read_rows(*self.chunk_bounds(index))


@register_stage("catalog.cosmos")
class CosmosCatalog(_ChunkedSource):
    """Draw realistic galaxy properties from the shipped COSMOS catalogs (Gaussian copula).

    Parameters
    ----------
    n_objects : int
        Number of galaxies.
    mag_range : [float, float]
        F814W AB magnitude range (mag); default the COSMOS sample range. The magnitude
        distribution is truncated to it and every other property is drawn conditionally
        on the magnitude (unchanged at fixed magnitude).
    bands : list of str, optional
        Extra bands (``lsst_r``, ``euclid_vis``, ...) for which ``mag_<band>`` [mag, AB] is
        added, interpolated in log wavelength from the drawn HSC g r i z y magnitudes
        (``mag_hsc_g`` ... ``mag_hsc_y``, always present); flat extrapolation outside
        HSC g..y (u, Euclid NISP).
    chunk_size : int
        Rows per chunk.
    """

    units = {"mag_range": "mag (AB, F814W)", "chunk_size": "rows"}

    def __init__(self, n_objects: int, mag_range: list | None = None, bands: list | None = None,
                 chunk_size: int = 1000):
        from astrogen.catalog.cosmos import CosmosSampler

        super().__init__(chunk_size)
        self.n_objects = check_int("n_objects", n_objects)
        if mag_range is not None and (not isinstance(mag_range, (list, tuple))
                                      or len(mag_range) != 2):
            raise ConfigError("must be [low, high] in AB mag.", key="mag_range",
                              received={"mag_range": mag_range})
        if bands is not None and (not isinstance(bands, (list, tuple))
                                  or not all(isinstance(b, str) for b in bands)):
            raise ConfigError("must be a list of band names such as [lsst_r, euclid_vis].",
                              key="bands", received={"bands": bands})
        self.sampler = CosmosSampler(**({} if mag_range is None else {"mag_range": mag_range}),
                                     bands=bands)

    def n_rows(self) -> int:
        return self.n_objects

    def provided_columns(self):  # validate: the columns the sampler draws
        return tuple(self.sampler.sample(0, np.arange(1)).colnames)

    def read_chunk(self, index: int) -> Table:
        start, stop = self.chunk_bounds(index)
        return self.sampler.sample(self.ctx.seed, np.arange(start, stop))


@register_stage("catalog.positions")
class Positions(Stage):
    """Give every row a position in a scene: random (uniform) or from its ra/dec columns.

    Parameters
    ----------
    size : int or [int, int]
        Scene size in pixels (square, or [nx, ny]).
    survey : str or dict
        Survey preset whose pixel scale is used (see ``astrogen stages``).
    ra, dec : float
        Scene centre in deg.
    margin : float
        Keep random positions this many pixels from the edges.
    from_sky : bool
        Use the catalog's ``ra``/``dec`` columns instead of random positions.

    Notes
    -----
    The field (size, pixel scale, centre) is declared here once: every stage downstream
    that needs it (``scene``, ``lensing.field``) receives it from the pipeline builder,
    checked by ``astrogen validate`` (see :meth:`output_field`).
    """

    kind = "map"
    input_types = (Table,)
    output_type = Table
    units = {"size": "pix", "ra": "deg", "dec": "deg", "margin": "pix"}
    provides_columns = ("x", "y", "ra", "dec")
    field_keys = ("size", "survey", "ra", "dec")  # or the pipeline's ``field:``

    def required_columns(self):
        return ("ra", "dec") if self.from_sky else ()

    def __init__(self, size=1024, survey="lsst_i", ra: float = 150.1, dec: float = 2.2,
                 margin: float = 0.0, from_sky: bool = False):
        nx, ny = (size, size) if not isinstance(size, (list, tuple)) else tuple(size)
        check_int("size", nx), check_int("size", ny)
        self.survey = get_survey(survey)
        self.margin = check_positive("margin", margin, allow_zero=True, unit="pix")
        if 2 * self.margin >= min(nx, ny):
            raise ConfigError("leaves no room inside the scene.", key="margin",
                              received={"margin": margin, "size": size})
        if not (-90 <= float(dec) <= 90):
            raise ConfigError("must be in [-90, 90] deg.", key="dec", received={"dec": dec})
        self.field = Field(nx=nx, ny=ny, pixel_scale=self.survey.pixel_scale,
                           ra=float(ra) % 360.0, dec=float(dec), survey=self.survey.name)
        self.from_sky = bool(from_sky)

    def output_field(self) -> Field:
        """The field the rows are placed in: stages downstream get it from the pipeline
        builder (:attr:`~astrogen.stages.base.Stage.input_field`), not from the rows."""
        return self.field

    def process(self, table: Table) -> Table:
        out = table.copy(copy_data=False)
        wcs = self.field.wcs()
        if self.from_sky:
            require_columns(table, ["ra", "dec"], "catalog.positions with from_sky: true")
            x, y = wcs.all_world2pix(np.asarray(table["ra"]), np.asarray(table["dec"]), 1)
        else:
            u = uniforms(row_seeds(self.ctx.seed, np.asarray(table["row_id"])), 2)
            m = self.margin
            x = 0.5 + m + u[:, 0] * (self.field.nx - 2 * m)
            y = 0.5 + m + u[:, 1] * (self.field.ny - 2 * m)
            ra, dec = wcs.all_pix2world(x, y, 1)
            out["ra"], out["dec"] = ra, dec
        out["x"], out["y"] = x, y
        for name in ("ra", "dec", "x", "y"):
            out[name].unit = CANONICAL[name].unit
            out[name].description = CANONICAL[name].description
        return out

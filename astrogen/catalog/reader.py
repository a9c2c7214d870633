"""Read any catalog astropy can read, mapped onto astrogen's canonical columns.

FITS tables are memory-mapped and read chunk by chunk, so memory does not grow with the
catalog size; other formats (ECSV, CSV, HDF5, VOTable...) are read once by
``astropy.table.Table.read``.
"""
from __future__ import annotations

from pathlib import Path

import astropy.units as u
import numpy as np
from astropy.io import fits
from astropy.table import Table

from astrogen.catalog.columns import CANONICAL, validate_columns
from astrogen.errors import CatalogError, ConfigError, suggest

__all__ = ["CatalogFile", "to_canonical"]

_FITS_SUFFIXES = (".fits", ".fit", ".fits.gz", ".fts")


def _parse_unit(name: str, value) -> u.UnitBase:
    try:
        return u.Unit(value)
    except (ValueError, TypeError):
        raise ConfigError("is not a unit astropy understands.", key=f"units.{name}",
                          received={name: value}) from None


def _is_number(value) -> bool:
    try:
        float(value)
        return True
    except (TypeError, ValueError):
        return False


def _parse_tunit(column: str, unit: str) -> u.UnitBase:
    """The unit of a FITS column's TUNIT, or a CatalogError naming the column."""
    try:
        return u.Unit(unit)
    except (ValueError, TypeError):
        raise CatalogError("has a TUNIT that astropy cannot parse; fix the header or give "
                           "the unit with units: {<canonical name>: <unit>}.",
                           key=f"column '{column}'", received={"TUNIT": unit}) from None


def to_canonical(raw: Table, columns: dict[str, str], units: dict[str, str],
                 defaults: dict[str, float], pixel_scale: float | None,
                 row_offset: int = 0) -> Table:
    """Rename, convert units and fill defaults of a block of rows.

    Parameters
    ----------
    raw : astropy.table.Table
        Rows as read from the file.
    columns : dict
        Canonical name -> column name in the file (canonical names not listed are taken
        from a file column of the same name if there is one).
    units : dict
        Canonical name -> unit of the file column, used when the file gives no unit.
    defaults : dict
        Canonical name -> constant value for columns the file does not have.
    pixel_scale : float or None
        arcsec / pixel, to convert sizes given in pixels.
    row_offset : int
        Index of the first row in the whole file (becomes ``row_id``).
    """
    out = Table()
    n = len(raw)
    out["row_id"] = np.arange(row_offset, row_offset + n, dtype=np.int64)
    for name, spec in CANONICAL.items():
        if name == "row_id":
            continue
        src = columns.get(name, name if name in raw.colnames else None)
        if src is None:
            if name in defaults:
                out[name] = np.full(n, float(defaults[name]))
                if spec.unit is not None:
                    out[name].unit = spec.unit
            continue
        if src not in raw.colnames:
            raise CatalogError(f"mapped to file column '{src}', which is missing."
                               f"{suggest(src, raw.colnames)} Available: "
                               f"{', '.join(raw.colnames)}.", key=f"columns.{name}",
                               received={name: src})
        col = raw[src]
        if getattr(col, "ndim", 1) != 1:
            raise CatalogError("must be a scalar column.", key=f"column '{src}'",
                               received={"shape": col.shape})
        file_unit = getattr(col, "unit", None)
        if name in units:
            file_unit = _parse_unit(name, units[name])
        try:
            values = np.ma.filled(np.ma.asarray(col, dtype=float), np.nan) \
                if np.ma.is_masked(col) else np.asarray(col, dtype=float)
        except (TypeError, ValueError):  # text in a numeric column: name it and the row
            raw_values = np.asarray(col)
            bad = next((i for i, v in enumerate(raw_values) if not _is_number(v)), 0)
            raise CatalogError("must hold numbers.", key=f"column '{src}'",
                               received={"row": row_offset + bad, src: raw_values[bad]}) from None
        if spec.unit is not None and file_unit is not None and file_unit != u.dimensionless_unscaled:
            if spec.unit.physical_type == "angle" and file_unit == u.pix:
                if pixel_scale is None:
                    raise ConfigError("the file gives this size in pixels: set pixel_scale "
                                      "(arcsec / pixel) to convert it.", key="pixel_scale",
                                      received={f"units.{name}": "pix"})
                values = values * pixel_scale * (u.arcsec.to(spec.unit))
            else:
                try:
                    values = (values * file_unit).to_value(spec.unit)
                except u.UnitConversionError:
                    raise CatalogError(f"unit cannot be converted to {spec.unit}.",
                                       key=f"column '{src}'",
                                       received={"unit": str(file_unit)}) from None
        out[name] = values
        if spec.unit is not None:
            out[name].unit = spec.unit
        out[name].description = spec.description
    validate_columns(out, row_offset=row_offset)
    return out


class CatalogFile:
    """A catalog file read in row blocks and mapped to canonical columns.

    Parameters
    ----------
    file_name : str or pathlib.Path
        Any table astropy reads (FITS, ECSV, CSV, HDF5...).
    columns, units, defaults, pixel_scale
        See :func:`to_canonical`.
    format : str, optional
        astropy format name (``"ascii.csv"``, ``"hdf5"``...) when the suffix is not enough.
    hdu : int or str, optional
        FITS HDU of the table (default: the first table HDU).
    """

    def __init__(self, file_name, columns=None, units=None, defaults=None, pixel_scale=None,
                 format=None, hdu=None):
        self.path = Path(file_name)
        if not self.path.is_file():
            raise CatalogError("catalog file not found.", key="file_name",
                               received={"file_name": str(file_name)})
        self.columns = dict(columns or {})
        self.units = dict(units or {})
        self.defaults = dict(defaults or {})
        for mapping, what in ((self.columns, "columns"), (self.units, "units"),
                              (self.defaults, "defaults")):
            for k in mapping:
                if k not in CANONICAL or k == "row_id":
                    raise ConfigError(f"'{k}' is not a canonical column.{suggest(k, CANONICAL)}",
                                      key=f"{what}.{k}", received={what: k})
        self.pixel_scale = pixel_scale
        self._fits = None
        self._table = None
        is_fits = format in (None, "fits") and self.path.name.lower().endswith(_FITS_SUFFIXES)
        try:
            if is_fits:
                hl = fits.open(self.path, memmap=True)
                idx = hdu if hdu is not None else next(
                    (i for i, h in enumerate(hl) if isinstance(h, fits.BinTableHDU)), None)
                if idx is None:
                    raise CatalogError("has no table HDU.", key="file_name",
                                       received={"file_name": str(self.path)})
                if isinstance(hdu, int) and not 0 <= hdu < len(hl):
                    raise CatalogError(f"the file has HDUs 0 to {len(hl) - 1}.", key="hdu",
                                       received={"hdu": hdu, "file_name": str(self.path)})
                if not isinstance(hl[idx], (fits.BinTableHDU, fits.TableHDU)):
                    raise CatalogError("is not a table HDU.", key="hdu",
                                       received={"hdu": idx, "file_name": str(self.path)})
                self._fits = hl[idx]
                self._n = int(self._fits.header["NAXIS2"])
            else:
                self._table = Table.read(self.path, format=format)
                self._n = len(self._table)
        except CatalogError:
            raise
        except Exception as exc:  # astropy raises many kinds for unreadable files
            raise CatalogError(f"cannot be read as a table ({type(exc).__name__}: {exc}).",
                               key="file_name", received={"file_name": str(self.path)}) from None

    def __len__(self) -> int:
        return self._n

    def read_rows(self, start: int, stop: int) -> Table:
        """Canonical rows ``start`` to ``stop`` (exclusive)."""
        if self._fits is not None:
            raw = Table(self._fits.data[start:stop])
            for c in self._fits.columns:  # keep the units written in the FITS header
                if c.unit and c.name in raw.colnames:
                    raw[c.name].unit = _parse_tunit(c.name, c.unit)
        else:
            raw = self._table[start:stop]
        return to_canonical(raw, self.columns, self.units, self.defaults, self.pixel_scale,
                            row_offset=start)

    def check(self, chunk_size: int = 100_000) -> None:
        """Validate every row now (before any output is written); memory stays bounded."""
        for start in range(0, self._n, chunk_size):
            self.read_rows(start, min(start + chunk_size, self._n))

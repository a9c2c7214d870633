"""Canonical catalog columns of astrogen: names, units, valid ranges.

Every stage reads and writes these names; file catalogs are mapped onto them by
:func:`astrogen.catalog.reader.read_catalog`.

======================  ==========  =======================================================
name                    unit        meaning
======================  ==========  =======================================================
``row_id``              --          integer id; seeds every random draw of the row
``mag``                 mag (AB)    magnitude in the reference band (COSMOS F814W by default)
``hlr``                 arcsec      half-light radius (of the PSF-free profile)
``z``                   --          redshift
``sersic_n``            --          Sersic index (GalSim range 0.3 to 6.2)
``q``                   --          axis ratio b/a in (0, 1]
``beta``                deg         position angle of the major axis (from +x towards +y)
``bulge_frac``          --          fraction of the flux in the de Vaucouleurs bulge
``ra``, ``dec``         deg         sky position
``x``, ``y``            pix         position in the scene image (FITS convention, 1-based)
======================  ==========  =======================================================
"""
from __future__ import annotations

from dataclasses import dataclass

import astropy.units as u
import numpy as np
from astropy.table import Table

from astrogen.errors import CatalogError

__all__ = ["ColumnSpec", "CANONICAL", "validate_columns", "require_columns"]


@dataclass(frozen=True)
class ColumnSpec:
    """Unit, description and valid range (inclusive unless ``open_low``) of a column."""

    unit: u.UnitBase | None
    description: str
    low: float = -np.inf
    high: float = np.inf
    open_low: bool = False


CANONICAL: dict[str, ColumnSpec] = {
    "row_id": ColumnSpec(None, "row id (seeds every random draw of the row)", 0),
    "mag": ColumnSpec(u.mag, "AB magnitude in the reference band", -10, 40),
    "hlr": ColumnSpec(u.arcsec, "half-light radius of the PSF-free profile", 1e-3, 60),
    "z": ColumnSpec(None, "redshift", 0, 20),
    "sersic_n": ColumnSpec(None, "Sersic index", 0.3, 6.2),
    "q": ColumnSpec(None, "axis ratio b/a", 0, 1, open_low=True),
    "beta": ColumnSpec(u.deg, "position angle of the major axis", -360, 360),
    "bulge_frac": ColumnSpec(None, "bulge flux fraction", 0, 1),
    "ra": ColumnSpec(u.deg, "right ascension", 0, 360),
    "dec": ColumnSpec(u.deg, "declination", -90, 90),
    "x": ColumnSpec(u.pix, "scene x position (1-based)"),
    "y": ColumnSpec(u.pix, "scene y position (1-based)"),
}


def require_columns(table: Table, names, where: str = "catalog") -> None:
    """Raise :class:`CatalogError` naming the first of ``names`` missing from ``table``."""
    for name in names:
        if name not in table.colnames:
            raise CatalogError(f"column '{name}' is required by {where} but missing "
                               f"(available: {', '.join(table.colnames)}).", key=name)


def validate_columns(table: Table, names=None, row_offset: int = 0) -> None:
    """Check the canonical columns of ``table`` are finite and inside their valid range.

    Parameters
    ----------
    table : astropy.table.Table
        Catalog rows with canonical names.
    names : iterable of str, optional
        Columns to check (default: every canonical column present).
    row_offset : int
        Index of the table's first row in the whole catalog (for error messages).

    Raises
    ------
    CatalogError
        Naming the column, the first bad row and its value, and the valid range.
    """
    names = [n for n in (names or CANONICAL) if n in table.colnames]
    for name in names:
        spec = CANONICAL[name]
        col = table[name]
        vals = np.asarray(col.value if hasattr(col, "unit") and col.unit else col, dtype=float)
        if np.ma.is_masked(col):
            bad = np.flatnonzero(np.ma.getmaskarray(col))
            raise CatalogError("has masked (missing) values.", key=f"column '{name}'",
                               received={"row": int(bad[0]) + row_offset})
        lo_ok = vals > spec.low if spec.open_low else vals >= spec.low
        ok = np.isfinite(vals) & lo_ok & (vals <= spec.high)
        if not ok.all():
            i = int(np.flatnonzero(~ok)[0])
            unit = f" {spec.unit}" if spec.unit else ""
            lo = "(" if spec.open_low else "["
            raise CatalogError(
                f"values must be finite and in {lo}{spec.low}, {spec.high}]{unit} "
                f"({(~ok).sum()} bad value(s)).", key=f"column '{name}'",
                received={"row": i + row_offset, name: float(vals[i])})

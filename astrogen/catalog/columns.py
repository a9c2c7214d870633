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
``mag_<band>``          mag (AB)    magnitude in a contract band (:mod:`astrogen.catalog.bands`)
``g1``, ``g2``          --          reduced shear, each in (-1, 1) (optional, 0 when absent)
``kappa``               --          convergence in [-1, 1) (optional, 0 when absent)
``hlr_bulge``,          arcsec      half-light radius of the bulge / disk component
``hlr_disk``                        (0 = no such component)
``q_bulge``, ``q_disk`` --          axis ratio b/a of the component, in (0, 1]
``beta_bulge``,         deg         position angle of the component's major axis
``beta_disk``
``is_star``             --          boolean, True for stars (absent = all galaxies)
======================  ==========  =======================================================

Columns that are not canonical (a user's ids, e1/e2, anything) are carried through the
stages unchanged.
"""
from __future__ import annotations

from dataclasses import dataclass

import astropy.units as u
import numpy as np
from astropy.table import Table

from astrogen.errors import CatalogError

__all__ = ["ColumnSpec", "CANONICAL", "column_spec", "is_canonical", "validate_columns",
           "require_columns"]


@dataclass(frozen=True)
class ColumnSpec:
    """Unit, description and valid range (inclusive unless ``open_low``/``open_high``).

    ``kind`` is ``"float"``, or ``"bool"`` for flag columns (True/False or 0/1).
    """

    unit: u.UnitBase | None
    description: str
    low: float = -np.inf
    high: float = np.inf
    open_low: bool = False
    open_high: bool = False
    kind: str = "float"


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
    "g1": ColumnSpec(None, "reduced shear, component 1", -1, 1, open_low=True, open_high=True),
    "g2": ColumnSpec(None, "reduced shear, component 2", -1, 1, open_low=True, open_high=True),
    "kappa": ColumnSpec(None, "convergence", -1, 1, open_high=True),
    "hlr_bulge": ColumnSpec(u.arcsec, "half-light radius of the bulge (0: no bulge)", 0, 60),
    "hlr_disk": ColumnSpec(u.arcsec, "half-light radius of the disk (0: no disk)", 0, 60),
    "q_bulge": ColumnSpec(None, "axis ratio b/a of the bulge", 0, 1, open_low=True),
    "q_disk": ColumnSpec(None, "axis ratio b/a of the disk", 0, 1, open_low=True),
    "beta_bulge": ColumnSpec(u.deg, "position angle of the bulge's major axis", -360, 360),
    "beta_disk": ColumnSpec(u.deg, "position angle of the disk's major axis", -360, 360),
    "is_star": ColumnSpec(None, "True for stars", 0, 1, kind="bool"),
}


def column_spec(name: str) -> ColumnSpec | None:
    """The :class:`ColumnSpec` of a canonical column, ``mag_<band>`` included; else None."""
    if name in CANONICAL:
        return CANONICAL[name]
    if name.startswith("mag_"):
        from astrogen.catalog.bands import is_band

        band = name[4:]
        if is_band(band):
            return ColumnSpec(u.mag, f"AB magnitude in band {band}", -10, 40)
    return None


def is_canonical(name: str) -> bool:
    """Whether ``name`` is a canonical column (``mag_<band>`` included)."""
    return column_spec(name) is not None


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
        Columns to check (default: every canonical column present, ``mag_<band>``
        included).
    row_offset : int
        Index of the table's first row in the whole catalog (for error messages).

    Raises
    ------
    CatalogError
        Naming the column, the first bad row and its value, and the valid range.
    """
    names = [n for n in (names or table.colnames) if n in table.colnames and is_canonical(n)]
    for name in names:
        spec = column_spec(name)
        col = table[name]
        if spec.kind == "bool":
            vals = np.asarray(col)
            ok = (vals == 0) | (vals == 1) if vals.dtype != bool else np.ones(len(vals), bool)
            if vals.dtype.kind not in "biuf" or not ok.all():
                i = int(np.flatnonzero(~ok)[0]) if vals.dtype.kind in "biuf" else 0
                raise CatalogError("must be boolean (True/False or 0/1).",
                                   key=f"column '{name}'",
                                   received={"row": i + row_offset, name: vals[i].item()
                                             if hasattr(vals[i], "item") else vals[i]})
            continue
        vals = np.asarray(col.value if hasattr(col, "unit") and col.unit else col, dtype=float)
        if np.ma.is_masked(col):
            bad = np.flatnonzero(np.ma.getmaskarray(col))
            raise CatalogError("has masked (missing) values.", key=f"column '{name}'",
                               received={"row": int(bad[0]) + row_offset})
        lo_ok = vals > spec.low if spec.open_low else vals >= spec.low
        hi_ok = vals < spec.high if spec.open_high else vals <= spec.high
        ok = np.isfinite(vals) & lo_ok & hi_ok
        if not ok.all():
            i = int(np.flatnonzero(~ok)[0])
            unit = f" {spec.unit}" if spec.unit else ""
            lo = "(" if spec.open_low else "["
            hi = ")" if spec.open_high else "]"
            raise CatalogError(
                f"values must be finite and in {lo}{spec.low}, {spec.high}{hi}{unit} "
                f"({(~ok).sum()} bad value(s)).", key=f"column '{name}'",
                received={"row": i + row_offset, name: float(vals[i])})

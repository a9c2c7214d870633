"""Read any catalog astropy can read, mapped onto astrogen's canonical columns.

FITS tables are memory-mapped and read chunk by chunk, so memory does not grow with the
catalog size; other formats (ECSV, CSV, HDF5, VOTable...) are read once by
``astropy.table.Table.read``.

What happens to a block of file rows (:meth:`CatalogFile.read_rows`):

1. a preset (``preset="catsim"``, :func:`catsim_columns`) derives canonical columns from a
   known foreign format;
2. canonical columns are taken from the file (renamed by ``columns``), their units converted
   (the file's unit, or the ``units`` entry when the file states none; a ``units`` entry that
   contradicts the file's unit, or a unit that does not parse, is an error naming the column);
   magnitudes may be stated as ``mag``, ``mag(AB)``/``ABmag`` or as a spectral flux density
   (converted to AB); other magnitude systems are refused;
3. every other file column (ids, e1/e2, anything) is carried through unchanged with its unit;
4. ``row_id`` is the file row index, or the user's integer ids (``id_column``);
5. row selection: ``rows=[start, stop]`` (file rows), ``where={column: [low, high]}``
   (inclusive, on a canonical column in canonical units or on a file column in its own
   units; ``null`` for an open end), then ``max_rows`` (the first rows that pass). The
   selection is a pure function of the file rows, so outputs do not depend on the chunking.
"""
from __future__ import annotations

from pathlib import Path

import astropy.units as u
import numpy as np
from astropy.io import fits
from astropy.table import Table

from astrogen.catalog.columns import CANONICAL, column_spec, is_canonical, validate_columns
from astrogen.errors import CatalogError, ConfigError, suggest

__all__ = ["CatalogFile", "to_canonical", "parse_unit", "catsim_columns", "PRESETS"]

_FITS_SUFFIXES = (".fits", ".fit", ".fits.gz", ".fts")
#: spellings of the AB magnitude that ``astropy.units.Unit`` does not parse itself
_AB_ALIASES = {"abmag": u.ABmag, "ab": u.ABmag, "mag_ab": u.ABmag, "ab mag": u.ABmag,
               "mag ab": u.ABmag, "mag(ab)": u.ABmag}


def parse_unit(value, key: str, error=ConfigError):
    """A unit from a string or unit: astropy's parser plus the AB magnitude spellings.

    Raises ``error`` (naming ``key`` and the value) when the unit does not parse.
    """
    if isinstance(value, (u.UnitBase, u.FunctionUnitBase)) and not isinstance(
            value, u.UnrecognizedUnit):
        return value
    text = (value.name if isinstance(value, u.UnrecognizedUnit) else str(value)).strip()
    if text.lower() in _AB_ALIASES:
        return _AB_ALIASES[text.lower()]
    try:
        return u.Unit(text)
    except (ValueError, TypeError):
        raise error("has a unit astropy does not understand.", key=key,
                    received={"unit": text}) from None


def _stated(unit):
    """The unit a column states, or None (no unit / dimensionless)."""
    if unit is None:
        return None
    if isinstance(unit, u.UnitBase) and unit == u.dimensionless_unscaled:
        return None
    return unit


def _same_unit(a, b) -> bool:
    if a == b:
        return True
    try:
        return bool(np.isclose(u.Quantity(1.0, a).to_value(b), 1.0, rtol=1e-12, atol=0))
    except (u.UnitsError, TypeError, ValueError):
        return False


def _to_ab_mag(values: np.ndarray, unit, src: str) -> np.ndarray:
    """Values of a magnitude column stated in ``unit``, as AB magnitudes."""
    if isinstance(unit, u.MagUnit):
        phys = unit.physical_unit
        if phys == u.AB or phys == u.dimensionless_unscaled:
            return values
        raise CatalogError("must be an AB magnitude.", key=f"column '{src}'",
                           received={"unit": str(unit)})
    if unit == u.mag:
        return values
    if unit.physical_type == "spectral flux density":
        with np.errstate(divide="ignore", invalid="ignore"):
            return (values * unit).to_value(u.ABmag)
    raise CatalogError("unit cannot be converted to an AB magnitude (mag).",
                       key=f"column '{src}'", received={"unit": str(unit)})


def _is_number(value) -> bool:
    try:
        float(value)
        return True
    except (TypeError, ValueError):
        return False


def to_canonical(raw: Table, columns: dict[str, str], units: dict[str, str],
                 defaults: dict[str, float], pixel_scale: float | None,
                 row_offset: int = 0, row_ids: np.ndarray | None = None,
                 validate: bool = True) -> Table:
    """Rename, convert units and fill defaults of a block of rows; carry the others.

    Parameters
    ----------
    raw : astropy.table.Table
        Rows as read from the file.
    columns : dict
        Canonical name -> column name in the file (canonical names not listed are taken
        from a file column of the same name if there is one).
    units : dict
        Canonical name -> unit of the file column, used when the file states none; a unit
        that contradicts the file's is an error naming both.
    defaults : dict
        Canonical name -> constant value for columns the file does not have.
    pixel_scale : float or None
        arcsec / pixel, to convert sizes given in pixels.
    row_offset : int
        Index of the first row in the whole file (``row_id`` when ``row_ids`` is None).
    row_ids : numpy.ndarray, optional
        ``row_id`` of each row (the user's ids).
    validate : bool
        Check the canonical columns' values (:func:`validate_columns`).

    Returns
    -------
    astropy.table.Table
        ``row_id``, the canonical columns, then every other file column unchanged.
    """
    out = Table()
    n = len(raw)
    out["row_id"] = (np.arange(row_offset, row_offset + n, dtype=np.int64) if row_ids is None
                     else np.asarray(row_ids, dtype=np.int64))
    wanted = [c for c in CANONICAL if c != "row_id"]
    wanted += [c for c in list(columns) + list(raw.colnames)
               if c not in CANONICAL and is_canonical(c) and c not in wanted]
    used = set()
    for name in wanted:
        spec = column_spec(name)
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
        used.add(src)
        col = raw[src]
        if getattr(col, "ndim", 1) != 1:
            raise CatalogError("must be a scalar column.", key=f"column '{src}'",
                               received={"shape": col.shape})
        file_unit = _stated(getattr(col, "unit", None))
        if file_unit is not None:
            file_unit = parse_unit(file_unit, key=f"column '{src}'", error=CatalogError)
        if name in units:
            given = parse_unit(units[name], key=f"units.{name}")
            if file_unit is not None and not _same_unit(file_unit, given):
                raise ConfigError(f"says '{given}' but the file states '{file_unit}' for "
                                  f"column '{src}': remove the entry or make them agree.",
                                  key=f"units.{name}",
                                  received={f"units.{name}": str(units[name]),
                                            f"file unit of '{src}'": str(file_unit)})
            file_unit = given
        if spec.kind == "bool":
            out[name] = np.asarray(col)
            out[name].description = spec.description
            continue
        try:
            values = np.ma.filled(np.ma.asarray(col, dtype=float), np.nan) \
                if np.ma.is_masked(col) else np.asarray(col, dtype=float)
        except (TypeError, ValueError):  # text in a numeric column: name it and the row
            bad = next(i for i, v in enumerate(np.asarray(col)) if not _is_number(v))
            raise CatalogError("must hold numbers.", key=f"column '{src}'",
                               received={"row": row_offset + bad,
                                         src: str(np.asarray(col)[bad])}) from None
        if spec.unit is not None and file_unit is not None:
            if spec.unit == u.mag:
                values = _to_ab_mag(values, file_unit, src)
            elif spec.unit.physical_type == "angle" and file_unit == u.pix:
                if pixel_scale is None:
                    raise ConfigError("the file gives this size in pixels: set pixel_scale "
                                      "(arcsec / pixel) to convert it.", key="pixel_scale",
                                      received={f"units.{name}": "pix"})
                values = values * pixel_scale * (u.arcsec.to(spec.unit))
            else:
                try:
                    values = (values * file_unit).to_value(spec.unit)
                except (u.UnitConversionError, u.UnitTypeError, TypeError):
                    raise CatalogError(f"unit cannot be converted to {spec.unit}.",
                                       key=f"column '{src}'",
                                       received={"unit": str(file_unit)}) from None
        elif spec.unit is None and file_unit is not None:
            try:
                values = (values * file_unit).to_value(u.dimensionless_unscaled)
            except (u.UnitConversionError, u.UnitTypeError, TypeError):
                raise CatalogError("must be dimensionless.", key=f"column '{src}'",
                                   received={"unit": str(file_unit)}) from None
        out[name] = values
        if spec.unit is not None:
            out[name].unit = spec.unit
        out[name].description = spec.description
    # every other column of the file, unchanged, with its unit
    for c in raw.colnames:
        if c in out.colnames:
            if c in used and columns.get(c, c) == c:
                continue  # the canonical column of the same name was made from it
            out[f"input_{c}"] = raw[c]
        else:
            out[c] = raw[c]
    if validate:
        validate_columns(out, row_offset=row_offset)
    return out


# ----------------------------------------------------------------------------- presets
#: CatSim columns (LSST DESC CatSim / BlendingToolKit) the ``catsim`` preset needs
CATSIM_REQUIRED = ("a_b", "b_b", "a_d", "b_d", "pa_bulge", "pa_disk", "fluxnorm_bulge",
                   "fluxnorm_disk", "i_ab")


def _arcsec(col) -> np.ndarray:
    unit = _stated(getattr(col, "unit", None))
    v = np.asarray(col, dtype=float)
    return v if unit is None else (v * unit).to_value(u.arcsec)


def catsim_columns(raw: Table) -> Table:
    """Canonical columns derived from a CatSim / BlendingToolKit catalog block.

    Conventions of BlendingToolKit's CatSim galaxies (``btk.draw_blends``): each component
    has semi-axes ``a``, ``b`` (arcsec), half-light radius ``sqrt(a b)``, axis ratio
    ``b / a`` and position angle ``pa_bulge`` / ``pa_disk`` (deg, GalSim's ``beta``); the
    total AB magnitude of a band is ``<band>_ab`` and the bulge's flux fraction is
    ``fluxnorm_bulge / (fluxnorm_bulge + fluxnorm_disk)``. The AGN point source
    (``fluxnorm_agn``) is not drawn: its flux is shared by bulge and disk in proportion.

    A component with zero size (``a`` or ``b`` = 0) or zero flux is absent: the galaxy is
    single-component (``bulge_frac`` 0 or 1, the absent component's ``hlr`` 0, ``q`` 1 and
    ``beta`` that of the other). A row with neither component gets NaN sizes (refused by
    validation, naming the row).

    Derived columns: ``hlr_bulge``, ``hlr_disk`` [arcsec], ``q_bulge``, ``q_disk``,
    ``beta_bulge``, ``beta_disk`` [deg], ``bulge_frac``; ``mag_lsst_<b>`` [mag] from each
    ``<b>_ab``; ``z`` from ``redshift``; ``ra`` wrapped to [0, 360) deg; and, for
    generators that take one profile: ``hlr`` and ``q`` the flux-weighted means of the
    components' (weights ``bulge_frac``, ``1 - bulge_frac``), ``beta`` the position angle of
    the brighter component, ``sersic_n = 1 + 3 bulge_frac`` (exponential to de Vaucouleurs),
    and ``mag`` (reference band HST F814W) interpolated in log wavelength between
    ``i_ab`` and ``z_ab`` (:func:`astrogen.catalog.bands.interpolation_weights`).
    """
    from astrogen.catalog.bands import interpolation_weights

    missing = [c for c in CATSIM_REQUIRED if c not in raw.colnames]
    if missing:
        raise CatalogError(f"is required by preset 'catsim' but missing."
                           f"{suggest(missing[0], raw.colnames)} "
                           f"Available: {', '.join(raw.colnames)}.",
                           key=f"column '{missing[0]}'", received={"preset": "catsim"})
    out = Table()
    fb = np.asarray(raw["fluxnorm_bulge"], float)
    fd = np.asarray(raw["fluxnorm_disk"], float)
    comp = {}
    for c, key in (("bulge", "b"), ("disk", "d")):
        a, b = _arcsec(raw[f"a_{key}"]), _arcsec(raw[f"b_{key}"])
        pa = np.asarray(raw[f"pa_{c}"], float)
        swap = b > a  # keep q <= 1: the major axis is the larger one
        a, b = np.where(swap, b, a), np.where(swap, a, b)
        pa = np.where(swap, pa + 90.0, pa) % 180.0
        flux = fb if c == "bulge" else fd
        present = (a > 0) & (b > 0) & (flux > 0)
        with np.errstate(invalid="ignore", divide="ignore"):
            comp[c] = {"present": present, "hlr": np.where(present, np.sqrt(a * b), 0.0),
                       "q": np.where(present, b / np.where(a > 0, a, 1.0), 1.0), "beta": pa}
    pb, pd = comp["bulge"]["present"], comp["disk"]["present"]
    with np.errstate(invalid="ignore", divide="ignore"):
        bf = np.where(pb & pd, fb / (fb + fd), np.where(pb, 1.0, 0.0))
    none = ~pb & ~pd
    for c, other in (("bulge", "disk"), ("disk", "bulge")):
        d = comp[c]
        out[f"hlr_{c}"] = np.where(none, np.nan, d["hlr"]) * u.arcsec
        out[f"q_{c}"] = d["q"]
        out[f"beta_{c}"] = np.where(d["present"], d["beta"], comp[other]["beta"]) * u.deg
    out["bulge_frac"] = bf
    out["hlr"] = np.where(none, np.nan, bf * comp["bulge"]["hlr"]
                          + (1 - bf) * comp["disk"]["hlr"]) * u.arcsec
    out["q"] = bf * comp["bulge"]["q"] + (1 - bf) * comp["disk"]["q"]
    out["beta"] = np.where(bf > 0.5, out["beta_bulge"].value, out["beta_disk"].value) * u.deg
    out["sersic_n"] = 1.0 + 3.0 * bf
    lsst = [b for b in "ugrizy" if f"{b}_ab" in raw.colnames]
    for b in lsst:
        out[f"mag_lsst_{b}"] = np.asarray(raw[f"{b}_ab"], float) * u.mag
    nodes = [f"lsst_{b}" for b in lsst if b in "iz"]
    w = interpolation_weights("hst_f814w", nodes, key="preset", reference_is_mag=False)
    out["mag"] = sum(wt * np.asarray(out[f"mag_{n}"]) for n, wt in w.items()) * u.mag
    if "redshift" in raw.colnames:
        out["z"] = np.asarray(raw["redshift"], float)
    if "ra" in raw.colnames:
        out["ra"] = np.asarray(raw["ra"], float) % 360.0 * u.deg
    return out


#: presets: canonical columns derived from a foreign format, and its id column
PRESETS = {"catsim": {"derive": catsim_columns, "id_column": "galtileid"}}


# ----------------------------------------------------------------------------- file
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
    preset : {"catsim"}, optional
        Derive the canonical columns of a foreign format (:data:`PRESETS`).
    id_column : str, optional
        File column of non-negative, unique integer ids that become ``row_id`` (the
        ``catsim`` preset uses ``galtileid`` when present).
    rows : [int, int], optional
        File rows ``start`` to ``stop`` (exclusive; ``stop`` may be ``None``).
    where : dict, optional
        ``{column: [low, high]}``: keep rows with ``low <= value <= high`` (``None`` for an
        open end); a canonical column is compared in canonical units, another file column in
        its own.
    max_rows : int, optional
        Keep at most this many rows (the first ones that pass the selection).

    Notes
    -----
    The first call that needs the selected rows (``len``, :meth:`read_rows`,
    :meth:`check`) reads the whole file once in blocks, validating every selected row
    and checking the ids; it keeps the indices of the selected rows (8 bytes per row).
    """

    def __init__(self, file_name, columns=None, units=None, defaults=None, pixel_scale=None,
                 format=None, hdu=None, preset=None, id_column=None, rows=None, where=None,
                 max_rows=None):
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
                if not is_canonical(k) or k == "row_id":
                    raise ConfigError(f"'{k}' is not a canonical column.{suggest(k, CANONICAL)}",
                                      key=f"{what}.{k}", received={what: k})
        for k, v in self.units.items():
            parse_unit(v, key=f"units.{k}")
        if preset is not None and preset not in PRESETS:
            raise ConfigError(f"is not a catalog preset.{suggest(str(preset), PRESETS)} "
                              f"Known: {', '.join(PRESETS)}.", key="preset",
                              received={"preset": preset})
        self.preset = preset
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
                self._n_file = int(self._fits.header["NAXIS2"])
                names = list(self._fits.columns.names)
            else:
                self._table = Table.read(self.path, format=format)
                self._n_file = len(self._table)
                names = list(self._table.colnames)
        except CatalogError:
            raise
        except Exception as exc:  # astropy raises many kinds for unreadable files
            raise CatalogError(f"cannot be read as a table ({type(exc).__name__}: {exc}).",
                               key="file_name", received={"file_name": str(self.path)}) from None
        if id_column is None and preset is not None:
            pid = PRESETS[preset]["id_column"]
            id_column = pid if pid in names else None
        if id_column is not None and id_column not in names:
            raise ConfigError(f"names no column of the file.{suggest(id_column, names)} "
                              f"Available: {', '.join(names)}.",
                              key="id_column", received={"id_column": id_column})
        self.id_column = id_column
        self._names = names
        self._rows_slice = self._check_rows(rows)
        self.where = self._check_where(where)
        if max_rows is not None and (isinstance(max_rows, bool) or not isinstance(max_rows, int)
                                     or max_rows < 1):
            raise ConfigError("must be a positive integer (rows).", key="max_rows",
                              received={"max_rows": max_rows})
        self.max_rows = max_rows
        self._selected: np.ndarray | None = None

    # -- configuration checks
    def _check_rows(self, rows):
        if rows is None:
            return 0, self._n_file
        ok = isinstance(rows, (list, tuple)) and len(rows) == 2 and all(
            v is None or (isinstance(v, int) and not isinstance(v, bool) and v >= 0)
            for v in rows)
        if not ok:
            raise ConfigError("must be [start, stop] (file rows, start included, stop "
                              "excluded, non-negative integers; stop may be null).",
                              key="rows", received={"rows": rows})
        start = rows[0] or 0
        stop = self._n_file if rows[1] is None else min(rows[1], self._n_file)
        if start >= stop:
            raise ConfigError(f"selects no row (the file has {self._n_file}).", key="rows",
                              received={"rows": list(rows)})
        return start, stop

    def _check_where(self, where):
        if where is None:
            return {}
        if not isinstance(where, dict):
            raise ConfigError("must be a mapping {column: [low, high]}.", key="where",
                              received={"where": where})
        out = {}
        for col, rng in where.items():
            ok = isinstance(rng, (list, tuple)) and len(rng) == 2 and all(
                v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))
                for v in rng)
            if not ok or all(v is None for v in rng):
                raise ConfigError("must be [low, high] (inclusive; null for an open end).",
                                  key=f"where.{col}", received={col: rng})
            lo = -np.inf if rng[0] is None else float(rng[0])
            hi = np.inf if rng[1] is None else float(rng[1])
            if lo > hi:
                raise ConfigError("must have low <= high.", key=f"where.{col}",
                                  received={col: list(rng)})
            out[str(col)] = (lo, hi)
        return out

    # -- reading
    def _raw(self, start: int, stop: int, take: np.ndarray | None = None) -> Table:
        """File rows ``start:stop``, or only ``start + take`` (read alone from a FITS file)."""
        sel = slice(start, stop) if take is None else start + np.asarray(take, np.int64)
        if self._fits is not None:
            raw = Table(self._fits.data[sel])
            for c in self._fits.columns:  # the units written in the FITS header
                if c.unit and c.name in raw.colnames:
                    raw[c.name].unit = u.Unit(c.unit, parse_strict="silent")
        else:
            raw = self._table[sel]
        return raw

    def _ids(self, raw: Table, file_rows: np.ndarray) -> np.ndarray | None:
        if self.id_column is None:
            return None
        col = raw[self.id_column]
        key = f"column '{self.id_column}'"
        if np.ma.is_masked(col):
            i = int(np.flatnonzero(np.ma.getmaskarray(col))[0])
            raise CatalogError("(id_column) has missing values.", key=key,
                               received={"row": int(file_rows[i])})
        v = np.asarray(col)
        if v.ndim != 1 or v.dtype.kind not in "iuf":
            raise CatalogError("(id_column) must hold integers.", key=key,
                               received={"dtype": str(v.dtype)})
        if v.dtype.kind == "f":
            bad = ~np.isfinite(v) | (v != np.round(v))
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                raise CatalogError("(id_column) must hold integers.", key=key,
                                   received={"row": int(file_rows[i]), self.id_column: float(v[i])})
        if v.dtype.kind == "u" and v.size and v.max() > np.iinfo(np.int64).max:
            i = int(np.argmax(v))
            raise CatalogError("(id_column) ids must be below 2**63.", key=key,
                               received={"row": int(file_rows[i]), self.id_column: int(v[i])})
        ids = v.astype(np.int64)
        if (ids < 0).any():
            i = int(np.flatnonzero(ids < 0)[0])
            raise CatalogError("(id_column) ids must be non-negative (they seed the row's "
                               "random draws).", key=key,
                               received={"row": int(file_rows[i]), self.id_column: int(ids[i])})
        return ids

    def _convert(self, start: int, stop: int, take: np.ndarray | None = None,
                 validate: bool = True) -> Table:
        """Canonical rows of file rows ``start:stop`` (``take``: indices inside it)."""
        raw = self._raw(start, stop, take)
        file_rows = np.arange(start, stop, dtype=np.int64)
        if take is not None:
            file_rows = file_rows[take]
        columns = dict(self.columns)
        if self.preset is not None:
            derived = PRESETS[self.preset]["derive"](raw)
            for name in derived.colnames:
                if name in columns:
                    continue  # the user's mapping wins
                key = f"_{self.preset}_{name}"
                raw[key] = derived[name]
                columns[name] = key
        out = to_canonical(raw, columns, self.units, self.defaults, self.pixel_scale,
                           row_offset=start, row_ids=self._ids(raw, file_rows)
                           if self.id_column else file_rows, validate=False)
        for c in [c for c in out.colnames if self.preset and c.startswith(f"_{self.preset}_")]:
            out.remove_column(c)
        if validate:
            self._validate(out, file_rows)
        return out

    @staticmethod
    def _validate(t: Table, file_rows: np.ndarray) -> None:
        try:
            validate_columns(t)
        except CatalogError as exc:
            rec = dict(exc.received)
            if "row" in rec:
                rec["row"] = int(file_rows[rec["row"]])
            raise CatalogError(exc.message, key=exc.key, received=rec) from None

    def _where_mask(self, t: Table) -> np.ndarray:
        keep = np.ones(len(t), bool)
        for col, (lo, hi) in self.where.items():
            if col not in t.colnames:
                raise ConfigError(f"names no column of the catalog.{suggest(col, t.colnames)} "
                                  f"Available: {', '.join(t.colnames)}.", key=f"where.{col}",
                                  received={"where": col})
            c = t[col]
            v = np.ma.filled(np.ma.asarray(c, dtype=float), np.nan) if np.ma.is_masked(c) \
                else np.asarray(c, dtype=float)
            keep &= (v >= lo) & (v <= hi)
        return keep

    def _scan(self, chunk_size: int = 100_000) -> None:
        start0, stop0 = self._rows_slice
        selected, ids = [], []
        count = 0
        for a in range(start0, stop0, chunk_size):
            b = min(a + chunk_size, stop0)
            t = self._convert(a, b, validate=False)
            idx = np.flatnonzero(self._where_mask(t)) if self.where else np.arange(b - a)
            if self.max_rows is not None:
                idx = idx[:self.max_rows - count]
            t = t[idx]
            self._validate(t, a + idx)
            selected.append(a + idx)
            if self.id_column is not None:
                ids.append(np.asarray(t["row_id"]))
            count += len(idx)
            if self.max_rows is not None and count >= self.max_rows:
                break
        sel = np.concatenate(selected) if selected else np.zeros(0, np.int64)
        if self._n_file == 0:
            raise CatalogError("the catalog has no rows.", key="file_name",
                               received={"file_name": str(self.path)})
        if len(sel) == 0:
            raise CatalogError("no row passes the selection.", key="where",
                               received={"rows": list(self._rows_slice),
                                         "where": {k: list(v) for k, v in self.where.items()}})
        if ids:
            allid = np.concatenate(ids)
            order = np.argsort(allid, kind="stable")
            dup = np.flatnonzero(allid[order][1:] == allid[order][:-1])
            if dup.size:
                i, j = order[dup[0]], order[dup[0] + 1]
                raise CatalogError("(id_column) ids must be unique (they become row_id).",
                                   key=f"column '{self.id_column}'",
                                   received={"rows": [int(sel[i]), int(sel[j])],
                                             self.id_column: int(allid[i])})
        self._selected = sel.astype(np.int64)

    def __len__(self) -> int:
        if self._selected is None:
            self._scan()
        return len(self._selected)

    def read_rows(self, start: int, stop: int) -> Table:
        """Canonical rows ``start`` to ``stop`` (exclusive) of the selected rows."""
        if self._selected is None:
            self._scan()
        rows = self._selected[start:stop]
        if len(rows) == 0:
            return self._convert(0, 0, validate=False)
        a, b = int(rows[0]), int(rows[-1]) + 1
        take = None if b - a == len(rows) else rows - a
        return self._convert(a, b, take=take, validate=False)

    def check(self, chunk_size: int = 100_000) -> None:
        """Validate every selected row now (before any output is written); memory stays
        bounded by ``chunk_size`` rows plus the selected rows' indices."""
        self._scan(chunk_size)

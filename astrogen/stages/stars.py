"""Star stages: ``catalog.stars`` (a source of stars) and ``catalog.concat`` (join two catalogs).

A pipeline adds stars to its galaxies by giving both sources the same number of chunks and
joining them chunk by chunk::

    - {name: galaxies, type: catalog.cosmos, n_objects: 2000, chunk_size: 250}   # 8 chunks
    - {name: placed, type: catalog.positions, inputs: [galaxies], size: 1400}
    - {name: stars, type: catalog.stars, n_chunks: 8, size: 1400, bands: [lsst_g, lsst_r, lsst_i]}
    - {name: catalog, type: catalog.concat, inputs: [placed, stars]}

The star model (counts, colours, row ids) is :mod:`astrogen.catalog.stars`. A user star
catalog is read with ``catalog.read`` (its ``is_star`` column marks the stars) and joined the
same way.
"""
from __future__ import annotations

import numpy as np
from astropy.table import Table

from astrogen.catalog.stars import STAR_ROW_ID_OFFSET, StarModel, band_wavelength
from astrogen.errors import CatalogError, ConfigError
from astrogen.registry import register_stage
from astrogen.stages.base import Stage, check_int, check_positive
from astrogen.stages.catalog import Positions

__all__ = ["StarCatalog", "Concat"]


@register_stage("catalog.stars")
class StarCatalog(Stage):
    """Stars of a field: power-law counts with magnitude, blackbody colours, uniform positions.

    Parameters
    ----------
    n_chunks : int
        Number of chunks; must equal that of the pipeline's other sources (the stars are
        split evenly by index, so the catalog does not depend on it).
    density : float
        Stars per arcmin^2 in ``mag_range`` (default 2: an assumption, see
        :mod:`astrogen.catalog.stars`).
    mag_range : [float, float]
        Reference-band (HST F814W AB) magnitude range, mag.
    slope : float
        ``d log10(dN/dm) / dm`` in mag^-1.
    g_fraction : float
        Fraction of G-type stars (the others are M type).
    bands : list of str
        Bands given a ``mag_<band>`` column (``lsst_u`` ... ``lsst_y``, ``hsc_*``, ``des_*``,
        ``euclid_vis``, ``euclid_y/j/h``, ``hst_f814w``).
    size, survey, ra, dec, margin
        The scene field, exactly as for ``catalog.positions`` (pix, preset, deg, deg, pix).

    Output
    ------
    Rows with ``row_id`` (from 2**62), ``is_star`` (True), ``mag`` [mag], ``mag_<band>``
    [mag], ``teff`` [K], ``star_type``, ``z`` (0), ``x``, ``y`` [pix], ``ra``, ``dec`` [deg].
    """

    kind = "source"
    output_type = Table
    units = {"density": "1/arcmin^2", "mag_range": "mag (AB, F814W)", "slope": "1/mag",
             "size": "pix", "ra": "deg", "dec": "deg", "margin": "pix"}
    field_keys = ("size", "survey", "ra", "dec")  # or the pipeline's ``field:``

    def __init__(self, n_chunks: int = 1, density: float = 2.0, mag_range: list | None = None,
                 slope: float = 0.15, g_fraction: float = 0.5, bands: list | None = None,
                 size=1024, survey="lsst_i", ra: float = 150.1, dec: float = 2.2,
                 margin: float = 0.0):
        self._n_chunks = check_int("n_chunks", n_chunks)
        if mag_range is not None and (not isinstance(mag_range, (list, tuple))
                                      or len(mag_range) != 2):
            raise ConfigError("must be [low, high] in AB mag.", key="mag_range",
                              received={"mag_range": mag_range})
        density = check_positive("density", density, allow_zero=True, unit="1/arcmin^2")
        try:
            slope = float(slope)
            g_fraction = float(g_fraction)
        except (TypeError, ValueError):
            raise ConfigError("slope and g_fraction must be numbers.", key="slope",
                              received={"slope": slope, "g_fraction": g_fraction}) from None
        self.model = StarModel(density=density, slope=slope, g_fraction=g_fraction,
                               **({} if mag_range is None else
                                  {"mag_range": tuple(float(v) for v in mag_range)}))
        bands = [] if bands is None else bands
        if not isinstance(bands, (list, tuple)):
            raise ConfigError("must be a list of band names.", key="bands",
                              received={"bands": bands})
        for i, b in enumerate(bands):
            band_wavelength(str(b), key=f"bands[{i}]")
        self.bands = [str(b) for b in bands]
        self.positions = Positions(size=size, survey=survey, ra=ra, dec=dec, margin=margin)
        f, m = self.positions.field, self.positions.margin
        self.area_arcmin2 = (f.nx - 2 * m) * (f.ny - 2 * m) * (f.pixel_scale / 60.0) ** 2
        self.n_stars: int | None = None

    def output_field(self):
        """The field the stars are placed in (joined galaxies must share it)."""
        return self.positions.field

    def setup(self, ctx) -> None:
        super().setup(ctx)
        self.positions.ctx = ctx  # positions drawn from this stage's seed, per row id
        self.n_stars = self.model.count(ctx.seed, self.area_arcmin2)
        ctx.log.info("%s: %d stars (mean %.1f) in %.2f arcmin^2", ctx.name, self.n_stars,
                     self.model.expected_count(self.area_arcmin2), self.area_arcmin2)

    def n_chunks(self) -> int:
        return self._n_chunks

    def n_rows(self) -> int | None:
        return self.n_stars

    def chunk_bounds(self, index: int) -> tuple[int, int]:
        """Star indices ``[start, stop)`` of chunk ``index``."""
        n, k = self.n_stars, self._n_chunks
        return index * n // k, (index + 1) * n // k

    def read_chunk(self, index: int) -> Table:
        start, stop = self.chunk_bounds(index)
        table = self.model.sample(self.ctx.seed, np.arange(start, stop), self.bands)
        return self.positions.process(table)


def _fill_value(col):
    kind = np.asarray(col).dtype.kind
    if kind == "f":
        return np.nan
    if kind == "b":
        return False
    if kind in "iu":
        return -1
    return ""


#: columns with a physical value for the rows that lack them (the rest: NaN / False / -1 / "")
_DEFAULTS = {"is_star": False, "g1": 0.0, "g2": 0.0, "kappa": 0.0}


@register_stage("catalog.concat")
class Concat(Stage):
    """Join two catalogs chunk by chunk (e.g. galaxies and stars) into one stream of rows.

    Columns missing from one input are filled for its rows: ``is_star`` False, the lensing
    columns ``g1``, ``g2``, ``kappa`` 0, other float columns NaN (a star has no ``hlr``),
    booleans False, integers -1, strings empty. Row ids must be unique within the chunk (stars
    of ``catalog.stars`` start at 2**62; a user star catalog needs ids that differ from the
    galaxies'). The two inputs' scene fields must agree (checked by ``astrogen validate``,
    which names both).
    """

    input_types = (Table, Table)
    output_type = Table

    def __init__(self):
        pass

    def process(self, first: Table, second: Table) -> Table:
        parts = [first, second]
        names = list(first.colnames) + [c for c in second.colnames if c not in first.colnames]
        out = Table()
        for name in names:
            ref = first[name] if name in first.colnames else second[name]
            cols = []
            for t in parts:
                if name in t.colnames:
                    cols.append(np.asarray(t[name]))
                else:
                    fill = _DEFAULTS.get(name, _fill_value(ref))
                    cols.append(np.full(len(t), fill, dtype=np.asarray(ref).dtype
                                        if np.asarray(ref).dtype.kind != "U" else object))
            values = np.concatenate(cols)
            if values.dtype == object:
                values = values.astype(str)
            out[name] = values
            unit = getattr(ref, "unit", None)
            if unit is not None:
                out[name].unit = unit
            if getattr(ref, "description", None):
                out[name].description = ref.description
        if "is_star" not in out.colnames:
            out["is_star"] = np.zeros(len(out), dtype=bool)
        ids = np.asarray(out["row_id"])
        uniq, counts = np.unique(ids, return_counts=True)
        if np.any(counts > 1):
            raise CatalogError(
                "row ids of the two inputs collide; stars of catalog.stars use ids from "
                f"{STAR_ROW_ID_OFFSET} (2**62), a user star catalog needs its own ids.",
                key="column 'row_id'", received={"duplicate row_id": int(uniq[counts > 1][0])})
        out.meta.update(second.meta)
        out.meta.update(first.meta)
        return out

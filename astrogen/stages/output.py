"""Output stages: stamp cubes, truth catalogs and PNG previews, written chunk by chunk."""
from __future__ import annotations

import json

import numpy as np
from astropy.io import fits
from astropy.table import Table

from astrogen.batch import MultiBandStamps, StampBatch
from astrogen.io.fits_out import set_card
from astrogen.registry import register_stage
from astrogen.stages.base import Stage, check_file_name, check_int

__all__ = ["StampsOutput", "CatalogOutput", "PreviewOutput"]


def _part(stage: Stage, index: int, suffix: str):
    return stage.ctx.work_dir / f"part_{index:06d}{suffix}"


def _done_parts(stage: Stage, suffix: str):
    return sorted(stage.ctx.work_dir.glob(f"part_*{suffix}"))


def band_file_name(template: str, band: str) -> str:
    """File name of one band of a multi-band output: ``{band}`` in ``template`` replaced,
    else ``_<band>`` put before the extension (``stamps.fits`` -> ``stamps_lsst_r.fits``)."""
    if "{band}" in template:
        return template.replace("{band}", band)
    stem, _, suffix = template.rpartition(".")
    return f"{stem}_{band}.{suffix}"


@register_stage("output.stamps")
class StampsOutput(Stage):
    """Write stamps to FITS with a ``ROWS`` table of their catalog ids, sizes and pixel scales.

    Layout: when every stamp of the file has the same shape, one FITS cube (n, ny, nx) in the
    primary HDU (as always). When stamps have their own sizes (each sized to hold its
    galaxy), the primary HDU holds only the header and the stamps are the rows of a
    ``STAMPS`` binary table with a variable-length ``image`` column (flattened, row-major:
    ``data['image'][k].reshape(ny[k], nx[k])``), in the order of ``ROWS``; ``ROWS`` gives
    ``stamp_ny``, ``stamp_nx`` [pix] and ``pixel_scale`` [arcsec/pix] of every stamp. Padding
    every stamp to the largest one (a galaxy that needs 900 pixels) would multiply the file
    size by up to ~100. Both layouts are written part by part (memory independent of the
    number of stamps).

    Several bands (``observe`` with ``bands:``, a :class:`~astrogen.batch.MultiBandStamps`):
    one file per band, named ``file_name`` with ``_<band>`` before ``.fits``
    (``stamps_lsst_r.fits``; or ``{band}`` in ``file_name`` replaced), each laid out as above
    with the same rows in the same order, and cards ``BAND`` (``lsst_r``) and ``BANDS`` (all
    bands of the set) besides ``FILTER`` and ``MAGZERO`` (that band's zero point).

    The header carries the pixel scale (0 when it varies: see ``ROWS``), flux unit, zero
    point, PSF, band, a linear WCS of offsets from the stamp centre in arcsec (cube layout)
    and the provenance cards.

    Parameters
    ----------
    file_name : str
        FITS file name in the output folder.
    """

    kind = "sink"
    input_types = ((StampBatch, MultiBandStamps),)

    def __init__(self, file_name: str = "stamps.fits"):
        self.file_name = check_file_name("file_name", file_name, (".fits",))

    def consume(self, index: int, batch) -> None:
        if isinstance(batch, MultiBandStamps):
            for band in batch.bands:
                self._save(index, batch[band], f".{band}.npz",
                           {"band_name": band, "bands": ",".join(batch.bands)})
            return
        self._save(index, batch, ".npz", {})

    def _save(self, index: int, batch: StampBatch, suffix: str, extra: dict) -> None:
        from astrogen.io.atomic import save_npz

        cols = {c: np.asarray(batch.catalog[c]) for c in ("row_id", "ra", "dec", "x", "y")
                if c in batch.catalog.colnames}
        shapes = batch.shapes
        cols["stamp_ny"], cols["stamp_nx"] = shapes[:, 0].astype(np.int32), shapes[:, 1].astype(np.int32)
        cols["pixel_scale"] = batch.pixel_scales
        scales = batch.pixel_scales
        meta = {"pixel_scale": float(scales[0]) if batch.uniform_scale and len(batch) else 0.0,
                "flux_unit": batch.flux_unit,
                "zero_point": batch.zero_point, "psf": batch.psf or "none",
                "band": batch.band, "noise": (None if batch.noise_sigma is None
                                              else float(np.median(batch.noise_sigma))),
                "generator": str(batch.meta.get("generator", "")),
                "model": str(batch.meta.get("model", "")),
                "model_sha256": str(batch.meta.get("model_sha256", "")), **extra}
        flat = (np.concatenate([np.ravel(batch.stamp(i)) for i in range(len(batch))])
                if len(batch) else np.zeros(0))
        save_npz(_part(self, index, suffix), pixels=flat.astype(np.float32),
                 meta=np.array(json.dumps(meta)), **cols)

    def finalize(self):
        groups: dict[str | None, list] = {}
        for p in _done_parts(self, ".npz"):  # part_N.npz (one band) or part_N.<band>.npz
            parts = p.name.split(".")
            groups.setdefault(parts[1] if len(parts) == 3 else None, []).append(p)
        out = []
        for band, parts in groups.items():
            name = self.file_name if band is None else band_file_name(self.file_name, band)
            out += self._write(parts, name)
        return out

    def _write(self, parts, file_name: str):
        from astrogen.io.fits_out import provenance_cards, write_cube_stream, write_varlen_stream

        if not parts:
            return []
        n, rows, scales = 0, [], set()
        for p in parts:
            with np.load(p) as z:
                n += z["row_id"].shape[0]
                rows.append({k: z[k] for k in z.files if k not in ("pixels", "meta")})
                m = json.loads(str(z["meta"]))
                scales.add(m["pixel_scale"])
        table = Table({k: np.concatenate([r[k] for r in rows]) for k in rows[0]})
        table["pixel_scale"].unit = "arcsec / pix"
        shapes = {(int(a), int(b)) for a, b in zip(table["stamp_ny"], table["stamp_nx"])}
        uniform = len(shapes) == 1
        pixscale = scales.pop() if len(scales) == 1 else 0.0
        h = fits.Header()
        h["BUNIT"] = (m["flux_unit"], "pixel unit")
        h["PIXSCALE"] = (pixscale, "[arcsec/pixel] 0: per stamp (ROWS)")
        h["MAGZERO"] = (m["zero_point"], "[mag] AB magnitude of a 1 BUNIT source")
        h["FILTER"] = (m["band"], "band")
        if m.get("band_name"):  # one band of a multi-band set
            set_card(h, "BAND", m["band_name"], "band <survey>_<filter>")
            set_card(h, "BANDS", m["bands"][:68], "all bands of this set (one file each)")
        set_card(h, "PSF", str(m["psf"])[:68], "PSF applied ('none': PSF-free profiles)")
        h["NOISE"] = (m["noise"] if m["noise"] is not None else 0.0, "[BUNIT] noise sigma")
        if m.get("generator"):
            set_card(h, "GENERATR", m["generator"][:68],
                      "stage that generated the light profiles")
        if m.get("model"):
            set_card(h, "GENMODEL", m["model"][-68:], "generative model (shipped name or file)")
            set_card(h, "GENMDSHA", m["model_sha256"], "SHA-256 of the model file")
        h["NSTAMPS"] = (n, "number of stamps")
        set_card(h, "STAMPLAY", "cube" if uniform else "table",
                 "cube: primary (n,ny,nx); table: STAMPS rows")
        rows_hdu = fits.BinTableHDU(table, name="ROWS")
        out = self.ctx.output_dir / file_name
        if uniform:
            shape = shapes.pop()
            h["WCSAXES"] = 2
            h["CTYPE1"], h["CTYPE2"] = "OFFSET_X", "OFFSET_Y"
            h["CUNIT1"], h["CUNIT2"] = "arcsec", "arcsec"
            h["CRPIX1"], h["CRPIX2"] = shape[1] / 2 + 0.5, shape[0] / 2 + 0.5
            h["CRVAL1"], h["CRVAL2"] = 0.0, 0.0
            h["CDELT1"], h["CDELT2"] = pixscale, pixscale
            provenance_cards(h, self.ctx.provenance, self.ctx.history)

            def blocks():
                for p in parts:
                    with np.load(p) as z:
                        yield z["pixels"].reshape(-1, *shape)

            return [write_cube_stream(out, h, shape, n, blocks(), extra_hdus=[rows_hdu])]
        provenance_cards(h, self.ctx.provenance, self.ctx.history)

        def flat_blocks():
            for p in parts:
                with np.load(p) as z:
                    yield z["pixels"]

        counts = np.asarray(table["stamp_ny"], np.int64) * np.asarray(table["stamp_nx"], np.int64)
        return [write_varlen_stream(out, h, counts, flat_blocks(), extra_hdus=[rows_hdu],
                                    unit=m["flux_unit"])]


@register_stage("output.catalog")
class CatalogOutput(Stage):
    """Write every catalog row (all drawn properties, positions and fluxes) as a FITS table.

    Accepts a catalog or stamps; for stamps, adds ``stamp_flux`` (sum of the stamp, in the
    stamps' unit) and ``stamp_mag`` (mag); for stamps in several bands
    (:class:`~astrogen.batch.MultiBandStamps`), ``stamp_flux_<band>`` and ``stamp_mag_<band>``.

    For a table (e.g. ``nbody.fof`` haloes): columns in astropy's ``littleh`` units
    (``Msun / littleh``, ``Mpc / littleh``) are written in Msun and Mpc, converted with the
    ``h`` of the table's ``meta["cosmology"]`` (FITS has no unit for h, so a TUNIT must be a
    plain unit), and the table's scalar ``meta`` (particle mass, units note...) that is the
    same in every chunk becomes cards of the primary header (``HUBBLE`` = h among them).

    Parameters
    ----------
    file_name : str
        FITS file name in the output folder.
    """

    kind = "sink"
    input_types = ((Table, StampBatch, MultiBandStamps),)

    def __init__(self, file_name: str = "truth_catalog.fits"):
        self.file_name = check_file_name("file_name", file_name, (".fits",))

    def consume(self, index: int, data) -> None:
        from astrogen.io.atomic import atomic_path

        if isinstance(data, StampBatch):
            t = data.catalog.copy()
            t["stamp_flux"] = data.fluxes
            t["stamp_flux"].description = f"[{data.flux_unit}] sum of the stamp"
            t["stamp_mag"] = data.magnitudes()
            t["stamp_mag"].unit = "mag"
            t.meta.clear()
        elif isinstance(data, MultiBandStamps):
            t = data.catalog.copy()
            for band in data.bands:
                b = data[band]
                t[f"stamp_flux_{band}"] = b.fluxes
                t[f"stamp_flux_{band}"].description = f"[{b.flux_unit}] sum of the {band} stamp"
                t[f"stamp_mag_{band}"] = b.magnitudes()
                t[f"stamp_mag_{band}"].unit = "mag"
            t.meta.clear()
        else:
            t = _plain_units(data.copy())
            meta = _scalar_meta(t.meta)
            t.meta.clear()
            with atomic_path(_part(self, index, ".meta.json")) as tmp:
                tmp.write_text(json.dumps(meta))
        with atomic_path(_part(self, index, ".fits")) as tmp:
            t.write(tmp, format="fits")

    def finalize(self):
        from astrogen.io.fits_out import provenance_cards, write_table_stream

        parts = _done_parts(self, ".fits")
        if not parts:
            return []
        h = provenance_cards(fits.Header(), self.ctx.provenance, self.ctx.history)
        _common_meta_cards(h, [p.with_suffix(".meta.json") for p in parts])
        _field_cards(h, self.input_field)
        return [write_table_stream(self.ctx.output_dir / self.file_name, parts, h)]


# ---- halo tables: h-scaled units and table meta in FITS -----------------------------------
def _table_h(t: Table, column: str) -> float:
    cosmo = t.meta.get("cosmology") if isinstance(t.meta.get("cosmology"), dict) else {}
    h = cosmo.get("h", t.meta.get("h"))
    try:
        h = float(h)
    except (TypeError, ValueError):
        h = float("nan")
    if not (np.isfinite(h) and h > 0):
        from astrogen.errors import CatalogError

        raise CatalogError(f"column {column!r} is in h-scaled units but the table has no "
                           "meta['cosmology']['h'] to convert it with.", key=column,
                           received={"unit": str(t[column].unit), "h": h})
    return h


def _plain_units(t: Table) -> Table:
    """Columns with astropy ``littleh`` units converted to plain units with the table's h."""
    from astropy import units as u
    from astropy.cosmology import units as cu

    for name in t.colnames:
        unit = t[name].unit
        if unit is None or not isinstance(unit, u.UnitBase):
            continue
        powers = dict(zip(getattr(unit, "bases", []), getattr(unit, "powers", [])))
        p = powers.get(cu.littleh, 0)
        if not p:
            continue
        h = _table_h(t, name)
        target = unit * cu.littleh ** (-p)
        q = t[name].quantity.to(target, cu.with_H0(100.0 * h * u.km / u.s / u.Mpc))
        desc = t[name].description or ""
        t[name] = q
        note = f"converted from {unit} to {target} with h = {h:g}"
        t[name].description = f"{desc}; {note}" if desc else note
    return t


def _scalar_meta(meta: dict) -> dict:
    """The str/int/float/bool items of a table's meta, dicts flattened one level
    (``cosmology`` -> ``HUBBLE`` for h, ``cosmology_<key>`` for the others)."""
    out = {}
    for k, v in meta.items():
        if isinstance(v, dict):
            for k2, v2 in v.items():
                if isinstance(v2, (str, bool, int, float)):
                    out["HUBBLE" if (k, k2) == ("cosmology", "h") else f"{k}_{k2}"] = v2
        elif isinstance(v, (str, bool, int, float, np.integer, np.floating, np.bool_)):
            out[str(k)] = v.item() if hasattr(v, "item") else v
    return out


def _common_meta_cards(header: fits.Header, paths) -> None:
    """Add the meta items equal in every part (sidecar JSON) to ``header``."""
    metas = []
    for p in paths:
        if not p.is_file():  # a part written by an older version: no meta known
            return
        metas.append(json.loads(p.read_text()))
    if not metas:
        return
    common = {k: v for k, v in metas[0].items() if all(m.get(k) == v for m in metas[1:])}
    for k, v in common.items():
        _meta_card(header, k, v)


def _meta_card(header: fits.Header, k: str, v) -> None:
    """``header[K] = v`` (``HIERARCH k`` for a long name; a comment if it cannot fit)."""
    key = k.upper() if len(k) <= 8 and k.replace("_", "").isalnum() else f"HIERARCH {k}"
    try:
        header[key] = v
    except ValueError:  # a HIERARCH card too long for 80 columns
        header.add_comment(f"{k} = {v}")


def _field_cards(header: fits.Header, field) -> None:
    """The scene field of the rows (``SCENE_NX``, ``SCENE_NY``, ``scene_pixel_scale``
    [arcsec/pix], ``SCENE_RA``, ``scene_dec`` [deg]), when a stage upstream declares one."""
    if field is not None:
        for k in ("nx", "ny", "pixel_scale", "ra", "dec"):
            _meta_card(header, f"scene_{k}", getattr(field, k))


@register_stage("output.preview")
class PreviewOutput(Stage):
    """PNG mosaic of the first ``n_max`` stamps, labelled with row id, magnitude, stamp side
    and pixel scale; with an ``hlr`` column each panel shows the central 12 half-light radii
    (at least 32 pixels) of its stamp.

    Parameters
    ----------
    file_name : str
        PNG file name in the output folder.
    n_max : int
        Number of stamps shown.
    band : str, optional
        For stamps in several bands (``observe`` with ``bands:``): the band shown (default:
        the first).
    """

    kind = "sink"
    input_types = ((StampBatch, MultiBandStamps),)

    def __init__(self, file_name: str = "preview.png", n_max: int = 36, band: str | None = None):
        self.file_name = check_file_name("file_name", file_name, (".png",))
        self.n_max = check_int("n_max", n_max)
        self.band = band
        self.stamps: list[np.ndarray] = []
        self.labels: list[str] = []
        self.title = ""

    def consume(self, index: int, batch) -> None:
        if isinstance(batch, MultiBandStamps):
            band = batch.bands[0] if self.band is None else self.band
            if band not in batch.bands:
                from astrogen.errors import ConfigError

                raise ConfigError(f"is not one of the input's bands {batch.bands}.",
                                  key="band", received={"band": self.band})
            batch = batch[band]
        scales = batch.pixel_scales
        scale = (f"{scales[0]:g}\"/pix" if batch.uniform_scale and len(batch)
                 else "pixel scale per stamp")
        self.title = (f"{batch.meta.get('generator', '')} {batch.band} "
                      f"{scale}  psf={batch.psf or 'none'}")
        mags = batch.catalog["mag"] if "mag" in batch.catalog.colnames else [np.nan] * len(batch)
        hlr = (np.asarray(batch.catalog["hlr"], float) if "hlr" in batch.catalog.colnames
               else None)
        for i in range(len(batch)):
            if len(self.stamps) >= self.n_max:
                return
            st = np.asarray(batch.stamp(i), dtype=np.float32)
            ny, nx = st.shape
            if hlr is not None and np.isfinite(hlr[i]):
                # show the galaxy, not its whole 99.5 % box: the central 12 hlr (>= 32 pix)
                side = int(max(32, np.ceil(12 * hlr[i] / scales[i])))
                y0, x0 = max((ny - side) // 2, 0), max((nx - side) // 2, 0)
                st = st[y0:y0 + min(side, ny), x0:x0 + min(side, nx)]
            self.stamps.append(st)
            self.labels.append(f"#{int(batch.catalog['row_id'][i])} m={float(mags[i]):.1f} "
                               f"{nx}px {scales[i]:.3g}\"")

    def get_state(self):
        if not self.stamps:
            return None
        shapes = np.array([st.shape for st in self.stamps], dtype=np.int64)
        return {"pixels": np.concatenate([st.ravel() for st in self.stamps]),
                "shapes": shapes, "labels": np.array(self.labels),
                "title": np.array(self.title)}

    def set_state(self, state) -> None:
        flat, k, self.stamps = state["pixels"], 0, []
        for ny, nx in state["shapes"]:
            self.stamps.append(np.asarray(flat[k:k + ny * nx]).reshape(ny, nx))
            k += ny * nx
        self.labels = [str(s) for s in state["labels"]]
        self.title = str(state["title"])

    def finalize(self):
        from astrogen.io.preview import save_mosaic

        if not self.stamps:
            return []
        return [save_mosaic(self.ctx.output_dir / self.file_name, self.stamps,
                            self.labels, title=self.title)]

"""FITS products: headers with provenance, and streaming writers whose memory use does not
depend on the number of rows or stamps."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

import numpy as np
from astropy.io import fits
from astropy.table import Table

from astrogen.io.atomic import atomic_path

__all__ = ["comoving_wcs_cards", "provenance_cards", "set_card", "write_image", "write_cube_stream",
           "write_varlen_stream", "write_table_stream",
           "check_header_values"]


def check_header_values(cards: dict[str, tuple[Any, str]], history: Iterable[str] = ()) -> None:
    """Check that ``cards`` (key -> (value, comment)) and ``history`` lines can be written in
    a FITS header exactly as :func:`provenance_cards` writes them: printable ASCII, a value
    that fits one card. Nothing is written.

    Raises
    ------
    astrogen.errors.OutputError
        Naming the card and the value.
    """
    import warnings

    from astrogen.errors import OutputError

    for key, (value, comment) in cards.items():
        for what, text in (("value", value), ("comment", comment)):
            if isinstance(text, str) and not (text.isascii() and text.isprintable()):
                raise OutputError(f"the {what} of FITS card {key} must be printable ASCII.",
                                  key=key, received={key: text})
        if isinstance(value, str) and len(value) > 68:
            raise OutputError("a FITS card value holds at most 68 characters.", key=key,
                              received={key: value})
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                fits.Card(key, value, comment).verify("exception")
        except Exception as exc:  # noqa: BLE001 - astropy raises several kinds
            raise OutputError(f"is not a valid FITS card ({exc}).", key=key,
                              received={key: value}) from None
    for line in history:
        if not (line.isascii() and line.isprintable()) or len(line) > 72:
            raise OutputError("a HISTORY line must be printable ASCII of at most 72 "
                              "characters.", key="HISTORY", received={"line": line})


def set_card(header: fits.Header, key: str, value: str, comment: str) -> None:
    """``header[key] = (value, comment)``, the comment moved to a COMMENT card when it would
    not fit in the 80 columns (astropy would truncate it with a warning)."""
    if len(key) + len(str(value)) + len(comment) + 8 <= 80:
        header[key] = (value, comment)
    else:
        header[key] = value
        header.add_comment(f"{key}: {comment}")


def provenance_cards(header: fits.Header, cards: dict[str, tuple[Any, str]],
                     history: Iterable[str] = ()) -> fits.Header:
    """Add provenance ``cards`` (key -> (value, comment)) to ``header``, and the resolved
    pipeline configuration as ``HISTORY`` lines."""
    for key, (value, comment) in cards.items():
        header[key] = (value, comment)
    if history:
        header["HISTORY"] = "astrogen resolved pipeline configuration (YAML):"
        for line in history:
            header["HISTORY"] = line
    return header


def table_hdu(table: Table, name: str) -> fits.BinTableHDU:
    """A binary-table HDU whose column units and descriptions survive a round trip through
    ``astropy.table.Table.read`` / ``QTable.read``, also units FITS has no name for
    (``electron``: ``fits.BinTableHDU(table)`` drops them with a warning).

    Columns with a unit are written as quantities of their own dtype, so astropy records
    them in its serialized-columns header block; units the FITS standard knows (``pix``,
    ``deg``) are also written as ``TUNITn`` for other readers. An integer column with a
    unit is stored as an integer but read back by astropy as float.

    Parameters
    ----------
    table : astropy.table.Table
    name : str
        ``EXTNAME`` of the HDU.

    Returns
    -------
    astropy.io.fits.BinTableHDU
    """
    import io
    import warnings

    from astropy import units as u
    from astropy.table import QTable
    from astropy.utils.exceptions import AstropyUserWarning

    q = QTable(meta=dict(table.meta))
    for col_name, col in table.columns.items():
        if getattr(col, "unit", None) is None:
            q[col_name] = col
            continue
        q[col_name] = u.Quantity(np.asarray(col), col.unit, dtype=col.dtype)
        q[col_name].info.description = col.info.description
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AstropyUserWarning)
        q.write(buf, format="fits")
    buf.seek(0)
    with fits.open(buf) as hl:
        hdu = fits.BinTableHDU(data=hl[1].data.copy(), header=hl[1].header.copy())
    hdu.name = name
    return hdu


def write_image(path, hdus: list[fits.ImageHDU | fits.PrimaryHDU]) -> Path:
    """Write an HDU list atomically."""
    with atomic_path(path) as tmp:
        fits.HDUList(hdus).writeto(tmp, overwrite=True, output_verify="exception")
    return Path(path)


def write_cube_stream(path, header: fits.Header, shape: tuple[int, int], n: int,
                      blocks: Iterable[np.ndarray], extra_hdus: list | None = None) -> Path:
    """Write ``n`` images of ``shape`` as one (n, ny, nx) float32 cube, block by block.

    Parameters
    ----------
    header : astropy.io.fits.Header
        Cards for the primary HDU (NAXIS keywords are set here).
    blocks : iterable of numpy.ndarray
        Consecutive blocks of shape (k, ny, nx) whose k add up to ``n``.
    extra_hdus : list, optional
        HDUs appended after the cube (e.g. a row-id table).
    """
    hdr = fits.Header([("SIMPLE", True), ("BITPIX", -32), ("NAXIS", 3),
                       ("NAXIS1", shape[1]), ("NAXIS2", shape[0]), ("NAXIS3", n),
                       ("EXTEND", True)])
    for card in header.cards:
        if card.keyword not in hdr and card.keyword not in ("COMMENT", "HISTORY", ""):
            hdr.append(card)
        elif card.keyword in ("COMMENT", "HISTORY"):
            hdr.append(card)
    with atomic_path(path) as tmp:
        shdu = fits.StreamingHDU(tmp, hdr)
        written = 0
        for block in blocks:
            block = np.asarray(block, dtype=">f4")
            written += block.shape[0]
            shdu.write(block)
        shdu.close()
        if written != n:
            raise RuntimeError(f"cube expected {n} images, got {written}")
        for extra in extra_hdus or []:
            fits.append(tmp, extra.data, extra.header)
    return Path(path)


def write_table_stream(path, parts: list[Path], primary_header: fits.Header | None = None,
                       extname: str = "CATALOG") -> Path:
    """Concatenate FITS table parts (same columns) into one binary table, part by part.

    The header comes from the first part with NAXIS2 set to the total row count; the rows
    of each part are copied as raw big-endian records, so memory holds one part at a time.
    """
    parts = [Path(p) for p in parts]
    with fits.open(parts[0]) as hl:
        head = hl[1].header.copy()
    nrows = 0
    row_len = head["NAXIS1"]
    for p in parts:
        with fits.open(p) as hl:
            if hl[1].header["NAXIS1"] != row_len or hl[1].header.get("PCOUNT", 0):
                raise RuntimeError(f"table part {p} has another row layout")
            nrows += hl[1].header["NAXIS2"]
    head["NAXIS2"] = nrows
    head["EXTNAME"] = extname
    prim = fits.PrimaryHDU(header=primary_header)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            prim.writeto(fh)
            fh.write(head.tostring().encode("ascii"))
            size = 0
            for p in parts:
                with fits.open(p, memmap=False) as hl:
                    raw = hl[1].data.view(np.ndarray).tobytes() if len(hl[1].data) else b""
                    # astropy keeps FITS_rec storage big-endian as in the file
                    fh.write(raw)
                    size += len(raw)
            pad = (-size) % 2880
            fh.write(b"\0" * pad)
    return Path(path)


def write_varlen_stream(path, primary_header: fits.Header, counts: np.ndarray,
                        blocks: Iterable[np.ndarray], extra_hdus: list | None = None,
                        extname: str = "STAMPS", unit: str = "") -> Path:
    """Write ``n`` flattened float32 images of different lengths as a FITS binary table with
    one variable-length column ``image`` (``QE`` format: 64-bit heap descriptors), streaming
    the heap block by block, so memory does not grow with the number of images.

    Layout: primary HDU (``primary_header``, no data), then ``extra_hdus`` (e.g. a ``ROWS``
    table), then the ``extname`` table; ``data['image'][k]`` has ``counts[k]`` values.

    Parameters
    ----------
    counts : numpy.ndarray of int
        Number of values of each image, in order.
    blocks : iterable of numpy.ndarray
        The images' values, concatenated in order, in consecutive 1-D blocks.
    """
    counts = np.asarray(counts, dtype=np.int64)
    n = len(counts)
    offsets = np.concatenate([[0], np.cumsum(counts)[:-1]]) * 4 if n else np.zeros(0, np.int64)
    heap = int(counts.sum()) * 4
    desc = np.empty((n, 2), dtype=">i8")
    desc[:, 0], desc[:, 1] = counts, offsets
    h = fits.Header([("XTENSION", "BINTABLE"), ("BITPIX", 8), ("NAXIS", 2), ("NAXIS1", 16),
                     ("NAXIS2", n), ("PCOUNT", heap), ("GCOUNT", 1), ("TFIELDS", 1),
                     ("TTYPE1", "image"), ("TFORM1", f"QE({int(counts.max()) if n else 0})")])
    if unit:
        h["TUNIT1"] = unit
    h["EXTNAME"] = extname
    prim = fits.PrimaryHDU(header=primary_header)
    with atomic_path(path) as tmp:
        hl = fits.HDUList([prim] + list(extra_hdus or []))
        hl.writeto(tmp, overwrite=True, output_verify="exception")
        with open(tmp, "ab") as fh:
            fh.write(h.tostring().encode("ascii"))
            fh.write(desc.tobytes())
            written = 0
            for block in blocks:
                raw = np.ascontiguousarray(block, dtype=">f4").tobytes()
                fh.write(raw)
                written += len(raw)
            if written != heap:
                raise RuntimeError(f"variable-length table expected {heap} bytes, got {written}")
            fh.write(b"\0" * ((-(16 * n + heap)) % 2880))
    return Path(path)


def comoving_wcs_cards(h: fits.Header, nd: int, cell: float, hub: float | None) -> None:
    """Linear WCS of a comoving grid: FITS axes 1, 2(, 3) = x, y(, z), cell ``i`` at
    ``i * cell``. Primary WCS in Mpc with CUNIT (h applied); alternate ``H`` in Mpc/h without
    CUNIT (FITS has no h). Without ``hub`` (no cosmology) the primary WCS is in Mpc/h.

    Parameters
    ----------
    h : astropy.io.fits.Header
        Header to fill.
    nd : int
        Number of axes (2 or 3).
    cell : float
        Grid spacing, Mpc/h.
    hub : float or None
        Dimensionless Hubble constant h.
    """
    axes = "XYZ"
    h["WCSAXES"] = nd
    wcs = [("", 1.0 / hub if hub else 1.0, "Mpc" if hub else None)]
    if hub:
        wcs.append(("H", 1.0, None))
    for key, scale, unit in wcs:
        h[f"WCSNAME{key}"] = (f"comoving Mpc (h = {hub:g} applied)" if unit
                              else "comoving Mpc/h")
        for i in range(nd):
            a = i + 1
            h[f"CTYPE{a}{key}"] = (axes[i], f"comoving {axes[i].lower()}")
            if unit:
                h[f"CUNIT{a}{key}"] = unit
            else:
                h[f"CNAME{a}{key}"] = f"comoving {axes[i].lower()} [Mpc/h]"
            h[f"CRPIX{a}{key}"] = 1.0
            h[f"CRVAL{a}{key}"] = 0.0
            h[f"CDELT{a}{key}"] = (cell * scale,
                                   "Mpc" if unit else "Mpc/h (no CUNIT: FITS has no h)")

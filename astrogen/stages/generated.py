"""Size and shape of generated stamps: measure them, draw large galaxies whole, apply q and beta.

Shared by the generative stages (``flowvae.generate``, ``ddpm.generate``), whose networks draw
every galaxy in a fixed field (64 x 64 pixels at 0.03 arcsec for the shipped models) and are
conditioned on ``mag``, ``hlr`` and ``z`` only:

* **Whole galaxies.** A galaxy whose major-axis half-light radius ``hlr / sqrt(q)`` exceeds the
  model's comfortable size ``max_native_hlr`` (arcsec) is generated at that size instead
  (condition ``hlr / s``, with ``s = hlr / (sqrt(q) max_native_hlr)``), and its stamp is given
  the pixel scale ``native_scale * hlr / hlr_generated`` (``StampBatch`` accepts one scale
  per stamp): the galaxy is drawn in units of its own size, so it keeps the field's margin
  instead of running into the stamp edge. ``hlr_generated`` is *measured* on the generated
  stamp, so the output has the requested half-light radius whatever the model's size error.
* **q and beta.** The networks ignore axis ratio and position angle. Each generated stamp's
  shape is measured (GalSim HSM adaptive moments), and the stamp is mapped by the area-
  preserving linear transformation ``A(g_requested) A(g_measured)^-1`` (GalSim shear
  matrices; bicubic spline resampling about the light centroid), which makes the adaptive-
  moment shape the requested one and keeps the circularised half-light radius and the flux.

* **Edge taper.** Before either step, each network stamp is multiplied by a round window that
  is 1 inside 80 % of the half-width and falls to 0 (raised cosine) at one pixel from the
  edge (:func:`edge_window`). The networks leave light at the border of their field that is
  not galaxy light (the FlowVAE decoder's frame, ~1.3 % of the flux; the DDPM's grainy floor);
  sheared and magnified, the field's square border would otherwise show as a faint
  parallelogram around the galaxy. The light removed is reported per row
  (``gen_taper_loss``).

Every row reports what was done and what came out (``gen_*`` columns, see
:func:`truth_columns`): nothing is rescaled silently.

* **Stars in the stream.** Rows with ``is_star`` True (``catalog.concat`` of galaxies and
  stars) are not sent to the network (:func:`pass_stars_through`): the galaxy rows are
  generated alone (their per-row seeds, hence their images, are those of a run without
  stars) and each star gets a placeholder stamp holding its catalog flux in the central
  pixel(s); ``observe`` and ``scene`` draw ``is_star`` rows as the PSF and never read it.
"""
from __future__ import annotations

import logging

import galsim
import numpy as np
from scipy import ndimage

from astrogen.physics.photometry import flux_from_mag, mag_from_flux

__all__ = ["measure_stamps", "shear_matrix", "reshape_stamps", "size_scale_factors",
           "ring_fraction", "edge_window", "truth_columns", "finish_generated",
           "star_mask", "output_side", "point_stamps", "pass_stars_through"]

log = logging.getLogger("astrogen.stages.generated")

#: Light allowed in the outer 2-pixel ring of a stamp before the row is flagged as cut.
RING_LIMIT = 0.005
#: Growth of the stamp side before q and beta are applied (a round galaxy filling 80 % of the
#: native field still fits when stretched to q = 0.3).
SHAPE_PAD = 1.5


def ring_fraction(images: np.ndarray, width: int = 2) -> np.ndarray:
    """Fraction of each stamp's flux in its outer ``width``-pixel border, shape (n,)."""
    a = np.asarray(images, np.float64)
    total = a.sum(axis=(1, 2))
    inner = a[:, width:-width, width:-width].sum(axis=(1, 2))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(total > 0, (total - inner) / total, np.nan)


def edge_window(n: int, inner: float = 0.8) -> np.ndarray:
    """Round taper for an ``n x n`` stamp: 1 within ``inner`` x the half-width of the centre,
    raised cosine down to 0 at ``n/2 - 1`` pixels, 0 beyond (the corners), shape (n, n)."""
    c = (n - 1) / 2.0
    y, x = np.indices((n, n), dtype=np.float64)
    r = np.hypot(x - c, y - c)
    r0, r1 = inner * n / 2.0, n / 2.0 - 1.0
    w = 0.5 * (1.0 + np.cos(np.pi * np.clip((r - r0) / (r1 - r0), 0.0, 1.0)))
    return w


def _unweighted(img):
    w = np.clip(img, 0, None)
    s = w.sum()
    if not s > 0:
        return None
    y, x = np.indices(img.shape, dtype=np.float64)
    xc, yc = (w * x).sum() / s, (w * y).sum() / s
    qxx = (w * (x - xc) ** 2).sum() / s
    qyy = (w * (y - yc) ** 2).sum() / s
    qxy = (w * (x - xc) * (y - yc)).sum() / s
    d = qxx + qyy
    if not d > 0:
        return None
    e1, e2 = (qxx - qyy) / d, 2 * qxy / d
    return xc, yc, galsim.Shear(e1=e1, e2=e2)


def measure_stamps(images: np.ndarray, pixel_scale) -> dict:
    """Centroid, shape and circularised half-light radius of each stamp.

    Parameters
    ----------
    images : numpy.ndarray, shape (n, ny, nx)
        PSF-free stamps (any flux unit).
    pixel_scale : float or numpy.ndarray, shape (n,)
        Arcsec / pixel of each stamp.

    Returns
    -------
    dict of numpy.ndarray, shape (n,)
        ``x0``, ``y0`` (pixel, 0-based array coordinates), ``g1``, ``g2`` (reduced-shear
        form of the shape), ``q`` (b/a), ``beta`` (deg, counter-clockwise from +x, in
        [-90, 90)), ``hlr`` (arcsec: radius ``sqrt(ab)`` of the elliptical aperture with the
        measured shape that holds half of the stamp's flux), ``ok`` (HSM adaptive moments
        converged; otherwise unweighted moments of the positive pixels were used).
    """
    a = np.asarray(images, np.float64)
    n = a.shape[0]
    scales = np.broadcast_to(np.asarray(pixel_scale, np.float64), (n,))
    out = {k: np.full(n, np.nan) for k in ("x0", "y0", "g1", "g2", "q", "beta", "hlr")}
    out["ok"] = np.zeros(n, bool)
    y, x = np.indices(a.shape[1:], dtype=np.float64)
    for i in range(n):
        img = a[i]
        res = galsim.hsm.FindAdaptiveMom(galsim.Image(img, scale=1.0), strict=False)
        if res.moments_status == 0 and np.isfinite(res.moments_sigma) and res.moments_sigma > 0:
            xc, yc, shape = res.moments_centroid.x - 1.0, res.moments_centroid.y - 1.0, \
                res.observed_shape
            out["ok"][i] = True
        else:
            um = _unweighted(img)
            if um is None:
                continue
            xc, yc, shape = um
        out["x0"][i], out["y0"][i] = xc, yc
        out["g1"][i], out["g2"][i] = shape.g1, shape.g2
        q = float(shape.q)
        b = float(shape.beta.rad)
        out["q"][i] = q
        out["beta"][i] = (np.degrees(b) + 90.0) % 180.0 - 90.0
        dx, dy = x - xc, y - yc
        xp = dx * np.cos(b) + dy * np.sin(b)
        yp = -dx * np.sin(b) + dy * np.cos(b)
        r = np.sqrt(q * xp ** 2 + yp ** 2 / q).ravel()
        order = np.argsort(r)
        cum = np.cumsum(img.ravel()[order])
        total = cum[-1]
        if not total > 0:
            continue
        k = int(np.searchsorted(cum, 0.5 * total))
        k = min(max(k, 1), len(r) - 1)
        r0, r1, c0, c1 = r[order][k - 1], r[order][k], cum[k - 1], cum[k]
        rh = r0 + (0.5 * total - c0) * (r1 - r0) / (c1 - c0) if c1 > c0 else r1
        out["hlr"][i] = rh * scales[i]
    return out


def shear_matrix(g1, g2) -> np.ndarray:
    """GalSim's shear matrix ``A(g)`` (x, y), shape (..., 2, 2): ``f'(x) = f(A^-1 x)``."""
    g1, g2 = np.asarray(g1, np.float64), np.asarray(g2, np.float64)
    f = 1.0 / np.sqrt(1.0 - g1 ** 2 - g2 ** 2)
    return f[..., None, None] * np.stack([np.stack([1 + g1, g2], -1),
                                          np.stack([g2, 1 - g1], -1)], -2)


def reshape_stamps(images, x0, y0, g_from, g_to) -> np.ndarray:
    """Map each stamp by ``A(g_to) A(g_from)^-1`` about its centroid (area-preserving).

    Parameters
    ----------
    images : numpy.ndarray, shape (n, ny, nx)
    x0, y0 : numpy.ndarray, shape (n,)
        Centroids, 0-based pixel coordinates (fixed points of the map).
    g_from, g_to : numpy.ndarray, shape (n, 2)
        Measured and requested shapes (reduced-shear form, ``|g| < 1``).

    Returns
    -------
    numpy.ndarray, float32, shape (n, ny, nx)
        Resampled stamps (bicubic spline; in stamps that had no negative pixel the spline's
        negative undershoots are set to 0 and the stamp renormalised to the resampled flux;
        light mapped out of the stamp is lost and shows in ``stamp_flux_frac``).
    """
    a = np.asarray(images)
    out = np.empty(a.shape, np.float32)
    t = shear_matrix(g_to[:, 0], g_to[:, 1]) @ np.linalg.inv(shear_matrix(g_from[:, 0],
                                                                          g_from[:, 1]))
    swap = np.array([[0.0, 1.0], [1.0, 0.0]])
    for i in range(a.shape[0]):
        m = swap @ np.linalg.inv(t[i]) @ swap  # (y, x) order: out[o] = in[m o + offset]
        c = np.array([y0[i], x0[i]])
        res = ndimage.affine_transform(a[i].astype(np.float64), m, offset=c - m @ c,
                                       order=3, mode="constant", cval=0.0)
        if np.all(a[i] >= 0):  # the spline's undershoot is not light: keep light >= 0,
            before = res.sum()  # and keep the resampled flux (clipping would add light)
            res = np.maximum(res, 0.0)
            after = res.sum()
            if before > 0 and after > 0:
                res *= before / after
        out[i] = res
    return out


def size_scale_factors(hlr, q, max_native_hlr) -> np.ndarray:
    """``s >= 1`` per row: generate at ``hlr / s`` so that the major-axis half-light radius
    ``hlr / (s sqrt(q))`` is at most ``max_native_hlr`` (arcsec); 1 where no limit is set."""
    hlr = np.asarray(hlr, np.float64)
    if max_native_hlr is None:
        return np.ones_like(hlr)
    major = hlr / np.sqrt(np.clip(np.asarray(q, np.float64), 1e-3, 1.0))
    return np.maximum(1.0, major / float(max_native_hlr))


#: unit and description of each ``gen_*`` truth column (:func:`truth_columns`)
TRUTH_SPEC = {
    "gen_pixel_scale": ("arcsec / pixel", "pixel scale of the generated stamp"),
    "gen_hlr_conditioned": ("arcsec", "half-light radius the network was conditioned on "
                                      "(smaller than hlr where gen_size_scaled)"),
    "gen_size_scaled": ("", "galaxy drawn in units of its size (coarser pixel scale) "
                            "because hlr / sqrt(q) > max_native_hlr"),
    "gen_shape_applied": ("", "requested q and beta applied by an area-preserving "
                              "transformation of the generated stamp"),
    "gen_hlr": ("arcsec", "measured circularised half-light radius of the output stamp"),
    "gen_q": ("", "measured axis ratio (HSM adaptive moments) of the output stamp"),
    "gen_beta": ("deg", "measured position angle (HSM, from +x counter-clockwise) of the "
                        "output stamp"),
    "gen_ring_frac": ("", "fraction of the stamp's flux in its outer 2-pixel ring"),
    "gen_taper_loss": ("", "fraction of the network stamp's flux removed by the edge "
                           "taper (light at the border of the model's field)"),
    "gen_cut": ("", f"gen_ring_frac > {RING_LIMIT}: the profile may run past the stamp"),
}

#: boolean columns of TRUTH_SPEC
TRUTH_FLAGS = ("gen_size_scaled", "gen_shape_applied", "gen_cut")


def truth_columns(cat, info: dict) -> None:
    """Write the ``gen_*`` columns of :func:`finish_generated` into the catalog ``cat``."""
    for name, (unit, desc) in TRUTH_SPEC.items():
        cat[name] = info[name]
        if unit:
            cat[name].unit = unit
        cat[name].description = desc


def finish_generated(images, native_scale: float, hlr_req, scale_factor, q_req, beta_req,
                     apply_shape: bool, row_ids, generator: str, taper: bool = True):
    """Shape and size of freshly generated stamps; see the module docstring.

    Parameters
    ----------
    images : numpy.ndarray, shape (n, N, N)
        Network output at ``native_scale`` arcsec / pixel.
    hlr_req : numpy.ndarray, shape (n,)
        Requested half-light radii, arcsec.
    scale_factor : numpy.ndarray, shape (n,)
        From :func:`size_scale_factors`; rows with ``s > 1`` get a per-stamp pixel scale.
    q_req, beta_req : numpy.ndarray, shape (n,) or None
        Requested axis ratio and position angle (deg); ``None``: shapes are only measured.
    apply_shape : bool
        Apply ``q_req``, ``beta_req`` (else record the measured ones).
    taper : bool
        Multiply the network stamps by :func:`edge_window` first.

    Returns
    -------
    images : numpy.ndarray, float32, shape (n, M, M)
        M = N, or N grown by ``SHAPE_PAD`` when q and beta are applied.
    scales : numpy.ndarray, shape (n,)
        Pixel scale of each stamp, arcsec / pixel.
    info : dict of numpy.ndarray
        The ``gen_*`` truth columns (:func:`truth_columns`).
    """
    images = np.asarray(images, np.float32)
    n = images.shape[0]
    raw_flux = images.reshape(n, -1).sum(axis=1, dtype=np.float64)
    if taper:
        images = (images * edge_window(images.shape[-1])[None]).astype(np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        taper_loss = np.where(raw_flux != 0, 1.0 - images.reshape(n, -1).sum(
            axis=1, dtype=np.float64) / raw_flux, 0.0)
    hlr_req = np.asarray(hlr_req, np.float64)
    s = np.asarray(scale_factor, np.float64)
    m = measure_stamps(images, native_scale)
    shape_applied = np.zeros(n, bool)
    if apply_shape and q_req is not None:
        q = np.clip(np.asarray(q_req, np.float64), 0.05, 1.0)
        beta = np.radians(np.asarray(beta_req, np.float64))
        g = (1 - q) / (1 + q)
        g_to = np.stack([g * np.cos(2 * beta), g * np.sin(2 * beta)], 1)
        g_from = np.stack([m["g1"], m["g2"]], 1)
        shape_applied = np.isfinite(g_from).all(axis=1) & np.isfinite(m["x0"])
        # Stretching to q < 1 moves light outwards along the major axis: the stamps grow
        # by SHAPE_PAD (fixed, so the output shape does not depend on the rows) first.
        size = images.shape[-1]
        big = int(2 * np.ceil(SHAPE_PAD * size / 2))
        off = (big - size) // 2
        padded = np.zeros((n, big, big), np.float32)
        padded[:, off:off + size, off:off + size] = images
        images = padded
        if shape_applied.any():
            idx = np.flatnonzero(shape_applied)
            images[idx] = reshape_stamps(images[idx], m["x0"][idx] + off, m["y0"][idx] + off,
                                         g_from[idx], g_to[idx])
    scaled = s > 1.0
    scales = np.full(n, float(native_scale))
    good = scaled & np.isfinite(m["hlr"]) & (m["hlr"] > 0)
    scales[good] = native_scale * hlr_req[good] / m["hlr"][good]
    scales[scaled & ~good] = native_scale * s[scaled & ~good]
    out = measure_stamps(images, scales)
    ring = ring_fraction(images)
    info = {"gen_pixel_scale": scales, "gen_hlr_conditioned": hlr_req / s,
            "gen_size_scaled": scaled, "gen_shape_applied": shape_applied,
            "gen_hlr": out["hlr"], "gen_q": out["q"], "gen_beta": out["beta"],
            "gen_ring_frac": ring, "gen_cut": ~(ring <= RING_LIMIT),
            "gen_taper_loss": taper_loss}
    if scaled.any():
        log.info("%s: %d of %d galaxies larger than the model's field drawn in units of their "
                 "size (per-stamp pixel scale up to %.4g arcsec/pixel)", generator,
                 int(scaled.sum()), n, float(scales.max()))
    if info["gen_cut"].any():
        bad = np.flatnonzero(info["gen_cut"])
        log.warning("%s: %d stamp(s) hold more than %.1f %% of their light in the outer 2-pixel "
                    "ring (flagged gen_cut in the truth table), e.g. row_id %s", generator,
                    len(bad), 100 * RING_LIMIT, [int(row_ids[i]) for i in bad[:5]])
    return images, scales, info


def star_mask(table) -> np.ndarray:
    """Boolean ``is_star`` of each row, shape (n,) (all False when the column is absent)."""
    if "is_star" not in table.colnames:
        return np.zeros(len(table), bool)
    return np.asarray(table["is_star"], bool)


def output_side(native_side: int, shape_applied: bool) -> int:
    """Side (pixels) of the stamps :func:`finish_generated` returns for a model field of
    ``native_side`` pixels (grown by ``SHAPE_PAD`` when q and beta are applied)."""
    n = int(native_side)
    return int(2 * np.ceil(SHAPE_PAD * n / 2)) if shape_applied else n


def point_stamps(fluxes, side: int) -> np.ndarray:
    """Placeholder stamps of point sources, float32, shape (n, side, side).

    Each holds its flux (any unit; non-finite or negative -> 0) at the stamp's true centre:
    in the central 2 x 2 pixels (a quarter each) for an even ``side``, in the central pixel
    for an odd one.
    """
    f = np.asarray(fluxes, np.float64)
    f = np.where(np.isfinite(f) & (f > 0), f, 0.0)
    out = np.zeros((len(f), side, side), np.float32)
    c = side // 2
    if side % 2:
        out[:, c, c] = f
    else:
        out[:, c - 1:c + 1, c - 1:c + 1] = (f / 4.0)[:, None, None]
    return out


def _fill(dtype):
    kind = np.dtype(dtype).kind
    return {"f": np.nan, "b": False, "i": -1, "u": 0}.get(kind, "")


#: values of the generator's truth columns for star rows (others: NaN / False / -1)
_STAR_VALUES = {"gen_size_scaled": False, "gen_shape_applied": False, "gen_cut": False,
                "gen_taper_loss": 0.0}


def pass_stars_through(table, generate, side: int, native_scale: float, zero_point: float,
                       flux_unit: str, band: str, meta: dict):
    """Run ``generate`` on the galaxy rows of ``table`` only; stars get placeholder stamps.

    Parameters
    ----------
    table : astropy.table.Table
        Catalog rows; ``is_star`` True marks stars (absent: all galaxies).
    generate : callable
        ``generate(galaxy_rows) -> StampBatch`` (the generator stage on galaxies alone, so
        each galaxy keeps the per-row seed and image of a run without stars).
    side : int
        Stamp side (pixels) of the generator's output (:func:`output_side`), used when the
        rows hold no galaxy.
    native_scale : float
        Pixel scale of the placeholder stamps, arcsec / pixel.
    zero_point : float
        AB magnitude of 1 ``flux_unit``: a star's stamp holds ``flux_from_mag(mag, zp)``.
    flux_unit, band, meta
        Of the returned batch when the rows hold no galaxy.

    Returns
    -------
    StampBatch
        One stamp per row of ``table``, in its order. The galaxy rows' stamps, pixel scales
        and truth columns are those ``generate`` gave; star rows have ``gen_mag`` = the
        stamp's magnitude (``mag``), ``stamp_flux_frac`` 1, ``gen_pixel_scale`` =
        ``native_scale``, ``gen_taper_loss`` 0, the flags False and the measured galaxy
        properties (``gen_hlr``, ``gen_q``, ...) NaN.
    """
    from astrogen.batch import StampBatch

    stars = star_mask(table)
    if not stars.any():
        return generate(table)
    n = len(table)
    gal = np.flatnonzero(~stars)
    st = np.flatnonzero(stars)
    mag = (np.asarray(table["mag"], np.float64)[st] if "mag" in table.colnames
           else np.full(len(st), np.nan))
    star_flux = flux_from_mag(mag, float(zero_point))
    if len(gal):
        gb = generate(table[gal])
        side = int(gb.images.shape[-1])
        flux_unit, band, meta = gb.flux_unit, gb.band, gb.meta
        zero_point = gb.zero_point
        gcat, gscales = gb.catalog, gb.pixel_scales
    else:  # no galaxy: the columns the generator would have added, empty
        from astropy.table import Table

        gcat, gscales = Table(), np.zeros(0)
        gcat["gen_mag"] = np.zeros(0)
        gcat["gen_mag"].unit = "mag"
        gcat["gen_mag"].description = "AB magnitude of the generated stamp's total flux"
        gcat["stamp_flux_frac"] = np.zeros(0)
        gcat["stamp_flux_frac"].description = "generated stamp flux / catalog flux"
        truth_columns(gcat, {k: np.zeros(0, bool if k in TRUTH_FLAGS else np.float64)
                             for k in TRUTH_SPEC})
    images = np.zeros((n, side, side), np.float32)
    if len(gal):
        images[gal] = gb.images
    images[st] = point_stamps(star_flux, side)
    scales = np.full(n, float(native_scale))
    scales[gal] = gscales
    cat = table.copy(copy_data=False)
    star_values = dict(_STAR_VALUES)
    with np.errstate(divide="ignore", invalid="ignore"):
        total = images[st].reshape(len(st), -1).sum(axis=1, dtype=np.float64)
        star_values["gen_mag"] = mag_from_flux(total, zero_point, nonpositive=np.inf)
        star_values["stamp_flux_frac"] = np.where(star_flux > 0, total / star_flux, np.nan)
    star_values["gen_pixel_scale"] = float(native_scale)
    for name in gcat.colnames:
        if name in table.colnames:
            continue
        src = gcat[name]
        col = np.full(n, _fill(src.dtype), dtype=src.dtype)
        col[gal] = np.asarray(src)
        if name in star_values:
            col[st] = star_values[name]
        cat[name] = col
        if src.unit is not None:
            cat[name].unit = src.unit
        if src.description:
            cat[name].description = src.description
    return StampBatch(images=images, pixel_scale=(float(native_scale) if np.all(
                          scales == native_scale) else scales), catalog=cat,
                      flux_unit=flux_unit, zero_point=zero_point, psf=None, band=band,
                      meta=meta)

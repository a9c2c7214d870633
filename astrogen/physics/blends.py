"""Blended scenes with known truth: isolated galaxies drawn with GalSim, composed on a stamp.

A *scene* is a square stamp of ``stamp_size`` survey pixels holding 1 to ``max_objects``
galaxies: a central galaxy near the stamp centre and neighbours at a controlled separation
(Boucaud et al. 2020, MNRAS 491, 2481: a central galaxy and a neighbour on 2-galaxy stamps;
here 2 to N). Every galaxy is drawn *once, in isolation* by GalSim (its catalog profile
convolved with the survey PSF, integrated over the survey pixel, ``method='auto'``), centred
with its sub-pixel offset on a canvas ``2 * margin`` pixels larger than the stamp; the
scene is the sum of integer-pixel shifted windows of those canvases, plus sky-subtracted CCD
noise of the survey (:func:`astrogen.physics.observe.add_noise`). Shifting a pixelated image
by whole pixels is exact, so the per-object images *are* the truth: ``scene_noiseless ==
sum(models)`` to float32 rounding (tested), and positions are exact.

Truth per scene (:class:`BlendBatch`): the noisy image, each object's noiseless image, and
per object (``objects`` table) its position (0-based pixel centres, ``x`` = column),
true total flux (from the catalog magnitude and the survey zero point), flux inside the
stamp, magnitude, size, separation to its nearest neighbour and *blendedness*
``beta_i = 1 - sum(m_i**2) / sum(m_i * M)`` with ``M = sum_j m_j`` (Bosch et al. 2018,
PASJ 70, S5, Sec. 4.2; 0 = isolated, -> 1 = buried in a brighter neighbour). Per-pixel
ownership (which object dominates, :func:`ownership`) and light fractions
(:func:`fractions_in_order`) follow from the model images.

The positions of a scene's objects are a counter-based function of ``(seed, scene_id)``
(:mod:`astrogen.seeds`), the noise of ``(seed, scene_id)``, and each galaxy's sub-pixel
offset of ``(seed, row_id)``, so scenes do not depend on chunking.

Approximation: each galaxy is drawn on its canvas only, so light farther than
``margin + stamp_size / 2`` pixels from its centre in the direction away from the stamp is
not drawn (consistently in the image and the truth).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

import galsim
import numpy as np
from astropy.table import Table

from astrogen.errors import ConfigError
from astrogen.physics.photometry import image_zero_point
from astrogen.seeds import derive_seed, galsim_seed, row_seeds, uniforms

__all__ = ["BlendGeometry", "BlendBatch", "draw_isolated", "place", "scene_positions",
           "compose_scene", "make_blends", "fractions_in_order", "ownership",
           "blendedness", "truth_targets", "dihedral", "order_by_centre_distance"]


@dataclass(frozen=True)
class BlendGeometry:
    """How objects are placed on a scene.

    Parameters
    ----------
    stamp_size : int
        Scene side in pixels (even).
    min_objects, max_objects : int
        Number of galaxies per scene, drawn uniformly in ``[min_objects, max_objects]``.
    central_offset : float
        The central galaxy is placed uniformly within +-``central_offset`` pixels of the
        stamp centre in x and y.
    separation : (float, float)
        Distance of each neighbour from the central galaxy, uniform in this range, in units
        of the sum of the two half-light radii (the "overlap" control: ~1 = the half-light
        isophotes touch).
    min_separation, max_separation : float
        Clip of that distance, pixels (``min_separation`` ~ the PSF FWHM or more keeps the
        pair resolvable; ``max_separation`` keeps neighbours on the stamp).
    margin : int
        Extra canvas pixels on each side of a galaxy's isolated drawing (>= the largest
        shift of a galaxy from the stamp centre).
    """

    stamp_size: int = 64
    min_objects: int = 2
    max_objects: int = 2
    central_offset: float = 3.0
    separation: tuple = (0.5, 3.0)
    min_separation: float = 2.5
    max_separation: float = 22.0
    margin: int = 28

    def __post_init__(self):
        if isinstance(self.stamp_size, bool) or not isinstance(self.stamp_size, (int, np.integer)) \
                or self.stamp_size < 8 or self.stamp_size % 2:
            raise ConfigError("must be an even integer >= 8.", key="stamp_size",
                              received={"stamp_size": self.stamp_size})
        for k in ("min_objects", "max_objects", "margin"):
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < (
                    0 if k == "margin" else 1):
                raise ConfigError("must be a positive integer.", key=k, received={k: v})
        if self.min_objects > self.max_objects:
            raise ConfigError("min_objects must be <= max_objects.", key="min_objects",
                              received={"min_objects": self.min_objects,
                                        "max_objects": self.max_objects})
        sep = tuple(float(s) for s in self.separation)
        if len(sep) != 2 or not 0 <= sep[0] <= sep[1]:
            raise ConfigError("must be [low, high] with 0 <= low <= high (units of the summed "
                              "half-light radii).", key="separation",
                              received={"separation": self.separation})
        object.__setattr__(self, "separation", sep)
        if not 0 <= self.min_separation <= self.max_separation:
            raise ConfigError("need 0 <= min_separation <= max_separation (pixels).",
                              key="min_separation",
                              received={"min_separation": self.min_separation,
                                        "max_separation": self.max_separation})
        reach = self.max_separation + self.central_offset + 1
        if reach > self.margin:
            raise ConfigError("margin must be >= max_separation + central_offset + 1 pixels so "
                              "that shifted galaxies stay on their canvas.", key="margin",
                              received={"margin": self.margin, "needed": math.ceil(reach)})
        if reach > self.stamp_size / 2:
            raise ConfigError("max_separation + central_offset must keep neighbours on the "
                              "stamp.", key="max_separation",
                              received={"max_separation": self.max_separation,
                                        "stamp_size": self.stamp_size})

    @property
    def canvas_size(self) -> int:
        """Side of the drawing canvas in pixels: ``stamp_size + 2 margin``."""
        return self.stamp_size + 2 * self.margin

    def to_dict(self) -> dict:
        """The geometry as JSON-compatible plain values (sizes and separations in pixels)."""
        return {"stamp_size": int(self.stamp_size), "min_objects": int(self.min_objects),
                "max_objects": int(self.max_objects),
                "central_offset": float(self.central_offset),
                "separation": list(self.separation), "min_separation": float(self.min_separation),
                "max_separation": float(self.max_separation), "margin": int(self.margin)}


@dataclass
class BlendBatch:
    """Blended scenes and their truth (the data contract of the deblending stages).

    Parameters
    ----------
    images : ndarray (n, h, w) float32
        Observed scenes (electrons, sky subtracted; noiseless if ``noise_sigma`` is None).
    models : ndarray (n, K, h, w) float32 or None
        Noiseless image of each object slot (zeros for empty slots); None for real images.
    objects : astropy.table.Table
        One row per true object: ``scene_id``, ``slot`` (0-based index into ``models``),
        ``row_id``, ``x``, ``y`` [pix], ``flux`` [e-], ``flux_stamp`` [e-], ``mag``, ``hlr``
        [arcsec], ``sep_nearest`` [pix], ``blendedness``, ``central``.
    scene_ids : ndarray (n,) int64
    pixel_scale, zero_point, noise_sigma, psf, band
        Survey metadata: arcsec/pixel, AB mag of 1 e- in the image, per-scene noise
        standard deviation (e-) or None, PSF description, band.
    results : dict
        Measurements added by deblending stages, by stage name: each a dict with
        ``catalog`` (Table, one row per measured object with ``scene_id``), ``labels``
        (n, h, w) int, and optionally ``fractions``, ``uncertainty``, ``seconds``.
    meta : dict
    """

    images: np.ndarray
    models: np.ndarray | None
    objects: Table
    scene_ids: np.ndarray
    pixel_scale: float
    zero_point: float
    noise_sigma: np.ndarray | None = None
    psf: str | None = None
    band: str = ""
    results: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        self.images = np.asarray(self.images, dtype=np.float32)
        if self.images.ndim != 3:
            raise ConfigError("BlendBatch.images must have shape (n, h, w).",
                              received={"shape": self.images.shape})
        self.scene_ids = np.asarray(self.scene_ids, dtype=np.int64)
        if len(self.scene_ids) != len(self.images):
            raise ConfigError("BlendBatch needs one scene id per image.",
                              received={"n_images": len(self.images),
                                        "n_ids": len(self.scene_ids)})
        if self.models is not None:
            self.models = np.asarray(self.models, dtype=np.float32)
            if self.models.ndim != 4 or self.models.shape[0] != len(self.images) \
                    or self.models.shape[2:] != self.images.shape[1:]:
                raise ConfigError("BlendBatch.models must have shape (n, K, h, w).",
                                  received={"models": self.models.shape,
                                            "images": self.images.shape})

    def __len__(self) -> int:
        return len(self.images)

    @property
    def has_truth(self) -> bool:
        """True when the per-object truth models are present."""
        return self.models is not None

    def sigma(self) -> np.ndarray:
        """Per-scene noise sigma (e-); ones-like small value for noiseless scenes."""
        if self.noise_sigma is None:
            return np.full(len(self), 1.0)
        return np.asarray(self.noise_sigma, dtype=np.float64)

    def replace(self, **changes) -> "BlendBatch":
        """A copy of the batch with the given fields changed (``dataclasses.replace``).

        Parameters
        ----------
        **changes
            Field names and their new values.

        Returns
        -------
        BlendBatch
            The new batch.
        """
        return replace(self, **changes)

    @classmethod
    def from_stamps(cls, batch) -> "BlendBatch":
        """Wrap a :class:`astrogen.batch.StampBatch` of observed stamps (no truth)."""
        ids = np.asarray(batch.catalog["row_id"], dtype=np.int64)
        return cls(images=batch.images, models=None, objects=Table(), scene_ids=ids,
                   pixel_scale=batch.pixel_scale, zero_point=batch.zero_point,
                   noise_sigma=batch.noise_sigma, psf=batch.psf, band=batch.band,
                   meta=dict(batch.meta))


# ---------------------------------------------------------------------- drawing
def draw_isolated(rows: Table, fluxes: np.ndarray, psf: galsim.GSObject, pixel_scale: float,
                  canvas_size: int, offsets: np.ndarray, profile: str = "sersic",
                  images: np.ndarray | None = None, image_scale: float | None = None
                  ) -> np.ndarray:
    """Each row's galaxy, PSF-convolved, centred on its canvas with a sub-pixel offset.

    Parameters
    ----------
    rows : Table
        Canonical columns (``hlr``, ``q``, ``beta``, ``sersic_n`` or ``bulge_frac``).
    fluxes : array (n,)
        Total flux per galaxy (e-).
    psf : galsim.GSObject
        Survey PSF (optical, not pixelated; the pixel is integrated by ``method='auto'``).
    canvas_size : int
        Canvas side (even); the galaxy centre is at 0-based pixel ``(canvas_size - 1) / 2 +
        offset``.
    offsets : array (n, 2)
        Sub-pixel offsets (dx, dy) in pixels.
    images : array (n, N, N), optional
        PSF-free images of the rows from a generator (e.g. the FlowVAE; any flux unit, the
        flux is rescaled to ``fluxes``) at ``image_scale`` arcsec/pixel, drawn through
        :func:`astrogen.physics.observe.observed_profile` instead of the catalog profile.

    Returns
    -------
    ndarray (n, canvas_size, canvas_size) float32, electrons per pixel.
    """
    from astrogen.physics.render import galaxy_profile

    out = np.zeros((len(rows), canvas_size, canvas_size), dtype=np.float32)
    for i in range(len(rows)):
        f = float(fluxes[i])
        if not (f > 0):
            continue
        if images is not None:
            from astrogen.physics.observe import observed_profile

            prof = observed_profile(images[i], float(image_scale or pixel_scale), f, psf)
            if prof is None:
                continue
        else:
            prof = galsim.Convolve(galaxy_profile(rows[i], f, profile), psf)
        img = galsim.ImageF(canvas_size, canvas_size, scale=pixel_scale)
        prof.drawImage(img, method="auto", offset=(float(offsets[i, 0]), float(offsets[i, 1])))
        out[i] = img.array
    return out


def dihedral(image: np.ndarray, offset: tuple[float, float], k: int):
    """One of the 8 symmetries of the square applied to a centred canvas and its offset.

    ``k`` in 0..7: bit 0 transposes, bit 1 flips x, bit 2 flips y. A circular PSF is
    invariant, so the result is another valid drawing of a (rotated/mirrored) galaxy.
    Returns ``(image, (dx, dy))``.
    """
    dx, dy = offset
    a = image
    if k & 1:
        a = a.T
        dx, dy = dy, dx
    if k & 2:
        a = a[:, ::-1]
        dx = -dx
    if k & 4:
        a = a[::-1, :]
        dy = -dy
    return np.ascontiguousarray(a), (dx, dy)


def place(canvas: np.ndarray, shift: tuple[int, int], stamp_size: int) -> np.ndarray:
    """The ``stamp_size`` window of a centred canvas that puts its galaxy at the stamp centre
    plus the integer ``shift`` = (sx, sy) pixels."""
    c = canvas.shape[-1]
    margin = (c - stamp_size) // 2
    sx, sy = int(shift[0]), int(shift[1])
    if abs(sx) > margin or abs(sy) > margin:
        raise ConfigError("shift beyond the canvas margin.", key="margin",
                          received={"shift": (sx, sy), "margin": margin})
    y0, x0 = margin - sy, margin - sx
    return canvas[y0:y0 + stamp_size, x0:x0 + stamp_size]


def scene_positions(geometry: BlendGeometry, scene_seeds: np.ndarray, hlr_pix: list,
                    ) -> list[np.ndarray]:
    """Positions (x, y), 0-based pixel centres, of the objects of each scene.

    ``hlr_pix[s]`` holds the half-light radii (pixels) of scene ``s``'s objects (central
    first). Neighbour ``j`` is at distance ``u * (hlr_0 + hlr_j)`` (``u`` uniform in
    ``geometry.separation``, clipped to the min/max separation) and a uniform angle.
    """
    g = geometry
    centre = (g.stamp_size - 1) / 2.0
    out = []
    for s, seed in enumerate(np.asarray(scene_seeds, dtype=np.uint64)):
        n = len(hlr_pix[s])
        u = uniforms(np.array([seed], dtype=np.uint64), 2 + 2 * max(n - 1, 0))[0]
        pos = np.zeros((n, 2))
        pos[0] = centre + (2 * u[:2] - 1) * g.central_offset
        for j in range(1, n):
            lo, hi = g.separation
            d = (lo + (hi - lo) * u[2 * j]) * (hlr_pix[s][0] + hlr_pix[s][j])
            d = float(np.clip(d, g.min_separation, g.max_separation))
            ang = 2 * np.pi * u[2 * j + 1]
            pos[j] = pos[0] + d * np.array([np.cos(ang), np.sin(ang)])
        out.append(pos)
    return out


def split_position(pos: np.ndarray, stamp_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Integer shifts from the stamp centre and sub-pixel offsets in [-0.5, 0.5)."""
    centre = (stamp_size - 1) / 2.0
    rel = np.asarray(pos, float) - centre
    shift = np.floor(rel + 0.5).astype(int)
    return shift, rel - shift


def blendedness(models: np.ndarray) -> np.ndarray:
    """``1 - sum(m_i^2) / sum(m_i * M)`` per object (Bosch+18), ``models`` (K, h, w);
    NaN for empty slots."""
    m = np.clip(np.asarray(models, np.float64), 0, None)
    tot = m.sum(axis=0)
    num = (m * m).sum(axis=(1, 2))
    den = (m * tot[None]).sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, 1.0 - num / den, np.nan)


def compose_scene(canvases: list[np.ndarray], positions: np.ndarray, stamp_size: int,
                  max_objects: int) -> np.ndarray:
    """Per-object model images ``(max_objects, h, w)`` (zeros in unused slots)."""
    models = np.zeros((max_objects, stamp_size, stamp_size), dtype=np.float32)
    shifts, _ = split_position(positions, stamp_size)
    for j, c in enumerate(canvases):
        models[j] = place(c, shifts[j], stamp_size)
    return models


def make_blends(rows: Table, geometry: BlendGeometry, survey, psf: galsim.GSObject,
                seed: int, profile: str = "sersic", add_noise: bool = True,
                psf_name: str | None = None, images: np.ndarray | None = None,
                image_scale: float | None = None) -> BlendBatch:
    """Compose scenes from catalog rows: consecutive rows with the same
    ``row_id // max_objects`` form one scene (scene id = that quotient); the first row is the
    central galaxy, and the scene keeps the first ``n`` of its rows, ``n`` uniform in
    ``[min_objects, max_objects]`` (seeded by the scene id).

    Parameters
    ----------
    rows : Table
        Canonical columns incl. ``row_id``, ``mag`` (AB in the survey band), ``hlr``...
    geometry : BlendGeometry
    survey : astrogen.physics.surveys.Survey
        Pixel scale, zero point, exposure, sky and read noise.
    psf : galsim.GSObject
    seed : int
        Stage seed.
    images : array (n, N, N), optional
        PSF-free stamps of the rows from a generator (e.g. the FlowVAE) drawn instead of the
        parametric profiles, at ``image_scale`` arcsec/pixel.
    """
    from astrogen.physics.observe import add_noise as ccd_noise

    g = geometry
    if "row_id" not in rows.colnames:
        raise ConfigError("the catalog needs a 'row_id' column.", key="inputs")
    ids = np.asarray(rows["row_id"], dtype=np.int64)
    groups: dict[int, list[int]] = {}
    for i, rid in enumerate(ids):
        groups.setdefault(int(rid) // g.max_objects, []).append(i)
    scene_ids = np.array(sorted(groups), dtype=np.int64)
    sseeds = row_seeds(derive_seed(seed, "scene"), scene_ids)
    nsel = []
    for s, sid in enumerate(scene_ids):
        u = uniforms(sseeds[s:s + 1] ^ np.uint64(0x5EED), 1)[0, 0]
        n = g.min_objects + int(u * (g.max_objects - g.min_objects + 1))
        nsel.append(groups[int(sid)][:max(1, min(n, len(groups[int(sid)])))])
    used = np.concatenate([np.asarray(x, int) for x in nsel]) if nsel else np.zeros(0, int)
    hlr_pix = [np.asarray(rows["hlr"][idx], float) / survey.pixel_scale for idx in nsel]
    positions = scene_positions(g, sseeds, hlr_pix)
    all_pos = np.concatenate(positions) if positions else np.zeros((0, 2))
    _, sub = split_position(all_pos, g.stamp_size)
    flux = survey.electrons(np.asarray(rows["mag"][used], float)) if len(used) else np.zeros(0)
    sub_rows = rows[used]
    canv = draw_isolated(sub_rows, flux, psf, survey.pixel_scale, g.canvas_size, sub, profile,
                         images=None if images is None else np.asarray(images)[used],
                         image_scale=image_scale)
    n = len(scene_ids)
    k = g.max_objects
    models = np.zeros((n, k, g.stamp_size, g.stamp_size), dtype=np.float32)
    images_out = np.zeros((n, g.stamp_size, g.stamp_size), dtype=np.float32)
    noise = np.full(n, survey.noise_sigma) if add_noise else None
    cols: dict[str, list] = {c: [] for c in ("scene_id", "slot", "row_id", "x", "y", "flux",
                                             "flux_stamp", "mag", "hlr", "sep_nearest",
                                             "blendedness", "central")}
    j0 = 0
    src: list[int] = []
    for s in range(n):
        m = len(nsel[s])
        models[s] = compose_scene(list(canv[j0:j0 + m]), positions[s], g.stamp_size, k)
        clean = models[s].sum(axis=0)
        if add_noise:
            nseed = galsim_seed(row_seeds(derive_seed(seed, "noise"), scene_ids[s:s + 1])[0])
            images_out[s] = ccd_noise(clean, nseed, survey.sky_level, survey.read_noise,
                                      survey.gain)
        else:
            images_out[s] = clean
        beta = blendedness(models[s][:m])
        pos = positions[s]
        d = np.hypot(pos[:, None, 0] - pos[None, :, 0], pos[:, None, 1] - pos[None, :, 1])
        np.fill_diagonal(d, np.inf)
        for j in range(m):
            cols["scene_id"].append(scene_ids[s])
            cols["slot"].append(j)
            cols["row_id"].append(ids[nsel[s][j]])
            cols["x"].append(pos[j, 0])
            cols["y"].append(pos[j, 1])
            cols["flux"].append(flux[j0 + j])
            cols["flux_stamp"].append(float(models[s, j].sum(dtype=np.float64)))
            cols["mag"].append(float(rows["mag"][nsel[s][j]]))
            cols["hlr"].append(float(rows["hlr"][nsel[s][j]]))
            cols["sep_nearest"].append(float(d[j].min()) if m > 1 else np.inf)
            cols["blendedness"].append(float(beta[j]))
            cols["central"].append(j == 0)
            src.append(nsel[s][j])
        j0 += m
    obj = Table(cols, dtype=[np.int64, np.int64, np.int64, float, float, float, float, float,
                             float, float, float, bool])
    # every other catalog column (the user's ids, e1/e2, ...) follows its object unchanged
    src = np.asarray(src, dtype=np.int64)
    for c in rows.colnames:
        if c not in obj.colnames:
            obj[c] = rows[c][src]
    obj["x"].unit = obj["y"].unit = obj["sep_nearest"].unit = "pix"
    obj["mag"].unit = "mag"
    obj["hlr"].unit = "arcsec"
    obj["x"].description = "column of the centre, 0-based pixel centres"
    obj["y"].description = "row of the centre, 0-based pixel centres"
    obj["flux"].description = "[electron] true total flux from the catalog magnitude"
    obj["flux_stamp"].description = ("[electron] true flux inside the stamp (sum of the "
                                     "noiseless model)")
    obj["blendedness"].description = "1 - sum(m_i^2)/sum(m_i M) (Bosch+18); 0 = isolated"
    obj["sep_nearest"].description = "distance to the nearest other object of the scene"
    return BlendBatch(images=images_out, models=models, objects=obj, scene_ids=scene_ids,
                      pixel_scale=survey.pixel_scale,
                      zero_point=image_zero_point(survey.zero_point, survey.exposure_time),
                      noise_sigma=noise, psf=psf_name, band=survey.band,
                      meta={"geometry": g.to_dict(), "survey": survey.name,
                            "profile": profile if images is None else "generator"})


# ---------------------------------------------------------------------- truth targets
def fractions_in_order(models: np.ndarray, background_level: float) -> np.ndarray:
    """Light fractions ``(h, w, K + 1)`` with the object slots in the given order (channel
    0 = background): ``m_k / (sum_j m_j + b)``, the background gets the rest. Same
    definition as :func:`astrogen.deblend.measure.light_fractions` without reordering by
    flux: the segmenters' slot order (nearest the stamp centre first,
    :func:`order_by_centre_distance`) is applied to ``models`` by the caller. Works on a
    batch ``(n, K, h, w)`` too (-> ``(n, h, w, K + 1)``)."""
    m = np.clip(np.asarray(models, np.float32), 0, None)
    b = float(background_level) if np.ndim(background_level) == 0 else None
    denom = m.sum(axis=-3, keepdims=True)
    if b is None:
        bl = np.asarray(background_level, np.float32).reshape(
            (-1,) + (1,) * (m.ndim - 1))
        denom = denom + bl
    else:
        denom = denom + b
    obj = m / denom
    bg = np.clip(1.0 - obj.sum(axis=-3, keepdims=True), 0.0, 1.0)
    out = np.concatenate([bg, obj], axis=-3)
    return np.moveaxis(out, -3, -1).astype(np.float32)


def ownership(models: np.ndarray, threshold) -> np.ndarray:
    """Label map of the dominant object: ``1 + argmax_k m_k`` where ``sum_k m_k >
    threshold`` (0 elsewhere); works on ``(K, h, w)`` or a batch ``(n, K, h, w)`` with a
    per-scene threshold."""
    m = np.asarray(models)
    t = np.asarray(threshold, np.float64)
    if m.ndim == 4:
        t = t.reshape(-1, 1, 1)
    lab = 1 + np.argmax(m, axis=-3)
    return np.where(m.sum(axis=-3) > t, lab, 0).astype(np.int64)


def order_by_centre_distance(positions: np.ndarray, stamp_size: int) -> np.ndarray:
    """Slot order of the segmenters' targets: object indices by increasing distance to the
    stamp centre.

    Parameters
    ----------
    positions : array (n, K, 2) or (K, 2)
        Object centres (x, y), 0-based pixel centres, in pixels; NaN for empty slots.
    stamp_size : int
        Stamp side in pixels; the centre is at ``(stamp_size - 1) / 2`` in x and y.

    Returns
    -------
    ndarray of int, shape (n, K) or (K,)
        ``order[..., 0]`` is the object nearest the centre (the detection the stamp is
        centred on: target slot 1), then the others by increasing distance; empty slots
        last (stable for ties). The distance to the centre is invariant under the 8
        symmetries of the square used for augmentation, so the order can be computed before
        augmenting.
    """
    p = np.asarray(positions, np.float64)
    c = (stamp_size - 1) / 2.0
    d = np.hypot(p[..., 0] - c, p[..., 1] - c)
    d = np.where(np.isfinite(d), d, np.inf)
    return np.argsort(d, axis=-1, kind="stable")


def truth_targets(models: np.ndarray, sigma, fraction_background: float = 0.1,
                  class_threshold: float = 1.0) -> dict[str, np.ndarray]:
    """Training targets of a batch of scenes ``models`` (n, K, h, w) [e-] with noise
    ``sigma`` (n,) [e-]: ``fractions`` (n, h, w, K+1) with background level
    ``fraction_background * sigma``, ``classes`` (n, h, w) 0 background / 1 one object /
    2 overlap (objects above ``class_threshold * sigma``), ``labels`` (n, h, w) ownership
    above ``class_threshold * sigma``. Fraction channel ``k >= 1`` and label ``k`` are object
    slot ``k - 1`` of ``models`` as given: order the slots first (the segmenters use
    :func:`order_by_centre_distance`: slot 1 = the object nearest the stamp centre)."""
    m = np.asarray(models, np.float32)
    sig = np.asarray(sigma, np.float32).reshape(-1)
    frac = fractions_in_order(m, fraction_background * sig)
    t = (class_threshold * sig).reshape(-1, 1, 1, 1)
    classes = np.minimum((m > t).sum(axis=1), 2).astype(np.int64)
    labels = ownership(m, class_threshold * sig)
    return {"fractions": frac, "classes": classes, "labels": labels}

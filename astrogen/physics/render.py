"""Parametric galaxy profiles (Sersic or bulge + disk) with GalSim, each in a stamp that holds
the whole galaxy.

Intrinsic stamps are PSF-free surface-brightness samples (``method='no_pixel'``: pixel value =
surface brightness at the pixel centre x pixel area), so that :mod:`astrogen.physics.observe`
can interpolate them and apply any survey PSF and pixel afterwards, the same way as for
images made by the generative models.

Stamp sizes come from GalSim's own machinery: ``GSObject.getGoodImageSize`` (from the
profile's ``stepk``, i.e. the radius holding ``1 - folding_threshold`` = 99.5 % of the light,
stretched by the shear). Every size is then checked by :func:`enclosed_fraction`, an analytic
lower bound of the light inside the square stamp (the largest isophote ellipse inscribed in
the stamp, through the Sersic enclosed-light function), and grown until that bound is at least
``min_flux_frac``. A galaxy whose stamp would exceed ``max_stamp_size`` pixels is drawn with a
coarser pixel (``StampBatch`` allows one pixel scale per stamp), so it is never cut; with
``resample_large=False`` it is cut at ``max_stamp_size`` instead and flagged.
"""
from __future__ import annotations

import math

import galsim
import numpy as np
from astropy.table import Table
from scipy.special import gammainc, gammaincinv

from astrogen.errors import ConfigError

__all__ = ["galaxy_profile", "profile_components", "draw_intrinsic", "enclosed_fraction",
           "stamp_layout", "SERSIC_N_STEP", "PROFILES", "MIN_FLUX_FRAC"]

#: Sersic indices are rounded to this step so GalSim can reuse its per-index Hankel tables
#: (building one costs tens of ms); the change of the profile is below 1 % in the
#: half-light radius.
SERSIC_N_STEP = 0.05
PROFILES = ("sersic", "bulge_disk")
#: Fraction of the light a stamp must hold (GalSim's default folding_threshold is 5e-3).
MIN_FLUX_FRAC = 0.995
#: GalSim's defaults (FFTs up to 8192^2; the PSF-convolved drawings share these parameters, so
#: GalSim's per-index Sersic tables are built once and reused: a different GSParams on the
#: convolution would rebuild them for every galaxy)
_GSPARAMS = galsim.GSParams()
_COMPONENT_COLUMNS = ("hlr", "q", "beta")


#: one unit (hlr = 1 arcsec, flux 1) Sersic profile per index, every galaxy being a
#: transformation of it: GalSim then builds the index's Hankel tables (up to 0.5 s for n = 6)
#: and its maxk once per process, instead of once per galaxy (its own cache holds 100 indices,
#: fewer than the ~120 of the rounded range, so it would thrash)
_UNIT_SERSIC: dict[float, galsim.Sersic] = {}


def _unit_sersic(n: float) -> galsim.Sersic:
    obj = _UNIT_SERSIC.get(n)
    if obj is None:
        obj = _UNIT_SERSIC[n] = galsim.Sersic(n=n, half_light_radius=1.0, gsparams=_GSPARAMS)
    return obj


def _get(row, name, default=None):
    try:
        v = row[name]
    except (KeyError, IndexError, ValueError):
        return default
    return default if v is None or (np.ma.is_masked(v)) else float(v)


def profile_components(row, flux: float, profile: str = "sersic", band: str | None = None):
    """Components of a catalog row's profile as ``(flux, sersic_n, hlr, q, beta_deg)`` tuples.

    Parameters
    ----------
    row : mapping
        Canonical columns: ``hlr`` [arcsec], ``q``, ``beta`` [deg], and ``sersic_n``
        (``profile='sersic'``) or ``bulge_frac`` (``profile='bulge_disk'``). For bulge+disk,
        per-component ``hlr_bulge``, ``hlr_disk`` [arcsec], ``q_bulge``, ``q_disk``,
        ``beta_bulge``, ``beta_disk`` [deg] are used where present (else ``hlr``, ``q``,
        ``beta``), and ``bulge_frac_<band>`` replaces ``bulge_frac`` in ``band``.
    flux : float
        Total flux in the caller's units.
    profile : {"sersic", "bulge_disk"}
    band : str, optional
        Band name, for a per-band bulge fraction.

    Returns
    -------
    list of tuple
        Components with non-zero flux and size (a pure bulge or pure disk has one).
    """
    if profile == "sersic":
        n = float(np.clip(np.round(float(row["sersic_n"]) / SERSIC_N_STEP) * SERSIC_N_STEP,
                          0.3, 6.2))
        return [(flux, n, float(row["hlr"]), float(row["q"]), float(row["beta"]))]
    if profile != "bulge_disk":
        raise ConfigError(f"must be one of {PROFILES}.", key="profile",
                          received={"profile": profile})
    bf = _get(row, f"bulge_frac_{band}") if band else None
    bf = float(row["bulge_frac"]) if bf is None else bf
    comps = []
    for part, n, f in (("disk", 1.0, (1.0 - bf) * flux), ("bulge", 4.0, bf * flux)):
        hlr, q, beta = (_get(row, f"{c}_{part}", _get(row, c)) for c in _COMPONENT_COLUMNS)
        if f > 0 and hlr is not None and hlr > 0:
            comps.append((f, n, hlr, q, beta))
    return comps


def galaxy_profile(row, flux: float, profile: str = "sersic",
                   band: str | None = None) -> galsim.GSObject:
    """GalSim profile of one catalog row (canonical columns), PSF-free, centred at the origin.

    Parameters
    ----------
    row : mapping
        See :func:`profile_components`.
    flux : float
        Total flux in the caller's units.
    profile : {"sersic", "bulge_disk"}
        Single Sersic, or exponential disk + de Vaucouleurs bulge, each with its own half-light
        radius [arcsec], axis ratio and position angle [deg] when the catalog has them
        (otherwise both share ``hlr``, ``q``, ``beta``, and the sum has that half-light radius).
    band : str, optional
        Band for a per-band bulge fraction ``bulge_frac_<band>``.
    """
    comps = profile_components(row, flux, profile, band)
    if not comps:  # zero flux or zero size everywhere: nothing but a (zero) point
        return galsim.DeltaFunction(flux=0.0, gsparams=_GSPARAMS)
    objs = [_unit_sersic(n).dilate(hlr).withFlux(f).shear(q=q, beta=beta * galsim.degrees)
            for f, n, hlr, q, beta in comps]
    return objs[0] if len(objs) == 1 else galsim.Add(objs)


def _inscribed_radius(half: float, q: float, beta_deg: float) -> float:
    """Largest circularised radius r whose isophote ellipse (GalSim shear of a circle of
    radius r by (q, beta): semi-axes r/sqrt(q), r sqrt(q)) fits in a square of half-side
    ``half`` centred on it (arcsec)."""
    c, s = math.cos(math.radians(beta_deg)), math.sin(math.radians(beta_deg))
    wx = math.sqrt(c * c / q + s * s * q)   # x half-width of the ellipse of r = 1
    wy = math.sqrt(s * s / q + c * c * q)
    return half / max(wx, wy)


def enclosed_fraction(components, half: float) -> float:
    """Lower bound of the fraction of light inside a square of half-side ``half`` [arcsec].

    Exact Sersic light inside the largest isophote ellipse of each component inscribed in
    the square: ``P(2n, b_n (r/r_e)^(1/n))`` (regularised lower incomplete gamma function,
    ``b_n`` from ``P(2n, b_n) = 1/2``), flux-weighted over components.
    """
    total = sum(c[0] for c in components)
    if total <= 0:
        return 1.0
    inside = 0.0
    for f, n, hlr, q, beta in components:
        b = gammaincinv(2 * n, 0.5)
        r = _inscribed_radius(half, q, beta)
        inside += f * float(gammainc(2 * n, b * (r / hlr) ** (1.0 / n)))
    return inside / total


def stamp_layout(obj: galsim.GSObject, components, pixel_scale: float, max_stamp_size: int,
                 resample_large: bool = True, min_flux_frac: float = MIN_FLUX_FRAC):
    """Stamp side (even, pixels) and pixel scale [arcsec] holding a whole profile.

    Starts from GalSim's ``obj.getGoodImageSize(pixel_scale)`` and grows it until
    :func:`enclosed_fraction` >= ``min_flux_frac``. Beyond ``max_stamp_size``: a coarser pixel
    (``resample_large``) or a cut stamp of ``max_stamp_size``.

    Returns
    -------
    size : int
    scale : float
        arcsec / pixel.
    frac : float
        Lower bound of the light fraction inside the stamp.
    """
    n = max(int(obj.getGoodImageSize(pixel_scale)), 8)
    n += n % 2
    while enclosed_fraction(components, n * pixel_scale / 2) < min_flux_frac:
        n = int(math.ceil(n * 1.1))
        n += n % 2
    scale = pixel_scale
    if n > max_stamp_size:
        if resample_large:
            scale = pixel_scale * n / max_stamp_size
        n = max_stamp_size
    return n, scale, enclosed_fraction(components, n * scale / 2)


def draw_intrinsic(rows: Table, fluxes: np.ndarray, stamp_size: int | None, pixel_scale: float,
                   profile: str = "sersic", max_stamp_size: int = 512,
                   resample_large: bool = True, band: str | None = None):
    """Draw PSF-free stamps, one per row, each holding its whole galaxy.

    Parameters
    ----------
    rows : astropy.table.Table
        Canonical columns (see :func:`galaxy_profile`); rows with ``is_star`` True get a
        one-pixel delta stamp and a ``galsim.DeltaFunction`` profile.
    fluxes : numpy.ndarray
        Total flux per row (any unit; the stamps are in that unit per pixel).
    stamp_size : int or None
        Fixed stamp side in pixels (the old behaviour: the profile may be cut, which is
        reported), or ``None`` to size each stamp from its profile.
    pixel_scale : float
        arcsec / pixel (finest; large galaxies may get a coarser one).
    max_stamp_size : int
        Largest stamp side in pixels when sizing per profile.
    resample_large : bool
        Draw a galaxy that needs more than ``max_stamp_size`` pixels with a coarser pixel
        (never cut), or cut it at ``max_stamp_size`` (flagged).

    Returns
    -------
    stamps : list of numpy.ndarray (float32)
    scales : numpy.ndarray, shape (n,)
        arcsec / pixel of each stamp.
    fracs : numpy.ndarray, shape (n,)
        Lower bound of the fraction of each profile's light inside its stamp.
    profiles : list of galsim.GSObject
        The exact PSF-free profiles (flux = ``fluxes``).
    """
    stars = (np.asarray(rows["is_star"], bool) if "is_star" in rows.colnames
             else np.zeros(len(rows), bool))
    stamps, scales, fracs, profiles = [], np.zeros(len(rows)), np.ones(len(rows)), []
    for i, row in enumerate(rows):
        f = float(fluxes[i])
        if stars[i]:
            profiles.append(galsim.DeltaFunction(flux=f))
            stamps.append(np.full((1, 1), f, np.float32))
            scales[i] = pixel_scale
            continue
        comps = profile_components(row, f, profile, band)
        obj = galaxy_profile(row, f, profile, band)
        if stamp_size is None:
            n, scale, frac = stamp_layout(obj, comps, pixel_scale, max_stamp_size, resample_large)
        else:
            n, scale = stamp_size, pixel_scale
            frac = enclosed_fraction(comps, n * scale / 2) if comps else 1.0
        img = galsim.ImageF(n, n, scale=scale)
        obj.drawImage(img, method="no_pixel")
        stamps.append(img.array)
        scales[i], fracs[i] = scale, frac
        profiles.append(obj)
    return stamps, scales, fracs, profiles

"""Take PSF-free galaxies (from any generator) to a survey: lensing, PSF, pixel, flux, noise.

The PSF-free profile of a row is the generator's exact GalSim profile when the batch carries
one (``StampBatch.profiles``, parametric galaxies), otherwise a
:class:`galsim.InterpolatedImage` (quintic interpolant) of its stamp at the stamp's own
pixel scale; a star (``is_star``) is a point source. The profile is given the row's
catalog flux, lensed by its reduced shear and convergence (:mod:`astrogen.physics.lensing`:
the flux grows by the magnification ``mu``), convolved with the survey PSF and drawn at the
survey pixel scale with GalSim's ``method='auto'`` (which integrates over the survey pixel).

Each observed stamp is sized by GalSim from the PSF-convolved profile
(``getGoodImageSize``: 99.5 % of the light) up to a stated ``max_size``; a profile that does
not fit is cut there, and the fraction of its light inside is returned so the stage can
flag the row.
"""
from __future__ import annotations

import galsim
import numpy as np

from astrogen.physics.lensing import apply_lensing

__all__ = ["intrinsic_profile", "observed_profile", "observed_stamp_size", "draw_profile",
           "draw_observed", "draw_observed_objects", "add_noise"]


def intrinsic_profile(stamp: np.ndarray | None, pixel_scale: float, flux: float,
                      profile: galsim.GSObject | None = None, is_star: bool = False):
    """PSF-free profile of one row with total flux ``flux`` (in the caller's unit).

    Parameters
    ----------
    stamp : numpy.ndarray or None
        PSF-free stamp (any flux unit), used when ``profile`` is None.
    pixel_scale : float
        arcsec / pixel of ``stamp``.
    flux : float
        Total flux wanted (e-).
    profile : galsim.GSObject, optional
        Exact PSF-free profile (its flux is replaced by ``flux``).
    is_star : bool
        A point source.

    Returns
    -------
    galsim.GSObject or None
        ``None`` when there is nothing to draw (zero or non-finite stamp or flux).
    """
    if not (np.isfinite(flux) and flux > 0):
        return None
    if is_star:
        return galsim.DeltaFunction(flux=flux)
    if profile is not None:
        return profile.withFlux(flux) if profile.flux > 0 else None
    total = float(np.sum(stamp, dtype=np.float64))
    if not np.isfinite(total) or total <= 0:
        return None
    return galsim.InterpolatedImage(galsim.Image(np.ascontiguousarray(stamp, dtype=np.float64),
                                                 scale=pixel_scale),
                                    flux=flux, x_interpolant="quintic")


def observed_profile(stamp, pixel_scale: float, flux: float, psf: galsim.GSObject,
                     g1: float = 0.0, g2: float = 0.0, kappa: float = 0.0,
                     profile: galsim.GSObject | None = None, is_star: bool = False):
    """Lensed, PSF-convolved profile of a row (e-); ``None`` when there is nothing to draw.

    ``flux`` is the unlensed flux; the lensed profile has ``mu * flux``. Stars are not lensed.
    """
    obj = intrinsic_profile(stamp, pixel_scale, flux, profile, is_star)
    if obj is None:
        return None
    if not is_star:
        obj = apply_lensing(obj, float(g1), float(g2), float(kappa))
    return galsim.Convolve(obj, psf)


def observed_stamp_size(prof: galsim.GSObject, scale: float, max_size: int,
                        min_size: int = 16) -> int:
    """Even stamp side (survey pixels) holding 99.5 % of a PSF-convolved profile (GalSim's
    ``getGoodImageSize``), clipped to [``min_size``, ``max_size``]."""
    n = int(prof.getGoodImageSize(scale))
    n = min(max(n + n % 2, min_size), max_size)
    return n


def draw_profile(prof: galsim.GSObject, image: galsim.Image, method: str = "auto",
                 center=None) -> galsim.Image:
    """``prof.drawImage`` into ``image``; a profile too large for GalSim's FFT limit is drawn
    with a 5 % folding threshold instead (the caller flags its flux fraction)."""
    try:
        return prof.drawImage(image, method=method, center=center)
    except galsim.GalSimFFTSizeError:
        coarse = prof.withGSParams(galsim.GSParams(folding_threshold=0.05,
                                                   maximum_fft_size=8192))
        return coarse.drawImage(image, method=method, center=center)


def draw_observed(stamps, pixel_scales, fluxes: np.ndarray, psf: galsim.GSObject,
                  out_scale: float, out_size: int | None, method: str = "auto",
                  lensing=None, profiles=None, is_star=None, max_size: int = 512,
                  max_missing: float | None = None):
    """Noiseless survey stamps (e- per pixel), each sized to its own profile.

    Parameters
    ----------
    stamps : sequence of 2-D arrays
        PSF-free stamps.
    pixel_scales : float or array (n,)
        arcsec / pixel of each input stamp.
    fluxes : numpy.ndarray
        Unlensed total flux per row (e-).
    out_scale : float
        Survey arcsec / pixel.
    out_size : int or None
        Fixed output side (pixels), or ``None``: sized per profile up to ``max_size``.
    lensing : tuple of arrays (g1, g2, kappa), optional
    profiles : list of galsim.GSObject or None, optional
        Exact PSF-free profiles.
    is_star : array of bool, optional
    max_size : int
        Largest output side (pixels) when sizing per profile.
    max_missing : float, optional
        Largest flux (e-) allowed outside a stamp sized per profile: the stamp is doubled
        (up to ``max_size``) while more is missing (a bright object's wings). The survey's
        noise sigma per pixel keeps every stamp edge invisible.

    Returns
    -------
    images : list of numpy.ndarray (float32)
    frac : numpy.ndarray
        Fraction of each lensed, PSF-convolved profile's light inside its stamp (1 for
        empty rows).
    """
    n = len(stamps)
    scales = np.broadcast_to(np.asarray(pixel_scales, float), (n,))
    g1, g2, kappa = lensing if lensing is not None else (np.zeros(n),) * 3
    stars = np.zeros(n, bool) if is_star is None else np.asarray(is_star, bool)
    objs = [observed_profile(stamps[i], float(scales[i]), float(fluxes[i]), psf, g1[i], g2[i],
                             kappa[i], None if profiles is None else profiles[i], stars[i])
            for i in range(n)]
    return draw_observed_objects(objs, out_scale, out_size, method, max_size, max_missing)


def draw_observed_objects(objs, out_scale: float, out_size: int | None, method: str = "auto",
                          max_size: int = 512, max_missing: float | None = None):
    """Noiseless survey stamps (e- per pixel) of lensed, PSF-convolved profiles.

    The drawing half of :func:`draw_observed` (what ``observe`` does with the objects of
    :meth:`astrogen.stages.galsim_stages.Observe.observed_objects`).

    Parameters
    ----------
    objs : sequence of galsim.GSObject or None
        Lensed, PSF-convolved profiles (e-, arcsec); ``None``: an empty row.
    out_scale, out_size, method, max_size, max_missing
        As in :func:`draw_observed`.

    Returns
    -------
    images : list of numpy.ndarray (float32)
    frac : numpy.ndarray
        Fraction of each profile's light inside its stamp (1 for empty rows).
    """
    out, frac = [], np.ones(len(objs))
    for i, prof in enumerate(objs):
        if prof is None:
            size = out_size or 16
            out.append(np.zeros((size, size), np.float32))
            continue
        size = out_size or observed_stamp_size(prof, out_scale, max_size)
        while True:
            img = galsim.ImageF(size, size, scale=out_scale)
            draw_profile(prof, img, method)
            if (out_size or max_missing is None or size >= max_size or method == "no_pixel"
                    or prof.flux - float(img.array.sum(dtype=np.float64)) <= max_missing):
                break
            size = min(2 * size, max_size)
        out.append(img.array)
        if method != "no_pixel":
            frac[i] = float(img.array.sum(dtype=np.float64)) / prof.flux
    return out, frac


def add_noise(image: np.ndarray, seed: int, sky_level: float, read_noise: float,
              gain: float = 1.0) -> np.ndarray:
    """Sky-subtracted CCD noise: Poisson on (image + sky) minus sky, plus Gaussian read noise.

    Parameters
    ----------
    image : numpy.ndarray
        Noiseless image in e- per pixel.
    seed : int
        Seed of the ``galsim.BaseDeviate``.
    sky_level : float
        Sky in e- per pixel.
    read_noise : float
        e- per pixel.
    gain : float
        e- / ADU of the output.
    """
    img = galsim.ImageF(np.array(image, dtype=np.float32, copy=True))
    noise = galsim.CCDNoise(galsim.BaseDeviate(int(seed)), sky_level=sky_level, gain=gain,
                            read_noise=read_noise)
    img.addNoise(noise)
    return img.array

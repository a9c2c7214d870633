"""Scene geometry (a TAN WCS) and a canvas that adds galaxies at sub-pixel positions."""
from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field as dataclass_field

import galsim
import numpy as np
from astropy.wcs import WCS

__all__ = ["Field", "SceneCanvas"]


@dataclass(frozen=True)
class Field:
    """A rectangular field of view with a gnomonic (TAN) projection: the scene geometry.

    Declared once in a pipeline (by ``catalog.positions``, ``catalog.stars`` or the
    pipeline's ``field:`` key) and handed by the pipeline builder to every stage downstream
    that needs it (:attr:`astrogen.stages.base.Stage.input_field`); it never travels in the
    rows' metadata. Frozen and made of plain numbers, so it pickles (Dask) and is rebuilt
    identically from the configuration on ``--resume``.

    Parameters
    ----------
    nx, ny : int
        Image size in pixels.
    pixel_scale : float
        arcsec / pixel.
    ra, dec : float
        Sky position of the image centre in deg.
    survey : str
        Name of the survey preset whose pixel scale was used (``"lsst_i"``; ``""`` when
        none). Informative only: two fields are equal when their geometry is.
    """

    nx: int
    ny: int
    pixel_scale: float
    ra: float = 150.1
    dec: float = 2.2
    survey: str = dataclass_field(default="", compare=False)

    def wcs(self) -> WCS:
        """The field's tangent-plane (TAN) WCS, centred on ``(ra, dec)``.

        Returns
        -------
        astropy.wcs.WCS
            ICRS, degrees; pixel scale ``pixel_scale`` arcsec, RA increasing to the left.
        """
        w = WCS(naxis=2)
        w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
        w.wcs.crpix = [(self.nx + 1) / 2.0, (self.ny + 1) / 2.0]
        w.wcs.crval = [self.ra, self.dec]
        w.wcs.cdelt = [-self.pixel_scale / 3600.0, self.pixel_scale / 3600.0]
        w.wcs.cunit = ["deg", "deg"]
        w.wcs.radesys = "ICRS"
        return w

    @property
    def area_arcmin2(self) -> float:
        """Area of the field in arcmin^2."""
        return self.nx * self.ny * (self.pixel_scale / 60.0) ** 2

    def describe(self) -> str:
        """One line for error messages: size, pixel scale, centre and survey."""
        who = f" ({self.survey})" if self.survey else ""
        return (f"{self.nx} x {self.ny} pix at {self.pixel_scale:g} arcsec/pix centred on "
                f"ra={self.ra:g}, dec={self.dec:g} deg{who}")

    def with_pixel_scale(self, pixel_scale: float, survey: str = "") -> "Field":
        """The same sky footprint and centre sampled with ``pixel_scale`` (arcsec / pixel)."""
        ratio = self.pixel_scale / pixel_scale
        return Field(nx=int(round(self.nx * ratio)), ny=int(round(self.ny * ratio)),
                     pixel_scale=pixel_scale, ra=self.ra, dec=self.dec, survey=survey)


class SceneCanvas:
    """Accumulates PSF-convolved galaxies into one image (e- per pixel).

    Positions are FITS pixel coordinates (1-based, pixel centres on integers).
    """

    def __init__(self, field: Field):
        self.field = field
        self.image = galsim.ImageF(field.nx, field.ny, scale=field.pixel_scale)

    def add(self, profile: galsim.GSObject, x: float, y: float, stamp_size: int,
            method: str = "auto", max_missing: float | None = None,
            max_size: int | None = None) -> float:
        """Draw ``profile`` centred at (x, y) in a ``stamp_size`` box (any size, chosen by
        the caller from the profile) and add it.

        Parameters
        ----------
        max_missing : float, optional
            Largest flux (e-) allowed outside the box: while more is missing (a bright
            object's wings), the box is doubled, up to ``max_size`` pixels. Use the image's
            noise sigma per pixel so that no box edge can show, even in the noiseless image.
        max_size : int, optional
            Largest box side in pixels (default ``stamp_size``).

        Returns
        -------
        float
            The flux drawn in the box (e-), whether or not it all lands in the image.
        """
        from astrogen.physics.observe import draw_profile

        ix, iy = int(np.floor(x + 0.5)), int(np.floor(y + 0.5))
        max_size = max(stamp_size, max_size or stamp_size)
        size = stamp_size
        while True:
            half = size // 2
            b = galsim.BoundsI(ix - half, ix - half + size - 1, iy - half, iy - half + size - 1)
            overlap = b & self.image.bounds
            if not overlap.isDefined():
                return 0.0
            stamp = galsim.ImageF(b, scale=self.field.pixel_scale)
            draw_profile(profile, stamp, method, center=galsim.PositionD(x, y))
            drawn = float(stamp.array.sum(dtype=np.float64))
            if (max_missing is None or size >= max_size or method == "no_pixel"
                    or profile.flux - drawn <= max_missing):
                break
            size = min(2 * size, max_size)
        self.image[overlap] += stamp[overlap]
        return drawn

"""Band names of the catalog contract and their effective wavelengths.

A band is named ``<survey>_<filter>`` in lower case; its catalog magnitude column is
``mag_<band>`` (AB mag). The filters and effective wavelengths are those of the
``surveycodex`` package (LSST DESC's survey parameter collection):

=================================  ======================================================
bands                              surveycodex survey / filters
=================================  ======================================================
``lsst_u`` ... ``lsst_y``          LSST u g r i z y
``hsc_g`` ... ``hsc_y``            HSC g r i z y
``des_g`` ... ``des_y``            DES g r i z Y
``euclid_vis``                     Euclid_VIS IE
``euclid_y``, ``euclid_j``,        Euclid_NISP YE, JE, HE
``euclid_h``
``hst_f814w``                      COSMOS f814w (the reference band of ``mag``)
=================================  ======================================================
"""
from __future__ import annotations

from functools import lru_cache

import astropy.units as u
import numpy as np

from astrogen.errors import ConfigError, suggest

__all__ = ["BAND_FILTERS", "effective_wavelength", "interpolation_weights", "is_band"]

BAND_FILTERS: dict[str, tuple[str, str]] = {
    **{f"lsst_{f}": ("LSST", f) for f in "ugrizy"},
    **{f"hsc_{f}": ("HSC", f) for f in "grizy"},
    **{f"des_{f}": ("DES", f) for f in "griz"},
    "des_y": ("DES", "Y"),
    "euclid_vis": ("Euclid_VIS", "IE"),
    "euclid_y": ("Euclid_NISP", "YE"),
    "euclid_j": ("Euclid_NISP", "JE"),
    "euclid_h": ("Euclid_NISP", "HE"),
    "hst_f814w": ("COSMOS", "f814w"),
}

#: the band of the reference magnitude ``mag``
REFERENCE_BAND = "hst_f814w"


def is_band(name: str) -> bool:
    """Whether ``name`` is a band of the contract."""
    return name in BAND_FILTERS


def _check(band: str, key: str) -> None:
    if band not in BAND_FILTERS:
        raise ConfigError(f"is not a known band.{suggest(band, BAND_FILTERS)} Known: "
                          f"{', '.join(BAND_FILTERS)}.", key=key, received={"band": band})


@lru_cache(maxsize=None)
def effective_wavelength(band: str, key: str = "band") -> u.Quantity:
    """Effective wavelength [nm] of ``band``, from surveycodex.

    Raises
    ------
    ConfigError
        For a band name that is not in :data:`BAND_FILTERS`, naming ``key``.
    """
    import surveycodex as sc

    _check(band, key)
    survey, filt = BAND_FILTERS[band]
    return sc.get_survey(survey).get_filter(filt).effective_wavelength.to(u.nm)


def interpolation_weights(band: str, nodes, key: str = "bands",
                          reference_is_mag: bool = True) -> dict[str, float] | None:
    """Weights of the ``nodes`` bands' AB magnitudes whose sum approximates ``band``'s.

    Linear interpolation in log(effective wavelength) between the two nodes that bracket the
    band; outside the nodes' range, the nearest node's magnitude (flat f_nu: an
    extrapolation, not a measurement). Returns ``None`` for :data:`REFERENCE_BAND`, whose
    magnitude is the reference ``mag`` itself.

    Parameters
    ----------
    band : str
        Target band name.
    nodes : sequence of str
        Band names with known magnitudes.
    key : str
        YAML key named by the error for an unknown band.
    reference_is_mag : bool
        Return ``None`` for :data:`REFERENCE_BAND` (its magnitude is ``mag``); with False,
        interpolate it like any other band.

    Returns
    -------
    dict or None
        Node name -> weight (weights sum to 1).
    """
    _check(band, key)
    if band == REFERENCE_BAND and reference_is_mag:
        return None
    if band in nodes:
        return {band: 1.0}
    lam = np.log(effective_wavelength(band, key).value)
    nl = np.array([np.log(effective_wavelength(n).value) for n in nodes])
    order = np.argsort(nl)
    nl, names = nl[order], [nodes[i] for i in order]
    if lam <= nl[0]:
        return {names[0]: 1.0}
    if lam >= nl[-1]:
        return {names[-1]: 1.0}
    k = int(np.searchsorted(nl, lam))
    t = (lam - nl[k - 1]) / (nl[k] - nl[k - 1])
    return {names[k - 1]: float(1.0 - t), names[k]: float(t)}

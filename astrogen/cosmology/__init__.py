"""Cosmology for astrogen: background and growth, linear power spectrum, initial conditions.

Pure numpy/scipy/astropy (no TensorFlow). Units: lengths in Mpc/h, wavenumbers in h/Mpc,
power spectra in (Mpc/h)^3, masses in Msun/h.
"""
from astrogen.cosmology.background import PLANCK18, Cosmology
from astrogen.cosmology.initial import (fourier_modes, gaussian_field, lattice,
                                        lpt_displacements, zeldovich_displacement)
from astrogen.cosmology.power import (LinearPower, eisenstein_hu_nowiggle_transfer,
                                      eisenstein_hu_transfer, sigma_r, tophat_window)

__all__ = [
    "Cosmology", "PLANCK18", "LinearPower", "eisenstein_hu_transfer",
    "eisenstein_hu_nowiggle_transfer", "sigma_r", "tophat_window", "gaussian_field",
    "lattice", "fourier_modes", "lpt_displacements", "zeldovich_displacement",
]

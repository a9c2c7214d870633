"""N-body physics: CIC mesh operations, power spectra, a FastPM-style particle-mesh solver
(TensorFlow) and a friends-of-friends halo finder.

Importing this package does not import TensorFlow; :mod:`astrogen.nbody.mesh` and
:mod:`astrogen.nbody.pm` import it when their functions run.
"""
from astrogen.nbody.fof import friends_of_friends, mass_function, particle_mass
from astrogen.nbody.mesh import cic_paint, cic_readout, paint_density
from astrogen.nbody.pm import ParticleMesh, PMResult, PMSnapshot
from astrogen.nbody.power_spectrum import PowerSpectrum, cic_window, measure_power

__all__ = [
    "cic_paint", "cic_readout", "paint_density", "measure_power", "PowerSpectrum",
    "cic_window", "ParticleMesh", "PMResult", "PMSnapshot", "friends_of_friends",
    "mass_function", "particle_mass",
]

"""Pipeline stages. Importing this package registers the built-in stage types.

Stage modules import only numpy, astropy and GalSim at import time; TensorFlow and model
weights are loaded in ``Stage.setup``.
"""
from astrogen.stages import catalog, galsim_stages, output  # noqa: F401  (registration)
from astrogen.stages import nbody  # noqa: F401  (registration: N-body stages)
from astrogen.stages import deblend  # noqa: F401  (registration: blend.*, deblend.* stages)
from astrogen.stages import deblend_scene  # noqa: F401  (registration: scene.generate, deblend.scene*)
from astrogen.stages import flowvae  # noqa: F401  (registration: flowvae.generate)
from astrogen.stages import ddpm  # noqa: F401  (registration: ddpm.generate)
from astrogen.stages import nbody_emulate  # noqa: F401  (registration: nbody.emulate...)
from astrogen.stages import nbody_displace  # noqa: F401  (registration: nbody.displace)
from astrogen.stages import nbody_halos3d  # noqa: F401  (registration: nbody.halos3d)
from astrogen.stages import stars  # noqa: F401  (registration: catalog.stars, catalog.concat)
from astrogen.stages import btk  # noqa: F401  (registration: deblend.btk; BTK imported in setup)
from astrogen.stages import baryons  # noqa: F401  (registration: baryons.paint, output.baryons)
from astrogen.stages.base import Stage, StageContext

__all__ = ["Stage", "StageContext"]

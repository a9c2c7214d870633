"""Constants of the HST/COSMOS data the generative models are trained on, defined once.

Every module that needs them imports them from here (``astrogen.batch.COSMOS_ZERO_POINT``,
``astrogen.catalog.cosmos.COSMOS_PIXEL_SCALE`` and
``astrogen.physics.noise_power.COSMOS_PIXEL_SCALE`` are these same objects, kept for existing
imports). This module imports nothing, so every layer (``models/``, ``physics/``, ...) may use
it; ``tests/test_constants.py`` checks that no other module writes the values as literals.
"""

__all__ = ["COSMOS_ZERO_POINT", "COSMOS_PIXEL_SCALE", "NANOMAGGY_ZERO_POINT"]

#: AB magnitude giving 1 count per second for HST/ACS F814W, the flux convention of the
#: COSMOS RealGalaxyCatalog (GalSim's COSMOSCatalog docs; Sirianni et al. 2005) [mag AB].
COSMOS_ZERO_POINT = 25.94

#: pixel scale of the COSMOS HST/ACS drizzled stamps and of the SExtractor fits
#: (Koekemoer et al. 2007) [arcsec / pixel].
COSMOS_PIXEL_SCALE = 0.03

#: AB magnitude of 1 nanomaggy (3.631e-6 Jy; the SDSS / Legacy Survey flux unit), the common
#: flux unit the scene's colour composites are scaled to [mag AB].
NANOMAGGY_ZERO_POINT = 22.5

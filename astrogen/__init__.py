"""astrogen: deep generative models as stages of astronomical image-simulation pipelines.

Importing the package is cheap: TensorFlow is imported only by the modules that need it.
"""
from astrogen.version import __version__

__all__ = ["__version__"]

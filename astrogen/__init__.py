"""astrogen: deep generative models as stages of astronomical image-simulation pipelines.

The public Python API (:mod:`astrogen.api`)::

    import astrogen

    model = astrogen.load_model("flowvae_cosmos64")   # shipped name or a trained .keras file
    galaxies = astrogen.sample(model, mag=[22.0, 23.5], hlr=[0.3, 0.2], z=[0.5, 1.1])
    # -> list of galsim.InterpolatedImage (arcsec; flux in count/s at zero point 25.94)
    result = astrogen.run("pipelines/parametric_mock.yaml", overrides=["seed=3"])
    result = astrogen.deblend(image, pixel_scale=0.2, bands=["g", "r", "i", "z"])  # SceneResult

Plug-ins register their own stage types with :func:`register_stage` (subclasses of
:class:`Stage`); the registry of stage types is :data:`STAGES`. Where the training package
has one, ``astrogen.register_trainer`` and ``astrogen.TRAINERS`` are its trainer registry.

Importing the package is cheap: TensorFlow, GalSim and astropy are imported only by the
functions that need them (every name below is loaded on first access).
"""
from astrogen.version import __version__

#: public name -> (module, attribute), imported on first access
_LAZY = {
    "load_model": ("astrogen.api", "load_model"),
    "sample": ("astrogen.api", "sample"),
    "galsim_objects": ("astrogen.api", "galsim_objects"),
    "run": ("astrogen.api", "run"),
    "Model": ("astrogen.api", "Model"),
    "shipped_models": ("astrogen.api", "shipped_models"),
    "STAGES": ("astrogen.registry", "STAGES"),
    "register_stage": ("astrogen.registry", "register_stage"),
    "Stage": ("astrogen.stages.base", "Stage"),
    "StageContext": ("astrogen.stages.base", "StageContext"),
    "StampBatch": ("astrogen.batch", "StampBatch"),
    "DensityField": ("astrogen.batch", "DensityField"),
    "AstrogenError": ("astrogen.errors", "AstrogenError"),
    "TRAINERS": ("astrogen.training.registry", "TRAINERS"),
    "register_trainer": ("astrogen.training.registry", "register_trainer"),
}

__all__ = ["__version__", "load_model", "sample", "galsim_objects", "run", "deblend", "Model", "shipped_models",
           "STAGES", "register_stage", "Stage", "StageContext", "StampBatch", "DensityField",
           "AstrogenError"]


def __getattr__(name: str):
    """Import the public names on first access (keeps ``import astrogen`` fast)."""
    import importlib

    if name == "deblend":  # the subpackage, callable (astrogen.api.CallableModule)
        return importlib.import_module("astrogen.deblend")
    if name not in _LAZY:
        raise AttributeError(f"module 'astrogen' has no attribute '{name}'")
    module, attr = _LAZY[name]
    if name == "STAGES":
        importlib.import_module("astrogen.stages")  # registers the built-in stage types
    try:
        value = getattr(importlib.import_module(module), attr)
    except ImportError:
        raise AttributeError(f"module 'astrogen' has no attribute '{name}' ({module} is not "
                             "part of this installation)") from None
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY) | {"deblend"})

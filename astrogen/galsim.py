"""GalSim configuration plug-in: FlowVAE galaxies in GalSim's own YAML files.

Load it from a GalSim config with ``modules: [astrogen.galsim]``; it registers

* an input type ``flowvae`` (``input: {flowvae: {model: flowvae_cosmos64}}``): the model is
  loaded once per process and cached (:func:`astrogen.models.pretrained.cached_model`), and
  GalSim's multiprocessing proxy is not used (each worker process loads its own copy instead
  of calling a TensorFlow model through a pickling proxy);
* an object type ``FlowVAEGalaxy``::

      gal:
        type: FlowVAEGalaxy
        mag: 22.3        # conditions of the model, by name (F814W AB mag)
        hlr: 0.4         # half-light radius, arcsec
        z: 0.8           # redshift
        flux: 1500       # optional: total flux in the image's units (default: the model's
                         # count/s at the F814W zero point 25.94)
        temperature: 1.0 # optional: scale of the latent Gaussian

  returning a :class:`galsim.InterpolatedImage` of the PSF-free light profile (quintic
  interpolant, at the model's 0.03 arcsec/pixel), to be convolved with any PSF by GalSim.

Randomness: the latent draw uses GalSim's per-object random number generator
(:func:`galsim.config.GetRNG`), so ``image.random_seed`` makes runs reproducible, and
``rng_num`` selects another seed sequence: with ``random_seed: [<seed>, {type: Eval, str:
'<seed2> + obj_num_in_file'}]`` and ``rng_num: 1`` on ``gal``, object ``k`` of every file
(band) is the same galaxy, with the same morphology (``examples/galsim/flowvae_two_bands.yaml``).
"""
from __future__ import annotations

import galsim
import numpy as np

from astrogen.models.pretrained import cached_model, resolve_model_path

__all__ = ["FlowVAEInput", "build_flowvae_galaxy"]


class FlowVAEInput:
    """The ``flowvae`` input type: a loaded FlowVAE.

    Parameters
    ----------
    model : str
        Shipped model name (``flowvae_cosmos64``) or a ``.keras`` file of ``astrogen train``.
    """

    _req_params: dict = {}
    _opt_params = {"model": str}
    _single_params: list = []
    _takes_rng = False

    def __init__(self, model: str = "flowvae_cosmos64"):
        from astrogen.models.flowvae import load_flowvae
        from astrogen.tf_quiet import import_tensorflow_quietly

        import_tensorflow_quietly()
        self.path = resolve_model_path(model, "flowvae", key="input.flowvae.model")
        self.model = cached_model(self.path, load_flowvae)

    @property
    def condition_names(self) -> list[str]:
        return list(self.model.condition_names)

    def light_profile(self, conditions, noise) -> np.ndarray:
        """PSF-free stamp ``(N, N)`` (count/s per pixel) for one object."""
        c = np.asarray(conditions, dtype=np.float64)[None, :]
        return self.model.generate_from_noise(np.asarray(noise)[None, :], c, batch_size=1)[0]


def build_flowvae_galaxy(config, base, ignore, gsparams, logger):
    """GalSim builder of ``type: FlowVAEGalaxy`` (see the module docstring)."""
    flowvae = galsim.config.GetInputObj("flowvae", config, base, "FlowVAEGalaxy")
    names = flowvae.condition_names
    req = {name: float for name in names}
    opt = {"flux": float, "temperature": float}
    # Conditions first, so that ``flux`` may refer to them (``@gal.mag``).
    kwargs, _ = galsim.config.GetAllParams(config, base, req=req, ignore=ignore + list(opt))
    more, _ = galsim.config.GetAllParams(config, base, opt=opt, ignore=ignore + list(req))
    kwargs.update(more)
    temperature = float(kwargs.get("temperature", 1.0))
    if temperature < 0:
        raise galsim.GalSimConfigValueError("FlowVAEGalaxy.temperature must be >= 0.",
                                            temperature)
    rng = galsim.config.GetRNG(config, base, logger, "FlowVAEGalaxy")
    noise = np.empty(flowvae.model.latent_dim)
    galsim.GaussianDeviate(rng).generate(noise)
    image = flowvae.light_profile([kwargs[n] for n in names], temperature * noise)
    total = float(image.sum(dtype=np.float64))
    if not (np.isfinite(total) and total > 0):
        raise galsim.GalSimConfigError(
            f"FlowVAEGalaxy: the model generated an empty stamp for {kwargs}.")
    flux = float(kwargs.get("flux", total))
    gsp = galsim.GSParams(**gsparams) if gsparams else None
    gal = galsim.InterpolatedImage(galsim.Image(image.astype(np.float64),
                                                scale=flowvae.model.pixel_scale),
                                   flux=flux, x_interpolant="quintic", gsparams=gsp)
    return gal, False


galsim.config.RegisterInputType(
    "flowvae", galsim.config.InputLoader(FlowVAEInput, file_scope=False, use_proxy=False))
galsim.config.RegisterObjectType("FlowVAEGalaxy", build_flowvae_galaxy, input_type="flowvae")

"""GalSim configuration plug-in: FlowVAE galaxies in GalSim's own YAML files.

Load it from a GalSim config with ``modules: [astrogen.galsim]``; it registers

* an input type ``flowvae`` (``input: {flowvae: {model: flowvae_cosmos64, batch_size: 32}}``).
  The network is loaded lazily, in the process that first draws a galaxy, and once per
  process: GalSim builds its inputs in the parent and then *forks* its workers
  (``output.nproc``, ``image.nproc``), and a TensorFlow runtime that has run in a parent
  deadlocks in a forked child, which is why ``nproc: 2`` used to hang. The parent now only
  reads the model's sidecar (condition names, latent size: no TensorFlow), and each worker
  loads its own copy, with TensorFlow's start-up messages kept off stderr. GalSim's
  multiprocessing proxy is not used.
* batched generation: when the first galaxy of a block of ``batch_size`` objects (aligned
  within the image) is built, the plug-in replays GalSim's own stamp setup for the other
  objects of the block on a copy of the configuration (their per-object random number
  generators, conditions and latent draws, exactly as GalSim will make them), decodes the
  whole block in one network call, and keeps the images until GalSim asks for them. An image
  is used only if its object's conditions and latent noise are bit-identical to the ones
  recorded; anything else (``reject``/retries, sequential ``obj_rng: False`` draws) is
  generated on the spot. Every call uses the same fixed micro-batch size, so the pixels do
  not depend on the blocking (``batch_size: 1`` is the one-object-per-call path).
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

import contextlib
import json
import os
import sys

import galsim
import numpy as np

from astrogen.constants import COSMOS_PIXEL_SCALE
from astrogen.models.pretrained import resolve_model_path

__all__ = ["FlowVAEInput", "build_flowvae_galaxy"]

#: Key set on a configuration copy while the plug-in replays an object's setup.
_DRY_RUN = "_astrogen_flowvae_dry_run"
#: One loaded network per (process id, file): never shared with a forked child.
_MODELS: dict = {}


class _Recorded(Exception):
    """Raised by the builder in a dry run: the object's conditions and latent noise."""

    def __init__(self, conditions, noise):
        super().__init__("recorded")
        self.conditions = conditions
        self.noise = noise


@contextlib.contextmanager
def _stderr_to_devnull():
    """Send file descriptor 2 to /dev/null (TensorFlow's C++ start-up and CUDA messages)."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _tf_running() -> bool:
    """Whether TensorFlow's runtime has been initialised in this process."""
    if "tensorflow" not in sys.modules:
        return False
    try:
        from tensorflow.python.eager import context

        return bool(context.context()._initialized)
    except Exception:  # noqa: BLE001 - imported, state unknown: assume it ran
        return True


#: Set in a forked child whose parent had initialised TensorFlow (it would deadlock here).
_PARENT_RAN_TF = False


def _after_fork_in_child():
    global _PARENT_RAN_TF
    _PARENT_RAN_TF = _PARENT_RAN_TF or _tf_running()


os.register_at_fork(after_in_child=_after_fork_in_child)


def _load_quietly(path):
    """The FlowVAE at ``path``, loaded once per process, without TensorFlow noise on stderr."""
    key = (os.getpid(), str(path), path.stat().st_mtime_ns)
    if key not in _MODELS:
        if _PARENT_RAN_TF:
            raise galsim.GalSimConfigError(
                "FlowVAEGalaxy: TensorFlow had already run in the process that GalSim forked "
                "this worker from (nproc > 1), and TensorFlow cannot run in a forked child (it "
                "would hang). Use nproc: 1 in this process, or run GalSim in a fresh process "
                "(the galsim executable, or galsim.config.Process before any TensorFlow use).")
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        with _stderr_to_devnull():
            from astrogen.models.flowvae import load_flowvae

            model = load_flowvae(path)
        _MODELS[key] = model
    return _MODELS[key]


class FlowVAEInput:
    """The ``flowvae`` input type: a FlowVAE, loaded lazily once per process.

    Parameters
    ----------
    model : str
        Shipped model name (``flowvae_cosmos64``) or a ``.keras`` file of ``astrogen train``.
    batch_size : int
        Objects generated per network call (a block of consecutive objects of one image);
        also the fixed micro-batch of every call, so the pixels do not depend on it.
    """

    _req_params: dict = {}
    _opt_params = {"model": str, "batch_size": int}
    _single_params: list = []
    _takes_rng = False

    def __init__(self, model: str = "flowvae_cosmos64", batch_size: int = 32):
        self.path = resolve_model_path(model, "flowvae", key="input.flowvae.model").resolve()
        if self.path.suffix == ".json":
            self.path = self.path.with_suffix(".keras")
        if int(batch_size) < 1:
            raise galsim.GalSimConfigValueError("input.flowvae.batch_size must be >= 1.",
                                                batch_size)
        self.batch_size = int(batch_size)
        try:  # no TensorFlow in the parent: what the builder needs comes from the sidecar
            cfg = json.loads(self.path.with_suffix(".json").read_text())["config"]
            self._names = list(cfg.get("condition_names") or [])
            self._latent_dim = int(cfg["latent_dim"])
            self._pixel_scale = float(cfg.get("pixel_scale", COSMOS_PIXEL_SCALE))
        except (OSError, ValueError, KeyError, TypeError):
            m = self.model
            self._names, self._latent_dim = list(m.condition_names), int(m.latent_dim)
            self._pixel_scale = float(m.pixel_scale)
        self._cache: dict = {}
        self._cache_pid = None
        self.n_network_calls = 0

    @property
    def model(self):
        """The network of this process (loaded on first use)."""
        return _load_quietly(self.path)

    @property
    def condition_names(self) -> list[str]:
        """Names of the catalog columns the model is conditioned on, in order."""
        return list(self._names)

    @property
    def latent_dim(self) -> int:
        """Dimension of the model's latent space."""
        return self._latent_dim

    @property
    def pixel_scale(self) -> float:
        """Pixel scale of the generated stamps, arcsec / pixel."""
        return self._pixel_scale

    def light_profiles(self, conditions, noise) -> np.ndarray:
        """PSF-free stamps ``(n, N, N)`` (count/s per pixel), one network call per
        ``batch_size`` rows, always in micro-batches of exactly ``batch_size``."""
        c = np.asarray(conditions, dtype=np.float64).reshape(len(noise), -1)
        self.n_network_calls += -(-len(c) // self.batch_size)
        return self.model.generate_from_noise(np.asarray(noise, np.float32), c,
                                              batch_size=self.batch_size)

    def light_profile(self, conditions, noise) -> np.ndarray:
        """PSF-free stamp ``(N, N)`` (count/s per pixel) for one object."""
        return self.light_profiles(np.asarray(conditions, np.float64)[None, :],
                                   np.asarray(noise)[None, :])[0]

    # ------------------------------------------------------------------ batching
    def _block(self, base, obj_num: int) -> range:
        """The aligned block of objects of the current image that contains ``obj_num``."""
        if self.batch_size == 1:
            return range(obj_num, obj_num + 1)
        try:
            nobj = list(base["nobj"])
            k = int(base["image_num"]) - int(base["start_image_num"])
            first = int(base["start_obj_num"]) + int(sum(nobj[:k]))
            stop = first + int(nobj[k])
        except (KeyError, TypeError, ValueError, IndexError):
            return range(obj_num, obj_num + 1)
        if not first <= obj_num < stop:
            return range(obj_num, obj_num + 1)
        b0 = first + (obj_num - first) // self.batch_size * self.batch_size
        return range(b0, min(b0 + self.batch_size, stop))

    def _record(self, base, obj_num: int, logger):
        """Replay GalSim's stamp setup of object ``obj_num`` on a copy of the configuration
        up to this plug-in's builder: its (conditions, noise), or None."""
        cfg = galsim.config.CopyConfig(base)
        cfg[_DRY_RUN] = True
        try:
            galsim.config.BuildStamp(cfg, obj_num=obj_num, do_noise=False)
        except _Recorded as rec:
            return rec.conditions, rec.noise
        except Exception as exc:  # noqa: BLE001 - a skipped object: generated on demand
            if logger:
                logger.debug("flowvae: object %d not prefetched (%s)", obj_num, exc)
        return None

    def profile_for(self, base, conditions, noise, logger=None) -> np.ndarray:
        """The stamp of the current object, from the block cache or the network."""
        if self._cache_pid != os.getpid():
            self._cache, self._cache_pid = {}, os.getpid()
        obj_num = int(base.get("obj_num", 0))
        key = (np.asarray(conditions, np.float64).tobytes(),
               np.asarray(noise, np.float32).tobytes())
        hit = self._cache.pop(obj_num, None)
        if hit is not None and hit[0] == key:
            return hit[1]
        block = self._block(base, obj_num)
        rows = [(obj_num, conditions, noise)]
        for j in block:
            if j != obj_num:
                rec = self._record(base, j, logger)
                if rec is not None:
                    rows.append((j, *rec))
        images = self.light_profiles(np.array([r[1] for r in rows], np.float64),
                                     np.array([r[2] for r in rows], np.float32))
        self._cache = {j: ((np.asarray(c, np.float64).tobytes(),
                            np.asarray(u, np.float32).tobytes()), images[i])
                       for i, (j, c, u) in enumerate(rows) if i > 0}
        return images[0]


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
    # The values of GaussianDeviate.generate, drawn one by one: generate() costs ~30 ms per
    # call here (it starts OpenMP threads), more than the network per object.
    gauss = galsim.GaussianDeviate(rng)
    noise = np.array([gauss() for _ in range(flowvae.latent_dim)], dtype=np.float64)
    conditions = np.array([kwargs[n] for n in names], dtype=np.float64)
    noise = (temperature * noise).astype(np.float32)
    if base.get(_DRY_RUN):
        raise _Recorded(conditions, noise)
    image = flowvae.profile_for(base, conditions, noise, logger)
    total = float(image.sum(dtype=np.float64))
    if not (np.isfinite(total) and total > 0):
        raise galsim.GalSimConfigError(
            f"FlowVAEGalaxy: the model generated an empty stamp for {kwargs}.")
    flux = float(kwargs.get("flux", total))
    gsp = galsim.GSParams(**gsparams) if gsparams else None
    gal = galsim.InterpolatedImage(galsim.Image(image.astype(np.float64),
                                                scale=flowvae.pixel_scale),
                                   flux=flux, x_interpolant="quintic", gsparams=gsp)
    return gal, False


galsim.config.RegisterInputType(
    "flowvae", galsim.config.InputLoader(FlowVAEInput, file_scope=False, use_proxy=False))
galsim.config.RegisterObjectType("FlowVAEGalaxy", build_flowvae_galaxy, input_type="flowvae")

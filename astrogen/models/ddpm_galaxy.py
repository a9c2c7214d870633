r"""The galaxy diffusion model: a trained :class:`~astrogen.models.ddpm_unet.DDPMUNet` with its
noise schedule, intensity transform and condition features, ready to generate PSF-free,
noise-free galaxy stamps from catalog rows (Smith et al. 2022, MNRAS 511, 1808,
arXiv:2111.01713; Ho et al. 2020; Song et al. 2021).

Data space
----------
The network works on ``x = arcsinh(I / (F * s)) / d`` where ``I`` is the PSF-free stamp in
``flux_unit`` per pixel (``count/s`` at the COSMOS F814W zero point), ``F = 10**(-0.4 (mag -
zero_point))`` the catalog flux of the row (``flux_normalize: true``; ``F = 1`` otherwise),
``s`` the stored ``intensity_scale`` and ``d`` the ``intensity_divisor``. The transform is
invertible (:meth:`DDPMGalaxyModel.decode`: ``I = F s sinh(d x)``). With flux normalisation
the network generates the *shape* of the light distribution conditioned on ``(mag, hlr,
z)`` and the catalog magnitude sets the total flux; the stamps' own magnitudes then match the
catalog up to the flux the model puts outside or below zero (measured by
``benchmarks/ddpm_benchmark.py``).

Conditions
----------
Catalog columns ``mag`` (AB), ``hlr`` (arcsec, PSF-free half-light radius) and ``z`` enter as
the features ``(mag, ln hlr, ln(1 + z))``, standardised inside the network with the training
set's mean and standard deviation. A learned null condition (trained by condition dropout)
gives the unconditional prediction, so classifier-free guidance is available
(``guidance``: 0 unconditional, 1 conditional, > 1 guided).

Determinism
-----------
Every random number of a row's sample (its starting noise and each stochastic step's noise)
comes from that row's own seed (``astrogen.seeds.row_seeds``), and the network is evaluated
in micro-batches of a fixed size (the last one padded), so a row's stamp does not depend on
which rows it is generated with.

Files
-----
``name.keras`` (the U-Net with EMA weights, ``keras.saving``) and ``name.json`` (the sidecar:
schedule, intensity transform, condition features and their range, training provenance).
"""
from __future__ import annotations

import json
from numbers import Integral, Real
from pathlib import Path

import numpy as np

from astrogen.batch import COSMOS_ZERO_POINT
from astrogen.constants import COSMOS_PIXEL_SCALE
from astrogen.errors import CatalogError, ConfigError, ModelError
from astrogen.physics.photometry import flux_from_mag

__all__ = ["DDPMGalaxyModel", "load_ddpm", "condition_features", "SAMPLERS",
           "SIDECAR_FORMAT", "CONDITION_COLUMNS", "shipped_model_path", "inpaint_stamps"]

SIDECAR_FORMAT = "astrogen.ddpm_galaxy"
SIDECAR_FORMAT_VERSION = 1
#: Catalog columns the model is conditioned on (canonical names and units).
CONDITION_COLUMNS = ("mag", "hlr", "z")
CONDITION_UNITS = ("mag(AB)", "arcsec", "")
#: Network condition features derived from them.
FEATURE_NAMES = ("mag", "ln_hlr", "ln_1pz")
SAMPLERS = ("ddpm", "ddim", "dpm_solver", "distilled")
SHIPPED_MODEL = "ddpm_cosmos64.keras"


def shipped_model_path() -> Path:
    """Path of the pretrained weights shipped in ``astrogen/data/models`` (package data)."""
    from importlib.resources import files

    return Path(str(files("astrogen.data").joinpath("models", SHIPPED_MODEL)))


def condition_features(conditions) -> np.ndarray:
    """``(B, 3)`` float32 features ``(mag, ln hlr, ln(1+z))`` of raw ``(mag, hlr, z)`` rows."""
    c = np.asarray(conditions, dtype=np.float64)
    if c.ndim != 2 or c.shape[1] != 3:
        raise ConfigError("conditions must have shape (n, 3): mag, hlr [arcsec], z.",
                          key="conditions", received={"shape": c.shape})
    if not np.all(np.isfinite(c)) or np.any(c[:, 1] <= 0) or np.any(c[:, 2] <= -1):
        raise ConfigError("conditions must be finite with hlr > 0 and z > -1.",
                          key="conditions", received={"min": c.min(axis=0).tolist()})
    return np.stack([c[:, 0], np.log(c[:, 1]), np.log1p(c[:, 2])], axis=1).astype(np.float32)


def _conditions_array(conditions) -> np.ndarray:
    """Raw ``(B, 3)`` conditions from an array or a table with mag, hlr, z columns."""
    if hasattr(conditions, "colnames") or isinstance(conditions, dict):
        names = list(getattr(conditions, "colnames", None) or conditions.keys())
        for name in CONDITION_COLUMNS:  # a table's columns, not the catalog module's checks
            if name not in names:
                raise CatalogError(f"column '{name}' is required by ddpm but missing "
                                   f"(available: {', '.join(names)}).", key=name)
        return np.stack([np.asarray(conditions[k], np.float64) for k in CONDITION_COLUMNS], 1)
    return np.asarray(conditions, dtype=np.float64)


class DDPMGalaxyModel:
    """A trained galaxy DDPM: network, schedule, intensity transform, condition features.

    Parameters
    ----------
    network : DDPMUNet
        Noise predictor (EMA weights).
    schedule : astrogen.schedulers.NoiseSchedule
        The schedule it was trained with.
    intensity : dict
        ``flux_normalize`` (bool), ``scale`` (s), ``divisor`` (d), see the module docstring.
    meta : dict
        ``stamp_size``, ``pixel_scale`` (arcsec), ``flux_unit``, ``zero_point``,
        ``condition_range`` and provenance (written to the sidecar).
    """

    def __init__(self, network, schedule, intensity: dict, meta: dict | None = None):
        self.network = network
        self.schedule = schedule
        self.intensity = {"flux_normalize": bool(intensity.get("flux_normalize", True)),
                          "scale": float(intensity["scale"]),
                          "divisor": float(intensity["divisor"])}
        self.meta = dict(meta or {})
        self.stamp_size = int(network.image_size)
        self.pixel_scale = float(self.meta.get("pixel_scale", COSMOS_PIXEL_SCALE))
        self.flux_unit = str(self.meta.get("flux_unit", "count/s"))
        self.zero_point = float(self.meta.get("zero_point", COSMOS_ZERO_POINT))
        self._fns: dict = {}

    # ---- transforms ------------------------------------------------------------------------
    def row_flux(self, mag) -> np.ndarray:
        """Normalising flux per row (``flux_unit``): the catalog flux, or 1."""
        mag = np.asarray(mag, dtype=np.float64)
        if not self.intensity["flux_normalize"]:
            return np.ones_like(mag)
        return flux_from_mag(mag, self.zero_point)

    def encode(self, images, mag) -> np.ndarray:
        """PSF-free stamps ``(B, N, N)`` (``flux_unit``) -> network space ``(B, N, N, 1)``."""
        img = np.asarray(images, dtype=np.float64)
        f = self.row_flux(mag)[:, None, None]
        x = np.arcsinh(img / (f * self.intensity["scale"])) / self.intensity["divisor"]
        return x[..., None]

    def decode(self, x, mag) -> np.ndarray:
        """Network space ``(B, N, N[, 1])`` -> stamps ``(B, N, N)`` in ``flux_unit`` (float32)."""
        x = np.asarray(x, dtype=np.float64)
        if x.ndim == 4:
            x = x[..., 0]
        f = self.row_flux(mag)[:, None, None]
        lim = self.x_limit
        x = np.clip(np.nan_to_num(x, nan=0.0), -lim, lim)
        img = f * self.intensity["scale"] * np.sinh(self.intensity["divisor"] * x)
        return img.astype(np.float32)

    @property
    def x_limit(self) -> float:
        """Largest ``|x|`` decoded: with flux normalisation, a pixel holding the row's whole
        flux (``arcsinh(1 / s) / d``); samples beyond it are clipped in :meth:`decode`."""
        s, d = self.intensity["scale"], self.intensity["divisor"]
        if self.intensity["flux_normalize"]:
            return float(np.arcsinh(1.0 / s) / d)
        return float(np.arcsinh(np.finfo(np.float32).max / 10 / s) / d)

    # ---- network adapter -------------------------------------------------------------------
    def eps_model(self, batch_size: int = 16):
        """``(x_t, t, features) -> eps`` evaluating the network in micro-batches of exactly
        ``batch_size`` rows (at least 2; the last one zero-padded), so that a row's output
        does not depend on the other rows nor on its place in the batch (tested bit for bit);
        ``features=None`` is the null (unconditional) condition."""
        import tensorflow as tf

        bs = int(batch_size)
        if bs < 1:
            raise ConfigError("must be >= 1.", key="batch_size", received={"batch_size": bs})
        bs = max(bs, 2)  # TF's batch-1 kernels round differently: always pad to >= 2 rows
        if "cond" not in self._fns:
            net = self.network
            self._fns["cond"] = tf.function(lambda x, t, c: net((x, t, c), training=False),
                                            reduce_retracing=True)
            self._fns["uncond"] = tf.function(lambda x, t: net((x, t), training=False),
                                              reduce_retracing=True)
        f_c, f_u = self._fns["cond"], self._fns["uncond"]
        n_cond = int(self.network.cond_dim)
        prediction = getattr(self.network, "prediction", "eps")
        from astrogen.models.ddpm_unet import eps_from_output

        def eps(x_t, t, cond=None):
            x = np.asarray(x_t, dtype=np.float32)
            tt = np.broadcast_to(np.asarray(t).astype(np.int32), (x.shape[0],))
            c = None if cond is None else np.asarray(cond, dtype=np.float32)
            out = np.empty(x.shape, dtype=np.float64)
            for i in range(0, x.shape[0], bs):
                m = min(bs, x.shape[0] - i)
                xb = np.zeros((bs,) + x.shape[1:], np.float32)
                tb = np.zeros((bs,), np.int32)
                xb[:m], tb[:m] = x[i:i + m], tt[i:i + m]
                if c is None:
                    y = f_u(tf.constant(xb), tf.constant(tb))
                else:
                    cb = np.zeros((bs, n_cond), np.float32)
                    cb[:m] = c[i:i + m]
                    y = f_c(tf.constant(xb), tf.constant(tb), tf.constant(cb))
                out[i:i + m] = np.asarray(y)[:m]
            return eps_from_output(out, x, tt, self.schedule, prediction)

        return eps

    def sampler(self, sampler: str = "ddim", num_steps: int = 25, eta: float = 0.0,
                timestep_spacing: str = "trailing"):
        """A sampler of :mod:`astrogen.schedulers` on this model's schedule."""
        from astrogen.schedulers import DDIMSampler, DDPMSampler, DPMSolverSampler
        from astrogen.errors import suggest

        if sampler not in SAMPLERS:
            raise ConfigError(f"must be one of {list(SAMPLERS)}.{suggest(str(sampler), SAMPLERS)}",
                              key="sampler", received={"sampler": sampler})
        if sampler == "distilled":
            return self.distilled_sampler(num_steps)
        if sampler == "ddpm":
            return DDPMSampler(self.schedule, num_steps, timestep_spacing=timestep_spacing)
        if sampler == "ddim":
            return DDIMSampler(self.schedule, num_steps, eta=eta,
                               timestep_spacing=timestep_spacing)
        return DPMSolverSampler(self.schedule, num_steps, timestep_spacing=timestep_spacing)

    @property
    def distillation(self) -> dict | None:
        """The ``distillation`` block of a progressively distilled student's sidecar
        (``num_steps``, ``base_steps``, ``timestep_spacing``...), ``None`` for a DDPM."""
        return self.meta.get("distillation")

    def distilled_sampler(self, num_steps: int | None = None):
        """The :class:`~astrogen.schedulers.DistilledSampler` of a distilled student: its own
        number of steps only (``num_steps``, if given, must be it)."""
        from astrogen.schedulers import DistilledSampler

        d = self.distillation
        if d is None:
            raise ConfigError("sampler 'distilled' needs a distilled student (astrogen train "
                              "configs/ddpm_distill.yaml), not a DDPM.", key="sampler",
                              received={"sampler": "distilled"})
        if num_steps is not None and int(num_steps) != int(d["num_steps"]):
            raise ConfigError(f"this distilled student samples in exactly {d['num_steps']} "
                              "steps.", key="num_steps", received={"num_steps": num_steps})
        return DistilledSampler(self.schedule, int(d["num_steps"]), int(d["base_steps"]),
                                str(d.get("timestep_spacing", "trailing")))

    def _guided(self, eps, feats, guidance: float):
        from astrogen.schedulers import guided

        return guided(eps, feats, None, float(guidance))

    # ---- generation ------------------------------------------------------------------------
    def generate(self, conditions, seed_per_row, sampler: str = "ddim", num_steps: int = 25,
                 guidance: float = 1.0, eta: float = 0.0, batch_size: int = 16,
                 timestep_spacing: str = "trailing", progress: bool = False) -> np.ndarray:
        """PSF-free, noise-free stamps for catalog rows.

        Parameters
        ----------
        conditions : array (B, 3) of (mag, hlr [arcsec], z), or a table with those columns.
        seed_per_row : array of uint64 (B,)
            One seed per row (``astrogen.seeds.row_seeds(stage_seed, row_id)``).
        sampler : {"ddpm", "ddim", "dpm_solver", "distilled"}
            ``distilled``: a progressively distilled student's few-step sampler
            (:meth:`distilled_sampler`).
        num_steps : int
            Network evaluations per sample (times 2 with guidance other than 0 and 1).
        guidance : float
            Classifier-free guidance scale (1 = plain conditional model).
        eta : float
            DDIM stochasticity (0 = deterministic given the starting noise).
        batch_size : int
            Fixed micro-batch of the network (does not change the results).

        Returns
        -------
        numpy.ndarray float32 (B, N, N) in ``flux_unit`` per pixel at ``pixel_scale``.
        """
        raw = _conditions_array(conditions)
        feats = condition_features(raw)
        seeds = np.asarray(seed_per_row, dtype=np.uint64)
        if seeds.shape != (raw.shape[0],):
            raise ConfigError("needs one seed per row.", key="seed_per_row",
                              received={"seeds": seeds.shape, "rows": raw.shape[0]})
        n = self.stamp_size
        if raw.shape[0] == 0:
            return np.zeros((0, n, n), np.float32)
        smp = self.sampler(sampler, num_steps, eta, timestep_spacing)
        eps = self._guided(self.eps_model(batch_size), feats, guidance)
        x = smp.sample(eps, (raw.shape[0], n, n, 1), cond=feats, seed=seeds, progress=progress)
        return self.decode(x, raw[:, 0])

    def inpaint(self, stamps, mask, conditions, seed_per_row, sampler: str = "ddim",
                num_steps: int = 50, resample: int = 1, guidance: float = 1.0,
                eta: float = 0.0, batch_size: int = 16, progress: bool = False) -> np.ndarray:
        """Fill the masked pixels of PSF-free stamps (see :func:`inpaint_stamps`)."""
        from astrogen.schedulers import inpaint

        img = np.asarray(stamps, dtype=np.float64)
        n = self.stamp_size
        if img.ndim != 3 or img.shape[1:] != (n, n):
            raise ConfigError(f"stamps must have shape (B, {n}, {n}).", key="stamps",
                              received={"shape": img.shape})
        m = np.asarray(mask, dtype=np.float64)
        try:
            m = np.broadcast_to(m, img.shape)
        except ValueError:
            raise ConfigError("must broadcast to the stamps' shape (B, N, N).", key="mask",
                              received={"mask": m.shape, "stamps": img.shape}) from None
        raw = _conditions_array(conditions)
        feats = condition_features(raw)
        seeds = np.asarray(seed_per_row, dtype=np.uint64)
        known = np.where(m > 0, img, 0.0)
        xk = self.encode(known, raw[:, 0])
        smp = self.sampler(sampler, num_steps, eta)
        eps = self._guided(self.eps_model(batch_size), feats, guidance)
        x = inpaint(smp, eps, xk, m[..., None], cond=feats, seed=seeds, resample=resample,
                    progress=progress)
        out = self.decode(x, raw[:, 0]).astype(np.float64)
        out = np.where(m >= 1, img, out)  # known pixels exactly as given
        return out.astype(np.float32)

    # ---- files -----------------------------------------------------------------------------
    def sidecar(self) -> dict:
        """The JSON sidecar written next to the ``.keras`` file.

        Returns
        -------
        dict
            Format and versions, network and noise-schedule configs, intensity transform,
            condition columns with their units, and the model's metadata (``meta``).
        """
        import keras

        from astrogen.version import __version__

        return {"format": SIDECAR_FORMAT, "format_version": SIDECAR_FORMAT_VERSION,
                "model": "DDPMUNet", "astrogen_version": __version__,
                "keras_version": keras.__version__,
                "reference": "Smith et al. 2022, MNRAS 511, 1808 (arXiv:2111.01713); "
                             "Ho et al. 2020 (arXiv:2006.11239)",
                "network": self.network.get_config(), "schedule": self.schedule.get_config(),
                "intensity": self.intensity, "condition_columns": list(CONDITION_COLUMNS),
                "condition_units": list(CONDITION_UNITS), "features": list(FEATURE_NAMES),
                **self.meta}

    def save(self, path) -> None:
        """Write ``path`` (``.keras``) and the sidecar ``.json`` beside it."""
        path = Path(path)
        if path.suffix != ".keras":
            raise ConfigError("must end in '.keras'.", key="path", received={"path": str(path)})
        path.parent.mkdir(parents=True, exist_ok=True)
        self.network.save(str(path))
        path.with_suffix(".json").write_text(json.dumps(self.sidecar(), indent=2) + "\n")


def load_ddpm(path=None) -> DDPMGalaxyModel:
    """Load a model written by :meth:`DDPMGalaxyModel.save` (default: the shipped weights).

    Raises
    ------
    ModelError
        Missing file, missing or foreign sidecar.
    """
    import keras

    from astrogen.models.ddpm_unet import DDPMUNet  # noqa: F401  (registers the classes)
    from astrogen.schedulers import NoiseSchedule

    path = shipped_model_path() if path is None else Path(path)
    if path.suffix == ".json":
        path = path.with_suffix(".keras")
    side = path.with_suffix(".json")
    if not path.is_file() or not side.is_file():
        raise ModelError("DDPM model file or its .json sidecar not found (train one with "
                         "`astrogen train configs/ddpm.yaml`).", key="model",
                         received={"path": str(path)})
    meta = json.loads(side.read_text())
    if meta.get("format") != SIDECAR_FORMAT or int(meta.get("format_version", 0)) > \
            SIDECAR_FORMAT_VERSION:
        raise ModelError("not an astrogen DDPM sidecar (or a newer format).", key=str(side),
                         received={"format": meta.get("format"),
                                   "format_version": meta.get("format_version")})
    net = keras.saving.load_model(str(path), compile=False)
    sched = NoiseSchedule.from_config(meta["schedule"])
    keep = {k: v for k, v in meta.items()
            if k not in ("format", "format_version", "model", "network", "schedule",
                         "intensity", "condition_columns", "condition_units", "features",
                         "astrogen_version", "keras_version", "reference")}
    return DDPMGalaxyModel(net, sched, meta["intensity"], keep)


def inpaint_stamps(stamps, mask, conditions, seed_per_row, model=None, sampler: str = "ddim",
                   num_steps: int = 50, resample: int = 1, guidance: float = 1.0,
                   batch_size: int = 16) -> np.ndarray:
    """Inpaint masked pixels of PSF-free, noise-free galaxy stamps with the galaxy DDPM.

    The known pixels (``mask == 1``) are diffused to each step's noise level and imposed at
    every reverse step (replacement method of Song et al. 2021, App. I; RePaint resampling
    with ``resample > 1``, Lugmayr et al. 2022); the model, conditioned on the row's
    ``(mag, hlr, z)``, fills the rest. Use it to repair cosmic rays, bad columns or the
    pixels of a blended neighbour.

    Parameters
    ----------
    stamps : array (B, N, N)
        PSF-free stamps in the model's ``flux_unit`` (count/s at zero point 25.94) and pixel
        scale (0.03"/pix for the shipped model); masked values are ignored (may be NaN).
    mask : array broadcastable to (B, N, N)
        1 = known pixel, 0 = to generate.
    conditions : (B, 3) array of (mag, hlr, z) or a table with those columns.
    seed_per_row : uint64 array (B,)
        One seed per row (``astrogen.seeds.row_seeds``).
    model : DDPMGalaxyModel or path, optional
        Default: the shipped ``ddpm_cosmos64`` weights.

    Returns
    -------
    numpy.ndarray float32 (B, N, N): known pixels unchanged, the others generated.
    """
    if model is None or isinstance(model, (str, Path)):
        model = load_ddpm(model)
    if isinstance(resample, bool) or not isinstance(resample, Integral) or resample < 1:
        raise ConfigError("must be an integer >= 1.", key="resample",
                          received={"resample": resample})
    if isinstance(guidance, bool) or not isinstance(guidance, Real):
        raise ConfigError("must be a number.", key="guidance", received={"guidance": guidance})
    return model.inpaint(stamps, mask, conditions, seed_per_row, sampler=sampler,
                         num_steps=num_steps, resample=resample, guidance=guidance,
                         batch_size=batch_size)

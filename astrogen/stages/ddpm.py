"""``ddpm.generate``: galaxy stamps sampled from the conditional diffusion model.

Interchangeable with ``flowvae.generate`` and ``galsim.parametric``: catalog rows (``mag``,
``hlr``, ``z``, ``row_id``) in, a :class:`~astrogen.batch.StampBatch` of noiseless, PSF-free
light profiles out (count/s per pixel at the model's pixel scale, COSMOS F814W zero point),
ready for ``observe``, ``scene`` and the output stages. The sampler (DDPM ancestral, DDIM,
DPM-Solver++(2M)) and its number of steps are parameters. Each row's starting noise and
per-step noise come from that row's own seed (``astrogen.seeds.row_seeds(stage seed,
row_id)``) and the network runs in fixed-size micro-batches, so a stamp does not depend on
chunking or batch size.

References
----------
Smith M. J., Geach J. E., Jackson R. A., et al. 2022, MNRAS 511, 1808 (arXiv:2111.01713);
Ho J., Jain A., Abbeel P. 2020 (arXiv:2006.11239); Song J., Meng C., Ermon S. 2021
(arXiv:2010.02502).
"""
from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np
from astropy.table import Table

from astrogen.batch import StampBatch
from astrogen.catalog.columns import require_columns
from astrogen.errors import CatalogError, ConfigError, ModelError
from astrogen.physics.photometry import flux_from_mag, mag_from_flux
from astrogen.registry import register_stage
from astrogen.seeds import row_seeds
from astrogen.stages.base import Stage, check_choice, check_int
from astrogen.stages.flowvae import check_generated_options, requested_shape, stamp_batch_scale
from astrogen.stages.generated import (finish_generated, output_side, pass_stars_through,
                                       size_scale_factors, truth_columns)

__all__ = ["DDPMGenerate", "resolve_ddpm_model", "distilled_student_path",
           "DDPM_MAX_NATIVE_HLR"]

#: Largest major-axis half-light radius (arcsec) the shipped 64 x 64, 0.03"/pixel DDPM draws
#: in its own field (benchmarks/generator_accuracy.py ``explore``, DDIM-10): at 0.15" the
#: median outer-ring light is 0.4 %; at 0.2" 0.6 %, at 0.3" 1.3 % with the galaxy 15 % small.
DDPM_MAX_NATIVE_HLR = 0.15

#: Shipped model names (files in astrogen/data/models).
SHIPPED = {"ddpm_cosmos64": "ddpm_cosmos64.keras"}
#: Stem of the shipped distilled students (``<stem>_<N>step.keras``, N = 1, 2, 4).
SHIPPED_DISTILLED = "ddpm_cosmos64_distilled"
_CACHE: dict = {}


def resolve_ddpm_model(model: str) -> Path:
    """Path of a shipped DDPM name or of a ``.keras`` file written by ``astrogen train``."""
    name = str(model)
    if name in SHIPPED:
        from astrogen.models.ddpm_galaxy import shipped_model_path

        path = shipped_model_path()
        if not path.is_file():
            raise ModelError("the shipped weights are missing from the installation; retrain "
                             "them with: astrogen train configs/ddpm.yaml", key="model",
                             received={"model": name, "expected file": str(path)})
        return path
    path = Path(name).expanduser()
    if path.suffix == ".json":
        path = path.with_suffix(".keras")
    if path.suffix == ".keras" and path.is_file() and path.with_suffix(".json").is_file():
        return path
    raise ModelError(f"is neither a shipped DDPM model ({', '.join(SHIPPED)}) nor an existing "
                     ".keras file with its .json sidecar.", key="model", received={"model": name})


def distilled_student_path(path: Path, num_steps: int) -> Path:
    """The student file of ``sampler: distilled``: for the shipped DDPM, the shipped
    ``ddpm_cosmos64_distilled_<num_steps>step.keras``; any other path is taken as the student
    itself (its sidecar is checked when the model is loaded)."""
    from astrogen.models.ddpm_galaxy import shipped_model_path

    if Path(path).resolve() != shipped_model_path().resolve():
        return Path(path)
    folder = shipped_model_path().parent
    student = folder / f"{SHIPPED_DISTILLED}_{int(num_steps)}step.keras"
    if not student.is_file():
        have = sorted(int(p.stem.rsplit("_", 1)[1][:-4])
                      for p in folder.glob(f"{SHIPPED_DISTILLED}_*step.keras"))
        raise ConfigError(f"the shipped distilled students sample in {have} steps.",
                          key="num_steps", received={"num_steps": num_steps,
                                                     "sampler": "distilled"})
    return student


def _load_cached(path: Path):
    from astrogen.models.ddpm_galaxy import load_ddpm

    path = Path(path).resolve()
    st = path.stat()
    key = (str(path), st.st_mtime_ns, st.st_size)
    if key not in _CACHE:
        _CACHE[key] = load_ddpm(path)
    return _CACHE[key]


@register_stage("ddpm.generate")
class DDPMGenerate(Stage):
    """Galaxy light profiles sampled from a conditional diffusion model given ``mag``, ``hlr``, ``z``.

    Parameters
    ----------
    model : str
        A shipped model name (``ddpm_cosmos64``) or the path of a ``.keras`` file written by
        ``astrogen train`` (with its ``.json`` sidecar beside it).
    sampler : {"ddim", "ddpm", "dpm_solver"}
        Reverse process: deterministic DDIM (eta 0), DDPM ancestral sampling, or
        DPM-Solver++(2M).
    num_steps : int
        Network evaluations per stamp (1000 = the full DDPM chain; 25 DDIM steps is the
        default trade-off, see the docs: User guide, DDPM benchmark).
    guidance : float
        Classifier-free guidance scale (1: conditional model; 0: unconditional; > 1 stronger
        conditioning, at twice the cost).
    eta : float
        DDIM stochasticity (0: deterministic given the row's starting noise).
    batch_size : int
        Rows per network call; results do not depend on it.
    out_of_range : {"error", "clip", "allow"}
        Rows whose ``mag``, ``hlr`` or ``z`` lie outside the training range: refuse, clip into
        the range, or extrapolate.
    flux : {"model", "catalog"}
        Keep the generated flux (set by the catalog magnitude up to the model's error), or
        rescale each stamp to exactly the catalog ``mag``.
        Only for stamps that no stage observes: when ``observe`` or ``scene`` draws them
        downstream, its ``flux_from`` decides the flux (``catalog``: this key's ``catalog``;
        ``stamp``: its ``model``) and ``astrogen validate`` refuses this key.
    max_native_hlr : float or None
        Largest major-axis half-light radius ``hlr / sqrt(q)`` (arcsec) drawn in the model's
        own field; larger galaxies are generated at this size with a coarser per-stamp pixel
        scale (:mod:`astrogen.stages.generated`). ``None``: all in the native field.
    shape : {"apply", "measure"}
        Apply the catalog's ``q`` and ``beta`` to the generated stamp, or keep the model's
        shape; the measured shape is in ``gen_q``, ``gen_beta`` either way.
    edge_taper : bool
        Taper the network stamp to 0 at its border first (removes the light the network
        leaves at the edge of its field; reported in ``gen_taper_loss``).

    Output
    ------
    A StampBatch in count/s per pixel, zero point 25.94 (F814W AB), PSF-free, at the model's
    pixel scale (0.03 arcsec/pixel for ``ddpm_cosmos64``) or one per stamp for galaxies drawn
    in units of their size; the catalog gains ``gen_mag``, ``stamp_flux_frac`` (stamp flux /
    catalog flux) and the ``gen_*`` columns of :func:`astrogen.stages.generated.truth_columns`.
    """

    flux_key = "flux"

    input_types = (Table,)
    output_type = StampBatch
    uses_tensorflow = True
    units = {"num_steps": "network evaluations", "batch_size": "rows",
             "max_native_hlr": "arcsec"}
    requires_columns, provides_columns = ("mag", "hlr", "z"), ()

    def __init__(self, model: str = "ddpm_cosmos64", sampler: str = "ddim", num_steps: int = 25,
                 guidance: float = 1.0, eta: float = 0.0, batch_size: int = 16,
                 out_of_range: str = "error", flux: str = "model",
                 max_native_hlr: float | None = DDPM_MAX_NATIVE_HLR, shape: str = "apply",
                 edge_taper: bool = True):
        from astrogen.models.ddpm_galaxy import SAMPLERS

        self.sampler = check_choice("sampler", sampler, SAMPLERS)
        self.num_steps = check_int("num_steps", num_steps, minimum=1)
        self.model_path = resolve_ddpm_model(model)
        if self.sampler == "distilled":
            self.model_path = distilled_student_path(self.model_path, self.num_steps)
        self.model_name = str(model)
        try:
            self.guidance = float(guidance)
        except (TypeError, ValueError):
            self.guidance = math.nan
        if isinstance(guidance, bool) or not math.isfinite(self.guidance):
            raise ConfigError("must be a finite number.", key="guidance",
                              received={"guidance": guidance})
        if isinstance(eta, bool) or not isinstance(eta, (int, float)) or not 0 <= eta <= 1:
            raise ConfigError("must be a number in [0, 1].", key="eta", received={"eta": eta})
        if eta and sampler != "ddim":
            raise ConfigError("is only used by the ddim sampler.", key="eta",
                              received={"eta": eta, "sampler": sampler})
        self.eta = float(eta)
        self.batch_size = check_int("batch_size", batch_size, minimum=1)
        self.out_of_range = check_choice("out_of_range", out_of_range, ("error", "clip", "allow"))
        self.flux = check_choice("flux", flux, ("model", "catalog"))
        check_generated_options(self, max_native_hlr, shape, edge_taper)
        self.model = None

    def setup(self, ctx) -> None:
        super().setup(ctx)
        self.model = _load_cached(self.model_path)
        self.model.sampler(self.sampler, self.num_steps, self.eta)  # checks num_steps <= T
        self.model_sha256 = hashlib.sha256(self.model_path.read_bytes()).hexdigest()

    def _conditions(self, table: Table, hlr_factor=None) -> np.ndarray:
        from astrogen.models.ddpm_galaxy import CONDITION_COLUMNS

        require_columns(table, list(CONDITION_COLUMNS), "ddpm.generate")
        cond = np.stack([np.asarray(table[k], np.float64) for k in CONDITION_COLUMNS], axis=1)
        if hlr_factor is not None:  # galaxies drawn in units of their size
            cond[:, list(CONDITION_COLUMNS).index("hlr")] /= hlr_factor
        rng = self.model.meta.get("condition_range")
        if rng is None or self.out_of_range == "allow":
            return cond
        lo = np.array([rng[k][0] for k in CONDITION_COLUMNS])
        hi = np.array([rng[k][1] for k in CONDITION_COLUMNS])
        if self.out_of_range == "clip":
            return np.clip(cond, lo, hi)
        bad = ~((cond >= lo) & (cond <= hi))
        if bad.any():
            i, j = np.argwhere(bad)[0]
            name = CONDITION_COLUMNS[j]
            raise CatalogError(
                f"outside the range the model was trained on [{lo[j]:.4g}, {hi[j]:.4g}] "
                f"({int(bad[:, j].sum())} row(s)); set out_of_range: clip (or allow) to accept.",
                key=name, received={"row_id": int(table["row_id"][i]), name: float(cond[i, j])})
        return cond

    def _meta(self) -> dict:
        return {"generator": "ddpm.generate", "model": self.model_name,
                "model_sha256": self.model_sha256, "sampler": self.sampler,
                "num_steps": self.num_steps, "guidance": self.guidance,
                "max_native_hlr": self.max_native_hlr, "shape": self.shape,
                "edge_taper": self.edge_taper}

    def process(self, table: Table) -> StampBatch:
        """Stamps of the galaxy rows from the network; star rows (``is_star``) passed through
        with a placeholder stamp (:func:`astrogen.stages.generated.pass_stars_through`)."""
        model = self.model
        apply = self.shape == "apply" and {"q", "beta"} <= set(table.colnames)
        return pass_stars_through(table, self._generate,
                                  output_side(model.stamp_size, apply),
                                  float(model.pixel_scale), float(model.zero_point),
                                  str(model.flux_unit), "F814W", self._meta())

    def _generate(self, table: Table) -> StampBatch:
        model = self.model
        require_columns(table, ["mag", "hlr", "z"], "ddpm.generate")
        row_ids = np.asarray(table["row_id"])
        q_req, beta_req = requested_shape(table, self.shape == "apply")
        hlr_req = np.asarray(table["hlr"], np.float64)
        factor = size_scale_factors(hlr_req, 1.0 if q_req is None else q_req,
                                    self.max_native_hlr)
        cond = self._conditions(table, factor)
        seeds = row_seeds(self.ctx.seed, row_ids)
        images = model.generate(cond, seeds, sampler=self.sampler, num_steps=self.num_steps,
                                guidance=self.guidance, eta=self.eta,
                                batch_size=self.batch_size)
        images, scales, info = finish_generated(images, float(model.pixel_scale), hlr_req,
                                                factor, q_req, beta_req, q_req is not None,
                                                row_ids, "ddpm.generate",
                                                taper=self.edge_taper)
        zp = model.zero_point
        total = images.reshape(len(images), -1).sum(axis=1, dtype=np.float64)
        want = flux_from_mag(np.asarray(table["mag"], np.float64), zp)
        if self.flux == "catalog":
            scale = np.where(total > 0, want / np.where(total > 0, total, 1.0), 0.0)
            images = (images * scale[:, None, None]).astype(np.float32)
            total = total * scale
        cat = table.copy(copy_data=False)
        cat["gen_mag"] = mag_from_flux(total, zp, nonpositive=np.inf)
        cat["gen_mag"].unit = "mag"
        cat["gen_mag"].description = "AB magnitude of the generated stamp's total flux"
        cat["stamp_flux_frac"] = total / want
        cat["stamp_flux_frac"].description = "generated stamp flux / catalog flux"
        truth_columns(cat, info)
        return StampBatch(images=images,
                          pixel_scale=stamp_batch_scale(scales, float(model.pixel_scale)),
                          catalog=cat,
                          flux_unit=model.flux_unit, zero_point=zp, psf=None, band="F814W",
                          meta=self._meta())

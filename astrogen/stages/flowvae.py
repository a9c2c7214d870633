"""``flowvae.generate``: realistic PSF-free galaxy stamps from catalog properties.

The stage is interchangeable with ``galsim.parametric``: catalog rows in, a
:class:`~astrogen.batch.StampBatch` of noiseless, PSF-free light profiles out (count/s per
pixel at the model's pixel scale, COSMOS F814W zero point), so ``observe``, ``scene`` and the
output stages work unchanged. Each row's latent draw comes from that row's own seed
(``astrogen.seeds.row_seeds(stage seed, row_id)``) and rows go through the network in
fixed-size micro-batches, so an image does not depend on chunking or batch size.

References
----------
Lanusse F., Mandelbaum R., Ravanbakhsh S., et al. 2021, MNRAS 504, 5543 (arXiv:2008.03833).
"""
from __future__ import annotations

import hashlib

import numpy as np
from astropy.table import Table

from astrogen.batch import COSMOS_ZERO_POINT, StampBatch
from astrogen.catalog.columns import require_columns
from astrogen.errors import CatalogError, ConfigError
from astrogen.models.pretrained import resolve_model_path
from astrogen.physics.photometry import flux_from_mag, mag_from_flux
from astrogen.registry import register_stage
from astrogen.seeds import row_seeds
from astrogen.stages.base import Stage, check_choice, check_int, check_positive
from astrogen.stages.generated import (finish_generated, output_side, pass_stars_through,
                                       size_scale_factors, truth_columns)

__all__ = ["FlowVAEGenerate", "apply_condition_range", "requested_shape",
           "stamp_batch_scale"]

#: Largest major-axis half-light radius (arcsec) the shipped 64 x 64, 0.03"/pixel FlowVAE
#: draws in its own field; measured by benchmarks/generator_accuracy.py (``explore``): up to
#: 0.2" the measured size follows the condition (0.195" at 0.2") and the outer-ring light
#: stays at the level of small galaxies (the decoder's border frame, ~1.3 %); at 0.3" the
#: galaxy comes out 13 % small, and from 0.4" it is cut (ring light rising to 4 % at 0.9").
FLOWVAE_MAX_NATIVE_HLR = 0.2


def requested_shape(table: Table, apply: bool):
    """``(q, beta)`` columns as arrays when both are present and ``apply``; else ``(None, None)``."""
    if apply and "q" in table.colnames and "beta" in table.colnames:
        return (np.asarray(table["q"], np.float64), np.asarray(table["beta"], np.float64))
    return None, None


def stamp_batch_scale(scales: np.ndarray, native: float):
    """A float when every stamp has the model's native scale, else the per-stamp array."""
    return float(native) if np.all(scales == native) else np.asarray(scales, np.float64)


def check_max_native_hlr(value):
    """``None`` (no limit) or a positive number of arcsec."""
    if value is None:
        return None
    return check_positive("max_native_hlr", value, unit="arcsec")


def check_generated_options(stage, max_native_hlr, shape, edge_taper) -> None:
    """Check and set the options every generative stage shares (``max_native_hlr`` [arcsec],
    ``shape``, ``edge_taper``) on ``stage``."""
    stage.max_native_hlr = check_max_native_hlr(max_native_hlr)
    stage.shape = check_choice("shape", shape, ("apply", "measure"))
    if not isinstance(edge_taper, bool):
        raise ConfigError("must be true or false.", key="edge_taper",
                          received={"edge_taper": edge_taper})
    stage.edge_taper = edge_taper


def apply_condition_range(cond: np.ndarray, names, condition_range, policy: str,
                          row_ids=None) -> np.ndarray:
    """Check conditions against a model's training range.

    Parameters
    ----------
    cond : numpy.ndarray, shape (n, C)
        Conditions in physical units (columns ``names``).
    condition_range : [minima, maxima] or None
        Training range (``FlowVAE.condition_range``); ``None`` skips the check.
    policy : {"error", "clip", "allow"}
        Raise :class:`~astrogen.errors.CatalogError` naming the column, the value and the
        range; clip into the range; or pass through (extrapolation).

    Returns
    -------
    numpy.ndarray
        The (possibly clipped) conditions.
    """
    if condition_range is None or policy == "allow":
        return cond
    lo, hi = (np.asarray(v, dtype=np.float64) for v in condition_range)
    if policy == "clip":
        return np.clip(cond, lo, hi).astype(cond.dtype)
    bad = (cond < lo) | (cond > hi)
    if bad.any():
        i, j = np.argwhere(bad)[0]
        row = int(row_ids[i]) if row_ids is not None else int(i)
        raise CatalogError(
            f"outside the range the model was trained on [{lo[j]:.4g}, {hi[j]:.4g}] "
            f"({int(bad[:, j].sum())} row(s)); set out_of_range: clip (or allow) to accept.",
            key=str(names[j]), received={"row_id": row, names[j]: float(cond[i, j])})
    return cond


@register_stage("flowvae.generate")
class FlowVAEGenerate(Stage):
    """Galaxy light profiles sampled from a conditional FlowVAE given ``mag``, ``hlr``, ``z``.

    Parameters
    ----------
    model : str
        A shipped model name (``flowvae_cosmos64``) or the path of a ``.keras`` file written
        by ``astrogen train`` (with its ``.json`` sidecar beside it).
    temperature : float
        Scale of the flow's base Gaussian (1: the learned distribution; < 1: more typical).
    batch_size : int
        Rows per network call; results do not depend on it.
    out_of_range : {"error", "clip", "allow"}
        What to do with rows whose conditions lie outside the training range of the model.
    flux : {"model", "catalog"}
        Keep the flux the model generated, or rescale each stamp to the catalog ``mag``
        (the morphology stays the model's).
        Only for stamps that no stage observes: when ``observe`` or ``scene`` draws them
        downstream, its ``flux_from`` decides the flux (``catalog``: this key's ``catalog``;
        ``stamp``: its ``model``) and ``astrogen validate`` refuses this key.
    max_native_hlr : float or None
        Largest major-axis half-light radius ``hlr / sqrt(q)`` (arcsec) drawn in the model's
        own field; a larger galaxy is generated at this size and its stamp given a coarser
        pixel scale (``native * hlr / hlr_generated``), so it is not cut by the stamp edge
        (:mod:`astrogen.stages.generated`). ``None``: every galaxy in the native field.
    shape : {"apply", "measure"}
        ``apply``: give each generated galaxy the catalog's ``q`` and ``beta`` (an
        area-preserving linear map of the stamp; the network ignores them); ``measure``:
        leave the model's shape. The measured shape is in ``gen_q``, ``gen_beta`` either way.
    edge_taper : bool
        Taper the network stamp to 0 at its border first (removes the light the network
        leaves at the edge of its field; reported in ``gen_taper_loss``).

    Output
    ------
    A StampBatch in count/s per pixel, zero point 25.94 (F814W AB), PSF-free, with the pixel
    scale of the model (0.03 arcsec/pixel for ``flowvae_cosmos64``) or, for galaxies drawn in
    units of their size, one per stamp; the catalog gains ``gen_mag`` (mag AB of the stamp's
    total flux), ``stamp_flux_frac`` (stamp flux / catalog flux) and the ``gen_*`` columns of
    :func:`astrogen.stages.generated.truth_columns` (pixel scale, conditioned hlr, flags,
    measured hlr, q, beta, outer-ring light).
    """

    flux_key = "flux"

    input_types = (Table,)
    output_type = StampBatch
    uses_tensorflow = True
    units = {"temperature": "", "batch_size": "rows", "max_native_hlr": "arcsec"}
    requires_columns, provides_columns = ("mag", "hlr", "z"), ()

    def __init__(self, model: str = "flowvae_cosmos64", temperature: float = 1.0,
                 batch_size: int = 32, out_of_range: str = "error", flux: str = "model",
                 max_native_hlr: float | None = FLOWVAE_MAX_NATIVE_HLR, shape: str = "apply",
                 edge_taper: bool = True):
        self.model_path = resolve_model_path(model, "flowvae")
        self.model_name = str(model)
        self.temperature = check_positive("temperature", temperature, allow_zero=True)
        self.batch_size = check_int("batch_size", batch_size, minimum=1)
        self.out_of_range = check_choice("out_of_range", out_of_range, ("error", "clip", "allow"))
        self.flux = check_choice("flux", flux, ("model", "catalog"))
        check_generated_options(self, max_native_hlr, shape, edge_taper)
        self.model = None

    def setup(self, ctx) -> None:
        super().setup(ctx)
        from astrogen.models.flowvae import load_flowvae
        from astrogen.models.pretrained import cached_model

        self.model = cached_model(self.model_path, load_flowvae)
        self.model_sha256 = hashlib.sha256(self.model_path.read_bytes()).hexdigest()

    def _meta(self) -> dict:
        return {"generator": "flowvae.generate", "model": self.model_name,
                "model_sha256": self.model_sha256, "temperature": self.temperature,
                "max_native_hlr": self.max_native_hlr, "shape": self.shape,
                "edge_taper": self.edge_taper}

    def process(self, table: Table) -> StampBatch:
        """Stamps of the galaxy rows from the network; star rows (``is_star``) passed through
        with a placeholder stamp (:func:`astrogen.stages.generated.pass_stars_through`)."""
        model = self.model
        apply = self.shape == "apply" and {"q", "beta"} <= set(table.colnames)
        return pass_stars_through(table, self._generate,
                                  output_side(model.stamp_size, apply),
                                  float(model.pixel_scale), COSMOS_ZERO_POINT,
                                  str(model.flux_unit), "F814W", self._meta())

    def _generate(self, table: Table) -> StampBatch:
        model = self.model
        require_columns(table, list(model.condition_names), "flowvae.generate")
        row_ids = np.asarray(table["row_id"])
        cond = np.array(model.condition_array(table), copy=True)
        names = list(model.condition_names)
        q_req, beta_req = requested_shape(table, self.shape == "apply")
        if "hlr" in names:
            ih = names.index("hlr")
            hlr_req = np.asarray(cond[:, ih], np.float64)
            factor = size_scale_factors(hlr_req, 1.0 if q_req is None else q_req,
                                        self.max_native_hlr)
            cond[:, ih] = (hlr_req / factor).astype(cond.dtype)
        else:
            hlr_req, factor = np.full(len(table), np.nan), np.ones(len(table))
        cond = apply_condition_range(cond, model.condition_names, model.condition_range,
                                     self.out_of_range, row_ids)
        seeds = row_seeds(self.ctx.seed, row_ids)
        images = model.generate(cond, seeds, temperature=self.temperature,
                                batch_size=self.batch_size)
        images, scales, info = finish_generated(images, float(model.pixel_scale), hlr_req,
                                                factor, q_req, beta_req, q_req is not None,
                                                row_ids, "flowvae.generate",
                                                taper=self.edge_taper)
        total = images.reshape(len(images), -1).sum(axis=1, dtype=np.float64)
        zp = COSMOS_ZERO_POINT
        cat = table.copy(copy_data=False)
        want = (flux_from_mag(np.asarray(table["mag"], float), zp)
                if "mag" in table.colnames else None)
        if self.flux == "catalog":
            require_columns(table, ["mag"], "flowvae.generate (flux: catalog)")
            scale = np.where(total > 0, want / np.where(total > 0, total, 1.0), 0.0)
            images = (images * scale[:, None, None]).astype(np.float32)
            total = total * scale
        cat["gen_mag"] = mag_from_flux(total, zp, nonpositive=np.inf)
        cat["gen_mag"].unit = "mag"
        cat["gen_mag"].description = "AB magnitude of the generated stamp's total flux"
        if want is not None:
            cat["stamp_flux_frac"] = total / want
            cat["stamp_flux_frac"].description = "generated stamp flux / catalog flux"
        truth_columns(cat, info)
        return StampBatch(images=images,
                          pixel_scale=stamp_batch_scale(scales, float(model.pixel_scale)),
                          catalog=cat,
                          flux_unit=str(model.flux_unit), zero_point=zp, psf=None, band="F814W",
                          meta=self._meta())

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
from astrogen.errors import CatalogError
from astrogen.models.pretrained import resolve_model_path
from astrogen.registry import register_stage
from astrogen.seeds import row_seeds
from astrogen.stages.base import Stage, check_choice, check_int, check_positive

__all__ = ["FlowVAEGenerate", "apply_condition_range"]


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

    Output
    ------
    A StampBatch in count/s per pixel, zero point 25.94 (F814W AB), pixel scale of the model
    (0.03 arcsec/pixel for ``flowvae_cosmos64``), PSF-free; the catalog gains ``gen_mag``
    (mag AB of the stamp's total flux) and ``stamp_flux_frac`` (stamp flux / catalog flux).
    """

    input_types = (Table,)
    output_type = StampBatch
    uses_tensorflow = True
    units = {"temperature": "", "batch_size": "rows"}
    requires_columns, provides_columns = ("mag", "hlr", "z"), ()

    def __init__(self, model: str = "flowvae_cosmos64", temperature: float = 1.0,
                 batch_size: int = 32, out_of_range: str = "error", flux: str = "model"):
        self.model_path = resolve_model_path(model, "flowvae")
        self.model_name = str(model)
        self.temperature = check_positive("temperature", temperature, allow_zero=True)
        self.batch_size = check_int("batch_size", batch_size, minimum=1)
        self.out_of_range = check_choice("out_of_range", out_of_range, ("error", "clip", "allow"))
        self.flux = check_choice("flux", flux, ("model", "catalog"))
        self.model = None

    def setup(self, ctx) -> None:
        super().setup(ctx)
        from astrogen.models.flowvae import load_flowvae
        from astrogen.models.pretrained import cached_model

        self.model = cached_model(self.model_path, load_flowvae)
        self.model_sha256 = hashlib.sha256(self.model_path.read_bytes()).hexdigest()

    def process(self, table: Table) -> StampBatch:
        model = self.model
        require_columns(table, list(model.condition_names), "flowvae.generate")
        row_ids = np.asarray(table["row_id"])
        cond = model.condition_array(table)
        cond = apply_condition_range(cond, model.condition_names, model.condition_range,
                                     self.out_of_range, row_ids)
        seeds = row_seeds(self.ctx.seed, row_ids)
        images = model.generate(cond, seeds, temperature=self.temperature,
                                batch_size=self.batch_size)
        total = images.reshape(len(images), -1).sum(axis=1, dtype=np.float64)
        zp = COSMOS_ZERO_POINT
        cat = table.copy(copy_data=False)
        want = (10.0 ** (-0.4 * (np.asarray(table["mag"], float) - zp))
                if "mag" in table.colnames else None)
        if self.flux == "catalog":
            require_columns(table, ["mag"], "flowvae.generate (flux: catalog)")
            scale = np.where(total > 0, want / np.where(total > 0, total, 1.0), 0.0)
            images = (images * scale[:, None, None]).astype(np.float32)
            total = total * scale
        with np.errstate(divide="ignore"):
            cat["gen_mag"] = np.where(total > 0, zp - 2.5 * np.log10(np.where(total > 0, total, 1)),
                                      np.inf)
        cat["gen_mag"].unit = "mag"
        cat["gen_mag"].description = "AB magnitude of the generated stamp's total flux"
        if want is not None:
            cat["stamp_flux_frac"] = total / want
            cat["stamp_flux_frac"].description = "generated stamp flux / catalog flux"
        return StampBatch(images=images, pixel_scale=float(model.pixel_scale), catalog=cat,
                          flux_unit=str(model.flux_unit), zero_point=zp, psf=None, band="F814W",
                          meta={"generator": "flowvae.generate", "model": self.model_name,
                                "model_sha256": self.model_sha256,
                                "temperature": self.temperature})

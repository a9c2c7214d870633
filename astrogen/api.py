"""The public Python API of astrogen: models by name, GalSim objects, deblending, pipelines.

Everything here is re-exported by the package, lazily (``import astrogen`` imports neither
TensorFlow, nor GalSim, nor astropy; they are imported by the first call that needs them)::

    import astrogen

    model = astrogen.load_model("flowvae_cosmos64")        # a shipped model, or a .keras file
    gals = model.sample(mag=[22.0, 23.5], hlr=[0.3, 0.2], z=[0.5, 1.1], seed=7)
    gals[0]                         # galsim.InterpolatedImage, arcsec, flux in count/s
    img = galsim.Convolve(gals[0], psf).drawImage(scale=0.2)

    result = astrogen.run("pipelines/parametric_mock.yaml", overrides=["seed=3"])
    result = astrogen.deblend(image, pixel_scale=0.2, bands=["g", "r", "i", "z"])  # SceneResult

Same rows, same pixels
----------------------
:func:`sample` does not re-implement the generators: it builds the registered generator stage
(``flowvae.generate``, ``ddpm.generate`` or ``galsim.parametric``) and calls its ``process``
on the rows, exactly as the pipeline runner does. Every random draw of a row depends only on
``(pipeline seed, stage name, row_id)`` (:mod:`astrogen.seeds`): the runner gives a stage the
seed ``derive_seed(pipeline seed, stage name)``, and :func:`sample` gives it
``derive_seed(seed, stage_name)``. So ``sample(model, rows, seed=s, stage_name="generate")``
returns the pixels that a pipeline with ``seed: s`` whose generator stage is named
``generate`` writes for rows with the same ``row_id`` (``catalog.read`` numbers a file's rows
0, 1, 2...; :func:`sample` does the same when the table has no ``row_id`` column), whatever
the chunk size or executor of that pipeline.
"""
from __future__ import annotations

import copy
import json
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from astrogen.errors import ConfigError, ModelError, suggest

__all__ = ["Model", "ModelKind", "SHIPPED_MODELS", "COMPANION_FILES", "shipped_models", "load_model", "sample",
           "galsim_objects", "deblend", "run", "CallableModule"]


@dataclass(frozen=True)
class ModelKind:
    """What a kind of model is used for.

    Attributes
    ----------
    stage : str
        Registered stage type that runs it (``flowvae.generate``...).
    generator : bool
        The stage turns catalog rows (``mag``, ``hlr``, ``z``...) into PSF-free galaxy stamps:
        usable with :func:`sample`.
    loader : str or None
        ``"module:function"`` that loads the network from its file (``None``: no weights).
    shipped_value : str or None
        Value of the stage's ``model`` parameter for the shipped weights when it is not the
        model's name (the deblenders take ``"shipped"``).
    """

    stage: str
    generator: bool
    loader: str | None
    shipped_value: str | None = None


#: Model kinds by name (the ``format`` of a model's ``.json`` sidecar without its
#: ``astrogen.`` prefix and version, or the Keras class of a segmenter file).
KINDS: dict[str, ModelKind] = {
    "flowvae": ModelKind("flowvae.generate", True, "astrogen.models.flowvae:load_flowvae"),
    "ddpm": ModelKind("ddpm.generate", True, "astrogen.models.ddpm_galaxy:load_ddpm"),
    "parametric": ModelKind("galsim.parametric", True, None),
    "nbody_gan": ModelKind("nbody.emulate", False, "astrogen.models.nbody_gan:load_nbody_gan"),
    "halo_unet": ModelKind("nbody.halo_map", False, "astrogen.models.halo_unet:load_halo_unet"),
    "d3m": ModelKind("nbody.displace", False, "astrogen.models.d3m:load_d3m"),
    "halo_vnet": ModelKind("nbody.halos3d", False, "astrogen.models.halo_vnet:load_halo_vnet"),
    "unet": ModelKind("deblend.unet", False, None, shipped_value="shipped"),
    "prob_unet": ModelKind("deblend.prob_unet", False, None, shipped_value="shipped"),
    "baryon_painter": ModelKind("baryons.paint", False,
                                "astrogen.models.baryon_painter:load_baryon_painter"),
    "scene_deblender": ModelKind("deblend.scene", False,
                                 "astrogen.models.scene_deblender:load_scene_deblender",
                                 shipped_value="shipped"),
}

#: Shipped models: name -> (kind, file in ``astrogen/data/models``, what it is). ``parametric``
#: has no weights (GalSim Sersic or bulge+disk profiles drawn from the catalog's columns).
SHIPPED_MODELS: dict[str, tuple[str, str | None, str]] = {
    "flowvae_cosmos64": ("flowvae", "flowvae_cosmos64.keras",
                         "conditional FlowVAE, 64x64 PSF-free HST/COSMOS-like galaxies at 0.03 "
                         "arcsec/pixel (F814W count/s, zero point 25.94) from mag, hlr, z"),
    "ddpm_cosmos64": ("ddpm", "ddpm_cosmos64.keras",
                      "conditional diffusion model, same stamps and conditions as "
                      "flowvae_cosmos64"),
    "parametric": ("parametric", None,
                   "GalSim Sersic (sersic_n) or bulge+disk (bulge_frac) profiles from the "
                   "catalog's mag, hlr, q, beta"),
    "nbody_gan_32": ("nbody_gan", "nbody_gan_32.keras",
                     "N-body WGAN-GP emulator: linear 3-D field -> projected density slab"),
    "halo_unet_32": ("halo_unet", "halo_unet_32.keras",
                     "U-Net: projected density slab -> halo map and catalog"),
    "d3m_32": ("d3m", "d3m_32.keras",
               "D3M displacement emulator: Zel'dovich displacement -> z = 0 particles (3-D)"),
    "d3m_64": ("d3m", "d3m_64.keras",
               "D3M d3m_32 continued on 128 Mpc/h boxes (the default of nbody.displace)"),
    "halo_vnet_32": ("halo_vnet", "halo_vnet_32.keras",
                     "3-D halo V-Net: linear field on a 32^3 lattice -> protohalo mask + sizes"),
    "unet_blends": ("unet", "unet_blends.keras",
                    "deblending U-Net (classes + light fractions) for HST-like 0.06 "
                    "arcsec/pixel blends"),
    "prob_unet_blends": ("prob_unet", "prob_unet_blends.keras",
                         "probabilistic U-Net deblender with a per-pixel uncertainty map"),
    "baryon_painter_64": ("baryon_painter", "baryon_painter_64.keras",
                          "3-D conditional VAE: dark-matter box (1 Mpc/h cells, z = 0) -> "
                          "gas density, temperature, electron pressure, total matter"),
    "scene_deblender_lsst": ("scene_deblender", "scene_deblender_lsst.keras",
                             "whole-scene deblender for LSST g r i z at 0.2 arcsec/pixel "
                             "(detection-conditioned cut-out U-Net, MC dropout)"),
}

#: Shipped files that belong to a named model instead of being one: the distilled few-step
#: students of ``ddpm_cosmos64``, which ``ddpm.generate`` picks by ``sampler: distilled`` and
#: ``num_steps`` (file -> how they are used).
COMPANION_FILES: dict[str, str] = {
    f"ddpm_cosmos64_distilled_{n}step.keras":
        f"ddpm_cosmos64 with sampler: distilled, num_steps: {n}" for n in (1, 2, 4)
}
_ALIASES = {"galsim.parametric": "parametric", "sersic": "parametric"}


def shipped_models() -> dict[str, str]:
    """Names of the shipped models and what each is (``name -> description``)."""
    return {name: f"{kind}: {what}" for name, (kind, _, what) in SHIPPED_MODELS.items()}


def _kind_of_file(path: Path) -> str:
    """Kind of a trained model file, from its ``.json`` sidecar or the Keras class inside."""
    sidecar = path.with_suffix(".json")
    if sidecar.is_file():
        try:
            fmt = str(json.loads(sidecar.read_text()).get("format", ""))
        except (OSError, ValueError):
            fmt = ""
        kind = fmt.removeprefix("astrogen.").split("/")[0]
        kind = {"ddpm_galaxy": "ddpm"}.get(kind, kind)
        if kind in KINDS:
            return kind
    import zipfile

    try:
        with zipfile.ZipFile(path) as z:
            cls = json.loads(z.read("config.json")).get("class_name", "")
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        cls = ""
    kind = {"UNet": "unet", "ProbUNet": "prob_unet"}.get(cls)
    if kind is None:
        raise ModelError("is not an astrogen model file: no .json sidecar with a known "
                         f"'format' ({', '.join(k for k in KINDS if k != 'parametric')}) and "
                         "no segmenter inside.", key="model", received={"model": str(path)})
    return kind


class Model:
    """A shipped or trained model: what it is, where its weights are, how to run it.

    Made by :func:`load_model`. The network itself is loaded on first use (:attr:`network`,
    :meth:`sample`), once per process.

    Attributes
    ----------
    name : str
        Shipped name, or the file's stem for a trained model.
    kind : str
        ``flowvae``, ``ddpm``, ``parametric``, ``nbody_gan``, ``halo_unet``, ``unet`` or
        ``prob_unet`` (see :data:`KINDS`).
    path : pathlib.Path or None
        The ``.keras`` file (``None`` for ``parametric``).
    stage : str
        Registered stage type that runs the model in a pipeline.
    stage_model : str or None
        Value to give that stage's ``model`` parameter.
    description : str
        One line about the model.
    meta : dict
        The ``.json`` sidecar (training configuration, pixel scale, condition ranges...);
        empty when there is none.
    """

    def __init__(self, name: str, kind: str, path: Path | None, stage_model: str | None,
                 description: str = ""):
        self.name = name
        self.kind = kind
        self.path = path
        self.stage = KINDS[kind].stage
        self.stage_model = stage_model
        self.description = description
        sidecar = path.with_suffix(".json") if path is not None else None
        self.meta: dict = (json.loads(sidecar.read_text())
                           if sidecar is not None and sidecar.is_file() else {})
        self._network = None

    @property
    def generator(self) -> bool:
        """True for galaxy generators (usable with :meth:`sample`)."""
        return KINDS[self.kind].generator

    @property
    def pixel_scale(self) -> float | None:
        """Pixel scale of the generated stamps in arcsec / pixel (``None`` if not fixed)."""
        value = self.meta.get("pixel_scale")
        return float(value) if value is not None else None

    @property
    def conditions(self) -> list[str]:
        """Catalog columns the model is conditioned on (``mag`` [AB], ``hlr`` [arcsec], ``z``)."""
        if self.kind == "ddpm":
            return list(self.meta.get("condition_columns", ["mag", "hlr", "z"]))
        if self.kind == "flowvae":
            cfg = self.meta.get("config", {})
            return list(cfg.get("condition_names", ["mag", "hlr", "z"]))
        if self.kind == "parametric":
            return ["mag", "hlr", "q", "beta", "sersic_n"]
        return []

    @property
    def network(self):
        """The loaded network (Keras model or astrogen model class); TensorFlow is imported.

        Raises
        ------
        ModelError
            For ``parametric``, which has no network.
        """
        if self._network is None:
            if self.kind == "parametric":
                raise ModelError("has no network (GalSim profiles).", key="model",
                                 received={"model": self.name})
            from astrogen.tf_quiet import import_tensorflow_quietly

            import_tensorflow_quietly()
            if self.kind in ("unet", "prob_unet"):
                from astrogen.deblend.segment import load_segmenter

                self._network = load_segmenter(str(self.path), self.kind)
            else:
                import importlib

                from astrogen.models.pretrained import cached_model

                module, func = KINDS[self.kind].loader.split(":")
                self._network = cached_model(self.path,
                                             getattr(importlib.import_module(module), func))
        return self._network

    def make_stage(self, **stage_options):
        """A new instance of :attr:`stage` running this model (not set up).

        Parameters
        ----------
        **stage_options
            Other parameters of the stage (``temperature``, ``num_steps``...; see
            ``astrogen stages``).
        """
        import astrogen.stages  # noqa: F401  (registers the built-in stage types)
        from astrogen.registry import STAGES

        cls = STAGES.get(self.stage)
        if "model" in stage_options:
            raise ConfigError("is set by the model given to sample; pass another model "
                              "instead.", key="model", received={"model": stage_options["model"]})
        valid = cls.parameters()
        for k in stage_options:
            if k not in valid:
                raise ConfigError(f"is not a parameter of stage type '{self.stage}'."
                                  f"{suggest(k, valid)} Valid: "
                                  f"{', '.join(p for p in valid if p != 'model')}.", key=k,
                                  received={k: stage_options[k]})
        if self.stage_model is not None:
            stage_options = {"model": self.stage_model, **stage_options}
        return cls(**stage_options)

    def sample(self, table=None, **kwargs):
        """Galaxies of this model: :func:`sample` with ``model=self``."""
        return sample(self, table, **kwargs)

    def __repr__(self) -> str:
        where = f", path='{self.path}'" if self.path is not None else ""
        return f"Model(name='{self.name}', kind='{self.kind}', stage='{self.stage}'{where})"


def load_model(name_or_path) -> Model:
    """A shipped model by name, or a model file written by ``astrogen train``.

    Parameters
    ----------
    name_or_path : str, pathlib.Path or Model
        A name of :data:`SHIPPED_MODELS` (``flowvae_cosmos64``, ``ddpm_cosmos64``,
        ``parametric``, ``nbody_gan_32``, ``halo_unet_32``, ``d3m_32``, ``d3m_64``, ``unet_blends``,
        ``prob_unet_blends``) or the path of a ``.keras`` file (its kind is read from the
        ``.json`` sidecar beside it, or from the segmenter class inside).

    Returns
    -------
    Model
        The network is not loaded yet (TensorFlow is not imported): see :attr:`Model.network`.

    Raises
    ------
    ModelError
        An unknown name (the message lists the shipped names), a missing file, or a file
        that is not an astrogen model.
    """
    if isinstance(name_or_path, Model):
        return name_or_path
    if not isinstance(name_or_path, (str, Path)):
        raise ModelError("must be a shipped model name or the path of a .keras file.",
                         key="model", received={"model": name_or_path})
    name = _ALIASES.get(str(name_or_path), str(name_or_path))
    if name in SHIPPED_MODELS:
        from astrogen.models.pretrained import models_dir

        kind, file, what = SHIPPED_MODELS[name]
        path = None
        if file is not None:
            path = models_dir() / file
            if not path.is_file():
                raise ModelError("the shipped weights are missing from the installation "
                                 "(see astrogen/data/models/README.md for the command that "
                                 "retrains them).", key="model",
                                 received={"model": name, "expected file": str(path)})
        stage_model = None if kind == "parametric" else (KINDS[kind].shipped_value or name)
        return Model(name, kind, path, stage_model, what)
    path = Path(name).expanduser()
    if path.suffix == ".json":
        path = path.with_suffix(".keras")
    if path.suffix == ".keras" and path.is_file():
        kind = _kind_of_file(path)
        return Model(path.stem, kind, path, str(path), f"{kind} model trained by the user")
    raise ModelError(f"is neither a shipped model nor an existing .keras file."
                     f"{suggest(name, SHIPPED_MODELS)} Shipped: {', '.join(SHIPPED_MODELS)}.",
                     key="model", received={"model": name})


# ----------------------------------------------------------------------------------- sample
_UNITS = {"hlr": "arcsec", "beta": "deg"}


def _values(name: str, value):
    """A column as a float array in astrogen's unit (astropy Quantity accepted)."""
    import numpy as np

    unit = getattr(value, "unit", None)
    if unit is not None:
        import astropy.units as u

        try:
            if name == "mag" or (name.startswith("mag_")):
                value = u.Quantity(value).to_value(u.ABmag) if unit != u.mag else value.value
            elif name in _UNITS:
                value = u.Quantity(value).to_value(_UNITS[name])
            elif unit != u.dimensionless_unscaled:
                raise u.UnitConversionError(str(unit))
            else:
                value = u.Quantity(value).value
        except u.UnitConversionError:
            want = _UNITS.get(name, "AB mag" if name.startswith("mag") else "a number")
            raise ConfigError(f"has unit '{unit}', which cannot be converted to {want}.",
                              key=name, received={name: str(unit)}) from None
    try:
        return np.atleast_1d(np.asarray(value, dtype=np.float64))
    except (TypeError, ValueError):
        raise ConfigError("must be a number or an array of numbers.", key=name,
                          received={name: value}) from None


def _rows(table, columns: dict) -> Any:
    """An astropy Table with canonical units and a ``row_id`` from ``table`` or arrays."""
    import numpy as np
    from astropy.table import Table

    given = {k: v for k, v in columns.items() if v is not None}
    if table is not None and given:
        raise ConfigError("give either a table or column arrays (mag=, hlr=, z=...), not "
                          "both.", key="table", received={"columns": sorted(given)})
    if table is None:
        if not given:
            raise ConfigError("needs rows: a table, or arrays such as mag=, hlr=, z=.",
                              key="table")
        arrays = {k: _values(k, v) for k, v in given.items()}
        n = next((len(a) for a in arrays.values() if len(a) != 1), 1)
        for k, a in arrays.items():
            if len(a) not in (1, n):
                raise ConfigError(f"has {len(a)} values; the other columns have {n}.", key=k,
                                  received={k: len(a)})
        out = Table({k: np.broadcast_to(a, (n,)).copy() for k, a in arrays.items()})
    else:
        if not isinstance(table, Table):
            if hasattr(table, "columns") and hasattr(table, "to_numpy"):  # pandas
                table = Table.from_pandas(table)
            else:
                try:
                    table = Table(table)
                except (TypeError, ValueError) as exc:
                    raise ConfigError(f"must be an astropy Table (or a dict of columns, a "
                                      f"structured array, a pandas DataFrame): {exc}",
                                      key="table",
                                      received={"table": type(table).__name__}) from None
        out = table.copy(copy_data=True)
        for name in out.colnames:
            if name in ("mag", "hlr", "beta") and getattr(out[name], "unit", None) is not None:
                values = _values(name, out[name].quantity if hasattr(out[name], "quantity")
                                 else out[name])
                out[name] = values
    if "row_id" not in out.colnames:
        out["row_id"] = np.arange(len(out), dtype=np.int64)
    for name in ("mag", "hlr", "beta"):
        if name in out.colnames:
            out[name].unit = {"mag": "mag", "hlr": "arcsec", "beta": "deg"}[name]
    from astrogen.catalog.columns import validate_columns

    validate_columns(out)
    return out


def sample(model, table=None, *, mag=None, hlr=None, z=None, q=None, beta=None, seed: int = 0,
           stage_name: str = "generate", as_galsim: bool = True,
           zero_point: float | None = None, **stage_options):
    """Galaxies drawn by a generator, as GalSim objects (galsim_hub-like) or a StampBatch.

    Parameters
    ----------
    model : str, pathlib.Path or Model
        ``flowvae_cosmos64``, ``ddpm_cosmos64``, ``parametric``, a generator trained with
        ``astrogen train`` (``.keras`` path), or a :class:`Model` from :func:`load_model`.
    table : astropy.table.Table, optional
        Catalog rows with the model's columns (:attr:`Model.conditions`): ``mag`` (AB,
        HST F814W), ``hlr`` (arcsec, PSF-free half-light radius), ``z``; ``parametric`` also
        needs ``q``, ``beta`` (deg) and ``sersic_n`` (or ``bulge_frac``). Columns with astropy
        units are converted. ``row_id`` (int) seeds each row; default 0, 1, 2...
        A dict of columns, a structured array or a pandas DataFrame is accepted too.
    mag, hlr, z, q, beta : float, array_like or astropy.units.Quantity, optional
        The columns as arrays instead of ``table`` (scalars are broadcast): ``mag`` in AB
        mag, ``hlr`` in arcsec (or any angle Quantity), ``z`` redshift, ``q`` axis ratio b/a,
        ``beta`` position angle in deg (or any angle Quantity).
    seed : int
        Pipeline seed (see the module docstring: same pixels as a pipeline with this seed).
    stage_name : str
        Name of the generator stage in that pipeline (it enters the stage seed).
    as_galsim : bool
        Return GalSim objects (default) or the :class:`~astrogen.batch.StampBatch`.
    zero_point : float, optional
        AB magnitude of a source of flux 1 in the returned objects' flux unit. Default: the
        stamps' own (25.94 for the shipped models: count/s in HST F814W).
    **stage_options
        Parameters of the generator stage (``temperature``, ``flux``, ``num_steps``,
        ``sampler``, ``out_of_range``, ``profile``...; ``astrogen stages`` lists them).

    Returns
    -------
    list of galsim.InterpolatedImage or StampBatch
        One PSF-free light profile per row: a quintic-interpolated image of the stamp at the
        stamp's own pixel scale (``StampBatch.pixel_scales``, arcsec), sizes in arcsec, with
        flux ``F = sum(stamp) * 10**(0.4 * (zero_point - stamp_zero_point))``, so that
        ``mag = zero_point - 2.5 log10(F)`` is the generated galaxy's AB magnitude (the
        catalog ``mag`` itself with ``flux="catalog"``; ``gen_mag`` of the batch's catalog
        otherwise). Convolve it with a PSF and draw it with ``method="auto"`` (the stamps
        are surface-brightness samples, not pixel-integrated). With ``as_galsim=False``:
        the StampBatch the generator stage returns, catalog columns included.

    Raises
    ------
    ModelError
        ``model`` is unknown or not a galaxy generator.
    ConfigError
        An unknown stage option or a bad column value (the message names it).
    CatalogError
        A missing column or a value outside the model's training range (named).
    """
    import tempfile

    import numpy as np

    m = load_model(model)
    if not m.generator:
        gens = [n for n, (k, _, _) in SHIPPED_MODELS.items() if KINDS[k].generator]
        raise ModelError(f"is a {m.kind} model, not a galaxy generator; sample takes "
                         f"{', '.join(gens)} or a trained flowvae/ddpm file.", key="model",
                         received={"model": m.name})
    rows = _rows(table, {"mag": mag, "hlr": hlr, "z": z, "q": q, "beta": beta})
    stage = m.make_stage(**stage_options)
    if stage.uses_tensorflow:
        from astrogen.tf_quiet import import_tensorflow_quietly

        import_tensorflow_quietly()
    from astrogen.seeds import derive_seed
    from astrogen.stages.base import StageContext

    with tempfile.TemporaryDirectory(prefix="astrogen-sample-") as tmp:
        ctx = StageContext(name=stage_name, seed=derive_seed(int(seed), stage_name),
                           output_dir=Path(tmp), work_dir=Path(tmp))
        stage.setup(ctx)
        batch = stage.process(rows)
    if not as_galsim:
        return batch
    return galsim_objects(batch, zero_point=zero_point)


def galsim_objects(batch, zero_point: float | None = None) -> list:
    """GalSim objects of the PSF-free stamps of a :class:`~astrogen.batch.StampBatch`.

    Parameters
    ----------
    batch : StampBatch
        PSF-free stamps (surface-brightness samples, ``flux_unit`` per pixel), from
        :func:`sample` with ``as_galsim=False`` or from any generator stage.
    zero_point : float, optional
        AB magnitude of a source of flux 1 in the objects' flux unit (default: the batch's
        ``zero_point``, 25.94 for count/s in HST F814W).

    Returns
    -------
    list of galsim.GSObject
        One per stamp. Where the batch carries an exact profile (``batch.profiles``, as
        ``galsim.parametric`` does), that profile (its whole flux: the catalog magnitude),
        times ``10**(0.4 * (zero_point - batch.zero_point))``; otherwise a
        :class:`galsim.InterpolatedImage`: quintic interpolation of the stamp at its own
        pixel scale (``batch.pixel_scales[i]`` arcsec / pixel, so sizes are in arcsec), with
        flux ``sum(stamp) * 10**(0.4 * (zero_point - batch.zero_point))``.

    Raises
    ------
    ModelError
        A stamp with no positive flux (named by its ``row_id``).
    """
    import numpy as np

    from astrogen.physics.observe import intrinsic_profile

    from astrogen.physics.photometry import flux_from_mag

    # the flux at ``zero_point`` of 1 unit at the batch's zero point
    factor = 1.0 if zero_point is None else flux_from_mag(float(batch.zero_point),
                                                          float(zero_point))
    out = []
    profiles = batch.profiles or [None] * len(batch)
    for i, scale in enumerate(batch.pixel_scales):
        stamp = batch.images[i]
        total = (profiles[i].flux if profiles[i] is not None
                 else float(np.sum(stamp, dtype=np.float64)))
        obj = intrinsic_profile(stamp, float(scale), total * factor, profile=profiles[i])
        if obj is None:
            raise ModelError("generated an empty stamp (no positive flux).", key="model",
                             received={"row_id": int(batch.catalog["row_id"][i])})
        out.append(obj)
    return out


# ---------------------------------------------------------------------------------- deblend
def deblend(image, noise_sigma=None, method: str = "unet", *, pixel_scale=None, bands=None,
            wcs=None, psf=None, model: str = "shipped", survey: str = "lsst",
            n_samples: int = 16, seed: int = 0, flux_unit=None, detect_params=None):
    """Detect and deblend every object of a survey scene (any size, 1 to C bands).

    ``astrogen.deblend(...)`` calls it too (the ``astrogen.deblend`` package is callable).
    This is :func:`astrogen.deblend.survey.deblend_survey_scene`: SEP detection on the
    noise-weighted detection image of all bands, then the shipped detection-conditioned
    network (``unet``; ``prob_unet``: its MC-dropout samples with calibrated per-pixel
    uncertainty) or the SEP baseline (``sep``), fluxes per band by redistribution.

    Parameters
    ----------
    image : array_like, shape (H, W), (H, W, C) or (C, H, W)
        Background-subtracted scene; the band axis is the one with ``len(bands)`` entries
        (ambiguous or no such axis: :class:`~astrogen.errors.ConfigError` naming ``bands``).
        A 3-D array is never read as a stack of scenes.
    noise_sigma : float or array (C,), optional
        Background noise per band, image units (estimated robustly when omitted).
    method : {"unet", "prob_unet", "sep"}
    pixel_scale : float
        Pixel scale of the image, arcsec/pixel (required). Outside the model's range
        (its card's ``pixel_scale`` +- ``pixel_scale_tolerance``) the call is refused with a
        ConfigError naming ``pixel_scale``: resample the image first.
    bands : list of str
        Band names in the order of the image's band axis (required): the model's bands
        (``lsst_g`` or ``g`` ...), in any order.
    wcs : astropy.wcs.WCS, optional
        Celestial WCS; gives ``ra``/``dec`` in the catalog.
    psf : float, dict or galsim.GSObject, optional
        PSF (FWHM in arcsec, GalSim config or object): detection filter, and checked against
        the model's (a factor 1.5 at most); default the model's.
    model : str
        ``"shipped"`` (the ``survey``'s shipped model) or a ``.keras`` path.
    n_samples, seed : int
        MC-dropout samples of ``prob_unet`` and their seed.
    flux_unit : str or astropy unit, optional
        Unit of the image, recorded on the flux columns.
    detect_params : dict, optional
        Overrides of :data:`astrogen.deblend.scene.DETECT_DEFAULTS`.

    Returns
    -------
    astrogen.deblend.result.SceneResult
        Catalog (``id``, ``x``, ``y``, ``peak_x``, ``peak_y``, ``ra``, ``dec``,
        ``flux_<band>``, ``flux_err_<band>``), instance map, light fractions, uncertainty
        (``prob_unet``), bands, pixel scale, WCS, method and the model's card.
    """
    from astrogen.deblend.survey import deblend_survey_scene

    if pixel_scale is None:
        raise ConfigError("is required: the pixel scale of the image in arcsec/pixel.",
                          key="pixel_scale")
    if bands is None:
        raise ConfigError("is required: the band names, in the order of the image's band "
                          "axis.", key="bands")
    if method in ("unet", "prob_unet") and "tensorflow" not in __import__("sys").modules:
        from astrogen.tf_quiet import import_tensorflow_quietly

        import_tensorflow_quietly()
    return deblend_survey_scene(image, pixel_scale=pixel_scale, bands=bands, method=method,
                                model=model, survey=survey, wcs=wcs, psf=psf,
                                noise_sigma=noise_sigma, n_samples=n_samples, seed=seed,
                                flux_unit=flux_unit, detect_params=detect_params)


class CallableModule(types.ModuleType):
    """Module type of the ``astrogen.deblend`` package: calling it calls :func:`deblend`.

    So ``astrogen.deblend(image, ...)`` works whether or not a submodule such as
    ``astrogen.deblend.metrics`` was imported first (an import sets the package attribute
    ``astrogen.deblend`` to the package module, which would shadow a plain function).
    """

    def __call__(self, image, noise_sigma=None, method: str = "unet", **kwargs):
        """Deblend a scene: see :func:`astrogen.api.deblend`."""
        return deblend(image, noise_sigma=noise_sigma, method=method, **kwargs)


# -------------------------------------------------------------------------------------- run
def _override_strings(overrides) -> list[str]:
    if overrides is None:
        return []
    if isinstance(overrides, dict):
        return [f"{k}={json.dumps(v)}" for k, v in overrides.items()]
    if isinstance(overrides, str):
        return [overrides]
    return [str(o) for o in overrides]


def run(pipeline, overrides=None, resume: bool = False, *, progress: bool = False,
        executor=None, existing: str = "overwrite"):
    """Run a pipeline from a YAML file, YAML text or a dict, as ``astrogen run`` does.

    Parameters
    ----------
    pipeline : str, pathlib.Path or dict
        Path of a pipeline YAML file, YAML text (a string with a newline), or the pipeline as
        a dict (``name``, ``seed``, ``output``, ``stages``...).
    overrides : list of str or dict, optional
        ``["seed=3", "stages.render.stamp_size=96"]`` as on the command line, or
        ``{"seed": 3, "stages.render.stamp_size": 96}``.
    resume : bool
        Continue an interrupted run in the same output folder (``--resume``).
    progress : bool
        Show a progress bar.
    executor : str or dict, optional
        Replaces the pipeline's ``executor:`` key (``"dask"``, ``{"type": "dask",
        "scheduler_file": "scheduler.json"}``, ``{"type": "slurm", ...}``).
    existing : {"overwrite", "error", "skip"}
        When the output folder holds a finished run: replace it, refuse (as ``astrogen
        run`` does by default), or return without running (``--skip-existing``).

    Returns
    -------
    astrogen.pipeline.runner.RunResult
        ``output`` folder, ``files`` written, per-stage ``timings`` (s), ``n_chunks``,
        ``n_rows``, ``wall_time`` (s).

    Raises
    ------
    astrogen.errors.AstrogenError
        Bad configuration or input (key path and line in the message), as on the command line.
    """
    from astrogen.pipeline.build import build_pipeline
    from astrogen.pipeline.config import Config, apply_overrides, load_config
    from astrogen.pipeline.executors import parse_executor
    from astrogen.pipeline.runner import run_pipeline

    if isinstance(pipeline, dict):
        cfg = Config(copy.deepcopy(pipeline), {}, "<dict>")
    elif isinstance(pipeline, (str, Path)):
        cfg = load_config(pipeline)
    else:
        raise ConfigError("must be a YAML file path, YAML text or a dict.", key="pipeline",
                          received={"pipeline": type(pipeline).__name__})
    strings = _override_strings(overrides)
    if strings:
        cfg = apply_overrides(cfg, strings)
    p = build_pipeline(cfg)
    if executor is not None:
        p.executor = parse_executor(executor)
    if any(n.stage.uses_tensorflow for n in p.nodes):
        from astrogen.tf_quiet import import_tensorflow_quietly

        import_tensorflow_quietly()
    return run_pipeline(p, resume=resume, progress=progress, existing=existing)

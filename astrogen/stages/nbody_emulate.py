r"""N-body emulator stages: linear field -> GAN-emulated evolved slab -> halo map -> catalog,
and a comparison with the particle-mesh solver on the same seed.

``pipelines/nbody_emulate.yaml``::

    cosmology.initial_field -> nbody.emulate -> nbody.halo_map -> output.catalog
                                             \-> output.field

``pipelines/nbody_compare.yaml`` adds ``nbody.pm`` -> ``nbody.fof`` on the same initial field
and ``nbody.compare`` (PNG figure + JSON of power-spectrum ratio, r(k), halo completeness and
purity per box).

A *slab* is the mean of ``1 + delta`` over ``slab_thickness`` cells along ``axis`` (the
projection of the training set, :mod:`astrogen.datasets.nbody_slices`); slab ``slab`` covers
``[slab * depth, (slab + 1) * depth)`` Mpc/h along that axis. The emulated slab is a 2-D
:class:`~astrogen.batch.DensityField` (``delta`` = projected density contrast); its pixel
``[i, j]`` is at the two remaining axes (in increasing order) ``(i, j) * cell_size``.

Weights ship in ``astrogen/data/models/`` and are loaded in ``setup`` (TensorFlow is
imported there, not at module import).
"""
from __future__ import annotations

import json

import numpy as np
from astropy.table import Table

from astrogen.batch import DensityField
from astrogen.errors import ConfigError, ModelError
from astrogen.nbody.snapshot import NBodySnapshot
from astrogen.registry import register_stage
from astrogen.seeds import derive_seed
from astrogen.stages.base import Stage, check_file_name, check_int, check_positive

__all__ = ["NBodyEmulate", "HaloMap", "NBodyCompare", "SHIPPED_MODELS", "resolve_nbody_model"]

#: Shipped weights (``astrogen/data/models/<file>``) and the command that retrains them.
SHIPPED_MODELS = {
    "nbody_gan_32": ("nbody_gan_32.keras", "nbody_gan", "astrogen train configs/nbody_gan.yaml"),
    "halo_unet_32": ("halo_unet_32.keras", "halo_unet", "astrogen train configs/halo_unet.yaml"),
    "d3m_32": ("d3m_32.keras", "d3m", "astrogen train configs/d3m.yaml"),
    "d3m_64": ("d3m_64.keras", "d3m", "astrogen train configs/d3m_64.yaml (from d3m_32)"),
    "halo_vnet_32": ("halo_vnet_32.keras", "halo_vnet", "astrogen train configs/halo_vnet.yaml"),
}


def resolve_nbody_model(name: str, kind: str, key: str = "model"):
    """Path of a shipped model name or of a ``.keras`` file (with its ``.json`` sidecar)."""
    from pathlib import Path

    from astrogen.models.pretrained import models_dir

    if name in SHIPPED_MODELS:
        file, k, command = SHIPPED_MODELS[name]
        if k != kind:
            raise ModelError(f"is a {k} model, not a {kind} model.", key=key,
                             received={key: name})
        path = models_dir() / file
        if not path.is_file():
            raise ModelError(f"the shipped weights are missing; retrain them with: {command}",
                             key=key, received={key: name, "expected file": str(path)})
        return path
    path = Path(str(name)).expanduser()
    if path.suffix == ".keras" and path.is_file() and path.with_suffix(".json").is_file():
        return path
    names = sorted(n for n, v in SHIPPED_MODELS.items() if v[1] == kind)
    raise ModelError(f"is neither a shipped {kind} model ({', '.join(names)}) nor an existing "
                     ".keras file with its .json sidecar.", key=key, received={key: name})


def _check_model_name(value) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError("must be a shipped model name or a .keras file.", key="model",
                          received={"model": value})
    return value


def _check_axis(value) -> int:
    if isinstance(value, bool) or value not in (0, 1, 2):
        raise ConfigError("must be 0, 1 or 2 (the projection axis x, y or z).", key="axis",
                          received={"axis": value})
    return int(value)


def _slab_meta(model_meta: dict, axis: int, slab: int) -> dict:
    depth = float(model_meta["slab_depth"])
    return {"projection_axis": int(axis), "slab": int(slab),
            "slab_thickness": int(model_meta["slab_thickness"]), "slab_depth": depth,
            "slab_range": [slab * depth, (slab + 1) * depth]}


def project_slab(delta3d: np.ndarray, thickness: int, axis: int, slab: int) -> np.ndarray:
    """Projected ``1 + delta`` (or linear delta) of one slab of a 3-D field."""
    from astrogen.nbody.slabs import project_slabs

    n = delta3d.shape[0]
    return project_slabs(delta3d, thickness, axes=(axis,))[slab % (n // thickness)]


@register_stage("nbody.emulate")
class NBodyEmulate(Stage):
    """GAN emulator: linear 3-D field -> evolved projected density slab (2-D field).

    The slab ``slab`` along ``axis`` of the linear field (``cosmology.initial_field``, 3-D,
    with the grid, box size and cosmology of the model's training set) is projected, divided
    by its growth factor (the model takes the z = 0 linear field) and mapped by the
    generator, with a noise channel drawn from ``derive_seed(stage seed, box_id)``, to the
    projected ``1 + delta`` at the model's redshift. Output: a 2-D DensityField of the
    projected density contrast with the slab geometry in ``meta``. A model conditioned on the
    LPT field (the shipped one) first moves the box's particles by 2LPT to its redshift and
    projects their density (:meth:`astrogen.models.nbody_gan.NBodyGAN.condition_slabs`).

    Parameters
    ----------
    model : str
        Shipped model name (``nbody_gan_32``: 32^3 particles in 64 Mpc/h, 8 Mpc/h slabs,
        z = 0) or a ``.keras`` file written by :meth:`astrogen.models.nbody_gan.NBodyGAN.save`.
    axis : int
        Projection axis (0, 1, 2 = x, y, z).
    slab : int
        Slab index along ``axis`` (0 .. n_grid / slab_thickness - 1).
    """

    input_types = (DensityField,)
    output_type = DensityField
    uses_tensorflow = True
    units = {"slab": "slab index (slab_thickness cells each)"}

    def __init__(self, model: str = "nbody_gan_32", axis: int = 2, slab: int = 0):
        self.model_name = _check_model_name(model)
        self.axis = _check_axis(axis)
        self.slab = check_int("slab", slab, minimum=0)
        self._model = None

    def setup(self, ctx) -> None:
        from astrogen.models.nbody_gan import load_nbody_gan
        from astrogen.models.pretrained import cached_model

        super().setup(ctx)
        path = resolve_nbody_model(self.model_name, "nbody_gan")
        self._model = cached_model(path, load_nbody_gan)
        m = self._model.meta
        if self.slab >= int(m["n_grid"]) // int(m["slab_thickness"]):
            raise ConfigError(f"must be < {int(m['n_grid']) // int(m['slab_thickness'])} "
                              "(slabs per axis of the model).", key="slab",
                              received={"slab": self.slab})

    def process(self, field: DensityField) -> DensityField:
        m = self._model.meta
        if field.meta.get("field") != "linear" or field.delta.ndim != 3:
            raise ConfigError("nbody.emulate takes a 3-D linear field (cosmology.initial_field "
                              "with ndim: 3).", key="inputs",
                              received={"field": field.meta.get("field"),
                                        "shape": field.delta.shape})
        if field.n_grid != int(m["n_grid"]) or not np.isclose(field.box_size, m["box_size"]):
            raise ConfigError(f"the model was trained on {m['n_grid']}^3 grids of "
                              f"{m['box_size']} Mpc/h.", key="inputs",
                              received={"n_grid": field.n_grid, "box_size": field.box_size})
        growth = float(field.meta.get("growth_D1", 1.0))
        delta0 = np.asarray(field.delta, float) / growth
        lin = project_slab(delta0, int(m["slab_thickness"]), self.axis, self.slab)
        cond = self._model.condition_slabs(delta0, axes=(self.axis,))[self.slab]
        x = self._model.emulate(cond, seed=derive_seed(self.ctx.seed, int(field.box_id)))
        cosmo = dict(field.cosmology) or dict(m.get("cosmology", {}))
        meta = {"source": self.type_name, "field": "emulated", "model": self.model_name,
                "seed": field.meta.get("seed"), "transfer": field.meta.get("transfer"),
                "linear_slab": lin.astype(np.float32),
                **_slab_meta(m, self.axis, self.slab)}
        return DensityField(delta=np.asarray(x, np.float64) - 1.0, box_size=field.box_size,
                            redshift=float(m["redshift"]), box_id=field.box_id,
                            cosmology=cosmo, meta=meta)


_HALO_DESC = {
    "box_id": "index of the box",
    "halo_id": "halo index within the slab, by decreasing mass",
    "x": "comoving x (slab centre along the projection axis)",
    "y": "comoving y (slab centre along the projection axis)",
    "z": "comoving z (slab centre along the projection axis)",
    "mass": "mass predicted by the halo-map network",
    "n_pixels": "pixels of the halo's mask component",
    "score": "peak halo probability of the component",
}


@register_stage("nbody.halo_map")
class HaloMap(Stage):
    """Halo-map U-Net: projected density slab -> halo mask -> halo catalog (one row per halo).

    Input: a slab from ``nbody.emulate`` (2-D) or an evolved 3-D field (``nbody.pm``), which is
    projected like the training set (``axis``, ``slab``; ignored for a 2-D input). The
    network's halo probability is thresholded at ``threshold``; each periodic connected
    component is a halo at its probability-weighted centroid, with the mass predicted by the
    network's second output. Columns: ``box_id``, ``halo_id``, ``x``, ``y``, ``z`` (Mpc/h; the
    coordinate along the projection axis is the slab centre), ``mass`` (Msun/h),
    ``n_pixels``, ``score``. Masses and lengths carry astropy ``littleh`` units
    (``Msun / littleh``, ``Mpc / littleh``, as ``nbody.fof``) and ``meta["cosmology"]`` the
    field's cosmology (else the model's), so ``output.catalog`` writes them in Msun and Mpc.

    Parameters
    ----------
    model : str
        Shipped model name (``halo_unet_32``) or a ``.keras`` file with its ``.json``.
    threshold : float
        Probability threshold of the mask (0..1).
    axis, slab : int
        Projection of a 3-D input.
    """

    input_types = (DensityField,)
    output_type = Table
    uses_tensorflow = True

    def __init__(self, model: str = "halo_unet_32", threshold: float = 0.5, axis: int = 2,
                 slab: int = 0):
        self.model_name = _check_model_name(model)
        self.threshold = check_positive("threshold", threshold)
        if self.threshold >= 1:
            raise ConfigError("must be within (0, 1).", key="threshold",
                              received={"threshold": threshold})
        self.axis = _check_axis(axis)
        self.slab = check_int("slab", slab, minimum=0)
        self._model = None

    def setup(self, ctx) -> None:
        from astrogen.models.halo_unet import load_halo_unet
        from astrogen.models.pretrained import cached_model

        super().setup(ctx)
        self._model = cached_model(resolve_nbody_model(self.model_name, "halo_unet"),
                                   load_halo_unet)

    def slab_of(self, field: DensityField) -> tuple[np.ndarray, dict]:
        """Projected ``1 + delta`` of the input and its slab geometry."""
        m = self._model.meta
        if field.delta.ndim == 2:
            geo = {k: field.meta[k] for k in ("projection_axis", "slab", "slab_depth")
                   if k in field.meta}
            if len(geo) < 3:
                geo = {"projection_axis": 2, "slab": 0, "slab_depth": 0.0}
            return 1.0 + np.asarray(field.delta, float), geo
        if field.n_grid != int(m["n_grid"]):
            raise ConfigError(f"the halo network was trained on {m['n_grid']}^3 grids.",
                              key="inputs", received={"n_grid": field.n_grid})
        x = project_slab(1.0 + np.asarray(field.delta, float), int(m["slab_thickness"]),
                         self.axis, self.slab)
        return x, _slab_meta(m, self.axis, self.slab)

    def process(self, field: DensityField) -> Table:
        from astrogen.nbody.fof import MPC_H, MSUN_H
        from astrogen.nbody.halo_maps import mask_to_catalog

        x, geo = self.slab_of(field)
        n = x.shape[0]
        if n != self._model.size:
            raise ConfigError(f"the halo network takes {self._model.size}x{self._model.size} "
                              "slabs.", key="inputs", received={"shape": x.shape})
        if not np.isclose(field.box_size, self._model.meta["box_size"]):
            raise ConfigError(f"the halo network was trained on boxes of "
                              f"{self._model.meta['box_size']} Mpc/h.", key="inputs",
                              received={"box_size": field.box_size})
        prob, logm = self._model.predict(x)
        cell = field.box_size / n
        cat = mask_to_catalog(prob, logm, self.threshold, cell_size=cell)
        order = np.argsort(-cat["mass"], kind="stable")
        a = int(geo["projection_axis"])
        other = [b for b in (0, 1, 2) if b != a]
        pos = np.zeros((len(order), 3))
        pos[:, other[0]] = cat["u"][order]
        pos[:, other[1]] = cat["v"][order]
        pos[:, a] = (int(geo["slab"]) + 0.5) * float(geo["slab_depth"])
        t = Table()
        t["box_id"] = np.full(len(order), int(field.box_id), np.int64)
        t["halo_id"] = np.arange(len(order), dtype=np.int64)
        for i, c in enumerate("xyz"):
            t[c] = pos[:, i] * MPC_H
        t["mass"] = cat["mass"][order] * MSUN_H
        t["n_pixels"] = cat["n_pixels"][order]
        t["score"] = cat["score"][order]
        for name, text in _HALO_DESC.items():
            t[name].description = text
        t.meta.update({"box_id": int(field.box_id), "redshift": float(field.redshift),
                       "source": self.type_name, "model": self.model_name,
                       "threshold": self.threshold, "projection_axis": a,
                       "slab": int(geo["slab"]), "slab_depth": float(geo["slab_depth"]),
                       "input_field": str(field.meta.get("field")),
                       "cosmology": dict(field.cosmology)
                       or dict(self._model.meta.get("cosmology", {})),
                       "units_note": "Msun/h, Mpc/h (astropy littleh units; convert: with_H0)"})
        return t


@register_stage("nbody.compare")
class NBodyCompare(Stage):
    """Compare an emulated slab and its halo map with the PM solver + FoF on the same seed.

    Inputs: ``[emulated slab (nbody.emulate), PM snapshot (nbody.pm), FoF haloes (nbody.fof),
    halo map (nbody.halo_map)]`` of the same boxes. The PM box is projected on the emulated
    slab. Writes ``figure`` (PNG of the first box: linear, PM and emulated slabs with the FoF
    and predicted haloes, the power spectra, their ratio, r(k) and the pixel histograms) and
    ``summary`` (JSON: per box, the power-spectrum ratio and r(k) per k bin, the mean ratio
    below half the Nyquist wavenumber, halo completeness (FoF above ``mass_threshold``
    matched within ``match_radius``) and purity (predicted haloes above the threshold
    matched to any FoF halo), and the wall time of each).

    Parameters
    ----------
    figure, summary : str
        PNG and JSON file names in the output folder.
    mass_threshold : float
        Msun/h.
    match_radius : float
        Mpc/h (projected).
    """

    kind = "sink"
    input_types = (DensityField, NBodySnapshot, Table, Table)
    units = {"mass_threshold": "Msun/h", "match_radius": "Mpc/h"}

    def __init__(self, figure: str = "comparison.png", summary: str = "comparison.json",
                 mass_threshold: float = 3e13, match_radius: float = 4.0):
        self.figure = check_file_name("figure", figure, (".png",))
        self.summary = check_file_name("summary", summary, (".json",))
        self.mass_threshold = check_positive("mass_threshold", mass_threshold, unit="Msun/h")
        self.match_radius = check_positive("match_radius", match_radius, unit="Mpc/h")

    def consume(self, index: int, emu: DensityField, snap: NBodySnapshot, fof: Table,
                hmap: Table) -> None:
        from astrogen.io.atomic import save_npz

        a, s = int(emu.meta["projection_axis"]), int(emu.meta["slab"])
        t = int(emu.meta["slab_thickness"])
        if snap.box_id != emu.box_id:
            raise ConfigError("the emulated slab and the PM snapshot are of different boxes.",
                              key="inputs", received={"emulated": emu.box_id,
                                                      "pm": snap.box_id})
        true = project_slab(1.0 + np.asarray(snap.delta, float), t, a, s)
        depth = float(emu.meta["slab_depth"])
        pos = np.column_stack([np.asarray(fof[c], float) for c in "xyz"]) if len(fof) else \
            np.zeros((0, 3))
        inside = (pos[:, a] >= s * depth) & (pos[:, a] < (s + 1) * depth)
        other = [b for b in (0, 1, 2) if b != a]
        ppos = np.column_stack([np.asarray(hmap[c], float) for c in "xyz"]) if len(hmap) \
            else np.zeros((0, 3))
        save_npz(self.ctx.work_dir / f"part_{index:06d}.npz",
                 true=true.astype(np.float32),
                 emulated=(1.0 + np.asarray(emu.delta, float)).astype(np.float32),
                 linear=np.asarray(emu.meta.get("linear_slab", np.zeros_like(true)),
                                   np.float32),
                 fof_uv=pos[inside][:, other], fof_mass=np.asarray(fof["mass"], float)[inside]
                 if len(fof) else np.zeros(0),
                 pred_uv=ppos[:, other], pred_mass=np.asarray(hmap["mass"], float)
                 if len(hmap) else np.zeros(0),
                 meta=np.array(json.dumps({"box_id": int(emu.box_id),
                                           "box_size": float(emu.box_size),
                                           "axis": a, "slab": s})))

    def finalize(self):
        from astrogen.io.atomic import write_json
        from astrogen.nbody.emulator_metrics import compare_slabs, halo_scores, plot_comparison

        parts = sorted(self.ctx.work_dir.glob("part_*.npz"))
        if not parts:
            return []
        boxes = []
        first = None
        for p in parts:
            with np.load(p) as z:
                d = {k: z[k] for k in z.files}
            m = json.loads(str(d["meta"]))
            stats = compare_slabs(d["true"][None], d["emulated"][None], m["box_size"])
            hs = halo_scores(d["fof_uv"], d["fof_mass"], d["pred_uv"], d["pred_mass"],
                             m["box_size"], self.mass_threshold, self.match_radius)
            boxes.append({**m, **stats, **hs})
            if first is None:
                first = (d, m, stats)
        out = self.ctx.output_dir / self.summary
        write_json(out, {"mass_threshold": self.mass_threshold,
                         "match_radius": self.match_radius, "boxes": boxes})
        fig = self.ctx.output_dir / self.figure
        d, m, stats = first
        plot_comparison(fig, d, m, stats, self.mass_threshold)
        return [out, fig]

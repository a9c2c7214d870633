"""Training of the deblending segmenters (``model: unet`` and ``model: prob_unet``).

Data: the blend training set of :mod:`astrogen.datasets.blends` (built if its folder is
missing); the last ``training.validation_scenes`` scenes are held out for the validation
loss. After a probabilistic U-Net run the first ``training.calibration_scenes`` of them fit
its temperature (:func:`calibrate_temperature`, :mod:`astrogen.deblend.calibration`; saved
in the model, fit in ``calibration.json``). Targets are computed on the fly from the
noiseless per-object images
(:func:`astrogen.physics.blends.truth_targets`): light fractions with background level
``fraction_background * sigma`` and the three classes / ownership above
``class_threshold * sigma``.

Losses
------
* U-Net (:class:`astrogen.models.unet.UNet`, both heads): per-pixel cross-entropy of the
  classes head plus the soft cross-entropy of the fractions head, averaged over pixels with
  weight ``object_weight`` on pixels inside the truth footprint (1 elsewhere).
* Probabilistic U-Net (:class:`astrogen.models.prob_unet.ProbUNet`, fractions target): the
  negative ELBO of Kohl et al. (2018): cross-entropy summed over pixels for ``z`` drawn from
  the posterior ``q(z | x, y)``, plus ``beta * KL(q || p)``.

Both losses are the models' own (``UNet.compute_losses``, ``ProbUNet.compute_losses``);
this module holds the data (batches, targets) and the configuration.

Object slots: slot 1 is the object nearest the stamp centre (the detection the stamp is
centred on: Boucaud et al. 2020's central galaxy), slot 2 the next nearest (the neighbour),
from the dataset's ``positions`` (:func:`astrogen.physics.blends.order_by_centre_distance`;
the dataset's own order, central galaxy first, differs in ~2 % of the scenes, where the
neighbour lands nearer the centre). With ``radial_channel`` the networks get the distance to
the stamp centre as a second input band so that "the galaxy at the centre" is a local
feature. The fraction loss is ``(1 + order_weight)`` times the cross-entropy in that order;
with ``permutation_invariant: true`` the first term is instead the minimum over the ``K!``
slot permutations ("permutation-invariant training", Yu et al. 2017, arXiv:1607.00325).

History: the first runs (base_filters 8, 1500 steps, every loss variant above) learned the
footprint but left the fractions at a symmetric split between the slots (pixel ownership
right for ~56 % of the object pixels, i.e. chance). The cause was the initialisation: Glorot
kernels under ReLU shrink the signal ~2x per convolution, so the deep U-Net levels (the only
ones that see both galaxies and the centre) started almost silent; with He initialisation of
the ReLU layers (:func:`astrogen.models.unet.layer_initializer`) the same set-up learns the slot
assignment (an overfit of 32 scenes for 150 steps: excess fraction cross-entropy 0.27 nats
vs 1.20 with Glorot). With base_filters 8, 3600 steps and 2-galaxy scenes (48 min on 2
shared cores): validation fraction cross-entropy 1.98 (2.62 before), median IoU per object on
the held-out benchmark 0.80 (0.48 before; 0.91 for isolated galaxies); the shipped
configuration (``configs/unet.yaml``) is wider and longer, its figures are in the docs
(User guide, Deblending).

Determinism and resume: batch ``g`` is rows ``perm_e[i*B:(i+1)*B]`` with
``e, i = divmod(g, n_train // B)``, ``perm_e`` a numpy permutation seeded by
``derive_seed(seed, "data", e)``; the augmentation (one of the 8 symmetries of the square per
scene) and the posterior noise are seeded by ``(seed, g)``. A checkpoint (weights, optimizer
variables, step) is therefore the whole state, written atomically every
``checkpoint_every`` steps (:mod:`astrogen.training.checkpoint`); ``--resume`` continues
exactly.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from astrogen.errors import ConfigError, UnknownKeyError
from astrogen.io.atomic import save_model_atomic, write_json
from astrogen.models.losses import permutation_invariant_ce, slot_permutations  # noqa: F401
from astrogen.seeds import derive_seed
from astrogen.training.loop import Run, adam, checkpoint_of_run, current_lr, learning_rate
from astrogen.training.registry import Trainer, register_trainer
from astrogen.training.schema import (REQUIRED, check_bool, check_choice, check_float,
                                      check_int, check_optional_str, check_str, loop_keys,
                                      top_level)

__all__ = ["calibrate_temperature", "init_weights", "SEGMENTER_MODELS", "SegmenterTrainer", "train_segmenter",
           "make_batch", "build_model", "export_checkpoint", "SEGMENTER_SCHEMA"]

SEGMENTER_MODELS = ("unet", "prob_unet")

_ARCH_COMMON = {
    "depth": (3, check_int(1)),
    "base_filters": (16, check_int(1)),
    "activation": ("relu", check_str),
    "input_transform": ("asinh", check_choice("asinh", "linear", "none")),
    "class_threshold": (1.0, check_float(0.0, strict=True)),
    "order_weight": (0.3, check_float(0.0)),
    "radial_channel": (True, check_bool),
    "permutation_invariant": (False, check_bool),
}

#: section -> key -> (default, check) of ``model: unet`` and ``model: prob_unet``
SEGMENTER_SCHEMA: dict = {
    "": top_level(*SEGMENTER_MODELS, sections=SEGMENTER_MODELS),
    "unet": {**_ARCH_COMMON,
             "fraction_background": (0.1, check_float(0.0, strict=True)),
             "object_weight": (5.0, check_float(0.0)),
             "fraction_weight": (1.0, check_float(0.0)),
             "flux_weight": (0.0, check_float(0.0))},
    "prob_unet": {**_ARCH_COMMON,
                  "fraction_background": (1.0, check_float(0.0, strict=True)),
                  "latent_dim": (6, check_int(1)),
                  "fcomb_layers": (3, check_int(1)),
                  "beta": (1.0, check_float(0.0))},
    "training": {
        "batch_size": (32, check_int(1)),
        "steps": (REQUIRED, check_int(0)),
        "learning_rate": (1e-3, check_float(0.0, strict=True)),
        "lr_schedule": ("cosine", check_choice("constant", "cosine")),
        "lr_final_fraction": (0.05, check_float(0.0)),
        "clipnorm": (None, check_float(0.0, strict=True, optional=True)),
        "augment": (True, check_bool),
        "init_model": (None, check_optional_str),
        "validation_scenes": (256, check_int(0)),
        "calibration_scenes": (128, check_int(0)),
        **loop_keys(checkpoint_every=200, log_every=20, progress=True),
    },
}


@register_trainer(*SEGMENTER_MODELS)
class SegmenterTrainer(Trainer):
    """``model: unet`` and ``model: prob_unet``."""

    def check(self, cfg):
        from astrogen.datasets.blends import BlendDatasetConfig
        from astrogen.training.schema import check_sections

        arch = cfg.data.get("model")
        other = "prob_unet" if arch == "unet" else "unet"
        if cfg.data.get(other):
            raise UnknownKeyError(f"is the section of model '{other}', not of '{arch}'.",
                                  key=other, line=cfg.line((other,)))
        out = check_sections(cfg, SEGMENTER_SCHEMA, (arch,), BlendDatasetConfig,
                             "blend dataset", ("dataset.library_shard_size",
                                               "training.calibration_scenes"))
        out.pop(other, None)
        a, t = out[arch], out["training"]
        stamp, n_scenes = out["dataset"]["stamp_size"], out["dataset"]["n_scenes"]
        if stamp % (2 ** a["depth"]):
            raise ConfigError(f"dataset.stamp_size must be a multiple of 2**depth = "
                              f"{2 ** a['depth']}.", key=f"{arch}.depth",
                              line=cfg.line((arch, "depth")),
                              received={"stamp_size": stamp, "depth": a["depth"]})
        if t["validation_scenes"] + t["batch_size"] > n_scenes:
            raise ConfigError("dataset.n_scenes must exceed validation_scenes + batch_size.",
                              key="training.validation_scenes",
                              line=cfg.line(("training", "validation_scenes")),
                              received={"n_scenes": n_scenes, **{k: t[k] for k in (
                                  "validation_scenes", "batch_size")}})
        return out

    def train(self, cfg, resume: bool = False) -> dict:
        return train_segmenter(cfg, resume)


# ---------------------------------------------------------------------- model and data
def build_model(arch: str, a: dict, n_objects: int, input_scale: float, seed: int):
    """The Keras model of a checked configuration section ``a`` (a second input band holds
    the radial-distance channel if ``a['radial_channel']``, see
    :func:`astrogen.deblend.segment.network_input`)."""
    n_bands = 2 if a.get("radial_channel", False) else 1
    if arch == "unet":
        from astrogen.models.unet import UNet

        return UNet(n_bands=n_bands, depth=a["depth"], base_filters=a["base_filters"], n_classes=3,
                    max_objects=n_objects, input_transform=a["input_transform"],
                    input_scale=input_scale, activation=a["activation"], seed=seed)
    from astrogen.models.prob_unet import ProbUNet

    return ProbUNet(n_bands=n_bands, depth=a["depth"], base_filters=a["base_filters"],
                    latent_dim=a["latent_dim"], target="fractions", max_objects=n_objects,
                    fcomb_layers=a["fcomb_layers"], beta=a["beta"],
                    input_transform=a["input_transform"], input_scale=input_scale,
                    activation=a["activation"], seed=seed)


def make_batch(images, models, sigma, rows, arch_cfg: dict, augment: bool, seed: int,
               step: int, input_scale: float = 1.0, positions=None,
               with_labels: bool = False) -> dict:
    """Inputs and targets of one batch (numpy).

    Parameters
    ----------
    images : array (n, h, w) [e-]; models : array (n, K, h, w) [e-]; sigma : array (n,) [e-]
        Dataset arrays (:func:`astrogen.datasets.blends.read_blend_scenes`).
    rows : array of int
        Scenes of the batch.
    positions : array (n, K, 2), optional
        Object centres (x, y) [pix]; if given, the object slots are reordered by distance to
        the stamp centre (:func:`astrogen.physics.blends.order_by_centre_distance`: slot 1 =
        nearest the centre), otherwise the dataset's order (central galaxy first) is kept.

    Returns
    -------
    dict
        ``x`` (B, h, w, n_bands) network input (:func:`astrogen.deblend.segment.network_input`),
        ``classes`` one-hot (B, h, w, 3), ``fractions`` (B, h, w, K+1), ``weights`` (B, h, w).
        With ``augment`` one of the 8 symmetries of the square (seeded by ``(seed, step)``)
        is applied to each scene's image and object images *together*, before the targets
        are computed. ``with_labels``: also ``labels`` (B, h, w), the ownership above
        ``class_threshold`` sigma in slot order (0 = background). With
        ``arch_cfg['flux_weight'] > 0`` also ``scene`` (B, h, w), the noiseless scene, and
        ``flux`` (B, K), each slot's true flux in the stamp (0 for empty slots), both in
        units of the noise sigma (the flux term of :meth:`astrogen.models.unet.UNet.
        compute_losses`).
    """
    from astrogen.physics.blends import order_by_centre_distance, truth_targets

    x = images[rows].astype(np.float32)
    m = models[rows].astype(np.float32)
    sig = sigma[rows].astype(np.float32)
    if positions is not None:
        order = order_by_centre_distance(np.asarray(positions)[rows], x.shape[-1])
        m = np.take_along_axis(m, order[:, :, None, None], axis=1)
    if augment:
        rng = np.random.default_rng(derive_seed(seed, "augment", step))
        ks = rng.integers(0, 8, size=len(rows))
        for i, k in enumerate(ks):
            if k & 1:
                x[i] = x[i].T
                m[i] = np.swapaxes(m[i], -1, -2)
            if k & 2:
                x[i] = x[i][:, ::-1]
                m[i] = m[i][..., ::-1]
            if k & 4:
                x[i] = x[i][::-1, :]
                m[i] = m[i][..., ::-1, :]
    t = truth_targets(m, sig, arch_cfg["fraction_background"], arch_cfg["class_threshold"])
    onehot = np.eye(3, dtype=np.float32)[t["classes"]]
    weights = 1.0 + (arch_cfg.get("object_weight", 1.0) - 1.0) * (t["fractions"][..., 0] < 0.5)
    from astrogen.deblend.segment import network_input

    xin = network_input(x, sig, input_scale, arch_cfg.get("radial_channel", False),
                        rescale=False)
    out = {"x": xin, "classes": onehot, "fractions": t["fractions"],
           "weights": weights.astype(np.float32)}
    if with_labels:
        out["labels"] = t["labels"]
    if arch_cfg.get("flux_weight", 0.0) > 0:
        m_sig = m / sig[:, None, None, None]
        out["scene"] = m_sig.sum(axis=1).astype(np.float32)
        out["flux"] = m_sig.sum(axis=(2, 3)).astype(np.float32)
    return out


# ---------------------------------------------------------------------- training loop
def train_segmenter(cfg, resume: bool = False) -> dict:
    """Train a U-Net or probabilistic U-Net as configured (module docstring); returns a
    summary dict (also ``run_dir/result.json``)."""
    import keras
    import tensorflow as tf

    from astrogen.datasets.blends import (BlendDatasetConfig, blend_dataset_is_complete,
                                          build_blend_dataset, read_blend_scenes)

    arch = cfg["model"]
    a_cfg, t_cfg = cfg[arch], cfg["training"]
    seed = int(cfg["seed"])
    run = Run(cfg, resume)
    ds = dict(cfg["dataset"])
    ds_path = Path(ds.pop("path"))
    manifest = build_blend_dataset(ds_path, BlendDatasetConfig.from_dict(ds),
                                   progress=t_cfg["progress"])
    if not blend_dataset_is_complete(ds_path):  # pragma: no cover
        raise ConfigError("the blend dataset could not be completed.", key="dataset.path")
    data = read_blend_scenes(ds_path, fields=("image", "models", "sigma", "positions"))
    n_all = len(data["image"])
    n_val = int(t_cfg["validation_scenes"])
    n_train = n_all - n_val
    k = int(manifest["max_objects"])
    input_scale = float(f"{float(manifest['noise_sigma']):.4g}")
    run.start()

    keras.utils.set_random_seed(derive_seed(seed, "init") % (2 ** 31))
    model = build_model(arch, a_cfg, k, input_scale, derive_seed(seed, "weights") % (2 ** 31))
    s = int(manifest["stamp_size"])
    model(np.zeros((1, s, s, model.n_bands), np.float32))
    steps = int(t_cfg["steps"])
    opt = adam(learning_rate(t_cfg["lr_schedule"], t_cfg["learning_rate"], steps,
                             t_cfg["lr_final_fraction"]), "adam", t_cfg["clipnorm"])
    opt.build(model.trainable_variables)
    step = run.restore({"model": model.weights, "optimizer": opt.variables}, seed=seed,
                       model=arch)
    if step == 0 and t_cfg["init_model"]:
        init_weights(model, t_cfg["init_model"])

    perms = [list(map(int, p)) for p in slot_permutations(k)]
    batch = int(t_cfg["batch_size"])
    spe = n_train // batch
    ow = float(a_cfg["order_weight"])
    pit = perms if a_cfg["permutation_invariant"] else None
    latent = int(a_cfg.get("latent_dim", 1))

    def losses(b, training, eps_z):
        if arch == "unet":
            return model.compute_losses(b["x"], b["classes"], b["fractions"], b["weights"],
                                        float(a_cfg.get("fraction_weight", 1.0)), ow, pit,
                                        training=training, scene=b.get("scene"),
                                        flux=b.get("flux"),
                                        flux_weight=float(a_cfg.get("flux_weight", 0.0)))
        return model.compute_losses(b["x"], b["fractions"], training=training, eps=eps_z,
                                    order_weight=ow, permutations=pit)

    @tf.function(reduce_retracing=True)
    def train_step(b, eps_z):
        with tf.GradientTape() as tape:
            out = losses(b, True, eps_z)
        grads = tape.gradient(out["loss"], model.trainable_variables)
        opt.apply(grads, model.trainable_variables)
        return out

    @tf.function(reduce_retracing=True)
    def eval_step(b):
        return losses(b, False, tf.zeros((tf.shape(b["x"])[0], latent)))

    def batch_rows(g: int) -> np.ndarray:
        e, i = divmod(g, spe)
        perm = np.random.default_rng(derive_seed(seed, "data", e)).permutation(n_train)
        return perm[i * batch:(i + 1) * batch]

    def tensors(bd):
        return {kk: tf.constant(v) for kk, v in bd.items()}

    def validate() -> dict:
        if n_val == 0:
            return {}
        sums: dict[str, float] = {}
        for lo in range(n_train, n_all, 64):
            rows = np.arange(lo, min(n_all, lo + 64))
            out = eval_step(tensors(make_batch(data["image"], data["models"], data["sigma"],
                                               rows, a_cfg, False, seed, 0, input_scale,
                                               data["positions"])))
            for kk, v in out.items():
                sums[kk] = sums.get(kk, 0.0) + float(v) * len(rows)
        return {f"val_{kk}": v / n_val for kk, v in sums.items()}

    def step_fn(g: int) -> dict:
        rows = batch_rows(g)
        b = make_batch(data["image"], data["models"], data["sigma"], rows, a_cfg,
                       t_cfg["augment"], seed, g, input_scale, data["positions"])
        eps_z = tf.random.stateless_normal(
            (len(rows), latent), seed=[derive_seed(seed, "z") % (2 ** 31), g])
        return {**train_step(tensors(b), eps_z), "lr": current_lr(opt)}

    def before(s0: int, stop: int) -> None:
        if s0 == 0 and stop > 0:
            run.write({"step": 0, **validate()})

    every = int(t_cfg["checkpoint_every"])
    summary = run.loop(step, steps, step_fn, name=arch, before=before,
                       log_extra=lambda g, stop: validate() if (g % every == 0 or g == stop)
                       else {})
    summary["steps_per_second"] = summary["steps_per_second"].get("train")
    summary["last"] = {kk: v for kk, v in summary["last"].items() if kk != "lr"}
    result = {"dataset": str(ds_path), "model": arch, "steps": steps, "start_step": step,
              "n_train": n_train, "n_validation": n_val, "input_scale": input_scale, **summary}
    if summary["complete"] and arch == "prob_unet" and int(t_cfg["calibration_scenes"]) > 0 \
            and n_val:
        result["calibration"] = calibrate_temperature(
            model, data, range(n_train, n_train + min(n_val, int(t_cfg["calibration_scenes"]))),
            a_cfg, seed, input_scale)
        write_json(run.run_dir / "calibration.json", result["calibration"])
    if summary["complete"]:
        save_model_atomic(model, run.output)
    return run.finish(result)


def init_weights(model, path) -> None:
    """Copy the weights of the saved segmenter ``path`` (``training.init_model``: a
    ``.keras`` file of the same model type and architecture, e.g. a shipped model to
    fine-tune on another data set) into the freshly built ``model``.

    Raises
    ------
    astrogen.errors.ConfigError
        Naming ``training.init_model`` when the file is missing or its model differs
        (type, or the shape of any weight).
    """
    import keras

    import astrogen.models.prob_unet  # noqa: F401  (registers the Keras classes)
    import astrogen.models.unet  # noqa: F401

    p = Path(path)
    if not p.is_file():
        raise ConfigError("is not a file.", key="training.init_model", received={"path": str(p)})
    src = keras.saving.load_model(p, compile=False)
    have = [tuple(w.shape) for w in src.weights]
    want = [tuple(w.shape) for w in model.weights]
    if type(src) is not type(model) or have != want:
        raise ConfigError(f"holds a {type(src).__name__} whose weights do not match this "
                          f"configuration's {type(model).__name__}.", key="training.init_model",
                          received={"path": str(p), "weights": len(have),
                                    "expected": len(want)})
    for w, v in zip(model.weights, src.weights):
        w.assign(v)


def calibrate_temperature(model, data: dict, rows, arch_cfg: dict, seed: int,
                          input_scale: float, n_samples: int = 16) -> dict:
    """Fit and set ``model.temperature`` (probabilistic U-Net) on held-out scenes ``rows``
    of the training set: :func:`astrogen.deblend.calibration.fit_temperature` of the
    ownership labels above ``class_threshold`` sigma under the mean of ``n_samples`` prior
    samples. Returns the fit (temperature, NLL per grid value, scenes used)."""
    from astrogen.deblend.calibration import fit_temperature

    rows = np.asarray(list(rows))
    b = make_batch(data["image"], data["models"], data["sigma"], rows, arch_cfg, False, seed,
                   0, input_scale, data["positions"], with_labels=True)
    samples = model.sample(b["x"], n_samples=n_samples, seed=derive_seed(seed, "calibration"),
                           batch_size=32, temperature=1.0)
    fit = fit_temperature(samples, b["labels"])
    model.temperature = fit["temperature"]
    return {**fit, "n_scenes": int(len(rows)), "first_scene": int(rows[0]),
            "n_samples": n_samples}


def export_checkpoint(config_path, overrides: list[str] | None = None, output=None) -> dict:
    """Save the model of the newest checkpoint of a segmenter run as a ``.keras`` file
    (``output``, default the configuration's ``output``), e.g. to use a run stopped before
    ``training.steps``. Returns ``{"output", "step", "steps"}``; the learning-rate schedule
    of such a model has not reached its end.

    ``python -c "from astrogen.training.unet_trainer import export_checkpoint as e;
    print(e('configs/unet.yaml'))"``
    """
    from astrogen.training.checkpoint import load_checkpoint, restore_variables

    cfg, ckpt = checkpoint_of_run(config_path, overrides, SEGMENTER_MODELS)
    arch = cfg["model"]
    manifest = json.loads((Path(cfg["dataset"]["path"]) / "manifest.json").read_text())
    input_scale = float(f"{float(manifest['noise_sigma']):.4g}")
    model = build_model(arch, cfg[arch], int(manifest["max_objects"]), input_scale,
                        derive_seed(int(cfg["seed"]), "weights") % (2 ** 31))
    s = int(manifest["stamp_size"])
    model(np.zeros((1, s, s, model.n_bands), np.float32))
    state, values = load_checkpoint(ckpt)
    restore_variables(model.weights, values["model"], "model", ckpt)
    out = Path(output or cfg["output"])
    save_model_atomic(model, out)
    return {"output": str(out), "step": int(state["step"]), "steps": int(cfg["training"]["steps"])}

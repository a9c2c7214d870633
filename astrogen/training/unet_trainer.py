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
the ReLU layers (:func:`astrogen.models.unet._initializer`) the same set-up learns the slot
assignment (an overfit of 32 scenes for 150 steps: excess fraction cross-entropy 0.27 nats
vs 1.20 with Glorot). With base_filters 8, 3600 steps and 2-galaxy scenes (48 min on 2
shared cores): validation fraction cross-entropy 1.98 (2.62 before), median IoU per object on
the held-out benchmark 0.80 (0.48 before; 0.91 for isolated galaxies); the shipped
configuration (``configs/unet.yaml``) is wider and longer, its figures are in the README.

Determinism and resume: batch ``g`` is rows ``perm_e[i*B:(i+1)*B]`` with
``e, i = divmod(g, n_train // B)``, ``perm_e`` a numpy permutation seeded by
``derive_seed(seed, "data", e)``; the augmentation (one of the 8 symmetries of the square per
scene) and the posterior noise are seeded by ``(seed, g)``. A checkpoint (weights, optimizer
variables, step) is therefore the whole state, written atomically every
``checkpoint_every`` steps (:mod:`astrogen.training.checkpoint`); ``--resume`` continues
exactly.
"""
from __future__ import annotations

import itertools
import json
import math
import time
from pathlib import Path

import numpy as np

from astrogen.errors import AstrogenError, ConfigError, ResumeError, UnknownKeyError
from astrogen.training.checkpoint import flatten as _flatten
from astrogen.training.checkpoint import resume_checkpoint
from astrogen.io.atomic import save_model_atomic, write_json
from astrogen.seeds import derive_seed

__all__ = ["calibrate_temperature", "SEGMENTER_MODELS", "load_segmenter_config",
           "train_segmenter"]

SEGMENTER_MODELS = ("unet", "prob_unet")


def _checks():
    from astrogen.training import config as c

    return c


def _schema() -> dict:
    c = _checks()
    arch_common = {
        "depth": (3, c._int(1)),
        "base_filters": (16, c._int(1)),
        "activation": ("relu", c._str),
        "input_transform": ("asinh", c._choice("asinh", "linear", "none")),
        "class_threshold": (1.0, c._float(0.0, strict=True)),
        "order_weight": (0.3, c._float(0.0)),
        "radial_channel": (True, c._bool),
        "permutation_invariant": (False, c._bool),
    }
    return {
        "": {
            "model": (c._REQUIRED, c._choice(*SEGMENTER_MODELS)),
            "seed": (0, c._int(0)),
            "output": (c._REQUIRED, c._str),
            "run_dir": (None, lambda v: v if v is None else c._str(v)),
            "description": ("", lambda v: "" if v is None else str(v)),
            "dataset": ({}, c._any),
            "unet": ({}, c._any),
            "prob_unet": ({}, c._any),
            "training": ({}, c._any),
        },
        "unet": {**arch_common,
                 "fraction_background": (0.1, c._float(0.0, strict=True)),
                 "object_weight": (5.0, c._float(0.0)),
                 "fraction_weight": (1.0, c._float(0.0))},
        "prob_unet": {**arch_common,
                      "fraction_background": (1.0, c._float(0.0, strict=True)),
                      "latent_dim": (6, c._int(1)),
                      "fcomb_layers": (3, c._int(1)),
                      "beta": (1.0, c._float(0.0))},
        "training": {
            "batch_size": (32, c._int(1)),
            "steps": (c._REQUIRED, c._int(0)),
            "learning_rate": (1e-3, c._float(0.0, strict=True)),
            "lr_schedule": ("cosine", c._choice("constant", "cosine")),
            "lr_final_fraction": (0.05, c._float(0.0)),
            "clipnorm": (None, c._float(0.0, strict=True, optional=True)),
            "augment": (True, c._bool),
            "validation_scenes": (256, c._int(0)),
            "calibration_scenes": (128, c._int(0)),
            "checkpoint_every": (200, c._int(1)),
            "keep_checkpoints": (2, c._int(1)),
            "log_every": (20, c._int(1)),
            "max_steps_this_run": (None, c._int(1, optional=True)),
            "progress": (True, c._bool),
        },
    }


#: Keys that may differ between a run and its ``--resume``.
RESUME_MUTABLE_KEYS = {"description", "training.checkpoint_every", "training.keep_checkpoints",
                       "training.log_every", "training.max_steps_this_run", "training.progress",
                       "dataset.shard_size", "dataset.library_shard_size",
                       "training.calibration_scenes"}


def load_segmenter_config(cfg):
    """Check a parsed training YAML (:class:`astrogen.pipeline.config.Config`) of a
    segmenter; returns the :class:`~astrogen.training.config.TrainingConfig`."""
    from astrogen.datasets.blends import BlendDatasetConfig
    from astrogen.training.config import TrainingConfig

    schema = _schema()
    c = _checks()
    top = c.check_mapping(cfg.data, schema[""], cfg, ())
    out = TrainingConfig(top)
    out.source = cfg.source
    arch = top["model"]
    other = "prob_unet" if arch == "unet" else "unet"
    if top[other]:
        raise UnknownKeyError(f"is the section of model '{other}', not of '{arch}'.",
                              key=other, line=cfg.line((other,)))
    out[arch] = c.check_mapping(top[arch] or {}, schema[arch], cfg, (arch,))
    out.pop(other)
    out["training"] = c.check_mapping(top["training"] or {}, schema["training"], cfg,
                                     ("training",))
    data = top["dataset"]
    if not isinstance(data, dict) or "path" not in data:
        raise ConfigError("is required: a mapping with 'path' (folder of the blend dataset; "
                          "built if missing) and the dataset settings.", key="dataset",
                          line=cfg.line(("dataset",)))
    body = {k: v for k, v in data.items() if k != "path"}
    try:
        ds = BlendDatasetConfig.from_dict(body)
    except AstrogenError as exc:
        k = exc.key or ""
        k = k[len("dataset."):] if k.startswith("dataset.") else k
        raise type(exc)(exc.message, key=f"dataset.{k}" if k else "dataset",
                        line=cfg.line(("dataset", k)), received=exc.received) from None
    out["dataset"] = {"path": c._str(data["path"]), **ds.to_dict()}
    if not str(out["output"]).endswith(".keras"):
        raise ConfigError("must be a file name ending in '.keras'.", key="output",
                          line=cfg.line(("output",)), received={"output": out["output"]})
    a = out[arch]
    if ds.stamp_size % (2 ** a["depth"]):
        raise ConfigError(f"dataset.stamp_size must be a multiple of 2**depth = "
                          f"{2 ** a['depth']}.", key=f"{arch}.depth",
                          line=cfg.line((arch, "depth")),
                          received={"stamp_size": ds.stamp_size, "depth": a["depth"]})
    t = out["training"]
    if t["validation_scenes"] + t["batch_size"] > ds.n_scenes:
        raise ConfigError("dataset.n_scenes must exceed validation_scenes + batch_size.",
                          key="training.validation_scenes",
                          line=cfg.line(("training", "validation_scenes")),
                          received={"n_scenes": ds.n_scenes, **{k: t[k] for k in (
                              "validation_scenes", "batch_size")}})
    return out


# ---------------------------------------------------------------------- model and losses
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


def slot_permutations(k: int) -> np.ndarray:
    """Channel index permutations ``(K!, K + 1)`` keeping channel 0 (background) first."""
    return np.array([(0, *[1 + p for p in perm]) for perm in itertools.permutations(range(k))],
                    dtype=np.int32)


def _pit_ce(y, logp, perms, weights=None, reduce="mean"):
    """Per-example min over slot permutations of the soft cross-entropy.

    ``y`` (B, h, w, C) targets, ``logp`` (B, h, w, C) log-probabilities, ``weights``
    (B, h, w) or None; ``reduce``: mean or sum over pixels. Returns (loss (B,), best perm (B,)).
    """
    import tensorflow as tf

    losses = []
    for p in perms:
        yp = tf.gather(y, p, axis=-1)
        ce = -tf.reduce_sum(yp * logp, axis=-1)
        if weights is not None:
            ce = ce * weights
        losses.append(tf.reduce_mean(ce, axis=(1, 2)) if reduce == "mean"
                      else tf.reduce_sum(ce, axis=(1, 2)))
    stacked = tf.stack(losses, axis=-1)
    return tf.reduce_min(stacked, axis=-1), tf.argmin(stacked, axis=-1)


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
        ``class_threshold`` sigma in slot order (0 = background).
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
    return out


def _for_comparison(cfg) -> dict:
    from astrogen.training.config import without_keys

    return without_keys(cfg, RESUME_MUTABLE_KEYS)


# ---------------------------------------------------------------------- training loop
def train_segmenter(cfg, resume: bool = False) -> dict:
    """Train a U-Net or probabilistic U-Net as configured; returns a summary dict (also in
    ``run_dir/result.json``)."""
    import keras
    import tensorflow as tf

    from astrogen.datasets.blends import (BlendDatasetConfig, blend_dataset_is_complete,
                                          build_blend_dataset, read_blend_scenes)
    from astrogen.training.checkpoint import restore_run, save_checkpoint

    arch = cfg["model"]
    a_cfg, t_cfg = cfg[arch], cfg["training"]
    seed = int(cfg["seed"])
    run_dir = cfg.run_dir
    ckpt_dir = run_dir / "checkpoints"
    output = Path(cfg["output"])
    config_file = run_dir / "config.json"
    ckpt = resume_checkpoint(run_dir, resume, lambda old: _flatten(_for_comparison(
        old if old is not None else json.loads(json.dumps(cfg)))))

    ds = dict(cfg["dataset"])
    ds_path = Path(ds.pop("path"))
    dcfg = BlendDatasetConfig.from_dict(ds)
    manifest = build_blend_dataset(ds_path, dcfg, progress=t_cfg["progress"])
    if not blend_dataset_is_complete(ds_path):  # pragma: no cover
        raise ConfigError("the blend dataset could not be completed.", key="dataset.path")
    data = read_blend_scenes(ds_path, fields=("image", "models", "sigma", "positions"))
    n_all = len(data["image"])
    n_val = int(t_cfg["validation_scenes"])
    n_train = n_all - n_val
    k = int(manifest["max_objects"])
    input_scale = float(f"{float(manifest['noise_sigma']):.4g}")
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(config_file, cfg)

    keras.utils.set_random_seed(derive_seed(seed, "init") % (2 ** 31))
    model = build_model(arch, a_cfg, k, input_scale, derive_seed(seed, "weights") % (2 ** 31))
    s = int(manifest["stamp_size"])
    model(np.zeros((1, s, s, model.n_bands), np.float32))
    steps = int(t_cfg["steps"])
    lr = t_cfg["learning_rate"]
    if t_cfg["lr_schedule"] == "cosine" and steps > 0:
        lr = keras.optimizers.schedules.CosineDecay(lr, decay_steps=steps,
                                                    alpha=t_cfg["lr_final_fraction"])
    clip = {"global_clipnorm": t_cfg["clipnorm"]} if t_cfg["clipnorm"] else {}
    opt = keras.optimizers.Adam(lr, name="adam", **clip)
    opt.build(model.trainable_variables)
    groups = {"model": model.weights, "optimizer": opt.variables}

    log_path = run_dir / "losses.jsonl"
    step = restore_run(ckpt, groups, log_path)

    perms = [list(map(int, p)) for p in slot_permutations(k)]
    batch = int(t_cfg["batch_size"])
    spe = n_train // batch
    fw = float(a_cfg.get("fraction_weight", 1.0))
    ow = float(a_cfg["order_weight"])
    pit = bool(a_cfg["permutation_invariant"])

    def losses_unet(b, training):
        out = model(b["x"], training=training)
        eps = 1e-7
        ce_c = -tf.reduce_sum(b["classes"] * tf.math.log(out["classes"] + eps), axis=-1)
        ce_c = tf.reduce_mean(ce_c * b["weights"], axis=(1, 2))
        logf = tf.math.log(out["fractions"] + eps)
        ce_f, _ = _pit_ce(b["fractions"], logf, perms if pit else perms[:1], b["weights"])
        ce_o, _ = _pit_ce(b["fractions"], logf, perms[:1], b["weights"])
        loss = tf.reduce_mean(ce_c + fw * (ce_f + ow * ce_o))
        return {"loss": loss, "classes": tf.reduce_mean(ce_c), "fractions": tf.reduce_mean(ce_f),
                "fractions_ordered": tf.reduce_mean(ce_o)}

    def losses_prob(b, training, eps_z):
        x = tf.convert_to_tensor(b["x"])
        y = tf.convert_to_tensor(b["fractions"])
        xt = model._transform(x)
        feats = model.backbone(xt, training=training)
        mu_p, ls_p = model.prior_net(xt, training=training)
        mu_q, ls_q = model.posterior_net(tf.concat([xt, y], axis=-1), training=training)
        z = mu_q + tf.exp(ls_q) * eps_z
        logits = model.fcomb([feats, z], training=training)
        logp = tf.nn.log_softmax(logits, axis=-1)
        rec, _ = _pit_ce(y, logp, perms if pit else perms[:1], None, reduce="sum")
        rec_o, _ = _pit_ce(y, logp, perms[:1], None, reduce="sum")
        from astrogen.models.prob_unet import kl_diag_gaussians

        kl = kl_diag_gaussians(mu_q, ls_q, mu_p, ls_p)
        rec_m, kl_m = tf.reduce_mean(rec), tf.reduce_mean(kl)
        ord_m = tf.reduce_mean(rec_o)
        return {"loss": rec_m + ow * ord_m + model.beta * kl_m, "reconstruction": rec_m,
                "reconstruction_ordered": ord_m, "kl": kl_m}

    latent = int(a_cfg.get("latent_dim", 1))

    @tf.function(reduce_retracing=True)
    def train_step(b, eps_z):
        with tf.GradientTape() as tape:
            out = losses_unet(b, True) if arch == "unet" else losses_prob(b, True, eps_z)
        grads = tape.gradient(out["loss"], model.trainable_variables)
        opt.apply(grads, model.trainable_variables)
        return out

    @tf.function(reduce_retracing=True)
    def eval_step(b):
        if arch == "unet":
            return losses_unet(b, False)
        return losses_prob(b, False, tf.zeros((tf.shape(b["x"])[0], latent)))

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
        vb = 64
        for lo in range(n_train, n_all, vb):
            rows = np.arange(lo, min(n_all, lo + vb))
            out = eval_step(tensors(make_batch(data["image"], data["models"], data["sigma"],
                                               rows, a_cfg, False, seed, 0, input_scale,
                                               data["positions"])))
            for kk, v in out.items():
                sums[kk] = sums.get(kk, 0.0) + float(v) * len(rows)
        return {f"val_{kk}": v / n_val for kk, v in sums.items()}

    max_run = t_cfg["max_steps_this_run"]
    stop_at = steps if max_run is None else min(steps, step + int(max_run))
    every, keep_n = int(t_cfg["checkpoint_every"]), int(t_cfg["keep_checkpoints"])
    from tqdm.auto import tqdm

    bar = tqdm(total=steps, initial=step, desc=arch, unit="step",
               disable=not t_cfg["progress"], dynamic_ncols=True)
    t_start = time.perf_counter()
    timed = [0, 0.0]
    last: dict = {}
    result = {"output": str(output), "run_dir": str(run_dir), "dataset": str(ds_path),
              "model": arch, "steps": steps, "start_step": step, "n_train": n_train,
              "n_validation": n_val, "input_scale": input_scale}
    try:
        with open(log_path, "a") as log:
            if step == 0 and stop_at > 0:
                log.write(json.dumps({"step": 0, **validate()}) + "\n")
                log.flush()
            first = True
            while step < stop_at:
                t0 = time.perf_counter()
                rows = batch_rows(step)
                b = make_batch(data["image"], data["models"], data["sigma"], rows, a_cfg,
                               t_cfg["augment"], seed, step, input_scale, data["positions"])
                eps_z = tf.random.stateless_normal(
                    (len(rows), latent), seed=[derive_seed(seed, "z") % (2 ** 31), step])
                out = {kk: float(v) for kk, v in train_step(tensors(b), eps_z).items()}
                if not math.isfinite(out["loss"]):
                    raise ConfigError("the loss is not finite (lower training.learning_rate or "
                                      "set clipnorm).", key="training",
                                      received={"step": step, **out})
                dt = time.perf_counter() - t0
                if not first:
                    timed[0] += 1
                    timed[1] += dt
                first = False
                step += 1
                last = out
                if step % int(t_cfg["log_every"]) == 0 or step == stop_at:
                    rec = {"step": step, **out,
                           "lr": float(np.asarray(opt.learning_rate)),
                           "time_s": round(time.perf_counter() - t_start, 3)}
                    if step % every == 0 or step == stop_at:
                        rec.update(validate())
                    log.write(json.dumps(rec) + "\n")
                    log.flush()
                    bar.set_postfix(loss=f"{out['loss']:.4g}")
                bar.update(1)
                if step % every == 0 or step == stop_at:
                    save_checkpoint(ckpt_dir, step, groups, {"seed": seed, "model": arch},
                                    keep=keep_n)
    finally:
        bar.close()
    complete = step >= steps
    result.update(steps_done=step, complete=complete, last=last,
                  steps_per_second=(timed[0] / timed[1]) if timed[1] > 0 else None)
    if complete and arch == "prob_unet" and int(t_cfg["calibration_scenes"]) > 0 and n_val:
        result["calibration"] = calibrate_temperature(
            model, data, range(n_train, n_train + min(n_val, int(t_cfg["calibration_scenes"]))),
            a_cfg, seed, input_scale)
        write_json(run_dir / "calibration.json", result["calibration"])
    if complete:
        save_model_atomic(model, output)
    write_json(run_dir / "result.json", result)
    return result


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
    from astrogen.training import load_training_config
    from astrogen.training.checkpoint import latest_checkpoint, load_checkpoint, \
        restore_variables

    cfg = load_training_config(str(config_path), overrides)
    arch = cfg["model"]
    if arch not in SEGMENTER_MODELS:
        raise ConfigError("not a segmenter configuration.", key="model",
                          received={"model": arch})
    ckpt = latest_checkpoint(cfg.run_dir / "checkpoints")
    if ckpt is None:
        raise ResumeError("the run folder holds no checkpoint.", key="run_dir",
                          received={"run_dir": str(cfg.run_dir)})
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

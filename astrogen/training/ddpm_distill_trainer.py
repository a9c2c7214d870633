"""Progressive distillation of the galaxy DDPM to few sampling steps (``model:
ddpm_distill`` in a training YAML; Salimans & Ho 2022, arXiv:2202.00512).

Rounds: the teacher is the trained DDPM sampled with deterministic DDIM on the
``distill.base_steps``-step grid (:func:`astrogen.schedulers.distilled.distillation_grid`);
round ``k`` trains a student (initialised with its teacher's weights) to do two teacher steps
in one, so it samples in ``base_steps / 2**(k+1)`` steps; the next round's teacher is that
student. Rounds run until ``distill.final_steps``. Each round takes
``training.steps_per_round`` optimisation steps (Adam, the learning rate decayed linearly to
0 within each round, the moments reset at each round, as in the paper). The loss and the
step are :class:`astrogen.models.ddpm_distill.ProgressiveDistiller`'s; the loop is
:class:`astrogen.training.loop.Run`'s.

Data: the ``truth`` field of the stamp data set of the teacher's kind
(:mod:`astrogen.datasets.galaxy_stamps`), mapped to the teacher's network space with the
teacher's intensity transform and condition features.

Outputs: at the end of each round the student is written beside ``output`` as
``<stem>_<N>step.keras`` (+ ``.json`` sidecar in the teacher's format, with a
``distillation`` block: method, ``num_steps``, ``base_steps``, spacing, teacher file and
SHA-256, steps), loadable with :func:`astrogen.models.ddpm_galaxy.load_ddpm` and sampled
with ``sampler="distilled"``.

Determinism and resume: step ``g`` uses rows ``perm_e[i*B:(i+1)*B]`` (``e, i = divmod(g,
n // B)``, ``perm_e`` seeded with ``derive_seed(seed, "data", e)``) and the stateless draws
of ``(derive_seed(seed, "step") mod 2**31, g)``; a checkpoint holds student, teacher and
optimizer variables, so ``--resume`` continues exactly.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from astrogen.errors import ConfigError
from astrogen.io.atomic import save_model_atomic
from astrogen.seeds import derive_seed
from astrogen.training.loop import Run
from astrogen.training.registry import Trainer, register_trainer
from astrogen.training.schema import (check_choice, check_float, check_int, check_sections,
                                      check_str, loop_keys, top_level)

__all__ = ["DDPMDistillTrainer", "train_ddpm_distill", "DISTILL_SCHEMA", "round_steps",
           "student_path", "SHIPPED_TEACHER"]

#: The teacher name that means the shipped weights.
SHIPPED_TEACHER = "ddpm_cosmos64"

#: section -> key -> (default, check) of ``model: ddpm_distill``
DISTILL_SCHEMA: dict = {
    "": top_level("ddpm_distill", sections=("distill",),
                  teacher=(SHIPPED_TEACHER, check_str)),
    "distill": {
        "base_steps": (8, check_int(2)),
        "final_steps": (1, check_int(1)),
        "timestep_spacing": ("trailing", check_choice("trailing", "linspace", "leading")),
    },
    "training": {
        "batch_size": (16, check_int(1)),
        "steps_per_round": (400, check_int(1)),
        "learning_rate": (1e-4, check_float(0.0, strict=True)),
        "clipnorm": (1.0, check_float(0.0, strict=True, optional=True)),
        **loop_keys(checkpoint_every=50, log_every=10, progress=False),
    },
}


def round_steps(base_steps: int, final_steps: int) -> list[int]:
    """Student steps of each round: ``base/2, base/4, ..., final``."""
    out, n = [], int(base_steps)
    while n > final_steps:
        if n % 2:
            break
        n //= 2
        out.append(n)
    if not out or out[-1] != final_steps:
        raise ConfigError("base_steps must be final_steps times a power of 2 (>= 2).",
                          key="distill.base_steps",
                          received={"base_steps": base_steps, "final_steps": final_steps})
    return out


def student_path(output, num_steps: int) -> Path:
    """File of the ``num_steps``-step student of a run whose ``output`` is ``output``."""
    out = Path(output)
    return out.with_name(f"{out.stem}_{int(num_steps)}step.keras")


def _teacher_path(name: str) -> Path:
    from astrogen.models.ddpm_galaxy import shipped_model_path

    if name == SHIPPED_TEACHER:
        return shipped_model_path()
    path = Path(name).expanduser()
    if path.suffix != ".keras" or not path.is_file() or not path.with_suffix(".json").is_file():
        raise ConfigError(f"must be '{SHIPPED_TEACHER}' or a DDPM .keras file with its .json "
                          "sidecar.", key="teacher", received={"teacher": name})
    return path


@register_trainer("ddpm_distill")
class DDPMDistillTrainer(Trainer):
    """``model: ddpm_distill``."""

    def check(self, cfg):
        from astrogen.datasets.galaxy_stamps import StampDatasetConfig

        out = check_sections(cfg, DISTILL_SCHEMA, ("distill",), StampDatasetConfig,
                             "stamp dataset")
        d, t = out["distill"], out["training"]
        round_steps(d["base_steps"], d["final_steps"])
        _teacher_path(out["teacher"])
        if t["batch_size"] > out["dataset"]["n_galaxies"]:
            raise ConfigError("must not exceed dataset.n_galaxies.", key="training.batch_size",
                              line=cfg.line(("training", "batch_size")),
                              received={"batch_size": t["batch_size"],
                                        "n_galaxies": out["dataset"]["n_galaxies"]})
        return out

    def train(self, cfg, resume: bool = False) -> dict:
        return train_ddpm_distill(cfg, resume)


def train_ddpm_distill(cfg, resume: bool = False) -> dict:
    """Run the distillation rounds as configured (module docstring); returns a summary."""
    import keras

    from astrogen.datasets.galaxy_stamps import prepare_stamp_dataset, read_stamps
    from astrogen.models.ddpm_distill import ProgressiveDistiller
    from astrogen.models.ddpm_galaxy import (DDPMGalaxyModel, condition_features, load_ddpm)
    from astrogen.schedulers.distilled import distillation_grid

    t_cfg, d_cfg = cfg["training"], cfg["distill"]
    seed = int(cfg["seed"])
    tpath = _teacher_path(cfg["teacher"])
    teacher_gm = load_ddpm(tpath)
    tsha = hashlib.sha256(tpath.read_bytes()).hexdigest()
    run = Run(cfg, resume)
    run.start()
    ds_path, manifest = prepare_stamp_dataset(cfg["dataset"], progress=t_cfg["progress"])
    n = int(manifest["stamp_size"])
    if n != teacher_gm.stamp_size:
        raise ConfigError("the data set's stamps must have the teacher's size.",
                          key="dataset.stamp_size",
                          received={"stamp_size": n, "teacher": teacher_gm.stamp_size})
    data = read_stamps(ds_path, fields=("truth", "conditions"))
    raw_c = data["conditions"].astype(np.float64)
    feats = condition_features(raw_c)
    x_all = teacher_gm.encode(data["truth"], raw_c[:, 0]).astype(np.float32)
    del data
    n_rows = len(x_all)

    student = keras.saving.load_model(str(tpath), compile=False)
    teacher = teacher_gm.network
    T = teacher_gm.schedule.num_train_steps
    base, spacing = int(d_cfg["base_steps"]), d_cfg["timestep_spacing"]
    rounds = round_steps(base, int(d_cfg["final_steps"]))
    spr = int(t_cfg["steps_per_round"])
    total = spr * len(rounds)

    def teacher_grid(k: int) -> np.ndarray:  # the teacher's timesteps in round k
        return distillation_grid(T, base, 2 * rounds[k], spacing)

    clip = {"global_clipnorm": t_cfg["clipnorm"]} if t_cfg["clipnorm"] else {}
    opt = keras.optimizers.Adam(learning_rate=float(t_cfg["learning_rate"]),
                                name="distill_adam", **clip)
    trainer = ProgressiveDistiller(student, teacher, teacher_gm.schedule, teacher_grid(0), opt,
                                   seed=derive_seed(seed, "step") % (2 ** 31))
    step = run.restore({"student": student.weights, "teacher": teacher.weights,
                        "optimizer": opt.variables}, seed=seed)
    (run.run_dir / "result.json").unlink(missing_ok=True)
    state = {"round": 0 if step == 0 else (step - 1) // spr}
    trainer.set_grid(teacher_grid(state["round"]))

    batch = int(t_cfg["batch_size"])
    spe = n_rows // batch
    data_seed = derive_seed(seed, "data")
    perms: dict = {}

    def rows(g: int) -> np.ndarray:
        e, i = divmod(g, spe)
        if e not in perms:
            perms.clear()
            perms[e] = np.random.default_rng(derive_seed(data_seed, e)).permutation(n_rows)
        return perms[e][i * batch:(i + 1) * batch]

    def export(k: int, steps_done: int) -> Path:
        meta = {key: v for key, v in teacher_gm.meta.items() if key != "distillation"}
        meta["distillation"] = {
            "method": "progressive (Salimans & Ho 2022, arXiv:2202.00512)",
            "num_steps": int(rounds[k]), "base_steps": base, "timestep_spacing": spacing,
            "teacher": str(tpath.name), "teacher_sha256": tsha, "round": k + 1,
            "steps_per_round": spr, "batch_size": batch, "seed": seed,
            "learning_rate": float(t_cfg["learning_rate"]), "dataset": str(ds_path),
            "dataset_config": manifest["config"], "steps_done": int(steps_done)}
        out = student_path(cfg["output"], rounds[k])
        save_model_atomic(DDPMGalaxyModel(student, teacher_gm.schedule, teacher_gm.intensity,
                                          meta), out)
        return out

    def step_fn(g: int) -> dict:
        k = g // spr
        if k != state["round"]:  # round boundary: the student becomes the teacher
            trainer.start_round(teacher_grid(k))
            state["round"] = k
        lr = float(t_cfg["learning_rate"]) * (1.0 - (g % spr) / spr)
        opt.learning_rate = lr
        r = rows(g)
        loss = trainer.train_step(x_all[r], feats[r], step=g)
        return {"phase": "train", "loss": loss, "lr": lr, "round": k,
                "student_steps": rounds[k]}

    outputs: list[str] = []

    def after(s: int, out: dict, stop: int) -> None:
        if s % spr == 0:
            outputs.append(str(export(s // spr - 1, s)))

    summary = run.loop(step, total, step_fn, name="ddpm_distill", after=after,
                       not_finite="the distillation loss is not finite (lower "
                                  "training.learning_rate).")
    result = {"dataset": str(ds_path), "teacher": str(tpath), "rounds": rounds,
              "steps": total, "start_step": step, "students": outputs}
    summary["steps_per_second"] = summary["steps_per_second"].get("train")
    result.update(summary)
    return run.finish(result)

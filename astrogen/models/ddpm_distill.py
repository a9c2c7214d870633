r"""Progressive distillation of a :class:`~astrogen.models.ddpm_unet.DDPMUNet` (Salimans &
Ho 2022, arXiv:2202.00512): the loss and the train step of a student that does in one
deterministic DDIM step what its teacher does in two.

Why progressive rather than consistency distillation (Song et al. 2023, arXiv:2303.01469):
the shipped galaxy DDPM already has the v-parameterisation and the cosine schedule that
progressive distillation was designed for, each round starts from its teacher's weights and
regresses on a deterministic target (a few hundred small-batch steps per round move it
little from a good initialisation, which matters on a CPU budget), and its few-step sampler
is plain DDIM on a sub-grid (:class:`~astrogen.schedulers.distilled.DistilledSampler`).
Consistency distillation needs a target network updated by EMA and, in its paper, several
hundred thousand iterations.

The loss of a batch (Algorithm 2 of the paper, "SNR+1" weighting): for each row a student
step ``i`` uniform in ``0 .. N-1`` on the student grid ``grid`` (``N`` timesteps, the
teacher's grid being ``2N`` timesteps ``g``), ``t = g[2i]``, ``t' = g[2i+1]``,
``t'' = g[2i+2]`` (clean data after the last), :math:`z_t = \alpha_t x + \sigma_t\epsilon`,
two teacher DDIM steps give :math:`z_{t''}`, the target :math:`\tilde x` of
:func:`astrogen.schedulers.distilled.two_step_target` and
:math:`\tilde v = (\alpha_t z_t - \tilde x)/\sigma_t`; the loss is
:math:`\|v_\theta(z_t) - \tilde v\|^2`, i.e. :math:`(1 + \mathrm{SNR}_t)\|\hat x - \tilde
x\|^2`.
"""
from __future__ import annotations

from numbers import Integral

import numpy as np
import keras
from keras import ops

from astrogen.errors import ConfigError
from astrogen.models.ddpm_unet import DDPMUNet

__all__ = ["ProgressiveDistiller", "distillation_loss", "alpha_sigma_tables"]


def alpha_sigma_tables(schedule):
    r""":math:`\alpha = \sqrt{\bar\alpha}` and :math:`\sigma = \sqrt{1-\bar\alpha}` as float32
    tensors of length ``T + 1``: index 0 is clean data (1, 0), index ``t + 1`` timestep ``t``."""
    ab = np.concatenate([[1.0], np.asarray(schedule.alpha_bar, np.float64)])
    return (ops.convert_to_tensor(np.sqrt(ab).astype(np.float32)),
            ops.convert_to_tensor(np.sqrt(1.0 - ab).astype(np.float32)))


def _x0_eps(model, z, t, a, s, cond, cond_mask, training):
    """Clean-image and noise predictions of a v- or eps-network at ``z`` (timesteps ``t``)."""
    out = model((z, t, cond, cond_mask), training=training)
    if getattr(model, "prediction", "eps") == "v":
        return a * z - s * out, a * out + s * z, out
    return (z - s * out) / a, out, out


def distillation_loss(student: DDPMUNet, teacher: DDPMUNet, schedule, grid, x0, step_index,
                      noise, cond=None, cond_mask=None, training: bool = False):
    """Progressive-distillation loss of a batch (module docstring), a scalar tensor.

    Parameters
    ----------
    student, teacher : DDPMUNet
        The student (trained; v-prediction) and its teacher (frozen; v or eps).
    schedule : astrogen.schedulers.NoiseSchedule
    grid : array of int (2N,)
        The teacher's decreasing timesteps; the student's are ``grid[::2]``.
    x0 : (B, H, W, C) clean images; step_index : (B,) ints in ``[0, N)``;
    noise : (B, H, W, C) N(0, 1); cond, cond_mask : as for :class:`DDPMUNet`.
    """
    import tensorflow as tf

    g = np.asarray(grid, np.int64)
    return _loss_with_grid(student, teacher, schedule, tf.constant(g.astype(np.int32)), x0,
                           tf.cast(step_index, tf.int32),
                           tf.cast(noise, tf.float32), cond, cond_mask, training)


class ProgressiveDistiller:
    """One optimisation step of a progressive-distillation round: the train step of
    ``astrogen train`` (``model: ddpm_distill``) and of direct use.

    Step ``g`` draws each row's student step, its noise and (with probability
    ``student.cond_drop_prob``) the null condition, shared by teacher and student, as
    TensorFlow stateless draws seeded with ``(seed, g)`` (a resumed run continues exactly),
    and minimises :func:`distillation_loss`.

    Parameters
    ----------
    student, teacher : DDPMUNet
        Same architecture; the student usually starts as a copy of the teacher
        (:meth:`start_round`).
    schedule : NoiseSchedule
    grid : array of int (2N,)
        The teacher's timesteps of the current round.
    optimizer : keras optimizer, optional
        Default ``Adam(1e-4)``.
    seed : int in [0, 2**31)
    jit : bool
        Compile the step with ``tf.function`` (default True).
    """

    def __init__(self, student: DDPMUNet, teacher: DDPMUNet, schedule, grid, optimizer=None,
                 seed: int = 0, jit: bool = True):
        for key, m in (("student", student), ("teacher", teacher)):
            if not isinstance(m, DDPMUNet):
                raise ConfigError("must be a DDPMUNet.", key=key,
                                  received={key: type(m).__name__})
        if student.get_config() | {"name": ""} != teacher.get_config() | {"name": ""}:
            raise ConfigError("student and teacher must have the same architecture.",
                              key="student")
        if isinstance(seed, bool) or not isinstance(seed, Integral) or not 0 <= seed < 2 ** 31:
            raise ConfigError("must be an integer in [0, 2**31).", key="seed",
                              received={"seed": seed})
        self.student, self.teacher, self.schedule = student, teacher, schedule
        student.build()
        teacher.build()
        self.set_grid(grid)
        self.optimizer = optimizer or keras.optimizers.Adam(learning_rate=1e-4)
        self.optimizer.build(student.trainable_variables)
        self.seed = int(seed)
        self._step = self._step_impl
        if jit:
            import tensorflow as tf
            self._step = tf.function(self._step_impl, reduce_retracing=True)

    def set_grid(self, grid) -> None:
        """The teacher's timesteps (decreasing, an even number ``2N >= 2``)."""
        g = np.asarray(grid)
        if g.ndim != 1 or g.size < 2 or g.size % 2 or np.any(np.diff(g) >= 0) \
                or g.dtype.kind not in "iu" or g.min() < 0 \
                or g.max() >= self.schedule.num_train_steps:
            raise ConfigError("must be a decreasing array of an even number of training "
                              "timesteps.", key="grid", received={"grid": g.tolist()})
        self.grid = g.astype(np.int64)
        self._grid_tf = None

    def start_round(self, grid) -> None:
        """Next round: the teacher takes the student's weights, the grid becomes ``grid``
        (half as many steps), the optimizer's moments are reset."""
        for dst, src in zip(self.teacher.weights, self.student.weights):
            dst.assign(src)
        for v in self.optimizer.variables:
            v.assign(ops.zeros_like(v))
        self.set_grid(grid)

    def _step_impl(self, x0, cond, has_cond: bool, g, grid):
        import tensorflow as tf

        s = tf.stack([tf.constant(self.seed, tf.int64), tf.cast(g, tf.int64)])
        b = tf.shape(x0)[0]
        n_student = tf.shape(grid)[0] // 2
        i = tf.random.stateless_uniform([b], seed=s, minval=0, maxval=n_student,
                                        dtype=tf.int32)
        noise = tf.random.stateless_normal(tf.shape(x0), seed=s + [0, 1 << 40])
        if has_cond:
            u = tf.random.stateless_uniform([b], seed=s + [0, 2 << 40])
            mask = tf.cast(u >= self.student.cond_drop_prob, tf.float32)
        else:
            cond, mask = None, None
        with tf.GradientTape() as tape:
            loss = _loss_with_grid(self.student, self.teacher, self.schedule, grid, x0, i,
                                   noise, cond, mask, True)
        variables = self.student.trainable_variables
        grads = tape.gradient(loss, variables)
        self.optimizer.apply_gradients(zip(grads, variables))
        return loss

    def train_step(self, x0, cond=None, step: int = 0) -> float:
        """One step on a batch ``x0`` ``(B, H, W, C)`` (network space) with its ``cond``,
        using the draws of step ``step``; returns the loss before the update."""
        import tensorflow as tf

        x0 = tf.constant(np.asarray(x0, np.float32))
        grid = tf.constant(self.grid.astype(np.int32))
        g = tf.constant(int(step), tf.int64)
        if cond is None:
            return float(self._step(x0, tf.zeros((1,)), False, g, grid))
        return float(self._step(x0, tf.constant(np.asarray(cond, np.float32)), True, g, grid))


def _loss_with_grid(student, teacher, schedule, grid, x0, i, noise, cond, mask, training):
    """:func:`distillation_loss` with the grid as a tensor (one trace for every round)."""
    import tensorflow as tf

    a_tab, s_tab = alpha_sigma_tables(schedule)
    full = tf.concat([tf.cast(grid, tf.int32), tf.constant([-1], tf.int32)], 0)
    t, t1, t2 = (tf.gather(full, 2 * i + k) for k in (0, 1, 2))

    def coef(tab, tt):
        return tf.reshape(tf.gather(tab, tt + 1), (-1, 1, 1, 1))

    x0 = tf.cast(x0, tf.float32)
    a, s = coef(a_tab, t), coef(s_tab, t)
    a1, s1 = coef(a_tab, t1), coef(s_tab, t1)
    a2, s2 = coef(a_tab, t2), coef(s_tab, t2)
    z = a * x0 + s * noise
    xh, eh, _ = _x0_eps(teacher, z, t, a, s, cond, mask, False)
    z1 = a1 * xh + s1 * eh
    xh1, eh1, _ = _x0_eps(teacher, z1, t1, a1, s1, cond, mask, False)
    z2 = a2 * xh1 + s2 * eh1
    ratio = s2 / s
    x_tilde = tf.stop_gradient((z2 - ratio * z) / (a2 - ratio * a))
    out = student((z, t, cond, mask), training=training)
    if getattr(student, "prediction", "eps") == "v":
        target = (a * z - x_tilde) / s
    else:
        target = (z - a * x_tilde) / s
    return tf.reduce_mean(tf.square(out - target))

"""Progressive-distillation loss and train step (astrogen.models.ddpm_distill) on tiny
U-Nets: the TF loss equals the numpy definition built on two teacher DDIM steps, the step
trains the student only, is deterministic under its seed, and a new round hands the
student's weights to the teacher."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from astrogen.errors import ConfigError  # noqa: E402


def _net(seed, prediction="v"):
    import keras

    from astrogen.models.ddpm_unet import DDPMUNet

    keras.utils.set_random_seed(seed)
    net = DDPMUNet(image_size=8, base_channels=8, channel_mults=(1, 2), num_res_blocks=1,
                   attention_resolutions=(4,), cond_dim=3, norm_groups=4,
                   cond_mean=[22.0, -1.0, 0.6], cond_std=[2.0, 0.7, 0.3], prediction=prediction)
    net.build()
    rng = np.random.default_rng(seed)
    for v in net.weights:  # non-trivial outputs (conv_out starts at zero)
        v.assign((0.05 * rng.standard_normal(v.shape)).astype(v.dtype))
    return net


@pytest.fixture(scope="module")
def parts():
    from astrogen.schedulers import NoiseSchedule, distillation_grid

    sched = NoiseSchedule.cosine(100)
    return sched, distillation_grid(100, 4, 4), _net(1), _net(2)


@pytest.mark.parametrize("prediction", ["v", "eps"])
def test_loss_equals_numpy_two_step_definition(parts, prediction):
    import tensorflow as tf

    from astrogen.models.ddpm_distill import distillation_loss
    from astrogen.models.ddpm_unet import as_eps_model
    from astrogen.schedulers import two_step_target

    sched, grid, teacher, _ = parts
    student = _net(3, prediction)
    rng = np.random.default_rng(0)
    x0 = rng.normal(0, 0.3, (4, 8, 8, 1)).astype(np.float32)
    noise = rng.normal(size=x0.shape).astype(np.float32)
    cond = np.array([[21, 0.3, 0.5]] * 4, np.float32)
    mask = np.ones(4, np.float32)
    idx = np.array([0, 1, 0, 1])
    loss = float(distillation_loss(student, teacher, sched, grid, x0, idx, noise, cond, mask))
    t_eps = as_eps_model(teacher, schedule=sched)
    full = list(grid) + [-1]
    ab = sched.alpha_bar
    terms = []
    for r in range(4):
        t, t1, t2 = full[2 * idx[r]], full[2 * idx[r] + 1], full[2 * idx[r] + 2]
        a, s = np.sqrt(ab[t]), np.sqrt(1 - ab[t])
        z = a * x0[r:r + 1].astype(np.float64) + s * noise[r:r + 1]
        xt = two_step_target(sched, t_eps, z, t, t1, t2, cond[r:r + 1])
        out = np.asarray(student((tf.constant(z, tf.float32), tf.constant([t]),
                                  tf.constant(cond[r:r + 1]), tf.constant([1.0]))))
        target = (a * z - xt) / s if prediction == "v" else (z - a * xt) / s
        terms.append(np.mean((out - target) ** 2))
    assert loss == pytest.approx(np.mean(terms), rel=2e-3)


@pytest.mark.parametrize("step", [0, 1])
def test_v_loss_weights_the_clean_image_error_by_snr_plus_one(parts, step):
    """Salimans & Ho 2022 (sec. 4, 'SNR+1' weighting): the v-loss of a v-student is its
    clean-image error weighted by 1 + SNR_t >= 1, so at the lowest-SNR step (t = 999-like,
    alpha ~ 0) the student is still trained to predict x (the weight does not vanish as the
    plain SNR weighting of an eps-loss would)."""
    import tensorflow as tf

    from astrogen.models.ddpm_distill import distillation_loss
    from astrogen.models.ddpm_unet import as_eps_model
    from astrogen.schedulers import two_step_target

    sched, grid, teacher, _ = parts
    student = _net(4, "v")
    rng = np.random.default_rng(3)
    x0 = rng.normal(0, 0.3, (3, 8, 8, 1)).astype(np.float32)
    noise = rng.normal(size=x0.shape).astype(np.float32)
    cond = np.array([[22, -0.5, 0.4]] * 3, np.float32)
    idx = np.full(3, step)
    loss = float(distillation_loss(student, teacher, sched, grid, x0, idx, noise, cond,
                                   np.ones(3, np.float32)))
    full = list(grid) + [-1]
    t, t1, t2 = full[2 * step], full[2 * step + 1], full[2 * step + 2]
    ab = float(sched.alpha_bar[t])
    a, s = np.sqrt(ab), np.sqrt(1.0 - ab)
    z = a * x0.astype(np.float64) + s * noise
    x_tilde = two_step_target(sched, as_eps_model(teacher, schedule=sched), z, t, t1, t2, cond)
    v_hat = np.asarray(student((tf.constant(z, tf.float32), tf.constant([t] * 3),
                                tf.constant(cond), tf.constant(np.ones(3, np.float32)))))
    x_hat = a * z - s * v_hat          # the student's clean-image prediction
    weight = 1.0 + ab / (1.0 - ab)     # 1 + SNR_t
    assert weight >= 1.0
    assert loss == pytest.approx(weight * np.mean((x_hat - x_tilde) ** 2), rel=2e-3)


def test_train_step_trains_student_only_and_is_seeded(parts):
    import keras

    from astrogen.models.ddpm_distill import ProgressiveDistiller

    sched, grid, teacher, _ = parts
    rng = np.random.default_rng(1)
    x0 = rng.normal(0, 0.3, (4, 8, 8, 1)).astype(np.float32)
    cond = np.array([[21, 0.3, 0.5]] * 4, np.float32)
    t_before = [np.array(v) for v in teacher.weights]
    losses = []
    for _ in range(2):
        student = _net(5)
        s_before = [np.array(v) for v in student.trainable_weights]
        d = ProgressiveDistiller(student, teacher, sched, grid, keras.optimizers.Adam(1e-3),
                                 seed=9, jit=False)  # eager: no tracing cost in tests
        losses.append([d.train_step(x0, cond, step=g) for g in range(2)])
        assert all(np.isfinite(losses[-1]))
        assert any(not np.array_equal(a, np.array(b))
                   for a, b in zip(s_before, student.trainable_weights))
    assert losses[0] == losses[1]  # same seed, same draws, same result
    assert all(np.array_equal(a, np.array(b)) for a, b in zip(t_before, teacher.weights))
    # next round: the teacher is the student, the grid halves
    d.start_round(grid[::2])
    assert all(np.array_equal(np.array(a), np.array(b))
               for a, b in zip(teacher.weights, student.weights))
    assert d.grid.tolist() == grid[::2].tolist()
    for a, b in zip(t_before, teacher.weights):  # restore the shared fixture
        b.assign(a)


def test_arguments_are_checked(parts):
    from astrogen.models.ddpm_distill import ProgressiveDistiller

    sched, grid, teacher, student = parts
    with pytest.raises(ConfigError, match="grid"):
        ProgressiveDistiller(student, teacher, sched, grid[:3])
    with pytest.raises(ConfigError, match="student"):
        ProgressiveDistiller("net", teacher, sched, grid)
    with pytest.raises(ConfigError, match="architecture"):
        from astrogen.models.ddpm_unet import DDPMUNet
        other = DDPMUNet(image_size=8, base_channels=4, channel_mults=(1, 2),
                         attention_resolutions=(4,), norm_groups=4, num_res_blocks=1)
        ProgressiveDistiller(other, teacher, sched, grid)

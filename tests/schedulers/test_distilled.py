"""DistilledSampler and the progressive-distillation target (Salimans & Ho 2022): nested step
grids, determinism, shape, and the defining property: a student whose one step is the
target lands exactly where two teacher DDIM steps land."""
import numpy as np
import pytest

from astrogen.errors import ConfigError
from astrogen.schedulers import (DDIMSampler, DistilledSampler, NoiseSchedule,
                                 distillation_grid, make_timesteps, two_step_target)


def test_grids_are_nested_halvings_of_the_teacher_grid():
    T = 1000
    base = distillation_grid(T, 8, 8)
    assert np.array_equal(base, make_timesteps(T, 8, "trailing"))
    for n in (4, 2, 1):
        g = distillation_grid(T, 8, n)
        assert len(g) == n and np.all(np.diff(g) < 0)
        assert np.array_equal(g, distillation_grid(T, 8, 2 * n)[::2])  # every other step
    assert distillation_grid(T, 8, 1).tolist() == [T - 1]  # one step starts from pure noise
    for bad in (3, 6, 16):  # not base / 2**k, or more steps than the teacher
        with pytest.raises(ConfigError, match="num_steps"):
            distillation_grid(T, 8, bad)
    with pytest.raises(ConfigError, match="base_steps"):
        distillation_grid(10, 16, 1)


def test_sampler_timesteps_shape_finite_and_deterministic(cosine, oracles):
    eps = oracles.gaussian(cosine, 0.3, 0.5)
    smp = DistilledSampler(cosine, num_steps=2, base_steps=8)
    assert smp.timesteps.tolist() == distillation_grid(1000, 8, 2).tolist()
    assert "base_steps=8" in repr(smp)
    one = DistilledSampler(cosine, num_steps=1, base_steps=8)
    x = one.sample(eps, (3, 5, 5, 1), seed=4)
    assert x.shape == (3, 5, 5, 1) and np.all(np.isfinite(x))
    y1 = smp.sample(eps, (3, 5, 5, 1), seed=np.array([7, 8, 9], np.uint64))
    y2 = smp.sample(eps, (3, 5, 5, 1), seed=np.array([7, 8, 9], np.uint64))
    y3 = smp.sample(eps, (3, 5, 5, 1), seed=np.array([7, 8, 10], np.uint64))
    assert np.array_equal(y1, y2)
    assert np.array_equal(y1[:2], y3[:2]) and not np.allclose(y1[2], y3[2])
    with pytest.raises(ConfigError, match="schedule"):
        DistilledSampler("cosine", 1)


def _ideal_student(sched, teacher, student_grid):
    """An eps-callable whose single DDIM step t -> t'' is the two-step target of ``teacher``
    (the loss-zero student of a distillation round on ``student_grid``)."""
    full = list(student_grid) + [-1]

    def eps(x, t, cond):
        t0 = int(np.asarray(t)[0])
        i = full.index(t0)
        t_end = full[i + 1]
        teacher_grid = list(distillation_grid(sched.num_train_steps, 2 * len(student_grid),
                                              2 * len(student_grid)))
        t_mid = (teacher_grid + [-1])[teacher_grid.index(t0) + 1]
        x_tilde = two_step_target(sched, teacher, x, t0, t_mid, t_end, cond)
        a = sched.alpha_bar[t0]
        return (x - np.sqrt(a) * x_tilde) / np.sqrt(1.0 - a)

    return eps


@pytest.mark.parametrize("n_student", [1, 2])
def test_ideal_student_reproduces_two_teacher_steps_per_step(cosine, oracles, n_student):
    """A toy teacher (exact Gaussian-data denoiser): the student equal to its distillation
    target gives in N steps the teacher's 2N-step DDIM result, from the same noise."""
    teacher = oracles.gaussian(cosine, 0.4, 0.3)
    student = _ideal_student(cosine, teacher, distillation_grid(1000, 2 * n_student,
                                                                n_student))
    x_student = DistilledSampler(cosine, n_student, base_steps=2 * n_student).sample(
        student, (4, 6, 6, 1), seed=11)
    x_teacher = DDIMSampler(cosine, 2 * n_student, timestep_spacing="trailing").sample(
        teacher, (4, 6, 6, 1), seed=11)
    np.testing.assert_allclose(x_student, x_teacher, rtol=1e-9, atol=1e-9)
    # and it is not trivially so: one plain teacher step lands elsewhere
    x_one = DDIMSampler(cosine, n_student, timestep_spacing="trailing").sample(
        teacher, (4, 6, 6, 1), seed=11)
    assert np.max(np.abs(x_one - x_teacher)) > 1e-3


def test_two_step_target_checks_its_timesteps(cosine, oracles):
    teacher = oracles.gaussian(cosine, 0.0, 1.0)
    with pytest.raises(ConfigError, match="t_mid"):
        two_step_target(cosine, teacher, np.zeros((1, 2)), 500, 600, -1)
    sched = NoiseSchedule.linear(100)
    x = two_step_target(sched, teacher, np.ones((2, 3)), 99, 49, -1)
    assert x.shape == (2, 3) and np.all(np.isfinite(x))

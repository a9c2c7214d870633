"""Noise schedules and samplers of denoising diffusion models (pure numpy).

Like diffusers' schedulers, nothing here knows a network: samplers take any callable
``eps_model(x_t, t, cond) -> eps_hat`` (numpy or TF arrays) and a seed, so they can be tested
against analytic models and reused with any noise-prediction network
(:mod:`astrogen.models.ddpm_unet` provides the adapter for its U-Net).

Example (``eps_model`` any such callable, ``c`` its condition)::

    from astrogen.schedulers import NoiseSchedule, DDIMSampler
    sched = NoiseSchedule.cosine(1000)
    x = DDIMSampler(sched, num_steps=50).sample(eps_model, (8, 64, 64, 1), cond=c, seed=1)
"""
from astrogen.schedulers.base import Sampler, make_timesteps
from astrogen.schedulers.ddim import DDIMSampler
from astrogen.schedulers.ddpm import DDPMSampler
from astrogen.schedulers.distilled import DistilledSampler, distillation_grid, two_step_target
from astrogen.schedulers.dpm_solver import DPMSolverSampler
from astrogen.schedulers.guidance import guided
from astrogen.schedulers.inpaint import inpaint
from astrogen.schedulers.schedules import (NoiseSchedule, cosine_beta_schedule,
                                           linear_beta_schedule)

__all__ = ["NoiseSchedule", "linear_beta_schedule", "cosine_beta_schedule", "Sampler",
           "make_timesteps", "DDPMSampler", "DDIMSampler", "DPMSolverSampler", "guided",
           "inpaint", "DistilledSampler", "distillation_grid", "two_step_target"]

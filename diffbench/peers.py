"""Other libraries' samplers run on diffbench's models: the peers that timings and agreement checks compare with.
Each peer imports its library where it is used (``pip install diffusers``: it is a test dependency, not a runtime
one), and says so clearly when the library is missing."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from diffbench.sampling import EpsModel
from diffbench.schedules import NoiseSchedule


class PeerUnavailable(RuntimeError):
    """The peer library is not installed."""


def diffusers_ddim(schedule: NoiseSchedule) -> Any:
    """diffusers' ``DDIMScheduler`` on ``schedule``'s betas, set up to agree with :func:`diffbench.sampling.ddim_sample`
    on the ``trailing`` grid: eps prediction, no clipping, ``set_alpha_to_one`` (the last step goes to ``abar = 1``),
    ``steps_offset = 0``. It steps from ``t`` to ``t - T // steps`` rather than to its grid's next point, so the two
    agree on grids of that spacing ("trailing", or "leading", with ``steps`` dividing ``T``); diffusers keeps
    ``abar`` in float32 where diffbench uses float64."""
    try:
        from diffusers import DDIMScheduler
    except ImportError as err:
        raise PeerUnavailable(f"diffusers is not installed (`pip install diffusers`): {err}") from None
    return DDIMScheduler(
        num_train_timesteps=schedule.num_steps,
        trained_betas=schedule.betas.numpy(),
        clip_sample=False,
        set_alpha_to_one=True,
        steps_offset=0,
        prediction_type="epsilon",
        timestep_spacing="trailing",
    )


@torch.no_grad()
def diffusers_ddim_sample(
    model: EpsModel, x_T: Tensor, scheduler: Any, steps: int, *, cond: dict | None = None
) -> Tensor:
    """diffusers' own DDIM loop (``set_timesteps``, then ``model`` and ``scheduler.step`` per timestep, ``eta = 0``)
    from ``x_T`` on its device; ``model(x_t, t [B] long, **cond)``."""
    scheduler.set_timesteps(steps, device=x_T.device)
    x = x_T
    for t in scheduler.timesteps:
        eps = model(x, t.expand(len(x)), **(cond or {}))
        x = scheduler.step(eps, t, x).prev_sample
    return x

"""Samplers as small pure functions over ``eps(x, t, **cond)`` and a ``NoiseSchedule``.

Noise comes only from the given generator(s): a single ``torch.Generator`` for the whole batch, or a sequence
of generators, one per sample (EDM's per-seed streams), in which case sample ``i``'s noise depends only on
generator ``i`` and its trajectory is the same whatever batch it is drawn in.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor
from tqdm.auto import tqdm

from diffbench.models import device_of
from diffbench.schedules import NoiseSchedule

EpsModel = Callable[..., Tensor]
Generators = torch.Generator | Sequence[torch.Generator]


def sample_generators(seed: int, n: int, device: torch.device | str = "cpu") -> list[torch.Generator]:
    """One generator per sample, sample ``i`` seeded with ``seed * 2**20 + i`` (independent of batch layout)."""
    return [torch.Generator(device).manual_seed(seed * 2**20 + i) for i in range(n)]


def randn(shape: Sequence[int], generator: Generators, device: torch.device | str) -> Tensor:
    """Standard normal noise of ``shape`` drawn on the generator's device, then moved to ``device``."""
    if isinstance(generator, torch.Generator):
        return torch.randn(tuple(shape), generator=generator, device=generator.device).to(device)
    if len(generator) != shape[0]:
        raise ValueError(f"got {len(generator)} per-sample generators for a batch of {shape[0]}")
    return torch.stack([torch.randn(tuple(shape[1:]), generator=g, device=g.device) for g in generator]).to(device)


def _timesteps(schedule: NoiseSchedule, steps: int) -> list[int]:
    """``steps`` timesteps evenly spaced over ``[0, T-1]``, descending (DDIM's "uniform" spacing)."""
    if not 1 <= steps <= schedule.num_steps:
        raise ValueError(f"steps must be in [1, {schedule.num_steps}], got {steps}")
    grid = torch.linspace(0, schedule.num_steps - 1, steps).round().long().unique()
    return grid.flip(0).tolist()


@torch.no_grad()
def ddpm_sample(
    model: EpsModel,
    schedule: NoiseSchedule,
    shape: Sequence[int],
    generator: Generators,
    *,
    cond: dict | None = None,
    return_trajectory: bool = False,
    clip_denoised: float | None = None,
    progress: bool = False,
) -> Tensor:
    """Ancestral DDPM sampling over all ``T`` steps (Ho et al. 2020, Algorithm 2):
    ``x_{t-1} = (x_t - beta_t / sqrt(1 - abar_t) eps) / sqrt(alpha_t) + sigma_t z`` with the posterior variance
    ``sigma_t^2 = beta_t (1 - abar_{t-1}) / (1 - abar_t)`` (eq. 7). Written as DDIM with ``eta = 1`` on the full
    grid, which is algebraically the same update. Returns ``[B, ...]`` or the trajectory ``[T+1, B, ...]``."""
    return ddim_sample(
        model,
        schedule,
        shape,
        schedule.num_steps,
        eta=1.0,
        generator=generator,
        cond=cond,
        return_trajectory=return_trajectory,
        clip_denoised=clip_denoised,
        progress=progress,
    )


@torch.no_grad()
def ddim_sample(
    model: EpsModel,
    schedule: NoiseSchedule,
    shape: Sequence[int],
    steps: int,
    eta: float = 0.0,
    generator: Generators | None = None,
    *,
    cond: dict | None = None,
    return_trajectory: bool = False,
    clip_denoised: float | None = None,
    progress: bool = False,
    x_T: Tensor | None = None,
) -> Tensor:
    """DDIM (Song et al. 2021, eq. 12) on ``steps`` evenly spaced timesteps:
    ``x0 = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)``,
    ``sigma = eta sqrt((1 - abar_prev) / (1 - abar_t)) sqrt(1 - abar_t / abar_prev)``,
    ``x_prev = sqrt(abar_prev) x0 + sqrt(1 - abar_prev - sigma^2) eps + sigma z``, with ``abar_prev = 1`` after
    the last step. ``eta = 0`` is deterministic given ``x_T``; ``eta = 1`` on the full grid is DDPM.
    Returns samples ``[B, ...]`` or, with ``return_trajectory``, ``[steps+1, B, ...]`` from ``x_T`` to ``x_0``.
    """
    if not eta >= 0:
        raise ValueError(f"eta must be >= 0, got {eta}")
    if generator is None:
        raise ValueError("a torch.Generator (or one per sample) is required: samplers never use the global RNG")
    cond = cond or {}
    device = device_of(model)
    x = randn(shape, generator, device) if x_T is None else x_T.to(device)
    timesteps = _timesteps(schedule, steps)
    abar = schedule.alpha_bar
    trajectory = [x.cpu()] if return_trajectory else None
    for i, t in enumerate(tqdm(timesteps, disable=not progress, desc="sampling", leave=False)):
        a_t = abar[t]
        a_prev = abar[timesteps[i + 1]] if i + 1 < len(timesteps) else torch.tensor(1.0, dtype=torch.float64)
        t_batch = torch.full((x.shape[0],), t, device=device, dtype=torch.long)
        eps = model(x, t_batch, **cond)
        x0 = (x - (1 - a_t).sqrt().item() * eps) / a_t.sqrt().item()
        if clip_denoised is not None:
            x0 = x0.clamp(-clip_denoised, clip_denoised)
            eps = (x - a_t.sqrt().item() * x0) / (1 - a_t).sqrt().item()
        sigma = eta * ((1 - a_prev) / (1 - a_t)).sqrt() * (1 - a_t / a_prev).sqrt()
        direction = (1 - a_prev - sigma**2).clamp(min=0).sqrt()
        x = a_prev.sqrt().item() * x0 + direction.item() * eps
        if sigma > 0:
            x = x + sigma.item() * randn(x.shape, generator, device)
        if trajectory is not None:
            trajectory.append(x.cpu())
    return torch.stack(trajectory) if trajectory is not None else x

"""diffbench's DDIM against diffusers' DDIMScheduler loop on the grid where both step the same way (trailing,
50 steps dividing T = 1000): they differ only by diffusers' float32 ``abar``. Skipped where diffusers is not
installed (it is in the ``dev`` extra)."""

from __future__ import annotations

import pytest
import torch

from diffbench.models.unet import UNet
from diffbench.peers import diffusers_ddim, diffusers_ddim_sample
from diffbench.sampling import ddim_sample, leading_timesteps, randn, sample_generators, trailing_timesteps
from diffbench.schedules import NoiseSchedule

pytest.importorskip("diffusers")


def _samples(schedule: NoiseSchedule, grid: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = UNet(base_channels=8, image_size=8, num_classes=3).eval()
    x_T = randn((8, 1, 8, 8), sample_generators(0, 8), "cpu")
    cond = {"y": torch.arange(8) % 3}
    ours = ddim_sample(model, x_T, grid, schedule, cond=cond)
    theirs = diffusers_ddim_sample(model, x_T, diffusers_ddim(schedule), 50, cond=cond)
    return ours, theirs


@pytest.mark.parametrize("schedule", [NoiseSchedule.cosine(1000), NoiseSchedule.linear(1000)], ids=str)
def test_ddim_equals_diffusers_on_the_trailing_grid(schedule):
    ours, theirs = _samples(schedule, trailing_timesteps(1000, 50))
    assert ((ours - theirs).norm() / ours.norm()).item() < 1e-4


def test_a_different_grid_is_told_apart():
    """The check can fail: the leading grid (980, ..., 0) is not the trailing one diffusers was set up with."""
    ours, theirs = _samples(NoiseSchedule.linear(1000), leading_timesteps(1000, 50))
    assert ((ours - theirs).norm() / ours.norm()).item() > 1e-2

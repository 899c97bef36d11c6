"""Known-answer helpers for Gaussian data laws, shared by the sampler and distillation tests."""

from __future__ import annotations

import math

import torch

from diffbench.schedules import NoiseSchedule


def gaussian_eps(schedule: NoiseSchedule, mu: torch.Tensor, s: float):
    """The exact eps-model for data ``x0 ~ N(mu, s^2 I)``: with ``alpha = sqrt(abar_t)``, ``sigma = sqrt(1 - abar_t)``,
    ``x_t ~ N(alpha mu, (alpha^2 s^2 + sigma^2) I)`` and ``E[eps | x_t] = sigma (x_t - alpha mu) / (alpha^2 s^2 +
    sigma^2)``. Parameter-free, float64 arithmetic, returns ``x``'s dtype (``s = 0``: a point mass at ``mu``)."""

    def model(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        abar = schedule.alpha_bar[t.cpu()].reshape(-1, *([1] * (x.ndim - 1)))
        alpha, sigma = abar.sqrt(), (1 - abar).sqrt()
        return (sigma * (x.double() - alpha * mu) / (alpha**2 * s**2 + sigma**2)).to(x.dtype)

    return model


def alpha_sigma(schedule: NoiseSchedule, t: int) -> tuple[float, float]:
    """``(sqrt(abar_t), sqrt(1 - abar_t))``; ``t = -1`` is the end of sampling, ``abar = 1``."""
    if t < 0:
        return 1.0, 0.0
    abar = float(schedule.alpha_bar[t])
    return math.sqrt(abar), math.sqrt(1 - abar)

"""Discrete DDPM noise schedules and exact SNR <-> timestep conversion.

Forward process (Ho et al. 2020, eq. 4): ``x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps`` with
``abar_t = prod_{s<=t} (1 - beta_s)``. The signal-to-noise ratio is ``SNR(t) = abar_t / (1 - abar_t)``
(Kingma et al. 2021), strictly decreasing in ``t`` for both schedules below, so the map is invertible.
Timesteps are 0-based: ``t = 0`` is the least noisy step, ``t = num_steps - 1`` the noisiest.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class ScheduleConfig:
    """Hashable description of a schedule (goes into artifact keys and reports)."""

    kind: str = "linear"
    num_steps: int = 1000

    def build(self) -> NoiseSchedule:
        builders = {"linear": NoiseSchedule.linear, "cosine": NoiseSchedule.cosine}
        if self.kind not in builders:
            raise ValueError(f"unknown schedule {self.kind!r}; choose one of {sorted(builders)}")
        return builders[self.kind](self.num_steps)


class NoiseSchedule:
    """A discrete schedule given by its betas ``[T]`` (float64 internally for exact conversions)."""

    def __init__(self, betas: Tensor, name: str = "custom") -> None:
        betas = torch.as_tensor(betas, dtype=torch.float64)
        if betas.ndim != 1 or len(betas) < 1:
            raise ValueError(f"betas must be a non-empty 1-D tensor, got shape {tuple(betas.shape)}")
        bad = ~((betas > 0) & (betas < 1))
        if bool(bad.any()):
            steps = bad.nonzero().flatten()[:5].tolist()
            raise ValueError(f"every beta must lie in (0, 1), got {betas[bad][:5].tolist()} at steps {steps}")
        self.name = name
        self.betas = betas
        self.alphas = 1.0 - betas
        self.alpha_bar = torch.cumprod(self.alphas, dim=0)
        self._log_snr = torch.log(self.alpha_bar) - torch.log1p(-self.alpha_bar)

    @property
    def num_steps(self) -> int:
        return len(self.betas)

    def __repr__(self) -> str:
        return f"NoiseSchedule({self.name!r}, num_steps={self.num_steps})"

    @classmethod
    def linear(cls, num_steps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> NoiseSchedule:
        """Ho et al. 2020: betas linear from 1e-4 to 0.02 (defined for T = 1000; rescaled for other T)."""
        scale = 1000 / num_steps if num_steps > 0 else 0.0
        if num_steps < 2 or scale * beta_end >= 1:
            raise ValueError(
                f"a linear schedule ending at beta {beta_end} (for T=1000) needs num_steps > "
                f"{max(1, int(1000 * beta_end))}, got {num_steps}"
            )
        betas = torch.linspace(scale * beta_start, scale * beta_end, num_steps, dtype=torch.float64)
        return cls(betas, name="linear")

    @classmethod
    def cosine(cls, num_steps: int = 1000, s: float = 0.008, max_beta: float = 0.999) -> NoiseSchedule:
        """Nichol & Dhariwal 2021, eq. 17: ``abar(t) = f(t)/f(0)``, ``f(t) = cos^2(((t/T + s)/(1 + s)) pi/2)``,
        ``beta_t = min(1 - abar(t+1)/abar(t), max_beta)``."""
        if num_steps < 2:
            raise ValueError(f"num_steps must be >= 2, got {num_steps}")
        grid = torch.arange(num_steps + 1, dtype=torch.float64) / num_steps
        f = torch.cos((grid + s) / (1 + s) * math.pi / 2) ** 2
        abar = f / f[0]
        betas = (1 - abar[1:] / abar[:-1]).clamp(max=max_beta)
        return cls(betas, name="cosine")

    def _index(self, t: Tensor | int) -> Tensor:
        t = torch.as_tensor(t)
        if t.is_floating_point():
            raise TypeError(f"timesteps must be integers, got {t.tolist()}; use timestep_to_snr for fractional t")
        if bool(((t < 0) | (t >= self.num_steps)).any()):
            raise ValueError(f"timesteps must lie in [0, {self.num_steps - 1}], got {t.min()}..{t.max()}")
        return t.long()

    def snr(self, t: Tensor | int) -> Tensor:
        """``SNR(t) = abar_t / (1 - abar_t)`` for integer timesteps (any shape), float64."""
        return torch.exp(self._log_snr[self._index(t).cpu()])

    def timestep_to_snr(self, t: Tensor | float) -> Tensor:
        """SNR at (possibly fractional) timesteps, interpolating linearly in log-SNR between grid points."""
        t = torch.as_tensor(t, dtype=torch.float64)
        bad = (t < 0) | (t > self.num_steps - 1) | t.isnan()
        if bool(bad.any()):
            raise ValueError(f"timesteps must lie in [0, {self.num_steps - 1}], got {t[bad][:5].tolist()}")
        lo = t.floor().long().clamp(max=self.num_steps - 2)
        frac = t - lo
        log_snr = self._log_snr[lo] * (1 - frac) + self._log_snr[lo + 1] * frac
        return torch.exp(log_snr)

    def snr_to_timestep(self, snr: Tensor | float) -> Tensor:
        """Nearest integer timestep in log-SNR: ``argmin_t |log SNR(t) - log snr|``."""
        snr = torch.as_tensor(snr, dtype=torch.float64)
        bad = ~((snr > 0) & torch.isfinite(snr))
        if bool(bad.any()):
            raise ValueError(f"snr must be positive and finite, got {snr[bad][:5].tolist()}")
        diff = (self._log_snr.reshape(*([1] * snr.ndim), -1) - torch.log(snr).unsqueeze(-1)).abs()
        return diff.argmin(dim=-1)

    def coefficients(self, t: Tensor, ndim: int, device: torch.device | str) -> tuple[Tensor, Tensor]:
        """``(sqrt(abar_t), sqrt(1 - abar_t))`` shaped ``[B, 1, ..., 1]`` for broadcasting over ``ndim`` dims."""
        abar = self.alpha_bar[self._index(t).cpu()].to(device=device, dtype=torch.float32)
        return _broadcast(abar.sqrt(), ndim), _broadcast((1 - abar).sqrt(), ndim)

    def add_noise(self, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """``q(x_t | x_0)`` sample: ``sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps`` (Ho et al. eq. 4)."""
        a, s = self.coefficients(t, x0.ndim, x0.device)
        return a * x0 + s * noise

    def noising_table(self, device: torch.device | str) -> NoisingTable:
        """:meth:`add_noise` for every integer timestep as float32 tables on ``device``: the same values (the same
        float32 square roots), without :meth:`add_noise`'s range check and host round trip per call."""
        abar = self.alpha_bar.to(device=device, dtype=torch.float32)
        return NoisingTable(abar.sqrt(), (1 - abar).sqrt())


def _broadcast(values: Tensor, ndim: int) -> Tensor:
    """``[B]`` values as ``[B, 1, ..., 1]`` (``ndim`` dims), to scale a batch per example."""
    return values.reshape((-1,) + (1,) * (ndim - 1))


@dataclass(frozen=True)
class NoisingTable:
    """``sqrt(abar_t)`` and ``sqrt(1 - abar_t)`` ``[T]`` (float32, on one device) of a schedule: ``q(x_t | x_0)``
    samples by a gather on the device, so a training step that noises its batch does no host work and can be
    captured as a CUDA graph (:mod:`diffbench.graphs`). ``t`` must be valid ``long`` timesteps on that device:
    they are not checked (checking would read them back to the host)."""

    sqrt_abar: Tensor
    sqrt_one_minus_abar: Tensor

    def add_noise(self, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """``sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps`` (Ho et al. eq. 4), bitwise :meth:`NoiseSchedule.add_noise`."""
        return _broadcast(self.sqrt_abar[t], x0.ndim) * x0 + _broadcast(self.sqrt_one_minus_abar[t], x0.ndim) * noise

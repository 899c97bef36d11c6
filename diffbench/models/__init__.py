"""Denoisers. Every network is seen by samplers and trainers as ``eps(x, t, **cond) -> eps``."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from diffbench.models.classifier import NoisyClassifier
from diffbench.models.dual_scale import DualScaleUNet
from diffbench.models.mlp import MLPDenoiser
from diffbench.models.unet import DDPMUNet, UNet

MODELS: dict[str, type[nn.Module]] = {
    "mlp": MLPDenoiser,
    "classifier": NoisyClassifier,
    "unet": UNet,
    "ddpm_unet": DDPMUNet,  # explicit per-level widths (the snr_paths family's same-size single-scale baseline)
    "lift_unet": DualScaleUNet,
}


@dataclass(frozen=True)
class ModelConfig:
    """Hashable model description: a registered architecture name and its keyword arguments."""

    arch: str = "mlp"
    kwargs: tuple[tuple[str, object], ...] = field(default=())

    @classmethod
    def of(cls, arch: str, **kwargs: object) -> ModelConfig:
        return cls(arch, tuple(sorted(kwargs.items())))

    def build(self, seed: int | None = None) -> nn.Module:
        """Instantiate the model; with ``seed``, its initial weights depend on that seed alone (the global
        RNG that ``nn.Module`` initialisers read is forked, so its outside state is untouched)."""
        if self.arch not in MODELS:
            raise ValueError(f"unknown model {self.arch!r}; available: {', '.join(sorted(MODELS))}")
        if seed is None:
            return MODELS[self.arch](**dict(self.kwargs))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return MODELS[self.arch](**dict(self.kwargs))


def device_of(model: object) -> torch.device:
    """Device of a module's first parameter; CPU for parameter-free callables (analytic oracles)."""
    params = getattr(model, "parameters", None)
    first = next(iter(params()), None) if callable(params) else None
    return first.device if first is not None else torch.device("cpu")


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


__all__ = [
    "MODELS",
    "DualScaleUNet",
    "MLPDenoiser",
    "ModelConfig",
    "NoisyClassifier",
    "UNet",
    "count_parameters",
    "device_of",
]

"""Denoisers. Every network is seen by samplers and trainers as ``eps(x, t, **cond) -> eps``."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from diffbench.models.mlp import MLPDenoiser

MODELS: dict[str, type[nn.Module]] = {"mlp": MLPDenoiser}


@dataclass(frozen=True)
class ModelConfig:
    """Hashable model description: a registered architecture name and its keyword arguments."""

    arch: str = "mlp"
    kwargs: tuple[tuple[str, object], ...] = field(default=())

    @classmethod
    def of(cls, arch: str, **kwargs: object) -> ModelConfig:
        return cls(arch, tuple(sorted(kwargs.items())))

    def build(self) -> nn.Module:
        if self.arch not in MODELS:
            raise ValueError(f"unknown model {self.arch!r}; available: {', '.join(sorted(MODELS))}")
        return MODELS[self.arch](**dict(self.kwargs))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


__all__ = ["MODELS", "MLPDenoiser", "ModelConfig", "count_parameters"]

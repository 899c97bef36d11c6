"""Sinusoidal timestep embedding shared by every denoiser."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def timestep_embedding(t: Tensor, dim: int, max_period: float = 10_000.0) -> Tensor:
    """Transformer-style embedding (Vaswani et al. 2017; as in Ho et al. 2020):
    ``[cos(t w_k), sin(t w_k)]`` with ``w_k = max_period^(-k / (dim/2))``. ``t`` is ``[B]``; returns ``[B, dim]``."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float().unsqueeze(-1) * freqs
    emb = torch.cat([args.cos(), args.sin()], dim=-1)
    if dim % 2:
        emb = torch.nn.functional.pad(emb, (0, 1))
    return emb

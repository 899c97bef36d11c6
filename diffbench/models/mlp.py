"""MLP denoiser for 2-D data (seed 002's model)."""

from __future__ import annotations

from itertools import pairwise

import torch
from torch import Tensor, nn

from diffbench.models.embedding import timestep_embedding


class MLPDenoiser(nn.Module):
    """``eps(x, t)`` for ``x`` of shape ``[B, dim]``: the input concatenated with a sinusoidal embedding of
    ``t`` goes through ``num_layers`` linear layers (``hidden`` wide, SiLU between them) to ``[B, dim]``."""

    def __init__(self, dim: int = 2, hidden: int = 128, num_layers: int = 3, time_dim: int = 32) -> None:
        super().__init__()
        if num_layers < 2:
            raise ValueError(f"num_layers must be >= 2, got {num_layers}")
        self.time_dim = time_dim
        widths = [dim + time_dim] + [hidden] * (num_layers - 1) + [dim]
        layers: list[nn.Module] = []
        for i, (w_in, w_out) in enumerate(pairwise(widths)):
            layers.append(nn.Linear(w_in, w_out))
            if i < num_layers - 1:
                layers.append(nn.SiLU())
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        return self.net(torch.cat([x, timestep_embedding(t, self.time_dim)], dim=-1))

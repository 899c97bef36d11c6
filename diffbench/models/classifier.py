"""A small noise-aware image classifier: ``log p(y | x_t, t)`` for classifier guidance, and (at ``t = 0``, on clean
images) the penultimate-layer features behind the domain FID.

Classifier guidance (Dhariwal & Nichol 2021, eq. 12) needs ``grad_x log p(y | x_t, t)`` at every noise level, so
the network is conditioned on ``t`` like the denoisers are; ``train_classifier`` trains it on noisy inputs when
given a schedule and on clean ones otherwise.
"""

from __future__ import annotations

import math
from itertools import pairwise

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from diffbench.data import Dataset
from diffbench.models.embedding import timestep_embedding
from diffbench.schedules import NoiseSchedule


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(8, channels), channels)


class _Block(nn.Module):
    """Pre-activation residual conv block; the time embedding enters as a per-channel bias."""

    def __init__(self, c_in: int, c_out: int, time_dim: int | None) -> None:
        super().__init__()
        self.norm1, self.conv1 = _norm(c_in), nn.Conv2d(c_in, c_out, 3, padding=1)
        self.norm2, self.conv2 = _norm(c_out), nn.Conv2d(c_out, c_out, 3, padding=1)
        self.time = nn.Linear(time_dim, c_out) if time_dim else None
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: Tensor, temb: Tensor | None) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        if self.time is not None and temb is not None:
            h = h + self.time(temb)[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        return self.skip(x) + h


class NoisyClassifier(nn.Module):
    """``logits = forward(x, t)`` for images ``x`` ``[B, C, H, W]`` in ``[-1, 1]`` and timesteps ``t`` ``[B]``
    (``None`` means ``t = 0``, i.e. clean images).

    Residual conv blocks halve the resolution down to 4x4 (at least once), doubling the width each time (at most
    4x ``width``); global average pooling, then a ``feature_dim``-wide layer whose activations are the
    penultimate ``features(x, t)`` ``[B, feature_dim]``, then a linear layer to ``num_classes`` logits.
    """

    def __init__(
        self,
        in_channels: int = 1,
        image_size: int = 16,
        num_classes: int = 10,
        width: int = 16,
        feature_dim: int = 64,
        time_conditioned: bool = True,
        time_dim: int = 64,
    ) -> None:
        super().__init__()
        for name, value in (("in_channels", in_channels), ("num_classes", num_classes), ("width", width)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if image_size < 4:
            raise ValueError(f"image_size must be >= 4, got {image_size}")
        self.in_channels, self.image_size, self.num_classes = in_channels, image_size, num_classes
        self.feature_dim, self.time_dim = feature_dim, time_dim
        self.time_conditioned = time_conditioned
        self.time_mlp = (
            nn.Sequential(nn.Linear(time_dim, time_dim), nn.SiLU(), nn.Linear(time_dim, time_dim))
            if time_conditioned
            else None
        )
        emb = time_dim if time_conditioned else None
        self.stem = nn.Conv2d(in_channels, width, 3, padding=1)
        levels = max(1, int(math.log2(image_size)) - 2)
        channels = [width * 2 ** min(i, 2) for i in range(levels + 1)]
        self.blocks = nn.ModuleList(_Block(c, c, emb) for c in channels[:-1])
        self.downs = nn.ModuleList(nn.Conv2d(a, b, 3, stride=2, padding=1) for a, b in pairwise(channels))
        self.final = _Block(channels[-1], channels[-1], emb)
        self.norm = _norm(channels[-1])
        self.head = nn.Linear(channels[-1], feature_dim)
        self.out = nn.Linear(feature_dim, num_classes)

    def features(self, x: Tensor, t: Tensor | None = None) -> Tensor:
        """Penultimate activations ``[B, feature_dim]``."""
        temb = None
        if self.time_mlp is not None:
            if t is None:
                t = torch.zeros(len(x), device=x.device)
            temb = self.time_mlp(timestep_embedding(t.reshape(-1).expand(len(x)), self.time_dim))
        h = self.stem(x)
        for block, down in zip(self.blocks, self.downs, strict=True):
            h = down(block(h, temb))
        h = F.silu(self.norm(self.final(h, temb))).mean(dim=(2, 3))
        return F.silu(self.head(h))

    def forward(self, x: Tensor, t: Tensor | None = None) -> Tensor:
        return self.out(self.features(x, t))


def train_classifier(
    model: nn.Module,
    dataset: Dataset,
    *,
    epochs: int,
    batch_size: int = 128,
    lr: float = 2e-3,
    seed: int = 0,
    device: torch.device | str = "cpu",
    schedule: NoiseSchedule | None = None,
) -> list[dict[str, float]]:
    """Train ``model(x, t) -> logits`` in place by cross-entropy on ``dataset``'s labels (Adam); returns the
    per-epoch log. With ``schedule``, every image is noised to a uniform random ``t`` first
    (``x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps``), the noise-aware classifier of classifier guidance;
    without, images stay clean and ``t = 0``."""
    if dataset.y is None:
        raise ValueError(f"dataset {dataset.name!r} has no labels; a classifier needs a labelled dataset")
    device = torch.device(device)
    model.to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    x_all, y_all = dataset.x.to(device), dataset.y.to(device)
    history = []
    for epoch in range(1, epochs + 1):
        perm = torch.randperm(len(x_all), generator=generator)
        loss_sum, correct = 0.0, 0
        for start in range(0, len(perm), batch_size):
            idx = perm[start : start + batch_size].to(device)
            x, y = x_all[idx], y_all[idx]
            t = torch.zeros(len(idx), dtype=torch.long)
            if schedule is not None:
                t = torch.randint(schedule.num_steps, (len(idx),), generator=generator)
                x = schedule.add_noise(x, t.to(device), torch.randn(x.shape, generator=generator).to(device))
            logits = model(x, t.to(device))
            loss = F.cross_entropy(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += loss.item() * len(idx)
            correct += int((logits.argmax(dim=1) == y).sum())
        history.append({"epoch": float(epoch), "loss": loss_sum / len(perm), "accuracy": correct / len(perm)})
    model.eval()
    return history


@torch.no_grad()
def accuracy(
    model: nn.Module,
    dataset: Dataset,
    t: int = 0,
    batch_size: int = 512,
    *,
    schedule: NoiseSchedule | None = None,
    generator: torch.Generator | None = None,
) -> float:
    """Fraction of ``dataset`` classified correctly at timestep ``t``. Without ``schedule`` the images stay clean
    (the domain classifier, ``t = 0``); with it they are noised to ``x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps``
    first, ``eps`` from ``generator`` (required then), as the guidance classifier sees them while sampling."""
    if dataset.y is None:
        raise ValueError(f"dataset {dataset.name!r} has no labels")
    if schedule is not None and generator is None:
        raise ValueError("noised accuracy needs a torch.Generator for the noise (never the global RNG)")
    device = next(model.parameters()).device
    correct = 0
    for start in range(0, len(dataset), batch_size):
        x = dataset.x[start : start + batch_size].to(device)
        t_batch = torch.full((len(x),), t, device=device)
        if schedule is not None:
            x = schedule.add_noise(x, t_batch, torch.randn(x.shape, generator=generator).to(device))
        pred = model(x, t_batch).argmax(dim=1).cpu()
        correct += int((pred == dataset.y[start : start + batch_size]).sum())
    return correct / len(dataset)

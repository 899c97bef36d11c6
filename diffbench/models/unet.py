"""Time-conditioned UNet in the DDPM style (Ho et al. 2020; Nichol & Dhariwal 2021) and its size-factor family.

``DDPMUNet`` is the network with explicit per-level widths: residual blocks (GroupNorm, SiLU, a projection of the
time embedding added between the two convolutions, dropout), self-attention at chosen resolutions and always in
the middle, strided-conv downsampling, nearest-neighbour upsampling and skip connections from every encoder
stage. ``UNet`` is the teacher/student family of seeds 000/001: ``UNet(1.0, ...)`` is the teacher, and
``UNet(s, ...)`` picks an architecture band for ``s`` and then the width multiplier whose parameter count is
closest to ``s`` times the teacher's. Every model is seen by samplers as ``eps(x, t, y=None) -> eps``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from diffbench.models.embedding import timestep_embedding

# Student widths are multiples of 4 (and of num_heads): gcd(32, C) >= 4 GroupNorm groups always divide them, and
# steps of 4 rather than 8 keep the parameter count within reach of small targets (a 32-64 teacher at s = 0.1).
WIDTH_STEP = 4
MAX_GROUPS = 32  # DDPM's GroupNorm(32, C)
MIN_FREQ_DIM = 32


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm (Wu & He 2018) with ``gcd(32, C)`` groups: DDPM's 32 where possible, always a divisor of ``C``."""
    return nn.GroupNorm(math.gcd(MAX_GROUPS, channels), channels)


class ResBlock(nn.Module):
    """``h = conv(SiLU(GN(x))) + W SiLU(temb)``; ``out = skip(x) + conv(dropout(SiLU(GN(h))))``."""

    def __init__(self, in_channels: int, out_channels: int, time_dim: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = group_norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.time_proj = nn.Linear(time_dim, out_channels)
        self.norm2 = group_norm(out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.skip = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: Tensor, temb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.time_proj(F.silu(temb))[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h


class SelfAttention(nn.Module):
    """Multi-head self-attention over the ``H*W`` positions, residual:
    ``x + proj(softmax(q k^T / sqrt(d)) v)`` with ``q, k, v`` 1x1 convolutions of ``GN(x)``."""

    def __init__(self, channels: int, num_heads: int) -> None:
        super().__init__()
        if channels % num_heads:
            raise ValueError(f"num_heads must divide the channel count {channels}, got {num_heads}")
        self.num_heads = num_heads
        self.norm = group_norm(channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        # [B, 3C, H, W] -> three [B, heads, H*W, C/heads]
        qkv = self.qkv(self.norm(x)).reshape(b, 3, self.num_heads, c // self.num_heads, h * w).transpose(-1, -2)
        q, k, v = qkv.unbind(1)
        out = F.scaled_dot_product_attention(q, k, v)
        return x + self.proj(out.transpose(-1, -2).reshape(b, c, h, w))


class Block(nn.Module):
    """A residual block, followed by self-attention when the block sits at an attention resolution."""

    def __init__(self, in_channels: int, out_channels: int, time_dim: int, dropout: float, heads: int | None) -> None:
        super().__init__()
        self.res = ResBlock(in_channels, out_channels, time_dim, dropout)
        self.attn = SelfAttention(out_channels, heads) if heads else nn.Identity()

    def forward(self, x: Tensor, temb: Tensor) -> Tensor:
        return self.attn(self.res(x, temb))


class Downsample(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: Tensor, temb: Tensor) -> Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor, temb: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class DDPMUNet(nn.Module):
    """UNet with explicit per-level ``widths`` (one level per entry, halving the resolution between levels).

    ``forward(x, t, y=None)``: ``x`` ``[B, C, H, W]``, ``t`` integer timesteps ``[B]`` (or a scalar), ``y`` class
    labels ``[B]`` in ``[0, num_classes]`` where ``num_classes`` is the null label (classifier-free guidance);
    ``y=None`` means the null label. Returns ``eps`` ``[B, C, H, W]``. The time embedding is sinusoidal
    (``max(widths[0], 32)`` dims) followed by a 2-layer MLP to ``4 * widths[0]``; the label embedding is added to it
    and the sum is projected into every residual block.
    """

    def __init__(
        self,
        widths: Sequence[int],
        *,
        in_channels: int = 1,
        image_size: int = 16,
        num_res_blocks: int = 1,
        attention_resolutions: Sequence[int] = (8,),
        dropout: float = 0.0,
        num_classes: int = 0,
        num_heads: int = 1,
    ) -> None:
        super().__init__()
        widths = tuple(int(w) for w in widths)
        if not widths or min(widths) < 1:
            raise ValueError(f"widths must be a non-empty sequence of positive channel counts, got {widths}")
        if image_size < 1 or image_size % 2 ** (len(widths) - 1):
            raise ValueError(
                f"image_size must be divisible by 2^(levels - 1) = {2 ** (len(widths) - 1)}, got {image_size}"
            )
        if num_res_blocks < 1:
            raise ValueError(f"num_res_blocks must be >= 1, got {num_res_blocks}")
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if num_classes < 0:
            raise ValueError(f"num_classes must be >= 0, got {num_classes}")
        self.widths, self.in_channels, self.image_size = widths, in_channels, image_size
        self.num_res_blocks, self.num_classes = num_res_blocks, num_classes
        resolutions = [image_size // 2**level for level in range(len(widths))]
        self.attention_resolutions = tuple(r for r in resolutions if r in set(attention_resolutions))
        # DDPM embeds t with ``widths[0]`` frequencies; at least 32 keep the timestep resolvable for narrow students.
        self.freq_dim = max(widths[0], MIN_FREQ_DIM)
        self.time_dim = time_dim = 4 * widths[0]
        self.time_embed = nn.Sequential(nn.Linear(self.freq_dim, time_dim), nn.SiLU(), nn.Linear(time_dim, time_dim))
        self.label_embed = nn.Embedding(num_classes + 1, time_dim) if num_classes > 0 else None
        self.stem = nn.Conv2d(in_channels, widths[0], 3, padding=1)

        def block(c_in: int, c_out: int, resolution: int) -> Block:
            heads = num_heads if resolution in self.attention_resolutions else None
            return Block(c_in, c_out, time_dim, dropout, heads)

        # Encoder; ``skips`` tracks the channel count of every activation the decoder will concatenate.
        self.down = nn.ModuleList()
        channels, skips = widths[0], [widths[0]]
        for level, width in enumerate(widths):
            for _ in range(num_res_blocks):
                self.down.append(block(channels, width, resolutions[level]))
                channels = width
                skips.append(channels)
            if level < len(widths) - 1:
                self.down.append(Downsample(channels))
                skips.append(channels)
        self.mid1 = ResBlock(channels, channels, time_dim, dropout)
        self.mid_attn = SelfAttention(channels, num_heads)
        self.mid2 = ResBlock(channels, channels, time_dim, dropout)
        # Decoder: one more block per level than the encoder, each consuming one skip activation.
        self.up = nn.ModuleList()
        for level in reversed(range(len(widths))):
            for _ in range(num_res_blocks + 1):
                self.up.append(block(channels + skips.pop(), widths[level], resolutions[level]))
                channels = widths[level]
            if level > 0:
                self.up.append(Upsample(channels))
        self.head = nn.Sequential(group_norm(channels), nn.SiLU(), nn.Conv2d(channels, in_channels, 3, padding=1))

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        t = torch.as_tensor(t, device=x.device).reshape(-1).expand(len(x))
        temb = self.time_embed(timestep_embedding(t, self.freq_dim))
        if self.label_embed is not None:
            if y is None:
                y = torch.full((len(x),), self.num_classes, dtype=torch.long, device=x.device)
            temb = temb + self.label_embed(y)
        elif y is not None:
            raise ValueError("this UNet is unconditional (num_classes=0) but was given class labels y")
        h = self.stem(x)
        hs = [h]
        for layer in self.down:
            h = layer(h, temb)
            hs.append(h)
        h = self.mid2(self.mid_attn(self.mid1(h, temb)), temb)
        for layer in self.up:
            h = layer(h, temb) if isinstance(layer, Upsample) else layer(torch.cat([h, hs.pop()], dim=1), temb)
        return self.head(h)


# ------------------------------------------------------------------------------------- the size-factor family


@dataclass(frozen=True)
class Band:
    """An architecture band of seeds 000/001: size factors in ``[low, high)`` drop ``dropped_levels`` resolution
    levels and start from ``width_scale`` times the teacher's widths before the parameter-matching search."""

    name: str
    low: float
    high: float
    dropped_levels: int = 0
    width_scale: float = 1.0


BANDS = (
    Band("tiny", 0.0, 0.1, dropped_levels=1),
    Band("small", 0.1, 0.3),
    Band("medium", 0.3, 0.7, width_scale=0.75),
    Band("full", 0.7, 1.0),
)


def band_of(size_factor: float) -> Band:
    """The band holding ``size_factor`` (``full`` includes 1.0); raises for a value outside ``(0, 1]``."""
    if not (isinstance(size_factor, int | float) and 0 < size_factor <= 1):
        raise ValueError(f"size_factor must be in (0, 1], got {size_factor}")
    return next(b for b in BANDS if b.low <= size_factor < b.high or (b.name == "full" and size_factor == 1.0))


def scaled_widths(base: Sequence[float], multiplier: float, step: int = WIDTH_STEP) -> tuple[int, ...]:
    """``base * multiplier`` rounded to the nearest multiple of ``step`` (at least ``step``)."""
    return tuple(max(step, step * round(b * multiplier / step)) for b in base)


def fit_width_multiplier(
    param_count: Callable[[float], int], target: float, *, low: float = 1e-3, high: float = 2.0, iters: int = 40
) -> float:
    """The multiplier ``m`` in ``[low, high]`` whose ``param_count(m)`` is closest to ``target`` in log ratio.

    ``param_count`` must be non-decreasing in ``m`` (a step function once widths are rounded). Bisection keeps
    ``count(lo) < target <= count(hi)``; the answer is whichever side of the final step is closer,
    ``argmin |log(count / target)|``. Targets beyond the range return the nearest end.
    """
    if param_count(low) >= target:
        return low
    if param_count(high) <= target:
        return high
    lo, hi = low, high
    for _ in range(iters):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if param_count(mid) < target else (lo, mid)
    return min((lo, hi), key=lambda m: abs(math.log(param_count(m) / target)))


@lru_cache(maxsize=4096)
def parameter_count(widths: tuple[int, ...], num_classes: int = 0, **kwargs: object) -> int:
    """Exact parameter count of ``DDPMUNet(widths, num_classes=..., **kwargs)``, built on the meta device (no
    memory, no RNG). The label table, ``(num_classes + 1) x time_dim``, is added in closed form: initialising an
    embedding on the meta device would import torch's compiler stack (about 2 s, once per process)."""
    with torch.device("meta"):
        model = DDPMUNet(widths, **kwargs)
    labels = (num_classes + 1) * model.time_dim if num_classes > 0 else 0
    return sum(p.numel() for p in model.parameters()) + labels


class UNet(DDPMUNet):
    """The teacher (``size_factor=1.0``) or a student with about ``size_factor`` times its parameters.

    The teacher is ``DDPMUNet`` with widths ``base_channels * channel_mults``. A student of size ``s`` in
    ``(0, 1]`` takes the band of seeds 000/001 (``BANDS``):

    - tiny (``s < 0.1``): one fewer resolution level (the last channel mult dropped), widths scaled;
    - small (``0.1 <= s < 0.3``): the teacher's levels, narrower widths;
    - medium (``0.3 <= s < 0.7``): 75% of the teacher's widths as the base, then scaled;
    - full (``0.7 <= s <= 1``): the teacher's architecture, widths scaled.

    Within its band the widths are ``base * m`` rounded to multiples of ``WIDTH_STEP``, with the multiplier ``m``
    from :func:`fit_width_multiplier` against the exact parameter count, so that
    ``params(student) ~ s * params(teacher)``: within 25% for ``s >= 0.1`` (the rounding is the only error; it
    grows for teachers so narrow that a 0.1 student's widths are a few multiples of 4). In the tiny band the same
    search runs, but the smallest model (every width 4, one level fewer) bounds how small a student can get, so
    the ratio is only as close to ``s`` as the architecture allows (``describe()["parameter_ratio"]`` reports it).
    ``s = 1.0`` is the teacher exactly. Class conditioning, attention, dropout and heads are the teacher's.
    """

    def __init__(
        self,
        size_factor: float = 1.0,
        *,
        in_channels: int = 1,
        image_size: int = 16,
        base_channels: int = 32,
        channel_mults: Sequence[int] = (1, 2),
        num_res_blocks: int = 1,
        attention_resolutions: Sequence[int] = (8,),
        dropout: float = 0.0,
        num_classes: int = 0,
        num_heads: int = 1,
    ) -> None:
        band = band_of(size_factor)
        common = dict(
            in_channels=in_channels,
            image_size=image_size,
            num_res_blocks=num_res_blocks,
            attention_resolutions=tuple(attention_resolutions),
            dropout=dropout,
            num_classes=num_classes,
            num_heads=num_heads,
        )
        teacher_widths = tuple(base_channels * m for m in channel_mults)
        teacher_parameters = parameter_count(teacher_widths, **common)
        if size_factor == 1.0:  # the teacher itself, unrounded
            widths, multiplier = teacher_widths, 1.0
        else:
            levels = max(1, len(teacher_widths) - band.dropped_levels)
            base = [band.width_scale * w for w in teacher_widths[:levels]]
            step = math.lcm(WIDTH_STEP, num_heads)
            multiplier = fit_width_multiplier(
                lambda m: parameter_count(scaled_widths(base, m, step), **common), size_factor * teacher_parameters
            )
            widths = scaled_widths(base, multiplier, step)
        super().__init__(widths, **common)
        self.size_factor, self.band, self.width_multiplier = float(size_factor), band, multiplier
        self.teacher_widths, self.teacher_parameters = teacher_widths, teacher_parameters

    def describe(self) -> dict:
        """Band, size factor, widths per level, levels, attention resolutions, parameter counts and
        ``parameter_ratio = parameters / teacher_parameters``; ``width_multiplier`` is relative to the teacher's
        widths (the band's 75% included) before rounding."""
        parameters = sum(p.numel() for p in self.parameters())
        return {
            "band": self.band.name,
            "size_factor": self.size_factor,
            "widths": list(self.widths),
            "levels": len(self.widths),
            "attention_resolutions": list(self.attention_resolutions),
            "num_res_blocks": self.num_res_blocks,
            "width_multiplier": self.width_multiplier * self.band.width_scale,
            "parameters": parameters,
            "teacher_widths": list(self.teacher_widths),
            "teacher_parameters": self.teacher_parameters,
            "parameter_ratio": parameters / self.teacher_parameters,
        }

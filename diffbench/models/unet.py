"""Time-conditioned UNet in the DDPM style (Ho et al. 2020; Nichol & Dhariwal 2021) and its size-factor family.

``DDPMUNet`` is the network with explicit per-level widths: residual blocks (GroupNorm, SiLU, a projection of the
time embedding added between the two convolutions, dropout), self-attention at chosen resolutions and always in
the middle, strided-conv downsampling, nearest-neighbour upsampling and skip connections from every encoder
stage. ``UNet`` is the teacher/student family of seeds 000/001: ``UNet(1.0, ...)`` is the teacher, and
``UNet(s, ...)`` takes the architecture of the band holding ``s`` and fits its widths so that the student has
about ``s`` times the teacher's parameters, never costing more (parameters or FLOPs) than a larger student.
Every model is seen by samplers as ``eps(x, t, y=None) -> eps``.

Cost convention: ``macs`` are multiply-accumulates per image of the convolutions, linear layers and the two
attention matmuls (``q k^T`` and ``A v``) at the model's image size; biases, normalisation, activations, softmax,
interpolation and embedding lookups are not counted. ``flops_per_image = 2 * macs``, the convention of
``torch.utils.flop_counter.FlopCounterMode``.
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
MIN_CHANNELS_PER_GROUP = 2  # one channel per group would erase the time/label embedding (see norm_groups)
MIN_FREQ_DIM = 32
MIN_MULTIPLIER, MAX_MULTIPLIER = 1e-3, 2.0  # the width search's range, relative to the teacher's widths


def batch_timesteps(t: Tensor | int, batch: int, device: torch.device) -> Tensor:
    """Integer timesteps ``[batch]`` on ``device`` from a tensor ``[batch]``, ``[1]`` or a scalar (broadcast)."""
    return torch.as_tensor(t, device=device).reshape(-1).expand(batch)


def norm_groups(channels: int) -> int:
    """``gcd(32, C)`` groups (DDPM's 32 where possible, always a divisor of ``C``), halved until every group has
    at least 2 channels. A group of one channel is instance normalisation: it subtracts each channel's spatial
    mean, which erases exactly what a ResBlock adds before its second norm (the time and label embedding, a
    per-channel constant), so a width of 8, 16 or 32 would make that block blind to t and y."""
    groups = math.gcd(MAX_GROUPS, channels)
    while groups > 1 and channels // groups < MIN_CHANNELS_PER_GROUP:
        groups //= 2
    return groups


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm (Wu & He 2018) with :func:`norm_groups` groups."""
    return nn.GroupNorm(norm_groups(channels), channels)


def conv_macs(conv: nn.Conv2d, out_resolution: int) -> int:
    """``H_out W_out * C_out * (C_in / groups) * k_h k_w``: one multiply-accumulate per weight per output pixel."""
    return out_resolution**2 * conv.weight.numel()


def linear_macs(linear: nn.Linear) -> int:
    """``in_features * out_features`` per image (the embeddings are one vector per image)."""
    return linear.weight.numel()


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

    def macs(self, resolution: int) -> int:
        """``r^2 (9 C_in C_out + 9 C_out^2 [+ C_in C_out for the 1x1 skip]) + time_dim C_out``."""
        skip = conv_macs(self.skip, resolution) if isinstance(self.skip, nn.Conv2d) else 0
        convs = conv_macs(self.conv1, resolution) + conv_macs(self.conv2, resolution)
        return convs + skip + linear_macs(self.time_proj)


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

    def macs(self, resolution: int) -> int:
        """With ``n = r^2`` positions: ``n 3C^2`` (qkv) ``+ 2 n^2 C`` (``q k^T`` and ``A v``, summed over heads)
        ``+ n C^2`` (proj). The ``n^2`` term is why attention at a high resolution is expensive."""
        n = resolution**2
        return conv_macs(self.qkv, resolution) + 2 * n * n * self.proj.in_channels + conv_macs(self.proj, resolution)


class Block(nn.Module):
    """A residual block, followed by self-attention when the block sits at an attention resolution."""

    def __init__(self, in_channels: int, out_channels: int, time_dim: int, dropout: float, heads: int | None) -> None:
        super().__init__()
        self.res = ResBlock(in_channels, out_channels, time_dim, dropout)
        self.attn = SelfAttention(out_channels, heads) if heads else nn.Identity()

    def forward(self, x: Tensor, temb: Tensor) -> Tensor:
        return self.attn(self.res(x, temb))

    def macs(self, resolution: int) -> int:
        attention = self.attn.macs(resolution) if isinstance(self.attn, SelfAttention) else 0
        return self.res.macs(resolution) + attention


class Downsample(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: Tensor, temb: Tensor) -> Tensor:
        return self.conv(x)

    def macs(self, resolution: int) -> int:
        """A stride-2 3x3 conv: ``(r/2)^2 9 C^2``."""
        return conv_macs(self.conv, resolution // 2)


class Upsample(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor, temb: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))

    def macs(self, resolution: int) -> int:
        """A 3x3 conv after nearest-neighbour upsampling: ``(2r)^2 9 C^2``."""
        return conv_macs(self.conv, 2 * resolution)


class DDPMUNet(nn.Module):
    """UNet with explicit per-level ``widths`` (one level per entry, halving the resolution between levels).

    ``forward(x, t, y=None)``: ``x`` ``[B, C, H, W]``, ``t`` integer timesteps ``[B]`` (or a scalar), ``y`` class
    labels ``[B]`` in ``[0, num_classes]`` where ``num_classes`` is the null label (classifier-free guidance);
    ``y=None`` means the null label. Returns ``eps`` ``[B, C, H, W]``. The time embedding is sinusoidal
    (``max(widths[0], 32)`` dims) followed by a 2-layer MLP to ``4 * widths[0]``; the label embedding is added to it
    and the sum is projected into every residual block. ``forward`` is ``body(x, embed(t, y))``: a subclass with
    other conditioning (``DualScaleUNet``) overrides the embedding and reuses the body. ``out_channels`` (default
    ``in_channels``) is the head's output channel count.
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
        out_channels: int | None = None,
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
        out_channels = in_channels if out_channels is None else out_channels
        self.head = nn.Sequential(group_norm(channels), nn.SiLU(), nn.Conv2d(channels, out_channels, 3, padding=1))

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        return self.body(x, self.embed(batch_timesteps(t, len(x), x.device), y))

    def embed(self, t: Tensor, y: Tensor | None = None) -> Tensor:
        """The embedding ``[B, time_dim]`` every residual block sees, of timesteps ``t`` ``[B]`` and labels ``y``
        ``[B]`` (``None``: the null label). A subclass with other conditioning replaces this and reuses
        :meth:`body`."""
        temb = self.time_embed(timestep_embedding(t, self.freq_dim))
        if self.label_embed is not None:
            if y is None:
                y = torch.full((len(t),), self.num_classes, dtype=torch.long, device=t.device)
            temb = temb + self.label_embed(y)
        elif y is not None:
            raise ValueError("this UNet is unconditional (num_classes=0) but was given class labels y")
        return temb

    def body(self, x: Tensor, temb: Tensor) -> Tensor:
        """stem -> encoder -> middle -> decoder -> head: ``x`` ``[B, in_channels, H, W]`` and the embedding ``temb``
        ``[B, time_dim]`` to ``[B, out_channels, H, W]``."""
        h = self.stem(x)
        hs = [h]
        for layer in self.down:
            h = layer(h, temb)
            hs.append(h)
        h = self.mid2(self.mid_attn(self.mid1(h, temb)), temb)
        for layer in self.up:
            h = layer(h, temb) if isinstance(layer, Upsample) else layer(torch.cat([h, hs.pop()], dim=1), temb)
        return self.head(h)

    def macs_per_image(self) -> int:
        """Multiply-accumulates of one forward pass, per image (the module docstring's convention): the time MLP,
        the stem and head convolutions at ``image_size``, and every layer's ``macs`` at the resolution it sees."""
        resolution = self.image_size
        total = sum(linear_macs(m) for m in self.time_embed if isinstance(m, nn.Linear))
        total += conv_macs(self.stem, resolution) + conv_macs(self.head[-1], resolution)
        for layer in self.down:
            total += layer.macs(resolution)
            resolution //= 2 if isinstance(layer, Downsample) else 1
        total += self.mid1.macs(resolution) + self.mid_attn.macs(resolution) + self.mid2.macs(resolution)
        for layer in self.up:
            total += layer.macs(resolution)
            resolution *= 2 if isinstance(layer, Upsample) else 1
        return total


# ------------------------------------------------------------------------------------- the size-factor family


@dataclass(frozen=True)
class Band:
    """An architecture band of seeds 000/001, size factors in ``[low, high)``: the teacher's levels less the last
    ``dropped_levels``; with ``first_level_scale`` the first (highest-resolution) level is fixed at that fraction of
    the teacher's width and only the deeper levels are scaled (see :func:`band_widths`)."""

    name: str
    low: float
    high: float
    dropped_levels: int = 0
    first_level_scale: float | None = None


BANDS = (
    Band("tiny", 0.0, 0.1, dropped_levels=1),
    Band("small", 0.1, 0.3),
    Band("medium", 0.3, 0.7, first_level_scale=0.75),
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


def band_widths(
    band: Band, teacher_widths: Sequence[int], multiplier: float, step: int = WIDTH_STEP
) -> tuple[int, ...]:
    """The band's architecture at width ``multiplier``: the teacher's levels less the last ``dropped_levels`` (one
    level at least), each ``width * multiplier`` (:func:`scaled_widths`).

    With ``first_level_scale`` (medium: 0.75) the first level is fixed at that fraction of the teacher's width,
    rounded down to a multiple of ``step``, and ``multiplier`` scales the deeper levels only, so the band's 75% is
    not fitted away. The fixed level is the highest-resolution one, where most FLOPs are spent (a level costs about
    4x the FLOPs per parameter of the next): along the band the parameters grow in the deeper levels and the FLOPs
    grow more slowly than the parameters, from above the small band's (a wider first level) to below the full
    band's. A single-level teacher's medium band is that one fixed model.
    """
    levels = max(1, len(teacher_widths) - band.dropped_levels)
    kept = teacher_widths[:levels]
    if band.first_level_scale is None:
        return scaled_widths(kept, multiplier, step)
    first = max(step, step * math.floor(kept[0] * band.first_level_scale / step))
    return (first, *scaled_widths(kept[1:], multiplier, step))


def fit_width_multiplier(
    param_count: Callable[[float], int],
    target: float,
    *,
    low: float = MIN_MULTIPLIER,
    high: float = MAX_MULTIPLIER,
    iters: int = 40,
) -> float:
    """The multiplier ``m`` in ``[low, high]`` whose ``param_count(m)`` is closest to ``target`` in log ratio.

    ``param_count`` must be non-decreasing in ``m`` (a step function once widths are rounded). Bisection keeps
    ``count(lo) < target <= count(hi)``; the answer is whichever side of the final step is closer,
    ``argmin |log(count / target)|``. Targets beyond the range return the nearest end. The chosen count is
    non-decreasing in ``target`` (the nearest of a sorted set of counts).
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


def largest_multiplier(within: Callable[[float], bool], low: float, high: float, iters: int = 40) -> float:
    """The largest ``m`` in ``[low, high]`` with ``within(m)``, for ``within`` true below a threshold and false above
    it: bisection keeps ``within(lo)`` and ``not within(hi)``. ``low`` when even ``within(low)`` fails."""
    if within(high):
        return high
    if not within(low):
        return low
    lo, hi = low, high
    for _ in range(iters):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if within(mid) else (lo, mid)
    return lo


@lru_cache(maxsize=4096)
def _meta_counts(widths: tuple[int, ...], **kwargs: object) -> tuple[int, int, int]:
    """``(parameters, time_dim, macs_per_image)`` of ``DDPMUNet(widths, **kwargs)`` without a label table, built
    on the meta device (no memory, no RNG). The label table is left to callers: initialising an embedding on the
    meta device would import torch's compiler stack (about 2 s, once per process), and a lookup costs no MACs."""
    with torch.device("meta"):
        model = DDPMUNet(widths, **kwargs)
    return sum(p.numel() for p in model.parameters()), model.time_dim, model.macs_per_image()


@lru_cache(maxsize=4096)
def parameter_count(widths: tuple[int, ...], num_classes: int = 0, **kwargs: object) -> int:
    """Exact parameter count of ``DDPMUNet(widths, num_classes=..., **kwargs)``, built on the meta device; the
    label table, ``(num_classes + 1) x time_dim``, is added in closed form."""
    parameters, time_dim, _ = _meta_counts(widths, **kwargs)
    return parameters + ((num_classes + 1) * time_dim if num_classes > 0 else 0)


@lru_cache(maxsize=4096)
def flops_per_image(widths: tuple[int, ...], num_classes: int = 0, **kwargs: object) -> int:
    """Exact ``2 * macs`` of one forward pass of ``DDPMUNet(widths, **kwargs)`` per image at its ``image_size``
    (the module docstring's convention), from module shapes on the meta device. ``num_classes`` is accepted so that
    the keyword arguments of :func:`parameter_count` fit; the label lookup costs nothing."""
    return 2 * _meta_counts(widths, **kwargs)[2]


@lru_cache(maxsize=1024)
def fit_student(size_factor: float, teacher_widths: tuple[int, ...], **kwargs: object) -> tuple[tuple[int, ...], float]:
    """``(widths, multiplier)`` of the student of size ``size_factor`` of ``DDPMUNet(teacher_widths, **kwargs)``,
    from counts alone (no weights are built); ``size_factor = 1.0`` is the teacher, unrounded.

    1. The band's architecture :func:`band_widths` at multiplier ``m``, with ``m`` from
       :func:`fit_width_multiplier`: parameters closest to ``s * params(teacher)``.
    2. A cap: ``m`` is lowered (:func:`largest_multiplier`) until the student costs no more, in parameters and in
       FLOPs per image, than ``fit_student(band.high)``, the first student of the next band (the teacher for full).

    Within a band the widths grow with ``s``; the cap makes every band end at or below the next one, so both
    counts are non-decreasing in ``s`` for every teacher. It binds in the tiny band: dropping the last
    (lowest-resolution) level removes parameters but few FLOPs, so a tiny student fitted on parameters alone runs
    its remaining high-resolution levels wide and costs more FLOPs than the smallest small student (the smoke
    teacher: 0.0118 vs 0.0091 GFLOP at s = 0.05 vs 0.1). Capping keeps the seed's architecture (one level fewer) and
    makes a smaller ``s`` cheaper in both counts, at the price of a parameter ratio below ``s`` near the top of the
    tiny band. Where even the band's smallest model (every fitted width ``step``) costs more than the cap, the student
    is the cap itself: cost order wins over the band's architecture. That happens only for teachers about as narrow
    as the width step (base 8 at 16x16: one level of width 4 with its middle attention over 256 positions costs more
    FLOPs than two levels of width 4).

    ``kwargs`` are ``DDPMUNet``'s keyword arguments, hashable (``attention_resolutions`` a tuple).
    """
    band = band_of(size_factor)
    if size_factor == 1.0:
        return teacher_widths, 1.0
    step = math.lcm(WIDTH_STEP, int(kwargs.get("num_heads", 1)))

    def counts(m: float) -> tuple[int, int]:
        widths = band_widths(band, teacher_widths, m, step)
        return parameter_count(widths, **kwargs), flops_per_image(widths, **kwargs)

    cap = fit_student(band.high, teacher_widths, **kwargs)  # the next band's first student; the teacher for full
    max_params, max_flops = parameter_count(cap[0], **kwargs), flops_per_image(cap[0], **kwargs)

    def affordable(m: float) -> bool:
        params, flops = counts(m)
        return params <= max_params and flops <= max_flops

    if not affordable(MIN_MULTIPLIER):
        return cap
    target = size_factor * parameter_count(teacher_widths, **kwargs)
    multiplier = largest_multiplier(affordable, MIN_MULTIPLIER, fit_width_multiplier(lambda m: counts(m)[0], target))
    return band_widths(band, teacher_widths, multiplier, step), multiplier


class UNet(DDPMUNet):
    """The teacher (``size_factor=1.0``) or a student with about ``size_factor`` times its parameters.

    The teacher is ``DDPMUNet`` with widths ``base_channels * channel_mults``. A student of size ``s`` in
    ``(0, 1]`` takes the architecture of its band of seeds 000/001 (``BANDS``, :func:`band_widths`):

    - tiny (``s < 0.1``): one fewer resolution level (the last channel mult dropped), widths scaled;
    - small (``0.1 <= s < 0.3``): the teacher's levels, narrower widths;
    - medium (``0.3 <= s < 0.7``): the first level at 75% of the teacher's width, the deeper levels scaled;
    - full (``0.7 <= s <= 1``): the teacher's architecture, widths scaled.

    The widths (multiples of ``WIDTH_STEP``) come from :func:`fit_student`: parameters closest to ``s`` times the
    teacher's, capped so that parameters and FLOPs per image are both non-decreasing in ``s``. For ``s >= 0.1``
    ``params(student) / params(teacher)`` is within 5% of ``s`` for the paper teacher (base 128), 10% for the
    standard one (base 64) and 20% for the smoke one (base 24): width rounding is the error, and it grows for
    teachers so narrow that a 0.1 student's widths are a few multiples of 4. In the tiny band the ratio is as close
    as the FLOP cap and the smallest model (every width 4, one level fewer) allow, always below the s = 0.1
    student's (the smoke teacher at s = 0.05: 0.029, one level of width 8; ``describe()["parameter_ratio"]``
    reports it). ``s = 1.0`` is the teacher exactly. Class conditioning, attention, dropout and heads are the
    teacher's.
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
        widths, multiplier = fit_student(size_factor, teacher_widths, **common)
        super().__init__(widths, **common)
        self.size_factor, self.band, self.width_multiplier = float(size_factor), band, multiplier
        self.teacher_widths = teacher_widths
        self.teacher_parameters = parameter_count(teacher_widths, **common)
        self.teacher_flops_per_image = flops_per_image(teacher_widths, **common)

    def describe(self) -> dict:
        """Band, size factor, widths per level, levels, attention resolutions, parameter counts,
        ``parameter_ratio = parameters / teacher_parameters``, ``flops_per_image`` (``2 * macs`` of one forward pass
        per image, see the module docstring) and ``flop_ratio``; ``width_multiplier`` scales the teacher's widths of
        the levels the band fits (all but the first in the medium band) before rounding."""
        parameters = sum(p.numel() for p in self.parameters())
        flops = 2 * self.macs_per_image()
        return {
            "band": self.band.name,
            "size_factor": self.size_factor,
            "widths": list(self.widths),
            "levels": len(self.widths),
            "attention_resolutions": list(self.attention_resolutions),
            "num_res_blocks": self.num_res_blocks,
            "width_multiplier": self.width_multiplier,
            "parameters": parameters,
            "teacher_widths": list(self.teacher_widths),
            "teacher_parameters": self.teacher_parameters,
            "parameter_ratio": parameters / self.teacher_parameters,
            "flops_per_image": flops,
            "teacher_flops_per_image": self.teacher_flops_per_image,
            "flop_ratio": flops / self.teacher_flops_per_image,
        }

"""LIFT dual-scale diffusion (seed 003): one UNet jointly denoises an image and its 2x-downsampled version, each
at its own timestep.

::

    x_large [B, C, H, W] ------------------------------------+
                                                              +- concat -> [B, 2C, H, W]
    x_small [B, C, H/2, W/2] -> bilinear upsample 2x --------+
    t_large -> sinusoidal -> MLP --+
                                   +- concat -> MLP -> temb
    t_small -> sinusoidal -> MLP --+
    body(x, temb) -> [B, 2C, H, W] -> split -> eps_large [B, C, H, W]
                                           -> bilinear downsample 2x -> eps_small [B, C, H/2, W/2]

The data's small scale is ``downsample2x(x_large)``. Trained with independent uniform timesteps per scale
(``diffbench.training.DualScaleLoss``), sampled with ``diffbench.sampling.dual_scale_sample``.

The fair comparison of the seed is a single-scale ``DDPMUNet`` with the same parameter count:
:func:`matched_widths` finds its widths from exact counts on the meta device.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from diffbench.models.embedding import timestep_embedding
from diffbench.models.unet import (
    DDPMUNet,
    batch_timesteps,
    fit_width_multiplier,
    linear_macs,
    parameter_count,
    scaled_widths,
)

DEFAULT_BASE_CHANNELS, DEFAULT_CHANNEL_MULTS = 32, (1, 2)  # UNet's defaults


def _check_even_image(x: Tensor, name: str) -> None:
    if x.ndim != 4 or x.shape[-1] % 2 or x.shape[-2] % 2:
        raise ValueError(f"{name} must be [B, C, H, W] with even H and W, got shape {tuple(x.shape)}")


def downsample2x(x: Tensor) -> Tensor:
    """Bilinear 2x downsampling ``[B, C, H, W] -> [B, C, H/2, W/2]`` (``H``, ``W`` even), without antialiasing.

    With ``align_corners=False`` output pixel ``i`` samples the input at ``2i + 1/2``, halfway between pixels
    ``2i`` and ``2i + 1`` in each direction: exactly the 2x2 box average (``F.avg_pool2d(x, 2)``), so the small
    scale of an image in ``[-1, 1]`` stays in ``[-1, 1]``."""
    _check_even_image(x, "x")
    return F.interpolate(x, scale_factor=0.5, mode="bilinear", align_corners=False)


def upsample2x(x: Tensor) -> Tensor:
    """Bilinear 2x upsampling ``[B, C, h, w] -> [B, C, 2h, 2w]`` (``align_corners=False``)."""
    if x.ndim != 4:
        raise ValueError(f"x must be [B, C, h, w], got shape {tuple(x.shape)}")
    return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)


def _time_mlp(in_dim: int, time_dim: int) -> nn.Sequential:
    """The 2-layer MLP of DDPM's time embedding: ``Linear(in_dim, time_dim) -> SiLU -> Linear(time_dim, time_dim)``."""
    return nn.Sequential(nn.Linear(in_dim, time_dim), nn.SiLU(), nn.Linear(time_dim, time_dim))


def _resolve_widths(
    widths: Sequence[int] | None, base_channels: int | None, channel_mults: Sequence[int] | None
) -> tuple[int, ...]:
    if widths is not None:
        if base_channels is not None or channel_mults is not None:
            raise ValueError(
                f"give either widths or base_channels/channel_mults, got widths={tuple(widths)}, "
                f"base_channels={base_channels}, channel_mults={channel_mults}"
            )
        return tuple(int(w) for w in widths)
    base = DEFAULT_BASE_CHANNELS if base_channels is None else base_channels
    return tuple(base * m for m in (DEFAULT_CHANNEL_MULTS if channel_mults is None else channel_mults))


class DualScaleUNet(DDPMUNet):
    """The LIFT denoiser: a ``DDPMUNet`` body with ``2C`` input and output channels whose time embedding merges the
    two scales' timesteps (see the module docstring).

    ``widths`` (or ``base_channels * channel_mults``, as ``UNet``), ``num_res_blocks``, ``dropout`` and
    ``num_heads`` are the body's; ``in_channels`` is ``C`` per scale (1 grey, 3 RGB) and ``image_size`` the large
    side (even). ``attention_resolutions=None`` puts attention at every level but the first (the seed's; the body
    always has it in the middle). Time embeddings: per scale sinusoidal (``freq_dim`` dims) then a 2-layer MLP to
    ``time_dim = 4 widths[0]``: the large scale's is ``DDPMUNet``'s ``time_embed``, the small scale's
    ``time_embed_small``; ``time_merge`` (2 layers, ``2 time_dim -> time_dim``) maps their concatenation to the
    embedding every residual block sees. Unconditional (``num_classes = 0``).
    """

    def __init__(
        self,
        widths: Sequence[int] | None = None,
        *,
        base_channels: int | None = None,
        channel_mults: Sequence[int] | None = None,
        in_channels: int = 1,
        image_size: int = 16,
        num_res_blocks: int = 1,
        attention_resolutions: Sequence[int] | None = None,
        dropout: float = 0.0,
        num_heads: int = 1,
    ) -> None:
        widths = _resolve_widths(widths, base_channels, channel_mults)
        if in_channels < 1:
            raise ValueError(f"in_channels must be >= 1, got {in_channels}")
        if image_size < 2 or image_size % 2:
            raise ValueError(f"image_size (the large scale's side) must be even and >= 2, got {image_size}")
        if attention_resolutions is None:
            attention_resolutions = tuple(image_size // 2**level for level in range(1, len(widths)))
        super().__init__(
            widths,
            in_channels=2 * in_channels,
            out_channels=2 * in_channels,
            image_size=image_size,
            num_res_blocks=num_res_blocks,
            attention_resolutions=tuple(attention_resolutions),
            dropout=dropout,
            num_classes=0,
            num_heads=num_heads,
        )
        self.in_channels, self.body_channels = in_channels, 2 * in_channels
        self.dropout, self.num_heads = dropout, num_heads
        self.time_embed_small = _time_mlp(self.freq_dim, self.time_dim)
        self.time_merge = _time_mlp(2 * self.time_dim, self.time_dim)

    def embed(self, t_large: Tensor, t_small: Tensor) -> Tensor:
        """``time_merge([time_embed(sin(t_large)), time_embed_small(sin(t_small))])``: ``[B]`` x 2 -> ``[B,
        time_dim]``."""
        large = self.time_embed(timestep_embedding(t_large, self.freq_dim))
        small = self.time_embed_small(timestep_embedding(t_small, self.freq_dim))
        return self.time_merge(torch.cat([large, small], dim=-1))

    def forward(self, x_large: Tensor, x_small: Tensor, t_large: Tensor, t_small: Tensor) -> tuple[Tensor, Tensor]:
        """``x_large`` ``[B, C, H, W]`` at ``t_large``, ``x_small`` ``[B, C, H/2, W/2]`` at ``t_small`` (integer
        timesteps ``[B]`` or scalars) -> ``(eps_large [B, C, H, W], eps_small [B, C, H/2, W/2])``."""
        _check_even_image(x_large, "x_large")
        b, c, h, w = x_large.shape
        if c != self.in_channels:
            raise ValueError(f"x_large must have {self.in_channels} channels, got shape {tuple(x_large.shape)}")
        if tuple(x_small.shape) != (b, c, h // 2, w // 2):
            raise ValueError(
                f"x_small must be x_large's 2x-downsampled shape {(b, c, h // 2, w // 2)}, got {tuple(x_small.shape)} "
                f"for x_large {tuple(x_large.shape)}"
            )
        for name, t in (("t_large", t_large), ("t_small", t_small)):
            if torch.as_tensor(t).numel() not in (1, b):
                raise ValueError(f"{name} must be a scalar or [{b}], got shape {tuple(torch.as_tensor(t).shape)}")
        temb = self.embed(batch_timesteps(t_large, b, x_large.device), batch_timesteps(t_small, b, x_large.device))
        eps_large, eps_small = self.body(torch.cat([x_large, upsample2x(x_small)], dim=1), temb).split(c, dim=1)
        return eps_large, downsample2x(eps_small)

    def macs_per_image(self) -> int:
        """``DDPMUNet``'s count for the body (``2C`` channels in and out) plus the small-scale and merge MLPs;
        interpolation is not counted (the ``unet`` module's convention)."""
        extra = [m for m in (*self.time_embed_small, *self.time_merge) if isinstance(m, nn.Linear)]
        return super().macs_per_image() + sum(linear_macs(m) for m in extra)

    def baseline_kwargs(self) -> dict[str, object]:
        """``DDPMUNet`` keyword arguments of the single-scale baseline of the same data (``C`` channels at the large
        ``image_size``, the same blocks, attention, dropout and heads): pass them to :func:`matched_widths`."""
        return {
            "in_channels": self.in_channels,
            "image_size": self.image_size,
            "num_res_blocks": self.num_res_blocks,
            "attention_resolutions": self.attention_resolutions,
            "dropout": self.dropout,
            "num_heads": self.num_heads,
        }

    def describe(self) -> dict:
        """Widths per level, levels, channels per scale, the large side, attention resolutions, parameters and
        ``flops_per_image`` (``2 * macs`` of one forward pass per image pair)."""
        return {
            "widths": list(self.widths),
            "levels": len(self.widths),
            "in_channels": self.in_channels,
            "image_size": self.image_size,
            "attention_resolutions": list(self.attention_resolutions),
            "num_res_blocks": self.num_res_blocks,
            "parameters": sum(p.numel() for p in self.parameters()),
            "flops_per_image": 2 * self.macs_per_image(),
        }


def matched_widths(
    target_parameters: int, base_widths: Sequence[int], *, step: int = 2, **ddpm_kwargs: object
) -> tuple[int, ...]:
    """Per-level widths of a single-scale ``DDPMUNet(widths, **ddpm_kwargs)`` whose exact parameter count
    (:func:`diffbench.models.unet.parameter_count`, cached, meta device) is close to ``target_parameters``, with the
    levels of ``base_widths`` and widths that are multiples of ``step`` (and of ``num_heads``).

    1. The ray: ``base_widths * m`` rounded to multiples of ``step``, with ``m`` closest in log ratio
       (``argmin |log(params / target)|``, :func:`fit_width_multiplier`; the count is non-decreasing in ``m``).
    2. Descent: move one level by ``+-step`` while that strictly reduces ``|log(params / target)|`` (the best move
       each round; it terminates since the error strictly falls over a finite set). The ray's rounding moves the
       count in jumps of a whole level; single-level moves at the narrowest levels refine it.

    GroupNorm accepts every width (``norm_groups`` is a divisor of ``C``). The baseline of a ``DualScaleUNet``
    ``model``: ``matched_widths(count_parameters(model), model.widths, **model.baseline_kwargs())``.
    """
    base = tuple(int(w) for w in base_widths)
    if not base or min(base) < 1:
        raise ValueError(f"base_widths must be a non-empty sequence of positive channel counts, got {base}")
    if not target_parameters > 0:
        raise ValueError(f"target_parameters must be > 0, got {target_parameters}")
    if step < 1:
        raise ValueError(f"step must be >= 1, got {step}")
    kwargs = {k: tuple(v) if isinstance(v, list | tuple) else v for k, v in ddpm_kwargs.items()}
    step = math.lcm(step, int(kwargs.get("num_heads", 1)))

    def error(widths: tuple[int, ...]) -> float:
        return abs(math.log(parameter_count(widths, **kwargs) / target_parameters))

    m0 = math.sqrt(target_parameters / parameter_count(base, **kwargs))  # parameters grow about as width^2
    multiplier = fit_width_multiplier(
        lambda m: parameter_count(scaled_widths(base, m, step), **kwargs), target_parameters, low=m0 / 4, high=m0 * 4
    )
    best = scaled_widths(base, multiplier, step)
    while True:
        moves = [
            best[:i] + (best[i] + delta,) + best[i + 1 :]
            for i in range(len(best))
            for delta in (-step, step)
            if best[i] + delta >= step
        ]
        candidate = min(moves, key=error, default=best)
        if error(candidate) >= error(best):
            return best
        best = candidate

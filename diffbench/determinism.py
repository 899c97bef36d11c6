"""Is sampling reproducible? The core of ``diffbench verify-determinism``.

:func:`verify_determinism` draws ``num_samples`` samples with DDIM three times from the same seed:

1. in batches of ``batch_sizes[0]``;
2. again, in the same batches: ``same_seed_max_abs = max |run2 - run1|`` must be exactly ``0`` for a
   deterministic model and sampler (no dropout left on, no nondeterministic kernels);
3. in batches of ``batch_sizes[1]``: ``batch_layout_max_abs = max |run3 - run1|`` is reported, not judged. The
   mathematics does not depend on the layout, but kernels may block a batch of 7 differently from a batch of 3 and
   round differently: ~1e-7 relative in a float32 UNet's eps on a CPU, more with TF32 or reduced-precision kernels.
   The sampler amplifies it: the first step's ``x0 = (x_T - sqrt(1 - abar) eps) / sqrt(abar)`` multiplies an eps
   error by ``sqrt((1 - abar) / abar)`` (157 at ``t = 999`` of the linear schedule, 2e4 for the cosine one), so
   judge the deviation against ``sample_max_abs`` (``max |run1|``), not against 0.

The comparison of layouts is meaningful because sample ``i``'s noise depends only on ``(seed, i)``: ``x_T`` and,
for ``eta > 0``, every step's noise ``z`` are drawn from its own CPU generator
(``diffbench.sampling.sample_generators``, seeded ``seed * 2**20 + i``), the same on every device and in every
batch. The model runs in the mode it is in: call ``model.eval()`` first; a model left in train mode with dropout
draws its masks from the global RNG and is expected to fail the same-seed check.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from diffbench.metrics.registry import LOWER, QUALITY, Metric, declare
from diffbench.models import device_of
from diffbench.sampling import (
    EpsModel,
    SamplerCallback,
    check_eta,
    ddim_sample,
    randn,
    sample_generators,
    timesteps,
)
from diffbench.schedules import NoiseSchedule

LAYOUT_BATCH = 3  # the default second layout: chunks of 3 (uneven for most sample counts)

declare(
    Metric(
        "determinism_same_seed_max_abs",
        LOWER,
        QUALITY,
        "max |x1 - x2| over two samplings with the same seed and batch layout (0 = bitwise reproducible)",
        tolerance="exact",
    ),
    Metric(
        "determinism_batch_layout_max_abs",
        LOWER,
        QUALITY,
        "max |x1 - x3| between the same seed's samples drawn in two batch layouts (kernel rounding)",
        tolerance="info",
    ),
)


@dataclass(frozen=True)
class DeterminismReport:
    """The outcome of :func:`verify_determinism`: the two deviations (see :func:`max_abs_deviation`), the scale
    they are measured against (``sample_max_abs = max |x^(1)|``, the first run's largest coordinate) and what was
    sampled (``steps``: the timesteps walked, fewer than requested where a ``quadratic`` or ``snr`` grid collapses).
    ``deterministic`` is ``same_seed_max_abs == 0``: bitwise equal reruns; the layout deviation is information,
    not a verdict."""

    same_seed_max_abs: float
    batch_layout_max_abs: float
    sample_max_abs: float
    device: str
    num_samples: int
    steps: int
    batch_sizes: tuple[int, int]
    seed: int
    eta: float

    @property
    def deterministic(self) -> bool:
        return self.same_seed_max_abs == 0

    def metrics(self) -> dict[str, float]:
        """The two deviations under their declared metric names."""
        return {
            "determinism_same_seed_max_abs": self.same_seed_max_abs,
            "determinism_batch_layout_max_abs": self.batch_layout_max_abs,
        }


def max_abs_deviation(a: Tensor, b: Tensor) -> float:
    """``max_i |a_i - b_i|`` over all elements, in float64. Positions where ``a`` and ``b`` are equal (the same
    infinity included) or both NaN count ``0``; a NaN against a number, or opposite infinities, count ``inf``."""
    if a.shape != b.shape:
        raise ValueError(f"a and b must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    if a.numel() == 0:
        return 0.0
    a, b = a.detach().cpu().double(), b.detach().cpu().double()
    same = (a == b) | (a.isnan() & b.isnan())
    diff = (a - b).abs().nan_to_num(nan=math.inf, posinf=math.inf)
    return float(torch.where(same, torch.zeros_like(diff), diff).max())


def _positive_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def _chunk_cond(cond: dict | None, num_samples: int) -> dict:
    """``cond`` checked for slicing: tensors with a leading axis of ``num_samples`` are per-sample (sliced with the
    batch); 0-d tensors and non-tensors are shared by every batch; any other tensor is ambiguous."""
    cond = dict(cond or {})
    for key, value in cond.items():
        if isinstance(value, Tensor) and value.ndim > 0 and len(value) != num_samples:
            raise ValueError(
                f"cond[{key!r}] must be per-sample with a leading axis of num_samples = {num_samples}, "
                f"got shape {tuple(value.shape)}"
            )
    return cond


def sample_in_batches(
    model: EpsModel,
    schedule: NoiseSchedule,
    sample_shape: Sequence[int],
    *,
    num_samples: int,
    grid: Sequence[int],
    seed: int,
    batch_size: int,
    eta: float = 0.0,
    cond: dict | None = None,
    clip_denoised: float | None = None,
    prediction: str = "eps",
    callback: SamplerCallback | None = None,
) -> Tensor:
    """DDIM samples ``[num_samples, *sample_shape]`` on the CPU over the timestep ``grid``, drawn in batches of
    ``batch_size`` (the last one shorter) on the model's device.

    Sample ``i`` uses generator ``i`` of ``sample_generators(seed, num_samples)`` (CPU) for its ``x_T`` and, with
    ``eta > 0``, for its noise at every step, so the result does not depend on ``batch_size`` beyond kernel
    rounding: ``x_T`` is ``randn((num_samples, *sample_shape), sample_generators(seed, num_samples), "cpu")`` in
    every layout. Per-sample tensors of ``cond`` (leading axis ``num_samples``) are sliced with the batch and
    moved to the model's device. ``callback`` is passed to ``ddim_sample`` for every batch."""
    num_samples = _positive_int(num_samples, "num_samples")
    batch_size = _positive_int(batch_size, "batch_size")
    shape = tuple(sample_shape)
    cond = _chunk_cond(cond, num_samples)
    device = device_of(model)
    generators = sample_generators(seed, num_samples)
    chunks = []
    for start in range(0, num_samples, batch_size):
        stop = min(start + batch_size, num_samples)
        batch_generators = generators[start:stop]
        x_T = randn((stop - start, *shape), batch_generators, "cpu")
        batch_cond = {
            key: value[start:stop].to(device) if isinstance(value, Tensor) and value.ndim > 0 else value
            for key, value in cond.items()
        }
        out = ddim_sample(
            model,
            x_T,
            grid,
            schedule,
            eta=eta,
            generator=batch_generators if eta > 0 else None,
            cond=batch_cond,
            clip_denoised=clip_denoised,
            prediction=prediction,
            callback=callback,
        )
        chunks.append(out.cpu())
    return torch.cat(chunks)


def verify_determinism(
    model: EpsModel,
    schedule: NoiseSchedule,
    sample_shape: Sequence[int],
    *,
    num_samples: int,
    steps: int,
    seed: int = 0,
    eta: float = 0.0,
    batch_sizes: tuple[int, int] | None = None,
    device: torch.device | str | None = None,
    cond: dict | None = None,
    spacing: str = "uniform",
    clip_denoised: float | None = None,
    prediction: str = "eps",
) -> DeterminismReport:
    """Sample ``num_samples`` images of ``sample_shape`` (e.g. ``(1, 16, 16)``) with DDIM over ``steps``
    timesteps (``spacing``, see ``diffbench.sampling.timesteps``) three times from ``seed`` (module docstring):

    - ``same_seed_max_abs = max |x^(2) - x^(1)|``: run 2 repeats run 1 (batches of ``batch_sizes[0]``);
    - ``batch_layout_max_abs = max |x^(3) - x^(1)|``: run 3 draws the same samples in batches of ``batch_sizes[1]``.

    ``batch_sizes`` defaults to ``(num_samples, min(3, num_samples - 1))`` (one batch, then chunks of 3: uneven
    for most counts); with a single sample both layouts are one batch of 1. ``eta > 0`` adds per-step noise from
    the per-sample generators (still reproducible). ``device``: where the model runs; ``None`` keeps the model's,
    otherwise an ``nn.Module`` is moved there (``Module.to``, in place). The model's train/eval mode is left as
    it is. ``cond``: model keyword arguments, per-sample tensors with a leading axis of ``num_samples`` (e.g.
    ``{"y": labels}``). ``ValueError`` for ``num_samples < 1``, ``steps`` outside ``[1, T]``, an unknown
    ``spacing``, ``eta`` outside ``[0, 1]`` or a batch size below 1, before anything is sampled.
    """
    num_samples = _positive_int(num_samples, "num_samples")
    if isinstance(steps, bool) or not isinstance(steps, int):
        raise ValueError(f"steps must be an integer, got {steps!r}")
    grid = timesteps(schedule, steps, spacing)  # ValueError for steps outside [1, T] or an unknown spacing
    check_eta(eta)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if batch_sizes is None:
        batch_sizes = (num_samples, max(1, min(LAYOUT_BATCH, num_samples - 1)))
    if len(batch_sizes) != 2:
        raise ValueError(f"batch_sizes must be two batch sizes (reference, alternative), got {batch_sizes!r}")
    sizes = (_positive_int(batch_sizes[0], "batch_sizes[0]"), _positive_int(batch_sizes[1], "batch_sizes[1]"))
    shape = tuple(sample_shape)
    if not shape or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in shape):
        raise ValueError(f"sample_shape must be a non-empty sequence of positive sizes, got {sample_shape!r}")
    _chunk_cond(cond, num_samples)
    if device is not None and isinstance(model, nn.Module):
        model.to(device)
    run_device = device_of(model)

    def run(batch_size: int) -> Tensor:
        return sample_in_batches(
            model,
            schedule,
            shape,
            num_samples=num_samples,
            grid=grid,
            seed=seed,
            batch_size=batch_size,
            eta=eta,
            cond=cond,
            clip_denoised=clip_denoised,
            prediction=prediction,
        )

    first = run(sizes[0])
    second = run(sizes[0])
    third = run(sizes[1])
    return DeterminismReport(
        same_seed_max_abs=max_abs_deviation(first, second),
        batch_layout_max_abs=max_abs_deviation(first, third),
        sample_max_abs=float(first.abs().max()),
        device=str(run_device),
        num_samples=num_samples,
        steps=len(grid),
        batch_sizes=sizes,
        seed=seed,
        eta=float(eta),
    )

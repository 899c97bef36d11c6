"""Samplers as small pure functions over ``eps(x, t, **cond)`` and a ``NoiseSchedule``.

Three separate pieces, as in k-diffusion:

- **the grid**: a strictly decreasing list of integer timesteps in ``[0, T-1]``, built by a small function
  (``uniform_timesteps``, ``leading_timesteps``, ``trailing_timesteps``, ``quadratic_timesteps``,
  ``snr_timesteps``; ``timesteps(schedule, steps, spacing)`` picks one by name from ``TIMESTEP_SPACINGS``) or
  written out by hand, and checked by ``check_timesteps``. Every builder except diffusers' ``leading`` starts
  at ``T-1``, so even a 1-step sampler denoises from pure noise;
- **the sampler**: ``ddim_sample(model, x_T, timesteps, schedule, ...)`` walks the grid it is given and builds
  nothing itself; ``ddpm_sample`` is DDIM with ``eta = 1`` on the full grid; ``dual_scale_sample`` walks two
  non-increasing grids at once, one per scale of a LIFT model;
- **the callback**: called once per step with a ``SamplerStep`` (``x_t``, the ``x0`` estimate, ``eps``,
  ``x_prev``); ``TrajectoryRecorder`` is one such callback.

Noise comes only from what the caller passes: ``x_T`` (typically ``randn(shape, sample_generators(seed, n),
device)``) and, for ``eta > 0``, the generator(s) of the per-step noise: a single ``torch.Generator`` for the
whole batch, or a sequence of generators, one per sample (EDM's per-seed streams), in which case sample ``i``'s
noise depends only on generator ``i`` and its trajectory is the same whatever batch it is drawn in. Nothing
reads the global RNG.
"""

from __future__ import annotations

import numbers
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from diffbench import graphs
from diffbench.models import device_of
from diffbench.schedules import NoiseSchedule

EpsModel = Callable[..., Tensor]
Generators = torch.Generator | Sequence[torch.Generator]


def sample_generators(seed: int, n: int, device: torch.device | str = "cpu") -> list[torch.Generator]:
    """One generator per sample, sample ``i`` seeded with ``seed * 2**20 + i`` (independent of batch layout)."""
    return [torch.Generator(device).manual_seed(seed * 2**20 + i) for i in range(n)]


def randn(shape: Sequence[int], generator: Generators, device: torch.device | str) -> Tensor:
    """Standard normal noise of ``shape`` drawn on the generator's device, then moved to ``device``."""
    if isinstance(generator, torch.Generator):
        return torch.randn(tuple(shape), generator=generator, device=generator.device).to(device)
    if len(generator) != shape[0]:
        raise ValueError(f"got {len(generator)} per-sample generators for a batch of {shape[0]}")
    return torch.stack([torch.randn(tuple(shape[1:]), generator=g, device=g.device) for g in generator]).to(device)


# ----------------------------------------------------------------------------------------------- grids


def _check_steps(num_steps_T: int, steps: int) -> None:
    if not 1 <= steps <= num_steps_T:
        raise ValueError(f"steps must be in [1, {num_steps_T}] (the schedule's T), got {steps}")


def uniform_timesteps(num_steps_T: int, steps: int) -> list[int]:
    """``steps`` timesteps evenly spaced over ``[0, T-1]``, descending (DDIM's "linear", diffusers' "linspace"):
    ``t_k = round(k (T-1) / (steps-1))``, ``k = steps-1, ..., 0``; a single step is ``[T-1]``.

    Computed as ``torch.linspace`` in float32 (the grid every benchmark result was produced with). diffusers
    evaluates the same formula in float64, so at exact ``.5`` ties the two can round differently (T = 1000:
    steps 27, 31, 43, ...; never for 10, 20, 25, 50, 100, 250, 500). Spacing is >= 1, so ``unique`` removes
    nothing and the grid has exactly ``steps`` entries.
    """
    _check_steps(num_steps_T, steps)
    if steps == 1:
        # linspace(0, T-1, 1) is [0]: a 1-step sampler would evaluate at t = 0 and return ~x_T.
        return [num_steps_T - 1]
    grid = torch.linspace(0, num_steps_T - 1, steps).round().long().unique()
    return grid.flip(0).tolist()


def leading_timesteps(num_steps_T: int, steps: int) -> list[int]:
    """diffusers' DDIMScheduler "leading" spacing (``steps_offset = 0``): ``t_k = k (T // steps)``,
    ``k = steps-1, ..., 0``; e.g. T = 1000, 50 steps: ``980, 960, ..., 0``.

    Kept faithful so diffusers' results can be reproduced, flaw included: the grid does **not** start at
    ``T-1`` (it starts at ``T - T // steps``; 1 step is ``[0]``), so the sampler never sees pure noise at its
    first step (Lin et al. 2024, "Common Diffusion Noise Schedules and Sample Steps are Flawed", Table 2).
    Use ``trailing_timesteps`` or ``uniform_timesteps`` unless you are reproducing diffusers.
    """
    _check_steps(num_steps_T, steps)
    ratio = num_steps_T // steps
    return [k * ratio for k in reversed(range(steps))]


def trailing_timesteps(num_steps_T: int, steps: int) -> list[int]:
    """diffusers' DDIMScheduler "trailing" spacing (Lin et al. 2024): ``t_k = round(T - k T / steps) - 1``,
    ``k = 0, ..., steps-1``; starts at ``T-1``; e.g. T = 1000, 50 steps: ``999, 979, ..., 19``.

    Evaluated exactly as diffusers does (``np.round(np.arange(T, 0, -T / steps)) - 1`` in float64, ties to
    even), keeping the first ``steps`` entries: for some ``(T, steps)`` (e.g. 15, 13) float ``arange`` yields
    one extra point near 0, which diffusers turns into a timestep of ``-1``.
    """
    _check_steps(num_steps_T, steps)
    grid = np.round(np.arange(num_steps_T, 0, -num_steps_T / steps))[:steps].astype(np.int64) - 1
    return grid.tolist()


def quadratic_timesteps(num_steps_T: int, steps: int) -> list[int]:
    """DDIM's "quadratic" spacing (Song et al. 2021, App. D.2: ``tau_k = floor(c k^2)`` with ``c`` chosen so the
    last ``tau`` is close to ``T``), dense near ``t = 0``: here ``c = (T-1) / (steps-1)^2``, so
    ``t_k = floor((T-1) k^2 / (steps-1)^2)``, ``k = steps-1, ..., 0``, starts exactly at ``T-1``; 1 step is
    ``[T-1]``. (The official code instead ends at ``0.8 T``.) Computed in exact integer arithmetic.

    De-duplicated: consecutive values differ by ``c (2k+1)``, so the grid has ``steps`` entries exactly when
    ``c >= 1``, i.e. ``(steps-1)^2 <= T-1``; beyond that the first few ``k`` collapse onto the same timestep.
    """
    _check_steps(num_steps_T, steps)
    if steps == 1:
        return [num_steps_T - 1]
    denominator = (steps - 1) ** 2
    return sorted({(num_steps_T - 1) * k * k // denominator for k in range(steps)}, reverse=True)


def snr_timesteps(schedule: NoiseSchedule, steps: int) -> list[int]:
    """Timesteps uniform in log-SNR between ``SNR(T-1)`` and ``SNR(0)``:
    ``lambda_k = lambda_{T-1} + k / (steps-1) (lambda_0 - lambda_{T-1})``, ``lambda = log SNR``, each mapped to the
    nearest integer timestep in log-SNR (``schedule.snr_to_timestep``); starts at ``T-1``, ends at ``0``.

    De-duplicated: where the schedule's log-SNR moves by less than the grid's spacing per timestep, neighbouring
    ``lambda_k`` share a timestep and the grid is shorter than ``steps``.
    """
    _check_steps(schedule.num_steps, steps)
    log_snr_max_t, log_snr_0 = schedule.snr(torch.tensor([schedule.num_steps - 1, 0])).log().tolist()
    log_snr = torch.linspace(log_snr_max_t, log_snr_0, steps, dtype=torch.float64)
    grid = schedule.snr_to_timestep(log_snr.exp())
    return sorted(set(grid.tolist()), reverse=True)


TIMESTEP_SPACINGS: dict[str, Callable[[NoiseSchedule, int], list[int]]] = {
    "uniform": lambda schedule, steps: uniform_timesteps(schedule.num_steps, steps),
    "leading": lambda schedule, steps: leading_timesteps(schedule.num_steps, steps),
    "trailing": lambda schedule, steps: trailing_timesteps(schedule.num_steps, steps),
    "quadratic": lambda schedule, steps: quadratic_timesteps(schedule.num_steps, steps),
    "snr": snr_timesteps,
}


def timesteps(schedule: NoiseSchedule, steps: int, spacing: str = "uniform") -> list[int]:
    """The ``spacing`` grid of ``steps`` timesteps for ``schedule`` (see ``TIMESTEP_SPACINGS``)."""
    if spacing not in TIMESTEP_SPACINGS:
        raise ValueError(f"unknown spacing {spacing!r}; choose one of {sorted(TIMESTEP_SPACINGS)}")
    return TIMESTEP_SPACINGS[spacing](schedule, steps)


def check_timesteps(
    timesteps: Sequence[int] | Tensor, num_steps_T: int, *, strict: bool = True, name: str = "timesteps"
) -> list[int]:
    """Validate a grid (non-empty, integers, strictly decreasing, within ``[0, T-1]``); return it as ``list[int]``.
    ``strict=False`` allows repeats (non-increasing: a scale of ``dual_scale_sample`` that waits); ``name`` is the
    argument the error messages name."""
    values = timesteps.tolist() if isinstance(timesteps, Tensor | np.ndarray) else list(timesteps)
    if not values:
        raise ValueError(f"{name} must be a non-empty sequence of integers, got an empty one")
    for i, t in enumerate(values):
        if not isinstance(t, numbers.Integral) or isinstance(t, bool):
            raise ValueError(f"{name} must be integers, got {t!r} at position {i}")
        if not 0 <= t <= num_steps_T - 1:
            raise ValueError(f"{name} must lie in [0, {num_steps_T - 1}], got {t} at position {i}")
    order = "strictly decreasing" if strict else "non-increasing"
    for i, (t, t_next) in enumerate(zip(values, values[1:], strict=False)):
        if t < t_next or (strict and t == t_next):
            raise ValueError(f"{name} must be {order}, got {t} then {t_next} at positions {i}, {i + 1}")
    return [int(t) for t in values]


# -------------------------------------------------------------------------------------------- samplers


@dataclass(frozen=True)
class SamplerStep:
    """What a sampler reports after step ``i`` (of ``S``) from timestep ``t`` to ``t_prev`` (``-1``: the final
    step to ``abar = 1``). Tensors are ``[B, ...]`` on the model's device: the step's input ``x_t``, the ``x0``
    estimate it used (after clipping), the ``eps`` it used (recomputed from the clipped ``x0``) and its
    output ``x_prev``."""

    i: int
    t: int
    t_prev: int
    x_t: Tensor
    x0: Tensor
    eps: Tensor
    x_prev: Tensor


SamplerCallback = Callable[[SamplerStep], None]


def _check_generator(generator: Generators | None, batch: int) -> None:
    if generator is not None and not isinstance(generator, torch.Generator) and len(generator) != batch:
        raise ValueError(f"got {len(generator)} per-sample generators for a batch of {batch}")


PREDICTIONS = ("eps", "v", "x0")


def predict_x0_eps(
    output: Tensor, x_t: Tensor, abar_t: Tensor | float, prediction: str = "eps"
) -> tuple[Tensor, Tensor]:
    """``(x0, eps)`` implied by a network ``output`` at ``x_t`` with ``abar_t`` (a float or a tensor broadcastable
    to ``x_t``), for each parameterisation of ``x_t = alpha x0 + sigma eps`` (``alpha = sqrt(abar_t)``,
    ``sigma = sqrt(1 - abar_t)``):

    - ``"eps"`` (Ho et al. 2020): ``x0 = (x_t - sigma eps) / alpha``;
    - ``"v"`` (Salimans & Ho 2022, sec. 4): ``v = alpha eps - sigma x0``, so ``x0 = alpha x_t - sigma v`` and
      ``eps = sigma x_t + alpha v`` (no division: well-defined at SNR 0, where an eps-model cannot give x0);
    - ``"x0"``: ``eps = (x_t - alpha x0) / sigma``.
    """
    abar = torch.as_tensor(abar_t, dtype=torch.float64)
    alpha = abar.sqrt().to(dtype=x_t.dtype, device=x_t.device)
    sigma = (1 - abar).sqrt().to(dtype=x_t.dtype, device=x_t.device)
    return x0_eps(output, x_t, alpha, sigma, prediction)


def x0_eps(output: Tensor, x_t: Tensor, alpha: Tensor, sigma: Tensor, prediction: str) -> tuple[Tensor, Tensor]:
    """:func:`predict_x0_eps` with ``alpha = sqrt(abar_t)`` and ``sigma = sqrt(1 - abar_t)`` already in ``x_t``'s
    dtype and on its device (a sampler's precomputed per-step coefficients)."""
    if prediction == "eps":
        return (x_t - sigma * output) / alpha, output
    if prediction == "v":
        return alpha * x_t - sigma * output, sigma * x_t + alpha * output
    if prediction == "x0":
        return output, (x_t - alpha * output) / sigma
    raise ValueError(f"prediction must be one of {PREDICTIONS}, got {prediction!r}")


def ddim_step(x0: Tensor, eps: Tensor, abar_prev: Tensor | float, sigma: Tensor | float = 0.0) -> Tensor:
    """The deterministic part of DDIM's update (Song et al. 2021, eq. 12) to ``abar_prev`` (``1`` after the last
    step): ``sqrt(abar_prev) x0 + sqrt(1 - abar_prev - sigma^2) eps``; the caller adds ``sigma z``."""
    abar_prev = torch.as_tensor(abar_prev, dtype=torch.float64)
    sigma = torch.as_tensor(sigma, dtype=torch.float64)
    direction = (1 - abar_prev - sigma**2).clamp(min=0).sqrt().to(dtype=x0.dtype, device=x0.device)
    return abar_prev.sqrt().to(dtype=x0.dtype, device=x0.device) * x0 + direction * eps


def denoise(
    model: EpsModel,
    x_t: Tensor,
    t: Tensor,
    schedule: NoiseSchedule,
    *,
    prediction: str = "eps",
    cond: dict | None = None,
    clip_denoised: float | None = None,
) -> tuple[Tensor, Tensor]:
    """``(x0, eps)`` of ``model`` at ``x_t`` and per-sample timesteps ``t`` ``[B]`` (long): the output read as
    ``prediction`` (see :func:`predict_x0_eps`); ``clip_denoised = c`` clamps ``x0`` to ``[-c, c]`` and recomputes
    ``eps`` from it, so the step stays on the line through ``x_t``."""
    output = model(x_t, t, **(cond or {}))
    return read_output(output, x_t, t, schedule, prediction=prediction, clip_denoised=clip_denoised)


def read_output(
    output: Tensor,
    x_t: Tensor,
    t: Tensor,
    schedule: NoiseSchedule,
    *,
    prediction: str = "eps",
    clip_denoised: float | None = None,
) -> tuple[Tensor, Tensor]:
    """``(x0, eps)`` of a network ``output`` at ``x_t`` ``[B, ...]`` and timesteps ``t`` ``[B]``: :func:`denoise`
    after the model call, for callers that evaluate the model themselves (one call, several outputs)."""
    shape = (-1,) + (1,) * (x_t.ndim - 1)
    abar = schedule.alpha_bar[t.cpu()].reshape(shape)
    x0, eps = predict_x0_eps(output, x_t, abar, prediction)
    if clip_denoised is not None:
        x0 = x0.clamp(-clip_denoised, clip_denoised)
        _, eps = predict_x0_eps(x0, x_t, abar, "x0")
    return x0, eps


def abar_next(schedule: NoiseSchedule, t_prev: int) -> Tensor:
    """The ``abar`` a sampler step moves to: ``abar[t_prev]``, or ``1`` (float64) for ``t_prev = -1`` (the last
    step)."""
    return schedule.alpha_bar[t_prev] if t_prev >= 0 else torch.tensor(1.0, dtype=torch.float64)


def check_eta(eta: float) -> float:
    if not 0 <= eta <= 1:
        raise ValueError(f"eta must be in [0, 1], got {eta}")
    return eta


@dataclass(frozen=True)
class DDIMPlan:
    """DDIM's per-step coefficients on one grid (Song et al. 2021, eq. 12), computed once in float64 on the host
    and held as ``[S]`` tensors in the samples' dtype on their device, so the sampling loop does no host work
    (no ``.item()``, no host-to-device copies): the same loop runs eagerly and inside a CUDA graph
    (:mod:`diffbench.graphs`).

    Step ``i`` goes from ``timesteps[i]`` to ``t_prev[i]`` (``-1``: ``abar = 1``): ``sqrt_abar[i]`` and
    ``sqrt_one_minus_abar[i]`` read the model output at ``abar_t``; ``x_prev = sqrt_abar_prev x0 + direction eps +
    sigma z`` with ``sigma = eta sqrt((1 - abar_prev) / (1 - abar_t)) sqrt(1 - abar_t / abar_prev)`` and
    ``direction = sqrt(1 - abar_prev - sigma^2)``. ``noisy[i]`` says (on the host) whether step ``i`` draws ``z``.
    """

    timesteps: tuple[int, ...]
    t_prev: tuple[int, ...]
    eta: float
    sqrt_abar: Tensor
    sqrt_one_minus_abar: Tensor
    sqrt_abar_prev: Tensor
    direction: Tensor
    sigma: Tensor
    noisy: tuple[bool, ...]

    @property
    def noisy_steps(self) -> list[int]:
        return [i for i, noisy in enumerate(self.noisy) if noisy]


def ddim_plan(
    timesteps: Sequence[int] | Tensor,
    schedule: NoiseSchedule,
    *,
    eta: float = 0.0,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> DDIMPlan:
    """The :class:`DDIMPlan` of a strictly decreasing grid (checked) with ``eta`` in ``[0, 1]``."""
    grid = check_timesteps(timesteps, schedule.num_steps)
    check_eta(eta)
    t_prev = [*grid[1:], -1]
    a_t = schedule.alpha_bar[grid]
    a_prev = torch.stack([abar_next(schedule, t) for t in t_prev])
    sigma = eta * ((1 - a_prev) / (1 - a_t)).sqrt() * (1 - a_t / a_prev).sqrt()
    direction = (1 - a_prev - sigma**2).clamp(min=0).sqrt()

    def cast(values: Tensor) -> Tensor:
        return values.to(dtype=dtype, device=device)

    return DDIMPlan(
        timesteps=tuple(grid),
        t_prev=tuple(t_prev),
        eta=float(eta),
        sqrt_abar=cast(a_t.sqrt()),
        sqrt_one_minus_abar=cast((1 - a_t).sqrt()),
        sqrt_abar_prev=cast(a_prev.sqrt()),
        direction=cast(direction),
        sigma=cast(sigma),
        noisy=tuple(bool(s > 0) for s in sigma),
    )


def ddim_loop(
    model: EpsModel,
    x: Tensor,
    plan: DDIMPlan,
    *,
    noise: Callable[[int], Tensor] | None = None,
    cond: dict | None = None,
    clip_denoised: float | None = None,
    prediction: str = "eps",
    callback: SamplerCallback | None = None,
    progress: bool = False,
) -> Tensor:
    """Walk ``plan`` from ``x`` (on the model's device, in the plan's dtype): the body of :func:`ddim_sample`.
    ``noise(i)`` gives step ``i``'s ``z`` for each step with ``plan.noisy[i]``. Nothing here reads a tensor back to
    the host, so the loop can be captured as one CUDA graph."""
    cond = cond or {}
    steps = tqdm(range(len(plan.timesteps)), disable=not progress, desc="sampling", leave=False)
    for i in steps:
        t_batch = torch.full((x.shape[0],), plan.timesteps[i], device=x.device, dtype=torch.long)
        alpha, sigma_t = plan.sqrt_abar[i], plan.sqrt_one_minus_abar[i]
        x0, eps = x0_eps(model(x, t_batch, **cond), x, alpha, sigma_t, prediction)
        if clip_denoised is not None:
            x0 = x0.clamp(-clip_denoised, clip_denoised)
            _, eps = x0_eps(x0, x, alpha, sigma_t, "x0")
        x_prev = plan.sqrt_abar_prev[i] * x0 + plan.direction[i] * eps
        if plan.noisy[i]:
            if noise is None:
                raise ValueError(f"step {i} of this plan adds noise (eta = {plan.eta}): pass noise")
            x_prev = x_prev + plan.sigma[i] * noise(i)
        if callback is not None:
            callback(SamplerStep(i=i, t=plan.timesteps[i], t_prev=plan.t_prev[i], x_t=x, x0=x0, eps=eps, x_prev=x_prev))
        x = x_prev
    return x


@torch.no_grad()
def ddim_sample(
    model: EpsModel,
    x_T: Tensor,
    timesteps: Sequence[int] | Tensor,
    schedule: NoiseSchedule,
    *,
    eta: float = 0.0,
    generator: Generators | None = None,
    cond: dict | None = None,
    clip_denoised: float | None = None,
    prediction: str = "eps",
    callback: SamplerCallback | None = None,
    progress: bool = False,
    cuda_graph: bool | None = None,
) -> Tensor:
    """DDIM (Song et al. 2021, eq. 12) from ``x_T`` ``[B, ...]`` over the strictly decreasing ``timesteps``:
    ``x0 = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)``,
    ``sigma = eta sqrt((1 - abar_prev) / (1 - abar_t)) sqrt(1 - abar_t / abar_prev)``,
    ``x_prev = sqrt(abar_prev) x0 + sqrt(1 - abar_prev - sigma^2) eps + sigma z``, with ``abar_prev = 1`` after
    the last timestep, so the last step returns the ``x0`` estimate. ``eta = 0`` (default) is deterministic
    given ``x_T`` and needs no generator; ``eta`` in ``(0, 1]`` draws ``z`` from ``generator`` (one, or one per
    sample); ``eta = 1`` on the full grid is DDPM. ``clip_denoised = c`` clamps ``x0`` to ``[-c, c]`` and
    recomputes ``eps`` from it. ``prediction`` says what the model outputs (``"eps"``, ``"v"`` or ``"x0"``, see
    :func:`predict_x0_eps`). ``x_T`` is moved to the model's device; the model is called as
    ``model(x_t, t [B] long, **cond)``. ``callback`` gets a ``SamplerStep`` after every step.

    ``cuda_graph``: replay the whole loop as one captured CUDA graph (:func:`ddim_graph`; small models are
    launch-bound on a GPU). ``None`` (default) captures on a CUDA device once the same (model, shape, grid,
    options) is sampled a second time, and never on a CPU; ``True`` requires it; ``False`` is the eager
    reference. Captured samples equal eager ones to float tolerance, ``z`` is drawn from the same generators in
    the same order outside the graph, and a callback gets the same steps after the replay.
    Returns the samples ``[B, ...]``.
    """
    check_eta(eta)
    if prediction not in PREDICTIONS:
        raise ValueError(f"prediction must be one of {PREDICTIONS}, got {prediction!r}")
    if eta > 0 and generator is None:
        raise ValueError(
            f"eta = {eta} > 0 adds noise every step: pass a torch.Generator (or one per sample); "
            "samplers never use the global RNG"
        )
    _check_generator(generator, x_T.shape[0])
    device = device_of(model)
    x = x_T.to(device)
    plan = ddim_plan(timesteps, schedule, eta=eta, dtype=x.dtype, device=device)
    options = {"cond": cond, "clip_denoised": clip_denoised, "prediction": prediction}
    if cuda_graph is not False:
        captured = _sample_captured(model, x, plan, generator, callback, cuda_graph, progress, **options)
        if captured is not None:
            return captured
    noise = lambda i: randn(x.shape, generator, device)  # noqa: E731
    return ddim_loop(model, x, plan, noise=noise, callback=callback, progress=progress, **options)


def _sample_captured(
    model: EpsModel,
    x: Tensor,
    plan: DDIMPlan,
    generator: Generators | None,
    callback: SamplerCallback | None,
    cuda_graph: bool | None,
    progress: bool,
    **options,
) -> Tensor | None:
    """:func:`ddim_sample` through its cached graph, or ``None`` where the eager loop runs instead (see its
    ``cuda_graph``). The model's host-side input checks (``check_cond``), skipped inside the graph, run first;
    the noise of every noisy step is drawn before the replay, in the eager loop's order."""
    blocker = graphs.capture_blocker(model, x.device)
    blocker = blocker or ("a captured loop has no per-step progress bar" if progress else None)
    if blocker is not None:
        if cuda_graph:
            raise ValueError(f"cuda_graph=True: {blocker}")
        return None
    record = callback is not None
    runner = graphs.cached(
        model,
        ddim_graph_key(model, x, plan, record=record, **options),
        lambda: ddim_graph(model, x, plan, record=record, **options),
        first_time_eager=cuda_graph is None,
    )
    if runner is None:
        return None
    check = getattr(model, "check_cond", None)
    if check is not None:
        check(x, **(options["cond"] or {}))
    draws = [randn(x.shape, generator, x.device) for _ in plan.noisy_steps]
    noise = torch.stack(draws) if draws else x.new_zeros((0, *x.shape))
    samples, steps = runner(ddim_graph_inputs(x, noise, options["cond"]))
    for step in steps:
        callback(step)
    return samples.clone()


def ddim_graph_inputs(x: Tensor, noise: Tensor, cond: dict | None) -> dict[str, Tensor]:
    """The named inputs of :func:`ddim_graph`: ``x``, ``noise`` and ``cond.<name>`` per conditioning tensor."""
    return {"x": x, "noise": noise, **{f"cond.{name}": value for name, value in (cond or {}).items()}}


def ddim_graph(
    model: EpsModel,
    x: Tensor,
    plan: DDIMPlan,
    *,
    cond: dict | None = None,
    clip_denoised: float | None = None,
    prediction: str = "eps",
    record: bool = False,
    use_graph: bool = True,
) -> graphs.CapturedCall:
    """:func:`ddim_loop` over ``plan`` as one captured CUDA graph (:class:`diffbench.graphs.CapturedCall`) for
    batches shaped like ``x`` and conditioning like ``cond``. Its inputs (:func:`ddim_graph_inputs`) are ``x_T``,
    ``noise`` ``[K, B, ...]`` (the ``z`` of ``plan.noisy_steps`` in order, drawn by the caller outside the graph;
    ``K = 0`` at ``eta = 0``) and the conditioning; its output is ``(samples, steps)``, ``steps`` every step's
    :class:`SamplerStep` when ``record`` (else empty), all in the graph's memory until its next replay.
    ``use_graph=False`` runs the same buffers eagerly (tests on a CPU)."""
    slot = {step: k for k, step in enumerate(plan.noisy_steps)}
    # Weakly: the graph cache is keyed weakly by the model, and a strong reference here would keep it alive.
    model_ref = weakref.ref(model)

    def run(inputs: dict[str, Tensor]) -> tuple[Tensor, list[SamplerStep]]:
        steps: list[SamplerStep] = []
        samples = ddim_loop(
            model_ref(),
            inputs["x"],
            plan,
            noise=lambda i: inputs["noise"][slot[i]],
            cond={name[5:]: value for name, value in inputs.items() if name.startswith("cond.")},
            clip_denoised=clip_denoised,
            prediction=prediction,
            callback=steps.append if record else None,
        )
        return samples, steps

    noise = x.new_zeros((len(slot), *x.shape))
    return graphs.CapturedCall(run, ddim_graph_inputs(x, noise, cond), use_graph=use_graph)


def ddim_graph_key(
    model: EpsModel,
    x: Tensor,
    plan: DDIMPlan,
    *,
    cond: dict | None = None,
    clip_denoised: float | None = None,
    prediction: str = "eps",
    record: bool = False,
) -> tuple:
    """What a captured DDIM loop is specific to: where the model's weights live, the batch's shape, dtype and device,
    the grid, ``eta``, prediction, clipping, the conditioning's shapes and whether steps are recorded. The model
    itself (the cache's owner) covers guidance, a wrapper module per scale."""
    signature = tuple(sorted((name, tuple(v.shape), v.dtype) for name, v in (cond or {}).items()))
    return (
        graphs.storage_key(model),
        (tuple(x.shape), x.dtype, str(x.device)),
        (plan.timesteps, plan.eta, prediction, clip_denoised),
        signature,
        record,
    )


@torch.no_grad()
def consistency_sample(
    model: EpsModel,
    x_T: Tensor,
    timesteps: Sequence[int] | Tensor,
    schedule: NoiseSchedule,
    *,
    generator: Generators | None = None,
    cond: dict | None = None,
    clip_denoised: float | None = None,
) -> Tensor:
    """Multistep consistency sampling (Song et al. 2023, Algorithm 1) with a model that outputs ``x0`` (a
    consistency function): ``x = f(x_T, t_0)``; then for each further ``t_k``: re-noise
    ``x_{t_k} = sqrt(abar) x + sqrt(1 - abar) z`` (a fresh ``q(x_t | x0)`` draw) and ``x = f(x_{t_k}, t_k)``.
    One timestep is the 1-step sampler and needs no generator. Returns ``[B, ...]``."""
    timesteps = check_timesteps(timesteps, schedule.num_steps)
    if len(timesteps) > 1 and generator is None:
        raise ValueError("multistep consistency sampling re-noises between steps: pass a torch.Generator")
    _check_generator(generator, x_T.shape[0])
    device = device_of(model)
    x = x_T.to(device)
    for i, t in enumerate(timesteps):
        t_batch = torch.full((x.shape[0],), t, device=device, dtype=torch.long)
        if i > 0:
            x = schedule.add_noise(x, t_batch, randn(x.shape, generator, device))
        x = model(x, t_batch, **(cond or {}))
        if clip_denoised is not None:
            x = x.clamp(-clip_denoised, clip_denoised)
    return x


@torch.no_grad()
def ddpm_sample(
    model: EpsModel,
    x_T: Tensor,
    schedule: NoiseSchedule,
    *,
    generator: Generators,
    cond: dict | None = None,
    clip_denoised: float | None = None,
    callback: SamplerCallback | None = None,
    progress: bool = False,
) -> Tensor:
    """Ancestral DDPM sampling over all ``T`` steps (Ho et al. 2020, Algorithm 2):
    ``x_{t-1} = (x_t - beta_t / sqrt(1 - abar_t) eps) / sqrt(alpha_t) + sigma_t z`` with the posterior variance
    ``sigma_t^2 = beta_t (1 - abar_{t-1}) / (1 - abar_t)`` (eq. 7). Written as DDIM with ``eta = 1`` on the full
    grid ``T-1, ..., 0``, which is algebraically the same update. Returns ``[B, ...]``."""
    return ddim_sample(
        model,
        x_T,
        uniform_timesteps(schedule.num_steps, schedule.num_steps),
        schedule,
        eta=1.0,
        generator=generator,
        cond=cond,
        clip_denoised=clip_denoised,
        callback=callback,
        progress=progress,
    )


@dataclass(frozen=True)
class DualScaleStep:
    """What ``dual_scale_sample`` reports at step ``i``: the timesteps the model saw, each scale's input state
    (``x_large`` ``[B, C, H, W]`` at ``t_large``, ``x_small`` ``[B, C, H/2, W/2]`` at ``t_small``) and its (clipped)
    ``x0`` estimate, on the model's device. The state after the last step is the sampler's return value."""

    i: int
    t_large: int
    t_small: int
    x_large: Tensor
    x_small: Tensor
    x0_large: Tensor
    x0_small: Tensor


DualScaleCallback = Callable[[DualScaleStep], None]


def _ddim_eta0_to(x_t: Tensor, x0: Tensor, eps: Tensor, schedule: NoiseSchedule, t: int, t_next: int) -> Tensor:
    """Deterministic DDIM from ``t`` to ``t_next`` (``-1``: ``abar = 1``). ``t_next == t`` returns ``x_t`` itself:
    the step to the same ``abar`` is ``sqrt(abar) x0 + sqrt(1 - abar) eps = x_t`` (``x0``, ``eps`` lie on the line
    through ``x_t``, clipping included), and evaluating it would only add rounding."""
    return x_t if t_next == t else ddim_step(x0, eps, abar_next(schedule, t_next))


@torch.no_grad()
def dual_scale_sample(
    model: Callable[..., tuple[Tensor, Tensor]],
    x_T_large: Tensor,
    x_T_small: Tensor,
    t_large: Sequence[int] | Tensor,
    t_small: Sequence[int] | Tensor,
    schedule: NoiseSchedule,
    *,
    clip_denoised: float | None = None,
    callback: DualScaleCallback | None = None,
) -> tuple[Tensor, Tensor]:
    """Deterministic DDIM (``eta = 0``, Song et al. 2021 eq. 12) on both scales of a LIFT model
    (``model(x_large, x_small, t_large [B], t_small [B]) -> (eps_large, eps_small)``, e.g. ``DualScaleUNet``).

    ``t_large`` and ``t_small`` are the two scales' schedules: equal lengths ``N >= 1``, integers in ``[0, T-1]``,
    each non-increasing, so a scale may wait at a timestep while the other moves (a step to the same ``abar`` leaves
    it unchanged). At step ``k`` the model sees ``(x_large, x_small, t_large[k], t_small[k])``; each scale's ``x0``
    and ``eps`` come from its eps output as in :func:`denoise` (``clip_denoised = c`` clamps ``x0`` to ``[-c, c]``)
    and it moves by :func:`ddim_step` to its next timestep's ``abar``, ``1`` after the last step, so the result is
    each scale's final ``x0`` estimate. ``x_T_large`` ``[B, C, H, W]`` and ``x_T_small`` ``[B, C, H/2, W/2]`` are
    moved to the model's device. ``callback`` gets a :class:`DualScaleStep` per step. Returns
    ``(x_large, x_small)``.
    """
    t_large = check_timesteps(t_large, schedule.num_steps, strict=False, name="t_large")
    t_small = check_timesteps(t_small, schedule.num_steps, strict=False, name="t_small")
    if len(t_large) != len(t_small):
        raise ValueError(f"t_large and t_small must have the same length, got {len(t_large)} and {len(t_small)}")
    device = device_of(model)
    x_large, x_small = x_T_large.to(device), x_T_small.to(device)
    for i, (tl, ts) in enumerate(zip(t_large, t_small, strict=True)):
        tl_batch = torch.full((x_large.shape[0],), tl, device=device, dtype=torch.long)
        ts_batch = torch.full((x_small.shape[0],), ts, device=device, dtype=torch.long)
        out_large, out_small = model(x_large, x_small, tl_batch, ts_batch)
        x0_large, eps_large = read_output(out_large, x_large, tl_batch, schedule, clip_denoised=clip_denoised)
        x0_small, eps_small = read_output(out_small, x_small, ts_batch, schedule, clip_denoised=clip_denoised)
        if callback is not None:
            callback(DualScaleStep(i, tl, ts, x_large, x_small, x0_large, x0_small))
        last = i + 1 == len(t_large)
        x_large = _ddim_eta0_to(x_large, x0_large, eps_large, schedule, tl, -1 if last else t_large[i + 1])
        x_small = _ddim_eta0_to(x_small, x0_small, eps_small, schedule, ts, -1 if last else t_small[i + 1])
    return x_large, x_small


@dataclass
class TrajectoryRecorder:
    """A sampler callback that keeps every state on the CPU: ``recorder = TrajectoryRecorder();
    ddim_sample(..., callback=recorder); recorder.trajectory()``. A step with ``i = 0`` starts a new recording, so
    one recorder holds the latest sampler call. ``record_x0=False`` skips the ``x0`` estimates (half the memory).
    """

    record_x0: bool = True
    _states: list[Tensor] = field(default_factory=list, init=False, repr=False)
    _x0: list[Tensor] = field(default_factory=list, init=False, repr=False)

    def __call__(self, step: SamplerStep) -> None:
        if step.i == 0:
            self._states, self._x0 = [step.x_t.cpu()], []
        elif step.i != len(self._states) - 1:
            raise ValueError(f"got step {step.i} after {len(self._states) - 1} recorded steps")
        self._states.append(step.x_prev.cpu())
        if self.record_x0:
            self._x0.append(step.x0.cpu())

    def trajectory(self) -> Tensor:
        """``[S+1, B, ...]`` from ``x_T`` (index 0) to the returned sample (index ``S``)."""
        if not self._states:
            raise ValueError("nothing recorded: pass the recorder as a sampler's callback first")
        return torch.stack(self._states)

    def x0_estimates(self) -> Tensor:
        """``[S, B, ...]``: the (clipped) ``x0`` estimate of each step."""
        if not self.record_x0:
            raise ValueError("x0 estimates were not recorded (record_x0=False)")
        if not self._x0:
            raise ValueError("nothing recorded: pass the recorder as a sampler's callback first")
        return torch.stack(self._x0)

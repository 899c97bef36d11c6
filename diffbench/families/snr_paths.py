"""snr_paths: which SNR path is best for a two-scale model, and which timesteps for a single-scale one? (seed 003)

Seed 003's LIFT model denoises an image and its 2x-downsampled version with independent timesteps. This family
trains it and a single-scale baseline with the same parameter count on the same data, then:

- seed 003's three MSE tests at one timestep (both scales noisy; clean small + noisy large; clean large + noisy
  small), with the baseline's MSE at the same t and noise beside them;
- the discretization-error heatmap over ``(gamma_0, gamma_1)`` (large- and small-scale SNR) from the Hutchinson
  estimator (:mod:`diffbench.metrics.discretization`), under both chain-rule factors (the seed's
  ``1 / (snr (1 + snr))`` and the derived ``1 / (1 + snr)``), with the DP paths (total error, large-scale error
  only) and the diagonal;
- generation quality (domain FID with its interval) of the diagonal, both DP paths under both factors and the
  baseline at the same step count, from the same initial noise;
- beyond the seed, the same estimator's error density ``E(t)`` of the size_factors teacher (the shared artifact,
  not retrained) and the DP-optimal N-step DDIM schedule it implies, against uniform, quadratic and
  log-SNR-uniform grids at the profile's step counts.

Every model, heatmap, density and set of samples is a cached artifact whose key contains its model's.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from diffbench.cache import ArtifactCache
from diffbench.data import DataConfig
from diffbench.experiments import (
    RunSpec,
    cached_dataset,
    class_labels,
    domain_fid,
    draw_samples,
    final_model,
    image_quality,
    num_classes_of,
    paired_fid_delta,
)
from diffbench.families import Family, Measurements, Option, OptionValues
from diffbench.families import size_factors as sf
from diffbench.metrics.discretization import (
    CHAIN_RULE_CONVENTIONS,
    apply_chain_rule,
    chain_rule_factor,
    diagonal_path,
    error_density,
    error_heatmap,
    hutchinson_vhv,
    hutchinson_vhv_loop,
    optimal_schedule,
    optimal_snr_path,
    path_cost,
    path_to_schedule,
    schedule_cost,
    snr_grid,
    uniform_weights,
)
from diffbench.metrics.registry import ARRAY, BOOKKEEPING, LOWER, NEITHER, TIMING, Metric, declare
from diffbench.models import ModelConfig, count_parameters
from diffbench.models.dual_scale import DualScaleUNet, downsample2x, matched_widths
from diffbench.profiles import Profile
from diffbench.sampling import dual_scale_sample, randn, sample_generators, snr_timesteps, timesteps
from diffbench.schedules import NoiseSchedule, ScheduleConfig
from diffbench.training import TrainConfig

declare(
    Metric("error_heatmap", NEITHER, ARRAY, "discretization error [large, small, total] over (gamma_0, gamma_1)"),
    Metric("snr_path", NEITHER, BOOKKEEPING, "small-scale SNR gamma_1 a path takes at the large-scale SNR gamma_0"),
    Metric("path_error", NEITHER, BOOKKEEPING, "a path's cumulative discretization error (sum over its grid points)"),
    Metric("error_density", NEITHER, BOOKKEEPING, "Hutchinson discretization-error density E(t) of an eps-model", True),
    Metric("schedule_cost", NEITHER, BOOKKEEPING, "summed local error E(lambda_a) (lambda_b - lambda_a)^2 of a grid"),
    Metric("schedule_timestep", NEITHER, BOOKKEEPING, "the k-th timestep of a sampling grid"),
    Metric("vhv_seconds", LOWER, TIMING, "wall time of one Hutchinson estimate (all probes)", True, "timing"),
    Metric(
        "vhv_speedup", NEITHER, BOOKKEEPING, "Python-loop time / vmapped time of the same estimate", tolerance="info"
    ),
)

LIFT, BASELINE, TEACHER = "lift", "baseline", "teacher"
PATHS = ("diagonal", "dp_total", "dp_large")
SINGLE_SCALE = "single_scale"
MSE_TESTS = {  # seed 003's tests: which scales are noisy (the other is clean, at t = 0)
    "both_noisy": (True, True),
    "clean_small": (True, False),
    "clean_large": (False, True),
}
SPACINGS = ("uniform", "quadratic", "snr", "dp", "dp_seed")
DP_SPACINGS = {"dp": "derived", "dp_seed": "seed"}  # the DP schedule under each chain-rule factor
PAIRED_SPACINGS = ("uniform", "snr")  # every other grid's FID is also compared with these, paired
KINDS = ("mse", "heatmap", "quality", "density", "schedule")
RECIPE_VERSION = 1
SAMPLE_BATCH = 500
TIMING_PROBES, TIMING_BATCH = 8, 1


def parse_num_points(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"--num-points must be an integer >= 2, got {text!r}") from None
    if value < 2:
        raise ValueError(f"--num-points must be an integer >= 2, got {value}")
    return value


NUM_POINTS = Option(
    "--num-points",
    "points per axis of the snr_paths heatmap's log-spaced SNR grid (default: the profile's, seed 003: 15)",
    metavar="N",
    check=parse_num_points,
)


def selected_num_points(profile: Profile, options: OptionValues) -> int:
    value = options.get("num_points")
    return profile.snr_paths.num_points if value is None else parse_num_points(str(value))


# --- models ----------------------------------------------------------------------------------------------


def data_config(profile: Profile, data_root: str | None = None) -> DataConfig:
    scale = profile.snr_paths
    return DataConfig(scale.dataset, image_size=scale.image_size, seed=profile.seed, root=data_root)


def _train(profile: Profile) -> TrainConfig:
    scale = profile.snr_paths
    return TrainConfig(
        epochs=scale.epochs,
        batch_size=scale.batch_size,
        lr=scale.lr,
        ema_decay=scale.ema_decay,
        checkpoint_every=max(1, scale.epochs // 4),
        seed=profile.seed,
    )


def _schedule(profile: Profile) -> ScheduleConfig:
    """The size_factors teacher's schedule: LIFT, baseline and teacher share one SNR <-> t map."""
    return ScheduleConfig(profile.size_factors.schedule, profile.size_factors.diffusion_steps)


def _unet_kwargs(profile: Profile, data_root: str | None) -> dict:
    scale = profile.snr_paths
    return {
        "in_channels": cached_dataset(data_config(profile, data_root), "train").sample_shape[0],
        "image_size": scale.image_size,
        "num_res_blocks": scale.lift.num_res_blocks,
        "attention_resolutions": scale.lift.attention_resolutions,
        "dropout": scale.lift.dropout,
    }


def lift_widths(profile: Profile) -> tuple[int, ...]:
    return tuple(profile.snr_paths.lift.base_channels * m for m in profile.snr_paths.lift.channel_mults)


def lift_parameters(profile: Profile, data_root: str | None = None) -> int:
    """Parameters of the LIFT model, counted on the meta device (no weights are built)."""
    with torch.device("meta"):
        model = DualScaleUNet(lift_widths(profile), **_unet_kwargs(profile, data_root))
    return count_parameters(model)


def model_spec(profile: Profile, model: str, data_root: str | None = None) -> RunSpec:
    """The LIFT model, its single-scale baseline (widths fitted to LIFT's parameter count: seed 003's fair
    comparison), or the size_factors teacher."""
    if model == TEACHER:
        return sf.model_spec(profile, sf.TEACHER, data_root)
    kwargs = _unet_kwargs(profile, data_root)
    if model == LIFT:
        config = ModelConfig.of("lift_unet", widths=lift_widths(profile), **kwargs)
    elif model == BASELINE:
        widths = matched_widths(lift_parameters(profile, data_root), lift_widths(profile), **kwargs)
        config = ModelConfig.of("ddpm_unet", widths=widths, **kwargs)
    else:
        raise ValueError(f"unknown model {model!r}; choose one of {(LIFT, BASELINE, TEACHER)}")
    return RunSpec(
        model=config, data=data_config(profile, data_root), schedule=_schedule(profile), train=_train(profile)
    )


# --- cells -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cell:
    """One measurement: ``kind`` in ``KINDS``; a quality cell names its model, path and chain-rule convention
    (DP paths only), a schedule cell its spacing and step count."""

    kind: str
    model: str = LIFT
    path: str | None = None
    convention: str | None = None
    spacing: str | None = None
    steps: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown cell kind {self.kind!r}; choose one of {KINDS}")
        if self.path is not None and self.path not in (*PATHS, SINGLE_SCALE):
            raise ValueError(f"unknown path {self.path!r}; choose one of {(*PATHS, SINGLE_SCALE)}")
        if self.convention is not None and self.convention not in CHAIN_RULE_CONVENTIONS:
            raise ValueError(f"unknown convention {self.convention!r}; choose one of {CHAIN_RULE_CONVENTIONS}")
        if self.spacing is not None and self.spacing not in SPACINGS:
            raise ValueError(f"unknown spacing {self.spacing!r}; choose one of {SPACINGS}")

    @property
    def id(self) -> str:
        if self.kind == "quality":
            return "-".join(part for part in (self.model, self.path, self.convention) if part)
        if self.kind == "schedule":
            return f"{self.model}-{self.spacing}-s{self.steps}"
        return f"{self.model}-{self.kind}"

    @property
    def params(self) -> dict:
        names = ("model", "path", "convention", "spacing", "steps")
        return {name: getattr(self, name) for name in names if getattr(self, name) is not None}


BASELINE_CELL = Cell("quality", BASELINE, SINGLE_SCALE)


def cells(profile: Profile) -> list[Cell]:
    """Every cell, ordered for xdist's round-robin start on two workers: one trains LIFT (its MSE tests), then
    builds the heatmap and samples the diagonal; the other trains the teacher (its error density), then the
    baseline; the DP paths and the single-scale schedules follow on whichever worker is free."""
    dp = [Cell("quality", LIFT, path, convention) for convention in CHAIN_RULE_CONVENTIONS for path in PATHS[1:]]
    schedules = [
        Cell("schedule", TEACHER, spacing=spacing, steps=steps)
        for steps in profile.snr_paths.schedule_steps
        for spacing in SPACINGS
    ]
    return [
        Cell("mse", LIFT),
        Cell("density", TEACHER),
        Cell("heatmap", LIFT),
        BASELINE_CELL,
        Cell("quality", LIFT, "diagonal"),
        *dp,
        *schedules,
    ]


# --- seed 003's MSE tests --------------------------------------------------------------------------------


@torch.no_grad()
def lift_mse_tests(
    model: torch.nn.Module, schedule: NoiseSchedule, x0: Tensor, t: int, seed: int
) -> dict[str, dict[str, float]]:
    """Seed 003's tests on held-out images ``x0`` ``[N, C, H, W]``: each scale noisy at ``t`` or clean (``t = 0``,
    the image itself); ``{test: {scale: eps MSE}}`` over the noisy scales, ``total`` their mean. The large
    scale's noise is ``randn`` from ``seed`` (the same draw :func:`diffbench.experiments.eps_error_by_timestep`
    makes, so the single-scale baseline sees the same ``x_t``), the small scale's from ``seed + 1``."""
    device = next(model.parameters()).device
    x0 = x0.to(device)
    x0_small = downsample2x(x0)
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed)).to(device)
    noise_small = torch.randn(x0_small.shape, generator=torch.Generator().manual_seed(seed + 1)).to(device)
    noisy_t = torch.full((len(x0),), t, device=device, dtype=torch.long)
    clean_t = torch.zeros_like(noisy_t)
    out = {}
    for test, (large_noisy, small_noisy) in MSE_TESTS.items():
        x_large = schedule.add_noise(x0, noisy_t, noise) if large_noisy else x0
        x_small = schedule.add_noise(x0_small, noisy_t, noise_small) if small_noisy else x0_small
        eps_large, eps_small = model(
            x_large, x_small, noisy_t if large_noisy else clean_t, noisy_t if small_noisy else clean_t
        )
        errors = {}
        if large_noisy:
            errors["large"] = float(((eps_large - noise) ** 2).mean())
        if small_noisy:
            errors["small"] = float(((eps_small - noise_small) ** 2).mean())
        out[test] = {**errors, "total": sum(errors.values()) / len(errors)}
    return out


def mse_tests(
    profile: Profile, device: torch.device, cache: ArtifactCache, data_root: str | None = None
) -> Measurements:
    """Seed 003's three MSE tests of the LIFT model on the held-out split at the profile's timestep."""
    spec = model_spec(profile, LIFT, data_root)
    model = final_model(spec, cache, device)
    t = profile.snr_paths.mse_timestep
    errors = lift_mse_tests(model, spec.schedule.build(), cached_dataset(spec.data, "test").x, t, profile.seed)
    out = Measurements({"model": LIFT, "t": t})
    for test, by_scale in errors.items():
        for scale, value in by_scale.items():
            out.add("eps_mse", value, test=test, scale=scale)
    out.add("params", count_parameters(model))
    return out


# --- the heatmap and its paths ---------------------------------------------------------------------------


@dataclass(frozen=True)
class HeatmapSpec:
    """Everything that determines a raw (factor-free) heatmap: its artifact key."""

    model: RunSpec
    snr_range: tuple[float, float]
    num_points: int
    samples: int
    probes: int
    seed: int


def heatmap_spec(profile: Profile, options: OptionValues, data_root: str | None = None) -> HeatmapSpec:
    scale = profile.snr_paths
    return HeatmapSpec(
        model_spec(profile, LIFT, data_root),
        scale.snr_range,
        selected_num_points(profile, options),
        scale.heatmap_samples,
        scale.probes,
        profile.seed,
    )


def cached_heatmap(spec: HeatmapSpec, cache: ArtifactCache, device: torch.device) -> dict[str, np.ndarray]:
    """The LIFT model's raw Hutchinson heatmaps ``{"large", "small"}`` ``[M, M]`` on the first ``samples``
    held-out images, computed once per cache."""

    def build(_workdir) -> dict:
        model = final_model(spec.model, cache, device)
        x0 = cached_dataset(spec.model.data, "test").x[: spec.samples].to(device)
        started = time.perf_counter()
        raw = error_heatmap(
            model,
            x0,
            downsample2x(x0),
            snr_grid(*spec.snr_range, spec.num_points),
            spec.model.schedule.build(),
            num_probes=spec.probes,
            generator=torch.Generator().manual_seed(spec.seed),
        )
        return {**{k: torch.as_tensor(v) for k, v in raw.items()}, "seconds": time.perf_counter() - started}

    artifact = cache.get_or_build("snr_heatmap", spec, build, version=RECIPE_VERSION, device=device)
    return {"large": artifact["large"].numpy(), "small": artifact["small"].numpy()}


def snr_paths_of(heatmap: dict[str, np.ndarray]) -> dict[str, list[int]]:
    """The diagonal and the DP paths of one (factor-applied) heatmap: on total error and on large-scale error."""
    return {
        "diagonal": diagonal_path(len(heatmap["total"])),
        "dp_total": optimal_snr_path(heatmap["total"]),
        "dp_large": optimal_snr_path(heatmap["large"]),
    }


def heatmap_cell(
    profile: Profile, options: OptionValues, device: torch.device, cache: ArtifactCache, data_root: str | None = None
) -> Measurements:
    """The error heatmap under both chain-rule factors (an array ``[large, small, total]`` each), every path's
    gamma_1 at each gamma_0, and each path's cumulative total and large-scale error."""
    spec = heatmap_spec(profile, options, data_root)
    raw = cached_heatmap(spec, cache, device)
    grid = snr_grid(*spec.snr_range, spec.num_points)
    out = Measurements(
        {
            "model": LIFT,
            "snr_min": spec.snr_range[0],
            "snr_max": spec.snr_range[1],
            "num_points": spec.num_points,
            "probes": spec.probes,
            "n": spec.samples,
        }
    )
    for convention in CHAIN_RULE_CONVENTIONS:
        heat = apply_chain_rule(raw["large"], raw["small"], grid, convention)
        out.array("error_heatmap", np.stack([heat["large"], heat["small"], heat["total"]]), convention=convention)
        for path_name, path in snr_paths_of(heat).items():
            for i, j in enumerate(path):
                out.add("snr_path", grid[j], convention=convention, path=path_name, snr_large=float(grid[i]), i=i)
            for error in ("total", "large"):
                out.add("path_error", path_cost(heat[error], path), convention=convention, path=path_name, error=error)
    return out


# --- generation along a path ------------------------------------------------------------------------------


@dataclass(frozen=True)
class PathSamples:
    """Everything that determines a quality cell's samples: its artifact key. Sample ``i`` starts from the
    large-scale noise of stream ``seed * 2^20 + i`` (the same for LIFT and the baseline) and the small-scale noise
    of stream ``(seed + 1) * 2^20 + i``; ``t_small`` is empty for a single-scale model, which is asked for class
    ``i mod K`` when it is conditional (the teacher)."""

    model: RunSpec
    t_large: tuple[int, ...]
    t_small: tuple[int, ...]
    n: int
    seed: int
    clip_denoised: float | None = sf.IMAGE_CLIP


def path_schedules(
    cell: Cell,
    profile: Profile,
    options: OptionValues,
    device: torch.device,
    cache: ArtifactCache | None,
    data_root: str | None = None,
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """``(t_large, t_small)`` of a quality cell: the path's two timestep schedules over the profile's step
    count (gamma_0 log-spaced over the grid's range); the baseline takes the diagonal's large-scale schedule."""
    spec = heatmap_spec(profile, options, data_root)
    grid = snr_grid(*spec.snr_range, spec.num_points)
    schedule = spec.model.schedule.build()
    steps = profile.snr_paths.sampling_steps
    if cell.model == BASELINE:
        t_large, _ = path_to_schedule(diagonal_path(len(grid)), grid, steps, schedule)
        return tuple(sorted(set(t_large), reverse=True)), ()
    if cell.path == "diagonal":
        path = diagonal_path(len(grid))
    else:
        heat = apply_chain_rule(**cached_heatmap(spec, cache, device), grid=grid, convention=cell.convention)
        path = snr_paths_of(heat)[cell.path]
    t_large, t_small = path_to_schedule(path, grid, steps, schedule)
    return tuple(t_large), tuple(t_small)


def _draw_path_samples(spec: PathSamples, cache: ArtifactCache, device: torch.device) -> Tensor:
    model = final_model(spec.model, cache, device)
    shape = (spec.n, *cached_dataset(spec.model.data, "train").sample_shape)
    x_T = randn(shape, sample_generators(spec.seed, spec.n), "cpu")
    schedule = spec.model.schedule.build()
    if not spec.t_small:
        labels = class_labels(spec.n, num_classes_of(spec.model))  # class i mod K for a conditional model
        return draw_samples(
            model, x_T, spec.t_large, schedule, labels=labels, clip_denoised=spec.clip_denoised, batch_size=SAMPLE_BATCH
        )
    x_T_small = randn((spec.n, shape[1], shape[2] // 2, shape[3] // 2), sample_generators(spec.seed + 1, spec.n), "cpu")
    chunks = []
    for start in range(0, spec.n, SAMPLE_BATCH):
        end = start + SAMPLE_BATCH
        large, _ = dual_scale_sample(
            model,
            x_T[start:end],
            x_T_small[start:end],
            list(spec.t_large),
            list(spec.t_small),
            schedule,
            clip_denoised=spec.clip_denoised,
        )
        chunks.append(large.cpu())
    return torch.cat(chunks)


def cached_path_samples(spec: PathSamples, cache: ArtifactCache, device: torch.device) -> Tensor:
    """The large-scale samples of ``spec`` ``[n, C, H, W]`` on the CPU, drawn once per cache."""

    def build(_workdir) -> dict:
        return {"samples": _draw_path_samples(spec, cache, device)}

    return cache.get_or_build("snr_path_samples", spec, build, version=RECIPE_VERSION, device=device)["samples"]


def path_samples(
    cell: Cell,
    profile: Profile,
    options: OptionValues,
    device: torch.device,
    cache: ArtifactCache,
    data_root: str | None = None,
) -> PathSamples:
    """The samples a quality cell evaluates: its model along its path's schedules, the profile's count and seed."""
    t_large, t_small = path_schedules(cell, profile, options, device, cache, data_root)
    model = model_spec(profile, cell.model, data_root)
    return PathSamples(model, t_large, t_small, profile.snr_paths.eval_samples, profile.seed)


def path_quality(
    cell: Cell,
    profile: Profile,
    options: OptionValues,
    device: torch.device,
    cache: ArtifactCache,
    data_root: str | None = None,
) -> tuple[Measurements, Tensor]:
    """Domain FID (with its interval and FID-infinity) and KID of a LIFT path's or the baseline's samples at the
    profile's step count, the model's parameter count; a LIFT path also FID(path) - FID(baseline) with its paired
    interval (both start from the same large-scale noise), the baseline its eps MSE at the MSE tests' timestep and
    noise. Returns the rows and the samples."""
    scale = profile.snr_paths
    drawn = path_samples(cell, profile, options, device, cache, data_root)
    spec, t_large = drawn.model, drawn.t_large
    samples = cached_path_samples(drawn, cache, device)
    result = domain_fid(samples, spec.data, cache, device, seed=profile.seed)
    out = Measurements({**cell.params, "steps": len(t_large), "n": result.n_samples, "n_real": result.n_real})
    out.update(result.metrics(), context={"extractor": result.extractor})
    model = final_model(spec, cache, device)
    out.add("params", count_parameters(model))
    out.add("network_evaluations", len(t_large))
    if cell.model == BASELINE:
        t = scale.mse_timestep
        test = cached_dataset(spec.data, "test")
        error = baseline_mse(model, spec.schedule.build(), test.x, t, profile.seed)
        for name in ("large", "total"):
            out.add("eps_mse", error, test=SINGLE_SCALE, scale=name, t=t)
    else:  # a LIFT path, paired with the baseline: the same large-scale noise per sample
        reference = cached_path_samples(
            path_samples(BASELINE_CELL, profile, options, device, cache, data_root), cache, device
        )
        delta = paired_fid_delta(samples, reference, spec.data, cache, device, seed=profile.seed)
        out.update(delta, context={"extractor": result.extractor}, reference=BASELINE)
    out.array("samples", samples[: scale.grid_samples])
    return out, samples


@torch.no_grad()
def baseline_mse(model: torch.nn.Module, schedule: NoiseSchedule, x0: Tensor, t: int, seed: int) -> float:
    """eps MSE of a single-scale model at ``t`` with the large-scale noise of :func:`lift_mse_tests`."""
    device = next(model.parameters()).device
    x0 = x0.to(device)
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed)).to(device)
    t_batch = torch.full((len(x0),), t, device=device, dtype=torch.long)
    return float(((model(schedule.add_noise(x0, t_batch, noise), t_batch) - noise) ** 2).mean())


# --- single-scale schedules on the size_factors teacher ----------------------------------------------------


@dataclass(frozen=True)
class DensitySpec:
    """Everything that determines the teacher's raw error density: its artifact key."""

    model: RunSpec
    timesteps: tuple[int, ...]
    samples: int
    probes: int
    seed: int


def density_spec(profile: Profile, data_root: str | None = None) -> DensitySpec:
    scale = profile.snr_paths
    teacher = model_spec(profile, TEACHER, data_root)
    grid = tuple(snr_timesteps(teacher.schedule.build(), scale.density_points))
    return DensitySpec(teacher, grid, scale.density_samples, scale.probes, profile.seed)


def cached_density(spec: DensitySpec, cache: ArtifactCache, device: torch.device) -> np.ndarray:
    """The teacher's raw Hutchinson error density at ``spec.timesteps`` (log-SNR-uniform), on the first
    ``samples`` held-out images with their labels, computed once per cache."""

    def build(_workdir) -> dict:
        model = final_model(spec.model, cache, device)
        test = cached_dataset(spec.model.data, "test")
        cond = {"y": test.y[: spec.samples].to(device)} if num_classes_of(spec.model) else None
        density = error_density(
            model,
            test.x[: spec.samples].to(device),
            list(spec.timesteps),
            spec.model.schedule.build(),
            num_probes=spec.probes,
            generator=torch.Generator().manual_seed(spec.seed),
            cond=cond,
        )
        return {"density": torch.as_tensor(density)}

    return cache.get_or_build("error_density", spec, build, version=RECIPE_VERSION, device=device)["density"].numpy()


def density_cell(
    profile: Profile, device: torch.device, cache: ArtifactCache, data_root: str | None = None
) -> Measurements:
    """The teacher's error density ``E(t)`` under both chain-rule factors, at log-SNR-uniform timesteps."""
    spec = density_spec(profile, data_root)
    raw = cached_density(spec, cache, device)
    snr = spec.model.schedule.build().snr(torch.tensor(spec.timesteps)).numpy()
    out = Measurements({"model": TEACHER, "probes": spec.probes, "n": spec.samples})
    for convention in CHAIN_RULE_CONVENTIONS:
        density = raw * chain_rule_factor(snr, convention)
        for t, s, value in zip(spec.timesteps, snr, density, strict=True):
            out.add("error_density", value, convention=convention, t=t, snr=float(s))
    return out


def schedule_grid(
    spacing: str,
    steps: int,
    profile: Profile,
    device: torch.device,
    cache: ArtifactCache,
    data_root: str | None = None,
) -> list[int]:
    """The teacher's ``steps``-step grid: a named spacing, or the DP-optimal one under a chain-rule factor."""
    spec = density_spec(profile, data_root)
    schedule = spec.model.schedule.build()
    if spacing in DP_SPACINGS:
        density = cached_density(spec, cache, device)
        return optimal_schedule(schedule, steps, list(spec.timesteps), density, convention=DP_SPACINGS[spacing])
    return timesteps(schedule, steps, spacing)


def schedule_quality(
    cell: Cell, profile: Profile, device: torch.device, cache: ArtifactCache, data_root: str | None = None
) -> tuple[Measurements, list[int]]:
    """Class-conditional DDIM samples of the teacher on one grid: domain FID with its interval, class accuracy
    and diversity, the grid's DP objective (derived factor), its timesteps, and its FID minus the uniform and the
    log-SNR-uniform grids' at the same step count with a paired interval (same noise and classes per sample).
    Returns the rows and the grid."""
    scale = profile.snr_paths
    spec = density_spec(profile, data_root)
    teacher = spec.model
    grid = schedule_grid(cell.spacing, cell.steps, profile, device, cache, data_root)
    n = scale.eval_samples
    labels = class_labels(n, num_classes_of(teacher))
    samples = cached_path_samples(PathSamples(teacher, tuple(grid), (), n, profile.seed), cache, device)
    result, classes = image_quality(samples, labels, teacher.data, cache, device, seed=profile.seed)
    out = Measurements({**cell.params, "n": result.n_samples, "n_real": result.n_real})
    out.update({**result.metrics(), **classes}, context={"extractor": result.extractor})
    density = cached_density(spec, cache, device)
    out.add("schedule_cost", schedule_cost(grid, teacher.schedule.build(), list(spec.timesteps), density))
    out.add("network_evaluations", len(grid))
    for k, t in enumerate(grid):
        out.add("schedule_timestep", t, k=k)
    for reference in PAIRED_SPACINGS:  # every grid starts sample i from the same noise and class: paired
        if reference != cell.spacing:
            grid_ref = schedule_grid(reference, cell.steps, profile, device, cache, data_root)
            other = cached_path_samples(PathSamples(teacher, tuple(grid_ref), (), n, profile.seed), cache, device)
            delta = paired_fid_delta(samples, other, teacher.data, cache, device, seed=profile.seed)
            out.update(delta, context={"extractor": result.extractor}, reference=reference)
    out.array("samples", samples[: scale.grid_samples])
    return out, grid


# --- timing ------------------------------------------------------------------------------------------------


def vhv_timers(profile: Profile, device: torch.device, data_root: str | None = None) -> tuple[Callable, Callable, dict]:
    """``(vmapped, loop, params)``: one Hutchinson estimate with ``TIMING_PROBES`` probes on ``TIMING_BATCH``
    image(s) of an untrained teacher-architecture network, all probes in one vmapped JVP or one JVP per probe
    in a Python loop (the cost depends on the network, not its weights)."""
    teacher = model_spec(profile, TEACHER, data_root)
    model = teacher.model.build(seed=profile.seed).to(device).eval()
    shape = (TIMING_BATCH, *cached_dataset(teacher.data, "train").sample_shape)
    z = randn(shape, torch.Generator().manual_seed(profile.seed), device)
    t = torch.full((TIMING_BATCH,), teacher.schedule.num_steps // 2, device=device, dtype=torch.long)
    v = uniform_weights(shape[1:])

    def eps(x: Tensor) -> Tensor:
        return model(x, t)

    def vmapped() -> None:
        hutchinson_vhv(eps, z, v, TIMING_PROBES, torch.Generator().manual_seed(0))

    def loop() -> None:
        hutchinson_vhv_loop(eps, z, v, TIMING_PROBES, torch.Generator().manual_seed(0))

    return vmapped, loop, {"probes": TIMING_PROBES, "n": TIMING_BATCH}


# --- the family --------------------------------------------------------------------------------------------


def _sections(df, run_dir: Path) -> list:
    from diffbench.report import snr_paths  # the plotting stack loads only when a report is built

    return snr_paths.sections(df, run_dir)


FAMILY = Family(
    name="snr_paths",
    question="LIFT's discretization-error heatmap and DP paths vs a same-size single-scale model; DP schedules",
    seeds=("003",),
    options=(NUM_POINTS,),
    sections=_sections,
)

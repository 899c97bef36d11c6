"""samplers: how few steps can a sampler or a distilled student take on ONE teacher, at what quality? (seeds 000/004)

Every step-reduction method runs on the same teacher, from the same initial noise per sample, through the same
quality pipeline:

- the teacher's own samplers: DDPM over all ``T`` steps and DDIM with ``eta`` in {0, 1} at seed 004's step counts
  (1 ... 100), on the timestep spacing chosen by ``--timestep-spacing`` (recorded in every row);
- progressive distillation (Salimans & Ho 2022), each round a cell at its step count;
- one-step distillation (Luhman & Luhman 2021) on cached (noise, teacher sample) pairs;
- consistency distillation (Song et al. 2023), sampled in 1 and 2 steps.

Two panels: ``image``, the size_factors teacher (class-conditional UNet; the same artifact, not retrained), and
``gmm``, the batch_configs baseline MLP on the 2-D ring of Gaussians, where every metric is cheap and exact.
Students and every cell's samples are cached artifacts whose keys contain their teacher's.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from diffbench import peers
from diffbench.cache import ArtifactCache
from diffbench.data import IMAGE_GEOMETRY
from diffbench.distill import consistency_midpoint, progressive_grids
from diffbench.experiments import (
    RunSpec,
    StudentSpec,
    any_model,
    build_student,
    cached_dataset,
    class_labels,
    draw_samples,
    gmm_sample_metrics,
    image_quality,
    num_classes_of,
    paired_fid_delta,
    prediction_of,
    record_gmm_metrics,
    training_cost,
)
from diffbench.families import Family, Measurements, Option, OptionValues
from diffbench.families import batch_configs as bc
from diffbench.families import size_factors as sf
from diffbench.metrics.registry import BOOKKEEPING, LOWER, NEITHER, QUALITY, TIMING, Metric, declare
from diffbench.profiles import PROFILES, Profile, SamplersPanel, StudentBudget, get_profile
from diffbench.sampling import (
    TIMESTEP_SPACINGS,
    check_eta,
    ddim_sample,
    randn,
    sample_generators,
    timesteps,
    trailing_timesteps,
    uniform_timesteps,
)
from diffbench.schedules import ScheduleConfig
from diffbench.training import TrainConfig

declare(
    Metric("teacher_deviation", LOWER, QUALITY, "RMS distance to the teacher's many-step DDIM output, same noise"),
    Metric("train_steps", NEITHER, BOOKKEEPING, "optimiser steps to obtain a student (earlier rounds included)", True),
    Metric("train_seconds", LOWER, TIMING, "wall time to obtain a student (rounds and pairs included)", True, "timing"),
)

PANELS = ("image", "gmm")
TEACHER_METHODS = ("ddpm", "ddim")
METHODS = (*TEACHER_METHODS, "progressive", "one_step", "consistency")
CONSISTENCY_STEPS = (1, 2)
SAMPLES_RECIPE_VERSION = 1
SAMPLE_BATCH = 1000
LATENCY_BATCH = {"image": 16, "gmm": 1000}


def parse_spacing(text: str) -> str:
    if text not in TIMESTEP_SPACINGS:
        raise ValueError(f"timestep spacing must be one of {', '.join(TIMESTEP_SPACINGS)}, got {text!r}")
    return text


TIMESTEP_SPACING = Option(
    "--timestep-spacing",
    f"timestep spacing of the samplers family's grids: {', '.join(TIMESTEP_SPACINGS)} (default: uniform)",
    metavar="NAME",
    check=parse_spacing,
)


def selected_spacing(options: OptionValues) -> str:
    return parse_spacing(options.get("timestep_spacing") or "uniform")


# --- cells ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cell:
    """One sampler of one panel: ``method`` at ``steps`` network evaluations per sample (``eta`` for DDIM-like
    samplers: 1 for DDPM, 0 for progressive students; ``None`` for the x0-predicting students)."""

    panel: str
    method: str
    steps: int
    eta: float | None = None

    def __post_init__(self) -> None:
        if self.panel not in PANELS:
            raise ValueError(f"unknown panel {self.panel!r}; choose one of {PANELS}")
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; choose one of {METHODS}")
        if self.eta is not None:
            check_eta(self.eta)

    @property
    def id(self) -> str:
        eta = f"-eta{self.eta:g}" if self.method == "ddim" else ""
        return f"{self.panel}-{self.method}{eta}-s{self.steps}"

    @property
    def params(self) -> dict:
        params = {"panel": self.panel, "method": self.method, "steps": self.steps}
        return params if self.eta is None else {**params, "eta": self.eta}


def panel_scale(profile: Profile, panel: str) -> SamplersPanel:
    return getattr(profile.samplers, panel)


def teacher_spec(profile: Profile, panel: str, data_root: str | None = None) -> RunSpec:
    """The panel's teacher: the size_factors teacher (image) or the batch_configs baseline's recipe trained for
    the panel's ``teacher_epochs`` (gmm)."""
    if panel == "image":
        return sf.model_spec(profile, sf.TEACHER, data_root)
    return bc.baseline_recipe(profile, panel_scale(profile, panel).teacher_epochs)


def teacher_diffusion_steps(profile: Profile, panel: str) -> int:
    """The panel teacher's ``T`` (DDPM's step count), read from the profile without loading its dataset, so the
    cells of a profile whose data is not on this machine can still be listed."""
    if panel == "image":
        return profile.size_factors.diffusion_steps
    return bc.baseline_recipe(profile, panel_scale(profile, panel).teacher_epochs).schedule.num_steps


def _panel_cells(profile: Profile, panel: str) -> dict[str, list[Cell]]:
    """A panel's cells by method: the progressive chain (1 step first: that cell builds every round), DDIM at
    every eta and step count, DDPM, one-step and consistency."""
    scale = panel_scale(profile, panel)
    rounds = int(math.log2(scale.progressive_start))
    return {
        "progressive": [Cell(panel, "progressive", 2**k, 0.0) for k in range(rounds)],
        "ddim": [Cell(panel, "ddim", steps, eta) for eta in scale.etas for steps in scale.ddim_steps],
        "ddpm": [Cell(panel, "ddpm", teacher_diffusion_steps(profile, panel), 1.0)],
        "one_step": [Cell(panel, "one_step", 1)],
        "consistency": [Cell(panel, "consistency", steps) for steps in CONSISTENCY_STEPS],
    }


def cells(profile: Profile) -> list[Cell]:
    """Every cell, ordered for xdist's round-robin start on two workers: one takes the image teacher's
    progressive chain (the teacher's training, then the rounds in turn), its DDIM cells and the one-step student;
    the other the whole gmm panel (cheap: it runs while the image teacher trains), then the image panel's
    T-step DDPM and the consistency student."""
    image, gmm = _panel_cells(profile, "image"), _panel_cells(profile, "gmm")
    first = [*image["progressive"], *image["ddim"], *image["one_step"]]
    second = [*(cell for cells in gmm.values() for cell in cells), *image["ddpm"], *image["consistency"]]
    paired = itertools.chain.from_iterable(itertools.zip_longest(first, second))
    return [cell for cell in paired if cell is not None]


# --- students ------------------------------------------------------------------------------------------------


def _student_train(teacher: RunSpec, budget: StudentBudget, *, label_dropout: float) -> TrainConfig:
    return TrainConfig(
        epochs=budget.epochs,
        batch_size=budget.batch_size,
        lr=budget.lr,
        label_dropout=label_dropout,
        checkpoint_every=max(1, budget.epochs // 4),
        seed=teacher.train.seed,
    )


def _clip(panel: str) -> float | None:
    return sf.IMAGE_CLIP if panel == "image" else None


def student_spec(
    profile: Profile, panel: str, method: str, steps: int, spacing: str, data_root: str | None = None
) -> StudentSpec:
    """The student of ``method`` that samples in ``steps`` steps; a progressive student's key holds every earlier
    round's."""
    scale, teacher = panel_scale(profile, panel), teacher_spec(profile, panel, data_root)
    schedule = teacher.schedule.build()
    dropout = teacher.train.label_dropout
    common = {"schedule": teacher.schedule, "clip_denoised": _clip(panel)}
    if method == "progressive":
        base = timesteps(schedule, scale.progressive_start, spacing)
        grids = progressive_grids(base, steps, schedule.num_steps)
        spec: RunSpec | StudentSpec = teacher
        for grid in grids:
            train = _student_train(teacher, scale.progressive, label_dropout=dropout)
            spec = StudentSpec("progressive", spec, grid=tuple(grid), train=train, **common)
        return spec
    if method == "one_step":
        grid = tuple(timesteps(schedule, scale.one_step_teacher_steps, spacing))
        train = _student_train(teacher, scale.one_step, label_dropout=0.0)  # pairs are asked for their labels
        return StudentSpec("one_step", teacher, grid=grid, train=train, pairs=scale.one_step_pairs, **common)
    if method == "consistency":
        grid = tuple(timesteps(schedule, scale.consistency_grid, spacing))
        train = _student_train(teacher, scale.consistency, label_dropout=dropout)
        decay = scale.consistency_target_decay
        sigma_data = round(float(cached_dataset(teacher.data, "train").x.std()), 3)  # EDM's sigma_data
        return StudentSpec(
            "consistency", teacher, grid=grid, train=train, target_decay=decay, sigma_data=sigma_data, **common
        )
    raise ValueError(f"{method!r} is not a distillation method")


def model_id(spec: RunSpec | StudentSpec) -> str:
    if isinstance(spec, RunSpec):
        return "teacher"
    return f"progressive-r{spec.rounds}" if spec.method == "progressive" else spec.method


# --- sampling ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SampleSpec:
    """Everything that determines a cell's samples (their artifact key). Sample ``i`` starts from the noise of
    stream ``seed * 2^20 + i`` (the same in every cell of the panel) and, for a conditional model, asks for
    class ``i mod K``; per-step noise (``eta > 0``, consistency re-noising) comes from one generator seeded
    ``seed + 1``."""

    model: RunSpec | StudentSpec
    sampler: str  # "ddim" or "consistency"
    grid: tuple[int, ...]
    eta: float
    n: int
    seed: int
    clip_denoised: float | None


def _sample(spec: SampleSpec, model: torch.nn.Module, x_T: Tensor) -> Tensor:
    """``spec``'s sampler run by ``model`` from ``x_T``; per-step noise from one generator seeded ``seed + 1``."""
    noisy = spec.eta > 0 or (spec.sampler == "consistency" and len(spec.grid) > 1)
    return draw_samples(
        model,
        x_T,
        spec.grid,
        spec.model.schedule.build(),
        labels=class_labels(len(x_T), num_classes_of(spec.model)),
        sampler=spec.sampler,
        eta=spec.eta,
        generator=torch.Generator().manual_seed(spec.seed + 1) if noisy else None,
        clip_denoised=spec.clip_denoised,
        prediction=prediction_of(spec.model),
        batch_size=SAMPLE_BATCH,
    )


def _draw(spec: SampleSpec, cache: ArtifactCache, device: torch.device) -> Tensor:
    base = spec.model.base if isinstance(spec.model, StudentSpec) else spec.model
    shape = (spec.n, *cached_dataset(base.data, "train").sample_shape)
    return _sample(
        spec, any_model(spec.model, cache, device), randn(shape, sample_generators(spec.seed, spec.n), "cpu")
    )


def cached_samples(spec: SampleSpec, cache: ArtifactCache, device: torch.device) -> Tensor:
    """The samples of ``spec``, drawn once per cache (``[n, ...]`` on the CPU)."""

    def build(_workdir) -> dict:
        return {"samples": _draw(spec, cache, device)}

    return cache.get_or_build("sampler_samples", spec, build, version=SAMPLES_RECIPE_VERSION, device=device)["samples"]


def sample_spec(
    cell: Cell, profile: Profile, spacing: str, *, n: int | None = None, data_root: str | None = None
) -> SampleSpec:
    """The samples a cell evaluates: its model, sampler and grid."""
    scale, teacher = panel_scale(profile, cell.panel), teacher_spec(profile, cell.panel, data_root)
    schedule = teacher.schedule.build()
    n = scale.eval_samples if n is None else n
    common = {"n": n, "seed": profile.seed, "clip_denoised": _clip(cell.panel)}
    if cell.method == "ddpm":
        grid = uniform_timesteps(schedule.num_steps, schedule.num_steps)
        return SampleSpec(teacher, "ddim", tuple(grid), 1.0, **common)
    if cell.method == "ddim":
        return SampleSpec(teacher, "ddim", tuple(timesteps(schedule, cell.steps, spacing)), cell.eta, **common)
    student = student_spec(profile, cell.panel, cell.method, cell.steps, spacing, data_root)
    if cell.method in ("progressive", "one_step"):  # DDIM on the student's own grid (v or x0 output)
        return SampleSpec(student, "ddim", tuple(student.sampler_grid), 0.0, **common)
    grid = student.grid[:1] if cell.steps == 1 else (student.grid[0], consistency_midpoint(schedule, student.grid))
    return SampleSpec(student, "consistency", tuple(grid), 0.0, **common)


def reference_spec(profile: Profile, panel: str, data_root: str | None = None) -> SampleSpec:
    """The teacher's output for the first ``reference_samples`` noises: DDIM (``eta = 0``) on the uniform
    ``reference_steps`` grid."""
    scale, teacher = panel_scale(profile, panel), teacher_spec(profile, panel, data_root)
    grid = uniform_timesteps(teacher.schedule.num_steps, scale.reference_steps)
    return SampleSpec(teacher, "ddim", tuple(grid), 0.0, scale.reference_samples, profile.seed, _clip(panel))


PAIRED_REFERENCE = "ddim-eta0"  # image cells' FID is also compared, paired, with the teacher's DDIM at their steps


def paired_reference(cell: Cell) -> Cell | None:
    """The teacher's DDIM (``eta = 0``) at the cell's step count, which an image cell's FID is compared with by a
    paired difference; ``None`` for that cell itself and for DDPM (``T`` steps: DDIM at ``T`` steps is not drawn)."""
    if cell.panel != "image" or cell.method == "ddpm" or (cell.method == "ddim" and cell.eta == 0.0):
        return None
    return Cell(cell.panel, "ddim", cell.steps, 0.0)


def teacher_deviation(samples: Tensor, reference: Tensor) -> float:
    """RMS over samples and coordinates of ``samples[:K] - reference`` (``K = len(reference)``)."""
    return float(((samples[: len(reference)] - reference) ** 2).mean().sqrt())


def sampler_quality(
    cell: Cell,
    profile: Profile,
    options: OptionValues,
    device: torch.device,
    cache: ArtifactCache,
    data_root: str | None = None,
) -> tuple[Measurements, Tensor]:
    """One cell's quality (image: domain FID with its interval and n, class accuracy and diversity, and FID minus
    the teacher's DDIM (eta 0) at the same steps with a paired interval; gmm: MMD, W2, modes), its deviation from
    the teacher's many-step output for the same noise, network evaluations per sample, and for a student its
    training cost. Returns the rows and the samples."""
    spacing = selected_spacing(options)
    spec = sample_spec(cell, profile, spacing, data_root=data_root)
    samples = cached_samples(spec, cache, device)
    reference = cached_samples(reference_spec(profile, cell.panel, data_root), cache, device)
    out = Measurements({**cell.params, "spacing": spacing, "model": model_id(spec.model)})
    teacher = teacher_spec(profile, cell.panel, data_root)
    if cell.panel == "image":
        labels = class_labels(len(samples), num_classes_of(teacher))
        result, classes = image_quality(samples, labels, teacher.data, cache, device, seed=profile.seed)
        out.params.update(n=result.n_samples, n_real=result.n_real)
        context = {"extractor": result.extractor}
        out.update({**result.metrics(), **classes}, context=context)
        paired = paired_reference(cell)
        if paired is not None:  # same noise and class per sample in every cell of the panel: a paired Δ
            other = cached_samples(sample_spec(paired, profile, spacing, data_root=data_root), cache, device)
            delta = paired_fid_delta(samples, other, teacher.data, cache, device, seed=profile.seed)
            out.update(delta, context=context, reference=PAIRED_REFERENCE)
        grid_images = panel_scale(profile, cell.panel).grid_rows * int(labels.max() + 1)
        out.array("samples", samples[:grid_images])
    else:
        out.params.update(n=len(samples))
        test = cached_dataset(teacher.data, "test")
        record_gmm_metrics(out, gmm_sample_metrics(samples, test), test)
        out.array("samples", samples)
    out.add("teacher_deviation", teacher_deviation(samples, reference))
    out.add("network_evaluations", len(spec.grid))
    if isinstance(spec.model, StudentSpec):
        out.update(training_cost(spec.model, cache, device))
    return out, samples


def sampler_timer(
    cell: Cell, profile: Profile, options: OptionValues, device: torch.device, data_root: str | None = None
) -> tuple[Callable[[], None], int, dict]:
    """``(run, batch, params)``: ``run()`` draws ``batch`` samples with the cell's sampler and grid from an
    untrained model of the cell's architecture (cost depends on the network and the step count, not the
    weights)."""
    spacing = selected_spacing(options)
    spec = sample_spec(cell, profile, spacing, n=LATENCY_BATCH[cell.panel], data_root=data_root)
    teacher = teacher_spec(profile, cell.panel, data_root)
    if isinstance(spec.model, StudentSpec):
        model = build_student(spec.model).to(device).eval()
    else:
        model = teacher.model.build(seed=profile.seed).to(device).eval()
    shape = (spec.n, *cached_dataset(teacher.data, "train").sample_shape)

    def run() -> None:
        _sample(spec, model, randn(shape, torch.Generator().manual_seed(profile.seed), device))

    return run, spec.n, {**cell.params, "spacing": spacing}


# --- sampling-loop overhead: the GPU fast path (diffbench.graphs) against eager loops and diffusers ----------

declare(
    Metric("loop_seconds", LOWER, TIMING, "wall time of one 50-step DDIM batch by one sampling path", True, "timing"),
)

LOOP_STEPS = 50
LOOP_BATCHES = (64, 512)
# forwards: the model calls alone (the floor of any eager loop); eager: ddim_sample's reference loop; captured:
# the same loop replayed as a CUDA graph; diffusers: DDIMScheduler's loop, the field's common peer; bf16 and
# channels_last: the eager loop under bfloat16 autocast, resp. with the model and x in channels-last memory format
# (measured options: neither is used unless these timings show it faster).
LOOP_PATHS = ("forwards", "eager", "captured", "diffusers", "bf16", "channels_last")
CUDA_ONLY_PATHS = ("captured", "bf16", "channels_last")


class PathUnavailable(RuntimeError):
    """A sampling path that cannot run here (no CUDA device for a graph, diffusers not installed)."""


@dataclass(frozen=True)
class LoopCell:
    """One timed sampling path: the size_factors teacher of profile ``teacher`` (untrained weights; the cost is
    the network's) drawing ``batch`` samples with DDIM-``LOOP_STEPS`` on the trailing grid."""

    teacher: str
    batch: int
    path: str

    @property
    def id(self) -> str:
        return f"{self.teacher}-b{self.batch}-{self.path}"

    @property
    def params(self) -> dict:
        return {"teacher": self.teacher, "batch": self.batch, "path": self.path, "steps": LOOP_STEPS}


def loop_cells(profile: Profile) -> list[LoopCell]:
    """The teachers of this profile and the smaller ones (smoke, standard, paper), at each batch, by each path."""
    names = list(PROFILES)
    teachers = names[: names.index(profile.name) + 1] if profile.name in names else [profile.name]
    return [LoopCell(t, b, path) for t in teachers for b in LOOP_BATCHES for path in LOOP_PATHS]


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def loop_timer(cell: LoopCell, device: torch.device) -> tuple[Callable[[], None], dict]:
    """``(run, params)``: ``run()`` draws the cell's batch by its path and waits for the device. The teacher is
    built from its architecture alone (``IMAGE_GEOMETRY``), so a machine without the dataset can time it. Raises
    :class:`PathUnavailable` where the path cannot run here."""
    if cell.path in CUDA_ONLY_PATHS and device.type != "cuda":
        raise PathUnavailable(f"the {cell.path} path is timed on CUDA devices only; this run is on {device}")
    if cell.batch > min(LOOP_BATCHES) and device.type != "cuda":
        raise PathUnavailable(
            f"batch {cell.batch} is timed on CUDA devices only: a CPU is compute-bound already at batch "
            f"{min(LOOP_BATCHES)}, where the question (is the loop launch-bound?) is answered"
        )
    profile = get_profile(cell.teacher)
    scale = profile.size_factors
    channels, classes = IMAGE_GEOMETRY[scale.dataset]
    model = sf.model_config(profile, 1.0, channels, classes).build(seed=profile.seed).to(device).eval()
    schedule = ScheduleConfig(scale.schedule, scale.diffusion_steps).build()
    x_T = randn((cell.batch, channels, scale.image_size, scale.image_size), torch.Generator().manual_seed(0), device)
    cond = sf.conditioning(cell.batch, classes, device)
    grid = trailing_timesteps(schedule.num_steps, LOOP_STEPS)
    params = {**cell.params, "parameters": sum(p.numel() for p in model.parameters())}

    @torch.no_grad()
    def forwards() -> None:
        for t in grid:
            model(x_T, torch.full((cell.batch,), t, device=device, dtype=torch.long), **cond)

    if cell.path == "forwards":
        sample = forwards
    elif cell.path in ("eager", "captured", "channels_last"):
        graph = cell.path == "captured"
        if cell.path == "channels_last":
            model = model.to(memory_format=torch.channels_last)
            x_T = x_T.contiguous(memory_format=torch.channels_last)

        def sample() -> None:
            ddim_sample(model, x_T, grid, schedule, cond=cond, cuda_graph=graph)

    elif cell.path == "bf16":

        def sample() -> None:
            with torch.autocast(device.type, dtype=torch.bfloat16):
                ddim_sample(model, x_T, grid, schedule, cond=cond, cuda_graph=False)

    elif cell.path == "diffusers":
        try:
            scheduler = peers.diffusers_ddim(schedule)
        except peers.PeerUnavailable as err:
            raise PathUnavailable(str(err)) from None

        def sample() -> None:
            peers.diffusers_ddim_sample(model, x_T, scheduler, LOOP_STEPS, cond=cond)

    else:
        raise ValueError(f"unknown sampling path {cell.path!r}; choose one of {LOOP_PATHS}")

    def run() -> None:
        sample()
        _synchronize(device)

    return run, params


# --- the family ----------------------------------------------------------------------------------------------


def _sections(df, run_dir: Path) -> list:
    from diffbench.report import samplers  # the plotting stack loads only when a report is built

    return samplers.sections(df, run_dir)


FAMILY = Family(
    name="samplers",
    question="DDPM vs DDIM by steps, and progressive, one-step and consistency distillation on one teacher",
    seeds=("000", "004"),
    options=(TIMESTEP_SPACING,),
    sections=_sections,
)

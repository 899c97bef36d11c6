"""size_factors: how does model size change sampling trajectories, noise prediction and efficiency? (seeds 000/001)

A class-conditional UNet teacher (size 1.0) and students of size factor s, each trained either by knowledge
distillation from the teacher (``distill``) or from the data like the teacher (``data``). Every model samples
from the same initial noise (one stream per sample), so trajectories are compared point by point in the
teacher's frame. Trained models are cached artifacts: any number of workers trains each exactly once.

Model ids: ``teacher`` and ``<mode>-s<size>`` (``data-s0.2``, ``distill-s0.05``); other families (cfg) build the
same specs from these ids and so share the artifacts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from diffbench.cache import ArtifactCache
from diffbench.data import DataConfig
from diffbench.experiments import (
    RunSpec,
    cached_dataset,
    class_conditional_samples,
    eps_error_by_timestep,
    final_model,
    image_quality,
    paired_fid_delta,
    trajectories,
)
from diffbench.families import Family, Measurements, Option, OptionValues
from diffbench.metrics.registry import BOOKKEEPING, LOWER, NEITHER, QUALITY, TIMING, Metric, declare
from diffbench.metrics.trajectory import (
    TeacherFrame,
    compare_trajectories,
    explained_variance_curve,
    normalize_for_radar,
    stepwise_series,
    teacher_scales,
)
from diffbench.models import ModelConfig, count_parameters
from diffbench.profiles import Profile
from diffbench.sampling import ddim_sample, randn, sample_generators, uniform_timesteps
from diffbench.schedules import ScheduleConfig
from diffbench.selection import parse_size_factors, parse_size_range, select_size_factors
from diffbench.training import TrainConfig

declare(
    Metric("eps_mse", LOWER, QUALITY, "held-out noise-prediction MSE at one timestep t (series in t)", True),
    Metric("eps_mse_mean", LOWER, QUALITY, "eps_mse averaged over the profile's timestep grid", True),
    Metric("params", NEITHER, BOOKKEEPING, "trainable parameters of the model", True, tolerance="exact"),
    Metric("param_ratio", NEITHER, BOOKKEEPING, "measured parameters / the teacher's", tolerance="exact"),
    Metric("flops_per_image", NEITHER, BOOKKEEPING, "FLOPs (2 x MACs) of one forward on one image", True, "exact"),
    Metric("sampling_seconds_per_image", LOWER, TIMING, "DDIM sampling wall time per image", True, "timing"),
)

TEACHER = "teacher"
MODES = ("data", "distill")
PCA_COMPONENTS = 3
IMAGE_CLIP = 1.0  # images live in [-1, 1]: clip the x0 estimate while sampling (as DDPM/DDIM do for images)
MAX_EXPLAINED_COMPONENTS = 10
LATENCY_BATCH = 16

SIZE_FACTORS = Option(
    "--size-factors",
    "comma-separated size factors in (0, 1] to run, e.g. 0.1,0.5,1.0 (default: the profile's list)",
    metavar="LIST",
    check=parse_size_factors,
)
SIZE_RANGE = Option(
    "--size-range",
    "keep only size factors in this inclusive range, e.g. 0.1-0.5",
    metavar="LOW-HIGH",
    check=parse_size_range,
)


# --- ids and specs ----------------------------------------------------------------------------------------


def student_id(mode: str, size: float) -> str:
    return f"{mode}-s{size:g}"


def parse_model_id(model_id: str) -> tuple[str, float]:
    """``teacher`` -> ``("teacher", 1.0)``; ``data-s0.2`` -> ``("data", 0.2)``."""
    if model_id == TEACHER:
        return TEACHER, 1.0
    mode, _, size = model_id.partition("-s")
    if mode not in MODES or not size:
        raise ValueError(f"model id must be {TEACHER!r} or <mode>-s<size> with mode in {MODES}, got {model_id!r}")
    return mode, float(size)


def selected_sizes(profile: Profile, options: OptionValues) -> tuple[float, ...]:
    """The size factors chosen by ``--size-factors`` / ``--size-range`` (the profile's list by default)."""
    return select_size_factors(profile.size_factors.sizes, options.get("size_factors"), options.get("size_range"))


def student_ids(sizes: tuple[float, ...]) -> list[str]:
    """Largest first, data and distilled students interleaved: xdist deals the first cells out round-robin, so
    one worker trains the teacher and then the distilled students while the other trains the data students."""
    return [student_id(mode, s) for s in sorted(sizes, reverse=True) for mode in MODES]


def model_spec(profile: Profile, model_id: str, data_root: str | None = None) -> RunSpec:
    """The teacher's or a student's full spec; a distilled student's spec contains the teacher's."""
    scale = profile.size_factors
    mode, size = parse_model_id(model_id)
    data = DataConfig(scale.dataset, image_size=scale.image_size, seed=profile.seed, root=data_root)
    train_set = cached_dataset(data, "train")
    arch = scale.teacher
    model = ModelConfig.of(
        "unet",
        size_factor=size,
        in_channels=train_set.sample_shape[0],
        image_size=scale.image_size,
        base_channels=arch.base_channels,
        channel_mults=arch.channel_mults,
        num_res_blocks=arch.num_res_blocks,
        attention_resolutions=arch.attention_resolutions,
        dropout=arch.dropout,
        num_classes=train_set.num_classes,
    )
    train = TrainConfig(
        epochs=scale.teacher_epochs if mode == TEACHER else scale.student_epochs,
        batch_size=scale.batch_size,
        lr=scale.lr,
        betas=scale.betas,
        ema_decay=scale.ema_decay,
        label_dropout=scale.label_dropout,
        checkpoint_every=max(1, scale.teacher_epochs // 4),
        seed=profile.seed,
    )
    schedule = ScheduleConfig(scale.schedule, scale.diffusion_steps)
    teacher = model_spec(profile, TEACHER, data_root) if mode == "distill" else None
    return RunSpec(model=model, data=data, schedule=schedule, train=train, teacher=teacher)


def model_params(model_id: str, model: torch.nn.Module) -> dict:
    """The cell parameters of a model's rows (what the report groups by)."""
    mode, size = parse_model_id(model_id)
    return {"model": model_id, "mode": mode, "size_factor": size, "band": model.describe()["band"]}


def conditioning(n: int, num_classes: int, device: torch.device) -> dict:
    """Balanced class labels ``i mod K`` so every model is asked for the same digits."""
    return {"y": torch.arange(n, device=device) % num_classes} if num_classes else {}


# --- cells ------------------------------------------------------------------------------------------------


def _model_trajectories(model: torch.nn.Module, spec: RunSpec, profile: Profile, device: torch.device) -> torch.Tensor:
    """DDIM trajectories ``[S+1, B, C, H, W]`` of the profile's trajectory batch, same noise for every model."""
    scale = profile.size_factors
    data = cached_dataset(spec.data, "train")
    shape = (scale.trajectory_samples, *data.sample_shape)
    return trajectories(
        model,
        spec.schedule.build(),
        shape,
        steps=scale.sampling_steps,
        seed=profile.seed,
        clip_denoised=IMAGE_CLIP,
        cond=conditioning(shape[0], data.num_classes, device),
    )


def noise_prediction(
    model_id: str, profile: Profile, device: torch.device, cache: ArtifactCache, data_root: str | None = None
) -> Measurements:
    """eps-prediction error vs timestep on held-out data (same x0 and noise for every model), and the model's
    cost: parameters, their ratio to the teacher's, FLOPs per image."""
    spec = model_spec(profile, model_id, data_root)
    model = final_model(spec, cache, device)
    test = cached_dataset(spec.data, "test")
    schedule = spec.schedule.build()
    grid = torch.linspace(0, schedule.num_steps - 1, profile.size_factors.noise_timesteps).round().long()
    errors = eps_error_by_timestep(model, schedule, test.x, grid.tolist(), seed=profile.seed, cond={"y": test.y})
    out = Measurements(model_params(model_id, model))
    for t, error in errors.items():
        out.add("eps_mse", error, t=t)
    out.add("eps_mse_mean", sum(errors.values()) / len(errors))
    described = model.describe()
    out.add("params", count_parameters(model))
    out.add("param_ratio", described["parameter_ratio"])
    out.add("flops_per_image", described["flops_per_image"])
    return out


def teacher_reference(
    profile: Profile, device: torch.device, cache: ArtifactCache, data_root: str | None = None
) -> tuple[Measurements, TeacherFrame]:
    """The teacher's own trajectories: the PCA frame every student is projected into, its dimensionality."""
    spec = model_spec(profile, TEACHER, data_root)
    teacher = final_model(spec, cache, device)
    traj = _model_trajectories(teacher, spec, profile, device)
    frame = TeacherFrame.fit(traj, n_components=PCA_COMPONENTS)
    out = Measurements(model_params(TEACHER, teacher))
    for k, ratio in enumerate(explained_variance_curve(traj, MAX_EXPLAINED_COMPONENTS).tolist(), start=1):
        out.add("explained_variance", ratio, k=k)
    out.add("params", count_parameters(teacher))
    out.array("trajectory_pca", frame.project(traj))
    out.array("samples", traj[-1])
    return out, frame


def student_trajectories(
    student: str, profile: Profile, device: torch.device, cache: ArtifactCache, data_root: str | None = None
) -> tuple[Measurements, torch.Tensor, torch.Tensor]:
    """Student vs teacher trajectories from the same noise: scalar, per-step and radar metrics, the student's
    dimensionality and its trajectories in the teacher's PCA frame. Returns the rows and both trajectories."""
    teacher_spec, spec = model_spec(profile, TEACHER, data_root), model_spec(profile, student, data_root)
    teacher, model = final_model(teacher_spec, cache, device), final_model(spec, cache, device)
    reference = _model_trajectories(teacher, teacher_spec, profile, device)
    traj = _model_trajectories(model, spec, profile, device)
    out = Measurements(model_params(student, model))
    metrics = compare_trajectories(traj, reference)
    out.update(metrics)
    out.update({f"radar_{k}": v for k, v in normalize_for_radar(metrics, scales=teacher_scales(reference)).items()})
    for name, points in stepwise_series(traj, reference).items():
        for step, value in points:
            out.add(name, value, step=step)
    for k, ratio in enumerate(explained_variance_curve(traj, MAX_EXPLAINED_COMPONENTS).tolist(), start=1):
        out.add("explained_variance", ratio, k=k)
    out.add("params", count_parameters(model))
    out.array("trajectory_pca", TeacherFrame.fit(reference, n_components=PCA_COMPONENTS).project(traj))
    out.array("samples", traj[-1])
    return out, traj, reference


@dataclass(frozen=True)
class QualitySamples:
    """What determines a model's quality samples (their artifact key): class-balanced DDIM (``eta = 0``) at
    ``steps`` from one noise generator seeded ``seed``, so sample ``i`` of every model starts from the same noise
    and asks for class ``i mod K`` (the pairing :func:`diffbench.experiments.paired_fid_delta` relies on)."""

    model: RunSpec
    steps: int
    n: int
    seed: int
    clip_denoised: float | None = IMAGE_CLIP


QUALITY_SAMPLES_RECIPE_VERSION = 1


def quality_samples(
    model_id: str, profile: Profile, device: torch.device, cache: ArtifactCache, data_root: str | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(samples [N, C, H, W], labels [N])`` of a model for the quality metrics, drawn once per cache."""
    scale = profile.size_factors
    model = model_spec(profile, model_id, data_root)
    spec = QualitySamples(model, scale.sampling_steps, scale.eval_samples, profile.seed)
    data = cached_dataset(spec.model.data, "train")
    labels = conditioning(spec.n, data.num_classes, torch.device("cpu"))["y"]

    def build(_workdir) -> dict:
        samples = class_conditional_samples(
            final_model(spec.model, cache, device),
            spec.model.schedule.build(),
            (spec.n, *data.sample_shape),
            steps=spec.steps,
            seed=spec.seed,
            labels=labels,
            clip_denoised=spec.clip_denoised,
        )
        return {"samples": samples}

    artifact = cache.get_or_build("quality_samples", spec, build, version=QUALITY_SAMPLES_RECIPE_VERSION, device=device)
    return artifact["samples"], labels


def sample_quality(
    model_id: str, profile: Profile, device: torch.device, cache: ArtifactCache, data_root: str | None = None
) -> Measurements:
    """Domain FID (with its interval and FID-infinity), KID, class accuracy and per-class diversity of
    class-balanced DDIM samples against the held-out split; for a student also FID(student) - FID(teacher) with
    its paired interval (both drawn from the same noise).
    The extractor's weight fingerprint is context, not a cell parameter: another torch version retraining the
    classifier must not turn a baseline's FID rows into "missing"."""
    spec = model_spec(profile, model_id, data_root)
    model = final_model(spec, cache, device)
    samples, labels = quality_samples(model_id, profile, device, cache, data_root)
    result, classes = image_quality(samples, labels, spec.data, cache, device, seed=profile.seed)
    out = Measurements({**model_params(model_id, model), "n": result.n_samples, "n_real": result.n_real})
    context = {"extractor": result.extractor}
    out.update({**result.metrics(), **classes}, context=context)
    out.add("params", count_parameters(model))
    if model_id != TEACHER:
        teacher_samples, _ = quality_samples(TEACHER, profile, device, cache, data_root)
        delta = paired_fid_delta(samples, teacher_samples, spec.data, cache, device, seed=profile.seed)
        out.update(delta, context=context, reference=TEACHER)
    return out


def latency_sizes(profile: Profile, options: OptionValues) -> list[float]:
    """Sizes whose sampling latency is timed: the selection plus the teacher."""
    return sorted({1.0, *selected_sizes(profile, options)})


def sampling_timer(
    size: float, profile: Profile, device: torch.device, data_root: str | None = None
) -> tuple[Callable[[], None], int, dict]:
    """``(run, batch, params)``: ``run()`` draws ``batch`` images with DDIM at the profile's step count from an
    untrained model of this size (latency depends on the architecture, not the weights)."""
    scale = profile.size_factors
    spec = model_spec(profile, TEACHER if size == 1.0 else student_id("data", size), data_root)
    model = spec.model.build(seed=profile.seed).to(device).eval()
    data = cached_dataset(spec.data, "train")
    shape = (LATENCY_BATCH, *data.sample_shape)
    cond = conditioning(LATENCY_BATCH, data.num_classes, device)
    schedule = spec.schedule.build()
    grid = uniform_timesteps(schedule.num_steps, scale.sampling_steps)

    def run() -> None:
        x_T = randn(shape, sample_generators(profile.seed, LATENCY_BATCH), device)
        ddim_sample(model, x_T, grid, schedule, cond=cond)

    params = {"model": TEACHER if size == 1.0 else f"s{size:g}", "size_factor": size, "params": count_parameters(model)}
    return run, LATENCY_BATCH, params


# --- the family -------------------------------------------------------------------------------------------


def _validate(options: OptionValues, profile: Profile) -> None:
    selected_sizes(profile, options)


def _sections(df, run_dir: Path) -> list:
    from diffbench.report import size_factors  # the plotting stack loads only when a report is built

    return size_factors.sections(df, run_dir)


FAMILY = Family(
    name="size_factors",
    question="size factor vs quality, trajectories and efficiency",
    seeds=("000", "001"),
    options=(SIZE_FACTORS, SIZE_RANGE),
    validate=_validate,
    sections=_sections,
)

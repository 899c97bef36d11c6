"""size_factors: how does model size change sampling trajectories, noise prediction and efficiency? (seeds 000/001)

A class-conditional UNet teacher (size 1.0) and students of size factor s, each trained either by knowledge
distillation from the teacher (``distill``) or from the data like the teacher (``data``). Every model samples
from the same initial noise (one stream per sample), so trajectories are compared point by point in the
teacher's frame. Trained models are cached artifacts: any number of workers trains each exactly once.

Model ids: ``teacher`` and ``<mode>-s<size>`` (``data-s0.2``, ``distill-s0.05``); other families (cfg) build the
same specs from these ids and so share the artifacts.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from diffbench.attention import attention_divergence, attention_entropy, capture_attention
from diffbench.cache import ArtifactCache
from diffbench.data import DataConfig, Dataset
from diffbench.determinism import DeterminismReport, verify_determinism
from diffbench.experiments import (
    RunSpec,
    cached_dataset,
    class_conditional_samples,
    eps_error_by_timestep,
    final_model,
    image_quality,
    paired_fid_delta,
)
from diffbench.families import Family, Measurements, Option, OptionValues
from diffbench.metrics.embedding import EmbeddingUnavailable, embed, trustworthiness
from diffbench.metrics.fid import domain_features, extract_features
from diffbench.metrics.manifold import precision_recall
from diffbench.metrics.registry import ARRAY, BOOKKEEPING, LOWER, NEITHER, QUALITY, TIMING, Metric, declare
from diffbench.metrics.trajectory import (
    TeacherFrame,
    compare_trajectories,
    explained_variance_curve,
    normalize_for_radar,
    stepwise_series,
    teacher_scales,
)
from diffbench.models import ModelConfig, count_parameters, device_of
from diffbench.profiles import Profile
from diffbench.sampling import TrajectoryRecorder, ddim_sample, randn, sample_generators, uniform_timesteps
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
    Metric(
        "x0_mse_to_teacher",
        LOWER,
        QUALITY,
        "MSE of a model's x0 estimate at DDIM step i (series in step) to the teacher's final sample, same noise",
    ),
    Metric("attention_maps", NEITHER, ARRAY, "a layer's attention maps [t, sample, query, H, W], heads averaged"),
    Metric("x0_strip", NEITHER, ARRAY, "x0 estimates [step, sample, C, H, W] at the analysis steps"),
    Metric("embedding", NEITHER, ARRAY, "2-D embedding [n, 2 + labels] of all models' points (see embeddings)"),
)

TEACHER = "teacher"
MODES = ("data", "distill")
PCA_COMPONENTS = 3
IMAGE_CLIP = 1.0  # images live in [-1, 1]: clip the x0 estimate while sampling (as DDPM/DDIM do for images)
MAX_EXPLAINED_COMPONENTS = 10
LATENCY_BATCH = 16
ATTENTION_MAP_LAYER = "mid_attn"  # every DDPMUNet has it (at each model's lowest resolution): the maps drawn
EMBEDDING_METHODS = ("pca", "tsne", "umap")
EMBEDDING_VIEWS = ("trajectories", "latent")
TRUST_NEIGHBORS = 5  # k of the trustworthiness score (scikit-learn's default)
PR_K = 3  # improved precision/recall's k (the paper's)
REAL = "real"  # the source label of real images in the latent embedding

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


def model_config(profile: Profile, size_factor: float, in_channels: int, num_classes: int) -> ModelConfig:
    """The profile's UNet at ``size_factor`` (1: the teacher) for samples with ``in_channels`` and ``num_classes``
    classes."""
    arch = profile.size_factors.teacher
    return ModelConfig.of(
        "unet",
        size_factor=size_factor,
        in_channels=in_channels,
        image_size=profile.size_factors.image_size,
        base_channels=arch.base_channels,
        channel_mults=arch.channel_mults,
        num_res_blocks=arch.num_res_blocks,
        attention_resolutions=arch.attention_resolutions,
        dropout=arch.dropout,
        num_classes=num_classes,
    )


def model_spec(profile: Profile, model_id: str, data_root: str | None = None) -> RunSpec:
    """The teacher's or a student's full spec; a distilled student's spec contains the teacher's."""
    scale = profile.size_factors
    mode, size = parse_model_id(model_id)
    data = DataConfig(scale.dataset, image_size=scale.image_size, seed=profile.seed, root=data_root)
    train_set = cached_dataset(data, "train")
    model = model_config(profile, size, train_set.sample_shape[0], train_set.num_classes)
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


def _model_paths(
    model: torch.nn.Module, spec: RunSpec, profile: Profile, device: torch.device, n: int | None = None
) -> tuple[Tensor, Tensor]:
    """DDIM trajectories ``[S+1, n, C, H, W]`` and the x0 estimate of every step ``[S, n, C, H, W]`` (CPU) of the
    first ``n`` samples (default: the profile's trajectory batch), same noise for every model: sample ``i`` starts
    from generator ``i`` of ``sample_generators(seed, n)`` and asks for class ``i mod K``, so it does not depend on
    ``n``. ``[0]`` is what :func:`diffbench.experiments.trajectories` returns."""
    scale = profile.size_factors
    data = cached_dataset(spec.data, "train")
    n = scale.trajectory_samples if n is None else n
    shape = (n, *data.sample_shape)
    schedule = spec.schedule.build()
    recorder = TrajectoryRecorder()
    ddim_sample(
        model,
        randn(shape, sample_generators(profile.seed, n), device_of(model)),
        uniform_timesteps(schedule.num_steps, scale.sampling_steps),
        schedule,
        cond=conditioning(n, data.num_classes, device),
        clip_denoised=IMAGE_CLIP,
        callback=recorder,
    )
    return recorder.trajectory(), recorder.x0_estimates()


def _model_trajectories(model: torch.nn.Module, spec: RunSpec, profile: Profile, device: torch.device) -> Tensor:
    """DDIM trajectories ``[S+1, B, C, H, W]`` of the profile's trajectory batch, same noise for every model."""
    return _model_paths(model, spec, profile, device)[0]


def analysis_steps(profile: Profile) -> tuple[int, ...]:
    """The DDIM step indices of the attention maps and x0 strips (``0``: the first step, at ``t = T-1``), checked
    against the profile's step count."""
    scale = profile.size_factors
    steps = tuple(int(i) for i in scale.analysis_steps)
    if not steps or any(not 0 <= i < scale.sampling_steps for i in steps) or len(set(steps)) != len(steps):
        raise ValueError(
            f"analysis_steps must be distinct step indices in [0, {scale.sampling_steps}), got {scale.analysis_steps}"
        )
    return steps


def x0_mse_by_step(x0: Tensor, reference: Tensor) -> list[float]:
    """``mean_{b, pixels} (x0_i - reference)^2`` for every step ``i`` of x0 estimates ``[S, B, ...]`` against one
    final sample per trajectory ``[B, ...]`` (the teacher's, from the same noise): how far each step's guess of the
    clean image is from where the teacher ends. For the teacher itself the last value is 0 (its last x0 estimate is
    its sample)."""
    if x0.shape[1:] != reference.shape:
        raise ValueError(
            f"x0 [S, B, ...] and reference [B, ...] must match, got {tuple(x0.shape)}, {tuple(reference.shape)}"
        )
    diff = x0.double() - reference.double().unsqueeze(0)
    return diff.square().flatten(1).mean(1).tolist()


def _record_denoising(out: Measurements, x0: Tensor, reference: Tensor, profile: Profile, grid: Sequence[int]) -> None:
    """The x0-estimate error to the teacher's final sample per step (with its ``t``) and the x0 strip of the first
    ``strip_samples`` samples at the analysis steps."""
    for step, value in enumerate(x0_mse_by_step(x0, reference)):
        out.add("x0_mse_to_teacher", value, step=step, t=int(grid[step]))
    steps = list(analysis_steps(profile))
    out.array("x0_strip", x0[steps, : profile.size_factors.strip_samples], steps=",".join(map(str, steps)))


def _grid(spec: RunSpec, profile: Profile) -> list[int]:
    """The DDIM timesteps of the family's trajectories (step ``i`` denoises from ``t = grid[i]``)."""
    return uniform_timesteps(spec.schedule.num_steps, profile.size_factors.sampling_steps)


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
    traj, x0 = _model_paths(teacher, spec, profile, device)
    frame = TeacherFrame.fit(traj, n_components=PCA_COMPONENTS)
    out = Measurements(model_params(TEACHER, teacher))
    for k, ratio in enumerate(explained_variance_curve(traj, MAX_EXPLAINED_COMPONENTS).tolist(), start=1):
        out.add("explained_variance", ratio, k=k)
    out.add("params", count_parameters(teacher))
    out.array("trajectory_pca", frame.project(traj))
    out.array("samples", traj[-1])
    _record_denoising(out, x0, traj[-1], profile, _grid(spec, profile))
    return out, frame


def student_trajectories(
    student: str, profile: Profile, device: torch.device, cache: ArtifactCache, data_root: str | None = None
) -> tuple[Measurements, torch.Tensor, torch.Tensor]:
    """Student vs teacher trajectories from the same noise: scalar, per-step and radar metrics, the student's
    dimensionality and its trajectories in the teacher's PCA frame. Returns the rows and both trajectories."""
    teacher_spec, spec = model_spec(profile, TEACHER, data_root), model_spec(profile, student, data_root)
    teacher, model = final_model(teacher_spec, cache, device), final_model(spec, cache, device)
    reference = _model_trajectories(teacher, teacher_spec, profile, device)
    traj, x0 = _model_paths(model, spec, profile, device)
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
    _record_denoising(out, x0, reference[-1], profile, _grid(spec, profile))
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
    class-balanced DDIM samples against the held-out split, improved precision and recall (Kynkaanniemi et al.
    2019, k = 3) in domain features against as many held-out images (rows ``n = n_real``); for a student also
    FID(student) - FID(teacher) with its paired interval (both drawn from the same noise).
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
    fake, real = manifold_features(samples, spec.data, cache, device, seed=profile.seed)
    pr = precision_recall(real, fake, k=PR_K)
    out.update({"precision": pr.precision, "recall": pr.recall}, context=context, n=pr.n_fake, n_real=pr.n_real)
    if model_id != TEACHER:
        teacher_samples, _ = quality_samples(TEACHER, profile, device, cache, data_root)
        delta = paired_fid_delta(samples, teacher_samples, spec.data, cache, device, seed=profile.seed)
        out.update(delta, context=context, reference=TEACHER)
    return out


def real_subset(test: Dataset, n: int, seed: int) -> tuple[Tensor, Tensor | None]:
    """``(images, labels)``: ``min(n, len(test))`` held-out images, a fixed random subset (seeded)."""
    keep = torch.randperm(len(test.x), generator=torch.Generator().manual_seed(seed))[: min(n, len(test.x))]
    keep = keep.sort().values
    return test.x[keep], (None if test.y is None else test.y[keep])


def manifold_features(
    samples: Tensor, data: DataConfig, cache: ArtifactCache, device: torch.device, *, seed: int
) -> tuple[Tensor, Tensor]:
    """``(fake, real)`` domain features ``[m, d]`` of ``samples`` (clamped to ``[-1, 1]``) and of as many held-out
    images (:func:`real_subset`; both cut to the smaller count): precision and recall depend on the sample sizes, so
    every model is compared with the same real set at equal ``n``."""
    extractor = domain_features(data, cache, device, seed=seed)
    images, _ = real_subset(cached_dataset(data, "test"), len(samples), seed)
    n = len(images)
    return extract_features(extractor, samples[:n].clamp(-1, 1)), extract_features(extractor, images)


# --- attention ----------------------------------------------------------------------------------------------


def query_index(position: tuple[float, float], height: int, width: int) -> int:
    """Row-major index ``r W + c`` of the map cell holding ``position = (row, column)`` given as fractions in
    ``[0, 1)`` of the map's height and width, so a query means the same image location at every resolution
    (``(0.5, 0.5)`` is cell ``(H/2, W/2)``)."""
    fy, fx = position
    if not (0 <= fy < 1 and 0 <= fx < 1):
        raise ValueError(f"query positions are fractions in [0, 1), got {position}")
    return math.floor(fy * height) * width + math.floor(fx * width)


def attention_inputs(
    profile: Profile, device: torch.device, cache: ArtifactCache, data_root: str | None = None
) -> tuple[list[int], Tensor, dict]:
    """``(timesteps, states, cond)``: the states ``x_t`` ``[len(steps), n, C, H, W]`` of the teacher's DDIM
    trajectories at the analysis steps for the first ``n = attention_samples`` samples, their timesteps and
    labels: the one input every model's attention is read on."""
    spec = model_spec(profile, TEACHER, data_root)
    teacher = final_model(spec, cache, device)
    n = profile.size_factors.attention_samples
    traj, _ = _model_paths(teacher, spec, profile, device, n=n)
    steps = list(analysis_steps(profile))
    grid = _grid(spec, profile)
    data = cached_dataset(spec.data, "train")
    return [grid[i] for i in steps], traj[steps], conditioning(n, data.num_classes, torch.device("cpu"))


def read_attention(model: torch.nn.Module, timesteps: Sequence[int], states: Tensor, cond: dict) -> list[dict]:
    """Per timestep, the full attention maps ``{layer: [n, heads, HW, HW]}`` (CPU) of every ``SelfAttention`` of
    ``model`` on ``states[i]`` at ``timesteps[i]``, read by forward hooks
    (:func:`diffbench.attention.capture_attention`: the model is neither copied nor changed)."""
    device = device_of(model)
    cond = {k: v.to(device) for k, v in cond.items()}
    out = []
    for t, x in zip(timesteps, states, strict=True):
        with capture_attention(model, to_cpu=True) as capture, torch.no_grad():
            model(x.to(device), torch.full((len(x),), int(t), device=device, dtype=torch.long), **cond)
        out.append(dict(capture.maps))
    return out


def compare_attention(
    maps: Mapping[str, Tensor], reference: Mapping[str, Tensor] | None
) -> tuple[dict[str, float], dict[str, float], dict[str, str]]:
    """``(entropy, js, skipped)`` of one timestep's maps ``{layer: [n, heads, HW, HW]}``: the mean row entropy of
    every layer (:func:`diffbench.attention.attention_entropy`, nats, ``log HW`` for uniform attention), the mean
    row-wise Jensen-Shannon divergence from the ``reference`` (the teacher's maps on the same input) of every layer
    both have with the same shape, heads averaged first (students may have other head widths, never other head
    counts here, but the map a layer applies is what is compared), and why each other layer was skipped."""
    entropy = {layer: float(attention_entropy(m)) for layer, m in maps.items()}
    js: dict[str, float] = {}
    skipped: dict[str, str] = {}
    if reference is None:
        return entropy, js, skipped
    for layer, m in maps.items():
        ref = reference.get(layer)
        if ref is None:
            skipped[layer] = "the teacher has no layer of that name"
        elif ref.shape[-2:] != m.shape[-2:]:
            skipped[layer] = f"{m.shape[-1]} positions vs the teacher's {ref.shape[-1]} (another resolution)"
        else:
            js[layer] = float(attention_divergence(m.mean(1), ref.mean(1)))
    for layer in sorted(set(reference) - set(maps)):
        skipped[layer] = "the student has no layer of that name"
    return entropy, js, skipped


def query_maps(maps: Sequence[Mapping[str, Tensor]], layer: str, queries: Sequence[tuple[float, float]]) -> Tensor:
    """``[timesteps, n, queries, H, W]``: the heads-averaged attention of the given query positions over a square
    ``H x W`` layer, per timestep (``maps`` as from :func:`read_attention`)."""
    out = []
    for step in maps:
        m = step[layer].mean(1)  # [n, HW, HW]
        side = math.isqrt(m.shape[-1])
        rows = [query_index(q, side, side) for q in queries]
        out.append(m[:, rows].reshape(m.shape[0], len(rows), side, side))
    return torch.stack(out)


def attention(
    model_id: str, profile: Profile, device: torch.device, cache: ArtifactCache, data_root: str | None = None
) -> tuple[Measurements, dict[str, str]]:
    """A model's attention on the teacher's ``x_t`` at the analysis steps: entropy per layer and timestep, the JS
    divergence of each student layer's maps from the teacher's on the same input, and the maps of the query
    positions at :data:`ATTENTION_MAP_LAYER`. Returns the rows and the skipped layers with their reasons."""
    scale = profile.size_factors
    timesteps, states, cond = attention_inputs(profile, device, cache, data_root)
    model = final_model(model_spec(profile, model_id, data_root), cache, device)
    maps = read_attention(model, timesteps, states, cond)
    reference = None
    if model_id != TEACHER:
        reference = read_attention(
            final_model(model_spec(profile, TEACHER, data_root), cache, device), timesteps, states, cond
        )
    out = Measurements(model_params(model_id, model))
    skipped: dict[str, str] = {}
    for i, t in enumerate(timesteps):
        entropy, js, skip = compare_attention(maps[i], None if reference is None else reference[i])
        skipped.update(skip)
        for layer, value in entropy.items():
            out.add("attention_entropy", value, layer=layer, t=t)
        for layer, value in js.items():
            out.add("attention_js_to_teacher", value, layer=layer, t=t, reference=TEACHER)
    queries = ";".join(f"{y:g},{x:g}" for y, x in scale.attention_queries)
    times = ",".join(str(t) for t in timesteps)
    arrays = query_maps(maps, ATTENTION_MAP_LAYER, scale.attention_queries)
    out.array("attention_maps", arrays, layer=ATTENTION_MAP_LAYER, queries=queries, timesteps=times)
    return out, skipped


# --- determinism ----------------------------------------------------------------------------------------------


def determinism(
    model_id: str, profile: Profile, device: torch.device, cache: ArtifactCache, data_root: str | None = None
) -> tuple[Measurements, DeterminismReport]:
    """:func:`diffbench.determinism.verify_determinism` of a trained model (eval mode) as the family samples it
    (labels ``i mod K``, x0 clipped): same seed twice, then another batch layout; both deviations recorded."""
    scale = profile.size_factors
    spec = model_spec(profile, model_id, data_root)
    model = final_model(spec, cache, device).eval()
    data = cached_dataset(spec.data, "train")
    n = scale.determinism_samples
    report = verify_determinism(
        model,
        spec.schedule.build(),
        tuple(data.sample_shape),
        num_samples=n,
        steps=scale.determinism_steps,
        seed=profile.seed,
        cond=conditioning(n, data.num_classes, torch.device("cpu")),
        clip_denoised=IMAGE_CLIP,
    )
    out = Measurements({**model_params(model_id, model), "n": n, "steps": report.steps})
    out.update(report.metrics())
    return out, report


# --- embeddings (t-SNE, UMAP, PCA) of all models together -----------------------------------------------------


def embedding_unavailable(method: str) -> str | None:
    """Why ``method`` cannot run here (UMAP without the optional package umap-learn), else ``None``; checked
    before any model is sampled."""
    if method == "umap" and importlib.util.find_spec("umap") is None:
        return "UMAP needs the optional package umap-learn, which is not installed (pip install umap-learn)"
    return None


def evenly_spaced(total: int, count: int) -> list[int]:
    """``count`` distinct indices from ``0`` to ``total - 1`` inclusive, evenly spaced (all when fewer exist)."""
    return sorted({round(v) for v in np.linspace(0, total - 1, min(count, total))})


def trajectory_points(paths: Mapping[str, Tensor], steps: Sequence[int], n: int) -> tuple[Tensor, np.ndarray]:
    """``(points [M k n, D], labels [M k n, 3])``: the states at trajectory indices ``steps`` of the first ``n``
    samples of each model's trajectories ``[S+1, B, ...]``; labels ``(model index, step, sample)``."""
    points, labels = [], []
    for m, traj in enumerate(paths.values()):
        chosen = traj[list(steps), :n]  # [k, n, ...]
        points.append(chosen.reshape(-1, int(np.prod(chosen.shape[2:]))))
        step, sample = np.meshgrid(steps, np.arange(chosen.shape[1]), indexing="ij")
        labels.append(np.stack([np.full(step.size, m), step.ravel(), sample.ravel()], axis=1))
    return torch.cat(points), np.concatenate(labels)


def embed_with_trust(points: Tensor, method: str, seed: int) -> tuple[np.ndarray, float]:
    """``(coordinates [n, 2], trustworthiness)`` of ``method``'s seeded embedding of ``points``."""
    coords = embed(points, method, seed=seed)
    return coords, trustworthiness(points, coords, n_neighbors=min(TRUST_NEIGHBORS, (len(points) - 1) // 2))


def embeddings(
    method: str,
    profile: Profile,
    options: OptionValues,
    device: torch.device,
    cache: ArtifactCache,
    data_root: str | None = None,
) -> Measurements:
    """Two joint embeddings of every model (teacher first, then the students in cell order) by ``method``:

    - ``trajectories``: the states at ``embedding_steps`` evenly spaced trajectory indices (from ``x_T`` to the
      sample) of the first ``embedding_samples`` trajectories of each model, same noise; labels (model, step,
      sample). Beside the teacher-frame PCA, which projects every model on the teacher's own axes.
    - ``latent``: the first ``latent_samples`` quality samples of each model and as many held-out images
      (:func:`real_subset`), in domain features; labels (source, class), source ``-1`` for real images.

    Each embedding's trustworthiness (Venna & Kaski 2001, ``k = 5``) is recorded. ``EmbeddingUnavailable`` for
    UMAP without umap-learn (check :func:`embedding_unavailable` first)."""
    reason = embedding_unavailable(method)
    if reason is not None:
        raise EmbeddingUnavailable(reason)
    scale = profile.size_factors
    models = [TEACHER, *student_ids(selected_sizes(profile, options))]
    specs = {m: model_spec(profile, m, data_root) for m in models}
    params = {"method": method, "models": ",".join(models)}
    out = Measurements(params)

    paths = {
        m: _model_paths(final_model(spec, cache, device), spec, profile, device, n=scale.embedding_samples)[0]
        for m, spec in specs.items()
    }
    steps = evenly_spaced(scale.sampling_steps + 1, scale.embedding_steps)
    points, labels = trajectory_points(paths, steps, scale.embedding_samples)
    coords, trust = embed_with_trust(points, method, profile.seed)
    view = {"view": "trajectories", "n": len(points)}
    out.add("trustworthiness", trust, **view)
    out.array("embedding", np.concatenate([coords, labels], axis=1), **view, columns="x,y,model,step,sample")

    data = specs[TEACHER].data
    extractor = domain_features(data, cache, device, seed=profile.seed)
    feats, sources, classes = [], [], []
    for m, model in enumerate(models):
        samples, labels_m = quality_samples(model, profile, device, cache, data_root)
        feats.append(extract_features(extractor, samples[: scale.latent_samples].clamp(-1, 1)))
        sources.append(np.full(len(feats[-1]), m))
        classes.append(labels_m[: scale.latent_samples].numpy())
    images, real_labels = real_subset(cached_dataset(data, "test"), scale.latent_samples, profile.seed)
    feats.append(extract_features(extractor, images))
    sources.append(np.full(len(images), -1))
    classes.append(np.full(len(images), -1) if real_labels is None else real_labels.numpy())
    points = torch.cat(feats)
    coords, trust = embed_with_trust(points, method, profile.seed)
    view = {"view": "latent", "n": len(points)}
    out.add("trustworthiness", trust, **view)
    labels = np.stack([np.concatenate(sources), np.concatenate(classes)], axis=1)
    out.array("embedding", np.concatenate([coords, labels], axis=1), **view, columns="x,y,model,class")
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


def model_group(model_id: str) -> str:
    """The cluster shard group of every cell that uses the trained model ``model_id`` (here and in cfg)."""
    return f"size_factors:{model_id}"


def _shard_group(nodeid: str) -> str:
    """A cell parametrized by a model id (``test_attention[data-s0.5]``) goes with that model's other cells, the
    teacher reference with the teacher's; latency and embedding cells (no one trained model) stand alone."""
    name, _, param = nodeid.partition("[")
    model_id = param.removesuffix("]")
    if name.endswith("::test_teacher_reference"):
        return model_group(TEACHER)
    try:
        parse_model_id(model_id)
    except ValueError:
        return nodeid
    return model_group(model_id)


FAMILY = Family(
    name="size_factors",
    question="size factor vs quality, trajectories and efficiency",
    seeds=("000", "001"),
    options=(SIZE_FACTORS, SIZE_RANGE),
    validate=_validate,
    sections=_sections,
    shard_group=_shard_group,
)

"""Recipes shared by the benchmark families: a run's full spec, its cached training, its evaluation."""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache

import torch
from torch import Tensor, nn

from diffbench.cache import ArtifactCache
from diffbench.data import GMM, DataConfig, Dataset, load_dataset
from diffbench.distill import (
    ConsistencyDistillationLoss,
    ConsistencyFunction,
    ProgressiveDistillationLoss,
    check_same_schedule,
    distillation_loss,
    halve_grid,
    one_step_loss,
)
from diffbench.families import Measurements
from diffbench.metrics.conditional import class_accuracy, class_diversity
from diffbench.metrics.distribution import (
    EXACT_W2_MAX_POINTS,
    PairwiseSq,
    mmd_linear,
    mode_coverage,
    noise_prediction_loss,
    reference_bandwidths,
    sample_stats,
    sliced_wasserstein,
    wasserstein,
)
from diffbench.metrics.fid import (
    FIDResult,
    FIDSampleSizeWarning,
    domain_features,
    extract_features,
    fid,
    fid_difference,
    real_statistics,
)
from diffbench.models import ModelConfig, device_of
from diffbench.models.classifier import train_classifier
from diffbench.sampling import (
    EpsModel,
    TrajectoryRecorder,
    consistency_sample,
    ddim_sample,
    randn,
    sample_generators,
    uniform_timesteps,
)
from diffbench.schedules import NoiseSchedule, ScheduleConfig
from diffbench.training import DualScaleLoss, LossFn, TrainConfig, epsilon_loss, train


@dataclass(frozen=True)
class RunSpec:
    """Everything that determines a trained model: its artifact key. With ``teacher`` set, the model is a
    student distilled from the teacher's final weights instead of trained on the data's noise."""

    model: ModelConfig
    data: DataConfig
    schedule: ScheduleConfig
    train: TrainConfig
    teacher: RunSpec | None = None


# The recipe of a trained run: bump when the trainer, a model or the distillation loss changes what the same
# RunSpec produces, so stale weights are rebuilt rather than reused. 2: EMA warm-up; UNet bands that mean cost.
# 3: GroupNorm never normalises a single channel (widths 8/16/32 had lost their time and label conditioning).
RUN_RECIPE_VERSION = 3


@lru_cache(maxsize=16)
def cached_dataset(config: DataConfig, split: str) -> Dataset:
    """Datasets are deterministic in their config, so one copy per process is enough."""
    return load_dataset(config, split)


def training_loss(spec: RunSpec) -> LossFn:
    """The objective of a trained (not distilled) run: eps-prediction MSE, on both scales with independent
    timesteps for the two-scale LIFT model (its own generator, seeded from the run's seed)."""
    if spec.model.arch == "lift_unet":
        return DualScaleLoss(spec.schedule.build(), seed=spec.train.seed)
    return epsilon_loss


def train_cached(spec: RunSpec, cache: ArtifactCache, device: torch.device, progress: bool = False) -> dict:
    """The trained run for ``spec``: ``{"checkpoints": {epoch: state_dict}, "history": [per-epoch dict]}``,
    trained once per cache (resuming from the scratch directory's checkpoints if a build was interrupted)."""

    def build(workdir) -> dict:
        model = spec.model.build(seed=spec.train.seed)
        loss_fn = training_loss(spec)
        if spec.teacher is not None:
            loss_fn = distillation_loss(final_model(spec.teacher, cache, device))
        result = train(
            model,
            spec.schedule.build(),
            cached_dataset(spec.data, "train"),
            spec.train,
            device=device,
            checkpoint_dir=workdir / "checkpoints",
            loss_fn=loss_fn,
            progress=progress,
        )
        return {"checkpoints": result.checkpoints, "history": result.history}

    return cache.get_or_build("runs", spec, build, version=RUN_RECIPE_VERSION, device=device)


# Recipe of the noise-aware classifier of classifier guidance (bump when ``noisy_classifier``'s output changes).
NOISY_CLASSIFIER_RECIPE_VERSION = 1


@dataclass(frozen=True)
class ClassifierSpec:
    """Everything that determines a noise-aware classifier ``p(y | x_t, t)``: its artifact key."""

    data: DataConfig
    schedule: ScheduleConfig
    model: ModelConfig
    epochs: int
    batch_size: int = 128
    lr: float = 2e-3
    seed: int = 0


def noisy_classifier(spec: ClassifierSpec, cache: ArtifactCache, device: torch.device) -> nn.Module:
    """The classifier of ``spec`` trained on images noised to uniformly random timesteps of ``spec.schedule``
    (Dhariwal & Nichol 2021, sec. 4.1), trained once per cache; in eval mode on ``device``."""

    def build(_workdir) -> dict:
        model = spec.model.build(seed=spec.seed)
        history = train_classifier(
            model,
            cached_dataset(spec.data, "train"),
            epochs=spec.epochs,
            batch_size=spec.batch_size,
            lr=spec.lr,
            seed=spec.seed,
            device=device,
            schedule=spec.schedule.build(),
        )
        return {"state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}, "history": history}

    artifact = cache.get_or_build(
        "noisy_classifier", spec, build, version=NOISY_CLASSIFIER_RECIPE_VERSION, device=device
    )
    model = spec.model.build()
    model.load_state_dict(artifact["state_dict"])
    return model.to(device).eval()


def model_at(spec: RunSpec, run: dict, epoch: int, device: torch.device) -> nn.Module:
    """The model of ``run`` with the weights saved at ``epoch``, in eval mode on ``device``."""
    if epoch not in run["checkpoints"]:
        raise KeyError(f"no checkpoint at epoch {epoch}; saved: {sorted(run['checkpoints'])}")
    model = spec.model.build()
    model.load_state_dict(run["checkpoints"][epoch])
    return model.to(device).eval()


def final_model(spec: RunSpec, cache: ArtifactCache, device: torch.device) -> nn.Module:
    """The trained model of ``spec`` at its last epoch (trained first if the cache lacks it)."""
    return model_at(spec, train_cached(spec, cache, device), spec.train.epochs, device)


def trajectories(
    model: nn.Module,
    schedule: NoiseSchedule,
    shape: tuple[int, ...],
    *,
    steps: int,
    seed: int,
    cond: dict | None = None,
    clip_denoised: float | None = None,
) -> Tensor:
    """Deterministic DDIM (``eta = 0``) trajectories ``[steps+1, B, ...]`` with one noise stream per sample, so
    every model compared on ``seed`` starts from the same ``x_T`` and sample ``i`` does not depend on ``B``.
    For images in ``[-1, 1]`` pass ``clip_denoised=1``: near ``t = T`` the cosine schedule's ``abar_t`` is ~0 and
    the unclipped ``x0`` estimate amplifies eps errors by ``1 / sqrt(abar_t)``."""
    recorder = TrajectoryRecorder(record_x0=False)
    ddim_sample(
        model,
        randn(shape, sample_generators(seed, shape[0]), device_of(model)),
        uniform_timesteps(schedule.num_steps, steps),
        schedule,
        cond=cond,
        clip_denoised=clip_denoised,
        callback=recorder,
    )
    return recorder.trajectory()


def class_conditional_samples(
    model: EpsModel,
    schedule: NoiseSchedule,
    shape: tuple[int, ...],
    *,
    steps: int,
    seed: int,
    labels: Tensor,
    clip_denoised: float | None = None,
) -> Tensor:
    """DDIM (``eta = 0``) samples ``[N, ...]`` on the CPU for the requested ``labels`` ``[N]``, from ``x_T`` drawn
    from one generator seeded with ``seed``: every model and guidance compared on ``seed`` starts from the same
    noise. ``model`` may be a guided eps-model (``diffbench.guidance``)."""
    x_T = randn(shape, torch.Generator().manual_seed(seed), device_of(model))
    grid = uniform_timesteps(schedule.num_steps, steps)
    cond = {"y": labels.to(x_T.device)}
    return ddim_sample(model, x_T, grid, schedule, cond=cond, clip_denoised=clip_denoised).cpu()


def domain_fid(
    samples: Tensor, data: DataConfig, cache: ArtifactCache, device: torch.device, *, seed: int
) -> FIDResult:
    """Domain FID/KID (with the FID's bootstrap interval) of ``samples`` ``[N, C, H, W]``, clamped to ``[-1, 1]``,
    against ``data``'s held-out split."""
    extractor = domain_features(data, cache, device, seed=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FIDSampleSizeWarning)  # n is stated next to every value
        generator = torch.Generator().manual_seed(seed)
        return fid(samples.clamp(-1, 1), data, extractor, split="test", cache=cache, generator=generator)


def paired_fid_delta(
    samples: Tensor, reference: Tensor, data: DataConfig, cache: ArtifactCache, device: torch.device, *, seed: int
) -> dict[str, float]:
    """``FID(samples) - FID(reference)`` in domain features against ``data``'s held-out split, with its paired
    95% interval (:func:`diffbench.metrics.fid.fid_difference`): sample ``i`` of both sets must come from the same
    noise (and class), as every family here draws them."""
    extractor = domain_features(data, cache, device, seed=seed)
    real = real_statistics(data, extractor, split="test", cache=cache)
    a, b = (extract_features(extractor, x.clamp(-1, 1)) for x in (samples, reference))
    delta, low, high = fid_difference(a, b, real.features, generator=torch.Generator().manual_seed(seed))
    return {"fid_delta": delta, "fid_delta_ci_low": low, "fid_delta_ci_high": high}


def image_quality(
    samples: Tensor, labels: Tensor, data: DataConfig, cache: ArtifactCache, device: torch.device, *, seed: int
) -> tuple[FIDResult, dict[str, float]]:
    """Domain FID/KID of ``samples`` ``[N, C, H, W]`` in ``[-1, 1]`` against ``data``'s held-out split, and the
    independent domain classifier's ``class_accuracy`` and ``class_diversity`` for the requested ``labels``."""
    result = domain_fid(samples, data, cache, device, seed=seed)
    extractor = domain_features(data, cache, device, seed=seed)
    samples = samples.clamp(-1, 1)
    with torch.no_grad():
        logits = extractor.classifier(samples.to(device)).cpu()
    features = extract_features(extractor, samples)
    return result, {
        "class_accuracy": class_accuracy(logits, labels),
        "class_diversity": class_diversity(features, labels),
    }


@torch.no_grad()
def eps_error_by_timestep(
    model: nn.Module,
    schedule: NoiseSchedule,
    x0: Tensor,
    timesteps: list[int],
    *,
    seed: int,
    cond: dict | None = None,
) -> dict[int, float]:
    """Noise-prediction MSE ``E_eps |eps - eps_theta(x_t, t)|^2`` at each of ``timesteps`` on the same ``x0`` and
    the same noise for every model (noise drawn from ``seed``)."""
    device = device_of(model)
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed)).to(device)
    x0 = x0.to(device)
    cond = {k: v.to(device) for k, v in (cond or {}).items()}
    errors = {}
    for t in timesteps:
        t_batch = torch.full((len(x0),), t, device=device, dtype=torch.long)
        prediction = model(schedule.add_noise(x0, t_batch, noise), t_batch, **cond)
        errors[t] = float(((prediction - noise) ** 2).mean())
    return errors


def evaluate_gmm(
    model: nn.Module,
    schedule: NoiseSchedule,
    test: Dataset,
    *,
    num_samples: int,
    steps: int,
    seed: int,
) -> tuple[dict[str, float], Tensor]:
    """Sample ``num_samples`` points (ancestral sampling, ``eta = 1``) and score them against the held-out
    GMM split: :func:`gmm_sample_metrics`, the held-out noise-prediction loss and the sample spread."""
    generator = torch.Generator().manual_seed(seed)  # x_T first, then every step's noise, from one stream
    x_T = randn((num_samples, 2), generator, device_of(model))
    samples = ddim_sample(
        model, x_T, uniform_timesteps(schedule.num_steps, steps), schedule, eta=1.0, generator=generator
    ).cpu()
    metrics = {
        **gmm_sample_metrics(samples, test),
        "test_loss": noise_prediction_loss(model, schedule, test.x, torch.Generator().manual_seed(seed + 1)),
        **sample_stats(samples),
    }
    return metrics, samples


def gmm_sample_metrics(samples: Tensor, test: Dataset) -> dict[str, float]:
    """GMM samples against the held-out split: MMD (the seed's median-heuristic RBF, the multi-scale RBF with
    :func:`gmm_bandwidths`, linear; the distance matrices computed once), W2 (exact up to ``EXACT_W2_MAX_POINTS``
    points, and sliced, under separate names), and the mode statistics."""
    modes = mode_coverage(samples, GMM.means, GMM.std)
    distances = PairwiseSq.of(samples, test.x)
    metrics = {
        "mmd_rbf": distances.mmd((distances.median_distance(),)),
        "mmd_multiscale": distances.mmd(gmm_bandwidths(test)),
        "mmd_linear": mmd_linear(samples, test.x),
        "wasserstein_sliced": sliced_wasserstein(samples, test.x),
        "modes_covered": float(modes.covered),
        "high_quality_fraction": modes.high_quality_fraction,
        "mode_balance": modes.balance,
    }
    if max(len(samples), len(test.x)) <= EXACT_W2_MAX_POINTS:
        metrics["wasserstein"] = wasserstein(samples, test.x)
    return metrics


_BANDWIDTHS: dict[int, tuple[Tensor, tuple[float, ...]]] = {}


def gmm_bandwidths(test: Dataset) -> tuple[float, ...]:
    """:func:`reference_bandwidths` of the held-out set, computed once per process for each set (keyed by the
    tensor's identity, and the tensor kept so the key cannot be reused)."""
    entry = _BANDWIDTHS.get(id(test.x))
    if entry is None or entry[0] is not test.x:
        entry = _BANDWIDTHS[id(test.x)] = (test.x, reference_bandwidths(test.x))
    return entry[1]


def record_gmm_metrics(out: Measurements, metrics: Mapping[str, float], test: Dataset, **extra: object) -> None:
    """Add GMM ``metrics`` to a cell's rows (with ``extra`` params); the ``mmd_multiscale`` row carries (as
    context) the bandwidths it was computed with, fixed from the held-out set ``test``."""
    context = {"mmd_bandwidths": [round(h, 6) for h in gmm_bandwidths(test)]}
    for name, value in metrics.items():
        out.add(name, value, context=context if name == "mmd_multiscale" else None, **extra)


# --- step-reduction students (the samplers family) ----------------------------------------------------------

STUDENT_METHODS = ("progressive", "one_step", "consistency")
# What each kind of model outputs (diffbench.sampling.predict_x0_eps): the trained teachers predict eps.
STUDENT_PREDICTION = {"progressive": "v", "one_step": "x0", "consistency": "x0"}
# Recipe of the step-reduction students and their teacher pairs; bump when what a StudentSpec produces changes.
STUDENT_RECIPE_VERSION = 1
PAIR_BATCH = 500  # teacher samples drawn per chunk for the one-step pairs


@dataclass(frozen=True)
class StudentSpec:
    """A step-reduction student: its artifact key, which contains its teacher's (a trained ``RunSpec``, or for a
    progressive round after the first, the previous round's ``StudentSpec``).

    ``grid``: for ``progressive`` the teacher's grid of this round (the student samples on every other point);
    for ``one_step`` the teacher's DDIM grid that draws the (noise, sample) pairs; for ``consistency`` the
    distillation grid ``t_N > ... > t_1 = t_min``. ``schedule`` must be the teacher's. The student starts from
    its teacher's weights (same architecture)."""

    method: str
    teacher: RunSpec | StudentSpec
    schedule: ScheduleConfig
    grid: tuple[int, ...]
    train: TrainConfig
    clip_denoised: float | None = None
    pairs: int = 0  # one_step: number of (noise, teacher sample) pairs
    target_decay: float = 0.0  # consistency: mu of the target network
    sigma_data: float = 0.5  # consistency: the data's standard deviation in c_skip / c_out

    def __post_init__(self) -> None:
        if self.method not in STUDENT_METHODS:
            raise ValueError(f"unknown student method {self.method!r}; choose one of {STUDENT_METHODS}")
        check_same_schedule(self.schedule, self.teacher.schedule)
        if isinstance(self.teacher, StudentSpec) and self.teacher.method != "progressive":
            raise ValueError(f"only progressive rounds chain students, got a {self.teacher.method} teacher")
        if self.method == "progressive":
            halve_grid(self.grid, self.schedule.num_steps)  # raises for a round below one step
        if self.method == "one_step" and self.pairs < 1:
            raise ValueError(f"one-step distillation needs at least one (noise, sample) pair, got {self.pairs}")

    @property
    def base(self) -> RunSpec:
        """The trained model at the root of the chain (architecture, data)."""
        return self.teacher if isinstance(self.teacher, RunSpec) else self.teacher.base

    @property
    def rounds(self) -> int:
        """1 for a first-round (or non-progressive) student, r for the r-th progressive round."""
        return 1 + (self.teacher.rounds if isinstance(self.teacher, StudentSpec) else 0)

    @property
    def prediction(self) -> str:
        return STUDENT_PREDICTION[self.method]

    @property
    def sampler_grid(self) -> list[int]:
        """The student's own sampling grid: half the round's grid (progressive), ``[t_N]`` otherwise (1 step)."""
        return halve_grid(self.grid, self.schedule.num_steps) if self.method == "progressive" else [self.grid[0]]


def num_classes_of(spec: RunSpec | StudentSpec) -> int:
    """Classes a model is conditioned on (0: unconditional), from its architecture's arguments."""
    base = spec.base if isinstance(spec, StudentSpec) else spec
    return int(dict(base.model.kwargs).get("num_classes", 0) or 0)


def prediction_of(spec: RunSpec | StudentSpec) -> str:
    return spec.prediction if isinstance(spec, StudentSpec) else "eps"


def build_student(spec: StudentSpec) -> nn.Module:
    """The student's untrained module: the base architecture, wrapped as a consistency function if needed."""
    net = spec.base.model.build(seed=spec.train.seed)
    if spec.method == "consistency":
        return ConsistencyFunction(net, spec.schedule.build(), t_min=spec.grid[-1], sigma_data=spec.sigma_data)
    return net


def any_model(spec: RunSpec | StudentSpec, cache: ArtifactCache, device: torch.device) -> nn.Module:
    """The final model of a trained run or a student (trained first if the cache lacks it), eval mode."""
    if isinstance(spec, RunSpec):
        return final_model(spec, cache, device)
    run = train_student(spec, cache, device)
    model = build_student(spec)
    model.load_state_dict(run["checkpoints"][spec.train.epochs])
    return model.to(device).eval()


def _teacher_net_state(spec: StudentSpec, cache: ArtifactCache, device: torch.device) -> dict[str, Tensor]:
    """The weights the student starts from: its teacher's network (a consistency function's inner net)."""
    teacher = any_model(spec.teacher, cache, device)
    net = teacher.net if isinstance(teacher, ConsistencyFunction) else teacher
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def class_labels(n: int, num_classes: int) -> Tensor | None:
    """Sample ``i`` asks for class ``i mod K`` (balanced, the same in every cell); ``None`` when unconditional."""
    return torch.arange(n) % num_classes if num_classes else None


def draw_samples(
    model: nn.Module,
    x_T: Tensor,
    timesteps: list[int] | tuple[int, ...],
    schedule: NoiseSchedule,
    *,
    labels: Tensor | None = None,
    sampler: str = "ddim",
    eta: float = 0.0,
    generator: torch.Generator | None = None,
    clip_denoised: float | None = None,
    prediction: str = "eps",
    batch_size: int,
) -> Tensor:
    """``ddim_sample`` (or ``consistency_sample`` with ``sampler="consistency"``) of ``x_T`` ``[N, ...]`` in chunks
    of ``batch_size`` on the model's device, with labels ``y`` for a conditional model; returns ``[N, ...]`` on the
    CPU. One ``generator`` (the per-step noise) runs through the chunks in order."""
    device = device_of(model)
    chunks = []
    for start in range(0, len(x_T), batch_size):
        end = start + batch_size
        cond = {"y": labels[start:end].to(device)} if labels is not None else None
        if sampler == "consistency":
            out = consistency_sample(
                model, x_T[start:end], timesteps, schedule, generator=generator, cond=cond, clip_denoised=clip_denoised
            )
        else:
            out = ddim_sample(
                model,
                x_T[start:end],
                timesteps,
                schedule,
                eta=eta,
                generator=generator,
                cond=cond,
                clip_denoised=clip_denoised,
                prediction=prediction,
            )
        chunks.append(out.cpu())
    return torch.cat(chunks)


def teacher_pairs(spec: StudentSpec, cache: ArtifactCache, device: torch.device) -> dict:
    """One-step distillation's training set, drawn once and cached: ``pairs`` noises ``x_T`` (one stream per
    pair), labels ``i mod K`` for a conditional teacher, and the teacher's DDIM (``eta = 0``) sample of each on
    ``spec.grid``; ``{"noise", "samples", "labels", "seconds"}``."""
    teacher_spec = spec.teacher
    key = (teacher_spec, spec.grid, spec.pairs, spec.train.seed, spec.clip_denoised)

    def build(_workdir) -> dict:
        teacher = any_model(teacher_spec, cache, device)
        data = cached_dataset(spec.base.data, "train")
        started = time.perf_counter()
        noise = randn((spec.pairs, *data.sample_shape), sample_generators(spec.train.seed + 1, spec.pairs), "cpu")
        labels = class_labels(spec.pairs, num_classes_of(teacher_spec))
        samples = draw_samples(
            teacher,
            noise,
            spec.grid,
            spec.schedule.build(),
            labels=labels,
            clip_denoised=spec.clip_denoised,
            prediction=prediction_of(teacher_spec),
            batch_size=PAIR_BATCH,
        )
        return {
            "noise": noise,
            "samples": samples,
            "labels": labels,
            "seconds": time.perf_counter() - started,
        }

    return cache.get_or_build("distill_pairs", key, build, version=STUDENT_RECIPE_VERSION, device=device)


def _student_loss_and_data(
    spec: StudentSpec, cache: ArtifactCache, device: torch.device
) -> tuple[Callable, Dataset, list[int], float]:
    """(loss, training set, training timesteps, seconds spent before training) of a student."""
    schedule = spec.schedule.build()
    if spec.method == "one_step":
        pairs = teacher_pairs(spec, cache, device)
        data = cached_dataset(spec.base.data, "train")
        labels = pairs["labels"]
        dataset = Dataset(data.name, "pairs", pairs["samples"], labels, num_classes_of(spec), pairs["noise"])
        return one_step_loss, dataset, [spec.grid[0]], pairs["seconds"]
    teacher = any_model(spec.teacher, cache, device)
    kwargs = {"teacher_prediction": prediction_of(spec.teacher), "clip_denoised": spec.clip_denoised}
    dataset = cached_dataset(spec.base.data, "train")
    if spec.method == "progressive":
        loss = ProgressiveDistillationLoss(teacher, schedule, spec.grid, **kwargs)
        return loss, dataset, loss.student_grid, 0.0
    loss = ConsistencyDistillationLoss(teacher, schedule, spec.grid, target_decay=spec.target_decay, **kwargs)
    return loss, dataset, loss.train_timesteps, 0.0


def train_student(spec: StudentSpec, cache: ArtifactCache, device: torch.device, progress: bool = False) -> dict:
    """The trained student of ``spec``: ``{"checkpoints", "history", "setup_seconds"}``, trained once per cache
    by the one trainer (resuming from the scratch directory's checkpoints if a build was interrupted), starting
    from its teacher's weights."""

    def build(workdir) -> dict:
        loss, dataset, train_timesteps, setup_seconds = _student_loss_and_data(spec, cache, device)
        model = build_student(spec)
        net = model.net if isinstance(model, ConsistencyFunction) else model
        net.load_state_dict(_teacher_net_state(spec, cache, device))
        result = train(
            model,
            spec.schedule.build(),
            dataset,
            spec.train,
            device=device,
            checkpoint_dir=workdir / "checkpoints",
            loss_fn=loss,
            timesteps=train_timesteps,
            progress=progress,
        )
        return {"checkpoints": result.checkpoints, "history": result.history, "setup_seconds": setup_seconds}

    return cache.get_or_build("students", spec, build, version=STUDENT_RECIPE_VERSION, device=device)


def training_cost(spec: StudentSpec, cache: ArtifactCache, device: torch.device) -> dict[str, float]:
    """Optimiser steps and seconds spent to obtain this student, earlier progressive rounds and the one-step
    pairs' generation included (the teacher's own training excluded: every method shares it)."""
    run = train_student(spec, cache, device)
    steps = run["history"][-1]["steps"]
    seconds = run["setup_seconds"] + sum(row["seconds"] for row in run["history"])
    if isinstance(spec.teacher, StudentSpec):
        earlier = training_cost(spec.teacher, cache, device)
        steps, seconds = steps + earlier["train_steps"], seconds + earlier["train_seconds"]
    return {"train_steps": float(steps), "train_seconds": float(seconds)}

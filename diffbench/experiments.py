"""Recipes shared by the benchmark families: a run's full spec, its cached training, its evaluation."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from functools import lru_cache

import torch
from torch import Tensor, nn

from diffbench.cache import ArtifactCache
from diffbench.data import GMM, DataConfig, Dataset, load_dataset
from diffbench.distill import distillation_loss
from diffbench.metrics.conditional import class_accuracy, class_diversity
from diffbench.metrics.distribution import (
    mmd_linear,
    mmd_rbf,
    mode_coverage,
    noise_prediction_loss,
    sample_stats,
    wasserstein,
)
from diffbench.metrics.fid import FIDResult, FIDSampleSizeWarning, domain_features, extract_features, fid
from diffbench.models import ModelConfig, device_of
from diffbench.models.classifier import train_classifier
from diffbench.sampling import EpsModel, TrajectoryRecorder, ddim_sample, randn, sample_generators, uniform_timesteps
from diffbench.schedules import NoiseSchedule, ScheduleConfig
from diffbench.training import TrainConfig, epsilon_loss, train


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


def train_cached(spec: RunSpec, cache: ArtifactCache, device: torch.device, progress: bool = False) -> dict:
    """The trained run for ``spec``: ``{"checkpoints": {epoch: state_dict}, "history": [per-epoch dict]}``,
    trained once per cache (resuming from the scratch directory's checkpoints if a build was interrupted)."""

    def build(workdir) -> dict:
        model = spec.model.build(seed=spec.train.seed)
        loss_fn = epsilon_loss
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


def image_quality(
    samples: Tensor, labels: Tensor, data: DataConfig, cache: ArtifactCache, device: torch.device, *, seed: int
) -> tuple[FIDResult, dict[str, float]]:
    """Domain FID/KID of ``samples`` ``[N, C, H, W]`` in ``[-1, 1]`` against ``data``'s held-out split, and the
    independent domain classifier's ``class_accuracy`` and ``class_diversity`` for the requested ``labels``."""
    extractor = domain_features(data, cache, device, seed=seed)
    samples = samples.clamp(-1, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FIDSampleSizeWarning)  # n is stated next to every value
        result = fid(samples, data, extractor, split="test", cache=cache, generator=torch.Generator().manual_seed(seed))
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
    GMM split: MMD (RBF, linear), W2, held-out noise-prediction loss, sample spread and mode statistics."""
    generator = torch.Generator().manual_seed(seed)  # x_T first, then every step's noise, from one stream
    x_T = randn((num_samples, 2), generator, device_of(model))
    samples = ddim_sample(
        model, x_T, uniform_timesteps(schedule.num_steps, steps), schedule, eta=1.0, generator=generator
    ).cpu()
    modes = mode_coverage(samples, GMM.means, GMM.std)
    metrics = {
        "mmd_rbf": mmd_rbf(samples, test.x),
        "mmd_linear": mmd_linear(samples, test.x),
        "wasserstein": wasserstein(samples, test.x),
        "test_loss": noise_prediction_loss(model, schedule, test.x, torch.Generator().manual_seed(seed + 1)),
        **sample_stats(samples),
        "modes_covered": float(modes.covered),
        "high_quality_fraction": modes.high_quality_fraction,
        "mode_balance": modes.balance,
    }
    return metrics, samples

"""batch_configs: does 10x batch with a scaled learning rate converge like the baseline, and why? (seed 002)

The MLP denoiser on the 2-D GMM, trained at batch 128 and lr 1e-4 (the baseline) and at batch {256, 512, 1280} under
each LR rule {none, sqrt, linear} (``lr = 1e-4 * rule(B / 128)``), once for the baseline's number of *epochs* and
once for its number of optimiser *steps*; the seed's own large-batch run (1280 at 3.16e-5, the lr scaled *down*
by sqrt(10)) is kept as a named configuration, at both budgets. Every run logs the gradient noise scale
(McCandlish et al. 2018) as it trains. One cell per run: it trains the run (a cached artifact) and scores every
checkpoint on the same held-out set with metrics whose kernels and sample sizes do not change between checkpoints.
``perfect`` cells score samples of the true GMM the same way: the floor each metric reaches at this n.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch

from diffbench.cache import ArtifactCache
from diffbench.data import GMM, GMM_SIZES, DataConfig
from diffbench.experiments import (
    RunSpec,
    cached_dataset,
    evaluate_gmm,
    gmm_sample_metrics,
    model_at,
    record_gmm_metrics,
    train_cached,
)
from diffbench.families import Family, Measurements
from diffbench.metrics.noise_scale import NoiseScaleEstimate, pooled_noise_scale
from diffbench.metrics.registry import LOWER, QUALITY, TIMING, Metric, declare
from diffbench.models import ModelConfig
from diffbench.profiles import Profile
from diffbench.schedules import ScheduleConfig
from diffbench.training import TrainConfig, train

declare(
    Metric("train_loss", LOWER, QUALITY, "mean training loss over the epoch ending at this checkpoint", True),
    Metric("epoch_seconds", LOWER, TIMING, "wall time of one training epoch", tolerance="timing"),
)

BASE_BATCH, BASE_LR = 128, 1e-4
BATCH_SIZES = (256, 512, 1280)  # besides the baseline's 128
LR_RULES = ("none", "sqrt", "linear")
EPOCHS, STEPS = "epochs", "steps"  # the budget a run is matched to the baseline on


@dataclass(frozen=True)
class BatchConfig:
    """A training configuration: ``lr`` at ``BASE_BATCH``, scaled to ``batch_size`` by ``lr_rule``, trained for
    the baseline's epochs or for its optimiser steps (``budget``)."""

    batch_size: int
    lr: float
    lr_rule: str
    budget: str


BASELINE = "b128_lr1e-04"
SEED_LARGE = "b1280_lr3.16e-05"  # seed 002's large-batch run: 1e-4 / sqrt(10), at equal epochs as in the seed


def _configs() -> dict[str, BatchConfig]:
    configs = {
        BASELINE: BatchConfig(BASE_BATCH, BASE_LR, "none", EPOCHS),
        SEED_LARGE: BatchConfig(1280, 3.16e-5, "none", EPOCHS),
        f"{SEED_LARGE}_eqsteps": BatchConfig(1280, 3.16e-5, "none", STEPS),
    }
    for budget in (EPOCHS, STEPS):
        for batch in BATCH_SIZES:
            for rule in LR_RULES:
                suffix = "_eqsteps" if budget == STEPS else ""
                configs[f"b{batch}_{rule}{suffix}"] = BatchConfig(batch, BASE_LR, rule, budget)
    return configs


CONFIGS = _configs()
PERFECT = "perfect"  # the cells that score true-GMM samples: the metrics' floor at the evaluated n


def steps_per_epoch(batch_size: int) -> int:
    return math.ceil(GMM_SIZES["train"] / batch_size)


def log_checkpoints(epochs: int, count: int) -> tuple[int, ...]:
    """``count`` checkpoint epochs halving back from the last: ``epochs / 2^j`` rounded, ``j = count-1..0``
    (distinct, at least 1), so steps-to-target is resolved over a ``2^(count-1)``-fold range of steps."""
    return tuple(sorted({max(1, round(epochs / 2**j)) for j in range(count)}))


def run_spec(config_id: str, profile: Profile) -> RunSpec:
    """The run of ``config_id``. At equal steps the run gets the epoch count whose optimiser steps are closest
    to the baseline's (within half an epoch); every run has the same log-spaced checkpoints in fractions of its
    budget."""
    if config_id not in CONFIGS:
        raise ValueError(f"unknown batch config {config_id!r}; available: {', '.join(CONFIGS)}")
    cfg, scale = CONFIGS[config_id], profile.batch_configs
    epochs = scale.epochs
    if cfg.budget == STEPS:
        epochs = round(scale.epochs * steps_per_epoch(BASE_BATCH) / steps_per_epoch(cfg.batch_size))
    train = TrainConfig(
        epochs=epochs,
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        lr_rule=cfg.lr_rule,
        base_batch_size=BASE_BATCH,
        checkpoint_every=epochs,
        save_at=log_checkpoints(epochs, scale.checkpoints),
        seed=profile.seed,
        noise_scale_every=max(1, epochs // scale.noise_scale_probes),
        noise_scale_probe=scale.noise_scale_probe,
    )
    return _recipe(profile, train)


def baseline_recipe(profile: Profile, epochs: int) -> RunSpec:
    """The baseline's recipe (batch 128 at lr 1e-4) trained for ``epochs`` with ten even checkpoints and no
    noise probes: the samplers family's GMM teacher, trained for that family's own budget."""
    train = TrainConfig(
        epochs=epochs,
        batch_size=BASE_BATCH,
        lr=BASE_LR,
        lr_rule="none",
        base_batch_size=BASE_BATCH,
        checkpoint_every=max(1, epochs // 10),
        seed=profile.seed,
    )
    return _recipe(profile, train)


def _recipe(profile: Profile, train: TrainConfig) -> RunSpec:
    """Seed 002's model, data and schedule: the 3-layer MLP (hidden 128) on the 2-D GMM, linear betas, T = 1000."""
    return RunSpec(
        model=ModelConfig.of("mlp", hidden=128, num_layers=3),
        data=DataConfig("gmm2d", seed=profile.seed),
        schedule=ScheduleConfig("linear", 1000),
        train=train,
    )


def config_params(config_id: str, spec: RunSpec) -> dict:
    return {
        "config": config_id,
        "batch_size": spec.train.batch_size,
        "lr": spec.train.lr,
        "lr_rule": spec.train.lr_rule,
        "effective_lr": spec.train.effective_lr,
        "budget": CONFIGS[config_id].budget,
    }


@dataclass(frozen=True)
class Cell:
    """One run (``config``, all its checkpoints) or one draw of true-GMM samples (``config == PERFECT``)."""

    config: str
    draw: int = 0

    @property
    def id(self) -> str:
        return f"{PERFECT}-draw{self.draw}" if self.config == PERFECT else self.config


def training_cost(config_id: str, profile: Profile) -> float:
    """Relative cost of training a run: steps x (a per-step overhead + the batch), for scheduling only."""
    spec = run_spec(config_id, profile)
    return spec.train.epochs * steps_per_epoch(spec.train.batch_size) * (1 + spec.train.batch_size / 400)


def cells(profile: Profile) -> list[Cell]:
    """Every run, most expensive first (xdist hands consecutive cells out, and the long runs should start
    first), then the floor draws."""
    runs = sorted(CONFIGS, key=lambda c: -training_cost(c, profile))
    return [Cell(c) for c in runs] + [Cell(PERFECT, d) for d in range(profile.batch_configs.floor_draws)]


def _noise_scale_between(history: list[dict], first: int, last: int) -> NoiseScaleEstimate | None:
    """The noise-scale probes of epochs ``first..last`` pooled (means of |G|^2 and tr(Sigma), then the ratio)."""
    probes = [
        NoiseScaleEstimate(row["grad_sq_norm"], row["grad_trace_cov"])
        for row in history[first - 1 : last]
        if "grad_sq_norm" in row
    ]
    return pooled_noise_scale(probes) if probes else None


def run_quality(
    config_id: str,
    profile: Profile,
    device: torch.device,
    cache: ArtifactCache,
    progress: Callable[[int, int], None] | None = None,
) -> Measurements:
    """Train (or load) the run and score every checkpoint: GMM metrics of ``eval_samples`` ancestral samples
    (fresh noise per checkpoint, seeded by its epoch), the training loss of that epoch, and the gradient noise
    scale pooled over the probes since the previous checkpoint. Rows carry ``epoch``, ``steps`` (optimiser
    steps so far) and ``examples`` (training examples seen); the final checkpoint keeps its samples."""
    spec = run_spec(config_id, profile)
    scale = profile.batch_configs
    run = train_cached(spec, cache, device)
    test = cached_dataset(spec.data, "test")
    per_epoch = steps_per_epoch(spec.train.batch_size)
    out = Measurements(config_params(config_id, spec))
    epochs = sorted(run["checkpoints"])
    previous = 0
    for index, epoch in enumerate(epochs):
        metrics, samples = evaluate_gmm(
            model_at(spec, run, epoch, device),
            spec.schedule.build(),
            test,
            num_samples=scale.eval_samples,
            steps=scale.sampling_steps,
            seed=profile.seed + epoch,
        )
        at = {"epoch": epoch, "steps": epoch * per_epoch, "examples": epoch * GMM_SIZES["train"]}
        record_gmm_metrics(out, {**metrics, "train_loss": run["history"][epoch - 1]["loss"]}, test, **at)
        noise = _noise_scale_between(run["history"], previous + 1, epoch)
        if noise is not None:
            out.update(
                {"noise_scale": noise.b_simple, "grad_sq_norm": noise.grad_sq_norm, "grad_trace_cov": noise.trace_cov},
                **at,
            )
        if epoch == spec.train.epochs:
            out.array("samples", samples, **at)
        previous = epoch
        if progress is not None:
            progress(index + 1, len(epochs))
    return out


def perfect_floor(draw: int, profile: Profile) -> Measurements:
    """The metrics of ``eval_samples`` true-GMM samples (draw ``draw``) against the held-out set: what a perfect
    model scores at this n (W2 is not 0 between two finite samples of one law)."""
    test = cached_dataset(DataConfig("gmm2d", seed=profile.seed), "test")
    generator = torch.Generator().manual_seed(10_000 + 7919 * profile.seed + draw)
    samples, _ = GMM.sample(profile.batch_configs.eval_samples, generator)
    out = Measurements({"config": PERFECT, "draw": draw})
    record_gmm_metrics(out, gmm_sample_metrics(samples, test), test)
    return out


# The trainer's two optimiser steps, timed side by side on a GPU: every kernel launched from Python, or the whole
# step replayed as one captured CUDA graph (diffbench.training.capture_train_step).
TRAIN_STEPS = ("eager", "captured")


def epoch_timer(
    batch_size: int, profile: Profile, device: torch.device, *, train_step: str | None = None
) -> tuple[Callable[[], None], int, dict]:
    """``(run, epochs, params)``: ``run()`` trains a fresh baseline model at ``batch_size`` for ``timing_epochs``
    epochs (same data, fewer optimiser steps at larger batches; the lr does not change the time), without noise
    probes; seconds per epoch = time of ``run`` / ``epochs``. ``train_step`` ``"eager"`` or ``"captured"`` forces
    the trainer's step (``train(cuda_graph=...)``, recorded as a parameter); ``None`` times its default."""
    if train_step not in (None, *TRAIN_STEPS):
        raise ValueError(f"unknown train_step {train_step!r}; choose one of {TRAIN_STEPS}")
    spec = run_spec(BASELINE, profile)
    config = replace(
        spec.train,
        epochs=profile.batch_configs.timing_epochs,
        batch_size=batch_size,
        save_at=(),
        noise_scale_every=0,
    )
    data = cached_dataset(spec.data, "train")
    schedule = spec.schedule.build()

    graph = None if train_step is None else train_step == "captured"
    params = {"batch_size": batch_size, "steps_per_epoch": steps_per_epoch(batch_size)}

    def run() -> None:
        model = spec.model.build(seed=profile.seed)
        train(model, schedule, data, config, device=device, progress=False, cuda_graph=graph)

    return run, config.epochs, params if train_step is None else {**params, "train_step": train_step}


def _sections(df, run_dir):
    from diffbench.report import batch_configs  # the plotting stack loads only when a report is built

    return batch_configs.sections(df, run_dir)


FAMILY = Family(
    name="batch_configs",
    question="large-batch training: batch x LR rule at equal epochs and equal steps, with the gradient noise scale",
    seeds=("002",),
    sections=_sections,
    # shard_group stays None (every cell its own cluster shard group): each run cell trains its own artifact,
    # the perfect floor cells and the epoch timings train nothing that is cached.
)

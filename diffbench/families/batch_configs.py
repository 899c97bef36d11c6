"""batch_configs: does 10x batch with a scaled learning rate converge like the baseline? (seed 002)

Four training configurations of the MLP denoiser on the 2-D GMM: the standard batch 128 at lr 1e-4, and batch
1280 at the seed's lr 3.16e-5, sqrt-scaled up (3.16e-4) and linear-scaled up (1e-3). Each configuration is
trained once (a cached artifact); every saved checkpoint is a separate cell, so checkpoints are evaluated in
parallel.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from diffbench.cache import ArtifactCache
from diffbench.data import DataConfig
from diffbench.experiments import RunSpec, cached_dataset, evaluate_gmm, model_at, train_cached
from diffbench.families import Family, Measurements
from diffbench.metrics.registry import LOWER, QUALITY, TIMING, Metric, declare
from diffbench.models import ModelConfig
from diffbench.profiles import Profile
from diffbench.schedules import ScheduleConfig
from diffbench.training import TrainConfig, train

declare(
    Metric("train_loss", LOWER, QUALITY, "mean training loss over the epoch ending at this checkpoint", True),
    Metric("epoch_seconds", LOWER, TIMING, "wall time of one training epoch", tolerance="timing"),
)


@dataclass(frozen=True)
class BatchConfig:
    batch_size: int
    lr: float
    lr_rule: str


BASELINE = "b128_lr1e-04"
CONFIGS = {
    BASELINE: BatchConfig(128, 1e-4, "none"),
    "b1280_lr3.16e-05": BatchConfig(1280, 3.16e-5, "none"),  # the seed's large-batch run
    "b1280_sqrt": BatchConfig(1280, 1e-4, "sqrt"),  # 3.16e-4
    "b1280_linear": BatchConfig(1280, 1e-4, "linear"),  # 1e-3
}


def run_spec(config_id: str, profile: Profile) -> RunSpec:
    if config_id not in CONFIGS:
        raise ValueError(f"unknown batch config {config_id!r}; available: {', '.join(CONFIGS)}")
    cfg, scale = CONFIGS[config_id], profile.batch_configs
    return RunSpec(
        model=ModelConfig.of("mlp", hidden=128, num_layers=3),
        data=DataConfig("gmm2d", seed=profile.seed),
        schedule=ScheduleConfig("linear", 1000),
        train=TrainConfig(
            epochs=scale.epochs,
            batch_size=cfg.batch_size,
            lr=cfg.lr,
            lr_rule=cfg.lr_rule,
            base_batch_size=128,
            checkpoint_every=scale.checkpoint_every,
            seed=profile.seed,
        ),
    )


def config_params(config_id: str, spec: RunSpec) -> dict:
    return {
        "config": config_id,
        "batch_size": spec.train.batch_size,
        "lr": spec.train.lr,
        "lr_rule": spec.train.lr_rule,
        "effective_lr": spec.train.effective_lr,
    }


def cells(profile: Profile) -> list[tuple[str, int]]:
    """(config, checkpoint epoch), epoch-major, so xdist's round-robin start hands different workers different
    configurations to train first."""
    epochs = run_spec(BASELINE, profile).train.checkpoint_epochs
    return [(config_id, epoch) for epoch in epochs for config_id in CONFIGS]


def checkpoint_quality(
    config_id: str, epoch: int, profile: Profile, device: torch.device, cache: ArtifactCache
) -> Measurements:
    """GMM metrics of one configuration's checkpoint (ancestral sampling, fresh noise per epoch) and its
    training loss at that epoch; the final checkpoint also keeps its samples for the scatter plot."""
    spec = run_spec(config_id, profile)
    run = train_cached(spec, cache, device)
    metrics, samples = evaluate_gmm(
        model_at(spec, run, epoch, device),
        spec.schedule.build(),
        cached_dataset(spec.data, "test"),
        num_samples=profile.batch_configs.eval_samples,
        steps=profile.batch_configs.sampling_steps,
        seed=profile.seed + epoch,
    )
    out = Measurements({**config_params(config_id, spec), "epoch": epoch})
    out.update({**metrics, "train_loss": run["history"][epoch - 1]["loss"]})
    if epoch == spec.train.epochs:
        out.array("samples", samples)
    return out


def epoch_timer(config_id: str, profile: Profile, device: torch.device) -> tuple[Callable[[], None], int, dict]:
    """``(run, epochs, params)``: ``run()`` trains a fresh model for ``timing_epochs`` epochs (same data, 10x
    fewer optimiser steps at batch 1280); seconds per epoch = time of ``run`` / ``epochs``."""
    spec = run_spec(config_id, profile)
    spec = replace(spec, train=replace(spec.train, epochs=profile.batch_configs.timing_epochs))
    data = cached_dataset(spec.data, "train")
    schedule = spec.schedule.build()

    def run() -> None:
        train(spec.model.build(seed=profile.seed), schedule, data, spec.train, device=device, progress=False)

    return run, spec.train.epochs, config_params(config_id, spec)


def _sections(df, run_dir: Path) -> list:
    from diffbench.report import batch_configs  # the plotting stack loads only when a report is built

    return batch_configs.sections(df, run_dir)


FAMILY = Family(
    name="batch_configs",
    question="large-batch convergence: batch x LR rule x checkpoint epoch",
    seeds=("002",),
    sections=_sections,
)

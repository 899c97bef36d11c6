"""Does 10x batch with a scaled learning rate converge like the baseline? (seed 002)

Four training configurations of the MLP denoiser on the 2-D GMM: the standard batch 128 at lr 1e-4, and batch
1280 at the seed's lr 3.16e-5, sqrt-scaled up (3.16e-4) and linear-scaled up (1e-3). Each configuration is
trained once (a cached artifact); every saved checkpoint is a separate cell, so checkpoints are evaluated in
parallel. The report overlays the four learning curves, scatters the final samples over the true GMM, and
tabulates final quality, convergence epoch and stability.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import pytest

from diffbench.data import GMM, DataConfig
from diffbench.experiments import RunSpec, cached_dataset, evaluate_gmm, model_at, train_cached
from diffbench.models import ModelConfig
from diffbench.schedules import ScheduleConfig
from diffbench.training import TrainConfig, train

pytestmark = pytest.mark.batch_configs


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


def run_spec(config_id: str, profile) -> RunSpec:
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


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Cells are (checkpoint epoch x config), epoch-major, so xdist's round-robin start hands different
    workers different configurations to train first."""
    if {"config_id", "epoch"} <= set(metafunc.fixturenames):
        from diffbench.profiles import get_profile

        profile = get_profile(metafunc.config.getoption("profile"))
        epochs = run_spec(BASELINE, profile).train.checkpoint_epochs
        cells = [(c, e) for e in epochs for c in CONFIGS]
        metafunc.parametrize("config_id,epoch", cells, ids=[f"{c}-epoch{e:04d}" for c, e in cells])


def test_checkpoint_quality(config_id, epoch, profile, device, artifacts, record):
    spec = run_spec(config_id, profile)
    run = train_cached(spec, artifacts, device)
    model = model_at(spec, run, epoch, device)
    metrics, samples = evaluate_gmm(
        model,
        spec.schedule.build(),
        cached_dataset(spec.data, "test"),
        num_samples=profile.batch_configs.eval_samples,
        steps=profile.batch_configs.sampling_steps,
        seed=profile.seed + epoch,
    )
    metrics["train_loss"] = run["history"][epoch - 1]["loss"]
    params = {**config_params(config_id, spec), "epoch": epoch}
    for name, value in metrics.items():
        record(name, value, **params)
    final = epoch == spec.train.epochs
    if final:
        record.array("samples", samples, **params)

    assert all(math.isfinite(v) for v in metrics.values()), metrics
    assert 0 <= metrics["modes_covered"] <= GMM.num_components
    if final and config_id == BASELINE:
        # The standard configuration must recover the GMM: every mode, on the circle of radius 5.
        assert metrics["modes_covered"] == GMM.num_components, metrics
        assert abs(metrics["radius_mean"] - GMM.radius) <= 0.3, metrics


@pytest.mark.timing
@pytest.mark.parametrize("config_id", list(CONFIGS))
def test_epoch_time(config_id, profile, device, benchmark, record):
    """Wall time of one training epoch (same data, 10x fewer optimiser steps at batch 1280)."""
    spec = run_spec(config_id, profile)
    spec = replace(spec, train=replace(spec.train, epochs=profile.batch_configs.timing_epochs))
    data = cached_dataset(spec.data, "train")
    schedule = spec.schedule.build()

    def one_run():
        train(spec.model.build(seed=profile.seed), schedule, data, spec.train, device=device, progress=False)

    benchmark.pedantic(one_run, rounds=3, warmup_rounds=1)
    seconds = benchmark.stats.stats.mean / spec.train.epochs
    record("epoch_seconds", seconds, **config_params(config_id, spec))
    assert seconds > 0

"""Does 10x batch with a scaled learning rate converge like the baseline? (seed 002)

Four configurations of the MLP denoiser on the 2-D GMM (:mod:`diffbench.families.batch_configs`): batch 128 at
lr 1e-4, and batch 1280 at the seed's 3.16e-5, sqrt-scaled 3.16e-4 and linear-scaled 1e-3. Each configuration is
trained once; every checkpoint is a cell. The report overlays the learning curves, scatters the final samples
over the true GMM and tabulates final quality, convergence epoch and stability.
"""

from __future__ import annotations

import math

import pytest

from diffbench.data import GMM
from diffbench.families import batch_configs as family
from diffbench.profiles import get_profile

pytestmark = pytest.mark.batch_configs


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if {"config_id", "epoch"} <= set(metafunc.fixturenames):
        cells = family.cells(get_profile(metafunc.config.getoption("profile")))
        metafunc.parametrize("config_id,epoch", cells, ids=[f"{c}-epoch{e:04d}" for c, e in cells])


def test_checkpoint_quality(config_id, epoch, profile, device, artifacts, record):
    result = family.checkpoint_quality(config_id, epoch, profile, device, artifacts)
    record.result(result)

    assert all(math.isfinite(value) for _, value, _, _ in result), list(result)
    assert 0 <= result["modes_covered"] <= GMM.num_components
    if config_id == family.BASELINE and epoch == profile.batch_configs.epochs:
        # The standard configuration must recover the GMM: every mode, on the circle of radius 5.
        assert result["modes_covered"] == GMM.num_components, list(result)
        assert abs(result["radius_mean"] - GMM.radius) <= 0.3, list(result)


@pytest.mark.timing
@pytest.mark.parametrize("config_id", list(family.CONFIGS))
def test_epoch_time(config_id, profile, device, benchmark, record):
    """Wall time of one training epoch (same data, 10x fewer optimiser steps at batch 1280)."""
    run, epochs, params = family.epoch_timer(config_id, profile, device)
    benchmark.pedantic(run, rounds=3, warmup_rounds=1)
    seconds = benchmark.stats.stats.mean / epochs
    record("epoch_seconds", seconds, **params)
    assert seconds > 0

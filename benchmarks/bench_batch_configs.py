"""Does 10x batch with a scaled learning rate converge like the baseline, and why? (seed 002)

The MLP denoiser on the 2-D GMM (:mod:`diffbench.families.batch_configs`): batch 128 at lr 1e-4 against batch
{256, 512, 1280} under the none / sqrt / linear LR rules, at the baseline's epochs and at its optimiser steps, and
the seed's 1280 at 3.16e-5. One cell per run scores every checkpoint; ``perfect`` cells score true-GMM samples, the
floor of each metric at this n. The report plots learning curves against optimiser steps with those floors,
steps-to-target against batch size beside the measured gradient noise scale, and says for each rule whether the
large batch matches the baseline at equal epochs and at equal steps.
"""

from __future__ import annotations

import math

import pytest

from diffbench.data import GMM
from diffbench.families import batch_configs as family
from diffbench.profiles import get_profile

pytestmark = pytest.mark.batch_configs


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "cell" in metafunc.fixturenames:
        cells = family.cells(get_profile(metafunc.config.getoption("profile")))
        metafunc.parametrize("cell", cells, ids=[cell.id for cell in cells])


def test_batch_config(cell, profile, device, artifacts, record):
    if cell.config == family.PERFECT:
        result = family.perfect_floor(cell.draw, profile)
        record.result(result)
        # True samples cover every mode and sit on their components.
        assert result["modes_covered"] == GMM.num_components and result["high_quality_fraction"] > 0.95
        return
    result = family.run_quality(cell.config, profile, device, artifacts)
    record.result(result)
    assert all(math.isfinite(value) or name == "noise_scale" for name, value, _, _ in result), list(result)
    assert all(0 <= value <= GMM.num_components for value in result.series("modes_covered"))
    if cell.config == family.BASELINE:
        # The standard configuration must recover the GMM by its last checkpoint: every mode, on the circle.
        assert result.series("modes_covered")[-1] == GMM.num_components, list(result)
        assert abs(result.series("radius_mean")[-1] - GMM.radius) <= 0.3, list(result)


@pytest.mark.timing
@pytest.mark.parametrize("batch_size", [family.BASE_BATCH, *family.BATCH_SIZES])
def test_epoch_time(batch_size, profile, device, benchmark, record):
    """Wall time of one training epoch (same data, fewer optimiser steps at larger batches)."""
    run, epochs, params = family.epoch_timer(batch_size, profile, device)
    benchmark.pedantic(run, rounds=3, warmup_rounds=1)
    seconds = benchmark.stats.stats.mean / epochs
    record("epoch_seconds", seconds, **params)
    assert seconds > 0


@pytest.mark.timing
@pytest.mark.parametrize("train_step", family.TRAIN_STEPS)
@pytest.mark.parametrize("batch_size", [family.BASE_BATCH, family.BATCH_SIZES[-1]])
def test_epoch_time_by_train_step(batch_size, train_step, profile, device, benchmark, record):
    """On a GPU, does capturing the optimiser step pay? One epoch with every kernel launched from Python against
    the whole step replayed as one CUDA graph (the small MLP is launch-bound), at the smallest and largest batch."""
    if device.type != "cuda":
        pytest.skip("the captured train step needs a CUDA device (--device cuda)")
    run, epochs, params = family.epoch_timer(batch_size, profile, device, train_step=train_step)
    benchmark.pedantic(run, rounds=3, warmup_rounds=1)
    seconds = benchmark.stats.stats.mean / epochs
    record("epoch_seconds", seconds, **params)
    assert seconds > 0

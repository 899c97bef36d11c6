"""How few steps can a sampler or a distilled student take on one teacher, at what quality? (seeds 000/004)

Cells are (panel, method, steps): the teacher's DDPM and DDIM (eta 0 and 1) at seed 004's step counts, each
progressive-distillation round, the one-step student and the consistency student at 1 and 2 steps, all from the
same noise per sample (:mod:`diffbench.families.samplers`). Timing cells add what each sampling path costs on the
device that runs them: is a small model's loop launch-bound, and what does a captured CUDA graph save?
"""

from __future__ import annotations

import math
import time

import pytest

from diffbench.families import samplers as family
from diffbench.profiles import get_profile

pytestmark = pytest.mark.samplers


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "cell" in metafunc.fixturenames:
        cells = family.cells(get_profile(metafunc.config.getoption("profile")))
        metafunc.parametrize("cell", cells, ids=[cell.id for cell in cells])
    if "loop" in metafunc.fixturenames:
        loops = family.loop_cells(get_profile(metafunc.config.getoption("profile")))
        metafunc.parametrize("loop", loops, ids=[loop.id for loop in loops])


def test_sampler_quality(cell, profile, options, data_root, device, artifacts, record):
    """Quality, deviation from the teacher's many-step output, evaluations per sample and training cost."""
    result, samples = family.sampler_quality(cell, profile, options, device, artifacts, data_root)
    record.result(result)
    assert all(math.isfinite(value) for _, value, _, _ in result), list(result)
    assert result["network_evaluations"] == cell.steps and len(samples) == result.params["n"]
    assert result["teacher_deviation"] >= 0
    if cell.panel == "image":
        assert 0 <= result["class_accuracy"] <= 1 and result["fid"] >= 0
    else:
        assert 0 <= result["modes_covered"] <= 8


@pytest.mark.timing
def test_sampler_latency(cell, profile, options, data_root, device, benchmark, record):
    """Seconds per sample of each sampler at its step count (untrained weights: cost is the network's)."""
    run, batch, params = family.sampler_timer(cell, profile, options, device, data_root)
    long_run = cell.steps > 100  # DDPM's T steps: one timed round, no warm-up
    benchmark.pedantic(run, rounds=1 if long_run else 3, warmup_rounds=0 if long_run else 1)
    seconds = benchmark.stats.stats.mean / batch
    record("sampling_seconds_per_image", seconds, **params)
    assert seconds > 0


@pytest.mark.timing
def test_sampling_loop_overhead(loop, device, benchmark, record):
    """Is sampling launch-bound here? One 50-step DDIM batch of a profile's teacher by each path: its model
    forwards alone, ``ddim_sample``'s eager loop, the same loop replayed as a CUDA graph, diffusers' loop (median of
    3, or one round where a round takes over 5 s, after a warm-up round, which is where the graph is captured)."""
    try:
        run, params = family.loop_timer(loop, device)
    except family.PathUnavailable as err:
        pytest.skip(str(err))
    started = time.perf_counter()
    run()  # the warm-up round, where a graph is captured
    long_run = time.perf_counter() - started > 5  # a CPU at batch 64: one timed round is enough
    benchmark.pedantic(run, rounds=1 if long_run else 3, warmup_rounds=0)
    seconds = benchmark.stats.stats.median
    record("loop_seconds", seconds, **params)
    assert seconds > 0

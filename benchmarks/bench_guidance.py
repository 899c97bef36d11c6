"""Classifier guidance (seed 004), and classifier guidance vs classifier-free guidance on the same network, noise
and step budget (:mod:`diffbench.families.guidance`)."""

from __future__ import annotations

import math

import pytest
import torch

from diffbench.families import guidance as family
from diffbench.profiles import get_profile

pytestmark = pytest.mark.guidance


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    profile = get_profile(metafunc.config.getoption("profile"))
    if {"method", "scale"} <= set(metafunc.fixturenames):
        cells = family.cells(profile)
        metafunc.parametrize("method,scale", cells, ids=[family.cell_id(m, s) for m, s in cells])


def test_guidance_classifier(profile, data_root, device, artifacts, record):
    """The noise-aware classifier knows the classes at low noise and falls to chance as t approaches T."""
    result = family.classifier_accuracy(profile, device, artifacts, data_root)
    record.result(result)
    accuracies = result.series("noisy_classifier_accuracy")
    assert accuracies[0] > 0.8, accuracies
    assert all(0 <= a <= 1 for a in accuracies)


def test_guided_samples(method, scale, profile, data_root, device, artifacts, record):
    """Accuracy, diversity, FID and evaluation budget of the teacher guided by one method at one scale."""
    result, samples = family.guided_samples(method, scale, profile, device, artifacts, data_root)
    record.result(result)
    assert all(math.isfinite(value) for _, value, _, _ in result), list(result)
    assert 0 <= result["class_accuracy"] <= 1 and torch.isfinite(samples).all()


@pytest.mark.timing
def test_guidance_latency(method, scale, profile, data_root, device, benchmark, record):
    """Seconds per image at the same 50 steps: CFG doubles the batch, classifier guidance adds a backward pass."""
    run, batch, params = family.sampling_timer(method, scale, profile, device, data_root)
    benchmark.pedantic(run, rounds=3, warmup_rounds=1)
    seconds = benchmark.stats.stats.mean / batch
    record("sampling_seconds_per_image", seconds, **params)
    assert seconds > 0

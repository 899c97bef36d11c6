"""How does model size change sampling trajectories, noise prediction and efficiency? (seeds 000/001)

A class-conditional UNet teacher (size 1.0) and students of size factor s, trained from data or distilled from
the teacher (:mod:`diffbench.families.size_factors`). Every model samples from the same initial noise, so
trajectories are compared point by point in the teacher's frame; each model is trained once (a cached artifact).
"""

from __future__ import annotations

import math

import pytest
import torch

from diffbench.families import size_factors as family
from diffbench.profiles import get_profile
from diffbench.pytest_plugin import option_values

pytestmark = pytest.mark.size_factors


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    profile = get_profile(metafunc.config.getoption("profile"))
    options = option_values(metafunc.config)
    students = family.student_ids(family.selected_sizes(profile, options))
    if "model_id" in metafunc.fixturenames:
        metafunc.parametrize("model_id", [family.TEACHER, *students])
    elif "student" in metafunc.fixturenames:
        metafunc.parametrize("student", students)
    elif "size" in metafunc.fixturenames:
        metafunc.parametrize("size", family.latency_sizes(profile, options), ids=lambda s: f"s{s:g}")
    elif "method" in metafunc.fixturenames:
        metafunc.parametrize("method", family.EMBEDDING_METHODS)


def test_noise_prediction(model_id, profile, data_root, device, artifacts, record):
    """eps-prediction error vs timestep on held-out data, same x0 and noise for every model; model cost."""
    result = family.noise_prediction(model_id, profile, device, artifacts, data_root)
    record.result(result)
    assert all(math.isfinite(e) and e >= 0 for e in result.series("eps_mse"))
    assert result["params"] > 0 and result["flops_per_image"] > 0


def test_teacher_reference(profile, data_root, device, artifacts, record):
    """The teacher's own trajectories: the PCA frame every student is projected into, its dimensionality."""
    result, frame = family.teacher_reference(profile, device, artifacts, data_root)
    record.result(result)
    assert 0 < float(frame.explained_variance_ratio.sum()) <= 1 + 1e-9


def test_trajectories(student, profile, data_root, device, artifacts, record):
    """Student vs teacher trajectories from the same noise: scalar, per-step and radar metrics, PCA frame."""
    result, traj, reference = family.student_trajectories(student, profile, device, artifacts, data_root)
    record.result(result)
    assert torch.equal(traj[0], reference[0]), "student and teacher must start from the same noise"
    assert all(math.isfinite(value) for _, value, _, _ in result), list(result)
    assert all(0 <= value <= 1 for name, value, _, _ in result if name.startswith("radar_"))


def test_sample_quality(model_id, profile, data_root, device, artifacts, record):
    """Domain FID (bootstrap CI), KID and improved precision/recall of class-balanced DDIM samples against the
    held-out split."""
    result = family.sample_quality(model_id, profile, device, artifacts, data_root)
    record.result(result)
    assert math.isfinite(result["fid"]) and result["fid"] >= 0 and result["kid_std"] >= 0
    assert all(0 <= v <= 1 for v in result.series("precision") + result.series("recall"))


def test_attention(model_id, profile, data_root, device, artifacts, record):
    """Attention entropy per layer and timestep on the teacher's x_t, JS divergence from the teacher's maps."""
    result, skipped = family.attention(model_id, profile, device, artifacts, data_root)
    record.result(result)
    assert all(math.isfinite(v) and v >= 0 for v in result.series("attention_entropy"))
    assert all(0 <= v <= math.log(2) for v in result.series("attention_js_to_teacher")), skipped
    if model_id == family.TEACHER:
        assert not result.series("attention_js_to_teacher") and not skipped


def test_determinism(model_id, profile, data_root, device, artifacts, record):
    """verify_determinism of every trained model: same seed twice (must be bitwise equal), another batch layout."""
    result, report = family.determinism(model_id, profile, device, artifacts, data_root)
    record.result(result)
    assert report.deterministic, f"same-seed samples differ by up to {report.same_seed_max_abs:.3g}"


@pytest.mark.timing
def test_sampling_latency(size, profile, data_root, device, benchmark, record):
    """Seconds per image of DDIM sampling at the profile's step count (architecture only: untrained weights)."""
    run, batch, params = family.sampling_timer(size, profile, device, data_root)
    benchmark.pedantic(run, rounds=3, warmup_rounds=1)
    seconds = benchmark.stats.stats.mean / batch
    record("sampling_seconds_per_image", seconds, **params)
    assert seconds > 0


def test_embeddings(method, options, profile, data_root, device, artifacts, record):
    """Every model's trajectory points, and its final samples with real data in domain features, embedded together
    (PCA, t-SNE, UMAP), with each embedding's trustworthiness."""
    reason = family.embedding_unavailable(method)
    if reason is not None:
        pytest.skip(reason)
    result = family.embeddings(method, profile, options, device, artifacts, data_root)
    record.result(result)
    assert len(result.series("trustworthiness")) == len(family.EMBEDDING_VIEWS)
    assert all(0 <= v <= 1 for v in result.series("trustworthiness"))

"""Trajectory metrics against closed forms, the teacher's PCA frame, radar normalisation, bit-identical sampling."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from diffbench.metrics.trajectory import (
    HIGHER_IS_BETTER,
    TeacherFrame,
    compare_trajectories,
    directional_consistency,
    endpoint_distance,
    endpoint_wasserstein,
    explained_variance_curve,
    normalize_for_radar,
    path_length,
    path_length_similarity,
    stepwise_cosine,
    stepwise_distance,
    stepwise_wasserstein,
    teacher_scales,
    trajectory_mse,
)
from diffbench.models import UNet
from diffbench.sampling import TrajectoryRecorder, ddim_sample, randn, sample_generators, uniform_timesteps
from diffbench.schedules import NoiseSchedule


def _traj(steps: int = 6, batch: int = 5, *shape: int, seed: int = 0) -> torch.Tensor:
    shape = shape or (3, 4)
    return torch.randn(steps + 1, batch, *shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _line(steps: int = 8, batch: int = 4, dim: int = 6) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Straight trajectories ``[S+1, B, D]`` from ``start`` to ``end`` with uneven but positive increments."""
    gen = torch.Generator().manual_seed(0)
    start, end = torch.randn(2, batch, dim, generator=gen, dtype=torch.float64)
    fractions = torch.cat([torch.zeros(1), torch.rand(steps, generator=gen).cumsum(0)]).double()
    fractions = fractions / fractions[-1]
    return start + fractions[:, None, None] * (end - start), start, end


# ------------------------------------------------------------------------------------- known answers


def test_identical_trajectories():
    a = _traj()
    assert trajectory_mse(a, a) == 0.0
    assert path_length_similarity(a, a) == 1.0
    assert torch.allclose(stepwise_cosine(a, a), torch.ones(6, dtype=torch.float64), atol=1e-12)
    assert torch.equal(stepwise_distance(a, a), torch.zeros(7, dtype=torch.float64))
    assert endpoint_distance(a, a) == 0.0
    assert endpoint_wasserstein(a, a) == pytest.approx(0.0, abs=1e-6)
    assert torch.allclose(stepwise_wasserstein(a, a), torch.zeros(7, dtype=torch.float64), atol=1e-6)
    metrics = compare_trajectories(a, a)
    assert metrics.keys() == HIGHER_IS_BETTER.keys()
    radar = normalize_for_radar({k: v for k, v in metrics.items() if k != "directional_consistency"})
    assert all(v == pytest.approx(1.0, abs=1e-6) for v in radar.values()), radar


def test_straight_line_has_consistency_one_and_length_end_minus_start():
    traj, start, end = _line()
    assert directional_consistency(traj) == pytest.approx(1.0, abs=1e-12)
    torch.testing.assert_close(path_length(traj), (end - start).norm(dim=-1), rtol=1e-12, atol=1e-12)


def test_back_and_forth_has_consistency_minus_one():
    v = torch.tensor([[1.0, 2.0, -1.0]], dtype=torch.float64)
    traj = torch.stack([0 * v, v, 0 * v, v, 0 * v])  # [5, 1, 3]
    assert directional_consistency(traj) == pytest.approx(-1.0, abs=1e-12)
    assert path_length(traj).item() == pytest.approx(4 * v.norm().item(), rel=1e-12)


@given(c=st.floats(-10, 10).filter(lambda c: abs(c) > 1e-3))
def test_scaled_trajectory_scales_the_path_length(c):
    a = _traj(4, 3)
    torch.testing.assert_close(path_length(c * a), abs(c) * path_length(a), rtol=1e-10, atol=0)
    # a trajectory twice as long (scaled about the origin) has path-length similarity 1/2
    assert path_length_similarity(a, 2 * a) == pytest.approx(0.5, rel=1e-12)


@given(shift=st.lists(st.floats(-5, 5), min_size=12, max_size=12))
def test_translated_trajectory(shift):
    a = _traj()
    delta = torch.tensor(shift, dtype=torch.float64).reshape(3, 4)
    b = a + delta
    norm = delta.norm().item()
    torch.testing.assert_close(stepwise_distance(a, b), torch.full((7,), norm, dtype=torch.float64), rtol=1e-9,
                               atol=1e-9)  # fmt: skip
    assert trajectory_mse(a, b) == pytest.approx(norm**2 / 12, rel=1e-9, abs=1e-12)
    assert endpoint_distance(a, b) == pytest.approx(norm, rel=1e-9, abs=1e-9)
    assert path_length_similarity(a, b) == pytest.approx(1.0, abs=1e-12)  # translation keeps every step
    assert endpoint_wasserstein(a, b) == pytest.approx(norm, rel=1e-6, abs=1e-6)  # W2 of a translation = |shift|
    # a translation moves every position, not a single step: the step vectors agree exactly
    torch.testing.assert_close(stepwise_cosine(a, b), torch.ones(6, dtype=torch.float64))


def test_step_cosine_ignores_what_two_unrelated_trajectories_share():
    """Two independent random walks on a shared large offset (a digit's background): their positions are almost
    parallel (position cosine near 1), their step vectors are not (cosine near 0, spread ~ 1/sqrt(D))."""
    gen = torch.Generator().manual_seed(3)
    offset = torch.full((1, 1, 256), -1.0, dtype=torch.float64)
    a = offset + 0.1 * torch.randn(21, 8, 256, generator=gen, dtype=torch.float64).cumsum(0)
    b = offset + 0.1 * torch.randn(21, 8, 256, generator=gen, dtype=torch.float64).cumsum(0)
    position_cosine = torch.nn.functional.cosine_similarity(a[1:], b[1:], dim=-1).mean()
    assert position_cosine > 0.5
    assert abs(float(stepwise_cosine(a, b).mean())) < 0.05
    assert compare_trajectories(a, b)["cosine_similarity"] == pytest.approx(float(stepwise_cosine(a, b).mean()))


def test_opposite_trajectories_have_cosine_minus_one():
    a = _traj()
    torch.testing.assert_close(stepwise_cosine(a, -a), torch.full((6,), -1.0, dtype=torch.float64))


def test_stepwise_metrics_have_one_value_per_point_or_step():
    a, b = _traj(seed=0), _traj(seed=1)
    for fn in (stepwise_distance, stepwise_wasserstein):
        assert fn(a, b).shape == (7,)
    assert stepwise_cosine(a, b).shape == (6,)  # one per step vector
    metrics = compare_trajectories(a, b)
    # the shared start (position 0) is left out of the averages
    assert metrics["euclidean_distance"] == pytest.approx(float(stepwise_distance(a, b)[1:].mean()))
    assert metrics["wasserstein_stepwise"] == pytest.approx(float(stepwise_wasserstein(a, b)[1:].mean()))
    assert stepwise_distance(a, b)[-1].item() == pytest.approx(endpoint_distance(a, b))
    assert stepwise_wasserstein(a, b)[-1].item() == pytest.approx(endpoint_wasserstein(a, b))


def test_shape_mismatch_names_both_shapes():
    with pytest.raises(ValueError, match=r"\(7, 5, 3, 4\) and \(7, 4, 3, 4\)"):
        trajectory_mse(_traj(6, 5), _traj(6, 4))
    with pytest.raises(ValueError, match=r"\(7, 5, 3, 4\) and \(5, 5, 3, 4\)"):
        compare_trajectories(_traj(6, 5), _traj(4, 5))


def test_non_finite_and_short_trajectories_are_rejected():
    bad = _traj()
    bad[2, 1, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        path_length(bad)
    with pytest.raises(ValueError, match="at least 3"):
        directional_consistency(_traj(1))


# ------------------------------------------------------------------------------------------ radar


@given(v1=st.floats(-2, 2), v2=st.floats(-2, 2), d1=st.floats(0, 1e6), d2=st.floats(0, 1e6),
       scale=st.floats(1e-3, 1e3))  # fmt: skip
def test_normalize_for_radar_in_unit_interval_and_monotone(v1, v2, d1, d2, scale):
    directions = {"similarity": True, "distance": False}
    lo_v, hi_v = sorted((v1, v2))
    lo_d, hi_d = sorted((d1, d2))
    lo = normalize_for_radar({"similarity": lo_v, "distance": lo_d}, directions, {"distance": scale})
    hi = normalize_for_radar({"similarity": hi_v, "distance": hi_d}, directions, {"distance": scale})
    assert all(0.0 <= v <= 1.0 for v in (*lo.values(), *hi.values()))
    assert lo["similarity"] <= hi["similarity"]  # higher value, further out
    assert lo["distance"] >= hi["distance"]  # larger distance, further in
    if hi_d / scale > lo_d / scale * (1 + 1e-6) + 1e-9:  # strictly decreasing where floats can tell
        assert lo["distance"] > hi["distance"]


def test_normalize_for_radar_closed_forms():
    radar = normalize_for_radar(
        {"path_length_similarity": 0.8, "cosine_similarity": -0.3, "trajectory_mse": 0.0, "endpoint_distance": 2.0},
        scales={"endpoint_distance": 2.0},
    )
    assert radar == {"path_length_similarity": 0.8, "cosine_similarity": 0.0, "trajectory_mse": 1.0,
                     "endpoint_distance": 0.5}  # fmt: skip


def test_normalize_for_radar_rejects_unknown_metrics_and_negative_distances():
    with pytest.raises(ValueError, match="'fid_mystery'"):
        normalize_for_radar({"fid_mystery": 1.0})
    with pytest.raises(ValueError, match="trajectory_mse"):
        normalize_for_radar({"trajectory_mse": -1.0})


# ---------------------------------------------------------------------------------------- PCA frame


def _plane_trajectory(steps: int = 9, batch: int = 6, seed: int = 0) -> torch.Tensor:
    """Points ``offset + a u + b v`` on a 2-D plane in R^10, shaped ``[S+1, B, 2, 5]``."""
    gen = torch.Generator().manual_seed(seed)
    basis, _ = torch.linalg.qr(torch.randn(10, 2, generator=gen, dtype=torch.float64))  # orthonormal u, v
    coeffs = torch.randn(steps + 1, batch, 2, generator=gen, dtype=torch.float64) * torch.tensor([3.0, 1.0])
    offset = torch.randn(10, generator=gen, dtype=torch.float64)
    return (coeffs @ basis.T + offset).reshape(steps + 1, batch, 2, 5)


def test_teacher_frame_on_a_plane():
    traj = _plane_trajectory()
    frame = TeacherFrame.fit(traj, n_components=3)
    ratio = frame.explained_variance_ratio
    assert ratio.shape == (3,)
    assert float(ratio[:2].sum()) == pytest.approx(1.0, abs=1e-6)
    assert float(ratio[2]) == pytest.approx(0.0, abs=1e-6)
    assert ratio[0] >= ratio[1]
    torch.testing.assert_close(frame.components @ frame.components.T, torch.eye(3, dtype=torch.float64))
    coords = frame.project(traj)
    assert coords.shape == (10, 6, 3)
    torch.testing.assert_close(frame.reconstruct(coords), traj, rtol=0, atol=1e-10)
    # a 2-component frame already reconstructs points on the plane exactly
    frame2 = TeacherFrame.fit(traj, n_components=2)
    torch.testing.assert_close(frame2.reconstruct(frame2.project(traj)), traj, rtol=0, atol=1e-10)


def test_teacher_frame_projects_the_teacher_mean_to_the_origin():
    traj = _traj(5, 4)
    frame = TeacherFrame.fit(traj, n_components=2)
    assert torch.allclose(frame.project(traj).reshape(-1, 2).mean(0), torch.zeros(2, dtype=torch.float64),
                          atol=1e-12)  # fmt: skip


def test_explained_variance_curve():
    curve = explained_variance_curve(_plane_trajectory(), 5)
    assert curve.shape == (5,)
    assert torch.all(curve.diff() >= -1e-12)
    torch.testing.assert_close(curve[1:], torch.ones(4, dtype=torch.float64), rtol=0, atol=1e-6)
    full = explained_variance_curve(_traj(5, 4), 12)
    assert float(full[-1]) == pytest.approx(1.0, abs=1e-9)  # all 12 dims: everything explained


def test_teacher_frame_validation():
    with pytest.raises(ValueError, match="n_components"):
        TeacherFrame.fit(_traj(1, 2), n_components=5)  # 4 points span at most 4 directions
    frame = TeacherFrame.fit(_traj(), n_components=2)
    with pytest.raises(ValueError, match="dims"):
        frame.project(_traj(6, 5, 2, 2))


# ------------------------------------------------------------------------------- bit-identical sampling


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_ddim_trajectories_are_bit_identical_with_per_sample_generators(eta):
    model = UNet(0.3, base_channels=8, num_classes=3).eval()
    schedule = NoiseSchedule.linear(1000)
    shape, y = (3, 1, 16, 16), {"y": torch.tensor([0, 1, 3])}

    def run() -> torch.Tensor:
        generators, recorder = sample_generators(11, 3), TrajectoryRecorder()
        x_T = randn(shape, generators, "cpu")
        ddim_sample(model, x_T, uniform_timesteps(schedule.num_steps, 5), schedule, eta=eta, generator=generators,
                    cond=y, callback=recorder)  # fmt: skip
        return recorder.trajectory()

    a, b = run(), run()
    assert a.shape == (6, *shape)
    assert torch.equal(a, b)
    # sample i starts from its own stream: seed * 2^20 + i
    for i in range(3):
        expected = torch.randn(shape[1:], generator=torch.Generator().manual_seed(11 * 2**20 + i))
        assert torch.equal(a[0, i], expected)
    assert math.isfinite(float(a.abs().max()))


def test_teacher_scales_put_an_error_as_large_as_the_signal_at_one_half():
    # Every point of this teacher has norm 2 in D = 4 dimensions: r = 2, mean squared element = 1.
    teacher = torch.full((3, 5, 4), 1.0)
    scales = teacher_scales(teacher)
    assert scales["euclidean_distance"] == pytest.approx(2.0)
    assert scales["trajectory_mse"] == pytest.approx(1.0)
    assert set(scales) == {name for name, higher in HIGHER_IS_BETTER.items() if not higher}
    radar = normalize_for_radar({"euclidean_distance": 2.0, "trajectory_mse": 1.0}, scales=scales)
    assert radar == {"euclidean_distance": pytest.approx(0.5), "trajectory_mse": pytest.approx(0.5)}
    with pytest.raises(ValueError, match="identically zero"):
        teacher_scales(torch.zeros(3, 5, 4))

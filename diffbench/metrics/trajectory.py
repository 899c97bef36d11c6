"""Trajectory metrics (seeds 000/001): teacher vs student, guided vs unguided, from the same initial noise.

A trajectory is ``[S+1, B, ...]``: ``S`` sampling steps of ``B`` samples, from ``x_T`` (index 0) to ``x_0``
(index ``S``); the trailing dims are flattened, so ``x[s, b]`` is a point in ``R^D``. Two-trajectory metrics
compare sample ``b`` of one with sample ``b`` of the other at the same step. Everything is computed in float64.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from diffbench.metrics.distribution import wasserstein
from diffbench.metrics.registry import ARRAY, HIGHER, LOWER, NEITHER, QUALITY, Metric, declare

_COMPARISONS = (
    Metric("path_length_similarity", HIGHER, QUALITY, "mean min/max ratio of per-sample path lengths, in [0, 1]"),
    Metric("trajectory_mse", LOWER, QUALITY, "mean squared difference of the two trajectories over steps", True),
    Metric("directional_consistency", HIGHER, QUALITY, "mean cosine of consecutive step vectors (straightness)"),
    Metric("cosine_similarity", HIGHER, QUALITY, "cosine of the two step vectors, averaged over the steps"),
    Metric("euclidean_distance", LOWER, QUALITY, "distance of the two positions, averaged over steps 1..S"),
    Metric("endpoint_distance", LOWER, QUALITY, "mean distance between the two final samples"),
    Metric("wasserstein_endpoint", LOWER, QUALITY, "W2 between the two sets of final samples"),
    Metric("wasserstein_stepwise", LOWER, QUALITY, "W2 between the two sets of points, averaged over steps 1..S"),
)
declare(
    *_COMPARISONS,
    *(
        Metric(f"radar_{m.name}", HIGHER, QUALITY, f"{m.name} mapped to [0, 1], 1 best (normalize_for_radar)")
        for m in _COMPARISONS
    ),
    Metric("stepwise_cosine", HIGHER, QUALITY, "cosine of the two step vectors ending at one step (series)"),
    Metric("stepwise_distance", LOWER, QUALITY, "distance of the two positions at one step (series over steps)"),
    Metric("stepwise_wasserstein", LOWER, QUALITY, "W2 of the two point sets at one step (series over steps)"),
    Metric("explained_variance", NEITHER, QUALITY, "cumulative PCA variance share of k components (series in k)"),
    Metric("trajectory_pca", NEITHER, ARRAY, "trajectories projected into the teacher's PCA frame (array)"),
)
# Which scalar of ``compare_trajectories`` is better when higher; the default for ``normalize_for_radar``.
HIGHER_IS_BETTER: dict[str, bool] = {m.name: m.direction == HIGHER for m in _COMPARISONS}


def _flat(traj: Tensor, name: str = "traj", min_points: int = 1) -> Tensor:
    """``[S+1, B, ...]`` -> float64 ``[S+1, B, D]``."""
    traj = torch.as_tensor(traj).detach()
    if traj.ndim < 2:
        raise ValueError(f"{name} must be a trajectory [S+1, B, ...], got shape {tuple(traj.shape)}")
    if len(traj) < min_points:
        raise ValueError(f"{name} needs at least {min_points} points along the trajectory, got {len(traj)}")
    if not bool(torch.isfinite(traj).all()):
        raise ValueError(f"{name} contains NaN or inf")
    return traj.double().cpu().reshape(traj.shape[0], traj.shape[1], -1)


def _pair(a: Tensor, b: Tensor, min_points: int = 1) -> tuple[Tensor, Tensor]:
    if tuple(a.shape) != tuple(b.shape):
        raise ValueError(f"trajectories must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    return _flat(a, "a", min_points), _flat(b, "b", min_points)


def _cosine(u: Tensor, v: Tensor, eps: float = 1e-12) -> Tensor:
    """``u.v / max(|u| |v|, eps)`` over the last dim (0 when either vector is 0)."""
    return (u * v).sum(-1) / (u.norm(dim=-1) * v.norm(dim=-1)).clamp(min=eps)


def path_length(traj: Tensor) -> Tensor:
    """Per-sample path length ``[B]``: ``L_b = sum_{s=0}^{S-1} |x_{s+1,b} - x_{s,b}|``."""
    x = _flat(traj, min_points=2)
    return x.diff(dim=0).norm(dim=-1).sum(0)


def path_length_similarity(a: Tensor, b: Tensor) -> float:
    """``mean_b min(L_a, L_b) / max(L_a, L_b)`` in ``[0, 1]`` (1 for equal lengths; two zero lengths count as 1)."""
    a, b = _pair(a, b, min_points=2)
    la, lb = path_length(a), path_length(b)
    ratio = torch.minimum(la, lb) / torch.maximum(la, lb)
    return float(torch.where(torch.maximum(la, lb) > 0, ratio, torch.ones_like(ratio)).mean())


def trajectory_mse(a: Tensor, b: Tensor) -> float:
    """``mean_{s, b, d} (a_{s,b,d} - b_{s,b,d})^2`` over every step, sample and element."""
    a, b = _pair(a, b)
    return float((a - b).square().mean())


def directional_consistency(traj: Tensor) -> float:
    """Mean cosine between consecutive step vectors, ``mean_{s, b} cos(d_{s,b}, d_{s+1,b})`` with
    ``d_s = x_{s+1} - x_s``: 1 for a straight path walked in one direction, lower for a winding one."""
    steps = _flat(traj, min_points=3).diff(dim=0)
    return float(_cosine(steps[:-1], steps[1:]).mean())


def stepwise_cosine(a: Tensor, b: Tensor) -> Tensor:
    """``[S]``: ``mean_b cos(a_{s+1,b} - a_{s,b}, b_{s+1,b} - b_{s,b})``, the agreement of the two trajectories'
    step vectors; entry ``s - 1`` belongs to the step ending at position ``s``.

    Steps, not positions: positions share whatever both samples have in common (a digit's -1 background gives
    two unrelated digits a position cosine near 0.7), and a shared starting point is identical by construction.
    A step vector is the direction a sampler moves, so the cosine is 1 when both walk the same way and invariant
    to a common offset."""
    a, b = _pair(a, b, min_points=2)
    return _cosine(a.diff(dim=0), b.diff(dim=0)).mean(1)


def stepwise_distance(a: Tensor, b: Tensor) -> Tensor:
    """``[S+1]``: ``mean_b |a_{s,b} - b_{s,b}|`` (Euclidean) at each step."""
    a, b = _pair(a, b)
    return (a - b).norm(dim=-1).mean(1)


def endpoint_distance(a: Tensor, b: Tensor) -> float:
    """``mean_b |a_{S,b} - b_{S,b}|``: how far the final samples land from each other."""
    return float(stepwise_distance(a, b)[-1])


def endpoint_wasserstein(a: Tensor, b: Tensor) -> float:
    """``W2({a_{S,b}}_b, {b_{S,b}}_b)``: distance between the two sets of final samples as distributions (exact
    OT up to ``EXACT_W2_MAX_POINTS`` samples, sliced above; see ``distribution.wasserstein``)."""
    a, b = _pair(a, b)
    return wasserstein(a[-1], b[-1])


def stepwise_wasserstein(a: Tensor, b: Tensor) -> Tensor:
    """``[S+1]``: ``W2({a_{s,b}}_b, {b_{s,b}}_b)`` at each step."""
    a, b = _pair(a, b)
    return torch.tensor([wasserstein(xa, xb) for xa, xb in zip(a, b, strict=True)], dtype=torch.float64)


def stepwise_series(a: Tensor, b: Tensor) -> dict[str, list[tuple[int, float]]]:
    """Every per-step metric of ``a`` against ``b`` as ``(position, value)`` pairs, keyed by metric name:
    ``stepwise_distance`` and ``stepwise_wasserstein`` at positions ``0..S``, ``stepwise_cosine`` at the position
    where each step vector ends (``1..S``), so all series share one step axis."""
    series = {}
    for name, fn in (
        ("stepwise_cosine", stepwise_cosine),
        ("stepwise_distance", stepwise_distance),
        ("stepwise_wasserstein", stepwise_wasserstein),
    ):
        values = fn(a, b).tolist()
        first = len(a) - len(values)  # 1 for a series over step vectors, 0 for one over positions
        series[name] = list(enumerate(values, start=first))
    return series


def compare_trajectories(student: Tensor, teacher: Tensor) -> dict[str, float]:
    """Every scalar metric of ``student`` against ``teacher`` (same shape, same initial noise); the keys are
    ``HIGHER_IS_BETTER``'s. ``directional_consistency`` is the student's own; per-step metrics are averaged over
    the steps: ``cosine_similarity`` over the ``S`` step vectors, ``euclidean_distance`` and
    ``wasserstein_stepwise`` over positions ``1..S`` (position 0 is the shared noise, identical by construction,
    and would pull both towards agreement)."""
    student, teacher = _pair(student, teacher, min_points=3)
    return {
        "path_length_similarity": path_length_similarity(student, teacher),
        "trajectory_mse": trajectory_mse(student, teacher),
        "directional_consistency": directional_consistency(student),
        "cosine_similarity": float(stepwise_cosine(student, teacher).mean()),
        "euclidean_distance": float(stepwise_distance(student, teacher)[1:].mean()),
        "endpoint_distance": endpoint_distance(student, teacher),
        "wasserstein_endpoint": endpoint_wasserstein(student, teacher),
        "wasserstein_stepwise": float(stepwise_wasserstein(student, teacher)[1:].mean()),
    }


def teacher_scales(teacher: Tensor) -> dict[str, float]:
    """Natural scales for ``normalize_for_radar`` taken from the teacher's trajectory ``[S+1, B, ...]``: every
    distance is measured against the RMS norm of the teacher's points, ``r = sqrt(mean_{s,b} |x_{s,b}|^2)``, and
    the per-element ``trajectory_mse`` against ``r^2 / D`` (the teacher's mean squared element), so a radar value
    of 1/2 means an error as large as the signal itself."""
    points = _flat(teacher, "teacher")
    rms = float(points.pow(2).sum(-1).mean().sqrt())
    if not rms > 0:
        raise ValueError("the teacher trajectory is identically zero: no scale to normalise against")
    scales = {name: rms for name, higher in HIGHER_IS_BETTER.items() if not higher}
    scales["trajectory_mse"] = rms**2 / points.shape[-1]
    return scales


def normalize_for_radar(
    values: Mapping[str, float],
    higher_is_better: Mapping[str, bool] = HIGHER_IS_BETTER,
    scales: Mapping[str, float] | None = None,
) -> dict[str, float]:
    """Map each metric to ``[0, 1]`` with 1 the best, so every radar axis reads "further out is better".

    - higher is better (similarities: ratios in ``[0, 1]``, cosines in ``[-1, 1]``): ``clamp(v, 0, 1)``, i.e.
      as is, with an anti-aligned cosine counted as no agreement;
    - lower is better (distances, errors ``d >= 0``): ``1 / (1 + d / scale)``, 1 at ``d = 0``, 1/2 at
      ``d = scale`` (``scales[name]``, default 1), tending to 0.

    Both maps are monotone (non-decreasing in a higher-is-better value, decreasing in a distance).
    """
    scales = scales or {}
    unknown = sorted(set(values) - set(higher_is_better))
    if unknown:
        raise ValueError(f"no direction for metrics {unknown}; known: {sorted(higher_is_better)}")
    radar = {}
    for name, value in values.items():
        if math.isnan(value):
            raise ValueError(f"metric {name!r} is NaN")
        if higher_is_better[name]:
            radar[name] = min(max(value, 0.0), 1.0)
            continue
        scale = scales.get(name, 1.0)
        if value < 0 or not scale > 0:
            raise ValueError(f"distance {name!r} must be >= 0 with a scale > 0, got {value} (scale {scale})")
        radar[name] = 1.0 / (1.0 + value / scale)
    return radar


@dataclass(frozen=True, eq=False)
class TeacherFrame:
    """The teacher's PCA frame: every trajectory is projected onto the principal axes of the teacher's points.

    ``mean`` ``[D]`` and ``components`` ``[k, D]`` (orthonormal rows) in float64; ``explained_variance_ratio``
    ``[k]`` is each component's share of the teacher's *total* variance, so it sums to at most 1.
    """

    mean: Tensor
    components: Tensor
    explained_variance_ratio: Tensor
    sample_shape: tuple[int, ...]

    @classmethod
    def fit(cls, teacher_traj: Tensor, n_components: int = 3) -> TeacherFrame:
        """PCA of all ``(S+1) B`` teacher points ``X`` ``[N, D]``: centre ``X_c = X - mean``, SVD
        ``X_c = U diag(sigma) V^T``; the components are the first ``k`` rows of ``V^T`` and component ``i``
        explains ``sigma_i^2 / sum_j sigma_j^2`` of the variance."""
        x = _flat(teacher_traj, "teacher_traj")
        points = x.reshape(-1, x.shape[-1])
        if not 1 <= n_components <= min(points.shape):
            raise ValueError(
                f"n_components must be in [1, {min(points.shape)}] for {points.shape[0]} points in "
                f"{points.shape[1]} dims, got {n_components}"
            )
        mean = points.mean(0)
        _, sigma, vh = torch.linalg.svd(points - mean, full_matrices=False)
        variance = sigma.square()
        total = variance.sum()
        ratio = variance / total if total > 0 else torch.zeros_like(variance)
        return cls(mean, vh[:n_components], ratio[:n_components], tuple(teacher_traj.shape[2:]))

    @property
    def n_components(self) -> int:
        return len(self.components)

    def project(self, traj: Tensor) -> Tensor:
        """``[S+1, B, ...]`` -> coordinates ``[S+1, B, k]`` in the frame: ``z = (x - mean) V_k^T``."""
        x = _flat(traj)
        if x.shape[-1] != self.mean.shape[0]:
            raise ValueError(
                f"trajectory points have {x.shape[-1]} dims (shape {tuple(traj.shape)}), the frame "
                f"{self.mean.shape[0]} (sample shape {self.sample_shape})"
            )
        return (x - self.mean) @ self.components.T

    def reconstruct(self, coords: Tensor) -> Tensor:
        """Coordinates ``[S+1, B, k]`` -> points ``[S+1, B, *sample_shape]``: ``x = z V_k + mean`` (exact for
        points in the span of the ``k`` components)."""
        if coords.shape[-1] != self.n_components:
            raise ValueError(f"coords must end in {self.n_components} components, got shape {tuple(coords.shape)}")
        points = coords.double() @ self.components + self.mean
        return points.reshape(*coords.shape[:-1], *self.sample_shape)


def explained_variance_curve(traj: Tensor, max_components: int) -> Tensor:
    """Cumulative explained-variance ratio ``[max_components]`` of a PCA on ``traj``'s own points: entry
    ``k - 1`` is ``sum_{i<=k} sigma_i^2 / sum_j sigma_j^2``, the share of the trajectory space spanned by its first
    ``k`` principal directions (the dimensionality analysis)."""
    return TeacherFrame.fit(traj, max_components).explained_variance_ratio.cumsum(0)

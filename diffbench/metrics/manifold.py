"""Improved precision and recall (Kynkäänniemi et al. 2019) between real features ``[n, d]`` and generated ``[m, d]``.

Each sample set stands for its manifold, estimated as the union of balls ``B(x, r_k(x))`` centred at its points,
``r_k(x)`` the distance from ``x`` to its ``k``-th nearest neighbour in the same set (the point itself excluded):

    ``f(y, X) = 1  if  |y - x| <= r_k(x)  for some x in X,  else 0``            (paper, eq. 1)
    ``precision = (1/m) sum_j f(fake_j, Real)``,  ``recall = (1/n) sum_i f(real_i, Fake)``   (paper, eq. 2)

Precision measures fidelity (generated samples fall where real data lives), recall measures coverage (real data
is reached by some generated sample): a generator that drops modes keeps its precision and loses recall, one that
spreads mass off the data keeps recall and loses precision. The paper uses ``k = 3`` on VGG-16 features of 50,000
images per set. Both numbers depend on the sample sizes (the balls shrink as a set grows), so compare them only at
equal ``n`` and ``m``.

Numerics: squared distances are computed in float64 from the Gram matrix, ``|a - b|^2 = |a|^2 + |b|^2 - 2 a.b``
(BLAS speed), in blocks of ``batch_size`` rows. Its rounding error is bounded (Higham 2002, §3.1:
``|fl(a.b) - a.b| <= gamma_d |a| |b|``, ``gamma_d ~ d eps``), so every comparison the Gram value cannot settle -
within that bound of a radius: duplicates, exact ties - is redone with the direct sum ``sum_l (a_l - b_l)^2``, which
is exactly 0 for equal points and symmetric. Every decision is therefore that of the direct O(n m d) computation,
independent of ``batch_size``, and ties count as inside (``<=``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from diffbench.metrics.registry import HIGHER, QUALITY, Metric, declare

DEFAULT_K = 3  # the paper's neighbourhood size
DEFAULT_BATCH_SIZE = 1024  # rows per distance block: 1024 x 10,000 float64 = 82 MB

declare(
    Metric(
        "precision",
        HIGHER,
        QUALITY,
        "share of generated samples inside the real k-NN manifold (balls to each point's k-th neighbour; "
        "Kynkaanniemi et al. 2019)",
    ),
    Metric(
        "recall",
        HIGHER,
        QUALITY,
        "share of real samples inside the generated k-NN manifold (balls to each point's k-th neighbour; "
        "Kynkaanniemi et al. 2019)",
    ),
)


@dataclass(frozen=True)
class PrecisionRecall:
    """Improved precision and recall at neighbourhood size ``k`` on ``n_real`` real and ``n_fake`` generated points."""

    precision: float
    recall: float
    k: int
    n_real: int
    n_fake: int


def _features(x: Tensor | np.ndarray, name: str) -> Tensor:
    """``x`` as a float64 CPU tensor ``[n, d]`` (trailing dims flattened); ValueError for empty or non-finite input."""
    x = torch.as_tensor(x).detach().to("cpu", torch.float64)
    if x.ndim < 2:
        raise ValueError(f"{name} must be [n, d] (images [n, ...] are flattened), got shape {tuple(x.shape)}")
    x = x.reshape(len(x), -1)
    if x.shape[1] == 0:
        raise ValueError(f"{name} has no feature dimensions, got shape {tuple(x.shape)}")
    bad = int((~torch.isfinite(x)).sum())
    if bad:
        raise ValueError(f"{name} contains {bad} NaN or inf values")
    return x


def _check_k(k: int, size: int, name: str) -> None:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be an integer >= 1, got {k!r}")
    if size < k + 1:
        raise ValueError(f"{name} needs at least k + 1 = {k + 1} points for k = {k}, got {size}")


def _check_batch_size(batch_size: int) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")


def _gram_sq(a: Tensor, b: Tensor, a2: Tensor, b2: Tensor) -> Tensor:
    """``|a_i - b_j|^2 = |a_i|^2 + |b_j|^2 - 2 a_i.b_j`` for a block of rows, clamped at 0 (fast, rounded)."""
    return (a2[:, None] + b2[None, :] - 2.0 * (a @ b.T)).clamp_min_(0.0)


def _direct_sq(a: Tensor, b: Tensor, rows: Tensor, cols: Tensor, max_elements: int) -> Tensor:
    """``sum_l (a[rows]_l - b[cols]_l)^2`` pair by pair (exactly 0 for equal points, symmetric), in slices of at
    most ``max_elements`` floats."""
    out = torch.empty(len(rows), dtype=torch.float64)
    step = max(1, max_elements // a.shape[1])
    for s in range(0, len(rows), step):
        out[s : s + step] = (a[rows[s : s + step]] - b[cols[s : s + step]]).square().sum(1)
    return out


def _tolerance(*sets: Tensor) -> float:
    """Bound on ``|Gram value - direct value|`` of a squared distance between points of ``sets``.

    With ``gamma_d = d eps / (1 - d eps)`` (Higham 2002, §3.1): ``fl(|a|^2)`` errs by ``<= gamma_d |a|^2``,
    ``2 fl(a.b)`` by ``<= 2 gamma_d |a||b| <= gamma_d (|a|^2 + |b|^2)``, the two additions by ``<= 4 eps (|a|^2 +
    |b|^2)``, and the direct sum by ``<= gamma_d |a - b|^2 <= 2 gamma_d (|a|^2 + |b|^2)``: together under
    ``4 (d + 2) eps (|a|^2 + |b|^2) <= 8 (d + 2) eps max|x|^2``. Twice that is used, for margin.
    """
    d = sets[0].shape[1]
    max_sq = max(float(x.square().sum(1).max()) for x in sets)
    return 8.0 * (d + 2) * float(np.finfo(np.float64).eps) * 2.0 * max_sq


def _knn_radii_sq(x: Tensor, k: int, batch_size: int, tol: float) -> Tensor:
    """Squared distance from each point of ``x`` to its ``k``-th nearest neighbour in ``x``, itself excluded."""
    n = len(x)
    sq = x.square().sum(1)
    radii = torch.empty(n, dtype=torch.float64)
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        d2 = _gram_sq(x[start:stop], x, sq[start:stop], sq)
        local = torch.arange(stop - start)
        d2[local, start + local] = 0.0  # the point itself (exactly 0): the (k+1)-th smallest is its k-th neighbour
        v = d2.topk(k + 1, dim=1, largest=False).values[:, -1]  # (k+1)-th smallest
        # The k+1 smallest direct values are all <= v + tol, so any point whose direct value could be among them has
        # a Gram value <= v + 2 tol: recompute those directly and select among them.
        rows, cols = torch.nonzero(d2 <= (v + 2.0 * tol)[:, None], as_tuple=True)
        exact = torch.full_like(d2, float("inf"))
        exact[rows, cols] = _direct_sq(x[start:stop], x, rows, cols, d2.numel())
        radii[start:stop] = exact.topk(k + 1, dim=1, largest=False).values[:, -1]
    return radii


def knn_radii(x: Tensor | np.ndarray, k: int = DEFAULT_K, *, batch_size: int = DEFAULT_BATCH_SIZE) -> Tensor:
    """``r_k(x_i)``: Euclidean distance from each point to its ``k``-th nearest neighbour in the same set (the point
    itself excluded, duplicates of it not), float64 ``[n]``; the radii of the balls whose union is the k-NN manifold."""
    x = _features(x, "x")
    _check_k(k, len(x), "x")
    _check_batch_size(batch_size)
    return _knn_radii_sq(x, k, batch_size, _tolerance(x)).sqrt()


def precision_recall(
    real: Tensor | np.ndarray,
    fake: Tensor | np.ndarray,
    k: int = DEFAULT_K,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> PrecisionRecall:
    """Improved precision and recall of Kynkäänniemi et al. 2019 (eqs. 1-2, see the module docstring).

    ``precision = (1/m) sum_j [exists i: |fake_j - real_i| <= r_k(real_i)]`` and
    ``recall = (1/n) sum_i [exists j: |real_i - fake_j| <= r_k(fake_j)]``, radii within each set's own points.
    Images are flattened; distances are float64, computed in blocks of ``batch_size`` generated points against all
    real points (one real-real, one fake-fake and one shared fake-real pass). The result does not depend on
    ``batch_size``.
    """
    real, fake = _features(real, "real"), _features(fake, "fake")
    if real.shape[1] != fake.shape[1]:
        raise ValueError(f"real and fake must have the same dimension, got {real.shape[1]} and {fake.shape[1]}")
    _check_k(k, len(real), "real")
    _check_k(k, len(fake), "fake")
    _check_batch_size(batch_size)
    tol = _tolerance(real, fake)
    r_real, r_fake = _knn_radii_sq(real, k, batch_size, tol), _knn_radii_sq(fake, k, batch_size, tol)
    sq_real, sq_fake = real.square().sum(1), fake.square().sum(1)
    fake_inside = torch.zeros(len(fake), dtype=torch.bool)  # fake_j in the real manifold
    real_inside = torch.zeros(len(real), dtype=torch.bool)  # real_i in the generated manifold
    for start in range(0, len(fake), batch_size):
        stop = min(start + batch_size, len(fake))
        d2 = _gram_sq(fake[start:stop], real, sq_fake[start:stop], sq_real)  # [b, n]: fake rows, real columns

        # Precision: is fake_j (row) inside the ball of some real_i (column), d2[j, i] <= r_real[i]?
        gap = d2 - r_real[None, :]
        fake_inside[start:stop] = (gap <= -tol).any(1)  # certainly inside, whatever the rounding
        rows, cols = torch.nonzero((gap.abs() <= tol) & ~fake_inside[start:stop, None], as_tuple=True)
        hit = _direct_sq(fake[start:stop], real, rows, cols, d2.numel()) <= r_real[cols]
        fake_inside[start + rows[hit]] = True

        # Recall: is real_i (column) inside the ball of some fake_j (row), d2[j, i] <= r_fake[j]?
        gap = d2 - r_fake[start:stop, None]
        real_inside |= (gap <= -tol).any(0)
        rows, cols = torch.nonzero((gap.abs() <= tol) & ~real_inside[None, :], as_tuple=True)
        hit = _direct_sq(fake[start:stop], real, rows, cols, d2.numel()) <= r_fake[start + rows]
        real_inside[cols[hit]] = True
    return PrecisionRecall(
        precision=float(fake_inside.double().mean()),
        recall=float(real_inside.double().mean()),
        k=int(k),
        n_real=len(real),
        n_fake=len(fake),
    )

"""Distribution metrics between sample sets ``x`` ``[n, d]`` and ``y`` ``[m, d]`` (images are flattened)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from diffbench.metrics.registry import HIGHER, LOWER, NEITHER, QUALITY, Metric, declare
from diffbench.models import device_of
from diffbench.schedules import NoiseSchedule

# Exact OT is O(n^3) in time and O(n m) in memory: ``wasserstein`` refuses sets larger than this (use
# ``sliced_wasserstein``, a different quantity recorded under its own name).
EXACT_W2_MAX_POINTS = 5000
# MMD bandwidths from the reference set: its median pairwise distance, halved this many times (7 kernels).
MMD_OCTAVES = 6

declare(
    Metric(
        "mmd_rbf",
        LOWER,
        QUALITY,
        "unbiased MMD^2, one RBF kernel at the median-heuristic bandwidth of the pooled samples (seed 002's MMD)",
    ),
    Metric(
        "mmd_multiscale",
        LOWER,
        QUALITY,
        "unbiased MMD^2, sum of RBF kernels at bandwidths fixed from the reference set (median distance / 2^j)",
    ),
    Metric("mmd_linear", LOWER, QUALITY, "unbiased MMD^2, linear kernel: squared distance of the means", True),
    Metric("wasserstein", LOWER, QUALITY, "W2 between samples and held-out data, exact optimal transport", True),
    Metric(
        "wasserstein_sliced",
        LOWER,
        QUALITY,
        "sliced W2 between samples and held-out data (256 random directions; smaller than W2)",
        True,
    ),
    Metric("test_loss", LOWER, QUALITY, "held-out noise-prediction MSE E|eps - eps_theta(x_t, t)|^2", True),
    Metric("sample_std", NEITHER, QUALITY, "standard deviation of all sample coordinates", True),
    Metric("sample_range", NEITHER, QUALITY, "max - min over all sample coordinates", True),
    Metric("radius_mean", NEITHER, QUALITY, "mean distance of 2-D samples from the origin (GMM ring: 5)"),
    Metric("radius_std", NEITHER, QUALITY, "spread of the 2-D samples' distance from the origin", True),
    Metric("modes_covered", HIGHER, QUALITY, "GMM components holding >= 10% of their share of good samples"),
    Metric("high_quality_fraction", HIGHER, QUALITY, "share of samples within 3 std of a GMM mean"),
    Metric("mode_balance", HIGHER, QUALITY, "normalised entropy of the good samples' mode histogram (1 = even)"),
)


def _flat(x: Tensor, name: str) -> Tensor:
    x = torch.as_tensor(x).detach().double().cpu()
    if x.ndim == 0 or len(x) < 2:
        raise ValueError(f"{name} needs at least 2 samples, got {len(x) if x.ndim else 0}")
    x = x.reshape(len(x), -1)
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains NaN or inf")
    return x


def _pair(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    x, y = _flat(x, "x"), _flat(y, "y")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must have the same dimension, got {x.shape[1]} and {y.shape[1]}")
    return x, y


def median_bandwidth(x: Tensor, y: Tensor) -> float:
    """Median heuristic (Gretton et al. 2012): median pairwise distance over the pooled sample."""
    return float(torch.pdist(torch.cat(_pair(x, y))).median())


def reference_bandwidths(reference: Tensor, octaves: int = MMD_OCTAVES, max_points: int = 2000) -> tuple[float, ...]:
    """Bandwidths ``h_j = h_0 / 2^j`` for ``j = 0..octaves``, ``h_0`` the median pairwise distance of the
    *reference* set (its first ``max_points`` points): fixed by the data, so every checkpoint of a run is scored
    with the same kernel. On the 2-D GMM ring (radius 5, component std 0.2) ``h_0 ~ 7`` and the ladder reaches
    0.11, spanning the ring down to a component."""
    if octaves < 0:
        raise ValueError(f"octaves must be >= 0, got {octaves}")
    h0 = float(torch.pdist(_flat(reference, "reference")[:max_points]).median())
    if not h0 > 0:
        raise ValueError(f"the reference set's median pairwise distance is {h0}; bandwidths need it > 0")
    return tuple(h0 / 2**j for j in range(octaves + 1))


@dataclass(frozen=True)
class PairwiseSq:
    """Squared Euclidean distances within ``x`` (``xx`` ``[n, n]``), within ``y`` (``yy`` ``[m, m]``) and across
    (``xy`` ``[n, m]``): computed once, shared by every kernel evaluated on the pair."""

    xx: Tensor
    yy: Tensor
    xy: Tensor

    @classmethod
    def of(cls, x: Tensor, y: Tensor) -> PairwiseSq:
        x, y = _pair(x, y)
        return cls(torch.cdist(x, x).square(), torch.cdist(y, y).square(), torch.cdist(x, y).square())

    def median_distance(self) -> float:
        """The median heuristic from these matrices: the pooled sample's pairs are the pairs within ``x``, within
        ``y`` and across, so this is :func:`median_bandwidth` (same median element; sqrt is monotone)."""
        n, m = len(self.xx), len(self.yy)
        within_x = self.xx[torch.triu_indices(n, n, 1).unbind()]
        within_y = self.yy[torch.triu_indices(m, m, 1).unbind()]
        return float(torch.cat([within_x, within_y, self.xy.reshape(-1)]).median().sqrt())

    def mmd(self, bandwidths: tuple[float, ...]) -> float:
        """Unbiased MMD^2 (Gretton et al. 2012, eq. 3) with ``k(a, b) = sum_h exp(-|a - b|^2 / (2 h^2))``:
        ``MMD_u^2 = sum_{i!=j} k(x_i,x_j)/(n(n-1)) + sum_{i!=j} k(y_i,y_j)/(m(m-1)) - 2 sum k(x_i,y_j)/(nm)``.
        Unbiased, so it can be slightly negative when the distributions agree."""
        bandwidths = tuple(float(h) for h in bandwidths)
        if not bandwidths or not all(h > 0 for h in bandwidths):
            raise ValueError(f"bandwidths must be a non-empty sequence of values > 0, got {bandwidths}")
        kxx, kyy = _rbf_sum(self.xx, bandwidths), _rbf_sum(self.yy, bandwidths)
        n, m = len(kxx), len(kyy)
        xx = (kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))
        yy = (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
        return float(xx + yy - 2 * _rbf_sum(self.xy, bandwidths).mean())


def _rbf_sum(sq_dist: Tensor, bandwidths: tuple[float, ...]) -> Tensor:
    """``sum_h exp(-d^2 / (2 h^2))`` elementwise over a matrix of squared distances. Along a halving ladder
    (``h' = h / 2``) the next kernel is the fourth power of the previous one, ``exp(-4a) = exp(-a)^4``: two
    multiplications instead of an exp."""
    total, previous, last_h = torch.zeros_like(sq_dist), None, None
    for h in bandwidths:
        if previous is not None and h == last_h / 2:
            previous = previous.square().square()
        else:
            previous = torch.exp(-sq_dist / (2 * h * h))
        total += previous
        last_h = h
    return total


def mmd_multiscale(x: Tensor, y: Tensor, bandwidths: tuple[float, ...] | None = None) -> float:
    """Unbiased MMD^2 (:meth:`PairwiseSq.mmd`) with ``k(a, b) = sum_h exp(-|a - b|^2 / (2 h^2))`` over
    ``bandwidths`` (default :func:`reference_bandwidths` of ``y``, the reference set). A sum of characteristic
    kernels is characteristic, and MMD^2 of a sum kernel is the sum of each kernel's MMD^2, so the narrow kernels
    resolve differences at the data's fine scale (a blurred mode) that one wide median-heuristic kernel averages
    away."""
    x, y = _pair(x, y)
    return PairwiseSq.of(x, y).mmd(reference_bandwidths(y) if bandwidths is None else bandwidths)


def mmd_rbf(x: Tensor, y: Tensor, bandwidth: float | None = None) -> float:
    """Unbiased MMD^2 (:meth:`PairwiseSq.mmd`) with ``k(a, b) = exp(-|a - b|^2 / (2 h^2))``, ``h`` the median
    heuristic of the pooled sample unless given. That ``h`` moves with the samples (a different kernel at every
    checkpoint) and on multi-scale data is set by the largest scale: see :func:`mmd_multiscale`."""
    distances = PairwiseSq.of(x, y)
    h = distances.median_distance() if bandwidth is None else bandwidth
    if not h > 0:
        raise ValueError(f"bandwidth must be > 0, got {h}")
    return distances.mmd((h,))


def mmd_linear(x: Tensor, y: Tensor) -> float:
    """Unbiased MMD^2 with the linear kernel ``k(a, b) = a.b``; its expectation is ``|mu_x - mu_y|^2``.
    ``sum_{i!=j} x_i.x_j = |sum_i x_i|^2 - sum_i |x_i|^2``, so this is O((n + m) d)."""
    x, y = _pair(x, y)
    n, m = len(x), len(y)
    sx, sy = x.sum(0), y.sum(0)
    kxx = (sx.dot(sx) - x.square().sum()) / (n * (n - 1))
    kyy = (sy.dot(sy) - y.square().sum()) / (m * (m - 1))
    return float(kxx + kyy - 2 * sx.dot(sy) / (n * m))


def wasserstein(x: Tensor, y: Tensor, *, exact_max_points: int = EXACT_W2_MAX_POINTS) -> float:
    """Exact 2-Wasserstein distance between the empirical measures of ``x`` and ``y``: the optimal-transport
    linear programme ``W2^2 = min_{P in U(a, b)} sum_ij P_ij |x_i - y_j|^2`` with uniform ``a``, ``b``, solved
    by POT's network simplex (``ot.emd2``). Sets above ``exact_max_points`` points are refused rather than
    silently replaced by another quantity: :func:`sliced_wasserstein` is recorded under its own name.

    Between two finite samples of one law W2 is not 0: its floor shrinks slowly with n (about 0.55 at
    n = m = 2000 on the 2-D GMM ring), so compare models at equal n and against that floor."""
    x, y = _pair(x, y)
    if max(len(x), len(y)) > exact_max_points:
        raise ValueError(
            f"exact W2 is limited to {exact_max_points} points per set (O(n^3) time, O(nm) memory), got "
            f"{len(x)} and {len(y)}; use sliced_wasserstein (recorded as wasserstein_sliced) or fewer samples"
        )
    cost = torch.cdist(x, y).square().numpy()
    a, b = np.full(len(x), 1 / len(x)), np.full(len(y), 1 / len(y))
    import ot  # POT pulls in SciPy: imported by the cells that need exact OT, not by every worker

    return float(np.sqrt(max(ot.emd2(a, b, cost, numItermax=10_000_000), 0.0)))


def sliced_wasserstein(
    x: Tensor, y: Tensor, num_projections: int = 256, generator: torch.Generator | None = None
) -> float:
    """Sliced W2 (Bonneel et al. 2015): ``sqrt(E_theta W2^2(theta.x, theta.y))`` over ``num_projections``
    random unit directions from ``generator`` (default seed 0), each 1-D W2 via quantile functions on a common
    grid. Smaller than W2 in general (for a translation by ``delta`` its expectation is ``|delta|^2 / d`` under
    the square root)."""
    x, y = _pair(x, y)
    generator = generator or torch.Generator().manual_seed(0)
    theta = torch.randn(x.shape[1], num_projections, generator=generator, dtype=torch.float64)
    theta = theta / theta.norm(dim=0, keepdim=True)
    px, py = (x @ theta).sort(dim=0).values, (y @ theta).sort(dim=0).values
    q = torch.linspace(0, 1, max(len(x), len(y)), dtype=torch.float64)
    qx = torch.quantile(px, q, dim=0) if len(x) != len(q) else px
    qy = torch.quantile(py, q, dim=0) if len(y) != len(q) else py
    return float((qx - qy).square().mean().sqrt())


@torch.no_grad()
def noise_prediction_loss(
    model: nn.Module,
    schedule: NoiseSchedule,
    x0: Tensor,
    generator: torch.Generator,
    *,
    cond: dict | None = None,
    batch_size: int = 4096,
) -> float:
    """Held-out epsilon loss ``E_{t, eps} |eps - eps_theta(x_t, t)|^2`` (mean over elements), with ``t`` and
    ``eps`` drawn from ``generator`` so two models are compared on identical noise."""
    device = device_of(model)
    cond = cond or {}
    total, count = 0.0, 0
    for start in range(0, len(x0), batch_size):
        batch = x0[start : start + batch_size].to(device)
        t = torch.randint(schedule.num_steps, (len(batch),), generator=generator)
        noise = torch.randn(batch.shape, generator=generator).to(device)
        x_t = schedule.add_noise(batch, t.to(device), noise)
        part = {k: v[start : start + batch_size].to(device) for k, v in cond.items()}
        total += float(((model(x_t, t.to(device), **part) - noise) ** 2).sum())
        count += noise.numel()
    return total / count


@dataclass(frozen=True)
class ModeStats:
    """Mode statistics of 2-D samples against a mixture's means (Srivastava et al. 2017, VEEGAN).

    A sample is *high quality* when it lies within ``3 std`` of its nearest mean; a mode is *covered* when it
    holds at least ``min_fraction`` of its fair share (``n / K``) of high-quality samples. ``balance`` is the
    normalised entropy of the high-quality samples' mode histogram (1 = perfectly even, 0 = one mode)."""

    covered: int
    num_modes: int
    high_quality_fraction: float
    balance: float
    counts: tuple[int, ...]


def mode_coverage(samples: Tensor, means: Tensor, std: float, min_fraction: float = 0.1) -> ModeStats:
    samples, means = _flat(samples, "samples").float(), torch.as_tensor(means).float()
    if means.ndim != 2 or means.shape[1] != samples.shape[1]:
        raise ValueError(
            f"means must have the samples' dimension {samples.shape[1]} ([K, {samples.shape[1]}]), "
            f"got shape {tuple(means.shape)}"
        )
    dist = torch.cdist(samples, means)
    nearest_dist, nearest = dist.min(dim=1)
    good = nearest_dist <= 3 * std
    counts = torch.bincount(nearest[good], minlength=len(means))
    covered = int((counts >= min_fraction * len(samples) / len(means)).sum())
    p = counts.double() / counts.sum().clamp(min=1)
    entropy = -(p[p > 0] * p[p > 0].log()).sum()
    return ModeStats(
        covered=covered,
        num_modes=len(means),
        high_quality_fraction=float(good.double().mean()),
        balance=float(entropy / np.log(len(means))),
        counts=tuple(int(c) for c in counts),
    )


def sample_stats(samples: Tensor) -> dict[str, float]:
    """Spread of a sample set: overall std, value range, and (for 2-D) mean and std of the radius."""
    x = _flat(samples, "samples")
    stats = {"sample_std": float(x.std()), "sample_range": float(x.max() - x.min())}
    if x.shape[1] == 2:
        radius = x.norm(dim=1)
        stats |= {"radius_mean": float(radius.mean()), "radius_std": float(radius.std())}
    return stats

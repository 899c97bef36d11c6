"""Distribution metrics against brute force, closed forms and invariants."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn

from diffbench.data import GMM, DataConfig, load_dataset
from diffbench.metrics.distribution import (
    median_bandwidth,
    mmd_linear,
    mmd_multiscale,
    mmd_rbf,
    mode_coverage,
    noise_prediction_loss,
    reference_bandwidths,
    sample_stats,
    sliced_wasserstein,
    wasserstein,
)
from diffbench.schedules import NoiseSchedule


def _normal(n: int, d: int, seed: int, shift: float | list[float] = 0.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=torch.float64) + torch.as_tensor(shift, dtype=torch.float64)


# ------------------------------------------------------------------------------------------------- MMD


def _mmd_brute(x: torch.Tensor, y: torch.Tensor, k) -> float:
    """Unbiased MMD^2 (Gretton et al. 2012, eq. 3) as the literal double sums."""
    xs, ys = x.tolist(), y.tolist()
    n, m = len(xs), len(ys)
    kxx = sum(k(xs[i], xs[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    kyy = sum(k(ys[i], ys[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    kxy = sum(k(a, b) for a in xs for b in ys) / (n * m)
    return kxx + kyy - 2 * kxy


def _dot(a: list[float], b: list[float]) -> float:
    return sum(u * v for u, v in zip(a, b, strict=True))


def test_mmd_linear_equals_the_double_sum():
    x, y = _normal(7, 3, 0), _normal(5, 3, 1, shift=0.5)
    assert mmd_linear(x, y) == pytest.approx(_mmd_brute(x, y, _dot), abs=1e-10)


@pytest.mark.parametrize("h", [0.3, 1.0, 2.5])
def test_mmd_rbf_equals_the_double_sum(h):
    x, y = _normal(7, 3, 2), _normal(5, 3, 3, shift=0.5)

    def k(a, b):
        return math.exp(-sum((u - v) ** 2 for u, v in zip(a, b, strict=True)) / (2 * h * h))

    assert mmd_rbf(x, y, bandwidth=h) == pytest.approx(_mmd_brute(x, y, k), abs=1e-10)


def test_median_bandwidth_is_the_median_pairwise_distance():
    x, y = _normal(4, 2, 4), _normal(2, 2, 5)  # 6 pooled points: 15 pairs, an unambiguous median
    pooled = torch.cat([x, y]).tolist()
    dists = sorted(math.dist(a, b) for a, b in itertools.combinations(pooled, 2))
    assert median_bandwidth(x, y) == pytest.approx(dists[7], rel=1e-12)


def test_mmd_multiscale_equals_the_double_sum_of_the_sum_kernel():
    x, y = _normal(9, 3, 31), _normal(7, 3, 32, shift=0.5)
    hs = (0.3, 1.0, 4.0)

    def k(a, b):
        sq = sum((u - v) ** 2 for u, v in zip(a, b, strict=True))
        return sum(math.exp(-sq / (2 * h * h)) for h in hs)

    assert mmd_multiscale(x, y, hs) == pytest.approx(_mmd_brute(x, y, k), abs=1e-10)
    # MMD^2 of a sum kernel is the sum of the kernels' MMD^2
    assert mmd_multiscale(x, y, hs) == pytest.approx(sum(mmd_rbf(x, y, bandwidth=h) for h in hs), abs=1e-10)


def test_reference_bandwidths_halve_from_the_reference_median_distance():
    y = _normal(50, 2, 33)
    hs = reference_bandwidths(y, octaves=3)
    assert hs[0] == pytest.approx(float(torch.pdist(y).median()), rel=1e-12)
    assert hs == pytest.approx(tuple(hs[0] / 2**j for j in range(4)), rel=1e-12)
    # the default kernel is fixed by the reference set alone: the compared samples (here 10x wider) do not move it
    x = 10 * _normal(30, 2, 34)
    assert mmd_multiscale(x, y) == mmd_multiscale(x, y, reference_bandwidths(y))


def _gmm_draw(n: int, seed: int, blur: float = 0.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x, _ = GMM.sample(n, g)
    return x + blur * torch.randn(n, 2, generator=g)


def test_multiscale_mmd_orders_gmm_blur_like_w2_where_the_median_kernel_cannot():
    """Samples of the 2-D GMM ring (radius 5, component std 0.2) against a held-out set, n = 2000, 3 draws per
    configuration: perfect, blurred by N(0, 1) and by N(0, 2^2). W2 separates all three (gaps > 3 sd of its draw
    spread); the multi-scale MMD ranks them the same way with the same margin; the median-heuristic kernel (h ~ 7,
    the ring's scale) cannot tell perfect from blur 1.0 by the same criterion."""
    reference = _gmm_draw(2000, 999)
    configs = {"perfect": 0.0, "blur1": 1.0, "blur2": 2.0}
    values = {
        name: torch.tensor(
            [
                [wasserstein(x, reference), mmd_multiscale(x, reference), mmd_rbf(x, reference)]
                for x in (_gmm_draw(2000, seed, blur) for seed in range(3))
            ],
            dtype=torch.float64,
        )
        for name, blur in configs.items()
    }

    def separated(a: str, b: str, column: int) -> float:
        """(mean_b - mean_a) / pooled sd of one metric: > 0 when b is ranked worse."""
        va, vb = values[a][:, column], values[b][:, column]
        return float((vb.mean() - va.mean()) / ((va.var() + vb.var()) / 2).sqrt())

    for a, b in (("perfect", "blur1"), ("blur1", "blur2")):
        assert separated(a, b, 0) > 3, ("W2", a, b)
        assert separated(a, b, 1) > 3, ("multiscale MMD", a, b)
    assert abs(separated("perfect", "blur1", 2)) < 3  # the same criterion: the median kernel does not separate


def test_mmd_is_symmetric():
    x, y = _normal(30, 2, 6), _normal(40, 2, 7, shift=1.0)
    assert mmd_linear(x, y) == pytest.approx(mmd_linear(y, x), abs=1e-12)
    assert mmd_rbf(x, y) == pytest.approx(mmd_rbf(y, x), abs=1e-12)


@pytest.mark.parametrize("mmd", [mmd_rbf, mmd_linear], ids=["rbf", "linear"])
def test_mmd_near_zero_for_same_law_and_positive_for_a_shift(mmd):
    x, same, shifted = _normal(600, 2, 10), _normal(600, 2, 11), _normal(600, 2, 12, shift=[1.0, 0.0])
    gap = mmd(x, shifted)
    assert gap > 0.1
    assert abs(mmd(x, same)) < 0.1 * gap


def test_mmd_linear_expectation_is_the_squared_mean_gap():
    delta = torch.tensor([1.0, -2.0], dtype=torch.float64)
    x, y = _normal(4000, 2, 13), _normal(4000, 2, 14, shift=delta.tolist())
    # estimator std ~ sqrt(4 |delta|^2 (1/n + 1/m)) = 0.1: 5 sigma
    assert mmd_linear(x, y) == pytest.approx(float(delta.square().sum()), abs=0.5)


def test_mmd_accepts_images_by_flattening():
    x, y = _normal(8, 12, 15).reshape(8, 3, 2, 2), _normal(6, 12, 16).reshape(6, 3, 2, 2)
    assert mmd_linear(x, y) == pytest.approx(mmd_linear(x.reshape(8, -1), y.reshape(6, -1)), abs=1e-12)


# ------------------------------------------------------------------------------------------- Wasserstein


@pytest.mark.parametrize("d", [1, 2, 5])
def test_w2_of_a_translate_is_the_shift_norm(d):
    x = _normal(50, d, 20)
    delta = torch.linspace(-1.5, 2.0, d, dtype=torch.float64)
    assert wasserstein(x, x + delta) == pytest.approx(float(delta.norm()), rel=1e-7)
    assert wasserstein(x, x) == pytest.approx(0.0, abs=1e-7)


def test_w2_matches_brute_force_over_all_permutations():
    """Uniform measures of equal size: an optimal plan is a permutation (Birkhoff), so
    W2^2 = min_sigma mean_i |x_i - y_sigma(i)|^2."""
    x, y = _normal(6, 2, 21), _normal(6, 2, 22, shift=0.7)
    cost = torch.cdist(x, y).square().tolist()
    best = min(sum(cost[i][p[i]] for i in range(6)) / 6 for p in itertools.permutations(range(6)))
    assert wasserstein(x, y) == pytest.approx(math.sqrt(best), rel=1e-9)


def test_w2_unequal_sizes():
    """Duplicating every point of a set does not change its empirical measure."""
    x = _normal(5, 3, 23)
    delta = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64)
    doubled = torch.cat([x, x])
    assert wasserstein(x, doubled) == pytest.approx(0.0, abs=1e-7)
    assert wasserstein(x, doubled + delta) == pytest.approx(float(delta.norm()), rel=1e-7)
    assert wasserstein(doubled + delta, x) == pytest.approx(float(delta.norm()), rel=1e-7)


def test_sliced_w2_of_a_translate_is_the_rms_projected_shift():
    """Each 1-D projection of a translate is a translate by theta.delta, so
    SW2 = sqrt(mean_theta (theta.delta)^2), whose expectation over the sphere is |delta|^2 / d."""
    d, num_projections, seed = 3, 4096, 7
    x = _normal(200, d, 24)
    delta = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    value = sliced_wasserstein(
        x, x + delta, num_projections=num_projections, generator=torch.Generator().manual_seed(seed)
    )
    theta = torch.randn(d, num_projections, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    theta = theta / theta.norm(dim=0, keepdim=True)
    assert value == pytest.approx(float((delta @ theta).square().mean().sqrt()), rel=1e-9)
    assert value == pytest.approx(float(delta.norm()) / math.sqrt(d), rel=0.05)


def test_exact_wasserstein_refuses_large_sets_instead_of_switching_quantity():
    x, y = _normal(40, 2, 25), _normal(40, 2, 26, shift=1.0)
    with pytest.raises(ValueError, match="sliced_wasserstein"):
        wasserstein(x, y, exact_max_points=39)
    sliced = sliced_wasserstein(x, y, num_projections=64, generator=torch.Generator().manual_seed(3))
    assert sliced <= wasserstein(x, y) + 1e-9  # projections only shorten distances


def test_sliced_w2_unequal_sizes():
    """Same empirical measure at different sizes: 0 up to the quantile-grid interpolation (O(1/n))."""
    x = _normal(1000, 2, 27)
    assert sliced_wasserstein(x, torch.cat([x, x])) < 0.02
    assert sliced_wasserstein(x[:600], _normal(900, 2, 28, shift=[3.0, 0.0])) > 1.5


# ---------------------------------------------------------------------------------------------- modes


def test_mode_coverage_of_the_gmm_itself():
    samples = load_dataset(DataConfig("gmm2d"), "train").x
    stats = mode_coverage(samples, GMM.means, GMM.std)
    assert stats.covered == stats.num_modes == 8
    assert sum(stats.counts) == round(stats.high_quality_fraction * len(samples))
    # P(|z| <= 3 sigma) for an isotropic 2-D Gaussian is 1 - exp(-9/2)
    assert stats.high_quality_fraction == pytest.approx(1 - math.exp(-4.5), abs=0.005)
    assert stats.balance > 0.995


def test_mode_coverage_of_three_modes():
    data = load_dataset(DataConfig("gmm2d"), "train")
    keep = (data.y == 0) | (data.y == 3) | (data.y == 5)
    stats = mode_coverage(data.x[keep], GMM.means, GMM.std)
    assert stats.covered == 3
    assert [c > 0 for c in stats.counts] == [k in (0, 3, 5) for k in range(8)]
    # three (nearly) equal modes out of eight: entropy log 3 / log 8
    assert stats.balance == pytest.approx(math.log(3) / math.log(8), abs=0.01)


def test_mode_balance_is_the_normalised_entropy_of_the_counts():
    g = torch.Generator().manual_seed(0)
    labels = torch.tensor([0] * 50 + [1] * 30 + [2] * 20)
    samples = GMM.means[labels] + 0.01 * torch.randn(100, 2, generator=g)
    stats = mode_coverage(samples, GMM.means, GMM.std)
    assert stats.counts == (50, 30, 20, 0, 0, 0, 0, 0)
    entropy = -sum(p * math.log(p) for p in (0.5, 0.3, 0.2))
    assert stats.balance == pytest.approx(entropy / math.log(8), rel=1e-6)
    assert stats.high_quality_fraction == 1.0
    assert stats.covered == 3  # each holds >= 10% of its fair share 100/8


def test_far_samples_are_not_high_quality():
    samples = torch.tensor([[0.0, 0.0], [0.1, -0.1], [50.0, 50.0]])
    stats = mode_coverage(samples, GMM.means, GMM.std)
    assert stats.high_quality_fraction == 0.0 and stats.covered == 0 and sum(stats.counts) == 0


def test_sample_stats_of_points_on_a_circle():
    n, r = 400, 3.0
    angle = torch.arange(n, dtype=torch.float64) * (2 * math.pi / n)
    points = r * torch.stack([angle.cos(), angle.sin()], dim=1)
    stats = sample_stats(points)
    assert stats["radius_mean"] == pytest.approx(r, rel=1e-12)
    assert stats["radius_std"] == pytest.approx(0.0, abs=1e-12)
    # coordinates have mean 0 and mean square r^2/2; std is the unbiased one over all 2n values
    assert stats["sample_std"] == pytest.approx(math.sqrt(r * r / 2 * (2 * n) / (2 * n - 1)), rel=1e-9)
    assert stats["sample_range"] == pytest.approx(2 * r, rel=1e-12)


def test_sample_stats_has_no_radius_beyond_2d():
    assert set(sample_stats(_normal(10, 3, 30))) == {"sample_std", "sample_range"}


# ---------------------------------------------------------------------------------------- noise loss


class ZeroEps(nn.Module):
    """Predicts eps = 0; carries one unused parameter so it has a device."""

    def __init__(self) -> None:
        super().__init__()
        self.unused = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(x)


class DiracOracle(nn.Module):
    """The exact eps for data that is the single point ``mu``: (x_t - sqrt(abar_t) mu) / sqrt(1 - abar_t)."""

    def __init__(self, schedule: NoiseSchedule, mu: torch.Tensor) -> None:
        super().__init__()
        self.schedule = schedule
        self.mu = nn.Parameter(mu.clone(), requires_grad=False)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        abar = self.schedule.alpha_bar[t.cpu()].to(x.device).unsqueeze(-1)
        return ((x.double() - abar.sqrt() * self.mu.double()) / (1 - abar).sqrt()).to(x.dtype)


def test_zero_model_loss_is_the_noise_second_moment():
    schedule = NoiseSchedule.linear(100)
    x0 = load_dataset(DataConfig("gmm2d"), "test").x
    loss = noise_prediction_loss(ZeroEps(), schedule, x0, torch.Generator().manual_seed(5))
    # the same stream, drawn by hand: t first, then eps
    g = torch.Generator().manual_seed(5)
    torch.randint(schedule.num_steps, (len(x0),), generator=g)
    noise = torch.randn(x0.shape, generator=g)
    assert loss == pytest.approx(float(noise.double().square().mean()), rel=1e-6)
    # E[eps^2] = 1, std of the mean of 4000 chi^2_1 / 4000 is sqrt(2/4000) = 0.022
    assert loss == pytest.approx(1.0, abs=0.1)


def test_oracle_loss_is_zero_on_dirac_data():
    schedule = NoiseSchedule.cosine(200)
    mu = torch.tensor([1.5, -0.5])
    x0 = mu.expand(300, 2).clone()
    loss = noise_prediction_loss(
        DiracOracle(schedule, mu), schedule, x0, torch.Generator().manual_seed(0), batch_size=128
    )
    assert loss < 1e-6


def test_noise_loss_of_a_parameter_free_model():
    """A model is any ``eps(x, t)`` module; one without parameters (an analytic oracle) has nothing to put on a
    device, so the metric must not require one."""

    class Zero(nn.Module):
        def forward(self, x, t):
            return torch.zeros_like(x)

    schedule = NoiseSchedule.linear(100)
    x0 = _normal(50, 2, 31).float()
    expected = noise_prediction_loss(ZeroEps(), schedule, x0, torch.Generator().manual_seed(1))
    assert noise_prediction_loss(Zero(), schedule, x0, torch.Generator().manual_seed(1)) == expected


# ---------------------------------------------------------------------------------------------- errors

GOOD = _normal(10, 2, 40)
NAN = GOOD.clone()
NAN[3, 1] = float("nan")
INF = GOOD.clone()
INF[0, 0] = float("inf")


@pytest.mark.parametrize(
    "metric",
    [mmd_rbf, mmd_multiscale, mmd_linear, wasserstein, sliced_wasserstein, median_bandwidth],
    ids=["mmd_rbf", "mmd_multiscale", "mmd_linear", "wasserstein", "sliced", "median_bandwidth"],
)
@pytest.mark.parametrize(
    "x, y, match",
    [
        (NAN, GOOD, "x contains NaN"),
        (GOOD, NAN, "y contains NaN"),
        (GOOD, INF, "y contains NaN or inf"),
        (GOOD, _normal(10, 3, 41), "2 and 3"),
        (GOOD[:1], GOOD, "at least 2 samples, got 1"),
        (GOOD, GOOD[:0], "at least 2 samples, got 0"),
    ],
    ids=["nan-x", "nan-y", "inf-y", "dim-mismatch", "one-sample", "empty"],
)
def test_pair_metrics_reject_bad_inputs(metric, x, y, match):
    with pytest.raises(ValueError, match=match):
        metric(x, y)


@pytest.mark.parametrize("h", [0.0, -1.0])
def test_mmd_rbf_rejects_a_non_positive_bandwidth(h):
    with pytest.raises(ValueError, match=f"got {h}"):
        mmd_rbf(GOOD, GOOD, bandwidth=h)


@pytest.mark.parametrize(
    "samples, means, match",
    [(NAN, GOOD, "NaN"), (GOOD[:1], GOOD, "at least 2"), (GOOD, _normal(8, 3, 42), "dimension")],
    ids=["nan", "one-sample", "dim-mismatch"],
)
def test_mode_coverage_rejects_bad_inputs(samples, means, match):
    with pytest.raises(ValueError, match=match):
        mode_coverage(samples, means, 0.2)


def test_sample_stats_rejects_nan():
    with pytest.raises(ValueError, match="NaN"):
        sample_stats(NAN)

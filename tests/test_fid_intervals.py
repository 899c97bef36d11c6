"""What FID's intervals estimate, checked by simulation on Gaussian features with known laws.

- ``fid_interval`` covers E[FID_n] (the expected FID at these sample sizes over fresh draws of both sets) with about
  the width of FID_n's spread; halving only the generated side is too narrow (it misses the real set's share).
- ``fid_infinity`` from n = 2000 lands within 5% of the closed-form Fréchet distance, with an interval that covers
  it, where FID at n = 500 is biased by more than 20%.
- ``fid_difference`` on paired samples (same noise) is much narrower than the unpaired interval and covers the
  true difference in at least 90 of 100 seeded trials.
- ``kid``'s std estimates KID's spread at n (it used to be the real side's alone when n <= the subset size).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from diffbench.metrics.fid import (
    _half,
    _recentred,
    fid_difference,
    fid_infinity,
    fid_interval,
    frechet_between,
    frechet_distance,
    infinity_sizes,
    kid,
)


def gaussian(n: int, d: int, shift: float, scale: torch.Tensor | float, generator: torch.Generator) -> torch.Tensor:
    return torch.randn(n, d, generator=generator, dtype=torch.float64) * scale + shift


def test_frechet_between_equals_the_moment_formula_on_both_routes():
    g = torch.Generator().manual_seed(0)
    for n, m, d in ((40, 60, 64), (500, 700, 16)):  # fewer rows than dims (SVD route), and more (eigen route)
        x, y = gaussian(n, d, 0.0, 1.0, g), gaussian(m, d, 0.2, 1.3, g)
        expected = frechet_distance(x.mean(0), torch.cov(x.T), y.mean(0), torch.cov(y.T))
        # rel 1e-6: with fewer rows than dims the moment route takes square roots of round-off eigenvalues (~1e-16
        # each -> ~1e-8) in the covariances' null space, which the SVD route never forms.
        assert frechet_between(x, y) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize(("shift", "top_scale"), [(0.15, 1.3), (0.6, 2.0)])  # bias-dominated, distance-dominated
def test_the_interval_covers_fid_at_this_n_and_generated_side_halving_alone_is_too_narrow(shift, top_scale):
    d, n, n_real, trials = 32, 300, 359, 40
    g = torch.Generator().manual_seed(1)
    scale = torch.linspace(0.8, top_scale, d, dtype=torch.float64)

    def draw() -> tuple[torch.Tensor, torch.Tensor]:
        return gaussian(n, d, shift, scale, g), gaussian(n_real, d, 0.0, 1.0, g)

    fresh = [frechet_between(*draw()) for _ in range(250)]  # FID_n over fresh draws of both sets
    expected, ideal_width = np.mean(fresh), np.quantile(fresh, 0.975) - np.quantile(fresh, 0.025)
    covered, widths, gen_only_widths = 0, [], []
    for _ in range(trials):
        gen, real = draw()
        low, high = fid_interval(gen, real, generator=g, draws=60)
        covered += low <= expected <= high
        widths.append(high - low)
        value = frechet_between(gen, real)
        gen_only = _recentred(value, [frechet_between(gen[_half(n, g)], real) for _ in range(60)])
        gen_only_widths.append(gen_only[1] - gen_only[0])
    assert covered >= 0.9 * trials, (covered, trials)
    assert 0.85 < np.mean(widths) / ideal_width < 1.4, (np.mean(widths), ideal_width)
    if shift > 0.5:  # where the distance dominates, the real set's share of the spread is large
        assert np.mean(gen_only_widths) / ideal_width < 0.9, (np.mean(gen_only_widths), ideal_width)


def test_fid_infinity_recovers_the_closed_form_distance_that_fid_at_500_misses():
    d, n = 64, 2000
    g = torch.Generator().manual_seed(2)
    scale = torch.linspace(0.7, 1.4, d, dtype=torch.float64)
    mu, sigma = torch.zeros(d, dtype=torch.float64), torch.eye(d, dtype=torch.float64)
    true = frechet_distance(mu, sigma, torch.full((d,), 0.3, dtype=torch.float64), torch.diag(scale**2))
    covered = 0
    for trial in range(6):
        gen = gaussian(n, d, 0.3, scale, g)
        result = fid_infinity(gen, mu, sigma, generator=g, draws=30)
        assert abs(result.value / true - 1) < 0.05, (trial, result.value, true)
        covered += result.ci_low <= true <= result.ci_high
        at_500 = frechet_distance(mu, sigma, gen[:500].mean(0), torch.cov(gen[:500].T))
        assert at_500 / true - 1 > 0.2, (trial, at_500, true)
        assert list(result.sizes) == infinity_sizes(n, d) and result.sizes[0] == 256 and result.sizes[-1] == n
        assert result.fids[0] > result.fids[-1] > result.value  # FID falls towards its limit as N grows
    assert covered >= 5, covered


def test_a_paired_difference_is_tighter_than_an_unpaired_one_and_covers_the_true_difference():
    d, n, n_real, trials = 16, 300, 400, 100
    g = torch.Generator().manual_seed(3)
    mix = torch.eye(d, dtype=torch.float64) + 0.3 * torch.randn(d, d, generator=g, dtype=torch.float64)
    shift_a, shift_b = torch.full((d,), 0.25, dtype=torch.float64), torch.full((d,), 0.15, dtype=torch.float64)

    def draw() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        z = torch.randn(n, d, generator=g, dtype=torch.float64) @ mix  # the shared noise of both models
        return z + shift_a, 1.02 * z + shift_b, torch.randn(n_real, d, generator=g, dtype=torch.float64)

    def delta(a: torch.Tensor, b: torch.Tensor, real: torch.Tensor) -> float:
        return frechet_between(a, real) - frechet_between(b, real)

    true = np.mean([delta(*draw()) for _ in range(400)])  # E[FID_n(a) - FID_n(b)]
    covered, paired_widths, unpaired_widths = 0, [], []
    for trial in range(trials):
        a, b, real = draw()
        value, low, high = fid_difference(a, b, real, generator=g, draws=60)
        assert value == pytest.approx(delta(a, b, real))
        covered += low <= true <= high
        paired_widths.append(high - low)
        if trial < 10:
            _, low_u, high_u = fid_difference(a, b, real, generator=g, draws=60, paired=False)
            unpaired_widths.append(high_u - low_u)
    assert covered >= 90, covered
    assert np.mean(paired_widths[:10]) < 0.5 * np.mean(unpaired_widths), (paired_widths[:10], unpaired_widths)


def test_kid_std_tracks_the_spread_of_kid_at_n_when_n_is_below_the_subset_size():
    d, n = 16, 200
    g = torch.Generator().manual_seed(4)

    def draw() -> tuple[torch.Tensor, torch.Tensor]:
        return gaussian(n, d, 0.3, 1.2, g), gaussian(n, d, 0.0, 1.0, g)

    def kid_at_n(x: torch.Tensor, y: torch.Tensor) -> float:  # the unbiased MMD^2 on all n rows of both sets
        k = lambda a, b: (a @ b.T / d + 1) ** 3  # noqa: E731
        kxx, kyy = k(x, x), k(y, y)
        within = (kxx.sum() - kxx.diagonal().sum() + kyy.sum() - kyy.diagonal().sum()) / (n * (n - 1))
        return float(within - 2 * k(x, y).mean())

    spread = np.std([kid_at_n(*draw()) for _ in range(200)])
    reported = [kid(*draw(), subsets=50, subset_size=1000, generator=g)[1] for _ in range(10)]
    assert 0.6 < np.median(reported) / spread < 1.6, (np.median(reported), spread)


@pytest.mark.parametrize("draws", [0, 1, 2.5, True])
def test_a_bad_number_of_draws_is_refused(draws):
    x = torch.randn(10, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match="draws must be an integer >= 2"):
        fid_interval(x, x, generator=torch.Generator(), draws=draws)


def test_paired_sets_of_different_shapes_are_refused():
    with pytest.raises(ValueError, match="paired sets need the same shape"):
        fid_difference(torch.randn(10, 3), torch.randn(11, 3), torch.randn(20, 3), generator=torch.Generator())

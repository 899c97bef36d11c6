"""Discretization-error metrics (seed 003): the Hutchinson estimator against the full Jacobian and closed forms,
the chain-rule factor against a finite difference of the real reparameterisation, both dynamic programs against
brute force, and the heatmap's orientation on a toy model with known Jacobians."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from diffbench.metrics.discretization import (
    CHAIN_RULE_CONVENTIONS,
    apply_chain_rule,
    chain_rule_factor,
    check_path,
    check_snr_grid,
    diagonal_path,
    error_density,
    error_heatmap,
    exact_vhv,
    hutchinson_vhv,
    hutchinson_vhv_loop,
    min_cost_chain,
    optimal_schedule,
    optimal_snr_path,
    path_cost,
    path_to_schedule,
    schedule_cost,
    snr_grid,
    step_cost_matrix,
    uniform_weights,
    xt_to_z,
    z_to_xt,
)
from diffbench.models.unet import DDPMUNet
from diffbench.schedules import NoiseSchedule

COSTS = st.floats(-10, 10, allow_nan=False, width=64)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def unet_eps():
    """A small random-weight UNet (GroupNorm, attention) at a fixed timestep, as ``f: [B, 1, 8, 8] -> same``."""
    torch.manual_seed(0)
    net = DDPMUNet((8, 16), in_channels=1, image_size=8, attention_resolutions=(4,)).eval().requires_grad_(False)
    t = torch.tensor([300, 300])
    z = torch.randn(2, 1, 8, 8, generator=gen(1))
    return (lambda x: net(x, t)), z


def non_uniform_v() -> torch.Tensor:
    """Per-pixel weights ``[1, 8, 8]``, positive, spanning two orders of magnitude."""
    return torch.logspace(-2, 0, 64, dtype=torch.float64).reshape(1, 8, 8)


# --- Hutchinson estimator -------------------------------------------------------------------------------------


@pytest.mark.parametrize("weights", ["uniform", "non_uniform"])
def test_hutchinson_matches_full_jacobian(unet_eps, weights):
    f, z = unet_eps
    v = uniform_weights(z.shape[1:]) if weights == "uniform" else non_uniform_v()
    exact = exact_vhv(f, z, v)
    estimate = hutchinson_vhv(f, z, v, 1024, gen(2))
    assert estimate.shape == exact.shape == (2,)
    assert bool((exact > 0).all())
    torch.testing.assert_close(estimate, exact, rtol=0.05, atol=0)


def test_exact_vhv_matches_per_sample_jacobian(unet_eps):
    """The shared-basis-vector shortcut equals jacfwd of the network on each sample alone."""
    f, z = unet_eps
    v = non_uniform_v()
    per_sample = []
    for zb in z:
        jac = torch.func.jacfwd(lambda x: f(x.expand(2, -1, -1, -1))[:1])(zb.unsqueeze(0)).reshape(64, 64).double()
        per_sample.append(float((jac.pow(2).sum(0) * v.reshape(-1)).sum()))
    torch.testing.assert_close(exact_vhv(f, z, v), torch.tensor(per_sample, dtype=torch.float64), rtol=1e-5, atol=0)


def test_linear_map_closed_form():
    """``f(z) = A z``: ``vhv = sum_j v_j |A[:, j]|^2``; Hutchinson's error within 5 of its own closed-form sigma,
    ``Var = 2 sum_{j != k} M_jk^2 / K`` with ``M = diag(sqrt v) A^T A diag(sqrt v)``."""
    shape, d, k = (2, 2, 3), 12, 2048
    a = torch.randn(7, d, generator=gen(3), dtype=torch.float64)
    v = torch.rand(shape, generator=gen(4), dtype=torch.float64) + 0.1
    z = torch.randn(3, *shape, generator=gen(5), dtype=torch.float64)

    def f(x: torch.Tensor) -> torch.Tensor:
        return x.reshape(len(x), d) @ a.T

    closed = (v.reshape(-1) * a.pow(2).sum(0)).sum()
    torch.testing.assert_close(exact_vhv(f, z, v), closed.expand(3), rtol=1e-12, atol=0)
    m = v.reshape(-1).sqrt()[:, None] * (a.T @ a) * v.reshape(-1).sqrt()[None, :]
    sigma = math.sqrt(2 * float(m.pow(2).sum() - m.diagonal().pow(2).sum()) / k)
    assert sigma < 0.05 * float(closed)
    estimate = hutchinson_vhv(f, z, v, k, gen(6))
    assert float((estimate - closed).abs().max()) < 5 * sigma


def test_estimates_one_transpose_jj_v_not_the_seeds_quadratic_form():
    """``f = identity`` on ``[C, H, W]`` with uniform v: ``1^T (J o J) v = C`` exactly for Rademacher probes,
    while the seed's ``v^T (J o J) v`` would be ``C / (HW)``."""
    z = torch.zeros(2, 3, 4, 5)
    v = uniform_weights(z.shape[1:])
    torch.testing.assert_close(hutchinson_vhv(lambda x: x, z, v, 3, gen(0)), torch.full((2,), 3.0, dtype=torch.float64))
    assert v == pytest.approx(1 / 20)


def test_vmap_matches_loop(unet_eps):
    f, z = unet_eps
    v = non_uniform_v()
    batched = hutchinson_vhv(f, z, v, 4, gen(7))
    looped = hutchinson_vhv_loop(f, z, v, 4, gen(7))
    torch.testing.assert_close(batched, looped, rtol=1e-5, atol=0)
    assert not torch.allclose(batched, hutchinson_vhv(f, z, v, 4, gen(8)), rtol=1e-5, atol=0)  # probes matter
    torch.testing.assert_close(hutchinson_vhv(f, z, v, 4, gen(7), chunk_size=3), batched, rtol=1e-5, atol=0)


def test_uniform_weights():
    assert uniform_weights((3, 4, 5)) == pytest.approx(1 / 20)
    assert uniform_weights((2,)) == 1.0


# --- Chain rule ---------------------------------------------------------------------------------------------------


SNR_TIMESTEPS = [20, 150, 600, 900]  # linear(1000): SNRs from ~50 down to ~1e-3, none near 1


def test_derived_factor_is_squared_derivative_of_the_reparameterisation():
    schedule = NoiseSchedule.linear(1000)
    x0 = torch.randn(5, generator=gen(9), dtype=torch.float64)
    eps = torch.randn(5, generator=gen(10), dtype=torch.float64)
    h = 1e-4
    for t in SNR_TIMESTEPS:
        abar = float(schedule.alpha_bar[t])
        snr = abar / (1 - abar)
        assert snr == pytest.approx(float(schedule.snr(t)), rel=1e-12)
        assert abs(math.log(snr)) > 1.0

        def xt(e, abar=abar):
            return math.sqrt(abar) * x0 + math.sqrt(1 - abar) * e  # Ho et al. eq. 4

        def z(e, snr=snr):
            return math.sqrt(snr) * x0 + e

        derivative = (xt(eps + h) - xt(eps - h)) / (z(eps + h) - z(eps - h))
        torch.testing.assert_close(
            derivative**2, torch.full((5,), chain_rule_factor(snr), dtype=torch.float64), rtol=1e-6, atol=0
        )
        assert chain_rule_factor(snr, "seed") / float(derivative[0] ** 2) == pytest.approx(1 / snr)
        assert abs(chain_rule_factor(snr, "seed") / float(derivative[0] ** 2) - 1) > 0.5
        torch.testing.assert_close(z_to_xt(z(eps), snr), xt(eps), rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(xt_to_z(xt(eps), snr), z(eps), rtol=1e-12, atol=1e-12)


def test_hutchinson_scales_by_the_factor_through_the_reparameterisation(unet_eps):
    f, z = unet_eps
    v = uniform_weights(z.shape[1:])
    for snr in (0.05, 3.0, 40.0):
        x_t = z_to_xt(z, snr)
        in_z = hutchinson_vhv(lambda zz, snr=snr: f(z_to_xt(zz, snr)), z, v, 4, gen(11))
        in_xt = hutchinson_vhv(f, x_t, v, 4, gen(11))
        torch.testing.assert_close(in_z, chain_rule_factor(snr) * in_xt, rtol=1e-4, atol=0)
        assert not torch.allclose(in_z, chain_rule_factor(snr, "seed") * in_xt, rtol=0.1)


def test_chain_rule_factor_types_and_conventions():
    assert CHAIN_RULE_CONVENTIONS == ("seed", "derived")
    assert isinstance(chain_rule_factor(2.0), float)
    assert chain_rule_factor(2.0) == pytest.approx(1 / 3)
    assert chain_rule_factor(2.0, "seed") == pytest.approx(1 / 6)
    arr = chain_rule_factor(np.array([0.5, 4.0], dtype=np.float32), "seed")
    assert isinstance(arr, np.ndarray) and arr.dtype == np.float64
    np.testing.assert_allclose(arr, [1 / 0.75, 1 / 20])
    ten = chain_rule_factor(torch.tensor([0.5, 4.0]))
    assert isinstance(ten, torch.Tensor) and ten.dtype == torch.float64
    torch.testing.assert_close(ten, torch.tensor([1 / 1.5, 1 / 5], dtype=torch.float64))


def test_apply_chain_rule_scales_rows_and_columns():
    grid = snr_grid(0.1, 10.0, 4)
    rng = np.random.default_rng(0)
    large, small = rng.uniform(1, 2, (4, 4)), rng.uniform(1, 2, (4, 4))
    for convention in CHAIN_RULE_CONVENTIONS:
        out = apply_chain_rule(large, small, grid, convention)
        for i, j in itertools.product(range(4), range(4)):
            assert out["large"][i, j] == pytest.approx(large[i, j] * chain_rule_factor(grid[i], convention))
            assert out["small"][i, j] == pytest.approx(small[i, j] * chain_rule_factor(grid[j], convention))
        np.testing.assert_allclose(out["total"], out["large"] + out["small"])


# --- Grids and heatmaps -------------------------------------------------------------------------------------------


def test_snr_grid_is_log_spaced_and_validated():
    grid = snr_grid(0.01, 100.0, 5)
    assert grid.dtype == np.float64
    np.testing.assert_allclose(grid, [0.01, 0.1, 1.0, 10.0, 100.0])
    np.testing.assert_allclose(check_snr_grid(grid, NoiseSchedule.linear(1000)), grid)
    schedule = NoiseSchedule.cosine(50)
    lo, hi = float(schedule.snr(49)), float(schedule.snr(0))
    check_snr_grid(snr_grid(lo, hi, 7), schedule)  # the schedule's own range is inside


def toy_dual_eps(w_large: torch.Tensor, w_small: torch.Tensor, num_steps: int):
    """``eps_large = a(t0) w_L z_L + up(z_S)``, ``eps_small = b(t1) w_S z_S + pool(z_L)``: the Jacobian of each scale
    in its own input is diagonal (``a(t0) w_L``, ``b(t1) w_S``), so Rademacher Hutchinson is exact."""

    def a(t):
        return (1 + t.double() / num_steps).float().reshape(-1, 1, 1, 1)

    def b(t):
        return (2 - t.double() / num_steps).float().reshape(-1, 1, 1, 1)

    def dual(x_large, x_small, t_large, t_small):
        eps_large = a(t_large) * w_large * x_large + F.interpolate(x_small, scale_factor=2)
        eps_small = b(t_small) * w_small * x_small + torch.tanh(F.avg_pool2d(x_large, 2))
        return eps_large, eps_small

    return dual, a, b


def test_error_heatmap_closed_form_and_orientation():
    schedule = NoiseSchedule.linear(1000)
    grid = snr_grid(0.05, 20.0, 4)
    w_large = torch.rand(2, 4, 4, generator=gen(12)) + 0.5
    w_small = torch.rand(2, 2, 2, generator=gen(13)) + 0.5
    dual, a, b = toy_dual_eps(w_large, w_small, schedule.num_steps)
    x0_large = torch.rand(3, 2, 4, 4, generator=gen(14)) * 2 - 1
    x0_small = F.avg_pool2d(x0_large, 2)
    out = error_heatmap(dual, x0_large, x0_small, grid, schedule, num_probes=2, generator=gen(15))
    assert set(out) == {"large", "small"}
    assert out["large"].shape == out["small"].shape == (4, 4)
    assert out["large"].dtype == np.float64
    t = schedule.snr_to_timestep(torch.as_tensor(grid))
    assert len(set(t.tolist())) == 4
    v_large, v_small = uniform_weights((2, 4, 4)), uniform_weights((2, 2, 2))
    for i, j in itertools.product(range(4), range(4)):
        expected_large = float(a(t[i : i + 1]) ** 2) * float((w_large**2).sum()) * v_large  # depends on gamma0 only
        expected_small = float(b(t[j : j + 1]) ** 2) * float((w_small**2).sum()) * v_small  # on gamma1 only
        assert out["large"][i, j] == pytest.approx(expected_large, rel=1e-5)
        assert out["small"][i, j] == pytest.approx(expected_small, rel=1e-5)
    assert np.ptp(out["large"][:, 0]) > 0.01 and np.ptp(out["small"][0, :]) > 0.01


def test_error_heatmap_matches_exact_on_a_nonlinear_toy():
    """A Jacobian that is not diagonal: the heatmap equals exact_vhv at each point within Hutchinson noise."""
    schedule = NoiseSchedule.linear(1000)
    grid = snr_grid(0.1, 10.0, 2)
    kernel = torch.randn(1, 1, 3, 3, generator=gen(16))

    def dual(x_large, x_small, t_large, t_small):
        scale = 1 + t_large.float().reshape(-1, 1, 1, 1) / 1000
        eps_large = torch.tanh(scale * F.conv2d(x_large, kernel, padding=1)) + F.interpolate(x_small, scale_factor=2)
        eps_small = torch.sin(F.conv2d(x_small, kernel, padding=1)) * (1 + t_small.float().reshape(-1, 1, 1, 1))
        return eps_large, eps_small

    x0_large = torch.rand(2, 1, 6, 6, generator=gen(17)) * 2 - 1
    x0_small = F.avg_pool2d(x0_large, 2)
    out = error_heatmap(dual, x0_large, x0_small, grid, schedule, num_probes=2048, generator=gen(18))
    g = gen(18)  # replay error_heatmap's noise draws
    noise_large = torch.randn(x0_large.shape, generator=g)
    noise_small = torch.randn(x0_small.shape, generator=g)
    t = schedule.snr_to_timestep(torch.as_tensor(grid)).tolist()
    for i, j in itertools.product(range(2), range(2)):
        t0, t1 = torch.full((2,), t[i]), torch.full((2,), t[j])
        x_large = schedule.add_noise(x0_large, t0, noise_large)
        x_small = schedule.add_noise(x0_small, t1, noise_small)
        large = exact_vhv(lambda z, x_small=x_small, t0=t0, t1=t1: dual(z, x_small, t0, t1)[0], x_large, 1 / 36)
        small = exact_vhv(lambda z, x_large=x_large, t0=t0, t1=t1: dual(x_large, z, t0, t1)[1], x_small, 1 / 9)
        assert out["large"][i, j] == pytest.approx(float(large.mean()), rel=0.05)
        assert out["small"][i, j] == pytest.approx(float(small.mean()), rel=0.05)


def test_error_density_closed_form_with_cond():
    schedule = NoiseSchedule.cosine(50)
    w = torch.rand(1, 4, 4, generator=gen(19)) + 0.5

    def eps_model(x, t, gain=1.0):
        return gain * (1 + t.float().reshape(-1, 1, 1, 1) / 50) * w * x

    x0 = torch.rand(3, 1, 4, 4, generator=gen(20))
    timesteps = [49, 30, 5, 0]
    density = error_density(eps_model, x0, timesteps, schedule, num_probes=2, generator=gen(21), cond={"gain": 3.0})
    assert density.shape == (4,) and density.dtype == np.float64
    expected = [9.0 * (1 + t / 50) ** 2 * float((w**2).sum()) / 16 for t in timesteps]
    np.testing.assert_allclose(density, expected, rtol=1e-5)


# --- Heatmap paths ------------------------------------------------------------------------------------------------


def all_paths(m: int):
    """Every valid path: 0, a non-decreasing middle, M-1."""
    for middle in itertools.combinations_with_replacement(range(m), m - 2):
        yield [0, *middle, m - 1]


@given(st.integers(2, 6).flatmap(lambda m: arrays(np.float64, (m, m), elements=COSTS)))
def test_optimal_snr_path_matches_brute_force(cost):
    path = optimal_snr_path(cost)
    assert check_path(path, len(cost)) == path
    best = min(path_cost(cost, p) for p in all_paths(len(cost)))
    assert path_cost(cost, path) == pytest.approx(best, abs=1e-9)


def test_optimal_snr_path_tie_break_and_diagonal():
    assert optimal_snr_path(np.zeros((5, 5))) == [0, 0, 0, 0, 4]  # equal costs: lowest gamma1
    cost = np.ones((5, 5)) - np.eye(5)
    assert optimal_snr_path(cost) == diagonal_path(5)
    assert path_cost(cost, diagonal_path(5)) == 0.0


def test_path_to_schedule_endpoints_monotone_and_diagonal():
    schedule = NoiseSchedule.linear(1000)
    grid = snr_grid(0.01, 100.0, 6)
    first, last = int(schedule.snr_to_timestep(grid[0])), int(schedule.snr_to_timestep(grid[-1]))
    for path in ([0, 0, 2, 3, 5, 5], [0, 5, 5, 5, 5, 5], diagonal_path(6)):
        t_large, t_small = path_to_schedule(path, grid, 12, schedule)
        assert len(t_large) == len(t_small) == 12
        for ts in (t_large, t_small):
            assert all(isinstance(t, int) for t in ts)
            assert ts[0] == first and ts[-1] == last
            assert all(b <= a for a, b in itertools.pairwise(ts))
    t_large, t_small = path_to_schedule(diagonal_path(6), grid, 12, schedule)
    assert t_small == t_large
    t_large, t_lagging = path_to_schedule([0, 0, 0, 0, 0, 5], grid, 12, schedule)
    assert all(b >= a for a, b in zip(t_large, t_lagging, strict=True))  # the small scale lags: noisier
    assert t_lagging[5] > t_large[5]


# --- Single-scale schedules ---------------------------------------------------------------------------------------


@given(
    st.integers(2, 8).flatmap(
        lambda m: st.tuples(arrays(np.float64, (m, m), elements=COSTS), st.integers(2, m)),
    )
)
def test_min_cost_chain_matches_brute_force(case):
    cost, steps = case
    m = len(cost)
    cost = np.where(np.triu(np.ones((m, m), bool), 1), cost, np.nan)  # below the diagonal is never read

    def total(chain):
        return sum(cost[a, b] for a, b in itertools.pairwise(chain))

    chain = min_cost_chain(cost, steps)
    assert len(chain) == steps and chain[0] == 0 and chain[-1] == m - 1
    assert all(b > a for a, b in itertools.pairwise(chain))
    best = min(total([0, *mid, m - 1]) for mid in itertools.combinations(range(1, m - 1), steps - 2))
    assert total(chain) == pytest.approx(best, abs=1e-9)


def test_min_cost_chain_tie_break():
    assert min_cost_chain(np.zeros((6, 6)), 4) == [0, 1, 2, 5]


def synthetic_density(schedule: NoiseSchedule) -> tuple[list[int], np.ndarray]:
    """A positive raw density with a bump in the middle of the log-SNR range, measured every 4 steps."""
    density_t = list(range(0, schedule.num_steps, 4))
    lam = np.log(schedule.snr(torch.tensor(density_t)).numpy())
    return density_t, 1.0 + 20.0 * np.exp(-((lam - 1.0) ** 2))


# Lengths at which the log-SNR-uniform grid has no repeated timestep (cosine's clamped last beta is a jump of ~7 in
# log-SNR, so longer grids put several points on t = 48, 49).
SCHEDULE_CASES = [("cosine", 50, 3), ("cosine", 50, 6), ("linear", 100, 5), ("linear", 100, 12)]


@pytest.mark.parametrize("convention", CHAIN_RULE_CONVENTIONS)
@pytest.mark.parametrize("kind,num_steps,steps", SCHEDULE_CASES)
def test_optimal_schedule_beats_uniform_grids(kind, num_steps, steps, convention):
    schedule = getattr(NoiseSchedule, kind)(num_steps)
    last = num_steps - 1
    density_t, density = synthetic_density(schedule)
    best = optimal_schedule(schedule, steps, density_t, density, convention)
    assert len(best) == steps and best[0] == last and best[-1] == 0
    assert all(b < a for a, b in itertools.pairwise(best))
    uniform = np.linspace(last, 0, steps).round().astype(int).tolist()
    lam = np.log(schedule.snr(torch.tensor([last, 0])).numpy())
    log_snr_uniform = schedule.snr_to_timestep(torch.as_tensor(np.exp(np.linspace(*lam, steps)))).tolist()
    cost = schedule_cost(best, schedule, density_t, density, convention)
    for grid in (uniform, log_snr_uniform):
        assert grid[0] == last and grid[-1] == 0 and all(b < a for a, b in itertools.pairwise(grid))
        assert cost <= schedule_cost(grid, schedule, density_t, density, convention) * (1 + 1e-12)


def test_optimal_schedule_matches_brute_force_on_a_tiny_schedule():
    schedule = NoiseSchedule.cosine(8)
    density_t, density = [7, 4, 1, 0], np.array([0.5, 3.0, 1.0, 2.0])
    for steps in (2, 3, 4, 8):
        best = optimal_schedule(schedule, steps, density_t, density)
        grids = ([7, *mid, 0] for mid in itertools.combinations(range(6, 0, -1), steps - 2))
        brute = min(schedule_cost(g, schedule, density_t, density) for g in grids)
        assert schedule_cost(best, schedule, density_t, density) == pytest.approx(brute, rel=1e-12)
    assert optimal_schedule(schedule, 1, density_t, density) == [7]


def test_step_cost_matrix_formula():
    lam = np.array([-2.0, 0.0, 1.0])
    cost = step_cost_matrix(lam, np.array([-1.0, 1.0]), np.array([2.0, 4.0]))
    e = np.array([2.0, 3.0, 4.0])  # clamped below, interpolated, at the end
    assert cost[0, 1] == pytest.approx(e[0] * 4.0) and cost[0, 2] == pytest.approx(e[0] * 9.0)
    assert cost[1, 2] == pytest.approx(e[1] * 1.0)
    assert np.isinf(cost[np.tril_indices(3)]).all()


# --- Bad input ----------------------------------------------------------------------------------------------------


BAD_INPUTS = {
    "non_monotone_path": (lambda: check_path([0, 2, 1, 3], 4), r"path\[2\] = 1"),
    "off_grid_index": (lambda: check_path([0, 1, 2, 4], 4), r"\[0, 3\].*path\[3\] = 4"),
    "path_not_from_0": (lambda: check_path([1, 1, 2, 3], 4), r"path\[0\] = 1"),
    "path_not_to_end": (lambda: check_path([0, 1, 2, 2], 4), r"path\[3\] = 2"),
    "path_too_short": (lambda: path_cost(np.zeros((4, 4)), [0, 3]), r"needs 4 entries, got 2"),
    "gamma_outside_schedule": (
        lambda: path_to_schedule([0, 1], [1e-7, 1.0], 4, NoiseSchedule.linear(1000)),
        r"1e-07.*outside",
    ),
    "gamma_above_schedule": (lambda: check_snr_grid([1.0, 1e6], NoiseSchedule.linear(1000)), r"1e\+06.*outside"),
    "grid_one_point": (lambda: snr_grid(num_points=1), r"num_points must be an integer >= 2, got 1"),
    "check_grid_one_point": (lambda: check_snr_grid([1.0]), r"at least 2 points"),
    "grid_not_increasing": (lambda: check_snr_grid([1.0, 3.0, 2.0]), r"grid\[2\] = 2.0"),
    "unknown_convention": (lambda: chain_rule_factor(1.0, "edm"), r"'edm'.*\('seed', 'derived'\)"),
    "snr_zero": (lambda: chain_rule_factor(0.0), r"got \[0.0\]"),
    "snr_negative_tensor": (lambda: chain_rule_factor(torch.tensor([1.0, -2.0])), r"got \[-2.0\]"),
    "snr_nan_z_to_xt": (lambda: z_to_xt(torch.zeros(2), float("nan")), r"got \[nan\]"),
    "snr_min_negative": (lambda: snr_grid(-1.0, 1.0), r"snr_min.*got -1.0"),
    "snr_max_below_min": (lambda: snr_grid(2.0, 1.0), r"snr_max.*got 1.0"),
    "chain_steps_too_many": (lambda: min_cost_chain(np.zeros((4, 4)), 5), r"\[2, 4\].*got 5"),
    "chain_steps_one": (lambda: min_cost_chain(np.zeros((4, 4)), 1), r"got 1"),
    "schedule_steps_too_many": (
        lambda: optimal_schedule(NoiseSchedule.cosine(50), 51, [0, 10], [1.0, 1.0]),
        r"\[1, 50\].*got 51",
    ),
    "schedule_steps_zero": (lambda: optimal_schedule(NoiseSchedule.cosine(50), 0, [0], [1.0]), r"got 0"),
    "schedule_cost_not_decreasing": (
        lambda: schedule_cost([10, 20], NoiseSchedule.cosine(50), [0], [1.0]),
        r"strictly decreasing, got \[10, 20\]",
    ),
    "density_t_out_of_range": (lambda: optimal_schedule(NoiseSchedule.cosine(50), 3, [0, 50], [1, 1]), r"\[50\]"),
    "nonfinite_path_cost": (lambda: optimal_snr_path(np.array([[0, 1], [np.inf, 0]])), r"cost\[1, 0\] = inf"),
    "num_probes_zero": (lambda: hutchinson_vhv(lambda x: x, torch.zeros(1, 2), 1.0, 0, gen(0)), r"got 0"),
    "negative_v": (lambda: hutchinson_vhv(lambda x: x, torch.zeros(1, 2), torch.tensor([1.0, -1.0]), 1, gen(0)), r"-1"),
    "v_wrong_shape": (lambda: exact_vhv(lambda x: x, torch.zeros(1, 2), torch.ones(3)), r"\(2,\).*\(3,\)"),
    "apply_wrong_shape": (lambda: apply_chain_rule(np.ones((2, 2)), np.ones((3, 3)), [1.0, 2.0], "seed"), r"\(3, 3\)"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS), ids=list(BAD_INPUTS))
def test_bad_input_names_the_value(case):
    call, match = BAD_INPUTS[case]
    with pytest.raises(ValueError, match=match):
        call()

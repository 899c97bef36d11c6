"""Samplers and grids: determinism, per-sample streams, DDPM against Ho et al. Algorithm 2, bit-identity with the
previous sampler, closed-form Dirac and Gaussian oracles, the grid builders, callbacks and the trajectory recorder."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from diffbench.models import ModelConfig
from diffbench.sampling import (
    TIMESTEP_SPACINGS,
    SamplerStep,
    TrajectoryRecorder,
    check_timesteps,
    ddim_sample,
    ddpm_sample,
    leading_timesteps,
    quadratic_timesteps,
    randn,
    sample_generators,
    snr_timesteps,
    timesteps,
    trailing_timesteps,
    uniform_timesteps,
)
from diffbench.schedules import NoiseSchedule


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _noise(*shape: int, seed: int = 0, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(*shape, generator=_gen(seed), dtype=dtype)


@pytest.fixture(scope="module")
def mlp() -> nn.Module:
    return ModelConfig.of("mlp", hidden=16).build(seed=0).eval()


class LinearEps(nn.Module):
    """A toy eps model: a fixed linear map of x plus a t-dependent offset, ``eps = x A + (t / T) b``."""

    def __init__(self, num_steps: int) -> None:
        super().__init__()
        self.num_steps = num_steps
        self.a = nn.Parameter(torch.tensor([[0.6, -0.2], [0.1, 0.4]]), requires_grad=False)
        self.b = nn.Parameter(torch.tensor([0.3, -0.5]), requires_grad=False)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return x @ self.a + (t.to(x.dtype) / self.num_steps).unsqueeze(-1) * self.b


class DiracOracle(nn.Module):
    """The exact eps when the data is the single point ``mu``: ``(x - sqrt(abar_t) mu) / sqrt(1 - abar_t)``."""

    def __init__(self, schedule: NoiseSchedule, mu: torch.Tensor) -> None:
        super().__init__()
        self.schedule = schedule
        self.mu = mu.double()

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        abar = self.schedule.alpha_bar[t.cpu()].reshape(-1, *([1] * (x.ndim - 1)))
        return ((x.double() - abar.sqrt() * self.mu) / (1 - abar).sqrt()).to(x.dtype)


class GaussianOracle(nn.Module):
    """The exact eps for data ``x0 ~ N(mu, s^2 I)``: ``x_t ~ N(sqrt(abar) mu, (abar s^2 + 1 - abar) I)``, so
    ``eps*(x_t, t) = -sqrt(1 - abar) grad log p_t = sqrt(1 - abar) (x_t - sqrt(abar) mu) / (abar s^2 + 1 - abar)``."""

    def __init__(self, schedule: NoiseSchedule, mu: torch.Tensor, s: float) -> None:
        super().__init__()
        self.schedule, self.mu, self.s = schedule, mu.double(), s

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        abar = self.schedule.alpha_bar[t.cpu()].reshape(-1, *([1] * (x.ndim - 1)))
        return (1 - abar).sqrt() * (x - abar.sqrt() * self.mu) / (abar * self.s**2 + 1 - abar)


def _posterior_mean(x_t: torch.Tensor, abar: float, mu: torch.Tensor, s: float) -> torch.Tensor:
    """Tweedie: ``E[x0 | x_t] = mu + sqrt(abar) s^2 (x_t - sqrt(abar) mu) / (abar s^2 + 1 - abar)``."""
    return mu + math.sqrt(abar) * s**2 * (x_t - math.sqrt(abar) * mu) / (abar * s**2 + 1 - abar)


# ------------------------------------------------------------------------------ determinism and noise


def test_ddim_eta0_is_deterministic_given_x_T(mlp):
    schedule = NoiseSchedule.linear(100)
    grid = uniform_timesteps(100, 20)
    a = ddim_sample(mlp, _noise(16, 2, seed=3), grid, schedule)
    assert torch.equal(a, ddim_sample(mlp, _noise(16, 2, seed=3), grid, schedule))
    assert not torch.equal(a, ddim_sample(mlp, _noise(16, 2, seed=4), grid, schedule))
    # with eta = 0 a generator is not needed, and if given it is not used
    assert torch.equal(a, ddim_sample(mlp, _noise(16, 2, seed=3), grid, schedule, generator=_gen(99)))


def test_ddim_eta1_is_reproducible_and_uses_noise(mlp):
    schedule = NoiseSchedule.linear(100)
    x_T, grid = _noise(8, 2), uniform_timesteps(100, 20)
    a = ddim_sample(mlp, x_T, grid, schedule, eta=1.0, generator=_gen(1))
    assert torch.equal(a, ddim_sample(mlp, x_T, grid, schedule, eta=1.0, generator=_gen(1)))
    assert not torch.equal(a, ddim_sample(mlp, x_T, grid, schedule, eta=1.0, generator=_gen(2)))


@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
def test_per_sample_generators_make_samples_independent_of_the_batch(mlp, eta):
    schedule = NoiseSchedule.cosine(100)
    grid = uniform_timesteps(100, 25)

    def draw(n: int) -> torch.Tensor:
        generators = sample_generators(7, n)
        return ddim_sample(mlp, randn((n, 2), generators, "cpu"), grid, schedule, eta=eta, generator=generators)

    assert torch.equal(draw(4), draw(7)[:4])


def test_per_sample_generator_i_gives_x_T_row_i():
    x_T = randn((5, 3), sample_generators(2, 5), "cpu")
    for i, g in enumerate(sample_generators(2, 5)):
        assert torch.equal(x_T[i], torch.randn(3, generator=g))
    with pytest.raises(ValueError, match="3 per-sample generators for a batch of 5"):
        randn((5, 3), sample_generators(2, 3), "cpu")


def test_sample_generators_seed_layout():
    gens = sample_generators(3, 4)
    for i, g in enumerate(gens):
        assert g.initial_seed() == 3 * 2**20 + i


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_samplers_never_touch_the_global_rng(mlp, eta):
    schedule = NoiseSchedule.linear(50)
    state = torch.random.get_rng_state()
    ddim_sample(mlp, _noise(4, 2), uniform_timesteps(50, 10), schedule, eta=eta, generator=_gen(0))
    ddpm_sample(mlp, _noise(4, 2), schedule, generator=sample_generators(0, 4))
    assert torch.equal(torch.random.get_rng_state(), state)


# ------------------------------------------------------------------- the previous sampler, bit for bit


def _previous_ddim(model, schedule, x_T, steps, eta, generator, clip_denoised=None):
    """The DDIM loop as it was before issue 7 (grid built inside from ``steps``, trajectories behind a flag),
    copied here so the new sampler can be held to it bit for bit on the grids it got right (``steps >= 2``)."""
    grid = torch.linspace(0, schedule.num_steps - 1, steps).round().long().unique().flip(0).tolist()
    abar = schedule.alpha_bar
    x = x_T
    for i, t in enumerate(grid):
        a_t = abar[t]
        a_prev = abar[grid[i + 1]] if i + 1 < len(grid) else torch.tensor(1.0, dtype=torch.float64)
        eps = model(x, torch.full((x.shape[0],), t, dtype=torch.long))
        x0 = (x - (1 - a_t).sqrt().item() * eps) / a_t.sqrt().item()
        if clip_denoised is not None:
            x0 = x0.clamp(-clip_denoised, clip_denoised)
            eps = (x - a_t.sqrt().item() * x0) / (1 - a_t).sqrt().item()
        sigma = eta * ((1 - a_prev) / (1 - a_t)).sqrt() * (1 - a_t / a_prev).sqrt()
        direction = (1 - a_prev - sigma**2).clamp(min=0).sqrt()
        x = a_prev.sqrt().item() * x0 + direction.item() * eps
        if sigma > 0:
            x = x + sigma.item() * randn(x.shape, generator, "cpu")
    return x


@pytest.mark.parametrize("kind", ["linear", "cosine"])
@pytest.mark.parametrize("steps", [2, 7, 50, 200])
@pytest.mark.parametrize("eta, clip", [(0.0, None), (1.0, None), (0.5, 1.0)])
def test_ddim_is_bit_identical_to_the_previous_sampler(mlp, kind, steps, eta, clip):
    """Same x_T (drawn first from the per-sample streams, as the old sampler did), same streams for z."""
    schedule = getattr(NoiseSchedule, kind)(200)
    old_generators, new_generators = sample_generators(5, 6), sample_generators(5, 6)
    expected = _previous_ddim(mlp, schedule, randn((6, 2), old_generators, "cpu"), steps, eta, old_generators, clip)
    x_T = randn((6, 2), new_generators, "cpu")
    got = ddim_sample(
        mlp, x_T, uniform_timesteps(200, steps), schedule, eta=eta, generator=new_generators, clip_denoised=clip
    )
    assert torch.equal(got, expected)


# --------------------------------------------------------------------------------- DDPM and oracles


def _ho_algorithm_2(model: nn.Module, schedule: NoiseSchedule, x_T: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Ho et al. 2020, Algorithm 2 in float64, 0-based t, sigma_t^2 = beta_tilde_t =
    (1 - abar_{t-1}) / (1 - abar_t) beta_t; z drawn from ``g`` for t > 0, in the sampler's order."""
    x = x_T.double()
    betas = schedule.betas.tolist()
    abar = schedule.alpha_bar.tolist()
    for t in reversed(range(schedule.num_steps)):
        eps = model(x.float(), torch.full((x.shape[0],), t, dtype=torch.long)).double()
        mean = (x - betas[t] / math.sqrt(1 - abar[t]) * eps) / math.sqrt(1 - betas[t])
        if t > 0:
            beta_tilde = (1 - abar[t - 1]) / (1 - abar[t]) * betas[t]
            x = mean + math.sqrt(beta_tilde) * torch.randn(x.shape, generator=g).double()
        else:
            x = mean
    return x


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_ddpm_equals_ho_algorithm_2(kind):
    schedule = getattr(NoiseSchedule, kind)(200)
    model = LinearEps(schedule.num_steps)
    x_T = _noise(6, 2, seed=11)
    got = ddpm_sample(model, x_T, schedule, generator=_gen(12))
    expected = _ho_algorithm_2(model, schedule, x_T, _gen(12))
    torch.testing.assert_close(got.double(), expected, rtol=1e-4, atol=1e-4)


def test_ddpm_visits_every_timestep_from_T_minus_1():
    schedule = NoiseSchedule.linear(30)
    model, x_T = LinearEps(30), _noise(3, 2)
    recorder, steps = TrajectoryRecorder(), []
    out = ddpm_sample(model, x_T, schedule, generator=_gen(0), callback=lambda s: (steps.append(s), recorder(s)))
    assert [s.t for s in steps] == list(range(29, -1, -1))
    assert [s.t_prev for s in steps] == list(range(28, -2, -1))
    traj = recorder.trajectory()
    assert traj.shape == (31, 3, 2)
    assert torch.equal(traj[-1], out)
    assert torch.equal(out, ddpm_sample(model, x_T, schedule, generator=_gen(0)))


@pytest.mark.parametrize("kind", ["linear", "cosine"])
@pytest.mark.parametrize("spacing", sorted(TIMESTEP_SPACINGS))
@pytest.mark.parametrize("steps", [1, 10, 100])
def test_ddim_with_the_dirac_oracle_returns_the_point(kind, spacing, steps):
    """With the exact eps of a Dirac at mu the predicted x0 is mu at every step, so DDIM (eta = 0) lands on mu
    from any x_T on any grid. In float64: a first step at T-1 divides by sqrt(abar_{T-1}) (~5e-4 for the cosine
    schedule at T = 100), which would amplify float32 rounding of eps to ~1e-4."""
    schedule = getattr(NoiseSchedule, kind)(100)
    mu = torch.tensor([2.0, -1.0, 0.5], dtype=torch.float64)
    x_T = 3 * _noise(5, 3, seed=steps, dtype=torch.float64)
    out = ddim_sample(DiracOracle(schedule, mu), x_T, timesteps(schedule, steps, spacing), schedule)
    torch.testing.assert_close(out, mu.expand(5, 3), atol=1e-9, rtol=0)


def test_ddpm_with_the_dirac_oracle_returns_the_point():
    schedule = NoiseSchedule.linear(100)
    mu = torch.tensor([[-1.0, 3.0]])
    out = ddpm_sample(DiracOracle(schedule, mu), _noise(4, 2), schedule, generator=_gen(5))
    torch.testing.assert_close(out, mu.expand(4, 2), atol=1e-4, rtol=0)


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_one_ddim_step_from_pure_noise_lands_at_the_gaussian_posterior_mean(kind):
    """Issue 7: one DDIM step on the 1-step grid ``[T-1]`` goes to ``abar_prev = 1``, i.e. returns the x0 estimate,
    which for the exact model is ``E[x0 | x_T]`` in closed form. For the cosine schedule ``abar_{T-1}`` ~ 2e-9, so
    that is the data mean. The old 1-step grid ``[0]`` evaluated at ``t = 0`` and returned ~``x_T``."""
    schedule = getattr(NoiseSchedule, kind)(1000)
    mu, s = torch.tensor([1.5, -2.0, 0.5], dtype=torch.float64), 0.5
    model = GaussianOracle(schedule, mu, s)
    x_T = randn((64, 3), sample_generators(0, 64), "cpu").double()
    grid = uniform_timesteps(1000, 1)
    assert grid == [999]
    out = ddim_sample(model, x_T, grid, schedule)
    abar = float(schedule.alpha_bar[999])
    torch.testing.assert_close(out, _posterior_mean(x_T, abar, mu, s), atol=1e-8, rtol=0)
    if kind == "cosine":
        assert abar < 1e-8
        torch.testing.assert_close(out, mu.expand(64, 3), atol=1e-3, rtol=0)
    assert (out - x_T).norm(dim=1).mean() > 1.0  # it moved: pure noise became data
    old_grid = ddim_sample(model, x_T, [0], schedule)  # what the old steps=1 grid did
    torch.testing.assert_close(old_grid, x_T, atol=1e-2, rtol=0)


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_ddim_with_the_gaussian_oracle_maps_noise_to_the_data_distribution(kind):
    """Deterministic DDIM with the exact model discretizes the probability-flow ODE, which for Gaussian data maps
    ``x_T`` to ``mu + s z``, ``z = (x_T - sqrt(abar_T) mu) / sqrt(abar_T s^2 + 1 - abar_T)``. DDIM is first order:
    200 steps land within a few 1e-2 of that map, 4x closer than 50 steps; the samples' mean and std match
    ``mu, s`` within sampling error (n = 20000: sd of the mean s / sqrt(n) = 0.0035, of the std ~0.0025)."""
    schedule = getattr(NoiseSchedule, kind)(1000)
    mu, s = torch.tensor([1.5, -2.0], dtype=torch.float64), 0.5
    model = GaussianOracle(schedule, mu, s)
    x_T = _noise(20000, 2, seed=1, dtype=torch.float64)
    abar_T = float(schedule.alpha_bar[-1])
    exact = mu + s * (x_T - math.sqrt(abar_T) * mu) / math.sqrt(abar_T * s**2 + 1 - abar_T)
    out = ddim_sample(model, x_T, uniform_timesteps(1000, 200), schedule)
    coarse = ddim_sample(model, x_T, uniform_timesteps(1000, 50), schedule)
    error, coarse_error = (out - exact).abs().max(), (coarse - exact).abs().max()
    assert error < 0.05
    assert error < coarse_error / 3
    torch.testing.assert_close(out.mean(0), mu, atol=0.02, rtol=0)
    torch.testing.assert_close(out.std(0), torch.full((2,), s, dtype=torch.float64), atol=0.02, rtol=0)


def test_clip_denoised_clamps_the_final_sample():
    """The last step returns the (clipped) x0 prediction, which for the Dirac oracle is clamp(mu)."""
    schedule = NoiseSchedule.linear(100)
    mu = torch.tensor([3.0, -0.5])
    grid = uniform_timesteps(100, 10)
    out = ddim_sample(DiracOracle(schedule, mu), _noise(4, 2), grid, schedule, clip_denoised=1.0)
    torch.testing.assert_close(out, torch.tensor([1.0, -0.5]).expand(4, 2), atol=1e-4, rtol=0)


def test_images_shape_is_preserved():
    schedule = NoiseSchedule.linear(50)
    mu = torch.full((1, 4, 4), 0.25)
    out = ddim_sample(DiracOracle(schedule, mu), _noise(2, 1, 4, 4), uniform_timesteps(50, 5), schedule)
    assert out.shape == (2, 1, 4, 4)
    torch.testing.assert_close(out, mu.expand(2, 1, 4, 4), atol=1e-4, rtol=0)


def test_cond_is_passed_to_the_model():
    seen = []

    def model(x, t, y):
        seen.append(y)
        return torch.zeros_like(x)

    y = torch.tensor([1, 2, 3])
    ddim_sample(model, _noise(3, 2), uniform_timesteps(50, 4), NoiseSchedule.linear(50), cond={"y": y})
    assert len(seen) == 4 and all(s is y for s in seen)


@pytest.mark.parametrize("grid", [[99, 87, 51, 50, 3], [40], [99, 0]])
def test_the_model_sees_exactly_the_given_grid(grid):
    seen: list[int] = []

    def model(x, t):
        assert t.dtype == torch.long and t.shape == (x.shape[0],) and bool((t == t[0]).all())
        seen.append(int(t[0]))
        return torch.zeros_like(x)

    ddim_sample(model, _noise(2, 2), grid, NoiseSchedule.linear(100))
    assert seen == grid


# --------------------------------------------------------------------------------- callback and recorder


@pytest.mark.parametrize("clip", [None, 0.5])
def test_callback_reports_every_step_consistently(clip):
    """Step i's output is step i+1's input; with eta = 0 each output is
    ``sqrt(abar_prev) x0 + sqrt(1 - abar_prev) eps``; eps is the model's (or, after clipping, the one that
    reproduces x_t from the clipped x0: ``x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps``)."""
    schedule = NoiseSchedule.cosine(100)
    grid = quadratic_timesteps(100, 8)
    steps: list[SamplerStep] = []
    model = ModelConfig.of("mlp", hidden=16).build(seed=0).double().eval()
    x_T = 2 * _noise(5, 2, dtype=torch.float64)
    out = ddim_sample(model, x_T, grid, schedule, clip_denoised=clip, callback=steps.append)
    assert [s.i for s in steps] == list(range(len(grid)))
    assert [s.t for s in steps] == grid
    assert [s.t_prev for s in steps] == [*grid[1:], -1]
    assert torch.equal(steps[0].x_t, x_T)
    assert torch.equal(steps[-1].x_prev, out)
    abar = schedule.alpha_bar
    for step, following in zip(steps, steps[1:], strict=False):
        assert torch.equal(step.x_prev, following.x_t)
    for step in steps:
        a_t = float(abar[step.t])
        a_prev = float(abar[step.t_prev]) if step.t_prev >= 0 else 1.0
        expected = math.sqrt(a_prev) * step.x0 + math.sqrt(1 - a_prev) * step.eps
        torch.testing.assert_close(step.x_prev, expected, rtol=1e-12, atol=1e-10)
        torch.testing.assert_close(step.x_t, math.sqrt(a_t) * step.x0 + math.sqrt(1 - a_t) * step.eps, rtol=0,
                                   atol=1e-9)  # fmt: skip
        if clip is None:
            t_batch = torch.full((5,), step.t, dtype=torch.long)
            assert torch.equal(step.eps, model(step.x_t, t_batch))
        else:
            assert bool((step.x0.abs() <= clip).all())
    if clip is not None:
        assert bool((steps[0].x0.abs() == clip).any())  # the clip was active at the noisy end


@given(steps=st.integers(1, 60), eta=st.sampled_from([0.0, 0.5, 1.0]))
def test_trajectory_recorder_runs_from_x_T_to_the_sample(steps, eta):
    schedule = NoiseSchedule.cosine(60)
    model, x_T, grid = LinearEps(60), _noise(3, 2, seed=steps), uniform_timesteps(60, steps)
    recorder = TrajectoryRecorder()
    out = ddim_sample(model, x_T, grid, schedule, eta=eta, generator=_gen(steps), callback=recorder)
    traj, x0 = recorder.trajectory(), recorder.x0_estimates()
    assert traj.shape == (steps + 1, 3, 2) and x0.shape == (steps, 3, 2)
    assert torch.equal(traj[0], x_T)
    assert torch.equal(traj[-1], out)
    assert torch.equal(x0[-1], out)  # the last step goes to abar = 1 and returns its x0 estimate
    assert torch.equal(out, ddim_sample(model, x_T, grid, schedule, eta=eta, generator=_gen(steps)))


def test_trajectory_recorder_restarts_and_can_skip_x0():
    schedule = NoiseSchedule.linear(50)
    model = LinearEps(50)
    recorder = TrajectoryRecorder(record_x0=False)
    with pytest.raises(ValueError, match="nothing recorded"):
        recorder.trajectory()
    ddim_sample(model, _noise(2, 2, seed=0), uniform_timesteps(50, 7), schedule, callback=recorder)
    out = ddim_sample(model, _noise(2, 2, seed=1), uniform_timesteps(50, 4), schedule, callback=recorder)
    traj = recorder.trajectory()
    assert traj.shape == (5, 2, 2)  # only the latest call
    assert torch.equal(traj[0], _noise(2, 2, seed=1)) and torch.equal(traj[-1], out)
    with pytest.raises(ValueError, match="record_x0=False"):
        recorder.x0_estimates()


# ---------------------------------------------------------------------------------------------- grids


def test_uniform_is_rounded_linspace_and_one_step_is_T_minus_1():
    for T, steps in [(100, 12), (1000, 50), (1000, 1000), (1000, 27), (37, 5), (2, 2)]:
        expected = torch.linspace(0, T - 1, steps).round().long().tolist()[::-1]
        assert uniform_timesteps(T, steps) == expected
    assert uniform_timesteps(100, 12) == [round(i * 99 / 11) for i in range(12)][::-1]
    assert uniform_timesteps(1000, 1) == [999]


def test_leading_is_diffusers_and_skips_the_noisiest_step():
    """diffusers: ``(arange(0, steps) * (T // steps)).round()[::-1]`` with steps_offset = 0."""
    assert leading_timesteps(1000, 50) == list(range(980, -1, -20))
    assert leading_timesteps(1000, 3) == [666, 333, 0]
    assert leading_timesteps(1000, 1) == [0]  # the flaw Lin et al. 2024 point out: the first step is not T-1


def test_trailing_is_diffusers_and_starts_at_T_minus_1():
    """diffusers: ``round(arange(T, 0, -T / steps)) - 1``."""
    got = trailing_timesteps(1000, 50)
    assert got[:3] == [999, 979, 959] and got[-1] == 19 and len(got) == 50
    assert got == list(range(999, 0, -20))
    assert trailing_timesteps(10, 3) == [9, 6, 2]  # arange(10, 0, -3.33) = 10, 6.67, 3.33
    assert trailing_timesteps(1000, 1) == [999]
    # diffusers' float arange gives 14 points for (15, 13), the last one a timestep of -1; we keep 13
    assert trailing_timesteps(15, 13) == [14, 13, 12, 11, 9, 8, 7, 6, 5, 4, 2, 1, 0]


def test_quadratic_is_floor_c_k_squared_and_deduplicates():
    """``t_k = floor((T-1) k^2 / (steps-1)^2)``: distinct exactly while ``(steps-1)^2 <= T-1``."""
    assert quadratic_timesteps(100, 4) == [99, 44, 11, 0]  # c = 99 / 9 = 11: 11 k^2
    assert quadratic_timesteps(100, 1) == [99]
    for steps in range(2, 60):
        grid = quadratic_timesteps(100, steps)
        assert (len(grid) == steps) == ((steps - 1) ** 2 <= 99), steps
    grid = quadratic_timesteps(100, 20)  # c = 99 / 361 < 1: k = 0 and k = 1 both give 0
    assert grid == sorted({99 * k * k // 361 for k in range(20)}, reverse=True)
    assert len(grid) < 20 and grid[0] == 99 and grid[-1] == 0


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_snr_grid_is_uniform_in_log_snr_and_deduplicates(kind):
    """Brute force: each of the ``steps`` log-SNR targets, evenly spaced from log SNR(T-1) to log SNR(0), goes to
    the timestep nearest to it in log-SNR; the grid is those timesteps, each once, descending."""
    schedule = getattr(NoiseSchedule, kind)(1000)
    log_snr = torch.log(schedule.alpha_bar / (1 - schedule.alpha_bar))

    def brute_force(steps: int) -> list[int]:
        targets = torch.linspace(float(log_snr[-1]), float(log_snr[0]), steps, dtype=torch.float64)
        nearest = (log_snr[None, :] - targets[:, None]).abs().argmin(dim=1)
        return sorted(set(nearest.tolist()), reverse=True)

    for steps in (1, 2, 12, 50, 1000):
        grid = snr_timesteps(schedule, steps)
        assert grid == brute_force(steps), steps
        assert grid[0] == 999 and (steps == 1 or grid[-1] == 0)
    # Targets spaced by more than the widest log-SNR cell of a timestep (half the gap between its neighbours)
    # never share a timestep: no duplicates up to that bound; the full 1000-step grid does have some.
    cells = torch.cat([log_snr[:1] - log_snr[1:2], log_snr[:-2] - log_snr[2:], log_snr[-2:-1] - log_snr[-1:]]) / 2
    bound = int((log_snr[0] - log_snr[-1]) / cells.max())
    assert bound >= 3
    for steps in range(1, bound + 1):
        assert len(snr_timesteps(schedule, steps)) == steps, steps
    assert len(snr_timesteps(schedule, 1000)) < 1000


@pytest.mark.parametrize("spacing", ["uniform", "trailing", "quadratic", "snr"])
@pytest.mark.parametrize("steps", [1, 2, 10, 100])
def test_grids_start_at_T_minus_1(spacing, steps):
    schedule = NoiseSchedule.cosine(100)
    grid = timesteps(schedule, steps, spacing)
    assert grid[0] == 99 and len(grid) <= steps
    assert check_timesteps(grid, 100) == grid


def test_timesteps_dispatches_by_name():
    schedule = NoiseSchedule.linear(1000)
    assert timesteps(schedule, 50) == uniform_timesteps(1000, 50)
    assert timesteps(schedule, 50, "leading") == leading_timesteps(1000, 50)
    assert timesteps(schedule, 50, "trailing") == trailing_timesteps(1000, 50)
    assert timesteps(schedule, 50, "quadratic") == quadratic_timesteps(1000, 50)
    assert timesteps(schedule, 50, "snr") == snr_timesteps(schedule, 50)
    with pytest.raises(ValueError, match=r"unknown spacing 'karras'; choose one of \['leading', 'quadratic'"):
        timesteps(schedule, 50, "karras")


@pytest.mark.parametrize("spacing", sorted(TIMESTEP_SPACINGS))
@pytest.mark.parametrize("steps", [0, 51, -3])
def test_grid_builders_reject_bad_step_counts(spacing, steps):
    with pytest.raises(ValueError, match=rf"steps must be in \[1, 50\].*got {steps}"):
        timesteps(NoiseSchedule.linear(50), steps, spacing)


@pytest.mark.parametrize(
    "grid, match",
    [
        ([], "non-empty"),
        ([3, 5, 1], "strictly decreasing, got 3 then 5 at positions 0, 1"),
        ([5, 5, 1], "strictly decreasing, got 5 then 5"),
        ([50, 10], r"\[0, 49\], got 50 at position 0"),
        ([10, -1], r"\[0, 49\], got -1 at position 1"),
        ([10, 4.0], "integers, got 4.0 at position 1"),
        ([True], "integers, got True"),
        (torch.tensor([9.0, 1.0]), "integers, got 9.0"),
    ],
    ids=["empty", "increasing", "repeated", "too-large", "negative", "float", "bool", "float-tensor"],
)
def test_check_timesteps_rejects_bad_grids(grid, match):
    with pytest.raises(ValueError, match=match):
        check_timesteps(grid, 50)
    with pytest.raises(ValueError, match=match):  # every sampler checks its grid
        ddim_sample(LinearEps(50), _noise(2, 2), grid, NoiseSchedule.linear(50))


def test_check_timesteps_accepts_tensors_and_returns_ints():
    got = check_timesteps(torch.tensor([40, 7, 0]), 50)
    assert got == [40, 7, 0] and all(type(t) is int for t in got)


@st.composite
def _schedule_and_steps(draw: st.DrawFn) -> tuple[int, int]:
    num_steps = draw(st.integers(2, 400))
    return num_steps, draw(st.integers(1, num_steps))


@given(_schedule_and_steps())
def test_every_builder_returns_a_valid_grid(case):
    num_steps, steps = case
    schedule = NoiseSchedule.cosine(num_steps)
    for spacing in TIMESTEP_SPACINGS:
        grid = timesteps(schedule, steps, spacing)
        assert check_timesteps(grid, num_steps) == grid, spacing
        assert 1 <= len(grid) <= steps, spacing
        if spacing in ("uniform", "leading", "trailing"):
            assert len(grid) == steps, spacing
        if spacing != "leading":
            assert grid[0] == num_steps - 1, spacing


# ---------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"eta": -0.1}, r"eta must be in \[0, 1\], got -0.1"),
        ({"eta": 1.5}, r"eta must be in \[0, 1\], got 1.5"),
        ({"eta": float("nan")}, "got nan"),
        ({"eta": 0.5, "generator": None}, "Generator"),
        ({"generator": sample_generators(0, 3)}, "3 per-sample generators for a batch of 4"),
        ({"timesteps": [60, 10]}, r"\[0, 49\], got 60"),
    ],
    ids=["eta-negative", "eta-above-one", "eta-nan", "no-generator", "generator-count", "grid-beyond-T"],
)
def test_bad_arguments_raise(kwargs, match):
    args = {"timesteps": uniform_timesteps(50, 10), "eta": 0.0, "generator": _gen(0)} | kwargs
    with pytest.raises(ValueError, match=match):
        ddim_sample(LinearEps(50), _noise(4, 2), schedule=NoiseSchedule.linear(50), **args)


def test_ddpm_requires_a_generator():
    with pytest.raises(ValueError, match="Generator"):
        ddpm_sample(LinearEps(50), _noise(4, 2), NoiseSchedule.linear(50), generator=None)

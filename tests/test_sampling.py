"""Samplers: determinism, per-sample streams, DDPM against Ho et al. Algorithm 2, and a closed-form oracle."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from diffbench.models import ModelConfig
from diffbench.sampling import ddim_sample, ddpm_sample, sample_generators
from diffbench.schedules import NoiseSchedule


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


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


def test_ddim_eta0_is_deterministic_given_the_seed(mlp):
    schedule = NoiseSchedule.linear(100)
    a = ddim_sample(mlp, schedule, (16, 2), 20, eta=0.0, generator=_gen(3))
    b = ddim_sample(mlp, schedule, (16, 2), 20, eta=0.0, generator=_gen(3))
    assert torch.equal(a, b)
    assert not torch.equal(a, ddim_sample(mlp, schedule, (16, 2), 20, eta=0.0, generator=_gen(4)))
    # with eta = 0 the generator is only used for x_T
    x_T = torch.randn(16, 2, generator=_gen(3))
    assert torch.equal(a, ddim_sample(mlp, schedule, (16, 2), 20, eta=0.0, generator=_gen(99), x_T=x_T))


def test_ddim_eta1_is_reproducible_and_uses_noise(mlp):
    schedule = NoiseSchedule.linear(100)
    x_T = torch.randn(8, 2, generator=_gen(0))
    a = ddim_sample(mlp, schedule, (8, 2), 20, eta=1.0, generator=_gen(1), x_T=x_T)
    assert torch.equal(a, ddim_sample(mlp, schedule, (8, 2), 20, eta=1.0, generator=_gen(1), x_T=x_T))
    assert not torch.equal(a, ddim_sample(mlp, schedule, (8, 2), 20, eta=1.0, generator=_gen(2), x_T=x_T))


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_per_sample_generators_make_samples_independent_of_the_batch(mlp, eta):
    schedule = NoiseSchedule.cosine(100)
    small = ddim_sample(mlp, schedule, (4, 2), 25, eta=eta, generator=sample_generators(7, 4))
    large = ddim_sample(mlp, schedule, (7, 2), 25, eta=eta, generator=sample_generators(7, 7))
    assert torch.equal(small, large[:4])


def test_per_sample_generator_i_gives_x_T_row_i():
    schedule = NoiseSchedule.linear(50)
    traj = ddim_sample(
        lambda x, t: torch.zeros_like(x), schedule, (5, 3), 5, generator=sample_generators(2, 5), return_trajectory=True
    )
    for i, g in enumerate(sample_generators(2, 5)):
        assert torch.equal(traj[0, i], torch.randn(3, generator=g))


def test_sample_generators_seed_layout():
    gens = sample_generators(3, 4)
    for i, g in enumerate(gens):
        assert g.initial_seed() == 3 * 2**20 + i


def _ho_algorithm_2(model: nn.Module, schedule: NoiseSchedule, shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """Ho et al. 2020, Algorithm 2 in float64, 0-based t, sigma_t^2 = beta_tilde_t =
    (1 - abar_{t-1}) / (1 - abar_t) beta_t; noise drawn in the sampler's order (x_T, then z for t > 0)."""
    g = _gen(seed)
    x = torch.randn(shape, generator=g).double()
    betas = schedule.betas.tolist()
    abar = schedule.alpha_bar.tolist()
    for t in reversed(range(schedule.num_steps)):
        eps = model(x.float(), torch.full((shape[0],), t, dtype=torch.long)).double()
        mean = (x - betas[t] / math.sqrt(1 - abar[t]) * eps) / math.sqrt(1 - betas[t])
        if t > 0:
            beta_tilde = (1 - abar[t - 1]) / (1 - abar[t]) * betas[t]
            x = mean + math.sqrt(beta_tilde) * torch.randn(shape, generator=g).double()
        else:
            x = mean
    return x


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_ddpm_equals_ho_algorithm_2(kind):
    schedule = getattr(NoiseSchedule, kind)(200)
    model = LinearEps(schedule.num_steps)
    got = ddpm_sample(model, schedule, (6, 2), _gen(11))
    expected = _ho_algorithm_2(model, schedule, (6, 2), 11)
    torch.testing.assert_close(got.double(), expected, rtol=1e-4, atol=1e-4)


def test_ddpm_trajectory_covers_every_timestep():
    schedule = NoiseSchedule.linear(30)
    model = LinearEps(30)
    traj = ddpm_sample(model, schedule, (3, 2), _gen(0), return_trajectory=True)
    assert traj.shape == (31, 3, 2)
    assert torch.equal(traj[-1], ddpm_sample(model, schedule, (3, 2), _gen(0)))


@pytest.mark.parametrize("kind", ["linear", "cosine"])
@pytest.mark.parametrize("steps", [1, 10, 100])
def test_ddim_with_the_dirac_oracle_returns_the_point(kind, steps):
    """With the exact eps of a Dirac at mu the predicted x0 is mu at every step, so DDIM (eta = 0) lands on mu
    from any x_T."""
    schedule = getattr(NoiseSchedule, kind)(100)
    mu = torch.tensor([2.0, -1.0, 0.5])
    x_T = 3 * torch.randn(5, 3, generator=_gen(steps))
    out = ddim_sample(DiracOracle(schedule, mu), schedule, (5, 3), steps, eta=0.0, generator=_gen(0), x_T=x_T)
    torch.testing.assert_close(out, mu.expand(5, 3), atol=1e-4, rtol=0)


def test_ddpm_with_the_dirac_oracle_returns_the_point():
    schedule = NoiseSchedule.linear(100)
    mu = torch.tensor([[-1.0, 3.0]])
    out = ddpm_sample(DiracOracle(schedule, mu), schedule, (4, 2), _gen(5))
    torch.testing.assert_close(out, mu.expand(4, 2), atol=1e-4, rtol=0)


def test_clip_denoised_clamps_the_final_sample():
    """The last step returns the (clipped) x0 prediction, which for the Dirac oracle is clamp(mu)."""
    schedule = NoiseSchedule.linear(100)
    mu = torch.tensor([3.0, -0.5])
    out = ddim_sample(DiracOracle(schedule, mu), schedule, (4, 2), 10, generator=_gen(0), clip_denoised=1.0)
    torch.testing.assert_close(out, torch.tensor([1.0, -0.5]).expand(4, 2), atol=1e-4, rtol=0)


def test_images_shape_is_preserved():
    schedule = NoiseSchedule.linear(50)
    mu = torch.full((1, 4, 4), 0.25)
    out = ddim_sample(DiracOracle(schedule, mu), schedule, (2, 1, 4, 4), 5, generator=_gen(0))
    assert out.shape == (2, 1, 4, 4)
    torch.testing.assert_close(out, mu.expand(2, 1, 4, 4), atol=1e-4, rtol=0)


def test_cond_is_passed_to_the_model():
    seen = []

    def model(x, t, y):
        seen.append(y)
        return torch.zeros_like(x)

    y = torch.tensor([1, 2, 3])
    ddim_sample(model, NoiseSchedule.linear(50), (3, 2), 4, generator=_gen(0), cond={"y": y})
    assert len(seen) == 4 and all(s is y for s in seen)


@given(steps=st.integers(1, 60), eta=st.sampled_from([0.0, 0.5, 1.0]))
def test_trajectory_shape_and_endpoints(steps, eta):
    schedule = NoiseSchedule.cosine(60)
    model = LinearEps(60)
    traj = ddim_sample(model, schedule, (3, 2), steps, eta=eta, generator=_gen(steps), return_trajectory=True)
    assert traj.shape == (steps + 1, 3, 2)
    assert torch.equal(traj[0], torch.randn(3, 2, generator=_gen(steps)))
    assert torch.equal(traj[-1], ddim_sample(model, schedule, (3, 2), steps, eta=eta, generator=_gen(steps)))


def test_model_timesteps_are_evenly_spaced_and_descending():
    seen: list[int] = []

    def model(x, t):
        assert t.dtype == torch.long and t.shape == (x.shape[0],) and bool((t == t[0]).all())
        seen.append(int(t[0]))
        return torch.zeros_like(x)

    ddim_sample(model, NoiseSchedule.linear(100), (2, 2), 12, generator=_gen(0))
    expected = [round(i * 99 / 11) for i in range(12)][::-1]
    assert seen == expected


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"eta": -0.1}, "-0.1"),
        ({"eta": float("nan")}, "nan"),
        ({"steps": 0}, "got 0"),
        ({"steps": 51}, "got 51"),
        ({"generator": None}, "Generator"),
        ({"generator": sample_generators(0, 3)}, "3 per-sample generators for a batch of 4"),
    ],
    ids=["eta-negative", "eta-nan", "steps-zero", "steps-too-many", "no-generator", "generator-count"],
)
def test_bad_arguments_raise(kwargs, match):
    args = {"steps": 10, "eta": 0.0, "generator": _gen(0)} | kwargs
    with pytest.raises(ValueError, match=match):
        ddim_sample(LinearEps(50), NoiseSchedule.linear(50), (4, 2), **args)

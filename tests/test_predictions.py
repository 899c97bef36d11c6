"""Closed-form checks of the sampler side of step distillation: DDIM with the exact eps of Gaussian data is a
product of per-step linear factors, its output law tends to the data law as the grid refines, a point mass is
hit at any step count, the eps / v / x0 parameterisations convert both ways, and bad grids or etas fail naming
the value."""

from __future__ import annotations

import math

import pytest
import torch
from gaussian_law import alpha_sigma, gaussian_eps

from diffbench.sampling import SamplerStep, ddim_sample, predict_x0_eps, timesteps, uniform_timesteps
from diffbench.schedules import NoiseSchedule

T = 1000
MU = torch.tensor([1.5, -2.0], dtype=torch.float64)


def _noise(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def ddim_factor(schedule: NoiseSchedule, t: int, t_prev: int, s: float) -> float:
    """One exact-model DDIM step (eta = 0) is affine: with ``d = x_t - alpha mu`` and ``D = alpha^2 s^2 + sigma^2``,
    ``eps = sigma d / D``, ``x0 = (x_t - sigma eps) / alpha = mu + alpha s^2 d / D`` and
    ``x_prev = alpha_prev x0 + sigma_prev eps``, so ``x_prev - alpha_prev mu = k d`` with
    ``k = (alpha_prev alpha s^2 + sigma_prev sigma) / (alpha^2 s^2 + sigma^2)`` (last step: alpha_prev = 1,
    sigma_prev = 0, ``k = alpha s^2 / D``, ending at ``x0``)."""
    alpha, sigma = alpha_sigma(schedule, t)
    alpha_prev, sigma_prev = alpha_sigma(schedule, t_prev)
    return (alpha_prev * alpha * s**2 + sigma_prev * sigma) / (alpha**2 * s**2 + sigma**2)


def ddim_gain(schedule: NoiseSchedule, grid: list[int], s: float) -> float:
    """``K = prod_k k``: DDIM maps ``x_T`` to ``mu + K (x_T - alpha_{t_0} mu)``."""
    ends = [*grid[1:], -1]
    return math.prod(ddim_factor(schedule, t, t_prev, s) for t, t_prev in zip(grid, ends, strict=True))


# ----------------------------------------------------------------------------- DDIM with the exact model


@pytest.mark.parametrize("kind", ["linear", "cosine"])
@pytest.mark.parametrize("steps", [1, 2, 10, 100])
def test_ddim_with_the_gaussian_oracle_is_the_product_of_closed_form_factors(kind, steps):
    """Every step obeys ``x_prev - alpha_prev mu = k (x_t - alpha mu)`` (see :func:`ddim_factor`), so the output is
    ``mu + K (x_T - alpha_{t_0} mu)`` with ``K = prod k``: on the same ``x_T`` its mean is
    ``mu + K (mean(x_T) - alpha_{t_0} mu)`` and its std ``K std(x_T)``, to float64 precision."""
    schedule = getattr(NoiseSchedule, kind)(T)
    s = 0.5
    grid = uniform_timesteps(T, steps)
    x_T = _noise(512, 2, seed=steps)
    steps_seen: list[SamplerStep] = []
    out = ddim_sample(gaussian_eps(schedule, MU, s), x_T, grid, schedule, callback=steps_seen.append)

    for step in steps_seen:
        k = ddim_factor(schedule, step.t, step.t_prev, s)
        alpha, alpha_prev = alpha_sigma(schedule, step.t)[0], alpha_sigma(schedule, step.t_prev)[0]
        torch.testing.assert_close(step.x_prev - alpha_prev * MU, k * (step.x_t - alpha * MU), rtol=1e-10, atol=1e-10)

    gain, alpha_0 = ddim_gain(schedule, grid, s), alpha_sigma(schedule, grid[0])[0]
    # atol: the first step divides by alpha_{T-1} (4.5e-5 for the cosine schedule), which turns float64 rounding
    # of x_T ~ 1 into ~1e-11 of absolute error in the x0 estimate.
    torch.testing.assert_close(out, MU + gain * (x_T - alpha_0 * MU), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(out.mean(0), MU + gain * (x_T.mean(0) - alpha_0 * MU), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(out.std(0), gain * x_T.std(0), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_ddim_output_law_tends_to_the_data_law_and_is_under_dispersed_on_coarse_grids(kind):
    """``x_T`` drawn from the true marginal at ``t_0 = T-1``, ``N(alpha mu, D_T I)``, ``D_T = alpha^2 s^2 + sigma^2``:
    the output is ``mu + K sqrt(D_T) z``. Cauchy-Schwarz gives ``k^2 <= D_prev / D`` for every factor
    (``(alpha_prev alpha s^2 + sigma_prev sigma)^2 <= (alpha_prev^2 s^2 + sigma_prev^2)(alpha^2 s^2 + sigma^2)``), so
    the telescoping product gives ``K^2 D_T <= s^2``: DDIM never over-disperses, and on coarse grids it measurably
    under-disperses. As the grid refines the ratio rises towards 1 (~0.3% short at 1000 steps). The std ratio is
    read as ``std(out) / std(z)``, which is free of sampling error; the mean is ``mu`` within sampling error."""
    schedule = getattr(NoiseSchedule, kind)(T)
    s = 0.5
    alpha_T, sigma_T = alpha_sigma(schedule, T - 1)
    spread = math.sqrt(alpha_T**2 * s**2 + sigma_T**2)
    z = _noise(2000, 2, seed=7)  # small: 4000 rows went multi-threaded, 100x slower on a busy 2-core runner
    model = gaussian_eps(schedule, MU, s)
    ratios = {}
    for steps in (1, 10, 100, 1000):
        out = ddim_sample(model, alpha_T * MU + spread * z, uniform_timesteps(T, steps), schedule)
        ratio = out.std(0) / (s * z.std(0))  # = K sqrt(D_T) / s in both dimensions
        torch.testing.assert_close(ratio, torch.full((2,), ratio[0].item(), dtype=torch.float64), rtol=0, atol=1e-9)
        ratios[steps] = ratio[0].item()
        assert ratios[steps] <= 1 + 1e-9, f"{steps} steps over-disperse: std ratio {ratios[steps]}"
        if steps == 1000:
            gap = (out.mean(0) - MU).abs().max().item()
            assert gap < 4 * s / math.sqrt(len(z)), f"output mean {out.mean(0).tolist()} is {gap:.2e} from mu"
    assert ratios[1] < ratios[10] < ratios[100] < ratios[1000], ratios
    assert ratios[10] < 0.9, f"10 steps should be measurably under-dispersed: std ratio {ratios[10]:.4f}"
    assert abs(ratios[1000] - 1) < 0.01, f"1000-step output std is {abs(ratios[1000] - 1):.2%} away from s"


@pytest.mark.parametrize("kind", ["linear", "cosine"])
@pytest.mark.parametrize("steps", [1, 2, 7, 50])
def test_ddim_maps_everything_to_a_point_mass_at_any_step_count(kind, steps):
    """With ``s = 0`` every factor's last one is ``alpha s^2 / D = 0``: the output is ``mu`` whatever ``x_T`` and the
    grid (up to the float64 rounding of the first division by ``alpha_{T-1}``)."""
    schedule = getattr(NoiseSchedule, kind)(T)
    assert ddim_gain(schedule, uniform_timesteps(T, steps), 0.0) == 0.0
    x_T = 3 * _noise(64, 2, seed=steps)
    out = ddim_sample(gaussian_eps(schedule, MU, 0.0), x_T, uniform_timesteps(T, steps), schedule)
    torch.testing.assert_close(out, MU.expand(64, 2), rtol=0, atol=1e-10)


def test_ddim_eta0_is_deterministic_given_the_noise():
    schedule = NoiseSchedule.linear(T)
    model, grid = gaussian_eps(schedule, MU, 0.5), uniform_timesteps(T, 10)
    a = ddim_sample(model, _noise(32, 2, seed=1), grid, schedule)
    assert torch.equal(a, ddim_sample(model, _noise(32, 2, seed=1), grid, schedule))
    b = ddim_sample(model, _noise(32, 2, seed=2), grid, schedule)
    assert not torch.isclose(a, b).any()  # the map is injective (K > 0): every sample moved


# ------------------------------------------------------------------------------------ parameterisations


def _to_output(x0: torch.Tensor, eps: torch.Tensor, abar: float, prediction: str) -> torch.Tensor:
    """What a perfect network outputs: ``eps``, ``v = alpha eps - sigma x0`` (Salimans & Ho 2022, sec. 4) or ``x0``."""
    alpha, sigma = math.sqrt(abar), math.sqrt(1 - abar)
    return {"eps": eps, "v": alpha * eps - sigma * x0, "x0": x0}[prediction]


@pytest.mark.parametrize(
    "prediction, abar",
    [
        *[("eps", a) for a in (1e-4, 0.3, 0.9999)],
        *[("x0", a) for a in (1e-4, 0.3, 0.9999)],
        *[("v", a) for a in (0.0, 1e-12, 1e-6, 0.3, 1 - 1e-6, 1 - 1e-12, 1.0)],
    ],
)
def test_predict_x0_eps_inverts_each_parameterisation(prediction, abar):
    """From the true ``(x0, eps)`` and ``x_t = alpha x0 + sigma eps``: the network output for ``prediction`` read back
    by :func:`predict_x0_eps` is ``(x0, eps)``. ``v`` needs no division (``x0 = alpha x_t - sigma v``,
    ``eps = sigma x_t + alpha v``, using ``alpha^2 + sigma^2 = 1``), so it is exact to rounding even at SNR 0 and
    SNR inf; eps and x0 divide by ``alpha`` resp. ``sigma`` and are checked away from those ends."""
    x0, eps = _noise(64, 3, seed=1), _noise(64, 3, seed=2)
    x_t = math.sqrt(abar) * x0 + math.sqrt(1 - abar) * eps
    got_x0, got_eps = predict_x0_eps(_to_output(x0, eps, abar, prediction), x_t, abar, prediction)
    tol = 1e-12 if prediction == "v" else 1e-9
    torch.testing.assert_close(got_x0, x0, rtol=0, atol=tol)
    torch.testing.assert_close(got_eps, eps, rtol=0, atol=tol)


@pytest.mark.parametrize("prediction", ["eps", "v", "x0"])
def test_predict_x0_eps_takes_a_per_sample_abar(prediction):
    """A ``[B, 1]`` ``abar`` broadcasts per row: row ``i`` equals the scalar call with ``abar_i``."""
    abar = torch.tensor([0.01, 0.5, 0.97], dtype=torch.float64)
    x_t, output = _noise(3, 4, seed=3), _noise(3, 4, seed=4)
    got_x0, got_eps = predict_x0_eps(output, x_t, abar[:, None], prediction)
    for i, a in enumerate(abar.tolist()):
        row_x0, row_eps = predict_x0_eps(output[i], x_t[i], a, prediction)
        torch.testing.assert_close(got_x0[i], row_x0, rtol=1e-15, atol=1e-15)
        torch.testing.assert_close(got_eps[i], row_eps, rtol=1e-15, atol=1e-15)


# ---------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize("steps", [0, T + 1])
def test_a_grid_of_0_or_T_plus_1_steps_is_rejected(steps):
    with pytest.raises(ValueError, match=rf"steps must be in \[1, {T}\].*got {steps}$"):
        timesteps(NoiseSchedule.linear(T), steps)


@pytest.mark.parametrize("eta", [-0.1, 1.5])
def test_ddim_rejects_eta_outside_0_1(eta):
    schedule = NoiseSchedule.linear(T)
    with pytest.raises(ValueError, match=rf"eta must be in \[0, 1\], got {eta}$"):
        ddim_sample(
            gaussian_eps(schedule, MU, 0.5),
            _noise(2, 2),
            uniform_timesteps(T, 5),
            schedule,
            eta=eta,
            generator=torch.Generator().manual_seed(0),
        )


def test_predict_x0_eps_rejects_an_unknown_prediction():
    with pytest.raises(ValueError, match="got 'score'"):
        predict_x0_eps(_noise(2, 2), _noise(2, 2), 0.5, "score")

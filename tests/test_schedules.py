"""Noise schedules: closed forms (Ho et al. 2020, Nichol & Dhariwal 2021) and the SNR <-> timestep maps."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from diffbench.schedules import NoiseSchedule, ScheduleConfig

T = 1000
KINDS = ["linear", "cosine"]
SCHEDULES = {kind: ScheduleConfig(kind, T).build() for kind in KINDS}


@pytest.fixture(params=KINDS)
def schedule(request: pytest.FixtureRequest) -> NoiseSchedule:
    return SCHEDULES[request.param]


def test_config_builds_the_named_schedule():
    for kind in KINDS:
        schedule = ScheduleConfig(kind, 50).build()
        assert schedule.name == kind
        assert schedule.num_steps == 50


def test_alpha_bar_is_the_cumulative_product_of_one_minus_beta(schedule):
    product = 1.0
    for t, beta in enumerate(schedule.betas.tolist()):
        product *= 1.0 - beta
        assert schedule.alpha_bar[t].item() == pytest.approx(product, rel=1e-12)


def test_snr_is_abar_over_one_minus_abar(schedule):
    abar = schedule.alpha_bar
    torch.testing.assert_close(schedule.snr(torch.arange(T)), abar / (1 - abar), rtol=1e-10, atol=0)


def test_snr_strictly_decreasing(schedule):
    snr = schedule.snr(torch.arange(T))
    assert bool((snr[1:] < snr[:-1]).all())


def test_linear_betas_run_from_1e4_to_002():
    betas = SCHEDULES["linear"].betas
    assert betas[0].item() == pytest.approx(1e-4, rel=1e-12)
    assert betas[-1].item() == pytest.approx(0.02, rel=1e-12)
    steps = betas.diff()
    torch.testing.assert_close(steps, torch.full_like(steps, (0.02 - 1e-4) / (T - 1)), rtol=1e-6, atol=0)


def test_cosine_alpha_bar_matches_the_closed_form():
    """Nichol & Dhariwal eq. 17 with 0-based t: abar_t = f(t+1)/f(0), f(u) = cos^2(((u/T + s)/(1 + s)) pi/2).
    The last step is excluded: its beta is clipped to max_beta = 0.999 by design."""
    s = 0.008

    def f(u: float) -> float:
        return math.cos((u / T + s) / (1 + s) * math.pi / 2) ** 2

    abar = SCHEDULES["cosine"].alpha_bar
    for t in range(T - 1):
        assert abar[t].item() == pytest.approx(f(t + 1) / f(0), rel=1e-9)
    assert SCHEDULES["cosine"].betas[-1].item() == pytest.approx(0.999)


def test_snr_timestep_round_trip_every_t(schedule):
    t = torch.arange(T)
    assert torch.equal(schedule.snr_to_timestep(schedule.snr(t)), t)


@pytest.mark.parametrize("kind", KINDS)
@given(t=st.integers(0, T - 1))
def test_snr_timestep_round_trip_integer_t(kind, t):
    schedule = SCHEDULES[kind]
    assert int(schedule.snr_to_timestep(schedule.snr(t))) == t


@pytest.mark.parametrize("kind", KINDS)
@given(log_snr=st.floats(-15.0, 15.0))
def test_snr_to_timestep_is_the_nearest_grid_point_in_log_snr(kind, log_snr):
    schedule = SCHEDULES[kind]
    grid = [math.log(v) for v in schedule.snr(torch.arange(T)).tolist()]
    best = min(abs(g - log_snr) for g in grid)
    t = int(schedule.snr_to_timestep(math.exp(log_snr)))
    assert abs(grid[t] - log_snr) == pytest.approx(best, abs=1e-12)


def test_cosine_snr_landmarks():
    """Closed form: SNR(u) = cot^2(((u + s)/(1 + s)) pi/2) for u = (t + 1)/T, so SNR 0.01 sits near u = 0.936
    (t ~ 935) and SNR 100 near u = 0.056 (t ~ 55)."""
    cosine = SCHEDULES["cosine"]
    assert abs(int(cosine.snr_to_timestep(0.01)) - 940) <= 10
    assert abs(int(cosine.snr_to_timestep(100.0)) - 55) <= 10


def test_snr_to_timestep_keeps_the_input_shape(schedule):
    snr = schedule.snr(torch.tensor([[0, 10], [500, 999]]))
    assert torch.equal(schedule.snr_to_timestep(snr), torch.tensor([[0, 10], [500, 999]]))


def test_timestep_to_snr_equals_snr_on_the_grid(schedule):
    t = torch.arange(T)
    assert torch.equal(schedule.timestep_to_snr(t.double()), schedule.snr(t))


@pytest.mark.parametrize("kind", KINDS)
@given(t=st.floats(0.0, T - 1.0))
def test_timestep_to_snr_interpolates_log_snr_monotonically(kind, t):
    schedule = SCHEDULES[kind]
    lo = min(math.floor(t), T - 2)
    frac = t - lo
    value = float(schedule.timestep_to_snr(t))
    hi_snr, lo_snr = float(schedule.snr(lo)), float(schedule.snr(lo + 1))
    assert lo_snr * (1 - 1e-12) <= value <= hi_snr * (1 + 1e-12)
    expected = math.exp((1 - frac) * math.log(hi_snr) + frac * math.log(lo_snr))
    assert value == pytest.approx(expected, rel=1e-9)
    later = min(t + 0.25, T - 1.0)
    assert float(schedule.timestep_to_snr(later)) <= value


def test_add_noise_is_the_forward_process(schedule):
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(5, 3, generator=g), torch.randn(5, 3, generator=g)
    t = torch.tensor([0, 1, 250, 700, T - 1])
    abar = schedule.alpha_bar[t].float().unsqueeze(1)
    expected = abar.sqrt() * x0 + (1 - abar).sqrt() * noise
    torch.testing.assert_close(schedule.add_noise(x0, t, noise), expected)


def test_the_noising_table_noises_bitwise_as_add_noise_at_every_timestep(schedule):
    """The trainer noises through the device-side table; a run must not change by it: same float32 bits as the
    checked ``add_noise`` for all T timesteps, on an image-shaped batch."""
    g = torch.Generator().manual_seed(1)
    t = torch.arange(T)
    x0, noise = torch.randn(T, 1, 4, 4, generator=g), torch.randn(T, 1, 4, 4, generator=g)
    table = schedule.noising_table("cpu")
    assert table.sqrt_abar.dtype == torch.float32 and table.sqrt_abar.shape == (T,)
    assert torch.equal(table.add_noise(x0, t, noise), schedule.add_noise(x0, t, noise))


@pytest.mark.parametrize("kind", KINDS)
@given(num_steps=st.integers(2, 1200))
def test_every_accepted_num_steps_gives_a_valid_schedule_or_a_clear_error(kind, num_steps):
    """The builders accept num_steps >= 2. Either the schedule is valid (SNR strictly decreasing) or the
    ValueError names the bad num_steps."""
    try:
        schedule = ScheduleConfig(kind, num_steps).build()
    except ValueError as err:
        assert str(num_steps) in str(err), f"error does not name num_steps={num_steps}: {err}"
        return
    snr = schedule.snr(torch.arange(num_steps))
    assert bool((snr[1:] < snr[:-1]).all())
    assert torch.equal(schedule.snr_to_timestep(snr), torch.arange(num_steps))


@pytest.mark.parametrize(
    "call, exc, value",
    [
        (lambda s: s.snr_to_timestep(-2.5), ValueError, "-2.5"),
        (lambda s: s.snr_to_timestep(0.0), ValueError, "0"),
        (lambda s: s.snr_to_timestep(float("inf")), ValueError, "inf"),
        (lambda s: s.snr(T), ValueError, str(T)),
        (lambda s: s.snr(-1), ValueError, "-1"),
        (lambda s: s.snr(2.5), TypeError, "2.5"),
        (lambda s: s.timestep_to_snr(T - 0.5), ValueError, str(T - 0.5)),
        (lambda s: s.timestep_to_snr(-0.25), ValueError, "-0.25"),
        (lambda s: s.timestep_to_snr(float("nan")), ValueError, "nan"),
    ],
    ids=[
        "snr-negative",
        "snr-zero",
        "snr-inf",
        "t-too-large",
        "t-negative",
        "t-float",
        "frac-t-too-large",
        "frac-t-negative",
        "frac-t-nan",
    ],
)
def test_bad_inputs_raise_naming_the_value(call, exc, value):
    with pytest.raises(exc) as info:
        call(SCHEDULES["linear"])
    assert value in str(info.value), f"message does not name {value}: {info.value}"


def test_unknown_schedule_kind_lists_the_choices():
    with pytest.raises(ValueError, match="'sigmoid'") as info:
        ScheduleConfig("sigmoid").build()
    assert "linear" in str(info.value) and "cosine" in str(info.value)


@pytest.mark.parametrize("betas", [[0.1, 1.0], [0.0, 0.5], [0.2, -0.1]])
def test_betas_outside_unit_interval_raise_naming_the_value(betas):
    with pytest.raises(ValueError) as info:
        NoiseSchedule(torch.tensor(betas))
    bad = next(b for b in betas if not 0 < b < 1)
    assert str(bad) in str(info.value), f"message does not name beta={bad}: {info.value}"

"""The snr_paths family's matrix and specs: cells, the fair-comparison baseline, seed 003's MSE tests on a model
whose answer is known, the paths' schedules, and the errors bad input gets."""

from __future__ import annotations

import pytest
import torch

from diffbench.families import snr_paths
from diffbench.metrics.discretization import diagonal_path, path_to_schedule, snr_grid
from diffbench.models import count_parameters
from diffbench.models.dual_scale import downsample2x
from diffbench.profiles import get_profile
from diffbench.schedules import NoiseSchedule

SMOKE = get_profile("smoke")


def test_every_measurement_has_a_cell_with_a_readable_unique_id():
    cells = snr_paths.cells(SMOKE)
    ids = [cell.id for cell in cells]
    assert len(ids) == len(set(ids))
    others = ("cfg", "guidance", "samplers", "size_factors", "batch_configs", "metrics")
    assert not any(word in cell_id for cell_id in ids for word in others)
    assert {cell.kind for cell in cells} == set(snr_paths.KINDS)
    # xdist deals the first cells round-robin: LIFT's training and the teacher's start on different workers.
    assert (cells[0].kind, cells[0].model, cells[1].model) == ("mse", snr_paths.LIFT, snr_paths.TEACHER)
    quality = {(c.model, c.path, c.convention) for c in cells if c.kind == "quality"}
    assert ("baseline", "single_scale", None) in quality and ("lift", "diagonal", None) in quality
    for convention in ("seed", "derived"):
        assert {("lift", p, convention) for p in ("dp_total", "dp_large")} <= quality
    schedules = {(c.spacing, c.steps) for c in cells if c.kind == "schedule"}
    assert schedules == {(s, n) for s in snr_paths.SPACINGS for n in SMOKE.snr_paths.schedule_steps}


def test_the_baseline_has_the_lift_models_parameter_count_within_five_percent():
    lift = snr_paths.model_spec(SMOKE, snr_paths.LIFT).model.build(seed=0)
    baseline = snr_paths.model_spec(SMOKE, snr_paths.BASELINE).model.build(seed=0)
    assert count_parameters(lift) == snr_paths.lift_parameters(SMOKE)
    assert abs(count_parameters(baseline) / count_parameters(lift) - 1) <= 0.05
    assert snr_paths.model_spec(SMOKE, snr_paths.LIFT).schedule == snr_paths.model_spec(SMOKE, "teacher").schedule


class ZeroEps(torch.nn.Module):
    """Predicts eps = 0 at both scales and remembers what it was asked, so the MSE is E[noise^2] exactly."""

    def __init__(self) -> None:
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(()))
        self.calls: list[tuple] = []

    def forward(self, x_large, x_small, t_large, t_small):
        self.calls.append((x_large.clone(), x_small.clone(), t_large.clone(), t_small.clone()))
        return torch.zeros_like(x_large), torch.zeros_like(x_small)


def test_seed_003s_mse_tests_score_the_noisy_scales_against_their_own_noise():
    x0 = torch.rand(6, 1, 8, 8) * 2 - 1
    schedule, seed, t = NoiseSchedule.cosine(1000), 3, 500
    model = ZeroEps()
    result = snr_paths.lift_mse_tests(model, schedule, x0, t, seed)
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed))
    noise_small = torch.randn((6, 1, 4, 4), generator=torch.Generator().manual_seed(seed + 1))
    large, small = float((noise**2).mean()), float((noise_small**2).mean())
    assert result["both_noisy"] == pytest.approx({"large": large, "small": small, "total": (large + small) / 2})
    assert result["clean_small"] == pytest.approx({"large": large, "total": large})
    assert result["clean_large"] == pytest.approx({"small": small, "total": small})
    calls = dict(zip(snr_paths.MSE_TESTS, model.calls, strict=True))
    x_large, x_small, t_large, t_small = calls["clean_small"]
    assert torch.equal(x_small, downsample2x(x0)) and t_small.eq(0).all() and t_large.eq(t).all()
    x_large, x_small, t_large, t_small = calls["clean_large"]
    assert torch.equal(x_large, x0) and t_large.eq(0).all() and t_small.eq(t).all()
    # The single-scale baseline sees the very x_t of the large scale: a zero predictor scores the same.
    assert snr_paths.baseline_mse(ZeroSingleScale(), schedule, x0, t, seed) == pytest.approx(large)


class ZeroSingleScale(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x, t):
        return torch.zeros_like(x)


def test_the_baseline_samples_on_the_diagonals_large_scale_schedule():
    options = {"num_points": 5}
    grid = snr_grid(*SMOKE.snr_paths.snr_range, 5)
    schedule = snr_paths.model_spec(SMOKE, snr_paths.LIFT).schedule.build()
    steps = SMOKE.snr_paths.sampling_steps
    t_large, t_small = path_to_schedule(diagonal_path(5), grid, steps, schedule)
    cell = snr_paths.Cell("quality", snr_paths.BASELINE, snr_paths.SINGLE_SCALE)
    got_large, got_small = snr_paths.path_schedules(cell, SMOKE, options, "cpu", None, None)
    assert list(got_large) == sorted(set(t_large), reverse=True) and got_small == ()
    diagonal = snr_paths.Cell("quality", snr_paths.LIFT, "diagonal")
    lift_large, lift_small = snr_paths.path_schedules(diagonal, SMOKE, options, "cpu", None, None)
    assert list(lift_large) == t_large and list(lift_small) == t_small == t_large


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kind": "plot"}, "unknown cell kind 'plot'"),
        ({"kind": "quality", "path": "zigzag"}, "unknown path 'zigzag'"),
        ({"kind": "quality", "path": "dp_total", "convention": "mine"}, "unknown convention 'mine'"),
        ({"kind": "schedule", "spacing": "cubic", "steps": 5}, "unknown spacing 'cubic'"),
    ],
)
def test_a_bad_cell_is_refused_naming_the_value(kwargs, message):
    with pytest.raises(ValueError, match=message):
        snr_paths.Cell(**kwargs)


@pytest.mark.parametrize("text", ["1", "0", "many", "2.5"])
def test_num_points_below_two_or_not_an_integer_is_refused(text):
    with pytest.raises(ValueError, match="--num-points must be an integer >= 2"):
        snr_paths.parse_num_points(text)
    assert snr_paths.parse_num_points("7") == 7
    assert snr_paths.selected_num_points(SMOKE, {"num_points": None}) == SMOKE.snr_paths.num_points

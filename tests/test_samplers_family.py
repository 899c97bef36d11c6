"""The samplers family's matrix and specs: cells, student chains, grids, and the errors bad input gets."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from diffbench.experiments import StudentSpec
from diffbench.families import samplers
from diffbench.profiles import SEED_004_DDIM_STEPS, get_profile
from diffbench.schedules import ScheduleConfig

SMOKE = get_profile("smoke")


def test_every_method_runs_on_both_panels_at_seed_004s_steps():
    cells = samplers.cells(SMOKE)
    ids = [cell.id for cell in cells]
    assert len(ids) == len(set(ids))
    assert not any(word in cell_id for cell_id in ids for word in ("cfg", "guidance", "size", "batch"))
    for panel in samplers.PANELS:
        mine = [cell for cell in cells if cell.panel == panel]
        assert {cell.method for cell in mine} == set(samplers.METHODS)
        for eta in (0.0, 1.0):
            steps = sorted(cell.steps for cell in mine if cell.method == "ddim" and cell.eta == eta)
            assert tuple(steps) == SEED_004_DDIM_STEPS
        assert sorted(cell.steps for cell in mine if cell.method == "progressive") == [1, 2, 4, 8]
        assert [cell.steps for cell in mine if cell.method == "ddpm"] == [1000]
    assert cells[0] == samplers.Cell("image", "progressive", 1, 0.0)  # the chain's builder starts first


def test_a_progressive_student_holds_every_earlier_round_in_its_key():
    spec = samplers.student_spec(SMOKE, "image", "progressive", 1, "uniform")
    chain = []
    while isinstance(spec, StudentSpec):
        chain.append(spec)
        spec = spec.teacher
    assert spec == samplers.teacher_spec(SMOKE, "image")
    assert [len(s.grid) for s in reversed(chain)] == [16, 8, 4, 2]
    assert [len(s.sampler_grid) for s in reversed(chain)] == [8, 4, 2, 1]
    for parent, child in zip(reversed(chain), list(reversed(chain))[1:], strict=False):
        assert list(child.grid) == parent.sampler_grid  # round r+1 distils round r's own sampler
    assert chain[0].rounds == 4 and chain[0].sampler_grid == [999]


def test_each_cell_samples_on_its_own_grid():
    schedule_T = samplers.teacher_spec(SMOKE, "gmm").schedule.num_steps
    grid = lambda cell: samplers.sample_spec(cell, SMOKE, "uniform").grid  # noqa: E731
    assert grid(samplers.Cell("gmm", "ddpm", schedule_T, 1.0)) == tuple(range(schedule_T - 1, -1, -1))
    assert grid(samplers.Cell("gmm", "ddim", 1, 0.0)) == (schedule_T - 1,)
    assert grid(samplers.Cell("gmm", "one_step", 1)) == (schedule_T - 1,)
    two = grid(samplers.Cell("gmm", "consistency", 2))
    assert len(two) == 2 and two[0] == schedule_T - 1 and 0 < two[1] < two[0]
    trailing = samplers.sample_spec(samplers.Cell("gmm", "ddim", 10, 0.0), SMOKE, "trailing").grid
    assert trailing[0] == schedule_T - 1 and trailing != grid(samplers.Cell("gmm", "ddim", 10, 0.0))


def test_teacher_deviation_is_the_rms_over_the_reference_samples():
    reference = torch.zeros(2, 3)
    samples = torch.tensor([[1.0, 1.0, 1.0], [3.0, 3.0, 3.0], [100.0, 100.0, 100.0]])  # the third is not compared
    assert samplers.teacher_deviation(samples, reference) == pytest.approx(5**0.5)


def test_a_student_on_another_schedule_is_refused_naming_both():
    teacher = samplers.teacher_spec(SMOKE, "gmm")
    spec = samplers.student_spec(SMOKE, "gmm", "one_step", 1, "uniform")
    with pytest.raises(ValueError, match="cosine with T = 1000 for the student and linear with T = 1000"):
        replace(spec, schedule=ScheduleConfig("cosine", 1000))
    assert spec.teacher == teacher


def test_a_progressive_round_below_one_step_is_refused():
    spec = samplers.student_spec(SMOKE, "gmm", "progressive", 1, "uniform")
    with pytest.raises(ValueError, match="got 1 teacher steps"):
        replace(spec, grid=spec.grid[:1])
    with pytest.raises(ValueError, match="at least 1 step, got final steps 0"):
        samplers.student_spec(SMOKE, "gmm", "progressive", 0, "uniform")


def test_bad_cells_and_spacings_are_refused_naming_the_value():
    with pytest.raises(ValueError, match="eta must be in \\[0, 1\\], got 1.5"):
        samplers.Cell("gmm", "ddim", 10, 1.5)
    with pytest.raises(ValueError, match="steps must be in \\[1, 1000\\].*got 0"):
        samplers.sample_spec(samplers.Cell("gmm", "ddim", 0, 0.0), SMOKE, "uniform")
    with pytest.raises(ValueError, match="steps must be in \\[1, 1000\\].*got 1001"):
        samplers.sample_spec(samplers.Cell("gmm", "ddim", 1001, 0.0), SMOKE, "uniform")
    with pytest.raises(ValueError, match="got 'linspace'"):
        samplers.parse_spacing("linspace")
    with pytest.raises(ValueError, match="unknown method 'euler'"):
        samplers.Cell("gmm", "euler", 10)


def test_image_cells_are_paired_with_the_teachers_ddim_at_their_own_step_count():
    reference = samplers.paired_reference
    assert reference(samplers.Cell("image", "one_step", 1)) == samplers.Cell("image", "ddim", 1, 0.0)
    assert reference(samplers.Cell("image", "progressive", 8, 0.0)) == samplers.Cell("image", "ddim", 8, 0.0)
    assert reference(samplers.Cell("image", "ddim", 20, 1.0)) == samplers.Cell("image", "ddim", 20, 0.0)
    assert reference(samplers.Cell("image", "ddim", 20, 0.0)) is None  # the reference itself
    assert reference(samplers.Cell("image", "ddpm", 1000, 1.0)) is None  # DDIM at T steps is not drawn
    assert reference(samplers.Cell("gmm", "one_step", 1)) is None  # no FID on the 2-D panel

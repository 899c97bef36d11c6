"""The batch_configs family's design: budgets, checkpoints, cells and the timing cell's config (no training)."""

from __future__ import annotations

import pytest

from diffbench.families import batch_configs as family
from diffbench.profiles import PROFILES


@pytest.mark.parametrize("profile", list(PROFILES.values()), ids=list(PROFILES))
def test_equal_steps_runs_match_the_baselines_steps_within_half_an_epoch(profile):
    base = family.run_spec(family.BASELINE, profile).train
    base_steps = base.epochs * family.steps_per_epoch(base.batch_size)
    for config_id, config in family.CONFIGS.items():
        train = family.run_spec(config_id, profile).train
        per_epoch = family.steps_per_epoch(train.batch_size)
        if config.budget == family.STEPS:
            assert abs(train.epochs * per_epoch - base_steps) <= per_epoch / 2, config_id
        else:
            assert train.epochs == base.epochs, config_id
        # the same log-spaced fractions of every run's budget, ending at its last epoch
        assert train.checkpoint_epochs == list(family.log_checkpoints(train.epochs, profile.batch_configs.checkpoints))
        assert train.checkpoint_epochs[-1] == train.epochs


def test_log_checkpoints_halve_back_from_the_end():
    assert family.log_checkpoints(80, 5) == (5, 10, 20, 40, 80)
    assert family.log_checkpoints(790, 5) == (49, 99, 198, 395, 790)
    assert family.log_checkpoints(3, 5) == (1, 2, 3)  # distinct and at least 1


def test_cells_cover_every_run_once_most_expensive_first():
    profile = PROFILES["smoke"]
    cells = family.cells(profile)
    runs = [c.config for c in cells if c.config != family.PERFECT]
    assert sorted(runs) == sorted(family.CONFIGS)
    costs = [family.training_cost(c, profile) for c in runs]
    assert costs == sorted(costs, reverse=True)
    assert [c.draw for c in cells if c.config == family.PERFECT] == list(range(profile.batch_configs.floor_draws))


@pytest.mark.parametrize("batch_size", [family.BASE_BATCH, *family.BATCH_SIZES])
def test_epoch_timer_builds_a_valid_short_config(batch_size, monkeypatch):
    """The timing cell trains timing_epochs epochs: its config must drop the run's later checkpoints and probes."""
    seen = {}
    monkeypatch.setattr(family, "train", lambda model, schedule, data, config, **kw: seen.setdefault("c", config))
    run, epochs, params = family.epoch_timer(batch_size, PROFILES["smoke"], "cpu")
    run()
    config = seen["c"]
    assert config.epochs == epochs == PROFILES["smoke"].batch_configs.timing_epochs
    assert config.batch_size == batch_size and config.noise_scale_every == 0 and config.save_at == ()
    assert params == {"batch_size": batch_size, "steps_per_epoch": family.steps_per_epoch(batch_size)}


def test_the_samplers_gmm_teacher_is_the_baseline_recipe_at_its_own_budget():
    """Same model, data, schedule, batch and lr as the family's baseline; the samplers panel's epochs, ten even
    checkpoints and no noise probes (so shortening this family's smoke budget does not change that teacher)."""
    from diffbench.families import samplers

    profile = PROFILES["smoke"]
    teacher, baseline = samplers.teacher_spec(profile, "gmm"), family.run_spec(family.BASELINE, profile)
    assert (teacher.model, teacher.data, teacher.schedule) == (baseline.model, baseline.data, baseline.schedule)
    assert (teacher.train.batch_size, teacher.train.effective_lr) == (baseline.train.batch_size, baseline.train.lr)
    assert teacher.train.epochs == profile.samplers.gmm.teacher_epochs != baseline.train.epochs
    assert teacher.train.noise_scale_every == 0 and teacher.train.save_at == ()
    assert len(teacher.train.checkpoint_epochs) == 10

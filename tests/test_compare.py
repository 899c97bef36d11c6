"""The regression gate (diffbench.report.compare): every metric's direction and tolerance class from the registry,
the review findings of issue 13 pinned one by one, and the missing-rows rule with a selection."""

from __future__ import annotations

import math

import pytest

from diffbench.metrics import registry
from diffbench.metrics.trajectory import normalize_for_radar
from diffbench.report.compare import (
    TWO_SIDED,
    BaselineEntry,
    cell_family,
    compare_runs,
    format_table,
    metric_rule,
    row_key,
)


def row(metric, value, family="f", cell=None, **params):
    out = {"family": family, "params": params, "metric": metric, "value": value}
    return out if cell is None else {**out, "cell": cell}


def verdict_of(metric, before, after, **kwargs):
    """The single comparison's verdict and whether it fails."""
    result = compare_runs([row(metric, before)], [row(metric, after)], **kwargs)
    (comparison,) = result.comparisons
    return comparison.verdict, comparison.failed


# --- directions and classes from the registry -------------------------------------------------------------


def test_every_declared_metric_is_gated_as_the_registry_says():
    """For each declared scalar metric, a 50% move either way gets the verdict its declaration implies."""
    for name, metric in registry.load_declarations().items():
        if metric.kind == registry.ARRAY:
            continue
        up, up_failed = verdict_of(name, 1.0, 1.5)
        down, down_failed = verdict_of(name, 1.0, 0.5)
        if metric.tolerance == "info":
            assert not up_failed and not down_failed, name
        elif metric.tolerance == "timing":  # one-sided at 100%: 1.5x slower passes, faster never fails
            assert (up, down) == ("ok", "ok"), name
        elif metric.direction == registry.NEITHER:
            assert up == down == "changed" and up_failed, name
        else:
            worse, better = (up, down) if metric.direction == registry.LOWER else (down, up)
            assert (worse, better) == ("regression", "improved"), name


def test_timing_metrics_are_one_sided_and_loose_by_class_not_by_name():
    """The nightly's old ``*_seconds=1.0`` pattern missed ``sampling_seconds_per_image``; the gate now reads the
    registry's timing class, so every timing metric is one-sided at TIMING_TOLERANCE with no pattern at all."""
    seconds = [name for name in registry.load_declarations() if "seconds" in name]
    assert "sampling_seconds_per_image" in seconds
    assert all(registry.get(name).kind == registry.TIMING for name in seconds)
    assert registry.TIMING_TOLERANCE == 1.0
    for name in seconds:
        assert verdict_of(name, 1.0, 1.9)[0] == "ok"  # machines differ: 90% slower passes
        assert verdict_of(name, 1.0, 2.1) == ("regression", True)  # more than twice as slow fails
        assert verdict_of(name, 1.0, 0.2) == ("ok", False)  # never two-sided: 5x faster is not "changed"
    # the old pattern does not even match it: a '*_seconds' override leaves it on its class rule
    assert metric_rule("sampling_seconds_per_image", 0.1, {"*_seconds": 0.1}) == ("lower", 1.0, "timing")
    assert verdict_of("sampling_seconds_per_image", 1.0, 1.5, tolerances={"*_seconds": 0.1})[0] == "ok"
    assert verdict_of("epoch_seconds", 1.0, 1.5, tolerances={"*_seconds": 0.1})[0] == "regression"


@pytest.mark.parametrize(
    ("metric", "worse", "better"),
    [
        ("eps_mse_mean", 1.5, 0.5),  # held-out noise-prediction MSE: lower is better
        ("stepwise_distance", 1.5, 0.5),
        ("stepwise_wasserstein", 1.5, 0.5),
        ("stepwise_cosine", 0.5, 1.0),  # cosine of the student's and the teacher's step: a similarity
        ("radar_trajectory_mse", 0.5, 1.0),  # radar values are in [0, 1] with 1 the best
        ("radar_cosine_similarity", 0.5, 1.0),
    ],
)
def test_review_findings_have_a_direction(metric, worse, better):
    """eps_mse_mean, stepwise_* and radar_* were compared two-sided; each is one-sided in its declared direction."""
    assert metric_rule(metric, 0.1, {})[0] != TWO_SIDED
    assert verdict_of(metric, 0.9, worse) == ("regression", True)
    assert verdict_of(metric, 0.9, better) == ("improved", False)


def test_radar_values_grow_with_quality():
    """Why radar_* is higher-is-better: the map sends a distance of 0 to 1 and decreases with it, and passes a
    similarity through (clamped to [0, 1])."""
    radar = [normalize_for_radar({"euclidean_distance": d})["euclidean_distance"] for d in (0.0, 0.5, 2.0)]
    assert radar[0] == 1.0 and radar[0] > radar[1] > radar[2] > 0
    assert normalize_for_radar({"cosine_similarity": 0.7})["cosine_similarity"] == 0.7
    radar_names = [name for name in registry.load_declarations() if name.startswith("radar_")]
    assert len(radar_names) >= 8 and all(registry.get(name).direction == registry.HIGHER for name in radar_names)


def test_kid_std_is_shown_and_never_fails():
    assert metric_rule("kid_std", 0.1, {})[2] == "info"
    assert verdict_of("kid_std", 0.01, 0.1) == ("changed", False)


def test_cfg_trajectories_against_the_unguided_run_are_two_sided():
    """cfg's distances to the same model's *unguided* trajectory say how far guidance moves sampling: a drop to 0
    (guidance doing nothing) must fail, not count as an improvement; against the teacher the direction holds."""
    base = [
        row("euclidean_distance", 2.0, "cfg", reference="unguided", w=3),
        row("euclidean_distance", 2.0, "cfg", reference="teacher", w=3),
        row("radar_euclidean_distance", 0.4, "cfg", reference="unguided", w=3),
    ]
    broken = [{**r, "value": 0.0 if r["metric"] == "euclidean_distance" else 1.0} for r in base]
    verdicts = {(c.metric, c.params): (c.direction, c.verdict) for c in compare_runs(base, broken).comparisons}
    assert verdicts == {
        ("euclidean_distance", '{"reference": "teacher", "w": 3}'): ("lower", "improved"),
        ("euclidean_distance", '{"reference": "unguided", "w": 3}'): (TWO_SIDED, "changed"),
        ("radar_euclidean_distance", '{"reference": "unguided", "w": 3}'): (TWO_SIDED, "changed"),
    }
    # the same params in another family keep the metric's direction
    other = compare_runs(
        [row("euclidean_distance", 2.0, "size_factors", reference="unguided")],
        [row("euclidean_distance", 0.0, "size_factors", reference="unguided")],
    )
    assert other.comparisons[0].verdict == "improved"


def test_undeclared_metric_is_two_sided_and_flagged():
    result = compare_runs([row("brand_new", 1.0), row("mmd_rbf", 1.0)], [row("brand_new", 0.5), row("mmd_rbf", 1.0)])
    (new,) = [c for c in result.comparisons if c.metric == "brand_new"]
    assert (new.direction, new.tolerance_class, new.verdict, new.failed) == (TWO_SIDED, "undeclared", "changed", True)
    assert result.undeclared == ["brand_new"]
    assert "undeclared metrics (compared two-sided): brand_new" in format_table(result)


# --- seed tolerances from a baseline file ---------------------------------------------------------------------


def test_seed_tolerance_replaces_the_class_rule_for_default_metrics_only():
    """``tol`` of a baseline entry is the allowed absolute change of a default-class key; timing keeps its class
    rule; --metric-tolerance overrides a seed tolerance."""
    key = row_key(row("mmd_rbf", 0))
    timing_key = row_key(row("epoch_seconds", 0))
    baseline = {key: BaselineEntry(2.0, n=3, sd=1.0, tol=3.0), timing_key: BaselineEntry(1.0, n=3, sd=0.1, tol=0.3)}

    def gate(mmd, seconds=1.0, **kwargs):
        result = compare_runs(baseline, [row("mmd_rbf", mmd), row("epoch_seconds", seconds)], **kwargs)
        return {c.metric: c.verdict for c in result.comparisons}

    assert gate(4.9)["mmd_rbf"] == "ok"  # +2.9 < 3 (the class rule would allow 0.2)
    assert gate(5.1)["mmd_rbf"] == "regression"  # +3.1 > 3
    assert gate(5.1, tolerances={"mmd_rbf": 2.0})["mmd_rbf"] == "ok"  # override: 2.0 * 2 = 4 allowed
    assert gate(2.0, seconds=1.9)["epoch_seconds"] == "ok"  # timing: class rule (100%), not tol 0.3
    result = compare_runs(baseline, [row("mmd_rbf", 5.1), row("epoch_seconds", 1.0)])
    (mmd,) = [c for c in result.comparisons if c.metric == "mmd_rbf"]
    assert (mmd.tolerance_source, mmd.allowed, mmd.n_seeds) == ("seeds", 3.0, 3)
    assert "±3 (n=3)" in format_table(result)


# --- missing rows and the selection -------------------------------------------------------------------------

CELL_A = "benchmarks/bench_batch_configs.py::test_q[a]"
CELL_B = "benchmarks/bench_batch_configs.py::test_q[b]"
CELL_C = "benchmarks/bench_cfg.py::test_t[c]"


def _selection_run():
    baseline = {
        row_key(row("mmd_rbf", 0, "batch_configs", cell=CELL_A, c="a")): BaselineEntry(1.0, cells=(CELL_A,)),
        row_key(row("mmd_rbf", 0, "batch_configs", cell=CELL_B, c="b")): BaselineEntry(1.0, cells=(CELL_B,)),
        row_key(row("mmd_rbf", 0, "cfg", cell=CELL_C, c="c")): BaselineEntry(1.0, cells=(CELL_C,)),
    }
    current = [row("mmd_rbf", 1.0, "batch_configs", cell=CELL_A, c="a")]  # b and c lost
    return baseline, current


def _missing(result):
    return sorted(key[0] + ":" + key[1] for key in result.missing_failed), len(result.missing_excluded)


def test_missing_rows_fail_unless_the_selection_excluded_their_cell():
    baseline, current = _selection_run()
    no_record = compare_runs(baseline, current)
    assert no_record.failed and len(no_record.missing_failed) == 2  # no selection record: conservative
    everything = compare_runs(baseline, current, selection=[CELL_A, CELL_B, CELL_C])
    assert everything.failed and len(everything.missing_failed) == 2
    only_a = compare_runs(baseline, current, selection={CELL_A})
    assert not only_a.failed and (only_a.missing_failed, len(only_a.missing_excluded)) == ([], 2)
    a_and_b = compare_runs(baseline, current, selection={CELL_A, CELL_B})
    assert a_and_b.failed and _missing(a_and_b) == (['batch_configs:{"c": "b"}'], 1)
    text = format_table(a_and_b)
    assert "MISSING batch_configs [c=b] mmd_rbf" in text and "excluded by the selection (not failing): cfg 1" in text
    assert not a_and_b.has_regression  # no compared metric regressed: the failure is the missing row


def test_seed_ids_are_stripped_on_both_sides():
    baseline, current = _selection_run()
    seeded = compare_runs(baseline, current, selection=[CELL_A[:-1] + "-seed0]", CELL_B[:-1] + "-seed1]"])
    assert _missing(seeded) == (['batch_configs:{"c": "b"}'], 1)


def test_old_baseline_keys_without_cells_go_by_family():
    """Rows of an old baseline carry no cell: missing ones fail when a selected cell belongs to their family."""
    baseline = [row("mmd_rbf", 1.0, "batch_configs", c="a"), row("mmd_rbf", 1.0, "cfg", c="c")]
    current = [row("mmd_rbf", 1.0, "batch_configs", cell=CELL_A, c="a")]
    assert not compare_runs(baseline, current, selection={CELL_A}).failed  # cfg not selected
    assert compare_runs(baseline, current, selection={CELL_A, CELL_C}).failed  # cfg selected (module name)
    # the selection record's family wins over the module name
    assert compare_runs(baseline, current, selection={CELL_A: "batch_configs", "x.py::t": "cfg"}).failed
    assert not compare_runs(baseline, current, selection={CELL_A: "batch_configs", "x.py::t": "metrics"}).failed
    assert cell_family(CELL_C) == "cfg" and cell_family("tests/test_x.py::t") is None


def test_non_finite_values_and_missing_both_fail():
    baseline = [row("mmd_rbf", 1.0, c="x"), row("mmd_rbf", 1.0, c="y")]
    result = compare_runs(baseline, [row("mmd_rbf", None, c="x")])
    assert [c.verdict for c in result.regressions] == ["regression"] and len(result.missing_failed) == 1
    assert math.isnan(result.comparisons[0].current)

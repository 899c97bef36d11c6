"""Report building on a hand-made batch_configs run: files, the convergence table, and its pure functions."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from diffbench.report.batch_configs import (
    _timing,
    converged_step,
    critical_batch,
    difference_tolerance,
    first_reached,
    match_table,
    run_table,
    target_tolerances,
    verdict,
    window_noise_scale,
)
from diffbench.report.build import build_report, family_sections
from diffbench.report.compare import compare_runs, format_table, metric_direction, metric_rule
from diffbench.report.compare import verdict as gate_verdict
from diffbench.report.sections import rows_to_frame, summary_frame
from diffbench.results import ARRAYS_DIR, FAILURES_FILE, RESULTS_FILE

CONFIGS = {  # config -> (batch_size, lr, lr_rule, effective_lr, budget)
    "b128_lr1e-04": (128, 1e-4, "none", 1e-4, "epochs"),
    "b1280_lr3.16e-05": (1280, 3.16e-5, "none", 3.16e-5, "epochs"),
    "b1280_sqrt": (1280, 1e-4, "sqrt", 3.16e-4, "epochs"),
    "b1280_sqrt_eqsteps": (1280, 1e-4, "sqrt", 3.16e-4, "steps"),
}
STEPS = {  # optimiser steps at the five checkpoints: the baseline and the equal-steps run share them
    "b128_lr1e-04": [1000, 2000, 3000, 4000, 5000],
    "b1280_lr3.16e-05": [100, 200, 300, 400, 500],
    "b1280_sqrt": [100, 200, 300, 400, 500],
    "b1280_sqrt_eqsteps": [1000, 2000, 3000, 4000, 5000],
}
# Perfect-sample floors: W2 draws 0.5 and 0.7 (sd 0.1414, tolerance 2 sqrt(2) sd = 0.4); MMD 0 and 0.002 (0.004).
FLOORS = {"wasserstein": [0.5, 0.7], "mmd_multiscale": [0.0, 0.002], "modes_covered": [8.0, 8.0]}
CURVES = {  # per config: W2, multi-scale MMD, modes at the five checkpoints
    "b128_lr1e-04": ([3.0, 2.0, 1.3, 1.1, 1.0], [0.5, 0.1, 0.02, 0.012, 0.01], [0, 8, 8, 8, 8]),
    "b1280_lr3.16e-05": ([9.0, 8.0, 7.0, 6.0, 5.0], [0.9, 0.8, 0.7, 0.6, 0.5], [0, 0, 0, 0, 0]),
    "b1280_sqrt": ([5.0, 4.0, 3.0, 2.5, 2.0], [0.4, 0.3, 0.2, 0.1, 0.05], [0, 0, 8, 8, 8]),
    "b1280_sqrt_eqsteps": ([1.2, 0.9, 0.8, 0.8, 0.7], [0.013, 0.01, 0.008, 0.006, 0.005], [8, 8, 8, 8, 8]),
}
# Tolerances 2 sqrt(2) sd of the floors: W2 sd 0.1414 -> 0.4, MMD sd 0.001414 -> 0.004. Targets: the baseline's
# final W2 1.0 and MMD 0.01 with its 8 modes.
W2_TOL, MMD_TOL = 0.4, 0.004
EXPECTED_TARGET_W2 = {"b128_lr1e-04": 3000, "b1280_lr3.16e-05": None, "b1280_sqrt": None, "b1280_sqrt_eqsteps": 1000}
EXPECTED_TARGET_MMD = {"b128_lr1e-04": 4000, "b1280_lr3.16e-05": None, "b1280_sqrt": None, "b1280_sqrt_eqsteps": 1000}
OTHER_METRICS = (
    "mmd_rbf",
    "mmd_linear",
    "wasserstein_sliced",
    "test_loss",
    "train_loss",
    "sample_std",
    "radius_mean",
    "high_quality_fraction",
    "mode_balance",
)


def _row(
    config: str, metric: str, value: float | None, run_id: str = "run-a", epoch: int | None = None, **extra
) -> dict:
    batch_size, lr, lr_rule, effective_lr, budget = CONFIGS[config]
    params = {"config": config, "batch_size": batch_size, "lr": lr, "lr_rule": lr_rule, "effective_lr": effective_lr}
    params["budget"] = budget
    if epoch is not None:
        params |= {"epoch": epoch, "steps": STEPS[config][epoch - 1], "examples": epoch * 1000}
    return {
        "family": "batch_configs",
        "cell": f"benchmarks/bench_batch_configs.py::test_batch_config[{config}]",
        "params": params,
        "metric": metric,
        "value": value,
        "seed": 0,
        "device": "cpu",
        "profile": "smoke",
        "run_id": run_id,
        "versions": {"diffbench": "0.1.0", "torch": "2.x"},
        "time": "2025-01-01T00:00:00+00:00",
        **extra,
    }


def _floor_row(metric: str, value: float, draw: int, run_id: str = "run-a") -> dict:
    return {
        **_row("b128_lr1e-04", metric, value, run_id),
        "cell": f"benchmarks/bench_batch_configs.py::test_batch_config[perfect-draw{draw}]",
        "params": {"config": "perfect", "draw": draw},
    }


def ring_samples(n: int, seed: int) -> np.ndarray:
    """Points near the true GMM ring (radius 5), from an explicit generator."""
    rng = np.random.default_rng(seed)
    angle = rng.integers(0, 8, n) * (2 * np.pi / 8)
    return np.stack([5 * np.cos(angle), 5 * np.sin(angle)], 1) + 0.3 * rng.standard_normal((n, 2))


def make_run(run_dir: Path, run_id: str = "run-a") -> list[dict]:
    """A batch_configs run (4 runs x 5 checkpoints with noise-scale rows, samples at the final checkpoint,
    perfect-sample floors, timing rows), one row of another family, one non-finite value and one failed cell,
    written like the pytest plugin does."""
    rows = []
    for k, config in enumerate(CONFIGS):
        w2, mmd, modes = CURVES[config]
        for i in range(5):
            epoch = i + 1
            rows.append(_row(config, "wasserstein", w2[i], run_id, epoch))
            rows.append(_row(config, "mmd_multiscale", mmd[i], run_id, epoch))
            rows.append(_row(config, "modes_covered", float(modes[i]), run_id, epoch))
            rows.append(_row(config, "grad_sq_norm", [1, 1, 1, 2, 2][i], run_id, epoch))
            rows.append(_row(config, "grad_trace_cov", [10, 10, 10, 100, 300][i] * (k + 1), run_id, epoch))
            rows.append(_row(config, "noise_scale", [10, 10, 10, 50, 150][i] * (k + 1), run_id, epoch))
            for j, metric in enumerate(OTHER_METRICS):
                rows.append(_row(config, metric, (j + 1) / (i + 1) + 0.1 * k, run_id, epoch))
        rel = f"{ARRAYS_DIR}/batch_configs_{config}_samples.npy"
        (run_dir / ARRAYS_DIR).mkdir(parents=True, exist_ok=True)
        np.save(run_dir / rel, ring_samples(300, seed=k))
        rows.append(_row(config, "samples", 300.0, run_id, 5, artifact=rel))
    for metric, values in FLOORS.items():
        rows += [_floor_row(metric, value, draw, run_id) for draw, value in enumerate(values)]
    for k, batch in enumerate((128, 1280)):
        timing = _row("b128_lr1e-04", "epoch_seconds", 0.5 + k, run_id)
        rows.append({**timing, "params": {"batch_size": batch, "steps_per_epoch": -(-10_000 // batch)}})
    rows[6 + 3]["value"] = None  # a non-finite value (the baseline's mmd_linear at checkpoint 1)
    rows.append(
        {
            **_row("b128_lr1e-04", "fid", 12.5, run_id),
            "family": "cfg",
            "cell": "bench_cfg.py::x",
            "params": {"size_factor": 0.5, "guidance_scale": 3.0},
        }
    )
    (run_dir / RESULTS_FILE).write_text("".join(json.dumps(r) + "\n" for r in rows))
    failures = [{"cell": "benchmarks/bench_cfg.py::test_cfg[s0.1-w7]", "family": "cfg", "message": "NaN loss"}]
    (run_dir / FAILURES_FILE).write_text(json.dumps(failures))
    return rows


# --- the pure functions -----------------------------------------------------------------------------------


def test_first_reached_known_answers():
    assert first_reached([10, 20, 30], [3.0, 1.2, 1.0], 1.0, 0.25, lower=True) == 20
    assert first_reached([10, 20, 30], [3.0, 1.3, 1.0], 1.0, 0.25, lower=True) == 30
    assert first_reached([30, 10, 20], [1.0, 3.0, 1.2], 1.0, 0.25, lower=True) == 20  # order from the steps
    assert first_reached([10, 20], [0.2, 0.9], 1.0, 0.1, lower=False) == 20  # higher is better, ties count
    assert math.isnan(first_reached([10, 20], [5.0, float("nan")], 1.0, 0.5, lower=True))
    assert math.isnan(first_reached([], [], 1.0, 0.5, lower=True))


def test_converged_step_is_absolute_and_must_stay():
    assert converged_step([1, 2, 3, 4], [5.0, 1.0, 2.0, 1.1], 0.2) == 4  # back out at 3: only the final stays
    assert converged_step([1, 2, 3, 4], [5.0, 1.0, 1.2, 1.1], 0.2) == 2
    # a final value near 0 does not make every earlier checkpoint "far" (a ratio would divide by ~0)
    assert converged_step([1, 2, 3], [1e-4, -2e-4, 1e-5], 1e-3) == 1
    assert converged_step([1, 2], [1.0, float("nan")], 0.5) != converged_step([1, 2], [1.0, 1.0], 0.5)
    assert math.isnan(converged_step([], [], 0.1))


def test_verdict_and_tolerance():
    assert difference_tolerance(0.1) == pytest.approx(0.2 * math.sqrt(2))
    assert verdict(0.3, 0.4, "lower") == "matches"
    assert verdict(0.5, 0.4, "lower") == "worse" and verdict(-0.5, 0.4, "lower") == "better"
    assert verdict(0.5, 0.4, "higher") == "better" and verdict(0.5, 0.4, "neither") == "differs"
    assert verdict(float("nan"), 0.4, "lower") == "n/a"


def test_window_noise_scale_pools_before_dividing():
    """Last 20% of 5000 steps: checkpoints 4000 and 5000, mean tr(Sigma) 200 / mean |G|^2 2 = 100 (the mean of the
    per-checkpoint ratios, (50 + 150) / 2, is the same here only by chance; 300/2 and 100/2 would differ)."""
    rows = [_row("b128_lr1e-04", "grad_sq_norm", g, epoch=e) for e, g in enumerate([1, 1, 1, 1, 3], 1)]
    rows += [_row("b128_lr1e-04", "grad_trace_cov", t, epoch=e) for e, t in enumerate([10, 10, 10, 100, 500], 1)]
    assert window_noise_scale(rows_to_frame(rows)) == pytest.approx(600 / 4)


# --- the batch_configs tables -----------------------------------------------------------------------------


def test_run_table_steps_to_target_and_verdicts(tmp_path):
    rows = make_run(tmp_path)
    df = rows_to_frame(r for r in rows if r["family"] == "batch_configs")
    table = run_table(df).set_index("config")
    assert sorted(table.index) == sorted(CONFIGS)
    for config, expected in EXPECTED_TARGET_W2.items():
        value = table.loc[config, "steps_to_target_w2"]
        assert math.isnan(value) if expected is None else value == expected, (config, value)
        value = table.loc[config, "steps_to_target_mmd"]
        assert math.isnan(value) if EXPECTED_TARGET_MMD[config] is None else value == EXPECTED_TARGET_MMD[config]
    assert table.loc["b1280_sqrt_eqsteps", "wasserstein"] == 0.7 and table.loc["b1280_sqrt", "steps"] == 500
    # W2 of the equal-steps run stays within 0.4 of its final 0.7 from 2000 (1.2 is 0.5 off); the baseline's from 3000
    assert table.loc["b1280_sqrt_eqsteps", "converged_step_wasserstein"] == 2000
    assert table.loc["b128_lr1e-04", "converged_step_wasserstein"] == 3000
    # stability: sd of the last three W2 values (1.3, 1.1, 1.0) over one evaluation's sd (0.1414)
    assert table.loc["b128_lr1e-04", "stability_wasserstein"] == pytest.approx(
        np.std([1.3, 1.1, 1.0], ddof=1) / 0.02**0.5
    )
    assert table.loc["b128_lr1e-04", "noise_scale_end"] == pytest.approx((100 + 300) / 2 / 2)

    tolerances = target_tolerances(df)
    assert tolerances == pytest.approx({"wasserstein": W2_TOL, "mmd_multiscale": MMD_TOL})
    matches = match_table(table.reset_index(), tolerances).set_index("lr_rule")
    # equal epochs: W2 2.0 vs 1.0 and MMD 0.05 vs 0.01, both beyond tolerance: worse; equal steps: W2 0.7 (-0.3)
    # within it, MMD 0.005 (-0.005) beyond it: better
    assert matches.loc["sqrt", "equal_epochs"] == "wasserstein worse, mmd_multiscale worse"
    assert matches.loc["sqrt", "equal_steps"] == "mmd_multiscale better"
    assert matches.loc["sqrt", "equal_steps_delta_w2"] == pytest.approx(-0.3)
    # a looser MMD tolerance: all within, all modes: matches
    loose = match_table(table.reset_index(), {"wasserstein": W2_TOL, "mmd_multiscale": 0.01})
    assert loose.set_index("lr_rule").loc["sqrt", "equal_steps"] == "matches"


def test_critical_batch_recovers_a_known_trade_off():
    """Best rule per batch size on S = 300 (1 + 1152 / B): the fit returns B_crit 1152 and S_min 300."""
    curve = {128: 3000.0, 256: 1650.0, 512: 975.0, 1280: 570.0}
    lines = [{"config": "b128_lr1e-04", "batch_size": 128, "budget": "epochs", "steps_to_target_w2": 3000.0}]
    lines[0]["noise_scale_end"] = 640.0
    for batch in (256, 512, 1280):
        for rule, factor in (("sqrt", 1.0), ("none", 1.7)):
            lines.append(
                {
                    "config": f"b{batch}_{rule}_eqsteps",
                    "batch_size": batch,
                    "budget": "steps",
                    "noise_scale_end": 1.0,
                    "steps_to_target_w2": curve[batch] * factor,
                }
            )
        # equal-epoch runs never enter the fit
        lines.append({"config": f"b{batch}_sqrt", "batch_size": batch, "budget": "epochs", "steps_to_target_w2": 1.0})
    result = critical_batch(pd.DataFrame(lines))
    assert result["measured_b_crit"] == pytest.approx(1152)
    assert result["s_min"] == pytest.approx(300)
    assert result["predicted_b_simple"] == 640.0 and result["batch_sizes"] == 4
    # steps that halve with every doubling: perfect scaling, exponent 1, no finite B_crit (S_min = 0)
    perfect = pd.DataFrame(lines).assign(
        steps_to_target_w2=lambda t: np.where(t["budget"] == "epochs", 1.0, 128 * 3000.0 / t["batch_size"])
    )
    perfect.loc[perfect["config"] == "b128_lr1e-04", "steps_to_target_w2"] = 3000.0
    result = critical_batch(perfect)
    assert result["scaling_exponent"] == pytest.approx(1.0) and math.isnan(result["measured_b_crit"])


def test_the_timing_table_sets_the_captured_step_beside_the_eager_one():
    """Default-step rows keep their column; a GPU run's train_step rows become eager and captured columns with
    speed-up = eager / captured per batch size (means over repeated rows)."""
    steps = [None, None, "eager", "eager", "captured", "eager", "captured"]
    frame = pd.DataFrame(
        {
            "metric": "epoch_seconds",
            "param.batch_size": [128, 1280, 128, 128, 128, 1280, 1280],
            "param.train_step": steps,
            "value": [1.0, 0.5, 2.0, 4.0, 0.5, 1.0, 0.25],
        }
    )
    (table,) = _timing(frame)
    by_batch = table.frame.set_index("batch_size")
    assert by_batch["epoch_seconds"].tolist() == [1.0, 0.5]
    assert by_batch["epoch_seconds_eager"].tolist() == [3.0, 1.0]
    assert by_batch["captured_speedup"].tolist() == [6.0, 4.0]
    (plain,) = _timing(frame[frame["param.train_step"].isna()].drop(columns="param.train_step"))
    assert list(plain.frame.columns) == ["batch_size", "epoch_seconds"] and "captured" not in plain.caption


def test_rows_to_frame_takes_the_extractor_from_the_context():
    rows = [
        _row("b128_lr1e-04", "fid", 12.0, context={"extractor": "domain_abc123"}),
        _row("b128_lr1e-04", "kid", 0.01, context={"other": 1}),  # a context without an extractor
        _row("b128_lr1e-04", "mmd_rbf", 0.5),  # no context: a row from before the extractor was recorded
    ]
    df = rows_to_frame(rows)
    assert df["extractor"].iloc[0] == "domain_abc123"
    assert df["extractor"].iloc[1:].isna().all()
    assert "param.extractor" not in df  # context never becomes a cell parameter
    summary = summary_frame(df).set_index("metric")
    assert summary.loc["fid", "extractor"] == "domain_abc123" and pd.isna(summary.loc["mmd_rbf", "extractor"])
    assert "extractor" in rows_to_frame([]).columns


# --- the whole report -------------------------------------------------------------------------------------


def test_build_report_writes_every_file(tmp_path):
    rows = make_run(tmp_path)
    report = build_report(tmp_path)
    assert report == tmp_path / "report.md"
    for name in (
        "summary.csv",
        "index.html",
        "tables/batch_configs_summary.csv",
        "tables/batch_configs_floors.csv",
        "tables/batch_configs_matches.csv",
        "tables/batch_configs_timing.csv",
        "tables/cfg.csv",
    ):
        assert (tmp_path / name).is_file(), name
    for name in (
        "batch_configs_learning_curves_epochs",
        "batch_configs_learning_curves_steps",
        "batch_configs_steps_to_target",
        "batch_configs_noise_scale",
        "batch_configs_samples",
    ):
        assert (tmp_path / "figures" / f"{name}.png").stat().st_size > 10_000
        assert (tmp_path / "figures" / f"{name}.csv").is_file()

    summary = pd.read_csv(tmp_path / "summary.csv")
    assert len(summary) == len(rows)
    assert {"param.config", "param.epoch", "param.size_factor", "metric", "value"} <= set(summary.columns)
    assert pd.read_csv(tmp_path / "tables/batch_configs_summary.csv")["config"].nunique() == 4

    curves = pd.read_csv(tmp_path / "figures/batch_configs_learning_curves_steps.csv")
    assert len(curves) == 2 * 5 and {"mmd_multiscale", "wasserstein", "modes_covered"} <= set(curves.columns)
    assert set(curves["config"]) == {"b128_lr1e-04", "b1280_sqrt_eqsteps"}
    scatter = pd.read_csv(tmp_path / "figures/batch_configs_samples.csv")
    assert (scatter["source"] == "true_gmm").sum() == 2000 and (scatter["source"] == "b1280_sqrt").sum() == 300


def test_report_pages_state_run_and_failures(tmp_path):
    make_run(tmp_path)
    build_report(tmp_path)
    md, page = (tmp_path / "report.md").read_text(), (tmp_path / "index.html").read_text()
    for text in (md, page):
        assert "run-a" in text and "smoke" in text and "cpu" in text and "torch 2.x" in text
        assert "FAILED CELLS (1)" in text and "test_cfg[s0.1-w7]" in text and "NaN loss" in text
        assert "Non-finite values (1)" in text
        assert "batch_configs" in text and "cfg" in text and "All metrics" in text
    assert '<img src="figures/batch_configs_learning_curves_epochs.png"' in page
    assert "](figures/batch_configs_samples.png)" in md
    assert md.index("FAILED CELLS") < md.index("## batch_configs")  # failures come before the results


def test_rows_and_failures_arguments_override_files(tmp_path):
    rows = make_run(tmp_path)
    build_report(tmp_path, rows=[r for r in rows if r["family"] == "cfg"], failures=[])
    md = (tmp_path / "report.md").read_text()
    assert "## cfg" in md and "## batch_configs" not in md and "Failed cells:** 0" in md


def test_missing_sample_array_is_noted_not_fatal(tmp_path):
    make_run(tmp_path)
    (tmp_path / ARRAYS_DIR / "batch_configs_b1280_sqrt_samples.npy").unlink()
    build_report(tmp_path)
    assert "batch_configs_b1280_sqrt_samples.npy" in (tmp_path / "report.md").read_text()
    assert (tmp_path / "figures/batch_configs_samples.png").is_file()


def test_family_sections_come_from_discovery_and_empty_run(tmp_path):
    assert {"batch_configs", "size_factors"} <= set(family_sections())
    report = build_report(tmp_path, rows=[], failures=[])
    assert "(no rows)" in report.read_text()


# --- compare (the library side; the CLI is in test_cli.py) --------------------------------------------------


def test_verdict_rule():
    assert gate_verdict(1.0, 1.05, "lower", 0.1) == "ok"
    assert gate_verdict(1.0, 1.2, "lower", 0.1) == "regression"
    assert gate_verdict(1.0, 0.8, "lower", 0.1) == "improved"
    assert gate_verdict(8.0, 6.0, "higher", 0.1) == "regression"
    assert gate_verdict(1.0, 1.2, "two-sided", 0.1) == "changed" == gate_verdict(1.0, 0.8, "two-sided", 0.1)
    # near zero the absolute floor (1e-3) sets the allowed change: 0.1 * 1e-3 = 1e-4
    assert gate_verdict(0.0, 5e-5, "lower", 0.1) == "ok"
    assert gate_verdict(0.0, 2e-4, "lower", 0.1) == "regression"
    assert gate_verdict(1.0, float("nan"), "lower", 0.1) == "regression"


def test_metric_directions_and_classes_come_from_the_registry():
    assert metric_direction("mmd_rbf") == "lower" and metric_direction("epoch_seconds") == "lower"
    assert metric_direction("modes_covered") == "higher"
    assert metric_direction("something_new") == "two-sided"
    assert metric_direction("radius_mean") == "two-sided"  # declared "neither": closeness to 5, not a direction
    # a timing is one-sided and loose whatever the default; parameters must not move; interval ends never fail
    assert metric_rule("sampling_seconds_per_image", 0.1, {}) == ("lower", 1.0, "timing")
    assert metric_rule("params", 0.1, {}) == ("two-sided", 0.0, "exact")
    assert metric_rule("fid_ci_low", 0.1, {})[2] == "info"
    assert metric_rule("wasserstein", 0.1, {"wass*": 0.3}) == ("lower", 0.3, "default")


def _gate_row(metric, value):
    return {"family": "f", "params": {}, "metric": metric, "value": value}


def test_compare_gate_reads_the_registry():
    base = [_gate_row("sampling_seconds_per_image", 1.0), _gate_row("params", 100), _gate_row("fid_ci_high", 9.0)]
    # timings: 80% slower passes (one-sided at 1.0), 3x faster never fails; a changed parameter count fails;
    # an interval end that moved a lot is shown but does not fail
    slower = [_gate_row("sampling_seconds_per_image", 1.8), _gate_row("params", 100), _gate_row("fid_ci_high", 20.0)]
    assert not compare_runs(base, slower).has_regression
    faster = [_gate_row("sampling_seconds_per_image", 0.3), _gate_row("params", 100), _gate_row("fid_ci_high", 9.0)]
    assert not compare_runs(base, faster).has_regression
    much_slower = [
        _gate_row("sampling_seconds_per_image", 2.5),
        _gate_row("params", 100),
        _gate_row("fid_ci_high", 9.0),
    ]
    assert [c.metric for c in compare_runs(base, much_slower).regressions] == ["sampling_seconds_per_image"]
    other_model = [
        _gate_row("sampling_seconds_per_image", 1.0),
        _gate_row("params", 101),
        _gate_row("fid_ci_high", 9.0),
    ]
    assert [c.metric for c in compare_runs(base, other_model).regressions] == ["params"]


def test_compare_runs_matches_rows_and_lists_missing(tmp_path):
    rows = make_run(tmp_path)
    worse = [{**r, "value": r["value"] * 1.5} if r["metric"] == "mmd_rbf" else r for r in rows]
    worse = [r for r in worse if r["metric"] != "mode_balance"]
    result = compare_runs(rows, worse, tolerance=0.1, tolerances={"*_seconds": 0.5})
    assert {c.metric for c in result.regressions} == {"mmd_rbf"}
    assert len(result.regressions) == 4 * 5
    assert not any(c.metric == "samples" for c in result.comparisons)  # artifact rows are ignored
    assert {key[2] for key in result.missing_in_current} == {"mode_balance"}
    text = format_table(result)
    assert text.splitlines()[2].startswith("REGRESSION") and "mode_balance" in text


def test_a_failing_family_section_still_leaves_a_report(tmp_path):
    def broken(df, run_dir):
        raise RuntimeError("plot exploded")

    make_run(tmp_path)
    md = build_report(tmp_path, sections={**family_sections(), "batch_configs": broken}).read_text()
    assert "RuntimeError: plot exploded" in md and "### All metrics" in md

"""Report building on a hand-made batch_configs run: files, the convergence table, and its pure functions."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from diffbench.report.batch_configs import batch_config_table, coefficient_of_variation, convergence_epoch
from diffbench.report.build import build_report, family_sections
from diffbench.report.compare import compare_runs, format_table, metric_direction, metric_rule, verdict
from diffbench.report.sections import rows_to_frame, summary_frame
from diffbench.results import ARRAYS_DIR, FAILURES_FILE, RESULTS_FILE

EPOCHS = [10, 20, 30, 40, 50]
CONFIGS = {  # config -> (batch_size, lr, lr_rule, effective_lr)
    "b128_lr1e-04": (128, 1e-4, "none", 1e-4),
    "b1280_lr3.16e-05": (1280, 3.16e-5, "none", 3.16e-5),
    "b1280_sqrt": (1280, 1e-4, "sqrt", 3.16e-4),
    "b1280_linear": (1280, 1e-4, "linear", 1e-3),
}
# mmd_rbf per config, chosen so the convergence epoch (first |v - v_final| <= 0.1 |v_final|) is known:
MMD_RBF = {
    "b128_lr1e-04": [1.0, 0.5, 0.215, 0.21, 0.2],  # 0.215 is within 0.02 of 0.2 -> epoch 30
    "b1280_lr3.16e-05": [0.2, 0.9, 0.8, 0.4, 0.2],  # the first checkpoint already equals the final -> 10
    "b1280_sqrt": [4.0, 3.0, 2.0, 1.0, 1.05],  # 1.0 is within 0.105 of 1.05 -> epoch 40
    "b1280_linear": [1.0, 1.0, 1.0, 1.0, 1.0],  # constant -> epoch 10, CV 0
}
EXPECTED_CONVERGED_MMD = {"b128_lr1e-04": 30, "b1280_lr3.16e-05": 10, "b1280_sqrt": 40, "b1280_linear": 10}
# wasserstein = k * [1, 2, 3, 4, 5]: only the final value is within 10% of itself -> epoch 50, and the CV is
# scale-free: mean 3k, population std k * sqrt(2) -> sqrt(2) / 3 for every config.
WASSERSTEIN_CV = math.sqrt(2) / 3
OTHER_METRICS = (
    "mmd_linear",
    "test_loss",
    "train_loss",
    "sample_std",
    "sample_range",
    "radius_mean",
    "radius_std",
    "modes_covered",
    "high_quality_fraction",
    "mode_balance",
)


def _row(
    config: str, metric: str, value: float | None, run_id: str = "run-a", epoch: int | None = None, **extra
) -> dict:
    batch_size, lr, lr_rule, effective_lr = CONFIGS[config]
    params = {"config": config, "batch_size": batch_size, "lr": lr, "lr_rule": lr_rule, "effective_lr": effective_lr}
    if epoch is not None:
        params["epoch"] = epoch
    cell = f"benchmarks/bench_batch_configs.py::test_checkpoint_quality[{config}-epoch{epoch or 0:04d}]"
    return {
        "family": "batch_configs",
        "cell": cell,
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


def ring_samples(n: int, seed: int) -> np.ndarray:
    """Points near the true GMM ring (radius 5), from an explicit generator."""
    rng = np.random.default_rng(seed)
    angle = rng.integers(0, 8, n) * (2 * np.pi / 8)
    return np.stack([5 * np.cos(angle), 5 * np.sin(angle)], 1) + 0.3 * rng.standard_normal((n, 2))


def make_run(run_dir: Path, run_id: str = "run-a") -> list[dict]:
    """A batch_configs run (4 configs x 5 epochs, samples at the final epoch, timing rows), one row of an
    unregistered family, one non-finite value and one failed cell, written like the pytest plugin does."""
    rows = []
    for k, config in enumerate(CONFIGS):
        for i, epoch in enumerate(EPOCHS):
            rows.append(_row(config, "mmd_rbf", MMD_RBF[config][i], run_id, epoch))
            rows.append(_row(config, "wasserstein", (k + 1) * (i + 1.0), run_id, epoch))
            for j, metric in enumerate(OTHER_METRICS):
                rows.append(_row(config, metric, (j + 1) / (i + 1) + 0.1 * k, run_id, epoch))
        rel = f"{ARRAYS_DIR}/batch_configs_{config}_samples.npy"
        (run_dir / ARRAYS_DIR).mkdir(parents=True, exist_ok=True)
        np.save(run_dir / rel, ring_samples(300, seed=k))
        rows.append(_row(config, "samples", 300.0, run_id, EPOCHS[-1], artifact=rel))
        rows.append(_row(config, "epoch_seconds", 0.5 + k, run_id))
    rows[3]["value"] = None  # a non-finite test_loss (config 0, epoch 10)
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


def test_convergence_epoch_known_answers():
    assert convergence_epoch([1, 2, 3], [10.0, 5.4, 5.0]) == 2  # |5.4 - 5| = 0.4 <= 0.5
    assert convergence_epoch([1, 2, 3], [10.0, 5.6, 5.0]) == 3  # 0.6 > 0.5: only the final qualifies
    assert convergence_epoch([3, 1, 2], [5.0, 10.0, 5.4]) == 2  # order comes from the epochs, not the list
    assert convergence_epoch([1, 2, 3], [5.0, 9.0, 5.0]) == 1  # the first epoch within, not "stays within"
    assert convergence_epoch([1, 2, 3], [-10.0, -5.4, -5.0]) == 2  # relative to |v_final|
    assert convergence_epoch([1, 2, 3], [10.0, 5.4, 5.0], rel=0.01) == 3


def test_convergence_epoch_non_finite_and_empty():
    assert convergence_epoch([1, 2, 3], [float("nan"), 5.2, 5.0]) == 2
    assert convergence_epoch([1, 2], [5.0, float("nan")]) is None
    assert convergence_epoch([], []) is None


def test_coefficient_of_variation_known_answers():
    assert coefficient_of_variation([1.0, 3.0]) == pytest.approx(0.5)  # std 1, mean 2
    assert coefficient_of_variation([1, 2, 3, 4, 5]) == pytest.approx(math.sqrt(2) / 3)
    assert coefficient_of_variation([-1.0, -3.0]) == pytest.approx(0.5)  # |mean|
    assert coefficient_of_variation([4.0, 4.0, 4.0]) == 0.0
    assert math.isnan(coefficient_of_variation([1.0, -1.0]))  # zero mean
    assert math.isnan(coefficient_of_variation([1.0, float("nan")]))
    assert math.isnan(coefficient_of_variation([]))


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


# --- the batch_configs table ------------------------------------------------------------------------------


def test_batch_config_table_matches_hand_computed_values(tmp_path):
    rows = make_run(tmp_path)
    df = rows_to_frame(r for r in rows if r["family"] == "batch_configs")
    table = batch_config_table(df).set_index("config")
    assert sorted(table.index) == sorted(CONFIGS)
    for config, (batch_size, _, lr_rule, effective_lr) in CONFIGS.items():
        line = table.loc[config]
        assert line["batch_size"] == batch_size and line["lr_rule"] == lr_rule
        assert line["effective_lr"] == pytest.approx(effective_lr)
        assert line["final_epoch"] == 50
        assert line["converged_epoch_mmd_rbf"] == EXPECTED_CONVERGED_MMD[config]
        assert line["converged_epoch_wasserstein"] == 50
        assert line["cv_last5_wasserstein"] == pytest.approx(WASSERSTEIN_CV)
        assert line["mmd_rbf"] == MMD_RBF[config][-1]
    assert table.loc["b1280_linear", "cv_last5_mmd_rbf"] == 0.0
    assert table.loc["b1280_sqrt", "wasserstein"] == 3 * 5.0  # k = 2 -> (k + 1) * 5
    assert table["epoch_seconds"].tolist() == pytest.approx([0.5, 1.5, 2.5, 3.5])  # ordered by batch size


def test_batch_config_table_uses_only_the_last_five_checkpoints():
    rows = [
        _row("b128_lr1e-04", "mmd_rbf", v, epoch=e) for e, v in zip(range(1, 8), [100, 100, 1, 2, 3, 4, 5], strict=True)
    ]
    table = batch_config_table(rows_to_frame(rows))
    assert table.loc[0, "cv_last5_mmd_rbf"] == pytest.approx(math.sqrt(2) / 3)


# --- the whole report -------------------------------------------------------------------------------------


def test_build_report_writes_every_file(tmp_path):
    rows = make_run(tmp_path)
    report = build_report(tmp_path)
    assert report == tmp_path / "report.md"
    for name in ("summary.csv", "index.html", "tables/batch_configs_summary.csv", "tables/cfg.csv"):
        assert (tmp_path / name).is_file(), name
    for name in ("batch_configs_learning_curves", "batch_configs_samples"):
        assert (tmp_path / "figures" / f"{name}.png").stat().st_size > 10_000
        assert (tmp_path / "figures" / f"{name}.csv").is_file()

    summary = pd.read_csv(tmp_path / "summary.csv")
    assert len(summary) == len(rows)
    assert {"param.config", "param.epoch", "param.size_factor", "metric", "value"} <= set(summary.columns)
    assert pd.read_csv(tmp_path / "tables/batch_configs_summary.csv")["config"].nunique() == 4

    curves = pd.read_csv(tmp_path / "figures/batch_configs_learning_curves.csv")
    assert len(curves) == 4 * 5 and {"mmd_rbf", "wasserstein", "modes_covered"} <= set(curves.columns)
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
    assert '<img src="figures/batch_configs_learning_curves.png"' in page
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
    assert verdict(1.0, 1.05, "lower", 0.1) == "ok"
    assert verdict(1.0, 1.2, "lower", 0.1) == "regression"
    assert verdict(1.0, 0.8, "lower", 0.1) == "improved"
    assert verdict(8.0, 6.0, "higher", 0.1) == "regression"
    assert verdict(1.0, 1.2, "two-sided", 0.1) == "changed" == verdict(1.0, 0.8, "two-sided", 0.1)
    # near zero the absolute floor (1e-3) sets the allowed change: 0.1 * 1e-3 = 1e-4
    assert verdict(0.0, 5e-5, "lower", 0.1) == "ok"
    assert verdict(0.0, 2e-4, "lower", 0.1) == "regression"
    assert verdict(1.0, float("nan"), "lower", 0.1) == "regression"


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

"""The snr_paths report on hand-made rows: the MSE table and chart, heatmap figures whose CSV holds the heatmap and
the paths, the path table with its convention differences at known points and the seed's claims, the quality table
sorted by FID with the path errors joined, the findings and schedule verdicts (intervals apart, overlapping,
reversed), the DP grid's cost check, and notes instead of errors where rows are missing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from diffbench.report import snr_paths
from diffbench.report.build import build_report
from diffbench.report.figures import grouped_bars, log_grid_heatmaps
from diffbench.report.sections import rows_to_frame
from diffbench.results import ARRAYS_DIR

ROW = {"family": "snr_paths", "seed": 3, "device": "cpu", "profile": "smoke", "time": "2025-01-01T00:00:00+00:00"}
M, SNR_MIN, SNR_MAX = 5, 0.01, 100.0
GRID = np.geomspace(SNR_MIN, SNR_MAX, M)  # 0.01, 0.1, 1, 10, 100
CONVENTIONS = {"seed": 1.0, "derived": 2.0}  # the derived heatmap is the seed's times 2
# γ1 grid indices along each path; dp_total differs between the conventions at i = 1 (γ0 = 0.1) only.
PATHS = {
    ("seed", "diagonal"): [0, 1, 2, 3, 4],
    ("derived", "diagonal"): [0, 1, 2, 3, 4],
    ("seed", "dp_total"): [0, 4, 4, 4, 4],
    ("derived", "dp_total"): [0, 3, 4, 4, 4],
    ("seed", "dp_large"): [0, 0, 1, 1, 2],
    ("derived", "dp_large"): [0, 0, 1, 1, 2],
}
MSE = {  # (model, test, scale) -> eps MSE
    ("lift", "both_noisy", "large"): 0.0178,
    ("lift", "both_noisy", "small"): 0.0180,
    ("lift", "both_noisy", "total"): 0.0179,
    ("lift", "clean_small", "large"): 0.0746,
    ("lift", "clean_small", "total"): 0.0746,
    ("lift", "clean_large", "small"): 0.0703,
    ("lift", "clean_large", "total"): 0.0703,
    ("baseline", "single_scale", "large"): 0.0150,
    ("baseline", "single_scale", "total"): 0.0150,
}
# (model, path, convention) -> FID; the interval is FID ± 1.5. The baseline's is entirely below every LIFT path's.
FIDS = {
    ("baseline", "single_scale", None): 78.83,
    ("lift", "dp_large", "seed"): 101.53,
    ("lift", "dp_large", "derived"): 104.0,
    ("lift", "dp_total", "seed"): 109.2,
    ("lift", "dp_total", "derived"): 112.0,
    ("lift", "diagonal", None): 116.14,
}
PARAMS = 58_500_000
DELTA_METRICS = ("fid_delta", "fid_delta_ci_low", "fid_delta_ci_high")
# Paired differences FID(path) - FID(baseline) of FIDS, each ± 2: every LIFT path's excludes 0 above.
DELTAS = {key: (fid - 78.83, fid - 80.83, fid - 76.83) for key, fid in FIDS.items() if key[0] == "lift"}
SAMPLES = 4
SPACINGS = ("uniform", "quadratic", "snr", "dp", "dp_seed")
STEPS = (5, 10, 20)
# (spacing, steps) -> FID, interval ± 1: at 10 steps dp beats uniform and is within the noise of snr.
SCHEDULE_FIDS = {
    (s, n): 20.0 + {"uniform": 10, "quadratic": 5, "snr": 0.5, "dp": 0, "dp_seed": 1}[s]
    for s in SPACINGS
    for n in STEPS
}
COSTS = {"uniform": 5.0, "quadratic": 4.0, "snr": 3.0, "dp": 1.0, "dp_seed": 1.5}  # / steps; dp the lowest
TS = (100, 300, 500, 700, 900)


def heatmap(convention: str) -> np.ndarray:
    """``[3, M, M]``: large (1 + 0.1 j) / γ0_i (grows with γ1), small 1 / γ1_j (falls with γ1), total their sum."""
    i, j = np.meshgrid(np.arange(M), np.arange(M), indexing="ij")
    large = (1 + 0.1 * j) / GRID[i]
    small = 1 / GRID[j]
    return CONVENTIONS[convention] * np.stack([large, small, large + small])


def path_error(convention: str, path: str, scale: int) -> float:
    """The plain sum of the heatmap along the path, by brute force over its grid indices."""
    return float(sum(heatmap(convention)[scale, i, j] for i, j in enumerate(PATHS[convention, path])))


def images(count: int, channels: int = 3) -> np.ndarray:
    return np.linspace(-1, 1, count * channels * 64, dtype=np.float32).reshape(count, channels, 8, 8)


def snr_rows(
    run_dir: Path,
    parts: tuple[str, ...] = ("mse", "heatmap", "paths", "quality", "density", "schedules", "timing"),
    fids: dict | None = None,
    schedule_fids: dict | None = None,
    run_id: str = "run-a",
    deltas: dict | None = None,
    extractor: str | None = None,
) -> list[dict]:
    """Rows as the snr_paths cells record them (arrays under ``run_dir``) for the chosen ``parts``; ``fids`` and
    ``schedule_fids`` override entries of FIDS and SCHEDULE_FIDS. ``deltas``: (model, path, convention) of a LIFT
    path -> its paired ``(fid_delta, low, high)`` against the baseline, and ``extractor`` the quality rows'
    context, as recorded since paired differences (without: rows from before them)."""
    fids, schedule_fids = FIDS | (fids or {}), SCHEDULE_FIDS | (schedule_fids or {})
    rows = []
    context = {"context": {"extractor": extractor}} if extractor else {}

    def row(cell: str, params: dict, metric: str, value: float, artifact: str | None = None) -> None:
        where = {"cell": f"benchmarks/bench_snr_paths.py::{cell}", "run_id": run_id, "params": params}
        rows.append(ROW | where | {"metric": metric, "value": value} | ({"artifact": artifact} if artifact else {}))
        if cell == "test_quality" and not artifact:
            rows[-1] |= context

    def save(name: str, array: np.ndarray) -> str:
        rel = f"{ARRAYS_DIR}/{run_id}-{name}.npy"
        np.save(run_dir / rel, array)
        return rel

    (run_dir / ARRAYS_DIR).mkdir(parents=True, exist_ok=True)
    if "mse" in parts:
        for (model, test, scale), value in MSE.items():
            row("test_mse", {"model": model, "test": test, "scale": scale, "t": 500}, "eps_mse", value)
    for convention in CONVENTIONS:
        if "heatmap" in parts:
            grid = {"snr_min": SNR_MIN, "snr_max": SNR_MAX, "num_points": M, "probes": 8, "n": 16}
            rel = save(f"heatmap-{convention}", heatmap(convention))
            row("test_heatmap", {"model": "lift", "convention": convention} | grid, "error_heatmap", 1.0, rel)
        if "paths" in parts:
            for path in ("diagonal", "dp_total", "dp_large"):
                for i, j in enumerate(PATHS[convention, path]):
                    params = {"model": "lift", "convention": convention, "path": path, "snr_large": GRID[i], "i": i}
                    row("test_paths", params, "snr_path", float(GRID[j]))
                for scale, error in ((2, "total"), (0, "large")):
                    params = {"model": "lift", "convention": convention, "path": path, "error": error}
                    row("test_paths", params, "path_error", path_error(convention, path, scale))
    if "quality" in parts:
        for (model, path, convention), fid in fids.items():
            params = {"model": model, "path": path} | ({"convention": convention} if convention else {})
            params |= {"steps": 50, "n": SAMPLES, "n_real": 100}
            metrics = {"fid": fid, "fid_ci_low": fid - 1.5, "fid_ci_high": fid + 1.5, "kid": fid / 1000}
            metrics |= {"kid_std": 0.001, "params": float(PARAMS)}
            for metric, value in metrics.items():
                row("test_quality", params, metric, value)
            for metric, value in zip(DELTA_METRICS, (deltas or {}).get((model, path, convention), ()), strict=False):
                row("test_quality", params | {"reference": "baseline"}, metric, value)
            row("test_quality", params, "samples", SAMPLES, save(f"samples-{path}-{convention}", images(SAMPLES)))
    if "density" in parts:
        for convention in CONVENTIONS:
            for t in TS:
                snr = (1000 - t) / t
                value = 1 / (1 + snr) / (snr if convention == "seed" else 1.0)
                params = {"model": "teacher", "convention": convention, "t": t, "snr": snr, "probes": 8, "n": 16}
                row("test_density", params, "error_density", value)
    if "schedules" in parts:
        for steps in STEPS:
            for spacing in SPACINGS:
                params = {"model": "teacher", "spacing": spacing, "steps": steps, "n": 20, "n_real": 100}
                fid = schedule_fids[spacing, steps]
                metrics = {"fid": fid, "fid_ci_low": fid - 1, "fid_ci_high": fid + 1, "kid": 0.01, "kid_std": 0.001}
                metrics |= {"class_accuracy": 1 - fid / 100, "class_diversity": 2.0}
                metrics |= {"schedule_cost": COSTS[spacing] / steps, "network_evaluations": float(steps)}
                for metric, value in metrics.items():
                    row("test_schedules", params, metric, value)
                for k in range(steps):
                    t = 999 * (1 - k / steps) ** (1 + SPACINGS.index(spacing) / 4)
                    row("test_schedules", params | {"k": k}, "schedule_timestep", round(t))
                rel = save(f"schedule-{spacing}-{steps}", images(20, channels=1))
                row("test_schedules", params, "samples", 20, rel)
    if "timing" in parts:
        for method, seconds in (("vmap", 0.1), ("loop", 0.8)):
            row("test_timing", {"method": method, "probes": 8, "n": 16}, "vhv_seconds", seconds)
        row("test_timing", {"probes": 8, "n": 16}, "vhv_speedup", 8.0)
    return rows


def report(run_dir: Path, rows: list[dict]) -> str:
    return build_report(run_dir, rows=rows, failures=[], sections={"snr_paths": snr_paths.sections}).read_text()


def figure_data(run_dir: Path, name: str) -> pd.DataFrame:
    return pd.read_csv(run_dir / "figures" / f"snr_paths_{name}.csv")


def frame(rows: list[dict]) -> pd.DataFrame:
    return rows_to_frame(rows)


FIGURES = (
    "mse_tests",
    "heatmap_seed",
    "heatmap_derived",
    "samples",
    "error_density",
    "schedules",
    "schedule_quality",
    "schedule_samples",
)


# --- the whole report -------------------------------------------------------------------------------------


def test_full_run_writes_every_section_figure_and_table(tmp_path):
    md = report(tmp_path, snr_rows(tmp_path))
    assert "could not be built" not in md and "skipped" not in md and "was not recorded" not in md
    for title in ("MSE tests", "Discretization-error heatmaps", "DP paths", "Generation quality"):
        assert f"### {title}\n" in md, title
    for title in ("Single-scale error density", "Single-scale schedules", "Estimator timing"):
        assert f"### {title}\n" in md, title
    for name in FIGURES:
        assert (tmp_path / "figures" / f"snr_paths_{name}.png").stat().st_size > 3_000, name
        assert len(figure_data(tmp_path, name)) > 0, name
        assert f"](figures/snr_paths_{name}.png)" in md, name

    mse = pd.read_csv(tmp_path / "tables/snr_paths_mse_tests.csv")
    assert mse["test"].tolist() == ["both_noisy", "clean_small", "clean_large", "single_scale"]
    line = mse.set_index("test").loc["clean_small"]
    assert line["large"] == MSE["lift", "clean_small", "large"] and pd.isna(line["small"])
    bars = figure_data(tmp_path, "mse_tests")
    assert len(bars) == len(MSE)

    for convention in CONVENTIONS:
        data = figure_data(tmp_path, f"heatmap_{convention}")
        cells = data[data["kind"] == "heatmap"].set_index(["scale", "snr_large", "snr_small"])["value"]
        assert len(cells) == 3 * M * M
        expected = heatmap(convention)
        for s, scale in enumerate(snr_paths.SCALES):
            for i, j in ((0, 0), (2, 3), (4, 1)):
                assert cells[scale, GRID[i], GRID[j]] == pytest.approx(expected[s, i, j])
        drawn = data[data["kind"] == "path"]
        dp_total = drawn[drawn["path"] == "dp_total"].sort_values("i")
        assert np.allclose(dp_total["snr_small"], GRID[PATHS[convention, "dp_total"]])
    assert "1/(γ(1+γ))" in md and "1/(1+γ)" in md and "LogNorm" in md

    paths = pd.read_csv(tmp_path / "tables/snr_paths_paths.csv")
    assert list(zip(paths["convention"], paths["path"], strict=True)) == [
        (c, p) for c in CONVENTIONS for p in ("diagonal", "dp_total", "dp_large")
    ]
    dp = paths.set_index(["convention", "path"]).loc[("seed", "dp_total")]
    assert dp["error_total"] == pytest.approx(path_error("seed", "dp_total", 2))
    assert [dp[snr_paths.snr_column(g)] for g in GRID] == pytest.approx(GRID[PATHS["seed", "dp_total"]])
    assert "dp_total differs at 1 of 5 γ0 points (γ0 = 0.1)" in md
    assert "dp_large is the same under both factors (0 of 5 γ0 points differ)" in md
    assert "seed: DP total first reaches the largest γ1 (100) at γ0 index 1 of 0-4 (γ0 = 0.1): early" in md
    assert "derived: DP total first reaches the largest γ1 (100) at γ0 index 2 of 0-4 (γ0 = 1): not early" in md
    assert "DP large-only keeps γ1 in [0.01, 1] (grid up to 100), below the diagonal at 4 of 5 points" in md
    assert "the lowest, as the DP's minimum must be" in md and "NOT the lowest" not in md
    assert "from the recorded ones 0 over 12 values: they agree" in md

    quality = pd.read_csv(tmp_path / "tables/snr_paths_quality.csv")
    assert quality["label"].tolist()[:2] == ["single_scale", "dp_large (seed)"]
    assert "yes: its FID is lower and the intervals do not overlap" in md
    assert len(figure_data(tmp_path, "samples")) == len(FIDS) * SAMPLES

    curves = figure_data(tmp_path, "error_density")
    assert len(curves) == 2 * len(TS)
    assert "E(t) is largest at t = " in md

    grids = figure_data(tmp_path, "schedules")
    assert len(grids) == len(SPACINGS) * sum(STEPS)
    schedules = pd.read_csv(tmp_path / "tables/snr_paths_schedules.csv")
    assert list(zip(schedules["steps"], schedules["spacing"], strict=True)) == [(n, s) for n in STEPS for s in SPACINGS]
    assert {"fid_inf [ci]", "extractor", "n_real"} <= set(schedules.columns)  # every FID table shows them
    assert "dp beats uniform (FID 20 [19, 21] vs 30 [29, 31]; separate intervals)" in md
    assert "dp is indistinguishable at this n from snr (FID 20 [19, 21] vs 20.5 [19.5, 21.5]; separate intervals)" in md
    assert "lowest schedule_cost at every step count checked (5, 10, 20)" in md
    assert len(figure_data(tmp_path, "schedule_samples")) == len(SPACINGS) * len(STEPS) * 10

    timing = pd.read_csv(tmp_path / "tables/snr_paths_timing.csv")
    assert timing["method"].tolist() == ["vmap", "loop"] and (timing["speedup"] == 8.0).all()


def test_missing_parts_give_notes_not_errors(tmp_path):
    md = report(tmp_path, snr_rows(tmp_path, parts=("mse",)))
    assert "could not be built" not in md
    for note in (
        "No usable error_heatmap array: heatmap figures skipped",
        "No snr_path rows: path tables skipped",
        "No generation-quality rows",
        "the teacher's error density was not recorded",
        "the single-scale schedules were not recorded",
        "No vhv_seconds rows",
    ):
        assert note in md, note
    assert (tmp_path / "figures/snr_paths_mse_tests.png").is_file()

    only_quality = tmp_path / "quality"
    md = report(only_quality, snr_rows(only_quality, parts=("quality",)))
    assert "could not be built" not in md and "No eps_mse rows" in md
    table = pd.read_csv(only_quality / "tables/snr_paths_quality.csv")
    assert not any(c.startswith("error_") for c in table.columns)  # no path_error rows to join
    # Rows from before FID-infinity, paired differences and the extractor: their columns are there, blank.
    assert table[["fid_inf [ci]", "fid_delta [ci] vs baseline", "extractor", "fid_delta"]].isna().all().all()
    assert "Does the single-scale baseline beat the best LIFT path at equal parameters? yes: its FID is lower" in md


def test_the_report_with_paired_differences(tmp_path):
    md = report(tmp_path, snr_rows(tmp_path, parts=("quality",), deltas=DELTAS, extractor="domain_feed"))
    assert "could not be built" not in md
    assert snr_paths.FID_CAPTION in md and snr_paths.DELTA_CAPTION in md
    assert "yes: the paired difference excludes 0 (the baseline's FID is lower)" in md
    table = pd.read_csv(tmp_path / "tables/snr_paths_quality.csv").set_index("label")
    assert table.loc["dp_large (seed)", "fid_delta [ci] vs baseline"] == "+22.7 [+20.7, +24.7]"
    assert (table["extractor"] == "domain_feed").all()


def test_a_missing_or_misshapen_heatmap_is_named_in_a_note(tmp_path):
    rows = snr_rows(tmp_path, parts=("heatmap", "paths"))
    (tmp_path / ARRAYS_DIR / "run-a-heatmap-seed.npy").unlink()
    np.save(tmp_path / ARRAYS_DIR / "run-a-heatmap-derived.npy", np.ones((2, M, M)))
    md = report(tmp_path, rows)
    assert "could not be built" not in md
    assert "seed: arrays/run-a-heatmap-seed.npy (FileNotFoundError)" in md
    assert "derived: arrays/run-a-heatmap-derived.npy: shape (2, 5, 5)" in md
    assert not (tmp_path / "figures/snr_paths_heatmap_seed.png").exists()
    assert "dp_total differs at 1 of 5" in md  # the paths stand without the heatmap


# --- the pure functions -----------------------------------------------------------------------------------


def quality_of(tmp_path: Path, **kwargs) -> pd.DataFrame:
    rows = [r for r in snr_rows(tmp_path, parts=("paths", "quality"), **kwargs) if "artifact" not in r]
    df = frame(rows)
    return snr_paths.quality_table(snr_paths.quality_rows(df), snr_paths.path_errors(df))


def test_quality_table_is_sorted_by_fid_with_the_path_errors_joined(tmp_path):
    table = quality_of(tmp_path)
    assert table["fid"].tolist() == sorted(FIDS.values())
    lines = table.set_index("label")
    assert lines.loc["single_scale", "description"] == "Single-scale baseline (same parameters)"
    assert lines.loc["dp_total (seed)", "fid [ci]"] == "109.2 [107.7, 110.7]"
    assert lines.loc["dp_total (seed)", "kid ± std"] == "0.1092 ± 0.001"
    for convention in CONVENTIONS:
        for error, scale in (("total", 2), ("large", 0)):
            column = snr_paths.error_column(error, convention)
            other = "derived" if convention == "seed" else "seed"
            assert lines.loc[f"dp_total ({convention})", column] == pytest.approx(
                path_error(convention, "dp_total", scale)
            )
            assert pd.isna(lines.loc[f"dp_total ({other})", column])  # a DP path has its own convention's only
            assert lines.loc["diagonal", column] == pytest.approx(path_error(convention, "diagonal", scale))
            assert pd.isna(lines.loc["single_scale", column])


def test_findings_note_with_the_baseline_apart_and_overlapping(tmp_path):
    apart = snr_paths.findings_note(quality_of(tmp_path))
    assert "Does the single-scale baseline beat the best LIFT path at equal parameters? yes:" in apart
    assert "(single_scale FID 78.83 [77.33, 80.33] vs dp_large (seed) FID 101.5 [100, 103]; equal parameters" in apart
    assert (
        "Best LIFT path: dp_large (seed) FID 101.5 [100, 103], indistinguishable at this n from the runner-up" in apart
    )
    assert "Does DP total hurt (seed)? no: it improves on the diagonal" in apart

    # The baseline at 100 [98.5, 101.5] overlaps dp_large (seed) at 101.53 [100.03, 103.03]; DP total at 117 is
    # within the noise of the diagonal's 116.14.
    close = snr_paths.findings_note(
        quality_of(tmp_path, fids={("baseline", "single_scale", None): 100.0, ("lift", "dp_total", "seed"): 117.0})
    )
    assert "at equal parameters? not clearly: the intervals overlap" in close
    assert "Does DP total hurt (seed)? not clearly" in close

    hurt = snr_paths.findings_note(quality_of(tmp_path, fids={("lift", "dp_total", "derived"): 130.0}))
    assert "Does DP total hurt (derived)? yes: its FID is higher than the diagonal's" in hurt


def test_quality_table_shows_the_paired_difference_fid_infinity_and_extractor(tmp_path):
    deltas = {("lift", "dp_large", "seed"): (22.7, 20.7, 24.7), ("lift", "diagonal", None): (37.31, -1.0, 75.0)}
    lines = quality_of(tmp_path, deltas=deltas, extractor="domain_feed").set_index("label")
    assert lines.loc["dp_large (seed)", "fid_delta [ci] vs baseline"] == "+22.7 [+20.7, +24.7]"
    assert lines.loc["diagonal", "fid_delta [ci] vs baseline"] == "+37.31 [-1, +75]"
    assert lines.loc["single_scale", "fid_delta [ci] vs baseline"] == ""  # the baseline is the reference
    assert lines.loc["dp_total (seed)", "fid_delta [ci] vs baseline"] == ""  # not recorded for that path
    assert (lines["extractor"] == "domain_feed").all() and (lines["n"] == SAMPLES).all()
    assert lines.loc["dp_large (seed)", "fid_delta_ci_low"] == 20.7
    columns = lines.columns.tolist()
    assert columns[columns.index("fid [ci]") + 1 : columns.index("fid [ci]") + 3] == [
        "fid_inf [ci]",
        "fid_delta [ci] vs baseline",
    ]
    assert lines["fid_inf [ci]"].eq("").all()  # no FID-infinity rows here: blank, not absent
    assert lines.loc["dp_large (seed)", "fid"] == FIDS["lift", "dp_large", "seed"]  # the Δ rows join the path's line
    assert len(lines) == len(FIDS)


def test_findings_note_judges_the_baseline_by_the_paired_difference(tmp_path):
    # The baseline at 100 [98.5, 101.5] overlaps dp_large (seed) at 101.53 [100.03, 103.03] (unpaired: not clear),
    # but the paired difference +1.53 [+0.53, +2.53] excludes 0: the baseline is better.
    baseline = {("baseline", "single_scale", None): 100.0}
    key = ("lift", "dp_large", "seed")
    apart = snr_paths.findings_note(quality_of(tmp_path, fids=baseline, deltas={key: (1.53, 0.53, 2.53)}))
    assert "at equal parameters? yes: the paired difference excludes 0 (the baseline's FID is lower)" in apart
    assert "Δ = FID(dp_large (seed)) - FID(baseline) = +1.53 [+0.53, +2.53], paired" in apart
    assert "intervals overlap" not in apart.split("Best LIFT path")[0]

    tied = snr_paths.findings_note(quality_of(tmp_path, fids=baseline, deltas={key: (1.53, -0.5, 3.5)}))
    assert "not clearly: the paired difference includes 0 (indistinguishable at this n)" in tied

    better = {("baseline", "single_scale", None): 110.0}
    lift = snr_paths.findings_note(quality_of(tmp_path, fids=better, deltas={key: (-8.47, -10.0, -7.0)}))
    assert "no: the paired difference excludes 0 with the best LIFT path's FID lower" in lift

    # Without a paired difference, the separate intervals decide, and the note says so.
    unpaired = snr_paths.findings_note(quality_of(tmp_path, fids=baseline))
    assert "not clearly: the intervals overlap" in unpaired and "no paired difference recorded" in unpaired


def test_findings_note_gives_every_path_against_the_baseline_and_dp_total_both_ways(tmp_path):
    note = snr_paths.findings_note(quality_of(tmp_path, deltas=DELTAS))
    assert "yes: the paired difference excludes 0" in note
    assert "The other LIFT paths vs the baseline (paired, FID(path) - FID(baseline)): dp_large (derived) Δ" in note
    others = note.split("The other LIFT paths")[1].split("Best LIFT path")[0]
    assert others.count("(excludes 0: higher)") == len(DELTAS) - 1  # every path but the best, each above 0
    # dp_total vs the diagonal: no paired difference between them, so their intervals; each one's Δ vs the baseline.
    assert "Does DP total hurt (seed)? no: it improves on the diagonal" in note
    paired = "vs the baseline (paired): dp_total (seed) Δ +30.37 [+28.37, +32.37] (excludes 0: higher), diagonal Δ"
    assert paired in note


def test_findings_note_says_not_measured_without_a_baseline(tmp_path):
    fids = {k: v for k, v in FIDS.items() if k[0] == "lift"}
    rows = [r for r in snr_rows(tmp_path, parts=("quality",)) if r["params"]["model"] == "lift"]
    table = snr_paths.quality_table(snr_paths.quality_rows(frame(rows)), snr_paths.path_errors(frame(rows)))
    assert len(table) == len(fids)
    note = snr_paths.findings_note(table)
    assert "at equal parameters? not measured (no baseline FID)" in note
    assert "Does DP total hurt? not measured" not in note


def schedule_table_of(tmp_path: Path, **kwargs) -> pd.DataFrame:
    rows = [r for r in snr_rows(tmp_path, parts=("schedules",), **kwargs) if "artifact" not in r]
    return snr_paths.schedule_table(snr_paths.schedule_rows(frame(rows)))


def test_schedule_note_beats_indistinguishable_and_loses(tmp_path):
    note = snr_paths.schedule_note(schedule_table_of(tmp_path))
    assert (
        "At 10 steps: dp beats uniform (FID 20 [19, 21] vs 30 [29, 31]; separate intervals); dp is indistinguishable "
        "at this n from snr" in note
    )

    loses = snr_paths.schedule_note(schedule_table_of(tmp_path, schedule_fids={("dp", 10): 40.0}))
    assert "dp loses to uniform (FID 40 [39, 41] vs 30 [29, 31]; separate intervals); dp loses to snr" in loses

    assert snr_paths.schedule_note(schedule_table_of(tmp_path), steps=5).startswith("At 5 steps: dp beats uniform")


def test_schedule_note_says_where_the_dp_grid_is_not_the_cheapest(tmp_path):
    table = schedule_table_of(tmp_path)
    table.loc[(table["steps"] == 20) & (table["spacing"] == "dp_seed"), "schedule_cost"] = 0.01
    note = snr_paths.schedule_note(table)
    assert "does NOT have the lowest schedule_cost everywhere: at 20 steps dp_seed 0.01 < dp 0.05" in note
    assert "at 5 steps" not in note and "at 10 steps" not in note


def test_schedule_note_without_dp_rows(tmp_path):
    table = schedule_table_of(tmp_path)
    note = snr_paths.schedule_note(table[table["spacing"] != "dp"])
    assert "At 10 steps: dp not measured" in note and "No dp schedule_cost at 5, 10, 20 steps" in note


def test_convention_differences_count_the_points_that_differ():
    lines = [
        {"convention": c, "path": p, "i": i, "snr_large": GRID[i], "snr_small": GRID[j]}
        for (c, p), js in PATHS.items()
        for i, j in enumerate(js)
    ]
    points = pd.DataFrame(lines)
    points.loc[
        (points["convention"] == "derived") & (points["path"] == "dp_large") & (points["i"] >= 3), "snr_small"
    ] = 50
    diffs = snr_paths.convention_differences(points).set_index("path")
    assert diffs["differ"].to_dict() == {"diagonal": 0, "dp_total": 1, "dp_large": 2}
    assert diffs.loc["dp_large", "at_snr_large"] == "10, 100" and (diffs["compared"] == M).all()
    only_seed = snr_paths.convention_differences(points[points["convention"] == "seed"])
    assert "cannot be compared" in snr_paths.convention_note(only_seed)


def test_path_error_from_heatmap_is_the_sum_along_the_path():
    for (convention, path), js in PATHS.items():
        again = snr_paths.path_error_from_heatmap(heatmap(convention), GRID, GRID, GRID[js] * 1.01)
        for s, scale in enumerate(snr_paths.SCALES):
            assert again[scale] == pytest.approx(path_error(convention, path, s))


def test_heatmap_grid_and_its_errors():
    assert np.allclose(snr_paths.heatmap_grid(0.01, 100, 5), [0.01, 0.1, 1, 10, 100])
    with pytest.raises(ValueError, match="snr_min < snr_max"):
        snr_paths.heatmap_grid(1.0, 0.1, 5)
    with pytest.raises(ValueError, match="num_points must be >= 2"):
        snr_paths.heatmap_grid(0.1, 1.0, 1)


def test_mse_note_answers_the_conditioning_questions(tmp_path):
    table = snr_paths.mse_table(frame(snr_rows(tmp_path, parts=("mse",))))
    note = snr_paths.mse_note(table)
    assert (
        "Does a clean small scale help the large? clean_small large-scale MSE 0.0746 vs 0.0178 for both_noisy" in note
    )
    assert "(+319.1%): not lower" in note
    assert (
        "Baseline vs LIFT (both noisy): single_scale large-scale MSE 0.015 vs 0.0178 for both_noisy (-15.7%): lower"
        in note
    )
    assert "not measured" in snr_paths.mse_note(table[table["test"] != "clean_large"])


def test_fid_verdict():
    def line(fid, low=None, high=None):
        return {
            "fid": fid,
            "fid_ci_low": fid - 1 if low is None else low,
            "fid_ci_high": fid + 1 if high is None else high,
        }

    assert snr_paths.fid_verdict(line(10), line(20)) == snr_paths.BEATS
    assert snr_paths.fid_verdict(line(20), line(10)) == snr_paths.LOSES
    assert snr_paths.fid_verdict(line(10), line(11)) == snr_paths.TIED
    assert snr_paths.fid_verdict(line(11), line(10)) == snr_paths.TIED
    assert snr_paths.fid_verdict(line(10, np.nan), line(20)) == snr_paths.UNJUDGED
    assert snr_paths.fid_verdict({"fid": np.nan}, line(20)) == snr_paths.NOT_MEASURED


def test_log_grid_heatmaps_and_grouped_bars():
    fig = log_grid_heatmaps({"a": heatmap("seed")[0]}, GRID, GRID, {"p": (GRID, GRID)}, {"p": {"color": "w"}})
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and ax.get_xlim()[0] < GRID[0] < GRID[-1] < ax.get_xlim()[1]
    with pytest.raises(ValueError, match="positive and increasing"):
        log_grid_heatmaps({"a": np.ones((2, 2))}, [1.0, 0.5], [1.0, 2.0])
    with pytest.raises(ValueError, match="must be \\[2, 3\\]"):
        log_grid_heatmaps({"a": np.ones((2, 2))}, [1.0, 2.0, 3.0], [1.0, 2.0])
    bars = grouped_bars(pd.DataFrame({"x": [1.0, np.nan], "y": [2.0, 3.0]}, index=["g1", "g2"]))
    assert len(bars.axes[0].patches) == 3  # the NaN bar is a gap


def test_rows_from_two_runs_get_a_section_set_each(tmp_path):
    rows = [r for run_id in ("run-a", "run-b") for r in snr_rows(tmp_path, parts=("mse", "paths"), run_id=run_id)]
    md = report(tmp_path, rows)
    assert "could not be built" not in md
    for run_id in ("run-a", "run-b"):
        assert f"### DP paths ({run_id})" in md
        assert len(pd.read_csv(tmp_path / f"tables/snr_paths_paths_{run_id}.csv")) == len(PATHS)
        assert (tmp_path / f"figures/snr_paths_mse_tests_{run_id}.png").is_file()


def test_the_density_note_names_where_each_conventions_error_peaks():
    curves = pd.DataFrame(
        {
            "convention": ["derived"] * 3 + ["seed"] * 3,
            "t": [999, 500, 0] * 2,
            "snr": [1e-8, 1.0, 1e4] * 2,
            "value": [1.0, 4.0, 2.0, 1e8, 4.0, 2e-4],
        }
    )
    note = snr_paths.density_note(curves)
    assert "derived: E(t) is largest at t = 500" in note and "smallest at t = 999" in note and "a ratio of 4 " in note
    assert "seed: E(t) is largest at t = 999" in note and "smallest at t = 0" in note


def test_the_schedule_verdict_uses_the_paired_difference_where_it_was_recorded():
    table = pd.DataFrame(
        {
            "steps": [10, 10, 10],
            "spacing": ["uniform", "snr", "dp"],
            "fid": [6.0, 7.0, 7.5],
            "fid_ci_low": [4.0, 5.0, 5.5],
            "fid_ci_high": [8.0, 9.0, 9.5],
            "schedule_cost": [3.0, 2.0, 1.0],
        }
    )
    table = snr_paths.with_fid_interval(table)
    deltas = pd.DataFrame(  # separate intervals overlap for both rivals; the paired one excludes 0 against uniform
        {
            "steps": [10, 10],
            "spacing": ["dp", "dp"],
            "reference": ["uniform", "snr"],
            "fid_delta": [1.5, 0.5],
            "fid_delta_ci_low": [0.4, -0.7],
            "fid_delta_ci_high": [2.6, 1.6],
        }
    )
    note = snr_paths.schedule_note(table, 10, deltas)
    assert "dp - uniform = +1.5 [+0.4, +2.6] (paired, same noise): excludes 0: higher" in note
    assert "dp - snr = +0.5 [-0.7, +1.6] (paired, same noise): includes 0: not distinguishable at this n" in note
    assert "separate intervals" not in note
    assert "separate intervals" in snr_paths.schedule_note(table, 10)  # no paired rows: the fallback, said so

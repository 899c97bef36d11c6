"""The guidance report on hand-made rows: per-class grids that hold the right class, quality vs scale, the CG-vs-CFG
table joined with timing, the trade-off and classifier plots, the comparison note, skips and per-run sections."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from diffbench.report import guidance
from diffbench.report.build import build_report
from diffbench.report.sections import rows_to_frame
from diffbench.results import ARRAYS_DIR

K, R, IMAGE = guidance.NUM_CLASSES, 3, (1, 5, 5)
SCALES = {"cg": (0.0, 1.0, 2.0, 4.0, 8.0), "cfg": (0.0, 1.0, 2.0, 4.0)}  # scale 8: CG only
TIMED = "cfg"  # only CFG has timing rows
TS = tuple(range(0, 1000, 100))
ROW = {"family": "guidance", "seed": 4, "device": "cpu", "profile": "smoke", "time": "2025-01-01T00:00:00+00:00"}
FIGURES = ("class_0", "class_4", "class_9", "quality_vs_scale", "tradeoff", "noisy_classifier")


def known(method: str, scale: float) -> dict[str, float]:
    """Per (method, scale): CFG gains accuracy faster and loses more diversity and FID; equal at scale 0."""
    gain = {"cg": 1.0, "cfg": 1.5}[method] * scale
    fid = 20 + gain
    return {
        "class_accuracy": 0.3 + 0.05 * gain,
        "class_diversity": 2.0 - 0.1 * gain,
        "fid": fid,
        "fid_ci_low": fid - 0.5,
        "fid_ci_high": fid + 0.5,
        "kid": 0.01,
        "kid_std": 0.002,
        "network_evaluations": {"cg": 10.0, "cfg": 20.0}[method],
        "classifier_evaluations": {"cg": 10.0, "cfg": 0.0}[method],
    }


def class_coded_samples() -> np.ndarray:
    """``[R * K, C, H, W]``: image i is flat grey at a level that encodes its class (i mod K) and its index."""
    levels = (np.arange(R * K) % K) / K + np.arange(R * K) / (100 * R * K)
    return np.broadcast_to(levels[:, None, None, None], (R * K, *IMAGE)).astype(np.float32)


def guidance_rows(run_dir: Path, run_id: str = "run-a", classifier: bool = True) -> list[dict]:
    rows = []

    def row(cell: str, params: dict, metric: str, value: float, artifact: str | None = None) -> None:
        where = {"cell": f"benchmarks/bench_guidance.py::{cell}", "run_id": run_id, "params": params}
        rows.append(ROW | where | {"metric": metric, "value": value} | ({"artifact": artifact} if artifact else {}))

    (run_dir / ARRAYS_DIR).mkdir(parents=True, exist_ok=True)
    for method, scales in SCALES.items():
        for scale in scales:
            params = {"method": method, "scale": scale, "model": "teacher", "n": R * K, "n_real": 100}
            for metric, value in known(method, scale).items():
                row("test_samples", params, metric, value)
            rel = f"{ARRAYS_DIR}/{run_id}-{method}-{scale:g}-samples.npy"
            np.save(run_dir / rel, class_coded_samples())
            row("test_samples", params, "samples", R * K, rel)
            if method == TIMED:
                timing = {"method": method, "scale": scale, "model": "teacher"}
                row("test_timing", timing, guidance.TIMING_METRIC, 0.01 * (1 + scale))
    if classifier:
        for t in TS:
            row("test_classifier", {"model": "noisy_classifier", "t": t}, guidance.CLASSIFIER_METRIC, 0.99 - 0.0009 * t)
    return rows


def report(run_dir: Path, rows: list[dict]) -> str:
    return build_report(run_dir, rows=rows, failures=[], sections={"guidance": guidance.sections}).read_text()


def figure_data(run_dir: Path, name: str) -> pd.DataFrame:
    return pd.read_csv(run_dir / "figures" / f"guidance_{name}.csv")


# --- the whole report -------------------------------------------------------------------------------------


def test_full_run_writes_every_figure_the_table_and_the_note(tmp_path):
    md = report(tmp_path, guidance_rows(tmp_path))
    assert "could not be built" not in md and "skipped" not in md
    for name in FIGURES:
        assert (tmp_path / "figures" / f"guidance_{name}.png").stat().st_size > 5_000, name
        assert len(figure_data(tmp_path, name)) > 0, name
        assert f"](figures/guidance_{name}.png)" in md, name

    for cls in guidance.GRID_CLASSES:
        grid = figure_data(tmp_path, f"class_{cls}")
        assert len(grid) == sum(len(s) for s in SCALES.values()) * R
        assert list(grid["method"].drop_duplicates()) == ["cg", "cfg"]
        expected = cls / K + (cls + K * grid["image"]) / (100 * R * K)  # the image-th sample of class cls
        assert np.allclose(grid["mean"], expected)

    table = pd.read_csv(tmp_path / "tables/guidance_methods.csv")
    assert list(zip(table["method"], table["scale"], strict=True)) == [
        (m, s) for m, scales in SCALES.items() for s in scales
    ]  # CG first; no CFG line at scale 8, where only CG was measured
    line = table.set_index(["method", "scale"]).loc[("cfg", 2.0)]
    assert line["class_accuracy"] == pytest.approx(known("cfg", 2.0)["class_accuracy"])
    assert line["fid [ci]"] == "23 [22.5, 23.5]" and line["network_evaluations"] == 20 and line["n"] == R * K
    timing = table.set_index(["method", "scale"])[guidance.TIMING_METRIC]
    assert timing["cfg", 4.0] == pytest.approx(0.05) and timing.loc["cg"].isna().all()
    assert table["fid_inf [ci]"].isna().all() and guidance.FID_CAPTION in md  # rows from before FID-infinity

    curves = figure_data(tmp_path, "quality_vs_scale")
    fid = curves[curves["metric"] == "fid"]
    assert np.allclose(fid["high"] - fid["low"], 1.0)
    assert curves.loc[curves["metric"] != "fid", ["low", "high"]].isna().all().all()
    assert len(figure_data(tmp_path, "noisy_classifier")) == len(TS)

    assert "CFG reaches the higher class accuracy at 3 and CG at 0" in md
    assert "Where CFG is more accurate, its diversity is lower at 3 of 3 scale(s) and its FID higher at 3 of 3" in md
    assert "FID is cg 20 and cfg 20: equal" in md


def test_missing_classifier_and_sample_arrays_are_noted(tmp_path):
    rows = guidance_rows(tmp_path, classifier=False)
    gone = f"{ARRAYS_DIR}/run-a-cg-2-samples.npy"
    (tmp_path / gone).unlink()
    md = report(tmp_path, rows)
    assert "could not be built" not in md
    assert "classifier plot skipped" in md and not (tmp_path / "figures/guidance_noisy_classifier.png").exists()
    assert gone in md
    assert "cg s=2" not in set(figure_data(tmp_path, "class_4")["row"])


def test_classifier_only_run_skips_the_method_sections(tmp_path):
    rows = [r for r in guidance_rows(tmp_path) if r["params"]["model"] == "noisy_classifier"]
    md = report(tmp_path, rows)
    assert "could not be built" not in md
    for note in ("per-class grids skipped", "quality plot skipped", "table skipped", "trade-off plot skipped"):
        assert note in md, note
    assert (tmp_path / "figures/guidance_noisy_classifier.png").is_file()


def test_rows_from_two_runs_get_a_section_set_each(tmp_path):
    rows = [r for run_id in ("run-a", "run-b") for r in guidance_rows(tmp_path, run_id) if "artifact" not in r]
    md = report(tmp_path, rows)
    for run_id in ("run-a", "run-b"):
        assert f"### CG vs CFG ({run_id})" in md
        assert (tmp_path / f"figures/guidance_tradeoff_{run_id}.png").is_file()
        assert len(pd.read_csv(tmp_path / f"tables/guidance_methods_{run_id}.csv")) == 9


# --- the pure functions -----------------------------------------------------------------------------------


def test_class_samples_take_every_kth_sample_from_the_class_on():
    batch = np.arange(R * K)[:, None, None, None] * np.ones((1, *IMAGE))
    for cls in range(K):
        picked = guidance.class_samples(batch, cls)
        assert len(picked) == R and (picked[:, 0, 0, 0] % K == cls).all()
    with pytest.raises(ValueError, match="cls must be in"):
        guidance.class_samples(batch, K)


def table_of(points: dict[tuple[str, float], tuple[float, float, float]]) -> pd.DataFrame:
    lines = [
        {"method": m, "scale": s, "class_accuracy": a, "class_diversity": d, "fid": f}
        for (m, s), (a, d, f) in points.items()
    ]
    return pd.DataFrame(lines)


def test_comparison_note_names_the_more_accurate_method_and_its_cost():
    note = guidance.comparison_note(
        table_of(
            {
                ("cg", 0.0): (0.3, 2.0, 20.0),
                ("cfg", 0.0): (0.3, 2.0, 21.0),
                ("cg", 1.0): (0.8, 1.0, 25.0),  # CG more accurate, less diverse, worse FID
                ("cfg", 1.0): (0.5, 1.5, 22.0),
                ("cg", 3.0): (0.6, 1.2, 30.0),  # CFG more accurate, more diverse, better FID
                ("cfg", 3.0): (0.7, 1.1, 31.0),
                ("cg", 9.0): (0.9, 0.5, 40.0),  # CG only: not matched
            }
        )
    )
    assert "At the 2 scale(s) > 0 measured for both methods" in note
    assert "CFG reaches the higher class accuracy at 1 and CG at 1" in note
    assert "scale 1: class accuracy 0.8 vs 0.5, diversity 1 vs 1.5, FID 25 vs 22" in note
    assert "Where CG is more accurate, its diversity is lower at 1 of 1 scale(s) and its FID higher at 1 of 1" in note
    assert "Where CFG is more accurate, its diversity is lower at 1 of 1 scale(s) and its FID higher at 1 of 1" in note
    assert "FID is cg 20 and cfg 21: they differ by 1" in note


def test_comparison_note_without_both_methods_or_scale_zero():
    assert "CG and CFG cannot be compared" in guidance.comparison_note(table_of({("cg", 1.0): (0.5, 1.0, 20.0)}))
    note = guidance.comparison_note(table_of({("cg", 1.0): (0.5, 1.0, 20.0), ("cfg", 1.0): (0.5, 1.0, 20.0)}))
    assert "(1 tied)" in note and "Scale 0 has no FID for both methods" in note


def test_method_table_has_only_recorded_method_scale_pairs(tmp_path):
    rows = guidance_rows(tmp_path, classifier=False)
    table = guidance.method_table(rows_to_frame(rows))
    assert len(table) == sum(len(s) for s in SCALES.values())
    assert table.columns.tolist()[:6] == ["method", "scale", "class_accuracy", "class_diversity", "fid", "fid [ci]"]
    assert table["classifier_evaluations"].tolist() == [10.0] * 5 + [0.0] * 4


def test_method_table_carries_fid_infinity_and_the_extractor(tmp_path):
    """CFG's rows as recorded since FID-infinity (with the extractor as context), CG's as before it."""
    rows = guidance_rows(tmp_path, classifier=False)
    recorded = [r for r in rows if r["params"].get("method") == "cfg" and r["metric"] == "fid"]
    for fid_row in recorded:
        fid = fid_row["value"]
        extra = {"fid_infinity": fid - 4, "fid_infinity_ci_low": fid - 5, "fid_infinity_ci_high": fid - 3}
        rows += [fid_row | {"metric": m, "value": v} for m, v in (extra | {"fid_infinity_residual": 0.2}).items()]
    for row in rows:
        if row["params"].get("method") == "cfg" and "artifact" not in row:
            row["context"] = {"extractor": "domain_cafe"}
    table = guidance.method_table(rows_to_frame(rows)).set_index(["method", "scale"])
    assert table.columns.tolist()[3:5] == ["fid [ci]", "fid_inf [ci]"]  # after method, scale (the index) and fid
    cfg_fid = known("cfg", 2.0)["fid"]
    assert table.loc[("cfg", 2.0), "fid_inf [ci]"] == f"{cfg_fid - 4:g} [{cfg_fid - 5:g}, {cfg_fid - 3:g}]"
    assert (table.loc["cfg", "extractor"] == "domain_cafe").all() and (table.loc["cfg", "n"] == R * K).all()
    old = table.loc["cg"]
    assert (old["fid_inf [ci]"] == "").all() and old["extractor"].isna().all() and old["fid_infinity"].isna().all()


def test_classifier_curve_is_sorted_by_t(tmp_path):
    rows = [r for r in guidance_rows(tmp_path) if r["params"].get("model") == "noisy_classifier"]
    curve = guidance.classifier_curve(rows_to_frame(rows[::-1]))
    assert curve["t"].tolist() == list(map(float, TS))
    assert curve["value"].tolist() == pytest.approx([0.99 - 0.0009 * t for t in TS])

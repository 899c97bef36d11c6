"""The samplers report on hand-made rows: every figure with the numbers it plots, the Pareto front of known cells,
the seed-004 grids holding the right classes, the distillation table with its FID interval and the 1-step verdict
(intervals that overlap and that do not), the note without a timing pass, and runs with a panel or a method missing.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from diffbench.metrics.registry import HIGHER, LOWER, NEITHER
from diffbench.report import samplers
from diffbench.report.build import build_report
from diffbench.report.figures import point_panels
from diffbench.report.parts import intervals_overlap
from diffbench.report.sections import rows_to_frame
from diffbench.results import ARRAYS_DIR

K, N_IMAGES, N_POINTS, IMAGE = samplers.NUM_CLASSES, 30, 48, (1, 16, 16)
ROW = {"family": "samplers", "seed": 4, "device": "cpu", "profile": "smoke", "time": "2025-01-01T00:00:00+00:00"}
# (method, eta, steps, model, fid); gmm uses W2 = fid / 100. Timing: 1 ms per network evaluation, so at the same
# step count the lower FID dominates.
CELLS = (
    ("ddim", 0.0, 1, "teacher", 200.0),
    ("ddim", 0.0, 4, "teacher", 35.0),
    ("ddim", 0.0, 20, "teacher", 15.0),
    ("ddim", 0.0, 50, "teacher", 12.0),
    ("ddim", 0.0, 100, "teacher", 11.0),
    ("ddim", 1.0, 20, "teacher", 20.0),
    ("ddim", 1.0, 100, "teacher", 13.0),
    ("ddpm", 1.0, 1000, "teacher", 10.5),
    ("progressive", 0.0, 4, "progressive-r1", 20.0),
    ("progressive", 0.0, 2, "progressive-r2", 25.0),
    ("progressive", 0.0, 1, "progressive-r3", 40.0),
    ("one_step", None, 1, "one_step", 30.0),
    ("consistency", None, 1, "consistency", 35.0),
    ("consistency", None, 2, "consistency", 28.0),
)
# Worked out by hand from CELLS: the cells no other cell beats in both time and FID (or W2).
FRONT = {
    ("one-step", 1),
    ("progressive", 2),
    ("progressive", 4),
    ("DDIM η=0", 20),
    ("DDIM η=0", 50),
    ("DDIM η=0", 100),
    ("DDPM", 1000),
}
FIGURES = (
    "quality_vs_evaluations_image",
    "quality_vs_evaluations_gmm",
    "pareto_image",
    "pareto_gmm",
    "ddim_steps_image",
    "samples_image",
    "samples_gmm",
)


def class_coded_images() -> np.ndarray:
    """``[N, C, H, W]``: image i is flat grey at a level that encodes its class (i mod K) and its index."""
    levels = (np.arange(N_IMAGES) % K) / K + np.arange(N_IMAGES) / (100 * N_IMAGES)
    return np.broadcast_to(levels[:, None, None, None], (N_IMAGES, *IMAGE)).astype(np.float32)


def ring_points(scale: float) -> np.ndarray:
    angles = np.arange(N_POINTS) * 2 * np.pi / 8
    return scale * np.stack([np.cos(angles), np.sin(angles)], axis=1)


def quality(panel: str, fid: float, trained: bool, steps: int) -> dict[str, float]:
    shared = {"network_evaluations": float(steps), "teacher_deviation": fid / 1000}
    if trained:
        shared |= {"train_steps": 100.0 * (5 - min(steps, 4)), "train_seconds": 10.0 * (5 - min(steps, 4))}
    if panel == "image":
        return shared | {
            "fid": fid,
            "fid_ci_low": fid - 1,
            "fid_ci_high": fid + 1,
            "kid": fid / 1000,
            "kid_std": 0.001,
            "class_accuracy": 1 - fid / 300,
            "class_diversity": 1.0,
        }
    return shared | {
        "wasserstein": fid / 100,
        "mmd_rbf": fid / 1000,
        "modes_covered": 8.0 if fid < 50 else 5.0,
        "high_quality_fraction": 0.9,
        "mode_balance": 0.95,
    }


def sampler_rows(
    run_dir: Path,
    panels: tuple[str, ...] = ("image", "gmm"),
    timing: bool = True,
    cells: tuple = CELLS,
    fids: dict[tuple[str, int], float] | None = None,
    run_id: str = "run-a",
) -> list[dict]:
    """Rows as the samplers cells record them (arrays saved under ``run_dir``); ``fids`` overrides the FID of
    (method, steps) cells."""
    fids = fids or {}
    rows = []

    def row(cell: str, params: dict, metric: str, value: float, artifact: str | None = None) -> None:
        where = {"cell": f"benchmarks/bench_samplers.py::{cell}", "run_id": run_id, "params": params}
        rows.append(ROW | where | {"metric": metric, "value": value} | ({"artifact": artifact} if artifact else {}))

    (run_dir / ARRAYS_DIR).mkdir(parents=True, exist_ok=True)
    for panel in panels:
        for method, eta, steps, model, fid in cells:
            fid = fids.get((method, steps), fid)
            sampler = {"panel": panel, "method": method, "steps": steps, "spacing": "uniform"}
            if eta is not None:
                sampler["eta"] = eta
            sizes = {"n": N_IMAGES, "n_real": 100} if panel == "image" else {"n": N_POINTS}
            params = sampler | sizes | {"model": model}
            for metric, value in quality(panel, fid, model != "teacher", steps).items():
                row("test_quality", params, metric, value)
            rel = f"{ARRAYS_DIR}/{run_id}-{panel}-{method}-{eta}-{steps}-samples.npy"
            np.save(run_dir / rel, class_coded_images() if panel == "image" else ring_points(fid / 10))
            row("test_quality", params, "samples", 1.0, rel)
            if timing:
                row("test_timing", sampler, samplers.TIMING_METRIC, 0.001 * steps)
    return rows


def report(run_dir: Path, rows: list[dict]) -> str:
    return build_report(run_dir, rows=rows, failures=[], sections={"samplers": samplers.sections}).read_text()


def figure_data(run_dir: Path, name: str) -> pd.DataFrame:
    return pd.read_csv(run_dir / "figures" / f"samplers_{name}.csv")


# --- the whole report -------------------------------------------------------------------------------------


def test_full_run_writes_every_figure_with_its_numbers_the_tables_and_the_notes(tmp_path):
    md = report(tmp_path, sampler_rows(tmp_path))
    assert "could not be built" not in md and "skipped" not in md and "did not run" not in md
    for name in FIGURES:
        assert (tmp_path / "figures" / f"samplers_{name}.png").stat().st_size > 5_000, name
        assert len(figure_data(tmp_path, name)) > 0, name
        assert f"](figures/samplers_{name}.png)" in md, name

    curves = figure_data(tmp_path, "quality_vs_evaluations_image")
    assert set(curves["metric"]) == {"fid", "class_accuracy", "teacher_deviation"}
    fid = curves[curves["metric"] == "fid"].set_index(["series", "steps"])
    assert len(fid) == len(CELLS) and fid.loc[("one-step", 1), "value"] == 30.0
    assert np.allclose(fid["high"] - fid["low"], 2.0)
    assert curves.loc[curves["metric"] != "fid", ["low", "high"]].isna().all().all()
    assert fid.loc[("DDPM", 1000), "network_evaluations"] == 1000
    gmm = figure_data(tmp_path, "quality_vs_evaluations_gmm")
    assert set(gmm["metric"]) == {"wasserstein", "mmd_rbf", "modes_covered", "teacher_deviation"}

    for panel, metric in (("image", "fid"), ("gmm", "wasserstein")):
        points = figure_data(tmp_path, f"pareto_{panel}")
        chosen = points[points["metric"] == metric]
        assert len(chosen) == len(CELLS)
        front = chosen[chosen["front"]]
        assert set(zip(front["series"], front["steps"], strict=True)) == FRONT
        assert chosen.set_index(["series", "steps"]).loc[("DDPM", 1000), samplers.TIMING_METRIC] == 1.0
    assert "image, fid (lower is better): Pareto front, fastest first: one-step at 1 step (0.001 s/image" in md

    grid = figure_data(tmp_path, "ddim_steps_image")
    rows = ["DDIM η=0, 20 steps", "DDIM η=0, 50 steps", "DDIM η=0, 100 steps", "DDPM, 1000 steps"]
    assert list(grid["row"].drop_duplicates()) == rows
    per_row = grid[grid["row"] == rows[0]]
    assert list(per_row["cls"]) == [c for c in range(K) for _ in range(samplers.PER_CLASS)]
    assert np.allclose(grid["mean"], grid["cls"] / K + grid["sample"] / (100 * N_IMAGES))

    assert len(figure_data(tmp_path, "samples_image")) == len(CELLS) * samplers.CELL_IMAGES
    points = figure_data(tmp_path, "samples_gmm")
    assert len(points) == len(CELLS) * N_POINTS and points["cell"].nunique() == len(CELLS)

    distilled = pd.read_csv(tmp_path / "tables/samplers_distillation.csv")
    image = distilled[distilled["panel"] == "image"]
    assert list(zip(image["series"], image["steps"], strict=True)) == [
        ("DDIM η=0", 1),
        ("progressive", 1),
        ("one-step", 1),
        ("consistency", 1),
        ("progressive", 2),
        ("consistency", 2),
        ("DDIM η=0", 4),
        ("progressive", 4),
    ]  # the teacher's DDIM at the students' step counts (it has none at 2), first at each
    one_step = image.set_index(["series", "steps"]).loc[("one-step", 1)]
    assert one_step["fid [ci]"] == "30 [29, 31]" and one_step["train_steps"] == 400
    assert distilled.loc[distilled["panel"] == "gmm", "wasserstein"].notna().all()

    assert "the best 1-step student, one-step (one_step), has FID 30 [29, 31] vs the teacher's" in md
    assert "FID 200 [199, 201]: yes: its FID is lower and the intervals do not overlap" in md
    assert "Other 1-step students: consistency 35 [34, 36]; progressive 40 [39, 41]." in md
    assert "gmm: the best 1-step student, one-step (one_step), has W2 0.3 vs the teacher's 1-step DDIM η=0 W2 2" in md
    assert "no confidence interval is recorded for W2" in md

    cells = pd.read_csv(tmp_path / "tables/samplers_cells.csv")
    assert len(cells) == 2 * len(CELLS)
    assert cells[samplers.TIMING_METRIC].notna().all()
    assert "fid [ci]" in cells and "wasserstein" in cells


def test_without_timing_rows_the_pareto_section_says_the_timing_pass_did_not_run(tmp_path):
    md = report(tmp_path, sampler_rows(tmp_path, panels=("image",), timing=False))
    assert "could not be built" not in md
    assert "the timing pass did not run" in md and samplers.TIMING_COMMAND in md
    assert not (tmp_path / "figures/samplers_pareto_image.png").exists()
    assert (tmp_path / "figures/samplers_quality_vs_evaluations_image.png").is_file()
    assert samplers.TIMING_METRIC not in pd.read_csv(tmp_path / "tables/samplers_cells.csv")


@pytest.mark.parametrize("panel", ["image", "gmm"])
def test_one_panel_only_does_not_crash(tmp_path, panel):
    md = report(tmp_path, sampler_rows(tmp_path, panels=(panel,)))
    assert "could not be built" not in md
    other = {"image": "gmm", "gmm": "image"}[panel]
    assert f"No {other} cells" in md
    assert (tmp_path / f"figures/samplers_pareto_{panel}.png").is_file()
    assert not (tmp_path / f"figures/samplers_samples_{other}.png").exists()
    if panel == "gmm":
        assert "seed-004 grids skipped" in md


def test_teacher_samplers_only_and_a_single_cell(tmp_path):
    teacher_only = tuple(c for c in CELLS if c[3] == "teacher")
    rows = sampler_rows(tmp_path, panels=("gmm",), cells=teacher_only)
    md = report(tmp_path, [r for r in rows if "artifact" not in r])
    assert "could not be built" not in md and "distillation table skipped" in md

    single = tmp_path / "single"
    md = report(single, sampler_rows(single, panels=("image",), cells=(("one_step", None, 1, "one_step", 30.0),)))
    assert "could not be built" not in md
    assert "no 1-step DDIM η=0 with FID: not answered" in md
    assert "seed-004 grids skipped" in md
    assert len(figure_data(single, "pareto_image").query("metric == 'fid'")) == 1


def test_rows_without_sampler_params_or_with_timing_only(tmp_path):
    rows = [ROW | {"cell": "x", "run_id": "r", "params": {"other": 1}, "metric": "fid", "value": 1.0}]
    assert "No sampler rows" in report(tmp_path, rows)
    timing = [r for r in sampler_rows(tmp_path, panels=("gmm",)) if r["metric"] == samplers.TIMING_METRIC]
    md = report(tmp_path, timing)
    assert "could not be built" not in md and "No quality rows" in md and "No samples arrays" in md


def test_point_panels_share_limits_and_count_points_outside():
    ring = ring_points(1.0)
    far = np.vstack([ring, [[50.0, 0.0]]])
    fig = point_panels({"a": ring, "b": ring * 1.1, "c": far})
    assert [ax.get_title() for ax in fig.axes[:3]] == ["a", "b", "c (1 outside)"]
    assert fig.axes[0].get_xlim() == fig.axes[2].get_xlim() and fig.axes[0].get_xlim()[1] < 5


# --- the pure functions -----------------------------------------------------------------------------------


def test_pareto_front_on_a_hand_made_example():
    #            A     B    C    D    E (dup of B)  F    G (nan)
    seconds = [1.0, 2.0, 3.0, 0.5, 2.0, 4.0, np.nan]
    fid = [10.0, 5.0, 7.0, 20.0, 5.0, 4.0, 1.0]
    front = samplers.pareto_front(seconds, fid, LOWER)
    # C is slower and worse than B; B and E tie (neither strictly better), G has no time.
    assert front.tolist() == [True, True, False, True, True, True, False]

    accuracy = [0.5, 0.9, 0.95, 0.6, 0.8, 0.9, 0.99]
    front = samplers.pareto_front(seconds, accuracy, HIGHER)
    # A is slower and less accurate than D; E is as fast as B and less accurate; F is slower than B, no better.
    assert front.tolist() == [False, True, True, True, False, False, False]
    assert samplers.pareto_front(seconds, fid, NEITHER).tolist() == [False] * 7


def test_pareto_front_marks_slow_equal_quality_points_as_dominated():
    front = samplers.pareto_front([1.0, 2.0, 3.0], [0.7, 0.7, 0.9], HIGHER)
    assert front.tolist() == [True, False, True]


def table(tmp_path: Path, **kwargs) -> pd.DataFrame:
    rows = [r for r in sampler_rows(tmp_path, timing=False, **kwargs) if "artifact" not in r]
    return samplers.quality_table(samplers.sampler_rows(rows_to_frame(rows)))


def test_one_step_note_says_whether_the_fid_intervals_overlap(tmp_path):
    apart = samplers.one_step_note(table(tmp_path, panels=("image",)))
    assert "the intervals do not overlap" in apart and "yes:" in apart

    # The teacher's 1-step DDIM at 30.5 [29.5, 31.5] overlaps one-step's 30 [29, 31].
    close = samplers.one_step_note(table(tmp_path, panels=("image",), fids={("ddim", 1): 30.5}))
    assert "not clearly: its FID is lower, but the intervals overlap" in close
    assert "do not overlap" not in close

    # The teacher's 1-step DDIM at 20 [19, 21] beats every student, clearly.
    worse = samplers.one_step_note(table(tmp_path, panels=("image",), fids={("ddim", 1): 20.0}))
    assert "no: its FID is not lower, and the intervals do not overlap" in worse


def test_quality_and_distillation_tables_carry_fid_infinity_and_the_extractor(tmp_path):
    """Image rows as recorded since FID-infinity (FID-infinity = FID - 2, interval ± 3, extractor as context)."""
    rows = [r for r in sampler_rows(tmp_path, timing=False) if "artifact" not in r]
    for fid_row in [r for r in rows if r["metric"] == "fid"]:
        fid = fid_row["value"]
        extra = {"fid_infinity": fid - 2, "fid_infinity_ci_low": fid - 5, "fid_infinity_ci_high": fid + 1}
        rows += [fid_row | {"metric": m, "value": v} for m, v in extra.items()]
    for row in rows:
        if row["params"]["panel"] == "image":
            row["context"] = {"extractor": "inception_pool3"}
    quality = samplers.quality_table(samplers.sampler_rows(rows_to_frame(rows)))
    columns = quality.columns.tolist()
    assert columns[columns.index("fid [ci]") + 1] == "fid_inf [ci]"
    image = quality[quality["panel"] == "image"].set_index(["series", "steps"])
    assert image.loc[("one-step", 1), "fid_inf [ci]"] == "28 [25, 31]"
    assert (image["extractor"] == "inception_pool3").all() and (image["n_real"] == 100).all()
    gmm = quality[quality["panel"] == "gmm"]
    assert (gmm["fid_inf [ci]"] == "").all() and gmm["extractor"].isna().all()  # no FID on the gmm panel

    distilled = samplers.distillation_table(quality).set_index(["panel", "series", "steps"])
    line = distilled.loc[("image", "consistency", 2)]
    assert line["fid_inf [ci]"] == "26 [23, 29]" and line["extractor"] == "inception_pool3" and line["n"] == N_IMAGES

    old = table(tmp_path)  # rows from before FID-infinity: the column is there, blank
    assert (old["fid_inf [ci]"] == "").all() and old["extractor"].isna().all()


def test_intervals_overlap():
    assert intervals_overlap((1, 2), (2, 3)) is True
    assert intervals_overlap((1, 2), (2.5, 3)) is False
    assert intervals_overlap((1, np.nan), (2.5, 3)) is None


def test_series_labels_and_order(tmp_path):
    assert samplers.series_label("ddim", 0.0) == "DDIM η=0"
    assert samplers.series_label("ddim", 1.0, "quadratic") == "DDIM η=1 (quadratic)"
    assert samplers.series_label("ddpm", 1.0) == "DDPM"
    assert samplers.series_label("progressive", 0.0) == "progressive"
    assert samplers.series_label("one_step", None) == "one-step"
    assert samplers.series_label("ddpm", 0.5) == "DDPM η=0.5"
    quality = table(tmp_path)
    assert samplers.ordered_series(quality) == [
        "DDIM η=0",
        "DDIM η=1",
        "DDPM",
        "progressive",
        "one-step",
        "consistency",
    ]
    assert list(quality["panel"].drop_duplicates()) == ["image", "gmm"]
    assert quality.columns.tolist()[quality.columns.get_loc("fid") + 1] == "fid [ci]"


def test_class_major_takes_the_first_samples_of_every_class():
    batch = np.arange(25)
    picked, index = samplers.class_major(batch, 3)
    assert index[:3] == [0, 10, 20] and index[3:6] == [1, 11, 21] and index[-2:] == [9, 19]
    assert (picked % K).tolist() == sorted((picked % K).tolist())


def test_the_one_step_verdict_uses_the_paired_difference_where_it_was_recorded():
    table = pd.DataFrame(
        {
            "panel": ["image", "image"],
            "method": ["ddim", "one_step"],
            "eta": [0.0, np.nan],
            "series": ["DDIM η=0", "one-step"],
            "model": ["teacher", "one_step"],
            "steps": [1, 1],
            "fid": [30.0, 28.0],
            "fid_ci_low": [27.0, 25.0],  # the separate intervals overlap ...
            "fid_ci_high": [33.0, 31.0],
            "fid_delta": [np.nan, -2.0],  # ... the paired difference does not include 0
            "fid_delta_ci_low": [np.nan, -3.1],
            "fid_delta_ci_high": [np.nan, -0.9],
            "train_steps": [np.nan, 100.0],
        }
    )
    note = samplers.one_step_note(table)
    assert "yes: Δ = -2 [-3.1, -0.9] (paired, same noise and class): excludes 0: lower" in note
    table.loc[1, "fid_delta_ci_high"] = 0.5
    assert "not clearly: Δ = -2 [-3.1, +0.5]" in samplers.one_step_note(table)


def _loop_row(teacher: str, batch: int, path: str, seconds: float, device: str = "cuda") -> dict:
    params = {"teacher": teacher, "batch": batch, "path": path, "steps": 50, "parameters": 1000}
    return {**ROW, "device": device, "cell": f"loop[{teacher}-{batch}-{path}]", "metric": "loop_seconds",
            "value": seconds, "params": params, "run_id": "r"}  # fmt: skip


def test_the_loop_table_has_one_line_per_teacher_and_batch_with_the_graphs_speed_up():
    rows = [
        _loop_row("standard", 64, "eager", 0.36),
        _loop_row("standard", 64, "captured", 0.24),
        _loop_row("smoke", 64, "forwards", 0.18),
        _loop_row("smoke", 64, "eager", 0.20),
        _loop_row("smoke", 64, "eager", 0.22),  # a repeated run: averaged
        _loop_row("smoke", 64, "captured", 0.05),
        _loop_row("smoke", 64, "diffusers", 0.21),
        _loop_row("smoke", 64, "eager", 3.0, device="cpu"),
    ]
    table = samplers.loop_table(rows_to_frame(rows))
    assert list(table[["device", "teacher"]].itertuples(index=False, name=None)) == [
        ("cpu", "smoke"),
        ("cuda", "smoke"),
        ("cuda", "standard"),
    ]
    assert list(table.columns[5:]) == ["forwards", "eager", "captured", "diffusers", "eager / captured",
                                       "diffusers / captured"]  # fmt: skip
    smoke = table.iloc[1]
    assert smoke["eager"] == pytest.approx(0.21) and smoke["eager / captured"] == pytest.approx(0.21 / 0.05)
    assert smoke["diffusers / captured"] == pytest.approx(0.21 / 0.05)
    assert np.isnan(table.iloc[2]["diffusers / captured"]) and np.isnan(table.iloc[0]["captured"])


def test_cpu_only_loop_timings_say_why_the_graph_column_is_missing(tmp_path):
    rows = [_loop_row("smoke", 64, p, s, device="cpu") for p, s in (("forwards", 2.9), ("eager", 3.0))]
    sections = samplers.sections(rows_to_frame(rows), tmp_path)
    assert [section.title for section in sections] == ["Sampling-loop overhead"]
    notes = [item.text for item in sections[0].items if hasattr(item, "text")]
    assert any("need a CUDA device" in note for note in notes)
    assert any("No diffusers timings" in note for note in notes)

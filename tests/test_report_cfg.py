"""The cfg report on hand-made rows: every figure with its data, the quality table and the teacher's note, graceful
skips, per-run sections, and the pure functions behind them (heatmap pivot, combined score, radar lines, pairing of
guided with unguided arrays, divergence vectors, the note's verdicts)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from diffbench.report import cfg, parts
from diffbench.report.build import build_report
from diffbench.report.figures import heatmap_panels
from diffbench.report.sections import rows_to_frame
from diffbench.results import ARRAYS_DIR

MODELS = ("distill-s0.2", "teacher", "data-s0.5")  # recorded out of report order on purpose
REPORT_ORDER = ["teacher", "data-s0.5", "distill-s0.2"]  # teacher, then by mode, then by size
SCALES = (0.0, 1.0, 2.0, 4.0)
STEPS, BATCH, K, R, IMAGE = 5, 4, cfg.NUM_CLASSES, 2, (1, 6, 6)
N, N_REAL = R * K, 50
OFFSET = np.array([0.1, -0.2, 0.05])  # guidance moves a trajectory by (w - 1) * OFFSET * step / STEPS
EXTRACTOR = "domain_0123abcd"
ROW = {"family": "cfg", "seed": 0, "device": "cpu", "profile": "smoke", "time": "2025-01-01T00:00:00+00:00"}
FIGURES = (
    "heatmap_metrics",
    "heatmap_combined",
    "radar_grid",
    "radar_composite",
    "pca_scales",
    "guided_vs_unguided",
    "divergence_field",
    "similarity_vs_scale",
    "divergence_over_steps",
    "teacher_student_vs_scale",
    "samples_teacher",
    "samples_data-s0.5",
    "samples_distill-s0.2",
    "quality_vs_scale",
)


def model_params(model: str, w: float) -> dict:
    mode, _, size = model.partition("-s")
    return {"model": model, "mode": mode, "size_factor": float(size) if size else 1.0, "band": "b", "w": w}


def similarity(model: str, w: float, j: int) -> float:
    """The j-th trajectory score of ``model`` at ``w``: 1 at w = 1, falling with |w - 1|, faster for small models."""
    size = model_params(model, w)["size_factor"]
    return 1 / (1 + (j + 1) * abs(w - 1) * (1.5 - size))


def accuracy(w: float) -> float:
    return 0.5 + 0.1 * w


def diversity(w: float) -> float:
    return 2.0 - 0.3 * w


def class_images() -> np.ndarray:
    """``[R * K, C, H, W]``: image i is flat grey at a level that encodes its class i mod K."""
    levels = (np.arange(N) % K) / K * 2 - 1
    return np.broadcast_to(levels[:, None, None, None], (N, *IMAGE)).astype(np.float32)


class CfgRun:
    """Rows as the cfg cells record them, arrays saved under the run dir."""

    def __init__(self, run_dir: Path, run_id: str = "run-a") -> None:
        self.run_dir, self.run_id, self.rows = run_dir, run_id, []

    def add(
        self,
        model: str,
        w: float,
        metric: str,
        value: float,
        artifact: str | None = None,
        context: dict | None = None,
        **extra,
    ) -> None:
        self.rows.append(
            ROW
            | {"cell": f"benchmarks/bench_cfg.py::test_cell[{model}-w{w:g}]", "run_id": self.run_id}
            | {"params": {**model_params(model, w), **extra}, "metric": metric, "value": value}
            | ({"artifact": artifact} if artifact else {})
            | ({"context": context} if context else {})
        )

    def array(self, model: str, w: float, name: str, array: np.ndarray) -> str:
        rel = f"{ARRAYS_DIR}/{self.run_id}-{model}-w{w:g}-{name}.npy"
        (self.run_dir / ARRAYS_DIR).mkdir(parents=True, exist_ok=True)
        np.save(self.run_dir / rel, array)
        self.add(model, w, name, float(len(array)), artifact=rel)
        return rel

    def trajectories(self, rng: np.random.Generator) -> None:
        base = rng.standard_normal((STEPS + 1, BATCH, 3))
        ramp = np.linspace(0, 1, STEPS + 1)[:, None, None]
        for model in MODELS:
            unguided = base + 0.3 * model_params(model, 1.0)["size_factor"]
            for w in SCALES:
                for j, metric in enumerate(cfg.TRAJECTORY_METRICS):
                    self.add(model, w, metric, similarity(model, w, j), reference="unguided")
                    self.add(model, w, f"radar_{metric}", similarity(model, w, j), reference="unguided")
                    if model != "teacher":
                        self.add(model, w, metric, similarity(model, w, j) / 2, reference="teacher")
                for step in range(STEPS + 1):
                    self.add(model, w, "stepwise_distance", abs(w - 1) * step, reference="unguided", step=step)
                self.array(model, w, "trajectory_pca", unguided + (w - 1) * OFFSET * ramp)
                self.array(model, w, "unguided_pca", unguided)

    def quality(self, models: tuple[str, ...] = MODELS, infinity: bool = False) -> None:
        """Quality rows; ``infinity``: also FID-infinity (FID - 5, interval ± 2, residual 0.1) and the extractor
        as context, as rows record them since FID-infinity (without: rows from before it)."""
        for model in models:
            for w in SCALES:
                fid = 30 - 2 * w
                metrics = {"class_accuracy": accuracy(w), "class_diversity": diversity(w), "fid": fid}
                metrics |= {"fid_ci_low": fid - 1, "fid_ci_high": fid + 1, "kid": 0.01, "kid_std": 0.001}
                if infinity:
                    metrics |= {"fid_infinity": fid - 5, "fid_infinity_ci_low": fid - 7}
                    metrics |= {"fid_infinity_ci_high": fid - 3, "fid_infinity_residual": 0.1}
                context = {"extractor": EXTRACTOR} if infinity else None
                for metric, value in metrics.items():
                    self.add(model, w, metric, value, context=context, n=N, n_real=N_REAL)
                self.array(model, w, "samples", class_images())

    def write(self) -> list[dict]:
        (self.run_dir / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in self.rows))
        return self.rows


def report(run_dir: Path, rows: list[dict]) -> str:
    return build_report(run_dir, rows=rows, failures=[], sections={"cfg": cfg.sections}).read_text()


def figure_data(run_dir: Path, name: str) -> pd.DataFrame:
    return pd.read_csv(run_dir / "figures" / f"cfg_{name}.csv")


# --- the whole report -------------------------------------------------------------------------------------


def test_full_run_writes_every_figure_its_data_the_table_and_the_note(tmp_path):
    run = CfgRun(tmp_path)
    run.trajectories(np.random.default_rng(0))
    run.quality()
    md = report(tmp_path, run.write())
    assert "could not be built" not in md and "skipped" not in md
    for name in FIGURES:
        assert (tmp_path / "figures" / f"cfg_{name}.png").stat().st_size > 5_000, name
        assert len(figure_data(tmp_path, name)) > 0, name
        assert f"](figures/cfg_{name}.png)" in md, name

    heat = figure_data(tmp_path, "heatmap_metrics").set_index(["model", "w", "metric"])["value"]
    assert heat["distill-s0.2", 4.0, "path_length_similarity"] == pytest.approx(similarity("distill-s0.2", 4.0, 0))
    assert heat["teacher", 2.0, "radar_wasserstein_endpoint"] == pytest.approx(similarity("teacher", 2.0, 6))
    combined = figure_data(tmp_path, "heatmap_combined").query("metric == 'combined'").set_index(["model", "w"])
    parts = [similarity("data-s0.5", 2.0, j) for j in (0, 1, 2, 6)]  # the four radar_* parts, by metric index
    assert combined.loc[("data-s0.5", 2.0), "value"] == pytest.approx(np.mean(parts))

    radar = figure_data(tmp_path, "radar_grid")
    assert list(radar["model"].drop_duplicates()) == REPORT_ORDER and 1.0 not in set(radar["w"])
    assert len(radar) == len(MODELS) * (len(SCALES) - 1)
    pca = figure_data(tmp_path, "pca_scales")
    assert len(pca) == len(MODELS) * len(SCALES) * cfg.PCA_SAMPLES * (STEPS + 1)
    pairs = figure_data(tmp_path, "guided_vs_unguided")
    assert set(pairs["model"]) == {"teacher", "distill-s0.2"}  # the teacher and the smallest student
    assert set(pairs["kind"]) == {"guided", "unguided"}
    field = figure_data(tmp_path, "divergence_field").query("step == @STEPS")
    assert 1.0 not in set(field["w"])
    assert np.allclose(field["d_pc1"], (field["w"] - 1) * OFFSET[0])
    assert np.allclose(field["d_pc2"], (field["w"] - 1) * OFFSET[1])
    students = figure_data(tmp_path, "teacher_student_vs_scale")
    assert set(students["model"]) == {"data-s0.5", "distill-s0.2"}

    images = figure_data(tmp_path, "samples_teacher")
    assert sorted(images["w"].unique()) == list(SCALES) and len(images) == len(SCALES) * K
    assert np.allclose(images["mean"], images["image"] / K * 2 - 1)  # column c is the image of class c

    table = pd.read_csv(tmp_path / "tables/cfg_quality.csv")
    assert table["model"].drop_duplicates().tolist() == REPORT_ORDER
    assert table["w"].tolist()[: len(SCALES)] == list(SCALES) and (table["n"] == N).all()
    assert table.loc[0, "fid [ci]"] == "30 [29, 31]"
    # Rows from before FID-infinity: its column and the extractor are there, blank.
    assert table["fid_inf [ci]"].isna().all() and table["extractor"].isna().all()
    assert cfg.FID_CAPTION in md  # what each interval estimates, under the quality table
    assert "Teacher class accuracy: 0.5 at w=0, 0.6 at w=1, 0.9 at w=4." in md
    assert "it falls at every step as w rises" in md and "The data agrees" in md


def test_quality_only_run_skips_trajectory_figures_with_notes(tmp_path):
    run = CfgRun(tmp_path)
    run.quality(models=("teacher",))
    md = report(tmp_path, run.write())
    assert "could not be built" not in md
    for note in (
        "heatmaps skipped",
        "combined heatmap skipped",
        "radar charts skipped",
        "trajectory plots skipped",
        "pair plots skipped",
        "field skipped",
        "divergence-over-time plot skipped",
        "teacher-student plot skipped",
    ):
        assert note in md, note
    assert not list((tmp_path / "figures").glob("cfg_heatmap*"))
    assert (tmp_path / "figures/cfg_quality_vs_scale.png").is_file()
    assert (tmp_path / "figures/cfg_samples_teacher.png").is_file()


def test_missing_and_misshapen_arrays_are_noted_and_the_rest_drawn(tmp_path):
    run = CfgRun(tmp_path)
    run.trajectories(np.random.default_rng(1))
    gone = f"{ARRAYS_DIR}/run-a-teacher-w2-trajectory_pca.npy"
    (tmp_path / gone).unlink()
    flat = run.array("data-s0.5", 2.0, "samples", np.zeros((3, 4)))  # not [B, C, H, W]
    md = report(tmp_path, run.write())
    assert gone in md and f"{flat}: shape (3, 4)" in md
    pca = figure_data(tmp_path, "pca_scales")
    assert ("teacher", 2.0) not in set(zip(pca["model"], pca["w"], strict=True))
    assert ("teacher", 4.0) in set(zip(pca["model"], pca["w"], strict=True))


def test_rows_from_two_runs_get_a_section_set_each(tmp_path):
    runs = [CfgRun(tmp_path, run_id) for run_id in ("run-a", "run-b")]
    for run in runs:
        run.quality(models=("teacher",))
    md = report(tmp_path, runs[0].rows + runs[1].rows)
    for run_id in ("run-a", "run-b"):
        assert f"### Sample quality ({run_id})" in md
        assert (tmp_path / f"figures/cfg_quality_vs_scale_{run_id}.png").is_file()
        assert len(pd.read_csv(tmp_path / f"tables/cfg_quality_{run_id}.csv")) == len(SCALES)


# --- the pure functions -----------------------------------------------------------------------------------


def rows_of(run: CfgRun) -> pd.DataFrame:
    return cfg.cfg_rows(rows_to_frame(run.rows))


def test_heatmap_table_pivots_models_by_ascending_scales(tmp_path):
    run = CfgRun(tmp_path)
    for w in (4.0, 0.0, 1.0):
        for model in MODELS:
            run.add(model, w, "path_length_similarity", similarity(model, w, 0), reference="unguided")
            if model != "teacher":
                run.add(model, w, "path_length_similarity", -1.0, reference="teacher")  # another reference
    table = cfg.heatmap_table(rows_of(run), "path_length_similarity")
    assert table.index.tolist() == REPORT_ORDER and table.columns.tolist() == [0.0, 1.0, 4.0]
    for model in MODELS:
        for w in (0.0, 1.0, 4.0):
            assert table.loc[model, w] == pytest.approx(similarity(model, w, 0))
    assert cfg.heatmap_table(rows_of(run), "trajectory_mse").empty


def test_combined_score_is_the_mean_of_the_four_parts_and_missing_without_one(tmp_path):
    run = CfgRun(tmp_path)
    for part, value in zip(cfg.COMBINED_PARTS, (0.2, 0.4, 0.6, 1.0), strict=True):
        run.add("teacher", 2.0, part, value, reference="unguided")
        run.add("teacher", 3.0, part, value, reference="teacher")  # not against unguided: not a part
    for part in cfg.COMBINED_PARTS[:3]:
        run.add("teacher", 4.0, part, 0.5, reference="unguided")
    scores = cfg.combined_scores(rows_of(run)).set_index("w")["value"]
    assert scores[2.0] == pytest.approx(0.55)
    assert np.isnan(scores[4.0]) and 3.0 not in scores


def test_radar_frame_has_one_line_per_guided_scale_without_w_1(tmp_path):
    run = CfgRun(tmp_path)
    for model in MODELS:
        for w in SCALES:
            for j, metric in enumerate(cfg.TRAJECTORY_METRICS[:3]):
                run.add(model, w, f"radar_{metric}", similarity(model, w, j), reference="unguided")
    radar = cfg.radar_frame(rows_of(run))
    assert radar["model"].drop_duplicates().tolist() == REPORT_ORDER
    assert radar["w"].tolist()[:3] == [0.0, 2.0, 4.0]
    assert list(radar.columns[4:]) == list(cfg.TRAJECTORY_METRICS[:3])  # names without the radar_ prefix


def test_guided_arrays_pair_with_the_same_models_unguided_array(tmp_path):
    run = CfgRun(tmp_path)
    for model in MODELS:
        run.add(model, 2.0, "trajectory_pca", 1, artifact=f"{model}-2-guided.npy")
    run.add("teacher", 2.0, "unguided_pca", 1, artifact="teacher-2-unguided.npy")  # same scale
    run.add("teacher", 4.0, "unguided_pca", 1, artifact="teacher-4-unguided.npy")
    run.add("data-s0.5", 4.0, "unguided_pca", 1, artifact="data-4-unguided.npy")  # another scale only
    run.add("distill-s0.2", 1.0, "trajectory_pca", 1, artifact="distill-1-guided.npy")  # w = 1 is unguided
    pairs = cfg.paired_artifacts(rows_of(run)).set_index(["model", "w"])["unguided"]
    assert pairs["teacher", 2.0] == "teacher-2-unguided.npy"
    assert pairs["data-s0.5", 2.0] == "data-4-unguided.npy"
    assert pairs["distill-s0.2", 2.0] == "distill-1-guided.npy"
    assert pairs.index.get_level_values("model").tolist() == ["teacher", "data-s0.5", "distill-s0.2", "distill-s0.2"]
    run.rows = [r for r in run.rows if r["params"]["model"] != "distill-s0.2" or r["params"]["w"] == 2.0]
    assert pd.isna(cfg.paired_artifacts(rows_of(run)).set_index("model").loc["distill-s0.2", "unguided"])


def test_smallest_student_prefers_distilled_on_a_tie():
    models = pd.DataFrame(
        [model_params(m, 1.0) for m in ("teacher", "data-s0.1", "distill-s0.1", "distill-s0.05", "data-s0.5")]
    )
    assert cfg.smallest_student(models) == "distill-s0.05"
    assert cfg.smallest_student(models[models["model"] != "distill-s0.05"]) == "distill-s0.1"
    assert cfg.smallest_student(models[models["model"] == "teacher"]) is None


def test_divergence_frame_holds_the_displacement_from_unguided_to_guided():
    rng = np.random.default_rng(2)
    unguided = rng.standard_normal((STEPS + 1, 2, 3))
    shift = rng.standard_normal((STEPS + 1, 2, 3))
    frame = cfg.divergence_frame(unguided + shift, unguided, model="m", w=2.0)
    assert len(frame) == (STEPS + 1) * 2 and (frame["model"] == "m").all()
    for line in frame.itertuples():
        assert line.pc1 == unguided[line.step, line.sample, 0]
        assert line.d_pc1 == pytest.approx(shift[line.step, line.sample, 0])
        assert line.d_pc2 == pytest.approx(shift[line.step, line.sample, 1])


def quality(accuracies: list[float], diversities: list[float], scales=(0.0, 1.0, 3.0)) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "model": "teacher",
            "mode": "teacher",
            "w": scales,
            "class_accuracy": accuracies,
            "class_diversity": diversities,
            "fid": np.nan,
        }
    )


@pytest.mark.parametrize(
    ("accuracies", "diversities", "expected"),
    [
        ([0.3, 0.5, 0.9], [2.0, 1.5, 1.0], ("0.3 at w=0, 0.5 at w=1, 0.9 at w=3", "falls at every step", "agrees:")),
        ([0.3, 0.5, 0.9], [1.0, 2.0, 0.5], ("lower at the highest w than at the lowest", "agrees:")),
        ([0.3, 0.5, 0.9], [1.0, 1.0, 1.5], ("does not fall", "agrees only in part", "diversity not lower")),
        ([0.9, 0.5, 0.4], [1.0, 1.1, 1.5], ("does not agree",)),
    ],
)
def test_teacher_quality_note_states_the_numbers_and_a_verdict(accuracies, diversities, expected):
    note = cfg.teacher_quality_note(quality(accuracies, diversities))
    for text in expected:
        assert text in note


def test_teacher_quality_note_without_rows_says_so():
    assert "No class_accuracy rows" in cfg.teacher_quality_note(quality([np.nan] * 3, [1.0] * 3))
    note = cfg.teacher_quality_note(quality([0.4, 0.8], [np.nan, np.nan], scales=(2.0, 5.0)))
    assert "0.4 at w=2, 0.8 at w=5" in note and "diversity cannot be judged" in note  # no w = 1: lowest vs highest


def test_quality_table_carries_fid_infinity_and_the_extractor(tmp_path):
    run = CfgRun(tmp_path)
    run.quality(models=("teacher",), infinity=True)
    table = cfg.quality_table(rows_of(run)).set_index("w")
    columns = table.columns.tolist()
    assert columns[columns.index("fid [ci]") + 1] == "fid_inf [ci]"
    for w in SCALES:
        fid = 30 - 2 * w
        assert table.loc[w, "fid_inf [ci]"] == parts.interval_text(fid - 5, fid - 7, fid - 3)
        assert table.loc[w, "fid_infinity_residual"] == 0.1
    assert table.loc[4.0, "fid_inf [ci]"] == "17 [15, 19]"
    assert (table["extractor"] == EXTRACTOR).all() and (table["n"] == N).all() and (table["n_real"] == N_REAL).all()


def test_fid_interval_text():
    table = pd.DataFrame({"fid": [12.25, np.nan, 3.0], "fid_ci_low": [11.5, 1.0, np.nan], "fid_ci_high": [13.0, 2, 4]})
    out = parts.with_fid_interval(table)
    assert list(out.columns) == ["fid", "fid [ci]", "fid_ci_low", "fid_ci_high"]
    assert out["fid [ci]"].tolist() == ["12.25 [11.5, 13]", "", "3"]

    table = table.assign(fid_infinity=[10.5, 1.0, np.nan], fid_infinity_ci_low=[9.0, np.nan, 1.0])
    table = table.assign(fid_infinity_ci_high=[12.0, 2.0, 2.0])
    out = parts.with_fid_interval(table)
    assert out.columns.tolist()[:3] == ["fid", "fid [ci]", "fid_inf [ci]"]
    assert out["fid_inf [ci]"].tolist() == ["10.5 [9, 12]", "1", ""]  # an end missing: the value alone


def test_interval_text_signs_a_difference():
    assert parts.interval_text(1.5, 0.25, 2.75, signed=True) == "+1.5 [+0.25, +2.75]"
    assert parts.interval_text(-1.5, -3.0, 0.0, signed=True) == "-1.5 [-3, 0]"
    assert parts.interval_text(np.nan, 1.0, 2.0, signed=True) == ""


@pytest.mark.parametrize(
    ("delta", "low", "high", "verdict"),
    [
        (2.0, 1.0, 3.0, parts.DELTA_HIGHER),  # the whole interval above 0: the model's FID is higher
        (-2.0, -3.0, -1.0, parts.DELTA_LOWER),
        (0.5, -1.0, 2.0, parts.DELTA_TIED),
        (1.0, 0.0, 2.0, parts.DELTA_TIED),  # a closed interval touching 0 includes it
        (-1.0, -2.0, 0.0, parts.DELTA_TIED),
        (1.0, np.nan, 2.0, parts.DELTA_UNJUDGED),
        (np.nan, 1.0, 2.0, parts.DELTA_NOT_MEASURED),
    ],
)
def test_delta_verdict_is_whether_the_interval_excludes_zero(delta, low, high, verdict):
    assert parts.delta_verdict(delta, low, high) == verdict
    line = pd.Series({"fid_delta": delta, "fid_delta_ci_low": low, "fid_delta_ci_high": high})
    assert parts.paired_delta(line) == (parts.interval_text(delta, low, high, signed=True), verdict)
    assert parts.paired_delta({}) == ("", parts.DELTA_NOT_MEASURED)  # old rows: no fid_delta at all


def test_wide_metrics_carries_the_first_extractor_per_key(tmp_path):
    run = CfgRun(tmp_path)
    run.add("teacher", 1.0, "fid", 10.0, n=N, n_real=N_REAL)  # recorded without context first
    run.add("teacher", 1.0, "kid", 0.01, context={"extractor": "domain_a"}, n=N, n_real=N_REAL)
    run.add("teacher", 1.0, "fid_ci_low", 9.0, context={"extractor": "domain_b"}, n=N, n_real=N_REAL)
    run.add("teacher", 2.0, "fid", 8.0, n=N, n_real=N_REAL)
    wide = parts.wide_metrics(rows_of(run), ["w"], ("fid", "kid")).set_index("w")
    assert wide.loc[1.0, "extractor"] == "domain_a"  # the first recorded value among the chosen metrics' rows
    assert pd.isna(wide.loc[2.0, "extractor"])
    assert wide.columns.tolist() == ["n", "n_real", "extractor", "fid", "kid"]


def test_heatmap_panels_write_every_finite_value_in_its_cell():
    table = pd.DataFrame([[0.5, np.nan], [0.25, 1.0]], index=["a", "b"], columns=[1.0, 2.5])
    fig = heatmap_panels({"x": table})
    ax = fig.axes[0]
    assert sorted(t.get_text() for t in ax.texts) == ["0.25", "0.5", "1"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1", "2.5"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["a", "b"]

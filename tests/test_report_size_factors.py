"""The size_factors report on hand-made rows: every figure with its data, the efficiency table, the distillation
note, graceful skips, and the pure functions behind them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from diffbench.report.build import build_report
from diffbench.report.figures import spaced_ticks, tile_images
from diffbench.report.parts import DELTA_HIGHER, DELTA_LOWER, DELTA_NOT_MEASURED, DELTA_TIED
from diffbench.report.sections import rows_to_frame
from diffbench.report.size_factors import (
    distillation_note,
    efficiency_table,
    explained_variance_frame,
    fid_measured_with,
    is_cumulative,
    model_rows,
    ordered_models,
    paired_note,
    paired_table,
    scalar_table,
    timing_by_size,
)
from diffbench.results import ARRAYS_DIR, RESULTS_FILE

SIZES = (0.1, 0.5, 1.0)
MODES = ("data", "distill")
STEPS, BATCH, IMAGE = 6, 4, (1, 8, 8)
TEACHER_PARAMS = 4_000_000
TIMING = "sampling_seconds_per_image"
# trajectory_mse per student, chosen so the distillation note has a known answer for each mode:
TRAJECTORY_MSE = {
    "data-s0.1": 0.5,
    "data-s0.5": 0.2,
    "data-s1": 0.1,
    "distill-s0.1": 0.3,
    "distill-s0.5": 0.05,
    "distill-s1": 0.01,
}
TRAJECTORY_METRICS = ("path_length_similarity", "directional_consistency", "endpoint_distance", "endpoint_wasserstein")
FIGURES = (
    "metrics_vs_size",
    "radar_grid",
    "radar_composite",
    "pca_2d",
    "pca_3d",
    "samples",
    "stepwise",
    "eps_mse",
    "explained_variance",
)
MODELS = ["teacher", *(f"{mode}-s{size:g}" for mode in MODES for size in SIZES)]


def model_params(model: str) -> dict:
    mode, _, size = model.partition("-s")
    size = float(size) if size else 1.0
    band = "tiny" if size < 0.1 else "small" if size < 0.3 else "medium" if size < 0.7 else "full"
    return {"model": model, "mode": mode, "size_factor": size, "band": band}


class Rows:
    """Rows as the benchmark records them, arrays saved under the run dir."""

    def __init__(self, run_dir: Path, run_id: str = "run-a") -> None:
        self.run_dir, self.run_id, self.rows = run_dir, run_id, []

    def add(
        self,
        test: str,
        model: str,
        metric: str,
        value: float,
        artifact: str | None = None,
        context: dict | None = None,
        **extra,
    ) -> None:
        """A model row: ``model, mode, size_factor, band`` from the model id, plus ``extra`` (t, step, k)."""
        self.append(test, model, {**model_params(model), **extra}, metric, value, artifact, context)

    def timing(self, size: float, seconds: float) -> None:
        """A timing row: ``model`` is ``teacher`` or ``s<size>``, and there is no mode."""
        model = "teacher" if size == 1.0 else f"s{size:g}"
        self.append("test_sampling_latency", model, {"model": model, "size_factor": size, "params": 1}, TIMING, seconds)

    def append(
        self,
        test: str,
        cell_id: str,
        params: dict,
        metric: str,
        value: float,
        artifact: str | None = None,
        context: dict | None = None,
    ):
        row = {
            "family": "size_factors",
            "cell": f"benchmarks/bench_size_factors.py::{test}[{cell_id}]",
            "params": params,
            "metric": metric,
            "value": value,
            "seed": 0,
            "device": "cpu",
            "profile": "smoke",
            "run_id": self.run_id,
            "versions": {"diffbench": "0.1.0"},
            "time": "2025-01-01T00:00:00+00:00",
        }
        if artifact is not None:
            row["artifact"] = artifact
        if context is not None:
            row["context"] = context
        self.rows.append(row)

    def array(self, test: str, model: str, name: str, array: np.ndarray) -> None:
        rel = f"{ARRAYS_DIR}/{self.run_id}-{model}-{name}.npy"
        (self.run_dir / ARRAYS_DIR).mkdir(parents=True, exist_ok=True)
        np.save(self.run_dir / rel, array)
        self.add(test, model, name, float(len(array)), artifact=rel)

    def write(self) -> list[dict]:
        (self.run_dir / RESULTS_FILE).write_text("".join(json.dumps(r) + "\n" for r in self.rows))
        return self.rows


def n_params(model: str) -> int:
    return int(TEACHER_PARAMS * model_params(model)["size_factor"] ** 2)


def noise_rows(rows: Rows) -> None:
    for i, model in enumerate(MODELS):
        errors = [(0.5 + 0.1 * i) * np.exp(-t / 300) for t in range(0, 1000, 100)]
        for t, error in zip(range(0, 1000, 100), errors, strict=True):
            rows.add("test_noise_prediction", model, "eps_mse", error, t=t)
        rows.add("test_noise_prediction", model, "eps_mse_mean", float(np.mean(errors)))
        rows.add("test_noise_prediction", model, "params", n_params(model))


def trajectory_rows(rows: Rows, rng: np.random.Generator) -> None:
    noise = rng.standard_normal((BATCH, 3))
    path = np.linspace(1, 0, STEPS + 1)[:, None, None] * noise + rng.standard_normal((STEPS + 1, BATCH, 3)) * 0.1
    samples = rng.uniform(-1, 1, (BATCH, *IMAGE))
    for k in range(1, 11):
        rows.add("test_teacher_reference", "teacher", "explained_variance", 1 - 0.5**k, k=k)  # cumulative
    rows.add("test_teacher_reference", "teacher", "params", TEACHER_PARAMS)
    rows.array("test_teacher_reference", "teacher", "trajectory_pca", path)
    rows.array("test_teacher_reference", "teacher", "samples", samples)
    for model in MODELS[1:]:
        size = model_params(model)["size_factor"]
        rows.add("test_trajectories", model, "trajectory_mse", TRAJECTORY_MSE[model])
        for j, metric in enumerate(TRAJECTORY_METRICS):
            rows.add("test_trajectories", model, metric, size * (j + 1))
            rows.add("test_trajectories", model, f"radar_{metric}", size / (j + 1))
        rows.add("test_trajectories", model, "radar_trajectory_mse", size)
        for metric in ("stepwise_cosine", "stepwise_distance", "stepwise_wasserstein"):
            for step in range(STEPS + 1):
                rows.add("test_trajectories", model, metric, size * step / STEPS, step=step)
        for k in range(1, 11):
            rows.add("test_trajectories", model, "explained_variance", 1 - (0.4 + 0.2 * size) ** k, k=k)
        rows.add("test_trajectories", model, "params", n_params(model))
        rows.add("test_trajectories", model, "param_ratio", n_params(model) / TEACHER_PARAMS)
        drift = (1 - size) * np.linspace(0, 1, STEPS + 1)[:, None, None]
        rows.array("test_trajectories", model, "trajectory_pca", path + drift)
        rows.array("test_trajectories", model, "samples", np.clip(samples + (1 - size), -1, 1))


# FID per model (interval ± 1) and the paired difference student - teacher (delta, low, high), chosen so each verdict
# has a known answer; data-s0.5 was measured before paired differences were recorded (no fid_delta rows).
FIDS = {"teacher": 20.0, "data-s0.1": 25.0, "data-s0.5": 22.0, "distill-s0.1": 19.5, "distill-s1": 16.0}
DELTAS = {
    "data-s0.1": (5.0, 3.0, 7.0),  # excludes 0 above: a higher FID than the teacher
    "distill-s0.1": (-0.5, -2.0, 1.0),  # includes 0
    "distill-s1": (-4.0, -6.0, -2.0),  # excludes 0 below: a lower FID
}
VERDICTS = {"data-s0.1": DELTA_HIGHER, "data-s0.5": DELTA_NOT_MEASURED, "distill-s0.1": DELTA_TIED}
VERDICTS |= {"distill-s1": DELTA_LOWER}
EVAL_N, EVAL_N_REAL, EXTRACTOR = 200, 1000, "domain_5eed"
DELTA_METRICS = ("fid_delta", "fid_delta_ci_low", "fid_delta_ci_high")


def quality_rows(rows: Rows, deltas: dict = DELTAS, infinity: bool = True) -> None:
    """Quality cells as recorded since FID-infinity and paired differences (``infinity``: FID-infinity = FID - 3,
    interval ± 2; the extractor as context), or as before them (neither, no context)."""
    context = {"extractor": EXTRACTOR} if infinity else None
    sizes = {"n": EVAL_N, "n_real": EVAL_N_REAL}
    for model, fid in FIDS.items():
        metrics = {"fid": fid, "fid_ci_low": fid - 1, "fid_ci_high": fid + 1, "kid": fid / 1000}
        if infinity:
            metrics |= {"fid_infinity": fid - 3, "fid_infinity_ci_low": fid - 5, "fid_infinity_ci_high": fid - 1}
        for metric, value in metrics.items():
            rows.add("test_sample_quality", model, metric, value, context=context, **sizes)
        if model in deltas:
            for metric, value in zip(DELTA_METRICS, deltas[model], strict=True):
                rows.add("test_sample_quality", model, metric, value, context=context, reference="teacher", **sizes)


def make_run(run_dir: Path, seed: int = 0) -> list[dict]:
    rows = Rows(run_dir)
    noise_rows(rows)
    trajectory_rows(rows, np.random.default_rng(seed))
    return rows.write()


def figure_files(run_dir: Path) -> dict[str, tuple[Path, Path]]:
    return {
        name: (run_dir / "figures" / f"size_factors_{name}.png", run_dir / "figures" / f"size_factors_{name}.csv")
        for name in FIGURES
    }


# --- the whole report -------------------------------------------------------------------------------------


def test_full_run_writes_every_figure_table_and_note(tmp_path):
    make_run(tmp_path)
    md = build_report(tmp_path).read_text()
    assert "could not be built" not in md
    for name, (png, csv) in figure_files(tmp_path).items():
        assert png.stat().st_size > 5_000, name
        assert len(pd.read_csv(csv)) > 0, name
        assert f"](figures/size_factors_{name}.png)" in md

    table = pd.read_csv(tmp_path / "tables/size_factors_efficiency.csv")
    assert table["model"].tolist() == MODELS  # one line per model, teacher first, then by mode and size
    line = table.set_index("model").loc["distill-s0.5"]
    assert line["param_ratio"] == pytest.approx(0.25) and line["trajectory_mse"] == 0.05
    assert table.set_index("model").loc["teacher", "param_ratio"] == 1.0  # filled in from params
    assert "fid" not in table and "sampling_seconds_per_image" not in table  # not measured in this run

    assert "Yes: the distilled size-1.0 student's trajectory_mse (0.01) is lower" in md
    assert "distill-s0.1 (0.3)" in md and "data-s0.1 (0.5)" in md

    radar = pd.read_csv(tmp_path / "figures/size_factors_radar_grid.csv")
    assert len(radar) == 6 and "trajectory_mse" in radar
    pca = pd.read_csv(tmp_path / "figures/size_factors_pca_2d.csv")
    assert set(pca["model"]) == set(MODELS) and set(pca["sample"]) == {0, 1, 2}  # the first 3 samples
    assert len(pca) == len(MODELS) * 3 * (STEPS + 1)


def test_noise_prediction_only_run_skips_figures_with_notes(tmp_path):
    rows = Rows(tmp_path)
    noise_rows(rows)
    rows.write()
    md = build_report(tmp_path).read_text()
    assert "could not be built" not in md
    files = figure_files(tmp_path)
    assert files["eps_mse"][0].is_file() and files["metrics_vs_size"][0].is_file()
    for name in ("radar_grid", "pca_2d", "samples", "stepwise", "explained_variance"):
        assert not files[name][0].exists(), name
    for note in ("radar charts skipped", "trajectory plots skipped", "sample grid skipped", "No stepwise_* rows"):
        assert note in md
    assert "No trajectory_mse rows" in md
    assert len(pd.read_csv(tmp_path / "tables/size_factors_efficiency.csv")) == len(MODELS)


def test_missing_array_is_noted_and_later_rows_join(tmp_path):
    rows = [r for r in make_run(tmp_path) if r["metric"] != "trajectory_pca"]  # fewer figures: a faster test
    (tmp_path / ARRAYS_DIR / "run-a-data-s0.5-samples.npy").unlink()
    later = Rows(tmp_path)
    for model in MODELS:
        later.add("test_sample_quality", model, "fid", 10.0 * model_params(model)["size_factor"] ** -1)
    for size in SIZES:
        later.timing(size, 0.01 * size)
    build_report(tmp_path, rows=rows + later.rows)
    md = (tmp_path / "report.md").read_text()
    assert "run-a-data-s0.5-samples.npy" in md and (tmp_path / "figures/size_factors_samples.png").is_file()
    assert "trajectory plots skipped" in md and not (tmp_path / "figures/size_factors_pca_2d.png").exists()
    table = pd.read_csv(tmp_path / "tables/size_factors_efficiency.csv").set_index("model")
    assert table.loc["data-s0.1", "sampling_seconds_per_image"] == pytest.approx(0.001)
    assert table.loc["distill-s1", "sampling_seconds_per_image"] == pytest.approx(0.01)
    # 1 / (fid * params / 1e6): fid 100, params 4e4 -> 1 / 4
    assert table.loc["distill-s0.1", "quality_per_mparam"] == pytest.approx(0.25)
    assert "fid" in pd.read_csv(tmp_path / "figures/size_factors_metrics_vs_size.csv")["metric"].tolist()


def test_paired_comparisons_with_the_teacher_in_the_report(tmp_path):
    rows = Rows(tmp_path)
    noise_rows(rows)
    quality_rows(rows)
    md = build_report(tmp_path, rows=rows.write()).read_text()
    assert "could not be built" not in md and "### Paired comparisons with the teacher" in md
    paired = pd.read_csv(tmp_path / "tables/size_factors_paired.csv").set_index("model")
    assert paired.index.tolist() == ["data-s0.1", "data-s0.5", "distill-s0.1", "distill-s1"]  # students, in order
    assert paired["verdict"].to_dict() == VERDICTS
    assert paired.loc["data-s0.1", "fid_delta [ci]"] == "+5 [+3, +7]"
    assert paired.loc["distill-s1", "fid_delta [ci]"] == "-4 [-6, -2]"
    assert (paired["reference fid [ci]"] == "20 [19, 21]").all()  # the teacher's FID beside every student's
    assert paired.loc["distill-s0.1", "fid [ci]"] == "19.5 [18.5, 20.5]"
    assert (paired["n"] == EVAL_N).all() and (paired["extractor"] == EXTRACTOR).all()
    assert "Paired FID difference student - teacher" in md and "distill-s1: Δ -4 [-6, -2] (excludes 0: lower" in md

    efficiency = pd.read_csv(tmp_path / "tables/size_factors_efficiency.csv").set_index("model")
    assert efficiency.loc["teacher", "fid [ci]"] == "20 [19, 21]"
    assert efficiency.loc["teacher", "fid_inf [ci]"] == "17 [15, 19]"
    measured = efficiency.loc[list(FIDS)]
    assert (measured["n_real"] == EVAL_N_REAL).all() and (measured["extractor"] == EXTRACTOR).all()
    assert efficiency.loc["data-s1", ["fid [ci]", "n", "extractor"]].isna().all()  # no quality cell: blank
    columns = efficiency.columns.tolist()
    assert columns[columns.index("fid [ci]") + 1] == "fid_inf [ci]"


def test_rows_from_before_paired_differences_still_build(tmp_path):
    rows = Rows(tmp_path)
    noise_rows(rows)
    quality_rows(rows, deltas={}, infinity=False)
    md = build_report(tmp_path, rows=rows.write()).read_text()
    assert "could not be built" not in md and "No fid_delta rows" in md
    assert not (tmp_path / "tables/size_factors_paired.csv").exists()
    efficiency = pd.read_csv(tmp_path / "tables/size_factors_efficiency.csv").set_index("model")
    assert efficiency["fid_inf [ci]"].isna().all() and efficiency["extractor"].isna().all()  # blank, not absent
    measured = efficiency.loc[list(FIDS)]
    assert measured["fid [ci]"].notna().all() and (measured["n"] == EVAL_N).all()


def test_paired_table_and_note_judge_by_the_paired_interval(tmp_path):
    rows = Rows(tmp_path)
    quality_rows(rows)
    frame = _frame(rows.rows)
    paired = paired_table(frame)
    assert dict(zip(paired["model"], paired["verdict"], strict=True)) == VERDICTS
    assert paired.set_index("model").loc["data-s0.5", "fid_delta [ci]"] == ""
    note = paired_note(paired)
    assert "of 3 student(s), 1 with a lower FID than the teacher" in note
    assert "1 with a higher one (excludes 0 above), 1 not distinguishable at this n" in note
    assert "distill-s0.1: Δ -0.5 [-2, +1] (includes 0: not distinguishable at this n; FID 19.5 [18.5, 20.5]" in note
    assert "Not measured (no fid_delta rows): data-s0.5." in note
    assert f"n = {EVAL_N} generated / {EVAL_N_REAL} real" in note
    measured = fid_measured_with(frame).set_index("model")
    assert (measured["n"] == EVAL_N).all() and set(measured.index) == set(FIDS)

    assert paired_table(_frame([r for r in rows.rows if r["params"]["model"] == "teacher"])).empty
    assert "no student can be compared" in paired_note(paired_table(_frame(rows.rows[:1])))


def test_rows_from_two_runs_get_a_section_set_each(tmp_path):
    runs = [Rows(tmp_path, run_id) for run_id in ("run-a", "run-b")]
    for rows in runs:
        noise_rows(rows)
    md = build_report(tmp_path, rows=runs[0].rows + runs[1].rows).read_text()
    for run_id in ("run-a", "run-b"):
        assert f"### Noise prediction ({run_id})" in md
        assert (tmp_path / f"figures/size_factors_eps_mse_{run_id}.png").is_file()
        assert len(pd.read_csv(tmp_path / f"tables/size_factors_efficiency_{run_id}.csv")) == len(MODELS)


# --- the pure functions -----------------------------------------------------------------------------------


def _frame(rows: list[dict]) -> pd.DataFrame:
    return model_rows(rows_to_frame(rows))


def test_models_are_ordered_teacher_then_mode_then_size(tmp_path):
    rows = Rows(tmp_path)
    for model in ["distill-s0.5", "data-s1", "teacher", "data-s0.1", "distill-s0.1"]:
        rows.add("test_noise_prediction", model, "params", n_params(model))
    assert ordered_models(_frame(rows.rows))["model"].tolist() == [
        "teacher",
        "data-s0.1",
        "data-s1",
        "distill-s0.1",
        "distill-s0.5",
    ]


@pytest.mark.parametrize(
    ("curves", "expected"),
    [
        ({"a": [0.5, 0.75, 0.875]}, True),  # increasing: only a cumulative ratio can grow with k
        ({"a": [0.5, 0.25, 0.125]}, False),  # decreasing: per-component
        ({"a": [1.0, 1.0, 1.0]}, True),  # flat and summing above 1: cannot be per-component
        ({"a": [0.2, 0.2, 0.2]}, False),  # flat, isotropic per-component
        ({"a": [0.5, 0.5], "b": [0.4, 0.3]}, False),  # any decrease, across models
    ],
)
def test_is_cumulative_known_answers(curves, expected):
    frame = pd.DataFrame(
        [{"model": m, "k": k, "value": v} for m, values in curves.items() for k, v in enumerate(values, start=1)]
    )
    assert is_cumulative(frame) is expected


def test_explained_variance_forms_are_each_others_inverse(tmp_path):
    per_component = [0.5, 0.25, 0.125]
    for recorded in (per_component, np.cumsum(per_component).tolist()):
        rows = Rows(tmp_path)
        for k, value in enumerate(recorded, start=1):
            rows.add("test_teacher_reference", "teacher", "explained_variance", value, k=k)
        frame, _ = explained_variance_frame(_frame(rows.rows))
        curve = frame.set_index(["metric", "k"])["value"]
        assert curve["per_component"].tolist() == pytest.approx(per_component)
        assert curve["cumulative"].tolist() == pytest.approx([0.5, 0.75, 0.875])


def _table(mse: dict[str, float]) -> pd.DataFrame:
    lines = [{**model_params(m), "trajectory_mse": v} for m, v in mse.items()]
    return pd.DataFrame(lines)


def test_distillation_note_states_both_numbers():
    yes = distillation_note(_table({"distill-s0.2": 0.4, "distill-s1": 0.1}))
    assert yes.startswith("Yes") and "(0.1)" in yes and "distill-s0.2 (0.4)" in yes
    no = distillation_note(_table({"distill-s0.2": 0.05, "distill-s1": 0.1}))
    assert no.startswith("No:") and "not lower" in no and "(0.05)" in no
    assert "cannot be compared" in distillation_note(_table({"distill-s0.2": 0.05}))
    assert "no smaller student" in distillation_note(_table({"distill-s1": 0.05}))


def test_efficiency_table_fills_ratio_and_joins_timing_on_size(tmp_path):
    rows = Rows(tmp_path)
    for model in ("teacher", "data-s0.5", "distill-s0.5"):
        rows.add("test_noise_prediction", model, "params", n_params(model))
        rows.add("test_sample_quality", model, "fid", 20.0)
    rows.timing(0.5, 0.2)
    df = rows_to_frame(rows.rows)
    table = efficiency_table(scalar_table(model_rows(df)), timing_by_size(df)).set_index("model")
    assert table["param_ratio"].tolist() == pytest.approx([1.0, 0.25, 0.25])
    assert table.loc["data-s0.5", TIMING] == 0.2 == table.loc["distill-s0.5", TIMING]
    assert np.isnan(table.loc["teacher", TIMING])  # the teacher's size was not timed
    assert table.loc["teacher", "quality_per_mparam"] == pytest.approx(1 / (20 * 4))


def test_tile_images_maps_range_and_lays_out_side_by_side():
    grey = np.stack([np.full((1, 2, 3), -1.0), np.full((1, 2, 3), 1.0)])
    picture = tile_images(grey, pad=1)
    assert picture.shape == (2, 7)
    assert (picture[:, :3] == 0).all() and (picture[:, 3] == 1).all() and (picture[:, 4:] == 1).all()
    rgb = tile_images(np.full((3, 3, 4, 4), 2.0))  # out of range: clipped
    assert rgb.shape == (4, 14, 3) and rgb.max() == 1.0
    with pytest.raises(ValueError, match="C = 1 or 3"):
        tile_images(np.zeros((2, 2, 4, 4)))


def test_spaced_ticks_keep_ends_and_a_minimum_ratio():
    sizes = [0.01, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
    ticks = spaced_ticks(sizes)
    assert ticks == [0.01, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0]
    assert all(b >= 1.4 * a for a, b in zip(ticks, ticks[1:], strict=False))
    assert spaced_ticks([0.8, 0.9, 1.0]) == [0.8, 1.0]  # both ends, even when close
    assert spaced_ticks([0.5]) == [0.5] and spaced_ticks([]) == []


# --- issue 15's analyses: attention, denoising, embeddings, precision/recall, determinism -----------------------

from diffbench.report.size_factors import (  # noqa: E402
    attention_note,
    attention_skips,
    determinism_note,
    determinism_table,
    embedding_points,
    layer_series,
    precision_recall_note,
    precision_recall_table,
    trust_table,
)

ATTENTION_T = (999, 499, 99)
LAYERS = ("down.2.attn", "mid_attn")
# precision/recall per model: the smallest data student loses fidelity, the smallest distilled one diversity
PR = {"teacher": (0.8, 0.7), "data-s0.1": (0.6, 0.7), "distill-s0.1": (0.8, 0.5)}
NEW_FIGURES = (
    "attention_maps_q0",
    "attention_maps_q1",
    "attention_entropy",
    "attention_js_to_teacher",
    "x0_strip_0",
    "x0_strip_1",
    "x0_mse_to_teacher",
    "embedding_trajectories_pca",
    "embedding_trajectories_tsne",
    "embedding_latent_tsne",
)


def js_value(model: str, t: int) -> float:
    """Larger for smaller students and at higher noise; the distilled students 10% below the data ones."""
    size = model_params(model)["size_factor"]
    return (1.05 - size) * t / 1000 * (0.9 if model.startswith("distill") else 1.0)


def analysis_rows(rows: Rows) -> None:
    """Rows of the attention, determinism, embedding cells and the new rows of the trajectory/quality cells."""
    peaked = np.zeros((len(ATTENTION_T), 2, 2, 8, 8))
    peaked[..., 4, 4] = 1.0
    for model in MODELS:
        size = model_params(model)["size_factor"]
        for t in ATTENTION_T:
            for layer in LAYERS:
                rows.add("test_attention", model, "attention_entropy", 2 + size + t / 1000, layer=layer, t=t)
                if model != "teacher" and not (model == "data-s0.1" and layer == "mid_attn"):
                    value = js_value(model, t)
                    rows.add(
                        "test_attention", model, "attention_js_to_teacher", value, layer=layer, t=t, reference="teacher"
                    )
        rows.array("test_attention", model, "attention_maps", peaked)
        rows.rows[-1]["params"] |= {"layer": "mid_attn", "queries": "0.5,0.5;0.25,0.75", "timesteps": "999,499,99"}
        for step in range(STEPS):
            rows.add("test_trajectories", model, "x0_mse_to_teacher", (1 - size + 0.1) * (STEPS - step), step=step)
        rows.array("test_trajectories", model, "x0_strip", np.full((3, 2, 1, 8, 8), size - 0.5))
        rows.rows[-1]["params"]["steps"] = "0,3,5"
        same = 1e-3 if model == "data-s0.5" else 0.0
        rows.add("test_determinism", model, "determinism_same_seed_max_abs", same, n=4, steps=10)
        rows.add("test_determinism", model, "determinism_batch_layout_max_abs", 2e-6, n=4, steps=10)
    for model, (precision, recall) in PR.items():
        rows.add("test_sample_quality", model, "precision", precision, n=EVAL_N, n_real=EVAL_N)
        rows.add("test_sample_quality", model, "recall", recall, n=EVAL_N, n_real=EVAL_N)
    rng = np.random.default_rng(0)
    models = ",".join(MODELS)
    for view, method, columns, labels in (
        ("trajectories", "pca", "x,y,model,step,sample", lambda i: [i % len(MODELS), i % 3, i % 2]),
        ("trajectories", "tsne", "x,y,model,step,sample", lambda i: [i % len(MODELS), i % 3, i % 2]),
        ("latent", "tsne", "x,y,model,class", lambda i: [i % (len(MODELS) + 1) - 1, i % 10]),
    ):
        n = 40
        array = np.concatenate([rng.standard_normal((n, 2)), np.array([labels(i) for i in range(n)])], axis=1)
        params = {"method": method, "models": models, "view": view, "n": n}
        cell = f"{method}"
        rows.append("test_embeddings", cell, params, "trustworthiness", 0.9 if method == "tsne" else 0.8)
        rel = f"{ARRAYS_DIR}/{rows.run_id}-{view}-{method}-embedding.npy"
        np.save(rows.run_dir / rel, array)
        rows.append("test_embeddings", cell, {**params, "columns": columns}, "embedding", float(n), artifact=rel)


def test_issue_15_analyses_write_every_figure_table_and_note(tmp_path):
    rows = Rows(tmp_path)
    noise_rows(rows)
    (tmp_path / ARRAYS_DIR).mkdir(parents=True, exist_ok=True)
    analysis_rows(rows)
    md = build_report(tmp_path, rows=rows.write()).read_text()
    assert "could not be built" not in md
    for name in NEW_FIGURES:
        png, csv = tmp_path / f"figures/size_factors_{name}.png", tmp_path / f"figures/size_factors_{name}.csv"
        assert png.stat().st_size > 3_000, name
        assert len(pd.read_csv(csv)) > 0, name
        assert f"](figures/size_factors_{name}.png)" in md, name
    maps = pd.read_csv(tmp_path / "figures/size_factors_attention_maps_q0.csv")
    assert len(maps) == len(MODELS) * 3 * 2 * 64 and set(maps["t"]) == set(ATTENTION_T)  # every sample's map
    assert maps.groupby(["model", "t", "sample"])["weight"].sum().eq(1).all()
    entropy = pd.read_csv(tmp_path / "figures/size_factors_attention_entropy.csv")
    assert set(entropy["layer"]) == set(LAYERS) and len(entropy) == len(MODELS) * 3 * 2
    assert "data-s0.1: mid_attn (no same-shaped teacher layer)" in md
    assert "At t = 999 (highest noise) the largest layer-mean JS divergence from the teacher is data-s0.1's" in md
    points = pd.read_csv(tmp_path / "figures/size_factors_embedding_latent_tsne.csv")
    assert "real" in set(points["model"]) and set(points["model"]) - {"real"} <= set(MODELS)
    trust = pd.read_csv(tmp_path / "tables/size_factors_trust_trajectories.csv")
    assert trust.set_index("method")["trustworthiness"].to_dict() == {"pca": 0.8, "tsne": 0.9}
    assert md.count("UMAP: not run (umap-learn is an optional extra") == 2  # one note per view
    pr = pd.read_csv(tmp_path / "tables/size_factors_precision_recall.csv").set_index("model")
    assert pr.loc["data-s0.1", "precision"] == 0.6 and pr.loc["distill-s0.1", "recall"] == 0.5
    assert "data-s0.1: precision 0.6 (-0.2), recall 0.7 (+0): loses fidelity (precision)" in md
    assert "6 of 7 model(s) sample bitwise-identically twice from one seed; not: data-s0.5 (max |dx| 0.001)" in md
    vs_size = pd.read_csv(tmp_path / "figures/size_factors_metrics_vs_size.csv")
    assert {"precision", "recall"} <= set(vs_size["metric"]) and not vs_size["metric"].str.startswith(
        "determinism"
    ).any()
    x0 = pd.read_csv(tmp_path / "figures/size_factors_x0_mse_to_teacher.csv")
    assert len(x0) == len(MODELS) * STEPS


def test_a_run_without_the_new_cells_notes_each_skip(tmp_path):
    rows = Rows(tmp_path)
    noise_rows(rows)
    md = build_report(tmp_path, rows=rows.write()).read_text()
    for note in (
        "No attention rows",
        "No x0_strip arrays",
        "No x0_mse_to_teacher rows",
        "No trajectories embedding rows",
        "No latent embedding rows",
        "No precision/recall rows",
        "No determinism rows",
    ):
        assert note in md, note


def _analysis_frame(tmp_path) -> pd.DataFrame:
    rows = Rows(tmp_path)
    (tmp_path / ARRAYS_DIR).mkdir(parents=True, exist_ok=True)
    analysis_rows(rows)
    return rows_to_frame(rows.rows)


def test_attention_note_and_skips_known_answers(tmp_path):
    rows = model_rows(_analysis_frame(tmp_path))
    entropy, js = layer_series(rows, "attention_entropy"), layer_series(rows, "attention_js_to_teacher")
    assert attention_skips(entropy, js) == ["data-s0.1: mid_attn (no same-shaped teacher layer)"]
    note = attention_note(js)
    # data-s0.1 at t = 999: (1.05 - 0.1) * 0.999 = 0.949; the smallest at t = 999 is distill-s1: 0.05 * 0.999 * 0.9
    assert "is data-s0.1's (0.949 nats; smallest distill-s1's, 0.045)" in note
    assert "JS peaks at the highest noise for 6 of 6 student(s)" in note
    assert "Smallest size 0.1: mean JS 0.902 at t = 999 vs 0.0893 at t = 99" in note
    assert "cannot be summarised" in attention_note(js.iloc[:0])


def test_precision_recall_and_determinism_notes(tmp_path):
    table = scalar_table(model_rows(_analysis_frame(tmp_path)))
    pr = precision_recall_table(table)
    assert pr["model"].tolist() == ["teacher", "data-s0.1", "distill-s0.1"]
    note = precision_recall_note(pr)
    assert "Teacher: precision 0.8, recall 0.7." in note
    assert "distill-s0.1: precision 0.8 (+0), recall 0.5 (-0.2): loses diversity (recall)" in note
    assert "cannot be compared" in precision_recall_note(pr[pr["mode"] != "teacher"])
    # with n, a loss must exceed two standard errors of the difference: recall 0.5 vs 0.7 is one at n = 100
    # (2 sqrt((0.25 + 0.21) / 100) = 0.136), not at n = 20 (0.303)
    assert "loses diversity (recall) beyond sampling noise" in precision_recall_note(pr, n=100)
    assert "distill-s0.1: precision 0.8 (+0), recall 0.5 (-0.2): loses neither beyond sampling noise" in (
        precision_recall_note(pr, n=20)
    )
    frame = determinism_table(table)
    assert len(frame) == len(MODELS) and frame.set_index("model").loc["data-s0.5", "determinism_same_seed_max_abs"]
    assert "not: data-s0.5" in determinism_note(frame) and "2e-06" in determinism_note(frame)


def test_embedding_points_name_models_and_real_images(tmp_path):
    array = np.array([[0.0, 1.0, 0, 3], [2.0, 3.0, -1, 7], [4.0, 5.0, 1, 0]])
    points = embedding_points(array, "x,y,model,class", ["teacher", "data-s0.5"])
    assert points["model"].tolist() == ["teacher", "real", "data-s0.5"] and points["class"].tolist() == [3, 7, 0]
    with pytest.raises(ValueError, match="does not match its columns"):
        embedding_points(array, "x,y,model,step,sample", ["teacher"])
    trust = trust_table(_analysis_frame(tmp_path))
    assert trust[["view", "method"]].values.tolist() == [
        ["latent", "tsne"],
        ["trajectories", "pca"],
        ["trajectories", "tsne"],
    ]

"""The samplers family's report: every step-reduction method on one teacher through one quality pipeline.

Rows come from :mod:`diffbench.families.samplers` (only the rows are read here). Quality rows have ``panel``
(``image``: the size_factors teacher, a class-conditional UNet (16x16 digits at smoke scale); ``gmm``: an MLP
teacher on a ring of 8 Gaussians), ``method`` (``ddpm``, ``ddim``, ``progressive``, ``one_step``, ``consistency``),
``steps``, ``eta`` (ddpm, ddim and progressive only), ``spacing``, ``n``, ``n_real`` (image) and ``model``; their
metrics are ``network_evaluations``, ``teacher_deviation`` (RMS difference from the teacher's many-step reference
DDIM output for the same noise), ``train_steps`` and ``train_seconds`` for distilled students, the domain FID with
its interval at this n, FID-infinity, KID, class accuracy and diversity (image) or MMD, W2, mode coverage,
high-quality fraction and mode balance (gmm), and a ``samples`` array (image: images ``[N, 1, H, W]`` in
``[-1, 1]``, sample ``i`` of class ``i mod 10``; gmm: points ``[N, 2]``). The feature extractor is in each FID
row's context. Timing rows (``sampling_seconds_per_image``, absent unless the serial timing pass ran) have
``panel``, ``method``, ``steps``, ``eta`` and ``spacing``.

A *series* is one sampler line: (method, eta), e.g. ``DDIM η=0``, ``DDIM η=1``, ``DDPM``, ``progressive``; the
spacing joins the label only when the rows hold several spacings. The functions that shape rows are pure;
:func:`sections` loads the arrays and saves the figures, per run when the rows hold several, each figure skipped
with a note when its rows are absent.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from diffbench.metrics import registry
from diffbench.report import figures
from diffbench.report.parts import (
    DELTA_HIGHER,
    DELTA_LOWER,
    FID_CAPTION,
    FID_DELTA_METRICS,
    FID_INFINITY_INTERVAL,
    FID_INFINITY_METRICS,
    FID_INTERVAL,
    FID_KID_METRICS,
    MEASURED_WITH,
    NUM_CLASSES,
    Out,
    image_index,
    intervals_overlap,
    is_image_batch,
    latest_artifacts,
    load_array,
    numeric_param,
    paired_delta,
    param,
    per_run_sections,
    wide_metrics,
    with_fid_interval,
)
from diffbench.report.sections import FigureRef, Note, Section, Table, format_value

IMAGE, GMM = "image", "gmm"
PANEL_ORDER = (IMAGE, GMM)  # other panels follow by name
DDPM, DDIM, PROGRESSIVE, ONE_STEP, CONSISTENCY = "ddpm", "ddim", "progressive", "one_step", "consistency"
METHOD_ORDER = (DDIM, DDPM, PROGRESSIVE, ONE_STEP, CONSISTENCY)  # other methods follow by name
METHOD_NAMES = {
    DDPM: "DDPM",
    DDIM: "DDIM",
    PROGRESSIVE: "progressive",
    ONE_STEP: "one-step",
    CONSISTENCY: "consistency",
}
DEFAULT_ETA = {DDPM: 1.0, PROGRESSIVE: 0.0}  # shown in a label only where it differs; DDIM's eta is always shown
METHOD_MARKERS = {DDIM: "o", DDPM: "s", PROGRESSIVE: "^", ONE_STEP: "*", CONSISTENCY: "D"}
DISTILLED = (PROGRESSIVE, ONE_STEP, CONSISTENCY)
TEACHER_ETA = 0.0  # the teacher's deterministic DDIM: what a distilled student is compared with

TIMING_METRIC = "sampling_seconds_per_image"
EVALUATIONS = "network_evaluations"
DEVIATION = "teacher_deviation"
TRAINING = ("train_steps", "train_seconds")
IMAGE_METRICS = (
    *FID_KID_METRICS,
    "class_accuracy",
    "class_diversity",
    *FID_INFINITY_METRICS,
    *FID_DELTA_METRICS,  # FID minus the teacher's DDIM η=0 at the same steps, paired (same noise and class)
)
GMM_METRICS = ("wasserstein", "mmd_rbf", "modes_covered", "high_quality_fraction", "mode_balance")
TABLE_METRICS = (EVALUATIONS, *IMAGE_METRICS, *GMM_METRICS, DEVIATION, *TRAINING)
PANEL_METRICS = {
    IMAGE: ("fid", "class_accuracy", DEVIATION),
    GMM: ("wasserstein", "mmd_rbf", "modes_covered", DEVIATION),
}
PRIMARY = {IMAGE: "fid", GMM: "wasserstein"}  # the metric of the Pareto note and the 1-step comparison
PRIMARY_NAMES = {"fid": "FID", "wasserstein": "W2"}
SEED_STEPS = (20, 50, 100)  # seed 004: the teacher's DDIM at 20, 50 and 100 steps, beside DDPM
PER_CLASS = 2  # seed-004 grids: the first samples of every class
CELL_IMAGES = NUM_CLASSES  # samples per cell: the first image of every class
MAX_POINTS = 2000  # samples per cell: at most this many gmm points drawn (and kept in the CSV)
TIMING_COMMAND = "pytest benchmarks -k samplers -m timing -n 0 --run-id latest"
KEYS = ["panel", "series", "model", "steps"]
DELTA_COLUMN = "fid_delta [ci] vs DDIM η=0"  # the paired difference with the teacher's DDIM η=0 at the same steps
INFO = ["method", "eta", "spacing"]


# --- rows -> frames and text (pure) ----------------------------------------------------------------------


def series_label(method: str, eta: float | None = None, spacing: str | None = None) -> str:
    """A sampler line's name: ``DDIM η=0``, ``DDIM η=1``, ``DDPM``, ``progressive``, ``one-step``,
    ``consistency``; eta is shown for DDIM, and for another method only where it is not that method's usual
    value; ``spacing`` (when given) is appended in parentheses."""
    label = METHOD_NAMES.get(method, method)
    if eta is not None and pd.notna(eta):
        usual = DEFAULT_ETA.get(method)
        if method == DDIM or usual is None or not np.isclose(eta, usual):
            label += f" η={eta:g}"
    return label + (f" ({spacing})" if spacing else "")


def sampler_rows(df: pd.DataFrame) -> pd.DataFrame:
    """The rows of a sampler cell (those with a ``panel`` and a ``method``: quality, array and timing rows) with
    plain ``panel``, ``method``, ``model``, ``spacing`` (str; blank when absent), ``steps``, ``eta`` (float) and
    ``series`` (:func:`series_label`; with the spacing only when the rows hold more than one) columns added."""
    rows = df[param(df, "panel").notna() & param(df, "method").notna()]

    def text(name: str) -> pd.Series:
        values = param(rows, name).astype(object)
        return values.where(values.notna(), "").astype(str)

    rows = rows.assign(
        panel=text("panel"),
        method=text("method"),
        model=text("model"),
        spacing=text("spacing"),
        steps=numeric_param(rows, "steps"),
        eta=numeric_param(rows, "eta"),
    )
    several = rows.loc[rows["spacing"] != "", "spacing"].nunique() > 1
    labels = [
        series_label(m, e, s if several else None)
        for m, e, s in zip(rows["method"], rows["eta"], rows["spacing"], strict=True)
    ]
    return rows.assign(series=pd.Series(labels, index=rows.index, dtype=object))


def _rank(values: Sequence[str], order: Sequence[str]) -> dict[str, int]:
    known = [v for v in order if v in set(values)]
    return {v: i for i, v in enumerate(known + sorted(set(values) - set(order)))}


def ordered_panels(panels: pd.Series) -> list[str]:
    """The distinct panels, image then gmm, then any other by name."""
    return list(_rank(list(panels), PANEL_ORDER))


def ordered_series(frame: pd.DataFrame) -> list[str]:
    """The distinct series of ``frame`` (columns ``series``, ``method``, ``eta``, ``spacing``): by method (DDIM,
    DDPM, progressive, one-step, consistency, then others by name), then eta, then spacing."""
    if frame.empty:
        return []
    info = frame.drop_duplicates("series")
    method_rank = _rank(list(info["method"]), METHOD_ORDER)
    ranked = info.assign(_m=info["method"].map(method_rank), _e=info["eta"].fillna(-1.0))
    return list(ranked.sort_values(["_m", "_e", "spacing", "series"], kind="stable")["series"])


def series_styles(frame: pd.DataFrame) -> dict[str, dict]:
    """Per series (in :func:`ordered_series` order) its colour ``Ci``, its method's marker, and a solid line for
    the teacher's samplers, a dashed one for distilled students; the same series has the same style in every
    figure of a run."""
    styles = {}
    methods = frame.drop_duplicates("series").set_index("series")["method"]
    for i, label in enumerate(ordered_series(frame)):
        method = methods[label]
        styles[label] = {
            "color": f"C{i % 10}",
            "marker": METHOD_MARKERS.get(method, "v"),
            "markersize": 5,
            "linestyle": "--" if method in DISTILLED else "-",
        }
    return styles


def in_report_order(frame: pd.DataFrame, series: Sequence[str]) -> pd.DataFrame:
    """``frame`` sorted by panel (image, gmm, others), then series in ``series`` order, then steps."""
    panels = {p: i for i, p in enumerate(ordered_panels(frame["panel"]))}
    rank = {s: i for i, s in enumerate(series)}

    def key(column: pd.Series) -> pd.Series:
        if column.name == "panel":
            return column.map(panels)
        if column.name == "series":
            return column.map(rank).fillna(len(rank))
        return column

    return frame.sort_values(["panel", "series", "steps"], key=key, kind="stable").reset_index(drop=True)


LOOP_METRIC = "loop_seconds"
LOOP_PATHS = ("forwards", "eager", "captured", "diffusers", "bf16", "channels_last")  # the bench's order
# (slower, faster): "how many times faster" columns; the measured options are compared with the eager loop.
LOOP_RATIOS = (("eager", "captured"), ("diffusers", "captured"), ("eager", "bf16"), ("eager", "channels_last"))


def loop_table(df: pd.DataFrame) -> pd.DataFrame:
    """One line per (device, teacher, batch) of the sampling-loop timings: ``device, teacher, parameters, batch,
    steps``, seconds per path (:data:`LOOP_PATHS` order, absent paths left out), then the :data:`LOOP_RATIOS`
    (``eager / captured``: how many times faster the graph is) where both paths were timed. Repeated runs
    averaged."""
    rows = df[df["metric"] == LOOP_METRIC]
    if rows.empty:
        return pd.DataFrame()
    rows = rows.assign(
        teacher=param(rows, "teacher").astype(str),
        path=param(rows, "path").astype(str),
        batch=numeric_param(rows, "batch").astype(int),
        steps=numeric_param(rows, "steps").astype(int),
        parameters=numeric_param(rows, "parameters").astype(int),
    )
    keys = ["device", "teacher", "parameters", "batch", "steps"]
    wide = rows.pivot_table(index=keys, columns="path", values="value", aggfunc="mean").reset_index()
    paths = [p for p in LOOP_PATHS if p in wide] + sorted(set(wide.columns) - set(LOOP_PATHS) - set(keys))
    wide = wide[[*keys, *paths]]
    for slow, fast in LOOP_RATIOS:
        if slow in wide and fast in wide:
            wide[f"{slow} / {fast}"] = wide[slow] / wide[fast]
    order = {name: i for i, name in enumerate(("smoke", "standard", "paper"))}
    wide = wide.sort_values(
        ["device", "teacher", "batch"], key=lambda c: c.map(order).fillna(len(order)) if c.name == "teacher" else c
    )
    wide.columns.name = None
    return wide.reset_index(drop=True)


def _loop_items(table: pd.DataFrame, out: Out) -> list[Note | Table]:
    caption = (
        "Seconds for one DDIM batch of each profile's teacher (untrained weights) by sampling path, median of 3 "
        "after a warm-up round: `forwards` is the model calls alone (the floor of an eager loop), `eager` "
        "diffbench's reference `ddim_sample`, `captured` the same loop replayed as one CUDA graph, `diffusers` "
        "DDIMScheduler's loop on the same trailing grid, `bf16` and `channels_last` the eager loop under bfloat16 "
        "autocast, resp. in channels-last memory format (one round where a round takes over 5 s). A ratio `a / b` "
        "says how many times faster path b is than path a."
    )
    items: list[Note | Table] = [Table(caption, table, name=out.name("loop_overhead"))]
    if "captured" not in table:
        items.append(
            Note("No captured-graph timings: they need a CUDA device (run the timing pass with --device cuda).")
        )
    if "diffusers" not in table:
        items.append(Note("No diffusers timings: its cells were not selected, or diffusers is not installed there."))
    return items


def timing_table(rows: pd.DataFrame) -> pd.DataFrame:
    """``panel, series, steps, sampling_seconds_per_image``: the timing rows' mean per sampler cell."""
    timed = rows[(rows["metric"] == TIMING_METRIC) & rows["artifact"].isna()]
    mean = timed.groupby(["panel", "series", "steps"], as_index=False)["value"].mean()
    return mean.rename(columns={"value": TIMING_METRIC})


def quality_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Every quality cell: one line per (panel, series, model, steps) with ``panel, method, eta, spacing, series,
    model, steps``, the recorded metrics of :data:`TABLE_METRICS` (``fid [ci]`` and ``fid_inf [ci]`` after
    ``fid``), ``sampling_seconds_per_image`` joined from the timing rows of the same panel, series and steps (blank
    when not timed) and ``n, n_real, extractor``; metrics no cell recorded are left out, except the FID-infinity
    columns wherever FID is recorded (blank for rows from before FID-infinity). Panels image then gmm, series in
    :func:`ordered_series` order, then by steps; repeated seeds averaged. ``rows`` as from :func:`sampler_rows`."""
    quality = rows[rows["metric"] != TIMING_METRIC]
    wide = wide_metrics(quality, KEYS, TABLE_METRICS)
    if len(wide):
        wide = wide.join(quality.groupby("series")[INFO].first(), on="series")
        wide = wide.merge(timing_table(rows), on=["panel", "series", "steps"], how="left")
    wide = wide.reindex(columns=[*KEYS, *INFO, *TABLE_METRICS, TIMING_METRIC, *MEASURED_WITH])
    has_fid = bool(wide["fid"].notna().any())
    measured = [
        c for c in (*TABLE_METRICS, TIMING_METRIC) if wide[c].notna().any() or (has_fid and c in FID_INFINITY_METRICS)
    ]
    wide = in_report_order(wide, ordered_series(wide))
    columns = ["panel", "method", "eta", "spacing", "series", "model", "steps", *measured, *MEASURED_WITH]
    table = with_fid_interval(wide[columns])
    if "fid_delta" in table:
        table.insert(
            table.columns.get_loc("fid") + 1, DELTA_COLUMN, [paired_delta(line)[0] for _, line in table.iterrows()]
        )
    return table


def metric_direction(metric: str) -> str:
    """``lower``, ``higher`` or ``neither`` from the metric registry (``neither`` where a metric is not declared,
    e.g. in an old run's rows)."""
    declared = registry.find(metric)
    return declared.direction if declared is not None else registry.NEITHER


def log_metrics(curves: pd.DataFrame, metrics: Sequence[str]) -> list[str]:
    """The ``metrics`` the registry plots on a log axis whose values in long ``curves`` are all positive."""
    out = []
    for metric in metrics:
        declared = registry.find(metric)
        if declared is not None and declared.log_scale and (curves.loc[curves["metric"] == metric, "value"] > 0).all():
            out.append(metric)
    return out


def pareto_front(x: Sequence[float], y: Sequence[float], direction: str) -> np.ndarray:
    """Which points ``(x, y)`` are on the Pareto front of lower ``x`` (time) and better ``y`` (``direction``
    ``lower`` or ``higher``): those no other point dominates, i.e. none is at least as fast and at least as good and
    strictly one of the two. Points with a non-finite coordinate are never on it and dominate nothing; with
    ``direction`` ``neither`` there is no front (all false)."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    if direction not in (registry.LOWER, registry.HIGHER):
        return np.zeros(len(x), dtype=bool)
    cost = y if direction == registry.LOWER else -y
    valid = np.isfinite(x) & np.isfinite(cost)
    front = np.zeros(len(x), dtype=bool)
    for i in np.flatnonzero(valid):
        no_worse = valid & (x <= x[i]) & (cost <= cost[i])
        better = (x < x[i]) | (cost < cost[i])
        front[i] = not (no_worse & better).any()
    return front


def pareto_points(table: pd.DataFrame, panel: str) -> pd.DataFrame:
    """Long ``panel, series, method, eta, model, steps, sampling_seconds_per_image, metric, value, direction,
    front``: the timed cells of ``panel`` for each metric of :data:`PANEL_METRICS` they recorded, ``front`` true on
    the Pareto front of that metric (:func:`pareto_front`). ``table`` as from :func:`quality_table`."""
    columns = ["panel", "series", "method", "eta", "model", "steps", TIMING_METRIC]
    out = ["metric", "value", "direction", "front"]
    if TIMING_METRIC not in table:
        return pd.DataFrame(columns=columns + out)
    cells = table[(table["panel"] == panel) & table[TIMING_METRIC].notna()]
    parts = []
    for metric in PANEL_METRICS.get(panel, ()):
        if metric not in cells:
            continue
        points = cells[[*columns, metric]].dropna(subset=[metric]).rename(columns={metric: "value"})
        if points.empty:
            continue
        direction = metric_direction(metric)
        front = pareto_front(points[TIMING_METRIC], points["value"], direction)
        parts.append(points.assign(metric=metric, direction=direction, front=front))
    if not parts:
        return pd.DataFrame(columns=columns + out)
    return pd.concat(parts, ignore_index=True)[columns + out]


def pareto_note(points: pd.DataFrame, panel: str, untimed: int) -> str:
    """The Pareto front of ``panel``'s primary metric (FID, W2; else the first metric plotted) in words, fastest
    first, and how many quality cells had no timing."""
    metrics = [m for m in PANEL_METRICS.get(panel, ()) if m in set(points["metric"])]
    if not metrics:
        return f"{panel}: no timed cell has a quality metric: no Pareto front."
    metric = PRIMARY.get(panel) if PRIMARY.get(panel) in metrics else metrics[0]
    chosen = points[points["metric"] == metric]
    direction = chosen["direction"].iloc[0]
    front = chosen[chosen["front"].astype(bool)].sort_values(TIMING_METRIC)
    listed = "; ".join(
        f"{line.series} at {steps_text(line.steps)} ({format_value(getattr(line, TIMING_METRIC))} s/image, "
        f"{metric} {format_value(line.value)})"
        for line in front.itertuples(index=False)
    )
    text = (
        f"{panel}, {metric} ({direction} is better): Pareto front, fastest first: {listed}."
        if len(front)
        else f"{panel}, {metric}: the registry gives no better direction, so no Pareto front is drawn."
    )
    if untimed:
        text += f" {untimed} quality cell(s) of {panel} have no timing row and are not plotted."
    return text


def distillation_table(table: pd.DataFrame) -> pd.DataFrame:
    """The distilled students (progressive, one-step, consistency, or any cell with a training cost) beside the
    teacher's own DDIM η=0 at the same panel and step count: ``panel, method, series, model, steps, fid,
    fid [ci], fid_inf [ci], class_accuracy, wasserstein, teacher_deviation, train_steps, train_seconds, n, n_real,
    extractor`` (those recorded); by panel, then steps, the teacher first. ``table`` as from :func:`quality_table`."""
    trained = [c for c in TRAINING if c in table]
    student = table["method"].isin(DISTILLED)
    if trained:
        student |= table[trained].notna().any(axis=1)
    students = table[student]
    teacher = table[(table["method"] == DDIM) & np.isclose(table["eta"].astype(float), TEACHER_ETA)]
    same = teacher.set_index(["panel", "steps"]).index.isin(students.set_index(["panel", "steps"]).index)
    lines = pd.concat([teacher[same], students])
    columns = ["panel", "method", "series", "model", "steps", "fid", FID_INTERVAL, FID_INFINITY_INTERVAL]
    columns += ["class_accuracy", "wasserstein", DEVIATION, *TRAINING, *MEASURED_WITH]
    columns = [c for c in columns if c in lines]
    if lines.empty:
        return pd.DataFrame(columns=columns)
    panels = {p: i for i, p in enumerate(ordered_panels(lines["panel"]))}
    rank = {s: i for i, s in enumerate(ordered_series(lines))}
    ranked = lines.assign(_p=lines["panel"].map(panels), _s=lines["series"].map(rank))
    return ranked.sort_values(["_p", "steps", "_s"], kind="stable")[columns].reset_index(drop=True)


def _fid_text(line: pd.Series) -> str:
    text = line.get(FID_INTERVAL)
    return str(text) if isinstance(text, str) and text else format_value(line.get("fid"))


def one_step_note(table: pd.DataFrame) -> str:
    """Does a distilled 1-step student beat the teacher's own 1-step DDIM (η=0)? Per panel: the best 1-step
    student by FID (image, with its interval at this n, and whether the two intervals overlap) or by W2 (gmm, no
    interval recorded), against the teacher's DDIM η=0 at 1 step. ``table`` as from :func:`quality_table`."""
    sentences = ["Does a distilled 1-step student beat the teacher's own 1-step DDIM (η=0)?"]
    panels = [p for p in ordered_panels(table["panel"]) if p in PRIMARY] if len(table) else []
    if not panels:
        return sentences[0] + " No image or gmm cells: it cannot be answered."
    trained = [c for c in TRAINING if c in table]
    student = table["method"].isin(DISTILLED) | (table[trained].notna().any(axis=1) if trained else False)
    teacher = (table["method"] == DDIM) & np.isclose(table["eta"].astype(float), TEACHER_ETA)
    one = np.isclose(table["steps"].astype(float), 1.0)
    for panel in panels:
        metric, name = PRIMARY[panel], PRIMARY_NAMES[PRIMARY[panel]]
        if metric not in table:
            sentences.append(f"{panel}: no {metric} rows: not answered.")
            continue
        here = (table["panel"] == panel) & one & table[metric].notna()
        students = table[here & student].sort_values(metric, kind="stable")
        reference = table[here & teacher]
        if students.empty or reference.empty:
            missing = [
                what
                for what, frame in (("no 1-step distilled student", students), ("no 1-step DDIM η=0", reference))
                if frame.empty
            ]
            sentences.append(f"{panel}: {' and '.join(missing)} with {name}: not answered.")
            continue
        best, ref = students.iloc[0], reference.iloc[0]

        def value(line: pd.Series, metric: str = metric) -> str:
            return _fid_text(line) if metric == "fid" else format_value(line[metric])

        lower = bool(best[metric] < ref[metric])
        text = (
            f"{panel}: the best 1-step student, {best['series']} ({best['model']}), has {name} {value(best)} vs the "
            f"teacher's 1-step DDIM η=0 {name} {value(ref)}"
        )
        if metric == "fid" and pd.notna(best.get("fid_delta", np.nan)):
            text_delta, paired_verdict = paired_delta(best)
            answer = {DELTA_LOWER: "yes", DELTA_HIGHER: "no"}.get(paired_verdict, "not clearly")
            verdict = f"{answer}: Δ = {text_delta} (paired, same noise and class): {paired_verdict}"
        elif metric == "fid":
            overlap = intervals_overlap(
                (best.get("fid_ci_low", np.nan), best.get("fid_ci_high", np.nan)),
                (ref.get("fid_ci_low", np.nan), ref.get("fid_ci_high", np.nan)),
            )
            if overlap is None:
                verdict = (
                    f"{'yes' if lower else 'no'}, its FID is {'lower' if lower else 'not lower'}, but an interval "
                    "is missing, so whether they overlap cannot be judged"
                )
            elif lower:
                verdict = (
                    "yes: its FID is lower and the intervals do not overlap"
                    if not overlap
                    else "not clearly: its FID is lower, but the intervals overlap (within the sampling noise)"
                )
            else:
                verdict = "no: its FID is not lower" + (
                    ", and the intervals overlap" if overlap else ", and the intervals do not overlap"
                )
        else:
            verdict = (
                f"{'yes' if lower else 'no'}: its {name} is {'lower' if lower else 'not lower'}; no confidence "
                f"interval is recorded for {name}, so whether the gap exceeds sampling noise is not judged"
            )
        others = students.iloc[1:]
        rest = (
            " Other 1-step students: " + "; ".join(f"{o['series']} {value(o)}" for _, o in others.iterrows()) + "."
            if len(others)
            else ""
        )
        sentences.append(f"{text}: {verdict}.{rest}")
    return " ".join(sentences)


def class_major(samples: np.ndarray, per_class: int, num_classes: int = NUM_CLASSES) -> tuple[np.ndarray, list[int]]:
    """The first ``per_class`` samples of every class from ``samples`` whose sample ``i`` has class ``i mod K``,
    class 0 first: ``[<= K * per_class, ...]`` and the sample indices taken."""
    index = [i for cls in range(num_classes) for i in range(cls, len(samples), num_classes)[:per_class]]
    return np.asarray(samples)[index], index


def is_point_batch(array: np.ndarray) -> bool:
    """2-D points ``[n, 2]``."""
    return array.ndim == 2 and array.shape[1] == 2


# --- sections (load arrays, save figures) ---------------------------------------------------------------


def sections(df: pd.DataFrame, run_dir: Path) -> list[Section]:
    """The samplers report: quality vs network evaluations, quality vs sampling time with its Pareto front, the
    seed-004 DDIM grids, samples of every cell, the distillation table with the 1-step question, and every cell."""
    return per_run_sections(df, Path(run_dir), "samplers", _run_sections)


def _run_sections(df: pd.DataFrame, out: Out, suffix: str) -> list[Section]:
    loops = loop_table(df)
    loop_section = [Section("Sampling-loop overhead" + suffix, _loop_items(loops, out))] if len(loops) else []
    rows = sampler_rows(df)
    if rows.empty:
        if loop_section:
            return loop_section
        return [Section("Samplers" + suffix, [Note("No sampler rows (with a panel and a method): nothing to plot.")])]
    table = quality_table(rows)
    styles = series_styles(rows)
    parts = [
        ("Quality vs network evaluations", _vs_evaluations_items(table, styles, out)),
        ("Quality vs sampling time (Pareto)", _pareto_items(table, styles, out)),
        ("DDIM at 20, 50 and 100 steps vs DDPM (seed 004)", _seed_grid_items(rows, out)),
        ("Samples per cell", _cell_sample_items(rows, styles, out)),
        ("Distillation", _distillation_items(table, out)),
        ("All quality cells", _table_items(table, out)),
    ]
    return [*(Section(title + suffix, items) for title, items in parts), *loop_section]


def _absent_panels(table: pd.DataFrame, what: str) -> list[Note]:
    present = set(table["panel"])
    return [Note(f"No {panel} cells: its {what} skipped.") for panel in PANEL_ORDER if panel not in present]


def _vs_evaluations_items(table: pd.DataFrame, styles: dict, out: Out) -> list[Note | FigureRef]:
    if table.empty:
        return [Note("No quality rows: quality-vs-evaluations plots skipped.")]
    items: list[Note | FigureRef] = list(_absent_panels(table, "quality-vs-evaluations plot"))
    for panel in ordered_panels(table["panel"]):
        cells = table[table["panel"] == panel]
        cells = cells.assign(**{EVALUATIONS: cells.get(EVALUATIONS, cells["steps"]).fillna(cells["steps"])})
        cells = cells[cells[EVALUATIONS] > 0]
        metrics = [m for m in PANEL_METRICS.get(panel, ()) if m in cells and cells[m].notna().any()]
        if not metrics:
            items.append(Note(f"{panel}: none of {', '.join(PANEL_METRICS.get(panel, ()))} recorded: plot skipped."))
            continue
        ids = ["panel", "series", "method", "eta", "model", "steps", EVALUATIONS]
        bounds = [c for c in ("fid_ci_low", "fid_ci_high") if c in cells]
        long = cells.melt(id_vars=ids + bounds, value_vars=metrics, var_name="metric").dropna(subset=["value"])
        long = long.rename(columns={"fid_ci_low": "low", "fid_ci_high": "high"}).reindex(
            columns=[*ids, "metric", "value", "low", "high"]
        )
        long.loc[long["metric"] != "fid", ["low", "high"]] = np.nan
        long = long.reset_index(drop=True)
        labels = [s for s in styles if s in set(long["series"])]
        curves = long.assign(label=long["series"])
        fig = figures.line_panels(
            curves,
            EVALUATIONS,
            metrics,
            labels,
            styles,
            log_x=True,
            log_y=log_metrics(curves, metrics),
            xticks=sorted(curves[EVALUATIONS].unique()),
            ncols=2 if len(metrics) == 4 else min(len(metrics), 3),
        )
        figures.add_error_bars(fig, curves, EVALUATIONS, metrics, labels, styles)
        caption = (
            f"{panel}: {', '.join(metrics)} vs network evaluations per sample (log x), one line per sampler "
            "(solid: the teacher's samplers; dashed: distilled students)"
            + ("; FID bars: 95% interval at this n" if "fid" in metrics else "")
            + f". {DEVIATION} is the RMS distance from the teacher's many-step reference DDIM output (1000 steps at "
            "smoke scale) for the same noise "
            "(lower = closer)."
        )
        items.append(out.figure(fig, f"quality_vs_evaluations_{panel}", long, caption))
    return items


def _pareto_items(table: pd.DataFrame, styles: dict, out: Out) -> list[Note | FigureRef]:
    if table.empty:
        return [Note("No quality rows: Pareto plots skipped.")]
    if TIMING_METRIC not in table:
        return [
            Note(
                f"No {TIMING_METRIC} rows: the timing pass did not run, so quality vs sampling time is not plotted. "
                "Timing cells carry the timing marker and are skipped under xdist; add them to this run with "
                f"`{TIMING_COMMAND}`."
            )
        ]
    items: list[Note | FigureRef] = []
    for panel in ordered_panels(table["panel"]):
        cells = table[table["panel"] == panel]
        points = pareto_points(table, panel)
        points = points[points[TIMING_METRIC] > 0]
        if points.empty:
            items.append(Note(f"{panel}: no timed cell with a quality metric: Pareto plot skipped."))
            continue
        metrics = [m for m in PANEL_METRICS.get(panel, ()) if m in set(points["metric"])]
        labels = [s for s in styles if s in set(points["series"])]
        curves = points.assign(label=points["series"])
        fig = figures.pareto_panels(
            curves,
            TIMING_METRIC,
            metrics,
            labels,
            styles,
            annotate="steps",
            log_y=log_metrics(curves, metrics),
            ncols=2 if len(metrics) == 4 else min(len(metrics), 3),
        )
        caption = (
            f"{panel}: quality vs sampling seconds per image (log x), each point a sampler cell labelled with its "
            "steps; ringed and joined in black: the Pareto front (no other cell is at least as fast and at least "
            "as good; better = the registry's direction of the metric)."
        )
        items.append(out.figure(fig, f"pareto_{panel}", points, caption))
        untimed = int(cells[TIMING_METRIC].isna().sum())
        items.append(Note(pareto_note(points, panel, untimed)))
    return items


def _artifact_lines(rows: pd.DataFrame, panel: str) -> pd.DataFrame:
    """The latest ``samples`` array of each cell of ``panel``, in report order."""
    artifacts = latest_artifacts(rows[rows["panel"] == panel], "samples", KEYS)
    return in_report_order(artifacts, ordered_series(rows))


def steps_text(steps: float) -> str:
    """``1 step``, ``20 steps``."""
    return f"{steps:g} step" + ("" if steps == 1 else "s")


def _cell_label(series: str, steps: float) -> str:
    return f"{series}, {steps_text(steps)}"


def _load_cells(
    lines: pd.DataFrame, run_dir: Path, valid, take
) -> tuple[dict[str, np.ndarray], dict[str, dict], list[str]]:
    """Per cell label its array (``take(array)``) and its source entries; the problems met."""
    loaded, sources, problems = {}, {}, []
    for line in lines.itertuples(index=False):
        array, problem = load_array(run_dir, line.artifact, valid)
        if problem:
            problems.append(problem)
            continue
        label = _cell_label(line.series, line.steps)
        loaded[label] = take(array)
        sources[label] = {"series": line.series, "model": line.model, "steps": line.steps, "artifact": line.artifact}
    return loaded, sources, problems


def _seed_grid_items(rows: pd.DataFrame, out: Out) -> list[Note | FigureRef]:
    lines = _artifact_lines(rows, IMAGE)
    ddim = (lines["method"] == DDIM) & np.isclose(lines["eta"].astype(float), TEACHER_ETA)
    chosen = lines[(ddim & lines["steps"].isin(SEED_STEPS)) | (lines["method"] == DDPM)]
    if chosen.empty:
        return [Note("No image samples of DDIM η=0 at 20, 50 or 100 steps or of DDPM: seed-004 grids skipped.")]
    items: list[Note | FigureRef] = []
    missing = [f"DDIM η=0 at {s} steps" for s in SEED_STEPS if not (ddim & (lines["steps"] == s)).any()]
    if not (lines["method"] == DDPM).any():
        missing.append("DDPM")
    if missing:
        items.append(Note("Not recorded (no image samples array): " + ", ".join(missing) + "."))
    loaded, sources, problems = _load_cells(chosen, out.run_dir, is_image_batch, lambda a: a)
    if problems:
        items.append(Note("Sample arrays skipped (missing or not [B, 1|3, H, W]): " + "; ".join(problems)))
    if not loaded:
        return items
    images = {label: class_major(a, PER_CLASS)[0] for label, a in loaded.items()}
    data = pd.concat(
        [
            image_index({label: images[label]}, sources).assign(sample=class_major(a, PER_CLASS)[1])
            for label, a in loaded.items()
        ],
        ignore_index=True,
    )
    data["cls"] = data["sample"] % NUM_CLASSES
    width = max(len(a) for a in images.values())
    caption = (
        f"image panel, the teacher's DDIM η=0 at {', '.join(map(str, SEED_STEPS))} steps and DDPM, one row per cell, "
        f"the first {PER_CLASS} samples of every class (class 0 first; sample i has class i mod {NUM_CLASSES}), same "
        "noise in every row; [-1, 1] shown as [0, 1]."
    )
    return [*items, out.figure(figures.image_rows(images, width), "ddim_steps_image", data, caption)]


def _cell_sample_items(rows: pd.DataFrame, styles: dict, out: Out) -> list[Note | FigureRef]:
    items: list[Note | FigureRef] = []
    lines = _artifact_lines(rows, IMAGE)
    if len(lines):
        loaded, sources, problems = _load_cells(lines, out.run_dir, is_image_batch, lambda a: a[:CELL_IMAGES])
        if problems:
            items.append(Note("image sample arrays skipped (missing or not [B, 1|3, H, W]): " + "; ".join(problems)))
        if loaded:
            caption = (
                f"image panel: the first {CELL_IMAGES} samples of every cell (classes 0...{NUM_CLASSES - 1}), one row "
                "per sampler and step count; [-1, 1] shown as [0, 1]."
            )
            fig = figures.image_rows(loaded, CELL_IMAGES)
            items.append(out.figure(fig, "samples_image", image_index(loaded, sources), caption))
    lines = _artifact_lines(rows, GMM)
    if len(lines):
        loaded, sources, problems = _load_cells(lines, out.run_dir, is_point_batch, lambda a: a[:MAX_POINTS])
        if problems:
            items.append(Note("gmm sample arrays skipped (missing or not [n, 2]): " + "; ".join(problems)))
        if loaded:
            data = pd.concat(
                [
                    pd.DataFrame({**sources[label], "cell": label, "point": range(len(a)), "x": a[:, 0], "y": a[:, 1]})
                    for label, a in loaded.items()
                ],
                ignore_index=True,
            )
            colors = {label: styles.get(sources[label]["series"], {}).get("color", "C0") for label in loaded}
            caption = (
                f"gmm: the samples of every cell (ring of 8 Gaussians; the first {MAX_POINTS} at most), one panel "
                "per sampler and step count, same limits and equal aspect in every panel (a title counts the points "
                "outside them)."
            )
            fig = figures.point_panels(loaded, ncols=min(len(loaded), 5), colors=colors)
            items.append(out.figure(fig, "samples_gmm", data, caption))
    return items or [Note("No samples arrays: sample figures skipped.")]


def _distillation_items(table: pd.DataFrame, out: Out) -> list[Note | Table]:
    distilled = distillation_table(table)
    if distilled.empty:
        return [Note("No distilled students (progressive, one-step, consistency): distillation table skipped.")]
    caption = (
        "Distilled students beside the teacher's own DDIM η=0 at the same step count: FID and FID-infinity with "
        f"their intervals and class accuracy (image), W2 (gmm), {DEVIATION} (RMS distance from the teacher's "
        "reference DDIM output, same noise), the cumulative training cost of the student (steps and seconds, incl. "
        f"earlier progressive rounds and pair generation) and the sample counts and extractor. {FID_CAPTION}"
    )
    return [Table(caption, distilled, name=out.name("distillation")), Note(one_step_note(table))]


def _table_items(table: pd.DataFrame, out: Out) -> list[Note | Table]:
    if table.empty:
        return [Note("No quality rows: cell table skipped.")]
    caption = (
        "Every quality cell: panel, sampler (method, eta, spacing), model and steps with every metric it recorded, "
        "sampling seconds per image where timed (blank otherwise), the sample counts n and n_real and the feature "
        f"extractor. {FID_CAPTION}"
    )
    return [Table(caption, table, name=out.name("cells"))]

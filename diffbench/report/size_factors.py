"""The size_factors family's report (seeds 000/001): how model size changes sampling trajectories, noise
prediction, dimensionality, sample quality and efficiency, for students distilled from the teacher (``distill``)
and students trained on the data (``data``).

Rows come from :mod:`diffbench.families.size_factors`. Every model row has ``param.model`` (``teacher`` or
``<mode>-s<size>``), ``param.mode``, ``param.size_factor`` and ``param.band``; series rows add ``param.t``
(``eps_mse``), ``param.step`` (``stepwise_*``) or ``param.k`` (``explained_variance``); ``trajectory_pca`` and
``samples`` rows point at ``.npy`` arrays. A student's quality cell adds ``fid_delta`` with its paired interval
against the teacher (params ``reference``, ``n``, ``n_real``; same noise for both models). Timing rows
(``sampling_seconds_per_image``) have a size but no mode: they are joined to every model of that size (the timing
cell measures the architecture, not the weights).

The functions that shape rows are pure (frame in, frame or text out); :func:`sections` loads the
arrays and saves the figures. Every figure is skipped with a note when its rows are absent.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from diffbench.metrics import registry
from diffbench.report import figures
from diffbench.report.parts import (
    DELTA_CAPTION,
    DELTA_HIGHER,
    DELTA_LOWER,
    DELTA_TIED,
    FID_CAPTION,
    FID_DELTA_INTERVAL,
    FID_DELTA_METRICS,
    FID_INFINITY_METRICS,
    FID_INTERVAL,
    MEASURED_WITH,
    interval_text,
    paired_delta,
    wide_metrics,
    with_fid_interval,
)
from diffbench.report.sections import PARAM_PREFIX, FigureRef, Note, Section, Table, format_value
from diffbench.results import safe_name

TEACHER = "teacher"
MODE_ORDER = (TEACHER, "data", "distill")  # other modes follow by name
MODE_LINESTYLES = {"data": "-", "distill": "--"}
MODE_MARKERS = {"data": "o", "distill": "s"}
MODEL_COLUMNS = ["model", "mode", "size_factor", "band"]
SERIES_PARAMS = ("t", "step", "k", "layer")  # a row with one of these is a point of a curve, not a scalar
STEPWISE_METRICS = ("stepwise_cosine", "stepwise_distance", "stepwise_wasserstein")
RADAR_PREFIX = "radar_"
TRAJECTORY_MSE = "trajectory_mse"
TIMING_METRIC = "sampling_seconds_per_image"
# The efficiency table's columns, in reading order (a layout: what each metric means is in the registry).
EFFICIENCY_METRICS = (
    "params",
    "param_ratio",
    "flops_per_image",
    TRAJECTORY_MSE,
    "eps_mse_mean",
    "fid",
    "fid_ci_low",
    "fid_ci_high",
    "kid",
    *FID_INFINITY_METRICS,
)
FID_COLUMNS = ("fid", "fid_ci_low", "fid_ci_high")
REFERENCE_FID = "reference fid [ci]"
VERDICT = "verdict"
PCA_SAMPLES = 3
SAMPLE_IMAGES = 8
EXPLAINED_TARGET = 0.9  # drawn on the cumulative curve: components needed for 90% of the variance
ENTROPY, JS = "attention_entropy", "attention_js_to_teacher"
X0_METRIC = "x0_mse_to_teacher"
DETERMINISM_METRICS = ("determinism_same_seed_max_abs", "determinism_batch_layout_max_abs")
PR_METRICS = ("precision", "recall")
TRUST = "trustworthiness"
EMBEDDING = "embedding"
METHOD_TITLES = {"pca": "PCA", "tsne": "t-SNE", "umap": "UMAP"}
REAL = "real"  # the latent embedding's real images (source index -1)


# --- rows -> per-model frames (pure) ----------------------------------------------------------------------


def _param(df: pd.DataFrame, name: str) -> pd.Series:
    """Column ``param.<name>``, or all-missing when no row has that parameter."""
    column = PARAM_PREFIX + name
    return df[column] if column in df else pd.Series(None, index=df.index, dtype=object)


def model_rows(df: pd.DataFrame) -> pd.DataFrame:
    """The rows of a model (those with a ``mode``; not timing rows) with plain ``model``, ``mode``,
    ``size_factor`` (float) and ``band`` columns added."""
    rows = df[_param(df, "mode").notna()]
    return rows.assign(
        model=_param(rows, "model").astype(str),
        mode=_param(rows, "mode").astype(str),
        size_factor=pd.to_numeric(_param(rows, "size_factor"), errors="coerce").astype(float),
        band=_param(rows, "band"),
    )


def ordered_models(rows: pd.DataFrame) -> pd.DataFrame:
    """One line per model (``model, mode, size_factor, band``): the teacher, then each mode (data, distill,
    others by name) by increasing size. ``rows`` as from :func:`model_rows`."""
    models = rows.drop_duplicates("model")[MODEL_COLUMNS]
    rank = models["mode"].map(lambda m: (MODE_ORDER.index(m), "") if m in MODE_ORDER else (len(MODE_ORDER), m))
    order = sorted(range(len(models)), key=lambda i: (rank.iloc[i], models["size_factor"].iloc[i]))
    return models.iloc[order].reset_index(drop=True)


def students(models: pd.DataFrame) -> pd.DataFrame:
    return models[models["mode"] != TEACHER]


def size_label(size: float) -> str:
    return f"s{size:g}"


def model_styles(models: pd.DataFrame) -> dict[str, dict]:
    """Plot style per model, the same in every figure: the teacher black and thick; a student coloured by its
    size (same colour for both modes) with a line style and marker per mode (data solid o, distill dashed s)."""
    colors = figures.sequential_colors(students(models)["size_factor"].tolist())
    styles = {}
    for line in models.itertuples(index=False):
        if line.mode == TEACHER:
            styles[line.model] = {"color": "black", "linewidth": 2.2, "marker": "D", "zorder": 3}
        else:
            styles[line.model] = {
                "color": colors[line.size_factor],
                "linestyle": MODE_LINESTYLES.get(line.mode, ":"),
                "marker": MODE_MARKERS.get(line.mode, "^"),
            }
    return styles


def scalar_table(rows: pd.DataFrame) -> pd.DataFrame:
    """One line per model (:func:`ordered_models`) and one column per scalar metric: the rows with no array and
    no series parameter (``t``, ``step``, ``k``), repeated seeds averaged; blank where a model has no value."""
    models = ordered_models(rows)
    is_series = pd.concat([_param(rows, p).notna() for p in SERIES_PARAMS], axis=1).any(axis=1)
    scalar = rows[rows["artifact"].isna() & ~is_series]
    if scalar.empty:
        return models
    wide = scalar.pivot_table(index="model", columns="metric", values="value", aggfunc="mean", dropna=False)
    return models.join(wide[sorted(wide.columns)], on="model")


def series_frame(rows: pd.DataFrame, metrics: Sequence[str], x: str) -> pd.DataFrame:
    """Long frame ``model, mode, size_factor, metric, <x>, value`` of the rows of ``metrics`` that carry the
    series parameter ``x`` (``t``, ``step`` or ``k``); repeated seeds averaged."""
    points = rows[rows["metric"].isin(metrics) & _param(rows, x).notna()]
    points = points.assign(**{x: _param(points, x).astype(float)})
    keys = ["model", "mode", "size_factor", "metric", x]
    return points.groupby(keys, as_index=False, sort=False)["value"].mean()


def vs_size_metrics(table: pd.DataFrame) -> list[str]:
    """The scalar metrics to plot against size: every declared quality metric a student recorded, except the
    radar forms (drawn as radars) and the determinism checks (a table of their own), in declaration order
    (trajectory comparisons, FID/KID, eps error, precision/recall)."""
    student_values = students(table)
    recorded = {
        c
        for c in table.columns
        if c not in MODEL_COLUMNS
        and not c.startswith(RADAR_PREFIX)
        and c not in DETERMINISM_METRICS
        and student_values[c].notna().any()
    }
    declared = registry.load_declarations()
    return [name for name, m in declared.items() if name in recorded and m.kind == registry.QUALITY]


def log_scale_metrics(long: pd.DataFrame) -> list[str]:
    """Metrics (of a long frame with ``metric``, ``value``) drawn on a log axis: declared ``log_scale``, all finite
    values positive, and spanning at least a factor of 10."""
    out = []
    for metric, values in long.groupby("metric", sort=False)["value"]:
        v = values[np.isfinite(values)]
        declared = registry.find(metric)
        if declared is not None and declared.log_scale and len(v) and (v > 0).all() and v.max() >= 10 * v.min():
            out.append(metric)
    return out


def is_cumulative(curves: pd.DataFrame) -> bool:
    """Whether ``explained_variance`` rows (``model, k, value``) hold cumulative ratios rather than one ratio per
    component. A per-component ratio never increases with k (PCA orders components by variance), so any
    increase means cumulative, any decrease per-component; flat curves are cumulative when the per-component
    reading would explain more than all the variance (a sum above 1)."""
    diffs, sums = [], []
    for _, curve in curves.sort_values("k").groupby("model", sort=False):
        diffs.append(np.diff(curve["value"].to_numpy()))
        sums.append(curve["value"].sum())
    steps = np.concatenate(diffs) if diffs else np.array([])
    if (steps > 1e-9).any():
        return True
    if (steps < -1e-9).any():
        return False
    return any(s > 1 + 1e-9 for s in sums)


def explained_variance_frame(rows: pd.DataFrame) -> tuple[pd.DataFrame, bool]:
    """Explained variance per model and number of components ``k``, long-form ``model, mode, size_factor,
    metric, k, value`` with metric ``per_component`` (ratio of component k) and ``cumulative`` (components
    1..k), whichever the rows recorded (:func:`is_cumulative`, returned too)."""
    curves = series_frame(rows, ["explained_variance"], "k").sort_values(["model", "k"], kind="stable")
    cumulative = is_cumulative(curves)
    by_model = curves.groupby("model", sort=False)["value"]
    other = by_model.diff().fillna(curves["value"]) if cumulative else by_model.cumsum()
    recorded, derived = ("cumulative", "per_component") if cumulative else ("per_component", "cumulative")
    frame = pd.concat([curves.assign(metric=recorded), curves.assign(metric=derived, value=other)])
    return frame.reset_index(drop=True), cumulative


def radar_table(table: pd.DataFrame) -> pd.DataFrame:
    """The students' ``radar_*`` columns (names without the prefix), one line per student with any value."""
    columns = [c for c in table.columns if c.startswith(RADAR_PREFIX)]
    radar = students(table)[MODEL_COLUMNS + columns].dropna(subset=columns, how="all")
    return radar.rename(columns={c: c.removeprefix(RADAR_PREFIX) for c in columns})


def timing_by_size(df: pd.DataFrame) -> pd.Series:
    """Mean ``sampling_seconds_per_image`` per size factor (timing rows carry a size but no mode)."""
    rows = df[df["metric"] == TIMING_METRIC]
    sizes = pd.to_numeric(_param(rows, "size_factor"), errors="coerce").astype(float)
    return rows.assign(size_factor=sizes).groupby("size_factor")["value"].mean().rename(TIMING_METRIC)


def fid_measured_with(rows: pd.DataFrame) -> pd.DataFrame:
    """``model, n, n_real, extractor`` of each model's own FID rows (not its paired differences). ``rows`` as from
    :func:`model_rows`."""
    own = rows[_param(rows, "reference").isna()]
    return wide_metrics(own, ["model"], FID_COLUMNS)[["model", *MEASURED_WITH]]


def efficiency_table(table: pd.DataFrame, timing: pd.Series, measured: pd.DataFrame | None = None) -> pd.DataFrame:
    """One line per model: ``model, mode, size_factor, band``, then those of :data:`EFFICIENCY_METRICS` that were
    recorded (with ``fid [ci]`` and ``fid_inf [ci]`` after ``fid``, and the FID-infinity columns blank where FID
    was measured without them), ``sampling_seconds_per_image`` (joined on size) when timed, ``quality_per_mparam``
    when FID was measured, and ``n, n_real, extractor`` of the FID (from ``measured``, as from
    :func:`fid_measured_with`) when given and FID was measured.

    ``param_ratio`` missing for a model (the teacher; a run without trajectory cells) is filled in as
    ``params / teacher params``. ``quality_per_mparam = 1 / (fid * params / 1e6)``: inverse FID per million
    parameters, higher is better (a model half the size at the same FID scores twice as high).
    """
    recorded = [m for m in EFFICIENCY_METRICS if m in table or ("fid" in table and m in FID_INFINITY_METRICS)]
    out = table.reindex(columns=MODEL_COLUMNS + recorded)
    if "params" in out:
        teacher = out.loc[out["mode"] == TEACHER, "params"]
        if len(teacher) and teacher.iloc[0] > 0:
            ratio = out["params"] / teacher.iloc[0]
            out["param_ratio"] = out["param_ratio"].fillna(ratio) if "param_ratio" in out else ratio
    if len(timing):
        out[TIMING_METRIC] = out["size_factor"].map(timing)
    if "fid" in out and "params" in out:
        out["quality_per_mparam"] = 1 / (out["fid"] * out["params"] / 1e6)
    if "fid" in out and measured is not None:
        out = out.join(measured.set_index("model").reindex(columns=list(MEASURED_WITH)), on="model")
    return with_fid_interval(out.reset_index(drop=True))


def paired_table(rows: pd.DataFrame) -> pd.DataFrame:
    """The paired comparisons with the teacher: one line per student (in model order) with a FID or a paired
    difference: ``model, mode, size_factor, band, reference, n, n_real, extractor`` (of the difference, else of the
    student's FID), ``fid [ci]`` (the student's), ``reference fid [ci]`` (its reference's, the teacher), ``fid_delta
    [ci]`` (student minus reference, paired interval), ``verdict`` (:func:`~diffbench.report.parts.delta_verdict`)
    and ``fid_delta, fid_delta_ci_low, fid_delta_ci_high``. ``rows`` as from :func:`model_rows`."""
    columns = [*MODEL_COLUMNS, "reference", *MEASURED_WITH, FID_INTERVAL, REFERENCE_FID, FID_DELTA_INTERVAL, VERDICT]
    columns += list(FID_DELTA_METRICS)
    rows = rows.assign(reference=_param(rows, "reference"))
    own = wide_metrics(rows[rows["reference"].isna()], ["model"], FID_COLUMNS).set_index("model")
    deltas = wide_metrics(rows[rows["reference"].notna()], ["model"], [*FID_DELTA_METRICS])
    firsts = rows[rows["reference"].notna()].groupby("model")["reference"].first()
    deltas = deltas.assign(reference=deltas["model"].map(firsts)).set_index("model")
    lines = students(ordered_models(rows))
    lines = lines[lines["model"].isin(deltas.index) | lines["model"].isin(own.index[own["fid"].notna()])]
    if lines.empty:
        return pd.DataFrame(columns=columns)
    out = lines.join(deltas, on="model")
    out["reference"] = out["reference"].astype(object).where(out["reference"].notna(), TEACHER)
    for column in MEASURED_WITH:  # the difference's sample sizes, else those of the student's own FID
        out[column] = out[column].astype(object).where(out[column].notna(), out["model"].map(own[column]))

    def fid_text(model: str) -> str:
        if model not in own.index:
            return ""
        return interval_text(*(own.at[model, c] for c in FID_COLUMNS))

    out[FID_INTERVAL] = [fid_text(m) for m in out["model"]]
    out[REFERENCE_FID] = [fid_text(r) for r in out["reference"]]
    texts = [paired_delta(line) for _, line in out.iterrows()]
    out[FID_DELTA_INTERVAL] = [text for text, _ in texts]
    out[VERDICT] = [verdict for _, verdict in texts]
    return out.reindex(columns=columns).reset_index(drop=True)


def paired_note(paired: pd.DataFrame) -> str:
    """Which students' FID differs from the teacher's beyond sampling noise, judged by the paired difference's
    interval (does it exclude 0?), with the numbers; students without a recorded difference are named as not
    measured. ``paired`` as from :func:`paired_table`."""
    if paired.empty:
        return "No student FID or paired difference recorded: no student can be compared with the teacher."
    measured = paired[paired["fid_delta"].notna()]
    if measured.empty:
        return (
            "No fid_delta rows (paired differences with the teacher, from the same noise): the students' FIDs are not "
            "judged against the teacher's here (the efficiency table's separate intervals are not a paired test)."
        )
    counts = measured[VERDICT].value_counts()
    summary = (
        f"Paired FID difference student - teacher (same noise, interval at n = {_sizes(measured)}): of "
        f"{len(measured)} student(s), {counts.get(DELTA_LOWER, 0)} with a lower FID than the teacher (the interval "
        f"excludes 0 below), {counts.get(DELTA_HIGHER, 0)} with a higher one (excludes 0 above), "
        f"{counts.get(DELTA_TIED, 0)} not distinguishable at this n (the interval includes 0)"
    )
    others = len(measured) - sum(counts.get(v, 0) for v in (DELTA_LOWER, DELTA_HIGHER, DELTA_TIED))
    summary += f"; {others} not judged (interval missing)." if others else "."
    details = "; ".join(
        f"{line['model']}: Δ {line[FID_DELTA_INTERVAL]} ({line[VERDICT]}; FID {line[FID_INTERVAL] or '-'} vs "
        f"{line['reference']} {line[REFERENCE_FID] or '-'})"
        for _, line in measured.iterrows()
    )
    missing = paired.loc[paired["fid_delta"].isna(), "model"].tolist()
    tail = f" Not measured (no fid_delta rows): {', '.join(missing)}." if missing else ""
    return f"{summary} {details}.{tail}"


def _sizes(lines: pd.DataFrame) -> str:
    """``1000 generated / 5000 real``: the distinct sample sizes (``n``, ``n_real``) of ``lines``, comma-separated."""
    pairs = dict.fromkeys(
        f"{format_value(n) or '?'} generated / {format_value(r) or '?'} real"
        for n, r in zip(lines["n"], lines["n_real"], strict=True)
    )
    return ", ".join(pairs)


def distillation_note(table: pd.DataFrame) -> str:
    """Plainly: is the distilled size-1.0 student's ``trajectory_mse`` lower than the smallest student's? Both
    numbers are stated; the smallest student of each mode is compared (distill first)."""
    if TRAJECTORY_MSE not in table:
        return f"No {TRAJECTORY_MSE} rows: the distilled size-1.0 student cannot be compared with the smallest."
    values = students(table).dropna(subset=[TRAJECTORY_MSE])
    full = values[(values["mode"] == "distill") & np.isclose(values["size_factor"], 1.0)]
    if full.empty:
        return f"No {TRAJECTORY_MSE} for a distilled size-1.0 student: it cannot be compared with the smallest."
    full_mse = full[TRAJECTORY_MSE].iloc[0]
    sentences = []
    for mode in sorted(values["mode"].unique(), key=lambda m: (m != "distill", m)):
        smallest = values[values["mode"] == mode].sort_values("size_factor", kind="stable").iloc[0]
        if np.isclose(smallest["size_factor"], 1.0):
            continue
        lower = full_mse < smallest[TRAJECTORY_MSE]
        sentences.append(
            f"{'Yes' if lower else 'No'}: the distilled size-1.0 student's {TRAJECTORY_MSE} ({full_mse:.4g}) is "
            f"{'lower' if lower else 'not lower'} than that of the smallest {mode} student, {smallest['model']} "
            f"({smallest[TRAJECTORY_MSE]:.4g})."
        )
    if not sentences:
        return f"Only size-1.0 students recorded {TRAJECTORY_MSE}: there is no smaller student to compare with."
    return " ".join(sentences)


# --- the analyses of issue 15: attention, denoising, embeddings, precision/recall, determinism (pure) -----------


def layer_series(rows: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Long frame ``model, mode, size_factor, layer, t, value`` of ``metric``'s rows (one per layer and timestep;
    repeated seeds averaged), in model order."""
    points = rows[(rows["metric"] == metric) & _param(rows, "layer").notna() & _param(rows, "t").notna()]
    columns = ["model", "mode", "size_factor", "layer", "t", "value"]
    if points.empty:
        return pd.DataFrame(columns=columns)
    points = points.assign(layer=_param(points, "layer").astype(str), t=_param(points, "t").astype(float))
    keys = ["model", "mode", "size_factor", "layer", "t"]
    return points.groupby(keys, as_index=False, sort=False)["value"].mean()[columns]


def attention_skips(entropy: pd.DataFrame, js: pd.DataFrame) -> list[str]:
    """``model: layer, ...`` for every student whose layers have no JS divergence from the teacher (a layer the
    teacher lacks or has at another resolution, e.g. a tiny student's middle attention over 16x16 positions
    against the teacher's 8x8), and teacher layers a student lacks; frames as from :func:`layer_series`."""
    teacher_layers = set(entropy.loc[entropy["mode"] == TEACHER, "layer"])
    lines = []
    for model, own in entropy[entropy["mode"] != TEACHER].groupby("model", sort=False):
        compared = set(js.loc[js["model"] == model, "layer"])
        unmatched = sorted(set(own["layer"]) - compared)
        missing = sorted(teacher_layers - set(own["layer"]))
        parts = [f"{', '.join(unmatched)} (no same-shaped teacher layer)"] if unmatched else []
        parts += [f"lacks {', '.join(missing)}"] if missing else []
        if parts:
            lines.append(f"{model}: {'; '.join(parts)}")
    return lines


def attention_note(js: pd.DataFrame) -> str:
    """Where students' attention departs most from the teacher's: at the highest and lowest recorded noise (largest
    ``t`` and smallest), the student with the largest layer-mean JS divergence and its value, and for how many
    students the JS peaks at the highest noise. ``js`` as from :func:`layer_series`."""
    if js.empty:
        return f"No {JS} rows: attention divergence cannot be summarised."
    mean = js.groupby(["model", "size_factor", "t"], as_index=False, sort=False)["value"].mean()
    high, low = mean["t"].max(), mean["t"].min()
    sentences = []
    for t, name in ((high, "highest noise"), (low, "lowest noise")):
        at = mean[mean["t"] == t].sort_values("value", ascending=False, kind="stable")
        top = at.iloc[0]
        sentences.append(
            f"At t = {t:g} ({name}) the largest layer-mean JS divergence from the teacher is {top['model']}'s "
            f"({top['value']:.3g} nats; smallest {at.iloc[-1]['model']}'s, {at.iloc[-1]['value']:.3g})."
        )
    peaks = mean.loc[mean.groupby("model", sort=False)["value"].idxmax()]
    at_high = int((peaks["t"] == high).sum())
    sentences.append(f"JS peaks at the highest noise for {at_high} of {len(peaks)} student(s).")
    smallest = mean[mean["size_factor"] == mean["size_factor"].min()]
    if high != low and len(smallest):
        by_t = smallest.groupby("t")["value"].mean()
        sentences.append(
            f"Smallest size {smallest['size_factor'].iloc[0]:g}: mean JS {by_t[high]:.3g} at t = {high:g} vs "
            f"{by_t[low]:.3g} at t = {low:g}."
        )
    return " ".join(sentences)


def precision_recall_table(table: pd.DataFrame) -> pd.DataFrame:
    """``model, mode, size_factor, band, precision, recall`` of the models that recorded them (model order)."""
    if not set(PR_METRICS) <= set(table.columns):
        return pd.DataFrame(columns=[*MODEL_COLUMNS, *PR_METRICS])
    return table[[*MODEL_COLUMNS, *PR_METRICS]].dropna(subset=list(PR_METRICS), how="all").reset_index(drop=True)


def precision_recall_note(pr: pd.DataFrame, n: int | None = None) -> str:
    """ "Do smaller students lose fidelity or diversity?", answered with numbers: per training mode, the smallest
    student's precision (fidelity) and recall (diversity, coverage) against the teacher's at equal n. With the
    sample count ``n``, a difference counts as a loss only beyond two standard errors of a difference of two
    proportions, ``2 sqrt(p1 (1 - p1) / n + p0 (1 - p0) / n)`` (each value is a share of n points)."""
    teacher = pr[pr["mode"] == TEACHER]
    if pr.empty or teacher.empty:
        return "No precision/recall rows for the teacher: fidelity and diversity cannot be compared with it."
    p0, r0 = teacher["precision"].iloc[0], teacher["recall"].iloc[0]
    sentences = [f"Teacher: precision {p0:.3g}, recall {r0:.3g}" + (f" (n = {n})." if n else ".")]

    def beyond_noise(value: float, reference: float, delta: float) -> bool:
        if not n:
            return delta < 0
        return delta < -2 * math.sqrt((value * (1 - value) + reference * (1 - reference)) / n)

    for mode, lines in students(pr).groupby("mode", sort=False):
        small = lines.sort_values("size_factor", kind="stable").iloc[0]
        dp, dr = small["precision"] - p0, small["recall"] - r0
        lost = [
            name
            for name, value, reference, d in (
                ("fidelity (precision)", small["precision"], p0, dp),
                ("diversity (recall)", small["recall"], r0, dr),
            )
            if beyond_noise(value, reference, d)
        ]
        verdict = f"loses {' and '.join(lost)}" if lost else "loses neither" + (" beyond sampling noise" if n else "")
        if lost and n:
            verdict += " beyond sampling noise"
        sentences.append(
            f"Smallest {mode} student {small['model']}: precision {small['precision']:.3g} ({dp:+.3g}), recall "
            f"{small['recall']:.3g} ({dr:+.3g}): {verdict}."
        )
    return " ".join(sentences)


def determinism_table(table: pd.DataFrame) -> pd.DataFrame:
    """``model, mode, size_factor, band`` and both determinism deviations of the models that recorded them."""
    recorded = [m for m in DETERMINISM_METRICS if m in table]
    if not recorded:
        return pd.DataFrame(columns=[*MODEL_COLUMNS, *DETERMINISM_METRICS])
    return table[[*MODEL_COLUMNS, *recorded]].dropna(subset=recorded, how="all").reset_index(drop=True)


def determinism_note(frame: pd.DataFrame) -> str:
    """Which models sampled bitwise-identically twice from one seed, which did not (with the deviation)."""
    if frame.empty or DETERMINISM_METRICS[0] not in frame:
        return "No determinism rows: verify-determinism was not recorded."
    same = frame[DETERMINISM_METRICS[0]]
    failed = frame[same != 0]
    text = f"{int((same == 0).sum())} of {len(frame)} model(s) sample bitwise-identically twice from one seed"
    if len(failed):
        pairs = zip(failed["model"], failed[same.name], strict=True)
        text += "; not: " + ", ".join(f"{m} (max |dx| {v:.3g})" for m, v in pairs)
    if DETERMINISM_METRICS[1] in frame:
        text += (
            f". Largest batch-layout deviation (kernel rounding, not judged): {frame[DETERMINISM_METRICS[1]].max():.3g}"
        )
    return text + "."


def trust_table(df: pd.DataFrame) -> pd.DataFrame:
    """Trustworthiness per embedding: ``view, method, n, trustworthiness`` (seeds averaged)."""
    rows = df[df["metric"] == TRUST]
    columns = ["view", "method", "n", TRUST]
    if rows.empty:
        return pd.DataFrame(columns=columns)
    frame = pd.DataFrame(
        {"view": _param(rows, "view"), "method": _param(rows, "method"), "n": _param(rows, "n"), TRUST: rows["value"]}
    )
    frame = frame.groupby(["view", "method"], as_index=False, sort=True).agg(
        n=("n", "last"), **{TRUST: (TRUST, "mean")}
    )
    return frame[columns]


def embedding_points(array: np.ndarray, columns: str, models: Sequence[str], steps: int | None = None) -> pd.DataFrame:
    """The points of an ``embedding`` array ``[n, 2 + labels]`` as a frame with the array's ``columns`` (``x,y,
    model,step,sample`` or ``x,y,model,class``), ``model`` turned into the name (``models[i]``, ``real`` for -1)."""
    names = columns.split(",")
    if array.ndim != 2 or array.shape[1] != len(names):
        raise ValueError(f"embedding array of shape {array.shape} does not match its columns {columns!r}")
    frame = pd.DataFrame(array, columns=names)
    index = frame["model"].round().astype(int)
    frame["model"] = [REAL if i < 0 else models[i] for i in index]
    for column in ("step", "sample", "class"):
        if column in frame:
            frame[column] = frame[column].round().astype(int)
    return frame


# --- sections (load arrays, save figures) -----------------------------------------------------------------


@dataclass
class _Out:
    """Where one run's figures go: ``figures/size_factors_<name><tag>.png`` (tag: the run id, when the report
    holds several runs)."""

    run_dir: Path
    tag: str = ""

    def figure(self, fig: Figure, name: str, data: pd.DataFrame, caption: str) -> FigureRef:
        return FigureRef(figures.save_figure(fig, self.run_dir, f"size_factors_{name}{self.tag}", data), caption)


def sections(df: pd.DataFrame, run_dir: Path) -> list[Section]:
    """The size_factors report: metrics vs size, radar charts, teacher-frame trajectories, samples, stepwise
    metrics, noise prediction, dimensionality and the efficiency table; per run when the rows hold several."""
    runs = sorted(df["run_id"].dropna().unique())
    if len(runs) <= 1:
        return _run_sections(df, _Out(Path(run_dir)), "")
    sections = []
    for run in runs:
        sections += _run_sections(df[df["run_id"] == run], _Out(Path(run_dir), "_" + safe_name(run)), f" ({run})")
    return sections


def _run_sections(df: pd.DataFrame, out: _Out, suffix: str) -> list[Section]:
    rows = model_rows(df)
    if rows.empty:
        return [Section("Size factors" + suffix, [Note("No model rows (with a mode): nothing to plot per model.")])]
    table = scalar_table(rows)
    styles = model_styles(table)
    parts = [
        ("Metrics vs size", _vs_size_items(table, out)),
        ("Radar charts", _radar_items(table, styles, out)),
        ("Trajectories in the teacher's PCA frame", _trajectory_items(rows, table, styles, out)),
        ("Samples", _sample_items(rows, table, out)),
        ("Time-dependent metrics", _stepwise_items(rows, table, styles, out)),
        ("Noise prediction", _eps_items(rows, table, styles, out)),
        ("Dimensionality", _dimensionality_items(rows, table, styles, out)),
        ("Efficiency", _efficiency_items(df, rows, table, out)),
        ("Paired comparisons with the teacher", _paired_items(rows, out)),
        ("Attention", _attention_items(rows, table, styles, out)),
        ("Denoising along the path", _denoising_items(rows, table, styles, out)),
        ("Trajectories embedded together: t-SNE and UMAP", _embedding_items(df, "trajectories", styles, out)),
        ("Latent space: samples and real data, precision and recall", _latent_items(df, table, styles, out)),
        ("Determinism", _determinism_items(table)),
    ]
    return [Section(title + suffix, items) for title, items in parts]


def _vs_size_items(table: pd.DataFrame, out: _Out) -> list[Note | FigureRef]:
    metrics = vs_size_metrics(table)
    if not metrics:
        return [Note("No scalar student metrics: metrics-vs-size plot skipped.")]
    long = table.melt(id_vars=MODEL_COLUMNS, value_vars=metrics, var_name="metric").dropna(subset=["value"])
    curves = long[long["mode"] != TEACHER].rename(columns={"mode": "label"})
    teacher = long[long["mode"] == TEACHER]
    references = dict(zip(teacher["metric"], teacher["value"], strict=True))
    modes = list(dict.fromkeys(curves["label"]))
    styles = {m: {"color": f"C{i}", "linestyle": MODE_LINESTYLES.get(m, ":")} for i, m in enumerate(modes)}
    log_y = log_scale_metrics(long)
    sizes = sorted(curves["size_factor"].unique())
    fig = figures.line_panels(
        curves, "size_factor", metrics, modes, styles, references, "teacher", log_x=True, log_y=log_y, xticks=sizes
    )
    caption = "Each scalar metric vs size factor (log x), one line per training mode; dotted: the teacher's value."
    return [out.figure(fig, "metrics_vs_size", long, caption)]


def _radar_items(table: pd.DataFrame, styles: dict, out: _Out) -> list[Note | FigureRef]:
    radar = radar_table(table)
    spokes = [c for c in radar.columns if c not in MODEL_COLUMNS]
    if radar.empty or len(spokes) < 3:
        return [Note(f"Fewer than 3 radar_* metrics recorded ({len(spokes)}): radar charts skipped.")]
    values = {line.model: line[spokes].to_numpy(dtype=float) for _, line in radar.iterrows()}
    modes = list(dict.fromkeys(radar["mode"]))
    grid = {model: {model: v} for model, v in values.items()}
    ncols = max(radar.groupby("mode").size())
    items = [
        out.figure(
            figures.radar_panels(grid, spokes, styles, ncols=min(ncols, 6)),
            "radar_grid",
            radar,
            "Trajectory metrics normalised to [0, 1] (higher is better: closer to the teacher), one radar per student.",
        )
    ]
    size_styles = {size_label(s): {"color": c} for s, c in figures.sequential_colors(radar["size_factor"]).items()}
    composite = {
        mode: {size_label(line.size_factor): values[line.model] for line in radar[radar["mode"] == mode].itertuples()}
        for mode in modes
    }
    items.append(
        out.figure(
            figures.radar_panels(composite, spokes, size_styles, ncols=len(modes)),
            "radar_composite",
            radar,
            "All sizes overlaid, one radar per training mode (colour = size factor).",
        )
    )
    return items


def _load_arrays(rows: pd.DataFrame, metric: str, models: pd.DataFrame, run_dir: Path):
    """``model -> array`` for the latest ``metric`` artifact of each model (in model order), and the notes for
    arrays that are missing or unreadable."""
    arrays, notes = {}, []
    artifacts = rows[(rows["metric"] == metric) & rows["artifact"].notna()]
    for model in models["model"]:
        found = artifacts[artifacts["model"] == model]
        if found.empty:
            continue
        rel = str(found.sort_values("time", na_position="first")["artifact"].iloc[-1])
        try:
            arrays[model] = np.load(run_dir / rel, allow_pickle=False)
        except (OSError, ValueError) as exc:
            notes.append(f"{model}: {rel} ({type(exc).__name__})")
    return arrays, notes


def _trajectory_items(rows: pd.DataFrame, table: pd.DataFrame, styles: dict, out: _Out) -> list[Note | FigureRef]:
    arrays, missing = _load_arrays(rows, "trajectory_pca", table, out.run_dir)
    items: list[Note | FigureRef] = []
    bad = [m for m, a in arrays.items() if a.ndim != 3 or a.shape[2] < 3]
    if missing or bad:
        shapes = [f"{m}: shape {arrays[m].shape}" for m in bad]
        items.append(Note("Trajectory arrays skipped (missing or not [S+1, B, 3]): " + "; ".join(missing + shapes)))
    arrays = {m: a[:, :PCA_SAMPLES] for m, a in arrays.items() if m not in bad}
    teacher = arrays.pop(TEACHER, None)
    if not arrays:
        return [*items, Note("No student trajectory_pca arrays: trajectory plots skipped.")]
    drawn = {TEACHER: teacher, **arrays} if teacher is not None else arrays
    data = pd.concat([_pca_records(model, a) for model, a in drawn.items()], ignore_index=True)
    ncols = min(6, max(table[table["model"].isin(list(arrays))].groupby("mode").size()))
    grey = " (teacher in grey)" if teacher is not None else " (teacher's array missing)"
    what = f"The first {PCA_SAMPLES} samples' trajectories in the teacher's PCA frame, same initial noise{grey};"
    for dims, view in ((2, "PC1 vs PC2"), (3, "PC1-PC3")):
        fig = figures.trajectory_panels(arrays, teacher, dims, styles, TEACHER, ncols=ncols)
        items.append(out.figure(fig, f"pca_{dims}d", data, f"{what} {view}; o = start, * = end."))
    return items


def _pca_records(model: str, paths: np.ndarray) -> pd.DataFrame:
    """``[S+1, n, 3]`` -> long ``model, sample, step, pc1, pc2, pc3``."""
    steps, n, _ = paths.shape
    step, sample = np.meshgrid(np.arange(steps), np.arange(n), indexing="ij")
    coords = paths[..., :3].reshape(-1, 3)
    return pd.DataFrame(
        {
            "model": model,
            "sample": sample.ravel(),
            "step": step.ravel(),
            **{f"pc{i + 1}": coords[:, i] for i in range(3)},
        }
    )


def _sample_items(rows: pd.DataFrame, table: pd.DataFrame, out: _Out) -> list[Note | FigureRef]:
    arrays, missing = _load_arrays(rows, "samples", table, out.run_dir)
    bad = [m for m, a in arrays.items() if a.ndim != 4 or a.shape[1] not in (1, 3)]
    items: list[Note | FigureRef] = []
    if missing or bad:
        shapes = [f"{m}: shape {arrays[m].shape}" for m in bad]
        items.append(Note("Sample arrays skipped (missing or not [B, 1|3, H, W]): " + "; ".join(missing + shapes)))
    arrays = {m: a for m, a in arrays.items() if m not in bad}
    if not arrays:
        return [*items, Note("No samples arrays: sample grid skipped.")]
    artifacts = rows[(rows["metric"] == "samples") & rows["artifact"].notna()].drop_duplicates("model", keep="last")
    paths = dict(zip(artifacts["model"], artifacts["artifact"], strict=True))
    index = pd.DataFrame(
        [
            {"model": m, "image": i, "artifact": paths[m], "shape": "x".join(map(str, a.shape[1:])), **_stats(a[i])}
            for m, a in arrays.items()
            for i in range(min(len(a), SAMPLE_IMAGES))
        ]
    )
    fig = figures.image_rows(arrays, SAMPLE_IMAGES)
    caption = (
        f"The first {SAMPLE_IMAGES} final samples of each model from the same initial noise, [-1, 1] shown as "
        "[0, 1]; the CSV lists each image's artifact, index and pixel statistics (the pixels stay in the .npy)."
    )
    return [*items, out.figure(fig, "samples", index, caption)]


def _stats(image: np.ndarray) -> dict[str, float]:
    return {"min": float(np.nanmin(image)), "mean": float(np.nanmean(image)), "max": float(np.nanmax(image))}


def _curve_figure(curves: pd.DataFrame, x: str, metrics: Sequence[str], table: pd.DataFrame, styles: dict, **kw):
    """``line_panels`` of a :func:`series_frame`, one line per model in model order."""
    labels = [m for m in table["model"] if m in set(curves["model"])]
    return figures.line_panels(curves.rename(columns={"model": "label"}), x, metrics, labels, styles, **kw)


def _stepwise_items(rows: pd.DataFrame, table: pd.DataFrame, styles: dict, out: _Out) -> list[Note | FigureRef]:
    curves = series_frame(rows, STEPWISE_METRICS, "step")
    if curves.empty:
        return [Note("No stepwise_* rows: time-dependent plot skipped.")]
    metrics = [m for m in STEPWISE_METRICS if m in set(curves["metric"])]
    fig = _curve_figure(curves, "step", metrics, table, styles, ncols=3)
    caption = (
        "Per sampling step (0 = the shared initial noise): student vs teacher, one line per student; "
        "stepwise_cosine compares the step vectors ending at each step."
    )
    return [out.figure(fig, "stepwise", curves, caption)]


def _eps_items(rows: pd.DataFrame, table: pd.DataFrame, styles: dict, out: _Out) -> list[Note | FigureRef]:
    curves = series_frame(rows, ["eps_mse"], "t")
    if curves.empty:
        return [Note("No eps_mse rows: noise-prediction plot skipped.")]
    log_y = ["eps_mse"] if (curves["value"] > 0).all() else []
    fig = _curve_figure(curves, "t", ["eps_mse"], table, styles, log_y=log_y, ncols=1)
    caption = "Noise-prediction MSE on held-out data vs timestep t, same x0 and noise for every model."
    return [out.figure(fig, "eps_mse", curves, caption)]


def _dimensionality_items(rows: pd.DataFrame, table: pd.DataFrame, styles: dict, out: _Out) -> list[Note | FigureRef]:
    if not (rows["metric"] == "explained_variance").any():
        return [Note("No explained_variance rows: dimensionality plot skipped.")]
    curves, cumulative = explained_variance_frame(rows)
    target = {"cumulative": EXPLAINED_TARGET}
    fig = _curve_figure(
        curves,
        "k",
        ["per_component", "cumulative"],
        table,
        styles,
        references=target,
        reference_label=f"{EXPLAINED_TARGET:.0%} of the variance",
        ncols=2,
    )
    recorded = "cumulative" if cumulative else "per-component"
    caption = (
        f"Explained variance ratio of each model's trajectories vs number of PCA components k (recorded "
        f"{recorded}; the other form derived). Dotted: {EXPLAINED_TARGET:.0%}."
    )
    return [out.figure(fig, "explained_variance", curves, caption)]


def _efficiency_items(df: pd.DataFrame, rows: pd.DataFrame, table: pd.DataFrame, out: _Out) -> list[Note | Table]:
    frame = efficiency_table(table, timing_by_size(df), fid_measured_with(rows))
    caption = (
        "Per model: parameters, measured share of the teacher's, FLOPs per image, trajectory MSE, mean eps MSE; "
        "FID and FID-infinity with their intervals, KID, quality_per_mparam = 1 / (FID x params / 1e6), sampling "
        "seconds per image (by size) when measured, and the FID's sample counts n and n_real and feature "
        f"extractor. {FID_CAPTION}"
    )
    return [Table(caption, frame, name=f"size_factors_efficiency{out.tag}"), Note(distillation_note(table))]


def _paired_items(rows: pd.DataFrame, out: _Out) -> list[Note | Table]:
    paired = paired_table(rows)
    if paired.empty or paired["fid_delta"].isna().all():
        return [Note(paired_note(paired))]
    caption = (
        "Per student: its FID and its reference's (the teacher's) at the same sample sizes, each with its interval "
        "at this n, the paired difference student - teacher with its interval, and whether that interval excludes "
        f"0. {FID_CAPTION} {DELTA_CAPTION}"
    )
    return [Table(caption, paired, name=f"size_factors_paired{out.tag}"), Note(paired_note(paired))]


def _split(text: object, sep: str = ",") -> list[str]:
    return [part for part in str(text).split(sep) if part] if isinstance(text, str) else []


def _attention_items(rows: pd.DataFrame, table: pd.DataFrame, styles: dict, out: _Out) -> list[Note | FigureRef]:
    entropy, js = layer_series(rows, ENTROPY), layer_series(rows, JS)
    arrays, missing = _load_arrays(rows, "attention_maps", table, out.run_dir)
    if entropy.empty and js.empty and not arrays:
        return [Note("No attention rows: attention maps, entropy and divergence skipped.")]
    items: list[Note | FigureRef] = []
    if missing:
        items.append(Note("Attention arrays skipped (unreadable): " + "; ".join(missing)))
    arrays = {m: a for m, a in arrays.items() if a.ndim == 5}
    if arrays:
        found = rows[(rows["metric"] == "attention_maps") & rows["artifact"].notna()].iloc[-1]
        layer = found.get(PARAM_PREFIX + "layer", "")
        times = _split(found.get(PARAM_PREFIX + "timesteps"))
        queries = [tuple(float(v) for v in q.split(",")) for q in _split(found.get(PARAM_PREFIX + "queries"), ";")]
        n_times = max(a.shape[0] for a in arrays.values())
        columns = [f"t = {t}" for t in times] if len(times) == n_times else [f"#{j}" for j in range(n_times)]
        for q in range(min(a.shape[2] for a in arrays.values())):
            position = queries[q] if q < len(queries) else None
            grid = {m: [a[j, 0, q] for j in range(a.shape[0])] for m, a in arrays.items()}
            data = pd.concat([_map_records(m, a[:, :, q], times) for m, a in arrays.items()], ignore_index=True)
            where = f"query at {position[0]:g}, {position[1]:g} of the map (red x)" if position else f"query {q}"
            caption = (
                f"Attention of layer {layer} ({where}), heads averaged, on the teacher's x_t of sample 0: rows models, "
                "columns timesteps; each panel its own colour scale (each model at its own resolution). The CSV "
                "holds every sample's map."
            )
            items.append(out.figure(figures.map_grid(grid, columns, position), f"attention_maps_q{q}", data, caption))
    for frame, metric, what in (
        (entropy, ENTROPY, "mean row entropy (nats; log HW for uniform attention)"),
        (js, JS, "mean row-wise Jensen-Shannon divergence from the teacher's maps on the same x_t (nats, <= log 2)"),
    ):
        if frame.empty:
            items.append(Note(f"No {metric} rows: its plot skipped."))
            continue
        curves = frame.rename(columns={"layer": "metric"})
        layers = list(dict.fromkeys(curves["metric"]))
        fig = _curve_figure(curves, "t", layers, table, styles, ncols=min(4, len(layers)))
        caption = f"Per self-attention layer (one panel each): {what} vs timestep t, one line per model."
        items.append(out.figure(fig, metric, frame, caption))
    skips = attention_skips(entropy, js)
    if skips:
        items.append(Note("Layers without a divergence from the teacher: " + "; ".join(skips)))
    items.append(Note(attention_note(js)))
    return items


def _map_records(model: str, maps: np.ndarray, times: Sequence[str]) -> pd.DataFrame:
    """``[T, n, H, W]`` -> long ``model, t, sample, y, x, weight``."""
    t_idx, sample, y, x = np.meshgrid(*(np.arange(d) for d in maps.shape), indexing="ij")
    labels = np.array(times if len(times) == maps.shape[0] else range(maps.shape[0]), dtype=object)
    return pd.DataFrame(
        {
            "model": model,
            "t": labels[t_idx.ravel()],
            "sample": sample.ravel(),
            "y": y.ravel(),
            "x": x.ravel(),
            "weight": maps.ravel(),
        }
    )


def _denoising_items(rows: pd.DataFrame, table: pd.DataFrame, styles: dict, out: _Out) -> list[Note | FigureRef]:
    items: list[Note | FigureRef] = []
    arrays, missing = _load_arrays(rows, "x0_strip", table, out.run_dir)
    if missing:
        items.append(Note("x0 strips skipped (unreadable): " + "; ".join(missing)))
    arrays = {m: a for m, a in arrays.items() if a.ndim == 5 and a.shape[2] in (1, 3)}
    if arrays:
        found = rows[(rows["metric"] == "x0_strip") & rows["artifact"].notna()].iloc[-1]
        steps = _split(found.get(PARAM_PREFIX + "steps")) or [
            str(j) for j in range(next(iter(arrays.values())).shape[0])
        ]
        for sample in range(min(a.shape[1] for a in arrays.values())):
            strips = {m: a[:, sample] for m, a in arrays.items()}
            data = pd.DataFrame(
                [
                    {"model": m, "sample": sample, "step": steps[j] if j < len(steps) else j, **_stats(a[j])}
                    for m, a in strips.items()
                    for j in range(len(a))
                ]
            )
            caption = (
                f"Sample {sample}: each model's x0 estimate at DDIM steps {', '.join(steps)} (left to right; 0 = the "
                "first step, at t = T-1) of its trajectory from the same noise, [-1, 1] shown as [0, 1]; the CSV has "
                "each image's pixel statistics."
            )
            items.append(out.figure(figures.image_rows(strips, len(steps)), f"x0_strip_{sample}", data, caption))
    elif not missing:
        items.append(Note("No x0_strip arrays: denoising strips skipped."))
    curves = series_frame(rows, [X0_METRIC], "step")
    if curves.empty:
        return [*items, Note(f"No {X0_METRIC} rows: x0-error plot skipped.")]
    fig = _curve_figure(curves, "step", [X0_METRIC], table, styles, ncols=1)
    caption = (
        "MSE of each model's x0 estimate at every DDIM step to the teacher's final sample from the same noise "
        "(the teacher's own curve reaches 0 at its last step)."
    )
    return [*items, out.figure(fig, X0_METRIC, curves, caption)]


def _embedding_figures(df: pd.DataFrame, view: str, styles: dict, out: _Out) -> list[Note | FigureRef | Table]:
    """Every method's embedding of ``view`` (a figure with its points), the trustworthiness table, and a note for
    a method with no rows (UMAP without umap-learn)."""
    found = df[(df["metric"] == EMBEDDING) & df["artifact"].notna() & (_param(df, "view") == view)]
    items: list[Note | FigureRef | Table] = []
    methods = [m for m in METHOD_TITLES if (_param(found, "method") == m).any()]
    for method in methods:
        row = found[_param(found, "method") == method].sort_values("time", na_position="first").iloc[-1]
        try:
            array = np.load(out.run_dir / str(row["artifact"]), allow_pickle=False)
            points = embedding_points(array, str(row[PARAM_PREFIX + "columns"]), _split(row[PARAM_PREFIX + "models"]))
        except (OSError, ValueError, KeyError, IndexError) as exc:
            items.append(Note(f"{method} {view} embedding skipped: {row['artifact']} ({type(exc).__name__}: {exc})"))
            continue
        models = list(dict.fromkeys(points["model"]))
        colors = {"model": {m: styles.get(m, {}).get("color", "0.6") for m in models}}
        if "class" in points:
            colors["model"][REAL] = "0.6"
            colors["class"] = figures.label_colors([str(c) for c in sorted(points["class"].unique())])
            colors["class"] = dict(zip(sorted(points["class"].unique()), colors["class"].values(), strict=True))
            colour_by, what = ["model", "class"], "each model's final samples and real held-out images (grey)"
        else:
            colour_by, what = ["model", "step"], "trajectory states of every model (same noise)"
        markers = {m: styles.get(m, {}).get("marker", "o") for m in models}
        fig = figures.embedding_panels(points, colour_by, colors, markers)
        caption = (
            f"{METHOD_TITLES[method]} of {what}, embedded together (seeded); coloured by {' and by '.join(colour_by)}."
        )
        items.append(out.figure(fig, f"embedding_{view}_{method}", points, caption))
    trust = trust_table(df)
    trust = trust[trust["view"] == view]
    if len(trust):
        caption = "Trustworthiness (Venna & Kaski 2001, k = 5) of each embedding: 1 = no false neighbours in 2-D."
        items.append(Table(caption, trust.reset_index(drop=True), name=f"size_factors_trust_{view}{out.tag}"))
    if not methods:
        items.append(Note(f"No {view} embedding rows: t-SNE/UMAP plots skipped."))
    elif "umap" not in methods:
        items.append(
            Note("UMAP: not run (umap-learn is an optional extra, pip install umap-learn; the cell skips without it).")
        )
    return items


def _embedding_items(df: pd.DataFrame, view: str, styles: dict, out: _Out) -> list[Note | FigureRef | Table]:
    items = _embedding_figures(df, view, styles, out)
    if any(isinstance(item, FigureRef) for item in items):
        items.append(
            Note(
                "The teacher-frame PCA above projects every model on the teacher's own axes; these embed "
                "all models' points at once, so their distances are comparable only within one picture."
            )
        )
    return items


def _latent_items(df: pd.DataFrame, table: pd.DataFrame, styles: dict, out: _Out) -> list[Note | FigureRef | Table]:
    items = _embedding_figures(df, "latent", styles, out)
    pr = precision_recall_table(table)
    if pr.empty:
        return [*items, Note("No precision/recall rows: the fidelity/diversity table skipped.")]
    caption = (
        "Improved precision (fidelity: samples inside the real k-NN manifold) and recall (diversity: real images "
        "inside the samples' manifold), Kynkaanniemi et al. 2019, k = 3, in domain features at equal n."
    )
    rows = df[df["metric"] == "precision"]
    n = int(rows["param.n"].min()) if "param.n" in rows and rows["param.n"].notna().any() else None
    note = Note(precision_recall_note(pr, n))
    return [*items, Table(caption, pr, name=f"size_factors_precision_recall{out.tag}"), note]


def _determinism_items(table: pd.DataFrame) -> list[Note | Table]:
    frame = determinism_table(table)
    if frame.empty:
        return [Note(determinism_note(frame))]
    caption = (
        "verify-determinism per model: max |x1 - x2| of two samplings with the same seed and batches (must be 0), "
        "and max |x1 - x3| with another batch layout (kernel rounding)."
    )
    return [Table(caption, frame), Note(determinism_note(frame))]

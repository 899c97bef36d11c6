"""The cfg family's report (seeds 000/001): what classifier-free guidance does to sampling trajectories and to
sample quality, for the teacher and for small students.

Rows come from :mod:`diffbench.families.cfg`. Every row has the model parameters of the size_factors family
(``model``, ``mode``, ``size_factor``, ``band``) and ``w``, the guidance scale (``w = 1``: the conditional model
without guidance, the reference). Trajectory rows add ``reference``: ``unguided`` (the model's own ``w = 1``
trajectory from the same noise and labels) or ``teacher`` (the teacher's trajectory at the same ``w``); series rows
add ``step``; quality rows add ``n`` and ``n_real``. ``trajectory_pca`` / ``unguided_pca`` (``[S + 1, B, 3]``, one
PCA frame per run) and ``samples`` (``[R * K, C, H, W]`` in ``[-1, 1]``, sample ``i`` of class ``i mod K``) rows
point at ``.npy`` arrays.

The functions that shape rows are pure (frame in, frame or text out); :func:`sections` loads the arrays and saves
the figures, per run when the rows hold several, each figure skipped with a note when its rows are absent. Pieces
shared with the other image families' reports live in :mod:`diffbench.report.parts`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from diffbench.report import figures
from diffbench.report.parts import (
    FID_CAPTION,
    MEASURED_WITH,
    NUM_CLASSES,
    QUALITY_METRICS,
    Out,
    image_index,
    is_image_batch,
    is_trajectory_batch,
    latest_artifacts,
    load_array,
    numeric_param,
    param,
    per_run_sections,
    quality_curves,
    quality_figure,
    wide_metrics,
    with_fid_interval,
)
from diffbench.report.sections import FigureRef, Note, Section, Table, format_value
from diffbench.report.size_factors import TEACHER, model_rows, model_styles, ordered_models, students
from diffbench.results import safe_name

if TYPE_CHECKING:
    pass

UNGUIDED, TEACHER_REFERENCE = "unguided", "teacher"  # the values of param ``reference``
REFERENCE_W = 1.0  # the conditional model without guidance
RADAR_PREFIX = "radar_"
TRAJECTORY_METRICS = (
    "path_length_similarity",
    "trajectory_mse",
    "directional_consistency",
    "cosine_similarity",
    "euclidean_distance",
    "endpoint_distance",
    "wasserstein_endpoint",
    "wasserstein_stepwise",
)
# Heatmap panels, metric -> title; "distribution similarity" is the normalised endpoint Wasserstein distance.
HEATMAPS = {
    "path_length_similarity": "path_length_similarity",
    "trajectory_mse": "trajectory_mse (lower = closer)",
    "directional_consistency": "directional_consistency",
    "radar_wasserstein_endpoint": "distribution similarity",
}
HEATMAP_CMAPS = {"trajectory_mse (lower = closer)": "viridis_r"}  # bright = close to unguided in every panel
COMBINED_PARTS = (
    "radar_path_length_similarity",
    "radar_trajectory_mse",
    "radar_directional_consistency",
    "radar_wasserstein_endpoint",
)
VS_SCALE_METRICS = ("cosine_similarity", "euclidean_distance")
TEACHER_STUDENT_METRICS = ("path_length_similarity", "trajectory_mse", "cosine_similarity", "endpoint_distance")
PCA_SAMPLES = 3
MAX_COLUMNS = 6


# --- rows -> frames (pure) -----------------------------------------------------------------------------


def cfg_rows(df: pd.DataFrame) -> pd.DataFrame:
    """The model rows (:func:`~diffbench.report.size_factors.model_rows`) with plain ``w`` (float), ``reference``
    (``unguided``, ``teacher`` or missing) and ``step`` (float, missing off a series) columns added."""
    rows = model_rows(df)
    return rows.assign(w=numeric_param(rows, "w"), reference=param(rows, "reference"), step=numeric_param(rows, "step"))


def is_reference_scale(w: pd.Series | float) -> np.ndarray | bool:
    return np.isclose(w, REFERENCE_W)


def scale_label(w: float) -> str:
    return f"w={w:g}"


def metric_frame(rows: pd.DataFrame, metrics: Sequence[str], reference: str | None) -> pd.DataFrame:
    """Long ``model, mode, size_factor, w, metric, value`` of the scalar rows (no step, no array) of ``metrics``
    recorded against ``reference`` (``None``: rows without a reference, the quality rows); seeds averaged."""
    chosen = rows["metric"].isin(metrics) & rows["artifact"].isna() & rows["step"].isna()
    chosen &= rows["reference"].isna() if reference is None else rows["reference"] == reference
    keys = ["model", "mode", "size_factor", "w", "metric"]
    return rows[chosen].groupby(keys, as_index=False, sort=False)["value"].mean()


def in_report_order(frame: pd.DataFrame, models: Sequence[str]) -> pd.DataFrame:
    """``frame`` sorted by its ``model`` column in ``models`` order (teacher first, then by mode and size), then
    by ``w``."""
    order = {m: i for i, m in enumerate(models)}
    by = ["model", "w"]
    ranked = frame.sort_values(by, key=lambda c: c.map(order) if c.name == "model" else c, kind="stable")
    return ranked.reset_index(drop=True)


def scale_grid(long: pd.DataFrame, models: Sequence[str]) -> pd.DataFrame:
    """Long ``model, w, value`` as a size x scale table: one line per model in ``models`` order (those with a
    value), one column per ``w`` ascending."""
    if long.empty:
        return pd.DataFrame(index=pd.Index([], name="model"), columns=pd.Index([], name="w"), dtype=float)
    grid = long.pivot_table(index="model", columns="w", values="value", aggfunc="mean")
    return grid.reindex(index=[m for m in models if m in grid.index], columns=sorted(grid.columns))


def heatmap_table(rows: pd.DataFrame, metric: str, reference: str = UNGUIDED) -> pd.DataFrame:
    """``metric`` (against ``reference``) as a model x scale table, models teacher first then by mode and size."""
    return scale_grid(metric_frame(rows, [metric], reference), ordered_models(rows)["model"])


def combined_scores(rows: pd.DataFrame) -> pd.DataFrame:
    """Long ``model, w, value``: the combined similarity to the unguided trajectory, the mean of the four
    normalised scores :data:`COMBINED_PARTS` (each in ``[0, 1]``, 1 = identical); missing when any part is."""
    parts = metric_frame(rows, COMBINED_PARTS, UNGUIDED)
    if parts.empty:
        return pd.DataFrame(columns=["model", "w", "value"])
    wide = parts.pivot_table(index=["model", "w"], columns="metric", values="value", aggfunc="mean")
    score = wide.reindex(columns=list(COMBINED_PARTS)).mean(axis=1, skipna=False)
    return score.rename("value").reset_index()


def radar_frame(rows: pd.DataFrame) -> pd.DataFrame:
    """One line per (model, guided scale ``w != 1``) with ``model, mode, size_factor, w`` and the recorded
    ``radar_*`` scores against the unguided trajectory, named without the prefix, in :data:`TRAJECTORY_METRICS`
    order; models in report order, then by ``w``."""
    long = metric_frame(rows, [RADAR_PREFIX + m for m in TRAJECTORY_METRICS], UNGUIDED)
    long = long[~is_reference_scale(long["w"])]
    keys = ["model", "mode", "size_factor", "w"]
    if long.empty:
        return pd.DataFrame(columns=keys)
    wide = long.pivot_table(index=keys, columns="metric", values="value", aggfunc="mean").reset_index()
    spokes = [m for m in TRAJECTORY_METRICS if RADAR_PREFIX + m in wide]
    wide = wide.rename(columns={RADAR_PREFIX + m: m for m in spokes})[[*keys, *spokes]]
    return in_report_order(wide, ordered_models(rows)["model"])


def paired_artifacts(rows: pd.DataFrame) -> pd.DataFrame:
    """Each guided ``trajectory_pca`` array paired with the same model's unguided (``w = 1``) trajectories:
    ``model, w, guided, unguided`` (artifact paths), models in report order, then by ``w``.

    The unguided array is the model's ``unguided_pca`` recorded with the same ``w``, else one recorded with
    another ``w`` (the ``w = 1`` trajectories do not depend on the cell's scale), else the model's own
    ``trajectory_pca`` at ``w = 1`` (which is the unguided trajectory); missing when the model has none of them.
    """
    guided = latest_artifacts(rows, "trajectory_pca", ["model", "w"])
    unguided = latest_artifacts(rows, "unguided_pca", ["model", "w"])
    same_scale = {(m, w): a for m, w, a in unguided[["model", "w", "artifact"]].itertuples(index=False)}
    any_scale = dict(zip(unguided["model"], unguided["artifact"], strict=True))
    at_reference = guided[is_reference_scale(guided["w"])]
    own = dict(zip(at_reference["model"], at_reference["artifact"], strict=True))
    lines = [
        {"model": m, "w": w, "guided": a, "unguided": same_scale.get((m, w), any_scale.get(m, own.get(m)))}
        for m, w, a in guided[["model", "w", "artifact"]].itertuples(index=False)
    ]
    frame = pd.DataFrame(lines, columns=["model", "w", "guided", "unguided"])
    return in_report_order(frame, ordered_models(rows)["model"])


def smallest_student(models: pd.DataFrame) -> str | None:
    """The student with the smallest size factor (a distilled one first on a tie); ``None`` without students."""
    candidates = students(models)
    if candidates.empty:
        return None
    ranked = candidates.assign(other=candidates["mode"] != "distill").sort_values(["size_factor", "other"])
    return str(ranked["model"].iloc[0])


def path_frame(paths: np.ndarray, **keys: object) -> pd.DataFrame:
    """Trajectories ``[S + 1, n, d]`` as long ``<keys>, sample, step, pc1, .., pc<min(d, 3)>``."""
    steps, n, dims = paths.shape
    index = pd.MultiIndex.from_product([range(steps), range(n)], names=["step", "sample"])
    coords = np.asarray(paths, dtype=float)[..., :3].reshape(steps * n, -1)
    frame = pd.DataFrame(coords, index=index, columns=[f"pc{i + 1}" for i in range(min(dims, 3))]).reset_index()
    return frame.assign(**keys)[[*keys, "sample", "step", *frame.columns[2:]]]


def divergence_frame(guided: np.ndarray, unguided: np.ndarray, **keys: object) -> pd.DataFrame:
    """The arrows of the divergence field: for every sample and step, the unguided position ``pc1, pc2`` and the
    displacement ``d_pc1, d_pc2`` to the guided position (both ``[S + 1, n, >= 2]``, same noise and labels)."""
    base = path_frame(np.asarray(unguided)[..., :2], **keys)
    delta = np.asarray(guided, dtype=float)[..., :2] - np.asarray(unguided, dtype=float)[..., :2]
    return base.assign(d_pc1=delta[..., 0].ravel(), d_pc2=delta[..., 1].ravel())


def stepwise_frame(rows: pd.DataFrame, metric: str, reference: str = UNGUIDED) -> pd.DataFrame:
    """Long ``model, w, step, value`` of the series ``metric`` against ``reference``, seeds averaged."""
    chosen = rows[(rows["metric"] == metric) & rows["step"].notna() & (rows["reference"] == reference)]
    return chosen.groupby(["model", "w", "step"], as_index=False, sort=False)["value"].mean()


def quality_table(rows: pd.DataFrame) -> pd.DataFrame:
    """One line per (model, w) with a quality row: ``model, mode, size_factor, w, class_accuracy,
    class_diversity, fid, fid [ci], fid_inf [ci], fid_ci_low, fid_ci_high, kid, kid_std, fid_infinity,
    fid_infinity_ci_low, fid_infinity_ci_high, fid_infinity_residual, n, n_real, extractor``; models in report
    order, then by ``w``."""
    quality = rows[rows["reference"].isna() & rows["step"].isna()]
    wide = wide_metrics(quality, ["model", "w"], QUALITY_METRICS)
    models = ordered_models(rows)
    out = wide.join(models.set_index("model")[["mode", "size_factor"]], on="model")
    out = in_report_order(out, models["model"])[["model", "mode", "size_factor", "w", *QUALITY_METRICS, *MEASURED_WITH]]
    return with_fid_interval(out)


def teacher_quality_note(quality: pd.DataFrame) -> str:
    """The teacher's class accuracy at its lowest, ``w = 1`` and highest scale, its class diversity at the same
    scales and whether diversity falls as ``w`` rises, and whether that agrees with the seeds' claim "higher
    guidance, higher quality, less diversity" (accuracy higher and diversity lower at the highest ``w`` than at
    ``w = 1``, or than at the lowest ``w`` when ``w = 1`` was not measured). ``quality`` as from
    :func:`quality_table`."""
    teacher = quality[quality["mode"] == TEACHER].sort_values("w")
    accuracy = teacher.dropna(subset=["class_accuracy"])
    if accuracy.empty:
        return "No class_accuracy rows for the teacher: the effect of guidance on quality cannot be stated."
    if len(accuracy) < 2:
        return f"The teacher's class accuracy was measured at one scale only (w={accuracy['w'].iloc[0]:g})."
    low, high = accuracy["w"].iloc[0], accuracy["w"].iloc[-1]
    base = REFERENCE_W if is_reference_scale(accuracy["w"]).any() else low
    scales = sorted({low, base, high})

    def at(metric: str, w: float) -> float:
        values = teacher.loc[np.isclose(teacher["w"], w), metric]
        return float(values.iloc[0]) if len(values) else float("nan")

    def listing(metric: str) -> str:
        return ", ".join(f"{format_value(at(metric, w)) or 'not measured'} at w={w:g}" for w in scales)

    sentences = [f"Teacher class accuracy: {listing('class_accuracy')}."]
    more_accurate = at("class_accuracy", high) > at("class_accuracy", base)
    diversity = teacher.dropna(subset=["class_diversity"])
    less_diverse = None
    if len(diversity) >= 2:
        steps = np.diff(diversity["class_diversity"].to_numpy())
        less_diverse = at("class_diversity", high) < at("class_diversity", base)
        if (steps < 0).all():
            trend = "it falls at every step as w rises"
        elif diversity["class_diversity"].iloc[-1] < diversity["class_diversity"].iloc[0]:
            trend = "it is lower at the highest w than at the lowest, but does not fall at every step"
        else:
            trend = "it does not fall as w rises"
        sentences.append(f"Class diversity: {listing('class_diversity')}; {trend}.")
    else:
        sentences.append("Class diversity was not measured at two scales or more: its trend cannot be stated.")
    fid_base, fid_high = at("fid", base), at("fid", high)
    if pd.notna(fid_base) and pd.notna(fid_high):
        sentences.append(f"FID: {format_value(fid_base)} at w={base:g}, {format_value(fid_high)} at w={high:g}.")
    versus = f"at w={high:g} vs w={base:g}"
    if less_diverse is None:
        verdict = f"Accuracy is {'higher' if more_accurate else 'not higher'} {versus}; diversity cannot be judged"
    elif more_accurate and less_diverse:
        verdict = f"The data agrees: accuracy is higher and diversity lower {versus}"
    elif more_accurate or less_diverse:
        verdict = (
            f"The data agrees only in part: accuracy is {'higher' if more_accurate else 'not higher'} and "
            f"diversity {'lower' if less_diverse else 'not lower'} {versus}"
        )
    else:
        verdict = f"The data does not agree: accuracy is not higher and diversity not lower {versus}"
    sentences.append(f"Claim 'higher guidance, higher quality, less diversity': {verdict}.")
    return " ".join(sentences)


# --- sections (load arrays, save figures) ---------------------------------------------------------------


def sections(df: pd.DataFrame, run_dir: Path) -> list[Section]:
    """The cfg report: size x scale heatmaps, radars, trajectories over scales in the teacher's PCA frame, guided
    vs unguided pairs and their divergence field, similarity vs scale (to the unguided trajectory and to the
    teacher), final images per scale, and sample quality per (model, scale) with a note on the teacher."""
    return per_run_sections(df, Path(run_dir), "cfg", _run_sections)


def _run_sections(df: pd.DataFrame, out: Out, suffix: str) -> list[Section]:
    rows = cfg_rows(df)
    if rows.empty:
        return [Section("Classifier-free guidance" + suffix, [Note("No model rows (with a mode): nothing to plot.")])]
    models = ordered_models(rows)
    styles = model_styles(models)
    pairs, pair_notes = _load_pairs(rows, out.run_dir)
    shown = [m for m in (TEACHER, smallest_student(models)) if m is not None]
    parts = [
        ("Similarity to the unguided trajectory: size x scale", _heatmap_items(rows, models, out)),
        ("Radar charts", _radar_items(rows, styles, out)),
        ("Trajectories over guidance scales", [*pair_notes, *_gradient_items(pairs, models, out)]),
        ("Guided vs unguided trajectories", _pair_items(pairs, shown, out)),
        ("Divergence field", _divergence_items(pairs, shown, out)),
        ("Similarity vs scale", _vs_scale_items(rows, models, styles, out)),
        ("Teacher-student similarity vs scale", _teacher_student_items(rows, models, styles, out)),
        ("Final images per scale", _image_items(rows, models, out)),
        ("Sample quality", _quality_items(rows, models, styles, out)),
    ]
    return [Section(title + suffix, items) for title, items in parts]


def _heatmap_items(rows: pd.DataFrame, models: pd.DataFrame, out: Out) -> list[Note | FigureRef]:
    order = models["model"]
    long = metric_frame(rows, list(HEATMAPS), UNGUIDED)
    tables = {HEATMAPS[m]: scale_grid(long[long["metric"] == m], order) for m in HEATMAPS}
    tables = {title: table for title, table in tables.items() if table.notna().any().any()}
    items: list[Note | FigureRef] = []
    if tables:
        fig = figures.heatmap_panels(tables, HEATMAP_CMAPS, "guidance scale w", "model")
        caption = (
            "Each model's guided trajectory (scale w) vs its own w = 1 trajectory from the same noise and labels, "
            "models x scales; 'distribution similarity' is radar_wasserstein_endpoint (the normalised endpoint "
            "Wasserstein distance, 1 = same distribution). Bright = close to unguided in every panel."
        )
        items.append(out.figure(fig, "heatmap_metrics", long[["model", "w", "metric", "value"]], caption))
    else:
        items.append(
            Note(
                "No path_length_similarity, trajectory_mse, directional_consistency or "
                "radar_wasserstein_endpoint rows against the unguided trajectory: heatmaps skipped."
            )
        )
    scores = combined_scores(rows)
    combined = scale_grid(scores, order)
    if not combined.notna().any().any():
        return [*items, Note(f"No (model, w) has all of {', '.join(COMBINED_PARTS)}: combined heatmap skipped.")]
    parts = metric_frame(rows, COMBINED_PARTS, UNGUIDED)[["model", "w", "metric", "value"]]
    data = pd.concat([parts, scores.assign(metric="combined")], ignore_index=True)
    fig = figures.heatmap_panels(
        {"combined similarity to unguided": combined}, xlabel="guidance scale w", ylabel="model"
    )
    caption = (
        "Combined similarity = mean of radar_path_length_similarity, radar_trajectory_mse, "
        "radar_directional_consistency and radar_wasserstein_endpoint (each in [0, 1], 1 = identical to unguided)."
    )
    return [*items, out.figure(fig, "heatmap_combined", data, caption)]


def _radar_items(rows: pd.DataFrame, styles: dict, out: Out) -> list[Note | FigureRef]:
    radar = radar_frame(rows)
    spokes = [c for c in radar.columns if c not in ("model", "mode", "size_factor", "w")]
    if radar.empty or len(spokes) < 3:
        return [Note(f"Fewer than 3 radar_* metrics at a scale w != 1 ({len(spokes)}): radar charts skipped.")]
    values = {(line.model, line.w): np.asarray(line[spokes], dtype=float) for _, line in radar.iterrows()}
    scales = sorted(radar["w"].unique())
    scale_styles = {scale_label(w): {"color": c} for w, c in figures.sequential_colors(scales, "plasma").items()}
    grid: dict[str, dict[str, np.ndarray]] = {}
    composite: dict[str, dict[str, np.ndarray]] = {}
    for (model, w), v in values.items():
        grid.setdefault(model, {})[scale_label(w)] = v
    for w in scales:
        composite[scale_label(w)] = {model: v for (model, s), v in values.items() if s == w}
    return [
        out.figure(
            figures.radar_panels(grid, spokes, scale_styles, ncols=min(len(grid), MAX_COLUMNS)),
            "radar_grid",
            radar,
            "Similarity of each model's guided trajectories to its unguided ones, one radar per model, one polygon "
            "per scale w != 1 (radar_* scores in [0, 1], 1 = identical to w = 1).",
        ),
        out.figure(
            figures.radar_panels(composite, spokes, styles, ncols=min(len(composite), MAX_COLUMNS)),
            "radar_composite",
            radar,
            "The same scores, one radar per scale w != 1, one polygon per model (teacher black, students coloured "
            "by size; data solid, distill dashed).",
        ),
    ]


def _load_pairs(rows: pd.DataFrame, run_dir: Path) -> tuple[dict, list[Note]]:
    """``(model, w) -> (guided, unguided or None)`` trajectory arrays ``[S + 1, B, >= 2]`` and the notes on arrays
    that are missing, unreadable or of another shape."""
    loaded, problems = {}, []

    def read(rel: object) -> np.ndarray | None:
        if not isinstance(rel, str):
            return None
        array, problem = load_array(run_dir, rel, is_trajectory_batch)
        if problem:
            problems.append(problem)
        return array

    for line in paired_artifacts(rows).itertuples(index=False):
        guided = read(line.guided)
        if guided is not None:
            loaded[(line.model, line.w)] = (guided, read(line.unguided))
    notes = [Note("Trajectory arrays skipped (missing or not [S+1, B, 3]): " + "; ".join(problems))] if problems else []
    return loaded, notes


def _gradient_items(pairs: dict, models: pd.DataFrame, out: Out) -> list[Note | FigureRef]:
    if not pairs:
        return [Note("No trajectory_pca arrays: trajectory plots skipped.")]
    panels: dict[str, dict[float, np.ndarray]] = {}
    for model in models["model"]:
        for (m, w), (guided, _) in pairs.items():
            if m == model:
                panels.setdefault(model, {})[w] = guided[:, :PCA_SAMPLES]
    fig = figures.gradient_trajectory_panels(panels, "guidance scale w", ncols=min(len(panels), 4))
    data = pd.concat([path_frame(a, model=m, w=w) for m, series in panels.items() for w, a in series.items()])
    caption = (
        f"The first {PCA_SAMPLES} samples' trajectories at every scale w (colour) in the run's PCA frame (fitted on "
        "the teacher's w = 1 trajectories), same initial noise for every cell; PC1 vs PC2, o = start, * = end."
    )
    return [out.figure(fig, "pca_scales", data, caption)]


def _shown_pairs(pairs: dict, shown: Sequence[str], guided_only: bool) -> tuple[dict, dict, int]:
    """The loaded pairs of the ``shown`` models that have an unguided array, in that order then by ``w`` (``w != 1``
    only when ``guided_only``), cut to the first samples: keyed by ``(model, w)``, the same keyed by panel title,
    and the panels a row (one model's scales, at most :data:`MAX_COLUMNS`)."""
    chosen = {}
    for model in shown:
        for (m, w), (guided, unguided) in sorted(pairs.items(), key=lambda item: item[0][1]):
            if m == model and unguided is not None and not (guided_only and is_reference_scale(w)):
                chosen[(m, w)] = (guided[:, :PCA_SAMPLES], unguided[:, :PCA_SAMPLES])
    panels = {f"{m}, {scale_label(w)}": pair for (m, w), pair in chosen.items()}
    per_model = pd.Series([m for m, _ in chosen], dtype=object).value_counts()
    return chosen, panels, int(min(per_model.max(), MAX_COLUMNS)) if len(per_model) else 1


def _pair_items(pairs: dict, shown: Sequence[str], out: Out) -> list[Note | FigureRef]:
    chosen, panels, ncols = _shown_pairs(pairs, shown, guided_only=False)
    if not chosen:
        return [Note(f"No guided trajectories with unguided ones for {', '.join(shown)}: pair plots skipped.")]
    fig = figures.paired_trajectory_panels(panels, ncols=ncols)
    data = pd.concat(
        [
            path_frame(a, model=m, w=w, kind=kind)
            for (m, w), pair in chosen.items()
            for kind, a in zip(("guided", "unguided"), pair, strict=True)
        ]
    )
    caption = (
        f"Guided (solid) vs unguided w = 1 (dashed) trajectories of the first {PCA_SAMPLES} samples, one panel per "
        f"scale, for {' and '.join(shown)}; same colour = same sample (same noise and label). PC1 vs PC2."
    )
    return [out.figure(fig, "guided_vs_unguided", data, caption)]


def _divergence_items(pairs: dict, shown: Sequence[str], out: Out) -> list[Note | FigureRef]:
    chosen, panels, ncols = _shown_pairs(pairs, shown, guided_only=True)
    if not chosen:
        return [Note(f"No guided (w != 1) trajectories with unguided ones for {', '.join(shown)}: field skipped.")]
    fig = figures.divergence_panels(panels, ncols=ncols)
    data = pd.concat([divergence_frame(g, u, model=m, w=w) for (m, w), (g, u) in chosen.items()])
    caption = (
        "Where guidance moves the trajectory: at every step an arrow from the unguided (w = 1) position to the "
        f"guided one, first {PCA_SAMPLES} samples (colour), unguided paths in grey. PC1 vs PC2."
    )
    return [out.figure(fig, "divergence_field", data, caption)]


def _model_lines(long: pd.DataFrame, models: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """``long`` with ``label`` = model, and the models present in report order."""
    present = set(long["model"])
    return long.assign(label=long["model"]), [m for m in models["model"] if m in present]


def _vs_scale_items(rows: pd.DataFrame, models: pd.DataFrame, styles: dict, out: Out) -> list[Note | FigureRef]:
    items: list[Note | FigureRef] = []
    long = metric_frame(rows, VS_SCALE_METRICS, UNGUIDED)
    if long.empty:
        items.append(Note("No cosine_similarity or euclidean_distance rows against unguided: plot skipped."))
    else:
        curves, labels = _model_lines(long, models)
        metrics = [m for m in VS_SCALE_METRICS if m in set(long["metric"])]
        fig = figures.line_panels(curves, "w", metrics, labels, styles, ncols=2)
        caption = "Each model's guided trajectory vs its own w = 1 trajectory (same noise and labels), vs scale w."
        items.append(out.figure(fig, "similarity_vs_scale", long, caption))
    steps = stepwise_frame(rows, "stepwise_distance")
    if steps.empty:
        return [*items, Note("No stepwise_distance rows against unguided: divergence-over-time plot skipped.")]
    scales = sorted(steps["w"].unique())
    scale_styles = {scale_label(w): {"color": c} for w, c in figures.sequential_colors(scales, "plasma").items()}
    panel_order = [m for m in models["model"] if m in set(steps["model"])]
    # line_panels draws one panel per "metric": here one per model, one line per scale.
    curves = steps.assign(metric=steps["model"], label=steps["w"].map(scale_label))
    fig = figures.line_panels(curves, "step", panel_order, list(scale_styles), scale_styles, ncols=4)
    caption = (
        "Divergence over time: Euclidean distance between the guided and the unguided (w = 1) trajectory at each "
        "sampling step (0 = the shared noise), one panel per model, one line per scale w."
    )
    return [*items, out.figure(fig, "divergence_over_steps", steps, caption)]


def _teacher_student_items(rows: pd.DataFrame, models: pd.DataFrame, styles: dict, out: Out) -> list[Note | FigureRef]:
    long = metric_frame(rows, TEACHER_STUDENT_METRICS, TEACHER_REFERENCE)
    long = long[long["mode"] != TEACHER]
    if long.empty:
        return [Note("No student rows against the teacher (reference = teacher): teacher-student plot skipped.")]
    curves, labels = _model_lines(long, models)
    metrics = [m for m in TEACHER_STUDENT_METRICS if m in set(long["metric"])]
    fig = figures.line_panels(curves, "w", metrics, labels, styles, ncols=2)
    caption = "Each student's guided trajectory vs the teacher's at the same scale w (same noise and labels), vs w."
    return [out.figure(fig, "teacher_student_vs_scale", long, caption)]


def _image_items(rows: pd.DataFrame, models: pd.DataFrame, out: Out) -> list[Note | FigureRef]:
    artifacts = latest_artifacts(rows, "samples", ["model", "w"]).sort_values("w")
    items: list[Note | FigureRef] = []
    problems = []
    for model in models["model"]:
        images, sources = {}, {}
        for line in artifacts[artifacts["model"] == model].itertuples(index=False):
            array, problem = load_array(out.run_dir, line.artifact, is_image_batch)
            if problem:
                problems.append(problem)
                continue
            images[scale_label(line.w)] = array[:NUM_CLASSES]
            sources[scale_label(line.w)] = {"model": model, "w": line.w, "artifact": line.artifact}
        if images:
            caption = (
                f"{model}: final samples from the same noise, one row per scale w, columns = classes 0..."
                f"{NUM_CLASSES - 1} (sample i has class i mod {NUM_CLASSES}); [-1, 1] shown as [0, 1]."
            )
            fig = figures.image_rows(images, NUM_CLASSES)
            items.append(out.figure(fig, f"samples_{safe_name(model)}", image_index(images, sources), caption))
    if problems:
        items.insert(0, Note("Sample arrays skipped (missing or not [B, 1|3, H, W]): " + "; ".join(problems)))
    return items or [Note("No samples arrays: image grids skipped.")]


def _quality_items(rows: pd.DataFrame, models: pd.DataFrame, styles: dict, out: Out) -> list[Note | Table | FigureRef]:
    table = quality_table(rows)
    if table.empty:
        return [Note("No quality rows (class_accuracy, class_diversity, fid, kid): quality table skipped.")]
    caption = (
        "Per model and scale w: class accuracy (share assigned to the requested class by an independent "
        "classifier), class diversity (mean pairwise same-class feature distance), domain FID and FID-infinity with "
        "their intervals, KID, the numbers of generated (n) and held-out real (n_real) images and the feature "
        f"extractor. {FID_CAPTION}"
    )
    items: list[Note | Table | FigureRef] = [Table(caption, table, name=out.name("quality"))]
    curves = quality_curves(table, "model", "w")
    if not curves.empty:
        labels = [m for m in models["model"] if m in set(curves["label"])]
        fig = quality_figure(curves, "w", labels, styles)
        caption = (
            "Class accuracy, class diversity and FID (bars: 95% interval at this n) vs guidance scale w, per model."
        )
        items.append(out.figure(fig, "quality_vs_scale", curves.rename(columns={"label": "model"}), caption))
    items.append(Note(teacher_quality_note(table)))
    return items

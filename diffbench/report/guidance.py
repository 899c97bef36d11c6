"""The guidance family's report (seed 004): classifier guidance (CG), and CG vs classifier-free guidance (CFG) on
the same network, noise and step budget.

Rows come from :mod:`diffbench.families.guidance`. Sample rows have ``method`` (``cg`` or ``cfg``), ``scale``,
``model`` (``teacher``), ``n`` and ``n_real``, with a ``samples`` array ``[R * K, C, H, W]`` in ``[-1, 1]`` (sample
``i`` of class ``i mod K``); at scale 0 both methods are the null-label model from the same noise. The guidance
classifier's rows have ``model = noisy_classifier`` and ``t``; timing rows (``sampling_seconds_per_image``, may be
absent) have ``method``, ``scale`` and ``model``.

The functions that shape rows are pure; :func:`sections` loads the arrays and saves the figures, per run when the
rows hold several, each figure skipped with a note when its rows are absent.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from diffbench.report import figures
from diffbench.report.parts import (
    FID_CAPTION,
    FID_INFINITY_METRICS,
    FID_KID_METRICS,
    MEASURED_WITH,
    NUM_CLASSES,
    Out,
    image_index,
    is_image_batch,
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

CG, CFG = "cg", "cfg"
METHOD_ORDER = (CG, CFG)  # other methods follow by name
METHOD_STYLES = {
    CG: {"color": "C0", "linestyle": "-", "marker": "o"},
    CFG: {"color": "C3", "linestyle": "--", "marker": "s"},
}
GRID_CLASSES = (0, 4, 9)
TIMING_METRIC = "sampling_seconds_per_image"
TABLE_METRICS = (
    "class_accuracy",
    "class_diversity",
    *FID_KID_METRICS,
    "network_evaluations",
    "classifier_evaluations",
    TIMING_METRIC,
    *FID_INFINITY_METRICS,
)
TRADEOFFS = (("class_diversity", "class_accuracy"), ("class_accuracy", "fid"))  # (x, y) per panel
CLASSIFIER_METRIC = "noisy_classifier_accuracy"
CLASSIFIER_LABEL = "noisy_classifier"


# --- rows -> frames and text (pure) ----------------------------------------------------------------------


def method_rows(df: pd.DataFrame) -> pd.DataFrame:
    """The rows of a guided sampler (those with a ``method``: sample and timing rows) with plain ``method`` (str)
    and ``scale`` (float) columns added."""
    rows = df[param(df, "method").notna()]
    return rows.assign(method=param(rows, "method").astype(str), scale=numeric_param(rows, "scale"))


def ordered_methods(methods: pd.Series) -> list[str]:
    """The distinct methods, CG then CFG, then any other by name."""
    present = set(methods)
    return [m for m in METHOD_ORDER if m in present] + sorted(present - set(METHOD_ORDER))


def method_table(df: pd.DataFrame) -> pd.DataFrame:
    """The CG-vs-CFG table: one line per (method, scale), methods in :func:`ordered_methods` order then by scale,
    with ``class_accuracy, class_diversity, fid, fid [ci], fid_inf [ci], fid_ci_low, fid_ci_high, kid, kid_std,
    network_evaluations, classifier_evaluations, sampling_seconds_per_image`` (from the timing rows of the same
    method and scale; blank when not timed), the FID-infinity columns, ``n``, ``n_real`` and ``extractor``. Repeated
    seeds averaged."""
    rows = method_rows(df)
    wide = wide_metrics(rows, ["method", "scale"], TABLE_METRICS)
    rank = {m: i for i, m in enumerate(ordered_methods(wide["method"]))}
    wide = wide.sort_values(
        ["method", "scale"], key=lambda c: c.map(rank) if c.name == "method" else c, kind="stable"
    ).reset_index(drop=True)
    return with_fid_interval(wide[["method", "scale", *TABLE_METRICS, *MEASURED_WITH]])


def classifier_curve(df: pd.DataFrame) -> pd.DataFrame:
    """``t, value``: the guidance classifier's held-out accuracy per noise level ``t`` (ascending; seeds averaged)."""
    rows = df[(df["metric"] == CLASSIFIER_METRIC) & param(df, "t").notna()]
    curve = rows.assign(t=numeric_param(rows, "t")).groupby("t", as_index=False)["value"].mean()
    return curve.sort_values("t").reset_index(drop=True)


def class_samples(samples: np.ndarray, cls: int, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """The samples of class ``cls`` from ``samples`` ``[R * K, ...]`` whose sample ``i`` has class ``i mod K``:
    ``[R, ...]``, in order."""
    if not 0 <= cls < num_classes:
        raise ValueError(f"cls must be in [0, {num_classes}), got {cls}")
    return np.asarray(samples)[cls::num_classes]


def comparison_note(table: pd.DataFrame) -> str:
    """Plainly, with the numbers: at each scale > 0 measured for both CG and CFG, which method reaches the higher
    class accuracy and at what cost in class diversity and FID; and whether CG and CFG at scale 0 (the same
    null-label model from the same noise, so identical samples) have equal FID. ``table`` as from
    :func:`method_table`."""
    methods = set(table["method"])
    if not {CG, CFG} <= methods:
        return f"Only {', '.join(sorted(methods)) or 'no method'} recorded: CG and CFG cannot be compared."
    wide = table.set_index(["method", "scale"])

    def value(method: str, scale: float, metric: str) -> float:
        return float(wide.at[(method, scale), metric]) if (method, scale) in wide.index else float("nan")

    def pair(scale: float, metric: str) -> tuple[float, float]:
        return value(CG, scale, metric), value(CFG, scale, metric)

    common = sorted(set(wide.loc[CG].index) & set(wide.loc[CFG].index))
    matched = [s for s in common if s > 0 and np.isfinite(pair(s, "class_accuracy")).all()]
    sentences = []
    if matched:
        wins: dict[str, list[float]] = {CG: [], CFG: []}
        details = []
        for s in matched:
            cg, cfg = pair(s, "class_accuracy")
            if cg != cfg:
                wins[CG if cg > cfg else CFG].append(s)
            numbers = ", ".join(
                f"{name} {format_value(pair(s, metric)[0]) or '-'} vs {format_value(pair(s, metric)[1]) or '-'}"
                for name, metric in (
                    ("class accuracy", "class_accuracy"),
                    ("diversity", "class_diversity"),
                    ("FID", "fid"),
                )
            )
            details.append(f"scale {s:g}: {numbers}")
        ties = len(matched) - len(wins[CG]) - len(wins[CFG])
        summary = (
            f"At the {len(matched)} scale(s) > 0 measured for both methods (cg vs cfg), CFG reaches the higher class "
            f"accuracy at {len(wins[CFG])} and CG at {len(wins[CG])}" + (f" ({ties} tied)" if ties else "") + "."
        )
        sentences += [summary, "; ".join(details) + "."]
        for method, other in ((CFG, CG), (CG, CFG)):
            won = wins[method]
            if won:
                lower = sum(value(method, s, "class_diversity") < value(other, s, "class_diversity") for s in won)
                higher = sum(value(method, s, "fid") > value(other, s, "fid") for s in won)
                sentences.append(
                    f"Where {method.upper()} is more accurate, its diversity is lower at {lower} of {len(won)} "
                    f"scale(s) and its FID higher at {higher} of {len(won)}."
                )
    else:
        sentences.append("No scale > 0 has class_accuracy for both methods: accuracy cannot be compared.")
    if 0.0 in common and np.isfinite(pair(0.0, "fid")).all():
        cg, cfg = pair(0.0, "fid")
        same = bool(np.isclose(cg, cfg, rtol=1e-6, atol=1e-9))
        verdict = (
            "equal, as identical samples must give"
            if same
            else f"they differ by {abs(cg - cfg):.3g}, though both are the null-label model from the same noise"
        )
        sentences.append(
            f"At scale 0 (both the null-label model, same noise) FID is cg {cg:.6g} and cfg {cfg:.6g}: {verdict}."
        )
    else:
        sentences.append("Scale 0 has no FID for both methods: CG and CFG at scale 0 cannot be checked for equality.")
    return " ".join(sentences)


# --- sections (load arrays, save figures) ---------------------------------------------------------------


def sections(df: pd.DataFrame, run_dir: Path) -> list[Section]:
    """The guidance report: per-class sample grids, quality vs scale, the CG-vs-CFG table with its note, the
    accuracy-diversity trade-off and the noisy classifier's accuracy vs noise level."""
    return per_run_sections(df, Path(run_dir), "guidance", _run_sections)


def _run_sections(df: pd.DataFrame, out: Out, suffix: str) -> list[Section]:
    rows = method_rows(df)
    table = method_table(df)
    parts = [
        ("Per-class samples", _class_grid_items(rows, out)),
        ("Quality vs scale", _vs_scale_items(table, out)),
        ("CG vs CFG", _table_items(table, out)),
        ("Accuracy-diversity trade-off", _tradeoff_items(table, out)),
        ("Noisy classifier", _classifier_items(df, out)),
    ]
    return [Section(title + suffix, items) for title, items in parts]


def _label(method: str, scale: float) -> str:
    return f"{method} s={scale:g}"


def _class_grid_items(rows: pd.DataFrame, out: Out) -> list[Note | FigureRef]:
    artifacts = latest_artifacts(rows, "samples", ["method", "scale"])
    loaded, sources, problems = {}, {}, []
    for method in ordered_methods(artifacts["method"]):
        for line in artifacts[artifacts["method"] == method].sort_values("scale").itertuples(index=False):
            array, problem = load_array(out.run_dir, line.artifact, is_image_batch)
            if problem:
                problems.append(problem)
                continue
            loaded[_label(method, line.scale)] = array
            sources[_label(method, line.scale)] = {"method": method, "scale": line.scale, "artifact": line.artifact}
    items: list[Note | FigureRef] = []
    if problems:
        items.append(Note("Sample arrays skipped (missing or not [B, 1|3, H, W]): " + "; ".join(problems)))
    if not loaded:
        return [*items, Note("No samples arrays: per-class grids skipped.")]
    for cls in GRID_CLASSES:
        images = {label: class_samples(a, cls) for label, a in loaded.items() if len(class_samples(a, cls))}
        if not images:
            items.append(Note(f"No samples of class {cls}: its grid skipped."))
            continue
        per_row = max(len(a) for a in images.values())
        data = image_index(images, sources).assign(cls=cls)
        caption = (
            f"Class {cls}: one row per method and scale, its samples of class {cls} (samples i with i mod "
            f"{NUM_CLASSES} = {cls}) from the same noise; [-1, 1] shown as [0, 1]."
        )
        items.append(out.figure(figures.image_rows(images, per_row), f"class_{cls}", data, caption))
    return items


def _vs_scale_items(table: pd.DataFrame, out: Out) -> list[Note | FigureRef]:
    curves = quality_curves(table, "method", "scale")
    if curves.empty:
        return [Note("No class_accuracy, class_diversity or fid rows per method: quality plot skipped.")]
    labels = ordered_methods(curves["label"])
    fig = quality_figure(curves, "scale", labels, METHOD_STYLES)
    caption = (
        "Class accuracy, class diversity and FID (bars: 95% interval at this n) vs guidance scale, one line per method."
    )
    return [out.figure(fig, "quality_vs_scale", curves.rename(columns={"label": "method"}), caption)]


def _table_items(table: pd.DataFrame, out: Out) -> list[Note | Table]:
    if table.empty:
        return [Note("No rows with a guidance method: CG-vs-CFG table skipped.")]
    caption = (
        "Per method and scale: class accuracy, class diversity, domain FID and FID-infinity with their intervals, "
        "KID, denoiser and classifier evaluations per sample, sampling seconds per image where timed (blank "
        f"otherwise), the sample counts n and n_real and the feature extractor. {FID_CAPTION}"
    )
    return [Table(caption, table, name=out.name("methods")), Note(comparison_note(table))]


def _tradeoff_items(table: pd.DataFrame, out: Out) -> list[Note | FigureRef]:
    columns = ["method", "scale", *dict.fromkeys(c for xy in TRADEOFFS for c in xy)]
    points = table[columns].dropna(subset=["class_accuracy"])
    if points.empty:
        return [Note("No class_accuracy rows: trade-off plot skipped.")]
    labels = ordered_methods(points["method"])
    fig = figures.tradeoff_panels(points.rename(columns={"method": "label"}), TRADEOFFS, labels, "scale", METHOD_STYLES)
    caption = (
        "Trade-offs of guidance: class accuracy vs class diversity, and FID vs class accuracy, one line per method "
        "through its scales (each point labelled with its scale)."
    )
    return [out.figure(fig, "tradeoff", points, caption)]


def _classifier_items(df: pd.DataFrame, out: Out) -> list[Note | FigureRef]:
    curve = classifier_curve(df)
    if curve.empty:
        return [Note(f"No {CLASSIFIER_METRIC} rows: classifier plot skipped.")]
    curves = curve.assign(label=CLASSIFIER_LABEL, metric=CLASSIFIER_METRIC)
    chance = {CLASSIFIER_METRIC: 1 / NUM_CLASSES}
    fig = figures.line_panels(
        curves, "t", [CLASSIFIER_METRIC], [CLASSIFIER_LABEL], references=chance, reference_label="chance", ncols=1
    )
    caption = (
        f"Held-out accuracy of the guidance classifier vs noise level t (dotted: chance, 1/{NUM_CLASSES}); where it "
        "falls to chance its gradient no longer carries the class."
    )
    return [out.figure(fig, "noisy_classifier", curve, caption)]

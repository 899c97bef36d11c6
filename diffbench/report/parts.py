"""Pieces shared by the image families' report modules (cfg, guidance, samplers, size_factors, snr_paths):
parameter columns, the latest array of a model, quality tables with their FID interval, FID-infinity and paired
FID difference, image indexes, per-run section sets, quality curves.

Pure frame helpers plus :class:`Out` (where one run's figures go); no family is named here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from diffbench.report import figures
from diffbench.report.sections import EXTRACTOR, PARAM_PREFIX, FigureRef, Section, format_value
from diffbench.results import safe_name

if TYPE_CHECKING:
    from matplotlib.figure import Figure

NUM_CLASSES = 10  # digits: sample i of a samples array has class i mod NUM_CLASSES
FID_INFINITY_METRICS = ("fid_infinity", "fid_infinity_ci_low", "fid_infinity_ci_high", "fid_infinity_residual")
FID_DELTA_METRICS = ("fid_delta", "fid_delta_ci_low", "fid_delta_ci_high")
FID_KID_METRICS = ("fid", "fid_ci_low", "fid_ci_high", "kid", "kid_std")  # FID with its interval at n, KID +- std
QUALITY_METRICS = (
    "class_accuracy",
    "class_diversity",
    *FID_KID_METRICS,
    *FID_INFINITY_METRICS,
)
QUALITY_PLOT = ("class_accuracy", "class_diversity", "fid")
SIZE_PARAMS = ("n", "n_real")
MEASURED_WITH = (*SIZE_PARAMS, EXTRACTOR)  # what a FID was measured with: its sample sizes and feature extractor
FID_INTERVAL = "fid [ci]"
FID_INFINITY_INTERVAL = "fid_inf [ci]"
FID_DELTA_INTERVAL = "fid_delta [ci]"
# What each interval estimates (metrics/fid.py), said once under every FID table.
FID_CAPTION = (
    "fid [ci]: FID with the 95% interval of FID at these sample sizes (n generated, n_real real; half-sampling both "
    "sets), which covers FID's expected value at this n, not FID at infinite n; fid_inf [ci]: FID extrapolated to "
    "infinitely many generated samples (a line in 1/N over subset sizes, real statistics fixed) with its 95% "
    "interval, fid_infinity_residual the RMS residual of that fit."
)
DELTA_CAPTION = (
    "fid_delta [ci]: FID of the model minus its reference's at the same n, with a 95% interval from paired "
    "half-sampling (both drawn from the same noise, indices resampled jointly); an interval that excludes 0 is a "
    "difference beyond sampling noise at this n."
)
# Verdicts of a paired FID difference (:func:`delta_verdict`): the model's FID vs its reference's.
DELTA_LOWER, DELTA_HIGHER = "excludes 0: lower", "excludes 0: higher"
DELTA_TIED = "includes 0: not distinguishable at this n"
DELTA_UNJUDGED, DELTA_NOT_MEASURED = "not judged (interval missing)", "not measured"


# --- -------------------------------------------------------------


def param(df: pd.DataFrame, name: str) -> pd.Series:
    """Column ``param.<name>``, or all-missing when no row has that parameter."""
    column = PARAM_PREFIX + name
    return df[column] if column in df else pd.Series(None, index=df.index, dtype=object)


def numeric_param(df: pd.DataFrame, name: str) -> pd.Series:
    return pd.to_numeric(param(df, name), errors="coerce").astype(float)


def latest_artifacts(rows: pd.DataFrame, metric: str, keys: Sequence[str]) -> pd.DataFrame:
    """The array rows of ``metric``, one per distinct ``keys`` (the latest ``time`` wins)."""
    found = rows[(rows["metric"] == metric) & rows["artifact"].notna()]
    return found.sort_values("time", kind="stable", na_position="first").drop_duplicates(list(keys), keep="last")


def extractor(df: pd.DataFrame) -> pd.Series:
    """Column ``extractor`` (from the rows' context), or all-missing when the frame has none."""
    return df[EXTRACTOR] if EXTRACTOR in df else pd.Series(None, index=df.index, dtype=object)


def wide_metrics(rows: pd.DataFrame, keys: Sequence[str], metrics: Sequence[str]) -> pd.DataFrame:
    """One line per distinct ``keys`` among the scalar rows of ``metrics``: the keys, ``n``, ``n_real`` and
    ``extractor`` (their first recorded value; blank when absent), then one column per metric in ``metrics`` order,
    repeated seeds averaged, blank where not recorded."""
    keys = list(keys)
    chosen = rows[rows["metric"].isin(metrics) & rows["artifact"].isna()]
    if chosen.empty:
        return pd.DataFrame(columns=[*keys, *MEASURED_WITH, *metrics])
    wide = chosen.groupby([*keys, "metric"])["value"].mean().unstack("metric")  # no unrecorded key combinations
    measured = chosen.assign(**{p: param(chosen, p) for p in SIZE_PARAMS}, **{EXTRACTOR: extractor(chosen)})
    sizes = measured.groupby(keys)[list(MEASURED_WITH)].first()
    return sizes.join(wide.reindex(columns=list(metrics))).reset_index()


def intervals_overlap(a: tuple[float, float], b: tuple[float, float]) -> bool | None:
    """Whether the closed intervals ``a`` and ``b`` (``(low, high)``) share a point; ``None`` when an end is
    missing."""
    if not np.isfinite([*a, *b]).all():
        return None
    return bool(a[0] <= b[1] and b[0] <= a[1])


def interval_text(value: object, low: object, high: object, signed: bool = False) -> str:
    """``"12.3 [11.8, 12.9]"``; blank where ``value`` is missing, the value alone where an end of its interval is.
    ``signed``: a ``+`` before positive numbers (a difference: ``"+1.5 [+0.2, +2.8]"``)."""

    def text(x: object) -> str:
        return ("+" if signed and pd.notna(x) and float(x) > 0 else "") + format_value(x)

    if value is None or pd.isna(value):
        return ""
    interval = f" [{text(low)}, {text(high)}]" if pd.notna(low) and pd.notna(high) else ""
    return text(value) + interval


def _with_text(
    table: pd.DataFrame, after: str, name: str, columns: Sequence[str], signed: bool = False
) -> pd.DataFrame:
    """``table`` with a text column ``name`` (:func:`interval_text` of ``columns`` = value, low, high) inserted
    after column ``after``."""
    texts = [interval_text(*(line.get(c, np.nan) for c in columns), signed=signed) for _, line in table.iterrows()]
    out = table.copy()
    out.insert(out.columns.get_loc(after) + 1, name, pd.Series(texts, index=table.index, dtype=object))
    return out


def with_fid_interval(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` with a text column ``fid [ci]`` (``"12.3 [11.8, 12.9]"``) inserted after ``fid``, from ``fid``,
    ``fid_ci_low`` and ``fid_ci_high``; blank where FID is missing, the FID alone where its interval is. When the
    table has a ``fid_infinity`` column, ``fid_inf [ci]`` (from ``fid_infinity`` and its interval) follows it."""
    if "fid" not in table:
        return table
    out = _with_text(table, "fid", FID_INTERVAL, ("fid", "fid_ci_low", "fid_ci_high"))
    if "fid_infinity" in table:
        out = _with_text(out, FID_INTERVAL, FID_INFINITY_INTERVAL, FID_INFINITY_METRICS[:3])
    return out


def delta_verdict(delta: object, low: object, high: object) -> str:
    """A paired FID difference (model minus reference) in words: ``excludes 0: lower`` / ``excludes 0: higher``
    (the model's FID is lower / higher beyond sampling noise at this n), ``includes 0: not distinguishable at this
    n``, ``not judged`` (an end of the interval is missing) or ``not measured``."""
    if delta is None or pd.isna(delta):
        return DELTA_NOT_MEASURED
    if low is None or high is None or pd.isna(low) or pd.isna(high):
        return DELTA_UNJUDGED
    if float(high) < 0:
        return DELTA_LOWER
    if float(low) > 0:
        return DELTA_HIGHER
    return DELTA_TIED


def paired_delta(line: Mapping[str, object]) -> tuple[str, str]:
    """``(text, verdict)`` of a line's ``fid_delta``, ``fid_delta_ci_low`` and ``fid_delta_ci_high``: the signed
    ``"+1.5 [+0.2, +2.8]"`` (blank when not measured) and :func:`delta_verdict`."""
    values = [line.get(c, np.nan) for c in FID_DELTA_METRICS]
    return interval_text(*values, signed=True), delta_verdict(*values)


def load_array(
    run_dir: Path, rel: str, valid: Callable[[np.ndarray], bool] | None = None
) -> tuple[np.ndarray | None, str | None]:
    """The array at ``run_dir / rel``, or ``None`` and a note naming the path and the error, or the array's shape
    when ``valid`` (e.g. :func:`is_image_batch`) refuses it."""
    try:
        array = np.load(Path(run_dir) / rel, allow_pickle=False)
    except (OSError, ValueError) as exc:
        return None, f"{rel} ({type(exc).__name__})"
    if valid is not None and not valid(array):
        return None, f"{rel}: shape {array.shape}"
    return array, None


def is_image_batch(array: np.ndarray) -> bool:
    """Images ``[B, C, H, W]`` with one (grey) or three (RGB) channels."""
    return array.ndim == 4 and array.shape[1] in (1, 3)


def is_trajectory_batch(array: np.ndarray) -> bool:
    """Trajectories ``[S + 1, B, d]`` with at least two principal coordinates."""
    return array.ndim == 3 and array.shape[2] >= 2


def image_index(images: Mapping[str, np.ndarray], sources: Mapping[str, Mapping[str, object]]) -> pd.DataFrame:
    """The data behind an image figure: one line per drawn image (``row`` label, position ``image``, the row's
    ``sources`` entries such as its artifact and scale) with its pixel minimum, mean and maximum; the pixels stay in
    the ``.npy``."""
    lines = [
        {"row": label, "image": i, **sources.get(label, {}), "min": a.min(), "mean": a.mean(), "max": a.max()}
        for label, batch in images.items()
        for i, a in enumerate(np.asarray(batch, dtype=float))
    ]
    return pd.DataFrame(lines)


@dataclass
class Out:
    """Where one run's figures and tables go: ``figures/<prefix>_<name><tag>.png`` (with its CSV) and
    ``tables/<prefix>_<name><tag>.csv``; the tag is ``_<run id>`` when the report holds several runs."""

    run_dir: Path
    prefix: str
    tag: str = ""

    def name(self, name: str) -> str:
        return f"{self.prefix}_{name}{self.tag}"

    def figure(self, fig: Figure, name: str, data: pd.DataFrame, caption: str) -> FigureRef:
        return FigureRef(figures.save_figure(fig, self.run_dir, self.name(name), data), caption)


RunSections = Callable[[pd.DataFrame, Out, str], list[Section]]


def per_run_sections(df: pd.DataFrame, run_dir: Path, prefix: str, build: RunSections) -> list[Section]:
    """``build(rows, out, title_suffix)`` once for all rows, or once per run id (figures and titles tagged with
    the run id) when the rows come from several runs."""
    runs = sorted(df["run_id"].dropna().unique())
    if len(runs) <= 1:
        return build(df, Out(Path(run_dir), prefix), "")
    built = []
    for run in runs:
        built += build(df[df["run_id"] == run], Out(Path(run_dir), prefix, "_" + safe_name(run)), f" ({run})")
    return built


def quality_curves(table: pd.DataFrame, label: str, x: str) -> pd.DataFrame:
    """Long ``label, <x>, metric, value, low, high`` of :data:`QUALITY_PLOT` from a quality table (one line per
    ``(label, x)`` with the metric columns, ``fid_ci_low`` and ``fid_ci_high``); ``low`` and ``high`` are the FID's
    interval at this n, blank for the other metrics."""
    present = [m for m in QUALITY_PLOT if m in table]
    ids = [label, x, "fid_ci_low", "fid_ci_high"]
    long = table.melt(id_vars=ids, value_vars=present, var_name="metric").dropna(subset=["value"])
    long = long.rename(columns={label: "label", "fid_ci_low": "low", "fid_ci_high": "high"})
    long.loc[long["metric"] != "fid", ["low", "high"]] = np.nan
    return long[["label", x, "metric", "value", "low", "high"]].reset_index(drop=True)


def quality_figure(curves: pd.DataFrame, x: str, labels: Sequence[str], styles: Mapping[str, dict]) -> Figure:
    """:data:`QUALITY_PLOT` vs ``x``, one line per label, FID with its interval as error bars."""
    metrics = [m for m in QUALITY_PLOT if m in set(curves["metric"])]
    fig = figures.line_panels(curves, x, metrics, labels, styles, ncols=3)
    figures.add_error_bars(fig, curves, x, metrics, labels, styles)
    return fig

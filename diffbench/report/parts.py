"""Pieces shared by the image families' report modules (cfg, guidance): parameter columns, the latest array of
a model, quality tables with their FID interval, image indexes, per-run section sets, quality curves.

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
from diffbench.report.sections import PARAM_PREFIX, FigureRef, Section, format_value
from diffbench.results import safe_name

if TYPE_CHECKING:
    from matplotlib.figure import Figure

NUM_CLASSES = 10  # digits: sample i of a samples array has class i mod NUM_CLASSES
QUALITY_METRICS = ("class_accuracy", "class_diversity", "fid", "fid_ci_low", "fid_ci_high", "kid", "kid_std")
QUALITY_PLOT = ("class_accuracy", "class_diversity", "fid")
SIZE_PARAMS = ("n", "n_real")
FID_INTERVAL = "fid [ci]"


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


def wide_metrics(rows: pd.DataFrame, keys: Sequence[str], metrics: Sequence[str]) -> pd.DataFrame:
    """One line per distinct ``keys`` among the scalar rows of ``metrics``: the keys, ``n`` and ``n_real`` (their
    first recorded value; blank when absent), then one column per metric in ``metrics`` order, repeated seeds
    averaged, blank where not recorded."""
    keys = list(keys)
    chosen = rows[rows["metric"].isin(metrics) & rows["artifact"].isna()]
    if chosen.empty:
        return pd.DataFrame(columns=[*keys, *SIZE_PARAMS, *metrics])
    wide = chosen.groupby([*keys, "metric"])["value"].mean().unstack("metric")  # no unrecorded key combinations
    sizes = chosen.assign(**{p: param(chosen, p) for p in SIZE_PARAMS}).groupby(keys)[list(SIZE_PARAMS)].first()
    return sizes.join(wide.reindex(columns=list(metrics))).reset_index()


def intervals_overlap(a: tuple[float, float], b: tuple[float, float]) -> bool | None:
    """Whether the closed intervals ``a`` and ``b`` (``(low, high)``) share a point; ``None`` when an end is
    missing."""
    if not np.isfinite([*a, *b]).all():
        return None
    return bool(a[0] <= b[1] and b[0] <= a[1])


def with_fid_interval(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` with a text column ``fid [ci]`` (``"12.3 [11.8, 12.9]"``) inserted after ``fid``, from ``fid``,
    ``fid_ci_low`` and ``fid_ci_high``; blank where FID is missing, the FID alone where its interval is."""
    if "fid" not in table:
        return table

    def text(line: pd.Series) -> str:
        fid, low, high = (line.get(c, np.nan) for c in ("fid", "fid_ci_low", "fid_ci_high"))
        if pd.isna(fid):
            return ""
        interval = f" [{format_value(low)}, {format_value(high)}]" if pd.notna(low) and pd.notna(high) else ""
        return format_value(fid) + interval

    out = table.copy()
    out.insert(out.columns.get_loc("fid") + 1, FID_INTERVAL, table.apply(text, axis=1) if len(table) else [])
    return out


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
    bootstrap interval, blank for the other metrics."""
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

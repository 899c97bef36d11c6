"""Build a run's report from its result rows: ``summary.csv``, ``report.md``, ``index.html`` and ``figures/``.

A report is a header (run ids, profiles, devices, versions, counts, failed cells), then one part per family:
its registered sections (``FAMILY_SECTIONS``), then the generic table of every metric by cell parameters.

Adding a family's sections: write ``def my_family_sections(df, run_dir) -> list[Section]`` and register it with
``FAMILY_SECTIONS["my_family"] = my_family_sections``. ``df`` holds that family's rows (one per row; columns
``family, cell, run_id, profile, device, seed, metric, value, artifact`` and ``param.<name>`` per cell
parameter); ``run_dir`` is where ``artifact`` paths resolve and where figures go (use ``figures.save_figure``).
"""

from __future__ import annotations

import html
import json
import math
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from diffbench.report import figures
from diffbench.results import FAILURES_FILE, load_run

if TYPE_CHECKING:
    from diffbench.data import GMMSpec

SUMMARY_FILE = "summary.csv"
MARKDOWN_FILE = "report.md"
HTML_FILE = "index.html"
TABLES_DIR = "tables"
PARAM_PREFIX = "param."
MAX_TABLE_ROWS = 200  # longer tables are cut in the page; the full table is always in tables/<name>.csv
ROW_COLUMNS = ("family", "cell", "run_id", "profile", "device", "seed", "metric", "value", "artifact", "time")


# --- what a section is made of ----------------------------------------------------------------------------


@dataclass
class Note:
    """A paragraph of plain text (escaped in HTML)."""

    text: str


@dataclass
class Table:
    """A table; with a ``name`` its full contents are also written to ``tables/<name>.csv`` and linked."""

    caption: str
    frame: pd.DataFrame
    name: str | None = None


@dataclass
class FigureRef:
    """A saved figure: ``path`` relative to the run dir (``figures/x.png``); its data sits beside it as .csv."""

    path: str
    caption: str


@dataclass
class Section:
    """A titled block of a family's report; items are rendered in order."""

    title: str
    items: list[Note | Table | FigureRef] = field(default_factory=list)


SectionBuilder = Callable[[pd.DataFrame, Path], list[Section]]


# --- rows as a data frame ---------------------------------------------------------------------------------


def rows_to_frame(rows: Iterable[dict]) -> pd.DataFrame:
    """One DataFrame row per result row; ``params`` flattened into ``param.<name>`` columns (lists and dicts
    as JSON text so they stay hashable), ``value`` as float (NaN where the row holds null = non-finite)."""
    records = []
    for row in rows:
        record = {key: row.get(key) for key in ROW_COLUMNS}
        params = row.get("params") or {}
        record["params_key"] = json.dumps(params, sort_keys=True)
        for name, value in params.items():
            record[PARAM_PREFIX + name] = json.dumps(value) if isinstance(value, (list, dict)) else value
        records.append(record)
    df = pd.DataFrame(records) if records else pd.DataFrame(columns=[*ROW_COLUMNS, "params_key"])
    df["value"] = pd.to_numeric(df["value"], errors="coerce").astype(float)
    for column in (c for c in df.columns if c.startswith(PARAM_PREFIX)):
        present = [r[column] for r in records if r.get(column) is not None]
        if present and all(isinstance(v, int) and not isinstance(v, bool) for v in present):
            # Integer parameters stay integers (nullable) where other families' rows leave them blank.
            df[column] = df[column].astype("Int64")
    return df


def latest_rows(df: pd.DataFrame) -> pd.DataFrame:
    """Drop rows superseded by a later recording of the same (run, family, cell, params, metric, seed), e.g.
    a cell rerun into the same run id; the latest ``time`` wins."""
    key = ["run_id", "family", "cell", "params_key", "metric", "seed"]
    return df.sort_values("time", kind="stable", na_position="first").drop_duplicates(key, keep="last")


def param_columns(df: pd.DataFrame) -> list[str]:
    """The ``param.*`` columns that hold at least one value in ``df``, in the order the cells declare them."""
    return [c for c in df.columns if c.startswith(PARAM_PREFIX) and df[c].notna().any()]


def summary_frame(df: pd.DataFrame) -> pd.DataFrame:
    """The ``summary.csv`` table: one line per (family, run, cell params, metric, seed) with its value."""
    params = param_columns(df)
    columns = ["family", "run_id", "cell", *params, "metric", "value", "seed", "device", "profile", "artifact"]
    return df.sort_values(["family", "run_id", "cell", "params_key", "metric"], kind="stable")[columns]


def _sort_key(column: pd.Series) -> pd.Series:
    return column if pd.api.types.is_numeric_dtype(column) else column.map(str)


def generic_table(df: pd.DataFrame) -> pd.DataFrame:
    """Every metric of one family as a column, one line per distinct cell parameter set (plus ``run_id`` when
    rows come from several runs). Repeated measurements of a cell (several seeds) are averaged; a blank means
    the cell did not record that metric or recorded a non-finite value."""
    index = (["run_id"] if df["run_id"].nunique() > 1 else []) + param_columns(df)
    if not index:
        index = ["cell"]
    df = df.sort_values(index, key=_sort_key, na_position="last", kind="stable")
    keys = df[index].astype(object).where(df[index].notna(), "")
    df = df.assign(_key=list(map(tuple, keys.to_numpy())))
    wide = df.pivot_table(index="_key", columns="metric", values="value", aggfunc="mean", sort=False, dropna=False)
    wide = wide[sorted(wide.columns)]
    head = pd.DataFrame(list(wide.index), columns=[c.removeprefix(PARAM_PREFIX) for c in index])
    return pd.concat([head, wide.reset_index(drop=True)], axis=1)


def generic_section(df: pd.DataFrame, run_dir: Path) -> list[Section]:
    """The fallback for every family: all metrics by cell parameters (see :func:`generic_table`)."""
    family = df["family"].iloc[0]
    table = Table(f"{family}: mean value per metric and cell parameters", generic_table(df), name=family)
    return [Section("All metrics", [table])]


# --- batch_configs (seed 002: does 10x batch with a scaled LR converge like the baseline?) -------------------

CONVERGENCE_METRICS = ("mmd_rbf", "wasserstein")
STABILITY_WINDOW = 5
TIMING_METRICS = ("epoch_seconds", "step_seconds")
# Distances and losses fall by orders of magnitude early in training: a log axis keeps the late epochs readable.
LOG_SCALE_METRICS = (
    "mmd_rbf",
    "mmd_linear",
    "wasserstein",
    "test_loss",
    "train_loss",
    "sample_std",
    "radius_std",
    "sample_range",
)
CURVE_METRICS = (
    "mmd_rbf",
    "mmd_linear",
    "wasserstein",
    "test_loss",
    "train_loss",
    "sample_std",
    "modes_covered",
    "radius_mean",
    "radius_std",
    "sample_range",
    "high_quality_fraction",
    "mode_balance",
)


def convergence_epoch(epochs: Sequence[float], values: Sequence[float], rel: float = 0.1) -> int | None:
    """First checkpoint epoch whose value is within ``rel`` of the final value.

    Checkpoints are taken in epoch order; the final value ``v_final`` is the value at the last epoch. The
    result is the smallest epoch ``e`` with ``|v_e - v_final| <= rel * |v_final|`` (it need not stay there
    afterwards). Non-finite values never qualify; ``None`` when there are no checkpoints or ``v_final`` is not
    finite. Example: epochs ``[1, 2, 3]``, values ``[10, 5.4, 5]`` -> ``2`` (``|5.4 - 5| = 0.4 <= 0.5``).
    """
    order = np.argsort(np.asarray(epochs, dtype=float), kind="stable")
    e = np.asarray(epochs, dtype=float)[order]
    v = np.asarray(values, dtype=float)[order]
    if len(v) == 0 or not math.isfinite(v[-1]):
        return None
    within = np.isfinite(v) & (np.abs(v - v[-1]) <= rel * abs(v[-1]))
    return int(e[np.argmax(within)])  # v[-1] itself always qualifies, so argmax finds a True


def coefficient_of_variation(values: Sequence[float]) -> float:
    """Coefficient of variation ``std / |mean|`` (population std, ``ddof = 0``): scale-free spread, so
    ``0`` is perfectly stable. NaN for an empty input, a non-finite value, or a zero mean.
    Example: ``[1, 3]`` -> ``1 / 2 = 0.5``."""
    v = np.asarray(values, dtype=float)
    if len(v) == 0 or not np.isfinite(v).all() or v.mean() == 0:
        return float("nan")
    return float(v.std() / abs(v.mean()))


def _with_labels(df: pd.DataFrame) -> pd.DataFrame:
    """Add ``label`` (the config id; with rows from several runs the run id is appended, since the same config
    may appear in each) and make sure ``param.epoch`` exists (a timing-only report has none)."""
    labels = (df["param.config"] if "param.config" in df else df["cell"]).astype(str)
    if df["run_id"].nunique() > 1:
        labels = labels + " (" + df["run_id"].astype(str) + ")"
    df = df.assign(label=labels)
    return df if "param.epoch" in df else df.assign(**{"param.epoch": np.nan})


def _ordered_labels(df: pd.DataFrame) -> list[str]:
    """Labels ordered by batch size, then effective learning rate, then name (the baseline batch first)."""
    firsts = df.drop_duplicates("label")
    order = [c for c in ("param.batch_size", "param.effective_lr") if c in firsts] + ["label"]
    return list(firsts.sort_values(order, key=_sort_key, kind="stable")["label"])


def _metric_series(group: pd.DataFrame, metric: str) -> pd.Series:
    """``metric`` of one config as a Series indexed by epoch (repeated seeds averaged), in epoch order."""
    rows = group[group["metric"] == metric]
    return rows.groupby("param.epoch")["value"].mean().sort_index()


def batch_config_table(df: pd.DataFrame) -> pd.DataFrame:
    """One line per batch configuration: its hyperparameters, the final-checkpoint value of every metric,
    ``converged_epoch_<m>`` (:func:`convergence_epoch`, rel 0.1) and ``cv_last5_<m>``
    (:func:`coefficient_of_variation` over the last 5 checkpoints) for ``m`` in mmd_rbf and wasserstein, and
    mean ``epoch_seconds`` / ``step_seconds`` when the timing pass recorded them.

    ``df`` is the family's rows as built by :func:`rows_to_frame` (with ``param.config`` and ``param.epoch``).
    """
    df = _with_labels(df)
    has_epoch = df["param.epoch"].notna()
    checkpoints = df[has_epoch & df["artifact"].isna()]
    timing = df[~has_epoch & df["metric"].isin(TIMING_METRICS)]
    lines = []
    for label in _ordered_labels(df):
        group = checkpoints[checkpoints["label"] == label]
        first = df[df["label"] == label].iloc[0]
        line: dict[str, object] = {"config": label}
        for name in ("batch_size", "lr_rule", "lr", "effective_lr"):
            line[name] = first.get(PARAM_PREFIX + name)
        line["final_epoch"] = int(group["param.epoch"].max()) if len(group) else None
        for metric in CONVERGENCE_METRICS:
            series = _metric_series(group, metric)
            line[f"converged_epoch_{metric}"] = convergence_epoch(series.index, series.to_numpy())
            line[f"cv_last{STABILITY_WINDOW}_{metric}"] = coefficient_of_variation(series.iloc[-STABILITY_WINDOW:])
        for metric in TIMING_METRICS:
            times = timing[(timing["label"] == label) & (timing["metric"] == metric)]["value"]
            if len(times):
                line[metric] = times.mean()
        for metric in _ordered_metrics(group["metric"].unique()):
            line[metric] = _metric_series(group, metric).iloc[-1]  # the value at the final checkpoint
        lines.append(line)
    return pd.DataFrame(lines)


def _ordered_metrics(metrics: Iterable[str]) -> list[str]:
    """Known curve metrics in their reading order, then any others alphabetically."""
    metrics = set(metrics)
    return [m for m in CURVE_METRICS if m in metrics] + sorted(metrics - set(CURVE_METRICS))


def batch_configs_sections(df: pd.DataFrame, run_dir: Path) -> list[Section]:
    """Learning curves of the four configurations, their final samples over the true GMM, and the
    convergence table."""
    from diffbench.data import GMM  # imports torch: only when this family is reported

    df = _with_labels(df)
    labels = _ordered_labels(df)
    curves = df[df["param.epoch"].notna() & df["artifact"].isna()]
    curves = curves.rename(columns={"param.epoch": "epoch"})[["label", "epoch", "metric", "value"]]
    curves = curves.astype({"epoch": int})
    curves = curves.groupby(["label", "epoch", "metric"], as_index=False)["value"].mean()
    items: list[Note | Table | FigureRef] = []

    metrics = _ordered_metrics(curves["metric"].unique())
    if metrics:
        references = {"radius_mean": GMM.radius, "modes_covered": float(GMM.num_components)}
        log_scale = [m for m in LOG_SCALE_METRICS if (curves.loc[curves["metric"] == m, "value"] > 0).all()]
        fig = figures.learning_curves(curves, metrics, labels, references, log_scale)
        wide = curves.pivot_table(index=["label", "epoch"], columns="metric", values="value", dropna=False)
        data = wide[metrics].reset_index().rename(columns={"label": "config"})
        path = figures.save_figure(fig, run_dir, "batch_configs_learning_curves", data)
        caption = (
            "Learning curves: each metric vs checkpoint epoch, configurations overlaid (dashed: the true GMM's value)."
        )
        if log_scale:
            caption += f" Log y axis: {', '.join(log_scale)}."
        items.append(FigureRef(path, caption))

    items += _gmm_scatter(df[df["metric"] == "samples"], labels, run_dir, GMM)

    table = batch_config_table(df)
    items.append(
        Table(
            f"Per configuration: final-checkpoint metric values; converged_epoch_* = first checkpoint within 10% of "
            f"the final value; cv_last{STABILITY_WINDOW}_* = std/|mean| over the last {STABILITY_WINDOW} checkpoints.",
            table,
            name="batch_configs_summary",
        )
    )
    return [Section("Large-batch convergence", items)]


def _gmm_scatter(samples_rows: pd.DataFrame, labels: list[str], run_dir: Path, gmm: GMMSpec) -> list[Note | FigureRef]:
    """The final checkpoint's samples of each config over 2,000 points of the true GMM (seed 0)."""
    import torch

    samples, titles, missing, records = {}, {}, [], []
    for label in labels:
        rows = samples_rows[(samples_rows["label"] == label) & samples_rows["artifact"].notna()]
        if rows.empty:
            continue
        final = rows.sort_values("param.epoch", na_position="first").iloc[-1]
        path = Path(run_dir) / str(final["artifact"])
        if not path.is_file():
            missing.append(f"{label}: {final['artifact']}")
            continue
        points = np.load(path).reshape(-1, 2)
        samples[label] = points
        epoch = final.get("param.epoch")
        titles[label] = f"{label}\nepoch {_format_value(epoch)}, n={len(points)}"
        records.append(pd.DataFrame({"source": label, "epoch": epoch, "x": points[:, 0], "y": points[:, 1]}))
    items: list[Note | FigureRef] = []
    if missing:
        items.append(Note("Sample arrays not found (scatter skipped for these): " + "; ".join(missing)))
    if not samples:
        return items
    reference = gmm.sample(2000, torch.Generator().manual_seed(0))[0].numpy()
    means = gmm.means.numpy()
    # Same limits for every panel: the true data's extent, widened (to at most 3x the radius) for strays.
    coords = np.abs(np.concatenate(list(samples.values())))
    coords = coords[np.isfinite(coords)]
    spread = np.quantile(coords, 0.99) if len(coords) else 0.0
    lim = float(min(max(gmm.radius + 4 * gmm.std, spread), 3 * gmm.radius)) * 1.1
    for label, points in samples.items():
        outside = int((~(np.abs(points) <= lim)).any(axis=1).sum())  # non-finite points count as outside
        if outside:
            titles[label] += f", {outside} outside"
    fig = figures.scatter_over_reference(samples, reference, means, titles, lim)
    true = pd.DataFrame({"source": "true_gmm", "epoch": None, "x": reference[:, 0], "y": reference[:, 1]})
    path = figures.save_figure(fig, run_dir, "batch_configs_samples", pd.concat([true, *records]))
    return [
        *items,
        FigureRef(
            path,
            "Samples at each configuration's final checkpoint (colour) over the true "
            "GMM (grey; x = component means); same axes in every panel.",
        ),
    ]


def _size_factors_sections(df: pd.DataFrame, run_dir: Path) -> list[Section]:
    """See :mod:`diffbench.report.size_factors` (imported here because it builds on this module's types)."""
    from diffbench.report.size_factors import size_factors_sections

    return size_factors_sections(df, run_dir)


FAMILY_SECTIONS: dict[str, SectionBuilder] = {
    "batch_configs": batch_configs_sections,
    "size_factors": _size_factors_sections,
}


# --- failures ---------------------------------------------------------------------------------------------


def load_failures(run_dir: Path) -> list[dict]:
    """The run's failed cells from ``failures.json`` (``[]`` when absent). An unreadable file is reported as a
    failure entry rather than dropped, so a report never hides that something went wrong."""
    path = Path(run_dir) / FAILURES_FILE
    if not path.is_file():
        return []
    try:
        failures = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        return [{"cell": str(path), "family": None, "message": f"unreadable {FAILURES_FILE}: {exc}"}]
    if not isinstance(failures, list):
        return [{"cell": str(path), "family": None, "message": f"{FAILURES_FILE} is not a JSON list"}]
    return failures


# --- rendering --------------------------------------------------------------------------------------------


def _format_value(value: object) -> str:
    """Integers as integers, floats to 4 significant digits, missing / non-finite as a blank."""
    if value is None or value is pd.NA:
        return ""
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        if not math.isfinite(value):
            return "" if math.isnan(value) else str(value)
        if float(value).is_integer() and abs(value) < 1e15:
            return str(int(value))
        return f"{value:.4g}"
    return str(value)


def _format_frame(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.astype(object).apply(lambda column: column.map(_format_value))


@dataclass
class _Header:
    run_ids: list[str]
    profiles: list[str]
    devices: list[str]
    versions: list[str]
    num_rows: int
    num_cells: int
    families: list[str]
    nonfinite: pd.DataFrame
    failures: list[dict]


def _header(df: pd.DataFrame, raw_rows: list[dict], failures: list[dict]) -> _Header:
    def distinct(column: str) -> list[str]:
        return sorted({str(v) for v in df[column].dropna()}) if column in df else []

    versions = sorted(
        {", ".join(f"{k} {v}" for k, v in sorted((r.get("versions") or {}).items())) for r in raw_rows} - {""}
    )
    scalar = df[df["artifact"].isna()]
    nonfinite = scalar[scalar["value"].isna()][["family", "cell", "metric"]]
    return _Header(
        run_ids=distinct("run_id"),
        profiles=distinct("profile"),
        devices=distinct("device"),
        versions=versions,
        num_rows=len(df),
        num_cells=len(df.drop_duplicates(["run_id", "cell"])),
        families=distinct("family"),
        nonfinite=nonfinite,
        failures=failures,
    )


def _failures_frame(failures: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(
        [{"cell": f.get("cell"), "family": f.get("family"), "message": f.get("message")} for f in failures],
        columns=["cell", "family", "message"],
    )


def _markdown_table(frame: pd.DataFrame, max_rows: int | None = MAX_TABLE_ROWS) -> str:
    shown = frame if max_rows is None else frame.head(max_rows)
    text = _format_frame(shown)

    def cell(value: str) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(c) for c in frame.columns) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in text.itertuples(index=False)]
    if len(shown) < len(frame):
        lines.append(f"\n*First {len(shown)} of {len(frame)} lines.*")
    return "\n".join(lines)


def _html_table(frame: pd.DataFrame, max_rows: int | None = MAX_TABLE_ROWS) -> str:
    shown = frame if max_rows is None else frame.head(max_rows)
    out = _format_frame(shown).to_html(index=False, escape=True, border=0)
    if len(shown) < len(frame):
        out += f"<p><em>First {len(shown)} of {len(frame)} lines.</em></p>"
    return out


def _render_markdown(head: _Header, parts: list[tuple[str, list[Section]]]) -> str:
    out = [f"# diffbench report: {', '.join(head.run_ids) or '(no rows)'}", ""]
    out += [
        f"- **Run id(s):** {', '.join(head.run_ids) or '-'}",
        f"- **Profile(s):** {', '.join(head.profiles) or '-'}",
        f"- **Device(s):** {', '.join(head.devices) or '-'}",
        f"- **Versions:** {' | '.join(head.versions) or '-'}",
        f"- **Cells:** {head.num_cells}, **rows:** {head.num_rows}, **families:** {', '.join(head.families) or '-'}",
        f"- **Failed cells:** {len(head.failures)}",
        "",
    ]
    if head.failures:
        out += [
            f"## FAILED CELLS ({len(head.failures)})",
            "",
            _markdown_table(_failures_frame(head.failures), None),
            "",
        ]
    if len(head.nonfinite):
        out += [f"## Non-finite values ({len(head.nonfinite)})", "", _markdown_table(head.nonfinite), ""]
    out += [f"Every row: [{SUMMARY_FILE}]({SUMMARY_FILE}). Blank table entries: not recorded or non-finite.", ""]
    for family, sections in parts:
        out += [f"## {family}", ""]
        for section in sections:
            out += [f"### {section.title}", ""]
            for item in section.items:
                if isinstance(item, Note):
                    out += [item.text, ""]
                elif isinstance(item, FigureRef):
                    data = item.path.removesuffix(".png") + ".csv"
                    name = Path(item.path).stem
                    out += [f"![{name}]({item.path})", "", f"{item.caption} Data: [{data}]({data})", ""]
                else:
                    csv = f"{TABLES_DIR}/{item.name}.csv" if item.name else ""
                    link = f" Full table: [{csv}]({csv})" if csv else ""
                    out += [f"{item.caption}{link}", "", _markdown_table(item.frame), ""]
    return "\n".join(out)


_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1400px; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 2px 6px; text-align: right; }
th { background: #f0f0f0; }
.meta td, .meta th { text-align: left; }
.failures { border: 2px solid #c00; background: #fff0f0; padding: 0.5em 1em; }
.failures h2 { color: #c00; margin-top: 0.2em; }
.warn { border: 2px solid #c80; background: #fff8e8; padding: 0.5em 1em; }
img { max-width: 100%; border: 1px solid #ddd; }
figcaption { font-size: 0.9em; color: #444; }
"""


def _render_html(head: _Header, parts: list[tuple[str, list[Section]]]) -> str:
    esc = html.escape
    title = f"diffbench report: {', '.join(head.run_ids) or '(no rows)'}"
    meta = [
        ("Run id(s)", ", ".join(head.run_ids)),
        ("Profile(s)", ", ".join(head.profiles)),
        ("Device(s)", ", ".join(head.devices)),
        ("Versions", " | ".join(head.versions)),
        ("Cells", str(head.num_cells)),
        ("Rows", str(head.num_rows)),
        ("Families", ", ".join(head.families)),
        ("Failed cells", str(len(head.failures))),
    ]
    out = [
        f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{esc(title)}</title>',
        f"<style>{_CSS}</style></head><body>",
        f"<h1>{esc(title)}</h1>",
        '<table class="meta">',
    ]
    out += [f"<tr><th>{esc(k)}</th><td>{esc(v or '-')}</td></tr>" for k, v in meta]
    out.append("</table>")
    if head.failures:
        out += [
            f'<div class="failures"><h2>FAILED CELLS ({len(head.failures)})</h2>',
            _html_table(_failures_frame(head.failures), None),
            "</div>",
        ]
    if len(head.nonfinite):
        out += [
            f'<div class="warn"><h2>Non-finite values ({len(head.nonfinite)})</h2>',
            _html_table(head.nonfinite),
            "</div>",
        ]
    out.append(
        f'<p>Every row: <a href="{SUMMARY_FILE}">{SUMMARY_FILE}</a>. '
        "Blank table entries: not recorded or non-finite.</p>"
    )
    for family, sections in parts:
        out.append(f'<h2 id="{esc(family)}">{esc(family)}</h2>')
        for section in sections:
            out.append(f"<h3>{esc(section.title)}</h3>")
            for item in section.items:
                if isinstance(item, Note):
                    out.append(f"<p>{esc(item.text)}</p>")
                elif isinstance(item, FigureRef):
                    data = item.path.removesuffix(".png") + ".csv"
                    out.append(
                        f'<figure><img src="{esc(item.path)}" alt="{esc(item.caption)}"><figcaption>'
                        f'{esc(item.caption)} Data: <a href="{esc(data)}">{esc(data)}</a></figcaption></figure>'
                    )
                else:
                    csv = f"{TABLES_DIR}/{esc(item.name)}.csv" if item.name else ""
                    link = f' Full table: <a href="{csv}">{csv}</a>' if csv else ""
                    out += [f"<p><em>{esc(item.caption)}</em>{link}</p>", _html_table(item.frame)]
    out.append("</body></html>")
    return "\n".join(out)


def _write_text(path: Path, text: str) -> None:
    """Write via a temporary file and a rename: readers never see a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


# --- the entry point --------------------------------------------------------------------------------------


def build_report(run_dir: Path, rows: list[dict] | None = None, failures: list[dict] | None = None) -> Path:
    """Write ``summary.csv``, ``tables/*.csv``, ``figures/*``, ``report.md`` and ``index.html`` into ``run_dir``.

    ``rows`` default to the run's saved rows (:func:`diffbench.results.load_run`), ``failures`` to its
    ``failures.json``. Returns the path of ``report.md``.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if rows is None:
        rows = load_run(run_dir)
    if failures is None:
        failures = load_failures(run_dir)
    df = rows_to_frame(rows)
    if len(df):
        df = latest_rows(df)
    _write_text(run_dir / SUMMARY_FILE, summary_frame(df).to_csv(index=False))

    parts = []
    for family in sorted(df["family"].dropna().unique()):
        family_df = df[df["family"] == family]
        family_df = family_df.drop(
            columns=[c for c in family_df if c.startswith(PARAM_PREFIX) and family_df[c].isna().all()]
        )
        sections = []
        if family in FAMILY_SECTIONS:
            try:
                sections += FAMILY_SECTIONS[family](family_df, run_dir)
            except Exception as exc:  # one broken section must not cost the run its report (and its tables)
                message = f"The {family} sections could not be built: {type(exc).__name__}: {exc}"
                sections.append(Section("Section error", [Note(message)]))
        sections += generic_section(family_df, run_dir)
        parts.append((family, sections))
    for _, sections in parts:
        for section in sections:
            for item in section.items:
                if isinstance(item, Table) and item.name:
                    _write_text(run_dir / TABLES_DIR / f"{item.name}.csv", item.frame.to_csv(index=False))

    head = _header(df, rows, failures)
    _write_text(run_dir / HTML_FILE, _render_html(head, parts))
    report = run_dir / MARKDOWN_FILE
    _write_text(report, _render_markdown(head, parts))
    return report

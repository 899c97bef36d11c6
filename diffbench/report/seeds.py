"""Seed repeats in a report: the mean over seeds of each metric with a 95% Student-t interval.

A run made with ``--seeds 0,1,2`` holds every cell once per seed. :func:`seed_summary` reduces such rows to one
line per (family, params, metric): the number of seeds, their mean and standard deviation and the interval
``mean +- t_{0.975, n-1} sd / sqrt(n)``, which covers the expected value of the metric over training and sampling
seeds (not the spread of one seed's value: that is ``sd``). :func:`seed_section` shows the lines measured at two
or more seeds; ``build`` writes all of them to ``seeds.csv``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from diffbench.report.sections import Note, Section, Table, format_value

SEEDS_FILE = "seeds.csv"
CONFIDENCE = 0.95
SUMMARY_COLUMNS = ["family", "params", "metric", "n_seeds", "mean", "sd", "ci_low", "ci_high"]
INTERVAL = "mean [95% ci]"


def seed_summary(rows: pd.DataFrame | list[dict]) -> pd.DataFrame:
    """One line per (family, params, metric) of the scalar rows (array rows are left out): ``params`` (the row's
    params as sorted JSON), ``n_seeds`` (distinct seeds with a finite value), ``mean`` and ``sd`` (``ddof = 1``)
    over those seeds, and the 95% Student-t interval of the mean ``ci_low``, ``ci_high``; ``sd`` and the interval
    are NaN below two seeds. Values one seed recorded more than once (several cells or runs with the same params)
    are averaged first, so ``n_seeds`` counts seeds, not rows. ``rows``: result rows, or a frame from
    :func:`diffbench.report.sections.rows_to_frame`. Lines in (family, params, metric) order."""
    from scipy import stats

    frame = _frame(rows)
    scalar = frame[frame["artifact"].isna() & np.isfinite(frame["value"].astype(float))]
    if scalar.empty:
        return pd.DataFrame(columns=SUMMARY_COLUMNS)
    keys = ["family", "params_key", "metric"]
    per_seed = scalar.groupby([*keys, "seed"], sort=True)["value"].mean()
    summary = per_seed.groupby(level=keys, sort=True).agg(n_seeds="count", mean="mean", sd="std").reset_index()
    half = [
        stats.t.ppf(0.5 + CONFIDENCE / 2, n - 1) * sd / math.sqrt(n) if n >= 2 else math.nan
        for n, sd in zip(summary["n_seeds"], summary["sd"], strict=True)
    ]
    summary["ci_low"], summary["ci_high"] = summary["mean"] - half, summary["mean"] + half
    summary.loc[summary["n_seeds"] < 2, "sd"] = math.nan
    return summary.rename(columns={"params_key": "params"})[SUMMARY_COLUMNS]


def run_seed_summary(df: pd.DataFrame) -> pd.DataFrame:
    """:func:`seed_summary` of each run in ``df`` (a frame from ``rows_to_frame``), with a leading ``run_id``
    column: seeds are pooled within a run, never across runs (two runs may differ in code or device)."""
    parts = [seed_summary(df[df["run_id"] == run]).assign(run_id=run) for run in sorted(df["run_id"].dropna().unique())]
    if not parts:
        return pd.DataFrame(columns=["run_id", *SUMMARY_COLUMNS])
    return pd.concat(parts, ignore_index=True)[["run_id", *SUMMARY_COLUMNS]]


def _frame(rows: pd.DataFrame | list[dict]) -> pd.DataFrame:
    if isinstance(rows, pd.DataFrame):
        return rows
    from diffbench.report.sections import rows_to_frame

    return rows_to_frame(rows)


def params_text(params: str) -> str:
    """A ``params`` JSON object as ``a=1, b=x`` (``-`` when empty)."""
    values = json.loads(params)
    return ", ".join(f"{k}={format_value(v)}" for k, v in values.items()) or "-"


def repeated(summary: pd.DataFrame) -> pd.DataFrame:
    """The lines of a :func:`seed_summary` measured at two or more seeds."""
    return summary[summary["n_seeds"] >= 2].reset_index(drop=True)


def seed_section(df: pd.DataFrame, run_dir: Path) -> list[Section]:
    """A family's "Seed repeats" section: every metric measured at two or more seeds with ``mean [95% ci]``,
    ``n_seeds`` and ``sd`` (one table per run when ``df`` holds several); none when no metric was repeated."""
    items: list[Note | Table] = []
    runs = sorted(df["run_id"].dropna().unique())
    for run in runs:
        lines = repeated(seed_summary(df[df["run_id"] == run]))
        if lines.empty:
            continue
        family = str(lines["family"].iloc[0])
        tag = f"_{run}" if len(runs) > 1 else ""
        table = pd.DataFrame(
            {
                "params": lines["params"].map(params_text),
                "metric": lines["metric"],
                INTERVAL: [_interval(*v) for v in zip(lines["mean"], lines["ci_low"], lines["ci_high"], strict=True)],
                "n_seeds": lines["n_seeds"],
                "sd": lines["sd"],
                "mean": lines["mean"],
                "ci_low": lines["ci_low"],
                "ci_high": lines["ci_high"],
            }
        )
        caption = f"{family}: mean over seeds with its 95% Student-t interval{f' ({run})' if tag else ''}."
        items.append(Table(caption, table, name=f"{family}_seeds{tag}"))
    if not items:
        return []
    note = (
        "Each line: a metric measured at n_seeds >= 2 seeds (--seeds). mean [95% ci]: the mean over seeds and the "
        "interval mean +- t(0.975, n-1) sd / sqrt(n), which covers the metric's expected value over seeds; sd is "
        "one seed's spread. The family's other tables average the seeds."
    )
    return [Section("Seed repeats", [Note(note), *items])]


def _interval(mean: float, low: float, high: float) -> str:
    return f"{format_value(mean)} [{format_value(low)}, {format_value(high)}]"

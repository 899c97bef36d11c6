"""The report's section model and the rows-to-frame helpers every family's report module builds on.

A leaf of the report package: it imports neither ``build`` nor any family. A family's report module turns its
rows (a frame from :func:`rows_to_frame`) into :class:`Section` s of :class:`Note`, :class:`Table` and
:class:`FigureRef` items; ``build`` renders them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from diffbench.results import strip_seed

PARAM_PREFIX = "param."
ROW_COLUMNS = ("family", "cell", "run_id", "profile", "device", "seed", "metric", "value", "artifact", "time")
EXTRACTOR = "extractor"  # from a row's ``context``: the feature extractor behind a FID / KID value


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
    as JSON text so they stay hashable), ``value`` as float (NaN where the row holds null = non-finite), and
    ``extractor`` from the row's ``context`` (``domain_<hash>``, ``inception_pool3``; missing when absent)."""
    records = []
    for row in rows:
        record = {key: row.get(key) for key in ROW_COLUMNS}
        context = row.get("context")
        record[EXTRACTOR] = context.get(EXTRACTOR) if isinstance(context, dict) else None
        params = row.get("params") or {}
        record["params_key"] = json.dumps(params, sort_keys=True)
        for name, value in params.items():
            record[PARAM_PREFIX + name] = json.dumps(value) if isinstance(value, (list, dict)) else value
        records.append(record)
    df = pd.DataFrame(records) if records else pd.DataFrame(columns=[*ROW_COLUMNS, EXTRACTOR, "params_key"])
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
    """The ``summary.csv`` table: one line per (family, run, cell params, metric, seed) with its value (and the
    feature extractor, when ``df`` has that column)."""
    params = param_columns(df)
    columns = ["family", "run_id", "cell", *params, "metric", "value", "seed", "device", "profile", "artifact"]
    columns += [EXTRACTOR] if EXTRACTOR in df else []
    return df.sort_values(["family", "run_id", "cell", "params_key", "metric"], kind="stable")[columns]


def sort_key(column: pd.Series) -> pd.Series:
    return column if pd.api.types.is_numeric_dtype(column) else column.map(str)


def generic_table(df: pd.DataFrame) -> pd.DataFrame:
    """Every metric of one family as a column, one line per distinct cell parameter set (plus ``run_id`` when
    rows come from several runs). Repeated measurements of a cell (several seeds) are averaged; a blank means
    the cell did not record that metric or recorded a non-finite value."""
    index = (["run_id"] if df["run_id"].nunique() > 1 else []) + param_columns(df)
    if not index:  # cells without parameters: one line per cell, its seeds (``--seeds``) averaged
        index = ["cell"]
        df = df.assign(cell=df["cell"].map(strip_seed))
    df = df.sort_values(index, key=sort_key, na_position="last", kind="stable")
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


def format_value(value: object) -> str:
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

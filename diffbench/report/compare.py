"""Regression compare of two runs: match rows, compute deltas, decide per metric whether it got worse.

Rows are matched by ``(family, params as sorted JSON, metric)``; rows with an ``artifact`` (arrays, not
scalars) are ignored, and repeated rows of one key on one side (several seeds) are averaged.

The rule (one place, :func:`verdict`): with ``b`` the baseline value, ``c`` the current one and ``tol`` the
metric's relative tolerance, the allowed change is ``tol * max(|b|, abs_floor)`` — relative to the baseline,
but never smaller than ``tol * abs_floor``, so a baseline near 0 (an MMD of 1e-6) does not turn noise into a
regression. Direction and tolerance class come from the metric registry (:mod:`diffbench.metrics.registry`):

- a metric with a better direction regresses when it moves the other way by more than the allowed change, and
  improves when it moves its better way by more than it; one declared ``neither`` (or undeclared, e.g. in an old
  baseline) is two-sided: any move beyond the allowed change is "changed", which fails;
- class ``default`` uses the run's ``tolerance``; ``timing`` is one-sided at ``TIMING_TOLERANCE`` (machines
  differ: a timing never fails two-sided); ``exact`` allows no change (a parameter count that moves is another
  model); ``info`` is shown and never fails (interval ends move with their estimate).

``tolerances`` (``--metric-tolerance``) override the tolerance of matching metrics in any class.
A value that turns non-finite (null in the row) is a regression; one that becomes finite is an improvement.
"""

from __future__ import annotations

import fnmatch
import json
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd

from diffbench.io import atomic_write_text
from diffbench.metrics import registry
from diffbench.metrics.registry import HIGHER, LOWER

TWO_SIDED = "two-sided"
DEFAULT_TOLERANCE = 0.1
ABS_FLOOR = 1e-3

Key = tuple[str, str, str]  # (family, params as sorted JSON, metric)


def _lookup(table: Mapping[str, object], metric: str) -> object | None:
    """Exact name first, then the first fnmatch pattern (in insertion order) that matches."""
    if metric in table:
        return table[metric]
    for pattern, value in table.items():
        if fnmatch.fnmatchcase(metric, pattern):
            return value
    return None


def metric_direction(metric: str) -> str:
    """``"lower"`` or ``"higher"`` (is better) as declared; ``"two-sided"`` for ``neither`` or undeclared."""
    declared = registry.find(metric)
    return declared.direction if declared is not None and declared.direction in (LOWER, HIGHER) else TWO_SIDED


def tolerance_class(metric: str) -> str:
    """The registry's tolerance class of ``metric`` (``default`` when undeclared)."""
    declared = registry.find(metric)
    return declared.tolerance if declared is not None else "default"


def metric_rule(metric: str, default: float, overrides: Mapping[str, float]) -> tuple[str, float, str]:
    """``(direction, tolerance, class)`` the gate applies to ``metric`` (see the module docstring)."""
    cls = tolerance_class(metric)
    direction = metric_direction(metric)
    tolerance = {"timing": registry.TIMING_TOLERANCE, "exact": 0.0}.get(cls, default)
    override = _lookup(overrides, metric)
    return direction, tolerance if override is None else float(override), cls


def verdict(baseline: float, current: float, direction: str, tolerance: float, abs_floor: float = ABS_FLOOR) -> str:
    """``"ok"``, ``"improved"``, ``"regression"`` or ``"changed"`` (two-sided move) — the rule in the module
    docstring: allowed change ``= tolerance * max(|baseline|, abs_floor)``; NaN stands for non-finite."""
    if math.isnan(baseline) or math.isnan(current):
        if math.isnan(baseline) and math.isnan(current):
            return "ok"
        return "regression" if math.isnan(current) else "improved"
    allowed = tolerance * max(abs(baseline), abs_floor)
    delta = current - baseline
    if direction == TWO_SIDED:
        return "changed" if abs(delta) > allowed else "ok"
    worse_by = delta if direction == LOWER else -delta  # > 0 means it moved the bad way
    if worse_by > allowed:
        return "regression"
    return "improved" if -worse_by > allowed else "ok"


FAILING_VERDICTS = ("regression", "changed")


@dataclass(frozen=True)
class Comparison:
    """One matched metric: its values on both sides and the verdict."""

    family: str
    params: str  # sorted JSON
    metric: str
    direction: str
    tolerance: float
    baseline: float
    current: float
    delta: float  # current - baseline
    rel_delta: float  # delta / |baseline| (inf/NaN when the baseline is 0)
    verdict: str
    tolerance_class: str = "default"

    @property
    def failed(self) -> bool:
        return self.verdict in FAILING_VERDICTS and self.tolerance_class != "info"


@dataclass
class CompareResult:
    """Every comparison plus the keys present on one side only."""

    comparisons: list[Comparison]
    missing_in_current: list[Key] = field(default_factory=list)
    missing_in_baseline: list[Key] = field(default_factory=list)
    tolerance: float = DEFAULT_TOLERANCE
    abs_floor: float = ABS_FLOOR

    @property
    def regressions(self) -> list[Comparison]:
        return [c for c in self.comparisons if c.failed]

    @property
    def has_regression(self) -> bool:
        return bool(self.regressions)

    def to_frame(self) -> pd.DataFrame:
        columns = [f.name for f in Comparison.__dataclass_fields__.values()]
        return pd.DataFrame([asdict(c) for c in self.comparisons], columns=columns)


def _scalar_values(rows: Iterable[dict]) -> dict[Key, float]:
    """Mean value per key over the rows without an artifact; NaN when a key's values are all null."""
    grouped: dict[Key, list[float]] = defaultdict(list)
    for row in rows:
        if row.get("artifact") is not None:
            continue
        key = (str(row["family"]), json.dumps(row.get("params") or {}, sort_keys=True), str(row["metric"]))
        value = row.get("value")
        grouped[key].append(float("nan") if value is None else float(value))
    out = {}
    for key, values in grouped.items():
        finite = [v for v in values if math.isfinite(v)]
        out[key] = sum(finite) / len(finite) if finite else float("nan")
    return out


def compare_runs(
    baseline_rows: Iterable[dict],
    current_rows: Iterable[dict],
    tolerance: float = DEFAULT_TOLERANCE,
    tolerances: Mapping[str, float] | None = None,
    abs_floor: float = ABS_FLOOR,
) -> CompareResult:
    """Compare two runs' rows. ``tolerance`` is the default relative tolerance; ``tolerances`` overrides it per
    metric (names or fnmatch patterns such as ``"*_seconds"``). See the module docstring for the rule."""
    if tolerance < 0 or abs_floor < 0:
        raise ValueError(f"tolerance and abs_floor must be >= 0, got {tolerance} and {abs_floor}")
    tolerances = dict(tolerances or {})
    for name, tol in tolerances.items():
        if tol < 0:
            raise ValueError(f"tolerance for {name!r} must be >= 0, got {tol}")
    base, cur = _scalar_values(baseline_rows), _scalar_values(current_rows)
    comparisons = []
    for key in sorted(base.keys() & cur.keys()):
        family, params, metric = key
        b, c = base[key], cur[key]
        direction, tol, cls = metric_rule(metric, tolerance, tolerances)
        delta = c - b
        rel = delta / abs(b) if b != 0 else (0.0 if delta == 0 else math.copysign(math.inf, delta))
        comparisons.append(
            Comparison(
                family, params, metric, direction, tol, b, c, delta, rel, verdict(b, c, direction, tol, abs_floor), cls
            )
        )
    return CompareResult(
        comparisons=comparisons,
        missing_in_current=sorted(base.keys() - cur.keys()),
        missing_in_baseline=sorted(cur.keys() - base.keys()),
        tolerance=tolerance,
        abs_floor=abs_floor,
    )


def _short_params(params: str) -> str:
    """``{"a": 1, "b": "x"}`` -> ``a=1 b=x`` for tables."""
    return " ".join(f"{k}={v}" for k, v in json.loads(params).items())


def _num(value: float, signed: bool = False) -> str:
    if math.isnan(value):
        return "nan"
    return f"{value:+.4g}" if signed else f"{value:.4g}"


def format_table(result: CompareResult) -> str:
    """A plain-text table aligned in columns: one line per compared metric (failing ones first), then a summary
    line and the keys missing on either side."""
    header = ("verdict", "family", "params", "metric", "baseline", "current", "delta", "rel", "tol")
    ordered = sorted(result.comparisons, key=lambda c: (not c.failed, c.family, c.params, c.metric))
    lines = [header] + [
        (
            c.verdict.upper() if c.failed else c.verdict,
            c.family,
            _short_params(c.params),
            c.metric,
            _num(c.baseline),
            _num(c.current),
            _num(c.delta, signed=True),
            _num(100 * c.rel_delta, signed=True) + "%",
            f"{c.tolerance:g}",
        )
        for c in ordered
    ]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    numeric = {4, 5, 6, 7, 8}
    text = [
        "  ".join(
            cell.rjust(w) if i in numeric else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(line, widths, strict=True))
        ).rstrip()
        for line in lines
    ]
    text.insert(1, "  ".join("-" * w for w in widths))
    n_fail = len(result.regressions)
    text += [
        "",
        f"{len(result.comparisons)} compared, {n_fail} regression(s), "
        f"{len(result.missing_in_current)} missing in current, "
        f"{len(result.missing_in_baseline)} missing in baseline",
    ]
    for title, keys in (
        ("missing in current", result.missing_in_current),
        ("missing in baseline", result.missing_in_baseline),
    ):
        text += [f"{title}: {family} [{_short_params(params)}] {metric}" for family, params, metric in keys]
    return "\n".join(text)


def write_compare_report(result: CompareResult, out_dir: Path) -> Path:
    """Write ``compare.md`` (verdict, rule, failing metrics, full table, missing keys) and ``compare.csv`` (one
    line per comparison) into ``out_dir``; returns the path of compare.md."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "compare.csv", result.to_frame().to_csv(index=False))
    status = "REGRESSION" if result.has_regression else "OK"
    md = [
        f"# diffbench compare: {status}",
        "",
        f"{len(result.comparisons)} metrics compared, {len(result.regressions)} failing. Rule: a metric fails "
        f"when it moves in its worse direction by more than `tol * max(|baseline|, {result.abs_floor:g})` "
        f"(default tol {result.tolerance:g}); directions and tolerance classes from the metric registry: timing "
        f"one-sided at {registry.TIMING_TOLERANCE:g}, exact allows no change, info never fails; metrics with no "
        "direction fail on a move either way.",
        "",
        "```",
        format_table(result),
        "```",
        "",
        "Numbers: [compare.csv](compare.csv).",
    ]
    path = out_dir / "compare.md"
    atomic_write_text(path, "\n".join(md) + "\n")
    return path

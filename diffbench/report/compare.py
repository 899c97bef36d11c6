"""Regression compare of a run against a baseline: match rows, compute deltas, decide per metric whether it got
worse, and fail on baseline rows the run should have recorded and did not.

**Keys.** Rows are matched by ``(family, params as sorted JSON, metric)``; rows with an ``artifact`` (arrays, not
scalars) are ignored, and repeated rows of one key on one side (several seeds) are averaged. A baseline is either
rows (a run directory or a results.jsonl: per key the mean, no tolerance of its own) or the entries of a
``diffbench baseline`` file (:mod:`diffbench.report.baseline`): per key the mean over seeds, their count and
spread, an allowed change derived from that spread, and the matrix cells that recorded it. Both become
:class:`BaselineEntry` values.

**The rule for a compared key** (one place, :func:`verdict`): with ``b`` the baseline value, ``c`` the current one,
the key fails when ``c`` moves beyond the *allowed change* in a failing way:

- allowed change: the baseline entry's ``tol`` (from the seed spread, see :mod:`diffbench.report.baseline`) when it
  has one, the metric is in the ``default`` class and no ``--metric-tolerance`` names it; otherwise
  ``tol * max(|b|, abs_floor)`` with ``tol`` the relative tolerance of the metric's class — relative to the
  baseline, but never smaller than ``tol * abs_floor``, so a baseline near 0 (an MMD of 1e-6) does not turn noise
  into a regression;
- direction and tolerance class come from the metric registry (:mod:`diffbench.metrics.registry`): a metric with a
  better direction regresses when it moves the other way by more than the allowed change and improves when it
  moves its better way by more; one declared ``neither`` is two-sided (any move beyond the allowed change is
  "changed", which fails). An *undeclared* metric (e.g. in an old baseline) is two-sided too, and flagged
  (class ``undeclared``). Keys with one of their family's ``two_sided`` params (``Family.two_sided``) are
  two-sided whatever their metric's direction;
- class ``default`` uses the run's ``tolerance``; ``timing`` is one-sided at ``TIMING_TOLERANCE`` (machines
  differ: a timing never fails two-sided); ``exact`` allows no change (a parameter count that moves is another
  model); ``info`` is shown and never fails (interval ends move with their estimate);
- ``tolerances`` (``--metric-tolerance``) override the tolerance of matching metrics in any class, seed-derived
  ones included; a value that turns non-finite (null in the row) is a regression, one that becomes finite an
  improvement.

**Missing rows.** A key the baseline has and the current run lacks fails ("missing") unless the current run's
selection excluded it. ``selection`` is the set of matrix cells the current run selected (pytest node ids, as
:func:`diffbench.results.load_selection` reads them; seed ids are stripped on both sides), ``None`` when the run
left no record — then every missing key fails. A missing key with cells fails when one of its cells is selected;
a key without cells (a baseline of old rows that carry no ``cell``) fails when a selected cell belongs to its
family. Otherwise it is listed as "excluded by the selection" and does not fail. Keys of the current run that the
baseline lacks are listed ("missing in baseline") and never fail.
"""

from __future__ import annotations

import fnmatch
import json
import math
from collections import Counter, defaultdict
from collections.abc import Collection, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath

import pandas as pd

from diffbench.families import discover
from diffbench.io import atomic_write_text
from diffbench.metrics import registry
from diffbench.metrics.registry import HIGHER, LOWER
from diffbench.results import strip_seed

TWO_SIDED = "two-sided"
DEFAULT_TOLERANCE = 0.1
ABS_FLOOR = 1e-3
UNDECLARED = "undeclared"  # the tolerance class shown for a metric the registry does not know

# A benchmark module per family (``benchmarks/bench_<family>.py``): the family of a selected cell that wrote no
# rows, for baseline keys that carry no cell.
BENCH_MODULE_PREFIX = "bench_"

Key = tuple[str, str, str]  # (family, params as sorted JSON, metric)


@dataclass(frozen=True)
class BaselineEntry:
    """One baseline key: ``mean`` (NaN when no value was finite), ``n`` values behind it (seeds), their ``sd``
    (None below 2), ``tol``: the allowed absolute change from the seed spread (None: the class rule applies), and
    ``cells``: node ids (seed ids stripped) of the matrix cells that recorded it (empty when unknown)."""

    mean: float
    n: int = 1
    sd: float | None = None
    tol: float | None = None
    cells: tuple[str, ...] = ()


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
    """The registry's tolerance class of ``metric`` (``"undeclared"`` when the registry does not know it; it is
    then compared like ``default``, two-sided)."""
    declared = registry.find(metric)
    return declared.tolerance if declared is not None else UNDECLARED


def key_direction(family: str, params: Mapping[str, object], metric: str) -> str:
    """The metric's direction, or ``"two-sided"`` when the key has one of its family's ``two_sided`` params
    (:attr:`diffbench.families.Family.two_sided`: rows where closer is not better, e.g. cfg's guided vs unguided)."""
    declared = discover().get(family)
    if declared is not None and any(params.get(name) == value for name, value in declared.two_sided):
        return TWO_SIDED
    return metric_direction(metric)


def metric_rule(metric: str, default: float, overrides: Mapping[str, float]) -> tuple[str, float, str]:
    """``(direction, relative tolerance, class)`` the gate applies to ``metric`` (see the module docstring)."""
    cls = tolerance_class(metric)
    direction = metric_direction(metric)
    tolerance = {"timing": registry.TIMING_TOLERANCE, "exact": 0.0}.get(cls, default)
    override = _lookup(overrides, metric)
    return direction, tolerance if override is None else float(override), cls


def allowed_change(baseline: float, tolerance: float, abs_floor: float = ABS_FLOOR) -> float:
    """The class rule's allowed absolute change: ``tolerance * max(|baseline|, abs_floor)``."""
    return tolerance * max(abs(baseline), abs_floor)


def verdict(
    baseline: float,
    current: float,
    direction: str,
    tolerance: float,
    abs_floor: float = ABS_FLOOR,
    allowed: float | None = None,
) -> str:
    """``"ok"``, ``"improved"``, ``"regression"`` or ``"changed"`` (two-sided move) — the rule in the module
    docstring: the allowed change is ``allowed`` when given (a seed tolerance), else
    ``tolerance * max(|baseline|, abs_floor)``; NaN stands for non-finite."""
    if math.isnan(baseline) or math.isnan(current):
        if math.isnan(baseline) and math.isnan(current):
            return "ok"
        return "regression" if math.isnan(current) else "improved"
    if allowed is None:
        allowed = allowed_change(baseline, tolerance, abs_floor)
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
    """One matched metric: its values on both sides, the rule applied and the verdict. ``tolerance`` is the
    relative tolerance of the class rule (or the override); ``allowed`` the absolute change actually allowed;
    ``tolerance_source`` says where it came from: ``seeds`` (the baseline's spread over ``n_seeds`` seeds),
    ``class``, or ``override`` (``--metric-tolerance``)."""

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
    allowed: float = math.nan
    tolerance_source: str = "class"
    n_seeds: int = 1

    @property
    def failed(self) -> bool:
        return self.verdict in FAILING_VERDICTS and self.tolerance_class != "info"


@dataclass
class CompareResult:
    """Every comparison plus the keys present on one side only. ``missing_in_current`` holds every baseline key
    the current run lacks: ``missing_failed`` those that fail, ``missing_excluded`` those the selection excluded."""

    comparisons: list[Comparison]
    missing_in_current: list[Key] = field(default_factory=list)
    missing_in_baseline: list[Key] = field(default_factory=list)
    tolerance: float = DEFAULT_TOLERANCE
    abs_floor: float = ABS_FLOOR
    missing_failed: list[Key] = field(default_factory=list)
    missing_excluded: list[Key] = field(default_factory=list)
    selection_size: int | None = None  # selected cells of the current run; None: no selection record

    @property
    def regressions(self) -> list[Comparison]:
        """Compared metrics that fail (missing keys are in ``missing_failed``)."""
        return [c for c in self.comparisons if c.failed]

    @property
    def has_regression(self) -> bool:
        """A compared metric fails (see ``failed`` for the whole gate)."""
        return bool(self.regressions)

    @property
    def failed(self) -> bool:
        """The gate's verdict: a compared metric fails or a selected baseline key is missing."""
        return bool(self.regressions) or bool(self.missing_failed)

    @property
    def undeclared(self) -> list[str]:
        """Metrics compared two-sided because the registry does not declare them (flagged in the report)."""
        return sorted({c.metric for c in self.comparisons if c.tolerance_class == UNDECLARED})

    def to_frame(self) -> pd.DataFrame:
        columns = [f.name for f in Comparison.__dataclass_fields__.values()]
        return pd.DataFrame([asdict(c) for c in self.comparisons], columns=columns)


def row_key(row: Mapping) -> Key:
    return str(row["family"]), json.dumps(row.get("params") or {}, sort_keys=True), str(row["metric"])


def entries_from_rows(rows: Iterable[dict]) -> dict[Key, BaselineEntry]:
    """Per key over the rows without an artifact: the mean of the finite values (NaN when all are null), the
    number of rows, and the cells that recorded it (seed ids stripped). No sd, no tolerance: plain rows are the
    old baseline format."""
    values: dict[Key, list[float]] = defaultdict(list)
    cells: dict[Key, set[str]] = defaultdict(set)
    for row in rows:
        if row.get("artifact") is not None:
            continue
        key = row_key(row)
        value = row.get("value")
        values[key].append(math.nan if value is None else float(value))
        if row.get("cell"):
            cells[key].add(strip_seed(str(row["cell"])))
    out = {}
    for key, vals in values.items():
        finite = [v for v in vals if math.isfinite(v)]
        mean = sum(finite) / len(finite) if finite else math.nan
        out[key] = BaselineEntry(mean=mean, n=len(vals), cells=tuple(sorted(cells[key])))
    return out


def cell_family(cell: str) -> str | None:
    """The family of a node id by the benchmark layout (``benchmarks/bench_<family>.py::...``), else None."""
    module = PurePosixPath(cell.split("::", 1)[0]).stem
    return module[len(BENCH_MODULE_PREFIX) :] if module.startswith(BENCH_MODULE_PREFIX) else None


def families_of_cells(selection: Collection[str] | Mapping[str, str], current_rows: Iterable[dict]) -> set[str]:
    """Families with a selected cell. A cell's family is the one the selection record names (``selection`` may
    map node id -> family, as ``selection/*.json`` does), else the one its rows name, else the one its benchmark
    module names (:func:`cell_family`)."""
    named = {strip_seed(cell): family for cell, family in selection.items()} if isinstance(selection, Mapping) else {}
    for row in current_rows:
        if row.get("cell"):
            named.setdefault(strip_seed(str(row["cell"])), str(row["family"]))
    families = (named.get(strip_seed(cell)) or cell_family(strip_seed(cell)) for cell in selection)
    return {family for family in families if family}


def computed_with_threads(rows: Iterable[dict]) -> list[int]:
    """The torch thread counts (row ``provenance.threads``) the rows' non-timing values were computed with, sorted;
    empty for rows that do not record it. CPU values depend on it (see ``diffbench.devices``), so a run compared
    with a baseline computed at other threads can differ beyond a seed tolerance without a code change."""
    threads = set()
    for row in rows:
        metric = registry.find(row["metric"])
        count = (row.get("provenance") or {}).get("threads")
        if (
            count is not None
            and str(row.get("device", "cpu")).startswith("cpu")
            and (metric is None or metric.kind != registry.TIMING)
        ):
            threads.add(int(count))
    return sorted(threads)


def split_missing(
    missing: Iterable[Key],
    baseline: Mapping[Key, BaselineEntry],
    selection: Collection[str] | Mapping[str, str] | None,
    current_rows: Iterable[dict] = (),
) -> tuple[list[Key], list[Key]]:
    """``(failing, excluded)``: the missing-rows rule of the module docstring."""
    missing = sorted(missing)
    if selection is None:
        return missing, []
    selected = {strip_seed(cell) for cell in selection}
    families = families_of_cells(selection, current_rows)
    failing, excluded = [], []
    for key in missing:
        cells = baseline[key].cells
        wanted = bool(selected.intersection(cells)) if cells else key[0] in families
        (failing if wanted else excluded).append(key)
    return failing, excluded


def compare_runs(
    baseline: Iterable[dict] | Mapping[Key, BaselineEntry],
    current_rows: Iterable[dict],
    tolerance: float = DEFAULT_TOLERANCE,
    tolerances: Mapping[str, float] | None = None,
    abs_floor: float = ABS_FLOOR,
    selection: Collection[str] | Mapping[str, str] | None = None,
) -> CompareResult:
    """Compare a run's rows against a baseline: rows, or the entries of a baseline file (``{key: BaselineEntry}``).
    ``tolerance`` is the default relative tolerance; ``tolerances`` overrides it per metric (names or fnmatch
    patterns such as ``"*_seconds"``); ``selection``: the current run's selected cells, node ids or ``{node id:
    family}`` (None: no record). See the module docstring for the rule."""
    if tolerance < 0 or abs_floor < 0:
        raise ValueError(f"tolerance and abs_floor must be >= 0, got {tolerance} and {abs_floor}")
    tolerances = dict(tolerances or {})
    for name, tol in tolerances.items():
        if tol < 0:
            raise ValueError(f"tolerance for {name!r} must be >= 0, got {tol}")
    current_rows = list(current_rows)
    base = dict(baseline) if isinstance(baseline, Mapping) else entries_from_rows(baseline)
    cur = entries_from_rows(current_rows)
    comparisons = []
    for key in sorted(base.keys() & cur.keys()):
        family, params, metric = key
        entry, c = base[key], cur[key].mean
        b = entry.mean
        _, tol, cls = metric_rule(metric, tolerance, tolerances)
        direction = key_direction(family, json.loads(params), metric)
        overridden = _lookup(tolerances, metric) is not None
        if entry.tol is not None and cls in ("default", UNDECLARED) and not overridden:
            allowed, source = entry.tol, "seeds"
        else:
            allowed, source = allowed_change(b, tol, abs_floor), "override" if overridden else "class"
        delta = c - b
        rel = delta / abs(b) if b != 0 else (0.0 if delta == 0 else math.copysign(math.inf, delta))
        comparisons.append(
            Comparison(
                family,
                params,
                metric,
                direction,
                tol,
                b,
                c,
                delta,
                rel,
                verdict(b, c, direction, tol, abs_floor, allowed=allowed),
                cls,
                allowed,
                source,
                entry.n,
            )
        )
    missing = base.keys() - cur.keys()
    failing, excluded = split_missing(missing, base, selection, current_rows)
    return CompareResult(
        comparisons=comparisons,
        missing_in_current=sorted(missing),
        missing_in_baseline=sorted(cur.keys() - base.keys()),
        tolerance=tolerance,
        abs_floor=abs_floor,
        missing_failed=failing,
        missing_excluded=excluded,
        selection_size=None if selection is None else len({strip_seed(c) for c in selection}),
    )


def _short_params(params: str) -> str:
    """``{"a": 1, "b": "x"}`` -> ``a=1 b=x`` for tables."""
    return " ".join(f"{k}={v}" for k, v in json.loads(params).items())


def _num(value: float, signed: bool = False) -> str:
    if math.isnan(value):
        return "nan"
    return f"{value:+.4g}" if signed else f"{value:.4g}"


def _tol_text(c: Comparison) -> str:
    """The ``tol`` column: ``±allowed (n=3)`` for a seed tolerance, else the relative tolerance."""
    return f"±{c.allowed:.3g} (n={c.n_seeds})" if c.tolerance_source == "seeds" else f"{c.tolerance:g}"


def _rule_text(c: Comparison) -> str:
    """The ``rule`` column: direction, plus the class when it is not ``default``."""
    return c.direction if c.tolerance_class == "default" else f"{c.direction} {c.tolerance_class}"


def _family_counts(keys: Iterable[Key]) -> str:
    counts = Counter(key[0] for key in keys)
    return ", ".join(f"{family} {n}" for family, n in sorted(counts.items()))


def format_table(result: CompareResult) -> str:
    """A plain-text table aligned in columns: one line per compared metric (failing ones first), then a summary
    line, the failing missing keys one per line, and counts of the excluded and the new keys per family."""
    header = ("verdict", "family", "params", "metric", "baseline", "current", "delta", "rel", "tol", "rule")
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
            _tol_text(c),
            _rule_text(c),
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
    selection = "no selection record" if result.selection_size is None else f"{result.selection_size} selected cells"
    text += [
        "",
        f"{len(result.comparisons)} compared, {len(result.regressions)} regression(s), "
        f"{len(result.missing_failed)} missing in current (failing), "
        f"{len(result.missing_excluded)} excluded by the selection ({selection}), "
        f"{len(result.missing_in_baseline)} missing in baseline",
    ]
    text += [f"MISSING {family} [{_short_params(params)}] {metric}" for family, params, metric in result.missing_failed]
    if result.missing_excluded:
        text.append(f"excluded by the selection (not failing): {_family_counts(result.missing_excluded)}")
    if result.missing_in_baseline:
        text.append(f"missing in baseline (not failing): {_family_counts(result.missing_in_baseline)}")
    if result.undeclared:
        text.append(f"undeclared metrics (compared two-sided): {', '.join(result.undeclared)}")
    return "\n".join(text)


def _missing_frame(result: CompareResult) -> pd.DataFrame:
    rows = [
        {"family": f, "params": p, "metric": m, "verdict": verdict_}
        for verdict_, keys in (("missing", result.missing_failed), ("excluded", result.missing_excluded))
        for f, p, m in keys
    ]
    return pd.DataFrame(rows, columns=["family", "params", "metric", "verdict"])


def write_compare_report(result: CompareResult, out_dir: Path) -> Path:
    """Write ``compare.md`` (verdict, rule, full table, missing keys) and ``compare.csv`` (one line per comparison,
    then one per missing key with verdict ``missing`` or ``excluded``) into ``out_dir``; returns compare.md."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    frame = (
        pd.concat([result.to_frame(), _missing_frame(result)], ignore_index=True)
        if result.missing_in_current
        else result.to_frame()
    )
    atomic_write_text(out_dir / "compare.csv", frame.to_csv(index=False))
    status = "REGRESSION" if result.failed else "OK"
    md = [
        f"# diffbench compare: {status}",
        "",
        f"{len(result.comparisons)} metrics compared, {len(result.regressions)} failing, "
        f"{len(result.missing_failed)} selected baseline rows missing. Rule: a metric fails when it moves in its "
        "worse direction (either way when it has none) by more than its allowed change: the baseline's seed "
        f"tolerance (`tol` ±, from the seed spread) where it has one, else `tol * max(|baseline|, "
        f"{result.abs_floor:g})` (default tol {result.tolerance:g}); directions and tolerance classes from the "
        f"metric registry: timing one-sided at {registry.TIMING_TOLERANCE:g}, exact allows no change, info never "
        "fails. A baseline row missing from this run fails unless the run's selection excluded its cell.",
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

"""The committed regression baseline: per key the mean over seeds and an allowed change from their spread.

``diffbench baseline RUN [RUN ...] --out reports/baseline`` reads the rows of one or more runs (a ``--seeds`` run,
several runs to pool, or an old baseline's results.jsonl) and writes ``baseline.jsonl``; ``diffbench compare``
reads it (:mod:`diffbench.report.compare` has the gate's rule).

**Pooling.** Values are grouped per key ``(family, params, metric)`` and per seed (the row's ``seed``). Several rows
of one key and seed in one source are averaged (one cell recording it twice); when several sources hold the same
key and seed, the later source on the command line replaces the earlier one, so a fresh seeds run supersedes an
old baseline for every key it has, and keys only the old baseline has are kept (with one seed). Rows with an
``artifact`` (arrays), metrics the registry declares as arrays, and metrics of the ``info`` class (shown, never
gated) are left out; undeclared metrics are kept (compare flags them).

**Tolerance.** For a key of the ``default`` class (or an undeclared metric) with ``n >= 3`` seeds of finite
values, the allowed absolute change is::

    tol = max(k * sd, rel_floor * max(|mean|, ABS_FLOOR))      k = 3, rel_floor = 0.01, ABS_FLOOR = 1e-3

with ``sd`` the sample standard deviation over seeds: a change counts when it is larger than three times what
changing the seed does. The floor keeps keys whose seeds agree exactly (counts, seed-independent quantities;
``sd = 0``) from failing on floating-point round-off between machines (around 1e-6 relative), and caps how tight
an unluckily small three-seed ``sd`` can make a key; at 1% it is still ten times tighter than the hand-set
default (10%). Keys with fewer seeds get no ``tol`` and compare applies the registry class rule (``--tolerance``,
default 10%); ``timing`` (one-sided, loose), ``exact`` (no change) and ``info`` keep their class rules whatever
the spread.

**File format** (``baseline.jsonl``, JSON lines, sorted): the first line is a header
``{"format": "diffbench-baseline", "version": 1, "sd_multiplier", "rel_floor", "abs_floor", "profiles",
"sources", "keys", "rule", "created", "threads"}`` (``threads``: the torch thread counts the CPU values were
computed with, :func:`~diffbench.report.compare.computed_with_threads`); then one line per (family, cells,
params)::

    {"family": "cfg", "cells": ["benchmarks/bench_cfg.py::test_x[teacher-w3]"], "params": {...},
     "metrics": {"mmd_rbf": [mean, n, sd, tol], ...}}

``mean`` is null when no seed gave a finite value, ``sd`` null below two seeds, ``tol`` (the allowed absolute
change) null where the class rule applies; ``sd`` and ``tol`` are rounded up to 3 significant digits. ``cells``
are the node ids (seed ids stripped) of the matrix cells that recorded the key, so compare can tell a row the
current run's selection excluded from one it lost; it is empty for keys from rows without a ``cell`` (an old
baseline), which compare matches by family instead.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from diffbench.io import atomic_write_text
from diffbench.metrics import registry
from diffbench.report.compare import (
    ABS_FLOOR,
    UNDECLARED,
    BaselineEntry,
    Key,
    computed_with_threads,
    row_key,
    tolerance_class,
)
from diffbench.results import strip_seed

FORMAT = "diffbench-baseline"
VERSION = 1
BASELINE_FILE = "baseline.jsonl"
SD_MULTIPLIER = 3.0
REL_FLOOR = 0.01
# Seeds a key needs for a tolerance from their spread. Two are not enough: the sd of two values has one degree of
# freedom, and a fresh seed lands beyond 3 sd of their mean about one time in four (|t_1| > 3 / sqrt(1.5)).
MIN_SEEDS = 3
MAX_BYTES = 2 * 1024 * 1024  # the committed baseline must stay under this
SEEDED_CLASSES = ("default", UNDECLARED)  # classes whose tolerance comes from the seed spread
RULE = (
    f"tol = max(k * sd, rel_floor * max(|mean|, abs_floor)) for default-class keys with n >= {MIN_SEEDS} seeds; "
    "else the class rule"
)


@dataclass
class Baseline:
    """A baseline file in memory: its header and ``{key: BaselineEntry}``."""

    entries: dict[Key, BaselineEntry]
    header: dict = field(default_factory=dict)


def seed_tolerance(
    mean: float, sd: float, k: float = SD_MULTIPLIER, rel_floor: float = REL_FLOOR, abs_floor: float = ABS_FLOOR
) -> float:
    """The allowed absolute change of a key with seed spread ``sd``: ``max(k * sd, rel_floor * max(|mean|,
    abs_floor))`` (module docstring)."""
    return max(k * sd, rel_floor * max(abs(mean), abs_floor))


def gated(metric: str) -> bool:
    """Whether the baseline keeps ``metric``: not an array, not ``info`` (undeclared names are kept)."""
    declared = registry.find(metric)
    return declared is None or (declared.kind != registry.ARRAY and declared.tolerance != "info")


def _round_up(x: float, digits: int = 3) -> float:
    """``x >= 0`` rounded up to ``digits`` significant digits (a rounded tolerance is never tighter)."""
    if x <= 0 or not math.isfinite(x):
        return x
    scale = 10 ** (digits - 1 - math.floor(math.log10(x)))
    return math.ceil(x * scale * (1 - 1e-12)) / scale


def _seed_values(rows: Iterable[dict]) -> dict[Key, dict[object, tuple[float, set[str]]]]:
    """Per key and seed: the mean of the finite values (NaN if none) and the cells (seed ids stripped)."""
    values: dict[Key, dict[object, list[float]]] = defaultdict(lambda: defaultdict(list))
    cells: dict[Key, dict[object, set[str]]] = defaultdict(lambda: defaultdict(set))
    for row in rows:
        if row.get("artifact") is not None or not gated(str(row["metric"])):
            continue
        key, seed = row_key(row), row.get("seed")
        value = row.get("value")
        values[key][seed].append(math.nan if value is None else float(value))
        if row.get("cell"):
            cells[key][seed].add(strip_seed(str(row["cell"])))
    out: dict[Key, dict[object, tuple[float, set[str]]]] = {}
    for key, by_seed in values.items():
        out[key] = {}
        for seed, vals in by_seed.items():
            finite = [v for v in vals if math.isfinite(v)]
            out[key][seed] = (sum(finite) / len(finite) if finite else math.nan, cells[key][seed])
    return out


def build_entries(
    sources: Sequence[Iterable[dict]], k: float = SD_MULTIPLIER, rel_floor: float = REL_FLOOR
) -> dict[Key, BaselineEntry]:
    """Pool the rows of ``sources`` (later sources replace earlier ones per key and seed) into baseline entries
    with mean, n, sd and the seed tolerance (module docstring)."""
    if not k > 0 or not rel_floor >= 0:
        raise ValueError(f"sd multiplier must be > 0 and rel_floor >= 0, got {k} and {rel_floor}")
    pooled: dict[Key, dict[object, tuple[float, set[str]]]] = defaultdict(dict)
    for rows in sources:
        for key, by_seed in _seed_values(rows).items():
            pooled[key].update(by_seed)
    entries = {}
    for key, by_seed in pooled.items():
        finite = [value for value, _ in by_seed.values() if math.isfinite(value)]
        n = len(finite)
        # Seeds that agree give exactly their value (sum / n can be off by an ulp: an `exact` key would then fail).
        mean = math.nan if not n else finite[0] if len(set(finite)) == 1 else math.fsum(finite) / n
        sd = math.sqrt(sum((v - mean) ** 2 for v in finite) / (n - 1)) if n >= 2 else None
        tol = None
        if n >= MIN_SEEDS and tolerance_class(key[2]) in SEEDED_CLASSES:
            tol = _round_up(seed_tolerance(mean, sd, k, rel_floor))
        cells = tuple(sorted(set().union(*(c for _, c in by_seed.values()))))
        entries[key] = BaselineEntry(
            mean=mean, n=n or len(by_seed), sd=None if sd is None else _round_up(sd), tol=tol, cells=cells
        )
    return entries


def _finite_or_none(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None


def format_baseline(entries: Mapping[Key, BaselineEntry], header: Mapping) -> str:
    """The file text: the header line, then one line per (family, cells, params), sorted."""
    groups: dict[tuple[str, tuple[str, ...], str], dict[str, list]] = defaultdict(dict)
    for (family, params, metric), e in entries.items():
        groups[family, e.cells, params][metric] = [_finite_or_none(e.mean), e.n, e.sd, e.tol]
    lines = [json.dumps({"format": FORMAT, "version": VERSION, **header}, sort_keys=True)]
    for (family, cells, params), metrics in sorted(groups.items()):
        line = {
            "family": family,
            "cells": list(cells),
            "params": json.loads(params),
            "metrics": dict(sorted(metrics.items())),
        }
        lines.append(json.dumps(line, separators=(",", ":")))
    return "\n".join(lines) + "\n"


def write_baseline(
    sources: Sequence[tuple[str, list[dict]]],
    out_dir: Path,
    k: float = SD_MULTIPLIER,
    rel_floor: float = REL_FLOOR,
) -> tuple[Path, Baseline]:
    """Build the baseline of ``sources`` (``(name, rows)`` in pooling order) and write ``out_dir/baseline.jsonl``
    atomically; returns its path and contents. Rows of several profiles cannot be pooled (ValueError)."""
    profiles = sorted({str(row["profile"]) for _, rows in sources for row in rows if row.get("profile")})
    if len(profiles) > 1:
        raise ValueError(f"the runs mix profiles {profiles}; a baseline pools one profile's rows")
    entries = build_entries([rows for _, rows in sources], k, rel_floor)
    header = {
        "sd_multiplier": k,
        "rel_floor": rel_floor,
        "abs_floor": ABS_FLOOR,
        "profiles": profiles,
        "sources": [
            {"path": name, "rows": len(rows), "seeds": sorted({r.get("seed") for r in rows}, key=str)}
            for name, rows in sources
        ],
        "keys": len(entries),
        "threads": computed_with_threads(row for _, rows in sources for row in rows),
        "rule": RULE,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    path = Path(out_dir) / BASELINE_FILE
    atomic_write_text(path, format_baseline(entries, header))
    return path, Baseline(entries, {"format": FORMAT, "version": VERSION, **header})


def _header(path: Path) -> dict | None:
    """The header of a baseline file, or None when ``path`` is something else (e.g. a results.jsonl)."""
    with open(path) as f:
        first = f.readline()
    try:
        header = json.loads(first)
    except json.JSONDecodeError:
        return None
    return header if isinstance(header, dict) and header.get("format") == FORMAT else None


def find_baseline_file(path: Path) -> Path | None:
    """The baseline file ``path`` names: ``path`` itself if it is one, ``path/baseline.jsonl`` for a directory
    that has it; None for anything else (rows in the old format: a run directory or a results.jsonl)."""
    path = Path(path)
    if path.is_dir():
        path = path / BASELINE_FILE
    return path if path.is_file() and _header(path) is not None else None


def read_baseline(path: Path) -> Baseline:
    """Read a baseline file; ValueError names a newer version or a malformed line."""
    path = Path(path)
    header = _header(path)
    if header is None:
        raise ValueError(f"{path} is not a {FORMAT} file (its first line is not the header)")
    if header.get("version", 0) > VERSION:
        raise ValueError(f"{path} has format version {header['version']}; this diffbench reads up to {VERSION}")
    entries: dict[Key, BaselineEntry] = {}
    with open(path) as f:
        next(f)
        for number, line in enumerate(f, start=2):
            if not line.strip():
                continue
            try:
                group = json.loads(line)
                params = json.dumps(group["params"], sort_keys=True)
                for metric, (mean, n, sd, tol) in group["metrics"].items():
                    entries[group["family"], params, metric] = BaselineEntry(
                        mean=math.nan if mean is None else float(mean),
                        n=int(n),
                        sd=sd,
                        tol=tol,
                        cells=tuple(group["cells"]),
                    )
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                raise ValueError(f"{path}:{number}: malformed baseline line ({type(exc).__name__}: {exc})") from None
    return Baseline(entries, header)

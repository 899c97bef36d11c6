"""Result rows: one JSON object per (cell, metric), written as they are recorded, merged at session end.

Row fields: ``family``, ``cell`` (pytest node id), ``params`` (dict: what the cell varies, the row's identity),
``metric``, ``value`` (float, None if not finite), ``seed``, ``device``, ``profile``, ``run_id``, ``versions``
(dict), ``time`` (ISO 8601), ``provenance`` (``{"git_sha", "git_dirty", "host", "threads"}`` of the process that
wrote the row; ``threads``: torch's intra-op threads when it was written, which CPU values depend on, see
``diffbench.devices``), and optionally:

- ``artifact``: a path relative to the run directory of an array the value summarises (e.g. the samples behind
  a scatter plot);
- ``context``: non-key details of the measurement (e.g. a feature extractor's weight fingerprint), kept apart
  from ``params`` so they never split one cell's rows into two;
- ``artifacts``: the provenance records of the cached artifacts the cell used (``ArtifactCache.touched``).

:class:`RowWriter` adds ``attempt``: the name of the part file the row went to (``<worker or main>-<pid>``, one per
process), so a cell that was killed half-way and run again is told apart from its rerun.

Besides ``parts/<part>.jsonl`` (rows), a run directory holds, per process that ran matrix cells:

- ``outcomes/<part>.jsonl``: one line per finished cell, ``{"cell", "family", "outcome" ("passed" | "failed" |
  "skipped"), "duration" (seconds), "attempt", "time"}``; a cell whose process died has none;
- ``selection/<part>.json``: ``{"cells": [node id, ...], "families": {node id: family}}``, the matrix cells the
  process collected and kept after ``-k``/``-m`` deselection.

:func:`merge_parts` keeps one attempt per cell (:func:`one_attempt_per_cell`), so ``results.jsonl`` never holds a
cell's rows twice, whatever was killed and rerun.
"""

from __future__ import annotations

import json
import math
import os
import platform
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from diffbench.io import atomic_np_save, atomic_write_text
from diffbench.provenance import row_provenance

RESULTS_FILE = "results.jsonl"
PARTS_DIR = "parts"
ARRAYS_DIR = "arrays"
FAILURES_FILE = "failures.json"
OUTCOMES_DIR = "outcomes"
SELECTION_DIR = "selection"
OUTCOMES = ("passed", "failed", "skipped")
COMPLETED = ("passed", "skipped")  # a cell with one of these latest outcomes is not run again by --resume
REQUIRED_FIELDS = ("family", "cell", "params", "metric", "value", "seed", "device", "profile", "run_id")


def versions() -> dict[str, str]:
    import torch

    from diffbench import __version__

    return {
        "diffbench": __version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


def make_row(
    *,
    family: str,
    cell: str,
    params: dict,
    metric: str,
    value: float,
    seed: int,
    device: str,
    profile: str,
    run_id: str,
    artifact: str | None = None,
    context: dict | None = None,
    artifacts: list[dict] | None = None,
) -> dict:
    """One result row (see the module docstring); ``artifact``, ``context`` and ``artifacts`` only when given."""
    import torch

    value = float(value)
    row = {
        "family": family,
        "cell": cell,
        "params": _jsonable(params),
        "metric": metric,
        "value": value if math.isfinite(value) else None,
        "seed": int(seed),
        "device": str(device),
        "profile": profile,
        "run_id": run_id,
        "versions": versions(),
        "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "provenance": {**row_provenance(), "threads": torch.get_num_threads()},
    }
    if artifact is not None:
        row["artifact"] = artifact
    if context is not None:
        row["context"] = _jsonable(context)
    if artifacts is not None:
        row["artifacts"] = [_jsonable(record) for record in artifacts]
    return row


def _jsonable(params: dict) -> dict:
    out = {}
    for key, value in params.items():
        if isinstance(value, (np.generic,)):
            value = value.item()
        elif not isinstance(value, (str, int, float, bool, type(None), list, dict)):
            value = str(value)
        out[str(key)] = value
    return out


@contextmanager
def naming(path: Path) -> Iterator[None]:
    """Re-raise an ``OSError`` that names no file (a failing ``write()``: disk full, file too large) as one that
    names ``path``: ``[Errno 28] No space left on device: '<path>'``."""
    try:
        yield
    except OSError as err:
        if err.filename is not None or err.errno is None:
            raise
        raise OSError(err.errno, err.strerror or str(err), str(path)) from None


def _append_line(path: Path, record: dict) -> None:
    """Append one JSON line, written through at once; a write that fails part-way (a full disk) is cut back off,
    so the file never holds a partial line that a later append would run into."""
    data = memoryview((json.dumps(record, sort_keys=True) + "\n").encode())
    with naming(path), open(path, "ab", buffering=0) as f:
        start = f.seek(0, os.SEEK_END)
        try:
            while data:
                data = data[f.write(data) :]
        except OSError:
            with suppress(OSError):
                f.truncate(start)
            raise


class RowWriter:
    """Appends rows to one part file per process, flushed per row, so a crash loses nothing recorded; every row
    gets ``attempt``, the part's name."""

    def __init__(self, run_dir: Path, part: str) -> None:
        self.run_dir = Path(run_dir)
        self.part = part
        self.path = self.run_dir / PARTS_DIR / f"{part}.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, row: dict) -> None:
        _append_line(self.path, {**row, "attempt": self.part})

    def save_array(self, name: str, array: np.ndarray) -> str:
        """Save ``array`` under ``arrays/`` (atomically) and return its path relative to the run dir."""
        rel = Path(ARRAYS_DIR) / f"{safe_name(name)}.npy"
        atomic_np_save(self.run_dir / rel, array)
        return rel.as_posix()


def safe_name(text: str) -> str:
    keep = "".join(c if c.isalnum() or c in "-_." else "_" for c in text)
    return keep.strip("_")[:150]


def read_rows(paths: Iterable[Path]) -> list[dict]:
    """Read rows from JSONL files; a truncated last line (a killed writer) is skipped, not fatal."""
    rows = []
    for path in paths:
        with open(path) as f:
            for line in f:
                line = line.strip()
                if not line:
                    continue
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
    return rows


def _when(text: str | None) -> datetime:
    """An ISO 8601 time as an aware datetime; the earliest time for a missing or malformed one."""
    try:
        when = datetime.fromisoformat(text) if text else datetime.min
    except ValueError:
        when = datetime.min
    return when if when.tzinfo is not None else when.replace(tzinfo=timezone.utc)


def one_attempt_per_cell(rows: Iterable[dict], outcomes: Iterable[dict]) -> list[dict]:
    """The rows of exactly one attempt per cell, the others dropped.

    An attempt is one process's run of a cell (``attempt`` in rows and outcome lines; rows without one count as
    one attempt). Kept: the latest attempt that passed, else the latest that was skipped, else the latest that
    wrote rows (failed, or killed before it could record an outcome). So a cell killed half-way and rerun, or
    rerun in a later session of the same run, never has its rows twice. "Latest" is the attempt's last outcome
    or row time; ties go to the attempt with an outcome, then to the larger attempt name (deterministic)."""
    priority = {"passed": 2, "skipped": 1}
    never = datetime.min.replace(tzinfo=timezone.utc)
    rows_of: dict[str, dict[str | None, list[dict]]] = {}
    rank: dict[str, dict[str | None, tuple[int, datetime, int]]] = {}  # cell -> attempt -> sort key
    for row in rows:
        attempt = row.get("attempt")
        rows_of.setdefault(row["cell"], {}).setdefault(attempt, []).append(row)
        prio, when, has_outcome = rank.setdefault(row["cell"], {}).get(attempt, (0, never, 0))
        rank[row["cell"]][attempt] = (prio, max(when, _when(row.get("time"))), has_outcome)
    for outcome in outcomes:
        cell, attempt = outcome["cell"], outcome.get("attempt")
        prio, when, _ = rank.setdefault(cell, {}).get(attempt, (0, never, 0))
        prio = max(prio, priority.get(outcome.get("outcome"), 0))
        rank[cell][attempt] = (prio, max(when, _when(outcome.get("time"))), 1)
    kept = []
    for cell, attempts in rows_of.items():
        best = max(rank[cell], key=lambda attempt: (rank[cell][attempt], attempt or ""))
        kept.extend(attempts.get(best, []))
    return kept


def _part_rows(run_dir: Path) -> list[dict]:
    """Every row of every part file; a row without ``attempt`` (written before rows had one) gets its part's."""
    rows = []
    for path in sorted((run_dir / PARTS_DIR).glob("*.jsonl")):
        rows.extend({"attempt": path.stem, **row} for row in read_rows([path]))
    return rows


def merged_rows(run_dir: Path) -> list[dict]:
    """The run's rows, one attempt per cell (:func:`one_attempt_per_cell`), in a stable order."""
    run_dir = Path(run_dir)
    rows = one_attempt_per_cell(_part_rows(run_dir), read_rows(sorted((run_dir / OUTCOMES_DIR).glob("*.jsonl"))))
    rows.sort(key=lambda r: (r["family"], r["cell"], r["metric"], r.get("time", "")))
    return rows


def merge_parts(run_dir: Path) -> list[dict]:
    """Merge every part file of ``run_dir`` (all workers, all sessions that used this run id) into
    ``results.jsonl``, one attempt per cell, written atomically (a full disk leaves the old file or none, never
    half of one; the ``OSError`` names the file); returns the merged rows in a stable order."""
    run_dir = Path(run_dir)
    rows = merged_rows(run_dir)
    path = run_dir / RESULTS_FILE
    with naming(path):
        atomic_write_text(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
    return rows


def load_run(run_dir: Path) -> list[dict]:
    """Rows of a finished run: ``results.jsonl`` if present, else its part files (one attempt per cell)."""
    run_dir = Path(run_dir)
    if (run_dir / RESULTS_FILE).is_file():
        return read_rows([run_dir / RESULTS_FILE])
    if not any((run_dir / PARTS_DIR).glob("*.jsonl")):
        raise FileNotFoundError(f"no {RESULTS_FILE} or {PARTS_DIR}/*.jsonl under {run_dir}")
    return merged_rows(run_dir)


def record_outcome(run_dir: Path, part: str, *, cell: str, family: str, outcome: str, duration: float) -> None:
    """Append a finished cell's outcome line to ``outcomes/<part>.jsonl`` (flushed at once)."""
    if outcome not in OUTCOMES:
        raise ValueError(f"outcome must be one of {', '.join(OUTCOMES)}, got {outcome!r}")
    path = Path(run_dir) / OUTCOMES_DIR / f"{part}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    time = datetime.now(timezone.utc).isoformat()  # microseconds: orders two attempts within one second
    record = {"cell": cell, "family": family, "outcome": outcome, "duration": duration, "attempt": part}
    _append_line(path, {**record, "time": time})


def write_selection(run_dir: Path, part: str, families: dict[str, str]) -> Path:
    """Record the matrix cells one process selected (``{node id: family}``) in ``selection/<part>.json``."""
    path = Path(run_dir) / SELECTION_DIR / f"{part}.json"
    with naming(path):
        atomic_write_text(path, json.dumps({"cells": list(families), "families": families}, indent=1))
    return path


def _selection_records(run_dir: Path) -> list[dict]:
    records = []
    for path in sorted((Path(run_dir) / SELECTION_DIR).glob("*.json")):
        try:
            records.append(json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError):
            continue  # written atomically, so only a foreign file gets here
    return records


def load_selection(run_dir: Path) -> set[str] | None:
    """Every matrix cell any process of the run selected; ``None`` when the run has no selection record."""
    records = _selection_records(run_dir)
    return None if not records else {cell for record in records for cell in record.get("cells", [])}


def selected_families(run_dir: Path) -> dict[str, str]:
    """``{node id: family}`` of the run's selection records (a crash report, e.g., carries no family marker)."""
    return {
        cell: family for record in _selection_records(run_dir) for cell, family in record.get("families", {}).items()
    }


def load_outcomes(run_dir: Path) -> dict[str, dict]:
    """The latest outcome line of every cell that finished at least once in the run."""
    lines = read_rows(sorted((Path(run_dir) / OUTCOMES_DIR).glob("*.jsonl")))
    lines.sort(key=lambda line: _when(line.get("time")))  # stable: equal times keep file order
    return {line["cell"]: line for line in lines}


def completed_cells(run_dir: Path) -> set[str]:
    """Cells whose latest outcome is passed or skipped: what ``--resume`` does not run again."""
    return {cell for cell, line in load_outcomes(run_dir).items() if line.get("outcome") in COMPLETED}


# --- seed repeats (``--seeds``) -----------------------------------------------------------------------------

SEED_ID_PREFIX = "seed"  # ``--seeds 0,1`` appends the id ``seed0`` / ``seed1`` to every matrix cell's node id
_SEED_ID = re.compile(rf"([\[-]){SEED_ID_PREFIX}\d+\]$")


def seed_id(seed: int) -> str:
    """The node-id component of a cell repeated under ``--seeds``: ``seed3``."""
    return f"{SEED_ID_PREFIX}{seed}"


def strip_seed(nodeid: str) -> str:
    """``nodeid`` without its ``--seeds`` id: ``t.py::test_x[a-b-seed1]`` -> ``t.py::test_x[a-b]``,
    ``t.py::test_x[seed1]`` -> ``t.py::test_x``; a node id without one is returned unchanged. Only the last
    id component counts (the plugin adds the seed last), so a parameter id such as ``dp_seed`` stays."""
    found = _SEED_ID.search(nodeid)
    if found is None:
        return nodeid
    return nodeid[: found.start()] + ("" if found.group(1) == "[" else "]")

"""Result rows: one JSON object per (cell, metric), written as they are recorded, merged at session end.

Row fields: ``family``, ``cell`` (pytest node id), ``params`` (dict: what the cell varies, the row's identity),
``metric``, ``value`` (float, None if not finite), ``seed``, ``device``, ``profile``, ``run_id``, ``versions``
(dict), ``time`` (ISO 8601), ``provenance`` (``{"git_sha", "git_dirty", "host"}`` of the process that wrote the
row), and optionally:

- ``artifact``: a path relative to the run directory of an array the value summarises (e.g. the samples behind
  a scatter plot);
- ``context``: non-key details of the measurement (e.g. a feature extractor's weight fingerprint), kept apart
  from ``params`` so they never split one cell's rows into two;
- ``artifacts``: the provenance records of the cached artifacts the cell used (``ArtifactCache.touched``).
"""

from __future__ import annotations

import json
import math
import platform
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from diffbench.io import atomic_np_save, atomic_write_text
from diffbench.provenance import row_provenance

RESULTS_FILE = "results.jsonl"
PARTS_DIR = "parts"
ARRAYS_DIR = "arrays"
FAILURES_FILE = "failures.json"
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
        "provenance": row_provenance(),
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


class RowWriter:
    """Appends rows to one part file per process, flushed per row, so a crash loses nothing recorded."""

    def __init__(self, run_dir: Path, part: str) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / PARTS_DIR / f"{part}.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, row: dict) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(row, sort_keys=True) + "\n")
            f.flush()

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


def merge_parts(run_dir: Path) -> list[dict]:
    """Merge every part file of ``run_dir`` (all workers, all sessions that used this run id) into
    ``results.jsonl``, written atomically; returns the merged rows in a stable order."""
    run_dir = Path(run_dir)
    rows = read_rows(sorted((run_dir / PARTS_DIR).glob("*.jsonl")))
    rows.sort(key=lambda r: (r["family"], r["cell"], r["metric"], r.get("time", "")))
    atomic_write_text(run_dir / RESULTS_FILE, "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
    return rows


def load_run(run_dir: Path) -> list[dict]:
    """Rows of a finished run: ``results.jsonl`` if present, else its part files."""
    run_dir = Path(run_dir)
    if (run_dir / RESULTS_FILE).is_file():
        return read_rows([run_dir / RESULTS_FILE])
    parts = sorted((run_dir / PARTS_DIR).glob("*.jsonl"))
    if not parts:
        raise FileNotFoundError(f"no {RESULTS_FILE} or {PARTS_DIR}/*.jsonl under {run_dir}")
    return read_rows(parts)

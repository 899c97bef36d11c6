"""The ``diffbench`` command: ``diffbench report`` rebuilds (or merges) reports, ``diffbench compare`` checks a run
against a baseline.

Exit codes: 0 success / no regression, 1 regression (compare), 2 bad input (the message names it).

Each subcommand is one entry in ``COMMANDS``: a help line, a function adding its arguments, and a function
``run(args) -> exit code``. Adding a subcommand is adding one entry (see the export-samples hook below).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from diffbench.results import ARRAYS_DIR, FAILURES_FILE, PARTS_DIR, RESULTS_FILE, load_run, read_rows, safe_name


class UsageError(Exception):
    """Bad input from the command line; reported as ``diffbench <command>: error: <message>``, exit code 2."""


@dataclass(frozen=True)
class Command:
    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


# --- report -----------------------------------------------------------------------------------------------


def check_run_dir(path: Path) -> Path:
    """``path`` if it is a run directory (holds ``results.jsonl`` or ``parts/*.jsonl``), else a UsageError."""
    if not path.is_dir():
        raise UsageError(f"not a run directory: {path} (no such directory)")
    if not (path / RESULTS_FILE).is_file() and not any((path / PARTS_DIR).glob("*.jsonl")):
        raise UsageError(f"not a run directory: {path} (it has no {RESULTS_FILE} or {PARTS_DIR}/*.jsonl)")
    return path


def merge_runs(run_dirs: Sequence[Path], out: Path) -> tuple[list[dict], list[dict]]:
    """Copy the rows, failures and arrays of several runs into ``out``; return (rows, failures).

    Each run's arrays go to ``arrays/<run dir name>/...`` (made unique) and the rows' ``artifact`` paths are
    rewritten to match, so two runs that saved arrays under the same name do not overwrite each other.
    """
    from diffbench.report import load_failures

    rows, failures, prefixes = [], [], set()
    for run_dir in run_dirs:
        prefix = base = safe_name(run_dir.resolve().name) or "run"
        n = 1
        while prefix in prefixes:
            n += 1
            prefix = f"{base}-{n}"
        prefixes.add(prefix)
        for row in load_run(run_dir):
            if row.get("artifact"):
                parts = Path(row["artifact"]).parts
                parts = parts[1:] if parts and parts[0] == ARRAYS_DIR else parts
                rel = Path(ARRAYS_DIR, prefix, *parts)
                src, dst = run_dir / row["artifact"], out / rel
                if src.is_file() and not dst.exists():
                    dst.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(src, dst)
                row = {**row, "artifact": rel.as_posix()}
            rows.append(row)
        failures += load_failures(run_dir)
    rows.sort(key=lambda r: (r["family"], r["cell"], r["metric"], r.get("time", "")))
    _write_atomic(out / RESULTS_FILE, "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
    _write_atomic(out / FAILURES_FILE, json.dumps(failures, indent=1))
    return rows, failures


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _configure_report(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "run_dirs",
        nargs="+",
        type=Path,
        metavar="RUN_DIR",
        help="run directory (reports/<run_id>) holding results.jsonl or parts/*.jsonl",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="with several runs (or to copy one): where the merged report goes (default reports/merged-<timestamp>)",
    )


def report(args: argparse.Namespace) -> int:
    """One run dir: rebuild its report in place. Several (or ``--out``): merge them into ``--out`` and build."""
    from diffbench.report import build_report

    run_dirs = [check_run_dir(p) for p in args.run_dirs]
    if len(run_dirs) == 1 and args.out is None:
        print(build_report(run_dirs[0]))
        return 0
    out = args.out or Path("reports") / f"merged-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    if out.exists() and any(out.resolve() == p.resolve() for p in run_dirs):
        raise UsageError(f"--out {out} is one of the runs being merged; choose a new directory")
    if (out / RESULTS_FILE).exists():
        raise UsageError(f"--out {out} already holds a run ({RESULTS_FILE}); choose a new directory")
    out.mkdir(parents=True, exist_ok=True)
    rows, failures = merge_runs(run_dirs, out)
    print(build_report(out, rows=rows, failures=failures))
    return 0


# --- compare ----------------------------------------------------------------------------------------------


def load_rows(path: Path) -> list[dict]:
    """Rows of a run directory or of a results.jsonl file; a UsageError names a missing path, an empty file,
    or a row without family/metric."""
    if path.is_file():
        rows = read_rows([path])
    elif path.is_dir():
        rows = load_run(check_run_dir(path))
    else:
        raise UsageError(f"no such run directory or results file: {path}")
    if not rows:
        raise UsageError(f"no result rows in {path}")
    for row in rows:
        missing = [key for key in ("family", "metric") if key not in row]
        if missing:
            raise UsageError(f"malformed row in {path}: missing {', '.join(missing)}: {json.dumps(row)[:200]}")
    return rows


def _tolerance(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"tolerance must be a number >= 0, got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"tolerance must be a number >= 0, got {text!r}")
    return value


def _metric_tolerance(text: str) -> tuple[str, float]:
    name, sep, tol = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=TOL (e.g. mmd_rbf=0.2 or '*_seconds=0.5'), got {text!r}")
    return name, _tolerance(tol)


def _configure_compare(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("baseline", type=Path, metavar="BASELINE", help="baseline run directory or results.jsonl")
    parser.add_argument("current", type=Path, metavar="CURRENT", help="current run directory or results.jsonl")
    parser.add_argument(
        "--tolerance",
        type=_tolerance,
        default=0.1,
        help="default relative tolerance (default 0.1 = 10%% of |baseline|)",
    )
    parser.add_argument(
        "--metric-tolerance",
        type=_metric_tolerance,
        action="append",
        default=[],
        metavar="NAME=TOL",
        help="per-metric tolerance; NAME may be a pattern like '*_seconds'",
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="where compare.md / compare.csv go (default: the CURRENT run directory)"
    )


def compare(args: argparse.Namespace) -> int:
    """Print the delta table, write compare.md/.csv; exit 1 when a metric regressed."""
    from diffbench.report import compare_runs, format_table, write_compare_report

    baseline, current = load_rows(args.baseline), load_rows(args.current)
    result = compare_runs(baseline, current, tolerance=args.tolerance, tolerances=dict(args.metric_tolerance))
    out = args.out or (args.current if args.current.is_dir() else args.current.parent)
    print(format_table(result))
    print(f"report: {write_compare_report(result, out)}")
    print("REGRESSION" if result.has_regression else "OK")
    return 1 if result.has_regression else 0


# --- the command table ------------------------------------------------------------------------------------

COMMANDS: dict[str, Command] = {
    "report": Command("rebuild a run's report, or merge several runs into one", _configure_report, report),
    "compare": Command("compare a run against a baseline; exit 1 on regression", _configure_compare, compare),
    # HOOK export-samples: write `_configure_export_samples(parser)` and `export_samples(args) -> int` above and
    # register them here as "export-samples": Command("...", _configure_export_samples, export_samples).
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="diffbench", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, command in COMMANDS.items():
        sub = subparsers.add_parser(name, help=command.help, description=command.help)
        command.configure(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``diffbench`` command line; returns the exit code (0 ok, 1 regression, 2 bad input)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits on --help (0) and bad usage (2): return that code instead
        return exc.code if isinstance(exc.code, int) else 0
    try:
        return COMMANDS[args.command].run(args)
    except UsageError as exc:
        print(f"diffbench {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())

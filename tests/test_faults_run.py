"""Faults of a benchmark run, survived: real kills and crashes, resumes, a full disk, an unwritable report dir.

The merge rule is checked as a pure function; the rest runs inner pytest sessions (pytester) over a tiny
family-marked module whose four cells each record two rows computed with torch from the cell's seed. A cell can be
told (environment variables) to fail, ``SIGKILL`` its process or ``os._exit`` its xdist worker once, after its
first row: a marker file makes the fault happen only the first time.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch

from diffbench.results import (
    OUTCOMES_DIR,
    PARTS_DIR,
    RESULTS_FILE,
    completed_cells,
    load_outcomes,
    load_selection,
    merge_parts,
    one_attempt_per_cell,
    read_rows,
    record_outcome,
    write_selection,
)

CELLS = ("a", "b", "c", "d")
RUN = "run-x"

MODULE = """
import os
import pathlib
import signal

import pytest
import torch

from diffbench.metrics.registry import NEITHER, QUALITY, Metric, declare

pytestmark = pytest.mark.metrics  # any discovered family's marker
declare(Metric("fault_value", NEITHER, QUALITY, "a number drawn from the cell's seed"))


@pytest.mark.parametrize("cell", ["a", "b", "c", "d"])
def test_cell(cell, record):
    gen = torch.Generator().manual_seed(ord(cell))
    x, w = torch.randn(64, generator=gen), torch.randn(8, 8, generator=gen)
    record("fault_value", float(x.sum()), cell=cell, part=1)
    flag = pathlib.Path(os.environ["FAULT_FLAG"])
    fault = os.environ.get("FAULT_MODE") if os.environ.get("FAULT_CELL") == cell else None
    if fault and not flag.exists():
        flag.touch()
        if fault == "raise":
            raise RuntimeError("cell fails on its first attempt")
        if fault == "sigkill":
            os.kill(os.getpid(), signal.SIGKILL)
        if fault == "exit":
            os._exit(1)
    record("fault_value", float((w @ w.T).trace()), cell=cell, part=2)
"""


def _cell(name: str) -> str:
    return f"test_cells.py::test_cell[{name}]"


# ------------------------------------------------------------------------------------------- the merge rule


def _row(cell: str, metric: str, attempt: str | None, second: int) -> dict:
    row = {"family": "metrics", "cell": cell, "metric": metric, "params": {}, "value": float(second)}
    row["time"] = f"2024-01-01T00:00:{second:02d}+00:00"
    return row if attempt is None else {**row, "attempt": attempt}


def _outcome(cell: str, attempt: str, outcome: str, second: int) -> dict:
    return {"cell": cell, "attempt": attempt, "outcome": outcome, "time": f"2024-01-01T00:00:{second:02d}.5+00:00"}


def _attempts(rows: list[dict]) -> dict[str, set]:
    found: dict[str, set] = {}
    for row in rows:
        found.setdefault(row["cell"], set()).add(row.get("attempt"))
    return found


def test_merge_keeps_one_attempt_per_cell() -> None:
    rows = [
        # x: killed after one row (no outcome), then rerun and passed
        _row("x", "m1", "main-1", 1),
        _row("x", "m1", "main-2", 5),
        _row("x", "m2", "main-2", 6),
        # y: passed, then rerun in a later session where it failed part-way: the passed rows stay
        _row("y", "m1", "main-1", 2),
        _row("y", "m2", "main-1", 2),
        _row("y", "m1", "main-2", 7),
        # z: failed twice, both times with rows: the later attempt's
        _row("z", "m1", "gw0-1", 3),
        _row("z", "m1", "gw1-2", 8),
        # w: rows without "attempt" (an older run) are one attempt; a later passed attempt replaces them
        _row("w", "m1", None, 1),
        _row("w", "m2", None, 1),
        _row("w", "m1", "main-2", 9),
        # v: passed, then skipped later: the measured rows stay; u: only ever written by one attempt
        _row("v", "m1", "main-1", 4),
        _row("u", "m1", "main-1", 4),
    ]
    outcomes = [
        _outcome("x", "main-2", "passed", 6),
        _outcome("y", "main-1", "passed", 2),
        _outcome("y", "main-2", "failed", 7),
        _outcome("z", "gw0-1", "failed", 3),
        _outcome("z", "gw1-2", "failed", 8),
        _outcome("w", "main-2", "passed", 9),
        _outcome("v", "main-1", "passed", 4),
        _outcome("v", "main-2", "skipped", 9),
    ]
    kept = one_attempt_per_cell(rows, outcomes)
    assert _attempts(kept) == {
        "x": {"main-2"},
        "y": {"main-1"},
        "z": {"gw1-2"},
        "w": {"main-2"},
        "v": {"main-1"},
        "u": {"main-1"},
    }
    assert sorted((r["cell"], r["metric"]) for r in kept) == sorted(
        [("x", "m1"), ("x", "m2"), ("y", "m1"), ("y", "m2"), ("z", "m1"), ("w", "m1"), ("v", "m1"), ("u", "m1")]
    )
    # rows without "attempt" and no other attempt: all of them are kept, as one attempt
    old = [_row("w", "m1", None, 1), _row("w", "m2", None, 1)]
    assert one_attempt_per_cell(old, []) == old


def test_merge_parts_counts_an_old_part_file_as_one_attempt(tmp_path: Path) -> None:
    """Part files written before rows had an ``attempt``: each file is one attempt; the later one wins a cell."""
    parts = tmp_path / PARTS_DIR
    parts.mkdir()
    early = [_row("x", "m1", None, 1), _row("x", "m2", None, 1), _row("only-early", "m1", None, 1)]
    late = [_row("x", "m1", None, 4)]  # x killed half-way in a later process
    (parts / "main-10.jsonl").write_text("".join(json.dumps(r) + "\n" for r in early))
    (parts / "main-11.jsonl").write_text("".join(json.dumps(r) + "\n" for r in late) + '{"trunc')
    rows = merge_parts(tmp_path)
    assert sorted((r["cell"], r["metric"], r["attempt"]) for r in rows) == [
        ("only-early", "m1", "main-10"),
        ("x", "m1", "main-11"),
    ]
    assert read_rows([tmp_path / RESULTS_FILE]) == rows


def test_outcome_and_selection_records(tmp_path: Path) -> None:
    assert load_selection(tmp_path) is None and load_outcomes(tmp_path) == {} and completed_cells(tmp_path) == set()
    write_selection(tmp_path, "gw0-1", {"t[a]": "metrics", "t[b]": "metrics"})
    write_selection(tmp_path, "gw1-2", {"t[b]": "metrics", "t[c]": "metrics"})
    assert load_selection(tmp_path) == {"t[a]", "t[b]", "t[c]"}
    for cell, outcome in (("t[a]", "failed"), ("t[b]", "passed"), ("t[c]", "skipped"), ("t[a]", "passed")):
        record_outcome(tmp_path, "main-3", cell=cell, family="metrics", outcome=outcome, duration=0.5)
    record_outcome(tmp_path, "main-4", cell="t[b]", family="metrics", outcome="failed", duration=0.5)
    assert {cell: line["outcome"] for cell, line in load_outcomes(tmp_path).items()} == {
        "t[a]": "passed",
        "t[b]": "failed",  # the latest line counts, across part files
        "t[c]": "skipped",
    }
    assert completed_cells(tmp_path) == {"t[a]", "t[c]"}
    with pytest.raises(ValueError, match="outcome must be one of passed, failed, skipped, got 'error'"):
        record_outcome(tmp_path, "main-3", cell="t[a]", family="metrics", outcome="error", duration=0.0)


# ------------------------------------------------------------------------------------------- whole sessions


@pytest.fixture
def bench(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    monkeypatch.setenv("DIFFBENCH_CACHE", str(pytester.path / "cache"))
    monkeypatch.setenv("FAULT_FLAG", str(pytester.path / "fault-happened"))
    monkeypatch.delenv("FAULT_MODE", raising=False)
    monkeypatch.delenv("FAULT_CELL", raising=False)
    pytester.makepyfile(test_cells=MODULE)
    return pytester


ARGS = ("-p", "diffbench.pytest_plugin", "--report-dir", "reports", "-p", "no:cacheprovider")


def _run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    """A separate pytest process (in-process sessions would re-import numpy's and scipy's extension modules)."""
    return pytester.runpytest_subprocess(*ARGS, *args)


def _fault(monkeypatch: pytest.MonkeyPatch, mode: str, cell: str) -> None:
    monkeypatch.setenv("FAULT_MODE", mode)
    monkeypatch.setenv("FAULT_CELL", cell)


def _results(run_dir: Path) -> list[dict]:
    lines = (run_dir / RESULTS_FILE).read_text().splitlines()
    return [json.loads(line) for line in lines]  # every line parses: the file is whole


def _row_count(rows: list[dict]) -> Counter:
    return Counter((r["params"]["cell"], r["params"]["part"]) for r in rows)


def _ran(run_dir: Path, attempt: str) -> set[str]:
    """Cells with an outcome line of ``attempt``."""
    lines = read_rows(sorted((run_dir / OUTCOMES_DIR).glob("*.jsonl")))
    return {line["cell"] for line in lines if line["attempt"] == attempt}


EVERY_ROW_ONCE = Counter({(cell, part): 1 for cell in CELLS for part in (1, 2)})


def test_resume_runs_only_the_failed_and_missing_cells(bench: pytest.Pytester, monkeypatch) -> None:
    _fault(monkeypatch, "raise", "b")
    first = _run(bench, "--run-id", RUN, "--deselect", _cell("d"))  # d is missing from the first session
    first.assert_outcomes(passed=2, failed=1, deselected=1)
    run_dir = bench.path / "reports" / RUN
    assert completed_cells(run_dir) == {_cell("a"), _cell("c")}
    assert load_selection(run_dir) == {_cell("a"), _cell("b"), _cell("c")}
    assert _row_count(_results(run_dir))[("b", 1)] == 1, "the failed attempt's row is kept until a rerun"

    second = _run(bench, "--run-id", RUN, "--resume")
    second.assert_outcomes(passed=2, deselected=2)
    second.stdout.fnmatch_lines(["*resuming run run-x: 2 completed cell(s) are not run again*"])
    attempts = {line["attempt"] for line in load_outcomes(run_dir).values()}
    assert len(attempts) == 2
    (rerun,) = {load_outcomes(run_dir)[_cell("b")]["attempt"]}
    assert _ran(run_dir, rerun) == {_cell("b"), _cell("d")}
    rows = _results(run_dir)
    assert _row_count(rows) == EVERY_ROW_ONCE
    assert {r["attempt"] for r in rows if r["params"]["cell"] in "bd"} == {rerun}
    assert json.loads((run_dir / "failures.json").read_text()) == [], "b passed on its rerun"

    third = _run(bench, "--run-id", RUN, "--resume")  # nothing left: everything deselected
    third.assert_outcomes(deselected=4)
    assert _results(run_dir) == rows


def test_a_cell_killed_mid_way_is_rerun_once(bench: pytest.Pytester, monkeypatch) -> None:
    _fault(monkeypatch, "sigkill", "b")
    killed = _run(bench, "--run-id", RUN, "-n", "0")
    assert killed.ret == -signal.SIGKILL, "the process really died"
    run_dir = bench.path / "reports" / RUN
    assert not (run_dir / RESULTS_FILE).exists()
    (killed_part,) = (run_dir / PARTS_DIR).glob("*.jsonl")
    before = read_rows([killed_part])
    assert _row_count(before) == Counter({("a", 1): 1, ("a", 2): 1, ("b", 1): 1})
    assert completed_cells(run_dir) == {_cell("a")}

    resumed = _run(bench, "--run-id", RUN, "--resume", "-n", "0")
    resumed.assert_outcomes(passed=3, deselected=1)
    rows = _results(run_dir)
    assert _row_count(rows) == EVERY_ROW_ONCE, "b's half-written first attempt is dropped, nothing is lost"
    assert [r for r in rows if r["params"]["cell"] == "a"] == [r for r in before if r["params"]["cell"] == "a"]
    assert {r["attempt"] for r in rows if r["params"]["cell"] == "b"} != {killed_part.stem}


def test_an_xdist_worker_crash_keeps_the_other_rows_and_lists_the_cell(bench: pytest.Pytester, monkeypatch) -> None:
    _fault(monkeypatch, "exit", "b")
    result = _run(bench, "--run-id", RUN, "-n", "2")
    result.assert_outcomes(passed=3, failed=1)
    result.stdout.fnmatch_lines(["*crashed while running*test_cell?b?*"])
    run_dir = bench.path / "reports" / RUN
    rows = _results(run_dir)
    assert _row_count(rows) == EVERY_ROW_ONCE - Counter({("b", 2): 1}), "b keeps the row it wrote before the crash"
    failures = json.loads((run_dir / "failures.json").read_text())
    assert [(f["cell"], f["family"]) for f in failures] == [(_cell("b"), "metrics")]
    assert "crashed" in failures[0]["message"]
    assert completed_cells(run_dir) == {_cell(c) for c in "acd"}, "a crashed cell is not done: --resume reruns it"


def test_two_workers_and_one_process_record_identical_values(bench: pytest.Pytester) -> None:
    _run(bench, "--run-id", "xdist", "-n", "2").assert_outcomes(passed=4)
    _run(bench, "--run-id", "serial", "-n", "0").assert_outcomes(passed=4)
    values = {}
    for run in ("xdist", "serial"):
        rows = _results(bench.path / "reports" / run)
        values[run] = {(r["cell"], r["params"]["part"]): r["value"] for r in rows}
    assert len(values["serial"]) == 8
    assert values["xdist"] == values["serial"]
    attempts = {r["attempt"] for r in _results(bench.path / "reports" / "xdist")}
    assert {a.split("-")[0] for a in attempts} == {"gw0", "gw1"}, "both workers ran cells"


THREADS_MODULE = """
import pytest
import torch

from diffbench.metrics.registry import LOWER, NEITHER, QUALITY, TIMING, Metric, declare

pytestmark = pytest.mark.metrics
declare(
    Metric("sum_of_a_million", NEITHER, QUALITY, "a float32 reduction whose rounding depends on the threads"),
    Metric("timed_threads", LOWER, TIMING, "torch threads inside a timing cell", tolerance="timing"),
)


@pytest.mark.parametrize("cell", ["a", "b", "c"])
def test_value(cell, record):
    x = torch.randn(1 << 20, generator=torch.Generator().manual_seed(ord(cell)))
    record("sum_of_a_million", float(x.sum()), cell=cell)


@pytest.mark.timing
def test_timed(record):
    record("timed_threads", float(torch.get_num_threads()))
"""


def test_values_do_not_depend_on_n_at_the_default_threads(pytester: pytest.Pytester, monkeypatch) -> None:
    from diffbench.devices import THREADS_ENV, threads_per_worker

    x = torch.randn(1 << 20, generator=torch.Generator().manual_seed(ord("a")))
    before, sums = torch.get_num_threads(), {}
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            sums[n] = float(x.sum())
    finally:
        torch.set_num_threads(before)
    assert sums[1] != sums[2], "the recorded sum depends on the threads, so the equality below can fail"
    monkeypatch.setenv("DIFFBENCH_CACHE", str(pytester.path / "cache"))
    monkeypatch.setenv(THREADS_ENV, "2")  # two cores, whatever this machine has: -n 0 with `auto` gets both
    pytester.makepyfile(test_threads=THREADS_MODULE)
    _run(pytester, "--run-id", "xdist", "-n", "2").assert_outcomes(passed=3, skipped=1)
    _run(pytester, "--run-id", "serial", "-n", "0").assert_outcomes(passed=4)
    _run(pytester, "--run-id", "auto", "-n", "0", "--threads", "auto").assert_outcomes(passed=4)
    values, threads = {}, {}
    for run in ("xdist", "serial", "auto"):
        rows = _results(pytester.path / "reports" / run)
        values[run] = {r["params"]["cell"]: r["value"] for r in rows if r["metric"] == "sum_of_a_million"}
        metrics = {r["metric"] for r in rows}
        threads[run] = {m: {r["provenance"]["threads"] for r in rows if r["metric"] == m} for m in metrics}
    assert values["xdist"] == values["serial"] and len(values["serial"]) == 3
    assert values["serial"]["a"] == sums[1] and values["auto"]["a"] == sums[2]
    assert threads["xdist"] == {"sum_of_a_million": {1}}  # the timing cell waits for the serial pass
    # A timing cell measures with the process's cores (here 2), whatever --threads the values use.
    assert threads["serial"] == {"sum_of_a_million": {1}, "timed_threads": {threads_per_worker(1, cores=2)}}
    assert threads["auto"] == {"sum_of_a_million": {2}, "timed_threads": {2}}


def test_unwritable_report_dir_is_one_usage_error(bench: pytest.Pytester) -> None:
    (bench.path / "blocker").write_text("a file where the report dir's parent should be")  # fails for root too
    result = _run(bench, "--report-dir", "blocker/reports")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: --report-dir blocker/reports: cannot create *: *blocker is not a directory"])
    result = _run(bench, "--resume")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: --resume needs --run-id*"])


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only directory anyway")
def test_read_only_report_dir_is_one_usage_error(bench: pytest.Pytester) -> None:
    (bench.path / "reports").mkdir(mode=0o500)
    result = _run(bench)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: --report-dir reports: cannot write *: *reports is not writable"])


def _with_file_size_limit(pytester: pytest.Pytester, limit: int, *args: str) -> subprocess.CompletedProcess:
    """An inner session whose files cannot grow past ``limit`` bytes (``RLIMIT_FSIZE``, ``SIGXFSZ`` ignored: writes
    fail with ``EFBIG`` as on a full disk); its output goes to pipes, which the limit does not cover."""

    def limit_files() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # an ignored signal stays ignored across exec
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))

    command = [sys.executable, "-m", "pytest", *ARGS, "-s", "-n", "0", *args]
    return subprocess.run(
        command, cwd=pytester.path, capture_output=True, text=True, preexec_fn=limit_files, timeout=120
    )


def test_a_full_disk_is_one_clear_error_and_never_a_half_written_results_file(bench: pytest.Pytester) -> None:
    _run(bench, "--run-id", RUN).assert_outcomes(passed=4)
    run_dir = bench.path / "reports" / RUN
    whole = (run_dir / RESULTS_FILE).read_bytes()

    # the rows fit, the merged results do not: the merge fails and the previous results file stays whole
    merge_fails = _with_file_size_limit(bench, len(whole) // 2, "--run-id", RUN, _cell("a"))
    assert merge_fails.returncode == pytest.ExitCode.TESTS_FAILED, merge_fails.stdout + merge_fails.stderr
    assert "1 passed" in merge_fails.stdout
    errors = [line for line in merge_fails.stdout.splitlines() if line.startswith("diffbench: could not write")]
    assert len(errors) == 1 and "[Errno 27] File too large" in errors[0] and "results.jsonl" in errors[0], errors
    assert "INTERNALERROR" not in merge_fails.stdout + merge_fails.stderr
    assert (run_dir / RESULTS_FILE).read_bytes() == whole
    assert not [p.name for p in run_dir.iterdir() if p.name.endswith(".tmp")], "no temporary file is left"

    # not even one row fits: the cell fails naming the part file; results.jsonl is still whole
    row_fails = _with_file_size_limit(bench, 300, "--run-id", RUN, _cell("c"))
    assert row_fails.returncode == pytest.ExitCode.TESTS_FAILED, row_fails.stdout + row_fails.stderr
    assert "1 failed" in row_fails.stdout
    failed = [line for line in row_fails.stdout.splitlines() if "OSError: [Errno 27] File too large" in line]
    assert any(f"/{PARTS_DIR}/main-" in line for line in failed), failed
    assert "INTERNALERROR" not in row_fails.stdout + row_fails.stderr
    assert (run_dir / RESULTS_FILE).read_bytes() == whole
    for part in (run_dir / PARTS_DIR).glob("*.jsonl"):
        assert part.read_bytes().endswith(b"\n") or not part.read_bytes(), f"{part.name} ends in a partial line"

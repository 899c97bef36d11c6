"""The pytest plugin end to end: an inner pytest session (2 xdist workers) over a tiny family module."""

from __future__ import annotations

import json

import pytest


@pytest.fixture(autouse=True)
def _scratch_cache(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIFFBENCH_CACHE", str(pytester.path / "cache"))


FAMILY_MODULE = """
import pytest

from diffbench.metrics.registry import BOOKKEEPING, LOWER, NEITHER, QUALITY, TIMING, Metric, declare

pytestmark = pytest.mark.metrics  # any discovered family's marker
declare(
    Metric("value", NEITHER, QUALITY, "a test value"),
    Metric("worker", NEITHER, BOOKKEEPING, "which worker wrote the row"),
    Metric("partial", NEITHER, QUALITY, "recorded before a failure"),
    Metric("seconds", LOWER, TIMING, "a timing", tolerance="timing"),
)

@pytest.mark.parametrize("scale", [1, 2, 3, 4])
def test_cell(scale, record):
    record("value", scale * 1.5, scale=scale)
    record("worker", 1.0, scale=scale, worker=__import__("os").environ.get("PYTEST_XDIST_WORKER", "main"))

def test_broken_cell(record):
    record("partial", 7.0, stage="before failure")
    raise RuntimeError("this cell fails on purpose")

@pytest.mark.timing
def test_timed(record):
    record("seconds", 0.5)

def test_undeclared_metric(record):
    record("never_declared_anywhere", 1.0)
"""


def _run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    pytester.makepyfile(test_family=FAMILY_MODULE)
    return pytester.runpytest_subprocess(
        "-p", "diffbench.pytest_plugin", "--report-dir", "reports", "-p", "no:cacheprovider", *args
    )


def _rows(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "results.jsonl").read_text().splitlines()]


def test_rows_from_all_workers_are_merged_and_failures_listed(pytester: pytest.Pytester) -> None:
    result = _run(pytester, "-n", "2")
    result.assert_outcomes(passed=4, failed=2, skipped=1)
    result.stdout.fnmatch_lines(["*never_declared_anywhere*not declared*"])
    run_dir = (pytester.path / "reports" / "latest").resolve()
    rows = _rows(run_dir)
    values = sorted(r["value"] for r in rows if r["metric"] == "value")
    assert values == [1.5, 3.0, 4.5, 6.0]
    workers = {r["params"]["worker"] for r in rows if r["metric"] == "worker"}
    assert workers == {"gw0", "gw1"}, "both workers' rows must reach the merged results"
    assert any(r["metric"] == "partial" for r in rows), "a failing cell keeps the rows it recorded"
    for row in rows:
        for key in ("family", "cell", "params", "metric", "value", "seed", "device", "profile", "run_id"):
            assert key in row
        assert row["family"] == "metrics" and row["run_id"] == run_dir.name and row["profile"] == "smoke"
        assert row["provenance"]["host"], "every row says which machine and code wrote it"
    assert not any(r["metric"] == "never_declared_anywhere" for r in rows)
    failures = json.loads((run_dir / "failures.json").read_text())
    assert sorted(f["cell"] for f in failures) == [
        "test_family.py::test_broken_cell",
        "test_family.py::test_undeclared_metric",
    ]
    report = (run_dir / "report.md").read_text()
    assert "test_broken_cell" in report
    for name in ("summary.csv", "index.html"):
        assert (run_dir / name).is_file()


def test_serial_timing_pass_joins_the_same_run(pytester: pytest.Pytester) -> None:
    _run(pytester, "-n", "2").assert_outcomes(passed=4, failed=2, skipped=1)
    first = (pytester.path / "reports" / "latest").resolve()
    _run(pytester, "-m", "timing", "-n", "0", "--run-id", "latest").assert_outcomes(passed=1)
    assert (pytester.path / "reports" / "latest").resolve() == first
    rows = _rows(first)
    assert any(r["metric"] == "seconds" for r in rows)
    assert sorted(r["value"] for r in rows if r["metric"] == "value") == [1.5, 3.0, 4.5, 6.0]
    failures = json.loads((first / "failures.json").read_text())
    assert len(failures) == 2, "earlier failures are kept"


def test_bad_options_are_usage_errors(pytester: pytest.Pytester) -> None:
    result = _run(pytester, "--profile", "huge")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*invalid choice: 'huge'*"])
    result = _run(pytester, "--device", "tpu")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*unknown device 'tpu'*"])
    result = _run(pytester, "--run-id", "latest")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--run-id latest*does not exist*"])
    # family options are discovered from the family modules and checked before anything runs
    result = _run(pytester, "--size-factors", "1.5")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*size factor must be in (0, 1], got 1.5*"])
    result = _run(pytester, "--size-range", "0.6-0.9", "--size-factors", "0.1,0.2")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*no size factor selected*"])
    for bad in ("-1", "nan", "3,x"):
        result = _run(pytester, "--guidance-scales", bad)
        assert result.ret == pytest.ExitCode.USAGE_ERROR
        result.stderr.fnmatch_lines(["*guidance scale must be a finite number >= 0, got*"])

"""nox sessions: tests, lint, the benchmark matrix per device, the nightly regression run, report rebuilds.

nox -s tests                 unit and property tests
nox -s lint                  ruff check + format check
nox -s "bench(device='cpu')" the smoke matrix on one device (posargs go to pytest, e.g. -- -k cfg)
nox -s nightly               bench + compare against reports/baseline (fails on regressions and missing rows)
nox -s report -- RUN_DIR...  rebuild a report from saved rows
"""

from __future__ import annotations

import os

import nox

DEVICES = ["cpu", "cuda", "mps"]
WORKERS = os.environ.get("DIFFBENCH_WORKERS", "2")
nox.options.sessions = ["tests", "lint"]
nox.options.reuse_existing_virtualenvs = True


def _install(session: nox.Session) -> None:
    session.install("-e", ".[dev]")


@nox.session
def tests(session: nox.Session) -> None:
    """Unit and hypothesis tests of the library (HYPOTHESIS_PROFILE=nightly for the long run)."""
    _install(session)
    session.run("pytest", "-n", WORKERS, *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff lint and format check."""
    session.install("ruff")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


def _matrix(session: nox.Session, *options: str) -> None:
    """The parallel pass over the matrix, then the serial timing pass joining the same report."""
    session.run("pytest", "benchmarks", "-n", WORKERS, *options, *session.posargs)
    timing = ["-m", "timing", "-n", "0", "--run-id", "latest"]
    session.run("pytest", "benchmarks", *timing, *options, *session.posargs, success_codes=[0, 5])


@nox.session
@nox.parametrize("device", DEVICES, ids=DEVICES)
def bench(session: nox.Session, device: str) -> None:
    """The benchmark matrix on one device kind (profile from $DIFFBENCH_PROFILE, default smoke)."""
    _install(session)
    _matrix(session, "--profile", os.environ.get("DIFFBENCH_PROFILE", "smoke"), "--device", device)


@nox.session
def nightly(session: nox.Session) -> None:
    """The smoke matrix on CPU, then the regression gate against the committed baseline (reports/baseline):
    nox -s nightly [-- -k batch_configs]; posargs narrow the matrix, and compare then treats the baseline rows of
    the cells left out as excluded (it reads the run's selection record) while a selected cell's missing row fails."""
    _install(session)
    _matrix(session, "--device", "cpu")
    # Tolerances: the baseline's seed-spread ones, else the registry's class rule (timings one-sided and loose);
    # directions from the metric registry. See reports/baseline/README.md.
    session.run("diffbench", "compare", "reports/baseline", "reports/latest", "--out", "reports/latest/compare")


@nox.session
def report(session: nox.Session) -> None:
    """Rebuild a report from saved rows: nox -s report -- reports/RUN [reports/RUN2 ...]."""
    _install(session)
    session.run("diffbench", "report", *(session.posargs or ["reports/latest"]))

"""The diffbench pytest plugin: options, fixtures, and the merge of every worker's rows into one report.

Loaded by the repository's root ``conftest.py``. Families, their markers and their command-line options come
from :func:`diffbench.families.discover`; this module names no family. Each worker appends rows to its own part file in
``<report-dir>/<run-id>/parts/`` as they are recorded (a crashing cell loses nothing else); at session end the
controller merges all part files of the run (every worker, and earlier sessions that passed the same
``--run-id``, e.g. the serial timing pass) and builds ``results.jsonl``, ``summary.csv``, ``report.md``,
``index.html`` and ``figures/``, and points ``<report-dir>/latest`` at the run.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
import torch

from diffbench.cache import ArtifactCache
from diffbench.devices import configure_threads, resolve_device, threads_per_worker
from diffbench.families import Measurements, all_options, discover
from diffbench.io import atomic_symlink
from diffbench.metrics import registry
from diffbench.profiles import PROFILES, Profile, get_profile
from diffbench.results import FAILURES_FILE, RowWriter, make_row, merge_parts, safe_name

TIMING_HINT = "timing cells run in a serial pass: add `-m timing -n 0 --run-id latest` to join this report"
_STATE = pytest.StashKey["_State"]()


@dataclass
class _State:
    run_id: str
    run_dir: Path
    report_dir: Path
    is_worker: bool
    failures: list[dict] = field(default_factory=list)
    report_path: Path | None = None


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("diffbench", "diffbench benchmark matrix")
    group.addoption("--profile", default="smoke", choices=list(PROFILES), help="scale of the matrix (default: smoke)")
    group.addoption("--report-dir", default="reports", help="where run reports go (default: reports/)")
    group.addoption(
        "--run-id",
        default=None,
        help="write into this run (e.g. `latest`) instead of a new one; rows of both sessions merge",
    )
    group.addoption(
        "--device", default="auto", help="auto (gwN -> cuda:N mod count, else mps, else cpu), cpu, cuda, cuda:N or mps"
    )
    group.addoption(
        "--data-root",
        default=None,
        help="where torchvision datasets (mnist, cifar10) live (default: ~/.cache/diffbench/data)",
    )
    group.addoption(
        "--cache-dir", default=None, help="artifact cache (default: $DIFFBENCH_CACHE or ~/.cache/diffbench)"
    )
    for option in all_options():
        group.addoption(option.flag, dest=option.dest, default=None, metavar=option.metavar, help=option.help)


def option_values(config: pytest.Config) -> dict[str, object]:
    """Every family option's value by dest (``{"size_factors": "0.1,0.5", ...}``), ``None`` when not given."""
    return {option.dest: config.getoption(option.dest) for option in all_options()}


def _check_options(config: pytest.Config) -> None:
    """Bad option values, alone or against the profile: ``ValueError`` naming the value (a usage error)."""
    resolve_device(config.getoption("device"))
    profile = get_profile(config.getoption("profile"))
    values = option_values(config)
    for option in all_options():
        if option.check is not None and values[option.dest] is not None:
            option.check(values[option.dest])
    for family in discover().values():
        if family.validate is not None:
            family.validate(values, profile)


def _new_run_id() -> str:
    return f"{datetime.now():%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"


def _resolve_run_id(requested: str | None, report_dir: Path) -> str:
    if requested is None:
        return _new_run_id()
    if requested == "latest":
        latest = report_dir / "latest"
        if not latest.exists():
            raise pytest.UsageError(f"--run-id latest: {latest} does not exist yet; run the matrix first")
        return latest.resolve().name
    if "/" in requested or requested in {"", ".", ".."}:
        raise pytest.UsageError(f"--run-id must be a plain directory name, got {requested!r}")
    return requested


def pytest_configure(config: pytest.Config) -> None:
    for name, family in discover().items():
        seeds = f" (seed {', '.join(family.seeds)})" if family.seeds else ""
        config.addinivalue_line("markers", f"{name}: {family.question}{seeds}")
    config.addinivalue_line("markers", "timing: pytest-benchmark cell; runs only in a serial (-n 0) session")
    config.addinivalue_line("markers", "slow: long-running cell")
    config.addinivalue_line("markers", "gpu: needs a CUDA device")
    try:
        _check_options(config)
    except ValueError as err:
        raise pytest.UsageError(str(err)) from None
    worker_id, workers = _worker(config)
    if worker_id is not None:
        # Every xdist worker (tests too, not only matrix cells) shares the cores instead of oversubscribing them.
        torch.set_num_threads(threads_per_worker(workers))
    report_dir = Path(config.getoption("report_dir"))
    worker_input = getattr(config, "workerinput", None)
    if worker_input is not None:
        run_id = worker_input["diffbench_run_id"]
    else:
        run_id = _resolve_run_id(config.getoption("run_id"), report_dir)
    state = _State(run_id, report_dir / run_id, report_dir, worker_input is not None)
    config.stash[_STATE] = state
    if not state.is_worker:
        config.pluginmanager.register(_FailureCollector(state), "diffbench-failures")
    if config.pluginmanager.hasplugin("xdist"):
        config.pluginmanager.register(_XdistHooks(), "diffbench-xdist")


class _XdistHooks:
    """Registered only when pytest-xdist is loaded (its hooks are unknown otherwise)."""

    def pytest_configure_node(self, node) -> None:
        node.workerinput["diffbench_run_id"] = node.config.stash[_STATE].run_id


def _family(item: pytest.Item) -> str | None:
    for name in discover():
        if item.get_closest_marker(name) is not None:
            return name
    return None


def _worker(config: pytest.Config) -> tuple[str | None, int]:
    """``(worker id, worker count)`` of this xdist worker, ``(None, 1)`` outside xdist. Read from the config,
    not the environment: a pytest run inside a worker (e.g. pytester) inherits the worker's variables."""
    worker_input = getattr(config, "workerinput", None)
    if worker_input is None:
        return None, 1
    return worker_input["workerid"], int(worker_input["workercount"])


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("timing") is not None and _worker(item.config)[0] is not None:
        pytest.skip(f"pytest-benchmark is disabled under xdist; {TIMING_HINT}")


class _FailureCollector:
    """On the controller (xdist relays worker reports to it), remember failed matrix cells for the report."""

    def __init__(self, state: _State) -> None:
        self.state = state

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        family = next((name for name in discover() if name in report.keywords), None)
        if not report.failed or family is None:
            return
        lines = str(report.longrepr).strip().splitlines() if report.longrepr else []
        message = lines[-1] if lines else "failed"
        self.state.failures.append(
            {"cell": report.nodeid, "family": family, "when": report.when, "message": message[:500]}
        )


def pytest_sessionfinish(session: pytest.Session) -> None:
    state = session.config.stash[_STATE]
    if state.is_worker:
        return
    if not state.run_dir.exists() and not state.failures:
        return  # nothing of the matrix ran (e.g. only tests/)
    state.run_dir.mkdir(parents=True, exist_ok=True)
    failures_path = state.run_dir / FAILURES_FILE
    previous = json.loads(failures_path.read_text()) if failures_path.exists() else []
    cells_now = {f["cell"] for f in state.failures}
    failures = [f for f in previous if f["cell"] not in cells_now] + state.failures
    failures_path.write_text(json.dumps(failures, indent=1))
    rows = merge_parts(state.run_dir)
    from diffbench.report.build import build_report

    state.report_path = build_report(state.run_dir, rows=rows, failures=failures)
    _point_latest(state.report_dir, state.run_id)


def _point_latest(report_dir: Path, run_id: str) -> None:
    atomic_symlink(report_dir / "latest", run_id)


def pytest_terminal_summary(terminalreporter, config: pytest.Config) -> None:
    state = config.stash.get(_STATE, None)
    if state is not None and state.report_path is not None:
        terminalreporter.write_sep("=", "diffbench report")
        terminalreporter.write_line(f"run {state.run_id}: {state.report_path}")
        terminalreporter.write_line(f"html: {state.report_path.parent / 'index.html'}")
        if state.failures:
            terminalreporter.write_line(f"{len(state.failures)} failed cell(s) are listed in the report")


# ----------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def profile(pytestconfig: pytest.Config) -> Profile:
    """The active scale (``--profile``)."""
    return get_profile(pytestconfig.getoption("profile"))


@pytest.fixture(scope="session")
def device(pytestconfig: pytest.Config) -> torch.device:
    """This worker's device; CPU workers get ``cores // workers`` torch threads."""
    worker_id, workers = _worker(pytestconfig)
    dev = resolve_device(pytestconfig.getoption("device"), worker_id)
    configure_threads(dev, workers)
    return dev


@pytest.fixture(scope="session")
def data_root(pytestconfig: pytest.Config) -> str | None:
    """``--data-root``: the local copy of torchvision datasets for the standard and paper profiles."""
    return pytestconfig.getoption("data_root")


@pytest.fixture(scope="session")
def artifacts(pytestconfig: pytest.Config) -> ArtifactCache:
    """The content-addressed artifact cache (``--cache-dir`` / ``$DIFFBENCH_CACHE``)."""
    return ArtifactCache(pytestconfig.getoption("cache_dir"))


@pytest.fixture(scope="session")
def options(pytestconfig: pytest.Config) -> dict[str, object]:
    """Every family option's value by dest (``options["size_factors"]``), ``None`` when not given."""
    return option_values(pytestconfig)


class Recorder:
    """``record(metric, value, **params)`` appends a result row for the current cell;
    ``record.array(name, array, **params)`` also keeps an array (e.g. samples) next to the report;
    ``record.result(measurements)`` writes every row of a family function's :class:`Measurements`.

    Every metric must be declared in the metric registry (an undeclared name fails the cell); every row carries
    the provenance of the cached artifacts the cell has used so far."""

    def __init__(
        self,
        writer: RowWriter,
        *,
        family: str,
        cell: str,
        profile: Profile,
        device: torch.device,
        run_id: str,
        cache: ArtifactCache,
    ) -> None:
        self._writer, self.family, self.cell = writer, family, cell
        self._profile, self._device, self._run_id, self._cache = profile, device, run_id, cache
        self._array_names: set[str] = set()

    def _row(self, metric: str, value: float, params: dict, seed: int | None, **fields: object) -> dict:
        registry.get(metric)  # KeyError naming the fix for an undeclared metric
        return make_row(
            family=self.family,
            cell=self.cell,
            params=params,
            metric=metric,
            value=value,
            seed=self._profile.seed if seed is None else seed,
            device=str(self._device),
            profile=self._profile.name,
            run_id=self._run_id,
            artifacts=list(self._cache.touched) or None,
            **fields,
        )

    def __call__(
        self, metric: str, value: float, *, seed: int | None = None, context: dict | None = None, **params: object
    ) -> None:
        self._writer.write(self._row(metric, value, params, seed, context=context))

    def array(self, name: str, array: np.ndarray | torch.Tensor, *, seed: int | None = None, **params: object) -> None:
        data = array.detach().cpu().numpy() if isinstance(array, torch.Tensor) else np.asarray(array)
        file_name = f"{self.cell}-{name}"
        if file_name in self._array_names:  # a second array of this name in the cell: its params tell it apart
            digest = hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()[:12]
            file_name = f"{safe_name(file_name)[:130]}-{digest}"
        self._array_names.add(file_name)
        rel = self._writer.save_array(file_name, data)
        self._writer.write(self._row(name, float(len(data)), params, seed, artifact=rel))

    def result(self, measurements: Measurements) -> None:
        for metric, value, params, context in measurements:
            self(metric, value, context=context, **params)
        for name, array, params in measurements.arrays:
            self.array(name, array, **params)


@pytest.fixture
def record(
    request: pytest.FixtureRequest, profile: Profile, device: torch.device, artifacts: ArtifactCache
) -> Recorder:
    """Result rows for this cell, merged into the run's report at session end."""
    state = request.config.stash[_STATE]
    family = _family(request.node)
    if family is None:
        raise pytest.UsageError(
            f"{request.node.nodeid} uses `record` but carries no family marker ({', '.join(discover())})"
        )
    artifacts.reset_touched()
    part = f"{_worker(request.config)[0] or 'main'}-{os.getpid()}"
    return Recorder(
        RowWriter(state.run_dir, part),
        family=family,
        cell=request.node.nodeid,
        profile=profile,
        device=device,
        run_id=state.run_id,
        cache=artifacts,
    )

"""The diffbench pytest plugin: options, fixtures, and the merge of every worker's rows into one report.

Loaded by the repository's root ``conftest.py``. Families, their markers and their command-line options come
from :func:`diffbench.families.discover`; this module names no family. Each worker appends rows to its own part file in
``<report-dir>/<run-id>/parts/`` as they are recorded (a crashing cell loses nothing else); at session end the
controller merges all part files of the run (every worker, and earlier sessions that passed the same
``--run-id``, e.g. the serial timing pass) and builds ``results.jsonl``, ``summary.csv``, ``report.md``,
``index.html`` and ``figures/``, and points ``<report-dir>/latest`` at the run.

The process that runs a matrix cell also records the cells it selected (``selection/``) and each cell's outcome
(``outcomes/``, see :mod:`diffbench.results`): a cell whose process was killed or crashed has none, so
``--run-id RUN --resume`` runs exactly the cells of RUN that have not passed yet, and the merge keeps one attempt per
cell. A report dir that cannot be written is a usage error before anything runs; a write that fails later (a
full disk) fails the cell, or ends the session with one line naming the file, never with a half-written file.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
import torch

from diffbench.cache import ArtifactCache
from diffbench.devices import (
    DEFAULT_THREADS,
    parse_threads,
    resolve_device,
    threads_per_worker,
    value_threads,
)
from diffbench.families import Measurements, all_options, discover
from diffbench.io import atomic_symlink, atomic_write_text
from diffbench.metrics import registry
from diffbench.profiles import PROFILES, Profile, get_profile
from diffbench.results import (
    FAILURES_FILE,
    OUTCOMES_DIR,
    PARTS_DIR,
    SELECTION_DIR,
    RowWriter,
    completed_cells,
    make_row,
    merge_parts,
    naming,
    record_outcome,
    safe_name,
    seed_id,
    selected_families,
    write_selection,
)

TIMING_HINT = "timing cells run in a serial pass: add `-m timing -n 0 --run-id latest` to join this report"
_STATE = pytest.StashKey["_State"]()
_THREADS_BEFORE = pytest.StashKey[int]()


@dataclass
class _State:
    run_id: str
    run_dir: Path
    report_dir: Path
    is_worker: bool
    part: str  # this process's part name: its rows' ``attempt``
    completed: frozenset[str] = frozenset()  # under --resume: cells not to run again
    failures: list[dict] = field(default_factory=list)
    ran: set[str] = field(default_factory=set)  # cells that passed or failed in this session (controller)
    report_path: Path | None = None
    error: str | None = None  # writing the run's files failed (e.g. a full disk): said once, in the summary
    stopped: bool = False  # the session was stopped before any cell ran (its files could not be written)


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
        "--resume",
        action="store_true",
        help="with --run-id: run only the cells that have not passed or been skipped in that run yet "
        "(e.g. after a crash, a kill or a preemption)",
    )
    group.addoption(
        "--device", default="auto", help="auto (gwN -> cuda:N mod count, else mps, else cpu), cpu, cuda, cuda:N or mps"
    )
    group.addoption(
        "--threads",
        default=DEFAULT_THREADS,
        metavar="N|auto",
        help=f"torch threads per process for the cells' computations on a CPU (default {DEFAULT_THREADS}: values "
        "do not depend on -n or the core count); auto: cores // workers, faster serially but the values then "
        "depend on the split. Timing cells always take cores // workers",
    )
    group.addoption(
        "--data-root",
        default=None,
        help="where torchvision datasets (mnist, cifar10) live (default: ~/.cache/diffbench/data)",
    )
    group.addoption(
        "--cache-dir", default=None, help="artifact cache (default: $DIFFBENCH_CACHE or ~/.cache/diffbench)"
    )
    group.addoption(
        "--seeds",
        default=None,
        metavar="0,1,2",
        help="run every matrix cell once per seed (node id suffix seed<N>; the seed replaces the profile's)",
    )
    for option in all_options():
        group.addoption(option.flag, dest=option.dest, default=None, metavar=option.metavar, help=option.help)


def option_values(config: pytest.Config) -> dict[str, object]:
    """Every family option's value by dest (``{"size_factors": "0.1,0.5", ...}``), ``None`` when not given."""
    return {option.dest: config.getoption(option.dest) for option in all_options()}


def _check_options(config: pytest.Config) -> None:
    """Bad option values, alone or against the profile: ``ValueError`` naming the value (a usage error)."""
    resolve_device(config.getoption("device"))
    parse_threads(config.getoption("threads"))
    parse_seeds(config.getoption("seeds"))
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
    # Every process that runs cells (and tests) computes with --threads torch threads, so values do not depend on
    # -n or the core count; restored at unconfigure (an in-process pytester run must not change its caller's).
    config.stash[_THREADS_BEFORE] = torch.get_num_threads()
    torch.set_num_threads(value_threads(config.getoption("threads"), _worker(config)[1]))
    report_dir = Path(config.getoption("report_dir"))
    worker_input = getattr(config, "workerinput", None)
    if worker_input is not None:
        run_id = worker_input["diffbench_run_id"]
        completed = frozenset(worker_input["diffbench_completed"])  # the controller's, so all workers agree
    else:
        if config.getoption("resume") and config.getoption("run_id") is None:
            raise pytest.UsageError("--resume needs --run-id: the run whose unfinished cells to run")
        run_id = _resolve_run_id(config.getoption("run_id"), report_dir)
        _check_writable(report_dir / run_id, config.getoption("report_dir"))
        completed = frozenset(completed_cells(report_dir / run_id)) if config.getoption("resume") else frozenset()
    run_dir = report_dir / run_id
    state = _State(run_id, run_dir, report_dir, worker_input is not None, _part_name(config, run_dir), completed)
    config.stash[_STATE] = state
    if not state.is_worker:
        config.pluginmanager.register(_FailureCollector(state), "diffbench-failures")
    if config.pluginmanager.hasplugin("xdist"):
        config.pluginmanager.register(_XdistHooks(), "diffbench-xdist")


class _XdistHooks:
    """Registered only when pytest-xdist is loaded (its hooks are unknown otherwise)."""

    def pytest_configure_node(self, node) -> None:
        state = node.config.stash[_STATE]
        node.workerinput["diffbench_run_id"] = state.run_id
        node.workerinput["diffbench_completed"] = sorted(state.completed)


def pytest_unconfigure(config: pytest.Config) -> None:
    before = config.stash.get(_THREADS_BEFORE, None)
    if before is not None:
        torch.set_num_threads(before)


def _check_writable(run_dir: Path, option: str) -> None:
    """A usage error, before anything runs, when the run directory cannot be created or written; creates
    nothing (a session that runs no matrix cell leaves no report dir behind)."""
    existing = run_dir.absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise pytest.UsageError(f"--report-dir {option}: cannot create {run_dir}: {existing} is not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise pytest.UsageError(f"--report-dir {option}: cannot write {run_dir}: {existing} is not writable")


def _part_name(config: pytest.Config, run_dir: Path) -> str:
    """``<worker or main>-<pid>``; with a random suffix when a process of an earlier session of the run had the
    same pid (pids are reused, and hosts sharing a run dir have their own), so attempts never share a name."""
    base = f"{_worker(config)[0] or 'main'}-{os.getpid()}"
    files = (f"{PARTS_DIR}/{base}.jsonl", f"{OUTCOMES_DIR}/{base}.jsonl", f"{SELECTION_DIR}/{base}.json")
    return f"{base}-{secrets.token_hex(3)}" if any((run_dir / name).exists() for name in files) else base


def _family(item: pytest.Item) -> str | None:
    for name in discover():
        if item.get_closest_marker(name) is not None:
            return name
    return None


def parse_seeds(text: str | None) -> tuple[int, ...]:
    """``--seeds``: ``"0,1,2"`` -> ``(0, 1, 2)``, ``()`` when not given; ``ValueError`` naming a value that is not a
    non-negative integer, or a repeated one."""
    if text is None:
        return ()
    seeds: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not (part.isascii() and part.isdigit()):  # digits only: no sign, no decimal point, not empty
            raise ValueError(f"--seeds takes distinct non-negative integers separated by commas, got {part!r}")
        if int(part) in seeds:
            raise ValueError(f"--seeds lists seed {int(part)} twice in {text!r}")
        seeds.append(int(part))
    return tuple(seeds)


@pytest.hookimpl(trylast=True)  # after the bench modules' own parametrization: the seed id comes last
def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Under ``--seeds``, every matrix cell (a family-marked test that uses ``profile``, directly or through
    ``record``) once per seed, with the id ``seed<N>``; the ``profile`` fixture then carries that seed."""
    seeds = parse_seeds(metafunc.config.getoption("seeds"))
    if seeds and "diffbench_seed" in metafunc.fixturenames and _family(metafunc.definition) is not None:
        metafunc.parametrize("diffbench_seed", seeds, ids=[seed_id(seed) for seed in seeds])


def _worker(config: pytest.Config) -> tuple[str | None, int]:
    """``(worker id, worker count)`` of this xdist worker, ``(None, 1)`` outside xdist. Read from the config,
    not the environment: a pytest run inside a worker (e.g. pytester) inherits the worker's variables."""
    worker_input = getattr(config, "workerinput", None)
    if worker_input is None:
        return None, 1
    return worker_input["workerid"], int(worker_input["workercount"])


def _deferred_timing(item: pytest.Item) -> bool:
    """A timing cell under xdist: skipped here, it runs in the serial pass."""
    return item.get_closest_marker("timing") is not None and _worker(item.config)[0] is not None


def pytest_runtest_setup(item: pytest.Item) -> None:
    if _deferred_timing(item):
        pytest.skip(f"pytest-benchmark is disabled under xdist; {TIMING_HINT}")


@pytest.hookimpl(trylast=True)  # after -k / -m deselection
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Record the selected matrix cells (``selection/<part>.json``), then, under ``--resume``, deselect those the
    run already completed. Runs where the cells are collected: the xdist workers, or the one serial process."""
    state = config.stash[_STATE]
    families = {item.nodeid: family for item in items if (family := _family(item)) is not None}
    if not families:
        return  # no matrix cell (e.g. only tests/): leave the report dir alone
    if not config.option.collectonly:  # listing cells (e.g. to plan shards) is no run
        try:
            write_selection(state.run_dir, state.part, families)
        except OSError as err:  # a full disk before any cell ran: stop with one line
            state.stopped = True
            pytest.exit(
                f"diffbench: could not record the selected cells: {err}", returncode=pytest.ExitCode.TESTS_FAILED
            )
    done = [item for item in items if item.nodeid in state.completed]
    if done:
        items[:] = [item for item in items if item.nodeid not in state.completed]
        config.hook.pytest_deselected(items=done)


def pytest_report_header(config: pytest.Config) -> list[str]:
    state = config.stash.get(_STATE, None)
    if state is None:
        return []
    threads = config.getoption("threads")
    lines = [f"diffbench: CPU cells compute with --threads {threads} torch thread(s) per process"]
    if config.getoption("resume"):
        lines.append(
            f"diffbench: resuming run {state.run_id}: {len(state.completed)} completed cell(s) are not run again"
        )
    return lines


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item):
    """A timing cell on a CPU measures with the cores its process has (``cores // workers``), whatever
    ``--threads`` says: it runs alone in the serial pass. Its fixtures (e.g. a trained teacher) were built at
    ``--threads``, so it times the artifact the value cells use."""
    device = getattr(item, "funcargs", {}).get("device")
    if item.get_closest_marker("timing") is None or (isinstance(device, torch.device) and device.type != "cpu"):
        return (yield)
    before = torch.get_num_threads()
    torch.set_num_threads(threads_per_worker(_worker(item.config)[1]))
    try:
        return (yield)
    finally:
        torch.set_num_threads(before)


_PHASES = pytest.StashKey[list]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """Collect a matrix cell's phase reports on the process that runs it; after teardown, append its outcome to
    ``outcomes/<part>.jsonl`` (a cell whose process dies never gets one, so ``--resume`` runs it again)."""
    report = yield
    family = _family(item)
    if family is None:
        return report
    phases = item.stash.setdefault(_PHASES, [])
    phases.append(report)
    if report.when == "teardown":
        del item.stash[_PHASES]
        _record_outcome(item, family, phases)
    return report


def _record_outcome(item: pytest.Item, family: str, phases: list[pytest.TestReport]) -> None:
    state = item.config.stash[_STATE]
    outcome = "failed" if any(r.failed for r in phases) else "skipped" if any(r.skipped for r in phases) else "passed"
    if outcome == "skipped" and _deferred_timing(item):
        return  # not done: the serial timing pass runs it
    duration = sum(r.duration for r in phases)
    try:
        record_outcome(state.run_dir, state.part, cell=item.nodeid, family=family, outcome=outcome, duration=duration)
    except OSError as err:
        if outcome != "failed":  # a failed cell is rerun anyway; a passed one must not count as done silently
            teardown = phases[-1]
            teardown.outcome = "failed"
            teardown.longrepr = f"diffbench: the cell {outcome} but its outcome could not be recorded: {err}"


class _FailureCollector:
    """On the controller (xdist relays worker reports to it), remember failed matrix cells for the report."""

    def __init__(self, state: _State) -> None:
        self.state = state

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if not report.failed and not (report.when == "call" and report.passed):
            return
        family = self._family(report)
        if family is None:
            return
        self.state.ran.add(report.nodeid)
        if not report.failed:
            return
        lines = str(report.longrepr).strip().splitlines() if report.longrepr else []
        message = lines[-1] if lines else "failed"
        self.state.failures.append(
            {"cell": report.nodeid, "family": family, "when": report.when, "message": message[:500]}
        )

    def _family(self, report: pytest.TestReport) -> str | None:
        """From the report's markers; a report xdist makes for a crashed worker has none, so then from the
        module's name (``bench_<family>.py``) or the run's selection records."""
        families = discover()
        found = next((name for name in families if name in report.keywords), None)
        if found is not None or report.when != "???":
            return found
        module = Path(report.nodeid.split("::")[0]).stem
        if module.startswith("bench_") and module[len("bench_") :] in families:
            return module[len("bench_") :]
        return selected_families(self.state.run_dir).get(report.nodeid)


def pytest_sessionfinish(session: pytest.Session) -> None:
    state = session.config.stash[_STATE]
    if state.is_worker:
        return
    if state.stopped or (not state.run_dir.exists() and not state.failures):
        return  # nothing of the matrix ran (e.g. only tests/)
    try:
        failures = _write_failures(state)
        rows = merge_parts(state.run_dir)
        from diffbench.report.build import build_report

        state.report_path = build_report(state.run_dir, rows=rows, failures=failures)
        _point_latest(state.report_dir, state.run_id)
    except OSError as err:  # a full disk, a report dir gone read-only: one clear line, not an INTERNALERROR
        state.error = f"diffbench: could not write run {state.run_id} in {state.run_dir}: {err}"
        if session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED


def _write_failures(state: _State) -> list[dict]:
    """``failures.json``: this session's failed cells, plus earlier sessions' for cells that did not run again."""
    state.run_dir.mkdir(parents=True, exist_ok=True)
    path = state.run_dir / FAILURES_FILE
    previous = json.loads(path.read_text()) if path.exists() else []
    failures = [f for f in previous if f["cell"] not in state.ran] + state.failures
    with naming(path):
        atomic_write_text(path, json.dumps(failures, indent=1))
    return failures


def _point_latest(report_dir: Path, run_id: str) -> None:
    atomic_symlink(report_dir / "latest", run_id)


def pytest_terminal_summary(terminalreporter, config: pytest.Config) -> None:
    state = config.stash.get(_STATE, None)
    if state is not None and state.error is not None:
        terminalreporter.write_sep("=", "diffbench error", red=True)
        terminalreporter.write_line(state.error, red=True)
    if state is not None and state.report_path is not None:
        terminalreporter.write_sep("=", "diffbench report")
        terminalreporter.write_line(f"run {state.run_id}: {state.report_path}")
        terminalreporter.write_line(f"html: {state.report_path.parent / 'index.html'}")
        if state.failures:
            terminalreporter.write_line(f"{len(state.failures)} failed cell(s) are listed in the report")


# ----------------------------------------------------------------------------------------------- fixtures


@pytest.fixture
def diffbench_seed() -> int | None:
    """This cell's seed under ``--seeds`` (the plugin parametrizes it); ``None`` otherwise: the profile's own."""
    return None


@pytest.fixture
def profile(pytestconfig: pytest.Config, diffbench_seed: int | None) -> Profile:
    """The active scale (``--profile``), with this cell's seed under ``--seeds``. Function-scoped so that one
    session can run a cell at several seeds; building it is a dictionary look-up."""
    base = get_profile(pytestconfig.getoption("profile"))
    return base if diffbench_seed is None else replace(base, seed=diffbench_seed)


@pytest.fixture(scope="session")
def device(pytestconfig: pytest.Config) -> torch.device:
    """This worker's device (its CPU threads: ``--threads``, set at configure, see ``diffbench.devices``)."""
    return resolve_device(pytestconfig.getoption("device"), _worker(pytestconfig)[0])


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
    return Recorder(
        RowWriter(state.run_dir, state.part),
        family=family,
        cell=request.node.nodeid,
        profile=profile,
        device=device,
        run_id=state.run_id,
        cache=artifacts,
    )

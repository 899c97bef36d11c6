"""The matrix on a cluster: its cells split into shards, one submitit job per shard (a SLURM job array, or local
subprocesses), every shard writing into one run directory.

``diffbench submit`` enumerates the selected matrix cells with pytest's own collection (a subprocess, so the cells
and their order are exactly pytest's), groups the cells that need the same trained artifact
(:attr:`diffbench.families.Family.shard_group`) so that one shard builds each, packs the groups into N shards by
estimated cost (greedy longest-processing-time), writes ``<run dir>/submit.json`` and submits one job per shard
through submitit (its files in ``<run dir>/submitit/``). A shard job runs, in the directory submit was called from::

    python -m pytest <its node ids> --run-id <run dir name> --report-dir <run dir parent> --resume ...

so every shard appends rows and outcome records to the same run directory. The shard callable is a submitit
``Checkpointable``: preempted or timed out, it stops its pytest and requeues itself, and the rerun skips the
cells that already finished (``--resume``), so no row is written twice. A shard killed outright is rerun by
``diffbench submit`` on the same run directory, which resubmits only the shards with unfinished cells, with the
same assignment. ``diffbench status`` counts each shard's cells done / failed / pending from the outcome records.

Loaded with ``-p diffbench.cluster`` into the collection subprocess, this module is also the pytest plugin that
writes the selected cells there (:func:`pytest_collection_finish`); it never imports pytest.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import pickle
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib.util import find_spec
from pathlib import Path

import submitit

from diffbench.errors import UsageError
from diffbench.families import discover
from diffbench.io import atomic_write_text
from diffbench.results import completed_cells, load_outcomes, merge_parts, strip_seed

SUBMIT_FILE = "submit.json"
SUBMITIT_DIR = "submitit"
EXECUTORS = ("local", "slurm")
DEFAULT_PATHS = ("benchmarks",)  # where the matrix lives, when submit is given no paths and that folder exists
COLLECT_ENV = "DIFFBENCH_COLLECT_OUT"  # set only in the collection subprocess: where the plugin writes the cells
NOTHING_TO_RUN = 5  # pytest's exit code when nothing is selected: every cell of the shard finished before
LOCAL_TIMEOUT_MIN = 7 * 24 * 60  # the local executor signals a timeout too; locally nothing should time out
MAX_TIMEOUT_REQUEUES = 10  # a shard requeued after more timeouts than this stops (preemptions do not count)
STOP_GRACE_S = 10.0  # after SIGTERM, how long a shard's pytest gets before SIGKILL


# --- collection -------------------------------------------------------------------------------------------


def collect_cells(pytest_args: Sequence[str], cwd: Path) -> list[tuple[str, str]]:
    """``(node id, family)`` of every matrix cell (family-marked item) that ``pytest <pytest_args>`` selects in
    ``cwd``, in pytest's collection order. A collection error is a UsageError carrying pytest's output."""
    args = list(pytest_args)
    if find_spec("xdist") is not None and "no:xdist" not in args:
        args += ["-n", "0"]  # under xdist the controller collects nothing; the last -n wins
    with tempfile.TemporaryDirectory(prefix="diffbench-collect-") as tmp:
        out = Path(tmp) / "cells.json"
        command = [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"]
        command += ["-p", __name__, "--report-dir", str(Path(tmp) / "reports"), *args]
        done = subprocess.run(
            command, cwd=cwd, env={**os.environ, COLLECT_ENV: str(out)}, capture_output=True, text=True
        )
        if done.returncode not in (0, NOTHING_TO_RUN) or not out.is_file():
            tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-25:])
            raise UsageError(
                f"collecting the cells failed (pytest exit {done.returncode}): {shlex.join(command)}\n{tail}"
            )
        return [(cell["cell"], cell["family"]) for cell in json.loads(out.read_text())]


def pytest_collection_finish(session) -> None:
    """pytest hook, active in :func:`collect_cells`' subprocess only: write the selected matrix cells there."""
    out = os.environ.get(COLLECT_ENV)
    if not out:
        return
    families = list(discover())
    cells = []
    for item in session.items:
        family = next((name for name in families if item.get_closest_marker(name) is not None), None)
        if family is not None:
            cells.append({"cell": item.nodeid, "family": family})
    atomic_write_text(out, json.dumps(cells))


# --- grouping and packing ---------------------------------------------------------------------------------


def group_key(nodeid: str, family: str) -> str:
    """The artifact group of a cell: its family's ``shard_group`` of the node id without its seed id (the cell
    itself when the family has none), and the seed, since every seed trains its own artifacts."""
    base = strip_seed(nodeid)
    rule = discover()[family].shard_group
    key = rule(base) if rule is not None else base
    if base == nodeid:
        return key
    seed = nodeid.removesuffix("]").rsplit("[", 1)[-1].rsplit("-", 1)[-1]
    return f"{key}|{seed}"


def group_cells(cells: Sequence[tuple[str, str]], key: Callable[[str, str], str] = group_key) -> dict[str, list[str]]:
    """Node ids by group key, groups in the order of their first cell, cells in collection order."""
    groups: dict[str, list[str]] = {}
    for nodeid, family in cells:
        groups.setdefault(key(nodeid, family), []).append(nodeid)
    return groups


def pack(groups: Mapping[str, Sequence[str]], costs: Mapping[str, float], shards: int) -> list[list[str]]:
    """Longest processing time first (Graham 1969): the groups by decreasing cost (ties: first collected first),
    each to the shard with the least cost so far (ties: fewest cells, then lowest index); the largest shard cost
    is at most ``(4/3 - 1/(3 shards))`` times the best possible. A group is never split; each shard's cells keep
    the collection order (the order of ``groups``). Shards left empty (fewer groups than shards) are dropped."""
    if shards < 1:
        raise ValueError(f"shards must be >= 1, got {shards}")
    order = {cell: i for i, cell in enumerate(cell for cells in groups.values() for cell in cells)}
    group_cost = {key: sum(costs[cell] for cell in cells) for key, cells in groups.items()}
    loads, assigned = [0.0] * shards, [[] for _ in range(shards)]
    first = {key: i for i, key in enumerate(groups)}
    for key in sorted(groups, key=lambda k: (-group_cost[k], first[k])):
        target = min(range(shards), key=lambda s: (loads[s], len(assigned[s]), s))  # zero costs spread too
        loads[target] += group_cost[key]
        assigned[target] += groups[key]
    return [sorted(cells, key=order.__getitem__) for cells in assigned if cells]


def cell_costs(cells: Sequence[str], costs_from: Path | None) -> dict[str, float]:
    """Estimated seconds per cell: its duration in ``costs_from``'s outcome records (a cell that run lacks gets
    the mean of those it has), or 1 per cell without ``costs_from``."""
    if costs_from is None:
        return dict.fromkeys(cells, 1.0)
    known = {
        cell: float(record["duration"])
        for cell, record in load_outcomes(costs_from).items()
        if record.get("duration") is not None
    }
    if not known:
        raise UsageError(f"--costs-from {costs_from}: no outcome records with durations")
    default = sum(known.values()) / len(known)
    return {cell: known.get(cell, default) for cell in cells}


# --- the submission record --------------------------------------------------------------------------------


def check_run_dir_name(run_dir: Path) -> None:
    name = run_dir.resolve().name
    if not name or name != run_dir.name or name in {".", ".."}:
        raise UsageError(f"--run-dir must end in a plain directory name (the run id), got {str(run_dir)!r}")


def read_submission(run_dir: Path) -> dict | None:
    """The run's ``submit.json``, or None when the run has none."""
    path = run_dir / SUBMIT_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UsageError(f"unreadable {path}: {exc}") from None


def write_submission(run_dir: Path, submission: dict) -> None:
    atomic_write_text(run_dir / SUBMIT_FILE, json.dumps(submission, indent=1) + "\n")


def selection_args(paths: Sequence[str], keyword: str | None, markers: str | None) -> list[str]:
    """pytest's selection arguments: ``paths`` (default: ``DEFAULT_PATHS`` that exist here), ``-k``, ``-m``."""
    paths = list(paths) or [path for path in DEFAULT_PATHS if Path(path).is_dir()]
    return [*paths, *(["-k", keyword] if keyword else []), *(["-m", markers] if markers else [])]


def plan(
    run_dir: Path,
    *,
    shards: int,
    selection: Sequence[str],
    pytest_args: Sequence[str],
    costs_from: Path | None = None,
    cwd: Path | None = None,
) -> dict:
    """The submission record of a new cluster run: the selected cells, grouped and packed into ``shards``.

    ``selection`` (paths, ``-k``, ``-m``) chooses the cells; ``pytest_args`` (profile, family options) shape the
    matrix and go to every shard's pytest too."""
    cwd = (cwd or Path.cwd()).resolve()
    cells = collect_cells([*selection, *pytest_args], cwd)
    if not cells:
        raise UsageError(f"the selection {shlex.join(selection) or '(none)'} holds no matrix cells (in {cwd})")
    costs = cell_costs([cell for cell, _ in cells], costs_from)
    packed = pack(group_cells(cells), costs, shards)
    run_dir = run_dir.resolve()
    return {
        "run_id": run_dir.name,
        "report_dir": str(run_dir.parent),
        "rootdir": str(cwd),
        "python": sys.executable,
        "selection": list(selection),
        "pytest_args": list(pytest_args),
        "shards_requested": shards,
        "costs_from": None if costs_from is None else str(costs_from),
        "created": _now(),
        "shards": [
            {"index": i, "cells": cells, "cost": sum(costs[c] for c in cells), "jobs": []}
            for i, cells in enumerate(packed)
        ],
    }


def shard_command(submission: dict, shard: dict) -> list[str]:
    """The pytest command line of one shard (run in ``submission["rootdir"]``)."""
    return [
        submission["python"],
        "-m",
        "pytest",
        *shard["cells"],
        "--run-id",
        submission["run_id"],
        "--report-dir",
        submission["report_dir"],
        "--resume",
        "-p",
        "no:cacheprovider",
        *submission["pytest_args"],
    ]


# --- the shard job ----------------------------------------------------------------------------------------


def _preemption_signal() -> signal.Signals:
    """The signal submitit checkpoints on (``$SUBMITIT_PREEMPT_SIGNAL``, default USR2)."""
    return signal.Signals["SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2")]


def _ignore_preemption() -> None:
    # SLURM may signal every process of the job step; only the submitit process above pytest should act on it
    # (stop pytest, requeue), so pytest must not die of it on its own first.
    signal.signal(_preemption_signal(), signal.SIG_IGN)


def _signal_group(pid: int, signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):  # the whole group is gone already
        os.killpg(pid, signum)


def _reaped(pid: int) -> bool:
    """Whether the child ``pid`` has exited (reaping it)."""
    try:
        return os.waitpid(pid, os.WNOHANG)[0] == pid
    except ChildProcessError:  # reaped already
        return True


class ShardJob(submitit.helpers.Checkpointable):
    """One shard: pytest on its node ids, in its own process group. Returns pytest's exit code (0: every cell
    passed or had already finished, 1: a cell failed); raises when pytest did not finish (killed, crashed, bad
    usage). On preemption or timeout submitit calls :meth:`checkpoint`, which stops pytest, and requeues the job:
    the rerun's ``--resume`` skips the cells that finished."""

    def __init__(self, argv: Sequence[str], cwd: str, env: Mapping[str, str]) -> None:
        self.argv, self.cwd, self.env = list(argv), cwd, dict(env)
        self._process: subprocess.Popen | None = None

    def __call__(self) -> int:
        self._process = subprocess.Popen(
            self.argv,
            cwd=self.cwd,
            env={**os.environ, **self.env},
            start_new_session=True,
            preexec_fn=_ignore_preemption,
        )
        try:
            code = self._process.wait()
        except BaseException:  # interrupted (Ctrl-C on a local run, a requeue's exit): pytest must not outlive it
            self.stop()
            raise
        finally:
            self._process = None
        if code == NOTHING_TO_RUN:
            return 0
        if code in (0, 1):
            return code
        how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
        raise RuntimeError(f"the shard's pytest {how}; `diffbench submit` on the run dir reruns its unfinished cells")

    def checkpoint(self, *args, **kwargs) -> submitit.helpers.DelayedSubmission:
        self.stop()
        return submitit.helpers.DelayedSubmission(ShardJob(self.argv, self.cwd, self.env))

    def stop(self) -> None:
        """SIGTERM to pytest's process group (xdist workers too), SIGKILL after ``STOP_GRACE_S``. Runs in
        submitit's signal handler, maybe while :meth:`__call__` waits on the process: so it reaps the process with
        ``os.waitpid``, never ``Popen.wait`` (whose lock the interrupted wait holds: a deadlock)."""
        if self._process is None:
            return
        pid = self._process.pid
        _signal_group(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        while not _reaped(pid):
            if time.monotonic() > deadline:
                _signal_group(pid, signal.SIGKILL)
                deadline = math.inf
            time.sleep(0.05)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_process": None}  # a running process is not part of the job's definition


# --- executors --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SlurmOptions:
    """What the SLURM array asks for (None: the cluster's default)."""

    partition: str | None = None
    time_min: int = 240
    gpus_per_task: int | None = None
    cpus_per_task: int | None = None
    mem: str | None = None
    array_parallelism: int | None = None


def make_executor(kind: str, run_dir: Path, slurm: SlurmOptions) -> submitit.AutoExecutor:
    """A submitit executor writing into ``<run dir>/submitit``: ``local`` runs the jobs as subprocesses here,
    ``slurm`` as one job array."""
    if kind not in EXECUTORS:
        raise UsageError(f"unknown executor {kind!r}; use one of {', '.join(EXECUTORS)}")
    folder = run_dir / SUBMITIT_DIR
    if kind == "local":
        executor = submitit.AutoExecutor(folder=folder, cluster="local")
        executor.update_parameters(name=f"diffbench-{run_dir.name}", timeout_min=LOCAL_TIMEOUT_MIN)
        return executor
    try:
        executor = submitit.AutoExecutor(folder=folder, cluster="slurm", slurm_max_num_timeout=MAX_TIMEOUT_REQUEUES)
    except RuntimeError as exc:  # no srun here
        raise UsageError(f"--executor slurm: {exc}") from None
    parameters = {
        "name": f"diffbench-{run_dir.name}",
        "timeout_min": slurm.time_min,
        "cpus_per_task": slurm.cpus_per_task,
        "slurm_partition": slurm.partition,
        "slurm_gpus_per_task": slurm.gpus_per_task,
        "slurm_mem": slurm.mem,
        "slurm_array_parallelism": slurm.array_parallelism,
    }
    executor.update_parameters(**{k: v for k, v in parameters.items() if v is not None})
    return executor


def shard_threads(kind: str, shards: int, slurm: SlurmOptions) -> int | None:
    """Cores of one shard's pytest (``$DIFFBENCH_THREADS``, ``OMP_NUM_THREADS``): locally the machine's cores split
    between the run's shards; on SLURM the CPUs asked per task (None: whatever the node gives). Its cells compute
    their values with ``--threads`` (default 1) whatever this is, so a shard, a resubmitted shard running alone
    and a plain pytest run give the same values; timing cells and ``--threads auto`` use these cores. A
    resubmitted shard keeps its run's count."""
    from diffbench.devices import available_cores  # imports torch: not in the job process, which only waits

    if kind == "local":
        return max(1, available_cores() // max(1, shards))
    return slurm.cpus_per_task


def launch(
    run_dir: Path, submission: dict, indices: Sequence[int], kind: str, slurm: SlurmOptions
) -> list[submitit.Job]:
    """Submit the shards ``indices`` as one array; record each job in ``submit.json``; return the jobs."""
    from diffbench.devices import THREADS_ENV

    threads = shard_threads(kind, len(submission["shards"]), slurm)
    env = {} if threads is None else {"OMP_NUM_THREADS": str(threads), THREADS_ENV: str(threads)}
    shards = [submission["shards"][i] for i in indices]
    executor = make_executor(kind, run_dir, slurm)
    jobs = executor.submit_array(
        [ShardJob(shard_command(submission, shard), submission["rootdir"], env) for shard in shards]
    )
    for shard, job in zip(shards, jobs, strict=True):
        shard["jobs"].append({"job_id": str(job.job_id), "executor": kind, "threads": threads, "submitted": _now()})
    write_submission(run_dir, submission)
    return jobs


def job_state(run_dir: Path, job: dict) -> str:
    """A shard job's state: COMPLETED (pytest exit N) / FAILED (why) once it left its result, else the
    scheduler's word (SLURM: sacct's state; local: RUNNING while its process lives, else GONE)."""
    job_class = submitit.SlurmJob if job["executor"] == "slurm" else submitit.LocalJob
    handle = job_class(folder=run_dir / SUBMITIT_DIR, job_id=job["job_id"])
    result = handle.paths.result_pickle
    if result.is_file():
        try:
            with open(result, "rb") as f:
                outcome, value = pickle.load(f)
        except Exception as exc:  # a result being written, or from another submitit version
            return f"UNKNOWN (unreadable result: {type(exc).__name__})"
        if outcome == "success":
            return f"COMPLETED (pytest exit {value})"
        lines = [line for line in str(value).strip().splitlines() if line.strip()]
        return f"FAILED ({lines[-1].strip()[:160] if lines else 'no trace'})"
    if job["executor"] == "slurm":
        try:
            return handle.state
        except Exception as exc:  # no sacct here (status read away from the cluster)
            return f"UNKNOWN ({type(exc).__name__})"
    return "RUNNING" if _process_alive(int(job["job_id"])) else "GONE"


def _process_alive(pid: int) -> bool:
    """Whether process ``pid`` (here: a local job's controller) still runs; an exited one that its parent has
    not reaped yet (a zombie, read from /proc where there is one) does not."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def is_live(state: str) -> bool:
    return state.split(" ", 1)[0].upper() in {"RUNNING", "PENDING", "REQUEUED", "COMPLETING", "CONFIGURING"}


# --- progress ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ShardProgress:
    index: int
    cells: int
    done: int
    failed: int
    pending: int
    job_id: str | None
    state: str

    @property
    def complete(self) -> bool:
        return self.done == self.cells


def progress(run_dir: Path, submission: dict, *, with_jobs: bool = True) -> list[ShardProgress]:
    """Per shard: cells done (latest outcome passed or skipped), failed (latest outcome failed), pending (no
    outcome yet), and its latest job's state."""
    finished, outcomes = completed_cells(run_dir), load_outcomes(run_dir)
    out = []
    for shard in submission["shards"]:
        cells = shard["cells"]
        done = sum(cell in finished for cell in cells)
        failed = sum(cell not in finished and outcomes.get(cell, {}).get("outcome") == "failed" for cell in cells)
        job = shard["jobs"][-1] if shard["jobs"] else None
        state = "NOT SUBMITTED" if job is None else job_state(run_dir, job) if with_jobs else ""
        out.append(
            ShardProgress(
                shard["index"], len(cells), done, failed, len(cells) - done - failed, job and job["job_id"], state
            )
        )
    return out


def progress_table(rows: Sequence[ShardProgress]) -> str:
    """The status view: one line per shard, then the totals."""
    lines = [f"{'shard':>5}  {'job':<14} {'cells':>5} {'done':>5} {'failed':>6} {'pending':>7}  state"]
    for p in rows:
        lines.append(
            f"{p.index:>5}  {p.job_id or '-':<14} {p.cells:>5} {p.done:>5} {p.failed:>6} {p.pending:>7}  {p.state}"
        )
    total = [sum(getattr(p, name) for p in rows) for name in ("cells", "done", "failed", "pending")]
    lines.append(f"{'total':>5}  {'':<14} {total[0]:>5} {total[1]:>5} {total[2]:>6} {total[3]:>7}")
    return "\n".join(lines)


# --- the commands -----------------------------------------------------------------------------------------


def submit(
    run_dir: Path,
    *,
    shards: int | None,
    paths: Sequence[str],
    keyword: str | None,
    markers: str | None,
    pytest_args: Sequence[str],
    executor: str | None,
    slurm: SlurmOptions,
    wait: bool | None,
    costs_from: Path | None = None,
    out: Callable[[str], None] = print,
) -> int:
    """``diffbench submit``: plan a new run (or take the existing ``submit.json``), submit the shards that have
    unfinished cells, and with ``wait`` wait for them, merge the run and build its report. Exit code: 0 when
    every cell finished, 1 when one failed or is still pending after waiting.

    ``executor`` None: the one the run last used (``local`` for a new run); ``wait`` None: wait for local jobs."""
    check_run_dir_name(run_dir)
    submission = read_submission(run_dir)
    if submission is None:
        if shards is None:
            raise UsageError("--shards is required for a new run (a resubmission takes them from submit.json)")
        selection = selection_args(paths, keyword, markers)
        submission = plan(run_dir, shards=shards, selection=selection, pytest_args=pytest_args, costs_from=costs_from)
        run_dir.mkdir(parents=True, exist_ok=True)
        write_submission(run_dir, submission)
        indices = [shard["index"] for shard in submission["shards"]]
        cells = sum(len(shard["cells"]) for shard in submission["shards"])
        out(f"run {submission['run_id']}: {cells} cells in {len(indices)} shard(s) ({run_dir / SUBMIT_FILE})")
    else:
        _check_same_request(submission, shards=shards, paths=paths, keyword=keyword, markers=markers, args=pytest_args)
        before = progress(run_dir, submission)
        live = [p.index for p in before if is_live(p.state)]
        if live:
            raise UsageError(f"shard(s) {', '.join(map(str, live))} of {run_dir} are still running; wait for them")
        indices = [p.index for p in before if not p.complete]
        out(f"run {submission['run_id']}: resubmitting shard(s) {', '.join(map(str, indices)) or '(none)'}")
    used = [job["executor"] for shard in submission["shards"] for job in shard["jobs"]]
    executor = executor or (used[-1] if used else "local")
    jobs = launch(run_dir, submission, indices, executor, slurm) if indices else []
    for index, job in zip(indices, jobs, strict=True):
        out(f"shard {index}: job {job.job_id}, {len(submission['shards'][index]['cells'])} cells")
    if not (executor == "local" if wait is None else wait):
        out(f"follow it with: diffbench status {run_dir}")
        return 0
    for job in jobs:
        job.wait()
    return finish(run_dir, submission, out)


def finish(run_dir: Path, submission: dict, out: Callable[[str], None] = print) -> int:
    """Merge the run's rows, build its report, print the status table; 1 if a cell failed or is pending."""
    from diffbench.report.build import build_report

    rows = progress(run_dir, submission)
    if (run_dir / "parts").is_dir():
        out(f"report: {build_report(run_dir, rows=merge_parts(run_dir))}")
    out(progress_table(rows))
    return 0 if all(p.complete for p in rows) else 1


def status(run_dir: Path, out: Callable[[str], None] = print) -> int:
    """``diffbench status``: the status table of a submitted run."""
    submission = read_submission(run_dir)
    if submission is None:
        raise UsageError(f"{run_dir} has no {SUBMIT_FILE}: not a run made by `diffbench submit`")
    rows = progress(run_dir, submission)
    out(f"run {submission['run_id']} ({run_dir})")
    out(progress_table(rows))
    return 0


def _check_same_request(submission: dict, *, shards, paths, keyword, markers, args) -> None:
    """A resubmission may repeat the original request or leave parts of it out, not change it (its cells and
    shards are fixed): a UsageError names what differs."""
    stored = submission["selection"]
    changed = []
    if shards is not None and shards != submission["shards_requested"]:
        changed.append(f"--shards (was {submission['shards_requested']})")
    if paths and not all(path in stored for path in paths):
        changed.append("paths")
    for flag, value in (("-k", keyword), ("-m", markers)):
        if value and not any(a == flag and b == value for a, b in zip(stored, stored[1:], strict=False)):
            changed.append(flag)
    if args and list(args) != submission["pytest_args"]:
        changed.append(f"pytest args (were {shlex.join(submission['pytest_args']) or 'none'})")
    if changed:
        raise UsageError(
            f"this run dir holds a submission of {shlex.join(stored)} with other {', '.join(changed)}; "
            "resubmit it without them, or use a new --run-dir"
        )


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")

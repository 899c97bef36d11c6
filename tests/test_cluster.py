"""Cluster runs (diffbench/cluster.py): shard packing against brute force, and `diffbench submit` end to end with
submitit's local executor on a tiny family-marked bench: rows equal to a plain pytest run, a real SIGKILL of a
shard's pytest then a resubmission, a preempted shard that requeues itself, and the status counts."""

from __future__ import annotations

import itertools
import json
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
import submitit
from hypothesis import given
from hypothesis import strategies as st

from diffbench import cluster
from diffbench.devices import DEFAULT_THREADS, THREADS_ENV
from diffbench.errors import UsageError
from diffbench.results import OUTCOMES_DIR, PARTS_DIR, RESULTS_FILE, read_rows

# --- packing ----------------------------------------------------------------------------------------------


def _makespan(shards: list[list[str]], costs: dict[str, float]) -> float:
    return max(sum(costs[cell] for cell in shard) for shard in shards)


def _optimum(group_costs: list[float], shards: int) -> float:
    """The smallest possible largest shard cost, over every assignment of groups to shards (brute force)."""
    best = float("inf")
    for assignment in itertools.product(range(shards), repeat=len(group_costs)):
        loads = [0.0] * shards
        for group, shard in enumerate(assignment):
            loads[shard] += group_costs[group]
        best = min(best, max(loads))
    return best


def _groups(sizes: list[int]) -> dict[str, list[str]]:
    """Group ``g<i>`` holds the cells ``g<i>.c0 .. g<i>.c<size - 1>``."""
    return {f"g{g}": [f"g{g}.c{c}" for c in range(size)] for g, size in enumerate(sizes)}


def test_lpt_known_worst_case_for_two_shards() -> None:
    # Graham's tight example for 2 machines: LPT gives 3+2+2 = 7 where 3+3 | 2+2+2 = 6, ratio 7/6 = 4/3 - 1/6.
    groups = {name: [name] for name in "abcde"}
    costs = dict(zip("abcde", [3.0, 3.0, 2.0, 2.0, 2.0], strict=True))
    shards = cluster.pack(groups, costs, 2)
    assert shards == [["a", "c", "e"], ["b", "d"]]
    assert _makespan(shards, costs) == 7 and _optimum(list(costs.values()), 2) == 6


def test_equal_costs_deal_groups_in_collection_order() -> None:
    groups = _groups([1] * 7)
    shards = cluster.pack(groups, {cell: 1.0 for cells in groups.values() for cell in cells}, 3)
    assert shards == [["g0.c0", "g3.c0", "g6.c0"], ["g1.c0", "g4.c0"], ["g2.c0", "g5.c0"]]


def test_fewer_groups_than_shards_drops_the_empty_shards() -> None:
    groups = _groups([2, 1])
    assert cluster.pack(groups, {c: 1.0 for cells in groups.values() for c in cells}, 5) == [
        ["g0.c0", "g0.c1"],
        ["g1.c0"],
    ]


@given(
    cell_costs=st.lists(
        st.lists(st.integers(min_value=1, max_value=20), min_size=1, max_size=3), min_size=1, max_size=7
    ),
    shards=st.integers(min_value=1, max_value=3),
)
def test_pack_keeps_groups_whole_is_deterministic_and_within_the_lpt_bound(cell_costs, shards) -> None:
    groups = _groups([len(c) for c in cell_costs])
    costs = {f"g{g}.c{c}": float(v) for g, values in enumerate(cell_costs) for c, v in enumerate(values)}
    packed = cluster.pack(groups, costs, shards)
    assert packed == cluster.pack(groups, costs, shards)
    # Every cell exactly once, every group on one shard, cells in collection order within a shard.
    order = [cell for cells in groups.values() for cell in cells]
    assert sorted(cell for shard in packed for cell in shard) == sorted(order)
    for cells in groups.values():
        assert sum(any(cell in shard for cell in cells) for shard in packed) == 1
    assert all(shard == sorted(shard, key=order.index) for shard in packed)
    optimum = _optimum([sum(values) for values in cell_costs], shards)
    assert _makespan(packed, costs) <= (4 / 3 - 1 / (3 * shards)) * optimum + 1e-9


def test_group_keys_follow_the_families_and_the_seed() -> None:
    sf, cfg = "benchmarks/bench_size_factors.py", "benchmarks/bench_cfg.py"
    key = cluster.group_key
    # One trained model, one group, across tests and across the size_factors and cfg families.
    assert key(f"{sf}::test_attention[data-s0.5]", "size_factors") == key(
        f"{sf}::test_noise_prediction[data-s0.5]", "size_factors"
    )
    assert key(f"{cfg}::test_guided_quality[data-s0.5-w3]", "cfg") == key(
        f"{sf}::test_attention[data-s0.5]", "size_factors"
    )
    assert key(f"{sf}::test_teacher_reference", "size_factors") == key(f"{sf}::test_attention[teacher]", "size_factors")
    assert key(f"{sf}::test_attention[data-s0.5]", "size_factors") != key(
        f"{sf}::test_attention[data-s0.2]", "size_factors"
    )
    # Each seed trains its own artifacts: same model, other seed, other group; same seed, same group.
    seeded = key(f"{sf}::test_attention[data-s0.5-seed1]", "size_factors")
    assert seeded == key(f"{sf}::test_determinism[data-s0.5-seed1]", "size_factors")
    assert seeded != key(f"{sf}::test_attention[data-s0.5-seed0]", "size_factors")
    assert seeded != key(f"{sf}::test_attention[data-s0.5]", "size_factors")
    # batch_configs: every cell is its own group (each run trains its own artifact).
    bc = "benchmarks/bench_batch_configs.py::test_batch_config"
    assert key(f"{bc}[b256_sqrt]", "batch_configs") != key(f"{bc}[b256_sqrt_eqsteps]", "batch_configs")


def test_group_cells_keeps_first_appearance_order() -> None:
    cells = [("a1", "f"), ("b1", "f"), ("a2", "f"), ("c1", "f"), ("b2", "f")]
    assert cluster.group_cells(cells, key=lambda nodeid, family: nodeid[0]) == {
        "a": ["a1", "a2"],
        "b": ["b1", "b2"],
        "c": ["c1"],
    }


def test_costs_from_a_previous_run(tmp_path: Path) -> None:
    (tmp_path / OUTCOMES_DIR).mkdir()
    lines = [
        {"cell": "x", "outcome": "passed", "duration": 4.0, "attempt": "main-1", "time": "2026-01-01T00:00:00+00:00"},
        {"cell": "y", "outcome": "failed", "duration": 2.0, "attempt": "main-1", "time": "2026-01-01T00:00:01+00:00"},
    ]
    (tmp_path / OUTCOMES_DIR / "main-1.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    assert cluster.cell_costs(["x", "y", "z"], tmp_path) == {"x": 4.0, "y": 2.0, "z": 3.0}  # z: the mean
    assert cluster.cell_costs(["x", "z"], None) == {"x": 1.0, "z": 1.0}


# --- status -----------------------------------------------------------------------------------------------


def _outcome(cell: str, outcome: str, second: int, attempt: str = "main-1") -> dict:
    time_ = f"2026-01-01T00:00:{second:02d}+00:00"
    return {"cell": cell, "family": "metrics", "outcome": outcome, "duration": 1.0, "attempt": attempt, "time": time_}


def test_status_counts_done_failed_pending(tmp_path: Path) -> None:
    run_dir = tmp_path / "reports" / "run1"
    (run_dir / OUTCOMES_DIR).mkdir(parents=True)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a local job whose controller is gone without leaving a result
    submission = {
        "run_id": "run1",
        "shards": [
            {"index": 0, "cells": ["a", "b", "c", "d"], "jobs": [{"job_id": "111", "executor": "local"}]},
            {"index": 1, "cells": ["e", "f"], "jobs": [{"job_id": str(dead.pid), "executor": "local"}]},
            {"index": 2, "cells": ["g"], "jobs": []},
        ],
    }
    cluster.write_submission(run_dir, submission)
    lines = [
        _outcome("a", "passed", 1),
        _outcome("b", "failed", 2),
        _outcome("b", "passed", 3, "main-2"),  # rerun passed: done
        _outcome("c", "passed", 4),
        _outcome("c", "failed", 5, "main-2"),  # rerun failed: failed
        _outcome("e", "skipped", 6),  # skipped counts as done (--resume does not rerun it)
    ]  # d, f, g: no outcome, pending
    (run_dir / OUTCOMES_DIR / "main-1.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    result = run_dir / cluster.SUBMITIT_DIR / "111_0_result.pkl"
    result.parent.mkdir()
    result.write_bytes(pickle.dumps(("success", 1)))
    rows = cluster.progress(run_dir, submission)
    assert [(p.cells, p.done, p.failed, p.pending) for p in rows] == [(4, 2, 1, 1), (2, 1, 0, 1), (1, 0, 0, 1)]
    assert [p.state for p in rows] == ["COMPLETED (pytest exit 1)", "GONE", "NOT SUBMITTED"]
    printed: list[str] = []
    assert cluster.status(run_dir, out=printed.append) == 0
    assert printed[-1].split()[-5:] == ["total", "7", "3", "1", "3"]


def test_a_resubmission_may_not_change_the_request() -> None:
    submission = {"selection": ["benchmarks", "-k", "batch_configs"], "pytest_args": [], "shards_requested": 2}
    check = cluster._check_same_request
    check(submission, shards=None, paths=[], keyword=None, markers=None, args=[])
    check(submission, shards=2, paths=["benchmarks"], keyword="batch_configs", markers=None, args=[])
    for change in ({"shards": 3}, {"keyword": "cfg"}, {"markers": "slow"}, {"args": ["--profile", "paper"]}):
        request = {"shards": None, "paths": [], "keyword": None, "markers": None, "args": [], **change}
        with pytest.raises(UsageError, match="use a new --run-dir"):
            check(submission, **request)


# --- end to end on the local executor ---------------------------------------------------------------------

BENCH = """
import os
import time

import pytest
import torch

from diffbench.metrics.registry import BOOKKEEPING, NEITHER, QUALITY, Metric, declare

pytestmark = pytest.mark.metrics  # a discovered family's marker: these are matrix cells
declare(
    Metric("tiny_value", NEITHER, QUALITY, "a value fixed by the cell"),
    Metric("tiny_square", NEITHER, QUALITY, "recorded after the cell's pause"),
    Metric("tiny_threads", NEITHER, BOOKKEEPING, "torch threads of the process that ran the cell"),
)


@pytest.mark.parametrize("k", range(6))
def test_cell(k, record):
    record("tiny_value", k * 1.5 + 0.25, k=k)
    time.sleep(float(os.environ.get("TINY_SLEEP", "0")))
    record("tiny_square", float(torch.tensor(float(k)) ** 2), k=k)
    record("tiny_threads", float(torch.get_num_threads()), k=k)
"""

NOT_MATRIX = """
def test_plain_unit_test():
    assert True
"""


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project with a 6-cell family-marked bench (and a plain test, not a matrix cell), as the cwd."""
    (tmp_path / "pytest.ini").write_text("[pytest]\npython_files = bench_*.py test_*.py\n")
    (tmp_path / "conftest.py").write_text('pytest_plugins = ["diffbench.pytest_plugin"]\n')
    (tmp_path / "bench_tiny.py").write_text(BENCH)
    (tmp_path / "test_unit.py").write_text(NOT_MATRIX)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DIFFBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(THREADS_ENV, raising=False)
    return tmp_path


CELLS = [f"bench_tiny.py::test_cell[{k}]" for k in range(6)]


def _submit(run_dir: Path, printed: list[str], **overrides) -> int:
    request = {
        "shards": 2,
        "paths": ["bench_tiny.py", "test_unit.py"],
        "keyword": None,
        "markers": None,
        "pytest_args": [],
        "executor": "local",
        "slurm": cluster.SlurmOptions(),
        "wait": True,
        **overrides,
    }
    return cluster.submit(run_dir, out=printed.append, **request)


def _values(rows: list[dict]) -> dict[tuple[str, str], float]:
    """(cell, metric) -> value; fails on a (cell, metric) recorded twice."""
    out: dict[tuple[str, str], float] = {}
    for row in rows:
        key = (row["cell"], row["metric"])
        assert key not in out, f"{key} appears twice"
        out[key] = row["value"]
    return out


def test_local_submit_matches_a_plain_run(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(THREADS_ENV, "4")  # this process may use 4 cores: 2 per shard, whatever the machine has
    printed: list[str] = []
    run_dir = project / "reports" / "sharded"
    assert _submit(run_dir, printed) == 0, printed
    submission = cluster.read_submission(run_dir)
    # Matrix cells only, 2 shards of 3 (equal costs), together every cell once, each shard in collection order.
    assert [shard["cells"] for shard in submission["shards"]] == [CELLS[0::2], CELLS[1::2]]
    assert all(len(shard["jobs"]) == 1 and shard["jobs"][0]["threads"] == 2 for shard in submission["shards"])
    sharded = read_rows([run_dir / RESULTS_FILE])
    # Two processes wrote the rows (one per shard), each given cores // shards, each computing at --threads.
    assert len({row["attempt"] for row in sharded}) == 2
    assert {row["value"] for row in sharded if row["metric"] == "tiny_threads"} == {int(DEFAULT_THREADS)}

    plain = subprocess.run(
        [sys.executable, "-m", "pytest", "bench_tiny.py", "--run-id", "plain", "--report-dir", "reports"],
        cwd=project,
        capture_output=True,
        text=True,
    )
    assert plain.returncode == 0, plain.stdout[-2000:]
    plain_rows = read_rows([project / "reports" / "plain" / RESULTS_FILE])
    assert _values(sharded) == _values(plain_rows)  # the threads too: --threads, not the cores, sets them
    assert len(_values(sharded)) == 18 and _values(sharded)[(CELLS[3], "tiny_value")] == 4.75
    # `diffbench report` works on the run dir (it re-merges the parts) and the status says every cell is done.
    from diffbench.cli import main

    assert main(["report", str(run_dir)]) == 0
    printed.clear()
    cluster.status(run_dir, out=printed.append)
    assert printed[-1].split()[-5:] == ["total", "6", "6", "0", "0"]


def _attempts_per_cell(run_dir: Path) -> dict[str, int]:
    """How many times each cell started (wrote its first row), over every part file of the run."""
    return dict(Counter(row["cell"] for row in read_rows((run_dir / PARTS_DIR).glob("*.jsonl"))
                        if row["metric"] == "tiny_value"))  # fmt: skip


def _unfinished_cells(run_dir: Path, part: Path) -> set[str]:
    """Cells the process of ``part`` wrote rows for but recorded no outcome of."""
    started = {row["cell"] for row in read_rows([part])}
    return started - {line["cell"] for line in read_rows((run_dir / OUTCOMES_DIR).glob(f"{part.stem}.jsonl"))}


def _inside_second_cell(run_dir: Path) -> int | None:
    """The pid of a shard's pytest that has finished a cell and is inside the next one (it wrote that cell's
    first row; the cell then sleeps), or None."""
    for part in sorted((run_dir / PARTS_DIR).glob("*.jsonl")) if (run_dir / PARTS_DIR).is_dir() else []:
        started = {row["cell"] for row in read_rows([part])}
        if len(started) >= 2 and _unfinished_cells(run_dir, part):
            return int(part.stem.split("-")[1])
    return None


def _interrupted_cell(run_dir: Path, pid: int) -> str:
    """The one cell that the (killed or stopped) pytest ``pid`` started and never finished."""
    (part,) = (run_dir / PARTS_DIR).glob(f"main-{pid}*.jsonl")
    (cell,) = _unfinished_cells(run_dir, part)
    return cell


def _watch(run_dir: Path, act, timeout_s: float = 60.0) -> threading.Thread:
    """A thread that waits until a shard is inside its second cell, then calls ``act(pid)``."""

    def run() -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            pid = _inside_second_cell(run_dir)
            if pid is not None:
                act(pid)
                return
            time.sleep(0.05)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_killed_shard_is_resubmitted_without_duplicate_or_missing_rows(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TINY_SLEEP", "1.5")
    run_dir = project / "reports" / "killed"
    killed: list[int] = []

    def kill(pid: int) -> None:
        os.kill(pid, signal.SIGKILL)  # a real kill -9 of the shard's pytest, inside a cell
        killed.append(pid)

    watcher = _watch(run_dir, kill)
    printed: list[str] = []
    assert _submit(run_dir, printed) == 1, printed  # a shard died: cells pending, exit 1
    watcher.join()
    assert killed, "no shard was caught inside a cell"
    pid = killed[0]
    cell = _interrupted_cell(run_dir, pid)  # it left a row of the cell it was in, and no outcome
    submission = cluster.read_submission(run_dir)
    victim = next(shard for shard in submission["shards"] if cell in shard["cells"])
    before = {p.index: p for p in cluster.progress(run_dir, submission)}
    assert before[victim["index"]].pending >= 1 and before[1 - victim["index"]].complete
    assert before[victim["index"]].state.startswith("FAILED") and "signal 9" in before[victim["index"]].state

    printed.clear()
    # Only the unfinished shard again, on the run's executor (local), waited for (local's default).
    assert _submit(run_dir, printed, shards=None, paths=[], executor=None, wait=None) == 0, printed
    submission = cluster.read_submission(run_dir)
    assert [len(shard["jobs"]) for shard in submission["shards"]] == [
        2 if shard["index"] == victim["index"] else 1 for shard in submission["shards"]
    ]
    rows = read_rows([run_dir / RESULTS_FILE])
    values = _values(rows)  # no (cell, metric) twice
    assert set(values) == {(c, m) for c in CELLS for m in ("tiny_value", "tiny_square", "tiny_threads")}
    assert all(values[(c, "tiny_value")] == k * 1.5 + 0.25 for k, c in enumerate(CELLS))
    # The shard rerun alone keeps the run's cores per shard, and its cells compute at --threads as before.
    threads = max(1, os.cpu_count() // 2)
    assert {job["threads"] for shard in submission["shards"] for job in shard["jobs"]} == {threads}
    assert {values[(c, "tiny_threads")] for c in CELLS} == {int(DEFAULT_THREADS)}
    # Only the cell killed half-way ran twice (its kept rows come from the rerun): --resume skipped the others.
    assert _attempts_per_cell(run_dir) == {c: 2 if c == cell else 1 for c in CELLS}
    assert next(r for r in rows if r["cell"] == cell)["attempt"] != f"main-{pid}"


def _parent(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("PPid:"):
            return int(line.split()[1])
    raise AssertionError(f"no parent of {pid}")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="finds the job's process through /proc")
def test_preempted_shard_requeues_itself_and_resumes(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TINY_SLEEP", "1.5")
    run_dir = project / "reports" / "preempted"
    preempted: list[int] = []

    def preempt(pid: int) -> None:
        # What SLURM does before preempting or at the time limit: the preemption signal to the job's process
        # (the submitit process running ShardJob, the parent of the shard's pytest).
        os.kill(_parent(pid), cluster._preemption_signal())
        preempted.append(pid)

    watcher = _watch(run_dir, preempt)
    printed: list[str] = []
    assert _submit(run_dir, printed) == 0, printed  # requeued by submitit itself: no resubmission needed
    watcher.join()
    assert preempted
    cell = _interrupted_cell(run_dir, preempted[0])
    submission = cluster.read_submission(run_dir)
    assert all(len(shard["jobs"]) == 1 for shard in submission["shards"])
    values = _values(read_rows([run_dir / RESULTS_FILE]))
    assert set(values) == {(c, m) for c in CELLS for m in ("tiny_value", "tiny_square", "tiny_threads")}
    # The interrupted cell's first attempt was stopped after its first row and the requeued job ran it again;
    # no other cell ran twice (the stopped pytest did not go on, the requeued one resumed).
    assert _attempts_per_cell(run_dir) == {c: 2 if c == cell else 1 for c in CELLS}
    parts = read_rows((run_dir / PARTS_DIR).glob("*.jsonl"))
    assert len({row["attempt"] for row in parts}) == 3


@pytest.fixture
def fake_slurm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Stand-ins for ``srun`` and ``sbatch`` on PATH: submissions are accepted as job 4242 and never run."""
    bin_dir = tmp_path / "fake-slurm"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "sbatch").write_text('#!/bin/sh\necho "Submitted batch job 4242"\n')
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")


def test_slurm_submits_one_array_with_the_requested_resources(project: Path, fake_slurm: None) -> None:
    """The shards go out as one job array whose script asks for what the options say, and each shard's pickled
    job runs its own cells with the CPUs asked per task."""
    run_dir = project / "reports" / "on-slurm"
    slurm = cluster.SlurmOptions(partition="gpu", time_min=120, gpus_per_task=1, cpus_per_task=8, mem="32G")
    printed: list[str] = []
    assert _submit(run_dir, printed, executor="slurm", slurm=slurm, wait=False, shards=3) == 0
    submission = cluster.read_submission(run_dir)
    assert [job["job_id"] for shard in submission["shards"] for job in shard["jobs"]] == ["4242_0", "4242_1", "4242_2"]
    script = (run_dir / cluster.SUBMITIT_DIR / "4242_submission.sh").read_text()
    for line in ("--array=0-2%3", "--partition=gpu", "--time=120", "--gpus-per-task=1", "--cpus-per-task=8"):
        assert f"#SBATCH {line}\n" in script, script
    assert "#SBATCH --mem=32G" in script and "#SBATCH --signal=USR2@" in script
    for shard in submission["shards"]:
        job = submitit.SlurmJob(folder=run_dir / cluster.SUBMITIT_DIR, job_id=shard["jobs"][0]["job_id"])
        shard_job = job.submission().function
        assert isinstance(shard_job, cluster.ShardJob) and shard_job.cwd == str(project)
        assert shard_job.argv[3 : 3 + len(shard["cells"])] == shard["cells"] and "--resume" in shard_job.argv
        assert shard_job.env == {"OMP_NUM_THREADS": "8", THREADS_ENV: "8"}
    assert sorted(cell for shard in submission["shards"] for cell in shard["cells"]) == sorted(CELLS)


def test_command_line_passes_pytest_arguments_after_the_double_dash(project: Path, fake_slurm: None) -> None:
    from diffbench.cli import main

    run_dir = project / "reports" / "seeded"
    argv = ["submit", "bench_tiny.py", "-k", "not 5", "--run-dir", str(run_dir), "--shards", "4"]
    assert main([*argv, "--executor", "slurm", "--profile", "smoke", "--", "--seeds", "0,1"]) == 0
    submission = cluster.read_submission(run_dir)
    assert submission["selection"] == ["bench_tiny.py", "-k", "not 5"]
    assert submission["pytest_args"] == ["--profile", "smoke", "--seeds", "0,1"]
    cells = [cell for shard in submission["shards"] for cell in shard["cells"]]
    assert sorted(cells) == sorted(f"{c.removesuffix(']')}-seed{s}]" for c in CELLS[:5] for s in (0, 1))
    assert all(shard["jobs"][0]["job_id"].startswith("4242_") for shard in submission["shards"])
    # A resubmission that changes the request, and pytest arguments submit sets itself, are usage errors.
    assert main(["submit", "--run-dir", str(run_dir), "-k", "cell", "--executor", "slurm"]) == 2
    assert main([*argv[:-2], "--", "--run-id", "other"]) == 2
    assert main(["status", str(project / "reports")]) == 2

"""Faults the artifact cache and the trainer survive, each one produced for real.

Two processes on one cache, damaged entries (truncated, tampered with the same size), a builder killed with
SIGKILL while holding its lock, a live holder, two writers publishing the same key, a training process killed
with SIGKILL mid-run and rerun, and an unwritable cache directory.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from diffbench.cache import ENV_VAR, ArtifactCache, CacheWriteError, artifact_key
from diffbench.locking import LinkLock, LockTimeout

REPO = Path(__file__).resolve().parents[1]
CONFIG = {"model": "mlp", "lr": 1e-3}
KEY = artifact_key("runs", CONFIG)
VALUE = {"weights": torch.arange(6.0).reshape(2, 3), "epoch": 3}


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def _spawn(tmp_path: Path, source: str, *args: object) -> subprocess.Popen:
    script = tmp_path / f"script_{len(list(tmp_path.glob('script_*.py')))}.py"
    script.write_text(textwrap.dedent(source))
    return subprocess.Popen(
        [sys.executable, str(script), *map(str, args)], env=_env(), cwd=REPO, stderr=subprocess.PIPE
    )


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"process exited ({proc.returncode}) early: {proc.stderr.read().decode()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} did not appear within {timeout}s")
        time.sleep(0.005)


def _kill9(proc: subprocess.Popen) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL
    proc.stderr.close()


def _recording(builds: list, value: dict):
    """A builder that returns ``value`` and appends its workdir to ``builds``."""
    return lambda workdir: builds.append(workdir) or value


def _assert_equal(got: dict, want: dict) -> None:
    assert got.keys() == want.keys()
    for key, value in want.items():
        assert torch.equal(got[key], value) if isinstance(value, torch.Tensor) else got[key] == value, key


def _leftovers(directory: Path) -> list[str]:
    """Temporary, claim and lock files: none may outlive a finished get_or_build."""
    return sorted(p.name for p in directory.iterdir() if p.name.startswith(".") or p.name.endswith(".lock"))


# ------------------------------------------------------------------------------- two sessions, one cache

SESSION = """
    import sys, time
    from pathlib import Path
    import torch
    from diffbench.cache import ArtifactCache

    root, counter, ready, tag, out = sys.argv[1:6]
    Path(ready, tag).touch()
    deadline = time.monotonic() + 60
    while len(list(Path(ready).iterdir())) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)  # start both get_or_build calls together

    def build(workdir):
        with open(counter, "a") as f:
            f.write(tag + "\\n")
        time.sleep(1.0)  # long enough for the other process to reach the lock
        return {"weights": torch.arange(6.0).reshape(2, 3) * 7, "epoch": 3}

    value = ArtifactCache(root).get_or_build("runs", {"model": "mlp", "lr": 1e-3}, build)
    torch.save(value, out)
"""


def test_two_sessions_on_one_cache_build_once(tmp_path):
    ready, counter, root = tmp_path / "ready", tmp_path / "count", tmp_path / "cache"
    ready.mkdir()
    procs = [_spawn(tmp_path, SESSION, root, counter, ready, tag, tmp_path / f"{tag}.pt") for tag in ("s0", "s1")]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err.decode()
    assert len(counter.read_text().splitlines()) == 1
    a, b = (torch.load(tmp_path / f"{tag}.pt", weights_only=True) for tag in ("s0", "s1"))
    _assert_equal(a, b)
    _assert_equal(a, {"weights": torch.arange(6.0).reshape(2, 3) * 7, "epoch": 3})
    record = ArtifactCache(root).provenance("runs", CONFIG)
    assert record["sha256"] == hashlib.sha256((root / "runs" / f"{KEY}.pt").read_bytes()).hexdigest()
    assert _leftovers(root / "runs") == []


# ------------------------------------------------------------------------------------- damaged entries


@pytest.fixture
def load_calls(monkeypatch) -> list:
    """Every ``torch.load`` call made from now on (the cache loads through ``torch.load``)."""
    calls, real_load = [], torch.load

    def spy(*args, **kwargs):
        calls.append(args)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    return calls


def test_a_truncated_entry_is_rebuilt_never_loaded(tmp_path, load_calls):
    cache, builds = ArtifactCache(tmp_path), []
    cache.get_or_build("runs", CONFIG, _recording(builds, VALUE))
    path = cache.path("runs", CONFIG)
    path.write_bytes(path.read_bytes()[:-100])
    fresh = {**VALUE, "epoch": 4}
    with pytest.warns(RuntimeWarning, match=rf"{re.escape(str(path))} fails its checksum.*rebuilding it"):
        got = cache.get_or_build("runs", CONFIG, _recording(builds, fresh))
    _assert_equal(got, fresh)
    assert load_calls == [] and len(builds) == 2
    _assert_equal(ArtifactCache(tmp_path).get_or_build("runs", CONFIG, _recording(builds, VALUE)), fresh)
    assert len(load_calls) == 1 and len(builds) == 2


def test_a_tampered_entry_of_the_same_size_is_rebuilt_never_loaded(tmp_path, load_calls):
    cache, builds = ArtifactCache(tmp_path), []
    cache.get_or_build("runs", CONFIG, _recording(builds, VALUE))
    path = cache.path("runs", CONFIG)
    original = path.read_bytes()
    # Other weights of the same shape, saved through the same writer: a loadable file of the same size.
    tampered_value = {**VALUE, "weights": -VALUE["weights"]}
    path.unlink()
    cache_copy = ArtifactCache(tmp_path / "elsewhere")
    cache_copy.get_or_build("runs", CONFIG, lambda workdir: tampered_value)
    tampered = cache_copy.path("runs", CONFIG).read_bytes()
    assert len(tampered) == len(original) and tampered != original
    path.write_bytes(tampered)
    _assert_equal(torch.load(path, weights_only=True), tampered_value)  # a valid pickle, only not ours
    load_calls.clear()

    fresh = {**VALUE, "epoch": 5}
    with pytest.warns(RuntimeWarning, match=rf"{re.escape(str(path))} fails its checksum.*rebuilding it"):
        got = cache.get_or_build("runs", CONFIG, _recording(builds, fresh))
    _assert_equal(got, fresh)
    assert load_calls == [] and len(builds) == 2


# ----------------------------------------------------------------------------------------------- locks

KILLED_BUILDER = """
    import sys, time
    from pathlib import Path
    from diffbench.cache import ArtifactCache

    root, started = sys.argv[1:3]

    def build(workdir):
        Path(started).touch()
        time.sleep(600)  # killed with SIGKILL while building, holding the lock

    ArtifactCache(root).get_or_build("runs", {"model": "mlp", "lr": 1e-3}, build)
"""


def test_the_lock_of_a_builder_killed_with_sigkill_is_recovered(tmp_path):
    root, started, builds = tmp_path / "cache", tmp_path / "started", []
    proc = _spawn(tmp_path, KILLED_BUILDER, root, started)
    _wait_for(started, proc)
    lock = root / "runs" / f"{KEY}.lock"
    holder = json.loads(lock.read_text())
    assert holder["pid"] == proc.pid and holder["host"] == re.sub(r"[^A-Za-z0-9-]", "_", socket.gethostname())[:32]
    _kill9(proc)
    assert lock.exists()  # nobody cleaned up: the lock is stale

    # The lifetime (120 s) is far beyond the timeout: only seeing that the holder's pid is dead recovers it.
    cache = ArtifactCache(root, lock_timeout=30)
    t0 = time.monotonic()
    _assert_equal(cache.get_or_build("runs", CONFIG, _recording(builds, VALUE)), VALUE)
    assert time.monotonic() - t0 < 10 and len(builds) == 1
    assert _leftovers(root / "runs") == []  # the dead holder's claim file went with its lock


LIVE_HOLDER = """
    import sys, time
    from pathlib import Path
    from diffbench.locking import LinkLock

    path, held = sys.argv[1:3]
    with LinkLock(path, lifetime=1.0):  # heartbeat every 0.25 s
        Path(held).touch()
        time.sleep(600)
"""


def test_a_live_holders_lock_is_respected(tmp_path):
    root, held = tmp_path / "cache", tmp_path / "held"
    (root / "runs").mkdir(parents=True)
    lock = root / "runs" / f"{KEY}.lock"
    proc = _spawn(tmp_path, LIVE_HOLDER, lock, held)
    try:
        _wait_for(held, proc)
        # The wait outlasts the lifetime three times over: only the holder's heartbeat keeps its lock valid.
        cache, t0 = ArtifactCache(root, lock_timeout=3.0, lock_lifetime=1.0), time.monotonic()
        with pytest.raises(LockTimeout) as err:
            cache.get_or_build("runs", CONFIG, lambda workdir: pytest.fail("built under another's lock"))
        assert time.monotonic() - t0 >= 3.0
        message = str(err.value)
        assert str(lock) in message and f"held by pid {proc.pid} on host " in message
        assert "last heartbeat" in message and "without a heartbeat" in message
    finally:
        _kill9(proc)
    # Once the holder is dead the same call gets through at once.
    _assert_equal(ArtifactCache(root, lock_timeout=10).get_or_build("runs", CONFIG, lambda workdir: VALUE), VALUE)


def test_a_lock_from_another_host_is_broken_only_when_its_heartbeat_is_old(tmp_path):
    """Another machine's pid cannot be checked from here: its lock is stale once its mtime is older than the
    lifetime, as the file system's clock measures it."""
    lock = tmp_path / "x.lock"
    lock.write_text(json.dumps({"host": "elsewhere", "pid": 1, "time": "then", "token": "elsewhere-1-0a"}))
    with pytest.raises(LockTimeout, match="held by pid 1 on host elsewhere since then"):
        LinkLock(lock, lifetime=5.0, timeout=0.3).acquire()
    old = time.time() - 6.0
    os.utime(lock, (old, old))
    with LinkLock(lock, lifetime=5.0, timeout=1.0) as acquired:
        assert acquired.is_held and acquired.holder()["pid"] == os.getpid()
    assert not lock.exists() and os.listdir(tmp_path) == []


# ----------------------------------------------------------------------------------- first writer wins


class _NoLock:
    """A lock that excludes nobody: two writers of one key at once, as when a live lock was wrongly broken."""

    def acquire(self) -> _NoLock:
        return self

    def release(self) -> None:
        pass


def test_the_first_complete_writer_wins(tmp_path, monkeypatch):
    first, second, builds = ArtifactCache(tmp_path), ArtifactCache(tmp_path), []
    monkeypatch.setattr(second, "_lock", lambda kind, key: _NoLock())
    first_value, second_value = VALUE, {**VALUE, "weights": VALUE["weights"] + 1}
    pt, record = first.path("runs", CONFIG), first.path("runs", CONFIG).with_suffix(".json")
    published = {}

    def build_second(workdir: Path) -> dict:
        # While the second writer builds, the first one builds and publishes the same key.
        _assert_equal(first.get_or_build("runs", CONFIG, _recording(builds, first_value)), first_value)
        published.update(pt=pt.read_bytes(), record=record.read_text())
        return _recording(builds, second_value)(workdir)

    _assert_equal(second.get_or_build("runs", CONFIG, build_second), first_value)  # the winner's entry
    assert len(builds) == 2
    assert pt.read_bytes() == published["pt"] and record.read_text() == published["record"]  # not overwritten
    assert second.touched[0]["sha256"] == json.loads(published["record"])["sha256"]
    assert _leftovers(tmp_path / "runs") == []  # the loser's temporary files are gone


# ------------------------------------------------------------------------------ kill -9 mid-training

TRAIN = """
    import sys, time
    from pathlib import Path
    import torch
    from diffbench.data import DataConfig, Dataset, load_dataset
    from diffbench.models import ModelConfig
    from diffbench.schedules import NoiseSchedule
    from diffbench.training import TrainConfig, epsilon_loss, train


    def main(workdir, out, pace, threads, go=""):
        torch.set_num_threads(int(threads))  # as the test process: same reduction order
        torch.optim.Adam([torch.zeros(1, requires_grad=True)])  # imports torch._dynamo (seconds) ahead of time
        while go and not Path(go).exists():
            time.sleep(0.005)  # started early, trains once told to
        full = load_dataset(DataConfig("gmm2d"), "train")
        data = Dataset("gmm2d", "train", full.x[:512].clone(), full.y[:512].clone(), full.num_classes)
        config = TrainConfig(epochs=6, batch_size=64, lr=1e-3, checkpoint_every=1, ema_decay=0.9, seed=0)
        model = ModelConfig.of("mlp", hidden=16).build(seed=0)
        steps = []

        def paced_loss(model, batch):
            steps.append(1)
            time.sleep(float(pace))  # paces the steps so a kill lands mid-training; the arithmetic is untouched
            return epsilon_loss(model, batch)

        result = train(
            model, NoiseSchedule.linear(1000), data, config, checkpoint_dir=workdir, loss_fn=paced_loss, progress=False
        )
        history = [{k: v for k, v in row.items() if k != "seconds"} for row in result.history]
        torch.save(
            {"model": model.state_dict(), "checkpoints": result.checkpoints, "history": history, "steps": len(steps)},
            out,
        )


    if __name__ == "__main__":
        main(*sys.argv[1:])
"""
EPOCHS, STEPS_PER_EPOCH = 6, 512 // 64


def test_training_killed_with_sigkill_resumes_to_identical_weights(tmp_path):
    """SIGKILL (not an exception) after the first checkpoint, then a rerun in the same directory: it resumes
    from the last checkpoint and ends with the weights, EMA weights and log of an uninterrupted run."""
    killed_dir, threads = tmp_path / "killed", torch.get_num_threads()
    # Both processes start now (imports take seconds) and train in the same directory once told to.
    victim = _spawn(tmp_path, TRAIN, killed_dir, tmp_path / "resumed.pt", 0.03, threads, tmp_path / "go_victim")
    rerun = _spawn(tmp_path, TRAIN, killed_dir, tmp_path / "resumed.pt", 0, threads, tmp_path / "go_rerun")
    # Meanwhile the uninterrupted reference, in this process (same script, same thread count).
    namespace = {"__name__": "reference"}
    exec(compile(textwrap.dedent(TRAIN), "train_script", "exec"), namespace)
    namespace["main"](tmp_path / "reference", tmp_path / "reference.pt", 0, threads)

    (tmp_path / "go_victim").touch()
    _wait_for(killed_dir / "epoch_000001.pt", victim)
    _kill9(victim)
    done = sorted(int(p.stem.removeprefix("epoch_")) for p in killed_dir.glob("epoch_*.pt"))
    assert done and done == list(range(1, done[-1] + 1)) and done[-1] < EPOCHS  # killed mid-run
    resumed_from = killed_dir / f"epoch_{done[-1]:06d}.pt"
    kept = resumed_from.read_bytes()
    (tmp_path / "go_rerun").touch()
    _, err = rerun.communicate(timeout=120)
    assert rerun.returncode == 0, err.decode()

    resumed = torch.load(tmp_path / "resumed.pt", weights_only=True)
    ref = torch.load(tmp_path / "reference.pt", weights_only=True)
    assert ref["steps"] == EPOCHS * STEPS_PER_EPOCH
    assert resumed["steps"] == (EPOCHS - done[-1]) * STEPS_PER_EPOCH  # resumed, not restarted
    assert resumed_from.read_bytes() == kept
    _assert_equal(resumed["model"], ref["model"])  # bitwise: torch.equal
    assert resumed["checkpoints"].keys() == ref["checkpoints"].keys() == set(range(1, EPOCHS + 1))
    for epoch, ema_weights in ref["checkpoints"].items():  # EMA weights, the final ones included
        _assert_equal(resumed["checkpoints"][epoch], ema_weights)
    assert resumed["history"] == ref["history"]


# ---------------------------------------------------------------------------------- unwritable cache


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root ignores file permissions")
def test_an_unwritable_cache_dir_is_one_clear_error(tmp_path):
    root, builds = tmp_path / "cache", []
    ArtifactCache(root).get_or_build("runs", CONFIG, _recording(builds, VALUE))
    for directory in (root, root / "runs"):
        directory.chmod(0o555)
    try:
        # A valid entry in a read-only cache is still served: reading takes no lock.
        _assert_equal(ArtifactCache(root).get_or_build("runs", CONFIG, _recording(builds, VALUE)), VALUE)
        with pytest.raises(CacheWriteError) as err:
            ArtifactCache(root).get_or_build("runs", {"other": 1}, _recording(builds, VALUE))
    finally:
        for directory in (root, root / "runs"):
            directory.chmod(0o755)
    assert isinstance(err.value, OSError) and len(builds) == 1
    message = str(err.value)
    assert str(root) in message and f"${ENV_VAR}" in message and "--cache-dir" in message
    assert "make it writable" in message


def test_a_cache_dir_that_cannot_exist_is_one_clear_error(tmp_path):
    """A cache root below a regular file (ENOTDIR): fails the same way for every user, root included."""
    (tmp_path / "file").write_text("")
    root, builds = tmp_path / "file" / "cache", []
    with pytest.raises(CacheWriteError, match=rf"cannot write to the artifact cache {re.escape(str(root))}") as err:
        ArtifactCache(root).get_or_build("runs", CONFIG, _recording(builds, VALUE))
    assert f"${ENV_VAR}" in str(err.value) and "--cache-dir" in str(err.value)
    assert isinstance(err.value, OSError) and isinstance(err.value.__cause__, NotADirectoryError)
    assert len(builds) == 0

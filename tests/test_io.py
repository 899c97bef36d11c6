"""Atomic writes: whole or nothing, parent dirs created, no temporary files left, concurrent writers safe."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from diffbench.io import (
    atomic_np_save,
    atomic_path,
    atomic_symlink,
    atomic_torch_save,
    atomic_write_bytes,
    atomic_write_text,
)

REPO = Path(__file__).resolve().parents[1]


class Boom(Exception):
    pass


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


def test_write_text_and_bytes_create_parent_dirs(tmp_path):
    text = tmp_path / "a" / "b" / "c.txt"
    assert atomic_write_text(text, "héllo\n") == text
    assert text.read_text(encoding="utf-8") == "héllo\n"
    data = tmp_path / "x" / "y.bin"
    atomic_write_bytes(data, bytes(range(256)))
    assert data.read_bytes() == bytes(range(256))
    assert _leftovers(text.parent) == _leftovers(data.parent) == []


def test_an_error_inside_the_context_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    path = tmp_path / "results.jsonl"
    path.write_text("old\n")
    with pytest.raises(Boom), atomic_path(path) as tmp:
        tmp.write_text("new, half written")
        raise Boom
    assert path.read_text() == "old\n"
    assert _leftovers(tmp_path) == []


def test_an_error_before_the_first_write_leaves_nothing(tmp_path):
    path = tmp_path / "sub" / "never.txt"
    with pytest.raises(Boom), atomic_path(path):
        raise Boom
    assert not path.exists() and _leftovers(path.parent) == []


def test_a_failed_directory_write_is_removed_whole(tmp_path):
    out = tmp_path / "pngs"
    with pytest.raises(Boom), atomic_path(out) as tmp:
        tmp.mkdir()
        (tmp / "000000.png").write_bytes(b"x")
        raise Boom
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_a_directory_replaces_a_missing_or_empty_one(tmp_path):
    out = tmp_path / "pngs"
    out.mkdir()
    with atomic_path(out) as tmp:
        tmp.mkdir()
        (tmp / "a").write_text("1")
    assert sorted(p.name for p in out.iterdir()) == ["a"]


def test_temp_paths_are_hidden_unique_siblings(tmp_path):
    path = tmp_path / "f.txt"
    with atomic_path(path) as a, atomic_path(path) as b:
        assert a != b
        assert a.parent == b.parent == tmp_path
        assert a.name.startswith(".f.txt.") and a.name.endswith(".tmp")
        assert str(os.getpid()) in a.name
        a.write_text("a")
        b.write_text("b")
    assert path.read_text() == "a"  # the outer context finishes last: last writer wins


def test_a_long_name_still_gets_a_valid_temp_name(tmp_path):
    path = tmp_path / ("x" * 240 + ".npy")
    atomic_np_save(path, np.arange(3))
    assert np.array_equal(np.load(path), np.arange(3))


def test_np_save_keeps_the_exact_name_and_round_trips(tmp_path):
    array = np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32)
    path = atomic_np_save(tmp_path / "arrays" / "samples.npy", array)
    assert sorted(p.name for p in path.parent.iterdir()) == ["samples.npy"]
    loaded = np.load(path)
    assert loaded.dtype == array.dtype and np.array_equal(loaded, array)


def test_torch_save_round_trips_weights_only(tmp_path):
    state = {"w": torch.arange(6.0).reshape(2, 3), "epoch": 3}
    path = atomic_torch_save(state, tmp_path / "ckpt" / "epoch_000003.pt")
    loaded = torch.load(path, weights_only=True)
    assert torch.equal(loaded["w"], state["w"]) and loaded["epoch"] == 3
    assert _leftovers(path.parent) == []


def test_symlink_is_replaced_in_one_step(tmp_path):
    (tmp_path / "run1").mkdir()
    (tmp_path / "run2").mkdir()
    (tmp_path / "run2" / "marker").touch()
    link = tmp_path / "latest"
    atomic_symlink(link, "run1", target_is_directory=True)
    assert os.readlink(link) == "run1"  # a relative target stays relative
    atomic_symlink(link, "run2", target_is_directory=True)
    assert os.readlink(link) == "run2" and (link / "marker").exists()
    assert _leftovers(tmp_path) == []


def test_importing_io_stays_light():
    """The helper is imported by light modules (the CLI); it must not pull in torch, numpy or pandas."""
    code = "import sys, diffbench.io; print(sorted({'torch', 'numpy', 'pandas'} & set(sys.modules)))"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env, cwd=REPO)
    assert out.stdout.strip() == "[]"


# ---------------------------------------------------------------------------------------- concurrency

PAYLOAD_BYTES = 1 << 18  # large enough that a non-atomic write (truncate, then write) would be caught midway
WRITES_PER_TAG = 150


def test_concurrent_writers_never_leave_a_partial_file(tmp_path):
    """Two processes write the same path over and over (two distinct contents) while this one reads it:
    every read is one writer's whole content, and no temporary file is left behind."""
    path = tmp_path / "shared.bin"
    payloads = {tag: bytes([tag]) * PAYLOAD_BYTES for tag in (1, 2)}
    tasks = [(str(path), payloads[1 + i % 2]) for i in range(2 * WRITES_PER_TAG)]
    seen = set()
    # spawn: a fork of a process holding torch's threads may deadlock; the workers need only diffbench.io
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        done = pool.starmap_async(atomic_write_bytes, tasks, chunksize=1)
        while not done.ready():
            try:
                data = path.read_bytes()
            except FileNotFoundError:
                continue
            assert data in payloads.values(), f"read a partial or mixed file of {len(data)} bytes"
            seen.add(data[0])
        done.get(timeout=120)
    assert path.read_bytes() in payloads.values()
    assert seen == {1, 2}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shared.bin"]

"""Provenance: git state of the checkout holding the package, library versions, host, device and time."""

from __future__ import annotations

import platform
import shutil
import socket
import subprocess
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import torch

import diffbench
from diffbench import provenance as prov

KEYS = {"git_sha", "git_dirty", "diffbench", "torch", "cuda", "python", "host", "device", "threads", "time"}
needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


@pytest.fixture(autouse=True)
def fresh_git_state():
    """Each test sees the git state of the PACKAGE_DIR it sets, not one cached by an earlier test."""
    prov._git_state.cache_clear()
    yield
    prov._git_state.cache_clear()


def _git(cwd: Path, *args: str) -> str:
    ident = ["-c", "user.name=diffbench", "-c", "user.email=diffbench@example.invalid", "-c", "commit.gpgsign=false"]
    return subprocess.run(["git", *ident, *args], cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()


@pytest.fixture
def repo(tmp_path) -> Path:
    """A git repository with one commit holding ``pkg/__init__.py``."""
    _git(tmp_path, "init", "-q")
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("x = 1\n")
    _git(tmp_path, "add", "pkg/__init__.py")
    _git(tmp_path, "commit", "-q", "-m", "init")
    return tmp_path


def test_provenance_has_every_field_with_the_values_of_this_process():
    got = prov.provenance(device=torch.device("cpu"))
    assert set(got) == KEYS
    assert got["diffbench"] == diffbench.__version__
    assert got["torch"] == torch.__version__ and got["cuda"] == torch.version.cuda
    assert got["python"] == platform.python_version() and got["host"] == socket.gethostname()
    assert got["device"] == "cpu" and prov.provenance()["device"] is None
    assert got["threads"] == torch.get_num_threads()
    when = datetime.fromisoformat(got["time"])
    assert when.utcoffset() == timedelta(0) and abs(datetime.now(timezone.utc) - when) < timedelta(minutes=1)


@needs_git
def test_git_state_of_a_tracked_package(repo, monkeypatch):
    monkeypatch.setattr(prov, "PACKAGE_DIR", repo / "pkg")
    assert prov.git_state() == {"git_sha": _git(repo, "rev-parse", "HEAD"), "git_dirty": False}
    assert len(prov.git_state()["git_sha"]) == 40


@needs_git
def test_a_modified_tracked_file_makes_the_tree_dirty_and_an_untracked_one_does_not(repo, monkeypatch):
    monkeypatch.setattr(prov, "PACKAGE_DIR", repo / "pkg")
    (repo / "notes.txt").write_text("untracked\n")
    assert prov.git_state()["git_dirty"] is False
    prov._git_state.cache_clear()
    (repo / "pkg" / "__init__.py").write_text("x = 2\n")
    assert prov.git_state()["git_dirty"] is True


@needs_git
def test_an_untracked_copy_inside_a_repository_reports_no_sha(repo, monkeypatch):
    """A package installed into e.g. ``repo/.venv/.../site-packages`` must not claim the repo's commit."""
    copy = repo / "venv" / "site-packages" / "pkg"
    copy.mkdir(parents=True)
    (copy / "__init__.py").write_text("x = 1\n")
    monkeypatch.setattr(prov, "PACKAGE_DIR", copy)
    assert prov.git_state() == {"git_sha": None, "git_dirty": None}


def test_outside_any_checkout_or_without_git_the_state_is_unknown(tmp_path, monkeypatch):
    (tmp_path / "pkg").mkdir()
    monkeypatch.setattr(prov, "PACKAGE_DIR", tmp_path / "pkg")
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))  # do not find a repository above tmp_path
    assert prov.git_state() == {"git_sha": None, "git_dirty": None}
    prov._git_state.cache_clear()
    monkeypatch.setenv("PATH", str(tmp_path / "no-binaries-here"))
    monkeypatch.setattr(prov, "PACKAGE_DIR", Path(prov.__file__).resolve().parent)
    assert prov.git_state() == {"git_sha": None, "git_dirty": None}
    assert prov.provenance()["git_sha"] is None  # never raises


def test_git_runs_once_per_process(monkeypatch):
    calls = []
    real = prov._git

    def counting(*args, cwd):
        calls.append(args)
        return real(*args, cwd=cwd)

    monkeypatch.setattr(prov, "_git", counting)
    first = prov.git_state()
    n = len(calls)
    assert prov.git_state() == first and prov.row_provenance()["git_sha"] == first["git_sha"]
    assert len(calls) == n <= 3


def test_callers_cannot_corrupt_the_cached_state():
    prov.git_state()["git_sha"] = "tampered"
    prov.row_provenance()["git_sha"] = "tampered"
    assert prov.git_state()["git_sha"] != "tampered"


def test_row_provenance_is_the_cheap_part():
    row = prov.row_provenance()
    assert set(row) == {"git_sha", "git_dirty", "host"}
    assert row["host"] == socket.gethostname()


@needs_git
def test_this_checkout_reports_its_head():
    repo = Path(prov.__file__).resolve().parents[1]
    if not (repo / ".git").exists():
        pytest.skip("diffbench is not imported from a git checkout")
    assert prov.git_state()["git_sha"] == _git(repo, "rev-parse", "HEAD")

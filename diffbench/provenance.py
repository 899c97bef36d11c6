"""Provenance: which code, on which machine, with which libraries, built an artifact or wrote a result row.

:func:`provenance` is stored beside every cached artifact (see ``diffbench.cache``) and copied into the rows
that use it; :func:`row_provenance`, its cheap part, goes into every row. The git state is that of the
checkout the imported ``diffbench`` package lives in, computed once per process (it shells out to git); it is
``None`` when the package is not a tracked file of a git checkout (an installed wheel) or git is missing.
"""

from __future__ import annotations

import functools
import platform
import socket
import subprocess
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

PACKAGE_DIR = Path(__file__).resolve().parent
GIT_TIMEOUT_S = 10


def _git(*args: str, cwd: Path) -> str | None:
    """stdout of ``git <args>`` run in ``cwd``, or None if git is missing, fails or hangs."""
    try:
        done = subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=GIT_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


@functools.cache
def _git_state() -> tuple[str | None, bool | None]:
    if _git("ls-files", "--error-unmatch", "__init__.py", cwd=PACKAGE_DIR) is None:
        return None, None
    sha = _git("rev-parse", "HEAD", cwd=PACKAGE_DIR)
    if sha is None:
        return None, None
    status = _git("status", "--porcelain", "--untracked-files=no", cwd=PACKAGE_DIR.parent)
    return sha.strip(), None if status is None else bool(status.strip())


def git_state() -> dict[str, Any]:
    """``{"git_sha": str | None, "git_dirty": bool | None}`` of the checkout holding this package.

    ``git_dirty`` is whether tracked files differ from HEAD (``git status --porcelain --untracked-files=no``,
    whole work tree: benchmarks and tests define results too). A copy of the package that git does not track
    (e.g. installed into a virtual environment inside some repository) reports None for both, rather than the
    SHA of an unrelated checkout. Computed once per process.
    """
    sha, dirty = _git_state()
    return {"git_sha": sha, "git_dirty": dirty}


def row_provenance() -> dict[str, Any]:
    """``{"git_sha", "git_dirty", "host"}`` of this process: what every result row records about its writer."""
    return {**git_state(), "host": socket.gethostname()}


def provenance(device: object | None = None) -> dict[str, Any]:
    """Everything known about the code and machine doing a build now, as a JSON-able dict.

    Keys: ``git_sha``, ``git_dirty``, ``diffbench``, ``torch``, ``cuda`` (``torch.version.cuda``, None for a CPU
    build), ``python``, ``host``, ``device`` (``str(device)`` or None), ``threads`` (torch's intra-op threads: a
    CPU build's weights depend on them, see ``diffbench.devices``) and ``time`` (UTC, ISO 8601, seconds)."""
    import torch

    from diffbench import __version__

    return {
        **row_provenance(),
        "diffbench": __version__,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "device": None if device is None else str(device),
        "threads": torch.get_num_threads(),
        "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }

"""Atomic writes: a file (or directory, or symlink) appears whole under its final name, or not at all.

Every writer in diffbench goes through :func:`atomic_path`: the content is written to a temporary name in the
same directory (so the final ``os.replace`` is a rename within one file system, atomic on POSIX and Windows),
unique per host, process and call, so concurrent writers (xdist workers, several machines on a shared cache)
never write into each other's temporary file. The last writer to finish wins; readers see either the old or
the new content, never a mix. On an exception the temporary path is removed and the old content stays.

This module imports nothing heavy: torch and numpy are imported inside the helpers that need them.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = [
    "atomic_np_save",
    "atomic_path",
    "atomic_symlink",
    "atomic_torch_save",
    "atomic_write_bytes",
    "atomic_write_text",
]

# Temporary names keep at most this much of the final name: the random token already makes them unique, and
# a long final name plus the token must stay under the usual 255-byte file-name limit.
_NAME_PREFIX = 100


def _token() -> str:
    """``<host>-<pid>-<random>``: unique across machines sharing a directory, processes and calls."""
    host = re.sub(r"[^A-Za-z0-9-]", "_", socket.gethostname())[:32]
    return f"{host}-{os.getpid()}-{secrets.token_hex(4)}"


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
    elif path.is_dir():
        shutil.rmtree(path, ignore_errors=True)


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success ``os.replace`` it onto ``path``, on error remove it.

    The body creates whatever it likes at the yielded path (a file, a directory, a symlink); the parent
    directories of ``path`` are created first. The temporary name does not end in the final suffix, so tell
    writers that infer a format from the name which one to use (``fig.savefig(tmp, format="png")``).
    A directory can only replace a missing or empty directory.

    >>> with atomic_path("out/table.csv") as tmp:  # doctest: +SKIP
    ...     frame.to_csv(tmp, index=False)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name[:_NAME_PREFIX]}.{_token()}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        _remove(tmp)
        raise


def atomic_write_text(path: str | os.PathLike[str], text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically; returns ``path``."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding=encoding)
    return Path(path)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns ``path``."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_torch_save(obj: Any, path: str | os.PathLike[str]) -> Path:
    """``torch.save(obj, path)``, atomically (argument order as ``torch.save``); returns ``path``."""
    import torch

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
    return Path(path)


def atomic_np_save(path: str | os.PathLike[str], array: Any) -> Path:
    """``np.save(path, array)``, atomically (argument order as ``np.save``); returns ``path``.

    Written through a file handle, so numpy does not append ``.npy`` to the temporary name: ``path`` is used
    exactly as given (pass a name ending in ``.npy``).
    """
    import numpy as np

    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, np.asarray(array))
    return Path(path)


def atomic_symlink(
    link: str | os.PathLike[str], target: str | os.PathLike[str], *, target_is_directory: bool = False
) -> Path:
    """Point ``link`` at ``target`` (relative targets are kept relative), replacing an existing link at once,
    so a reader following ``link`` never finds it missing (e.g. ``reports/latest -> <run_id>``)."""
    with atomic_path(link) as tmp:
        tmp.symlink_to(target, target_is_directory=target_is_directory)
    return Path(link)

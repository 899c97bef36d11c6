"""Content-addressed artifact store shared by pytest-xdist workers, by runs, and by machines sharing a file system.

An artifact (a trained model, its checkpoints, real-data statistics) is keyed by :func:`artifact_key`: a stable
hash of its ``kind``, the *recipe version* of its builder and its full config (the dataclasses that describe
model, data, training and seed, encoded by ``_canonical``; ``SCHEMA_VERSION`` versions that encoding). The recipe
version lives next to each builder (``get_or_build("runs", spec, build, version=RUN_RECIPE_VERSION)``) and is bumped
when the builder's meaning changes (a new trainer, a changed UNet), so stale artifacts are never reused.

An entry is two files under ``<root>/<kind>/``: ``<key>.pt``, exactly what the builder returned (``torch.save``),
and ``<key>.json``, its record: the builder's provenance (git SHA and dirty flag, diffbench/torch/CUDA versions,
device, threads, host, time; see ``diffbench.provenance``) plus the ``sha256`` and ``size`` of the ``.pt`` bytes. The
record is the commit point; the protocol, safe for several hosts on NFS:

- Publish: the builder writes both files to temporary names unique per host, process and call, then hard-links
  the ``.pt`` and after it the record to their final names (``os.link`` fails if the name exists, atomically, so
  the first complete writer wins and a published entry is never overwritten; a writer that loses discards its
  files and returns the winner's entry).
- Valid: an entry counts only if its record exists, carries a checksum and the ``.pt`` bytes match it. The bytes
  are hashed and then loaded from the same open file with ``torch.load(weights_only=True)``, so tampered,
  truncated or unrecorded bytes are never unpickled. A ``.pt`` without a matching record (an interrupted
  publish, an entry from before checksums) is not an entry: it is rebuilt with a warning naming it.
- Build once: a reader that finds no valid entry takes the key's lock (``<key>.lock``, a
  :class:`diffbench.locking.LinkLock`: hard-link based, heartbeat, stale-lock recovery; flock is unreliable on
  NFS), checks again, and only then removes the invalid entry (record first), builds and publishes.
- Where the file system has no hard links, publishing falls back to ``os.replace`` (still whole files, still
  checksummed, but first-writer-wins then rests on the lock alone).

``build(workdir)`` gets a per-key scratch directory that survives interruptions (a trainer keeps resumable
checkpoints there). A cache directory that cannot be written raises :class:`CacheWriteError` naming it, before
anything is built. ``ArtifactCache.touched`` lists the artifacts returned since the last ``reset_touched()``,
so result rows can say which artifacts (and whose builds) they used.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import os
import re
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

import torch

from diffbench.io import atomic_write_text
from diffbench.locking import (
    DEFAULT_LIFETIME,
    LinkLock,
    LinkUnsupportedError,
    link_exclusive,
    process_token,
    token_is_dead,
)
from diffbench.provenance import provenance as build_provenance

# Bump when the encoding of configs (``_canonical``) changes; a builder's own changes bump its recipe version.
SCHEMA_VERSION = 1
ENV_VAR = "DIFFBENCH_CACHE"


def default_cache_dir() -> Path:
    """``$DIFFBENCH_CACHE``, else ``$XDG_CACHE_HOME/diffbench`` (``~/.cache/diffbench``): outside the repo."""
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")).expanduser() / "diffbench"


# Field metadata ``{"hash": NON_DEFAULT}``: the field enters the key only when it differs from its default. For
# options added to a config later whose default reproduces the old behaviour, so existing artifacts keep their keys.
NON_DEFAULT = "non_default"


def _hashed(obj: Any, f: dataclasses.Field) -> bool:
    rule = f.metadata.get("hash", True)  # False: e.g. a local data path (where data lives is not what it is)
    if rule == NON_DEFAULT:
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        return getattr(obj, f.name) != default
    return bool(rule)


def _canonical(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {
            "__type__": type(obj).__name__,
            **{f.name: _canonical(getattr(obj, f.name)) for f in dataclasses.fields(obj) if _hashed(obj, f)},
        }
    if isinstance(obj, dict):
        return {str(k): _canonical(v) for k, v in sorted(obj.items(), key=lambda kv: str(kv[0]))}
    if isinstance(obj, (list, tuple)):
        return [_canonical(v) for v in obj]
    if isinstance(obj, float):
        return repr(obj)  # repr round-trips exactly; avoids 1e-4 vs 0.0001 ambiguity across encoders
    if obj is None or isinstance(obj, (str, int, bool)):
        return obj
    raise TypeError(f"cannot hash config value of type {type(obj).__name__}: {obj!r}")


def _digest(payload: dict) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def config_hash(config: Any) -> str:
    """Stable 16-hex-digit SHA-256 of the canonical JSON of ``config`` and the schema version."""
    return _digest({"schema": SCHEMA_VERSION, "config": _canonical(config)})


_KIND = re.compile(r"[A-Za-z0-9_-]+")


def artifact_key(kind: str, config: Any, version: int = 1) -> str:
    """Stable 16-hex-digit SHA-256 of ``kind``, the recipe ``version`` (an int >= 1), the config and the schema
    version: the file name of the artifact under ``<root>/<kind>/``."""
    if not isinstance(kind, str) or not _KIND.fullmatch(kind):
        raise ValueError(f"kind must be a non-empty name of letters, digits, '_' and '-', got {kind!r}")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ValueError(f"version must be an int >= 1, got {version!r}")
    return _digest({"schema": SCHEMA_VERSION, "kind": kind, "version": version, "config": _canonical(config)})


class CacheWriteError(OSError):
    """The artifact cache directory cannot be written (permissions, read-only or full file system)."""


class ArtifactMissingError(LookupError):
    """:meth:`ArtifactCache.load` found no valid entry; the message says whether it is absent or invalid."""


# errno values that mean "this directory cannot take our files", as opposed to a bug or a transient failure.
_UNWRITABLE = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.ENOTDIR}
# How long a writer that lost the publish race waits for the winner's record (written right after its .pt).
PUBLISH_WAIT_S = 10.0
# Temporary files of a build older than this are abandoned (their writer links them right after writing).
ABANDONED_TEMP_S = 24 * 3600.0


class _HashingWriter:
    """A write-only file wrapper that hashes and counts the bytes ``torch.save`` writes through it."""

    def __init__(self, f: BinaryIO) -> None:
        self.f, self.hash, self.size = f, hashlib.sha256(), 0

    def write(self, data: bytes) -> int:
        self.hash.update(data)
        self.size += len(data)
        return self.f.write(data)

    def flush(self) -> None:
        self.f.flush()


def _sha256(f: BinaryIO) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    while chunk := f.read(1 << 20):
        digest.update(chunk)
        size += len(chunk)
    return digest.hexdigest(), size


def _publish_file(tmp: Path, final: Path) -> bool:
    """Give ``tmp`` the name ``final`` unless that exists: True if published, False if another writer was first."""
    try:
        return link_exclusive(tmp, final)
    except LinkUnsupportedError:
        # No hard links here (some FUSE/SMB mounts): a rename is still atomic, but last-writer-wins, so
        # first-writer-wins rests on the lock alone; the checksum still guards every load.
        if final.exists():
            return False
        os.replace(tmp, final)
        return True


class ArtifactCache:
    """``get_or_build(kind, config, build, version=...)`` returns the cached object for the key or builds it once.

    ``build(workdir)`` receives a per-key scratch directory that survives interruptions (a trainer keeps its
    resumable checkpoints there) and returns a ``torch.save``-able object of tensors and plain containers.
    ``lock_timeout`` (seconds, None: wait forever) bounds the wait for another process's build of the same
    key; ``lock_lifetime`` is the heartbeat age after which a builder's lock counts as abandoned.
    """

    def __init__(
        self,
        root: str | Path | None = None,
        *,
        lock_timeout: float | None = None,
        lock_lifetime: float = DEFAULT_LIFETIME,
    ) -> None:
        self.root = Path(root).expanduser() if root is not None else default_cache_dir()
        self.lock_timeout = lock_timeout
        self.lock_lifetime = lock_lifetime
        self.touched: list[dict[str, Any]] = []

    def _entry(self, kind: str, key: str, suffix: str) -> Path:
        return self.root / kind / f"{key}{suffix}"

    def path(self, kind: str, config: Any, *, version: int = 1) -> Path:
        """Where the artifact's bytes are stored: ``<root>/<kind>/<key>.pt`` (valid only with its record)."""
        return self._entry(kind, artifact_key(kind, config, version), ".pt")

    def workdir(self, kind: str, config: Any, *, version: int = 1) -> Path:
        """The builder's scratch directory ``<root>/<kind>/<key>.work`` (holds ``config.json``)."""
        return self._entry(kind, artifact_key(kind, config, version), ".work")

    def provenance(self, kind: str, config: Any, *, version: int = 1) -> dict[str, Any] | None:
        """The stored record of the artifact (``kind``, ``key``, ``version``, ``build_seconds``, ``sha256``,
        ``size`` and the fields of ``diffbench.provenance.provenance``), or None if it was never built (or the
        record is lost)."""
        return self._read_record(self._entry(kind, artifact_key(kind, config, version), ".json"))

    def reset_touched(self) -> None:
        """Forget the artifacts returned so far (e.g. at the start of each benchmark cell)."""
        self.touched = []

    def _read_record(self, path: Path) -> dict[str, Any] | None:
        try:
            record = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError, UnicodeDecodeError):  # missing, unreadable or half-written
            return None
        return record if isinstance(record, dict) else None

    @contextmanager
    def _writes(self) -> Iterator[None]:
        """Turn "cannot write here" errors into one :class:`CacheWriteError` that says what to do."""
        try:
            yield
        except CacheWriteError:
            raise
        except OSError as err:
            if err.errno not in _UNWRITABLE:
                raise
            hint = "free space" if err.errno in (errno.ENOSPC, errno.EDQUOT) else "make it writable"
            raise CacheWriteError(
                err.errno,
                f"cannot write to the artifact cache {self.root}: {err.strerror} ({err.filename}); {hint}, or "
                f"use another directory: set ${ENV_VAR} or pass --cache-dir",
            ) from err

    def _check(self, kind: str, key: str) -> tuple[Any, dict[str, Any] | None, str | None]:
        """``(value, record, None)`` for a valid entry, else ``(None, record, problem)``: ``problem`` is ``""``
        when there is no entry at all, else what is wrong with it (for the warning)."""
        pt, record_path = self._entry(kind, key, ".pt"), self._entry(kind, key, ".json")
        record = self._read_record(record_path)
        if record is None:
            if record_path.exists():
                return None, None, "has an unreadable record"
            if pt.exists():
                return None, None, "has no record (no checksum): left by an interrupted or older build"
            return None, None, ""
        sha256, size = record.get("sha256"), record.get("size")
        if not isinstance(sha256, str) or not isinstance(size, int):
            return None, record, "has no checksum in its record (written before checksums)"
        try:
            with open(pt, "rb") as f:
                found = _sha256(f)
                if found != (sha256, size):
                    mismatch = f"sha256 {found[0][:16]}, {found[1]} bytes; its record says {sha256[:16]}, {size}"
                    return None, record, f"fails its checksum ({mismatch})"
                f.seek(0)
                # The bytes just hashed, from the same open file: a file swapped meanwhile is not loaded.
                value = torch.load(f, map_location="cpu", weights_only=True)
        except FileNotFoundError:
            return None, record, "has a record but no data"
        except Exception as err:  # an I/O error, or bytes that are not a weights-only pickle
            return None, record, f"is unreadable ({type(err).__name__}: {err})"
        return value, record, None

    def _discard(self, kind: str, key: str) -> None:
        """Remove an invalid entry (the record first: it is what makes an entry count) and the abandoned
        temporary files of earlier builds of this key."""
        self._entry(kind, key, ".json").unlink(missing_ok=True)
        self._entry(kind, key, ".pt").unlink(missing_ok=True)
        pattern = re.compile(rf"\.{key}\.(?:pt|json)\.(?P<token>.+)\.tmp")
        now = time.time()
        for tmp in (self.root / kind).glob(f".{key}.*.tmp"):
            match = pattern.fullmatch(tmp.name)
            try:
                age = now - tmp.stat().st_mtime
            except FileNotFoundError:
                continue
            if match and (age > ABANDONED_TEMP_S or (age > self.lock_lifetime and token_is_dead(match["token"]))):
                tmp.unlink(missing_ok=True)

    def _publish(self, kind: str, key: str, value: Any, record: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        """Publish ``value`` with ``record`` (plus its checksum) unless another writer was first; returns the
        published entry's value and record (the winner's, loaded, if this writer lost)."""
        pt, record_path = self._entry(kind, key, ".pt"), self._entry(kind, key, ".json")
        token = process_token()
        tmp_pt = pt.with_name(f".{pt.name}.{token}.tmp")
        tmp_record = record_path.with_name(f".{record_path.name}.{token}.tmp")
        try:
            with open(tmp_pt, "wb") as f:
                writer = _HashingWriter(f)
                torch.save(value, writer)
                f.flush()
                os.fsync(f.fileno())
            record = {**record, "sha256": writer.hash.hexdigest(), "size": writer.size}
            with open(tmp_record, "w") as f:
                f.write(json.dumps(record, indent=1, sort_keys=True))
                f.flush()
                os.fsync(f.fileno())
            # Both files are complete before either is linked, so a winner's record follows its .pt at once.
            if _publish_file(tmp_pt, pt) and _publish_file(tmp_record, record_path):
                return value, record
        finally:
            tmp_pt.unlink(missing_ok=True)
            tmp_record.unlink(missing_ok=True)
        deadline = time.monotonic() + PUBLISH_WAIT_S
        while True:
            won_value, won_record, problem = self._check(kind, key)
            if problem is None:
                return won_value, won_record
            if time.monotonic() > deadline:
                warnings.warn(
                    f"cache entry {pt} was published by another writer but {problem or 'is gone'}; "
                    "using this process's build without caching it",
                    RuntimeWarning,
                    stacklevel=4,
                )
                return value, record
            time.sleep(0.05)

    def _build(
        self, kind: str, key: str, version: int, config: Any, build: Callable[[Path], Any], device: object | None
    ) -> tuple[Any, dict[str, Any]]:
        workdir = self._entry(kind, key, ".work")
        with self._writes():
            workdir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(workdir / "config.json", json.dumps(_canonical(config), indent=1, sort_keys=True))
        started = time.perf_counter()
        value = build(workdir)
        record = {
            "kind": kind,
            "key": key,
            "version": version,
            "build_seconds": round(time.perf_counter() - started, 3),
            **build_provenance(device),
        }
        with self._writes():
            return self._publish(kind, key, value, record)

    def _lock(self, kind: str, key: str) -> LinkLock:
        """The lock that makes one process at a time build ``key``: ``<root>/<kind>/<key>.lock``."""
        return LinkLock(self._entry(kind, key, ".lock"), lifetime=self.lock_lifetime, timeout=self.lock_timeout)

    def _touch(self, kind: str, key: str, version: int, record: dict[str, Any] | None) -> None:
        if all(entry["key"] != key for entry in self.touched):
            self.touched.append({**(record or {}), "kind": kind, "key": key, "version": version})

    def load(self, kind: str, config: Any, *, version: int = 1) -> Any:
        """The cached artifact, checked as :meth:`get_or_build` checks it, without building, locking or writing
        anything (for commands that only read a cache). Raises :class:`ArtifactMissingError` when there is no
        valid entry. The artifact is appended to ``touched``."""
        key = artifact_key(kind, config, version)
        value, record, problem = self._check(kind, key)
        if problem is not None:
            path = self._entry(kind, key, ".pt")
            raise ArtifactMissingError(
                f"cache entry {path} {problem}" if problem else f"not in the cache {self.root} (no {kind}/{path.name})"
            )
        self._touch(kind, key, version, record)
        return value

    def get_or_build(
        self,
        kind: str,
        config: Any,
        build: Callable[[Path], Any],
        *,
        version: int = 1,
        device: object | None = None,
    ) -> Any:
        """The artifact for (``kind``, ``config``, ``version``), loaded, or built by ``build(workdir)`` if absent.

        ``version`` is the recipe version the caller keeps next to ``build`` and bumps when the builder's
        meaning changes; ``device`` (where the build runs) is recorded in the artifact's provenance. The
        returned artifact is appended to ``touched`` (once per key). An invalid entry (checksum mismatch, no
        record, unreadable) is rebuilt with a ``RuntimeWarning`` naming it; an unwritable cache directory raises
        :class:`CacheWriteError`.
        """
        key = artifact_key(kind, config, version)
        value, record, problem = self._check(kind, key)
        if problem is not None:
            with self._writes():
                (self.root / kind).mkdir(parents=True, exist_ok=True)
                lock = self._lock(kind, key).acquire()
            try:
                # Another process may have published while we waited; only what is invalid under the lock is
                # reported (a reader racing a rebuild saw a half-replaced entry, not a damaged one).
                value, record, problem = self._check(kind, key)
                if problem is not None:
                    if problem:
                        warnings.warn(
                            f"cache entry {self._entry(kind, key, '.pt')} {problem}; rebuilding it",
                            RuntimeWarning,
                            stacklevel=2,
                        )
                    with self._writes():
                        self._discard(kind, key)
                    value, record = self._build(kind, key, version, config, build, device)
            finally:
                lock.release()
        self._touch(kind, key, version, record)
        return value

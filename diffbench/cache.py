"""Content-addressed artifact store shared by pytest-xdist workers and by runs.

An artifact (a trained model, its checkpoints, real-data statistics) is keyed by :func:`artifact_key`: a stable
hash of its ``kind``, the *recipe version* of its builder and its full config (the dataclasses that describe
model, data, training and seed, encoded by ``_canonical``; ``SCHEMA_VERSION`` versions that encoding). The recipe
version lives next to each builder (``get_or_build("runs", spec, build, version=RUN_RECIPE_VERSION)``) and is bumped
when the builder's meaning changes (a new trainer, a changed UNet), so stale artifacts are never reused.

Workers that need the same artifact build it once: the builder holds a file lock and publishes atomically
(``diffbench.io``), so readers never see half-written files. Beside each ``<key>.pt`` the builder's
provenance (git SHA and dirty flag, torch/CUDA versions, device, host, time; see ``diffbench.provenance``) is
stored as ``<key>.json``, written before the ``.pt`` is published, so every published entry has it; the
``.pt`` holds exactly what the builder returned. Entries are loaded with ``torch.load(weights_only=True)``;
an unreadable entry is rebuilt with a warning, never trusted. ``ArtifactCache.touched`` lists the artifacts
returned since the last ``reset_touched()``, so result rows can say which artifacts (and whose builds) they used.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock

from diffbench.io import atomic_torch_save, atomic_write_text
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


class ArtifactCache:
    """``get_or_build(kind, config, build, version=...)`` returns the cached object for the key or builds it once.

    ``build(workdir)`` receives a per-key scratch directory that survives interruptions (a trainer keeps its
    resumable checkpoints there) and returns a ``torch.save``-able object of tensors and plain containers.
    """

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root).expanduser() if root is not None else default_cache_dir()
        self.touched: list[dict[str, Any]] = []

    def _entry(self, kind: str, key: str, suffix: str) -> Path:
        return self.root / kind / f"{key}{suffix}"

    def path(self, kind: str, config: Any, *, version: int = 1) -> Path:
        """Where the artifact is stored: ``<root>/<kind>/<key>.pt``."""
        return self._entry(kind, artifact_key(kind, config, version), ".pt")

    def workdir(self, kind: str, config: Any, *, version: int = 1) -> Path:
        """The builder's scratch directory ``<root>/<kind>/<key>.work`` (holds ``config.json``)."""
        return self._entry(kind, artifact_key(kind, config, version), ".work")

    def provenance(self, kind: str, config: Any, *, version: int = 1) -> dict[str, Any] | None:
        """The stored provenance of the artifact (``kind``, ``key``, ``version``, ``build_seconds`` and the
        fields of ``diffbench.provenance.provenance``), or None if it was never built (or the record is lost)."""
        return self._read_record(self._entry(kind, artifact_key(kind, config, version), ".json"))

    def reset_touched(self) -> None:
        """Forget the artifacts returned so far (e.g. at the start of each benchmark cell)."""
        self.touched = []

    def _read_record(self, path: Path) -> dict[str, Any] | None:
        try:
            record = json.loads(path.read_text())
        except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
            return None
        return record if isinstance(record, dict) else None

    def _load(self, path: Path) -> Any | None:
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except FileNotFoundError:
            return None
        except Exception as err:  # truncated, corrupt, or not a weights-only pickle
            warnings.warn(
                f"cache entry {path} is unreadable ({type(err).__name__}: {err}); rebuilding it",
                RuntimeWarning,
                stacklevel=3,
            )
            return None

    def _build(
        self, kind: str, key: str, version: int, config: Any, build: Callable[[Path], Any], device: object | None
    ) -> tuple[Any, dict[str, Any]]:
        workdir = self._entry(kind, key, ".work")
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
        # The record first: a published .pt always has its provenance beside it.
        atomic_write_text(self._entry(kind, key, ".json"), json.dumps(record, indent=1, sort_keys=True))
        atomic_torch_save(value, self._entry(kind, key, ".pt"))
        return value, record

    def _touch(self, kind: str, key: str, version: int, record: dict[str, Any] | None) -> None:
        if all(entry["key"] != key for entry in self.touched):
            self.touched.append({**(record or {}), "kind": kind, "key": key, "version": version})

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
        returned artifact is appended to ``touched`` (once per key).
        """
        key = artifact_key(kind, config, version)
        path = self._entry(kind, key, ".pt")
        value = self._load(path) if path.exists() else None
        record = None
        if value is None:
            path.parent.mkdir(parents=True, exist_ok=True)
            with FileLock(str(path) + ".lock"):
                # Another worker may have finished the build while we waited for the lock.
                value = self._load(path) if path.exists() else None
                if value is None:
                    value, record = self._build(kind, key, version, config, build, device)
        if record is None:
            record = self._read_record(self._entry(kind, key, ".json"))
        self._touch(kind, key, version, record)
        return value

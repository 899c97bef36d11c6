"""Content-addressed artifact store shared by pytest-xdist workers and by runs.

An artifact (a trained model, its checkpoints, real-data statistics) is keyed by a stable hash of its full
config: the dataclasses that describe model, data, training and seed, plus ``SCHEMA_VERSION`` of these configs.
Workers that need the same artifact build it once: the builder holds a file lock, writes to a temporary file
and ``os.replace``s it into place, so readers never see half-written files. Entries are loaded with
``torch.load(weights_only=True)``; an unreadable entry is rebuilt with a warning, never trusted.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock

# Bump when the meaning of a config field changes, so stale artifacts are not reused.
SCHEMA_VERSION = 1
ENV_VAR = "DIFFBENCH_CACHE"


def default_cache_dir() -> Path:
    """``$DIFFBENCH_CACHE``, else ``$XDG_CACHE_HOME/diffbench`` (``~/.cache/diffbench``): outside the repo."""
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")).expanduser() / "diffbench"


def _canonical(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {
            "__type__": type(obj).__name__,
            **{
                f.name: _canonical(getattr(obj, f.name))
                for f in dataclasses.fields(obj)
                if f.metadata.get("hash", True)  # e.g. a local data path: where data lives is not what it is
            },
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


def config_hash(config: Any) -> str:
    """Stable 16-hex-digit SHA-256 of the canonical JSON of ``config`` and the schema version."""
    payload = json.dumps({"schema": SCHEMA_VERSION, "config": _canonical(config)}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


class ArtifactCache:
    """``get_or_build(kind, config, build)`` returns the cached object for ``config`` or builds it once.

    ``build(workdir)`` receives a per-key scratch directory that survives interruptions (a trainer keeps its
    resumable checkpoints there) and returns a ``torch.save``-able object of tensors and plain containers.
    """

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root).expanduser() if root is not None else default_cache_dir()

    def path(self, kind: str, config: Any) -> Path:
        return self.root / kind / f"{config_hash(config)}.pt"

    def workdir(self, kind: str, config: Any) -> Path:
        return self.root / kind / f"{config_hash(config)}.work"

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

    def get_or_build(self, kind: str, config: Any, build: Callable[[Path], Any]) -> Any:
        path = self.path(kind, config)
        if path.exists():
            value = self._load(path)
            if value is not None:
                return value
        path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(path) + ".lock"):
            # Another worker may have finished the build while we waited for the lock.
            if path.exists():
                value = self._load(path)
                if value is not None:
                    return value
            workdir = self.workdir(kind, config)
            workdir.mkdir(parents=True, exist_ok=True)
            (workdir / "config.json").write_text(json.dumps(_canonical(config), indent=1, sort_keys=True))
            value = build(workdir)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            torch.save(value, tmp)
            os.replace(tmp, path)
            return value

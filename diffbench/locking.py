"""A lock file that works on network file systems, with stale-lock recovery.

``flock``/``fcntl`` locks (what ``filelock.FileLock`` uses) are not reliable on NFS: depending on the client,
server and mount options they are local to one machine, emulated, or refused. Creating a hard link is atomic on
every POSIX file system NFS included, so :class:`LinkLock` claims ``<name>`` the classic NFS-safe way (as in
``lockfile(1)``, Mailman's ``flufl.lock`` or ``open(2)``'s note on ``O_EXCL``):

1. write a claim file with a name unique to this host, process and call (``.<name>.<host>-<pid>-<random>``)
   holding ``{"host", "pid", "pidns", "time", "lifetime", "token"}``;
2. ``os.link(claim, name)``; the lock is ours iff the link succeeded or, when NFS reports an error for a link
   whose reply was lost, the claim file now has two links;
3. while held, a daemon thread refreshes the lock's mtime every ``lifetime / 4`` seconds (the heartbeat);
4. a waiter polls; it breaks the lock when the holder is gone: the holder ran on this host (same host name and
   pid namespace) and its pid no longer exists, or the lock's mtime is older than the lifetime (the larger of
   the waiter's and the one the holder declared). Breaking renames the lock away to a unique name (atomic, so
   two waiters cannot both remove it) and checks that the renamed file is the one judged stale; otherwise it
   puts it back;
5. after ``timeout`` seconds a waiter raises :class:`LockTimeout` naming the lock and its holder.

Ages are measured on the file system's clock (the mtime of the waiter's freshly touched claim file), not the
waiter's, so clock skew between the machines sharing the directory does not break live locks. A holder that
stops heartbeating for longer than the lifetime (suspended, or a hung NFS mount) can lose its lock; callers that
publish under it must publish atomically and let the first complete writer win (as ``diffbench.cache`` does).

Where the file system has no hard links (some FUSE/SMB mounts refuse ``link(2)`` with EPERM or ENOTSUP), the
claim falls back to ``open(O_CREAT | O_EXCL)`` of the lock file, atomic on local file systems and NFSv3+.

Why not ``flufl.lock``: it implements the same recipe, but its stale-lock rule is the lifetime alone (a killed
holder blocks every waiter for the whole lifetime), and this module is small enough to test here directly.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import socket
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from diffbench.io import _token as _io_token

__all__ = [
    "DEFAULT_LIFETIME",
    "LinkLock",
    "LinkUnsupportedError",
    "LockTimeout",
    "holder_is_gone",
    "link_exclusive",
    "process_token",
    "token_is_dead",
]

# Seconds without a heartbeat after which a lock counts as stale. Heartbeats come every lifetime / 4, so this
# tolerates long pauses (GC, a loaded NFS server) and clock skew between hosts up to about a minute.
DEFAULT_LIFETIME = 120.0
# errno values with which link(2) says "this file system has no hard links" rather than "no permission here".
_NO_LINKS = {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS}
_TOKEN = re.compile(r"(?P<host>[A-Za-z0-9_-]+)-(?P<pid>\d+)-[0-9a-f]+")


class LockTimeout(TimeoutError):
    """A :class:`LinkLock` was not acquired within its timeout; the message names the lock and its holder."""


class LinkUnsupportedError(OSError):
    """The file system refuses hard links (``link(2)`` fails with EPERM/ENOTSUP)."""


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9-]", "_", socket.gethostname())[:32]


def process_token() -> str:
    """``<host>-<pid>-<random>``: a name part unique across machines, processes and calls (as the temporary
    names of ``diffbench.io``)."""
    return _io_token()


def _pid_namespace() -> str | None:
    """This process's pid namespace (containers on one host share its host name but not its pids)."""
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return None


def holder_is_gone(host: str | None, pid: int | None, pidns: str | None = None) -> bool:
    """Whether the process ``pid`` on ``host`` is known to be dead: only decidable on this host (and pid
    namespace); a process on another machine is never judged here (the lifetime rule covers it)."""
    if host != _host() or not isinstance(pid, int) or pid <= 0 or pidns != _pid_namespace():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # exists, owned by another user
        return False
    return False


def token_is_dead(token: str) -> bool:
    """Whether the process that made the :func:`process_token` ``token`` ran on this host and is dead (for
    cleaning up its temporary files). Assumes the caller's pid namespace."""
    match = _TOKEN.fullmatch(token)
    return bool(match) and holder_is_gone(match["host"], int(match["pid"]), _pid_namespace())


def link_exclusive(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> bool:
    """Hard-link ``src`` to ``dst`` unless ``dst`` exists: True if ``dst`` is now ``src``, False if it existed.

    ``src`` must have a single link (a fresh temporary file): on NFS a link whose reply was lost is retried and
    answered EEXIST, so success is also read from ``src``'s link count. Raises :class:`LinkUnsupportedError`
    where the file system has no hard links.
    """
    try:
        os.link(src, dst)
        return True
    except FileExistsError:
        return os.stat(src).st_nlink == 2
    except OSError as err:
        if err.errno in _NO_LINKS:
            raise LinkUnsupportedError(err.errno, f"hard links are not supported here ({err.strerror})", dst) from err
        raise


class LinkLock:
    """An inter-process, inter-host lock on the file ``path`` (see the module docstring for the protocol).

    ``lifetime``: seconds without heartbeat after which the lock counts as stale; ``timeout``: seconds to wait
    (None: forever) before :class:`LockTimeout`; ``poll``: the first wait between attempts (doubling up to 1 s).
    Not reentrant: a second acquire of the same path in one process waits for the first.

    >>> with LinkLock("cache/runs/abc.lock", timeout=600):  # doctest: +SKIP
    ...     build_and_publish()
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        lifetime: float = DEFAULT_LIFETIME,
        timeout: float | None = None,
        poll: float = 0.05,
    ) -> None:
        if not lifetime > 0:
            raise ValueError(f"lifetime must be > 0 seconds, got {lifetime}")
        if timeout is not None and timeout < 0:
            raise ValueError(f"timeout must be >= 0 seconds or None, got {timeout}")
        self.path = Path(path)
        self.lifetime = float(lifetime)
        self.timeout = timeout
        self.poll = poll
        self._token: str | None = None
        self._claim: Path | None = None
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None

    # ------------------------------------------------------------------------------------------ state

    @property
    def is_held(self) -> bool:
        """Whether this object holds the lock and the lock file is still its claim."""
        holder = self.holder()
        return self._token is not None and holder is not None and holder.get("token") == self._token

    def holder(self) -> dict[str, Any] | None:
        """The lock file's content (``host``, ``pid``, ``time``, ...), ``{}`` if unreadable, None if unlocked."""
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError):
            return {}
        try:
            content = json.loads(text)
        except json.JSONDecodeError:
            return {}
        return content if isinstance(content, dict) else {}

    def _describe(self, holder: dict[str, Any] | None, age: float | None) -> str:
        if holder is None:
            return "no holder"
        who = f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')} since {holder.get('time', '?')}"
        return who if age is None else f"{who}, last heartbeat {age:.1f}s ago"

    # --------------------------------------------------------------------------------------- acquiring

    def acquire(self) -> LinkLock:
        """Wait until the lock is ours (breaking it if its holder is gone); raise :class:`LockTimeout` after
        ``timeout`` seconds."""
        if self._token is not None:
            raise RuntimeError(f"lock {self.path} is already held by this object")
        token = process_token()
        claim = self.path.with_name(f".{self.path.name}.{token}")
        content = {
            "host": _host(),
            "pid": os.getpid(),
            "pidns": _pid_namespace(),
            "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "lifetime": self.lifetime,
            "token": token,
        }
        claim.write_text(json.dumps(content))
        started, wait = time.monotonic(), self.poll
        try:
            while not self._claim_once(claim, content):
                holder, age = self._inspect(claim)
                if holder is not None and self._is_stale(holder, age):
                    self._break(holder)
                    continue
                if self.timeout is not None and time.monotonic() - started >= self.timeout:
                    raise LockTimeout(
                        f"could not acquire lock {self.path} within {self.timeout:g}s: held by "
                        f"{self._describe(holder, age)}; it is broken when that process is gone or after "
                        f"{self._stale_after(holder):g}s without a heartbeat (or remove the file)"
                    )
                time.sleep(wait)
                wait = min(2 * wait, 1.0)
        except BaseException:
            claim.unlink(missing_ok=True)
            raise
        self._token, self._claim = token, claim
        self._stop.clear()
        self._heartbeat = threading.Thread(target=self._beat, name=f"heartbeat {self.path.name}", daemon=True)
        self._heartbeat.start()
        return self

    def _claim_once(self, claim: Path, content: dict[str, Any]) -> bool:
        try:
            return link_exclusive(claim, self.path)
        except LinkUnsupportedError:
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(fd, "w") as f:
                f.write(json.dumps(content))
            return True

    def _inspect(self, claim: Path) -> tuple[dict[str, Any] | None, float | None]:
        """The holder and the lock's age in seconds on the file system's clock (None if unlocked)."""
        holder = self.holder()
        try:
            mtime = self.path.stat().st_mtime
        except FileNotFoundError:
            return None, None
        os.utime(claim)  # "now" as the file server sees it
        return holder, max(0.0, claim.stat().st_mtime - mtime)

    def _stale_after(self, holder: dict[str, Any] | None) -> float:
        declared = (holder or {}).get("lifetime")
        return max(self.lifetime, float(declared)) if isinstance(declared, (int, float)) else self.lifetime

    def _is_stale(self, holder: dict[str, Any], age: float | None) -> bool:
        if holder_is_gone(holder.get("host"), holder.get("pid"), holder.get("pidns")):
            return True
        return age is not None and age > self._stale_after(holder)

    def _break(self, holder: dict[str, Any]) -> None:
        """Remove the stale lock judged from ``holder``: rename it away (only one waiter can), then make sure
        the renamed file is that holder's claim, not a fresh lock taken meanwhile (else put it back)."""
        trash = self.path.with_name(f".{self.path.name}.broken.{process_token()}")
        try:
            os.rename(self.path, trash)
        except FileNotFoundError:
            return  # another waiter broke it first
        try:
            taken = json.loads(trash.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            taken = {}
        if (taken if isinstance(taken, dict) else {}).get("token") != holder.get("token"):
            with contextlib.suppress(OSError):
                link_exclusive(trash, self.path)
        elif holder.get("token"):
            # the dead holder's own claim file (another link to the same lock file)
            self.path.with_name(f".{self.path.name}.{holder['token']}").unlink(missing_ok=True)
        trash.unlink(missing_ok=True)

    # ---------------------------------------------------------------------------------------- holding

    def _beat(self) -> None:
        while not self._stop.wait(self.lifetime / 4):
            if not self.is_held:
                return  # broken by a waiter: touching would refresh someone else's lock
            try:
                os.utime(self.path)
            except OSError:
                return

    def release(self) -> None:
        """Stop the heartbeat and remove the lock if it is still ours."""
        if self._token is None:
            return
        self._stop.set()
        if self._heartbeat is not None:
            self._heartbeat.join()
        try:
            if self.is_held:
                self.path.unlink(missing_ok=True)
        finally:
            if self._claim is not None:
                self._claim.unlink(missing_ok=True)
            self._token = self._claim = self._heartbeat = None

    def __enter__(self) -> LinkLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

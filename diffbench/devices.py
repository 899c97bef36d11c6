"""Which device each pytest-xdist worker uses, and how many CPU threads it may take.

Thread policy. A CPU float reduction split over another number of threads adds in another order, so a conv
layer's output, and from there a whole training run, differs in the last bits, and a few metrics move beyond
their tolerance (measured on the smoke matrix: 2,086 of 12,069 value keys differed by more than 1e-3 relative
between one 2-thread process and two 1-thread workers). The threads that compute a cell's values are therefore
a setting of their own (``--threads``, default :data:`DEFAULT_THREADS`), not a consequence of ``-n`` or of the
machine's core count: the same selection gives the same values serially, under xdist, on a cluster shard and on
a bigger machine. ``auto`` opts out (``cores // workers``: fastest, values then depend on the split). Timing
cells always take ``cores // workers``: they run alone in the serial pass and measure the machine.
"""

from __future__ import annotations

import os

import torch

DEVICE_KINDS = ("auto", "cpu", "cuda", "mps")
# The cores this process may use, when it shares a machine with others it cannot see (a cluster shard: see
# diffbench/cluster.py). xdist workers of that process split these, not the whole machine.
THREADS_ENV = "DIFFBENCH_THREADS"
DEFAULT_THREADS = "1"  # ``--threads``: the value cells' torch threads per process (see the module docstring)


def worker_index(worker_id: str | None) -> int:
    """``gw3`` -> 3; the controller / a run without xdist (``None`` or ``master``) -> 0."""
    if not worker_id or worker_id == "master":
        return 0
    if not worker_id.startswith("gw") or not worker_id[2:].isdigit():
        raise ValueError(f"unexpected xdist worker id {worker_id!r}")
    return int(worker_id[2:])


def resolve_device(
    spec: str | None = "auto",
    worker_id: str | None = None,
    *,
    cuda_count: int | None = None,
    mps_available: bool | None = None,
) -> torch.device:
    """Device for a worker. ``auto``: ``gwN`` -> ``cuda:(N mod count)`` when CUDA is present, else ``mps``,
    else ``cpu``. ``cuda`` round-robins the same way; ``cuda:K``, ``cpu`` and ``mps`` are taken literally."""
    spec = (spec or "auto").strip()
    cuda_count = torch.cuda.device_count() if cuda_count is None else cuda_count
    if mps_available is None:
        mps_available = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
    kind, _, index = spec.partition(":")
    if kind not in DEVICE_KINDS or (index and (kind != "cuda" or not index.isdigit())):
        raise ValueError(f"unknown device {spec!r}; use one of auto, cpu, cuda, cuda:N, mps")
    if kind == "auto":
        kind = "cuda" if cuda_count else "mps" if mps_available else "cpu"
    if kind == "cuda":
        if not cuda_count:
            raise ValueError(f"device {spec!r} requested but no CUDA device is available")
        i = int(index) if index else worker_index(worker_id) % cuda_count
        if i >= cuda_count:
            raise ValueError(f"device {spec!r} requested but only {cuda_count} CUDA device(s) exist")
        return torch.device("cuda", i)
    if kind == "mps" and not mps_available:
        raise ValueError("device 'mps' requested but MPS is not available")
    return torch.device(kind)


def available_cores() -> int:
    """``$DIFFBENCH_THREADS`` when set (a positive integer), else every core of the machine."""
    text = os.environ.get(THREADS_ENV, "").strip()
    if not text:
        return os.cpu_count() or 1
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"{THREADS_ENV} must be a positive integer, got {text!r}")
    return int(text)


def threads_per_worker(num_workers: int, cores: int | None = None) -> int:
    """CPU workers split the cores (default :func:`available_cores`) instead of oversubscribing them:
    ``max(1, cores // workers)``."""
    cores = cores or available_cores()
    return max(1, cores // max(1, num_workers))


def parse_threads(text: str | None) -> int | None:
    """``--threads``: a positive integer, or ``auto`` (None: split the cores, :func:`threads_per_worker`)."""
    text = (DEFAULT_THREADS if text is None else text).strip().lower()
    if text == "auto":
        return None
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"--threads must be a positive integer or 'auto', got {text!r}")
    return int(text)


def value_threads(spec: str | None, num_workers: int) -> int:
    """Torch threads for the cells that compute values: ``--threads`` (``spec``), or the cores split between
    the workers when it is ``auto``."""
    fixed = parse_threads(spec)
    return threads_per_worker(num_workers) if fixed is None else fixed

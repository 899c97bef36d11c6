"""CUDA-graph capture of a function of tensors: the GPU fast path of the samplers.

The matrix's models are small, and on a GPU a small model spends its time launching kernels: a 50-step DDIM
loop of the 0.4M-parameter smoke teacher is thousands of launches of microseconds of work each. A CUDA graph
records those launches once and replays them with one call (``torch.cuda.CUDAGraph``; "CUDA Graphs" in the
PyTorch CUDA semantics notes). :class:`CapturedCall` captures ``fn(inputs)`` over static input buffers:

- ``fn`` must do no host work (no ``.item()``, no host-to-device copies, no data-dependent Python branches):
  the samplers' loops read precomputed per-step coefficients from device tensors
  (:class:`diffbench.sampling.DDIMPlan`);
- each call copies its inputs into the buffers, replays, and hands back the output the capture produced (the
  graph's memory: the next replay overwrites it, so callers copy what they keep);
- warm-up runs on a side stream come first, so cuBLAS/cuDNN choose kernels and allocate workspaces outside the
  graph (the capture recipe of the PyTorch notes).

:func:`cached` keeps one capture per (owner, key), the owner held weakly (a model): its graphs and their memory
pools go when it does. Only CUDA tensors can be captured; ``use_graph=False`` runs the same buffer logic eagerly,
which is how the logic is tested on a CPU. This module imports nothing of diffbench.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Hashable
from typing import Any

import torch
from torch import Tensor

WARMUP_RUNS = 2


class CapturedCall:
    """``fn(inputs)`` captured as one CUDA graph over copies of ``example`` (name -> tensor) as static buffers.
    ``runner(inputs)`` copies ``inputs`` (the same names, shapes and dtypes) into them, replays and returns the
    output structure the capture produced. With ``use_graph=False``, ``fn`` runs eagerly on the buffers instead
    (same copies, same output contract)."""

    def __init__(self, fn: Callable[[dict[str, Tensor]], Any], example: dict[str, Tensor], *, use_graph: bool = True):
        self._buffers = {name: value.detach().clone() for name, value in example.items()}
        self.graph: torch.cuda.CUDAGraph | None = None
        if not use_graph:
            self._fn = fn
            return
        devices = {value.device for value in self._buffers.values()}
        if len(devices) != 1 or next(iter(devices)).type != "cuda":
            raise ValueError(f"a CUDA graph needs every input on one CUDA device, got {sorted(map(str, devices))}")
        device = next(iter(devices))
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            for _ in range(WARMUP_RUNS):
                fn(self._buffers)
        torch.cuda.current_stream(device).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self._output = fn(self._buffers)
        self._fn = None  # the graph replays without it; holding it would keep what it closes over alive

    def __call__(self, inputs: dict[str, Tensor]) -> Any:
        if inputs.keys() != self._buffers.keys():
            raise ValueError(f"this graph was captured with inputs {sorted(self._buffers)}, got {sorted(inputs)}")
        for name, value in inputs.items():
            buffer = self._buffers[name]
            if value.shape != buffer.shape or value.dtype != buffer.dtype:
                raise ValueError(
                    f"input {name!r}: captured as {tuple(buffer.shape)} {buffer.dtype}, "
                    f"got {tuple(value.shape)} {value.dtype}"
                )
            buffer.copy_(value)
        if self.graph is None:
            return self._fn(self._buffers)
        self.graph.replay()
        return self._output


def capture_blocker(fn: object, device: torch.device) -> str | None:
    """Why ``fn`` (a model) cannot be captured on ``device``, or ``None``: not a CUDA device; ``capturable =
    False`` on it (a forward that needs autograd or host values, e.g. classifier guidance); or it cannot be
    referenced weakly (its graphs could not be freed with it)."""
    if device.type != "cuda":
        return f"CUDA graphs need a CUDA device, the model is on {device}"
    if not getattr(fn, "capturable", True):
        return f"{type(fn).__name__} cannot be captured (it needs autograd or host values in its forward)"
    try:
        weakref.ref(fn)
    except TypeError:
        return f"{type(fn).__name__} cannot be weakly referenced, so its graphs could not be freed with it"
    return None


# owner -> {key: CapturedCall}; an owner that is garbage-collected takes its graphs (and their memory) with it.
_GRAPHS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
# owner -> keys asked for once: ``cached(..., first_time_eager=True)`` captures a key the second time it is asked.
_SEEN: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def cached(
    owner: object, key: Hashable, build: Callable[[], CapturedCall], *, first_time_eager: bool = False
) -> CapturedCall | None:
    """The capture of ``owner`` under ``key``, built by ``build()`` on first use. With ``first_time_eager``, the
    first request of a key returns ``None`` (run eagerly: a call made once would pay the capture for nothing) and
    the second captures."""
    graphs = _GRAPHS.setdefault(owner, {})
    if key in graphs:
        return graphs[key]
    seen = _SEEN.setdefault(owner, set())
    if first_time_eager and key not in seen:
        seen.add(key)
        return None
    graphs[key] = build()
    return graphs[key]


def storage_key(module: object) -> tuple[int, ...]:
    """Where ``module``'s parameters and buffers live: weights loaded in place keep it (a graph reads them),
    weights replaced by new tensors change it (a graph would read freed memory)."""
    if not isinstance(module, torch.nn.Module):
        return ()
    return tuple(t.data_ptr() for t in (*module.parameters(), *module.buffers()))


def clear() -> None:
    """Drop every captured graph (and the memory pools they hold)."""
    _GRAPHS.clear()
    _SEEN.clear()

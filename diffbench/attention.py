"""Attention maps of a model's ``SelfAttention`` layers, read without copying or changing the model, and two
pure functions of them.

:func:`capture_attention` hooks every :class:`~diffbench.models.unet.SelfAttention` submodule for the duration of a
``with`` block. After a layer's forward pass its hook recomputes, from the layer's own ``norm`` and ``qkv`` applied
to the layer's input (the very ``q``, ``k`` it just used), the softmax weights

    ``A = softmax(q k^T / sqrt(d_head))``, ``[B, heads, HW, HW]``, row ``i`` the weights query ``i`` puts on the
    ``HW`` keys (positions flattened row-major, ``i = y W + x``),

which ``F.scaled_dot_product_attention`` (default scale ``1 / sqrt(d_head)``, no mask, no dropout) applies to ``v``
without returning them. The hook returns nothing, so the layer's output and everything downstream are untouched;
the recomputation reads no RNG. The hooks are removed when the block exits, also on an exception.

:func:`attention_entropy` and :func:`attention_divergence` take maps of any shape ``[..., Q, K]`` whose rows (the
last axis) are distributions over keys.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from diffbench.metrics.registry import LOWER, NEITHER, QUALITY, Metric, declare
from diffbench.models.unet import SelfAttention

ROW_SUM_ATOL = 1e-4  # how far from 1 a row of a float32 softmax may sum before it is refused as not a distribution
DIVERGENCES = ("js", "kl")

declare(
    Metric(
        "attention_entropy",
        NEITHER,
        QUALITY,
        "mean row entropy -sum_j A_ij log A_ij of a self-attention layer's maps, nats (uniform over HW keys: log HW)",
    ),
    Metric(
        "attention_js_to_teacher",
        LOWER,
        QUALITY,
        "mean row-wise Jensen-Shannon divergence of a layer's attention maps from the teacher's, nats (<= log 2)",
    ),
)


# ---------------------------------------------------------------------------------------------- capture


@dataclass
class AttentionCapture:
    """What :func:`capture_attention` records, by layer name (the module path in ``model.named_modules()``, e.g.
    ``"mid_attn"``, ``"down.1.attn"``; ``""`` when the model itself is a ``SelfAttention``).

    ``maps[name]``: the weights ``[B, heads, Q, HW]`` of the layer's latest forward pass (``Q = HW``, or the number
    of selected ``queries``), float32 (float64 for a float64 model), detached. ``calls[name]``: how many forward
    passes the layer made inside the block. With ``history=True``, ``history[name]`` holds every pass's maps in
    order (a sampler calls each layer once per step: ``torch.stack(capture.history[name])`` is
    ``[steps, B, heads, Q, HW]``).
    """

    layers: tuple[str, ...]
    queries: Tensor | None = None
    to_cpu: bool = False
    keep_history: bool = False
    maps: dict[str, Tensor] = field(default_factory=dict)
    calls: dict[str, int] = field(default_factory=dict)
    history: dict[str, list[Tensor]] = field(default_factory=dict)

    def record(self, name: str, weights: Tensor) -> None:
        weights = weights.cpu() if self.to_cpu else weights
        self.maps[name] = weights
        self.calls[name] = self.calls.get(name, 0) + 1
        if self.keep_history:
            self.history.setdefault(name, []).append(weights)


def attention_weights(module: SelfAttention, x: Tensor, queries: Tensor | None = None) -> Tensor:
    """The softmax weights ``A = softmax(q k^T / sqrt(d_head))`` ``[B, heads, Q, HW]`` that ``module`` applies to
    ``v`` for its input ``x`` ``[B, C, H, W]``: ``q, k`` are split from ``module.qkv(module.norm(x))`` exactly as
    ``SelfAttention.forward`` splits them (``[B, 3, heads, d_head, HW]``, ``d_head = C / heads``). ``queries``
    (indices into the ``HW`` positions, row-major) keeps only those rows. The logits and softmax are computed in
    float32 at least (float64 for a float64 model), under ``no_grad``."""
    if x.ndim != 4:
        raise ValueError(f"SelfAttention input must be [B, C, H, W], got shape {tuple(x.shape)}")
    b, c, h, w = x.shape
    with torch.no_grad():
        qkv = module.qkv(module.norm(x)).reshape(b, 3, module.num_heads, c // module.num_heads, h * w)
        q, k = qkv[:, 0].transpose(-1, -2), qkv[:, 1].transpose(-1, -2)  # [B, heads, HW, d_head]
        if queries is not None:
            if not 0 <= int(queries.min()) <= int(queries.max()) < h * w:
                raise ValueError(
                    f"queries must index the {h * w} positions of a {h}x{w} layer, got indices in "
                    f"[{int(queries.min())}, {int(queries.max())}]"
                )
            q = q[:, :, queries.to(q.device)]
        dtype = torch.promote_types(q.dtype, torch.float32)
        logits = q.to(dtype) @ k.to(dtype).transpose(-1, -2) / math.sqrt(q.shape[-1])
        return logits.softmax(dim=-1).detach()


def attention_layers(model: nn.Module) -> dict[str, SelfAttention]:
    """Every ``SelfAttention`` submodule of ``model`` by module path (``named_modules`` order)."""
    return {name: module for name, module in model.named_modules() if isinstance(module, SelfAttention)}


@contextmanager
def capture_attention(
    model: nn.Module,
    *,
    keep: Collection[str] | None = None,
    queries: Sequence[int] | Tensor | None = None,
    to_cpu: bool = False,
    history: bool = False,
) -> Iterator[AttentionCapture]:
    """``with capture_attention(model) as capture: model(x, t)`` then ``capture.maps[name]`` ``[B, heads, Q, HW]``.

    Registers a forward hook on every ``SelfAttention`` of ``model`` (or only the layers named in ``keep``); each
    hook stores :func:`attention_weights` of the layer's input, detached, on the CPU with ``to_cpu`` (the layer's
    device otherwise). ``queries``: a subset of query positions (row-major indices into ``HW``) kept at every
    layer, to save memory (a full map costs ``B heads HW^2`` floats); an index beyond a layer's ``HW`` raises
    ``ValueError`` from that layer's forward pass. ``history``: keep every pass, not only the latest (see
    :class:`AttentionCapture`). The model is neither copied nor modified (no parameter, buffer or mode changes;
    the hooks return ``None``, so outputs are bit-identical), and the hooks are removed on exit, exception or not.
    """
    layers = attention_layers(model)
    if not layers:
        raise ValueError(f"{type(model).__name__} has no SelfAttention layers to capture")
    if keep is not None:
        if isinstance(keep, str):
            raise ValueError(f"keep must be a collection of layer names, got the string {keep!r}")
        unknown = sorted(set(keep) - set(layers))
        if unknown:
            raise ValueError(f"keep names unknown attention layers {unknown}; the model has {sorted(layers)}")
        layers = {name: module for name, module in layers.items() if name in set(keep)}
    index = None
    if queries is not None:
        index = torch.as_tensor(queries).reshape(-1)
        if index.numel() == 0:
            raise ValueError("queries must select at least one position, got none")
        if index.dtype == torch.bool or index.is_floating_point() or index.is_complex():
            raise ValueError(f"queries must be integer position indices, got dtype {index.dtype}")
        index = index.long()
    capture = AttentionCapture(tuple(layers), queries=index, to_cpu=to_cpu, keep_history=history)

    def hook_for(name: str) -> Callable[[SelfAttention, tuple, Tensor], None]:
        def hook(module: SelfAttention, args: tuple, output: Tensor) -> None:
            capture.record(name, attention_weights(module, args[0], index))

        return hook

    handles: list[RemovableHandle] = []
    try:
        for name, module in layers.items():
            handles.append(module.register_forward_hook(hook_for(name)))
        yield capture
    finally:
        for handle in handles:
            handle.remove()


# -------------------------------------------------------------------------------------------- functions


def _check_maps(maps: Tensor, name: str) -> Tensor:
    """``maps`` as float64 after checking it is ``[..., Q, K]`` with rows that are distributions: finite,
    non-negative, summing to 1 within ``ROW_SUM_ATOL``."""
    if not isinstance(maps, Tensor):
        raise ValueError(f"{name} must be a tensor [..., Q, K], got {type(maps).__name__}")
    if maps.ndim < 2 or maps.numel() == 0:
        raise ValueError(f"{name} must be a non-empty tensor [..., Q, K], got shape {tuple(maps.shape)}")
    maps = maps.detach().double()
    if not bool(torch.isfinite(maps).all()):
        raise ValueError(f"{name} contains NaN or inf")
    if bool((maps < 0).any()):
        raise ValueError(f"{name} must be non-negative (rows are distributions), got a minimum of {float(maps.min())}")
    deviation = (maps.sum(dim=-1) - 1).abs()
    if float(deviation.max()) > ROW_SUM_ATOL:
        worst = float(maps.sum(dim=-1).flatten()[deviation.flatten().argmax()])
        raise ValueError(f"every row of {name} must sum to 1 (within {ROW_SUM_ATOL}), got a row summing to {worst}")
    return maps


def _reduce(rows: Tensor, keep: int | Sequence[int]) -> float | Tensor:
    """The mean of per-row values ``rows`` (``maps.shape[:-1]``) over every axis not in ``keep`` (axes of the maps,
    negative ones counted from the maps' end, the key axis excluded): a float when ``keep`` is empty, otherwise a
    float64 tensor over the kept axes (in order)."""
    kept = (keep,) if isinstance(keep, int) else tuple(keep)
    ndim = rows.ndim + 1  # the maps' axes
    axes = set()
    for axis in kept:
        if isinstance(axis, bool) or not isinstance(axis, int) or not -ndim <= axis < ndim or axis % ndim == ndim - 1:
            raise ValueError(
                f"keep must be axes of the maps other than the key axis, in [{-ndim}, {ndim - 1}) less -1, got {axis!r}"
            )
        axes.add(axis % ndim)
    if not axes:
        return float(rows.mean())
    averaged = [axis for axis in range(rows.ndim) if axis not in axes]
    return rows.mean(dim=averaged) if averaged else rows


def row_entropy(maps: Tensor) -> Tensor:
    """Entropy of every row, ``H_i = -sum_j A_ij log A_ij`` (nats, ``0 log 0 = 0``), ``[..., Q]`` float64 for maps
    ``[..., Q, K]``: ``0`` for a one-hot row, ``log K`` for the uniform row, the maximum."""
    maps = _check_maps(maps, "maps")
    return -torch.special.xlogy(maps, maps).sum(dim=-1)


def attention_entropy(maps: Tensor, *, keep: int | Sequence[int] = ()) -> float | Tensor:
    """Mean row entropy of attention maps ``[..., Q, K]`` (``[B, heads, Q, HW]`` from :func:`capture_attention`):
    ``mean_{b, h, i} -sum_j A_bhij log A_bhij`` in nats, ``0 log 0 = 0``.

    Between ``0`` (every query attends to one key) and ``log K`` (uniform attention over the ``K`` keys; ``K = HW``
    for full maps). ``keep`` names axes of ``maps`` (not the last) kept rather than averaged: ``keep=1`` gives the
    per-head entropies ``[heads]``, ``keep=(0, 2)`` per image and query ``[B, Q]``. Returns a float when nothing is
    kept, a float64 tensor otherwise. ``ValueError`` unless every row is a distribution (finite, non-negative,
    summing to 1 within ``ROW_SUM_ATOL``).
    """
    return _reduce(row_entropy(maps), keep)


def attention_divergence(
    p: Tensor, q: Tensor, *, kind: str = "js", eps: float = 1e-12, keep: int | Sequence[int] = ()
) -> float | Tensor:
    """Mean row-wise divergence between attention maps ``p`` and ``q`` of the same shape ``[..., Q, K]`` (e.g. a
    student's and its teacher's maps of a layer), in nats; ``keep`` as in :func:`attention_entropy`.

    - ``"js"`` (default), Jensen-Shannon: ``JS(p_i, q_i) = KL(p_i || m_i) / 2 + KL(q_i || m_i) / 2`` with
      ``m_i = (p_i + q_i) / 2``. Symmetric, ``0`` iff ``p_i = q_i``, bounded by ``log 2`` (rows with disjoint
      supports), so it stays finite where one map puts zero weight on a key the other uses, which makes it the
      default for comparing a student with a teacher. It needs no ``eps``: ``m_ij >= p_ij / 2 > 0`` wherever
      ``p_ij > 0``. Computed as ``sum_j (p log p + q log q)/2 - m log m`` with ``0 log 0 = 0`` and clamped to
      ``[0, log 2]`` (removes rounding only).
    - ``"kl"``: ``KL(p_i || q_i) = sum_j p_ij log(p_ij / max(q_ij, eps))`` (``0 log 0 = 0``), clamped at ``0``.
      Asymmetric and unbounded in exact arithmetic; ``eps`` caps a row at ``-log eps`` (27.6 nats at 1e-12).
    """
    if kind not in DIVERGENCES:
        raise ValueError(f"kind must be one of {DIVERGENCES}, got {kind!r}")
    if not (isinstance(eps, int | float) and 0 < eps < 1):
        raise ValueError(f"eps must be in (0, 1), got {eps}")
    p, q = _check_maps(p, "p"), _check_maps(q, "q")
    if p.shape != q.shape:
        raise ValueError(f"p and q must have the same shape, got {tuple(p.shape)} and {tuple(q.shape)}")
    xlogy = torch.special.xlogy
    if kind == "js":
        m = (p + q) / 2
        rows = ((xlogy(p, p) + xlogy(q, q)) / 2 - xlogy(m, m)).sum(dim=-1).clamp(0, math.log(2))
    else:
        rows = (xlogy(p, p) - xlogy(p, q.clamp(min=eps))).sum(dim=-1).clamp(min=0)
    return _reduce(rows, keep)

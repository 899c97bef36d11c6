"""Discretization error of a diffusion model and the sampling schedules that minimise it (seed 003, LIFT).

A LIFT model denoises a large image and its 2x-downsampled copy with independent timesteps. Its discretization
error over ``(gamma0, gamma1)`` (the SNRs ``abar / (1 - abar)`` of the large and the small scale) is estimated
from the squared Jacobian of the noise prediction, and a dynamic program picks the monotone SNR path through that
heatmap with the least cumulative error. The same machinery gives single-scale schedules (``error_density``,
``optimal_schedule``).

Hutchinson estimator. For ``f: z -> eps`` with Jacobian ``J`` and probes ``u = eps * sqrt(v)``, ``eps``
Rademacher (+-1), ``E |J u|^2 = sum_j v_j sum_i J_ij^2 = 1^T (J o J) v``, since ``E[eps_j eps_k] = delta_jk``.
The seed writes this quantity as ``v^T (J o J) v``; that is a different number (for uniform ``v = 1/(HW)`` it is
``1/(HW)`` times the estimated one). This module computes, and calls ``vhv``, the seed's *estimator*:
``1^T (J o J) v``.

Chain-rule factor. The seed differentiates in ``z = sqrt(snr) x0 + eps`` and multiplies the squared Jacobian by
``1 / (snr (1 + snr))``, claiming ``x_t = z / sqrt(snr (1 + snr))``. With ``x_t = sqrt(abar) x0 + sqrt(1 - abar)
eps`` (Ho et al. 2020, eq. 4) and ``abar = snr / (1 + snr)``, ``x_t = sqrt(1 - abar) z = z / sqrt(1 + snr)``, so
``d x_t / d z = 1 / sqrt(1 + snr)`` and the squared-Jacobian factor is ``1 / (1 + snr)`` (convention
``"derived"``). The seed's ``1 / (snr (1 + snr))`` (convention ``"seed"``) is what the x0 estimate
``x0_hat = (z - eps_hat) / sqrt(snr)`` gives in z coordinates when the identity term is dropped:
``|d x0_hat / d z|^2 ~ |J_eps,xt|^2 / (snr (1 + snr))``. Both are offered; ``"derived"`` is the default.

Conventions: heatmaps are ``[M, M]`` float64 with row ``i`` = gamma0 (large scale) index and column ``j`` = gamma1
(small scale) index on an increasing log-spaced SNR grid. Timestep lists come in sampling order (noisiest first,
so decreasing ``t``). Randomness comes only from the ``torch.Generator`` passed in (a CPU generator).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from diffbench.schedules import NoiseSchedule

SNRLike = TypeVar("SNRLike", float, np.ndarray, Tensor)
DualEps = Callable[[Tensor, Tensor, Tensor, Tensor], tuple[Tensor, Tensor]]

# Grid values may sit this far (relative, in SNR) outside the schedule's range: endpoints built from
# ``schedule.snr`` and passed through ``np.geomspace`` or a log/exp round trip must still count as inside.
RANGE_RTOL = 1e-9


# --- Hutchinson estimator -------------------------------------------------------------------------------------


def _weights(v: float | Tensor, sample_shape: Sequence[int]) -> Tensor:
    """``v`` validated and expanded to one sample's shape, float64 on the CPU."""
    w = torch.as_tensor(v, dtype=torch.float64).detach().cpu()
    try:
        broadcast = torch.broadcast_shapes(w.shape, tuple(sample_shape))
    except RuntimeError:
        broadcast = None
    if broadcast != tuple(sample_shape):
        raise ValueError(
            f"v must be a float or broadcastable to one sample's shape {tuple(sample_shape)}, got shape "
            f"{tuple(w.shape)}"
        )
    bad = ~(torch.isfinite(w) & (w >= 0))
    if bool(bad.any()):
        raise ValueError(f"v must be non-negative and finite, got {w[bad][:5].tolist()}")
    return w.expand(tuple(sample_shape))


def rademacher_probes(shape: Sequence[int], num_probes: int, generator: torch.Generator) -> Tensor:
    """``num_probes`` Rademacher tensors (+-1 with probability 1/2 each), ``[K, *shape]`` float32 on the CPU,
    drawn from ``generator`` (a CPU generator) with one ``randint`` call."""
    if isinstance(num_probes, bool) or not isinstance(num_probes, (int, np.integer)) or num_probes < 1:
        raise ValueError(f"num_probes must be an integer >= 1, got {num_probes!r}")
    if not isinstance(generator, torch.Generator) or generator.device.type != "cpu":
        raise ValueError(f"generator must be a CPU torch.Generator, got {generator!r}")
    bits = torch.randint(0, 2, (int(num_probes), *shape), generator=generator)
    return (2 * bits - 1).float()


def _scaled_probes(z: Tensor, v: float | Tensor, num_probes: int, generator: torch.Generator) -> Tensor:
    """The probes ``u = eps * sqrt(v)`` ``[K, B, ...]`` on ``z``'s device and dtype (shared by both estimators)."""
    if not isinstance(z, Tensor) or z.ndim < 1:
        raise ValueError(f"z must be a batch tensor [B, ...], got {type(z).__name__} {getattr(z, 'shape', '')}")
    sqrt_v = _weights(v, z.shape[1:]).sqrt().to(device=z.device, dtype=z.dtype)
    return rademacher_probes(z.shape, num_probes, generator).to(device=z.device, dtype=z.dtype) * sqrt_v


def _squared_jvp(f: Callable[[Tensor], Tensor], z: Tensor, u: Tensor) -> Tensor:
    """``sum over non-batch dims of (J u)^2`` per sample, ``[B]`` float64, with ``J u`` from forward-mode AD."""
    _, ju = torch.func.jvp(f, (z,), (u,))
    if ju.ndim < 1 or ju.shape[0] != z.shape[0]:
        raise ValueError(f"f must map [B, ...] -> [B, ...] with B = {z.shape[0]}, got output shape {tuple(ju.shape)}")
    return ju.double().pow(2).reshape(ju.shape[0], -1).sum(1)


def hutchinson_vhv(
    f: Callable[[Tensor], Tensor],
    z: Tensor,
    v: float | Tensor,
    num_probes: int,
    generator: torch.Generator,
    *,
    chunk_size: int | None = None,
) -> Tensor:
    """Hutchinson estimate of ``1^T (J o J) v = sum_j v_j sum_i J_ij^2`` per sample, ``[B]`` float64.

    ``f`` maps ``[B, ...] -> [B, ...]`` with samples independent (a batched network in eval mode); ``z`` is
    ``[B, ...]``; ``v`` is a non-negative float or a tensor broadcastable to one sample's shape ``z.shape[1:]``.
    With ``K = num_probes`` Rademacher probes ``eps_k`` ``[K, B, ...]`` from ``generator`` and ``u_k = eps_k
    sqrt(v)``: ``vhv_b = (1/K) sum_k |J u_k|_b^2``, unbiased because ``E[eps eps^T] = I``. (The seed calls this
    ``v^T (J o J) v``; see the module docstring.) All probes go through one ``torch.func.vmap`` of
    ``torch.func.jvp``; ``chunk_size`` bounds how many probes vmap evaluates at once (memory), ``None`` = all.
    Runs under ``torch.no_grad()``: forward-mode AD needs no graph, and none is kept for the result.
    """
    probes = _scaled_probes(z, v, num_probes, generator)
    with torch.no_grad():
        per_probe = torch.func.vmap(lambda u: _squared_jvp(f, z, u), chunk_size=chunk_size)(probes)  # [K, B]
    return per_probe.mean(0)


def hutchinson_vhv_loop(
    f: Callable[[Tensor], Tensor], z: Tensor, v: float | Tensor, num_probes: int, generator: torch.Generator
) -> Tensor:
    """:func:`hutchinson_vhv` with a Python loop over the probes (same probes, same result to float round-off):
    the reference and the baseline of the vmap timing."""
    probes = _scaled_probes(z, v, num_probes, generator)
    with torch.no_grad():
        total = sum(_squared_jvp(f, z, u) for u in probes)
    return total / num_probes


def uniform_weights(sample_shape: Sequence[int]) -> float:
    """The seed's ``v = 1 / (H W)`` for a sample shape ``(C, H, W)``: pixels averaged, channels summed.

    In general ``1 / prod(sample_shape[1:])`` (the first dim is channels), so a vector sample ``(D,)`` gets 1.
    """
    shape = tuple(int(s) for s in sample_shape)
    if len(shape) < 1 or min(shape) < 1:
        raise ValueError(f"sample_shape must be (C, ...) with positive sizes, got {tuple(sample_shape)}")
    return 1.0 / math.prod(shape[1:])


def exact_vhv(f: Callable[[Tensor], Tensor], z: Tensor, v: float | Tensor, *, chunk_size: int | None = None) -> Tensor:
    """Exact ``sum_j v_j sum_i J_ij^2`` per sample ``[B]`` float64 from the full per-sample Jacobian.

    Column ``j`` of every sample's Jacobian comes from one ``jvp`` whose tangent is the basis vector ``e_j`` in
    every sample at once: samples are independent, so the cross-sample blocks of the batch Jacobian vanish and
    ``(J [e_j, ..., e_j])_b = J_b e_j``. This works for any batched ``f`` (one that closes over ``[B]`` timesteps
    too) and costs ``D = prod(z.shape[1:])`` batched forward passes (vmapped, ``chunk_size`` at a time): for
    small inputs and tests.
    """
    sample_shape = tuple(z.shape[1:])
    w = _weights(v, sample_shape).reshape(-1)
    d = w.numel()
    basis = torch.eye(d, dtype=z.dtype, device=z.device).reshape(d, 1, *sample_shape).expand(d, *z.shape)
    with torch.no_grad():
        columns = torch.func.vmap(lambda e: _squared_jvp(f, z, e), chunk_size=chunk_size)(basis)  # [D, B]
    return (columns * w.to(columns.device)[:, None]).sum(0)  # sum_j v_j sum_i J_ij^2


# --- Chain rule between z = sqrt(snr) x0 + eps and x_t ---------------------------------------------------------


def _positive(snr: SNRLike, name: str = "snr") -> np.ndarray | Tensor:
    """``snr`` as float64 (tensor or numpy array), checked positive and finite."""
    if isinstance(snr, Tensor):
        s = snr.to(torch.float64)
        bad = ~(torch.isfinite(s) & (s > 0))
        values = s[bad].detach().cpu().flatten()[:5].tolist() if bool(bad.any()) else []
    else:
        s = np.asarray(snr, dtype=np.float64)
        bad = ~(np.isfinite(s) & (s > 0))
        values = s[bad].flatten()[:5].tolist()
    if values:
        raise ValueError(f"{name} must be positive and finite, got {values}")
    return s


def _seed_factor(snr: SNRLike) -> SNRLike:
    """The seed's ``1 / (snr (1 + snr))`` (x0-estimate Jacobian in z coordinates, identity term dropped)."""
    return 1.0 / (snr * (1.0 + snr))


def _derived_factor(snr: SNRLike) -> SNRLike:
    """``(d x_t / d z)^2 = 1 / (1 + snr)`` from ``x_t = z / sqrt(1 + snr)``."""
    return 1.0 / (1.0 + snr)


_FACTORS: dict[str, Callable[[Any], Any]] = {"seed": _seed_factor, "derived": _derived_factor}
CHAIN_RULE_CONVENTIONS: tuple[str, ...] = tuple(_FACTORS)


def chain_rule_factor(snr: SNRLike, convention: str = "derived") -> SNRLike:
    """Squared-Jacobian factor at ``snr`` (float, numpy array or tensor; computed in float64, same kind back):
    ``"derived"`` ``1 / (1 + snr)``, ``"seed"`` ``1 / (snr (1 + snr))`` (see the module docstring)."""
    if convention not in _FACTORS:
        raise ValueError(f"unknown chain-rule convention {convention!r}; choose one of {CHAIN_RULE_CONVENTIONS}")
    factor = _FACTORS[convention](_positive(snr))
    return factor if isinstance(snr, (Tensor, np.ndarray)) else float(factor)


def _xt_over_z(snr: float | Tensor, like: Tensor) -> float | Tensor:
    """``sqrt(1 - abar) = 1 / sqrt(1 + snr)`` as a float or a tensor of ``like``'s dtype and device."""
    s = _positive(snr)
    if isinstance(s, Tensor):
        return (1.0 + s).rsqrt().to(device=like.device, dtype=like.dtype)
    if s.ndim:
        raise ValueError(f"snr must be a float or a tensor broadcastable against z, got an array {s.shape}")
    return 1.0 / math.sqrt(1.0 + float(s))


def z_to_xt(z: Tensor, snr: float | Tensor) -> Tensor:
    """``x_t = z / sqrt(1 + snr)`` for ``z = sqrt(snr) x0 + eps`` (``x_t = sqrt(1 - abar) z``, Ho et al. eq. 4).
    ``snr``: a float, or a tensor broadcastable against ``z`` (e.g. ``[B, 1, 1, 1]``)."""
    return z * _xt_over_z(snr, z)


def xt_to_z(x_t: Tensor, snr: float | Tensor) -> Tensor:
    """Inverse of :func:`z_to_xt`: ``z = sqrt(1 + snr) x_t``."""
    return x_t / _xt_over_z(snr, x_t)


# --- SNR grids ---------------------------------------------------------------------------------------------------


def snr_grid(snr_min: float = 0.01, snr_max: float = 100.0, num_points: int = 15) -> np.ndarray:
    """``num_points`` SNRs log-spaced from ``snr_min`` to ``snr_max`` (``np.geomspace``, both ends exact),
    ``[M]`` float64 increasing."""
    if isinstance(num_points, bool) or not isinstance(num_points, (int, np.integer)) or num_points < 2:
        raise ValueError(f"num_points must be an integer >= 2, got {num_points!r}")
    if not (math.isfinite(snr_min) and snr_min > 0):
        raise ValueError(f"snr_min must be positive and finite, got {snr_min}")
    if not (math.isfinite(snr_max) and snr_max > snr_min):
        raise ValueError(f"snr_max must be finite and > snr_min = {snr_min}, got {snr_max}")
    return np.geomspace(snr_min, snr_max, int(num_points), dtype=np.float64)


def snr_range(schedule: NoiseSchedule) -> tuple[float, float]:
    """``(SNR(T-1), SNR(0))``: the SNRs a schedule's timesteps span."""
    return float(schedule.snr(schedule.num_steps - 1)), float(schedule.snr(0))


def check_snr_grid(grid: Sequence[float] | np.ndarray, schedule: NoiseSchedule | None = None) -> np.ndarray:
    """``grid`` as ``[M]`` float64 after checking: ``M >= 2``, positive, finite, strictly increasing, and (with a
    ``schedule``) every value within ``[SNR(T-1), SNR(0)]`` (relative slack ``RANGE_RTOL``)."""
    g = np.asarray(grid, dtype=np.float64)
    if g.ndim != 1 or len(g) < 2:
        raise ValueError(f"an SNR grid needs at least 2 points in a 1-D sequence, got shape {g.shape}: {g.tolist()}")
    bad = ~(np.isfinite(g) & (g > 0))
    if bad.any():
        k = int(np.argmax(bad))
        raise ValueError(f"SNR grid values must be positive and finite, got grid[{k}] = {g[k]}")
    steps = np.diff(g) <= 0
    if steps.any():
        k = int(np.argmax(steps)) + 1
        raise ValueError(f"SNR grid must be strictly increasing, got grid[{k}] = {g[k]} after {g[k - 1]}")
    if schedule is not None:
        lo, hi = snr_range(schedule)
        outside = (g < lo * (1 - RANGE_RTOL)) | (g > hi * (1 + RANGE_RTOL))
        if outside.any():
            k = int(np.argmax(outside))
            raise ValueError(
                f"SNR grid value {g[k]:.6g} (grid[{k}]) lies outside {schedule!r}'s range "
                f"[SNR(T-1), SNR(0)] = [{lo:.6g}, {hi:.6g}]"
            )
    return g


# --- Heatmaps and error densities ---------------------------------------------------------------------------------


def _child_seed(generator: torch.Generator) -> int:
    """One integer drawn from ``generator``: seeds a fresh generator that replays the same probes at every grid
    point (common random numbers, so differences between grid points are not swamped by probe noise)."""
    return int(torch.randint(0, 2**62, (1,), generator=generator))


def _branch(
    dual_eps: DualEps, x_large: Tensor, x_small: Tensor, t_large: Tensor, t_small: Tensor, scale: int
) -> Callable[[Tensor], Tensor]:
    """``z -> dual_eps(...)[scale]`` as a function of that scale's input only (``0`` large, ``1`` small)."""
    if scale == 0:
        return lambda z: dual_eps(z, x_small, t_large, t_small)[0]
    return lambda z: dual_eps(x_large, z, t_large, t_small)[1]


def error_heatmap(
    dual_eps: DualEps,
    x0_large: Tensor,
    x0_small: Tensor,
    grid: Sequence[float] | np.ndarray,
    schedule: NoiseSchedule,
    *,
    num_probes: int,
    generator: torch.Generator,
    progress: bool = False,
) -> dict[str, np.ndarray]:
    """Raw squared-Jacobian heatmaps of a dual-scale model over ``(gamma0, gamma1)`` on ``grid``.

    ``dual_eps(x_large, x_small, t_large, t_small) -> (eps_large, eps_small)`` with ``x_large`` ``[B, C, H, W]``,
    ``x_small`` ``[B, C, H/2, W/2]`` and long timesteps ``[B]``. At grid point ``(i, j)``: ``t0 = t(gamma0_i)``,
    ``t1 = t(gamma1_j)`` (nearest in log-SNR), both scales noised with the same noise everywhere (drawn once from
    ``generator``), and ``large[i, j]`` = batch mean of :func:`hutchinson_vhv` of ``z -> eps_large(z, x_small_t)``
    at ``x_large_t`` with ``v = 1/(HW)``; ``small[i, j]`` likewise for the small scale. Each scale replays the
    same probes at every grid point. No chain-rule factor (see :func:`apply_chain_rule`).

    Returns ``{"large": [M, M], "small": [M, M]}`` float64, row ``i`` = gamma0 index, column ``j`` = gamma1 index.
    """
    grid = check_snr_grid(grid, schedule)
    if len(x0_large) != len(x0_small):
        raise ValueError(f"x0_large and x0_small need the same batch size, got {len(x0_large)} and {len(x0_small)}")
    timesteps = schedule.snr_to_timestep(torch.as_tensor(grid)).tolist()
    noise_large = torch.randn(x0_large.shape, generator=generator, dtype=x0_large.dtype).to(x0_large.device)
    noise_small = torch.randn(x0_small.shape, generator=generator, dtype=x0_small.dtype).to(x0_small.device)
    seeds = (_child_seed(generator), _child_seed(generator))
    weights = (uniform_weights(x0_large.shape[1:]), uniform_weights(x0_small.shape[1:]))
    batch = [torch.full((len(x0_large),), t, dtype=torch.long, device=x0_large.device) for t in timesteps]
    x_large = [schedule.add_noise(x0_large, t, noise_large) for t in batch]
    x_small = [schedule.add_noise(x0_small, t, noise_small) for t in batch]
    m = len(grid)
    out = {"large": np.empty((m, m)), "small": np.empty((m, m))}
    for i, j in tqdm(itertools.product(range(m), range(m)), total=m * m, disable=not progress, desc="heatmap"):
        for scale, key in enumerate(("large", "small")):
            f = _branch(dual_eps, x_large[i], x_small[j], batch[i], batch[j], scale)
            at = (x_large[i], x_small[j])[scale]
            probes = torch.Generator().manual_seed(seeds[scale])
            out[key][i, j] = float(hutchinson_vhv(f, at, weights[scale], num_probes, probes).mean())
    return out


def apply_chain_rule(
    large: np.ndarray, small: np.ndarray, grid: Sequence[float] | np.ndarray, convention: str
) -> dict[str, np.ndarray]:
    """Heatmaps in z coordinates: ``large[i, j] * factor(gamma0_i)``, ``small[i, j] * factor(gamma1_j)`` and
    ``total = large + small``, all ``[M, M]`` float64 (:func:`chain_rule_factor` with ``convention``)."""
    grid = check_snr_grid(grid)
    factor = chain_rule_factor(grid, convention)
    m = len(grid)
    large, small = np.asarray(large, dtype=np.float64), np.asarray(small, dtype=np.float64)
    for name, a in (("large", large), ("small", small)):
        if a.shape != (m, m):
            raise ValueError(f"{name} must be [M, M] = {(m, m)} for a grid of {m} points, got {a.shape}")
    scaled_large, scaled_small = large * factor[:, None], small * factor[None, :]
    return {"large": scaled_large, "small": scaled_small, "total": scaled_large + scaled_small}


def _check_timesteps(timesteps: Sequence[int] | Tensor | np.ndarray, schedule: NoiseSchedule, name: str) -> list[int]:
    """Integer timesteps in ``[0, T-1]``, a non-empty 1-D sequence, as a list."""
    t = np.asarray(timesteps.cpu() if isinstance(timesteps, Tensor) else timesteps)
    if t.ndim != 1 or len(t) == 0 or not np.issubdtype(t.dtype, np.integer):
        raise ValueError(f"{name} must be a non-empty 1-D sequence of integers, got {t.tolist()!r}")
    bad = (t < 0) | (t >= schedule.num_steps)
    if bad.any():
        raise ValueError(f"{name} must lie in [0, {schedule.num_steps - 1}], got {t[bad][:5].tolist()}")
    return [int(x) for x in t]


def error_density(
    eps_model: Callable[..., Tensor],
    x0: Tensor,
    timesteps: Sequence[int] | Tensor | np.ndarray,
    schedule: NoiseSchedule,
    *,
    num_probes: int,
    generator: torch.Generator,
    cond: Mapping[str, Any] | None = None,
    progress: bool = False,
) -> np.ndarray:
    """Raw squared-Jacobian density of a single-scale model ``eps_model(x, t, **cond)`` at integer ``timesteps``,
    ``[len(timesteps)]`` float64: batch mean of :func:`hutchinson_vhv` of ``z -> eps(z, t)`` at
    ``x_t = add_noise(x0, t, noise)`` with ``v = uniform_weights(x0.shape[1:])``. ``x0`` is ``[B, ...]``; the
    noise is drawn once from ``generator`` and the same probes are replayed at every ``t``. No chain-rule factor.
    """
    steps = _check_timesteps(timesteps, schedule, "timesteps")
    cond = dict(cond or {})
    noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype).to(x0.device)
    seed = _child_seed(generator)
    v = uniform_weights(x0.shape[1:])
    out = np.empty(len(steps))
    for k, t in enumerate(tqdm(steps, disable=not progress, desc="error density")):
        t_batch = torch.full((len(x0),), t, dtype=torch.long, device=x0.device)
        x_t = schedule.add_noise(x0, t_batch, noise)

        def f(z: Tensor, t_batch: Tensor = t_batch) -> Tensor:
            return eps_model(z, t_batch, **cond)

        out[k] = float(hutchinson_vhv(f, x_t, v, num_probes, torch.Generator().manual_seed(seed)).mean())
    return out


# --- Dynamic programs ------------------------------------------------------------------------------------------


def check_path(path: Sequence[int], num_points: int) -> list[int]:
    """``path`` as a list after checking it is a valid heatmap path on ``num_points`` grid points: length ``M``,
    integers in ``[0, M-1]``, starting at 0, non-decreasing, ending at ``M-1``."""
    path = list(path)
    m = num_points
    if len(path) != m:
        raise ValueError(f"a path on a grid of {m} points needs {m} entries, got {len(path)}: {path}")
    for i, j in enumerate(path):
        if isinstance(j, bool) or not isinstance(j, (int, np.integer)):
            raise ValueError(f"path entries must be integers, got path[{i}] = {j!r}")
        if not 0 <= j < m:
            raise ValueError(f"path entries must lie in [0, {m - 1}], got path[{i}] = {j}")
    if path[0] != 0:
        raise ValueError(f"a path must start at gamma1 index 0, got path[0] = {path[0]}")
    for i in range(1, m):
        if path[i] < path[i - 1]:
            raise ValueError(f"a path must be non-decreasing, got path[{i}] = {path[i]} after {path[i - 1]}")
    if path[-1] != m - 1:
        raise ValueError(f"a path must end at gamma1 index {m - 1}, got path[{m - 1}] = {path[-1]}")
    return [int(j) for j in path]


def _check_cost(cost: np.ndarray, name: str = "cost") -> np.ndarray:
    c = np.asarray(cost, dtype=np.float64)
    if c.ndim != 2 or c.shape[0] != c.shape[1] or c.shape[0] < 2:
        raise ValueError(f"{name} must be a square [M, M] array with M >= 2, got shape {c.shape}")
    return c


def diagonal_path(num_points: int) -> list[int]:
    """The path ``gamma1 = gamma0``: ``[0, 1, ..., M-1]``."""
    if isinstance(num_points, bool) or not isinstance(num_points, (int, np.integer)) or num_points < 2:
        raise ValueError(f"num_points must be an integer >= 2, got {num_points!r}")
    return list(range(int(num_points)))


def path_cost(cost: np.ndarray, path: Sequence[int]) -> float:
    """Cumulative cost ``sum_i cost[i, path[i]]`` of a path through an ``[M, M]`` heatmap."""
    c = _check_cost(cost)
    path = check_path(path, len(c))
    return float(c[np.arange(len(c)), path].sum())


def optimal_snr_path(cost: np.ndarray) -> list[int]:
    """Minimum-cost monotone path through a heatmap ``cost`` ``[M, M]`` (row = gamma0, column = gamma1, finite).

    A path gives every gamma0 index ``i`` a gamma1 index ``j_i``, non-decreasing, ``j_0 = 0``, ``j_{M-1} = M-1``;
    jumps in gamma1 are free. Dynamic program (O(M^2)): ``D[0, 0] = cost[0, 0]``, ``D[0, j>0] = inf``,
    ``D[i, j] = cost[i, j] + min_{j' <= j} D[i-1, j']`` (prefix minima); the answer is ``D[M-1, M-1]``.
    Ties: backtracking from the last row, each row takes the smallest gamma1 index among its equal minima, so
    of several optimal paths the one lowest in gamma1 is returned.
    """
    c = _check_cost(cost)
    if not np.isfinite(c).all():
        i, j = np.argwhere(~np.isfinite(c))[0]
        raise ValueError(f"cost must be finite, got cost[{i}, {j}] = {c[i, j]}")
    m = len(c)
    best = np.full((m, m), np.inf)
    best[0, 0] = c[0, 0]
    for i in range(1, m):
        best[i] = c[i] + np.minimum.accumulate(best[i - 1])
    path = [m - 1]
    for i in range(m - 1, 0, -1):
        path.append(int(np.argmin(best[i - 1, : path[-1] + 1])))  # first minimum: the smallest gamma1 index
    return path[::-1]


def path_to_schedule(
    path: Sequence[int], grid: Sequence[float] | np.ndarray, num_steps: int, schedule: NoiseSchedule
) -> tuple[list[int], list[int]]:
    """Timesteps ``(t_large, t_small)`` of ``num_steps`` sampling steps along a heatmap path, in sampling order
    (non-increasing t).

    ``gamma0_k`` is log-spaced from ``grid[0]`` to ``grid[-1]``; ``gamma1_k = exp(interp(log gamma0_k, log grid,
    log grid[path]))`` (the path, piecewise linear in log-SNR); both map to integer timesteps by
    ``schedule.snr_to_timestep`` (nearest in log-SNR).
    """
    grid = check_snr_grid(grid, schedule)
    path = check_path(path, len(grid))
    if isinstance(num_steps, bool) or not isinstance(num_steps, (int, np.integer)) or num_steps < 2:
        raise ValueError(f"num_steps must be an integer >= 2, got {num_steps!r}")
    gamma0 = np.geomspace(grid[0], grid[-1], int(num_steps))
    gamma1 = np.exp(np.interp(np.log(gamma0), np.log(grid), np.log(grid[path])))
    t_large = schedule.snr_to_timestep(torch.as_tensor(gamma0)).tolist()
    t_small = schedule.snr_to_timestep(torch.as_tensor(gamma1)).tolist()
    return t_large, t_small


def step_cost_matrix(
    log_snr: Sequence[float] | np.ndarray,
    density_log_snr: Sequence[float] | np.ndarray,
    density: Sequence[float] | np.ndarray,
) -> np.ndarray:
    """Local-error cost ``[M, M]`` of a first-order (DDIM) step between candidate log-SNRs ``log_snr`` ``[M]``
    (strictly increasing: noisiest first).

    Model: a step from ``lambda_a`` to ``lambda_b`` costs ``E(lambda_a) (lambda_b - lambda_a)^2`` (local error of a
    first-order step ~ its squared length times the error density at its start), ``E`` interpolated linearly in
    ``lambda`` from the density ``[N]`` measured at ``density_log_snr`` ``[N]`` (strictly increasing) and held
    constant beyond its ends (``np.interp``). Only ``a < b`` is a step; ``cost[a, b] = inf`` for ``a >= b``.
    """
    lam = np.asarray(log_snr, dtype=np.float64)
    xp, fp = np.asarray(density_log_snr, dtype=np.float64), np.asarray(density, dtype=np.float64)
    for name, a in (("log_snr", lam), ("density_log_snr", xp)):
        if a.ndim != 1 or len(a) < 1 or not np.isfinite(a).all():
            raise ValueError(f"{name} must be a non-empty 1-D array of finite values, got {a.tolist()}")
        if (np.diff(a) <= 0).any():
            k = int(np.argmax(np.diff(a) <= 0)) + 1
            raise ValueError(f"{name} must be strictly increasing, got {name}[{k}] = {a[k]} after {a[k - 1]}")
    if fp.shape != xp.shape:
        raise ValueError(f"density must match density_log_snr's shape {xp.shape}, got {fp.shape}")
    if not (np.isfinite(fp) & (fp >= 0)).all():
        raise ValueError(f"density must be non-negative and finite, got {fp[~(np.isfinite(fp) & (fp >= 0))].tolist()}")
    e = np.interp(lam, xp, fp)
    cost = e[:, None] * (lam[None, :] - lam[:, None]) ** 2  # E(lambda_a) (lambda_b - lambda_a)^2
    return np.where(np.triu(np.ones_like(cost, dtype=bool), k=1), cost, np.inf)


def min_cost_chain(cost: np.ndarray, steps: int) -> list[int]:
    """Indices ``0 = i_0 < i_1 < ... < i_{steps-1} = M-1`` minimising ``sum_k cost[i_k, i_{k+1}]``.

    ``cost`` ``[M, M]``: ``cost[a, b]`` is a step from candidate ``a`` to ``b``; only ``a < b`` is read (must be
    finite there). ``steps`` in ``[2, M]``. DP, O(steps M^2) vectorised: ``D_0 = [0, inf, ...]``,
    ``D_k[b] = min_{a < b} D_{k-1}[a] + cost[a, b]``; the answer is ``D_{steps-1}[M-1]``. Ties: backtracking
    from ``M-1``, each step takes the smallest predecessor index among equal minima.
    """
    c = _check_cost(cost)
    m = len(c)
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or not 2 <= steps <= m:
        raise ValueError(f"steps must be an integer in [2, {m}] for {m} candidates, got {steps!r}")
    upper = np.triu(np.ones((m, m), dtype=bool), k=1)
    if not np.isfinite(c[upper]).all():
        a, b = np.argwhere(upper & ~np.isfinite(c))[0]
        raise ValueError(f"cost must be finite above the diagonal, got cost[{a}, {b}] = {c[a, b]}")
    c = np.where(upper, c, np.inf)
    best = np.full(m, np.inf)
    best[0] = 0.0
    parents = np.empty((steps - 1, m), dtype=np.int64)
    for k in range(steps - 1):
        total = best[:, None] + c  # [a, b]: reach a in k steps, then step a -> b
        parents[k] = total.argmin(0)  # first minimum: the smallest predecessor
        best = total.min(0)
    chain = [m - 1]
    for k in range(steps - 2, -1, -1):
        chain.append(int(parents[k, chain[-1]]))
    return chain[::-1]


def _error_model(
    schedule: NoiseSchedule, density_t: Sequence[int], density: Sequence[float], convention: str
) -> tuple[np.ndarray, np.ndarray]:
    """``(lambda, E)`` sorted by increasing log-SNR: the measured raw density times the chain-rule factor."""
    t = _check_timesteps(density_t, schedule, "density_t")
    if len(set(t)) != len(t):
        raise ValueError(f"density_t must not repeat a timestep, got {t}")
    d = np.asarray(density, dtype=np.float64)
    if d.shape != (len(t),):
        raise ValueError(f"density must have one value per density_t entry ({len(t)}), got shape {d.shape}")
    snr = schedule.snr(torch.tensor(t)).numpy()
    order = np.argsort(-np.asarray(t))  # decreasing t = increasing lambda
    return np.log(snr)[order], (d * chain_rule_factor(snr, convention))[order]


def optimal_schedule(
    schedule: NoiseSchedule,
    steps: int,
    density_t: Sequence[int],
    density: Sequence[float],
    convention: str = "derived",
) -> list[int]:
    """The ``steps`` timesteps (strictly decreasing, ``T-1`` first, ``0`` last) minimising :func:`schedule_cost`.

    Candidates are every integer timestep ``T-1, ..., 0`` (log-SNR increasing); the raw density measured at
    ``density_t`` (:func:`error_density`) is multiplied by :func:`chain_rule_factor` and fed to
    :func:`step_cost_matrix` and :func:`min_cost_chain`. ``steps`` in ``[1, T]``; ``steps == 1`` gives ``[T-1]``.
    """
    lam_density, e = _error_model(schedule, density_t, density, convention)
    big_t = schedule.num_steps
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or not 1 <= steps <= big_t:
        raise ValueError(f"steps must be an integer in [1, {big_t}] for {schedule!r}, got {steps!r}")
    if steps == 1:
        return [big_t - 1]
    candidates = np.arange(big_t - 1, -1, -1)
    lam = np.log(schedule.snr(torch.as_tensor(candidates)).numpy())
    chain = min_cost_chain(step_cost_matrix(lam, lam_density, e), int(steps))
    return [int(candidates[i]) for i in chain]


def schedule_cost(
    timesteps: Sequence[int],
    schedule: NoiseSchedule,
    density_t: Sequence[int],
    density: Sequence[float],
    convention: str = "derived",
) -> float:
    """:func:`optimal_schedule`'s objective for any strictly decreasing timestep grid: ``sum_k E(lambda_k)
    (lambda_{k+1} - lambda_k)^2`` over consecutive timesteps. The final step from the last timestep to x0 is
    common to all grids and not counted."""
    t = _check_timesteps(timesteps, schedule, "timesteps")
    if any(b >= a for a, b in itertools.pairwise(t)):
        raise ValueError(f"timesteps must be strictly decreasing, got {t}")
    lam_density, e = _error_model(schedule, density_t, density, convention)
    lam = np.log(schedule.snr(torch.tensor(t)).numpy())
    return float(np.diagonal(step_cost_matrix(lam, lam_density, e), offset=1).sum())

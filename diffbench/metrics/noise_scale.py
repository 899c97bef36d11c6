"""The gradient noise scale of McCandlish et al. 2018 ("An Empirical Model of Large-Batch Training").

For a loss that is a mean over examples, the gradient of a batch of ``B`` independent examples, ``g_B``, has mean
``G`` (the true gradient) and covariance ``Sigma / B`` (``Sigma`` the per-example gradient covariance), so

    E |g_B|^2 = |G|^2 + tr(Sigma) / B.                                                    (McCandlish eq. A.1)

The *simple noise scale* ``B_simple = tr(Sigma) / |G|^2`` is the batch size at which the gradient's noise and
signal are equal; with a well-conditioned Hessian it predicts the critical batch size, beyond which a larger batch
no longer cuts the number of optimiser steps proportionally (their eq. 2.12 and section 2.3). Measuring ``|g_B|^2``
at two batch sizes ``B_small < B_big`` and solving the two equations gives unbiased estimates of both terms
(their appendix A.1):

    |G|^2     ~ (B_big |g_big|^2 - B_small |g_small|^2) / (B_big - B_small)
    tr(Sigma) ~ (|g_small|^2 - |g_big|^2) / (1 / B_small - 1 / B_big)

Their ratio is not unbiased, so, as the paper does, the two estimates are averaged over many measurements
(:func:`pooled_noise_scale`) before dividing.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from diffbench.metrics.registry import NEITHER, QUALITY, Metric, declare

declare(
    Metric(
        "noise_scale",
        NEITHER,
        QUALITY,
        "simple gradient noise scale B_simple = tr(Sigma) / |G|^2 (McCandlish et al. 2018), averaged over the "
        "probes since the previous checkpoint",
        True,
        # Shown, not gated: a ratio whose denominator estimate can come out <= 0 (NaN) and varies by 2x between
        # seeds late in training (3104 / NaN / 6461 at seeds 0 / 1 / 2 for one smoke run). Its two components,
        # below, are means of many probes and are gated with their seed spread.
        tolerance="info",
    ),
    Metric("grad_sq_norm", NEITHER, QUALITY, "unbiased estimate of |G|^2, the squared norm of the true gradient", True),
    Metric(
        "grad_trace_cov", NEITHER, QUALITY, "unbiased estimate of tr(Sigma), the per-example gradient variance", True
    ),
)


@dataclass(frozen=True)
class NoiseScaleEstimate:
    """Unbiased estimates of ``|G|^2`` and ``tr(Sigma)`` from one measurement (either may come out negative
    when the signal is small against the noise); ``b_simple`` is their ratio."""

    grad_sq_norm: float
    trace_cov: float

    @property
    def b_simple(self) -> float:
        """``tr(Sigma) / |G|^2``; NaN when the ``|G|^2`` estimate is not positive (no signal resolved)."""
        return self.trace_cov / self.grad_sq_norm if self.grad_sq_norm > 0 else math.nan


def noise_scale_from_norms(small_sq_norm: float, big_sq_norm: float, b_small: int, b_big: int) -> NoiseScaleEstimate:
    """McCandlish et al. 2018, appendix A.1: solve ``E|g_B|^2 = |G|^2 + tr(Sigma) / B`` at ``B_small`` and
    ``B_big`` for ``|G|^2`` and ``tr(Sigma)`` (formulas in the module docstring). ``small_sq_norm`` estimates
    ``E|g_small|^2``, ``big_sq_norm`` estimates ``E|g_big|^2``."""
    if not 1 <= b_small < b_big:
        raise ValueError(f"need 1 <= b_small < b_big, got b_small={b_small}, b_big={b_big}")
    if not (math.isfinite(small_sq_norm) and math.isfinite(big_sq_norm)):
        raise ValueError(f"squared norms must be finite, got {small_sq_norm} and {big_sq_norm}")
    grad_sq = (b_big * big_sq_norm - b_small * small_sq_norm) / (b_big - b_small)
    trace = (small_sq_norm - big_sq_norm) / (1 / b_small - 1 / b_big)
    return NoiseScaleEstimate(grad_sq, trace)


def microbatch_noise_scale(sum_sq_norms: float, grad_sum: Tensor, count: int, batch_size: int) -> NoiseScaleEstimate:
    """The estimator with ``B_small = batch_size`` and ``B_big = count * batch_size`` from ``count`` independent
    micro-batch gradients ``g_1..g_k`` of ``batch_size`` examples each (a mean loss per micro-batch):
    ``|g_small|^2 = (1/k) sum_i |g_i|^2`` (``sum_sq_norms / k``) and ``g_big = (1/k) sum_i g_i`` (``grad_sum /
    k``), the gradient of all ``k * batch_size`` examples. Only running sums are needed, so a model of any size
    costs one gradient's memory."""
    if count < 2:
        raise ValueError(f"need at least 2 micro-batches, got {count}")
    big = grad_sum.double() / count
    return noise_scale_from_norms(sum_sq_norms / count, float(big.square().sum()), batch_size, count * batch_size)


def gradient_noise_scale(parameters: Sequence[Tensor], losses: Iterable[Tensor], batch_size: int) -> NoiseScaleEstimate:
    """:func:`microbatch_noise_scale` of the gradients of ``losses`` (each the mean loss of an independent
    micro-batch of ``batch_size`` examples) with respect to ``parameters``. Uses ``torch.autograd.grad``, so
    the parameters' ``.grad`` (an optimiser's state) is left untouched."""
    parameters = [p for p in parameters if p.requires_grad]
    sum_sq, grad_sum, count = 0.0, None, 0
    for loss in losses:
        grads = torch.autograd.grad(loss, parameters, allow_unused=True)
        pairs = zip(grads, parameters, strict=True)
        flat = (
            torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1) for g, p in pairs]).detach().double()
        )
        sum_sq += float(flat.square().sum())
        grad_sum = flat if grad_sum is None else grad_sum + flat
        count += 1
    if grad_sum is None:
        raise ValueError("no micro-batch losses were given")
    return microbatch_noise_scale(sum_sq, grad_sum, count, batch_size)


def pooled_noise_scale(estimates: Iterable[NoiseScaleEstimate]) -> NoiseScaleEstimate:
    """The mean of each term over several measurements (each mean stays unbiased); the ratio of the means is
    the noise scale over that window, as McCandlish et al. average ``|G|^2`` and ``tr(Sigma)`` separately."""
    estimates = list(estimates)
    if not estimates:
        raise ValueError("no noise-scale estimates to pool")
    return NoiseScaleEstimate(
        sum(e.grad_sq_norm for e in estimates) / len(estimates), sum(e.trace_cov for e in estimates) / len(estimates)
    )


def critical_batch_fit(batch_sizes: Sequence[float], steps: Sequence[float]) -> tuple[float, float]:
    """``(S_min, B_crit)`` of McCandlish et al.'s step/batch trade-off ``S = S_min (1 + B_crit / B)`` (their
    eq. 2.11 with ``B_noise = B_crit = E_min / S_min``), fitted by least squares as a line in ``1 / B``:
    ``S = a + b / B`` with ``S_min = a`` and ``B_crit = b / a``. Needs at least two distinct batch sizes; returns
    NaN for ``B_crit`` when the fitted line has no positive intercept and slope (no trade-off resolved: steps
    falling like ``1 / B`` or faster over the batches given)."""
    b = torch.tensor([float(v) for v in batch_sizes], dtype=torch.float64)
    s = torch.tensor([float(v) for v in steps], dtype=torch.float64)
    if b.shape != s.shape or b.ndim != 1:
        raise ValueError(f"batch_sizes and steps must be 1-D of one length, got {tuple(b.shape)}, {tuple(s.shape)}")
    if len(torch.unique(b)) < 2 or not bool((b > 0).all()) or not bool(torch.isfinite(s).all()):
        raise ValueError(f"need >= 2 distinct positive batch sizes and finite steps, got {b.tolist()}, {s.tolist()}")
    design = torch.stack([torch.ones_like(b), 1 / b], dim=1)
    a, slope = torch.linalg.lstsq(design, s[:, None]).solution[:, 0].tolist()
    resolved = a > 1e-9 * float(s.abs().max()) and slope > 0  # an intercept at rounding level is 0: 1/B scaling
    return a, (slope / a if resolved else math.nan)

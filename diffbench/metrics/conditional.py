"""Metrics of class-conditional samples: does a sample show the class it was asked for, and how varied are the
samples of one class? Both read an independent classifier trained on clean real data (the domain classifier),
never the model's own labels."""

from __future__ import annotations

import torch
from torch import Tensor

from diffbench.metrics.registry import HIGHER, NEITHER, QUALITY, Metric, declare

declare(
    Metric("class_accuracy", HIGHER, QUALITY, "share of samples an independent classifier assigns the asked class"),
    Metric(
        "class_diversity",
        NEITHER,
        QUALITY,
        "mean pairwise feature distance of same-class samples, averaged over classes (guidance trades it away)",
    ),
)


def class_accuracy(logits: Tensor, labels: Tensor) -> float:
    """``mean_i [argmax_k logits_ik == y_i]`` for ``logits`` ``[N, K]`` and requested labels ``[N]``."""
    if logits.ndim != 2 or labels.shape != (len(logits),):
        raise ValueError(f"need logits [N, K] and labels [N], got {list(logits.shape)} and {list(labels.shape)}")
    if len(labels) == 0:
        raise ValueError("class accuracy of an empty sample set is undefined")
    return float((logits.argmax(dim=1).cpu() == labels.cpu()).double().mean())


def class_diversity(features: Tensor, labels: Tensor) -> float:
    """``mean_k mean_{i != j in class k} |f_i - f_j|``: the average Euclidean distance between two distinct
    samples of the same class in feature space ``[N, d]``, averaged over the classes that have at least two
    samples (float64). 0 when every class collapses to one point."""
    if features.ndim != 2 or labels.shape != (len(features),):
        raise ValueError(f"need features [N, d] and labels [N], got {list(features.shape)} and {list(labels.shape)}")
    f, y = features.detach().double().cpu(), labels.cpu()
    per_class = []
    for k in y.unique():
        members = f[y == k]
        n = len(members)
        if n < 2:
            continue
        per_class.append(float(torch.cdist(members, members).sum() / (n * (n - 1))))  # diagonal is 0
    if not per_class:
        raise ValueError("class diversity needs a class with at least two samples")
    return sum(per_class) / len(per_class)

"""Class accuracy and per-class diversity against brute force and closed forms."""

from __future__ import annotations

import itertools

import pytest
import torch

from diffbench.metrics.conditional import class_accuracy, class_diversity


def test_class_accuracy_counts_argmax_hits():
    logits = torch.tensor([[2.0, 1.0], [0.0, 3.0], [5.0, -1.0], [0.1, 0.2]])
    assert class_accuracy(logits, torch.tensor([0, 1, 1, 1])) == pytest.approx(0.75)


def test_class_diversity_is_the_mean_pairwise_distance_within_classes():
    gen = torch.Generator().manual_seed(0)
    features, labels = torch.randn(12, 5, generator=gen, dtype=torch.float64), torch.arange(12) % 3
    per_class = []
    for k in range(3):
        members = features[labels == k]
        pairs = [float((a - b).norm()) for a, b in itertools.permutations(members, 2)]
        per_class.append(sum(pairs) / len(pairs))
    assert class_diversity(features, labels) == pytest.approx(sum(per_class) / 3, rel=1e-12)


def test_a_collapsed_class_has_no_diversity_and_scaling_scales_it():
    labels = torch.tensor([0, 0, 1, 1])
    assert class_diversity(torch.tensor([[1.0, 1.0], [1.0, 1.0], [0.0, 2.0], [0.0, 2.0]]), labels) == 0.0
    features = torch.randn(4, 3, generator=torch.Generator().manual_seed(1))
    assert class_diversity(3 * features, labels) == pytest.approx(3 * class_diversity(features, labels))


def test_bad_shapes_and_empty_sets_fail_clearly():
    with pytest.raises(ValueError, match=r"need logits \[N, K\] and labels \[N\]"):
        class_accuracy(torch.zeros(3), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="at least two samples"):
        class_diversity(torch.zeros(2, 3), torch.tensor([0, 1]))

"""Metrics: distribution distances, sample statistics and GMM mode coverage (``distribution``)."""

from diffbench.metrics.distribution import (
    ModeStats,
    mmd_linear,
    mmd_rbf,
    mode_coverage,
    noise_prediction_loss,
    sample_stats,
    sliced_wasserstein,
    wasserstein,
)

__all__ = [
    "ModeStats",
    "mmd_linear",
    "mmd_rbf",
    "mode_coverage",
    "noise_prediction_loss",
    "sample_stats",
    "sliced_wasserstein",
    "wasserstein",
]

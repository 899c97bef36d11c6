"""Metrics: distribution distances, sample statistics and GMM mode coverage (``distribution``); trajectory
comparisons and the teacher's PCA frame (``trajectory``); FID / KID on Inception or domain features (``fid``).

Names are resolved lazily (PEP 562): ``import diffbench.metrics.registry`` must not import torch, SciPy or the FID
stack, so ``diffbench compare`` and ten xdist workers pay only for what they use.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "DomainFeatures": "fid",
    "FIDResult": "fid",
    "FIDSampleSizeWarning": "fid",
    "FIDWeightsUnavailable": "fid",
    "HIGHER_IS_BETTER": "trajectory",
    "InceptionFeatures": "fid",
    "ModeStats": "distribution",
    "TeacherFrame": "trajectory",
    "compare_trajectories": "trajectory",
    "directional_consistency": "trajectory",
    "domain_features": "fid",
    "endpoint_distance": "trajectory",
    "endpoint_wasserstein": "trajectory",
    "explained_variance_curve": "trajectory",
    "fid": "fid",
    "frechet_distance": "fid",
    "kid": "fid",
    "mmd_linear": "distribution",
    "mmd_rbf": "distribution",
    "mode_coverage": "distribution",
    "noise_prediction_loss": "distribution",
    "normalize_for_radar": "trajectory",
    "path_length": "trajectory",
    "path_length_similarity": "trajectory",
    "sample_stats": "distribution",
    "sliced_wasserstein": "distribution",
    "stepwise_cosine": "trajectory",
    "stepwise_distance": "trajectory",
    "stepwise_wasserstein": "trajectory",
    "trajectory_mse": "trajectory",
    "wasserstein": "distribution",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> object:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'diffbench.metrics' has no attribute {name!r}")
    return getattr(importlib.import_module(f"diffbench.metrics.{_EXPORTS[name]}"), name)

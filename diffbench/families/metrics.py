"""metrics: what do the FID numbers cost, and how far can they be trusted at a given sample size?

No generative model is needed: the "samples" are real digits (train split) plus Gaussian noise of a known std,
scored against cached statistics of the held-out test split. Domain FID (features of a classifier trained on
digits) is timed on 1,000 images with the real statistics already cached; real-vs-real FID over a range of n
shows FID's sample-size bias (and KID's lack of it); Inception FID (pytorch-fid's network) runs when its weights
are on disk (``--fid-weights PATH`` or the torch hub cache).
"""

from __future__ import annotations

import time
import warnings

import torch

from diffbench.cache import ArtifactCache
from diffbench.data import DataConfig, load_dataset
from diffbench.families import Family, Measurements, Option
from diffbench.metrics.fid import (
    FIDResult,
    FIDSampleSizeWarning,
    InceptionFeatures,
    domain_features,
    fid,
    real_statistics,
)
from diffbench.metrics.registry import LOWER, TIMING, Metric, declare
from diffbench.profiles import Profile

declare(
    Metric("fid_seconds", LOWER, TIMING, "wall time of one FID evaluation with cached real statistics", True, "timing"),
)

DIGITS = DataConfig("digits")
REFERENCE_SPLIT = "test"  # held out: the samples are drawn from the train split
NUM_SAMPLES = 1000
NOISE_STDS = (0.0, 0.1, 0.25, 0.5)
N_GRID = (50, 100, 250, 500, 1000)
INCEPTION_SAMPLES = 200  # 299x299 Inception forwards: ~0.15 s per image on a laptop CPU
INCEPTION_BATCH = 50
MAX_FID_SECONDS = 20.0

FID_WEIGHTS = Option(
    "--fid-weights",
    "pytorch-fid's Inception weights (default: the torch hub cache; see `python -m diffbench.inception`)",
    metavar="PATH",
)


def noisy_digits(n: int, std: float, seed: int) -> torch.Tensor:
    """``n`` train digits (a seeded random subset) plus N(0, std^2) noise, clipped to [-1, 1]."""
    generator = torch.Generator().manual_seed(seed)
    train = load_dataset(DIGITS, "train").x
    x = train[torch.randperm(len(train), generator=generator)[:n]]
    return (x + std * torch.randn(x.shape, generator=generator)).clamp(-1, 1)


def _fid(samples: torch.Tensor, extractor, cache: ArtifactCache, seed: int, **kwargs) -> FIDResult:
    return fid(
        samples,
        DIGITS,
        extractor,
        split=REFERENCE_SPLIT,
        cache=cache,
        generator=torch.Generator().manual_seed(seed),
        **kwargs,
    )


def _rows(result: FIDResult, **params) -> Measurements:
    """Every metric of ``result`` under the sample sizes it was measured at; the extractor as context."""
    out = Measurements({"n": result.n_samples, "n_real": result.n_real, **params})
    out.update(result.metrics(), context={"extractor": result.extractor})
    return out


def domain_fid(noise_std: float, profile: Profile, device: torch.device, cache: ArtifactCache) -> Measurements:
    """Domain FID of 1,000 noisy digits against cached real statistics, its wall time and the classifier's
    held-out accuracy."""
    extractor = domain_features(DIGITS, cache, device, seed=profile.seed)
    real_statistics(DIGITS, extractor, split=REFERENCE_SPLIT, cache=cache)  # cached before timing
    samples = noisy_digits(NUM_SAMPLES, noise_std, profile.seed)
    started = time.perf_counter()
    result = _fid(samples, extractor, cache, profile.seed)
    seconds = time.perf_counter() - started
    out = _rows(result, noise_std=noise_std)
    out.add("fid_seconds", seconds)
    out.add("classifier_accuracy", extractor.accuracy)
    return out


def fid_vs_sample_size(profile: Profile, device: torch.device, cache: ArtifactCache) -> list[Measurements]:
    """Real-vs-real FID at every n of ``N_GRID`` (its bias ~ 1/n) with KID (unbiased at every n)."""
    extractor = domain_features(DIGITS, cache, device, seed=profile.seed)
    cells = []
    for n in N_GRID:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FIDSampleSizeWarning)  # n <= dims is part of the sweep
            result = _fid(noisy_digits(n, 0.0, profile.seed + n), extractor, cache, profile.seed)
        cells.append(_rows(result, noise_std=0.0, singular=n <= result.dims))
    return cells


def inception_fid(
    weights: str | None, profile: Profile, device: torch.device, cache: ArtifactCache
) -> tuple[Measurements, FIDResult]:
    """pytorch-fid's Inception FID of noisy digits; raises ``FIDWeightsUnavailable`` without the weights."""
    extractor = InceptionFeatures(weights, device=device)
    real_statistics(DIGITS, extractor, split=REFERENCE_SPLIT, cache=cache, batch_size=INCEPTION_BATCH)
    samples = noisy_digits(INCEPTION_SAMPLES, 0.1, profile.seed)
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FIDSampleSizeWarning)  # 2048 dims: FID is biased at this n
        result = _fid(samples, extractor, cache, profile.seed, batch_size=INCEPTION_BATCH)
    seconds = time.perf_counter() - started
    out = _rows(result, noise_std=0.1)
    out.add("fid_seconds", seconds)
    return out, result


FAMILY = Family(
    name="metrics",
    question="cost and calibration of the metrics themselves",
    options=(FID_WEIGHTS,),  # no sections of its own: the generic table (every metric by noise std and n) is its report
)

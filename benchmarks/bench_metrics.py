"""What do the FID numbers cost, and how far can they be trusted at a given sample size?

No generative model is needed: the "samples" are real digits (train split) plus Gaussian noise of a known std,
scored against cached statistics of the held-out test split. Domain FID (features of a classifier trained on
digits) is timed on 1,000 images with the real statistics already cached; real-vs-real FID over a range of n
shows FID's sample-size bias (and KID's lack of it); Inception FID (pytorch-fid's network) runs when its weights
are on disk (``--fid-weights PATH`` or the torch hub cache) and is skipped with one line otherwise.
"""

from __future__ import annotations

import math
import time
import warnings

import pytest
import torch

from diffbench.data import DataConfig, load_dataset
from diffbench.metrics.fid import (
    FIDSampleSizeWarning,
    FIDWeightsUnavailable,
    InceptionFeatures,
    domain_features,
    fid,
    real_statistics,
)

pytestmark = pytest.mark.metrics

DIGITS = DataConfig("digits")
REFERENCE_SPLIT = "test"  # held out: the samples are drawn from the train split
NUM_SAMPLES = 1000
NOISE_STDS = (0.0, 0.1, 0.25, 0.5)
N_GRID = (50, 100, 250, 500, 1000)
INCEPTION_SAMPLES = 200  # 299x299 Inception forwards: ~0.15 s per image on a laptop CPU
MAX_FID_SECONDS = 20.0


def noisy_digits(n: int, std: float, seed: int) -> torch.Tensor:
    """``n`` train digits (a seeded random subset) plus N(0, std^2) noise, clipped to [-1, 1]."""
    generator = torch.Generator().manual_seed(seed)
    train = load_dataset(DIGITS, "train").x
    x = train[torch.randperm(len(train), generator=generator)[:n]]
    return (x + std * torch.randn(x.shape, generator=generator)).clamp(-1, 1)


def record_result(record, result, extra: dict[str, float] | None = None, **params) -> None:
    """Every metric of ``result`` (and ``extra``) under the same cell parameters, so they share a table row."""
    params = {"n": result.n_samples, "n_real": result.n_real, "extractor": result.extractor, **params}
    for name, value in {**result.metrics(), **(extra or {})}.items():
        record(name, value, **params)


@pytest.mark.parametrize("noise_std", NOISE_STDS, ids=[f"digits-noise{s:.2f}" for s in NOISE_STDS])
def test_domain_fid(noise_std, profile, device, artifacts, record):
    """Domain FID of 1,000 noisy digits against cached real statistics, and its wall time."""
    extractor = domain_features(DIGITS, artifacts, device, seed=profile.seed)
    real_statistics(DIGITS, extractor, split=REFERENCE_SPLIT, cache=artifacts)  # cached before timing
    samples = noisy_digits(NUM_SAMPLES, noise_std, profile.seed)
    started = time.perf_counter()
    result = fid(
        samples,
        DIGITS,
        extractor,
        split=REFERENCE_SPLIT,
        cache=artifacts,
        generator=torch.Generator().manual_seed(profile.seed),
    )
    seconds = time.perf_counter() - started
    extra = {"fid_seconds": seconds, "classifier_accuracy": extractor.accuracy}
    record_result(record, result, extra, noise_std=noise_std)

    assert all(math.isfinite(v) for v in result.metrics().values()), result
    assert result.ci_low <= result.value <= result.ci_high
    assert extractor.accuracy > 0.9
    assert seconds < MAX_FID_SECONDS, f"domain FID of {NUM_SAMPLES} images took {seconds:.1f} s"


def test_fid_vs_sample_size(profile, device, artifacts, record):
    """Real-vs-real FID falls with n (its bias ~ 1/n); KID is unbiased at every n."""
    extractor = domain_features(DIGITS, artifacts, device, seed=profile.seed)
    values = {}
    for n in N_GRID:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FIDSampleSizeWarning)  # n <= dims is part of the sweep
            result = fid(
                noisy_digits(n, 0.0, profile.seed + n),
                DIGITS,
                extractor,
                split=REFERENCE_SPLIT,
                cache=artifacts,
                generator=torch.Generator().manual_seed(profile.seed),
            )
        record_result(record, result, noise_std=0.0, singular=n <= result.dims)
        values[n] = result.value
        assert all(math.isfinite(v) for v in result.metrics().values()), result
    assert values[max(N_GRID)] < values[min(N_GRID)], values


def test_inception_fid(request, profile, device, artifacts, record):
    """pytorch-fid's Inception FID of noisy digits (the field's reference feature space)."""
    try:
        extractor = InceptionFeatures(request.config.getoption("fid_weights"), device=device)
    except FIDWeightsUnavailable as err:
        pytest.skip(str(err))
    real_statistics(DIGITS, extractor, split=REFERENCE_SPLIT, cache=artifacts, batch_size=50)
    samples = noisy_digits(INCEPTION_SAMPLES, 0.1, profile.seed)
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FIDSampleSizeWarning)  # 2048 dims: FID is biased at this n
        result = fid(
            samples,
            DIGITS,
            extractor,
            split=REFERENCE_SPLIT,
            cache=artifacts,
            batch_size=50,
            generator=torch.Generator().manual_seed(profile.seed),
        )
    seconds = time.perf_counter() - started
    record_result(record, result, {"fid_seconds": seconds}, noise_std=0.1)
    assert all(math.isfinite(v) for v in result.metrics().values()), result
    assert result.value > 0

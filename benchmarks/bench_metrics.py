"""What do the FID numbers cost, and how far can they be trusted at a given sample size?

Real digits plus Gaussian noise of a known std, scored against cached statistics of the held-out split
(:mod:`diffbench.families.metrics`): domain-FID time for 1,000 images, FID vs noise, FID and KID vs sample size,
and pytorch-fid's Inception FID when its weights are on disk (skipped with one line otherwise).
"""

from __future__ import annotations

import math

import pytest

from diffbench.families import metrics as family
from diffbench.metrics.fid import FIDWeightsUnavailable

pytestmark = pytest.mark.metrics


@pytest.mark.parametrize("noise_std", family.NOISE_STDS, ids=[f"digits-noise{s:.2f}" for s in family.NOISE_STDS])
def test_domain_fid(noise_std, profile, device, artifacts, record):
    """Domain FID of 1,000 noisy digits against cached real statistics, and its wall time."""
    result = family.domain_fid(noise_std, profile, device, artifacts)
    record.result(result)
    assert all(math.isfinite(value) for _, value, _, _ in result), list(result)
    assert result["classifier_accuracy"] > 0.9
    seconds = result["fid_seconds"]
    assert seconds < family.MAX_FID_SECONDS, f"domain FID of {family.NUM_SAMPLES} images took {seconds:.1f} s"


def test_fid_vs_sample_size(profile, device, artifacts, record):
    """Real-vs-real FID falls with n (its bias ~ 1/n); KID is unbiased at every n."""
    cells = family.fid_vs_sample_size(profile, device, artifacts)
    for cell in cells:
        record.result(cell)
        assert all(math.isfinite(value) for _, value, _, _ in cell), list(cell)
    assert cells[-1]["fid"] < cells[0]["fid"], [cell["fid"] for cell in cells]


def test_inception_fid(options, profile, device, artifacts, record):
    """pytorch-fid's Inception FID of noisy digits (the field's reference feature space)."""
    try:
        result, fid = family.inception_fid(options["fid_weights"], profile, device, artifacts)
    except FIDWeightsUnavailable as err:
        pytest.skip(str(err))
    record.result(result)
    assert all(math.isfinite(value) for _, value, _, _ in result), list(result)
    assert fid.value > 0

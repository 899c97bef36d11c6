"""What does classifier-free guidance do to trajectories, and to a small student versus the teacher? (seeds 000/001)

Cells are (model, w): the size_factors teacher and students (shared artifacts) guided by CFG at scale w, from the
same noise and labels (:mod:`diffbench.families.cfg`). w = 1 is the conditional model without guidance.
"""

from __future__ import annotations

import math

import pytest
import torch

from diffbench.families import cfg as family
from diffbench.profiles import get_profile
from diffbench.pytest_plugin import option_values

pytestmark = pytest.mark.cfg


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if {"model_id", "w"} <= set(metafunc.fixturenames):
        cells = family.cells(get_profile(metafunc.config.getoption("profile")), option_values(metafunc.config))
        metafunc.parametrize("model_id,w", cells, ids=[family.cell_id(m, w) for m, w in cells])


def test_guided_trajectories(model_id, w, profile, data_root, device, artifacts, record):
    """Guided vs unguided trajectories (and a student vs the teacher under the same w) from the same noise."""
    result, guided, unguided = family.guided_trajectories(model_id, w, profile, device, artifacts, data_root)
    record.result(result)
    assert torch.equal(guided[0], unguided[0]), "guided and unguided trajectories must start from the same noise"
    assert all(math.isfinite(value) for _, value, _, _ in result), list(result)
    if w == family.REFERENCE_W:  # w = 1 is the unguided model itself
        assert torch.equal(guided, unguided)


def test_guided_quality(model_id, w, profile, data_root, device, artifacts, record):
    """Class accuracy, per-class diversity and domain FID of class-balanced samples at w."""
    result = family.guided_quality(model_id, w, profile, device, artifacts, data_root)
    record.result(result)
    assert 0 <= result["class_accuracy"] <= 1 and result["class_diversity"] >= 0
    assert math.isfinite(result["fid"]) and result["fid"] >= 0

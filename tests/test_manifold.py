"""Improved precision and recall (Kynkäänniemi et al. 2019) against brute force, known shifts and mode dropping."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from diffbench.data import GMMSpec
from diffbench.metrics.manifold import PrecisionRecall, knn_radii, precision_recall
from diffbench.metrics.registry import HIGHER, METRICS, QUALITY


def _normal(n: int, d: int, seed: int) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _sq_brute(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``|a_i - b_j|^2`` as the literal sum over coordinates."""
    return ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)


def _radii_brute(x: np.ndarray, k: int) -> np.ndarray:
    """Squared k-th neighbour distance: sorted row of ``|x_i - x_j|^2`` over all j; index 0 is the point itself."""
    return np.sort(_sq_brute(x, x), axis=1)[:, k]


def _precision_recall_brute(real: np.ndarray, fake: np.ndarray, k: int) -> tuple[float, float]:
    """The paper's eqs. 1-2 as an O(n m) double loop in numpy."""
    precision = float((_sq_brute(fake, real) <= _radii_brute(real, k)[None, :]).any(axis=1).mean())
    recall = float((_sq_brute(real, fake) <= _radii_brute(fake, k)[None, :]).any(axis=1).mean())
    return precision, recall


# ------------------------------------------------------------------------------------------ identity and shifts


@pytest.mark.parametrize("d", [2, 8, 64])
def test_a_set_against_itself_is_one_exactly(d: int) -> None:
    x = _normal(300, d, seed=d)
    result = precision_recall(x, x.clone())
    assert result == PrecisionRecall(precision=1.0, recall=1.0, k=3, n_real=300, n_fake=300)


def test_duplicates_give_zero_radius_balls_that_still_hold_their_copies() -> None:
    """Every point repeated k + 1 times: all radii are 0, and a copy lies in its zero-radius ball (tie = inside).
    The Gram formula alone rounds some of these zero distances to a positive number (checked first, so this test
    exercises the direct recomputation), which would put copies outside."""
    base = _normal(40, 96, seed=5) * 0.1 + 3.7  # offset: |x|^2 >> |x - y|^2, the Gram formula's worst case
    x = base.repeat_interleave(4, dim=0)
    sq = x.square().sum(1)
    gram = sq[:, None] + sq[None, :] - 2 * x @ x.T
    same = (x[:, None, :] == x[None, :, :]).all(-1)
    assert bool((gram[same] > 0).any()), "the Gram formula should round some duplicate distances above 0"

    assert torch.equal(knn_radii(x, k=3), torch.zeros(len(x), dtype=torch.float64))
    assert knn_radii(x, k=4).min() > 0  # the 4th neighbour is another base point
    result = precision_recall(x, x[torch.randperm(len(x), generator=torch.Generator().manual_seed(0))])
    assert (result.precision, result.recall) == (1.0, 1.0)
    # A copy nudged off its duplicates leaves their zero-radius balls.
    shifted = precision_recall(x, x + 1e-9)
    assert (shifted.precision, shifted.recall) == (0.0, 0.0)


@pytest.mark.parametrize("d", [2, 8])
def test_shifted_copy_falls_monotonically_to_zero(d: int) -> None:
    """fake = real + s * u, ``|u| = 1``, s in units of the real std (1). Averaged over three draws (a single small
    draw is noisy below 1 std); both numbers never rise with the shift, and vanish 8 std away."""
    shifts = (0.0, 0.5, 1.0, 2.0, 4.0, 8.0)
    u = torch.ones(d, dtype=torch.float64) / math.sqrt(d)
    precision, recall = np.zeros(len(shifts)), np.zeros(len(shifts))
    for seed in range(3):
        x = _normal(400, d, seed=seed)
        for i, s in enumerate(shifts):
            result = precision_recall(x, x + s * u)
            precision[i] += result.precision / 3
            recall[i] += result.recall / 3
    for values in (precision, recall):
        assert values[0] == 1.0
        assert np.all(np.diff(values) <= 0), values
        assert values[3] < 0.95  # 2 std
        assert values[4] < 0.5  # 4 std
        assert values[5] <= 0.01  # 8 std: disjoint manifolds


def test_precision_and_recall_swap_when_the_sets_swap() -> None:
    real, fake = _normal(200, 3, seed=1), _normal(150, 3, seed=2) * 1.5 + 0.3
    forward, backward = precision_recall(real, fake), precision_recall(fake, real)
    assert (forward.precision, forward.recall) == (backward.recall, backward.precision)
    assert forward.precision != forward.recall  # asymmetric data, so the swap is a real check


# ------------------------------------------------------------------------------------------- fidelity vs coverage


def _gmm(n: int, seed: int, modes: tuple[int, ...] = tuple(range(8)), spread: float = 1.0) -> torch.Tensor:
    """Samples of the seed-002 ring (8 modes, radius 5, std 0.2) restricted to ``modes``, std scaled by ``spread``."""
    spec, g = GMMSpec(), torch.Generator().manual_seed(seed)
    labels = torch.as_tensor(modes)[torch.randint(len(modes), (n,), generator=g)]
    return spec.means[labels] + spread * spec.std * torch.randn(n, 2, generator=g)


def test_mode_dropping_keeps_precision_and_loses_recall() -> None:
    real = _gmm(1000, seed=0)
    faithful = precision_recall(real, _gmm(1000, seed=1))
    dropped = precision_recall(real, _gmm(1000, seed=2, modes=(0, 4)))  # 2 of 8 modes
    assert faithful.precision > 0.9 and faithful.recall > 0.9
    assert dropped.precision > 0.9
    assert 0.15 < dropped.recall < 0.35  # ~ 2/8 of the real points are reached


def test_overdispersion_loses_precision_and_keeps_recall() -> None:
    real = _gmm(1000, seed=0)
    blurred = precision_recall(real, _gmm(1000, seed=3, spread=3.0))  # every mode, 3x too wide
    assert blurred.precision < 0.6
    assert blurred.recall > 0.9


# ----------------------------------------------------------------------------------------------- brute force


@given(
    data=st.data(),
    k=st.integers(1, 4),
    d=st.integers(1, 4),
    batch_size=st.integers(1, 13),
)
def test_matches_brute_force_on_integer_lattices(data: st.DataObject, k: int, d: int, batch_size: int) -> None:
    """Small integer coordinates: every distance is exact in float64, so duplicates and ties abound and the
    result must equal the brute force exactly, ties counted as inside."""
    n, m = data.draw(st.integers(k + 1, 12), label="n"), data.draw(st.integers(k + 1, 12), label="m")
    real = data.draw(arrays(np.float64, (n, d), elements=st.integers(-2, 2).map(float)), label="real")
    fake = data.draw(arrays(np.float64, (m, d), elements=st.integers(-2, 2).map(float)), label="fake")
    result = precision_recall(real, fake, k=k, batch_size=batch_size)
    assert (result.precision, result.recall) == _precision_recall_brute(real, fake, k)
    np.testing.assert_array_equal(knn_radii(real, k, batch_size=batch_size).numpy(), np.sqrt(_radii_brute(real, k)))


@pytest.mark.parametrize(("n", "m", "d", "k"), [(30, 40, 2, 1), (50, 35, 5, 3), (60, 60, 16, 5), (25, 70, 3, 10)])
def test_matches_brute_force_on_gaussians(n: int, m: int, d: int, k: int) -> None:
    real = _normal(n, d, seed=n).numpy()
    fake = (_normal(m, d, seed=m + 1000) * 1.3 + 4 / math.sqrt(d)).numpy()  # wider, shifted by 4 real std
    result = precision_recall(real, fake, k=k)
    assert (result.precision, result.recall) == _precision_recall_brute(real, fake, k)
    assert 0 < result.precision < 1 and 0 < result.recall < 1  # neither trivially 0 nor 1
    np.testing.assert_allclose(knn_radii(real, k).numpy(), np.sqrt(_radii_brute(real, k)), rtol=1e-12)


def test_a_tie_at_the_radius_counts_as_inside() -> None:
    """On a line with k = 1: real 0, 1, 2, 3 (every radius 1), fake 4, 5 (both radii 1). Fake 4 is exactly 1 from
    real 3 and real 3 exactly 1 from fake 4: both inside (with ``<`` both numbers would drop to 0); fake 5 and
    real 0..2 are farther. Whole numbers keep the arithmetic exact."""
    real = torch.tensor([[0.0], [1.0], [2.0], [3.0]])
    fake = torch.tensor([[4.0], [5.0]])
    result = precision_recall(real, fake, k=1)
    assert (result.precision, result.recall) == (0.5, 0.25)
    nudged = precision_recall(real, fake + 1e-6, k=1)
    assert (nudged.precision, nudged.recall) == (0.0, 0.0)


# ------------------------------------------------------------------------------------------ chunking and inputs


def test_chunked_equals_unchunked() -> None:
    real, fake = _normal(301, 6, seed=11), _normal(257, 6, seed=12) + 0.3
    whole = precision_recall(real, fake, k=4, batch_size=10_000)
    radii = knn_radii(real, 4, batch_size=10_000)
    assert 0.2 < whole.precision < 0.98 and 0.2 < whole.recall < 0.98
    for batch_size in (1, 7, 64, 256, 300):
        assert precision_recall(real, fake, k=4, batch_size=batch_size) == whole
        assert torch.equal(knn_radii(real, 4, batch_size=batch_size), radii)


def test_accepts_numpy_float32_and_images() -> None:
    real, fake = _normal(80, 12, seed=3), _normal(90, 12, seed=4) + 0.5
    reference = precision_recall(real, fake)
    assert precision_recall(real.numpy(), fake.numpy()) == reference
    images = precision_recall(real.reshape(80, 3, 2, 2), fake.reshape(90, 3, 2, 2))
    assert images == reference
    as_float32 = precision_recall(real.float(), fake.float())
    assert as_float32 == precision_recall(real.float().double(), fake.float().double())
    assert (reference.n_real, reference.n_fake, reference.k) == (80, 90, 3)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"k": 0}, "k must be an integer >= 1, got 0"),
        ({"k": -2}, "got -2"),
        ({"k": 2.5}, "got 2.5"),
        ({"k": 10}, "real needs at least k \\+ 1 = 11 points for k = 10, got 10"),
        ({"fake": _normal(3, 4, seed=0)}, "fake needs at least k \\+ 1 = 4 points for k = 3, got 3"),
        ({"fake": _normal(20, 5, seed=0)}, "same dimension, got 4 and 5"),
        ({"real": torch.zeros(10)}, "real must be \\[n, d\\].*got shape \\(10,\\)"),
        ({"fake": torch.zeros(20, 0)}, "fake has no feature dimensions"),
        ({"batch_size": 0}, "batch_size must be an integer >= 1, got 0"),
    ],
)
def test_bad_input_raises_naming_the_value(kwargs: dict, match: str) -> None:
    args = {"real": _normal(10, 4, seed=1), "fake": _normal(20, 4, seed=2)} | kwargs
    with pytest.raises(ValueError, match=match):
        precision_recall(**args)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("which", ["real", "fake"])
def test_non_finite_input_raises(bad: float, which: str) -> None:
    args = {"real": _normal(10, 4, seed=1), "fake": _normal(20, 4, seed=2)}
    args[which][3, 2] = bad
    with pytest.raises(ValueError, match=f"{which} contains 1 NaN or inf values"):
        precision_recall(**args)


def test_knn_radii_validates_k() -> None:
    with pytest.raises(ValueError, match="x needs at least k \\+ 1 = 6 points for k = 5, got 5"):
        knn_radii(_normal(5, 2, seed=0), k=5)


def test_declared_in_the_registry() -> None:
    for name in ("precision", "recall"):
        metric = METRICS[name]
        assert (metric.direction, metric.kind, metric.tolerance) == (HIGHER, QUALITY, "default")
        assert "Kynkaanniemi et al. 2019" in metric.estimates

"""2-D embeddings (PCA, t-SNE, optional UMAP) and trustworthiness (Venna & Kaski 2001)."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from scipy.spatial.distance import pdist, squareform

from diffbench.metrics.embedding import (
    MIN_POINTS,
    EmbeddingUnavailable,
    embed,
    pca_2d,
    trustworthiness,
    tsne_perplexity,
)
from diffbench.metrics.registry import HIGHER, METRICS, QUALITY


def _plane(n: int = 200, d: int = 10, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` points on a random 2-D plane in ``R^d``: ``x = z Q^T + c`` with orthonormal ``Q`` ``[d, 2]``, so the
    plane coordinates ``z`` (std 3 and 1: distinct principal axes) are an isometric copy. Returns ``(x, z)``."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 2)) * [3.0, 1.0]
    q, _ = np.linalg.qr(rng.normal(size=(d, 2)))
    return z @ q.T + rng.normal(size=d), z


def _trustworthiness_brute(x: np.ndarray, e: np.ndarray, k: int) -> float:
    """Venna & Kaski 2001 as written: ``1 - 2/(n k (2n - 3k - 1)) sum_i sum_{j in U_k(i)} (r(i, j) - k)``."""
    n = len(x)
    dx, de = squareform(pdist(x)), squareform(pdist(e))
    np.fill_diagonal(dx, np.inf)
    np.fill_diagonal(de, np.inf)
    rank = np.argsort(np.argsort(dx, axis=1), axis=1) + 1  # rank[i, j] = 1 for i's nearest neighbour in x
    total = 0
    for i in range(n):
        near_x = set(np.argsort(dx[i])[:k].tolist())
        total += sum(rank[i, j] - k for j in np.argsort(de[i])[:k] if j not in near_x)
    return 1 - 2 / (n * k * (2 * n - 3 * k - 1)) * total


# ----------------------------------------------------------------------------------------------------- PCA


def test_pca_of_planar_points_is_an_isometry_of_the_plane() -> None:
    x, z = _plane()
    e = embed(x, "pca")
    assert e.shape == (200, 2) and e.dtype == np.float64
    np.testing.assert_allclose(pdist(e), pdist(z), rtol=1e-10)  # distances of the plane coordinates kept
    assert trustworthiness(x, e) >= 0.999
    assert e[:, 0].var() > 4 * e[:, 1].var()  # first axis: the std-3 direction


def test_pca_matches_sklearn_up_to_sign_and_fixes_the_sign() -> None:
    from sklearn.decomposition import PCA

    rng = np.random.default_rng(1)
    x = rng.normal(size=(120, 6)) * [5.0, 3.0, 1.0, 0.5, 0.2, 0.1] @ np.linalg.qr(rng.normal(size=(6, 6)))[0] + 2.0
    e = embed(x, "pca")
    np.testing.assert_allclose(np.abs(e), np.abs(PCA(2).fit_transform(x)), atol=1e-9)
    loadings = np.linalg.lstsq(x - x.mean(0), e, rcond=None)[0]  # [6, 2]: the axes the embedding used
    biggest = loadings[np.abs(loadings).argmax(axis=0), [0, 1]]
    assert np.all(biggest > 0), biggest
    # The sign rule depends only on the axes, which -x shares with x: the picture is mirrored, not re-signed.
    np.testing.assert_allclose(embed(-x, "pca"), -e, atol=1e-9)
    order = rng.permutation(len(x))
    np.testing.assert_allclose(embed(x[order], "pca"), e[order], atol=1e-9)


def test_pca_accepts_torch_and_images() -> None:
    x, _ = _plane(n=60, d=12)
    images = torch.as_tensor(x).reshape(60, 3, 2, 2)
    np.testing.assert_array_equal(embed(images, "pca"), embed(x, "pca"))
    np.testing.assert_array_equal(pca_2d(x), embed(x, "pca"))


# --------------------------------------------------------------------------------------------------- t-SNE


def test_tsne_of_planar_points_is_trustworthy() -> None:
    x, _ = _plane()
    e = embed(x, "tsne", seed=0)
    assert e.shape == (200, 2) and e.dtype == np.float64 and np.isfinite(e).all()
    assert trustworthiness(x, e) >= 0.95


@pytest.mark.parametrize("method", ["pca", "tsne"])
def test_same_seed_gives_the_same_embedding(method: str) -> None:
    x, _ = _plane(n=150)
    np.testing.assert_array_equal(embed(x, method, seed=3), embed(x, method, seed=3))


def test_tsne_seed_reaches_the_random_state() -> None:
    """With ``init="random"`` the start depends on the seed alone: same seed, same picture; another seed, another."""
    x, _ = _plane(n=150)
    first = embed(x, "tsne", seed=0, init="random", max_iter=250)
    np.testing.assert_array_equal(embed(x, "tsne", seed=0, init="random", max_iter=250), first)
    assert not np.allclose(embed(x, "tsne", seed=1, init="random", max_iter=250), first)


def test_tsne_perplexity_is_clipped_to_a_third_of_the_other_points() -> None:
    assert tsne_perplexity(200) == 30.0
    assert tsne_perplexity(31) == 10.0
    assert tsne_perplexity(91, 50) == 30.0
    x, _ = _plane(n=12)
    e = embed(x, "tsne", seed=0, max_iter=250)  # scikit-learn rejects the default perplexity 30 for 12 points
    assert e.shape == (12, 2) and np.isfinite(e).all()
    with pytest.warns(UserWarning, match="perplexity 50 clipped to .* = 13 for n = 40 points"):
        embed(_plane(n=40)[0], "tsne", seed=0, perplexity=50, max_iter=250)


# ---------------------------------------------------------------------------------------------------- UMAP


def test_missing_umap_raises_embedding_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "umap", None)  # makes `import umap` fail as if umap-learn were absent
    with pytest.raises(EmbeddingUnavailable, match="pip install umap-learn"):
        embed(_plane(n=50)[0], "umap")
    assert issubclass(EmbeddingUnavailable, RuntimeError)


def test_umap_when_installed() -> None:
    x, _ = _plane(n=200)
    try:
        e = embed(x, "umap", seed=0)
    except EmbeddingUnavailable as err:
        pytest.skip(str(err))
    assert e.shape == (200, 2) and e.dtype == np.float64 and np.isfinite(e).all()
    assert trustworthiness(x, e) >= 0.9
    np.testing.assert_array_equal(embed(x, "umap", seed=0), e)


# ------------------------------------------------------------------------------------------ trustworthiness


def test_trustworthiness_matches_venna_kaski_and_takes_points_first() -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(size=(40, 5))
    e = x[:, :2] + 0.3 * rng.normal(size=(40, 2))
    for k in (1, 3, 7):
        expected = _trustworthiness_brute(x, e, k)
        assert trustworthiness(x, e, n_neighbors=k) == pytest.approx(expected, abs=1e-12)
        assert abs(_trustworthiness_brute(e, x, k) - expected) > 1e-3  # the order matters on this data


def test_scrambled_embedding_is_untrustworthy() -> None:
    x, _ = _plane()
    e = embed(x, "pca")
    scrambled = e[np.random.default_rng(0).permutation(len(e))]
    assert trustworthiness(x, e) >= 0.999
    assert trustworthiness(x, scrambled) < 0.7  # ~0.5: neighbours in the picture are strangers in the data
    assert trustworthiness(x, np.random.default_rng(1).normal(size=(200, 2))) < 0.7


def test_trustworthiness_is_declared() -> None:
    metric = METRICS["trustworthiness"]
    assert (metric.direction, metric.kind) == (HIGHER, QUALITY)
    assert "Venna & Kaski 2001" in metric.estimates


# ---------------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("args", "kwargs", "match"),
    [
        ((np.zeros((20, 3)), "isomap"), {}, "unknown embedding method 'isomap'"),
        ((np.zeros((MIN_POINTS - 1, 3)), "tsne"), {}, f"at least {MIN_POINTS} points, got {MIN_POINTS - 1}"),
        ((np.zeros((MIN_POINTS - 1, 3)), "umap"), {}, f"at least {MIN_POINTS} points, got {MIN_POINTS - 1}"),
        ((np.zeros((20, 1)), "pca"), {}, "at least 2 dimensions, got 1"),
        ((np.zeros(20), "pca"), {}, "points must be \\[n, d\\].*got shape \\(20,\\)"),
        ((np.full((20, 3), np.nan), "pca"), {}, "points contains 60 NaN or inf values"),
        ((np.zeros((20, 3)), "pca"), {"whiten": True}, "'pca' takes no options, got \\['whiten'\\]"),
    ],
)
def test_embed_rejects_bad_input(args: tuple, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        embed(*args, **kwargs)


@pytest.mark.parametrize(
    ("n_embedded", "n_neighbors", "match"),
    [
        (20, 10, "n_neighbors must be < n / 2 = 10 for n = 20 points, got 10"),
        (20, 0, "n_neighbors must be an integer >= 1, got 0"),
        (20, 2.5, "got 2.5"),
        (19, 3, "same number of rows, got 20 and 19"),
    ],
)
def test_trustworthiness_rejects_bad_input(n_embedded: int, n_neighbors: object, match: str) -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match=match):
        trustworthiness(rng.normal(size=(20, 4)), rng.normal(size=(n_embedded, 2)), n_neighbors=n_neighbors)

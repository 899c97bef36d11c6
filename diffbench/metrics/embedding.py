"""2-D embeddings of sample sets (PCA, t-SNE, UMAP) and their trustworthiness, for the size-factors analyses.

:func:`embed` maps points ``[n, d]`` (images are flattened) to ``[n, 2]``; the same ``seed`` gives the same
embedding. PCA is exact and deterministic; t-SNE is scikit-learn's; UMAP needs the optional package ``umap-learn``
and raises :class:`EmbeddingUnavailable` without it. :func:`trustworthiness` (Venna & Kaski 2001) says how far
an embedding can be believed: whether the points that look close in 2-D are close in the original space.

scikit-learn and umap-learn are imported by the functions that use them, not by this module.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from diffbench.metrics.registry import HIGHER, QUALITY, Metric, declare

METHODS = ("pca", "tsne", "umap")
# Below this many points there is no neighbourhood structure to show; it also keeps t-SNE's clipped perplexity
# ((n - 1) / 3 >= 4/3) and UMAP's neighbourhood (n - 1 >= 4 neighbours) meaningful.
MIN_POINTS = 5
TSNE_PERPLEXITY = 30.0  # scikit-learn's default
UMAP_NEIGHBORS = 15  # umap-learn's default

declare(
    Metric(
        "trustworthiness",
        HIGHER,
        QUALITY,
        "share of each point's k nearest neighbours in the embedding that are also near in the original space "
        "(Venna & Kaski 2001), 1 = no false neighbours",
    ),
)


class EmbeddingUnavailable(RuntimeError):
    """The embedding method needs an optional package that is not installed (UMAP: ``pip install umap-learn``)."""


def _points(points: Any, name: str) -> np.ndarray:
    """``points`` as a float64 array ``[n, d]`` (trailing dims flattened; torch tensors detached to the CPU)."""
    if hasattr(points, "detach"):
        points = points.detach().cpu().numpy()
    x = np.asarray(points, dtype=np.float64)
    if x.ndim < 2:
        raise ValueError(f"{name} must be [n, d] (images [n, ...] are flattened), got shape {x.shape}")
    x = x.reshape(len(x), -1)
    if x.shape[1] == 0:
        raise ValueError(f"{name} has no feature dimensions, got shape {x.shape}")
    bad = int((~np.isfinite(x)).sum())
    if bad:
        raise ValueError(f"{name} contains {bad} NaN or inf values")
    return x


def pca_2d(x: np.ndarray) -> np.ndarray:
    """Projection of the centred points on their first two principal axes, with a fixed sign.

    ``X - mean = U S V^T`` (thin SVD); the embedding is ``(X - mean) V_{:, :2}`` (= ``U_{:, :2} S_{:2}``). An SVD
    fixes each axis only up to sign, so each column ``v_c`` is flipped to make its largest-magnitude loading
    positive (the first such entry on ties): the same points give the same picture on any LAPACK.
    """
    if x.shape[1] < 2:
        raise ValueError(f"PCA to 2-D needs points with at least 2 dimensions, got {x.shape[1]}")
    centred = x - x.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    axes = vt[:2].T  # [d, 2]
    signs = np.sign(axes[np.abs(axes).argmax(axis=0), [0, 1]])
    return centred @ (axes * signs)  # a unit column has a nonzero largest entry, so signs are +-1


def tsne_perplexity(n: int, perplexity: float = TSNE_PERPLEXITY) -> float:
    """``min(perplexity, (n - 1) / 3)``: Barnes-Hut t-SNE conditions each point on its ``3 * perplexity`` nearest
    neighbours (van der Maaten 2014, §4.1; scikit-learn uses ``min(n - 1, 3 * perplexity + 1)``), which must exist
    among the other ``n - 1`` points; the clipped value is also below ``n``, as scikit-learn requires."""
    return min(float(perplexity), (n - 1) / 3)


def embed(points: Any, method: str, seed: int = 0, **options: Any) -> np.ndarray:
    """Embed ``points`` ``[n, d]`` (torch or numpy; images flattened) in 2-D: float64 ``[n, 2]``.

    - ``"pca"``: :func:`pca_2d` (deterministic; ``seed`` unused, no options).
    - ``"tsne"``: ``sklearn.manifold.TSNE`` (van der Maaten & Hinton 2008) with ``init="pca"``,
      ``random_state=seed`` and the perplexity (default 30) clipped by :func:`tsne_perplexity`; other ``options``
      go to ``TSNE`` (e.g. ``max_iter``).
    - ``"umap"``: ``umap.UMAP`` (McInnes et al. 2018) with ``random_state=seed``, ``n_jobs=1`` (umap-learn is only
      reproducible single-threaded) and ``n_neighbors`` (default 15) clipped to ``n - 1``; other ``options`` go to
      ``UMAP``. Needs ``umap-learn``; raises :class:`EmbeddingUnavailable` without it.

    The same ``points``, ``method``, ``seed`` and options give the same embedding (on the same machine and
    library versions).
    """
    if method not in METHODS:
        raise ValueError(f"unknown embedding method {method!r}; choose one of {list(METHODS)}")
    x = _points(points, "points")
    n = len(x)
    if n < MIN_POINTS:
        raise ValueError(f"embedding needs at least {MIN_POINTS} points, got {n}")
    if method == "pca":
        if options:
            raise ValueError(f"method 'pca' takes no options, got {sorted(options)}")
        return pca_2d(x)
    if method == "tsne":
        from sklearn.manifold import TSNE

        requested = options.pop("perplexity", None)
        perplexity = tsne_perplexity(n, TSNE_PERPLEXITY if requested is None else requested)
        if requested is not None and perplexity < requested:
            warnings.warn(
                f"t-SNE perplexity {requested} clipped to (n - 1) / 3 = {perplexity:.4g} for n = {n} points",
                UserWarning,
                stacklevel=2,
            )
        options.setdefault("init", "pca")
        tsne = TSNE(n_components=2, perplexity=perplexity, random_state=seed, **options)
        return np.asarray(tsne.fit_transform(x), dtype=np.float64)
    try:
        import umap
    except ImportError as err:
        raise EmbeddingUnavailable(
            f"method 'umap' needs the optional package umap-learn, which is not importable ({err}): "
            "pip install umap-learn"
        ) from err
    options["n_neighbors"] = min(int(options.get("n_neighbors", UMAP_NEIGHBORS)), n - 1)
    options.setdefault("n_jobs", 1)
    reducer = umap.UMAP(n_components=2, random_state=seed, **options)
    return np.asarray(reducer.fit_transform(x), dtype=np.float64)


def trustworthiness(points: Any, embedded: Any, n_neighbors: int = 5) -> float:
    """Trustworthiness of ``embedded`` ``[n, c]`` as a picture of ``points`` ``[n, d]`` (Venna & Kaski 2001):

    ``T(k) = 1 - 2 / (n k (2n - 3k - 1)) sum_i sum_{j in U_k(i)} (r(i, j) - k)``,

    ``U_k(i)`` the points among ``i``'s ``k`` nearest neighbours in the embedding that are not among its ``k``
    nearest in the original space, ``r(i, j)`` the rank of ``j`` by distance from ``i`` in the original space. 1 means
    no false neighbours; a random embedding scores about 0.5. Computed by ``sklearn.manifold.trustworthiness``
    (Euclidean), which requires ``k < n / 2`` (the normalisation keeps ``T`` in [0, 1] only there).
    """
    x, e = _points(points, "points"), _points(embedded, "embedded")
    if len(x) != len(e):
        raise ValueError(f"points and embedded must have the same number of rows, got {len(x)} and {len(e)}")
    if isinstance(n_neighbors, bool) or not isinstance(n_neighbors, (int, np.integer)) or n_neighbors < 1:
        raise ValueError(f"n_neighbors must be an integer >= 1, got {n_neighbors!r}")
    if not n_neighbors < len(x) / 2:
        raise ValueError(f"n_neighbors must be < n / 2 = {len(x) / 2:g} for n = {len(x)} points, got {n_neighbors}")
    from sklearn.manifold import trustworthiness as sklearn_trustworthiness

    return float(sklearn_trustworthiness(x, e, n_neighbors=int(n_neighbors)))

"""Fréchet Inception Distance, its fast domain-feature variant, and the Kernel Inception Distance.

FID (Heusel et al. 2017) is the Fréchet distance between Gaussians fitted to features of real and generated
images, ``|mu1 - mu2|^2 + Tr(S1 + S2 - 2 (S1 S2)^{1/2})``. Features come from an extractor: pytorch-fid's
Inception pool3 (the field's reference numbers; weights must be on disk, see ``diffbench.inception``) or the
penultimate layer of a small classifier trained on the same data (``domain_features``: cheap on a CPU, and
meaningful for 8x8 / 16x16 images that Inception was never trained on). FID is biased and depends strongly on
the number of samples, so every result states its sample sizes and carries an interval, FID-infinity and KID
(Binkowski et al. 2018), whose estimator is unbiased at any n.

What each interval estimates (95%, recorded beside every value):

- ``fid_ci_low``/``fid_ci_high``: FID *at these sample sizes* (n_gen, n_real), i.e. the spread of FID over fresh
  draws of both the generated and the real set of those sizes; the interval covers ``E[FID_n]``, not FID at
  infinite n (FID is biased upwards by roughly ``c / n``). Computed by half-sampling both sides (:func:`fid_interval`).
- ``fid_infinity_ci_low``/``_high``: FID extrapolated to infinitely many generated samples (Chong & Forsyth 2020),
  with the real statistics fixed (:func:`fid_infinity`).
- ``fid_delta_ci_low``/``_high``: the difference of two models' FIDs at these sizes when their samples are paired
  (drawn from the same noise), resampled jointly (:func:`fid_difference`).

Half-sampling rather than the bootstrap: a bootstrap resample repeats images, which changes FID's small-n bias
and inflates its spread; a random half (without replacement) is an ordinary, smaller sample, and for a smooth
statistic the spread of half-sample values matches the spread at the full size (the finite-population factor
``1 - m/n = 1/2`` cancels the doubled variance of a half-size sample). ``tests/test_fid_intervals.py`` checks the
coverage by simulation.
"""

from __future__ import annotations

import hashlib
import math
import warnings
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from torch import Tensor

from diffbench.cache import ArtifactCache
from diffbench.data import DataConfig, load_dataset
from diffbench.inception import FIDWeightsUnavailable, load_fid_inception
from diffbench.metrics.registry import BOOKKEEPING, HIGHER, LOWER, NEITHER, QUALITY, Metric, declare
from diffbench.models import ModelConfig, device_of
from diffbench.models.classifier import NoisyClassifier, accuracy, train_classifier

# Images may exceed [-1, 1] by this much (sampler round-off) and are clipped; beyond it they are rejected.
RANGE_TOLERANCE = 1e-2
# KID needs real features, not just their moments; subsets of <= 1,000 need no more rows than this.
KID_MAX_REAL = 10_000


declare(
    Metric("fid", LOWER, QUALITY, "Frechet distance of feature Gaussians at this n_gen and n_real (biased in n)"),
    Metric("fid_ci_low", NEITHER, BOOKKEEPING, "2.5% end: spread of FID at this n_gen and n_real", tolerance="info"),
    Metric("fid_ci_high", NEITHER, BOOKKEEPING, "97.5% end: spread of FID at this n_gen and n_real", tolerance="info"),
    Metric("fid_infinity", LOWER, QUALITY, "FID extrapolated to infinite n_gen (fit in 1/n), real statistics fixed"),
    Metric("fid_infinity_ci_low", NEITHER, BOOKKEEPING, "2.5% end of the FID-infinity interval", tolerance="info"),
    Metric("fid_infinity_ci_high", NEITHER, BOOKKEEPING, "97.5% end of the FID-infinity interval", tolerance="info"),
    Metric("fid_infinity_residual", NEITHER, BOOKKEEPING, "RMS residual of the fit in 1/n", tolerance="info"),
    Metric("fid_delta", NEITHER, QUALITY, "FID of a model minus its reference's, paired samples, this n"),
    Metric("fid_delta_ci_low", NEITHER, BOOKKEEPING, "2.5% end of the paired FID difference", tolerance="info"),
    Metric("fid_delta_ci_high", NEITHER, BOOKKEEPING, "97.5% end of the paired FID difference", tolerance="info"),
    Metric("kid", LOWER, QUALITY, "unbiased MMD^2 with the cubic polynomial kernel, mean over subsets"),
    Metric("kid_std", NEITHER, BOOKKEEPING, "std of KID over subsets of min(1000, n/2) rows", tolerance="info"),
    Metric("classifier_accuracy", HIGHER, QUALITY, "held-out accuracy of the domain-feature classifier"),
)


class FIDSampleSizeWarning(UserWarning):
    """FID computed from fewer samples than feature dimensions: singular covariance, strongly biased value."""


class FeatureExtractor(Protocol):
    """``extractor(images)``: images ``[B, C, H, W]`` in ``[-1, 1]`` -> features ``[B, dims]``. ``name``
    identifies the features (it keys the cached real-data statistics, so it changes when the weights do)."""

    name: str
    dims: int

    def __call__(self, images: Tensor) -> Tensor: ...


# --- Fréchet distance ---------------------------------------------------------------------------------------


def _as64(x: object, name: str) -> Tensor:
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, Tensor) else x).detach().to("cpu", torch.float64)
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} contains NaN or inf")
    return t


def _psd_sqrt(sigma: Tensor) -> Tensor:
    """Symmetric square root of a PSD matrix by its eigendecomposition (round-off negatives clipped to 0)."""
    w, v = torch.linalg.eigh((sigma + sigma.T) / 2)
    return (v * w.clamp(min=0).sqrt()) @ v.T


def frechet_distance(mu1: object, sigma1: object, mu2: object, sigma2: object) -> float:
    """``|mu1 - mu2|^2 + Tr(S1) + Tr(S2) - 2 Tr((S1 S2)^{1/2})`` for means ``[d]`` and covariances ``[d, d]``.

    ``S1 S2`` is similar to the symmetric PSD ``M = S1^{1/2} S2 S1^{1/2}``, so ``Tr((S1 S2)^{1/2})`` is the sum of
    square roots of ``M``'s eigenvalues: float64, no ``scipy.linalg.sqrtm``, finite for singular covariances."""
    mu1, mu2 = _as64(mu1, "mu1"), _as64(mu2, "mu2")
    sigma1, sigma2 = _as64(sigma1, "sigma1"), _as64(sigma2, "sigma2")
    d = mu1.shape[0] if mu1.ndim == 1 else -1
    for name, mu, sigma in (("1", mu1, sigma1), ("2", mu2, sigma2)):
        if mu.ndim != 1 or mu.shape[0] != d or sigma.shape != (d, d):
            raise ValueError(
                f"expected mu{name} [d] and sigma{name} [d, d] with d = {d}, "
                f"got {tuple(mu.shape)} and {tuple(sigma.shape)}"
            )
    root1 = _psd_sqrt(sigma1)
    m = root1 @ sigma2 @ root1
    tr_covmean = torch.linalg.eigvalsh((m + m.T) / 2).clamp(min=0).sqrt().sum()
    return float((mu1 - mu2).square().sum() + sigma1.trace() + sigma2.trace() - 2 * tr_covmean)


def _frechet_to_features(mu1: Tensor, sigma1: Tensor, feats: Tensor, projected: Tensor) -> float:
    """``frechet_distance(mu1, sigma1, mean(feats), cov(feats))`` from the features ``[n, d]`` themselves and
    their projection ``feats @ S1^{1/2}``: with ``Y = (projected - mean) / sqrt(n - 1)``,
    ``S1^{1/2} S2 S1^{1/2} = Y^T Y``, whose nonzero eigenvalues are those of the smaller of ``Y^T Y`` and
    ``Y Y^T`` (n x n when n < d). A bootstrap resamples rows of both, so the projection is computed once."""
    n = len(feats)
    mu2 = feats.mean(dim=0)
    y = (projected - projected.mean(dim=0)) / math.sqrt(n - 1)
    gram = y @ y.T if n < y.shape[1] else y.T @ y
    tr_covmean = torch.linalg.eigvalsh(gram).clamp(min=0).sqrt().sum()
    tr2 = (feats - mu2).square().sum() / (n - 1)
    return float((mu1 - mu2).square().sum() + sigma1.trace() + tr2 - 2 * tr_covmean)


def _centred(x: Tensor) -> Tensor:
    """``(x - mean) / sqrt(n - 1)``: ``A`` with ``A^T A`` the sample covariance of the rows of ``x``."""
    return (x - x.mean(dim=0)) / math.sqrt(len(x) - 1)


def frechet_between(x: Tensor, y: Tensor) -> float:
    """``frechet_distance(mean(x), cov(x), mean(y), cov(y))`` of two feature sets ``[n, d]`` and ``[m, d]``
    (``n, m >= 2``), from the features. With ``S1 = A^T A`` and ``S2 = B^T B`` (:func:`_centred`), the eigenvalues
    of ``S1 S2`` are the squared singular values of ``A B^T`` (``n x m``), so ``Tr((S1 S2)^{1/2})`` is its nuclear
    norm: an ``n x m`` SVD when a set is smaller than ``d``, else the ``d x d`` route of :func:`frechet_distance`."""
    a, b = _centred(_as64(x, "x")), _centred(_as64(y, "y"))
    if min(len(a), len(b)) < a.shape[1]:
        tr_covmean = torch.linalg.svdvals(a @ b.T).sum()
    else:
        root = _psd_sqrt(a.T @ a)
        m = root @ (b.T @ b) @ root
        tr_covmean = torch.linalg.eigvalsh((m + m.T) / 2).clamp(min=0).sqrt().sum()
    mean_term = torch.as_tensor(x, dtype=torch.float64).mean(0) - torch.as_tensor(y, dtype=torch.float64).mean(0)
    return float(mean_term.square().sum() + a.square().sum() + b.square().sum() - 2 * tr_covmean)


# --- intervals (half-sampling), FID-infinity, paired differences ---------------------------------------------


def _half(n: int, generator: torch.Generator) -> Tensor:
    """A random half of ``range(n)`` (without replacement), at least 2 indices."""
    return torch.randperm(n, generator=generator)[: max(2, n // 2)]


def _recentred(value: float, draws: list[float]) -> tuple[float, float]:
    """The 2.5% and 97.5% spread of ``draws`` about their median, placed around ``value``: half-sample values
    carry the bias of the smaller size (FID's ~ c/n), so their spread, not their location, is what transfers."""
    q = torch.quantile(torch.tensor(draws, dtype=torch.float64), torch.tensor([0.025, 0.5, 0.975]).double())
    return value - float(q[1] - q[0]), value + float(q[2] - q[1])


def _check_draws(draws: int) -> None:
    if isinstance(draws, bool) or not isinstance(draws, int) or draws < 2:
        raise ValueError(f"draws must be an integer >= 2, got {draws!r}")


def fid_interval(
    gen_feats: Tensor, real_feats: Tensor, *, generator: torch.Generator, draws: int = 100
) -> tuple[float, float]:
    """95% interval for FID *at these sample sizes*: the spread of FID over fresh draws of both sets, estimated by
    half-sampling both (``draws`` random halves of each, without replacement; see the module docstring) and placed
    around the full-size FID. It covers ``E[FID_n]`` at ``(n_gen, n_real)``, not FID at infinite n. The lower end
    is clipped at 0 (FID is a squared distance)."""
    _check_draws(draws)
    x, y = _as64(gen_feats, "gen_feats"), _as64(real_feats, "real_feats")
    value = frechet_between(x, y)
    samples = [frechet_between(x[_half(len(x), generator)], y[_half(len(y), generator)]) for _ in range(draws)]
    low, high = _recentred(value, samples)
    return max(0.0, low), high


def fid_difference(
    gen_a: Tensor,
    gen_b: Tensor,
    real_feats: Tensor,
    *,
    generator: torch.Generator,
    draws: int = 100,
    paired: bool = True,
) -> tuple[float, float, float]:
    """``(delta, low, high)``: ``FID(a) - FID(b)`` against the same real features and its 95% interval at these
    sizes. ``paired``: sample ``i`` of ``a`` and of ``b`` come from the same noise, so each draw takes the same
    random half of the indices from both (and one random half of the real set): what the two sets share cancels
    in the difference and the interval is much tighter than two separate ones. ``paired=False`` halves each set
    (and the real set for each) independently: the interval two unrelated models would get."""
    _check_draws(draws)
    a, b, y = _as64(gen_a, "gen_a"), _as64(gen_b, "gen_b"), _as64(real_feats, "real_feats")
    if paired and a.shape != b.shape:
        raise ValueError(f"paired sets need the same shape (sample i of each from one noise), got {a.shape}, {b.shape}")
    delta = frechet_between(a, y) - frechet_between(b, y)
    samples = []
    for _ in range(draws):
        if paired:
            idx, real = _half(len(a), generator), _half(len(y), generator)
            samples.append(frechet_between(a[idx], y[real]) - frechet_between(b[idx], y[real]))
        else:
            fid_a = frechet_between(a[_half(len(a), generator)], y[_half(len(y), generator)])
            samples.append(fid_a - frechet_between(b[_half(len(b), generator)], y[_half(len(y), generator)]))
    low, high = _recentred(delta, samples)
    return delta, low, high


@dataclass(frozen=True)
class FIDInfinity:
    """FID-infinity (Chong & Forsyth 2020): the intercept ``value`` of ``FID_N = value + slope / N`` fitted by least
    squares to FIDs of random subsets of ``sizes`` (``fids``), its 95% interval (half-sampling) and the fit's RMS
    residual."""

    value: float
    ci_low: float
    ci_high: float
    residual: float
    sizes: tuple[int, ...]
    fids: tuple[float, ...]


def infinity_sizes(n: int, dims: int, num_sizes: int = 15) -> list[int]:
    """``num_sizes`` subset sizes spread evenly from ``max(n / 10, min(n / 2, 4 dims))`` to ``n`` (distinct
    integers): the fit in ``1/N`` holds once ``N`` is well above the feature dimension (near it the covariance is
    nearly singular and FID bends away from the line, which biases the intercept low), so the small end stays above
    ``4 dims`` when ``n`` allows."""
    if n < 4 or num_sizes < 2:
        raise ValueError(f"FID-infinity needs n >= 4 samples and num_sizes >= 2, got n = {n}, num_sizes = {num_sizes}")
    low = max(n // 10, min(n // 2, 4 * dims), 2)
    return sorted({int(round(v)) for v in np.linspace(low, n, num_sizes)})


def _infinity_fit(
    feats: Tensor,
    projected: Tensor,
    mu: Tensor,
    sigma: Tensor,
    sizes: list[int],
    generator: torch.Generator,
    repeats: int,
) -> tuple[float, float, list[float]]:
    """``(intercept, rms residual, mean FID per size)`` of the least-squares fit ``FID_N = a + b / N`` over
    ``repeats`` random subsets (without replacement) per size."""
    fids, inverse = [], []
    for size in sizes:
        for _ in range(repeats):
            idx = torch.randperm(len(feats), generator=generator)[:size]
            fids.append(_frechet_to_features(mu, sigma, feats[idx], projected[idx]))
            inverse.append(1.0 / size)
    design = torch.stack([torch.ones(len(fids), dtype=torch.float64), torch.tensor(inverse, dtype=torch.float64)], 1)
    target = torch.tensor(fids, dtype=torch.float64)
    coef = torch.linalg.lstsq(design, target[:, None]).solution[:, 0]
    residual = float((design @ coef - target).square().mean().sqrt())
    return float(coef[0]), residual, [float(v) for v in target.reshape(len(sizes), repeats).mean(1)]


def fid_infinity(
    gen_feats: Tensor,
    real_mu: Tensor,
    real_sigma: Tensor,
    *,
    generator: torch.Generator,
    num_sizes: int = 15,
    repeats: int = 4,
    draws: int = 50,
    sqrt_sigma: Tensor | None = None,
) -> FIDInfinity:
    """FID-infinity of generated features ``[n, d]`` against fixed real moments (``mu`` ``[d]``, ``sigma``
    ``[d, d]``): FID of ``repeats`` random subsets (without replacement) at each of :func:`infinity_sizes`, a
    least-squares line in ``1/N``, its intercept (Chong & Forsyth draw one subset per size; averaging a few
    removes the subset choice's share of the intercept's noise). The interval repeats the whole procedure on
    ``draws`` random halves of the generated set and places their spread around the estimate
    (:func:`fid_interval`'s reasoning). The real side's own finite-n bias is not removed: the real statistics are
    taken as exact."""
    _check_draws(draws)
    feats, mu, sigma = _as64(gen_feats, "gen_feats"), _as64(real_mu, "real_mu"), _as64(real_sigma, "real_sigma")
    root = _psd_sqrt(sigma) if sqrt_sigma is None else _as64(sqrt_sigma, "sqrt_sigma")
    projected = feats @ root
    sizes = infinity_sizes(len(feats), feats.shape[1], num_sizes)
    value, residual, fids = _infinity_fit(feats, projected, mu, sigma, sizes, generator, repeats)
    samples = []
    for _ in range(draws):
        half = _half(len(feats), generator)
        half_sizes = infinity_sizes(len(half), feats.shape[1], num_sizes)
        samples.append(_infinity_fit(feats[half], projected[half], mu, sigma, half_sizes, generator, repeats)[0])
    low, high = _recentred(value, samples)
    return FIDInfinity(value, low, high, residual, tuple(sizes), tuple(fids))


# --- KID ----------------------------------------------------------------------------------------------------


def kid(
    feats_x: Tensor,
    feats_y: Tensor,
    *,
    subsets: int = 100,
    subset_size: int = 1000,
    generator: torch.Generator,
) -> tuple[float, float]:
    """Kernel Inception Distance (Binkowski et al. 2018): the unbiased MMD^2 with the polynomial kernel
    ``k(x, y) = (x.y / d + 1)^3``, ``sum_{i!=j} k(x_i,x_j)/(m(m-1)) + sum_{i!=j} k(y_i,y_j)/(m(m-1)) -
    2 sum k(x_i,y_j)/m^2``, on ``subsets`` random subsets of ``m = min(subset_size, n_x / 2, n_y / 2)`` rows of
    each set (drawn without replacement). Returns ``(mean, std)`` over the subsets; unbiased, so it can be < 0.

    ``m`` is at most half of each set so that subsets differ: with ``m = n`` every subset is the whole set and the
    std would ignore the generated side's sampling noise. At ``m = n/2`` the std over subsets estimates the std of
    KID at ``n`` (half-sampling, see the module docstring); for large sets it is the std at ``m = subset_size``."""
    x, y = _as64(feats_x, "feats_x"), _as64(feats_y, "feats_y")
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"expected features [n, d] and [m, d], got {tuple(x.shape)} and {tuple(y.shape)}")
    if subsets < 1:
        raise ValueError(f"subsets must be >= 1, got {subsets}")
    m = max(2, min(subset_size, len(x) // 2, len(y) // 2))
    if min(len(x), len(y)) < 2:
        raise ValueError(f"KID needs at least 2 rows per set, got {len(x)} and {len(y)} (subset_size {subset_size})")
    d = x.shape[1]

    def k(a: Tensor, b: Tensor) -> Tensor:
        return (a @ b.T / d + 1) ** 3

    values = []
    for _ in range(subsets):
        xs = x[torch.randperm(len(x), generator=generator)[:m]]
        ys = y[torch.randperm(len(y), generator=generator)[:m]]
        kxx, kyy = k(xs, xs), k(ys, ys)
        within = (kxx.sum() - kxx.diagonal().sum() + kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
        values.append(within - 2 * k(xs, ys).mean())
    v = torch.stack(values)
    return float(v.mean()), float(v.std()) if subsets > 1 else 0.0


# --- feature extractors -------------------------------------------------------------------------------------


class InceptionFeatures:
    """pytorch-fid's InceptionV3 pool3 features (2048-d) of images ``[B, C, H, W]`` in ``[-1, 1]``: grey images
    are repeated to RGB, then pytorch-fid maps ``[0, 1]`` -> ``[-1, 1]`` after a bilinear resize to 299x299.

    Weights: ``weights_path`` (``--fid-weights``), else the torch hub path pytorch-fid uses; neither ->
    ``FIDWeightsUnavailable`` at once, before any download (see ``diffbench.inception``)."""

    name = "inception_pool3"
    dims = 2048

    def __init__(self, weights_path: str | None = None, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self.net = load_fid_inception(weights_path).to(self.device)

    @torch.no_grad()
    def __call__(self, images: Tensor) -> Tensor:
        if images.ndim != 4 or images.shape[1] not in (1, 3):
            raise ValueError(f"Inception features need [B, 1 or 3, H, W] images, got {tuple(images.shape)}")
        x = images.to(self.device, torch.float32)
        if x.shape[1] == 1:
            x = x.repeat(1, 3, 1, 1)
        return self.net((x + 1) / 2)[0].flatten(1).float().cpu()


def _fingerprint(module: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for key, value in module.state_dict().items():
        digest.update(key.encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:12]


class DomainFeatures:
    """Penultimate-layer features of a classifier trained on the dataset, on clean images (``t = 0``).
    ``name`` is a fingerprint of the weights, so cached real statistics never mix two classifiers;
    ``accuracy`` is its held-out accuracy when known."""

    def __init__(self, classifier: NoisyClassifier, accuracy: float | None = None) -> None:
        self.classifier = classifier.eval()
        self.dims = int(classifier.feature_dim)
        self.accuracy = accuracy
        self.name = f"domain_{_fingerprint(classifier)}"

    @torch.no_grad()
    def __call__(self, images: Tensor) -> Tensor:
        return self.classifier.features(images.to(device_of(self.classifier), torch.float32)).float().cpu()


# Recipe versions of the two cached builders below (bump when a builder's output changes for the same key).
DOMAIN_CLASSIFIER_RECIPE_VERSION = 1
REAL_STATS_RECIPE_VERSION = 1


@dataclass(frozen=True)
class DomainClassifierConfig:
    """The artifact key of a domain-feature classifier: data, architecture and training."""

    data: DataConfig
    model: ModelConfig
    epochs: int = 20
    batch_size: int = 128
    lr: float = 2e-3
    seed: int = 0


def domain_features(
    dataset: DataConfig | str,
    cache: ArtifactCache | None = None,
    device: torch.device | str = "cpu",
    *,
    epochs: int = 20,
    width: int = 16,
    feature_dim: int = 64,
    seed: int = 0,
) -> DomainFeatures:
    """Domain features for ``dataset``: a ``NoisyClassifier`` trained on its clean train split (once per
    ``cache``; every call without one retrains), with its accuracy on the test split in ``.accuracy``."""
    data = DataConfig(name=dataset) if isinstance(dataset, str) else dataset
    train_set = load_dataset(data, "train")
    if train_set.x.ndim != 4 or train_set.y is None or train_set.num_classes < 2:
        raise ValueError(
            f"domain features need a labelled image dataset [N, C, H, W]; {data.name!r} has samples of shape "
            f"{list(train_set.sample_shape)} and {train_set.num_classes} classes"
        )
    channels, size, _ = train_set.sample_shape
    model = ModelConfig.of(
        "classifier",
        in_channels=channels,
        image_size=size,
        num_classes=train_set.num_classes,
        width=width,
        feature_dim=feature_dim,
        time_conditioned=False,
    )
    config = DomainClassifierConfig(data, model, epochs=epochs, seed=seed)

    def build(_workdir: object = None) -> dict:
        classifier = model.build(seed=seed)
        history = train_classifier(
            classifier, train_set, epochs=epochs, batch_size=config.batch_size, lr=config.lr, seed=seed, device=device
        )
        held_out = accuracy(classifier, load_dataset(data, "test"))
        state = {k: v.detach().cpu() for k, v in classifier.state_dict().items()}
        return {"state_dict": state, "accuracy": held_out, "history": history}

    artifact = (
        build()
        if cache is None
        else cache.get_or_build(
            "domain_classifier", config, build, version=DOMAIN_CLASSIFIER_RECIPE_VERSION, device=device
        )
    )
    classifier = model.build()
    classifier.load_state_dict(artifact["state_dict"])
    return DomainFeatures(classifier.to(device), accuracy=float(artifact["accuracy"]))


# --- FID ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RealStatsKey:
    """Artifact key of real-data feature statistics."""

    data: DataConfig
    split: str
    extractor: str
    n: int | None


@dataclass(frozen=True)
class RealStats:
    """Moments of real features (float64 ``mu`` ``[d]``, ``sigma`` and its square root ``[d, d]``), up to
    ``KID_MAX_REAL`` of the features themselves (float32, for KID), ``n`` images of shape ``shape``."""

    mu: Tensor
    sigma: Tensor
    sqrt_sigma: Tensor
    features: Tensor
    n: int
    shape: tuple[int, ...]


@dataclass(frozen=True)
class FIDResult:
    """FID with the sample sizes it was measured at (FID is biased in both), its 95% interval at those sizes
    (:func:`fid_interval`; NaN without draws), FID-infinity in the generated sample size (``None`` when not
    computed) and KID."""

    value: float
    ci_low: float
    ci_high: float
    kid: float
    kid_std: float
    n_samples: int
    n_real: int
    extractor: str
    dims: int
    infinity: FIDInfinity | None = None

    def metrics(self) -> dict[str, float]:
        """The result rows a benchmark records."""
        rows = {
            "fid": self.value,
            "fid_ci_low": self.ci_low,
            "fid_ci_high": self.ci_high,
            "kid": self.kid,
            "kid_std": self.kid_std,
        }
        if self.infinity is not None:
            rows.update(
                fid_infinity=self.infinity.value,
                fid_infinity_ci_low=self.infinity.ci_low,
                fid_infinity_ci_high=self.infinity.ci_high,
                fid_infinity_residual=self.infinity.residual,
            )
        return rows


def check_images(images: object, name: str = "samples") -> Tensor:
    """``images`` as float32 ``[N, C, H, W]`` (C = 1 or 3) in ``[-1, 1]``; values within ``RANGE_TOLERANCE``
    outside are clipped, anything else is a ValueError naming the observed shape or range."""
    x = torch.as_tensor(np.asarray(images) if not isinstance(images, Tensor) else images).detach()
    if x.ndim != 4 or x.shape[1] not in (1, 3) or len(x) == 0:
        raise ValueError(f"{name} must be images [N, C, H, W] with C = 1 or 3, got shape {tuple(x.shape)}")
    x = x.float()
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contain NaN or inf")
    lo, hi = float(x.min()), float(x.max())
    if lo < -1 - RANGE_TOLERANCE or hi > 1 + RANGE_TOLERANCE:
        raise ValueError(
            f"{name} must lie in [-1, 1], got values in [{lo:.4g}, {hi:.4g}] "
            "(map [0, 1] images with 2x - 1 and [0, 255] images with x / 127.5 - 1)"
        )
    return x.clamp(-1, 1)


def extract_features(extractor: FeatureExtractor, images: Tensor, batch_size: int = 256) -> Tensor:
    """``extractor`` applied in batches; float64 ``[N, dims]`` on the CPU."""
    out = [extractor(images[i : i + batch_size]).double().cpu() for i in range(0, len(images), batch_size)]
    return torch.cat(out)


def real_statistics(
    dataset: DataConfig | str,
    extractor: FeatureExtractor,
    *,
    split: str = "train",
    n: int | None = None,
    cache: ArtifactCache | None = None,
    batch_size: int = 256,
) -> RealStats:
    """Feature statistics of ``n`` images of ``split`` (all when ``None``; else a fixed random subset),
    cached per (dataset config, split, extractor name, n)."""
    data = DataConfig(name=dataset) if isinstance(dataset, str) else dataset

    def build(_workdir: object = None) -> dict:
        real = load_dataset(data, split)
        if n is not None and not 2 <= n <= len(real):
            raise ValueError(f"n must be in [2, {len(real)}] for {data.name} {split}, got {n}")
        x = real.x
        if n is not None:
            x = x[torch.randperm(len(x), generator=torch.Generator().manual_seed(data.seed))[:n]]
        feats = extract_features(extractor, check_images(x, f"{data.name} {split} images"), batch_size)
        sigma = torch.cov(feats.T)
        keep = torch.randperm(len(feats), generator=torch.Generator().manual_seed(data.seed))[:KID_MAX_REAL]
        return {
            "mu": feats.mean(dim=0),
            "sigma": sigma,
            "sqrt_sigma": _psd_sqrt(sigma),
            "features": feats[keep.sort().values].float(),
            "n": len(feats),
            "shape": torch.tensor(x.shape[1:]),
        }

    key = RealStatsKey(data, split, extractor.name, n)
    stats = (
        build()
        if cache is None
        else cache.get_or_build("fid_real_stats", key, build, version=REAL_STATS_RECIPE_VERSION)
    )
    return RealStats(
        mu=stats["mu"],
        sigma=stats["sigma"],
        sqrt_sigma=stats["sqrt_sigma"],
        features=stats["features"],
        n=int(stats["n"]),
        shape=tuple(int(s) for s in stats["shape"]),
    )


def fid(
    samples: Tensor,
    dataset: DataConfig | str,
    extractor: FeatureExtractor,
    *,
    n: int | None = None,
    split: str = "train",
    generator: torch.Generator,
    cache: ArtifactCache | None = None,
    interval_draws: int = 100,
    infinity_draws: int = 50,
    batch_size: int = 256,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
) -> FIDResult:
    """FID of generated ``samples`` ``[N, C, H, W]`` in ``[-1, 1]`` against ``n`` real images of ``dataset``'s
    ``split`` (real statistics cached in ``cache``), in ``extractor``'s feature space.

    ``generator`` drives the interval, FID-infinity and KID's subsets. The 95% interval is FID's spread at these
    sizes from ``interval_draws`` half-samples of both sets (:func:`fid_interval`; ``0``: no interval, NaN);
    FID-infinity (:func:`fid_infinity`, ``infinity_draws`` halves for its interval; ``0``: not computed). The real
    side of the interval uses the stored real features (all of them up to ``KID_MAX_REAL``).

    Warns (``FIDSampleSizeWarning``) when either set has no more images than feature dimensions: the covariance
    is then singular and FID strongly biased, comparable only at equal n; KID stays meaningful."""
    x = check_images(samples)
    if len(x) < 2:
        raise ValueError(f"FID needs at least 2 samples, got {len(x)}")
    real = real_statistics(dataset, extractor, split=split, n=n, cache=cache, batch_size=batch_size)
    if tuple(x.shape[1:]) != real.shape:
        raise ValueError(f"samples have shape {list(x.shape[1:])} per image, the real images {list(real.shape)}")
    feats = extract_features(extractor, x, batch_size)
    dims = feats.shape[1]
    if min(len(feats), real.n) <= dims:
        warnings.warn(
            f"FID from {len(feats)} samples and {real.n} real images in {dims} feature dimensions: the covariance "
            "is singular and FID is strongly biased at this n; compare FIDs only at equal n, or use KID",
            FIDSampleSizeWarning,
            stacklevel=2,
        )
    projected = feats @ real.sqrt_sigma
    value = _frechet_to_features(real.mu, real.sigma, feats, projected)
    ci_low = ci_high = float("nan")
    if interval_draws > 0:
        ci_low, ci_high = fid_interval(feats, real.features, generator=generator, draws=interval_draws)
    infinity = None
    if infinity_draws > 0 and len(feats) >= 4:
        infinity = fid_infinity(
            feats, real.mu, real.sigma, generator=generator, draws=infinity_draws, sqrt_sigma=real.sqrt_sigma
        )
    kid_mean, kid_std = kid(feats, real.features, subsets=kid_subsets, subset_size=kid_subset_size, generator=generator)
    return FIDResult(
        value=value,
        ci_low=ci_low,
        ci_high=ci_high,
        kid=kid_mean,
        kid_std=kid_std,
        n_samples=len(feats),
        n_real=real.n,
        extractor=extractor.name,
        dims=dims,
        infinity=infinity,
    )


__all__ = [
    "FIDInfinity",
    "FIDResult",
    "FIDSampleSizeWarning",
    "FIDWeightsUnavailable",
    "DomainClassifierConfig",
    "DomainFeatures",
    "FeatureExtractor",
    "InceptionFeatures",
    "RealStats",
    "check_images",
    "domain_features",
    "extract_features",
    "fid",
    "fid_difference",
    "fid_infinity",
    "fid_interval",
    "frechet_between",
    "frechet_distance",
    "infinity_sizes",
    "kid",
    "real_statistics",
]

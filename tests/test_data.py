"""Dataset registry: sizes, ranges, splits and determinism, checked against the data's definition."""

from __future__ import annotations

import math
import time

import pytest
import torch
from sklearn.datasets import load_digits

from diffbench.data import (
    DATASETS,
    GMM,
    IMAGE_GEOMETRY,
    DataConfig,
    DatasetUnavailableError,
    UnknownDatasetError,
    load_dataset,
)


@pytest.fixture(scope="module")
def gmm_train():
    return load_dataset(DataConfig("gmm2d"), "train")


@pytest.fixture(scope="module")
def gmm_test():
    return load_dataset(DataConfig("gmm2d"), "test")


def _rows(x: torch.Tensor) -> list[bytes]:
    return [row.numpy().tobytes() for row in x.reshape(len(x), -1)]


def test_gmm_sizes_shapes_and_labels(gmm_train, gmm_test):
    assert gmm_train.x.shape == (10_000, 2) and gmm_test.x.shape == (2_000, 2)
    assert gmm_train.x.dtype == torch.float32 and gmm_train.y.dtype == torch.int64
    assert gmm_train.num_classes == 8
    assert set(gmm_train.y.tolist()) == set(range(8)) == set(gmm_test.y.tolist())


def test_gmm_means_are_eight_points_on_the_radius_5_circle():
    expected = torch.tensor([[5 * math.cos(2 * math.pi * k / 8), 5 * math.sin(2 * math.pi * k / 8)] for k in range(8)])
    torch.testing.assert_close(GMM.means, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("split", ["train", "test"])
def test_gmm_components_have_the_specified_mean_and_std(split, gmm_train, gmm_test):
    data = gmm_train if split == "train" else gmm_test
    circle = [(5 * math.cos(2 * math.pi * k / 8), 5 * math.sin(2 * math.pi * k / 8)) for k in range(8)]
    for k, (cx, cy) in enumerate(circle):
        points = data.x[data.y == k].double()
        assert len(points) > 0.5 * len(data) / 8  # equal weights: about n/8 each
        mean = points.mean(0)
        assert math.hypot(mean[0] - cx, mean[1] - cy) < 0.05
        # std error of a std estimate is std / sqrt(2n): < 0.01 for these sizes
        assert points.std(0).tolist() == pytest.approx([0.2, 0.2], abs=0.02)


def test_gmm_label_is_the_nearest_mean(gmm_train):
    # components are 3.8 apart and 0.2 wide, so the generating component is the nearest mean
    assert torch.equal(torch.cdist(gmm_train.x, GMM.means).argmin(1), gmm_train.y)


def test_gmm_train_and_test_differ(gmm_train, gmm_test):
    assert not set(_rows(gmm_train.x)) & set(_rows(gmm_test.x))


def test_gmm_deterministic_by_seed(gmm_train):
    again = load_dataset(DataConfig("gmm2d", seed=0), "train")
    assert torch.equal(again.x, gmm_train.x) and torch.equal(again.y, gmm_train.y)
    other = load_dataset(DataConfig("gmm2d", seed=1), "train")
    assert not torch.equal(other.x, gmm_train.x)
    other_test = load_dataset(DataConfig("gmm2d", seed=1), "test")
    assert not set(_rows(other.x)) & set(_rows(other_test.x))


def test_load_dataset_accepts_a_name():
    assert torch.equal(load_dataset("gmm2d").x, load_dataset(DataConfig("gmm2d"), "train").x)


@pytest.fixture(scope="module")
def digits16():
    return {split: load_dataset(DataConfig("digits"), split) for split in ("train", "test")}


def test_digits_shape_range_and_classes(digits16):
    train, test = digits16["train"], digits16["test"]
    assert len(train) + len(test) == 1797
    assert len(test) == round(0.2 * 1797)
    for ds in (train, test):
        assert ds.x.shape[1:] == (1, 16, 16) and ds.x.dtype == torch.float32
        assert float(ds.x.min()) >= -1.0 and float(ds.x.max()) <= 1.0
        assert ds.num_classes == 10 and set(ds.y.tolist()) == set(range(10))


def test_digits_train_and_test_share_no_image(digits16):
    train, test = _rows(digits16["train"].x), _rows(digits16["test"].x)
    assert not set(train) & set(test)
    assert len(set(train) | set(test)) == 1797


def test_digits_native_size_is_the_sklearn_data_split_disjointly():
    """At 8x8 nothing is resized: train + test is exactly sklearn's 1,797 images (scaled [0, 16] -> [-1, 1])
    with their labels, each image in exactly one split."""
    bunch = load_digits()
    raw = torch.as_tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 8.0 - 1.0
    label_of = dict(zip(_rows(raw), bunch.target.tolist(), strict=True))
    assert len(label_of) == 1797  # sklearn's images are all distinct
    config = DataConfig("digits", image_size=8)
    train, test = load_dataset(config, "train"), load_dataset(config, "test")
    rows = _rows(train.x) + _rows(test.x)
    assert sorted(rows) == sorted(label_of)
    assert float(train.x.min()) == -1.0 and float(train.x.max()) == 1.0
    labels = train.y.tolist() + test.y.tolist()
    assert [label_of[r] for r in rows] == labels


def test_digits_deterministic_by_seed(digits16):
    again = load_dataset(DataConfig("digits"), "test")
    assert torch.equal(again.x, digits16["test"].x)
    other = load_dataset(DataConfig("digits", seed=1), "test")
    assert not torch.equal(other.x, digits16["test"].x)


def test_unknown_dataset_lists_the_available_names():
    with pytest.raises(UnknownDatasetError, match="'imagenet'") as info:
        load_dataset("imagenet")
    assert isinstance(info.value, ValueError)
    for name in DATASETS:
        assert name in str(info.value)


@pytest.mark.parametrize("name", ["gmm2d", "digits"])
def test_unknown_split_names_the_split(name):
    with pytest.raises(ValueError, match="'validation'"):
        load_dataset(DataConfig(name), "validation")


@pytest.mark.parametrize("name, cls_name", [("mnist", "MNIST"), ("cifar10", "CIFAR10")])
def test_torchvision_dataset_missing_fails_fast_with_instructions(tmp_path, name, cls_name):
    started = time.monotonic()
    with pytest.raises(DatasetUnavailableError) as info:
        load_dataset(DataConfig(name, root=str(tmp_path)), "train")
    assert time.monotonic() - started < 30  # no network here: a download attempt would hang or fail late
    message = str(info.value)
    assert str(tmp_path) in message
    assert "download=True" in message and f"torchvision.datasets.{cls_name}" in message
    assert list(tmp_path.iterdir()) == []  # nothing was downloaded or created


@pytest.mark.parametrize("name", ["digits", "shapes"])
def test_image_geometry_matches_what_the_offline_datasets_load(name):
    dataset = load_dataset(DataConfig(name, image_size=16), "test")
    assert IMAGE_GEOMETRY[name] == (dataset.sample_shape[0], dataset.num_classes)


def test_every_image_dataset_has_a_geometry():
    assert set(IMAGE_GEOMETRY) == set(DATASETS) - {"gmm2d"}

"""The noise-aware classifier: shapes, time conditioning, gradients for guidance, and training on digits."""

from __future__ import annotations

import pytest
import torch

from diffbench.data import Dataset, load_dataset
from diffbench.models import MODELS, ModelConfig, NoisyClassifier
from diffbench.models.classifier import accuracy, train_classifier
from diffbench.schedules import NoiseSchedule


@pytest.mark.parametrize("channels,size", [(1, 8), (1, 16), (3, 32)])
def test_shapes_of_logits_and_features(channels, size):
    model = NoisyClassifier(channels, size, num_classes=7, width=8, feature_dim=24)
    x = torch.randn(5, channels, size, size)
    t = torch.randint(1000, (5,))
    assert model(x, t).shape == (5, 7)
    assert model.features(x, t).shape == (5, 24)


def test_time_conditioning():
    torch.manual_seed(0)
    conditioned = NoisyClassifier(1, 16, 10, width=8)
    x = torch.randn(3, 1, 16, 16)
    assert not torch.allclose(conditioned(x, torch.full((3,), 900)), conditioned(x, torch.zeros(3)))
    assert torch.equal(conditioned(x), conditioned(x, torch.zeros(3)))  # t=None means clean images
    unconditioned = NoisyClassifier(1, 16, 10, width=8, time_conditioned=False)
    assert torch.equal(unconditioned(x, torch.full((3,), 900)), unconditioned(x))


def test_registered_and_deterministic_in_its_seed():
    assert MODELS["classifier"] is NoisyClassifier
    config = ModelConfig.of("classifier", in_channels=1, image_size=16, num_classes=10, width=8)
    a, b = config.build(seed=3), config.build(seed=3)
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values(), strict=True))


def test_log_prob_gradient_for_classifier_guidance():
    """Classifier guidance needs grad_x log p(y | x_t, t): finite, the shape of x, and nonzero."""
    model = NoisyClassifier(1, 16, 10, width=8)
    x = torch.randn(4, 1, 16, 16, requires_grad=True)
    y = torch.tensor([0, 1, 2, 3])
    log_p = torch.log_softmax(model(x, torch.full((4,), 500)), dim=1)[torch.arange(4), y].sum()
    (grad,) = torch.autograd.grad(log_p, x)
    assert grad.shape == x.shape and torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_clean_and_noise_aware_training_on_digits():
    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    model = NoisyClassifier(1, 16, 10, width=8).requires_grad_(True)
    history = train_classifier(model, train, epochs=3, seed=0)
    assert history[-1]["loss"] < history[0]["loss"]
    assert accuracy(model, test) > 0.7  # chance is 0.1
    noisy, subset = NoisyClassifier(1, 16, 10, width=8), Dataset("digits", "train", train.x[:256], train.y[:256], 10)
    history = train_classifier(noisy, subset, epochs=1, seed=0, schedule=NoiseSchedule.linear(1000))
    assert len(history) == 1 and history[0]["loss"] > 0


def test_bad_arguments():
    with pytest.raises(ValueError, match="width must be >= 1, got 0"):
        NoisyClassifier(1, 16, 10, width=0)
    with pytest.raises(ValueError, match="image_size must be >= 4, got 2"):
        NoisyClassifier(1, 2, 10)
    unlabelled = Dataset("blobs", "train", torch.zeros(4, 1, 8, 8))
    with pytest.raises(ValueError, match="'blobs' has no labels"):
        train_classifier(NoisyClassifier(1, 8, 2, width=8), unlabelled, epochs=1)

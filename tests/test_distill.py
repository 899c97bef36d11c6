"""Knowledge distillation: zero loss for a copy of the teacher, the teacher stays frozen, training closes the gap."""

from __future__ import annotations

import copy
from dataclasses import replace

import pytest
import torch

from diffbench.data import DataConfig, Dataset, load_dataset
from diffbench.distill import distillation_loss
from diffbench.models import ModelConfig, UNet
from diffbench.schedules import NoiseSchedule
from diffbench.training import TrainBatch, TrainConfig, train

SCHEDULE = NoiseSchedule.linear(1000)


def _noisy_batch(x0: torch.Tensor, seed: int, cond: dict | None = None) -> TrainBatch:
    gen = torch.Generator().manual_seed(seed)
    t = torch.randint(SCHEDULE.num_steps, (len(x0),), generator=gen)
    noise = torch.randn(x0.shape, generator=gen)
    return TrainBatch(x0, SCHEDULE.add_noise(x0, t, noise), t, noise, cond or {})


@pytest.mark.parametrize("labels", [None, "real", "null"])
def test_copy_of_the_teacher_has_zero_loss(labels):
    teacher = UNet(0.5, base_channels=8, num_classes=3)
    student = copy.deepcopy(teacher).train()  # the trainer puts the student in train mode (dropout is 0 here)
    cond = {} if labels is None else {"y": torch.tensor([0, 1, 2, 0]) if labels == "real" else torch.full((4,), 3)}
    batch = _noisy_batch(torch.randn(4, 1, 16, 16, generator=torch.Generator().manual_seed(0)), 1, cond)
    loss = distillation_loss(teacher)(student, batch)
    assert loss.item() == 0.0


def test_teacher_is_frozen_and_in_eval_mode():
    teacher = UNet(base_channels=8, dropout=0.5)
    student = UNet(0.5, base_channels=8)
    loss_fn = distillation_loss(teacher)
    assert not teacher.training  # dropout off: the target is the teacher's deterministic prediction
    loss_fn(student, _noisy_batch(torch.zeros(2, 1, 16, 16), 0)).backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())


def test_the_loss_is_the_mse_to_the_teacher_not_to_the_noise():
    teacher, student = UNet(base_channels=8).eval(), UNet(0.5, base_channels=8).eval()
    batch = _noisy_batch(torch.randn(3, 1, 16, 16, generator=torch.Generator().manual_seed(2)), 3)
    with torch.no_grad():
        expected = torch.mean((teacher(batch.x_t, batch.t) - student(batch.x_t, batch.t)) ** 2)
        got = distillation_loss(teacher)(student, replace(batch, noise=torch.zeros_like(batch.noise)))
    assert torch.equal(got, expected)


def test_label_spaces_must_match():
    loss_fn = distillation_loss(UNet(base_channels=8, num_classes=3))
    with pytest.raises(ValueError, match="num_classes 5 for the student and 3 for the teacher"):
        loss_fn(UNet(base_channels=8, num_classes=5), _noisy_batch(torch.zeros(2, 1, 16, 16), 0))


def test_distillation_training_reduces_the_loss_to_the_teacher():
    full = load_dataset(DataConfig("gmm2d"), "train")
    data = Dataset("gmm2d", "train", full.x[:512].clone(), full.y[:512].clone(), full.num_classes)
    teacher = ModelConfig.of("mlp", hidden=64).build(seed=0)
    student = ModelConfig.of("mlp", hidden=16).build(seed=1)
    loss_fn = distillation_loss(teacher)
    held_out = _noisy_batch(full.x[512:1024], 7)  # held-out points, fixed noise

    def gap() -> float:
        with torch.no_grad():
            return loss_fn(student, held_out).item()

    before = gap()
    config = TrainConfig(epochs=10, batch_size=64, lr=3e-3, checkpoint_every=10)
    result = train(student, SCHEDULE, data, config, loss_fn=loss_fn, progress=False)
    after = gap()
    assert after < 0.5 * before, (before, after)
    assert result.history[-1]["loss"] < result.history[0]["loss"]

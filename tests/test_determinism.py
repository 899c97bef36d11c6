"""verify_determinism: bitwise reruns in eval mode, a detected failure with dropout left on, per-sample noise that
does not depend on the batch layout, and refusals of bad input."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from diffbench.determinism import (
    DeterminismReport,
    max_abs_deviation,
    sample_in_batches,
    verify_determinism,
)
from diffbench.metrics import registry
from diffbench.models import ModelConfig
from diffbench.sampling import SamplerStep, randn, sample_generators, uniform_timesteps
from diffbench.schedules import NoiseSchedule

SHAPE = (1, 8, 8)
SCHEDULE = NoiseSchedule.linear(1000)
# abar_999 = 0.37: the first DDIM step amplifies eps rounding by sqrt((1 - abar) / abar) = 1.3, not 157 as at the
# linear schedule's t = 999, so the layout deviation in absolute terms is the kernels' own ~1e-7 relative rounding
MILD = NoiseSchedule(torch.full((1000,), 1e-3), name="mild")


def tiny_unet(dropout: float = 0.0, num_classes: int = 0) -> nn.Module:
    config = dict(widths=(8, 16), image_size=8, attention_resolutions=(4,), dropout=dropout, num_classes=num_classes)
    return ModelConfig.of("ddpm_unet", **config).build(seed=0)


@pytest.fixture(scope="module")
def eval_unet() -> nn.Module:
    return tiny_unet().eval()


def test_eval_mode_is_bitwise_reproducible_and_layout_deviation_is_tiny(eval_unet: nn.Module):
    report = verify_determinism(eval_unet, MILD, SHAPE, num_samples=7, steps=3, seed=4, device="cpu")
    assert isinstance(report, DeterminismReport)
    assert report.same_seed_max_abs == 0.0 and report.deterministic
    assert report.batch_layout_max_abs < 1e-5 and report.sample_max_abs > 1
    assert (report.device, report.num_samples, report.steps) == ("cpu", 7, 3)
    assert report.batch_sizes == (7, 3) and report.seed == 4 and report.eta == 0.0
    assert report.metrics() == {
        "determinism_same_seed_max_abs": report.same_seed_max_abs,
        "determinism_batch_layout_max_abs": report.batch_layout_max_abs,
    }
    with pytest.raises(AttributeError):
        report.steps = 4  # frozen
    # the linear schedule's first step amplifies eps rounding 157-fold (an untrained model's samples reach ~500):
    # still bitwise reproducible, and the layout deviation stays tiny relative to the samples
    linear = verify_determinism(eval_unet, SCHEDULE, SHAPE, num_samples=7, steps=3, seed=4, device="cpu")
    assert linear.deterministic and linear.batch_layout_max_abs < 1e-5 * linear.sample_max_abs


def test_dropout_left_in_train_mode_is_caught():
    model = tiny_unet(dropout=0.5).train()
    report = verify_determinism(model, SCHEDULE, SHAPE, num_samples=3, steps=2, seed=0)
    assert report.same_seed_max_abs > 0 and not report.deterministic
    assert model.training, "the model's mode is the caller's"


def test_eta_and_class_labels_stay_reproducible_with_per_sample_noise():
    model = tiny_unet(num_classes=3).eval()
    labels = torch.tensor([0, 1, 2, 0, 1])
    report = verify_determinism(
        model, MILD, SHAPE, num_samples=5, steps=3, eta=1.0, batch_sizes=(2, 5), cond={"y": labels}
    )
    assert report.deterministic and report.batch_layout_max_abs < 1e-5 and report.eta == 1.0
    grid = uniform_timesteps(SCHEDULE.num_steps, 3)
    common = dict(num_samples=5, grid=grid, seed=0, eta=1.0, cond={"y": labels})
    other_labels = sample_in_batches(model, SCHEDULE, SHAPE, batch_size=5, **(common | {"cond": {"y": labels.flip(0)}}))
    assert max_abs_deviation(sample_in_batches(model, SCHEDULE, SHAPE, batch_size=5, **common), other_labels) > 0


def test_sample_i_starts_from_the_same_noise_in_every_layout(eval_unet: nn.Module):
    n, grid = 7, uniform_timesteps(SCHEDULE.num_steps, 2)
    expected = randn((n, *SHAPE), sample_generators(11, n), "cpu")  # the sampling module's per-sample recipe

    def starts(batch_size: int) -> Tensor:
        seen: list[Tensor] = []

        def keep_x_T(step: SamplerStep) -> None:
            if step.i == 0:
                seen.append(step.x_t.cpu())

        sample_in_batches(
            eval_unet, SCHEDULE, SHAPE, num_samples=n, grid=grid, seed=11, batch_size=batch_size, callback=keep_x_T
        )
        assert len(seen) == math.ceil(n / batch_size)
        return torch.cat(seen)

    for batch_size in (1, 3, 7, 10):
        assert torch.equal(starts(batch_size), expected), batch_size
    first = sample_in_batches(eval_unet, SCHEDULE, SHAPE, num_samples=3, grid=grid, seed=11, batch_size=3)
    assert (
        max_abs_deviation(
            first, sample_in_batches(eval_unet, SCHEDULE, SHAPE, num_samples=3, grid=grid, seed=12, batch_size=3)
        )
        > 0.1
    )


def test_a_single_sample_compares_one_batch_of_one_with_itself(eval_unet: nn.Module):
    report = verify_determinism(eval_unet, SCHEDULE, SHAPE, num_samples=1, steps=1)
    assert report.batch_sizes == (1, 1) and report.deterministic and report.batch_layout_max_abs == 0.0


def test_max_abs_deviation_treats_matching_nans_and_infinities_as_equal():
    inf, nan = float("inf"), float("nan")
    assert max_abs_deviation(torch.tensor([1.0, nan, inf]), torch.tensor([1.0, nan, inf])) == 0.0
    assert max_abs_deviation(torch.tensor([1.0, 2.0]), torch.tensor([1.5, 2.0])) == 0.5
    assert max_abs_deviation(torch.tensor([nan]), torch.tensor([0.0])) == inf
    assert max_abs_deviation(torch.tensor([inf]), torch.tensor([-inf])) == inf
    with pytest.raises(ValueError, match="same shape"):
        max_abs_deviation(torch.zeros(2), torch.zeros(3))
    nan_report = DeterminismReport(nan, 0.0, 1.0, "cpu", 1, 1, (1, 1), 0, 0.0)
    assert not nan_report.deterministic


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_samples": 0}, "num_samples must be a positive integer, got 0"),
        ({"num_samples": -2}, "num_samples must be a positive integer, got -2"),
        ({"num_samples": 2.0}, "num_samples must be a positive integer"),
        ({"steps": 0}, r"steps must be in \[1, 1000\].*got 0"),
        ({"steps": 1001}, r"steps must be in \[1, 1000\].*got 1001"),
        ({"steps": 2.5}, "steps must be an integer"),
        ({"eta": 1.5}, r"eta must be in \[0, 1\], got 1.5"),
        ({"seed": -1}, "seed must be a non-negative integer"),
        ({"batch_sizes": (4, 0)}, r"batch_sizes\[1\] must be a positive integer, got 0"),
        ({"batch_sizes": (4,)}, "batch_sizes must be two"),
        ({"spacing": "cubic"}, "unknown spacing 'cubic'"),
        ({"sample_shape": ()}, "sample_shape must be a non-empty"),
        ({"cond": {"y": torch.zeros(3, dtype=torch.long)}}, r"cond\['y'\] must be per-sample.*num_samples = 4"),
    ],
)
def test_bad_input_is_refused_before_sampling(kwargs: dict, match: str):
    calls = []
    model = tiny_unet().eval()
    model.register_forward_pre_hook(lambda m, args: calls.append(1))
    arguments = {"sample_shape": SHAPE, "num_samples": 4, "steps": 2} | kwargs
    with pytest.raises(ValueError, match=match):
        verify_determinism(model, SCHEDULE, **arguments)
    assert calls == []


def test_the_metrics_are_declared_with_their_gate_classes():
    same, layout = registry.get("determinism_same_seed_max_abs"), registry.get("determinism_batch_layout_max_abs")
    assert (same.direction, same.kind, same.tolerance) == (registry.LOWER, registry.QUALITY, "exact")
    assert (layout.direction, layout.kind, layout.tolerance) == (registry.LOWER, registry.QUALITY, "info")

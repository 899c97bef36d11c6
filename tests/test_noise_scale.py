"""The gradient noise scale (McCandlish et al. 2018) against closed forms, and its probe in the trainer."""

from __future__ import annotations

import math

import pytest
import torch

from diffbench.cache import _canonical
from diffbench.data import DataConfig, load_dataset
from diffbench.metrics.noise_scale import (
    NoiseScaleEstimate,
    critical_batch_fit,
    gradient_noise_scale,
    microbatch_noise_scale,
    noise_scale_from_norms,
    pooled_noise_scale,
)
from diffbench.models import ModelConfig
from diffbench.schedules import ScheduleConfig
from diffbench.training import TrainConfig, train


def test_two_batch_estimator_inverts_the_expected_norms_exactly():
    """With the exact expectations E|g_B|^2 = |G|^2 + tr(Sigma)/B plugged in, both terms come back."""
    g2, trace = 0.7, 35.0
    small, big = g2 + trace / 16, g2 + trace / 512
    estimate = noise_scale_from_norms(small, big, 16, 512)
    assert estimate.grad_sq_norm == pytest.approx(g2, rel=1e-12)
    assert estimate.trace_cov == pytest.approx(trace, rel=1e-12)
    assert estimate.b_simple == pytest.approx(50.0, rel=1e-12)


def _regression_losses(w: torch.Tensor, w_star: torch.Tensor, sigma: float, size: int, count: int, seed: int):
    """Mean squared error of a linear model on micro-batches of x ~ N(0, I), y = w*.x + sigma eps."""
    g = torch.Generator().manual_seed(seed)
    for _ in range(count):
        x = torch.randn(size, len(w), generator=g, dtype=torch.float64)
        y = x @ w_star + sigma * torch.randn(size, generator=g, dtype=torch.float64)
        yield ((x @ w - y) ** 2).mean()


@pytest.mark.parametrize("size,count", [(4, 64), (32, 16)])
def test_noise_scale_of_linear_regression_matches_the_closed_form(size, count):
    """Loss (w.x - y)^2 with x ~ N(0, I_d), y = w*.x + sigma eps, at w = w* + delta: the per-example gradient is
    g = 2 r x with r = delta.x - sigma eps, so G = 2 delta and (Isserlis) E[r^2 x x^T] = (|delta|^2 + sigma^2) I
    + 2 delta delta^T, hence |G|^2 = 4 |delta|^2 and tr(Sigma) = 4 ((|delta|^2 + sigma^2) d + |delta|^2)."""
    d, sigma = 5, 0.5
    w_star = torch.linspace(-1, 1, d, dtype=torch.float64)
    delta = torch.tensor([0.3, -0.2, 0.1, 0.0, 0.4], dtype=torch.float64)
    w = (w_star + delta).requires_grad_()
    d2 = float(delta.square().sum())
    true_g2, true_trace = 4 * d2, 4 * ((d2 + sigma**2) * d + d2)

    pooled = pooled_noise_scale(
        gradient_noise_scale([w], _regression_losses(w, w_star, sigma, size, count, seed), size) for seed in range(300)
    )
    assert pooled.grad_sq_norm == pytest.approx(true_g2, rel=0.05)
    assert pooled.trace_cov == pytest.approx(true_trace, rel=0.05)
    assert pooled.b_simple == pytest.approx(true_trace / true_g2, rel=0.08)


def test_gradient_noise_scale_leaves_the_parameters_grad_alone():
    w = torch.ones(3, dtype=torch.float64, requires_grad=True)
    w.grad = torch.full((3,), 7.0, dtype=torch.float64)
    gradient_noise_scale([w], _regression_losses(w, torch.zeros(3, dtype=torch.float64), 1.0, 8, 4, 0), 8)
    assert torch.equal(w.grad, torch.full((3,), 7.0, dtype=torch.float64))


def test_microbatch_estimator_is_the_two_batch_estimator_of_the_sums():
    grads = torch.tensor([[1.0, 2.0], [3.0, -1.0], [0.0, 1.0]], dtype=torch.float64)
    estimate = microbatch_noise_scale(float(grads.square().sum()), grads.sum(0), 3, 10)
    small = float(grads.square().sum(1).mean())
    big = float(grads.mean(0).square().sum())
    assert estimate == noise_scale_from_norms(small, big, 10, 30)


def test_b_simple_is_nan_without_resolved_signal():
    assert math.isnan(NoiseScaleEstimate(grad_sq_norm=-0.1, trace_cov=3.0).b_simple)
    assert math.isnan(NoiseScaleEstimate(grad_sq_norm=0.0, trace_cov=3.0).b_simple)


def test_critical_batch_fit_recovers_the_trade_off_curve():
    """S = S_min (1 + B_crit / B) exactly, at four batch sizes."""
    batches = [128, 256, 512, 1280]
    steps = [3000 * (1 + 400 / b) for b in batches]
    s_min, b_crit = critical_batch_fit(batches, steps)
    assert s_min == pytest.approx(3000, rel=1e-9)
    assert b_crit == pytest.approx(400, rel=1e-9)
    # steps that grow with the batch: no trade-off to fit
    assert math.isnan(critical_batch_fit([128, 1280], [1000, 2000])[1])


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: noise_scale_from_norms(1.0, 0.5, 64, 64), "b_small < b_big"),
        (lambda: noise_scale_from_norms(math.nan, 0.5, 8, 64), "finite"),
        (lambda: microbatch_noise_scale(1.0, torch.ones(2), 1, 8), "at least 2"),
        (lambda: pooled_noise_scale([]), "no noise-scale"),
        (lambda: critical_batch_fit([128, 128], [10, 20]), "distinct"),
        (lambda: TrainConfig(noise_scale_every=-1), "noise_scale_every"),
        (lambda: TrainConfig(noise_scale_probe=(64, 1)), "noise_scale_probe"),
    ],
)
def test_bad_input_is_one_clear_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_default_probe_options_do_not_change_artifact_keys():
    """Fields added with a behaviour-preserving default enter the key only when set."""
    assert not any(key.startswith("noise_scale") for key in _canonical(TrainConfig()))
    assert _canonical(TrainConfig(noise_scale_every=2))["noise_scale_every"] == 2


def _gmm_run(config: TrainConfig, checkpoint_dir=None):
    model = ModelConfig.of("mlp", hidden=32, num_layers=2).build(seed=0)
    data = load_dataset(DataConfig("gmm2d"), "train")
    data = type(data)(data.name, data.split, data.x[:600], data.y[:600], data.num_classes)
    result = train(
        model, ScheduleConfig("linear", 100).build(), data, config, checkpoint_dir=checkpoint_dir, progress=False
    )
    return model, result


def test_trainer_probes_leave_training_bit_identical_and_log_per_epoch(tmp_path):
    base = TrainConfig(epochs=4, batch_size=64, lr=1e-3, checkpoint_every=2)
    plain, _ = _gmm_run(base)
    probed, result = _gmm_run(TrainConfig(**{**base.__dict__, "noise_scale_every": 1, "noise_scale_probe": (32, 4)}))
    for a, b in zip(plain.state_dict().values(), probed.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert all({"grad_sq_norm", "grad_trace_cov", "noise_scale"} <= row.keys() for row in result.history)
    assert all(row["grad_trace_cov"] > 0 for row in result.history)

    # every second epoch only, and a resumed run probes (and trains) exactly like an uninterrupted one
    config = TrainConfig(**{**base.__dict__, "noise_scale_every": 2, "noise_scale_probe": (32, 4)})
    _, full = _gmm_run(config)
    assert ["noise_scale" in row for row in full.history] == [False, True, False, True]
    _gmm_run(TrainConfig(**{**config.__dict__, "epochs": 2}), checkpoint_dir=tmp_path)
    resumed_model, resumed = _gmm_run(config, checkpoint_dir=tmp_path)
    assert [row.get("noise_scale") for row in resumed.history] == [row.get("noise_scale") for row in full.history]

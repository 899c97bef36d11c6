"""Guidance wrappers against known answers: CFG's endpoints, one model call per step, classifier guidance on
Gaussian class conditionals where every score is closed-form."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from diffbench.guidance import ClassifierFreeGuidance, ClassifierGuidance, check_scale
from diffbench.models import UNet
from diffbench.sampling import ddim_sample, randn, sample_generators, uniform_timesteps
from diffbench.schedules import NoiseSchedule

torch.set_default_dtype(torch.float32)


@pytest.fixture(scope="module")
def unet() -> nn.Module:
    torch.manual_seed(0)
    model = UNet(1.0, base_channels=8, channel_mults=(1, 2), image_size=8, num_classes=3, attention_resolutions=())
    return model.eval()


def _batch(n: int = 4) -> tuple[Tensor, Tensor, Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 1, 8, 8, generator=g), torch.randint(0, 1000, (n,), generator=g), torch.arange(n) % 3


class CountingModel(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model, self.num_classes, self.calls, self.batches = model, model.num_classes, 0, []

    def forward(self, x, t, y=None):
        self.calls += 1
        self.batches.append(len(x))
        return self.model(x, t, y=y)


@torch.no_grad()
def test_cfg_endpoints_are_the_conditional_and_unconditional_model_exactly(unet):
    x, t, y = _batch()
    assert torch.equal(ClassifierFreeGuidance(unet, 1.0)(x, t, y=y), unet(x, t, y=y))
    assert torch.equal(ClassifierFreeGuidance(unet, 0.0)(x, t, y=y), unet(x, t, y=torch.full_like(y, 3)))


@torch.no_grad()
def test_cfg_is_the_linear_combination(unet):
    x, t, y = _batch()
    eps_c, eps_u = unet(x, t, y=y), unet(x, t, y=torch.full_like(y, 3))
    for w in (0.5, 3.0, 7.0):
        torch.testing.assert_close(ClassifierFreeGuidance(unet, w)(x, t, y=y), eps_u + w * (eps_c - eps_u))


@torch.no_grad()
def test_cfg_makes_one_model_call_per_sampler_step(unet):
    counting = CountingModel(unet)
    schedule = NoiseSchedule.cosine(1000)
    grid = uniform_timesteps(1000, 7)
    x_T = randn((5, 1, 8, 8), sample_generators(0, 5), "cpu")
    ddim_sample(ClassifierFreeGuidance(counting, 3.0), x_T, grid, schedule, cond={"y": torch.arange(5) % 3})
    assert counting.calls == len(grid) and counting.batches == [10] * len(grid)


@torch.no_grad()
def test_classifier_guidance_at_scale_zero_is_unguided_sampling(unet):
    schedule = NoiseSchedule.cosine(1000)
    classifier = ToyClassifier(torch.zeros(3, 64), schedule)
    grid, y = uniform_timesteps(1000, 5), torch.arange(4) % 3
    x_T = randn((4, 1, 8, 8), sample_generators(3, 4), "cpu")
    guided = ddim_sample(ClassifierGuidance(unet, classifier, schedule, 0.0), x_T, grid, schedule, cond={"y": y})
    plain = ddim_sample(unet, x_T, grid, schedule, cond={"y": torch.full_like(y, 3)})
    assert torch.equal(guided, plain)


@torch.no_grad()
def test_both_methods_at_scale_zero_are_the_same_null_label_model(unet):
    schedule = NoiseSchedule.cosine(1000)
    x, t, y = _batch()
    classifier = ToyClassifier(torch.zeros(3, 64), schedule)
    cg = ClassifierGuidance(unet, classifier, schedule, 0.0)(x, t, y=y)
    assert torch.equal(cg, ClassifierFreeGuidance(unet, 0.0)(x, t, y=y))


# --- Gaussian class conditionals: x0 | y ~ N(mu_y, s^2 I), equiprobable classes -------------------------------


class ToyClassifier(nn.Module):
    """The exact ``log p(y | x_t, t)`` up to a constant: ``-|x - sqrt(abar) mu_y|^2 / (2 v)``,
    ``v = abar s^2 + 1 - abar`` (all classes share ``v``, so the normaliser cancels in the softmax)."""

    def __init__(self, means: Tensor, schedule: NoiseSchedule, std: float = 0.5) -> None:
        super().__init__()
        self.means, self.abar, self.std, self.num_classes = means, schedule.alpha_bar, std, len(means)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        abar = self.abar[t].to(x.dtype)[:, None, None]
        var = abar * self.std**2 + 1 - abar
        diff = x.flatten(1)[:, None, :] - abar.sqrt() * self.means[None].to(x.dtype)
        return -(diff**2).sum(-1) / (2 * var[:, :, 0])


class ToyDenoiser(nn.Module):
    """The exact eps of the same law: conditional ``eps_y = sqrt(1 - abar)(x - sqrt(abar) mu_y) / v`` and, for the
    null label, the mixture's ``eps_u = sum_k p(k | x) eps_k``."""

    def __init__(self, means: Tensor, schedule: NoiseSchedule, std: float = 0.5) -> None:
        super().__init__()
        self.classifier, self.abar, self.std = ToyClassifier(means, schedule, std), schedule.alpha_bar, std
        self.means, self.num_classes = means, len(means)

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        abar = self.abar[t].to(x.dtype)[:, None]
        var = abar * self.std**2 + 1 - abar
        flat = x.flatten(1)
        eps_k = (1 - abar).sqrt()[:, None] * (flat[:, None] - abar.sqrt()[:, None] * self.means[None]) / var[:, None]
        posterior = torch.softmax(self.classifier(x, t), dim=1)
        mixture = (posterior[:, :, None] * eps_k).sum(1)
        conditional = eps_k[torch.arange(len(x)), y.clamp(max=self.num_classes - 1)]
        return torch.where((y == self.num_classes)[:, None], mixture, conditional).reshape(x.shape)


def _toy(d: int = 4):
    schedule = NoiseSchedule.cosine(1000)
    means = torch.tensor([[2.0, 0, 0, 0], [-2.0, 1, 0, 0], [0, -2.0, 1, 0]], dtype=torch.float64)[:, :d]
    g = torch.Generator().manual_seed(5)
    x, t = torch.randn(6, d, generator=g, dtype=torch.float64), torch.tensor([10, 200, 400, 600, 800, 990])
    return schedule, means, x, t, torch.tensor([0, 1, 2, 0, 1, 2])


def test_classifier_guidance_shift_equals_the_closed_form_score_difference():
    schedule, means, x, t, y = _toy()
    model, classifier = ToyDenoiser(means, schedule), ToyClassifier(means, schedule)
    abar = schedule.alpha_bar[t][:, None]
    var = abar * 0.25 + 1 - abar
    # score of class y and of the mixture, in closed form
    score_k = -(x[:, None] - abar.sqrt()[:, None] * means[None]) / var[:, None]
    posterior = torch.softmax(-((x[:, None] - abar.sqrt()[:, None] * means[None]) ** 2).sum(-1) / (2 * var), dim=1)
    grad_log_p = score_k[torch.arange(len(x)), y] - (posterior[:, :, None] * score_k).sum(1)
    for s in (1.0, 3.0, 8.0):
        guided = ClassifierGuidance(model, classifier, schedule, s)(x, t, y=y)
        unguided = model(x, t, y=torch.full_like(y, 3))
        expected_shift = -s * (1 - abar).sqrt() * grad_log_p
        torch.testing.assert_close(guided - unguided, expected_shift, rtol=1e-9, atol=1e-12)


def test_classifier_guidance_at_scale_one_turns_the_exact_unconditional_model_into_the_conditional():
    """Bayes: grad log p(x|y) = grad log p(x) + grad log p(y|x), so s = 1 recovers eps_y exactly."""
    schedule, means, x, t, y = _toy()
    model = ToyDenoiser(means, schedule)
    guided = ClassifierGuidance(model, ToyClassifier(means, schedule), schedule, 1.0)(x, t, y=y)
    torch.testing.assert_close(guided, model(x, t, y=y), rtol=1e-9, atol=1e-12)


def test_cfg_at_scale_one_and_zero_on_the_toy():
    schedule, means, x, t, y = _toy()
    model = ToyDenoiser(means, schedule)
    torch.testing.assert_close(ClassifierFreeGuidance(model, 1.0)(x, t, y=y), model(x, t, y=y))
    torch.testing.assert_close(ClassifierFreeGuidance(model, 0.0)(x, t, y=y), model(x, t, y=torch.full_like(y, 3)))


# --- bad input -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("scale", [-1.0, math.nan, math.inf, "3", True])
def test_bad_scales_name_the_value(scale):
    with pytest.raises(ValueError, match="guidance scale must be a finite number >= 0"):
        check_scale(scale)


def test_guidance_needs_a_conditional_model_and_matching_classifier(unet):
    plain = UNet(1.0, base_channels=8, channel_mults=(1, 2), image_size=8, attention_resolutions=())
    with pytest.raises(ValueError, match="needs a class-conditional model"):
        ClassifierFreeGuidance(plain, 3.0)
    schedule = NoiseSchedule.cosine(1000)
    with pytest.raises(ValueError, match="the classifier has 2 classes, the model 3"):
        ClassifierGuidance(unet, ToyClassifier(torch.zeros(2, 64), schedule), schedule, 3.0)
    x, t, y = _batch()
    with pytest.raises(ValueError, match="needs class labels"):
        ClassifierFreeGuidance(unet, 3.0)(x, t)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\]"):
        ClassifierFreeGuidance(unet, 3.0)(x, t, y=torch.tensor([0, 1, 3, 0]))


def test_classifier_input_shape_must_match(unet):
    from diffbench.models.classifier import NoisyClassifier

    schedule = NoiseSchedule.cosine(1000)
    classifier = NoisyClassifier(in_channels=1, image_size=16, num_classes=3)
    x, t, y = _batch()
    with pytest.raises(ValueError, match=r"takes images of shape \(1, 16, 16\)"):
        ClassifierGuidance(unet, classifier, schedule, 3.0)(x, t, y=y)

"""Guidance as eps-model wrappers: a guided model is again ``eps(x, t, **cond) -> eps``, so every sampler
(DDPM, DDIM and any later one) gets classifier-free and classifier guidance without knowing about them.

- Classifier-free guidance (Ho & Salimans 2022, eq. 6): ``eps = eps_u + w (eps_c - eps_u)`` with ``eps_c`` the
  class-conditional prediction and ``eps_u`` the prediction for the null label (the model was trained with label
  dropout). ``w = 1`` is the conditional model, ``w = 0`` the unconditional one, ``w > 1`` extrapolates.
- Classifier guidance (Dhariwal & Nichol 2021, Algorithm 2 / eq. 14): with a noise-aware classifier
  ``p(y | x_t, t)``, ``eps = eps_u - s sqrt(1 - abar_t) grad_x log p(y | x_t, t)``: the score of ``p(x_t | y)`` is
  ``grad log p(x_t) + grad log p(y | x_t)`` and ``eps = -sqrt(1 - abar_t) score``. Here the guided branch is
  the same class-conditional network's null-label (unconditional) prediction, so CG and CFG differ only in the
  guidance.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from diffbench.schedules import NoiseSchedule


def check_scale(scale: float, name: str = "guidance scale") -> float:
    """A guidance scale must be a finite number >= 0; the error names the value."""
    if isinstance(scale, bool) or not isinstance(scale, int | float) or not math.isfinite(scale) or scale < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {scale!r}")
    return float(scale)


def num_classes_of(model: nn.Module) -> int:
    return int(getattr(model, "num_classes", 0) or 0)


def _check_conditional(model: nn.Module, what: str) -> int:
    classes = num_classes_of(model)
    if classes < 1:
        raise ValueError(f"{what} needs a class-conditional model with a null label (num_classes > 0), got 0 classes")
    return classes


def _labels(y: Tensor | None, batch: int, classes: int) -> Tensor:
    if y is None:
        raise ValueError("guidance needs class labels y [B]: pass cond={'y': labels} to the sampler")
    if y.shape != (batch,):
        raise ValueError(f"labels y must have shape [{batch}], got {list(y.shape)}")
    # Reading the labels back to the host is not allowed while a CUDA graph is being captured; a captured sampler
    # calls ``check_cond`` (this check) before every replay instead (diffbench.graphs).
    capturing = y.is_cuda and torch.cuda.is_current_stream_capturing()
    if len(y) and not capturing and (int(y.min()) < 0 or int(y.max()) >= classes):
        raise ValueError(f"labels must lie in [0, {classes - 1}] (the null label is not a class), got {y.tolist()}")
    return y


class ClassifierFreeGuidance(nn.Module):
    """``eps(x, t, y) = eps_u + w (eps_c - eps_u)`` from ONE forward of the wrapped model on the doubled batch
    ``[x; x]`` with labels ``[y; null]``. ``w = 1`` and ``w = 0`` call the model once on the plain batch (labels
    ``y`` resp. the null label), so they equal the conditional and the unconditional model exactly."""

    def __init__(self, model: nn.Module, scale: float) -> None:
        super().__init__()
        self.num_classes = _check_conditional(model, "classifier-free guidance")
        self.model, self.scale = model, check_scale(scale)

    def check_cond(self, x: Tensor, y: Tensor | None = None) -> None:
        """The label check of ``forward``, for a captured sampler to run before each replay."""
        _labels(y, len(x), self.num_classes)

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        y = _labels(y, len(x), self.num_classes)
        null = torch.full_like(y, self.num_classes)
        if self.scale == 1.0:
            return self.model(x, t, y=y)
        if self.scale == 0.0:
            return self.model(x, t, y=null)
        t = torch.as_tensor(t, device=x.device).reshape(-1).expand(len(x))
        eps_c, eps_u = self.model(torch.cat([x, x]), torch.cat([t, t]), y=torch.cat([y, null])).chunk(2)
        return eps_u + self.scale * (eps_c - eps_u)


class ClassifierGuidance(nn.Module):
    """``eps(x, t, y) = eps_u(x, t) - s sqrt(1 - abar_t) grad_x log p(y | x, t)`` (Dhariwal & Nichol 2021), with
    ``eps_u`` the model's null-label prediction and ``p`` a noise-aware classifier ``classifier(x, t) -> logits``.
    Scale 0 skips the classifier: the unguided null-label model exactly. Samplers run under ``no_grad``; the
    gradient is taken with grad enabled locally on a detached copy of ``x``, which is why a sampler never captures
    it as a CUDA graph (``capturable = False``)."""

    capturable = False

    def __init__(self, model: nn.Module, classifier: nn.Module, schedule: NoiseSchedule, scale: float) -> None:
        super().__init__()
        self.num_classes = _check_conditional(model, "classifier guidance")
        classes = num_classes_of(classifier)
        if classes != self.num_classes:
            raise ValueError(
                f"the classifier has {classes} classes, the model {self.num_classes}: they must share the labels"
            )
        self.model, self.classifier, self.scale = model, classifier.eval(), check_scale(scale)
        # sqrt(1 - abar_t) per timestep (float64, cast to the batch's dtype when used).
        self.register_buffer("sigma", (1 - schedule.alpha_bar).sqrt(), persistent=False)

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        y = _labels(y, len(x), self.num_classes)
        eps = self.model(x, t, y=torch.full_like(y, self.num_classes))
        if self.scale == 0.0:
            return eps
        t = torch.as_tensor(t, device=x.device).reshape(-1).expand(len(x))
        grad = class_log_prob_grad(self.classifier, x, t, y)
        sigma = self.sigma.to(device=x.device, dtype=x.dtype)[t].reshape(-1, *([1] * (x.ndim - 1)))
        return eps - self.scale * sigma * grad


def class_log_prob_grad(classifier: nn.Module, x: Tensor, t: Tensor, y: Tensor) -> Tensor:
    """``grad_x log p(y_i | x_i, t_i)`` per sample ``[B, ...]``: the log-probabilities are summed over the batch
    (samples are independent, so each sample's gradient is its own)."""
    if tuple(x.shape[1:]) != _input_shape(classifier, x):
        raise ValueError(f"the classifier takes images of shape {_input_shape(classifier, x)}, got {list(x.shape[1:])}")
    with torch.enable_grad():
        x_in = x.detach().requires_grad_(True)
        log_p = F.log_softmax(classifier(x_in, t), dim=1)
        (grad,) = torch.autograd.grad(log_p.gather(1, y[:, None]).sum(), x_in)
    return grad


def _input_shape(classifier: nn.Module, x: Tensor) -> tuple[int, ...]:
    channels = getattr(classifier, "in_channels", x.shape[1])
    size = getattr(classifier, "image_size", None)
    return (channels, size, size) if size is not None else tuple(x.shape[1:])

"""Teacher -> student knowledge distillation as a loss for the one trainer (``train(..., loss_fn=...)``).

Knowledge distillation (Hinton, Vinyals & Dean 2015, "Distilling the Knowledge in a Neural Network") trains a
small student on a large teacher's outputs instead of the data's targets; for diffusion models the teacher's
output is its noise prediction, and regressing it on the same noisy inputs is the "knowledge distillation" of
Luhman & Luhman 2021 ("Knowledge Distillation in Iterative Generative Models for Improved Sampling Speed")
applied per timestep. The control (training the student from data) is the trainer's default ``epsilon_loss``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from diffbench.models import device_of


def distillation_loss(teacher: nn.Module) -> Callable[[nn.Module, Tensor, Tensor, Tensor, dict], Tensor]:
    """A trainer ``loss_fn(student, x_t, t, noise, cond)`` for distillation from ``teacher``:

    ``L = E_{x_0, t, eps} || eps_teacher(x_t, t, c) - eps_student(x_t, t, c) ||^2`` (mean over elements), with
    ``x_t`` the trainer's noisy batch and ``c`` its conditioning (labels, null labels under label dropout, which
    both models must share: same ``num_classes``). The sampled ``noise`` is not a target here. The teacher is put
    in eval mode (no dropout), runs without gradients, and is moved to the batch's device on first use.
    """
    teacher.eval()
    teacher_classes = int(getattr(teacher, "num_classes", 0) or 0)

    def loss_fn(student: nn.Module, x_t: Tensor, t: Tensor, noise: Tensor, cond: dict) -> Tensor:
        student_classes = int(getattr(student, "num_classes", 0) or 0)
        if student_classes != teacher_classes:
            raise ValueError(
                f"student and teacher must share the label space (null label = num_classes), got num_classes "
                f"{student_classes} for the student and {teacher_classes} for the teacher"
            )
        if device_of(teacher) != x_t.device:
            teacher.to(x_t.device)
        with torch.no_grad():
            target = teacher(x_t, t, **cond)
        return torch.mean((target - student(x_t, t, **cond)) ** 2)

    return loss_fn

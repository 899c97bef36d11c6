"""Teacher -> student distillation, each method a loss for the one trainer (``train(..., loss_fn=...)``).

- **Knowledge distillation** (Hinton, Vinyals & Dean 2015, "Distilling the Knowledge in a Neural Network"),
  applied per timestep: a (smaller) student regresses the teacher's noise prediction on the same noisy inputs
  (:func:`distillation_loss`; the size_factors students). It keeps the step count: it makes models smaller.
- **Progressive distillation** (Salimans & Ho 2022, "Progressive Distillation for Fast Sampling of Diffusion
  Models", Algorithm 2): a student initialised from the teacher learns to match two DDIM steps of the teacher
  with one of its own; rounds halve the step count (:class:`ProgressiveDistillationLoss`).
- **One-step distillation** (Luhman & Luhman 2021, "Knowledge Distillation in Iterative Generative Models for
  Improved Sampling Speed"): (noise, teacher sample) pairs are drawn once, and the student maps the noise to the
  teacher's sample in one forward (:func:`one_step_loss` over a dataset with paired noise).
- **Consistency distillation** (Song, Dhariwal, Chen & Sutskever 2023, "Consistency Models", Algorithm 2): a
  consistency function ``f(x_t, t)`` (:class:`ConsistencyFunction`) trained so that ``f`` at ``t_{n+1}`` matches an
  EMA target at the teacher's one-step DDIM estimate of ``x_{t_n}`` (:class:`ConsistencyDistillationLoss`).

Every teacher step here is :func:`diffbench.sampling.denoise` + :func:`diffbench.sampling.ddim_step`, the same
code the samplers run, so a distillation target is exactly what the teacher's sampler would produce.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from diffbench.models import device_of
from diffbench.sampling import EpsModel, check_timesteps, ddim_step, denoise, predict_x0_eps
from diffbench.schedules import NoiseSchedule, ScheduleConfig
from diffbench.training import TrainBatch


def _num_classes(model: object) -> int:
    return int(getattr(model, "num_classes", 0) or 0)


def check_same_labels(student: object, teacher: object) -> None:
    if _num_classes(student) != _num_classes(teacher):
        raise ValueError(
            f"student and teacher must share the label space (null label = num_classes), got num_classes "
            f"{_num_classes(student)} for the student and {_num_classes(teacher)} for the teacher"
        )


def check_same_schedule(student: ScheduleConfig, teacher: ScheduleConfig) -> None:
    """A student samples on its teacher's noise schedule; anything else distils a different process."""
    if student != teacher:
        raise ValueError(
            f"a student must use its teacher's noise schedule: got {student.kind} with T = {student.num_steps} "
            f"for the student and {teacher.kind} with T = {teacher.num_steps} for the teacher"
        )


def _prepare_teacher(teacher: nn.Module, device: torch.device) -> nn.Module:
    if device_of(teacher) != device:
        teacher.to(device)
    return teacher.eval()


def distillation_loss(teacher: nn.Module) -> Callable[[nn.Module, TrainBatch], Tensor]:
    """A trainer loss for per-timestep knowledge distillation from ``teacher``:

    ``L = E_{x_0, t, eps} || eps_teacher(x_t, t, c) - eps_student(x_t, t, c) ||^2`` (mean over elements), with
    ``x_t`` the trainer's noisy batch and ``c`` its conditioning (labels, null labels under label dropout, which
    both models must share: same ``num_classes``). The sampled noise is not a target here. The teacher is put
    in eval mode (no dropout), runs without gradients, and is moved to the batch's device on first use.
    """
    teacher.eval()

    def loss_fn(student: nn.Module, batch: TrainBatch) -> Tensor:
        check_same_labels(student, teacher)
        _prepare_teacher(teacher, batch.x_t.device)
        with torch.no_grad():
            target = teacher(batch.x_t, batch.t, **batch.cond)
        return torch.mean((target - student(batch.x_t, batch.t, **batch.cond)) ** 2)

    # Device work only (the checks read attributes), so the trainer may capture its step where the teacher's
    # forward can be captured too (diffbench.training.train_capture_blocker).
    loss_fn.capturable = getattr(teacher, "capturable", True)
    return loss_fn


# --- progressive distillation ------------------------------------------------------------------------------


def halve_grid(grid: Sequence[int], num_steps_T: int) -> list[int]:
    """The student's grid of a progressive-distillation round: every other point of the teacher's ``N``-step
    grid (``grid[0], grid[2], ..., grid[N-2]``), so each student step spans exactly two teacher steps (the last
    one ends at ``x0``). ``N`` must be even: ``N = 1`` would leave a round below one step."""
    grid = check_timesteps(grid, num_steps_T)
    if len(grid) < 2 or len(grid) % 2:
        raise ValueError(
            f"a progressive-distillation round halves its teacher's step count, which must be even and >= 2; got "
            f"{len(grid)} teacher steps (a round from {len(grid)} would leave {len(grid) / 2:g} student steps)"
        )
    return grid[::2]


def progressive_grids(base_grid: Sequence[int], final_steps: int, num_steps_T: int) -> list[list[int]]:
    """The teachers' grids of every round from ``base_grid`` (the original model's sampler, ``N`` steps) down to a
    student with ``final_steps``: ``[base (N), N/2, ..., 2 final_steps]``. Each round ``r`` distils grid ``r`` into
    ``halve_grid(grid r)``."""
    if final_steps < 1:
        raise ValueError(f"a progressive-distillation round must leave at least 1 step, got final steps {final_steps}")
    grids = [check_timesteps(base_grid, num_steps_T)]
    while len(grids[-1]) > final_steps:
        grids.append(halve_grid(grids[-1], num_steps_T))
    if len(grids[-1]) != final_steps:
        raise ValueError(
            f"halving {len(grids[0])} steps never reaches {final_steps}: progressive distillation needs "
            f"N = {final_steps} * 2^k"
        )
    return grids[:-1]


def two_step_target(x_t: Tensor, x_t2: Tensor, abar_t: Tensor, abar_t2: Tensor) -> Tensor:
    """The ``x0`` a one-step DDIM move from ``x_t`` to ``abar_t2`` must use to land on ``x_t2`` (Salimans & Ho
    2022, Algorithm 2): ``x~ = (x_t2 - (sigma_t2 / sigma_t) x_t) / (alpha_t2 - (sigma_t2 / sigma_t) alpha_t)``,
    ``alpha = sqrt(abar)``, ``sigma = sqrt(1 - abar)``; at the last step (``abar_t2 = 1``) ``x~ = x_t2``."""
    alpha_t, sigma_t = abar_t.sqrt(), (1 - abar_t).sqrt()
    alpha_2, sigma_2 = abar_t2.sqrt(), (1 - abar_t2).sqrt()
    ratio = sigma_2 / sigma_t
    return ((x_t2 - ratio.to(x_t.dtype) * x_t) / (alpha_2 - ratio * alpha_t).to(x_t.dtype)).to(x_t.dtype)


class _GridLookup:
    """Maps a timestep of a descending grid to its successors (``-1``: the final step to ``abar = 1``)."""

    def __init__(self, grid: Sequence[int], num_steps_T: int) -> None:
        self.grid = list(grid)
        self.position = torch.full((num_steps_T,), -1, dtype=torch.long)
        self.position[torch.tensor(self.grid)] = torch.arange(len(self.grid))

    def after(self, t: Tensor, k: int) -> Tensor:
        """The grid point ``k`` places after each ``t`` (``-1`` past the end)."""
        index = self.position[t.cpu()]
        if bool((index < 0).any()):
            raise ValueError(f"timesteps {t[index < 0].unique().tolist()} are not on the grid {self.grid}")
        padded = torch.tensor([*self.grid, *([-1] * k)])
        return padded[index + k]


def _abar(schedule: NoiseSchedule, t: Tensor, ndim: int) -> Tensor:
    """``abar_t`` ``[B, 1, ...]`` (float64) with ``abar_{-1} = 1`` (after the last step)."""
    padded = torch.cat([schedule.alpha_bar, torch.ones(1, dtype=torch.float64)])
    return padded[t.cpu()].reshape((-1,) + (1,) * (ndim - 1))


@torch.no_grad()
def teacher_ddim_step(
    teacher: EpsModel,
    x_t: Tensor,
    t: Tensor,
    t_prev: Tensor,
    schedule: NoiseSchedule,
    *,
    prediction: str = "eps",
    cond: dict | None = None,
    clip_denoised: float | None = None,
) -> Tensor:
    """One deterministic DDIM step per sample from ``t`` to ``t_prev`` (``-1``: to ``x0``), the sampler's own
    arithmetic (:func:`~diffbench.sampling.denoise`, :func:`~diffbench.sampling.ddim_step`)."""
    x0, eps = denoise(teacher, x_t, t, schedule, prediction=prediction, cond=cond, clip_denoised=clip_denoised)
    return ddim_step(x0, eps, _abar(schedule, t_prev, x_t.ndim).to(x_t.device))


class ProgressiveDistillationLoss:
    """One round of progressive distillation (Salimans & Ho 2022, Algorithm 2) as a trainer loss.

    The teacher samples on ``grid`` (``N`` steps, eps- or v-prediction: ``teacher_prediction``); the student
    (v-prediction, initialised from the teacher's weights) on ``student_grid = halve_grid(grid)``. For ``x_t`` at a
    student timestep ``t = grid[2i]``, the teacher takes two DDIM steps ``t -> grid[2i+1] -> grid[2i+2]`` (or to
    ``x0``), and the student's ``x0`` estimate regresses the :func:`two_step_target` with the paper's
    truncated-SNR weight ``max(SNR_t, 1)`` (its "SNR+1"-like remedy for ``SNR -> 0``, where an eps-prediction
    cannot give ``x0``): ``L = max(SNR_t, 1) || x~ - x0_student(x_t) ||^2``. Train with
    ``train(..., timesteps=loss.student_grid)``.
    """

    def __init__(
        self,
        teacher: EpsModel,
        schedule: NoiseSchedule,
        grid: Sequence[int],
        *,
        teacher_prediction: str = "eps",
        clip_denoised: float | None = None,
    ) -> None:
        self.teacher, self.schedule = teacher, schedule
        self.student_grid = halve_grid(grid, schedule.num_steps)
        self.lookup = _GridLookup(check_timesteps(grid, schedule.num_steps), schedule.num_steps)
        self.teacher_prediction, self.clip = teacher_prediction, clip_denoised
        if isinstance(teacher, nn.Module):
            teacher.eval()

    @torch.no_grad()
    def target(self, x_t: Tensor, t: Tensor, cond: dict | None = None) -> Tensor:
        """The ``x0`` target ``x~`` for ``x_t`` at student timesteps ``t`` (two teacher steps, then solved)."""
        t1, t2 = self.lookup.after(t, 1), self.lookup.after(t, 2)
        kwargs = {"prediction": self.teacher_prediction, "cond": cond, "clip_denoised": self.clip}
        x_t1 = teacher_ddim_step(self.teacher, x_t, t, t1.to(x_t.device), self.schedule, **kwargs)
        x_t2 = teacher_ddim_step(self.teacher, x_t1, t1.to(x_t.device), t2, self.schedule, **kwargs)
        abar_t, abar_t2 = _abar(self.schedule, t, x_t.ndim), _abar(self.schedule, t2, x_t.ndim)
        return two_step_target(x_t, x_t2, abar_t.to(x_t.device), abar_t2.to(x_t.device))

    def __call__(self, student: nn.Module, batch: TrainBatch) -> Tensor:
        if isinstance(self.teacher, nn.Module):
            check_same_labels(student, self.teacher)
            _prepare_teacher(self.teacher, batch.x_t.device)
        target = self.target(batch.x_t, batch.t, batch.cond)
        abar = _abar(self.schedule, batch.t, batch.x_t.ndim).to(batch.x_t.device)
        x0, _ = predict_x0_eps(student(batch.x_t, batch.t, **batch.cond), batch.x_t, abar, "v")
        weight = (abar / (1 - abar)).clamp(min=1).to(x0.dtype)  # truncated SNR: max(SNR_t, 1)
        return torch.mean(weight * (target - x0) ** 2)


# --- one-step distillation ---------------------------------------------------------------------------------


def one_step_loss(student: nn.Module, batch: TrainBatch) -> Tensor:
    """Luhman & Luhman 2021: ``L = || x0_teacher - f_student(z, T-1) ||^2`` over (noise ``z``, teacher sample)
    pairs; the trainer hands each pair's noise as ``batch.noise`` and its sample as ``batch.x0`` (a dataset with
    paired noise, ``timesteps=[T-1]``). The student's output is its ``x0`` (``prediction="x0"``)."""
    return torch.mean((student(batch.noise, batch.t, **batch.cond) - batch.x0) ** 2)


one_step_loss.capturable = True  # device work only: the trainer may capture its step


# --- consistency distillation ------------------------------------------------------------------------------


class ConsistencyFunction(nn.Module):
    """``f(x_t, t) = c_skip(t) x_t + c_out(t) F(x_t, t)`` (Song et al. 2023, eq. 5 and App. C), for the VP process
    here with the noise level ``kappa_t = sigma_t / alpha_t`` (``x_t / alpha_t = x0 + kappa_t eps``) in the
    paper's place of ``t``: ``c_skip = sigma_d^2 / ((kappa_t - kappa_min)^2 + sigma_d^2)``,
    ``c_out = sigma_d (kappa_t - kappa_min) / sqrt(sigma_d^2 + kappa_t^2)``, ``sigma_d`` the data's standard
    deviation (0.5 for images in [-1, 1]). At ``t_min`` ``kappa_t - kappa_min`` is exactly 0, so ``c_skip = 1``,
    ``c_out = 0`` and ``f(x, t_min) = x`` exactly (the boundary condition).

    ``F`` is the unit-scale denoiser the paper's preconditioning expects, built from the network ``net`` read as a
    v-prediction (``F = (alpha_t x_t - sigma_t v) / sigma_d``, Salimans & Ho 2022): an eps-trained teacher's
    weights then start ``F`` near the teacher's ``x0`` estimate wherever ``SNR >~ 1``, and ``F`` stays bounded at
    ``SNR -> 0`` (an eps-model's ``x0 = (x_t - sigma eps) / alpha`` does not). ``f`` outputs an ``x0`` estimate
    (``prediction="x0"``)."""

    def __init__(self, net: nn.Module, schedule: NoiseSchedule, t_min: int, sigma_data: float = 0.5) -> None:
        super().__init__()
        if not 0 <= t_min < schedule.num_steps:
            raise ValueError(f"t_min must lie in [0, {schedule.num_steps - 1}], got {t_min}")
        if not sigma_data > 0:
            raise ValueError(f"sigma_data must be > 0, got {sigma_data}")
        self.net, self.t_min, self.sigma_data = net, t_min, sigma_data
        self.num_classes = _num_classes(net)
        abar = schedule.alpha_bar
        kappa = ((1 - abar) / abar).sqrt()
        shifted = kappa - kappa[t_min]
        c_skip = sigma_data**2 / (shifted**2 + sigma_data**2)
        c_out = sigma_data * shifted / (sigma_data**2 + kappa**2).sqrt()
        self.register_buffer("c_skip", c_skip.float(), persistent=False)
        self.register_buffer("c_out", c_out.float(), persistent=False)
        self.register_buffer("abar", abar.float(), persistent=False)

    def forward(self, x: Tensor, t: Tensor, **cond: Tensor) -> Tensor:
        if bool((t < self.t_min).any()):
            raise ValueError(f"a consistency function is defined for t >= t_min = {self.t_min}, got {int(t.min())}")
        shape = (-1,) + (1,) * (x.ndim - 1)
        denoised, _ = predict_x0_eps(self.net(x, t, **cond), x, self.abar[t].reshape(shape), "v")
        return self.c_skip[t].reshape(shape) * x + self.c_out[t].reshape(shape) * (denoised / self.sigma_data)


class ConsistencyDistillationLoss:
    """Consistency distillation (Song et al. 2023, Algorithm 2) as a trainer loss, with the teacher's DDIM step
    as the ODE solver and squared L2 as the distance ``d``.

    On the descending ``grid`` ``t_N > ... > t_1 = t_min``, for ``x_{t_{n+1}}`` from the trainer (timesteps
    ``grid[:-1]``): ``x^_{t_n}`` = one teacher DDIM step ``t_{n+1} -> t_n``;
    ``L = || f_theta(x_{t_{n+1}}, t_{n+1}) - f_theta-(x^_{t_n}, t_n) ||^2`` with ``theta-`` the target network,
    updated as ``theta- <- mu theta- + (1 - mu) theta`` before each loss (i.e. after each optimiser step). The
    target's weights are the loss's state: the trainer checkpoints and restores them.
    """

    def __init__(
        self,
        teacher: EpsModel,
        schedule: NoiseSchedule,
        grid: Sequence[int],
        *,
        target_decay: float,
        teacher_prediction: str = "eps",
        clip_denoised: float | None = None,
    ) -> None:
        grid = check_timesteps(grid, schedule.num_steps)
        if len(grid) < 2:
            raise ValueError(f"consistency distillation needs a grid of at least 2 timesteps, got {grid}")
        if not 0 <= target_decay < 1:
            raise ValueError(f"target_decay (mu) must be in [0, 1), got {target_decay}")
        self.teacher, self.schedule, self.grid = teacher, schedule, grid
        self.train_timesteps = grid[:-1]
        self.lookup = _GridLookup(grid, schedule.num_steps)
        self.target_decay, self.teacher_prediction, self.clip = target_decay, teacher_prediction, clip_denoised
        self.target_net: ConsistencyFunction | None = None
        self._pending_state: dict[str, Tensor] | None = None
        if isinstance(teacher, nn.Module):
            teacher.eval()

    def _update_target(self, student: ConsistencyFunction) -> ConsistencyFunction:
        if self.target_net is None:
            self.target_net = copy.deepcopy(student).eval().requires_grad_(False)
            if self._pending_state is None:
                return self.target_net  # a fresh target is the student: the update would not change it
            # Restored from a checkpoint taken before the last optimiser step: apply this call's update too.
            self.target_net.load_state_dict(self._pending_state)
            self._pending_state = None
        with torch.no_grad():
            for target, online in zip(self.target_net.parameters(), student.parameters(), strict=True):
                target.lerp_(online, 1 - self.target_decay)
        return self.target_net

    def state_dict(self) -> dict[str, Tensor] | None:
        if self.target_net is None:
            return self._pending_state
        return {k: v.detach().clone() for k, v in self.target_net.state_dict().items()}

    def load_state_dict(self, state: dict[str, Tensor] | None) -> None:
        self.target_net, self._pending_state = None, state

    def __call__(self, student: nn.Module, batch: TrainBatch) -> Tensor:
        if not isinstance(student, ConsistencyFunction):
            raise TypeError(f"consistency distillation trains a ConsistencyFunction, got {type(student).__name__}")
        if isinstance(self.teacher, nn.Module):
            check_same_labels(student, self.teacher)
            _prepare_teacher(self.teacher, batch.x_t.device)
        target_net = self._update_target(student)
        t_next = self.lookup.after(batch.t, 1).to(batch.t.device)
        with torch.no_grad():
            x_next = teacher_ddim_step(
                self.teacher,
                batch.x_t,
                batch.t,
                t_next,
                self.schedule,
                prediction=self.teacher_prediction,
                cond=batch.cond,
                clip_denoised=self.clip,
            )
            target = target_net(x_next, t_next, **batch.cond)
        return torch.mean((student(batch.x_t, batch.t, **batch.cond) - target) ** 2)


def consistency_midpoint(schedule: NoiseSchedule, grid: Sequence[int], log_snr: float = 0.0) -> int:
    """The grid point whose log-SNR is closest to ``log_snr`` (default 0: SNR = 1), where 2-step consistency
    sampling re-noises (Song et al. 2023 pick the intermediate time by a search; this is a fixed, stated rule)."""
    grid = list(grid)
    values = schedule.snr(torch.tensor(grid)).log()
    return grid[int((values - log_snr).abs().argmin())]

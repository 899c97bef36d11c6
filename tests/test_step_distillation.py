"""Step distillation against known answers: the progressive-distillation target for the exact Gaussian teacher
(solved by hand), the ideal student reproducing its teacher in half the steps, the consistency function's
boundary condition and coefficients, consistency distillation's target network (starts at the student, EMA
update, zero loss for the exact consistency function, checkpoint/resume), the trainer's timestep set and paired
noise, one-step distillation learning a linear map, and clear errors for bad rounds, schedules and times."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from gaussian_law import alpha_sigma, gaussian_eps
from torch import nn

from diffbench.data import Dataset
from diffbench.distill import (
    ConsistencyDistillationLoss,
    ConsistencyFunction,
    ProgressiveDistillationLoss,
    check_same_schedule,
    halve_grid,
    one_step_loss,
    progressive_grids,
)
from diffbench.models import ModelConfig
from diffbench.sampling import TrajectoryRecorder, consistency_sample, ddim_sample, uniform_timesteps
from diffbench.schedules import NoiseSchedule, ScheduleConfig
from diffbench.training import TrainBatch, TrainConfig, train

T = 1000
MU = torch.tensor([1.5, -2.0], dtype=torch.float64)
S = 0.5
SIGMA_DATA = 0.5  # ConsistencyFunction's default


def _noise(*shape: int, seed: int = 0, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _mlp(seed: int, hidden: int = 16) -> nn.Module:
    return ModelConfig.of("mlp", hidden=hidden).build(seed=seed)


def _hand_ddim_step(x: torch.Tensor, t: int, t_prev: int, schedule: NoiseSchedule) -> torch.Tensor:
    """One DDIM step (Song et al. 2021, eq. 12, eta = 0) of the exact Gaussian teacher, written out:
    ``eps = sigma (x - alpha mu) / (alpha^2 s^2 + sigma^2)``, ``x0 = (x - sigma eps) / alpha``,
    ``x_prev = alpha_prev x0 + sigma_prev eps``."""
    alpha, sigma = alpha_sigma(schedule, t)
    alpha_prev, sigma_prev = alpha_sigma(schedule, t_prev)
    eps = sigma * (x - alpha * MU) / (alpha**2 * S**2 + sigma**2)
    x0 = (x - sigma * eps) / alpha
    return alpha_prev * x0 + sigma_prev * eps


def _hand_two_step(x_t: torch.Tensor, t: torch.Tensor, grid: list[int], schedule: NoiseSchedule):
    """Per row: two teacher steps ``t -> t1 -> t2`` on ``grid`` (``t2 = -1`` past its end), and the x0 that one step
    ``t -> t2`` must use to land there (Salimans & Ho 2022, Algorithm 2):
    ``x~ = (x_t2 - (sigma_t2 / sigma_t) x_t) / (alpha_t2 - (sigma_t2 / sigma_t) alpha_t)``. Returns ``(x~, x_t2)``."""
    targets, landings = [], []
    for row, step in zip(x_t, t.tolist(), strict=True):
        position = grid.index(step)
        t1 = grid[position + 1]
        t2 = grid[position + 2] if position + 2 < len(grid) else -1
        x_t2 = _hand_ddim_step(_hand_ddim_step(row, step, t1, schedule), t1, t2, schedule)
        (alpha_t, sigma_t), (alpha_2, sigma_2) = alpha_sigma(schedule, step), alpha_sigma(schedule, t2)
        ratio = sigma_2 / sigma_t
        targets.append((x_t2 - ratio * row) / (alpha_2 - ratio * alpha_t))
        landings.append(x_t2)
    return torch.stack(targets), torch.stack(landings)


def _student_rows(student_grid: list[int], per_point: int) -> torch.Tensor:
    return torch.tensor([t for t in student_grid for _ in range(per_point)], dtype=torch.long)


# ------------------------------------------------------------------------------- progressive distillation


@pytest.mark.parametrize("kind", ["linear", "cosine"])
@pytest.mark.parametrize("teacher_steps", [2, 8])
def test_progressive_target_is_the_closed_form_two_step_solution(kind, teacher_steps):
    """``target(x_t, t)`` is the hand-computed ``x~`` for every student timestep, the last one (``t2 = -1``, where
    ``x~ = x_0`` of the teacher) included; and one DDIM step ``t -> t2`` that uses the library's ``x~`` as its x0,
    with ``eps~ = (x_t - alpha_t x~) / sigma_t``, lands on the teacher's two-step ``x_t2``:
    ``alpha_t2 x~ + sigma_t2 eps~ = x_t2``."""
    schedule = getattr(NoiseSchedule, kind)(T)
    grid = uniform_timesteps(T, teacher_steps)
    loss = ProgressiveDistillationLoss(gaussian_eps(schedule, MU, S), schedule, grid)
    assert loss.student_grid == grid[::2]
    t = _student_rows(loss.student_grid, 4)
    x_t = 1.3 * _noise(len(t), 2, seed=teacher_steps)
    expected, x_t2 = _hand_two_step(x_t, t, grid, schedule)
    got = loss.target(x_t, t)
    torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-9)

    for row, step in enumerate(t.tolist()):
        position = grid.index(step)
        t2 = grid[position + 2] if position + 2 < len(grid) else -1
        (alpha_t, sigma_t), (alpha_2, sigma_2) = alpha_sigma(schedule, step), alpha_sigma(schedule, t2)
        eps = (x_t[row] - alpha_t * got[row]) / sigma_t
        torch.testing.assert_close(alpha_2 * got[row] + sigma_2 * eps, x_t2[row], rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_the_ideal_student_reproduces_its_teacher_in_half_the_steps(kind):
    """A student whose x0 is the target, sampled with ``prediction="x0"`` on ``student_grid``, visits every other
    state of the teacher's DDIM trajectory and ends on the teacher's sample (each student step spans exactly two
    teacher steps, the last one ending at x0)."""
    schedule = getattr(NoiseSchedule, kind)(T)
    grid = uniform_timesteps(T, 8)
    teacher = gaussian_eps(schedule, MU, S)
    loss = ProgressiveDistillationLoss(teacher, schedule, grid)
    x_T = _noise(32, 2, seed=3)
    teacher_path, student_path = TrajectoryRecorder(record_x0=False), TrajectoryRecorder(record_x0=False)
    teacher_out = ddim_sample(teacher, x_T, grid, schedule, callback=teacher_path)
    student_out = ddim_sample(loss.target, x_T, loss.student_grid, schedule, prediction="x0", callback=student_path)
    torch.testing.assert_close(student_path.trajectory(), teacher_path.trajectory()[::2], rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(student_out, teacher_out, rtol=1e-9, atol=1e-9)
    assert (student_out - x_T).abs().min() > 1e-3  # it sampled: the check is not x_T == x_T


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_a_v_student_with_the_exact_v_has_zero_loss_and_the_weight_is_truncated_snr(kind):
    """The student outputs ``v = alpha eps~ - sigma x~`` with ``eps~ = (x_t - alpha x~) / sigma`` and ``x~`` solved by
    hand, so its x0 ``alpha x_t - sigma v = x~`` and the loss is 0 (to rounding). Shifting ``v`` by ``delta`` shifts x0
    by ``-sigma delta``, so the loss becomes ``delta^2 mean(max(SNR, 1) sigma^2) = delta^2 mean(max(abar, 1 - abar))``:
    the paper's truncated-SNR weight, checked in closed form."""
    schedule = getattr(NoiseSchedule, kind)(T)
    grid = uniform_timesteps(T, 8)
    loss = ProgressiveDistillationLoss(gaussian_eps(schedule, MU, S), schedule, grid)
    t = _student_rows(loss.student_grid, 3)
    x_t = _noise(len(t), 2, seed=5)
    batch = TrainBatch(torch.zeros_like(x_t), x_t, t, torch.zeros_like(x_t), {})

    def exact_v(x: torch.Tensor, steps: torch.Tensor, delta: float = 0.0) -> torch.Tensor:
        x_tilde, _ = _hand_two_step(x, steps, grid, schedule)
        abar = schedule.alpha_bar[steps].unsqueeze(-1)
        alpha, sigma = abar.sqrt(), (1 - abar).sqrt()
        eps_tilde = (x - alpha * x_tilde) / sigma
        return alpha * eps_tilde - sigma * x_tilde + delta

    assert loss(exact_v, batch).item() < 1e-18
    delta = 1e-3
    abar = schedule.alpha_bar[t]
    expected = delta**2 * torch.maximum(abar, 1 - abar).mean().item()
    got = loss(lambda x, steps: exact_v(x, steps, delta), batch).item()
    assert got == pytest.approx(expected, rel=1e-6)


def test_progressive_grids_halve_down_to_the_final_student():
    """Teachers' grids of every round from 8 steps to a 1-step student: 8, 4, 2 steps, each the previous one's
    every other point; a round's student spans two of its teacher's steps."""
    base = uniform_timesteps(T, 8)
    grids = progressive_grids(base, 1, T)
    assert [len(g) for g in grids] == [8, 4, 2]
    assert grids[0] == base
    for teacher_grid, student_grid in zip(grids, [*grids[1:], [T - 1]], strict=True):
        assert halve_grid(teacher_grid, T) == student_grid == teacher_grid[::2]


# ---------------------------------------------------------------------------------- consistency function


def _net_and_input(arch: str) -> tuple[nn.Module, torch.Tensor]:
    if arch == "mlp":
        return _mlp(0), _noise(6, 2, seed=1, dtype=torch.float32)
    return ModelConfig.of("unet", base_channels=8).build(seed=0), _noise(2, 1, 16, 16, seed=1, dtype=torch.float32)


@pytest.mark.parametrize("arch", ["mlp", "unet"])
@pytest.mark.parametrize("kind", ["linear", "cosine"])
@pytest.mark.parametrize("t_min", [0, 37])
def test_consistency_function_is_exactly_the_identity_at_t_min(arch, kind, t_min):
    """Boundary condition (Song et al. 2023, eq. 5): ``c_skip(t_min) = 1``, ``c_out(t_min) = 0``, so
    ``f(x, t_min) = x`` bit for bit, for an untrained network; at ``T-1`` the network is in play."""
    schedule = getattr(NoiseSchedule, kind)(T)
    net, x = _net_and_input(arch)
    f = ConsistencyFunction(net, schedule, t_min).eval()
    with torch.no_grad():
        assert torch.equal(f(x, torch.full((len(x),), t_min)), x)
        assert not torch.allclose(f(x, torch.full((len(x),), T - 1)), x, atol=1e-2)


@pytest.mark.parametrize("kind", ["linear", "cosine"])
@pytest.mark.parametrize("t_min", [0, 37])
def test_consistency_coefficients_match_the_closed_form(kind, t_min):
    """With ``kappa_t = sigma_t / alpha_t`` and ``sigma_d = 0.5``: ``c_skip = sigma_d^2 / ((kappa_t - kappa_min)^2 +
    sigma_d^2)``, ``c_out = sigma_d (kappa_t - kappa_min) / sqrt(sigma_d^2 + kappa_t^2)`` (Song et al. 2023, App. C),
    evaluated here in float64 (the module stores float32), and ``f = c_skip x + c_out F`` with the network read as
    a v-prediction, ``F = (alpha_t x - sigma_t v) / sigma_d``."""
    schedule = getattr(NoiseSchedule, kind)(T)
    abar = schedule.alpha_bar.tolist()
    kappa = [math.sqrt((1 - a) / a) for a in abar]
    c_skip = torch.tensor(
        [SIGMA_DATA**2 / ((k - kappa[t_min]) ** 2 + SIGMA_DATA**2) for k in kappa], dtype=torch.float64
    )
    c_out = torch.tensor(
        [SIGMA_DATA * (k - kappa[t_min]) / math.sqrt(SIGMA_DATA**2 + k**2) for k in kappa], dtype=torch.float64
    )
    net = _mlp(2)
    f = ConsistencyFunction(net, schedule, t_min)
    torch.testing.assert_close(f.c_skip.double(), c_skip, rtol=1e-6, atol=1e-12)
    torch.testing.assert_close(f.c_out.double(), c_out, rtol=1e-6, atol=1e-12)
    assert f.c_skip[t_min].item() == 1.0 and f.c_out[t_min].item() == 0.0
    t = torch.tensor([t_min, t_min + 1, 200, 600, T - 1])
    x = _noise(len(t), 2, seed=4, dtype=torch.float32)
    abar_t = schedule.alpha_bar[t, None]
    with torch.no_grad():
        v = net(x, t).double()
        denoised = (abar_t.sqrt() * x.double() - (1 - abar_t).sqrt() * v) / SIGMA_DATA
        expected = c_skip[t, None] * x.double() + c_out[t, None] * denoised
        torch.testing.assert_close(f(x, t).double(), expected, rtol=1e-5, atol=1e-6)


def test_one_step_consistency_sampling_is_f_at_T_minus_1():
    schedule = NoiseSchedule.cosine(T)
    f = ConsistencyFunction(_mlp(0), schedule, 0).eval()
    x_T = _noise(8, 2, seed=6, dtype=torch.float32)
    out = consistency_sample(f, x_T, [T - 1], schedule)
    with torch.no_grad():
        assert torch.equal(out, f(x_T, torch.full((8,), T - 1)))
    assert not torch.allclose(out, x_T, atol=1e-2)


# ----------------------------------------------------------------------------- consistency distillation

CD_GRID = uniform_timesteps(T, 5)  # [999, 749, 500, 250, 0]


def _cd_batch(schedule: NoiseSchedule, seed: int, n: int = 16, dtype: torch.dtype = torch.float32) -> TrainBatch:
    gen = torch.Generator().manual_seed(seed)
    steps = torch.tensor(CD_GRID[:-1])
    t = steps[torch.randint(len(steps), (n,), generator=gen)]
    x0 = (MU + S * torch.randn(n, 2, generator=gen, dtype=torch.float64)).to(dtype)
    noise = torch.randn(n, 2, generator=gen, dtype=torch.float64).to(dtype)
    abar = schedule.alpha_bar[t, None]
    x_t = (abar.sqrt() * x0.double() + (1 - abar).sqrt() * noise).to(dtype)  # q(x_t | x0), Ho et al. eq. 4
    return TrainBatch(x0, x_t, t, noise, {})


def test_consistency_target_starts_at_the_student_and_only_the_student_gets_gradients():
    schedule = NoiseSchedule.linear(T)
    teacher = _mlp(1)
    student = ConsistencyFunction(_mlp(0), schedule, CD_GRID[-1])
    loss_fn = ConsistencyDistillationLoss(teacher, schedule, CD_GRID, target_decay=0.9)
    assert loss_fn.train_timesteps == CD_GRID[:-1]
    loss = loss_fn(student, _cd_batch(schedule, 0))
    loss.backward()
    target = loss_fn.target_net
    assert target is not None and target is not student
    for (name, p), q in zip(student.named_parameters(), target.parameters(), strict=True):
        assert torch.equal(p, q), name
        assert q.grad is None and not q.requires_grad, name
    assert all(p.grad is None for p in teacher.parameters())
    assert sum(p.grad.abs().sum().item() for p in student.parameters()) > 0
    assert loss.item() > 0  # online and target see different inputs (x_{t_{n+1}} vs the teacher's x^_{t_n})


def test_consistency_target_is_an_ema_of_the_student_and_its_state_resumes_it():
    """Before each loss ``theta- <- mu theta- + (1 - mu) theta``; a loss restored from ``state_dict()`` must apply the
    same update on its next call as the loss it was saved from (else resume is not exact)."""
    schedule = NoiseSchedule.linear(T)
    mu = 0.9
    student = ConsistencyFunction(_mlp(0), schedule, CD_GRID[-1])
    loss_fn = ConsistencyDistillationLoss(_mlp(1), schedule, CD_GRID, target_decay=mu)
    loss_fn(student, _cd_batch(schedule, 0))
    saved = loss_fn.state_dict()
    resumed = ConsistencyDistillationLoss(_mlp(1), schedule, CD_GRID, target_decay=mu)
    resumed.load_state_dict(copy.deepcopy(saved))
    before = [p.detach().clone() for p in loss_fn.target_net.parameters()]
    with torch.no_grad():  # an optimiser step
        for i, p in enumerate(student.parameters()):
            p.add_(0.1 * _noise(*p.shape, seed=10 + i, dtype=p.dtype))
    batch = _cd_batch(schedule, 1)
    straight, again = loss_fn(student, batch), resumed(student, batch)
    for old, new, online in zip(before, loss_fn.target_net.parameters(), student.parameters(), strict=True):
        torch.testing.assert_close(new, mu * old + (1 - mu) * online, rtol=1e-6, atol=1e-7)
        assert not torch.allclose(new, old)
    for name, value in loss_fn.state_dict().items():
        assert torch.equal(resumed.state_dict()[name], value), name
    assert torch.equal(straight, again)


class ExactConsistencyNet(nn.Module):
    """The network (read as a v-prediction) that makes ``f`` the exact consistency function of the point-mass teacher.

    For data ``mu`` (``s = 0``) the teacher's DDIM step is exact on the ODE ``x_t = alpha_t mu + sigma_t e`` (``e``
    constant along a trajectory), so ``f*(x_t, t) = alpha_min mu + sigma_min (x_t - alpha_t mu) / sigma_t`` (the
    ODE's state at ``t_min``, which satisfies the boundary condition). ``f = c_skip x + c_out F`` with
    ``F = (alpha_t x - sigma_t v) / sigma_d``, so ``v = (alpha_t x - sigma_d (f* - c_skip x) / c_out) / sigma_t``,
    coefficients in closed form (float64); 0 at ``t_min``, where ``c_out = 0``."""

    def __init__(self, schedule: NoiseSchedule, t_min: int) -> None:
        super().__init__()
        abar = schedule.alpha_bar
        self.alpha, self.sigma = abar.sqrt(), (1 - abar).sqrt()
        kappa = self.sigma / self.alpha
        self.c_skip = SIGMA_DATA**2 / ((kappa - kappa[t_min]) ** 2 + SIGMA_DATA**2)
        self.c_out = SIGMA_DATA * (kappa - kappa[t_min]) / (SIGMA_DATA**2 + kappa**2).sqrt()
        self.t_min = t_min

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        alpha, sigma, c_skip, c_out = (v[t, None] for v in (self.alpha, self.sigma, self.c_skip, self.c_out))
        exact = self.alpha[self.t_min] * MU + self.sigma[self.t_min] * (x - alpha * MU) / sigma
        denoised = (exact - c_skip * x) / c_out.clamp(min=1e-300)
        return torch.where(c_out > 0, (alpha * x - SIGMA_DATA * denoised) / sigma, 0.0)


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_the_exact_consistency_function_has_zero_consistency_loss(kind):
    """``f*`` maps every point of a teacher trajectory to the same ``x_{t_min}``, so ``f*(x_{t_{n+1}}, t_{n+1}) =
    f*(x^_{t_n}, t_n)`` and the loss is 0, up to the float32 storage of c_skip, c_out and abar (relative 6e-8,
    so a loss ~1e-14 on O(1) data; measured <= 6e-15); an untrained student is far from 0."""
    schedule = getattr(NoiseSchedule, kind)(T)
    teacher = gaussian_eps(schedule, MU, 0.0)
    batch = _cd_batch(schedule, 2, n=64, dtype=torch.float64)
    exact = ConsistencyFunction(ExactConsistencyNet(schedule, CD_GRID[-1]), schedule, CD_GRID[-1])
    loss = ConsistencyDistillationLoss(teacher, schedule, CD_GRID, target_decay=0.95)(exact, batch)
    assert loss.item() < 1e-10, loss.item()
    untrained = ConsistencyFunction(_mlp(0), schedule, CD_GRID[-1]).double()
    assert ConsistencyDistillationLoss(teacher, schedule, CD_GRID, target_decay=0.95)(untrained, batch).item() > 1e-2


# ------------------------------------------------------------------------------------------------ trainer


def _indexed_dataset(n: int, with_noise: bool) -> Dataset:
    """Rows whose first coordinate is their index, so a batch tells which rows it holds."""
    x = torch.stack([torch.arange(n, dtype=torch.float32), torch.ones(n)], dim=1)
    noise = _noise(n, 2, seed=9, dtype=torch.float32) if with_noise else None
    return Dataset("indexed", "train", x, noise=noise)


def _recording_loss(seen: list[TrainBatch]):
    def loss_fn(model: nn.Module, batch: TrainBatch) -> torch.Tensor:
        seen.append(batch)
        return torch.mean((model(batch.x_t, batch.t) - batch.noise) ** 2)

    return loss_fn


def test_trainer_draws_t_only_from_the_given_set():
    allowed = [999, 500, 3, 0]
    seen: list[TrainBatch] = []
    config = TrainConfig(epochs=3, batch_size=16, lr=1e-3, checkpoint_every=3)
    train(
        _mlp(0),
        NoiseSchedule.linear(T),
        _indexed_dataset(64, False),
        config,
        loss_fn=_recording_loss(seen),
        timesteps=allowed,
        progress=False,
    )
    drawn = torch.cat([b.t for b in seen])
    assert len(drawn) == 3 * 64
    assert set(drawn.tolist()) == set(allowed)  # only these, and (192 uniform draws from 4) every one of them


def test_trainer_hands_the_paired_noise_of_each_row():
    schedule = NoiseSchedule.linear(T)
    data = _indexed_dataset(40, True)
    seen: list[TrainBatch] = []
    config = TrainConfig(epochs=2, batch_size=16, lr=1e-3, checkpoint_every=2)
    train(_mlp(0), schedule, data, config, loss_fn=_recording_loss(seen), progress=False)
    rows = []
    for batch in seen:
        idx = batch.x0[:, 0].long()
        assert torch.equal(batch.x0, data.x[idx])
        assert torch.equal(batch.noise, data.noise[idx])
        assert torch.equal(batch.x_t, schedule.add_noise(batch.x0, batch.t, data.noise[idx]))
        rows.extend(idx.tolist())
    assert sorted(rows) == sorted(list(range(40)) * 2)  # each row once per epoch


def _train_cd(epochs: int, checkpoint_dir) -> tuple[nn.Module, ConsistencyDistillationLoss]:
    schedule = NoiseSchedule.linear(T)
    student = ConsistencyFunction(_mlp(0), schedule, CD_GRID[-1])
    loss_fn = ConsistencyDistillationLoss(_mlp(1).eval(), schedule, CD_GRID, target_decay=0.9)
    data = Dataset("gauss", "train", (MU + S * _noise(48, 2, seed=8)).float())
    config = TrainConfig(epochs=epochs, batch_size=16, lr=1e-3, checkpoint_every=1)
    train(
        student,
        schedule,
        data,
        config,
        loss_fn=loss_fn,
        timesteps=loss_fn.train_timesteps,
        checkpoint_dir=checkpoint_dir,
        progress=False,
    )
    return student, loss_fn


def test_consistency_distillation_resumes_bit_exactly(tmp_path):
    """Two epochs straight equal one epoch, then a fresh process (new model, new loss) resuming to two from the
    checkpoint: the student's weights and the loss's target network, bit for bit."""
    straight, straight_loss = _train_cd(2, None)
    _train_cd(1, tmp_path)
    assert sorted(p.name for p in tmp_path.glob("epoch_*.pt")) == ["epoch_000001.pt"]
    resumed, resumed_loss = _train_cd(2, tmp_path)
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    for name, value in straight_loss.state_dict().items():
        assert torch.equal(resumed_loss.state_dict()[name], value), name


# --------------------------------------------------------------------------------------- one-step learning


def test_one_step_distillation_learns_a_linear_teacher():
    """Pairs ``(z, g(z))`` with ``g(z) = z A + b``: the student maps noise to the teacher's sample in one forward at
    ``T-1``; after training its held-out error is well below its initial one."""
    schedule = NoiseSchedule.linear(T)
    a, b = torch.tensor([[1.5, 0.5], [-0.3, 0.8]]), torch.tensor([1.0, -2.0])
    z, z_test = _noise(512, 2, seed=11, dtype=torch.float32), _noise(512, 2, seed=12, dtype=torch.float32)
    data = Dataset("pairs", "train", z @ a + b, noise=z)
    student = _mlp(0, hidden=32)
    t_test = torch.full((len(z_test),), T - 1)

    def held_out_error() -> float:
        with torch.no_grad():
            return torch.mean((student(z_test, t_test) - (z_test @ a + b)) ** 2).item()

    before = held_out_error()
    config = TrainConfig(epochs=25, batch_size=64, lr=3e-3, checkpoint_every=25)
    train(student, schedule, data, config, loss_fn=one_step_loss, timesteps=[T - 1], progress=False)
    after = held_out_error()
    assert after < 0.3 * before, (before, after)


# ---------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize("steps", [1, 3, 5])
def test_halving_an_odd_grid_is_rejected(steps):
    grid = uniform_timesteps(T, steps)
    with pytest.raises(ValueError, match=rf"got {steps} teacher steps"):
        halve_grid(grid, T)
    with pytest.raises(ValueError, match=rf"got {steps} teacher steps"):
        ProgressiveDistillationLoss(gaussian_eps(NoiseSchedule.linear(T), MU, S), NoiseSchedule.linear(T), grid)


def test_progressive_rounds_below_one_step_or_through_an_odd_count_are_rejected():
    with pytest.raises(ValueError, match="final steps 0$"):
        progressive_grids(uniform_timesteps(T, 8), 0, T)
    with pytest.raises(ValueError, match="got 3 teacher steps"):  # 6 -> 3 -> ?
        progressive_grids(uniform_timesteps(T, 6), 1, T)
    with pytest.raises(ValueError, match="halving 12 steps never reaches 5"):
        progressive_grids(uniform_timesteps(T, 12), 5, T)


@pytest.mark.parametrize(
    "student, teacher, match",
    [
        (
            ScheduleConfig("linear", 1000),
            ScheduleConfig("cosine", 1000),
            "got linear with T = 1000 for the student and cosine with T = 1000 for the teacher",
        ),
        (ScheduleConfig("cosine", 500), ScheduleConfig("cosine", 1000), "got cosine with T = 500 for the student"),
    ],
)
def test_a_student_schedule_unlike_its_teachers_is_rejected(student, teacher, match):
    with pytest.raises(ValueError, match=match):
        check_same_schedule(student, teacher)
    check_same_schedule(teacher, teacher)  # the same schedule passes


def test_consistency_function_below_t_min_is_rejected():
    f = ConsistencyFunction(_mlp(0), NoiseSchedule.linear(T), 37)
    with pytest.raises(ValueError, match=r"t >= t_min = 37, got 36$"):
        f(_noise(3, 2, dtype=torch.float32), torch.tensor([40, 36, 37]))

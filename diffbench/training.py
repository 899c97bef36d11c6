"""The one trainer: epsilon-prediction DDPM loss for every model in diffbench.

``L = E_{x0, t, eps} || eps - eps_theta(sqrt(abar_t) x0 + sqrt(1 - abar_t) eps, t) ||^2`` (Ho et al. 2020, eq. 14),
with Adam/AdamW, optional EMA of the weights (with a warm-up, see :func:`ema_decay_at`), gradient clipping,
batch-size LR rules, checkpoints every N epochs and bit-exact resume from the last checkpoint (model, optimiser,
EMA and the data/noise generator are restored; the EMA step count follows from the epoch). Other objectives are
losses passed to the same trainer (``DualScaleLoss``: LIFT's two-scale eps loss). On a GPU each optimiser step
replays as one captured CUDA graph where the loss and model allow it (:func:`capture_train_step`,
``train(cuda_graph=...)``), drawing the same batches from the host generator as the eager step.
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from diffbench import graphs
from diffbench.cache import NON_DEFAULT
from diffbench.data import Dataset
from diffbench.io import atomic_torch_save
from diffbench.metrics.noise_scale import gradient_noise_scale
from diffbench.models.dual_scale import downsample2x
from diffbench.schedules import NoiseSchedule

# lr = base_lr * rule(batch_size / base_batch_size). "sqrt" follows Krizhevsky (2014) / Hoffer et al. (2017),
# "linear" Goyal et al. (2017). Scaling *down* (seed 002's 3.16e-5 at batch 1280) is an explicit lr with "none".
LR_RULES: dict[str, Callable[[float], float]] = {
    "none": lambda ratio: 1.0,
    "linear": lambda ratio: ratio,
    "sqrt": math.sqrt,
}
OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN/inf loss; raised instead of silently training on garbage."""


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 100
    batch_size: int = 128
    lr: float = 1e-4
    lr_rule: str = "none"
    base_batch_size: int = 128
    optimizer: str = "adam"
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    ema_decay: float | None = None
    ema_warmup: bool = True  # decay min(ema_decay, (1 + n) / (10 + n)) at step n: see ema_decay_at
    grad_clip: float | None = 1.0
    checkpoint_every: int = 10
    label_dropout: float = 0.0
    seed: int = 0
    # Gradient noise scale (diffbench.metrics.noise_scale) measured every this many epochs (0: never) at the end
    # of the epoch, from ``noise_scale_probe = (micro-batch size, count)`` fresh micro-batches: B_small = size,
    # B_big = size * count. Probes draw from their own generator and leave training bit-identical.
    noise_scale_every: int = field(default=0, metadata={"hash": NON_DEFAULT})
    # Checkpoints at these epochs too (besides every ``checkpoint_every`` and the last), e.g. log-spaced ones.
    save_at: tuple[int, ...] = field(default=(), metadata={"hash": NON_DEFAULT})
    noise_scale_probe: tuple[int, int] = field(default=(128, 8), metadata={"hash": NON_DEFAULT})

    def __post_init__(self) -> None:
        if self.lr_rule not in LR_RULES:
            raise ValueError(f"unknown lr_rule {self.lr_rule!r}; choose one of {sorted(LR_RULES)}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r}; choose one of {sorted(OPTIMIZERS)}")
        for name in ("epochs", "batch_size", "base_batch_size", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if not 0 <= self.label_dropout <= 1:
            raise ValueError(f"label_dropout must be in [0, 1], got {self.label_dropout}")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ValueError(f"grad_clip must be > 0 or None, got {self.grad_clip}")
        if self.ema_decay is not None and not 0 < self.ema_decay < 1:
            raise ValueError(f"ema_decay must be in (0, 1) or None, got {self.ema_decay}")
        if any(not 1 <= e <= self.epochs for e in self.save_at):
            raise ValueError(f"save_at epochs must lie in [1, {self.epochs}], got {self.save_at}")
        if self.noise_scale_every < 0:
            raise ValueError(f"noise_scale_every must be >= 0 (0: off), got {self.noise_scale_every}")
        size, count = self.noise_scale_probe
        if size < 1 or count < 2:
            raise ValueError(f"noise_scale_probe must be (micro-batch size >= 1, count >= 2), got {size, count}")

    @property
    def effective_lr(self) -> float:
        return scaled_lr(self.lr, self.batch_size, self.base_batch_size, self.lr_rule)

    @property
    def checkpoint_epochs(self) -> list[int]:
        """Epochs (1-based, counted after the epoch ends) at which a checkpoint is saved: every
        ``checkpoint_every``, those in ``save_at``, and the last."""
        every = range(self.checkpoint_every, self.epochs + 1, self.checkpoint_every)
        return sorted({*every, *self.save_at, self.epochs})


def scaled_lr(lr: float, batch_size: int, base_batch_size: int, rule: str) -> float:
    """``lr * rule(batch_size / base_batch_size)``; e.g. sqrt rule, 1e-4 at 128 -> 3.16e-4 at 1280."""
    if rule not in LR_RULES:
        raise ValueError(f"unknown lr_rule {rule!r}; choose one of {sorted(LR_RULES)}")
    return lr * LR_RULES[rule](batch_size / base_batch_size)


@dataclass
class TrainResult:
    """``checkpoints`` maps epoch -> the weights to evaluate (EMA weights when EMA is on), on CPU."""

    checkpoints: dict[int, dict[str, Tensor]]
    history: list[dict[str, float]] = field(default_factory=list)


@dataclass(frozen=True)
class TrainBatch:
    """One training batch as a loss sees it: the clean ``x0`` ``[B, ...]``, the timesteps ``t`` ``[B]``, the noise
    ``noise`` (drawn, or the dataset's paired noise), ``x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise`` and the
    model's conditioning ``cond`` (``{"y": labels}`` after label dropout, or empty)."""

    x0: Tensor
    x_t: Tensor
    t: Tensor
    noise: Tensor
    cond: dict


# A loss maps (model, batch) to a scalar. A loss object with ``state_dict()`` / ``load_state_dict()`` (e.g.
# consistency distillation's target network) is checkpointed with the model and restored on resume.
LossFn = Callable[[nn.Module, TrainBatch], Tensor]


def epsilon_loss(model: nn.Module, batch: TrainBatch) -> Tensor:
    """Ho et al. 2020 eq. 14: mean squared error between the true and predicted noise."""
    return torch.mean((model(batch.x_t, batch.t, **batch.cond) - batch.noise) ** 2)


# A loss marked ``capturable = True`` does only device work (no host draws, no host reads): the trainer may capture
# its optimiser step as a CUDA graph. Unmarked losses are never captured.
epsilon_loss.capturable = True


class DualScaleLoss:
    """LIFT's objective (seed 003) for a dual-scale model ``model(x_large, x_small, t_large, t_small) ->
    (eps_large, eps_small)`` (``DualScaleUNet``): the sum of the two scales' eps-prediction MSEs,

    ``L = E ||eps_L - eps_theta,L||^2 + E ||eps_S - eps_theta,S||^2`` (each term Ho et al. 2020 eq. 14, the
    mean over its own scale's elements),

    with independent uniform timesteps per scale. The batch is the large scale (``x0``, its ``t``, ``noise`` and
    ``x_t`` from the trainer); the small scale is ``x0_S = downsample2x(x0)`` ``[B, C, H/2, W/2]`` at
    ``t_S ~ U{0, ..., T-1}`` with noise ``eps_S ~ N(0, I)``, ``x_S = sqrt(abar) x0_S + sqrt(1 - abar) eps_S``, both
    drawn on the CPU from the loss's own generator (seeded by ``seed``) and moved to the batch's device. The
    generator's state is the loss's ``state_dict()``, so the trainer checkpoints it and a resumed run draws the
    same small-scale noise as an uninterrupted one.
    """

    def __init__(self, schedule: NoiseSchedule, seed: int) -> None:
        self.schedule = schedule
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, model: nn.Module, batch: TrainBatch) -> Tensor:
        if batch.cond:
            raise ValueError(f"the dual-scale loss is unconditional, got conditioning {sorted(batch.cond)}")
        x0_small = downsample2x(batch.x0)
        t_small = torch.randint(self.schedule.num_steps, (len(x0_small),), generator=self.generator)
        noise_small = torch.randn(x0_small.shape, generator=self.generator, dtype=x0_small.dtype)
        t_small, noise_small = t_small.to(x0_small.device), noise_small.to(x0_small.device)
        x_small_t = self.schedule.add_noise(x0_small, t_small, noise_small)
        eps_large, eps_small = model(batch.x_t, x_small_t, batch.t, t_small)
        return torch.mean((eps_large - batch.noise) ** 2) + torch.mean((eps_small - noise_small) ** 2)

    def state_dict(self) -> dict[str, Tensor]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        self.generator.set_state(state["generator"].cpu())


def _checkpoint_path(directory: Path, epoch: int) -> Path:
    return directory / f"epoch_{epoch:06d}.pt"


def ema_decay_at(step: int, decay: float, warmup: bool = True) -> float:
    """The EMA decay used for the update after optimiser step ``step`` (0-based: 0 for the first update).

    With warm-up ``d_n = min(d, (1 + n) / (10 + n))``: the ``num_updates`` rule of TensorFlow's
    ``tf.train.ExponentialMovingAverage`` (its first update uses ``d_0 = 0.1``). The share of the random
    initialisation left in the average after ``N`` updates is ``prod_{n<N} d_n``: ``d^N`` without warm-up
    (0.999^100 = 0.90), and ``prod_{n<N} (1 + n) / (10 + n) = N! 9! / (N + 9)! = 1 / C(N + 9, 9)`` while the
    warm-up term is below ``d``, i.e. for ``n < (10 d - 1) / (1 - d)`` (8990 steps at d = 0.999); that is
    2.3e-13 after 100 steps. Past the warm-up the average is a fixed-``d`` EMA.
    """
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    if not 0 < decay < 1:
        raise ValueError(f"decay must be in (0, 1), got {decay}")
    return min(decay, (1 + step) / (10 + step)) if warmup else decay


class _EMA:
    """``ema <- d ema + (1 - d) theta`` for the floating-point entries of ``ema`` (a state dict), integer buffers
    (counters) copied, against ``model``'s tensors, paired once (loading weights in place keeps the pairs valid):
    one ``_foreach_lerp_`` per update instead of a kernel per tensor. On a CPU it is the same per-tensor ``lerp``."""

    def __init__(self, ema: dict[str, Tensor], model: nn.Module) -> None:
        live = {key: value.detach() for key, value in model.state_dict(keep_vars=True).items()}
        floats = [key for key, value in live.items() if value.is_floating_point()]
        self._ema, self._live = [ema[key] for key in floats], [live[key] for key in floats]
        self._copied = [(ema[key], value) for key, value in live.items() if not value.is_floating_point()]

    @torch.no_grad()
    def update(self, decay: float) -> None:
        torch._foreach_lerp_(self._ema, self._live, 1 - decay)
        for target, value in self._copied:
            target.copy_(value)


def _to_device(values: Tensor, device: torch.device) -> Tensor:
    """A host tensor on ``device``; to a GPU through pinned memory without waiting, so drawing the next batch on the
    host overlaps the current step (a copy from pageable memory would synchronise every step)."""
    if device.type != "cuda":
        return values.to(device)
    return values.pin_memory().to(device, non_blocking=True)


def train_capture_blocker(model: nn.Module, loss_fn: LossFn, device: torch.device) -> str | None:
    """Why ``train`` cannot capture its optimiser step as a CUDA graph, or ``None``: the model's reasons
    (:func:`diffbench.graphs.capture_blocker`), a loss not marked ``capturable`` (it may draw or read on the host),
    or active dropout (its masks would follow the graph's RNG offsets instead of the eager stream)."""
    blocker = graphs.capture_blocker(model, device)
    if blocker is None and not getattr(loss_fn, "capturable", False):
        name = getattr(loss_fn, "__name__", type(loss_fn).__name__)
        blocker = f"the loss {name} is not marked capturable (it may do host work per step)"
    if blocker is None and any(isinstance(m, nn.Dropout) and m.p > 0 for m in model.modules()):
        blocker = "the model has active dropout, whose masks a graph would draw differently from the eager step"
    return blocker


def _parameters(opt: torch.optim.Optimizer) -> list[Tensor]:
    return [p for group in opt.param_groups for p in group["params"]]


def _step_state(model: nn.Module, opt: torch.optim.Optimizer) -> tuple[dict[str, Tensor], list[dict]]:
    """A copy of what an optimiser step changes: the weights (and buffers) and the optimiser's per-parameter state."""
    weights = {key: value.detach().clone() for key, value in model.state_dict().items()}
    return weights, [
        {k: v.clone() if isinstance(v, Tensor) else v for k, v in opt.state[p].items()} for p in _parameters(opt)
    ]


@torch.no_grad()
def _restore_step_state(
    model: nn.Module, opt: torch.optim.Optimizer, saved: tuple[dict[str, Tensor], list[dict]]
) -> None:
    """Put back :func:`_step_state`'s copy *in place* (a captured graph reads these very tensors). Optimiser state
    the copy lacks was created by the steps since (Adam's first step) and is reset to what a fresh optimiser
    starts from: zeros (the step count and both moments)."""
    weights, states = saved
    for key, value in model.state_dict().items():
        value.copy_(weights[key])
    for p, before in zip(_parameters(opt), states, strict=True):
        for key, value in opt.state[p].items():
            if not isinstance(value, Tensor):
                opt.state[p][key] = before.get(key, value)
            elif key in before:
                value.copy_(before[key])
            else:
                value.zero_()


def capture_train_step(
    step: Callable[[dict[str, Tensor]], tuple[Tensor, Tensor]],
    example: dict[str, Tensor],
    model: nn.Module,
    opt: torch.optim.Optimizer,
) -> graphs.CapturedCall:
    """``step(inputs) -> (loss, grad_norm)`` (one whole optimiser step) captured as a CUDA graph over buffers shaped
    like ``example``. The capture's warm-up runs (:class:`diffbench.graphs.CapturedCall`) take real optimiser
    steps; the weights and optimiser state are put back afterwards, so training goes on as if they had not run.
    The gradients the graph writes stay referenced by the runner (``runner.grads``) for as long as it lives."""
    saved = _step_state(model, opt)
    try:
        runner = graphs.CapturedCall(step, example)
    finally:
        _restore_step_state(model, opt, saved)
    runner.grads = [p.grad for p in model.parameters()]
    return runner


def _eval_state(weights: dict[str, Tensor], ema: dict[str, Tensor] | None) -> dict[str, Tensor]:
    state = ema if ema is not None else weights
    return {k: v.detach().cpu().clone() for k, v in state.items()}


def train(
    model: nn.Module,
    schedule: NoiseSchedule,
    dataset: Dataset,
    config: TrainConfig,
    *,
    device: torch.device | str = "cpu",
    checkpoint_dir: str | Path | None = None,
    loss_fn: LossFn = epsilon_loss,
    timesteps: Sequence[int] | None = None,
    progress: bool = True,
    on_epoch_end: Callable[[int, dict[str, float]], None] | None = None,
    cuda_graph: bool | None = None,
) -> TrainResult:
    """Train ``model`` in place on ``dataset`` and return its checkpoints and per-epoch log.

    With ``checkpoint_dir`` set, a checkpoint (model, optimiser, EMA, generator state, log) is written every
    ``config.checkpoint_every`` epochs and training resumes from the newest one found there, so an interrupted
    run continues bit-identically. The per-epoch log is also appended to ``checkpoint_dir/metrics.jsonl``.
    Class labels are passed as ``y`` to models with ``num_classes > 0``; with ``label_dropout`` a fraction of
    them is replaced by the null label ``num_classes`` (classifier-free guidance training).

    ``loss_fn(model, TrainBatch)`` is the objective (default: :func:`epsilon_loss`); ``timesteps`` restricts the
    training timesteps to a set (drawn uniformly from it; default: all of ``[0, T)``), as step distillation
    trains only on its sampler's grid. A dataset with ``noise`` (one-step distillation's (noise, teacher sample)
    pairs) hands each sample its own noise instead of a fresh draw.

    ``cuda_graph``: run each optimiser step (batch noising, loss, backward, clipping, Adam) as a replay of one
    captured CUDA graph per batch size (:func:`capture_train_step`; small models are launch-bound on a GPU). The
    host draws the batch's indices, timesteps, noise and label-dropout mask as before, from the same generator
    in the same order; EMA updates and the epoch's log stay outside the graph. ``None`` (default) captures on a
    CUDA device where :func:`train_capture_blocker` finds no reason not to, ``True`` insists (a clear error
    where it cannot), ``False`` runs eagerly. On a CPU the eager step always runs.
    """
    device = torch.device(device)
    model.to(device)
    allowed_t = None
    if timesteps is not None:
        allowed_t = torch.tensor(sorted(set(timesteps)), dtype=torch.long)
        if len(allowed_t) == 0 or allowed_t.min() < 0 or allowed_t.max() >= schedule.num_steps:
            raise ValueError(
                f"training timesteps must be a non-empty subset of [0, {schedule.num_steps - 1}], got {timesteps}"
            )
    stateful_loss = callable(getattr(loss_fn, "state_dict", None))
    ckpt_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
    blocker = train_capture_blocker(model, loss_fn, device)
    if cuda_graph and blocker is not None:
        raise ValueError(f"cuda_graph=True: {blocker}")
    capture = cuda_graph is not False and blocker is None
    # On a GPU, the fused Adam/AdamW kernels (one launch per step instead of one per parameter tensor), capturable
    # (the step count on the device) whether or not this run captures, so both paths run the same update.
    fused = {"fused": True, "capturable": True} if device.type == "cuda" else {}
    opt = OPTIMIZERS[config.optimizer](
        model.parameters(), lr=config.effective_lr, betas=config.betas, weight_decay=config.weight_decay, **fused
    )
    generator = torch.Generator().manual_seed(config.seed)
    ema = {k: v.detach().clone() for k, v in model.state_dict().items()} if config.ema_decay else None
    history: list[dict[str, float]] = []
    checkpoints: dict[int, dict[str, Tensor]] = {}
    start_epoch = 0

    if ckpt_dir is not None:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        saved = sorted(ckpt_dir.glob("epoch_*.pt"))
        if saved:
            state = torch.load(saved[-1], map_location=device, weights_only=True)
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            generator.set_state(state["generator"].cpu())
            ema = state["ema"]
            if stateful_loss:
                loss_fn.load_state_dict(state["loss"])
            history = [dict(row) for row in state["history"]]
            start_epoch = int(state["epoch"])
            for path in saved:
                old = torch.load(path, map_location="cpu", weights_only=True)
                checkpoints[int(old["epoch"])] = _eval_state(old["model"], old["ema"])
        # The log on disk restarts from what the checkpoint knows, so it never holds epochs that were redone.
        (ckpt_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in history))

    x_all = dataset.x.to(device)
    y_all = dataset.y.to(device) if dataset.y is not None else None
    paired_noise = dataset.noise.to(device) if dataset.noise is not None else None
    num_classes = int(getattr(model, "num_classes", 0) or 0)
    n = len(x_all)

    noising = schedule.noising_table(device)

    def draw_inputs(idx: Tensor, generator: torch.Generator) -> dict[str, Tensor]:
        """The host's draws for the examples ``idx`` (a host tensor): timesteps, then noise, then the label-dropout
        mask, from ``generator`` in that order (the order is part of bit-exact resume), on the device."""
        if allowed_t is None:
            t = torch.randint(schedule.num_steps, (len(idx),), generator=generator)
        else:
            t = allowed_t[torch.randint(len(allowed_t), (len(idx),), generator=generator)]
        inputs = {"idx": idx, "t": t, "noise": torch.randn((len(idx), *x_all.shape[1:]), generator=generator)}
        if num_classes and y_all is not None:
            inputs["drop"] = torch.rand(len(idx), generator=generator) < config.label_dropout
        return {name: _to_device(value, device) for name, value in inputs.items()}

    def compose(inputs: dict[str, Tensor]) -> TrainBatch:
        """The batch of :func:`draw_inputs`' draws, by device work alone (a captured step runs it in its graph).
        Labels under the dropout mask become the null label ``num_classes``; a dataset's paired noise replaces the
        drawn noise, which is drawn all the same (the generator's sequence does not depend on the dataset)."""
        idx, t = inputs["idx"], inputs["t"]
        x0 = x_all[idx]
        noise = paired_noise[idx] if paired_noise is not None else inputs["noise"]
        cond = {}
        if "drop" in inputs:
            y = y_all[idx]
            cond["y"] = torch.where(inputs["drop"], torch.full_like(y, num_classes), y)
        return TrainBatch(x0, noising.add_noise(x0, t, noise), t, noise, cond)

    clip = config.grad_clip if config.grad_clip is not None else float("inf")

    def optimizer_step(inputs: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """One optimiser step on the batch of ``inputs``; returns the loss and the gradient norm before clipping.
        No host work: the same function runs eagerly and inside a CUDA graph."""
        loss = loss_fn(model, compose(inputs))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
        return loss.detach(), grad_norm

    captured: dict[int, graphs.CapturedCall] = {}  # batch size -> its captured step (the last batch may be smaller)

    def probe_noise_scale(epoch: int) -> dict[str, float]:
        """The gradient noise scale at the current weights from ``noise_scale_probe`` fresh micro-batches (drawn
        with replacement from a generator seeded by (seed, epoch), so a resumed run probes the same examples).
        The global RNG and a stateful loss's state are restored afterwards: training does not see the probe."""
        size, count = config.noise_scale_probe
        probe_gen = torch.Generator().manual_seed(config.seed * 1_000_003 + epoch)
        loss_state = copy.deepcopy(loss_fn.state_dict()) if stateful_loss else None
        cuda = (
            [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
        )
        with torch.random.fork_rng(devices=cuda):
            losses = (
                loss_fn(model, compose(draw_inputs(torch.randint(n, (size,), generator=probe_gen), probe_gen)))
                for _ in range(count)
            )
            estimate = gradient_noise_scale(list(model.parameters()), losses, size)
        if loss_state is not None:
            loss_fn.load_state_dict(loss_state)
        return {
            "grad_sq_norm": estimate.grad_sq_norm,
            "grad_trace_cov": estimate.trace_cov,
            "noise_scale": estimate.b_simple,
        }

    steps_per_epoch = math.ceil(n / config.batch_size)
    save_epochs = set(config.checkpoint_epochs)

    bar = tqdm(
        range(start_epoch, config.epochs),
        initial=start_epoch,
        total=config.epochs,
        disable=not progress,
        desc=f"train b{config.batch_size} lr{config.effective_lr:.3g}",
        unit="epoch",
        leave=False,
    )
    ema_tracker = _EMA(ema, model) if ema is not None else None
    model.train()
    for epoch_index in bar:
        epoch = epoch_index + 1
        started = time.perf_counter()
        perm = torch.randperm(n, generator=generator)
        # Losses and gradient norms stay on the device until the epoch ends: reading one back every step would
        # make the host wait for the device every step.
        losses, grad_norms = [], []
        for step in range(steps_per_epoch):
            inputs = draw_inputs(perm[step * config.batch_size : (step + 1) * config.batch_size], generator)
            if capture:
                size = len(inputs["idx"])
                if size not in captured:
                    captured[size] = capture_train_step(optimizer_step, inputs, model, opt)
                # The graph's outputs are overwritten by its next replay: keep copies.
                loss, grad_norm = (value.clone() for value in captured[size](inputs))
            else:
                loss, grad_norm = optimizer_step(inputs)
            grad_norms.append(grad_norm)
            if ema_tracker is not None:
                # Every epoch has steps_per_epoch steps, so the step count after a resume follows from the epoch.
                ema_tracker.update(
                    ema_decay_at(epoch_index * steps_per_epoch + step, config.ema_decay, config.ema_warmup)
                )
            losses.append(loss)
        loss_values = torch.stack(losses).tolist()
        bad = next((step for step, value in enumerate(loss_values) if not math.isfinite(value)), None)
        if bad is not None:
            raise NonFiniteLossError(
                f"loss became {loss_values[bad]} at epoch {epoch}, step {bad + 1} (lr={config.effective_lr:.3g}, "
                f"batch={config.batch_size}); lower the learning rate or set grad_clip"
            )
        # Summed in step order on the host, as the per-step values were before.
        row = {
            "epoch": float(epoch),
            "loss": sum(loss_values) / steps_per_epoch,
            "grad_norm": sum(torch.stack(grad_norms).tolist()) / steps_per_epoch,
            "lr": config.effective_lr,
            "steps": float(epoch * steps_per_epoch),
            "seconds": time.perf_counter() - started,
        }
        if config.noise_scale_every and epoch % config.noise_scale_every == 0:
            row.update(probe_noise_scale(epoch))
        history.append(row)
        bar.set_postfix(loss=f"{row['loss']:.4f}")
        if epoch in save_epochs:
            checkpoints[epoch] = _eval_state(model.state_dict(), ema)
            if ckpt_dir is not None:
                atomic_torch_save(
                    {
                        "epoch": epoch,
                        "model": model.state_dict(),
                        "optimizer": opt.state_dict(),
                        "ema": ema,
                        "loss": loss_fn.state_dict() if stateful_loss else None,
                        "generator": generator.get_state(),
                        "history": history,
                        "config": json.dumps(asdict(config)),
                    },
                    _checkpoint_path(ckpt_dir, epoch),
                )
        if ckpt_dir is not None:
            with open(ckpt_dir / "metrics.jsonl", "a") as log:
                log.write(json.dumps(row) + "\n")
        if on_epoch_end is not None:
            on_epoch_end(epoch, row)
    bar.close()
    model.eval()
    return TrainResult(checkpoints=checkpoints, history=history)

"""The trainer: LR rules, config validation, bit-exact resume, non-finite losses and EMA."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from diffbench import graphs, training
from diffbench.cache import ArtifactCache
from diffbench.data import DataConfig, Dataset, load_dataset
from diffbench.distill import distillation_loss, one_step_loss
from diffbench.experiments import RunSpec, model_at, train_cached
from diffbench.models import ModelConfig
from diffbench.schedules import NoiseSchedule, ScheduleConfig
from diffbench.training import (
    DualScaleLoss,
    NonFiniteLossError,
    TrainConfig,
    _restore_step_state,
    _step_state,
    ema_decay_at,
    epsilon_loss,
    scaled_lr,
    train,
    train_capture_blocker,
)

MODEL = ModelConfig.of("mlp", hidden=16)
SCHEDULE = NoiseSchedule.linear(1000)
SMALL = TrainConfig(epochs=4, batch_size=64, lr=1e-3, checkpoint_every=2, seed=0)


@pytest.fixture(scope="module")
def gmm512() -> Dataset:
    full = load_dataset(DataConfig("gmm2d"), "train")
    return Dataset("gmm2d", "train", full.x[:512].clone(), full.y[:512].clone(), full.num_classes)


def _run(dataset: Dataset, config: TrainConfig = SMALL, **kwargs):
    model = MODEL.build(seed=config.seed)
    result = train(model, SCHEDULE, dataset, config, progress=False, **kwargs)
    return model, result


def _without_timing(history: list[dict]) -> list[dict]:
    """Drop ``seconds``: wall-clock time is the one logged field no run can repeat."""
    return [{k: v for k, v in row.items() if k != "seconds"} for row in history]


def _assert_same_state(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


# -------------------------------------------------------------------------------------------- LR rules


def test_scaled_lr_rules():
    assert scaled_lr(1e-4, 1280, 128, "sqrt") == pytest.approx(1e-4 * math.sqrt(10), rel=1e-12)
    assert scaled_lr(1e-4, 1280, 128, "sqrt") == pytest.approx(3.162e-4, rel=1e-3)
    assert scaled_lr(1e-4, 1280, 128, "linear") == pytest.approx(1e-3, rel=1e-12)
    assert scaled_lr(1e-4, 1280, 128, "none") == 1e-4
    assert scaled_lr(1e-4, 128, 128, "sqrt") == 1e-4


@given(lr=st.floats(1e-6, 1.0), batch=st.integers(1, 4096), base=st.integers(1, 4096))
def test_scaled_lr_closed_forms(lr, batch, base):
    ratio = batch / base
    assert scaled_lr(lr, batch, base, "linear") == pytest.approx(lr * ratio, rel=1e-12)
    assert scaled_lr(lr, batch, base, "sqrt") == pytest.approx(lr * math.sqrt(ratio), rel=1e-12)
    assert scaled_lr(lr, batch, base, "none") == lr


def test_scaled_lr_unknown_rule():
    with pytest.raises(ValueError, match="'cubic'") as info:
        scaled_lr(1e-4, 256, 128, "cubic")
    assert all(rule in str(info.value) for rule in ("linear", "none", "sqrt"))


def test_effective_lr_applies_the_rule():
    config = TrainConfig(lr=1e-4, batch_size=1280, base_batch_size=128, lr_rule="sqrt")
    assert config.effective_lr == scaled_lr(1e-4, 1280, 128, "sqrt")


# ---------------------------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    "kwargs, value",
    [
        ({"epochs": 0}, "0"),
        ({"batch_size": -1}, "-1"),
        ({"base_batch_size": 0}, "0"),
        ({"checkpoint_every": 0}, "0"),
        ({"lr": 0.0}, "0.0"),
        ({"lr": -1e-3}, "-0.001"),
        ({"lr": float("nan")}, "nan"),
        ({"ema_decay": 1.0}, "1.0"),
        ({"ema_decay": 0.0}, "0.0"),
        ({"lr_rule": "cubic"}, "'cubic'"),
        ({"optimizer": "sgd"}, "'sgd'"),
        ({"save_at": (0, 2)}, "(0, 2)"),
    ],
    ids=lambda v: str(v),
)
def test_train_config_rejects_bad_values(kwargs, value):
    with pytest.raises(ValueError) as info:
        TrainConfig(**kwargs)
    message = str(info.value)
    assert next(iter(kwargs)) in message and value in message


@pytest.mark.parametrize(
    "kwargs",
    [{"label_dropout": -0.1}, {"label_dropout": 1.5}, {"grad_clip": 0.0}, {"grad_clip": -1.0}],
    ids=lambda v: str(v),
)
def test_train_config_rejects_out_of_range_dropout_and_clip(kwargs):
    """A dropout probability outside [0, 1] or a non-positive clip norm (which zeroes every gradient) cannot be
    meant; like every other field they should fail at construction, naming the value."""
    ((name, value),) = kwargs.items()
    with pytest.raises(ValueError, match=name) as info:
        TrainConfig(**kwargs)
    assert str(value) in str(info.value)


@given(epochs=st.integers(1, 300), every=st.integers(1, 50))
def test_checkpoint_epochs(epochs, every):
    got = TrainConfig(epochs=epochs, checkpoint_every=every).checkpoint_epochs
    assert got[-1] == epochs
    assert got == sorted({e for e in range(1, epochs + 1) if e % every == 0} | {epochs})


@given(epochs=st.integers(1, 300), extra=st.sets(st.integers(1, 300), max_size=5))
def test_checkpoint_epochs_add_save_at(epochs, extra):
    save_at = tuple(sorted(e for e in extra if e <= epochs))
    got = TrainConfig(epochs=epochs, checkpoint_every=epochs, save_at=save_at).checkpoint_epochs
    assert got == sorted({*save_at, epochs})


# ---------------------------------------------------------------------------------------------- train


# EMA off; a warm-up that ends within the first epoch (d = 0.5 from step 8); one that lasts the whole run.
@pytest.mark.parametrize("ema_decay", [None, 0.5, 0.99], ids=lambda d: f"ema={d}")
def test_resume_after_interruption_is_bit_identical(gmm512, tmp_path, ema_decay):
    config = replace(SMALL, ema_decay=ema_decay)
    ref_model, ref = _run(gmm512, config)

    class Killed(Exception):
        pass

    def kill_at_3(epoch: int, row: dict) -> None:
        if epoch == 3:
            raise Killed

    with pytest.raises(Killed):
        _run(gmm512, config, checkpoint_dir=tmp_path, on_epoch_end=kill_at_3)
    assert sorted(p.name for p in tmp_path.glob("epoch_*.pt")) == ["epoch_000002.pt"]

    model, result = _run(gmm512, config, checkpoint_dir=tmp_path)
    _assert_same_state(model.state_dict(), ref_model.state_dict())
    assert _without_timing(result.history) == _without_timing(ref.history)
    assert result.checkpoints.keys() == ref.checkpoints.keys() == {2, 4}
    for epoch in ref.checkpoints:
        _assert_same_state(result.checkpoints[epoch], ref.checkpoints[epoch])
    # the on-disk log holds each epoch exactly once, the redone epoch 3 included
    logged = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in logged] == [1.0, 2.0, 3.0, 4.0]
    assert _without_timing(logged) == _without_timing(ref.history)

    # a finished run is not trained again: a fresh model picks up the final weights
    again_model, again = _run(gmm512, config, checkpoint_dir=tmp_path)
    _assert_same_state(again_model.state_dict(), ref_model.state_dict())
    assert _without_timing(again.history) == _without_timing(ref.history)


def test_history_rows(gmm512):
    _, result = _run(gmm512)
    steps = math.ceil(512 / SMALL.batch_size)
    assert [row["epoch"] for row in result.history] == [1.0, 2.0, 3.0, 4.0]
    assert [row["steps"] for row in result.history] == [float(e * steps) for e in range(1, 5)]
    assert all(row["lr"] == SMALL.effective_lr for row in result.history)
    assert all(math.isfinite(row["loss"]) and row["loss"] > 0 for row in result.history)


def test_training_is_deterministic_and_leaves_the_global_rng_alone(gmm512):
    state = torch.get_rng_state()
    a, _ = _run(gmm512)
    assert torch.equal(torch.get_rng_state(), state)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(12345)
        b, _ = _run(gmm512)
    _assert_same_state(a.state_dict(), b.state_dict())


def test_last_checkpoint_is_the_final_weights_without_ema(gmm512):
    model, result = _run(gmm512)
    _assert_same_state(result.checkpoints[4], model.state_dict())


def test_training_reduces_the_loss(gmm512):
    config = TrainConfig(epochs=15, batch_size=64, lr=3e-3, checkpoint_every=15)
    _, result = _run(gmm512, config)
    # an untrained eps model is off by about E|eps|^2 = 1; a few hundred steps must do better
    assert result.history[-1]["loss"] < result.history[0]["loss"]


def test_huge_lr_raises_non_finite_loss(gmm512):
    config = TrainConfig(epochs=2, batch_size=64, lr=1e30, grad_clip=None)
    with pytest.raises(NonFiniteLossError) as info:
        _run(gmm512, config)
    assert isinstance(info.value, FloatingPointError)
    assert "epoch 1" in str(info.value) and "lr=1e+30" in str(info.value)


def test_nan_data_raises_non_finite_loss(gmm512):
    x = gmm512.x.clone()
    x[:] = float("nan")
    bad = Dataset("gmm2d", "train", x, gmm512.y, gmm512.num_classes)
    with pytest.raises(NonFiniteLossError, match=r"epoch 1, step 1 \(lr=0.001"):
        _run(bad)


def test_a_non_finite_loss_mid_epoch_names_the_first_bad_step(gmm512):
    """Losses are read once per epoch; the error still names the first step whose loss was not finite."""
    x = gmm512.x.clone()
    x[100] = float("nan")
    bad = Dataset("gmm2d", "train", x, gmm512.y, gmm512.num_classes)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(SMALL.seed))  # the trainer's first draw
    step = int((perm == 100).nonzero()) // SMALL.batch_size + 1
    with pytest.raises(NonFiniteLossError, match=rf"epoch 1, step {step} \(lr"):
        _run(bad)


def test_ema_checkpoints_hold_ema_weights(gmm512, tmp_path):
    config = TrainConfig(epochs=4, batch_size=64, lr=1e-3, checkpoint_every=2, ema_decay=0.9)
    model, result = _run(gmm512, config, checkpoint_dir=tmp_path)
    raw = model.state_dict()
    assert any(not torch.equal(result.checkpoints[4][k], raw[k]) for k in raw)
    saved = torch.load(tmp_path / "epoch_000004.pt", weights_only=True)
    _assert_same_state(saved["model"], raw)
    _assert_same_state(saved["ema"], result.checkpoints[4])


def test_ema_decay_limits(gmm512):
    """ema <- d ema + (1 - d) theta: d -> 0 tracks the raw weights, d -> 1 (without warm-up) stays at the
    initial weights."""
    base = dict(epochs=2, batch_size=64, lr=1e-2, checkpoint_every=2)
    model, fast = _run(gmm512, TrainConfig(**base, ema_decay=1e-9))
    for k, v in model.state_dict().items():
        torch.testing.assert_close(fast.checkpoints[2][k], v, rtol=1e-6, atol=1e-6)
    initial = MODEL.build(seed=0).state_dict()
    model, slow = _run(gmm512, TrainConfig(**base, ema_decay=1 - 1e-9, ema_warmup=False))
    for k, v in initial.items():
        torch.testing.assert_close(slow.checkpoints[2][k], v, rtol=1e-5, atol=1e-6)
        assert not torch.equal(model.state_dict()[k], v)


# ------------------------------------------------------------------------------------------ EMA warm-up


def _initial_share(decays: list[float]) -> float:
    """Weight of the initial parameters in the EMA after updates with these decays: prod_k d_k."""
    return math.prod(decays)


def test_ema_decay_at_follows_the_warm_up_rule():
    assert ema_decay_at(0, 0.999) == pytest.approx(0.1)  # d_0 = 1 / 10
    assert ema_decay_at(90, 0.999) == pytest.approx(91 / 100)
    assert ema_decay_at(10**6, 0.999) == 0.999
    assert all(ema_decay_at(n, 0.999, warmup=False) == 0.999 for n in (0, 1, 10**6))
    # the warm-up ends at the first n with (1 + n) / (10 + n) >= d, i.e. n >= (10 d - 1) / (1 - d)
    d = 0.75
    end = math.ceil((10 * d - 1) / (1 - d))
    assert ema_decay_at(end - 1, d) < d == ema_decay_at(end, d)
    decays = [ema_decay_at(n, 0.5) for n in range(40)]
    assert decays == sorted(decays) and max(decays) == 0.5


@pytest.mark.parametrize("steps", [1, 2, 10, 100, 1000])
def test_warm_up_share_has_a_closed_form(steps):
    """While (1 + n) / (10 + n) < d: prod_{n<N} (1 + n) / (10 + n) = N! 9! / (N + 9)! = 1 / C(N + 9, 9)."""
    share = _initial_share([ema_decay_at(n, 0.9999) for n in range(steps)])
    assert share == pytest.approx(1 / math.comb(steps + 9, 9), rel=1e-9)


@pytest.mark.parametrize("kwargs", [{"step": -1, "decay": 0.9}, {"step": 0, "decay": 1.0}, {"step": 0, "decay": 0.0}])
def test_ema_decay_at_rejects_bad_values(kwargs):
    bad = "step" if kwargs["step"] < 0 else "decay"
    with pytest.raises(ValueError, match=f"{bad} must be .*got {kwargs[bad]}"):
        ema_decay_at(**kwargs)


class _Scalar(nn.Module):
    """One float64 weight ``w``, 1 at initialisation; the model is never evaluated."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.ones((), dtype=torch.float64))


def _jump_to_zero(model: nn.Module, batch) -> torch.Tensor:
    """Set ``w`` to 0 and return a loss with zero gradient, so every optimiser step leaves ``w = 0``: the EMA of
    ``w`` after N steps is then exactly the initial weight's share ``prod_k d_k``."""
    with torch.no_grad():
        model.w.zero_()
    return (model.w * 0).sum()


@pytest.mark.parametrize("warmup", [True, False], ids=["warmup", "fixed"])
def test_trainer_ema_keeps_the_closed_form_share_of_the_initial_weights(gmm512, warmup):
    """400 points in batches of 8: 50 steps per epoch, checkpoints after 50 and 100 steps."""
    data = Dataset("gmm2d", "train", gmm512.x[:400], gmm512.y[:400], gmm512.num_classes)
    config = TrainConfig(epochs=2, batch_size=8, lr=1e-3, checkpoint_every=1, ema_decay=0.999, ema_warmup=warmup)
    result = train(_Scalar(), SCHEDULE, data, config, loss_fn=_jump_to_zero, progress=False)
    for epoch, steps in ((1, 50), (2, 100)):
        expected = _initial_share([ema_decay_at(n, 0.999, warmup) for n in range(steps)])
        assert result.checkpoints[epoch]["w"].item() == pytest.approx(expected, rel=1e-12)
    share = result.checkpoints[2]["w"].item()
    if warmup:
        assert share < 0.01 and share == pytest.approx(1 / math.comb(109, 9), rel=1e-12)
    else:
        assert share == pytest.approx(0.999**100, rel=1e-12) and share > 0.9


def test_train_cached_trains_once_and_model_at_loads_checkpoints(tmp_path):
    spec = RunSpec(
        MODEL,
        DataConfig("gmm2d"),
        ScheduleConfig("linear", 100),
        TrainConfig(epochs=2, batch_size=2048, lr=1e-3, checkpoint_every=1),
    )
    cache = ArtifactCache(tmp_path)
    run = train_cached(spec, cache, torch.device("cpu"))
    assert sorted(run["checkpoints"]) == [1, 2] and len(run["history"]) == 2
    again = train_cached(spec, cache, torch.device("cpu"))
    _assert_same_state(again["checkpoints"][2], run["checkpoints"][2])
    model = model_at(spec, run, 2, torch.device("cpu"))
    _assert_same_state(model.state_dict(), run["checkpoints"][2])
    assert not model.training
    with pytest.raises(KeyError, match=r"epoch 3.*\[1, 2\]"):
        model_at(spec, run, 3, torch.device("cpu"))


# ------------------------------------------------------------------------------------------ the captured step


def test_the_capture_blocker_names_each_reason():
    """``train`` captures its step only on a CUDA device, for a loss marked capturable and a model without active
    dropout; each refusal says why (the check reads attributes only, so it runs without a GPU)."""
    cuda = torch.device("cuda")
    mlp = MODEL.build(seed=0)
    assert train_capture_blocker(mlp, epsilon_loss, cuda) is None
    assert "CUDA device" in train_capture_blocker(mlp, epsilon_loss, torch.device("cpu"))
    assert "not marked capturable" in train_capture_blocker(mlp, DualScaleLoss(SCHEDULE, seed=0), cuda)
    assert "not marked capturable" in train_capture_blocker(mlp, lambda model, batch: epsilon_loss(model, batch), cuda)
    assert train_capture_blocker(mlp, one_step_loss, cuda) is None
    assert train_capture_blocker(mlp, distillation_loss(MODEL.build(seed=1)), cuda) is None
    uncapturable_teacher = MODEL.build(seed=1)
    uncapturable_teacher.capturable = False  # e.g. classifier guidance: autograd inside its forward
    assert "not marked capturable" in train_capture_blocker(mlp, distillation_loss(uncapturable_teacher), cuda)
    unet = ModelConfig.of("unet", base_channels=8, dropout=0.1).build(seed=0)
    assert "dropout" in train_capture_blocker(unet, epsilon_loss, cuda)
    assert train_capture_blocker(ModelConfig.of("unet", base_channels=8).build(seed=0), epsilon_loss, cuda) is None


def test_insisting_on_a_captured_step_without_a_gpu_is_a_clear_error(gmm512):
    with pytest.raises(ValueError, match=r"cuda_graph=True: CUDA graphs need a CUDA device"):
        _run(gmm512, cuda_graph=True)


@pytest.mark.parametrize("optimizer", ["adam", "adamw"])
@pytest.mark.parametrize("steps_before", [0, 3], ids=["fresh", "warm"])
def test_the_captures_warm_up_steps_are_undone_exactly(optimizer, steps_before):
    """A capture's warm-up runs take real optimiser steps (other data here). Restoring the copy taken before them,
    in place, leaves the weights and optimiser continuing bitwise as if they had never run, including from a fresh
    optimiser whose state the warm-up created. Without the restore the weights differ (the check can fail)."""
    g = torch.Generator().manual_seed(0)
    batches = [(torch.randn(32, 2, generator=g), torch.randint(1000, (32,), generator=g)) for _ in range(8)]

    def run(*, warm_up: bool, restore: bool = True) -> dict[str, torch.Tensor]:
        model = MODEL.build(seed=0)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-2) if optimizer == "adamw" else None
        opt = opt or torch.optim.Adam(model.parameters(), lr=1e-2)

        def step(x: torch.Tensor, t: torch.Tensor) -> None:
            opt.zero_grad(set_to_none=True)
            model(x, t).square().mean().backward()
            opt.step()

        for x, t in batches[:steps_before]:
            step(x, t)
        if warm_up:
            saved = _step_state(model, opt)
            for x, t in batches[6:]:
                step(x, t)
            if restore:
                _restore_step_state(model, opt, saved)
        for x, t in batches[3:6]:
            step(x, t)
        return {key: value.clone() for key, value in model.state_dict().items()}

    plain = run(warm_up=False)
    _assert_same_state(run(warm_up=True), plain)
    unrestored = run(warm_up=True, restore=False)
    assert any(not torch.equal(unrestored[key], plain[key]) for key in plain)


class ReplayLikeCall:
    """:class:`diffbench.graphs.CapturedCall`'s side effects without a GPU: ``WARMUP_RUNS`` real calls of ``fn`` on
    its buffers when built (they step the optimiser, as the capture's warm-ups do), then each call copies its inputs
    into the buffers, runs ``fn`` and writes the outputs into the same tensors every time (a replay overwrites the
    last replay's outputs)."""

    built: list[dict[str, tuple[int, ...]]] = []

    def __init__(self, fn, example: dict[str, torch.Tensor]) -> None:
        self._fn, self._buffers = fn, {name: value.clone() for name, value in example.items()}
        for _ in range(graphs.WARMUP_RUNS):
            fn(self._buffers)
        self._outputs: tuple[torch.Tensor, ...] | None = None
        ReplayLikeCall.built.append({name: tuple(value.shape) for name, value in example.items()})

    def __call__(self, inputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
        for name, value in inputs.items():
            self._buffers[name].copy_(value)
        results = self._fn(self._buffers)
        if self._outputs is None:
            self._outputs = tuple(value.clone() for value in results)
        for output, value in zip(self._outputs, results, strict=True):
            output.copy_(value)
        return self._outputs


@pytest.mark.parametrize("restore", [True, False], ids=["restored", "control-without-restore"])
def test_the_captured_step_path_trains_bitwise_as_the_eager_step(monkeypatch, tmp_path, restore):
    """The trainer's captured path on a CPU, with the graph replaced by :class:`ReplayLikeCall`: one capture per
    batch size (the last batch of 300 at 64 is 44), warm-up steps undone, outputs copied before the next replay,
    EMA and label dropout on, and a resume in the middle. Weights, EMA checkpoints and the log equal the eager run's
    bitwise; the control without the undo differs (the check can fail)."""
    digits = load_dataset(DataConfig("digits"), "train")
    data = Dataset("digits", "train", digits.x[:300].clone(), digits.y[:300].clone(), digits.num_classes)
    spec = ModelConfig.of("unet", base_channels=8, num_classes=digits.num_classes, image_size=digits.x.shape[-1])
    config = TrainConfig(epochs=3, batch_size=64, lr=1e-3, ema_decay=0.99, label_dropout=0.2, checkpoint_every=1)
    eager_model = spec.build(seed=0)
    eager = train(eager_model, SCHEDULE, data, config, progress=False)

    monkeypatch.setattr(graphs, "CapturedCall", ReplayLikeCall)
    monkeypatch.setattr(training, "train_capture_blocker", lambda model, loss_fn, device: None)
    if not restore:
        monkeypatch.setattr(training, "_restore_step_state", lambda model, opt, saved: None)
    ReplayLikeCall.built.clear()
    resumable = {"progress": False, "checkpoint_dir": tmp_path}

    def stop_at_2(epoch: int, row: dict) -> None:
        if epoch == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(spec.build(seed=0), SCHEDULE, data, config, on_epoch_end=stop_at_2, **resumable)
    model = spec.build(seed=0)
    captured = train(model, SCHEDULE, data, config, **resumable)
    assert [shapes["idx"] for shapes in ReplayLikeCall.built] == [(64,), (44,)] * 2  # per batch size, per run
    same = all(torch.equal(model.state_dict()[key], value) for key, value in eager_model.state_dict().items())
    assert same == restore
    if restore:
        for epoch, weights in eager.checkpoints.items():
            _assert_same_state(captured.checkpoints[epoch], weights)
        assert _without_timing(captured.history) == _without_timing(eager.history)


# ------------------------------------------------------------------------------------------------ on a GPU

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@needs_cuda
@pytest.mark.parametrize("ema_decay", [None, 0.99])
def test_cuda_training_tracks_the_cpu_run_and_resumes_bit_exactly(gmm512, tmp_path, ema_decay):
    """The GPU path (pinned non-blocking copies, losses read once per epoch, fused Adam, one foreach EMA update)
    draws the same batches as the CPU (one host generator), so its weights follow the CPU run's to float tolerance,
    and an interrupted GPU run resumes to the uninterrupted GPU run's weights exactly."""
    config = replace(SMALL, ema_decay=ema_decay)
    cpu_model, cpu = _run(gmm512, config)
    gpu_model, gpu = _run(gmm512, config, device="cuda")
    for key, value in cpu_model.state_dict().items():
        torch.testing.assert_close(gpu_model.state_dict()[key].cpu(), value, rtol=1e-3, atol=1e-4)
    for row_cpu, row_gpu in zip(cpu.history, gpu.history, strict=True):
        assert row_gpu["loss"] == pytest.approx(row_cpu["loss"], rel=1e-3)

    def stop_at_3(epoch: int, row: dict) -> None:
        if epoch == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _run(gmm512, config, device="cuda", checkpoint_dir=tmp_path, on_epoch_end=stop_at_3)
    resumed_model, resumed = _run(gmm512, config, device="cuda", checkpoint_dir=tmp_path)
    _assert_same_state(resumed_model.state_dict(), gpu_model.state_dict())
    for epoch in gpu.checkpoints:
        _assert_same_state(resumed.checkpoints[epoch], gpu.checkpoints[epoch])


@needs_cuda
def test_a_non_finite_loss_on_cuda_names_its_step(gmm512):
    with pytest.raises(NonFiniteLossError, match=r"epoch 1, step 1 "):
        _run(replace(gmm512, x=torch.full_like(gmm512.x, float("nan"))), device="cuda")


@needs_cuda
@pytest.mark.parametrize("conditional", [False, True], ids=["gmm-mlp", "digits-unet-label-dropout"])
def test_the_captured_train_step_matches_the_eager_one(conditional):
    """``cuda_graph=True`` (one replayed graph per batch size, the last batch smaller here) against
    ``cuda_graph=False`` on the same GPU, EMA on: the same draws and the same kernels, so weights, EMA checkpoints
    and the logged losses agree to float tolerance (1e-5 relative)."""
    if conditional:
        digits = load_dataset(DataConfig("digits"), "train")
        data = Dataset("digits", "train", digits.x[:300].clone(), digits.y[:300].clone(), digits.num_classes)
        size = digits.x.shape[-1]
        model = ModelConfig.of("unet", base_channels=8, num_classes=digits.num_classes, image_size=size)
        config = TrainConfig(epochs=2, batch_size=64, lr=1e-3, ema_decay=0.99, label_dropout=0.2, seed=1)
    else:
        full = load_dataset(DataConfig("gmm2d"), "train")
        data = Dataset("gmm2d", "train", full.x[:500].clone(), full.y[:500].clone(), full.num_classes)
        model, config = MODEL, TrainConfig(epochs=3, batch_size=64, lr=1e-3, ema_decay=0.99, seed=0)
    runs = {}
    for graph in (False, True):
        net = model.build(seed=0)
        runs[graph] = net, train(net, SCHEDULE, data, config, device="cuda", progress=False, cuda_graph=graph)
    (eager_net, eager), (graph_net, captured) = runs[False], runs[True]
    for key, value in eager_net.state_dict().items():
        torch.testing.assert_close(graph_net.state_dict()[key], value, rtol=1e-5, atol=1e-6)
    for epoch, weights in eager.checkpoints.items():
        for key, value in weights.items():
            torch.testing.assert_close(captured.checkpoints[epoch][key], value, rtol=1e-5, atol=1e-6)
    for row_eager, row_graph in zip(eager.history, captured.history, strict=True):
        assert row_graph["loss"] == pytest.approx(row_eager["loss"], rel=1e-5)
        assert row_graph["grad_norm"] == pytest.approx(row_eager["grad_norm"], rel=1e-5)

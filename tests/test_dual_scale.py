"""LIFT dual-scale diffusion (seed 003): the 2x resampling, the dual-scale UNet and its matched single-scale baseline,
the two-scale loss in the one trainer, the dual-scale DDIM sampler and the AFHQ loader."""

from __future__ import annotations

import os
import sys
import time
import types
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from diffbench.data import DATASETS, DataConfig, Dataset, DatasetUnavailableError, load_dataset
from diffbench.models import MODELS, DualScaleUNet, ModelConfig, count_parameters
from diffbench.models.dual_scale import downsample2x, matched_widths, upsample2x
from diffbench.models.unet import DDPMUNet, parameter_count
from diffbench.sampling import DualScaleStep, ddim_sample, dual_scale_sample, quadratic_timesteps, uniform_timesteps
from diffbench.schedules import NoiseSchedule
from diffbench.training import DualScaleLoss, TrainBatch, TrainConfig, train

TINY = {"widths": (8, 16), "image_size": 8, "attention_resolutions": (4,)}  # fast enough for training and sampling
SCHEDULE = NoiseSchedule.linear(1000)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _pair(batch: int = 3, channels: int = 1, size: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = _gen(seed)
    return torch.randn(batch, channels, size, size, generator=g), torch.randn(
        batch, channels, size // 2, size // 2, generator=g
    )


def _tiny(seed: int = 0, **kwargs: object) -> DualScaleUNet:
    return ModelConfig.of("lift_unet", **{**TINY, **kwargs}).build(seed=seed).eval()


# ------------------------------------------------------------------------------------------ resampling


@pytest.mark.parametrize("shape", [(2, 1, 8, 8), (1, 3, 16, 6), (4, 2, 2, 4)])
def test_downsample2x_is_the_2x2_box_average(shape):
    """Bilinear at exactly 1/2 with align_corners=False samples halfway between pixel pairs: avg_pool2d(x, 2)."""
    x = torch.randn(shape, generator=_gen(1))
    torch.testing.assert_close(downsample2x(x), F.avg_pool2d(x, 2), rtol=0, atol=1e-6)


def test_downsample2x_keeps_images_in_range_and_constants_fixed():
    x = torch.rand(3, 3, 8, 8, generator=_gen(2)) * 2 - 1
    small = downsample2x(x)
    assert small.min() >= x.min() and small.max() <= x.max()
    assert torch.equal(downsample2x(torch.full((1, 1, 4, 4), 0.25)), torch.full((1, 1, 2, 2), 0.25))
    assert torch.equal(upsample2x(torch.full((1, 1, 2, 2), -0.5)), torch.full((1, 1, 4, 4), -0.5))


@pytest.mark.parametrize("shape", [(1, 1, 7, 8), (1, 1, 8, 5), (8, 8)])
def test_downsample2x_rejects_odd_or_non_image_shapes(shape):
    with pytest.raises(ValueError, match=str(shape).replace("(", r"\(").replace(")", r"\)")):
        downsample2x(torch.zeros(shape))


def test_upsample2x_doubles_the_side():
    assert upsample2x(torch.zeros(2, 3, 4, 5)).shape == (2, 3, 8, 10)


# ------------------------------------------------------------------------------------------------ model


def test_registered_unconditional_and_seeded():
    assert MODELS["lift_unet"] is DualScaleUNet
    a, b = _tiny(seed=3), _tiny(seed=3)
    assert a.num_classes == 0 and isinstance(a, DDPMUNet)
    assert all(torch.equal(a.state_dict()[k], v) for k, v in b.state_dict().items())


@pytest.mark.parametrize("channels", [1, 3])
def test_forward_shapes_and_scalar_timesteps(channels):
    model = _tiny(in_channels=channels)
    x_large, x_small = _pair(channels=channels)
    with torch.no_grad():
        eps_large, eps_small = model(x_large, x_small, torch.tensor([1, 2, 3]), torch.tensor([4, 5, 6]))
        assert eps_large.shape == x_large.shape and eps_small.shape == x_small.shape
        scalar = model(x_large, x_small, torch.tensor(7), 9)
        batch = model(x_large, x_small, torch.tensor([7, 7, 7]), torch.tensor([9, 9, 9]))
    assert all(torch.equal(s, b) for s, b in zip(scalar, batch, strict=True))


def test_output_depends_on_both_timesteps_and_both_scales():
    model = _tiny()
    x_large, x_small = _pair()
    t = torch.tensor([10, 10, 10])
    with torch.no_grad():
        ref = torch.cat([e.flatten(1) for e in model(x_large, x_small, t, t)], 1)
        for args in ((x_large, x_small, t + 500, t), (x_large, x_small, t, t + 500), (x_large, x_small + 1, t, t)):
            assert not torch.allclose(torch.cat([e.flatten(1) for e in model(*args)], 1), ref)


def test_every_parameter_gets_a_gradient():
    """No dead weights: the base class's single time MLP is the large-scale branch, so all parameters are used."""
    model = _tiny().train()
    x_large, x_small = _pair()
    eps_large, eps_small = model(x_large, x_small, torch.tensor([1, 500, 999]), torch.tensor([999, 3, 40]))
    (eps_large.square().mean() + eps_small.square().mean()).backward()
    unused = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert unused == []


@pytest.mark.parametrize("channels", [1, 3])
def test_parameter_count_is_the_2c_body_plus_two_time_mlps(channels):
    """Closed form: the DDPMUNet body with 2C channels in and out (its time MLP is the large branch), plus the small
    branch ``freq -> td -> td`` and the merge ``2 td -> td -> td``, each linear ``in * out + out``."""
    model = DualScaleUNet((24, 48), in_channels=channels, image_size=16, attention_resolutions=(8,))
    freq, td = model.freq_dim, model.time_dim
    body = parameter_count(
        (24, 48), in_channels=2 * channels, out_channels=2 * channels, image_size=16, attention_resolutions=(8,)
    )
    small = freq * td + td + td * td + td
    merge = 2 * td * td + td + td * td + td
    assert count_parameters(model) == body + small + merge == model.describe()["parameters"]


def test_flops_per_image_matches_the_flop_counter():
    model = _tiny(in_channels=3)
    x_large, x_small = _pair(channels=3)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x_large, x_small, torch.tensor([1, 2, 3]), torch.tensor([3, 2, 1]))
    assert model.describe()["flops_per_image"] == counter.get_total_flops() / 3


def test_widths_or_base_channels_and_default_attention():
    assert DualScaleUNet(base_channels=8, channel_mults=(1, 2, 2), image_size=16).widths == (8, 16, 16)
    model = DualScaleUNet((8, 16, 16), image_size=16)
    assert model.attention_resolutions == (8, 4)  # every level but the first, as the seed
    assert model.in_channels == 1 and model.body_channels == 2
    with pytest.raises(ValueError, match="widths=\\(8, 16\\).*base_channels=8"):
        DualScaleUNet((8, 16), base_channels=8)


def test_odd_image_size_is_rejected():
    with pytest.raises(ValueError, match="image_size .*even.*got 9"):
        DualScaleUNet((8,), image_size=9)


@pytest.mark.parametrize(
    "x_small_shape, t_small, match",
    [
        ((3, 1, 8, 8), torch.tensor([1, 2, 3]), r"x_small .*\(3, 1, 4, 4\).*\(3, 1, 8, 8\)"),
        ((2, 1, 4, 4), torch.tensor([1, 2, 3]), r"x_small .*\(3, 1, 4, 4\).*\(2, 1, 4, 4\)"),
        ((3, 1, 4, 4), torch.tensor([1, 2]), r"t_small .*\[3\].*\(2,\)"),
    ],
)
def test_shape_errors_name_the_shapes(x_small_shape, t_small, match):
    model = _tiny()
    x_large = torch.zeros(3, 1, 8, 8)
    with pytest.raises(ValueError, match=match):
        model(x_large, torch.zeros(x_small_shape), torch.tensor([1, 2, 3]), t_small)
    with pytest.raises(ValueError, match=r"x_large .*1 channels.*\(3, 3, 8, 8\)"):
        model(torch.zeros(3, 3, 8, 8), torch.zeros(3, 3, 4, 4), 1, 1)


# ------------------------------------------------------------------------------------- DDPMUNet refactor


def test_ddpm_forward_is_body_of_embed_and_out_channels_defaults_to_in_channels():
    kwargs = {"in_channels": 3, "image_size": 8, "attention_resolutions": (4,), "num_classes": 2}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        default = DDPMUNet((8, 16), **kwargs).eval()
        torch.manual_seed(0)
        explicit = DDPMUNet((8, 16), out_channels=3, **kwargs).eval()
    assert list(default.state_dict()) == list(explicit.state_dict())
    assert all(torch.equal(v, explicit.state_dict()[k]) for k, v in default.state_dict().items())
    x, t, y = torch.randn(2, 3, 8, 8, generator=_gen(0)), torch.tensor([5, 900]), torch.tensor([0, 2])
    with torch.no_grad():
        assert torch.equal(default(x, t, y), default.body(x, default.embed(t, y)))
        assert torch.equal(default(x, t), explicit(x, t))
    wide = DDPMUNet((8, 16), out_channels=5, **kwargs)
    assert wide(x, t).shape == (2, 5, 8, 8)


# ---------------------------------------------------------------------------------------- fair baseline

SMOKE = {"in_channels": 1, "image_size": 16, "num_res_blocks": 1, "attention_resolutions": (8,), "dropout": 0.0}
MATCH_CASES = {
    "smoke": ((24, 48), SMOKE),
    "smoke_rgb": ((24, 48), {**SMOKE, "in_channels": 3}),
    "standard": ((64, 128, 128), {**SMOKE, "image_size": 32, "num_res_blocks": 2, "attention_resolutions": (16,)}),
}


@pytest.mark.parametrize("case", list(MATCH_CASES))
def test_matched_baseline_has_the_lift_models_parameters_within_5_percent(case):
    widths, kwargs = MATCH_CASES[case]
    with torch.device("meta"):
        lift = DualScaleUNet(widths, **kwargs)
    target = count_parameters(lift)
    assert lift.baseline_kwargs() == {**kwargs, "num_heads": 1}
    baseline = matched_widths(target, widths, **lift.baseline_kwargs())
    count = parameter_count(baseline, **kwargs)
    assert abs(count / target - 1) < 0.05
    assert len(baseline) == len(widths) and all(w % 2 == 0 for w in baseline)
    assert count_parameters(DDPMUNet(baseline, **kwargs)) == count  # builds (GroupNorm divides every width)
    # the search stops where no single-level move of one step gets closer
    error = abs(count / target - 1)
    for i in range(len(baseline)):
        for delta in (-2, 2):
            moved = baseline[:i] + (baseline[i] + delta,) + baseline[i + 1 :]
            assert abs(parameter_count(moved, **kwargs) / target - 1) >= error - 1e-12


def test_matched_widths_of_the_base_count_is_the_base():
    assert matched_widths(parameter_count((24, 48), **SMOKE), (24, 48), **SMOKE) == (24, 48)


def test_matched_widths_respects_heads_and_rejects_bad_values():
    kwargs = {**SMOKE, "num_heads": 3}
    widths = matched_widths(500_000, (24, 48), **kwargs)
    assert all(w % 6 == 0 for w in widths)  # lcm(step 2, 3 heads)
    with pytest.raises(ValueError, match="target_parameters must be > 0, got 0"):
        matched_widths(0, (24, 48), **SMOKE)
    with pytest.raises(ValueError, match=r"base_widths .*got \(\)"):
        matched_widths(1000, (), **SMOKE)


# ------------------------------------------------------------------------------------------------- loss


class _Recorder(nn.Module):
    """A dual-scale 'model' that records its inputs and predicts zero noise on both scales."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(()))
        self.seen: tuple[torch.Tensor, ...] = ()

    def forward(self, x_large, x_small, t_large, t_small):
        self.seen = (x_large, x_small, t_large, t_small)
        return x_large * self.w, x_small * self.w


def _batch(seed: int = 0, batch: int = 4) -> TrainBatch:
    g = _gen(seed)
    x0 = torch.rand(batch, 1, 8, 8, generator=g) * 2 - 1
    t, noise = torch.randint(1000, (batch,), generator=g), torch.randn(x0.shape, generator=g)
    return TrainBatch(x0, SCHEDULE.add_noise(x0, t, noise), t, noise, {})


def test_loss_draws_the_small_scale_from_its_generator_and_sums_the_two_mses():
    """The documented draw: ``t_S = randint(T, [B])`` then ``eps_S = randn(x0_S.shape)`` from ``Generator(seed)``;
    with a zero prediction each MSE is the mean square of its noise."""
    batch, model = _batch(), _Recorder()
    state = torch.get_rng_state()
    loss = DualScaleLoss(SCHEDULE, seed=5)(model, batch)
    assert torch.equal(torch.get_rng_state(), state)
    g = _gen(5)
    t_small = torch.randint(1000, (4,), generator=g)
    noise_small = torch.randn(4, 1, 4, 4, generator=g)
    x_small_t = SCHEDULE.add_noise(F.avg_pool2d(batch.x0, 2), t_small, noise_small)
    x_large, x_small, t_large, t_seen = model.seen
    assert torch.equal(x_large, batch.x_t) and torch.equal(t_large, batch.t) and torch.equal(t_seen, t_small)
    torch.testing.assert_close(x_small, x_small_t, rtol=0, atol=1e-6)
    torch.testing.assert_close(loss, batch.noise.square().mean() + noise_small.square().mean())


def test_loss_state_round_trips_and_rejects_conditioning():
    a, b = DualScaleLoss(SCHEDULE, seed=1), DualScaleLoss(SCHEDULE, seed=2)
    a(_Recorder(), _batch())
    b.load_state_dict(a.state_dict())
    first, second = _Recorder(), _Recorder()
    assert torch.equal(a(first, _batch(1)), b(second, _batch(1)))
    assert all(torch.equal(u, v) for u, v in zip(first.seen, second.seen, strict=True))
    with pytest.raises(ValueError, match=r"unconditional.*\['y'\]"):
        a(_Recorder(), replace(_batch(), cond={"y": torch.zeros(4, dtype=torch.long)}))


@pytest.fixture(scope="module")
def digits64() -> Dataset:
    full = load_dataset(DataConfig("digits", image_size=8), "train")
    return Dataset("digits", "train", full.x[:64].clone())


def _train(dataset: Dataset, config: TrainConfig, **kwargs):
    model = ModelConfig.of("lift_unet", **TINY).build(seed=config.seed)
    result = train(model, SCHEDULE, dataset, config, loss_fn=DualScaleLoss(SCHEDULE, seed=11), progress=False, **kwargs)
    return model, result


def _without_timing(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k != "seconds"} for row in history]


def test_resumed_dual_scale_training_is_bit_identical(digits64, tmp_path):
    """1 epoch to a checkpoint dir, then the same run asked for 2 (a fresh model and a fresh loss, as in a new
    process): the trainer restores the loss's generator with the rest and lands on the uninterrupted run."""
    data = Dataset("digits", "train", digits64.x[:32])
    config = TrainConfig(epochs=2, batch_size=16, lr=1e-3, checkpoint_every=1, seed=0)
    ref_model, ref = _train(data, config)
    _train(data, replace(config, epochs=1), checkpoint_dir=tmp_path)
    model, result = _train(data, config, checkpoint_dir=tmp_path)
    assert all(torch.equal(v, ref_model.state_dict()[k]) for k, v in model.state_dict().items())
    assert _without_timing(result.history) == _without_timing(ref.history)
    saved = torch.load(tmp_path / "epoch_000002.pt", weights_only=True)
    assert saved["loss"]["generator"].dtype == torch.uint8


def test_dual_scale_training_reduces_the_loss(digits64):
    config = TrainConfig(epochs=6, batch_size=16, lr=3e-3, checkpoint_every=6)
    _, result = _train(digits64, config)
    # an untrained eps model is off by about E|eps|^2 = 1 per scale
    assert result.history[-1]["loss"] < 0.8 * result.history[0]["loss"]


# ---------------------------------------------------------------------------------------------- sampler


class _Independent(nn.Module):
    """A dual-scale model made of two single-scale eps models, each scale ignoring the other."""

    def __init__(self, large: nn.Module, small: nn.Module) -> None:
        super().__init__()
        self.large, self.small = large, small

    def forward(self, x_large, x_small, t_large, t_small):
        return self.large(x_large, t_large), self.small(x_small, t_small)


def _ddpm(seed: int, size: int) -> DDPMUNet:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return DDPMUNet((8, 16), image_size=size, attention_resolutions=(size // 2,)).eval()


GRIDS = {
    "same_uniform": (uniform_timesteps(1000, 8), uniform_timesteps(1000, 8)),
    "uniform_vs_quadratic": (uniform_timesteps(1000, 6), quadratic_timesteps(1000, 6)),
    "one_step": ([999], [500]),
}


@pytest.mark.parametrize("clip", [None, 1.0])
@pytest.mark.parametrize("grids", list(GRIDS))
def test_independent_scales_reduce_to_single_scale_ddim(grids, clip):
    t_large, t_small = GRIDS[grids]
    large, small = _ddpm(1, 8), _ddpm(2, 4)
    x_T_large, x_T_small = _pair(batch=2)
    out_large, out_small = dual_scale_sample(
        _Independent(large, small), x_T_large, x_T_small, t_large, t_small, SCHEDULE, clip_denoised=clip
    )
    torch.testing.assert_close(out_large, ddim_sample(large, x_T_large, t_large, SCHEDULE, clip_denoised=clip))
    torch.testing.assert_close(out_small, ddim_sample(small, x_T_small, t_small, SCHEDULE, clip_denoised=clip))


class _DiracOracle(nn.Module):
    """The exact eps of data that is one point per scale: ``eps = (x_t - sqrt(abar) c) / sqrt(1 - abar)``."""

    def __init__(self, c_large: torch.Tensor, c_small: torch.Tensor) -> None:
        super().__init__()
        self.c_large, self.c_small = c_large, c_small

    def forward(self, x_large, x_small, t_large, t_small):
        def eps(x, t, c):
            abar = SCHEDULE.alpha_bar[t].float().reshape(-1, 1, 1, 1)
            return (x - abar.sqrt() * c) / (1 - abar).sqrt()

        return eps(x_large, t_large, self.c_large), eps(x_small, t_small, self.c_small)


WAITING = {
    "small_waits": ([999, 800, 600, 400, 200, 0], [999, 500, 500, 500, 200, 0]),
    "large_waits_first": ([999, 999, 999, 500, 100, 10], [999, 600, 300, 100, 10, 10]),
    "both_constant": ([700, 700, 700], [300, 300, 300]),
}


@pytest.mark.parametrize("case", list(WAITING))
def test_a_waiting_scale_is_unchanged_and_the_oracle_returns_the_points(case):
    t_large, t_small = WAITING[case]
    c_large = torch.rand(1, 1, 8, 8, generator=_gen(3)) * 2 - 1
    c_small = downsample2x(c_large)
    steps: list[DualScaleStep] = []
    x_T_large, x_T_small = _pair(batch=2)
    oracle = _DiracOracle(c_large, c_small)
    out = dual_scale_sample(oracle, x_T_large, x_T_small, t_large, t_small, SCHEDULE, callback=steps.append)
    assert [(s.i, s.t_large, s.t_small) for s in steps] == list(zip(range(len(t_large)), t_large, t_small, strict=True))
    for scale, grid in (("large", t_large), ("small", t_small)):
        for k in range(len(grid) - 1):
            same = torch.equal(getattr(steps[k], f"x_{scale}"), getattr(steps[k + 1], f"x_{scale}"))
            assert same == (grid[k] == grid[k + 1]), (scale, k)
    torch.testing.assert_close(out[0], c_large.expand(2, -1, -1, -1), rtol=0, atol=1e-4)
    torch.testing.assert_close(out[1], c_small.expand(2, -1, -1, -1), rtol=0, atol=1e-4)


def test_the_result_is_the_last_steps_x0_and_the_model_sees_the_states():
    model = _tiny()
    x_T_large, x_T_small = _pair(batch=2)
    steps: list[DualScaleStep] = []
    out_large, out_small = dual_scale_sample(
        model, x_T_large, x_T_small, [999, 500, 500, 20], [999, 999, 300, 0], SCHEDULE, callback=steps.append
    )
    assert torch.equal(steps[0].x_large, x_T_large) and torch.equal(steps[0].x_small, x_T_small)
    assert torch.equal(steps[-1].x0_large, out_large) and torch.equal(steps[-1].x0_small, out_small)
    assert torch.equal(steps[1].x_small, steps[0].x_small) and torch.equal(steps[2].x_large, steps[1].x_large)
    again = dual_scale_sample(model, x_T_large, x_T_small, [999, 500, 500, 20], [999, 999, 300, 0], SCHEDULE)
    assert torch.equal(again[0], out_large) and torch.equal(again[1], out_small)


@pytest.mark.parametrize(
    "t_large, t_small, match",
    [
        ([999, 500, 0], [999, 998, 999], r"t_small must be non-increasing, got 998 then 999 at positions 1, 2"),
        ([10, 20], [20, 10], r"t_large must be non-increasing, got 10 then 20 at positions 0, 1"),
        ([999, 500, 0], [999, 0], r"same length, got 3 and 2"),
        ([999, 1000], [5, 4], r"t_large must lie in \[0, 999\], got 1000 at position 1"),
        ([5, 4], [5, -1], r"t_small must lie in \[0, 999\], got -1 at position 1"),
        ([], [], r"t_large must be a non-empty"),
        ([5, 4.5], [5, 4], r"t_large must be integers, got 4.5 at position 1"),
    ],
)
def test_bad_schedules_raise_naming_the_value(t_large, t_small, match):
    x_T_large, x_T_small = _pair(batch=1)
    with pytest.raises(ValueError, match=match):
        dual_scale_sample(_tiny(), x_T_large, x_T_small, t_large, t_small, SCHEDULE)


# ------------------------------------------------------------------------------------------------- AFHQ


def _afhq_error(monkeypatch, tmp_path, module: object) -> str:
    monkeypatch.setitem(sys.modules, "datasets", module)
    started = time.monotonic()
    with pytest.raises(DatasetUnavailableError) as info:
        load_dataset(DataConfig("afhq", image_size=64, root=str(tmp_path)), "train")
    assert time.monotonic() - started < 30
    message = str(info.value)
    assert "pip install 'diffbench[afhq]'" in message and "huggan/AFHQv2" in message and str(tmp_path) in message
    assert "once on a machine with network" in message
    return message


def test_afhq_without_the_datasets_package_says_what_to_install(monkeypatch, tmp_path):
    assert "afhq" in DATASETS
    assert "not installed" in _afhq_error(monkeypatch, tmp_path, None)


def test_afhq_is_read_offline_and_a_missing_cache_says_how_to_download(monkeypatch, tmp_path):
    flags: list[dict] = []

    def load_dataset_offline(name, split, cache_dir):
        flags.append({key: os.environ.get(key) for key in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE")})
        raise ConnectionError(f"Couldn't reach '{name}' on the Hub (offline mode is enabled)")

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "0")
    message = _afhq_error(monkeypatch, tmp_path, types.SimpleNamespace(load_dataset=load_dataset_offline))
    assert "offline mode is enabled" in message
    assert flags == [{"HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}]
    assert os.environ["HF_DATASETS_OFFLINE"] == "0" and "HF_HUB_OFFLINE" not in os.environ  # restored


class _FakeHub:
    """The slice of a ``datasets.Dataset`` the loader uses: len, select, iteration, a column and features."""

    def __init__(self, images: list, labels: list[int]) -> None:
        self.images, self.labels = images, labels
        self.features = {"label": types.SimpleNamespace(names=["cat", "dog", "wild"])}

    def __len__(self) -> int:
        return len(self.images)

    def select(self, idx: list[int]) -> _FakeHub:
        return _FakeHub([self.images[i] for i in idx], [self.labels[i] for i in idx])

    def __iter__(self):
        return iter({"image": im, "label": y} for im, y in zip(self.images, self.labels, strict=True))

    def __getitem__(self, column: str) -> list:
        return {"image": self.images, "label": self.labels}[column]


def test_afhq_converts_cached_images_to_rgb_in_range_with_labels(monkeypatch):
    """Flat-coloured 32x32 images (one grey, so RGB conversion is exercised) resize to the same flat colours."""
    from PIL import Image

    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255), (0, 0, 0)]
    images = [Image.new("RGB", (32, 32), c) for c in colours] + [Image.new("L", (32, 32), 255)]
    hub = _FakeHub(images * 5, [0, 1, 2, 0, 1, 2] * 5)
    module = types.SimpleNamespace(load_dataset=lambda name, split, cache_dir: hub)
    monkeypatch.setitem(sys.modules, "datasets", module)
    train_set, test_set = (load_dataset(DataConfig("afhq", image_size=8), s) for s in ("train", "test"))
    assert len(train_set) == 24 and len(test_set) == 6 and train_set.num_classes == 3
    assert train_set.x.shape == (24, 3, 8, 8) and train_set.x.dtype == torch.float32
    grey = (255, 255, 255)  # the "L" image
    expected = {tuple(2 * c / 255 - 1 for c in colour) for colour in (*colours, grey)}
    for ds in (train_set, test_set):
        assert ds.x.min() >= -1 and ds.x.max() <= 1
        for x, y in zip(ds.x, ds.y, strict=True):
            assert torch.equal(x, x[:, :1, :1].expand_as(x))  # a flat colour stays flat
            assert tuple(x[:, 0, 0].tolist()) in expected and 0 <= y < 3

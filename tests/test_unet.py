"""The UNet: the eps(x, t, y) interface, the null label, size-factor bands and parameter matching, seeding."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from diffbench.data import DataConfig, Dataset, load_dataset
from diffbench.models import MODELS, ModelConfig, UNet, count_parameters
from diffbench.models.unet import BANDS, band_of, fit_width_multiplier, parameter_count, scaled_widths
from diffbench.schedules import NoiseSchedule
from diffbench.training import TrainConfig, train

SMOKE = {"num_classes": 10}  # the smoke teacher: digits 16x16, 1 channel, base 32, mults (1, 2), attention at 8
PAPER = {
    "in_channels": 3,
    "image_size": 32,
    "base_channels": 128,
    "channel_mults": (1, 2, 2, 2),
    "num_res_blocks": 3,
    "dropout": 0.3,
    "attention_resolutions": (16,),
}
SMALL = {"base_channels": 8, "num_classes": 3}  # fast enough for many forward passes


def _inputs(batch: int = 4, channels: int = 1, size: int = 16, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, channels, size, size, generator=gen), torch.randint(1000, (batch,), generator=gen)


def _same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# ------------------------------------------------------------------------------------------ interface


@pytest.mark.parametrize("size_factor", [0.05, 0.5, 1.0])
@pytest.mark.parametrize("num_classes", [0, 3])
def test_output_shape_equals_input_shape(size_factor, num_classes):
    model = UNet(size_factor, base_channels=8, num_classes=num_classes).eval()
    x, t = _inputs()
    assert model(x, t).shape == x.shape
    if num_classes:
        assert model(x, t, torch.tensor([0, 1, 2, 3])).shape == x.shape


def test_rgb_three_levels_output_shape():
    model = UNet(1.0, in_channels=3, image_size=32, base_channels=8, channel_mults=(1, 2, 2), num_heads=2).eval()
    x, t = _inputs(2, 3, 32)
    assert model(x, t).shape == x.shape


def test_registered_and_num_classes_attribute():
    assert MODELS["unet"] is UNet
    assert UNet(**SMALL).num_classes == 3 and UNet(base_channels=8).num_classes == 0


def test_null_label_is_the_default_and_differs_from_real_labels():
    model = UNet(**SMALL).eval()
    x, t = _inputs()
    null = torch.full((4,), 3)
    assert torch.equal(model(x, t), model(x, t, null))
    assert not torch.equal(model(x, t, torch.zeros(4, dtype=torch.long)), model(x, t, null))
    assert model.label_embed.num_embeddings == 4  # num_classes + 1: index num_classes is the null label


def test_unconditional_model_rejects_labels():
    with pytest.raises(ValueError, match="unconditional"):
        UNet(base_channels=8)(*_inputs(), y=torch.zeros(4, dtype=torch.long))


def test_output_depends_on_t_and_accepts_a_scalar_t():
    model = UNet(base_channels=8).eval()
    x = torch.zeros(2, 1, 16, 16)
    out = model(x, torch.tensor([0, 500]))
    assert not torch.equal(out[0], out[1])
    assert torch.equal(model(x, torch.tensor(7)), model(x, torch.tensor([7, 7])))


def test_dropout_is_active_in_train_mode_only():
    model = UNet(base_channels=8, dropout=0.5)
    x, t = _inputs()
    with torch.no_grad():
        assert not torch.equal(model.train()(x, t), model(x, t))
        assert torch.equal(model.eval()(x, t), model(x, t))


def test_image_size_must_fit_the_levels():
    with pytest.raises(ValueError, match="image_size .* got 10"):
        UNet(base_channels=8, image_size=10, channel_mults=(1, 2, 2))


# ---------------------------------------------------------------------------------- bands and sizes


@pytest.mark.parametrize("size_factor", [0.1, 0.2, 0.3, 0.5, 0.75, 1.0])
def test_parameter_ratio_within_25_percent(size_factor):
    info = UNet(size_factor, **SMOKE).describe()
    assert info["parameter_ratio"] == pytest.approx(size_factor, rel=0.25)


@pytest.mark.parametrize(
    "size_factor, band",
    [(0.01, "tiny"), (0.099, "tiny"), (0.1, "small"), (0.29, "small"), (0.3, "medium"), (0.69, "medium"),
     (0.7, "full"), (1.0, "full")],
)  # fmt: skip
def test_bands(size_factor, band):
    assert band_of(size_factor).name == band
    assert UNet(size_factor, **SMOKE).describe()["band"] == band


def test_tiny_band_has_one_fewer_level():
    teacher, tiny = UNet(1.0, **SMOKE).describe(), UNet(0.05, **SMOKE).describe()
    assert teacher["levels"] == 2 and tiny["levels"] == 1
    assert all(UNet(s, **SMOKE).describe()["levels"] == 2 for s in (0.1, 0.5, 0.8))


def test_tiny_band_is_as_close_as_the_architecture_allows():
    """Below the smallest model (every width 4) the search cannot go: a very small s gets that model."""
    info = UNet(0.001, **SMOKE).describe()
    assert info["widths"] == [4]
    assert info["parameter_ratio"] > 0.001


def test_describe_fields():
    model = UNet(0.5, **SMOKE)
    info = model.describe()
    assert set(info) >= {"band", "size_factor", "widths", "levels", "attention_resolutions", "parameters",
                         "teacher_parameters", "parameter_ratio"}  # fmt: skip
    assert info["size_factor"] == 0.5 and info["band"] == "medium"
    assert info["levels"] == len(info["widths"]) == 2
    assert all(w % 4 == 0 for w in info["widths"])
    assert info["parameters"] == count_parameters(model)
    assert info["teacher_parameters"] == count_parameters(UNet(1.0, **SMOKE))
    assert info["parameter_ratio"] == info["parameters"] / info["teacher_parameters"]
    assert info["attention_resolutions"] == [8]


def test_teacher_is_the_unscaled_config():
    info = UNet(1.0, **SMOKE).describe()
    assert info["widths"] == info["teacher_widths"] == [32, 64]
    assert info["parameter_ratio"] == 1.0


def test_parameter_count_is_exact():
    widths, kwargs = (8, 16), {"num_classes": 3, "attention_resolutions": (8,)}
    with torch.random.fork_rng(devices=[]):
        state = torch.get_rng_state()
        count = parameter_count(widths, **kwargs)
        assert torch.equal(torch.get_rng_state(), state)  # meta-device construction draws no random numbers
    assert count == count_parameters(UNet(base_channels=8, channel_mults=(1, 2), **kwargs))


@pytest.mark.parametrize("value", [1.5, 0.0, -0.1, float("nan"), 2])
def test_bad_size_factor_message(value):
    with pytest.raises(ValueError) as info:
        UNet(value)
    assert str(info.value) == f"size_factor must be in (0, 1], got {value}"


def test_bad_size_factor_exact_message():
    with pytest.raises(ValueError, match=r"^size_factor must be in \(0, 1\], got 1.5$"):
        UNet(1.5)


def test_paper_teacher_constructs_and_runs_on_the_meta_device():
    with torch.device("meta"):
        model = UNet(1.0, **PAPER)
        out = model(torch.empty(2, 3, 32, 32), torch.zeros(2, dtype=torch.long))
    info = model.describe()
    assert info["widths"] == [128, 256, 256, 256] and info["levels"] == 4
    assert info["attention_resolutions"] == [16]
    assert out.shape == (2, 3, 32, 32)
    assert all(m.p == 0.3 for m in model.modules() if isinstance(m, torch.nn.Dropout))
    # 3 res blocks per level in the encoder, 4 in the decoder
    assert len([m for m in model.down if hasattr(m, "res")]) == 12 and len(model.up) == 16 + 3


def test_paper_students_match_their_size():
    for s in (0.1, 0.5):
        with torch.device("meta"):
            info = UNet(s, **PAPER).describe()
        assert info["parameter_ratio"] == pytest.approx(s, rel=0.1)


# ----------------------------------------------------------------------------------- width search


@given(target=st.floats(1.0, 1e6), power=st.integers(1, 3))
def test_fit_width_multiplier_hits_a_continuous_count(target, power):
    scale = 1e6 / 2.0**power  # count(m) = scale m^power reaches 1e6 at the upper end m = 2
    m = fit_width_multiplier(lambda m: scale * m**power, target, low=1e-3, high=2.0)
    expected = min(max((target / scale) ** (1 / power), 1e-3), 2.0)
    assert m == pytest.approx(expected, rel=1e-6)


def test_fit_width_multiplier_picks_the_closer_step():
    def count(m: float) -> int:
        return 100 * math.floor(10 * m) + 100  # steps of 100 at every 0.1

    # target 570 lies between counts 500 (m in [0.4, 0.5)) and 600 (m in [0.5, 0.6)): 600 is closer in log ratio
    assert count(fit_width_multiplier(count, 570, low=0.0, high=1.0)) == 600
    assert count(fit_width_multiplier(count, 530, low=0.0, high=1.0)) == 500
    assert fit_width_multiplier(count, 1, low=0.0, high=1.0) == 0.0  # below the range: the smallest model
    assert fit_width_multiplier(count, 1e9, low=0.0, high=1.0) == 1.0


def test_scaled_widths_are_multiples_of_the_step():
    assert scaled_widths([32, 64], 0.5) == (16, 32)
    assert scaled_widths([32, 64], 0.01) == (4, 4)
    assert scaled_widths([32, 64], 0.3, step=8) == (8, 16)


def test_bands_cover_the_unit_interval():
    assert BANDS[0].low == 0 and BANDS[-1].high == 1
    assert all(a.high == b.low for a, b in zip(BANDS, BANDS[1:], strict=False))


# ------------------------------------------------------------------------------ seeding and training


def test_same_seed_gives_equal_weights():
    config = ModelConfig.of("unet", size_factor=0.5, **SMOKE)
    a, b = config.build(seed=0), config.build(seed=0)
    assert _same(a, b)
    assert not _same(a, config.build(seed=1))


def test_two_step_training_smoke_on_digits():
    full = load_dataset(DataConfig("digits"), "train")
    subset = Dataset("digits", "train", full.x[:16].clone(), full.y[:16].clone(), full.num_classes)
    model = ModelConfig.of("unet", size_factor=0.3, **SMOKE).build(seed=0)
    config = TrainConfig(epochs=1, batch_size=8, lr=1e-3, label_dropout=0.2, checkpoint_every=1)
    result = train(model, NoiseSchedule.linear(1000), subset, config, progress=False)
    (row,) = result.history
    assert row["steps"] == 2.0
    assert math.isfinite(row["loss"]) and row["loss"] > 0
    assert math.isfinite(row["grad_norm"])

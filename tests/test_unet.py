"""The UNet: the eps(x, t, y) interface, the null label, size-factor bands and parameter matching, seeding."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch.utils.flop_counter import FlopCounterMode

from diffbench.data import DataConfig, Dataset, load_dataset
from diffbench.models import MODELS, ModelConfig, UNet, count_parameters
from diffbench.models.unet import (
    BANDS,
    DDPMUNet,
    _meta_counts,
    band_of,
    band_widths,
    fit_student,
    fit_width_multiplier,
    flops_per_image,
    largest_multiplier,
    parameter_count,
    scaled_widths,
)
from diffbench.profiles import PROFILES
from diffbench.schedules import NoiseSchedule
from diffbench.training import TrainConfig, train

CHANNELS = {"smoke": 1, "standard": 1, "paper": 3}  # digits, MNIST, CIFAR-10: the profiles' datasets


def teacher_config(profile: str) -> dict:
    """``UNet`` keyword arguments of a profile's teacher, as the size_factors benchmark builds it (10 classes)."""
    scale = PROFILES[profile].size_factors
    arch = scale.teacher
    return {
        "in_channels": CHANNELS[profile],
        "image_size": scale.image_size,
        "base_channels": arch.base_channels,
        "channel_mults": arch.channel_mults,
        "num_res_blocks": arch.num_res_blocks,
        "attention_resolutions": arch.attention_resolutions,
        "dropout": arch.dropout,
        "num_classes": 10,
    }


SMOKE, PAPER = teacher_config("smoke"), teacher_config("paper")
SMALL = {"base_channels": 8, "num_classes": 3}  # fast enough for many forward passes
# The profiles' teachers and two about as narrow as the width step, where the bands' smallest models collide.
NARROW = {"in_channels": 1, "image_size": 16, "num_res_blocks": 1, "attention_resolutions": (8,), "dropout": 0.0}
TEACHERS = {p: teacher_config(p) for p in PROFILES} | {
    "base8": {**NARROW, "base_channels": 8, "channel_mults": (1, 2), "num_classes": 3},
    "base12_3heads": {**NARROW, "base_channels": 12, "channel_mults": (1, 2, 2), "num_heads": 3},
}
# A fine grid of (0, 1]: every hundredth, the band edges and their neighbours.
GRID = sorted({i / 100 for i in range(1, 101)} | {0.05, 0.099, 0.101, 0.299, 0.301, 0.69, 0.699, 0.701})


def student(teacher: str, size_factor: float) -> tuple[tuple[int, ...], int, int]:
    """``(widths, parameters, flops_per_image)`` of a student of ``TEACHERS[teacher]``, from counts alone."""
    config = {"num_heads": 1, **TEACHERS[teacher]}
    base, mults = config.pop("base_channels"), config.pop("channel_mults")
    widths, _ = fit_student(size_factor, tuple(base * m for m in mults), **config)
    return widths, parameter_count(widths, **config), flops_per_image(widths, **config)


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


@pytest.mark.parametrize("profile", list(PROFILES))
def test_parameter_ratio_is_close_to_the_size_factor(profile):
    """Within 5% / 10% / 20% of ``s`` for ``s >= 0.1`` (paper / standard / smoke, as the docstring states)."""
    tolerance = {"paper": 0.05, "standard": 0.1, "smoke": 0.2}[profile]
    _, teacher, _ = student(profile, 1.0)
    for s in (s for s in GRID if s >= 0.1):
        assert student(profile, s)[1] / teacher == pytest.approx(s, rel=tolerance), s


@pytest.mark.parametrize("teacher", list(TEACHERS))
def test_parameters_and_flops_are_monotone_in_the_size_factor(teacher):
    rows = [(s, *student(teacher, s)[1:]) for s in GRID]
    for (s, pa, fa), (t, pb, fb) in itertools.pairwise(rows):
        assert pa <= pb and fa <= fb, f"s = {s}: params {pa}, flops {fa}; s = {t}: params {pb}, flops {fb}"


@pytest.mark.parametrize("profile", list(PROFILES))
def test_band_edges_change_the_model_and_both_counts(profile):
    """Across every band edge the architecture changes and both counts strictly grow; within each band a larger
    ``s`` buys a larger model (the band's first and last students differ)."""
    for below, edge in ((0.099, 0.1), (0.299, 0.3), (0.69, 0.7), (0.699, 0.7)):
        (wa, pa, fa), (wb, pb, fb) = student(profile, below), student(profile, edge)
        assert band_of(below) != band_of(edge) and wa != wb
        assert pa < pb and fa < fb, f"{below} -> {edge}: params {pa} -> {pb}, flops {fa} -> {fb}"
    for band in BANDS:
        inside = [s for s in GRID if band_of(s) == band]
        assert student(profile, inside[0])[1] < student(profile, inside[-1])[1], band.name


def test_a_band_too_narrow_for_its_architecture_takes_the_next_bands_first_student():
    """Base 8: one level of width 4 (middle attention over 16x16 positions) costs more FLOPs than the small band's
    two levels of width 4, so the tiny students are that small student: cost order wins over the band."""
    assert student("base8", 0.05) == student("base8", 0.1)
    assert len(student("smoke", 0.05)[0]) == 1  # a teacher wide enough keeps the tiny architecture


@pytest.mark.parametrize("profile", list(PROFILES))
def test_bands_are_the_seeds_architectures(profile):
    config = TEACHERS[profile]
    teacher = [config["base_channels"] * m for m in config["channel_mults"]]
    for s in GRID:
        widths, band = student(profile, s)[0], band_of(s).name
        assert all(w % 4 == 0 for w in widths)
        assert len(widths) == len(teacher) - (band == "tiny")
        if band == "medium":  # 75% of the teacher's first width, rounded down to a multiple of 4; never re-fitted
            assert widths[0] == 4 * math.floor(0.75 * teacher[0] / 4)
        if band in ("small", "full"):  # the teacher's profile, scaled: widths keep the teacher's order
            assert all((a < b) == (c < d) for a, b, c, d in zip(widths, widths[1:], teacher, teacher[1:], strict=False))
    assert list(student(profile, 1.0)[0]) == teacher


@pytest.mark.parametrize("profile", list(PROFILES))
def test_tiny_students_cost_no_more_than_the_smallest_small_student(profile):
    _, params, flops = student(profile, 0.1)
    for s in (s for s in GRID if s < 0.1):
        _, p, f = student(profile, s)
        assert p <= params and f <= flops, s


def test_smoke_student_at_s_005_is_tiny_and_smaller_than_at_s_01():
    tiny, small = UNet(0.05, **SMOKE).describe(), UNet(0.1, **SMOKE).describe()
    assert tiny["band"] == "tiny" and tiny["levels"] == small["levels"] - 1
    assert 0 < tiny["parameter_ratio"] < small["parameter_ratio"]
    assert tiny["flops_per_image"] < small["flops_per_image"]


def test_s_069_and_s_07_are_different_models():
    medium, full = UNet(0.69, **SMOKE).describe(), UNet(0.7, **SMOKE).describe()
    assert (medium["band"], full["band"]) == ("medium", "full")
    assert medium["widths"] != full["widths"]
    assert medium["parameters"] < full["parameters"] and medium["flops_per_image"] < full["flops_per_image"]


@pytest.mark.parametrize(
    "size_factor, band",
    [(0.01, "tiny"), (0.05, "tiny"), (0.099, "tiny"), (0.1, "small"), (0.29, "small"), (0.3, "medium"),
     (0.69, "medium"), (0.7, "full"), (1.0, "full")],
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


def test_band_widths():
    tiny, small, medium, _ = BANDS
    assert band_widths(tiny, (32, 64, 64), 0.5) == (16, 32)
    assert band_widths(tiny, (32,), 0.5) == (16,)  # a single level is never dropped
    assert band_widths(small, (32, 64, 64), 0.5) == (16, 32, 32)
    assert band_widths(medium, (24, 48), 0.5) == (16, 24)  # 0.75 * 24 = 18, rounded down to 16
    assert band_widths(medium, (128, 256), 0.1) == (96, 24)  # the multiplier scales the deeper levels only
    assert band_widths(medium, (64, 128), 0.5, step=8) == (48, 64)


def test_describe_fields():
    model = UNet(0.5, **SMOKE)
    info = model.describe()
    assert set(info) >= {"band", "size_factor", "widths", "levels", "attention_resolutions", "parameters",
                         "teacher_parameters", "parameter_ratio", "flops_per_image", "teacher_flops_per_image",
                         "flop_ratio"}  # fmt: skip
    assert info["size_factor"] == 0.5 and info["band"] == "medium"
    assert info["levels"] == len(info["widths"]) == 2
    assert all(w % 4 == 0 for w in info["widths"])
    assert info["parameters"] == count_parameters(model)
    teacher = UNet(1.0, **SMOKE)
    assert info["teacher_parameters"] == count_parameters(teacher)
    assert info["parameter_ratio"] == info["parameters"] / info["teacher_parameters"]
    assert info["teacher_flops_per_image"] == teacher.describe()["flops_per_image"]
    assert info["flop_ratio"] == info["flops_per_image"] / info["teacher_flops_per_image"]
    assert info["attention_resolutions"] == [8]


@pytest.mark.parametrize("profile", list(PROFILES))
def test_teacher_is_the_unscaled_config(profile):
    config = teacher_config(profile)
    with torch.device("meta"):
        info = UNet(1.0, **config).describe()
    assert info["widths"] == info["teacher_widths"] == [config["base_channels"] * m for m in config["channel_mults"]]
    assert info["parameter_ratio"] == 1.0 and info["flop_ratio"] == 1.0


@pytest.mark.parametrize("size_factor", [0.05, 0.2, 0.5, 0.8])
def test_unet_builds_the_fitted_student(size_factor):
    with torch.device("meta"):
        info = UNet(size_factor, **PAPER).describe()
    widths, params, flops = student("paper", size_factor)
    assert info["widths"] == list(widths)
    assert info["parameters"] == params
    assert info["flops_per_image"] == flops


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


# ------------------------------------------------------------------------------------------------ FLOPs


@pytest.mark.parametrize(
    "widths, kwargs",
    [
        ((8, 16), {"image_size": 16, "num_res_blocks": 2, "attention_resolutions": (16, 8), "num_classes": 3,
                   "num_heads": 2, "in_channels": 3}),
        ((8,), {"image_size": 8, "attention_resolutions": ()}),
        ((4, 8, 12), {"image_size": 28, "attention_resolutions": (14,), "dropout": 0.1}),  # odd lowest level: 7x7
    ],
)  # fmt: skip
def test_flops_per_image_matches_the_flop_counter(widths, kwargs):
    """Brute force: ``FlopCounterMode`` counts 2 x MACs of every conv, linear and attention matmul it runs."""
    model = DDPMUNet(widths, **kwargs).eval()
    size, channels = kwargs["image_size"], kwargs.get("in_channels", 1)
    x, t = torch.randn(3, channels, size, size), torch.tensor([1, 2, 3])
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x, t)
    assert flops_per_image(widths, **kwargs) == counter.get_total_flops() / 3 == 2 * model.macs_per_image()


def test_smoke_students_flops_match_the_flop_counter():
    for s in (0.05, 0.5):
        model = UNet(s, **SMOKE).eval()
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(*_inputs(2), torch.tensor([0, 1]))
        assert model.describe()["flops_per_image"] == counter.get_total_flops() / 2


def test_fitting_the_paper_students_builds_few_meta_models():
    """The search runs on cached counts of meta-device models; the tiny student of the paper teacher (which caps
    at the small, medium and full bands' first students) needs a few dozen, not one per bisection step."""
    config = dict(teacher_config("paper"), num_heads=1, in_channels=5)  # a teacher no other test has counted
    base, mults = config.pop("base_channels"), config.pop("channel_mults")
    teacher = tuple(base * m for m in mults)
    before = _meta_counts.cache_info().misses
    fit_student(0.05, teacher, **config)
    assert _meta_counts.cache_info().misses - before <= 60


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


@given(threshold=st.floats(0.0, 1.0), low=st.floats(0.0, 0.5), high=st.floats(0.5, 1.0))
def test_largest_multiplier_finds_the_threshold(threshold, low, high):
    m = largest_multiplier(lambda m: m <= threshold, low, high)
    expected = min(max(threshold, low), high)  # below the range: ``low``; above it: ``high``
    assert m == pytest.approx(expected, abs=1e-9)
    assert m <= threshold or m == low


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


@pytest.mark.parametrize("size_factor", [0.05, 0.2, 0.5, 1.0])
def test_every_smoke_student_hears_the_timestep_and_the_label(size_factor):
    """The time and label embedding enter every ResBlock as a per-channel bias; a GroupNorm with one channel per
    group (instance norm) would subtract it again. At initialisation, changing t or y must change the output."""
    from diffbench.profiles import PROFILES

    arch = PROFILES["smoke"].size_factors.teacher
    torch.manual_seed(0)
    model = UNet(
        size_factor,
        base_channels=arch.base_channels,
        channel_mults=arch.channel_mults,
        num_res_blocks=arch.num_res_blocks,
        attention_resolutions=arch.attention_resolutions,
        num_classes=10,
    ).eval()
    x = torch.randn(4, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    t, y = torch.full((4,), 500), torch.arange(4)
    with torch.no_grad():
        base = model(x, t, y=y)
        assert (model(x, torch.full((4,), 50), y=y) - base).abs().max() > 1e-3, model.widths
        assert (model(x, t, y=torch.full((4,), 10)) - base).abs().max() > 1e-3, model.widths


@pytest.mark.parametrize("channels, groups", [(8, 4), (16, 8), (32, 16), (24, 8), (48, 16), (12, 4), (4, 2), (3, 1)])
def test_norm_groups_never_leave_a_channel_alone(channels, groups):
    from diffbench.models.unet import norm_groups

    assert norm_groups(channels) == groups and channels % groups == 0

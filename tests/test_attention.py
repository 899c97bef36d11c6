"""Attention maps: captured by hooks without touching the model, the very weights each layer applied, and their
entropy and divergences."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from diffbench.attention import (
    ROW_SUM_ATOL,
    attention_divergence,
    attention_entropy,
    attention_layers,
    attention_weights,
    capture_attention,
    row_entropy,
)
from diffbench.metrics import registry
from diffbench.models import ModelConfig
from diffbench.models.unet import SelfAttention
from diffbench.sampling import ddim_sample, uniform_timesteps
from diffbench.schedules import NoiseSchedule

IMAGE = 8  # attention at 8x8 (64 positions) in the outer level, and in the middle at 4x4 (16 positions)


def small_unet(num_heads: int, **kwargs: object) -> nn.Module:
    config = dict(widths=(16, 32), image_size=IMAGE, attention_resolutions=(IMAGE,), num_heads=num_heads)
    return ModelConfig.of("ddpm_unet", **(config | kwargs)).build(seed=0).eval()


def inputs(batch: int = 3, seed: int = 0) -> tuple[Tensor, Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 1, IMAGE, IMAGE, generator=gen), torch.randint(1000, (batch,), generator=gen)


def hook_counts(model: nn.Module) -> dict[str, int]:
    return {name: len(m._forward_hooks) for name, m in model.named_modules()}


@pytest.fixture(scope="module", params=[1, 2], ids=["1head", "2heads"])
def unet(request: pytest.FixtureRequest) -> nn.Module:
    return small_unet(request.param)


def test_every_layer_is_captured_and_its_rows_are_distributions(unet: nn.Module):
    x, t = inputs()
    layers = attention_layers(unet)
    assert "mid_attn" in layers and len(layers) >= 3, "the model has attention in its levels and its middle"
    with capture_attention(unet) as capture:
        unet(x, t)
    assert set(capture.maps) == set(layers) and capture.layers == tuple(layers)
    assert capture.calls == dict.fromkeys(layers, 1)
    heads = unet.mid_attn.num_heads
    for name, maps in capture.maps.items():
        hw = 16 if name == "mid_attn" else IMAGE * IMAGE
        assert maps.shape == (3, heads, hw, hw), name
        assert not maps.requires_grad and maps.dtype == torch.float32
        assert bool((maps >= 0).all())
        torch.testing.assert_close(maps.sum(-1), torch.ones(3, heads, hw), atol=1e-5, rtol=0)


def test_hooks_leave_the_output_and_the_model_bit_identical(unet: nn.Module):
    x, t = inputs()
    state = {k: v.clone() for k, v in unet.state_dict().items()}
    before = unet(x, t)
    with capture_attention(unet, history=True):
        during = unet(x, t)
    after = unet(x, t)
    assert torch.equal(before, during) and torch.equal(before, after)
    assert all(torch.equal(v, unet.state_dict()[k]) for k, v in state.items())
    assert not unet.training


def test_the_maps_times_v_reproduce_each_layers_attention_output(unet: nn.Module):
    """``A v`` from the captured ``A`` equals what ``scaled_dot_product_attention`` fed to ``proj``: the maps are
    the weights the layers used. A map with the wrong temperature does not, so the check can fail."""
    x, t = inputs()
    layers = attention_layers(unet)
    seen_x: dict[str, Tensor] = {}
    seen_out: dict[str, Tensor] = {}
    handles = []
    for name, module in layers.items():
        handles.append(module.register_forward_pre_hook(lambda m, args, n=name: seen_x.__setitem__(n, args[0])))
        handles.append(module.proj.register_forward_hook(lambda m, args, out, n=name: seen_out.__setitem__(n, args[0])))
    try:
        with torch.no_grad(), capture_attention(unet) as capture:
            unet(x, t)
    finally:
        for handle in handles:
            handle.remove()
    for name, module in layers.items():
        b, c, h, w = seen_x[name].shape
        heads = module.num_heads
        with torch.no_grad():
            qkv = module.qkv(module.norm(seen_x[name])).reshape(b, 3, heads, c // heads, h * w).transpose(-1, -2)
        q, k, v = qkv.unbind(1)
        out = (capture.maps[name] @ v).transpose(-1, -2).reshape(b, c, h, w)
        torch.testing.assert_close(out, seen_out[name], atol=1e-5, rtol=1e-5)
        hot = (q @ k.transpose(-1, -2)).softmax(-1)  # missing the 1/sqrt(d_head) scale
        assert (hot @ v).transpose(-1, -2).reshape(b, c, h, w).sub(seen_out[name]).abs().max() > 1e-3


def test_keep_queries_to_cpu_and_history_select_what_is_stored():
    unet = small_unet(2)
    x, t = inputs()
    with capture_attention(unet) as full:
        unet(x, t)
    rows = [0, 5, 63]
    with capture_attention(unet, keep=["down.0.attn"], queries=rows, to_cpu=True, history=True) as part:
        unet(x, t)
        unet(x[:2], t[:2])
    assert set(part.maps) == {"down.0.attn"} and part.calls == {"down.0.attn": 2}
    assert [tuple(m.shape) for m in part.history["down.0.attn"]] == [(3, 2, 3, 64), (2, 2, 3, 64)]
    assert part.maps["down.0.attn"] is part.history["down.0.attn"][-1]
    # the same rows; a matmul over 3 query rows may round differently from one over 64
    torch.testing.assert_close(part.history["down.0.attn"][0], full.maps["down.0.attn"][:, :, rows], atol=1e-7, rtol=0)
    assert part.maps["down.0.attn"].device.type == "cpu"
    assert full.history == {}


def test_history_over_a_sampler_run_has_one_map_per_step():
    unet = small_unet(1)
    grid = uniform_timesteps(1000, 3)
    x_T = torch.randn(2, 1, IMAGE, IMAGE, generator=torch.Generator().manual_seed(1))
    with capture_attention(unet, keep={"mid_attn"}, history=True) as capture:
        ddim_sample(unet, x_T, grid, NoiseSchedule.linear(1000))
    assert torch.stack(capture.history["mid_attn"]).shape == (3, 2, 1, 16, 16)


def test_hooks_are_removed_on_exit_and_on_an_exception():
    unet = small_unet(1)
    unet.mid_attn.register_forward_hook(lambda m, args, out: None)  # a hook of someone else's survives
    before = hook_counts(unet)
    with capture_attention(unet):
        assert sum(hook_counts(unet).values()) == sum(before.values()) + len(attention_layers(unet))
    assert hook_counts(unet) == before
    with pytest.raises(RuntimeError, match="boom"), capture_attention(unet):
        raise RuntimeError("boom")
    assert hook_counts(unet) == before
    x, t = inputs()
    with pytest.raises(ValueError, match="queries must index the 16 positions"), capture_attention(unet, queries=[40]):
        unet(x, t)  # 40 < 64 fits the outer layers, not the 4x4 middle
    assert hook_counts(unet) == before


def test_attention_weights_of_a_bare_layer_match_sdpa():
    torch.manual_seed(0)
    layer = SelfAttention(8, 2)
    x = torch.randn(2, 8, 3, 5, dtype=torch.float64)
    layer = layer.double()
    with capture_attention(layer) as capture:
        layer(x)
    assert set(capture.maps) == {""}
    weights = attention_weights(layer, x)
    assert torch.equal(capture.maps[""], weights) and weights.dtype == torch.float64
    q, k, v = layer.qkv(layer.norm(x)).reshape(2, 3, 2, 4, 15).transpose(-1, -2).unbind(1)
    torch.testing.assert_close(weights @ v, F.scaled_dot_product_attention(q, k, v))


# --------------------------------------------------------------------------------------------- entropy


@pytest.mark.parametrize("n", [1, 2, 3, 16, 64, 100, 256])
def test_entropy_of_a_uniform_map_is_log_n(n: int):
    uniform = torch.full((2, 3, 5, n), 1 / n, dtype=torch.float64)
    assert attention_entropy(uniform) == pytest.approx(math.log(n), rel=1e-14, abs=1e-15)


def test_entropy_of_a_one_hot_map_is_zero_and_keep_gives_per_axis_means():
    one_hot = F.one_hot(torch.arange(12) % 7, 7).double().reshape(2, 2, 3, 7)
    assert attention_entropy(one_hot) == 0.0
    maps = torch.cat([one_hot[:, :1], torch.full((2, 1, 3, 7), 1 / 7, dtype=torch.float64)], dim=1)  # head 1 uniform
    per_head = attention_entropy(maps, keep=1)
    torch.testing.assert_close(per_head, torch.tensor([0.0, math.log(7)], dtype=torch.float64))
    assert attention_entropy(maps, keep=(0, 2)).shape == (2, 3)
    assert attention_entropy(maps, keep=(0, 1, 2)).shape == (2, 2, 3)
    torch.testing.assert_close(attention_entropy(maps, keep=-2), row_entropy(maps).mean((0, 1)))  # -2: queries
    torch.testing.assert_close(attention_entropy(maps, keep=-3), per_head)
    assert attention_entropy(maps) == pytest.approx(math.log(7) / 2)


def test_entropy_of_captured_maps_lies_between_zero_and_log_hw():
    unet = small_unet(2)
    with capture_attention(unet, keep=["mid_attn"]) as capture:
        unet(*inputs())
    assert 0 < attention_entropy(capture.maps["mid_attn"]) <= math.log(16)


# ----------------------------------------------------------------------------------------- divergences


def random_maps(seed: int, shape: tuple[int, ...] = (2, 2, 6, 9), temperature: float = 1.0) -> Tensor:
    logits = torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return (logits / temperature).softmax(-1)


def test_js_is_zero_on_equal_maps_symmetric_and_bounded_by_log_2():
    p, q = random_maps(0), random_maps(1, temperature=0.1)
    assert attention_divergence(p, p) == 0.0
    assert attention_divergence(p, q) == attention_divergence(q, p) > 0
    torch.testing.assert_close(attention_divergence(p, q, keep=(0, 1, 2)), attention_divergence(q, p, keep=(0, 1, 2)))
    disjoint_p = torch.tensor([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0]], dtype=torch.float64)
    disjoint_q = torch.tensor([[0.0, 0.5, 0.5], [0.0, 0.0, 1.0]], dtype=torch.float64)
    assert attention_divergence(disjoint_p, disjoint_q) == pytest.approx(math.log(2), rel=1e-15)
    for seed in range(20):
        a, b = random_maps(seed, temperature=0.05), random_maps(seed + 100, temperature=0.05)
        assert 0 <= attention_divergence(a, b) <= math.log(2)


def test_kl_is_zero_on_equal_maps_asymmetric_and_finite_with_zeros():
    p, q = random_maps(0), random_maps(1, temperature=0.3)
    assert attention_divergence(p, p, kind="kl") == 0.0
    assert attention_divergence(p, q, kind="kl") != pytest.approx(attention_divergence(q, p, kind="kl"))
    one_hot = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    other = torch.tensor([[0.0, 1.0]], dtype=torch.float64)
    assert attention_divergence(one_hot, other, kind="kl", eps=1e-12) == pytest.approx(-math.log(1e-12))
    # KL(p || m) <= log 2 and JS is its symmetrised average: the default never exceeds KL's bound
    assert attention_divergence(one_hot, other) == pytest.approx(math.log(2))


def test_float32_captured_maps_are_accepted():
    unet = small_unet(1)
    with capture_attention(unet, keep=["mid_attn"]) as a:
        unet(*inputs(seed=0))
    with capture_attention(unet, keep=["mid_attn"]) as b:
        unet(*inputs(seed=1))
    assert 0 < attention_divergence(a.maps["mid_attn"], b.maps["mid_attn"]) < math.log(2)


# ------------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("maps", "match"),
    [
        (torch.ones(4), r"\[\.\.\., Q, K\]"),
        (torch.ones(2, 0), r"\[\.\.\., Q, K\]"),
        (torch.tensor([[0.5, float("nan")]]), "NaN"),
        (torch.tensor([[1.5, -0.5]]), "non-negative.*-0.5"),
        (torch.tensor([[0.5, 0.4]]), "sum to 1.*0.9"),
        ([[1.0]], "must be a tensor"),
    ],
)
def test_bad_maps_are_refused(maps: object, match: str):
    with pytest.raises(ValueError, match=match):
        attention_entropy(maps)
    with pytest.raises(ValueError, match=match):
        attention_divergence(maps, maps)


def test_bad_arguments_are_refused():
    p = random_maps(0)
    with pytest.raises(ValueError, match="same shape"):
        attention_divergence(p, p[:, :1])
    with pytest.raises(ValueError, match="kind must be one of.*'tv'"):
        attention_divergence(p, p, kind="tv")
    with pytest.raises(ValueError, match="eps must be in"):
        attention_divergence(p, p, kind="kl", eps=0.0)
    for axis in (3, -1, 4, -5):
        with pytest.raises(ValueError, match=f"keep must be axes.*got {axis}"):
            attention_entropy(p, keep=axis)
    slack = ROW_SUM_ATOL / 2
    assert attention_entropy(torch.tensor([[0.5 + slack, 0.5]], dtype=torch.float64)) > 0  # float32 rounding passes
    with pytest.raises(ValueError, match="sum to 1"):
        attention_entropy(torch.tensor([[0.5 + 3 * slack, 0.5]], dtype=torch.float64))
    unet = small_unet(1)
    with pytest.raises(ValueError, match="no SelfAttention layers"), capture_attention(nn.Linear(2, 2)):
        pass
    with pytest.raises(ValueError, match=r"unknown attention layers \['mid'\]"), capture_attention(unet, keep=["mid"]):
        pass
    with pytest.raises(ValueError, match="collection of layer names"), capture_attention(unet, keep="mid_attn"):
        pass
    with pytest.raises(ValueError, match="integer position indices"), capture_attention(unet, queries=[0.5]):
        pass
    with pytest.raises(ValueError, match="at least one position"), capture_attention(unet, queries=[]):
        pass
    assert sum(hook_counts(unet).values()) == 0


def test_the_metrics_are_declared():
    assert registry.get("attention_entropy").direction == registry.NEITHER
    assert registry.get("attention_js_to_teacher").direction == registry.LOWER
    assert {registry.get(n).kind for n in ("attention_entropy", "attention_js_to_teacher")} == {registry.QUALITY}

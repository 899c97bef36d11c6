"""The size_factors family's analyses of issue 15 on untrained models and a tiny profile (no training): attention
on the teacher's x_t, x0 along the path, joint embeddings, precision/recall at equal n, verify-determinism."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from diffbench.families import size_factors as family
from diffbench.profiles import get_profile

SMOKE = get_profile("smoke")
TINY = replace(
    SMOKE,
    size_factors=replace(
        SMOKE.size_factors,
        sizes=(0.05, 0.5, 1.0),
        sampling_steps=4,
        trajectory_samples=3,
        eval_samples=12,
        analysis_steps=(0, 2),
        attention_samples=2,
        attention_queries=((0.5, 0.5), (0.0, 0.75)),
        strip_samples=1,
        embedding_samples=2,
        embedding_steps=3,
        latent_samples=6,
        determinism_samples=3,
        determinism_steps=2,
    ),
)
OPTIONS = {"size_factors": None, "size_range": None}
CPU = torch.device("cpu")


@pytest.fixture
def untrained(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every model is its spec's seeded, untrained network (no training, no cache); quality samples are seeded
    noise with labels i mod 10; domain features are the first 16 pixels."""

    def model(spec, cache, device):
        return spec.model.build(seed=0).to(device).eval()

    def samples(model_id, profile, device, cache, data_root=None):
        n = profile.size_factors.eval_samples
        x = torch.rand((n, 1, 16, 16), generator=torch.Generator().manual_seed(len(model_id))) * 2 - 1
        return x, torch.arange(n) % 10

    monkeypatch.setattr(family, "final_model", model)
    monkeypatch.setattr(family, "quality_samples", samples)
    monkeypatch.setattr(family, "domain_features", lambda data, cache, device, seed: lambda x: x.flatten(1)[:, :16])


# --- pure functions ---------------------------------------------------------------------------------------


def test_a_query_means_the_same_image_location_at_every_resolution():
    assert family.query_index((0.5, 0.5), 8, 8) == 4 * 8 + 4
    assert family.query_index((0.5, 0.5), 16, 16) == 8 * 16 + 8
    assert family.query_index((0.0, 0.75), 8, 8) == 6
    with pytest.raises(ValueError, match=r"fractions in \[0, 1\)"):
        family.query_index((1.0, 0.5), 8, 8)


def test_x0_error_is_the_mean_square_to_the_reference_per_step():
    reference = torch.zeros(2, 1, 2, 2)
    x0 = torch.stack([torch.full((2, 1, 2, 2), 2.0), torch.ones(2, 1, 2, 2), torch.zeros(2, 1, 2, 2)])
    assert family.x0_mse_by_step(x0, reference) == [4.0, 1.0, 0.0]
    with pytest.raises(ValueError, match="must match"):
        family.x0_mse_by_step(x0, torch.zeros(3, 1, 2, 2))


def test_compare_attention_known_answers_and_skip_reasons():
    uniform = torch.full((2, 1, 64, 64), 1 / 64)
    peaked = torch.eye(64).expand(2, 1, 64, 64)
    wide = torch.full((2, 1, 256, 256), 1 / 256)
    entropy, js, skipped = family.compare_attention({"a": uniform, "b": peaked}, None)
    assert entropy["a"] == pytest.approx(math.log(64)) and entropy["b"] == pytest.approx(0.0)
    assert js == {} and skipped == {}
    entropy, js, skipped = family.compare_attention(
        {"a": uniform, "b": peaked, "mid_attn": wide}, {"a": uniform, "b": uniform, "mid_attn": uniform, "c": uniform}
    )
    assert js["a"] == 0.0 and 0 < js["b"] <= math.log(2)
    assert "256 positions vs the teacher's 64" in skipped["mid_attn"]
    assert skipped["c"] == "the student has no layer of that name"


def test_evenly_spaced_indices_keep_both_ends():
    assert family.evenly_spaced(51, 4) == [0, 17, 33, 50]
    assert family.evenly_spaced(3, 10) == [0, 1, 2]


def test_analysis_steps_must_lie_on_the_sampling_grid():
    assert family.analysis_steps(TINY) == (0, 2)
    bad = replace(TINY, size_factors=replace(TINY.size_factors, analysis_steps=(0, 4)))
    with pytest.raises(ValueError, match=r"distinct step indices in \[0, 4\)"):
        family.analysis_steps(bad)
    assert all(s < p.size_factors.sampling_steps for p in (SMOKE,) for s in family.analysis_steps(p))


def test_umap_without_umap_learn_is_one_clear_reason(monkeypatch):
    monkeypatch.setattr(family.importlib.util, "find_spec", lambda name: None)
    reason = family.embedding_unavailable("umap")
    assert "umap-learn" in reason and "pip install umap-learn" in reason
    assert family.embedding_unavailable("tsne") is None
    with pytest.raises(family.EmbeddingUnavailable, match="umap-learn"):
        family.embeddings("umap", TINY, OPTIONS, CPU, None)


# --- cells on untrained models ------------------------------------------------------------------------------


def test_attention_rows_per_layer_and_timestep_with_skips(untrained):
    teacher, skipped = family.attention("teacher", TINY, CPU, None)
    layers = {"down.2.attn", "mid_attn", "up.0.attn", "up.1.attn"}
    rows = [(name, params["layer"], params["t"]) for name, _, params, _ in teacher]
    assert {(layer, t) for _, layer, t in rows} == {(layer, t) for layer in layers for t in (999, 333)}
    assert not teacher.series("attention_js_to_teacher") and not skipped
    assert all(0 < v <= math.log(64) + 1e-9 for v in teacher.series("attention_entropy"))
    (name, maps, params), *_ = teacher.arrays
    assert name == "attention_maps" and tuple(maps.shape) == (2, 2, 2, 8, 8)  # [t, sample, query, H, W]
    assert torch.allclose(maps.sum((-1, -2)), torch.ones(2, 2, 2), atol=1e-5)  # each query's row is a distribution
    assert params["timesteps"] == "999,333" and params["queries"] == "0.5,0.5;0,0.75"

    same, _ = family.attention("distill-s1", TINY, CPU, None)  # the teacher's architecture and seeded weights
    assert same.series("attention_js_to_teacher") == [0.0] * 8
    assert same.series("attention_entropy") == teacher.series("attention_entropy")

    tiny, skipped = family.attention("data-s0.05", TINY, CPU, None)  # one level: middle attention over 16x16
    assert "256 positions vs the teacher's 64" in skipped["mid_attn"]
    assert skipped["down.2.attn"] == "the student has no layer of that name"
    assert not tiny.series("attention_js_to_teacher") and tuple(tiny.arrays[0][1].shape) == (2, 2, 2, 16, 16)


def test_x0_along_the_path_for_teacher_and_student(untrained):
    teacher, _ = family.teacher_reference(TINY, CPU, None)
    errors = teacher.series("x0_mse_to_teacher")
    assert len(errors) == 4 and errors[-1] == 0.0  # the teacher's last x0 estimate is its sample
    strips = {name: array for name, array, _ in teacher.arrays}
    assert tuple(strips["x0_strip"].shape) == (2, 1, 1, 16, 16)  # [analysis steps, strip samples, C, H, W]
    student, traj, reference = family.student_trajectories("data-s0.5", TINY, CPU, None)
    assert len(student.series("x0_mse_to_teacher")) == 4 and student.series("x0_mse_to_teacher")[-1] > 0
    assert torch.equal(traj[0], reference[0])


def test_determinism_is_zero_on_cpu_and_recorded(untrained):
    result, report = family.determinism("data-s0.5", TINY, CPU, None)
    assert report.deterministic and result["determinism_same_seed_max_abs"] == 0.0
    assert result["determinism_batch_layout_max_abs"] >= 0 and report.steps == 2 and report.num_samples == 3


def test_precision_recall_against_as_many_real_images(untrained):
    data = family.model_spec(TINY, "teacher").data
    fake, real = family.manifold_features(torch.zeros(7, 1, 16, 16), data, None, CPU, seed=0)
    assert fake.shape == real.shape == (7, 16)
    images, labels = family.real_subset(family.cached_dataset(data, "test"), 7, seed=0)
    again, _ = family.real_subset(family.cached_dataset(data, "test"), 7, seed=0)
    assert torch.equal(images, again) and len(labels) == 7


@pytest.mark.parametrize("method", ["pca", "tsne"])
def test_embeddings_of_every_model_with_trustworthiness(untrained, method):
    result = family.embeddings(method, TINY, OPTIONS, CPU, None)
    models = result.params["models"].split(",")
    assert models[0] == "teacher" and len(models) == 1 + 2 * 3
    trust = {params["view"]: value for name, value, params, _ in result if name == "trustworthiness"}
    assert set(trust) == set(family.EMBEDDING_VIEWS) and all(0 <= v <= 1 for v in trust.values())
    arrays = {params["view"]: (array, params) for _, array, params in result.arrays}
    trajectories, params = arrays["trajectories"]
    assert trajectories.shape == (len(models) * 2 * 3, 5) and params["columns"] == "x,y,model,step,sample"
    assert sorted(set(trajectories[:, 3])) == [0, 2, 4]  # x_T, the middle state, the sample
    latent, params = arrays["latent"]
    assert latent.shape == ((len(models) + 1) * 6, 4) and (latent[:, 2] == -1).sum() == 6  # real images: -1
    again = family.embeddings(method, TINY, OPTIONS, CPU, None)
    assert np.array_equal(again.arrays[0][1], trajectories)  # seeded: reproducible

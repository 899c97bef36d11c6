"""The GPU fast path of the samplers (diffbench.graphs).

On a CPU: the static-buffer runner (``use_graph=False``) gives the eager loop's samples bitwise (noise from the
same per-sample generators, conditioning, recorded steps), inputs must match what was captured, the cache keys
follow the weights' storage and the call, and nothing is captured off CUDA. The CUDA tests capture real graphs
and skip with a reason where no GPU exists.
"""

from __future__ import annotations

import gc

import pytest
import torch

from diffbench import graphs
from diffbench.guidance import ClassifierFreeGuidance, ClassifierGuidance
from diffbench.models.unet import UNet
from diffbench.sampling import (
    TrajectoryRecorder,
    ddim_graph,
    ddim_graph_inputs,
    ddim_graph_key,
    ddim_plan,
    ddim_sample,
    randn,
    sample_generators,
    uniform_timesteps,
)
from diffbench.schedules import NoiseSchedule

SCHEDULE = NoiseSchedule.cosine(1000)
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA GPU")


def _model(device: str = "cpu", classes: int = 0) -> UNet:
    torch.manual_seed(0)
    return UNet(base_channels=8, image_size=8, num_classes=classes).to(device).eval()


def _captured(model, x, grid, *, eta=0.0, cond=None, record=False, prediction="eps", clip=None):
    plan = ddim_plan(grid, SCHEDULE, eta=eta, dtype=x.dtype, device=x.device)
    runner = ddim_graph(
        model, x, plan, cond=cond, clip_denoised=clip, prediction=prediction, record=record, use_graph=False
    )
    return runner, plan


def _noise(plan, shape, seed):
    generators = sample_generators(seed, shape[0])
    draws = [randn(shape, generators, "cpu") for _ in plan.noisy_steps]
    return torch.stack(draws) if draws else torch.zeros((0, *shape))


@pytest.mark.parametrize(("eta", "prediction", "clip"), [(0.0, "eps", None), (1.0, "v", 1.0), (0.5, "eps", 1.0)])
def test_the_static_runner_gives_the_eager_samples_bitwise(eta, prediction, clip):
    model, grid = _model(), uniform_timesteps(1000, 6)
    x_T = randn((5, 1, 8, 8), sample_generators(1, 5), "cpu")

    def eager(x):
        return ddim_sample(
            model, x, grid, SCHEDULE, eta=eta, generator=sample_generators(2, 5), prediction=prediction,
            clip_denoised=clip, cuda_graph=False,
        )  # fmt: skip

    runner, plan = _captured(model, x_T, grid, eta=eta, prediction=prediction, clip=clip)
    noise = _noise(plan, x_T.shape, 2)
    assert len(noise) == (len(grid) - 1 if eta else 0)  # the last step goes to abar = 1: no noise
    samples, steps = runner(ddim_graph_inputs(x_T, noise, None))
    assert torch.equal(samples, eager(x_T)) and steps == []
    # A second call with other inputs reuses the buffers and gives that input's samples.
    other = randn((5, 1, 8, 8), sample_generators(7, 5), "cpu")
    assert torch.equal(runner(ddim_graph_inputs(other, noise, None))[0], eager(other))


def test_recorded_steps_are_the_eager_loops_steps():
    model, grid = _model(), uniform_timesteps(1000, 5)
    x_T = randn((3, 1, 8, 8), torch.Generator().manual_seed(0), "cpu")
    eager = TrajectoryRecorder()
    ddim_sample(model, x_T, grid, SCHEDULE, callback=eager, cuda_graph=False)
    runner, plan = _captured(model, x_T, grid, record=True)
    captured = TrajectoryRecorder()
    _, steps = runner(ddim_graph_inputs(x_T, _noise(plan, x_T.shape, 0), None))
    for step in steps:
        captured(step)
    assert [step.t for step in steps] == grid
    assert torch.equal(captured.trajectory(), eager.trajectory())
    assert torch.equal(captured.x0_estimates(), eager.x0_estimates())


def test_inputs_must_match_what_was_captured():
    guided = ClassifierFreeGuidance(_model(classes=3), 2.0)
    grid = uniform_timesteps(1000, 4)
    x_T = randn((4, 1, 8, 8), torch.Generator().manual_seed(0), "cpu")
    labels = torch.tensor([0, 1, 2, 0])
    runner, plan = _captured(guided, x_T, grid, cond={"y": labels})
    eager = ddim_sample(guided, x_T, grid, SCHEDULE, cond={"y": labels}, cuda_graph=False)
    none = _noise(plan, x_T.shape, 0)
    assert torch.equal(runner(ddim_graph_inputs(x_T, none, {"y": labels}))[0], eager)
    with pytest.raises(ValueError, match="captured with inputs"):
        runner(ddim_graph_inputs(x_T, none, None))
    with pytest.raises(ValueError, match=r"input 'x': captured as \(4, 1, 8, 8\)"):
        runner(ddim_graph_inputs(x_T[:2], none, {"y": labels}))
    with pytest.raises(ValueError, match="input 'noise'"):
        runner(ddim_graph_inputs(x_T, x_T[None], {"y": labels}))


def test_a_real_graph_needs_cuda_inputs():
    with pytest.raises(ValueError, match="needs every input on one CUDA device"):
        graphs.CapturedCall(lambda inputs: inputs["x"] * 2, {"x": torch.zeros(2)})


def test_nothing_is_captured_off_cuda_and_requiring_it_says_why():
    model, grid = _model(), uniform_timesteps(1000, 4)
    x_T = randn((2, 1, 8, 8), torch.Generator().manual_seed(0), "cpu")
    first = ddim_sample(model, x_T, grid, SCHEDULE)
    assert torch.equal(ddim_sample(model, x_T, grid, SCHEDULE), first)  # the second call stays eager on a CPU
    assert model not in graphs._GRAPHS and model not in graphs._SEEN
    with pytest.raises(ValueError, match="cuda_graph=True: CUDA graphs need a CUDA device"):
        ddim_sample(model, x_T, grid, SCHEDULE, cuda_graph=True)


def test_the_cache_captures_a_key_the_second_time_it_is_asked_for():
    owner, built = _model(), []

    def build():
        built.append(1)
        return graphs.CapturedCall(lambda inputs: inputs["x"] + 1, {"x": torch.zeros(2)}, use_graph=False)

    assert graphs.cached(owner, "k", build, first_time_eager=True) is None and built == []
    runner = graphs.cached(owner, "k", build, first_time_eager=True)
    assert graphs.cached(owner, "k", build) is runner and built == [1]
    assert graphs.cached(owner, "other", build) is not runner and built == [1, 1]  # required: no eager first time
    del owner, runner
    gc.collect()
    assert len(graphs._GRAPHS) == 0  # the graphs went with their model


def test_the_graph_key_follows_the_weights_storage_and_the_call():
    model, grid = _model(), uniform_timesteps(1000, 4)
    x = torch.zeros(2, 1, 8, 8)
    plan = ddim_plan(grid, SCHEDULE)

    def key(**changes):
        args = {"model": model, "x": x, "plan": plan, "cond": None, "clip_denoised": None, "prediction": "eps"}
        return ddim_graph_key(**{**args, **changes})

    first = key()
    model.load_state_dict(_model().state_dict())  # copied into the same storage: the graph still reads it
    assert key() == first
    model.double().float()  # new tensors: a graph would read freed memory, so the key changes
    assert key() != first
    now = key()
    others = [
        key(x=torch.zeros(3, 1, 8, 8)),
        key(plan=ddim_plan(uniform_timesteps(1000, 5), SCHEDULE)),
        key(plan=ddim_plan(grid, SCHEDULE, eta=1.0)),
        key(cond={"y": torch.zeros(2, dtype=torch.long)}),
        key(clip_denoised=1.0),
        key(prediction="v"),
        key(record=True),
    ]
    assert len({now, *others}) == 1 + len(others)


def test_classifier_guidance_is_never_captured():
    model = _model(classes=3)
    classifier = torch.nn.Module()
    classifier.num_classes = 3
    guided = ClassifierGuidance(model, classifier, SCHEDULE, 1.0)
    cuda = torch.device("cuda")
    assert "cannot be captured" in graphs.capture_blocker(guided, cuda)
    assert graphs.capture_blocker(model, cuda) is None


# --- on a GPU ------------------------------------------------------------------------------------------------


@needs_cuda
@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_a_captured_graph_gives_the_eager_samples_to_float_tolerance(eta):
    model, grid = _model("cuda"), uniform_timesteps(1000, 50)
    x_T = randn((16, 1, 8, 8), sample_generators(0, 16), "cuda")
    kwargs = {"eta": eta}
    eager = ddim_sample(model, x_T, grid, SCHEDULE, generator=sample_generators(1, 16), cuda_graph=False, **kwargs)
    for _ in range(2):  # the capture, then a replay of the cached graph
        captured = ddim_sample(
            model, x_T, grid, SCHEDULE, generator=sample_generators(1, 16), cuda_graph=True, **kwargs
        )
        assert ((captured - eager).norm() / eager.norm()).item() < 1e-5
    assert len(graphs._GRAPHS[model]) == 1


@needs_cuda
def test_sample_i_does_not_depend_on_its_batch_under_a_graph():
    model, grid = _model("cuda"), uniform_timesteps(1000, 20)
    gens = sample_generators(3, 8)
    full = ddim_sample(model, randn((8, 1, 8, 8), gens, "cuda"), grid, SCHEDULE, eta=1.0,
                       generator=sample_generators(4, 8), cuda_graph=True)  # fmt: skip
    head = ddim_sample(model, randn((4, 1, 8, 8), sample_generators(3, 4), "cuda"), grid, SCHEDULE, eta=1.0,
                       generator=sample_generators(4, 4), cuda_graph=True)  # fmt: skip
    torch.testing.assert_close(full[:4], head, rtol=1e-5, atol=1e-6)


@needs_cuda
def test_auto_captures_on_the_second_call_and_sees_weights_loaded_in_place():
    graphs.clear()
    model, grid = _model("cuda"), uniform_timesteps(1000, 10)
    x_T = randn((4, 1, 8, 8), torch.Generator().manual_seed(0), "cuda")
    ddim_sample(model, x_T, grid, SCHEDULE)
    assert model not in graphs._GRAPHS
    ddim_sample(model, x_T, grid, SCHEDULE)
    assert len(graphs._GRAPHS[model]) == 1
    other = _model("cuda")
    with torch.no_grad():
        for p in other.parameters():
            p.mul_(1.5)
    model.load_state_dict(other.state_dict())  # in place: same storage, same graph
    expected = ddim_sample(model, x_T, grid, SCHEDULE, cuda_graph=False)
    torch.testing.assert_close(ddim_sample(model, x_T, grid, SCHEDULE), expected, rtol=1e-5, atol=1e-6)
    assert len(graphs._GRAPHS[model]) == 1


@needs_cuda
def test_guided_sampling_and_trajectories_are_captured():
    guided = ClassifierFreeGuidance(_model("cuda", classes=3), 3.0)
    grid = uniform_timesteps(1000, 10)
    x_T = randn((6, 1, 8, 8), torch.Generator().manual_seed(0), "cuda")
    cond = {"y": torch.tensor([0, 1, 2, 0, 1, 2], device="cuda")}
    eager, captured = TrajectoryRecorder(), TrajectoryRecorder()
    ddim_sample(guided, x_T, grid, SCHEDULE, cond=cond, callback=eager, cuda_graph=False)
    ddim_sample(guided, x_T, grid, SCHEDULE, cond=cond, callback=captured, cuda_graph=True)
    torch.testing.assert_close(captured.trajectory(), eager.trajectory(), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="labels must lie"):
        ddim_sample(guided, x_T, grid, SCHEDULE, cond={"y": cond["y"] + 3}, cuda_graph=True)

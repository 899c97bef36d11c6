"""How does model size change sampling trajectories, noise prediction and efficiency? (seeds 000/001)

A class-conditional UNet teacher (size 1.0) and students of size factor s, each trained either by knowledge
distillation from the teacher (``distill``) or from the data like the teacher (``data``). Every model samples
from the same initial noise (one stream per sample), so trajectories are compared point by point in the
teacher's frame. Trained models are cached artifacts: any number of workers trains each exactly once.
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch

from diffbench.data import DataConfig
from diffbench.experiments import (
    RunSpec,
    cached_dataset,
    eps_error_by_timestep,
    final_model,
    trajectories,
)
from diffbench.metrics.fid import FIDSampleSizeWarning, domain_features, fid
from diffbench.metrics.trajectory import (
    TeacherFrame,
    compare_trajectories,
    explained_variance_curve,
    normalize_for_radar,
    stepwise_cosine,
    stepwise_distance,
    stepwise_wasserstein,
    teacher_scales,
)
from diffbench.models import ModelConfig, count_parameters
from diffbench.profiles import Profile, get_profile
from diffbench.sampling import ddim_sample, sample_generators
from diffbench.schedules import ScheduleConfig
from diffbench.selection import select_size_factors
from diffbench.training import TrainConfig

pytestmark = pytest.mark.size_factors

TEACHER = "teacher"
MODES = ("data", "distill")
STEPWISE = {
    "stepwise_cosine": stepwise_cosine,
    "stepwise_distance": stepwise_distance,
    "stepwise_wasserstein": stepwise_wasserstein,
}
PCA_COMPONENTS = 3
IMAGE_CLIP = 1.0  # images live in [-1, 1]: clip the x0 estimate while sampling (as DDPM/DDIM do for images)
MAX_EXPLAINED_COMPONENTS = 10


def student_id(mode: str, size: float) -> str:
    return f"{mode}-s{size:g}"


def parse_model_id(model_id: str) -> tuple[str, float]:
    if model_id == TEACHER:
        return TEACHER, 1.0
    mode, _, size = model_id.partition("-s")
    return mode, float(size)


def model_spec(profile: Profile, model_id: str, data_root: str | None = None) -> RunSpec:
    """The teacher's or a student's full spec; a distilled student's spec contains the teacher's."""
    scale = profile.size_factors
    mode, size = parse_model_id(model_id)
    data = DataConfig(scale.dataset, image_size=scale.image_size, seed=profile.seed, root=data_root)
    num_classes = cached_dataset(data, "train").num_classes
    channels = cached_dataset(data, "train").sample_shape[0]
    arch = scale.teacher
    model = ModelConfig.of(
        "unet",
        size_factor=size,
        in_channels=channels,
        image_size=scale.image_size,
        base_channels=arch.base_channels,
        channel_mults=arch.channel_mults,
        num_res_blocks=arch.num_res_blocks,
        attention_resolutions=arch.attention_resolutions,
        dropout=arch.dropout,
        num_classes=num_classes,
    )
    train = TrainConfig(
        epochs=scale.teacher_epochs if mode == TEACHER else scale.student_epochs,
        batch_size=scale.batch_size,
        lr=scale.lr,
        betas=scale.betas,
        ema_decay=scale.ema_decay,
        label_dropout=scale.label_dropout,
        checkpoint_every=max(1, scale.teacher_epochs // 4),
        seed=profile.seed,
    )
    schedule = ScheduleConfig(scale.schedule, scale.diffusion_steps)
    teacher = model_spec(profile, TEACHER, data_root) if mode == "distill" else None
    return RunSpec(model=model, data=data, schedule=schedule, train=train, teacher=teacher)


def model_params(model_id: str, model: torch.nn.Module) -> dict:
    mode, size = parse_model_id(model_id)
    return {"model": model_id, "mode": mode, "size_factor": size, "band": model.describe()["band"]}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    config = metafunc.config
    profile = get_profile(config.getoption("profile"))
    sizes = select_size_factors(
        profile.size_factors.sizes, config.getoption("size_factors"), config.getoption("size_range")
    )
    # Largest first, data and distilled students interleaved: xdist deals the first cells out round-robin, so
    # one worker trains the teacher and then the distilled students while the other trains the data students.
    students = [student_id(mode, s) for s in sorted(sizes, reverse=True) for mode in MODES]
    if "model_id" in metafunc.fixturenames:
        metafunc.parametrize("model_id", [TEACHER, *students])
    elif "student" in metafunc.fixturenames:
        metafunc.parametrize("student", students)
    elif "size" in metafunc.fixturenames:
        metafunc.parametrize("size", sorted({1.0, *sizes}), ids=lambda s: f"s{s:g}")


def conditioning(n: int, num_classes: int, device: torch.device) -> dict:
    """Balanced class labels ``i mod K`` so every model is asked for the same digits."""
    return {"y": torch.arange(n, device=device) % num_classes} if num_classes else {}


def test_noise_prediction(model_id, profile, data_root, device, artifacts, record):
    """eps-prediction error vs timestep on held-out data, same x0 and noise for every model."""
    spec = model_spec(profile, model_id, data_root)
    model = final_model(spec, artifacts, device)
    test = cached_dataset(spec.data, "test")
    schedule = spec.schedule.build()
    grid = torch.linspace(0, schedule.num_steps - 1, profile.size_factors.noise_timesteps).round().long()
    errors = eps_error_by_timestep(model, schedule, test.x, grid.tolist(), seed=profile.seed, cond={"y": test.y})
    params = model_params(model_id, model)
    for t, error in errors.items():
        record("eps_mse", error, t=t, **params)
    record("eps_mse_mean", sum(errors.values()) / len(errors), **params)
    record("params", count_parameters(model), **params)
    assert all(math.isfinite(e) and e >= 0 for e in errors.values())


def test_teacher_reference(profile, data_root, device, artifacts, record):
    """The teacher's own trajectories: the PCA frame every student is projected into, its dimensionality."""
    spec = model_spec(profile, TEACHER, data_root)
    teacher = final_model(spec, artifacts, device)
    scale = profile.size_factors
    data = cached_dataset(spec.data, "train")
    shape = (scale.trajectory_samples, *data.sample_shape)
    traj = trajectories(
        teacher,
        spec.schedule.build(),
        shape,
        steps=scale.sampling_steps,
        seed=profile.seed,
        clip_denoised=IMAGE_CLIP,
        cond=conditioning(shape[0], data.num_classes, device),
    )
    frame = TeacherFrame.fit(traj, n_components=PCA_COMPONENTS)
    params = model_params(TEACHER, teacher)
    for k, ratio in enumerate(explained_variance_curve(traj, MAX_EXPLAINED_COMPONENTS).tolist(), start=1):
        record("explained_variance", ratio, k=k, **params)
    record("params", count_parameters(teacher), **params)
    record.array("trajectory_pca", frame.project(traj), **params)
    record.array("samples", traj[-1], **params)
    assert 0 < float(frame.explained_variance_ratio.sum()) <= 1 + 1e-9


def test_trajectories(student, profile, data_root, device, artifacts, record):
    """Student vs teacher trajectories from the same noise: scalar, per-step and radar metrics, PCA frame."""
    scale = profile.size_factors
    teacher_spec, spec = model_spec(profile, TEACHER, data_root), model_spec(profile, student, data_root)
    teacher, model = final_model(teacher_spec, artifacts, device), final_model(spec, artifacts, device)
    data = cached_dataset(spec.data, "train")
    shape = (scale.trajectory_samples, *data.sample_shape)
    cond = conditioning(shape[0], data.num_classes, device)
    schedule = spec.schedule.build()
    reference = trajectories(
        teacher, schedule, shape, steps=scale.sampling_steps, seed=profile.seed, clip_denoised=IMAGE_CLIP, cond=cond
    )
    traj = trajectories(
        model, schedule, shape, steps=scale.sampling_steps, seed=profile.seed, clip_denoised=IMAGE_CLIP, cond=cond
    )
    assert torch.equal(traj[0], reference[0]), "student and teacher must start from the same noise"

    params = model_params(student, model)
    metrics = compare_trajectories(traj, reference)
    for name, value in metrics.items():
        record(name, value, **params)
    for name, value in normalize_for_radar(metrics, scales=teacher_scales(reference)).items():
        record(f"radar_{name}", value, **params)
    for name, fn in STEPWISE.items():
        for step, value in enumerate(fn(traj, reference).tolist()):
            record(name, value, step=step, **params)
    for k, ratio in enumerate(explained_variance_curve(traj, MAX_EXPLAINED_COMPONENTS).tolist(), start=1):
        record("explained_variance", ratio, k=k, **params)
    n_params, n_teacher = count_parameters(model), count_parameters(teacher)
    record("params", n_params, **params)
    record("param_ratio", n_params / n_teacher, **params)
    record.array("trajectory_pca", TeacherFrame.fit(reference, n_components=PCA_COMPONENTS).project(traj), **params)
    record.array("samples", traj[-1], **params)
    assert all(math.isfinite(v) for v in metrics.values()), metrics


def test_sample_quality(model_id, profile, data_root, device, artifacts, record):
    """Domain FID (with its bootstrap CI) and KID of class-balanced DDIM samples against the held-out split."""
    scale = profile.size_factors
    spec = model_spec(profile, model_id, data_root)
    model = final_model(spec, artifacts, device)
    data = cached_dataset(spec.data, "train")
    shape = (scale.eval_samples, *data.sample_shape)
    samples = ddim_sample(
        model,
        spec.schedule.build(),
        shape,
        scale.sampling_steps,
        generator=torch.Generator().manual_seed(profile.seed),
        cond=conditioning(shape[0], data.num_classes, device),
        clip_denoised=IMAGE_CLIP,
    ).cpu()
    extractor = domain_features(spec.data, artifacts, device, seed=profile.seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FIDSampleSizeWarning)  # n is stated next to every value
        result = fid(
            samples.clamp(-1, 1),
            spec.data,
            extractor,
            split="test",
            cache=artifacts,
            generator=torch.Generator().manual_seed(profile.seed),
        )
    params = {
        **model_params(model_id, model),
        "n": result.n_samples,
        "n_real": result.n_real,
        "extractor": result.extractor,
    }
    for name, value in result.metrics().items():
        record(name, value, **params)
    record("params", count_parameters(model), **params)
    assert math.isfinite(result.value) and result.ci_low <= result.value <= result.ci_high


@pytest.mark.timing
def test_sampling_latency(size, profile, data_root, device, benchmark, record):
    """Seconds per image of DDIM sampling at the profile's step count (architecture only: untrained weights)."""
    scale = profile.size_factors
    spec = model_spec(profile, TEACHER if size == 1.0 else student_id("data", size), data_root)
    model = spec.model.build(seed=profile.seed).to(device).eval()
    data = cached_dataset(spec.data, "train")
    batch = 16
    shape = (batch, *data.sample_shape)
    cond = conditioning(batch, data.num_classes, device)
    schedule = spec.schedule.build()

    def sample():
        ddim_sample(
            model, schedule, shape, scale.sampling_steps, generator=sample_generators(profile.seed, batch), cond=cond
        )

    benchmark.pedantic(sample, rounds=3, warmup_rounds=1)
    seconds = benchmark.stats.stats.mean / batch
    record(
        "sampling_seconds_per_image",
        seconds,
        model=TEACHER if size == 1.0 else f"s{size:g}",
        size_factor=size,
        params=count_parameters(model),
    )
    assert seconds > 0

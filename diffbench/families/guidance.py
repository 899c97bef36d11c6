"""guidance: classifier guidance (seed 004), and classifier guidance vs classifier-free guidance on one network.

The size_factors teacher is class-conditional with a null label, so both methods guide the same network from the
same noise with the same 50 DDIM steps: classifier guidance (Dhariwal & Nichol 2021) shifts the null-label
prediction by a noise-aware classifier's gradient, CFG mixes the null-label and conditional predictions. At scale
0 both are the null-label model itself. The classifier is a cached artifact trained on noised digits.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from diffbench.cache import ArtifactCache
from diffbench.experiments import (
    ClassifierSpec,
    cached_dataset,
    class_conditional_samples,
    final_model,
    image_quality,
    noisy_classifier,
)
from diffbench.families import Family, Measurements
from diffbench.families import size_factors as sf
from diffbench.guidance import ClassifierFreeGuidance, ClassifierGuidance
from diffbench.metrics.registry import BOOKKEEPING, HIGHER, NEITHER, QUALITY, Metric, declare
from diffbench.models import ModelConfig
from diffbench.models.classifier import accuracy
from diffbench.profiles import Profile
from diffbench.sampling import ddim_sample, randn, sample_generators, uniform_timesteps

declare(
    Metric("network_evaluations", NEITHER, BOOKKEEPING, "denoiser evaluations per sample", tolerance="exact"),
    Metric("classifier_evaluations", NEITHER, BOOKKEEPING, "classifier forward+backward passes per sample", "exact"),
    Metric("noisy_classifier_accuracy", HIGHER, QUALITY, "held-out accuracy of the guidance classifier at noise t"),
)

METHODS = ("cg", "cfg")
# Cell ids: "cfg" would put these cells into `pytest -k cfg`, the cfg family's selection.
METHOD_IDS = {"cg": "classifier", "cfg": "classifier_free"}
CLASSIFIER_WIDTH = 32
LATENCY_BATCH = 16


def cells(profile: Profile) -> list[tuple[str, float]]:
    """(method, scale): both methods at every scale of the profile, scale-major."""
    return [(method, scale) for scale in profile.guidance.cg_scales for method in METHODS]


def cell_id(method: str, scale: float) -> str:
    return f"{METHOD_IDS[method]}-s{scale:g}"


def classifier_spec(profile: Profile, data_root: str | None = None) -> ClassifierSpec:
    """The noise-aware classifier for the size_factors teacher's data and schedule."""
    teacher = sf.model_spec(profile, sf.TEACHER, data_root)
    data = cached_dataset(teacher.data, "train")
    channels, size, _ = data.sample_shape
    model = ModelConfig.of(
        "classifier",
        in_channels=channels,
        image_size=size,
        num_classes=data.num_classes,
        width=CLASSIFIER_WIDTH,
        time_conditioned=True,
    )
    return ClassifierSpec(teacher.data, teacher.schedule, model, epochs=profile.guidance.classifier_epochs)


def guided_model(
    method: str, scale: float, model: torch.nn.Module, classifier: Callable[[], torch.nn.Module], schedule
) -> tuple[torch.nn.Module, int, int]:
    """``(eps-model, denoiser evaluations per step, classifier passes per step)`` of ``method`` at ``scale``;
    ``classifier()`` is called only for classifier guidance."""
    if method == "cfg":
        return ClassifierFreeGuidance(model, scale), 1 if scale in (0.0, 1.0) else 2, 0
    if method == "cg":
        return ClassifierGuidance(model, classifier(), schedule, scale), 1, 1 if scale > 0 else 0
    raise ValueError(f"unknown guidance method {method!r}; choose one of {METHODS}")


def guided_samples(
    method: str,
    scale: float,
    profile: Profile,
    device: torch.device,
    cache: ArtifactCache,
    data_root: str | None = None,
) -> tuple[Measurements, torch.Tensor]:
    """Class-balanced samples of the teacher guided by ``method`` at ``scale`` (same noise for every cell):
    accuracy, per-class diversity, domain FID with CI, and the evaluation budget per sample. Returns the rows and
    the samples."""
    spec = sf.model_spec(profile, sf.TEACHER, data_root)
    model = final_model(spec, cache, device)
    schedule = spec.schedule.build()
    steps = profile.size_factors.sampling_steps
    eps, net_per_step, cls_per_step = guided_model(
        method, scale, model, lambda: noisy_classifier(classifier_spec(profile, data_root), cache, device), schedule
    )
    data = cached_dataset(spec.data, "train")
    shape = (profile.guidance.eval_samples, *data.sample_shape)
    labels = torch.arange(shape[0]) % data.num_classes
    samples = class_conditional_samples(
        eps, schedule, shape, steps=steps, seed=profile.seed, labels=labels, clip_denoised=sf.IMAGE_CLIP
    )
    result, classes = image_quality(samples, labels, spec.data, cache, device, seed=profile.seed)
    out = Measurements(
        {"method": method, "scale": scale, "model": sf.TEACHER, "n": result.n_samples, "n_real": result.n_real}
    )
    out.update({**result.metrics(), **classes}, context={"extractor": result.extractor})
    out.add("network_evaluations", net_per_step * steps)
    out.add("classifier_evaluations", cls_per_step * steps)
    out.array("samples", samples[: profile.guidance.grid_rows * data.num_classes])
    return out, samples


def classifier_accuracy(
    profile: Profile, device: torch.device, cache: ArtifactCache, data_root: str | None = None
) -> Measurements:
    """Held-out accuracy of the guidance classifier on test digits noised to each of the profile's timesteps."""
    spec = classifier_spec(profile, data_root)
    classifier = noisy_classifier(spec, cache, device)
    test = cached_dataset(spec.data, "test")
    schedule = spec.schedule.build()
    out = Measurements({"model": "noisy_classifier"})
    for t in profile.guidance.classifier_timesteps:
        generator = torch.Generator().manual_seed(profile.seed + t)
        out.add("noisy_classifier_accuracy", accuracy(classifier, test, t, schedule=schedule, generator=generator), t=t)
    return out


def sampling_timer(
    method: str, scale: float, profile: Profile, device: torch.device, data_root: str | None = None
) -> tuple[Callable[[], None], int, dict]:
    """``(run, batch, params)``: ``run()`` draws ``batch`` images guided at ``scale`` with untrained weights (cost
    depends on the architecture and the guidance, not the weights): CFG runs the denoiser on a doubled batch
    (scales 0 and 1 on the plain one), classifier guidance adds a classifier forward and backward pass per step
    (none at scale 0)."""
    spec = sf.model_spec(profile, sf.TEACHER, data_root)
    model = spec.model.build(seed=profile.seed).to(device).eval()
    schedule = spec.schedule.build()
    eps, _, _ = guided_model(
        method,
        scale,
        model,
        lambda: classifier_spec(profile, data_root).model.build(seed=profile.seed).to(device).eval(),
        schedule,
    )
    data = cached_dataset(spec.data, "train")
    shape = (LATENCY_BATCH, *data.sample_shape)
    grid = uniform_timesteps(schedule.num_steps, profile.size_factors.sampling_steps)
    cond = {"y": torch.arange(LATENCY_BATCH, device=device) % data.num_classes}

    def run() -> None:
        ddim_sample(
            eps, randn(shape, sample_generators(profile.seed, LATENCY_BATCH), device), grid, schedule, cond=cond
        )

    return run, LATENCY_BATCH, {"method": method, "scale": scale, "model": sf.TEACHER}


def _sections(df, run_dir: Path) -> list:
    from diffbench.report import guidance  # the plotting stack loads only when a report is built

    return guidance.sections(df, run_dir)


FAMILY = Family(
    name="guidance",
    question="classifier guidance by scale, and classifier guidance vs CFG on one network, noise and step budget",
    seeds=("004",),
    sections=_sections,
)

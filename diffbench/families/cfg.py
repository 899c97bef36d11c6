"""cfg: what does classifier-free guidance do to sampling trajectories, and to a small student vs the teacher?
(seeds 000/001)

Cells are (model, guidance scale w): the size_factors family's teacher and students (the same specs, so the same
cached artifacts: nothing is trained twice when both families run), guided by
:class:`~diffbench.guidance.ClassifierFreeGuidance`. ``w = 1`` is the conditional model without guidance, the
reference every guided trajectory is compared with; every cell starts from the same noise and the same labels.
"""

from __future__ import annotations

from pathlib import Path

import torch

from diffbench.cache import ArtifactCache
from diffbench.experiments import cached_dataset, class_conditional_samples, final_model, image_quality, trajectories
from diffbench.families import Family, Measurements, Option, OptionValues
from diffbench.families import size_factors as sf
from diffbench.guidance import ClassifierFreeGuidance, check_scale
from diffbench.metrics.registry import ARRAY, NEITHER, Metric, declare
from diffbench.metrics.trajectory import (
    TeacherFrame,
    compare_trajectories,
    normalize_for_radar,
    stepwise_series,
    teacher_scales,
)
from diffbench.profiles import Profile

declare(Metric("unguided_pca", NEITHER, ARRAY, "a model's w = 1 trajectories in the teacher's PCA frame (array)"))

REFERENCE_W = 1.0  # the conditional model without guidance


def parse_guidance_scales(text: str) -> tuple[float, ...]:
    """``"1,3,5,7"`` -> ``(1.0, 3.0, 5.0, 7.0)``; every value a finite number >= 0 (the seeds use 1..20)."""
    values = []
    for part in text.split(","):
        try:
            value = float(part.strip())
        except ValueError:
            raise ValueError(f"guidance scale must be a finite number >= 0, got {part.strip()!r}") from None
        values.append(check_scale(value))
    return tuple(dict.fromkeys(values))


GUIDANCE_SCALES = Option(
    "--guidance-scales",
    "comma-separated CFG scales w >= 0 for the cfg family, e.g. 1,3,5,7 (w = 1: no guidance; default: the profile's)",
    metavar="LIST",
    check=parse_guidance_scales,
)


def selected_scales(profile: Profile, options: OptionValues) -> tuple[float, ...]:
    text = options.get("guidance_scales")
    return parse_guidance_scales(text) if text else profile.guidance.cfg_scales


def model_ids(profile: Profile, options: OptionValues) -> list[str]:
    """The teacher, then the profile's student modes at the selected sizes (largest first)."""
    students = [sf.student_id(mode, s) for s in sorted(sf.selected_sizes(profile, options), reverse=True)
                for mode in profile.guidance.student_modes]  # fmt: skip
    return [sf.TEACHER, *dict.fromkeys(students)]


def cells(profile: Profile, options: OptionValues) -> list[tuple[str, float]]:
    """(model, w), scale-major: xdist deals the first cells out round-robin, so on a cold cache the workers train
    different students at once (every student waits for the teacher, which one worker trains first)."""
    return [(model_id, w) for w in selected_scales(profile, options) for model_id in model_ids(profile, options)]


def cell_id(model_id: str, w: float) -> str:
    return f"{model_id}-w{w:g}"


def _guided_trajectories(model: torch.nn.Module, w: float, spec, profile: Profile, device: torch.device):
    data = cached_dataset(spec.data, "train")
    shape = (profile.guidance.trajectory_samples, *data.sample_shape)
    return trajectories(
        ClassifierFreeGuidance(model, w),
        spec.schedule.build(),
        shape,
        steps=profile.size_factors.sampling_steps,
        seed=profile.seed,
        clip_denoised=sf.IMAGE_CLIP,
        cond=sf.conditioning(shape[0], data.num_classes, device),
    )


def _compare(out: Measurements, traj: torch.Tensor, reference: torch.Tensor, name: str) -> None:
    """Scalar, radar and per-step metrics of ``traj`` against ``reference``, tagged ``reference=name``."""
    metrics = compare_trajectories(traj, reference)
    out.update(metrics, reference=name)
    radar = normalize_for_radar(metrics, scales=teacher_scales(reference))
    out.update({f"radar_{k}": v for k, v in radar.items()}, reference=name)
    for metric, points in stepwise_series(traj, reference).items():
        for step, value in points:
            out.add(metric, value, reference=name, step=step)


def guided_trajectories(
    model_id: str, w: float, profile: Profile, device: torch.device, cache: ArtifactCache, data_root: str | None = None
) -> tuple[Measurements, torch.Tensor, torch.Tensor]:
    """Guided (w) vs unguided (w = 1) trajectories of one model from the same noise and labels; for a student
    also vs the teacher under the same w; both in the teacher's unguided PCA frame. Returns the rows and the
    guided and unguided trajectories."""
    spec, teacher_spec = sf.model_spec(profile, model_id, data_root), sf.model_spec(profile, sf.TEACHER, data_root)
    model, teacher = final_model(spec, cache, device), final_model(teacher_spec, cache, device)
    guided = _guided_trajectories(model, w, spec, profile, device)
    unguided = guided if w == REFERENCE_W else _guided_trajectories(model, REFERENCE_W, spec, profile, device)
    is_teacher = model_id == sf.TEACHER
    teacher_unguided = (
        unguided if is_teacher else _guided_trajectories(teacher, REFERENCE_W, teacher_spec, profile, device)
    )
    out = Measurements({**sf.model_params(model_id, model), "w": w})
    _compare(out, guided, unguided, "unguided")
    if not is_teacher:
        teacher_guided = (
            teacher_unguided if w == REFERENCE_W else _guided_trajectories(teacher, w, teacher_spec, profile, device)
        )
        _compare(out, guided, teacher_guided, "teacher")
    frame = TeacherFrame.fit(teacher_unguided, n_components=sf.PCA_COMPONENTS)
    out.array("trajectory_pca", frame.project(guided))
    out.array("unguided_pca", frame.project(unguided))
    return out, guided, unguided


def guided_quality(
    model_id: str, w: float, profile: Profile, device: torch.device, cache: ArtifactCache, data_root: str | None = None
) -> Measurements:
    """Class accuracy, per-class diversity and domain FID (CI, n) of class-balanced samples guided at w; the first
    ``grid_rows`` samples of every class are kept for the image grids (sample i is class i mod K)."""
    spec = sf.model_spec(profile, model_id, data_root)
    model = final_model(spec, cache, device)
    data = cached_dataset(spec.data, "train")
    shape = (profile.guidance.eval_samples, *data.sample_shape)
    labels = torch.arange(shape[0]) % data.num_classes
    samples = class_conditional_samples(
        ClassifierFreeGuidance(model, w),
        spec.schedule.build(),
        shape,
        steps=profile.size_factors.sampling_steps,
        seed=profile.seed,
        labels=labels,
        clip_denoised=sf.IMAGE_CLIP,
    )
    result, classes = image_quality(samples, labels, spec.data, cache, device, seed=profile.seed)
    out = Measurements({**sf.model_params(model_id, model), "w": w, "n": result.n_samples, "n_real": result.n_real})
    out.update({**result.metrics(), **classes}, context={"extractor": result.extractor})
    out.array("samples", samples[: profile.guidance.grid_rows * data.num_classes])
    return out


def _sections(df, run_dir: Path) -> list:
    from diffbench.report import cfg  # the plotting stack loads only when a report is built

    return cfg.sections(df, run_dir)


def _shard_group(nodeid: str) -> str:
    """A cell (``test_guided_quality[data-s0.5-w3]``) goes with its model's other cfg and size_factors cells."""
    model_id = nodeid.partition("[")[2].rpartition("-w")[0]
    return sf.model_group(model_id) if model_id else nodeid


FAMILY = Family(
    name="cfg",
    question="classifier-free guidance by size: guided vs unguided trajectories, teacher vs student, quality",
    seeds=("000", "001"),
    options=(sf.SIZE_FACTORS, sf.SIZE_RANGE, GUIDANCE_SCALES),
    sections=_sections,
    shard_group=_shard_group,
    # Rows comparing a guided trajectory with the *same model's unguided* one measure how far guidance moves
    # sampling, where closer is not better (a guidance that stopped working would "improve" every one of them):
    # compare gates them two-sided. Against the teacher they keep their metric's direction.
    two_sided=(("reference", "unguided"),),
)

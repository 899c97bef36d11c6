"""Scales of the benchmark matrix. Profiles are data: benchmarks read sizes from here, never branch on names."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BatchConfigsScale:
    """Seed 002 (large-batch convergence on the 2-D GMM)."""

    epochs: int  # the baseline's (batch 128); runs matched on steps get the epochs of its optimiser steps
    checkpoints: int  # per run, log-spaced: at 1/2^(c-1), ..., 1/4, 1/2 and all of the run's epochs
    eval_samples: int
    sampling_steps: int  # ancestral (eta = 1) steps used to draw evaluation samples; T means full DDPM
    timing_epochs: int = 1
    floor_draws: int = 4  # draws of true-GMM samples scored like a checkpoint: each metric's floor at this n
    noise_scale_probes: int = 100  # gradient-noise-scale measurements per run, evenly spaced in epochs
    noise_scale_probe: tuple[int, int] = (128, 8)  # (micro-batch size, count): B_small = 128, B_big = 1024


SEED_SIZE_FACTORS = (0.01, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)  # seeds 000/001 default list


@dataclass(frozen=True)
class UNetShape:
    """The teacher's architecture; students derive theirs from it through ``size_factor``."""

    base_channels: int
    channel_mults: tuple[int, ...]
    num_res_blocks: int
    attention_resolutions: tuple[int, ...]
    dropout: float


@dataclass(frozen=True)
class SizeFactorsScale:
    """Seeds 000/001 (teacher vs students of size factor s)."""

    dataset: str
    image_size: int
    sizes: tuple[float, ...]
    teacher: UNetShape
    schedule: str
    diffusion_steps: int
    teacher_epochs: int
    student_epochs: int
    batch_size: int
    lr: float
    betas: tuple[float, float]
    ema_decay: float | None
    label_dropout: float
    sampling_steps: int  # DDIM steps for trajectories and samples
    trajectory_samples: int  # trajectories per cell, all from the same initial noise
    eval_samples: int  # samples for quality metrics and grids
    noise_timesteps: int  # grid points of the eps-error-vs-timestep analysis
    # The analyses of issue 15, subsampled so that they cost seconds at smoke scale:
    analysis_steps: tuple[int, ...]  # DDIM step indices (0: t = T-1) of the attention maps and x0 strips
    attention_samples: int  # the first samples of the teacher's trajectories whose x_t every model attends over
    attention_queries: tuple[tuple[float, float], ...]  # query positions (row, column) as fractions of the map
    strip_samples: int  # samples whose x0 estimates are kept as image strips
    embedding_samples: int  # trajectories per model in the joint t-SNE/UMAP (the first ones)
    embedding_steps: int  # states per trajectory embedded (evenly spaced from x_T to the sample)
    latent_samples: int  # final samples per model (and real images) in the domain-feature embedding
    determinism_samples: int  # samples per verify_determinism run
    determinism_steps: int  # DDIM steps per verify_determinism run


@dataclass(frozen=True)
class GuidanceScale:
    """Seeds 000/001 (CFG by size) and 004 (classifier guidance); models are the size_factors family's."""

    cfg_scales: tuple[float, ...]  # w = 1 is the conditional model without guidance (the reference)
    student_modes: tuple[str, ...]  # which size_factors students the cfg family guides
    cg_scales: tuple[float, ...]  # classifier guidance and its CFG counterpart at the same scales
    trajectory_samples: int  # trajectories per cell (class i mod K), all from the same noise
    eval_samples: int  # samples per cell for accuracy, diversity, FID
    grid_rows: int  # samples per class kept for the image grids
    classifier_epochs: int  # the noise-aware classifier of classifier guidance
    classifier_timesteps: tuple[int, ...]  # where its held-out accuracy is reported


@dataclass(frozen=True)
class StudentBudget:
    """Training budget of one distilled student (one progressive round, the one-step or the consistency student):
    epochs over its training set (the data, or the one-step pairs) at ``batch_size`` and ``lr``."""

    epochs: int
    batch_size: int
    lr: float


@dataclass(frozen=True)
class SamplersPanel:
    """One teacher's panel of the samplers family (seed 004's DDPM vs DDIM, seed 000's progressive distillation)."""

    ddim_steps: tuple[int, ...]  # DDIM step counts, each at every eta below
    etas: tuple[float, ...]
    eval_samples: int  # samples per cell (the same initial noise per sample in every cell)
    reference_steps: int  # the teacher's DDIM step count that defines "the teacher's output" for a noise
    reference_samples: int  # the first K samples of every cell compared with that reference
    grid_rows: int  # digits: samples per class kept for the image grids
    progressive_start: int  # the teacher's step count that progressive distillation starts from (N = 2^k)
    progressive: StudentBudget  # per round
    one_step_pairs: int  # (noise, teacher sample) pairs for one-step distillation
    one_step_teacher_steps: int  # the teacher's DDIM steps that draw those samples
    one_step: StudentBudget
    consistency_grid: int  # N: the consistency-distillation discretisation
    consistency: StudentBudget
    consistency_target_decay: float  # mu of the target network
    teacher_epochs: int | None = None  # the GMM teacher's training (None: the image panel's size_factors teacher)


@dataclass(frozen=True)
class SamplersScale:
    image: SamplersPanel  # the size_factors teacher (class-conditional UNet)
    gmm: SamplersPanel  # the batch_configs baseline (MLP on the 2-D GMM)


SEED_004_DDIM_STEPS = (1, 2, 4, 10, 20, 50, 100)


def _gmm_panel(eval_samples: int, student_epochs: int, teacher_epochs: int) -> SamplersPanel:
    return SamplersPanel(
        teacher_epochs=teacher_epochs,
        ddim_steps=SEED_004_DDIM_STEPS,
        etas=(0.0, 1.0),
        eval_samples=eval_samples,
        reference_steps=1000,
        reference_samples=eval_samples,
        grid_rows=0,
        progressive_start=16,
        progressive=StudentBudget(student_epochs, 128, 1e-4),
        one_step_pairs=4096,
        one_step_teacher_steps=100,
        one_step=StudentBudget(4 * student_epochs, 128, 1e-3),
        consistency_grid=18,
        consistency=StudentBudget(6 * student_epochs, 128, 1e-3),
        consistency_target_decay=0.95,
    )


@dataclass(frozen=True)
class SnrPathsScale:
    """Seed 003 (the two-scale LIFT model, its discretization-error heatmap and DP paths) and DP-optimal
    single-scale schedules on the size_factors teacher."""

    dataset: str
    image_size: int  # the large scale's side; the small scale is half of it
    lift: UNetShape  # the LIFT model's UNet (the single-scale baseline is fitted to its parameter count)
    epochs: int  # LIFT and baseline alike
    batch_size: int
    lr: float
    ema_decay: float | None
    mse_timestep: int  # seed 003's MSE tests: the noisy scale(s) at this t
    snr_range: tuple[float, float]  # (gamma_min, gamma_max) of the heatmap grid and the paths
    num_points: int  # heatmap grid points per axis (seed default 15; --num-points)
    heatmap_samples: int  # held-out images the error is averaged over
    probes: int  # Hutchinson probes per image (seed: K = 8)
    sampling_steps: int  # steps of every LIFT path and the baseline (seed: 50)
    eval_samples: int  # samples per quality cell (LIFT paths, baseline, single-scale schedules)
    grid_samples: int  # samples kept per cell for the report's grids
    schedule_steps: tuple[int, ...]  # single-scale DDIM step counts compared across schedules
    density_points: int  # timesteps where the teacher's error density E(t) is measured
    density_samples: int  # held-out images E(t) is averaged over


# Issue 15's size-factor analyses at the standard and paper scales (50 DDIM steps): five analysis steps, four
# samples, three query positions, 20 trajectories x 6 states and 200 samples per model in the embeddings.
FULL_ANALYSES = dict(
    analysis_steps=(0, 12, 25, 37, 49),
    attention_samples=4,
    attention_queries=((0.5, 0.5), (0.25, 0.25), (0.75, 0.75)),
    strip_samples=4,
    embedding_samples=20,
    embedding_steps=6,
    latent_samples=200,
    determinism_samples=16,
    determinism_steps=50,
)


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    seed: int
    batch_configs: BatchConfigsScale
    size_factors: SizeFactorsScale
    guidance: GuidanceScale
    samplers: SamplersScale
    snr_paths: SnrPathsScale


PROFILES: dict[str, Profile] = {
    "smoke": Profile(
        name="smoke",
        description="2-core CPU, no network: the whole matrix in minutes on shipped or generated data",
        seed=0,
        batch_configs=BatchConfigsScale(epochs=80, checkpoints=5, eval_samples=2000, sampling_steps=100),
        size_factors=SizeFactorsScale(
            dataset="digits",
            image_size=16,
            sizes=(0.05, 0.2, 0.5, 1.0),
            teacher=UNetShape(24, (1, 2), 1, (8,), 0.0),
            schedule="cosine",
            diffusion_steps=1000,
            teacher_epochs=25,
            student_epochs=10,
            batch_size=128,
            lr=2e-3,
            betas=(0.9, 0.999),
            ema_decay=None,
            label_dropout=0.1,
            sampling_steps=50,
            trajectory_samples=16,
            eval_samples=300,
            noise_timesteps=10,
            analysis_steps=(0, 25, 45),
            attention_samples=2,
            attention_queries=((0.5, 0.5), (0.25, 0.75)),
            strip_samples=2,
            embedding_samples=16,
            embedding_steps=4,
            latent_samples=60,
            determinism_samples=4,
            determinism_steps=10,
        ),
        guidance=GuidanceScale(
            cfg_scales=(1.0, 3.0, 5.0, 7.0),
            student_modes=("distill",),
            cg_scales=(0.0, 1.0, 3.0, 8.0),
            trajectory_samples=16,
            eval_samples=100,  # 10 per class: FID is compared at equal n only (n is in every row)
            grid_rows=3,
            classifier_epochs=30,
            classifier_timesteps=(0, 250, 500, 750, 950),
        ),
        samplers=SamplersScale(
            image=SamplersPanel(
                ddim_steps=SEED_004_DDIM_STEPS,
                etas=(0.0, 1.0),
                eval_samples=100,  # FID is compared at equal n only (n is in every row)
                reference_steps=1000,
                reference_samples=32,
                grid_rows=2,
                progressive_start=16,
                progressive=StudentBudget(4, 64, 5e-4),
                one_step_pairs=500,
                one_step_teacher_steps=50,
                one_step=StudentBudget(25, 64, 1e-3),
                consistency_grid=18,
                consistency=StudentBudget(8, 64, 5e-4),
                consistency_target_decay=0.95,
            ),
            gmm=_gmm_panel(eval_samples=2000, student_epochs=10, teacher_epochs=200),
        ),
        snr_paths=SnrPathsScale(
            dataset="digits",
            image_size=16,
            lift=UNetShape(24, (1, 2), 1, (8,), 0.0),  # attention at every level but the first (seed 003)
            epochs=30,
            batch_size=128,
            lr=2e-3,
            ema_decay=None,
            mse_timestep=500,
            snr_range=(0.01, 100.0),
            num_points=15,
            heatmap_samples=4,
            probes=8,
            sampling_steps=50,
            eval_samples=300,
            grid_samples=20,
            schedule_steps=(5, 10, 20),
            density_points=30,
            density_samples=8,
        ),
    ),
    "standard": Profile(
        name="standard",
        description="one GPU, hours: torchvision data, longer training",
        seed=0,
        batch_configs=BatchConfigsScale(epochs=1000, checkpoints=9, eval_samples=5000, sampling_steps=1000),
        size_factors=SizeFactorsScale(
            dataset="mnist",
            image_size=28,
            sizes=SEED_SIZE_FACTORS,
            teacher=UNetShape(64, (1, 2, 2), 2, (14,), 0.1),
            schedule="cosine",
            diffusion_steps=1000,
            teacher_epochs=20,
            student_epochs=10,
            batch_size=128,
            lr=2e-4,
            betas=(0.9, 0.999),
            ema_decay=0.999,
            label_dropout=0.1,
            sampling_steps=50,
            trajectory_samples=50,
            eval_samples=5000,
            noise_timesteps=20,
            **FULL_ANALYSES,
        ),
        guidance=GuidanceScale(
            cfg_scales=(1.0, 2.0, 3.0, 5.0, 7.0, 10.0),
            student_modes=("data", "distill"),
            cg_scales=(0.0, 1.0, 3.0, 8.0),
            trajectory_samples=50,
            eval_samples=5000,
            grid_rows=8,
            classifier_epochs=20,
            classifier_timesteps=(0, 250, 500, 750, 950),
        ),
        samplers=SamplersScale(
            image=SamplersPanel(
                ddim_steps=SEED_004_DDIM_STEPS,
                etas=(0.0, 1.0),
                eval_samples=5000,
                reference_steps=1000,
                reference_samples=500,
                grid_rows=8,
                progressive_start=256,
                progressive=StudentBudget(10, 128, 1e-4),
                one_step_pairs=50000,
                one_step_teacher_steps=100,
                one_step=StudentBudget(50, 128, 1e-4),
                consistency_grid=40,
                consistency=StudentBudget(50, 128, 1e-4),
                consistency_target_decay=0.95,
            ),
            gmm=_gmm_panel(eval_samples=5000, student_epochs=50, teacher_epochs=1000),
        ),
        snr_paths=SnrPathsScale(
            dataset="mnist",
            image_size=28,
            lift=UNetShape(64, (1, 2, 2), 2, (14, 7), 0.1),
            epochs=30,
            batch_size=128,
            lr=2e-4,
            ema_decay=0.999,
            mse_timestep=500,
            snr_range=(0.01, 100.0),
            num_points=15,
            heatmap_samples=32,
            probes=8,
            sampling_steps=50,
            eval_samples=5000,
            grid_samples=64,
            schedule_steps=(5, 10, 20),
            density_points=50,
            density_samples=32,
        ),
    ),
    "paper": Profile(
        name="paper",
        description="the seeds' full settings, GPUs, days",
        seed=0,
        batch_configs=BatchConfigsScale(epochs=1000, checkpoints=10, eval_samples=10000, sampling_steps=1000),
        # The seeds' CIFAR-10 teacher: base 128, mults [1,2,2,2], 3 res blocks, dropout 0.3, cosine schedule with
        # 4000 diffusion steps, Adam(0.8, 0.999), lr 1e-4, batch 128, EMA 0.9999; 50 sampling steps.
        size_factors=SizeFactorsScale(
            dataset="cifar10",
            image_size=32,
            sizes=SEED_SIZE_FACTORS,
            teacher=UNetShape(128, (1, 2, 2, 2), 3, (16,), 0.3),
            schedule="cosine",
            diffusion_steps=4000,
            teacher_epochs=100,
            student_epochs=50,
            batch_size=128,
            lr=1e-4,
            betas=(0.8, 0.999),
            ema_decay=0.9999,
            label_dropout=0.1,
            sampling_steps=50,
            trajectory_samples=50,
            eval_samples=10000,
            noise_timesteps=20,
            **FULL_ANALYSES,
        ),
        guidance=GuidanceScale(
            cfg_scales=(1.0, 2.0, 3.0, 5.0, 7.0, 10.0, 15.0, 20.0),
            student_modes=("data", "distill"),
            cg_scales=(0.0, 1.0, 3.0, 8.0),
            trajectory_samples=50,
            eval_samples=10000,
            grid_rows=8,
            classifier_epochs=50,
            classifier_timesteps=(0, 1000, 2000, 3000, 3900),
        ),
        # Salimans & Ho 2022 distil CIFAR-10 from 1024 steps down to 1; Song et al. 2023 use N = 18 with mu = 0.95.
        samplers=SamplersScale(
            image=SamplersPanel(
                ddim_steps=SEED_004_DDIM_STEPS,
                etas=(0.0, 1.0),
                eval_samples=10000,
                reference_steps=4000,
                reference_samples=1000,
                grid_rows=8,
                progressive_start=1024,
                progressive=StudentBudget(50, 128, 1e-4),
                one_step_pairs=100000,
                one_step_teacher_steps=100,
                one_step=StudentBudget(100, 128, 1e-4),
                consistency_grid=18,
                consistency=StudentBudget(200, 128, 4e-4),
                consistency_target_decay=0.95,
            ),
            gmm=_gmm_panel(eval_samples=10000, student_epochs=100, teacher_epochs=1000),
        ),
        # Seed 003: AFHQ 64x64 + 32x32, hidden dims [64, 128, 256, 512], attention at 128+ channels, 50 steps,
        # 1000 images for FID, a 15 x 15 grid with K = 8 probes.
        snr_paths=SnrPathsScale(
            dataset="afhq",
            image_size=64,
            lift=UNetShape(64, (1, 2, 4, 8), 2, (32, 16, 8), 0.1),
            epochs=100,
            batch_size=64,
            lr=1e-4,
            ema_decay=0.9999,
            mse_timestep=500,
            snr_range=(0.01, 100.0),
            num_points=15,
            heatmap_samples=64,
            probes=8,
            sampling_steps=50,
            eval_samples=1000,
            grid_samples=64,
            schedule_steps=(5, 10, 20),
            density_points=50,
            density_samples=64,
        ),
    ),
}


def get_profile(name: str) -> Profile:
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; choose one of {', '.join(PROFILES)}")
    return PROFILES[name]

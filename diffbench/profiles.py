"""Scales of the benchmark matrix. Profiles are data: benchmarks read sizes from here, never branch on names."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BatchConfigsScale:
    """Seed 002 (large-batch convergence on the 2-D GMM)."""

    epochs: int
    checkpoint_every: int
    eval_samples: int
    sampling_steps: int  # DDIM/DDPM steps used to draw evaluation samples; T means full ancestral DDPM
    timing_epochs: int = 1


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    seed: int
    batch_configs: BatchConfigsScale


PROFILES: dict[str, Profile] = {
    "smoke": Profile(
        name="smoke",
        description="2-core CPU, no network: the whole matrix in minutes on shipped or generated data",
        seed=0,
        batch_configs=BatchConfigsScale(epochs=200, checkpoint_every=20, eval_samples=2000, sampling_steps=1000),
    ),
    "standard": Profile(
        name="standard",
        description="one GPU, hours: torchvision data, longer training",
        seed=0,
        batch_configs=BatchConfigsScale(epochs=1000, checkpoint_every=25, eval_samples=5000, sampling_steps=1000),
    ),
    "paper": Profile(
        name="paper",
        description="the seeds' full settings, GPUs, days",
        seed=0,
        batch_configs=BatchConfigsScale(epochs=1000, checkpoint_every=10, eval_samples=10000, sampling_steps=1000),
    ),
}


def get_profile(name: str) -> Profile:
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; choose one of {', '.join(PROFILES)}")
    return PROFILES[name]

"""diffbench: a benchmark suite for diffusion-model research."""

__version__ = "0.1.0"

"""Loads the diffbench pytest plugin for tests/ and benchmarks/."""

pytest_plugins = ["diffbench.pytest_plugin"]

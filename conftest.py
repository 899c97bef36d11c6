"""Loads the diffbench pytest plugin for tests/ and benchmarks/ (and pytester for the plugin's own tests)."""

pytest_plugins = ["diffbench.pytest_plugin", "pytester"]

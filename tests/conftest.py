"""Hypothesis profiles for the unit tests: ``ci`` (default, fast, reproducible) and ``nightly`` (wide search).

Pick one with ``HYPOTHESIS_PROFILE=nightly pytest tests``.
"""

import os

from hypothesis import settings

settings.register_profile("ci", deadline=None, max_examples=25, derandomize=True)
settings.register_profile("nightly", deadline=None, max_examples=500)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

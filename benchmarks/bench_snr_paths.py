"""Which SNR path is best for a two-scale (LIFT) model, and which timesteps for a single-scale one? (seed 003)

Cells (:mod:`diffbench.families.snr_paths`): seed 003's MSE tests of LIFT; its discretization-error heatmap with
the DP paths under both chain-rule factors; generation quality of the diagonal and DP paths against a
single-scale baseline with the same parameter count; the size_factors teacher's error density and its DDIM
quality on uniform, quadratic, log-SNR-uniform and DP-optimal grids at each step count.
"""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from diffbench.families import snr_paths as family
from diffbench.profiles import get_profile

pytestmark = pytest.mark.snr_paths


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "cell" in metafunc.fixturenames:
        cells = family.cells(get_profile(metafunc.config.getoption("profile")))
        metafunc.parametrize("cell", cells, ids=[cell.id for cell in cells])


def test_snr_paths(cell, profile, options, data_root, device, artifacts, record):
    """One measurement of the family; each kind asserts what must hold whatever the trained weights."""
    if cell.kind == "mse":
        result = family.mse_tests(profile, device, artifacts, data_root)
        assert {params["test"] for name, _, params, _ in result if name == "eps_mse"} == set(family.MSE_TESTS)
    elif cell.kind == "heatmap":
        result = family.heatmap_cell(profile, options, device, artifacts, data_root)
        errors = {(p["convention"], p["path"], p["error"]): v for name, v, p, _ in result if name == "path_error"}
        for convention in ("seed", "derived"):  # each DP path is optimal for its own objective
            for dp, error in (("dp_total", "total"), ("dp_large", "large")):
                assert errors[(convention, dp, error)] <= errors[(convention, "diagonal", error)] + 1e-12
    elif cell.kind == "quality":
        result, samples = family.path_quality(cell, profile, options, device, artifacts, data_root)
        assert result["fid"] >= 0 and len(samples) == result.params["n"]
    elif cell.kind == "density":
        result = family.density_cell(profile, device, artifacts, data_root)
        assert all(value > 0 for value in result.series("error_density"))
    else:
        result, grid = family.schedule_quality(cell, profile, device, artifacts, data_root)
        assert list(result.series("schedule_timestep")) == [float(t) for t in grid]
        assert all(a > b for a, b in zip(grid, grid[1:], strict=False)) and 0 <= result["class_accuracy"] <= 1
    record.result(result)
    assert all(math.isfinite(value) for _, value, _, _ in result), list(result)


@pytest.mark.timing
def test_vhv_vmap_speedup(profile, device, data_root, benchmark, record):
    """The Hutchinson estimator with all probes in one vmapped JVP vs a Python loop over the probes (K = 8):
    both timed alternately in one run, medians compared."""
    vmapped, loop, params = family.vhv_timers(profile, device, data_root)
    times: dict[str, list[float]] = {"vmap": [], "loop": []}
    for run in (vmapped, loop):
        run()  # warm-up
    for _ in range(7):
        for name, run in (("vmap", vmapped), ("loop", loop)):
            started = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - started)
    benchmark.pedantic(vmapped, rounds=3, warmup_rounds=1)
    medians = {name: float(np.median(values)) for name, values in times.items()}
    for name, seconds in medians.items():
        record("vhv_seconds", seconds, method=name, **params)
    record("vhv_speedup", medians["loop"] / medians["vmap"], **params)
    assert medians["loop"] >= 3 * medians["vmap"], medians  # the target: vmap at least 3x faster at K = 8

"""Seed repeats: ``--seeds`` runs every matrix cell once per seed, and the report's mean and 95% interval over them.

The plugin part runs inner pytest sessions (like ``test_plugin``) over a tiny family module whose values are drawn
from the profile's seed; the summary is checked against the Student-t interval worked out by hand.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from diffbench.cache import config_hash
from diffbench.families import batch_configs
from diffbench.profiles import get_profile
from diffbench.pytest_plugin import parse_seeds
from diffbench.report.build import build_report
from diffbench.report.sections import generic_table, rows_to_frame
from diffbench.report.seeds import SEEDS_FILE, seed_summary
from diffbench.results import make_row, strip_seed

# --- node ids ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("nodeid", "stripped"),
    [
        ("b.py::test_x[a-b-seed1]", "b.py::test_x[a-b]"),
        ("b.py::test_x[seed12]", "b.py::test_x"),
        ("b.py::C::test_x[0.5-seed0]", "b.py::C::test_x[0.5]"),
        ("b.py::test_x[a-b]", "b.py::test_x[a-b]"),
        ("b.py::test_x", "b.py::test_x"),
        ("b.py::test_x[teacher-dp_seed-s10]", "b.py::test_x[teacher-dp_seed-s10]"),  # a parameter, not --seeds
        ("b.py::test_x[seed1-a]", "b.py::test_x[seed1-a]"),  # the plugin's id is always the last one
    ],
)
def test_strip_seed_removes_only_the_trailing_seed_id(nodeid: str, stripped: str) -> None:
    assert strip_seed(nodeid) == stripped


def test_parse_seeds_accepts_distinct_non_negative_integers() -> None:
    assert parse_seeds(None) == ()
    assert parse_seeds("0,1,2") == (0, 1, 2)
    assert parse_seeds(" 7, 3 ") == (7, 3)  # the given order is kept


@pytest.mark.parametrize(("text", "named"), [("-1", "'-1'"), ("1,x", "'x'"), ("1.5", "'1.5'"), ("0,,1", "''")])
def test_parse_seeds_names_the_bad_value(text: str, named: str) -> None:
    with pytest.raises(ValueError, match=f"non-negative integers.*got {named}"):
        parse_seeds(text)


def test_parse_seeds_refuses_a_repeated_seed() -> None:
    with pytest.raises(ValueError, match="seed 1 twice"):
        parse_seeds("1,2,1")


def test_a_familys_artifacts_differ_by_seed() -> None:
    """The seed reaches the cached artifacts' configs, so each seed trains its own models."""
    profile = get_profile("smoke")
    specs = [batch_configs.run_spec(batch_configs.BASELINE, replace(profile, seed=seed)) for seed in (0, 1)]
    assert specs[0].train.seed == 0 and specs[1].train.seed == 1
    assert config_hash(specs[0]) != config_hash(specs[1])


# --- the summary over seeds ---------------------------------------------------------------------------------


def _row(value: float, seed: int, *, metric: str = "m", cell: str = "b.py::test_c", artifact=None, **params) -> dict:
    return make_row(
        family="metrics",
        cell=cell,
        params=params,
        metric=metric,
        value=value,
        seed=seed,
        device="cpu",
        profile="smoke",
        run_id="run",
        artifact=artifact,
    )


def test_seed_summary_is_the_student_t_interval_worked_by_hand() -> None:
    rows = [_row(v, s, a=1) for s, v in enumerate([1.0, 2.0, 4.0])]  # mean 7/3, sd^2 = (16 + 1 + 25) / 9 / 2
    rows += [_row(0.0, 0, a=2), _row(2.0, 5, a=2)]  # n = 2: mean 1, sd sqrt(2), half-width t(0.975, 1)
    rows += [_row(9.0, 0, metric="single", a=1)]  # one seed: no spread, no interval
    summary = seed_summary(rows).set_index(["params", "metric"])
    three = summary.loc[('{"a": 1}', "m")]
    assert three["n_seeds"] == 3 and three["mean"] == pytest.approx(7 / 3)
    assert three["sd"] == pytest.approx(math.sqrt(7 / 3))
    t2 = stats.t.ppf(0.975, 2)
    assert t2 == pytest.approx(4.303, abs=5e-4)  # the printed table value
    half = t2 * math.sqrt(7 / 3) / math.sqrt(3)
    assert (three["ci_low"], three["ci_high"]) == pytest.approx((7 / 3 - half, 7 / 3 + half))
    two = summary.loc[('{"a": 2}', "m")]
    assert two["n_seeds"] == 2 and two["sd"] == pytest.approx(math.sqrt(2))
    assert two["ci_high"] - two["mean"] == pytest.approx(12.706, abs=5e-4)  # t(0.975, 1) sqrt(2) / sqrt(2)
    one = summary.loc[('{"a": 1}', "single")]
    assert one["n_seeds"] == 1 and one["mean"] == 9.0
    assert math.isnan(one["sd"]) and math.isnan(one["ci_low"]) and math.isnan(one["ci_high"])
    assert list(seed_summary(rows).columns) == [
        "family",
        "params",
        "metric",
        "n_seeds",
        "mean",
        "sd",
        "ci_low",
        "ci_high",
    ]


def test_seed_summary_counts_seeds_not_rows_and_skips_arrays_and_non_finite_values() -> None:
    rows = [_row(1.0, 0, cell="b.py::test_c[seed0]"), _row(3.0, 0, cell="b.py::other[seed0]")]  # seed 0: mean 2
    rows += [_row(4.0, 1), _row(float("nan"), 2), _row(100.0, 3, artifact="arrays/x.npy")]
    line = seed_summary(rows).iloc[0]
    assert line["n_seeds"] == 2 and line["mean"] == pytest.approx(3.0) and line["sd"] == pytest.approx(math.sqrt(2))


def test_the_interval_covers_the_mean_95_percent_of_the_time() -> None:
    """2000 experiments of 3 normal seeds each: the t interval covers the true mean in 95% of them (a z interval
    would cover about 81%), within 3 binomial standard deviations."""
    experiments, seeds, true_mean = 2000, 3, 5.0
    values = np.random.default_rng(0).normal(true_mean, 2.0, size=(experiments, seeds))
    rows = [_row(values[e, s], s, e=e) for e in range(experiments) for s in range(seeds)]
    summary = seed_summary(rows)
    assert len(summary) == experiments and (summary["n_seeds"] == seeds).all()
    coverage = ((summary["ci_low"] <= true_mean) & (true_mean <= summary["ci_high"])).mean()
    assert abs(coverage - 0.95) <= 3 * math.sqrt(0.95 * 0.05 / experiments)


def test_report_shows_seed_repeats_and_writes_seeds_csv(tmp_path) -> None:
    rows = [_row(v, s, cell=f"b.py::test_c[seed{s}]") for s, v in enumerate([1.0, 2.0, 4.0])]
    rows += [_row(10.0 * (s + 1), s, metric="single", cell=f"b.py::test_c[seed{s}]") for s in range(3)]
    report = build_report(tmp_path, rows=rows, failures=[]).read_text()
    assert "### Seed repeats" in report and "**Seed(s):** 0, 1, 2" in report
    seeds = pd.read_csv(tmp_path / SEEDS_FILE).set_index("metric")
    assert seeds.loc["m", "n_seeds"] == 3 and seeds.loc["m", "mean"] == pytest.approx(7 / 3)
    half = stats.t.ppf(0.975, 2) * math.sqrt(7 / 3) / math.sqrt(3)
    assert seeds.loc["m", "ci_high"] == pytest.approx(7 / 3 + half)
    assert (tmp_path / "tables" / "metrics_seeds.csv").is_file()
    # The generic table of cells without parameters: one line for the cell, its seeds averaged.
    table = generic_table(rows_to_frame(rows))
    assert list(table["cell"]) == ["b.py::test_c"] and table["m"].iloc[0] == pytest.approx(7 / 3)


def test_report_without_repeats_has_no_seed_section(tmp_path) -> None:
    report = build_report(tmp_path, rows=[_row(1.0, 0), _row(2.0, 0, a=1)], failures=[]).read_text()
    assert "Seed repeats" not in report and not (tmp_path / SEEDS_FILE).exists()


def test_family_tables_average_seeds_instead_of_picking_one() -> None:
    from diffbench.report.size_factors import TRUST, trust_table
    from diffbench.report.snr_paths import PATH_METRIC, path_points

    rows = [_row(v, s, metric=TRUST, view="x", method="tsne", n=10) for s, v in enumerate([0.8, 0.9])]
    trust = trust_table(rows_to_frame(rows))
    assert trust[TRUST].tolist() == pytest.approx([0.85])
    points = [
        _row(v, s, metric=PATH_METRIC, convention="seed", path="dp_total", i=0, snr_large=1.0)
        for s, v in enumerate([2.0, 4.0])
    ]
    assert path_points(rows_to_frame(points))["snr_small"].tolist() == pytest.approx([3.0])


# --- the plugin: --seeds end to end ---------------------------------------------------------------------------


FAMILY_MODULE = """
import pytest
import torch

from diffbench.metrics.registry import NEITHER, QUALITY, Metric, declare

pytestmark = pytest.mark.metrics  # any discovered family's marker
declare(Metric("draw", NEITHER, QUALITY, "a number drawn from the profile's seed"))

@pytest.mark.parametrize("scale", [1, 2])
def test_cell(scale, profile, record):
    draw = torch.randn(1, generator=torch.Generator().manual_seed(profile.seed)).item()
    record("draw", scale * draw, scale=scale)

def test_unparametrized(record):
    record("draw", 0.0, kind="plain")
"""

PLAIN_MODULE = """
def test_not_a_matrix_cell(profile):
    assert profile.seed == 0  # no family marker: never repeated, the profile's own seed
"""


@pytest.fixture(autouse=True)
def _scratch_cache(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIFFBENCH_CACHE", str(pytester.path / "cache"))


def _run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    pytester.makepyfile(test_family=FAMILY_MODULE, test_plain=PLAIN_MODULE)
    return pytester.runpytest_subprocess(
        "-p", "diffbench.pytest_plugin", "--report-dir", "reports", "-p", "no:cacheprovider", *args
    )


def _collected(pytester: pytest.Pytester, *args: str) -> list[str]:
    result = _run(pytester, "--collect-only", "-q", *args)
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()
    return [line for line in result.stdout.lines if "::" in line]


def _draws(pytester: pytest.Pytester, run_id: str) -> dict[tuple[str, int], float]:
    lines = (pytester.path / "reports" / run_id / "results.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in lines]
    return {(r["cell"], r["seed"]): r["value"] for r in rows if r["metric"] == "draw"}


def test_without_seeds_node_ids_are_unchanged(pytester: pytest.Pytester) -> None:
    assert _collected(pytester) == [
        "test_family.py::test_cell[1]",
        "test_family.py::test_cell[2]",
        "test_family.py::test_unparametrized",
        "test_plain.py::test_not_a_matrix_cell",
    ]


def test_seeds_repeat_every_cell_once_per_seed(pytester: pytest.Pytester) -> None:
    plain = _collected(pytester)
    seeded = _collected(pytester, "--seeds", "0,1")
    assert seeded == [
        "test_family.py::test_cell[1-seed0]",
        "test_family.py::test_cell[1-seed1]",
        "test_family.py::test_cell[2-seed0]",
        "test_family.py::test_cell[2-seed1]",
        "test_family.py::test_unparametrized[seed0]",
        "test_family.py::test_unparametrized[seed1]",
        "test_plain.py::test_not_a_matrix_cell",
    ]
    assert sorted(set(map(strip_seed, seeded))) == plain

    _run(pytester, "--seeds", "0,1", "-n", "2", "--run-id", "both").assert_outcomes(passed=7)
    both = _draws(pytester, "both")
    cells = [f"test_family.py::test_cell[{k}-seed{s}]" for k in (1, 2) for s in (0, 1)]
    cells += [f"test_family.py::test_unparametrized[seed{s}]" for s in (0, 1)]
    assert sorted(both) == sorted((cell, int(cell[-2])) for cell in cells), "each cell's rows carry its seed"
    for k in (1, 2):
        expected = {s: k * _torch_draw(s) for s in (0, 1)}
        assert expected[0] != expected[1]  # the seed changes the value
        for s in (0, 1):
            assert both[(f"test_family.py::test_cell[{k}-seed{s}]", s)] == expected[s]

    _run(pytester, "--seeds", "1", "-n", "0", "--run-id", "one").assert_outcomes(passed=4)
    one = _draws(pytester, "one")
    assert one == {key: value for key, value in both.items() if key[1] == 1}, "seed 1 alone gives the same rows"
    report = (pytester.path / "reports" / "both" / "report.md").read_text()
    assert "Seed repeats" in report and (pytester.path / "reports" / "both" / SEEDS_FILE).is_file()


def _torch_draw(seed: int) -> float:
    import torch

    return torch.randn(1, generator=torch.Generator().manual_seed(seed)).item()


def test_bad_seeds_are_a_usage_error(pytester: pytest.Pytester) -> None:
    result = _run(pytester, "--seeds", "0,x")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--seeds takes distinct non-negative integers separated by commas, got 'x'*"])

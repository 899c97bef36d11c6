"""``diffbench baseline``: seed means and seed-spread tolerances, the file format, and the gate it feeds — an
unchanged run passes, an injected regression or a selected cell's lost rows fail, an excluded cell does not."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from diffbench.cli import main
from diffbench.report.baseline import (
    BASELINE_FILE,
    MAX_BYTES,
    _round_up,
    build_entries,
    find_baseline_file,
    read_baseline,
    seed_tolerance,
    write_baseline,
)
from diffbench.report.compare import ABS_FLOOR, computed_with_threads, row_key
from diffbench.results import RESULTS_FILE, make_row, seed_id, write_selection

FAMILY = "batch_configs"
CELLS = {config: f"benchmarks/bench_batch_configs.py::test_quality[{config}]" for config in ("b128", "b1280")}
# per cell and metric, the value at seeds 0, 1, 2 (mmd_rbf of b128: mean 2, sd 1 -> tol 3)
SEED_VALUES = {
    "b128": {"mmd_rbf": (1.0, 2.0, 3.0), "modes_covered": (8.0, 8.0, 8.0), "epoch_seconds": (0.10, 0.12, 0.11)},
    "b1280": {"mmd_rbf": (4.0, 4.4, 4.2), "modes_covered": (7.0, 8.0, 6.0), "epoch_seconds": (0.05, 0.05, 0.06)},
}


def cell_rows(config: str, seed: int, seeded: bool, run_id: str, values: dict | None = None) -> list[dict]:
    """The rows one cell writes at one seed: its metrics, an info-class interval end and an array row. With
    ``seeded`` the node id carries the ``--seeds`` id, as in a ``--seeds`` run."""
    cell = CELLS[config]
    if seeded:
        cell = cell[:-1] + f"-{seed_id(seed)}]"
    params = {"config": config, "batch_size": int(config[1:])}
    common = {"family": FAMILY, "cell": cell, "params": params, "seed": seed, "device": "cpu", "profile": "smoke"}
    values = values or {metric: vals[seed] for metric, vals in SEED_VALUES[config].items()}
    rows = [make_row(**common, metric=metric, value=value, run_id=run_id) for metric, value in values.items()]
    rows.append(make_row(**common, metric="fid_ci_low", value=float(seed), run_id=run_id))
    rows.append(make_row(**common, metric="samples", value=10, run_id=run_id, artifact="arrays/s.npy"))
    return rows


def write_run(run_dir: Path, rows: list[dict], selected: list[str] | None) -> Path:
    """A run directory in the plugin's layout: results.jsonl and, unless None, the selection record."""
    run_dir.mkdir(parents=True)
    (run_dir / RESULTS_FILE).write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
    if selected is not None:
        write_selection(run_dir, "main-1", {cell: FAMILY for cell in selected})
    return run_dir


@pytest.fixture(scope="module")
def seeds_run(tmp_path_factory) -> Path:
    """A ``--seeds 0,1,2`` run of both cells."""
    root = tmp_path_factory.mktemp("seeds")
    rows = [row for config in CELLS for seed in (0, 1, 2) for row in cell_rows(config, seed, True, "seeds")]
    selected = [CELLS[c][:-1] + f"-{seed_id(s)}]" for c in CELLS for s in (0, 1, 2)]
    return write_run(root / "seeds", rows, selected)


# --- the tolerance rule -------------------------------------------------------------------------------------


def test_seed_tolerance_from_known_values(seeds_run):
    entries = build_entries([[json.loads(line) for line in (seeds_run / RESULTS_FILE).read_text().splitlines()]])
    by_name = {(json.loads(p)["config"], m): e for (f, p, m), e in entries.items()}
    mmd = by_name["b128", "mmd_rbf"]
    assert (mmd.mean, mmd.n, mmd.sd, mmd.tol) == (2.0, 3, 1.0, 3.0)  # 1, 2, 3: sd 1 -> 3 sd = 3
    assert mmd.cells == (CELLS["b128"],)  # seed ids stripped
    modes = by_name["b128", "modes_covered"]
    assert (modes.sd, modes.tol) == (0.0, 0.08)  # seeds agree: the floor, 1% of 8
    assert by_name["b1280", "modes_covered"].tol == 3.0  # 7, 8, 6: sd 1
    assert by_name["b128", "epoch_seconds"].tol is None  # timing keeps its class rule
    assert not any(m in ("fid_ci_low", "samples") for _, _, m in entries)  # info and arrays dropped


def test_floor_near_zero_and_too_few_seeds():
    assert seed_tolerance(0.0, 0.0) == 0.01 * ABS_FLOOR
    assert seed_tolerance(-50.0, 0.1) == 0.5  # relative to |mean|
    assert seed_tolerance(5.0, 0.2, k=2, rel_floor=0) == 0.4
    one_seed = build_entries([[{"family": "f", "params": {}, "metric": "mmd_rbf", "value": 0.3, "seed": 0}]])
    (entry,) = one_seed.values()
    assert (entry.n, entry.sd, entry.tol) == (1, None, None)  # the class rule applies
    two = {"family": "f", "params": {}, "metric": "mmd_rbf"}
    two_seeds = build_entries([[{**two, "value": 0.3, "seed": 0}, {**two, "value": 0.5, "seed": 1}]])
    (entry,) = two_seeds.values()
    assert entry.n == 2 and entry.sd > 0 and entry.tol is None  # sd over two seeds is no tolerance: class rule
    ratio = {"family": "f", "params": {}, "metric": "param_ratio"}  # exact class: no change allowed
    agree = build_entries([[{**ratio, "value": 0.19650786861736252, "seed": s} for s in (0, 1, 2)]])
    (entry,) = agree.values()
    # Agreeing seeds give their value exactly (a size_factors param_ratio for which sum / 3 is one ulp off).
    assert entry.mean == 0.19650786861736252 and sum([entry.mean] * 3) / 3 != entry.mean


def test_rounding_never_tightens():
    for x in (0.123456, 3.0, 1e-7 / 3, 987654.3, 0.1 + 0.2):
        rounded = _round_up(x)
        assert x * (1 - 1e-9) <= rounded <= x * 1.01 and float(f"{rounded:.3g}") == rounded
    assert _round_up(3.0) == 3.0 and _round_up(0.0) == 0.0


def test_later_sources_replace_earlier_ones_per_key_and_seed():
    """An old baseline (seed 0, no cells) pooled with a seeds run: the run's seeds replace the old seed-0 value;
    keys only the old baseline has stay, with one seed and no cell."""
    old = [
        {"family": "f", "params": {"c": 1}, "metric": "mmd_rbf", "value": 100.0, "seed": 0},
        {"family": "f", "params": {"c": 2}, "metric": "mmd_rbf", "value": 7.0, "seed": 0},
    ]
    new = [
        {"family": "f", "cell": f"b.py::t[x-seed{s}]", "params": {"c": 1}, "metric": "mmd_rbf", "value": v, "seed": s}
        for s, v in ((0, 1.0), (1, 2.0), (2, 3.0))
    ]
    entries = build_entries([old, new])
    fresh, kept = entries["f", '{"c": 1}', "mmd_rbf"], entries["f", '{"c": 2}', "mmd_rbf"]
    assert (fresh.mean, fresh.n, fresh.tol, fresh.cells) == (2.0, 3, 3.0, ("b.py::t[x]",))
    assert (kept.mean, kept.n, kept.tol, kept.cells) == (7.0, 1, None, ())


def test_file_round_trip_and_size(tmp_path, seeds_run):
    rows = [json.loads(line) for line in (seeds_run / RESULTS_FILE).read_text().splitlines()]
    path, written = write_baseline([("seeds", rows)], tmp_path)
    assert path == tmp_path / BASELINE_FILE and find_baseline_file(tmp_path) == path
    assert find_baseline_file(seeds_run) is None  # a run directory is not a baseline
    read = read_baseline(path)
    assert read.entries == written.entries and read.header["sd_multiplier"] == 3.0
    assert read.header["sources"] == [{"path": "seeds", "rows": len(rows), "seeds": [0, 1, 2]}]
    assert path.stat().st_size < MAX_BYTES
    with pytest.raises(ValueError, match="mix profiles"):
        write_baseline([("a", rows), ("b", [{**rows[0], "profile": "standard"}])], tmp_path)


# --- the gate end to end, through the command line -----------------------------------------------------------


@pytest.fixture(scope="module")
def baseline_dir(tmp_path_factory, seeds_run) -> Path:
    out = tmp_path_factory.mktemp("committed") / "baseline"
    assert main(["baseline", str(seeds_run), "--out", str(out)]) == 0
    return out


def nightly_run(root: Path, name: str, *, worse: bool = False, drop: str | None = None, selected=tuple(CELLS)):
    """A plain (seed 0) run of the matrix as the nightly makes it: ``worse`` pushes b128's mmd_rbf just past its
    tolerance (mean 2 + tol 3), ``drop`` loses one cell's rows, ``selected`` are the configs the run selected
    (None: no selection record)."""
    rows = []
    for config in CELLS:
        if config == drop:
            continue
        values = {metric: vals[0] for metric, vals in SEED_VALUES[config].items()}
        if worse and config == "b128":
            values["mmd_rbf"] = 2.0 + 3.0 * 1.05
        rows += cell_rows(config, 0, False, name, values)
    return write_run(root / name, rows, None if selected is None else [CELLS[c] for c in selected])


def test_unchanged_run_passes(tmp_path, baseline_dir, capsys):
    current = nightly_run(tmp_path, "unchanged")
    assert main(["compare", str(baseline_dir), str(current)]) == 0
    out = capsys.readouterr().out
    assert out.rstrip().endswith("OK") and "±3 (n=3)" in out  # b128 mmd_rbf: seed 0 (1.0) is within 2 +- 3


def test_a_run_at_other_threads_is_told_so(tmp_path, baseline_dir, capsys):
    """The baseline records the threads its CPU values were computed with (timing rows do not count); compare
    says when the current run's differ, and judges the values as usual."""
    threads = torch.get_num_threads()
    assert read_baseline(baseline_dir / BASELINE_FILE).header["threads"] == [threads]
    current = nightly_run(tmp_path, "other-threads")
    rows = [json.loads(line) for line in (current / RESULTS_FILE).read_text().splitlines()]
    for row in rows:
        row["provenance"]["threads"] = threads + 3 if row["metric"] != "epoch_seconds" else threads
    assert computed_with_threads(rows) == [threads + 3]
    (current / RESULTS_FILE).write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
    assert main(["compare", str(baseline_dir), str(current)]) == 0
    out = capsys.readouterr().out
    assert f"computed with [{threads + 3}] torch thread(s), the baseline's with [{threads}]" in out
    assert out.rstrip().endswith("OK")


def test_injected_regression_fails_and_is_named(tmp_path, baseline_dir, capsys):
    current = nightly_run(tmp_path, "worse", worse=True)
    assert main(["compare", str(baseline_dir), str(current)]) == 1
    out = capsys.readouterr().out
    failing = [line for line in out.splitlines() if line.startswith("REGRESSION ")]
    assert len(failing) == 1 and "mmd_rbf" in failing[0] and "config=b128" in failing[0]
    # the same move is inside a looser override
    assert main(["compare", str(baseline_dir), str(current), "--metric-tolerance", "mmd_rbf=2"]) == 0


def test_lost_rows_of_a_selected_cell_fail(tmp_path, baseline_dir, capsys):
    current = nightly_run(tmp_path, "lost", drop="b1280")  # b1280 selected, but its rows are gone
    assert main(["compare", str(baseline_dir), str(current)]) == 1
    out = capsys.readouterr().out
    missing = [line for line in out.splitlines() if line.startswith("MISSING ")]
    assert len(missing) == 3 and all("config=b1280" in line for line in missing)  # its 3 gated metrics
    assert "0 metric(s) failed, 3 row(s) missing" in out


def test_rows_of_an_unselected_cell_are_excluded(tmp_path, baseline_dir, capsys):
    current = nightly_run(tmp_path, "narrow", drop="b1280", selected=("b128",))  # e.g. nox -s nightly -- -k b128
    assert main(["compare", str(baseline_dir), str(current)]) == 0
    assert "excluded by the selection (not failing): batch_configs 3" in capsys.readouterr().out
    no_record = nightly_run(tmp_path, "no-record", drop="b1280", selected=None)
    assert main(["compare", str(baseline_dir), str(no_record)]) == 1  # no record: every missing row fails


def test_old_results_baseline_still_works_and_converts(tmp_path, seeds_run, capsys):
    """An old-format baseline (rows cut to family/params/metric/value/seed/profile, no cells) still compares, and
    pools with a seeds run into the new format; a new baseline is not accepted as a run to pool."""
    old = tmp_path / "old"
    old.mkdir()
    rows = [json.loads(line) for line in (seeds_run / RESULTS_FILE).read_text().splitlines()]
    keep = ("family", "params", "metric", "value", "seed", "profile")
    cut = [{k: r[k] for k in keep} for r in rows if r["seed"] == 0 and not r.get("artifact")]
    cut.append({"family": FAMILY, "params": {"config": "gone"}, "metric": "mmd_rbf", "value": 1.0, "seed": 0,
                "profile": "smoke"})  # fmt: skip
    (old / RESULTS_FILE).write_text("".join(json.dumps(r) + "\n" for r in cut))
    current = nightly_run(tmp_path, "current")
    # the 'gone' key has no cell: it fails as its family has selected cells
    assert main(["compare", str(old), str(current)]) == 1
    assert "MISSING batch_configs [config=gone] mmd_rbf" in capsys.readouterr().out
    out = tmp_path / "new"
    assert main(["baseline", str(old / RESULTS_FILE), str(seeds_run), "--out", str(out)]) == 0
    entries = read_baseline(out / BASELINE_FILE).entries
    assert entries[row_key({"family": FAMILY, "params": {"config": "gone"}, "metric": "mmd_rbf"})].n == 1
    assert {e.n for k, e in entries.items() if "gone" not in k[1]} == {3}
    assert main(["baseline", str(out), "--out", str(tmp_path / "again")]) == 2  # means only: nothing to pool
    assert "is (or holds) a baseline file" in capsys.readouterr().err
    shutil.copy(old / RESULTS_FILE, out / RESULTS_FILE)  # both formats in one directory: baseline.jsonl wins
    capsys.readouterr()
    assert main(["compare", str(out), str(current)]) == 1
    assert "±3 (n=3)" in capsys.readouterr().out


def test_baseline_bad_input_exits_2(tmp_path, seeds_run, capsys):
    assert main(["baseline", str(tmp_path / "missing"), "--out", str(tmp_path / "b")]) == 2
    assert main(["baseline", str(seeds_run), "--out", str(tmp_path / "b"), "--sd-multiplier", "0"]) == 2
    assert main(["baseline", str(seeds_run)]) == 2  # --out is required
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / BASELINE_FILE).write_text('{"format": "diffbench-baseline", "version": 1}\n{"family": "f"}\n')
    assert main(["compare", str(bad), str(seeds_run)]) == 2
    assert "malformed baseline line" in capsys.readouterr().err

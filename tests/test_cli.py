"""The ``diffbench`` command line, called through ``main([...])``: report rebuild/merge and regression compare."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from diffbench.cli import COMMANDS, main
from diffbench.results import ARRAYS_DIR, FAILURES_FILE, RESULTS_FILE, read_rows


def write_run(run_dir: Path, run_id: str, mmd_scale: float = 1.0, failed_cell: str | None = None) -> Path:
    """A small batch_configs run: 2 configs x 3 epochs of mmd_rbf / modes_covered, a samples array per config
    at the final epoch, and optionally one failed cell. ``mmd_scale`` multiplies every mmd_rbf value."""
    rows = []
    (run_dir / ARRAYS_DIR).mkdir(parents=True)
    for k, config in enumerate(("b128_lr1e-04", "b1280_sqrt")):
        params = {"config": config, "batch_size": 128 * 10**k, "lr": 1e-4, "lr_rule": ("none", "sqrt")[k]}
        for epoch in (1, 2, 3):
            for metric, value in (("mmd_rbf", mmd_scale * 0.1 / epoch), ("modes_covered", 8.0)):
                rows.append(
                    {
                        "family": "batch_configs",
                        "cell": f"bench::t[{config}-{epoch}]",
                        "metric": metric,
                        "params": {**params, "epoch": epoch},
                        "value": value,
                        "seed": 0,
                        "device": "cpu",
                        "profile": "smoke",
                        "run_id": run_id,
                        "versions": {"torch": "2.x"},
                    }
                )
        artifact = f"{ARRAYS_DIR}/samples_{config}.npy"  # the same name in every run: merging must keep both
        np.save(run_dir / artifact, np.full((10, 2), float(k)))
        rows.append({**rows[-1], "metric": "samples", "value": 10.0, "artifact": artifact})
    (run_dir / RESULTS_FILE).write_text("".join(json.dumps(r) + "\n" for r in rows))
    if failed_cell:
        (run_dir / FAILURES_FILE).write_text(json.dumps([{"cell": failed_cell, "family": "cfg", "message": "boom"}]))
    return run_dir


@pytest.fixture
def runs(tmp_path) -> dict[str, Path]:
    return {
        "base": write_run(tmp_path / "base", "base"),
        "worse": write_run(tmp_path / "worse", "worse", mmd_scale=1.5),
        "better": write_run(tmp_path / "better", "better", mmd_scale=0.5, failed_cell="bench_cfg.py::t[w7]"),
    }


# --- compare ----------------------------------------------------------------------------------------------


def test_compare_run_with_itself_passes(runs, capsys):
    assert main(["compare", str(runs["base"]), str(runs["base"])]) == 0
    out = capsys.readouterr().out
    assert "0 regression(s)" in out and out.rstrip().endswith("OK")
    assert (runs["base"] / "compare.md").is_file() and (runs["base"] / "compare.csv").is_file()


def test_compare_flags_worse_mmd(runs, capsys, tmp_path):
    out_dir = tmp_path / "cmp"
    assert main(["compare", str(runs["base"]), str(runs["worse"]), "--out", str(out_dir)]) == 1
    out = capsys.readouterr().out
    failing = [line for line in out.splitlines() if line.startswith("REGRESSION ")]
    assert len(failing) == 6 and all("mmd_rbf" in line for line in failing)  # 2 configs x 3 epochs
    assert "+50%" in failing[0]
    assert "REGRESSION" in (out_dir / "compare.md").read_text()
    assert "regression" in (out_dir / "compare.csv").read_text()


def test_compare_accepts_results_files_and_better_runs(runs):
    assert main(["compare", str(runs["base"] / RESULTS_FILE), str(runs["better"] / RESULTS_FILE)]) == 0


def test_metric_tolerance_overrides_default(runs):
    worse = str(runs["worse"])
    assert main(["compare", str(runs["base"]), worse, "--metric-tolerance", "mmd_rbf=0.6"]) == 0
    assert main(["compare", str(runs["base"]), worse, "--tolerance", "0.6"]) == 0
    assert main(["compare", str(runs["base"]), worse, "--metric-tolerance", "mmd_*=0.4"]) == 1


def test_compare_bad_input_exits_2(runs, tmp_path, capsys):
    missing = tmp_path / "no_such_run"
    assert main(["compare", str(missing), str(runs["base"])]) == 2
    assert str(missing) in capsys.readouterr().err
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert main(["compare", str(runs["base"]), str(empty)]) == 2
    assert "no result rows" in capsys.readouterr().err
    assert main(["compare", str(runs["base"]), str(runs["base"]), "--metric-tolerance", "mmd_rbf"]) == 2
    assert "NAME=TOL" in capsys.readouterr().err
    assert main(["compare", str(runs["base"]), str(runs["base"]), "--tolerance", "-1"]) == 2


# --- report -----------------------------------------------------------------------------------------------


def test_report_rebuilds_in_place(runs, capsys):
    assert main(["report", str(runs["base"])]) == 0
    assert capsys.readouterr().out.strip() == str(runs["base"] / "report.md")
    assert (runs["base"] / "index.html").is_file() and (runs["base"] / "summary.csv").is_file()


def test_report_merges_runs_and_their_arrays(runs, tmp_path, capsys):
    out = tmp_path / "merged"
    assert main(["report", str(runs["base"]), str(runs["better"]), "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out / "report.md")
    rows = read_rows([out / RESULTS_FILE])
    assert {r["run_id"] for r in rows} == {"base", "better"}
    artifacts = {r["artifact"] for r in rows if "artifact" in r}
    assert len(artifacts) == 4 and all((out / a).is_file() for a in artifacts)  # same names, both kept
    assert "bench_cfg.py::t[w7]" in (out / "report.md").read_text()  # failures merged too
    assert (out / "figures" / "batch_configs_samples.png").is_file()
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]  # every write was published whole


def test_report_bad_input_exits_2(runs, tmp_path, capsys):
    not_a_run = tmp_path / "just_a_dir"
    not_a_run.mkdir()
    assert main(["report", str(not_a_run)]) == 2
    assert f"not a run directory: {not_a_run}" in capsys.readouterr().err
    assert main(["report", str(runs["base"]), str(tmp_path / "missing")]) == 2
    assert "missing" in capsys.readouterr().err
    assert main(["report", str(runs["base"]), "--out", str(runs["better"])]) == 2  # would overwrite a run


def test_usage_errors_exit_2_and_help_exits_0(capsys):
    assert main([]) == 2
    assert main(["no-such-command"]) == 2
    assert main(["--help"]) == 0
    assert {"report", "compare"} <= set(COMMANDS) and "report" in capsys.readouterr().out

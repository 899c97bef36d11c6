"""Result rows: fields, provenance, optional context and artifact records, atomic arrays and merges."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from diffbench.provenance import row_provenance
from diffbench.results import ARRAYS_DIR, PARTS_DIR, RESULTS_FILE, RowWriter, load_run, make_row, merge_parts

BASE = dict(
    family="quality",
    cell="benchmarks/bench_quality.py::test_mmd[mlp]",
    params={"model": "mlp", "steps": np.int64(50)},
    metric="mmd_rbf",
    value=0.25,
    seed=0,
    device="cpu",
    profile="smoke",
    run_id="run-1",
)


def test_row_fields_and_provenance_of_the_writer():
    row = make_row(**BASE)
    assert row["params"] == {"model": "mlp", "steps": 50} and type(row["params"]["steps"]) is int
    assert row["provenance"] == {**row_provenance(), "threads": torch.get_num_threads()}
    assert set(row["provenance"]) == {"git_sha", "git_dirty", "host", "threads"}
    assert {"torch", "numpy", "python", "diffbench"} <= set(row["versions"])
    assert not {"artifact", "context", "artifacts"} & set(row)  # optional fields only when given
    json.dumps(row)


def test_context_and_artifacts_are_kept_apart_from_params():
    record = {"kind": "runs", "key": "0123456789abcdef", "version": 2, "git_sha": "a" * 40, "host": "h"}
    context = {"extractor": "inception", "fingerprint": "sha256:abc", "dims": np.int32(2048)}
    row = make_row(**BASE, context=context, artifacts=[record])
    assert row["context"] == {"extractor": "inception", "fingerprint": "sha256:abc", "dims": 2048}
    assert row["artifacts"] == [record]
    assert row["params"] == make_row(**BASE)["params"]  # the same cell's identity with or without context
    assert json.loads(json.dumps(row)) == row


def test_non_finite_values_become_null():
    assert make_row(**{**BASE, "value": math.nan})["value"] is None
    assert make_row(**{**BASE, "value": math.inf})["value"] is None


def test_save_array_is_atomic_and_round_trips(tmp_path):
    writer = RowWriter(tmp_path, "main-1")
    array = np.arange(12, dtype=np.float32).reshape(3, 4)
    rel = writer.save_array("bench.py::t[a/b]-samples", array)
    assert rel == f"{ARRAYS_DIR}/bench.py__t_a_b_-samples.npy"
    assert np.array_equal(np.load(tmp_path / rel), array)
    assert [p.name for p in (tmp_path / ARRAYS_DIR).iterdir()] == [rel.split("/")[-1]]


def test_merge_parts_writes_sorted_rows_and_no_temp_files(tmp_path):
    # two cells (one attempt each: merge keeps one attempt per cell), written by two workers
    rows = [make_row(**{**BASE, "metric": m, "cell": f"bench.py::t[{m}]"}) for m in ("w2", "mmd_rbf")]
    for i, row in enumerate(rows):
        RowWriter(tmp_path, f"gw{i}-1").write(row)
    merged = merge_parts(tmp_path)
    assert [r["metric"] for r in merged] == ["mmd_rbf", "w2"]
    assert load_run(tmp_path) == merged
    assert sorted(p.name for p in tmp_path.iterdir()) == [PARTS_DIR, RESULTS_FILE]


def test_load_run_without_rows_names_the_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        load_run(tmp_path)


def test_two_arrays_of_one_name_in_a_cell_are_kept_apart_by_their_params(tmp_path):
    from diffbench.cache import ArtifactCache
    from diffbench.profiles import get_profile
    from diffbench.pytest_plugin import Recorder

    record = Recorder(
        RowWriter(tmp_path, "main"),
        family="snr_paths",
        cell="bench.py::t[c]",
        profile=get_profile("smoke"),
        device="cpu",
        run_id="run-1",
        cache=ArtifactCache(tmp_path / "cache"),
    )
    record.array("error_heatmap", np.zeros((3, 2, 2)), convention="seed")
    record.array("error_heatmap", np.ones((3, 2, 2)), convention="derived")
    merge_parts(tmp_path)
    rows = {row["params"]["convention"]: row for row in load_run(tmp_path)}
    assert rows["seed"]["artifact"] == f"{ARRAYS_DIR}/bench.py__t_c_-error_heatmap.npy"  # the first keeps its name
    assert rows["seed"]["artifact"] != rows["derived"]["artifact"]
    assert np.load(tmp_path / rows["seed"]["artifact"]).sum() == 0
    assert np.load(tmp_path / rows["derived"]["artifact"]).sum() == 12

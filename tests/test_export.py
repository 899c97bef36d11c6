"""``diffbench export-samples``: PNG folders for pytorch-fid from a run directory or a .npy file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from diffbench.cli import main
from diffbench.data import load_dataset
from diffbench.results import ARRAYS_DIR, RESULTS_FILE


def write_run(run_dir: Path, arrays: dict[str, np.ndarray]) -> Path:
    """A run directory whose rows point at ``arrays`` (saved under arrays/) plus one row without an artifact."""
    (run_dir / ARRAYS_DIR).mkdir(parents=True)
    rows = [{"family": "cfg", "cell": "c", "metric": "fid", "value": 1.0, "params": {}}]
    for name, array in arrays.items():
        np.save(run_dir / ARRAYS_DIR / f"{name}.npy", array)
        rows.append({**rows[0], "metric": name, "artifact": f"{ARRAYS_DIR}/{name}.npy"})
    (run_dir / RESULTS_FILE).write_text("".join(json.dumps(r) + "\n" for r in rows))
    return run_dir


def pngs(directory: Path) -> list[Image.Image]:
    return [Image.open(p) for p in sorted(directory.glob("*.png"))]


def test_run_dir_export_with_real_images(tmp_path, capsys):
    rng = np.random.default_rng(0)
    run = write_run(
        tmp_path / "run",
        {
            "grey": rng.uniform(-1, 1, (5, 1, 16, 16)).astype(np.float32),
            "colour": rng.uniform(-1, 1, (4, 3, 16, 16)).astype(np.float32),
            "gmm_points": rng.standard_normal((10, 2)),  # not images: skipped
        },
    )
    out = tmp_path / "out"
    assert main(["export-samples", str(run), str(out), "--real", "digits"]) == 0
    grey, colour, real = pngs(out / "grey"), pngs(out / "colour"), pngs(out / "real")
    assert len(grey) == 5 and {(im.size, im.mode) for im in grey} == {((16, 16), "L")}
    assert len(colour) == 4 and {(im.size, im.mode) for im in colour} == {((16, 16), "RGB")}
    assert len(real) == len(load_dataset("digits", "test")) and real[0].size == (16, 16)
    assert not (out / "gmm_points").exists()
    assert f"python -m pytorch_fid {out / 'real'} {out / 'grey'}" in capsys.readouterr().out


def test_npy_export_maps_range_to_8_bit_and_respects_limit(tmp_path):
    images = np.zeros((6, 1, 8, 8), np.float32)
    images[:, :, 0, 0], images[:, :, 0, 1] = -1.0, 1.0
    np.save(tmp_path / "samples.npy", images)
    assert main(["export-samples", str(tmp_path / "samples.npy"), str(tmp_path / "out"), "--limit", "2"]) == 0
    written = pngs(tmp_path / "out" / "samples")
    assert len(written) == 2
    pixels = np.asarray(written[0])
    assert pixels.shape == (8, 8) and pixels.dtype == np.uint8
    assert (pixels[0, 0], pixels[0, 1], pixels[1, 1]) == (0, 255, 128)


def test_bad_sources_fail_clearly(tmp_path, capsys):
    out = str(tmp_path / "out")
    assert main(["export-samples", str(tmp_path / "missing"), out]) == 2
    assert "no such run directory or .npy file" in capsys.readouterr().err

    run = write_run(tmp_path / "run", {"points": np.zeros((10, 2))})
    assert main(["export-samples", str(run), out]) == 2
    err = capsys.readouterr().err
    assert "no image arrays [N, C, H, W]" in err and "arrays/points.npy" in err

    np.save(tmp_path / "flat.npy", np.zeros((3, 16, 16)))
    assert main(["export-samples", str(tmp_path / "flat.npy"), out]) == 2
    assert "shape [3, 16, 16], not images" in capsys.readouterr().err

    np.save(tmp_path / "bytes.npy", np.full((3, 1, 8, 8), 200.0))
    assert main(["export-samples", str(tmp_path / "bytes.npy"), out]) == 2
    assert "values in [200, 200]" in capsys.readouterr().err
    assert not Path(out).exists() or not any(Path(out).rglob("*.png"))  # nothing half-written


def test_existing_output_is_not_overwritten(tmp_path, capsys):
    np.save(tmp_path / "s.npy", np.zeros((2, 1, 8, 8)))
    (tmp_path / "out" / "s").mkdir(parents=True)
    (tmp_path / "out" / "s" / "keep.txt").write_text("mine")
    assert main(["export-samples", str(tmp_path / "s.npy"), str(tmp_path / "out")]) == 2
    assert "already exist" in capsys.readouterr().err
    assert (tmp_path / "out" / "s" / "keep.txt").read_text() == "mine"

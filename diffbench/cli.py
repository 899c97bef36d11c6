"""The ``diffbench`` command: ``diffbench report`` rebuilds (or merges) reports, ``diffbench compare`` checks a run
against a baseline, ``diffbench baseline`` writes one (seed means, tolerances from the seed spread),
``diffbench export-samples`` writes image samples as PNG folders for ``python -m pytorch_fid``,
``diffbench fid`` computes pytorch-fid's FID with the sample sizes, an interval and KID beside it,
``diffbench verify-determinism`` checks that cached size_factors models sample bitwise-reproducibly from one seed,
``diffbench submit`` runs the matrix as shards of a SLURM (or local) job array and ``diffbench status`` follows it.

Exit codes: 0 success / no regression, 1 regression or missing row (compare), 2 bad input (the message names it).

Each subcommand is one entry in ``COMMANDS``: a help line, a function adding its arguments, and a function
``run(args) -> exit code``. Adding a subcommand is adding one entry (see the export-samples hook below).
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import shutil
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from diffbench.errors import UsageError
from diffbench.io import atomic_path, atomic_write_text
from diffbench.results import (
    ARRAYS_DIR,
    FAILURES_FILE,
    PARTS_DIR,
    RESULTS_FILE,
    load_run,
    merge_parts,
    read_rows,
    safe_name,
)

if TYPE_CHECKING:
    import torch
    from torch import nn

    from diffbench.cache import ArtifactCache
    from diffbench.determinism import DeterminismReport
    from diffbench.profiles import Profile
    from diffbench.schedules import NoiseSchedule


@dataclass(frozen=True)
class Command:
    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
    # What the arguments after `--` are, for a command that passes them on (it gets them as args.passthrough).
    passthrough: str | None = None


# --- report -----------------------------------------------------------------------------------------------


def check_run_dir(path: Path) -> Path:
    """``path`` if it is a run directory (holds ``results.jsonl`` or ``parts/*.jsonl``), else a UsageError."""
    if not path.is_dir():
        raise UsageError(f"not a run directory: {path} (no such directory)")
    if not (path / RESULTS_FILE).is_file() and not any((path / PARTS_DIR).glob("*.jsonl")):
        raise UsageError(f"not a run directory: {path} (it has no {RESULTS_FILE} or {PARTS_DIR}/*.jsonl)")
    return path


def merge_runs(run_dirs: Sequence[Path], out: Path) -> tuple[list[dict], list[dict]]:
    """Copy the rows, failures and arrays of several runs into ``out``; return (rows, failures).

    Each run's arrays go to ``arrays/<run dir name>/...`` (made unique) and the rows' ``artifact`` paths are
    rewritten to match, so two runs that saved arrays under the same name do not overwrite each other.
    """
    from diffbench.report.build import load_failures

    rows, failures, prefixes = [], [], set()
    for run_dir in run_dirs:
        prefix = base = safe_name(run_dir.resolve().name) or "run"
        n = 1
        while prefix in prefixes:
            n += 1
            prefix = f"{base}-{n}"
        prefixes.add(prefix)
        for row in load_run(run_dir):
            if row.get("artifact"):
                parts = Path(row["artifact"]).parts
                parts = parts[1:] if parts and parts[0] == ARRAYS_DIR else parts
                rel = Path(ARRAYS_DIR, prefix, *parts)
                src, dst = run_dir / row["artifact"], out / rel
                if src.is_file() and not dst.exists():
                    with atomic_path(dst) as tmp:  # an interrupted copy must not pass for the array next time
                        shutil.copy2(src, tmp)
                row = {**row, "artifact": rel.as_posix()}
            rows.append(row)
        failures += load_failures(run_dir)
    rows.sort(key=lambda r: (r["family"], r["cell"], r["metric"], r.get("time", "")))
    atomic_write_text(out / RESULTS_FILE, "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
    atomic_write_text(out / FAILURES_FILE, json.dumps(failures, indent=1))
    return rows, failures


def _configure_report(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "run_dirs",
        nargs="+",
        type=Path,
        metavar="RUN_DIR",
        help="run directory (reports/<run_id>) holding results.jsonl or parts/*.jsonl",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="with several runs (or to copy one): where the merged report goes (default reports/merged-<timestamp>)",
    )


def report(args: argparse.Namespace) -> int:
    """One run dir: rebuild its report in place. Several (or ``--out``): merge them into ``--out`` and build."""
    from diffbench.report.build import build_report

    run_dirs = [check_run_dir(p) for p in args.run_dirs]
    if len(run_dirs) == 1 and args.out is None:
        # Merge the part files again: rows written since the last merge (cluster shards still running, or
        # killed before their session's merge) count too.
        rows = merge_parts(run_dirs[0]) if any((run_dirs[0] / PARTS_DIR).glob("*.jsonl")) else None
        print(build_report(run_dirs[0], rows=rows))
        return 0
    out = args.out or Path("reports") / f"merged-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    if out.exists() and any(out.resolve() == p.resolve() for p in run_dirs):
        raise UsageError(f"--out {out} is one of the runs being merged; choose a new directory")
    if (out / RESULTS_FILE).exists():
        raise UsageError(f"--out {out} already holds a run ({RESULTS_FILE}); choose a new directory")
    out.mkdir(parents=True, exist_ok=True)
    rows, failures = merge_runs(run_dirs, out)
    print(build_report(out, rows=rows, failures=failures))
    return 0


# --- compare ----------------------------------------------------------------------------------------------


def load_rows(path: Path) -> list[dict]:
    """Rows of a run directory or of a results.jsonl file; a UsageError names a missing path, an empty file,
    or a row without family/metric."""
    if path.is_file():
        rows = read_rows([path])
    elif path.is_dir():
        rows = load_run(check_run_dir(path))
    else:
        raise UsageError(f"no such run directory or results file: {path}")
    if not rows:
        raise UsageError(f"no result rows in {path}")
    for row in rows:
        missing = [key for key in ("family", "metric") if key not in row]
        if missing:
            raise UsageError(f"malformed row in {path}: missing {', '.join(missing)}: {json.dumps(row)[:200]}")
    return rows


def _tolerance(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"tolerance must be a number >= 0, got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"tolerance must be a number >= 0, got {text!r}")
    return value


def _metric_tolerance(text: str) -> tuple[str, float]:
    name, sep, tol = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=TOL (e.g. mmd_rbf=0.2 or '*_seconds=0.5'), got {text!r}")
    return name, _tolerance(tol)


def _configure_compare(parser: argparse.ArgumentParser) -> None:
    parser.epilog = (
        "A baseline row missing from CURRENT fails unless CURRENT's selection record (selection/*.json, written by "
        "the pytest plugin) shows its cell was not selected; without a record every missing row fails."
    )
    parser.add_argument(
        "baseline",
        type=Path,
        metavar="BASELINE",
        help="a baseline (directory holding baseline.jsonl, or the file), or a run directory / results.jsonl",
    )
    parser.add_argument("current", type=Path, metavar="CURRENT", help="current run directory or results.jsonl")
    parser.add_argument(
        "--tolerance",
        type=_tolerance,
        default=0.1,
        help="default relative tolerance of keys without a seed tolerance in the baseline (default 0.1 = 10%% of "
        "|baseline|)",
    )
    parser.add_argument(
        "--metric-tolerance",
        type=_metric_tolerance,
        action="append",
        default=[],
        metavar="NAME=TOL",
        help="per-metric relative tolerance, overriding the baseline's seed tolerances too; NAME may be a pattern "
        "like '*_seconds'",
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="where compare.md / compare.csv go (default: the CURRENT run directory)"
    )


def load_baseline(path: Path):
    """``({key: BaselineEntry}, threads)`` of a baseline file (``path`` or ``path/baseline.jsonl``), else of the
    rows of a run directory or results.jsonl (the old format: no tolerances; cells when the rows carry them);
    ``threads``: the torch thread counts its CPU values were computed with (empty when not recorded)."""
    from diffbench.report.baseline import find_baseline_file, read_baseline
    from diffbench.report.compare import computed_with_threads, entries_from_rows

    found = find_baseline_file(path) if path.exists() else None
    if found is None:
        rows = load_rows(path)
        return entries_from_rows(rows), computed_with_threads(rows)
    try:
        read = read_baseline(found)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if not read.entries:
        raise UsageError(f"no keys in the baseline {found}")
    return read.entries, list(read.header.get("threads") or [])


def current_selection(current: Path) -> dict[str, str | None] | None:
    """``{node id: family}`` of the cells the CURRENT run selected (its run directory, or the directory of its
    results file; family None where the record names none), None when it left no selection record."""
    from diffbench.results import load_selection, selected_families

    run_dir = current if current.is_dir() else current.parent
    cells = load_selection(run_dir)
    if cells is None:
        return None
    families = selected_families(run_dir)
    return {cell: families.get(cell) for cell in cells}


def compare(args: argparse.Namespace) -> int:
    """Print the delta table, write compare.md/.csv; exit 1 when a metric regressed or a selected baseline row is
    missing."""
    from diffbench.report.compare import compare_runs, computed_with_threads, format_table, write_compare_report

    (baseline, base_threads), current = load_baseline(args.baseline), load_rows(args.current)
    threads = computed_with_threads(current)
    if base_threads and threads and threads != base_threads:
        print(
            f"note: this run's CPU values were computed with {threads} torch thread(s), the baseline's with "
            f"{base_threads}; values can differ beyond a seed tolerance for that reason alone (--threads)"
        )
    selection = current_selection(args.current)
    result = compare_runs(
        baseline, current, tolerance=args.tolerance, tolerances=dict(args.metric_tolerance), selection=selection
    )
    out = args.out or (args.current if args.current.is_dir() else args.current.parent)
    print(format_table(result))
    print(f"report: {write_compare_report(result, out)}")
    if result.failed:
        print(f"REGRESSION: {len(result.regressions)} metric(s) failed, {len(result.missing_failed)} row(s) missing")
    else:
        print("OK")
    return 1 if result.failed else 0


# --- baseline ---------------------------------------------------------------------------------------------


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}") from None
    if not value > 0 or not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value


def _configure_baseline(parser: argparse.ArgumentParser) -> None:
    from diffbench.report.baseline import REL_FLOOR, SD_MULTIPLIER

    parser.epilog = (
        "Per key the mean over seeds and, for default-class keys with >= 2 seeds, the allowed change "
        "max(k * sd, rel_floor * max(|mean|, 1e-3)); keys with one seed keep the registry class rule. Later runs "
        "replace earlier ones per key and seed. See reports/baseline/README.md."
    )
    parser.add_argument(
        "runs",
        nargs="+",
        type=Path,
        metavar="RUN",
        help="run directory or results.jsonl (a --seeds run, several runs to pool, an old baseline's results.jsonl)",
    )
    parser.add_argument("--out", type=Path, required=True, help="directory the baseline.jsonl goes to")
    parser.add_argument(
        "--sd-multiplier", type=_positive, default=SD_MULTIPLIER, metavar="K", help=f"k (default {SD_MULTIPLIER:g})"
    )
    parser.add_argument(
        "--rel-floor",
        type=_tolerance,
        default=REL_FLOOR,
        metavar="F",
        help=f"relative floor of a seed tolerance (default {REL_FLOOR:g})",
    )


def baseline(args: argparse.Namespace) -> int:
    """Write OUT/baseline.jsonl from the runs' rows (seed means and seed-spread tolerances)."""
    from diffbench.report.baseline import MAX_BYTES, find_baseline_file, write_baseline

    sources = []
    for run in args.runs:
        if run.exists() and find_baseline_file(run) is not None:
            raise UsageError(
                f"{run} is (or holds) a baseline file: means only, nothing to pool; give the runs it was built from "
                f"(an old baseline's {RESULTS_FILE} is fine)"
            )
        sources.append((str(run), load_rows(run)))
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        path, written = write_baseline(sources, args.out, k=args.sd_multiplier, rel_floor=args.rel_floor)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    entries = written.entries.values()
    seeded = sum(e.tol is not None for e in entries)
    size = path.stat().st_size
    print(
        f"{path}: {len(written.entries)} keys, {seeded} with a seed tolerance, "
        f"{len(written.entries) - seeded} on the class rule; {size / 1024**2:.2f} MiB"
    )
    if size > MAX_BYTES:
        print(
            f"warning: {path} is over {MAX_BYTES / 1024**2:g} MiB, the limit for the committed baseline",
            file=sys.stderr,
        )
    old = args.out / RESULTS_FILE
    if old.is_file():
        print(f"note: {old} (old format) is still there; compare reads {path.name} first, delete the old file")
    return 0


# --- export-samples ---------------------------------------------------------------------------------------

# Sample arrays are [-1, 1]; sampler round-off beyond it by up to this much is clipped, more is refused.
EXPORT_RANGE_TOLERANCE = 1e-2


def _image_array(path: Path):
    """The array in ``path`` (memory-mapped) if it holds images ``[N, C, H, W]`` with C = 1 or 3, else None."""
    import numpy as np

    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read {path} as a .npy array: {exc}") from None
    return array if array.ndim == 4 and array.shape[1] in (1, 3) and len(array) else None


def sample_arrays(source: Path) -> dict[str, object]:
    """``name -> array`` of every image array in SOURCE: a ``.npy`` file, or a run directory whose rows point
    at arrays under ``arrays/``; a UsageError when there is none."""
    if source.is_file():
        if source.suffix != ".npy":
            raise UsageError(f"SOURCE must be a run directory or a .npy file, got {source}")
        array = _image_array(source)
        if array is None:
            import numpy as np

            shape = list(np.load(source, mmap_mode="r", allow_pickle=False).shape)
            raise UsageError(f"{source} holds an array of shape {shape}, not images [N, C, H, W] with C = 1 or 3")
        return {safe_name(source.stem) or "samples": array}
    if not source.exists():
        raise UsageError(f"no such run directory or .npy file: {source}")
    run_dir = check_run_dir(source)
    found: dict[str, object] = {}
    others: list[str] = []
    for rel in sorted({row["artifact"] for row in load_run(run_dir) if row.get("artifact")}):
        path = run_dir / rel
        array = _image_array(path) if path.is_file() else None
        if array is None:
            others.append(rel if path.is_file() else f"{rel} (missing)")
            continue
        parts = Path(rel).with_suffix("").parts
        found[safe_name("-".join(parts[1:] if parts[0] == ARRAYS_DIR else parts))] = array
    if not found:
        seen = f"only {', '.join(others[:5])}{' ...' if len(others) > 5 else ''}" if others else "no arrays"
        raise UsageError(f"no image arrays [N, C, H, W] (C = 1 or 3) in {run_dir}: its rows reference {seen}")
    return found


def _to_uint8(images, name: str):
    """``[N, C, H, W]`` in ``[-1, 1]`` -> ``[N, H, W, C]`` uint8, ``round((x + 1) * 127.5)``."""
    import numpy as np

    x = np.asarray(images, dtype=np.float64)
    if not np.isfinite(x).all():
        raise UsageError(f"{name} contains NaN or inf")
    lo, hi = float(x.min()), float(x.max())
    if lo < -1 - EXPORT_RANGE_TOLERANCE or hi > 1 + EXPORT_RANGE_TOLERANCE:
        raise UsageError(f"{name} has values in [{lo:.4g}, {hi:.4g}]; images must be in [-1, 1]")
    return np.clip(np.rint((x + 1) * 127.5), 0, 255).astype(np.uint8).transpose(0, 2, 3, 1)


def write_pngs(images, out: Path, name: str) -> int:
    """One 8-bit PNG per image (grey or RGB) into ``out``, which must not exist yet (or be empty); written into
    a temporary directory first, so ``out`` is either complete or absent."""
    from PIL import Image

    pixels = _to_uint8(images, name)
    with atomic_path(out) as tmp:
        tmp.mkdir()
        for i, image in enumerate(pixels):
            Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(tmp / f"{i:06d}.png")
        if out.exists():
            out.rmdir()  # an empty target: not every platform's rename replaces a directory
    return len(pixels)


def _configure_export_samples(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", type=Path, metavar="SOURCE", help="run directory or a .npy of images [N, C, H, W]")
    parser.add_argument("out", type=Path, metavar="DIR", help="PNGs go to DIR/<array name>/ (and DIR/real/)")
    parser.add_argument(
        "--real", default=None, metavar="DATASET", help="also export this dataset's test images to DIR/real/"
    )
    parser.add_argument("--limit", type=int, default=None, metavar="N", help="at most N images per exported set")


def export_samples(args: argparse.Namespace) -> int:
    """Write every image array of SOURCE (and optionally a dataset's test split) as PNG folders that
    ``python -m pytorch_fid DIR/real DIR/<name>`` reads."""
    if args.limit is not None and args.limit < 1:
        raise UsageError(f"--limit must be >= 1, got {args.limit}")
    sets = {name: array[: args.limit] for name, array in sample_arrays(args.source).items()}
    if args.real is not None:
        if "real" in sets:
            raise UsageError(f"{args.source} has an array named 'real', which would collide with --real's DIR/real/")
        sets["real"] = _real_images(args.real, sets)[: args.limit]
    busy = [str(args.out / name) for name in sets if (args.out / name).exists() and any((args.out / name).iterdir())]
    if busy:
        raise UsageError(f"{', '.join(busy)} already exist(s) and is not empty; remove it or choose another DIR")
    for name, images in sets.items():
        count = write_pngs(images, args.out / name, name)
        print(f"{args.out / name}: {count} PNGs")
    if "real" in sets:
        for name in sets:
            if name != "real":
                print(f"python -m pytorch_fid {args.out / 'real'} {args.out / name}")
    return 0


def _real_images(dataset: str, sets: dict):
    """The test split of ``dataset`` at the samples' resolution (when they agree on one)."""
    from diffbench.data import DataConfig, load_dataset

    sizes = {array.shape[-1] for array in sets.values()}
    config = DataConfig(name=dataset, image_size=sizes.pop()) if len(sizes) == 1 else DataConfig(name=dataset)
    try:
        real = load_dataset(config, "test")
    except (ValueError, RuntimeError) as exc:
        raise UsageError(str(exc)) from None
    if real.x.ndim != 4:
        raise UsageError(f"--real {dataset} is not an image dataset (samples of shape {list(real.sample_shape)})")
    return real.x.numpy()


# --- fid: the logic lives in diffbench/fid_cli.py (imported on use: it loads torch and pytorch-fid) ----------


def _configure_fid(parser: argparse.ArgumentParser) -> None:
    from diffbench.fid_cli import configure

    configure(parser)


def fid(args: argparse.Namespace) -> int:
    from diffbench.fid_cli import run

    return run(args)


# --- verify-determinism -----------------------------------------------------------------------------------

# The benchmark cell that trains (and caches) a size_factors model: named for every model the cache lacks.
SIZE_FACTORS_CELL = "benchmarks/bench_size_factors.py::test_noise_prediction"
ALL_MODELS = "all"


class NotCached(LookupError):
    """A requested model has no readable trained run in the cache; the message says what is missing."""


@dataclass(frozen=True)
class DeterminismSubject:
    """A cached model and what :func:`diffbench.determinism.verify_determinism` samples it with: its noise
    schedule, one sample's shape, the per-sample conditioning (labels ``i mod K`` of a class-conditional model,
    else None), the ``x0`` clip its family samples with, and ``artifact``: where its weights were read from."""

    model: nn.Module
    schedule: NoiseSchedule
    sample_shape: tuple[int, ...]
    cond: dict | None
    clip_denoised: float | None
    artifact: str


def size_factors_model_ids(profile: Profile) -> list[str]:
    """The teacher and every student of the profile's size factors, as the size_factors benchmark names them."""
    from diffbench.families.size_factors import TEACHER, student_ids

    return [TEACHER, *student_ids(profile.size_factors.sizes)]


def select_model_ids(text: str, available: Sequence[str]) -> list[str]:
    """``--models``: ``all`` -> ``available``; else the comma-separated ids, each ``teacher`` or
    ``<data|distill>-s<size>`` with size in (0, 1] (written as the benchmark writes it: ``data-s0.50`` ->
    ``data-s0.5``), duplicates dropped. A UsageError names a malformed id and the available ones."""
    from diffbench.families.size_factors import TEACHER, parse_model_id, student_id
    from diffbench.selection import check_size_factor

    if text.strip() == ALL_MODELS:
        return list(available)
    items = [part.strip() for part in text.split(",") if part.strip()]
    if not items:
        raise UsageError(f"--models is empty; available: {', '.join(available)} or {ALL_MODELS}")
    chosen: list[str] = []
    for item in items:
        try:
            mode, size = parse_model_id(item)
            model_id = TEACHER if mode == TEACHER else student_id(mode, check_size_factor(size))
        except ValueError:
            raise UsageError(
                f"unknown model id {item!r}; available: {', '.join(available)} or {ALL_MODELS} "
                "(any <data|distill>-s<size> with size in (0, 1] is accepted too)"
            ) from None
        if model_id not in chosen:
            chosen.append(model_id)
    return chosen


def build_command(model_id: str, profile: Profile, cache_dir: Path | None, data_root: str | None) -> str:
    """The pytest command that trains ``model_id`` into the cache (a distilled student trains its teacher too)."""
    from diffbench.families.size_factors import TEACHER, parse_model_id

    words = ["pytest", f"{SIZE_FACTORS_CELL}[{model_id}]", "--profile", profile.name]
    size = parse_model_id(model_id)[1]
    if model_id != TEACHER and size not in profile.size_factors.sizes:
        words += ["--size-factors", f"{size:g}"]
    if cache_dir is not None:
        words += ["--cache-dir", str(cache_dir)]
    if data_root is not None:
        words += ["--data-root", data_root]
    return shlex.join(words)


def cached_model(
    profile: Profile,
    model_id: str,
    cache: ArtifactCache,
    device: torch.device,
    num_samples: int,
    data_root: str | None = None,
) -> DeterminismSubject:
    """The trained size_factors model ``model_id`` from ``cache`` on ``device`` (eval mode), with labels
    ``i mod K`` for ``num_samples`` samples and the family's ``x0`` clip. Never trains: NotCached when the cache
    has no run for the model's spec (or only an unreadable one, which the benchmark would rebuild)."""
    from diffbench.cache import ArtifactMissingError
    from diffbench.experiments import RUN_RECIPE_VERSION, cached_dataset, class_labels, model_at, num_classes_of
    from diffbench.families.size_factors import IMAGE_CLIP, model_spec

    try:
        spec = model_spec(profile, model_id, data_root)
        data = cached_dataset(spec.data, "train")
    except (OSError, RuntimeError, ValueError) as exc:  # e.g. a torchvision dataset missing under --data-root
        raise UsageError(f"cannot build the spec of {model_id}: {exc}") from None
    path = cache.path("runs", spec, version=RUN_RECIPE_VERSION)
    try:  # checked as the benchmark checks it (checksum, weights-only), never built
        run = cache.load("runs", spec, version=RUN_RECIPE_VERSION)
    except ArtifactMissingError as exc:
        raise NotCached(str(exc)) from None
    labels = class_labels(num_samples, num_classes_of(spec))
    return DeterminismSubject(
        model=model_at(spec, run, spec.train.epochs, device),
        schedule=spec.schedule.build(),
        sample_shape=tuple(data.sample_shape),
        cond=None if labels is None else {"y": labels},
        clip_denoised=IMAGE_CLIP,
        artifact=str(path),
    )


def _finite(value: float) -> float | None:
    """``value``, or None (JSON null) for inf and NaN."""
    return value if math.isfinite(value) else None


def layout_relative(report: DeterminismReport) -> float:
    """``batch_layout_max_abs / sample_max_abs`` (0 when both are 0, inf when only max |x| is)."""
    if report.sample_max_abs > 0:
        return report.batch_layout_max_abs / report.sample_max_abs
    return 0.0 if report.batch_layout_max_abs == 0 else math.inf


def determinism_line(model_id: str, report: DeterminismReport) -> str:
    """One model's printed result: device, both deviations (the layout one also relative to max |x|), verdict."""
    verdict = "deterministic" if report.deterministic else "NOT deterministic"
    return (
        f"{model_id}: device {report.device}, same-seed max|dx| {report.same_seed_max_abs:.3g}, "
        f"batch-layout max|dx| {report.batch_layout_max_abs:.3g} "
        f"({layout_relative(report):.3g} of max|x| {report.sample_max_abs:.3g}), {verdict}"
    )


def determinism_record(report: DeterminismReport, subject: DeterminismSubject) -> dict:
    """One model's JSON record (non-finite numbers as null)."""
    return {
        "deterministic": report.deterministic,
        "same_seed_max_abs": _finite(report.same_seed_max_abs),
        "batch_layout_max_abs": _finite(report.batch_layout_max_abs),
        "batch_layout_relative": _finite(layout_relative(report)),
        "sample_max_abs": _finite(report.sample_max_abs),
        "device": report.device,
        "num_samples": report.num_samples,
        "steps": report.steps,
        "batch_sizes": list(report.batch_sizes),
        "seed": report.seed,
        "eta": report.eta,
        "clip_denoised": subject.clip_denoised,
        "artifact": subject.artifact,
    }


def _configure_verify_determinism(parser: argparse.ArgumentParser) -> None:
    from diffbench.profiles import PROFILES

    parser.epilog = (
        "Each model samples three times from one seed with DDIM: twice in the same batches (must be bitwise "
        "equal) and once in batches of at most 3 (kernel rounding: reported, not judged). Exit codes: 0 every "
        "checked model is deterministic, 1 one is not, 2 bad input or none of the models is cached. Models are "
        "never trained: a missing one is skipped with the pytest command that builds it."
    )
    parser.add_argument("--profile", default="smoke", choices=list(PROFILES), help="scale (default smoke)")
    parser.add_argument(
        "--models",
        default=ALL_MODELS,
        metavar="IDS",
        help="comma-separated model ids (teacher, data-s0.5, distill-s0.05, ...) or 'all' (default: all)",
    )
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N, mps or auto")
    parser.add_argument("--samples", type=int, default=16, help="samples per run (default 16)")
    parser.add_argument(
        "--steps", type=int, default=None, help="DDIM steps (default: the profile's size_factors sampling_steps)"
    )
    parser.add_argument("--seed", type=int, default=0, help="noise seed (default 0)")
    parser.add_argument("--eta", type=float, default=0.0, help="DDIM eta in [0, 1] (default 0)")
    parser.add_argument(
        "--cache",
        type=Path,
        default=None,
        metavar="DIR",
        help="artifact cache (default: $DIFFBENCH_CACHE or ~/.cache/diffbench)",
    )
    parser.add_argument(
        "--data-root", default=None, metavar="DIR", help="torchvision data of the standard/paper profiles' specs"
    )
    parser.add_argument("--json", type=Path, default=None, metavar="OUT", help="also write the results to OUT")


def verify_determinism_command(args: argparse.Namespace) -> int:
    """Check every selected cached size_factors model with ``verify_determinism``; exit 1 if one is not
    deterministic (same seed, same device, different samples), 2 if none is cached."""
    from diffbench.cache import ArtifactCache
    from diffbench.determinism import verify_determinism
    from diffbench.devices import resolve_device
    from diffbench.profiles import get_profile

    profile = get_profile(args.profile)
    scale = profile.size_factors
    steps = scale.sampling_steps if args.steps is None else args.steps
    if args.samples < 1:
        raise UsageError(f"--samples must be >= 1, got {args.samples}")
    if not 1 <= steps <= scale.diffusion_steps:
        raise UsageError(f"--steps must be in [1, {scale.diffusion_steps}] (profile {profile.name}), got {steps}")
    if not 0 <= args.eta <= 1:
        raise UsageError(f"--eta must be in [0, 1], got {args.eta}")
    if args.seed < 0:
        raise UsageError(f"--seed must be >= 0, got {args.seed}")
    if args.json is not None and args.json.is_dir():
        raise UsageError(f"--json {args.json} is a directory; give a file name")
    try:
        device = resolve_device(args.device)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    model_ids = select_model_ids(args.models, size_factors_model_ids(profile))
    cache = ArtifactCache(args.cache)
    print(
        f"verify-determinism: profile {profile.name}, {args.samples} samples, {steps} DDIM steps, seed {args.seed}, "
        f"eta {args.eta:g}, cache {cache.root}"
    )
    results: dict[str, dict] = {}
    skipped: dict[str, str] = {}
    for model_id in model_ids:
        try:
            subject = cached_model(profile, model_id, cache, device, args.samples, args.data_root)
        except NotCached as exc:
            skipped[model_id] = str(exc)
            command = build_command(model_id, profile, args.cache, args.data_root)
            print(f"{model_id}: skipped, {exc}; build it with: {command}")
            continue
        subject.model.eval()
        report = verify_determinism(
            subject.model,
            subject.schedule,
            subject.sample_shape,
            num_samples=args.samples,
            steps=steps,
            seed=args.seed,
            eta=args.eta,
            device=device,
            cond=subject.cond,
            clip_denoised=subject.clip_denoised,
        )
        results[model_id] = determinism_record(report, subject)
        print(determinism_line(model_id, report))
    if not results:
        raise UsageError(
            f"none of the requested models ({', '.join(model_ids)}) is in the cache {cache.root}; "
            "build them with the pytest commands printed above"
        )
    failed = [model_id for model_id, record in results.items() if not record["deterministic"]]
    if args.json is not None:
        document = {
            "profile": profile.name,
            "device": str(device),
            "cache": str(cache.root),
            "deterministic": not failed,
            "models": results,
            "skipped": skipped,
        }
        atomic_write_text(args.json, json.dumps(document, indent=1, sort_keys=True) + "\n")
        print(f"json: {args.json}")
    checked = f"{len(results)} model(s) checked, {len(skipped)} skipped (not cached)"
    print(f"NOT DETERMINISTIC: {', '.join(failed)} ({checked})" if failed else f"OK: deterministic ({checked})")
    return 1 if failed else 0


# --- submit / status (cluster runs: diffbench/cluster.py) -------------------------------------------------


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _configure_submit(parser: argparse.ArgumentParser) -> None:
    from diffbench.profiles import PROFILES

    parser.usage = "diffbench submit [options] [PATH ...] [-- PYTEST_ARGS ...]"
    parser.epilog = (
        "The cells are what `pytest PATH -k EXPR -m EXPR PYTEST_ARGS` selects (matrix cells only; PATH defaults to "
        "benchmarks/); cells that need one trained artifact share a shard. Every shard runs `pytest <its node ids> "
        "--run-id <DIR name> --report-dir <DIR parent> --resume PYTEST_ARGS` here. Run submit again on the same "
        "--run-dir to resubmit the shards with unfinished cells (a killed or failed shard). With --wait (the local "
        "executor's default) the run is merged and its report built; exit 1 if a cell failed or did not finish."
    )
    parser.add_argument("paths", nargs="*", metavar="PATH", help="test paths (default: benchmarks)")
    parser.add_argument("-k", dest="keyword", default=None, metavar="EXPR", help="pytest -k expression")
    parser.add_argument("-m", dest="markers", default=None, metavar="EXPR", help="pytest -m expression")
    parser.add_argument("--run-dir", type=Path, required=True, metavar="DIR", help="the run (DIR name = run id)")
    parser.add_argument("--shards", type=_positive_int, default=None, metavar="N", help="jobs (new runs only)")
    parser.add_argument(
        "--executor", choices=("local", "slurm"), default=None, help="default: local (resubmission: the run's last)"
    )
    parser.add_argument("--profile", default=None, choices=list(PROFILES), help="the matrix scale (pytest's default)")
    parser.add_argument(
        "--wait",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="wait for the jobs, then merge and report (default: yes for local, no for slurm)",
    )
    parser.add_argument(
        "--costs-from", type=Path, default=None, metavar="RUN_DIR", help="balance shards by this run's cell durations"
    )
    slurm = parser.add_argument_group("slurm")
    slurm.add_argument("--slurm-partition", default=None, metavar="P")
    slurm.add_argument("--slurm-time", type=_positive_int, default=240, metavar="MIN", help="per job (default 240)")
    slurm.add_argument("--slurm-gpus-per-task", type=_positive_int, default=None, metavar="G")
    slurm.add_argument("--slurm-cpus-per-task", type=_positive_int, default=None, metavar="C")
    slurm.add_argument("--slurm-mem", default=None, metavar="MEM", help="e.g. 32G")
    slurm.add_argument("--slurm-array-parallelism", type=_positive_int, default=None, metavar="N")


def _cluster():
    try:
        from diffbench import cluster
    except ModuleNotFoundError as exc:
        if exc.name != "submitit":
            raise
        raise UsageError("cluster runs need submitit: pip install 'diffbench[cluster]'") from None
    return cluster


def submit_command(args: argparse.Namespace) -> int:
    """Shard the selected cells into one submitit job array; see :func:`diffbench.cluster.submit`."""
    cluster = _cluster()
    reserved = {"--run-id", "--report-dir", "--resume"} & {arg.split("=", 1)[0] for arg in args.passthrough}
    if reserved:
        raise UsageError(f"submit sets {', '.join(sorted(reserved))} itself; leave it out of the pytest arguments")
    if args.costs_from is not None and not args.costs_from.is_dir():
        raise UsageError(f"--costs-from {args.costs_from}: no such run directory")
    slurm = cluster.SlurmOptions(
        partition=args.slurm_partition,
        time_min=args.slurm_time,
        gpus_per_task=args.slurm_gpus_per_task,
        cpus_per_task=args.slurm_cpus_per_task,
        mem=args.slurm_mem,
        array_parallelism=args.slurm_array_parallelism,
    )
    return cluster.submit(
        args.run_dir,
        shards=args.shards,
        paths=args.paths,
        keyword=args.keyword,
        markers=args.markers,
        pytest_args=[*(["--profile", args.profile] if args.profile else []), *args.passthrough],
        executor=args.executor,
        slurm=slurm,
        wait=args.wait,
        costs_from=args.costs_from,
    )


def _configure_status(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a run directory made by `diffbench submit`")


def status_command(args: argparse.Namespace) -> int:
    """Per shard of a submitted run: cells done / failed / pending and the job's state."""
    return _cluster().status(args.run_dir)


# --- the command table ------------------------------------------------------------------------------------

COMMANDS: dict[str, Command] = {
    "report": Command("rebuild a run's report, or merge several runs into one", _configure_report, report),
    "compare": Command("compare a run against a baseline; exit 1 on regression", _configure_compare, compare),
    "baseline": Command(
        "write a regression baseline (seed means, tolerances from the seed spread) from runs",
        _configure_baseline,
        baseline,
    ),
    "export-samples": Command(
        "write a run's image samples (and real images) as PNG folders for pytorch-fid",
        _configure_export_samples,
        export_samples,
    ),
    "fid": Command(
        "FID of two image folders or .npz statistics as pytorch-fid computes it, with n, interval and KID",
        _configure_fid,
        fid,
    ),
    "verify-determinism": Command(
        "check that cached size_factors models sample bitwise-reproducibly from one seed; exit 1 if one does not",
        _configure_verify_determinism,
        verify_determinism_command,
    ),
    "submit": Command(
        "run the selected matrix cells as shards of one job array (SLURM, or local processes) into one run dir",
        _configure_submit,
        submit_command,
        passthrough="pytest arguments for collection and every shard (profile, family options, --seeds, ...)",
    ),
    "status": Command(
        "cells done / failed / pending per shard of a run made by `diffbench submit`", _configure_status, status_command
    ),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="diffbench", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, command in COMMANDS.items():
        sub = subparsers.add_parser(name, help=command.help, description=command.help)
        command.configure(sub)
        if command.passthrough:
            sub.epilog = f"{sub.epilog or ''} Arguments after `--`: {command.passthrough}.".strip()
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``diffbench`` command line; returns the exit code (0 ok, 1 regression, 2 bad input)."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    passthrough: list[str] = []
    if argv and argv[0] in COMMANDS and COMMANDS[argv[0]].passthrough and "--" in argv:
        argv, passthrough = argv[: argv.index("--")], argv[argv.index("--") + 1 :]
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits on --help (0) and bad usage (2): return that code instead
        return exc.code if isinstance(exc.code, int) else 0
    args.passthrough = passthrough
    try:
        return COMMANDS[args.command].run(args)
    except UsageError as exc:
        print(f"diffbench {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())

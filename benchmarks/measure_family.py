"""Wall-clock of one matrix family with a cold and then a warm artifact cache, plus its final-quality rows.

    python benchmarks/measure_family.py batch_configs -n 2
    python benchmarks/measure_family.py size_factors -n 2 --profile smoke --keep-cache

Runs ``pytest benchmarks -k FAMILY -n N`` twice into a scratch cache (cold, then warm), then prints the times
and, for every cell at its final checkpoint, the metrics the family's "done when" names. Writes the figures to
``<report-dir>/measure-<family>.json`` next to the runs they came from.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Metrics printed per family for the final checkpoint of each configuration.
HEADLINE = {
    "batch_configs": (
        "modes_covered",
        "high_quality_fraction",
        "mmd_multiscale",
        "wasserstein",
        "mmd_rbf",
        "noise_scale",
    ),
}


def run_family(family: str, workers: str, profile: str, cache: Path, report_dir: Path) -> float:
    env = {**os.environ, "DIFFBENCH_CACHE": str(cache)}
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "benchmarks",
        "-k",
        family,
        "-n",
        workers,
        "--profile",
        profile,
        "--report-dir",
        str(report_dir),
        "-q",
        "-p",
        "no:cacheprovider",
    ]
    started = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, env=env, check=True)
    return time.perf_counter() - started


def final_rows(run_dir: Path, family: str) -> dict[str, dict[str, float]]:
    rows = [json.loads(line) for line in (run_dir / "results.jsonl").read_text().splitlines() if line.strip()]
    rows = [r for r in rows if r["family"] == family and "epoch" in r["params"] and "artifact" not in r]
    key = [r["params"].get("config", r["cell"]) for r in rows]
    last: dict[str, int] = {}  # each configuration's final checkpoint (runs may have different epoch counts)
    for k, r in zip(key, rows, strict=True):
        last[k] = max(last.get(k, 0), r["params"]["epoch"])
    table: dict[str, dict[str, float]] = {}
    for k, r in zip(key, rows, strict=True):
        if r["params"]["epoch"] == last[k] and r["metric"] in HEADLINE.get(family, (r["metric"],)):
            table.setdefault(k, {})[r["metric"]] = r["value"]
    return table


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("family")
    parser.add_argument("-n", "--workers", default="2")
    parser.add_argument("--profile", default="smoke")
    parser.add_argument("--report-dir", type=Path, default=ROOT / "reports")
    parser.add_argument("--keep-cache", action="store_true", help="leave the scratch cache on disk")
    args = parser.parse_args()

    cache = Path(tempfile.mkdtemp(prefix="diffbench-measure-"))
    timings = {"cold_seconds": run_family(args.family, args.workers, args.profile, cache, args.report_dir)}
    timings["warm_seconds"] = run_family(args.family, args.workers, args.profile, cache, args.report_dir)
    run_dir = (args.report_dir / "latest").resolve()
    result = {
        "family": args.family,
        "workers": args.workers,
        "profile": args.profile,
        "run": run_dir.name,
        **timings,
        "final": final_rows(run_dir, args.family),
    }
    if not args.keep_cache:
        shutil.rmtree(cache, ignore_errors=True)
    out = args.report_dir / f"measure-{args.family}.json"
    out.write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

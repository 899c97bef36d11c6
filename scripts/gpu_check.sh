#!/usr/bin/env bash
# The GPU fast path's checks in one run, for a CUDA machine (issue 14's "done when"): the CUDA-only tests, the
# sampling-loop timings of the smoke and standard teachers, the GMM training-epoch timings, and the wall time of
# the whole smoke matrix with --device cuda -n 4. Run from the repository root; results go to $OUT (or
# reports/gpu_check). Needs torch with CUDA, pytest, pytest-xdist, pytest-benchmark, hypothesis, and diffusers for
# its timing column; no dataset and no network.
set -uo pipefail
out=${OUT:-reports/gpu_check}
runs=${GPU_CHECK_RUNS:-/tmp/diffbench_gpu_check}
mkdir -p "$out" "$runs"
export PYTHONUNBUFFERED=1 DIFFBENCH_CACHE=${DIFFBENCH_CACHE:-$runs/cache}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/gpu.txt"
python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)" | tee -a "$out/gpu.txt"

echo "== CUDA tests"
python -m pytest tests/test_graphs.py tests/test_training.py tests/test_peers.py -p no:cacheprovider -q -rs 2>&1 |
    tee "$out/cuda_tests.log" | tail -15

echo "== sampling-loop timings (smoke and standard teachers)"
python -m pytest benchmarks -k loop_overhead -m timing -n 0 --device cuda --profile standard \
    --report-dir "$runs" --run-id loops -p no:cacheprovider -q 2>&1 | tail -5
cp "$runs/loops/tables/samplers_loop_overhead.csv" "$out/" && cat "$out/samplers_loop_overhead.csv"

echo "== the smoke matrix, --device cuda -n 4, cold cache"
rm -rf "$DIFFBENCH_CACHE"
start=$(date +%s.%N)
python -m pytest benchmarks -n 4 --device cuda --report-dir "$runs" --run-id matrix -p no:cacheprovider -q 2>&1 |
    tail -5
echo "smoke matrix --device cuda -n 4: $(echo "$(date +%s.%N) - $start" | bc) s" | tee "$out/matrix.txt"

echo "== GMM training epochs (batch_configs timing cells: default step, then eager vs captured)"
python -m pytest benchmarks -k batch_configs -m timing -n 0 --device cuda --report-dir "$runs" --run-id epochs \
    -p no:cacheprovider -q 2>&1 | tail -3
grep '"epoch_seconds"' "$runs/epochs/results.jsonl" > "$out/epoch_seconds.jsonl" && wc -l "$out/epoch_seconds.jsonl"
cp "$runs/epochs/tables/batch_configs_timing.csv" "$out/" && cat "$out/batch_configs_timing.csv"

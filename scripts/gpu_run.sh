#!/usr/bin/env bash
# The prepared script for a lent GPU machine (docs/gpu-runs.md): one call, every GPU check.
#
# Runs, writing everything under $OUT (the device tool brings it back):
#   1. the card (nvidia-smi) and the versions;
#   2. the CUDA path of the suite: a small audit on cuda (timings, peak GPU memory per record);
#   3. the metrics torch backend on the GPU: its exactness tests, then its speed against numba;
#   4. the timing mode (pytest-benchmark per model), fp32 and bf16;
#   5. the harness overhead benchmark (suite against a bare predict loop) on cuda.
# Each step is timed and its exit status kept in $OUT/steps.txt; a failing step does not stop
# the others (each is one finding). Fits the device tool's 10-minute command: about 6 minutes
# on an H200 by estimate (not yet measured: no machine was lent so far).
#
# Usage on the device machine, from the repository root (wheels as the device README says):
#   OUT=$OUT scripts/gpu_run.sh
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
OUT=${OUT:-/tmp/umd-gpu}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 UMD_CACHE_DIR=${UMD_CACHE_DIR:-/tmp/umd-cache}
DEVICE=${UMD_GPU_DEVICE:-cuda}  # cpu: a dry run of the commands on a machine without a GPU
MODELS=${UMD_GPU_MODELS:-unet-ct,unet-multimodal,classical-otsu}
: > "$OUT/steps.txt"
: > "$OUT/log.txt"

# The device tool brings back at most 8 files: one log for every step, the JSON files beside it.
step() {  # step NAME TIMEOUT_S COMMAND...: run, append to $OUT/log.txt, record status and seconds
  local name=$1 limit=$2
  shift 2
  local start=$SECONDS
  printf '\n===== %s: %s\n' "$name" "$*" >> "$OUT/log.txt"
  timeout "$limit" "$@" >> "$OUT/log.txt" 2>&1
  local status=$?
  printf '%s rc=%s %ss\n' "$name" "$status" "$((SECONDS - start))" | tee -a "$OUT/steps.txt"
}

step card 30 sh -c 'nvidia-smi -L; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv;
  python -c "import torch, sys; print(sys.version); print(torch.__version__, torch.version.cuda, torch.cuda.get_device_name(0))"'
step audit 180 python -m pytest benchmarks -n 2 -p no:cacheprovider -q --umd-device "$DEVICE" \
  --umd-models "$MODELS" --umd-organs liver,spleen,pancreas,kidney_left --umd-subjects 4 \
  --umd-results "$OUT/results.json" --umd-no-report
step metrics_exact 120 python -m pytest tests/test_metrics_torch.py -p no:cacheprovider -q -n 0 -rs
step metrics_speed 120 python -m pytest benchmarks/speed/test_metrics_speed.py -p no:cacheprovider \
  -n 0 -s -q --benchmark-json "$OUT/metrics-speed.json"
step timing_fp32 90 python -m pytest benchmarks/timing -n 0 -p no:cacheprovider -q --umd-device "$DEVICE" \
  --umd-models unet-ct,unet-multimodal --benchmark-json "$OUT/timing-fp32.json"
step timing_bf16 90 python -m pytest benchmarks/timing -n 0 -p no:cacheprovider -q --umd-device "$DEVICE" \
  --umd-models unet-ct,unet-multimodal --umd-amp bf16 --benchmark-json "$OUT/timing-bf16.json"
step overhead 150 env UMD_OVERHEAD_DEVICE="$DEVICE" python -m pytest \
  benchmarks/speed/test_harness_overhead.py -n 0 -p no:cacheprovider -s -q
cat "$OUT/steps.txt"

#!/usr/bin/env bash
# Submit a sharded umdbench audit to SLURM: the job array, then the merge job after it.
#
# Usage: UMD_VENV=... UMD_OUT=... [UMD_REPO=...] [UMD_ARGS="..."] [UMD_BASELINE=...] \
#          [UMD_ARRAY=1-8] [UMD_GRES=gpu:1] docs/scale-out/submit.sh [extra sbatch options]
#
#   UMD_ARRAY  array range, one shard per task (default: the script's --array=1-8)
#   UMD_GRES   unset: the script's --gres=gpu:1; set: passed as --gres; set but empty:
#              --gres=none (CPU-only clusters, or a test on a node without GPUs)
#   UMD_CPUS, UMD_MEM, UMD_TIME  override --cpus-per-task, --mem, --time of the array tasks
#   (UMD_ARGS, UMD_BASELINE, UMD_NICE, UMD_CACHE_DIR: see the two .sbatch files)
# Extra arguments go to both sbatch calls (e.g. --partition=gpu --account=proj).
# Prints the two job ids. Logs: $UMD_OUT/logs/shard-<task>.out and merge.out.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
: "${UMD_VENV:?set UMD_VENV to the virtual environment to activate}"
: "${UMD_OUT:?set UMD_OUT to a shared output folder}"
export UMD_VENV UMD_OUT
export UMD_REPO=${UMD_REPO:-$(cd "$here/../.." && pwd)}
mkdir -p "$UMD_OUT/logs"

array_opts=(--parsable --output="$UMD_OUT/logs/shard-%a.out")
[[ -n ${UMD_ARRAY:-} ]] && array_opts+=(--array="$UMD_ARRAY")
if [[ -n ${UMD_GRES+set} ]]; then array_opts+=(--gres="${UMD_GRES:-none}"); fi
[[ -n ${UMD_CPUS:-} ]] && array_opts+=(--cpus-per-task="$UMD_CPUS")
[[ -n ${UMD_MEM:-} ]] && array_opts+=(--mem="$UMD_MEM")
[[ -n ${UMD_TIME:-} ]] && array_opts+=(--time="$UMD_TIME")

array_id=$(sbatch "${array_opts[@]}" "$@" "$here/umdbench-array.sbatch")
array_id=${array_id%%;*}   # --parsable prints "id" or "id;cluster"
merge_id=$(sbatch --parsable --dependency="afterany:$array_id" \
    --output="$UMD_OUT/logs/merge.out" "$@" "$here/umdbench-merge.sbatch")
merge_id=${merge_id%%;*}
echo "array job $array_id, merge job $merge_id (afterany:$array_id); outputs in $UMD_OUT"

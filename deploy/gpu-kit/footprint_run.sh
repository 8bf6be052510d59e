#!/usr/bin/env bash
# Run the SWA footprint grid (footprint_grid.py) on a GPU node with the offline kit.
#
#   deploy/gpu-kit/footprint_run.sh KIT.tar.xz OUTDIR [footprint_grid.py options ...] [-- sglang flags]
#
# OUTDIR gets: console.log, results.jsonl (written phase by phase: a killed run still leaves it),
# fp-logs.tar.gz (the servers' logs, /server_info and first /metrics page per boot), triton-cache.tar.gz
# (carry it back as TRITON_CACHE_TAR= next time: boots then skip Triton's kernel compilation),
# nvidia-smi.txt. Knobs (environment): DEADLINE_S (seconds from this script's start by which
# everything, packing included, is done; default 540), TRITON_CACHE_TAR, WORK (/tmp/swa-footprint),
# KIT_MISMATCH_OK=1 (run although the kit's autotune/ and workers/ are not this checkout's).
# The grid runs from the checkout this script lies in, on the kit's SGLang and Python environment.
set -uo pipefail

kit_tar=${1:?usage: footprint_run.sh KIT.tar.xz OUTDIR [options]}
out=${2:?usage: footprint_run.sh KIT.tar.xz OUTDIR [options]}
shift 2
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
start=$(date +%s)
deadline=${DEADLINE_S:-540}
work=${WORK:-/tmp/swa-footprint}
mkdir -p "$out" "$work"
exec > >(tee -a "$out/console.log") 2>&1
elapsed() { echo $(( $(date +%s) - start )); }

pack() {
  echo "== packing ($(elapsed) s)"
  [ -d "$work/fp/logs" ] && tar -czf "$out/fp-logs.tar.gz" -C "$work/fp" --exclude='logs/models' logs
  pack_node_record "$out" "$work"
}
trap pack EXIT

# shellcheck source=kit-lib.sh
. "$here/kit-lib.sh"
unpack_kit "$kit_tar" "$work"
# The grid runs from this checkout but imports the kit's copy of autotune/ and workers/: they must match.
check_kit_is_checkout "$repo" || exit 1
echo "ready in $(elapsed) s"
warm=()
use_run_triton_cache "$work" && warm=(--warm-cache)
nvidia-smi --query-gpu=index,name,memory.total,memory.used --format=csv,noheader
left=$(( deadline - $(elapsed) - 20 ))  # 20 s for packing
echo "== footprint grid: ${left} s ($(elapsed) s elapsed)"
cd "$repo" && PYTHONUNBUFFERED=1 timeout -s TERM -k 20 $(( left + 10 )) "$kit/node.sh" python "$here/footprint_grid.py" \
  --out "$work/fp" --results "$out/results.jsonl" --deadline-s "$left" "${warm[@]}" "$@"
echo "== grid exit code $? ($(elapsed) s)"

#!/usr/bin/env bash
# Validate a GPU node with the offline kit, then run (or resume) a real study on it.
#
#   deploy/gpu-kit/validate.sh KIT.tar.xz OUTDIR [workload.yaml[:TRIALS] ...]
#
# Steps: unpack the kit; `node.sh doctor`; boot real SGLang where it must fail (probe_failures.py:
# a ratio too small for one window, a flag SGLang rejects) unless PROBES=0; then `autotune run
# --backend sglang --dummy-weights` on each workload file, one trial per GPU, resuming the study
# database STUDY_DB. Everything it produced lands in OUTDIR: the database, the server logs, the
# Triton cache (reuse it with TRITON_CACHE_TAR next time: boots then skip kernel compilation).
#
# Knobs (environment): TRIALS (per workload, default 6), MFS (--mem-fraction-static, default 0.48:
# an H100-80GB-sized KV budget on an H200), MODEL (26B-A4B), STUDY_DB (a .db to resume from),
# DEADLINE_S (stop starting work after this many seconds and pack up; default 540), PROBES (1),
# TRITON_CACHE_TAR (a .tar.gz of a previous run's Triton cache), RAY_KIT (a swa-autotune-ray-kit-*.tar.xz to
# unpack beside the kit, so that doctor checks Ray; without it doctor skips Ray), RUN_ARGS (more `autotune run` options,
# e.g. "--try 0.8"). No network is needed. Studies run from WORK, so the kit's own copy of autotune
# is the one that runs, not a checkout's.
set -euo pipefail

kit_tar=${1:?usage: validate.sh KIT.tar.xz OUTDIR [workload.yaml ...]}
out=${2:?usage: validate.sh KIT.tar.xz OUTDIR [workload.yaml ...]}
shift 2
workloads=("$@")
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
start=$(date +%s)
deadline=${DEADLINE_S:-540}
trials=${TRIALS:-6}
mfs=${MFS:-0.48}
model=${MODEL:-26B-A4B}
work=${WORK:-/tmp/swa-validate}
mkdir -p "$out" "$work"
exec > >(tee -a "$out/console.log") 2>&1

elapsed() { echo $(( $(date +%s) - start )); }
left() { echo $(( deadline - $(elapsed) )); }

pack() {
  echo "== packing results ($(elapsed) s)"
  [ -f "$work/real-study.db" ] && cp "$work/real-study.db" "$out/real-study.db"
  if [ -d "$work/logs" ]; then
    tar -czf "$out/logs.tar.gz" -C "$work" --exclude='logs/models' logs
  fi
  pack_node_record "$out" "$work"
}
trap pack EXIT

# shellcheck source=kit-lib.sh
. "$here/kit-lib.sh"
unpack_kit "$kit_tar" "$work"
check_kit_is_checkout "$repo" || exit 1
echo "ready in $(elapsed) s"
if [ -n "${RAY_KIT:-}" ]; then
  unpack_ray_kit "$RAY_KIT"
else
  export SWA_AUTOTUNE_RAY="${SWA_AUTOTUNE_RAY:-0}"  # the studies below use --runner local
fi

use_run_triton_cache "$work" || true

"$kit/node.sh" doctor | tee "$out/doctor.txt"

ngpu=$(nvidia-smi --query-gpu=name --format=csv,noheader | wc -l)
echo "== $ngpu GPU(s): $(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | paste -sd';')"
sglang_args=(--attention-backend triton --sampling-backend pytorch --disable-prefill-cuda-graph)

if [ "${PROBES:-1}" = 1 ]; then
  echo "== failure probes ($(elapsed) s)"
  (cd "$repo" && "$kit/node.sh" python "$here/probe_failures.py" --model "$model" --log-dir "$work/logs/probes" \
     --mem-fraction-static "$mfs" "${sglang_args[@]}") || echo "a probe booted: see the log"
fi

[ -n "${STUDY_DB:-}" ] && [ -f "$STUDY_DB" ] && cp "$STUDY_DB" "$work/real-study.db"
for item in "${workloads[@]}"; do
  workload=$(cd "$(dirname "${item%%:*}")" && pwd)/$(basename "${item%%:*}")
  n=$trials
  [[ "$item" == *:* ]] && n=${item##*:}
  budget=$(left)
  if [ "$budget" -lt 120 ]; then
    echo "== skipping $workload: only $budget s left"
    continue
  fi
  echo "== study: $workload, $n trials, $ngpu at once, deadline in $budget s ($(elapsed) s)"
  # SIGINT at the deadline: finished trials are saved, servers stopped; the next run resumes.
  # shellcheck disable=SC2086  # RUN_ARGS is a list of options
  (cd "$work" && timeout -s INT -k 90 "$budget" "$kit/node.sh" autotune run --backend sglang --runner local \
    --dummy-weights --model "$model" --workload "$workload" --trials "$n" --parallel "$ngpu" \
    --mem-fraction-static "$mfs" --storage "sqlite:///$work/real-study.db" --log-dir "$work/logs" ${RUN_ARGS:-} \
    -- "${sglang_args[@]}") || echo "study exit code $?"
done
echo "== done in $(elapsed) s"

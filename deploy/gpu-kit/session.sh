#!/usr/bin/env bash
# Run a list of real studies on one GPU node with the offline kit, each timed, under one deadline.
#
#   deploy/gpu-kit/session.sh KIT.tar.xz OUTDIR PLAN
#
# PLAN is a text file, one study a line: `NAME autotune-run-options...` (`#` starts a comment). Each
# study runs `node.sh autotune run --backend sglang --dummy-weights --model $MODEL --mem-fraction-static
# $MFS` with its options, its own database ($WORK/NAME.db, so two runs of one workload never resume each
# other) and log directory, and SGLang flags after `--` (the kit's: Triton attention, PyTorch sampling,
# no prefill graphs). `@repo@` in a line is this checkout's path (for workload files). A line whose options hold `--runner ray` needs the Ray kit (RAY_KIT=).
#
# OUTDIR gets: console.log (doctor's lines too), studies.tsv (name, exit code, start and end epoch seconds, wall s),
# every NAME.db, logs.tar.gz (server logs, trimmed of model dirs), compile-caches.tar.gz when it is under
# 15 MB (carry it back as CACHES_TAR= next time: a fresh node's first boot then skips the JIT builds),
# nvidia-smi.txt. console.log ends with the directories that gained files during the session (what the
# boots compiled or cached despite CACHES_TAR).
#
# Knobs (environment): MODEL (26B-A4B), MFS (0.48: an H100-80GB-sized KV budget on an H200), DEADLINE_S
# (seconds from start by which everything, packing included, is done; default 560), RAY_KIT, CACHES_TAR,
# KEEP_CACHES (a path on the node to save the caches to at the end, for a later call on the same warm
# machine), WORK (/tmp/swa-session), KIT_MISMATCH_OK=1 (run a kit whose autotune/ and workers/ are not this
# checkout's; without it the session stops at once and says to rebuild the kit). A study still running at the deadline is stopped by SIGINT: its
# finished trials are saved and the same PLAN line resumes it.
set -uo pipefail

kit_tar=${1:?usage: session.sh KIT.tar.xz OUTDIR PLAN}
out=${2:?usage: session.sh KIT.tar.xz OUTDIR PLAN}
plan=$(cd "$(dirname "${3:?usage: session.sh KIT.tar.xz OUTDIR PLAN}")" && pwd)/$(basename "$3")
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
start=$(date +%s)
deadline=${DEADLINE_S:-560}
model=${MODEL:-26B-A4B}
mfs=${MFS:-0.48}
work=${WORK:-/tmp/swa-session}
mkdir -p "$out" "$work"
exec > >(tee -a "$out/console.log") 2>&1
elapsed() { echo $(( $(date +%s) - start )); }
# shellcheck source=kit-lib.sh
. "$here/kit-lib.sh"

pack() {
  echo "== packing ($(elapsed) s)"
  if [ -n "${new_files_since:-}" ]; then
    echo "== directories that gained files since the caches were loaded (size of what is new)"
    list_new_files "$new_files_since" | grep -v -e "$work/" -e "$out" || true
  fi
  cp "$work"/*.db "$out/" 2>/dev/null
  [ -d "$work/logs" ] && tar -czf "$out/logs.tar.gz" -C "$work" --exclude='logs/*/models' logs
  if "$kit/node.sh" caches save "$work/compile-caches.tar.gz"; then
    [ -n "${KEEP_CACHES:-}" ] && cp "$work/compile-caches.tar.gz" "$KEEP_CACHES"
    if [ "$(stat -c %s "$work/compile-caches.tar.gz")" -lt 15000000 ]; then
      cp "$work/compile-caches.tar.gz" "$out/"
    else
      echo "compile caches are over 15 MB: not copied to $out"
    fi
  fi
  du -sh "$HOME"/.cache/* 2>/dev/null | sort -h | tail -8
  pack_node_record "$out" "$work"
}

unpack_kit "$kit_tar" "$work"
check_kit_is_checkout "$repo" || exit 1
trap pack EXIT
if [ -n "${RAY_KIT:-}" ]; then
  unpack_ray_kit "$RAY_KIT"
else
  export SWA_AUTOTUNE_RAY=0  # no Ray kit: doctor skips Ray, and the plan must use --runner local
fi
[ -n "${CACHES_TAR:-}" ] && load_caches "$CACHES_TAR"
new_files_since=$(mktemp)  # what the studies' boots compile despite the caches loaded: listed when packing
"$kit/node.sh" doctor  # its lines land in console.log
echo "== $(nvidia-smi --query-gpu=name --format=csv,noheader | wc -l) GPU(s), doctor done at $(elapsed) s"

sglang_args=(--attention-backend triton --sampling-backend pytorch --disable-prefill-cuda-graph)
printf 'name\texit\tstart\tend\twall_s\n' > "$out/studies.tsv"
while read -r name options; do
  [ -z "$name" ] || [[ "$name" == \#* ]] && continue
  options=${options%%#*}
  options=${options//@repo@/$repo}
  left=$(( deadline - $(elapsed) - 30 ))  # 30 s for packing
  if [ "$left" -lt 90 ]; then
    echo "== skipping $name: only $left s left"
    continue
  fi
  echo "== study $name: $options (deadline in $left s, at $(elapsed) s)"
  t0=$(date +%s)
  # shellcheck disable=SC2086  # options is a list of autotune run options
  (cd "$work" && PYTHONUNBUFFERED=1 timeout -s INT -k 60 "$left" "$kit/node.sh" autotune run --backend sglang \
     --dummy-weights --model "$model" --mem-fraction-static "$mfs" --storage "sqlite:///$work/$name.db" \
     --log-dir "$work/logs/$name" $options -- "${sglang_args[@]}")
  rc=$?
  t1=$(date +%s)
  printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$rc" "$t0" "$t1" $(( t1 - t0 )) >> "$out/studies.tsv"
  echo "== study $name: exit $rc in $(( t1 - t0 )) s"
done < "$plan"
echo "== done in $(elapsed) s"

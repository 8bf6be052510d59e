#!/usr/bin/env bash
# Where does a machine's first SGLang boot spend its extra ~90 s, and where is the result cached?
#
#   deploy/gpu-kit/find_compile_cache.sh KIT.tar.xz OUTDIR
#
# Boots one real server through footprint_run.sh (one ratio, one short phase), with a marker file
# touched first; then lists every directory under $HOME and /tmp that gained files since the marker
# (the caches the boot wrote: Triton's is under the run's work dir, the others are what we look for),
# and packs the CUDA driver's JIT cache (~/.nv/ComputeCache) if small enough to carry next time.
set -uo pipefail
kit=${1:?usage: find_compile_cache.sh KIT.tar.xz OUTDIR}
out=${2:?usage: find_compile_cache.sh KIT.tar.xz OUTDIR}
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=kit-lib.sh
. "$here/kit-lib.sh"
mkdir -p "$out"
marker=$(mktemp)
sleep 1
DEADLINE_S=${DEADLINE_S:-220} bash "$here/footprint_run.sh" "$kit" "$out" --gpus 0 --ratios 1.0 --phases 1024/128@8 \
  -- --attention-backend triton --sampling-backend pytorch --disable-prefill-cuda-graph --cuda-graph-max-bs-decode 128
{
  echo "== directories that gained files during the boot (size of what is new)"
  list_new_files "$marker"
  echo "== ~/.nv"; du -sh "$HOME/.nv" 2>/dev/null; ls -la "$HOME/.nv/ComputeCache" 2>/dev/null | head -5
  echo "== env"; env | grep -i -E "cache|triton|cuda_" | sort
} 2>&1 | tee "$out/compile-cache.txt"
if [ -d "$HOME/.nv/ComputeCache" ]; then
  tar -czf "$out/nv-compute-cache.tar.gz" -C "$HOME/.nv" ComputeCache && ls -la "$out/nv-compute-cache.tar.gz"
fi

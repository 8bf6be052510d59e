# Shared steps of the GPU-node scripts (validate.sh, session.sh): unpack the kit (and the Ray kit),
# restore carried compile caches. Source it; it defines functions only.
#
#   unpack_kit KIT.tar.xz WORKDIR   -> sets $kit (the unpacked kit's directory). A kit already unpacked
#                                      there from the same file (size and mtime) is reused: a second call
#                                      on a warm machine skips the ~30 s of xz.
#   unpack_ray_kit RAY_KIT.tar.xz   -> unpacks into $kit (node.sh then finds $kit/ray-kit)
#   load_caches CACHES.tar.gz       -> node.sh caches load (sgl-kernel/FlashInfer JIT, Triton, inductor)
#   use_run_triton_cache WORKDIR    -> TRITON_CACHE_DIR=WORKDIR/triton, restored from $TRITON_CACHE_TAR if set;
#                                      returns 0 when it restored one
#   pack_node_record OUTDIR WORKDIR -> the run's Triton cache (OUTDIR/triton-cache.tar.gz), nvidia-smi.txt, a listing
#   check_kit_is_checkout REPO      -> fails, naming the fix, when the kit's copy of this project's code is not
#                                      the checkout's (KIT_MISMATCH_OK=1: run the kit's own anyway)
#   list_new_files MARKER           -> the directories under $HOME, /tmp, /var/tmp that gained files since MARKER
#                                      (what a boot compiled and cached), largest first

unpack_kit() {
  local tar_file=$1 work=$2 stamp
  stamp="$(stat -c '%s %Y' "$tar_file") $(basename "$tar_file")"
  kit="$work/kit"
  if [ -f "$work/kit.stamp" ] && [ "$(cat "$work/kit.stamp")" = "$stamp" ] && [ -d "$kit" ]; then
    echo "== kit already unpacked from $(basename "$tar_file"): reusing $kit"
  else
    echo "== unpacking $(basename "$tar_file") ($(du -h "$tar_file" | cut -f1))"
    rm -rf "$kit" "$work/kit.stamp" && mkdir -p "$kit"
    tar -xJf "$tar_file" -C "$kit" --strip-components="${KIT_STRIP:-0}"
    echo "$stamp" > "$work/kit.stamp"
  fi
  [ -x "$kit/node.sh" ] || kit=$(dirname "$(find "$kit" -maxdepth 2 -name node.sh | head -1)")
  echo "kit: $kit"
}

unpack_ray_kit() {
  local tar_file=$1
  [ -f "$tar_file" ] || { echo "Ray kit $tar_file not found" >&2; return 1; }
  tar -xJf "$tar_file" -C "$kit" && echo "Ray kit unpacked: $kit/ray-kit"
}

load_caches() {
  local tar_file=$1
  if [ -f "$tar_file" ]; then
    "$kit/node.sh" caches load "$tar_file"
  else
    echo "== no compile caches at $tar_file: the first boot compiles"
  fi
}

use_run_triton_cache() {
  local work=$1
  export TRITON_CACHE_DIR="$work/triton"
  mkdir -p "$TRITON_CACHE_DIR"
  if [ -n "${TRITON_CACHE_TAR:-}" ] && [ -f "$TRITON_CACHE_TAR" ]; then
    tar -xzf "$TRITON_CACHE_TAR" -C "$work" && echo "Triton cache restored: $(du -sh "$TRITON_CACHE_DIR" | cut -f1)"
    return
  fi
  return 1
}

pack_node_record() {
  local out=$1 work=$2
  if [ -d "$work/triton" ]; then
    tar -czf "$out/triton-cache.tar.gz" -C "$work" triton
    du -sh "$work/triton" "$out/triton-cache.tar.gz"
  fi
  nvidia-smi > "$out/nvidia-smi.txt" 2>&1 || true
  ls -la "$out"
}

list_new_files() {
  local marker=$1 root
  for root in "$HOME" /tmp /var/tmp; do
    find "$root" -xdev -type f -newer "$marker" -printf '%h %s\n' 2>/dev/null
  done | awk '{split($1, p, "/"); key = "/" p[2] "/" p[3] "/" p[4] "/" p[5]; size[key] += $2; n[key]++}
              END {for (k in size) printf "%10.1f MB %6d files  %s\n", size[k] / 1e6, n[k], k}' | sort -rn | head -30
}

# The kit carries its own copy of autotune/ and workers/: a kit built before a change runs the old code, and an
# `autotune run` option added since reaches SGLang as an unknown flag (SGLang refuses it; each trial fails).
check_kit_is_checkout() {
  local repo=$1 sums
  [ -d "$kit/site/autotune" ] || return 0  # not a kit that carries the project (a test's stub)
  sums() { (cd "$1" && find autotune workers -name '*.py' | sort | xargs md5sum) 2>/dev/null; }
  if [ "$(sums "$kit/site")" != "$(sums "$repo")" ]; then
    echo "== the kit's autotune/ and workers/ are not this checkout's ($(diff <(sums "$kit/site") <(sums "$repo") | grep -c '^>') file(s) differ):"
    echo "   rebuild it (deploy/gpu-kit/build.sh) so the studies run this code, or set KIT_MISMATCH_OK=1 to run the kit's"
    [ -n "${KIT_MISMATCH_OK:-}" ] || return 1
  fi
}

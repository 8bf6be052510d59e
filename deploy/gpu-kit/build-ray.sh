#!/usr/bin/env bash
# Build the offline Ray kit: Ray core for `autotune run --runner ray` on an air-gapped GPU node, packed as its own
# .tar.xz because Ray's wheel (79 MB) does not fit beside the SGLang kit in one 64 MiB transfer. Run it where PyPI
# is reachable (also reached as `build.sh --ray ...`):
#
#   bash deploy/gpu-kit/build-ray.sh [--python 3.12] [--out DIR] [--cache DIR] [--max-mb 50] [--keep-stage]
#
# The tarball holds one directory, ray-kit/ (site/, manifest.json): unpack it where the GPU kit is unpacked
# (tar -xJf swa-autotune-ray-kit-*.tar.xz -C /opt/swa-kit) and node.sh puts ray-kit/site on PYTHONPATH
# (or point SWA_AUTOTUNE_RAY_KIT at it). Pins: requirements/ray-py312.txt; trimmed paths: trim-ray.txt.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"
REPO="$(cd "$HERE/../.." && pwd -P)"
KITPY="$HERE/kit.py"

die() { printf 'build-ray.sh: error: %s\n' "$*" >&2; exit 1; }
say() { printf '==> %s\n' "$*"; }
# shellcheck source=fetch-wheels.sh
. "$HERE/fetch-wheels.sh"
usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | grep '^#' | sed 's/^# \{0,1\}//'; }

PYVER=3.12
OUT="$REPO/dist"
CACHE="${SWA_KIT_CACHE:-}"
MAX_MB="${SWA_RAY_KIT_MAX_MB:-50}"
KEEP_STAGE=0
BUILD_PYTHON="${BUILD_PYTHON:-python3}"

while [ $# -gt 0 ]; do
    case "$1" in
        --ray) shift ;;  # build.sh --ray passes it along
        --python) PYVER="${2:?--python needs a version like 3.12}"; shift 2 ;;
        --out) OUT="${2:?--out needs a directory}"; shift 2 ;;
        --cache) CACHE="${2:?--cache needs a directory}"; shift 2 ;;
        --max-mb) MAX_MB="${2:?--max-mb needs a number}"; shift 2 ;;
        --keep-stage) KEEP_STAGE=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown argument '$1' (the Ray kit takes --python, --out, --cache, --max-mb, --keep-stage)" ;;
    esac
done

START=$SECONDS
PYTAG="py${PYVER/./}"
REQ="$HERE/requirements/ray-$PYTAG.txt"
TRIM="$HERE/trim-ray.txt"
[ -f "$REQ" ] || die "no pinned requirements for the Ray kit on Python $PYVER: $REQ is missing"
command -v "$BUILD_PYTHON" >/dev/null || die "$BUILD_PYTHON not found (set BUILD_PYTHON to a Python 3 with pip)"
"$BUILD_PYTHON" -m pip --version >/dev/null 2>&1 || die "$BUILD_PYTHON has no pip (python3 -m ensurepip, or set BUILD_PYTHON)"
command -v xz >/dev/null || die "xz not found (install xz-utils)"

mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd -P)"
CACHE="${CACHE:-$REPO/dist/.gpu-kit-cache}"
mkdir -p "$CACHE/$PYTAG"
CACHE="$(cd "$CACHE" && pwd -P)"
WHEELS="$CACHE/$PYTAG"
RAY="$(sed -n 's/^ray==\([^ #]*\).*/\1/p' "$REQ")"
[ -n "$RAY" ] || die "$REQ pins no ray==VERSION"
NAME="swa-autotune-ray-kit-ray$RAY-$PYTAG"
TARBALL="$OUT/$NAME.tar.xz"
STAGE="$(mktemp -d "$OUT/.ray-kit-stage.XXXXXX")"
KIT="$STAGE/ray-kit"
cleanup() { if [ "$KEEP_STAGE" = 1 ]; then echo "stage kept: $STAGE"; else rm -rf "$STAGE"; fi; }
trap cleanup EXIT
say "kit $NAME: ray $RAY (core, no dashboard) for Python $PYVER, manylinux x86_64"

"$BUILD_PYTHON" "$KITPY" check-reqs "$HERE/node-base.txt" "$REQ"
fetch_wheels "$REQ"
mapfile -t WHEEL_FILES < <("$BUILD_PYTHON" "$KITPY" wheels "$WHEELS" "$REQ")

say "unpacking ${#WHEEL_FILES[@]} wheels (trim list: $(basename "$TRIM"))"
mkdir -p "$KIT"
"$BUILD_PYTHON" "$KITPY" install "$KIT/site" "$STAGE/data" "$TRIM" "${WHEEL_FILES[@]}" > "$STAGE/install.json"
"$BUILD_PYTHON" - "$STAGE/install.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
for p in d["unused_trim_patterns"]:
    if "__pycache__" not in p and "tests" not in p:
        print(f"build-ray.sh: warning: trim pattern '{p}' matched nothing (renamed in this release?)", file=sys.stderr)
print(f"    {len(d['distributions'])} distributions, {sum(x['bytes'] for x in d['distributions'])/1e6:.0f} MB unpacked; "
      f"trimmed {len(d['trimmed'])} files, {sum(t['bytes'] for t in d['trimmed'])/1e6:.0f} MB")
PY
"$BUILD_PYTHON" "$KITPY" audit "$HERE/node-base.txt" "$STAGE/install.json" > "$STAGE/audit.json"
"$BUILD_PYTHON" - "$STAGE/audit.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
# Ray core's own requirements (no extra) must be met by the kit or the node image.
core = [r for r in d["not_shipped"] if r.startswith("ray:") and "extra ==" not in r]
if core:
    sys.exit("build-ray.sh: error: Ray core requirements neither shipped nor on the node: " + "; ".join(core))
PY
for must in ray/__init__.py ray/_raylet.so ray/core/src/ray/raylet/raylet ray/core/src/ray/gcs/gcs_server \
            ray/util/placement_group.py jsonschema/__init__.py; do
    [ -e "$KIT/site/$must" ] || die "site/$must is missing from the Ray kit"
done
[ ! -e "$KIT/site/ray/jars" ] || die "the trim list did not remove ray/jars"

"$BUILD_PYTHON" "$KITPY" manifest "$KIT/manifest.json" "$STAGE/install.json" "$STAGE/audit.json" \
    kit=swa-autotune-ray-kit ray="$RAY" python="$PYVER" built_at="$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
    platform=manylinux2014_x86_64 ray_init="include_dashboard=False (workers/pool.py)"

say "packing $TARBALL (xz ${XZ_OPT:--9e -T1})"
TAR_OPTS=()
if tar --version 2>/dev/null | head -1 | grep -q GNU; then
    TAR_OPTS=(--owner=0 --group=0 --numeric-owner --sort=name)
fi
rm -f "$TARBALL" "$TARBALL.over-limit"
(cd "$STAGE" && tar ${TAR_OPTS[@]+"${TAR_OPTS[@]}"} -cf - ray-kit) | xz ${XZ_OPT:--9e -T1} -c > "$TARBALL.part"
mv "$TARBALL.part" "$TARBALL"

BYTES="$(wc -c < "$TARBALL" | tr -d ' ')"
MB="$(awk -v b="$BYTES" 'BEGIN { printf "%.1f", b / 1000000 }')"
UNPACKED_MB="$(du -sm "$KIT" | cut -f1)"
echo "kit: $TARBALL"
echo "kit size: $MB MB ($BYTES bytes; unpacks to ${UNPACKED_MB} MiB; limit $MAX_MB MB); built in $(( SECONDS - START )) s"
if awk -v b="$BYTES" -v m="$MAX_MB" 'BEGIN { exit !(b > m * 1000000) }'; then
    mv "$TARBALL" "$TARBALL.over-limit"
    die "the Ray kit is $MB MB, over the $MAX_MB MB limit (--max-mb / SWA_RAY_KIT_MAX_MB). Kept as $TARBALL.over-limit; trim more in trim-ray.txt, or carry it in two calls (docs/air-gapped.md)."
fi

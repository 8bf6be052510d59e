#!/usr/bin/env bash
# Build the offline GPU kit: everything an air-gapped GPU node (whose image already has Python and torch) needs to
# run swa-autotune's real `sglang` backend, packed as one .tar.xz. Run it where PyPI is reachable:
#
#   bash deploy/gpu-kit/build.sh [--torch 2.11.0] [--sglang VERSION] [--python 3.12] [--arch sm90]
#                                [--out DIR] [--cache DIR] [--max-mb 60] [--with-postgres] [--keep-stage]
#   bash deploy/gpu-kit/build.sh --ray [--out DIR] [--cache DIR] [--max-mb 50]   # the separate Ray kit (build-ray.sh)
#
# Then copy dist/swa-autotune-gpu-kit-sglang<V>-py<PY>-<ARCH>.tar.xz to the node and see docs/air-gapped.md.
# Downloads are cached (--cache, $SWA_KIT_CACHE, default dist/.gpu-kit-cache/): a second build downloads nothing.
# xz runs single-threaded by default (XZ_OPT='-9e -T1'): -T0 is about twice as fast on 2+ cores, but it splits
# the stream into blocks, which costs about 1.2 MB.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"
REPO="$(cd "$HERE/../.." && pwd -P)"
KITPY="$HERE/kit.py"

die() { printf 'build.sh: error: %s\n' "$*" >&2; exit 1; }
say() { printf '==> %s\n' "$*"; }
# shellcheck source=fetch-wheels.sh
. "$HERE/fetch-wheels.sh"
usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | grep '^#' | sed 's/^# \{0,1\}//'; }

# torch release of the node -> the newest SGLang release that pins exactly that torch.
# Only 0.5.17 has a worked-out requirements file; the others need one written (docs/air-gapped.md says how).
sglang_for_torch() {
    case "$1" in
        2.11.0) echo 0.5.17 ;;
        2.13.0) echo 0.5.20 ;;
        2.14.1) echo 0.5.23 ;;
        *) return 1 ;;
    esac
}

for arg in "$@"; do
    [ "$arg" = --ray ] && exec bash "$HERE/build-ray.sh" "$@"
done

TORCH=2.11.0
SGLANG=""
PYVER=3.12
ARCH=sm90
OUT="$REPO/dist"
CACHE="${SWA_KIT_CACHE:-}"
MAX_MB="${SWA_KIT_MAX_MB:-60}"
WITH_PG=0
KEEP_STAGE=0
BUILD_PYTHON="${BUILD_PYTHON:-python3}"

while [ $# -gt 0 ]; do
    case "$1" in
        --torch) TORCH="${2:?--torch needs a version}"; shift 2 ;;
        --sglang) SGLANG="${2:?--sglang needs a version}"; shift 2 ;;
        --python) PYVER="${2:?--python needs a version like 3.12}"; shift 2 ;;
        --arch) ARCH="${2:?--arch needs a value like sm90}"; shift 2 ;;
        --out) OUT="${2:?--out needs a directory}"; shift 2 ;;
        --cache) CACHE="${2:?--cache needs a directory}"; shift 2 ;;
        --max-mb) MAX_MB="${2:?--max-mb needs a number}"; shift 2 ;;
        --with-postgres) WITH_PG=1; shift ;;
        --keep-stage) KEEP_STAGE=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown argument '$1'" ;;
    esac
done

START=$SECONDS
if [ -z "$SGLANG" ]; then
    SGLANG="$(sglang_for_torch "$TORCH")" \
        || die "no SGLang release is known for torch $TORCH (known: 2.11.0 -> 0.5.17, 2.13.0 -> 0.5.20, 2.14.1 -> 0.5.23); pass --sglang VERSION"
fi
case "$PYVER" in
    3.[0-9]|3.[0-9][0-9]) ;;
    *) die "--python wants MAJOR.MINOR such as 3.12, not '$PYVER'" ;;
esac
PYTAG="py${PYVER/./}"
TRIM="$HERE/trim-$ARCH.txt"
[ -f "$TRIM" ] || die "no trim list for --arch $ARCH ($TRIM); only sm90 (H100/H200) is worked out"
REQ_SGLANG="$HERE/requirements/sglang-$SGLANG-$PYTAG.txt"
REQ_AUTOTUNE="$HERE/requirements/autotune-$PYTAG.txt"
REQ_PG="$HERE/requirements/postgres-$PYTAG.txt"
[ -f "$REQ_SGLANG" ] || die "no pinned requirements for sglang $SGLANG on Python $PYVER: $REQ_SGLANG is missing. Write it (exact name==version pins; start from requirements/sglang-0.5.17-py312.txt and docs/air-gapped.md, 'Another torch/SGLang pairing')."
[ -f "$REQ_AUTOTUNE" ] || die "missing $REQ_AUTOTUNE"
REQS=("$REQ_SGLANG" "$REQ_AUTOTUNE")
if [ "$WITH_PG" = 1 ]; then
    [ -f "$REQ_PG" ] || die "missing $REQ_PG"
    REQS+=("$REQ_PG")
fi
command -v "$BUILD_PYTHON" >/dev/null || die "$BUILD_PYTHON not found (set BUILD_PYTHON to a Python 3 with pip)"
"$BUILD_PYTHON" -m pip --version >/dev/null 2>&1 || die "$BUILD_PYTHON has no pip (python3 -m ensurepip, or set BUILD_PYTHON)"
command -v xz >/dev/null || die "xz not found (install xz-utils)"

mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd -P)"
CACHE="${CACHE:-$REPO/dist/.gpu-kit-cache}"
mkdir -p "$CACHE/$PYTAG"
CACHE="$(cd "$CACHE" && pwd -P)"
WHEELS="$CACHE/$PYTAG"
NAME="swa-autotune-gpu-kit-sglang$SGLANG-$PYTAG-$ARCH"
TARBALL="$OUT/$NAME.tar.xz"
STAGE="$(mktemp -d "$OUT/.gpu-kit-stage.XXXXXX")"
KIT="$STAGE/$NAME"
cleanup() { if [ "$KEEP_STAGE" = 1 ]; then echo "stage kept: $STAGE"; else rm -rf "$STAGE"; fi; }
trap cleanup EXIT
say "kit $NAME: sglang $SGLANG for torch $TORCH, Python $PYVER, $ARCH"

# 1. The pins: exact, once each, and nothing the node already has unless it says why.
"$BUILD_PYTHON" "$KITPY" check-reqs "$HERE/node-base.txt" "${REQS[@]}"

# 2. Download what the cache lacks (wheels only, for the node's Python and platform; no dependency resolution).
fetch_wheels "${REQS[@]}"
mapfile -t DEP_WHEELS < <("$BUILD_PYTHON" "$KITPY" wheels "$WHEELS" "${REQS[@]}")

# The sglang wheel pins the torch it was built against: it must be the node's.
PINNED_TORCH="$("$BUILD_PYTHON" - "$WHEELS" "$SGLANG" <<'EOF'
import sys, zipfile, pathlib, re
wheels, version = sys.argv[1], sys.argv[2]
for p in pathlib.Path(wheels).glob(f"sglang-{version}-*.whl"):
    z = zipfile.ZipFile(p)
    md = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA") and n.count("/") == 1)
    m = re.search(r"^Requires-Dist: torch\s*\(?==\s*([^;\s)]+)", z.read(md).decode(), re.M)
    print(m.group(1) if m else "")
    break
EOF
)"
[ "$PINNED_TORCH" = "$TORCH" ] \
    || die "sglang $SGLANG pins torch==${PINNED_TORCH:-?}, but the kit is for torch $TORCH: pick the matching --torch/--sglang pair"

# 3. This project's wheel, built from a copy of the checkout (tracked and untracked-but-not-ignored files).
say "building the swa-autotune wheel"
mkdir -p "$STAGE/src" "$STAGE/project"
if git -C "$REPO" rev-parse --git-dir >/dev/null 2>&1; then
    GIT_COMMIT="$(git -C "$REPO" rev-parse HEAD)"
    GIT_DIRTY=false
    [ -z "$(git -C "$REPO" status --porcelain)" ] || GIT_DIRTY=true  # uncommitted or untracked files went in
    (cd "$REPO" && git ls-files -z --cached --others --exclude-standard \
        | while IFS= read -r -d '' f; do [ -f "$f" ] && printf '%s\0' "$f"; done \
        | tar --null -T - -cf -) | tar -C "$STAGE/src" -xf -
else
    GIT_COMMIT=unknown
    GIT_DIRTY=true
    cp -R "$REPO/pyproject.toml" "$REPO/README.md" "$REPO/autotune" "$REPO/workers" "$REPO/search_spaces" "$STAGE/src/"
fi
ISOLATION=()
if "$BUILD_PYTHON" -c 'import setuptools, wheel, sys; sys.exit(int(setuptools.__version__.split(".")[0]) < 68)' 2>/dev/null; then
    ISOLATION=(--no-build-isolation)  # the local setuptools will do; no index needed for this step
fi
"$BUILD_PYTHON" -m pip wheel --no-deps ${ISOLATION[@]+"${ISOLATION[@]}"} --progress-bar off -w "$STAGE/project" "$STAGE/src" \
    > "$STAGE/pip-wheel.log" 2>&1 || { tail -20 "$STAGE/pip-wheel.log" >&2; die "building the project wheel failed"; }
PROJECT_WHEEL="$(ls "$STAGE"/project/swa_autotune-*.whl 2>/dev/null | head -1)"
[ -n "$PROJECT_WHEEL" ] || die "pip wheel produced no swa_autotune-*.whl"
PROJECT_VERSION="$(basename "$PROJECT_WHEEL" | cut -d- -f2)"

# 4. Unpack every wheel into site/ (a plain zip extract; *.data/purelib|platlib merged in), skipping the trim list.
say "unpacking $(( ${#DEP_WHEELS[@]} + 1 )) wheels (trim list: $(basename "$TRIM"))"
mkdir -p "$KIT"
"$BUILD_PYTHON" "$KITPY" install "$KIT/site" "$STAGE/data" "$TRIM" "${DEP_WHEELS[@]}" "$PROJECT_WHEEL" \
    > "$STAGE/install.json"
"$BUILD_PYTHON" - "$STAGE/install.json" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
for p in d["unused_trim_patterns"]:
    if "__pycache__" not in p:
        print(f"build.sh: warning: trim pattern '{p}' matched nothing (renamed in this release?)", file=sys.stderr)
print(f"    {len(d['distributions'])} distributions, {sum(x['bytes'] for x in d['distributions'])/1e6:.0f} MB unpacked; "
      f"trimmed {len(d['trimmed'])} files, {sum(t['bytes'] for t in d['trimmed'])/1e6:.0f} MB")
EOF
SPACES="$STAGE/data/share/swa-autotune/search_spaces"
[ -n "$(ls "$SPACES"/*.yaml 2>/dev/null)" ] || die "the project wheel carries no search_spaces/*.yaml (pyproject data-files?)"
cp -R "$SPACES" "$KIT/search_spaces"

# 5. Audit: every shipped distribution's requirements, against the kit and the node; conflicts fail the build.
"$BUILD_PYTHON" "$KITPY" audit "$HERE/node-base.txt" "$STAGE/install.json" > "$STAGE/audit.json"
for must in sglang/srt/server_args.py sgl_kernel/__init__.py sgl_kernel/sm90 autotune/cli/app.py workers/__init__.py; do
    [ -e "$KIT/site/$must" ] || die "site/$must is missing from the kit"
done
[ ! -e "$KIT/site/sgl_kernel/flash_ops.abi3.so" ] || die "the trim list did not remove sgl_kernel/flash_ops.abi3.so"

# 6. Manifest, node script, README; then pack.
EXTRAS=""
[ "$WITH_PG" = 1 ] && EXTRAS=postgres
"$BUILD_PYTHON" "$KITPY" manifest "$KIT/manifest.json" "$STAGE/install.json" "$STAGE/audit.json" \
    sglang="$SGLANG" torch="$TORCH" python="$PYVER" arch="$ARCH" \
    built_at="$(date -u +%Y-%m-%dT%H:%M:%SZ)" project_version="$PROJECT_VERSION" \
    git_commit="$GIT_COMMIT" git_dirty="$GIT_DIRTY" extras="$EXTRAS" \
    serve_flags="--attention-backend triton --sampling-backend pytorch"
cp "$HERE/node.sh" "$KIT/node.sh"
chmod 755 "$KIT/node.sh"
[ -f "$REPO/docs/air-gapped.md" ] && cp "$REPO/docs/air-gapped.md" "$KIT/README.md"

# FlashInfer builds its JIT modules with ninja from sources the kit ships (site/flashinfer/data/...), and ninja
# rebuilds whatever looks older than its sources: a compile-cache file carried from a lease that ran an earlier
# kit (node.sh caches) was rebuilt on the next machine because every kit build stamped those sources with its own
# time (docs/real-gpu/boot-cost.md). Every non-Python file of the kit gets one fixed time instead, so a cache
# built with any kit of the same FlashInfer is current. Python sources keep theirs: .pyc files are checked by it.
KIT_DATA_EPOCH=1767225600  # 2026-01-01T00:00:00Z
find "$KIT/site" -type f ! -name '*.py' -exec touch -h -d "@$KIT_DATA_EPOCH" {} +

say "packing $TARBALL (xz ${XZ_OPT:--9e -T1})"
TAR_OPTS=()
if tar --version 2>/dev/null | head -1 | grep -q GNU; then
    TAR_OPTS=(--owner=0 --group=0 --numeric-owner --sort=name)
fi
rm -f "$TARBALL" "$TARBALL.over-limit"
(cd "$KIT" && tar ${TAR_OPTS[@]+"${TAR_OPTS[@]}"} -cf - *) | xz ${XZ_OPT:--9e -T1} -c > "$TARBALL.part"
mv "$TARBALL.part" "$TARBALL"

BYTES="$(wc -c < "$TARBALL" | tr -d ' ')"
MB="$(awk -v b="$BYTES" 'BEGIN { printf "%.1f", b / 1000000 }')"
UNPACKED_MB="$(du -sm "$KIT" | cut -f1)"
echo "kit: $TARBALL"
echo "kit size: $MB MB ($BYTES bytes; unpacks to ${UNPACKED_MB} MiB; limit $MAX_MB MB); built in $(( SECONDS - START )) s"
if awk -v b="$BYTES" -v m="$MAX_MB" 'BEGIN { exit !(b > m * 1000000) }'; then
    mv "$TARBALL" "$TARBALL.over-limit"
    die "the kit is $MB MB, over the $MAX_MB MB limit (--max-mb / SWA_KIT_MAX_MB). Kept as $TARBALL.over-limit; trim more in $(basename "$TRIM") or drop distributions."
fi

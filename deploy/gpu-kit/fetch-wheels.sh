# Sourced by build.sh and build-ray.sh: bring the wheels a kit's pins name into the cache.
#
#   fetch_wheels REQUIREMENTS... -> the cache's missing wheels downloaded, for the node's Python
#   ($PYVER) and manylinux x86_64, without dependency resolution (the pins are the whole set).
# Needs from the caller: BUILD_PYTHON, KITPY, WHEELS (the cache), STAGE (scratch), say, die.

fetch_wheels() {
    "$BUILD_PYTHON" "$KITPY" missing "$WHEELS" "$@" > "$STAGE/missing.txt"
    if [ ! -s "$STAGE/missing.txt" ]; then
        say "all wheels already in $WHEELS"
        return 0
    fi
    say "downloading $(wc -l < "$STAGE/missing.txt" | tr -d ' ') wheels into $WHEELS"
    "$BUILD_PYTHON" -m pip download --no-deps --only-binary=:all: --progress-bar off \
        --python-version "$PYVER" --implementation cp \
        --platform manylinux_2_34_x86_64 --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
        --platform manylinux_2_17_x86_64 --platform manylinux_2_5_x86_64 --platform manylinux2014_x86_64 \
        --platform manylinux1_x86_64 --platform any \
        -d "$WHEELS" -r "$STAGE/missing.txt" > "$STAGE/pip-download.log" 2>&1 \
        || { tail -20 "$STAGE/pip-download.log" >&2; die "pip download failed (full log above; is PyPI reachable?)"; }
}

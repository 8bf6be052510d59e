#!/usr/bin/env bash
# Installs the PostgreSQL server binaries (initdb, postgres) that the store's tests start a
# throwaway server from (tests/conftest.py::postgres_url). Idempotent: installs only when they
# are missing. Prints where initdb is.
set -euo pipefail

find_bindir() {
    local dir
    local on_path
    on_path=$(command -v initdb 2>/dev/null || true)
    for dir in /usr/lib/postgresql/15/bin ${on_path:+"$(dirname "$(readlink -f "$on_path")")"} /usr/lib/postgresql/*/bin; do
        if [ -x "$dir/initdb" ] && [ -x "$dir/postgres" ]; then
            echo "$dir"
            return 0
        fi
    done
    return 1
}

if ! bindir=$(find_bindir); then
    if ! command -v apt-get >/dev/null; then
        echo "error: PostgreSQL server binaries not found and apt-get is not available;" \
             "install the PostgreSQL 15 server with your package manager" >&2
        exit 1
    fi
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        sudo="sudo"
    fi
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -q
    # postgresql-15 where the distribution has it (Debian 12), else the distribution's default version.
    $sudo apt-get install -y -q --no-install-recommends postgresql-15 \
        || $sudo apt-get install -y -q --no-install-recommends postgresql
    bindir=$(find_bindir) || { echo "error: PostgreSQL was installed but initdb was not found" >&2; exit 1; }
fi
echo "initdb: $bindir/initdb"

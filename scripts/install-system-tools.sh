#!/usr/bin/env bash
# Debian packages the tests drive for real: headless Chromium (the dashboard's browser test) and
# Prometheus (the scrape/service-discovery test). Idempotent: installs only what is missing.
set -euo pipefail
missing=()
command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || missing+=(chromium)
[ -x /usr/bin/prometheus ] || missing+=(prometheus)
[ ${#missing[@]} -eq 0 ] && exit 0
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
echo "installing ${missing[*]} (apt)"
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
command -v chromium >/dev/null && [ -x /usr/bin/prometheus ]

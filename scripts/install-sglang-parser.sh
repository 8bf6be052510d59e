#!/usr/bin/env bash
# Installs real SGLang's argument parser on a CPU machine, for the contract tests
# (docs/reference/sglang.md §8): the sglang wheel without its GPU dependencies, the CPU build
# of torch, triton (imported by sglang.srt.utils, never run here) and the small packages the
# parser imports. Idempotent: a no-op once `prepare_server_args` imports.
set -euo pipefail
PYTHON=${PYTHON:-python3}
if "$PYTHON" -c "from sglang.srt.server_args import prepare_server_args" 2>/dev/null; then
    exit 0
fi
"$PYTHON" -m pip install -q --no-deps "sglang==0.5.23" "triton>=3.5"
"$PYTHON" -m pip install -q "torch==2.13.0" numpy psutil requests packaging orjson pydantic pybase64 \
    pillow starlette msgspec pyzmq tqdm IPython aiohttp pyyaml
"$PYTHON" -c "from sglang.srt.server_args import prepare_server_args" \
    || { echo "error: SGLang's parser does not import after install" >&2; exit 1; }

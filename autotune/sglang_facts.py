"""What this project relies on about SGLang's command line, in one place.

The module real SGLang is launched with, its default `--swa-full-tokens-ratio` (the baseline
every gain is measured against), the flag names the tuner sets, how a flag is spelled on the
command line and in a `--config` file, and which flags only the simulator understands. Every
other module takes these from here; tests/test_sglang_contract.py checks them against SGLang's
own parser.
"""

from __future__ import annotations

from typing import Mapping

from autotune.sim.own_flags import simulator_flag_names

LAUNCH_MODULE = "sglang.launch_server"  # python -m LAUNCH_MODULE starts an SGLang server

DEFAULT_RATIO = 0.8  # SGLang's effective --swa-full-tokens-ratio when it is not passed

# The tuned parameter: SGLang's ServerArgs field, an Optuna parameter name and, spelled with
# to_flag, a --config key.
RATIO = "swa_full_tokens_ratio"

# Flags the tuner sets or reads, by SGLang's long name without the dashes.
RATIO_FLAG = "swa-full-tokens-ratio"
PAGE_SIZE = "page-size"
TP_SIZE = "tp-size"
MEM_FRACTION_STATIC = "mem-fraction-static"
KV_CACHE_DTYPE = "kv-cache-dtype"
CHUNKED_PREFILL_SIZE = "chunked-prefill-size"
ENABLE_METRICS = "enable-metrics"
LOAD_FORMAT = "load-format"
SKIP_TOKENIZER_INIT = "skip-tokenizer-init"
# The largest decode batch captured as a CUDA graph. 0.5.23 split the old --cuda-graph-max-bs into
# -decode and -prefill (its parser refuses the old name as ambiguous); 0.5.17 accepts -decode too
# (docs/real-gpu/footprint/call1/results.jsonl boots 0.5.17 with it).
CUDA_GRAPH_MAX_BS = "cuda-graph-max-bs-decode"
# Flags by which a user decides decode graph capture themselves: any of them after `--`, and the
# tuner leaves CUDA_GRAPH_MAX_BS alone. (A prefix: "--cuda-graph-max-bs" covers -decode/-prefill.)
CUDA_GRAPH_USER_FLAGS = (
    "--cuda-graph-max-bs", "--cuda-graph-bs", "--cuda-graph-config", "--cuda-graph-backend-decode",
    "--disable-cuda-graph", "--disable-decode-cuda-graph",
)
# SGLang's largest default decode max_bs (0.5.23 sglang/srt/arg_groups/memory_hook.py sets 8 to 512 by
# GPU memory and TP): above it, capturing up to the concurrency would cost boot time, not save it.
CUDA_GRAPH_DEFAULT_MAX_BS = 512

# Flags only the simulated server understands, taken from the simulator's own parser: they go
# to the `sim` backend's command line and never to real SGLang.
SIMULATOR_ONLY_FLAGS = simulator_flag_names()


def to_flag(name: str) -> str:
    """SGLang's flag name for a ServerArgs field: swa_full_tokens_ratio -> swa-full-tokens-ratio."""
    return name.replace("_", "-")


def flag_args(flags: Mapping[str, object]) -> list[str]:
    """SGLang's command-line form of a flag mapping: `--name value`, `--name` for True, lists spread.

    The same rules as SGLang's `--config` file (docs/reference/sglang.md §1), so a flag set and an exported
    config mean the same thing. Keys are the long names without dashes: `swa-full-tokens-ratio`.
    """
    args: list[str] = []
    for name, value in flags.items():
        if "_" in name:
            raise ValueError(f"flag {name!r}: use SGLang's hyphenated name ({to_flag(name)!r})")
        if value is None or value is False:
            continue
        if value is True:
            args.append(f"--{name}")
        elif isinstance(value, (list, tuple)):
            args.extend([f"--{name}", *map(str, value)])
        else:
            args.extend([f"--{name}", str(value)])
    return args


def decode_graph_batch_sizes(limit: int = CUDA_GRAPH_DEFAULT_MAX_BS) -> list[int]:
    """The decode batch sizes SGLang captures without speculative decoding, up to `limit`
    (0.5.23 sglang/srt/arg_groups/cuda_graph_hook.py, generate_decode_cuda_graph_batch_sizes)."""
    sizes = [1, 2, 4, 8, 12, *range(16, 257, 8), *range(272, 512, 16), *range(512, limit + 1, 32)]
    return [bs for bs in sizes if bs <= limit]


def graph_max_bs_for(concurrency: int | None) -> int | None:
    """--cuda-graph-max-bs-decode for a workload that never runs more than `concurrency` requests
    at once: the smallest captured batch size that holds it, so every decode batch replays a graph
    and none larger is captured. None (leave SGLang's default) without a limit or above the default."""
    if concurrency is None or concurrency < 1 or concurrency > CUDA_GRAPH_DEFAULT_MAX_BS:
        return None
    return next(bs for bs in decode_graph_batch_sizes() if bs >= concurrency)


def sets_cuda_graphs(extra_args: tuple[str, ...] | list[str]) -> bool:
    """True when the user's own SGLang arguments decide decode graph capture."""
    return any(arg.split("=", 1)[0].startswith(CUDA_GRAPH_USER_FLAGS) for arg in extra_args)

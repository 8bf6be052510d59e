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

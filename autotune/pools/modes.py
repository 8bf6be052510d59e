"""SGLang's memory modes for hybrid SWA models, and whether `--swa-full-tokens-ratio` still matters.

SGLang does not always honour the ratio (read from the 0.5.17 and 0.5.23 sources):
- `--enable-unified-memory`: one byte arena replaces the two static pools and is split between
  them at run time (server_args `_handle_unified_memory_pool`; pool_configurator's unified sizing);
- `--max-running-requests` with `--disable-radix-cache` and chunked prefill: the SWA pool is sized
  from a per-request cap (window + eviction interval + page per request, plus the prefill chunks in
  flight) and the full pool gets the rest (`SWAChunkCapPoolConfigurator` in 0.5.17,
  `SWARequestCapPoolConfigurator` in 0.5.23, both `is_applicable` on exactly these flags);
- `--disable-hybrid-swa-memory`: no split at all, every layer in one pool.
A study of a knob SGLang ignores measures noise, so a plan with such flags is refused before any
trial, naming the flag and the rule.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

STATIC = "static"
UNIFIED = "unified"
REQUEST_CAP = "request-cap"
SINGLE_POOL = "single-pool"


class RatioIgnored(ValueError):
    """The flags put SGLang in a memory mode that ignores --swa-full-tokens-ratio."""


@dataclass(frozen=True)
class MemoryMode:
    name: str  # static | unified | request-cap | single-pool
    reason: str  # which flags, and SGLang's rule

    @property
    def ratio_matters(self) -> bool:
        return self.name == STATIC


def _flag_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--config")
    parser.add_argument("--enable-unified-memory", action="store_true", default=None)
    parser.add_argument("--disable-hybrid-swa-memory", action="store_true", default=None)
    parser.add_argument("--disable-radix-cache", action="store_true", default=None)
    parser.add_argument("--max-running-requests", type=int)
    parser.add_argument("--chunked-prefill-size", type=int)
    return parser


def _settings(flags: Mapping[str, object], extra_args: Sequence[str]) -> dict[str, object]:
    """The mode flags as SGLang would see them: a --config file first, then flags, then the
    command line's extra args (SGLang's precedence: the command line beats the config file)."""
    parsed, _ = _flag_parser().parse_known_args(list(extra_args))
    settings: dict[str, object] = {}
    config = parsed.config or flags.get("config")
    if config:
        path = Path(str(config))
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ValueError(f"--config {path}: cannot read it ({exc})") from None
        if not isinstance(data, dict):
            raise ValueError(f"--config {path}: expected a mapping of SGLang flags, got {type(data).__name__}")
        settings.update({str(k).replace("_", "-"): v for k, v in data.items()})
    settings.update({k: v for k, v in flags.items() if v is not None})
    settings.update({k.replace("_", "-"): v for k, v in vars(parsed).items() if v is not None and k != "config"})
    return settings


def memory_mode(flags: Mapping[str, object], extra_args: Sequence[str] = (), *,
                sglang_version: str | None = None) -> MemoryMode:
    """The memory mode the server flags select (hyphenated flag names, as the plan keeps them).
    `sglang_version` only matters for an unchunked prefill: 0.5.17's request-cap configurator
    applies to any --chunked-prefill-size SGLang set (even -1), 0.5.23's only to a positive one."""
    from autotune.pools.mode_sizing import request_cap_applies

    s = _settings(flags, extra_args)
    if s.get("disable-hybrid-swa-memory"):
        return MemoryMode(SINGLE_POOL, "--disable-hybrid-swa-memory turns the SWA/full split off: every layer's KV "
                                       "lives in one pool")
    if s.get("enable-unified-memory"):
        return MemoryMode(UNIFIED, "--enable-unified-memory replaces the two static pools with one byte arena that "
                                   "SGLang splits between them at run time")
    chunk = s.get("chunked-prefill-size")
    # SGLang chunks by default; -1 or 0 turns it off (0.5.23's is_applicable; 0.5.17 still applies)
    chunked = chunk is None or request_cap_applies(sglang_version or "0.5.23", int(chunk))
    if s.get("max-running-requests") is not None and s.get("disable-radix-cache") and chunked:
        return MemoryMode(REQUEST_CAP, f"--max-running-requests {s['max-running-requests']} with --disable-radix-cache "
                                       "and chunked prefill: SGLang sizes the SWA pool from a per-request cap (window "
                                       "+ eviction interval + page per request, plus the prefill chunks in flight) "
                                       "and gives the rest to the full pool")
    return MemoryMode(STATIC, "two static pools split by --swa-full-tokens-ratio")


def require_ratio_to_matter(flags: Mapping[str, object], extra_args: Sequence[str] = ()) -> MemoryMode:
    """The static mode, or RatioIgnored naming the flags and the way out."""
    mode = memory_mode(flags, extra_args)
    if not mode.ratio_matters:
        fix = {
            SINGLE_POOL: "drop --disable-hybrid-swa-memory to tune the split",
            UNIFIED: "drop --enable-unified-memory to tune the static split it would replace, or measure both with "
                     "--modes static,unified",
            REQUEST_CAP: "drop --max-running-requests or --disable-radix-cache to tune the ratio",
        }[mode.name]
        raise RatioIgnored(f"{mode.reason}, so --swa-full-tokens-ratio has no effect and a study of it would measure "
                           f"noise. Nothing was run. To tune: {fix}.")
    return mode

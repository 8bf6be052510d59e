"""The simulated server's command line: SGLang's flag names, defaults, `--config` merging and errors.

The tuner's worker launches `python -m sglang.launch_server ...` on GPUs and
`python -m autotune.sim.server ...` here with the *same* flags, so this parser accepts what a
real launch passes, with SGLang's semantics where they change the simulation and silently
otherwise, and refuses what SGLang refuses the way SGLang does:

- unknown flags: argparse's `error: unrecognized arguments: --foo`, exit 2 (abbreviations are
  refused too, so a flag misspelled here is not silently accepted);
- `--config FILE.yaml` (srt/utils/server_args_config_parser.py): only .yaml/.yml, a mapping at the
  root, one `--config` per command; keys are the hyphenated long flag names, `true` adds a
  store-true flag, lists become `--k v1 v2`; the file's arguments go *before* the command line's,
  so command line > config file > defaults. An underscore key (`swa_full_tokens_ratio:`) becomes
  `--swa_full_tokens_ratio`, which argparse rejects as unrecognized, exactly as SGLang does. The
  file errors SGLang raises as ValueError surface as `ConfigFileError` (the server exits 1);
- `--swa-full-tokens-ratio` outside (0, 1]: SGLang's text (kv_cache_hook.py), but as an argument
  error (exit 2) rather than SGLang's start-up traceback, so a tuner can tell "bad value" from
  "the pool refused this value" (exit 1).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, Sequence

import yaml

from autotune.hardware import GPUProfile, UnknownGPU, load_gpu
from autotune.models import ModelSpec, load_model
from autotune.models.spec import KV_DTYPE_BYTES
from autotune.pools import pinned_budget
from autotune.sim.config import DEFAULT_DECODE_LOG_INTERVAL, DEFAULT_MAX_PREFILL_TOKENS, SimServerConfig
from autotune.sim.own_flags import add_simulator_flags

PROG = "python -m autotune.sim.server"

# Flags a real launch passes that do not change what the simulator does (dest -> argparse kwargs).
# They are accepted, kept, and reported back by /server_info like any other argument.
_IGNORED_VALUED: dict[str, dict[str, Any]] = {
    "--load-format": {"default": "auto"},
    "--attention-backend": {"default": None},
    "--sampling-backend": {"default": None},
    "--log-level": {"default": "info"},
    "--served-model-name": {"default": None},
    "--random-seed": {"type": int, "default": None},
    "--dtype": {"default": "auto"},
}
_IGNORED_SWITCHES = ("--trust-remote-code",)


class ConfigFileError(ValueError):
    """What SGLang's ConfigArgumentMerger raises (a ValueError at start-up, exit 1)."""


class FlagConflict(ValueError):
    """Flags that are valid alone but not together for this model (an argument error, exit 2)."""


@dataclass(frozen=True)
class SimArgs:
    """The parsed command line: SGLang's names, values as given (None = not passed)."""

    model_path: str
    host: str
    port: int
    swa_full_tokens_ratio: float | None
    mem_fraction_static: float | None
    page_size: int | None
    chunked_prefill_size: int | None
    max_prefill_tokens: int
    max_running_requests: int | None
    max_total_tokens: int | None
    enable_metrics: bool
    disable_hybrid_swa_memory: bool
    disable_radix_cache: bool
    enable_unified_memory: bool  # one byte arena for both pools (autotune/pools/mode_sizing.py)
    skip_tokenizer_init: bool  # output_ids only, no text (BatchTokenIDOutput); text prompts refused
    tp_size: int
    kv_cache_dtype: str
    decode_log_interval: int
    context_length: int | None
    config: str | None
    disable_cuda_graph: bool
    disable_prefill_cuda_graph: bool
    disable_overlap_schedule: bool
    # simulator-only
    gpu: str
    kv_budget_gb: float | None
    speculative_accept_length: float | None
    time_scale: float
    boot_delay: float
    sglang_version: str
    # accepted, no effect on the simulation
    ignored: dict[str, Any]

    @property
    def served_model_name(self) -> str:
        """SGLang defaults the served name (metrics label, /v1/models id) to --model-path."""
        return self.ignored.get("served_model_name") or self.model_path

    def as_dict(self) -> dict[str, Any]:
        """Flat name -> value, the way /server_info lists server args."""
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "ignored"}
        data.update(self.ignored)
        data["served_model_name"] = self.served_model_name
        return data


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        allow_abbrev=False,
        description="A simulated SGLang server (HTTP API, /metrics, log lines) for machines without a GPU.",
    )
    add = parser.add_argument
    add("--model-path", "--model", required=True, help="Directory with a config.json, or a catalog alias / hub id.")
    add("--host", default="127.0.0.1")
    add("--port", type=int, default=30000)
    add("--swa-full-tokens-ratio", type=float, default=None, help="SWA tokens / full tokens, (0, 1]; unset: 0.8.")
    add("--mem-fraction-static", type=float, default=None)
    add("--page-size", type=int, default=None)
    add("--chunked-prefill-size", type=int, default=None)
    add("--max-prefill-tokens", type=int, default=DEFAULT_MAX_PREFILL_TOKENS)
    add("--max-running-requests", type=int, default=None)
    add("--max-total-tokens", type=int, default=None)
    add("--enable-metrics", action="store_true")
    add("--disable-hybrid-swa-memory", action="store_true")
    add("--disable-radix-cache", action="store_true")
    add("--enable-unified-memory", action="store_true",
        help="One KV byte arena for both pools, split at run time; --sglang-version picks the release's rules.")
    add("--skip-tokenizer-init", action="store_true")
    add("--tp-size", "--tp", "--tensor-parallel-size", dest="tp_size", type=int, default=1)
    add("--kv-cache-dtype", default="auto", choices=sorted(KV_DTYPE_BYTES))
    add("--decode-log-interval", type=int, default=DEFAULT_DECODE_LOG_INTERVAL)
    add("--context-length", type=int, default=None, help="Overrides the model's context length.")
    add("--config", default=None, help="A YAML file of flags (hyphenated keys); the command line wins.")
    add("--disable-cuda-graph", action="store_true")
    add("--disable-prefill-cuda-graph", action="store_true", help="Eager prefill: the GPU profile's eager step overhead.")
    add("--disable-overlap-schedule", action="store_true",
        help="SGLang's plain event loop: a batch's results enter the radix tree before the next round is scheduled.")
    for flag, kwargs in _IGNORED_VALUED.items():
        add(flag, help=argparse.SUPPRESS, **kwargs)
    for flag in _IGNORED_SWITCHES:
        add(flag, action="store_true", help=argparse.SUPPRESS)
    add_simulator_flags(parser.add_argument_group("simulator only"))
    return parser


def merge_config_file(argv: Sequence[str], parser: argparse.ArgumentParser) -> list[str]:
    """SGLang's ConfigArgumentMerger.merge_config_with_args: file arguments first, then the rest."""
    argv = list(argv)
    if any(arg.startswith("--config=") for arg in argv):
        # SGLang only merges `--config FILE`; with `--config=FILE` it parses the flag and ignores
        # the file. Refuse rather than reproduce that trap.
        raise ConfigFileError("Write `--config FILE` (SGLang does not read `--config=FILE`).")
    positions = [i for i, arg in enumerate(argv) if arg == "--config"]
    if not positions:
        return argv
    if len(positions) > 1:
        raise ConfigFileError("Multiple config files specified! Only one allowed.")
    index = positions[0]
    if index == len(argv) - 1:
        raise ConfigFileError("No config file specified after --config flag!")
    data = _read_config(argv[index + 1])
    switches = {
        action.dest
        for action in parser._actions  # noqa: SLF001 - argparse has no public action list
        if isinstance(action, argparse._StoreTrueAction)  # noqa: SLF001
    }
    return _config_to_args(data, switches) + argv[:index] + argv[index + 2 :]


def _read_config(file_path: str) -> dict[str, Any]:
    path = Path(file_path)
    if path.suffix.lower() not in (".yaml", ".yml"):
        raise ConfigFileError(f"Config file must be YAML format, got: {path.suffix}")
    if not path.exists():
        raise ConfigFileError(f"Config file not found: {file_path}")
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigFileError("Config file must contain a dictionary at root level")
    return data


def _config_to_args(config: dict[str, Any], switches: set[str]) -> list[str]:
    args: list[str] = []
    for key, value in config.items():
        if isinstance(value, bool):
            if key.replace("-", "_") in switches:
                if value:
                    args.append(f"--{key}")
            else:
                args.extend([f"--{key}", str(value).lower()])
        elif isinstance(value, list):
            if value:
                args.append(f"--{key}")
                args.extend(str(item) for item in value)
        elif isinstance(value, dict):
            args.extend([f"--{key}", json.dumps(value)])
        else:
            args.extend([f"--{key}", str(value)])
    return args


def parse_args(argv: Sequence[str]) -> SimArgs:
    """Parse like SGLang; argument errors exit 2 (argparse), config-file errors raise ConfigFileError."""
    parser = build_parser()
    ns = parser.parse_args(merge_config_file(argv, parser))
    values = vars(ns)
    argv = list(argv)
    values["config"] = argv[argv.index("--config") + 1] if "--config" in argv else None
    ignored_dests = {flag[2:].replace("-", "_") for flag in (*_IGNORED_VALUED, *_IGNORED_SWITCHES)}
    ignored = {dest: values.pop(dest) for dest in sorted(ignored_dests)}
    args = SimArgs(**values, ignored=ignored)
    _check(args, parser)
    return args


def _check(args: SimArgs, parser: argparse.ArgumentParser) -> None:
    def fail(message: str) -> NoReturn:
        parser.error(message)

    ratio = args.swa_full_tokens_ratio
    if ratio is not None and not (0 < ratio <= 1.0):
        fail(f"argument --swa-full-tokens-ratio: --swa-full-tokens-ratio should be in range (0, 1.0], got {ratio}.")
    if args.mem_fraction_static is not None and not 0 < args.mem_fraction_static < 1:
        fail(f"argument --mem-fraction-static: must be in (0, 1), got {args.mem_fraction_static}.")
    positive = {
        "--page-size": args.page_size,
        "--chunked-prefill-size": args.chunked_prefill_size,
        "--max-prefill-tokens": args.max_prefill_tokens,
        "--max-running-requests": args.max_running_requests,
        "--max-total-tokens": args.max_total_tokens,
        "--tp-size": args.tp_size,
        "--decode-log-interval": args.decode_log_interval,
        "--context-length": args.context_length,
    }
    for flag, value in positive.items():
        if value is not None and value < 1:
            extra = " (the simulator needs chunked prefill on)" if flag == "--chunked-prefill-size" else ""
            fail(f"argument {flag}: must be a positive integer, got {value}{extra}.")
    if not (args.time_scale > 0 and math.isfinite(args.time_scale)):
        fail(f"argument --time-scale: must be a positive number, got {args.time_scale}.")
    if not (args.boot_delay >= 0 and math.isfinite(args.boot_delay)):
        fail(f"argument --boot-delay: must be a non-negative number of seconds, got {args.boot_delay}.")
    if args.kv_budget_gb is not None and not (args.kv_budget_gb > 0 and math.isfinite(args.kv_budget_gb)):
        fail(f"argument --kv-budget-gb: must be a positive number of decimal GB, got {args.kv_budget_gb}.")
    if not 0 < args.port < 65536:
        fail(f"argument --port: must be in 1..65535, got {args.port}.")
    try:
        load_gpu(args.gpu)
    except (UnknownGPU, ValueError) as exc:
        fail(f"argument --gpu: {exc}")


def load_model_for(args: SimArgs) -> ModelSpec:
    """The model as SGLang would run it: --context-length replaces the config's length."""
    model = load_model(args.model_path)
    if args.context_length is not None:
        model = dataclasses.replace(model, context_len=args.context_length)
    return model


def server_config(args: SimArgs, model: ModelSpec, gpu: GPUProfile) -> SimServerConfig:
    config = SimServerConfig(
        model=model,
        gpu=gpu,
        swa_full_tokens_ratio=args.swa_full_tokens_ratio,
        page_size=args.page_size or 1,
        chunked_prefill_size=args.chunked_prefill_size,
        max_prefill_tokens=args.max_prefill_tokens,
        max_running_requests=args.max_running_requests,
        max_total_tokens=args.max_total_tokens,
        mem_fraction_static=args.mem_fraction_static,
        kv_budget_bytes=pinned_budget(args.kv_budget_gb).bytes if args.kv_budget_gb is not None else None,
        disable_hybrid_swa_memory=args.disable_hybrid_swa_memory,
        enable_unified_memory=args.enable_unified_memory,
        tp_size=args.tp_size,
        kv_cache_dtype=args.kv_cache_dtype,
        speculative_accept_length=args.speculative_accept_length,
        decode_log_interval=args.decode_log_interval,
        sglang_version=args.sglang_version,
        prefill_cuda_graph=not (args.disable_cuda_graph or args.disable_prefill_cuda_graph),
        overlap_schedule=not args.disable_overlap_schedule,
        dummy_weights=args.ignored.get("load_format") == "dummy",
    )
    if config.hybrid and args.disable_radix_cache and args.max_running_requests is not None:
        # docs/reference/sglang.md §1: SGLang then sizes the SWA pool from the request cap
        # (SWARequestCapPoolConfigurator) and ignores the ratio. The simulator does not model
        # that layout, and a tuner must not combine the two flags anyway.
        raise FlagConflict(
            "--disable-radix-cache together with --max-running-requests makes SGLang size the SWA pool "
            "from the request cap and ignore --swa-full-tokens-ratio; the simulator does not model that "
            "layout. Drop one of the two flags."
        )
    return config

"""Named workloads, and the ``--workload`` argument that selects them.

All presets are closed-loop random-ids workloads (bench_serving ``--dataset-name
random-ids --max-concurrency N``) with ``range_ratio=1.0``: every request has
exactly the nominal lengths, so a trial's figures depend on the server's
ratio, not on which lengths the seed happened to draw, and the ``chat`` /
``summarization`` shapes match the user's B200 figures (1k/1k and 8k/1k, seed
1). bench_serving's own default is ``--random-range-ratio 0.0`` (uniform in
[1, L]); use a YAML workload file for that.
"""

from __future__ import annotations

import difflib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from autotune.workloads.arrival import Arrival, MaxConcurrency, PoissonRate, WorkloadError
from autotune.workloads.random_ids import random_ids_workload
from autotune.workloads.sharegpt import load_sharegpt
from autotune.workloads.spec import Workload
from autotune.workloads.trace import load_trace

__all__ = ["PRESETS", "Preset", "get_preset", "load_dataset_file", "load_workload_yaml", "parse_workload_arg"]


@dataclass(frozen=True)
class Preset:
    """A named random-ids workload shape."""

    input_len: int
    output_len: int
    num_prompts: int
    max_concurrency: int
    range_ratio: float
    warmup: int
    description: str


PRESETS: dict[str, Preset] = {
    "chat": Preset(
        input_len=1024, output_len=1024, num_prompts=200, max_concurrency=80, range_ratio=1.0, warmup=1,
        description="1k in / 1k out at 80 concurrent: the load that stalled the dense 31B at ratio 0.15",
    ),
    "summarization": Preset(
        input_len=8192, output_len=1024, num_prompts=64, max_concurrency=32, range_ratio=1.0, warmup=1,
        description="8k in / 1k out at 32 concurrent: full-pool bound, TTFT-sensitive",
    ),
    "long-context": Preset(
        input_len=32768, output_len=512, num_prompts=16, max_concurrency=8, range_ratio=1.0, warmup=1,
        description="32k in / 512 out at 8 concurrent: prefill and full-pool bound",
    ),
    "short-chat": Preset(
        input_len=256, output_len=256, num_prompts=512, max_concurrency=256, range_ratio=1.0, warmup=1,
        description="256 in / 256 out at 256 concurrent: many short requests, SWA-pool bound",
    ),
}


def _unknown_name_error(name: str) -> WorkloadError:
    close = difflib.get_close_matches(name, PRESETS, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return WorkloadError(
        f"unknown workload preset {name!r}.{hint} Valid presets: {', '.join(PRESETS)}; "
        "or give a .jsonl/.json dataset or a .yaml workload file."
    )


def get_preset(
    name: str, *, num_prompts: int | None = None, concurrency: int | None = None, seed: int = 1
) -> Workload:
    """The preset ``name``, optionally with another request count or concurrency."""
    preset = PRESETS.get(name)
    if preset is None:
        raise _unknown_name_error(name)
    return random_ids_workload(
        name,
        num_prompts=preset.num_prompts if num_prompts is None else num_prompts,
        input_len=preset.input_len,
        output_len=preset.output_len,
        range_ratio=preset.range_ratio,
        seed=seed,
        arrival=MaxConcurrency(preset.max_concurrency if concurrency is None else concurrency),
        warmup=preset.warmup,
    )


def _peek_kind(path: Path) -> str:
    """``"trace"`` when the first record has a ``timestamp``, else ``"sharegpt"``."""
    with path.open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                break
        else:
            raise WorkloadError(f"{path}: the file is empty")
        if line.lstrip().startswith("["):
            f.seek(0)
            try:
                items = json.load(f)
            except json.JSONDecodeError as exc:
                raise WorkloadError(f"{path}:{exc.lineno}: invalid JSON: {exc.msg}") from None
            first = items[0] if items else {}
        else:
            try:
                first = json.loads(line)
            except json.JSONDecodeError as exc:
                raise WorkloadError(f"{path}: first record is not JSON ({exc.msg})") from None
    return "trace" if isinstance(first, dict) and "timestamp" in first else "sharegpt"


def load_dataset_file(path: str | Path, **options: Any) -> Workload:
    """A ShareGPT-style or trace file, told apart by its first record's keys.

    ``options`` go to :func:`load_sharegpt` or :func:`load_trace`.
    """
    path = Path(path)
    if not path.is_file():
        raise WorkloadError(f"workload file {path} does not exist")
    if _peek_kind(path) == "trace":
        return load_trace(path, **options)
    return load_sharegpt(path, **options)


# Keys a YAML entry may carry, per entry kind; the first group is required.
_RANDOM_KEYS = (
    {"name", "num_prompts", "input_len", "output_len"},
    {"range_ratio", "max_concurrency", "request_rate", "seed", "warmup"},
)
_DATASET_KEYS = (
    {"dataset"},
    {"name", "num_prompts", "output_len", "context_len", "max_concurrency", "request_rate", "speedup",
     "seed", "warmup"},
)
_PRESET_KEYS = ({"preset"}, {"num_prompts", "max_concurrency", "seed"})
_KEY_TYPES: dict[str, tuple[type, ...]] = {
    **dict.fromkeys(("name", "dataset", "preset"), (str,)),
    **dict.fromkeys(("num_prompts", "input_len", "output_len", "max_concurrency", "seed", "warmup",
                     "context_len"), (int,)),
    **dict.fromkeys(("range_ratio", "request_rate", "speedup"), (int, float)),
}


def _check_keys(entry: Mapping[str, Any], keys: tuple[set[str], set[str]], where: str) -> None:
    required, optional = keys
    for key, value in entry.items():
        expected = _KEY_TYPES.get(key, ())
        if expected and (isinstance(value, bool) or not isinstance(value, expected)):
            kind = " or ".join(t.__name__ for t in expected)
            raise WorkloadError(f"{where}: {key!r} must be {kind}, got {value!r}")
    missing = sorted(required - entry.keys())
    if missing:
        raise WorkloadError(f"{where}: missing key(s) {missing}")
    unknown = sorted(entry.keys() - required - optional)
    if unknown:
        raise WorkloadError(
            f"{where}: unknown key(s) {unknown}; valid keys here are {sorted(required | optional)}"
        )


def _arrival(entry: Mapping[str, Any]) -> Arrival | None:
    """``request_rate`` (+ optional ``max_concurrency``), ``max_concurrency`` alone, or None."""
    rate, limit = entry.get("request_rate"), entry.get("max_concurrency")
    if rate is not None:
        return PoissonRate(rate=float(rate), seed=entry.get("seed", 1), max_concurrency=limit)
    if limit is not None:
        return MaxConcurrency(limit)
    return None


def _yaml_entry(entry: Any, where: str, base_dir: Path) -> Workload:
    if not isinstance(entry, Mapping):
        raise WorkloadError(f"{where}: each workload must be a mapping of keys, got {type(entry).__name__}")
    if "preset" in entry:
        _check_keys(entry, _PRESET_KEYS, where)
        return get_preset(
            entry["preset"],
            num_prompts=entry.get("num_prompts"),
            concurrency=entry.get("max_concurrency"),
            seed=entry.get("seed", 1),
        )
    if "dataset" in entry:
        _check_keys(entry, _DATASET_KEYS, where)
        path = base_dir / entry["dataset"]
        common = {
            "name": entry.get("name"),
            "num_prompts": entry.get("num_prompts"),
            "seed": entry.get("seed", 1),
            "warmup": entry.get("warmup", 1),
        }
        if not path.is_file():
            raise WorkloadError(f"{where}: dataset file {path} does not exist")
        if _peek_kind(path) == "trace":
            if {"max_concurrency", "request_rate", "output_len", "context_len"} & entry.keys():
                raise WorkloadError(
                    f"{where}: {path} is a timestamped trace; it takes 'speedup', not a rate, "
                    "concurrency or length override"
                )
            return load_trace(path, speedup=entry.get("speedup", 1.0), **common)
        if "speedup" in entry:
            raise WorkloadError(f"{where}: 'speedup' applies to timestamped traces only, and {path} is not one")
        return load_sharegpt(
            path,
            fixed_output_len=entry.get("output_len"),
            context_len=entry.get("context_len"),
            arrival=_arrival(entry) or PoissonRate(rate=math.inf),
            **common,
        )
    _check_keys(entry, _RANDOM_KEYS, where)
    arrival = _arrival(entry)
    if arrival is None:
        raise WorkloadError(
            f"{where}: say how requests arrive: add 'max_concurrency: N' (closed loop, like bench_serving "
            "--max-concurrency) or 'request_rate: R' (Poisson, requests/s)"
        )
    return random_ids_workload(
        entry["name"],
        num_prompts=entry["num_prompts"],
        input_len=entry["input_len"],
        output_len=entry["output_len"],
        range_ratio=float(entry.get("range_ratio", 0.0)),
        seed=entry.get("seed", 1),
        arrival=arrival,
        warmup=entry.get("warmup", 1),
    )


def load_workload_yaml(path: str | Path) -> list[Workload]:
    """Workloads from a YAML file: a list of entries, one entry, or ``{workloads: [...]}``.

    An entry is a random-ids workload (``name, num_prompts, input_len,
    output_len`` plus ``range_ratio`` [default 0.0 as in bench_serving],
    ``max_concurrency`` and/or ``request_rate``, ``seed`` [1], ``warmup`` [1]),
    a ``preset:`` with overrides, or a ``dataset:`` file (path relative to the
    YAML file) with ``num_prompts``, ``output_len``, arrival keys or ``speedup``.
    """
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise WorkloadError(f"cannot read workload file {path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise WorkloadError(f"{path}: invalid YAML: {exc}") from None
    if isinstance(data, Mapping) and "workloads" in data:
        data = data["workloads"]
    entries = [data] if isinstance(data, Mapping) else data
    if not isinstance(entries, list) or not entries:
        raise WorkloadError(f"{path}: expected a list of workloads (or 'workloads: [...]'), got {data!r}")
    workloads = []
    for i, entry in enumerate(entries):
        where = f"{path}: workload #{i + 1}"
        try:
            workloads.append(_yaml_entry(entry, where, path.parent))
        except WorkloadError as exc:
            if str(exc).startswith(where):
                raise
            raise WorkloadError(f"{where}: {exc}") from None
    return workloads


def parse_workload_arg(text: str) -> list[Workload]:
    """Workloads from a ``--workload`` value.

    Comma-separated items, each a preset name (``chat,summarization``), a
    ``.jsonl``/``.json`` dataset (ShareGPT-style or a timestamped trace), or a
    ``.yaml``/``.yml`` workload file. Workload names must be unique.
    """
    items = [text.strip()] if Path(text.strip()).is_file() else [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise WorkloadError(f"no workload given; use a preset ({', '.join(PRESETS)}) or a file")
    workloads: list[Workload] = []
    for item in items:
        suffix = Path(item).suffix.lower()
        if suffix in (".yaml", ".yml"):
            workloads.extend(load_workload_yaml(item))
        elif suffix in (".jsonl", ".json"):
            workloads.append(load_dataset_file(item))
        elif item in PRESETS:
            workloads.append(get_preset(item))
        elif suffix or "/" in item:
            raise WorkloadError(
                f"workload file {item!r}: unsupported type; use .jsonl/.json (dataset or trace) or .yaml/.yml"
            )
        else:
            raise _unknown_name_error(item)
    names = [w.name for w in workloads]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise WorkloadError(f"workload name(s) {duplicates} given more than once; names must be unique")
    return workloads

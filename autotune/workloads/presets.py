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
from autotune.workloads.csv_trace import load_csv_trace
from autotune.workloads.histogram import histogram_workload
from autotune.workloads.mix import MixPart, build_mix
from autotune.workloads.random_ids import random_ids_workload
from autotune.workloads.slicing import parse_duration, slice_trace
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
        "or give a .jsonl/.json dataset, a .csv trace or a .yaml workload file."
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
    """A ShareGPT-style or trace file, told apart by its first record's keys (a .csv is a trace).

    ``options`` go to :func:`load_sharegpt`, :func:`load_trace` or :func:`load_csv_trace`.
    """
    path = Path(path)
    if not path.is_file():
        raise WorkloadError(f"workload file {path} does not exist")
    if path.suffix.lower() == ".csv":
        options.pop("num_prompts", None)
        return load_csv_trace(path, **options)
    if _peek_kind(path) == "trace":
        return load_trace(path, **options)
    return load_sharegpt(path, **options)


# Keys a YAML entry may carry, per entry kind; the first group is required.
_SLICE_KEYS = ("start", "duration", "sample")  # timestamped traces only (slicing.py)
_CSV_KEYS = ("model", "log_type", "drop_zero_lengths")  # CSV traces only (csv_trace.py)
_RANDOM_KEYS = (
    {"name", "num_prompts", "input_len", "output_len"},
    {"range_ratio", "max_concurrency", "request_rate", "seed", "warmup"},
)
_DATASET_KEYS = (
    {"dataset"},
    {"name", "num_prompts", "output_len", "context_len", "max_concurrency", "request_rate", "speedup",
     "seed", "warmup", *_SLICE_KEYS, *_CSV_KEYS},
)
_PRESET_KEYS = ({"preset"}, {"num_prompts", "max_concurrency", "seed"})
_MIX_KEYS = ({"mix"}, {"name", "num_prompts", "max_concurrency", "request_rate", "speedup", "seed", "warmup"})
_HISTOGRAM_KEYS = (
    {"name", "histograms", "num_prompts"}, {"max_concurrency", "request_rate", "seed", "warmup", "origin"},
)
_KEY_TYPES: dict[str, tuple[type, ...]] = {
    **dict.fromkeys(("name", "dataset", "preset", "model", "log_type"), (str,)),
    **dict.fromkeys(("num_prompts", "input_len", "output_len", "max_concurrency", "seed", "warmup",
                     "context_len"), (int,)),
    **dict.fromkeys(("range_ratio", "request_rate", "speedup", "sample", "weight"), (int, float)),
    **dict.fromkeys(("start", "duration"), (int, float, str)),
    "drop_zero_lengths": (bool,),
    **dict.fromkeys(("mix",), (list,)),
    **dict.fromkeys(("histograms", "origin"), (dict,)),
}


def _check_keys(entry: Mapping[str, Any], keys: tuple[set[str], set[str]], where: str) -> None:
    required, optional = keys
    for key, value in entry.items():
        expected = _KEY_TYPES.get(key, ())
        if expected and (isinstance(value, bool) != (bool in expected) or not isinstance(value, expected)):
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


def _trace_entry(entry: Mapping[str, Any], path: Path, common: dict[str, Any], where: str) -> Workload:
    """A timestamped trace (Mooncake JSONL or a CSV), cut by start / duration / sample / num_prompts."""
    if {"max_concurrency", "request_rate", "output_len", "context_len"} & entry.keys():
        raise WorkloadError(
            f"{where}: {path} is a timestamped trace; it takes 'speedup', not a rate, "
            "concurrency or length override"
        )
    is_csv = path.suffix.lower() == ".csv"
    csv_options = {k: entry[k] for k in _CSV_KEYS if k in entry}
    if csv_options and not is_csv:
        raise WorkloadError(f"{where}: {sorted(csv_options)} apply to CSV traces (Azure, BurstGPT) only")
    speedup = entry.get("speedup", 1.0)
    if not (_SLICE_KEYS & entry.keys() or is_csv):
        return load_trace(path, speedup=speedup, **common)  # the Mooncake replay as bench_serving does it
    name, num_prompts = common.pop("name"), common.pop("num_prompts")
    if is_csv:
        whole = load_csv_trace(path, speedup=speedup, **common, **csv_options)
    else:
        whole = load_trace(path, speedup=speedup, **common)
    start = parse_duration(entry["start"], f"{where}: 'start'") if "start" in entry else None
    duration = parse_duration(entry["duration"], f"{where}: 'duration'") if "duration" in entry else None
    return slice_trace(whole, start_s=start, duration_s=duration, sample=entry.get("sample"),
                       num_prompts=num_prompts, name=name)


def _mix_entry(entry: Mapping[str, Any], where: str, base_dir: Path, default_name: str | None) -> Workload:
    _check_keys(entry, _MIX_KEYS, where)
    name = entry.get("name", default_name)
    if not name:
        raise WorkloadError(
            f"{where}: a mix needs a 'name': its studies, optima, exports and launch are keyed by it"
        )
    if not entry["mix"]:
        raise WorkloadError(f"{where}: 'mix' lists no parts")
    parts = []
    for k, part in enumerate(entry["mix"]):
        part_where = f"{where}: part #{k + 1}"
        if not isinstance(part, Mapping):
            raise WorkloadError(f"{part_where}: each part must be a mapping of keys, got {type(part).__name__}")
        if "mix" in part:
            raise WorkloadError(f"{part_where}: a mix cannot hold another mix; list its parts here instead")
        weight = part.get("weight")
        _check_keys({"weight": weight} if weight is not None else {}, (set(), {"weight"}), part_where)
        body = {k: v for k, v in part.items() if k != "weight"}
        if "name" not in body and not ({"preset", "dataset", "histograms"} & body.keys()):
            body["name"] = f"{name}-part{k + 1}"  # a random-ids part needs a name; it is only a label here
        try:
            workload = _yaml_entry(body, part_where, base_dir)
        except WorkloadError as exc:
            if str(exc).startswith(part_where):
                raise
            raise WorkloadError(f"{part_where}: {exc}") from None
        parts.append(MixPart(workload, None if weight is None else float(weight)))
    return build_mix(
        name, parts, arrival=_arrival(entry), num_prompts=entry.get("num_prompts"),
        speedup=entry.get("speedup", 1.0), seed=entry.get("seed", 1), warmup=entry.get("warmup", 1),
    )


def _histogram_entry(entry: Mapping[str, Any], where: str) -> Workload:
    _check_keys(entry, _HISTOGRAM_KEYS, where)
    histograms = entry["histograms"]
    missing = sorted({"prompt_tokens", "output_tokens"} - histograms.keys())
    if missing:
        raise WorkloadError(f"{where}: 'histograms' lacks {missing}")
    arrival = _arrival(entry)
    if arrival is None:
        raise WorkloadError(f"{where}: say how requests arrive: 'request_rate: R' or 'max_concurrency: N'")
    return histogram_workload(
        entry["name"], prompt_tokens=histograms["prompt_tokens"], output_tokens=histograms["output_tokens"],
        num_prompts=entry["num_prompts"], arrival=arrival, seed=entry.get("seed", 1),
        warmup=entry.get("warmup", 1), origin=entry.get("origin"), where=f"{where}: histograms",
    )


def _yaml_entry(entry: Any, where: str, base_dir: Path, default_name: str | None = None) -> Workload:
    if not isinstance(entry, Mapping):
        raise WorkloadError(f"{where}: each workload must be a mapping of keys, got {type(entry).__name__}")
    if "mix" in entry:
        return _mix_entry(entry, where, base_dir, default_name)
    if "histograms" in entry:
        return _histogram_entry(entry, where)
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
        if path.suffix.lower() == ".csv" or _peek_kind(path) == "trace":
            return _trace_entry(entry, path, common, where)
        for key in ("speedup", *_SLICE_KEYS, *_CSV_KEYS):
            if key in entry:
                raise WorkloadError(f"{where}: {key!r} applies to timestamped traces only, and {path} is not one")
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
    YAML file) with ``num_prompts``, ``output_len``, arrival keys or, for a trace (Mooncake JSONL, Azure or
    BurstGPT CSV), ``speedup``, ``start``, ``duration``, ``sample``; a ``mix:`` of weighted parts
    (:mod:`mix`); or ``histograms:`` of lengths (:mod:`histogram`). docs/workloads.md has examples.
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
            # A file holding one mix names it after itself unless it says otherwise.
            workloads.append(_yaml_entry(entry, where, path.parent, path.stem if len(entries) == 1 else None))
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
        elif suffix in (".jsonl", ".json", ".csv"):
            workloads.append(load_dataset_file(item))
        elif item in PRESETS:
            workloads.append(get_preset(item))
        elif suffix or "/" in item:
            raise WorkloadError(
                f"workload file {item!r}: unsupported type; use .jsonl/.json (dataset or trace), .csv (Azure or "
                "BurstGPT trace) or .yaml/.yml"
            )
        else:
            raise _unknown_name_error(item)
    names = [w.name for w in workloads]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise WorkloadError(f"workload name(s) {duplicates} given more than once; names must be unique")
    return workloads

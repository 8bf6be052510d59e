"""Timestamped request traces (Mooncake trace format).

One JSON object per line (or a JSON list), as in Mooncake's FAST'25 traces::

    {"timestamp": 27482, "input_length": 6955, "output_length": 52, "hash_ids": [...]}

``timestamp`` is in **milliseconds** (any origin); other keys are ignored.
Like bench_serving's Mooncake replay, the first ``num_prompts`` records of the
file are taken, sorted by timestamp, and each request's ``arrival_s`` is its
offset from the earliest one: ``(timestamp - first) / 1000``. The workload's
arrival is :class:`TraceTimes`, so the replay sends at ``arrival_s / speedup``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from autotune.workloads.arrival import TraceTimes, WorkloadError
from autotune.workloads.sharegpt import read_json_records
from autotune.workloads.spec import RequestSpec, Workload

__all__ = ["TRACE_KEYS", "load_trace"]

TRACE_KEYS = ("timestamp", "input_length", "output_length")


def _trace_row(record: Mapping[str, Any], where: str) -> tuple[float, int, int]:
    missing = [k for k in TRACE_KEYS if k not in record]
    if missing:
        raise WorkloadError(f"{where}: trace record lacks {missing}; each line needs {list(TRACE_KEYS)}")
    timestamp, input_length, output_length = (record[k] for k in TRACE_KEYS)
    if isinstance(timestamp, bool) or not isinstance(timestamp, (int, float)):
        raise WorkloadError(f"{where}: 'timestamp' must be a number of milliseconds, got {timestamp!r}")
    for key, value in (("input_length", input_length), ("output_length", output_length)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise WorkloadError(f"{where}: {key!r} must be an integer >= 1, got {value!r}")
    return float(timestamp), input_length, output_length


def load_trace(
    path: str | Path,
    *,
    name: str | None = None,
    num_prompts: int | None = None,
    speedup: float = 1.0,
    warmup: int = 1,
    seed: int = 1,
) -> Workload:
    """A workload replaying ``path``'s arrival times, ``speedup`` times faster."""
    if num_prompts is not None and num_prompts < 1:
        raise WorkloadError(f"num_prompts must be >= 1 (or None for the whole trace), got {num_prompts}")
    path = Path(path)
    rows = [_trace_row(record, where) for where, record in read_json_records(path)[:num_prompts]]
    if not rows:
        raise WorkloadError(f"{path}: the trace has no records")
    rows.sort(key=lambda row: row[0])
    start_ms = rows[0][0]
    requests = tuple(
        RequestSpec(index=i, prompt_len=p, output_len=o, arrival_s=(ts - start_ms) / 1000.0)
        for i, (ts, p, o) in enumerate(rows)
    )
    source = {"kind": "trace", "path": str(path), "num_prompts": num_prompts, "timestamp_unit": "ms"}
    return Workload(
        name=name or path.stem,
        requests=requests,
        arrival=TraceTimes(speedup),
        warmup=warmup,
        seed=seed,
        source=source,
    )

"""Cutting a timestamped trace down to what one server should see: a time window, a speed-up, a sample.

Production traces are long (the Azure conversation trace is an hour, 19k requests) and often
carry a whole cluster's traffic. :func:`slice_trace` takes a trace workload (any format: Mooncake
JSONL, Azure or BurstGPT CSV) and keeps

- ``start`` / ``duration``: the requests whose offset from the trace's first request lies in
  ``[start, start + duration)`` seconds (trace time, before any speed-up);
- ``sample``: a fraction of those, drawn so that the length distribution is kept: the requests
  are sorted by (prompt length, output length), cut into ``k = round(sample x n)`` equal strata,
  and one request is drawn from each (seeded), so every length quantile keeps its share. The
  kept requests keep their arrival times, so the rate falls by ``sample`` too (1/N of a cluster's
  trace is what one of N servers receives);
- ``num_prompts``: then the first N of what is left.

Arrival offsets are re-based on the first kept request. The speed-up is the workload's
:class:`TraceTimes` (the replay sends at ``arrival_s / speedup``).
"""

from __future__ import annotations

import math
import re

import numpy as np

from autotune.workloads.arrival import TraceTimes, WorkloadError
from autotune.workloads.spec import RequestSpec, Workload

__all__ = ["parse_duration", "slice_suffix", "slice_trace"]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h|d)?\s*$")
_UNIT_S = {"ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(value: object, what: str = "duration") -> float:
    """Seconds from ``300``, ``300.5``, ``"90s"``, ``"5m"``, ``"1h"`` (Prometheus-style units)."""
    if isinstance(value, bool):
        raise WorkloadError(f"{what} must be seconds or a text like 90s, 5m, 1h; got {value!r}")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if not match:
            raise WorkloadError(f"{what} must be seconds or a text like 90s, 5m, 1h; got {value!r}")
        seconds = float(match.group(1)) * _UNIT_S[match.group(2) or "s"]
    if not (seconds >= 0 and math.isfinite(seconds)):
        raise WorkloadError(f"{what} must be a finite number of seconds >= 0, got {value!r}")
    return seconds


def slice_suffix(
    start_s: float | None, duration_s: float | None, sample: float | None, num_prompts: int | None, speedup: float
) -> str:
    """The part of a default workload name that tells one slice of a trace from another."""
    parts = []
    if start_s:
        parts.append(f"from{start_s:g}s")
    if duration_s is not None:
        parts.append(f"for{duration_s:g}s")
    if sample is not None and sample != 1.0:
        parts.append(f"p{sample:g}")
    if num_prompts is not None:
        parts.append(f"n{num_prompts}")
    if speedup != 1.0:
        parts.append(f"x{speedup:g}")
    return "".join(f"-{p}" for p in parts)


def _stratified(requests: list[RequestSpec], fraction: float, seed: int) -> list[RequestSpec]:
    k = max(1, round(fraction * len(requests)))
    if k >= len(requests):
        return requests
    order = sorted(range(len(requests)), key=lambda i: (requests[i].prompt_len, requests[i].output_len, i))
    edges = np.linspace(0, len(order), k + 1).round().astype(int)
    rng = np.random.RandomState(seed)
    chosen = [order[rng.randint(lo, hi)] for lo, hi in zip(edges[:-1], edges[1:]) if hi > lo]
    return [requests[i] for i in sorted(chosen)]


def slice_trace(
    workload: Workload,
    *,
    start_s: float | None = None,
    duration_s: float | None = None,
    sample: float | None = None,
    num_prompts: int | None = None,
    speedup: float | None = None,
    name: str | None = None,
    seed: int | None = None,
) -> Workload:
    """``workload`` (trace-timed) cut to a window, sampled, truncated, re-timed; see the module doc."""
    if not isinstance(workload.arrival, TraceTimes):
        raise WorkloadError(f"workload {workload.name!r}: start/duration/sample apply to timestamped traces only")
    if sample is not None and not (0 < sample <= 1):
        raise WorkloadError(f"sample must be a fraction in (0, 1], got {sample!r}")
    if num_prompts is not None and num_prompts < 1:
        raise WorkloadError(f"num_prompts must be >= 1, got {num_prompts}")
    requests = sorted(workload.requests, key=lambda r: r.arrival_s or 0.0)
    span = requests[-1].arrival_s or 0.0
    lo = start_s or 0.0
    hi = math.inf if duration_s is None else lo + duration_s
    kept = [r for r in requests if lo <= (r.arrival_s or 0.0) < hi]
    if not kept:
        raise WorkloadError(
            f"workload {workload.name!r}: no request in the window [{lo:g}, {hi:g}) s; "
            f"the trace spans 0-{span:g} s from its first request"
        )
    seed = workload.seed if seed is None else seed
    if sample is not None:
        kept = _stratified(kept, sample, seed)
    if num_prompts is not None:
        kept = kept[:num_prompts]
    first = kept[0].arrival_s or 0.0
    rebased = tuple(
        RequestSpec(index=i, prompt_len=r.prompt_len, output_len=r.output_len, arrival_s=(r.arrival_s or 0.0) - first)
        for i, r in enumerate(kept)
    )
    speedup = workload.arrival.speedup if speedup is None else speedup
    source = {
        **workload.source,
        "start_s": start_s, "duration_s": duration_s, "sample": sample, "sliced_num_prompts": num_prompts,
        "sample_seed": seed,
    }
    return Workload(
        name=name or workload.name + slice_suffix(start_s, duration_s, sample, num_prompts, speedup),
        requests=rebased,
        arrival=TraceTimes(speedup),
        warmup=workload.warmup,
        seed=workload.seed,
        source=source,
    )

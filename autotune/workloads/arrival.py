"""Arrival processes: when the replay sends each request.

The three processes mirror bench_serving's traffic modes so that a replay and a
``python -m sglang.benchmark.serving`` run of the same workload load the server
the same way:

- :class:`MaxConcurrency` is ``--max-concurrency N`` with the default
  ``--request-rate inf``: every request is ready at t=0 and a semaphore of N
  slots gates them, so a new request goes out as soon as one finishes.
- :class:`PoissonRate` is ``--request-rate R`` (exponential gaps between
  requests, first request at t=0), optionally with ``--max-concurrency``. A
  request waits for a slot after its arrival time, like bench_serving, whose
  semaphore is taken inside the task created at the arrival time.
- :class:`TraceTimes` replays recorded arrival offsets, like bench_serving's
  ``--use-trace-timestamps`` / Mooncake replay, divided by ``speedup``
  (bench_serving multiplies by a *slowdown* factor instead).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from autotune.workloads.spec import RequestSpec


class WorkloadError(ValueError):
    """A workload could not be built; the message names the input and the fix."""


@dataclass(frozen=True)
class MaxConcurrency:
    """All requests ready at once, at most ``limit`` in flight (bench_serving ``--max-concurrency``)."""

    limit: int

    def __post_init__(self) -> None:
        if not isinstance(self.limit, int) or isinstance(self.limit, bool) or self.limit < 1:
            raise WorkloadError(f"max concurrency must be an integer >= 1, got {self.limit!r}")


@dataclass(frozen=True)
class PoissonRate:
    """Poisson arrivals at ``rate`` requests/s (bench_serving ``--request-rate``).

    ``rate=math.inf`` sends everything at t=0, bench_serving's default. The
    gaps are drawn from ``numpy.random.RandomState(seed).exponential(1/rate)``:
    the same distribution as bench_serving, but not its exact draws, which
    come from numpy's global stream after the dataset's own draws (and so
    depend on the tokenizer's vocabulary size).
    """

    rate: float
    seed: int = 0
    max_concurrency: int | None = None

    def __post_init__(self) -> None:
        if not (isinstance(self.rate, (int, float)) and self.rate > 0):  # also rejects NaN
            raise WorkloadError(f"request rate must be > 0 requests/s (or inf), got {self.rate!r}")
        if self.max_concurrency is not None:
            MaxConcurrency(self.max_concurrency)  # same validation and message


@dataclass(frozen=True)
class TraceTimes:
    """Send each request at its recorded ``arrival_s / speedup``."""

    speedup: float = 1.0

    def __post_init__(self) -> None:
        if not (isinstance(self.speedup, (int, float)) and 0 < self.speedup < math.inf):
            raise WorkloadError(f"trace speedup must be a finite number > 0, got {self.speedup!r}")


Arrival = MaxConcurrency | PoissonRate | TraceTimes


def concurrency_limit(arrival: Arrival) -> int | None:
    """The semaphore size the replay must hold, or None for no limit."""
    if isinstance(arrival, MaxConcurrency):
        return arrival.limit
    if isinstance(arrival, PoissonRate):
        return arrival.max_concurrency
    return None


def send_offsets(arrival: Arrival, requests: Sequence[RequestSpec]) -> tuple[float, ...]:
    """Earliest send time of each request, in seconds from replay start.

    A request with a concurrency limit may go out later than its offset,
    when it has to wait for a free slot.
    """
    n = len(requests)
    if isinstance(arrival, MaxConcurrency):
        return (0.0,) * n
    if isinstance(arrival, PoissonRate):
        if n == 0 or math.isinf(arrival.rate):
            return (0.0,) * n
        gaps = np.random.RandomState(arrival.seed).exponential(1.0 / arrival.rate, size=n - 1)
        return (0.0, *np.cumsum(gaps).tolist())
    missing = [r.index for r in requests if r.arrival_s is None]
    if missing:
        raise WorkloadError(
            f"trace arrival needs arrival_s on every request; missing for indices {missing[:5]}"
        )
    return tuple(r.arrival_s / arrival.speedup for r in requests)  # type: ignore[operator]


def describe_arrival(arrival: Arrival) -> str:
    """Short human text, e.g. ``max-concurrency 80`` or ``poisson 4 req/s``."""
    if isinstance(arrival, MaxConcurrency):
        return f"max-concurrency {arrival.limit}"
    if isinstance(arrival, PoissonRate):
        text = "all at once" if math.isinf(arrival.rate) else f"poisson {arrival.rate:g} req/s"
        if arrival.max_concurrency is not None:
            text += f", max-concurrency {arrival.max_concurrency}"
        return text
    return "trace timestamps" + ("" if arrival.speedup == 1.0 else f" x{arrival.speedup:g} speed")


def arrival_to_dict(arrival: Arrival) -> dict[str, Any]:
    """JSON-safe form; an infinite rate is written as the string ``"inf"``."""
    if isinstance(arrival, MaxConcurrency):
        return {"kind": "max-concurrency", "limit": arrival.limit}
    if isinstance(arrival, PoissonRate):
        rate: float | str = "inf" if math.isinf(arrival.rate) else arrival.rate
        return {
            "kind": "poisson",
            "rate": rate,
            "seed": arrival.seed,
            "max_concurrency": arrival.max_concurrency,
        }
    return {"kind": "trace", "speedup": arrival.speedup}


def arrival_from_dict(data: Mapping[str, Any]) -> Arrival:
    """Inverse of :func:`arrival_to_dict`."""
    kind = data.get("kind")
    try:
        if kind == "max-concurrency":
            return MaxConcurrency(int(data["limit"]))
        if kind == "poisson":
            limit = data.get("max_concurrency")
            return PoissonRate(
                rate=float(data["rate"]),
                seed=int(data.get("seed", 0)),
                max_concurrency=None if limit is None else int(limit),
            )
        if kind == "trace":
            return TraceTimes(float(data.get("speedup", 1.0)))
    except KeyError as exc:
        raise WorkloadError(f"arrival {dict(data)!r} lacks key {exc.args[0]!r}") from None
    raise WorkloadError(
        f"unknown arrival kind {kind!r}; expected 'max-concurrency', 'poisson' or 'trace'"
    )

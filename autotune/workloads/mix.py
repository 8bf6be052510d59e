"""A deployment's traffic as one workload: weighted parts replayed interleaved in one replay.

A server sees its whole mix at once (chats beside long summaries beside a production trace), and
one ratio has to serve all of it; the best ratio for the mix is not the best ratio of any part.
:func:`build_mix` turns parts (any workload: preset, random-ids, dataset, trace) into a single
:class:`Workload`, in one of two modes:

- **shares** (the mix has ``max_concurrency`` and/or ``request_rate``): ``weight`` is a part's
  share of the mix's requests. ``num_prompts`` (default: the parts' request counts summed) is
  split by weight (largest remainder), each part gives its first requests in order (cycling if
  it has fewer), the parts are shuffled together (seeded) and sent by the mix's arrival process;
- **time** (no arrival on the mix): every part keeps its own clock, a trace its timestamps and a
  ``request_rate`` part its Poisson draws, and the parts are merged by send time into one trace
  (sent ``speedup`` times faster if the mix says so). Closed-loop parts have no clock and are
  refused here; ``weight`` is refused too (set the part's ``request_rate`` or ``speedup``).

The mix's name keys its studies, optima, exports and ``launch``; its requests are stored with
the study (``Workload.to_dict``), so what was tuned can always be rebuilt.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from autotune.workloads.arrival import Arrival, MaxConcurrency, PoissonRate, TraceTimes, WorkloadError
from autotune.workloads.arrival import describe_arrival, send_offsets
from autotune.workloads.spec import RequestSpec, Workload

__all__ = ["MixPart", "build_mix"]


@dataclass(frozen=True)
class MixPart:
    workload: Workload
    weight: float | None = None  # None: not given (1 in shares mode)


def _split(total: int, weights: Sequence[float]) -> list[int]:
    """``total`` split in proportion to ``weights``, largest remainder first (ties: earlier part)."""
    exact = [total * w / sum(weights) for w in weights]
    counts = [math.floor(x) for x in exact]
    by_remainder = sorted(range(len(weights)), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in by_remainder[: total - sum(counts)]:
        counts[i] += 1
    return counts


def _part_offsets(part: Workload, where: str) -> list[float]:
    arrival = part.arrival
    if isinstance(arrival, MaxConcurrency) or (isinstance(arrival, PoissonRate) and
                                               (math.isinf(arrival.rate) or arrival.max_concurrency is not None)):
        raise WorkloadError(
            f"{where} ({part.name}, {describe_arrival(arrival)}) has no clock of its own: a mix without "
            "'max_concurrency' or 'request_rate' merges its parts by send time, so each part needs a finite "
            "'request_rate' (no max_concurrency) or trace timestamps; or give the mix an arrival"
        )
    return list(send_offsets(arrival, part.requests))


def build_mix(
    name: str,
    parts: Sequence[MixPart],
    *,
    arrival: Arrival | None = None,
    num_prompts: int | None = None,
    speedup: float = 1.0,
    seed: int = 1,
    warmup: int = 1,
) -> Workload:
    """One interleaved workload from ``parts``; see the module doc for the two modes."""
    if not parts:
        raise WorkloadError(f"mix {name!r} has no parts")
    where = [f"mix {name!r} part #{k + 1}" for k in range(len(parts))]
    described = []
    if arrival is not None:
        if speedup != 1.0:
            raise WorkloadError(f"mix {name!r}: 'speedup' applies to a mix merged by time (one without an arrival)")
        weights = [1.0 if p.weight is None else p.weight for p in parts]
        for w, label in zip(weights, where):
            if not (w > 0 and math.isfinite(w)):
                raise WorkloadError(f"{label}: weight must be a finite number > 0, got {w!r}")
        total = sum(len(p.workload.requests) for p in parts) if num_prompts is None else num_prompts
        if total < 1:
            raise WorkloadError(f"mix {name!r}: num_prompts must be >= 1, got {total}")
        counts = _split(total, weights)
        labels = np.repeat(np.arange(len(parts)), counts)
        order = np.random.RandomState(seed).permutation(labels)
        taken = [0] * len(parts)
        requests = []
        for index, k in enumerate(order.tolist()):
            src = parts[k].workload.requests[taken[k] % len(parts[k].workload.requests)]
            taken[k] += 1
            requests.append(RequestSpec(index=index, prompt_len=src.prompt_len, output_len=src.output_len))
        mode = "shares"
        for part, w, n in zip(parts, weights, counts):
            described.append({"name": part.workload.name, "weight": w, "requests": n, "source": part.workload.source})
    else:
        if num_prompts is not None:
            raise WorkloadError(
                f"mix {name!r}: 'num_prompts' splits a mix with an arrival; a mix merged by time takes every "
                "request of its parts (cut them with their own num_prompts, start, duration or sample)"
            )
        timed = []
        for k, (part, label) in enumerate(zip(parts, where)):
            if part.weight is not None:
                raise WorkloadError(
                    f"{label}: 'weight' sets a part's share of a mix with 'max_concurrency' or 'request_rate'; "
                    "in a mix merged by time each part keeps its own rate (set its request_rate or speedup)"
                )
            offsets = _part_offsets(part.workload, label)
            timed.extend((t, k, r) for t, r in zip(offsets, part.workload.requests))
            described.append({"name": part.workload.name, "requests": len(part.workload.requests),
                              "arrival": describe_arrival(part.workload.arrival), "source": part.workload.source})
        timed.sort(key=lambda item: (item[0], item[1]))
        requests = [RequestSpec(index=i, prompt_len=r.prompt_len, output_len=r.output_len, arrival_s=t)
                    for i, (t, _, r) in enumerate(timed)]
        arrival = TraceTimes(speedup)
        mode = "time"
    return Workload(
        name=name, requests=tuple(requests), arrival=arrival, warmup=warmup, seed=seed,
        source={"kind": "mix", "mode": mode, "parts": described},
    )

"""A workload drawn from length histograms, such as a server's own Prometheus histograms.

SGLang exports ``sglang:prompt_tokens_histogram`` and ``sglang:generation_tokens_histogram``
(one observation per finished request); ``autotune workload from-prometheus`` turns them into a
``histograms:`` workload entry::

    name: prod
    histograms:
      prompt_tokens: [[100, 12], [300, 40], [500, 7], [.inf, 0]]   # [upper bound, count] per bucket
      output_tokens: [[100, 31], [300, 28]]
    num_prompts: 500
    request_rate: 4.2

Counts are per bucket (not cumulative). A length is drawn by picking a bucket with probability
count / total, then an integer uniformly in ``(previous bound, bound]`` (the first bucket starts
at 1; an open ``+Inf`` bucket spans ``(last bound, 2 x last bound]``), the same within-bucket
assumption as PromQL's ``histogram_quantile``. Prompt and output lengths are drawn independently:
the histograms carry no joint distribution. The draws are seeded, so the same entry always gives
the same requests.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from autotune.workloads.arrival import Arrival, WorkloadError
from autotune.workloads.spec import RequestSpec, Workload

__all__ = ["check_buckets", "histogram_workload", "sample_lengths"]


def _bound(value: Any, where: str) -> float:
    if isinstance(value, str) and value.strip().lower() in ("+inf", "inf", ".inf"):
        return math.inf
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise WorkloadError(f"{where}: a bucket's upper bound must be a number or +Inf, got {value!r}")
    return float(value)


def check_buckets(buckets: Any, where: str) -> list[tuple[float, float]]:
    """``[[upper, count], ...]`` validated: bounds increasing and > 0, counts >= 0, some count > 0."""
    if not isinstance(buckets, Sequence) or isinstance(buckets, str) or not buckets:
        raise WorkloadError(f"{where}: expected a list of [upper bound, count] pairs, got {buckets!r}")
    out: list[tuple[float, float]] = []
    for k, pair in enumerate(buckets):
        if not isinstance(pair, Sequence) or isinstance(pair, str) or len(pair) != 2:
            raise WorkloadError(f"{where}[{k}]: expected [upper bound, count], got {pair!r}")
        upper = _bound(pair[0], f"{where}[{k}]")
        count = pair[1]
        if isinstance(count, bool) or not isinstance(count, (int, float)) or not count >= 0 or math.isinf(count):
            raise WorkloadError(f"{where}[{k}]: a bucket's count must be a finite number >= 0, got {count!r}")
        if upper <= (out[-1][0] if out else 0):
            raise WorkloadError(f"{where}[{k}]: upper bounds must be > 0 and increasing, got {pair[0]!r} after "
                                f"{out[-1][0] if out else 0:g}")
        out.append((upper, float(count)))
    if sum(c for _, c in out) <= 0:
        raise WorkloadError(f"{where}: every bucket is empty; there is no length to draw")
    if math.isinf(out[-1][0]) and out[-1][1] > 0 and len(out) == 1:
        raise WorkloadError(f"{where}: only an open +Inf bucket has counts; there is no bound to draw lengths under")
    return out


def sample_lengths(buckets: list[tuple[float, float]], n: int, rng: np.random.RandomState) -> list[int]:
    counts = np.array([c for _, c in buckets])
    picks = rng.choice(len(buckets), size=n, p=counts / counts.sum())
    lengths = []
    for k in picks.tolist():
        lower = buckets[k - 1][0] if k else 0.0
        upper = buckets[k][0] if math.isfinite(buckets[k][0]) else 2 * lower
        lo, hi = max(1, math.floor(lower) + 1), max(1, math.floor(upper))
        lengths.append(int(rng.randint(lo, max(lo, hi) + 1)))
    return lengths


def histogram_workload(
    name: str,
    *,
    prompt_tokens: Any,
    output_tokens: Any,
    num_prompts: int,
    arrival: Arrival,
    seed: int = 1,
    warmup: int = 1,
    origin: Mapping[str, Any] | None = None,
    where: str = "histograms",
) -> Workload:
    """``num_prompts`` requests with lengths drawn from the two histograms (module doc)."""
    if num_prompts < 1:
        raise WorkloadError(f"{where}: num_prompts must be >= 1, got {num_prompts}")
    prompt = check_buckets(prompt_tokens, f"{where}.prompt_tokens")
    output = check_buckets(output_tokens, f"{where}.output_tokens")
    rng = np.random.RandomState(seed)
    prompts = sample_lengths(prompt, num_prompts, rng)
    outputs = sample_lengths(output, num_prompts, rng)
    requests = tuple(RequestSpec(index=i, prompt_len=p, output_len=o) for i, (p, o) in enumerate(zip(prompts, outputs)))
    source = {"kind": "histograms", "origin": dict(origin or {})}
    return Workload(name=name, requests=requests, arrival=arrival, warmup=warmup, seed=seed, source=source)

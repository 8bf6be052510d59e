"""bench_serving's ``--dataset-name random-ids`` workload.

Lengths follow ``sglang.benchmark.datasets.common.compute_random_lens``
exactly: bench_serving calls ``np.random.seed(seed)`` at start-up, then draws
all input lengths and then all output lengths with

    np.random.randint(max(int(L * range_ratio), 1), L + 1, size=num_prompts)

i.e. uniform integers in [max(int(L x ratio), 1), L]. The same seed therefore
gives the same lengths here as ``bench_serving --seed S``, so a replay and a
bench_serving run of one workload send the same request shapes.

Two deliberate differences, neither of which changes the lengths:

- bench_serving (text mode, its default) shortens each prompt by the
  tokenizer's special tokens because the server re-adds them; the replay sends
  token ids (like ``--tokenize-prompt``), so the server sees exactly
  ``prompt_len`` tokens in both cases.
- The token ids themselves are drawn per request (see ``Workload.prompt_ids``)
  instead of bench_serving's ``(offset + i + j) % vocab`` ramp over the whole
  vocabulary, which may hit special tokens.
"""

from __future__ import annotations

import math

import numpy as np

from autotune.workloads.arrival import Arrival, PoissonRate, WorkloadError
from autotune.workloads.spec import RequestSpec, Workload

__all__ = ["random_ids_requests", "random_ids_workload"]


def _random_lens(rng: np.random.RandomState, full_len: int, range_ratio: float, num: int) -> list[int]:
    """``compute_random_lens`` from bench_serving, on an explicit legacy RandomState.

    ``RandomState(seed)`` yields the same stream as ``np.random.seed(seed)``
    followed by module-level ``np.random.randint`` calls.
    """
    return rng.randint(max(int(full_len * range_ratio), 1), full_len + 1, size=num).tolist()


def random_ids_requests(
    num_prompts: int, input_len: int, output_len: int, range_ratio: float, seed: int
) -> tuple[RequestSpec, ...]:
    """The requests of a random-ids workload; same arguments, same requests."""
    if num_prompts < 1:
        raise WorkloadError(f"num_prompts must be >= 1, got {num_prompts}")
    if input_len < 1 or output_len < 1:
        raise WorkloadError(f"input_len and output_len must be >= 1, got {input_len} and {output_len}")
    if not 0.0 <= range_ratio <= 1.0:
        raise WorkloadError(
            f"range_ratio must be in [0, 1] (lengths are drawn from [L x ratio, L]), got {range_ratio}"
        )
    if not 0 <= seed < 2**32:
        raise WorkloadError(f"seed must be in [0, 2**32) (numpy's legacy seeding), got {seed}")
    rng = np.random.RandomState(seed)
    input_lens = _random_lens(rng, input_len, range_ratio, num_prompts)
    output_lens = _random_lens(rng, output_len, range_ratio, num_prompts)
    return tuple(
        RequestSpec(index=i, prompt_len=p, output_len=o)
        for i, (p, o) in enumerate(zip(input_lens, output_lens, strict=True))
    )


def random_ids_workload(
    name: str,
    num_prompts: int,
    input_len: int,
    output_len: int,
    range_ratio: float = 0.0,
    seed: int = 1,
    arrival: Arrival = PoissonRate(rate=math.inf),
    warmup: int = 1,
) -> Workload:
    """A random-ids workload with bench_serving's defaults.

    Defaults mirror bench_serving: ``range_ratio=0.0`` (lengths uniform in
    [1, L]), all requests at once (``--request-rate inf``, no concurrency
    limit) and one warm-up request. ``seed`` also seeds the prompt ids.
    """
    requests = random_ids_requests(num_prompts, input_len, output_len, range_ratio, seed)
    source = {
        "kind": "random-ids",
        "num_prompts": num_prompts,
        "input_len": input_len,
        "output_len": output_len,
        "range_ratio": range_ratio,
        "seed": seed,
    }
    return Workload(name=name, requests=requests, arrival=arrival, warmup=warmup, seed=seed, source=source)

"""The capacity model: how many requests of a workload each pool holds at a ratio.

A decoding request holds prompt + output tokens in the full pool and, in the SWA pool, the prompt's
locked tail plus the decoded tokens of the last window and eviction interval, at their peak: the
per-release footprint of autotune/pools/footprint.py (docs/sglang-swa-accounting.md), the same one
the simulator follows. With radix cache on that is `L(P) + min(output, W + I)`, up to about two
windows, not the one window + interval of a radix-off server. The SWA pool must also hold the prefill
chunk in flight. The ratio that balances the two pools is the analytic optimum the search tries
first; the measured optimum can differ (admission reserves, retractions, the queue), which is why the
loop measures. Peaks are used, not means: a closed-loop workload starts its requests together, and
a pool short of the peak retracts.
"""

from __future__ import annotations

from dataclasses import dataclass

from autotune.pools.footprint import DEFAULT_SGLANG_VERSION, peak_swa_tokens, release_rules
from autotune.pools.sizing import KVGeometry, PoolLayout, min_feasible_ratio, size_pools


@dataclass(frozen=True)
class WorkloadShape:
    """What the capacity model needs to know of a workload (means over its requests)."""

    prompt_len: float
    output_len: float
    concurrency: int | None = None  # target concurrent requests (max-concurrency), if known

    @property
    def sequence_len(self) -> float:
        return self.prompt_len + self.output_len


def swa_tokens_per_request(
    shape: WorkloadShape, window: int, page_size: int, *, sglang_version: str = DEFAULT_SGLANG_VERSION,
    chunked_prefill_size: int | None = 8192,
) -> float:
    """SWA tokens one request of the workload counts as used at its peak (footprint.peak_swa_tokens)."""
    return float(peak_swa_tokens(
        release_rules(sglang_version), max(round(shape.prompt_len), 1), max(round(shape.output_len), 1), window,
        page_size=page_size, chunked_prefill_size=chunked_prefill_size,
    ))


@dataclass(frozen=True)
class CapacityEstimate:
    layout: PoolLayout
    full_requests: float  # concurrent requests the full pool holds
    swa_requests: float  # concurrent requests the SWA pool holds (after one prefill chunk)

    @property
    def requests(self) -> float:
        return min(self.full_requests, self.swa_requests)

    @property
    def bound(self) -> str:
        return "SWA" if self.swa_requests < self.full_requests else "full"


def capacity_at(
    geometry: KVGeometry,
    budget_bytes: int,
    ratio: float,
    shape: WorkloadShape,
    *,
    page_size: int = 1,
    chunked_prefill_size: int = 8192,
    max_total_tokens: int | None = None,
    sglang_version: str = DEFAULT_SGLANG_VERSION,
) -> CapacityEstimate:
    """How many requests of `shape` each pool holds at `ratio`, under the rules of `sglang_version`."""
    layout = size_pools(geometry, budget_bytes, ratio, page_size, max_total_tokens=max_total_tokens, check=False)
    chunk = min(chunked_prefill_size, shape.prompt_len)
    swa_free = max(layout.swa_tokens - chunk, 0)
    per_request = swa_tokens_per_request(
        shape, geometry.window, page_size, sglang_version=sglang_version, chunked_prefill_size=chunked_prefill_size,
    )
    return CapacityEstimate(
        layout=layout,
        full_requests=layout.full_tokens / shape.sequence_len,
        swa_requests=swa_free / per_request,
    )


@dataclass(frozen=True)
class AnalyticOptimum:
    ratio: float
    estimate: CapacityEstimate
    plateau: tuple[float, float] | None  # ratios at which both pools hold the target concurrency
    min_ratio: float


def analytic_optimum(
    geometry: KVGeometry,
    budget_bytes: int,
    shape: WorkloadShape,
    *,
    page_size: int = 1,
    chunked_prefill_size: int = 8192,
    max_total_tokens: int | None = None,
    resolution: float = 1e-3,
    sglang_version: str = DEFAULT_SGLANG_VERSION,
) -> AnalyticOptimum:
    """The ratio (on a `resolution` grid) that maximises the requests both pools hold together."""
    low = min_feasible_ratio(geometry, budget_bytes, page_size, max_total_tokens=max_total_tokens, resolution=resolution)
    if low is None:
        raise ValueError("no ratio in (0, 1] boots with this KV budget: the SWA pool cannot hold one window")
    steps = round(1 / resolution)
    best: CapacityEstimate | None = None
    plateau: list[float] = []
    for step in range(round(low * steps), steps + 1):
        ratio = step / steps
        estimate = capacity_at(
            geometry, budget_bytes, ratio, shape, page_size=page_size,
            chunked_prefill_size=chunked_prefill_size, max_total_tokens=max_total_tokens,
            sglang_version=sglang_version,
        )
        if best is None or estimate.requests > best.requests:
            best = estimate
        if shape.concurrency and estimate.requests >= shape.concurrency:
            plateau.append(ratio)
    assert best is not None
    return AnalyticOptimum(
        ratio=best.layout.ratio,
        estimate=best,
        plateau=(plateau[0], plateau[-1]) if plateau else None,
        min_ratio=low,
    )

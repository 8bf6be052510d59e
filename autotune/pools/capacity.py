"""The capacity model: how many requests of a workload each pool holds at a ratio.

Steady state (docs/reference/sglang.md §4): a decoding request holds prompt + output tokens in the full pool
and about window + eviction interval + 2 pages in the SWA pool (less if the whole sequence is
shorter than that); the SWA pool must also hold the prefill chunk in flight. The ratio that
balances the two pools is the analytic optimum the search tries first; the measured optimum can
differ (admission reserves, retractions, the queue), which is why the loop measures.
"""

from __future__ import annotations

from dataclasses import dataclass

from autotune.pools.sizing import SWA_EVICTION_INTERVAL, KVGeometry, PoolLayout, min_feasible_ratio, size_pools


@dataclass(frozen=True)
class WorkloadShape:
    """What the capacity model needs to know of a workload (means over its requests)."""

    prompt_len: float
    output_len: float
    concurrency: int | None = None  # target concurrent requests (max-concurrency), if known

    @property
    def sequence_len(self) -> float:
        return self.prompt_len + self.output_len


def swa_tokens_per_request(shape: WorkloadShape, window: int, page_size: int) -> float:
    return min(shape.sequence_len + page_size, window + SWA_EVICTION_INTERVAL + 2 * page_size)


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
) -> CapacityEstimate:
    layout = size_pools(geometry, budget_bytes, ratio, page_size, max_total_tokens=max_total_tokens, check=False)
    chunk = min(chunked_prefill_size, shape.prompt_len)
    swa_free = max(layout.swa_tokens - chunk, 0)
    return CapacityEstimate(
        layout=layout,
        full_requests=layout.full_tokens / shape.sequence_len,
        swa_requests=swa_free / swa_tokens_per_request(shape, geometry.window, page_size),
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

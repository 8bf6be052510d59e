"""The inverse of pool sizing: what KV budget a logged layout implies, and what it predicts.

SGLang floors twice (tokens per cell, then the page), so a logged `full_layer_tokens` pins the
budget only to an interval one cell x page wide:

    floor_P(floor(B / c)) = full   <=>   full x c <= B < (full + P) x c

Predictions at another ratio are then token ranges; the real layout must fall inside them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from autotune.pools.sizing import KVGeometry, PoolLayout, size_pools, validate_ratio


class InconsistentLayout(ValueError):
    pass


@dataclass(frozen=True)
class BudgetInterval:
    """KV budgets (bytes) consistent with the layouts seen: lo <= B < hi."""

    lo: int
    hi: int  # exclusive

    def intersect(self, other: "BudgetInterval") -> "BudgetInterval":
        lo, hi = max(self.lo, other.lo), min(self.hi, other.hi)
        if lo >= hi:
            raise InconsistentLayout(
                "the layouts imply disjoint KV budgets: they cannot come from one server configuration"
            )
        return BudgetInterval(lo, hi)

    @property
    def mid(self) -> int:
        return (self.lo + self.hi - 1) // 2


@dataclass(frozen=True)
class LayoutRange:
    ratio: float
    full_min: int
    full_max: int
    swa_min: int
    swa_max: int

    def contains(self, full_tokens: int, swa_tokens: int) -> bool:
        return self.full_min <= full_tokens <= self.full_max and self.swa_min <= swa_tokens <= self.swa_max


def infer_budget(
    geometry: KVGeometry, full_tokens: int, swa_tokens: int, ratio: float, page_size: int = 1
) -> BudgetInterval:
    """The budgets B for which SGLang logs exactly (full_tokens, swa_tokens) at `ratio`."""
    validate_ratio(ratio)
    if full_tokens % page_size or swa_tokens % page_size:
        raise InconsistentLayout(f"a layout at page size {page_size} has token counts that are multiples of it")
    cell = geometry.cell_bytes(ratio)
    lo = math.ceil(full_tokens * cell)
    hi = math.ceil((full_tokens + page_size) * cell)
    # Narrow to budgets whose float arithmetic really gives `full_tokens` (edges can round).
    while lo < hi and size_pools(geometry, lo, ratio, page_size, check=False).full_tokens < full_tokens:
        lo += 1
    while hi > lo and size_pools(geometry, hi - 1, ratio, page_size, check=False).full_tokens > full_tokens:
        hi -= 1
    expected_swa = size_pools(geometry, lo, ratio, page_size, check=False).swa_tokens if lo < hi else None
    if lo >= hi or expected_swa != swa_tokens:
        raise InconsistentLayout(
            f"no KV budget gives full={full_tokens}, swa={swa_tokens} at ratio {ratio}, page {page_size} "
            f"(that full side implies swa={expected_swa}); check the model, TP size, KV dtype and page size"
        )
    return BudgetInterval(lo, hi)


def infer_budget_from_layouts(
    geometry: KVGeometry, layouts: list[PoolLayout]
) -> BudgetInterval:
    interval: BudgetInterval | None = None
    for layout in layouts:
        one = infer_budget(geometry, layout.full_tokens, layout.swa_tokens, layout.ratio, layout.page_size)
        interval = one if interval is None else interval.intersect(one)
    if interval is None:
        raise ValueError("no layouts given")
    return interval


def predict_layouts(geometry: KVGeometry, interval: BudgetInterval, ratio: float, page_size: int = 1) -> LayoutRange:
    """Layouts SGLang would log at `ratio` for any budget in the interval (monotone in B)."""
    low = size_pools(geometry, interval.lo, ratio, page_size, check=False)
    high = size_pools(geometry, interval.hi - 1, ratio, page_size, check=False)
    return LayoutRange(
        ratio=ratio,
        full_min=low.full_tokens,
        full_max=high.full_tokens,
        swa_min=low.swa_tokens,
        swa_max=high.swa_tokens,
    )

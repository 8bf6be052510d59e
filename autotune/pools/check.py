"""Check a server's pool layout against the pool model.

Two checks, both reported and never hidden:

- against the server's own KV budget: SGLang reports the KV pools' size (`kvcache`, GiB rounded
  to 3 decimals). Every budget within that rounding predicts a token range; the logged layout
  must lie inside it. This tests the sizing formula (cell size, floors, the page) per trial.
- against the plan's estimate: the budget the study predicted before booting (GPU memory x
  mem_fraction_static - weights - overhead). Its error is the memory model's, not the sizing
  formula's, and says how far the first trials' analytic guess could be off.

`leave_one_out` is the strongest test, to the token: trials of one study share a KV budget, so the
others' layouts pin it and predict each trial's layout exactly.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Sequence

from autotune.pools.budget import GIB
from autotune.pools.inference import BudgetInterval, InconsistentLayout, infer_budget_from_layouts, predict_layouts
from autotune.pools.sizing import KVGeometry, PoolLayout, size_pools

KV_GIB_ROUNDING = 0.0005  # SGLang prints kvcache with 3 decimals


@dataclass(frozen=True)
class PoolCheck:
    ratio: float
    page_size: int
    full_tokens: int
    swa_tokens: int
    kvcache_gib: float | None
    predicted_full: tuple[int, int] | None  # from the server's kvcache (min, max over its rounding)
    predicted_swa: tuple[int, int] | None
    matches: bool | None  # None: the server reported no kvcache to check against
    planned_full: int | None = None  # from the plan's budget estimate
    planned_swa: int | None = None
    planned_budget_gib: float | None = None

    @property
    def budget_error_gib(self) -> float | None:
        if self.planned_budget_gib is None or self.kvcache_gib is None:
            return None
        return self.planned_budget_gib - self.kvcache_gib

    def describe(self) -> str:
        observed = f"full {self.full_tokens}, SWA {self.swa_tokens}"
        if self.matches is None:
            head = f"pool layout {observed} (the server reported no KV size to check it against)"
        elif self.matches:
            head = f"pool layout {observed} matches the pool model for kvcache {self.kvcache_gib} GiB"
        else:
            head = (
                f"POOL MODEL MISMATCH: server {observed}; the model predicts full {_span(self.predicted_full)}, "
                f"SWA {_span(self.predicted_swa)} for the server's kvcache {self.kvcache_gib} GiB"
            )
        if self.budget_error_gib is not None:
            head += f"; the plan estimated a {self.planned_budget_gib:.3f} GiB budget ({self.budget_error_gib:+.3f} GiB)"
        return head

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["budget_error_gib"] = self.budget_error_gib
        return data


def _span(pair: tuple[int, int] | None) -> str:
    if pair is None:
        return "?"
    return str(pair[0]) if pair[0] == pair[1] else f"{pair[0]}..{pair[1]}"


def check_layout(
    geometry: KVGeometry,
    ratio: float,
    page_size: int,
    full_tokens: int,
    swa_tokens: int,
    kvcache_gib: float | None,
    planned_budget_bytes: int | None = None,
) -> PoolCheck:
    predicted_full = predicted_swa = None
    matches = None
    if kvcache_gib is not None:
        # kvcache is the pools' allocated bytes: the budget's floors leave up to a cell under the
        # budget, and SGLang allocates one padding page per pool on top (seen on the real server:
        # at ratio 0.021 the pools were 9 tokens' worth over the budget's share). Widen both ways.
        cell = geometry.cell_bytes(ratio) * page_size
        padding = (geometry.full_bytes + geometry.swa_bytes) * page_size
        lo = max(0, math.floor((kvcache_gib - KV_GIB_ROUNDING) * GIB - padding))
        hi = math.ceil((kvcache_gib + KV_GIB_ROUNDING) * GIB + cell)
        band = predict_layouts(geometry, BudgetInterval(lo, hi), ratio, page_size)
        predicted_full, predicted_swa = (band.full_min, band.full_max), (band.swa_min, band.swa_max)
        matches = band.contains(full_tokens, swa_tokens)
    planned = size_pools(geometry, planned_budget_bytes, ratio, page_size, check=False) if planned_budget_bytes else None
    return PoolCheck(
        ratio=ratio, page_size=page_size, full_tokens=full_tokens, swa_tokens=swa_tokens, kvcache_gib=kvcache_gib,
        predicted_full=predicted_full, predicted_swa=predicted_swa, matches=matches,
        planned_full=planned.full_tokens if planned else None, planned_swa=planned.swa_tokens if planned else None,
        planned_budget_gib=planned_budget_bytes / GIB if planned_budget_bytes else None,
    )


@dataclass(frozen=True)
class LeaveOneOut:
    """One trial's layout predicted from the other trials' layouts (same budget), to the token."""

    ratio: float
    full_tokens: int
    swa_tokens: int
    predicted_full: tuple[int, int]
    predicted_swa: tuple[int, int]
    budget_gib: tuple[float, float]  # the budget interval the other trials pin

    @property
    def exact(self) -> bool:
        """The prediction is one layout, and it is the server's."""
        return self.predicted_full == (self.full_tokens, self.full_tokens) and self.predicted_swa == (
            self.swa_tokens, self.swa_tokens
        )

    @property
    def contained(self) -> bool:
        return (self.predicted_full[0] <= self.full_tokens <= self.predicted_full[1]
                and self.predicted_swa[0] <= self.swa_tokens <= self.predicted_swa[1])


def leave_one_out(
    geometry: KVGeometry, layouts: Sequence[tuple[float, int, int]], page_size: int = 1
) -> list[LeaveOneOut]:
    """For each (ratio, full, swa): predict it from the others. Needs two or more layouts.

    Raises InconsistentLayout when the others cannot come from one budget (then they were not
    one configuration: another GPU, another mem_fraction_static).
    """
    results = []
    for i, (ratio, full, swa) in enumerate(layouts):
        others = [layout for j, layout in enumerate(layouts) if j != i]
        if not others:
            raise ValueError("leave-one-out needs at least two layouts")
        interval = infer_budget_from_layouts(
            geometry, [PoolLayout(ratio=r, page_size=page_size, full_tokens=f, swa_tokens=s, window=geometry.window) for r, f, s in others]
        )
        band = predict_layouts(geometry, interval, ratio, page_size)
        results.append(LeaveOneOut(
            ratio=ratio, full_tokens=full, swa_tokens=swa,
            predicted_full=(band.full_min, band.full_max), predicted_swa=(band.swa_min, band.swa_max),
            budget_gib=(interval.lo / GIB, (interval.hi - 1) / GIB),
        ))
    return results


__all__ = ["InconsistentLayout", "LeaveOneOut", "PoolCheck", "check_layout", "leave_one_out"]

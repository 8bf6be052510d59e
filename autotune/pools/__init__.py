"""SGLang's KV pool sizing, its inverse, the KV budget and the capacity model."""

from autotune.pools.budget import (
    DECIMAL_GB,
    InsufficientMemory,
    KVBudget,
    default_chunked_prefill_size,
    default_mem_fraction_static,
    estimate_budget,
    pinned_budget,
)
from autotune.pools.capacity import AnalyticOptimum, CapacityEstimate, WorkloadShape, analytic_optimum, capacity_at
from autotune.pools.inference import BudgetInterval, InconsistentLayout, LayoutRange, infer_budget, predict_layouts
from autotune.pools.sizing import (
    SWA_EVICTION_INTERVAL,
    KVGeometry,
    NotEnoughMemory,
    PoolLayout,
    RatioOutOfRange,
    SWAPoolRefused,
    min_feasible_ratio,
    size_pools,
    validate_ratio,
)

__all__ = [
    "DECIMAL_GB",
    "SWA_EVICTION_INTERVAL",
    "AnalyticOptimum",
    "BudgetInterval",
    "CapacityEstimate",
    "InconsistentLayout",
    "InsufficientMemory",
    "KVBudget",
    "KVGeometry",
    "LayoutRange",
    "NotEnoughMemory",
    "PoolLayout",
    "RatioOutOfRange",
    "SWAPoolRefused",
    "WorkloadShape",
    "analytic_optimum",
    "capacity_at",
    "default_chunked_prefill_size",
    "default_mem_fraction_static",
    "estimate_budget",
    "infer_budget",
    "min_feasible_ratio",
    "pinned_budget",
    "predict_layouts",
    "size_pools",
    "validate_ratio",
]

"""The project's own tables beside Optuna's: models, GPUs, workloads, optima, rules, exports,
and the servers' own memory figures.

Optuna's RDB storage holds studies and trials; this package holds what they add up to, on the
same database URL. Other modules use `Store` and the records, never the schema.
"""

from autotune.store.errors import StoreError
from autotune.store.records import (
    ExportRecord,
    GPURecord,
    ModelRecord,
    OptimumRecord,
    RuleRecord,
    ServerMemoryRecord,
    WorkloadRecord,
    workload_class,
)
from autotune.store.store import Store

__all__ = [
    "ExportRecord",
    "GPURecord",
    "ModelRecord",
    "OptimumRecord",
    "RuleRecord",
    "ServerMemoryRecord",
    "Store",
    "StoreError",
    "WorkloadRecord",
    "workload_class",
]

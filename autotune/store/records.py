"""The records that cross the store's boundary: frozen, typed, and free of SQLAlchemy.

Field names are the column names of `schema.py`, so a record is written with
`dataclasses.asdict` and read back with `Record(**row)`: one name per fact, in both places.
The `from_*` constructors take the project's own objects (ModelSpec, GPUProfile, Workload) by
duck typing, so the store imports none of those modules and stays cheap to import.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from autotune.sglang_facts import DEFAULT_RATIO  # the baseline every gain is measured against

# A workload is "long-context" when prompts dominate both absolutely and relative to outputs:
# then the full pool (prompt + output per request) is what runs out, not the SWA pool.
LONG_CONTEXT_MIN_PROMPT = 4096
LONG_CONTEXT_PROMPT_OVER_OUTPUT = 4


def _now() -> datetime:
    return datetime.now(UTC)


def _require_aware(record: object, name: str) -> None:
    """A naive datetime means a different instant on every machine: refuse it where it is made."""
    value = getattr(record, name)
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(
            f"{type(record).__name__}.{name} must be timezone-aware, e.g. datetime.now(UTC); got {value.isoformat()}"
        )


def workload_class(mean_prompt: float, mean_output: float) -> str:
    """"long-context" when prompt >= 4 x output and prompt >= 4096 tokens, else "chat"."""
    long_context = (
        mean_prompt >= LONG_CONTEXT_PROMPT_OVER_OUTPUT * mean_output and mean_prompt >= LONG_CONTEXT_MIN_PROMPT
    )
    return "long-context" if long_context else "chat"


@dataclass(frozen=True, kw_only=True)
class ModelRecord:
    """A model's features as `ModelSpec.features()` returns them: what rules are keyed on."""

    name: str
    architecture: str
    hybrid_swa: bool
    moe: bool
    num_experts: int
    top_k: int
    swa_layers: int
    full_layers: int
    window: int | None
    s_over_f: float | None
    swa_bytes_per_token: int
    full_bytes_per_token: int
    weight_bytes: float
    params_total: float
    params_active: float

    @classmethod
    def from_spec(cls, spec: Any) -> ModelRecord:
        """From a `ModelSpec` (anything with a `features()` dict of these keys)."""
        return cls(**spec.features())


@dataclass(frozen=True, kw_only=True)
class GPURecord:
    name: str
    memory_mib: int
    memory_class: str

    @classmethod
    def from_profile(cls, profile: Any) -> GPURecord:
        """From a `GPUProfile`, keeping its memory class so rules and profiles agree on the buckets."""
        return cls(name=profile.name, memory_mib=profile.memory_mib, memory_class=profile.memory_class)


@dataclass(frozen=True, kw_only=True)
class WorkloadRecord:
    name: str
    workload_class: str
    mean_prompt: float
    mean_output: float
    concurrency: int | None
    spec: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_workload(cls, workload: Any) -> WorkloadRecord:
        """From a `Workload`: mean lengths, its concurrency limit, and `to_dict()` to rebuild it."""
        n = len(workload.requests)
        mean_prompt = workload.total_prompt_tokens / n
        mean_output = workload.total_output_tokens / n
        arrival = workload.arrival
        concurrency = getattr(arrival, "limit", None) or getattr(arrival, "max_concurrency", None)
        return cls(
            name=workload.name,
            workload_class=workload_class(mean_prompt, mean_output),
            mean_prompt=mean_prompt,
            mean_output=mean_output,
            concurrency=concurrency,
            spec=workload.to_dict(),
        )


@dataclass(frozen=True, kw_only=True)
class OptimumRecord:
    """The best ratio found for one (model, GPU, workload), and what it bought over the default.

    `gain` is `objective_value / default_value - 1`; it is filled in from `default_value`
    when not given, so a gain never disagrees with the values it came from.
    """

    model: str
    gpu: str
    workload: str
    study_name: str
    ratio: float
    objective_name: str
    objective_value: float
    metrics: dict[str, Any] = field(default_factory=dict)
    default_ratio: float = DEFAULT_RATIO
    default_value: float | None = None
    gain: float | None = None
    trials: int
    backend: str
    simulated: bool
    server_version: str
    params: dict[str, Any] = field(default_factory=dict)
    updated_at: datetime = field(default_factory=_now)

    def __post_init__(self) -> None:
        _require_aware(self, "updated_at")
        if self.gain is None and self.default_value and math.isfinite(self.default_value):
            object.__setattr__(self, "gain", self.objective_value / self.default_value - 1)


@dataclass(frozen=True, kw_only=True)
class RuleRecord:
    """A learned default: the ratio for one (MoE/dense, workload class, GPU memory class) cell.

    `evidence` lists the optima it rests on (model, gpu, workload, ratio, gain); `spread` is how
    far those optima lie apart, so a consumer can tell a firm rule from a guess.
    """

    key: str
    moe: bool
    workload_class: str
    memory_class: str | None
    ratio: float
    spread: float
    gain: float | None
    evidence: list[dict[str, Any]] = field(default_factory=list)
    simulated: bool
    created_at: datetime = field(default_factory=_now)

    def __post_init__(self) -> None:
        _require_aware(self, "created_at")


@dataclass(frozen=True, kw_only=True)
class ExportRecord:
    """One exported SGLang `--config` file: where it went, which ratio, and where that came from."""

    model: str
    path: str
    ratio: float
    provenance: dict[str, Any] = field(default_factory=dict)
    created_at: datetime = field(default_factory=_now)

    def __post_init__(self) -> None:
        _require_aware(self, "created_at")


@dataclass(frozen=True, kw_only=True)
class ServerMemoryRecord:
    """What a real server reported of its memory at boot, for one (model, GPU, server version,
    tensor parallelism, --mem-fraction-static): the KV budget later plans start from instead of
    the estimate (the estimate was 4.8 GiB off on an H200)."""

    model: str
    gpu: str
    server_version: str  # e.g. sglang-0.5.17+dummy-weights: dummy weights are measured apart
    tp: int
    mem_fraction_static: str  # the flag's value as given, or "default" (SGLang's own formula)
    kvcache_gib: float  # the server's `kvcache` (GiB, 3 decimals): the KV budget it booted with
    weight_gib: float | None = None
    study_name: str
    trial: int
    measured_at: datetime = field(default_factory=_now)

    def __post_init__(self) -> None:
        _require_aware(self, "measured_at")

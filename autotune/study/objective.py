"""What a study optimises, read off a TrialResult.

- `throughput`: total token throughput (bench_serving's figure), maximised, subject to the SLO's
  P99 limits as Optuna constraints (a trial over a limit is infeasible, not just worse);
- `goodput`: requests per second that met the SLO's per-request limits (bench_serving --goodput);
- `pareto`: throughput up and P99 TTFT down, both kept (multi-objective);
- `capacity`: for arrival-driven workloads, requests/s per GPU at the largest load level whose P99
  TTFT/TPOT meet the SLO, found by a load search on each trial's one boot (workers/load_search.py).
  The SLO is inside the value (a level over it does not count), so it adds no constraint.

A server that hung, crashed or failed requests at a ratio measured something real about that
ratio: it scores zero throughput (the search learns to avoid the region). A configuration SGLang
refuses or that does not fit is infeasible: the trial fails. A lost worker is no information:
the trial fails and is run again.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import optuna

from autotune.measure.serving_metrics import SLO
from workers.failures import FailureKind
from workers.trial import TrialResult

OBJECTIVES = ("throughput", "goodput", "pareto", "capacity")
RETRY = frozenset({FailureKind.WORKER_LOST, FailureKind.INTERNAL_ERROR, FailureKind.BOOT_TIMEOUT})
CAPACITY_LABEL = "req/s/GPU at SLO"
WORST_LATENCY_MS = 1e9  # a broken server's latency, finite so every sampler accepts it


@dataclass(frozen=True)
class Objective:
    name: str
    slo: SLO | None = None

    def __post_init__(self) -> None:
        if self.name not in OBJECTIVES:
            raise ValueError(f"unknown objective {self.name!r}; use one of {', '.join(OBJECTIVES)}")
        if self.name == "goodput" and (self.slo is None or not self.slo.has_goodput):
            raise ValueError("--objective goodput needs per-request limits: --slo ttft=MS,tpot=MS (or e2e=MS)")
        if self.name == "capacity" and (self.slo is None or (self.slo.ttft_p99_ms is None and self.slo.tpot_p99_ms is None)):
            raise ValueError("--objective capacity needs P99 limits to measure the load against: "
                             "--slo ttft_p99=MS,tpot_p99=MS (either or both)")

    @property
    def directions(self) -> list[optuna.study.StudyDirection]:
        if self.name == "pareto":
            return [optuna.study.StudyDirection.MAXIMIZE, optuna.study.StudyDirection.MINIMIZE]
        return [optuna.study.StudyDirection.MAXIMIZE]

    @property
    def labels(self) -> list[str]:
        return {"throughput": ["total tok/s"], "goodput": ["good req/s"], "pareto": ["total tok/s", "P99 TTFT ms"],
                "capacity": [CAPACITY_LABEL]}[self.name]

    def values(self, result: TrialResult) -> list[float] | None:
        """Objective values, or None when the trial carries no measurement (it failed)."""
        if result.failure is not None and (result.failure.infeasible or result.failure in RETRY):
            return None
        if self.name == "capacity":
            # The levels that passed before the search ended stand, whatever ended it: on real SGLang
            # 0.5.17 a server died at a level above its capacity (docs/real-gpu/traffic.md), and
            # scoring that trial 0 made one run of SGLang's default look half as good as its twin.
            # No level passed (or none measured: it broke on the way) is the server failing here: 0.
            return [result.load_search.capacity_rps_per_gpu if result.load_search else 0.0]
        summary = result.summary
        # Too slow: stopped at its time budget, like a trial stopped early; what it measured by then counts.
        measured = result.failure is None or (result.failure is FailureKind.TOO_SLOW and result.stopped_early)
        if not measured or summary is None or summary.completed == 0:
            # The server broke at this setting: as bad as it gets, and the search should know.
            return [0.0, WORST_LATENCY_MS] if self.name == "pareto" else [0.0]
        if self.name == "throughput":
            return [summary.total_throughput]
        if self.name == "goodput":
            return [summary.goodput_rps or 0.0]
        return [summary.total_throughput, _finite(summary.ttft.p99)]

    @property
    def constraint_names(self) -> list[str]:
        if self.slo is None or self.name == "capacity":
            return []
        return [name for name, limit in (("ttft_p99_ms", self.slo.ttft_p99_ms), ("tpot_p99_ms", self.slo.tpot_p99_ms)) if limit is not None]

    def constraints(self, result: TrialResult) -> list[float]:
        """Optuna constraint values (<= 0 is feasible): how far P99 TTFT/TPOT exceed the SLO (ms)."""
        if self.slo is None or result.summary is None or self.name == "capacity":
            return []
        out = []
        if self.slo.ttft_p99_ms is not None:
            out.append(_finite(result.summary.ttft.p99) - self.slo.ttft_p99_ms)
        if self.slo.tpot_p99_ms is not None:
            out.append(_finite(result.summary.tpot.p99) - self.slo.tpot_p99_ms)
        return out


def _finite(value: float) -> float:
    return value if math.isfinite(value) else WORST_LATENCY_MS

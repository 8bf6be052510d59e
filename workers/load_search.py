"""Capacity at an SLO: a bounded search over load levels of one arrival-driven workload, on one boot.

A level replays the workload with its arrivals sped up by a multiplier (a trace's timestamps
divided by it, a Poisson rate multiplied by it). It passes when every request succeeded, it
finished within the time budget, and its P99 TTFT / TPOT meet the SLO. The search starts at 1x,
doubles while levels pass, halves while they fail, then bisects between the largest passing and
the smallest failing multiplier, at most `max_levels` levels. The capacity is the largest passing
level's offered requests/s (per GPU: divided by `gpus`); none passing gives 0 and says so.

What runs a level (an HTTP replay against a server, or the simulator in virtual time) is the
caller's: `run_search` asks it for one level at a time, so the same search drives both.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import asdict, dataclass
from typing import Any, Callable, Sequence

from autotune.measure.serving_metrics import SLO, RequestOutcome, ServingSummary
from autotune.workloads import PoissonRate, TraceTimes, Workload, describe_arrival, send_offsets

DEFAULT_MAX_LEVELS = 6
DEFAULT_DRAIN_S = 2.0  # server-side seconds of quiet between levels
P99 = 0.99


class NotArrivalDriven(ValueError):
    """The workload sets no pace of its own (closed loop): there is no load to scale."""


@dataclass(frozen=True)
class LoadSearchSpec:
    """How a trial searches load levels: where to start, how far, how fine."""

    slo: SLO
    gpus: int = 1  # the capacity is divided by it (requests/s per GPU)
    max_levels: int = DEFAULT_MAX_LEVELS
    start: float = 1.0
    growth: float = 2.0  # the factor while every level passed (or failed)
    lowest: float = 1.0 / 16  # the smallest multiplier tried when 1x already fails
    resolution: float = 0.1  # stop bisecting once the bracket is within 10 % of its lower end
    drain_s: float = DEFAULT_DRAIN_S

    def __post_init__(self) -> None:
        if self.slo.ttft_p99_ms is None and self.slo.tpot_p99_ms is None:
            raise ValueError("a load search needs P99 limits: --slo ttft_p99=MS,tpot_p99=MS")
        if self.max_levels < 1 or self.gpus < 1 or not self.growth > 1 or not 0 < self.lowest <= self.start:
            raise ValueError(f"invalid load search {self!r}")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "slo": asdict(self.slo)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "LoadSearchSpec":
        return cls(**{**data, "slo": SLO(**data["slo"])})


def require_arrival_driven(workload: Workload) -> None:
    """Refuse a workload whose load cannot be scaled, naming the fix."""
    arrival = workload.arrival
    if isinstance(arrival, TraceTimes) or (isinstance(arrival, PoissonRate) and math.isfinite(arrival.rate)):
        if offered_rate(workload) > 0:
            return
        raise NotArrivalDriven(f"workload {workload.name!r} sends every request at the same instant: it has no rate to scale")
    raise NotArrivalDriven(
        f"--objective capacity needs an arrival-driven workload, and {workload.name!r} is closed-loop "
        f"({describe_arrival(arrival)}): the server sets its pace, so there is no load to scale. Use a trace "
        "(a .csv/.jsonl with timestamps, or a YAML slice of one) or a YAML entry with `request_rate: R` and no "
        "max_concurrency; or keep this workload with --objective throughput"
    )


def scaled(workload: Workload, multiplier: float, *, warmup: bool = True) -> Workload:
    """The workload sent `multiplier` times faster (warm-up requests only when `warmup`)."""
    arrival = workload.arrival
    if isinstance(arrival, TraceTimes):
        arrival = TraceTimes(arrival.speedup * multiplier)
    elif isinstance(arrival, PoissonRate):
        arrival = dataclasses.replace(arrival, rate=arrival.rate * multiplier)
    else:
        raise NotArrivalDriven(f"workload {workload.name!r} is closed-loop: no load to scale")
    return dataclasses.replace(workload, arrival=arrival, warmup=workload.warmup if warmup else 0)


def paced_for_server(workload: Workload, time_scale: float) -> Workload:
    """The workload as the client must send it so that a server whose clock runs `time_scale` times
    the wall's (the simulator's --time-scale) sees its arrival rate; closed-loop workloads have none."""
    if time_scale == 1 or not isinstance(workload.arrival, (TraceTimes, PoissonRate)):
        return workload
    return scaled(workload, time_scale)


def offered_rate(workload: Workload) -> float:
    """Requests/s the workload's arrivals offer: a Poisson rate, or a trace's requests over its span
    (`autotune workload show`'s offered req/s)."""
    if isinstance(workload.arrival, PoissonRate):
        return workload.arrival.rate
    offsets = send_offsets(workload.arrival, workload.requests)
    span = offsets[-1] - offsets[0]
    return (len(offsets) - 1) / span if span > 0 else 0.0


@dataclass(frozen=True)
class LoadLevel:
    """One measured level."""

    multiplier: float
    offered_rps: float  # what the arrivals asked for
    achieved_rps: float  # requests finished over the level's duration
    ttft_p99_ms: float | None
    tpot_p99_ms: float | None
    completed: int
    failed: int
    duration_s: float
    passed: bool
    why: str = ""  # what broke it (empty when it passed)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def judge_level(
    multiplier: float, offered_rps: float, summary: ServingSummary, slo: SLO, *, requests: int, cut_short: str = ""
) -> LoadLevel:
    """A level from its summary: passed when nothing failed or was cut short and the P99s meet the SLO."""
    reasons = list(slo.violations(summary))
    if summary.failed:
        reasons.insert(0, f"{summary.failed} of {requests} requests failed")
    if cut_short:
        reasons.insert(0, cut_short)
    elif summary.completed < requests:
        reasons.insert(0, f"{summary.completed} of {requests} requests finished")

    def finite(value: float) -> float | None:
        return value if math.isfinite(value) else None

    return LoadLevel(
        multiplier=multiplier, offered_rps=offered_rps, achieved_rps=_finite_or_zero(summary.request_throughput),
        ttft_p99_ms=finite(summary.ttft.p99), tpot_p99_ms=finite(summary.tpot.p99),
        completed=summary.completed, failed=summary.failed, duration_s=summary.duration_s,
        passed=not reasons, why="; ".join(reasons),
    )


def _finite_or_zero(value: float) -> float:
    return value if math.isfinite(value) else 0.0


def next_multiplier(levels: Sequence[LoadLevel], spec: LoadSearchSpec) -> float | None:
    """The next level to measure, or None when the search is done: at `max_levels`, once the bracket
    (largest pass, smallest fail above it) is within `resolution`, or when even `lowest` fails."""
    if not levels:
        return spec.start
    if len(levels) >= spec.max_levels:
        return None
    passed = [level.multiplier for level in levels if level.passed]
    low = max(passed, default=None)
    above = [level.multiplier for level in levels if not level.passed and (low is None or level.multiplier > low)]
    high = min(above, default=None)
    if high is None:
        return low * spec.growth  # type: ignore[operator]
    if low is None:
        down = high / spec.growth
        return down if down >= spec.lowest * (1 - 1e-9) else None
    if high <= low * (1 + spec.resolution):
        return None
    return _round((low + high) / 2)


def level_budget_s(budget_s: float | None, multiplier: float) -> float | None:
    """A level's time budget: the trial's (derived from the workload at 1x), stretched as the level
    stretches the arrivals below 1x (a level at 0.25x spans four times as long)."""
    return None if budget_s is None else budget_s * max(1.0, 1.0 / multiplier)


def _round(value: float) -> float:
    """Multipliers people can read (3 significant digits)."""
    return float(f"{value:.3g}")


@dataclass(frozen=True)
class LoadSearchResult:
    """Every level measured on one boot, and the capacity they show."""

    levels: tuple[LoadLevel, ...]
    gpus: int = 1

    @property
    def best(self) -> LoadLevel | None:
        """The largest passing level."""
        return max((level for level in self.levels if level.passed), key=lambda level: level.multiplier, default=None)

    @property
    def capacity_rps(self) -> float:
        best = self.best
        return best.offered_rps if best else 0.0

    @property
    def capacity_rps_per_gpu(self) -> float:
        return self.capacity_rps / self.gpus

    @property
    def open_ended(self) -> bool:
        """Every level passed: the capacity is at least the value found (the search ran out of levels)."""
        return bool(self.levels) and all(level.passed for level in self.levels)

    def describe(self) -> str:
        best = self.best
        if best is None:
            lowest = min(self.levels, key=lambda level: level.multiplier, default=None)
            where = f" (down to {lowest.multiplier:g}x: {lowest.why})" if lowest else ""
            return f"no load level met the SLO{where}: capacity 0"
        bound = ">= " if self.open_ended else ""
        per_gpu = f" ({self.capacity_rps_per_gpu:.3g} per GPU)" if self.gpus > 1 else ""
        return (f"capacity {bound}{self.capacity_rps:.3g} req/s{per_gpu} at {best.multiplier:g}x load "
                f"({len(self.levels)} levels)")

    def to_dict(self) -> dict[str, Any]:
        return {
            "levels": [level.to_dict() for level in self.levels], "gpus": self.gpus,
            "capacity_rps": self.capacity_rps, "capacity_rps_per_gpu": self.capacity_rps_per_gpu,
            "open_ended": self.open_ended, "describe": self.describe(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "LoadSearchResult":
        return cls(levels=tuple(LoadLevel(**level) for level in data.get("levels", ())), gpus=int(data.get("gpus", 1)))


def run_search(spec: LoadSearchSpec, measure: Callable[[float], LoadLevel]) -> LoadSearchResult:
    """Measure levels until `next_multiplier` says stop; `measure(multiplier)` runs one level (and
    drains the server after it)."""
    levels: list[LoadLevel] = []
    while (multiplier := next_multiplier(levels, spec)) is not None:
        levels.append(measure(multiplier))
    return LoadSearchResult(levels=tuple(levels), gpus=spec.gpus)


def p99_already_broken(latencies_ms: Sequence[float], total: int, limit_ms: float | None) -> bool:
    """True once the P99 of `total` values must exceed `limit_ms`, whatever the values still to come:
    numpy's linear P99 is at least the sorted value at index floor(0.99 (total - 1)), which is over
    the limit once at least total - floor(0.99 (total - 1)) values are."""
    if limit_ms is None or total <= 0:
        return False
    over = sum(1 for value in latencies_ms if value > limit_ms)
    return over >= total - math.floor(P99 * (total - 1))


def slo_broken(outcomes: Sequence[RequestOutcome], total: int, slo: SLO) -> str:
    """Why the level's P99 is already over the SLO from the requests finished so far ("" if not yet)."""
    ttfts = [o.ttft_s * 1000 for o in outcomes if o.success and o.ttft_s is not None]
    tpot_total = total  # requests of one token have no TPOT; an upper bound on the count is conservative
    tpots = [(o.e2e_s - o.ttft_s) / (o.output_len - 1) * 1000
             for o in outcomes if o.success and o.ttft_s is not None and o.e2e_s is not None and o.output_len > 1]
    if p99_already_broken(ttfts, total, slo.ttft_p99_ms):
        return f"P99 TTFT over {slo.ttft_p99_ms:g} ms already ({len(outcomes)} of {total} requests finished)"
    if p99_already_broken(tpots, tpot_total, slo.tpot_p99_ms):
        return f"P99 TPOT over {slo.tpot_p99_ms:g} ms already ({len(outcomes)} of {total} requests finished)"
    return ""

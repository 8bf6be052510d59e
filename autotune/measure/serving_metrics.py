"""Per-request outcomes and the bench_serving summary of a replay.

Every figure follows ``sglang.benchmark.serving.calculate_metrics`` (and
``benchmark/goodput.py`` for goodput) so that a replay's numbers compare 1:1
with a ``python -m sglang.benchmark.serving`` run:

- Only successful requests count towards tokens, latencies and throughput;
  throughputs divide by the run's wall duration.
- TPOT = (E2E - TTFT) / (output_len - 1), only for requests with
  output_len > 1. ITL is every streamed gap, with a chunk that brings k new
  tokens counted as k gaps of (chunk gap / k) (see :func:`stream_timings`).
- Percentiles are ``numpy.percentile`` (linear interpolation); std is the
  population std (``numpy.std``). Latencies are reported in milliseconds.
- Peak output throughput is the most tokens whose arrival falls into one 1-s
  bucket counted from the earliest request start; concurrency is the sum of
  E2E latencies over the duration.

Deliberate differences: bench_serving reports 0 for the TTFT/TPOT/ITL
statistics of an empty sample; here they are NaN, so that "no data" can never
pass for a perfect latency in an objective or an SLO check. And a successful
request without a measured TTFT (``ttft_s=None``: nothing streamed) is left
out of TTFT and TPOT, where bench_serving would count a TTFT of 0.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np

__all__ = ["SLO", "Percentiles", "RequestOutcome", "ServingSummary", "stream_timings", "summarize"]


@dataclass
class RequestOutcome:
    """What the replay observed for one request (times in seconds).

    ``start_s`` is the send time from replay start; ``ttft_s`` and ``e2e_s``
    are measured from the send. ``itl_s`` holds one entry per generated token
    after the first chunk, as :func:`stream_timings` produces it.
    ``output_len`` is the server's ``completion_tokens``.
    """

    index: int
    prompt_len: int
    output_len: int
    success: bool
    start_s: float
    ttft_s: float | None
    itl_s: list[float]
    e2e_s: float | None
    error: str | None = None
    retracted: bool = False


def stream_timings(start_s: float, chunks: Sequence[tuple[float, int]]) -> tuple[float | None, list[float]]:
    """TTFT and ITLs from a streamed response, by bench_serving's rules.

    ``chunks`` are ``(arrival time, cumulative completion_tokens)`` of each
    chunk that carried text, in order. The first chunk sets TTFT. A later chunk
    with k > 0 new tokens adds k gaps of ``(its time - previous chunk's) / k``;
    a chunk with no new tokens is skipped and its time is *not* taken as the
    previous chunk time, so its gap folds into the next chunk (as in
    ``async_request_sglang_generate``).
    """
    if not chunks:
        return None, []
    first_time, last_tokens = chunks[0]
    previous_time = first_time
    itls: list[float] = []
    for time_s, tokens in chunks[1:]:
        new_tokens = tokens - last_tokens
        if new_tokens <= 0:
            continue
        itls.extend([(time_s - previous_time) / new_tokens] * new_tokens)
        previous_time, last_tokens = time_s, tokens
    return first_time - start_s, itls


_SLO_KEYS = {
    "ttft_p99": "ttft_p99_ms",
    "tpot_p99": "tpot_p99_ms",
    "ttft": "ttft_ms",
    "tpot": "tpot_ms",
    "e2e": "e2e_ms",
    "e2el": "e2e_ms",  # bench_serving's --goodput name
}


@dataclass(frozen=True)
class SLO:
    """Latency objectives, all in milliseconds.

    ``ttft_p99_ms`` / ``tpot_p99_ms`` bound the run's P99 (see
    :meth:`violations`). ``ttft_ms`` / ``tpot_ms`` / ``e2e_ms`` are per-request
    thresholds for goodput, like bench_serving ``--goodput ttft:MS tpot:MS
    e2el:MS``: a request is good when it succeeded and meets every one given.
    """

    ttft_p99_ms: float | None = None
    tpot_p99_ms: float | None = None
    ttft_ms: float | None = None
    tpot_ms: float | None = None
    e2e_ms: float | None = None

    @classmethod
    def parse(cls, text: str) -> SLO:
        """``"ttft_p99=2000,tpot_p99=50"``, ``"ttft=500 tpot=50 e2e=20000"`` or ``"ttft:500"``."""
        values: dict[str, float] = {}
        valid = ", ".join(_SLO_KEYS)
        for item in re.split(r"[,\s]+", text.strip()):
            if not item:
                continue
            match = re.fullmatch(r"(\w+)[=:](.*)", item)
            if match is None:
                raise ValueError(f"SLO item {item!r} is not KEY=MS; valid keys: {valid}")
            key, raw = match.groups()
            if key not in _SLO_KEYS:
                raise ValueError(f"unknown SLO key {key!r} in {text!r}; valid keys: {valid}")
            try:
                value = float(raw)
            except ValueError:
                raise ValueError(f"SLO {key!r} needs a number of milliseconds, got {raw!r}") from None
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"SLO {key!r} must be a finite number of milliseconds > 0, got {raw!r}")
            values[_SLO_KEYS[key]] = value
        return cls(**values)

    @property
    def has_goodput(self) -> bool:
        """True when a per-request threshold is set, so goodput can be computed."""
        return any(v is not None for v in (self.ttft_ms, self.tpot_ms, self.e2e_ms))

    def request_is_good(self, outcome: RequestOutcome) -> bool:
        """bench_serving's goodput test for one request (thresholds inclusive).

        A single-token response has TPOT 0, as in bench_serving. A request
        without a measured TTFT fails a TTFT threshold: it cannot be shown to meet it.
        """
        if not outcome.success or outcome.e2e_s is None:
            return False
        ttft = math.inf if outcome.ttft_s is None else outcome.ttft_s
        tpot = (outcome.e2e_s - ttft) / (outcome.output_len - 1) if outcome.output_len > 1 else 0.0
        observed_ms = {"ttft_ms": ttft * 1000, "tpot_ms": tpot * 1000, "e2e_ms": outcome.e2e_s * 1000}
        return all(
            observed_ms[name] <= limit
            for name in ("ttft_ms", "tpot_ms", "e2e_ms")
            if (limit := getattr(self, name)) is not None
        )

    def violations(self, summary: ServingSummary) -> tuple[str, ...]:
        """The P99 objectives ``summary`` misses; a NaN (no data) P99 misses too."""
        missed = []
        for label, limit, observed in (
            ("P99 TTFT", self.ttft_p99_ms, summary.ttft.p99),
            ("P99 TPOT", self.tpot_p99_ms, summary.tpot.p99),
        ):
            if limit is not None and not observed <= limit:
                missed.append(f"{label} {observed:.2f} ms > {limit:g} ms")
        return tuple(missed)


@dataclass(frozen=True)
class Percentiles:
    """Statistics of one latency metric, in milliseconds; NaN when there is no sample."""

    mean: float
    median: float
    std: float
    p90: float
    p95: float
    p99: float
    max: float

    @classmethod
    def of_seconds(cls, values_s: Sequence[float]) -> Percentiles:
        if len(values_s) == 0:
            return cls(*(math.nan,) * 7)
        ms = np.asarray(values_s, dtype=float) * 1000
        p90, p95, p99 = np.percentile(ms, [90, 95, 99])
        return cls(
            mean=float(np.mean(ms)),
            median=float(np.median(ms)),
            std=float(np.std(ms)),
            p90=float(p90),
            p95=float(p95),
            p99=float(p99),
            max=float(np.max(ms)),
        )


_NAN_PERCENTILES = Percentiles.of_seconds(())


@dataclass(frozen=True)
class ServingSummary:
    """bench_serving's report for one replay (throughputs per second of ``duration_s``)."""

    completed: int
    failed: int
    duration_s: float
    total_input: int
    total_output: int
    request_throughput: float
    input_throughput: float
    output_throughput: float
    total_throughput: float
    peak_output_throughput: float
    peak_concurrent_requests: int
    concurrency: float
    ttft: Percentiles = field(default=_NAN_PERCENTILES)
    tpot: Percentiles = field(default=_NAN_PERCENTILES)
    itl: Percentiles = field(default=_NAN_PERCENTILES)
    e2e: Percentiles = field(default=_NAN_PERCENTILES)
    goodput_rps: float | None = None
    slo_attainment: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """Nested plain dict; NaN becomes None so strict JSON (and PostgreSQL) accept it."""
        return _nan_to_none(asdict(self))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ServingSummary:
        """Inverse of :meth:`to_dict`."""
        values = dict(data)
        for name in ("ttft", "tpot", "itl", "e2e"):
            values[name] = Percentiles(**{k: math.nan if v is None else v for k, v in data[name].items()})
        for f in fields(cls):
            if f.type == "float" and values.get(f.name) is None:
                values[f.name] = math.nan
        return cls(**values)

    def table_rows(self) -> list[tuple[str, str]]:
        """(label, value) rows in bench_serving's report order and wording."""
        rows = [
            ("Successful requests:", str(self.completed)),
            ("Failed requests:", str(self.failed)),
            ("Benchmark duration (s):", f"{self.duration_s:.2f}"),
            ("Total input tokens:", str(self.total_input)),
            ("Total generated tokens:", str(self.total_output)),
            ("Request throughput (req/s):", f"{self.request_throughput:.2f}"),
            ("Input token throughput (tok/s):", f"{self.input_throughput:.2f}"),
            ("Output token throughput (tok/s):", f"{self.output_throughput:.2f}"),
            ("Peak output token throughput (tok/s):", f"{self.peak_output_throughput:.2f}"),
            ("Peak concurrent requests:", str(self.peak_concurrent_requests)),
            ("Total token throughput (tok/s):", f"{self.total_throughput:.2f}"),
            ("Concurrency:", f"{self.concurrency:.2f}"),
        ]
        if self.goodput_rps is not None:
            rows.append(("Request goodput (req/s):", f"{self.goodput_rps:.2f}"))
        if self.slo_attainment is not None:
            rows.append(("SLO attainment (%):", f"{self.slo_attainment * 100:.2f}"))
        for label, stats in (("E2E Latency", self.e2e), ("TTFT", self.ttft), ("TPOT", self.tpot), ("ITL", self.itl)):
            for stat in ("Mean", "Median", "P90", "P95", "P99"):
                rows.append((f"{stat} {label} (ms):", f"{getattr(stats, stat.lower()):.2f}"))
        rows.append(("Max ITL (ms):", f"{self.itl.max:.2f}"))
        return rows


def _nan_to_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _peaks(done: Sequence[RequestOutcome]) -> tuple[float, int]:
    """Most output tokens and most running requests in any 1-s bucket (bench_serving's method)."""
    if not done:
        return 0.0, 0
    t0 = min(o.start_s for o in done)
    end = max(o.start_s + o.e2e_s for o in done)  # type: ignore[operator]
    buckets = int(np.ceil(end - t0)) + 1
    tokens = np.zeros(buckets)
    running = np.zeros(buckets)
    for o in done:
        if o.ttft_s is not None:
            # Sequential sums, not np.cumsum, so bucket edges round as in bench_serving.
            token_time = o.start_s + o.ttft_s
            token_times = [token_time]
            for gap in o.itl_s:
                token_time += gap
                token_times.append(token_time)
            for t in token_times:
                second = int(t - t0)
                if 0 <= second < buckets:
                    tokens[second] += 1
        first, last = int(o.start_s - t0), int(o.start_s + o.e2e_s - t0)  # type: ignore[operator]
        running[first : min(last + 1, buckets)] += 1
    return float(tokens.max()), int(running.max())


def summarize(outcomes: Sequence[RequestOutcome], duration_s: float, slo: SLO | None = None) -> ServingSummary:
    """bench_serving's figures for ``outcomes`` over a run of ``duration_s`` seconds.

    Goodput (and SLO attainment, good requests over all requests sent) is set
    only when ``slo`` has a per-request threshold. Empty ``outcomes`` give a
    summary with zero counts and NaN statistics.
    """
    if duration_s < 0:
        raise ValueError(f"duration_s must be >= 0, got {duration_s}")
    done = [o for o in outcomes if o.success]
    broken = [o.index for o in done if o.e2e_s is None]
    if broken:
        raise ValueError(f"successful requests need e2e_s; missing for indices {broken[:5]}")

    def per_s(x: float) -> float:
        return x / duration_s if duration_s > 0 else math.nan

    total_input = sum(o.prompt_len for o in done)
    total_output = sum(o.output_len for o in done)
    e2es = [o.e2e_s for o in done]
    timed = [o for o in done if o.ttft_s is not None]
    tpots = [(o.e2e_s - o.ttft_s) / (o.output_len - 1) for o in timed if o.output_len > 1]  # type: ignore[operator]
    peak_tokens, peak_running = _peaks(done)
    goodput = attainment = None
    if slo is not None and slo.has_goodput:
        good = sum(slo.request_is_good(o) for o in outcomes)
        goodput = per_s(good)
        attainment = good / len(outcomes) if outcomes else math.nan
    return ServingSummary(
        completed=len(done),
        failed=len(outcomes) - len(done),
        duration_s=duration_s,
        total_input=total_input,
        total_output=total_output,
        request_throughput=per_s(len(done)),
        input_throughput=per_s(total_input),
        output_throughput=per_s(total_output),
        total_throughput=per_s(total_input + total_output),
        peak_output_throughput=peak_tokens,
        peak_concurrent_requests=peak_running,
        concurrency=per_s(sum(e2es)),  # type: ignore[arg-type]
        ttft=Percentiles.of_seconds([o.ttft_s for o in timed]),  # type: ignore[misc]
        tpot=Percentiles.of_seconds(tpots),
        itl=Percentiles.of_seconds([gap for o in done for gap in o.itl_s]),
        e2e=Percentiles.of_seconds(e2es),  # type: ignore[arg-type]
        goodput_rps=goodput,
        slo_attainment=attainment,
    )

"""Run a workload through the simulated engine in virtual time (the `sim-fast` backend).

The result has the same shape as what the HTTP replay and the metrics scraper produce: one
`RequestOutcome` per request, a bench_serving `ServingSummary`, and `MetricSample`s at the
scrape interval. The client side follows the workload's arrival process exactly as the replay
does: a concurrency semaphore, Poisson or trace offsets, warm-up requests first and excluded.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass

from autotune.measure.serving_metrics import SLO, RequestOutcome, ServingSummary, stream_timings, summarize
from autotune.measure.server_metrics import MetricSample, SeriesSummary, summarize_series
from autotune.sim.config import SimServerConfig, StartUp
from autotune.sim.engine import SimEngine
from autotune.sim.pool import DeviceAssert
from autotune.sim.request import SimRequest
from autotune.workloads import RequestSpec, Workload, concurrency_limit, send_offsets

@dataclass(frozen=True)
class SimResult:
    """A simulated trial: labelled simulated wherever it is shown."""

    outcomes: tuple[RequestOutcome, ...]
    summary: ServingSummary
    samples: tuple[MetricSample, ...]
    series: SeriesSummary
    startup: StartUp
    duration_s: float
    hung: bool
    log_lines: tuple[str, ...]
    simulated: bool = True
    overran: bool = False  # stopped at the time budget: the outcomes cover what finished by then
    crashed: str | None = None  # the server died: its log's exception line (0.5.17 unified memory)
    # Forward passes of the measured run, as SGLang counts them in sglang:cuda_graph_passes_total's
    # prefill_* and decode_* modes (one per prefill batch, one per decode step).
    prefill_batches: int = 0
    decode_passes: int = 0


def _outcome(spec: RequestSpec, req: SimRequest, t0: float) -> RequestOutcome:
    done = req.finish_s is not None and req.error is None
    start = req.arrival_s - t0
    ttft, itls = stream_timings(
        req.arrival_s, list(zip(req.token_times, req.token_counts))
    ) if req.token_times else (None, [])
    return RequestOutcome(
        index=spec.index,
        prompt_len=spec.prompt_len,
        output_len=req.generated,
        success=done,
        start_s=start,
        ttft_s=ttft,
        itl_s=itls,
        e2e_s=(req.finish_s - req.arrival_s) if done else None,
        error=None if done else (req.error or "did not finish (simulated server hung: no request could be admitted)"),
        retracted=req.retractions > 0,
    )


class _Client:
    """The replay's arrival process in virtual time."""

    def __init__(self, specs: tuple[RequestSpec, ...], offsets: tuple[float, ...], limit: int | None, t0: float,
                 send_interval_s: float = 0.0) -> None:
        self.pending = list(zip(offsets, specs))
        self.pending.reverse()  # pop() from the end = next in order
        self.limit = limit
        self.in_flight = 0
        self.t0 = t0
        self.send_interval_s = send_interval_s  # one request after another: a burst leaves over time
        self.last_send_s = -math.inf

    def due(self, now: float) -> list[tuple[float, RequestSpec]]:
        """Requests whose send time has come and that have a concurrency slot, with the times they leave."""
        out = []
        while self.pending and self.t0 + self.pending[-1][0] <= now and (self.limit is None or self.in_flight < self.limit):
            offset, spec = self.pending.pop()
            self.in_flight += 1
            self.last_send_s = max(self.t0 + offset, now, self.last_send_s + self.send_interval_s)
            out.append((self.last_send_s, spec))
        return out

    def next_time(self) -> float | None:
        if not self.pending or (self.limit is not None and self.in_flight >= self.limit):
            return None
        return self.t0 + self.pending[-1][0]


def _drive(
    engine: SimEngine,
    specs: tuple[RequestSpec, ...],
    offsets: tuple[float, ...],
    limit: int | None,
    t0: float,
    samples: list[MetricSample] | None,
    sample_interval_s: float,
    logs: list[str],
    deadline_s: float | None = None,
) -> tuple[dict[int, SimRequest], float, bool]:
    client = _Client(specs, offsets, limit, t0, engine.config.client_send_interval_s)
    live: dict[int, SimRequest] = {}
    now = t0
    next_sample = t0
    finished_events: list[tuple[float, int]] = []

    def on_finish(req: SimRequest) -> None:
        heapq.heappush(finished_events, (req.finish_s or now, id(req)))

    engine.scheduler.on_finish = on_finish
    ingress = engine.config.request_ingress_s
    inbound: list[tuple[float, int, SimRequest]] = []  # sent, not yet in the scheduler's queue
    while True:
        for send_s, spec in client.due(now):
            req = SimRequest(rid=str(spec.index), prompt_len=spec.prompt_len, max_new_tokens=spec.output_len, arrival_s=send_s)
            live[spec.index] = req
            heapq.heappush(inbound, (send_s + ingress, spec.index, req))
        while inbound and inbound[0][0] <= now:
            reached_s, _, req = heapq.heappop(inbound)
            engine.add(req, reached_s)
        try:
            report = engine.step(now)
        except DeviceAssert as crash:  # the server process dies: every request in flight fails
            engine.crashed = crash
            logs.extend(crash_log_lines(crash))
            for req in live.values():
                if req.finish_s is None:
                    req.error = crash.sglang_line
            return live, now, False
        if report.log_line:
            logs.append(report.log_line)
        if report.kind == "idle":
            if engine.idle and not client.pending and not inbound:
                break
            wakes = [t for t in (client.next_time(), inbound[0][0] if inbound else None) if t is not None]
            wake = min(wakes) if wakes else None
            if not engine.idle or wake is None:
                # Requests wait but none can be admitted and none runs to free memory: SGLang
                # spins here forever (the hang the start-up refusal exists to prevent).
                return live, now, True
            end = max(wake, now)
            engine.refresh_idle()
        else:
            end = report.end_s
        # Record scrapes that fall inside this step, with the gauges published before it ended.
        while samples is not None and next_sample <= end:
            samples.append(engine.sample(next_sample - t0))
            next_sample += sample_interval_s
        now = end
        while finished_events and finished_events[0][0] <= now:
            heapq.heappop(finished_events)
            client.in_flight -= 1
        if deadline_s is not None and now - t0 > deadline_s:
            break  # over the trial's time budget: the caller reports what finished
    return live, now, False


class SimSession:
    """One simulated server boot, replayed against any number of times in virtual time (the
    `sim-fast` backend's load search runs its levels on one session, as the `sim` and real
    backends run them on one server)."""

    def __init__(self, config: SimServerConfig) -> None:
        self.engine = SimEngine(config)
        self.logs = list(self.engine.startup.log_lines)
        self.logs.append("The server is fired up and ready to roll!")
        self.now = 0.0  # the session's virtual clock

    @property
    def startup(self) -> StartUp:
        return self.engine.startup

    def replay(
        self,
        workload: Workload,
        *,
        slo: SLO | None = None,
        sample_interval_s: float = 1.0,
        time_budget_s: float | None = None,
    ) -> SimResult:
        """Replay `workload` from the session's clock on; with `time_budget_s`, stop once the
        measured run has taken that long (virtual seconds)."""
        engine, logs = self.engine, self.logs
        warmups = workload.warmup_requests()
        t = self.now
        if warmups:  # sent one at a time before the measured run, like the replay's warm-up
            _, t, _ = _drive(engine, warmups, (0.0,) * len(warmups), 1, t, None, sample_interval_s, logs)
        specs = workload.requests
        offsets = send_offsets(workload.arrival, specs)
        samples: list[MetricSample] = []
        counters = engine.scheduler.counters
        steps_before = (counters.prefill_steps, counters.decode_steps)
        live, end, hung = (({}, t, False) if engine.crashed else _drive(
            engine, specs, offsets, concurrency_limit(workload.arrival), t, samples, sample_interval_s, logs, time_budget_s
        ))
        samples.append(engine.sample(end - t))
        self.now = end
        outcomes = tuple(_outcome(spec, live[spec.index], t) if spec.index in live else _unsent(spec) for spec in specs)
        duration = end - t
        return SimResult(
            outcomes=outcomes,
            summary=summarize(outcomes, duration, slo),
            samples=tuple(samples),
            series=summarize_series(samples),
            startup=engine.startup,
            duration_s=duration,
            hung=hung,
            overran=time_budget_s is not None and end - t > time_budget_s,
            log_lines=tuple(logs),
            crashed=engine.crashed.sglang_line if engine.crashed else None,
            prefill_batches=counters.prefill_steps - steps_before[0],
            decode_passes=counters.decode_steps - steps_before[1],
        )

    def drain(self, pause_s: float = 0.0) -> float:
        """After a replay cut short: the client has gone, so queued requests are dropped (the `sim`
        server aborts a disconnected request while it is queued) and running ones finish; then
        `pause_s` idle. Returns the virtual seconds it took."""
        engine, began = self.engine, self.now
        engine.drop_all_queued()
        now = self.now
        while not engine.idle:
            report = engine.step(now)
            if report.kind == "idle":
                break  # nothing can run: nothing more will free
            now = report.end_s
        engine.refresh_idle()
        self.now = now + pause_s
        return self.now - began


def simulate(
    workload: Workload,
    config: SimServerConfig,
    *,
    slo: SLO | None = None,
    sample_interval_s: float = 1.0,
    time_budget_s: float | None = None,
) -> SimResult:
    """Replay `workload` against a simulated server built from `config`, in virtual time; with
    `time_budget_s`, stop once the measured run has taken that long (virtual seconds)."""
    return SimSession(config).replay(workload, slo=slo, sample_interval_s=sample_interval_s, time_budget_s=time_budget_s)


def crash_log_lines(crash: DeviceAssert) -> list[str]:
    """What SGLang 0.5.17 logged when it died (docs/real-gpu/unified.md: a flood of index asserts,
    then the scheduler's traceback ending in the exception line)."""
    return [
        "IndexKernel.cu:111: operator(): Assertion `-sizes[i] <= index && index < sizes[i] && \"index out of bounds\"` failed.",
        f"(simulator) the {crash.side} side holds {crash.occupied} slots, past its static cap {crash.cap}",
        "Scheduler hit an exception: Traceback (most recent call last):",
        '  File "sglang/srt/layers/attention/triton_backend.py", line 2076, in update_sliding_window_buffer (simulated)',
        crash.sglang_line,
    ]


def _unsent(spec: RequestSpec) -> RequestOutcome:
    return RequestOutcome(
        index=spec.index, prompt_len=spec.prompt_len, output_len=0, success=False, start_s=0.0,
        ttft_s=None, itl_s=[], e2e_s=None, error="never sent: the simulated server hung first",
    )

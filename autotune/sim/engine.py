"""The simulated SGLang engine: start-up, the scheduler, and the metrics it publishes.

`SimEngine` is clock-agnostic: the HTTP server drives it against the wall clock, `simulate()`
(autotune/sim/run.py) drives it in virtual time. Both see the same pools, admission,
retractions, log lines and gauges.
"""

from __future__ import annotations

from dataclasses import dataclass

from autotune.measure.server_metrics import MetricSample
from autotune.sim.config import SimServerConfig, StartUp, start_up
from autotune.sim.request import SimRequest
from autotune.sim.scheduler import Scheduler, SchedulerConfig, StepReport
from autotune.sim.timing import TimingModel


@dataclass(frozen=True)
class EngineStats:
    """SGLang's scheduler gauges at one moment (published at prefill and every decode log)."""

    num_running_reqs: int
    num_queue_reqs: int
    full_capacity: int
    full_used: int
    full_available: int
    full_evictable: int
    swa_capacity: int
    swa_used: int
    swa_available: int
    swa_evictable: int
    gen_throughput: float
    num_retracted_reqs: int

    @property
    def full_token_usage(self) -> float:
        return self.full_used / self.full_capacity if self.full_capacity else 0.0

    @property
    def swa_token_usage(self) -> float:
        return self.swa_used / self.swa_capacity if self.swa_capacity else 0.0

    @property
    def token_usage(self) -> float:
        # For hybrid models sglang:token_usage is the larger of the two.
        return max(self.full_token_usage, self.swa_token_usage)


def _arena_config(config: SimServerConfig, startup: StartUp) -> dict:
    """--enable-unified-memory: the arena the scheduler allocates from, and the release's rules."""
    arena = startup.arena
    if arena is None:
        return {}
    old = arena.release and not arena.borrows_beyond_caps  # 0.5.17: the static caps bind
    return {
        "arena_bytes": arena.kv_bytes,
        "full_token_bytes": config.model.full_layer_bytes(config.tp_size, config.kv_cache_dtype) * len(config.model.full_layer_ids),
        "swa_token_bytes": config.model.swa_layer_bytes(config.tp_size, config.kv_cache_dtype) * len(config.model.swa_layer_ids),
        "joint_admission": not old,
        "crash_beyond_static_caps": bool(old),
    }


class SimEngine:
    def __init__(self, config: SimServerConfig) -> None:
        self.config = config
        self.startup: StartUp = start_up(config)
        self.timing = TimingModel(
            config.model, config.gpu, config.tp_size,
            spec_accept_length=config.speculative_accept_length, kv_dtype=config.kv_cache_dtype,
            prefill_cuda_graph=config.prefill_cuda_graph, dummy_weights=config.dummy_weights,
        )
        self.scheduler = Scheduler(
            SchedulerConfig(
                full_tokens=self.startup.full_tokens,
                swa_tokens=self.startup.swa_tokens,
                window=config.model.window if config.hybrid else None,
                page_size=config.page_size,
                chunked_prefill_size=config.chunk_size,
                max_prefill_tokens=config.max_prefill_tokens,
                max_running_requests=self.startup.max_running_requests,
                decode_log_interval=config.decode_log_interval,
                fixed_length_full_reservation=config.fixed_length_full_reservation,
                shrink_chunk_on_transient_swa_pressure=config.shrink_chunk_on_transient_swa_pressure,
                rules=config.rules,
                overlap_schedule=config.overlap_schedule,
                **_arena_config(config, self.startup),
            ),
            self.timing,
        )
        self.published = self.live_stats()
        self.crashed = None  # the DeviceAssert the server died of (0.5.17 unified memory)
        # Requests that reached the server, with when, not yet in the scheduler's queue: a round sees what had
        # arrived when it received (see step()).
        self._inbox: list[tuple[float, SimRequest]] = []
        self._received_until: float | None = None  # None: a round receives everything arrived by its start

    # -- driving ----------------------------------------------------------------------------
    def add(self, request: SimRequest, at: float | None = None) -> None:
        """A request reached the server at `at` (default: its arrival_s)."""
        self._inbox.append((request.arrival_s if at is None else at, request))

    def drop_queued(self, request: SimRequest) -> bool:
        """Abort a request still queued (not yet admitted); False if it is not queued."""
        for i, (_, queued) in enumerate(self._inbox):
            if queued is request:
                del self._inbox[i]
                return True
        try:
            self.scheduler.waiting.remove(request)
        except ValueError:
            return False
        return True

    def drop_all_queued(self) -> None:
        self._inbox.clear()
        self.scheduler.waiting.clear()

    def step(self, now: float) -> StepReport:
        """One iteration of the event loop, scheduled at `now`. It receives the requests that arrived by the time its
        loop iteration polled: on the plain loop, `now` (the last forward's end); on the overlap loop (SGLang's
        default), the start of the forward before it plus its scheduling and launch time, since the CPU schedules one
        forward ahead and polls right after launching it and processing the results of the forward before that
        (traced: a finished request's successor reached the real queue two rounds after its finish, not one). An
        idle loop polls continuously."""
        cutoff = now if self._received_until is None or self.scheduler.idle else self._received_until
        while self._inbox and self._inbox[0][0] <= cutoff:
            self.scheduler.add(self._inbox.pop(0)[1])
        report = self.scheduler.step(now)
        forward = report.kind in ("prefill", "decode")
        overlap = forward and self.config.overlap_schedule
        self._received_until = report.start_s + self.config.schedule_launch_s if overlap else None
        if report.kind == "prefill" or report.log_line is not None or report.retracted:
            self.published = self.live_stats()
        return report

    def refresh_idle(self) -> None:
        """SGLang refreshes its gauges periodically while idle."""
        self.published = self.live_stats()

    @property
    def idle(self) -> bool:
        return self.scheduler.idle and not self._inbox

    # -- observing --------------------------------------------------------------------------
    def live_stats(self) -> EngineStats:
        s = self.scheduler
        swa = s.swa
        return EngineStats(
            num_running_reqs=len(s.running) + (1 if s.chunked is not None else 0),
            num_queue_reqs=len(s.waiting),
            full_capacity=s.full.capacity,
            full_used=s.full.used,
            full_available=s.full.available,
            full_evictable=s.full.evictable,
            swa_capacity=swa.capacity if swa else 0,
            swa_used=swa.used if swa else 0,
            swa_available=swa.available if swa else 0,
            swa_evictable=swa.evictable if swa else 0,
            gen_throughput=s.gen_throughput,
            num_retracted_reqs=s.counters.last_retracted,
        )

    def sample(self, t: float) -> MetricSample:
        """What a scrape of /metrics would read at time t (seconds since the replay started)."""
        p, c = self.published, self.scheduler.counters
        return MetricSample(
            t=t,
            num_running_reqs=p.num_running_reqs,
            num_queue_reqs=p.num_queue_reqs,
            full_token_usage=p.full_token_usage,
            swa_token_usage=p.swa_token_usage,
            token_usage=p.token_usage,
            swa_used_tokens=p.swa_used,
            swa_available_tokens=p.swa_available,
            swa_evictable_tokens=p.swa_evictable,
            kv_used_tokens=p.full_used,
            kv_available_tokens=p.full_available,
            kv_evictable_tokens=p.full_evictable,
            gen_throughput=p.gen_throughput,
            num_retracted_requests_total=c.retracted_requests,
            generation_tokens_total=c.generation_tokens,
            prompt_tokens_total=c.prompt_tokens,
        )

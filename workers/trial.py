"""One trial: boot a server, replay a workload while scraping its metrics, stop it, report.

`run_trial` never raises for what a server or a workload can do wrong: every outcome becomes a
`TrialResult`, with a failure class and the log tail when it went wrong. The server is stopped
(whole process group, port checked) on every path, Ctrl-C included.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from autotune.measure.server_metrics import MetricSample, SeriesSummary, summarize_series
from autotune.measure.serving_metrics import SLO, RequestOutcome, ServingSummary, summarize
from autotune.workloads import Workload
from workers.failures import FailureKind, TrialFailure
from workers.load_replay import LevelRuns, run_levels
from workers.load_search import LoadSearchResult, LoadSearchSpec, paced_for_server
from workers.kernel_warmup import freeze_gc, prefill_token_counts, warm_prefill_kernels
from workers.handover import BootOverlapped, EarlyBoot, GpuSetRecord, Handover, SoloWatch
from workers.process import BootInfo, ServerProcess
from workers.early_stop import EarlyStop
from workers.replay import ReplayConfig, ReplayResult, replay
from workers.scrape import Scraper
from workers.server_truth import ServerMemory, read_server_memory
from workers.spec import ServerSpec

Progress = Callable[[str, int, int], None]  # (phase, requests done, requests total)


@dataclass(frozen=True)
class TrialSpec:
    trial_id: str
    server: ServerSpec
    workload: Workload
    slo: SLO | None = None
    boot_timeout_s: float = 900.0
    hang_timeout_s: float = 120.0
    scrape_interval_s: float = 1.0
    log_dir: str = "autotune-logs"
    early_stop: EarlyStop | None = None
    # Wall seconds the replay may take before the trial ends as "too slow" (None: no limit). The
    # study derives it from the workload (autotune/study/feasibility.py), so no trial grinds.
    time_budget_s: float | None = None
    # Capacity at an SLO: replay the workload at several load levels on this one boot
    # (workers/load_search.py); the time budget applies to each level.
    load_search: LoadSearchSpec | None = None
    # Prefill token counts sent one at a time before measuring, so that the replay does not time
    # SGLang's first-use kernel compiles (workers/kernel_warmup.py). None: the standard set on a real
    # server, none on the simulated one (it compiles nothing); () turns it off.
    prefill_warmup: tuple[int, ...] | None = None
    # After the warm-up, SGLang's /freeze_gc (what its long-GC warning advises): the scheduler's GC
    # scanning ~800k boot-time objects paused storm prefills by 0.4 s at a time (measured).
    freeze_gc: bool = True

    def warmup_counts(self) -> tuple[int, ...]:
        if self.prefill_warmup is not None:
            return self.prefill_warmup
        return () if self.server.simulated else prefill_token_counts()


@dataclass(frozen=True)
class TrialResult:
    trial_id: str
    ok: bool
    backend: str
    simulated: bool
    command: tuple[str, ...]
    failure: FailureKind | None = None
    message: str = ""
    log_tail: str = ""
    log_path: str = ""
    port: int | None = None
    boot_s: float | None = None
    replay_s: float | None = None
    full_tokens: int | None = None
    swa_tokens: int | None = None
    summary: ServingSummary | None = None
    series: SeriesSummary | None = None
    samples: tuple[MetricSample, ...] = ()
    server_counters: dict[str, float] = field(default_factory=dict)
    client_counts: dict[str, int] = field(default_factory=dict)
    worker: dict[str, Any] = field(default_factory=dict)  # node id, GPU ids, pid (filled by the worker)
    started_at: float | None = None  # wall clock (epoch seconds)
    finished_at: float | None = None
    stopped_early: bool = False  # clearly lost: the summary covers the requests finished by then
    server_memory: ServerMemory | None = None  # the pools and budget as the server states them
    load_search: LoadSearchResult | None = None  # every load level measured (summary: the best passing one)
    early_boot: EarlyBoot | None = None  # booted while the last trial on its GPUs drained (--boot-ahead)
    warmup_s: float | None = None  # the prefill warm-up before measuring (None: none was sent)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["failure"] = self.failure.value if self.failure else None
        data["summary"] = self.summary.to_dict() if self.summary else None
        data["series"] = self.series.to_dict() if self.series else None
        data["samples"] = [s.to_dict() for s in self.samples]
        data["command"] = list(self.command)
        data["server_memory"] = self.server_memory.to_dict() if self.server_memory else None
        data["load_search"] = self.load_search.to_dict() if self.load_search else None
        data["early_boot"] = self.early_boot.to_dict() if self.early_boot else None
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrialResult":
        values = dict(data)
        values["failure"] = FailureKind(data["failure"]) if data.get("failure") else None
        values["summary"] = ServingSummary.from_dict(data["summary"]) if data.get("summary") else None
        values["series"] = SeriesSummary(**data["series"]) if data.get("series") else None
        values["samples"] = tuple(MetricSample.from_dict(s) for s in data.get("samples", ()))
        values["command"] = tuple(data.get("command", ()))
        values["server_memory"] = ServerMemory.from_dict(data["server_memory"]) if data.get("server_memory") else None
        values["load_search"] = LoadSearchResult.from_dict(data["load_search"]) if data.get("load_search") else None
        values["early_boot"] = EarlyBoot.from_dict(data["early_boot"]) if data.get("early_boot") else None
        return cls(**values)


def _client_counts(outcomes: tuple[RequestOutcome, ...]) -> dict[str, int]:
    """What the client sent and received in the measured run (compare: the counters' growth)."""
    return {
        "requests": len(outcomes),
        "prompt_tokens": sum(o.prompt_len for o in outcomes),
        "generation_tokens": sum(o.output_len for o in outcomes),
        "failed": sum(not o.success for o in outcomes),
    }


async def _measure(
    spec: TrialSpec, server: ServerProcess, progress: Progress | None, drain: Handover | None = None,
) -> tuple[ReplayResult, Scraper, bool]:
    """The replay with its scrapes; the flag says it was stopped at the time budget. `drain` (the
    handover to the trial booting next on these GPUs) follows each request out and back."""
    scraper = Scraper(server.base_url, spec.scrape_interval_s)
    total = len(spec.workload.requests)
    done = 0

    def on_done(outcome: RequestOutcome) -> None:
        nonlocal done
        done += 1
        if drain is not None:
            drain.finished(outcome.index)
        if progress is not None:
            progress("replay", done, total)

    started = time.monotonic()
    overran = False

    def should_stop(finished: int) -> bool:
        nonlocal overran
        if spec.time_budget_s is not None and time.monotonic() - started > spec.time_budget_s:
            overran = True
            return True
        return spec.early_stop is not None and spec.early_stop.lost(scraper.samples, finished, total)

    # A simulated server's clock runs --time-scale times the wall's: arrivals go out that much faster,
    # so that the rate it sees is the workload's (the replay's figures are on the server's clock).
    sent = paced_for_server(spec.workload, float(spec.server.sim_flags.get("time-scale", 1.0)))
    try:
        result = await replay(
            sent,
            ReplayConfig(base_url=server.base_url, hang_timeout_s=spec.hang_timeout_s),
            server_alive=lambda: server.alive,
            on_start=scraper.start,
            on_done=on_done,
            should_stop=should_stop if spec.early_stop or spec.time_budget_s is not None else None,
            on_send=(lambda index: drain.sent(index, total)) if drain is not None else None,
        )
    finally:
        await scraper.stop(final_scrape=server.alive)
    return result, scraper, overran


def too_slow_message(finished: int, total: int, budget_s: float | None) -> str:
    return (f"too slow: {finished} of {total} requests finished within the trial's time budget of "
            f"{budget_s:.0f} s (derived from the workload); this ratio cannot serve it in reasonable time")


def _searched_result(
    spec: TrialSpec, runs: LevelRuns, scraper: Scraper, died: bool, server: ServerProcess, boot: Any, memory: Any,
    base: dict[str, Any],
) -> TrialResult:
    """A load search's trial: every level, the largest passing level's summary, the boot's scrapes."""
    searched = LoadSearchResult(tuple(runs.levels), spec.load_search.gpus if spec.load_search else 1)
    shown = runs.shown()
    outcomes = tuple(o for level in runs.outcomes.values() for o in level)
    samples = tuple(scraper.samples)
    counts = _client_counts(outcomes)
    return TrialResult(
        finished_at=time.time(), ok=not died, failure=FailureKind.CRASHED if died else None,
        message=(f"the server process died during the load search (exit code {server.returncode}); before that, "
                 f"{searched.describe()}" if died else searched.describe()),
        log_tail=server.log_tail() if died else "",
        boot_s=boot.boot_s, replay_s=runs.duration_s, full_tokens=boot.full_tokens, swa_tokens=boot.swa_tokens,
        summary=runs.summaries.get(shown) if shown is not None else None,
        series=summarize_series(samples), samples=samples, server_counters=scraper.counter_deltas(),
        client_counts=counts, server_memory=memory, load_search=searched, **base,
    )


def run_trial(
    spec: TrialSpec,
    progress: Progress | None = None,
    on_server: Callable[[int], None] | None = None,
    on_process: Callable[[ServerProcess], None] | None = None,
    *,
    gpu_set: GpuSetRecord | None = None,
    handover: Handover | None = None,
    drain: Handover | None = None,
) -> TrialResult:
    """Boot, replay, stop. `on_server(port)` learns the server's port before it boots (service
    discovery); `on_process` gets the server itself, for an owner that must be able to stop it.

    `gpu_set` records what boots on these GPUs show; with `handover` the server boots while the last
    trial on them drains, and counts only if that boot saw the GPUs as a solo boot does; `drain` is
    the handover to the next trial, which follows this one's replay (workers/handover.py). A load
    search's end is not known ahead, so the next trial waits for it to finish."""
    log_path = Path(spec.log_dir) / f"{spec.trial_id}.log"

    def new_server() -> ServerProcess:
        made = ServerProcess(spec.server, log_path, boot_timeout_s=spec.boot_timeout_s)
        if on_server is not None:
            on_server(made.port)
        if on_process is not None:
            on_process(made)
        return made

    server = new_server()
    started_at = time.time()
    base = dict(
        started_at=started_at,
        trial_id=spec.trial_id, backend=spec.server.backend, simulated=spec.server.simulated,
        command=tuple(server.argv), log_path=str(log_path), port=server.port,
    )
    boot = None
    memory = None
    early: EarlyBoot | None = None
    runs = LevelRuns()  # the load levels measured (a load search only); kept should the server fail

    def solo_watch() -> SoloWatch | None:  # a boot with the GPUs to itself: what early boots are checked against
        return SoloWatch(gpu_set) if gpu_set is not None else None

    def boot_server(watch: Callable[[str, float], None] | None) -> tuple[BootInfo, ServerMemory]:
        server.start()
        if progress is not None:
            progress("boot", 0, len(spec.workload.requests))
        booted = server.wait_ready(watch=watch)
        logged = (booted.full_tokens, booted.swa_tokens) if booted.full_tokens is not None else None
        return booted, read_server_memory(server.base_url, logged, keep=log_path.with_suffix(""))

    try:
        if handover is None:
            boot, memory = boot_server(solo_watch())
        else:
            handover.wait_to_boot()
            boot_started = time.monotonic()
            busy_at_start = not handover.free
            try:
                boot, memory = boot_server(handover.watch)
                handover.wait_free()
                why = handover.verify(server.read_log(), memory.kvcache_gib)
            except BootOverlapped as overlapped:
                why = str(overlapped)
            except TrialFailure as failure:
                if not busy_at_start:
                    raise  # booted on free GPUs: its failure is its own
                why = f"it failed while the last server still ran ({failure.message})"
            if why:  # measure nothing from it: boot again, alone (its log is kept beside)
                server.stop()
                handover.wait_free()
                if log_path.exists():
                    log_path.replace(log_path.with_suffix(".early.log"))
                server = new_server()
                base.update(command=tuple(server.argv), port=server.port)
                boot_started = time.monotonic()
                boot, memory = boot_server(solo_watch())
            freed_at = handover.freed_at or boot_started
            early = EarlyBoot(
                started_before_free_s=round(max(0.0, freed_at - boot_started), 2),
                ready_after_free_s=round(max(0.0, boot_started + boot.boot_s - freed_at), 2),
                rebooted=why or "",
            )
        if gpu_set is not None and (early is None or early.rebooted):
            gpu_set.learn_budget(memory.kvcache_gib)  # a solo boot's budget: what early ones must match
        base["warmup_s"] = _warm_up(spec, server, progress)
        if spec.load_search is not None:
            scraper = Scraper(server.base_url, spec.scrape_interval_s)
            asyncio.run(run_levels(
                spec.load_search, runs, workload=spec.workload, slo=spec.slo, base_url=server.base_url,
                replay_config=ReplayConfig(base_url=server.base_url, hang_timeout_s=spec.hang_timeout_s),
                server_alive=lambda: server.alive, scraper=scraper, time_budget_s=spec.time_budget_s,
                time_scale=float(spec.server.sim_flags.get("time-scale", 1.0)), progress=progress,
            ))
            died = not server.alive
            return _searched_result(spec, runs, scraper, died, server, boot, memory, dict(base, early_boot=early))
        replayed, scraper, overran = asyncio.run(_measure(spec, server, progress, drain))
        outcomes, duration = replayed.outcomes, replayed.duration_s
        died = not server.alive  # requests can fail faster than the watchdog looks: ask the process
    except TrialFailure as failure:
        if failure.kind is FailureKind.CRASHED:  # the message is the server's own words where its log has them
            failure.message = _died_of(server, failure.message)
        searched = LoadSearchResult(tuple(runs.levels), spec.load_search.gpus) if runs.levels else None
        if searched is not None:  # what the levels before the failure found still counts: say it
            failure.message = f"{failure.message}; before that, {searched.describe()}"
        return TrialResult(
            load_search=searched,
            finished_at=time.time(), ok=False, failure=failure.kind, message=failure.message,
            log_tail=failure.log_tail or server.log_tail(),
            boot_s=boot.boot_s if boot else None,
            full_tokens=boot.full_tokens if boot else None, swa_tokens=boot.swa_tokens if boot else None,
            server_memory=memory, early_boot=early, **base,
        )
    finally:
        server_exit = server.returncode
        server.stop()
    samples = tuple(scraper.samples)
    summary = summarize(outcomes, duration, spec.slo)
    counts = _client_counts(outcomes)
    failure, message = None, ""
    if died:
        failure = FailureKind.CRASHED
        message = _died_of(server, f"the server process died during the replay (exit code {server_exit}); "
                                   f"{counts['failed']} requests failed")
    elif overran:
        failure = FailureKind.TOO_SLOW
        message = too_slow_message(len(outcomes), len(spec.workload.requests), spec.time_budget_s)
    elif replayed.stopped_early:
        message = spec.early_stop.describe(len(outcomes), len(spec.workload.requests))
    elif counts["failed"]:
        failure = FailureKind.CLIENT_ERROR
        first = next(o.error for o in outcomes if not o.success)
        message = f"{counts['failed']} of {len(outcomes)} requests failed; first: {first}"
    return TrialResult(
        finished_at=time.time(), ok=failure is None, failure=failure, message=message,
        log_tail=server.log_tail() if failure and failure is not FailureKind.TOO_SLOW else "",
        boot_s=boot.boot_s, replay_s=duration,
        full_tokens=boot.full_tokens, swa_tokens=boot.swa_tokens,
        summary=summary, series=summarize_series(samples), samples=samples,
        server_counters=scraper.counter_deltas(),
        client_counts=counts, stopped_early=replayed.stopped_early or overran, server_memory=memory,
        early_boot=early, **base,
    )


def _warm_up(spec: TrialSpec, server: ServerProcess, progress: Progress | None) -> float | None:
    """The prefill warm-up on the booted server (the GPUs are this trial's by now); its seconds."""
    counts = spec.warmup_counts()
    if not counts:
        return None
    if progress is not None:
        progress("warm-up", 0, len(spec.workload.requests))
    started = time.monotonic()
    try:
        asyncio.run(warm_prefill_kernels(server.base_url, counts, hang_timeout_s=spec.hang_timeout_s,
                                         server_alive=lambda: server.alive))
    except TrialFailure as failure:  # say where: nothing was measured yet
        failure.message = f"during the prefill warm-up, before measuring: {failure.message}"
        raise
    if not server.alive:  # its requests can fail faster than the watchdog looks: ask the process
        raise TrialFailure(FailureKind.CRASHED, "the server process died during the prefill warm-up, before measuring",
                           server.log_tail())
    if spec.freeze_gc:
        asyncio.run(freeze_gc(server.base_url))
    return round(time.monotonic() - started, 2)


def _died_of(server: ServerProcess, fallback: str) -> str:
    """A crashed trial's message: the exception line the server's log ends with, else `fallback`."""
    from workers.failures import crash_line

    try:
        line = crash_line(server.log_tail())
    except OSError:
        line = None
    return line or fallback

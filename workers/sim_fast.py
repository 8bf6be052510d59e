"""`sim-fast`: trials on the simulator's engine in virtual time, in a process pool of this machine.

No server boots: the very command line the `sim` backend would boot is parsed by the simulator's
own parser (same flags, same defaults) and simulated in seconds instead of minutes.
"""

from __future__ import annotations

import concurrent.futures as futures
import os
import time

from autotune.hardware import load_gpu
from autotune.pools import InsufficientMemory, SWAPoolRefused
from autotune.sim.args import load_model_for, parse_args, server_config
from autotune.sim.run import SimResult, SimSession, simulate
from workers.failures import FailureKind
from workers.futures import first_done
from workers.load_search import LoadLevel, LoadSearchResult, judge_level, level_budget_s, offered_rate, run_search, scaled
from workers.server_truth import ServerMemory
from workers.trial import TrialResult, TrialSpec, too_slow_message


def run_sim_fast(spec: TrialSpec) -> TrialResult:
    """One trial on the simulator's engine in virtual time, from the very command line the
    `sim` backend would boot (same flag parsing, same defaults): seconds instead of minutes."""
    started = time.time()
    argv = spec.server.argv(port=1)
    base = dict(trial_id=spec.trial_id, backend="sim-fast", simulated=True, command=tuple(argv), started_at=started)
    args = parse_args(argv[3:])
    try:
        config = server_config(args, load_model_for(args), load_gpu(args.gpu))
        # The budget is wall seconds of a server running at --time-scale; here the clock is virtual.
        budget = spec.time_budget_s * args.time_scale if spec.time_budget_s is not None else None
        searched = None
        if spec.load_search is not None:
            result, searched = _search_levels(spec, SimSession(config), budget)
        else:
            result = simulate(spec.workload, config, slo=spec.slo, sample_interval_s=spec.scrape_interval_s, time_budget_s=budget)
    except SWAPoolRefused as refused:
        return TrialResult(ok=False, failure=FailureKind.BOOT_REFUSED, message=refused.sglang_message, finished_at=time.time(), **base)
    except InsufficientMemory as oom:
        return TrialResult(ok=False, failure=FailureKind.OUT_OF_MEMORY, message=str(oom), finished_at=time.time(), **base)
    failed = sum(not o.success for o in result.outcomes)
    if result.crashed:  # the server's own words: its log's exception line
        failure, message = FailureKind.CRASHED, result.crashed
    elif searched is not None:  # a level that failed or overran is a measurement of the load, not of the trial
        failure = FailureKind.HANG if result.hung else None
        message = "the simulated server hung: waiting requests could never be admitted" if result.hung else searched.describe()
        failed = 0 if failure is None else failed
    elif result.overran:
        failure, message = FailureKind.TOO_SLOW, too_slow_message(len(result.outcomes) - failed, len(result.outcomes), budget)
    elif result.hung:
        failure, message = FailureKind.HANG, "the simulated server hung: waiting requests could never be admitted"
    else:
        failure = FailureKind.CLIENT_ERROR if failed else None
        message = f"{failed} of {len(result.outcomes)} requests failed" if failed else ""
    return TrialResult(
        ok=failure is None, failure=failure, message=message,
        log_tail="\n".join(result.log_lines[-20:]) if failure else "",
        boot_s=0.0, replay_s=result.duration_s,
        full_tokens=result.startup.full_tokens, swa_tokens=result.startup.swa_tokens,
        server_memory=ServerMemory(  # what the `sim` server would report at /server_info and /metrics
            kvcache_gib=round(result.startup.kv_cache_gib, 3),
            full_tokens=result.startup.full_tokens, swa_tokens=result.startup.swa_tokens,
        ),
        summary=result.summary, series=result.series, samples=result.samples,
        stopped_early=result.overran and searched is None, load_search=searched,
        client_counts={
            "requests": len(result.outcomes),
            "prompt_tokens": sum(o.prompt_len for o in result.outcomes),
            "generation_tokens": sum(o.output_len for o in result.outcomes),
            "failed": failed,
        },
        worker={"pid": os.getpid()}, finished_at=time.time(), **base,
    )


def _search_levels(spec: TrialSpec, session: SimSession, budget_s: float | None) -> tuple[SimResult, LoadSearchResult]:
    """The load search on one simulated boot; the result shown is the largest passing level's (else
    the first level's). A hung level ends the search: the server cannot go on."""
    search = spec.load_search
    assert search is not None
    runs: dict[float, SimResult] = {}

    def measure(multiplier: float) -> LoadLevel:
        if any(run.hung for run in runs.values()):
            return LoadLevel(multiplier, 0.0, 0.0, None, None, 0, 0, 0.0, False, "not run: the server hung at a lower level")
        workload = scaled(spec.workload, multiplier, warmup=not runs)
        run = session.replay(workload, slo=spec.slo, sample_interval_s=spec.scrape_interval_s,
                             time_budget_s=level_budget_s(budget_s, multiplier))
        runs[multiplier] = run
        cut = "too slow: over the level's time budget" if run.overran else ("hung" if run.hung else "")
        session.drain(search.drain_s)
        return judge_level(multiplier, offered_rate(workload), run.summary, search.slo,
                           requests=len(workload.requests), cut_short=cut)

    searched = run_search(search, measure)
    best = searched.best
    shown = runs[best.multiplier] if best else runs[searched.levels[0].multiplier]
    hung = next((run for run in runs.values() if run.hung), None)
    return (hung or shown), searched


class InProcessRunner:
    """`sim-fast`: trials in a process pool (the engine is pure Python; threads would share a core)."""

    def __init__(self, parallel: int = 1) -> None:
        self.capacity = parallel
        self.lookahead = 0  # nothing boots
        self._pool = futures.ProcessPoolExecutor(max_workers=parallel)
        self._running: set[futures.Future[TrialResult]] = set()

    def submit(self, spec: TrialSpec) -> None:
        self._running.add(self._pool.submit(run_sim_fast, spec))

    def servers(self) -> list[dict]:
        return []  # in-process: no server to scrape

    def wait_one(self, timeout_s: float) -> TrialResult | None:
        return first_done(self._running, timeout_s)

    def close(self) -> None:
        for future in self._running:
            future.cancel()
        self._pool.shutdown(wait=False, cancel_futures=True)

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
from autotune.sim.run import simulate
from workers.failures import FailureKind
from workers.futures import first_done
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
        result = simulate(spec.workload, config, slo=spec.slo, sample_interval_s=spec.scrape_interval_s, time_budget_s=budget)
    except SWAPoolRefused as refused:
        return TrialResult(ok=False, failure=FailureKind.BOOT_REFUSED, message=refused.sglang_message, finished_at=time.time(), **base)
    except InsufficientMemory as oom:
        return TrialResult(ok=False, failure=FailureKind.OUT_OF_MEMORY, message=str(oom), finished_at=time.time(), **base)
    failed = sum(not o.success for o in result.outcomes)
    if result.crashed:  # the server's own words: its log's exception line
        failure, message = FailureKind.CRASHED, result.crashed
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
        summary=result.summary, series=result.series, samples=result.samples, stopped_early=result.overran,
        client_counts={
            "requests": len(result.outcomes),
            "prompt_tokens": sum(o.prompt_len for o in result.outcomes),
            "generation_tokens": sum(o.output_len for o in result.outcomes),
            "failed": failed,
        },
        worker={"pid": os.getpid()}, finished_at=time.time(), **base,
    )


class InProcessRunner:
    """`sim-fast`: trials in a process pool (the engine is pure Python; threads would share a core)."""

    def __init__(self, parallel: int = 1) -> None:
        self.capacity = parallel
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

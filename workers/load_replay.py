"""The load search's levels over HTTP, against one booted server (workers/load_search.py decides the
levels; this sends them). A simulated server running `--time-scale S` gets the level's arrivals S
times faster on the wall, so that its own clock sees the level's rate.

Each level is one replay of the workload at its multiplier, under the trial's time budget, cut short
once its P99 is over the SLO whatever the requests still out do. Between levels the server drains:
the client has hung up on what was cut short, and the next level starts once /metrics shows no
request running or queued, plus a short quiet spell. One scraper covers the whole boot.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Callable

import aiohttp

from autotune.measure.serving_metrics import RequestOutcome, ServingSummary, summarize
from workers.load_search import (
    LoadLevel, LoadSearchSpec, judge_level, level_budget_s, next_multiplier, offered_rate, paced_for_server, scaled, slo_broken,
)
from workers.replay import ReplayConfig, replay
from workers.scrape import Scraper, parse_metrics

Progress = Callable[[str, int, int], None]
DRAIN_POLL_S = 0.2


@dataclass
class LevelRuns:
    """What the levels measured so far (kept by the caller, so a crash mid-search keeps them)."""

    levels: list[LoadLevel] = field(default_factory=list)
    summaries: dict[float, ServingSummary] = field(default_factory=dict)
    outcomes: dict[float, tuple[RequestOutcome, ...]] = field(default_factory=dict)
    duration_s: float = 0.0

    def shown(self) -> float | None:
        """The level a trial's summary shows: the largest passing one, else the first."""
        passed = [level.multiplier for level in self.levels if level.passed]
        return max(passed) if passed else (self.levels[0].multiplier if self.levels else None)


async def wait_idle(base_url: str, timeout_s: float) -> bool:
    """Poll /metrics until no request runs or waits (True), or `timeout_s` passes (False)."""
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5.0)) as session:
        while time.monotonic() < deadline:
            try:
                async with session.get(f"{base_url}/metrics") as response:
                    values = parse_metrics(await response.text())
                if values.get("sglang:num_running_reqs", 0) == 0 and values.get("sglang:num_queue_reqs", 0) == 0:
                    return True
            except (aiohttp.ClientError, asyncio.TimeoutError):
                pass
            await asyncio.sleep(DRAIN_POLL_S)
    return False


async def run_levels(
    search: LoadSearchSpec,
    runs: LevelRuns,
    *,
    workload,
    slo,
    base_url: str,
    replay_config: ReplayConfig,
    server_alive: Callable[[], bool],
    scraper: Scraper,
    time_budget_s: float | None,
    time_scale: float = 1.0,
    progress: Progress | None = None,
) -> None:
    """Measure levels into `runs` until the search is done. Raises TrialFailure on a crash or a hang."""
    started_scraper = False
    try:
        while (multiplier := next_multiplier(runs.levels, search)) is not None:
            level_workload = scaled(workload, multiplier, warmup=not runs.levels)
            # A simulated server's clock runs `time_scale` times the wall's: send its arrivals that much
            # faster, so that on its clock (where it times every request) the rate is the level's.
            sent = paced_for_server(level_workload, time_scale)
            total = len(level_workload.requests)
            finished: list[RequestOutcome] = []
            began = time.monotonic()
            budget_s = level_budget_s(time_budget_s, multiplier)
            cut = ""

            def on_done(outcome: RequestOutcome) -> None:
                finished.append(outcome)
                if progress is not None:
                    progress(f"load {multiplier:g}x", len(finished), total)

            def should_stop(_: int) -> bool:
                nonlocal cut
                if budget_s is not None and time.monotonic() - began > budget_s:
                    cut = f"too slow: {len(finished)} of {total} requests finished within the level's time budget"
                else:
                    cut = slo_broken(finished, total, slo)
                return bool(cut)

            async def on_start(t0: float) -> None:
                nonlocal started_scraper
                if not started_scraper:
                    started_scraper = True
                    await scraper.start(t0)

            result = await replay(sent, replay_config, server_alive=server_alive, on_start=on_start,
                                  on_done=on_done, should_stop=should_stop)
            summary = summarize(result.outcomes, result.duration_s, slo)
            runs.summaries[multiplier] = summary
            runs.outcomes[multiplier] = result.outcomes
            runs.duration_s += result.duration_s
            runs.levels.append(judge_level(multiplier, offered_rate(level_workload), summary, search.slo,
                                           requests=total, cut_short=cut if result.stopped_early else ""))
            if next_multiplier(runs.levels, search) is not None:
                await wait_idle(base_url, replay_config.hang_timeout_s)
                await asyncio.sleep(search.drain_s / time_scale)
    finally:
        if started_scraper:
            await scraper.stop(final_scrape=server_alive())

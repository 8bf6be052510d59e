"""Poll a server's `/metrics` while a workload runs and keep the time series.

Parsing is prometheus-client's own text parser. SGLang labels every scheduler gauge with its
ranks; with tensor parallelism each rank reports, so gauges are read as the max over label sets
(the fullest rank is the one that binds) and counters as the max too (ranks repeat them).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from autotune.measure.server_metrics import MetricSample

SIM_CLOCK = "sglang:simulated_clock_seconds"  # only the simulator exports it

# MetricSample field -> SGLang metric (sample name as exposed; counters carry _total).
METRIC_NAMES: dict[str, str] = {
    "num_running_reqs": "sglang:num_running_reqs",
    "num_queue_reqs": "sglang:num_queue_reqs",
    "full_token_usage": "sglang:full_token_usage",
    "swa_token_usage": "sglang:swa_token_usage",
    "token_usage": "sglang:token_usage",
    "swa_used_tokens": "sglang:swa_used_tokens",
    "swa_available_tokens": "sglang:swa_available_tokens",
    "swa_evictable_tokens": "sglang:swa_evictable_tokens",
    "kv_used_tokens": "sglang:kv_used_tokens",
    "kv_available_tokens": "sglang:kv_available_tokens",
    "kv_evictable_tokens": "sglang:kv_evictable_tokens",
    "gen_throughput": "sglang:gen_throughput",
    "num_retracted_requests_total": "sglang:num_retracted_requests_total",
    "generation_tokens_total": "sglang:generation_tokens_total",
    "prompt_tokens_total": "sglang:prompt_tokens_total",
}


# Labels that only say which rank reported: ranks repeat the same value, so take the max over them.
RANK_LABELS = frozenset({"tp_rank", "pp_rank", "dp_rank", "moe_ep_rank", "attn_tp_rank", "attn_cp_rank"})


def parse_metrics(text: str) -> dict[str, float]:
    """Every sample in a Prometheus text page, by sample name.

    Gauges: the max over label sets (the fullest rank is the one that binds). Counters and
    histogram series: label sets that differ only by rank are the same count (max), others are
    different counts and add up (SGLang splits request counters by `is_streaming`).
    """
    gauges: dict[str, float] = {}
    counts: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if family.type == "gauge":
                gauges[sample.name] = max(gauges.get(sample.name, sample.value), sample.value)
                continue
            key = tuple(sorted((k, v) for k, v in sample.labels.items() if k not in RANK_LABELS))
            groups = counts.setdefault(sample.name, {})
            groups[key] = max(groups.get(key, sample.value), sample.value)
    return {**gauges, **{name: sum(groups.values()) for name, groups in counts.items()}}


def sample_from_metrics(values: dict[str, float], t: float) -> MetricSample:
    # A server without a hybrid pool exposes no swa_* gauges: they read 0.
    return MetricSample(t=t, **{f: values.get(name, 0.0) for f, name in METRIC_NAMES.items()})


@dataclass
class Scraper:
    """Background scraping of `base_url/metrics` every `interval_s` until stopped."""

    base_url: str
    interval_s: float = 1.0
    samples: list[MetricSample] = field(default_factory=list)
    errors: int = 0
    first: dict[str, float] = field(default_factory=dict)
    last: dict[str, float] = field(default_factory=dict)
    _task: asyncio.Task[None] | None = None
    _t0: float = 0.0

    async def scrape_once(self, session: aiohttp.ClientSession) -> dict[str, float] | None:
        try:
            async with session.get(f"{self.base_url}/metrics") as response:
                if response.status != 200:
                    self.errors += 1
                    return None
                text = await response.text()
        except (aiohttp.ClientError, asyncio.TimeoutError):
            self.errors += 1
            return None
        values = parse_metrics(text)
        if not self.first:
            self.first = values
        self.last = values
        self.samples.append(sample_from_metrics(values, self._elapsed(values)))
        return values

    def _elapsed(self, values: dict[str, float]) -> float:
        """Seconds since the start: on the simulator's own clock when it reports one (a sped-up
        simulator's wall time is not its simulated GPU's), else on the wall clock."""
        if SIM_CLOCK in values and SIM_CLOCK in self.first:
            return values[SIM_CLOCK] - self.first[SIM_CLOCK]
        return time.monotonic() - self._t0

    def _timeout(self) -> aiohttp.ClientTimeout:
        return aiohttp.ClientTimeout(total=max(self.interval_s * 5, 5.0))

    async def _loop(self) -> None:
        async with aiohttp.ClientSession(timeout=self._timeout()) as session:
            next_at = time.monotonic() + self.interval_s
            while True:
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))
                await self.scrape_once(session)
                next_at += self.interval_s

    def counter_deltas(self) -> dict[str, float]:
        """How much each SGLang counter grew between the first and the last scrape."""
        return {
            name: value - self.first.get(name, 0.0)
            for name, value in self.last.items()
            if name.startswith("sglang:") and name.endswith("_total")
        }

    async def start(self, t0: float | None = None) -> None:
        """Take the baseline scrape now, then keep scraping in the background."""
        self._t0 = time.monotonic() if t0 is None else t0
        async with aiohttp.ClientSession(timeout=self._timeout()) as session:
            await self.scrape_once(session)
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self, final_scrape: bool = True) -> None:
        """Stop polling; take one last scrape so the series ends with the final counters."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        if final_scrape:
            async with aiohttp.ClientSession(timeout=self._timeout()) as session:
                await self.scrape_once(session)

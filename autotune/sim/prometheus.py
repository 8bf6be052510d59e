"""The simulated server's /metrics: SGLang's Prometheus families, names, labels and buckets.

Names and buckets are copied from SGLang 0.5.23 (srt/observability/metrics_collector.py), so the
scraper that reads a real server reads this one unchanged:

- scheduler side (labels model_name, engine_type, tp_rank, pp_rank, moe_ep_rank): the gauges are
  read at scrape time from `engine.published`, which the engine refreshes when SGLang refreshes
  its gauges (each prefill, every decode_log_interval decode steps, periodically when idle); the
  retraction counters from the scheduler's counters; `queue_time_seconds` is observed when a
  request leaves the queue. `evicted_tokens_total` is the radix cache's (labels cache_type,
  tp_rank, pp_rank, dp_rank) and, like SGLang's, counts full-layer tokens only;
- tokenizer side (labels model_name, engine_type, plus is_streaming where SGLang has it): TTFT,
  inter-token latency, e2e latency, the prompt/generation/request counters and the prompt and
  generation length histograms, which SGLang updates once per *finished* request (so a retracted and re-prefilled request counts its
  prompt once here, unlike the scheduler's prefill counter);
- `sglang:simulated 1`, which no real server exports, so nobody mistakes this one for a GPU.

Latencies are seconds of the simulated clock (wall seconds at --time-scale 1). `_created`
series are off, as on a real server (SGLang runs prometheus_client in multiprocess mode).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from autotune.hardware import GIB
from autotune.sim.engine import SimEngine

CONTENT_TYPE = prometheus_client.CONTENT_TYPE_LATEST

# TokenizerMetricsCollector defaults.
TTFT_BUCKETS = (0.1, 0.2, 0.4, 0.6, 0.8, 1, 2, 4, 6, 8, 10, 20, 40, 60, 80, 100, 200, 400)
E2E_BUCKETS = (0.1, 0.2, 0.4, 0.6, 0.8, 1, 2, 4, 6, 8, 10, 20, 40, 60, 80, 100, 200, 400, 600, 1200, 1800, 2400)
ITL_BUCKETS = (
    0.002, 0.004, 0.006, 0.008, 0.010, 0.015, 0.020, 0.025, 0.030, 0.035, 0.040, 0.060, 0.080,
    0.100, 0.200, 0.400, 0.600, 0.800, 1.000, 2.000, 4.000, 6.000, 8.000,
)  # fmt: skip
# TokenizerMetricsCollector's default_bucket_prompt_tokens, used for prompt and generation lengths.
TOKEN_BUCKETS = (
    100, 300, 500, 700, 1000, 1500, 2000, 3000, 4000, 5000, 6000, 7000, 8000, 9000, 10000, 12500, 15000,
    17500, 20000, 22500, 25000, 27500, 30000, 35000, 40000, 60000, 80000, 100000, 200000, 300000, 400000,
    600000, 800000, 1000000, 1100000,
)  # fmt: skip
# SchedulerMetricsCollector.queue_time.
QUEUE_TIME_BUCKETS = (
    0.000, 0.001, 0.005, 0.010, 0.050, 0.100, 0.200, 0.500, 1, 2, 3, 4, 5, 10, 15, 20, 30, 40, 50,
    60, 70, 80, 90, 100, 200, 300, 400, 500, 600, 700, 800, 900, 1000, 1200, 1400, 1600, 1800,
    2000, 2500, 3000,
)  # fmt: skip

ENGINE_TYPE = "unified"  # DisaggregationMode.to_engine_type("null")
RADIX_CACHE_TYPE = "UnifiedRadixCache"  # the class SGLang picks for a hybrid SWA model


@dataclass(frozen=True)
class MetricLabels:
    """The label values of one simulated scheduler rank."""

    model_name: str
    tp_rank: int = 0
    pp_rank: int = 0
    moe_ep_rank: int = 0

    def scheduler(self) -> dict[str, str]:
        return {
            "model_name": self.model_name,
            "engine_type": ENGINE_TYPE,
            "tp_rank": str(self.tp_rank),
            "pp_rank": str(self.pp_rank),
            "moe_ep_rank": str(self.moe_ep_rank),
        }

    def tokenizer(self) -> dict[str, str]:
        return {"model_name": self.model_name, "engine_type": ENGINE_TYPE}

    def radix_cache(self) -> dict[str, str]:
        return {"cache_type": RADIX_CACHE_TYPE, "tp_rank": str(self.tp_rank), "pp_rank": str(self.pp_rank), "dp_rank": "0"}


class _SchedulerCollector(Collector):
    """Scheduler gauges and counters, read from the engine when /metrics is scraped (O(1))."""

    def __init__(self, engine: SimEngine, labels: MetricLabels, clock: Callable[[], float]) -> None:
        self.engine = engine
        self.clock = clock
        self.labels = labels.scheduler()
        self.cache_labels = labels.radix_cache()
        startup = engine.startup
        config = engine.config
        self.constants: dict[str, tuple[str, float]] = {
            "max_total_num_tokens": ("Maximum total number of tokens in the KV cache pool.", startup.full_tokens),
            "page_size": ("KV cache page size in tokens.", config.page_size),
            "kv_cache_memory_usage_gb": ("Memory used by the KV cache pools in GB.", round(startup.kv_cache_gib, 3)),
            "weight_memory_usage_gb": (
                "Memory used by model weights in GB.",
                round(config.model.weight_bytes_per_rank(config.tp_size) / GIB, 3),
            ),
        }
        if startup.swa_tokens is not None:
            self.constants["max_total_num_tokens_swa"] = (
                "Maximum total number of tokens in the SWA KV cache pool.",
                startup.swa_tokens,
            )

    def _gauge(self, name: str, doc: str, value: float, labels: dict[str, str] | None = None) -> GaugeMetricFamily:
        labels = self.labels if labels is None else labels
        family = GaugeMetricFamily(f"sglang:{name}", doc, labels=list(labels))
        family.add_metric(list(labels.values()), value)
        return family

    def _counter(self, name: str, doc: str, value: float, labels: dict[str, str] | None = None) -> CounterMetricFamily:
        labels = self.labels if labels is None else labels
        family = CounterMetricFamily(f"sglang:{name}", doc, labels=list(labels))
        family.add_metric(list(labels.values()), value)
        return family

    def collect(self) -> Iterator[Metric]:
        p = self.engine.published
        c = self.engine.scheduler.counters
        gauges = {
            "num_running_reqs": ("The number of running requests.", p.num_running_reqs),
            "num_queue_reqs": ("The number of requests in the waiting queue.", p.num_queue_reqs),
            "gen_throughput": ("The generation throughput (token/s).", p.gen_throughput),
            "cache_hit_rate": ("The prefix cache hit rate.", 0.0),
            "token_usage": ("The token usage.", p.token_usage),
            "full_token_usage": ("The token usage for full attention layers.", p.full_token_usage),
            "swa_token_usage": ("The token usage for SWA layers.", p.swa_token_usage),
            "num_used_tokens": ("The number of used tokens.", p.full_used),
            "kv_available_tokens": ("Number of free token slots in the KV cache pool.", p.full_available),
            "kv_evictable_tokens": (
                "Number of evictable (radix-cached) token slots in the KV cache pool.",
                p.full_evictable,
            ),
            "kv_used_tokens": ("Number of actively used token slots in the KV cache pool.", p.full_used),
            "swa_available_tokens": ("Number of free token slots in the SWA pool (hybrid-SWA only).", p.swa_available),
            "swa_evictable_tokens": ("Number of evictable (radix-cached) token slots in the SWA pool.", p.swa_evictable),
            "swa_used_tokens": ("Number of actively used token slots in the SWA pool.", p.swa_used),
            "num_retracted_reqs": ("The number of retracted requests.", p.num_retracted_reqs),
            **self.constants,
        }
        for name, (doc, value) in gauges.items():
            yield self._gauge(name, doc, value)
        yield self._counter("num_retracted_requests", "Total number of retracted requests.", c.retracted_requests)
        yield self._counter(
            "num_retracted_input_tokens", "Total number of retracted input tokens.", c.retracted_input_tokens
        )
        yield self._counter(
            "num_retracted_output_tokens", "Total number of retracted output tokens.", c.retracted_output_tokens
        )
        yield self._counter(
            "evicted_tokens",
            "The number of device KV token slots freed by eviction.",
            self.engine.scheduler.full.evicted_total,
            self.cache_labels,
        )
        yield self._gauge("simulated", "1: this server is autotune's simulator, not SGLang on a GPU.", 1, {})
        # Lets a client that timed the run on the wall clock convert to simulated-GPU seconds
        # (--time-scale, and the clock held back while the simulator's own Python catches up).
        yield self._gauge("simulated_clock_seconds", "Seconds on the simulated GPU's clock since start-up.", self.clock(), {})


class ServerMetrics:
    """The families of one simulated server, in a registry of their own."""

    def __init__(self, engine: SimEngine, labels: MetricLabels, clock: Callable[[], float]) -> None:
        # Process-wide switch, hence here and not at import: only the server process builds this.
        prometheus_client.disable_created_metrics()
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_SchedulerCollector(engine, labels, clock))
        tok = labels.tokenizer()
        names = list(tok)
        streaming = [*names, "is_streaming"]
        reg = self.registry
        self.prompt_tokens = Counter(
            "sglang:prompt_tokens_total", "Number of prefill tokens processed.", streaming, registry=reg
        )
        self.generation_tokens = Counter(
            "sglang:generation_tokens_total", "Number of generation tokens processed.", streaming, registry=reg
        )
        self.requests = Counter("sglang:num_requests_total", "Number of requests processed.", streaming, registry=reg)
        self.aborted = Counter("sglang:num_aborted_requests_total", "Number of requests aborted.", names, registry=reg)
        self.ttft = Histogram(
            "sglang:time_to_first_token_seconds",
            "Histogram of time to first token in seconds.",
            streaming,
            buckets=TTFT_BUCKETS,
            registry=reg,
        )
        self.e2e = Histogram(
            "sglang:e2e_request_latency_seconds",
            "Histogram of End-to-end request latency in seconds",
            streaming,
            buckets=E2E_BUCKETS,
            registry=reg,
        )
        self.itl = Histogram(
            "sglang:inter_token_latency_seconds",
            "Histogram of inter-token latency in seconds.",
            names,
            buckets=ITL_BUCKETS,
            registry=reg,
        ).labels(**tok)
        self.queue_time = Histogram(
            "sglang:queue_time_seconds",
            "Histogram of queueing time in seconds.",
            list(labels.scheduler()),
            buckets=QUEUE_TIME_BUCKETS,
            registry=reg,
        ).labels(**labels.scheduler())
        self.prompt_lengths = Histogram(
            "sglang:prompt_tokens_histogram", "Histogram of prompt token length.", names,
            buckets=TOKEN_BUCKETS, registry=reg,
        ).labels(**tok)
        self.generation_lengths = Histogram(
            "sglang:generation_tokens_histogram", "Histogram of generation token length.", names,
            buckets=TOKEN_BUCKETS, registry=reg,
        ).labels(**tok)
        self._aborted = self.aborted.labels(**tok)
        # Bound children per is_streaming value, so an observation is one call, no label lookup.
        self._by_stream = {
            flag: (
                self.prompt_tokens.labels(**tok, is_streaming=flag),
                self.generation_tokens.labels(**tok, is_streaming=flag),
                self.requests.labels(**tok, is_streaming=flag),
                self.ttft.labels(**tok, is_streaming=flag),
                self.e2e.labels(**tok, is_streaming=flag),
            )
            for flag in ("true", "false")
        }

    @staticmethod
    def _flag(stream: bool) -> str:
        return "true" if stream else "false"

    def observe_first_token(self, ttft_s: float, queue_s: float, stream: bool) -> None:
        self._by_stream[self._flag(stream)][3].observe(ttft_s)
        self.queue_time.observe(queue_s)

    def observe_tokens(self, interval_s: float, new_tokens: int) -> None:
        """SGLang's observe_inter_token_latency: one observation per token, interval split evenly."""
        per_token = interval_s / new_tokens
        for _ in range(new_tokens):
            self.itl.observe(per_token)

    def observe_finished(self, prompt_tokens: int, completion_tokens: int, e2e_s: float, stream: bool) -> None:
        prompt, generation, requests, _, e2e = self._by_stream[self._flag(stream)]
        prompt.inc(prompt_tokens)
        generation.inc(completion_tokens)
        requests.inc()
        e2e.observe(e2e_s)
        self.prompt_lengths.observe(prompt_tokens)
        self.generation_lengths.observe(completion_tokens)

    def observe_aborted(self) -> None:
        self._aborted.inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)

"""A server's pool and queue metrics over time, whichever way they were read.

The HTTP path scrapes `/metrics` (SGLang's Prometheus names, docs/reference/sglang.md §5) into `MetricSample`s;
the in-process simulator records the same samples directly. `summarize_series` turns either into
the figures a trial reports: peak and mean pool usage, how long the server was SWA- or
full-bound with a queue, and retractions.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Sequence

# A pool counts as the binding one when its usage is at least this and requests are queued.
BOUND_USAGE = 0.9


@dataclass(frozen=True)
class MetricSample:
    t: float  # seconds since the replay started
    num_running_reqs: float
    num_queue_reqs: float
    full_token_usage: float
    swa_token_usage: float  # 0 for a server without a hybrid pool
    token_usage: float
    swa_used_tokens: float
    swa_available_tokens: float
    swa_evictable_tokens: float
    kv_used_tokens: float
    kv_available_tokens: float
    kv_evictable_tokens: float
    gen_throughput: float
    num_retracted_requests_total: float
    generation_tokens_total: float
    prompt_tokens_total: float

    def to_dict(self) -> dict[str, float]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "MetricSample":
        return cls(**{k: float(data[k]) for k in cls.__dataclass_fields__})

    @property
    def queued(self) -> bool:
        return self.num_queue_reqs > 0

    @property
    def swa_bound(self) -> bool:
        """SWA usage high, queue non-empty, and the SWA pool the fuller of the two."""
        return self.queued and self.swa_token_usage >= BOUND_USAGE and self.swa_token_usage >= self.full_token_usage

    @property
    def full_bound(self) -> bool:
        return self.queued and self.full_token_usage >= BOUND_USAGE and self.full_token_usage > self.swa_token_usage


@dataclass(frozen=True)
class SeriesSummary:
    samples: int
    peak_swa_usage: float
    mean_swa_usage: float
    peak_full_usage: float
    mean_full_usage: float
    mean_running: float
    peak_queue: float
    swa_bound_share: float  # share of samples SWA-bound with a queue
    full_bound_share: float
    queued_share: float
    retractions: float

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def summarize_series(samples: Sequence[MetricSample]) -> SeriesSummary:
    n = len(samples)
    if n == 0:
        return SeriesSummary(0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)

    def mean(values: list[float]) -> float:
        return sum(values) / n

    swa = [s.swa_token_usage for s in samples]
    full = [s.full_token_usage for s in samples]
    return SeriesSummary(
        samples=n,
        peak_swa_usage=max(swa),
        mean_swa_usage=mean(swa),
        peak_full_usage=max(full),
        mean_full_usage=mean(full),
        mean_running=mean([s.num_running_reqs for s in samples]),
        peak_queue=max(s.num_queue_reqs for s in samples),
        swa_bound_share=sum(s.swa_bound for s in samples) / n,
        full_bound_share=sum(s.full_bound for s in samples) / n,
        queued_share=sum(s.queued for s in samples) / n,
        retractions=samples[-1].num_retracted_requests_total - samples[0].num_retracted_requests_total,
    )

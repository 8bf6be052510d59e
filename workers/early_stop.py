"""When a trial is clearly lost: stop it early and spend the time on better candidates.

A ratio that starves the SWA pool shows it quickly (docs/reference/sglang.md §4): SWA usage pinned near 1, full
usage low, and a queue that does not drain. Once enough requests have finished to judge, a run of
consecutive scrapes like that ends the trial; the requests finished so far are its measurement.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from autotune.measure.server_metrics import MetricSample


@dataclass(frozen=True)
class EarlyStop:
    min_fraction: float = 0.3  # of the requests finished before the trial is judged
    window: int = 5  # consecutive scrapes that must all look lost

    def lost(self, samples: Sequence[MetricSample], done: int, total: int) -> bool:
        if total == 0 or done < self.min_fraction * total or len(samples) < self.window:
            return False
        recent = samples[-self.window:]
        draining = recent[-1].num_queue_reqs < recent[0].num_queue_reqs
        return all(s.swa_bound for s in recent) and recent[-1].num_queue_reqs > 0 and not draining

    def describe(self, done: int, total: int) -> str:
        return (f"stopped early: SWA-bound with a queue that does not drain for {self.window} scrapes, "
                f"after {done} of {total} requests")

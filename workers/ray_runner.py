"""`sim` and `sglang` on a Ray cluster: the study's runner over a pool of TrialWorker actors."""

from __future__ import annotations

from typing import TYPE_CHECKING

from workers.trial import TrialResult, TrialSpec

if TYPE_CHECKING:  # Ray is optional: importing this module must not need it
    from workers.pool import WorkerPool


class RayRunner:
    """`sim` and `sglang`: TrialWorker actors on a Ray cluster (workers/pool.py)."""

    lookahead = 0  # a worker boots its next server only once its trial is done

    def __init__(self, pool: WorkerPool) -> None:
        self.pool = pool

    @property
    def capacity(self) -> int:
        return self.pool.size  # shrinks when a node is lost and its workers cannot be replaced

    def submit(self, spec: TrialSpec) -> None:
        self.pool.submit(spec)

    def servers(self) -> list[dict]:
        return self.pool.servers()

    def wait_one(self, timeout_s: float) -> TrialResult | None:
        return self.pool.wait_one(timeout_s)

    def close(self) -> None:
        self.pool.shutdown()

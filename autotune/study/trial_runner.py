"""What the study sees of the place trials run: submit a TrialSpec, wait for TrialResults.

The runners themselves (Ray workers, threads of this node, the simulator in-process) are the
workers' layer (workers/runners.py); the study depends on this interface only.
"""

from __future__ import annotations

from typing import Protocol

from workers.trial import TrialResult, TrialSpec


class TrialRunner(Protocol):
    capacity: int  # trials it measures at once
    lookahead: int  # trials more it takes, to boot their servers while those measuring drain (0: none)

    def submit(self, spec: TrialSpec) -> None: ...

    def servers(self) -> list[dict]: ...  # running trials' servers: trial_id, host, port

    def wait_one(self, timeout_s: float) -> TrialResult | None: ...

    def close(self) -> None: ...

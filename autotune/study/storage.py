"""The study's Optuna storage and the tuner's liveness on it: heartbeats for the trials it runs, and who owns them.

Ask-and-tell has no `optimize()` to record heartbeats, so the tuner does (`TrialHeartbeat`); a killed tuner's
trials then go stale after the grace period and `RetryHeartbeatStaleTrialCallback` enqueues them again. A trial
also records its owner (host:pid), so a tuner resuming on the same host can reclaim a dead one's trials at once.
"""

from __future__ import annotations

import os
import socket
import threading

import optuna
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

from autotune.study.plan import DEFAULT_GRACE_S, DEFAULT_HEARTBEAT_S, StudyPlan

MAX_RETRY = 3  # times a trial whose tuner died is enqueued again


def storage_for(url: str, *, heartbeat_s: int = DEFAULT_HEARTBEAT_S, grace_s: int = DEFAULT_GRACE_S) -> RDBStorage:
    """Optuna's storage at `url`, with the heartbeat the plans that run on it use (StudyPlan.heartbeat_s, .grace_s)."""
    return RDBStorage(
        url,
        heartbeat_interval=heartbeat_s,
        grace_period=grace_s,
        heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY),
    )


def check_heartbeat(plan: StudyPlan, storage: optuna.storages.BaseStorage) -> None:
    """Optuna expires trials by the storage's grace period, the loop waits by the plan's: they must agree."""
    if isinstance(storage, RDBStorage) and (storage.heartbeat_interval, storage.grace_period) != (plan.heartbeat_s, plan.grace_s):
        raise ValueError(
            f"the storage's heartbeat ({storage.heartbeat_interval} s, grace {storage.grace_period} s) is not the plan's "
            f"({plan.heartbeat_s} s, grace {plan.grace_s} s): open it with storage_for(url, heartbeat_s=..., grace_s=...)"
        )


def owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def owner_dead(owner: str | None) -> bool:
    if not owner or ":" not in owner:
        return False
    host, pid = owner.rsplit(":", 1)
    if host != socket.gethostname():
        return False  # another machine's tuner: its heartbeat will tell
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, ValueError):
        return False
    return False


class TrialHeartbeat(threading.Thread):
    """Records Optuna heartbeats for the trials this tuner is running (ask-and-tell has no
    `optimize()` to do it), so a killed tuner's trials go stale after the grace period."""

    def __init__(self, storage: RDBStorage, interval_s: float) -> None:
        super().__init__(daemon=True, name="optuna-heartbeat")
        self.storage = storage
        self.interval_s = interval_s
        self.trial_ids: set[int] = set()
        self.lock = threading.Lock()
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.interval_s / 2):
            with self.lock:
                ids = list(self.trial_ids)
            for trial_id in ids:
                self.storage.record_heartbeat(trial_id)

    def add(self, trial_id: int) -> None:
        self.storage.record_heartbeat(trial_id)
        with self.lock:
            self.trial_ids.add(trial_id)

    def remove(self, trial_id: int) -> None:
        with self.lock:
            self.trial_ids.discard(trial_id)

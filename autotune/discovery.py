"""Which trial servers are running now, for Prometheus' HTTP service discovery.

The tuner's metrics server (autotune/tuner_metrics.py) answers `GET /sd` with `targets()` as JSON, in
the format of Prometheus' `http_sd_configs`:

    [{"targets": ["host:port"], "labels": {"trial": "...", "model": "...", "workload": "..."}}]

so one Prometheus scrape config follows every server the tuner boots, wherever Ray placed it.
`Registry` is a thread-safe dict keyed by trial id; `discovery_event_hook(registry, plan)` keeps
it up to date from the study loop's `on_event(kind, data)` events ("started" adds the trial's
server once the event carries its host and port, "finished" removes it).
"""

from __future__ import annotations

import threading
from typing import Any, Callable


class Registry:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._targets: dict[str, tuple[str, dict[str, str]]] = {}

    def add(self, trial_id: str, host: str, port: int, labels: dict[str, Any] | None = None) -> None:
        label_values = {str(k): str(v) for k, v in (labels or {}).items() if v is not None}
        label_values["trial"] = str(trial_id)
        with self._lock:
            self._targets[str(trial_id)] = (f"{_host(host)}:{int(port)}", label_values)

    def remove(self, trial_id: str) -> None:
        with self._lock:
            self._targets.pop(str(trial_id), None)

    def clear(self) -> None:
        with self._lock:
            self._targets.clear()

    def targets(self) -> list[dict[str, Any]]:
        """Prometheus HTTP-SD target groups: one group per running trial server."""
        with self._lock:
            items = sorted(self._targets.items())
        return [{"targets": [target], "labels": dict(labels)} for _trial, (target, labels) in items]

    def __len__(self) -> int:
        with self._lock:
            return len(self._targets)


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host  # IPv6 literal


REGISTRY = Registry()  # the process-wide registry the metrics server's /sd serves by default


def add(trial_id: str, host: str, port: int, labels: dict[str, Any] | None = None) -> None:
    REGISTRY.add(trial_id, host, port, labels)


def remove(trial_id: str) -> None:
    REGISTRY.remove(trial_id)


def targets() -> list[dict[str, Any]]:
    return REGISTRY.targets()


def discovery_event_hook(registry: Registry, plan: Any) -> Callable[[str, dict[str, Any]], None]:
    """An `on_event(kind, data)` for run_study that registers trial servers for `plan`'s study.

    "started" (or "server") events with data["trial_id"], data["host"] and data["port"] add a
    target labelled with the trial, model and workload; "finished" events (data["result"]: a
    TrialResult) remove it. Events without host/port are ignored (the controller does not send
    them yet).
    """
    model, workload = plan.model.name, plan.workload.name

    def hook(kind: str, data: dict[str, Any]) -> None:
        if kind in ("started", "server"):
            trial_id, host, port = data.get("trial_id"), data.get("host"), data.get("port")
            if trial_id and host and port:
                registry.add(trial_id, host, port, {"model": model, "workload": workload, "study": plan.name})
        elif kind == "finished":
            result = data.get("result")
            trial_id = data.get("trial_id") or getattr(result, "trial_id", None)
            if trial_id:
                registry.remove(trial_id)

    return hook

"""The tuner's own Prometheus metrics (not the SGLang server's: those are scraped per trial).

`TunerMetrics` holds its collectors in its own registry; `serve(port)` exposes them on
127.0.0.1:PORT/metrics, and the trial servers running now (autotune/discovery.py) on /sd as
Prometheus HTTP service discovery JSON. `study_event_hook(metrics, plan)` turns the controller's
`on_event(kind, data)` events into metric updates:

    metrics = TunerMetrics(); metrics.serve(port)
    hook = study_event_hook(metrics, plan, capacity=parallel)
    run_study(plan, storage, runner, on_event=lambda k, d: (hook(k, d), ui(k, d)))
"""

from __future__ import annotations

import errno
import json
import threading
import time
from typing import Any, Callable
from wsgiref.simple_server import make_server

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer, _SilentHandler

from autotune import discovery
from autotune.study.trial_attrs import told_state

NAMESPACE = "autotune"
STATES = ("complete", "fail", "pruned")

DURATION_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, float("inf"))
BOOT_BUCKETS = (0.5, 1, 5, 15, 30, 60, 120, 300, 600, 900, float("inf"))


class MetricsPortInUse(Exception):
    pass


class TunerMetrics:
    def __init__(self, registry: CollectorRegistry | None = None, targets: discovery.Registry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.targets = targets if targets is not None else discovery.REGISTRY  # what /sd serves
        r = self.registry
        self.trials_started = Counter(f"{NAMESPACE}_trials_started", "Trials handed to a worker.", ["study"], registry=r)
        self.trials = Counter(f"{NAMESPACE}_trials", "Trials told to Optuna, by final state.", ["study", "state"], registry=r)
        self.trials_running = Gauge(f"{NAMESPACE}_trials_running", "Trials on a worker now.", ["study"], registry=r)
        self.trial_duration = Histogram(f"{NAMESPACE}_trial_duration_seconds", "Wall time of a trial (boot, replay, stop).",
                                        ["study"], buckets=DURATION_BUCKETS, registry=r)
        self.best_objective = Gauge(f"{NAMESPACE}_best_objective", "The study's best feasible first objective.",
                                    ["study", "objective"], registry=r)
        self.workers = Gauge(f"{NAMESPACE}_workers", "Trial workers by state.", ["state"], registry=r)
        self.boot_time = Histogram(f"{NAMESPACE}_server_boot_seconds", "Server boot time (start to ready).",
                                   ["study"], buckets=BOOT_BUCKETS, registry=r)
        self.failures = Counter(f"{NAMESPACE}_trial_failures", "Trials that failed, by failure class.",
                                ["study", "failure"], registry=r)
        self._lock = threading.Lock()
        self.server: Any = None

    # -- what the study loop calls ------------------------------------------------------------
    def trial_started(self, study: str) -> None:
        self.trials_started.labels(study).inc()
        self.trials_running.labels(study).inc()

    def trial_finished(self, study: str, state: str, duration_s: float | None, failure_kind: str | None = None) -> None:
        state = state.lower()
        self.trials.labels(study, state).inc()
        self.trials_running.labels(study).dec()
        if duration_s is not None:
            self.trial_duration.labels(study).observe(max(0.0, duration_s))
        if failure_kind:
            self.failures.labels(study, failure_kind).inc()

    def best(self, study: str, value: float, objective: str = "") -> None:
        self.best_objective.labels(study, objective).set(value)

    def set_workers(self, busy: int, idle: int) -> None:
        self.workers.labels("busy").set(busy)
        self.workers.labels("idle").set(idle)

    workers_state = set_workers  # alias

    def boot_seconds(self, study: str, seconds: float) -> None:
        self.boot_time.labels(study).observe(seconds)

    # -- exposition ---------------------------------------------------------------------------
    def wsgi_app(self) -> Callable[..., Any]:
        """/sd: the running trial servers as Prometheus HTTP-SD JSON; anything else: the metrics."""
        metrics_app = make_wsgi_app(self.registry)

        def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
            if environ.get("PATH_INFO", "").rstrip("/") == "/sd":
                body = json.dumps(self.targets.targets()).encode()
                start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
                return [body]
            return metrics_app(environ, start_response)

        return app

    def serve(self, port: int, addr: str = "127.0.0.1") -> int:
        """Expose /metrics and /sd on addr:port (loopback by default); returns the bound port (port 0: any free one)."""
        try:
            server = make_server(addr, port, self.wsgi_app(), ThreadingWSGIServer, handler_class=_SilentHandler)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise MetricsPortInUse(f"--metrics-port {port}: the port is already in use on {addr}; choose another") from None
            raise
        threading.Thread(target=server.serve_forever, daemon=True, name="tuner-metrics").start()
        self.server = server
        return int(server.server_port)

    def close(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


def trial_state(plan: Any, result: Any) -> tuple[str, str | None]:
    """The Optuna state the controller gives a result (trial_attrs.told_state), and its failure class."""
    failure = result.failure.value if result.failure else None
    return told_state(plan.objective.values(result), result.stopped_early).name.lower(), failure


def _duration(result: Any) -> float | None:
    if result.started_at is not None and result.finished_at is not None:
        return result.finished_at - result.started_at
    parts = [p for p in (result.boot_s, result.replay_s) if p is not None]
    return sum(parts) if parts else None


def study_event_hook(metrics: TunerMetrics, plan: Any, *, capacity: int = 1) -> Callable[[str, dict[str, Any]], None]:
    """An `on_event(kind, data)` for run_study that keeps `metrics` up to date for `plan`'s study.

    Events: "started" (a trial handed to a worker), "finished" (data["result"]: a TrialResult),
    "progress" (data["outcome"]: an Outcome with best_values). `capacity`: the runner's slots
    (--parallel), for the workers busy/idle gauge.
    """
    study = plan.name
    label = (plan.objective.labels or [plan.objective.name])[0]
    busy = 0
    lock = threading.Lock()
    started_at: dict[int, float] = {}

    def hook(kind: str, data: dict[str, Any]) -> None:
        nonlocal busy
        with lock:
            if kind == "started":
                busy += 1
                started_at[data.get("trial", -1)] = time.monotonic()
                metrics.trial_started(study)
            elif kind == "finished":
                busy = max(0, busy - 1)
                result = data["result"]
                state, failure = trial_state(plan, result)
                duration = _duration(result)
                t0 = started_at.pop(data.get("trial", -1), None)
                if duration is None and t0 is not None:
                    duration = time.monotonic() - t0
                metrics.trial_finished(study, state, duration, failure)
                if result.boot_s is not None and failure not in ("boot_refused", "out_of_memory", "boot_timeout", "boot_failed"):
                    metrics.boot_seconds(study, result.boot_s)
            elif kind == "progress":
                outcome = data.get("outcome")
                if outcome is not None and outcome.best_values:
                    metrics.best(study, outcome.best_values[0], label)
            else:
                return
            metrics.set_workers(busy, max(0, capacity - busy))

    return hook

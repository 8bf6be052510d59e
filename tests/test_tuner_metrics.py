"""The tuner's own /metrics (autotune/tuner_metrics.py): parsed with prometheus-client's parser, its
counts match the study that produced them."""

from __future__ import annotations

import dataclasses
import socket
import urllib.request
from pathlib import Path

import optuna
import pytest
from prometheus_client.parser import text_string_to_metric_families

from autotune.hardware import load_gpu
from autotune.tuner_metrics import MetricsPortInUse, TunerMetrics, study_event_hook
from autotune.models import load_model
from autotune.study.controller import run_study
from autotune.study.storage import storage_for
from autotune.study.objective import Objective
from autotune.study.plan import build_plan
from workers.sim_fast import InProcessRunner
from autotune.workloads import load_workload_yaml
from workers.failures import FailureKind

TINY = Path(__file__).parent / "data" / "tiny-workloads.yaml"
optuna.logging.set_verbosity(optuna.logging.WARNING)


class FailingOnce(InProcessRunner):
    """sim-fast, except that the second result comes back refused at boot (infeasible -> FAIL, final)."""

    def __init__(self) -> None:
        super().__init__(1)
        self.seen = 0

    def wait_one(self, timeout_s: float):
        result = super().wait_one(timeout_s)
        if result is None:
            return None
        self.seen += 1
        if self.seen == 2:
            return dataclasses.replace(result, ok=False, failure=FailureKind.BOOT_REFUSED, message="injected", summary=None)
        return result


def scrape(port: int) -> dict[tuple[str, tuple], float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    values = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            values[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return values


def test_metrics_match_the_study(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'autotune.db'}"
    workload = tmp_path / "chat.yaml"
    workload.write_text(TINY.read_text().split("- name: tiny-long")[0])
    [chat] = load_workload_yaml(workload)
    plan = build_plan(model=load_model("26B-A4B"), model_ref="26B-A4B", gpu=load_gpu("H100-80GB"), workload=chat,
                      backend="sim-fast", objective=Objective("throughput"), n_trials=4)
    metrics = TunerMetrics()
    port = metrics.serve(0)
    runner = FailingOnce()
    try:
        outcome = run_study(plan, storage_for(url), runner, on_event=study_event_hook(metrics, plan, capacity=1))
    finally:
        runner.close()
    try:
        values = scrape(port)
        study = optuna.load_study(study_name=plan.name, storage=url)
        by_state: dict[str, int] = {}
        for t in study.trials:
            by_state[t.state.name.lower()] = by_state.get(t.state.name.lower(), 0) + 1
        assert by_state.get("fail") == 1
        s = (("study", plan.name),)
        for state, n in by_state.items():
            assert values[("autotune_trials_total", tuple(sorted(s + (("state", state),))))] == n
        assert values[("autotune_trials_started_total", s)] == len(study.trials)
        assert values[("autotune_trials_running", s)] == 0
        assert values[("autotune_trial_failures_total", tuple(sorted(s + (("failure", "boot_refused"),))))] == 1
        assert values[("autotune_trial_duration_seconds_count", s)] == len(study.trials)
        assert values[("autotune_server_boot_seconds_count", s)] == by_state["complete"]
        best = values[("autotune_best_objective", tuple(sorted(s + (("objective", plan.objective.labels[0]),))))]
        assert best == pytest.approx(outcome.best_values[0])
        assert best == pytest.approx(max(t.values[0] for t in study.trials if t.state.name == "COMPLETE"))
        assert values[("autotune_workers", (("state", "busy"),))] == 0
        assert values[("autotune_workers", (("state", "idle"),))] == 1
    finally:
        metrics.close()


def test_metrics_port_busy_is_a_clear_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        with pytest.raises(MetricsPortInUse, match="already in use"):
            TunerMetrics().serve(port)


def test_metrics_bound_to_loopback() -> None:
    metrics = TunerMetrics()
    port = metrics.serve(0)
    try:
        assert metrics.server.server_address[0] == "127.0.0.1"
        assert "autotune_workers" in urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
    finally:
        metrics.close()

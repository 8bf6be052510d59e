"""A real Prometheus with the shipped config finds a trial server through the tuner's /sd and scrapes it.

The shipped deploy/prometheus/prometheus.yml addresses the tuner as
`swa-autotune-head-svc.swa-autotune.svc:9400` (a Kubernetes Service). The test renders it with:
- that address -> 127.0.0.1:<the test's tuner metrics port> (both the static tuner target and the /sd URL),
- every `scrape_interval` / `refresh_interval` -> 1s (so the test sees samples within seconds).
Everything else (jobs, relabelling: instance = "trial-<trial id>") is the shipped file's.
Prometheus, the simulated server and the tuner's HTTP server are all stopped in a finally.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from autotune.discovery import Registry
from autotune.tuner_metrics import TunerMetrics
from conftest import TAG

pytestmark = pytest.mark.usefixtures("no_leftover_servers")  # no simulated server outlives a test (conftest.py)

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "deploy" / "prometheus" / "prometheus.yml"
SHIPPED_TUNER = "swa-autotune-head-svc.swa-autotune.svc:9400"
PROMETHEUS = "/usr/bin/prometheus"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def prometheus_binary() -> str:
    if not Path(PROMETHEUS).exists() and os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(["apt-get", "install", "-y", "-q", "prometheus"], capture_output=True, timeout=300)
    if not Path(PROMETHEUS).exists():
        message = f"{PROMETHEUS} not found: apt-get install prometheus"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return PROMETHEUS


def render_config(tuner_port: int) -> str:
    text = SHIPPED.read_text()
    assert SHIPPED_TUNER in text, f"{SHIPPED} no longer names the tuner as {SHIPPED_TUNER}: update the substitution"
    text = text.replace(SHIPPED_TUNER, f"127.0.0.1:{tuner_port}")
    text = re.sub(r"(scrape_interval|refresh_interval):\s*\d+[smh]", r"\1: 1s", text)
    return text


def get_json(url: str, timeout: float = 5) -> object:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.load(response)


def stop_group(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    except ProcessLookupError:
        pass


def test_registry_serves_http_sd_json() -> None:
    registry = Registry()
    metrics = TunerMetrics(targets=registry)
    port = metrics.serve(0)
    try:
        assert get_json(f"http://127.0.0.1:{port}/sd") == []
        registry.add("m-w-t3", "10.0.0.7", 31000, {"model": "m", "workload": "w"})
        registry.add("m-w-t4", "10.0.0.8", 31001, {"model": "m", "workload": "w"})
        registry.remove("m-w-t4")
        assert get_json(f"http://127.0.0.1:{port}/sd") == [
            {"targets": ["10.0.0.7:31000"], "labels": {"model": "m", "workload": "w", "trial": "m-w-t3"}}
        ]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            assert b"autotune_" in response.read()
    finally:
        metrics.close()


@pytest.mark.slow
def test_prometheus_discovers_and_scrapes_a_trial_server(tmp_path: Path) -> None:
    binary = prometheus_binary()
    registry = Registry()
    metrics = TunerMetrics(targets=registry)
    metrics.trial_started("26B-A4B|H100|chat|sim")  # an autotune_* series with a sample
    server = prom = None
    try:
        tuner_port = metrics.serve(0)
        server_port, prom_port = free_port(), free_port()
        with open(tmp_path / "server.log", "wb") as log:
            server = subprocess.Popen(
                [sys.executable, "-m", "autotune.sim.server", "--model-path", "26B-A4B", "--gpu", "H100",
                 "--enable-metrics", "--port", str(server_port)],
                stdout=log, stderr=subprocess.STDOUT, cwd=REPO, start_new_session=True, env={**os.environ, **TAG},
            )
        trial_id = "26B-A4B-chat-t0"
        registry.add(trial_id, "127.0.0.1", server_port, {"model": "26B-A4B", "workload": "chat"})
        config = tmp_path / "prometheus.yml"
        config.write_text(render_config(tuner_port))
        with open(tmp_path / "prometheus.log", "wb") as log:
            prom = subprocess.Popen(
                [binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                 f"--web.listen-address=127.0.0.1:{prom_port}"],
                stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path, start_new_session=True,
            )

        def query(expr: str) -> list[dict]:
            url = f"http://127.0.0.1:{prom_port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
            try:
                data = get_json(url)
            except OSError:
                return []
            return data["data"]["result"] if data.get("status") == "success" else []

        deadline = time.monotonic() + 45
        swa, tuner = [], []
        while time.monotonic() < deadline and not (swa and tuner):
            assert prom.poll() is None, (tmp_path / "prometheus.log").read_text()[-3000:]
            assert server.poll() is None, (tmp_path / "server.log").read_text()[-3000:]
            swa = [r for r in query("sglang:swa_token_usage") if r["metric"].get("instance") == f"trial-{trial_id}"]
            tuner = query('autotune_trials_running{job="autotune-tuner"}')
            time.sleep(1)
        assert swa, f"no sglang:swa_token_usage from the trial server:\n{(tmp_path / 'prometheus.log').read_text()[-3000:]}"
        labels = swa[0]["metric"]
        assert labels["job"] == "sglang-trials" and labels["trial"] == trial_id
        assert labels["model"] == "26B-A4B" and labels["workload"] == "chat"
        assert 0.0 <= float(swa[0]["value"][1]) <= 1.0
        assert tuner and float(tuner[0]["value"][1]) == 1.0, tuner

        # The server's trial ends: it leaves /sd, and Prometheus drops the target.
        registry.remove(trial_id)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            active = get_json(f"http://127.0.0.1:{prom_port}/api/v1/targets?state=active")["data"]["activeTargets"]
            if not [t for t in active if t["labels"].get("trial") == trial_id]:
                break
            time.sleep(0.5)
        else:
            raise AssertionError(f"Prometheus still scrapes trial {trial_id} after it left /sd")
    finally:
        for proc in (prom, server):
            if proc is not None:
                stop_group(proc)
        metrics.close()

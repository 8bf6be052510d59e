"""A real multi-node Ray cluster on this machine: trials spread over two nodes, one node lost mid-study.

Each node is `ray start --block` in a process group of its own, so the test stops exactly its own
nodes (killing the group) and never touches other Ray clusters on the machine (`ray stop` would).
The nodes listen on distinct loopback addresses (head 127.0.0.1, others 127.0.0.2, 127.0.0.3) so
the driver attaches to the head's raylet, not to the node the test kills. The Ray processes
inherit this process's environment, TAG included, so the leak check sees their servers.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import optuna
import psutil
import pytest
from optuna.trial import TrialState

from autotune.hardware import load_gpu
from autotune.models import load_model
from autotune.study.controller import run_study
from autotune.study.storage import storage_for
from autotune.study.objective import Objective
from autotune.study.plan import build_plan
from autotune.study.trial_attrs import ATTR_FINAL, ATTR_RESULT
from autotune.workloads import load_workload_yaml
from workers.ray_runner import RayRunner
from conftest import TAG, sim_servers

pytestmark = pytest.mark.usefixtures("no_leftover_servers")  # no simulated server outlives a test (conftest.py)

REPO = Path(__file__).resolve().parents[1]
TINY = Path(__file__).parent / "data" / "tiny-workloads.yaml"
MODEL = "26B-A4B"
SIM_GPU = "H100-80GB"
HEAD_IP = "127.0.0.1"
NODE_RESOURCES = ["--num-cpus", "1", "--num-gpus", "2", "--resources", json.dumps({"sim_slot": 2})]
# The head notices a lost node within ~2 s instead of ~15 s.
FAST_HEALTH_CHECK = {"RAY_health_check_period_ms": "500", "RAY_health_check_failure_threshold": "3",
                     "RAY_health_check_timeout_ms": "500"}
# No token auth on this private loopback cluster: Ray >= 2.5x otherwise shares ~/.ray/auth_token
# with every other cluster on the machine.
NO_AUTH = {"RAY_AUTH_MODE": "disabled"}

optuna.logging.set_verbosity(optuna.logging.WARNING)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Node:
    """One `ray start --block` in its own process group (session)."""

    def __init__(self, args: list[str], log: Path) -> None:
        self.log = log
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(
                ["ray", "start", "--block", "--disable-usage-stats", *args],
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                env={**os.environ, **FAST_HEALTH_CHECK, **NO_AUTH},
            )
        self.pgid = self.proc.pid

    def processes(self) -> list[psutil.Process]:
        found = []
        for proc in psutil.process_iter():
            try:
                if os.getpgid(proc.pid) == self.pgid:
                    found.append(proc)
            except (ProcessLookupError, psutil.NoSuchProcess):
                continue
        return found

    def kill(self) -> None:
        """SIGKILL to the node's whole group: raylet, its workers, the `ray start` parent."""
        try:
            os.killpg(self.pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass

    def stop(self) -> None:
        """SIGTERM first (`ray start --block` then stops its processes), SIGKILL whatever is left."""
        try:
            os.killpg(self.pgid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and self.processes():
            time.sleep(0.2)
        self.kill()


def wait_for_nodes(count: int, timeout_s: float = 60) -> list[dict]:
    import ray

    deadline = time.monotonic() + timeout_s
    while True:
        alive = [n for n in ray.nodes() if n["Alive"]]
        if len(alive) >= count:
            return alive
        if time.monotonic() > deadline:
            raise AssertionError(f"{len(alive)} of {count} Ray nodes came up in {timeout_s} s")
        time.sleep(0.5)


@pytest.fixture
def two_node_cluster(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict]:
    """Head (127.0.0.1) and a second node (127.0.0.2), 2 fake GPUs and 2 sim slots each; the driver
    connected to the head. `start_node(ip)` adds another node; every node is killed afterwards."""
    import ray

    from workers.pool import connect

    assert os.environ.get("AUTOTUNE_TEST_TAG") == TAG["AUTOTUNE_TEST_TAG"]
    for key, value in NO_AUTH.items():
        monkeypatch.setenv(key, value)
    temp = Path(tempfile.mkdtemp(prefix="rt-", dir="/tmp"))  # short: Ray's socket paths have a length limit
    port = free_port()
    nodes: list[Node] = []

    def start_node(ip: str) -> Node:
        node = Node(["--address", f"{HEAD_IP}:{port}", "--node-ip-address", ip, *NODE_RESOURCES], temp / f"{ip}.log")
        nodes.append(node)
        return node

    try:
        nodes.append(Node(["--head", "--port", str(port), "--node-ip-address", HEAD_IP, "--temp-dir", str(temp),
                           "--include-dashboard=false", *NODE_RESOURCES], temp / "head.log"))
        second = start_node("127.0.0.2")
        deadline = time.monotonic() + 60
        while True:
            try:
                connect(f"{HEAD_IP}:{port}", _node_ip_address=HEAD_IP)
                break
            except (ConnectionError, RuntimeError, ValueError):  # ValueError: workers.pool.ClusterUnreachable
                if time.monotonic() > deadline or nodes[0].proc.poll() is not None:
                    raise AssertionError(f"the Ray head did not come up:\n{(temp / 'head.log').read_text()[-3000:]}")
                time.sleep(1)
        wait_for_nodes(2)
        yield {"head": nodes[0], "second": second, "start_node": start_node, "port": port}
    finally:
        ray.shutdown()
        for node in reversed(nodes):
            node.stop()
        import shutil

        shutil.rmtree(temp, ignore_errors=True)


@pytest.mark.slow
def test_trials_spread_over_two_nodes_and_survive_losing_one(two_node_cluster: dict, pg_database: str,
                                                             tmp_path: Path) -> None:
    import ray

    from workers.pool import WorkerPool, WorkerResources

    cluster = two_node_cluster
    [workload] = [w for w in load_workload_yaml(TINY) if w.name == "tiny-chat"]
    # Enough trials that the second node almost surely runs a second one, whatever order the workers free
    # up in: with 6, the two after the first wave of 4 could both go to the head, and once in CI the node
    # was never lost.
    n_trials = 10
    plan = build_plan(
        model=load_model(MODEL), model_ref=MODEL, gpu=load_gpu(SIM_GPU), workload=workload, backend="sim",
        objective=Objective("throughput"), n_trials=n_trials, log_dir=str(tmp_path / "logs"),
        time_scale=1.0,  # real time: a trial lasts seconds, so the node dies while one runs there
    )
    # Every trial runs (no stopping rule): the test counts them across the node loss.
    plan = dataclasses.replace(plan, boot_timeout_s=60, hang_timeout_s=40, early_stop=False, stop_when_known=False)
    storage = storage_for(pg_database)
    # 4 workers of one sim slot on 2 + 2 slots: Ray has to put two on each node.
    pool = WorkerPool(WorkerResources(gpus=0, custom={"sim_slot": 1}), num_workers=4)
    runner = RayRunner(pool)
    infos = ray.get([w.info.remote() for w in pool.workers], timeout=60)
    head_id = ray.get_runtime_context().get_node_id()
    [second_id] = {i["node_id"] for i in infos} - {head_id}
    assert sum(i["node_id"] == head_id for i in infos) == 2
    second_pids = {i["pid"] for i in infos if i["node_id"] == second_id}
    assert len(second_pids) == 2

    killed = threading.Event()

    def lose_the_second_node_once_it_serves_again() -> None:
        """Once a trial has finished on the second node and the next one's server is up there, kill
        the node's group. The head has no free slot, so the pool must shrink, not wait for ever."""
        seen: set[int] = set()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            now = {p.pid for p in sim_servers() if p.ppid() in second_pids}
            if seen - now and now - seen:  # one of its servers is gone (trial done), a new one boots
                cluster["second"].kill()
                killed.set()
                return
            seen |= now
            time.sleep(0.1)

    killer = threading.Thread(target=lose_the_second_node_once_it_serves_again, daemon=True)
    killer.start()
    study_done = threading.Event()
    outcome_box: list = []

    def study() -> None:
        try:
            outcome_box.append(run_study(plan, storage, runner))
        except BaseException as exc:  # noqa: BLE001  (re-raised below)
            outcome_box.append(exc)
        finally:
            study_done.set()

    thread = threading.Thread(target=study, daemon=True)
    thread.start()
    try:
        finished_in_time = study_done.wait(timeout=150)
    finally:
        killer.join(timeout=100)
        if finished_in_time:
            runner.close()
    assert killed.is_set(), "no simulated server ever ran on the second node"
    assert finished_in_time, "the study did not finish after the second node was lost"
    [outcome] = outcome_box
    if isinstance(outcome, BaseException):
        raise outcome

    loaded = optuna.load_study(study_name=plan.name, storage=storage)
    trials = loaded.get_trials()
    storage.engine.dispose()
    node_of = {t.number: (t.user_attrs.get(ATTR_RESULT, {}).get("worker") or {}).get("node_id") for t in trials}
    completed_on = {node_of[t.number] for t in trials if t.state == TrialState.COMPLETE}
    assert {head_id, second_id} <= completed_on, (completed_on, head_id, second_id)

    lost = [t for t in trials if t.user_attrs.get(ATTR_RESULT, {}).get("failure") == "worker_lost"]
    assert lost, [(t.number, t.state, node_of[t.number], t.user_attrs.get(ATTR_RESULT, {}).get("failure")) for t in trials]
    for trial in lost:
        assert trial.state == TrialState.FAIL and trial.user_attrs[ATTR_FINAL] is False
        [again] = [t for t in trials if t.user_attrs.get("retry_of") == trial.number]
        assert again.number > trial.number and again.params == trial.params
        assert again.state == TrialState.COMPLETE
        assert node_of[again.number] not in (None, second_id)  # re-run on a live node
    done = [t for t in trials if t.state.is_finished() and t.user_attrs.get(ATTR_FINAL)]
    assert len(done) == n_trials and all(t.state == TrialState.COMPLETE for t in done)
    assert outcome.trials_finished == n_trials and outcome.trials_failed == 0
    # no_leftover_servers (conftest.py): the lost node's servers died with their reaper.


def test_unreachable_ray_address_fails_fast_with_a_clear_message(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "autotune.cli.app", "run", "--model", MODEL, "--backend", "sim", "--trials", "1",
         "--workload", str(TINY), "--storage", f"sqlite:///{tmp_path / 'autotune.db'}",
         "--log-dir", str(tmp_path / "logs"), "--ray-address", f"127.0.0.1:{port}"],
        capture_output=True, text=True, cwd=REPO, timeout=90, env={**os.environ, "COLUMNS": "250"},
    )
    elapsed = time.monotonic() - started
    text = " ".join((result.stdout + result.stderr).split())
    assert result.returncode == 2, text
    assert "Traceback" not in text, text
    assert f"cannot reach the Ray cluster at 127.0.0.1:{port}" in text, text
    assert elapsed < 30, f"took {elapsed:.0f} s"

"""The local runner (no Ray): one trial per GPU set on this node, servers stopped on close.

Real simulated-server processes, as in test_workers.py; the GPU ids are labels here (the sim
server needs none), and the test checks each server process really got its own.
"""

from __future__ import annotations

import time
from pathlib import Path

import psutil
import pytest

from autotune.workloads import get_preset
from workers.local_runner import LocalRunner
from workers.runners import choose_runner
from workers.trial import TrialSpec

from conftest import sim_servers
from test_workers import sim_spec

pytestmark = pytest.mark.usefixtures("no_leftover_servers")  # no simulated server outlives a test (conftest.py)


def _spec(tmp_path: Path, trial_id: str, **sim_flags) -> TrialSpec:
    return TrialSpec(
        trial_id=trial_id, server=sim_spec(0.5, **sim_flags),
        workload=get_preset("chat", num_prompts=8, concurrency=4), log_dir=str(tmp_path), boot_timeout_s=60,
    )


def test_two_trials_at_once_each_on_its_own_gpu(tmp_path: Path) -> None:
    runner = LocalRunner(parallel=2, gpus_per_trial=1, gpu_ids=["0", "1", "2"])
    seen: dict[str, str] = {}
    try:
        runner.submit(_spec(tmp_path, "a", **{"boot-delay": 2}))
        runner.submit(_spec(tmp_path, "b", **{"boot-delay": 2}))
        deadline = time.monotonic() + 30
        while len(seen) < 2 and time.monotonic() < deadline:  # both servers up at the same time
            for proc in sim_servers():
                try:
                    seen[str(proc.pid)] = proc.environ().get("CUDA_VISIBLE_DEVICES", "")
                except psutil.NoSuchProcess:
                    pass
            time.sleep(0.1)
        results = [runner.wait_one(120), runner.wait_one(120)]
    finally:
        runner.close()
    assert sorted(seen.values()) == ["0", "1"]  # the servers themselves, one GPU each
    assert all(r is not None and r.ok for r in results), [r and r.message for r in results]
    assert sorted(r.worker["cuda_visible_devices"] for r in results) == ["0", "1"]
    assert all(r.server_memory and r.server_memory.layout == (r.full_tokens, r.swa_tokens) for r in results)
    assert not runner.servers()


def test_close_stops_a_booting_server_at_once(tmp_path: Path) -> None:
    runner = LocalRunner(parallel=1)
    runner.submit(_spec(tmp_path, "slow", **{"boot-delay": 60}))
    deadline = time.monotonic() + 20
    while not sim_servers() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert sim_servers(), "the server never started"
    started = time.monotonic()
    runner.close()
    assert time.monotonic() - started < 15
    assert not sim_servers()  # (the no_leftover_servers fixture checks again, with its own grace)


def test_more_gpus_than_the_node_has_is_refused() -> None:
    with pytest.raises(ValueError, match="needs 4 GPUs; this node has 2"):
        LocalRunner(parallel=2, gpus_per_trial=2, gpu_ids=["0", "1"])


def test_runner_choice() -> None:
    assert choose_runner("auto", "sim-fast", None).runner == "in-process"
    assert choose_runner("local", "sglang", None).runner == "local"
    assert choose_runner("auto", "sim", "10.0.0.1:6379").runner == "ray"
    with pytest.raises(ValueError, match="drop --ray-address"):
        choose_runner("local", "sglang", "10.0.0.1:6379")
    with pytest.raises(ValueError, match="unknown runner"):
        choose_runner("kubernetes", "sim", None)

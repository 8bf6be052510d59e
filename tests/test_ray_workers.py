"""Trials on a real local Ray cluster that declares GPUs (no accelerator needed to place them)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import ray

from autotune.workloads import get_preset
from workers.failures import FailureKind
from workers.pool import ClusterTooSmall, WorkerPool, WorkerResources
from workers.process import port_in_use
from workers.spec import ServerSpec
from workers.trial import TrialSpec

from conftest import TAG, sim_servers

pytestmark = pytest.mark.usefixtures("no_leftover_servers")  # no simulated server outlives a test (conftest.py)


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=4, num_gpus=4, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def spec(tmp_path: Path, trial_id: str, prompts: int = 16, ratio: float = 0.5) -> TrialSpec:
    return TrialSpec(
        trial_id=trial_id,
        server=ServerSpec(backend="sim", model_path="26B-A4B",
                          flags={"swa-full-tokens-ratio": ratio, "mem-fraction-static": 0.85},
                          sim_flags={"gpu": "H100", "time-scale": 20}, env=TAG),
        workload=get_preset("chat", num_prompts=prompts, concurrency=8),
        log_dir=str(tmp_path), boot_timeout_s=120, hang_timeout_s=60,
    )


def test_four_gpus_run_four_trials_at_once(cluster, tmp_path: Path) -> None:
    pool = WorkerPool(WorkerResources(gpus=1))
    try:
        assert pool.size == 4
        results = list(pool.run([spec(tmp_path, f"t{i}", ratio=0.3 + 0.1 * i) for i in range(4)]))
    finally:
        pool.shutdown()
    assert all(r.ok for r in results), [r.message for r in results]
    assert len({r.port for r in results}) == 4
    # Ray gave each worker its own GPU and the server inherited it.
    assert sorted(r.worker["cuda_visible_devices"] for r in results) == ["0", "1", "2", "3"]
    # They ran concurrently: every trial started before any finished.
    assert max(r.started_at for r in results) < min(r.finished_at for r in results)
    assert not any(port_in_use(r.port) for r in results)


def test_parallel_beyond_the_cluster_is_refused(cluster) -> None:
    with pytest.raises(ClusterTooSmall, match="--parallel 5"):
        WorkerPool(WorkerResources(gpus=1), num_workers=5)
    with pytest.raises(ClusterTooSmall, match="no room"):
        WorkerPool(WorkerResources(gpus=8))


def test_worker_death_fails_the_trial_and_kills_its_server(cluster, tmp_path: Path) -> None:
    pool = WorkerPool(WorkerResources(gpus=1), num_workers=1)

    def kill_when_serving() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not sim_servers():
            time.sleep(0.2)
        time.sleep(1.0)
        ray.kill(pool.workers[0])

    killer = threading.Thread(target=kill_when_serving)
    killer.start()
    try:
        [lost] = list(pool.run([spec(tmp_path, "doomed", prompts=400)]))
        killer.join()
        assert lost.failure is FailureKind.WORKER_LOST
        # The pool replaced the dead worker: the next trial runs.
        [after] = list(pool.run([spec(tmp_path, "after")]))
        assert after.ok, after.message
    finally:
        pool.shutdown()


def test_tensor_parallel_workers_hold_their_gpus_in_placement_groups(cluster, tmp_path: Path) -> None:
    pool = WorkerPool(WorkerResources(gpus=2))
    try:
        assert pool.size == 2
        groups = ray.util.placement_group_table()
        assert sum(1 for g in groups.values() if g["state"] == "CREATED") >= 2
        results = list(pool.run([spec(tmp_path, f"tp{i}") for i in range(2)]))
    finally:
        pool.shutdown()
    assert all(r.ok for r in results), [r.message for r in results]
    gpu_sets = [set(r.worker["cuda_visible_devices"].split(",")) for r in results]
    assert all(len(g) == 2 for g in gpu_sets) and not gpu_sets[0] & gpu_sets[1]
    assert not any(g["state"] == "CREATED" for g in ray.util.placement_group_table().values())


def test_unreachable_cluster_address_fails_fast_and_clearly() -> None:
    from workers.pool import ClusterUnreachable, _check_reachable
    from workers.process import free_port

    started = time.monotonic()
    with pytest.raises(ClusterUnreachable, match="cannot reach the Ray cluster at 127.0.0.1:.*--ray-address"):
        _check_reachable(f"127.0.0.1:{free_port()}")
    assert time.monotonic() - started < 10

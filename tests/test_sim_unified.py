"""The simulator's --enable-unified-memory: 0.5.23's joint byte arena (read from SGLang's code),
0.5.17's crash when a side passes its static cap (measured: docs/real-gpu/unified.md)."""

from __future__ import annotations

import subprocess
from concurrent.futures import ThreadPoolExecutor
import sys
from pathlib import Path

from autotune.hardware import load_gpu
from autotune.models import load_model
from autotune.sim.config import SimServerConfig
from autotune.sim.engine import SimEngine
from autotune.sim.pool import arena_pools
from autotune.sim.run import simulate
from autotune.workloads.arrival import MaxConcurrency
from autotune.workloads.random_ids import random_ids_workload
from workers.failures import FailureKind, crash_line
from workers.sim_fast import run_sim_fast

REPO = Path(__file__).resolve().parents[1]
MODEL, GPU = load_model("26B-A4B"), load_gpu("H200")
BUDGET = 16150364160 + 200_000  # the measured 15.04 GiB arena (caps full 87622, SWA 70097 at 0.8)
CRASH = "torch.AcceleratorError: CUDA error: device-side assert triggered"


def config(release: str, unified: bool = True, ratio: float | None = None) -> SimServerConfig:
    return SimServerConfig(model=MODEL, gpu=GPU, kv_budget_bytes=BUDGET, enable_unified_memory=unified,
                           sglang_version=release, swa_full_tokens_ratio=ratio, prefill_cuda_graph=False)


CHAT = random_ids_workload("chat-64", 128, 1024, 128, range_ratio=1.0, arrival=MaxConcurrency(64))
LONG = random_ids_workload("long-8k", 32, 8192, 64, range_ratio=1.0, arrival=MaxConcurrency(16))


def test_the_arena_is_the_static_budget_and_logs_sglangs_line() -> None:
    engine = SimEngine(config("0.5.17"))
    arena = engine.startup.arena
    assert (arena.full_tokens, arena.swa_tokens, arena.kv_bytes) == (87622, 70097, 16150364160)
    assert any("total_bytes=16150364160" in line and "joint_available=71689" in line for line in engine.startup.log_lines)


def test_the_arena_lends_free_bytes_to_either_side_and_evicts_before_failing() -> None:
    arena = arena_pools(total_bytes=1000, full_bytes=1, swa_bytes=10, full_cap=500, swa_cap=50)
    arena.swa.alloc(90)  # past its nominal cap of 50: 900 of 1000 bytes
    assert arena.swa.usage > 1 and arena.full.free_or_evictable == 100
    assert not arena.fits(101, 0) and arena.fits(100, 0)
    arena.swa.cache(40)  # 400 bytes of SWA cache: evictable, so reclaimable by the full side
    arena.full.alloc(300)
    assert arena.swa.evictable == 20 and arena.full.used == 300 and arena.occupied_bytes() <= 1000


def test_0523_admits_against_the_joint_budget_and_serves_both_workloads() -> None:
    for workload in (CHAT, LONG):
        result = simulate(workload, config("0.5.23"))
        assert result.crashed is None and all(o.success for o in result.outcomes)
        peak_swa = max(s.swa_used_tokens for s in result.samples)
        assert peak_swa * 204800 + 0 <= 16150364160  # the bytes never exceed the arena


def test_0523_chat_borrows_past_the_static_swa_cap() -> None:
    """64 chats of up to 1k hold more SWA than static 0.8's pool (70,097): the arena lends it."""
    engine = SimEngine(config("0.5.23"))
    for spec in CHAT.requests[:64]:
        from autotune.sim.request import SimRequest
        engine.add(SimRequest(rid=str(spec.index), prompt_len=spec.prompt_len, max_new_tokens=spec.output_len, arrival_s=0.0))
    t, peak = 0.0, 0
    while not engine.idle:
        t = engine.step(t).end_s
        peak = max(peak, engine.scheduler.swa.used)
        assert engine.scheduler.arena.used_bytes() <= engine.scheduler.arena.total_bytes
    assert peak > 70097


def test_0517_crashes_with_sglangs_words_as_measured() -> None:
    for workload in (CHAT, LONG):
        result = simulate(workload, config("0.5.17"))
        assert result.crashed == CRASH
        assert crash_line("\n".join(result.log_lines)) == CRASH
        assert not all(o.success for o in result.outcomes)
    assert simulate(CHAT, config("0.5.17", unified=False, ratio=1.0)).crashed is None  # the tuned static split serves


def test_sim_fast_records_the_crash_as_the_servers_words(tmp_path: Path) -> None:
    from workers.spec import ServerSpec
    from workers.trial import TrialSpec

    server = ServerSpec(backend="sim", model_path="26B-A4B", flags={"enable-unified-memory": True},
                        sim_flags={"gpu": "H200", "kv-budget-gb": BUDGET / 1e9, "sglang-version": "0.5.17"})
    result = run_sim_fast(TrialSpec(trial_id="u", server=server, workload=CHAT, log_dir=str(tmp_path)))
    assert not result.ok and result.failure is FailureKind.CRASHED and result.message == CRASH
    assert CRASH in result.log_tail


def test_the_server_process_exits_with_the_exception_line(tmp_path: Path) -> None:
    """python -m autotune.sim.server --enable-unified-memory --sglang-version 0.5.17 dies under load."""
    import json
    import socket
    import time
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = tmp_path / "server.log"
    argv = [sys.executable, "-m", "autotune.sim.server", "--model-path", "26B-A4B", "--gpu", "H200", "--port", str(port),
            "--kv-budget-gb", str(BUDGET / 1e9), "--enable-unified-memory", "--sglang-version", "0.5.17",
            "--time-scale", "1000", "--disable-prefill-cuda-graph"]
    with log.open("w") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=REPO)
    try:
        deadline = time.time() + 60
        while "fired up" not in log.read_text():
            assert proc.poll() is None and time.time() < deadline, log.read_text()
            time.sleep(0.2)
        body = json.dumps({"input_ids": [7] * 1024, "sampling_params": {"max_new_tokens": 128, "ignore_eos": True}})

        def send(_: int) -> None:
            request = urllib.request.Request(f"http://127.0.0.1:{port}/generate", body.encode(),
                                             {"Content-Type": "application/json"})
            try:
                urllib.request.urlopen(request, timeout=60).read()
            except Exception:
                pass  # the server dies under the load

        with ThreadPoolExecutor(80) as pool:
            list(pool.map(send, range(80)))
        assert proc.wait(timeout=60) != 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert crash_line(log.read_text()) == CRASH

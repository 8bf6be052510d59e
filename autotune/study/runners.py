"""Where trials run: Ray workers booting servers (`sglang`, `sim`), threads of this process booting
them on one node without Ray (`local`), or the simulator's engine in-process (`sim-fast`). The study sees one interface: submit a TrialSpec, wait for TrialResults.
"""

from __future__ import annotations

import concurrent.futures as futures
import importlib.util
import os
import threading
import time
from dataclasses import dataclass, replace
from typing import Protocol

from autotune.hardware import load_gpu
from autotune.pools import InsufficientMemory, SWAPoolRefused
from autotune.sim.args import load_model_for, parse_args, server_config
from autotune.sim.run import simulate
from workers.failures import FailureKind
from workers.server_truth import ServerMemory
from workers.process import ServerProcess
from workers.trial import TrialResult, TrialSpec, run_trial


class TrialRunner(Protocol):
    capacity: int

    def submit(self, spec: TrialSpec) -> None: ...

    def servers(self) -> list[dict]: ...  # running trials' servers: trial_id, host, port

    def wait_one(self, timeout_s: float) -> TrialResult | None: ...

    def close(self) -> None: ...


def run_sim_fast(spec: TrialSpec) -> TrialResult:
    """One trial on the simulator's engine in virtual time, from the very command line the
    `sim` backend would boot (same flag parsing, same defaults): seconds instead of minutes."""
    started = time.time()
    argv = spec.server.argv(port=1)
    base = dict(trial_id=spec.trial_id, backend="sim-fast", simulated=True, command=tuple(argv), started_at=started)
    args = parse_args(argv[3:])
    try:
        config = server_config(args, load_model_for(args), load_gpu(args.gpu))
        result = simulate(spec.workload, config, slo=spec.slo, sample_interval_s=spec.scrape_interval_s)
    except SWAPoolRefused as refused:
        return TrialResult(ok=False, failure=FailureKind.BOOT_REFUSED, message=refused.sglang_message, finished_at=time.time(), **base)
    except InsufficientMemory as oom:
        return TrialResult(ok=False, failure=FailureKind.OUT_OF_MEMORY, message=str(oom), finished_at=time.time(), **base)
    failed = sum(not o.success for o in result.outcomes)
    failure = FailureKind.HANG if result.hung else (FailureKind.CLIENT_ERROR if failed else None)
    message = (
        "the simulated server hung: waiting requests could never be admitted" if result.hung
        else f"{failed} of {len(result.outcomes)} requests failed" if failed else ""
    )
    return TrialResult(
        ok=failure is None, failure=failure, message=message,
        log_tail="\n".join(result.log_lines[-20:]) if failure else "",
        boot_s=0.0, replay_s=result.duration_s,
        full_tokens=result.startup.full_tokens, swa_tokens=result.startup.swa_tokens,
        server_memory=ServerMemory(  # what the `sim` server would report at /server_info and /metrics
            kvcache_gib=round(result.startup.kv_cache_gib, 3),
            full_tokens=result.startup.full_tokens, swa_tokens=result.startup.swa_tokens,
        ),
        summary=result.summary, series=result.series, samples=result.samples,
        client_counts={
            "requests": len(result.outcomes),
            "prompt_tokens": sum(o.prompt_len for o in result.outcomes),
            "generation_tokens": sum(o.output_len for o in result.outcomes),
            "failed": failed,
        },
        worker={"pid": os.getpid()}, finished_at=time.time(), **base,
    )


def _first_done(running: set[futures.Future[TrialResult]], timeout_s: float) -> TrialResult | None:
    """The result of one finished future (removed from `running`), or None after `timeout_s`."""
    done, _ = futures.wait(running, timeout=timeout_s, return_when=futures.FIRST_COMPLETED)
    if not done:
        return None
    future = done.pop()
    running.discard(future)
    return future.result()


class InProcessRunner:
    """`sim-fast`: trials in a process pool (the engine is pure Python; threads would share a core)."""

    def __init__(self, parallel: int = 1) -> None:
        self.capacity = parallel
        self._pool = futures.ProcessPoolExecutor(max_workers=parallel)
        self._running: set[futures.Future[TrialResult]] = set()

    def submit(self, spec: TrialSpec) -> None:
        self._running.add(self._pool.submit(run_sim_fast, spec))

    def servers(self) -> list[dict]:
        return []  # in-process: no server to scrape

    def wait_one(self, timeout_s: float) -> TrialResult | None:
        return _first_done(self._running, timeout_s)

    def close(self) -> None:
        for future in self._running:
            future.cancel()
        self._pool.shutdown(wait=False, cancel_futures=True)


class RayRunner:
    """`sim` and `sglang`: TrialWorker actors on a Ray cluster (workers/pool.py)."""

    def __init__(self, pool) -> None:  # workers.pool.WorkerPool
        self.pool = pool

    @property
    def capacity(self) -> int:
        return self.pool.size  # shrinks when a node is lost and its workers cannot be replaced

    def submit(self, spec: TrialSpec) -> None:
        self.pool.submit(spec)

    def servers(self) -> list[dict]:
        return self.pool.servers()

    def wait_one(self, timeout_s: float) -> TrialResult | None:
        return self.pool.wait_one(timeout_s)

    def close(self) -> None:
        self.pool.shutdown()


class LocalRunner:
    """`sglang` and `sim` on this node without Ray: each trial in a thread of this process, its
    server pinned to its own GPUs through CUDA_VISIBLE_DEVICES (one trial per GPU set).

    For a single node where Ray is not installed (the offline GPU kit leaves Ray's 79 MB wheel
    out) or not wanted. The trial code is the one Ray's workers run (workers/trial.py).
    """

    def __init__(self, parallel: int = 1, gpus_per_trial: int = 0, gpu_ids: list[str] | None = None) -> None:
        if gpus_per_trial:
            ids = list(gpu_ids or [])
            if parallel * gpus_per_trial > len(ids):
                raise ValueError(
                    f"--parallel {parallel} x --tp {gpus_per_trial} needs {parallel * gpus_per_trial} GPUs; "
                    f"this node has {len(ids)} ({', '.join(ids) or 'none'}). Lower --parallel, or use a Ray cluster."
                )
            slots: list[tuple[str, ...] | None] = [
                tuple(ids[i * gpus_per_trial:(i + 1) * gpus_per_trial]) for i in range(parallel)
            ]
        else:
            slots = [None] * parallel
        self.capacity = parallel
        self._free = slots
        self._lock = threading.Lock()
        self._pool = futures.ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="trial")
        self._running: set[futures.Future[TrialResult]] = set()
        self._servers: dict[str, dict] = {}
        self._processes: dict[str, ServerProcess] = {}
        self._closing = False

    def submit(self, spec: TrialSpec) -> None:
        with self._lock:
            if not self._free:
                raise RuntimeError("LocalRunner: more trials submitted than --parallel")
            slot = self._free.pop(0)
        self._running.add(self._pool.submit(self._run, spec, slot))

    def _run(self, spec: TrialSpec, slot: tuple[str, ...] | None) -> TrialResult:
        env = dict(spec.server.env)
        if slot is not None:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(slot)
        spec = replace(spec, server=replace(spec.server, env=env))

        def on_server(port: int) -> None:
            with self._lock:
                self._servers[spec.trial_id] = {"trial_id": spec.trial_id, "host": spec.server.host, "port": port}

        def on_process(server: ServerProcess) -> None:
            with self._lock:
                self._processes[spec.trial_id] = server
            if self._closing:  # closed while this trial was starting: never boot
                server.stop()

        try:
            result = run_trial(spec, None, on_server, on_process)
        finally:
            with self._lock:
                self._servers.pop(spec.trial_id, None)
                self._processes.pop(spec.trial_id, None)
                self._free.append(slot)
        worker = {"runner": "local", "pid": os.getpid(), "gpu_ids": list(slot or ()),
                  "cuda_visible_devices": env.get("CUDA_VISIBLE_DEVICES")}
        return replace(result, worker=worker)

    def servers(self) -> list[dict]:
        with self._lock:
            return list(self._servers.values())

    def wait_one(self, timeout_s: float) -> TrialResult | None:
        return _first_done(self._running, timeout_s)

    def close(self) -> None:
        """Stop every running server (process group), so trial threads end and nothing outlives us."""
        self._closing = True
        with self._lock:
            processes = list(self._processes.values())
        for server in processes:
            server.stop()
        self._pool.shutdown(wait=False, cancel_futures=True)


RUNNERS = ("auto", "ray", "local")


@dataclass(frozen=True)
class RunnerChoice:
    runner: str  # in-process | ray | local
    reason: str


def choose_runner(requested: str, backend: str, ray_address: str | None) -> RunnerChoice:
    """Where trials run. `sim-fast` always runs in-process; otherwise Ray when installed (or asked
    for by --ray-address), else threads on this node (`local`)."""
    if requested not in RUNNERS:
        raise ValueError(f"unknown runner {requested!r}; use one of {', '.join(RUNNERS)}")
    if backend == "sim-fast":
        return RunnerChoice("in-process", "runner in-process: sim-fast trials run on the simulator's engine in this process")
    has_ray = importlib.util.find_spec("ray") is not None
    if requested == "local":
        if ray_address:
            raise ValueError("--runner local runs on this node only; drop --ray-address, or use --runner ray")
        return RunnerChoice("local", "runner local: trials run on this node without Ray, one per GPU set (as asked)")
    if requested == "ray" or ray_address:
        if not has_ray:
            raise ValueError("Ray is not installed here: pip install 'ray[default]', or use --runner local on one node")
        return RunnerChoice("ray", "runner ray: " + (f"joining {ray_address}" if ray_address else "a local Ray cluster"))
    if has_ray:
        return RunnerChoice("ray", "runner ray: a local Ray cluster (--ray-address joins another)")
    return RunnerChoice("local", "runner local: Ray is not installed, so trials run on this node, one per GPU set")


def local_gpu_ids() -> list[str]:
    """The GPUs this process may use: CUDA_VISIBLE_DEVICES when set, else every GPU nvidia-smi lists."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [g.strip() for g in visible.split(",") if g.strip() and g.strip() != "-1"]
    from autotune.study.plan import detect_gpus

    return [str(i) for i in range(len(detect_gpus()))]

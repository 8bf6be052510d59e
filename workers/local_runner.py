"""`sglang` and `sim` on this node without Ray: one trial per GPU set, each in a thread of this process."""

from __future__ import annotations

import concurrent.futures as futures
import os
import threading
from dataclasses import replace

from autotune.hardware import detect_gpus
from workers.futures import first_done
from workers.process import ServerProcess
from workers.trial import TrialResult, TrialSpec, run_trial


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
        return first_done(self._running, timeout_s)

    def close(self) -> None:
        """Stop every running server (process group), so trial threads end and nothing outlives us."""
        self._closing = True
        with self._lock:
            processes = list(self._processes.values())
        for server in processes:
            server.stop()
        self._pool.shutdown(wait=False, cancel_futures=True)


def local_gpu_ids() -> list[str]:
    """The GPUs this process may use: CUDA_VISIBLE_DEVICES when set, else every GPU nvidia-smi lists."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [g.strip() for g in visible.split(",") if g.strip() and g.strip() != "-1"]
    return [str(i) for i in range(len(detect_gpus()))]

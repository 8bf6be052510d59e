"""`sglang` and `sim` on this node without Ray: one trial per GPU set, each in a thread of this process."""

from __future__ import annotations

import concurrent.futures as futures
import os
import threading
from dataclasses import replace

from autotune.hardware import detect_gpus
from workers.futures import first_done
from workers.handover import LEAD_SHARE, GpuSetRecord, Handover
from workers.process import ServerProcess
from workers.trial import TrialResult, TrialSpec, run_trial


class LocalRunner:
    """`sglang` and `sim` on this node without Ray: each trial in a thread of this process, its
    server pinned to its own GPUs through CUDA_VISIBLE_DEVICES (one trial per GPU set).

    For a single node where Ray is not installed (the offline GPU kit leaves Ray's 79 MB wheel
    out) or not wanted. The trial code is the one Ray's workers run (workers/trial.py).

    With `boot_ahead`, each GPU set also takes one trial more than it measures: that trial's server
    boots while the set's running replay drains, and measures once the set is free
    (workers/handover.py). `lookahead` says how many such trials the runner takes.
    """

    def __init__(
        self, parallel: int = 1, gpus_per_trial: int = 0, gpu_ids: list[str] | None = None, *, boot_ahead: bool = False,
        lead_share: float = LEAD_SHARE,
    ) -> None:
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
        self.lookahead = parallel if boot_ahead else 0
        self._free = list(range(parallel))  # indexes into _slots
        self._slots = slots
        self._records = [GpuSetRecord(lead_share) for _ in slots]
        self._holding: dict[int, Handover] = {}  # slot -> the handover its measuring trial will release
        self._next: dict[int, Handover] = {}  # slot -> the handover of the trial booting ahead onto it
        self._lock = threading.Lock()
        self._pool = futures.ThreadPoolExecutor(max_workers=parallel + self.lookahead, thread_name_prefix="trial")
        self._running: set[futures.Future[TrialResult]] = set()
        self._servers: dict[str, dict] = {}
        self._processes: dict[str, ServerProcess] = {}
        self._closing = False

    def submit(self, spec: TrialSpec) -> None:
        with self._lock:
            if self._free:
                index, waits_for = self._free.pop(0), None
                own = self._holding[index] = Handover(self._records[index], spec.workload.name)
            else:
                ahead = [i for i in self._holding if i not in self._next] if self.lookahead else []
                if not ahead:
                    raise RuntimeError("LocalRunner: more trials submitted than --parallel (and boot-ahead) allow")
                index = ahead[0]
                waits_for = self._holding[index]
                own = self._next[index] = Handover(self._records[index], spec.workload.name)
        self._running.add(self._pool.submit(self._run, spec, index, own, waits_for))

    def _run(self, spec: TrialSpec, index: int, own: Handover, waits_for: Handover | None) -> TrialResult:
        """Run `spec` on GPU set `index`; `own` is what it releases when done, `waits_for` what the
        trial measuring there now will release (None: the set was free)."""
        slot = self._slots[index]
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
            result = run_trial(spec, None, on_server, on_process, gpu_set=self._records[index], handover=waits_for,
                               drain=own if self.lookahead else None)
        finally:
            with self._lock:
                self._servers.pop(spec.trial_id, None)
                self._processes.pop(spec.trial_id, None)
                if waits_for is not None and not waits_for.free:
                    self._next.pop(index, None)  # ended before it took the set over (closing): the set stays
                else:
                    self._holding.pop(index, None)
                    if index in self._next:  # the trial booting ahead takes the set over
                        self._holding[index] = self._next.pop(index)
                    else:
                        self._free.append(index)
            own.release()
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

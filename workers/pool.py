"""Trials spread over a Ray cluster: one `TrialWorker` actor per GPU set, one trial at a time each.

An actor holds `num_gpus = tensor-parallel size`; Ray then places it on one node and sets its
`CUDA_VISIBLE_DEVICES`, which the server it boots inherits. On CPU-only clusters the workers can
hold a custom resource (or a fraction of a CPU) instead. A worker that dies mid-trial (actor
killed, node lost) turns into a WORKER_LOST result for that trial and is replaced; its server
dies with it (workers/reaper.py).
"""

from __future__ import annotations

import logging

import os
import socket
import threading
from dataclasses import dataclass, replace
from typing import Any, Iterator

import ray
from ray.exceptions import ActorDiedError, ActorUnavailableError, GetTimeoutError, RayActorError, RayError, RayTaskError
from ray.util.placement_group import placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from workers.failures import FailureKind
from workers.trial import TrialResult, TrialSpec, run_trial


@ray.remote(max_concurrency=2)  # one thread runs the trial, the other answers progress()
class TrialWorker:
    def __init__(self) -> None:
        self._progress: dict[str, Any] = {"phase": "idle"}
        self._server: dict[str, Any] = {}  # the running trial's server: trial_id, host, port
        self._lock = threading.Lock()

    def info(self) -> dict[str, Any]:
        context = ray.get_runtime_context()
        return {
            "node_id": context.get_node_id(),
            "hostname": socket.gethostname(),
            "pid": os.getpid(),
            "gpu_ids": [str(g) for g in ray.get_gpu_ids()],
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        }

    def progress(self) -> dict[str, Any]:
        with self._lock:
            return {**self._progress, **self._server}

    def run(self, spec: TrialSpec) -> TrialResult:
        def report(phase: str, done: int, total: int) -> None:
            with self._lock:
                self._progress = {"trial_id": spec.trial_id, "phase": phase, "done": done, "total": total}

        info = self.info()
        env = dict(spec.server.env)
        if info["cuda_visible_devices"] is not None:
            env["CUDA_VISIBLE_DEVICES"] = info["cuda_visible_devices"]
        spec = replace(spec, server=replace(spec.server, env=env))
        host = ray.util.get_node_ip_address()

        def on_server(port: int) -> None:
            with self._lock:
                self._server = {"trial_id": spec.trial_id, "host": host, "port": port}

        try:
            result = run_trial(spec, report, on_server)
        finally:
            with self._lock:
                self._server = {}
        report("idle", 0, 0)
        return replace(result, worker=info)


@dataclass(frozen=True)
class WorkerResources:
    """What each worker holds. `gpus` is the tensor-parallel size; on CPU-only clusters use
    `custom` (e.g. {"sim_slot": 1}) or a fractional `cpus` instead."""

    gpus: float = 1.0
    cpus: float = 0.0
    custom: dict[str, float] | None = None

    def actor_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {"num_gpus": self.gpus, "num_cpus": self.cpus}
        if self.custom:
            options["resources"] = dict(self.custom)
        return options

    def fits(self, cluster: dict[str, float]) -> int:
        """How many workers of this shape the cluster's total resources hold."""
        counts = []
        if self.gpus:
            counts.append(int(cluster.get("GPU", 0) // self.gpus))
        if self.cpus:
            counts.append(int(cluster.get("CPU", 0) // self.cpus))
        for name, amount in (self.custom or {}).items():
            counts.append(int(cluster.get(name, 0) // amount))
        return min(counts) if counts else 0


class ClusterTooSmall(ValueError):
    pass


PLACEMENT_TIMEOUT_S = 60.0
REPLACE_TIMEOUT_S = 30.0  # how long a replacement for a dead worker may take to start
PROBE_TIMEOUT_S = 10.0  # how long an idle worker may take to answer "are you alive?"


class ClusterUnreachable(ValueError):
    pass


def _check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Fail fast on a head that does not answer: ray.init would retry for minutes."""
    if address in ("auto", "local") or "://" in address:
        return  # resolved by Ray itself (a local cluster, or the Ray client protocol)
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout_s).close()
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise ClusterUnreachable(
            f"cannot reach the Ray cluster at {address}: {reason}. Is `ray start --head` running there, "
            "and is the address HOST:PORT of its GCS (default port 6379)? Check --ray-address."
        ) from None


def connect(address: str | None = None, **init_kwargs: Any) -> None:
    """Join a Ray cluster (`address`), or start a local one; idempotent."""
    if not ray.is_initialized():
        if address:
            _check_reachable(address)
        # logging_level: Ray's start-up chatter ("Started a local Ray instance", its auth-token
        # notice) is not the tuner's output; Ray's errors still show.
        ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR, **init_kwargs)


class WorkerPool:
    def __init__(self, resources: WorkerResources, num_workers: int | None = None) -> None:
        if not ray.is_initialized():
            connect()
        self.resources = resources
        capacity = resources.fits(ray.cluster_resources())
        if capacity == 0:
            raise ClusterTooSmall(
                f"the Ray cluster has no room for one worker of {resources.actor_options()} "
                f"(cluster: {ray.cluster_resources()})"
            )
        if num_workers is not None and num_workers > capacity:
            raise ClusterTooSmall(
                f"--parallel {num_workers} needs {num_workers} workers of {resources.actor_options()}, "
                f"but the cluster holds {capacity}; use --parallel {capacity} or add GPUs"
            )
        self.size = num_workers or capacity
        self._groups: list[Any] = []
        self.workers = [self._new_worker() for _ in range(self.size)]
        self._free = list(range(self.size))
        self._busy: dict[Any, tuple[int, TrialSpec]] = {}

    def _new_worker(self) -> Any:
        options = self.resources.actor_options()
        if self.resources.gpus > 1:
            # Tensor-parallel trials: reserve the worker's GPUs as one bundle on one node, so no
            # other trial's worker can be placed on any of them while it lives.
            group = placement_group([{"GPU": self.resources.gpus}], strategy="STRICT_PACK")
            try:
                ray.get(group.ready(), timeout=PLACEMENT_TIMEOUT_S)
            except GetTimeoutError:
                remove_placement_group(group)
                raise ClusterTooSmall(
                    f"no node has {self.resources.gpus:g} free GPUs for a tensor-parallel worker "
                    f"(waited {PLACEMENT_TIMEOUT_S:.0f} s); lower --parallel or --tp"
                ) from None
            self._groups.append(group)
            options["scheduling_strategy"] = PlacementGroupSchedulingStrategy(group, placement_group_bundle_index=0)
        return TrialWorker.options(**options).remote()

    @property
    def idle(self) -> int:
        return len(self._free)

    def submit(self, spec: TrialSpec) -> None:
        """Start `spec` on an idle worker (callers keep at most `size` trials in flight)."""
        if not self._free:
            raise RuntimeError("no idle worker: wait_one() for a result first")
        slot = self._free.pop()
        self._busy[self.workers[slot].run.remote(spec)] = (slot, spec)

    def wait_one(self, timeout_s: float | None = None) -> TrialResult | None:
        """The next trial to finish, or None if none finished within `timeout_s`."""
        if not self._busy:
            return None
        ready, _ = ray.wait(list(self._busy), num_returns=1, timeout=timeout_s)
        if not ready:
            return None
        slot, spec = self._busy.pop(ready[0])
        return self._result(ready[0], slot, spec)

    def servers(self) -> list[dict[str, Any]]:
        """The servers of running trials (trial_id, host, port), as their workers report them."""
        refs = [self.workers[slot].progress.remote() for slot, _ in self._busy.values()]
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=1.0) if refs else ([], [])
        found = []
        for ref in ready:
            try:
                report = ray.get(ref)
            except RayError:
                continue
            if report.get("port"):
                found.append({key: report[key] for key in ("trial_id", "host", "port")})
        return found

    def run(self, specs: list[TrialSpec]) -> Iterator[TrialResult]:
        """Run trials on the workers as they free up; yield results in completion order."""
        pending = list(reversed(specs))
        while pending or self._busy:
            while pending and self._free:
                self.submit(pending.pop())
            result = self.wait_one()
            if result is not None:
                yield result

    def _result(self, ref: Any, slot: int, spec: TrialSpec) -> TrialResult:
        try:
            result = ray.get(ref)
            self._free.append(slot)
            return result
        except (RayActorError, ActorDiedError, ActorUnavailableError) as exc:
            self._replace_or_drop(slot)
            self._probe_idle()  # its node may have taken idle workers with it
            kind, what, error = FailureKind.WORKER_LOST, "the worker running this trial died", exc
        except RayTaskError as exc:
            self._free.append(slot)
            kind, what, error = FailureKind.INTERNAL_ERROR, "the trial raised inside the worker", exc
        first_line = (str(error).strip().splitlines() or [""])[0]
        return TrialResult(
            trial_id=spec.trial_id, ok=False, backend=spec.server.backend, simulated=spec.server.simulated,
            command=(), failure=kind, message=f"{what}: {type(error).__name__}: {first_line}",
        )

    def _probe_idle(self) -> None:
        """Ask every idle worker whether it is alive; replace (or drop) the dead, so no trial is
        sent to a worker that went down with a lost node."""
        probes = {slot: self.workers[slot].info.remote() for slot in list(self._free)}
        for slot, probe in probes.items():
            try:
                ray.get(probe, timeout=PROBE_TIMEOUT_S)
            except (RayActorError, ActorDiedError, ActorUnavailableError, GetTimeoutError):
                self._free.remove(slot)
                self._replace_or_drop(slot)

    def _replace_or_drop(self, slot: int) -> None:
        """A dead worker is replaced where the cluster still has room for one; where it has not
        (its node is gone), the pool shrinks rather than wait for ever on a worker Ray cannot place."""
        if self.resources.fits(ray.cluster_resources()) >= self.size:
            worker = self._new_worker()
            ready, _ = ray.wait([worker.info.remote()], timeout=REPLACE_TIMEOUT_S)
            if ready:
                self.workers[slot] = worker
                self._free.append(slot)
                return
            ray.kill(worker)  # Ray could not place it (its node is gone, not yet declared dead)
        self.size -= 1
        if self.size == 0:
            raise ClusterTooSmall("every worker died and the cluster has no room for a new one")

    def progress(self) -> list[dict[str, Any]]:
        return ray.get([w.progress.remote() for w in self.workers])

    def shutdown(self) -> None:
        for worker in self.workers:
            ray.kill(worker)
        for group in self._groups:
            remove_placement_group(group)
        self.workers, self._groups = [], []

"""Where trials run: Ray workers booting servers (`sglang`, `sim`), threads of this process booting
them on one node without Ray (`local`), or the simulator's engine in-process (`sim-fast`).

Every runner has the same members (`capacity`, `submit`, `servers`, `wait_one`, `close`): the
study's TrialRunner interface (autotune/study/trial_runner.py), which is all the study sees of them.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

from workers.handover import LEAD_SHARE
from workers.local_runner import LocalRunner, local_gpu_ids
from workers.ray_runner import RayRunner
from workers.sim_fast import InProcessRunner

RUNNERS = ("auto", "ray", "local")


@dataclass(frozen=True)
class RunnerChoice:
    runner: str  # in-process | ray | local
    reason: str


def choose_runner(requested: str, backend: str, ray_address: str | None, *, boot_ahead: bool = False) -> RunnerChoice:
    """Where trials run. `sim-fast` always runs in-process; otherwise Ray when installed (or asked
    for by --ray-address), else threads on this node (`local`). Booting ahead needs the local runner:
    one process must see both the trial that drains and the one that boots onto its GPUs."""
    if requested not in RUNNERS:
        raise ValueError(f"unknown runner {requested!r}; use one of {', '.join(RUNNERS)}")
    if backend == "sim-fast":
        if boot_ahead:
            raise ValueError("--boot-ahead: sim-fast trials boot no server; drop --boot-ahead, or use --backend sim or sglang")
        return RunnerChoice("in-process", "runner in-process: sim-fast trials run on the simulator's engine in this process")
    if boot_ahead:
        if requested == "ray" or ray_address:
            raise ValueError("--boot-ahead runs on this node's GPUs (the local runner): drop --runner ray / --ray-address, "
                             "or drop --boot-ahead")
        return RunnerChoice("local", "runner local: trials run on this node; each next queued trial's server boots while "
                                     "the last replay drains (--boot-ahead)")
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


def open_runner(
    choice: RunnerChoice, backend: str, parallel: int, tp: int, ray_address: str | None, *, boot_ahead: bool = False,
    lead_share: float = LEAD_SHARE,
) -> InProcessRunner | LocalRunner | RayRunner:
    """The runner `choice` names, with `parallel` slots of `tp` GPUs each (none for simulated servers)."""
    if choice.runner == "in-process":
        return InProcessRunner(parallel)
    if choice.runner == "local":
        if backend == "sglang":
            return LocalRunner(parallel, gpus_per_trial=tp, gpu_ids=local_gpu_ids(), boot_ahead=boot_ahead,
                               lead_share=lead_share)
        return LocalRunner(parallel, boot_ahead=boot_ahead, lead_share=lead_share)  # simulated servers need no GPU
    # Imported here, not above: Ray is optional (the offline GPU kit leaves it out), and only this
    # branch needs it.
    from workers.pool import WorkerPool, WorkerResources, connect

    if backend == "sim":
        # Simulated servers need no GPU: each worker holds one "sim_slot" of a local cluster.
        connect(ray_address, **({} if ray_address else {"resources": {"sim_slot": parallel}, "num_cpus": max(parallel, 1)}))
        resources = WorkerResources(gpus=0, custom={"sim_slot": 1})
    else:
        connect(ray_address)
        resources = WorkerResources(gpus=tp)
    return RayRunner(WorkerPool(resources, num_workers=parallel))

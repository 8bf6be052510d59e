"""From `autotune run`'s options to StudyPlans: the backend, the GPU, the KV budget, the flags.

Kept apart from the CLI so that tests and other front ends build studies the same way.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autotune.hardware import GPUProfile, builtin_profiles, load_gpu
from autotune.models import ModelSpec
from autotune.models.dummy import DUMMY_LOAD_FLAGS
from autotune.pools import estimate_budget, pinned_budget, validate_ratio
from autotune.store import GPURecord, ModelRecord, OptimumRecord, Store, WorkloadRecord
from autotune.study.controller import Outcome, StudyPlan
from autotune.study.objective import Objective
from autotune.study.space import RATIO, select_space
from autotune.workloads import Workload

BACKENDS = ("auto", "sglang", "sim", "sim-fast")
DEFAULT_SIM_GPU = "H100-80GB"
DEFAULT_TIME_SCALE = 10.0  # the `sim` server's clock vs the wall; docs/simulator.md says why 10


def project_version() -> str:
    try:
        return importlib.metadata.version("swa-autotune")
    except importlib.metadata.PackageNotFoundError:
        return "dev"


def detect_gpus() -> list[str]:
    """GPU names from nvidia-smi (empty without NVIDIA GPUs or driver)."""
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True, timeout=20
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line.strip() for line in out.stdout.splitlines() if line.strip()] if out.returncode == 0 else []


def profile_for(gpu_name: str) -> GPUProfile:
    """The built-in profile of a GPU nvidia-smi names ("NVIDIA H100 80GB HBM3" -> H100-80GB)."""
    for profile in builtin_profiles().values():
        if gpu_name in profile.aliases or profile.name.split("-")[0] in gpu_name:
            return profile
    raise ValueError(f"no GPU profile matches {gpu_name!r}: pass --gpu with a profile YAML for it")


@dataclass(frozen=True)
class BackendChoice:
    backend: str
    reason: str


def choose_backend(requested: str) -> BackendChoice:
    if requested not in BACKENDS:
        raise ValueError(f"unknown backend {requested!r}; use one of {', '.join(BACKENDS)}")
    has_sglang = importlib.util.find_spec("sglang") is not None
    gpus = detect_gpus()
    if requested == "sglang" and not gpus:
        raise ValueError("--backend sglang needs NVIDIA GPUs (nvidia-smi found none); use --backend sim on this machine")
    if requested != "auto":
        return BackendChoice(requested, f"backend {requested} (as asked)")
    if has_sglang and gpus:
        return BackendChoice("sglang", f"backend sglang: SGLang is installed and {len(gpus)} GPU(s) found ({gpus[0]})")
    missing = "no GPU found" if not gpus else "SGLang is not installed"
    return BackendChoice("sim", f"backend sim: {missing}, so trials run on the simulated SGLang (results are labelled simulated)")


def server_version(backend: str, dummy_weights: bool = False) -> str:
    """The server a study's numbers come from. Dummy weights get studies of their own: pools are
    the same, but throughput is not (random MoE routing)."""
    suffix = "+dummy-weights" if dummy_weights else ""
    if backend == "sglang":
        try:
            return f"sglang-{importlib.metadata.version('sglang')}{suffix}"
        except importlib.metadata.PackageNotFoundError:
            return f"sglang-unknown{suffix}"
    return f"{backend}-{project_version()}{suffix}"


def resolve_gpu(backend: str, gpu: str | None) -> GPUProfile:
    if gpu:
        return load_gpu(gpu)
    if backend == "sglang":
        names = detect_gpus()
        return profile_for(names[0])
    return load_gpu(DEFAULT_SIM_GPU)


def build_plan(
    *,
    model: ModelSpec,
    model_ref: str,
    gpu: GPUProfile,
    workload: Workload,
    backend: str,
    objective: Objective,
    n_trials: int,
    page_size: int | None = None,
    tp: int = 1,
    mem_fraction_static: float | None = None,
    kv_budget_gb: float | None = None,
    time_scale: float = DEFAULT_TIME_SCALE,
    extra_args: tuple[str, ...] = (),
    log_dir: str = "autotune-logs",
    search_spaces: Path | None = None,
    dummy_weights: bool = False,
    try_ratios: tuple[float, ...] = (),
    early_stop: bool = True,
) -> StudyPlan:
    if not model.hybrid_swa:
        raise ValueError(f"{model.name}: {model.hybrid_reason}. There is nothing to tune.")
    flags: dict[str, Any] = {}
    if page_size:
        flags["page-size"] = page_size
    if tp > 1:
        flags["tp-size"] = tp
    if mem_fraction_static is not None:
        flags["mem-fraction-static"] = mem_fraction_static
    if dummy_weights:
        flags.update(DUMMY_LOAD_FLAGS)
    budget = (
        pinned_budget(kv_budget_gb) if kv_budget_gb is not None
        else estimate_budget(model, gpu, tp=tp, mem_fraction_static=mem_fraction_static)
    )
    sim_flags: dict[str, Any] = {}
    if backend in ("sim", "sim-fast"):
        sim_flags["gpu"] = gpu.name
        if kv_budget_gb is not None:
            sim_flags["kv-budget-gb"] = kv_budget_gb
        if backend == "sim" and time_scale != 1:
            sim_flags["time-scale"] = time_scale
    path = Path(model_ref).expanduser()
    model_path = str(path.resolve()) if path.exists() else (model.name if backend != "sglang" else (model.hub_id or model_ref))
    return StudyPlan(
        model=model, gpu=gpu, workload=workload, backend=backend, server_version=server_version(backend, dummy_weights),
        objective=objective, space=select_space(model, search_spaces), n_trials=n_trials, model_path=model_path,
        budget_bytes=budget.bytes, server_flags=flags, sim_flags=sim_flags, extra_args=extra_args, log_dir=log_dir,
        try_ratios=tuple(validate_ratio(r) for r in try_ratios), early_stop=early_stop,
    )


def record_outcome(store: Store, plan: StudyPlan, outcome: Outcome) -> OptimumRecord | None:
    """Keep a study's optimum with the facts rules are derived from."""
    if outcome.best_params is None or outcome.best_values is None:
        return None
    store.upsert_model(ModelRecord.from_spec(plan.model))
    store.upsert_gpu(GPURecord.from_profile(plan.gpu))
    store.upsert_workload(WorkloadRecord.from_workload(plan.workload))
    summary = (outcome.best_result or {}).get("summary") or {}
    record = OptimumRecord(
        model=plan.model.name, gpu=plan.gpu.name, workload=plan.workload.name, study_name=plan.name,
        ratio=float(outcome.best_params[RATIO]), objective_name=plan.objective.name,
        objective_value=float(outcome.best_values[0]),
        metrics={k: summary.get(k) for k in ("total_throughput", "output_throughput", "request_throughput", "ttft", "tpot", "completed")},
        default_value=float(outcome.default_values[0]) if outcome.default_values else None,
        trials=outcome.trials_finished, backend=plan.backend, simulated=plan.simulated,
        server_version=plan.server_version, params=dict(outcome.best_params),
    )
    store.record_optimum(record)
    return record

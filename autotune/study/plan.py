"""A study's plan (what is tuned, where, for which workload, how long) and its outcome, and how
`autotune run`'s options become plans: the GPU, the KV budget, the flags.

Kept apart from the CLI so that tests and other front ends build studies the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autotune.hardware import GPUProfile, detect_gpus, load_gpu, profile_for
from autotune.models import ModelSpec
from autotune.models.dummy import DUMMY_LOAD_FLAGS
from autotune.pools import (
    KVGeometry,
    WorkloadShape,
    analytic_optimum,
    default_chunked_prefill_size,
    estimate_budget,
    min_feasible_ratio,
    pinned_budget,
    validate_ratio,
)
from autotune.sglang_facts import (
    CHUNKED_PREFILL_SIZE,
    CUDA_GRAPH_MAX_BS,
    DEFAULT_RATIO,
    KV_CACHE_DTYPE,
    MEM_FRACTION_STATIC,
    PAGE_SIZE,
    TP_SIZE,
    graph_max_bs_for,
    sets_cuda_graphs,
)
from autotune.pools.modes import require_ratio_to_matter
from autotune.study.backend import server_version, sglang_release
from autotune.study.feasibility import check_serviceable, trial_time_budget_s
from autotune.study.objective import Objective
from autotune.study.space import SearchSpace, select_space
from autotune.study.stopping import check_noise_floor
from autotune.workloads import Workload, concurrency_limit
from workers.load_search import DEFAULT_MAX_LEVELS, LoadSearchSpec, require_arrival_driven

DEFAULT_SIM_GPU = "H100-80GB"
DEFAULT_TIME_SCALE = 10.0  # the `sim` server's clock vs the wall; docs/simulator.md says why 10
# A running trial's heartbeat is recorded every DEFAULT_HEARTBEAT_S / 2; one older than the grace
# period means its tuner died, and the trial runs again.
DEFAULT_HEARTBEAT_S = 10
DEFAULT_GRACE_S = 30
# The smallest noise band (stopping.py): the search benchmark's "within 1 %" target; the one real
# repeat so far differed by 0.15 % (docs/real-gpu/README.md), so on GPUs the floor usually sets it.
DEFAULT_NOISE_FLOOR = 0.01


ASKED_FOR = "asked for (--try)"  # why a user's own candidate was queued


@dataclass(frozen=True)
class StudyPlan:
    model: ModelSpec
    gpu: GPUProfile
    workload: Workload
    backend: str  # sglang | sim | sim-fast
    server_version: str
    objective: Objective
    space: SearchSpace
    n_trials: int
    model_path: str  # what --model-path gets
    budget_bytes: int  # the KV budget the feasible range and the first trial come from
    server_flags: dict[str, Any] = field(default_factory=dict)  # fixed flags (page-size, tp-size, ...)
    sim_flags: dict[str, Any] = field(default_factory=dict)
    extra_args: tuple[str, ...] = ()
    log_dir: str = "autotune-logs"
    hang_timeout_s: float = 120.0
    boot_timeout_s: float = 900.0
    early_stop: bool = True  # stop trials that are clearly lost (workers/early_stop.py)
    try_ratios: tuple[float, ...] = ()  # measured before the sampler's own picks (`--try`)
    seed: int = 0  # the sampler's seed
    heartbeat_s: int = DEFAULT_HEARTBEAT_S  # Optuna's heartbeat interval for running trials
    grace_s: int = DEFAULT_GRACE_S  # a heartbeat older than this: the trial's tuner died
    # Server-side seconds a trial's replay may take before it ends as "too slow" (feasibility.py);
    # None: no limit.
    trial_time_budget_s: float | None = None
    # --trials is a ceiling: stop once the optimum is bracketed or the surface is flat within the
    # noise band (autotune/study/stopping.py); False runs every trial (`--run-all-trials`).
    stop_when_known: bool = True
    noise_floor: float = DEFAULT_NOISE_FLOOR  # the noise band's floor, a share of the best value
    load_levels: int = DEFAULT_MAX_LEVELS  # `--objective capacity`: load levels per trial, at most
    # A real server gets one prefill per kernel shape class and /freeze_gc before a trial measures
    # (workers/kernel_warmup.py); False measures it straight after its boot (`--no-warm-up`).
    warm_up: bool = True

    @property
    def name(self) -> str:
        return f"{self.model.name}|{self.gpu.name}|{self.workload.name}|{self.server_version}"

    @property
    def simulated(self) -> bool:
        return self.backend != "sglang"

    @property
    def sglang_release(self) -> str:
        """The SGLang release whose memory rules this study's server follows (pools/footprint.py)."""
        return sglang_release(self.server_version, self.sim_flags)

    @property
    def time_scale(self) -> float:
        """How much faster than the wall the server's clock runs (the simulator's --time-scale)."""
        return float(self.sim_flags.get("time-scale", 1.0))

    @property
    def trial_wall_budget_s(self) -> float | None:
        return None if self.trial_time_budget_s is None else self.trial_time_budget_s / self.time_scale

    def load_search(self) -> LoadSearchSpec | None:
        """What each trial's load search looks like (`--objective capacity`), else None."""
        if self.objective.name != "capacity" or self.objective.slo is None:
            return None
        return LoadSearchSpec(slo=self.objective.slo, gpus=self.tp, max_levels=self.load_levels)

    @property
    def page_size(self) -> int:
        return int(self.server_flags.get(PAGE_SIZE, 1))

    @property
    def tp(self) -> int:
        return int(self.server_flags.get(TP_SIZE, 1))

    def geometry(self) -> KVGeometry:
        return KVGeometry.of(self.model, tp=self.tp, kv_dtype=str(self.server_flags.get(KV_CACHE_DTYPE, "bf16")))

    def feasible_low(self) -> float:
        low = min_feasible_ratio(self.geometry(), self.budget_bytes, self.page_size)
        if low is None:
            raise ValueError(
                f"no ratio boots {self.model.name} on {self.gpu.name} with this KV budget: even at 1.0 the SWA pool "
                "cannot hold one window; raise --mem-fraction-static or --tp"
            )
        return low

    def first_ratios(self) -> list[float]:
        """The capacity model's optimum, then SGLang's default (the baseline of every gain); the
        user's `--try` ratios go before both (controller.open_study)."""
        shape = WorkloadShape(
            prompt_len=self.workload.total_prompt_tokens / len(self.workload.requests),
            output_len=self.workload.total_output_tokens / len(self.workload.requests),
            concurrency=concurrency_limit(self.workload.arrival),
        )
        chunk = int(self.server_flags.get(CHUNKED_PREFILL_SIZE) or default_chunked_prefill_size(self.gpu.memory_mib))
        best = analytic_optimum(self.geometry(), self.budget_bytes, shape, page_size=self.page_size, chunked_prefill_size=chunk,
                                sglang_version=self.sglang_release)
        return [round(best.ratio, 3)] + ([DEFAULT_RATIO] if abs(best.ratio - DEFAULT_RATIO) > 1e-3 else [])

    def candidates(self) -> list[tuple[float, str]]:
        """What a new study measures first, in order, each with why: the user's `--try` ratios, then
        the capacity model's optimum and SGLang's default (each ratio once)."""
        out: list[tuple[float, str]] = [(ratio, ASKED_FOR) for ratio in self.try_ratios]
        for ratio in self.first_ratios():
            if all(abs(ratio - seen) > 1e-9 for seen, _ in out):
                out.append((ratio, "SGLang default" if ratio == DEFAULT_RATIO else "analytic optimum"))
        return out


@dataclass(frozen=True)
class TrialPoint:
    """One finished trial as a point of the objective against the ratio (charts, --json)."""

    ratio: float
    value: float | None  # the first objective; for a trial stopped early, what it measured by then
    status: str  # complete | stopped early | failed: <failure class>
    levels: tuple[dict[str, Any], ...] = ()  # `--objective capacity`: the load levels measured (LoadLevel dicts)
    cold: bool = False  # its server booted on a cold machine: biased low (autotune/study/cold.py)


@dataclass(frozen=True)
class Outcome:
    """A study's answer: its best trial against SGLang's default, and every measured point."""

    study_name: str
    best_params: dict[str, Any] | None
    best_values: list[float] | None
    best_result: dict[str, Any] | None
    default_values: list[float] | None
    trials_finished: int
    trials_failed: int
    points: tuple[TrialPoint, ...] = ()
    stopped_because: str | None = None  # why the study stopped: bracketed, flat, the ceiling (stopping.py)
    noise_band: dict[str, Any] | None = None  # NoiseBand.to_dict(): what "better" had to beat

    @property
    def gain(self) -> float | None:
        if not self.best_values or not self.default_values or not self.default_values[0]:
            return None
        return self.best_values[0] / self.default_values[0] - 1.0


def cuda_graph_batch(workload: Workload, extra_args: tuple[str, ...], asked: int | str = "auto") -> int | None:
    """--cuda-graph-max-bs-decode for a real server: "auto" captures graphs only up to the most
    requests the workload runs at once (boots faster than SGLang's default of up to 512; every
    decode batch still replays a graph), unless the flags after `--` decide capture themselves;
    "sglang" leaves SGLang's default; a number is used as given."""
    if asked == "sglang":
        return None
    if asked == "auto":
        if sets_cuda_graphs(extra_args):
            return None
        limit = concurrency_limit(workload.arrival)
        return graph_max_bs_for(min(limit, len(workload.requests)) if limit else len(workload.requests))
    if not isinstance(asked, int) or isinstance(asked, bool) or asked < 1:
        raise ValueError(f"--cuda-graph-max-bs {asked!r}: give auto, sglang or a batch size >= 1")
    if sets_cuda_graphs(extra_args):
        raise ValueError(f"--cuda-graph-max-bs {asked} and CUDA graph flags after `--` ({' '.join(extra_args)}): give one of them")
    return asked


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
    heartbeat_s: int = DEFAULT_HEARTBEAT_S,
    grace_s: int = DEFAULT_GRACE_S,
    stop_when_known: bool = True,
    noise_floor: float = DEFAULT_NOISE_FLOOR,
    cuda_graph_max_bs: int | str = "auto",
    load_levels: int = DEFAULT_MAX_LEVELS,
    warm_up: bool = True,
) -> StudyPlan:
    if not model.hybrid_swa:
        raise ValueError(f"{model.name}: {model.hybrid_reason}. There is nothing to tune.")
    check_noise_floor(noise_floor)
    if objective.name == "capacity":
        require_arrival_driven(workload)  # before anything boots: a closed loop has no load to scale
    flags: dict[str, Any] = {}
    if page_size:
        flags[PAGE_SIZE] = page_size
    if tp > 1:
        flags[TP_SIZE] = tp
    if mem_fraction_static is not None:
        flags[MEM_FRACTION_STATIC] = mem_fraction_static
    if dummy_weights:
        flags.update(DUMMY_LOAD_FLAGS)
    # Flags that make SGLang ignore the ratio are named now, before any GPU is booked.
    require_ratio_to_matter(flags, extra_args)
    if backend == "sglang" and (graph_bs := cuda_graph_batch(workload, extra_args, cuda_graph_max_bs)) is not None:
        flags[CUDA_GRAPH_MAX_BS] = graph_bs
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
    version = server_version(backend, dummy_weights)
    # A configuration that cannot serve the workload is refused here, before any server boots.
    check_serviceable(
        model, gpu, workload, budget.bytes, tp=tp, page_size=page_size or 1,
        chunked_prefill_size=default_chunked_prefill_size(gpu.memory_mib),
        mem_fraction_static=mem_fraction_static, budget_pinned=kv_budget_gb is not None,
        sglang_version=sglang_release(version, sim_flags),
    )
    path = Path(model_ref).expanduser()
    model_path = str(path.resolve()) if path.exists() else (model.name if backend != "sglang" else (model.hub_id or model_ref))
    return StudyPlan(
        model=model, gpu=gpu, workload=workload, backend=backend, server_version=version,
        objective=objective, space=select_space(model, search_spaces), n_trials=n_trials, model_path=model_path,
        budget_bytes=budget.bytes, server_flags=flags, sim_flags=sim_flags, extra_args=extra_args, log_dir=log_dir,
        try_ratios=tuple(validate_ratio(r) for r in try_ratios), early_stop=early_stop,
        heartbeat_s=heartbeat_s, grace_s=grace_s, trial_time_budget_s=trial_time_budget_s(model, gpu, workload, tp=tp),
        stop_when_known=stop_when_known, noise_floor=noise_floor, load_levels=load_levels, warm_up=warm_up,
    )

"""Is a configuration worth a trial? What one request needs, how long a trial should take, and the
refusal of configurations that cannot serve the workload, before any server boots.

A study of a hopeless configuration grinds: with 1.3 GiB of KV (the dense 31B at tp=1 on an
80 GB GPU) not one 1k/1k chat fits, and a trial runs for many minutes to measure nothing. So the
plan asks the capacity model first: the best ratio's concurrency against what the workload asks.
Every trial also gets a time budget derived from its workload (a roofline estimate of the replay,
times a generous slack); one that overruns ends as "too slow" instead of grinding.

The replay estimate is deliberately a floor (weights streamed once per decode step, prefill at the
GEMM rate): it is there to bound a trial, not to predict it. The simulator's timing model is the
predictor.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from autotune.hardware import GPUProfile
from autotune.models import ModelSpec
from autotune.pools import KVGeometry, WorkloadShape, analytic_optimum
from autotune.pools.capacity import swa_tokens_per_request
from autotune.pools.footprint import DEFAULT_SGLANG_VERSION, admission_swa_reservation
from autotune.workloads import Workload, concurrency_limit
from autotune.workloads.arrival import TraceTimes, send_offsets

# A trial may take this many times the roofline estimate of its replay: SGLang's measured collapse at
# a bad ratio runs about 4x slower than the best ratio, and the roofline is itself optimistic.
TIME_BUDGET_SLACK = 10.0
TIME_BUDGET_FLOOR_S = 120.0  # server-side seconds; short workloads still get time to warm up
# Below this share of the workload's concurrency at its best ratio, a trial is refused up front:
# every trial would take more than the slack allows.
MIN_CONCURRENCY_SHARE = 1.0 / TIME_BUDGET_SLACK


class HopelessConfiguration(ValueError):
    """The configuration cannot serve the workload; the message names the budget, the need and the fix."""


@dataclass(frozen=True)
class RequestNeed:
    """KV tokens one request of the workload holds at its largest (the largest request) and on average."""

    full_tokens: int  # prompt + output of the largest request: all of it stays in the full pool
    swa_tokens: int  # its footprint in the SWA pool (capped by the window)
    mean_full_tokens: float

    def describe(self, geometry: KVGeometry) -> str:
        need = self.full_tokens * geometry.full_bytes + self.swa_tokens * geometry.swa_bytes
        return (f"its largest request holds {self.full_tokens:,} full + {self.swa_tokens:,} SWA tokens "
                f"({need / 2**30:.2f} GiB of KV)")


def request_need(
    workload: Workload, geometry: KVGeometry, page_size: int, *, sglang_version: str = DEFAULT_SGLANG_VERSION,
    chunked_prefill_size: int = 8192,
) -> RequestNeed:
    largest = max(workload.requests, key=lambda r: r.prompt_len + r.output_len)
    shape = WorkloadShape(largest.prompt_len, largest.output_len)
    return RequestNeed(
        full_tokens=largest.prompt_len + largest.output_len,
        swa_tokens=math.ceil(swa_tokens_per_request(
            shape, geometry.window, page_size, sglang_version=sglang_version, chunked_prefill_size=chunked_prefill_size,
        )),
        mean_full_tokens=(workload.total_prompt_tokens + workload.total_output_tokens) / len(workload.requests),
    )


def workload_shape(workload: Workload) -> WorkloadShape:
    n = len(workload.requests)
    return WorkloadShape(
        prompt_len=workload.total_prompt_tokens / n,
        output_len=workload.total_output_tokens / n,
        concurrency=concurrency_limit(workload.arrival),
    )


def roofline_replay_s(model: ModelSpec, gpu: GPUProfile, workload: Workload, concurrency: float, *, tp: int = 1) -> float:
    """A floor on the replay's duration with `concurrency` requests running at once."""
    n = len(workload.requests)
    shape = workload_shape(workload)
    running = max(min(concurrency, n), 1e-9)
    waves = n / running
    # A decode step streams the weights once. For MoE, a batch of b tokens touches each expert with
    # probability 1 - (1 - k/E)^b: at the batches a study runs, nearly all of them.
    touched = 1.0
    if model.moe:
        share = model.moe.top_k / model.moe.num_experts
        touched = model.params_active / model.params_total + (1 - (1 - share) ** running) * (1 - model.params_active / model.params_total)
    decode_step_s = model.weight_bytes / tp * touched / (gpu.weight_stream_tbs * 1e12) + gpu.decode_step_overhead_ms / 1e3
    prefill_s = 2 * model.params_active / tp * workload.total_prompt_tokens / (gpu.gemm_tflops * 1e12)
    served = waves * shape.output_len * decode_step_s + prefill_s
    span = 0.0
    if not isinstance(workload.arrival, TraceTimes) and concurrency_limit(workload.arrival) is None:
        span = send_offsets(workload.arrival, workload.requests)[-1]
    elif isinstance(workload.arrival, TraceTimes):
        span = max(r.arrival_s or 0.0 for r in workload.requests)
    return max(served, span + shape.output_len * decode_step_s)


def trial_time_budget_s(model: ModelSpec, gpu: GPUProfile, workload: Workload, *, tp: int = 1) -> float:
    """Server-side seconds a trial's replay may take before it ends as "too slow"."""
    concurrency = concurrency_limit(workload.arrival) or len(workload.requests)
    return max(TIME_BUDGET_FLOOR_S, TIME_BUDGET_SLACK * roofline_replay_s(model, gpu, workload, concurrency, tp=tp))


@dataclass(frozen=True)
class Serviceability:
    """The capacity model's answer to "can this configuration serve the workload at all?"."""

    workload: str
    budget_bytes: int
    need: RequestNeed
    best_ratio: float | None
    best_concurrency: float  # requests both pools hold together at the best ratio, a prefill chunk in flight
    target_concurrency: int | None
    fits_alone: bool = True  # some ratio holds the largest request on its own, its prefill chunk included
    fixes: tuple[str, ...] = field(default=())

    @property
    def concurrency(self) -> float:
        """What runs at once: the steady-state estimate, or one at a time where only that fits
        (the chunk in flight is transient: a lone request reuses its room once prefilled)."""
        return max(self.best_concurrency, 1.0) if self.fits_alone else 0.0

    @property
    def hopeless(self) -> bool:
        if self.best_ratio is None or self.concurrency < 1:
            return True
        return bool(self.target_concurrency) and self.concurrency < MIN_CONCURRENCY_SHARE * self.target_concurrency

    def explain(self, what: str, geometry: KVGeometry) -> str:
        budget = f"the KV budget is {self.budget_bytes / 2**30:.2f} GiB"
        if self.best_ratio is None:
            held = "no ratio boots (the SWA pool cannot hold one window even at 1.0)"
        else:
            target = f" of the {self.target_concurrency} it runs at once" if self.target_concurrency else ""
            held = (f"at the best ratio ({self.best_ratio:.3f}) the pools hold {self.best_concurrency:.1f} "
                    f"requests{target}" + ("" if self.fits_alone else ", and no ratio holds even one with its prefill chunk"))
        fixes = "; ".join(self.fixes) or "a larger GPU, a higher --mem-fraction-static, or a shorter workload"
        return f"{what} cannot serve {self.workload!r}: {budget}, {self.need.describe(geometry)}, and {held}. Fix: {fixes}."


def serviceability(
    geometry: KVGeometry,
    budget_bytes: int,
    workload: Workload,
    *,
    page_size: int = 1,
    chunked_prefill_size: int = 8192,
    fixes: tuple[str, ...] = (),
    sglang_version: str = DEFAULT_SGLANG_VERSION,
) -> Serviceability:
    shape = workload_shape(workload)
    need = request_need(workload, geometry, page_size, sglang_version=sglang_version, chunked_prefill_size=chunked_prefill_size)
    try:
        best = analytic_optimum(geometry, budget_bytes, shape, page_size=page_size, chunked_prefill_size=chunked_prefill_size,
                                sglang_version=sglang_version)
    except ValueError:
        return Serviceability(workload.name, budget_bytes, need, None, 0.0, shape.concurrency, fixes)
    largest = max(workload.requests, key=lambda r: r.prompt_len + r.output_len)
    # What SGLang's admission reserves in the SWA pool for it (max_new clipped at 4096, as SGLang does).
    admitted = admission_swa_reservation(largest.prompt_len, min(largest.output_len, 4096), geometry.window, page_size,
                                         chunked_prefill_size)
    alone = _fits_alone(geometry, budget_bytes, best.min_ratio, page_size, need.full_tokens, max(need.swa_tokens, admitted))
    return Serviceability(workload.name, budget_bytes, need, best.ratio, best.estimate.requests, shape.concurrency,
                          fits_alone=alone, fixes=fixes)


def _fits_alone(geometry: KVGeometry, budget_bytes: int, low: float, page_size: int, full: int, swa: int) -> bool:
    """Some ratio whose pools hold the largest request on its own: its full tokens, and the larger of
    its admission reservation and its peak SWA footprint (a coarse 1 % grid: this decides "at all")."""
    from autotune.pools import size_pools

    for step in range(101):
        ratio = low + (1.0 - low) * step / 100
        layout = size_pools(geometry, budget_bytes, ratio, page_size, check=False)
        if layout.full_tokens >= full and layout.swa_tokens >= swa:
            return True
    return False


def check_serviceable(
    model: ModelSpec,
    gpu: GPUProfile,
    workload: Workload,
    budget_bytes: int,
    *,
    tp: int = 1,
    page_size: int = 1,
    kv_dtype: str = "bf16",
    chunked_prefill_size: int = 8192,
    mem_fraction_static: float | None = None,
    budget_pinned: bool = False,
    sglang_version: str = DEFAULT_SGLANG_VERSION,
) -> Serviceability:
    """Raise HopelessConfiguration, naming the budget, the need and the fixes that would work."""
    geometry = KVGeometry.of(model, tp=tp, kv_dtype=kv_dtype)
    verdict = serviceability(geometry, budget_bytes, workload, page_size=page_size, chunked_prefill_size=chunked_prefill_size,
                             sglang_version=sglang_version)
    if not verdict.hopeless:
        return verdict
    fixes = [] if budget_pinned else _working_alternatives(
        model, gpu, workload, tp=tp, page_size=page_size, kv_dtype=kv_dtype,
        chunked_prefill_size=chunked_prefill_size, mem_fraction_static=mem_fraction_static,
        sglang_version=sglang_version,
    )
    fixes.append("a workload with shorter requests or fewer at once")
    what = f"{model.name} on {gpu.name} (tp={tp})"
    raise HopelessConfiguration(
        Serviceability(**{**verdict.__dict__, "fixes": tuple(fixes)}).explain(what, geometry)
    )


def _working_alternatives(
    model: ModelSpec, gpu: GPUProfile, workload: Workload, *, tp: int, page_size: int, kv_dtype: str,
    chunked_prefill_size: int, mem_fraction_static: float | None, sglang_version: str = DEFAULT_SGLANG_VERSION,
) -> list[str]:
    """More GPUs per trial, or a bigger GPU, where the capacity model says they would serve it."""
    from autotune.hardware import builtin_profiles

    more_gpus = [(f"--tp {tp * n}", gpu, tp * n) for n in (2, 4, 8)]
    bigger_gpus = [(f"--gpu {p.name}", p, tp) for p in sorted(builtin_profiles().values(), key=lambda p: p.memory_mib)
                   if p.memory_mib > gpu.memory_mib]
    return [fix for options in (more_gpus, bigger_gpus) for fix in _first_working(
        options, model, workload, page_size=page_size, kv_dtype=kv_dtype,
        chunked_prefill_size=chunked_prefill_size, mem_fraction_static=mem_fraction_static,
        sglang_version=sglang_version)]


def _first_working(
    options: list[tuple[str, GPUProfile, int]], model: ModelSpec, workload: Workload, *, page_size: int, kv_dtype: str,
    chunked_prefill_size: int, mem_fraction_static: float | None, sglang_version: str = DEFAULT_SGLANG_VERSION,
) -> list[str]:
    from autotune.pools import estimate_budget
    from autotune.pools.budget import InsufficientMemory

    for flag, profile, option_tp in options:
        try:
            budget = estimate_budget(model, profile, tp=option_tp, mem_fraction_static=mem_fraction_static)
        except (InsufficientMemory, ValueError):
            continue
        geometry = KVGeometry.of(model, tp=option_tp, kv_dtype=kv_dtype)
        verdict = serviceability(geometry, budget.bytes, workload, page_size=page_size,
                                 chunked_prefill_size=chunked_prefill_size, sglang_version=sglang_version)
        if not verdict.hopeless:
            return [f"{flag} ({budget.gib:.1f} GiB of KV, {verdict.concurrency:.0f} requests at once)"]
    return []

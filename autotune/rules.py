"""Rules: what the optima teach about models nobody has tuned yet.

A rule covers one cell of (MoE or dense) x workload class x GPU memory class, plus a coarser cell
without the memory class. It keeps its evidence (the optima it stands on) and how much they agree.
It does not store a bare ratio for reuse: what transfers between models is how far the measured
optimum sits from the capacity model's analytic optimum. The best ratio follows from the pools'
token needs at the workload's concurrency against what each pool gets from the GPU's memory left
after the weights (autotune/pools/capacity.py), so the same MoE model that wants 0.15 on a B200 can
collapse at 0.15 on an H100; MoE/dense is one feature among them. A model without an optimum gets
its own analytic optimum scaled by the rule's median correction, and is told the result is inferred.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable

from autotune.hardware import GPUProfile, load_gpu
from autotune.models import ModelSpec, load_model
from autotune.pools import KVGeometry, WorkloadShape, analytic_optimum, default_chunked_prefill_size, estimate_budget
from autotune.sglang_facts import DEFAULT_RATIO, RATIO
from autotune.store import GPURecord, ModelRecord, OptimumRecord, RuleRecord, Store, WorkloadRecord

if TYPE_CHECKING:  # the types only: `autotune launch` and `rules` need no study machinery at run time
    from autotune.study.plan import Outcome, StudyPlan


def analytic_ratio(model: ModelSpec, gpu: GPUProfile, workload: WorkloadRecord, tp: int = 1) -> float | None:
    """The capacity model's optimum for a model, GPU and workload shape (None if nothing boots)."""
    try:
        budget = estimate_budget(model, gpu, tp=tp)
        shape = WorkloadShape(workload.mean_prompt, workload.mean_output, workload.concurrency)
        best = analytic_optimum(
            KVGeometry.of(model, tp=tp), budget.bytes, shape, chunked_prefill_size=default_chunked_prefill_size(gpu.memory_mib)
        )
    except ValueError:
        return None
    return best.ratio


def rule_key(moe: bool, workload_class: str, memory_class: str | None) -> str:
    return f"{'moe' if moe else 'dense'}|{workload_class}|{memory_class or 'any'}"


def _evidence(optimum: OptimumRecord, model: ModelRecord, workload: WorkloadRecord) -> dict:
    entry = {
        "model": optimum.model, "gpu": optimum.gpu, "workload": optimum.workload, "ratio": optimum.ratio,
        "gain": optimum.gain, "trials": optimum.trials, "simulated": optimum.simulated, "analytic_ratio": None,
    }
    try:
        entry["analytic_ratio"] = analytic_ratio(load_model(optimum.model), load_gpu(optimum.gpu), workload)
    except ValueError:
        pass  # a model or GPU this machine cannot load: its ratio still counts, its correction does not
    return entry


def derive_rules(
    optima: Iterable[OptimumRecord], models: dict[str, ModelRecord], gpus: dict[str, GPURecord], workloads: dict[str, WorkloadRecord]
) -> list[RuleRecord]:
    cells: dict[tuple[bool, str, str | None], list[dict]] = {}
    for optimum in optima:
        model, gpu, workload = models.get(optimum.model), gpus.get(optimum.gpu), workloads.get(optimum.workload)
        if model is None or gpu is None or workload is None:
            continue
        entry = _evidence(optimum, model, workload)
        for memory_class in (gpu.memory_class, None):
            cells.setdefault((model.moe, workload.workload_class, memory_class), []).append(entry)
    rules = []
    for (moe, workload_class, memory_class), evidence in sorted(cells.items(), key=lambda kv: rule_key(*kv[0])):
        ratios = [e["ratio"] for e in evidence]
        gains = [e["gain"] for e in evidence if e["gain"] is not None]
        rules.append(
            RuleRecord(
                key=rule_key(moe, workload_class, memory_class), moe=moe, workload_class=workload_class,
                memory_class=memory_class, ratio=statistics.median(ratios), spread=max(ratios) - min(ratios),
                gain=statistics.mean(gains) if gains else None, evidence=evidence,
                simulated=any(e["simulated"] for e in evidence),
            )
        )
    return rules


def refresh_rules(store: Store) -> list[RuleRecord]:
    """Derive the rules from every optimum in the store and replace the stored set atomically."""
    rules = derive_rules(
        store.optima(),
        {m.name: m for m in store.models()},
        {g.name: g for g in store.gpus()},
        {w.name: w for w in store.workloads()},
    )
    store.replace_rules(rules)
    return rules


@dataclass(frozen=True)
class Resolution:
    """The ratio a model should be served with, and why."""

    ratio: float
    source: str  # "optimum", "rule (inferred)", "SGLang default"
    detail: str
    simulated: bool
    provenance: dict


def _correction(rule: RuleRecord) -> float | None:
    factors = [e["ratio"] / e["analytic_ratio"] for e in rule.evidence if e.get("analytic_ratio")]
    return statistics.median(factors) if factors else None


def resolve(store: Store, model: ModelSpec, gpu: GPUProfile, workload: WorkloadRecord) -> Resolution:
    """Exact optimum, else the most specific rule for the model's features, else SGLang's default."""
    exact = store.optimum(model.name, gpu.name, workload.name)
    if exact is not None:
        return Resolution(
            exact.ratio, "optimum",
            f"tuned for {model.name} on {gpu.name}, workload {workload.name}: {exact.trials} trials, "
            f"{'+' if (exact.gain or 0) >= 0 else ''}{(exact.gain or 0):.1%} over 0.8",
            exact.simulated,
            {"study": exact.study_name, "trials": exact.trials, "backend": exact.backend,
             "server_version": exact.server_version, "updated_at": exact.updated_at.isoformat(), "gain": exact.gain},
        )
    rules = {rule.key: rule for rule in store.rules()}
    for memory_class in (gpu.memory_class, None):
        rule = rules.get(rule_key(model.is_moe, workload.workload_class, memory_class))
        if rule is None:
            continue
        factor = _correction(rule)
        base = analytic_ratio(model, gpu, workload) if factor is not None else None
        ratio = min(1.0, round(base * factor, 3)) if base is not None else rule.ratio
        how = (f"capacity-model optimum {base:.3f} x rule correction {factor:.2f}" if base is not None
               else f"rule median {rule.ratio:.3f}")
        return Resolution(
            ratio, "rule (inferred)",
            f"{model.name} was never tuned on {gpu.name} for {workload.workload_class}: inferred from rule {rule.key} "
            f"({len(rule.evidence)} optima: {', '.join(sorted({e['model'] for e in rule.evidence}))}); {how}",
            rule.simulated,
            {"rule": rule.key, "evidence": rule.evidence, "inferred": True},
        )
    return Resolution(DEFAULT_RATIO, "SGLang default", "no optimum and no rule applies: SGLang's own default", False, {})


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

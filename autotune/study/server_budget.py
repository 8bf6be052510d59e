"""The KV budget a real server reported, kept per configuration and used by later plans.

The plan's pre-boot budget is an estimate (weights, CUDA context, SGLang's mem_fraction_static
formula); on the H200 it was 4.8 GiB high, which moved the first trial's analytic ratio and the
search's lower bound. After a real trial boots, its server's own `kvcache` figure is stored per
(model, GPU, server version, tp, --mem-fraction-static); the next plan for that configuration
starts from it, and says so. Simulated servers report the estimate back, so only real ones count.
"""

from __future__ import annotations

import dataclasses

from autotune.hardware.profile import GIB
from autotune.sglang_facts import MEM_FRACTION_STATIC
from autotune.store import ServerMemoryRecord, Store
from autotune.study.feasibility import check_serviceable
from autotune.study.plan import StudyPlan
from workers.trial import TrialResult

DEFAULT_MEM_FRACTION = "default"  # SGLang's own formula chose it


def _mem_fraction(plan: StudyPlan) -> str:
    """--mem-fraction-static as the servers get it: a plan flag, or among the extra SGLang args."""
    if MEM_FRACTION_STATIC in plan.server_flags:
        return str(float(plan.server_flags[MEM_FRACTION_STATIC]))
    args = list(plan.extra_args)
    flag = f"--{MEM_FRACTION_STATIC}"
    for i, arg in enumerate(args):
        if arg == flag and i + 1 < len(args):
            return str(float(args[i + 1]))
        if arg.startswith(flag + "="):
            return str(float(arg.split("=", 1)[1]))
    return DEFAULT_MEM_FRACTION


def _key(plan: StudyPlan) -> dict[str, object]:
    return {"model": plan.model.name, "gpu": plan.gpu.name, "server_version": plan.server_version,
            "tp": plan.tp, "mem_fraction_static": _mem_fraction(plan)}


def remember_server_memory(store: Store, plan: StudyPlan, trial: int, result: TrialResult) -> ServerMemoryRecord | None:
    """Keep a real server's reported budget (None: simulated, or the server stated none)."""
    memory = result.server_memory
    if plan.simulated or memory is None or not memory.kvcache_gib:
        return None
    record = ServerMemoryRecord(**_key(plan), kvcache_gib=memory.kvcache_gib, weight_gib=memory.weight_gib,  # type: ignore[arg-type]
                                study_name=plan.name, trial=trial)
    store.record_server_memory(record)
    return record


def with_measured_budget(store: Store, plan: StudyPlan) -> tuple[StudyPlan, str | None]:
    """The plan on the budget a server of this configuration reported before, if one did."""
    if plan.simulated:
        return plan, None
    record = store.server_memory(**_key(plan))  # type: ignore[arg-type]
    if record is None:
        return plan, None
    measured = round(record.kvcache_gib * GIB)
    note = (f"{plan.workload.name}: KV budget {record.kvcache_gib:.3f} GiB as SGLang reported it (study "
            f"{record.study_name}, trial {record.trial}, {record.measured_at:%Y-%m-%d}), not the estimate "
            f"{plan.budget_bytes / GIB:.3f} GiB")
    # The measured budget may serve the workload where the estimate did not, or the other way round.
    check_serviceable(plan.model, plan.gpu, plan.workload, measured, tp=plan.tp, page_size=plan.page_size,
                      budget_pinned=True, sglang_version=plan.sglang_release)
    return dataclasses.replace(plan, budget_bytes=measured), note

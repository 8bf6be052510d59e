"""The KV budget a real server reported: kept per configuration, used by the next plan, and used at
once by the running study to re-derive its bounds (the estimate was 4.8 GiB off on an H200)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from autotune.hardware import load_gpu
from autotune.hardware.profile import GIB
from autotune.models import load_model
from autotune.store import Store
from autotune.study.controller import budget_note, with_server_budget, with_slo
from autotune.study.plan import build_plan
from autotune.study.server_budget import remember_server_memory, with_measured_budget
from autotune.workloads import get_preset
from workers.server_truth import ServerMemory
from workers.trial import TrialResult

H200_KVCACHE_GIB = 15.042  # the real H200 run at --mem-fraction-static 0.48 (docs/real-gpu/README.md)


def plan_for(backend: str, tmp_path: Path, *, workload: str = "chat", **kwargs):
    return build_plan(model=load_model("26B-A4B"), model_ref="26B-A4B", gpu=load_gpu("H200"), workload=get_preset(workload),
                      backend=backend, objective=with_slo("throughput", None), n_trials=4, log_dir=str(tmp_path), **kwargs)


def booted(kvcache_gib: float) -> TrialResult:
    return TrialResult(trial_id="t0", ok=True, backend="sglang", simulated=False, command=(),
                       server_memory=ServerMemory(kvcache_gib=kvcache_gib, weight_gib=51.699))


@pytest.fixture
def store(tmp_path: Path) -> Store:
    store = Store(f"sqlite:///{tmp_path / 'a.db'}")
    store.migrate()
    yield store
    store.close()


def test_a_real_servers_budget_is_kept_and_the_next_plan_starts_from_it(store: Store, tmp_path: Path) -> None:
    plan = plan_for("sglang", tmp_path, mem_fraction_static=0.48)
    assert abs(plan.budget_bytes / GIB - H200_KVCACHE_GIB) > 1.0  # the estimate is far off, as on the real H200
    assert with_measured_budget(store, plan) == (plan, None)  # nothing measured yet
    record = remember_server_memory(store, plan, 0, booted(H200_KVCACHE_GIB))
    assert record is not None and record.mem_fraction_static == "0.48" and record.tp == 1
    again, note = with_measured_budget(store, plan_for("sglang", tmp_path, mem_fraction_static=0.48))
    assert again.budget_bytes == round(H200_KVCACHE_GIB * GIB)
    assert note is not None and "15.042 GiB as SGLang reported it" in note and plan.name in note
    # Another --mem-fraction-static is another configuration: the estimate stands.
    other = plan_for("sglang", tmp_path, mem_fraction_static=0.6)
    assert with_measured_budget(store, other) == (other, None)


def test_the_flag_among_the_extra_sglang_args_keys_the_figure_too(store: Store, tmp_path: Path) -> None:
    plan = plan_for("sglang", tmp_path, extra_args=("--mem-fraction-static", "0.48", "--attention-backend", "triton"))
    assert remember_server_memory(store, plan, 3, booted(H200_KVCACHE_GIB)).mem_fraction_static == "0.48"


def test_simulated_servers_teach_nothing(store: Store, tmp_path: Path) -> None:
    plan = plan_for("sim", tmp_path)
    assert remember_server_memory(store, plan, 0, booted(H200_KVCACHE_GIB)) is None
    assert with_measured_budget(store, plan) == (plan, None)


def test_the_running_study_rebases_its_bounds_on_the_servers_budget(tmp_path: Path) -> None:
    # Long prompts: their analytic ratio balances the pools, so it moves with the budget.
    plan = plan_for("sglang", tmp_path, workload="summarization", mem_fraction_static=0.48)
    check = {"kvcache_gib": H200_KVCACHE_GIB, "budget_error_gib": plan.budget_bytes / GIB - H200_KVCACHE_GIB}
    assert budget_note(plan, check) is not None
    rebased, said = with_server_budget(plan, check)
    assert rebased.budget_bytes == round(H200_KVCACHE_GIB * GIB)
    assert rebased.first_ratios() != plan.first_ratios()  # the analytic guess moves with the budget
    assert f"feasible ratios [{rebased.feasible_low():.3f}, 1.0]" in said
    assert dataclasses.replace(rebased, budget_bytes=plan.budget_bytes) == plan

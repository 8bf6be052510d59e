"""What the 2-GPU runs on real SGLang 0.5.17 recorded (docs/real-gpu/ray.md, traffic.md), read back from the
committed study databases: the record shows what the pages claim, and the code that reads it agrees."""

from __future__ import annotations

import sys
from pathlib import Path

import optuna
import pytest

from autotune.measure.serving_metrics import SLO
from autotune.study.objective import Objective
from autotune.study.trial_attrs import ATTR_RESULT
from workers.failures import FailureKind
from workers.trial import TrialResult

REPO = Path(__file__).resolve().parents[1]
RAY = REPO / "docs/real-gpu/ray"
AZURE = REPO / "docs/real-gpu/azure"


def trials(db: Path) -> list[optuna.trial.FrozenTrial]:
    storage = optuna.storages.RDBStorage(f"sqlite:///{db}")
    (summary,) = optuna.get_all_study_summaries(storage)
    return optuna.load_study(study_name=summary.study_name, storage=storage).trials


def results(db: Path) -> dict[int, TrialResult]:
    return {t.number: TrialResult.from_dict(t.user_attrs[ATTR_RESULT]) for t in trials(db) if ATTR_RESULT in t.user_attrs}


def test_two_real_trials_ran_at_once_each_on_its_own_gpu() -> None:
    ran = results(RAY / "ray2.db")
    assert len(ran) == 4 and all(r.ok and not r.simulated for r in ran.values())
    gpus = {n: tuple(r.worker["gpu_ids"]) for n, r in ran.items()}
    assert sorted(gpus.values()) == [("0",), ("0",), ("1",), ("1",)]
    # Each wave's two trials overlapped in time on different GPUs.
    for a, b in ((0, 1), (2, 3)):
        overlap = min(ran[a].finished_at, ran[b].finished_at) - max(ran[a].started_at, ran[b].started_at)
        assert overlap > 40 and gpus[a] != gpus[b]
    alone = results(RAY / "ray1.db")
    assert len(alone) == 2 and alone[1].started_at >= alone[0].finished_at - 1


def test_a_tp2_trial_held_both_gpus_in_one_placement_group() -> None:
    ran = results(RAY / "tp2.db")
    done = [r for r in ran.values() if r.ok]
    assert len(done) == 1
    (trial,) = done
    assert trial.worker["gpu_ids"] == ["0", "1"] and "--tp-size" in trial.command
    assert trial.command[trial.command.index("--tp-size") + 1] == "2"
    # Two GPUs' KV: about 2.5x one GPU's pools at the same --mem-fraction-static.
    one_gpu = results(RAY / "ray1.db")[0]
    assert trial.full_tokens > 4 * one_gpu.full_tokens


def test_the_bench_reads_the_parallel_efficiency_from_the_record(capsys: pytest.CaptureFixture[str]) -> None:
    sys.path.insert(0, str(REPO / "bench"))
    import parallel_efficiency

    assert parallel_efficiency.main([str(RAY)]) == 0
    out = capsys.readouterr().out
    assert "cold (the machine's first boots, compiling): ray2 trials 0, 1" in out
    line = next(line for line in out.splitlines() if line.startswith("parallel efficiency (warm trials)"))
    efficiency = float(line.rsplit("=", 1)[1].strip().rstrip("%")) / 100
    assert 0.9 < efficiency < 1.2  # two GPUs at twice one GPU's rate, within the run's noise


def test_trials_whose_server_died_mid_search_score_the_levels_they_passed() -> None:
    """The two repeats real 0.5.17 killed (pool leak check at idle) were stored with value 0 by the first
    version; the objective now scores them by the largest level they passed."""
    objective = Objective("capacity", SLO.parse("ttft_p99=2000,tpot_p99=100"))
    frozen = {t.number: t for t in trials(AZURE / "azure.db")}
    scored = {}
    for number, result in results(AZURE / "azure.db").items():
        if result.load_search is None:
            continue
        scored[number] = objective.values(result)[0]
        if result.failure is FailureKind.CRASHED:
            assert "pool memory leak detected" in result.message and frozen[number].values == [0.0]
    crashed = {n for n, r in results(AZURE / "azure.db").items() if r.failure is FailureKind.CRASHED}
    assert crashed == {2, 4}
    two_x = 9.5144
    assert scored[2] == pytest.approx(two_x / 2, rel=1e-3)  # 1x passed, 2x missed TTFT, then it died
    assert scored[4] == pytest.approx(two_x, rel=1e-3)  # 1x and 2x passed before it died
    assert all(scored[n] == pytest.approx(two_x, rel=1e-3) for n in (0, 1, 5, 6))


def test_the_cold_boot_guard_reads_the_real_record_as_measured() -> None:
    """On the real 2-GPU record: the fresh machine's first wave (129 s boots, replays 30 % slower) is cold,
    and its two ratios are the ones a study would measure again; the trace study, whose first boots had
    the compile caches loaded (47-50 s), has no cold trial."""
    from autotune.study.cold import cold_trials, superseded, to_remeasure

    ray2 = trials(RAY / "ray2.db")
    assert cold_trials(ray2) == {0, 1} and superseded(ray2) == set()
    assert to_remeasure(ray2) == [0.6, 0.7]
    assert cold_trials(trials(AZURE / "azure.db")) == set()
    assert cold_trials(trials(RAY / "ray1.db")) == set()  # a warm machine: nothing to re-measure

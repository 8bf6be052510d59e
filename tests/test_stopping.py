"""The stopping rule (autotune/study/stopping.py) on synthetic surfaces, and a study that uses it:
it stops when the optimum is known and says why, always measures SGLang's default, never passes
--trials, repeats the default and the best for the noise band, and resumes to the same verdict."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import optuna
import pytest

from autotune.hardware import load_gpu
from autotune.measure.serving_metrics import summarize
from autotune.models import load_model
from autotune.sglang_facts import DEFAULT_RATIO, RATIO
from autotune.study.controller import measured_points, run_study
from autotune.study.storage import storage_for
from autotune.study.objective import Objective
from autotune.study.plan import build_plan
from autotune.study.stopping import BRACKETED, FLAT, NoiseBand, Point, judge, noise_band, points_from
from autotune.study.trial_attrs import ATTR_ENQUEUED_AS, ENQUEUED_REPEAT, STUDY_NOISE_BAND, STUDY_STOPPED_BECAUSE
from autotune.workloads import load_workload_yaml
from workers.sim_fast import InProcessRunner
from workers.trial import TrialResult, TrialSpec

REPO = Path(__file__).resolve().parents[1]
TINY = Path(__file__).parent / "data" / "tiny-workloads.yaml"
optuna.logging.set_verbosity(optuna.logging.WARNING)
BAND = NoiseBand(0.01, 0.01)


def pts(*pairs: tuple[float, float | None]) -> list[Point]:
    return points_from(pairs)


# ---------------------------------------------------------------------------------------------- the rule


def test_a_peak_with_worse_neighbours_on_both_sides_is_bracketed() -> None:
    verdict = judge(pts((0.3, 90.0), (0.55, 100.0), (0.8, 95.0)), BAND, low=0.01)
    assert verdict.stop and verdict.reason == BRACKETED and verdict.best_ratio == 0.55
    assert "0.300 (-10.0%)" in verdict.detail and "0.800 (-5.0%)" in verdict.detail


def test_a_peak_missing_a_worse_neighbour_on_one_side_goes_on() -> None:
    verdict = judge(pts((0.55, 100.0), (0.8, 95.0)), BAND, low=0.01)
    assert not verdict.stop and "nothing worse measured within 0.25 below 0.550" in verdict.detail


def test_a_worse_neighbour_far_away_does_not_bracket_a_sharp_peak() -> None:
    # The simulated 26B-A4B chat surface: 0.8 measured best, worse at 1.0 and at 0.5, its peak at 0.73 (8 % above
    # 0.8) between them. A neighbour more than MAX_BRACKET_GAP away leaves room for such a peak: go on.
    far = judge(pts((0.5, 88.6), (0.8, 92.3), (1.0, 88.0)), BAND, low=0.01)
    assert not far.stop and "0.500 is 0.300 away" in far.detail
    near = judge(pts((0.6, 98.6), (0.8, 92.3), (0.73, 100.0), (1.0, 88.0)), BAND, low=0.01)
    assert near.stop and near.reason == BRACKETED and near.best_ratio == 0.73
    assert judge(pts((0.5, 88.6), (0.8, 92.3), (1.0, 88.0)), BAND, low=0.01, max_gap=0.3).stop  # 0.3 accepts it


def test_a_flat_surface_stops_as_flat_but_one_point_is_not_a_surface() -> None:
    flat = judge(pts((0.2, 100.0), (0.8, 99.5)), BAND, low=0.01)
    assert flat.stop and flat.reason == FLAT
    assert not judge(pts((0.5, 100.0)), BAND, low=0.01).stop


def test_an_edge_optimum_at_a_feasible_bound_is_bracketed_by_the_bound() -> None:
    # Monotone rising to 1.0: the bound is the other side.
    rising = judge(pts((0.5, 80.0), (0.8, 90.0), (1.0, 100.0)), BAND, low=0.01)
    assert rising.stop and rising.reason == BRACKETED and "the feasible bound 1.000" in rising.detail
    falling = judge(pts((0.01, 100.0), (0.2, 90.0)), BAND, low=0.01)
    assert falling.stop and "the feasible bound 0.010" in falling.detail
    # Near the bound but not at it: the sampler goes on (something better may lie beyond).
    assert not judge(pts((0.8, 90.0), (0.95, 100.0)), BAND, low=0.01).stop


def test_the_noise_band_decides_what_counts_as_worse() -> None:
    points = pts((0.3, 97.0), (0.55, 100.0), (0.8, 97.5))
    assert judge(points, BAND, low=0.01).reason == BRACKETED  # 2.5-3 % worse than a 1 % band
    wide = NoiseBand(0.05, 0.01)
    assert judge(points, wide, low=0.01).reason == FLAT  # within a 5 % band: no ratio is better


def test_a_plateau_within_the_band_is_bracketed_by_its_outer_neighbours() -> None:
    verdict = judge(pts((0.1, 70.0), (0.3, 99.6), (0.5, 100.0), (0.7, 75.0)), BAND, low=0.01)
    assert verdict.stop and verdict.reason == BRACKETED and "0.300-0.500 within the band" in verdict.detail


def test_lost_runs_count_as_worse_and_a_completed_retry_outranks_a_lost_run() -> None:
    verdict = judge(pts((0.3, None), (0.5, 100.0), (0.7, 90.0)), BAND, low=0.01)
    assert verdict.stop and "0.300 (clearly lost)" in verdict.detail
    assert pts((0.5, None), (0.5, 100.0))[0] == Point(0.5, (100.0,))
    assert not judge(pts((0.1, None), (0.8, None)), BAND, low=0.01).stop


def test_repeats_set_the_band_above_the_floor_and_the_floor_is_checked() -> None:
    band = noise_band(pts((0.8, 100.0), (0.8, 104.0), (0.5, 110.0)), floor=0.01)
    assert band.share == pytest.approx(4 / 102) and band.spreads == ((0.8, pytest.approx(4 / 102)),)
    assert "measured" in band.describe()
    assert noise_band(pts((0.8, 100.0), (0.8, 100.0)), floor=0.01).share == 0.01
    with pytest.raises(ValueError, match="noise-floor"):
        noise_band([], floor=0.7)


# ---------------------------------------------------------------------------------------------- the study


def surface_result(spec: TrialSpec, surface: Callable[[float], float]) -> TrialResult:
    ratio = float(spec.server.flags["swa-full-tokens-ratio"])
    summary = dataclasses.replace(summarize([], 1.0), completed=1, total_throughput=surface(ratio))
    return TrialResult(trial_id=spec.trial_id, ok=True, backend="sim-fast", simulated=True, command=(), summary=summary)


class SurfaceRunner:
    """Trials whose throughput is `surface(ratio)`: the rule on a surface of our choosing."""

    def __init__(self, surface: Callable[[float], float], capacity: int = 1) -> None:
        self.surface, self.capacity, self.pending, self.ratios = surface, capacity, [], []
        self.lookahead = 0

    def submit(self, spec: TrialSpec) -> None:
        self.ratios.append(float(spec.server.flags["swa-full-tokens-ratio"]))
        self.pending.append(spec)

    def servers(self) -> list[dict]:
        return []

    def wait_one(self, timeout_s: float) -> TrialResult | None:
        return surface_result(self.pending.pop(0), self.surface) if self.pending else None

    def close(self) -> None:
        pass


def chat_plan(n_trials: int, **kwargs):
    [chat] = [w for w in load_workload_yaml(TINY) if w.name == "tiny-chat"]
    return build_plan(model=load_model("26B-A4B"), model_ref="26B-A4B", gpu=load_gpu("H100-80GB"), workload=chat,
                      backend="sim-fast", objective=Objective("throughput"), n_trials=n_trials, **kwargs)


def test_a_flat_study_stops_after_the_first_ratios_and_their_repeats(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'a.db'}"
    plan = chat_plan(8)
    first = plan.first_ratios()
    runner = SurfaceRunner(lambda r: 1004.0 if r == first[0] else 1000.0)  # the analytic guess best, within the band
    outcome = run_study(plan, storage_for(url), runner)
    assert DEFAULT_RATIO in runner.ratios  # SGLang's default is always measured
    assert runner.ratios[:2] == first
    repeats = runner.ratios[2:]
    assert sorted(repeats) == sorted(first) and len(repeats) == 2  # the default and the best, once each
    assert outcome.trials_finished == 4 and outcome.stopped_because.startswith(FLAT)
    assert outcome.noise_band["share"] == 0.01 and outcome.noise_band["spreads"]
    study = optuna.load_study(study_name=plan.name, storage=url)
    assert study.user_attrs[STUDY_STOPPED_BECAUSE] == outcome.stopped_because
    assert study.user_attrs[STUDY_NOISE_BAND] == outcome.noise_band
    assert sum(t.user_attrs.get(ATTR_ENQUEUED_AS) == ENQUEUED_REPEAT for t in study.trials) == 2
    # Resumed with a higher ceiling, the stored trials give the same verdict: nothing runs.
    again = SurfaceRunner(lambda r: 1000.0)
    resumed = run_study(dataclasses.replace(plan, n_trials=12), storage_for(url), again)
    assert again.ratios == [] and resumed.stopped_because == outcome.stopped_because


def test_a_peak_is_searched_for_until_bracketed_and_the_ceiling_holds(tmp_path: Path) -> None:
    def peak(ratio: float) -> float:  # sharp, away from both first ratios
        return 1000.0 - 2000.0 * abs(ratio - 0.35)

    plan = chat_plan(8)
    runner = SurfaceRunner(peak)
    outcome = run_study(plan, storage_for(f"sqlite:///{tmp_path / 'b.db'}"), runner)
    assert len(runner.ratios) <= 8 and DEFAULT_RATIO in runner.ratios
    assert outcome.stopped_because.split(":")[0] in (BRACKETED, "ceiling")
    # The old behaviour: every trial runs, and the summary says what the rule would have said.
    runner = SurfaceRunner(lambda r: 1000.0)
    outcome = run_study(chat_plan(5, stop_when_known=False), storage_for(f"sqlite:///{tmp_path / 'c.db'}"), runner)
    assert len(runner.ratios) == 5 and outcome.stopped_because.startswith("ran every trial (--run-all-trials)")


def test_a_tight_ceiling_leaves_no_room_for_repeats(tmp_path: Path) -> None:
    runner = SurfaceRunner(lambda r: 1000.0)
    outcome = run_study(chat_plan(2), storage_for(f"sqlite:///{tmp_path / 'd.db'}"), runner)
    assert len(runner.ratios) == 2 and outcome.stopped_because.startswith(FLAT)
    assert outcome.noise_band["spreads"] == []


def test_a_sim_fast_study_stops_early_and_says_why(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'e.db'}"
    plan = chat_plan(8)
    runner = InProcessRunner(2)
    try:
        outcome = run_study(plan, storage_for(url), runner)
    finally:
        runner.close()
    assert outcome.trials_finished < 8 and outcome.stopped_because.split(":")[0] in (BRACKETED, FLAT)
    study = optuna.load_study(study_name=plan.name, storage=url)
    points = measured_points(study)
    assert any(abs(p.ratio - DEFAULT_RATIO) < 1e-9 for p in points)
    assert all(set(t.params) == {RATIO} for t in study.trials)


def test_autotune_run_prints_why_it_stopped_and_the_band_and_json_carries_them(tmp_path: Path) -> None:
    workload = tmp_path / "chat.yaml"
    workload.write_text(TINY.read_text().split("- name: tiny-long")[0])
    args = [sys.executable, "-m", "autotune.cli.app", "run", "--model", "26B-A4B", "--backend", "sim-fast",
            "--workload", str(workload), "--storage", f"sqlite:///{tmp_path / 'a.db'}", "--log-dir", str(tmp_path / "logs")]
    env = {**os.environ, "COLUMNS": "250"}
    run = subprocess.run(args, capture_output=True, text=True, timeout=300, cwd=REPO, env=env)
    assert run.returncode == 0, run.stdout + run.stderr
    assert re.search(r"tiny-chat: stopped after \d trial\(s\): (bracketed|flat): ", run.stdout), run.stdout
    assert "tiny-chat: noise band ±1.0% (the floor; repeat spread" in run.stdout
    again = subprocess.run([*args, "--json"], capture_output=True, text=True, timeout=300, cwd=REPO, env=env)
    [row] = json.loads(again.stdout)["rows"]
    assert row["stopped_because"].split(":")[0] in (BRACKETED, FLAT) and row["noise_band"]["share"] == 0.01
    bad = subprocess.run([*args, "--noise-floor", "2"], capture_output=True, text=True, timeout=300, cwd=REPO, env=env)
    assert bad.returncode == 2 and "--noise-floor 2.0: give a share of the best value in [0, 0.5)" in bad.stderr


# ---------------------------------------------------------------------------------------------- a cold machine


class ColdMachineRunner(SurfaceRunner):
    """Real-server results on a machine whose first `cold` boots compile kernels: they boot in 129 s and
    replay slower (measured: 22 % lower on a flat workload, docs/real-gpu/ray.md); later boots take 44 s."""

    def __init__(self, surface: Callable[[float], float], cold: int, capacity: int = 1) -> None:
        super().__init__(surface, capacity)
        self.cold, self.booted = cold, 0

    def wait_one(self, timeout_s: float) -> TrialResult | None:
        if not self.pending:
            return None
        result = surface_result(self.pending.pop(0), self.surface)
        cold = self.booted < self.cold
        self.booted += 1
        summary = dataclasses.replace(result.summary, total_throughput=result.summary.total_throughput * (0.78 if cold else 1.0))
        return dataclasses.replace(result, backend="sglang", simulated=False, boot_s=129.0 if cold else 44.0, summary=summary)


def test_runs_that_booted_cold_are_measured_again_and_then_left_out(tmp_path: Path) -> None:
    """On a flat surface, the machine's first two (cold) runs read 22 % low. Without a guard the study
    called the surface bracketed and reported a gain over SGLang's default that was only the cold
    machine; with it, both ratios are measured again warm, the cold runs leave the points and the means,
    and the study stops as flat."""
    from autotune.study.cold import cold_trials, superseded
    from autotune.study.controller import outcome_of
    from autotune.study.trial_attrs import ENQUEUED_COLD

    url = f"sqlite:///{tmp_path / 'cold.db'}"
    plan = chat_plan(8)
    first = plan.first_ratios()
    runner = ColdMachineRunner(lambda r: 1000.0, cold=2)
    outcome = run_study(plan, storage_for(url), runner)
    assert runner.ratios[:2] == first
    study = optuna.load_study(study_name=plan.name, storage=url)
    # Both first ratios ran again warm: SGLang's default as its noise-band repeat, the other as a re-measure
    # once the first warm boot (44 s against 129 s) showed the first two were cold.
    assert cold_trials(study.trials) == {0, 1} and superseded(study.trials) == {0, 1}
    remeasured = [t for t in study.trials if t.user_attrs.get(ATTR_ENQUEUED_AS) == ENQUEUED_COLD]
    assert [t.params[RATIO] for t in remeasured] == [r for r in first if r != DEFAULT_RATIO]
    assert outcome.stopped_because.startswith(FLAT)
    assert outcome.default_values[0] == pytest.approx(1000.0) and outcome.best_values[0] == pytest.approx(1000.0)
    assert all(len(p.values) >= 1 and min(p.values) == pytest.approx(1000.0) for p in measured_points(study))
    assert outcome.trials_finished == len(runner.ratios) <= 8
    assert outcome_of(study, plan).best_values == outcome.best_values  # the stored trials say the same on resume
    assert [p.cold for p in outcome.points] == [True, True] + [False] * (len(outcome.points) - 2)
    from autotune.cli.chart import ratio_chart

    only_cold = [p for p in outcome.points if p.cold][:1]  # a ratio with no warm run shows the mark
    chart = ratio_chart("t", only_cold, unit="tok/s", default_ratio=DEFAULT_RATIO, best_ratio=None).plain
    assert "booted cold: reads low" in chart


def test_simulated_and_uniformly_warm_studies_measure_nothing_twice_for_coldness(tmp_path: Path) -> None:
    """No cold boot, no re-measure: the guard costs a study on a warm machine (or a simulator) nothing."""
    from autotune.study.trial_attrs import ENQUEUED_COLD

    url = f"sqlite:///{tmp_path / 'warm.db'}"
    plan = chat_plan(8)
    run_study(plan, storage_for(url), ColdMachineRunner(lambda r: 1000.0, cold=0))
    study = optuna.load_study(study_name=plan.name, storage=url)
    assert not any(t.user_attrs.get(ATTR_ENQUEUED_AS) == ENQUEUED_COLD for t in study.trials)

"""Capacity at an SLO (`--objective capacity`): the bounded load search, on one boot per trial."""

from __future__ import annotations

import dataclasses
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from autotune.cli.app import app
from autotune.measure.serving_metrics import SLO
from autotune.study.objective import Objective
from autotune.workloads import PoissonRate, RequestSpec, TraceTimes, Workload, get_preset, random_ids_workload
from workers.load_search import (
    LoadLevel,
    LoadSearchResult,
    LoadSearchSpec,
    NotArrivalDriven,
    next_multiplier,
    offered_rate,
    p99_already_broken,
    require_arrival_driven,
    run_search,
    scaled,
)
from workers.sim_fast import run_sim_fast
from workers.spec import ServerSpec
from workers.trial import TrialResult, TrialSpec

SLO_TEXT = "ttft_p99=3000,tpot_p99=100"
SLO_LIMITS = SLO.parse(SLO_TEXT)


def poisson(num_prompts: int = 80, rate: float = 4.0) -> Workload:
    """Long prompts at a Poisson rate: the full pool's share decides how many prefill at once."""
    w = random_ids_workload(name="pois-long", num_prompts=num_prompts, input_len=4096, output_len=256,
                            range_ratio=0.5, seed=1)
    return dataclasses.replace(w, arrival=PoissonRate(rate, seed=1))


def level(multiplier: float, passed: bool) -> LoadLevel:
    return LoadLevel(multiplier, multiplier, multiplier, 1.0, 1.0, 1, 0, 1.0, passed, "" if passed else "P99 TTFT")


def threshold_search(capacity: float, **spec) -> LoadSearchResult:
    return run_search(LoadSearchSpec(slo=SLO_LIMITS, **spec), lambda m: level(m, m <= capacity))


@pytest.mark.parametrize("capacity", [0.01, 0.3, 0.99, 1.0, 1.7, 2.5, 3.9, 7.0, 100.0])
def test_the_search_is_bounded_and_monotone(capacity: float) -> None:
    result = threshold_search(capacity)
    levels = result.levels
    assert 1 <= len(levels) <= 6 and levels[0].multiplier == 1.0
    assert len({lv.multiplier for lv in levels}) == len(levels)  # never the same level twice
    passed = [lv.multiplier for lv in levels if lv.passed]
    failed = [lv.multiplier for lv in levels if not lv.passed]
    assert all(p < f for p in passed for f in failed)  # a threshold surface: passes below, fails above
    if passed:
        assert result.best.multiplier == max(passed) <= capacity
        assert result.capacity_rps == max(passed)
    else:
        assert result.capacity_rps == 0 and "no load level met the SLO" in result.describe()
    assert result.open_ended == (not failed)
    if 1.0 <= capacity < 16:  # bracketed: the answer is within the bracket the levels left
        assert min(f for f in failed) / max(passed) <= 1.5


def test_levels_cap_and_resolution() -> None:
    assert len(threshold_search(2.71, max_levels=3).levels) == 3
    assert next_multiplier([level(1.0, True), level(1.05, False)], LoadSearchSpec(slo=SLO_LIMITS)) is None
    # Below `lowest` the search gives up: capacity 0.
    assert next_multiplier([level(1 / 16, False)], LoadSearchSpec(slo=SLO_LIMITS)) is None


def test_per_gpu_divides_by_tp() -> None:
    result = LoadSearchResult((level(2.0, True), level(4.0, False)), gpus=2)
    assert result.capacity_rps == 2.0 and result.capacity_rps_per_gpu == 1.0
    assert LoadSearchResult.from_dict(json.loads(json.dumps(result.to_dict()))) == result


def test_early_break_never_breaks_a_level_that_would_pass() -> None:
    """p99_already_broken on a prefix of the values implies numpy's P99 of all of them is over."""
    rng = np.random.default_rng(0)
    for _ in range(400):
        total = int(rng.integers(1, 300))
        values = rng.exponential(1000, size=total)
        limit = float(rng.uniform(100, 5000))
        prefix = values[: int(rng.integers(0, total + 1))]
        if p99_already_broken(list(prefix), total, limit):
            assert np.percentile(values, 99) > limit
        if p99_already_broken(list(values), total, limit) is False:
            assert np.percentile(values, 99) <= limit or (values > limit).sum() < total - math.floor(0.99 * (total - 1))


def test_load_scales_a_trace_and_a_poisson_rate() -> None:
    w = poisson(rate=2.0)
    assert offered_rate(scaled(w, 3)) == 6.0 and scaled(w, 3, warmup=False).warmup == 0
    trace = Workload("t", tuple(RequestSpec(i, 10, 10, arrival_s=float(i)) for i in range(11)), TraceTimes(1.0))
    assert offered_rate(trace) == pytest.approx(1.0) and offered_rate(scaled(trace, 2.5)) == pytest.approx(2.5)
    assert scaled(trace, 2.5).arrival == TraceTimes(2.5)


def test_closed_loop_workloads_and_a_missing_slo_are_refused() -> None:
    with pytest.raises(NotArrivalDriven, match="closed-loop.*request_rate"):
        require_arrival_driven(get_preset("chat"))
    with pytest.raises(NotArrivalDriven, match="all at once"):
        require_arrival_driven(dataclasses.replace(poisson(), arrival=PoissonRate(math.inf)))
    with pytest.raises(ValueError, match="--slo ttft_p99=MS,tpot_p99=MS"):
        Objective("capacity")
    with pytest.raises(ValueError, match="--slo ttft_p99=MS,tpot_p99=MS"):
        Objective("capacity", SLO(ttft_ms=100))


def test_the_cli_refuses_with_the_fix(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'a.db'}"
    base = ["run", "--model", "26B-A4B", "--backend", "sim-fast", "--storage", url, "--objective", "capacity"]
    result = CliRunner().invoke(app, [*base, "--workload", "chat", "--slo", SLO_TEXT], env={"COLUMNS": "200"})
    assert result.exit_code == 2 and "closed-loop" in result.output and "request_rate" in result.output
    result = CliRunner().invoke(app, [*base, "--workload", "chat"], env={"COLUMNS": "200"})
    assert result.exit_code == 2 and "--slo ttft_p99=MS,tpot_p99=MS" in " ".join(result.output.split())


def sim_fast_trial(ratio: float, workload: Workload, **search) -> TrialResult:
    spec = TrialSpec(
        trial_id=f"r{ratio}", workload=workload, slo=SLO_LIMITS, time_budget_s=120.0,
        server=ServerSpec(backend="sim", model_path="26B-A4B", flags={"swa-full-tokens-ratio": ratio},
                          sim_flags={"gpu": "H100-80GB"}),
        load_search=LoadSearchSpec(slo=SLO_LIMITS, **search),
    )
    return run_sim_fast(spec)


def test_capacity_differs_by_ratio_in_sim_fast() -> None:
    """SIMULATED: on long Poisson prompts the ratio moves the load that meets the SLO, and every
    level is kept in the trial's result."""
    results = {ratio: sim_fast_trial(ratio, poisson()) for ratio in (0.4, 1.0)}
    for result in results.values():
        assert result.ok and result.load_search is not None and len(result.load_search.levels) <= 6
        assert result.load_search.capacity_rps > 0
        best = result.load_search.best
        # The trial's summary is the largest passing level's.
        assert result.summary.ttft.p99 == pytest.approx(best.ttft_p99_ms)
        again = TrialResult.from_dict(json.loads(json.dumps(result.to_dict())))
        assert again.load_search == result.load_search
    low, high = (results[r].load_search.capacity_rps for r in (0.4, 1.0))
    assert low > 1.2 * high
    assert Objective("capacity", SLO_LIMITS).values(results[0.4]) == [low]


def test_no_passing_level_scores_zero_and_says_so() -> None:
    result = sim_fast_trial(0.8, poisson(num_prompts=40, rate=50.0), max_levels=3)
    assert result.ok and result.load_search.capacity_rps == 0
    assert "no load level met the SLO" in result.message
    assert Objective("capacity", SLO_LIMITS).values(result) == [0.0]


def test_run_reports_capacity_per_ratio_and_json_levels(tmp_path: Path) -> None:
    spec = tmp_path / "pois.yaml"
    spec.write_text("- {name: pois-long, num_prompts: 80, input_len: 4096, output_len: 256, range_ratio: 0.5, "
                    "request_rate: 4, seed: 1}\n")
    url = f"sqlite:///{tmp_path / 'a.db'}"
    args = ["run", "--model", "26B-A4B", "--backend", "sim-fast", "--storage", url, "--workload", str(spec),
            "--objective", "capacity", "--slo", SLO_TEXT, "--trials", "3", "--log-dir", str(tmp_path / "logs")]
    result = CliRunner().invoke(app, args, env={"COLUMNS": "220"})
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "req/s/GPU at SLO" in text and "capacity at TTFT p99 3000 ms, TPOT p99 100 ms [SIMULATED]" in text
    assert re.search(r"0\.800 │ +[\d.]+ │ +\+0\.0%", text)  # the default's row: its gain over itself
    result = CliRunner().invoke(app, [*args, "--json"], env={"COLUMNS": "220"})
    assert result.exit_code == 0, result.output
    row = json.loads(result.stdout)["rows"][0]
    assert row["objective"] == "req/s/GPU at SLO" and row["slo"] == {"ttft_p99_ms": 3000.0, "tpot_p99_ms": 100.0}
    for point in row["points"]:
        if point["status"] == "complete":
            levels = point["levels"]
            assert levels and levels[0]["multiplier"] == 1.0
            assert point["value"] == max((lv["offered_rps"] for lv in levels if lv["passed"]), default=0.0)


@pytest.mark.slow
@pytest.mark.usefixtures("no_leftover_servers")
def test_levels_run_on_one_boot_of_the_http_sim_server(tmp_path: Path) -> None:
    """Through the real HTTP path (backend sim): every level is a replay against the same server process."""
    from conftest import TAG
    from workers.trial import run_trial

    phases: list[str] = []
    spec = TrialSpec(
        trial_id="cap", workload=poisson(num_prompts=40), slo=SLO_LIMITS, time_budget_s=60.0, log_dir=str(tmp_path),
        boot_timeout_s=60, hang_timeout_s=30,
        server=ServerSpec(backend="sim", model_path="26B-A4B", flags={"swa-full-tokens-ratio": 0.8},
                          sim_flags={"gpu": "H100-80GB", "time-scale": 20}, env=TAG),
        load_search=LoadSearchSpec(slo=SLO_LIMITS, max_levels=4),
    )
    result = run_trial(spec, lambda phase, done, total: phases.append(phase))
    assert result.ok, result.message
    levels = result.load_search.levels
    assert 2 <= len(levels) <= 4 and levels[0].multiplier == 1.0
    assert any(lv.passed for lv in levels) and any(not lv.passed for lv in levels)
    assert phases.count("boot") == 1 and {f"load {lv.multiplier:g}x" for lv in levels} <= set(phases)
    log = Path(result.log_path).read_text()
    assert log.count("The server is fired up and ready to roll!") == 1  # one boot, one process
    assert result.port is not None and f"{result.port}" in " ".join(result.command)
    # The one server counted every request the levels sent (cut-short levels' unsent ones excepted).
    sent = sum(lv.completed for lv in levels)
    assert result.server_counters["sglang:num_requests_total"] >= sent


def test_the_dashboard_plots_load_against_latency_per_ratio() -> None:
    from autotune.dashboard.plots import StudyView, TrialView, study_figures

    def trial(number: int, ratio: float, capacity: float) -> TrialView:
        levels = threshold_search(capacity).to_dict()
        return TrialView(number, "COMPLETE", ratio, (capacity,), {"load_search": levels})

    view = StudyView("s", {"objective": "capacity", "slo": {"ttft_p99_ms": 3000.0, "tpot_p99_ms": 100.0},
                           "simulated": True}, (trial(0, 0.4, 2.5), trial(1, 0.8, 1.2)))
    figure = study_figures(view)["autotune-capacity"]
    names = {trace.name for trace in figure.data}
    assert names == {"ratio 0.400", "ratio 0.800 (default)"} and len(figure.data) == 4  # TTFT and TPOT each
    assert {shape.y0 for shape in figure.layout.shapes} == {3000.0, 100.0}  # the SLO's lines
    assert "SIMULATED" in figure.layout.title.text
    assert "autotune-capacity" not in study_figures(StudyView("t", {"objective": "throughput"}, ()))


@pytest.mark.slow
def test_a_time_scaled_simulated_server_sees_the_workloads_arrival_rate(tmp_path) -> None:
    """The `sim` server's clock runs --time-scale times the wall's; a Poisson workload must reach it
    at its own rate, not time-scale times slower (the replay paces arrivals for the server's clock)."""
    from workers.spec import ServerSpec
    from workers.trial import TrialSpec, run_trial

    rate = 20.0
    workload = Workload(name="pois", requests=tuple(RequestSpec(index=i, prompt_len=128, output_len=16) for i in range(100)),
                        arrival=PoissonRate(rate, seed=1))
    server = ServerSpec(backend="sim", model_path="gemma-4-26B-A4B-it", flags={"swa-full-tokens-ratio": 0.8},
                        sim_flags={"gpu": "H100-80GB", "time-scale": 10.0})
    result = run_trial(TrialSpec(trial_id="paced", server=server, workload=workload, log_dir=str(tmp_path)))
    assert result.ok, result.message
    # Light load: requests finish about as fast as they arrive, on the server's clock.
    assert result.summary.request_throughput == pytest.approx(rate, rel=0.35)


@pytest.mark.slow
@pytest.mark.usefixtures("no_leftover_servers")
def test_a_server_that_dies_mid_search_keeps_the_levels_it_passed(tmp_path: Path) -> None:
    """Real SGLang 0.5.17 died during a load level above its capacity (docs/real-gpu/traffic.md). The
    levels it passed before still measure the ratio: the trial says it crashed, keeps them, and scores
    their capacity, not 0 (a 0 had made one run of SGLang's default look half as good as its twin)."""
    import os
    import signal

    from conftest import TAG
    from workers.failures import FailureKind
    from workers.trial import run_trial

    servers = []
    killed: list[str] = []

    def progress(phase: str, done: int, total: int) -> None:
        # The first request answered at the second level: the first level has passed by then.
        if phase.startswith("load ") and phase != "load 1x" and not killed:
            killed.append(phase)
            os.killpg(os.getpgid(servers[0].pid), signal.SIGKILL)

    light = poisson(num_prompts=30, rate=0.5)  # 1x passes with room to spare
    spec = TrialSpec(
        trial_id="dies", workload=light, slo=SLO_LIMITS, time_budget_s=60.0, log_dir=str(tmp_path),
        boot_timeout_s=60, hang_timeout_s=20,
        server=ServerSpec(backend="sim", model_path="26B-A4B", flags={"swa-full-tokens-ratio": 0.8},
                          sim_flags={"gpu": "H100-80GB", "time-scale": 20}, env=TAG),
        load_search=LoadSearchSpec(slo=SLO_LIMITS, max_levels=4),
    )
    result = run_trial(spec, progress, on_process=servers.append)
    assert killed, "the search never reached a second level"
    assert not result.ok and result.failure is FailureKind.CRASHED
    passed = [lv for lv in result.load_search.levels if lv.passed]
    assert passed and passed[0].multiplier == 1.0
    assert "before that, capacity" in result.message
    assert Objective("capacity", SLO_LIMITS).values(result) == [result.load_search.capacity_rps] != [0.0]

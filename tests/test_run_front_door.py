"""`autotune run` at the front door: your candidates first, a chart at the end, --json for scripts,
hopeless configurations refused before anything is stored, trials bounded in time, and SIGTERM
handled like Ctrl-C (trials re-queued, exit 143, no Ray stack dump, no server left)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from autotune.sglang_facts import RATIO
from autotune.study.trial_attrs import ATTR_ENQUEUED_AS, ATTR_FINAL, ATTR_RETRY_OF
from autotune.workloads import get_preset
from workers.failures import FailureKind
from workers.sim_fast import run_sim_fast
from workers.spec import ServerSpec
from workers.trial import TrialSpec, run_trial

from conftest import sim_servers

pytestmark = pytest.mark.usefixtures("no_leftover_servers")

REPO = Path(__file__).resolve().parents[1]
TINY = Path(__file__).parent / "data" / "tiny-workloads.yaml"
CLI = [sys.executable, "-m", "autotune.cli.app", "run", "--model", "26B-A4B"]


def autotune(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, cwd=REPO, timeout=timeout)


def load_study(url: str, workload: str) -> optuna.Study:
    [name] = [s.study_name for s in optuna.get_all_study_summaries(storage=url) if f"|{workload}|" in s.study_name]
    return optuna.load_study(study_name=name, storage=url)


def test_try_ratios_are_measured_first_and_the_count_grows_to_hold_the_baseline(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'a.db'}"
    result = autotune("--backend", "sim-fast", "--workload", f"{TINY}", "--trials", "3", "--try", "0.3,1.0",
                      "--storage", url, "--log-dir", str(tmp_path / "logs"), "--json")
    assert result.returncode == 0, result.stderr
    assert "--trials 3 grown to 4" in result.stderr
    for name in ("tiny-chat", "tiny-long"):
        study = load_study(url, name)
        ratios = [t.params[RATIO] for t in sorted(study.get_trials(), key=lambda t: t.number)]
        assert ratios[:2] == [0.3, 1.0], name  # the user's candidates, in the order given
        assert 0.8 in ratios and len(ratios) in (3, 4), name  # SGLang's default is still measured (and the analytic guess)
    report = json.loads(result.stdout)  # stdout holds the JSON alone
    assert report["simulated"] is True
    for row in report["rows"]:
        assert {round(p["ratio"], 3) for p in row["points"]} >= {0.3, 0.8, 1.0}
        assert row["best_value"] == max(p["value"] for p in row["points"] if p["status"] == "complete")


def test_the_run_ends_with_a_chart_marking_the_default_and_the_best(tmp_path: Path) -> None:
    result = autotune("--backend", "sim-fast", "--workload", f"{TINY}", "--trials", "3",
                      "--storage", f"sqlite:///{tmp_path / 'a.db'}", "--log-dir", str(tmp_path / "logs"))
    assert result.returncode == 0, result.stderr
    assert "tiny-chat [SIMULATED] (total tok/s by --swa-full-tokens-ratio)" in result.stdout
    chart = result.stdout.split("tiny-chat [SIMULATED] (total")[1].split("\n\n")[0]
    bars = [line for line in chart.splitlines() if "│" in line]
    assert len(bars) >= 2 and any("SGLang default" in line for line in bars) and any("◀ best" in line for line in bars)
    # The plan comes first: what will be measured, before any trial.
    assert result.stdout.index("Plan:") < result.stdout.index("trial 0")


def test_a_hopeless_configuration_is_refused_before_anything_is_stored(tmp_path: Path) -> None:
    db = tmp_path / "a.db"
    result = subprocess.run([sys.executable, "-m", "autotune.cli.app", "run", "--model", "31B", "--backend", "sim-fast",
                             "--storage", f"sqlite:///{db}", "--log-dir", str(tmp_path / "logs")],
                            capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 2
    message = " ".join(result.stderr.split())
    assert "cannot serve 'chat'" in message and "KV budget is 1.32 GiB" in message and "--tp 2" in message
    assert "Traceback" not in result.stderr
    assert not db.exists() and not (tmp_path / "logs").exists()


def test_a_trial_over_its_time_budget_ends_as_too_slow_in_virtual_and_real_time(tmp_path: Path) -> None:
    workload = get_preset("chat", num_prompts=40, concurrency=20)
    server = ServerSpec(backend="sim", model_path="gemma-4-26B-A4B-it", flags={"swa-full-tokens-ratio": 0.8},
                        sim_flags={"gpu": "H100-80GB"})
    fast = run_sim_fast(TrialSpec(trial_id="fast", server=server, workload=workload, time_budget_s=5.0))
    assert fast.failure is FailureKind.TOO_SLOW and fast.stopped_early
    assert fast.replay_s < 10 and "time budget of 5 s" in fast.message
    # The same through a real HTTP server, on the wall clock.
    started = time.monotonic()
    real = run_trial(TrialSpec(trial_id="real", server=server, workload=workload, time_budget_s=2.0,
                               log_dir=str(tmp_path)))
    assert real.failure is FailureKind.TOO_SLOW and real.stopped_early
    assert real.summary is not None and real.summary.completed < len(workload.requests)
    assert time.monotonic() - started < 30


@pytest.mark.slow
def test_sigterm_stops_like_ctrl_c_requeues_the_trials_and_resumes(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'a.db'}"
    args = [*CLI, "--backend", "sim", "--runner", "ray", "--workload", f"{TINY}", "--trials", "2", "--time-scale", "1",
            "--storage", url, "--log-dir", str(tmp_path / "logs")]
    tuner = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO)
    try:
        deadline = time.monotonic() + 180
        while not sim_servers():  # a trial's server is up: a trial is in flight
            assert tuner.poll() is None and time.monotonic() < deadline, tuner.stdout.read()
            time.sleep(0.2)
        time.sleep(1.0)
        tuner.send_signal(signal.SIGTERM)
        out, _ = tuner.communicate(timeout=60)
    finally:
        if tuner.poll() is None:
            tuner.kill()
    assert tuner.returncode == 143, out
    assert "terminated (SIGTERM)" in out and "Run the same command again to resume" in out
    assert "*** SIGTERM received" not in out and "PC: @" not in out and "Traceback" not in out
    study = load_study(url, "tiny-chat")  # the first workload's study: the one interrupted
    stopped = [t for t in study.get_trials() if t.state == TrialState.FAIL]  # one per trial in flight (2 at once)
    assert 1 <= len(stopped) <= 2
    waiting = study.get_trials(states=(TrialState.WAITING,))
    for trial in stopped:
        assert trial.user_attrs[ATTR_FINAL] is False
        [again] = [t for t in waiting if t.user_attrs.get(ATTR_RETRY_OF) == trial.number]
        assert again.user_attrs[ATTR_ENQUEUED_AS] == "interrupted, run again"
    # Resumed: the stopped trial runs again at once (no heartbeat wait), and the study completes.
    resumed = subprocess.run([*args[:args.index("--time-scale")], "--time-scale", "20", *args[args.index("--storage"):]],
                             capture_output=True, text=True, cwd=REPO, timeout=300)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "left running by a tuner that died" not in resumed.stdout
    study = load_study(url, "tiny-chat")
    for trial in stopped:
        rerun = [t for t in study.get_trials() if t.user_attrs.get(ATTR_RETRY_OF) == trial.number]
        assert rerun and rerun[0].state == TrialState.COMPLETE and rerun[0].params == trial.params

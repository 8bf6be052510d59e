"""Objectives other than plain throughput, end to end through `autotune run` (sim-fast, SQLite)."""

from __future__ import annotations

from pathlib import Path

import optuna
from typer.testing import CliRunner

from autotune.cli.app import app

DATA = Path(__file__).parent / "data"
WORKLOADS = str(DATA / "tiny-workloads.yaml")


def run(tmp_path: Path, *args: str):
    url = f"sqlite:///{tmp_path / 'a.db'}"
    result = CliRunner().invoke(app, ["run", "--model", "26B-A4B", "--backend", "sim-fast", "--storage", url,
                                      "--workload", WORKLOADS, "--log-dir", str(tmp_path / "logs"), *args],
                                     env={"COLUMNS": "200"})
    return result, " ".join(result.output.split()), url


def test_pareto_keeps_throughput_and_ttft(tmp_path: Path) -> None:
    result, text, url = run(tmp_path, "--trials", "3", "--objective", "pareto")
    assert result.exit_code == 0, text
    study = optuna.load_study(study_name=[s.study_name for s in optuna.get_all_study_summaries(url)][0], storage=url)
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    assert study.best_trials and all(len(t.values) == 2 for t in study.best_trials)


def test_an_unreachable_slo_leaves_no_feasible_trial(tmp_path: Path) -> None:
    result, text, url = run(tmp_path, "--trials", "2", "--slo", "ttft_p99=0.001")
    assert result.exit_code == 0, text
    assert "no feasible trial" in text  # every trial broke the 0.001 ms P99 TTFT limit
    study = optuna.load_study(study_name=[s.study_name for s in optuna.get_all_study_summaries(url)][0], storage=url)
    assert all(t.user_attrs["constraints"][0] > 0 for t in study.trials)


def test_goodput_needs_per_request_limits(tmp_path: Path) -> None:
    result, text, _ = run(tmp_path, "--objective", "goodput")
    assert result.exit_code == 2 and "--slo ttft=MS" in text
    result, text, url = run(tmp_path, "--trials", "2", "--objective", "goodput", "--slo", "ttft=60000,tpot=500")
    assert result.exit_code == 0, text
    assert "good req/s" in text

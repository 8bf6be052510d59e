"""`autotune run --modes static,unified`: unified memory measured beside the tuned ratio on the
same workload, one report, and `autotune export` writing the winner with its evidence."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from autotune.study.modes import ModeOutcome, parse_modes, winner

REPO = Path(__file__).resolve().parents[1]
CRASH = "torch.AcceleratorError: CUDA error: device-side assert triggered"


def test_modes_parse_and_the_winner_is_the_higher_value() -> None:
    assert parse_modes(None) == ("static",) and parse_modes("static,unified") == ("static", "unified")
    with pytest.raises(ValueError, match="choose from static, unified"):
        parse_modes("static,swap")
    crashed = ModeOutcome("unified", "s::unified", 0.0, 1, f"crashed: {CRASH}", 0)
    assert winner(100.0, 0.5, crashed)["mode"] == "static"
    assert winner(100.0, 0.5, ModeOutcome("unified", "s::unified", 120.0, 1, None, 0))["mode"] == "unified"


def _autotune(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "autotune.cli.app", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=300, env={**__import__("os").environ, "PYTHONPATH": str(REPO)})


@pytest.mark.parametrize(("release", "won", "outcome"), [("0.5.23", "unified", "ok"), ("0.5.17", "static", CRASH)])
def test_a_sim_fast_study_records_both_and_export_picks_the_winner(tmp_path: Path, release, won, outcome) -> None:
    db = f"sqlite:///{tmp_path / 'a.db'}"
    run = _autotune("run", "--model", "26B-A4B", "--backend", "sim-fast", "--workload", "chat", "--trials", "2",
                    "--parallel", "1", "--modes", "static,unified", "--storage", db, "--log-dir", str(tmp_path / "logs"),
                    "--json", "--", "--sglang-version", release, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    row = json.loads(run.stdout)["rows"][0]
    modes = row["memory_modes"]
    assert modes["mode"] == won and modes["unified"]["trials"] == 1
    assert (modes["unified"]["failure"] or "ok").endswith(outcome)
    assert "unified-memory trial 0" in run.stderr
    export = _autotune("export", "--storage", db, "--out", str(tmp_path / "out"), "--allow-simulated", cwd=tmp_path)
    assert export.returncode == 0, export.stderr[-3000:]
    text = next((tmp_path / "out").glob("*chat.yaml")).read_text()
    flags = yaml.safe_load(text)
    assert (flags == {"enable-unified-memory": True}) == (won == "unified")
    assert ("swa-full-tokens-ratio" in flags) == (won == "static")
    assert f"# memory_mode: {won}" in text and "::unified" in text and outcome in text
    index = yaml.safe_load((tmp_path / "out" / "index.yaml").read_text())
    assert index["models"]["gemma-4-26B-A4B-it"]["chat"]["memory_mode"] == won


def test_unified_memory_by_hand_is_still_refused_with_modes(tmp_path: Path) -> None:
    run = _autotune("run", "--model", "26B-A4B", "--backend", "sim-fast", "--modes", "static,unified",
                    "--storage", f"sqlite:///{tmp_path / 'a.db'}", "--", "--enable-unified-memory", cwd=tmp_path)
    assert run.returncode == 2 and "--enable-unified-memory" in run.stderr and "no effect" in " ".join(run.stderr.split())


def test_the_dashboard_marks_unified_trials() -> None:
    from types import SimpleNamespace

    from autotune.dashboard.plots import TrialView, trial_figure

    trial = SimpleNamespace(number=0, state=SimpleNamespace(name="COMPLETE"), values=[0.0], params={},
                            user_attrs={"memory_mode": "unified", "result": {"failure": "crashed", "message": CRASH}})
    view = TrialView.of(trial)
    assert view.memory_mode == "unified"
    assert "UNIFIED MEMORY (no ratio)" in trial_figure(view).layout.title.text

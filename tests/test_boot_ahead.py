"""--boot-ahead: the next queued trial's server boots while the last replay drains, on the same GPUs,
timed to probe memory only after the last server stopped, and thrown away when it did not.

Real simulated-server processes (their boot is `--boot-delay` seconds, the memory probe line part way
in, as SGLang's); the probe lines of the real 0.5.17 logs committed under docs/real-gpu/.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import pytest

from autotune.study.trial_attrs import ATTR_RESULT
from autotune.workloads import get_preset
from workers.handover import DrainClock, GpuSetRecord, Handover, probed_avail_gib
from workers.local_runner import LocalRunner
from workers.runners import choose_runner
from workers.trial import TrialResult, TrialSpec, run_trial

from test_workers import sim_spec

pytestmark = pytest.mark.usefixtures("no_leftover_servers")

REPO = Path(__file__).resolve().parents[1]
TINY = Path(__file__).parent / "data" / "tiny-workloads.yaml"
REAL_LOG = REPO / "docs" / "real-gpu" / "azure" / "logs" / "gemma-4-26B-A4B-it-azure-conv-40s-t0.log"


def _spec(tmp_path: Path, trial_id: str, ratio: float, boot_delay: float = 8.0) -> TrialSpec:
    return TrialSpec(
        trial_id=trial_id, server=sim_spec(ratio, **{"boot-delay": boot_delay, "time-scale": 4}),
        workload=get_preset("chat", num_prompts=48, concurrency=16), log_dir=str(tmp_path), boot_timeout_s=60,
    )


def test_the_probe_line_of_real_sglang_is_read() -> None:
    assert probed_avail_gib(REAL_LOG.read_text()) == 139.13
    assert probed_avail_gib("Load weight end. avail mem=87.43 GB") is None


def test_the_drain_clock_waits_for_every_request_to_be_sent() -> None:
    clock = DrainClock()
    for index in range(4):
        clock.sent(index, total=6, now=0.0)
    for index in range(3):
        clock.finished(index, now=10.0)
    assert clock.eta_s(10.0) is None  # two requests are still to go out
    clock.sent(4, total=6, now=10.0)
    clock.sent(5, total=6, now=11.0)
    assert clock.eta_s(12.0) == pytest.approx(11.0 + 10.0 - 12.0)  # the last one out, plus a typical duration
    for index in (3, 4, 5):
        clock.finished(index, now=20.0)
    assert clock.eta_s(20.0) == 0.0


def test_the_last_replay_on_the_gpus_tells_the_drain_from_the_start() -> None:
    clock = DrainClock()
    assert clock.eta_s(0.0, prior_s=20.0) is None  # nothing sent: this replay has not begun
    clock.sent(0, total=64, now=100.0)
    assert clock.eta_s(105.0, prior_s=20.0) == pytest.approx(15.0)  # 20 s like the last one, 5 s in
    for index in range(1, 63):
        clock.sent(index, total=64, now=101.0)
    for index in range(3):
        clock.finished(index, now=110.0)  # 10, 9 and 9 s: a typical request takes 9 s
    clock.sent(63, total=64, now=110.0)  # the last one out, at 110 s
    assert clock.eta_s(110.0, prior_s=12.0) == pytest.approx(9.0)  # later than the last replay says: live wins
    assert clock.eta_s(110.0, prior_s=30.0) == pytest.approx(20.0)  # earlier: the last replay's length holds


def test_a_smaller_probe_or_budget_than_a_solo_boot_is_an_overlap() -> None:
    record = GpuSetRecord()
    record.learn_probe(21.0, 139.13)
    record.learn_budget(15.041)
    assert record.lead_s() == pytest.approx(0.6 * 21.0)
    assert record.probe_overlapped(138.6) is None  # a few hundred MB: a solo boot's own spread
    assert "the last server still held them" in record.probe_overlapped(70.2)
    assert record.budget_overlapped(15.04) is None
    record.learn_replay("chat", 20.0)
    assert record.replay_s("chat") == 20.0 and record.replay_s("long-context") is None  # per workload
    assert "where a solo boot on these GPUs got 15.041 GiB" in record.budget_overlapped(7.5)


def test_queued_trials_boot_while_the_last_replay_drains(tmp_path: Path) -> None:
    runner = LocalRunner(parallel=1, boot_ahead=True)
    results: list[TrialResult] = []
    try:
        runner.submit(_spec(tmp_path, "t0", 0.5))
        runner.submit(_spec(tmp_path, "t1", 0.6))  # one more than it measures: it boots ahead
        with pytest.raises(RuntimeError, match="more trials submitted"):
            runner.submit(_spec(tmp_path, "t9", 0.9))
        while len(results) < 3:
            result = runner.wait_one(180)
            assert result is not None
            results.append(result)
            if len(results) == 1:
                runner.submit(_spec(tmp_path, "t2", 0.7))
    finally:
        runner.close()
    assert [r.trial_id for r in results] == ["t0", "t1", "t2"]  # measured one at a time, in order
    assert all(r.ok for r in results), [r.message for r in results]
    assert results[0].early_boot is None  # the first had the GPUs to itself
    for later, before in zip(results[1:], results):
        early = later.early_boot
        assert early is not None and not early.rebooted
        assert early.started_before_free_s > 1.0  # the probe comes ~7 s into an 8 s boot: lead ~4 s
        assert early.ready_after_free_s < later.boot_s - 1.0  # so the study saw less than the whole boot
        assert later.started_at < before.finished_at  # its server started before the last trial ended ...
        assert later.summary.completed == 48  # ... and it measured the whole replay after


def test_an_early_boot_that_saw_the_last_server_is_booted_again(tmp_path: Path) -> None:
    record = GpuSetRecord()
    record.learn_probe(3.0, 200.0)  # solo boots saw more free memory than this one will: it overlapped
    handover = Handover(record, "chat")
    threading.Timer(6.0, handover.release).start()  # the last trial ends 6 s from now
    result = run_trial(_spec(tmp_path, "late", 0.6, boot_delay=2.0), gpu_set=record, handover=handover)
    assert result.ok, result.message
    assert result.early_boot is not None
    assert "its memory probe saw" in result.early_boot.rebooted
    assert result.early_boot.started_before_free_s == 0.0  # the boot that counted started after the release
    assert (tmp_path / "late.early.log").exists() and (tmp_path / "late.log").exists()
    assert "booted again once they were free" in result.early_boot.describe(result.boot_s)


def test_boot_ahead_needs_this_node() -> None:
    assert choose_runner("auto", "sim", None, boot_ahead=True).runner == "local"
    with pytest.raises(ValueError, match="this node's GPUs"):
        choose_runner("ray", "sglang", None, boot_ahead=True)
    with pytest.raises(ValueError, match="sim-fast trials boot no server"):
        choose_runner("auto", "sim-fast", None, boot_ahead=True)


def test_a_study_boots_its_queued_candidates_ahead(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'a.db'}"
    run = subprocess.run(
        [sys.executable, "-m", "autotune.cli.app", "run", "--model", "26B-A4B", "--backend", "sim", "--boot-ahead",
         "--parallel", "1", "--workload", f"{TINY}", "--trials", "3", "--try", "0.5", "--time-scale", "4", "--storage", url,
         "--log-dir", str(tmp_path / "logs"), "--", "--boot-delay", "6"],
        capture_output=True, text=True, cwd=REPO, timeout=600,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "started: its server boots while the running trial's replay drains" in run.stdout
    assert "before the last trial freed its GPUs" in run.stdout  # each trial's line says what its boot cost
    study = optuna.load_study(study_name=optuna.get_all_study_names(url)[0], storage=url)
    early = [t.user_attrs[ATTR_RESULT].get("early_boot") for t in study.get_trials() if ATTR_RESULT in t.user_attrs]
    assert early[0] is None and any(e and e["started_before_free_s"] > 0 for e in early[1:]), early

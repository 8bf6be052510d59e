"""What the --boot-ahead runs on real SGLang 0.5.17 recorded (docs/real-gpu/boot-ahead.md), read back from the
committed study databases through the bench that prints the page's tables."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
RECORD = REPO / "docs/real-gpu/boot-ahead"
sys.path.insert(0, str(REPO / "bench"))

from boot_ahead import cadences, read_trials  # noqa: E402

SOLO_BUDGET_GIB = 15.042


def test_early_boots_saw_the_gpu_as_solo_boots_do_and_hid_part_of_the_boot() -> None:
    for db in ("ahead/ahead.db", "pair/ahead2.db"):
        trials = read_trials(RECORD / db)
        assert trials[0].result.early_boot is None  # the first boot had the machine to itself
        for trial in trials[1:]:
            early = trial.result.early_boot
            assert trial.result.ok and not trial.result.simulated and early is not None and not early.rebooted
            assert early.started_before_free_s > 10 and early.ready_after_free_s < trial.result.boot_s - 10
            assert trial.result.server_memory.kvcache_gib == pytest.approx(SOLO_BUDGET_GIB, abs=0.002)
    # With the last replay's length on the set known, the third trial's server started well before the drain.
    third = read_trials(RECORD / "pair/ahead2.db")[2]
    assert third.result.early_boot.started_before_free_s > 20 and third.result.early_boot.ready_after_free_s < 20


def test_booting_ahead_shortened_the_cadence_on_one_machine() -> None:
    ahead = [c for c in cadences(read_trials(RECORD / "pair/ahead2.db")) if c is not None]
    one_by_one = [c for c in cadences(read_trials(RECORD / "pair/seq2.db")) if c is not None]
    assert max(ahead) < min(one_by_one) and min(ahead) < 0.6 * min(one_by_one)


def test_the_guard_caught_a_probe_that_saw_the_last_server() -> None:
    first, second = read_trials(RECORD / "seq/overlap.db")
    assert first.result.ok and second.result.ok
    assert "saw 68.04 GB free where a solo boot on these GPUs saw 139.13 GB" in second.result.early_boot.rebooted
    assert second.result.early_boot.started_before_free_s == 0.0  # the boot that counted came after the release
    assert second.result.server_memory.kvcache_gib == pytest.approx(SOLO_BUDGET_GIB, abs=0.002)


def test_replays_beside_an_early_boot_read_as_one_by_one_within_two_percent() -> None:
    for ahead_db, seq_db in (("ahead/ahead.db", "seq/seq.db"), ("pair/ahead2.db", "pair/seq2.db")):
        ahead = {t.ratio: t.value for t in read_trials(RECORD / ahead_db)}
        seq = {t.ratio: t.value for t in read_trials(RECORD / seq_db)}
        assert set(ahead) == set(seq)
        assert all(abs(ahead[r] / seq[r] - 1) < 0.02 for r in ahead), (ahead, seq)

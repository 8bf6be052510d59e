"""bench/real_gpu_fidelity.py on the real H200 study (docs/real-gpu/real-study.db): the simulator's pools
equal real SGLang's to the token, and every real layout is predicted from the others."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest

from conftest import load_bench

REPO = Path(__file__).resolve().parents[1]
DB = REPO / "docs" / "real-gpu" / "real-study.db"

pytestmark = pytest.mark.skipif(not DB.is_file(), reason=f"{DB} not present")


@pytest.fixture(scope="module")
def fidelity():
    return load_bench("real_gpu_fidelity")


@pytest.fixture(scope="module")
def cases(fidelity):
    return fidelity.load_cases(DB)


def test_db_is_read_not_written(fidelity) -> None:
    before = DB.stat().st_mtime_ns, DB.read_bytes()
    trials = fidelity.load_real_trials(DB)
    assert (DB.stat().st_mtime_ns, DB.read_bytes()) == before
    assert trials and all(isinstance(t, fidelity.RealTrial) for t in trials)
    assert any(t.booted for t in trials)


def test_simulated_layouts_equal_the_real_ones_for_every_booted_trial(fidelity, cases) -> None:
    checked = 0
    for case in cases:
        rows = fidelity.fidelity_rows(case, layout_only=True)
        for row in rows:
            if not row.real.booted:
                continue
            assert row.sim.booted, f"{case.name} trial {row.real.number}: simulated server refused to boot"
            assert (row.sim.full_tokens, row.sim.swa_tokens) == (row.real.full_tokens, row.real.swa_tokens), (
                f"{case.name} trial {row.real.number} at ratio {row.real.ratio}"
            )
            assert row.layout_match
            checked += 1
        # The full simulation starts the same server as the start-up-only path.
        first = next(t for t in case.trials if t.booted)
        full = fidelity.simulate_trial(case, first.ratio, trial=first)
        assert (full.full_tokens, full.swa_tokens) == (first.full_tokens, first.swa_tokens)
        assert full.simulated and full.total_throughput and full.total_throughput > 0
    assert checked > 0


def test_leave_one_out_contains_every_real_layout(fidelity, cases) -> None:
    for case in cases:
        if len(case.layouts) < 2:
            continue
        assert case.budget_interval is not None, f"{case.name}: the real layouts disagree on the budget"
        results = fidelity.layout_check(case)
        assert not isinstance(results, str), results
        assert len(results) == len(case.layouts)
        for item in results:
            assert item.contained, f"{case.name}: ratio {item.ratio} {item.full_tokens}/{item.swa_tokens} not predicted"


def test_partial_trials_get_no_error_and_calibration_error_is_finite(fidelity, cases) -> None:
    for case in cases:
        for row in fidelity.fidelity_rows(case, states=("PRUNED",), layout_only=True):
            assert row.real.partial and row.error("throughput") is None and row.log_error("tpot") is None
    if any(t.state == "COMPLETE" and t.total_throughput for case in cases for t in case.trials):
        base = cases[0].gpu
        error = fidelity.throughput_error(base, cases=cases)
        assert math.isfinite(error) and error >= 0
        slower = dataclasses.replace(base, decode_step_overhead_ms=base.decode_step_overhead_ms + 5)
        assert fidelity.throughput_error(slower, cases=cases) != error  # the profile reaches the simulator


def test_profile_overrides(fidelity) -> None:
    from autotune.hardware import load_gpu

    profile = fidelity.parse_overrides(load_gpu("H200"), ["decode_step_overhead_ms=3.0", "prefill_attention_windowed=true"])
    assert profile.decode_step_overhead_ms == 3.0 and profile.prefill_attention_windowed is True
    with pytest.raises(SystemExit):
        fidelity.parse_overrides(profile, ["no_such_field=1"])

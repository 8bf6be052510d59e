"""bench/trace_alignment.py on the traced real storms (docs/real-gpu/first-pass/traced-deep/, traced-lag/): the
simulator runs real SGLang 0.5.17's schedule event by event, every prefill batch's chunks, every decode batch size and
every retraction, through a whole deep collapse and into the next wave, and a 1536-token storm's whole phase."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import load_bench

REPO = Path(__file__).resolve().parents[1]
RUN = REPO / "docs" / "real-gpu" / "first-pass" / "traced-deep"
LAG = REPO / "docs" / "real-gpu" / "first-pass" / "traced-lag"

pytestmark = pytest.mark.skipif(not (RUN / "fp-logs.tar.gz").exists() or not (LAG / "fp-logs.tar.gz").exists(),
                                reason=f"no traces under {RUN.parent}")


@pytest.fixture(scope="module")
def bench():
    return load_bench("trace_alignment")


def _aligned(bench, run):
    boots, _, _ = bench.footprint.load(bench.footprint.DEFAULT_DATA)
    simulator = bench.footprint.Simulator(boots)
    out = {}
    for trace in bench.real_traces(run):
        sim = bench.simulated_events(trace.ratio, trace.phase, simulator)
        out[(trace.ratio, trace.phase["phase"])] = (trace, sim, bench.align(trace.events, sim))
    return out


@pytest.fixture(scope="module")
def aligned(bench):
    return {ratio: v for (ratio, _), v in _aligned(bench, RUN).items()}


@pytest.fixture(scope="module")
def lag(bench):
    return _aligned(bench, LAG)


def test_both_traced_boots_are_found_with_their_phase(aligned):
    assert sorted(aligned) == [0.4, 0.5]
    for trace, _, _ in aligned.values():
        assert trace.phase["phase"] == "p1024-o128-c64" and trace.phase["status"] == "ok"
        assert trace.events[0][0] == "P"  # the phase starts with a prefill, after the warm-up's flush


def test_the_whole_collapse_runs_event_for_event(aligned, bench):
    for ratio, (trace, sim, a) in aligned.items():
        storm_end = max(i for i, e in enumerate(trace.events) if e[0] == "R" and i < len(trace.events) // 2)
        # Every event of the collapse (its last retraction of the first wave included) is the real one...
        assert a.shared > storm_end - a.real_from, (ratio, a)
        # ...and the schedule's totals are within 2 % over the whole phase.
        real, simulated = bench.totals(trace.events), bench.totals(sim)
        for key in real:
            assert abs(simulated[key] - real[key]) <= max(1, 0.02 * real[key]), (ratio, key, real, simulated)


def test_an_event_that_differs_is_reported(bench):
    real = [("P", (1024,)), ("R", (3,)), ("D", (60,)), ("P", (564,))]
    sim = [("R", (3,)), ("D", (60,)), ("P", (565,))]
    a = bench.align(real, sim)
    assert (a.shared, a.real_from, a.sim_from, a.ended) == (2, 1, 0, False)


def test_every_phase_of_a_boot_is_cut_at_its_flush(lag):
    assert sorted(lag) == [(0.7, "p1536-o256-c64"), (0.8, "p1280-o256-c64"), (0.8, "p1536-o256-c64")]
    for trace, _, _ in lag.values():
        assert trace.events[0] == ("P", (trace.phase["prompt"],))  # a burst's first request is prefilled alone


def test_a_1536_token_storm_runs_event_for_event(lag, bench):
    trace, sim, a = lag[(0.8, "p1536-o256-c64")]
    assert trace.events == sim  # four retractions, the whole phase identical
    trace, sim, a = lag[(0.7, "p1536-o256-c64")]
    assert bench.totals(trace.events) == bench.totals(sim)  # 243 prefill batches, 767 decode passes, 101 retractions
    assert a.shared >= 500

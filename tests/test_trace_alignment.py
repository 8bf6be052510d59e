"""bench/trace_alignment.py on the traced deep collapse (docs/real-gpu/first-pass/traced-deep/): the simulator runs the
real SGLang 0.5.17 storm's schedule event by event, every prefill batch's chunks, every decode batch size and every
retraction, through the whole collapse and into the next wave."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import load_bench

REPO = Path(__file__).resolve().parents[1]
RUN = REPO / "docs" / "real-gpu" / "first-pass" / "traced-deep"

pytestmark = pytest.mark.skipif(not (RUN / "fp-logs.tar.gz").exists(), reason=f"no trace under {RUN}")


@pytest.fixture(scope="module")
def bench():
    return load_bench("trace_alignment")


@pytest.fixture(scope="module")
def aligned(bench):
    boots, _, _ = bench.footprint.load(bench.footprint.DEFAULT_DATA)
    simulator = bench.footprint.Simulator(boots)
    out = {}
    for trace in bench.real_traces(RUN):
        sim = bench.simulated_events(trace.ratio, trace.phase, simulator)
        out[trace.ratio] = (trace, sim, bench.align(trace.events, sim))
    return out


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

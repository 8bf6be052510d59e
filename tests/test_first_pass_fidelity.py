"""bench/first_pass_fidelity.py on the committed first-pass data (docs/real-gpu/first-pass/): the same
phase run twice on one real server schedules identically, and the pass during which the node compiled
kernels is the slow one; the prefill probes and the two-node noise band read as documented."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import load_bench

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "docs" / "real-gpu" / "first-pass"

pytestmark = pytest.mark.skipif(not any(DATA.glob("*/results.jsonl")), reason=f"no results under {DATA}")


@pytest.fixture(scope="module")
def bench():
    return load_bench("first_pass_fidelity")


def test_a_first_pass_that_compiled_kernels_is_slower_with_the_same_schedule(bench):
    passes = [p for p in bench.repeated_passes(DATA) if p.run == "cold"]
    by_phase: dict[tuple[float, str], list] = {}
    for p in passes:
        by_phase.setdefault((p.ratio, p.shape), []).append(p)
    storm = by_phase[(0.9, "1024/128@64")]
    first, second = sorted(storm, key=lambda p: p.number)
    # The same work: prefill batches, decode passes and retractions are identical...
    assert len(first.record["log"]["prefill"]) == len(second.record["log"]["prefill"])
    for counter in ("sglang:cuda_graph_passes_total", "sglang:num_retracted_requests_total"):
        assert first.record["counters"][counter] == second.record["counters"][counter]
    # ...but the first pass compiled kernels, and its prefills took seconds more of GPU time.
    assert first.kernels and first.kernels > 0 and second.kernels == 0
    extra = first.record["forward_s"]["extend"] - second.record["forward_s"]["extend"]
    assert extra > 3.0 and first.tok_s < 0.85 * second.tok_s


def test_decode_passes_take_the_prefill_batches_out_of_the_all_mode_pass_count(bench):
    # sglang:cuda_graph_passes_total counts prefill and decode forwards alike (one series per mode).
    record = {"counters": {"sglang:cuda_graph_passes_total": 520.0}, "log": {"prefill": [[0, 1, 1024, 0, 0, 0]] * 218}}
    assert bench.real_decode_passes(record) == 302
    record["passes"] = {"prefill_none": 218.0, "decode_cuda_graph": 300.0, "decode_none": 2.0}  # the grid's by-mode record
    assert bench.real_decode_passes(record) == 302
    assert bench.gpu_idle_s({"elapsed_s": 18.0, "forward_s": {"extend": 13.0, "decode": 3.5}}) == pytest.approx(1.5)
    # On the data: the simulator's decode passes are within 6 % of real SGLang's on every pass of the chat storm,
    # overlap scheduler on or off.
    sim = bench.footprint.Simulator(bench.footprint.load(bench.GRID)[0])
    seen = set()
    for p in bench.all_passes(DATA):
        if p.shape == "1024/128@64":
            seen.add(p.overlap)
            simulated = sim.run(p.ratio, bench._phase_of(p.record, p.run)).decode_passes
            assert abs(simulated / bench.real_decode_passes(p.record) - 1) < 0.06, (p.ratio, simulated)
    assert seen == {True, False}


def test_every_probe_is_one_prefill_batch_at_a_time(bench):
    probes = [r for run in bench.runs(DATA) for r in bench.records(run) if bench.is_probe(r)]
    assert len(probes) >= 12
    for r in probes:
        assert r["status"] == "ok" and r["forward_s"]["extend"] > 0
        assert all(row[1] <= r["concurrency"] for row in r["log"]["prefill"])  # #new-seq never above what was sent


def test_the_noise_band_and_the_optimum_read_with_it(bench):
    shape = {1.0: [100.0, 104.0], 0.9: [101.0, 102.0], 0.4: [103.0]}
    assert bench.noise_band(shape) == pytest.approx(0.04)
    assert bench.near_optimal({1.0: 102.0, 0.9: 101.5, 0.4: 103.0, 0.25: 90.0}, 0.04) == [0.4, 0.9, 1.0]
    assert bench.noise_band({1.0: [100.0]}) is None


def test_the_one_node_sweep_reads_noise_only_where_the_schedule_was_the_same(bench):
    sweep = bench.one_node_sweep(DATA)
    # Every shape of the two calls on one node, at the five ratios they ran.
    assert {s.ratio for s in sweep["512/384@32"]} == {0.8, 0.7, 0.6, 0.5, 0.4}
    for points in sweep.values():
        assert all(s.tok_s > 0 for s in points)
    # 512/384@32 never binds a pool: the same prefill batches and decode passes at every ratio...
    assert len({s.schedule for s in sweep["512/384@32"]}) == 1
    # ...while 2048/256@48 retracts at 0.8 and 0.7: those stay out of the band.
    bound = [s for s in sweep["2048/256@48"] if s.schedule[2]]
    assert {s.ratio for s in bound} == {0.8, 0.7}
    band = bench.same_schedule_band(sweep["2048/256@48"])
    free = [s.tok_s for s in sweep["2048/256@48"] if not s.schedule[2]]
    assert band == pytest.approx(max(free) / min(free) - 1) and band < 0.05
    # A made-up sweep: only the two retraction-free points with one schedule make the band.
    point = bench.SweepPoint
    made_up = [point(1.0, 100.0, (6, 768, 0.0), None), point(0.9, 103.0, (6, 768, 0.0), None),
               point(0.8, 80.0, (6, 768, 5.0), None), point(0.7, 90.0, (7, 770, 0.0), None)]
    assert bench.same_schedule_band(made_up) == pytest.approx(0.03)
    assert bench.same_schedule_band(made_up[2:]) is None


def test_a_deep_collapse_runs_the_same_schedule_traced_or_not(bench):
    # The scheduler probe perturbs timings, not decisions: traced-deep repeats the regrid node's storms at 0.4
    # and 0.5 batch for batch, so its trace explains the untraced runs.
    def schedule(p):
        r = p.record
        return (len(r["log"]["prefill"]), bench.real_decode_passes(r),
                r["counters"]["sglang:num_retracted_requests_total"])
    passes = [p for p in bench.all_passes(DATA) if p.shape == "1024/128@64" and p.ratio in (0.4, 0.5)]
    traced = {p.ratio: schedule(p) for p in passes if p.run == "traced-deep"}
    plain = {p.ratio: schedule(p) for p in passes if p.run.startswith("regrid")}
    assert traced and traced == plain
    assert all(p.traced for p in passes if p.run == "traced-deep")


def test_the_doc_holds_every_line_the_bench_prints(bench):
    doc = (REPO / "docs" / "real-gpu" / "first-pass.md").read_text().splitlines()
    missing = [line for line in bench.build_report(DATA).splitlines() if line and line not in doc]
    assert not missing, missing[:3]

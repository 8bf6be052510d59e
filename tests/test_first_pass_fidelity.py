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


def test_the_doc_holds_every_line_the_bench_prints(bench):
    doc = (REPO / "docs" / "real-gpu" / "first-pass.md").read_text().splitlines()
    missing = [line for line in bench.build_report(DATA).splitlines() if line and line not in doc]
    assert not missing, missing[:3]

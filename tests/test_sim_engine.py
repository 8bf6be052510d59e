"""The simulated scheduler: SGLang's pool accounting, admission, eviction and retraction rules
(docs/reference/sglang.md §3-§4), and the user's phenomena on the B200 (docs/reference/seed.md)."""

from __future__ import annotations

import pytest

from autotune.hardware import load_gpu
from autotune.models import load_model
from autotune.pools import SWAPoolRefused, pinned_budget
from autotune.sim.config import SimServerConfig, start_up
from autotune.sim.engine import SimEngine
from autotune.sim.request import SimRequest
from autotune.sim.run import simulate
from autotune.workloads import MaxConcurrency, get_preset, random_ids_workload

M26 = load_model("26B-A4B")
M31 = load_model("31B")
H100 = load_gpu("H100")
B200 = load_gpu("B200")
SEED_BUDGET = pinned_budget(98.0513).bytes  # the 31B B200 layouts (docs/reference/seed.md)


def engine(ratio: float, *, budget_gb: float = 5.0, model=M26, **overrides) -> SimEngine:
    config = SimServerConfig(
        model=model, gpu=H100, swa_full_tokens_ratio=ratio, kv_budget_bytes=pinned_budget(budget_gb).bytes, **overrides
    )
    return SimEngine(config)


def run_until_idle(e: SimEngine, limit: int = 100_000) -> list:
    reports, now = [], 0.0
    for _ in range(limit):
        report = e.step(now)
        if report.kind == "idle":
            return reports
        reports.append(report)
        now = report.end_s
    raise AssertionError("engine did not go idle")


def request(i: int, prompt: int, out: int) -> SimRequest:
    return SimRequest(rid=str(i), prompt_len=prompt, max_new_tokens=out, arrival_s=0.0)


def test_start_up_reproduces_the_seed_layout_and_refusal() -> None:
    config = SimServerConfig(model=M31, gpu=B200, swa_full_tokens_ratio=0.15, page_size=64, kv_budget_bytes=SEED_BUDGET)
    up = start_up(config)
    assert (up.full_tokens, up.swa_tokens) == (478720, 71808)
    assert "Use sliding window memory pool. full_layer_tokens=478720, swa_layer_tokens=71808" in up.log_lines
    with pytest.raises(SWAPoolRefused, match="cannot hold even one request"):
        start_up(SimServerConfig(model=M26, gpu=H100, swa_full_tokens_ratio=0.001, mem_fraction_static=0.85))


def test_without_hybrid_pool_one_pool_holds_every_layer() -> None:
    e = engine(0.5, disable_hybrid_swa_memory=True)
    assert e.startup.swa_tokens is None and e.scheduler.swa is None
    cell = M26.full_bytes_per_token() + M26.swa_layer_bytes() * len(M26.full_layer_ids + M26.swa_layer_ids) - M26.swa_layer_bytes() * len(M26.full_layer_ids)
    assert e.startup.full_tokens == pinned_budget(5.0).bytes // cell


def test_every_prefill_token_lands_in_both_pools() -> None:
    e = engine(0.5)
    e.add(request(0, 700, 4))
    report = e.step(0.0)
    assert report.kind == "prefill" and report.new_tokens == 700
    assert e.scheduler.full.used == 700
    assert e.scheduler.swa.used == 700  # within the window: nothing out of it yet


@pytest.mark.parametrize(("version", "evictable"), [("0.5.17", 5000 - 1023), ("0.5.23", 1)])
def test_out_of_window_prefill_tokens_leave_the_used_count(version: str, evictable: int) -> None:
    # The plain loop (--disable-overlap-schedule): a prefill's insert is processed before the next round.
    e = engine(0.5, chunked_prefill_size=8192, sglang_version=version, overlap_schedule=False)
    e.add(request(0, 5000, 4))
    e.step(0.0)
    swa = e.scheduler.swa
    assert e.scheduler.full.used == 5000
    # The prompt's last window stays locked in the radix tree: used (window as SGLang runs it).
    assert swa.used == 1023
    # The rest is radix cache in 0.5.17 (evictable, not used: gauges skip it); 0.5.23 frees it at the
    # prefill checkpoint, keeping the 1-token remainder of the capped leaf (docs/sglang-swa-accounting.md §1.2).
    assert swa.evictable == evictable


def test_the_overlap_loop_inserts_a_completed_prefill_one_round_late() -> None:
    # SGLang's default loop processes a batch's results after scheduling the next round: that round still sees
    # the whole prompt held, and the out-of-window part becomes evictable only after it (a real 0.5.17 trace:
    # docs/real-gpu/first-pass.md, "What a deep collapse is, traced").
    e = engine(0.5, chunked_prefill_size=8192, sglang_version="0.5.17")
    assert e.config.overlap_schedule  # SGLang's default
    e.add(request(0, 5000, 4))
    e.step(0.0)
    swa = e.scheduler.swa
    assert swa.used == 5000 and swa.evictable == 0
    report = e.step(1.0)
    assert report.kind == "decode"
    assert swa.evictable == 5000 - 1023 and 1023 <= swa.used <= 1023 + 2


def test_a_reprefill_splits_at_the_full_trees_old_node_boundaries() -> None:
    # A 1024-token prompt goes into the tree as a 1-token root node and a window (the leaf is capped at one
    # window). Retracted, its SWA part evicted, the full tree keeps those nodes: re-prefilled in chunks, the
    # prompt is split at position 1 again, and the node-by-node lock covers the window without the root node,
    # which stays evictable (real 0.5.17: the one-token rounds of a storm, docs/sglang-swa-accounting.md §3).
    from autotune.pools.footprint import insert_nodes, locked_tail

    e = engine(0.5, overlap_schedule=False)
    req = request(0, 1024, 8)
    e.add(req)
    e.step(0.0)
    assert req.tree_nodes == [1, 1023]
    e.scheduler.running.remove(req)
    e.scheduler._retract(req)
    assert req.tree_bounds == {1, 1024}
    req.fill_len = 1025
    req.tree_nodes, req.kv_len, req.protected = [], 0, 0
    for chunk in (247, 256, 522):  # the chunks a real storm re-prefilled this request in
        e.scheduler._grow(req, chunk)
        e.scheduler._checkpoint(req)
    assert req.tree_nodes == [1, 246, 256, 521, 1]
    assert locked_tail(req.tree_nodes, 1023) == 1024  # one token of the fill stays evictable
    assert locked_tail(insert_nodes([247, 256, 522], 1023), 1023) == 1025  # without the old boundaries: none


def test_decode_frees_decoded_tokens_only_once_a_window_behind() -> None:
    # 0.5.23: the prompt (1000 tokens, within the window) stays locked; decoded tokens are held
    # until the first free at j = W + I + 1, then every 128 steps down to W + 1 (§1.3).
    e = engine(0.5)
    e.add(request(0, 1000, 1600))
    held = []
    now = 0.0
    for _ in range(2000):
        report = e.step(now)
        if report.kind == "idle":
            break
        now = report.end_s
        if e.scheduler.running:
            held.append(e.scheduler.swa.used)
    assert max(held) == 1000 + 1023 + 128  # L(P) + W + I
    assert min(held[1200:]) == 1000 + 1023 + 1  # never below L(P) + W + 1 once decode runs a window past
    # held[k] is read after decode step k (held[0] right after the prefill): H(j) = j up to W + I.
    assert held[0] == 1000 and held[1151] == 1000 + 1151 and held[1152] == 1000 + 1024


def test_pools_drain_and_tokens_are_conserved() -> None:
    e = engine(0.4, budget_gb=20.0)
    for i in range(30):
        e.add(request(i, 300 + 37 * i, 50 + i))
    run_until_idle(e)
    c = e.scheduler.counters
    assert e.scheduler.full.used == 0 and e.scheduler.swa.used == 0
    assert c.generation_tokens == sum(50 + i for i in range(30))
    assert c.retracted_requests == 0
    assert c.prompt_tokens == sum(300 + 37 * i for i in range(30))


def test_swa_admission_makes_requests_wait() -> None:
    # A tiny SWA pool: admission reserves ~window + page per request and stops there.
    e = engine(0.05, budget_gb=2.0)
    swa_capacity = e.startup.swa_tokens
    for i in range(40):
        e.add(request(i, 900, 200))
    e.step(0.0)
    admitted = len(e.scheduler.running)
    per_request = 900 + 1  # estimate_swa_kv_tokens: min(900 + 200, 1023) + page
    assert 0 < admitted <= swa_capacity // min(900 + 200, 1023)
    assert admitted >= (swa_capacity // (per_request + 200)) - 1
    assert len(e.scheduler.waiting) == 40 - admitted
    assert e.scheduler.full.usage < 0.2  # the full pool is nearly empty: SWA is what binds


def test_full_side_reserves_running_outputs() -> None:
    # Full pool of ~24k tokens: one running request with 16k output left blocks a 10k prompt.
    e = engine(1.0, budget_gb=24_000 * (M26.full_bytes_per_token() + M26.swa_bytes_per_token()) / 1e9)
    e.add(request(0, 100, 4096 * 4))
    e.step(0.0)
    # 20000 + 10 + page fits the 23.9k free tokens, but not once the running request's
    # remaining output (clipped at 4096) is reserved: it must wait.
    e.add(request(1, 20_000, 10))
    report = e.step(1.0)
    assert report.kind == "decode"
    assert len(e.scheduler.waiting) == 1


def test_max_running_requests_caps_the_batch() -> None:
    e = engine(0.6, max_running_requests=8)
    for i in range(20):
        e.add(request(i, 100, 30))
    e.step(0.0)
    assert len(e.scheduler.running) == 8


def test_chunked_prefill_splits_long_prompts() -> None:
    e = engine(0.6, budget_gb=8.0, chunked_prefill_size=4096)
    e.add(request(0, 10_000, 2))
    reports = run_until_idle(e)
    prefills = [r for r in reports if r.kind == "prefill"]
    assert [r.new_tokens for r in prefills] == [4096, 4096, 1808]


def test_decode_out_of_memory_retracts_and_requeues() -> None:
    # Admission reserves min(prompt + output, window) + page of SWA per request (1024 here), but
    # decoding grows each to window + up to 128: an SWA pool of 5500 tokens admits 5 requests
    # that then need up to 5 x 1152. Decode runs out and SGLang retracts.
    e = engine(0.5, budget_gb=11_000 * (M26.full_bytes_per_token() + 0.5 * M26.swa_bytes_per_token()) / 1e9)
    assert e.startup.swa_tokens == 5500
    for i in range(60):
        e.add(request(i, 1000, 300))
    reports = run_until_idle(e)
    retracted = [r for report in reports for r in report.retracted]
    assert retracted, "expected decode-time retractions"
    c = e.scheduler.counters
    assert c.retracted_requests == len(retracted)
    assert c.generation_tokens == 60 * 300  # every request still finishes
    assert all(r.finish_s is not None for r in retracted)
    # Retracted requests re-prefill prompt + kept output: more prefill than prompt tokens sent,
    # while the exported counters count each request once, as SGLang's do.
    assert c.prefill_tokens_computed > 60 * 1000
    assert c.prompt_tokens == 60 * 1000 and c.requests == 60
    # A step that retracts costs the profile's overhead once on top of its forward, however many it retracts.
    overhead = e.timing.retract_step_overhead_s
    assert overhead == pytest.approx(H100.retract_step_overhead_ms / 1e3) and overhead > 0
    steps = [report for report in reports if report.kind == "decode"]
    plain = min(r.duration_s for r in steps if not r.retracted and r.batch_size == 4)
    retracting = [r for r in steps if r.retracted and r.batch_size == 4]
    assert retracting and all(r.duration_s - plain == pytest.approx(overhead, abs=2e-3) for r in retracting)


# -- the user's phenomena: gemma-4-31B-it on the B200 profile, page 64 (docs/reference/seed.md) ---------------


def seed_config(ratio: float) -> SimServerConfig:
    return SimServerConfig(
        model=M31, gpu=B200, swa_full_tokens_ratio=ratio, page_size=64, kv_budget_bytes=SEED_BUDGET,
        speculative_accept_length=3.13,
    )


@pytest.fixture(scope="module")
def chat_runs():
    chat = get_preset("chat", num_prompts=160)  # 1k/1k at 80 concurrent
    return {r: simulate(chat, seed_config(r)) for r in (0.15, 0.8)}


def test_seed_chat_at_015_is_swa_bound(chat_runs) -> None:
    # With radix cache on, a running 1k/1k request holds its prompt's locked window plus up to W + I
    # decoded tokens (~2.2k SWA tokens, docs/sglang-swa-accounting.md): 80 of them need ~174k, more
    # than any ratio gives the 31B here (~109k at 1.0), so every ratio retracts some. 0.15 (71808
    # SWA tokens) is where it starves: the deepest collapse, as the user saw; 0.8 is the fix they kept.
    low, high = chat_runs[0.15], chat_runs[0.8]
    assert low.series.peak_swa_usage >= 0.99
    assert low.series.peak_full_usage < 0.4
    assert low.series.peak_queue > 0 and low.series.swa_bound_share > 0.3
    assert low.summary.output_throughput < 0.85 * high.summary.output_throughput
    assert sum(o.retracted for o in low.outcomes) > sum(o.retracted for o in high.outcomes)
    assert all(o.success for o in low.outcomes)


@pytest.fixture(scope="module")
def summarization_runs():
    work = random_ids_workload("summarization", 40, 8192, 1024, range_ratio=1.0, seed=1, arrival=MaxConcurrency(32))
    return {r: simulate(work, seed_config(r)) for r in (0.8, 0.3)}


def test_seed_summarization_at_08_is_full_bound(summarization_runs) -> None:
    high, low = summarization_runs[0.8], summarization_runs[0.3]
    assert high.series.peak_full_usage >= 0.95
    assert high.series.full_bound_share > 0.2 and high.series.peak_queue > 0
    assert high.series.peak_swa_usage < 0.5
    # A lower ratio grows the full pool: the median TTFT falls substantially.
    assert low.summary.ttft.median < 0.6 * high.summary.ttft.median


def test_simulated_results_are_labelled(chat_runs) -> None:
    assert chat_runs[0.15].simulated is True


def test_a_request_reaches_the_scheduler_an_ingress_after_its_send() -> None:
    lone = random_ids_workload("lone", 1, 1024, 4, range_ratio=1.0, seed=3, arrival=MaxConcurrency(1), warmup=0)
    base = dict(model=M26, gpu=H100, swa_full_tokens_ratio=1.0, kv_budget_bytes=pinned_budget(5.0).bytes)
    prefill_s = SimEngine(SimServerConfig(**base)).timing.prefill_step_s
    from autotune.sim.timing import PrefillChunk

    step = prefill_s([PrefillChunk(extend_len=1024, prefix_len=0)])
    for ingress in (0.0, 0.004, 0.05):
        result = simulate(lone, SimServerConfig(**base, request_ingress_s=ingress))
        assert result.outcomes[0].ttft_s == pytest.approx(ingress + step)


def test_a_request_sent_at_a_finish_misses_the_step_scheduled_at_that_finish() -> None:
    # Closed loop, one slot, the plain loop: the second request is sent the instant the first finishes. With no
    # ingress it is prefilled at that very instant; with one, the scheduler idles until it arrives (real SGLang
    # schedules the next step before the client's next request can reach it).
    work = random_ids_workload("loop", 2, 512, 8, range_ratio=1.0, seed=4, arrival=MaxConcurrency(1), warmup=0)
    base = dict(model=M26, gpu=H100, swa_full_tokens_ratio=1.0, kv_budget_bytes=pinned_budget(5.0).bytes,
                overlap_schedule=False)
    gaps = {}
    for ingress in (0.0, 0.004):
        first, second = simulate(work, SimServerConfig(**base, request_ingress_s=ingress)).outcomes
        assert second.start_s == pytest.approx(first.start_s + first.e2e_s)  # sent at the finish
        gaps[ingress] = second.ttft_s
    assert gaps[0.004] == pytest.approx(gaps[0.0] + 0.004)


def test_the_overlap_loop_learns_of_a_finish_one_forward_late() -> None:
    # The overlap loop schedules forward k+1 before it processes forward k's results: a request whose last token
    # came in forward k is decoded once more (its token discarded) and its KV is released only then (real 0.5.17:
    # one more decode pass per wave than the plain loop, docs/real-gpu/first-pass.md).
    sizes = {}
    for overlap in (True, False):
        e = engine(1.0, overlap_schedule=overlap)
        short, long = request(0, 512, 2), request(1, 512, 8)
        e.add(short), e.add(long)
        reports = run_until_idle(e)
        assert short.generated == 2 and long.generated == 8
        sizes[overlap] = [r.batch_size for r in reports if r.kind == "decode"]
        assert e.scheduler.swa.used == 0 and e.scheduler.full.used == 0  # everything released in the end
    assert sizes[False] == [2] + [1] * 6
    assert sizes[True] == [2, 2] + [1] * 5 + [1]  # the short one once more, then the long one's extra pass


def test_a_request_retracted_with_its_last_decode_in_flight_loses_that_token() -> None:
    # SGLang's result processor skips a retracted request (`req.is_retracted: continue`): on the overlap loop the
    # forward in flight when it was retracted gives it nothing, so it is re-prefilled with one output fewer.
    for overlap, kept in ((True, 2), (False, 3)):
        e = engine(1.0, overlap_schedule=overlap)
        req = request(0, 512, 8)
        e.add(req)
        e.step(0.0)  # prefill: output 1
        e.step(1.0)  # decode: output 2
        e.step(2.0)  # decode: output 3, in flight while the next round schedules
        e.scheduler.running.remove(req)
        e.scheduler._retract(req)
        assert req.generated == kept and req.fill_len == 512 + kept
        assert len(req.token_times) == kept  # the dropped token was never streamed


def test_the_overlap_loop_receives_requests_one_forward_behind() -> None:
    # The overlap loop polls for new requests right after launching forward k (and processing forward k-1's
    # results): a request that arrives while forward k runs, after that poll, is first seen when forward k+2 is
    # scheduled. The plain loop polls after each forward.
    for overlap, arrives_after_launch, seen_next in ((True, 1e-6, False), (True, -1e-6, True), (False, 1e-6, True)):
        e = engine(1.0, overlap_schedule=overlap)
        e.add(request(0, 512, 8))
        first = e.step(0.0)  # prefill
        second = e.step(first.end_s)  # decode
        late = request(1, 512, 8)
        e.add(late, at=second.start_s + e.config.schedule_launch_s + arrives_after_launch)
        third = e.step(second.end_s)
        if seen_next:
            assert third.kind == "prefill"
        else:
            assert third.kind == "decode" and late not in e.scheduler.running
            assert e.step(third.end_s).kind == "prefill"
        assert late.generated == 1


def test_a_burst_leaves_the_client_one_request_after_another() -> None:
    # The replay client sends a burst's requests 0.3 ms apart (the real replays' request rows): an idle server
    # prefills the first alone, and the rest, there by the next poll, in the next round (every traced phase).
    work = random_ids_workload("burst", 16, 1024, 4, range_ratio=1.0, seed=5, arrival=MaxConcurrency(16), warmup=0)
    base = dict(model=M26, gpu=H100, swa_full_tokens_ratio=1.0, kv_budget_bytes=pinned_budget(5.0).bytes)
    starts = sorted(o.start_s for o in simulate(work, SimServerConfig(**base)).outcomes)
    assert starts[1] - starts[0] == pytest.approx(0.0003) and starts[-1] - starts[0] == pytest.approx(15 * 0.0003)
    firsts = sorted(o.start_s + o.ttft_s for o in simulate(work, SimServerConfig(**base)).outcomes)
    assert firsts[0] < firsts[1]  # the first request's prefill ran alone
    at_once = simulate(work, SimServerConfig(**base, client_send_interval_s=0.0)).outcomes
    assert len({round(o.start_s + o.ttft_s, 9) for o in at_once}) == 2  # 8 x 1,024 per prefill round: two rounds


def test_a_reprefill_keeps_the_old_paths_node_sizes_while_the_full_tree_holds_it() -> None:
    # Only the fresh leaf beyond the path the full tree still holds is capped at a window; over the old path the
    # insert follows its nodes. Real 0.5.17 traced a whole 1,128-token re-prefill leaving 70 tokens evictable
    # (a node from position 70 to the end), where a fresh insert leaves 105 (a window-capped leaf).
    from autotune.pools.footprint import locked_tail

    def reprefilled(evict_full: int) -> list[int]:
        e = engine(0.5, overlap_schedule=False)
        req = request(0, 1128, 8)
        e.add(req)
        e.step(0.0)
        assert req.tree_nodes == [105, 1023]  # a fresh 1,128-token leaf, capped at the window
        e.scheduler.running.remove(req)
        e.scheduler._retract(req)
        req.tree_bounds = frozenset({70})  # stand-in: the path's nodes split at 70 by an earlier incarnation
        e.scheduler.full_tree.evict(evict_full)
        req.tree_nodes, req.kv_len, req.protected, req.fill_len = [], 0, 0, 1129
        e.scheduler._grow(req, 1129)
        e.scheduler._checkpoint(req)
        return req.tree_nodes

    nodes = reprefilled(0)
    assert nodes == [70, 1058, 1]
    assert 1129 - locked_tail(nodes, 1023) == 70
    # Leaf first: after the full tree evicted the path's deep part, its root side and the boundary in it remain.
    assert reprefilled(1128 - 500) == [70, 430, 629]
    # All of it evicted: no boundary is left, and the whole fill is a fresh leaf.
    assert reprefilled(1128) == [106, 1023]


def test_a_reprefill_over_its_old_path_frees_the_old_full_kv() -> None:
    # SGLang's insert over a path whose SWA was evicted (tombstoned nodes) frees the old nodes' full KV and adopts
    # the new (swa_radix_cache._insert_helper): the old path leaves the evictable cache, available grows by it and
    # used does not change, so the request's path is never cached twice.
    e = engine(0.5, overlap_schedule=False)
    s = e.scheduler
    req = request(0, 1128, 8)
    e.add(req)
    e.step(0.0)
    s.running.remove(req)
    s._retract(req)
    assert s.full.evictable == 1128 and s.full_tree.held_prefix(req) == 1128
    req.cached_len = 0  # its SWA tail evicted: no prefix hit, the whole fill is prefilled again
    used = s.full.used
    s._grow(req, 600)
    s._checkpoint(req)
    assert s.full.used == used + 600 and s.full.evictable == 1128 - 600
    assert s.full_tree.held_prefix(req) == 1128  # the path still reaches as far: its first 600 locked again
    s._grow(req, 529)
    s._checkpoint(req)
    assert s.full.evictable == 0 and s.full.used == used + 1129

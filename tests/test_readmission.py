"""Re-admission after a retraction (docs/sglang-swa-accounting.md §4): a retracted request's inserted
fill stays in the radix tree, unlocked, and is a prefix hit at re-admission unless tree eviction (LRU)
takes any of it first; the simulator's scheduler (autotune/sim/scheduler.py) models both, and on the
real 0.5.17 grid (docs/real-gpu/footprint.md) eviction always wins."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from autotune.hardware import load_gpu
from autotune.models import load_model
from autotune.pools import pinned_budget
from autotune.sim.config import SimServerConfig
from autotune.sim.engine import SimEngine
from autotune.sim.request import SimRequest

from conftest import load_bench

W = 1023
M26 = load_model("26B-A4B")
H100 = load_gpu("H100")
REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "docs" / "real-gpu" / "footprint"


def engine(version: str = "0.5.17") -> SimEngine:
    # The plain loop: each step's inserts are done when it returns, so the tree can be read between steps
    # (the overlap loop defers a completed prefill's insert by one round: tests/test_sim_engine.py).
    return SimEngine(SimServerConfig(
        model=M26, gpu=H100, swa_full_tokens_ratio=1.0, kv_budget_bytes=pinned_budget(20.0).bytes,
        sglang_version=version, overlap_schedule=False,
    ))


def step(e: SimEngine, now: float = 0.0):
    report = e.step(now)
    assert report.kind != "idle"
    return report


def retract(e: SimEngine, req: SimRequest) -> None:
    """What retract_decode does to one request, chosen here instead of by memory pressure."""
    s = e.scheduler
    s._retract(req)
    s.running.remove(req)


def cached_tokens(report) -> int:
    return int(re.search(r"#cached-token: (\d+)", report.log_line).group(1))


@pytest.mark.parametrize("version", ["0.5.17", "0.5.23"])
def test_a_retracted_request_re_prefills_only_its_missing_part(version: str) -> None:
    e = engine(version)
    s = e.scheduler
    req = SimRequest(rid="0", prompt_len=2000, max_new_tokens=600, arrival_s=0.0)
    e.add(req)
    step(e)  # prefill: one token out
    for _ in range(299):
        step(e)
    assert req.generated == 300 and req.swa_used == W + 299  # L(P) = W, 299 decoded slots held
    retract(e, req)
    assert (s.full.used, s.swa.used) == (0, 0)  # nothing locked: the prompt is evictable tree cache
    report = step(e)
    # match_prefix(prompt + output) hits the prompt; only the 300 kept output tokens are computed.
    assert report.kind == "prefill" and cached_tokens(report) == 2000 and report.new_tokens == 300
    assert req.prefilled == req.kv_len == 2300 and s.counters.prefix_hit_tokens == 2000
    # The re-prefilled output is a new 300-token node under the prompt's W tail: the lock covers both.
    assert req.swa_locked == 300 + W and s.swa.used == 300 + W
    assert s.full.used == 2300
    while not req.finished:
        step(e)
    assert req.generated == 600
    # One retraction: the prompt once plus the 300 output tokens again.
    assert s.counters.prefill_tokens_computed == 2000 + 300


def test_lru_eviction_under_pressure_loses_the_hit_and_the_fill_is_prefilled_again() -> None:
    e = engine()
    s = e.scheduler
    old = SimRequest(rid="old", prompt_len=1500, max_new_tokens=400, arrival_s=0.0)
    e.add(old)
    for _ in range(100):
        step(e)
    retract(e, old)  # its prompt keeps its prefill's age: the oldest thing in the tree
    s.waiting.remove(old)
    new = SimRequest(rid="new", prompt_len=800, max_new_tokens=5, arrival_s=0.0)
    e.add(new)  # it finishes meanwhile: its cache is newer
    while not new.finished:
        step(e)
    s.waiting.append(old)
    s.full_tree.evict(1)  # one token of pressure: LRU takes it from the retracted prompt
    report = step(e)
    assert cached_tokens(report) == 0 and report.new_tokens == 1500 + 100


def test_lru_evicts_older_cache_before_a_newer_retracted_prefix() -> None:
    e = engine()
    s = e.scheduler
    done = SimRequest(rid="done", prompt_len=800, max_new_tokens=5, arrival_s=0.0)
    e.add(done)
    while not done.finished:
        step(e)
    kept = SimRequest(rid="kept", prompt_len=1500, max_new_tokens=400, arrival_s=0.0)
    e.add(kept)
    for _ in range(100):
        step(e)
    retract(e, kept)
    s.full_tree.evict(500)
    s.swa_tree.evict(500)  # both come out of the finished request's older cache
    report = step(e)
    assert cached_tokens(report) == 1500 and report.new_tokens == 100


@pytest.mark.skipif(not any(DATA.glob("*/results.jsonl")), reason=f"no results under {DATA}")
def test_real_0517_storms_get_no_prefix_hit_and_neither_does_the_simulator() -> None:
    bench = load_bench("swa_footprint_fidelity")
    # Real: about 2,700 retractions over the grid, and every prefill line says #cached-token: 0.
    retracted = hits = lines = 0
    for path in DATA.glob("*/results.jsonl"):
        for text in path.read_text().splitlines():
            record = json.loads(text)
            if record.get("kind") != "phase" or not record.get("log"):
                continue
            log = record["log"]
            cached = log["prefill_cols"].index("cached_tokens")
            lines += len(log["prefill"])
            hits += sum(row[cached] > 0 for row in log["prefill"])
            retracted += sum(row[1] for row in log["retract"])
    assert lines > 5000 and retracted > 2500 and hits == 0
    boots, phases, _ = bench.load(DATA)
    storm = next(p for p in phases if p.ratio == 0.9 and p.shape == "1024/128@64")
    from autotune.sim.run import simulate
    from autotune.workloads import MaxConcurrency, random_ids_workload

    simulator = bench.Simulator(boots)
    workload = random_ids_workload(
        storm.name, num_prompts=storm.requests, input_len=storm.prompt, output_len=storm.output, range_ratio=1.0,
        seed=1000 + storm.index, arrival=MaxConcurrency(storm.concurrency), warmup=0)
    result = simulate(workload, simulator.config(0.9))
    lines = [line for line in result.log_lines if line.startswith("Prefill batch")]
    assert sum("#cached-token: 0," in line for line in lines) == len(lines)
    assert result.outcomes and sum(o.success for o in result.outcomes) == storm.requests


def small_scheduler(version: str, swa_tokens: int):
    """A bare scheduler with the release's rules, a roomy full pool and an SWA pool of `swa_tokens`."""
    from autotune.pools.footprint import release_rules
    from autotune.sim.scheduler import Scheduler, SchedulerConfig

    rules = release_rules(version)
    return Scheduler(SchedulerConfig(
        full_tokens=100_000, swa_tokens=swa_tokens, window=W, rules=rules,
        fixed_length_full_reservation=rules.fixed_length_full_reservation,
        shrink_chunk_on_transient_swa_pressure=rules.shrink_chunk_on_transient_swa_pressure,
    ), engine(version).timing)


def round_with_a_readmitted_request(version: str, swa_tokens: int) -> list[tuple[str, int, bool]]:
    """One admission round: R, retracted with 100 of its 128 outputs kept (fill 500 + 100), then Q, a
    fresh 2,000-token prompt, in a SWA pool of `swa_tokens`. Returns (rid, extend, completes) per chunk."""
    s = small_scheduler(version, swa_tokens)
    s.add(SimRequest(rid="R", prompt_len=500, max_new_tokens=128, arrival_s=0.0, generated=100, fill_len=600))
    s.add(SimRequest(rid="Q", prompt_len=2000, max_new_tokens=128, arrival_s=0.0))
    return [(req.rid, extend, done) for req, extend, done in s._prefill_batch()]


@pytest.mark.parametrize("version", ["0.5.17", "0.5.23"])
def test_an_admitted_request_reserves_its_whole_max_new_tokens_outputs_kept_or_not(version: str) -> None:
    # R's gate asks for its remaining 28 outputs: min(600 + 28, W) + 1 = 629 SWA tokens. Once admitted, the
    # round reserves min(max_new_tokens, CLIP) = 128: min(600 + 128, W) + 1 = 729 (_update_prefill_budget in
    # both releases). Q needs max(2000 - W, 0) + min(2000 + 128, W) + 1 = 2001 < 2700 - 629 but not < 2700 - 729.
    batch = round_with_a_readmitted_request(version, swa_tokens=2700)
    assert batch[0] == ("R", 600, True)
    if version == "0.5.17":
        # 0.5.17 shrinks Q's chunk to what is left above Q's decode headroom: 2700 - 729 - (128 + 1).
        assert batch[1:] == [("Q", 2700 - 729 - 129, False)]
    else:
        assert batch[1:] == []  # 0.5.23: transient SWA pressure, Q waits for the next round
    # With 100 more SWA slots Q fits whole in both releases.
    assert round_with_a_readmitted_request(version, swa_tokens=2800)[1:] == [("Q", 2000, True)]


@pytest.mark.parametrize("version", ["0.5.17", "0.5.23"])
def test_a_second_truncated_request_ends_the_first_ones_prefill_where_it_was_cut(version: str) -> None:
    # SGLang tracks one chunked request per round (`adder.new_chunked_req`), but a chunk cut by SWA room
    # leaves budget, so the round goes on; a second request cut the same way replaces the first as the
    # chunked one, and the first is treated as prefilled: it decodes from a partial prompt (measured on
    # real 0.5.17: a request cut at 863 tokens got its next output token and was retracted holding 864).
    s = small_scheduler(version, swa_tokens=1000)
    a = SimRequest(rid="A", prompt_len=1000, max_new_tokens=128, arrival_s=0.0, generated=80, fill_len=1080)
    b = SimRequest(rid="B", prompt_len=1000, max_new_tokens=128, arrival_s=0.0, generated=100, fill_len=1100)
    s.add(a)
    s.add(b)
    # A needs more SWA than the pool holds: its chunk is what is left above its 48-token decode headroom,
    # 1000 - (48 + 1) = 951, which reserves 952. B then gets 48 - (28 + 1) = 19 and becomes the chunked one.
    report = s.step(0.0)
    assert report.kind == "prefill" and report.new_tokens == 951 + 19
    assert s.chunked is b and b.prefilled == 19
    assert a in s.running and a.prefilled == a.kv_len == a.fill_len == 951 and a.generated == 81
    # A retraction re-queues A with its whole fill again (prompt + kept output).
    s._retract(a)
    s.running.remove(a)
    assert a.fill_len == 1000 + 81 and a.prefilled == 0

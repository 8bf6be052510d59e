"""The per-request SWA footprint, per SGLang release (autotune/pools/footprint.py), against the real
SGLang 0.5.17 measurements and the code study (docs/sglang-swa-accounting.md §6), and the simulator's
engine and the capacity model that both follow it."""

from __future__ import annotations

import re

import pytest

from autotune.hardware import load_gpu
from autotune.models import load_model
from autotune.pools import KVGeometry, WorkloadShape, analytic_optimum
from autotune.pools.footprint import (
    admission_swa_reservation,
    decoded_held,
    locked_prompt_tail,
    peak_swa_tokens,
    release_rules,
    running_footprint,
)
from autotune.sim.config import SimServerConfig
from autotune.sim.run import simulate
from autotune.workloads import MaxConcurrency, random_ids_workload

W = 1023  # Gemma 4's window as SGLang runs it
V17, V23 = release_rules("0.5.17"), release_rules("0.5.23")
M26 = load_model("26B-A4B")
H200 = load_gpu("H200")
REAL_KV_BUDGET = int(15.042 * 2**30)  # the real H200 run's `kvcache` (docs/real-gpu/README.md)

# Real SGLang 0.5.17, H200, dummy 26B-A4B, ratio 1.0, 8 requests at once: peak swa_used_tokens per
# running request (docs/sglang-swa-accounting.md §6).
MEASURED = [(512, 384, 864), (1024, 384, 1391), (2048, 384, 1367), (4096, 384, 1383), (3000, 1200, 2220)]
# How the 3000-token prompts were chunked by 8192-token prefill batches (§6): 6 whole, one 2192 + 808
# (locks 808 + 1023) and one 1384 + 1616.
CHUNKS_3000 = [[3000]] * 6 + [[2192, 808], [1384, 1616]]
LOG_INTERVAL = 40  # decode_log_interval: the gauge is sampled every 40 decode steps


def _sampled_peaks(rules, prompt: int, output: int) -> list[float]:
    """Mean swa_used per request at the gauge's sample points, for every phase of the 40-step sampling
    and of 0.5.17's global forward counter: the peak sample for each phase pair."""
    chunks = CHUNKS_3000 if prompt == 3000 else [[prompt]] * 8
    steps = output - 1
    peaks = []
    for phase in range(0, rules.eviction_interval, 8):
        per_step = []
        for j in range(1, steps + 1):
            used = [running_footprint(rules, prompt, j, W, chunks=c, first_forward_iter=phase).swa_used for c in chunks]
            per_step.append(sum(used) / len(used))
        for offset in range(0, LOG_INTERVAL, 4):
            peaks.append(max(per_step[offset::LOG_INTERVAL]))
    return peaks


@pytest.mark.parametrize(("prompt", "output", "real"), MEASURED)
def test_footprint_reproduces_the_measured_0517_peaks(prompt: int, output: int, real: int) -> None:
    peaks = _sampled_peaks(V17, prompt, output)
    lo, hi = min(peaks), max(peaks)
    assert lo <= real * 1.01 and hi >= real * 0.99, (lo, hi)  # the measurement lies in the predicted range
    assert (lo + hi) / 2 == pytest.approx(real, rel=0.03)  # and its middle within 3 %


def test_locked_prompt_tail_is_node_granular() -> None:
    assert locked_prompt_tail(512, W) == 512
    assert locked_prompt_tail(4096, W) == W
    assert locked_prompt_tail(3000, W, chunks=[2192, 808]) == 808 + W  # last chunk shorter than the window
    assert locked_prompt_tail(3000, W, chunks=[1384, 1616]) == W
    assert locked_prompt_tail(9000, W, chunked_prefill_size=8192) == 808 + W


def test_releases_differ_where_the_code_says() -> None:
    # 0.5.23: per-request trigger, first real free at j = W + I + 1, deterministic.
    assert decoded_held(V23, W + 128, W, prompt_len=3000) == W + 128
    assert decoded_held(V23, W + 129, W, prompt_len=3000) == W + 1
    assert decoded_held(V23, W + 129 + 127, W, prompt_len=3000) == W + 128
    # 0.5.17: the global forward_iter % 128 cadence; the first free may come as early as j = W + 2.
    early = [decoded_held(V17, W + 2, W, prompt_len=3000, first_forward_iter=phase) for phase in range(128)]
    assert min(early) == W + 1 and max(early) == W + 2
    # Both: never more than W + I decoded tokens, and nothing decoded is freed before j > W + 1.
    for rules in (V17, V23):
        assert decoded_held(rules, W + 1, W, prompt_len=100) == W + 1
        assert max(decoded_held(rules, j, W, prompt_len=100, first_forward_iter=5) for j in range(1, 1600)) <= W + 128
    # The prompt's out-of-window part: evictable tree cache in 0.5.17, freed in 0.5.23 (1-token remainder).
    old, new = running_footprint(V17, 5000, 10, W), running_footprint(V23, 5000, 10, W)
    assert (old.swa_used, old.swa_evictable) == (W + 10, 5000 - W)
    assert (new.swa_used, new.swa_evictable) == (W + 10, 1)
    # Admission rules by release.
    assert V17.shrink_chunk_on_transient_swa_pressure and not V23.shrink_chunk_on_transient_swa_pressure
    assert V23.fixed_length_full_reservation and not V17.fixed_length_full_reservation
    assert release_rules("sglang-0.5.17+dummy-weights") == V17


def test_admission_reserves_less_than_the_footprint() -> None:
    # max(min(extend, chunk) - W, 0) + min(extend + max_new, W) + page: one window at most beyond the chunk.
    assert admission_swa_reservation(1024, 128, W, 1, 8192) == 1 + W + 1
    assert peak_swa_tokens(V17, 1024, 128, W) == W + 127 + 1
    assert peak_swa_tokens(V23, 3000, 1200, W) == W + W + 128 + 1


@pytest.mark.parametrize("version", ["0.5.17", "0.5.23"])
@pytest.mark.parametrize(("prompt", "output", "real"), MEASURED)
def test_simulator_reproduces_the_per_request_peak(version: str, prompt: int, output: int, real: int) -> None:
    work = random_ids_workload("fp", 8, prompt, output, range_ratio=1.0, arrival=MaxConcurrency(8), warmup=0)
    config = SimServerConfig(model=M26, gpu=H200, swa_full_tokens_ratio=1.0, kv_budget_bytes=REAL_KV_BUDGET,
                             sglang_version=version, prefill_cuda_graph=False)
    result = simulate(work, config)
    peak = 0.0
    for line in result.log_lines:  # the decode log lines: what the gauge samples, every 40 decode steps
        m = re.search(r"#running-req: (\d+), .*#swa token: (\d+)", line)
        if m and int(m.group(1)) == 8:
            peak = max(peak, int(m.group(2)) / 8)
    assert peak == pytest.approx(real, rel=0.03)
    assert all(o.success for o in result.outcomes)


@pytest.mark.parametrize("version", ["0.5.17", "0.5.23"])
def test_analytic_optimum_is_not_below_the_real_chat_collapse(version: str) -> None:
    # Real 0.5.17 on the H200 (15.042 GiB of KV): chat 1k/128 at 64 at once holds at 1.0 and collapses
    # at 0.8 (docs/real-gpu/footprint.md). The capacity model's first trial must not land in the collapse.
    best = analytic_optimum(KVGeometry.of(M26), REAL_KV_BUDGET, WorkloadShape(1024, 128, 64), sglang_version=version)
    assert best.ratio > 0.9

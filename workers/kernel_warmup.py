"""Prefill shapes sent before a trial measures, so that it does not time SGLang's kernel compiles.

SGLang compiles some kernels the first time a process meets a new shape class, not at boot: its
fused-MoE Triton kernel takes a tuned config by the batch's token count M (the nearest of the tuning
grid's batch sizes, below) and Triton specialises a kernel on whether its integer arguments are
divisible by 16, so M odd and M even compile apart. Decode runs in CUDA graphs captured at boot;
prefill (eager) does not. Measured on real SGLang 0.5.17 (H200, docs/real-gpu/first-pass.md): the
first pass of a retraction storm on a fresh node compiled five such kernel pairs, about a second
each, and took 30 % longer than the identical second pass on the same server (same prefill batches,
same decode steps, same retractions). Storms make small odd prefills, so it is the low ratios whose
first measurement such compiles inflate: a bias, not noise.

Before the measured replay the trial sends one prompt per token count below, one at a time (each
is a prefill batch of exactly that many tokens) with a single output token, then flushes the radix
cache, so the measured run starts as clean as without the warm-up. With the node's compile caches
warm this costs a few seconds; on a cold node it moves the compiles out of the measurement. The
trial then calls SGLang's /freeze_gc (`freeze_gc` below).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Callable

import aiohttp

from autotune.workloads import MaxConcurrency, RequestSpec, Workload
from workers.replay import ReplayConfig, replay

# The batch sizes SGLang's fused-MoE tuning script tunes for (its config files are keyed by them).
MOE_TUNED_TOKEN_COUNTS = (1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 256, 512, 1024, 1536, 2048, 3072, 4096)
# SGLang's largest default chunked-prefill size on a big GPU: no prefill batch is longer.
LONGEST_PREFILL = 8192


def prefill_token_counts(longest: int = LONGEST_PREFILL) -> tuple[int, ...]:
    """Each tuned token count and its odd/even neighbour, plus the longest chunk, up to `longest`."""
    counts = {c for k in MOE_TUNED_TOKEN_COUNTS for c in (k, k + 1)} | {longest}
    return tuple(sorted(c for c in counts if 1 <= c <= longest))


@dataclass(frozen=True)
class WarmupReport:
    requests: int
    failed: int
    seconds: float
    flushed: bool


def warmup_workload(counts: tuple[int, ...]) -> Workload:
    requests = tuple(RequestSpec(index=i, prompt_len=n, output_len=1) for i, n in enumerate(counts))
    return Workload(name="kernel-warmup", requests=requests, arrival=MaxConcurrency(1), warmup=0, seed=4242,
                    source={"kind": "kernel-warmup", "token_counts": list(counts)})


async def warm_prefill_kernels(
    base_url: str, counts: tuple[int, ...], *, hang_timeout_s: float = 120.0,
    server_alive: Callable[[], bool] | None = None, vocab_size: int = 32000,
) -> WarmupReport:
    """Send the prompts one at a time, then /flush_cache. A request the server refuses (a model
    with a shorter context) is counted, not raised: the warm-up is best effort. A crash or hang
    raises TrialFailure, as in the measured replay."""
    started = time.monotonic()
    result = await replay(warmup_workload(counts),
                          ReplayConfig(base_url=base_url, hang_timeout_s=hang_timeout_s, vocab_size=vocab_size),
                          server_alive=server_alive)
    flushed = await flush_cache(base_url)
    return WarmupReport(len(result.outcomes), sum(not o.success for o in result.outcomes),
                        round(time.monotonic() - started, 2), flushed)


async def freeze_gc(base_url: str) -> bool:
    """SGLang's /freeze_gc: each server process moves the objects it holds now out of the GC's sight
    (gc.freeze), so later collections do not scan them. SGLang's own long-GC warning advises it after
    warm-up. Measured (0.5.17, H200): a generation-2 collection over ~800k boot-time objects took
    0.4 s in the scheduler; with the GC frozen a retraction storm ran 11-13 % faster, first pass and
    second alike. False when the server refuses (an older SGLang without the endpoint)."""
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
            async with session.post(f"{base_url}/freeze_gc") as response:
                return response.status == 200
    except (aiohttp.ClientError, asyncio.TimeoutError):
        return False


async def flush_cache(base_url: str, attempts: int = 10) -> bool:
    """POST /flush_cache; SGLang refuses it while requests are in flight, so retry briefly."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        for _ in range(attempts):
            try:
                async with session.post(f"{base_url}/flush_cache") as response:
                    if response.status == 200:
                        return True
            except (aiohttp.ClientError, asyncio.TimeoutError):
                pass
            await asyncio.sleep(0.2)
    return False

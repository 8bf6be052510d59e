"""Replay a workload against a server's `/generate`, streaming, on one asyncio event loop.

Requests go out by the workload's arrival process (a concurrency semaphore, Poisson or trace
offsets) as token ids with `ignore_eos`, so no tokenizer is needed and every request generates
exactly its `output_len`. Per-request timings follow bench_serving (`stream_timings`). A
watchdog turns "requests outstanding, nothing streamed for `hang_timeout_s`" into a HANG and a
dead server into a CRASH, so a replay never waits forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass
from typing import Awaitable, Callable

import aiohttp

from autotune.serving_metrics import RequestOutcome, stream_timings
from autotune.workloads import RequestSpec, Workload, concurrency_limit, send_offsets
from workers.failures import FailureKind, TrialFailure


@dataclass(frozen=True)
class ReplayConfig:
    base_url: str
    hang_timeout_s: float = 120.0
    vocab_size: int = 32000
    watchdog_interval_s: float = 0.5


@dataclass(frozen=True)
class ReplayResult:
    outcomes: tuple[RequestOutcome, ...]
    duration_s: float
    started_at: float  # time.monotonic() at the measured run's start


class _Progress:
    def __init__(self) -> None:
        self.last = time.monotonic()
        self.outstanding = 0
        self.done = 0

    def tick(self) -> None:
        self.last = time.monotonic()


async def _one_request(
    session: aiohttp.ClientSession,
    config: ReplayConfig,
    workload: Workload,
    spec: RequestSpec,
    t0: float,
    progress: _Progress,
) -> RequestOutcome:
    payload = {
        "input_ids": workload.prompt_ids(spec, config.vocab_size),
        "sampling_params": {"max_new_tokens": spec.output_len, "ignore_eos": True, "temperature": 0.0},
        "stream": True,
    }
    start = time.monotonic()
    chunks: list[tuple[float, int]] = []
    tokens, error, finish = 0, None, None
    progress.outstanding += 1
    try:
        async with session.post(f"{config.base_url}/generate", json=payload) as response:
            if response.status != 200:
                error = f"HTTP {response.status}: {(await response.text())[:300]}"
            else:
                # Server-sent events, split by hand: SGLang's cumulative chunks outgrow any line limit.
                buffer = b""
                async for piece in response.content.iter_any():
                    buffer += piece
                    *events, buffer = buffer.split(b"\n\n")
                    for event in events:
                        data = event.strip()
                        if not data.startswith(b"data:"):
                            continue
                        data = data[5:].strip()
                        if data == b"[DONE]":
                            continue
                        now = time.monotonic()
                        progress.tick()
                        meta = json.loads(data).get("meta_info", {})
                        count = int(meta.get("completion_tokens", tokens))
                        if count > tokens:
                            chunks.append((now, count))
                            tokens = count
                        finish = meta.get("finish_reason") or finish
    except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:
        error = f"{type(exc).__name__}: {exc}"
    finally:
        progress.outstanding -= 1
        progress.done += 1
        progress.tick()
    end = time.monotonic()
    if error is None and isinstance(finish, dict) and finish.get("type") == "abort":
        error = f"aborted by the server: {finish.get('message', '')}"
    if error is None and tokens != spec.output_len:
        error = f"got {tokens} tokens, expected {spec.output_len}"
    ttft, itls = stream_timings(start, chunks)
    return RequestOutcome(
        index=spec.index,
        prompt_len=spec.prompt_len,
        output_len=tokens,
        success=error is None,
        start_s=start - t0,
        ttft_s=ttft,
        itl_s=itls,
        e2e_s=end - start if error is None else None,
        error=error,
    )


async def _watchdog(
    progress: _Progress, config: ReplayConfig, server_alive: Callable[[], bool] | None, tasks: list[asyncio.Task]
) -> None:
    while True:
        await asyncio.sleep(config.watchdog_interval_s)
        if server_alive is not None and not server_alive():
            failure = TrialFailure(FailureKind.CRASHED, "the server process died during the replay")
        elif progress.outstanding and time.monotonic() - progress.last > config.hang_timeout_s:
            failure = TrialFailure(
                FailureKind.HANG,
                f"{progress.outstanding} requests outstanding and nothing streamed for {config.hang_timeout_s:.0f} s",
            )
        else:
            continue
        for task in tasks:
            task.cancel()
        raise failure


@dataclass
class _Phase:
    """One batch of requests (the warm-up, then the measured run) under one watchdog."""

    session: aiohttp.ClientSession
    config: ReplayConfig
    workload: Workload
    server_alive: Callable[[], bool] | None
    on_done: Callable[[RequestOutcome], None] | None = None

    async def _send_all(
        self, specs: tuple[RequestSpec, ...], offsets: tuple[float, ...], limit: int | None, t0: float, progress: _Progress
    ) -> list[RequestOutcome]:
        slots = asyncio.Semaphore(limit) if limit else contextlib.nullcontext()

        async def gated(spec: RequestSpec, offset: float) -> RequestOutcome:
            delay = t0 + offset - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            async with slots:
                outcome = await _one_request(self.session, self.config, self.workload, spec, t0, progress)
            if self.on_done is not None:
                self.on_done(outcome)
            return outcome

        return list(await asyncio.gather(*(gated(s, o) for s, o in zip(specs, offsets))))

    async def run(
        self, specs: tuple[RequestSpec, ...], offsets: tuple[float, ...], limit: int | None
    ) -> tuple[list[RequestOutcome], float]:
        """Send `specs`; returns outcomes and the phase's start (monotonic). Raises on crash/hang."""
        progress = _Progress()
        t0 = time.monotonic()
        sender = asyncio.ensure_future(self._send_all(specs, offsets, limit, t0, progress))
        watchdog = asyncio.ensure_future(_watchdog(progress, self.config, self.server_alive, [sender]))
        try:
            done, _ = await asyncio.wait({sender, watchdog}, return_when=asyncio.FIRST_COMPLETED)
            if watchdog in done:
                watchdog.result()  # raises the TrialFailure (crash or hang)
            return sender.result(), t0
        finally:
            for task in (watchdog, sender):
                task.cancel()
            await asyncio.gather(watchdog, sender, return_exceptions=True)


async def replay(
    workload: Workload,
    config: ReplayConfig,
    *,
    server_alive: Callable[[], bool] | None = None,
    on_start: Callable[[float], Awaitable[None]] | None = None,
    on_done: Callable[[RequestOutcome], None] | None = None,
) -> ReplayResult:
    """Warm up (one at a time, excluded), then replay; raise TrialFailure on a crash or hang.

    `on_start(t0)` is awaited just before the measured part begins (the scraper takes its
    baseline there, so counter growth covers exactly the measured requests).
    """
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        warmups = workload.warmup_requests()
        if warmups:
            await _Phase(session, config, workload, server_alive).run(warmups, (0.0,) * len(warmups), 1)
        if on_start is not None:
            await on_start(time.monotonic())
        specs = workload.requests
        outcomes, t0 = await _Phase(session, config, workload, server_alive, on_done).run(
            specs, send_offsets(workload.arrival, specs), concurrency_limit(workload.arrival)
        )
        return ReplayResult(outcomes=tuple(outcomes), duration_s=time.monotonic() - t0, started_at=t0)

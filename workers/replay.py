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
from dataclasses import dataclass, field, replace
from typing import Awaitable, Callable

import aiohttp

from autotune.measure.serving_metrics import RequestOutcome, stream_timings
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
    stopped_early: bool = False


class _Progress:
    def __init__(self) -> None:
        self.last = time.monotonic()
        self.outstanding = 0
        self.done = 0

    def tick(self) -> None:
        self.last = time.monotonic()


_META_KEY = b'"meta_info":'
_DECODER = json.JSONDecoder()


def _meta_info(data: bytes) -> dict:
    """The `meta_info` object of one streamed chunk, without decoding the rest.

    SGLang streams cumulative `text` and `output_ids`, so chunk k carries k token ids: decoding
    whole chunks costs the client O(n^2) per request and, at hundreds of streams, a whole core.
    `meta_info` comes last and is small; decode just it.
    """
    at = data.rfind(_META_KEY)
    if at < 0:
        return json.loads(data).get("meta_info", {})
    meta, _ = _DECODER.raw_decode(data[at + len(_META_KEY):].decode())
    return meta


async def _one_request(
    session: aiohttp.ClientSession,
    config: ReplayConfig,
    workload: Workload,
    spec: RequestSpec,
    t0: float,
    progress: _Progress,
) -> tuple[bool, RequestOutcome]:
    """One streamed request; the flag says it was timed on a simulator's clock."""
    payload = {
        "input_ids": workload.prompt_ids(spec, config.vocab_size),
        "sampling_params": {"max_new_tokens": spec.output_len, "ignore_eos": True, "temperature": 0.0},
        "stream": True,
    }
    start = time.monotonic()
    chunks: list[tuple[float, int]] = []
    sim_chunks: list[tuple[float, int]] = []  # the same, on a simulator's clock (see _sim_times)
    sim_arrival: float | None = None
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
                        meta = _meta_info(data)
                        count = int(meta.get("completion_tokens", tokens))
                        if count > tokens:
                            chunks.append((now, count))
                            if "sim_clock_s" in meta:
                                sim_arrival = meta["sim_arrival_s"]
                                sim_chunks.append((meta["sim_clock_s"], count))
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
    on_sim_clock = bool(sim_chunks) and len(sim_chunks) == len(chunks) and error is None
    if on_sim_clock:
        # A simulated server stamps its own clock; on it, this client's CPU time is not GPU time.
        # start_s stays absolute (simulated seconds) until _Phase.run rebases the phase on it.
        start, end, chunks, t0 = sim_arrival, sim_chunks[-1][0], sim_chunks, 0.0
    ttft, itls = stream_timings(start, chunks)
    return on_sim_clock, RequestOutcome(
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


class StoppedEarly(Exception):
    """The caller's `should_stop` said the run is clearly lost: end it, keep what finished."""


async def _watchdog(
    progress: _Progress,
    config: ReplayConfig,
    server_alive: Callable[[], bool] | None,
    tasks: list[asyncio.Task],
    should_stop: Callable[[int], bool] | None = None,
) -> None:
    while True:
        await asyncio.sleep(config.watchdog_interval_s)
        if should_stop is not None and should_stop(progress.done):
            for task in tasks:
                task.cancel()
            raise StoppedEarly()
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
    should_stop: Callable[[int], bool] | None = None
    on_send: Callable[[int], None] | None = None  # a request's index as it goes out
    completed: list[tuple[bool, RequestOutcome]] = field(default_factory=list)

    async def _send_all(
        self, specs: tuple[RequestSpec, ...], offsets: tuple[float, ...], limit: int | None, t0: float, progress: _Progress
    ) -> list[tuple[bool, RequestOutcome]]:
        slots = asyncio.Semaphore(limit) if limit else contextlib.nullcontext()

        async def gated(spec: RequestSpec, offset: float) -> tuple[bool, RequestOutcome]:
            delay = t0 + offset - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            async with slots:
                if self.on_send is not None:
                    self.on_send(spec.index)
                timed = await _one_request(self.session, self.config, self.workload, spec, t0, progress)
            self.completed.append(timed)
            if self.on_done is not None:
                self.on_done(timed[1])
            return timed

        return list(await asyncio.gather(*(gated(s, o) for s, o in zip(specs, offsets))))

    async def run(
        self, specs: tuple[RequestSpec, ...], offsets: tuple[float, ...], limit: int | None
    ) -> tuple[list[RequestOutcome], float, float]:
        """Send `specs`; returns outcomes, the phase's duration and start (monotonic).
        Raises TrialFailure on a crash or a hang; StoppedEarly leaves `completed` for the caller."""
        progress = _Progress()
        t0 = time.monotonic()
        sender = asyncio.ensure_future(self._send_all(specs, offsets, limit, t0, progress))
        watchdog = asyncio.ensure_future(_watchdog(progress, self.config, self.server_alive, [sender], self.should_stop))
        try:
            done, _ = await asyncio.wait({sender, watchdog}, return_when=asyncio.FIRST_COMPLETED)
            if watchdog in done:
                watchdog.result()  # raises the TrialFailure (crash or hang)
            timed = sender.result()
            return (*_on_one_clock(timed), t0) if timed else ([], 0.0, t0)
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
    should_stop: Callable[[int], bool] | None = None,
    on_send: Callable[[int], None] | None = None,
) -> ReplayResult:
    """Warm up (one at a time, excluded), then replay; raise TrialFailure on a crash or hang.

    `on_start(t0)` is awaited just before the measured part begins (the scraper takes its
    baseline there, so counter growth covers exactly the measured requests). `on_send(index)`
    and `on_done(outcome)` see each measured request go out and come back.
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
        measured = _Phase(session, config, workload, server_alive, on_done, should_stop, on_send)
        try:
            outcomes, duration, t0 = await measured.run(
                specs, send_offsets(workload.arrival, specs), concurrency_limit(workload.arrival)
            )
        except StoppedEarly:
            # Requests still streaming are dropped; the finished ones say how the run was going.
            outcomes, duration = _on_one_clock(measured.completed) if measured.completed else ([], 0.0)
            return ReplayResult(outcomes=tuple(outcomes), duration_s=duration, started_at=time.monotonic(), stopped_early=True)
        return ReplayResult(outcomes=tuple(outcomes), duration_s=duration, started_at=t0)


def _on_one_clock(timed: list[tuple[bool, RequestOutcome]]) -> tuple[list[RequestOutcome], float]:
    """Outcomes and the phase's duration on one clock: the simulator's when it stamped every
    successful request (start times rebased on the first arrival), else the wall clock."""
    outcomes = [outcome for _, outcome in timed]
    if not all(sim for sim, outcome in timed if outcome.success) or not any(sim for sim, _ in timed):
        ends = [o.start_s + (o.e2e_s or 0.0) for o in outcomes]
        return outcomes, max(ends)
    first = min(o.start_s for sim, o in timed if sim)
    rebased = [replace(o, start_s=o.start_s - first) if sim else replace(o, start_s=0.0) for sim, o in timed]
    return rebased, max(o.start_s + (o.e2e_s or 0.0) for o in rebased)

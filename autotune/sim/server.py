"""`python -m autotune.sim.server`: a simulated SGLang server that speaks SGLang's HTTP API.

The tuner's worker boots `python -m sglang.launch_server FLAGS` on a GPU; on a CPU machine it boots
this module with the same FLAGS (autotune/sim/args.py) and talks to it the same way: the same
start-up log lines, /health, /generate, /v1/completions, /server_info and /metrics. Behind the
API, `SimEngine` (the pools, admission, retraction and step times of SGLang's scheduler) runs
against the wall clock, optionally sped up by `--time-scale`.

One asyncio task drives the engine like SGLang's event loop: step, sleep until the step would end
on the GPU, hand the step's tokens to the waiting HTTP handlers, repeat; requests that arrive
during a step join at the next one. The handlers never touch the engine's requests directly:
each request has a `Pending` that the loop updates after each step, so a handler that runs late
sees the tokens of the steps that have *ended*, never those of the step in flight.

The request and response bodies are autotune/sim/api.py's. Deliberate differences from SGLang, all small:
- the output is a filler (" tok" per token, token id 1000), and a `text` prompt counts
  `len(text.split())` tokens (there is no tokenizer); generation always runs to max_new_tokens
  (no EOS is simulated), finish_reason {"type": "length"}. With --skip-tokenizer-init, as in
  SGLang, /generate answers output_ids without text and refuses text prompts;
- batch requests (a list of prompts) are refused with 400;
- a client that disconnects aborts its request only while it is still queued; once running it
  runs to completion (its output is dropped): the engine has no abort;
- latencies in meta_info and in the metrics are seconds of the simulated clock. When this
  process's own CPU work delays the next step, the simulated clock waits (it is not charged as
  GPU time), so at --time-scale S the server runs *up to* S times faster than real time.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import signal
import sys
import time
import uuid
from typing import Any, Callable, Sequence

import aiohttp
from aiohttp import web

from autotune.hardware import GIB, load_gpu
from autotune.models import ModelError
from autotune.pools import SWAPoolRefused
from autotune.sim.pool import DeviceAssert
from autotune.sim.run import crash_log_lines
from autotune.sim.api import (
    FILLER_TEXT,
    BadRequest,
    GenerateJob,
    Pending,
    completion_body,
    completion_chunk,
    generate_body,
    generate_error,
    openai_error,
    parse_completion,
    parse_generate,
    read_json_object,
    token_usage,
)
from autotune.sim.args import PROG, ConfigFileError, FlagConflict, SimArgs, load_model_for, parse_args, server_config
from autotune.sim.engine import SimEngine
from autotune.sim.prometheus import CONTENT_TYPE, MetricLabels, ServerMetrics
from autotune.sim.request import SimRequest, ceil_page
from autotune.sim.scheduler import StepReport

SIM_VERSION_SUFFIX = "-sim"  # /server_info's version: the emulated release, marked simulated
IDLE_REFRESH_S = 1.0  # SGLang refreshes its gauges periodically while idle
SHUTDOWN_TIMEOUT_S = 1.0
PROBE_SHARE = 0.85  # of --boot-delay, before the memory probe line (real 0.5.17, warm, H200: ~42 of ~47 s)
MIN_SLEEP_S = 0.001  # wall seconds: the event loop's timer resolution
MAX_LAG_S = 0.005  # wall seconds the engine loop may fall behind the clock and still catch up
# http_server._execute_server_warmup with --skip-tokenizer-init: 3 prompt tokens, 8 new, not streamed.
WARMUP_BODY = {"input_ids": [10, 11, 12], "sampling_params": {"temperature": 0, "max_new_tokens": 8}}
SSE_DONE = b"data: [DONE]\n\n"

logger = logging.getLogger("sglang")


def configure_logging() -> None:
    """SGLang's format (utils/common.py::configure_logger): `[2026-11-28 10:00:00] message`."""
    logging.basicConfig(
        level=logging.INFO, format="[%(asctime)s] %(message)s", datefmt="%Y-%m-%d %H:%M:%S", force=True
    )


def uvicorn_line(message: str) -> None:
    """Uvicorn's own format, as a real launch prints it between SGLang's lines."""
    print(f"INFO:     {message}", file=sys.stderr, flush=True)


class VirtualClock:
    """The simulated GPU's clock: `scale` x wall seconds, held back while the server catches up."""

    def __init__(self, scale: float) -> None:
        self.scale = scale
        self._origin = time.monotonic()

    def now(self) -> float:
        return (time.monotonic() - self._origin) * self.scale

    def hold(self, t: float) -> None:
        """Pull the clock back to `t` if it ran past it: the time spent past `t` was this
        process's Python work between steps, which the simulated GPU does not do."""
        ahead = self.now() - t
        if ahead > 0:
            self._origin += ahead / self.scale


# -- the server -----------------------------------------------------------------------------------


class SimServer:
    def __init__(self, args: SimArgs, engine: SimEngine) -> None:
        self.args = args
        self.engine = engine
        self.startup = engine.startup
        self.clock = VirtualClock(args.time_scale)
        self.metrics = (
            ServerMetrics(engine, MetricLabels(args.served_model_name), self.clock.now) if args.enable_metrics else None
        )
        self.tokenizer = not args.skip_tokenizer_init
        self.pending: dict[str, Pending] = {}
        self.arrived = asyncio.Event()
        self.stop = asyncio.Event()
        self.state = "starting"  # -> "ready" after the warm-up -> "stopping"
        self.exit_code = 0
        self._latest_arrival = 0.0
        self._started_wall = time.time()
        capacity = self.startup.full_tokens
        self.max_req_len = min(self.startup.context_len - 1, capacity - 1)  # tp_worker.py
        self.max_req_input_len = self.max_req_len - 5

    # -- app ----------------------------------------------------------------------------------
    def app(self) -> web.Application:
        app = web.Application(client_max_size=256 * 1024**2)
        routes = [
            web.get("/health", self.health),
            web.get("/health_generate", self.health),
            web.get("/ready", self.health),
            web.post("/generate", self.generate),
            web.put("/generate", self.generate),
            web.post("/v1/completions", self.completions),
            web.get("/model_info", self.model_info),
            web.get("/get_model_info", self.model_info),
            web.get("/server_info", self.server_info),
            web.get("/get_server_info", self.server_info),
            web.get("/v1/models", self.models),
            web.get("/flush_cache", self.flush_cache),
            web.post("/flush_cache", self.flush_cache),
            web.get("/freeze_gc", self.freeze_gc),
            web.post("/freeze_gc", self.freeze_gc),
        ]
        if self.metrics is not None:
            routes.append(web.get("/metrics", self.metrics_page))
        app.add_routes(routes)
        return app

    # -- admission ----------------------------------------------------------------------------
    def admit(self, job: GenerateJob) -> GenerateJob:
        """SGLang's length rules: the tokenizer's context checks (400), then the scheduler's input
        cap and its clipping of max_new_tokens to what the context and an empty pool can hold."""
        prompt_len, max_new = job.prompt_len, job.max_new_tokens
        ctx = self.startup.context_len
        if prompt_len >= ctx:
            raise BadRequest(
                f"The input ({prompt_len} tokens) is longer than the model's context length ({ctx} tokens)."
            )
        if max_new is not None and prompt_len + max_new > ctx:
            raise BadRequest(
                f"Requested token count exceeds the model's maximum context length of {ctx} tokens. "
                f"You requested a total of {prompt_len + max_new} tokens: {prompt_len} tokens from the input "
                f"messages and {max_new} tokens for the completion. Please reduce the number of tokens in the "
                "input messages or the completion to fit within the limit."
            )
        if prompt_len >= self.max_req_input_len:
            raise BadRequest(
                f"Input length ({prompt_len} tokens) exceeds the maximum allowed length "
                f"({self.max_req_input_len} tokens). Use a shorter input or enable --allow-auto-truncate."
            )
        page = self.engine.config.page_size
        limit = min(self.max_req_len - prompt_len - 1, self.startup.full_tokens - ceil_page(prompt_len, page) - page - 1)
        clipped = limit if max_new is None else min(max_new, limit)
        if clipped <= 0:
            if max_new == 0:
                raise BadRequest("max_new_tokens=0 (prefill only) is not simulated; ask for at least 1 token.")
            raise BadRequest(f"Request prompt exceeds the KV memory budget: input_len={prompt_len}.")
        return dataclasses.replace(job, max_new_tokens=clipped)

    def submit(self, job: GenerateJob) -> Pending:
        now = self.clock.now()
        assert job.max_new_tokens is not None, "admit() first"
        req = SimRequest(
            rid=uuid.uuid4().hex,
            prompt_len=job.prompt_len,
            max_new_tokens=job.max_new_tokens,
            arrival_s=now,
            ignore_eos=job.ignore_eos,
        )
        pending = Pending(req=req, stream=job.stream)
        self.pending[req.rid] = pending
        self._latest_arrival = now
        self.engine.add(req)
        self.arrived.set()
        return pending

    def abort(self, p: Pending) -> None:
        """A client went away: drop the request if it is still queued (SGLang's abort frees it)."""
        if self.pending.pop(p.rid, None) is None:
            return
        self.engine.drop_queued(p.req)  # False when running or chunked: it runs on, its tokens go nowhere
        if self.metrics is not None:
            self.metrics.observe_aborted()

    async def wait_finished(self, p: Pending) -> None:
        while not (p.finished or p.aborted):
            await p.wake.wait()
            p.wake.clear()

    async def stream_events(
        self, request: web.Request, p: Pending, chunk: Callable[[int, bool], str], tail: Callable[[], list[str]]
    ) -> web.StreamResponse:
        """Server-sent events: one chunk per ended step that gave the request tokens, then [DONE]."""
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await response.prepare(request)
        sent = 0
        try:
            while True:
                await p.wake.wait()
                p.wake.clear()
                final = p.finished or p.aborted is not None
                if p.delivered > sent or final:
                    await response.write(b"data: " + chunk(sent, final).encode() + b"\n\n")
                    sent = p.delivered
                if final:
                    break
            for extra in tail():
                await response.write(b"data: " + extra.encode() + b"\n\n")
            await response.write(SSE_DONE)
        except ConnectionResetError:
            self.abort(p)  # the client went away; nothing left to answer
        except asyncio.CancelledError:
            self.abort(p)
            raise
        return response

    # -- endpoints ----------------------------------------------------------------------------
    async def health(self, request: web.Request) -> web.Response:
        return web.Response(status=200 if self.state == "ready" else 503)

    async def generate(self, request: web.Request) -> web.StreamResponse:
        if self.state == "stopping":
            return generate_error("The server is shutting down.", 503)
        try:
            body = await read_json_object(request)
        except BadRequest as exc:
            return openai_error(str(exc), err_type="Bad Request")
        try:
            job = self.admit(parse_generate(body, self.tokenizer))
        except BadRequest as exc:
            return generate_error(str(exc))
        p = self.submit(job)
        if job.stream:

            def chunk(sent: int, final: bool) -> str:
                return generate_body(p, final, self.tokenizer)

            return await self.stream_events(request, p, chunk, list)
        await self.wait_finished(p)
        status = 200 if p.aborted is None else 503
        return web.Response(text=generate_body(p, True, self.tokenizer), status=status, content_type="application/json")

    async def completions(self, request: web.Request) -> web.StreamResponse:
        if self.state == "stopping":
            return openai_error("The server is shutting down.", 503, "ServiceUnavailable")
        if request.content_type != "application/json":  # http_server.validate_json_request
            return openai_error("Unsupported Media Type: Only 'application/json' is allowed", err_type="Bad Request")
        try:
            body = await read_json_object(request)
            job, include_usage = parse_completion(body, self.tokenizer)
            job = self.admit(job)
        except BadRequest as exc:
            return openai_error(str(exc))
        model = body.get("model") if isinstance(body.get("model"), str) else self.args.served_model_name
        created = int(time.time())
        p = self.submit(job)
        if job.stream:

            def chunk(sent: int, final: bool) -> str:
                return completion_chunk(p, model, created, FILLER_TEXT * (p.delivered - sent), final)

            def usage() -> list[str]:
                if not include_usage:
                    return []
                body = {"id": p.rid, "object": "text_completion", "created": created, "model": model}
                return [json.dumps({**body, "choices": [], "usage": token_usage(p)})]

            return await self.stream_events(request, p, chunk, usage)
        await self.wait_finished(p)
        if p.aborted is not None:
            return openai_error(p.aborted, 503, "ServiceUnavailable")
        return web.json_response(completion_body(p, model, created))

    async def model_info(self, request: web.Request) -> web.Response:
        model = self.engine.config.model
        return web.json_response(
            {
                "model_path": self.args.model_path,
                "served_model_name": self.args.served_model_name,
                "tokenizer_path": self.args.model_path,
                "is_generation": True,
                "preferred_sampling_params": None,
                "weight_version": "default",
                "load_format": self.args.ignored["load_format"],
                "has_image_understanding": False,
                "has_audio_understanding": False,
                "model_type": model.model_type,
                "architectures": [model.architecture],
                "simulated": True,
            }
        )

    def effective_args(self) -> dict[str, Any]:
        """The server args with SGLang's resolved values where the flag was left unset."""
        config, startup = self.engine.config, self.startup
        data = self.args.as_dict()
        data.update(
            swa_full_tokens_ratio=config.ratio,
            page_size=config.page_size,
            chunked_prefill_size=config.chunk_size,
            max_running_requests=startup.max_running_requests,
            mem_fraction_static=startup.budget.mem_fraction_static,
            context_length=startup.context_len,
            tp_size=config.tp_size,
        )
        return data

    def memory_usage(self) -> dict[str, Any]:
        """internal_state.build_memory_usage (GB are GiB, as SGLang reports them)."""
        config, startup = self.engine.config, self.startup
        weight_gib = config.model.weight_bytes_per_rank(config.tp_size) / GIB
        return {
            "weight": round(weight_gib, 3),
            "kvcache": round(startup.kv_cache_gib, 3),
            "startup_available": round(config.gpu.memory_gib - weight_gib - startup.kv_cache_gib, 3),
            "token_capacity": startup.full_tokens,
            "token_capacity_swa": startup.swa_tokens,
            "graph": {},
        }

    async def server_info(self, request: web.Request) -> web.Response:
        config, startup = self.engine.config, self.startup
        internal = {
            **self.effective_args(),
            "memory_usage": self.memory_usage(),
            "effective_max_running_requests_per_dp": startup.max_running_requests,
            "last_gen_throughput": self.engine.scheduler.gen_throughput,
        }
        body = {
            **self.effective_args(),
            "status": "ready" if self.state == "ready" else self.state,
            "max_total_num_tokens": startup.full_tokens,
            "max_req_input_len": self.max_req_input_len,
            "internal_states": [internal],
            "version": f"{config.sglang_version}{SIM_VERSION_SUFFIX}",
            "frontend": "python",
            "simulated": True,
            "simulator": {
                "gpu": config.gpu.name,
                "kv_budget": startup.budget.source,
                "time_scale": self.clock.scale,
                "simulated_clock_s": round(self.clock.now(), 6),
            },
        }
        return web.json_response(body, dumps=lambda obj: json.dumps(obj, default=str))

    async def models(self, request: web.Request) -> web.Response:
        name = self.args.served_model_name
        card = {
            "id": name,
            "object": "model",
            "created": int(self._started_wall),
            "owned_by": "sglang",
            "root": name,
            "parent": None,
            "max_model_len": self.startup.context_len,
        }
        return web.json_response({"object": "list", "data": [card]})

    async def freeze_gc(self, request: web.Request) -> web.Response:
        """SGLang's /freeze_gc (gc.freeze in every server process): the simulated server has no GC
        pauses to model, so it only says so, as SGLang's logs do."""
        logger.info("Freezing GC in the simulated server (nothing to do).")
        return web.Response(status=200)

    async def flush_cache(self, request: web.Request) -> web.Response:
        """Empties the radix cache (evictable -> free), only when nothing runs or waits (SGLang)."""
        if not self.engine.idle:
            return web.Response(text="Flush cache failed.\n", status=400)
        self.engine.scheduler.flush_cache()
        self.engine.refresh_idle()
        logger.info("Cache flushed successfully!")
        return web.Response(
            text="Cache flushed.\nPlease check backend logs for more details. "
            "(When there are running or waiting requests, the operation will not be performed.)\n"
        )

    async def metrics_page(self, request: web.Request) -> web.Response:
        assert self.metrics is not None
        return web.Response(body=self.metrics.render(), headers={"Content-Type": CONTENT_TYPE})

    # -- the engine loop ----------------------------------------------------------------------
    async def _wait_for_arrival(self) -> None:
        self.engine.refresh_idle()
        self.arrived.clear()
        try:
            async with asyncio.timeout(IDLE_REFRESH_S):
                await self.arrived.wait()
        except TimeoutError:
            pass

    async def run_engine(self) -> None:
        """SGLang's event loop against the simulated clock.

        A step starts when the previous one ends (back to back, as on the GPU; at once after
        idling; not before the latest arrival) and its tokens are delivered when it ends. The
        event loop's timing is coarse, so the engine's time and the clock may drift apart a
        little, and the next sleep makes up for it: sleeps shorter than MIN_SLEEP_S are skipped
        (the engine may run that far ahead), and the loop may fall up to MAX_LAG_S behind. Lag
        beyond that is this process's own CPU work, which the simulated GPU does not do: the
        clock is held back instead (VirtualClock.hold).
        """
        engine, clock = self.engine, self.clock
        last_end: float | None = None  # end of the previous step while the engine stayed busy
        while True:
            if engine.idle:
                last_end = None
                await self._wait_for_arrival()
                continue
            if last_end is None:
                start = clock.now()
            else:
                clock.hold(last_end + MAX_LAG_S * clock.scale)
                start = max(last_end, self._latest_arrival)
            report = engine.step(start)
            if report.retracted:
                logger.warning(f"KV cache pool is full. Retract requests. #retracted_reqs: {len(report.retracted)}")
            if report.kind == "idle":
                if report.retracted:
                    continue  # every running request was retracted: re-prefill next
                # Requests wait, none can be admitted and none runs: SGLang spins here (the hang
                # its start-up refusal exists to prevent). Wait for an arrival instead of spinning.
                last_end = None
                await self._wait_for_arrival()
                continue
            lead_s = (report.end_s - clock.now()) / clock.scale
            await asyncio.sleep(lead_s if lead_s >= MIN_SLEEP_S else 0)
            last_end = report.end_s
            self.deliver(report)
            if report.log_line:
                logger.info(report.log_line)

    def deliver(self, report: StepReport) -> None:
        """Hand the tokens of an ended step to their handlers, and record SGLang's latencies."""
        metrics = self.metrics
        for req in report.emitted:
            p = self.pending.get(req.rid)
            if p is None or req.generated <= p.delivered:
                continue
            if metrics is not None:
                if p.delivered == 0:
                    queue_s = (req.scheduled_s if req.scheduled_s is not None else req.arrival_s) - req.arrival_s
                    metrics.observe_first_token((req.first_token_s or 0.0) - req.arrival_s, queue_s, p.stream)
                else:
                    metrics.observe_tokens(req.token_times[-1] - p.last_token_s, req.generated - p.delivered)
            p.delivered = req.generated
            p.last_token_s = req.token_times[-1]
            if req.finish_s is not None:
                p.finished = True
                del self.pending[req.rid]
                if metrics is not None:
                    metrics.observe_finished(req.prompt_len, req.generated, p.e2e_s, p.stream)
            p.wake.set()

    # -- life cycle ---------------------------------------------------------------------------
    async def warm_up(self, base_url: str) -> None:
        """http_server._execute_server_warmup: poll /model_info, then one /generate over HTTP."""
        async with aiohttp.ClientSession(base_url) as session:
            async with session.get("/model_info") as response:
                response.raise_for_status()
            async with session.post("/generate", json=WARMUP_BODY) as response:
                if response.status != 200:
                    raise RuntimeError(f"warm-up /generate answered {response.status}: {await response.text()}")
                await response.read()

    async def serve(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop.set)
        # Weights loading, graphs capturing: a real boot takes minutes. SGLang 0.5.17 on an H200 probes
        # the free memory about 85-90 % into a warm boot (process start to "Load weight begin").
        for share, line in ((PROBE_SHARE, self.startup.probe_line), (1 - PROBE_SHARE, "")):
            if self.args.boot_delay:
                try:
                    async with asyncio.timeout(self.args.boot_delay * share):
                        await self.stop.wait()
                    return 0  # stopped while booting
                except TimeoutError:
                    pass
            if line:
                logger.info(line)
        for line in self.startup.log_lines:
            logger.info(line)
        runner = web.AppRunner(self.app(), access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT_S)
        await runner.setup()
        site = web.TCPSite(runner, self.args.host, self.args.port, backlog=4096, reuse_address=True)
        try:
            await site.start()
        except OSError as exc:
            logger.error(f"Failed to bind {self.args.host}:{self.args.port}: {exc}")
            await runner.cleanup()
            return 1
        uvicorn_line(f"Started server process [{os.getpid()}]")
        uvicorn_line("Waiting for application startup.")
        uvicorn_line("Application startup complete.")
        uvicorn_line(f"Uvicorn running on http://{self.args.host}:{self.args.port} (Press CTRL+C to quit)")
        engine_task = asyncio.create_task(self.run_engine(), name="sim-engine")
        engine_task.add_done_callback(self._engine_stopped)
        warm_up = asyncio.create_task(self.warm_up(_client_url(self.args.host, self.args.port)))
        stop = asyncio.create_task(self.stop.wait())
        await asyncio.wait((warm_up, stop), return_when=asyncio.FIRST_COMPLETED)
        if warm_up.done() and warm_up.exception() is None and not self.stop.is_set():
            self.state = "ready"
            logger.info("The server is fired up and ready to roll!")
        elif warm_up.done() and warm_up.exception() is not None:
            logger.error(f"Initialization failed. warmup error: {warm_up.exception()!r}")
            self.exit_code = 1
            self.stop.set()
        await stop
        warm_up.cancel()
        await self._shut_down(runner, engine_task)
        return self.exit_code

    def _engine_stopped(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if isinstance(exc, DeviceAssert):  # 0.5.17 unified memory: SGLang's own words, then the process exits
            logger.error("\n".join(crash_log_lines(exc)))  # one record: the traceback's lines print raw
        else:
            logger.error("Scheduler hit an exception: %r", exc, exc_info=exc)
        self.exit_code = 1
        self.stop.set()

    async def _shut_down(self, runner: web.AppRunner, engine_task: asyncio.Task[None]) -> None:
        """Stop accepting, end every open request with an abort, stop the engine: exit within ~1 s."""
        self.state = "stopping"
        for p in list(self.pending.values()):
            p.aborted = "The server is shutting down."
            p.wake.set()
            if self.metrics is not None:
                self.metrics.observe_aborted()
        self.pending.clear()
        engine_task.cancel()
        await runner.cleanup()
        await asyncio.gather(engine_task, return_exceptions=True)


def _client_url(host: str, port: int) -> str:
    wildcard = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}
    host = wildcard.get(host, host)
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _server_args_line(args: SimArgs) -> str:
    fields = ", ".join(f"{k}={v!r}" for k, v in args.as_dict().items())
    return f"server_args=ServerArgs({fields})"


def _start_up_error(exc: ValueError) -> int:
    """SGLang dies in the scheduler with a traceback whose last line is the ValueError."""
    message = exc.sglang_message if isinstance(exc, SWAPoolRefused) else str(exc)
    logger.error(
        "Scheduler hit an exception: Traceback (most recent call last):\n"
        '  File "autotune/sim/config.py", in start_up (simulated)\n'
        f"ValueError: {message}"
    )
    if isinstance(exc, SWAPoolRefused) and exc.min_ratio is not None:
        logger.error(f"(simulator) The smallest ratio that boots with this budget is {exc.min_ratio:.3f}.")
    return 1


def main(argv: Sequence[str] | None = None) -> int:
    configure_logging()
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = parse_args(argv)
    except ConfigFileError as exc:
        return _start_up_error(exc)
    logger.info(_server_args_line(args))
    try:
        model = load_model_for(args)
        config = server_config(args, model, load_gpu(args.gpu))
    except FlagConflict as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except ModelError as exc:
        return _start_up_error(exc)
    try:
        engine = SimEngine(config)
    except ValueError as exc:  # SWAPoolRefused, InsufficientMemory, NotEnoughMemory, bad spec length
        return _start_up_error(exc)
    return asyncio.run(SimServer(args, engine).serve())


if __name__ == "__main__":
    sys.exit(main())

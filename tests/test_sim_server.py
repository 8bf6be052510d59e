"""The simulated SGLang server end to end: real processes, real HTTP, no mocks.

Facts checked: docs/reference/sglang.md §1 (config precedence), §3 (pool sizes and the start-up line), §5 (metric
names; SGLang counts prompt/generation/request totals per finished request, its warm-up
included), §6 (streamed `text` is cumulative, `data: [DONE]`, /health 503 while starting, the
start-up log order).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from autotune.hardware import load_gpu
from autotune.models import load_model
from autotune.sim.config import SimServerConfig, start_up

READY = "The server is fired up and ready to roll!"
# The server's own warm-up (http_server._execute_server_warmup): 3 prompt tokens, 8 new, not streamed.
WARMUP_PROMPT, WARMUP_OUTPUT = 3, 8


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    process: subprocess.Popen[str]
    port: int
    lines: list[str] = field(default_factory=list)
    ready: threading.Event = field(default_factory=threading.Event)
    bound: threading.Event = field(default_factory=threading.Event)
    ended: bool = False  # its output closed: the process is exiting

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def pump(self) -> None:
        """Drain the server's output (so it never blocks on a full pipe), noting the milestones."""
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)
            if "Uvicorn running on" in line:
                self.bound.set()
            if READY in line:
                self.ready.set()
        self.ended = True
        self.ready.set()  # wake the waiters, who then see `ended`
        self.bound.set()

    def get(self, path: str) -> httpx.Response:
        return httpx.get(self.url + path, timeout=10)


def _start(flags: tuple[str, ...]) -> Server:
    process = subprocess.Popen(
        [sys.executable, "-m", "autotune.sim.server", "--port", str(port := free_port()), *flags],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    server = Server(process, port)
    threading.Thread(target=server.pump, daemon=True).start()
    return server


def _stop(server: Server) -> None:
    if server.process.poll() is None:
        os.killpg(server.process.pid, signal.SIGTERM)
        try:
            server.process.wait(5)
        except subprocess.TimeoutExpired:
            os.killpg(server.process.pid, signal.SIGKILL)
            server.process.wait(5)


@contextmanager
def launch(*flags: str, wait_ready: bool = True, timeout: float = 30) -> Iterator[Server]:
    """Boot `python -m autotune.sim.server`, in its own process group, always stopped at the end.

    A free port can be taken by another process between our probe and the server's bind; the
    server then exits at once, and we retry on another port.
    """
    for _attempt in range(3):
        server = _start(flags)
        try:
            if wait_ready and server.bound.wait(timeout) and server.ended and "Failed to bind" in server.output:
                server.process.wait(5)
                continue
            if wait_ready:
                assert server.ready.wait(timeout), f"not ready after {timeout}s:\n{server.output}"
                assert not server.ended, f"exited with {server.process.wait(5)}:\n{server.output}"
            yield server
            return
        finally:
            _stop(server)
    pytest.fail(f"could not bind a free port three times:\n{server.output}")


def metric_values(text: str) -> dict[str, float]:
    """Sample name -> value summed over label sets (parsed the way any Prometheus client would)."""
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            totals[sample.name] = totals.get(sample.name, 0.0) + sample.value
    return totals


# -- the load test ----------------------------------------------------------------------------------


async def stream_generate(client: httpx.AsyncClient, prompt_len: int, max_new: int) -> list[dict[str, Any]]:
    body = {
        "input_ids": list(range(1, prompt_len + 1)),
        "sampling_params": {"max_new_tokens": max_new, "temperature": 0, "ignore_eos": True},
        "stream": True,
    }
    chunks: list[dict[str, Any]] = []
    async with client.stream("POST", "/generate", json=body) as response:
        assert response.status_code == 200
        async for line in response.aiter_lines():
            if line.startswith("data: "):
                payload = line[len("data: ") :]
                chunks.append({"done": True} if payload == "[DONE]" else json.loads(payload))
    return chunks


async def run_streams(url: str, count: int, prompt_len: int, max_new: int) -> list[list[dict[str, Any]]]:
    limits = httpx.Limits(max_connections=count, max_keepalive_connections=count)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as client:
        return await asyncio.gather(*(stream_generate(client, prompt_len, max_new) for _ in range(count)))


@pytest.mark.slow
def test_concurrent_streams_and_exact_metrics() -> None:
    streams, prompt_len, max_new = 60, 512, 64
    with launch("--model-path", "26B-A4B", "--gpu", "H100", "--enable-metrics", "--time-scale", "20") as server:
        results = asyncio.run(run_streams(server.url, streams, prompt_len, max_new))
        for chunks in results:
            assert chunks[-1] == {"done": True}
            body = chunks[:-1]
            lengths = [len(c["output_ids"]) for c in body]
            assert lengths == sorted(lengths) and lengths[-1] == max_new  # cumulative, growing
            for chunk in body:
                assert len(chunk["text"].split()) == len(chunk["output_ids"]) == chunk["meta_info"]["completion_tokens"]
            assert all(c["meta_info"]["finish_reason"] is None for c in body[:-1])
            final = body[-1]["meta_info"]
            assert final["finish_reason"] == {"type": "length", "length": max_new}
            assert final["completion_tokens"] == max_new and final["prompt_tokens"] == prompt_len
            assert final["e2e_latency"] > 0
        assert len({chunks[0]["meta_info"]["id"] for chunks in results}) == streams

        metrics = metric_values(server.get("/metrics").text)
    # SGLang counts every finished request, its own warm-up included.
    assert metrics["sglang:num_requests_total"] == streams + 1
    assert metrics["sglang:prompt_tokens_total"] == streams * prompt_len + WARMUP_PROMPT
    assert metrics["sglang:generation_tokens_total"] == streams * max_new + WARMUP_OUTPUT
    assert metrics["sglang:time_to_first_token_seconds_count"] == streams + 1
    assert metrics["sglang:inter_token_latency_seconds_count"] == streams * (max_new - 1) + WARMUP_OUTPUT - 1
    assert metrics["sglang:e2e_request_latency_seconds_count"] == streams + 1
    expected = start_up(SimServerConfig(model=load_model("26B-A4B"), gpu=load_gpu("H100")))
    assert metrics["sglang:max_total_num_tokens"] == expected.full_tokens
    assert metrics["sglang:max_total_num_tokens_swa"] == expected.swa_tokens
    assert "sglang:swa_token_usage" in metrics and "sglang:num_retracted_requests_total" in metrics
    assert metrics["sglang:simulated"] == 1
    assert metrics["sglang:num_running_reqs"] == 0 and metrics["sglang:num_aborted_requests_total"] == 0


# -- start-up -------------------------------------------------------------------------------------


def test_pinned_layout_of_31B_on_B200() -> None:
    """docs/reference/sglang.md §3: 31B, page 64, a 98.0513 GB budget, ratio 0.15 -> 478720 / 71808 tokens."""
    flags = ("--model-path", "31B", "--gpu", "B200", "--page-size", "64", "--kv-budget-gb", "98.0513")
    with launch(*flags, "--swa-full-tokens-ratio", "0.15") as server:
        info = server.get("/server_info").json()
        output = server.output
    assert "Use sliding window memory pool. full_layer_tokens=478720, swa_layer_tokens=71808" in output
    memory = info["internal_states"][0]["memory_usage"]
    assert (memory["token_capacity"], memory["token_capacity_swa"]) == (478720, 71808)
    assert info["max_total_num_tokens"] == 478720 and info["swa_full_tokens_ratio"] == 0.15
    assert info["simulated"] is True and info["version"].endswith("-sim")
    # docs/reference/sglang.md §6: load weights -> pool line -> max_total_num_tokens -> server start -> ready.
    milestones = ["server_args=", "Load weight end", "Use sliding window memory pool", "KV Cache is allocated",
                  "max_total_num_tokens=", "Uvicorn running on", READY]  # fmt: skip
    positions = [output.index(m) for m in milestones]
    assert positions == sorted(positions)
    assert output.splitlines()[0].startswith("[20") and "] server_args=" in output.splitlines()[0]


@pytest.mark.parametrize(("cli", "expected"), [((), 0.23), (("--swa-full-tokens-ratio", "0.5"), 0.5)])
def test_config_file_precedence_reaches_server_info(tmp_path: Path, cli: tuple[str, ...], expected: float) -> None:
    config = tmp_path / "defaults.yaml"
    config.write_text("swa-full-tokens-ratio: 0.23\n", encoding="utf-8")
    with launch("--model-path", "26B-A4B", "--config", str(config), *cli) as server:
        assert server.get("/server_info").json()["swa_full_tokens_ratio"] == expected


def test_health_is_503_until_the_warm_up_is_served() -> None:
    """At 1/20 of real time the warm-up takes about a second: /health answers 503 meanwhile."""
    with launch("--model-path", "26B-A4B", "--time-scale", "0.05", wait_ready=False) as server:
        assert server.bound.wait(30), server.output
        assert server.get("/health").status_code == 503
        assert server.ready.wait(30) and server.process.poll() is None, server.output
        assert server.get("/health").status_code == 200


# -- requests -------------------------------------------------------------------------------------


def test_bad_requests_get_400_and_the_server_keeps_serving() -> None:
    with launch("--model-path", "26B-A4B", "--time-scale", "20", "--context-length", "4096") as server:
        url = server.url
        bad = [
            ("/generate", b"{not json"),
            ("/generate", b"[1, 2]"),
            ("/generate", json.dumps({"sampling_params": {"max_new_tokens": 4}}).encode()),
            ("/generate", json.dumps({"input_ids": [1, 2], "sampling_params": {"max_new_tokens": -1}}).encode()),
            ("/generate", json.dumps({"input_ids": [[1, 2], [3]]}).encode()),
            ("/generate", json.dumps({"input_ids": [1] * 4096}).encode()),
            ("/generate", json.dumps({"input_ids": [1] * 4000, "sampling_params": {"max_new_tokens": 200}}).encode()),
            ("/v1/completions", json.dumps({"prompt": "a b", "max_tokens": 0}).encode()),
            ("/v1/completions", json.dumps({"prompt": [[1], [2]]}).encode()),
        ]
        for path, body in bad:
            response = httpx.post(url + path, content=body, headers={"Content-Type": "application/json"}, timeout=10)
            assert response.status_code == 400, (path, body[:40], response.text)
            payload = response.json()
            assert (payload.get("error") or {}).get("message") or payload.get("message")
        no_max = httpx.post(url + "/v1/completions", json={"prompt": "a b", "max_tokens": 0}, timeout=10).json()
        assert no_max["message"] == "max_tokens must be positive" and no_max["code"] == 400  # ErrorResponse
        too_long = httpx.post(url + "/generate", json={"input_ids": [1] * 4096}, timeout=10).json()
        assert "is longer than the model's context length (4096 tokens)" in too_long["error"]["message"]

        # SGLang clips max_new_tokens to the context (scheduler.init_req_max_new_tokens): 4095 - 4000 - 1.
        clipped = httpx.post(url + "/generate", json={"input_ids": [1] * 4000, "sampling_params": {"max_new_tokens": 95}})
        assert clipped.json()["meta_info"]["completion_tokens"] == 94

        ok = httpx.post(url + "/generate", json={"text": "one two three", "sampling_params": {"max_new_tokens": 5}}, timeout=10)
        assert ok.status_code == 200
        meta = ok.json()["meta_info"]
        assert (meta["prompt_tokens"], meta["completion_tokens"]) == (3, 5)


def test_openai_completions_stream_and_usage() -> None:
    with launch("--model-path", "26B-A4B", "--time-scale", "20") as server:
        body = {"prompt": [1, 2, 3, 4], "max_tokens": 6, "stream": True, "stream_options": {"include_usage": True}}
        with httpx.stream("POST", server.url + "/v1/completions", json=body, timeout=10) as response:
            events = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
        assert events[-1] == "[DONE]"
        chunks = [json.loads(e) for e in events[:-1]]
        usage = chunks[-1]
        assert usage["choices"] == [] and usage["usage"]["completion_tokens"] == 6 and usage["usage"]["prompt_tokens"] == 4
        text = "".join(c["choices"][0]["text"] for c in chunks[:-1])  # OpenAI streams deltas
        assert len(text.split()) == 6 and chunks[-2]["choices"][0]["finish_reason"] == "length"

        plain = httpx.post(server.url + "/v1/completions", json={"prompt": "a b c", "max_tokens": 2}, timeout=10).json()
        assert plain["object"] == "text_completion" and plain["usage"]["total_tokens"] == 5
        models = server.get("/v1/models").json()
        assert models["data"][0]["id"] == "26B-A4B"


def test_skip_tokenizer_init_no_metrics_flush_cache() -> None:
    with launch("--model-path", "26B-A4B", "--time-scale", "20", "--skip-tokenizer-init") as server:
        assert server.get("/metrics").status_code == 404  # only with --enable-metrics
        assert server.get("/model_info").json()["architectures"] == ["Gemma4ForConditionalGeneration"]
        out = httpx.post(server.url + "/generate", json={"input_ids": [1, 2], "sampling_params": {"max_new_tokens": 3}})
        assert "text" not in out.json() and out.json()["output_ids"] == [1000] * 3  # BatchTokenIDOutput
        refused = httpx.post(server.url + "/generate", json={"text": "a b"})
        assert refused.status_code == 400 and "skip_tokenizer_init=True" in refused.json()["error"]["message"]
        assert server.get("/flush_cache").status_code == 200


def test_sigterm_mid_stream_exits_0_promptly() -> None:
    with launch("--model-path", "26B-A4B", "--time-scale", "5") as server:
        body = {"input_ids": [1, 2, 3], "sampling_params": {"max_new_tokens": 100000}, "stream": True}
        last: list[str] = []

        def consume() -> None:
            with httpx.stream("POST", server.url + "/generate", json=body, timeout=10) as response:
                last.extend(line for line in response.iter_lines() if line.startswith("data: "))

        reader = threading.Thread(target=consume)
        reader.start()
        time.sleep(0.5)
        start = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(5) == 0
        assert time.monotonic() - start < 2.0
        reader.join(5)
    assert last[-1] == "data: [DONE]"
    assert json.loads(last[-2][6:])["meta_info"]["finish_reason"]["type"] == "abort"


def _wait_for_sigterm_handler(pid: int, timeout_s: float = 30.0) -> None:
    """Until the process catches SIGTERM (bit 15 of SigCgt in /proc/PID/status)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = Path(f"/proc/{pid}/status").read_text()
        caught = int(next(line.split()[1] for line in status.splitlines() if line.startswith("SigCgt:")), 16)
        if caught & (1 << (signal.SIGTERM - 1)):
            return
        time.sleep(0.05)
    raise AssertionError("the server never installed its SIGTERM handler")


def test_boot_delay_holds_the_port_and_sigterm_still_exits_0() -> None:
    with launch("--model-path", "26B-A4B", "--boot-delay", "30", wait_ready=False) as server:
        _wait_for_sigterm_handler(server.process.pid)  # past Python's start-up, whatever the machine's load
        assert not server.bound.is_set() and "Load weight end" not in server.output  # still "loading"
        start = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(5) == 0 and time.monotonic() - start < 2.0

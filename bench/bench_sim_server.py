"""How many streamed tokens per second the simulated server sustains on one CPU core.

The server (`python -m autotune.sim.server`) is pinned to one core and run with a large
--time-scale, so the simulated GPU is never the limit: what is measured is the HTTP side (the
engine loop, per-step delivery, SSE writes). A client process, pinned to another core, opens N
concurrent streaming /generate requests (short prompts, ignore_eos) and counts the tokens and
chunks it receives; it parses only the final chunk of each stream, so it stays cheaper than the
server. For each N the table shows client-side tokens/s and chunks/s, the server's CPU time, and
how much faster than real time the simulated clock actually ran.

    python bench/bench_sim_server.py [--streams 50 100 200 400] [--output-len 256] [--time-scale 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass

import aiohttp
import httpx

READY = "The server is fired up and ready to roll!"


@dataclass(frozen=True)
class ClientResult:
    streams: int
    tokens: int
    chunks: int
    wall_s: float
    failures: int


async def _one_stream(session: aiohttp.ClientSession, url: str, prompt_len: int, output_len: int) -> tuple[int, int]:
    body = {
        "input_ids": [1] * prompt_len,
        "sampling_params": {"max_new_tokens": output_len, "ignore_eos": True},
        "stream": True,
    }
    chunks, last = 0, b""
    async with session.post(url + "/generate", json=body) as response:
        if response.status != 200:
            return 0, 0
        async for line in response.content:
            if line.startswith(b"data: {"):
                chunks += 1
                last = line
    return json.loads(last[6:])["meta_info"]["completion_tokens"], chunks


async def run_client(url: str, streams: int, prompt_len: int, output_len: int) -> ClientResult:
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        start = time.perf_counter()
        results = await asyncio.gather(
            *(_one_stream(session, url, prompt_len, output_len) for _ in range(streams)), return_exceptions=True
        )
        wall = time.perf_counter() - start
    ok = [r for r in results if isinstance(r, tuple) and r[0] == output_len]
    return ClientResult(
        streams=streams,
        tokens=sum(r[0] for r in ok),
        chunks=sum(r[1] for r in ok),
        wall_s=wall,
        failures=streams - len(ok),
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pin(cpu: int):  # noqa: ANN202 - a preexec_fn
    return lambda: os.sched_setaffinity(0, {cpu})


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(streams: int, args: argparse.Namespace) -> dict[str, float]:
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "autotune.sim.server", "--model-path", args.model, "--gpu", args.gpu,
         "--port", str(port), "--time-scale", str(args.time_scale), "--decode-log-interval", "1000000"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
        preexec_fn=_pin(args.server_cpu),
    )  # fmt: skip
    try:
        assert server.stdout is not None
        for line in server.stdout:
            if READY in line:
                break
        else:
            raise RuntimeError("the server exited before it was ready")
        url = f"http://127.0.0.1:{port}"
        clock0 = httpx.get(url + "/server_info").json()["simulator"]["simulated_clock_s"]
        cpu0, wall0 = _cpu_seconds(server.pid), time.perf_counter()
        client = subprocess.run(
            [sys.executable, __file__, "--client", url, str(streams), str(args.prompt_len), str(args.output_len)],
            capture_output=True, text=True, check=True, preexec_fn=_pin(args.client_cpu),
        )  # fmt: skip
        cpu = _cpu_seconds(server.pid) - cpu0
        clock = httpx.get(url + "/server_info").json()["simulator"]["simulated_clock_s"] - clock0
        server_wall = time.perf_counter() - wall0
        result = ClientResult(**json.loads(client.stdout))
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(10)
    return {
        "streams": streams,
        "tokens": result.tokens,
        "failures": result.failures,
        "wall_s": result.wall_s,
        "tok_s": result.tokens / result.wall_s,
        "chunk_s": result.chunks / result.wall_s,
        "server_cpu": cpu / result.wall_s,
        "speedup": clock / server_wall,
    }


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--client":
        url, streams, prompt_len, output_len = sys.argv[2], *map(int, sys.argv[3:6])
        print(json.dumps(asyncio.run(run_client(url, streams, prompt_len, output_len)).__dict__))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, nargs="+", default=[50, 100, 200, 400])
    parser.add_argument("--prompt-len", type=int, default=16)
    parser.add_argument("--output-len", type=int, default=256)
    parser.add_argument("--time-scale", type=float, default=1000.0)
    parser.add_argument("--model", default="26B-A4B")
    parser.add_argument("--gpu", default="H100")
    parser.add_argument("--server-cpu", type=int, default=0)
    parser.add_argument("--client-cpu", type=int, default=1)
    args = parser.parse_args()
    print(
        f"model {args.model} on {args.gpu}, prompt {args.prompt_len}, output {args.output_len}, "
        f"--time-scale {args.time_scale:g}, server on cpu {args.server_cpu}, client on cpu {args.client_cpu}"
    )
    header = f"{'streams':>8} {'tokens':>8} {'failed':>6} {'wall s':>7} {'tok/s':>9} {'chunks/s':>9} {'srv cpu':>7} {'sim x':>7}"
    print(header)
    for streams in args.streams:
        r = measure(streams, args)
        print(
            f"{r['streams']:>8} {r['tokens']:>8} {r['failures']:>6} {r['wall_s']:>7.2f} {r['tok_s']:>9.0f} "
            f"{r['chunk_s']:>9.0f} {r['server_cpu']:>7.0%} {r['speedup']:>7.1f}"
        )


if __name__ == "__main__":
    main()

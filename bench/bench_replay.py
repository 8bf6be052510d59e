"""What the replay client itself costs: streamed tokens/s on one core, and CPU seconds per 1k tokens.

The simulated server (`python -m autotune.sim.server`) runs pinned to one core with a large
--time-scale, so the simulated GPU is never the limit; the client runs pinned to the other core.
For each output length and concurrency, the client replays a closed-loop random-ids workload
(`random_ids_workload(..., arrival=MaxConcurrency(N))`, exactly what a trial sends) through
`workers.replay.replay` and measures, over the measured part only (warm-up and imports
excluded):

- streamed tokens/s,
- the client's CPU seconds per 1k tokens (`time.process_time`, i.e. RUSAGE_SELF user + sys),
- the CPU % of the client and of the server over the same interval, and how busy each core
  was (the process near 100 % is the bottleneck; a core busy with other work is contention),
- SSE events and bytes read per token: SGLang's /generate streams cumulative text and
  output_ids, so a chunk late in a 1024-token answer is ~4 times larger than one in a 256-token
  answer. The replay decodes only each chunk's `meta_info`; `--full-json` adds a run that
  decodes whole chunks (the replay's earlier behaviour) to show what that growth costs.

Then the same grid runs through SGLang's own load generator, `python -m sglang.benchmark.serving
--backend sglang --dataset-name random-ids --tokenize-prompt`, in one process pinned to the
client core (one process for the whole grid: its imports take ~10 s), with its CPU time taken
the same way, from its first measured request to the end of its last. That needs `transformers`
and `tokenizers` (not project dependencies; sglang 0.5.23 pins transformers==5.19.0 and
tokenizers==0.23.2, which pull no torch) and a tiny local tokenizer (bench/tiny_tokenizer.py,
built into a temp dir). Two of bench_serving's imports are shimmed in its process, neither used
by this run: `datasets` when it is not installed (only the MMMU dataset loads it; it would pull
pandas and pyarrow) and `sglang.srt.disaggregation.utils` (imported for one constant,
FAKE_BOOTSTRAP_HOST, it drags in SGLang's whole GPU runtime, torchvision included). When
bench_serving cannot run, that part is skipped with the reason.

    python bench/bench_replay.py [--streams 50 200 400] [--output-len 256 1024] [--no-bench-serving]
                                 [--full-json] [--json rows.json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import math
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import types
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
READY = "The server is fired up and ready to roll!"
CLK_TCK = os.sysconf("SC_CLK_TCK")


# -- shared helpers -------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """utime + stime of process `pid` (all its threads), from /proc."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def num_prompts_for(streams: int, output_len: int, tokens: int) -> int:
    """At least one request per stream (so the concurrency is reached), else ~`tokens` in all."""
    return max(streams, math.ceil(tokens / output_len))


def flush_cache(base_url: str) -> None:
    import urllib.request

    with contextlib.suppress(OSError):
        urllib.request.urlopen(urllib.request.Request(base_url + "/flush_cache", method="POST"), timeout=10).read()


# -- client 1: the tuner's replay -----------------------------------------------------------------


class _StreamCounter:
    """Counts the bytes and SSE events the client reads, by wrapping aiohttp's
    `StreamReader.readany` (what `iter_any()` reads through): one extra coroutine frame and a
    `bytes.count` per read, whatever the replay does with the data."""

    def __init__(self) -> None:
        self.chunks = 0
        self.bytes = 0

    def install(self) -> None:
        from aiohttp import StreamReader

        original = StreamReader.readany

        async def readany(reader: StreamReader) -> bytes:
            data = await original(reader)
            self.bytes += len(data)
            self.chunks += data.count(b"data: {")
            return data

        StreamReader.readany = readany  # type: ignore[method-assign]


def _full_json_meta(data: bytes) -> dict:
    return json.loads(data).get("meta_info", {})


def core_busy() -> dict[int, tuple[float, float]]:
    """Per CPU: (busy, total) jiffies from /proc/stat."""
    out = {}
    with open("/proc/stat", encoding="ascii") as stat:
        for line in stat:
            name, *values = line.split()
            if name.startswith("cpu") and name != "cpu":
                ticks = [int(v) for v in values]
                idle = ticks[3] + ticks[4]  # idle + iowait
                out[int(name[3:])] = (sum(ticks[:8]) - idle, sum(ticks[:8]))
    return out


def marks_now(server_pid: int) -> dict:
    return {"cpu": time.process_time(), "server": cpu_seconds(server_pid), "wall": time.perf_counter(), "cores": core_busy()}


def interval(start: dict, end: dict) -> dict:
    """What a row needs from two marks; core busy % is keyed by CPU number."""
    cores = {}
    for cpu, (busy, total) in end["cores"].items():
        b0, t0 = start["cores"].get(cpu, (busy, total))
        cores[str(cpu)] = (busy - b0) / (total - t0) if total > t0 else math.nan
    return {
        "wall_s": end["wall"] - start["wall"],
        "client_cpu_s": end["cpu"] - start["cpu"],
        "server_cpu_s": end["server"] - start["server"],
        "core_busy": cores,
    }


def replay_client(config: dict) -> None:
    sys.path.insert(0, str(REPO))
    import workers.replay as replay_module
    from autotune.measure.serving_metrics import summarize
    from autotune.workloads import MaxConcurrency, random_ids_workload
    from workers.replay import ReplayConfig, replay

    label = "replay"
    if config.get("full_json"):
        if not hasattr(replay_module, "_meta_info"):
            raise RuntimeError("--full-json: workers.replay has no _meta_info to replace (it changed)")
        replay_module._meta_info = _full_json_meta  # the HEAD~ behaviour: json.loads every whole chunk
        label = "replay-fulljs"
    counter = _StreamCounter()
    counter.install()
    base_url, server_pid = config["base_url"], config["server_pid"]
    for run in config["runs"]:
        flush_cache(base_url)
        workload = random_ids_workload(
            "bench", num_prompts=run["num_prompts"], input_len=config["prompt_len"], output_len=run["output_len"],
            range_ratio=1.0, seed=1, arrival=MaxConcurrency(run["streams"]), warmup=1,
        )  # fmt: skip
        start: dict = {}

        async def on_start(_t0: float, start: dict = start) -> None:
            counter.chunks = counter.bytes = 0
            start.update(marks_now(server_pid))

        result = asyncio.run(replay(workload, ReplayConfig(base_url=base_url), on_start=on_start))
        end = marks_now(server_pid)
        summarize(result.outcomes, result.duration_s)
        done = [o for o in result.outcomes if o.success]
        row = {
            **run,
            "client": label,
            "tokens": sum(o.output_len for o in done),
            "failed": len(result.outcomes) - len(done),
            "errors": sorted({o.error for o in result.outcomes if o.error})[:3],
            **interval(start, end),
            "post_cpu_s": time.process_time() - end["cpu"],  # summarize(): bench_serving's figures
            "chunks": counter.chunks,
            "bytes": counter.bytes,
        }
        print(json.dumps(row), flush=True)


# -- client 2: sglang.benchmark.serving -----------------------------------------------------------


def _shim_bench_serving_imports() -> None:
    """Make `import sglang.benchmark.serving` work without SGLang's GPU runtime (see the docstring)."""
    if importlib.util.find_spec("datasets") is None:
        datasets = types.ModuleType("datasets")

        def load_dataset(*_args, **_kwargs):  # noqa: ANN202
            raise RuntimeError("the `datasets` package is not installed (shimmed by bench_replay.py)")

        datasets.load_dataset = load_dataset  # type: ignore[attr-defined]
        sys.modules["datasets"] = datasets
    disaggregation = types.ModuleType("sglang.srt.disaggregation.utils")
    disaggregation.FAKE_BOOTSTRAP_HOST = "2.2.2.2"  # type: ignore[attr-defined]  # its value in 0.5.23
    sys.modules[disaggregation.__name__] = disaggregation


def bench_serving_client(config: dict) -> None:
    try:
        _shim_bench_serving_imports()
        import sglang.benchmark.serving as bs
        from transformers import AutoTokenizer

        sys.path.insert(0, str(REPO / "bench"))
        from tiny_tokenizer import FILLER_TEXT, build

        tokenizer = str(build(config["tokenizer"]))
        loaded = AutoTokenizer.from_pretrained(tokenizer, trust_remote_code=True)
        if len(loaded.encode(FILLER_TEXT * 3, add_special_tokens=False)) != 3:
            raise RuntimeError(f"the tiny tokenizer does not encode {FILLER_TEXT!r} as one token")
    except Exception as exc:  # noqa: BLE001 - any failure here means "cannot run", reported as such
        print(json.dumps({"unavailable": f"{type(exc).__name__}: {exc}"}), flush=True)
        return

    base_url, server_pid = config["base_url"], config["server_pid"]
    marks: dict = {}
    state = {"calls": 0, "warmup": 1}
    original_request = bs.ASYNC_REQUEST_FUNCS["sglang"]
    original_metrics = bs.calculate_metrics

    async def request(*args, **kwargs):  # noqa: ANN202
        state["calls"] += 1
        if state["calls"] == state["warmup"] + 1:  # the first measured request
            marks["start"] = marks_now(server_pid)
        return await original_request(*args, **kwargs)

    def calculate_metrics(input_requests, outputs, dur_s, *args, **kwargs):  # noqa: ANN001, ANN202
        marks["end"] = marks_now(server_pid)
        marks["tokens"] = sum(o.output_len for o in outputs if o.success)
        marks["failed"] = sum(not o.success for o in outputs)
        marks["errors"] = sorted({o.error.strip().splitlines()[-1][:200] for o in outputs if not o.success and o.error})
        result = original_metrics(input_requests, outputs, dur_s, *args, **kwargs)
        marks["post_cpu"] = time.process_time() - marks["end"]["cpu"]  # includes retokenising the outputs
        return result

    bs.ASYNC_REQUEST_FUNCS["sglang"] = request
    bs.calculate_metrics = calculate_metrics
    with open(config["log"], "a", encoding="utf-8") as log:  # bench_serving prints a lot
        for run in config["runs"]:
            flush_cache(base_url)
            marks.clear()
            state["calls"] = 0
            sys.argv = [
                "bench_serving", "--backend", "sglang", "--base-url", base_url, "--dataset-name", "random-ids",
                "--tokenizer", tokenizer, "--model", tokenizer, "--tokenize-prompt", "--disable-tqdm",
                "--num-prompts", str(run["num_prompts"]), "--random-input-len", str(config["prompt_len"]),
                "--random-output-len", str(run["output_len"]), "--random-range-ratio", "1.0",
                "--max-concurrency", str(run["streams"]), "--seed", "1", "--warmup-requests", "1",
                "--output-file", config["output_file"],
            ]  # fmt: skip
            with contextlib.redirect_stdout(log):
                bs.cli_main()
            if "start" not in marks or "end" not in marks:
                raise RuntimeError("bench_serving did not run its measured requests")
            row = {
                **run,
                "client": "bench_serving",
                "tokens": marks["tokens"],
                "failed": marks["failed"],
                "errors": marks["errors"][:3],
                **interval(marks["start"], marks["end"]),
                "post_cpu_s": marks["post_cpu"],
                "chunks": None,
                "bytes": None,
            }
            print(json.dumps(row), flush=True)


# -- the driver -----------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pinned(cpu: int) -> list[str]:
    return ["taskset", "-c", str(cpu)]


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM the process group `process` leads (started with start_new_session), then SIGKILL."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)


def start_server(args: argparse.Namespace) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    server = subprocess.Popen(
        [*_pinned(args.server_cpu), sys.executable, "-m", "autotune.sim.server", "--model-path", args.model,
         "--gpu", args.gpu, "--enable-metrics", "--host", "127.0.0.1", "--port", str(port),
         "--time-scale", str(args.time_scale), "--decode-log-interval", "1000000"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        assert server.stdout is not None
        deadline = time.monotonic() + 60
        for line in server.stdout:
            if READY in line:
                break
            if time.monotonic() > deadline:
                raise RuntimeError("the simulated server did not get ready within 60 s")
        else:
            raise RuntimeError(f"the simulated server exited before it was ready (rc {server.wait()})")
        # Keep draining its log so it never blocks on a full pipe.
        threading.Thread(target=lambda: server.stdout.read() if server.stdout else None, daemon=True).start()
    except BaseException:
        _stop(server)
        raise
    return server, f"http://127.0.0.1:{port}"


def run_client(mode: str, config: dict, cpu: int, timeout_s: float) -> tuple[list[dict], str | None]:
    """Run this file in `mode`, pinned to `cpu`, in its own process group.

    Returns its rows, and the reason it could not run (its `{"unavailable": ...}` line) or None.
    """
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1", "PYTHONUNBUFFERED": "1"}
    errors = tempfile.TemporaryFile("w+", encoding="utf-8")  # a file, so a chatty stderr never blocks it
    client = subprocess.Popen(
        [*_pinned(cpu), sys.executable, __file__, mode, json.dumps(config)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=errors, text=True, start_new_session=True, env=env,
    )  # fmt: skip
    rows, unavailable = [], None
    watchdog = threading.Timer(timeout_s, _stop, [client])  # a hung client is killed, not waited for
    watchdog.start()
    try:
        assert client.stdout is not None
        for line in client.stdout:
            if not line.startswith("{"):
                continue
            row = json.loads(line)
            if "unavailable" in row:
                unavailable = row["unavailable"]
            else:
                rows.append(row)
                print_row(row)
        rc = client.wait()
        if rc != 0:
            errors.seek(0)
            raise RuntimeError(f"{mode} failed (rc {rc}, limit {timeout_s:.0f} s):\n{errors.read()[-3000:]}")
    finally:
        watchdog.cancel()
        _stop(client)
        errors.close()
    return rows, unavailable


def bench_serving_missing() -> str | None:
    """Why bench_serving cannot run here, from the packages alone; None when they are installed."""
    missing = [m for m in ("sglang", "transformers", "tokenizers") if importlib.util.find_spec(m) is None]
    if not missing:
        return None
    return (
        f"{', '.join(missing)} not installed (sglang 0.5.23 pins transformers==5.19.0 and tokenizers==0.23.2: "
        "`pip install transformers==5.19.0 tokenizers==0.23.2` adds them without touching torch)"
    )


HEADER = (
    f"{'client':>13} {'out':>5} {'streams':>7} {'reqs':>5} {'tokens':>7} {'fail':>4} {'wall s':>6} {'tok/s':>7} "
    f"{'cli cpu':>7} {'srv cpu':>7} {'cores':>9} {'ms cpu/1k':>9} {'1-core cap':>10} {'tok/chunk':>9} {'B/tok':>6} "
    f"{'bottleneck':>10}"
)
LEGEND = """\
tok/s: streamed (output) tokens per wall second of the measured run
cli cpu, srv cpu: CPU % of the client and of the server process over the run
cores: how busy the server's / client's core was, whoever used it (other processes included)
ms cpu/1k: client CPU milliseconds per 1k streamed tokens (user + sys)
1-core cap: tokens per client CPU second, what the client alone would stream with a core to itself
tok/chunk, B/tok: tokens per SSE event and bytes read per token (replay only)
bottleneck: the process at >= 90 % CPU; 'contended' when its core was busy but with others' work"""


def derive(row: dict, server_cpu: int, client_cpu: int) -> dict:
    wall, tokens = row["wall_s"], max(row["tokens"], 1)
    client, server = row["client_cpu_s"] / wall, row["server_cpu_s"] / wall
    core_server = row["core_busy"].get(str(server_cpu), math.nan)
    core_client = row["core_busy"].get(str(client_cpu), math.nan)
    if client >= 0.9 and client >= server:
        bottleneck = "client"
    elif server >= 0.9:
        bottleneck = "server"
    elif max(core_client, core_server) >= 0.9:
        bottleneck = "contended"
    else:
        bottleneck = "neither"
    return {
        "tok_s": row["tokens"] / wall,
        "client_pct": client,
        "server_pct": server,
        "server_core_pct": core_server,
        "client_core_pct": core_client,
        "ms_per_1k": 1e6 * row["client_cpu_s"] / tokens,
        "client_cap_tok_s": row["tokens"] / row["client_cpu_s"] if row["client_cpu_s"] > 0 else math.nan,
        "tok_per_chunk": row["tokens"] / row["chunks"] if row.get("chunks") else None,
        "bytes_per_tok": row["bytes"] / tokens if row.get("bytes") else None,
        "bottleneck": bottleneck,
    }


CPUS = {"server": 0, "client": 1}  # set from the arguments in main()


def print_row(row: dict) -> None:
    d = derive(row, CPUS["server"], CPUS["client"])
    per_chunk = f"{d['tok_per_chunk']:>9.2f}" if d["tok_per_chunk"] else f"{'-':>9}"
    per_byte = f"{d['bytes_per_tok']:>6.0f}" if d["bytes_per_tok"] else f"{'-':>6}"
    cores = f"{d['server_core_pct']:.0%}/{d['client_core_pct']:.0%}"
    print(
        f"{row['client']:>13} {row['output_len']:>5} {row['streams']:>7} {row['num_prompts']:>5} {row['tokens']:>7} "
        f"{row['failed']:>4} {row['wall_s']:>6.2f} {d['tok_s']:>7.0f} {d['client_pct']:>7.0%} {d['server_pct']:>7.0%} "
        f"{cores:>9} {d['ms_per_1k']:>9.1f} {d['client_cap_tok_s']:>10.0f} {per_chunk} {per_byte} {d['bottleneck']:>10}",
        flush=True,
    )
    if row["errors"]:
        print(f"{'':>13} errors: {row['errors']}", flush=True)


def main() -> None:
    modes = {"--replay-client": replay_client, "--bench-serving-client": bench_serving_client}
    if len(sys.argv) == 3 and sys.argv[1] in modes:
        modes[sys.argv[1]](json.loads(sys.argv[2]))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, nargs="+", default=[50, 200, 400])
    parser.add_argument("--output-len", type=int, nargs="+", default=[256, 1024])
    parser.add_argument("--prompt-len", type=int, default=16)
    parser.add_argument(
        "--tokens", type=int, default=30000,
        help="Tokens per run at least (more requests than streams where the streams alone give fewer).",
    )  # fmt: skip
    parser.add_argument("--time-scale", type=float, default=1000.0)
    parser.add_argument("--model", default="26B-A4B")
    parser.add_argument("--gpu", default="H100")
    parser.add_argument("--server-cpu", type=int, default=0)
    parser.add_argument("--client-cpu", type=int, default=1)
    parser.add_argument("--no-bench-serving", action="store_true", help="Measure the replay client only.")
    parser.add_argument(
        "--full-json", action="store_true",
        help="Also run the replay decoding every whole chunk with json.loads (the replay before it decoded only "
        "meta_info): shows what SGLang's cumulative chunks cost a client that parses them.",
    )  # fmt: skip
    parser.add_argument("--json", type=Path, help="Also write every row (raw and derived) to this file.")
    args = parser.parse_args()
    CPUS.update(server=args.server_cpu, client=args.client_cpu)

    runs = [
        {"output_len": out, "streams": n, "num_prompts": num_prompts_for(n, out, args.tokens)}
        for out in args.output_len
        for n in args.streams
    ]
    skip = "--no-bench-serving given" if args.no_bench_serving else bench_serving_missing()
    print(
        f"model {args.model} on {args.gpu}, prompt {args.prompt_len} tokens, --time-scale {args.time_scale:g}; "
        f"server on cpu {args.server_cpu}, client on cpu {args.client_cpu}"
    )
    print(LEGEND)
    print(HEADER)
    rows: list[dict] = []
    server, base_url = start_server(args)
    try:
        config = {"base_url": base_url, "server_pid": server.pid, "prompt_len": args.prompt_len, "runs": runs}
        rows += run_client("--replay-client", config, args.client_cpu, timeout_s=300)[0]
        if args.full_json:
            rows += run_client("--replay-client", {**config, "full_json": True}, args.client_cpu, timeout_s=300)[0]
        if skip is None:
            with tempfile.TemporaryDirectory(prefix="bench-replay-") as tmp:
                config |= {
                    "tokenizer": str(Path(tmp) / "tokenizer"),
                    "log": str(Path(tmp) / "bench_serving.log"),
                    "output_file": str(Path(tmp) / "bench_serving.jsonl"),
                }
                found, skip = run_client("--bench-serving-client", config, args.client_cpu, timeout_s=400)
                rows += found
                if skip is not None:
                    skip = f"sglang.benchmark.serving cannot run here: {skip}"
    finally:
        _stop(server)
    if skip is not None:
        print(f"bench_serving skipped: {skip}")
    if args.json:
        derived = [{**r, **derive(r, args.server_cpu, args.client_cpu)} for r in rows]
        args.json.write_text(json.dumps(derived, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()

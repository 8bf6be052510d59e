"""Measure real SGLang's SWA footprint, throughput and decode timing over a grid, one boot per ratio.

For each `--swa-full-tokens-ratio` in `--ratios` the server boots ONCE (the ratio is fixed per boot)
and then runs every workload phase in `--phases`, in the same order on every boot. A phase is fixed
prompt length P, fixed output length O (`ignore_eos`), C requests in flight (closed loop), and
`--waves` x C requests in all. Between phases: wait until nothing runs or waits, `/flush_cache`
(the radix cache), then an idle gap, so phases do not contaminate each other.

Per phase it records (one JSON line in OUT/results.jsonl, written as soon as the phase ends):
client figures (bench_serving's: throughput, TTFT, TPOT), the server's `/metrics` every
`--scrape-s` seconds (swa used/evictable/available tokens, full used/evictable/available, running,
queued, the retraction counter, gen throughput, token counters) and the server log's lines of the
phase (decode lines: #running, #full and #swa tokens, gen throughput; prefill lines; retractions).
Per boot: the layout and the server's own memory figures (`/server_info`: weights, kvcache, graph).

Several GPUs run ratios at once (`--gpus 0,1`: one server per GPU, CUDA_VISIBLE_DEVICES), taking
ratios from one queue in the order given. A phase that overruns `--phase-cap-s` is cut (status
`cut`: what finished is kept); a crash or hang is recorded and ends that boot; every server is
stopped (its whole process group). The run stops starting work at `--deadline-s` and always writes
what it has. Run it on a GPU node through the kit (deploy/gpu-kit/footprint_run.sh does):

    node.sh python deploy/gpu-kit/footprint_grid.py --out OUT --gpus 0,1 --ratios 1.0,0.8 \
        --deadline-s 520 -- --attention-backend triton --sampling-backend pytorch ...

or on a CPU against the simulated server: `--backend sim` (the sim accepts the same flags).

Per-GPU work (issue 14, unified memory): `--gpu-ratios GPU=ITEMS` gives that GPU its own queue, taken
before the shared one; `--gpu-phases GPU=PHASES` its own phase list. An item is a ratio R, or `u`
(SGLang's `--enable-unified-memory`, no `--swa-full-tokens-ratio`: SGLang's default, what a user who
does not tune gets), or `uR` (unified memory with ratio R). Without them the behaviour is unchanged.
The offline reader is bench/swa_footprint_fidelity.py.

First passes (docs/real-gpu/first-pass.md; read by bench/first_pass_fidelity.py): `P/O@CxW` gives a phase its own
number of waves, and a phase may be listed twice to run it twice on one server; every phase records each request's
send, first-token and end times, the kernels the node's Triton cache gained during it, and, with
`--server-env SGLANG_ENABLE_METRICS_DEVICE_TIMER=1`, the GPU's busy seconds per forward category.
`--prefill-warmup` and `--freeze-gc` prepare each server as a study now prepares a real trial
(workers/kernel_warmup.py).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import queue
import re
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
# Under the kit (node.sh sets SWA_AUTOTUNE_KIT) the kit's own copy of the project runs, as for every
# other kit command; elsewhere the checkout's.
if not os.environ.get("SWA_AUTOTUNE_KIT") and str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import aiohttp  # noqa: E402

from autotune.models import load_model  # noqa: E402
from autotune.models.dummy import DUMMY_LOAD_FLAGS, write_dummy_model  # noqa: E402
from autotune.workloads import MaxConcurrency, random_ids_workload  # noqa: E402
from workers.failures import TrialFailure  # noqa: E402
from workers.kernel_warmup import freeze_gc, prefill_token_counts, warm_prefill_kernels  # noqa: E402
from workers.process import ServerProcess  # noqa: E402
from workers.replay import ReplayConfig, replay  # noqa: E402
from workers.scrape import Scraper, parse_metrics  # noqa: E402
from workers.server_truth import read_server_memory  # noqa: E402
from workers.spec import ServerSpec  # noqa: E402

try:  # moving to autotune/measure/
    from autotune.measure.serving_metrics import summarize  # type: ignore[import-not-found]  # noqa: E402
except ImportError:  # pragma: no cover - before the move
    from autotune.serving_metrics import summarize  # noqa: E402

# The 1 s series: column -> SGLang sample name (counters carry _total).
SERIES: dict[str, str] = {
    "running": "sglang:num_running_reqs",
    "queued": "sglang:num_queue_reqs",
    "swa_used": "sglang:swa_used_tokens",
    "swa_evictable": "sglang:swa_evictable_tokens",
    "swa_available": "sglang:swa_available_tokens",
    "full_used": "sglang:kv_used_tokens",
    "full_evictable": "sglang:kv_evictable_tokens",
    "full_available": "sglang:kv_available_tokens",
    "retracted_total": "sglang:num_retracted_requests_total",
    "retracted_gauge": "sglang:num_retracted_reqs",
    "gen_throughput": "sglang:gen_throughput",
    "gen_tokens_total": "sglang:generation_tokens_total",
    "prompt_tokens_total": "sglang:prompt_tokens_total",
    "evicted_tokens_total": "sglang:evicted_tokens_total",
}

DEFAULT_PHASES = "1024/128@64,512/384@32,4096/128@32,1536/256@64,1024/512@32,4096/512@16,2048/256@48,1024/128@128"

_TS = re.compile(r"^\[(\d{4}-\d\d-\d\d) (\d\d):(\d\d):(\d\d)")
_DECODE = re.compile(
    r"Decode batch, #running-req: (\d+), #full token: (\d+), full token usage: [\d.]+, "
    r"(?:#swa token: (\d+), swa token usage: [\d.]+, )?cuda graph: (\w+), gen throughput \(token/s\): ([\d.]+), "
    r"#queue-req: (\d+)"
)
_PREFILL = re.compile(
    r"Prefill batch, #new-seq: (\d+), #new-token: (\d+), #cached-token: (\d+).*?#running-req: (\d+), #queue-req: (\d+)"
)
_RETRACT = re.compile(r"Retract requests\. #retracted_reqs: (\d+)")
_ERROR = re.compile(r"(\w*(Error|Exception)\b[:(]|\berror: |Assertion|assert|Traceback|Killed|core dumped)")


_RAISED = re.compile(r"^[\w.]*(Error|Exception)\b: ")


def last_error_line(text: str) -> str | None:
    """The server's own words for a crash: the log's last exception / assert line (None if none)."""
    lines = [line.strip() for line in text.splitlines() if _ERROR.search(line) and not line.lstrip().startswith("File ")]
    # Prefer the exception itself ("torch.AcceleratorError: CUDA error: ...") over the notes printed after it.
    raised = [line for line in lines if _RAISED.match(line)]
    return (raised or lines)[-1][:1000] if lines else None


@dataclass(frozen=True)
class Phase:
    prompt: int
    output: int
    concurrency: int
    waves: int | None = None  # requests = waves x concurrency; None: the run's --waves

    @property
    def name(self) -> str:
        suffix = "" if self.waves is None else f"-w{self.waves}"
        return f"p{self.prompt}-o{self.output}-c{self.concurrency}{suffix}"


def parse_phases(text: str) -> list[Phase]:
    """`P/O@C` items, comma-separated; `P/O@CxW` gives that phase its own number of waves."""
    phases = []
    for item in text.split(","):
        lengths, _, rest = item.strip().partition("@")
        prompt, _, output = lengths.partition("/")
        conc, _, waves = rest.partition("x")
        phases.append(Phase(int(prompt), int(output), int(conc), int(waves) if waves else None))
    return phases


# Per request, as the client saw it (seconds from the phase's first send): first-token times group a
# prefill batch's requests, so their differences time each prefill to the millisecond.
REQUEST_COLS = ["index", "start_s", "ttft_s", "e2e_s", "output_len", "ok"]


def request_rows(outcomes: Any) -> list[list[Any]]:
    def r(value: float | None) -> float | None:
        return None if value is None else round(value, 4)

    return [[o.index, r(o.start_s), r(o.ttft_s), r(o.e2e_s), o.output_len, o.success] for o in outcomes]


def labelled_totals(text: str, family: str, label: str) -> dict[str, float]:
    """One labelled counter of a /metrics page, by that label (e.g. GPU seconds by forward category)."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, float] = {}
    for fam in text_string_to_metric_families(text):
        for sample in fam.samples:
            if sample.name == family:
                key = sample.labels.get(label, "")
                out[key] = out.get(key, 0.0) + sample.value
    return out


def compiled_kernels() -> int | None:
    """Kernels in the node's Triton cache so far (TRITON_CACHE_DIR; None if unset): a phase that
    grows it compiled during the phase, and its timings include those compiles."""
    cache = os.environ.get("TRITON_CACHE_DIR")
    if not cache or not os.path.isdir(cache):
        return None
    return sum(1 for _root, _dirs, files in os.walk(cache) for f in files if f.endswith(".cubin"))


# SGLANG_ENABLE_METRICS_DEVICE_TIMER=1 makes SGLang count the GPU's busy seconds per forward category.
FORWARD_SECONDS = "sglang:forward_execution_seconds_total"
# Every forward pass, one series per mode (prefill_none, decode_cuda_graph, ...): summed over modes it is
# prefill batches plus decode passes, so the phase record keeps it by mode.
FORWARD_PASSES = "sglang:cuda_graph_passes_total"


def _seconds_of_day(line: str) -> int | None:
    match = _TS.match(line)
    return int(match[2]) * 3600 + int(match[3]) * 60 + int(match[4]) if match else None


def parse_log_lines(text: str) -> dict[str, Any]:
    """The phase's decode / prefill / retraction lines, as compact rows (time: seconds of the day)."""
    decode, prefill, retract = [], [], []
    for line in text.splitlines():
        ts = _seconds_of_day(line)
        if (m := _DECODE.search(line)) is not None:
            swa = int(m[3]) if m[3] is not None else None
            decode.append([ts, int(m[1]), int(m[2]), swa, float(m[5]), int(m[6]), m[4] == "True"])
        elif (m := _PREFILL.search(line)) is not None:
            prefill.append([ts, int(m[1]), int(m[2]), int(m[3]), int(m[4]), int(m[5])])
        elif (m := _RETRACT.search(line)) is not None:
            retract.append([ts, int(m[1])])
    return {
        "decode_cols": ["ts", "running", "full_tokens", "swa_tokens", "gen_tok_s", "queued", "cuda_graph"],
        "decode": decode,
        "prefill_cols": ["ts", "new_seq", "new_tokens", "cached_tokens", "running", "queued"],
        "prefill": prefill,
        "retract_cols": ["ts", "retracted"],
        "retract": retract,
    }


@dataclass
class RawScraper(Scraper):
    """The workers' scraper, also keeping the raw values of SERIES per sample."""

    rows: list[list[float | None]] = field(default_factory=list)

    async def scrape_once(self, session: aiohttp.ClientSession) -> dict[str, float] | None:
        values = await super().scrape_once(session)
        if values is not None:
            self.rows.append([round(self.samples[-1].t, 3), *(values.get(name) for name in SERIES.values())])
        return values


class Recorder:
    """results.jsonl, appended line by line and flushed (what a killed run leaves is readable)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, record: dict[str, Any]) -> None:
        with self.lock, self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record, separators=(",", ":")) + "\n")
            handle.flush()


def say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


@dataclass
class Run:
    args: argparse.Namespace
    extra: list[str]
    phases: list[Phase]
    recorder: Recorder
    model_dir: str
    t0: float
    stop: threading.Event = field(default_factory=threading.Event)
    booted_once: threading.Event = field(default_factory=threading.Event)

    def left(self) -> float:
        return self.args.deadline_s - (time.monotonic() - self.t0)

    def boot_estimate(self) -> float:
        return self.args.warm_boot_s if (self.booted_once.is_set() or self.args.warm_cache) else self.args.cold_boot_s

    gpu_phases: dict[str, list[Phase]] = field(default_factory=dict)

    def phases_for(self, gpu: str | None) -> list[Phase]:
        return self.gpu_phases.get(str(gpu), self.phases)

    def spec(self, item: "Item", gpu: str | None) -> ServerSpec:
        flags: dict[str, object] = {**DUMMY_LOAD_FLAGS, "mem-fraction-static": self.args.mem_fraction_static}
        if item.ratio is not None:
            flags["swa-full-tokens-ratio"] = item.ratio
        extra = (*self.extra, *(("--enable-unified-memory",) if item.unified else ()))
        env = {**dict(item.split("=", 1) for item in self.args.server_env or ()),
               **({"CUDA_VISIBLE_DEVICES": gpu} if gpu is not None else {})}
        if self.args.backend == "sim":
            return ServerSpec(backend="sim", model_path=self.model_dir, flags=flags, extra_args=extra,
                              sim_flags={"gpu": self.args.sim_gpu, "time-scale": self.args.sim_time_scale,
                                         "sglang-version": "0.5.17"}, env=env)
        return ServerSpec(backend="sglang", model_path=self.model_dir, flags=flags, extra_args=extra, env=env)


@dataclass(frozen=True)
class Item:
    """One boot: a static ratio, or unified memory (with a ratio, or SGLang's default when None)."""

    ratio: float | None
    unified: bool = False

    @property
    def label(self) -> str:
        return ("u" if self.unified else "") + ("" if self.ratio is None else f"{self.ratio:g}")


def parse_item(text: str) -> Item:
    text = text.strip()
    if text.startswith("u"):
        return Item(float(text[1:]) if text[1:] else None, unified=True)
    return Item(float(text))


def parse_gpu_map(values: list[str] | None) -> dict[str, str]:
    out = {}
    for value in values or ():
        gpu, sep, rest = value.partition("=")
        if not sep:
            raise SystemExit(f"expected GPU=..., got {value!r}")
        out[gpu.strip()] = rest
    return out


async def _get_values(session: aiohttp.ClientSession, base: str) -> dict[str, float] | None:
    try:
        async with session.get(f"{base}/metrics") as response:
            return parse_metrics(await response.text()) if response.status == 200 else None
    except (aiohttp.ClientError, asyncio.TimeoutError):
        return None


async def settle(base: str, timeout_s: float) -> dict[str, Any]:
    """Wait until nothing runs or waits, then flush the radix cache (retried: 400 while busy)."""
    started = time.monotonic()
    out: dict[str, Any] = {"idle": False, "flushed": False}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        while time.monotonic() - started < timeout_s:
            values = await _get_values(session, base)
            if values and not values.get("sglang:num_running_reqs") and not values.get("sglang:num_queue_reqs"):
                out["idle"] = True
                try:
                    async with session.post(f"{base}/flush_cache") as response:
                        out["flush_status"] = response.status
                        if response.status == 200:
                            out["flushed"] = True
                            break
                except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                    out["flush_error"] = str(exc)
            await asyncio.sleep(0.5)
    out["settle_s"] = round(time.monotonic() - started, 2)
    return out


async def _forward_totals(base: str) -> dict[str, dict[str, float]]:
    """So far: GPU busy seconds by forward category ("forward_s", {} when the server does not count
    them) and forward passes by mode ("passes")."""
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
            async with session.get(f"{base}/metrics") as response:
                text = await response.text() if response.status == 200 else ""
    except (aiohttp.ClientError, asyncio.TimeoutError):
        text = ""
    return {"forward_s": labelled_totals(text, FORWARD_SECONDS, "category"),
            "passes": labelled_totals(text, FORWARD_PASSES, "mode")}


async def warm_up(base: str, vocab: int, prefill_warmup: bool = False) -> dict[str, Any]:
    """A few requests before the first phase (not measured): loads/compiles kernels for long prefills;
    with `prefill_warmup`, also the trials' prefill warm-up (workers/kernel_warmup.py)."""
    workload = random_ids_workload("warmup", num_prompts=8, input_len=2048, output_len=32, range_ratio=1.0,
                                   seed=999, arrival=MaxConcurrency(8), warmup=0)
    before = compiled_kernels()
    await replay(workload, ReplayConfig(base_url=base, hang_timeout_s=60, vocab_size=vocab))
    out: dict[str, Any] = {"kind": "warm_up", "prefill_warmup": prefill_warmup}
    if prefill_warmup:
        report = await warm_prefill_kernels(base, prefill_token_counts(), hang_timeout_s=60, vocab_size=vocab)
        out.update(requests=report.requests, failed=report.failed, seconds=report.seconds, flushed=report.flushed)
    after = compiled_kernels()
    if before is not None and after is not None:
        out["kernels_compiled"] = after - before
    return out


def _round_summary(summary: Any) -> dict[str, Any]:
    data = summary.to_dict()
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out[key] = {k: (round(v, 5) if isinstance(v, float) else v) for k, v in value.items()}
        else:
            out[key] = round(value, 5) if isinstance(value, float) else value
    return out


async def run_phase(run: Run, server: ServerProcess, index: int, phase: Phase, boot: dict[str, Any]) -> dict[str, Any]:
    args = run.args
    base = server.base_url
    record: dict[str, Any] = {
        "kind": "phase", "ratio": boot["ratio"], "unified": boot["unified"], "gpu": boot["gpu"], "boot_id": boot["boot_id"], "index": index,
        "phase": phase.name, "prompt": phase.prompt, "output": phase.output, "concurrency": phase.concurrency,
        "requests": (phase.waves or args.waves) * phase.concurrency,
    }
    record["settle"] = await settle(base, args.settle_timeout_s)
    await asyncio.sleep(args.gap_s)
    cap = min(args.phase_cap_s, run.left() - args.pack_margin_s)
    record["cap_s"] = round(cap, 1)
    workload = random_ids_workload(
        phase.name, num_prompts=record["requests"], input_len=phase.prompt, output_len=phase.output,
        range_ratio=1.0, seed=1000 + index, arrival=MaxConcurrency(phase.concurrency), warmup=0,
    )
    scraper = RawScraper(base, args.scrape_s)
    log_from = server.log_path.stat().st_size if server.log_path.exists() else 0
    started: list[float] = []

    forward_before: dict[str, dict[str, float]] = {}
    kernels_before = compiled_kernels()

    async def on_start(t: float) -> None:
        started.append(t)
        record["wall_start"] = time.time()
        await scraper.start(t)
        forward_before.update(await _forward_totals(base))

    def should_stop(_done: int) -> bool:
        return bool(started) and (time.monotonic() - started[0] > cap or run.stop.is_set())

    status, message, outcomes, duration = "ok", "", (), None
    try:
        result = await replay(workload, ReplayConfig(base_url=base, hang_timeout_s=args.hang_s, vocab_size=args.vocab),
                              server_alive=lambda: server.alive, on_start=on_start, should_stop=should_stop)
        outcomes, duration = result.outcomes, result.duration_s
        if result.stopped_early:
            status, message = "cut", f"cut at the phase cap ({cap:.0f} s): {len(outcomes)} of {record['requests']} finished"
    except TrialFailure as failure:
        status, message = failure.kind.value, failure.message
    finally:
        await scraper.stop(final_scrape=server.alive)
    elapsed = time.monotonic() - started[0] if started else 0.0
    kernels_after = compiled_kernels()
    if kernels_before is not None and kernels_after is not None:
        record["kernels_compiled"] = kernels_after - kernels_before
    if forward_before and server.alive:
        after = await _forward_totals(base)
        for key in ("forward_s", "passes"):
            before = forward_before.get(key, {})
            if after[key]:
                record[key] = {k: round(v - before.get(k, 0.0), 4) for k, v in after[key].items()}
    ok = [o for o in outcomes if o.success]
    if status == "ok" and len(ok) < len(outcomes):
        # Requests can fail faster than the watchdog looks (a server that died while idle): ask the process.
        first = next(o.error for o in outcomes if not o.success)
        for _ in range(30):  # a dying SGLang sleeps ~5 s for crash diagnostics before it exits
            if not server.alive:
                break
            await asyncio.sleep(0.5)
        status = "crashed" if not server.alive else "client_error"
        message = f"{len(outcomes) - len(ok)} of {len(outcomes)} requests failed; first: {first}"
    record.update(status=status, message=message, elapsed_s=round(elapsed, 3))
    if status not in ("ok", "cut") or not server.alive:
        record["server_error"] = last_error_line(server.read_log()[-200_000:])
    record["completed"] = len(ok)
    record["failed"] = len(outcomes) - len(ok)
    tokens = sum(o.prompt_len + o.output_len for o in ok)
    out_tokens = sum(o.output_len for o in ok)
    # Throughput over the phase's wall time (a cut phase: what finished, over the time until the cut).
    span = duration if status == "ok" and duration else elapsed
    record["total_tok_s"] = round(tokens / span, 2) if span else None
    record["output_tok_s"] = round(out_tokens / span, 2) if span else None
    if ok:
        record["summary"] = _round_summary(summarize(tuple(ok), duration or elapsed))
    record["request_cols"] = REQUEST_COLS
    record["request_rows"] = request_rows(outcomes)
    record["series_cols"] = ["t", *SERIES]
    record["series"] = scraper.rows
    record["scrape_errors"] = scraper.errors
    record["counters"] = {k: round(v, 3) for k, v in scraper.counter_deltas().items()}
    try:
        with server.log_path.open("rb") as handle:
            handle.seek(log_from)
            record["log"] = parse_log_lines(handle.read().decode("utf-8", errors="replace"))
    except OSError as exc:
        record["log"] = {"error": str(exc)}
    return record


def boot_record(run: Run, item: Item, gpu: str | None, server: ServerProcess) -> dict[str, Any]:
    return {"kind": "boot", "ratio": item.ratio, "unified": item.unified, "gpu": gpu,
            "boot_id": f"r{item.label}-g{gpu}-{int(time.time())}",
            "backend": run.args.backend, "command": server.argv, "log": server.log_path.name}


def _startup_lines(log: str) -> list[str]:
    keys = ("Load weight end", "unified-memory-pool", "KV Cache is allocated", "max_total_num_tokens=", "sliding window memory pool",
            "Capture cuda graph", "Memory pool end", "weight", "server_args=")
    return [line[:2000] for line in log.splitlines() if any(k in line for k in keys)][:30]


def serve_ratio(run: Run, item: Item, gpu: str | None) -> None:
    args = run.args
    ratio = item.label  # in messages and file names
    log_path = Path(args.out) / "logs" / f"r{ratio}-gpu{gpu}.log"
    server = ServerProcess(run.spec(item, gpu), log_path, boot_timeout_s=max(60.0, run.left() - 30))
    boot = boot_record(run, item, gpu, server)
    t_boot = time.monotonic()
    try:
        server.start()
        info = server.wait_ready()
        run.booted_once.set()
        boot.update(ok=True, boot_s=round(info.boot_s, 1), full_tokens=info.full_tokens, swa_tokens=info.swa_tokens)
        memory = read_server_memory(server.base_url, (info.full_tokens, info.swa_tokens) if info.full_tokens else None,
                                    keep=log_path.with_suffix(""))
        boot["memory"] = memory.to_dict()
        say(f"gpu {gpu}: ratio {ratio} up in {info.boot_s:.0f} s: full {info.full_tokens}, swa {info.swa_tokens}, "
            f"kvcache {memory.kvcache_gib} GiB, weights {memory.weight_gib} GiB")
        text = (log_path.with_suffix(".metrics.txt")).read_text(encoding="utf-8") if log_path.with_suffix(".metrics.txt").exists() else ""
        boot["metric_names"] = sorted({line.split("{")[0].split(" ")[0] for line in text.splitlines()
                                       if line.startswith("sglang:")})
        boot["startup_lines"] = _startup_lines(server.read_log())
        run.recorder.write(boot)

        async def phases() -> None:
            try:
                warmed = await warm_up(server.base_url, args.vocab, args.prefill_warmup)
                if args.freeze_gc:
                    warmed["gc_frozen"] = await freeze_gc(server.base_url)
                run.recorder.write({**warmed, "ratio": item.ratio, "gpu": gpu, "boot_id": boot["boot_id"]})
            except TrialFailure as failure:
                say(f"gpu {gpu}: warm-up failed: {failure.message}")
            for index, phase in enumerate(run.phases_for(gpu)):
                if run.stop.is_set() or run.left() < args.min_phase_s + args.pack_margin_s:
                    run.recorder.write({"kind": "skipped", "ratio": item.ratio, "unified": item.unified, "gpu": gpu, "boot_id": boot["boot_id"],
                                        "index": index, "phase": phase.name, "left_s": round(run.left(), 1)})
                    continue
                record = await run_phase(run, server, index, phase, boot)
                run.recorder.write(record)
                say(f"gpu {gpu} r{ratio} {phase.name}: {record['status']} {record['elapsed_s']:.1f} s, "
                    f"{record['completed']}/{record['requests']} done, {record['total_tok_s']} tok/s, "
                    f"retracted {record['counters'].get('sglang:num_retracted_requests_total')}")
                if record["status"] not in ("ok", "cut") or not server.alive:
                    say(f"gpu {gpu}: {record['status']}: {record['message']}; server: {record.get('server_error')}; "
                        "ending this boot")
                    break

        asyncio.run(phases())
    except TrialFailure as failure:
        boot.update(ok=False, failure=failure.kind.value, message=failure.message, log_tail=failure.log_tail[-3000:],
                    server_error=last_error_line(failure.log_tail),
                    boot_s=round(time.monotonic() - t_boot, 1))
        run.recorder.write(boot)
        say(f"gpu {gpu}: ratio {ratio} failed to boot: {failure.kind.value}: {failure.message}")
    except Exception as exc:  # noqa: BLE001 - recorded, the other ratios go on
        run.recorder.write({"kind": "error", "ratio": item.ratio, "unified": item.unified, "gpu": gpu, "boot_id": boot["boot_id"],
                            "error": f"{type(exc).__name__}: {exc}"})
        say(f"gpu {gpu}: ratio {ratio}: {type(exc).__name__}: {exc}")
    finally:
        alive = server.alive
        code = server.returncode
        server.stop()
        stopped = {"kind": "stopped", "ratio": item.ratio, "unified": item.unified, "gpu": gpu, "boot_id": boot["boot_id"],
                   "alive_at_stop": alive, "exit_code": code, "at_s": round(time.monotonic() - run.t0, 1)}
        if not alive:
            try:
                stopped["server_error"] = last_error_line(server.read_log()[-200_000:])
            except Exception:  # noqa: BLE001
                pass
        run.recorder.write(stopped)


def slot(run: Run, ratios: "queue.Queue[Item]", gpu: str | None, own: "queue.Queue[Item] | None" = None) -> None:
    while not run.stop.is_set():
        try:
            ratio = own.get_nowait() if own is not None and not own.empty() else ratios.get_nowait()
        except queue.Empty:
            return
        need = run.boot_estimate() + run.args.min_boot_work_s
        if run.left() < need:
            run.recorder.write({"kind": "not_started", "ratio": ratio.ratio, "unified": ratio.unified, "gpu": gpu,
                                "left_s": round(run.left(), 1), "needed_s": need})
            say(f"gpu {gpu}: ratio {ratio.label} not started: {run.left():.0f} s left, ~{need:.0f} s needed")
            continue
        serve_ratio(run, ratio, gpu)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="logs/ go here (and results.jsonl unless --results)")
    parser.add_argument("--results", default=None, help="the JSON-lines record (default OUT/results.jsonl)")
    parser.add_argument("--ratios", default="1.0,0.8,0.6,0.4,0.25")
    parser.add_argument("--phases", default=DEFAULT_PHASES, help="P/O@C,... (prompt/output@concurrency)")
    parser.add_argument("--gpu-ratios", action="append", metavar="GPU=ITEMS",
                        help="this GPU's own queue, before the shared one: R, u (unified memory, SGLang's default "
                             "ratio) or uR (unified memory, ratio R), comma-separated; repeatable")
    parser.add_argument("--gpu-phases", action="append", metavar="GPU=PHASES", help="this GPU's own phases; repeatable")
    parser.add_argument("--waves", type=int, default=2, help="requests per phase = waves x concurrency (P/O@CxW: W)")
    parser.add_argument("--prefill-warmup", action="store_true",
                        help="after the boot's warm-up, send the trials' prefill warm-up (workers/kernel_warmup.py)")
    parser.add_argument("--freeze-gc", action="store_true", help="after the warm-up, POST /freeze_gc to the server")
    parser.add_argument("--server-env", action="append", metavar="NAME=VALUE",
                        help="set in every server's environment; repeatable (e.g. SGLANG_ENABLE_METRICS_DEVICE_TIMER=1)")
    parser.add_argument("--gpus", default="0", help="comma list of CUDA device ids, one server each; 'none': no env")
    parser.add_argument("--model", default="26B-A4B")
    parser.add_argument("--mem-fraction-static", type=float, default=0.48)
    parser.add_argument("--backend", choices=("sglang", "sim"), default="sglang")
    parser.add_argument("--sim-gpu", default="H200")
    parser.add_argument("--sim-time-scale", type=float, default=20.0)
    parser.add_argument("--deadline-s", type=float, default=520.0, help="stop starting work this long after start")
    parser.add_argument("--phase-cap-s", type=float, default=30.0)
    parser.add_argument("--hang-s", type=float, default=45.0)
    parser.add_argument("--scrape-s", type=float, default=1.0)
    parser.add_argument("--gap-s", type=float, default=2.0)
    parser.add_argument("--settle-timeout-s", type=float, default=20.0)
    parser.add_argument("--min-phase-s", type=float, default=12.0)
    parser.add_argument("--pack-margin-s", type=float, default=8.0)
    parser.add_argument("--min-boot-work-s", type=float, default=45.0)
    parser.add_argument("--cold-boot-s", type=float, default=200.0)
    parser.add_argument("--warm-boot-s", type=float, default=75.0)
    parser.add_argument("--warm-cache", action="store_true", help="the Triton cache is warm: boots take warm-boot-s")
    parser.add_argument("--vocab", type=int, default=32000, help="prompt ids are drawn below this")
    args, extra = parser.parse_known_args(argv)
    if extra and extra[0] == "--":
        extra = extra[1:]
    for item in args.server_env or ():
        if "=" not in item or not item.split("=", 1)[0]:
            parser.error(f"--server-env {item!r}: give NAME=VALUE, e.g. SGLANG_ENABLE_METRICS_DEVICE_TIMER=1")
    t0 = time.monotonic()
    out = Path(args.out)
    (out / "logs").mkdir(parents=True, exist_ok=True)
    model_dir = str(write_dummy_model(load_model(args.model), out / "logs" / "models").path)
    gpu_phases = {gpu: parse_phases(text) for gpu, text in parse_gpu_map(args.gpu_phases).items()}
    run = Run(args=args, extra=extra, phases=parse_phases(args.phases), recorder=Recorder(Path(args.results) if args.results else out / "results.jsonl"),
              model_dir=model_dir, t0=t0, gpu_phases=gpu_phases)
    ratios: "queue.Queue[Item]" = queue.Queue()
    for r in filter(None, args.ratios.split(",")):
        ratios.put(parse_item(r))
    own: dict[str, "queue.Queue[Item]"] = {}
    for gpu, text in parse_gpu_map(args.gpu_ratios).items():
        own[gpu] = queue.Queue()
        for r in filter(None, text.split(",")):
            own[gpu].put(parse_item(r))
    gpus = [None] if args.gpus == "none" else args.gpus.split(",")
    run.recorder.write({"kind": "run", "started": time.time(), "argv": sys.argv, "ratios": args.ratios,
                        "phases": [p.name for p in run.phases], "waves": args.waves, "gpus": args.gpus,
                        "gpu_ratios": args.gpu_ratios, "gpu_phases": {g: [p.name for p in ps] for g, ps in gpu_phases.items()},
                        "backend": args.backend, "mem_fraction_static": args.mem_fraction_static,
                        "extra_args": extra, "server_env": args.server_env, "deadline_s": args.deadline_s, "phase_cap_s": args.phase_cap_s})

    def on_signal(signum: int, _frame: Any) -> None:
        say(f"signal {signum}: stopping after the current phase")
        run.stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    threads = [threading.Thread(target=slot, args=(run, ratios, gpu, own.get(str(gpu))), name=f"gpu{gpu}", daemon=True)
               for gpu in gpus]
    for i, thread in enumerate(threads):
        thread.start()
        if i + 1 < len(threads):
            time.sleep(1.0)  # staggered: two boots do not read free memory at the same instant
    for thread in threads:
        while thread.is_alive():
            thread.join(timeout=1.0)
    left = [r.label for q in (*own.values(), ratios) for r in iter(lambda q=q: q.get() if not q.empty() else None, None)]
    run.recorder.write({"kind": "end", "elapsed_s": round(time.monotonic() - t0, 1), "ratios_left": left})
    say(f"done in {time.monotonic() - t0:.0f} s; ratios not reached: {left}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

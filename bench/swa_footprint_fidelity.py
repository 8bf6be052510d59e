"""Real SGLang 0.5.17's SWA footprint, throughput and decode timing against the simulator, offline.

Reads what `deploy/gpu-kit/footprint_grid.py` measured on H200s (docs/real-gpu/footprint/call*/results.jsonl:
one boot per ratio, the same workload phases on every boot) and, beside each real figure, what the
simulator (autotune/sim, the engine in virtual time) predicts for the same case: same model (dummy
Gemma-4-26B-A4B text config), same ratio, the KV budget pinned by the real layouts (so the simulated
pools equal the real ones to the token), 0.5.17's scheduler rules, eager prefill, the same requests.

Figures, per (ratio, phase), defined in docs/real-gpu/footprint.md ("Definitions"):
- peak SWA tokens per running request (1 s /metrics samples; and from the decode log lines);
- throughput (total tokens/s over the phase, or over the time until the phase was cut);
- retractions (the server's counter), peak queue;
- decode step time vs #running (decode log lines: 1000 x #running / gen throughput).
Per phase shape across ratios: the optimum ratio and the ratio below which throughput falls >20 %.

Beside the simulator as it is now ("sim") stands the simulator before issue 12's release-exact footprint
("before": footprint/sim-before.json, this bench's Simulator.run figures at commit 0a245b3, in the format
--dump-sim writes), and the issue's targets are checked at the end (reported, not asserted).

Run:  python bench/swa_footprint_fidelity.py [--data docs/real-gpu/footprint] [--no-sim] [--write FILE]
      [--dump-sim FILE]
"""

from __future__ import annotations

import argparse
import atexit
import json
import math
import re
import shutil
import statistics
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

DEFAULT_DATA = REPO / "docs" / "real-gpu" / "footprint"
UNIFIED_DATA = REPO / "docs" / "real-gpu" / "unified"  # issue 14: --enable-unified-memory (docs/real-gpu/unified.md)
BEFORE = DEFAULT_DATA / "sim-before.json"  # the simulator before issue 12 (commit 0a245b3), same phases
WINDOW = 1023  # Gemma 4's sliding window as SGLang runs it (sliding_window - 1)
NEAR_FULL = 0.9  # "the first wave ran": at least this share of the phase's concurrency running
CLIFF = 0.8  # throughput below this share of the best is "fallen by more than 20 %"
STEP_BUCKETS = (8, 16, 24, 32, 48, 64, 96, 128)


# -- the real data ---------------------------------------------------------------------------


@dataclass
class Boot:
    ratio: float
    gpu: str | None
    boot_id: str
    ok: bool
    boot_s: float | None
    full_tokens: int | None
    swa_tokens: int | None
    kvcache_gib: float | None
    weight_gib: float | None
    graph_gib: dict[str, float]
    call: str
    failure: str | None = None
    log: str | None = None


@dataclass
class Phase:
    call: str
    ratio: float
    boot_id: str
    index: int
    name: str
    prompt: int
    output: int
    concurrency: int
    requests: int
    status: str  # ok | cut | crashed | hang | client_error
    elapsed_s: float
    completed: int
    total_tok_s: float | None
    output_tok_s: float | None
    retractions: float
    series: list[dict[str, float | None]]
    decode: list[list[Any]]  # [ts, running, full_tokens, swa_tokens, gen_tok_s, queued, cuda_graph]
    prefill_lines: int
    retract_lines: int
    busy_ts: list[int]  # seconds of the day of the phase's retraction lines
    summary: dict[str, Any] = field(default_factory=dict)
    cap_s: float | None = None
    server_error: str | None = None  # the grid's reading of the server log, for a failed phase

    @property
    def shape(self) -> str:
        return f"{self.prompt}/{self.output}@{self.concurrency}"

    @property
    def measured(self) -> bool:
        """Ran (to the end or to the cap) on a live server."""
        return self.status in ("ok", "cut")


def _status(record: dict[str, Any]) -> str:
    # Call 2's ratio-0.7 boot: the server died while idle between phases, and the grid (before its fix)
    # recorded the next phase, whose requests all failed at once, as "ok".
    if record["status"] == "ok" and record.get("failed") and not record.get("completed"):
        return "crashed"
    return record["status"]


def load(data: Path = DEFAULT_DATA) -> tuple[list[Boot], list[Phase], list[dict[str, Any]]]:
    """Every boot and phase under `data` (call*/results.jsonl), plus the other records (skips, ends)."""
    boots: list[Boot] = []
    phases: list[Phase] = []
    other: list[dict[str, Any]] = []
    files = sorted(Path(data).glob("*/results.jsonl")) or sorted(Path(data).glob("results.jsonl"))
    if not files:
        raise FileNotFoundError(f"no */results.jsonl under {data}")
    for path in files:
        call = path.parent.name
        for line in path.read_text(encoding="utf-8").splitlines():
            r = json.loads(line)
            if r["kind"] == "boot":
                memory = r.get("memory") or {}
                boots.append(Boot(
                    ratio=r["ratio"], gpu=r.get("gpu"), boot_id=r["boot_id"], ok=bool(r.get("ok")),
                    boot_s=r.get("boot_s"), full_tokens=r.get("full_tokens"), swa_tokens=r.get("swa_tokens"),
                    kvcache_gib=memory.get("kvcache_gib"), weight_gib=memory.get("weight_gib"),
                    graph_gib=memory.get("graph_gib") or {}, call=call, failure=r.get("failure"), log=r.get("log"),
                ))
            elif r["kind"] == "phase":
                cols = r["series_cols"]
                log = r.get("log") or {}
                phases.append(Phase(
                    call=call, ratio=r["ratio"], boot_id=r["boot_id"], index=r["index"], name=r["phase"],
                    prompt=r["prompt"], output=r["output"], concurrency=r["concurrency"], requests=r["requests"],
                    status=_status(r), elapsed_s=r["elapsed_s"], completed=r["completed"],
                    total_tok_s=r.get("total_tok_s"), output_tok_s=r.get("output_tok_s"),
                    retractions=float((r.get("counters") or {}).get("sglang:num_retracted_requests_total", 0.0)),
                    series=[dict(zip(cols, row)) for row in r["series"]], decode=log.get("decode") or [],
                    prefill_lines=len(log.get("prefill") or []), retract_lines=len(log.get("retract") or []),
                    busy_ts=[row[0] for row in log.get("retract") or []],
                    summary=r.get("summary") or {}, cap_s=r.get("cap_s"), server_error=r.get("server_error"),
                ))
            else:
                other.append({**r, "call": call})
    # A phase whose server died under it: SGLang sleeps ~5 s for crash diagnostics before it exits, so the
    # grid before issue 14 could find it still alive and say client_error. Crashed, when the boot's
    # server was dead at stop or its log says the scheduler raised.
    dead = {r["boot_id"] for r in other if r["kind"] == "stopped" and r.get("alive_at_stop") is False}
    for p in phases:
        if p.status == "client_error" and (p.boot_id in dead or server_exception(data, p.boot_id, boots)):
            p.status = "crashed"
    return boots, phases, other


_RAISED = re.compile(r"^[\w.]*(Error|Exception)\b: ")


def server_exception(data: Path, boot_id: str, boots: Sequence[Boot]) -> str | None:
    """The exception line that ended a server, from its committed log (None: it raised nothing)."""
    boot = next((b for b in boots if b.boot_id == boot_id), None)
    if boot is None or not boot.log:
        return None
    path = next((q for q in (Path(data) / boot.call / "logs" / boot.log, Path(data) / "logs" / boot.log) if q.exists()), None)
    if path is None:
        return None
    text = path.read_text(encoding="utf-8", errors="replace")
    if "Scheduler hit an exception" not in text and "Traceback" not in text:
        return None
    lines = [line.strip() for line in text.splitlines() if _RAISED.match(line.strip())]
    return lines[-1] if lines else None


def unified_report(unified: Path = UNIFIED_DATA, static: Path = DEFAULT_DATA) -> str:
    """Issue 14: each phase of the unified-memory boots beside the committed static ratios of the same
    shape (the static boots of the unified call too)."""
    u_boots, u_phases, u_other = load(unified)
    s_boots, s_phases, _ = load(static)
    unified_ids = {b.boot_id for b in u_boots if "-gu" in b.boot_id or b.boot_id.startswith("ru")}
    errors = {b.boot_id: server_exception(unified, b.boot_id, u_boots) for b in u_boots}
    rows = ["| phase P/O@C | config | status | done/sent | tok/s | retractions | max running | peak SWA/req (decode lines) | server's words |",
            "|---|---|---|---:|---:|---:|---:|---:|---|"]

    def row(p: Phase, label: str) -> str:
        peak, star = peak_per_request(decode_points(p.decode), p.concurrency)
        running = max((r[1] for r in p.decode), default=0)
        tok = "-" if p.total_tok_s is None else f"{p.total_tok_s:,.0f}" + (
            " (cut)" if p.status == "cut" else f" (until the crash, {p.elapsed_s:.1f} s)" if p.status == "crashed" and p.completed else "")
        words = (errors.get(p.boot_id) or p.server_error or "") if p.status not in ("ok", "cut") else ""
        peak_s = "-" if peak is None else f"{peak:,.0f}" + ("*" if star else "")
        return (f"| {p.shape} | {label} | {p.status} | {p.completed}/{p.requests} | {tok} | {p.retractions:g} | "
                f"{running} | {peak_s} | {words} |")

    for shape in dict.fromkeys(p.shape for p in u_phases):
        for p in (q for q in u_phases if q.shape == shape):
            rows.append(row(p, "**unified**" if p.boot_id in unified_ids else f"static {p.ratio:g} (this call)"))
        for p in sorted((q for q in s_phases if q.shape == shape), key=lambda q: -q.ratio):
            rows.append(row(p, f"static {p.ratio:g} ({p.call})"))
    not_run = [f"{r.get('boot_id')} {r.get('phase')}" for r in u_other if r["kind"] in ("skipped", "not_started")]
    tail = [f"\nNot run: {', '.join(not_run)}"] if not_run else []
    return "\n".join(rows + tail)


def peak_per_request(points: Iterable[tuple[float, float]], concurrency: int) -> tuple[float | None, bool]:
    """Peak SWA tokens per running request over (running, swa_used) points.

    The max of swa_used / running over the points where at least 90 % of the phase's concurrency ran
    (the first wave, or any later one, fully admitted). Where no point got there (a pool admitted
    fewer), over the points with at least 90 % of the most that ever ran; the flag says so.
    """
    pts = [(run, used) for run, used in points if run and used is not None]
    if not pts:
        return None, False
    full = [used / run for run, used in pts if run >= NEAR_FULL * concurrency]
    if full:
        return max(full), False
    most = max(run for run, _ in pts)
    return max(used / run for run, used in pts if run >= NEAR_FULL * most), True


def series_points(phase: Phase) -> list[tuple[float, float]]:
    return [(s.get("running") or 0.0, s.get("swa_used")) for s in phase.series]


def decode_points(decode: Sequence[Sequence[Any]]) -> list[tuple[float, float]]:
    return [(row[1], row[3]) for row in decode if row[3] is not None]


def step_times(decode: Sequence[Sequence[Any]], busy: Sequence[int | None] = ()) -> list[tuple[Sequence[Any], float]]:
    """(decode line, ms per decode step) for the lines that timed pure decoding.

    SGLang logs a decode line every 40 steps with the tokens generated since the last one over the
    time since it (gen throughput); with #running requests decoding, one step takes
    #running / gen_throughput. A line counts when the line before it (same phase) had the same
    #running, CUDA graphs were on, and no retraction was logged in the seconds from the previous
    line to this one (`busy`: their timestamps; the log's clock has 1 s steps). A prefill batch run
    between two lines inflates that interval: the median over many lines is what is reported (the
    medians per #running moved by at most 0.1 ms between excluding and keeping such intervals).
    """
    busy_set = {t for t in busy if t is not None}
    out = []
    for prev, row in zip(decode, decode[1:]):
        running, gen, graph = row[1], row[4], row[6]
        if not (running and gen and gen > 0 and graph and prev[1] == running):
            continue
        if row[0] is not None and prev[0] is not None and any(t in busy_set for t in range(prev[0], row[0] + 1)):
            continue
        out.append((row, 1000.0 * running / gen))
    return out


def bucket(running: int) -> int:
    return min(STEP_BUCKETS, key=lambda b: (abs(b - running), b))


def peak_queue(phase: Phase) -> float | None:
    values = [s.get("queued") for s in phase.series if s.get("queued") is not None]
    return max(values) if values else None


def rule_0517(prompt: int, output: int) -> int:
    """0.5.17 without pressure (docs/sglang-swa-accounting.md): min(P, W) locked + every decoded token
    (for outputs up to W+1), for a prompt prefilled in one chunk."""
    return min(prompt, WINDOW) + output


# -- the simulator ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SimPhase:
    ratio: float
    shape: str
    status: str  # ok, hung, refused
    full_tokens: int | None
    swa_tokens: int | None
    total_tok_s: float | None
    retractions: float | None
    peak_queue: float | None
    peak_per_req: float | None  # from the simulated decode log lines (the primary definition)
    peak_flag: bool
    peak_per_req_series: float | None  # from the 1 s samples
    simulated: bool = True
    prefill_batches: int | None = None  # forward passes of the whole run (simulated)
    decode_passes: int | None = None


class Simulator:
    """The simulator as it is now, driven in virtual time with the real runs' server arguments
    (dummy weights: the simulator times their MoE routing as measured, autotune/sim/timing.py)."""

    def __init__(self, boots: Sequence[Boot]) -> None:
        from autotune.hardware import load_gpu
        from autotune.models import load_model
        from autotune.models.dummy import dummy_spec, write_dummy_model
        from autotune.pools.inference import infer_budget_from_layouts
        from autotune.pools.sizing import KVGeometry, PoolLayout

        catalog = load_model("26B-A4B")
        root = Path(tempfile.mkdtemp(prefix="swa-footprint-dummy-"))
        atexit.register(shutil.rmtree, root, True)
        self.model = dummy_spec(catalog, write_dummy_model(catalog, root))
        self.gpu = load_gpu("H200")
        geometry = KVGeometry.of(self.model)
        layouts = {(b.ratio, b.full_tokens, b.swa_tokens) for b in boots if b.ok and b.full_tokens}
        interval = infer_budget_from_layouts(
            geometry, [PoolLayout(r, 1, f, s, geometry.window) for r, f, s in sorted(layouts)])
        self.budget_bytes = interval.mid
        self.budget_note = (f"pinned by {len(layouts)} real layouts: {interval.lo:,} <= B < {interval.hi:,} bytes, "
                            f"simulated with {interval.mid:,} ({interval.mid / 2**30:.4f} GiB)")

    def config(self, ratio: float, overlap: bool = True) -> Any:
        from autotune.sim.config import SimServerConfig

        return SimServerConfig(
            model=self.model, gpu=self.gpu, swa_full_tokens_ratio=ratio, page_size=1, chunked_prefill_size=8192,
            max_prefill_tokens=16384, kv_budget_bytes=self.budget_bytes, sglang_version="0.5.17",
            prefill_cuda_graph=False, dummy_weights=True, overlap_schedule=overlap,
        )

    def run(self, ratio: float, phase: Phase, overlap: bool = True) -> SimPhase:
        """`overlap`: SGLang's overlap loop, its default (False: the run's servers had --disable-overlap-schedule)."""
        from autotune.pools.sizing import SWAPoolRefused
        from autotune.sim.run import simulate
        from autotune.workloads import MaxConcurrency, random_ids_workload

        workload = random_ids_workload(
            phase.name, num_prompts=phase.requests, input_len=phase.prompt, output_len=phase.output,
            range_ratio=1.0, seed=1000 + phase.index, arrival=MaxConcurrency(phase.concurrency), warmup=0,
        )
        try:
            result = simulate(workload, self.config(ratio, overlap))
        except SWAPoolRefused:
            return SimPhase(ratio, phase.shape, "refused", None, None, None, None, None, None, False, None)
        # Throughput over the same span as the real phase: all of it, or until the real phase was cut.
        cap = phase.elapsed_s if phase.status == "cut" else math.inf
        done = [o for o in result.outcomes if o.success and o.start_s + (o.e2e_s or 0.0) <= cap]
        span = min(result.duration_s, cap)
        tokens = sum(o.prompt_len + o.output_len for o in done)
        samples = [s for s in result.samples if s.t <= cap]
        series_peak, _ = peak_per_request(((s.num_running_reqs, s.swa_used_tokens) for s in samples), phase.concurrency)
        decode = grid_module().parse_log_lines("\n".join(result.log_lines))["decode"]
        peak, flag = peak_per_request(decode_points(decode), phase.concurrency)
        retracted = (samples[-1].num_retracted_requests_total - samples[0].num_retracted_requests_total) if samples else None
        return SimPhase(
            ratio=ratio, shape=phase.shape, status="hung" if result.hung else "ok",
            full_tokens=result.startup.full_tokens, swa_tokens=result.startup.swa_tokens,
            total_tok_s=tokens / span if span else None, retractions=retracted,
            peak_queue=max((s.num_queue_reqs for s in samples), default=None),
            peak_per_req=peak, peak_flag=flag, peak_per_req_series=series_peak,
            prefill_batches=result.prefill_batches, decode_passes=result.decode_passes,
        )


def load_before(path: Path = BEFORE) -> tuple[dict[tuple[float, str], SimPhase], dict[int, float]]:
    """The simulator before issue 12 (footprint/sim-before.json): per (ratio, shape), and decode ms per bucket."""
    if not path.exists():
        return {}, {}
    raw = json.loads(path.read_text(encoding="utf-8"))
    phases = {(v["ratio"], v["shape"]): SimPhase(**v) for v in raw["phases"].values()}
    return phases, {int(k): float(v) for k, v in raw.get("step_ms_median", {}).items()}


def grid_module() -> Any:
    """deploy/gpu-kit/footprint_grid.py as a module (its log parser is the one the measurement used)."""
    import importlib.util

    if "footprint_grid" not in sys.modules:
        path = REPO / "deploy" / "gpu-kit" / "footprint_grid.py"
        spec = importlib.util.spec_from_file_location("footprint_grid", path)
        module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
        sys.modules["footprint_grid"] = module
        spec.loader.exec_module(module)  # type: ignore[union-attr]
    return sys.modules["footprint_grid"]


# -- tables ------------------------------------------------------------------------------------


def _f(value: float | None, digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:,.{digits}f}"


def _ratio_key(ratio: float) -> str:
    return f"{ratio:g}"


@dataclass(frozen=True)
class RealFigures:
    phase: Phase
    peak: float | None  # decode log lines (primary)
    peak_flag: bool
    peak_series: float | None  # 1 s /metrics samples
    peak_series_flag: bool
    max_running_log: int


def real_figures(phase: Phase) -> RealFigures:
    peak, flag = peak_per_request(decode_points(phase.decode), phase.concurrency)
    peak_series, flag_series = peak_per_request(series_points(phase), phase.concurrency)
    most = max((row[1] for row in phase.decode), default=0)
    return RealFigures(phase, peak, flag, peak_series, flag_series, most)


def phase_table(phases: Sequence[Phase], boots: Sequence[Boot], sims: dict[tuple[float, str], SimPhase],
                before: dict[tuple[float, str], SimPhase] | None = None) -> str:
    layouts = {b.ratio: (b.full_tokens, b.swa_tokens) for b in boots if b.ok}
    before = before or {}
    lines = [
        "| phase P/O@C | ratio | full / SWA pool | status | max running | **peak SWA/req** | (1 s samples) | "
        "0.5.17 rule | sim peak/req | before | tok/s | sim tok/s | before | retractions | sim retr. | before | "
        "max queue | sim max queue |",
        "|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for p in sorted(phases, key=lambda p: (p.index, -p.ratio)):
        fig = real_figures(p)
        sim = sims.get((p.ratio, p.shape))
        old = before.get((p.ratio, p.shape))
        full, swa = layouts.get(p.ratio, (None, None))
        tok = _f(p.total_tok_s) + (" (cut)" if p.status == "cut" else "") if p.measured else p.status.upper()
        lines.append(
            f"| {p.shape} | {_ratio_key(p.ratio)} | {_f(full)} / {_f(swa)} | {p.status} | {fig.max_running_log} | "
            f"{_f(fig.peak)}{'*' if fig.peak_flag else ''} | {_f(fig.peak_series)}{'*' if fig.peak_series_flag else ''} | "
            f"{rule_0517(p.prompt, p.output):,} | "
            f"{_f(sim.peak_per_req if sim else None)}{'*' if sim and sim.peak_flag else ''} | "
            f"{_f(old.peak_per_req if old else None)} | {tok} | "
            f"{_f(sim.total_tok_s if sim else None)} | {_f(old.total_tok_s if old else None)} | {_f(p.retractions)} | "
            f"{_f(sim.retractions if sim else None)} | {_f(old.retractions if old else None)} | "
            f"{_f(peak_queue(p))} | {_f(sim.peak_queue if sim else None)} |"
        )
    return "\n".join(lines)


def _throughput_by_ratio(phases: Sequence[Phase]) -> dict[str, dict[float, Phase]]:
    shapes: dict[str, dict[float, Phase]] = {}
    for p in phases:
        if p.measured and p.total_tok_s is not None:
            shapes.setdefault(p.shape, {})[p.ratio] = p
    return shapes


def optimum_and_cliff(throughput: dict[float, float]) -> tuple[float | None, float | None, str]:
    """(optimum ratio, cliff, note). The cliff: walking down from the optimum through the measured
    ratios, the lowest ratio still within 20 % of the best; below it throughput falls by more than
    20 %. None with 'holds' when every measured ratio below the optimum stays within 20 %."""
    if not throughput:
        return None, None, "no data"
    best_ratio = max(throughput, key=lambda r: (throughput[r], r))
    best = throughput[best_ratio]
    cliff = best_ratio
    for ratio in sorted((r for r in throughput if r < best_ratio), reverse=True):
        if throughput[ratio] < CLIFF * best:
            return best_ratio, cliff, f"falls >20 % below {_ratio_key(cliff)} (at {_ratio_key(ratio)}: {throughput[ratio] / best:.0%})"
        cliff = ratio
    return best_ratio, None, f"within 20 % down to {_ratio_key(min(throughput))}"


def _sim_throughput(sims: dict[tuple[float, str], SimPhase], shape: str, ratios: Iterable[float]) -> dict[float, float]:
    return {r: sims[(r, shape)].total_tok_s for r in ratios  # type: ignore[misc]
            if (r, shape) in sims and sims[(r, shape)].total_tok_s}


def optimum_table(phases: Sequence[Phase], sims: dict[tuple[float, str], SimPhase],
                  before: dict[tuple[float, str], SimPhase] | None = None) -> str:
    lines = [
        "| phase P/O@C | ratios measured | real tok/s by ratio | real optimum | real: >20 % drop | sim optimum | "
        "sim: >20 % drop | before: optimum | before: >20 % drop |",
        "|---|---|---|---:|---|---:|---|---:|---|",
    ]
    for shape, by_ratio in sorted(_throughput_by_ratio(phases).items(), key=lambda kv: min(p.index for p in kv[1].values())):
        real = {r: p.total_tok_s for r, p in by_ratio.items() if p.total_tok_s is not None}
        sim = _sim_throughput(sims, shape, by_ratio)
        old = _sim_throughput(before or {}, shape, by_ratio)
        r_opt, _, r_note = optimum_and_cliff(real)  # type: ignore[arg-type]
        s_opt, _, s_note = optimum_and_cliff(sim)
        b_opt, _, b_note = optimum_and_cliff(old)
        listing = ", ".join(
            f"{_ratio_key(r)}: {_f(real[r])}{' (cut)' if by_ratio[r].status == 'cut' else ''}" for r in sorted(real, reverse=True))
        lines.append(f"| {shape} | {len(real)} | {listing} | {_ratio_key(r_opt) if r_opt else '-'} | {r_note} | "
                     f"{_ratio_key(s_opt) if s_opt else '-'} | {s_note if sim else '-'} | "
                     f"{_ratio_key(b_opt) if b_opt else '-'} | {b_note if old else '-'} |")
    return "\n".join(lines)


def sim_step_ms(timing: Any, row: Sequence[Any]) -> float:
    """The simulator's decode step for the batch a real decode line describes: #running requests whose
    sequences sum to #full token (every running request's full KV), each reading min(seq, window)."""
    from autotune.sim.timing import DecodeBatch

    running, full = int(row[1]), int(row[2])
    per = full / running
    return 1000.0 * timing.decode_step_s(DecodeBatch(running, full, int(running * min(per, WINDOW))))


def step_table(phases: Sequence[Phase], timing: Any | None, before: dict[int, float] | None = None) -> str:
    real: dict[int, list[tuple[Sequence[Any], float]]] = {}
    for p in phases:
        for row, ms in step_times(p.decode, p.busy_ts):
            real.setdefault(bucket(int(row[1])), []).append((row, ms))
    lines = ["| #running (nearest) | decode lines | real ms/step: median | p25-p75 | sim ms/step, same batches: median | "
             "sim / real | before: sim ms/step | before / real |",
             "|---:|---:|---:|---|---:|---:|---:|---:|"]
    for b in STEP_BUCKETS:
        rows = real.get(b, [])
        if not rows:
            continue
        values = sorted(ms for _, ms in rows)
        q = statistics.quantiles(values, n=4) if len(values) >= 4 else [values[0], statistics.median(values), values[-1]]
        med = statistics.median(values)
        sm = statistics.median(sim_step_ms(timing, row) for row, _ in rows) if timing is not None else None
        old = (before or {}).get(b)
        lines.append(f"| {b} | {len(values)} | {med:.1f} | {q[0]:.1f}-{q[2]:.1f} | {_f(sm, 1)} | "
                     f"{'x%.2f' % (sm / med) if sm else '-'} | {_f(old, 1)} | {'x%.2f' % (old / med) if old else '-'} |")
    return "\n".join(lines)


def boot_table(boots: Sequence[Boot]) -> str:
    lines = ["| call | GPU | ratio | boot s | full tokens | SWA tokens | kvcache GiB | weights GiB | decode graphs GiB |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for b in sorted(boots, key=lambda b: (b.call, -b.ratio)):
        lines.append(f"| {b.call} | {b.gpu} | {_ratio_key(b.ratio)} | {_f(b.boot_s)} | {_f(b.full_tokens)} | "
                     f"{_f(b.swa_tokens)} | {_f(b.kvcache_gib, 3)} | {_f(b.weight_gib, 3)} | "
                     f"{_f(b.graph_gib.get('decode'), 3)} |")
    return "\n".join(lines)


def _near(a: float | None, b: float | None, tol: float) -> bool:
    if a is None and b is None:
        return True
    return a is not None and b is not None and abs(a - b) <= tol + 1e-9


def targets(phases: Sequence[Phase], sims: dict[tuple[float, str], SimPhase], simulator: Simulator | None,
            label: str = "sim") -> list[str]:
    """Issue 12's targets for one simulator (reported, not asserted): lines of a markdown list."""
    out: list[str] = []
    # 1. peak SWA tokens per running request within 3 % (phases where both sides had the concurrency running)
    peaks = []
    for p in phases:
        fig, sim = real_figures(p), sims.get((p.ratio, p.shape))
        if p.measured and sim and fig.peak and sim.peak_per_req and not fig.peak_flag and not sim.peak_flag:
            peaks.append((abs(sim.peak_per_req / fig.peak - 1), p))
    bad = [(e, p) for e, p in peaks if e > 0.03]
    worst = max(peaks, key=lambda x: x[0]) if peaks else None
    out.append(f"- peak SWA/request within 3 %: {len(peaks) - len(bad)} of {len(peaks)} phases with the concurrency "
               f"running on both sides" + (f"; worst {worst[0]:.1%} ({worst[1].shape} at {_ratio_key(worst[1].ratio)})"
                                            if worst else "")
               + ("; misses: " + ", ".join(f"{p.shape}@{_ratio_key(p.ratio)} {e:.1%}" for e, p in sorted(bad, key=lambda x: -x[0])[:6])
                  if bad else ""))
    # 2.-5. per shape: optimum, cliff, ranking
    shapes = _throughput_by_ratio(phases)
    opt_ok = cliff_ok = 0
    misses_opt, misses_cliff, flips = [], [], []
    tput = []
    for shape, by_ratio in shapes.items():
        real = {r: p.total_tok_s for r, p in by_ratio.items() if p.total_tok_s is not None}
        sim = _sim_throughput(sims, shape, by_ratio)
        r_opt, r_cliff, _ = optimum_and_cliff(real)  # type: ignore[arg-type]
        s_opt, s_cliff, _ = optimum_and_cliff(sim)
        if _near(r_opt, s_opt, 0.05):
            opt_ok += 1
        else:
            misses_opt.append(f"{shape} real {_ratio_key(r_opt or 0)} vs {_ratio_key(s_opt or 0)}")
        if _near(r_cliff, s_cliff, 0.05):
            cliff_ok += 1
        else:
            misses_cliff.append(f"{shape} real {_ratio_key(r_cliff) if r_cliff else 'holds'} vs "
                                f"{_ratio_key(s_cliff) if s_cliff else 'holds'}")
        ratios = sorted(r for r in real if r in sim)
        for i, a in enumerate(ratios):
            for b in ratios[i + 1:]:
                s_close = abs(sim[a] - sim[b]) <= 0.05 * max(sim[a], sim[b])
                r_far = abs(real[a] - real[b]) > 0.10 * max(real[a], real[b])  # type: ignore[operator]
                if s_close and r_far:
                    flips.append(f"{shape} {_ratio_key(a)} vs {_ratio_key(b)}")
        for r, p in by_ratio.items():
            if p.status == "ok" and r in sim and p.total_tok_s:
                tput.append((sim[r] / p.total_tok_s - 1, p))
    out.append(f"- optimum within 0.05: {opt_ok} of {len(shapes)} shapes" + (f"; misses: {'; '.join(misses_opt)}" if misses_opt else ""))
    out.append(f"- >20 % cliff within 0.05: {cliff_ok} of {len(shapes)} shapes" + (f"; misses: {'; '.join(misses_cliff)}" if misses_cliff else ""))
    within = [t for t in tput if abs(t[0]) <= 0.15]
    worst_t = sorted(tput, key=lambda t: -abs(t[0]))[:4]
    out.append(f"- throughput within 15 % on complete phases: {len(within)} of {len(tput)}; worst: "
               + ", ".join(f"{p.shape}@{_ratio_key(p.ratio)} {e:+.0%}" for e, p in worst_t))
    out.append(f"- ratios the {label} calls within 5 % while real differs by >10 %: {len(flips)}"
               + (f" ({'; '.join(flips[:8])}{' ...' if len(flips) > 8 else ''})" if flips else ""))
    if simulator is not None:
        from autotune.pools import KVGeometry, WorkloadShape, analytic_optimum

        below = []
        for shape, by_ratio in shapes.items():
            real = {r: p.total_tok_s for r, p in by_ratio.items() if p.total_tok_s is not None}
            _, r_cliff, _ = optimum_and_cliff(real)  # type: ignore[arg-type]
            p0 = next(iter(by_ratio.values()))
            first = analytic_optimum(KVGeometry.of(simulator.model), simulator.budget_bytes,
                                     WorkloadShape(p0.prompt, p0.output, p0.concurrency), sglang_version="0.5.17").ratio
            collapse = max((r for r in real if r_cliff is not None and r < r_cliff), default=None)
            below.append((shape, first, r_cliff, collapse))
        bad_first = [b for b in below if b[3] is not None and b[1] <= b[3]]
        out.append("- analytic first trial (capacity model, 0.5.17) not in the real collapse: "
                   f"{len(below) - len(bad_first)} of {len(below)} shapes ("
                   + "; ".join(f"{shape} {first:.3f}" + (f", real holds to {_ratio_key(c)}" if c else "")
                               for shape, first, c, _ in below) + ")")
    return out


def build_report(data: Path = DEFAULT_DATA, simulate_too: bool = True) -> str:
    boots, phases, other = load(data)
    sims: dict[tuple[float, str], SimPhase] = {}
    note = "simulator not run (--no-sim)"
    timing = None
    simulator = None
    before, before_steps = load_before() if simulate_too else ({}, {})
    if simulate_too:
        simulator = Simulator(boots)
        note = simulator.budget_note
        from autotune.sim.timing import TimingModel

        timing = TimingModel(simulator.model, simulator.gpu, prefill_cuda_graph=False, dummy_weights=True)
        for p in phases:
            if (p.ratio, p.shape) not in sims and p.measured:
                sims[(p.ratio, p.shape)] = simulator.run(p.ratio, p)
    booted = {b.ratio for b in boots}
    skipped = [o for o in other if o["kind"] == "skipped" or (o["kind"] == "not_started" and o["ratio"] not in booted)]
    out = [
        "### Boots: the server's own memory figures",
        "",
        boot_table(boots),
        "",
        f"Simulated KV budget: {note}.",
        "",
        "### Per phase and ratio (real SGLang 0.5.17; the simulator now, and before issue 12)",
        "",
        "`*`: no sample had 90 % of the concurrency running; the peak is over the samples with 90 % of the most "
        "that ran. `0.5.17 rule`: min(P, 1023) + O. tok/s: total (prompt + output) tokens of the finished requests "
        "per second of the phase, or of the time until it was cut (30 s).",
        "",
        phase_table(phases, boots, sims, before),
        "",
        "### Optimum ratio and the >20 % cliff, per phase shape",
        "",
        optimum_table(phases, sims, before),
        "",
        "### Decode step time vs #running (decode log lines: same #running as the line before, CUDA graphs on, no retraction)",
        "",
        step_table(phases, timing, before_steps),
    ]
    if sims:
        out += ["", "### Issue 12's targets (simulated figures against real ones; reported, not asserted)", "",
                "The simulator now:", "", *targets(phases, sims, simulator)]
        if before:
            out += ["", "Before:", "", *targets(phases, before, None, label="simulator before")]
    if skipped:
        out += ["", "Not measured: " + "; ".join(
            f"{o['call']} ratio {_ratio_key(o['ratio'])}" + (f" {o['phase']}" if "phase" in o else " (not booted)")
            for o in skipped)]
    return "\n".join(out) + "\n"


def dump_sim(data: Path, path: Path) -> None:
    """The simulator's figures for every measured phase, and its decode step per bucket, as JSON."""
    import dataclasses

    boots, phases, _ = load(data)
    simulator = Simulator(boots)
    from autotune.sim.timing import TimingModel

    timing = TimingModel(simulator.model, simulator.gpu, prefill_cuda_graph=False, dummy_weights=True)
    out = {f"{p.ratio:g}|{p.shape}": dataclasses.asdict(simulator.run(p.ratio, p)) for p in phases if p.measured}
    steps: dict[int, list[float]] = {}
    for p in phases:
        for row, _ in step_times(p.decode, p.busy_ts):
            steps.setdefault(bucket(int(row[1])), []).append(sim_step_ms(timing, row))
    path.write_text(json.dumps({"phases": out, "step_ms_median": {k: statistics.median(v) for k, v in steps.items()}},
                               indent=1), encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--no-sim", action="store_true", help="real figures only (fast)")
    parser.add_argument("--unified", action="store_true",
                        help="issue 14: the unified-memory phases beside the static ratios (docs/real-gpu/unified)")
    parser.add_argument("--write", type=Path, default=None, help="also write the tables to this file")
    parser.add_argument("--dump-sim", type=Path, default=None,
                        help="write the simulator's figures as JSON (how footprint/sim-before.json was made)")
    args = parser.parse_args(argv)
    if args.dump_sim:
        dump_sim(args.data, args.dump_sim)
        return 0
    report = unified_report(static=args.data) if args.unified else build_report(args.data, simulate_too=not args.no_sim)
    print(report)
    if args.write:
        args.write.write_text(report, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())

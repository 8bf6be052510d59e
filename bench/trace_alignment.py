"""A traced real storm against the simulator, event by event.

The scheduler probe (deploy/gpu-kit/probes/sched_trace) logged every batch a real SGLang 0.5.17 server built during
the `traced-deep`, `traced-lag` and `traced-collapse` runs (docs/real-gpu/first-pass/): each prefill batch with every request's extend range,
each decode batch's size, each retraction with the retracted requests' output counts. This bench replays the same
phase in the simulator, reduces both sides to the same event sequence and aligns them from the first retraction
(before it, the real client's first request may reach the scheduler alone). It prints the schedule totals and how
many events the two runs share before the first difference, with the difference in context.

    python bench/trace_alignment.py [--run DIR ...] [--context 4]

Every simulated figure is simulated.
"""

from __future__ import annotations

import argparse
import json
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import swa_footprint_fidelity as footprint  # noqa: E402

RUNS = [REPO / "docs" / "real-gpu" / "first-pass" / name for name in ("traced-deep", "traced-lag", "traced-collapse")]
RUN = RUNS[0]

Event = tuple[str, tuple[int, ...]]  # ("P", extend per request) | ("D", (batch size,)) | ("R", outputs of the retracted)


@dataclass(frozen=True)
class Trace:
    ratio: float
    swa_tokens: int
    phase: dict[str, Any]  # the run's phase record (results.jsonl)
    events: list[Event]  # from the phase's first round on


def _trace_lines(run: Path) -> dict[str, list[dict[str, Any]]]:
    """Each server process's trace (sched-trace.jsonl.<pid>), parsed, from the run's log tarball."""
    out: dict[str, list[dict[str, Any]]] = {}
    with tarfile.open(run / "fp-logs.tar.gz") as tar:
        for member in tar.getmembers():
            if "sched-trace.jsonl." in member.name and member.isfile():
                data = tar.extractfile(member)
                assert data is not None
                out[member.name] = [json.loads(line) for line in data.read().decode().splitlines() if line.strip()]
    return out


def _real_events(lines: Iterable[dict[str, Any]]) -> Iterator[Event]:
    for e in lines:
        kind = e.get("event")
        if kind == "extend":
            yield ("P", tuple(r["extend"][1] - r["extend"][0] for r in e["reqs"]))
        elif kind == "decode":
            yield ("D", (e["bs"],))
        elif kind == "retract":
            yield ("R", tuple(r["out"] for r in e["retracted"]))


def real_traces(run: Path = RUN) -> list[Trace]:
    """One trace per measured phase. A trace file is one server process, matched to its boot by the SWA pool (the
    emptiest round's free tokens). The pool is empty (nothing running, nothing cached) at the warm-up's first round
    and after every /flush_cache, so the phases start at the empty rounds after the warm-up's, in order."""
    records = [json.loads(line) for line in (run / "results.jsonl").read_text().splitlines() if line.strip()]
    boots = {r["swa_tokens"]: r for r in records if r.get("kind") == "boot" and r.get("ok")}
    traces = []
    for lines in _trace_lines(run).values():
        rounds = [i for i, e in enumerate(lines) if e.get("event") == "round"]
        capacity = max(lines[i]["swa_free"] for i in rounds)
        boot = boots[capacity]
        empty = [i for i in rounds if lines[i]["swa_free"] == capacity and lines[i].get("running") == 0
                 and not lines[i].get("swa_evictable")]
        warmed = any(r.get("kind") == "warm_up" and r["boot_id"] == boot["boot_id"] for r in records)
        starts = empty[1:] if warmed else empty
        phases = sorted((r for r in records if r.get("kind") == "phase" and r["boot_id"] == boot["boot_id"]),
                        key=lambda r: r["index"])
        for phase, start, end in zip(phases, starts, [*starts[1:], len(lines)]):
            traces.append(Trace(boot["ratio"], capacity, phase, list(_real_events(lines[start:end]))))
    return sorted(traces, key=lambda t: (t.ratio, t.phase["index"]))


def simulated_events(ratio: float, phase: dict[str, Any], simulator: Any) -> list[Event]:
    """The same phase in the simulator (the footprint bench's configuration), reduced to the same events."""
    from autotune.sim.run import SimSession
    from autotune.workloads import MaxConcurrency, random_ids_workload

    session = SimSession(simulator.config(ratio))
    events: list[Event] = []
    step = session.engine.step
    # A phase cut at its cap: the same span of the simulated replay (its clock starts at 0).
    span = phase["elapsed_s"] if phase.get("status") == "cut" else float("inf")

    def recording_step(now: float) -> Any:
        report = step(now)
        if report.start_s > span:
            return report
        if report.retracted:
            events.append(("R", tuple(r.generated for r in report.retracted)))
        if report.kind == "prefill":
            events.append(("P", report.chunks))
        elif report.kind == "decode":
            events.append(("D", (report.batch_size,)))
        return report

    session.engine.step = recording_step  # type: ignore[method-assign]  # this replay's own engine
    workload = random_ids_workload(
        phase["phase"], num_prompts=phase["requests"], input_len=phase["prompt"], output_len=phase["output"],
        range_ratio=1.0, seed=1000 + phase["index"], arrival=MaxConcurrency(phase["concurrency"]), warmup=0,
    )
    session.replay(workload)
    return events


@dataclass(frozen=True)
class Alignment:
    shared: int  # events identical from the first retraction on, before the first difference
    real_from: int  # index of the first retraction in each sequence
    sim_from: int
    ended: bool  # one sequence ended with no difference


def align(real: Sequence[Event], sim: Sequence[Event]) -> Alignment:
    ri = next(i for i, e in enumerate(real) if e[0] == "R")
    si = next(i for i, e in enumerate(sim) if e[0] == "R")
    n = 0
    while ri + n < len(real) and si + n < len(sim) and real[ri + n] == sim[si + n]:
        n += 1
    return Alignment(n, ri, si, ri + n == len(real) or si + n == len(sim))


def totals(events: Sequence[Event]) -> dict[str, int]:
    return {
        "prefill batches": sum(1 for e in events if e[0] == "P"),
        "decode passes": sum(1 for e in events if e[0] == "D"),
        "retracting steps": sum(1 for e in events if e[0] == "R"),
        "retractions": sum(len(e[1]) for e in events if e[0] == "R"),
    }


def _show(event: Event | None) -> str:
    if event is None:
        return "(end)"
    kind, values = event
    if kind == "P":
        return "prefill " + " + ".join(map(str, values))
    if kind == "D":
        return f"decode {values[0]}"
    return "retract " + ", ".join(f"{v} out" for v in values)


def report(runs: Sequence[Path] = RUNS, context: int = 4) -> str:
    boots, _, _ = footprint.load(footprint.DEFAULT_DATA)
    simulator = footprint.Simulator(boots)
    out = []
    for run in runs:
        out += [f"## Traced run `{run.name}` against the simulator (simulated), aligned from the first retraction", ""]
        for trace in real_traces(run):
            out += _phase_report(trace, simulated_events(trace.ratio, trace.phase, simulator), context)
    return "\n".join(out)


def _phase_report(trace: Trace, sim: Sequence[Event], context: int) -> list[str]:
    real_totals, sim_totals = totals(trace.events), totals(sim)
    cut = f", cut at {trace.phase['elapsed_s']:.0f} s on both sides" if trace.phase.get("status") == "cut" else ""
    out = [f"### Ratio {trace.ratio:g}: {trace.phase['phase']} (SWA pool {trace.swa_tokens:,} tokens{cut})", "",
           "| | real 0.5.17 | simulated |", "|---|---:|---:|"]
    out += [f"| {k} | {real_totals[k]:,} | {sim_totals[k]:,} |" for k in real_totals]
    if not real_totals["retractions"] or not sim_totals["retractions"]:
        shared = sum(1 for _ in _common_prefix(trace.events, sim))
        return out + ["", f"No retraction on one side: events shared from the start: {shared:,} of {len(trace.events):,}.", ""]
    a = align(trace.events, sim)
    total = len(trace.events) - a.real_from
    out += ["", f"Events shared from the first retraction: {a.shared:,} of the real run's {total:,}"
                + (" (all)." if a.ended else ".")]
    if not a.ended:
        out += ["", "| event | real | simulated |", "|---:|---|---|"]
        for k in range(max(a.shared - context, 0), a.shared + context):
            r = trace.events[a.real_from + k] if a.real_from + k < len(trace.events) else None
            s = sim[a.sim_from + k] if a.sim_from + k < len(sim) else None
            mark = " **≠**" if r != s else ""
            out.append(f"| {k}{mark} | {_show(r)} | {_show(s)} |")
    return out + [""]


def _common_prefix(a: Sequence[Event], b: Sequence[Event]) -> Iterator[Event]:
    for x, y in zip(a, b):
        if x != y:
            return
        yield x


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, action="append", help="a traced run directory (results.jsonl, "
                        "fp-logs.tar.gz); repeatable (default: traced-deep, traced-lag, traced-collapse)")
    parser.add_argument("--context", type=int, default=4, help="events shown around the first difference")
    args = parser.parse_args(argv)
    print(report(args.run or RUNS, args.context))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

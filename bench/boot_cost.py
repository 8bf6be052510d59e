"""Where a real SGLang boot's seconds go, from the server logs the project committed (no GPU needed).

Each log SGLang 0.5.17 wrote ends its start-up with `Engine startup timings (s): ...
scheduler_e2e=..., cuda_graph={... decode=...}, tokenizer_e2e=...` and, before it, the decode CUDA
graph batch sizes it captured. Grouped by how many sizes were captured (SGLang's default: up to
256; capped with --cuda-graph-max-bs-decode 128) and by first-on-the-machine vs later boots.

    python bench/boot_cost.py [LOG_DIR ...]    # default: every log under docs/real-gpu/
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TIMINGS = re.compile(r"Engine startup timings \(s\): .*?scheduler_e2e=([\d.]+), cuda_graph=\{prefill=[\d.]+, decode=([\d.]+)"
                     r"[^}]*\}, tokenizer_e2e=([\d.]+)")
CAPTURE = re.compile(r"Capture (?:target )?decode CUDA graph begin\..*?bs=\[([\d, ]+)\]")
STAMP = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)\]", re.MULTILINE)
TP = re.compile(r"\btp_size=(\d+)")
# What `node.sh caches load` prints in a run's console.log: that run's first boots found the caches carried in.
CACHES_LOADED = "loaded .cache/"


@dataclass(frozen=True)
class Boot:
    log: Path
    sizes: int  # decode CUDA graph batch sizes captured
    max_bs: int
    graph_s: float  # decode CUDA graph capture
    scheduler_s: float  # the scheduler's whole start-up (weights, KV, graphs)
    startup_s: float  # SGLang's own end-to-end figure (tokenizer_e2e)
    first_on_machine: bool  # no earlier boot of the same run: caches cold (or loaded, below)
    tp: int = 1
    caches_loaded: bool = False  # a first boot after `node.sh caches load`


def read_boot(log: Path) -> Boot | None:
    text = log.read_text(errors="replace")
    timings, capture = TIMINGS.search(text), CAPTURE.search(text)
    if not timings or not capture:
        return None
    sizes = [int(s) for s in capture.group(1).split(",")]
    tp = TP.search(text)
    return Boot(log, len(sizes), max(sizes), float(timings.group(2)), float(timings.group(1)), float(timings.group(3)), False,
                int(tp.group(1)) if tp else 1)


def run_root(log: Path) -> Path:
    """The directory one lease's logs share: the nearest one above the log with the session's console.log
    (deploy/gpu-kit/session.sh logs each study to a subdirectory of it), else the log's own."""
    for parent in log.parents:
        if (parent / "console.log").exists():
            return parent
        if parent.name == "real-gpu":
            break
    return log.parent


def mark_first(boots: list[Boot]) -> list[Boot]:
    """Boots that found the machine's caches cold: no other boot of the same run started in the ten
    minutes before them (a new lease is a new machine; two GPUs boot together). A run whose console.log
    shows `node.sh caches load` had its first boots' caches carried in."""
    starts = {b: datetime.strptime(STAMP.search(b.log.read_text(errors="replace")).group(1), "%Y-%m-%d %H:%M:%S")
              for b in boots}
    out = []
    for b in boots:
        root = run_root(b.log)
        earlier = [starts[o] for o in boots if run_root(o.log) == root
                   and timedelta(seconds=60) < starts[b] - starts[o] <= timedelta(minutes=10)]
        console = root / "console.log"
        loaded = not earlier and console.exists() and CACHES_LOADED in console.read_text(errors="replace")
        out.append(Boot(**{**b.__dict__, "first_on_machine": not earlier, "caches_loaded": loaded}))
    return out


def state(b: Boot) -> str:
    if not b.first_on_machine:
        return "warm"
    return "loaded from a carried file (first boot)" if b.caches_loaded else "cold (first boot)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dirs", nargs="*", type=Path, default=[REPO / "docs" / "real-gpu"])
    args = parser.parse_args()
    logs = sorted(p for d in args.dirs for p in d.rglob("*.log"))
    boots = mark_first([b for b in map(read_boot, logs) if b is not None])
    if not boots:
        print("no SGLang start-up timings found", file=sys.stderr)
        return 1
    print(f"{len(boots)} real SGLang boots (H200, SGLang 0.5.17, dummy 26B-A4B) from {len(logs)} logs\n")
    print(f"| decode graph sizes (max bs) | caches | boots | graph capture s (median, range) | scheduler start-up s | SGLang start-up s |")
    print("|---|---|---:|---|---:|---:|")
    states = ("cold (first boot)", "loaded from a carried file (first boot)", "warm")
    for sizes, tp in sorted({(b.sizes, b.tp) for b in boots}, key=lambda k: (k[1], -k[0])):
        for how in states:
            group = [b for b in boots if (b.sizes, b.tp) == (sizes, tp) and state(b) == how]
            if not group:
                continue
            graph = [b.graph_s for b in group]
            print(f"| {sizes} (up to {group[0].max_bs}){f', tp {tp}' if tp > 1 else ''} | {how} | {len(group)} | "
                  f"{statistics.median(graph):.1f} ({min(graph):.1f}-{max(graph):.1f}) | "
                  f"{statistics.median(b.scheduler_s for b in group):.1f} | {statistics.median(b.startup_s for b in group):.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

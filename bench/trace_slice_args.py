"""The command-line options the trace benches share: which trace, which slice of it, which model,
GPU and ratios (bench_capacity.py, bench_traffic.py)."""

from __future__ import annotations

import argparse
from pathlib import Path


def trace_slice_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--trace", required=True, type=Path, help="a .csv (Azure, BurstGPT) or Mooncake .jsonl trace")
    parser.add_argument("--start", default="600", help="seconds (or 10m) from the trace's first request")
    parser.add_argument("--duration", default="300", help="seconds (or 5m) of the trace to keep")
    parser.add_argument("--sample", type=float, default=1.0, help="share of the slice's requests to keep")
    parser.add_argument("--model", default="26B-A4B")
    parser.add_argument("--gpu", default="H100")
    parser.add_argument("--ratio", type=float, action="append", help="a ratio to measure (repeat the option)")
    return parser


def slice_entry(args: argparse.Namespace) -> dict:
    """The workload YAML entry of the slice the options name."""
    return {"dataset": str(args.trace.resolve()), "start": args.start, "duration": args.duration, "sample": args.sample}

"""`autotune workload ...`: look at a workload before tuning on it, or build one from a running server."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import numpy as np
import typer

from autotune.cli.console import console
from autotune.cli.errors import fail, user_errors
from autotune.cli.listing import Column, json_option, show

workload_app = typer.Typer(
    name="workload",
    help="Inspect workloads (presets, datasets, traces, mixes) or build one from a server's Prometheus metrics.",
    no_args_is_help=True,
)

SHOW_COLUMNS = (
    Column("workload", "workload"),
    Column("requests", "requests", right=True),
    Column("prompt", "prompt p50 / p90 / max", lambda v: f"{v['p50']:.0f} / {v['p90']:.0f} / {v['max']:,}", right=True),
    Column("output", "output p50 / p90 / max", lambda v: f"{v['p50']:.0f} / {v['p90']:.0f} / {v['max']:,}", right=True),
    Column("arrival", "arrival"),
    Column("span_s", "span", lambda v: f"{v:,.0f} s", right=True),
    Column("rate", "offered req/s", lambda v: f"{v:.2f}", right=True),
    Column("kind", "from"),
)


def _lengths(values: list[int]) -> dict[str, float]:
    array = np.array(values)
    return {"mean": float(array.mean()), "p50": float(np.percentile(array, 50)),
            "p90": float(np.percentile(array, 90)), "max": int(array.max())}


@workload_app.command("show")
@user_errors
def show_command(
    workload: str = typer.Argument(..., help="Presets, a .jsonl/.json dataset, a .csv trace or a .yaml file (mixes too)."),
    as_json: bool = json_option(),
) -> None:
    """What a --workload value sends: request count, length quantiles, arrival, span and offered rate."""
    from autotune.workloads import TraceTimes, describe_arrival, parse_workload_arg, send_offsets

    rows = []
    for item in parse_workload_arg(workload):
        span = rate = None
        if isinstance(item.arrival, TraceTimes) or getattr(item.arrival, "rate", math.inf) != math.inf:
            offsets = send_offsets(item.arrival, item.requests)
            span = offsets[-1]
            rate = (len(offsets) - 1) / span if span > 0 else None
        rows.append({
            "workload": item.name,
            "requests": len(item.requests),
            "prompt": _lengths([r.prompt_len for r in item.requests]),
            "output": _lengths([r.output_len for r in item.requests]),
            "arrival": describe_arrival(item.arrival),
            "span_s": span,
            "rate": rate,
            "kind": item.source.get("kind", "?"),
            "spec_source": item.source,
        })
    show(rows, SHOW_COLUMNS, as_json=as_json, title="Workloads",
         notes=["span and offered req/s: of the send times (closed-loop workloads have none: the server sets the pace)."])


@workload_app.command("from-prometheus")
@user_errors
def from_prometheus_command(
    url: str = typer.Argument(..., help="Prometheus base URL, e.g. http://prometheus:9090 (it must scrape SGLang's /metrics)."),
    window: str = typer.Option("1h", "--window", help="How far back to look: 90s, 30m, 1h, 1d (ending now)."),
    out: Path = typer.Option(Path("prometheus-workload.yaml"), "--out", "-o", help="Workload YAML to write."),
    name: Optional[str] = typer.Option(None, "--name", help="Workload name (keys its studies); default: --out's stem."),
    selector: Optional[str] = typer.Option(
        None, "--selector", help='Label matchers for the SGLang series, e.g. \'job="sglang",model_name="gemma"\'.'
    ),
    num_prompts: Optional[int] = typer.Option(
        None, "--num-prompts", "-n", help="Requests in the workload (default: one server's requests in the window, at most 1000)."
    ),
    total: bool = typer.Option(
        False, "--total", help="Use the rate of all the servers that reported together, not per server."
    ),
    seed: int = typer.Option(1, "--seed", help="Seed of the length draws and the Poisson arrivals."),
    force: bool = typer.Option(False, "--force", help="Overwrite --out if it exists."),
    timeout_s: float = typer.Option(10.0, "--timeout", help="Seconds per Prometheus request."),
    as_json: bool = json_option(),
) -> None:
    """Build a workload from a running SGLang's request-length histograms and request rate, via Prometheus.

    No prompt is read: lengths follow sglang:prompt_tokens_histogram and sglang:generation_tokens_histogram,
    arrivals are Poisson at sglang:num_requests_total's rate over the window."""
    from autotune.cli.console import print_json
    from autotune.workloads import load_workload_yaml
    from autotune.workloads.from_prometheus import fetch_traffic, traffic_entry, write_entry

    if out.exists() and not force:
        fail(f"{out} exists; pass --force to overwrite it, or another --out")
    traffic = fetch_traffic(url, window=window, selector=selector, timeout_s=timeout_s)
    entry = traffic_entry(traffic, name=name or out.stem, num_prompts=num_prompts, per_server=not total, seed=seed,
                          window_text=window)
    write_entry(entry, out)
    workload = load_workload_yaml(out)[0]  # what the other commands will read, so a bad file fails here
    if as_json:
        print_json({"path": str(out), "workload": workload.name, "describe": workload.describe(), **entry})
        return
    origin = entry["origin"]
    console.print(
        f"{origin['requests_in_window']:,.0f} requests finished in the last {window} on {origin['servers']} server(s) "
        f"({origin['request_rate_total']:.3f} req/s in all; the workload sends {entry['request_rate']:.3f} req/s, "
        f"{origin['rate_is']})"
    )
    console.print(f"mean prompt {origin['mean_prompt_tokens']} / output {origin['mean_output_tokens']} tokens (server's own sums)")
    console.print(f"wrote {out}: {workload.describe()}")
    console.print(f"tune on it: autotune run --model <model> --workload {out}")

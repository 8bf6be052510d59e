"""`autotune pools` / `autotune plan` for the memory modes that replace the ratio's split:
the mode, its pools or arena per SGLang release, and that --swa-full-tokens-ratio is ignored."""

from __future__ import annotations

from typing import Annotated, Any, Optional

import typer

from autotune.cli.console import console, print_json
from autotune.pools.mode_sizing import ModeSizing, size_request_cap, size_unified
from autotune.pools.modes import REQUEST_CAP, SINGLE_POOL, STATIC, UNIFIED, MemoryMode, memory_mode
from autotune.pools.sizing import KVGeometry

# The flags that select a memory mode, as `pools` and `plan` take them (SGLang's names).
UnifiedFlag = Annotated[bool, typer.Option(
    "--enable-unified-memory", help="SGLang's unified memory: show its arena (the ratio is then ignored).")]
MaxRunningFlag = Annotated[Optional[int], typer.Option(
    "--max-running-requests", help="SGLang's --max-running-requests (with --disable-radix-cache: request-cap mode).")]
RadixOffFlag = Annotated[bool, typer.Option("--disable-radix-cache", help="SGLang's --disable-radix-cache.")]
ChunkFlag = Annotated[Optional[int], typer.Option(
    "--chunked-prefill-size", help="SGLang's --chunked-prefill-size (default: SGLang's, by GPU memory).")]
OverlapOffFlag = Annotated[bool, typer.Option(
    "--disable-overlap-schedule", help="SGLang's --disable-overlap-schedule (one prefill chunk in flight).")]


def selected_mode(*, enable_unified_memory: bool, max_running_requests: Optional[int], disable_radix_cache: bool,
                  chunked_prefill_size: Optional[int], release: str) -> MemoryMode:
    flags = {
        "enable-unified-memory": enable_unified_memory or None,
        "max-running-requests": max_running_requests,
        "disable-radix-cache": disable_radix_cache or None,
        "chunked-prefill-size": chunked_prefill_size,
    }
    return memory_mode(flags, sglang_version=release)


def size_mode(mode: MemoryMode, geometry: KVGeometry, budget_bytes: int, *, ratio: float, page_size: int, release: str,
              max_running_requests: Optional[int], chunked_prefill_size: int, disable_overlap_schedule: bool,
              max_total_tokens: Optional[int] = None) -> ModeSizing:
    if mode.name == UNIFIED:
        return size_unified(geometry, budget_bytes, ratio, page_size, release, max_total_tokens=max_total_tokens)
    if mode.name == REQUEST_CAP:
        assert max_running_requests is not None
        return size_request_cap(geometry, budget_bytes, page_size, max_running_requests, chunked_prefill_size, release,
                                disable_overlap_schedule=disable_overlap_schedule, max_total_tokens=max_total_tokens)
    raise ValueError(f"no mode sizing for {mode.name}")


def show_mode(mode: MemoryMode, sizing: Optional[ModeSizing], *, as_json: bool, header: list[str],
              extra: dict[str, Any], refusal: Optional[str] = None) -> None:
    """Print the mode, its pools or arena and that the ratio is ignored (or the JSON of it); a
    start-up refusal SGLang would raise for this budget is shown with its words."""
    payload = {**extra, "memory_mode": mode.name, "mode_reason": mode.reason, "ratio_ignored": not mode.ratio_matters,
               "sizing": sizing.as_dict() if sizing else None, "refusal": refusal}
    if as_json:
        print_json(payload)
        return
    for line in header:
        console.print(line)
    console.print(f"[bold]Memory mode: {mode.name}[/] — {mode.reason}.")
    if refusal:
        console.print(f"[red]SGLang refuses to start with this budget: {refusal}")
    if sizing is not None:
        if sizing.mode == UNIFIED:
            console.print(f"  arena: {sizing.kv_bytes:,} bytes = {sizing.kv_bytes / 2**30:.2f} GiB "
                          f"(full {sizing.full_tokens:,} x F + SWA {sizing.swa_tokens:,} x S)")
            console.print(f"  nominal caps: full {sizing.full_tokens:,} tokens, SWA {sizing.swa_tokens:,} tokens "
                          f"(from ratio {sizing.ratio:g})")
            if sizing.borrows_beyond_caps:
                console.print(f"  run time (SGLang {sizing.release}): either side may pass its cap into the arena "
                              f"(full alone up to {sizing.full_max_alone:,}, SWA alone up to {sizing.swa_max_alone:,}); "
                              "admission checks full + SWA reservations against the joint byte budget. "
                              "[yellow]Read from SGLang's code, not measured.[/]")
            else:
                console.print(f"  run time (SGLang {sizing.release}): {sizing.measured}.")
        else:
            console.print(f"  SWA pool: {sizing.swa_tokens:,} tokens = ceil_page({sizing.swa_cap_formula})")
            console.print(f"  full pool: {sizing.full_tokens:,} tokens (the rest of the budget)")
            console.print(f"  [dim]SGLang logs: {sizing.log_line()}")
    console.print("[bold]--swa-full-tokens-ratio is ignored in this mode[/]: there is no split to tune. "
                  "`autotune run --modes static,unified` measures unified memory against the tuned ratio.")


def is_static(mode: MemoryMode) -> bool:
    return mode.name == STATIC


__all__ = ["SINGLE_POOL", "is_static", "selected_mode", "show_mode", "size_mode"]


# -- `autotune run --modes static,unified`: the memory-mode comparison in the run's report ----------


def add_mode_rows(rows: list[dict[str, Any]], outcomes: list[Any]) -> None:
    """Each workload's row gains `memory_modes`: static's best against unified's, and the winner."""
    from autotune.study.modes import winner

    by_base = {o.study_name.rsplit("::", 1)[0]: o for o in outcomes}
    for row in rows:
        unified = by_base.get(row["study"])
        if unified is None:
            continue
        row["memory_modes"] = {**winner(row["best_value"], row["best_ratio"], unified), "unified": unified.to_dict()}


def modes_table(rows: list[dict[str, Any]], unit: str):
    """Static (tuned ratio) against unified memory per workload, with a bar each on one scale."""
    from rich.text import Text

    out = Text(f"Memory modes ({unit}): the tuned static split against unified memory\n", style="bold")
    for row in rows:
        modes = row.get("memory_modes")
        if not modes:
            continue
        unified = modes["unified"]
        static_value, unified_value = row["best_value"], unified["value"]
        top = max(v for v in (static_value, unified_value, 1.0) if v is not None)
        out.append(f" {row['workload']}\n")
        for label, value, note in (
            (f"static {row['best_ratio']:.3f}" if row["best_ratio"] is not None else "static", static_value, ""),
            ("unified", unified_value, unified["failure"] or ""),
        ):
            filled = round(40 * value / top) if value else 0
            mark = "  ◀ winner" if (modes["mode"] == "static") == label.startswith("static") else ""
            out.append(f"   {label:>13} │")
            out.append("█" * filled, style="green" if mark else ("red" if note else "magenta"))
            out.append(" " * (40 - filled))
            out.append(f" {value:>10,.0f}" if value is not None else f" {'-':>10}")
            out.append(f"{mark}{'  ' + note if note else ''}\n")
    return out


def mode_progress(console: Any, plan: Any):
    def on_event(kind: str, data: dict[str, Any]) -> None:
        if kind == "started":
            console.print(f"  {plan.workload.name} unified-memory trial {data['trial']} started", style="dim")
        elif kind == "finished":
            console.print(f"  {plan.workload.name} unified-memory trial {data['trial']} -> {data['what']}", style="dim")
    return on_event

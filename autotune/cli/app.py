"""The `autotune` command. Thin: parse, call the modules, render with rich."""

from __future__ import annotations

from typing import Optional

import typer

from autotune.cli.console import console, print_json
from autotune.cli.errors import fail, user_errors
from autotune.cli.listing import Column, json_option, show
from autotune.cli.modes_view import ChunkFlag, MaxRunningFlag, OverlapOffFlag, RadixOffFlag, UnifiedFlag
from autotune.hardware import load_gpu
from autotune.models import ModelSpec, catalog_specs, load_model
from autotune.sglang_facts import DEFAULT_RATIO
from autotune.pools import (
    KVBudget,
    KVGeometry,
    estimate_budget,
    min_feasible_ratio,
    pinned_budget,
    size_pools,
    validate_ratio,
)

app = typer.Typer(
    name="autotune",
    help=(
        "Find the best --swa-full-tokens-ratio for SGLang's hybrid sliding-window KV pools, "
        "by closed-loop measurement, and hand it to SGLang at launch."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

MODEL_HELP = "Catalog name or alias (26B-A4B, 31B, E4B, gpt-oss-20b ...), hub id, or a directory / config.json."
GPU_HELP = "GPU profile: H100-80GB, H200-141GB, B200-180GB (or an alias such as H100), or a profile YAML file."


def _gb(value: float) -> str:
    return f"{value / 1e9:.1f} GB"


MODEL_COLUMNS = (
    Column("model", "model"),
    Column("aliases", "aliases", ", ".join),
    Column("architecture", "architecture"),
    Column("hybrid_swa", "hybrid SWA", lambda v: "yes" if v else "no"),
    Column("layers", "layers S+F", lambda v: f"{v['swa']}+{v['full']}"),
    Column("window", "window", right=True),
    Column("s_over_f", "S/F", lambda v: f"{v:.2f}", right=True),
    Column("moe", "MoE", lambda v: f"{v['experts']} x top-{v['top_k']}" if v else "dense"),
    Column("params", "params", lambda v: f"{v['total'] / 1e9:.1f}B" + (f" ({v['active'] / 1e9:.1f}B act.)" if v["active"] else ""), right=True),
    Column("weight_bytes", "weights", _gb, right=True),
)


@app.command("models")
@user_errors
def models_command(as_json: bool = json_option()) -> None:
    """List the model catalog: hybrid pool or not, S/F, window, MoE, weights."""
    from autotune.models import catalog_entries

    aliases = {entry.name: list(entry.aliases) for entry in catalog_entries()}
    rows = [
        {
            "model": model.name,
            "aliases": aliases.get(model.name, []),
            "architecture": model.architecture,
            "hybrid_swa": model.hybrid_swa,
            "layers": {"swa": len(model.swa_layer_ids), "full": len(model.full_layer_ids)},
            "window": model.window,
            "s_over_f": model.s_over_f,
            "moe": {"experts": model.moe.num_experts, "top_k": model.moe.top_k} if model.moe else None,
            "params": {"total": model.params_total, "active": model.params_active if model.moe else None},
            "weight_bytes": model.weight_bytes,
        }
        for model in catalog_specs()
    ]
    show(
        rows, MODEL_COLUMNS, as_json=as_json, title="Model catalog (configs shipped as data; nothing is downloaded)",
        notes=["S/F: KV bytes per token of all sliding layers over all full layers (bf16, TP 1). "
               "window: as SGLang runs it. Parameter counts and weights: published figures."],
    )


def resolve_budget(
    model: ModelSpec, gpu_name: str, *, tp: int, kv_budget_gb: float | None, mem_fraction_static: float | None
) -> KVBudget:
    if kv_budget_gb is not None:
        return pinned_budget(kv_budget_gb)
    return estimate_budget(model, load_gpu(gpu_name), tp=tp, mem_fraction_static=mem_fraction_static)


def _describe_model(model: ModelSpec) -> str:
    return (
        f"[bold]{model.name}[/] ({model.architecture}, {model.kind}): "
        f"{len(model.swa_layer_ids)} SWA + {len(model.full_layer_ids)} full layers, window {model.window}, "
        f"S/F {model.s_over_f:.2f}"
    )


POOL_COLUMNS = (
    Column("ratio", "ratio", lambda v: f"{v:g}", right=True),
    Column("full_tokens", "full tokens", lambda v: f"{v:,}", right=True),
    Column("swa_tokens", "SWA tokens", lambda v: f"{v:,}", right=True),
    Column("windows_in_swa", "windows in SWA", lambda v: f"{v:.1f}", right=True),
    Column("decoding_requests_swa", "decoding reqs (SWA)", lambda v: f"{v:,}", right=True),
    Column("kv_bytes_used", "KV bytes used", _gb, right=True),
)


@app.command("pools")
@user_errors
def pools_command(
    model_ref: str = typer.Option(..., "--model", "-m", help=MODEL_HELP),
    gpu: str = typer.Option("H100-80GB", "--gpu", "-g", help=GPU_HELP),
    ratio: list[float] = typer.Option([DEFAULT_RATIO], "--ratio", "-r", help="--swa-full-tokens-ratio to size; repeat for several."),
    page_size: int = typer.Option(1, "--page-size", min=1, help="SGLang --page-size (1 on CUDA by default; 64 with trtllm_mha)."),
    tp: int = typer.Option(1, "--tp", min=1, help="Tensor-parallel size: KV heads and weights split over this many GPUs."),
    kv_budget_gb: Optional[float] = typer.Option(
        None, "--kv-budget-gb", help="Pin the KV budget in decimal GB (10^9 bytes) instead of estimating it."
    ),
    mem_fraction_static: Optional[float] = typer.Option(
        None, "--mem-fraction-static", help="SGLang's --mem-fraction-static (default: SGLang's own formula)."
    ),
    kv_dtype: str = typer.Option("bf16", "--kv-dtype", help="KV cache dtype: bf16, fp16, fp8_e4m3, fp8_e5m2."),
    max_total_tokens: Optional[int] = typer.Option(None, "--max-total-tokens", help="SGLang's cap on the full pool."),
    enable_unified_memory: UnifiedFlag = False,
    max_running_requests: MaxRunningFlag = None,
    disable_radix_cache: RadixOffFlag = False,
    chunked_prefill_size: ChunkFlag = None,
    disable_overlap_schedule: OverlapOffFlag = False,
    sglang_version: Optional[str] = typer.Option(
        None, "--sglang-version", help="The SGLang release whose memory-mode sizing to use (0.5.17, 0.5.23). "
                                       "Default: the installed SGLang, else the simulator's release."),
    as_json: bool = json_option(),
) -> None:
    """Print the full and SWA pool sizes SGLang would log, and the feasible ratio range (or, with a flag
    that selects another memory mode, that mode's pools or arena)."""
    for r in ratio:
        validate_ratio(r)
    model = load_model(model_ref)
    if not model.hybrid_swa:
        if as_json:
            print_json({"model": model.name, "hybrid_swa": False, "reason": model.hybrid_reason, "rows": []})
        else:
            console.print(_single_pool_note(model))
        return
    geometry = KVGeometry.of(model, tp=tp, kv_dtype=kv_dtype)
    budget = resolve_budget(model, gpu, tp=tp, kv_budget_gb=kv_budget_gb, mem_fraction_static=mem_fraction_static)
    if enable_unified_memory or max_running_requests is not None:
        if _show_other_mode(
            model, geometry, budget, gpu=gpu, ratio=ratio[0], page_size=page_size, release=sglang_version,
            enable_unified_memory=enable_unified_memory, max_running_requests=max_running_requests,
            disable_radix_cache=disable_radix_cache, chunked_prefill_size=chunked_prefill_size,
            disable_overlap_schedule=disable_overlap_schedule, max_total_tokens=max_total_tokens, as_json=as_json,
            extra={"tp": tp, "page_size": page_size, "kv_dtype": kv_dtype},
        ):
            return
    low = min_feasible_ratio(geometry, budget.bytes, page_size, max_total_tokens=max_total_tokens)
    if low is None:
        fail(f"no ratio in (0, 1] boots: even at 1.0 the SWA pool cannot hold one window plus a page "
             f"(KV budget {budget.gib:.3f} GiB). Raise the KV budget (--mem-fraction-static, --tp, a larger GPU).")
    layouts = [size_pools(geometry, budget.bytes, r, page_size, max_total_tokens=max_total_tokens) for r in ratio]
    rows = [
        {
            "ratio": layout.ratio,
            "full_tokens": layout.full_tokens,
            "swa_tokens": layout.swa_tokens,
            "windows_in_swa": layout.windows_held,
            "decoding_requests_swa": layout.decoding_requests_held(),
            "kv_bytes_used": geometry.pool_bytes(layout.full_tokens, layout.swa_tokens),
            "sglang_log_line": layout.log_line(),
        }
        for layout in layouts
    ]
    if not as_json:
        console.print(_describe_model(model))
        console.print(
            f"KV bytes/token per GPU: F = {geometry.full_bytes} (full layers), S = {geometry.swa_bytes} (SWA layers); "
            f"tp={tp}, kv dtype {kv_dtype}, page size {page_size}"
        )
        console.print(f"KV budget: {budget.bytes / 1e9:.4f} GB = {budget.gib:.3f} GiB ({budget.source})")
    show(
        rows, POOL_COLUMNS, as_json=as_json,
        notes=[*(f"[dim]SGLang logs: {row['sglang_log_line']}" for row in rows),
               f"Feasible ratios: [{low:.3f}, 1.0] (below {low:.3f} SGLang refuses to start: the SWA pool "
               f"cannot hold window {geometry.window} + page {page_size})."],
        extra={
            "model": model.name, "gpu": gpu, "tp": tp, "page_size": page_size, "kv_dtype": kv_dtype,
            "kv_bytes_per_token": {"full": geometry.full_bytes, "swa": geometry.swa_bytes},
            "kv_budget_bytes": budget.bytes, "kv_budget_source": budget.source,
            "feasible_ratios": [low, 1.0],
        },
    )


DEFAULT_SIM_GPU = "H100-80GB"


PLAN_COLUMNS = (
    Column("workload", "workload"),
    Column("best_ratio", "best ratio", lambda v: f"{v:.3f}", right=True),
    Column("layout", "full / SWA tokens", lambda v: f"{v['full']:,} / {v['swa']:,}", right=True),
    Column("concurrent_requests", "concurrent reqs", lambda v: f"{v:.0f}", right=True),
    Column("target_concurrency", "workload runs", lambda v: f"{v} at once", right=True),
    Column("bound", "bound", right=True),
    Column("at_default", f"at {DEFAULT_RATIO:g}", lambda v: f"{v['requests']:.0f} reqs ({v['bound']}-bound)", right=True),
    Column("plateau", "ratios holding target", lambda v: f"{v[0]:.3f}-{v[1]:.3f}" if v else "none", right=True),
    Column("serviceable", "serviceable", lambda v: "yes" if v else "NO", right=True),
)


@app.command("plan")
@user_errors
def plan_command(
    model_ref: str = typer.Option(..., "--model", "-m", help=MODEL_HELP),
    gpu: str = typer.Option(DEFAULT_SIM_GPU, "--gpu", "-g", help=GPU_HELP + f" Default for the simulator: {DEFAULT_SIM_GPU}."),
    workload: str = typer.Option(
        "chat,summarization", "--workload", "-w",
        help="Comma-separated presets (chat, summarization, long-context, short-chat), a .jsonl dataset or a .yaml file.",
    ),
    page_size: int = typer.Option(1, "--page-size", min=1, help="SGLang --page-size."),
    tp: int = typer.Option(1, "--tp", min=1, help="Tensor-parallel size."),
    kv_budget_gb: Optional[float] = typer.Option(None, "--kv-budget-gb", help="Pin the KV budget (decimal GB)."),
    mem_fraction_static: Optional[float] = typer.Option(None, "--mem-fraction-static", help="SGLang's --mem-fraction-static."),
    sglang_version: Optional[str] = typer.Option(
        None, "--sglang-version",
        help="The SGLang release whose per-request SWA footprint to assume (0.5.17, 0.5.23). "
             "Default: the installed SGLang, else the simulator's release.",
    ),
    enable_unified_memory: UnifiedFlag = False,
    max_running_requests: MaxRunningFlag = None,
    disable_radix_cache: RadixOffFlag = False,
    chunked_prefill_size: ChunkFlag = None,
    disable_overlap_schedule: OverlapOffFlag = False,
    as_json: bool = json_option(),
) -> None:
    """The capacity model's view, before any trial: the analytic optimum per workload, the layout
    it gives, and how many concurrent requests each pool holds (the study's first trial)."""
    from autotune.pools import analytic_optimum, capacity_at, default_chunked_prefill_size
    from autotune.study.feasibility import HopelessConfiguration, check_serviceable, workload_shape
    from autotune.workloads import parse_workload_arg

    model = load_model(model_ref)
    if not model.hybrid_swa:
        console.print(_single_pool_note(model))
        raise typer.Exit(2)
    workloads = parse_workload_arg(workload)
    geometry = KVGeometry.of(model, tp=tp)
    profile = load_gpu(gpu)
    budget = resolve_budget(model, gpu, tp=tp, kv_budget_gb=kv_budget_gb, mem_fraction_static=mem_fraction_static)
    chunk = default_chunked_prefill_size(profile.memory_mib)
    release = sglang_version or _installed_sglang_release()
    if enable_unified_memory or max_running_requests is not None:
        if _show_other_mode(
            model, geometry, budget, gpu=gpu, ratio=DEFAULT_RATIO, page_size=page_size, release=release,
            enable_unified_memory=enable_unified_memory, max_running_requests=max_running_requests,
            disable_radix_cache=disable_radix_cache, chunked_prefill_size=chunked_prefill_size,
            disable_overlap_schedule=disable_overlap_schedule, max_total_tokens=None, as_json=as_json,
            extra={"tp": tp, "page_size": page_size, "workloads": [item.name for item in workloads],
                   "note": "The capacity model predicts the static split only; this mode has no ratio to plan."},
        ):
            return
    rows, refusals = [], []
    for item in workloads:
        shape = workload_shape(item)
        best = analytic_optimum(geometry, budget.bytes, shape, page_size=page_size, chunked_prefill_size=chunk,
                                sglang_version=release)
        default = capacity_at(geometry, budget.bytes, DEFAULT_RATIO, shape, page_size=page_size, chunked_prefill_size=chunk,
                              sglang_version=release)
        try:
            check_serviceable(model, profile, item, budget.bytes, tp=tp, page_size=page_size, chunked_prefill_size=chunk,
                              mem_fraction_static=mem_fraction_static, budget_pinned=kv_budget_gb is not None,
                              sglang_version=release)
            refusal = None
        except HopelessConfiguration as exc:
            refusal = str(exc)
            refusals.append(refusal)
        rows.append({
            "workload": item.name,
            "best_ratio": best.ratio,
            "layout": {"full": best.estimate.layout.full_tokens, "swa": best.estimate.layout.swa_tokens},
            "concurrent_requests": best.estimate.requests,
            "target_concurrency": shape.concurrency,
            "bound": best.estimate.bound,
            "at_default": {"requests": default.requests, "bound": default.bound},
            "plateau": list(best.plateau) if best.plateau else None,
            "serviceable": refusal is None,
            "refusal": refusal,
        })
    if not as_json:
        console.print(_describe_model(model))
        console.print(f"KV budget on {gpu}: {budget.gib:.3f} GiB ({budget.source})")
    show(
        rows, PLAN_COLUMNS, as_json=as_json, title="Capacity model (analytic, no trials run)",
        notes=[*(f"[red]{refusal}" for refusal in refusals),
               "These are the capacity model's predictions, not measurements: `autotune run` measures."],
        extra={"model": model.name, "gpu": gpu, "tp": tp, "kv_budget_bytes": budget.bytes, "kv_budget_source": budget.source,
               "sglang_version": release},
    )


def _show_other_mode(model: ModelSpec, geometry: KVGeometry, budget: KVBudget, *, gpu: str, ratio: float, page_size: int,
                     release: Optional[str], enable_unified_memory: bool, max_running_requests: Optional[int],
                     disable_radix_cache: bool, chunked_prefill_size: Optional[int], disable_overlap_schedule: bool,
                     max_total_tokens: Optional[int], as_json: bool, extra: dict) -> bool:
    """Show the memory mode the flags select when it is not the static split; False when it is."""
    from autotune.cli.modes_view import is_static, selected_mode, show_mode, size_mode
    from autotune.pools import default_chunked_prefill_size

    release = release or _installed_sglang_release()
    chunk = chunked_prefill_size if chunked_prefill_size is not None else default_chunked_prefill_size(load_gpu(gpu).memory_mib)
    mode = selected_mode(enable_unified_memory=enable_unified_memory, max_running_requests=max_running_requests,
                         disable_radix_cache=disable_radix_cache, chunked_prefill_size=chunk, release=release)
    if is_static(mode):
        return False
    from autotune.pools import NotEnoughMemory, SWAPoolRefused

    try:
        sizing, refusal = size_mode(mode, geometry, budget.bytes, ratio=ratio, page_size=page_size, release=release,
                                    max_running_requests=max_running_requests, chunked_prefill_size=chunk,
                                    disable_overlap_schedule=disable_overlap_schedule,
                                    max_total_tokens=max_total_tokens), None
    except (NotEnoughMemory, SWAPoolRefused) as exc:
        sizing, refusal = None, str(exc)
    header = [
        _describe_model(model),
        f"KV bytes/token per GPU: F = {geometry.full_bytes} (full layers), S = {geometry.swa_bytes} (SWA layers); page size {page_size}",
        f"KV budget on {gpu}: {budget.bytes / 1e9:.4f} GB = {budget.gib:.3f} GiB ({budget.source}); SGLang {release} rules",
    ]
    show_mode(mode, sizing, as_json=as_json, header=header, refusal=refusal,
              extra={"model": model.name, "gpu": gpu, "sglang_version": release, "chunked_prefill_size": chunk,
                     "kv_bytes_per_token": {"full": geometry.full_bytes, "swa": geometry.swa_bytes},
                     "kv_budget_bytes": budget.bytes, "kv_budget_source": budget.source, **extra})
    return True


def _installed_sglang_release() -> str:
    """The installed SGLang's release, else the simulator's (the footprint rules the plan assumes)."""
    import importlib.util

    from autotune.study.backend import server_version, sglang_release

    return sglang_release(server_version("sglang")) if importlib.util.find_spec("sglang") else sglang_release("sim")


def _single_pool_note(model: ModelSpec) -> str:
    return (
        f"[bold]{model.name}[/] ({model.architecture}): {model.hybrid_reason}. "
        "There is nothing to tune; every layer's KV lives in one pool."
    )


from autotune.cli.run import run_command  # noqa: E402  (registered below; keeps this module small)

from autotune.cli.dashboard import dashboard_command, report_command  # noqa: E402
from autotune.cli.serving import export_command, launch_command, rules_command  # noqa: E402
from autotune.cli.workload import workload_app  # noqa: E402

PASSTHROUGH = {"allow_extra_args": True, "ignore_unknown_options": True}  # `-- <sglang args>`
app.command("run", context_settings=PASSTHROUGH)(user_errors(run_command))
app.command("rules")(user_errors(rules_command))
app.command("export")(user_errors(export_command))
app.command("launch", context_settings=PASSTHROUGH)(user_errors(launch_command))
app.command("dashboard")(user_errors(dashboard_command))
app.command("report")(user_errors(report_command))
app.add_typer(workload_app, name="workload")


def main() -> None:
    app()


if __name__ == "__main__":
    main()

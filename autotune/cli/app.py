"""The `autotune` command. Thin: parse, call the modules, render with rich."""

from __future__ import annotations

from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from autotune.cli.errors import fail, user_errors
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
console = Console(highlight=False)

MODEL_HELP = "Catalog name or alias (26B-A4B, 31B, E4B, gpt-oss-20b ...), hub id, or a directory / config.json."
GPU_HELP = "GPU profile: H100-80GB, H200-141GB, B200-180GB (or an alias such as H100), or a profile YAML file."


def _gb(value: float) -> str:
    return f"{value / 1e9:.1f} GB"


@app.command("models")
@user_errors
def models_command() -> None:
    """List the model catalog: hybrid pool or not, S/F, window, MoE, weights."""
    table = Table(title="Model catalog (configs shipped as data; nothing is downloaded)")
    for column in ("model", "aliases", "architecture", "hybrid SWA", "layers S+F", "window", "S/F", "MoE", "params", "weights"):
        table.add_column(column, justify="right" if column in ("window", "S/F", "params", "weights") else "left")
    from autotune.models import catalog_entries

    aliases = {entry.name: ", ".join(entry.aliases[:3]) for entry in catalog_entries()}
    for model in catalog_specs():
        moe = f"{model.moe.num_experts} x top-{model.moe.top_k}" if model.moe else "dense"
        table.add_row(
            model.name,
            aliases.get(model.name, ""),
            model.architecture,
            "yes" if model.hybrid_swa else "no",
            f"{len(model.swa_layer_ids)}+{len(model.full_layer_ids)}",
            str(model.window),
            f"{model.s_over_f:.2f}",
            moe,
            f"{model.params_total / 1e9:.1f}B" + (f" ({model.params_active / 1e9:.1f}B act.)" if model.moe else ""),
            _gb(model.weight_bytes),
        )
    console.print(table)
    console.print(
        "S/F: KV bytes per token of all sliding layers over all full layers (bf16, TP 1). "
        "window: as SGLang runs it. Parameter counts and weights: published figures."
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


@app.command("pools")
@user_errors
def pools_command(
    model_ref: str = typer.Option(..., "--model", "-m", help=MODEL_HELP),
    gpu: str = typer.Option("H100-80GB", "--gpu", "-g", help=GPU_HELP),
    ratio: list[float] = typer.Option([0.8], "--ratio", "-r", help="--swa-full-tokens-ratio to size; repeat for several."),
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
) -> None:
    """Print the full and SWA pool sizes SGLang would log, and the feasible ratio range."""
    for r in ratio:
        validate_ratio(r)
    model = load_model(model_ref)
    if not model.hybrid_swa:
        console.print(_single_pool_note(model))
        return
    geometry = KVGeometry.of(model, tp=tp, kv_dtype=kv_dtype)
    budget = resolve_budget(model, gpu, tp=tp, kv_budget_gb=kv_budget_gb, mem_fraction_static=mem_fraction_static)
    console.print(_describe_model(model))
    console.print(
        f"KV bytes/token per GPU: F = {geometry.full_bytes} (full layers), S = {geometry.swa_bytes} (SWA layers); "
        f"tp={tp}, kv dtype {kv_dtype}, page size {page_size}"
    )
    console.print(f"KV budget: {budget.bytes / 1e9:.4f} GB = {budget.gib:.3f} GiB ({budget.source})")
    low = min_feasible_ratio(geometry, budget.bytes, page_size, max_total_tokens=max_total_tokens)
    if low is None:
        fail("no ratio in (0, 1] boots: even at 1.0 the SWA pool cannot hold one window plus a page. "
             "Raise the KV budget (--mem-fraction-static, --tp, a larger GPU).")
    table = Table()
    for column in ("ratio", "full tokens", "SWA tokens", "windows in SWA", "decoding reqs (SWA)", "KV bytes used"):
        table.add_column(column, justify="right")
    layouts = [size_pools(geometry, budget.bytes, r, page_size, max_total_tokens=max_total_tokens) for r in ratio]
    for layout in layouts:
        table.add_row(
            f"{layout.ratio:g}",
            f"{layout.full_tokens:,}",
            f"{layout.swa_tokens:,}",
            f"{layout.windows_held:.1f}",
            f"{layout.decoding_requests_held():,}",
            _gb(geometry.pool_bytes(layout.full_tokens, layout.swa_tokens)),
        )
    console.print(table)
    for layout in layouts:
        console.print(f"SGLang logs: {layout.log_line()}", style="dim")
    console.print(
        f"Feasible ratios: [{low:.3f}, 1.0] (below {low:.3f} SGLang refuses to start: the SWA pool "
        f"cannot hold window {geometry.window} + page {page_size})."
    )


DEFAULT_SIM_GPU = "H100-80GB"


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
) -> None:
    """The capacity model's view, before any trial: the analytic optimum per workload, the layout
    it gives, and how many concurrent requests each pool holds (the study's first trial)."""
    from autotune.pools import WorkloadShape, analytic_optimum, capacity_at, default_chunked_prefill_size
    from autotune.workloads import parse_workload_arg

    model = load_model(model_ref)
    if not model.hybrid_swa:
        console.print(_single_pool_note(model))
        raise typer.Exit(2)
    workloads = parse_workload_arg(workload)
    geometry = KVGeometry.of(model, tp=tp)
    budget = resolve_budget(model, gpu, tp=tp, kv_budget_gb=kv_budget_gb, mem_fraction_static=mem_fraction_static)
    chunk = default_chunked_prefill_size(load_gpu(gpu).memory_mib)
    console.print(_describe_model(model))
    console.print(f"KV budget on {gpu}: {budget.gib:.3f} GiB ({budget.source})")
    table = Table(title="Capacity model (analytic, no trials run)")
    for column in ("workload", "best ratio", "full / SWA tokens", "concurrent reqs", "bound", "at 0.8", "ratios holding target"):
        table.add_column(column, justify="left" if column == "workload" else "right")
    for item in workloads:
        concurrency = getattr(item.arrival, "limit", None) or getattr(item.arrival, "max_concurrency", None)
        shape = WorkloadShape(
            prompt_len=item.total_prompt_tokens / len(item.requests),
            output_len=item.total_output_tokens / len(item.requests),
            concurrency=concurrency,
        )
        best = analytic_optimum(geometry, budget.bytes, shape, page_size=page_size, chunked_prefill_size=chunk)
        default = capacity_at(geometry, budget.bytes, DEFAULT_RATIO, shape, page_size=page_size, chunked_prefill_size=chunk)
        plateau = f"{best.plateau[0]:.3f}-{best.plateau[1]:.3f}" if best.plateau else "none"
        table.add_row(
            item.name,
            f"{best.ratio:.3f}",
            f"{best.estimate.layout.full_tokens:,} / {best.estimate.layout.swa_tokens:,}",
            f"{best.estimate.requests:.0f}",
            best.estimate.bound,
            f"{default.requests:.0f} reqs ({default.bound}-bound)",
            plateau,
        )
    console.print(table)
    console.print(
        "These are the capacity model's predictions, not measurements: `autotune run` measures."
    )


def _single_pool_note(model: ModelSpec) -> str:
    return (
        f"[bold]{model.name}[/] ({model.architecture}): {model.hybrid_reason}. "
        "There is nothing to tune; every layer's KV lives in one pool."
    )


from autotune.cli.run import run_command  # noqa: E402  (registered below; keeps this module small)

from autotune.cli.dashboard import dashboard_command, report_command  # noqa: E402
from autotune.cli.serving import export_command, launch_command, rules_command  # noqa: E402

PASSTHROUGH = {"allow_extra_args": True, "ignore_unknown_options": True}  # `-- <sglang args>`
app.command("run", context_settings=PASSTHROUGH)(user_errors(run_command))
app.command("rules")(user_errors(rules_command))
app.command("export")(user_errors(export_command))
app.command("launch", context_settings=PASSTHROUGH)(user_errors(launch_command))
app.command("dashboard")(user_errors(dashboard_command))
app.command("report")(user_errors(report_command))


def main() -> None:
    app()


if __name__ == "__main__":
    main()

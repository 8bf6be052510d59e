"""`autotune rules`, `autotune export`, `autotune launch`: from optima to what serving reads."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Optional

import typer
from autotune.cli.console import console
from autotune.cli.errors import fail
from autotune.cli.listing import Column, json_option, show
from autotune.cli.run import DEFAULT_STORAGE
from autotune.export import SimulatedExportRefused, export_optima
from autotune.hardware import load_gpu
from autotune.launch import exec_sglang, plan_launch
from autotune.models import load_model
from autotune.rules import refresh_rules, resolve
from autotune.store import Store, StoreError, WorkloadRecord
from autotune.study.plan import DEFAULT_SIM_GPU
from autotune.workloads import WorkloadError, get_preset, parse_workload_arg



def _store(url: str) -> Store:
    store = Store(url)
    try:
        store.migrate()
    except StoreError as exc:
        fail(str(exc))
    return store


def _workload_record(store: Store, name: str) -> WorkloadRecord:
    """The stored workload called `name`, else a preset, else the one workload a file defines (a mix, a trace)."""
    if Path(name).is_file():
        workloads = parse_workload_arg(name)
        if len(workloads) != 1:
            raise WorkloadError(f"{name} defines {len(workloads)} workloads; pass one by name: "
                                f"{', '.join(w.name for w in workloads)}")
        name = workloads[0].name
        fallback = workloads[0]
    else:
        fallback = None
    for record in store.workloads():
        if record.name == name:
            return record
    return WorkloadRecord.from_workload(fallback or get_preset(name))


RULE_COLUMNS = (
    Column("rule", "rule"),
    Column("ratio", "ratio", lambda v: f"{v:.3f}", right=True),
    Column("spread", "spread", lambda v: f"{v:.3f}", right=True),
    Column("mean_gain", "mean gain", lambda v: f"{v:+.1%}", right=True),
    Column("evidence", "optima (evidence)", lambda v: "; ".join(f"{e['model']}/{e['workload']}@{e['gpu']}: {e['ratio']:.3f}" for e in v)),
    Column("simulated", "simulated", lambda v: "yes" if v else "no"),
)


def rules_command(
    storage: str = typer.Option(DEFAULT_STORAGE, "--storage", help="Database URL (the one `autotune run` used)."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Also show how this model resolves (tuned or inferred)."),
    gpu: str = typer.Option(DEFAULT_SIM_GPU, "--gpu", "-g", help="GPU for --model's resolution."),
    workload: str = typer.Option("chat", "--workload", "-w", help="Workload for --model's resolution."),
    as_json: bool = json_option(),
) -> None:
    """Derive rules (MoE/dense x workload class x GPU memory class) from every optimum, store and show them."""
    store = _store(storage)
    rules = refresh_rules(store)
    if not rules:
        fail(f"no optima in {store.display_url} yet: run `autotune run --model ...` first", code=1)
    rows = [
        {"rule": rule.key, "ratio": rule.ratio, "spread": rule.spread, "mean_gain": rule.gain,
         "evidence": list(rule.evidence), "simulated": rule.simulated}
        for rule in rules
    ]
    extra: dict = {}
    notes: list[str] = []
    if model:
        resolution = resolve(store, load_model(model), load_gpu(gpu), _workload_record(store, workload))
        extra["resolution"] = {"model": model, "gpu": gpu, "workload": workload, "ratio": resolution.ratio,
                               "source": resolution.source, "detail": resolution.detail, "simulated": resolution.simulated}
        notes.append(f"{model} on {gpu}, {workload}: ratio {resolution.ratio:.3f} from the {resolution.source}: {resolution.detail}")
    show(rows, RULE_COLUMNS, as_json=as_json, title="Rules learned from the optima", notes=notes, extra=extra or None)


def export_command(
    storage: str = typer.Option(DEFAULT_STORAGE, "--storage", help="Database URL."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Only this model (catalog name as stored)."),
    out: Path = typer.Option(Path("autotune-export"), "--out", "-o", help="Directory for the config files and index.yaml."),
    allow_simulated: bool = typer.Option(False, "--allow-simulated", help="Export simulated optima too (marked SIMULATED)."),
) -> None:
    """Write SGLang --config YAML per (model, workload) and an index with provenance."""
    store = _store(storage)
    name = load_model(model).name if model else None
    try:
        exported = export_optima(store, out, model=name, allow_simulated=allow_simulated)
    except SimulatedExportRefused as exc:
        fail(str(exc))
    for item in exported:
        label = " [SIMULATED]" if item.simulated else ""
        setting = ("--enable-unified-memory (beat the tuned ratio "
                   f"{item.ratio:.3f})" if item.memory_mode == "unified" else f"--swa-full-tokens-ratio {item.ratio:.3f}")
        console.print(f"{item.model} / {item.workload}: {setting} -> {item.path}{label}")
    console.print(f"index: {out / 'index.yaml'}")


def launch_command(
    ctx: typer.Context,
    model: str = typer.Option(..., "--model", "-m", help="Model: catalog name, hub id or directory (also SGLang's --model-path unless you pass one)."),
    workload: str = typer.Option("chat", "--workload", "-w", help="Which workload's setting to serve with: its name or its file."),
    gpu: str = typer.Option(DEFAULT_SIM_GPU, "--gpu", "-g", help="GPU the server runs on (picks the optimum or rule)."),
    storage: str = typer.Option(DEFAULT_STORAGE, "--storage", help="Database URL."),
    config_dir: Path = typer.Option(Path("autotune-export"), "--config-dir", help="Where the --config file is written."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the command instead of running it."),
) -> None:
    """Start SGLang with the tuned ratio: `autotune launch --model M -- <sglang args>`.

    The setting comes from the exact optimum, else a rule for the model's features (inferred), else
    SGLang's default, and the command says which. A --swa-full-tokens-ratio among the SGLang args wins.
    """
    store = _store(storage)
    spec = load_model(model)
    record = _workload_record(store, workload)  # --workload may be the workload's file (a mix, a trace)
    resolution = resolve(store, spec, load_gpu(gpu), record)
    plan = plan_launch(resolution, model, record.name, list(ctx.args), config_dir, spec.name)
    marker = " [SIMULATED]" if resolution.simulated else ""
    console.print(f"ratio {resolution.ratio:.3f} from the {resolution.source}{marker}: {resolution.detail}")
    if "--swa-full-tokens-ratio" in ctx.args:
        console.print("note: your --swa-full-tokens-ratio overrides it (command line beats --config).")
    command = shlex.join(plan.argv)
    if dry_run:
        console.print(command, soft_wrap=True)
        return
    console.print(f"$ {command}", soft_wrap=True)
    exec_sglang(plan)

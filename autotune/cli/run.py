"""`autotune run`: tune the ratio for a model, one persisted study per workload."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import warnings

import optuna
import sqlalchemy
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from autotune import discovery
from autotune.cli.errors import fail
from autotune.tuner_metrics import MetricsPortInUse, TunerMetrics, study_event_hook
from autotune.models import load_model
from autotune.models.dummy import CANNOT_TELL, dummy_spec, write_dummy_model
from autotune.rules import record_outcome
from autotune.sglang_facts import LOAD_FORMAT, RATIO
from autotune.store import Store, StoreError
from autotune.store.errors import explain
from autotune.study.backend import choose_backend
from autotune.study.controller import run_study, storage_for, with_slo
from autotune.study.plan import (
    DEFAULT_GRACE_S,
    DEFAULT_HEARTBEAT_S,
    DEFAULT_SIM_GPU,
    DEFAULT_TIME_SCALE,
    Outcome,
    StudyPlan,
    build_plan,
    resolve_gpu,
)
from autotune.workloads import parse_workload_arg
from workers.runners import choose_runner, open_runner

console = Console(highlight=False)
DEFAULT_STORAGE = "sqlite:///autotune.db"


def _ratios(text: str | None) -> tuple[float, ...]:
    if not text:
        return ()
    try:
        return tuple(float(item) for item in text.split(",") if item.strip())
    except ValueError:
        raise ValueError(f"--try {text!r}: give ratios separated by commas, e.g. --try 0.15,0.5") from None


def _describe(result: dict[str, Any] | None) -> str:
    summary = (result or {}).get("summary") or {}
    if not summary:
        return ""
    ttft, tpot = summary.get("ttft") or {}, summary.get("tpot") or {}
    return f"TTFT p50 {ttft.get('median', float('nan')):.0f} ms, TPOT p50 {tpot.get('median', float('nan')):.1f} ms"


def _report(plans: list[StudyPlan], outcomes: list[Outcome]) -> None:
    simulated = any(plan.simulated for plan in plans)
    table = Table(title="Tuned --swa-full-tokens-ratio" + (" [SIMULATED]" if simulated else ""))
    for column in ("workload", "trials", "best ratio", plans[0].objective.labels[0], "at 0.8 (default)", "gain", "latency at best"):
        table.add_column(column, justify="left" if column == "workload" else "right")
    for plan, outcome in zip(plans, outcomes):
        if outcome.best_params is None:
            table.add_row(plan.workload.name, str(outcome.trials_finished), "-", "no feasible trial", "", "", "")
            continue
        gain = outcome.gain
        table.add_row(
            plan.workload.name,
            f"{outcome.trials_finished}" + (f" ({outcome.trials_failed} failed)" if outcome.trials_failed else ""),
            f"{outcome.best_params[RATIO]:.3f}",
            f"{outcome.best_values[0]:,.0f}",
            f"{outcome.default_values[0]:,.0f}" if outcome.default_values else "-",
            f"{gain:+.1%}" if gain is not None else "-",
            _describe(outcome.best_result),
        )
    console.print(table)
    if simulated:
        console.print("Simulated results: from autotune's simulated SGLang, not a GPU. Rank ratios with them; "
                      "confirm on real SGLang (--backend sglang) before serving.")
    if any(plan.server_flags.get(LOAD_FORMAT) == "dummy" for plan in plans):
        console.print("Dummy weights: pool layouts and memory-bound behaviour are exact; not measured: "
                      + "; ".join(CANNOT_TELL) + ". Re-run the best ratios with the checkpoint before serving.")


def run_command(
    ctx: typer.Context,
    model_ref: str = typer.Option(..., "--model", "-m", help="Catalog name or alias (26B-A4B, 31B, ...), hub id, or a directory with config.json."),
    gpu: Optional[str] = typer.Option(None, "--gpu", "-g", help=f"GPU profile. Detected for --backend sglang; {DEFAULT_SIM_GPU} for the simulator."),
    workload: str = typer.Option("chat,summarization", "--workload", "-w", help="Presets (chat, summarization, long-context, short-chat), a .jsonl dataset or a .yaml file."),
    trials: int = typer.Option(8, "--trials", "-n", min=1, help="Finished trials per workload (a resumed study counts those it already has)."),
    parallel: int = typer.Option(1, "--parallel", "-p", min=1, help="Trials at once (Ray workers; each holds --tp GPUs)."),
    storage: str = typer.Option(DEFAULT_STORAGE, "--storage", help="Database URL for studies, optima and rules (SQLite or PostgreSQL)."),
    backend: str = typer.Option("auto", "--backend", "-b", help="auto | sglang (real server) | sim (simulated server, same workers) | sim-fast (in-process, virtual time)."),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="Join this Ray cluster (default: start a local one)."),
    runner: str = typer.Option("auto", "--runner", help="auto | ray (Ray workers, local or --ray-address cluster) | local (this node, no Ray: one trial per GPU). auto: Ray when installed."),
    try_ratios: Optional[str] = typer.Option(None, "--try", help="Ratios to measure first, e.g. 0.15,0.5 (a hand rule to check); they count towards --trials."),
    early_stop: bool = typer.Option(True, "--early-stop/--no-early-stop", help="Stop trials that are clearly lost (SWA-bound with a queue that does not drain). SGLang's default 0.8 always runs in full."),
    dummy_weights: bool = typer.Option(False, "--dummy-weights", help="Tune without a checkpoint: boot a config-only model dir with --load-format dummy --skip-tokenizer-init (pools are exact; throughput is a guide)."),
    objective: str = typer.Option("throughput", "--objective", help="throughput (with SLO constraints) | goodput | pareto (throughput vs TTFT)."),
    slo: Optional[str] = typer.Option(None, "--slo", help="e.g. ttft_p99=2000,tpot_p99=50 (limits, ms) or ttft=..,tpot=.. for goodput."),
    page_size: Optional[int] = typer.Option(None, "--page-size", min=1, help="SGLang --page-size for every trial."),
    tp: int = typer.Option(1, "--tp", min=1, help="Tensor-parallel size (GPUs per trial)."),
    mem_fraction_static: Optional[float] = typer.Option(None, "--mem-fraction-static", help="SGLang --mem-fraction-static for every trial."),
    kv_budget_gb: Optional[float] = typer.Option(None, "--kv-budget-gb", help="Simulator only: pin the KV budget (decimal GB)."),
    time_scale: float = typer.Option(DEFAULT_TIME_SCALE, "--time-scale", help="Simulator only: run the simulated clock this many times faster than real time."),
    log_dir: Path = typer.Option(Path("autotune-logs"), "--log-dir", help="Where every trial's server log goes."),
    metrics_port: Optional[int] = typer.Option(None, "--metrics-port", help="Serve the tuner's own Prometheus metrics (and /sd, the trial servers for Prometheus) on PORT."),
    metrics_host: str = typer.Option("127.0.0.1", "--metrics-host", help="Address for --metrics-port (0.0.0.0 inside a cluster, so Prometheus can reach it)."),
    heartbeat_s: int = typer.Option(DEFAULT_HEARTBEAT_S, "--heartbeat-s", min=1, hidden=True, help="Optuna heartbeat interval of running trials (s)."),
    grace_s: int = typer.Option(DEFAULT_GRACE_S, "--grace-s", min=1, hidden=True, help="A trial whose heartbeat is older than this (s) was left by a tuner that died."),
) -> None:
    """Tune --swa-full-tokens-ratio for a model: one Optuna study per workload, persisted in --storage.

    Runs trials (boot the server at a candidate ratio, replay the workload, scrape /metrics), keeps
    every trial, and reports the best ratio against SGLang's default 0.8. Running the same command
    again resumes the studies. Extra SGLang flags go after `--` and are passed to every server.
    """
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # our progress lines say what matters
    # Ask-and-tell with heartbeats is what Optuna's experimental/heartbeat warnings are about; we
    # record heartbeats ourselves (controller._Heartbeat), so they only add noise to the terminal.
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
    model = load_model(model_ref)
    if not model.hybrid_swa:
        fail(f"{model.name}: {model.hybrid_reason}. There is nothing to tune.")
    workloads = parse_workload_arg(workload)
    choice = choose_backend(backend)
    console.print(choice.reason)
    runner_choice = choose_runner(runner, choice.backend, ray_address)
    profile = resolve_gpu(choice.backend, gpu)
    if dummy_weights:
        dummy = write_dummy_model(model, log_dir / "models")
        model, model_ref = dummy_spec(model, dummy), str(dummy.path)
        console.print(f"dummy weights: booting {dummy.architecture} from {dummy.path} (config only). "
                      f"Not measured with dummy weights: {'; '.join(CANNOT_TELL)}.")
        for note in dummy.notes:
            console.print(f"[yellow]{note}")
    extra = tuple(ctx.args)
    study_objective = with_slo(objective, slo)
    plans = [
        build_plan(
            model=model, model_ref=model_ref, gpu=profile, workload=w, backend=choice.backend, objective=study_objective,
            n_trials=trials, page_size=page_size, tp=tp, mem_fraction_static=mem_fraction_static,
            kv_budget_gb=kv_budget_gb, time_scale=time_scale, extra_args=extra, log_dir=str(log_dir),
            dummy_weights=dummy_weights, try_ratios=_ratios(try_ratios), early_stop=early_stop,
            heartbeat_s=heartbeat_s, grace_s=grace_s,
        )
        for w in workloads
    ]
    store = Store(storage)
    try:
        store.migrate()
        optuna_storage = storage_for(storage, heartbeat_s=heartbeat_s, grace_s=grace_s)
    except StoreError as exc:
        fail(str(exc))
    except (optuna.exceptions.StorageInternalError, sqlalchemy.exc.SQLAlchemyError) as exc:
        fail(str(explain(exc.__cause__ or exc, store.url)))
    metrics = TunerMetrics() if metrics_port is not None else None
    if metrics is not None:
        if metrics_host not in ("127.0.0.1", "localhost", "::1"):
            console.print(f"[yellow]warning: the tuner's metrics are served on {metrics_host}:{metrics_port} without authentication")
        try:
            metrics.serve(metrics_port, metrics_host)
        except MetricsPortInUse as exc:
            fail(str(exc))
    console.print(runner_choice.reason)
    trial_runner = open_runner(runner_choice, choice.backend, parallel, tp, ray_address)
    outcomes: list[Outcome] = []
    try:
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=console, transient=False) as progress:
            for plan in plans:
                task = progress.add_task(f"{plan.workload.name}: starting", total=plan.n_trials)

                def on_event(kind: str, data: dict[str, Any], task=task, plan=plan) -> None:
                    if kind == "note":
                        progress.console.print(f"[yellow]{data['message']}")
                    elif kind == "progress":
                        best = data["outcome"]
                        text = f"best {best.best_values[0]:,.0f} @ {best.best_params[RATIO]:.3f}" if best.best_values else "no result yet"
                        progress.update(task, completed=data["finished"], description=f"{plan.workload.name}: {text}")
                    elif kind == "finished":
                        ratio = data["params"].get(RATIO)
                        progress.console.print(f"  {plan.workload.name} trial {data['trial']}: ratio {ratio:.3f} -> {data['what']}", style="dim")

                hooks = [study_event_hook(metrics, plan, capacity=trial_runner.capacity),
                         discovery.discovery_event_hook(discovery.REGISTRY, plan)] if metrics else []

                def events(kind: str, data: dict[str, Any], on_event=on_event, hooks=hooks) -> None:
                    for hook in hooks:
                        hook(kind, data)
                    on_event(kind, data)

                outcome = run_study(plan, optuna_storage, trial_runner, on_event=events)
                progress.update(task, completed=outcome.trials_finished)
                record_outcome(store, plan, outcome)
                outcomes.append(outcome)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted: finished trials are saved; run the same command again to resume.")
        raise typer.Exit(130)
    except (StoreError, optuna.exceptions.StorageInternalError, sqlalchemy.exc.SQLAlchemyError) as exc:
        # The database went away or turned read-only mid-study: what was told is saved.
        fail(str(explain(exc.__cause__ or exc, store.url)))
    finally:
        trial_runner.close()
        if metrics is not None:
            metrics.close()
    _report(plans, outcomes)
    console.print(f"Saved in {store.display_url}: studies (optuna-dashboard), optima (autotune rules / export).")

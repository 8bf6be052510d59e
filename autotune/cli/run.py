"""`autotune run`: tune the ratio for a model, one persisted study per workload."""

from __future__ import annotations

import math
import os
import signal
import threading
import warnings
from pathlib import Path
from typing import Any, Optional

import optuna
import sqlalchemy
import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from autotune import discovery
from autotune.cli.capacity import capacity_table
from autotune.cli.chart import amount, ratio_chart
from autotune.cli.console import console, err_console, print_json
from autotune.cli.errors import fail
from autotune.cli.listing import Column, json_option, table_of
from autotune.tuner_metrics import MetricsPortInUse, TunerMetrics, study_event_hook
from autotune.models import load_model
from autotune.models.dummy import CANNOT_TELL, dummy_spec, write_dummy_model
from autotune.rules import record_outcome
from autotune.sglang_facts import DEFAULT_RATIO, LOAD_FORMAT, RATIO
from autotune.store import Store, StoreError
from autotune.store.errors import explain
from autotune.pools.modes import require_ratio_to_matter
from autotune.cli.modes_view import add_mode_rows, mode_progress, modes_table
from autotune.pools.modes import UNIFIED
from autotune.study.backend import choose_backend
from autotune.study.modes import parse_modes, run_mode_trials
from autotune.study.server_budget import remember_server_memory, with_measured_budget
from autotune.study.controller import run_study, with_slo
from autotune.study.storage import storage_for
from autotune.study.plan import (
    DEFAULT_GRACE_S,
    DEFAULT_HEARTBEAT_S,
    DEFAULT_NOISE_FLOOR,
    DEFAULT_SIM_GPU,
    DEFAULT_TIME_SCALE,
    Outcome,
    StudyPlan,
    build_plan,
    resolve_gpu,
)
from autotune.workloads import parse_workload_arg
from workers.handover import LEAD_SHARE
from workers.runners import choose_runner, open_runner

DEFAULT_STORAGE = "sqlite:///autotune.db"


def _ratios(text: str | None) -> tuple[float, ...]:
    if not text:
        return ()
    try:
        return tuple(float(item) for item in text.split(",") if item.strip())
    except ValueError:
        raise ValueError(f"--try {text!r}: give ratios separated by commas, e.g. --try 0.15,0.5") from None


def _graph_bs(text: str) -> int | str:
    """--cuda-graph-max-bs: auto, sglang, or a batch size."""
    if text in ("auto", "sglang"):
        return text
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"--cuda-graph-max-bs {text!r}: give auto, sglang or a batch size, e.g. 64") from None


def _describe(result: dict[str, Any] | None) -> str:
    summary = (result or {}).get("summary") or {}
    if not summary:
        return ""
    ttft, tpot = summary.get("ttft") or {}, summary.get("tpot") or {}

    def ms(value: float | None, digits: int) -> str:  # None: no request got that far (a hung trial)
        return "-" if value is None else f"{value:.{digits}f}"

    return f"TTFT p50 {ms(ttft.get('median'), 0)} ms, TPOT p50 {ms(tpot.get('median'), 1)} ms"


class Terminated(KeyboardInterrupt):
    """SIGTERM (what `timeout`, systemd and Kubernetes send), handled exactly like Ctrl-C."""


_sigterm_received = threading.Event()  # libraries on the way (Ray) may re-raise a plain KeyboardInterrupt


def _raise_terminated(signum: int, frame: object) -> None:
    _sigterm_received.set()
    raise Terminated()


def default_parallel(backend: str) -> int:
    """Trials at once when --parallel is not given: one per GPU trial is the user's call (GPUs are
    shared and booked); simulated trials are mostly waiting on their simulated clock, so two share
    a small machine well (the default run on 2 cores: 3.5 min one at a time, under 2 min two at once)."""
    return 1 if backend == "sglang" else min(2, os.cpu_count() or 1)


def _plan_rows(plans: list[StudyPlan]) -> list[dict[str, Any]]:
    rows = []
    for plan in plans:
        rows.append({
            "workload": plan.workload.name,
            "describe": plan.workload.describe(),
            "trials": plan.n_trials,
            "first_ratios": [ratio for ratio, _ in plan.candidates()],
            "feasible_ratios": [plan.feasible_low(), 1.0],
            "trial_time_budget_s": plan.trial_wall_budget_s,
            "study": plan.name,
        })
    return rows


PLAN_COLUMNS = (
    Column("workload", "workload"),
    Column("describe", "requests"),
    Column("trials", "trials", right=True),
    Column("first_ratios", "measured first", lambda v: ", ".join(f"{r:.3f}" for r in v)),
    Column("feasible_ratios", "feasible ratios", lambda v: f"{v[0]:.3f}-{v[1]:.1f}", right=True),
    Column("trial_time_budget_s", "time budget / trial", lambda v: f"{v:.0f} s", right=True),
)

RESULT_COLUMNS = (
    Column("workload", "workload"),
    Column("trials", "trials", lambda v: f"{v['finished']}" + (f" ({v['failed']} failed)" if v["failed"] else ""), right=True),
    Column("best_ratio", "best ratio", lambda v: f"{v:.3f}", right=True),
    Column("best_value", "best", amount, right=True, missing="no feasible trial"),
    Column("default_value", f"at {DEFAULT_RATIO:g} (default)", amount, right=True),
    Column("gain", "gain", lambda v: f"{v:+.1%}", right=True),
    Column("latency_at_best", "latency at best"),
)


def _result_rows(plans: list[StudyPlan], outcomes: list[Outcome]) -> list[dict[str, Any]]:
    rows = []
    for plan, outcome in zip(plans, outcomes):
        rows.append({
            "workload": plan.workload.name,
            "study": plan.name,
            "simulated": plan.simulated,
            "objective": plan.objective.labels[0],
            "trials": {"finished": outcome.trials_finished, "failed": outcome.trials_failed},
            "best_ratio": outcome.best_params[RATIO] if outcome.best_params else None,
            "best_value": outcome.best_values[0] if outcome.best_values else None,
            "default_value": outcome.default_values[0] if outcome.default_values else None,
            "gain": outcome.gain,
            "latency_at_best": _describe(outcome.best_result) or None,
            "stopped_because": outcome.stopped_because,
            "noise_band": outcome.noise_band,
            "points": [point.__dict__ for point in outcome.points],  # with their load levels under capacity
        })
        if plan.objective.name == "capacity" and plan.objective.slo is not None:
            rows[-1]["slo"] = {"ttft_p99_ms": plan.objective.slo.ttft_p99_ms, "tpot_p99_ms": plan.objective.slo.tpot_p99_ms}
    return rows


def _report(plans: list[StudyPlan], outcomes: list[Outcome], *, as_json: bool, modes: list | None = None) -> None:
    simulated = any(plan.simulated for plan in plans)
    rows = _result_rows(plans, outcomes)
    if modes:
        add_mode_rows(rows, modes)
    if as_json:
        print_json({"simulated": simulated, "rows": rows})
        return
    label = " [SIMULATED]" if simulated else ""
    console.print(table_of(rows, RESULT_COLUMNS, title=f"Tuned --swa-full-tokens-ratio ({plans[0].objective.labels[0]}){label}"))
    for plan, outcome in zip(plans, outcomes):
        if outcome.stopped_because:
            console.print(f"{plan.workload.name}: stopped after {outcome.trials_finished} trial(s): {outcome.stopped_because}")
        if outcome.noise_band:
            console.print(f"{plan.workload.name}: noise band {outcome.noise_band['describe']}: closer values are not told apart")
        if outcome.points:
            console.print(ratio_chart(
                f"{plan.workload.name}{' [SIMULATED]' if plan.simulated else ''}", outcome.points,
                unit=plan.objective.labels[0], default_ratio=DEFAULT_RATIO,
                best_ratio=outcome.best_params[RATIO] if outcome.best_params else None,
            ))
        if plan.objective.name == "capacity" and outcome.points:
            console.print(capacity_table(plan, outcome))
    if modes:
        console.print(modes_table(rows, plans[0].objective.labels[0]))
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
    trials: int = typer.Option(8, "--trials", "-n", min=1, help="At most this many finished trials per workload (a resumed study counts those it already has); fewer when the optimum is known first (--run-all-trials: always this many)."),
    parallel: Optional[int] = typer.Option(
        None, "--parallel", "-p", min=1,
        help="Trials at once (Ray workers; each holds --tp GPUs). Default: 1 on GPUs; 2 for the simulator, whose "
             "servers need no GPU and whose trial barely fills a core.",
    ),
    storage: str = typer.Option(DEFAULT_STORAGE, "--storage", help="Database URL for studies, optima and rules (SQLite or PostgreSQL)."),
    backend: str = typer.Option("auto", "--backend", "-b", help="auto | sglang (real server) | sim (simulated server, same workers) | sim-fast (in-process, virtual time)."),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="Join this Ray cluster (default: start a local one)."),
    runner: str = typer.Option("auto", "--runner", help="auto | ray (Ray workers, local or --ray-address cluster) | local (this node, no Ray: one trial per GPU). auto: Ray when installed."),
    boot_ahead: bool = typer.Option(
        False, "--boot-ahead/--no-boot-ahead",
        help="Boot the next queued trial's server (SGLang's default, --try ratios, repeats) while the last replay "
             "drains, on the same GPUs, timed so it probes GPU memory only after the last server stopped; an early "
             "boot that saw the last server anyway is booted again. Hides up to the part of a boot before SGLang's "
             "memory probe (~42 s of a ~47 s warm boot of 0.5.17) per queued trial. This node only (local runner).",
    ),
    boot_ahead_at_once: bool = typer.Option(
        False, "--boot-ahead-at-once", hidden=True,
        help="Experiment: with --boot-ahead, boot the next server as soon as the last one starts measuring, so its "
             "memory probe sees that server: what the overlap guard must catch (docs/real-gpu/boot-ahead.md).",
    ),
    try_ratios: Optional[str] = typer.Option(None, "--try", help="Ratios to measure first, e.g. 0.15,0.5 (a hand rule to check); --trials grows to hold them and SGLang's default."),
    warm_up: bool = typer.Option(
        True, "--warm-up/--no-warm-up",
        help="Before a real server measures: one prefill per kernel shape class (SGLang compiles fused-MoE kernels "
             "at their first use), then SGLang's /freeze_gc. Without them the first pass of a retraction storm "
             "took up to 30 % longer than the same schedule's second (docs/real-gpu/first-pass.md). The simulator "
             "needs neither.",
    ),
    early_stop: bool = typer.Option(True, "--early-stop/--no-early-stop", help="Stop trials that are clearly lost (SWA-bound with a queue that does not drain). SGLang's default 0.8 always runs in full."),
    stop_when_known: bool = typer.Option(
        True, "--stop-when-known/--run-all-trials",
        help="Stop a study before --trials once its best ratio is bracketed by worse ones (or the feasible bound), or "
             "every measured ratio is within the noise band (flat). --run-all-trials: always run --trials.",
    ),
    noise_floor: float = typer.Option(
        DEFAULT_NOISE_FLOOR, "--noise-floor",
        help="The smallest noise band, a share of the best value (0.01: a ratio must be more than 1 % worse to "
             "count as worse); repeated runs of SGLang's default and of the best widen it when they differ more.",
    ),
    cuda_graph_max_bs: str = typer.Option(
        "auto", "--cuda-graph-max-bs",
        help="Real SGLang only: capture decode CUDA graphs up to this batch (--cuda-graph-max-bs-decode). auto: the "
             "workload's concurrency, rounded up to a size SGLang captures (faster boots), unless CUDA graph flags "
             "follow `--`; sglang: SGLang's own default.",
    ),
    dummy_weights: bool = typer.Option(False, "--dummy-weights", help="Tune without a checkpoint: boot a config-only model dir with --load-format dummy --skip-tokenizer-init (pools are exact; throughput is a guide)."),
    objective: str = typer.Option(
        "throughput", "--objective",
        help="throughput (with SLO constraints) | goodput | pareto (throughput vs TTFT) | capacity (req/s per GPU at the "
             "largest load meeting --slo ttft_p99=..,tpot_p99=..; arrival-driven workloads: traces, request_rate).",
    ),
    load_levels: int = typer.Option(
        6, "--load-levels", min=1,
        help="--objective capacity: load levels each trial measures at most, on one boot (1x, doubled or halved "
             "until the SLO breaks or holds, then bisected).",
    ),
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
    modes: str = typer.Option(
        "static", "--modes",
        help="Memory modes to measure: static (the ratio's study) and unified (--enable-unified-memory, a trial of "
             "its own per workload, compared in the report and by export). E.g. --modes static,unified.",
    ),
    as_json: bool = json_option(),
) -> None:
    """Tune --swa-full-tokens-ratio for a model: one Optuna study per workload, persisted in --storage.

    Runs trials (boot the server at a candidate ratio, replay the workload, scrape /metrics), keeps
    every trial, and reports the best ratio against SGLang's default 0.8. Running the same command
    again resumes the studies. Extra SGLang flags go after `--` and are passed to every server.
    """
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # our progress lines say what matters
    # Ask-and-tell with heartbeats is what Optuna's experimental/heartbeat warnings are about; we
    # record heartbeats ourselves (storage.TrialHeartbeat), so they only add noise to the terminal.
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
    # With --json, stdout carries the JSON alone; what people read goes to stderr.
    out = err_console if as_json else console
    model = load_model(model_ref)
    if not model.hybrid_swa:
        fail(f"{model.name}: {model.hybrid_reason}. There is nothing to tune.")
    workloads = parse_workload_arg(workload)
    memory_modes = parse_modes(modes)
    require_ratio_to_matter({}, tuple(ctx.args))  # before the backend books GPUs (build_plan checks again)
    choice = choose_backend(backend)
    out.print(choice.reason)
    if boot_ahead_at_once and not boot_ahead:
        fail("--boot-ahead-at-once is an experiment on --boot-ahead: add --boot-ahead")
    runner_choice = choose_runner(runner, choice.backend, ray_address, boot_ahead=boot_ahead)
    profile = resolve_gpu(choice.backend, gpu)
    if dummy_weights:
        dummy = write_dummy_model(model, log_dir / "models")
        model, model_ref = dummy_spec(model, dummy), str(dummy.path)
        out.print(f"dummy weights: booting {dummy.architecture} from {dummy.path} (config only). "
                      f"Not measured with dummy weights: {'; '.join(CANNOT_TELL)}.")
        for note in dummy.notes:
            out.print(f"[yellow]{note}")
    extra = tuple(ctx.args)
    study_objective = with_slo(objective, slo)
    plans = [
        build_plan(
            model=model, model_ref=model_ref, gpu=profile, workload=w, backend=choice.backend, objective=study_objective,
            n_trials=trials, page_size=page_size, tp=tp, mem_fraction_static=mem_fraction_static,
            kv_budget_gb=kv_budget_gb, time_scale=time_scale, extra_args=extra, log_dir=str(log_dir),
            dummy_weights=dummy_weights, try_ratios=_ratios(try_ratios), early_stop=early_stop,
            heartbeat_s=heartbeat_s, grace_s=grace_s, stop_when_known=stop_when_known, noise_floor=noise_floor,
            cuda_graph_max_bs=_graph_bs(cuda_graph_max_bs), load_levels=load_levels, warm_up=warm_up,
        )
        for w in workloads
    ]
    store = Store(storage)
    try:
        store.migrate()
        optuna_storage = storage_for(storage, heartbeat_s=heartbeat_s, grace_s=grace_s)
        for index, plan in enumerate(plans):  # a real server's own budget for this configuration beats the estimate
            plans[index], budget_source = with_measured_budget(store, plan)
            if budget_source:
                out.print(budget_source)
    except StoreError as exc:
        fail(str(exc))
    except (optuna.exceptions.StorageInternalError, sqlalchemy.exc.SQLAlchemyError) as exc:
        fail(str(explain(exc.__cause__ or exc, store.url)))
    out.print(table_of(_plan_rows(plans), PLAN_COLUMNS, title=f"Plan: {model.name} on {profile.name}, {plans[0].server_version}"))
    metrics = TunerMetrics() if metrics_port is not None else None
    if metrics is not None:
        if metrics_host not in ("127.0.0.1", "localhost", "::1"):
            out.print(f"[yellow]warning: the tuner's metrics are served on {metrics_host}:{metrics_port} without authentication")
        try:
            metrics.serve(metrics_port, metrics_host)
        except MetricsPortInUse as exc:
            fail(str(exc))
    if parallel is None:
        parallel = default_parallel(choice.backend)
    out.print(runner_choice.reason + (f", {parallel} trials at once" if parallel > 1 else ""))
    trial_runner = open_runner(runner_choice, choice.backend, parallel, tp, ray_address, boot_ahead=boot_ahead,
                               lead_share=math.inf if boot_ahead_at_once else LEAD_SHARE)
    # Installed after the runner, so that it replaces any handler Ray's core worker put in place
    # (whose SIGTERM answer is a C++ stack dump): SIGTERM now stops the tuner the way Ctrl-C does.
    in_main_thread = threading.current_thread() is threading.main_thread()  # signal handlers live there only
    previous_sigterm = signal.signal(signal.SIGTERM, _raise_terminated) if in_main_thread else None
    outcomes: list[Outcome] = []
    mode_outcomes: list = []
    try:
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=out, transient=False) as progress:
            for plan in plans:
                task = progress.add_task(f"{plan.workload.name}: starting", total=plan.n_trials)

                def on_event(kind: str, data: dict[str, Any], task=task, plan=plan) -> None:
                    if kind == "note":
                        progress.console.print(f"[yellow]{data['message']}")
                    elif kind == "progress":
                        best = data["outcome"]
                        text = f"best {amount(best.best_values[0])} @ {best.best_params[RATIO]:.3f}" if best.best_values else "no result yet"
                        running = f", {data['running']} running" if data.get("running") else ""
                        progress.update(task, completed=data["finished"], total=data["total"],
                                        description=f"{plan.workload.name}: {text}{running}")
                    elif kind == "started":
                        ratio = data["params"].get(RATIO)
                        why = f" ({data['why']})" if data.get("why") else ""
                        ahead = ": its server boots while the running trial's replay drains" if data.get("ahead") else ""
                        progress.console.print(escape(f"  {plan.workload.name} trial {data['trial']}: ratio {ratio:.3f}{why} started{ahead}"), style="dim")
                    elif kind == "finished":
                        remember_server_memory(store, plan, data["trial"], data["result"])
                        ratio = data["params"].get(RATIO)
                        result = data["result"]
                        early = f" ({result.early_boot.describe(result.boot_s)})" if result.early_boot else ""
                        warm = f" (prefill warm-up {result.warmup_s:.1f} s)" if result.warmup_s is not None else ""
                        progress.console.print(escape(f"  {plan.workload.name} trial {data['trial']}: ratio {ratio:.3f} -> {data['what']}{early}{warm}"), style="dim")

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
                if UNIFIED in memory_modes:  # beside the ratio: a trial of unified memory (autotune/study/modes.py)
                    mode_outcomes.append(run_mode_trials(plan, optuna_storage, trial_runner,
                                                         on_event=mode_progress(progress.console, plan)))
    except KeyboardInterrupt as interrupt:
        terminated = isinstance(interrupt, Terminated) or _sigterm_received.is_set()
        err_console.print(f"[yellow]{'terminated (SIGTERM)' if terminated else 'interrupted'}: the running trials were "
                          "stopped and will run again; finished trials are saved. Run the same command again to resume.")
        raise typer.Exit(143 if terminated else 130)
    except (StoreError, optuna.exceptions.StorageInternalError, sqlalchemy.exc.SQLAlchemyError) as exc:
        # The database went away or turned read-only mid-study: what was told is saved.
        fail(str(explain(exc.__cause__ or exc, store.url)))
    finally:
        # A second SIGTERM while the servers stop would cut the stop short: hold it until they are down.
        if in_main_thread:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        trial_runner.close()
        if metrics is not None:
            metrics.close()
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous_sigterm)
    _report(plans, outcomes, as_json=as_json, modes=mode_outcomes)
    out.print(f"Saved in {store.display_url}: studies (optuna-dashboard), optima (autotune rules / export).")

"""Simulator fidelity against real SGLang trials on a GPU (docs/real-gpu/real-study.db).

For every workload study in the Optuna DB (real SGLang 0.5.17, H200, dummy weights, gemma-4-26B-A4B-it
text model, --mem-fraction-static 0.48) it replays the same workload through the simulator
(autotune/sim) at each trial's ratio, on the KV budget that the real layouts pin, and prints:

1. per trial: real vs simulated pool layout (must be equal to the token), kvcache GiB, boot time,
   total throughput (real, simulated, error), median TTFT and TPOT (real, simulated), and the real
   server's max queue and retractions from its own /metrics samples. PRUNED trials were stopped
   early: their real numbers cover only the requests finished by then (marked, no error computed).
2. the optimum each finds: the real best COMPLETE trial vs a simulated grid over the ratios
   (feasible low .. 1.0 in 0.05 steps plus every real trial's ratio), and how far apart they are.
3. a leave-one-out layout check: each real layout predicted from the others' (one shared budget).

Run:  python bench/real_gpu_fidelity.py [--db PATH] [--gpu H200] [--write docs/real-gpu/fidelity.md]
                                        [--profile-override decode_step_overhead_ms=3.0 ...]

The DB is never written: it is snapshotted (sqlite backup, read-only) to a temporary file first.
Exit status 1 when a simulated layout differs from the real one.

For calibration: `load_cases(db)` once, then `throughput_error(profile, cases=cases)` is the mean
absolute log error of throughput, median TTFT and median TPOT over COMPLETE trials (~0.2 s a trial).
"""

from __future__ import annotations

import argparse
import atexit
import dataclasses
import math
import re
import shutil
import sqlite3
import statistics
import sys
import tempfile
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO))

import optuna  # noqa: E402

from autotune.hardware import GPUProfile, load_gpu  # noqa: E402
from autotune.hardware.profile import GIB  # noqa: E402
from autotune.models import ModelSpec, load_model  # noqa: E402
from autotune.models.dummy import dummy_spec, write_dummy_model  # noqa: E402
from autotune.pools.budget import estimate_budget  # noqa: E402
from autotune.pools.check import LeaveOneOut, leave_one_out  # noqa: E402
from autotune.pools.inference import BudgetInterval, InconsistentLayout, infer_budget, infer_budget_from_layouts  # noqa: E402
from autotune.pools.sizing import KVGeometry, PoolLayout, SWAPoolRefused, min_feasible_ratio  # noqa: E402
from autotune.measure.server_metrics import MetricSample, summarize_series  # noqa: E402
from autotune.sglang_facts import DEFAULT_RATIO, RATIO  # noqa: E402
from autotune.sim.config import SimServerConfig, start_up  # noqa: E402
from autotune.study.trial_attrs import ATTR_POOL_CHECK, ATTR_RESULT  # noqa: E402
from autotune.sim.own_flags import EMULATED_SGLANG_VERSION  # noqa: E402
from autotune.sim.run import simulate  # noqa: E402
from autotune.workloads import Workload, parse_workload_arg  # noqa: E402

DEFAULT_DB = REPO / "docs" / "real-gpu" / "real-study.db"
WORKLOAD_DIRS = (REPO / "docs" / "real-gpu",)
# What SGLang logged for these runs when the flags were not passed (chunked prefill on an H200).
DEFAULT_CHUNKED_PREFILL = 8192
DEFAULT_MAX_PREFILL = 16384
GRID_STEP = 0.05
OPTIMUM_TOLERANCE = 0.05  # flag when the real and simulated optimum ratios differ by more
NEAR_BEST = 0.01  # report the simulated ratios within this share of the simulated best


# -- the real trials --------------------------------------------------------------------------


@dataclass(frozen=True)
class RealTrial:
    """One real SGLang trial, flattened from the Optuna record (study-level facts included)."""

    study: str
    model: str
    gpu: str
    workload: str
    server_version: str
    number: int
    ratio: float
    state: str  # COMPLETE, PRUNED (stopped early: partial numbers), FAIL, RUNNING, WAITING
    value: float | None
    full_tokens: int | None  # None: the server never booted (or the trial has no result yet)
    swa_tokens: int | None
    page_size: int
    kvcache_gib: float | None
    boot_s: float | None
    replay_s: float | None
    total_throughput: float | None
    output_throughput: float | None
    ttft_median_ms: float | None
    ttft_p99_ms: float | None
    tpot_median_ms: float | None
    tpot_p99_ms: float | None
    completed: int | None
    failed: int | None
    max_queue: float | None  # from the server's own /metrics samples
    retractions: float | None
    stopped_early: bool
    message: str
    server_flags: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    extra_args: tuple[str, ...] = ()
    workload_spec: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def booted(self) -> bool:
        return self.full_tokens is not None and self.swa_tokens is not None

    @property
    def partial(self) -> bool:
        """Its numbers cover only the requests finished before it was stopped."""
        return self.state == "PRUNED" or self.stopped_early

    @property
    def has_numbers(self) -> bool:
        return self.total_throughput is not None

    @property
    def dummy_weights(self) -> bool:
        return "dummy" in self.server_version or self.server_flags.get("load-format") == "dummy"


def _snapshot(db: Path) -> Path:
    """A consistent copy of the SQLite DB in a temporary directory (the original is opened read-only)."""
    db = Path(db)
    if not db.is_file():
        raise FileNotFoundError(f"no Optuna DB at {db}")
    tmpdir = Path(tempfile.mkdtemp(prefix="real-fidelity-"))
    atexit.register(shutil.rmtree, tmpdir, True)
    copy = tmpdir / db.name
    src = sqlite3.connect(f"file:{db.resolve()}?mode=ro", uri=True)
    dst = sqlite3.connect(copy)
    try:
        src.backup(dst)
    finally:
        dst.close()
        src.close()
    return copy


def _num(value: Any) -> float | None:
    if value is None:
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(out) else out


def _int(value: Any) -> int | None:
    out = _num(value)
    return None if out is None else int(out)


def _series(result: dict[str, Any]) -> tuple[float | None, float | None]:
    samples = result.get("samples") or []
    try:
        parsed = [MetricSample.from_dict(s) for s in samples]
    except (KeyError, TypeError, ValueError):
        parsed = []
    if parsed:
        summary = summarize_series(parsed)
        return summary.peak_queue, summary.retractions
    series = result.get("series") or {}
    return _num(series.get("peak_queue")), _num(series.get("retractions"))


def _trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> RealTrial | None:
    ratio = trial.params.get(RATIO)
    if ratio is None:
        return None
    attrs = study.user_attrs
    parts = study.study_name.split("|")
    result = trial.user_attrs.get(ATTR_RESULT) or {}
    summary = result.get("summary") or {}
    memory = result.get("server_memory") or {}
    check = trial.user_attrs.get(ATTR_POOL_CHECK) or {}
    ttft, tpot = summary.get("ttft") or {}, summary.get("tpot") or {}
    full = _int(result.get("full_tokens", check.get("full_tokens")))
    swa = _int(result.get("swa_tokens", check.get("swa_tokens")))
    max_queue, retractions = _series(result)
    return RealTrial(
        study=study.study_name,
        model=attrs.get("model") or parts[0],
        gpu=attrs.get("gpu") or (parts[1] if len(parts) > 1 else ""),
        workload=attrs.get("workload") or (parts[2] if len(parts) > 2 else ""),
        server_version=attrs.get("server_version") or (parts[3] if len(parts) > 3 else ""),
        number=trial.number,
        ratio=float(ratio),
        state=trial.state.name,
        value=trial.values[0] if trial.values else None,
        full_tokens=full,
        swa_tokens=swa,
        page_size=int(check.get("page_size") or (attrs.get("server_flags") or {}).get("page-size") or 1),
        kvcache_gib=_num(memory.get("kvcache_gib", check.get("kvcache_gib"))),
        boot_s=_num(result.get("boot_s")),
        replay_s=_num(result.get("replay_s")),
        total_throughput=_num(summary.get("total_throughput")) if summary else None,
        output_throughput=_num(summary.get("output_throughput")) if summary else None,
        ttft_median_ms=_num(ttft.get("median")),
        ttft_p99_ms=_num(ttft.get("p99")),
        tpot_median_ms=_num(tpot.get("median")),
        tpot_p99_ms=_num(tpot.get("p99")),
        completed=_int(summary.get("completed")),
        failed=_int(summary.get("failed")),
        max_queue=max_queue,
        retractions=retractions,
        stopped_early=bool(result.get("stopped_early")),
        message=str(result.get("message") or result.get("failure") or ""),
        server_flags=dict(attrs.get("server_flags") or {}),
        extra_args=tuple(str(a) for a in attrs.get("extra_args") or ()),
        workload_spec=dict(attrs.get("workload_spec") or {}),
    )


def load_real_trials(db: str | Path = DEFAULT_DB) -> list[RealTrial]:
    """Every trial with a ratio in every study of the DB, by study name then trial number."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = f"sqlite:///{_snapshot(Path(db))}"
    trials: list[RealTrial] = []
    for summary in sorted(optuna.get_all_study_summaries(url), key=lambda s: s.study_name):
        study = optuna.load_study(study_name=summary.study_name, storage=url)
        trials.extend(t for t in (_trial(study, ft) for ft in study.get_trials(deepcopy=False)) if t is not None)
    return sorted(trials, key=lambda t: (t.study, t.number))


# -- the simulated counterpart ----------------------------------------------------------------


@dataclass
class StudyCase:
    """One study made ready to simulate: its workload, the booted model, the pinned KV budget."""

    name: str
    trials: list[RealTrial]
    workload: Workload
    workload_note: str
    model: ModelSpec
    geometry: KVGeometry
    gpu: GPUProfile
    budget_bytes: int  # the simulator's kv_budget_bytes for the grid (and for trials without a layout)
    budget_note: str
    budget_interval: BudgetInterval | None  # None: the layouts did not agree on one budget, or none booted
    trial_budgets: dict[int, int]  # per trial (differs from budget_bytes only when the layouts disagree)
    page_size: int
    chunked_prefill_size: int
    max_prefill_tokens: int
    sglang_version: str = EMULATED_SGLANG_VERSION  # the real server's release: its scheduler rules
    prefill_cuda_graph: bool = True  # False when the real trials ran with prefill graphs off
    dummy_weights: bool = False  # the real trials ran --load-format dummy: timed with the dummy routing

    @property
    def layouts(self) -> list[tuple[float, int, int]]:
        return [(t.ratio, t.full_tokens, t.swa_tokens) for t in self.trials if t.booted]  # type: ignore[misc]


@dataclass(frozen=True)
class SimTrial:
    """A simulated trial (always labelled simulated where shown)."""

    ratio: float
    refused: str | None  # SGLang's start-up refusal, when the simulated server would not boot
    full_tokens: int | None
    swa_tokens: int | None
    kv_budget_gib: float
    total_throughput: float | None = None
    output_throughput: float | None = None
    ttft_median_ms: float | None = None
    tpot_median_ms: float | None = None
    completed: int | None = None
    max_queue: float | None = None
    retractions: float | None = None
    hung: bool = False
    simulated: bool = True

    @property
    def booted(self) -> bool:
        return self.refused is None


def _flag(trial: RealTrial, name: str, default: int) -> int:
    if name in trial.server_flags:
        return int(trial.server_flags[name])
    args = list(trial.extra_args)
    for i, arg in enumerate(args):
        if arg == f"--{name}" and i + 1 < len(args):
            return int(args[i + 1])
        if arg.startswith(f"--{name}="):
            return int(arg.split("=", 1)[1])
    return default


_DUMMY_ROOT: list[Path] = []


def _booted_model(trial: RealTrial) -> ModelSpec:
    catalog = load_model(trial.model)
    if not trial.dummy_weights:
        return catalog
    if not _DUMMY_ROOT:
        root = Path(tempfile.mkdtemp(prefix="real-fidelity-dummy-"))
        atexit.register(shutil.rmtree, root, True)
        _DUMMY_ROOT.append(root)
    return dummy_spec(catalog, write_dummy_model(catalog, _DUMMY_ROOT[0]))


@lru_cache(maxsize=None)
def _yaml_workloads(directory: Path) -> dict[str, Workload]:
    found: dict[str, Workload] = {}
    for path in sorted(directory.glob("*.y*ml")):
        try:
            for workload in parse_workload_arg(str(path)):
                found.setdefault(workload.name, workload)
        except Exception:  # noqa: BLE001 - not a workload file
            continue
    return found


def study_workload(trial: RealTrial, directories: Sequence[Path] = WORKLOAD_DIRS) -> tuple[Workload, str]:
    """The workload the real run replayed: its YAML (matched by name), checked against the study's spec."""
    recorded = Workload.from_dict(trial.workload_spec) if trial.workload_spec else None
    for directory in directories:
        workload = _yaml_workloads(Path(directory)).get(trial.workload)
        if workload is None:
            continue
        if recorded is not None and workload.to_dict() != recorded.to_dict():
            return recorded, f"{directory}/{trial.workload}.yaml differs from the study's workload_spec: used the spec"
        return workload, f"{trial.workload} from {Path(directory).relative_to(REPO) if Path(directory).is_relative_to(REPO) else directory}"
    if recorded is None:
        raise ValueError(f"{trial.study}: no workload YAML named {trial.workload!r} and no workload_spec")
    return recorded, f"{trial.workload} from the study's workload_spec"


def prepare_case(trials: Sequence[RealTrial], gpu: GPUProfile | None = None) -> StudyCase:
    """Pin everything a simulation of this study needs (one study's trials)."""
    if not trials:
        raise ValueError("no trials")
    first = trials[0]
    model = _booted_model(first)
    geometry = KVGeometry.of(model)
    profile = gpu or load_gpu(first.gpu)
    workload, workload_note = study_workload(first)
    page = first.page_size
    chunk = _flag(first, "chunked-prefill-size", DEFAULT_CHUNKED_PREFILL)
    max_prefill = _flag(first, "max-prefill-tokens", DEFAULT_MAX_PREFILL)
    booted = [t for t in trials if t.booted]
    interval: BudgetInterval | None = None
    trial_budgets: dict[int, int] = {}
    if booted:
        layouts = [PoolLayout(t.ratio, t.page_size, t.full_tokens, t.swa_tokens, geometry.window) for t in booted]  # type: ignore[arg-type]
        try:
            interval = infer_budget_from_layouts(geometry, layouts)
            budget = interval.mid
            note = (
                f"pinned by all {len(booted)} real layouts: {interval.lo:,} <= B < {interval.hi:,} bytes "
                f"({interval.hi - interval.lo:,} wide); simulated with the middle, {budget / GIB:.4f} GiB"
            )
            trial_budgets = {t.number: budget for t in booted}
        except InconsistentLayout as exc:
            for t in booted:
                trial_budgets[t.number] = infer_budget(geometry, t.full_tokens, t.swa_tokens, t.ratio, t.page_size).mid  # type: ignore[arg-type]
            budget = int(statistics.median(trial_budgets.values()))
            note = f"THE REAL LAYOUTS DISAGREE ({exc}); each trial simulated on its own budget, the grid on their median"
    else:
        fraction = first.server_flags.get("mem-fraction-static")
        budget = estimate_budget(model, profile, mem_fraction_static=fraction, chunked_prefill_size=chunk).bytes
        note = f"no trial booted yet: ESTIMATED from mem_fraction_static {fraction} ({budget / GIB:.3f} GiB), not pinned"
    return StudyCase(
        name=first.study, trials=list(trials), workload=workload, workload_note=workload_note, model=model,
        geometry=geometry, gpu=profile, budget_bytes=budget, budget_note=note, budget_interval=interval,
        trial_budgets=trial_budgets, page_size=page, chunked_prefill_size=chunk, max_prefill_tokens=max_prefill,
        sglang_version=_release(first.server_version),
        prefill_cuda_graph=not ({"--disable-prefill-cuda-graph", "--disable-cuda-graph"} & set(first.extra_args)),
        dummy_weights=first.dummy_weights,
    )


def _release(server_version: str) -> str:
    """"sglang-0.5.17+dummy-weights" -> "0.5.17" (the simulator's default for anything else)."""
    match = re.match(r"sglang-(\d+\.\d+\.\d+)", server_version)
    return match.group(1) if match else EMULATED_SGLANG_VERSION


def as_before_calibration(case: StudyCase) -> StudyCase:
    """The simulator as it was before the real-GPU study: 0.5.23's scheduler rules whatever the
    server, and no separate cost for eager (graph-less) prefill steps."""
    gpu = dataclasses.replace(case.gpu, eager_prefill_step_overhead_ms=None)
    return dataclasses.replace(case, sglang_version=EMULATED_SGLANG_VERSION, prefill_cuda_graph=True, gpu=gpu,
                               dummy_weights=False)


def group_studies(trials: Sequence[RealTrial]) -> dict[str, list[RealTrial]]:
    studies: dict[str, list[RealTrial]] = {}
    for trial in trials:
        studies.setdefault(trial.study, []).append(trial)
    return studies


def load_cases(db: str | Path = DEFAULT_DB, gpu: GPUProfile | None = None) -> list[StudyCase]:
    """Every study of the DB made ready to simulate (the slow part of a calibration loop: do it once)."""
    return [prepare_case(trials, gpu) for trials in group_studies(load_real_trials(db)).values()]


def sim_config(case: StudyCase, ratio: float, profile: GPUProfile | None = None, budget_bytes: int | None = None) -> SimServerConfig:
    return SimServerConfig(
        model=case.model, gpu=profile or case.gpu, swa_full_tokens_ratio=ratio, page_size=case.page_size,
        chunked_prefill_size=case.chunked_prefill_size, max_prefill_tokens=case.max_prefill_tokens,
        kv_budget_bytes=budget_bytes if budget_bytes is not None else case.budget_bytes,
        sglang_version=case.sglang_version, prefill_cuda_graph=case.prefill_cuda_graph,
        dummy_weights=case.dummy_weights,
    )


def simulate_trial(
    case: StudyCase,
    ratio: float,
    profile: GPUProfile | None = None,
    *,
    trial: RealTrial | None = None,
    layout_only: bool = False,
) -> SimTrial:
    """Simulate `case`'s workload at `ratio` (on `trial`'s pinned budget when given).

    `layout_only`: start the simulated server and stop (pool sizes only, no replay).
    """
    budget = case.trial_budgets.get(trial.number, case.budget_bytes) if trial is not None else case.budget_bytes
    config = sim_config(case, ratio, profile, budget)
    try:
        if layout_only:
            startup, result = start_up(config), None
        else:
            result = simulate(case.workload, config)
            startup = result.startup
    except SWAPoolRefused as refused:
        return SimTrial(ratio=ratio, refused=str(refused), full_tokens=None, swa_tokens=None, kv_budget_gib=budget / GIB)
    base = SimTrial(
        ratio=ratio, refused=None, full_tokens=startup.full_tokens, swa_tokens=startup.swa_tokens,
        kv_budget_gib=startup.budget.gib,
    )
    if result is None:
        return base
    s = result.summary
    return dataclasses.replace(
        base, total_throughput=s.total_throughput, output_throughput=s.output_throughput,
        ttft_median_ms=_num(s.ttft.median), tpot_median_ms=_num(s.tpot.median), completed=s.completed,
        max_queue=result.series.peak_queue, retractions=result.series.retractions, hung=result.hung,
    )


# -- comparison -------------------------------------------------------------------------------


@dataclass(frozen=True)
class FidelityRow:
    real: RealTrial
    sim: SimTrial

    @property
    def layout_match(self) -> bool | None:
        """None: the real server reported no layout to compare with."""
        if not self.real.booted:
            return None
        return (self.sim.full_tokens, self.sim.swa_tokens) == (self.real.full_tokens, self.real.swa_tokens)

    @property
    def comparable(self) -> bool:
        """Real numbers that cover the whole workload (COMPLETE, not stopped early) and a simulated run."""
        return self.real.state == "COMPLETE" and not self.real.partial and self.real.has_numbers and self.sim.booted

    def error(self, metric: str) -> float | None:
        """(sim - real) / real for throughput, ttft or tpot; None when not comparable."""
        real, sim = _metric(self.real, metric), _metric(self.sim, metric)
        if not self.comparable or real is None or sim is None or real == 0:
            return None
        return (sim - real) / real

    def log_error(self, metric: str) -> float | None:
        real, sim = _metric(self.real, metric), _metric(self.sim, metric)
        if not self.comparable or not real or not sim or real <= 0 or sim <= 0:
            return None
        return abs(math.log(sim / real))


METRICS = ("throughput", "ttft", "tpot")


def _metric(trial: RealTrial | SimTrial, metric: str) -> float | None:
    return {
        "throughput": trial.total_throughput, "ttft": trial.ttft_median_ms, "tpot": trial.tpot_median_ms,
    }[metric]


def fidelity_rows(
    case: StudyCase, profile: GPUProfile | None = None, *, states: Sequence[str] | None = None, layout_only: bool = False
) -> list[FidelityRow]:
    """Each real trial (of `states`, default all) next to its simulation at the same ratio and budget."""
    return [
        FidelityRow(real=t, sim=simulate_trial(case, t.ratio, profile, trial=t, layout_only=layout_only))
        for t in case.trials if states is None or t.state in states
    ]


def fidelity_errors(profile: GPUProfile | None = None, *, cases: Sequence[StudyCase] | None = None,
                    db: str | Path = DEFAULT_DB, metrics: Sequence[str] = METRICS) -> list[float]:
    """|log(sim / real)| per COMPLETE trial and metric (throughput, median TTFT, median TPOT)."""
    errors = []
    for case in cases if cases is not None else _cached_cases(str(db)):
        for row in fidelity_rows(case, profile, states=("COMPLETE",)):
            errors.extend(e for e in (row.log_error(m) for m in metrics) if e is not None)
    return errors


def throughput_error(profile: GPUProfile | None = None, *, cases: Sequence[StudyCase] | None = None,
                     db: str | Path = DEFAULT_DB, metrics: Sequence[str] = METRICS) -> float:
    """Mean absolute log error of throughput, median TTFT and median TPOT over COMPLETE trials.

    `profile` replaces each study's GPU profile (e.g. `dataclasses.replace(load_gpu("H200"), ...)`);
    pass `cases=load_cases(db)` to load the DB once across calls. NaN when no trial is comparable.
    """
    errors = fidelity_errors(profile, cases=cases, db=db, metrics=metrics)
    return sum(errors) / len(errors) if errors else math.nan


@lru_cache(maxsize=4)
def _cached_cases(db: str) -> tuple[StudyCase, ...]:
    return tuple(load_cases(db))


@dataclass(frozen=True)
class Optimum:
    real_best: RealTrial | None
    real_default: RealTrial | None  # the COMPLETE trial at ratio 0.8, if any
    sim_grid: tuple[SimTrial, ...]  # booted points of the grid, by ratio
    sim_best: SimTrial | None
    min_feasible_ratio: float | None

    @property
    def real_gain_over_default(self) -> float | None:
        if not self.real_best or not self.real_default:
            return None
        return self.real_best.total_throughput / self.real_default.total_throughput - 1  # type: ignore[operator]

    @property
    def ratio_gap(self) -> float | None:
        if not self.real_best or not self.sim_best:
            return None
        return self.sim_best.ratio - self.real_best.ratio

    @property
    def disagrees(self) -> bool:
        return self.ratio_gap is not None and abs(self.ratio_gap) > OPTIMUM_TOLERANCE + 1e-9

    def sim_at(self, ratio: float) -> SimTrial | None:
        return next((s for s in self.sim_grid if math.isclose(s.ratio, ratio, abs_tol=1e-9)), None)


def sim_grid_ratios(case: StudyCase, step: float = GRID_STEP) -> tuple[float | None, list[float]]:
    low = min_feasible_ratio(case.geometry, case.budget_bytes, case.page_size)
    grid = {t.ratio for t in case.trials}
    if low is not None:
        grid.add(low)
        grid.update(r for r in (round(k * step, 6) for k in range(1, round(1 / step) + 1)) if r >= low)
    return low, sorted(grid)


def find_optimum(case: StudyCase, rows: Sequence[FidelityRow] = (), profile: GPUProfile | None = None,
                 step: float = GRID_STEP) -> Optimum:
    complete = [t for t in case.trials if t.state == "COMPLETE" and not t.partial and t.total_throughput]
    best = max(complete, key=lambda t: t.total_throughput, default=None)  # type: ignore[arg-type,return-value]
    default = next((t for t in complete if math.isclose(t.ratio, DEFAULT_RATIO, abs_tol=1e-9)), None)
    low, ratios = sim_grid_ratios(case, step)
    # Reuse the rows' simulations where they ran on the grid's budget.
    done = {r.sim.ratio: r.sim for r in rows if case.trial_budgets.get(r.real.number, case.budget_bytes) == case.budget_bytes}
    grid = [done.get(r) or simulate_trial(case, r, profile) for r in ratios]
    booted = tuple(s for s in grid if s.booted and not s.hung and s.total_throughput)
    sim_best = max(booted, key=lambda s: s.total_throughput, default=None)  # type: ignore[arg-type,return-value]
    return Optimum(real_best=best, real_default=default, sim_grid=booted, sim_best=sim_best, min_feasible_ratio=low)


def layout_check(case: StudyCase) -> list[LeaveOneOut] | str:
    """Each real layout predicted from the others (leave-one-out), or why it cannot be done."""
    if len(case.layouts) < 2:
        return f"needs two or more booted trials; {len(case.layouts)} so far"
    try:
        return leave_one_out(case.geometry, case.layouts, case.page_size)
    except InconsistentLayout as exc:
        return f"the real layouts cannot share one budget: {exc}"


# -- report -----------------------------------------------------------------------------------


def _f(value: float | None, digits: int = 0) -> str:
    return "—" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:,.{digits}f}"


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value:+.1%}"


def _layout(full: int | None, swa: int | None) -> str:
    return "—" if full is None else f"{full:,} / {swa:,}"


def _state(t: RealTrial) -> str:
    if t.partial:
        total = (t.workload_spec.get("source") or {}).get("num_prompts")
        done = "" if t.completed is None else f", {t.completed}/{total or '?'} requests done"
        return f"{t.state}: stopped early (partial{done})"
    if t.state == "FAIL" and t.message:
        return f"FAIL: {_short(t.message)}"
    return t.state


def _short(text: str, n: int = 60) -> str:
    text = re.sub(r"\s+", " ", text).strip()
    return text if len(text) <= n else text[: n - 1] + "…"


def report_case(case: StudyCase, profile: GPUProfile | None = None) -> tuple[str, bool]:
    """Markdown for one study; and whether every simulated layout equals the real one."""
    rows = fidelity_rows(case, profile)
    gpu = profile or case.gpu
    out = [f"## {case.name}", ""]
    out.append(f"- workload: {case.workload.describe()} ({case.workload_note})")
    out.append(f"- model simulated: {case.model.name} ({'dummy-weight text model, as SGLang booted it' if case.trials[0].dummy_weights else 'catalog'}); "
               f"GPU profile: {gpu.name}; page {case.page_size}, chunked_prefill_size {case.chunked_prefill_size}, "
               f"max_prefill_tokens {case.max_prefill_tokens}")
    out.append(f"- KV budget: {case.budget_note}")
    out.append("")
    out.append("### Per trial: real vs simulated (sim = autotune/sim, simulated)")
    out.append("")
    head = ["trial", "ratio", "state", "real full / SWA", "sim full / SWA", "layout", "real kvcache GiB", "real boot s",
            "real tok/s", "sim tok/s", "tok/s err", "real TTFT p50 ms", "sim TTFT p50 ms", "real TPOT p50 ms",
            "sim TPOT p50 ms", "real max queue", "real retractions", "sim max queue", "sim retractions"]
    out.append("| " + " | ".join(head) + " |")
    out.append("|" + "|".join("---:" if i not in (2, 5) else ":---" for i in range(len(head))) + "|")
    all_match = True
    partial = False
    for row in rows:
        r, s = row.real, row.sim
        match = row.layout_match
        all_match &= match is not False
        mark = "†" if r.partial and r.has_numbers else ""
        partial |= bool(mark)
        if match is None:
            layout = "n/a (real did not boot)" if r.state in ("FAIL", "COMPLETE", "PRUNED") else "n/a (no result yet)"
        else:
            layout = "✓" if match else "✗"
        sim_text = "refused (SWA pool too small)" if s.refused else _layout(s.full_tokens, s.swa_tokens)
        if s.hung:
            sim_text += " (hung)"
        err = row.error("throughput")
        err_text = _pct(err) if err is not None else ("— (partial)" if mark else "—")
        out.append("| " + " | ".join([
            str(r.number), f"{r.ratio:.4f}", _state(r), _layout(r.full_tokens, r.swa_tokens), sim_text, layout,
            _f(r.kvcache_gib, 3), _f(r.boot_s, 1),
            _f(r.total_throughput) + mark, _f(s.total_throughput), err_text,
            _f(r.ttft_median_ms) + mark, _f(s.ttft_median_ms), _f(r.tpot_median_ms, 1) + mark, _f(s.tpot_median_ms, 1),
            _f(r.max_queue) + mark, _f(r.retractions) + mark, _f(s.max_queue), _f(s.retractions),
        ]) + " |")
    out.append("")
    if partial:
        out.append("† stopped early (partial): real numbers over the requests finished before the trial was pruned; "
                   "no error computed.")
    comparable = [row for row in rows if row.comparable]
    if comparable:
        parts, every = [], []
        for m, label in zip(METRICS, ("throughput", "TTFT p50", "TPOT p50")):
            errs = [e for e in (row.log_error(m) for row in comparable) if e is not None]
            every += errs
            if errs:
                mean = sum(errs) / len(errs)
                parts.append(f"{label} {mean:.3f} (x{math.exp(mean):.2f})")
        out.append(f"Mean |log(sim / real)| over {len(comparable)} COMPLETE trial(s): " + ", ".join(parts)
                   + f"; all three: {sum(every) / len(every):.3f} (what `throughput_error()` returns).")
    else:
        out.append("No COMPLETE trial to compute an error on.")
    out.append("Layouts: " + ("every booted trial's simulated layout equals the real one to the token ✓" if all_match
                              else "SIMULATED LAYOUT DIFFERS FROM THE REAL ONE ✗"))
    out.append("")

    opt = find_optimum(case, rows, profile)
    out.append("### Optimum: real vs simulated")
    out.append("")
    if opt.real_best:
        b = opt.real_best
        gain = opt.real_gain_over_default
        gain_text = f", {gain:+.1%} over ratio 0.8 (trial {opt.real_default.number})" if gain is not None and opt.real_default else \
            " (ratio 0.8 has no COMPLETE trial to compare with)"
        out.append(f"- real: best COMPLETE trial {b.number}, ratio {b.ratio:.4f}, {b.total_throughput:,.0f} tok/s{gain_text}")
    else:
        out.append("- real: no COMPLETE trial yet")
    if opt.sim_best:
        sb = opt.sim_best
        at08 = opt.sim_at(DEFAULT_RATIO)
        gain = f", {sb.total_throughput / at08.total_throughput - 1:+.1%} over simulated 0.8" if at08 and at08.total_throughput else ""
        low = f"{opt.min_feasible_ratio:.3f}" if opt.min_feasible_ratio is not None else "?"
        out.append(f"- simulated: best ratio {sb.ratio:.4f}, {sb.total_throughput:,.0f} tok/s (simulated){gain}; grid of "
                   f"{len(opt.sim_grid)} ratios from the feasible low {low} to 1.0 in {GRID_STEP} steps plus the real trials' ratios")
        near = [s.ratio for s in opt.sim_grid if s.total_throughput >= (1 - NEAR_BEST) * sb.total_throughput]  # type: ignore[operator]
        out.append(f"- simulated ratios within {NEAR_BEST:.0%} of the simulated best: {min(near):.4f} .. {max(near):.4f} "
                   f"({len(near)} of {len(opt.sim_grid)} grid points; ties go to the lowest ratio)")
        if opt.real_best:
            at_real = opt.sim_at(opt.real_best.ratio)
            if at_real and at_real.total_throughput:
                out.append(f"- simulated at the real optimum's ratio {opt.real_best.ratio:.4f}: {at_real.total_throughput:,.0f} tok/s "
                           f"(sim's best is {sb.total_throughput / at_real.total_throughput - 1:+.1%} above it)")
    else:
        out.append("- simulated: no ratio booted and finished")
    gap = opt.ratio_gap
    if gap is not None:
        flag = f" ⚠ the optima differ by more than {OPTIMUM_TOLERANCE}" if opt.disagrees else f" (within {OPTIMUM_TOLERANCE})"
        out.append(f"- optimum ratio, simulated - real: {gap:+.4f}{flag}")
    out.append("")
    out.append("Simulated grid (total tok/s): " + ", ".join(f"{s.ratio:.3g}: {s.total_throughput:,.0f}" for s in opt.sim_grid))
    out.append("")

    out.append("### Layout check: leave-one-out (each real layout predicted from the others' budget)")
    out.append("")
    loo = layout_check(case)
    if isinstance(loo, str):
        out.append(f"- not run: {loo}")
    else:
        out.append("| ratio | real full / SWA | predicted full | predicted SWA | exact | contained |")
        out.append("|---:|---:|---:|---:|:---:|:---:|")
        for item in loo:
            pf = item.predicted_full
            ps = item.predicted_swa
            out.append(f"| {item.ratio:.4f} | {item.full_tokens:,} / {item.swa_tokens:,} | "
                       f"{pf[0]:,}" + ("" if pf[0] == pf[1] else f"..{pf[1]:,}") + " | "
                       f"{ps[0]:,}" + ("" if ps[0] == ps[1] else f"..{ps[1]:,}") + f" | "
                       f"{'✓' if item.exact else '✗'} | {'✓' if item.contained else '✗'} |")
        exact = sum(i.exact for i in loo)
        contained = sum(i.contained for i in loo)
        out.append("")
        out.append(f"{exact}/{len(loo)} exact, {contained}/{len(loo)} contained.")
    out.append("")
    return "\n".join(out), all_match


def parse_overrides(profile: GPUProfile, items: Sequence[str]) -> GPUProfile:
    """`key=value` pairs applied to the (frozen) profile with dataclasses.replace."""
    changes: dict[str, Any] = {}
    names = {f.name for f in dataclasses.fields(GPUProfile)}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in names:
            raise SystemExit(f"--profile-override {item!r}: use key=value with key one of {sorted(names)}")
        current = getattr(profile, key)
        if isinstance(current, bool):
            value: Any = text.strip().lower() in ("1", "true", "yes", "on")
        elif isinstance(current, int):
            value = int(float(text))
        elif isinstance(current, float):
            value = float(text)
        elif isinstance(current, tuple):
            value = tuple(v.strip() for v in text.split(",") if v.strip())
        else:
            value = text
        changes[key] = value
    if not changes:
        return profile
    note = ", ".join(f"{k}={v}" for k, v in changes.items())
    return dataclasses.replace(profile, **changes, source=f"{profile.source}; overridden: {note}")


def build_report(db: Path, gpu: str | None, overrides: Sequence[str], before: bool = False) -> tuple[str, bool]:
    trials = load_real_trials(db)
    shown = db.relative_to(REPO) if db.resolve().is_relative_to(REPO) else db
    lines = [
        "# Simulator fidelity on real SGLang (real GPU trials vs simulated)",
        "",
        f"Generated by `python bench/real_gpu_fidelity.py` from `{shown}`. Real: SGLang trials as recorded; "
        "sim: the simulator (autotune/sim) replaying the same workload at the same ratio on the KV budget the "
        "real layouts pin. Every sim column is simulated.",
        "",
    ]
    if overrides:
        lines += [f"GPU profile overrides: {', '.join(overrides)}", ""]
    all_match = True
    studies = group_studies(trials)
    if not studies:
        lines.append("No studies with trials in the DB.")
    for name, study_trials in studies.items():
        base = load_gpu(gpu or study_trials[0].gpu)
        profile = parse_overrides(base, overrides)
        case = prepare_case(study_trials, profile)
        if before:
            case = as_before_calibration(case)
        lines += [f"Simulator: SGLang {case.sglang_version} scheduler rules, prefill CUDA graphs "
                  f"{'on' if case.prefill_cuda_graph else 'off (eager prefill overhead)'}"
                  + (" [BEFORE calibration]" if before else ""), ""]
        text, match = report_case(case)
        all_match &= match
        lines.append(text)
    return "\n".join(lines).rstrip() + "\n", all_match


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", type=Path, default=DEFAULT_DB, help="Optuna SQLite DB (read, never written)")
    parser.add_argument("--gpu", default=None, help="GPU profile for the simulator (default: each study's GPU)")
    parser.add_argument("--write", type=Path, default=None, help="also write the report (markdown) here")
    parser.add_argument("--profile-override", action="append", default=[], metavar="KEY=VALUE",
                        help="replace a GPU profile field, e.g. decode_step_overhead_ms=3.0 (repeatable)")
    parser.add_argument("--before", action="store_true",
                        help="the simulator before calibration (0.5.23 rules for every server, no eager-prefill cost)")
    args = parser.parse_args(argv)
    text, all_match = build_report(args.db, args.gpu, args.profile_override, before=args.before)
    print(text, end="")
    if args.write:
        args.write.parent.mkdir(parents=True, exist_ok=True)
        args.write.write_text(text, encoding="utf-8")
    return 0 if all_match else 1


if __name__ == "__main__":
    raise SystemExit(main())

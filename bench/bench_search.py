"""How fast the study's search finds the best --swa-full-tokens-ratio, against baselines (SIMULATED).

For every catalog model on an H100-80GB (the smallest tensor-parallel size that serves it) and two
reduced presets (chat: 96 prompts at concurrency 48; summarization: 32 prompts at concurrency 16):

1. the fine grid: total throughput at every ratio on a 0.01 grid from the feasible minimum (rounded
   up) to 1.0, each point one `autotune.sim.run.simulate` call (the `sim-fast` engine, virtual time).
   The grid is the lookup table of every strategy below: a proposed ratio is rounded to the nearest
   grid point and its value read from the grid, so strategies are compared on identical numbers.
2. strategies, 40 trials each, scored by the trials needed to reach within 1 % of the grid's best:
   - ours: the study's first trials (StudyPlan.first_ratios(): the capacity model's analytic optimum,
     then SGLang's default 0.8), then TPE exactly as `controller.sampler_for` configures it, asked
     through `controller.open_study` on an in-memory storage, seeds 0-4 (`StudyPlan.seed`);
   - grid05: step 0.05, ascending from the feasible minimum;
   - random: uniform over the feasible range (Optuna's RandomSampler), seeds 0-4;
   - cold TPE: the same TPE without the enqueued first trials, seeds 0-4;
   - ours with the stopping rule: the same study with --trials 8 as a ceiling, `controller.decide`
     judging before every sampler trial (autotune/study/stopping.py), scored by the boots it spent
     and whether its answer is within 1 % (docs/stopping.md).
3. gains of the grid's best over 0.8 (SGLang's default) and over the hand rule (0.15 for MoE, 0.8 for
   dense; docs/reference/seed.md).

Run: python bench/bench_search.py            (all models x workloads; rewrites docs/search-benchmark.md's table)
     python bench/bench_search.py --quick    (26B-A4B x chat, printed only)
Options: --cache FILE (reuse / keep grid values), --jobs N (worker processes, at most 2), --models, --workloads.
"""

from __future__ import annotations

import argparse
import concurrent.futures as futures
import json
import math
import statistics
import subprocess
import sys
import dataclasses
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import optuna  # noqa: E402

from autotune.hardware import load_gpu  # noqa: E402
from autotune.models import ModelSpec, catalog_specs, load_model  # noqa: E402
from autotune.pools import InsufficientMemory, SWAPoolRefused, estimate_budget, size_pools  # noqa: E402
from autotune.sim.config import SimServerConfig  # noqa: E402
from autotune.sim.run import simulate  # noqa: E402
from autotune.sglang_facts import DEFAULT_RATIO, RATIO  # noqa: E402
from optuna.trial import TrialState  # noqa: E402
from autotune.study.controller import decide, finish, open_study, sampler_for  # noqa: E402
from autotune.study.trial_attrs import ATTR_FINAL  # noqa: E402
from autotune.study.objective import Objective  # noqa: E402
from autotune.study.feasibility import HopelessConfiguration  # noqa: E402
from autotune.study.plan import StudyPlan, build_plan  # noqa: E402
from autotune.workloads import Workload, get_preset  # noqa: E402

GPU = "H100-80GB"
TP_SIZES = (1, 2, 4, 8)
WORKLOADS = {"chat": dict(num_prompts=96, concurrency=48), "summarization": dict(num_prompts=32, concurrency=16)}
GRID_STEP = 0.01  # the fine grid (and the lookup table)
COARSE_STEP = 0.05  # the grid baseline
N_TRIALS = 40
SEEDS = (0, 1, 2, 3, 4)
WITHIN = 0.01  # "within 1 % of the grid's best"
FLAT = 0.5  # a row whose grid is within 1 % of its best at this share of ratios or more is "flat"
BUDGET = 8  # `autotune run`'s default --trials: what each strategy holds after that many
HAND_RULE_MOE, HAND_RULE_DENSE = 0.15, 0.8
DOC = ROOT / "docs" / "search-benchmark.md"
BEGIN, END = "<!-- bench_search:begin -->", "<!-- bench_search:end -->"
NEVER = math.inf


def workload(name: str) -> Workload:
    return get_preset(name, **WORKLOADS[name])


# ---------------------------------------------------------------------------------------------- setup


def longest_request(workloads: list[Workload]) -> int:
    return max(r.prompt_len + r.output_len for w in workloads for r in w.requests)


def choose_tp(model: ModelSpec, gpu, workloads: list[Workload]) -> tuple[int, list[str]]:
    """The smallest TP whose weights fit with SGLang's default memory settings (estimate_budget does
    not raise) and that can serve the workloads: some ratio boots, and the full pool at the feasible
    minimum (its largest) holds one whole request of the longest workload. Returns the TP and why
    smaller ones were skipped."""
    skipped = []
    need = longest_request(workloads)
    for tp in TP_SIZES:
        try:
            budget = estimate_budget(model, gpu, tp=tp)
        except InsufficientMemory:
            skipped.append(f"tp={tp}: weights do not fit (InsufficientMemory)")
            continue
        try:
            plan = make_plan(model, gpu, workloads[0], tp)
        except HopelessConfiguration as hopeless:  # build_plan refuses it before any trial
            skipped.append(f"tp={tp}: refused by build_plan: {str(hopeless).split(': ', 1)[1].split('. Fix')[0]}")
            continue
        try:
            low = plan.feasible_low()
        except ValueError:
            skipped.append(f"tp={tp}: {budget.gib:.2f} GiB of KV, no ratio boots (SWA pool below one window at 1.0)")
            continue
        full = size_pools(plan.geometry(), plan.budget_bytes, low, plan.page_size, check=False).full_tokens
        if full < need + plan.page_size:
            skipped.append(
                f"tp={tp}: {budget.gib:.2f} GiB of KV, the full pool holds at most {full} tokens "
                f"< one {need}-token request"
            )
            continue
        return tp, skipped
    raise RuntimeError(f"{model.name}: no TP in {TP_SIZES} serves it on {gpu.name}")


def make_plan(model: ModelSpec, gpu, work: Workload, tp: int) -> StudyPlan:
    return build_plan(
        model=model, model_ref=model.name, gpu=gpu, workload=work, backend="sim-fast",
        objective=Objective("throughput"), n_trials=N_TRIALS, tp=tp,
    )


def grid_ratios(low: float, step: float = GRID_STEP) -> list[float]:
    """Multiples of `step` from `low` rounded up to 1.0 (the fine grid)."""
    n = round(1 / step)
    first = math.ceil(low * n - 1e-9)
    return [k / n for k in range(first, n + 1)]


# ---------------------------------------------------------------------------------------------- grid


def simulate_point(model: ModelSpec, tp: int, work_name: str, ratio: float) -> dict[str, Any]:
    """One grid point on the sim-fast engine. Value as autotune/study/objective.py scores a trial:
    total throughput, 0 for a server that hung or failed requests, None where SGLang refuses."""
    started = time.process_time()
    config = SimServerConfig(model=model, gpu=load_gpu(GPU), swa_full_tokens_ratio=ratio, tp_size=tp)
    try:
        result = simulate(workload(work_name), config)
    except SWAPoolRefused:
        return {"ratio": ratio, "value": None, "cpu_s": time.process_time() - started}
    failed = sum(not o.success for o in result.outcomes)
    value = 0.0 if (result.hung or failed or not result.summary.completed) else float(result.summary.total_throughput)
    retracted = sum(o.retracted for o in result.outcomes)
    return {"ratio": ratio, "value": value, "retracted": retracted, "cpu_s": time.process_time() - started}


def _point(args: tuple[ModelSpec, int, str, float]) -> dict[str, Any]:
    return simulate_point(*args)


class Cache:
    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.data: dict[str, dict[str, Any]] = {}
        self.simulated = 0  # points simulated (not read from the file) in this run
        if path and path.exists():
            self.data = json.loads(path.read_text())

    @staticmethod
    def key(model: str, work: str, tp: int, ratio: float) -> str:
        return f"{model}|{GPU}|{work}|{json.dumps(WORKLOADS[work], sort_keys=True)}|tp{tp}|{ratio:.2f}"

    def save(self) -> None:
        if self.path:
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.data))
            tmp.replace(self.path)


def fine_grid(pool: futures.Executor | None, cache: Cache, model: ModelSpec, tp: int, work: str, low: float) -> dict[float, dict[str, Any]]:
    ratios = grid_ratios(low)
    todo = [r for r in ratios if Cache.key(model.name, work, tp, r) not in cache.data]
    tasks = [(model, tp, work, r) for r in todo]
    results = list(pool.map(_point, tasks, chunksize=2)) if pool else [_point(t) for t in tasks]
    cache.simulated += len(results)
    for point in results:
        cache.data[Cache.key(model.name, work, tp, point["ratio"])] = point
    cache.save()
    return {r: cache.data[Cache.key(model.name, work, tp, r)] for r in ratios}


# ---------------------------------------------------------------------------------------------- strategies


@dataclass
class Table:
    """The fine grid as a lookup: a ratio reads the value at the nearest grid point."""

    ratios: list[float]
    values: list[float]

    def lookup(self, ratio: float) -> float:
        k = round(ratio / GRID_STEP) - round(self.ratios[0] / GRID_STEP)
        return self.values[min(max(k, 0), len(self.values) - 1)]

    @property
    def best(self) -> float:
        return max(self.values)

    def hit(self, value: float) -> bool:
        return value >= (1 - WITHIN) * self.best


def trials_to_hit(table: Table, proposals: list[float]) -> float:
    for i, ratio in enumerate(proposals, 1):
        if table.hit(table.lookup(ratio)):
            return i
    return NEVER


def best_after(table: Table, proposals: list[float], n: int = BUDGET) -> float:
    """The best of the first n trials against the grid's best (0.0 = found it, -0.05 = 5 % short)."""
    return max(table.lookup(r) for r in proposals[:n]) / table.best - 1


def strategy_scores(table: Table, name: str, runs: list[list[float]]) -> dict[str, Any]:
    trials = [trials_to_hit(table, p) for p in runs]
    return {name: trials[0] if name == "grid05" else trials, f"{name}_best{BUDGET}": [best_after(table, p) for p in runs]}


def _quiet() -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def run_ours(plan: StudyPlan, table: Table, seed: int) -> list[float]:
    """The study itself: open_study (first_ratios enqueued, the study's own sampler with the plan's
    seed) on in-memory storage, asked and told like run_study does, the value read from the grid."""
    _quiet()
    study = open_study(dataclasses.replace(plan, seed=seed), optuna.storages.InMemoryStorage())
    return _ask_tell(study, plan, table)


def run_cold_tpe(plan: StudyPlan, table: Table, seed: int) -> list[float]:
    _quiet()
    sampler = sampler_for(dataclasses.replace(plan, seed=seed))
    study = optuna.create_study(directions=plan.objective.directions, sampler=sampler)
    return _ask_tell(study, plan, table)


def run_random(plan: StudyPlan, table: Table, seed: int) -> list[float]:
    _quiet()
    study = optuna.create_study(directions=plan.objective.directions, sampler=optuna.samplers.RandomSampler(seed=seed))
    return _ask_tell(study, plan, table)


def _ask_tell(study: optuna.Study, plan: StudyPlan, table: Table) -> list[float]:
    distributions = plan.space.distributions(plan.feasible_low())
    proposals = []
    for _ in range(N_TRIALS):
        trial = study.ask(distributions)
        ratio = trial.params[RATIO]
        proposals.append(ratio)
        study.tell(trial, table.lookup(ratio))
    return proposals


def run_stopping(plan: StudyPlan, table: Table, seed: int) -> dict[str, Any]:
    """The study with its stopping rule, as run_study drives it (one trial at a time): the queued first
    ratios, then `controller.decide` before every sampler trial (its repeats for the noise band
    included), up to BUDGET trials. Repeats read the same grid value, so the band is the floor."""
    _quiet()
    plan = dataclasses.replace(plan, seed=seed, n_trials=BUDGET)
    study = open_study(plan, optuna.storages.InMemoryStorage())
    distributions = plan.space.distributions(plan.feasible_low())
    proposals: list[float] = []
    while len(proposals) < BUDGET:
        waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
        if not waiting and decide(study, plan, room=BUDGET - len(proposals)) is not None:
            break
        trial = study.ask(distributions)
        proposals.append(trial.params[RATIO])
        trial.set_user_attr(ATTR_FINAL, True)
        study.tell(trial, table.lookup(trial.params[RATIO]))
    outcome = finish(study, plan)
    short = table.lookup(outcome.best_params[RATIO]) / table.best - 1
    return {"boots": len(proposals), "reason": outcome.stopped_because.split(":")[0].split(" (")[0], "short": short}


def stopping_scores(table: Table, runs: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "stop_boots": [r["boots"] for r in runs],
        "stop_short": [r["short"] for r in runs],
        "stop_reasons": [r["reason"] for r in runs],
        # boots to an answer within 1 %: the boots a study spent, NEVER when it stopped short of 1 %
        "stop_hit": [r["boots"] if r["short"] >= -WITHIN else NEVER for r in runs],
    }


def coarse_grid(low: float) -> list[float]:
    """Step 0.05 ascending from the feasible minimum (rounded up to the fine grid)."""
    start = grid_ratios(low)[0]
    points = [round(start + k * COARSE_STEP, 2) for k in range(int((1.0 - start) / COARSE_STEP + 1e-9) + 1)]
    if points[-1] < 1.0:
        points.append(1.0)
    return points


# ---------------------------------------------------------------------------------------------- report


def fmt_trials(values: list[float]) -> str:
    def one(v: float) -> str:
        return f">{N_TRIALS}" if v == NEVER else str(int(v))

    if len(values) == 1:
        return one(values[0])
    med = statistics.median(values)
    med_s = f">{N_TRIALS}" if med == NEVER else (str(int(med)) if med == int(med) else f"{med:.1f}")
    return f"{med_s} / {one(max(values))}"


def fmt_gain(best: float, base: float | None, base_ratio: float, low: float) -> str:
    if base is None or base_ratio < low - 1e-9:
        return f"refused ({base_ratio:g} < {low:g})"
    if base <= 0:
        return f"inf ({base_ratio:g} hangs)"
    return f"{(best / base - 1) * 100:+.1f} %"


COLUMNS = [
    ("model", 22), ("workload", 13), ("tp", 2), ("feasible", 8), ("best", 5), ("best tok/s", 10),
    ("in 1 %", 6), ("analytic", 8), ("an. short", 9), ("ours", 7), ("grid05", 6), ("random", 7),
    ("cold TPE", 8), ("vs 0.8", 10), ("vs hand", 18),
]


def row_cells(r: dict[str, Any]) -> list[str]:
    return [
        r["model"], r["workload"], str(r["tp"]), f"{r['feasible_low']:.3f}", f"{r['best_ratio']:.2f}",
        f"{r['best_value']:.0f}", f"{r['share_within'] * 100:.0f} %", f"{r['analytic']:.3f}",
        f"{r['analytic_short'] * 100:+.1f} %", fmt_trials(r["ours"]), fmt_trials([r["grid05"]]),
        fmt_trials(r["random"]), fmt_trials(r["cold_tpe"]), r["gain_default"], r["gain_hand"],
    ]


def print_header() -> None:
    print("  ".join(name.ljust(width) for name, width in COLUMNS), flush=True)


def print_row(r: dict[str, Any]) -> None:
    print("  ".join(cell.ljust(width) for cell, (_, width) in zip(row_cells(r), COLUMNS)), flush=True)


def markdown_table(rows: list[dict[str, Any]]) -> str:
    head = [
        "model", "workload", "tp", "feasible min", "best ratio", "best tok/s", "grid within 1 %", "analytic ratio",
        "analytic vs best", "ours (median / worst)", "grid 0.05", "random (median / worst)",
        "cold TPE (median / worst)", "best vs 0.8", "best vs hand rule",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = row_cells(r)
        cells[-1] = f"{cells[-1]} (hand {r['hand_ratio']:g})"
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def budget_table(rows: list[dict[str, Any]]) -> str:
    """Rows that are not flat: how far each strategy's best after BUDGET trials is from the grid's best."""
    def cell(values: list[float]) -> str:
        pct = lambda v: f"{v * 100:+.1f} %"  # noqa: E731
        return pct(values[0]) if len(values) == 1 else f"{pct(statistics.median(values))} / {pct(min(values))}"

    head = ["model", "workload", "grid within 1 %", "ours", "grid 0.05", "random", "cold TPE"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        if r["share_within"] < FLAT:
            lines.append("| " + " | ".join([
                r["model"], r["workload"], f"{r['share_within'] * 100:.0f} %",
                *(cell(r[f"{name}_best{BUDGET}"]) for name in ("ours", "grid05", "random", "cold_tpe")),
            ]) + " |")
    return "\n".join(lines)


def fmt_boots(values: list[float]) -> str:
    def one(v: float) -> str:
        return "short" if v == NEVER else (str(int(v)) if v == int(v) else f"{v:.1f}")

    return f"{one(statistics.median(values))} / {one(max(values))}"


def stopping_table(rows: list[dict[str, Any]]) -> str:
    """The stopping rule per row: boots spent, why it stopped, how far its answer is from the grid's best."""
    def pct(values: list[float]) -> str:
        return f"{statistics.median(values) * 100:+.1f} % / {min(values) * 100:+.1f} %"

    def reasons(values: list[str]) -> str:
        return ", ".join(f"{name} x{values.count(name)}" for name in sorted(set(values)))

    head = ["model", "workload", "grid within 1 %", "boots (median / worst)", "stopped because (5 seeds)",
            "answer vs best (median / worst)", "boots to within 1 % (median / worst)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        lines.append("| " + " | ".join([
            r["model"], r["workload"], f"{r['share_within'] * 100:.0f} %", fmt_boots(r["stop_boots"]),
            reasons(r["stop_reasons"]), pct(r["stop_short"]), fmt_boots(r["stop_hit"]),
        ]) + " |")
    return "\n".join(lines)


def stopping_lines(rows: list[dict[str, Any]]) -> list[str]:
    runs = [(b, h) for r in rows for b, h in zip(r["stop_boots"], r["stop_hit"])]
    row_medians = [statistics.median(r["stop_hit"]) for r in rows]
    misses = sum(h == NEVER for _, h in runs)
    return [
        f"- before (every study runs `--trials`): {BUDGET} boots in every row and seed",
        f"- with the stopping rule: median boots over rows {statistics.median(statistics.median(r['stop_boots']) for r in rows):g}"
        f", over all {len(runs)} runs {statistics.median(b for b, _ in runs):g}, most {max(b for b, _ in runs)}",
        f"- boots to an answer within 1 % of the grid's best (a run that stopped short counts as never): median over "
        f"rows {fmt_boots(row_medians).split(' / ')[0]}, over all runs {fmt_boots([h for _, h in runs]).split(' / ')[0]}"
        f"; runs that stopped short of 1 %: {misses} of {len(runs)}",
    ]


def summary_lines(rows: list[dict[str, Any]]) -> list[str]:
    def count(pred: Callable[[dict[str, Any]], bool]) -> int:
        return sum(1 for r in rows if pred(r))

    n = len(rows)
    lines = [
        f"- rows: {n}; the analytic optimum (trial 1 of ours) already within 1 %: {count(lambda r: r['ours'][0] == 1)}"
        f"; ours within 1 % by trial 2 (analytic or 0.8) in every seed: {count(lambda r: max(r['ours']) <= 2)}",
        f"- grid within 1 % of the best at >= {FLAT * 100:.0f} % of ratios (flat): {count(lambda r: r['share_within'] >= FLAT)}"
        f"; at < 10 % (sharp): {count(lambda r: r['share_within'] < 0.1)}",
    ]
    for name in ("ours", "random", "cold_tpe"):
        meds = [statistics.median(r[name]) for r in rows]
        worst = [max(r[name]) for r in rows]
        never = sum(1 for r in rows for v in r[name] if v == NEVER)
        lines.append(
            f"- {name}: mean over rows of the median trials-to-1 % ({N_TRIALS + 1} where none) {statistics.fmean(min(m, N_TRIALS + 1) for m in meds):.1f}"
            f", worst of all seeds {fmt_trials([max(worst)])}, runs that never got within 1 % in {N_TRIALS}: {never}"
        )
    g = [r["grid05"] for r in rows]
    lines.append(
        f"- grid05: mean trials-to-1 % ({N_TRIALS + 1} where none) {statistics.fmean(min(v, N_TRIALS + 1) for v in g):.1f}, worst {fmt_trials([max(g)])}"
        f", never: {sum(v == NEVER for v in g)}"
    )
    return lines


def write_doc(rows: list[dict[str, Any]], meta: dict[str, Any]) -> None:
    block = "\n".join([
        BEGIN,
        f"_Generated by `python bench/bench_search.py` ({meta['when']}, commit {meta['commit']}, "
        f"{meta['points']} grid points, {meta['simulated']} of them simulated in this run and the rest read from "
        f"`--cache`; {meta['sim_cpu_s'] / 60:.1f} min of simulator CPU in all; this run {meta['wall_s'] / 60:.1f} min wall "
        f"on {meta['jobs']} worker processes). "
        "**All values are SIMULATED** (sim-fast engine, virtual time)._",
        "",
        markdown_table(rows),
        "",
        *summary_lines(rows),
        "",
        f"Rows that are not flat (< {FLAT * 100:.0f} % of the grid within 1 %): each strategy's best after {BUDGET} trials "
        "(`autotune run`'s default `--trials`) against the grid's best, median / worst over seeds:",
        "",
        budget_table(rows),
        "",
        f"The stopping rule (`autotune/study/stopping.py`, as `controller.decide` applies it; ceiling {BUDGET} = "
        "`--trials`' default; noise band = the 1 % floor, since repeats read the same grid value):",
        "",
        stopping_table(rows),
        "",
        *stopping_lines(rows),
        "",
        "TP choices: " + "; ".join(meta["tp_notes"]),
        END,
    ])
    text = DOC.read_text() if DOC.exists() else f"# Search benchmark (SIMULATED)\n\n{BEGIN}\n{END}\n"
    if BEGIN not in text:
        text = text.rstrip() + f"\n\n{BEGIN}\n{END}\n"
    head, rest = text.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    DOC.write_text(head + block + tail)


# ---------------------------------------------------------------------------------------------- main


def bench_one(pool, cache: Cache, model: ModelSpec, tp: int, work_name: str) -> dict[str, Any]:
    gpu = load_gpu(GPU)
    plan = make_plan(model, gpu, workload(work_name), tp)
    low = plan.feasible_low()
    grid = fine_grid(pool, cache, model, tp, work_name, low)
    refused = [r for r, p in grid.items() if p["value"] is None]
    if refused:
        raise RuntimeError(f"{model.name} {work_name}: grid points {refused} refused above the feasible minimum {low}")
    table = Table(list(grid), [p["value"] for p in grid.values()])
    best_i = max(range(len(table.values)), key=lambda i: table.values[i])  # lowest ratio among ties
    first = plan.first_ratios()
    hand = HAND_RULE_MOE if model.is_moe else HAND_RULE_DENSE
    value_at = lambda ratio: table.lookup(ratio) if ratio >= low - 1e-9 else None  # noqa: E731
    return {
        "model": model.name, "workload": work_name, "tp": tp, "moe": model.is_moe, "feasible_low": low,
        "best_ratio": table.ratios[best_i], "best_value": table.best,
        "share_within": sum(table.hit(v) for v in table.values) / len(table.values),
        "analytic": first[0], "analytic_short": table.lookup(first[0]) / table.best - 1,
        "first_ratios": first,
        **strategy_scores(table, "ours", [run_ours(plan, table, s) for s in SEEDS]),
        **strategy_scores(table, "grid05", [coarse_grid(low)[:N_TRIALS]]),
        **strategy_scores(table, "random", [run_random(plan, table, s) for s in SEEDS]),
        **strategy_scores(table, "cold_tpe", [run_cold_tpe(plan, table, s) for s in SEEDS]),
        **stopping_scores(table, [run_stopping(plan, table, s) for s in SEEDS]),
        "hand_ratio": hand,
        "gain_default": fmt_gain(table.best, value_at(DEFAULT_RATIO), DEFAULT_RATIO, low),
        "gain_hand": fmt_gain(table.best, value_at(hand), hand, low),
        "grid": {f"{r:.2f}": v for r, v in zip(table.ratios, table.values)},
        "cpu_s": sum(p.get("cpu_s", 0.0) for p in grid.values()),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="26B-A4B x chat only; prints, does not touch the doc")
    ap.add_argument("--models", help="comma-separated catalog names/aliases (default: the whole catalog)")
    ap.add_argument("--workloads", default=",".join(WORKLOADS), help=f"subset of {','.join(WORKLOADS)}")
    ap.add_argument("--jobs", type=int, default=2, help="worker processes for the grid (at most 2)")
    ap.add_argument("--cache", type=Path, help="JSON file that keeps grid values between runs")
    ap.add_argument("--json", type=Path, help="write every row (with its grid) here")
    ap.add_argument("--no-doc", action="store_true", help="do not rewrite docs/search-benchmark.md's table")
    args = ap.parse_args()
    _quiet()
    jobs = max(1, min(args.jobs, 2))
    if args.quick:
        models, works = [load_model("26B-A4B")], ["chat"]
    else:
        models = [load_model(m) for m in args.models.split(",")] if args.models else list(catalog_specs())
        works = [w for w in args.workloads.split(",") if w]
    write = not (args.quick or args.no_doc or args.models or set(works) != set(WORKLOADS))
    gpu = load_gpu(GPU)
    cache = Cache(args.cache)
    started = time.time()
    print(f"SIMULATED search benchmark on {GPU}: " + ", ".join(f"{w} {WORKLOADS[w]}" for w in works), flush=True)
    rows, tp_notes = [], []
    pool = futures.ProcessPoolExecutor(max_workers=jobs) if jobs > 1 else None
    try:
        for model in models:
            if not model.hybrid_swa:
                print(f"{model.name}: single KV pool, the ratio has no effect; skipped", flush=True)
                continue
            tp, skipped = choose_tp(model, gpu, [workload(w) for w in WORKLOADS])
            note = f"{model.name} tp={tp}" + (f" (skipped {'; '.join(skipped)})" if skipped else "")
            tp_notes.append(note)
            print(note, flush=True)
            for work in works:
                if not rows:
                    print_header()
                t0 = time.time()
                row = bench_one(pool, cache, model, tp, work)
                rows.append(row)
                print_row(row)
                print(f"    {len(row['grid'])} grid points, {row['cpu_s']:.0f} s simulator CPU, {time.time() - t0:.0f} s wall", flush=True)
    finally:
        if pool:
            pool.shutdown()
    wall = time.time() - started
    print()
    for line in summary_lines(rows):
        print(line)
    print(f"\nbest after {BUDGET} trials vs the grid's best, rows that are not flat (median / worst):")
    print(budget_table(rows))
    print(f"\nthe stopping rule (ceiling {BUDGET}):")
    print(stopping_table(rows))
    for line in stopping_lines(rows):
        print(line)
    print(f"total {wall / 60:.1f} min wall", flush=True)
    if args.json:
        finite = [{k: ([None if x == NEVER else x for x in v] if isinstance(v, list) else (None if v == NEVER else v))
                   for k, v in r.items()} for r in rows]
        args.json.write_text(json.dumps(finite, indent=1))
    if write:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
        meta = {"when": time.strftime("%Y-%m-%d"), "commit": commit or "?", "wall_s": wall, "jobs": jobs,
                "points": sum(len(r["grid"]) for r in rows), "simulated": cache.simulated,
                "sim_cpu_s": sum(r["cpu_s"] for r in rows), "tp_notes": tp_notes}
        write_doc(rows, meta)
        print(f"wrote {DOC.relative_to(ROOT)}")


if __name__ == "__main__":
    main()

"""`autotune run --objective capacity`: requests/s per GPU at the SLO for each measured ratio, its gain
over SGLang's default, and the load levels behind it (workers/load_search.py)."""

from __future__ import annotations

from typing import Any, Sequence

from rich.table import Table

from autotune.cli.listing import Column, table_of
from autotune.sglang_facts import DEFAULT_RATIO
from autotune.study.plan import Outcome, StudyPlan, TrialPoint


def _levels_text(levels: Sequence[dict[str, Any]]) -> str:
    """`1x ok, 2x TTFT, 1.5x ok` in the order measured."""
    marks = []
    for level in levels:
        if level["passed"]:
            marks.append(f"{level['multiplier']:g}x ok")
        else:
            why = level.get("why") or ""
            short = "TTFT" if "TTFT" in why else "TPOT" if "TPOT" in why else "failed"
            marks.append(f"{level['multiplier']:g}x {short}")
    return ", ".join(marks)


def capacity_rows(points: Sequence[TrialPoint]) -> list[dict[str, Any]]:
    """One row per ratio (its best complete trial): req/s/GPU at the SLO, gain over the default, levels."""
    best: dict[float, TrialPoint] = {}
    for point in points:
        key = round(point.ratio, 3)
        if point.status == "complete" and (key not in best or (point.value or 0) > (best[key].value or 0)):
            best[key] = point
    default = best.get(round(DEFAULT_RATIO, 3))
    rows = []
    for ratio in sorted(best):
        point = best[ratio]
        passing = [level for level in point.levels if level["passed"]]
        top = max(passing, key=lambda level: level["multiplier"], default=None)
        gain = point.value / default.value - 1 if default and default.value and point.value is not None else None
        rows.append({
            "ratio": ratio, "capacity": point.value, "gain": gain,
            "load": top["multiplier"] if top else None,
            "ttft_p99_ms": top["ttft_p99_ms"] if top else None, "tpot_p99_ms": top["tpot_p99_ms"] if top else None,
            "open_ended": bool(point.levels) and all(level["passed"] for level in point.levels),
            "levels": _levels_text(point.levels),
        })
    return rows


COLUMNS = (
    Column("ratio", "ratio", lambda v: f"{v:.3f}", right=True),
    Column("capacity", "req/s/GPU at SLO", lambda v: f"{v:.3g}", right=True),
    Column("gain", f"vs {DEFAULT_RATIO:g}", lambda v: f"{v:+.1%}", right=True),
    Column("load", "load", lambda v: f"{v:g}x", right=True, missing="none passed"),
    Column("ttft_p99_ms", "TTFT p99 ms", lambda v: f"{v:,.0f}", right=True),
    Column("tpot_p99_ms", "TPOT p99 ms", lambda v: f"{v:.1f}", right=True),
    Column("levels", "levels measured (one boot each ratio)"),
)


def capacity_table(plan: StudyPlan, outcome: Outcome) -> Table:
    slo = plan.objective.slo
    limits = ", ".join(f"{name} {value:g} ms" for name, value in (("TTFT p99", slo and slo.ttft_p99_ms),
                                                                  ("TPOT p99", slo and slo.tpot_p99_ms)) if value)
    rows = capacity_rows(outcome.points)
    for row in rows:
        if row["open_ended"] and row["capacity"] is not None:
            row["levels"] += " (every level passed: at least this)"
    label = " [SIMULATED]" if plan.simulated else ""
    return table_of(rows, COLUMNS, title=f"{plan.workload.name}: capacity at {limits}{label}")

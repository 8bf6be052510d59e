"""A small terminal chart of a study's objective against the ratio: people would rather look than read.

One bar per measured ratio, in ratio order, scaled to the best; SGLang's default and the optimum are
marked, trials stopped early or failed say so instead of pretending to a full measurement.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text

from autotune.study.plan import TrialPoint

BAR_WIDTH = 40
DEFAULT_RATIO_MARK = "SGLang default"
BEST_MARK = "best"


def amount(value: float) -> str:
    """An objective's value: whole numbers for token rates, 3 significant digits below 100 (req/s)."""
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


def ratio_chart(
    title: str,
    points: Sequence[TrialPoint],
    *,
    unit: str,
    default_ratio: float,
    best_ratio: float | None,
    width: int = BAR_WIDTH,
) -> Text:
    """Rows `ratio │bar value marks`, one per distinct ratio (the best measurement of repeats)."""
    by_ratio: dict[float, TrialPoint] = {}
    for point in points:
        key = round(point.ratio, 3)
        kept = by_ratio.get(key)
        # A ratio measured twice (a repeat, a re-run) shows its best full measurement.
        if kept is None or (point.status == "complete" and (point.value or 0) > (kept.value or 0)):
            by_ratio[key] = point
    top = max((p.value for p in by_ratio.values() if p.value), default=0.0)
    out = Text(f"{title} ({unit} by --swa-full-tokens-ratio)\n", style="bold")
    for ratio in sorted(by_ratio):
        point = by_ratio[ratio]
        filled = round(width * point.value / top) if top and point.value else 0
        marks = []
        if best_ratio is not None and abs(ratio - best_ratio) < 5e-4:
            marks.append(BEST_MARK)
        if abs(ratio - default_ratio) < 5e-4:
            marks.append(DEFAULT_RATIO_MARK)
        if point.status != "complete":
            marks.append(point.status)
        if point.cold:
            marks.append("booted cold: reads low")
        style = "green" if BEST_MARK in marks else ("yellow" if DEFAULT_RATIO_MARK in marks else "cyan")
        out.append(f" {ratio:6.3f} │")
        out.append("█" * filled, style=style)
        out.append(" " * (width - filled))
        out.append(f" {amount(point.value):>10}" if point.value is not None else f" {'-':>10}")
        out.append(f"  ◀ {', '.join(marks)}\n" if marks else "\n")
    return out

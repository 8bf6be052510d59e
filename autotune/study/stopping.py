"""When a study knows its optimum: the stopping rule, and the noise band it judges "worse" by.

A study's `--trials` is a ceiling. Once its queued candidates (the `--try` ratios, the analytic
guess, SGLang's default 0.8) are measured, the study stops as soon as its measured points say one of:

- **bracketed**: the best ratio — together with any measured ratios next to it whose values are
  within the noise band of the best (a plateau) — has a measured ratio on each side, at most
  MAX_BRACKET_GAP away, that is worse than the best by more than the band, or reaches the feasible
  bound on that side (nothing lies beyond it). A trial stopped early as clearly lost, too slow, failed
  at its ratio, or over the SLO counts as worse.
- **flat**: at least two ratios are measured and every measured value lies within the band of the
  best: nothing measured so far tells the ratios apart.

Otherwise the sampler proposes the next ratio, up to the ceiling. The rule only reads measured
points, so a resumed study reaches the same verdict from its stored trials.

The band is relative: a value counts as worse than the best when it is below best x (1 - band). It is
the larger of a floor (StudyPlan.noise_floor, 1 % unless asked) and the spread of repeated runs of
one ratio ((max - min) / mean), never a confidence interval: one repeat per ratio is a crude
estimate, and the floor keeps a lucky identical repeat from making every difference "real".
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import fmean
from typing import Iterable, Sequence

BRACKETED = "bracketed"
FLAT = "flat"
CEILING = "ceiling"
RUN_ALL = "ran every trial"
BOUND_TOL = 1e-3  # a ratio this close to a feasible bound is at the bound (first_ratios rounds to 3 decimals)
# A worse neighbour brackets the best only this close to it (ratio units): a sharp peak can sit between the best and a
# worse point far away, higher than either (the simulated 26B-A4B chat surface: 0.8 measured best, 1.0 and 0.5 worse,
# its peak at 0.73, 8 % above 0.8).
MAX_BRACKET_GAP = 0.25


@dataclass(frozen=True)
class Point:
    """Everything measured at one ratio."""

    ratio: float
    values: tuple[float, ...] = ()  # the objective of each complete run at this ratio (repeats included)
    lost: bool = False  # clearly worse: stopped early, too slow, failed at this ratio, or over the SLO

    def __post_init__(self) -> None:
        if not self.lost and not self.values:
            raise ValueError(f"ratio {self.ratio}: a point needs a measured value or lost=True")

    @property
    def value(self) -> float:
        return fmean(self.values) if self.values and not self.lost else float("-inf")

    @property
    def spread(self) -> float | None:
        """(max - min) / mean of the repeated runs; None with fewer than two (or a zero mean)."""
        if self.lost or len(self.values) < 2 or fmean(self.values) <= 0:
            return None
        return (max(self.values) - min(self.values)) / fmean(self.values)


def points_from(runs: Iterable[tuple[float, float | None]]) -> list[Point]:
    """Points from (ratio, value) runs, value None for a lost run. A ratio measured at all is not
    lost because one of its runs was (a retry that completed outranks the run that failed)."""
    by_ratio: dict[float, tuple[float, list[float | None]]] = {}  # rounded: (the first exact ratio, values)
    for ratio, value in runs:
        by_ratio.setdefault(round(float(ratio), 9), (float(ratio), []))[1].append(value)
    points = []
    for _, (ratio, values) in sorted(by_ratio.items()):
        measured = tuple(v for v in values if v is not None)
        points.append(Point(ratio, measured, lost=not measured))
    return points


@dataclass(frozen=True)
class NoiseBand:
    """How far apart two values must be before one counts as better (a share of the best)."""

    share: float
    floor: float
    spreads: tuple[tuple[float, float], ...] = ()  # (ratio, measured spread) of each repeated ratio

    @property
    def measured(self) -> float | None:
        return max((s for _, s in self.spreads), default=None)

    def describe(self) -> str:
        if not self.spreads:
            return f"±{self.share:.1%} (the floor; no ratio measured twice)"
        runs = ", ".join(f"{ratio:.3f}: {spread:.2%}" for ratio, spread in self.spreads)
        source = "the floor" if self.share == self.floor and (self.measured or 0) < self.floor else "measured"
        return f"±{self.share:.1%} ({source}; repeat spread {runs}; floor {self.floor:.1%})"

    def to_dict(self) -> dict[str, object]:
        return {"share": self.share, "floor": self.floor, "spreads": [list(s) for s in self.spreads],
                "describe": self.describe()}


def check_noise_floor(floor: float) -> float:
    if not 0 <= floor < 0.5:
        raise ValueError(f"--noise-floor {floor!r}: give a share of the best value in [0, 0.5), e.g. 0.01 for 1 %")
    return floor


def noise_band(points: Sequence[Point], floor: float) -> NoiseBand:
    check_noise_floor(floor)
    spreads = tuple((p.ratio, s) for p in points if (s := p.spread) is not None)
    return NoiseBand(max([floor, *(s for _, s in spreads)]), floor, spreads)


@dataclass(frozen=True)
class Verdict:
    stop: bool
    reason: str  # BRACKETED | FLAT when stop; "" while the search goes on
    detail: str  # what the points say, for people
    best_ratio: float | None = None

    def describe(self) -> str:
        return f"{self.reason}: {self.detail}" if self.reason else self.detail


def judge(points: Sequence[Point], band: NoiseBand, low: float, high: float = 1.0,
          max_gap: float = MAX_BRACKET_GAP) -> Verdict:
    """The stopping rule on measured points (see the module docstring); `low`/`high`: the feasible bounds."""
    measured = [p for p in points if not p.lost]
    if not measured:
        return Verdict(False, "", "no ratio measured yet")
    best = max(measured, key=lambda p: (p.value, -p.ratio))
    threshold = best.value * (1 - band.share)
    same = [p for p in measured if p.value >= threshold]
    ordered = sorted(points, key=lambda p: p.ratio)
    if len(ordered) >= 2 and len(same) == len(ordered):
        return Verdict(
            True, FLAT,
            f"all {len(ordered)} measured ratios ({ordered[0].ratio:.3f}-{ordered[-1].ratio:.3f}) lie within "
            f"{band.share:.1%} of the best ({best.ratio:.3f})", best.ratio,
        )
    i = ordered.index(best)
    lo = hi = i
    while lo > 0 and not ordered[lo - 1].lost and ordered[lo - 1].value >= threshold:
        lo -= 1
    while hi < len(ordered) - 1 and not ordered[hi + 1].lost and ordered[hi + 1].value >= threshold:
        hi += 1
    left = ordered[lo - 1] if lo > 0 else None
    right = ordered[hi + 1] if hi < len(ordered) - 1 else None
    at_low, at_high = ordered[lo].ratio <= low + BOUND_TOL, ordered[hi].ratio >= high - BOUND_TOL
    plateau = f" (with {ordered[lo].ratio:.3f}-{ordered[hi].ratio:.3f} within the band)" if hi > lo else ""

    wide: list[str] = []

    def side(neighbour: Point | None, at_bound: bool, bound: float, edge: float) -> str | None:
        if neighbour is not None:
            if abs(neighbour.ratio - edge) > max_gap + BOUND_TOL:
                wide.append(f"{neighbour.ratio:.3f} is {abs(neighbour.ratio - edge):.3f} away, a peak may lie between")
                return None
            drop = "clearly lost" if neighbour.lost else f"{neighbour.value / best.value - 1:+.1%}"
            return f"{neighbour.ratio:.3f} ({drop})"
        return f"the feasible bound {bound:.3f}" if at_bound else None

    below, above = side(left, at_low, low, ordered[lo].ratio), side(right, at_high, high, ordered[hi].ratio)
    if below and above:
        return Verdict(
            True, BRACKETED,
            f"best {best.ratio:.3f}{plateau}; worse beyond the ±{band.share:.1%} band on both sides: {below} and {above}",
            best.ratio,
        )
    missing = " and ".join(f"nothing worse measured within {max_gap:g} {where} {edge:.3f}" for where, edge, ok in
                           (("below", ordered[lo].ratio, below), ("above", ordered[hi].ratio, above)) if not ok)
    if wide:
        missing += f" ({'; '.join(wide)})"
    return Verdict(False, "", f"best {best.ratio:.3f}{plateau}; not bracketed: {missing}", best.ratio)

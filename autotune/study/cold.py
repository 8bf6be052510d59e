"""Trials whose server booted on a cold machine: their values are biased low, not noisy.

A machine's first SGLang boots compile kernels (sgl-kernel's and FlashInfer's JIT, Triton), and some of
that compilation happens at first use, inside the trial's replay. Measured on 2 x H200 (docs/real-gpu/ray.md):
the first two trials booted in 129 s against 44 s for every later one, and replayed in 7.4 s against 5.8 s at
the same decode rate, so on a flat workload their ratios measured 22 % below the others. Repeated runs cannot
tell that from noise (it would only widen the band), so the study treats it as what it is:

- a trial is **cold** when its real server booted in more than `COLD_BOOT_FACTOR` times the study's fastest
  boot (a warm boot on these machines is 44-67 s, a cold one 129-176 s; simulated servers are never cold);
- a cold run is **superseded** once its ratio has a warm complete run: it leaves the points the stopping rule
  judges and the means the report shows, and stays in the study as measured;
- as soon as a warm boot shows a run was cold, a ratio measured only cold is **re-measured** once
  (`ENQUEUED_COLD`), before the stopping rule judges again.

Carrying the compile caches (`node.sh caches load`) keeps a fresh machine's first boots warm, and then none of
this costs a trial.
"""

from __future__ import annotations

from typing import Iterable

import optuna
from optuna.trial import TrialState

from autotune.sglang_facts import RATIO
from autotune.study.trial_attrs import ATTR_ENQUEUED_AS, ATTR_RESULT, ENQUEUED_COLD

COLD_BOOT_FACTOR = 2.0


def boot_seconds(trial: optuna.trial.FrozenTrial) -> float | None:
    """How long a real server took to boot for `trial` (None: simulated, or it never booted)."""
    result = trial.user_attrs.get(ATTR_RESULT) or {}
    boot = result.get("boot_s")
    if result.get("simulated", True) or boot is None or boot <= 0:
        return None
    return float(boot)


def cold_trials(trials: Iterable[optuna.trial.FrozenTrial]) -> set[int]:
    """The numbers of the trials whose server booted cold (needs a warm boot to compare with)."""
    boots = {t.number: b for t in trials if (b := boot_seconds(t)) is not None}
    if len(boots) < 2:
        return set()
    fastest = min(boots.values())
    return {number for number, boot in boots.items() if boot > COLD_BOOT_FACTOR * fastest}


def _ratio(trial: optuna.trial.FrozenTrial) -> float | None:
    return round(float(trial.params[RATIO]), 9) if set(trial.params) == {RATIO} else None


def superseded(trials: Iterable[optuna.trial.FrozenTrial]) -> set[int]:
    """Cold complete runs whose ratio also has a warm complete run."""
    trials = list(trials)
    cold = cold_trials(trials)
    complete = [t for t in trials if t.state == TrialState.COMPLETE and _ratio(t) is not None]
    warm_ratios = {_ratio(t) for t in complete if t.number not in cold}
    return {t.number for t in complete if t.number in cold and _ratio(t) in warm_ratios}


def to_remeasure(trials: Iterable[optuna.trial.FrozenTrial]) -> list[float]:
    """Ratios whose complete runs were all cold and that no re-measure has been queued for yet."""
    trials = list(trials)
    cold = cold_trials(trials)
    asked = {round(float(r), 9) for t in trials if t.user_attrs.get(ATTR_ENQUEUED_AS) == ENQUEUED_COLD
             and (r := {**t.system_attrs.get("fixed_params", {}), **t.params}.get(RATIO)) is not None}
    by_ratio: dict[float, list[bool]] = {}
    for trial in trials:
        if trial.state == TrialState.COMPLETE and (ratio := _ratio(trial)) is not None:
            by_ratio.setdefault(ratio, []).append(trial.number in cold)
    return sorted(ratio for ratio, colds in by_ratio.items() if all(colds) and ratio not in asked)

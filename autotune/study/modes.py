"""Memory modes as candidates beside the ratio: `autotune run --modes static,unified`.

The ratio's study (autotune/study/controller.py) searches the static split. A unified-memory
candidate has no ratio to search, so it is measured in a sibling Optuna study of its own,
`<study>::unified`, on the same workload, server flags and time budget, plus
`--enable-unified-memory` (added here, after the plan's refusal of that flag passed by hand; the
arena then follows SGLang's default ratio for its nominal caps, as a user switching it on would
run it). Its trials carry the user attribute `memory_mode: unified`, its study `base_study`. A crash
or refusal is a recorded outcome with the server's own words (the trial's failure message). The
report, the dashboard and `autotune export` compare it with the static study's best.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable

import optuna
from optuna.trial import TrialState

from autotune.pools.modes import STATIC, UNIFIED
from autotune.study.plan import StudyPlan

MODES = (STATIC, UNIFIED)
ATTR_MEMORY_MODE = "memory_mode"
ATTR_BASE_STUDY = "base_study"
ATTR_RESULT = "result"
UNIFIED_FLAG = "enable-unified-memory"
DEFAULT_UNIFIED_TRIALS = 1


def parse_modes(text: str | None) -> tuple[str, ...]:
    modes = tuple(dict.fromkeys(m.strip() for m in (text or STATIC).split(",") if m.strip()))
    unknown = [m for m in modes if m not in MODES]
    if unknown or not modes:
        raise ValueError(f"--modes {text!r}: choose from {', '.join(MODES)} (e.g. --modes static,unified)")
    return modes


def mode_study_name(base: str, mode: str) -> str:
    return f"{base}::{mode}"


@dataclass(frozen=True)
class ModeOutcome:
    """What a memory mode's trials measured on one workload."""

    mode: str
    study_name: str
    value: float | None  # the objective's first value of its best trial; None when none completed
    trials: int
    failure: str | None  # the last failed trial's message (the server's words), when none completed
    trial_number: int | None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _spec(plan: StudyPlan, trial: optuna.trial.Trial):
    from autotune.study.controller import _trial_spec

    spec = _trial_spec(plan, trial, {})
    flags = {**spec.server.flags, UNIFIED_FLAG: True}
    flags.pop("swa-full-tokens-ratio", None)
    server = dataclasses.replace(spec.server, flags=flags)
    return dataclasses.replace(spec, server=server, trial_id=f"{spec.trial_id}-unified", early_stop=None)


def _outcome(study: optuna.Study, mode: str) -> ModeOutcome:
    finished = [t for t in study.get_trials(deepcopy=False) if t.state.is_finished()]
    done = [t for t in finished if t.state == TrialState.COMPLETE and t.values]
    best = max(done, key=lambda t: t.values[0]) if done else None
    failed = [t for t in finished if t.state == TrialState.FAIL]
    failure = None
    # A crash counts as the worst value (objective.py) and a refusal as no value: either way its
    # words are kept, from the best trial's result, else the last failed trial's.
    shown = best if best is not None else (failed[-1] if failed else None)
    result = (shown.user_attrs.get(ATTR_RESULT) or {}) if shown is not None else {}
    if result.get("failure"):
        failure = f"{result['failure']}: {result.get('message', '')}"
    return ModeOutcome(mode=mode, study_name=study.study_name, value=best.values[0] if best else None,
                       trials=len(finished), failure=failure, trial_number=best.number if best else None)


def run_mode_trials(
    plan: StudyPlan,
    storage: Any,
    runner: Any,
    *,
    mode: str = UNIFIED,
    n_trials: int = DEFAULT_UNIFIED_TRIALS,
    on_event: Callable[[str, dict[str, Any]], None] = lambda kind, data: None,
) -> ModeOutcome:
    """Measure `mode` on the plan's workload until `n_trials` trials have finished (resumable)."""
    study = optuna.create_study(study_name=mode_study_name(plan.name, mode), storage=storage,
                                directions=plan.objective.directions, load_if_exists=True)
    study.set_user_attr(ATTR_MEMORY_MODE, mode)
    study.set_user_attr(ATTR_BASE_STUDY, plan.name)
    study.set_user_attr("simulated", plan.simulated)
    while sum(t.state.is_finished() for t in study.get_trials(deepcopy=False)) < n_trials:
        trial = study.ask()
        trial.set_user_attr(ATTR_MEMORY_MODE, mode)
        on_event("started", {"trial": trial.number, "mode": mode})
        runner.submit(_spec(plan, trial))
        result = None
        while result is None:
            result = runner.wait_one(5.0)
        data = result.to_dict()
        data["samples"] = data["samples"][-600:]
        trial.set_user_attr(ATTR_RESULT, data)
        trial.set_user_attr("simulated", result.simulated)
        values = plan.objective.values(result)
        if values is None:
            study.tell(trial, state=TrialState.FAIL)
            what = f"failed ({result.failure.value if result.failure else 'no value'}): {result.message}"
        else:
            study.tell(trial, values)
            what = f"{values[0]:,.0f} {plan.objective.labels[0]}"
        on_event("finished", {"trial": trial.number, "mode": mode, "what": what})
    return _outcome(study, mode)


def mode_outcome(storage_url: str, base_study: str, mode: str = UNIFIED) -> ModeOutcome | None:
    """A mode's stored outcome beside the static study `base_study`, or None when it was not measured."""
    try:
        study = optuna.load_study(study_name=mode_study_name(base_study, mode), storage=storage_url)
    except KeyError:
        return None
    return _outcome(study, mode)


def winner(static_value: float | None, static_ratio: float | None, unified: ModeOutcome | None) -> dict[str, Any]:
    """Which candidate won on the objective's first value (higher is better), with the evidence."""
    evidence: dict[str, Any] = {"static": {"ratio": static_ratio, "value": static_value}}
    if unified is not None:
        evidence[UNIFIED] = {"value": unified.value, "study": unified.study_name, "trial": unified.trial_number,
                             "failure": unified.failure}
    wins = unified is not None and unified.value is not None and (static_value is None or unified.value > static_value)
    return {"mode": UNIFIED if wins else STATIC, "evidence": evidence}

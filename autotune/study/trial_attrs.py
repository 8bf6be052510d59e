"""What the study loop stores on each Optuna trial, and the state a result gives a trial.

Everything that reads trials back (the tuner's metrics, the dashboard, the report, the fidelity
bench, the tests) takes the attribute names and the state rule from here, so a reader and the
controller (autotune/study/controller.py) can never disagree on them.
"""

from __future__ import annotations

from typing import Sequence

from optuna.trial import TrialState

# Trial user attrs.
ATTR_RESULT = "result"  # TrialResult.to_dict() without the per-request arrays (samples trimmed)
ATTR_SIMULATED = "simulated"  # True when the result comes from the simulator, not SGLang on a GPU
ATTR_FINAL = "final"  # True once the trial counts towards --trials
ATTR_OWNER = "owner"  # host:pid of the tuner that ran it
ATTR_POOL_CHECK = "pool_check"  # the booted layout against the pool model (autotune/pools/check.py)
ATTR_CONSTRAINTS = "constraints"  # SLO constraint values, <= 0 where the SLO holds
ATTR_ENQUEUED_AS = "enqueued_as"  # why it was queued: analytic optimum, SGLang default, --try
ATTR_RETRY_OF = "retry_of"  # the number of the trial it re-runs (that one measured nothing)

# Why a repeat run was queued (its ATTR_ENQUEUED_AS): a second measurement of a ratio for the noise band.
ENQUEUED_REPEAT = "repeat (noise band)"
# A ratio measured only on a cold machine, measured again (autotune/study/cold.py).
ENQUEUED_COLD = "re-measure (its first run booted cold)"

# Study user attrs the loop keeps up to date (autotune/study/stopping.py).
STUDY_NOISE_BAND = "noise_band"  # NoiseBand.to_dict()
STUDY_STOPPED_BECAUSE = "stopped_because"  # the stopping rule's verdict when the loop ended


def told_state(values: Sequence[float] | None, stopped_early: bool) -> TrialState:
    """The state a result is told to Optuna with: FAIL without objective values; PRUNED when it
    was stopped early with one objective (what it measured becomes its last intermediate value);
    else COMPLETE."""
    if values is None:
        return TrialState.FAIL
    if stopped_early and len(values) == 1:
        return TrialState.PRUNED
    return TrialState.COMPLETE

"""One study: Optuna's ask-and-tell over trials that run elsewhere, persisted, resumable.

One study per (model, GPU, workload, server version) in Optuna's RDB storage. The first trials
are the capacity model's analytic optimum and SGLang's default 0.8 (the baseline every gain is
measured against). Trials run `parallel` at a time on a TrialRunner. A tuner that dies leaves its
running trials to Optuna's heartbeat: once stale they are failed and `RetryHeartbeatStaleTrialCallback`
enqueues them again, so a resumed study neither loses nor repeats finished trials.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable

import optuna
from optuna.storages import RDBStorage, fail_stale_trials
from optuna.trial import TrialState

from autotune.hardware.profile import GIB
from autotune.pools.check import PoolCheck, check_layout
from autotune.measure.serving_metrics import SLO
from autotune.study.objective import RETRY, Objective
from autotune.sglang_facts import DEFAULT_RATIO, RATIO, to_flag
from autotune.study.plan import ASKED_FOR, Outcome, StudyPlan, TrialPoint
from autotune.study.cold import cold_trials, superseded, to_remeasure
from autotune.study.storage import TrialHeartbeat, check_heartbeat, owner, owner_dead
from autotune.study.stopping import CEILING, RUN_ALL, NoiseBand, Point, Verdict, judge, noise_band, points_from
from autotune.study.trial_attrs import (
    ATTR_CONSTRAINTS,
    ATTR_ENQUEUED_AS,
    ATTR_FINAL,
    ATTR_OWNER,
    ATTR_POOL_CHECK,
    ATTR_RESULT,
    ATTR_RETRY_OF,
    ATTR_SIMULATED,
    ENQUEUED_COLD,
    ENQUEUED_REPEAT,
    STUDY_NOISE_BAND,
    STUDY_STOPPED_BECAUSE,
    told_state,
)
from workers.failures import FailureKind
from autotune.study.trial_runner import TrialRunner
from autotune.workloads.spec import check_same_workload
from workers.early_stop import EarlyStop
from workers.spec import COMPILE_CACHES, ServerSpec
from workers.trial import TrialResult, TrialSpec

MAX_REPEATS = 2  # extra runs for the noise band per study: SGLang's default and the best, once each


def sampler_for(plan: StudyPlan) -> optuna.samplers.BaseSampler:
    """The study's sampler, seeded by the plan (bench/bench_search.py runs it with other seeds)."""
    # SLO limits reach the samplers as the trials' constraints (Trial.set_constraint in _tell).
    if plan.objective.name == "pareto":
        return optuna.samplers.NSGAIISampler(seed=plan.seed)
    return optuna.samplers.TPESampler(seed=plan.seed, n_startup_trials=4, multivariate=True)


def open_study(plan: StudyPlan, storage: RDBStorage) -> optuna.Study:
    study = optuna.create_study(
        study_name=plan.name, storage=storage, directions=plan.objective.directions,
        sampler=sampler_for(plan), load_if_exists=True,
    )
    if "workload_spec" in study.user_attrs:  # resumed: the same traffic, or a clear refusal (names key studies)
        check_same_workload(study.user_attrs["workload_spec"], plan.workload, plan.name)
    if not study.user_attrs:
        for key, value in {
            "model": plan.model.name, "model_features": plan.model.features(), "gpu": plan.gpu.name,
            "workload": plan.workload.name, "workload_spec": plan.workload.to_dict(), "backend": plan.backend,
            "server_version": plan.server_version, "simulated": plan.simulated, "objective": plan.objective.name,
            "objective_labels": plan.objective.labels, "search_space": plan.space.name,
            "server_flags": plan.server_flags, "extra_args": list(plan.extra_args),
            "slo": plan.objective.slo.__dict__ if plan.objective.slo else None,
            "model_notes": list(plan.model.notes),  # e.g. what dummy weights cannot tell
        }.items():
            study.set_user_attr(key, value)
        # Optuna runs waiting trials in the order they were queued: the user's own candidates first.
        for ratio, why in plan.candidates():
            _enqueue_once(study, ratio, why)
    return study


def _enqueue_once(study: optuna.Study, ratio: float, why: str) -> bool:
    """Queue `ratio` unless a trial already measured it in full or one is waiting or running to."""
    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.WAITING, TrialState.RUNNING))
    # A waiting trial has no params yet: enqueue_trial keeps them in system_attrs["fixed_params"].
    planned = [t.params or t.system_attrs.get("fixed_params", {}) for t in trials]
    if any(abs(float(p.get(RATIO, -1)) - ratio) < 1e-9 and len(p) == 1 for p in planned):
        return False
    study.enqueue_trial({RATIO: ratio}, user_attrs={ATTR_ENQUEUED_AS: why})
    return True


def _enqueue_tries(study: optuna.Study, ratios: tuple[float, ...]) -> None:
    """Ratios the user asked to measure (`--try`). A resumed study asked again does not run them twice."""
    for ratio in ratios:
        _enqueue_once(study, ratio, ASKED_FOR)


def _trials_needed(study: optuna.Study, plan: StudyPlan) -> int:
    """--trials, grown where the queued candidates (the user's --try ratios, the analytic guess,
    SGLang's default, re-runs of interrupted trials) would not all fit in it: each is measured."""
    waiting = len(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))
    return max(plan.n_trials, len(_finished(study)) + waiting)


def _waiting(study: optuna.Study) -> bool:
    return bool(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))


def _finished(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """Trials that count towards --trials: told by a tuner (state finished, marked final), and not
    a trial Optuna's heartbeat expired (a tuner died around it; its retry counts instead)."""
    trials = study.get_trials(deepcopy=False)
    expired = {t.system_attrs.get("failed_trial") for t in trials} - {None}
    return [t for t in trials if t.state.is_finished() and t.user_attrs.get(ATTR_FINAL) and t.number not in expired]


def _reclaim_orphans(study: optuna.Study, plan: StudyPlan, notify: Callable[[str], None]) -> None:
    """Trials a dead tuner on this host left RUNNING: wait for their heartbeat to go stale, then
    let Optuna fail them and its retry callback enqueue them again."""
    orphans = [
        t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)) if owner_dead(t.user_attrs.get(ATTR_OWNER))
    ]
    for trial in orphans:
        # A tuner killed while recording a result may have marked it final before telling it.
        optuna.trial.Trial(study, trial._trial_id).set_user_attr(ATTR_FINAL, False)
    if orphans:
        notify(
            f"{len(orphans)} trial(s) were left running by a tuner that died; waiting up to {plan.grace_s} s "
            "for Optuna's heartbeat to expire them, then they run again"
        )
        deadline = time.monotonic() + plan.grace_s + plan.heartbeat_s
        while time.monotonic() < deadline:
            fail_stale_trials(study)
            if not study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                break
            time.sleep(1.0)
    fail_stale_trials(study)


def _trial_spec(plan: StudyPlan, trial: optuna.trial.Trial, params: dict[str, Any]) -> TrialSpec:
    flags = dict(plan.server_flags)
    flags.update({to_flag(name): value for name, value in params.items()})
    return TrialSpec(
        trial_id=f"{plan.model.name}-{plan.workload.name}-t{trial.number}",
        server=ServerSpec(
            backend="sglang" if plan.backend == "sglang" else "sim",
            model_path=plan.model_path, flags=flags,
            sim_flags=plan.sim_flags if plan.simulated else {}, extra_args=plan.extra_args,
            env_defaults=COMPILE_CACHES,
        ),
        workload=plan.workload,
        slo=plan.objective.slo,
        log_dir=plan.log_dir,
        hang_timeout_s=plan.hang_timeout_s,
        boot_timeout_s=plan.boot_timeout_s,
        # SGLang's default is the baseline of every gain: it always runs to the end (within its
        # time budget: no trial grinds).
        # A load search judges each level by the SLO itself: no trial-wide early stop.
        early_stop=EarlyStop() if plan.early_stop and not _is_default(params) and plan.load_search() is None else None,
        time_budget_s=plan.trial_wall_budget_s,  # per load level under a load search
        load_search=plan.load_search(),
        prefill_warmup=None if plan.warm_up else (),
    )


def _is_default(params: dict[str, Any]) -> bool:
    return abs(float(params.get(RATIO, -1)) - DEFAULT_RATIO) < 1e-9 and len(params) == 1


def _stored_result(result: TrialResult) -> dict[str, Any]:
    data = result.to_dict()
    data["samples"] = data["samples"][-600:]  # ten minutes of 1 s scrapes is plenty for plots
    return data


def _tell(study: optuna.Study, plan: StudyPlan, trial: optuna.trial.Trial, result: TrialResult) -> str:
    """Record a result; returns what happened to the trial (for progress lines)."""
    trial.set_user_attr(ATTR_RESULT, _stored_result(result))
    trial.set_user_attr(ATTR_SIMULATED, result.simulated)
    check = pool_check(plan, trial.params, result)
    if check is not None:
        trial.set_user_attr(ATTR_POOL_CHECK, check.to_dict())
    mismatch = f" [{check.describe()}]" if check is not None and check.matches is False else ""
    if result.server_memory is not None and (stated := result.server_memory.disagreements()):
        mismatch += f" [THE SERVER STATES DIFFERENT LAYOUTS: {'; '.join(stated)}]"
    return _tell_values(study, plan, trial, result) + mismatch


def pool_check(plan: StudyPlan, params: dict[str, Any], result: TrialResult) -> PoolCheck | None:
    """The booted layout against the pool model (None when the server never stated one)."""
    memory = result.server_memory
    layout = memory.layout if memory else None
    if layout is None or layout[1] is None or RATIO not in params:
        return None
    return check_layout(
        plan.geometry(), float(params[RATIO]), plan.page_size, layout[0], layout[1],
        memory.kvcache_gib, planned_budget_bytes=plan.budget_bytes,
    )


BUDGET_NOTE_SHARE = 0.05  # say so when the server's KV budget differs from the plan's by more


def budget_note(plan: StudyPlan, check: dict[str, Any] | None) -> str | None:
    """A note when the server's KV budget is far from the plan's estimate: the first trials' analytic
    guess and the search's lower bound came from the estimate (the trials themselves do not)."""
    if not check or check.get("budget_error_gib") is None or not check.get("kvcache_gib"):
        return None
    error, real = check["budget_error_gib"], check["kvcache_gib"]
    if abs(error) <= BUDGET_NOTE_SHARE * real:
        return None
    return (
        f"the server's KV budget is {real:.3f} GiB, the plan estimated {real + error:.3f} GiB ({error:+.3f} GiB): "
        f"the first trial's analytic ratio used the estimate. The trials measure the real pools; the gap is the "
        f"weight or runtime memory estimate for {plan.model.name} on {plan.gpu.name}."
    )


def with_server_budget(plan: StudyPlan, check: dict[str, Any]) -> tuple[StudyPlan, str]:
    """The plan re-based on the KV budget the server reported, and what that did to the search's bounds."""
    rebased = dataclasses.replace(plan, budget_bytes=round(float(check["kvcache_gib"]) * GIB))
    try:
        low = rebased.feasible_low()
    except ValueError:
        return plan, "the search keeps its bounds (the server's budget leaves no ratio to search)"
    return rebased, f"the search's bounds now come from the server's budget: feasible ratios [{low:.3f}, 1.0]"


def _tell_values(study: optuna.Study, plan: StudyPlan, trial: optuna.trial.Trial, result: TrialResult) -> str:
    values = plan.objective.values(result)
    state = told_state(values, result.stopped_early)
    if values is None:
        final = result.failure not in RETRY
        trial.set_user_attr(ATTR_FINAL, final)
        study.tell(trial, state=state)
        if not final:  # no information: run the same parameters again
            study.enqueue_trial(trial.params, user_attrs={ATTR_RETRY_OF: trial.number})
        return f"failed ({result.failure.value}{'' if final else ', will run again'}): {result.message}"
    constraints = plan.objective.constraints(result)
    trial.set_user_attr(ATTR_CONSTRAINTS, constraints)
    for name, value in zip(plan.objective.constraint_names, constraints):
        trial.set_constraint(name, value)
    trial.set_user_attr(ATTR_FINAL, True)
    if state == TrialState.PRUNED:
        # Pruned, with what it measured before it was stopped as its last intermediate value.
        trial.report(values[0], step=result.summary.completed if result.summary else 0)
        study.tell(trial, state=state)
        return result.message
    study.tell(trial, values)
    if result.failure:
        return f"{result.failure.value}: {result.message}"
    return f"ok: {result.message}" if result.load_search is not None else "ok"  # what the load search found


def run_study(
    plan: StudyPlan,
    storage: RDBStorage,
    runner: TrialRunner,
    *,
    on_event: Callable[[str, dict[str, Any]], None] = lambda kind, data: None,
) -> Outcome:
    """Run until the stopping rule says the optimum is known (autotune/study/stopping.py) or
    `plan.n_trials` trials have finished (across restarts), then report."""
    check_heartbeat(plan, storage)
    study = open_study(plan, storage)
    _reclaim_orphans(study, plan, lambda message: on_event("note", {"message": message}))
    _enqueue_tries(study, plan.try_ratios)
    target = _trials_needed(study, plan)
    if target > plan.n_trials:
        queued = ", ".join(
            f"{float(t.system_attrs.get('fixed_params', {}).get(RATIO, float('nan'))):.3f} ({t.user_attrs.get(ATTR_ENQUEUED_AS, 're-run')})"
            for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
        )
        on_event("note", {"message": f"{plan.workload.name}: --trials {plan.n_trials} grown to {target} to measure every "
                                     f"queued candidate: {queued}"})
    distributions = plan.space.distributions(plan.feasible_low())
    heartbeat = TrialHeartbeat(storage, plan.heartbeat_s)
    heartbeat.start()
    in_flight: dict[str, optuna.trial.Trial] = {}
    announced: set[str] = set()
    budget_noted = False
    try:
        while True:
            finished = len(_finished(study))
            on_event("progress", {"finished": finished, "total": target, "running": len(in_flight),
                                  "outcome": outcome_of(study, plan)})
            while finished + len(in_flight) < target and (
                len(in_flight) < runner.capacity
                # A queued candidate is known before the running trial ends: its server may boot ahead.
                or (len(in_flight) < runner.capacity + runner.lookahead and _waiting(study))
            ):
                if not _waiting(study) and plan.stop_when_known and rule_blocked(plan) is None:
                    if any(t.user_attrs.get(ATTR_ENQUEUED_AS) or ATTR_RETRY_OF in t.user_attrs for t in in_flight.values()):
                        break  # judge once every queued candidate is measured
                    if decide(study, plan, room=target - finished - len(in_flight)) is not None:
                        break  # the optimum is known: nothing more to ask (the trials in flight finish)
                trial = study.ask(distributions)
                trial.set_user_attr(ATTR_OWNER, owner())
                heartbeat.add(trial._trial_id)
                spec = _trial_spec(plan, trial, trial.params)
                ahead = len(in_flight) >= runner.capacity  # its server boots while a running trial drains
                in_flight[spec.trial_id] = trial
                runner.submit(spec)
                on_event("started", {"trial": trial.number, "params": trial.params, "why": trial.user_attrs.get(ATTR_ENQUEUED_AS),
                                     "ahead": ahead})
            if not in_flight:
                break
            result = runner.wait_one(timeout_s=1.0)
            if result is None:
                for server in runner.servers():  # booted servers, for service discovery
                    if server["trial_id"] in in_flight and server["trial_id"] not in announced:
                        announced.add(server["trial_id"])
                        on_event("server", {"trial": in_flight[server["trial_id"]].number, **server})
                continue
            announced.discard(result.trial_id)
            trial = in_flight.pop(result.trial_id)
            heartbeat.remove(trial._trial_id)
            what = _tell(study, plan, trial, result)
            on_event("finished", {"trial": trial.number, "params": trial.params, "result": result, "what": what})
            check = trial.user_attrs.get(ATTR_POOL_CHECK)
            if not budget_noted and (note := budget_note(plan, check)):
                budget_noted = True
                plan, rebased = with_server_budget(plan, check)
                distributions = plan.space.distributions(plan.feasible_low())
                on_event("note", {"message": f"{note} {rebased}."})
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM (cli/run.py raises it as one)
        _requeue_interrupted(study, list(in_flight.values()))
        raise
    finally:
        heartbeat.stopped.set()
    return finish(study, plan)


def _requeue_interrupted(study: optuna.Study, trials: list[optuna.trial.Trial]) -> None:
    """Trials stopped by an interrupt measured nothing: failed, not counted, and queued to run again
    first thing on resume. Should the database be unreachable now, they stay RUNNING and the
    heartbeat expires them later instead."""
    for trial in trials:
        try:
            trial.set_user_attr(ATTR_FINAL, False)
            study.tell(trial, state=TrialState.FAIL)
            study.enqueue_trial(trial.params, user_attrs={ATTR_RETRY_OF: trial.number, ATTR_ENQUEUED_AS: "interrupted, run again"})
        except Exception:  # noqa: BLE001 - best effort on the way out; the heartbeat is the fallback
            return


def outcome_of(study: optuna.Study, plan: StudyPlan) -> Outcome:
    """The best ratio against SGLang's default; repeated runs of one ratio count as their mean."""
    finished = _finished(study)  # read once: the loop asks for the outcome every second
    cold = cold_trials(finished)
    stale = superseded(finished)  # cold runs whose ratio was measured warm too: biased, left out
    done = [t for t in finished if t.state == TrialState.COMPLETE and t.number not in stale]
    failed = [t for t in finished if t.state == TrialState.FAIL]
    pruned = [t for t in finished if t.state == TrialState.PRUNED]
    feasible = [t for t in done if all(c <= 0 for c in t.user_attrs.get(ATTR_CONSTRAINTS, []))]
    default = [t for t in done if _is_default(t.params)]
    if feasible:
        best = max(feasible, key=lambda t: (_mean_first(feasible, t), t.values[0], -(t.values[1] if len(t.values) > 1 else 0)))
        best_values = [_mean_first(feasible, best), *best.values[1:]]
    else:
        best, best_values = None, None
    default_values = [_mean_first(default, default[0]), *default[0].values[1:]] if default else None
    stored = study.user_attrs
    return Outcome(
        study_name=study.study_name,
        best_params=dict(best.params) if best else None,
        best_values=best_values,
        best_result=best.user_attrs.get(ATTR_RESULT) if best else None,
        default_values=default_values,
        trials_finished=len(done) + len(stale) + len(failed) + len(pruned),
        trials_failed=len(failed),
        points=tuple(dataclasses.replace(_point(t), cold=t.number in cold) for t in finished if RATIO in t.params),
        stopped_because=stored.get(STUDY_STOPPED_BECAUSE),
        noise_band=stored.get(STUDY_NOISE_BAND),
    )


def _mean_first(trials: list[optuna.trial.FrozenTrial], trial: optuna.trial.FrozenTrial) -> float:
    """The mean first objective of the trials with `trial`'s parameters (a ratio and its repeats)."""
    same = [t.values[0] for t in trials if t.params == trial.params]
    return sum(same) / len(same)


# ---------------------------------------------------------------------------------------------- stopping


def rule_blocked(plan: StudyPlan) -> str | None:
    """Why the stopping rule cannot judge this study (None: it can). It reads one objective over one ratio."""
    if len(plan.objective.directions) > 1:
        return f"the {plan.objective.name} objective has two values: the study runs every trial"
    if [p.name for p in plan.space.params] != [RATIO]:
        return f"the search space {plan.space.name} tunes more than the ratio: the study runs every trial"
    return None


def measured_points(study: optuna.Study) -> list[Point]:
    """The finished trials as points of the objective over the ratio: a trial stopped early, too
    slow, failed at its ratio or over the SLO is a lost run; a cold run its ratio's warm run
    supersedes is left out (autotune/study/cold.py)."""
    runs: list[tuple[float, float | None]] = []
    finished = _finished(study)
    stale = superseded(finished)
    for trial in finished:
        if set(trial.params) != {RATIO} or trial.number in stale:
            continue
        feasible = all(c <= 0 for c in trial.user_attrs.get(ATTR_CONSTRAINTS, []))
        value = trial.values[0] if trial.state == TrialState.COMPLETE and feasible else None
        runs.append((float(trial.params[RATIO]), value))
    return points_from(runs)


def verdict_of(study: optuna.Study, plan: StudyPlan) -> tuple[Verdict, NoiseBand]:
    """The stopping rule on the stored trials, and the noise band it judged by."""
    points = measured_points(study)
    band = noise_band(points, plan.noise_floor)
    high = plan.space.distributions(plan.feasible_low())[RATIO].high
    return judge(points, band, plan.feasible_low(), high), band


def decide(study: optuna.Study, plan: StudyPlan, *, room: int) -> Verdict | None:
    """Called when no queued candidate is left to run. A verdict: stop. None: run what was just
    queued (a ratio measured only on a cold machine, again, as soon as a warm boot shows it was cold;
    repeats of SGLang's default and of the best, once each, before the study stops on a verdict; as
    far as `room` — trials left under the ceiling — allows), or ask the sampler."""
    # A cold run misleads the rule whatever it says (a flat surface looks bracketed): measure it warm first.
    cold = to_remeasure(study.get_trials(deepcopy=False))[:room]
    for ratio in cold:
        study.enqueue_trial({RATIO: ratio}, user_attrs={ATTR_ENQUEUED_AS: ENQUEUED_COLD})
    if cold:
        return None
    verdict, band = verdict_of(study, plan)
    _keep(study, STUDY_NOISE_BAND, band.to_dict())
    if not verdict.stop:
        return None
    queued = [t for t in study.get_trials(deepcopy=False) if t.user_attrs.get(ATTR_ENQUEUED_AS) == ENQUEUED_REPEAT]
    once = [p.ratio for p in measured_points(study) if len(p.values) == 1]
    wanted = []
    for ratio in (DEFAULT_RATIO, verdict.best_ratio):
        if ratio is not None and any(abs(ratio - r) < 1e-9 for r in once) and ratio not in wanted:
            wanted.append(ratio)
    wanted = wanted[: max(0, min(room, MAX_REPEATS - len(queued)))]
    for ratio in wanted:
        study.enqueue_trial({RATIO: ratio}, user_attrs={ATTR_ENQUEUED_AS: ENQUEUED_REPEAT})
    return None if wanted else verdict


def finish(study: optuna.Study, plan: StudyPlan) -> Outcome:
    """The outcome, with why the study stopped stored on it: the rule's verdict, or the ceiling."""
    blocked = rule_blocked(plan)
    if blocked is None:
        verdict, band = verdict_of(study, plan)
        _keep(study, STUDY_NOISE_BAND, band.to_dict())
        if not plan.stop_when_known:
            why = f"{RUN_ALL} (--run-all-trials); the rule would say: {verdict.describe()}"
        elif verdict.stop:
            why = verdict.describe()
        else:
            why = f"{CEILING}: --trials {plan.n_trials} reached; {verdict.detail}"
    else:
        why = f"{RUN_ALL}: {blocked}"
    _keep(study, STUDY_STOPPED_BECAUSE, why)
    return outcome_of(study, plan)


def _keep(study: optuna.Study, key: str, value: Any) -> None:
    """A study user attr, written only when it changed (the loop asks every second while waiting)."""
    if study.user_attrs.get(key) != value:
        study.set_user_attr(key, value)


def _point(trial: optuna.trial.FrozenTrial) -> TrialPoint:
    ratio = float(trial.params[RATIO])
    if trial.state == TrialState.COMPLETE:
        searched = (trial.user_attrs.get(ATTR_RESULT) or {}).get("load_search") or {}
        return TrialPoint(ratio, trial.values[0], "complete", tuple(searched.get("levels", ())))
    if trial.state == TrialState.PRUNED:
        too_slow = (trial.user_attrs.get(ATTR_RESULT) or {}).get("failure") == FailureKind.TOO_SLOW.value
        return TrialPoint(ratio, trial.intermediate_values.get(trial.last_step) if trial.last_step is not None else None,
                          "too slow" if too_slow else "stopped early")
    failure = (trial.user_attrs.get(ATTR_RESULT) or {}).get("failure") or "failed"
    return TrialPoint(ratio, None, f"failed: {failure}")


def with_slo(objective_name: str, slo_text: str | None) -> Objective:
    return Objective(objective_name, SLO.parse(slo_text) if slo_text else None)



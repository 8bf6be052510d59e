"""Attach this project's plots and notes to Optuna studies through optuna-dashboard's own API.

- per study: `save_plotly_graph_object` with stable ids — `autotune-ratio` (throughput/TTFT against
  the ratio; default, hand rule and optimum marked), `autotune-pareto` (multi-objective studies) and
  one `autotune-trial-NNNN` per trial with a stored result (SWA/full usage, queue and running
  requests over time, the pool layout). optuna-dashboard shows them on the study's page.
- a study note (Markdown): the study's keys, its optimum against the default, the current rules
  and exports from the project's store; a trial note per trial: ratio, pool layout, summary, failure.

Idempotent: a figure or note is written only when its content changed, under a fixed id, so running
`attach_all` again (the dashboard does it periodically) rewrites nothing that is up to date.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Iterable

import optuna
from optuna_dashboard import get_note, save_note, save_plotly_graph_object
from optuna_dashboard._custom_plot_data import get_plotly_graph_objects

from autotune.dashboard.plots import StudyView, TrialView, study_figures, trial_figures
from autotune.sglang_facts import DEFAULT_RATIO

log = logging.getLogger(__name__)


@dataclass
class AttachStats:
    studies: int = 0
    figures_written: int = 0
    notes_written: int = 0

    def __iadd__(self, other: "AttachStats") -> "AttachStats":
        self.studies += other.studies
        self.figures_written += other.figures_written
        self.notes_written += other.notes_written
        return self


def _fmt(value: float | None, spec: str = ",.0f", unit: str = "") -> str:
    return "—" if value is None else f"{value:{spec}}{unit}"


def rules_and_exports_markdown(rules: Iterable[Any], exports: Iterable[Any]) -> str:
    """The current rules and exports (records from autotune.store), as Markdown."""
    lines = ["### Rules learned so far", ""]
    rules = list(rules)
    if rules:
        lines += ["| rule | MoE | workload class | memory class | ratio | spread | gain | evidence | simulated |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for r in rules:
            gain = "—" if r.gain is None else f"{r.gain:+.1%}"
            lines.append(f"| {r.key} | {'MoE' if r.moe else 'dense'} | {r.workload_class} | {r.memory_class or 'any'} | "
                         f"{r.ratio:.3f} | {r.spread:.3f} | {gain} | {len(r.evidence)} optima | {'SIMULATED' if r.simulated else 'no'} |")
    else:
        lines.append("No rules yet (`autotune rules` derives them from the optima).")
    lines += ["", "### Exports", ""]
    exports = list(exports)
    if exports:
        lines += ["| model | ratio | file | when | simulated |", "|---|---|---|---|---|"]
        for e in exports:
            sim = "SIMULATED" if (e.provenance or {}).get("simulated") else "no"
            lines.append(f"| {e.model} | {e.ratio:.3f} | `{e.path}` | {e.created_at:%Y-%m-%d %H:%M} | {sim} |")
    else:
        lines.append("Nothing exported yet (`autotune export --out DIR`).")
    return "\n".join(lines)


def study_note(view: StudyView, rules_md: str = "") -> str:
    a = view.attrs
    best = view.best()
    default = next((t for t in view.complete() if t.ratio is not None and abs(t.ratio - DEFAULT_RATIO) < 1e-9), None)
    lines = [f"## {view.title}", ""]
    if view.simulated:
        lines += ["**SIMULATED**: these trials ran on autotune's simulated SGLang, not a GPU.", ""]
    lines += [
        f"- model: `{a.get('model', '?')}` ({'MoE' if view.moe else 'dense'}), GPU `{a.get('gpu', '?')}`, workload `{a.get('workload', '?')}`",
        f"- backend `{a.get('backend', '?')}`, server `{a.get('server_version', '?')}`, objective `{a.get('objective', '?')}` "
        f"({', '.join(view.labels) or '?'})",
        f"- trials: {len(view.complete())} complete, {sum(t.state == 'FAIL' for t in view.trials)} failed, "
        f"{sum(t.state == 'PRUNED' for t in view.trials)} pruned, {sum(t.state == 'RUNNING' for t in view.trials)} running",
    ]
    if best is not None:
        line = f"- optimum: ratio **{best.ratio:.3f}** (trial {best.number}), {_fmt(best.values[0])} {view.labels[0] if view.labels else ''}"
        if default is not None and default.values and default.values[0]:
            line += f"; default {DEFAULT_RATIO:g}: {_fmt(default.values[0])} (gain {best.values[0] / default.values[0] - 1:+.1%})"
        lines.append(line)
    lines.append(f"- hand rule: {view.hand_rule:g} ({'MoE' if view.moe else 'dense'}); SGLang default {DEFAULT_RATIO:g}")
    lines += ["", "Plots: `autotune-ratio` (throughput/TTFT vs ratio), one `autotune-trial-NNNN` per trial"
              + (", `autotune-pareto`" if view.multi_objective else "") + "."]
    if rules_md:
        lines += ["", rules_md]
    return "\n".join(lines) + "\n"


def trial_note(view: StudyView, trial: TrialView) -> str:
    r = trial.result or {}
    s = trial.summary or {}
    ratio = f"{trial.ratio:.3f}" if trial.ratio is not None else "?"
    lines = [f"## Trial {trial.number}: ratio {ratio}" + (" (SIMULATED)" if view.simulated else ""), ""]
    lines.append(f"- pool layout: full {_fmt(r.get('full_tokens'))} tokens, SWA {_fmt(r.get('swa_tokens'))} tokens")
    if s:
        lines.append(f"- throughput {_fmt(s.get('total_throughput'))} tok/s, TTFT median {_fmt(trial.ttft('median'), ',.1f', ' ms')}, "
                     f"p99 {_fmt(trial.ttft('p99'), ',.1f', ' ms')}; completed {s.get('completed', '?')}, failed {s.get('failed', '?')}")
    if r.get("boot_s") is not None:
        lines.append(f"- boot {r['boot_s']:.1f} s, replay {_fmt(r.get('replay_s'), '.1f', ' s')}")
    if trial.failure:
        lines.append(f"- failure: **{trial.failure}**: {r.get('message', '')}")
        tail = (r.get("log_tail") or "").strip()
        if tail:
            lines += ["", "```", tail[-1500:], "```"]
    lines.append(f"- plot: `autotune-trial-{trial.number:04d}` on the study page")
    return "\n".join(lines) + "\n"


def _save_note_if_changed(target: optuna.Study | optuna.Trial, body: str) -> bool:
    try:
        current = get_note(target)
    except Exception:  # noqa: BLE001 - no note yet
        current = ""
    if current == body:
        return False
    save_note(target, body)
    return True


def attach_study(study: optuna.Study, *, rules_md: str = "", notes: bool = True) -> AttachStats:
    """Attach (or refresh) the figures and notes of one study."""
    stats = AttachStats(studies=1)
    view = StudyView.of(study)
    existing = get_plotly_graph_objects(study._storage.get_study_system_attrs(study._study_id))
    for graph_id, figure in {**study_figures(view), **trial_figures(view)}.items():
        data = figure.to_json()
        if existing.get(graph_id) == data:
            continue
        save_plotly_graph_object(study, figure, graph_object_id=graph_id)
        stats.figures_written += 1
    if notes:
        if _save_note_if_changed(study, study_note(view, rules_md)):
            stats.notes_written += 1
        frozen = {t.number: t for t in study.get_trials(deepcopy=False)}
        for trial in view.trials:
            if trial.result is None:
                continue
            handle = optuna.trial.Trial(study, frozen[trial.number]._trial_id)
            if _save_note_if_changed(handle, trial_note(view, trial)):
                stats.notes_written += 1
    return stats


def _rules_md(storage_url: str) -> str:
    try:
        from autotune.store import Store

        store = Store(storage_url)
        return rules_and_exports_markdown(store.rules(), store.exports())
    except Exception as exc:  # noqa: BLE001 - the project's tables may not exist (an Optuna-only database)
        log.debug("no rules/exports: %s", exc)
        return "### Rules and exports\n\nNone in this database (`autotune rules`, `autotune export`)."


def attach_all(storage: str | optuna.storages.BaseStorage, *, storage_url: str | None = None,
               model: str | None = None) -> AttachStats:
    """Attach figures and notes to every study in the storage (or only `model`'s)."""
    url = storage if isinstance(storage, str) else storage_url
    rules_md = _rules_md(url) if url else ""
    stats = AttachStats()
    for summary in optuna.get_all_study_summaries(storage, include_best_trial=False):
        if model is not None and summary.user_attrs.get("model") != model:
            continue
        study = optuna.load_study(study_name=summary.study_name, storage=storage)
        stats += attach_study(study, rules_md=rules_md)
    return stats

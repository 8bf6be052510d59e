"""Plotly figures from what the study loop stores on each trial and study (no Optuna objects needed
beyond `FrozenTrial`-like records: `number`, `state`, `params`, `values`, `user_attrs`).

Trial user attrs (autotune/study/trial_attrs.py): `result` = TrialResult.to_dict() with `samples`
(MetricSample dicts), `summary` (ServingSummary dict), `full_tokens`, `swa_tokens`, `failure`,
`simulated`. Study user attrs: model, model_features (incl. "moe"), gpu, workload, simulated,
objective, objective_labels.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import plotly.colors
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from autotune.sglang_facts import DEFAULT_RATIO, RATIO
from autotune.study.trial_attrs import ATTR_CONSTRAINTS, ATTR_RESULT

HAND_RULE_MOE = 0.15  # the hand-written rule for MoE Gemma 4
HAND_RULE_DENSE = 0.8

SWA_COLOR = "#1f77b4"
FULL_COLOR = "#d62728"
RUNNING_COLOR = "#2ca02c"
QUEUE_COLOR = "#ff7f0e"


@dataclass(frozen=True)
class TrialView:
    """The part of a trial the plots use."""

    number: int
    state: str  # COMPLETE | FAIL | PRUNED | RUNNING | WAITING
    ratio: float | None
    values: tuple[float, ...] | None
    result: dict[str, Any] | None = field(repr=False)
    constraints: tuple[float, ...] = ()
    memory_mode: str = "static"  # `autotune run --modes`: unified trials have no ratio (autotune/study/modes.py)

    @classmethod
    def of(cls, trial: Any) -> "TrialView":
        state = getattr(trial.state, "name", str(trial.state))
        values = tuple(trial.values) if trial.values is not None else None
        attrs = trial.user_attrs or {}
        return cls(
            number=trial.number,
            state=state,
            ratio=trial.params.get(RATIO),
            values=values,
            result=attrs.get(ATTR_RESULT),
            constraints=tuple(attrs.get(ATTR_CONSTRAINTS) or ()),
            memory_mode=attrs.get("memory_mode") or "static",
        )

    @property
    def summary(self) -> dict[str, Any] | None:
        return (self.result or {}).get("summary")

    @property
    def samples(self) -> list[dict[str, float]]:
        return list((self.result or {}).get("samples") or [])

    @property
    def throughput(self) -> float | None:
        s = self.summary
        return float(s["total_throughput"]) if s and s.get("total_throughput") is not None else None

    def ttft(self, stat: str = "p99") -> float | None:
        s = self.summary
        ttft = (s or {}).get("ttft") or {}
        return float(ttft[stat]) if ttft.get(stat) is not None else None

    @property
    def feasible(self) -> bool:
        return all(c <= 0 for c in self.constraints)

    @property
    def load_levels(self) -> list[dict[str, Any]]:
        """`--objective capacity`: the load levels this trial measured on its one boot (LoadLevel dicts)."""
        return list(((self.result or {}).get("load_search") or {}).get("levels") or [])

    @property
    def failure(self) -> str | None:
        return (self.result or {}).get("failure")


@dataclass(frozen=True)
class StudyView:
    """A study's attributes and trials, as the plots need them."""

    name: str
    attrs: dict[str, Any]
    trials: tuple[TrialView, ...]
    directions: tuple[str, ...] = ("MAXIMIZE",)
    rules: tuple[dict[str, Any], ...] = field(default=())  # learned rules that apply (from the store)

    @classmethod
    def of(cls, study: Any) -> "StudyView":
        return cls(
            name=study.study_name,
            attrs=dict(study.user_attrs),
            trials=tuple(TrialView.of(t) for t in study.get_trials(deepcopy=False)),
            directions=tuple(d.name for d in study.directions),
        )

    @property
    def simulated(self) -> bool:
        return bool(self.attrs.get("simulated", False))

    @property
    def moe(self) -> bool | None:
        features = self.attrs.get("model_features") or {}
        return bool(features["moe"]) if "moe" in features else None

    @property
    def hand_rule(self) -> float:
        return HAND_RULE_MOE if self.moe else HAND_RULE_DENSE

    @property
    def multi_objective(self) -> bool:
        return len(self.directions) > 1

    @property
    def labels(self) -> list[str]:
        return list(self.attrs.get("objective_labels") or [])

    def complete(self) -> list[TrialView]:
        return [t for t in self.trials if t.state == "COMPLETE" and t.values and t.ratio is not None]

    def best(self) -> TrialView | None:
        """The best feasible trial by the first objective (throughput / goodput), as the controller picks it."""
        feasible = [t for t in self.complete() if t.feasible]
        if not feasible:
            return None
        return max(feasible, key=lambda t: (t.values[0], -(t.values[1] if len(t.values) > 1 else 0)))

    @property
    def title(self) -> str:
        a = self.attrs
        head = f"{a.get('model', self.name)} · {a.get('gpu', '?')} · {a.get('workload', '?')}"
        return head + (" · SIMULATED" if self.simulated else "")


def _sim_tag(simulated: bool) -> str:
    return " [SIMULATED]" if simulated else ""


def trial_figure(trial: TrialView, *, simulated: bool = False, study_title: str = "") -> go.Figure:
    """One trial: SWA and full usage, queue and running requests over time, and the pool layout."""
    samples = trial.samples
    result = trial.result or {}
    fig = make_subplots(
        rows=3, cols=1, shared_xaxes=False, vertical_spacing=0.1, row_heights=[0.4, 0.35, 0.25],
        subplot_titles=("KV pool usage", "requests", "pool layout (tokens)"),
    )
    t = [s.get("t", i) for i, s in enumerate(samples)]
    fig.add_trace(go.Scatter(x=t, y=[s.get("swa_token_usage") for s in samples], name="SWA usage",
                             line=dict(color=SWA_COLOR)), row=1, col=1)
    fig.add_trace(go.Scatter(x=t, y=[s.get("full_token_usage") for s in samples], name="full usage",
                             line=dict(color=FULL_COLOR)), row=1, col=1)
    fig.add_trace(go.Scatter(x=t, y=[s.get("num_running_reqs") for s in samples], name="running",
                             line=dict(color=RUNNING_COLOR)), row=2, col=1)
    fig.add_trace(go.Scatter(x=t, y=[s.get("num_queue_reqs") for s in samples], name="queued",
                             line=dict(color=QUEUE_COLOR)), row=2, col=1)
    full, swa = result.get("full_tokens"), result.get("swa_tokens")
    if full is not None or swa is not None:
        fig.add_trace(go.Bar(y=["pools"], x=[full or 0], name=f"full pool {full or 0:,}", orientation="h",
                             marker_color=FULL_COLOR, showlegend=True), row=3, col=1)
        fig.add_trace(go.Bar(y=["pools"], x=[swa or 0], name=f"SWA pool {swa or 0:,}", orientation="h",
                             marker_color=SWA_COLOR, showlegend=True), row=3, col=1)
    fig.update_layout(barmode="stack", height=450, margin=dict(l=50, r=20, t=70, b=20))
    fig.update_yaxes(range=[0, 1.05], title_text="used / size", row=1, col=1)
    fig.update_yaxes(title_text="requests", row=2, col=1)
    fig.update_xaxes(title_text="s since replay start", title_standoff=2, row=2, col=1)
    ratio = f"{trial.ratio:.3f}" if trial.ratio is not None else "?"
    setting = "UNIFIED MEMORY (no ratio)" if trial.memory_mode == "unified" else f"ratio {ratio}"
    what = trial.state.lower()
    if trial.failure:
        what += f", {trial.failure}"
    thr = trial.throughput
    detail = f"{thr:,.0f} tok/s" if thr is not None else "no throughput"
    ttft = trial.ttft("p99")
    if ttft is not None:
        detail += f", TTFT p99 {ttft:,.0f} ms"
    title = f"Trial {trial.number}: {setting} ({what}) — {detail}{_sim_tag(simulated)}"
    if study_title:
        title += f"<br><sup>{study_title}</sup>"
    if not samples:
        fig.add_annotation(text="no metric samples (the server did not run the workload)", showarrow=False,
                           xref="paper", yref="paper", x=0.5, y=0.8)
    fig.update_layout(title=dict(text=title))
    return fig


def _marker_lines(fig: go.Figure, study: StudyView, *, row: int | None = None, col: int | None = None) -> None:
    best = study.best()
    marks = [
        (DEFAULT_RATIO, "default 0.8", "gray", "dash"),
        (study.hand_rule, f"hand rule {study.hand_rule:g} ({'MoE' if study.moe else 'dense'})", "purple", "dot"),
    ]
    if best is not None:
        marks.append((best.ratio, f"optimum {best.ratio:.3f}", "green", "solid"))
    kwargs = {} if row is None else {"row": row, "col": col}
    for i, (x, text, color, dash) in enumerate(marks):
        fig.add_vline(x=x, line=dict(color=color, dash=dash, width=1.5), **kwargs)
        fig.add_annotation(x=x, y=1.0 - 0.07 * i, yref="paper", text=text, showarrow=False, xanchor="left",
                           font=dict(color=color, size=11), bgcolor="rgba(255,255,255,0.7)")


def ratio_figure(study: StudyView) -> go.Figure:
    """Throughput and TTFT p99 against the ratio, every measured trial, with the default (0.8),
    the hand rule (0.15 MoE / 0.8 dense) and the optimum marked."""
    trials = sorted((t for t in study.trials if t.ratio is not None and t.summary), key=lambda t: t.ratio)
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    hover = [f"trial {t.number} ({t.state.lower()}{', ' + t.failure if t.failure else ''})" for t in trials]
    fig.add_trace(go.Scatter(x=[t.ratio for t in trials], y=[t.throughput for t in trials], mode="markers+lines",
                             name="throughput (tok/s)", text=hover, marker=dict(size=9, color=SWA_COLOR)),
                  secondary_y=False)
    fig.add_trace(go.Scatter(x=[t.ratio for t in trials], y=[t.ttft("p99") for t in trials], mode="markers+lines",
                             name="TTFT p99 (ms)", text=hover, marker=dict(size=7, symbol="diamond", color=QUEUE_COLOR),
                             line=dict(dash="dot")), secondary_y=True)
    failed = [t for t in study.trials if t.ratio is not None and t.state == "FAIL"]
    if failed:
        fig.add_trace(go.Scatter(x=[t.ratio for t in failed], y=[0] * len(failed), mode="markers", name="failed",
                                 text=[f"trial {t.number}: {t.failure}" for t in failed],
                                 marker=dict(symbol="x", size=10, color=FULL_COLOR)), secondary_y=False)
    _marker_lines(fig, study)
    fig.update_xaxes(title_text="--swa-full-tokens-ratio", range=[0, 1.05])
    fig.update_yaxes(title_text="total tok/s", secondary_y=False, rangemode="tozero")
    fig.update_yaxes(title_text="TTFT p99 (ms)", secondary_y=True, rangemode="tozero")
    fig.update_layout(title=dict(text=f"Throughput / TTFT vs ratio{_sim_tag(study.simulated)}<br><sup>{study.title}</sup>"),
                      height=480, margin=dict(l=50, r=50, t=80, b=40), legend=dict(orientation="h", y=-0.2))
    return fig


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the non-dominated points for (maximize x, minimize y)."""
    front = []
    for i, (x, y) in enumerate(points):
        dominated = any(
            (x2 >= x and y2 <= y) and (x2 > x or y2 < y) for j, (x2, y2) in enumerate(points) if j != i
        )
        if not dominated:
            front.append(i)
    return front


def pareto_figure(study: StudyView) -> go.Figure:
    """Throughput against TTFT: every complete trial, the Pareto front highlighted."""
    trials = [t for t in study.complete() if len(t.values) >= 2]
    points = [(t.values[0], t.values[1]) for t in trials]
    front = set(pareto_front(points))
    labels = study.labels or ["objective 0", "objective 1"]
    others = [t for i, t in enumerate(trials) if i not in front]
    best = sorted((t for i, t in enumerate(trials) if i in front), key=lambda t: t.values[0])
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=[t.values[0] for t in others], y=[t.values[1] for t in others], mode="markers",
                             name="dominated", marker=dict(color="lightgray", size=8),
                             text=[f"trial {t.number}, ratio {t.ratio:.3f}" for t in others]))
    fig.add_trace(go.Scatter(x=[t.values[0] for t in best], y=[t.values[1] for t in best], mode="markers+lines+text",
                             name="Pareto front", marker=dict(color=FULL_COLOR, size=10),
                             text=[f"{t.ratio:.3f}" for t in best], textposition="top center"))
    fig.update_layout(title=dict(text=f"Pareto front{_sim_tag(study.simulated)}<br><sup>{study.title}</sup>"),
                      xaxis_title=labels[0], yaxis_title=labels[1] if len(labels) > 1 else "objective 1",
                      height=480, margin=dict(l=50, r=20, t=80, b=40))
    return fig


def capacity_figure(study: StudyView) -> go.Figure:
    """`--objective capacity`: P99 TTFT and TPOT against the offered load (req/s per GPU), one line per
    ratio (its load levels, measured on one boot), the SLO's limits as horizontal lines."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("P99 TTFT (ms)", "P99 TPOT (ms)"), horizontal_spacing=0.1)
    trials = sorted((t for t in study.complete() if t.load_levels), key=lambda t: (t.ratio, t.number))
    palette = plotly.colors.qualitative.Plotly
    for index, trial in enumerate(trials):
        color = palette[index % len(palette)]  # the same ratio, the same colour in both panels
        gpus = int(((trial.result or {}).get("load_search") or {}).get("gpus") or 1)
        levels = sorted(trial.load_levels, key=lambda level: level["multiplier"])
        x = [level["offered_rps"] / gpus for level in levels]
        hover = [f"ratio {trial.ratio:.3f}, {level['multiplier']:g}x: {'meets the SLO' if level['passed'] else level['why']}"
                 for level in levels]
        symbols = ["circle" if level["passed"] else "x" for level in levels]
        name = f"ratio {trial.ratio:.3f}" + (" (default)" if abs(trial.ratio - DEFAULT_RATIO) < 1e-9 else "")
        for col, key in ((1, "ttft_p99_ms"), (2, "tpot_p99_ms")):
            fig.add_trace(go.Scatter(x=x, y=[level[key] for level in levels], mode="markers+lines", name=name,
                                     legendgroup=f"t{trial.number}", showlegend=col == 1, text=hover,
                                     marker=dict(symbol=symbols, size=9, color=color),
                                     line=dict(color=color, dash="dash" if abs(trial.ratio - DEFAULT_RATIO) < 1e-9 else "solid")),
                          row=1, col=col)
    slo = study.attrs.get("slo") or {}
    for col, key in ((1, "ttft_p99_ms"), (2, "tpot_p99_ms")):
        if slo.get(key):
            fig.add_hline(y=slo[key], line=dict(color=FULL_COLOR, dash="dot"), row=1, col=col,
                          annotation_text=f"SLO {slo[key]:g} ms", annotation_position="top left")
    if not trials:
        fig.add_annotation(text="no load levels measured yet", showarrow=False, xref="paper", yref="paper", x=0.5, y=0.5)
    fig.update_xaxes(title_text="offered load (req/s per GPU)", rangemode="tozero")
    fig.update_yaxes(rangemode="tozero")
    fig.update_layout(title=dict(text=f"Load vs latency per ratio (x: SLO missed){_sim_tag(study.simulated)}"
                                      f"<br><sup>{study.title}</sup>"),
                      height=480, margin=dict(l=50, r=20, t=80, b=40), legend=dict(orientation="h", y=-0.2))
    return fig


def study_figures(study: StudyView) -> dict[str, go.Figure]:
    """Per-study figures by a stable id (valid HTML ids: optuna-dashboard uses them as element ids)."""
    figures = {"autotune-ratio": ratio_figure(study)}
    if study.attrs.get("objective") == "capacity" or any(t.load_levels for t in study.trials):
        figures["autotune-capacity"] = capacity_figure(study)
    if study.multi_objective:
        figures["autotune-pareto"] = pareto_figure(study)
    return figures


def trial_figures(study: StudyView, trials: Iterable[TrialView] | None = None) -> dict[str, go.Figure]:
    """Per-trial figures by a stable id, for the trials that have a stored result."""
    chosen = study.trials if trials is None else trials
    return {
        trial_graph_id(t.number): trial_figure(t, simulated=study.simulated, study_title=study.title)
        for t in chosen
        if t.result is not None
    }


def trial_graph_id(number: int) -> str:
    return f"autotune-trial-{number:04d}"

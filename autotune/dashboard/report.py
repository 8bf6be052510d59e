"""A static report of a model's studies: the dashboard's figures in one HTML file (plotly.js inlined,
so it opens offline), or PNG files when kaleido is installed."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import optuna

from autotune.dashboard.plots import StudyView, study_figures, trial_figures


class ReportError(Exception):
    pass


def model_studies(storage: str, model: str) -> list[StudyView]:
    """Studies whose `model` user attr is `model` (the catalog name) or whose name starts with it."""
    views = []
    for summary in optuna.get_all_study_summaries(storage, include_best_trial=False):
        name = summary.user_attrs.get("model") or summary.study_name.split("|")[0]
        if name == model:
            views.append(StudyView.of(optuna.load_study(study_name=summary.study_name, storage=storage)))
    return views


def _figures(view: StudyView) -> list[tuple[str, Any]]:
    return list(study_figures(view).items()) + list(trial_figures(view).items())


def write_html(views: list[StudyView], out: Path, *, notes: dict[str, str] | None = None) -> Path:
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>swa-autotune report</title>",
             "<style>body{font-family:sans-serif;margin:2em}h2{margin-top:2em}</style></head><body>",
             "<h1>swa-autotune report</h1>"]
    if any(v.simulated for v in views):
        parts.append("<p><strong>SIMULATED</strong>: some studies ran on autotune's simulated SGLang, not a GPU.</p>")
    include = True  # plotly.js once, inline
    for view in views:
        parts.append(f"<h2 id='{html.escape(view.name)}'>{html.escape(view.title)}</h2>")
        if notes and view.name in notes:
            parts.append(f"<pre>{html.escape(notes[view.name])}</pre>")
        for graph_id, fig in _figures(view):
            parts.append(fig.to_html(full_html=False, include_plotlyjs=include, div_id=graph_id))
            include = False
    parts.append("</body></html>")
    out.write_text("\n".join(parts), encoding="utf-8")
    return out


def write_png(views: list[StudyView], out: Path) -> list[Path]:
    try:
        import kaleido  # noqa: F401
    except ImportError:
        raise ReportError("PNG output needs kaleido (pip install kaleido); or write HTML: --out report.html") from None
    written = []
    for i, view in enumerate(views):
        for graph_id, fig in _figures(view):
            path = out.with_name(f"{out.stem}-{i}-{view.attrs.get('workload', 'study')}-{graph_id}.png")
            fig.write_image(str(path), width=1100, height=fig.layout.height or 500)
            written.append(path)
    return written


def build_report(storage: str, model: str, out: Path) -> list[Path]:
    views = model_studies(storage, model)
    if not views:
        raise ReportError(f"no studies of {model} in this database (run `autotune run --model ...` first)")
    suffix = out.suffix.lower()
    if suffix in (".html", ".htm"):
        from autotune.dashboard.attach import _rules_md, study_note

        rules = _rules_md(storage)
        return [write_html(views, out, notes={v.name: study_note(v, rules) for v in views})]
    if suffix == ".png":
        return write_png(views, out)
    raise ReportError(f"--out {out}: write .html or .png")

"""`autotune dashboard` and `autotune report`: optuna-dashboard on the tuner's database with this
project's plots attached, and the same plots as a static report. Registered in autotune/cli/app.py."""

from __future__ import annotations

from pathlib import Path

import typer

from autotune.cli.console import console, err_console
from autotune.cli.errors import fail

DEFAULT_STORAGE = "sqlite:///autotune.db"


def _check_sqlite_exists(storage: str) -> None:
    """A SQLite URL naming no file would create an empty database: say so instead."""
    import sqlalchemy

    try:
        url = sqlalchemy.engine.make_url(storage)
    except sqlalchemy.exc.ArgumentError as exc:
        fail(f"--storage {storage}: {exc}")
        return
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        if not Path(url.database).exists():
            fail(f"no database at {url.database}: run `autotune run --model ... --storage {storage}` first, or check --storage")


def dashboard_command(
    storage: str = typer.Option(DEFAULT_STORAGE, "--storage", help="Database URL that `autotune run` wrote to."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind (loopback by default: the dashboard has no authentication)."),
    port: int = typer.Option(8080, "--port", min=0, max=65535, help="Port to listen on."),
    refresh: float = typer.Option(30.0, "--refresh", min=0, help="Re-attach plots to running studies every this many seconds (0: only at start)."),
) -> None:
    """optuna-dashboard on the studies' database, with per-trial and per-study plots and notes attached."""
    # A slim install without optuna-dashboard gets `error: ... pip install ...` (cli/errors.py).
    from autotune.dashboard.server import Dashboard, DashboardError

    _check_sqlite_exists(storage)
    try:
        dashboard = Dashboard(storage, host=host, port=port, refresh_s=refresh)
    except DashboardError as exc:
        fail(str(exc))
        return
    if dashboard.warning:
        err_console.print(f"[bold yellow]warning:[/] {dashboard.warning}")
    console.print(f"optuna-dashboard on {dashboard.address} (Ctrl-C to stop)")
    try:
        dashboard.serve_forever()
    except KeyboardInterrupt:
        console.print("stopped")


def report_command(
    model_ref: str = typer.Option(..., "--model", "-m", help="Catalog name or alias (26B-A4B, 31B, ...) of the studies to report."),
    out: Path = typer.Option(Path("autotune-report.html"), "--out", "-o", help="FILE.html (self-contained) or FILE.png (needs kaleido; one PNG per figure)."),
    storage: str = typer.Option(DEFAULT_STORAGE, "--storage", help="Database URL that `autotune run` wrote to."),
) -> None:
    """A static report of a model's studies: the dashboard's plots in one HTML file (or PNGs)."""
    from autotune.dashboard.report import ReportError, build_report
    from autotune.models import load_model

    _check_sqlite_exists(storage)
    model = load_model(model_ref).name
    try:
        written = build_report(storage, model, out)
    except ReportError as exc:
        fail(str(exc))
        return
    for path in written:
        console.print(f"wrote {path}")

"""`autotune dashboard` in a headless Chromium: the study, its trials and a per-trial plot are shown
(screenshot kept under artifacts/); a database without studies gets a helpful page; a busy port is
a clear error. Also: `autotune report` and the idempotence of attaching plots.

Chromium: Debian's `chromium` (scripts/install-system-tools.sh)."""

from __future__ import annotations

import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import optuna
import pytest

pytest.importorskip("optuna_dashboard")

from autotune.dashboard.attach import attach_all  # noqa: E402
from autotune.dashboard.plots import pareto_front  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TINY = Path(__file__).parent / "data" / "tiny-workloads.yaml"
ARTIFACTS = REPO / "artifacts"
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run", "--hide-scrollbars",
]
# The commands as the lead registers them in autotune/cli/app.py (not yet there when this was written).
CLI = ("import typer; from autotune.cli.dashboard import dashboard_command, report_command; "
       "app = typer.Typer(); app.command('dashboard')(dashboard_command); app.command('report')(report_command); app()")


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.fail("chromium is not installed: run scripts/install-system-tools.sh")
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def autotune_cli(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", CLI, *args], cwd=REPO, capture_output=True, text=True, timeout=120, **kwargs)


@pytest.fixture(scope="module")
def study_db(tmp_path_factory) -> str:
    """A short simulated study (tiny-chat, 4 sim-fast trials)."""
    tmp = tmp_path_factory.mktemp("dash")
    workload = tmp / "chat.yaml"
    workload.write_text(TINY.read_text().split("- name: tiny-long")[0])
    url = f"sqlite:///{tmp / 'autotune.db'}"
    run = subprocess.run(
        [sys.executable, "-m", "autotune.cli.app", "run", "--model", "26B-A4B", "--backend", "sim-fast", "--trials", "4",
         "--workload", str(workload), "--storage", url, "--log-dir", str(tmp / "logs"), "--run-all-trials"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    return url


class Served:
    def __init__(self, url: str, port: int, *extra: str) -> None:
        self.port = port
        self.proc = subprocess.Popen(
            [sys.executable, "-c", CLI, "dashboard", "--storage", url, "--port", str(port), *extra],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"dashboard exited: {self.proc.stdout.read()} {self.proc.stderr.read()}")
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/api/meta", timeout=2)
                return
            except urllib.error.HTTPError:  # it answered (404 while there are no studies)
                return
            except OSError:
                time.sleep(0.3)
        raise AssertionError("dashboard did not answer within 60 s")

    def close(self) -> tuple[str, str]:
        self.proc.terminate()
        try:
            out, err = self.proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate()
        return out, err


def browse(url: str, *, screenshot: Path | None = None, budget_ms: int = 15000) -> str:
    """The DOM after the page's scripts ran (virtual time), and optionally a screenshot."""
    with tempfile.TemporaryDirectory() as profile:
        base = [chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--virtual-time-budget={budget_ms}",
                "--window-size=1400,3000"]
        dom = subprocess.run([*base, "--dump-dom", url], capture_output=True, text=True, timeout=120)
        assert dom.returncode == 0, dom.stderr[-2000:]
    if screenshot is not None:
        with tempfile.TemporaryDirectory() as profile:
            base = [chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--virtual-time-budget={budget_ms}",
                    "--window-size=1400,3000"]
            shot = subprocess.run([*base, f"--screenshot={screenshot}", url], capture_output=True, text=True, timeout=120)
            assert shot.returncode == 0 and screenshot.exists(), shot.stderr[-2000:]
    return dom.stdout


def test_dashboard_shows_the_study_its_trials_and_per_trial_plots(study_db: str) -> None:
    study_name = optuna.get_all_study_names(study_db)[0]
    trials = optuna.load_study(study_name=study_name, storage=study_db).trials
    assert len(trials) == 4
    server = Served(study_db, free_port())
    try:
        listing = browse(f"http://127.0.0.1:{server.port}/dashboard")
        assert study_name in listing  # the study list
        ARTIFACTS.mkdir(exist_ok=True)
        shot = ARTIFACTS / "dashboard-study.png"
        shot.unlink(missing_ok=True)
        dom = browse(f"http://127.0.0.1:{server.port}/dashboard/studies/1", screenshot=shot)
    finally:
        out, err = server.close()
    assert "tiny-chat" in dom and "SIMULATED" in dom
    # the per-study plot and one per trial, each rendered by plotly (an <svg class="main-svg">)
    assert 'id="user-defined-plot:autotune-ratio"' in dom
    assert "Throughput / TTFT vs ratio" in dom
    for t in trials:
        assert f'id="user-defined-plot:autotune-trial-{t.number:04d}"' in dom
        assert f"Trial {t.number}: ratio {t.params['swa_full_tokens_ratio']:.3f}" in dom
    assert dom.count("main-svg") >= 2 * (len(trials) + 1)
    assert "KV pool usage" in dom and "pool layout (tokens)" in dom
    assert shot.stat().st_size > 20_000
    assert "127.0.0.1" in out and "warning" not in err


def test_attach_is_idempotent_and_notes_list_rules(study_db: str) -> None:
    attach_all(study_db)
    again = attach_all(study_db)
    assert again.figures_written == 0 and again.notes_written == 0 and again.studies == 1
    from optuna_dashboard import get_note

    study = optuna.load_study(study_name=optuna.get_all_study_names(study_db)[0], storage=study_db)
    note = get_note(study)
    assert "Rules learned so far" in note and "Exports" in note and "SIMULATED" in note
    trial_note = get_note(optuna.trial.Trial(study, study.trials[0]._trial_id))
    assert "pool layout" in trial_note


@pytest.mark.parametrize("tables", [False, True])
def test_database_without_studies_gets_a_helpful_page(tmp_path: Path, tables: bool) -> None:
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    if tables:
        optuna.storages.RDBStorage(url).engine.dispose()  # Optuna's tables, no study
    else:
        sqlite3.connect(tmp_path / "empty.db").close()
    server = Served(url, free_port())
    try:
        page = urllib.request.urlopen(f"http://127.0.0.1:{server.port}/dashboard").read().decode()
        dom = browse(f"http://127.0.0.1:{server.port}/", budget_ms=2000)
    finally:
        server.close()
    for text in (page, dom):
        assert "No studies yet" in text and "autotune run --model" in text and "Traceback" not in text
    if not tables:  # the dashboard wrote nothing to a database without studies
        with sqlite3.connect(tmp_path / "empty.db") as conn:
            assert conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0


def test_missing_sqlite_file_is_a_clear_error(tmp_path: Path) -> None:
    result = autotune_cli("dashboard", "--storage", f"sqlite:///{tmp_path / 'nope.db'}", "--port", str(free_port()))
    assert result.returncode == 2 and "no database at" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "nope.db").exists()


def test_busy_port_is_a_clear_error(study_db: str) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        result = autotune_cli("dashboard", "--storage", study_db, "--port", str(port))
    assert result.returncode == 2
    assert f"port {port} on 127.0.0.1 is already in use" in result.stderr and "Traceback" not in result.stderr


def test_non_loopback_host_warns(study_db: str) -> None:
    from autotune.dashboard.server import exposure_warning

    assert exposure_warning("127.0.0.1", 8080) is None and exposure_warning("localhost", 8080) is None
    assert exposure_warning("::1", 8080) is None
    assert "no authentication" in exposure_warning("0.0.0.0", 8080)


def test_report_html_and_png(study_db: str, tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    result = autotune_cli("report", "--model", "26B-A4B", "--storage", study_db, "--out", str(out))
    assert result.returncode == 0, result.stderr
    text = out.read_text()
    assert "autotune-ratio" in text and "autotune-trial-0000" in text and "SIMULATED" in text
    png = autotune_cli("report", "--model", "26B-A4B", "--storage", study_db, "--out", str(tmp_path / "r.png"))
    try:
        import kaleido  # noqa: F401
    except ImportError:
        assert png.returncode == 2 and "kaleido" in png.stderr
    else:
        assert png.returncode == 0
    none = autotune_cli("report", "--model", "31B", "--storage", study_db, "--out", str(tmp_path / "x.html"))
    assert none.returncode == 2 and "no studies of" in none.stderr


def test_pareto_front() -> None:
    # maximize x, minimize y
    assert sorted(pareto_front([(10, 5), (8, 3), (9, 6), (10, 4), (5, 1)])) == [1, 3, 4]

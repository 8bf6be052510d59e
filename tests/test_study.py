"""`autotune run` end to end: studies persisted in real databases, resumed, killed, and refused.

No mocks: the real CLI in a subprocess (`python -m autotune.cli.app run`; typer's CliRunner for the
paths that stop before any trial), real SQLite files, the throwaway PostgreSQL server of
conftest.py, and a real local Ray cluster for the worker test. The trials run on the simulator
(`sim-fast` in-process in virtual time, `sim` as server processes).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path

import optuna
import pytest
from sqlalchemy.engine import make_url
from typer.testing import CliRunner

from autotune.cli.app import app
from autotune.hardware import load_gpu
from autotune.models import load_model
from autotune.pools import KVGeometry, WorkloadShape, analytic_optimum, default_chunked_prefill_size, estimate_budget
from autotune.sglang_facts import DEFAULT_RATIO, RATIO
from autotune.store import Store
from autotune.study.controller import _trial_spec, open_study, run_study
from autotune.study.storage import storage_for
from autotune.study.objective import Objective
from autotune.study.plan import build_plan
from autotune.study.trial_attrs import ATTR_FINAL, ATTR_OWNER, ATTR_RESULT
from autotune.workloads import concurrency_limit, load_workload_yaml
from workers.ray_runner import RayRunner
from workers.sim_fast import run_sim_fast
from optuna.trial import FrozenTrial, TrialState

from conftest import TAG, sim_servers

pytestmark = pytest.mark.usefixtures("no_leftover_servers")  # no simulated server outlives a test (conftest.py)

REPO = Path(__file__).resolve().parents[1]
DATA = Path(__file__).parent / "data"
TINY = DATA / "tiny-workloads.yaml"  # tiny-chat and tiny-long
MODEL = "26B-A4B"
SIM_GPU = "H100-80GB"  # what `autotune run` uses for the simulator when --gpu is not given
CLI = [sys.executable, "-m", "autotune.cli.app", "run"]

optuna.logging.set_verbosity(optuna.logging.WARNING)


# -- helpers ------------------------------------------------------------------------------------
def run_args(storage: str, tmp_path: Path, *, trials: int = 4, workload: Path = TINY) -> list[str]:
    # These tests count trials across kills and resumes: every --trials runs (the stopping rule that
    # ends studies earlier has its own tests, tests/test_stopping.py).
    return [
        *CLI, "--model", MODEL, "--backend", "sim-fast", "--trials", str(trials), "--workload", str(workload),
        "--storage", storage, "--log-dir", str(tmp_path / "logs"), "--run-all-trials",
    ]


def cli_env(**extra: str) -> dict[str, str]:
    # Wide enough that rich never wraps the result table (one row per workload).
    return {**os.environ, "COLUMNS": "250", **extra}


def autotune(args: list[str], *, timeout: float = 240, env: dict[str, str] | None = None,
             prefix: list[str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*(prefix or []), *args], capture_output=True, text=True, cwd=REPO, env=env or cli_env(), timeout=timeout
    )


def output(result: subprocess.CompletedProcess[str]) -> str:
    return result.stdout + result.stderr


def invoke(args: list[str], **env: str):
    """The same command in this process (typer's CliRunner): for the paths that stop before any trial."""
    assert args[: len(CLI)] == CLI
    return CliRunner().invoke(app, ["run", *args[len(CLI):]], env={"COLUMNS": "250", **env})


def flat(text: str) -> str:
    return " ".join(text.split())


@contextmanager
def optuna_storage(url: str) -> Iterator[optuna.storages.RDBStorage]:
    storage = optuna.storages.RDBStorage(url)
    try:
        yield storage
    finally:
        storage.engine.dispose()


def studies_by_workload(storage: optuna.storages.RDBStorage) -> dict[str, optuna.Study]:
    summaries = optuna.get_all_study_summaries(storage=storage)
    found = {}
    for summary in summaries:
        study = optuna.load_study(study_name=summary.study_name, storage=storage)
        found[study.user_attrs["workload"]] = study
    assert len(found) == len(summaries), "two studies for one workload"
    return found


def store_optima(url: str):
    store = Store(url)
    try:
        return {o.workload: o for o in store.optima()}
    finally:
        store.close()


def analytic_first_ratio(workload_name: str) -> float:
    """The capacity model's optimum for a workload of TINY, computed here from the pool model."""
    [workload] = [w for w in load_workload_yaml(TINY) if w.name == workload_name]
    model, gpu = load_model(MODEL), load_gpu(SIM_GPU)
    shape = WorkloadShape(
        prompt_len=workload.total_prompt_tokens / len(workload.requests),
        output_len=workload.total_output_tokens / len(workload.requests),
        concurrency=concurrency_limit(workload.arrival),
    )
    best = analytic_optimum(KVGeometry.of(model), estimate_budget(model, gpu).bytes, shape,
                            page_size=1, chunked_prefill_size=default_chunked_prefill_size(gpu.memory_mib))
    return round(best.ratio, 3)


def table_row(text: str, workload: str) -> list[str]:
    """The cells of the result table's row for `workload` (the plan table, printed first, has one too)."""
    rows = [line for line in text.splitlines() if line.startswith(f"│ {workload} ")]
    assert len(rows) == 2, f"no plan and result row for {workload} in:\n{text}"
    return [cell.strip() for cell in rows[-1].strip("│").split("│")]


def finals(study: optuna.Study) -> list[FrozenTrial]:
    return [t for t in study.get_trials() if t.user_attrs.get(ATTR_FINAL)]


def check_first_run(url: str, result: subprocess.CompletedProcess[str], trials: int = 4) -> None:
    """What one fresh `autotune run ... --trials N` on TINY must leave behind and print."""
    assert result.returncode == 0, output(result)
    text = result.stdout
    assert "SIMULATED" in text
    assert "Simulated results" in text
    optima = store_optima(url)
    assert set(optima) == {"tiny-chat", "tiny-long"}
    with optuna_storage(url) as storage:
        studies = studies_by_workload(storage)
        assert set(studies) == {"tiny-chat", "tiny-long"}
        for name, study in studies.items():
            all_trials = study.get_trials()
            assert [t.number for t in all_trials] == list(range(trials)), name
            assert all(t.state == TrialState.COMPLETE and t.user_attrs.get(ATTR_FINAL) for t in all_trials), name
            assert study.user_attrs["simulated"] is True and study.user_attrs["backend"] == "sim-fast"
            # Warm start: the capacity model's optimum first, then SGLang's default as the baseline.
            assert all_trials[0].params[RATIO] == pytest.approx(analytic_first_ratio(name), abs=1e-9), name
            [default] = [t for t in all_trials if abs(t.params[RATIO] - DEFAULT_RATIO) < 1e-9]
            best = max(all_trials, key=lambda t: t.values[0])

            optimum = optima[name]
            assert optimum.simulated is True and optimum.backend == "sim-fast"
            assert optimum.trials == trials and optimum.study_name == study.study_name
            assert optimum.objective_value == pytest.approx(best.values[0])
            assert optimum.ratio == pytest.approx(best.params[RATIO])
            assert optimum.default_value == pytest.approx(default.values[0])
            assert optimum.gain == pytest.approx(best.values[0] / default.values[0] - 1)
            assert all_trials[0].user_attrs[ATTR_RESULT]["simulated"] is True

            # The report names the optimum, the default's result and the gain.
            cells = table_row(text, name)
            assert cells[1] == str(trials)
            assert cells[2] == f"{optimum.ratio:.3f}"
            assert cells[3] == f"{optimum.objective_value:,.0f}"
            assert cells[4] == f"{optimum.default_value:,.0f}"
            assert cells[5] == f"{optimum.gain:+.1%}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def drop_dac_capabilities() -> list[str]:
    """A command prefix under which a root process can no longer write through file modes."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv (util-linux): cannot make a file read-only for root")
    drop = "-dac_override,-dac_read_search"
    return ["setpriv", f"--inh-caps={drop}", f"--bounding-set={drop}"]


# -- 1, 2: a study per workload, persisted and resumed ------------------------------------------
def test_run_tunes_each_workload_and_resumes_on_sqlite(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'autotune.db'}"
    check_first_run(url, autotune(run_args(url, tmp_path, trials=4)))
    with optuna_storage(url) as storage:
        before = {name: [(t.number, t.params, t.values) for t in s.get_trials()]
                  for name, s in studies_by_workload(storage).items()}

    # The same command again: both studies already have their 4 trials, so nothing runs.
    again = autotune(run_args(url, tmp_path, trials=4))
    assert again.returncode == 0, output(again)
    with optuna_storage(url) as storage:
        studies = studies_by_workload(storage)
        assert {name: [(t.number, t.params, t.values) for t in s.get_trials()] for name, s in studies.items()} == before

    # Asking for 6: exactly 2 more per study, numbered after the first 4, the first 4 untouched.
    more = autotune(run_args(url, tmp_path, trials=6))
    assert more.returncode == 0, output(more)
    with optuna_storage(url) as storage:
        for name, study in studies_by_workload(storage).items():
            trials = study.get_trials()
            assert [t.number for t in trials] == list(range(6)), name
            assert [(t.number, t.params, t.values) for t in trials[:4]] == before[name]
            assert all(t.state == TrialState.COMPLETE for t in trials) and len(finals(study)) == 6
            assert table_row(more.stdout, name)[1] == "6"
    assert {o.trials for o in store_optima(url).values()} == {6}


def test_run_tunes_each_workload_on_postgresql(pg_database: str, tmp_path: Path) -> None:
    assert pg_database.startswith("postgresql+psycopg://")
    check_first_run(pg_database, autotune(run_args(pg_database, tmp_path, trials=4)))


# -- 3: the tuner killed mid-study ----------------------------------------------------------------
MID_WORKLOAD = """\
- name: mid-chat
  num_prompts: 400
  input_len: 1024
  output_len: 512
  range_ratio: 1.0
  max_concurrency: 64
"""  # about 2 s per sim-fast trial: long enough to be caught running


def _sqlite_has_study(path: Path) -> bool:
    if not path.exists():
        return False
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5) as conn:
            return conn.execute("SELECT count(*) FROM studies").fetchone()[0] > 0
    except sqlite3.Error:  # tables not created yet
        return False


@pytest.mark.slow
def test_killed_tuner_resumes_without_losing_or_repeating_trials(tmp_path: Path) -> None:
    db = tmp_path / "autotune.db"
    url = f"sqlite:///{db}"
    workload = tmp_path / "mid.yaml"
    workload.write_text(MID_WORKLOAD)
    # A 1 s heartbeat and a 4 s grace period (StudyPlan.heartbeat_s, .grace_s): the resumed tuner
    # waits seconds, not the default 40 s, for the orphan to go stale.
    args = [*run_args(url, tmp_path, trials=6, workload=workload), "--heartbeat-s", "1", "--grace-s", "4"]

    with open(tmp_path / "first.log", "w") as log:
        first = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=cli_env(),
                                 start_new_session=True)  # own process group: the kill takes its trial pool too
    try:
        deadline = time.monotonic() + 120
        while not _sqlite_has_study(db):
            assert first.poll() is None and time.monotonic() < deadline, (tmp_path / "first.log").read_text()
            time.sleep(0.2)
        # Kill once 2 trials are finished and the next has been running a little while (well
        # before it can finish), so one trial is certainly in flight.
        with optuna_storage(url) as storage:
            [summary] = optuna.get_all_study_summaries(storage=storage)
            while True:
                assert first.poll() is None, f"the tuner ended before it was killed:\n{(tmp_path / 'first.log').read_text()}"
                assert time.monotonic() < deadline, "the study never reached 2 finished trials"
                trials = optuna.load_study(study_name=summary.study_name, storage=storage).get_trials()
                running = [t for t in trials if t.state == TrialState.RUNNING]
                done = [t for t in trials if t.user_attrs.get(ATTR_FINAL)]
                if (len(done) >= 2 and len(running) == 1 and ATTR_RESULT not in running[0].user_attrs
                        and datetime.now() - running[0].datetime_start > timedelta(seconds=0.3)):
                    break  # well into its run, and its result not being recorded yet
                time.sleep(0.05)
        os.killpg(first.pid, signal.SIGKILL)
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
        first.wait()  # reaped: the pid of a dead tuner must not linger as a zombie

    with optuna_storage(url) as storage:
        study = optuna.load_study(study_name=summary.study_name, storage=storage)
        before = {t.number: (t.params, t.values) for t in finals(study)}
        # One trial was running at the check; on a loaded machine the tuner can start its next one in the
        # milliseconds before the kill lands, so one or two are left running.
        orphans = study.get_trials(states=(TrialState.RUNNING,))
    assert len(before) >= 2 and 1 <= len(orphans) <= 2 and not {o.number for o in orphans} & set(before)
    # Killed mid-run, not while its result was being written (that case: the test after this one).
    assert all(ATTR_RESULT not in o.user_attrs and ATTR_FINAL not in o.user_attrs for o in orphans)

    started = time.monotonic()
    resumed = autotune(args, timeout=300)
    assert resumed.returncode == 0, output(resumed)
    assert "left running by a tuner that died" in resumed.stdout
    assert time.monotonic() - started < 150

    with optuna_storage(url) as storage:
        study = optuna.load_study(study_name=summary.study_name, storage=storage)
        trials = study.get_trials()
    done = finals(study)
    assert len(done) == 6
    assert all(t.state == TrialState.COMPLETE for t in done)
    assert len({t.number for t in trials}) == len(trials)
    # No finished trial lost or re-run: same numbers, same parameters, same values.
    assert {t.number: (t.params, t.values) for t in done if t.number in before} == before
    # Each orphan was expired by the heartbeat (failed, never counted) and its parameters ran again.
    for orphan in orphans:
        [expired] = [t for t in trials if t.number == orphan.number]
        assert expired.state == TrialState.FAIL and not expired.user_attrs.get(ATTR_FINAL)
        [retry] = [t for t in trials if t.system_attrs.get("failed_trial") == orphan.number]
        assert retry.number > orphan.number and retry.params == orphan.params
        assert retry.state == TrialState.COMPLETE and retry.user_attrs.get(ATTR_FINAL) is True
    assert len(trials) == 6 + len(orphans)  # 6 finished + the expired ones
    assert store_optima(url)["mid-chat"].trials == 6


def test_tuner_killed_while_recording_a_result_still_measures_every_trial(tmp_path: Path) -> None:
    """The state `controller._tell` leaves when the tuner dies between its writes: the trial's
    result and "final" are stored, `study.tell` never ran, its owner is dead, its heartbeat old."""
    url = f"sqlite:///{tmp_path / 'autotune.db'}"
    workload = tmp_path / "chat.yaml"
    workload.write_text(TINY.read_text().split("- name: tiny-long")[0])  # tiny-chat only
    [chat] = load_workload_yaml(workload)
    plan = build_plan(model=load_model(MODEL), model_ref=MODEL, gpu=load_gpu(SIM_GPU), workload=chat,
                      backend="sim-fast", objective=Objective("throughput"), n_trials=3)
    store = Store(url)
    store.migrate()
    store.close()
    storage = storage_for(url)
    study = open_study(plan, storage)
    trial = study.ask(plan.space.distributions(plan.feasible_low()))  # the analytic optimum
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    trial.set_user_attr(ATTR_OWNER, f"{socket.gethostname()}:{int(dead.stdout)}")
    storage.record_heartbeat(trial._trial_id)
    result = run_sim_fast(_trial_spec(plan, trial, trial.params))
    assert result.ok, result.message
    trial.set_user_attr(ATTR_RESULT, result.to_dict())
    trial.set_user_attr(ATTR_FINAL, True)  # ... and the tuner dies before study.tell()
    storage.engine.dispose()
    with sqlite3.connect(tmp_path / "autotune.db") as conn:  # it died an hour ago
        conn.execute("UPDATE trial_heartbeats SET heartbeat = datetime(heartbeat, '-1 hour')")

    resumed = autotune(run_args(url, tmp_path, trials=3, workload=workload))
    assert resumed.returncode == 0, output(resumed)
    assert "left running by a tuner that died" in resumed.stdout
    with optuna_storage(url) as reopened:
        trials = optuna.load_study(study_name=plan.name, storage=reopened).get_trials()
    measured = [t for t in trials if t.state == TrialState.COMPLETE and t.user_attrs.get(ATTR_FINAL)]
    assert len(measured) == 3, [(t.number, t.state.name, t.user_attrs.get(ATTR_FINAL)) for t in trials]
    assert trial.params in [t.params for t in measured]  # the interrupted trial was measured again
    assert table_row(resumed.stdout, "tiny-chat")[1] == "3"  # and not reported as a failure
    assert store_optima(url)["tiny-chat"].trials == 3


# -- 4: a Ray worker dies mid-trial ---------------------------------------------------------------
@pytest.fixture
def sim_cluster() -> Iterator[None]:
    import ray

    # The Ray processes inherit this process's environment, TAG included (conftest.py sets it),
    # so the servers they start are the ones the leak check looks for.
    assert os.environ.get("AUTOTUNE_TEST_TAG") == TAG["AUTOTUNE_TEST_TAG"]
    ray.init(resources={"sim_slot": 1}, num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.mark.slow
def test_worker_lost_mid_trial_is_run_again_and_the_study_finishes(sim_cluster: None, tmp_path: Path) -> None:
    import ray

    from workers.pool import WorkerPool, WorkerResources

    [workload] = [w for w in load_workload_yaml(TINY) if w.name == "tiny-chat"]
    plan = build_plan(
        model=load_model(MODEL), model_ref=MODEL, gpu=load_gpu(SIM_GPU), workload=workload, backend="sim",
        objective=Objective("throughput"), n_trials=3, log_dir=str(tmp_path / "logs"),
    )
    plan = dataclasses.replace(plan, boot_timeout_s=120, hang_timeout_s=60, stop_when_known=False)  # counts all 3
    storage = storage_for(f"sqlite:///{tmp_path / 'autotune.db'}")
    pool = WorkerPool(WorkerResources(gpus=0, custom={"sim_slot": 1}), num_workers=1)
    runner = RayRunner(pool)
    killed = threading.Event()

    def kill_the_first_worker_once_its_server_runs() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not sim_servers():
            time.sleep(0.05)
        if sim_servers():
            ray.kill(pool.workers[0])
            killed.set()

    killer = threading.Thread(target=kill_the_first_worker_once_its_server_runs, daemon=True)
    killer.start()
    try:
        outcome = run_study(plan, storage, runner)
    finally:
        killer.join(timeout=130)
        runner.close()
    assert killed.is_set(), "no simulated server with this session's tag ever ran"

    study = optuna.load_study(study_name=plan.name, storage=storage)
    trials = study.get_trials()
    storage.engine.dispose()
    lost = trials[0]
    assert lost.state == TrialState.FAIL
    assert lost.user_attrs[ATTR_FINAL] is False
    assert lost.user_attrs[ATTR_RESULT]["failure"] == "worker_lost"
    [again] = [t for t in trials if t.user_attrs.get("retry_of") == lost.number]
    assert again.number > lost.number and again.params == lost.params
    assert again.state == TrialState.COMPLETE and again.user_attrs[ATTR_FINAL] is True
    done = finals(study)
    assert len(done) == 3 and all(t.state == TrialState.COMPLETE for t in done)
    assert all(t.user_attrs[ATTR_RESULT]["backend"] == "sim" for t in done)
    assert outcome.trials_finished == 3 and outcome.trials_failed == 0
    # no_leftover_servers (conftest.py) checks that the killed worker's server is gone.


# -- 5: the database is unreachable or read-only -------------------------------------------------
def test_unreachable_database_fails_fast_without_the_password(tmp_path: Path) -> None:
    port = free_port()
    url = f"postgresql+psycopg://u:secretpw@127.0.0.1:{port}/db"
    started = time.monotonic()
    result = invoke(run_args(url, tmp_path))
    elapsed = time.monotonic() - started
    assert result.exit_code == 2, result.output
    assert "secretpw" not in result.output
    assert f"cannot reach the database at postgresql+psycopg://u:***@127.0.0.1:{port}/db" in flat(result.stderr)
    assert "connection refused" in result.stderr
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert elapsed < 15
    assert not (tmp_path / "logs").exists()


def test_wrong_postgres_credentials_are_named_without_the_password(pg_database: str, tmp_path: Path) -> None:
    wrong = make_url(pg_database).set(password="not-the-password-xyz").render_as_string(hide_password=False)
    result = invoke(run_args(wrong, tmp_path))
    assert result.exit_code == 2, result.output
    text = flat(result.stderr)
    assert "not-the-password-xyz" not in result.output + result.stderr
    assert "***" in text and ("password" in text.lower() or "authentication" in text.lower())


def _read_only_run(db: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    db.chmod(0o444)
    before = db.read_bytes()
    prefix = drop_dac_capabilities()
    result = autotune(run_args(f"sqlite:///{db}", tmp_path), prefix=prefix, timeout=120)
    text = output(result)
    assert db.read_bytes() == before, "the read-only database was changed"
    assert not db.with_name(db.name + "-journal").exists()
    assert result.returncode != 0, text
    assert "Traceback" not in text, text
    assert f"the database sqlite:///{db} is read-only" in flat(text), text
    return result


def test_read_only_new_sqlite_file_is_named_and_left_unchanged(tmp_path: Path) -> None:
    db = tmp_path / "autotune.db"
    db.touch()  # an empty file: a database with nothing in it yet
    _read_only_run(db, tmp_path)


def test_read_only_existing_sqlite_database_is_named_and_left_unchanged(tmp_path: Path) -> None:
    db = tmp_path / "autotune.db"
    url = f"sqlite:///{db}"
    store = Store(url)
    store.migrate()  # the tables of a previous run: the store's and Optuna's
    store.close()
    with optuna_storage(url):
        pass
    _read_only_run(db, tmp_path)


# -- 6: a broken search space --------------------------------------------------------------------
def test_corrupt_search_space_yaml_exits_2_naming_the_file(tmp_path: Path) -> None:
    spaces = tmp_path / "spaces"
    shutil.copytree(REPO / "search_spaces", spaces)  # the shipped files, plus one broken one
    broken = spaces / "broken.yaml"
    broken.write_text("name: broken\nparams:\n  swa_full_tokens_ratio: {type: float, low: 0.1\n")
    db = tmp_path / "autotune.db"
    result = invoke(run_args(f"sqlite:///{db}", tmp_path), AUTOTUNE_SEARCH_SPACES=str(spaces))
    assert result.exit_code == 2, result.output
    message = flat(result.stderr)
    assert f"search space {broken}" in message and "is not valid YAML (line" in message
    assert not db.exists()


def test_search_space_ratio_bound_out_of_range_exits_2_naming_file_and_key(tmp_path: Path) -> None:
    spaces = tmp_path / "spaces"
    spaces.mkdir()
    bad = spaces / "default.yaml"
    bad.write_text(
        "name: default\nmatch: {}\nparams:\n  swa_full_tokens_ratio:\n    type: float\n    low: feasible\n    high: 2.0\n"
    )
    db = tmp_path / "autotune.db"
    result = invoke(run_args(f"sqlite:///{db}", tmp_path), AUTOTUNE_SEARCH_SPACES=str(spaces))
    assert result.exit_code == 2, result.output
    message = flat(result.stderr)
    assert f"search space {bad}: params.{RATIO}" in message
    assert "(0, 1]" in message
    assert not db.exists()


# -- 7: a model with a single KV pool ------------------------------------------------------------
def test_model_without_hybrid_pool_has_nothing_to_tune_and_writes_nothing(tmp_path: Path) -> None:
    gemma3 = str(DATA / "gemma3")
    fresh = tmp_path / "fresh.db"
    result = invoke([*CLI, "--model", gemma3, "--backend", "sim-fast", "--trials", "2", "--workload", str(TINY),
                     "--storage", f"sqlite:///{fresh}", "--log-dir", str(tmp_path / "logs")])
    assert result.exit_code == 2, result.output
    assert "nothing to tune" in flat(result.stderr)
    assert not fresh.exists()
    assert not (tmp_path / "logs").exists()

    existing = tmp_path / "existing.db"
    store = Store(f"sqlite:///{existing}")
    store.migrate()
    store.close()
    before = existing.read_bytes()
    result = invoke([*CLI, "--model", gemma3, "--backend", "sim-fast", "--storage", f"sqlite:///{existing}",
                     "--log-dir", str(tmp_path / "logs")])
    assert result.exit_code == 2, result.output
    assert "nothing to tune" in flat(result.stderr)
    assert existing.read_bytes() == before


def test_try_ratios_run_once_even_when_the_default_is_already_queued(tmp_path) -> None:
    """--try 0.8 on a new study: 0.8 is already queued as SGLang's default, so it must not run twice
    (a waiting trial keeps its ratio in system_attrs, not params: the real study ran it twice)."""
    import optuna

    from autotune.study.controller import _enqueue_tries, open_study
    from autotune.study.storage import storage_for

    plan = _plan_for_try(tmp_path)
    storage = storage_for(f"sqlite:///{tmp_path}/try.db")
    study = open_study(plan, storage)
    _enqueue_tries(study, (0.8, 0.33))
    _enqueue_tries(study, (0.8, 0.33))  # asked again (resume): nothing new
    waiting = [t.system_attrs["fixed_params"]["swa_full_tokens_ratio"] for t in study.get_trials(states=(optuna.trial.TrialState.WAITING,))]
    assert sorted(waiting) == sorted(plan.first_ratios() + [0.33])


def _plan_for_try(tmp_path):
    from autotune.hardware import load_gpu
    from autotune.models import load_model
    from autotune.study.controller import with_slo
    from autotune.study.plan import build_plan
    from autotune.workloads import get_preset

    return build_plan(model=load_model("26B-A4B"), model_ref="26B-A4B", gpu=load_gpu("H100"), workload=get_preset("chat"),
                      backend="sim-fast", objective=with_slo("throughput", None), n_trials=4, log_dir=str(tmp_path))

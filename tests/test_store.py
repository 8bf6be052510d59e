"""The store against real databases: a SQLite file and a throwaway PostgreSQL server (conftest)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from uuid import uuid4

import optuna
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import make_url

from autotune.hardware import load_gpu
from autotune.models.catalog import load_model
from autotune.store import (
    ExportRecord,
    GPURecord,
    ModelRecord,
    OptimumRecord,
    RuleRecord,
    Store,
    StoreError,
    WorkloadRecord,
    workload_class,
)
from autotune.store.migrations import VERSION_TABLE, include_name
from autotune.store.schema import Base
from autotune.workloads import get_preset

REPO = Path(__file__).resolve().parents[1]
T0 = datetime(2026, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)
STORE_TABLES = {
    "autotune_models", "autotune_gpus", "autotune_workloads", "autotune_optima", "autotune_rules",
    "autotune_exports", "autotune_server_memory", VERSION_TABLE,
}

MODEL = ModelRecord.from_spec(load_model("26B-A4B"))
GPU = GPURecord.from_profile(load_gpu("B200"))
CHAT = WorkloadRecord.from_workload(get_preset("chat"))
SUMMARIZATION = WorkloadRecord.from_workload(get_preset("summarization"))
RULE_MOE = RuleRecord(
    key="moe|chat|180GB+", moe=True, workload_class="chat", memory_class="180GB+", ratio=0.15, spread=0.05,
    gain=0.3, evidence=[{"model": MODEL.name, "gpu": GPU.name, "workload": "chat", "ratio": 0.15, "gain": 0.3}],
    simulated=True, created_at=T0,
)
RULE_DENSE = RuleRecord(
    key="dense|chat|*", moe=False, workload_class="chat", memory_class=None, ratio=0.8, spread=0.0, gain=None,
    evidence=[], simulated=False, created_at=T0,
)


def optimum(**changes: object) -> OptimumRecord:
    fields: dict[str, object] = dict(
        model=MODEL.name, gpu=GPU.name, workload=CHAT.name, study_name="gemma-4-26B-A4B-it|B200|chat|0.5.23",
        ratio=0.15, objective_name="output_throughput", objective_value=5200.0,
        metrics={"ttft_p50_ms": 210.5, "peak_swa_usage": 0.93, "failures": []}, default_value=4000.0, trials=20,
        backend="sim", simulated=True, server_version="0.5.23",
        params={"swa_full_tokens_ratio": 0.15, "mem_fraction_static": 0.85}, updated_at=T0,
    )
    fields.update(changes)
    return OptimumRecord(**fields)  # type: ignore[arg-type]


# -- fixtures -----------------------------------------------------------------------------------
@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'autotune.db'}"
    return request.getfixturevalue("pg_database")


@pytest.fixture
def store(url: str) -> Iterator[Store]:
    store = Store(url)
    store.migrate()
    yield store
    store.close()


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[Store]:
    store = Store(f"sqlite:///{tmp_path / 'autotune.db'}")
    store.migrate()
    yield store
    store.close()


def table_names(url: str) -> set[str]:
    engine = sa.create_engine(url)
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


# -- schema -------------------------------------------------------------------------------------
def test_migrate_twice_and_the_migration_matches_the_models(store: Store, url: str) -> None:
    store.migrate()
    store.check()
    assert table_names(url) == STORE_TABLES
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"include_name": include_name, "compare_type": True})
        assert compare_metadata(context, Base.metadata) == []
    engine.dispose()


def test_check_names_the_fix_for_a_missing_or_unmigrated_database(tmp_path: Path) -> None:
    path = tmp_path / "autotune.db"
    with pytest.raises(StoreError, match=r"no database at .*run Store.migrate\(\)"):
        Store(f"sqlite:///{path}").check()
    assert not path.exists()  # a check never creates the file
    optuna.storages.RDBStorage(f"sqlite:///{path}").engine.dispose()  # a database with Optuna's tables only
    with pytest.raises(StoreError, match=r"no swa-autotune tables: run Store.migrate\(\)"):
        Store(f"sqlite:///{path}").check()
    with pytest.raises(StoreError, match=r"no swa-autotune tables"):
        Store(f"sqlite:///{path}").rules()


def test_a_schema_from_a_newer_version_is_refused(sqlite_store: Store) -> None:
    engine = sa.create_engine(sqlite_store.url)
    with engine.begin() as conn:
        conn.execute(sa.text(f"UPDATE {VERSION_TABLE} SET version_num = '9999_from_the_future'"))
    engine.dispose()
    for call in (sqlite_store.check, sqlite_store.migrate):
        with pytest.raises(StoreError, match=r"revision 9999_from_the_future, written by a newer swa-autotune"):
            call()


# -- round trips --------------------------------------------------------------------------------
def test_every_record_round_trips(store: Store) -> None:
    store.upsert_model(MODEL)
    store.upsert_gpu(GPU)
    store.upsert_gpu(GPURecord(name="H100-80GB", memory_mib=81559, memory_class="80GB"))
    store.upsert_workload(CHAT)
    store.upsert_workload(SUMMARIZATION)
    assert store.models() == [MODEL]
    assert store.gpus() == [GPU, GPURecord(name="H100-80GB", memory_mib=81559, memory_class="80GB")]
    assert store.workloads() == [CHAT, SUMMARIZATION]
    assert (CHAT.workload_class, CHAT.concurrency, SUMMARIZATION.workload_class) == ("chat", 80, "long-context")

    relabelled = GPURecord(name=GPU.name, memory_mib=GPU.memory_mib, memory_class="192GB")
    store.upsert_gpu(relabelled)  # same key: updated in place
    assert store.gpus()[0] == relabelled

    best = optimum(updated_at=T0.astimezone(timezone(timedelta(hours=2))))  # any zone in, the same instant out
    store.record_optimum(best)
    store.record_optimum(optimum(workload=SUMMARIZATION.name, ratio=0.55, default_value=None))
    assert best.gain == pytest.approx(0.3)
    assert store.optimum(MODEL.name, GPU.name, CHAT.name) == best
    assert [o.workload for o in store.optima(model=MODEL.name)] == [CHAT.name, SUMMARIZATION.name]
    assert store.optima(workload=SUMMARIZATION.name)[0].gain is None
    assert store.optima(gpu="H100-80GB") == []
    assert store.optimum(MODEL.name, GPU.name, "no-such-workload") is None

    store.replace_rules([RULE_MOE, RULE_DENSE])
    assert store.rules() == [RULE_DENSE, RULE_MOE]
    store.replace_rules([])
    assert store.rules() == []

    first = ExportRecord(model=MODEL.name, path="/exports/gemma-4-26B-A4B-it.yaml", ratio=0.15,
                         provenance={"rule": RULE_MOE.key, "simulated": True, "trials": 20}, created_at=T0)
    later = ExportRecord(model="never-tuned", path="/exports/never-tuned.yaml", ratio=0.8, provenance={},
                         created_at=T0 + timedelta(seconds=1))
    store.record_export(later)
    store.record_export(first)
    assert store.exports() == [first, later]
    assert store.exports(model="never-tuned") == [later]


def test_record_optimum_keeps_the_one_from_more_trials_or_newer(store: Store) -> None:
    store.upsert_model(MODEL)
    store.upsert_gpu(GPU)
    store.upsert_workload(CHAT)
    key = (MODEL.name, GPU.name, CHAT.name)
    store.record_optimum(first := optimum())
    store.record_optimum(optimum(ratio=0.5, trials=10, updated_at=T0 - timedelta(hours=1)))  # stale and shorter
    store.record_optimum(optimum(ratio=0.5))  # same trials, same time: nothing new
    assert store.optimum(*key) == first
    store.record_optimum(newer := optimum(ratio=0.2, updated_at=T0 + timedelta(hours=1)))
    assert store.optimum(*key) == newer
    store.record_optimum(longer := optimum(ratio=0.25, trials=40, updated_at=T0 - timedelta(hours=2)))
    assert store.optimum(*key) == longer
    assert len(store.optima()) == 1


def test_an_optimum_needs_its_model_gpu_and_workload_stored_first(store: Store) -> None:
    store.upsert_model(MODEL)
    with pytest.raises(StoreError, match="Store the model, GPU and workload first"):
        store.record_optimum(optimum())
    assert store.optima() == []


def test_replace_rules_is_atomic(store: Store) -> None:
    store.replace_rules([RULE_MOE, RULE_DENSE])
    clash = RuleRecord(**{**RULE_DENSE.__dict__, "ratio": 0.5})  # same key: the database's key constraint fires
    with pytest.raises(StoreError, match=r"not replaced \(the previous set is kept\).*unique key"):
        store.replace_rules([RULE_DENSE, clash])
    assert store.rules() == [RULE_DENSE, RULE_MOE]


def test_non_finite_numbers_are_refused_alike_on_every_backend(store: Store) -> None:
    bad = ExportRecord(model=MODEL.name, path="/x.yaml", ratio=0.15, provenance={"ttft": float("inf")})
    with pytest.raises(StoreError, match="ExportRecord.provenance cannot be stored as JSON.*NaN or infinity"):
        store.record_export(bad)
    assert store.exports() == []


def test_lives_beside_optuna_in_one_database(url: str) -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna.storages.RDBStorage(url)
    study = optuna.create_study(study_name="gemma-4-26B-A4B-it|B200|chat", storage=storage)
    study.optimize(lambda trial: trial.suggest_float("ratio", 0.05, 0.95), n_trials=2)

    store = Store(url)
    store.migrate()
    store.upsert_gpu(GPU)
    assert STORE_TABLES | {"studies", "trials", "alembic_version"} <= table_names(url)

    reopened = optuna.storages.RDBStorage(url)  # Optuna checks its schema version beside ours
    again = optuna.load_study(study_name=study.study_name, storage=reopened)
    again.optimize(lambda trial: trial.suggest_float("ratio", 0.05, 0.95), n_trials=1)
    assert len(again.trials) == 3
    store.check()
    assert store.gpus() == [GPU]
    store.close()
    storage.engine.dispose()
    reopened.engine.dispose()


def test_workload_class_follows_the_prompt_to_output_shape() -> None:
    assert workload_class(1024, 1024) == "chat"
    assert workload_class(8192, 1024) == "long-context"
    assert workload_class(3000, 100) == "chat"  # prompt-heavy but short
    assert workload_class(8192, 4096) == "chat"  # long, but outputs keep pace


# -- errors -------------------------------------------------------------------------------------
def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_unreachable_postgres_fails_fast_without_the_password() -> None:
    secret = uuid4().hex
    store = Store(f"postgresql+psycopg://autotune:{secret}@127.0.0.1:{_free_port()}/autotune")
    started = time.monotonic()
    with pytest.raises(StoreError) as raised:
        store.migrate()
    assert time.monotonic() - started < 10
    message = str(raised.value)
    assert "cannot reach the database at postgresql+psycopg://autotune:***@127.0.0.1:" in message
    assert "connection refused. Is the server running? Check --storage." in message
    assert secret not in message


def test_wrong_password_is_named_without_either_password(postgres_url: str) -> None:
    right = make_url(postgres_url).password
    wrong = uuid4().hex
    store = Store(make_url(postgres_url).set(password=wrong).render_as_string(hide_password=False))
    with pytest.raises(StoreError, match="refused the credentials: .*password authentication failed") as raised:
        store.check()
    assert wrong not in str(raised.value) and right not in str(raised.value)


def test_an_unparsable_url_is_not_echoed() -> None:
    with pytest.raises(StoreError, match="not a database URL") as raised:
        Store("postgresql+psycopg://autotune:hunter2@host:port/db")
    assert "hunter2" not in str(raised.value)


def test_a_missing_sqlite_directory_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "no" / "such"
    with pytest.raises(StoreError, match=f"directory {missing} does not exist.*mkdir -p"):
        Store(f"sqlite:///{missing / 'autotune.db'}").migrate()
    assert not missing.exists()


_READ_ONLY_CHILD = """
import json, sys
from autotune.store import GPURecord, RuleRecord, Store, StoreError

path = sys.argv[1]
try:
    open(path, "ab").close()
    writable = True
except PermissionError:
    writable = False
store = Store("sqlite:///" + path)
store.migrate()  # already at head: reads only, so it works on a read-only file
messages = []
for write in (
    lambda: store.upsert_gpu(GPURecord(name="H100-80GB", memory_mib=81559, memory_class="80GB")),
    lambda: store.replace_rules([]),
):
    try:
        write()
        messages.append(None)
    except StoreError as exc:
        messages.append(str(exc))
print(json.dumps({"writable": writable, "messages": messages, "rules": len(store.rules())}))
"""


def test_a_read_only_sqlite_file_is_named_and_left_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "autotune.db"
    store = Store(f"sqlite:///{path}")
    store.migrate()
    store.replace_rules([RULE_MOE])
    store.close()
    path.chmod(0o444)
    before = path.read_bytes()

    command = [sys.executable, "-c", _READ_ONLY_CHILD, str(path)]
    if os.geteuid() == 0:  # root writes through file modes: run the writer without that capability
        if shutil.which("setpriv") is None:
            pytest.skip("running as root without setpriv (util-linux): cannot make a file read-only for root")
        drop = "-dac_override,-dac_read_search"
        command = ["setpriv", f"--inh-caps={drop}", f"--bounding-set={drop}", *command]
    child = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=60)
    assert child.returncode == 0, child.stderr
    report = json.loads(child.stdout)
    assert not report["writable"], "the test could not make the file read-only"
    for message in report["messages"]:
        assert message is not None and f"the database sqlite:///{path} is read-only" in message
    assert report["rules"] == 1
    assert path.read_bytes() == before
    assert not path.with_name(path.name + "-journal").exists()


def test_a_read_only_postgres_database_is_named_and_left_unchanged(pg_database: str) -> None:
    store = Store(pg_database)
    store.migrate()
    store.replace_rules([RULE_MOE])
    engine = sa.create_engine(pg_database, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.exec_driver_sql(f"ALTER DATABASE {make_url(pg_database).database} SET default_transaction_read_only = on")
    engine.dispose()
    store.close()  # new connections are read-only

    store.migrate()
    store.check()
    with pytest.raises(StoreError, match=r"is read-only: .*Nothing was written") as raised:
        store.replace_rules([RULE_DENSE])
    assert make_url(pg_database).password not in str(raised.value)
    assert store.rules() == [RULE_MOE]
    store.close()

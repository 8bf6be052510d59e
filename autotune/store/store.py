"""`Store`: the one API the rest of the project uses to read and write its own tables.

Every write runs in one transaction, so an error leaves the database as it was. Every error
leaves as a `StoreError` whose message masks the password and names the fix.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any, TypeVar

from alembic import command
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import ColumnElement, Connection, create_engine, delete, event, insert, or_, select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import ArgumentError, IntegrityError, NoSuchModuleError, SQLAlchemyError

from autotune.store.errors import CONNECT_TIMEOUT_S, StoreError, detail, explain, masked
from autotune.store.migrations import VERSION_TABLE, alembic_config
from autotune.store.records import (
    ExportRecord,
    GPURecord,
    ModelRecord,
    OptimumRecord,
    RuleRecord,
    ServerMemoryRecord,
    WorkloadRecord,
)
from autotune.store.schema import GPU, Base, Export, Model, Optimum, Rule, ServerMemory, Workload

R = TypeVar("R")

SUPPORTED_BACKENDS = ("sqlite", "postgresql")
# Serializes concurrent `migrate()` calls on one PostgreSQL database (any fixed 64-bit key works).
_MIGRATION_LOCK_KEY = 0x5A7A_A070
# Execution option that makes a SQLite transaction take the write lock up front (BEGIN IMMEDIATE),
# so a read-then-write transaction waits for another writer instead of failing with "locked".
_WRITE = "autotune_write"


class Store:
    """The project's tables (models, GPUs, workloads, optima, rules, exports) at one database URL.

    The URL is Optuna's too: `sqlite:///autotune.db` or `postgresql+psycopg://user:pw@host/db`.
    Nothing connects until the first call.
    """

    def __init__(self, url: str) -> None:
        self.url = _parse_url(url)
        self.display_url = masked(self.url)
        self._engine = _create_engine(self.url)
        self._writer = self._engine.execution_options(**{_WRITE: True})

    def close(self) -> None:
        """Close pooled connections (a PostgreSQL database cannot be dropped while they are open)."""
        self._engine.dispose()

    # -- schema ------------------------------------------------------------------------------
    def migrate(self) -> None:
        """Bring the schema to this version's head. A database already there is not written to."""
        self._check_sqlite_path(creating=True)
        head = _script().get_current_head()
        with self._read() as conn:
            if _current_revision(conn) == head:
                return
        with self._begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK_KEY})
            current = _current_revision(conn)
            if current is not None and current not in _known_revisions():
                raise StoreError(self._newer_schema(current, head))
            command.upgrade(alembic_config(conn), "head")

    def check(self) -> None:
        """Connect and verify the schema is at this version's head, or say what to do."""
        self._check_sqlite_path(creating=False)
        with self._read() as conn:
            current = _current_revision(conn)
        head = _script().get_current_head()
        if current == head:
            return
        if current is None:
            raise StoreError(
                f"the database at {self.display_url} has no swa-autotune tables: run Store.migrate() on it."
            )
        if current not in _known_revisions():
            raise StoreError(self._newer_schema(current, head))
        raise StoreError(
            f"the database at {self.display_url} has schema revision {current}, this swa-autotune needs {head}: "
            "run Store.migrate() on it."
        )

    # -- models, GPUs, workloads -----------------------------------------------------------------
    def upsert_model(self, rec: ModelRecord) -> None:
        self._upsert(Model, rec)

    def upsert_gpu(self, rec: GPURecord) -> None:
        self._upsert(GPU, rec)

    def upsert_workload(self, rec: WorkloadRecord) -> None:
        self._upsert(Workload, rec)

    def models(self) -> list[ModelRecord]:
        return self._select(Model, ModelRecord, order_by=Model.name)

    def gpus(self) -> list[GPURecord]:
        return self._select(GPU, GPURecord, order_by=GPU.name)

    def workloads(self) -> list[WorkloadRecord]:
        return self._select(Workload, WorkloadRecord, order_by=Workload.name)

    # -- optima ------------------------------------------------------------------------------
    def record_optimum(self, rec: OptimumRecord) -> None:
        """Keep one optimum per (model, GPU, workload): the new one wins if it rests on more trials
        or is newer, so a late report from an older or shorter run never overwrites a better one.

        The model, GPU and workload must be stored first (upsert_*): rules join on their features.
        """
        self._upsert(
            Optimum,
            rec,
            when=lambda new: or_(new.trials > Optimum.trials, new.updated_at > Optimum.updated_at),
            refused=lambda detail: (
                f"cannot record the optimum for model {rec.model!r}, GPU {rec.gpu!r}, workload {rec.workload!r} "
                f"in {self.display_url}: {detail}. Store the model, GPU and workload first "
                "(upsert_model, upsert_gpu, upsert_workload)."
            ),
        )

    def optima(
        self, *, model: str | None = None, gpu: str | None = None, workload: str | None = None
    ) -> list[OptimumRecord]:
        where = [
            column == value
            for column, value in ((Optimum.model, model), (Optimum.gpu, gpu), (Optimum.workload, workload))
            if value is not None
        ]
        return self._select(Optimum, OptimumRecord, *where, order_by=(Optimum.model, Optimum.gpu, Optimum.workload))

    def optimum(self, model: str, gpu: str, workload: str) -> OptimumRecord | None:
        found = self.optima(model=model, gpu=gpu, workload=workload)
        return found[0] if found else None

    # -- rules -------------------------------------------------------------------------------
    def replace_rules(self, rules: list[RuleRecord]) -> None:
        """Replace the whole rule set in one transaction: readers see the old set or the new one."""
        refused = (
            lambda detail: f"the rules in {self.display_url} were not replaced (the previous set is kept): "
            f"{detail}. Each rule needs a unique key."
        )
        with self._begin(refused=refused) as conn:
            conn.execute(delete(Rule))
            if rules:
                conn.execute(insert(Rule), [_row(rule) for rule in rules])

    def rules(self) -> list[RuleRecord]:
        return self._select(Rule, RuleRecord, order_by=Rule.key)

    # -- exports -----------------------------------------------------------------------------
    def record_export(self, rec: ExportRecord) -> None:
        with self._begin() as conn:
            conn.execute(insert(Export), [_row(rec)])

    def exports(self, *, model: str | None = None) -> list[ExportRecord]:
        where = [Export.model == model] if model is not None else []
        return self._select(Export, ExportRecord, *where, order_by=(Export.created_at, Export.id))

    # -- the servers' own memory figures ---------------------------------------------------------
    def record_server_memory(self, rec: ServerMemoryRecord) -> None:
        """Keep the latest figure per configuration (model, GPU, server version, tp, mem fraction)."""
        self._upsert(ServerMemory, rec)

    def server_memory(
        self, model: str, gpu: str, server_version: str, tp: int, mem_fraction_static: str
    ) -> ServerMemoryRecord | None:
        found = self._select(
            ServerMemory, ServerMemoryRecord,
            ServerMemory.model == model, ServerMemory.gpu == gpu, ServerMemory.server_version == server_version,
            ServerMemory.tp == tp, ServerMemory.mem_fraction_static == mem_fraction_static,
            order_by=ServerMemory.measured_at,
        )
        return found[-1] if found else None

    # -- plumbing ----------------------------------------------------------------------------
    def _upsert(
        self,
        table: type[Base],
        rec: Any,
        *,
        when: Callable[[Any], ColumnElement[bool]] | None = None,
        refused: Callable[[str], str] | None = None,
    ) -> None:
        """Insert `rec`, or update the row with its key (only where `when(excluded)` holds, if given)."""
        values = _row(rec)
        keys = [column.name for column in table.__table__.primary_key]
        with self._begin(refused=refused) as conn:
            dialect_insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
            stmt = dialect_insert(table).values(**values)
            stmt = stmt.on_conflict_do_update(
                index_elements=keys,
                set_={name: stmt.excluded[name] for name in values if name not in keys},
                where=when(stmt.excluded) if when else None,
            )
            conn.execute(stmt)

    def _select(self, table: type[Base], record: type[R], *where: ColumnElement[bool], order_by: Any) -> list[R]:
        columns = [table.__table__.c[f.name] for f in fields(record)]  # type: ignore[arg-type]
        order = order_by if isinstance(order_by, tuple) else (order_by,)
        self._check_sqlite_path(creating=False)
        with self._read() as conn:
            rows = conn.execute(select(*columns).where(*where).order_by(*order)).mappings().all()
        return [record(**row) for row in rows]

    @contextmanager
    def _begin(self, *, refused: Callable[[str], str] | None = None) -> Iterator[Connection]:
        """A write transaction: committed on success, rolled back on any error.

        `refused` words an integrity violation for the caller (what was not written, and why).
        """
        self._check_sqlite_path(creating=False)
        try:
            with self._writer.begin() as conn:
                yield conn
        except IntegrityError as exc:
            if refused is None:
                raise explain(exc, self.url) from None
            raise StoreError(refused(detail(exc, self.url))) from None
        except SQLAlchemyError as exc:
            raise explain(exc, self.url) from None

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        try:
            with self._engine.connect() as conn:
                yield conn
        except SQLAlchemyError as exc:
            raise explain(exc, self.url) from None

    def _check_sqlite_path(self, *, creating: bool) -> None:
        """Say plainly what SQLite would report as "unable to open database file" (or silently create)."""
        database = self.url.database
        if self.url.get_backend_name() != "sqlite" or not database or database == ":memory:":
            return
        if database.startswith("file:"):  # a SQLite URI (e.g. mode=ro): SQLite resolves it
            return
        path = Path(database).expanduser().absolute()
        if not path.parent.is_dir():
            raise StoreError(
                f"the SQLite database {path} cannot be opened: its directory {path.parent} does not exist. "
                f"Create it (mkdir -p {path.parent}) or point --storage elsewhere."
            )
        if path.exists():
            return
        if not creating:
            raise StoreError(f"there is no database at {path}: run Store.migrate() to create it, or fix --storage.")
        if not os.access(path.parent, os.W_OK):
            raise StoreError(
                f"the SQLite database {path} cannot be created: its directory {path.parent} is not writable. "
                "Fix its permissions or point --storage elsewhere."
            )

    def _newer_schema(self, current: str, head: str) -> str:
        return (
            f"the database at {self.display_url} has schema revision {current}, written by a newer swa-autotune "
            f"(this one knows revisions up to {head}): upgrade swa-autotune (pip install -U swa-autotune)."
        )


def _row(rec: Any) -> dict[str, Any]:
    """The record's column values, its JSON fields checked before any SQL runs.

    NaN and infinity are not JSON: PostgreSQL refuses them and SQLite would keep them, so they
    are refused here, alike on both, naming the field.
    """
    values = asdict(rec)
    for name, value in values.items():
        if isinstance(value, dict | list):
            try:
                json.dumps(value, allow_nan=False)
            except (TypeError, ValueError) as exc:
                raise StoreError(
                    f"{type(rec).__name__}.{name} cannot be stored as JSON ({exc}): write NaN or infinity "
                    "as None or as a string such as 'inf', and other values as numbers, strings, lists or dicts."
                ) from None
    return values


# -- engine and migrations ---------------------------------------------------------------------
def _parse_url(url: str) -> URL:
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):  # ValueError: a non-numeric port
        # Not echoed: an unparsable URL cannot be masked, and it may hold a password.
        raise StoreError(
            "the storage URL is not a database URL: use e.g. sqlite:///autotune.db or "
            "postgresql+psycopg://user:password@host:5432/db"
        ) from None
    if parsed.get_backend_name() not in SUPPORTED_BACKENDS:
        raise StoreError(
            f"the storage URL {masked(parsed)} names the {parsed.get_backend_name()!r} backend; "
            f"swa-autotune stores results in {' or '.join(SUPPORTED_BACKENDS)}."
        )
    return parsed


def _create_engine(url: URL) -> Engine:
    """An engine that fails fast, and gives SQLite real transactions and foreign keys."""
    connect_args = {"connect_timeout": CONNECT_TIMEOUT_S} if url.get_backend_name() == "postgresql" else {}
    try:
        engine = create_engine(url, connect_args=connect_args, pool_pre_ping=True)
    except (NoSuchModuleError, ImportError) as exc:
        raise StoreError(
            f"cannot use {masked(url)}: its database driver is not installed ({exc}). For PostgreSQL install "
            "swa-autotune[postgres] and use a postgresql+psycopg:// URL."
        ) from None
    if engine.dialect.name == "sqlite":
        _sqlite_transactions(engine)
    return engine


def _sqlite_transactions(engine: Engine) -> None:
    """Let SQLAlchemy, not the sqlite3 module, issue BEGIN, so DDL (migrations) is transactional too.

    This is SQLAlchemy's documented recipe for pysqlite. Writers begin IMMEDIATE: they take the
    write lock first and wait for one another (busy timeout) instead of failing mid-transaction.
    """

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        dbapi_connection.execute("PRAGMA foreign_keys = ON")

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get(_WRITE) else "BEGIN")


@functools.cache
def _script() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config())


@functools.cache
def _known_revisions() -> frozenset[str]:
    return frozenset(script.revision for script in _script().walk_revisions())


def _current_revision(conn: Connection) -> str | None:
    return MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE}).get_current_revision()

"""The store's tables, beside Optuna's in the same database.

Every table is prefixed `autotune_` (and Alembic's version table is `autotune_alembic_version`,
not Optuna's `alembic_version`), so the two schemas never touch. Column names are the field
names of `records.py`. This module describes the current schema; the database gets it only
through the migrations in `migrations/versions`, which a test compares against these models.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Double, ForeignKey, Integer, MetaData, String, Text
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import DateTime, TypeDecorator

PREFIX = "autotune_"

# Deterministic constraint names, so later migrations can drop or alter them by name on every backend.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

NAME = String(255)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend.

    PostgreSQL keeps the zone (timestamptz); SQLite stores text without one. Writing UTC and
    reading it back as UTC makes both return equal values, and keeps SQLite's text comparison
    (used by the optimum replacement rule) chronological. The records guarantee aware values.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.astimezone(UTC)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Model(Base):
    __tablename__ = PREFIX + "models"

    name: Mapped[str] = mapped_column(NAME, primary_key=True)
    architecture: Mapped[str] = mapped_column(NAME)
    hybrid_swa: Mapped[bool]
    moe: Mapped[bool]
    num_experts: Mapped[int] = mapped_column(Integer)
    top_k: Mapped[int] = mapped_column(Integer)
    swa_layers: Mapped[int] = mapped_column(Integer)
    full_layers: Mapped[int] = mapped_column(Integer)
    window: Mapped[int | None] = mapped_column(Integer)
    s_over_f: Mapped[float | None] = mapped_column(Double)
    swa_bytes_per_token: Mapped[int] = mapped_column(BigInteger)
    full_bytes_per_token: Mapped[int] = mapped_column(BigInteger)
    weight_bytes: Mapped[float] = mapped_column(Double)
    params_total: Mapped[float] = mapped_column(Double)
    params_active: Mapped[float] = mapped_column(Double)


class GPU(Base):
    __tablename__ = PREFIX + "gpus"

    name: Mapped[str] = mapped_column(NAME, primary_key=True)
    memory_mib: Mapped[int] = mapped_column(Integer)
    memory_class: Mapped[str] = mapped_column(NAME)


class Workload(Base):
    __tablename__ = PREFIX + "workloads"

    name: Mapped[str] = mapped_column(NAME, primary_key=True)
    workload_class: Mapped[str] = mapped_column(NAME)
    mean_prompt: Mapped[float] = mapped_column(Double)
    mean_output: Mapped[float] = mapped_column(Double)
    concurrency: Mapped[int | None] = mapped_column(Integer)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)


class Optimum(Base):
    """One row per (model, GPU, workload). The foreign keys make an optimum's features joinable."""

    __tablename__ = PREFIX + "optima"

    model: Mapped[str] = mapped_column(NAME, ForeignKey(Model.name), primary_key=True)
    gpu: Mapped[str] = mapped_column(NAME, ForeignKey(GPU.name), primary_key=True)
    workload: Mapped[str] = mapped_column(NAME, ForeignKey(Workload.name), primary_key=True)
    study_name: Mapped[str] = mapped_column(NAME)
    ratio: Mapped[float] = mapped_column(Double)
    objective_name: Mapped[str] = mapped_column(NAME)
    objective_value: Mapped[float] = mapped_column(Double)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON)
    default_ratio: Mapped[float] = mapped_column(Double)
    default_value: Mapped[float | None] = mapped_column(Double)
    gain: Mapped[float | None] = mapped_column(Double)
    trials: Mapped[int] = mapped_column(Integer)
    backend: Mapped[str] = mapped_column(NAME)
    simulated: Mapped[bool]
    server_version: Mapped[str] = mapped_column(NAME)
    params: Mapped[dict[str, Any]] = mapped_column(JSON)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Rule(Base):
    __tablename__ = PREFIX + "rules"

    key: Mapped[str] = mapped_column(NAME, primary_key=True)
    moe: Mapped[bool]
    workload_class: Mapped[str] = mapped_column(NAME)
    memory_class: Mapped[str | None] = mapped_column(NAME)
    ratio: Mapped[float] = mapped_column(Double)
    spread: Mapped[float] = mapped_column(Double)
    gain: Mapped[float | None] = mapped_column(Double)
    evidence: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    simulated: Mapped[bool]
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Export(Base):
    """An export history. No foreign key on `model`: rules transfer to models that were never tuned."""

    __tablename__ = PREFIX + "exports"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model: Mapped[str] = mapped_column(NAME, index=True)
    path: Mapped[str] = mapped_column(Text)
    ratio: Mapped[float] = mapped_column(Double)
    provenance: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ServerMemory(Base):
    """A real server's own account of its memory, the latest per configuration (records.ServerMemoryRecord)."""

    __tablename__ = PREFIX + "server_memory"

    model: Mapped[str] = mapped_column(NAME, primary_key=True)
    gpu: Mapped[str] = mapped_column(NAME, primary_key=True)
    server_version: Mapped[str] = mapped_column(NAME, primary_key=True)
    tp: Mapped[int] = mapped_column(Integer, primary_key=True)
    mem_fraction_static: Mapped[str] = mapped_column(NAME, primary_key=True)
    kvcache_gib: Mapped[float] = mapped_column(Double)
    weight_gib: Mapped[float | None] = mapped_column(Double)
    study_name: Mapped[str] = mapped_column(NAME)
    trial: Mapped[int] = mapped_column(Integer)
    measured_at: Mapped[datetime] = mapped_column(UTCDateTime)

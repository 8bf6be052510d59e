"""Alembic environment: migrate over the connection `Store.migrate` opened (inside its transaction)."""

from alembic import context

from autotune.store.migrations import VERSION_TABLE, include_name
from autotune.store.schema import Base

context.configure(
    connection=context.config.attributes["connection"],
    target_metadata=Base.metadata,
    version_table=VERSION_TABLE,
    include_name=include_name,
)
with context.begin_transaction():
    context.run_migrations()

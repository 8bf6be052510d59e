"""The store's Alembic environment, shipped in the package and driven from code (no alembic.ini).

Alembic's version table is `autotune_alembic_version`: Optuna keeps its own schema version in
`alembic_version` in the same database, and the two histories must never mix.
"""

from __future__ import annotations

from typing import Any

from alembic.config import Config
from sqlalchemy.engine import Connection

from autotune.store.schema import PREFIX

VERSION_TABLE = PREFIX + "alembic_version"
SCRIPT_LOCATION = "autotune.store:migrations"


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic config for this package's migrations; `env.py` migrates over `connection`."""
    config = Config()
    config.set_main_option("script_location", SCRIPT_LOCATION)
    config.attributes["connection"] = connection
    return config


def include_name(name: str | None, type_: str, parent_names: Any) -> bool:
    """Autogenerate sees only the store's tables, never Optuna's or its own version table."""
    if type_ == "table":
        return bool(name) and name.startswith(PREFIX) and name != VERSION_TABLE
    return True

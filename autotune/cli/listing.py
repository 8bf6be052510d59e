"""A listing: rows of typed values shown as a table for people or as JSON for scripts (`--json`).

Every listing command builds its rows once, as plain values; the table formats them, the JSON
keeps them as numbers, so a script never parses a formatted cell.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import typer
from rich.table import Table

from autotune.cli.console import console, print_json

JSON_OPTION_HELP = "Print machine-readable JSON on stdout instead of the table."


def json_option() -> Any:
    return typer.Option(False, "--json", help=JSON_OPTION_HELP)


@dataclass(frozen=True)
class Column:
    key: str  # the row's key, and the JSON field
    header: str  # the table's heading
    format: Callable[[Any], str] = str
    right: bool = False  # numbers are right-aligned
    missing: str = "-"  # shown for None

    def cell(self, value: Any) -> str:
        return self.missing if value is None else self.format(value)


def table_of(rows: Sequence[dict[str, Any]], columns: Sequence[Column], *, title: str | None = None) -> Table:
    table = Table(title=title)
    for column in columns:
        table.add_column(column.header, justify="right" if column.right else "left")
    for row in rows:
        table.add_row(*(column.cell(row.get(column.key)) for column in columns))
    return table


def show(
    rows: Sequence[dict[str, Any]],
    columns: Sequence[Column],
    *,
    as_json: bool,
    title: str | None = None,
    notes: Sequence[str] = (),
    extra: dict[str, Any] | None = None,
) -> None:
    """The table (then its notes) on stdout, or `{...extra, "rows": rows}` as JSON."""
    if as_json:
        print_json({**(extra or {}), "rows": list(rows)} if extra is not None else list(rows))
        return
    console.print(table_of(rows, columns, title=title))
    for note in notes:
        console.print(note)

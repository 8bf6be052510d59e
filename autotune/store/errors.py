"""The store's one error type, and the translation of driver errors into messages that name the fix.

A message names the database by its URL with the password masked, and any text taken from a
driver is scrubbed of the password too: these messages end up in terminals, logs and CI output.
"""

from __future__ import annotations

import re
import sqlite3

from sqlalchemy.engine import URL
from sqlalchemy.exc import IntegrityError

CONNECT_TIMEOUT_S = 5


class StoreError(RuntimeError):
    """The store cannot do what was asked; the message says why and what to change."""


def masked(url: URL) -> str:
    return url.render_as_string(hide_password=True)


def scrub(text: str, url: URL) -> str:
    """`text` without the URL's password, in case a driver echoed it."""
    return text.replace(url.password, "***") if url.password else text


# Phrases of libpq / OS errors that mean "no server to talk to", and how to say them.
_UNREACHABLE = (
    ("connection refused", "connection refused"),
    ("could not translate host name", "unknown host name"),
    ("name or service not known", "unknown host name"),
    ("timeout expired", f"no answer within {CONNECT_TIMEOUT_S} s"),
    ("no route to host", "no route to host"),
    ("network is unreachable", "network is unreachable"),
    ("no such file or directory", "no server socket at that path"),
    ("invalid response to ssl negotiation", "something other than PostgreSQL answers at that address"),
)
_BAD_CREDENTIALS = ("password authentication failed", "authentication failed", "no password supplied",
                    "no pg_hba.conf entry")
_LIBPQ_PREAMBLE = re.compile(r"^connection failed: connection to server .*? failed: (FATAL:\s+)?")
_MISSING_DATABASE = re.compile(r'database ".*" does not exist')
_READ_ONLY_SQLSTATE = "25006"  # read_only_sql_transaction
_INSUFFICIENT_PRIVILEGE = "42501"
_UNDEFINED_TABLE = "42P01"


def explain(exc: Exception, url: URL) -> StoreError:
    """A StoreError for a failed database operation; `exc` is a SQLAlchemy or driver error."""
    where = masked(url)
    orig = getattr(exc, "orig", None) or exc
    first = detail(exc, url)
    lowered = str(orig).lower()
    sqlstate = getattr(orig, "sqlstate", None)

    if _is_read_only(orig, sqlstate):
        hint = (
            "the directory holding it is not writable, so SQLite cannot create its journal"
            if getattr(orig, "sqlite_errorname", "") == "SQLITE_READONLY_DIRECTORY"
            else first
        )
        return StoreError(
            f"the database {where} is read-only: {hint}. Nothing was written. "
            "Point --storage at a writable database, or fix its permissions."
        )
    if any(phrase in lowered for phrase in _BAD_CREDENTIALS):
        return StoreError(
            f"the database at {where} refused the credentials: {first}. "
            "Check the user name and password in --storage."
        )
    for phrase, reason in _UNREACHABLE:
        if phrase in lowered:
            return StoreError(
                f"cannot reach the database at {where}: {reason}. Is the server running? Check --storage."
            )
    if _MISSING_DATABASE.search(lowered):
        return StoreError(
            f"the server at {where} has no database {url.database!r}: "
            f"create it (createdb {url.database}) or fix --storage."
        )
    if sqlstate == _UNDEFINED_TABLE or "no such table" in lowered:
        return StoreError(
            f"the database at {where} has no swa-autotune tables: run Store.migrate() on it first ({first})."
        )
    if sqlstate == _INSUFFICIENT_PRIVILEGE:
        return StoreError(
            f"the user in {where} lacks a privilege: {first}. Grant it, or connect as the tables' owner."
        )
    if getattr(orig, "sqlite_errorname", "") == "SQLITE_CANTOPEN":
        return StoreError(
            f"SQLite cannot open {where}: {first}. Check that the file and its directory exist and that "
            "this user may read them (and write them, to store results)."
        )
    if getattr(orig, "sqlite_errorname", "") == "SQLITE_BUSY":
        return StoreError(
            f"the database {where} stayed locked by another process: {first}. "
            "Use PostgreSQL when several processes write at once."
        )
    kind = "integrity" if isinstance(exc, IntegrityError) else type(orig).__name__
    return StoreError(f"database error ({kind}) at {where}: {first}")


def _is_read_only(orig: BaseException, sqlstate: str | None) -> bool:
    if sqlstate == _READ_ONLY_SQLSTATE:
        return True
    return isinstance(orig, sqlite3.Error) and getattr(orig, "sqlite_errorname", "").startswith("SQLITE_READONLY")


def detail(exc: BaseException, url: URL) -> str:
    """The first line of the driver's message, password scrubbed.

    Without SQLAlchemy's SQL echo, and without libpq's "connection to server at ... failed: FATAL:"
    preamble, which repeats the address the message already names.
    """
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).strip()
    line = text.splitlines()[0] if text else type(orig).__name__
    return scrub(_LIBPQ_PREAMBLE.sub("", line), url)


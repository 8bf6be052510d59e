"""Shared fixtures: no simulated server outlives a test; a throwaway PostgreSQL server.

Tests that boot simulated servers (directly, through Ray workers or through `autotune run`) mark
themselves `pytestmark = pytest.mark.usefixtures("no_leftover_servers")` and take `TAG` and
`sim_servers` from here (`from conftest import TAG, sim_servers`).
"""

from __future__ import annotations

import ctypes
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

# -- the bench scripts, for the tests that read real data through them ---------------------------


def load_bench(name: str) -> Any:
    """bench/<name>.py as a module (the bench scripts are not a package), registered under its name
    so that its dataclasses can look their module up, and loaded once per test session."""
    import importlib.util
    import sys

    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parents[1] / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules[name] = module
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


# -- simulated servers: none may outlive a test ---------------------------------------------------

# Servers started by this test session carry this tag in their environment (every child process
# inherits it), so the leak check never confuses them with servers other processes on the machine run.
TAG = {"AUTOTUNE_TEST_TAG": f"pytest-{os.getpid()}"}
os.environ.update(TAG)


def sim_servers() -> list[psutil.Process]:
    """This session's running `autotune.sim.server` processes."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if "autotune.sim.server" in (proc.info["cmdline"] or []) and proc.environ().get("AUTOTUNE_TEST_TAG") == TAG["AUTOTUNE_TEST_TAG"]:
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


@pytest.fixture
def no_leftover_servers() -> Iterator[None]:
    """Fails a test that leaves a simulated server running (after a 10 s grace), and kills it."""
    before = {p.pid for p in sim_servers()}
    yield
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and [p for p in sim_servers() if p.pid not in before]:
        time.sleep(0.2)
    left = [p for p in sim_servers() if p.pid not in before]
    for proc in left:
        proc.kill()
    assert not left, f"server processes outlived their trial: {[p.pid for p in left]}"


# -- a throwaway PostgreSQL server -------------------------------------------------------------
_PG_ROLE = "autotune"
_PG_ADMIN = "admin"
_PG_START_TIMEOUT_S = 30
_PR_SET_PDEATHSIG = 1


def _pg_bindir() -> Path | None:
    """The directory holding initdb and postgres: PostgreSQL 15's first, then PATH's, then any version."""
    candidates = [Path("/usr/lib/postgresql/15/bin")]
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
    return next((d for d in candidates if (d / "initdb").is_file() and (d / "postgres").is_file()), None)


def _as_unprivileged() -> dict[str, Any]:
    """subprocess arguments that drop root: PostgreSQL refuses to run as root.

    Uses the `postgres` account the distribution's package creates, else `nobody`; the server's
    directory is chowned to it, so no account needs creating.
    """
    if os.geteuid() != 0:
        return {}
    try:
        account = pwd.getpwnam("postgres")
    except KeyError:
        account = pwd.getpwnam("nobody")
    return {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}


def _die_with_parent_hook() -> Callable[[], None]:
    """A preexec_fn: if pytest itself is killed, the postmaster gets SIGQUIT (immediate shutdown).

    prctl is looked up here, in the parent, so the forked child only calls it (no dlopen after fork).
    """
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    return lambda: prctl(_PR_SET_PDEATHSIG, signal.SIGQUIT)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A SQLAlchemy URL to a fresh PostgreSQL server, stopped (and its files removed) after the session.

    The server listens on 127.0.0.1 (scram-sha-256 password auth) and on a Unix socket in its
    temporary directory (trust, used only to create the role). The role `autotune` owns the
    database `autotune` and may create more (one per test). Without PostgreSQL's server
    binaries the tests that use this fixture skip, or fail when `CI` is set.
    """
    bindir = _pg_bindir()
    if bindir is None:
        message = "PostgreSQL server binaries (initdb, postgres) not found: run scripts/install-postgres.sh"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    psycopg = pytest.importorskip("psycopg", reason="psycopg is not installed: pip install -e '.[test]'")

    drop_root = _as_unprivileged()
    base = Path(tempfile.mkdtemp(prefix="autotune-pg-"))
    server: subprocess.Popen[bytes] | None = None
    try:
        if drop_root:
            os.chown(base, drop_root["user"], drop_root["group"])
        data, log_path = base / "data", base / "server.log"
        initdb = subprocess.run(
            [bindir / "initdb", "-D", data, "-U", _PG_ADMIN, "--auth-local=trust", "--auth-host=scram-sha-256",
             "-E", "UTF8", "--no-locale", "--no-sync", "--no-instructions"],
            capture_output=True, text=True, cwd=base, **drop_root,
        )
        if initdb.returncode != 0:
            raise RuntimeError(f"initdb failed ({initdb.returncode}):\n{initdb.stdout}{initdb.stderr}")
        port = _free_port()
        with open(log_path, "wb") as log:
            server = subprocess.Popen(
                [bindir / "postgres", "-D", data, "-p", str(port), "-k", base, "-c", "listen_addresses=127.0.0.1",
                 "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"],
                stdout=log, stderr=subprocess.STDOUT, cwd=base, start_new_session=True,
                preexec_fn=_die_with_parent_hook(), **drop_root,
            )
        admin = _wait_for_postgres(psycopg, server, base, port, log_path)
        password = secrets.token_hex(16)
        with admin:
            admin.execute(f"CREATE ROLE {_PG_ROLE} LOGIN CREATEDB PASSWORD '{password}'")
            admin.execute(f"CREATE DATABASE {_PG_ROLE} OWNER {_PG_ROLE}")
        yield f"postgresql+psycopg://{_PG_ROLE}:{password}@127.0.0.1:{port}/{_PG_ROLE}"
    finally:
        if server is not None:
            _stop(server)
        shutil.rmtree(base, ignore_errors=True)


def _wait_for_postgres(psycopg: Any, server: subprocess.Popen[bytes], socket_dir: Path, port: int, log: Path) -> Any:
    """An autocommit admin connection over the socket, once the server accepts one."""
    deadline = time.monotonic() + _PG_START_TIMEOUT_S
    while True:
        if server.poll() is not None:
            raise RuntimeError(f"PostgreSQL exited with {server.returncode} at start:\n{log.read_text()}")
        try:
            return psycopg.connect(
                host=str(socket_dir), port=port, user=_PG_ADMIN, dbname="postgres", autocommit=True, connect_timeout=2
            )
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"PostgreSQL did not accept connections in {_PG_START_TIMEOUT_S} s:\n{log.read_text()}"
                ) from None
            time.sleep(0.1)


def _stop(server: subprocess.Popen[bytes]) -> None:
    """Fast shutdown (SIGINT), then SIGKILL to the whole process group if it does not go."""
    server.send_signal(signal.SIGINT)
    try:
        server.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()


@pytest.fixture
def pg_database(postgres_url: str) -> Iterator[str]:
    """A fresh database on the session's PostgreSQL server, dropped afterwards (open connections included)."""
    import sqlalchemy as sa
    from sqlalchemy.engine import make_url

    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name}")
    yield make_url(postgres_url).set(database=name).render_as_string(hide_password=False)
    with admin.connect() as conn:
        conn.exec_driver_sql(f"DROP DATABASE {name} WITH (FORCE)")
    admin.dispose()

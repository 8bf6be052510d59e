"""Serve optuna-dashboard on the tuner's database.

- Bound to 127.0.0.1 by default: optuna-dashboard has no authentication and can edit and delete
  studies, so any other address gets a loud warning.
- The port is bound before anything else: a busy port is a clear `PortInUse` error.
- While the database holds no study (or not even Optuna's tables), `/` and `/dashboard` answer a
  page that says how to produce one; the database is not written to until a study exists.
- Plots and notes are attached (autotune.dashboard.attach) at start-up and every `refresh_s`
  seconds, so a study that is running gains its trials' plots as they finish.
"""

from __future__ import annotations

import errno
import html
import ipaddress
import logging
import socket
import threading
import time
from socketserver import ThreadingMixIn
from typing import Any, Callable, Iterable
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import sqlalchemy

log = logging.getLogger(__name__)

LOOPBACK_NAMES = {"localhost", "ip6-localhost"}


class DashboardError(Exception):
    """A user-facing problem starting the dashboard (message, no traceback)."""


class PortInUse(DashboardError):
    pass


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def exposure_warning(host: str, port: int) -> str | None:
    """The warning to print when the dashboard is bound to something other than loopback."""
    if is_loopback(host):
        return None
    return (
        f"the dashboard is bound to {host}:{port}, not loopback. optuna-dashboard has no authentication: "
        "anyone who can reach this address can read every study and edit or delete them. "
        "Prefer --host 127.0.0.1 with an SSH tunnel (ssh -L 8080:127.0.0.1:8080 HOST)."
    )


def _display_url(url: str) -> str:
    try:
        return sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001
        return url


def count_studies(url: str) -> int | None:
    """Studies in the database; None when Optuna's tables are not there (nothing was ever run)."""
    engine = sqlalchemy.create_engine(url)
    try:
        with engine.connect() as conn:
            if not sqlalchemy.inspect(conn).has_table("studies"):
                return None
            return int(conn.execute(sqlalchemy.text("SELECT COUNT(*) FROM studies")).scalar_one())
    finally:
        engine.dispose()


def no_studies_page(url: str, tables: bool) -> str:
    shown = html.escape(_display_url(url))
    why = "has no Optuna tables yet" if not tables else "holds no study yet"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>swa-autotune dashboard: no studies yet</title>
<meta http-equiv="refresh" content="10">
<style>body{{font-family:sans-serif;max-width:46em;margin:3em auto;line-height:1.5}}code,pre{{background:#f4f4f4;padding:.1em .3em}}</style>
</head><body>
<h1 id="no-studies">No studies yet</h1>
<p>The database <code>{shown}</code> {why}. The dashboard shows the studies that <code>autotune run</code>
records there; start one against the same URL:</p>
<pre>autotune run --model 26B-A4B --storage {shown}</pre>
<p>or, without a GPU and in seconds, on the simulator:</p>
<pre>autotune run --model 26B-A4B --backend sim-fast --trials 4 --storage {shown}</pre>
<p>Check <code>--storage</code> if you expected studies here. This page reloads every 10 s and turns into
optuna-dashboard as soon as a study exists.</p>
</body></html>
"""


class DashboardApp:
    """WSGI app: the helpful page while there are no studies, optuna-dashboard once there are."""

    def __init__(self, url: str, *, on_first_study: Callable[[], None] | None = None, check_every_s: float = 2.0) -> None:
        self.url = url
        self.on_first_study = on_first_study
        self.check_every_s = check_every_s
        self._inner: Any = None
        self._lock = threading.Lock()
        self._checked_at = 0.0
        self._count: int | None = None

    def _studies(self) -> int | None:
        now = time.monotonic()
        if now - self._checked_at > self.check_every_s:
            self._count = count_studies(self.url)
            self._checked_at = now
        return self._count

    def inner(self) -> Any:
        with self._lock:
            if self._inner is None:
                from optuna_dashboard import wsgi

                if self.on_first_study is not None:
                    self.on_first_study()
                self._inner = wsgi(self.url)
            return self._inner

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if self._inner is None:
            try:
                count = self._studies()
            except sqlalchemy.exc.SQLAlchemyError as exc:
                body = f"<!doctype html><h1>Cannot read the database</h1><p>{html.escape(_display_url(self.url))}: " \
                       f"{html.escape(str(exc.__cause__ or exc).splitlines()[0])}</p>".encode()
                start_response("503 Service Unavailable", [("Content-Type", "text/html; charset=utf-8")])
                return [body]
            if not count:
                path = environ.get("PATH_INFO", "/").rstrip("/")
                if path in ("", "/dashboard") or path.startswith("/dashboard/"):
                    body = no_studies_page(self.url, tables=count is not None).encode()
                    start_response("200 OK", [("Content-Type", "text/html; charset=utf-8")])
                    return [body]
                if path == "/api/studies":
                    start_response("200 OK", [("Content-Type", "application/json")])
                    return [b'{"study_summaries": []}']
                start_response("404 Not Found", [("Content-Type", "text/plain")])
                return [b"no studies yet\n"]
        return self.inner()(environ, start_response)


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = False  # a port another process listens on must fail to bind


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        log.debug("%s - %s", self.address_string(), format % args)


def bind(app: Callable[..., Any], host: str, port: int) -> WSGIServer:
    """Bind the server now, so a busy port fails before anything else happens."""
    server_class = _ThreadingServer
    if ":" in host:
        class _V6(_ThreadingServer):
            address_family = socket.AF_INET6

        server_class = _V6
    try:
        return make_server(host, port, app, server_class=server_class, handler_class=_QuietHandler)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise PortInUse(
                f"port {port} on {host} is already in use (another dashboard?). Choose another with --port, "
                f"or find the owner with `ss -ltnp 'sport = :{port}'`."
            ) from None
        if exc.errno in (errno.EADDRNOTAVAIL, errno.EACCES):
            raise DashboardError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
        if isinstance(exc, socket.gaierror):
            raise DashboardError(f"cannot listen on {host}:{port}: unknown host") from None
        raise


class _Refresher(threading.Thread):
    """Attaches plots and notes now and then, so running studies gain them as trials finish."""

    def __init__(self, url: str, every_s: float) -> None:
        super().__init__(daemon=True, name="autotune-dashboard-refresh")
        self.url = url
        self.every_s = every_s
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.every_s):
            refresh(self.url)


def refresh(url: str) -> None:
    from autotune.dashboard.attach import attach_all

    try:
        if count_studies(url):
            stats = attach_all(url)
            log.info("attached: %s", stats)
    except Exception as exc:  # noqa: BLE001 - a failed refresh must not stop the dashboard
        log.warning("attaching plots failed: %s", exc)


class Dashboard:
    """The bound server; `serve_forever()` blocks, `shutdown()` stops (from another thread)."""

    def __init__(self, url: str, host: str = "127.0.0.1", port: int = 8080, *, refresh_s: float = 30.0,
                 attach_now: bool = True) -> None:
        self.url = url
        self.app = DashboardApp(url)
        self.server = bind(self.app, host, port)
        self.host, self.port = host, self.server.server_port
        self.warning = exposure_warning(host, self.port)
        if attach_now:
            refresh(url)
        self.refresher = _Refresher(url, refresh_s) if refresh_s > 0 else None

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/dashboard"

    def serve_forever(self) -> None:
        if self.refresher is not None:
            self.refresher.start()
        try:
            self.server.serve_forever(poll_interval=0.5)
        finally:
            if self.refresher is not None:
                self.refresher.stopped.set()
            self.server.server_close()

    def shutdown(self) -> None:
        self.server.shutdown()

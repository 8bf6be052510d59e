"""One server process: start it in its own process group with its log captured, wait until it is
ready (or classify why it never will be), and stop the whole group, verifying the port is free.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import httpx

from workers.failures import FailureKind, TrialFailure, classify_boot_log, parse_pool_layout
from workers.reaper import pid_alive
from workers.spec import ServerSpec

READY_LINE = "The server is fired up and ready to roll!"
LOG_TAIL_LINES = 40


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


# A server binds its port only once it has loaded (SGLang after its weights, the simulator after
# --boot-delay), and the kernel hands the same free port to the next bind(0) meanwhile: two trials
# starting together on one node drew the same port, and the second server died at its bind. So each
# port given to a server is claimed, for every process on the node, by a file named after it, until
# that server is stopped; a claim whose process is gone is stale and taken over.
PORT_CLAIMS = Path(os.environ.get("SWA_AUTOTUNE_PORT_CLAIMS", "/tmp/swa-autotune-port-claims"))


def _claim_holder_alive(path: Path) -> bool:
    try:
        pid = int(path.read_text() or "0")
    except (OSError, ValueError):
        return False
    return pid > 0 and pid_alive(pid)


def claim_port(host: str = "127.0.0.1", attempts: int = 64) -> int:
    """A free port no other server of this node has been given and not yet given back."""
    if not PORT_CLAIMS.is_dir():
        PORT_CLAIMS.mkdir(parents=True, exist_ok=True)
        try:
            PORT_CLAIMS.chmod(0o1777)  # every user's servers claim here, as in /tmp
        except OSError:
            pass
    for _ in range(attempts):
        port = free_port(host)
        path = PORT_CLAIMS / str(port)
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            if not _claim_holder_alive(path):
                path.unlink(missing_ok=True)  # its owner died without giving it back
            continue
        except PermissionError:
            return port  # a claims folder this user cannot write: the port, unclaimed (as before claims)
        with os.fdopen(fd, "w") as handle:
            handle.write(str(os.getpid()))
        return port
    raise RuntimeError(f"no free port after {attempts} tries (claims under {PORT_CLAIMS})")


def release_port(port: int) -> None:
    path = PORT_CLAIMS / str(port)
    try:
        if int(path.read_text() or "0") == os.getpid():
            path.unlink()
    except (OSError, ValueError):
        pass


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


@dataclass(frozen=True)
class BootInfo:
    port: int
    boot_s: float
    full_tokens: int | None
    swa_tokens: int | None


class ServerProcess:
    """A server started from a ServerSpec. Use as a context manager: the group dies on exit."""

    def __init__(self, spec: ServerSpec, log_path: str | Path, *, boot_timeout_s: float = 900.0) -> None:
        self.spec = spec
        self.log_path = Path(log_path)
        self.boot_timeout_s = boot_timeout_s
        self._claimed = spec.port is None  # a port given in the spec is the caller's to manage
        self.port = spec.port or claim_port(spec.host)
        self.argv = spec.argv(self.port)
        self._proc: subprocess.Popen[bytes] | None = None
        self._reaper: subprocess.Popen[bytes] | None = None
        # Its owner may stop it from another thread (LocalRunner.close). Re-entrant: a Ctrl-C landing
        # between acquiring and entering the block must not leave the stop in finally waiting on itself.
        self._stop_lock = threading.RLock()
        self._stopped = False

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        with self._stop_lock:  # never start a server its owner has already stopped
            if self._stopped:
                raise TrialFailure(FailureKind.BOOT_FAILED, "stopped by its owner before it started")
            self._start_locked()

    def _start_locked(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = self.spec.environment()
        with open(self.log_path, "wb") as log:  # a fresh log: an old ready line must not count
            log.write(f"$ {' '.join(self.argv)}\n".encode())
            log.flush()
            self._proc = subprocess.Popen(
                self.argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=env, start_new_session=True,  # its own process group: stop() kills all of it
            )
        self._reaper = subprocess.Popen(
            [sys.executable, "-m", "workers.reaper", str(os.getpid()), str(self._proc.pid)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True, cwd=str(Path(__file__).resolve().parents[1]),
        )

    def wait_ready(self, poll_s: float = 0.25, watch: Callable[[str, float], None] | None = None) -> BootInfo:
        """Block until ready; raise TrialFailure(BOOT_REFUSED/OUT_OF_MEMORY/BOOT_FAILED/BOOT_TIMEOUT).

        `watch(log, seconds since the wait began)` sees the log at every poll while it boots; what it
        raises ends the wait (workers/handover.py stops an early boot that way)."""
        proc = self._proc
        assert proc is not None or self._stopped, "start() first"
        started = time.monotonic()
        deadline = started + self.boot_timeout_s
        with httpx.Client(timeout=2.0) as client:
            while True:
                if self._stopped:
                    raise TrialFailure(FailureKind.BOOT_FAILED, "stopped by its owner while booting", self.log_tail())
                log = self.read_log()
                if watch is not None:
                    watch(log, time.monotonic() - started)
                if READY_LINE in log or (proc.poll() is None and self._healthy(client)):
                    layout = parse_pool_layout(log)
                    return BootInfo(
                        port=self.port,
                        boot_s=time.monotonic() - started,
                        full_tokens=layout[0] if layout else None,
                        swa_tokens=layout[1] if layout else None,
                    )
                if proc.poll() is not None:
                    log = self.read_log()
                    kind, line = classify_boot_log(log) or (
                        FailureKind.BOOT_FAILED, f"server exited with code {proc.returncode} before it was ready"
                    )
                    raise TrialFailure(kind, line, self.log_tail())
                if time.monotonic() > deadline:
                    raise TrialFailure(
                        FailureKind.BOOT_TIMEOUT,
                        f"server not ready after {self.boot_timeout_s:.0f} s (no ready line, /health not 200)",
                        self.log_tail(),
                    )
                time.sleep(poll_s)

    def _healthy(self, client: httpx.Client) -> bool:
        try:
            return client.get(f"{self.base_url}/health").status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self, grace_s: float = 10.0) -> None:
        """SIGTERM the whole group, SIGKILL what is left after `grace_s`, then check the port.

        The leader is reaped only after the last signal to its group: until then its pid (the
        group id) cannot be reused, so a signal can never reach an unrelated process group.
        """
        with self._stop_lock:
            self._stopped = True
            self._stop_locked(grace_s)

    def _stop_locked(self, grace_s: float) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            _signal_group(proc.pid, signal.SIGTERM)
            _wait_exit_unreaped(proc.pid, grace_s)
            _signal_group(proc.pid, signal.SIGKILL)  # stragglers of the group, even if the leader left
            proc.wait()
        if self._reaper is not None:
            self._reaper.kill()
            self._reaper.wait()
            self._reaper = None
        deadline = time.monotonic() + 5.0
        while port_in_use(self.port, self.spec.host) and time.monotonic() < deadline:
            time.sleep(0.1)
        if port_in_use(self.port, self.spec.host):
            raise RuntimeError(f"port {self.port} is still in use after the server group was stopped")
        if self._claimed:
            release_port(self.port)

    def __enter__(self) -> "ServerProcess":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- observing ---------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        return f"http://{self.spec.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return self._proc.poll() if self._proc else None

    def read_log(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        return "\n".join(self.read_log().splitlines()[-lines:])


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def _wait_exit_unreaped(pid: int, timeout_s: float) -> bool:
    """Wait for a child to exit without reaping it (its pid stays reserved as a zombie)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
                return True
        except ChildProcessError:
            return True
        time.sleep(0.05)
    return False

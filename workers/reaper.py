"""A sidecar that kills a server's process group once the process that owns it is gone.

`ServerProcess` stops its server on every normal path (stop(), context exit, SIGTERM, Ctrl-C).
The one path it cannot cover is its own sudden death: `kill -9` of the tuner, a Ray actor killed
or a node lost. For that, each server gets this watcher, started in a session of its own so the
owner's death does not take it down: it polls the owner and, when the owner is gone, sends the
server's group SIGTERM, then SIGKILL, and exits. It also exits once the group is gone.

    python -m workers.reaper OWNER_PID SERVER_PGID
"""

from __future__ import annotations

import os
import signal
import sys
import time

POLL_S = 0.5
GRACE_S = 5.0


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists (one of another user's counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _owner_gone(owner: int) -> bool:
    # Reparenting does not help here (we are not the owner's child), so poll the pid; a zombie
    # owner counts as gone.
    if not pid_alive(owner):
        return True
    try:
        with open(f"/proc/{owner}/stat", encoding="ascii") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return False


def reap(owner: int, pgid: int) -> int:
    while _group_alive(pgid):
        if _owner_gone(owner):
            try:
                os.killpg(pgid, signal.SIGTERM)
            except ProcessLookupError:
                return 0
            deadline = time.monotonic() + GRACE_S
            while time.monotonic() < deadline and _group_alive(pgid):
                time.sleep(0.1)
            try:
                os.killpg(pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            return 0
        time.sleep(POLL_S)
    return 0


if __name__ == "__main__":
    sys.exit(reap(int(sys.argv[1]), int(sys.argv[2])))

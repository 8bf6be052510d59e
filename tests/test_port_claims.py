"""Ports given to servers are claimed node-wide until the server stops (workers/process.py): two
trials starting together once drew the same port, because a server binds only after loading."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from workers import process
from workers.process import ServerProcess, claim_port, release_port

from test_workers import sim_spec

pytestmark = pytest.mark.usefixtures("no_leftover_servers")


@pytest.fixture()
def claims(tmp_path, monkeypatch):
    monkeypatch.setattr(process, "PORT_CLAIMS", tmp_path / "claims")
    return tmp_path / "claims"


def test_a_port_handed_out_is_not_handed_out_again_until_released(claims, monkeypatch):
    offered = iter([5555, 5555, 5556, 5555])  # the kernel offers a freed port again at once
    monkeypatch.setattr(process, "free_port", lambda host="127.0.0.1": next(offered))
    first, second = claim_port(), claim_port()
    assert (first, second) == (5555, 5556)
    release_port(first)
    assert claim_port() == 5555 and (claims / "5555").read_text() == str(os.getpid())


def test_a_claim_left_by_a_dead_process_is_taken_over(claims, monkeypatch):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    claims.mkdir(parents=True)
    (claims / "6000").write_text(dead.stdout.strip())
    offered = iter([6000, 6000])
    monkeypatch.setattr(process, "free_port", lambda host="127.0.0.1": next(offered))
    assert claim_port() == 6000  # the stale claim was removed on the first try, the port taken on the second


def test_two_servers_built_together_get_two_ports_and_give_them_back(claims, tmp_path: Path):
    a = ServerProcess(sim_spec(0.5), tmp_path / "a.log", boot_timeout_s=60)
    b = ServerProcess(sim_spec(0.5), tmp_path / "b.log", boot_timeout_s=60)
    assert a.port != b.port and {p.name for p in claims.iterdir()} == {str(a.port), str(b.port)}
    a.start()
    a.wait_ready()
    a.stop()
    b.stop()  # never started: its claim goes back too
    assert not list(claims.iterdir())

"""Workers against real simulated-server processes: a full trial, and every way one can fail.

No mocks: each test boots `python -m autotune.sim.server` in its own process group and checks,
afterwards, that no server process and no listening port is left behind.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from autotune.hardware import load_gpu
from autotune.models import load_model
from autotune.sim.config import SimServerConfig, start_up
from autotune.workloads import get_preset
from workers.failures import FailureKind
from workers.process import port_in_use
from workers.spec import ServerSpec
from workers.trial import TrialSpec, run_trial

from conftest import TAG, sim_servers

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.usefixtures("no_leftover_servers")


def sim_spec(ratio: float = 0.5, **sim_flags) -> ServerSpec:
    return ServerSpec(
        backend="sim", model_path="26B-A4B",
        flags={"swa-full-tokens-ratio": ratio, "mem-fraction-static": 0.85},
        sim_flags={"gpu": "H100", "time-scale": 20, **sim_flags}, env=TAG,
    )


def trial(tmp_path: Path, server: ServerSpec, **kwargs) -> TrialSpec:
    workload = kwargs.pop("workload", get_preset("chat", num_prompts=24, concurrency=12))
    return TrialSpec(trial_id="t", server=server, workload=workload, log_dir=str(tmp_path),
                     boot_timeout_s=kwargs.pop("boot_timeout_s", 60), hang_timeout_s=kwargs.pop("hang_timeout_s", 30), **kwargs)


def test_trial_end_to_end_counts_match_the_servers_counters(tmp_path: Path) -> None:
    phases = []
    result = run_trial(trial(tmp_path, sim_spec(), scrape_interval_s=0.25),
                       lambda phase, done, total: phases.append((phase, done, total)))
    assert result.ok, result.message
    assert result.simulated and result.backend == "sim"
    assert result.summary.completed == 24
    # The replay's own counts equal how much the server's Prometheus counters grew during it.
    assert result.server_counters["sglang:num_requests_total"] == result.client_counts["requests"]
    assert result.server_counters["sglang:prompt_tokens_total"] == result.client_counts["prompt_tokens"]
    assert result.server_counters["sglang:generation_tokens_total"] == result.client_counts["generation_tokens"]
    expected = start_up(SimServerConfig(model=load_model("26B-A4B"), gpu=load_gpu("H100"),
                                        swa_full_tokens_ratio=0.5, mem_fraction_static=0.85))
    assert (result.full_tokens, result.swa_tokens) == (expected.full_tokens, expected.swa_tokens)
    assert result.series.samples >= 2 and result.series.peak_swa_usage > 0
    assert phases[0][0] == "boot" and phases[-1] == ("replay", 24, 24)
    assert not port_in_use(result.port)
    assert "--enable-metrics" in result.command


def test_infeasible_ratio_is_refused_with_sglangs_reason(tmp_path: Path) -> None:
    result = run_trial(trial(tmp_path, sim_spec(ratio=0.001)))
    assert not result.ok and result.failure is FailureKind.BOOT_REFUSED
    assert "cannot hold even one request" in result.message
    assert result.failure.infeasible
    assert not port_in_use(result.port)


def test_boot_timeout_within_the_bound(tmp_path: Path) -> None:
    started = time.monotonic()
    result = run_trial(trial(tmp_path, sim_spec(**{"boot-delay": 60}), boot_timeout_s=3))
    elapsed = time.monotonic() - started
    assert result.failure is FailureKind.BOOT_TIMEOUT
    assert elapsed < 3 + 12  # the bound, plus stopping the group (SIGTERM grace)


def _kill_server_when(done_at: int, sig: signal.Signals):
    fired = threading.Event()

    def progress(phase: str, done: int, total: int) -> None:
        if phase == "replay" and done >= done_at and not fired.is_set():
            fired.set()
            for proc in sim_servers():
                os.killpg(proc.pid, sig)

    return progress, fired


def test_server_killed_mid_replay_is_a_crash(tmp_path: Path) -> None:
    progress, fired = _kill_server_when(3, signal.SIGKILL)
    result = run_trial(trial(tmp_path, sim_spec()), progress)
    assert fired.is_set()
    assert result.failure is FailureKind.CRASHED, (result.failure, result.message)
    assert not port_in_use(result.port)


def test_stopped_server_is_a_hang(tmp_path: Path) -> None:
    # SIGSTOP freezes the server: connections stay open, nothing streams, the process is alive.
    progress, fired = _kill_server_when(3, signal.SIGSTOP)
    started = time.monotonic()
    result = run_trial(trial(tmp_path, sim_spec(), hang_timeout_s=3), progress)
    assert fired.is_set()
    assert result.failure is FailureKind.HANG, (result.failure, result.message)
    assert time.monotonic() - started < 60
    assert not port_in_use(result.port)


def test_ctrl_c_stops_the_server(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import faulthandler, signal, sys
        def report(*_):  # the test asks for this if the trial hangs: stacks and the state of SIGINT
            print("SIGINT handler:", signal.getsignal(signal.SIGINT), "pending:", signal.sigpending(),
                  "blocked:", signal.pthread_sigmask(signal.SIG_BLOCK, []), flush=True)
            faulthandler.dump_traceback(all_threads=True)
        signal.signal(signal.SIGUSR1, report)
        # A tuner started from a terminal has Python's Ctrl-C handler. A child of this test process
        # can inherit SIGINT ignored (seen in full runs: something in the pytest process sets it for
        # a moment), and a process that ignores SIGINT is not what this test is about.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        sys.path.insert(0, {str(ROOT)!r})
        from autotune.workloads import get_preset
        from workers.spec import ServerSpec
        from workers.trial import TrialSpec, run_trial
        spec = TrialSpec(trial_id="c", log_dir={str(tmp_path)!r}, workload=get_preset("chat", num_prompts=400, concurrency=8),
            server=ServerSpec(backend="sim", model_path="26B-A4B", flags={{"mem-fraction-static": 0.85}}, sim_flags={{"gpu": "H100"}}))
        def progress(phase, done, total):
            if phase == "replay" and done == 0:
                print("REPLAYING", flush=True)
        run_trial(spec, progress)
        """
    )
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not sim_servers():
            time.sleep(0.2)
        assert sim_servers(), "the server never started"
        time.sleep(3)  # well into boot or replay
        child.send_signal(signal.SIGINT)
        try:
            child.wait(timeout=30)
        except subprocess.TimeoutExpired:
            child.send_signal(signal.SIGUSR1)  # faulthandler: where is it stuck?
            time.sleep(1)
            child.kill()
            pytest.fail(f"Ctrl-C did not end the trial within 30 s; its output and stacks:\n{child.communicate()[0][-6000:]}")
    finally:
        if child.poll() is None:
            child.kill()
    # the no_leftover_servers fixture asserts the server group is gone


def test_owner_killed_with_sigkill_still_takes_its_server_down(tmp_path: Path) -> None:
    """The reaper covers what no handler can: the tuner (or a Ray actor) dying with SIGKILL."""
    script = textwrap.dedent(
        f"""
        import sys, time
        sys.path.insert(0, {str(ROOT)!r})
        from workers.spec import ServerSpec
        from workers.process import ServerProcess
        server = ServerProcess(ServerSpec(backend="sim", model_path="26B-A4B", flags={{"mem-fraction-static": 0.85}},
                               sim_flags={{"gpu": "H100"}}), {str(tmp_path / "s.log")!r})
        server.start(); server.wait_ready(); print(server.port, flush=True); time.sleep(600)
        """
    )
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    port = int(child.stdout.readline())
    assert port_in_use(port) and sim_servers()
    child.kill()
    child.wait()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and (sim_servers() or port_in_use(port)):
        time.sleep(0.2)
    assert not sim_servers() and not port_in_use(port)


def test_clearly_lost_trial_is_stopped_early(tmp_path: Path) -> None:
    """A ratio that starves the SWA pool (SWA usage pinned, queue not draining) ends early."""
    from workers.early_stop import EarlyStop

    workload = get_preset("chat", num_prompts=120, concurrency=40)
    rule = EarlyStop(min_fraction=0.1, window=3)
    starved = run_trial(trial(tmp_path, sim_spec(ratio=0.02), workload=workload, early_stop=rule, scrape_interval_s=0.3))
    assert starved.stopped_early, starved.message
    assert starved.message.startswith("stopped early: SWA-bound")
    assert 12 <= starved.summary.completed < 120
    assert starved.series.swa_bound_share > 0.5
    healthy = run_trial(trial(tmp_path, sim_spec(ratio=0.6), workload=get_preset("chat", num_prompts=24, concurrency=12),
                              early_stop=rule, scrape_interval_s=0.3))
    assert healthy.ok and not healthy.stopped_early and healthy.summary.completed == 24

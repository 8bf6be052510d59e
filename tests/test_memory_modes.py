"""Flags that make SGLang ignore --swa-full-tokens-ratio are named before any trial, for every
backend: no silent study of a knob the server does not turn."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from autotune.pools.modes import REQUEST_CAP, SINGLE_POOL, STATIC, UNIFIED, RatioIgnored, memory_mode, require_ratio_to_matter

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("flags", "extra", "mode"),
    [
        ({}, [], STATIC),
        ({}, ["--enable-unified-memory", "--attention-backend", "triton"], UNIFIED),
        ({}, ["--disable-hybrid-swa-memory"], SINGLE_POOL),
        ({}, ["--max-running-requests", "64", "--disable-radix-cache"], REQUEST_CAP),
        ({"max-running-requests": 64}, ["--disable-radix-cache"], REQUEST_CAP),
        # Any one of the three missing keeps the ratio in charge.
        ({}, ["--max-running-requests", "64"], STATIC),
        ({}, ["--disable-radix-cache"], STATIC),
        ({}, ["--max-running-requests", "64", "--disable-radix-cache", "--chunked-prefill-size", "-1"], STATIC),
    ],
)
def test_the_mode_follows_sglangs_rules(flags, extra, mode) -> None:
    assert memory_mode(flags, extra).name == mode


def test_a_config_file_counts_and_the_command_line_reads_after_it(tmp_path: Path) -> None:
    config = tmp_path / "serve.yaml"
    config.write_text("enable_unified_memory: true\ntp-size: 1\n")
    assert memory_mode({}, ["--config", str(config)]).name == UNIFIED
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a list\n")
    with pytest.raises(ValueError, match="expected a mapping"):
        memory_mode({}, ["--config", str(bad)])


def test_the_refusal_names_the_flag_and_the_way_out() -> None:
    with pytest.raises(RatioIgnored) as refused:
        require_ratio_to_matter({}, ["--enable-unified-memory"])
    text = str(refused.value)
    assert "--enable-unified-memory" in text and "no effect" in text and "drop --enable-unified-memory" in text


@pytest.mark.parametrize("backend", ["sim-fast", "sglang"])
def test_run_refuses_before_booking_anything(tmp_path: Path, backend: str) -> None:
    """The sglang backend needs GPUs for its trials, but the refusal comes first: on this CPU
    machine it still names the flag, not the missing GPU."""
    db = tmp_path / "a.db"
    args = [sys.executable, "-m", "autotune.cli.app", "run", "--model", "26B-A4B", "--backend", backend,
            "--gpu", "H100", "--storage", f"sqlite:///{db}", "--log-dir", str(tmp_path / "logs"),
            "--", "--max-running-requests", "32", "--disable-radix-cache"]
    result = subprocess.run(args, capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 2, result.stdout + result.stderr
    text = " ".join(result.stderr.split())
    assert "--max-running-requests 32 with --disable-radix-cache" in text and "no effect" in text
    assert "Traceback" not in result.stderr and not db.exists()


def test_sglangs_parser_knows_every_flag_the_modes_read() -> None:
    pytest.importorskip("sglang", reason="SGLang's parser is not installed: run scripts/install-sglang-parser.sh")
    from autotune.pools.modes import _flag_parser

    flags = [a.option_strings[0] for a in _flag_parser()._actions if a.option_strings and a.option_strings[0] != "--config"]
    probe = ("import argparse, sys; from sglang.srt.server_args import ServerArgs; p = argparse.ArgumentParser(); "
             "ServerArgs.add_cli_args(p); known = {s for a in p._actions for s in a.option_strings}; "
             "print(' '.join(f for f in sys.argv[1:] if f not in known))")
    result = subprocess.run([sys.executable, "-c", probe, *flags], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "", f"flags SGLang does not know: {result.stdout}"

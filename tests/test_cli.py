"""The `autotune` command's catalog and pool commands, and their errors (exit codes, messages)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from autotune.cli.app import app

DATA = Path(__file__).parent / "data"
runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args), env={"COLUMNS": "200"})


def test_models_table_lists_the_catalog() -> None:
    result = invoke("models")
    assert result.exit_code == 0, result.output
    for name in ("gemma-4-31B-it", "gemma-4-26B-A4B-it", "gpt-oss-120b", "MiMo-V2-Flash"):
        assert name in result.output
    assert "128 x top-8" in result.output


def test_pools_prints_both_pools_windows_and_feasible_range() -> None:
    result = invoke(
        "pools", "--model", "31B", "--gpu", "B200", "--ratio", "0.15", "--page-size", "64", "--kv-budget-gb", "98.0513"
    )
    assert result.exit_code == 0, result.output
    assert "478,720" in result.output and "71,808" in result.output
    assert "70.2" in result.output  # windows of 1023 in the SWA pool
    assert "Feasible ratios: [0.001, 1.0]" in result.output


def test_pools_for_a_non_hybrid_model_says_the_ratio_has_no_effect() -> None:
    result = invoke("pools", "--model", str(DATA / "gemma3"), "--gpu", "H100")
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    assert "has no effect" in text and "nothing to tune" in text


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "26B-A4", "--gpu", "H100"], "Did you mean: 26B-A4B"),
        (["--model", "26B-A4B", "--gpu", "A100"], "unknown GPU 'A100'"),
        (["--model", "26B-A4B", "--ratio", "0"], "must be in (0, 1]"),
        (["--model", "26B-A4B", "--ratio", "1.2"], "must be in (0, 1]"),
        (["--model", "26B-A4B", "--gpu", "H100", "--ratio", "0.001", "--mem-fraction-static", "0.85"],
         "The smallest ratio that boots with this budget is"),
        (["--model", "scout", "--gpu", "H100"], "--tp 2"),
    ],
)
def test_bad_input_exits_2_with_a_clear_message(args: list[str], message: str) -> None:
    result = invoke("pools", *args)
    assert result.exit_code == 2
    assert message in " ".join(result.output.split())
    assert "Traceback" not in result.output


def test_directory_errors(tmp_path: Path) -> None:
    result = invoke("pools", "--model", str(tmp_path))
    assert result.exit_code == 2 and "holds no config.json" in result.output
    (tmp_path / "config.json").write_text("{not json")
    result = invoke("pools", "--model", str(tmp_path))
    assert result.exit_code == 2 and "not valid JSON" in result.output


def test_console_script_runs() -> None:
    """The installed entry point (not just the typer app) works and teaches with --help."""
    result = subprocess.run(
        [sys.executable, "-m", "autotune.cli.app", "pools", "--help"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0
    assert "--kv-budget-gb" in result.stdout and "decimal GB" in result.stdout

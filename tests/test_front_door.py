"""The front door: listings complete off a terminal and as JSON, hopeless configurations refused
before any trial, missing optional packages named without a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def autotune(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """The command as a user runs it, its stdout a pipe (not a terminal)."""
    return subprocess.run(
        [sys.executable, "-m", "autotune.cli.app", *args], capture_output=True, text=True, timeout=timeout,
        cwd=REPO, env={**os.environ, **(env or {})},
    )


def test_piped_listing_keeps_whole_names_even_beside_a_narrow_terminal() -> None:
    # COLUMNS is what rich would otherwise size to; a pipe must not be cut to it.
    result = autotune("models", env={"COLUMNS": "60"})
    assert result.returncode == 0, result.stderr
    line = next(line for line in result.stdout.splitlines() if "26B-A4B-it" in line)
    for cell in ("gemma-4-26B-A4B-it", "Gemma4ForConditionalGeneration", "128 x top-8", "25.2B (3.8B act.)"):
        assert cell in line
    assert "…" not in result.stdout


@pytest.mark.parametrize(
    ("args", "check"),
    [
        (["models"], lambda data: any(row["model"] == "gemma-4-26B-A4B-it" and row["moe"]["experts"] == 128 for row in data)),
        (["pools", "--model", "31B", "--gpu", "B200", "--ratio", "0.15", "--page-size", "64", "--kv-budget-gb", "98.0513"],
         lambda data: data["rows"][0]["full_tokens"] == 478720 and data["rows"][0]["swa_tokens"] == 71808),
        (["plan", "--model", "26B-A4B"],
         lambda data: [row["workload"] for row in data["rows"]] == ["chat", "summarization"]
         and all(0 < row["best_ratio"] <= 1 and row["serviceable"] for row in data["rows"])),
    ],
)
def test_json_listings_are_plain_json_with_numbers(args: list[str], check) -> None:
    result = autotune(*args, "--json")
    assert result.returncode == 0, result.stderr
    assert check(json.loads(result.stdout))


def test_plan_names_a_hopeless_configuration_with_its_budget_need_and_fix() -> None:
    result = autotune("plan", "--model", "31B", "--gpu", "H100", "--workload", "chat", "--json")
    assert result.returncode == 0, result.stderr
    row = json.loads(result.stdout)["rows"][0]
    assert row["serviceable"] is False
    refusal = row["refusal"]
    assert "KV budget is 1.32 GiB" in refusal and "2,048 full" in refusal and "--tp 2" in refusal
    # A big enough GPU serves it, and the plan says so.
    result = autotune("plan", "--model", "31B", "--gpu", "B200", "--workload", "chat", "--json")
    assert json.loads(result.stdout)["rows"][0]["serviceable"] is True


BLOCK_DASHBOARD = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] == 'optuna_dashboard':
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, Block())
"""


def test_a_missing_optional_package_is_named_with_the_install_line(tmp_path: Path) -> None:
    (tmp_path / "sitecustomize.py").write_text(BLOCK_DASHBOARD)
    db = tmp_path / "autotune.db"
    db.touch()
    result = autotune("dashboard", "--storage", f"sqlite:///{db}", env={"PYTHONPATH": f"{tmp_path}{os.pathsep}{REPO}"})
    assert result.returncode == 2
    assert "optuna_dashboard is not installed" in result.stderr and "pip install 'swa-autotune[dashboard]'" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_closing_the_pipe_early_prints_no_traceback() -> None:
    """`autotune models | head -1`: click ends quietly when the reader leaves."""
    process = subprocess.Popen([sys.executable, "-m", "autotune.cli.app", "models"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, cwd=REPO)
    process.stdout.read(10)
    process.stdout.close()
    stderr = process.stderr.read().decode()
    process.wait(timeout=60)
    assert "Traceback" not in stderr

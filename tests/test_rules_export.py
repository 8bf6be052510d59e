"""From optima to serving: rules per MoE/dense x workload class, the SGLang --config export, launch.

Two real (simulated, in-process) studies feed them: the MoE gemma-4-26B-A4B and the dense
gemma-4-31B, on the tiny workloads, in a real SQLite database.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from autotune.cli.app import app
from autotune.store import Store

DATA = Path(__file__).parent / "data"
runner = CliRunner()


def invoke(*args: str):
    result = runner.invoke(app, list(args))
    return result, " ".join(result.output.split())


@pytest.fixture(scope="module")
def tuned_db(tmp_path_factory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('db') / 'autotune.db'}"
    # The dense 31B has 1.3 GiB of KV on an H100: with the prompt's window locked in the radix tree
    # (docs/sglang-swa-accounting.md), a 4k prompt's chunks cannot get past a ~1.5k-token SWA pool, so
    # its KV budget is pinned to 4 GB (still an 80 GB GPU for the rules).
    for model, extra in (("26B-A4B", ()), ("31B", ("--kv-budget-gb", "4"))):
        result, text = invoke(
            "run", "--model", model, "--backend", "sim-fast", "--trials", "3", "--storage", url, *extra,
            "--workload", str(DATA / "tiny-workloads.yaml"), "--log-dir", str(tmp_path_factory.mktemp("logs")),
        )
        assert result.exit_code == 0, text
    return url


def test_rules_separate_moe_and_dense_with_evidence(tuned_db: str) -> None:
    result, text = invoke("rules", "--storage", tuned_db)
    assert result.exit_code == 0, text
    rules = {rule.key: rule for rule in Store(tuned_db).rules()}
    assert {"moe|chat|80GB", "dense|chat|80GB", "moe|long-context|80GB", "dense|long-context|80GB"} <= set(rules)
    assert {e["model"] for e in rules["moe|chat|80GB"].evidence} == {"gemma-4-26B-A4B-it"}
    assert {e["model"] for e in rules["dense|chat|80GB"].evidence} == {"gemma-4-31B-it"}
    assert all(rule.simulated for rule in rules.values())
    assert "moe|chat|80GB" in text and "dense|chat|80GB" in text


def test_an_untuned_model_resolves_through_an_inferred_rule(tuned_db: str) -> None:
    result, text = invoke("rules", "--storage", tuned_db, "--model", "E4B", "--gpu", "H100", "--workload", "tiny-chat")
    assert result.exit_code == 0, text
    assert "from the rule (inferred)" in text and "dense|chat|80GB" in text and "never tuned" in text
    # A tuned model resolves to its own optimum, not a rule.
    result, text = invoke("rules", "--storage", tuned_db, "--model", "31B", "--gpu", "H100", "--workload", "tiny-chat")
    assert "from the optimum" in text


def test_export_refuses_simulated_unless_allowed_then_marks_it(tuned_db: str, tmp_path: Path) -> None:
    out = tmp_path / "export"
    result, text = invoke("export", "--storage", tuned_db, "--out", str(out))
    assert result.exit_code == 2 and "refusing to export simulated optima" in text
    assert not out.exists()
    result, text = invoke("export", "--storage", tuned_db, "--out", str(out), "--allow-simulated", "--model", "31B")
    assert result.exit_code == 0, text
    files = sorted(p.name for p in out.glob("*.yaml"))
    assert files == ["gemma-4-31B-it__tiny-chat.yaml", "gemma-4-31B-it__tiny-long.yaml", "index.yaml"]
    body = (out / "gemma-4-31B-it__tiny-chat.yaml").read_text()
    assert body.startswith("# SIMULATED")
    flags = yaml.safe_load(body)
    optimum = Store(tuned_db).optimum("gemma-4-31B-it", "H100-80GB", "tiny-chat")
    assert flags == {"swa-full-tokens-ratio": optimum.ratio}  # hyphenated, and only what was tuned
    index = yaml.safe_load((out / "index.yaml").read_text())
    entry = index["models"]["gemma-4-31B-it"]["tiny-chat"]
    assert entry["file"] == "gemma-4-31B-it__tiny-chat.yaml" and entry["simulated"] is True
    assert entry["trials"] == optimum.trials and entry["backend"] == "sim-fast" and entry["study"] == optimum.study_name
    assert not list(out.glob(".*"))  # atomic writes leave no temporary files
    assert [e.model for e in Store(tuned_db).exports()] == ["gemma-4-31B-it", "gemma-4-31B-it"]


def test_launch_dry_run_says_where_the_ratio_comes_from(tuned_db: str, tmp_path: Path) -> None:
    result, text = invoke("launch", "--model", "31B", "--workload", "tiny-long", "--gpu", "H100", "--storage", tuned_db,
                          "--config-dir", str(tmp_path), "--dry-run", "--", "--port", "30001")
    assert result.exit_code == 0, text
    assert "from the optimum" in text and "SIMULATED" in text
    assert "-m sglang.launch_server --config" in text and "--port 30001" in text
    # A ratio on the command line is passed through after --config, so SGLang lets it win.
    result, text = invoke("launch", "--model", "E2B", "--gpu", "H100", "--storage", tuned_db, "--config-dir",
                          str(tmp_path), "--dry-run", "--", "--swa-full-tokens-ratio", "0.5")
    assert "overrides it" in text and text.index("--config") < text.index("--swa-full-tokens-ratio 0.5")
    assert "rule (inferred)" in text

"""Tuning without weights (the dummy model directory) and the pool check against the server's word.

Reference numbers: real SGLang 0.5.17 on an H100 (docs/reference/real-sglang.md) booted the
26B-A4B shape with kvcache 18.864 GiB as 109890/87912 (0.8), 197803/79121 (0.4), 395607/59341 (0.15).
"""

from __future__ import annotations

import json

import pytest

from autotune.models import load_model
from autotune.models.dummy import DUMMY_LOAD_FLAGS, dummy_spec, write_dummy_model
from autotune.pools.check import check_layout, leave_one_out
from autotune.pools.sizing import KVGeometry

REAL_H100 = [(0.8, 109890, 87912), (0.4, 197803, 79121), (0.15, 395607, 59341)]


@pytest.fixture(scope="module")
def geometry() -> KVGeometry:
    return KVGeometry.of(load_model("26B-A4B"))


def test_dummy_gemma4_is_the_text_model_with_sglangs_attention_fields(tmp_path) -> None:
    catalog = load_model("26B-A4B")
    dummy = write_dummy_model(catalog, tmp_path)
    config = json.loads((dummy.path / "config.json").read_text())
    assert config["architectures"] == ["Gemma4ForCausalLM"] and config["model_type"] == "gemma4_text"
    # Full layers first (512-wide, 2 KV heads), sliding in swa_* (256-wide, 8 KV heads).
    assert (config["head_dim"], config["v_head_dim"], config["num_key_value_heads"]) == (512, 512, 2)
    assert (config["swa_head_dim"], config["swa_v_head_dim"], config["swa_num_key_value_heads"]) == (256, 256, 8)
    assert "vision_config" not in config and dummy.verified
    booted = dummy_spec(catalog, dummy)
    assert booted.name == catalog.name  # studies stay keyed by the catalog's model
    for attr in ("full_bytes_per_token", "swa_bytes_per_token"):
        assert getattr(booted, attr)() == getattr(catalog, attr)()
    assert (booted.window, booted.full_layer_ids, booted.swa_layer_ids) == (catalog.window, catalog.full_layer_ids, catalog.swa_layer_ids)
    assert booted.weight_bytes < catalog.weight_bytes  # no vision tower in the text model
    assert any("dummy weights" in note for note in booted.notes)


def test_dummy_directory_is_reused_and_rewritten_when_the_config_changes(tmp_path) -> None:
    model = load_model("26B-A4B")
    first = write_dummy_model(model, tmp_path)
    mtime = (first.path / "config.json").stat().st_mtime_ns
    assert write_dummy_model(model, tmp_path).path == first.path
    assert (first.path / "config.json").stat().st_mtime_ns == mtime
    other = write_dummy_model(load_model("31B"), tmp_path)
    assert other.path != first.path


def test_unverified_architectures_say_so(tmp_path) -> None:
    dummy = write_dummy_model(load_model("gpt-oss-120b"), tmp_path)
    assert not dummy.verified and "not yet verified" in dummy.notes[0]


@pytest.mark.parametrize(("ratio", "full", "swa"), REAL_H100)
def test_real_layouts_match_the_pool_model_for_the_servers_kvcache(geometry, ratio, full, swa) -> None:
    check = check_layout(geometry, ratio, 1, full, swa, kvcache_gib=18.864)
    assert check.matches is True
    assert check.predicted_full[0] <= full <= check.predicted_full[1]
    # The band is kvcache's 3-decimal rounding (+-0.0005 GiB) and one padding page per pool, over the
    # cell size, plus a cell: a rounding, not a guess.
    padding = geometry.full_bytes + geometry.swa_bytes
    assert check.predicted_full[1] - check.predicted_full[0] <= (2 * 0.0005 * 2**30 + padding) / geometry.cell_bytes(ratio) + 2


def test_a_layout_the_model_does_not_predict_is_reported(geometry) -> None:
    check = check_layout(geometry, 0.8, 1, 109890 + 60, 87912 + 48, kvcache_gib=18.864, planned_budget_bytes=int(19.5 * 2**30))
    assert check.matches is False
    text = check.describe()
    assert "MISMATCH" in text and "109950" in text and "+0.636 GiB" in text


def test_leave_one_out_predicts_each_real_layout_from_the_others(geometry) -> None:
    for result in leave_one_out(geometry, REAL_H100):
        assert result.contained, result
        assert result.predicted_full[1] - result.predicted_full[0] <= 2
    # A layout from another budget cannot hide among them.
    with pytest.raises(ValueError, match="disjoint"):
        leave_one_out(geometry, [*REAL_H100[:2], (0.15, 395607 + 500, 59341 + 75), (0.4, 197803, 79121)])


def test_dummy_flags_are_sglangs() -> None:
    assert DUMMY_LOAD_FLAGS == {"load-format": "dummy", "skip-tokenizer-init": True}


def test_run_with_dummy_weights_end_to_end(tmp_path) -> None:
    """`autotune run --dummy-weights`: the config-only model directory, SGLang's dummy-load flags on
    every trial, a study of its own, the pool check stored per trial, and the caveat printed."""
    import optuna
    from typer.testing import CliRunner

    from autotune.cli.app import app

    db = f"sqlite:///{tmp_path}/dummy.db"
    result = CliRunner().invoke(app, [
        "run", "--backend", "sim-fast", "--dummy-weights", "--model", "26B-A4B", "--workload", "docs/real-gpu/long-8k.yaml",
        "--trials", "3", "--try", "0.3", "--storage", db, "--log-dir", str(tmp_path / "logs"), "--gpu", "H200",
        "--mem-fraction-static", "0.48", "--", "--disable-prefill-cuda-graph",
    ], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "Dummy weights: pool layouts and memory-bound behaviour are exact" in result.output
    configs = list((tmp_path / "logs" / "models").glob("*/config.json"))
    assert len(configs) == 1 and json.loads(configs[0].read_text())["architectures"] == ["Gemma4ForCausalLM"]
    (summary,) = optuna.get_all_study_summaries(db)
    assert summary.study_name.endswith("+dummy-weights")
    study = optuna.load_study(study_name=summary.study_name, storage=db)
    assert any("dummy weights" in note for note in study.user_attrs["model_notes"])
    trials = study.get_trials()
    assert {round(t.params["swa_full_tokens_ratio"], 3) for t in trials} >= {0.8, 0.3}  # --try ran
    for trial in trials:
        command = trial.user_attrs["result"]["command"]
        assert "--load-format" in command and "dummy" in command and "--skip-tokenizer-init" in command
        assert trial.user_attrs["pool_check"]["matches"] is True


def test_a_far_off_budget_estimate_is_said_once() -> None:
    """The real H200 run: the server's 15.042 GiB against the plan's 19.837 (weights 51.7 GiB, not 47)."""
    from types import SimpleNamespace

    from autotune.study.controller import budget_note

    plan = SimpleNamespace(model=load_model("26B-A4B"), gpu=SimpleNamespace(name="H200-141GB"))
    note = budget_note(plan, {"kvcache_gib": 15.042, "budget_error_gib": 4.795})
    assert note and "15.042 GiB" in note and "19.837 GiB" in note and "+4.795 GiB" in note
    assert budget_note(plan, {"kvcache_gib": 15.042, "budget_error_gib": 0.2}) is None  # within 5 %
    assert budget_note(plan, None) is None

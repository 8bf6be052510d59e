"""The workers read real SGLang exactly as they read the simulator: replayed from what real SGLang
0.5.17 printed and served on an H200 (docs/real-gpu/, deploy/gpu-kit/validate.sh). Fixtures in
tests/data/real-sglang/ are the server's own output, unedited except the usage text cut short.
"""

from __future__ import annotations

import json
from pathlib import Path

from autotune.models import load_model
from autotune.pools.check import check_layout
from autotune.pools.sizing import KVGeometry
from workers.failures import FailureKind, classify_boot_log, parse_pool_layout
from workers.server_truth import memory_from_metrics, memory_from_server_info

DATA = Path(__file__).parent / "data" / "real-sglang"


def read(name: str) -> str:
    return (DATA / name).read_text(encoding="utf-8")


def test_a_tiny_ratio_is_boot_refused_with_sglangs_sentence() -> None:
    kind, line = classify_boot_log(read("boot-refused-ratio-0.001.log"))
    assert kind is FailureKind.BOOT_REFUSED
    assert line.startswith("SWA pool (780 tokens) cannot hold even one request")
    assert "sliding_window_size (1023) + page_size (1)" in line


def test_a_rejected_flag_is_a_boot_failure_naming_the_flag() -> None:
    kind, line = classify_boot_log(read("rejected-flag.log"))
    assert kind is FailureKind.BOOT_FAILED
    assert "unrecognized arguments: --no-such-flag 1" in line


def test_the_startup_layout_and_the_servers_two_other_accounts_agree() -> None:
    logged = parse_pool_layout(read("startup-ratio-0.8.log"))
    info = memory_from_server_info(json.loads(read("server_info-ratio-0.8.json")))
    metrics = memory_from_metrics(read("metrics-at-boot-ratio-0.8.txt"))
    assert logged == (87622, 70097)
    assert (info["full_tokens"], info["swa_tokens"]) == logged
    assert (metrics["metrics_full_tokens"], metrics["metrics_swa_tokens"]) == logged
    assert info["kvcache_gib"] == round(metrics["kv_metric_gib"], 3) == 15.041  # /server_info rounds to 3 decimals
    assert info["weight_gib"] == round(metrics["weight_metric_gib"], 3) > 50  # dummy 26B-A4B text model on an H200
    assert info["graph_gib"]["decode"] > 0 and info["graph_gib"]["prefill"] == 0  # prefill graphs off


def test_the_pool_model_predicts_the_real_layout_from_the_real_kvcache() -> None:
    info = memory_from_server_info(json.loads(read("server_info-ratio-0.8.json")))
    check = check_layout(KVGeometry.of(load_model("26B-A4B")), 0.8, 1, info["full_tokens"], info["swa_tokens"], info["kvcache_gib"])
    assert check.matches is True


def test_padding_pages_do_not_read_as_a_mismatch() -> None:
    """Real: ratio 0.0213 booted 650053/13855 with kvcache 15.042 GiB; the pools' padding page put
    the allocated bytes above the budget's share, which the first check called a mismatch."""
    geometry = KVGeometry.of(load_model("26B-A4B"))
    check = check_layout(geometry, 0.021314137153305823, 1, 650053, 13855, 15.042)
    assert check.matches is True
    assert check.predicted_full[1] - check.predicted_full[0] < 60


def test_sources_that_state_different_layouts_are_named() -> None:
    from workers.server_truth import ServerMemory

    agree = ServerMemory(full_tokens=87622, swa_tokens=70097, metrics_full_tokens=87622, metrics_swa_tokens=70097,
                         logged_full_tokens=87622, logged_swa_tokens=70097)
    assert agree.disagreements() == []
    split = ServerMemory(full_tokens=87622, swa_tokens=70097, logged_full_tokens=87623, logged_swa_tokens=70097)
    assert split.disagreements() == ["start-up line: full 87623, SWA 70097", "/server_info: full 87622, SWA 70097"]

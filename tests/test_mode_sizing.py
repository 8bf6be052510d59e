"""Each memory mode's sizing per SGLang release, against numbers computed by hand from
pool_configurator.py's formulas (0.5.17 and 0.5.23), and `autotune pools` / `plan` showing them."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from autotune.cli.app import app
from autotune.models import load_model
from autotune.pools import KVGeometry
from autotune.pools.mode_sizing import (
    UNIFIED_CRASH_LINE,
    max_unified_full_tokens,
    size_request_cap,
    size_unified,
    swa_request_cap,
)
from autotune.pools.modes import REQUEST_CAP, STATIC, memory_mode
from autotune.pools.sizing import NotEnoughMemory, SWAPoolRefused

G = KVGeometry.of(load_model("26B-A4B"))  # F = 20480, S = 204800, W = 1023
CELL_08 = 20480 + 0.8 * 204800  # 184320 bytes per full token at ratio 0.8


def test_geometry_is_the_one_the_hand_numbers_use() -> None:
    assert (G.full_bytes, G.swa_bytes, G.window) == (20480, 204800, 1023)


def test_unified_0517_is_the_static_split_and_matches_the_real_log() -> None:
    """docs/real-gpu/unified.md: `total_bytes=16150364160`, caps full=87622 swa=70097 at 0.8."""
    budget = 87622 * 184320 + 1000  # int(B // cell) = 87622
    u = size_unified(G, budget, 0.8, 1, "0.5.17")
    assert (u.full_tokens, u.swa_tokens) == (87622, 70097)  # int(87622 * 0.8) = 70097
    assert u.kv_bytes == 87622 * 20480 + 70097 * 204800 == 16150364160
    assert not u.borrows_beyond_caps and UNIFIED_CRASH_LINE in u.measured and "docs/real-gpu/unified.md" in u.measured


def test_unified_0523_fits_the_floored_swa_side_so_it_can_hold_one_more_page() -> None:
    """_max_unified_full_tokens: largest full with full*F + floor(int(full*r))*S <= B. At B between
    87623's unified bytes (16,150,589,440) and its static cell bytes (16,150,671,360) 0.5.23 gets
    one more full token than the static formula."""
    budget = 16_150_600_000
    assert int(budget // CELL_08) == 87622
    assert max_unified_full_tokens(G, budget, 0.8, 1) == 87623
    u = size_unified(G, budget, 0.8, 1, "0.5.23")
    assert (u.full_tokens, u.swa_tokens) == (87623, 70098)
    assert u.kv_bytes == 87623 * 20480 + 70098 * 204800 == 16_150_589_440
    assert u.borrows_beyond_caps
    assert u.full_max_alone == u.kv_bytes // 20480
    assert u.swa_max_alone == u.kv_bytes // 204800  # < arena // F: the virtual ids do not bind here
    old = size_unified(G, budget, 0.8, 1, "0.5.17")
    assert (old.full_tokens, old.swa_tokens) == (87622, 70097)


def test_unified_start_up_refusal_only_in_0517() -> None:
    """0.5.17 runs the static SWA-pool check; 0.5.23's _solve_pool_sizes skips it under unified memory."""
    budget = 87622 * 184320
    with pytest.raises(SWAPoolRefused):
        size_unified(G, budget, 0.001, 1, "0.5.17")
    u = size_unified(G, budget, 0.001, 1, "0.5.23")
    assert u.swa_tokens < G.window  # boots; the arena still holds a window (bs=1 floor)


@pytest.mark.parametrize(
    ("release", "page", "mrr", "chunk", "no_overlap", "cap"),
    [
        # per request = W + I + P + P = 1023 + 128 + 1 + 1 = 1153
        ("0.5.23", 1, 32, 8192, False, 1153 * 32 + 2 * 8192 + 1),  # 53281
        ("0.5.17", 1, 32, 8192, False, 53281),
        ("0.5.23", 1, 32, 8192, True, 1153 * 32 + 8192 + 1),  # one chunk in flight
        ("0.5.23", 64, 32, 8192, False, 1279 * 32 + 2 * 8192 + 64),  # per request 1023 + 128 + 64 + 64
        ("0.5.23", 1, 0, 8192, False, 1153 + 2 * 8192 + 1),  # max(1, mrr // dp)
        ("0.5.17", 1, 0, 8192, False, 2 * 8192 + 1),  # mrr // dp, no floor
        ("0.5.17", 1, 32, -1, False, 1153 * 32 - 2 + 1),  # 0.5.17 applies to -1 too
    ],
)
def test_request_cap_formula_per_release(release, page, mrr, chunk, no_overlap, cap) -> None:
    assert swa_request_cap(1023, page, mrr, chunk, release, disable_overlap_schedule=no_overlap) == cap


def test_request_cap_pools_page_aligned_rest_to_full() -> None:
    budget = 71_659_861_284
    s = size_request_cap(G, budget, 1, 32, 8192, "0.5.23")
    assert s.swa_tokens == 53281
    assert s.full_tokens == (budget - 53281 * 204800) // 20480 == 2966206
    p = size_request_cap(G, budget, 64, 32, 8192, "0.5.17")
    assert p.swa_tokens == 57408  # ceil_64(57376)
    assert p.full_tokens == (budget - 57408 * 204800) // 20480 // 64 * 64
    with pytest.raises(NotEnoughMemory, match="leaves no room for the full KV pool"):
        size_request_cap(G, 10 * 2**30, 1, 64, 8192, "0.5.23")


def test_unchunked_prefill_selects_the_cap_only_in_0517() -> None:
    flags = ["--max-running-requests", "32", "--disable-radix-cache", "--chunked-prefill-size", "-1"]
    assert memory_mode({}, flags, sglang_version="0.5.23").name == STATIC
    assert memory_mode({}, flags, sglang_version="0.5.17").name == REQUEST_CAP


runner = CliRunner()


def _json(*args: str) -> dict:
    result = runner.invoke(app, [*args, "--json"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_pools_shows_the_unified_arena_and_that_the_ratio_is_ignored() -> None:
    budget_gb = str(16_150_600_000 / 1e9)
    new = _json("pools", "--model", "26B-A4B", "--enable-unified-memory", "--kv-budget-gb", budget_gb)
    assert new["memory_mode"] == "unified" and new["ratio_ignored"]
    assert (new["sizing"]["full_tokens"], new["sizing"]["swa_tokens"]) == (87623, 70098)
    old = _json("pools", "--model", "26B-A4B", "--enable-unified-memory", "--kv-budget-gb", budget_gb,
                "--sglang-version", "0.5.17")
    assert old["sizing"]["kv_bytes"] == 16150364160 and "docs/real-gpu/unified.md" in old["sizing"]["measured"]
    text = runner.invoke(app, ["pools", "--model", "26B-A4B", "--enable-unified-memory"], env={"COLUMNS": "200"}).output
    assert "Memory mode: unified" in text and "ratio is ignored" in text.replace("\n", " ") and "not measured" in text


def test_pools_and_plan_show_the_request_cap_pools() -> None:
    out = _json("pools", "--model", "26B-A4B", "--max-running-requests", "32", "--disable-radix-cache",
                "--kv-budget-gb", "71.659861284", "--chunked-prefill-size", "8192")
    assert out["memory_mode"] == "request-cap" and out["sizing"]["swa_tokens"] == 53281
    assert out["sizing"]["full_tokens"] == 2966206
    refused = _json("plan", "--model", "26B-A4B", "--max-running-requests", "64", "--disable-radix-cache")
    assert refused["memory_mode"] == "request-cap" and "leaves no room" in refused["refusal"]
    static = _json("pools", "--model", "26B-A4B", "--max-running-requests", "64")  # no radix-off: the ratio rules
    assert "rows" in static and "memory_mode" not in static

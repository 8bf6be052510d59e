"""bench/boot_cost.py reads the committed real SGLang logs: every start-up it finds is consistent."""

from __future__ import annotations

from pathlib import Path

from conftest import load_bench

REPO = Path(__file__).resolve().parents[1]
boot_cost = load_bench("boot_cost")


def test_every_committed_start_up_parses_and_adds_up() -> None:
    logs = sorted((REPO / "docs" / "real-gpu").rglob("*.log"))
    boots = boot_cost.mark_first([b for b in map(boot_cost.read_boot, logs) if b is not None])
    assert len(boots) >= 20
    for boot in boots:
        assert 0 < boot.graph_s <= boot.scheduler_s <= boot.startup_s, boot.log
        assert 1 <= boot.sizes <= boot.max_bs <= 256, boot.log
    # Both capture settings and both cache states are in the data the doc's table comes from.
    assert {(256, True), (256, False), (128, True), (128, False)} <= {(b.max_bs, b.first_on_machine) for b in boots}
    # The trace study's first boots came after `node.sh caches load`: told apart from cold ones.
    loaded = [b for b in boots if b.caches_loaded]
    assert loaded and all(b.first_on_machine for b in loaded)
    assert max(b.graph_s for b in loaded) < min(b.graph_s for b in boots if b.first_on_machine and not b.caches_loaded)

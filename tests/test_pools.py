"""SGLang's pool sizing (docs/reference/sglang.md §3) against layouts measured on real servers."""

from __future__ import annotations

from pathlib import Path

import pytest

from autotune.hardware import GIB, load_gpu
from autotune.models import load_model
from autotune.pools import (
    InconsistentLayout,
    KVGeometry,
    RatioOutOfRange,
    SWAPoolRefused,
    WorkloadShape,
    analytic_optimum,
    default_mem_fraction_static,
    estimate_budget,
    infer_budget,
    min_feasible_ratio,
    pinned_budget,
    predict_layouts,
    size_pools,
)

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def g31() -> KVGeometry:
    return KVGeometry.of(load_model("31B"))


@pytest.fixture(scope="module")
def g26() -> KVGeometry:
    return KVGeometry.of(load_model("26B-A4B"))


def test_seed_31b_b200_budget_inferred_at_08_predicts_015_exactly(g31: KVGeometry) -> None:
    """docs/reference/seed.md: 132992 / 106368 at 0.8 and 478720 / 71808 at 0.15, page 64."""
    interval = infer_budget(g31, 132992, 106368, 0.8, page_size=64)
    assert 98.0e9 < interval.lo < interval.hi < 98.2e9
    predicted = predict_layouts(g31, interval, 0.15, page_size=64)
    assert predicted.contains(478720, 71808)
    # Every budget consistent with the 0.8 layout gives SWA exactly 71808 at 0.15.
    assert predicted.swa_min == predicted.swa_max == 71808


def test_pinned_budget_reproduces_the_logged_015_layout(g31: KVGeometry) -> None:
    layout = size_pools(g31, pinned_budget(98.0513).bytes, 0.15, page_size=64)
    assert (layout.full_tokens, layout.swa_tokens) == (478720, 71808)
    assert layout.log_line() == "Use sliding window memory pool. full_layer_tokens=478720, swa_layer_tokens=71808"


def test_both_seed_layouts_share_one_budget(g31: KVGeometry) -> None:
    at_08 = infer_budget(g31, 132992, 106368, 0.8, 64)
    at_015 = infer_budget(g31, 478720, 71808, 0.15, 64)
    both = at_08.intersect(at_015)
    assert both.lo < both.hi


def test_real_h100_interval_and_predictions(g26: KVGeometry) -> None:
    """docs/reference/real-sglang.md: 26B-A4B on an H100, page 1."""
    interval = infer_budget(g26, 109890, 87912, 0.8, page_size=1)
    # The floor hides up to one cell: the interval is exactly one 0.8-cell wide here.
    assert interval.hi - interval.lo == pytest.approx(g26.cell_bytes(0.8), abs=2)
    assert abs(interval.lo / GIB - 18.864) < 0.001  # the server's reported kvcache (GiB)
    at_04 = predict_layouts(g26, interval, 0.4)
    at_015 = predict_layouts(g26, interval, 0.15)
    assert at_04.contains(197803, 79121)
    assert at_015.contains(395607, 59341)
    # The closed form with the floor of the interval is 3 tokens short, as the reference says.
    assert (at_015.full_min, at_015.swa_min) == (395604, 59340)


def test_inconsistent_layout_is_rejected(g26: KVGeometry) -> None:
    with pytest.raises(InconsistentLayout):
        infer_budget(g26, 109890, 90000, 0.8)


def test_refusal_text_is_sglangs(g26: KVGeometry) -> None:
    """docs/reference/real-sglang.md: ratio 0.001 -> 'SWA pool (979 tokens) cannot hold even one request ...'."""
    budget = infer_budget(g26, 109890, 87912, 0.8).lo
    with pytest.raises(SWAPoolRefused) as info:
        size_pools(g26, budget, 0.001)
    assert info.value.sglang_message == (
        "SWA pool (979 tokens) cannot hold even one request: the prefill admission floor is "
        "sliding_window_size (1023) + page_size (1). Increase --swa-full-tokens-ratio or the total KV budget."
    )
    assert info.value.min_ratio == min_feasible_ratio(g26, budget, 1)


def test_refusal_boundary_is_window_plus_page(g31: KVGeometry) -> None:
    budget = pinned_budget(98.0513).bytes
    low = min_feasible_ratio(g31, budget, 64, resolution=1e-4)
    assert low is not None
    ok = size_pools(g31, budget, low, 64)
    assert ok.swa_tokens > 1023 + 64
    below = size_pools(g31, budget, low - 1e-4, 64, check=False)
    assert below.swa_tokens <= 1023 + 64


def test_ratio_range_checked() -> None:
    geometry = KVGeometry.of(load_model("E4B"))
    for bad in (0.0, -0.1, 1.01):
        with pytest.raises(RatioOutOfRange, match=r"\(0, 1\]"):
            size_pools(geometry, 10**10, bad)
    size_pools(geometry, 10**10, 1.0)


def test_max_total_tokens_caps_the_full_side(g26: KVGeometry) -> None:
    budget = 20 * GIB
    capped = size_pools(g26, budget, 0.5, max_total_tokens=100_000)
    assert capped.full_tokens == 100_000 and capped.swa_tokens == 50_000


def test_tp_shrinks_per_gpu_bytes_and_grows_tokens() -> None:
    model = load_model("31B")
    one, two = KVGeometry.of(model, tp=1), KVGeometry.of(model, tp=2)
    assert two.full_bytes * 2 == one.full_bytes
    budget = 40 * GIB
    assert size_pools(two, budget, 0.5).full_tokens >= 2 * size_pools(one, budget, 0.5).full_tokens - 1


def test_budget_from_memory_reproduces_real_h100_kvcache() -> None:
    """docs/reference/real-sglang.md: mfs 0.85, weights 47.85 GiB, kvcache 18.864 GiB (text-only Gemma4ForCausalLM)."""
    model = load_model(str(DATA / "gemma4-text"))
    budget = estimate_budget(model, load_gpu("H100"), mem_fraction_static=0.85, weight_bytes=47.85 * GIB)
    assert budget.gib == pytest.approx(18.864, abs=0.01)


def test_default_mem_fraction_static_formula() -> None:
    # H100 (81559 MiB): reserved = 512 + 8192 x 1.5 + 128 + 256 x 2 = 13440 MiB
    assert default_mem_fraction_static(81559) == round((81559 - 13440) / 81559, 3)
    # small GPU: the 10 GiB floor does not apply below 60 GB
    assert default_mem_fraction_static(40 * 1024) == round((40960 - (512 + 4096 * 1.5 + 128 + 64)) / 40960, 3)
    # > 60 GB with a small chunk: at least 10 GiB reserved
    assert default_mem_fraction_static(81559, chunked_prefill_size=2048, cuda_graph_max_bs=8) == round(
        (81559 - 10240) / 81559, 3
    )


def test_weights_that_do_not_fit_say_what_to_do() -> None:
    with pytest.raises(ValueError, match="--tp 2"):
        estimate_budget(load_model("scout"), load_gpu("H100"))


def test_capacity_model_balances_pools(g26: KVGeometry) -> None:
    budget = infer_budget(g26, 109890, 87912, 0.8).lo
    chat = analytic_optimum(g26, budget, WorkloadShape(1024, 1024, 32))
    summarization = analytic_optimum(g26, budget, WorkloadShape(8192, 1024, 32))
    # Long prompts need the full pool: their best ratio is lower than chat's.
    assert summarization.ratio < chat.ratio
    for best in (chat, summarization):
        est = best.estimate
        assert est.full_requests == pytest.approx(est.swa_requests, rel=0.02)
    assert chat.plateau is not None and chat.plateau[0] <= chat.ratio <= chat.plateau[1]

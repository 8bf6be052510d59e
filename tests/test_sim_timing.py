"""The roofline timing model against docs/reference/perf.md's kernel tables and the user's B200 figures (docs/reference/seed.md).

Reference numbers are copied from docs/reference/perf.md (aiconfigurator's SGLang kernel tables,
26B-A4B shapes) and docs/reference/seed.md; docs/timing-model.md explains every tolerance.
"""

from __future__ import annotations

import math
import re
from importlib import resources
from itertools import combinations

import pytest

from autotune.hardware import load_gpu
from autotune.models.catalog import load_model
from autotune.sim.timing import DecodeBatch, PrefillChunk, TimingModel, attended_pairs, experts_touched

MOE_26B = load_model("26B-A4B")
DENSE_31B = load_model("31B")
GPUS = ("H100", "H200", "B200")


def decode_batch(model, batch: int, context: int) -> DecodeBatch:
    return DecodeBatch(batch, batch * context, batch * min(context, model.window))


def rel(model_value: float, reference: float) -> float:
    return model_value / reference - 1.0


# -- building blocks ---------------------------------------------------------------------------


def test_experts_touched_is_the_exact_coupon_expectation():
    # Brute force for a small case: E=6 experts, top-2, T=3 tokens, every routing equally likely.
    routings = list(combinations(range(6), 2))
    total = 0
    for a in routings:
        for b in routings:
            for c in routings:
                total += len(set(a) | set(b) | set(c))
    assert experts_touched(6, 2, 3) == pytest.approx(total / len(routings) ** 3)


def test_experts_touched_saturates_near_16_tokens_for_128_experts_top8():
    assert experts_touched(128, 8, 1) == pytest.approx(8)
    assert experts_touched(128, 8, 16) / 128 == pytest.approx(0.644, abs=0.005)
    assert experts_touched(128, 8, 128) > 127.9
    assert experts_touched(128, 8, 0) == 0


@pytest.mark.parametrize("prefix,extend,window", [(0, 7, None), (5, 9, None), (0, 20, 6), (3, 4, 6), (10, 5, 6), (2, 3, 100)])
def test_attended_pairs_counts_causal_window_pairs(prefix, extend, window):
    brute = sum(min(p + 1, window or p + 1) for p in range(prefix, prefix + extend))
    assert attended_pairs(prefix, extend, window) == brute


# -- docs/reference/perf.md: MoE layer of 26B-A4B ------------------------------------------------------------

MOE_TABLE_US = {  # tokens: 1, 16, 128, 8192
    "H100": (53, 520, 538, 1839),
    "H200": (44, 374, 386, 2211),
    "B200": (39, 245, 258, 1035),
}


@pytest.mark.parametrize("gpu", GPUS)
def test_moe_layer_matches_aiconfigurator_table(gpu):
    tm = TimingModel(MOE_26B, load_gpu(gpu))
    one, sixteen, many, prefill = (tm.moe_layer_s(t) * 1e6 for t in (1, 16, 128, 8192))
    ref = MOE_TABLE_US[gpu]
    assert abs(rel(one, ref[0])) < 0.10
    assert abs(rel(sixteen, ref[1])) < 0.35  # partly covered grouped GEMMs run below streaming bandwidth
    assert abs(rel(many, ref[2])) < 0.10
    assert abs(rel(prefill, ref[3])) < 0.10


@pytest.mark.parametrize("gpu", GPUS)
def test_moe_decode_reads_all_experts_from_a_few_dozen_tokens(gpu):
    tm = TimingModel(MOE_26B, load_gpu(gpu))
    t = {n: tm.moe_layer_s(n) for n in (1, 16, 64, 128, 256)}
    assert t[16] / t[1] > 4  # one token reads 8 experts, sixteen read ~82
    assert t[256] / t[64] < 1.03  # flat: everything is read already
    assert t[128] == pytest.approx(t[256], rel=1e-3)


def test_moe_decode_step_grows_with_batch_then_flattens_dense_is_flat():
    gpu = load_gpu("B200")
    moe, dense = TimingModel(MOE_26B, gpu), TimingModel(DENSE_31B, gpu)
    moe_1, moe_16, moe_64, moe_256 = (moe.decode_step_s(decode_batch(MOE_26B, b, 512)) for b in (1, 16, 64, 256))
    assert moe_16 / moe_1 > 2  # expert reads dominate a 26B-A4B step
    assert moe_256 / moe_64 < 1.5  # then every expert is read and only KV grows
    dense_1, dense_16 = (dense.decode_step_s(decode_batch(DENSE_31B, b, 512)) for b in (1, 16))
    assert dense_16 / dense_1 < 1.25  # weights dominate a 31B step: memory bound


# -- docs/reference/perf.md: decode attention per layer ----------------------------------------------------------

DECODE_TABLE_US = {  # (b, s): b=1 s=2048, b=32 s=2048, b=32 s=8192, b=128 s=2048
    ("H100", "swa"): (16.7, 116.1, 107.3, 405.9),
    ("H100", "full"): (35.3, 129.0, 444.8, 440.9),
    ("H200", "swa"): (16.7, 99.7, 87.0, 319.6),
    ("H200", "full"): (35.2, 115.4, 391.4, 394.5),
    ("B200", "swa"): (11.4, 47.3, 47.4, 157.2),
    ("B200", "full"): (12.6, 50.0, 159.3, 158.3),
}


@pytest.mark.parametrize("gpu,kind", list(DECODE_TABLE_US))
def test_decode_attention_per_layer_matches_table(gpu, kind):
    tm = TimingModel(MOE_26B, load_gpu(gpu))
    b1, b32, b32_long, b128 = (
        tm.decode_attention_layer_s(kind, decode_batch(MOE_26B, b, s)) * 1e6
        for b, s in ((1, 2048), (32, 2048), (32, 8192), (128, 2048))
    )
    ref = DECODE_TABLE_US[gpu, kind]
    assert abs(rel(b32, ref[1])) < 0.25
    assert abs(rel(b32_long, ref[2])) < 0.25
    assert abs(rel(b128, ref[3])) < 0.25
    if kind == "swa" or gpu == "B200":  # Hopper's full-layer kernel at b=1 is 2x its floor (hd 512)
        assert abs(rel(b1, ref[0])) < 0.20
    if kind == "swa":
        assert b32_long == pytest.approx(b32)  # flat in s beyond the window


# -- docs/reference/perf.md: prefill attention per layer ---------------------------------------------------------

PREFILL_TABLE_US = {  # 8192, 16384 tokens, batch 1, no prefix
    ("H100", "swa"): (5217, 18085),
    ("H100", "full"): (9999, 43784),
    ("B200", "swa"): (142, 278),
    ("B200", "full"): (1504, 5243),
}


@pytest.mark.parametrize("gpu,kind", list(PREFILL_TABLE_US))
def test_prefill_attention_per_layer_matches_table(gpu, kind):
    tm = TimingModel(MOE_26B, load_gpu(gpu))
    for length, ref in zip((8192, 16384), PREFILL_TABLE_US[gpu, kind]):
        assert abs(rel(tm.prefill_attention_layer_s(kind, [PrefillChunk(length, 0)]) * 1e6, ref)) < 0.20


def test_window_shortens_prefill_attention_on_b200_but_not_on_hopper():
    chunk = [PrefillChunk(8192, 0)]
    b200, h100 = TimingModel(MOE_26B, load_gpu("B200")), TimingModel(MOE_26B, load_gpu("H100"))
    # Sliding layers have half the head_dim of full ones: 0.5 is "no window benefit".
    hopper = h100.prefill_attention_layer_s("swa", chunk) / h100.prefill_attention_layer_s("full", chunk)
    blackwell = b200.prefill_attention_layer_s("swa", chunk) / b200.prefill_attention_layer_s("full", chunk)
    assert hopper == pytest.approx(0.5)
    assert blackwell < 0.15  # table: 142 / 1504 = 0.094
    # And a long chunk costs Hopper's sliding layers quadratically, B200's linearly.
    h_ratio = h100.prefill_attention_layer_s("swa", [PrefillChunk(16384, 0)]) / h100.prefill_attention_layer_s("swa", chunk)
    b_ratio = b200.prefill_attention_layer_s("swa", [PrefillChunk(16384, 0)]) / b200.prefill_attention_layer_s("swa", chunk)
    assert h_ratio == pytest.approx(4, rel=0.01)
    assert b_ratio == pytest.approx(2, rel=0.1)


# -- whole steps ------------------------------------------------------------------------------------


@pytest.mark.parametrize("gpu", GPUS)
def test_steps_are_monotone(gpu):
    for model in (MOE_26B, DENSE_31B):
        tm = TimingModel(model, load_gpu(gpu))
        by_batch = [tm.decode_step_s(decode_batch(model, b, 2048)) for b in (1, 4, 16, 64, 256)]
        by_context = [tm.decode_step_s(decode_batch(model, 16, s)) for s in (128, 1024, 8192, 65536)]
        by_tokens = [tm.prefill_step_s([PrefillChunk(n, 0)]) for n in (1, 256, 2048, 8192, 16384)]
        by_prefix = [tm.prefill_step_s([PrefillChunk(2048, p)]) for p in (0, 8192, 65536)]
        for series in (by_batch, by_context, by_tokens, by_prefix):
            assert all(a < b for a, b in zip(series, series[1:])), series


def test_small_prefill_is_memory_bound_large_prefill_compute_bound():
    gpu = load_gpu("B200")
    tm = TimingModel(DENSE_31B, gpu)
    weight_read = DENSE_31B.weight_bytes / (gpu.weight_stream_tbs * 1e12)
    one = tm.prefill_step_s([PrefillChunk(1, 0)])
    assert weight_read * 0.9 < one - gpu.prefill_step_overhead_ms / 1e3 < weight_read * 1.2
    eight_k, sixteen_k = (tm.prefill_step_s([PrefillChunk(n, 0)]) for n in (8192, 16384))
    assert 2.0 < sixteen_k / eight_k < 2.3  # linear FLOPs, plus a quadratic share from attention
    # Two 8k prompts in one batch cost less than one 16k prompt (less causal attention).
    assert tm.prefill_step_s([PrefillChunk(8192, 0)] * 2) < sixteen_k


def test_speculative_decoding_trades_step_time_for_tokens():
    gpu = load_gpu("B200")
    plain = TimingModel(DENSE_31B, gpu)
    spec = TimingModel(DENSE_31B, gpu, spec_accept_length=3.13)
    batch = decode_batch(DENSE_31B, 32, 1536)
    assert plain.tokens_per_decode_step() == 1.0
    assert spec.tokens_per_decode_step() == 3.13
    gpu_s = plain.decode_step_s(batch) - gpu.decode_step_overhead_ms / 1e3
    # The verify forward scores 4 tokens per request, still memory bound at 32 requests.
    expected = gpu_s * gpu.spec_draft_factor + (gpu.spec_step_overhead_ms + gpu.decode_step_overhead_ms) / 1e3
    assert spec.decode_step_s(batch) == pytest.approx(expected, rel=0.01)
    assert spec.decode_step_s(batch) / 3.13 < plain.decode_step_s(batch)  # MTP pays off
    # At large batch the verify's GEMMs become compute bound and the step grows steeply.
    assert spec.decode_step_s(decode_batch(DENSE_31B, 256, 1536)) > 3 * spec.decode_step_s(batch)
    with pytest.raises(ValueError):
        TimingModel(DENSE_31B, gpu, spec_accept_length=4.5)


def test_tensor_parallel_splits_weights_and_adds_all_reduces():
    gpu = load_gpu("H100")
    one, two = TimingModel(DENSE_31B, gpu), TimingModel(DENSE_31B, gpu, tp=2)
    batch = decode_batch(DENSE_31B, 32, 2048)
    t1, t2 = one.decode_step_s(batch), two.decode_step_s(batch)
    assert 0.5 * t1 < t2 < 0.6 * t1
    scout = TimingModel(load_model("scout"), gpu, tp=4)  # 218 GB of weights: needs TP
    assert 0 < scout.decode_step_s(decode_batch(scout.model, 8, 4096)) < 0.1
    assert scout.describe()["allreduce_busbw_gbs"] == gpu.allreduce_busbw_gbs


def test_empty_steps_take_no_time_and_describe_names_the_coefficients():
    tm = TimingModel(MOE_26B, load_gpu("B200"), spec_accept_length=3.0)
    assert tm.decode_step_s(DecodeBatch(0, 0, 0)) == 0.0
    assert tm.prefill_step_s([]) == 0.0
    info = tm.describe()
    for key in ("weight_stream_tbs", "kv_read_tbs", "gemm_tflops", "moe_gemm_tflops", "decode_step_overhead_ms",
                "prefill_step_overhead_ms", "spec_draft_factor", "spec_step_overhead_ms", "moe_dispatch_floor_us"):
        assert info[key] is not None, key
    assert info["layers"] == {"full": 5, "swa": 25}
    assert info["expert_mb_per_rank"] == pytest.approx(11.97, rel=0.01)  # 3 x 2816 x 704 x 2 bytes


def test_every_gpu_coefficient_names_its_source():
    text = (resources.files("autotune.hardware") / "gpus.yaml").read_text(encoding="utf-8")
    for line in text.splitlines():
        match = re.match(r"\s{4}(\w+):", line)
        if match and match.group(1) != "aliases":
            assert re.search(r"#\s*(datasheet|aiconfig|measured|fitted|assumed|estimated)", line), line


# -- docs/reference/seed.md: gemma-4-31B-it on one B200, ratio 0.8, MTP ---------------------------------------------
# Closed forms (docs/timing-model.md, "Calibration"): bench_serving with fixed lengths, 40 prompts,
# max concurrency 32. B200's default chunked prefill is 16384 tokens.

CHAT_IN = CHAT_OUT = 1024
SUMM_IN, SUMM_OUT = 8192, 1024
FULL_POOL_AT_08 = 132992


def b200_31b(accept_length: float) -> TimingModel:
    return TimingModel(DENSE_31B, load_gpu("B200"), spec_accept_length=accept_length)


def chat_tpot_s(tm: TimingModel) -> float:
    """32 requests decode together; context grows 1024 -> 2048 (mean 1536)."""
    return tm.decode_step_s(decode_batch(DENSE_31B, 32, CHAT_IN + CHAT_OUT // 2)) / tm.tokens_per_decode_step()


def chat_ttft_s(tm: TimingModel) -> float:
    """The median request is in the first 16384-token prefill batch (16 prompts of 1024)."""
    return tm.prefill_step_s([PrefillChunk(CHAT_IN, 0)] * 16)


def chat_throughput(tm: TimingModel) -> float:
    """Two waves: 32 prompts (two prefill batches), then the last 8 once the first wave ends."""
    steps = (CHAT_OUT - 1) / tm.tokens_per_decode_step()
    wave1 = 2 * chat_ttft_s(tm) + steps * tm.decode_step_s(decode_batch(DENSE_31B, 32, 1536))
    wave2 = tm.prefill_step_s([PrefillChunk(CHAT_IN, 0)] * 8) + steps * tm.decode_step_s(decode_batch(DENSE_31B, 8, 1536))
    return 40 * (CHAT_IN + CHAT_OUT) / (wave1 + wave2)


def summ_concurrency() -> int:
    return FULL_POOL_AT_08 // (SUMM_IN + SUMM_OUT)  # 14: the full pool holds prompt + output


def summ_tpot_s(tm: TimingModel) -> float:
    """Steady state: n requests decode; every completion admits a new 8k prompt whose prefill stalls them."""
    n = summ_concurrency()
    steps_per_request = (SUMM_OUT - 1) / tm.tokens_per_decode_step()
    stall_per_step = n / steps_per_request * tm.prefill_step_s([PrefillChunk(SUMM_IN, 0)])
    step = tm.decode_step_s(decode_batch(DENSE_31B, n, SUMM_IN + SUMM_OUT // 2))
    return (step + stall_per_step) / tm.tokens_per_decode_step()


def summ_throughput(tm: TimingModel) -> float:
    """40 prefills run alone; decode runs in ceil(40 / 14) = 3 generations of a full request life."""
    n = summ_concurrency()
    steps = (SUMM_OUT - 1) / tm.tokens_per_decode_step()
    prefills = 40 * tm.prefill_step_s([PrefillChunk(SUMM_IN, 0)])
    decode = math.ceil(40 / n) * steps * tm.decode_step_s(decode_batch(DENSE_31B, n, SUMM_IN + SUMM_OUT // 2))
    return 40 * (SUMM_IN + SUMM_OUT) / (prefills + decode)


def test_seed_chat_figures():
    tm = b200_31b(3.13)
    assert abs(rel(chat_tpot_s(tm) * 1e3, 8.69)) < 0.05  # fitted: spec_step_overhead_ms
    assert abs(rel(chat_ttft_s(tm) * 1e3, 673)) < 0.05  # fitted: prefill_step_overhead_ms
    assert abs(rel(chat_throughput(tm), 4715)) < 0.10  # predicted


def test_seed_summarisation_figures():
    tm = b200_31b(3.14)
    assert summ_concurrency() == 14
    # Predicted, and optimistic: docs/timing-model.md lists what the closed form leaves out.
    assert -0.25 < rel(summ_tpot_s(tm) * 1e3, 17.02) < 0
    assert 0 < rel(summ_throughput(tm), 7475) < 0.30
    # Summarisation's TPOT is about twice chat's mostly because of prefill stalls, not longer KV.
    assert summ_tpot_s(tm) / chat_tpot_s(b200_31b(3.13)) > 1.4
    step_ratio = tm.decode_step_s(decode_batch(DENSE_31B, 14, 8704)) / tm.decode_step_s(decode_batch(DENSE_31B, 32, 1536))
    assert step_ratio < 1.0

"""bench_serving's figures from per-request outcomes."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from autotune.measure.serving_metrics import SLO, Percentiles, RequestOutcome, ServingSummary, stream_timings, summarize


def _outcomes() -> list[RequestOutcome]:
    return [
        # TPOT (0.6 - 0.2) / 4 = 100 ms
        RequestOutcome(0, prompt_len=100, output_len=5, success=True, start_s=0.0, ttft_s=0.2,
                       itl_s=[0.1] * 4, e2e_s=0.6),
        # TPOT (1.0 - 0.5) / 2 = 250 ms
        RequestOutcome(1, prompt_len=200, output_len=3, success=True, start_s=0.5, ttft_s=0.5,
                       itl_s=[0.25, 0.25], e2e_s=1.0),
        # one token: no TPOT
        RequestOutcome(2, prompt_len=50, output_len=1, success=True, start_s=1.0, ttft_s=0.3,
                       itl_s=[], e2e_s=0.3),
        RequestOutcome(3, prompt_len=400, output_len=0, success=False, start_s=1.2, ttft_s=None,
                       itl_s=[], e2e_s=None, error="HTTP 500"),
    ]


def test_summary_hand_computed():
    s = summarize(_outcomes(), duration_s=2.0)

    assert (s.completed, s.failed) == (3, 1)
    assert (s.total_input, s.total_output) == (350, 9)  # failed requests count for nothing
    assert s.request_throughput == pytest.approx(1.5)
    assert s.input_throughput == pytest.approx(175.0)
    assert s.output_throughput == pytest.approx(4.5)
    assert s.total_throughput == pytest.approx(179.5)
    assert s.concurrency == pytest.approx((0.6 + 1.0 + 0.3) / 2.0)

    assert s.tpot.mean == pytest.approx(175.0)
    assert s.tpot.median == pytest.approx(175.0)
    assert s.tpot.p99 == pytest.approx(np.percentile([100.0, 250.0], 99))
    assert s.ttft.mean == pytest.approx(1000 / 3)
    assert s.ttft.median == pytest.approx(300.0)
    assert s.ttft.p90 == pytest.approx(np.percentile([200.0, 500.0, 300.0], 90))
    assert s.ttft.std == pytest.approx(np.std([200.0, 500.0, 300.0]))
    assert s.itl.mean == pytest.approx(150.0)
    assert s.itl.max == pytest.approx(250.0)
    assert s.e2e.median == pytest.approx(600.0)
    assert s.e2e.p95 == pytest.approx(np.percentile([600.0, 1000.0, 300.0], 95))

    # 1-s buckets from t=0: A's 5 tokens at 0.2..0.6 -> [0]; B's at 1.0, 1.25, 1.5 and C's at 1.3 -> [1]
    assert s.peak_output_throughput == 5.0
    # A spans bucket 0, B buckets 0-1, C bucket 1
    assert s.peak_concurrent_requests == 2
    assert s.goodput_rps is None and s.slo_attainment is None


def test_goodput_follows_bench_serving():
    # A meets both; B misses TTFT; C meets TTFT and its single token counts as TPOT 0; D failed.
    s = summarize(_outcomes(), duration_s=2.0, slo=SLO(ttft_ms=400, tpot_ms=200))
    assert s.goodput_rps == pytest.approx(1.0)
    assert s.slo_attainment == pytest.approx(0.5)  # good / all requests sent
    # thresholds are inclusive: A's E2E is exactly 600 ms
    assert summarize(_outcomes(), 2.0, SLO(e2e_ms=600)).goodput_rps == pytest.approx(1.0)
    assert summarize(_outcomes(), 2.0, SLO(e2e_ms=599)).goodput_rps == pytest.approx(0.5)
    # only aggregate objectives: no goodput
    assert summarize(_outcomes(), 2.0, SLO(ttft_p99_ms=1)).goodput_rps is None
    # no measured TTFT cannot meet a TTFT threshold
    blind = RequestOutcome(0, 10, 5, True, 0.0, None, [], 0.1)
    assert not SLO(ttft_ms=1e9).request_is_good(blind)
    assert SLO(e2e_ms=1e9).request_is_good(blind)


def test_p99_violations():
    s = summarize(_outcomes(), 2.0)
    assert SLO(tpot_p99_ms=300).violations(s) == ()
    (missed,) = SLO(ttft_p99_ms=400, tpot_p99_ms=300).violations(s)
    assert missed == "P99 TTFT 496.00 ms > 400 ms"  # 300 + 0.98 x (500 - 300)
    assert SLO(ttft_p99_ms=1e9).violations(summarize([], 1.0)) == ("P99 TTFT nan ms > 1e+09 ms",)


def test_matches_bench_serving_calculate_metrics_on_random_outcomes():
    rng = np.random.default_rng(0)
    outcomes = []
    for i in range(60):
        n = int(rng.integers(1, 30))
        itl = rng.uniform(0.01, 0.05, size=n - 1).tolist()
        ttft = float(rng.uniform(0.05, 2.0))
        outcomes.append(RequestOutcome(i, int(rng.integers(1, 4000)), n, bool(rng.random() > 0.1),
                                       float(rng.uniform(0, 20)), ttft, itl, ttft + sum(itl) + 0.001))
    s = summarize(outcomes, duration_s=25.0)

    # sglang.benchmark.serving.calculate_metrics, restated
    ok = [o for o in outcomes if o.success]
    ttfts = [o.ttft_s for o in ok]
    tpots = [(o.e2e_s - o.ttft_s) / (o.output_len - 1) for o in ok if o.output_len > 1]
    itls = [x for o in ok for x in o.itl_s]
    e2e = [o.e2e_s for o in ok]
    assert s.ttft.p99 == pytest.approx(np.percentile(ttfts, 99) * 1000)
    assert s.tpot.mean == pytest.approx(np.mean(tpots) * 1000)
    assert s.tpot.p90 == pytest.approx(np.percentile(tpots, 90) * 1000)
    assert s.itl.median == pytest.approx(np.median(itls) * 1000)
    assert s.itl.std == pytest.approx(np.std(itls) * 1000)
    assert s.e2e.p95 == pytest.approx(np.percentile(e2e, 95) * 1000)
    assert s.concurrency == pytest.approx(np.sum(e2e) / 25.0)
    assert s.output_throughput == pytest.approx(sum(o.output_len for o in ok) / 25.0)

    t0 = min(o.start_s for o in ok)
    buckets = int(np.ceil(max(o.start_s + o.e2e_s for o in ok) - t0)) + 1
    tokens = np.zeros(buckets)
    for o in ok:
        t = o.start_s + o.ttft_s
        times = [t]
        for gap in o.itl_s:
            t += gap
            times.append(t)
        for t in times:
            tokens[int(t - t0)] += 1
    assert s.peak_output_throughput == tokens.max()


def test_stream_timings_split_multi_token_chunks():
    chunks = [(10.2, 1), (10.3, 2), (10.5, 4), (10.6, 4), (10.9, 5)]
    ttft, itl = stream_timings(10.0, chunks)
    assert ttft == pytest.approx(0.2)
    # 2 tokens in 0.2 s -> two gaps of 0.1; the empty chunk at 10.6 folds into the next gap (0.4 s)
    assert itl == pytest.approx([0.1, 0.1, 0.1, 0.4])
    ttft, itl = stream_timings(0.0, [(1.0, 3), (1.5, 5)])
    assert ttft == 1.0 and itl == pytest.approx([0.25, 0.25])
    assert stream_timings(0.0, []) == (None, [])


def test_empty_and_degenerate_inputs():
    s = summarize([], duration_s=0.0)
    assert (s.completed, s.failed, s.total_output, s.peak_concurrent_requests) == (0, 0, 0, 0)
    assert math.isnan(s.request_throughput) and math.isnan(s.ttft.median) and math.isnan(s.e2e.p99)
    all_failed = summarize([_outcomes()[3]], duration_s=1.0, slo=SLO(ttft_ms=1))
    assert all_failed.completed == 0 and all_failed.output_throughput == 0.0
    assert all_failed.goodput_rps == 0.0 and all_failed.slo_attainment == 0.0
    assert Percentiles.of_seconds([0.5]).p99 == 500.0

    with pytest.raises(ValueError, match="duration_s"):
        summarize(_outcomes(), duration_s=-1.0)
    with pytest.raises(ValueError, match="e2e_s"):
        summarize([RequestOutcome(7, 1, 1, True, 0.0, 0.1, [], None)], 1.0)


def test_to_dict_is_strict_json_and_round_trips():
    s = summarize(_outcomes(), 2.0, SLO(ttft_ms=400))
    data = json.loads(json.dumps(s.to_dict(), allow_nan=False))
    assert data["ttft"]["median"] == pytest.approx(300.0)
    assert ServingSummary.from_dict(data) == s

    empty = summarize([], 0.0)
    data = json.loads(json.dumps(empty.to_dict(), allow_nan=False))
    assert data["ttft"]["mean"] is None and data["request_throughput"] is None
    assert ServingSummary.from_dict(data).to_dict() == empty.to_dict()


def test_table_rows_use_bench_serving_labels():
    rows = dict(summarize(_outcomes(), 2.0, SLO(tpot_ms=300)).table_rows())
    assert rows["Successful requests:"] == "3"
    assert rows["Benchmark duration (s):"] == "2.00"
    assert rows["Output token throughput (tok/s):"] == "4.50"
    assert rows["Peak output token throughput (tok/s):"] == "5.00"
    assert rows["Median TTFT (ms):"] == "300.00"
    assert rows["Mean TPOT (ms):"] == "175.00"
    assert rows["Max ITL (ms):"] == "250.00"
    assert rows["Request goodput (req/s):"] == "1.50"
    assert "Request goodput (req/s):" not in dict(summarize(_outcomes(), 2.0).table_rows())


def test_slo_parse():
    assert SLO.parse("ttft_p99=2000,tpot_p99=50") == SLO(ttft_p99_ms=2000, tpot_p99_ms=50)
    assert SLO.parse("ttft=500, tpot=50 e2e=20000") == SLO(ttft_ms=500, tpot_ms=50, e2e_ms=20000)
    assert SLO.parse("ttft:500 e2el:900") == SLO(ttft_ms=500, e2e_ms=900)  # bench_serving --goodput style
    assert SLO.parse("") == SLO()
    assert SLO.parse("ttft=1").has_goodput and not SLO.parse("ttft_p99=1").has_goodput
    with pytest.raises(ValueError, match="unknown SLO key 'ttft_p95'.*valid keys: ttft_p99"):
        SLO.parse("ttft_p95=100")
    with pytest.raises(ValueError, match="not KEY=MS"):
        SLO.parse("ttft")
    with pytest.raises(ValueError, match="number of milliseconds"):
        SLO.parse("tpot=fast")
    with pytest.raises(ValueError, match="> 0"):
        SLO.parse("tpot=-5")

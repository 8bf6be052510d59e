"""bench/swa_footprint_fidelity.py on the committed real-SGLang footprint grid (docs/real-gpu/footprint/):
the data parses, every measured phase has samples and decode lines, and the real-side figures
(peak SWA tokens per running request, optimum ratio, decode step time) come out as documented in
docs/real-gpu/footprint.md."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import load_bench

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "docs" / "real-gpu" / "footprint"

pytestmark = pytest.mark.skipif(not any(DATA.glob("*/results.jsonl")), reason=f"no results under {DATA}")


@pytest.fixture(scope="module")
def bench():
    return load_bench("swa_footprint_fidelity")


@pytest.fixture(scope="module")
def data(bench):
    return bench.load(DATA)


def _phase(phases, ratio, shape):
    return next(p for p in phases if p.ratio == ratio and p.shape == shape)


def test_every_boot_states_one_budget_and_its_layout(data):
    boots, _, _ = data
    assert len({b.ratio for b in boots}) >= 8
    for b in boots:
        assert b.ok and b.full_tokens and b.swa_tokens
        assert b.swa_tokens <= b.full_tokens
        assert b.kvcache_gib == pytest.approx(15.042, abs=0.002)  # one KV budget at every ratio
        assert b.weight_gib == pytest.approx(51.699, abs=0.01)


def test_every_measured_phase_has_samples_and_a_plausible_peak(bench, data):
    boots, phases, _ = data
    swa_pool = {b.ratio: b.swa_tokens for b in boots}
    measured = [p for p in phases if p.measured]
    assert len(measured) >= 55
    for p in measured:
        assert len(p.series) >= 3, p.name
        assert p.decode, p.name
        fig = bench.real_figures(p)
        assert fig.peak is not None and 0 < fig.peak <= swa_pool[p.ratio], (p.ratio, p.name)
        assert fig.max_running_log <= p.concurrency  # the log's #running never exceeds what the client sent
        # A running request holds at least its locked prompt tail once it decodes (0.5.17: min(P, W)).
        assert fig.peak >= min(p.prompt, bench.WINDOW), (p.ratio, p.name)


def test_real_0517_keeps_every_decoded_token(bench, data):
    """The issue's finding: per running request, min(P, W) + the tokens decoded so far, not W + one interval."""
    _, phases, _ = data
    for ratio in (1.0, 0.8, 0.4):
        for shape, prompt, output in (("1024/512@32", 1024, 512), ("4096/512@16", 4096, 512), ("512/384@32", 512, 384)):
            fig = bench.real_figures(_phase(phases, ratio, shape))
            rule = bench.rule_0517(prompt, output)
            assert rule - 40 <= fig.peak <= rule, (ratio, shape, fig.peak)  # gauges are logged every 40 steps
        assert bench.real_figures(_phase(phases, ratio, "1024/512@32")).peak > bench.WINDOW + 128


def test_optimum_and_cliff_on_the_chat_shape(bench, data):
    _, phases, _ = data
    by_ratio = {p.ratio: p.total_tok_s for p in phases if p.shape == "1024/128@64" and p.measured}
    best, cliff, note = bench.optimum_and_cliff(by_ratio)
    assert best == 1.0 and cliff == 1.0 and "0.9" in note
    flat = {p.ratio: p.total_tok_s for p in phases if p.shape == "512/384@32" and p.measured}
    assert bench.optimum_and_cliff(flat)[1] is None  # within 20 % at every ratio


def test_decode_step_time_grows_with_running(bench, data):
    _, phases, _ = data
    by_bucket: dict[int, list[float]] = {}
    for p in phases:
        for row, ms in bench.step_times(p.decode, p.busy_ts):
            by_bucket.setdefault(bench.bucket(int(row[1])), []).append(ms)
    import statistics

    med = {b: statistics.median(v) for b, v in by_bucket.items() if len(v) >= 5}
    assert 5 < med[16] < med[32] < med[64] < 20


def test_definitions_on_synthetic_rows(bench):
    # peak per request: only points with >= 90 % of the concurrency, else flagged
    assert bench.peak_per_request([(32, 32000), (10, 20000)], 32) == (1000, False)
    assert bench.peak_per_request([(16, 16000), (8, 12000)], 32) == (1000, True)
    # step time: #running / gen throughput, needs the same #running on the line before
    rows = [[100, 32, 0, 0, 3200.0, 0, True], [101, 32, 0, 0, 3200.0, 0, True], [102, 16, 0, 0, 1600.0, 0, True]]
    assert [ms for _, ms in bench.step_times(rows)] == [10.0]
    assert bench.step_times(rows, busy=[101]) == []


def test_the_grid_parses_real_log_lines(bench):
    grid = bench.grid_module()
    text = (
        "[2026-11-28 13:08:51] Decode batch, #running-req: 64, #full token: 69184, full token usage: 0.97, "
        "#swa token: 69120, swa token usage: 0.96, cuda graph: True, gen throughput (token/s): 5184.69, #queue-req: 32\n"
        "[2026-11-28 13:31:52] Prefill batch, #new-seq: 1, #new-token: 3, #cached-token: 0, full token usage: 0.00, "
        "swa token usage: 0.00, #running-req: 0, #queue-req: 0, #pending-token: 0, cuda graph: False\n"
        "[2026-11-28 13:31:54] KV cache pool is full. Retract requests. #retracted_reqs: 1, #new_tokens_gained: 1023\n"
    )
    parsed = grid.parse_log_lines(text)
    assert parsed["decode"] == [[13 * 3600 + 8 * 60 + 51, 64, 69184, 69120, 5184.69, 32, True]]
    assert parsed["prefill"][0][1:] == [1, 3, 0, 0, 0]
    assert parsed["retract"] == [[13 * 3600 + 31 * 60 + 54, 1]]


def test_one_phase_simulated_beside_the_real_one(bench, data):
    boots, phases, _ = data
    simulator = bench.Simulator(boots)
    phase = _phase(phases, 1.0, "512/384@32")
    sim = simulator.run(1.0, phase)
    assert (sim.full_tokens, sim.swa_tokens) == (71691, 71691)  # the pinned budget gives the real layout
    assert sim.status == "ok" and sim.peak_per_req == pytest.approx(bench.real_figures(phase).peak, abs=16)


def test_unified_memory_crashes_are_read_as_crashes_with_the_servers_words(bench):
    """Issue 14 (docs/real-gpu/unified.md): both --enable-unified-memory boots died with a device-side assert;
    the static 0.4 boot of the same call ran the long prompts."""
    unified = REPO / "docs" / "real-gpu" / "unified"
    if not (unified / "results.jsonl").exists():
        pytest.skip("no unified-memory data")
    boots, phases, _ = bench.load(unified)
    crashed = [p for p in phases if p.boot_id.startswith("ru-")]
    assert {p.shape for p in crashed} == {"1024/128@64", "8192/64@16"}
    assert all(p.status == "crashed" for p in crashed)
    for boot in (b for b in boots if b.boot_id.startswith("ru-")):
        assert bench.server_exception(unified, boot.boot_id, boots) == (
            "torch.AcceleratorError: CUDA error: device-side assert triggered")
    static = [p for p in phases if p.boot_id.startswith("r0.4-")]
    assert [p.status for p in static] == ["ok", "ok", "ok"]
    table = bench.unified_report(unified)
    assert "| 8192/64@16 | **unified** | crashed | 0/32 |" in table


def test_the_grid_takes_per_phase_waves_and_reads_labelled_gpu_seconds(bench):
    grid = bench.grid_module()
    phases = grid.parse_phases("1024/1@8x6,4096/128@32")
    assert [(p.prompt, p.output, p.concurrency, p.waves) for p in phases] == [(1024, 1, 8, 6), (4096, 128, 32, None)]
    assert phases[0].name == "p1024-o1-c8-w6" and phases[1].name == "p4096-o128-c32"  # old names unchanged
    page = (
        "# HELP sglang:forward_execution_seconds_total GPU busy.\n"
        "# TYPE sglang:forward_execution_seconds_total counter\n"
        'sglang:forward_execution_seconds_total{category="extend",model_name="m"} 1.5\n'
        'sglang:forward_execution_seconds_total{category="decode",model_name="m"} 0.25\n'
    )
    assert grid.labelled_totals(page, grid.FORWARD_SECONDS, "category") == {"extend": 1.5, "decode": 0.25}
    passes = (
        "# TYPE sglang:cuda_graph_passes_total counter\n"
        'sglang:cuda_graph_passes_total{mode="prefill_none",model_name="m"} 218\n'
        'sglang:cuda_graph_passes_total{mode="decode_cuda_graph",model_name="m"} 302\n'
    )
    assert grid.labelled_totals(passes, grid.FORWARD_PASSES, "mode") == {"prefill_none": 218, "decode_cuda_graph": 302}


def test_the_grid_refuses_a_server_env_without_a_value(bench, tmp_path, capsys):
    grid = bench.grid_module()
    with pytest.raises(SystemExit) as stop:
        grid.main(["--out", str(tmp_path), "--backend", "sim", "--server-env", "NOVALUE"])
    assert stop.value.code == 2 and "NAME=VALUE" in capsys.readouterr().err


def test_the_grid_counts_the_kernels_in_the_triton_cache(bench, tmp_path, monkeypatch):
    grid = bench.grid_module()
    monkeypatch.delenv("TRITON_CACHE_DIR", raising=False)
    assert grid.compiled_kernels() is None
    monkeypatch.setenv("TRITON_CACHE_DIR", str(tmp_path))
    for key in ("A", "B"):
        (tmp_path / key).mkdir()
        (tmp_path / key / "fused_moe_kernel.cubin").write_bytes(b"")
        (tmp_path / key / "fused_moe_kernel.json").write_text("{}")
    assert grid.compiled_kernels() == 2

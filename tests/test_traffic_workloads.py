"""Production traffic as workloads: Azure / BurstGPT CSV traces, slices, mixes, length histograms,
and a workload built from a server's metrics through a real Prometheus HTTP API.

Two HTTP set-ups for `from-prometheus`: in the fast suite a real local aiohttp server that answers
the Prometheus API's JSON (query and query_range) from canned series; under `slow`, a real
Prometheus (as tests/test_prometheus.py starts it) scraping a simulated SGLang that served requests.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml
from aiohttp import web
from typer.testing import CliRunner

from autotune.cli.app import app
from autotune.workloads import (
    MaxConcurrency,
    RequestSpec,
    TraceTimes,
    Workload,
    WorkloadError,
    load_csv_trace,
    parse_workload_arg,
    slice_trace,
)
from autotune.workloads.from_prometheus import fetch_traffic, traffic_entry
from conftest import TAG
from test_prometheus import free_port, prometheus_binary, stop_group

AZURE = Path("/work/shared/data/azure-llm-trace-2023/AzureLLMInferenceTrace_conv.csv")
runner = CliRunner()


def _csv(path: Path, text: str) -> Path:
    path.write_text(text.lstrip())
    return path


AZURE_SMALL = """
TIMESTAMP,ContextTokens,GeneratedTokens
2023-11-16 18:15:46.6805900,374,44
2023-11-16 18:15:50.9951690,396,109
2023-11-16 18:15:51.2224670,879,55
2023-11-16 18:16:46.6805900,91,16
"""

BURST = """
Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type
5,ChatGPT,472,18,490,Conversation log
45,ChatGPT,1087,0,1087,Conversation log
118,GPT-4,417,132,549,Conversation log
130,ChatGPT,1360,249,1609,API log
"""


# --- CSV traces ---------------------------------------------------------------------------------


def test_azure_csv_replays_offsets_from_the_first_row(tmp_path):
    w = load_csv_trace(_csv(tmp_path / "az.csv", AZURE_SMALL))
    assert isinstance(w.arrival, TraceTimes) and w.name == "az" and w.source["kind"] == "azure-trace"
    assert [(r.prompt_len, r.output_len) for r in w.requests] == [(374, 44), (396, 109), (879, 55), (91, 16)]
    assert [round(r.arrival_s, 6) for r in w.requests] == [0.0, 4.314579, 4.541877, 60.0]
    assert Workload.from_dict(json.loads(json.dumps(w.to_dict()))) == w


def test_burstgpt_filters_and_zero_lengths(tmp_path):
    path = _csv(tmp_path / "burst.csv", BURST)
    with pytest.raises(WorkloadError, match=r"burst.csv:3: .*'Response tokens' must be >= 1.*drop_zero_lengths"):
        load_csv_trace(path)
    w = load_csv_trace(path, drop_zero_lengths=True, model="ChatGPT")
    assert [(r.prompt_len, r.arrival_s) for r in w.requests] == [(472, 0.0), (1360, 125.0)]
    assert w.source["dropped_zero_length_rows"] == 1
    w = load_csv_trace(path, log_type="Conversation log", drop_zero_lengths=True)
    assert [r.prompt_len for r in w.requests] == [472, 417]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("TIMESTAMP,ContextTokens\n2023-11-16 18:15:46,3\n", r"bad.csv:1: .*lacks column\(s\) \['GeneratedTokens'\]"),
        ("Timestamp,Request tokens\n1,2\n", r"bad.csv:1: .*lacks column\(s\) \['Response tokens'\]"),
        ("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46,3,4\n2023-11-16 18:15:45,3,4\n",
         r"bad.csv:3: 'TIMESTAMP' '2023-11-16 18:15:45' is earlier than line 2's; a trace must be sorted"),
        ("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46,0,4\n", r"bad.csv:2: .*must be >= 1, got 0 and 4"),
        ("TIMESTAMP,ContextTokens,GeneratedTokens\nyesterday,3,4\n", r"bad.csv:2: 'TIMESTAMP' must be a date-time"),
        ("TIMESTAMP,ContextTokens,GeneratedTokens\n1,3.5,4\n", r"bad.csv:2: 'ContextTokens' must be a whole number"),
        ("TIMESTAMP,ContextTokens,GeneratedTokens\n1,3\n", r"bad.csv:2: 2 field\(s\), the header has 3"),
        ("", r"bad.csv: the file is empty"),
    ],
)
def test_bad_csv_names_the_file_and_line(tmp_path, text, message):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(WorkloadError, match=message):
        parse_workload_arg(str(path))


def test_yaml_slices_a_csv_trace_and_names_the_slice(tmp_path):
    _csv(tmp_path / "az.csv", AZURE_SMALL)
    (tmp_path / "w.yaml").write_text("- {dataset: az.csv, start: 1s, duration: 1m, speedup: 2}\n")
    [w] = parse_workload_arg(str(tmp_path / "w.yaml"))
    assert w.name == "az-from1s-for60s-x2" and w.arrival == TraceTimes(2.0)
    assert [r.prompt_len for r in w.requests] == [396, 879, 91]
    assert w.requests[0].arrival_s == 0.0  # re-based on the first kept request
    (tmp_path / "w.yaml").write_text("- {dataset: az.csv, start: 61}\n")
    with pytest.raises(WorkloadError, match=r"no request in the window \[61, inf\) s; the trace spans 0-60 s"):
        parse_workload_arg(str(tmp_path / "w.yaml"))
    (tmp_path / "w.yaml").write_text("- {dataset: az.csv, request_rate: 3}\n")
    with pytest.raises(WorkloadError, match="timestamped trace; it takes 'speedup'"):
        parse_workload_arg(str(tmp_path / "w.yaml"))
    (tmp_path / "w.yaml").write_text("- {dataset: az.csv, model: ChatGPT}\n")
    with pytest.raises(WorkloadError, match="apply to BurstGPT traces"):
        parse_workload_arg(str(tmp_path / "w.yaml"))


def test_mooncake_jsonl_takes_the_same_slicing(tmp_path):
    lines = [{"timestamp": 1000 * k, "input_length": 10 + k, "output_length": 5} for k in range(10)]
    (tmp_path / "moon.jsonl").write_text("\n".join(json.dumps(x) for x in lines))
    (tmp_path / "w.yaml").write_text("- {dataset: moon.jsonl, start: 2, duration: 5, num_prompts: 3}\n")
    [w] = parse_workload_arg(str(tmp_path / "w.yaml"))
    assert [r.prompt_len for r in w.requests] == [12, 13, 14] and w.name == "moon-from2s-for5s-n3"


def test_stratified_sample_keeps_the_length_distribution():
    rng = np.random.RandomState(0)
    prompts = rng.lognormal(7, 1, size=4000).astype(int) + 1
    w = Workload("t", tuple(RequestSpec(i, int(p), 10, arrival_s=i * 0.1) for i, p in enumerate(prompts)), TraceTimes())
    s = slice_trace(w, sample=0.05, seed=3)
    assert len(s.requests) == 200 and s.name == "t-p0.05"
    kept = np.array([r.prompt_len for r in s.requests])
    for q in (10, 50, 90):
        assert abs(np.percentile(kept, q) / np.percentile(prompts, q) - 1) < 0.05
    times = [r.arrival_s for r in s.requests]
    assert times == sorted(times) and times[0] == 0.0
    assert slice_trace(w, sample=0.05, seed=3) == s


@pytest.mark.skipif(not AZURE.is_file(), reason="the Azure trace is not on this machine")
def test_the_real_azure_trace():
    w = load_csv_trace(AZURE)
    assert len(w.requests) == 19366 and 3400 < w.requests[-1].arrival_s < 3600
    prompts = np.array([r.prompt_len for r in w.requests])
    assert np.median(prompts) == 1020 and prompts.max() == 14050
    s = slice_trace(w, start_s=600, duration_s=300, sample=0.25)
    window = np.array([r.prompt_len for r in w.requests if 600 <= r.arrival_s < 900])
    assert len(s.requests) == round(0.25 * len(window))
    assert abs(np.median([r.prompt_len for r in s.requests]) / np.median(window) - 1) < 0.03


# --- mixes --------------------------------------------------------------------------------------


def test_mix_shares_interleave_parts_by_weight(tmp_path):
    _csv(tmp_path / "az.csv", AZURE_SMALL)
    (tmp_path / "deploy.yaml").write_text(yaml.safe_dump({
        "mix": [{"preset": "chat", "weight": 3}, {"preset": "summarization", "weight": 1},
                {"dataset": "az.csv", "weight": 2}],
        "num_prompts": 60, "max_concurrency": 32, "seed": 7,
    }))
    [w] = parse_workload_arg(str(tmp_path / "deploy.yaml"))
    assert w.name == "deploy" and w.arrival == MaxConcurrency(32)  # a lone mix is named after its file
    shapes = [(r.prompt_len, r.output_len) for r in w.requests]
    assert shapes.count((1024, 1024)) == 30 and shapes.count((8192, 1024)) == 10
    assert sum(1 for p, _ in shapes if p in (374, 396, 879, 91)) == 20  # 4 trace rows, cycled
    assert shapes[:30].count((1024, 1024)) not in (0, 30)  # interleaved, not one part after another
    assert [p["requests"] for p in w.source["parts"]] == [30, 10, 20]
    assert Workload.from_dict(json.loads(json.dumps(w.to_dict()))) == w  # stored with the study, rebuilt exactly
    assert parse_workload_arg(str(tmp_path / "deploy.yaml")) == [w]  # stable


def test_mix_by_time_merges_clocks(tmp_path):
    _csv(tmp_path / "az.csv", AZURE_SMALL)
    (tmp_path / "m.yaml").write_text(yaml.safe_dump([{
        "name": "prod", "speedup": 2,
        "mix": [{"dataset": "az.csv"},
                {"name": "long", "num_prompts": 5, "input_len": 9000, "output_len": 100, "request_rate": 0.2}],
    }]))
    [w] = parse_workload_arg(str(tmp_path / "m.yaml"))
    assert w.name == "prod" and w.arrival == TraceTimes(2.0) and len(w.requests) == 9
    times = [r.arrival_s for r in w.requests]
    assert times == sorted(times) and {r.prompt_len for r in w.requests} >= {374, 91}


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"name": "m", "mix": [{"preset": "chat"}]}, r"part #1 \(chat, max-concurrency 80\) has no clock of its own"),
        ({"name": "m", "mix": [{"dataset": "az.csv", "weight": 2}]}, "in a mix merged by time each part keeps its own rate"),
        ({"name": "m", "max_concurrency": 4, "mix": [{"preset": "chat", "weight": 0}]}, "weight must be a finite number > 0"),
        ({"name": "m", "max_concurrency": 4, "mix": [{"preset": "chat", "weight": "x"}]}, "'weight' must be int or float"),
        ({"name": "m", "max_concurrency": 4, "mix": [{"preset": "chatt"}]}, r"part #1: unknown workload preset 'chatt'"),
        ({"name": "m", "max_concurrency": 4, "mix": []}, "'mix' lists no parts"),
        ({"name": "m", "max_concurrency": 4, "mix": [{"mix": []}]}, "cannot hold another mix"),
    ],
)
def test_bad_mixes(tmp_path, entry, message):
    _csv(tmp_path / "az.csv", AZURE_SMALL)
    (tmp_path / "m.yaml").write_text(yaml.safe_dump([entry]))
    with pytest.raises(WorkloadError, match=message):
        parse_workload_arg(str(tmp_path / "m.yaml"))


def test_a_mix_among_others_needs_a_name(tmp_path):
    (tmp_path / "m.yaml").write_text(yaml.safe_dump([{"preset": "chat"}, {"max_concurrency": 4, "mix": [{"preset": "chat"}]}]))
    with pytest.raises(WorkloadError, match="workload #2: a mix needs a 'name'"):
        parse_workload_arg(str(tmp_path / "m.yaml"))


# --- histograms ---------------------------------------------------------------------------------


def test_histogram_entry_draws_inside_the_buckets(tmp_path):
    (tmp_path / "h.yaml").write_text(yaml.safe_dump({
        "name": "prod", "num_prompts": 400, "request_rate": 2.5,
        "histograms": {"prompt_tokens": [[100, 0], [300, 1], [1000, 3], [math.inf, 0]], "output_tokens": [[100, 5]]},
    }))
    [w] = parse_workload_arg(str(tmp_path / "h.yaml"))
    prompts = np.array([r.prompt_len for r in w.requests])
    assert ((prompts > 100) & (prompts <= 1000)).all()
    assert 0.65 < ((prompts > 300).mean()) < 0.85
    assert all(1 <= r.output_len <= 100 for r in w.requests)
    assert parse_workload_arg(str(tmp_path / "h.yaml")) == [w]
    (tmp_path / "h.yaml").write_text(yaml.safe_dump({
        "name": "p", "num_prompts": 4, "request_rate": 1,
        "histograms": {"prompt_tokens": [[300, 1], [100, 3]], "output_tokens": [[100, 5]]},
    }))
    with pytest.raises(WorkloadError, match=r"prompt_tokens\[1\]: upper bounds must be > 0 and increasing"):
        parse_workload_arg(str(tmp_path / "h.yaml"))


# --- from Prometheus: a real local HTTP server answering the Prometheus API --------------------


def _vector(samples: list[tuple[dict, float]]) -> dict:
    return {"status": "success", "data": {"resultType": "vector",
                                          "result": [{"metric": m, "value": [1.0, str(v)]} for m, v in samples]}}


def _fake_prometheus_answer(query: str) -> dict:
    if query.startswith("sum by (instance)"):
        values = [[1000.0 + 15 * k, str(k)] for k in range(241)]
        return {"status": "success", "data": {"resultType": "matrix", "result": [
            {"metric": {"instance": "a:30000"}, "values": values}, {"metric": {"instance": "b:30000"}, "values": values}]}}
    if "prompt_tokens_histogram_bucket" in query:
        return _vector([({"le": "100.0"}, 0), ({"le": "300.0"}, 3600), ({"le": "1000.0"}, 7200), ({"le": "+Inf"}, 7200)])
    if "generation_tokens_histogram_bucket" in query:
        return _vector([({"le": "100.0"}, 7200), ({"le": "+Inf"}, 7200)])
    if "_sum" in query:
        return _vector([({}, 420.0)])
    if "num_requests_total" in query:
        return _vector([({}, 7200)])
    return {"status": "error", "errorType": "bad_data", "error": f"unexpected {query}"}


@pytest.fixture()
def fake_prometheus():
    seen: list[str] = []

    async def handle(request: web.Request) -> web.Response:
        query = request.query["query"]
        seen.append(f"{request.path} {query}")
        return web.json_response(_fake_prometheus_answer(query))

    loop = asyncio.new_event_loop()
    port = free_port()
    ready = threading.Event()

    async def start() -> web.AppRunner:
        application = web.Application()
        application.router.add_get("/api/v1/query", handle)
        application.router.add_get("/api/v1/query_range", handle)
        site_runner = web.AppRunner(application)
        await site_runner.setup()
        await web.TCPSite(site_runner, "127.0.0.1", port).start()
        return site_runner

    holder = {}

    def serve() -> None:
        asyncio.set_event_loop(loop)
        holder["runner"] = loop.run_until_complete(start())
        ready.set()
        loop.run_forever()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert ready.wait(10)
    yield f"http://127.0.0.1:{port}", seen
    asyncio.run_coroutine_threadsafe(holder["runner"].cleanup(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)


def test_from_prometheus_cli_writes_a_workload_the_other_commands_take(tmp_path, fake_prometheus):
    url, seen = fake_prometheus
    out = tmp_path / "prod.yaml"
    result = runner.invoke(app, ["workload", "from-prometheus", url, "--window", "1h", "--out", str(out),
                                 "--selector", 'job="sglang"'])
    assert result.exit_code == 0, result.output
    assert "7,200 requests finished in the last 1h on 2 server(s)" in result.output
    assert any(s.startswith("/api/v1/query_range sum by (instance) (sglang:num_requests_total{job=\"sglang\"})")
               for s in seen)
    assert any("sum by (le) (increase(sglang:prompt_tokens_histogram_bucket{job=\"sglang\"}[3600s]))" in s for s in seen)
    entry = yaml.safe_load(out.read_text())
    assert entry["name"] == "prod" and entry["num_prompts"] == 1000
    assert entry["request_rate"] == pytest.approx(7200 / 3600 / 2)  # per server
    assert entry["histograms"]["prompt_tokens"] == [[100, 0.0], [300, 3600.0], [1000, 3600.0]]
    [w] = parse_workload_arg(str(out))
    assert w.name == "prod" and all(100 < r.prompt_len <= 1000 for r in w.requests)
    before = out.read_text()
    result = runner.invoke(app, ["workload", "from-prometheus", url, "--out", str(out)])
    assert result.exit_code == 2 and "exists; pass --force" in result.output and out.read_text() == before


def test_from_prometheus_errors_name_the_url(tmp_path, fake_prometheus):
    url, _ = fake_prometheus
    dead = f"http://127.0.0.1:{free_port()}"
    result = runner.invoke(app, ["workload", "from-prometheus", dead, "--out", str(tmp_path / "x.yaml")])
    assert result.exit_code == 2 and f"error: cannot reach Prometheus at {dead}" in result.output
    assert not (tmp_path / "x.yaml").exists()
    with pytest.raises(WorkloadError, match="without a Prometheus API body.*without /api/v1"):
        fetch_traffic(url + "/api/v1")
    with pytest.raises(WorkloadError, match="--window must be seconds or a text like"):
        fetch_traffic(url, window="an hour")


# --- from Prometheus: a real Prometheus scraping a simulated SGLang ----------------------------


@pytest.mark.slow
@pytest.mark.usefixtures("no_leftover_servers")
def test_from_prometheus_against_a_real_prometheus(tmp_path):
    binary = prometheus_binary()
    server_port, prom_port = free_port(), free_port()
    server = prom = None
    repo = Path(__file__).resolve().parents[1]
    try:
        with open(tmp_path / "server.log", "wb") as log:
            server = subprocess.Popen(
                [sys.executable, "-m", "autotune.sim.server", "--model-path", "26B-A4B", "--gpu", "H100",
                 "--enable-metrics", "--port", str(server_port)],
                stdout=log, stderr=subprocess.STDOUT, cwd=repo, start_new_session=True, env={**os.environ, **TAG},
            )
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump({
            "global": {"scrape_interval": "1s"},
            "scrape_configs": [{"job_name": "sglang", "static_configs": [{"targets": [f"127.0.0.1:{server_port}"]}]}],
        }))
        with open(tmp_path / "prometheus.log", "wb") as log:
            prom = subprocess.Popen(
                [binary, f"--config.file={tmp_path / 'prometheus.yml'}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                 f"--web.listen-address=127.0.0.1:{prom_port}"],
                stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path, start_new_session=True,
            )
        base = f"http://127.0.0.1:{server_port}"
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, (tmp_path / "server.log").read_text()[-3000:]
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the simulated server did not come up"
            time.sleep(0.5)
        prom_url = f"http://127.0.0.1:{prom_port}"

        def prometheus_has(query: str, at_least: float) -> bool:
            assert prom.poll() is None, (tmp_path / "prometheus.log").read_text()[-3000:]
            try:
                result = httpx.get(f"{prom_url}/api/v1/query", params={"query": query}, timeout=2).json()
                return bool(result["data"]["result"]) and float(result["data"]["result"][0]["value"][1]) >= at_least
            except (httpx.HTTPError, KeyError, ValueError):
                return False

        # Requests served before Prometheus's first scrape are invisible to increase(): start after it.
        while not prometheus_has("sum(sglang:num_requests_total)", 0):
            assert time.monotonic() < deadline, (tmp_path / "prometheus.log").read_text()[-3000:]
            time.sleep(0.5)
        before = float(next(line.split()[-1] for line in httpx.get(f"{base}/metrics").text.splitlines()
                            if line.startswith("sglang:prompt_tokens_histogram_count")))
        shapes = [(200, 50)] * 10 + [(1200, 400)] * 10
        for prompt, output in shapes:
            response = httpx.post(f"{base}/generate", timeout=60, json={
                "input_ids": [7] * prompt, "sampling_params": {"max_new_tokens": output, "ignore_eos": True}})
            assert response.status_code == 200
        served = float(next(line.split()[-1] for line in httpx.get(f"{base}/metrics").text.splitlines()
                            if line.startswith("sglang:prompt_tokens_histogram_count")))
        while not prometheus_has("sum(sglang:prompt_tokens_histogram_count)", served):
            assert time.monotonic() < deadline + 30, (tmp_path / "prometheus.log").read_text()[-3000:]
            time.sleep(0.5)
        time.sleep(2)  # one more scrape past the last request
        served -= before  # the server's start-up warm-up request, if it came before the first scrape

        traffic = fetch_traffic(prom_url, window="5m", selector='job="sglang"')
        assert traffic.instances == 1
        assert served <= traffic.requests <= served * 1.6  # increase() extrapolates a little
        prompt = dict(traffic.prompt_buckets)
        assert prompt[300] >= 10 * 0.9 and prompt[1500] >= 10 * 0.9 and prompt.get(1000, 0) == 0
        assert traffic.mean_output == pytest.approx(sum(o for _, o in shapes) / len(shapes), rel=0.2)
        out = tmp_path / "prod.yaml"
        result = runner.invoke(app, ["workload", "from-prometheus", prom_url, "--window", "5m", "--out", str(out)])
        assert result.exit_code == 0, result.output
        [w] = parse_workload_arg(str(out))
        prompts = np.array([r.prompt_len for r in w.requests])
        assert (((prompts > 100) & (prompts <= 300)) | ((prompts > 1000) & (prompts <= 1500))).all()
        assert w.arrival.rate == pytest.approx(traffic.rate(), rel=0.05)
    finally:
        for proc in (prom, server):
            if proc is not None:
                stop_group(proc)


def test_workload_show_lists_a_mix(tmp_path):
    _csv(tmp_path / "az.csv", AZURE_SMALL)
    result = runner.invoke(app, ["workload", "show", f"chat,{tmp_path / 'az.csv'}", "--json"])
    assert result.exit_code == 0, result.output
    rows = {row["workload"]: row for row in json.loads(result.output)}
    assert rows["az"]["requests"] == 4 and rows["az"]["span_s"] == pytest.approx(60.0)
    assert rows["chat"]["span_s"] is None
    result = runner.invoke(app, ["workload", "show", str(tmp_path / "nope.csv")])
    assert result.exit_code == 2 and "does not exist" in result.output


"""Workload specs, generators, loaders, presets and the --workload argument."""

from __future__ import annotations

import dataclasses
import json
import math
import random
from pathlib import Path

import numpy as np
import pytest

from autotune.workloads import (
    PRESETS,
    MaxConcurrency,
    PoissonRate,
    RequestSpec,
    TraceTimes,
    Workload,
    WorkloadError,
    concurrency_limit,
    describe_arrival,
    estimate_tokens,
    get_preset,
    load_sharegpt,
    load_trace,
    parse_workload_arg,
    random_ids_workload,
    send_offsets,
)


def _write(path: Path, lines: list[object]) -> Path:
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    return path


def _conv(prompt: str, answer: str) -> dict:
    return {"conversations": [{"from": "human", "value": prompt}, {"from": "gpt", "value": answer}]}


# --- random-ids ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("num", "input_len", "output_len", "ratio", "seed"),
    [(50, 1024, 1024, 0.0, 1), (200, 8192, 1024, 0.5, 42), (7, 100, 3, 0.9, 0), (40, 1024, 1024, 1.0, 1)],
)
def test_random_lengths_equal_bench_serving_formula(num, input_len, output_len, ratio, seed):
    # sglang.benchmark.serving: np.random.seed(args.seed) at start-up, then
    # compute_random_lens(input) then compute_random_lens(output), each
    # np.random.randint(max(int(L * ratio), 1), L + 1, size=num).
    np.random.seed(seed)
    expected_in = np.random.randint(max(int(input_len * ratio), 1), input_len + 1, size=num).tolist()
    expected_out = np.random.randint(max(int(output_len * ratio), 1), output_len + 1, size=num).tolist()

    w = random_ids_workload("w", num, input_len, output_len, range_ratio=ratio, seed=seed)

    assert [r.prompt_len for r in w.requests] == expected_in
    assert [r.output_len for r in w.requests] == expected_out
    assert [r.index for r in w.requests] == list(range(num))


def test_random_lengths_bounds_and_determinism():
    w = random_ids_workload("w", 2000, 1000, 300, range_ratio=0.25, seed=7)
    prompt = np.array([r.prompt_len for r in w.requests])
    output = np.array([r.output_len for r in w.requests])
    assert prompt.min() >= 250 and prompt.max() <= 1000
    assert output.min() >= 75 and output.max() <= 300
    # uniform over the range: both ends are reached with 2000 draws and the mean is central
    assert prompt.min() < 260 and prompt.max() > 990
    assert abs(prompt.mean() - 625) < 15

    assert random_ids_workload("w", 2000, 1000, 300, range_ratio=0.25, seed=7).requests == w.requests
    assert random_ids_workload("w", 2000, 1000, 300, range_ratio=0.25, seed=8).requests != w.requests


def test_random_ratio_zero_draws_from_one_and_ratio_one_is_exact():
    low = random_ids_workload("w", 3000, 10, 10, range_ratio=0.0, seed=3)
    assert min(r.prompt_len for r in low.requests) == 1
    exact = random_ids_workload("w", 30, 1024, 512, range_ratio=1.0, seed=3)
    assert {(r.prompt_len, r.output_len) for r in exact.requests} == {(1024, 512)}


@pytest.mark.parametrize(
    "kwargs",
    [
        {"range_ratio": 1.5},
        {"range_ratio": -0.1},
        {"input_len": 0},
        {"output_len": 0},
        {"num_prompts": 0},
        {"seed": -1},
    ],
)
def test_random_rejects_bad_parameters(kwargs):
    args = {"name": "w", "num_prompts": 4, "input_len": 10, "output_len": 10} | kwargs
    with pytest.raises(WorkloadError):
        random_ids_workload(**args)


# --- Workload: ids, warm-up, description, persistence -------------------------------------------


def test_prompt_ids_are_deterministic_bounded_and_per_request():
    w = random_ids_workload("w", 5, 3000, 10, range_ratio=1.0, seed=11)
    ids = w.prompt_ids(w.requests[2], vocab_size=1000)
    assert len(ids) == 3000
    assert all(isinstance(i, int) for i in ids)
    assert min(ids) >= 100 and max(ids) < 900
    assert w.prompt_ids(w.requests[2], vocab_size=1000) == ids
    assert w.prompt_ids(w.requests[3], vocab_size=1000)[:50] != ids[:50]
    # ids depend on (seed, index) only, not on the other requests
    other = Workload("other", (w.requests[2],), MaxConcurrency(1), seed=11)
    assert other.prompt_ids(w.requests[2], vocab_size=1000) == ids
    reseeded = Workload("other", (w.requests[2],), MaxConcurrency(1), seed=12)
    assert reseeded.prompt_ids(w.requests[2], vocab_size=1000) != ids
    with pytest.raises(WorkloadError):
        w.prompt_ids(w.requests[0], vocab_size=150)


def test_warmup_requests_are_small_distinct_and_deterministic():
    w = random_ids_workload("w", 3, 8192, 1024, range_ratio=1.0, seed=1, warmup=4)
    warm = w.warmup_requests()
    assert [r.index for r in warm] == [-1, -2, -3, -4]
    assert {(r.prompt_len, r.output_len) for r in warm} == {(256, 16)}
    assert w.warmup_requests() == warm
    warm_ids = w.prompt_ids(warm[0])
    assert warm_ids != w.prompt_ids(w.requests[0])[:256]
    assert warm_ids != w.prompt_ids(warm[1])
    short = random_ids_workload("s", 2, 40, 5, range_ratio=1.0, warmup=1)
    assert short.warmup_requests() == (RequestSpec(-1, 40, 5),)
    assert random_ids_workload("z", 2, 40, 5, warmup=0).warmup_requests() == ()


def test_totals_and_describe():
    w = get_preset("chat")
    assert w.total_prompt_tokens == 200 * 1024
    assert w.total_output_tokens == 200 * 1024
    assert w.describe() == "chat: 200 x ~1024 in / ~1024 out, max-concurrency 80"
    poisson = random_ids_workload("p", 4, 10, 10, range_ratio=1.0, arrival=PoissonRate(2.5, max_concurrency=3))
    assert poisson.describe() == "p: 4 x ~10 in / ~10 out, poisson 2.5 req/s, max-concurrency 3"
    assert describe_arrival(PoissonRate(math.inf)) == "all at once"
    assert describe_arrival(TraceTimes(2.0)) == "trace timestamps x2 speed"


def test_random_workload_round_trip_stores_generator_params_only():
    w = random_ids_workload(
        "mix", 300, 2048, 256, range_ratio=0.3, seed=5, arrival=PoissonRate(math.inf, seed=2), warmup=3
    )
    data = json.loads(json.dumps(w.to_dict(), allow_nan=False))
    assert "requests" not in data
    assert data["source"] == {
        "kind": "random-ids", "num_prompts": 300, "input_len": 2048, "output_len": 256,
        "range_ratio": 0.3, "seed": 5,
    }
    assert data["arrival"]["rate"] == "inf"
    back = Workload.from_dict(data)
    assert back == w
    assert back.prompt_ids(back.requests[7]) == w.prompt_ids(w.requests[7])


def test_modified_random_workload_round_trip_stores_requests():
    w = random_ids_workload("w", 5, 100, 10, seed=1)
    edited = dataclasses.replace(w, requests=w.requests[:3])
    data = edited.to_dict()
    assert len(data["requests"]) == 3
    assert Workload.from_dict(data) == edited


def test_trace_workload_round_trip(tmp_path):
    path = _write(tmp_path / "t.jsonl", [
        {"timestamp": 1000, "input_length": 10, "output_length": 5},
        {"timestamp": 1500, "input_length": 20, "output_length": 6},
    ])
    w = load_trace(path, speedup=3.0)
    data = json.loads(json.dumps(w.to_dict(), allow_nan=False))
    assert data["requests"] == [[10, 5, 0.0], [20, 6, 0.5]]
    assert Workload.from_dict(data) == w


def test_from_dict_errors_name_the_problem():
    with pytest.raises(WorkloadError, match="'arrival'"):
        Workload.from_dict({"name": "x"})
    with pytest.raises(WorkloadError, match="cannot regenerate"):
        Workload.from_dict({"name": "x", "arrival": {"kind": "max-concurrency", "limit": 1}})
    with pytest.raises(WorkloadError, match="unknown arrival kind"):
        Workload.from_dict({"name": "x", "arrival": {"kind": "burst"}, "requests": [[1, 1]]})
    with pytest.raises(WorkloadError, match=r"requests\[1\]"):
        Workload.from_dict({"name": "x", "arrival": {"kind": "max-concurrency", "limit": 1},
                            "requests": [[1, 1], [2]]})


def test_workload_validation():
    with pytest.raises(WorkloadError):
        Workload("x", (), MaxConcurrency(1))
    with pytest.raises(WorkloadError, match="arrival_s"):
        Workload("x", (RequestSpec(0, 1, 1),), TraceTimes())
    with pytest.raises(WorkloadError):
        RequestSpec(0, 0, 1)
    with pytest.raises(WorkloadError):
        MaxConcurrency(0)
    with pytest.raises(WorkloadError):
        PoissonRate(0.0)
    with pytest.raises(WorkloadError):
        TraceTimes(0.0)


# --- arrival processes --------------------------------------------------------------------------


def test_send_offsets_per_arrival_process():
    reqs = tuple(RequestSpec(i, 1, 1, arrival_s=float(i)) for i in range(5))
    assert send_offsets(MaxConcurrency(2), reqs) == (0.0,) * 5
    assert send_offsets(PoissonRate(math.inf), reqs) == (0.0,) * 5
    assert send_offsets(TraceTimes(2.0), reqs) == (0.0, 0.5, 1.0, 1.5, 2.0)

    offsets = send_offsets(PoissonRate(4.0, seed=9), reqs)
    gaps = np.random.RandomState(9).exponential(0.25, size=4)
    assert offsets[0] == 0.0
    assert np.allclose(offsets[1:], np.cumsum(gaps))
    assert send_offsets(PoissonRate(4.0, seed=9), reqs) == offsets

    many = tuple(RequestSpec(i, 1, 1) for i in range(4001))
    mean_gap = send_offsets(PoissonRate(10.0, seed=1), many)[-1] / 4000
    assert abs(mean_gap - 0.1) < 0.01

    assert concurrency_limit(MaxConcurrency(8)) == 8
    assert concurrency_limit(PoissonRate(1.0, max_concurrency=3)) == 3
    assert concurrency_limit(TraceTimes()) is None


# --- ShareGPT -----------------------------------------------------------------------------------


def test_sharegpt_parses_all_record_forms(tmp_path):
    path = _write(tmp_path / "mixed.jsonl", [
        _conv("a" * 40, "b" * 21),                            # 10 in, ceil(21/4)=6 out
        {"conversations": [{"from": "human", "value": "only one turn"}]},  # skipped: < 2 turns
        {"prompt": "c" * 8, "output_len": 12},                # 2 in, explicit out
        {"prompt": "d" * 400, "input_len": 33, "output_len": 7},  # explicit input_len wins
        {"input_len": 1000, "output_len": 200},
        {"prompt": "e" * 12, "completion": "f" * 16},          # 3 in, 4 out
    ])
    w = load_sharegpt(path, seed=0)
    shapes = sorted((r.prompt_len, r.output_len) for r in w.requests)
    assert shapes == [(2, 12), (3, 4), (10, 6), (33, 7), (1000, 200)]
    assert w.name == "mixed"
    assert w.arrival == PoissonRate(math.inf)
    texts = {r.prompt_len: r.prompt_text for r in w.requests}
    assert texts[10] == "a" * 40 and texts[1000] is None

    fixed = load_sharegpt(path, fixed_output_len=64)
    assert {r.output_len for r in fixed.requests} == {64}
    with pytest.raises(WorkloadError, match=">= 4"):
        load_sharegpt(path, fixed_output_len=3)


def test_estimate_tokens():
    assert estimate_tokens("") == 0
    assert estimate_tokens("abc") == 1
    assert estimate_tokens("abcd") == 1
    assert estimate_tokens("abcde") == 2


def test_sharegpt_filters_and_shuffles_like_bench_serving(tmp_path):
    rows = [_conv("p" * (8 * (i + 1)), "o" * (8 * (i + 1))) for i in range(20)]  # i+1 -> 2(i+1) tokens
    rows.insert(3, _conv("x", "long answer here"))    # 1-token prompt: pruned (< 2)
    rows.insert(7, _conv("long prompt here", "y"))    # 1-token output: pruned
    path = tmp_path / "share.json"
    path.write_text(json.dumps(rows))                 # a JSON list, like ShareGPT_V3

    w = load_sharegpt(path, num_prompts=8, seed=42)

    # bench_serving: random.seed(seed); random.shuffle(the >= 2-turn rows); prune; take the first N
    pairs = [(estimate_tokens(r["conversations"][0]["value"]), estimate_tokens(r["conversations"][1]["value"]))
             for r in rows]
    random.seed(42)
    random.shuffle(pairs)
    expected = [(p, o) for p, o in pairs if p >= 2 and o >= 2][:8]
    assert [(r.prompt_len, r.output_len) for r in w.requests] == expected
    assert [r.index for r in w.requests] == list(range(8))

    capped = load_sharegpt(path, context_len=20)
    assert capped.requests and all(r.prompt_len + r.output_len <= 20 for r in capped.requests)
    assert len(load_sharegpt(path).requests) == 20


def test_sharegpt_errors_carry_line_numbers(tmp_path):
    bad_json = tmp_path / "bad.jsonl"
    bad_json.write_text(json.dumps(_conv("hello there", "general kenobi")) + "\n\n{not json}\n")
    with pytest.raises(WorkloadError, match=r"bad\.jsonl:3: invalid JSON"):
        load_sharegpt(bad_json)

    unknown = _write(tmp_path / "unknown.jsonl", [{"prompt": "hi", "output_len": 4}, {"text": "hi"}])
    with pytest.raises(WorkloadError, match=r"unknown\.jsonl:2: unrecognised record"):
        load_sharegpt(unknown)

    no_output = _write(tmp_path / "noout.jsonl", [{"prompt": "hello"}])
    with pytest.raises(WorkloadError, match=r"noout\.jsonl:1: no output length"):
        load_sharegpt(no_output)

    wrong_type = _write(tmp_path / "type.jsonl", [{"input_len": "ten", "output_len": 4}])
    with pytest.raises(WorkloadError, match="'input_len' must be an integer"):
        load_sharegpt(wrong_type)

    in_list = tmp_path / "list.json"
    in_list.write_text(json.dumps([_conv("hello there", "general kenobi"), [1, 2]]))
    with pytest.raises(WorkloadError, match=r"list\.json\[1\]: expected a JSON object"):
        load_sharegpt(in_list)

    tiny = _write(tmp_path / "tiny.jsonl", [_conv("a", "b")])
    with pytest.raises(WorkloadError, match="no usable requests"):
        load_sharegpt(tiny)

    with pytest.raises(WorkloadError, match="cannot read"):
        load_sharegpt(tmp_path / "missing.jsonl")
    with pytest.raises(WorkloadError, match="num_prompts"):
        load_sharegpt(tiny, num_prompts=0)


# --- traces -------------------------------------------------------------------------------------


def test_trace_arrivals_are_seconds_from_first_sorted(tmp_path):
    path = _write(tmp_path / "mooncake.jsonl", [
        {"timestamp": 5000, "input_length": 300, "output_length": 30, "hash_ids": [1, 2]},
        {"timestamp": 2000, "input_length": 100, "output_length": 10},
        {"timestamp": 2750, "input_length": 200, "output_length": 20},
        {"timestamp": 1, "input_length": 999, "output_length": 9},
    ])
    w = load_trace(path, num_prompts=3, speedup=2.0)
    # the first 3 records of the file, then sorted by timestamp (bench_serving's order)
    assert [(r.prompt_len, r.output_len, r.arrival_s) for r in w.requests] == [
        (100, 10, 0.0), (200, 20, 0.75), (300, 30, 3.0)
    ]
    assert [r.index for r in w.requests] == [0, 1, 2]
    assert w.arrival == TraceTimes(2.0)
    assert send_offsets(w.arrival, w.requests) == (0.0, 0.375, 1.5)
    assert load_trace(path).requests[0].prompt_len == 999


def test_trace_errors(tmp_path):
    missing = _write(tmp_path / "m.jsonl", [
        {"timestamp": 0, "input_length": 1, "output_length": 1},
        {"timestamp": 1, "input_length": 1},
    ])
    with pytest.raises(WorkloadError, match=r"m\.jsonl:2: trace record lacks \['output_length'\]"):
        load_trace(missing)
    bad = _write(tmp_path / "b.jsonl", [{"timestamp": "soon", "input_length": 1, "output_length": 1}])
    with pytest.raises(WorkloadError, match=r"b\.jsonl:1: 'timestamp' must be a number"):
        load_trace(bad)
    zero = _write(tmp_path / "z.jsonl", [{"timestamp": 0, "input_length": 0, "output_length": 1}])
    with pytest.raises(WorkloadError, match="'input_length' must be an integer >= 1"):
        load_trace(zero)


# --- presets ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "shape", "count", "limit"),
    [
        ("chat", (1024, 1024), 200, 80),
        ("summarization", (8192, 1024), 64, 32),
        ("long-context", (32768, 512), 16, 8),
        ("short-chat", (256, 256), 512, 256),
    ],
)
def test_presets(name, shape, count, limit):
    w = get_preset(name)
    assert w.name == name
    assert len(w.requests) == count
    assert {(r.prompt_len, r.output_len) for r in w.requests} == {shape}
    assert w.arrival == MaxConcurrency(limit)
    assert w.seed == 1 and w.source["range_ratio"] == PRESETS[name].range_ratio == 1.0


def test_preset_overrides_and_unknown_names():
    w = get_preset("summarization", num_prompts=40, concurrency=32, seed=3)
    assert len(w.requests) == 40 and w.arrival == MaxConcurrency(32) and w.seed == 3
    with pytest.raises(WorkloadError, match="Did you mean 'summarization'") as info:
        get_preset("sumarization")
    assert isinstance(info.value, ValueError)
    assert "chat, summarization, long-context, short-chat" in str(info.value)


# --- parse_workload_arg -------------------------------------------------------------------------


def test_parse_preset_list():
    workloads = parse_workload_arg(" chat, summarization ")
    assert [w.name for w in workloads] == ["chat", "summarization"]
    with pytest.raises(WorkloadError, match="Did you mean 'chat'"):
        parse_workload_arg("chat,caht")
    with pytest.raises(WorkloadError, match="no workload given"):
        parse_workload_arg(" , ")
    with pytest.raises(WorkloadError, match="more than once"):
        parse_workload_arg("chat,chat")


def test_parse_dataset_files_detects_kind(tmp_path):
    share = _write(tmp_path / "share.jsonl", [_conv("q" * 40, "a" * 40)] * 3)
    trace = _write(tmp_path / "trace.jsonl", [{"timestamp": 0, "input_length": 5, "output_length": 5}])
    listed = tmp_path / "v3.json"
    listed.write_text(json.dumps([_conv("q" * 40, "a" * 40)]))
    workloads = parse_workload_arg(f"{share},{trace},chat,{listed}")
    assert [w.name for w in workloads] == ["share", "trace", "chat", "v3"]
    assert workloads[0].source["kind"] == "sharegpt"
    assert isinstance(workloads[1].arrival, TraceTimes)
    assert workloads[3].source["kind"] == "sharegpt"

    with pytest.raises(WorkloadError, match="does not exist"):
        parse_workload_arg(str(tmp_path / "absent.jsonl"))
    with pytest.raises(WorkloadError, match="unsupported type"):
        parse_workload_arg(str(tmp_path / "data.parquet"))
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(WorkloadError, match="empty"):
        parse_workload_arg(str(tmp_path / "empty.jsonl"))


def test_parse_yaml_workload_file(tmp_path):
    _write(tmp_path / "t.jsonl", [{"timestamp": 0, "input_length": 5, "output_length": 5},
                                  {"timestamp": 2000, "input_length": 6, "output_length": 6}])
    _write(tmp_path / "s.jsonl", [_conv("q" * 40, "a" * 40)] * 4)
    (tmp_path / "w.yaml").write_text(
        """
workloads:
  - name: rag
    num_prompts: 10
    input_len: 4096
    output_len: 256
    range_ratio: 0.5
    max_concurrency: 16
    seed: 3
    warmup: 2
  - name: open-loop
    num_prompts: 5
    input_len: 100
    output_len: 100
    request_rate: 2.5
    max_concurrency: 4
  - preset: chat
    num_prompts: 40
    max_concurrency: 32
  - dataset: t.jsonl
    speedup: 4
  - dataset: s.jsonl
    name: share
    num_prompts: 2
    output_len: 64
    max_concurrency: 2
"""
    )
    rag, open_loop, chat, trace, share = parse_workload_arg(str(tmp_path / "w.yaml"))

    assert rag.name == "rag" and rag.warmup == 2 and rag.arrival == MaxConcurrency(16)
    assert rag.requests == random_ids_workload("rag", 10, 4096, 256, range_ratio=0.5, seed=3).requests
    assert open_loop.arrival == PoissonRate(2.5, seed=1, max_concurrency=4)
    assert open_loop.source["range_ratio"] == 0.0  # bench_serving's default
    assert chat.name == "chat" and len(chat.requests) == 40 and chat.arrival == MaxConcurrency(32)
    assert trace.arrival == TraceTimes(4.0) and trace.requests[1].arrival_s == 2.0
    assert share.name == "share" and len(share.requests) == 2
    assert {r.output_len for r in share.requests} == {64} and share.arrival == MaxConcurrency(2)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("- {name: a, num_prompts: 2, input_len: 10, output_len: 10, max_concurency: 4}",
         r"workload #1: unknown key\(s\) \['max_concurency'\]"),
        ("- {name: a, num_prompts: 2, input_len: 10, max_concurrency: 4}", r"missing key\(s\) \['output_len'\]"),
        ("- {name: a, num_prompts: two, input_len: 10, output_len: 10, max_concurrency: 4}",
         "'num_prompts' must be int"),
        ("- {name: a, num_prompts: 2, input_len: 10, output_len: 10}", "add 'max_concurrency: N'"),
        ("- {name: a, num_prompts: 2, input_len: 10, output_len: 10, range_ratio: 2, max_concurrency: 4}",
         "range_ratio must be in"),
        ("- [1, 2]", "must be a mapping"),
        ("workloads: []", "expected a list of workloads"),
        ("- {name: a\n  bad", "invalid YAML"),
        ("- {dataset: nowhere.jsonl}", "does not exist"),
        ("- {dataset: t.jsonl, max_concurrency: 3}", "timestamped trace; it takes 'speedup'"),
        ("- {preset: chatt}", "Did you mean 'chat'"),
    ],
)
def test_parse_yaml_errors_name_file_and_key(tmp_path, body, message):
    _write(tmp_path / "t.jsonl", [{"timestamp": 0, "input_length": 5, "output_length": 5}])
    path = tmp_path / "bad.yml"
    path.write_text(body + "\n")
    with pytest.raises(WorkloadError, match=message) as info:
        parse_workload_arg(str(path))
    assert "bad.yml" in str(info.value)

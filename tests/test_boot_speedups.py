"""Cheaper boots: decode CUDA graphs captured only up to the workload's concurrency (a command line
SGLang's own parser accepts), and compile caches kept per node in the trial server's environment."""

from __future__ import annotations

from pathlib import Path

import optuna
import psutil
import pytest

from autotune.hardware import load_gpu
from autotune.models import load_model
from autotune.sglang_facts import CUDA_GRAPH_MAX_BS, decode_graph_batch_sizes, graph_max_bs_for, sets_cuda_graphs
from autotune.study.controller import _trial_spec
from autotune.study.objective import Objective
from autotune.study.plan import build_plan, cuda_graph_batch
from autotune.workloads import get_preset
from workers.process import ServerProcess
from workers.spec import COMPILE_CACHES, ServerSpec

from conftest import TAG


def test_graph_batch_is_the_concurrency_rounded_up_to_a_captured_size() -> None:
    assert [graph_max_bs_for(c) for c in (1, 3, 12, 13, 48, 50, 257, 512)] == [1, 4, 12, 16, 48, 56, 272, 512]
    assert graph_max_bs_for(None) is None and graph_max_bs_for(600) is None  # SGLang's default is smaller
    assert set(decode_graph_batch_sizes()) >= {1, 2, 4, 8, 12, 16, 24, 256, 272, 496, 512}


def test_the_users_graph_flags_win_and_bad_values_are_refused() -> None:
    chat = get_preset("chat", num_prompts=96, concurrency=48)
    assert cuda_graph_batch(chat, ()) == 48
    assert cuda_graph_batch(get_preset("chat", num_prompts=10, concurrency=48), ()) == 12  # never more than all requests
    assert sets_cuda_graphs(("--cuda-graph-max-bs-decode", "64")) and sets_cuda_graphs(("--disable-cuda-graph",))
    assert sets_cuda_graphs(("--cuda-graph-bs=1",)) and not sets_cuda_graphs(("--attention-backend", "triton"))
    assert cuda_graph_batch(chat, ("--cuda-graph-max-bs-decode", "64")) is None
    assert cuda_graph_batch(chat, (), "sglang") is None and cuda_graph_batch(chat, (), 96) == 96
    with pytest.raises(ValueError, match="give one of them"):
        cuda_graph_batch(chat, ("--disable-cuda-graph",), 64)
    with pytest.raises(ValueError, match="batch size >= 1"):
        cuda_graph_batch(chat, (), 0)


def plan_for(backend: str, **kwargs):
    return build_plan(model=load_model("26B-A4B"), model_ref="26B-A4B", gpu=load_gpu("H200-141GB"),
                      workload=get_preset("chat", num_prompts=96, concurrency=48), backend=backend,
                      objective=Objective("throughput"), n_trials=4, **kwargs)


def test_only_real_sglang_gets_the_graph_flag_and_its_parser_accepts_the_line() -> None:
    server_args = pytest.importorskip("sglang.srt.server_args")
    plan = plan_for("sglang", extra_args=("--attention-backend", "triton"))
    assert plan.server_flags[CUDA_GRAPH_MAX_BS] == 48
    assert CUDA_GRAPH_MAX_BS not in plan_for("sim").server_flags
    assert CUDA_GRAPH_MAX_BS not in plan_for("sglang", extra_args=("--disable-cuda-graph",)).server_flags
    study = optuna.create_study(directions=plan.objective.directions)
    trial = study.ask(plan.space.distributions(plan.feasible_low()))
    spec = _trial_spec(plan, trial, {"swa_full_tokens_ratio": 0.5})
    argv = spec.server.argv(31234)
    assert argv[1:3] == ["-m", "sglang.launch_server"]
    args = server_args.prepare_server_args(argv[3:])
    assert args.cuda_graph_max_bs_decode == 48 and args.swa_full_tokens_ratio == 0.5
    # 0.5.23 refuses the old spelling: the reason the tuner writes -decode.
    with pytest.raises(SystemExit):
        server_args.prepare_server_args([*argv[3:], "--cuda-graph-max-bs", "48"])


def test_trial_servers_get_per_node_compile_caches_unless_already_set(tmp_path: Path, monkeypatch) -> None:
    spec = _trial_spec(plan_for("sim"), optuna.create_study().ask(), {"swa_full_tokens_ratio": 0.5}).server
    assert spec.env_defaults == COMPILE_CACHES
    env = spec.environment({"HOME": str(tmp_path), "TRITON_CACHE_DIR": "/kept"})
    assert env["TRITON_CACHE_DIR"] == "/kept"
    assert env["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / ".cache/swa-autotune/inductor")
    # The spawned server's own environment carries them (read from /proc, as conftest.sim_servers does).
    monkeypatch.setenv("HOME", str(tmp_path))
    for key in COMPILE_CACHES:
        monkeypatch.delenv(key, raising=False)
    spec = ServerSpec(backend="sim", model_path="26B-A4B", flags={"swa-full-tokens-ratio": 0.5},
                      sim_flags={"gpu": "H100", "time-scale": 20}, env=TAG, env_defaults=COMPILE_CACHES)
    with ServerProcess(spec, tmp_path / "server.log", boot_timeout_s=60) as server:
        server.wait_ready()
        environ = psutil.Process(server.pid).environ()
    for key, value in COMPILE_CACHES.items():
        path = tmp_path / value.removeprefix("~/")
        assert environ[key] == str(path) and path.is_dir()

"""Contract: the command lines the workers build for real SGLang parse with SGLang's own parser.

Uses the real `sglang` package (0.5.23, installed without its GPU dependencies by
scripts/install-sglang-parser.sh; docs/reference/sglang.md §8) — no stand-in.
"""

from __future__ import annotations

import os

import pytest

from workers.spec import ServerSpec

try:
    from sglang.srt import server_args
except ImportError:
    if os.environ.get("CI"):  # CI installs it (make test): a missing parser there is a failure
        raise
    pytest.skip("SGLang's parser is not installed: run scripts/install-sglang-parser.sh", allow_module_level=True)


def parse(spec: ServerSpec, port: int = 31234):
    argv = spec.argv(port)
    assert argv[1:3] == ["-m", "sglang.launch_server"]
    return server_args.prepare_server_args(argv[3:])


def test_tuner_flags_parse_with_sglangs_parser() -> None:
    spec = ServerSpec(
        backend="sglang",
        model_path="/models/gemma-4-26B-A4B-it",
        flags={
            "swa-full-tokens-ratio": 0.15,
            "mem-fraction-static": 0.85,
            "page-size": 64,
            "chunked-prefill-size": 4096,
            "max-running-requests": 128,
            "max-total-tokens": 400000,
            "load-format": "dummy",
            "skip-tokenizer-init": True,
            "attention-backend": "triton",
            "sampling-backend": "pytorch",
            "disable-hybrid-swa-memory": False,  # False flags are left out, as SGLang's --config does
        },
        extra_args=("--tp-size", "1", "--decode-log-interval", "40"),
    )
    args = parse(spec)
    assert args.swa_full_tokens_ratio == 0.15
    assert args.mem_fraction_static == 0.85
    assert args.page_size == 64
    assert args.chunked_prefill_size == 4096
    assert args.max_running_requests == 128
    assert args.max_total_tokens == 400000
    assert args.enable_metrics is True  # always on: the scraper needs it
    assert args.port == 31234 and args.host == "127.0.0.1"
    assert args.load_format == "dummy" and args.skip_tokenizer_init is True
    assert args.disable_hybrid_swa_memory is False
    assert args.decode_log_interval == 40


def test_passthrough_args_come_last_so_they_win() -> None:
    spec = ServerSpec(backend="sglang", model_path="m", flags={"swa-full-tokens-ratio": 0.3},
                      extra_args=("--swa-full-tokens-ratio", "0.6"))
    assert parse(spec).swa_full_tokens_ratio == 0.6


def test_sim_only_flags_never_reach_sglang() -> None:
    with pytest.raises(ValueError, match="simulator-only"):
        ServerSpec(backend="sglang", model_path="m", flags={"kv-budget-gb": 90})
    with pytest.raises(ValueError, match="sim_flags are for the simulated server"):
        ServerSpec(backend="sglang", model_path="m", sim_flags={"gpu": "H100"})


def test_underscore_names_are_refused_before_sglang_would() -> None:
    with pytest.raises(ValueError, match="hyphenated"):
        ServerSpec(backend="sglang", model_path="m", flags={"swa_full_tokens_ratio": 0.2}).argv(1)


def test_same_flags_boot_the_simulator_and_sglang() -> None:
    """The two backends differ only in the module: the rest of the command line is identical."""
    flags = {"swa-full-tokens-ratio": 0.4, "page-size": 1, "mem-fraction-static": 0.85}
    real = ServerSpec(backend="sglang", model_path="26B-A4B", flags=flags).argv(5000)
    sim = ServerSpec(backend="sim", model_path="26B-A4B", flags=flags).argv(5000)
    assert real[3:] == sim[3:]
    assert real[2] == "sglang.launch_server" and sim[2] == "autotune.sim.server"


def test_exported_config_reaches_sglang_and_the_command_line_wins(tmp_path) -> None:
    """The exported defaults file is SGLang's own --config: the tuned ratio arrives, and a ratio on
    the command line overrides it (command line > config file > defaults)."""
    from autotune.export import config_flags, config_text

    path = tmp_path / "gemma-4-26B-A4B-it__chat.yaml"
    path.write_text(config_text(config_flags({"swa_full_tokens_ratio": 0.23, "chunked_prefill_size": 4096}),
                                {"simulated": True, "study": "s"}))
    from_file = server_args.prepare_server_args(["--model-path", "m", "--config", str(path)])
    assert from_file.swa_full_tokens_ratio == 0.23 and from_file.chunked_prefill_size == 4096
    overridden = server_args.prepare_server_args(
        ["--model-path", "m", "--config", str(path), "--swa-full-tokens-ratio", "0.5"]
    )
    assert overridden.swa_full_tokens_ratio == 0.5


def test_launch_command_line_parses(tmp_path) -> None:
    from autotune.launch import plan_launch
    from autotune.rules import Resolution

    resolution = Resolution(0.31, "optimum", "tuned", False, {})
    plan = plan_launch(resolution, "/models/gemma", "chat", ["--port", "30001"], tmp_path, "gemma-4-26B-A4B-it")
    assert plan.argv[1:3] == ["-m", "sglang.launch_server"]
    args = server_args.prepare_server_args(plan.argv[3:])
    assert args.swa_full_tokens_ratio == 0.31 and args.port == 30001 and args.model_path == "/models/gemma"


def test_the_real_gpu_studys_command_line_parses(tmp_path) -> None:
    """What deploy/gpu-kit/validate.sh runs: --dummy-weights, a pinned mem fraction, Triton attention,
    decode CUDA graphs on and prefill graphs off, from the plan the CLI builds."""
    import optuna

    from autotune.hardware import load_gpu
    from autotune.models import load_model
    from autotune.models.dummy import dummy_spec, write_dummy_model
    from autotune.study.controller import _trial_spec, with_slo
    from autotune.study.plan import build_plan
    from autotune.workloads import parse_workload_arg

    catalog = load_model("26B-A4B")
    dummy = write_dummy_model(catalog, tmp_path)
    plan = build_plan(
        model=dummy_spec(catalog, dummy), model_ref=str(dummy.path), gpu=load_gpu("H200"),
        workload=parse_workload_arg("docs/real-gpu/long-8k.yaml")[0], backend="sglang",
        objective=with_slo("throughput", None), n_trials=5, mem_fraction_static=0.48, dummy_weights=True,
        extra_args=("--attention-backend", "triton", "--sampling-backend", "pytorch", "--disable-prefill-cuda-graph"),
    )
    study = optuna.create_study()
    trial = study.ask({"swa_full_tokens_ratio": optuna.distributions.FloatDistribution(0.1, 1.0)})
    args = parse(_trial_spec(plan, trial, {"swa_full_tokens_ratio": 0.25}).server)
    assert args.model_path == str(dummy.path)
    assert (args.load_format, args.skip_tokenizer_init) == ("dummy", True)
    assert args.swa_full_tokens_ratio == 0.25 and args.mem_fraction_static == 0.48
    assert args.attention_backend == "triton" and args.sampling_backend == "pytorch"
    assert args.disable_prefill_cuda_graph is True and not args.disable_cuda_graph  # decode graphs stay on
    assert plan.server_version.endswith("+dummy-weights")

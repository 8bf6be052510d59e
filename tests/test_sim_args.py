"""The simulated server's command line: SGLang's flags, `--config` merging, and how bad input exits.

The facts checked come from docs/reference/sglang.md §1 (flag range, config-file rules: hyphenated keys, command
line > config file > defaults, underscore keys rejected as unrecognized) and §3 (start-up refusal),
and SGLang 0.5.23's srt/utils/server_args_config_parser.py.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from autotune.hardware import load_gpu
from autotune.sim.args import ConfigFileError, FlagConflict, load_model_for, parse_args, server_config

SERVER = [sys.executable, "-m", "autotune.sim.server"]


def run_server(*flags: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Flags that must fail: the process exits on its own, before binding a port."""
    return subprocess.run([*SERVER, *flags], capture_output=True, text=True, timeout=timeout)


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


# -- parsing, in process ----------------------------------------------------------------------------


def test_defaults_follow_sglang() -> None:
    args = parse_args(["--model-path", "26B-A4B"])
    assert (args.host, args.port) == ("127.0.0.1", 30000)
    assert args.swa_full_tokens_ratio is None  # unset; SGLang's effective value is 0.8
    assert args.max_prefill_tokens == 16384 and args.decode_log_interval == 40
    assert args.tp_size == 1 and args.time_scale == 1.0 and args.gpu == "H100-80GB"
    config = server_config(args, load_model_for(args), load_gpu(args.gpu))
    assert config.ratio == 0.8 and config.page_size == 1


def test_real_launch_flags_are_accepted() -> None:
    """The flags of the docs/reference/real-sglang.md launch line parse (and those with no simulated effect are kept)."""
    args = parse_args(
        [
            "--model-path", "26B-A4B", "--load-format", "dummy", "--skip-tokenizer-init",
            "--attention-backend", "triton", "--sampling-backend", "pytorch", "--enable-metrics",
            "--host", "127.0.0.1", "--port", "30001", "--swa-full-tokens-ratio", "0.15",
            "--mem-fraction-static", "0.85", "--disable-prefill-cuda-graph", "--disable-cuda-graph",
            "--trust-remote-code", "--log-level", "info", "--served-model-name", "gemma",
            "--random-seed", "1", "--dtype", "bfloat16", "--tp", "2", "--context-length", "8192",
            "--kv-cache-dtype", "fp8_e4m3", "--disable-radix-cache",
        ]
    )  # fmt: skip
    assert args.swa_full_tokens_ratio == 0.15 and args.mem_fraction_static == 0.85 and args.tp_size == 2
    assert args.ignored["load_format"] == "dummy" and args.served_model_name == "gemma"
    assert load_model_for(args).context_len == 8192


def test_config_file_precedence(tmp_path: Path) -> None:
    """docs/reference/sglang.md §1/§8: file 0.23 -> 0.23; file 0.23 + command line 0.5 -> 0.5."""
    config = write(tmp_path, "defaults.yaml", "swa-full-tokens-ratio: 0.23\nenable-metrics: true\npage-size: 64\n")
    args = parse_args(["--model-path", "26B-A4B", "--config", config])
    assert args.swa_full_tokens_ratio == 0.23 and args.enable_metrics and args.page_size == 64
    assert args.config == config
    args = parse_args(["--model-path", "26B-A4B", "--config", config, "--swa-full-tokens-ratio", "0.5"])
    assert args.swa_full_tokens_ratio == 0.5
    args = parse_args(["--swa-full-tokens-ratio", "0.5", "--config", config, "--model-path", "26B-A4B"])
    assert args.swa_full_tokens_ratio == 0.5  # the command line wins wherever --config sits


def test_config_false_switch_is_left_out(tmp_path: Path) -> None:
    config = write(tmp_path, "c.yml", "enable-metrics: false\nmodel-path: 26B-A4B\n")
    args = parse_args(["--config", config])
    assert not args.enable_metrics and args.model_path == "26B-A4B"


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("c.json", '{"swa-full-tokens-ratio": 0.2}', "Config file must be YAML format, got: .json"),
        ("c.yaml", "- 1\n- 2\n", "Config file must contain a dictionary at root level"),
    ],
)
def test_config_file_errors(tmp_path: Path, name: str, text: str, message: str) -> None:
    with pytest.raises(ConfigFileError, match=message):
        parse_args(["--model-path", "26B-A4B", "--config", write(tmp_path, name, text)])


def test_only_one_config_file(tmp_path: Path) -> None:
    config = write(tmp_path, "c.yaml", "page-size: 1\n")
    with pytest.raises(ConfigFileError, match="Only one allowed"):
        parse_args(["--model-path", "26B-A4B", "--config", config, "--config", config])


def test_radix_off_with_request_cap_is_refused_for_hybrid_models() -> None:
    """docs/reference/sglang.md §1: SGLang would ignore the ratio and size the SWA pool from the request cap."""
    args = parse_args(["--model-path", "26B-A4B", "--disable-radix-cache", "--max-running-requests", "64"])
    with pytest.raises(FlagConflict, match="ignore --swa-full-tokens-ratio"):
        server_config(args, load_model_for(args), load_gpu(args.gpu))


# -- exits, in a real process -----------------------------------------------------------------------


def test_unknown_flag_exits_2() -> None:
    result = run_server("--model-path", "26B-A4B", "--foo")
    assert result.returncode == 2
    assert "error: unrecognized arguments: --foo" in result.stderr


def test_abbreviated_flag_is_unrecognized() -> None:
    result = run_server("--model-path", "26B-A4B", "--swa-full", "0.5")
    assert result.returncode == 2 and "unrecognized arguments" in result.stderr


@pytest.mark.parametrize("ratio", ["1.5", "0", "-0.1"])
def test_ratio_outside_0_1_exits_2(ratio: str) -> None:
    result = run_server("--model-path", "26B-A4B", "--swa-full-tokens-ratio", ratio)
    assert result.returncode == 2
    assert "--swa-full-tokens-ratio should be in range (0, 1.0]" in result.stderr


def test_underscore_config_key_is_unrecognized(tmp_path: Path) -> None:
    """docs/reference/sglang.md §8: `swa_full_tokens_ratio:` -> `unrecognized arguments: --swa_full_tokens_ratio 0.23`."""
    config = write(tmp_path, "c.yaml", "swa_full_tokens_ratio: 0.23\n")
    result = run_server("--model-path", "26B-A4B", "--config", config)
    assert result.returncode == 2
    assert "unrecognized arguments: --swa_full_tokens_ratio 0.23" in result.stderr


def test_non_yaml_config_exits_1_with_sglangs_value_error(tmp_path: Path) -> None:
    config = write(tmp_path, "c.json", "{}")
    result = run_server("--model-path", "26B-A4B", "--config", config)
    assert result.returncode == 1
    assert "ValueError: Config file must be YAML format, got: .json" in result.stderr


def test_infeasible_ratio_is_refused_before_binding() -> None:
    """docs/reference/sglang.md §3 / docs/reference/real-sglang.md: 26B-A4B at 0.001 with mem_fraction_static 0.85 cannot boot."""
    result = run_server(
        "--model-path", "26B-A4B", "--gpu", "H100", "--mem-fraction-static", "0.85",
        "--swa-full-tokens-ratio", "0.001",
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 1
    assert "ValueError: SWA pool (" in output and "cannot hold even one request" in output
    assert "Increase --swa-full-tokens-ratio or the total KV budget." in output
    assert "Uvicorn running" not in output and "ready to roll" not in output


def test_unknown_gpu_exits_2() -> None:
    result = run_server("--model-path", "26B-A4B", "--gpu", "H1000")
    assert result.returncode == 2 and "unknown GPU" in result.stderr


def test_unknown_model_exits_1() -> None:
    result = run_server("--model-path", "no-such-model-xyz")
    assert result.returncode == 1 and "unknown model" in result.stderr

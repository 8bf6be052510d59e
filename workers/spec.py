"""What a worker is asked to boot: one server command line, real or simulated.

A `ServerSpec` is the one record the study sends to a worker. The real server and the simulated
one differ only in the module the command runs: the flags are SGLang's in both cases.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Mapping

from autotune.sglang_facts import ENABLE_METRICS, LAUNCH_MODULE, SIMULATOR_ONLY_FLAGS, flag_args

Backend = Literal["sglang", "sim"]

SERVER_MODULES: dict[str, str] = {
    "sglang": LAUNCH_MODULE,
    "sim": "autotune.sim.server",
}


# Compile caches a trial server keeps on its node across trials and tuner runs, so only the first
# boot on a node compiles Triton kernels (176 s cold against 47-67 s warm on an H200:
# docs/real-gpu/README.md). `~` is the home of the node that runs the server; a variable already
# set there (deploy/gpu-kit/validate.sh sets TRITON_CACHE_DIR) wins.
COMPILE_CACHES: dict[str, str] = {
    "TRITON_CACHE_DIR": "~/.cache/swa-autotune/triton",
    "TORCHINDUCTOR_CACHE_DIR": "~/.cache/swa-autotune/inductor",
}


@dataclass(frozen=True)
class ServerSpec:
    backend: Backend
    model_path: str
    flags: Mapping[str, object] = field(default_factory=dict)  # SGLang flags, hyphenated long names
    sim_flags: Mapping[str, object] = field(default_factory=dict)  # simulator-only: gpu, kv-budget-gb, ...
    extra_args: tuple[str, ...] = ()  # passed through verbatim (`autotune run -- <sglang args>`)
    host: str = "127.0.0.1"
    port: int | None = None  # None: the worker picks a free port
    env: Mapping[str, str] = field(default_factory=dict)
    env_defaults: Mapping[str, str] = field(default_factory=dict)  # set where the node's environment does not
    python: str = sys.executable

    def __post_init__(self) -> None:
        if self.backend not in SERVER_MODULES:
            raise ValueError(f"unknown backend {self.backend!r}; use one of {sorted(SERVER_MODULES)}")
        clash = SIMULATOR_ONLY_FLAGS & set(self.flags)
        if clash:
            raise ValueError(f"{sorted(clash)} are simulator-only flags: put them in sim_flags")
        if self.backend == "sglang" and self.sim_flags:
            raise ValueError("sim_flags are for the simulated server; real SGLang does not accept them")

    @property
    def simulated(self) -> bool:
        return self.backend == "sim"

    def argv(self, port: int) -> list[str]:
        """The exact command line, `--enable-metrics` always on (the scraper needs it)."""
        flags = dict(self.flags)
        flags.pop(ENABLE_METRICS, None)
        argv = [
            self.python, "-m", SERVER_MODULES[self.backend],
            "--model-path", self.model_path,
            "--host", self.host,
            "--port", str(port),
            f"--{ENABLE_METRICS}",
            *flag_args(flags),
        ]
        if self.simulated:
            argv += flag_args(dict(self.sim_flags))
        return argv + list(self.extra_args)

    def environment(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """The server's environment on this node: `base` (this process's), `env_defaults` where `base`
        lacks them (`~/` is `base`'s HOME; their directories are created), then `env`."""
        base = dict(os.environ if base is None else base)
        home = base.get("HOME") or os.path.expanduser("~")
        defaults = {key: home + value[1:] if value.startswith("~/") else value
                    for key, value in self.env_defaults.items() if key not in base}
        for path in defaults.values():
            Path(path).mkdir(parents=True, exist_ok=True)
        return {**base, **defaults, **self.env, "PYTHONUNBUFFERED": "1"}

    def to_dict(self) -> dict[str, object]:
        return {
            "backend": self.backend,
            "model_path": self.model_path,
            "flags": dict(self.flags),
            "sim_flags": dict(self.sim_flags),
            "extra_args": list(self.extra_args),
            "host": self.host,
        }

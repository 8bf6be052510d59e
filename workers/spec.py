"""What a worker is asked to boot: one server command line, real or simulated.

A `ServerSpec` is the one record the study sends to a worker. The real server and the simulated
one differ only in the module the command runs: the flags are SGLang's in both cases.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Literal, Mapping

from autotune.sglang_facts import ENABLE_METRICS, LAUNCH_MODULE, SIMULATOR_ONLY_FLAGS, flag_args

Backend = Literal["sglang", "sim"]

SERVER_MODULES: dict[str, str] = {
    "sglang": LAUNCH_MODULE,
    "sim": "autotune.sim.server",
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

    def to_dict(self) -> dict[str, object]:
        return {
            "backend": self.backend,
            "model_path": self.model_path,
            "flags": dict(self.flags),
            "sim_flags": dict(self.sim_flags),
            "extra_args": list(self.extra_args),
            "host": self.host,
        }

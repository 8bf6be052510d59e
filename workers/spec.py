"""What a worker is asked to boot: one server command line, real or simulated.

A `ServerSpec` is the one record the study sends to a worker. The real server and the simulated
one differ only in the module the command runs: the flags are SGLang's in both cases.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Literal, Mapping

Backend = Literal["sglang", "sim"]

SERVER_MODULES: dict[str, str] = {
    "sglang": "sglang.launch_server",
    "sim": "autotune.sim.server",
}

# Flags only the simulated server understands; never passed to real SGLang.
SIM_ONLY_FLAGS = frozenset({"gpu", "kv-budget-gb", "speculative-accept-length", "time-scale", "boot-delay", "sglang-version"})


def flag_args(flags: Mapping[str, object]) -> list[str]:
    """SGLang's command-line form of a flag mapping: `--name value`, `--name` for True, lists spread.

    The same rules as SGLang's `--config` file (reference §1), so a flag set and an exported config
    mean the same thing. Keys are the long names without dashes: `swa-full-tokens-ratio`.
    """
    args: list[str] = []
    for name, value in flags.items():
        if "_" in name:
            raise ValueError(f"flag {name!r}: use SGLang's hyphenated name ({name.replace('_', '-')!r})")
        if value is None or value is False:
            continue
        if value is True:
            args.append(f"--{name}")
        elif isinstance(value, (list, tuple)):
            args.extend([f"--{name}", *map(str, value)])
        else:
            args.extend([f"--{name}", str(value)])
    return args


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
        clash = SIM_ONLY_FLAGS & set(self.flags)
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
        flags.pop("enable-metrics", None)
        argv = [
            self.python, "-m", SERVER_MODULES[self.backend],
            "--model-path", self.model_path,
            "--host", self.host,
            "--port", str(port),
            "--enable-metrics",
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

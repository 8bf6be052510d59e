"""Which server a study's trials run on (`sglang`, `sim`, `sim-fast`), and the version its numbers carry."""

from __future__ import annotations

import importlib.metadata
import importlib.util
from dataclasses import dataclass
from typing import Any, Mapping

from autotune.hardware import detect_gpus

BACKENDS = ("auto", "sglang", "sim", "sim-fast")


def project_version() -> str:
    try:
        return importlib.metadata.version("swa-autotune")
    except importlib.metadata.PackageNotFoundError:
        return "dev"


@dataclass(frozen=True)
class BackendChoice:
    backend: str
    reason: str


def choose_backend(requested: str) -> BackendChoice:
    if requested not in BACKENDS:
        raise ValueError(f"unknown backend {requested!r}; use one of {', '.join(BACKENDS)}")
    has_sglang = importlib.util.find_spec("sglang") is not None
    gpus = detect_gpus()
    if requested == "sglang" and not gpus:
        raise ValueError("--backend sglang needs NVIDIA GPUs (nvidia-smi found none); use --backend sim on this machine")
    if requested != "auto":
        return BackendChoice(requested, f"backend {requested} (as asked)")
    if has_sglang and gpus:
        return BackendChoice("sglang", f"backend sglang: SGLang is installed and {len(gpus)} GPU(s) found ({gpus[0]})")
    missing = "no GPU found" if not gpus else "SGLang is not installed"
    return BackendChoice("sim", f"backend sim: {missing}, so trials run on the simulated SGLang (results are labelled simulated)")


def sglang_release(server_version: str, sim_flags: Mapping[str, Any] | None = None) -> str:
    """The SGLang release whose rules a study's server follows: the installed one for `sglang`
    (`sglang-0.5.17+dummy-weights` -> 0.5.17), the emulated one for the simulator (its
    `--sglang-version`, else the simulator's default). The capacity model picks its footprint by it."""
    from autotune.pools.footprint import parse_version
    from autotune.sim.own_flags import EMULATED_SGLANG_VERSION

    if server_version.startswith("sglang-"):
        try:
            return ".".join(map(str, parse_version(server_version)))
        except ValueError:
            return EMULATED_SGLANG_VERSION  # sglang-unknown: the newest rules studied
    return str((sim_flags or {}).get("sglang-version") or EMULATED_SGLANG_VERSION)


def server_version(backend: str, dummy_weights: bool = False) -> str:
    """The server a study's numbers come from. Dummy weights get studies of their own: pools are
    the same, but throughput is not (random MoE routing)."""
    suffix = "+dummy-weights" if dummy_weights else ""
    if backend == "sglang":
        try:
            return f"sglang-{importlib.metadata.version('sglang')}{suffix}"
        except importlib.metadata.PackageNotFoundError:
            return f"sglang-unknown{suffix}"
    return f"{backend}-{project_version()}{suffix}"

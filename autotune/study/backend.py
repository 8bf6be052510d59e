"""Which server a study's trials run on (`sglang`, `sim`, `sim-fast`), and the version its numbers carry."""

from __future__ import annotations

import importlib.metadata
import importlib.util
from dataclasses import dataclass

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

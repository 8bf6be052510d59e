"""The GPUs of this machine, and the built-in profile of a GPU as nvidia-smi names it."""

from __future__ import annotations

import shutil
import subprocess

from autotune.hardware.profile import GPUProfile, builtin_profiles


def detect_gpus() -> list[str]:
    """GPU names from nvidia-smi (empty without NVIDIA GPUs or driver)."""
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True, timeout=20
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line.strip() for line in out.stdout.splitlines() if line.strip()] if out.returncode == 0 else []


def profile_for(gpu_name: str) -> GPUProfile:
    """The built-in profile of a GPU nvidia-smi names ("NVIDIA H100 80GB HBM3" -> H100-80GB)."""
    for profile in builtin_profiles().values():
        if gpu_name in profile.aliases or profile.name.split("-")[0] in gpu_name:
            return profile
    raise ValueError(f"no GPU profile matches {gpu_name!r}: pass --gpu with a profile YAML for it")

"""GPU profiles (memory, rates, overheads)."""

from autotune.hardware.profile import GIB, MIB, GPUProfile, UnknownGPU, builtin_profiles, load_gpu

__all__ = ["GIB", "MIB", "GPUProfile", "UnknownGPU", "builtin_profiles", "load_gpu"]

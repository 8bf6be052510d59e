"""GPU profiles (memory, rates, overheads), and the GPUs of this machine."""

from autotune.hardware.detect import detect_gpus, profile_for
from autotune.hardware.profile import GIB, MIB, GPUProfile, UnknownGPU, builtin_profiles, load_gpu

__all__ = ["GIB", "MIB", "GPUProfile", "UnknownGPU", "builtin_profiles", "detect_gpus", "load_gpu", "profile_for"]

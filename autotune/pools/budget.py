"""The KV budget B: bytes left for the KV pools after weights and runtime slack.

SGLang (mem_cache/kv_cache_configurator.py::_profile_available_bytes) measures free GPU memory
after loading the weights and subtracts `pre_model_load_memory x (1 - mem_fraction_static)`:

    B = (pre - weights) - pre x (1 - mfs) - mm_reservation        (GiB, then x 2^30 bytes)

where `pre` is the free memory before the weights load (total minus the CUDA context). The
default `mem_fraction_static` follows arg_groups/memory_hook.py. SGLang's "GB" are GiB.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from autotune.hardware.profile import GIB, GPUProfile
from autotune.models.spec import ModelSpec

DECIMAL_GB = 10**9
# SGLANG_VLM_CACHE_SIZE_MB: reserved out of the KV budget for multimodal models.
VLM_CACHE_RESERVATION_MB = 100


def default_chunked_prefill_size(gpu_memory_mib: float) -> int:
    """arg_groups/memory_hook.py: GPU-memory dependent default."""
    if gpu_memory_mib < 20 * 1024:
        return 2048
    if gpu_memory_mib < 60 * 1024:
        return 4096
    if gpu_memory_mib < 160 * 1024:
        return 8192
    return 16384


def default_cuda_graph_max_bs(gpu_memory_mib: float, tp: int = 1) -> int:
    if gpu_memory_mib < 20 * 1024:
        return 8
    if gpu_memory_mib < 35 * 1024:
        return 48 if tp < 4 else 160
    if gpu_memory_mib < 60 * 1024:
        return 32 if tp < 4 else 160
    if gpu_memory_mib < 160 * 1024:
        return 256 if tp < 4 else 512
    return 512


def default_mem_fraction_static(
    gpu_memory_mib: float,
    *,
    chunked_prefill_size: int | None = None,
    tp: int = 1,
    pp: int = 1,
    cuda_graph_max_bs: int | None = None,
    decode_cuda_graph: bool = True,
    prefill_cuda_graph_batches: int = 0,
    vision_layers: int | None = None,
    vision_hidden: int | None = None,
) -> float:
    """SGLang's default: round((gpu_mem - reserved) / gpu_mem, 3), reserved in MiB.

    reserved = 512 + max(chunked_prefill_size, 2048) x 1.5 + tp x pp / 8 x 1024 + graph reserve,
    at least 10 GiB on GPUs above 60 GB; multimodal models then scale it by the ViT factor.
    """
    chunk = chunked_prefill_size or default_chunked_prefill_size(gpu_memory_mib)
    max_bs = cuda_graph_max_bs or default_cuda_graph_max_bs(gpu_memory_mib, tp)
    graph = (max_bs * 2 if decode_cuda_graph else 0) + prefill_cuda_graph_batches * 8
    reserved = 512 + max(chunk, 2048) * 1.5 + tp * pp / 8 * 1024 + graph
    if gpu_memory_mib > 60 * 1024:
        reserved = max(reserved, 10 * 1024)
    fraction = round((gpu_memory_mib - reserved) / gpu_memory_mib, 3)
    if vision_layers:
        # adjust_mem_fraction_for_vlm: 0.95 x a factor on ViT size relative to ViT-L/14
        complexity = vision_layers * (vision_hidden or 1024) ** 2 / (24 * 1024**2)
        factor = max(0.8, min(1.05, 1.0 - 0.1 * (complexity - 1.0)))
        fraction = fraction * 0.95 * factor
    return fraction


class InsufficientMemory(ValueError):
    pass


@dataclass(frozen=True)
class KVBudget:
    bytes: int
    source: str
    mem_fraction_static: float | None = None
    weights_gib: float | None = None
    pre_load_gib: float | None = None

    @property
    def gib(self) -> float:
        """In SGLang's 'GB' (GiB), as its log and /server_info report kvcache."""
        return self.bytes / GIB

    @property
    def decimal_gb(self) -> float:
        return self.bytes / DECIMAL_GB


def pinned_budget(gb: float) -> KVBudget:
    """A budget given in decimal GB (10^9 bytes), e.g. to reproduce a logged layout."""
    if not (gb > 0 and math.isfinite(gb)):
        raise ValueError(f"--kv-budget-gb must be a positive number of decimal GB (10^9 bytes), got {gb}")
    return KVBudget(bytes=int(round(gb * DECIMAL_GB)), source=f"pinned: --kv-budget-gb {gb:g} (decimal GB)")


def is_multimodal(model: ModelSpec) -> bool:
    return "ConditionalGeneration" in model.architecture and model.params.towers > 0


def estimate_budget(
    model: ModelSpec,
    gpu: GPUProfile,
    *,
    tp: int = 1,
    mem_fraction_static: float | None = None,
    chunked_prefill_size: int | None = None,
    weight_bytes: float | None = None,
) -> KVBudget:
    """B for one TP rank from the GPU's memory, the weights and mem_fraction_static."""
    if tp < 1:
        raise ValueError(f"--tp must be at least 1, got {tp}")
    multimodal = is_multimodal(model)
    if mem_fraction_static is None:
        vision = _vision_shape(model) if multimodal else (None, None)
        mfs = default_mem_fraction_static(
            gpu.memory_mib, chunked_prefill_size=chunked_prefill_size, tp=tp,
            vision_layers=vision[0], vision_hidden=vision[1],
        )
        mfs_source = "SGLang's default"
    else:
        if not 0 < mem_fraction_static < 1:
            raise ValueError(f"--mem-fraction-static must be in (0, 1), got {mem_fraction_static}")
        mfs, mfs_source = mem_fraction_static, "given"
    weights_gib = (weight_bytes if weight_bytes is not None else model.weight_bytes) / tp / GIB
    pre = gpu.memory_gib - gpu.runtime_overhead_gib
    mm_gib = VLM_CACHE_RESERVATION_MB / 1024 if multimodal else 0.0
    rest = (pre - weights_gib) - pre * (1 - mfs) - mm_gib
    if rest <= 0:
        need = math.ceil((1 - (pre - weights_gib) / pre) * 1000) / 1000
        hint = f"raise --mem-fraction-static above {need:.3f}" if need < 1 else f"use --tp {tp * 2} or a larger GPU"
        raise InsufficientMemory(
            f"{model.name} weights ({weights_gib:.1f} GiB per GPU at tp={tp}) leave no KV memory on "
            f"{gpu.name} ({gpu.memory_gib:.1f} GiB) with mem_fraction_static={mfs}: {hint}."
        )
    return KVBudget(
        bytes=int(rest * GIB),
        source=f"estimated: {gpu.name} memory, {weights_gib:.2f} GiB weights/GPU, mem_fraction_static {mfs:.4g} ({mfs_source})",
        mem_fraction_static=mfs,
        weights_gib=weights_gib,
        pre_load_gib=pre,
    )


def _vision_shape(model: ModelSpec) -> tuple[int | None, int | None]:
    import json

    if not model.config_path:
        return None, None
    try:
        vision = json.loads(open(model.config_path, encoding="utf-8").read()).get("vision_config") or {}
    except (OSError, ValueError):
        return None, None
    return vision.get("num_hidden_layers", 24), vision.get("hidden_size", 1024)

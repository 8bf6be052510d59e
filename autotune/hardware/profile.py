"""GPU profiles: memory for the pool model, rates and overheads for the simulator's timing model.

Profiles ship as data (`gpus.yaml`); every coefficient lives there so that a profile measured on
a real GPU can replace a datasheet one without touching code.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, fields
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

MIB = 1 << 20
GIB = 1 << 30


class UnknownGPU(ValueError):
    def __init__(self, reference: str, known: list[str]) -> None:
        close = difflib.get_close_matches(reference.upper(), [k.upper() for k in known], n=3, cutoff=0.4)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        super().__init__(
            f"unknown GPU {reference!r}.{hint} Known GPUs: {', '.join(known)}; or pass a profile YAML file "
            "(same fields as autotune/hardware/gpus.yaml)."
        )


@dataclass(frozen=True)
class GPUProfile:
    name: str
    aliases: tuple[str, ...]
    memory_mib: int
    runtime_overhead_gib: float
    hbm_tbs: float
    bf16_tflops: float
    weight_stream_tbs: float
    kv_read_tbs: float
    gemm_tflops: float
    moe_gemm_tflops: float
    prefill_attention_tflops: float
    prefill_attention_windowed: bool
    attention_layer_floor_us: float
    moe_dispatch_floor_us: float
    allreduce_latency_us: float
    allreduce_busbw_gbs: float
    decode_step_overhead_ms: float
    prefill_step_overhead_ms: float
    spec_draft_factor: float
    spec_step_overhead_ms: float
    source: str = "datasheet + aiconfigurator tables (see gpus.yaml)"
    # Prefill steps with prefill CUDA graphs off (--disable-prefill-cuda-graph): eager kernels launch
    # one by one, a fixed cost far above the graphed step's. None: the same as prefill_step_overhead_ms.
    eager_prefill_step_overhead_ms: float | None = None
    # Wall time a decode step that retracts costs beyond the simulated forwards (the overlap loop's small
    # re-admission forwards included), once per step however many requests it retracts: host work SGLang's
    # scheduler does not hide there. 0: not measured.
    retract_step_overhead_ms: float = 0.0

    @property
    def memory_bytes(self) -> int:
        return self.memory_mib * MIB

    @property
    def memory_gib(self) -> float:
        return self.memory_mib / 1024

    @property
    def memory_class(self) -> str:
        """Coarse memory class rules can be keyed on (SGLang's own thresholds are 60/90/160 GB)."""
        gib = self.memory_gib
        if gib < 60:
            return "<60GB"
        if gib < 90:
            return "80GB"
        if gib < 160:
            return "141GB"
        return "180GB+"

    def with_overrides(self, **changes: Any) -> "GPUProfile":
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data.update(changes)
        return GPUProfile(**data)


def _profile_from_dict(name: str, data: dict[str, Any], source: str) -> GPUProfile:
    known = {f.name for f in fields(GPUProfile)} - {"name", "aliases", "source"}
    unknown = sorted(set(data) - known - {"aliases"})
    if unknown:
        raise ValueError(f"GPU profile {name!r} ({source}): unknown keys {unknown}; known keys: {sorted(known)}")
    missing = sorted(known - set(data) - {"prefill_attention_windowed", "eager_prefill_step_overhead_ms",
                                          "retract_step_overhead_ms"})
    if missing:
        raise ValueError(f"GPU profile {name!r} ({source}): missing keys {missing}")
    values = dict(data)
    values.setdefault("prefill_attention_windowed", False)
    return GPUProfile(name=name, aliases=tuple(values.pop("aliases", ())), source=source, **values)


@lru_cache(maxsize=1)
def builtin_profiles() -> dict[str, GPUProfile]:
    raw = yaml.safe_load((resources.files("autotune.hardware") / "gpus.yaml").read_text(encoding="utf-8"))
    return {name: _profile_from_dict(name, data, "gpus.yaml") for name, data in raw["gpus"].items()}


def load_gpu(reference: str) -> GPUProfile:
    """A built-in profile by name or alias (case-insensitive), or a profile YAML file."""
    path = Path(reference).expanduser()
    if path.suffix in (".yaml", ".yml") and path.is_file():
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        if not isinstance(raw, dict) or "name" not in raw:
            raise ValueError(f"{path}: a GPU profile file needs a mapping with 'name' and the fields of gpus.yaml")
        name = raw.pop("name")
        return _profile_from_dict(name, raw, str(path))
    wanted = reference.strip().lower()
    for profile in builtin_profiles().values():
        if wanted in (profile.name.lower(), *(a.lower() for a in profile.aliases)):
            return profile
    raise UnknownGPU(reference, list(builtin_profiles()))

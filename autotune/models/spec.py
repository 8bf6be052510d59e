"""What a model looks like to SGLang's KV memory pools.

`ModelSpec` is read from a Hugging Face `config.json` the way SGLang 0.5.23 reads it
(`configs/model_config.py`, `utils/hf_transformers/config.py`, the models' own
`get_attention_sliding_window_size`): which architectures get a hybrid SWA pool, which
layers are sliding and which full, the window SGLang runs with, and the KV bytes per token
of each kind of layer. Nothing here touches a GPU or the network.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from autotune.models.errors import ModelConfigError
from autotune.models.params import ParamBreakdown, estimate_params

# SGLang's allow-list of hybrid-SWA architectures (configs/model_config.py::is_hybrid_swa_model).
HYBRID_SWA_ARCHITECTURES = frozenset(
    {
        "BeamForCausalLM",
        "Llama4ForConditionalGeneration",
        "DeepseekV4ForCausalLM",
        "GptOssForCausalLM",
        "GraniteSWAForCausalLM",
        "GraniteMoeSWAForCausalLM",
        "IQuestQ1ForCausalLM",
        "MiMoV2ForCausalLM",
        "MiMoV2FlashForCausalLM",
        "Step3p5ForCausalLM",
        "Step3p7ForConditionalGeneration",
        "Gemma4ForCausalLM",
        "Gemma4ForConditionalGeneration",
        "Gemma4UnifiedForConditionalGeneration",
        "EmbeddingGemma2Model",
        "LagunaForCausalLM",
        "MellumForCausalLM",
        "InklingForConditionalGeneration",
    }
)
_GEMMA4 = frozenset(
    {"Gemma4ForCausalLM", "Gemma4ForConditionalGeneration", "Gemma4UnifiedForConditionalGeneration"}
)
_SWA_SINK = frozenset({"GptOssForCausalLM", "GraniteSWAForCausalLM", "GraniteMoeSWAForCausalLM"})
_MIMO_V2 = frozenset({"MiMoV2ForCausalLM", "MiMoV2FlashForCausalLM"})
_LLAMA4 = "Llama4ForConditionalGeneration"

# Element size of the KV cache per `--kv-cache-dtype` (torch element sizes SGLang uses).
KV_DTYPE_BYTES: dict[str, int] = {
    "auto": 2,
    "bf16": 2,
    "bfloat16": 2,
    "fp16": 2,
    "float16": 2,
    "fp8": 1,
    "fp8_e4m3": 1,
    "fp8_e5m2": 1,
}


def kv_dtype_bytes(kv_dtype: str) -> int:
    try:
        return KV_DTYPE_BYTES[kv_dtype.lower()]
    except KeyError:
        raise ValueError(
            f"unknown KV cache dtype {kv_dtype!r}; use one of: {', '.join(sorted(KV_DTYPE_BYTES))}"
        ) from None


@dataclass(frozen=True)
class AttentionShape:
    """KV geometry of one layer kind, as SGLang sizes it (K and V both cached)."""

    kv_heads: int
    head_dim: int
    v_head_dim: int
    q_heads: int

    def kv_heads_per_rank(self, tp: int) -> int:
        # model_config.get_num_kv_heads: heads shard over TP, never below one per rank.
        return max(1, self.kv_heads // tp)

    def bytes_per_token(self, tp: int = 1, kv_dtype: str = "bf16") -> int:
        """Bytes one token occupies in one layer of this kind on one TP rank."""
        return self.kv_heads_per_rank(tp) * (self.head_dim + self.v_head_dim) * kv_dtype_bytes(kv_dtype)


@dataclass(frozen=True)
class MoEInfo:
    num_experts: int
    top_k: int
    expert_intermediate: int
    moe_layers: int


@dataclass(frozen=True)
class ModelSpec:
    """A model as SGLang's memory pools see it, plus what the timing model needs."""

    name: str
    architecture: str
    model_type: str
    config_path: str | None
    hub_id: str | None
    hybrid_swa: bool
    hybrid_reason: str
    num_layers: int
    swa_layer_ids: tuple[int, ...]
    full_layer_ids: tuple[int, ...]
    window: int | None  # as SGLang runs it (Gemma 4 / GPT-OSS: HF sliding_window - 1)
    hf_sliding_window: int | None
    full_attention: AttentionShape
    swa_attention: AttentionShape
    hidden_size: int
    vocab_size: int
    context_len: int
    moe: MoEInfo | None
    params: ParamBreakdown
    params_total: float
    params_active: float
    params_source: str
    weight_bytes: float
    weight_bytes_source: str
    kv_shared_layers: int = 0
    notes: tuple[str, ...] = field(default_factory=tuple)

    # -- KV bytes ---------------------------------------------------------------------------
    def full_layer_bytes(self, tp: int = 1, kv_dtype: str = "bf16") -> int:
        """f: bytes per token of one full-attention layer (per TP rank)."""
        return self.full_attention.bytes_per_token(tp, kv_dtype)

    def swa_layer_bytes(self, tp: int = 1, kv_dtype: str = "bf16") -> int:
        """s: bytes per token of one sliding-window layer (per TP rank)."""
        return self.swa_attention.bytes_per_token(tp, kv_dtype)

    def full_bytes_per_token(self, tp: int = 1, kv_dtype: str = "bf16") -> int:
        """F = f x n_f: a token's bytes over all full layers."""
        return self.full_layer_bytes(tp, kv_dtype) * len(self.full_layer_ids)

    def swa_bytes_per_token(self, tp: int = 1, kv_dtype: str = "bf16") -> int:
        """S = s x n_s: a token's bytes over all sliding layers."""
        return self.swa_layer_bytes(tp, kv_dtype) * len(self.swa_layer_ids)

    @property
    def s_over_f(self) -> float:
        full = self.full_bytes_per_token()
        return self.swa_bytes_per_token() / full if full else math.inf

    @property
    def is_moe(self) -> bool:
        return self.moe is not None

    @property
    def kind(self) -> str:
        return "MoE" if self.is_moe else "dense"

    def weight_bytes_per_rank(self, tp: int = 1) -> float:
        return self.weight_bytes / tp

    def features(self) -> dict[str, Any]:
        """The facts rules are keyed on (persisted with studies and optima)."""
        return {
            "name": self.name,
            "architecture": self.architecture,
            "hybrid_swa": self.hybrid_swa,
            "moe": self.is_moe,
            "num_experts": self.moe.num_experts if self.moe else 0,
            "top_k": self.moe.top_k if self.moe else 0,
            "swa_layers": len(self.swa_layer_ids),
            "full_layers": len(self.full_layer_ids),
            "window": self.window,
            "s_over_f": round(self.s_over_f, 4) if self.hybrid_swa else None,
            "swa_bytes_per_token": self.swa_bytes_per_token(),
            "full_bytes_per_token": self.full_bytes_per_token(),
            "weight_bytes": self.weight_bytes,
            "params_total": self.params_total,
            "params_active": self.params_active,
        }


# ---------------------------------------------------------------------------------------------
# Parsing a config.json
# ---------------------------------------------------------------------------------------------


class _Config:
    """Key access on a config dict that names the file and key in every error."""

    def __init__(self, data: Mapping[str, Any], path: str, prefix: str = "") -> None:
        self.data = data
        self.path = path
        self.prefix = prefix

    def get(self, key: str, default: Any = None) -> Any:
        value = self.data.get(key, default)
        return default if value is None else value

    def require(self, key: str, kind: type | tuple[type, ...] = int) -> Any:
        if key not in self.data or self.data[key] is None:
            raise ModelConfigError(self.path, self.prefix + key, "is missing; SGLang needs it to size the KV pools")
        value = self.data[key]
        if not isinstance(value, kind) or isinstance(value, bool) and kind is int:
            raise ModelConfigError(self.path, self.prefix + key, f"must be {_kind_name(kind)}, got {value!r}")
        return value

    def positive(self, key: str) -> int:
        value = self.require(key, int)
        if value <= 0:
            raise ModelConfigError(self.path, self.prefix + key, f"must be a positive integer, got {value}")
        return value


def _kind_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join({int: "an integer", list: "a list", str: "a string", float: "a number"}.get(k, k.__name__) for k in kinds)


def read_config_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ModelConfigError(str(path), None, f"cannot be read: {exc.strerror}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ModelConfigError(
            str(path), None, f"is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})"
        ) from None
    if not isinstance(data, dict):
        raise ModelConfigError(str(path), None, "must hold a JSON object at the top level")
    return data


def spec_from_config(
    data: Mapping[str, Any],
    *,
    path: str,
    name: str | None = None,
    hub_id: str | None = None,
    published: Mapping[str, Any] | None = None,
) -> ModelSpec:
    """Build a ModelSpec from config.json data. `published` carries the catalog's figures."""
    root = _Config(data, path)
    archs = root.require("architectures", list)
    if not archs or not all(isinstance(a, str) for a in archs):
        raise ModelConfigError(path, "architectures", "must be a non-empty list of class names")
    arch = archs[0]
    text_data = data.get("text_config") if isinstance(data.get("text_config"), dict) else None
    tc = _Config(text_data, path, "text_config.") if text_data is not None else root

    num_layers = tc.positive("num_hidden_layers")
    hidden = tc.positive("hidden_size")
    q_heads = tc.positive("num_attention_heads")
    vocab = tc.positive("vocab_size")
    context_len = int(tc.get("max_position_embeddings", 0) or 0)

    hybrid = arch in HYBRID_SWA_ARCHITECTURES or bool(tc.get("is_hybrid_swa", False))
    notes: list[str] = []
    if arch in _GEMMA4:
        swa_ids, full_ids = _layer_ids_from_types(tc, num_layers)
        full, swa = _gemma4_shapes(tc, q_heads)
        hf_window = tc.positive("sliding_window")
        window = hf_window - 1  # gemma4: get_attention_sliding_window_size = sliding_window - 1
    elif arch in _SWA_SINK:
        swa_ids, full_ids = _layer_ids_from_types(tc, num_layers)
        full = swa = _plain_shape(tc, hidden, q_heads)
        hf_window = tc.positive("sliding_window")
        window = hf_window - 1  # gpt_oss: sliding_window - 1
    elif arch == _LLAMA4:
        full_ids = tuple(i for i in range(num_layers) if (i + 1) % 4 == 0)
        swa_ids = tuple(i for i in range(num_layers) if (i + 1) % 4 != 0)
        full = swa = _plain_shape(tc, hidden, q_heads)
        hf_window = tc.get("sliding_window_size") or tc.get("sliding_window") or tc.get("window_size")
        if hf_window is None:
            hf_window = tc.positive("attention_chunk_size")  # chunked attention stands in for the window
        window = int(hf_window)
    elif arch in _MIMO_V2 or (hybrid and tc.get("hybrid_layer_pattern") is not None):
        swa_ids, full_ids = _layer_ids_from_pattern(tc, num_layers)
        full, swa = _split_shapes(tc, hidden, q_heads)
        hf_window = tc.get("sliding_window_size") or tc.get("sliding_window") or tc.get("window_size")
        if hf_window is None:
            raise ModelConfigError(path, tc.prefix + "sliding_window_size", "is missing; the SWA pool needs the window")
        window = int(hf_window)
    elif hybrid:
        raise ModelConfigError(
            path,
            "architectures",
            f"{arch} gets a hybrid SWA pool in SGLang, but swa-autotune does not know how to read its "
            "layer layout yet (supported: Gemma 4, GPT-OSS, Llama 4, MiMo-V2, hybrid_layer_pattern configs)",
        )
    else:
        swa_ids, full_ids = (), tuple(range(num_layers))
        full = swa = _plain_shape(tc, hidden, q_heads)
        hf_window = tc.get("sliding_window")
        window = None

    if hybrid and not swa_ids:
        raise ModelConfigError(path, tc.prefix + "layer_types", "names no sliding layer; a hybrid SWA pool needs one")
    if hybrid:
        reason = f"{arch} is on SGLang's hybrid-SWA allow-list" if arch in HYBRID_SWA_ARCHITECTURES else "config sets is_hybrid_swa"
    else:
        reason = (
            f"SGLang serves {arch} with one KV pool (not on its hybrid-SWA allow-list): "
            "--swa-full-tokens-ratio has no effect"
        )
    kv_shared = int(tc.get("num_kv_shared_layers", 0) or 0)
    if kv_shared:
        notes.append(
            f"{kv_shared} layers share KV with earlier layers; SGLang still counts every layer when sizing "
            "the pools (whether the shared layers' buffers are allocated is not verified)"
        )
    moe = _moe_info(tc, num_layers)
    breakdown = estimate_params(
        tc, data, num_layers=num_layers, hidden=hidden, vocab=vocab, full=full, swa=swa,
        swa_ids=swa_ids, full_ids=full_ids, moe=moe,
    )
    published = published or {}
    pub_params = published.get("params") or {}
    if pub_params:
        params_total, params_active = float(pub_params["total"]), float(pub_params["active"])
        params_source = "published"
    else:
        params_total, params_active = breakdown.total, breakdown.active
        params_source = "estimated from config shapes"
    if published.get("weight_bytes"):
        weight_bytes, weight_source = float(published["weight_bytes"]), "published checkpoint size"
    else:
        weight_bytes = breakdown.total * _weight_bytes_per_param(data)
        weight_source = "estimated: parameters x dtype bytes"
    if published.get("notes"):
        notes.append(" ".join(str(published["notes"]).split()))
    return ModelSpec(
        name=name or _default_name(path, arch),
        architecture=arch,
        model_type=str(data.get("model_type", "")),
        config_path=path,
        hub_id=hub_id,
        hybrid_swa=hybrid,
        hybrid_reason=reason,
        num_layers=num_layers,
        swa_layer_ids=tuple(swa_ids),
        full_layer_ids=tuple(full_ids),
        window=window,
        hf_sliding_window=int(hf_window) if isinstance(hf_window, int) else None,
        full_attention=full,
        swa_attention=swa,
        hidden_size=hidden,
        vocab_size=vocab,
        context_len=context_len,
        moe=moe,
        params=breakdown,
        params_total=params_total,
        params_active=params_active,
        params_source=params_source,
        weight_bytes=weight_bytes,
        weight_bytes_source=weight_source,
        kv_shared_layers=kv_shared,
        notes=tuple(notes),
    )


def _default_name(path: str, arch: str) -> str:
    p = Path(path)
    return p.parent.name if p.name == "config.json" and p.parent.name else (p.stem or arch)


def _layer_ids_from_types(tc: _Config, num_layers: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    types = tc.require("layer_types", list)
    if len(types) != num_layers:
        raise ModelConfigError(
            tc.path, tc.prefix + "layer_types", f"has {len(types)} entries but num_hidden_layers is {num_layers}"
        )
    unknown = sorted({t for t in types if t not in ("sliding_attention", "full_attention")})
    if unknown:
        raise ModelConfigError(
            tc.path, tc.prefix + "layer_types", f"has unknown layer types {unknown}; expected sliding_attention / full_attention"
        )
    swa = tuple(i for i, t in enumerate(types) if t == "sliding_attention")
    full = tuple(i for i, t in enumerate(types) if t == "full_attention")
    return swa, full


def _layer_ids_from_pattern(tc: _Config, num_layers: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    pattern = tc.require("hybrid_layer_pattern", list)
    if len(pattern) < num_layers or any(p not in (0, 1) for p in pattern[:num_layers]):
        raise ModelConfigError(
            tc.path, tc.prefix + "hybrid_layer_pattern", f"must list 0 (full) or 1 (SWA) for each of the {num_layers} layers"
        )
    swa = tuple(i for i in range(num_layers) if pattern[i] == 1)
    full = tuple(i for i in range(num_layers) if pattern[i] == 0)
    return swa, full


def _plain_shape(tc: _Config, hidden: int, q_heads: int) -> AttentionShape:
    kv_heads = int(tc.get("num_key_value_heads", q_heads))
    head_dim = int(tc.get("head_dim", hidden // q_heads))
    v_head_dim = int(tc.get("v_head_dim", 0) or head_dim)
    return AttentionShape(kv_heads=kv_heads, head_dim=head_dim, v_head_dim=v_head_dim, q_heads=q_heads)


def _split_shapes(tc: _Config, hidden: int, q_heads: int) -> tuple[AttentionShape, AttentionShape]:
    """Configs that state full-layer shapes in the base keys and SWA shapes in swa_* keys."""
    full = _plain_shape(tc, hidden, q_heads)
    swa_head_dim = int(tc.get("swa_head_dim", full.head_dim))
    swa = AttentionShape(
        kv_heads=int(tc.get("swa_num_key_value_heads", full.kv_heads)),
        head_dim=swa_head_dim,
        v_head_dim=int(tc.get("swa_v_head_dim", swa_head_dim)),
        q_heads=int(tc.get("swa_num_attention_heads", q_heads)),
    )
    return full, swa


def _gemma4_shapes(tc: _Config, q_heads: int) -> tuple[AttentionShape, AttentionShape]:
    """SGLang's Gemma 4 remapping (_apply_gemma4_attention_overrides).

    Gemma 4 states the sliding shape first (head_dim, num_key_value_heads) and the full layers'
    as global_head_dim / num_global_key_value_heads. A config already rearranged for SGLang
    (swa_head_dim present, as written for dummy-weight runs) states full first.
    """
    if tc.get("swa_head_dim") is not None:
        return _split_shapes(tc, tc.positive("hidden_size"), q_heads)
    swa_dim = tc.positive("head_dim")
    swa_kv = tc.positive("num_key_value_heads")
    full_dim = int(tc.get("global_head_dim", swa_dim))
    full_kv = int(tc.get("num_global_key_value_heads", swa_kv))
    # attention_k_eq_v shares the K projection for V on full layers, but SGLang caches both.
    full = AttentionShape(kv_heads=full_kv, head_dim=full_dim, v_head_dim=full_dim, q_heads=q_heads)
    swa = AttentionShape(kv_heads=swa_kv, head_dim=swa_dim, v_head_dim=swa_dim, q_heads=q_heads)
    return full, swa


def _moe_info(tc: _Config, num_layers: int) -> MoEInfo | None:
    experts = tc.get("num_experts") or tc.get("num_local_experts") or tc.get("n_routed_experts")
    if not experts or (tc.get("enable_moe_block") is False):
        return None
    top_k = tc.get("top_k_experts") or tc.get("num_experts_per_tok") or tc.get("experts_per_token")
    if not top_k:
        raise ModelConfigError(tc.path, tc.prefix + "num_experts_per_tok", "is missing for a mixture-of-experts config")
    inter = tc.get("moe_intermediate_size") or tc.get("intermediate_size")
    freq = tc.get("moe_layer_freq")
    if isinstance(freq, list):
        moe_layers = sum(1 for f in freq[:num_layers] if f)
    elif tc.get("interleave_moe_layer_step"):
        moe_layers = num_layers // int(tc.get("interleave_moe_layer_step"))
    else:
        moe_layers = num_layers
    return MoEInfo(num_experts=int(experts), top_k=int(top_k), expert_intermediate=int(inter), moe_layers=moe_layers)


def _weight_bytes_per_param(data: Mapping[str, Any]) -> float:
    quant = (data.get("quantization_config") or {}).get("quant_method", "")
    if quant in ("fp8", "w8a8_fp8", "modelopt_fp8"):
        return 1.0
    if quant in ("mxfp4", "nvfp4", "modelopt_fp4"):
        return 0.55  # 4-bit experts plus scales and bf16 attention, roughly
    dtype = str(data.get("torch_dtype") or data.get("dtype") or "bfloat16")
    return 4.0 if dtype in ("float32", "fp32") else 2.0

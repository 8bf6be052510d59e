"""Parameter counts estimated from a config's shapes.

Used for two things: the weight bytes of a model the catalog does not know, and the split of
the weights into what every decode step reads (attention, dense MLP, embeddings) and what it
reads only for the experts a batch routes to (MoE). The catalog's published totals win where
they exist; tests check that these estimates land close to them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping, Sequence

if TYPE_CHECKING:
    from autotune.models.spec import AttentionShape, MoEInfo, _Config


@dataclass(frozen=True)
class ParamBreakdown:
    embedding: float  # input embeddings (+ LM head when untied, + per-layer embeddings)
    attention: float  # q, k, v, o over all layers
    dense_mlp: float  # dense MLPs, shared experts
    experts: float  # all routed experts over all MoE layers
    experts_active: float  # the top-k share of them one token uses
    towers: float  # vision / audio encoders

    @property
    def total(self) -> float:
        return self.embedding + self.attention + self.dense_mlp + self.experts + self.towers

    @property
    def active(self) -> float:
        return self.embedding + self.attention + self.dense_mlp + self.experts_active

    @property
    def expert_fraction(self) -> float:
        """Share of all weights that sit in routed experts (read only when a token routes there)."""
        return self.experts / self.total if self.total else 0.0


def _attention_params(hidden: int, shape: "AttentionShape", k_eq_v: bool) -> float:
    q = hidden * shape.q_heads * shape.head_dim
    k = hidden * shape.kv_heads * shape.head_dim
    v = 0 if k_eq_v else hidden * shape.kv_heads * shape.v_head_dim
    o = shape.q_heads * shape.v_head_dim * hidden
    return float(q + k + v + o)


def _tower_params(cfg: Mapping[str, Any] | None) -> float:
    """A transformer encoder's parameters: attention 4h^2 plus a 2-matrix MLP per layer."""
    if not isinstance(cfg, Mapping):
        return 0.0
    h = int(cfg.get("hidden_size") or 0)
    layers = int(cfg.get("num_hidden_layers") or 0)
    inter = int(cfg.get("intermediate_size") or 4 * h)
    return float(layers * (4 * h * h + 2 * h * inter))


def estimate_params(
    tc: "_Config",
    root: Mapping[str, Any],
    *,
    num_layers: int,
    hidden: int,
    vocab: int,
    full: "AttentionShape",
    swa: "AttentionShape",
    swa_ids: Sequence[int],
    full_ids: Sequence[int],
    moe: "MoEInfo | None",
) -> ParamBreakdown:
    arch = root["architectures"][0]
    tied = bool(tc.get("tie_word_embeddings", root.get("tie_word_embeddings", False)))
    embedding = float(vocab * hidden * (1 if tied else 2))
    per_layer_dim = int(tc.get("hidden_size_per_layer_input", 0) or 0)
    if per_layer_dim:  # Gemma 3n / 4 E-models: a per-layer embedding table
        per_layer_vocab = int(tc.get("vocab_size_per_layer_input", vocab))
        embedding += float(per_layer_vocab * num_layers * per_layer_dim)

    k_eq_v = bool(tc.get("attention_k_eq_v", False))
    attention = _attention_params(hidden, full, k_eq_v) * len(full_ids)
    attention += _attention_params(hidden, swa, False) * len(swa_ids)

    inter = int(tc.get("intermediate_size", 0) or 0)
    dense_inter = int(tc.get("intermediate_size_mlp", 0) or inter)
    moe_layers = moe.moe_layers if moe else 0
    dense_layers = num_layers - moe_layers
    dense_mlp = float(3 * hidden * dense_inter * dense_layers)
    experts = experts_active = 0.0
    if moe:
        per_expert = 3 * hidden * moe.expert_intermediate
        experts = float(moe.num_experts * per_expert * moe_layers)
        experts_active = float(moe.top_k * per_expert * moe_layers)
        # Gemma 4 keeps a dense MLP beside the experts; Llama 4 a shared expert of the same size.
        if arch.startswith("Gemma4") or arch == "Llama4ForConditionalGeneration":
            dense_mlp += float(3 * hidden * inter * moe_layers)
        dense_mlp += float(hidden * moe.num_experts * moe_layers)  # routers

    towers = _tower_params(root.get("vision_config")) + _tower_params(root.get("audio_config"))
    return ParamBreakdown(
        embedding=embedding,
        attention=attention,
        dense_mlp=dense_mlp,
        experts=experts,
        experts_active=experts_active,
        towers=towers,
    )

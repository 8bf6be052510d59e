"""How long one forward step of the simulated SGLang server takes: a roofline model.

A step is a sequence of kernels, and each kernel is either memory bound (it streams weights or
KV) or compute bound (it does GEMM or attention FLOPs). So a step's GPU time is the sum, over
the parts of the model, of max(bytes / bandwidth, FLOPs / rate): dense linear layers, the MoE
experts, attention (one term per layer kind), and the tensor-parallel all-reduces. A single
global max(memory, compute) would let attention's KV reads hide behind the GEMMs, which
sequential kernels do not do. To the GPU time the step adds a constant per-step overhead
(scheduler, sampling, launch gaps: what the measured kernel tables leave out).

Every rate, floor and overhead comes from the `GPUProfile` (gpus.yaml), so a profile measured on
a real GPU replaces the datasheet one without touching this file. docs/timing-model.md gives the
sources and the calibration against docs/reference/perf.md and the user's B200 figures.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from autotune.hardware.profile import GPUProfile
from autotune.models.spec import AttentionShape, ModelSpec

TERA = 1e12
ACTIVATION_BYTES = 2  # bf16 hidden states, what the TP all-reduces move
# Dummy weights (`--load-format dummy`): the random router sends a decode batch's tokens to far fewer
# distinct experts than uniform routing would. Fitted on real SGLang 0.5.17 decode of the dummy
# gemma-4-26B-A4B on an H200 (1-64 running, docs/real-gpu/footprint.md): the step times fit tokens
# routed uniformly over 24 of the 128 experts per layer. Other MoE models: the same share, assumed.
# Real checkpoints: uniform over all experts (assumed; no real-checkpoint decode has been measured).
DUMMY_ROUTING_EXPERT_SHARE = 24 / 128


@dataclass(frozen=True)
class DecodeBatch:
    """One decode forward: every running request adds one position (or its draft tokens)."""

    batch_size: int  # requests decoding this step
    full_kv_tokens: int  # sum of sequence lengths: tokens each full layer reads
    swa_kv_tokens: int  # sum of min(seq_len, window): tokens each sliding layer reads


@dataclass(frozen=True)
class PrefillChunk:
    """One request's share of an extend (prefill) forward."""

    extend_len: int  # new tokens computed in this chunk
    prefix_len: int  # tokens of this request already in the KV cache (earlier chunks)


def experts_touched(num_experts: float, top_k: int, tokens: float) -> float:
    """Expected number of distinct experts that `tokens` tokens route to, per MoE layer.

    Each token picks top_k distinct experts of E; with uniform routing a given expert is missed
    by one token with probability C(E-1, k) / C(E, k) = 1 - k/E, and by all T tokens (routed
    independently) with probability (1 - k/E)^T. For 128 experts and top-8 that leaves 36% of
    the experts unread at 16 tokens and 0.03% at 128: from a few dozen tokens on, a decode step
    reads every expert (docs/reference/perf.md's MoE table flattens out there).
    """
    if tokens <= 0:
        return 0.0
    return num_experts * (1.0 - (1.0 - top_k / num_experts) ** tokens)


def attended_pairs(prefix: int, extend: int, window: int | None = None) -> int:
    """(query, key) pairs of a causal chunk: query at position p sees min(p + 1, window) keys.

    Queries sit at positions prefix .. prefix + extend - 1. Without a window this is
    extend x prefix + extend (extend + 1) / 2, about extend x (prefix + extend / 2).
    """
    end = prefix + extend
    growing_end = end if window is None else min(end, window)  # positions whose p + 1 <= window
    growing = max(0, growing_end - prefix)
    pairs = growing * prefix + growing * (growing + 1) // 2
    return pairs + (extend - growing) * (window or 0)


@dataclass(frozen=True)
class _LayerKind:
    name: str  # "full" or "swa"
    count: int
    shape: AttentionShape
    kv_bytes: int  # bytes per token of one such layer on one TP rank


class TimingModel:
    """Step times for one model on one GPU type with `tp` GPUs (one TP group).

    Weights and linear FLOPs split evenly over the TP ranks (perfect scaling); KV heads split
    as SGLang splits them (never below one per rank); two all-reduces per layer are added on
    top when tp > 1. With `spec_accept_length` (MTP / EAGLE), a decode step verifies
    `spec_draft_tokens` tokens per request, costs `spec_draft_factor` x its GPU time plus
    `spec_step_overhead_ms`, and yields `spec_accept_length` tokens per request.
    """

    def __init__(
        self,
        model: ModelSpec,
        gpu: GPUProfile,
        tp: int = 1,
        *,
        spec_accept_length: float | None = None,
        spec_draft_tokens: int = 4,
        kv_dtype: str = "bf16",
        prefill_cuda_graph: bool = True,
        dummy_weights: bool = False,
    ) -> None:
        if tp < 1:
            raise ValueError(f"tp must be >= 1, got {tp}")
        if spec_accept_length is not None and not 1.0 <= spec_accept_length <= spec_draft_tokens:
            raise ValueError(
                f"spec_accept_length must lie in [1, spec_draft_tokens={spec_draft_tokens}], got {spec_accept_length}"
            )
        self.model, self.gpu, self.tp = model, gpu, tp
        self.spec_accept_length = spec_accept_length
        self.draft_tokens = spec_draft_tokens if spec_accept_length is not None else 1
        self.kv_dtype = kv_dtype
        eager = gpu.eager_prefill_step_overhead_ms
        self.prefill_overhead_s = (gpu.prefill_step_overhead_ms if prefill_cuda_graph or eager is None else eager) / 1e3
        self.retract_step_overhead_s = gpu.retract_step_overhead_ms / 1e3

        p = model.params
        # One bytes-per-parameter figure for the whole checkpoint (published size / estimated
        # parameters), so quantised checkpoints (MXFP4 experts) read proportionally less.
        bytes_per_param = model.weight_bytes / p.total
        # The LM head is read and multiplied every step; the input embedding is only looked up,
        # and vision/audio towers are not run for text, so neither counts as streamed weights.
        lm_head = float(model.vocab_size * model.hidden_size)
        self.dense_params = (p.attention + p.dense_mlp) / tp  # per rank, applied to every token
        self.lm_head_params = lm_head / tp  # per rank, applied to every token that gets logits
        self.dense_bytes = (p.attention + p.dense_mlp + lm_head) * bytes_per_param / tp
        moe = model.moe
        self.dummy_weights = dummy_weights
        # The experts a batch's tokens are routed over: all of them, or a dummy router's few.
        self.routed_experts = (
            max(float(moe.top_k), DUMMY_ROUTING_EXPERT_SHARE * moe.num_experts) if moe and dummy_weights
            else float(moe.num_experts) if moe else 0.0
        )
        self.moe_layers = moe.moe_layers if moe else 0
        self.expert_bytes = p.experts * bytes_per_param / tp / (moe.moe_layers * moe.num_experts) if moe else 0.0
        self.expert_active_params = p.experts_active / tp / moe.moe_layers if moe else 0.0  # per layer, per token
        kinds = (
            _LayerKind("full", len(model.full_layer_ids), model.full_attention, model.full_layer_bytes(tp, kv_dtype)),
            _LayerKind("swa", len(model.swa_layer_ids), model.swa_attention, model.swa_layer_bytes(tp, kv_dtype)),
        )
        self.layer_kinds = tuple(k for k in kinds if k.count)

    # -- public ------------------------------------------------------------------------------
    def decode_step_s(self, batch: DecodeBatch) -> float:
        """Seconds for one decode forward over the batch, overhead included."""
        if batch.batch_size <= 0:
            return 0.0
        gpu = self.gpu
        queries = batch.batch_size * self.draft_tokens  # a verify forward scores every draft token
        attention = sum(k.count * self.decode_attention_layer_s(k.name, batch) for k in self.layer_kinds)
        seconds = self._linear_s(queries, logits=queries) + attention + self._allreduce_s(queries)
        if self.spec_accept_length is not None:
            seconds = seconds * gpu.spec_draft_factor + gpu.spec_step_overhead_ms / 1e3
        return seconds + gpu.decode_step_overhead_ms / 1e3

    def prefill_step_s(self, chunks: Sequence[PrefillChunk]) -> float:
        """Seconds for one extend forward over these chunks, overhead included."""
        tokens = sum(c.extend_len for c in chunks)
        if tokens <= 0:
            return 0.0
        attention = sum(k.count * self.prefill_attention_layer_s(k.name, chunks) for k in self.layer_kinds)
        # SGLang computes logits only for each chunk's last position.
        gpu_s = self._linear_s(tokens, logits=len(chunks)) + attention + self._allreduce_s(tokens)
        return gpu_s + self.prefill_overhead_s

    def tokens_per_decode_step(self) -> float:
        """Output tokens one decode step yields per request: 1, or the speculative accept length."""
        return 1.0 if self.spec_accept_length is None else self.spec_accept_length

    def describe(self) -> dict[str, Any]:
        """The coefficients in use, for logs and docs."""
        g = self.gpu
        return {
            "model": self.model.name,
            "gpu": g.name,
            "gpu_profile_source": g.source,
            "tp": self.tp,
            "kv_dtype": self.kv_dtype,
            "dense_weight_gb_per_rank": round(self.dense_bytes / 1e9, 3),
            "expert_mb_per_rank": round(self.expert_bytes / 1e6, 3),
            "moe_layers": self.moe_layers,
            "moe_routed_experts": self.routed_experts,
            "dummy_weights": self.dummy_weights,
            "layers": {k.name: k.count for k in self.layer_kinds},
            "weight_stream_tbs": g.weight_stream_tbs,
            "kv_read_tbs": g.kv_read_tbs,
            "gemm_tflops": g.gemm_tflops,
            "moe_gemm_tflops": g.moe_gemm_tflops,
            "prefill_attention_tflops": g.prefill_attention_tflops,
            "prefill_attention_windowed": g.prefill_attention_windowed,
            "attention_layer_floor_us": g.attention_layer_floor_us,
            "moe_dispatch_floor_us": g.moe_dispatch_floor_us,
            "allreduce_latency_us": g.allreduce_latency_us if self.tp > 1 else None,
            "allreduce_busbw_gbs": g.allreduce_busbw_gbs if self.tp > 1 else None,
            "decode_step_overhead_ms": g.decode_step_overhead_ms,
            "retract_step_overhead_ms": g.retract_step_overhead_ms,
            "prefill_step_overhead_ms": round(self.prefill_overhead_s * 1e3, 3),
            "spec_accept_length": self.spec_accept_length,
            "spec_draft_tokens": self.draft_tokens if self.spec_accept_length is not None else None,
            "spec_draft_factor": g.spec_draft_factor if self.spec_accept_length is not None else None,
            "spec_step_overhead_ms": g.spec_step_overhead_ms if self.spec_accept_length is not None else None,
        }

    # -- parts of a step -----------------------------------------------------------------------
    def moe_layer_s(self, tokens: int) -> float:
        """One MoE layer: a fixed routing/dispatch cost plus the roofline of the experts it touches."""
        moe = self.model.moe
        if moe is None or tokens <= 0:
            return 0.0
        touched = experts_touched(self.routed_experts, moe.top_k, tokens)
        read = touched * self.expert_bytes / (self.gpu.weight_stream_tbs * TERA)
        compute = 2.0 * self.expert_active_params * tokens / (self.gpu.moe_gemm_tflops * TERA)
        return self.gpu.moe_dispatch_floor_us / 1e6 + max(read, compute)

    def decode_attention_layer_s(self, kind: str, batch: DecodeBatch) -> float:
        """One attention layer ("full" or "swa") of a decode step: the KV it reads, or its floor."""
        layer = self._layer(kind)
        kv_tokens = batch.full_kv_tokens if kind == "full" else batch.swa_kv_tokens
        flops = self._attention_flops(layer.shape, kv_tokens * self.draft_tokens)
        return self._attention_layer_s(flops, kv_tokens * layer.kv_bytes)

    def prefill_attention_layer_s(self, kind: str, chunks: Sequence[PrefillChunk]) -> float:
        """One attention layer of an extend step: causal FLOPs, windowed only where the kernel profits."""
        layer = self._layer(kind)
        window = self.model.window if kind == "swa" and self.gpu.prefill_attention_windowed else None
        pairs = sum(attended_pairs(c.prefix_len, c.extend_len, window) for c in chunks)
        keys = sum((c.prefix_len if window is None else min(c.prefix_len, window)) + c.extend_len for c in chunks)
        return self._attention_layer_s(self._attention_flops(layer.shape, pairs), keys * layer.kv_bytes)

    def _layer(self, kind: str) -> _LayerKind:
        for layer in self.layer_kinds:
            if layer.name == kind:
                return layer
        raise ValueError(f"{self.model.name} has no {kind!r} attention layers")

    def _linear_s(self, tokens: int, *, logits: int) -> float:
        """Dense GEMMs (attention projections, dense MLP, LM head) plus the MoE layers."""
        gpu = self.gpu
        read = self.dense_bytes / (gpu.weight_stream_tbs * TERA)
        compute = 2.0 * (self.dense_params * tokens + self.lm_head_params * logits) / (gpu.gemm_tflops * TERA)
        return max(read, compute) + self.moe_layers * self.moe_layer_s(tokens)

    def _attention_flops(self, shape: AttentionShape, pairs: int) -> float:
        """QK^T and PV: 2 x (head_dim + v_head_dim) FLOPs per (query, key) pair per query head."""
        q_heads = max(1, shape.q_heads // self.tp)
        return 2.0 * (shape.head_dim + shape.v_head_dim) * q_heads * pairs

    def _attention_layer_s(self, flops: float, kv_bytes: float) -> float:
        """Reading the KV or doing the FLOPs, whichever is slower, but never below a kernel's floor."""
        gpu = self.gpu
        return max(
            gpu.attention_layer_floor_us / 1e6,
            kv_bytes / (gpu.kv_read_tbs * TERA),
            flops / (gpu.prefill_attention_tflops * TERA),
        )

    def _allreduce_s(self, tokens: int) -> float:
        """Two all-reduces of the hidden states per layer (after attention, after the MLP)."""
        if self.tp == 1:
            return 0.0
        gpu = self.gpu
        payload = tokens * self.model.hidden_size * ACTIVATION_BYTES
        # A ring all-reduce moves 2 (tp - 1) / tp of the payload over each link at bus bandwidth.
        one = gpu.allreduce_latency_us / 1e6 + payload * 2 * (self.tp - 1) / self.tp / (gpu.allreduce_busbw_gbs * 1e9)
        return 2 * self.model.num_layers * one

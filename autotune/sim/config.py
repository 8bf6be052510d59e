"""The simulated server's configuration and start-up: SGLang's flags resolved into pool sizes.

`start_up()` does what SGLang does between parsing its arguments and serving: size the KV
budget, split it into the two pools (or refuse), derive the request cap, and produce the log
lines SGLang prints on the way.
"""

from __future__ import annotations

from dataclasses import dataclass

from autotune.hardware.profile import GIB, GPUProfile
from autotune.models.spec import ModelSpec
from autotune.pools.footprint import ReleaseRules, release_rules
from autotune.pools.budget import KVBudget, default_chunked_prefill_size, estimate_budget
from autotune.pools.mode_sizing import ModeSizing, size_unified
from autotune.pools.sizing import KVGeometry, PoolLayout, layout_from_max_tokens, size_pools, validate_ratio
from autotune.sglang_facts import DEFAULT_RATIO
from autotune.sim.own_flags import EMULATED_SGLANG_VERSION
from autotune.sim.request import floor_page

DEFAULT_MAX_PREFILL_TOKENS = 16384
DEFAULT_DECODE_LOG_INTERVAL = 40
# From a client's send to the scheduler's waiting queue: HTTP, the tokenizer manager, the IPC hop. Estimated:
# a lone prompt's time to first token on real SGLang 0.5.17 exceeds its GPU time by about 8 ms (H200 prefill
# probes, docs/real-gpu/first-pass.md), ingress being part of that. What matters more than the number is that it
# is not zero: a request sent when another finishes misses the step scheduled at that finish (measured: a
# retracted request re-prefilled alone before the next wave's prompts reached the queue, footprint.md).
DEFAULT_REQUEST_INGRESS_S = 0.004
# A replay client sends a burst's requests one after another, not at once: the real replays' request rows show
# them 0.3 ms apart (docs/real-gpu/first-pass/traced-lag). With an idle server the burst's first request is
# prefilled alone, as every traced real phase began.
DEFAULT_CLIENT_SEND_INTERVAL_S = 0.0003
# The overlap loop polls for requests right after it has launched a forward (and processed the one before): a round
# receives what arrived by the previous forward's start plus this scheduling and launch time. Bounded by the traces:
# at least 2.1 ms (a burst's first seven requests reach the second round) and under the 4 ms ingress (a finished
# request's successor misses the round after next).
DEFAULT_SCHEDULE_LAUNCH_S = 0.003


@dataclass(frozen=True)
class SimServerConfig:
    """The subset of `sglang.launch_server` flags the simulator honours, plus its own two."""

    model: ModelSpec
    gpu: GPUProfile
    swa_full_tokens_ratio: float | None = None  # None: not passed (effective DEFAULT_RATIO)
    page_size: int = 1
    chunked_prefill_size: int | None = None  # None: SGLang's GPU-memory default
    max_prefill_tokens: int = DEFAULT_MAX_PREFILL_TOKENS
    max_running_requests: int | None = None
    max_total_tokens: int | None = None
    mem_fraction_static: float | None = None
    kv_budget_bytes: int | None = None  # the simulator's --kv-budget-gb, pinned
    disable_hybrid_swa_memory: bool = False
    enable_unified_memory: bool = False  # one byte arena (autotune/pools/mode_sizing.py)
    tp_size: int = 1
    kv_cache_dtype: str = "bf16"
    speculative_accept_length: float | None = None
    decode_log_interval: int = DEFAULT_DECODE_LOG_INTERVAL
    sglang_version: str = EMULATED_SGLANG_VERSION  # the release whose scheduler rules to follow
    prefill_cuda_graph: bool = True  # False: --disable-prefill-cuda-graph / --disable-cuda-graph (eager prefill)
    dummy_weights: bool = False  # --load-format dummy: random MoE routing, timed as measured (sim/timing.py)
    # In-process replays (sim/run.py) delay each request by this much between its send and the scheduler; the
    # HTTP simulated server has a real network path instead.
    request_ingress_s: float = DEFAULT_REQUEST_INGRESS_S
    client_send_interval_s: float = DEFAULT_CLIENT_SEND_INTERVAL_S
    schedule_launch_s: float = DEFAULT_SCHEDULE_LAUNCH_S
    overlap_schedule: bool = True  # SGLang's overlap loop (its default); False: --disable-overlap-schedule

    @property
    def rules(self) -> ReleaseRules:
        """The release's rules: footprint, decode eviction cadence, admission (autotune/pools/footprint.py)."""
        return release_rules(self.sglang_version)

    @property
    def fixed_length_full_reservation(self) -> bool:
        """Whether admission reserves all of an ignore_eos request's remaining output: 0.5.23 does,
        0.5.17 scales it by the new-token ratio like any request (checked in both releases' code)."""
        return self.rules.fixed_length_full_reservation

    @property
    def shrink_chunk_on_transient_swa_pressure(self) -> bool:
        """0.5.17 admits a smaller chunk whenever the SWA budget does not fit; 0.5.23 waits unless
        the request could never fit (prefill_budget.check_prefill: "transient pressure waits")."""
        return self.rules.shrink_chunk_on_transient_swa_pressure

    @property
    def ratio(self) -> float:
        return DEFAULT_RATIO if self.swa_full_tokens_ratio is None else self.swa_full_tokens_ratio

    @property
    def chunk_size(self) -> int:
        if self.chunked_prefill_size is None:
            return default_chunked_prefill_size(self.gpu.memory_mib)
        if self.chunked_prefill_size <= 0:  # SGLang's -1: no chunking, a prompt prefills whole
            return self.model.context_len or 1 << 20
        return self.chunked_prefill_size

    @property
    def hybrid(self) -> bool:
        return self.model.hybrid_swa and not self.disable_hybrid_swa_memory

    @property
    def unified(self) -> bool:
        return self.enable_unified_memory and self.hybrid


@dataclass(frozen=True)
class StartUp:
    """What the server knows once it is up: pools, caps, and what it logged getting there."""

    budget: KVBudget
    full_tokens: int  # max_total_num_tokens
    swa_tokens: int | None  # max_total_num_tokens_swa (None without a hybrid pool)
    layout: PoolLayout | None
    max_running_requests: int
    context_len: int
    log_lines: tuple[str, ...]
    # SGLang's memory probe before the weights load, part way into the boot (workers/handover.py reads it).
    # The simulated server holds no GPU memory: it always sees the whole GPU free.
    probe_line: str = ""
    arena: ModeSizing | None = None  # --enable-unified-memory: the arena and its nominal caps

    @property
    def kv_cache_gib(self) -> float:
        return self.budget.gib


def _single_pool_tokens(config: SimServerConfig, budget: KVBudget) -> int:
    """Without a hybrid pool every layer caches every token at its own width."""
    model, tp, dtype = config.model, config.tp_size, config.kv_cache_dtype
    cell = model.full_layer_bytes(tp, dtype) * len(model.full_layer_ids) + model.swa_layer_bytes(tp, dtype) * len(
        model.swa_layer_ids
    )
    tokens = int(budget.bytes // cell)
    if config.max_total_tokens is not None:
        tokens = min(tokens, config.max_total_tokens)
    return floor_page(tokens, config.page_size)


def resolve_max_running_requests(capacity: int, context_len: int, requested: int | None) -> int:
    """kv_cache_configurator.resolve_max_num_reqs."""
    estimated = max(min(int(capacity / max(context_len, 1) * 512), 4096), 2048)
    if requested is not None:
        return max(1, min(requested, capacity // 2))
    return min(estimated, capacity // 2)


def start_up(config: SimServerConfig) -> StartUp:
    """Size the pools like SGLang; raises SWAPoolRefused / InsufficientMemory as SGLang would."""
    if config.swa_full_tokens_ratio is not None:
        validate_ratio(config.swa_full_tokens_ratio)
    if config.kv_budget_bytes is not None:
        budget = KVBudget(bytes=config.kv_budget_bytes, source="pinned by --kv-budget-gb")
    else:
        budget = estimate_budget(
            config.model, config.gpu, tp=config.tp_size,
            mem_fraction_static=config.mem_fraction_static, chunked_prefill_size=config.chunk_size,
        )
    weights_gib = config.model.weight_bytes_per_rank(config.tp_size) / GIB
    lines = [f"Load weight end. type={config.model.architecture}, dtype=torch.bfloat16, avail mem={budget.gib + weights_gib:.2f} GB, mem usage={weights_gib:.2f} GB."]
    layout: PoolLayout | None = None
    arena: ModeSizing | None = None
    if config.unified:
        geometry = KVGeometry.of(config.model, tp=config.tp_size, kv_dtype=config.kv_cache_dtype)
        arena = size_unified(geometry, budget.bytes, config.ratio, config.page_size, config.sglang_version,
                             max_total_tokens=config.max_total_tokens)
        layout = layout_from_max_tokens(geometry, arena.full_tokens, config.ratio, config.page_size, check=False)
        full, swa = arena.full_tokens, arena.swa_tokens
        lines.append(layout.log_line())
        joint = arena.kv_bytes // (geometry.full_bytes + geometry.swa_bytes) - config.page_size  # page 0: the padding anchor
        lines.append("[unified-memory-pool] UNIFIED MEMORY POOL ENABLED -- path=SWA hybrid")
        lines.append(f"[unified-memory-pool]   total_bytes={arena.kv_bytes} (={arena.kv_bytes / GIB:.2f} GB), "
                     f"full_max_total_num_tokens={full}, swa_max_total_num_tokens={swa}, joint_available={joint} slots")
    elif config.hybrid:
        geometry = KVGeometry.of(config.model, tp=config.tp_size, kv_dtype=config.kv_cache_dtype)
        layout = size_pools(
            geometry, budget.bytes, config.ratio, config.page_size, max_total_tokens=config.max_total_tokens
        )
        full, swa = layout.full_tokens, layout.swa_tokens
        lines.append(layout.log_line())
    else:
        full, swa = _single_pool_tokens(config, budget), None
    lines.append(f"KV Cache is allocated. #tokens: {full}, K size: {budget.gib / 2:.2f} GB, V size: {budget.gib / 2:.2f} GB")
    context_len = config.model.context_len or 131072
    max_running = resolve_max_running_requests(full, context_len, config.max_running_requests)
    lines.append(
        f"max_total_num_tokens={full}, chunked_prefill_size={config.chunk_size}, "
        f"max_prefill_tokens={config.max_prefill_tokens}, max_running_requests={max_running}, "
        f"context_len={context_len}, available_gpu_mem={config.gpu.memory_gib - weights_gib - budget.gib:.2f} GB"
    )
    return StartUp(
        budget=budget,
        full_tokens=full,
        swa_tokens=swa,
        layout=layout,
        max_running_requests=max_running,
        context_len=context_len,
        log_lines=tuple(lines),
        arena=arena,
        probe_line=f"Load weight begin. avail mem={config.gpu.memory_gib:.2f} GB",
    )

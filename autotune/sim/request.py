"""A request inside the simulated scheduler, with the KV it holds in each pool."""

from __future__ import annotations

from dataclasses import dataclass, field

from autotune.pools.footprint import CLIP_MAX_NEW_TOKENS, ceil_page, floor_page

__all__ = ["CLIP_MAX_NEW_TOKENS", "SimRequest", "ceil_page", "floor_page"]


@dataclass(eq=False)
class SimRequest:
    rid: str
    prompt_len: int
    max_new_tokens: int
    arrival_s: float
    ignore_eos: bool = True

    # progress
    prefilled: int = 0  # tokens of the fill (prompt + output kept over a retraction) computed so far
    kv_len: int = 0  # tokens in the KV cache: prefilled, then +1 per decode step
    generated: int = 0  # output tokens so far (kept across retractions, as SGLang keeps output_ids)
    fill_len: int = 0  # tokens to prefill: the prompt, or prompt + output after a retraction
    spec_credit: float = 0.0  # fractional tokens owed by speculative decoding

    # KV, as SGLang's radix cache and allocator account it (autotune/pools/footprint.py)
    full_held: int = 0  # full-pool slots the request itself holds (chunk in flight, decoded tokens)
    full_locked: int = 0  # full-pool slots of its prefix in the tree, locked by it
    swa_held: int = 0  # SWA slots it holds: the chunk in flight, decoded tokens not yet evicted
    swa_locked: int = 0  # SWA slots of its prompt's tail in the tree, locked by it: L(P)
    protected: int = 0  # cache_protected_len: positions the tree owns (the request never frees below)
    swa_cursor: int = 0  # swa_evicted_seqlen: SWA positions below it were freed
    tree_nodes: list[int] = field(default_factory=list)  # sizes of its prefix's tree nodes, root first
    decode_steps: int = 0  # decode_batch_idx: decode steps since its prefill
    last_emit_forward: int = -1  # the forward that gave it its latest output tokens
    last_emit_tokens: int = 0  # how many it gave (the overlap loop has not processed them one forward later)
    tree_access: int = 0  # the scheduler's forward count when its prefix was last inserted (LRU age)
    # After a retraction: what of its fill the radix tree still holds (docs/sglang-swa-accounting.md §4),
    # until tree eviction takes any of it (then 0): positions, full slots, live SWA tail, node sizes.
    cached_len: int = 0
    cached_full: int = 0
    cached_swa: int = 0
    cached_nodes: list[int] = field(default_factory=list)
    # Positions where the full tree splits its prefix into nodes, kept over retractions while the full tree holds
    # it (its SWA part may be gone): a re-prefill's inserts split there too, so the lock can stop short of a node.
    tree_bounds: frozenset[int] = frozenset()

    # timings (virtual or wall seconds, same clock as arrival_s)
    scheduled_s: float | None = None  # first time it left the queue (queue time)
    first_token_s: float | None = None
    token_times: list[float] = field(default_factory=list)  # when each batch of new tokens was emitted
    token_counts: list[int] = field(default_factory=list)  # cumulative output tokens at each emission
    finish_s: float | None = None
    retractions: int = 0
    error: str | None = None  # set when the server aborts the request

    def __post_init__(self) -> None:
        if not self.fill_len:
            self.fill_len = self.prompt_len

    @property
    def prefill_done(self) -> bool:
        return self.prefilled >= self.fill_len

    @property
    def remaining_new_tokens(self) -> int:
        return max(self.max_new_tokens - self.generated, 0)

    @property
    def finished(self) -> bool:
        return self.generated >= self.max_new_tokens

    @property
    def swa_used(self) -> int:
        """What this request adds to sglang:swa_used_tokens: held plus locked."""
        return self.swa_held + self.swa_locked

    def reset_kv(self) -> None:
        """reset_for_retract: no KV held; the kept output is prefilled again after the prompt, or
        after whatever of the fill the radix tree still holds at re-admission (`cached_len`)."""
        self.prefilled = self.kv_len = 0
        self.full_held = self.full_locked = self.swa_held = self.swa_locked = 0
        self.protected = self.swa_cursor = self.decode_steps = 0
        self.tree_nodes = []

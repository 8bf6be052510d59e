"""A token pool as SGLang's allocator and radix cache account for it.

Tokens are in one of three states: *used* (locked by a running request), *evictable* (cached
by the radix tree: finished requests, out-of-window prefill tokens; reclaimable on demand) or
*available*. SGLang's usage gauges count only used tokens (docs/reference/sglang.md §5), admission counts
available + evictable (mem_cache/prefill_budget.py).
"""

from __future__ import annotations

from dataclasses import dataclass


class PoolExhausted(RuntimeError):
    pass


@dataclass
class TokenPool:
    name: str
    capacity: int
    used: int = 0
    evictable: int = 0
    evicted_total: int = 0  # sglang:evicted_tokens_total counts radix-cache evictions

    @property
    def available(self) -> int:
        return self.capacity - self.used - self.evictable

    @property
    def free_or_evictable(self) -> int:
        return self.capacity - self.used

    @property
    def usage(self) -> float:
        return self.used / self.capacity if self.capacity else 0.0

    def alloc(self, tokens: int) -> None:
        """Lock `tokens` for a request, evicting cached tokens if the free ones do not suffice."""
        if tokens > self.free_or_evictable:
            raise PoolExhausted(f"{self.name} pool: need {tokens}, have {self.free_or_evictable}")
        shortfall = tokens - self.available
        if shortfall > 0:
            self.evictable -= shortfall
            self.evicted_total += shortfall
        self.used += tokens

    def free(self, tokens: int) -> None:
        """Return a request's tokens to the free list (retraction, out-of-window eviction)."""
        self.used -= tokens
        assert self.used >= 0, self

    def cache(self, tokens: int) -> None:
        """Hand a request's tokens to the radix cache: no longer used, still evictable."""
        self.used -= tokens
        self.evictable += tokens
        assert self.used >= 0, self


class DeviceAssert(RuntimeError):
    """SGLang 0.5.17's unified memory: the server died when a side passed its static cap
    (measured on two H200s: docs/real-gpu/unified.md). The message is the log's exception line."""

    sglang_line = "torch.AcceleratorError: CUDA error: device-side assert triggered"

    def __init__(self, side: str, occupied: int, cap: int) -> None:
        self.side, self.occupied, self.cap = side, occupied, cap
        super().__init__(self.sglang_line)


@dataclass
class Arena:
    """--enable-unified-memory: one byte arena behind the full and SWA pools (autotune/pools/mode_sizing.py).

    A token slot costs `full_bytes` on the full side and `swa_bytes` on the SWA side; either side
    takes free arena bytes before evicting its own cache, then the peer's. The pools' `capacity`
    stays the nominal (static) cap, so usage gauges can pass 1.0 as the real 0.5.17 log shows.
    """

    total_bytes: int
    full_bytes: int
    swa_bytes: int
    full: "ArenaPool | None" = None
    swa: "ArenaPool | None" = None

    def used_bytes(self) -> int:
        return self.full.used * self.full_bytes + self.swa.used * self.swa_bytes

    def occupied_bytes(self) -> int:
        full, swa = self.full, self.swa
        return (full.used + full.evictable) * self.full_bytes + (swa.used + swa.evictable) * self.swa_bytes

    def free_bytes(self) -> int:
        return self.total_bytes - self.occupied_bytes()

    def reclaimable_bytes(self) -> int:
        """Free bytes plus both sides' evictable cache (SGLang's can_reserve reclaims both)."""
        return self.total_bytes - self.used_bytes()

    def fits(self, full_tokens: float, swa_tokens: float) -> bool:
        """The joint byte budget: full x F + SWA x S within what can be reclaimed."""
        return full_tokens * self.full_bytes + swa_tokens * self.swa_bytes <= self.reclaimable_bytes()


@dataclass
class ArenaPool(TokenPool):
    arena: Arena | None = None
    token_bytes: int = 1

    @property
    def peer(self) -> "ArenaPool":
        assert self.arena is not None
        return self.arena.swa if self is self.arena.full else self.arena.full

    @property
    def available(self) -> int:
        return max(self.arena.free_bytes(), 0) // self.token_bytes

    @property
    def free_or_evictable(self) -> int:
        return max(self.arena.reclaimable_bytes(), 0) // self.token_bytes

    @property
    def occupied(self) -> int:
        return self.used + self.evictable

    def alloc(self, tokens: int) -> None:
        if tokens > self.free_or_evictable:
            raise PoolExhausted(f"{self.name} side of the unified arena: need {tokens}, have {self.free_or_evictable}")
        short = tokens * self.token_bytes - self.arena.free_bytes()
        if short > 0:  # evict this side's cache first, then the peer's
            own = min(self.evictable, -(-short // self.token_bytes))
            self.evictable -= own
            self.evicted_total += own
            short -= own * self.token_bytes
            if short > 0:
                peer = self.peer
                theirs = min(peer.evictable, -(-short // peer.token_bytes))
                peer.evictable -= theirs
                peer.evicted_total += theirs
        self.used += tokens


def arena_pools(total_bytes: int, full_bytes: int, swa_bytes: int, full_cap: int, swa_cap: int) -> Arena:
    arena = Arena(total_bytes, full_bytes, swa_bytes)
    arena.full = ArenaPool("full", full_cap, arena=arena, token_bytes=full_bytes)
    arena.swa = ArenaPool("swa", swa_cap, arena=arena, token_bytes=swa_bytes)
    return arena

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

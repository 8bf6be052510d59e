"""The radix tree's evictable part of one pool, as the simulator ages it for eviction."""

from __future__ import annotations

import heapq

from autotune.sim.pool import TokenPool
from autotune.sim.request import SimRequest


class TreeLRU:
    """The radix tree's evictable part of one pool, as segments aged by their last insert.

    Tree eviction (evict_from_tree_cache) takes the least recently used leaves first; here a
    segment is one insert's or one release's evictable tokens. `owner` marks a retracted request's
    cached prefix: evicting any of it loses the request's prefix hit.
    """

    def __init__(self, pool: TokenPool, *, holds_node_bounds: bool = False) -> None:
        self.pool = pool
        self.holds_node_bounds = holds_node_bounds  # the full tree: evicting a prefix drops its node boundaries
        self.seen = pool.evicted_total
        # [age, seq, tokens, owner, base]: a retracted request's entry spans path positions [base, base + tokens);
        # below base its path was locked again by the request's next prefill (reused, no longer evictable here)
        self.heap: list[list] = []
        self.seq = 0
        self.owned: dict[int, list[list]] = {}  # id(owner) -> its entries (the full tree: where its boundaries live)

    def add(self, tokens: int, age: int, owner: SimRequest | None = None) -> list | None:
        if tokens <= 0:
            return None
        self.seq += 1
        entry = [age, self.seq, tokens, owner, 0]
        heapq.heappush(self.heap, entry)
        if owner is not None and self.holds_node_bounds:
            self.owned.setdefault(id(owner), []).append(entry)
        return entry

    def sync(self) -> None:
        """Account for whatever the pool evicted since the last call, oldest segments first."""
        tokens, self.seen = self.pool.evicted_total - self.seen, self.pool.evicted_total
        while tokens > 0 and self.heap:
            entry = self.heap[0]
            take = min(entry[2], tokens)
            entry[2] -= take
            tokens -= take
            owner = entry[3]
            if owner is not None:
                owner.cached_len = owner.cached_full = owner.cached_swa = 0  # the prefix hit is lost
                owner.cached_nodes = []
                if self.holds_node_bounds:
                    self._trim_bounds(owner)
            if entry[2] <= 0:
                heapq.heappop(self.heap)

    def held_prefix(self, owner: SimRequest) -> int:
        """How much of the owner's path the tree still holds from before (its longest entry left, root side)."""
        return max((e[4] + e[2] for e in self.owned.get(id(owner), ()) if e[2] > 0 or e[4] > 0), default=0)

    def reuse(self, owner: SimRequest, start: int, end: int) -> None:
        """The owner's new insert of positions [start, end) runs over its old path: SGLang keeps the old nodes' full
        KV (locked now by the request) and frees the new duplicates, so the overlap leaves the evictable part here
        (available grows by it; used is unchanged)."""
        for e in self.owned.get(id(owner), ()):
            lo, hi = e[4], e[4] + e[2]
            x = max(min(end, hi) - max(start, lo), 0)
            if x and start <= lo:
                e[2] -= x
                e[4] += x
                self.pool.evictable -= x

    def _trim_bounds(self, owner: SimRequest) -> None:
        """The owner's entries are one path of the tree (each insert of its prefix, from the root), and the tree
        evicts leaf first: what survives is the path's root side, as long as its longest entry left, and the node
        boundaries in it (traced: a re-prefill still splits at a boundary its first re-prefill made)."""
        entries = [e for e in self.owned.pop(id(owner), ()) if e[2] > 0 or e[4] > 0]
        if entries:
            self.owned[id(owner)] = entries
        surviving = self.held_prefix(owner)
        owner.tree_bounds = frozenset(b for b in owner.tree_bounds if b <= surviving)

    def evict(self, tokens: int) -> None:
        """Evict `tokens` cached tokens now (retract_decode's evict_from_tree_cache)."""
        tokens = min(tokens, self.pool.evictable)
        if tokens > 0:
            self.pool.evictable -= tokens
            self.pool.evicted_total += tokens
            self.sync()

    def take(self, entry: list | None) -> int:
        """A re-admitted request locks its cached prefix again: out of the evictable part."""
        if entry is None or entry[2] <= 0:
            return 0
        tokens, entry[2] = entry[2], 0  # left in the heap, empty: eviction skips past it
        entry[4] += tokens  # locked again by its owner
        self.pool.evictable -= tokens
        self.pool.used += tokens
        return tokens

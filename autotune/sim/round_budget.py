"""One admission round's budget (SGLang's PrefillAdder/PrefillBudget and SWAPrefillBudget): the live pools minus
what this round has booked so far, and what an admission books."""

from __future__ import annotations

from dataclasses import dataclass

from autotune.sim.pool import Arena, TokenPool
from autotune.sim.request import CLIP_MAX_NEW_TOKENS, SimRequest, ceil_page


@dataclass
class RoundBudget:
    """PrefillBudget/SWAPrefillBudget for one round: live pools minus this round's reservations."""

    full: TokenPool
    swa: TokenPool | None
    page: int
    window: int | None
    total_offset: float = 0.0
    current_offset: float = 0.0
    swa_offset: float = 0.0
    arena: Arena | None = None  # 0.5.23's unified memory: the joint byte budget applies too

    def joint_fits(self, full_tokens: float, swa_tokens: float) -> bool:
        """SharedSWAPrefillBudget._fits: this round's full and SWA reservations in the same bytes."""
        if self.arena is None:
            return True
        return self.arena.fits(full_tokens + self.total_offset, swa_tokens + self.swa_offset)

    def joint_room(self) -> int:
        """The largest chunk whose full and SWA slots both fit the joint budget (_joint_chunk_cap, roughly)."""
        if self.arena is None:
            return 1 << 60
        a = self.arena
        free = a.reclaimable_bytes() - self.total_offset * a.full_bytes - self.swa_offset * a.swa_bytes
        return int(free // (a.full_bytes + a.swa_bytes)) - self.page

    @property
    def remaining_total(self) -> float:
        return self.full.free_or_evictable - self.total_offset

    @property
    def remaining_current(self) -> float:
        return self.full.free_or_evictable - self.current_offset

    @property
    def remaining_swa(self) -> float:
        return (self.swa.free_or_evictable - self.swa_offset) if self.swa else float("inf")

    def swa_tokens(self, extend: int, max_new: int, chunk_limit: int | None) -> int:
        """prefill_budget.estimate_swa_kv_tokens: the SWA peak one request may reach."""
        if not self.window:
            return extend + max_new + self.page
        allocated = extend if chunk_limit is None else min(extend, chunk_limit)
        return max(allocated - self.window, 0) + min(extend + max_new, self.window) + self.page

    def has_capacity(self) -> bool:
        return self.remaining_total > 0 and self.remaining_current > 0 and self.remaining_swa > 0

    def reserve(self, extend: int, max_new: int, chunk_limit: int | None) -> None:
        extend = ceil_page(extend, self.page)
        immediate = extend + self.page
        self.total_offset += immediate + max_new
        self.current_offset += immediate
        if self.swa:
            self.swa_offset += self.swa_tokens(extend, max_new, chunk_limit)


def reserved_new_tokens(req: SimRequest) -> int:
    """What a prefill that completes a request reserves for its decode, in both releases: all of its
    (clipped) max_new_tokens, outputs already made before a retraction included
    (_update_prefill_budget's `min(max_new_tokens, CLIP_MAX_NEW_TOKENS)`), while the admission check
    itself uses only the outputs still to come. A re-admitted request so leaves less room to the rest
    of its round than its gate asked for (measured: the storm's re-admission chunks, first-pass.md)."""
    return min(req.max_new_tokens, CLIP_MAX_NEW_TOKENS)

"""How SGLang sizes the KV memory in each memory mode, per release (0.5.17 and 0.5.23).

The static mode is autotune/pools/sizing.py. The two other modes that replace the ratio's split,
read from both releases' `model_executor/pool_configurator.py`:

**Request cap** (`--max-running-requests` with `--disable-radix-cache` and chunked prefill;
`SWAChunkCapPoolConfigurator` in 0.5.17, `SWARequestCapPoolConfigurator` +
`compute_swa_request_cap` in 0.5.23). No speculative decoding, attention DP 1:

    per_request = W + I + P + P                      (window, eviction interval x 1 draft token,
                                                      page padding, one decode page)
    num_reqs    = mrr // dp                          0.5.17
                = max(1, mrr // dp)                  0.5.23
    swa_cap     = per_request * num_reqs + chunks * chunked_prefill_size + P
                  chunks = 2 with the overlap scheduler, 1 with --disable-overlap-schedule
    swa_tokens  = ceil_P(swa_cap)
    full_tokens = floor_P((B - swa_tokens * S) // F)  (RuntimeError when <= 0)

`is_applicable` differs: 0.5.17 only needs `chunked_prefill_size is not None` (SGLang always sets
one, so -1 still selects the cap, with `2 * -1` in it); 0.5.23 needs it > 0.

**Unified memory** (`--enable-unified-memory`): one byte arena replaces the two pools.
- 0.5.17: the configurator has no unified branch. It sizes the two static pools from the ratio
  exactly as the static mode (same start-up refusal) and the arena is their bytes,
  `full * F + swa * S` (`init_unified_swa_pools`' `total_bytes`). The allocator keeps the static
  pools as caps. Measured (docs/real-gpu/unified.md): the server died with a device-side assert
  when one side went past its cap.
- 0.5.23: `_max_unified_full_tokens` takes the largest page-aligned full capacity whose
  `full * F + floor_P(int(full * r)) * S` fits the budget; the SWA side is `floor_P(int(full * r))`;
  there is no start-up SWA refusal (`_solve_pool_sizes` skips it). The arena is
  `unified_memory_pool_bytes` = those bytes, and the allocator is built without the static caps:
  either side may grow until the joint bytes are used (`can_reserve`: full pages x F + SWA pages x
  S within the arena), the SWA side also within the full side's virtual page ids (arena // F).
  Admission (`SharedSWAPrefillBudget`) checks a prefill's full and SWA reservations together
  against that joint byte budget. This is read from the code, not measured.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from autotune.pools.footprint import parse_version
from autotune.pools.sizing import (
    SWA_EVICTION_INTERVAL,
    KVGeometry,
    NotEnoughMemory,
    floor_page,
    layout_from_max_tokens,
    size_pools,
    validate_ratio,
)

# The exception line SGLang 0.5.17's server died with when a unified side passed its static cap
# (docs/real-gpu/unified.md, both crashes).
UNIFIED_CRASH_LINE = "torch.AcceleratorError: CUDA error: device-side assert triggered"
UNIFIED_EVIDENCE = "docs/real-gpu/unified.md"


def _old(release: str) -> bool:
    return parse_version(release) <= (0, 5, 17)


def ceil_page(tokens: int, page_size: int) -> int:
    return -(-tokens // page_size) * page_size


def request_cap_applies(release: str, chunked_prefill_size: int | None) -> bool:
    """`is_applicable`'s chunked-prefill condition (the other two: --max-running-requests set,
    --disable-radix-cache)."""
    if chunked_prefill_size is None:
        return False
    return True if _old(release) else chunked_prefill_size > 0


def swa_request_cap(
    window: int,
    page_size: int,
    max_running_requests: int,
    chunked_prefill_size: int,
    release: str,
    *,
    disable_overlap_schedule: bool = False,
    attn_dp_size: int = 1,
    eviction_interval: int = SWA_EVICTION_INTERVAL,
) -> int:
    """SWA slots the scheduler holds live at --max-running-requests (no speculative decoding)."""
    per_request = window + max(1, eviction_interval) * 1 + page_size + page_size
    num_reqs = max_running_requests // attn_dp_size
    if not _old(release):
        num_reqs = max(1, num_reqs)
    chunks_in_flight = 1 if disable_overlap_schedule else 2
    return per_request * num_reqs + chunks_in_flight * chunked_prefill_size + page_size


@dataclass(frozen=True)
class ModeSizing:
    """One memory mode's pools (or arena) for one KV budget, as one SGLang release sizes them."""

    mode: str  # request-cap | unified
    release: str
    page_size: int
    full_tokens: int  # full pool (request-cap) / the full side's nominal cap (unified)
    swa_tokens: int  # SWA pool / the SWA side's nominal cap
    kv_bytes: int  # bytes of the pools, or of the arena
    ratio: float | None  # the ratio that still enters the sizing (unified), else None
    swa_cap_formula: str = ""  # request-cap: the cap's terms
    full_max_alone: int | None = None  # unified: the most full tokens the full side can reach
    swa_max_alone: int | None = None  # unified: the most SWA tokens the SWA side can reach
    borrows_beyond_caps: bool = False  # unified: a side may pass its nominal cap at run time
    measured: str = ""  # what was measured of this mode on this release, with the evidence file

    @property
    def ratio_ignored(self) -> bool:
        return True

    def log_line(self) -> str:
        return ("Use sliding window memory pool. "
                f"full_layer_tokens={self.full_tokens}, swa_layer_tokens={self.swa_tokens}")

    def summary(self) -> str:
        if self.mode == "request-cap":
            return (f"request-cap (SGLang {self.release}): SWA pool {self.swa_tokens:,} tokens = ceil_page({self.swa_cap_formula}), "
                    f"full pool gets the rest: {self.full_tokens:,} tokens; --swa-full-tokens-ratio is ignored")
        runtime = (f"at run time either side may borrow from the arena up to the joint bytes (full alone up to "
                   f"{self.full_max_alone:,}, SWA alone up to {self.swa_max_alone:,}); admission checks full + SWA "
                   "reservations against the joint byte budget [read from SGLang's code, not measured]"
                   if self.borrows_beyond_caps else
                   f"the static pools stay the caps; a side passing its cap crashed the server "
                   f"(`{UNIFIED_CRASH_LINE}`) [measured: {UNIFIED_EVIDENCE}]")
        return (f"unified (SGLang {self.release}): one arena of {self.kv_bytes:,} bytes ({self.kv_bytes / 2**30:.2f} GiB), "
                f"nominal caps full {self.full_tokens:,} / SWA {self.swa_tokens:,} from ratio {self.ratio:g}; {runtime}; "
                "the ratio only sets the nominal caps, there is no split to tune")

    def as_dict(self) -> dict:
        return {**asdict(self), "ratio_ignored": True, "summary": self.summary()}


def size_request_cap(
    geometry: KVGeometry,
    budget_bytes: int,
    page_size: int,
    max_running_requests: int,
    chunked_prefill_size: int,
    release: str,
    *,
    disable_overlap_schedule: bool = False,
    max_total_tokens: int | None = None,
) -> ModeSizing:
    """`calculate_pool_sizes` of the request-cap configurator (and `_from_max_tokens` under
    --max-total-tokens: the full side is the page-floored cap, the SWA side min(cap, it))."""
    cap = swa_request_cap(geometry.window, page_size, max_running_requests, chunked_prefill_size, release,
                          disable_overlap_schedule=disable_overlap_schedule)
    swa = ceil_page(cap, page_size)
    if max_total_tokens is not None:
        full = floor_page(max_total_tokens, page_size)
        swa = min(swa, max_total_tokens)
    else:
        fixed = swa * geometry.swa_bytes
        full = (int((budget_bytes - fixed) // geometry.full_bytes) // page_size) * page_size
        if full <= 0:
            raise NotEnoughMemory(
                f"SWA pool cap ({swa} tokens, {fixed / (1 << 30):.2f} GiB) leaves no room for the full KV pool "
                f"within the available {budget_bytes / (1 << 30):.2f} GiB. Reduce --max-running-requests, "
                "lower SGLANG_SWA_EVICTION_INTERVAL, or increase --mem-fraction-static.")
    chunks = 1 if disable_overlap_schedule else 2
    per_request = geometry.window + SWA_EVICTION_INTERVAL + 2 * page_size
    formula = f"{per_request} x {max_running_requests} reqs + {chunks} x {chunked_prefill_size} + {page_size}"
    return ModeSizing(mode="request-cap", release=release, page_size=page_size, full_tokens=full, swa_tokens=swa,
                      kv_bytes=geometry.pool_bytes(full, swa), ratio=None, swa_cap_formula=formula)


def max_unified_full_tokens(geometry: KVGeometry, budget_bytes: int, ratio: float, page_size: int) -> int:
    """0.5.23 `_max_unified_full_tokens` (no draft model): the largest page count whose
    `full * F + floor_P(int(full * r)) * S` fits, found by bisection as SGLang does."""
    F, S = geometry.full_bytes, geometry.swa_bytes

    def allocation(pages: int) -> int:
        full = pages * page_size
        return full * F + (int(full * ratio) // page_size * page_size) * S

    lo, hi = 0, budget_bytes // F // page_size  # allocation(0) = 0 fits
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if allocation(mid) <= budget_bytes:
            lo = mid
        else:
            hi = mid - 1
    return lo * page_size


def size_unified(
    geometry: KVGeometry,
    budget_bytes: int,
    ratio: float,
    page_size: int,
    release: str,
    *,
    max_total_tokens: int | None = None,
) -> ModeSizing:
    """The unified arena and its nominal caps (the ratio given, else SGLang's default applies)."""
    validate_ratio(ratio)
    if _old(release):
        layout = size_pools(geometry, budget_bytes, ratio, page_size, max_total_tokens=max_total_tokens)
        arena = geometry.pool_bytes(layout.full_tokens, layout.swa_tokens)
        return ModeSizing(mode="unified", release=release, page_size=page_size, full_tokens=layout.full_tokens,
                          swa_tokens=layout.swa_tokens, kv_bytes=arena, ratio=ratio,
                          full_max_alone=layout.full_tokens, swa_max_alone=layout.swa_tokens,
                          borrows_beyond_caps=False,
                          measured=f"crashed ({UNIFIED_CRASH_LINE}) when a side passed its cap: {UNIFIED_EVIDENCE}")
    if max_total_tokens is not None:
        full_total = max_total_tokens
    else:
        full_total = max_unified_full_tokens(geometry, budget_bytes, ratio, page_size)
    layout = layout_from_max_tokens(geometry, full_total, ratio, page_size, check=False)
    if layout.full_tokens <= 0:
        raise NotEnoughMemory("Not enough memory. Please try to increase --mem-fraction-static.")
    arena = geometry.pool_bytes(layout.full_tokens, layout.swa_tokens)
    if arena < (geometry.window + page_size) * geometry.swa_bytes:
        # init_unified_swa_pools' bs=1 floor: one window + a page of SWA KV must fit the arena.
        raise NotEnoughMemory(f"the unified arena ({arena} bytes) cannot hold one sliding window "
                              f"({geometry.window} + page {page_size}) of SWA KV")
    full_alone = arena // geometry.full_bytes // page_size * page_size
    swa_alone = min(arena // geometry.swa_bytes, full_alone) // page_size * page_size
    return ModeSizing(mode="unified", release=release, page_size=page_size, full_tokens=layout.full_tokens,
                      swa_tokens=layout.swa_tokens, kv_bytes=arena, ratio=ratio,
                      full_max_alone=full_alone, swa_max_alone=swa_alone, borrows_beyond_caps=True,
                      measured="not measured (read from SGLang 0.5.23's code)")

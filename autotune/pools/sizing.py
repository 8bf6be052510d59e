"""SGLang's hybrid SWA pool sizing, exactly (model_executor/pool_configurator.py, 0.5.23).

Hybrid, non-unified, no speculative decoding:

    cell        = F + r * S                         (float, as SGLang computes it)
    max_total   = min(int(B // cell), --max-total-tokens)
    full_tokens = floor_P(max_total)
    swa_tokens  = floor_P(int(full_tokens * r))      floor_P(x) = (x // P) * P

and start-up refuses when `window + page_size >= swa_tokens`. The arithmetic below follows the
same operations in the same order so that the results match SGLang's to the token.
"""

from __future__ import annotations

from dataclasses import dataclass

from autotune.models.spec import ModelSpec

# SGLANG_SWA_EVICTION_INTERVAL: decode steps between out-of-window SWA frees.
SWA_EVICTION_INTERVAL = 128
RATIO_MIN_EXCLUSIVE = 0.0
RATIO_MAX = 1.0


class RatioOutOfRange(ValueError):
    def __init__(self, ratio: float) -> None:
        self.ratio = ratio
        super().__init__(
            f"--swa-full-tokens-ratio must be in (0, 1], got {ratio}: it is SWA tokens per full token "
            "(SGLang's default is 0.8)"
        )


class SWAPoolRefused(ValueError):
    """SGLang's start-up refusal: the SWA pool cannot hold one window plus a page."""

    def __init__(self, swa_tokens: int, window: int, page_size: int, min_ratio: float | None = None) -> None:
        self.swa_tokens = swa_tokens
        self.window = window
        self.page_size = page_size
        self.min_ratio = min_ratio
        # The text SGLang raises (pool_configurator.validate_swa_pool_size), word for word.
        self.sglang_message = (
            f"SWA pool ({swa_tokens} tokens) cannot hold even one request: "
            f"the prefill admission floor is sliding_window_size "
            f"({window}) + page_size ({page_size}). "
            f"Increase --swa-full-tokens-ratio or the total KV budget."
        )
        hint = f" The smallest ratio that boots with this budget is {min_ratio:.3f}." if min_ratio else ""
        super().__init__(self.sglang_message + hint)


class NotEnoughMemory(ValueError):
    def __init__(self, message: str) -> None:
        super().__init__(message)


def validate_ratio(ratio: float) -> float:
    if not (RATIO_MIN_EXCLUSIVE < ratio <= RATIO_MAX):
        raise RatioOutOfRange(ratio)
    return ratio


def floor_page(tokens: int, page_size: int) -> int:
    return (tokens // page_size) * page_size


@dataclass(frozen=True)
class KVGeometry:
    """Per-token KV bytes of the two layer kinds on one TP rank, and the window."""

    full_layer_bytes: int  # f
    swa_layer_bytes: int  # s
    full_layers: int  # n_f
    swa_layers: int  # n_s
    window: int

    @classmethod
    def of(cls, model: ModelSpec, tp: int = 1, kv_dtype: str = "bf16") -> "KVGeometry":
        if not model.hybrid_swa or model.window is None:
            raise ValueError(f"{model.name}: {model.hybrid_reason}")
        return cls(
            full_layer_bytes=model.full_layer_bytes(tp, kv_dtype),
            swa_layer_bytes=model.swa_layer_bytes(tp, kv_dtype),
            full_layers=len(model.full_layer_ids),
            swa_layers=len(model.swa_layer_ids),
            window=model.window,
        )

    @property
    def full_bytes(self) -> int:
        """F: bytes of one token over all full layers."""
        return self.full_layer_bytes * self.full_layers

    @property
    def swa_bytes(self) -> int:
        """S: bytes of one token over all SWA layers."""
        return self.swa_layer_bytes * self.swa_layers

    def cell_bytes(self, ratio: float) -> float:
        # HybridSWAPoolConfigurator._recompute_cell_size: int + ratio * int -> float
        return self.full_bytes + ratio * self.swa_bytes

    def pool_bytes(self, full_tokens: int, swa_tokens: int) -> int:
        return full_tokens * self.full_bytes + swa_tokens * self.swa_bytes


@dataclass(frozen=True)
class PoolLayout:
    ratio: float
    page_size: int
    full_tokens: int  # full_layer_tokens = max_total_num_tokens
    swa_tokens: int  # swa_layer_tokens = max_total_num_tokens_swa
    window: int

    @property
    def windows_held(self) -> float:
        """How many full windows the SWA pool holds (the seed's '70 windows of 1024')."""
        return self.swa_tokens / self.window if self.window else float("inf")

    def decoding_requests_held(self) -> int:
        """Requests the SWA pool holds at one window + eviction interval + 2 pages each: the radix-off
        (chunk cache) footprint, and an upper bound with radix cache on, where a running request also
        keeps its prompt's last window locked (up to about twice this: autotune/pools/footprint.py)."""
        return self.swa_tokens // (self.window + SWA_EVICTION_INTERVAL + 2 * self.page_size)

    def log_line(self) -> str:
        """The start-up line SGLang prints for this layout."""
        return (
            "Use sliding window memory pool. "
            f"full_layer_tokens={self.full_tokens}, swa_layer_tokens={self.swa_tokens}"
        )


def layout_from_max_tokens(
    geometry: KVGeometry, max_total_tokens: int, ratio: float, page_size: int, *, check: bool = True
) -> PoolLayout:
    """_solve_pool_sizes: page-align the full side, derive the SWA side, refuse if too small."""
    full = floor_page(max_total_tokens, page_size)
    swa = floor_page(int(full * ratio), page_size)
    if check and geometry.window + page_size >= swa:
        raise SWAPoolRefused(swa, geometry.window, page_size)
    if check and full <= 0:
        raise NotEnoughMemory("Not enough memory. Please try to increase --mem-fraction-static.")
    return PoolLayout(ratio=ratio, page_size=page_size, full_tokens=full, swa_tokens=swa, window=geometry.window)


def size_pools(
    geometry: KVGeometry,
    budget_bytes: int,
    ratio: float,
    page_size: int = 1,
    *,
    max_total_tokens: int | None = None,
    check: bool = True,
) -> PoolLayout:
    """The layout SGLang logs for a KV budget of `budget_bytes` (bytes left for KV)."""
    validate_ratio(ratio)
    if page_size < 1:
        raise ValueError(f"--page-size must be a positive integer, got {page_size}")
    max_total = int(budget_bytes // geometry.cell_bytes(ratio))
    if max_total_tokens is not None:
        max_total = min(max_total, max_total_tokens)  # --max-total-tokens caps the full side
    try:
        return layout_from_max_tokens(geometry, max_total, ratio, page_size, check=check)
    except SWAPoolRefused as refused:
        low = min_feasible_ratio(geometry, budget_bytes, page_size, max_total_tokens=max_total_tokens)
        raise SWAPoolRefused(refused.swa_tokens, refused.window, refused.page_size, low) from None


def boots(geometry: KVGeometry, budget_bytes: int, ratio: float, page_size: int, max_total_tokens: int | None = None) -> bool:
    layout = size_pools(geometry, budget_bytes, ratio, page_size, max_total_tokens=max_total_tokens, check=False)
    return layout.swa_tokens > geometry.window + page_size and layout.full_tokens > 0


def min_feasible_ratio(
    geometry: KVGeometry,
    budget_bytes: int,
    page_size: int = 1,
    *,
    max_total_tokens: int | None = None,
    resolution: float = 1e-3,
) -> float | None:
    """The smallest ratio on a `resolution` grid that SGLang accepts; None if even 1.0 is refused.

    The SWA pool grows with the ratio (B r / (F + r S) increases in r); page floors make it a
    staircase, so the bisection's answer is checked and nudged up to the first grid point that boots.
    """
    steps = round(1.0 / resolution)
    if not boots(geometry, budget_bytes, 1.0, page_size, max_total_tokens):
        return None
    lo, hi = 0, steps  # hi boots; lo (ratio 0) never does
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if boots(geometry, budget_bytes, mid / steps, page_size, max_total_tokens):
            hi = mid
        else:
            lo = mid
    while hi < steps and not boots(geometry, budget_bytes, hi / steps, page_size, max_total_tokens):
        hi += 1
    return hi / steps
